//! ELF loading and checks shared by the Solo5 tenders.
//!
//! The rules are those of Solo5's `tenders/common/elf.c` as written down in
//! the fact sheet (§1.1, §1.2, §1.4): only the ELF header and the program
//! headers matter; PT_LOADs with `p_filesz == 0` are skipped *before* any
//! check; segments must be ascending, page aligned, non-overlapping, at or
//! above [`GUEST_MIN_BASE`] and inside guest memory; W+X is refused; notes are
//! found per PT_NOTE, looking only at the first note of each.
//!
//! [`Elf::parse`] checks the header; [`Elf::abi_info`] and [`Elf::manifest`]
//! decode the notes; [`Elf::load_plan`] checks the segments against a guest
//! memory size and returns a [`LoadPlan`] that [`LoadPlan::load_into`] copies
//! into guest memory.

use solo5_abi::{
    ABI1_NOTE_MAX_DESCSZ, Abi1Info, AbiTarget, GUEST_MIN_BASE, MFT1_NOTE_MAX_DESCSZ, MFT1_NOTE_PAD,
    NOTE_HEADER_SIZE, NOTE_TYPE_ABI1, NOTE_TYPE_MFT1, NoteHeader,
};

use crate::manifest::{Manifest, ManifestError};

/// `e_machine` the tender accepts on this host.
#[cfg(target_arch = "x86_64")]
pub const HOST_MACHINE: u16 = EM_X86_64;
/// `e_machine` the tender accepts on this host.
#[cfg(target_arch = "aarch64")]
pub const HOST_MACHINE: u16 = EM_AARCH64;

/// `EM_X86_64`.
pub const EM_X86_64: u16 = 62;
/// `EM_AARCH64`.
pub const EM_AARCH64: u16 = 183;
/// `ET_EXEC`.
pub const ET_EXEC: u16 = 2;
/// `ET_DYN`.
pub const ET_DYN: u16 = 3;
/// `PT_LOAD`.
pub const PT_LOAD: u32 = 1;
/// `PT_NOTE`.
pub const PT_NOTE: u32 = 4;
/// `PF_X`.
pub const PF_X: u32 = 1;
/// `PF_W`.
pub const PF_W: u32 = 2;
/// `PF_R`.
pub const PF_R: u32 = 4;
/// Size of `Elf64_Ehdr`.
pub const EHDR_SIZE: usize = 64;
/// Size of `Elf64_Phdr`.
pub const PHDR_SIZE: usize = 56;
/// Guest page size the segment bounds must be aligned to.
pub const PAGE_SIZE: u64 = 0x1000;

/// Which header check failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HeaderProblem {
    /// Shorter than an ELF header.
    #[error("file too short")]
    Truncated,
    /// No `\x7fELF` magic.
    #[error("not an ELF file")]
    Magic,
    /// Not ELFCLASS64.
    #[error("not a 64-bit ELF file")]
    Class,
    /// Not the host byte order.
    #[error("wrong byte order")]
    ByteOrder,
    /// `e_version` is not 1.
    #[error("unsupported ELF version")]
    Version,
    /// Neither ET_EXEC nor ET_DYN.
    #[error("not an executable")]
    Type,
    /// Not the host machine.
    #[error("wrong machine type")]
    Machine,
    /// `e_ehsize` is not 64 or `e_phentsize` is not 56.
    #[error("unexpected header sizes")]
    HeaderSizes,
    /// `e_phnum` is 0.
    #[error("no program headers")]
    NoProgramHeaders,
    /// The program header table is not inside the file.
    #[error("program headers outside the file")]
    ProgramHeadersOutsideFile,
}

/// Which segment check failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SegmentProblem {
    /// `p_vaddr` or its page-rounded start is below 0x100000.
    #[error("loads below the minimum guest address 0x100000")]
    BelowMinBase,
    /// `p_vaddr` is below the previous loaded segment's.
    #[error("segments are not in ascending address order")]
    NotAscending,
    /// `p_align` is zero or not a power of two.
    #[error("p_align is not a power of two")]
    BadAlign,
    /// The page-rounded start is below the previous segment's rounded end.
    #[error("overlaps the previous segment")]
    Overlap,
    /// Some part lies at or beyond the end of guest memory.
    #[error("does not fit in guest memory")]
    OutsideMemory,
    /// An address computation overflowed.
    #[error("address arithmetic overflows")]
    Overflow,
    /// `p_memsz < p_filesz`.
    #[error("p_memsz is smaller than p_filesz")]
    MemszBelowFilesz,
    /// The rounded start or end is not 4 KiB aligned.
    #[error("not aligned to 4 KiB pages (link with -z max-page-size=0x1000)")]
    NotPageAligned,
    /// The file bytes are not inside the file.
    #[error("file data lies outside the file")]
    OutsideFile,
    /// PF_W and PF_X together.
    #[error("requests WRITE and EXEC permissions")]
    WriteExec,
}

/// Why an executable was refused. Every variant ends the tender with exit 1.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ElfError {
    /// The ELF header failed a check.
    #[error("Invalid or unsupported executable (elf header invalid: {0})")]
    Header(HeaderProblem),
    /// `ET_DYN`: a PIE or static-PIE.
    #[error(
        "Invalid or unsupported executable (ET_DYN: position-independent executables are not \
         supported; link with -C relocation-model=static)"
    )]
    Pie,
    /// `e_entry` outside `[0x100000, mem_size)`.
    #[error("Invalid or unsupported executable (entry point {entry:#x} outside guest memory)")]
    EntryOutOfRange {
        /// `e_entry`.
        entry: u64,
    },
    /// A PT_LOAD failed a check.
    #[error("Invalid or unsupported executable (phdr[{index}]: {problem})")]
    Segment {
        /// Index in the program header table.
        index: usize,
        /// The failed check.
        problem: SegmentProblem,
    },
    /// No PT_LOAD with file data.
    #[error("Invalid or unsupported executable (no loadable segments)")]
    NoLoadableSegments,
    /// A PT_NOTE with `p_filesz < 12`.
    #[error(
        "Invalid or unsupported executable (phdr[{index}]: PT_NOTE smaller than a note header)"
    )]
    NoteTooSmall {
        /// Index in the program header table.
        index: usize,
    },
    /// A Solo5 note whose `descsz` is 0, over the maximum, or past its PT_NOTE or the file.
    #[error("Invalid or unsupported executable (phdr[{index}]: Solo5 note has an invalid size)")]
    NoteSize {
        /// Index in the program header table.
        index: usize,
    },
    /// No ABI1 note.
    #[error("No Solo5 ABI information found in executable")]
    NoAbiNote,
    /// The ABI1 descriptor is shorter than `struct abi1_info`.
    #[error("Solo5 ABI information in executable is invalid")]
    AbiNoteInvalid,
    /// The ABI1 note names another target.
    #[error("Executable is not for the {} target", .expected.name())]
    WrongTarget {
        /// The tender's target.
        expected: AbiTarget,
        /// The raw `abi_target` found.
        found: u32,
    },
    /// The ABI1 note asks for another ABI version.
    #[error("Executable requests unsupported ABI version {found}")]
    WrongVersion {
        /// The raw `abi_version` found.
        found: u32,
        /// The tender's version.
        supported: u32,
    },
    /// No MFT1 note.
    #[error("No Solo5 manifest found in executable")]
    NoManifest,
    /// The MFT1 note failed validation.
    #[error("Solo5 manifest is invalid: {0}")]
    Manifest(#[from] ManifestError),
}

/// One program header, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProgramHeader {
    /// `p_type`.
    pub p_type: u32,
    /// `p_flags`.
    pub p_flags: u32,
    /// `p_offset`.
    pub p_offset: u64,
    /// `p_vaddr`.
    pub p_vaddr: u64,
    /// `p_filesz`.
    pub p_filesz: u64,
    /// `p_memsz`.
    pub p_memsz: u64,
    /// `p_align`.
    pub p_align: u64,
}

/// A parsed executable whose header passed the checks of §1.1 (all but the
/// entry point, which needs the memory size).
#[derive(Clone, Debug)]
pub struct Elf<'a> {
    bytes: &'a [u8],
    entry: u64,
    phdrs: Vec<ProgramHeader>,
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// `bytes[offset..offset + len]`, or `None` if any of it is outside.
fn file_range(bytes: &[u8], offset: u64, len: u64) -> Option<&[u8]> {
    let start = usize::try_from(offset).ok()?;
    let len = usize::try_from(len).ok()?;
    bytes.get(start..start.checked_add(len)?)
}

impl<'a> Elf<'a> {
    /// Checks the ELF header (§1.1) and decodes the program headers.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, ElfError> {
        use HeaderProblem::*;
        let bad = |p| Err(ElfError::Header(p));
        if bytes.len() < EHDR_SIZE {
            return bad(Truncated);
        }
        if bytes[..4] != *b"\x7fELF" {
            return bad(Magic);
        }
        if bytes[4] != 2 {
            return bad(Class);
        }
        let host_data = if cfg!(target_endian = "little") { 1 } else { 2 };
        if bytes[5] != host_data {
            return bad(ByteOrder);
        }
        if u32_at(bytes, 20) != 1 {
            return bad(Version);
        }
        match u16_at(bytes, 16) {
            ET_EXEC => {}
            ET_DYN => return Err(ElfError::Pie),
            _ => return bad(Type),
        }
        if u16_at(bytes, 18) != HOST_MACHINE {
            return bad(Machine);
        }
        if usize::from(u16_at(bytes, 52)) != EHDR_SIZE
            || usize::from(u16_at(bytes, 54)) != PHDR_SIZE
        {
            return bad(HeaderSizes);
        }
        let phnum = u16_at(bytes, 56);
        if phnum == 0 {
            return bad(NoProgramHeaders);
        }
        let table = file_range(
            bytes,
            u64_at(bytes, 32),
            u64::from(phnum) * PHDR_SIZE as u64,
        )
        .ok_or(ElfError::Header(ProgramHeadersOutsideFile))?;
        let phdrs = table
            .chunks_exact(PHDR_SIZE)
            .map(|p| ProgramHeader {
                p_type: u32_at(p, 0),
                p_flags: u32_at(p, 4),
                p_offset: u64_at(p, 8),
                p_vaddr: u64_at(p, 16),
                p_filesz: u64_at(p, 32),
                p_memsz: u64_at(p, 40),
                p_align: u64_at(p, 48),
            })
            .collect();
        Ok(Elf {
            bytes,
            entry: u64_at(bytes, 24),
            phdrs,
        })
    }

    /// `e_entry` (not yet checked against memory).
    pub fn entry(&self) -> u64 {
        self.entry
    }

    /// The program headers in file order.
    pub fn program_headers(&self) -> &[ProgramHeader] {
        &self.phdrs
    }

    /// Finds the first Solo5 note of `note_type` (§1.4) and returns its
    /// descriptor, `descsz` bytes from note offset 20 (internal pad included).
    ///
    /// Only the first note of each PT_NOTE is looked at. A PT_NOTE shorter
    /// than 12 bytes rejects the binary; one shorter than 20 is skipped.
    pub fn find_note(&self, note_type: u32, max_descsz: u32) -> Result<Option<&'a [u8]>, ElfError> {
        for (index, ph) in self.phdrs.iter().enumerate() {
            if ph.p_type != PT_NOTE {
                continue;
            }
            if ph.p_filesz < 12 {
                return Err(ElfError::NoteTooSmall { index });
            }
            if ph.p_filesz < NOTE_HEADER_SIZE as u64 {
                continue;
            }
            let header = file_range(self.bytes, ph.p_offset, NOTE_HEADER_SIZE as u64)
                .and_then(NoteHeader::decode)
                .ok_or(ElfError::NoteSize { index })?;
            if !header.is_solo5() || header.note_type != note_type {
                continue;
            }
            let descsz = u64::from(header.descsz);
            if descsz < 1
                || header.descsz > max_descsz
                || ph.p_filesz < NOTE_HEADER_SIZE as u64 + descsz
            {
                return Err(ElfError::NoteSize { index });
            }
            let desc = ph
                .p_offset
                .checked_add(NOTE_HEADER_SIZE as u64)
                .and_then(|at| file_range(self.bytes, at, descsz))
                .ok_or(ElfError::NoteSize { index })?;
            return Ok(Some(desc));
        }
        Ok(None)
    }

    /// Decodes the ABI1 note without judging it.
    pub fn abi_info(&self) -> Result<Abi1Info, ElfError> {
        let desc = self
            .find_note(NOTE_TYPE_ABI1, ABI1_NOTE_MAX_DESCSZ)?
            .ok_or(ElfError::NoAbiNote)?;
        Abi1Info::decode(desc).ok_or(ElfError::AbiNoteInvalid)
    }

    /// Decodes the ABI1 note and checks that it asks for `target` at
    /// `version` exactly.
    pub fn check_abi(&self, target: AbiTarget, version: u32) -> Result<Abi1Info, ElfError> {
        let info = self.abi_info()?;
        if info.abi_target != target.raw() {
            return Err(ElfError::WrongTarget {
                expected: target,
                found: info.abi_target,
            });
        }
        if info.abi_version != version {
            return Err(ElfError::WrongVersion {
                found: info.abi_version,
                supported: version,
            });
        }
        Ok(info)
    }

    /// Decodes the MFT1 note, strips its 4 pad bytes and validates the
    /// manifest (§1.4).
    pub fn manifest(&self) -> Result<Manifest, ElfError> {
        let desc = self
            .find_note(NOTE_TYPE_MFT1, MFT1_NOTE_MAX_DESCSZ)?
            .ok_or(ElfError::NoManifest)?;
        let mft = desc
            .get(MFT1_NOTE_PAD..)
            .ok_or(ManifestError::Size { size: desc.len() })?;
        Ok(Manifest::decode(mft)?)
    }

    /// Checks the entry point and every PT_LOAD with file data against a guest
    /// of `mem_size` bytes (§1.2) and returns what to load where.
    pub fn load_plan(&self, mem_size: u64) -> Result<LoadPlan<'a>, ElfError> {
        if self.entry < GUEST_MIN_BASE || self.entry >= mem_size {
            return Err(ElfError::EntryOutOfRange { entry: self.entry });
        }
        let mut segments = Vec::new();
        let mut prev_vaddr = 0;
        let mut prev_end = 0;
        for (index, ph) in self.phdrs.iter().enumerate() {
            // Skipped before any check: Solo5's own linker script emits empty
            // PT_LOADs at vaddr 0, and a NOBITS-only .bss has no file data.
            if ph.p_type != PT_LOAD || ph.p_filesz == 0 {
                continue;
            }
            let fail = |problem| ElfError::Segment { index, problem };
            let seg = check_segment(ph, mem_size, prev_vaddr, prev_end).map_err(fail)?;
            let data = file_range(self.bytes, ph.p_offset, ph.p_filesz)
                .ok_or(fail(SegmentProblem::OutsideFile))?;
            prev_vaddr = ph.p_vaddr;
            prev_end = seg.end;
            segments.push(Segment { data, ..seg });
        }
        let kernel_end = segments
            .iter()
            .map(|s| s.end)
            .max()
            .ok_or(ElfError::NoLoadableSegments)?;
        Ok(LoadPlan {
            entry: self.entry,
            kernel_end,
            segments,
        })
    }
}

/// The checks of §1.2 for one PT_LOAD with file data; `data` is left empty.
fn check_segment(
    ph: &ProgramHeader,
    mem_size: u64,
    prev_vaddr: u64,
    prev_end: u64,
) -> Result<Segment<'static>, SegmentProblem> {
    use SegmentProblem::*;
    if ph.p_vaddr < GUEST_MIN_BASE {
        return Err(BelowMinBase);
    }
    if ph.p_vaddr < prev_vaddr {
        return Err(NotAscending);
    }
    if !ph.p_align.is_power_of_two() {
        return Err(BadAlign);
    }
    let start = ph.p_vaddr & !(ph.p_align - 1);
    if start < GUEST_MIN_BASE {
        return Err(BelowMinBase);
    }
    if start < prev_end {
        return Err(Overlap);
    }
    if ph.p_vaddr >= mem_size {
        return Err(OutsideMemory);
    }
    let file_end = ph.p_vaddr.checked_add(ph.p_filesz).ok_or(Overflow)?;
    if file_end > mem_size {
        return Err(OutsideMemory);
    }
    if ph.p_memsz < ph.p_filesz {
        return Err(MemszBelowFilesz);
    }
    let end = ph
        .p_vaddr
        .checked_add(ph.p_memsz)
        .and_then(|e| e.checked_next_multiple_of(ph.p_align))
        .ok_or(Overflow)?;
    if end > mem_size {
        return Err(OutsideMemory);
    }
    if !start.is_multiple_of(PAGE_SIZE) || !end.is_multiple_of(PAGE_SIZE) {
        return Err(NotPageAligned);
    }
    let perms = Perms {
        read: ph.p_flags & PF_R != 0,
        write: ph.p_flags & PF_W != 0,
        exec: ph.p_flags & PF_X != 0,
    };
    if perms.write && perms.exec {
        return Err(WriteExec);
    }
    Ok(Segment {
        vaddr: ph.p_vaddr,
        memsz: ph.p_memsz,
        start,
        end,
        perms,
        data: &[],
    })
}

/// Guest permissions of a segment, from `p_flags`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Perms {
    /// PF_R.
    pub read: bool,
    /// PF_W.
    pub write: bool,
    /// PF_X (never together with `write`).
    pub exec: bool,
}

impl Perms {
    /// The `PROT_*` bits that give the guest exactly these permissions (spt,
    /// where guest addresses are host addresses).
    pub fn prot(self) -> i32 {
        let mut prot = libc::PROT_NONE;
        if self.read {
            prot |= libc::PROT_READ;
        }
        if self.write {
            prot |= libc::PROT_WRITE;
        }
        if self.exec {
            prot |= libc::PROT_EXEC;
        }
        prot
    }

    /// The `PROT_*` bits for the host's view of guest memory under hardware
    /// virtualization (hvt): never executable on the host, always readable
    /// (KVM must read the pages to run them), writable only if the guest may
    /// write. A guest write to a read-only segment then stops the VM.
    pub fn host_prot(self) -> i32 {
        if self.write {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_READ
        }
    }
}

/// One checked PT_LOAD.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment<'a> {
    /// `p_vaddr`: where the file bytes go.
    pub vaddr: u64,
    /// `p_memsz`: bytes `[filesz, memsz)` after `vaddr` are zeroed.
    pub memsz: u64,
    /// `p_vaddr` rounded down to `p_align`: start of the protected range.
    pub start: u64,
    /// `p_vaddr + p_memsz` rounded up to `p_align`: end of the protected range.
    pub end: u64,
    /// Permissions from `p_flags`.
    pub perms: Perms,
    /// The `p_filesz` file bytes.
    pub data: &'a [u8],
}

/// What to load where, once every check has passed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadPlan<'a> {
    /// `e_entry`, inside `[0x100000, mem_size)`.
    pub entry: u64,
    /// Highest rounded `end` of the loaded segments (boot info `kernel_end`).
    pub kernel_end: u64,
    /// The loaded segments in file (and address) order.
    pub segments: Vec<Segment<'a>>,
}

impl LoadPlan<'_> {
    /// Copies every segment's file bytes to `mem[vaddr..]` and zeroes the rest
    /// of its `memsz`. `mem` is guest memory from GPA 0.
    ///
    /// # Panics
    ///
    /// If `mem` is smaller than the memory size the plan was checked against.
    pub fn load_into(&self, mem: &mut [u8]) {
        self.load_at(mem, 0);
    }

    /// Like [`LoadPlan::load_into`], for guest memory that starts at guest
    /// address `base` rather than 0: `mem[0]` is guest address `base`. spt
    /// maps guest memory from 0x10000, since the host never maps page 0.
    ///
    /// # Panics
    ///
    /// If a segment starts below `base` (the checks keep every segment at or
    /// above 0x100000) or `mem` ends before the memory size the plan was
    /// checked against.
    pub fn load_at(&self, mem: &mut [u8], base: u64) {
        for s in &self.segments {
            let at = s
                .vaddr
                .checked_sub(base)
                .and_then(|off| usize::try_from(off).ok())
                .expect("segment inside guest memory");
            let filesz = s.data.len();
            mem[at..at + filesz].copy_from_slice(s.data);
            mem[at + filesz..at + s.memsz as usize].fill(0);
        }
    }
}

/// Everything a tender needs from a kernel: the checked ABI, the validated
/// manifest and the load plan.
#[derive(Clone, Debug)]
pub struct Kernel<'a> {
    /// The ABI note.
    pub abi: Abi1Info,
    /// The manifest from the MFT1 note.
    pub manifest: Manifest,
    /// The checked segments.
    pub plan: LoadPlan<'a>,
}

/// Runs every check in the tenders' order: header, ABI note (`target` at its
/// ABI version), manifest, then segments against `mem_size`.
pub fn load_kernel(bytes: &[u8], target: AbiTarget, mem_size: u64) -> Result<Kernel<'_>, ElfError> {
    let elf = Elf::parse(bytes)?;
    let version = target.abi_version().unwrap_or(0);
    let abi = elf.check_abi(target, version)?;
    let manifest = elf.manifest()?;
    let plan = elf.load_plan(mem_size)?;
    Ok(Kernel {
        abi,
        manifest,
        plan,
    })
}
