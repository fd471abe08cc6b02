//! A minimal ELF64 relocatable object around one blob of bytes, written as a stream: the
//! way assets archives enter an image without passing through the compiler. The object
//! holds one read-only section with the bytes and two global symbols at its start and end
//! (what `ld -r -b binary` makes, without needing binutils).

use std::io::{self, Read, Seek, Write};
use std::path::Path;

/// The target machine of the object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Machine {
    /// x86_64 (EM_X86_64).
    X86_64,
    /// aarch64 (EM_AARCH64).
    Aarch64,
}

impl Machine {
    /// The machine of a rustc target triple (the host's when `None`).
    pub fn of(triple: Option<&str>) -> Machine {
        let arch = triple.map_or(std::env::consts::ARCH, |t| {
            t.split('-').next().unwrap_or_default()
        });
        if arch == "aarch64" {
            Machine::Aarch64
        } else {
            Machine::X86_64
        }
    }

    fn e_machine(self) -> u16 {
        match self {
            Machine::X86_64 => 62,
            Machine::Aarch64 => 183,
        }
    }
}

const ALIGN: u64 = 512;

fn pad(w: &mut impl Write, from: u64, to: u64) -> io::Result<()> {
    io::copy(&mut io::repeat(0).take(to - from), w).map(|_| ())
}

/// An ELF64 section header (the fields that vary; `sh_addr` is 0 in an object).
#[derive(Default)]
struct Shdr {
    name: u32,
    ty: u32,
    flags: u64,
    offset: u64,
    size: u64,
    link: u32,
    info: u32,
    align: u64,
    entsize: u64,
}

fn shdr(w: &mut impl Write, h: Shdr) -> io::Result<()> {
    w.write_all(&h.name.to_le_bytes())?;
    w.write_all(&h.ty.to_le_bytes())?;
    w.write_all(&h.flags.to_le_bytes())?;
    w.write_all(&0u64.to_le_bytes())?;
    w.write_all(&h.offset.to_le_bytes())?;
    w.write_all(&h.size.to_le_bytes())?;
    w.write_all(&h.link.to_le_bytes())?;
    w.write_all(&h.info.to_le_bytes())?;
    w.write_all(&h.align.to_le_bytes())?;
    w.write_all(&h.entsize.to_le_bytes())
}

fn sym(
    w: &mut impl Write,
    name: u32,
    info: u8,
    shndx: u16,
    value: u64,
    size: u64,
) -> io::Result<()> {
    w.write_all(&name.to_le_bytes())?;
    w.write_all(&[info, 0])?;
    w.write_all(&shndx.to_le_bytes())?;
    w.write_all(&value.to_le_bytes())?;
    w.write_all(&size.to_le_bytes())
}

/// Writes `out`, an object with section `.rodata.compose_assets.<ident>` holding the bytes
/// of `blob` and the symbols `compose_assets_<ident>_start` and `_end` around them. Memory
/// use is constant: the bytes are streamed. Written through a temporary file and a rename.
pub fn write_blob_object(blob: &Path, ident: &str, machine: Machine, out: &Path) -> io::Result<()> {
    let len = std::fs::metadata(blob)?.len();
    let section = format!(".rodata.compose_assets.{ident}");
    let start = format!("compose_assets_{ident}_start");
    let end = format!("compose_assets_{ident}_end");
    // String tables.
    let mut shstr = vec![0u8];
    let add = |t: &mut Vec<u8>, s: &str| -> u32 {
        let at = t.len() as u32;
        t.extend_from_slice(s.as_bytes());
        t.push(0);
        at
    };
    let n_data = add(&mut shstr, &section);
    let n_symtab = add(&mut shstr, ".symtab");
    let n_strtab = add(&mut shstr, ".strtab");
    let n_shstrtab = add(&mut shstr, ".shstrtab");
    let n_stack = add(&mut shstr, ".note.GNU-stack");
    let mut strtab = vec![0u8];
    let s_start = add(&mut strtab, &start);
    let s_end = add(&mut strtab, &end);
    // Layout: header, data (aligned), symtab, strtab, shstrtab, section headers.
    let data_off = ALIGN;
    let symtab_off = (data_off + len).div_ceil(8) * 8;
    let symtab_len = 3 * 24;
    let strtab_off = symtab_off + symtab_len;
    let shstr_off = strtab_off + strtab.len() as u64;
    let sh_off = (shstr_off + shstr.len() as u64).div_ceil(8) * 8;
    let shnum: u16 = 6;

    let dir = out.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    {
        let mut w = io::BufWriter::with_capacity(1 << 20, tmp.as_file_mut());
        // ELF header.
        w.write_all(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0])?;
        w.write_all(&1u16.to_le_bytes())?; // ET_REL
        w.write_all(&machine.e_machine().to_le_bytes())?;
        w.write_all(&1u32.to_le_bytes())?; // EV_CURRENT
        w.write_all(&0u64.to_le_bytes())?; // e_entry
        w.write_all(&0u64.to_le_bytes())?; // e_phoff
        w.write_all(&sh_off.to_le_bytes())?;
        w.write_all(&0u32.to_le_bytes())?; // e_flags
        w.write_all(&64u16.to_le_bytes())?; // e_ehsize
        w.write_all(&0u16.to_le_bytes())?; // e_phentsize
        w.write_all(&0u16.to_le_bytes())?; // e_phnum
        w.write_all(&64u16.to_le_bytes())?; // e_shentsize
        w.write_all(&shnum.to_le_bytes())?;
        w.write_all(&4u16.to_le_bytes())?; // e_shstrndx
        pad(&mut w, 64, data_off)?;
        // The bytes, streamed.
        let copied = io::copy(&mut std::fs::File::open(blob)?.take(len), &mut w)?;
        if copied != len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{} changed while it was read", blob.display()),
            ));
        }
        pad(&mut w, data_off + len, symtab_off)?;
        // Symbols: the null symbol, then the two globals (STB_GLOBAL << 4 | STT_OBJECT / STT_NOTYPE).
        sym(&mut w, 0, 0, 0, 0, 0)?;
        sym(&mut w, s_start, (1 << 4) | 1, 1, 0, len)?;
        sym(&mut w, s_end, 1 << 4, 1, len, 0)?;
        w.write_all(&strtab)?;
        w.write_all(&shstr)?;
        pad(&mut w, shstr_off + shstr.len() as u64, sh_off)?;
        // Section headers: null, data, symtab, strtab, shstrtab, .note.GNU-stack.
        const PROGBITS: u32 = 1;
        const SYMTAB: u32 = 2;
        const STRTAB: u32 = 3;
        const ALLOC: u64 = 2;
        shdr(&mut w, Shdr::default())?;
        shdr(
            &mut w,
            Shdr {
                name: n_data,
                ty: PROGBITS,
                flags: ALLOC,
                offset: data_off,
                size: len,
                align: ALIGN,
                ..Shdr::default()
            },
        )?;
        // sh_link: the string table's index; sh_info: the first global symbol.
        shdr(
            &mut w,
            Shdr {
                name: n_symtab,
                ty: SYMTAB,
                offset: symtab_off,
                size: symtab_len,
                link: 3,
                info: 1,
                align: 8,
                entsize: 24,
                ..Shdr::default()
            },
        )?;
        shdr(
            &mut w,
            Shdr {
                name: n_strtab,
                ty: STRTAB,
                offset: strtab_off,
                size: strtab.len() as u64,
                align: 1,
                ..Shdr::default()
            },
        )?;
        shdr(
            &mut w,
            Shdr {
                name: n_shstrtab,
                ty: STRTAB,
                offset: shstr_off,
                size: shstr.len() as u64,
                align: 1,
                ..Shdr::default()
            },
        )?;
        // An empty .note.GNU-stack: the object does not need an executable stack.
        shdr(
            &mut w,
            Shdr {
                name: n_stack,
                ty: PROGBITS,
                offset: sh_off,
                align: 1,
                ..Shdr::default()
            },
        )?;
        w.flush()?;
    }
    tmp.as_file().sync_all()?;
    tmp.as_file_mut().rewind()?;
    tmp.persist(out).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_object_holds_the_bytes_between_its_symbols() {
        let dir = tempfile::tempdir().unwrap();
        let blob = dir.path().join("blob");
        let bytes: Vec<u8> = (0..5000u32).map(|i| (i * 7) as u8).collect();
        std::fs::write(&blob, &bytes).unwrap();
        let obj = dir.path().join("blob.o");
        write_blob_object(&blob, "site", Machine::X86_64, &obj).unwrap();
        let data = std::fs::read(&obj).unwrap();
        assert_eq!(&data[..4], b"\x7fELF");
        assert_eq!(u16::from_le_bytes([data[16], data[17]]), 1, "ET_REL");
        assert_eq!(&data[512..512 + bytes.len()], &bytes[..]);
        // The same input gives the same object.
        let again = dir.path().join("again.o");
        write_blob_object(&blob, "site", Machine::X86_64, &again).unwrap();
        assert_eq!(std::fs::read(&again).unwrap(), data);
        // It parses as ELF with the section and both symbols where they belong.
        let text = String::from_utf8_lossy(&data);
        assert!(
            text.contains(".rodata.compose_assets.site")
                && text.contains("compose_assets_site_end")
        );
    }
}
