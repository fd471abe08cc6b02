//! Loader tests on executables built by [`crate::fixtures`].

use solo5_abi::{
    AbiTarget, MftDevice, NOTE_TYPE_ABI1, NOTE_TYPE_MFT1, NoteHeader, abi1_note_bytes,
};

use crate::elf::*;
use crate::fixtures::{ElfBuilder, Phdr, mft1_note_bytes};
use crate::manifest::ManifestError;

const MEM: u64 = 8 << 20;
const BASE: u64 = 0x10_0000;

/// A valid hvt guest: text, rodata, data+bss, then the two notes.
fn good() -> ElfBuilder {
    ElfBuilder::new(BASE + 0x20)
        .segment(BASE, PF_R | PF_X, &[0x90; 0x100], 0x100)
        .segment(BASE + 0x1000, PF_R, b"rodata", 6)
        .segment(BASE + 0x2000, PF_R | PF_W, &[1, 2, 3, 4], 0x1800)
        .abi_note(AbiTarget::Hvt)
        .manifest(&[MftDevice::net("service"), MftDevice::block("storage")])
}

fn load(b: &ElfBuilder) -> Result<crate::Kernel<'static>, ElfError> {
    let bytes: &'static [u8] = b.build().leak();
    crate::load_kernel(bytes, AbiTarget::Hvt, MEM)
}

fn seg_err(b: &ElfBuilder) -> (usize, SegmentProblem) {
    match load(b) {
        Err(ElfError::Segment { index, problem }) => (index, problem),
        other => panic!("expected a segment error, got {other:?}"),
    }
}

#[test]
fn good_guest_loads() {
    let k = load(&good()).unwrap();
    assert_eq!(k.abi.abi_target, 1);
    assert_eq!(k.manifest.entries().len(), 3);
    assert_eq!(k.plan.entry, BASE + 0x20);
    assert_eq!(k.plan.segments.len(), 3);
    assert_eq!(k.plan.kernel_end, BASE + 0x4000);
    let text = &k.plan.segments[0];
    assert_eq!((text.start, text.end), (BASE, BASE + 0x1000));
    assert!(text.perms.exec && !text.perms.write);
    assert_eq!(text.perms.host_prot(), libc::PROT_READ);
    assert_eq!(
        k.plan.segments[2].perms.host_prot(),
        libc::PROT_READ | libc::PROT_WRITE
    );
    assert_eq!(
        k.plan.segments[0].perms.prot(),
        libc::PROT_READ | libc::PROT_EXEC
    );

    let mut mem = vec![0xEEu8; MEM as usize];
    k.plan.load_into(&mut mem);
    let d = (BASE + 0x2000) as usize;
    assert_eq!(&mem[d..d + 4], &[1, 2, 3, 4]);
    assert!(mem[d + 4..d + 0x1800].iter().all(|&b| b == 0));
    assert_eq!(mem[d + 0x1800], 0xEE);
    assert_eq!(&mem[BASE as usize + 0x1000..][..6], b"rodata");

    // The same load into memory that starts at 0x10000 (spt).
    let mut low = vec![0xEEu8; MEM as usize - 0x10000];
    k.plan.load_at(&mut low, 0x10000);
    assert_eq!(&low[..], &mem[0x10000..]);
}

#[test]
fn zero_size_segments_are_skipped_before_checks() {
    // Solo5's linker script: an empty .tdata PT_LOAD at vaddr 0, and a
    // NOBITS-only .bss that must not count in kernel_end.
    let b = good()
        .phdr(Phdr {
            p_type: PT_LOAD,
            p_flags: PF_R,
            p_vaddr: 0,
            p_align: 0,
            ..Phdr::default()
        })
        .phdr(Phdr {
            p_type: PT_LOAD,
            p_flags: PF_R | PF_W,
            p_vaddr: BASE + 0x10000,
            p_memsz: 0x20_0000,
            p_align: 0x1000,
            ..Phdr::default()
        });
    let k = load(&b).unwrap();
    assert_eq!(k.plan.segments.len(), 3);
    assert_eq!(k.plan.kernel_end, BASE + 0x4000);
}

#[test]
fn write_exec_is_refused() {
    let b = ElfBuilder::new(BASE)
        .segment(BASE, PF_R | PF_W | PF_X, &[0x90], 1)
        .abi_note(AbiTarget::Hvt)
        .manifest(&[]);
    assert_eq!(seg_err(&b), (0, SegmentProblem::WriteExec));
}

#[test]
fn overlapping_segments_are_refused() {
    // Second segment starts inside the first one's page.
    let b = ElfBuilder::new(BASE)
        .segment(BASE, PF_R | PF_X, &[0x90; 0x10], 0x10)
        .segment(BASE + 0x800, PF_R | PF_W, &[0; 0x10], 0x10)
        .abi_note(AbiTarget::Hvt)
        .manifest(&[]);
    assert_eq!(seg_err(&b), (1, SegmentProblem::Overlap));
    // Descending order.
    let b = ElfBuilder::new(BASE)
        .segment(BASE + 0x2000, PF_R, &[0; 0x10], 0x10)
        .segment(BASE, PF_R | PF_X, &[0x90; 0x10], 0x10)
        .abi_note(AbiTarget::Hvt)
        .manifest(&[]);
    assert_eq!(seg_err(&b), (1, SegmentProblem::NotAscending));
}

#[test]
fn pie_is_refused() {
    let mut b = good();
    b.e_type = ET_DYN;
    assert_eq!(load(&b).unwrap_err(), ElfError::Pie);
    assert!(
        ElfError::Pie
            .to_string()
            .starts_with("Invalid or unsupported executable")
    );
}

#[test]
fn header_checks() {
    let bytes = good().build();
    let patched = |at: usize, v: &[u8]| {
        let mut b = bytes.clone();
        b[at..at + v.len()].copy_from_slice(v);
        Elf::parse(&b).map(|_| ()).unwrap_err()
    };
    use HeaderProblem::*;
    assert_eq!(patched(0, b"\x7fELG"), ElfError::Header(Magic));
    assert_eq!(patched(4, &[1]), ElfError::Header(Class));
    assert_eq!(patched(5, &[2]), ElfError::Header(ByteOrder));
    assert_eq!(patched(20, &[0]), ElfError::Header(Version));
    assert_eq!(patched(16, &[1, 0]), ElfError::Header(Type));
    assert_eq!(patched(18, &[40, 0]), ElfError::Header(Machine));
    assert_eq!(patched(52, &[63, 0]), ElfError::Header(HeaderSizes));
    assert_eq!(patched(54, &[32, 0]), ElfError::Header(HeaderSizes));
    assert_eq!(patched(56, &[0, 0]), ElfError::Header(NoProgramHeaders));
    assert_eq!(
        patched(56, &[0xff, 0]),
        ElfError::Header(ProgramHeadersOutsideFile)
    );
    assert_eq!(
        patched(32, &[0xff; 8]),
        ElfError::Header(ProgramHeadersOutsideFile)
    );
    assert_eq!(
        Elf::parse(&bytes[..63]).unwrap_err(),
        ElfError::Header(Truncated)
    );
    // OSABI and ABIVERSION are not checked (lld writes 3).
    let mut b = bytes.clone();
    b[7] = 3;
    b[8] = 1;
    assert!(Elf::parse(&b).is_ok());
}

#[test]
fn missing_or_bad_abi_note() {
    let b = ElfBuilder::new(BASE)
        .segment(BASE, PF_R | PF_X, &[0x90], 1)
        .manifest(&[]);
    assert_eq!(load(&b).unwrap_err(), ElfError::NoAbiNote);
    assert_eq!(
        ElfError::NoAbiNote.to_string(),
        "No Solo5 ABI information found in executable"
    );

    // A note with the wrong name is not a Solo5 note.
    let mut bad_name = abi1_note_bytes(AbiTarget::Hvt);
    bad_name[12] = b's';
    let b = ElfBuilder::new(BASE)
        .segment(BASE, PF_R | PF_X, &[0x90], 1)
        .note(&bad_name)
        .manifest(&[]);
    assert_eq!(load(&b).unwrap_err(), ElfError::NoAbiNote);

    // descsz 0, descsz > 32, descsz past the PT_NOTE.
    for (descsz, extra) in [(0u32, 0usize), (33, 20), (16, 0)] {
        let mut note = NoteHeader::solo5(NOTE_TYPE_ABI1, descsz)
            .to_bytes()
            .to_vec();
        note.extend(vec![0; extra]);
        if descsz == 16 {
            note.extend([1, 0, 0, 0, 2, 0, 0]); // 15 bytes of a 16-byte descriptor
        }
        let b = ElfBuilder::new(BASE)
            .segment(BASE, PF_R | PF_X, &[0x90], 1)
            .note(&note)
            .manifest(&[]);
        assert_eq!(
            load(&b).unwrap_err(),
            ElfError::NoteSize { index: 1 },
            "descsz {descsz}"
        );
    }

    // A descriptor shorter than abi1_info.
    let mut note = NoteHeader::solo5(NOTE_TYPE_ABI1, 8).to_bytes().to_vec();
    note.extend([1, 0, 0, 0, 2, 0, 0, 0]);
    let b = ElfBuilder::new(BASE)
        .segment(BASE, PF_R | PF_X, &[0x90], 1)
        .note(&note)
        .manifest(&[]);
    assert_eq!(load(&b).unwrap_err(), ElfError::AbiNoteInvalid);
}

#[test]
fn wrong_target_and_version() {
    let b = ElfBuilder::new(BASE)
        .segment(BASE, PF_R | PF_X, &[0x90], 1)
        .abi_note(AbiTarget::Spt)
        .manifest(&[]);
    let e = load(&b).unwrap_err();
    assert_eq!(
        e,
        ElfError::WrongTarget {
            expected: AbiTarget::Hvt,
            found: 2
        }
    );
    assert_eq!(e.to_string(), "Executable is not for the solo5-hvt target");

    let mut note = abi1_note_bytes(AbiTarget::Hvt);
    note[24] = 3;
    let b = ElfBuilder::new(BASE)
        .segment(BASE, PF_R | PF_X, &[0x90], 1)
        .note(&note)
        .manifest(&[]);
    let e = load(&b).unwrap_err();
    assert_eq!(
        e,
        ElfError::WrongVersion {
            found: 3,
            supported: 2
        }
    );
    assert_eq!(
        e.to_string(),
        "Executable requests unsupported ABI version 3"
    );
}

/// A guest whose manifest note is `note`.
fn with_manifest_note(note: &[u8]) -> ElfBuilder {
    ElfBuilder::new(BASE)
        .segment(BASE, PF_R | PF_X, &[0x90], 1)
        .abi_note(AbiTarget::Hvt)
        .note(note)
}

fn manifest_err(note: &[u8]) -> ManifestError {
    match load(&with_manifest_note(note)) {
        Err(ElfError::Manifest(e)) => e,
        other => panic!("expected a manifest error, got {other:?}"),
    }
}

#[test]
fn invalid_manifests() {
    let good = mft1_note_bytes(&[MftDevice::block("storage")]);
    let patched = |at: usize, v: u8| {
        let mut n = good.clone();
        n[at] = v;
        n
    };
    // Note offsets: header 0..20, pad 20..24, version 24, entries 28, e[0] 32, e[1] 136.
    assert_eq!(manifest_err(&patched(24, 2)), ManifestError::Version(2));
    assert_eq!(
        manifest_err(&patched(32 + 71, 0)),
        ManifestError::FirstNotReserved
    );
    assert_eq!(
        manifest_err(&patched(32, b'x')),
        ManifestError::FirstNotReserved
    );
    assert_eq!(
        manifest_err(&patched(136 + 67, b'x')),
        ManifestError::NameNotTerminated(1)
    );
    assert_eq!(
        manifest_err(&patched(136 + 96, 1)),
        ManifestError::AttachedInFile(1)
    );
    // The entry count does not match the descriptor size.
    assert_eq!(
        manifest_err(&patched(28, 3)),
        ManifestError::Size { size: 8 + 2 * 104 }
    );
    let e = ElfError::Manifest(ManifestError::Version(2));
    assert!(e.to_string().starts_with("Solo5 manifest is invalid"));

    // 65 entries with a matching size exceed the tender's maximum descsz,
    // so the note itself is refused; 64 entries are fine.
    let devs: Vec<String> = (0..63).map(|i| format!("d{i}")).collect();
    let devs: Vec<MftDevice<'_>> = devs.iter().map(|n| MftDevice::block(n)).collect();
    let max = mft1_note_bytes(&devs);
    assert!(load(&with_manifest_note(&max)).is_ok());
    let mut over = max.clone();
    over.extend_from_slice(&[0; 104]);
    over[4..8].copy_from_slice(&((4 + 8 + 65 * 104) as u32).to_le_bytes());
    over[28] = 65;
    assert_eq!(
        load(&with_manifest_note(&over)).unwrap_err(),
        ElfError::NoteSize { index: 2 }
    );
    // An entry count over 64 that disagrees with the descriptor size.
    let mut lying = good.clone();
    lying[28] = 65;
    assert_eq!(
        manifest_err(&lying),
        ManifestError::Size { size: 8 + 2 * 104 }
    );

    // A descsz smaller than the pad.
    let mut tiny = NoteHeader::solo5(NOTE_TYPE_MFT1, 2).to_bytes().to_vec();
    tiny.extend([0, 0]);
    assert_eq!(manifest_err(&tiny), ManifestError::Size { size: 2 });

    // No manifest at all.
    let b = ElfBuilder::new(BASE)
        .segment(BASE, PF_R | PF_X, &[0x90], 1)
        .abi_note(AbiTarget::Hvt);
    assert_eq!(load(&b).unwrap_err(), ElfError::NoManifest);
}

#[test]
fn only_the_first_note_of_each_pt_note_counts() {
    // ABI and manifest notes merged into one PT_NOTE, as lld does for notes
    // of equal alignment: the manifest is never seen.
    let mut merged = abi1_note_bytes(AbiTarget::Hvt).to_vec();
    merged.extend_from_slice(&[0; 4]);
    merged.extend(mft1_note_bytes(&[]));
    let b = ElfBuilder::new(BASE)
        .segment(BASE, PF_R | PF_X, &[0x90], 1)
        .note(&merged);
    assert_eq!(load(&b).unwrap_err(), ElfError::NoManifest);
    // An OpenBSD note first in its own PT_NOTE is fine.
    let b = good().note(&solo5_abi::OPENBSD_NOTE_BYTES);
    assert!(load(&b).is_ok());
}

#[test]
fn tiny_pt_notes() {
    // p_filesz < 12 rejects the whole binary when the search reaches it.
    for tiny in [&[0u8; 11][..], &[]] {
        let b = ElfBuilder::new(BASE)
            .segment(BASE, PF_R | PF_X, &[0x90], 1)
            .note(tiny)
            .abi_note(AbiTarget::Hvt)
            .manifest(&[]);
        assert_eq!(load(&b).unwrap_err(), ElfError::NoteTooSmall { index: 1 });
    }
    // Solo5 stops at the note it wants, so one after both notes is never read.
    assert!(load(&good().note(&[0; 11])).is_ok());
    // 12 <= p_filesz < 20 is skipped.
    let b = ElfBuilder::new(BASE)
        .segment(BASE, PF_R | PF_X, &[0x90], 1)
        .note(&[0; 16])
        .abi_note(AbiTarget::Hvt)
        .manifest(&[]);
    assert!(load(&b).is_ok());
    // A note header outside the file.
    let b = good().phdr(Phdr {
        p_type: PT_NOTE,
        p_offset: Some(1 << 40),
        p_filesz: Some(64),
        ..Phdr::default()
    });
    // The ABI and manifest notes come first, so this only matters if searched.
    assert!(load(&b).is_ok());
    let b = ElfBuilder::new(BASE)
        .segment(BASE, PF_R | PF_X, &[0x90], 1)
        .phdr(Phdr {
            p_type: PT_NOTE,
            p_offset: Some(1 << 40),
            p_filesz: Some(64),
            ..Phdr::default()
        })
        .abi_note(AbiTarget::Hvt)
        .manifest(&[]);
    assert_eq!(load(&b).unwrap_err(), ElfError::NoteSize { index: 1 });
}

#[test]
fn out_of_range_segments() {
    let text = |vaddr: u64| {
        ElfBuilder::new(BASE)
            .segment(vaddr, PF_R | PF_X, &[0x90; 0x10], 0x10)
            .abi_note(AbiTarget::Hvt)
            .manifest(&[])
    };
    assert_eq!(seg_err(&text(0xF_F000)), (0, SegmentProblem::BelowMinBase));
    assert_eq!(seg_err(&text(MEM)), (0, SegmentProblem::OutsideMemory));
    assert_eq!(seg_err(&text(MEM - 8)), (0, SegmentProblem::OutsideMemory));

    // memsz past the end of memory.
    let b = ElfBuilder::new(BASE)
        .segment(BASE, PF_R | PF_W, &[0; 0x10], MEM)
        .abi_note(AbiTarget::Hvt)
        .manifest(&[]);
    assert_eq!(seg_err(&b), (0, SegmentProblem::OutsideMemory));

    // memsz < filesz.
    let b = ElfBuilder::new(BASE)
        .segment(BASE, PF_R | PF_W, &[0; 0x10], 0x8)
        .abi_note(AbiTarget::Hvt)
        .manifest(&[]);
    assert_eq!(seg_err(&b), (0, SegmentProblem::MemszBelowFilesz));

    // File data outside the file.
    let b = ElfBuilder::new(BASE)
        .phdr(Phdr {
            p_type: PT_LOAD,
            p_flags: PF_R,
            p_vaddr: BASE,
            p_offset: Some(0x1000_0000),
            p_filesz: Some(0x10),
            p_memsz: 0x10,
            p_align: 0x1000,
            ..Phdr::default()
        })
        .abi_note(AbiTarget::Hvt)
        .manifest(&[]);
    assert_eq!(seg_err(&b), (0, SegmentProblem::OutsideFile));

    // Entry point outside memory or below the base.
    let mut b = good();
    b.entry = MEM;
    assert_eq!(
        load(&b).unwrap_err(),
        ElfError::EntryOutOfRange { entry: MEM }
    );
    b.entry = 0x1000;
    assert_eq!(
        load(&b).unwrap_err(),
        ElfError::EntryOutOfRange { entry: 0x1000 }
    );
}

#[test]
fn overflowing_addresses() {
    // vaddr + memsz overflows u64.
    let b = ElfBuilder::new(BASE)
        .phdr(Phdr {
            p_type: PT_LOAD,
            p_flags: PF_R,
            p_vaddr: BASE,
            p_memsz: u64::MAX - 0x10,
            p_align: 0x1000,
            data: vec![0; 16],
            ..Phdr::default()
        })
        .abi_note(AbiTarget::Hvt)
        .manifest(&[]);
    assert_eq!(seg_err(&b), (0, SegmentProblem::Overflow));
    // Rounding up overflows.
    let b = ElfBuilder::new(BASE)
        .phdr(Phdr {
            p_type: PT_LOAD,
            p_flags: PF_R,
            p_vaddr: BASE,
            p_memsz: u64::MAX - BASE - 1,
            p_align: 0x1000,
            data: vec![0; 16],
            ..Phdr::default()
        })
        .abi_note(AbiTarget::Hvt)
        .manifest(&[]);
    assert_eq!(seg_err(&b), (0, SegmentProblem::Overflow));
    // A huge filesz: vaddr + filesz overflows (the file is much shorter).
    let b = ElfBuilder::new(BASE)
        .phdr(Phdr {
            p_type: PT_LOAD,
            p_flags: PF_R,
            p_vaddr: BASE,
            p_filesz: Some(u64::MAX),
            p_memsz: u64::MAX,
            p_align: 0x1000,
            ..Phdr::default()
        })
        .abi_note(AbiTarget::Hvt)
        .manifest(&[]);
    assert_eq!(seg_err(&b), (0, SegmentProblem::Overflow));
}

#[test]
fn alignment_rules() {
    let aligned = |align: u64| {
        ElfBuilder::new(BASE).phdr(Phdr {
            p_type: PT_LOAD,
            p_flags: PF_R | PF_X,
            p_vaddr: BASE,
            p_memsz: 0x10,
            p_align: align,
            data: vec![0x90; 0x10],
            ..Phdr::default()
        })
    };
    let with_notes = |b: ElfBuilder| b.abi_note(AbiTarget::Hvt).manifest(&[]);
    assert_eq!(
        seg_err(&with_notes(aligned(0))),
        (0, SegmentProblem::BadAlign)
    );
    assert_eq!(
        seg_err(&with_notes(aligned(0x1800))),
        (0, SegmentProblem::BadAlign)
    );
    // p_align 1 or 0x10: the end is not page aligned.
    assert_eq!(
        seg_err(&with_notes(aligned(1))),
        (0, SegmentProblem::NotPageAligned)
    );
    assert_eq!(
        seg_err(&with_notes(aligned(0x10))),
        (0, SegmentProblem::NotPageAligned)
    );
    // 2 MiB pages round the first segment down to 0.
    assert_eq!(
        seg_err(&with_notes(aligned(0x20_0000))),
        (0, SegmentProblem::BelowMinBase)
    );
    assert!(load(&with_notes(aligned(0x1000))).is_ok());
}

#[test]
fn no_loadable_segments() {
    let b = ElfBuilder::new(BASE).abi_note(AbiTarget::Hvt).manifest(&[]);
    assert_eq!(load(&b).unwrap_err(), ElfError::NoLoadableSegments);
}
