//! rpi4: a bare-metal Raspberry Pi 4 image (`kernel8.img`), booted by the Pi's firmware
//! from an SD card, or by `qemu-system-aarch64 -M raspi4b` (`compose run`).
//!
//! The glue links `compose-rpi4` (platforms/rpi4) for `aarch64-unknown-none` at 0x80000
//! with its linker script; [`Rpi4::finish_image`] turns the ELF into the flat image the
//! firmware and QEMU load (the bytes of its loadable segments from 0x80000 on, as
//! `objcopy -O binary` would, read with the `object` crate). The platform has a console,
//! the generic timer and randomness; network, block devices, secrets and a wall clock
//! are refused by `compose check` (no GENET, EMMC2 or RTC driver yet).

use super::{DeployFormat, HostDevice, Launcher, PlatformCrate, Target};
use std::collections::BTreeMap;

/// The rpi4 target.
#[derive(Debug, Clone, Copy)]
pub struct Rpi4;

/// Where the firmware (`kernel_address=0x80000` in config.txt) and QEMU load the image.
pub const LOAD_ADDRESS: u64 = 0x80000;

/// The device kinds the platform implements.
pub const KINDS: &[&str] = &["console", "clock", "random"];

/// The ARM memory a 1 GiB Pi 4 leaves to the ARM (and QEMU's firmware reports): the
/// heap is what the firmware reports above the image, so `memory` is only checked.
const MEM_MAX: u64 = 948 << 20;
const MEM_MIN: u64 = 2 << 20;

impl Target for Rpi4 {
    fn name(&self) -> &'static str {
        "rpi4"
    }
    fn summary(&self) -> &'static str {
        "Raspberry Pi 4: a bare-metal kernel8.img (QEMU raspi4b for compose run)"
    }
    fn triple(&self) -> Option<&'static str> {
        Some("aarch64-unknown-none")
    }
    fn platform(&self) -> PlatformCrate {
        PlatformCrate {
            krate: "compose-rpi4",
            path: "platforms/rpi4",
        }
    }
    fn template(&self) -> &'static str {
        "rpi4"
    }
    fn implements(&self) -> &'static [&'static str] {
        KINDS
    }
    fn image_file(&self, _name: &str) -> String {
        "kernel8.img".into()
    }
    fn attaches_net(&self) -> bool {
        false
    }
    fn glue_context(
        &self,
        _host: &[HostDevice],
    ) -> Result<BTreeMap<&'static str, minijinja::Value>, String> {
        Ok(BTreeMap::new())
    }
    fn check_memory(&self, bytes: u64) -> Result<(), String> {
        if (MEM_MIN..=MEM_MAX).contains(&bytes) {
            Ok(())
        } else {
            Err(format!(
                "an rpi4 unikernel has {} MiB to {} MiB of memory (the ARM's share of the smallest Pi 4)",
                MEM_MIN >> 20,
                MEM_MAX >> 20
            ))
        }
    }
    fn check_image(&self, image: &[u8]) -> Result<(), String> {
        flat_image(image).map(|_| ())
    }
    fn finish_image(&self, artifact: &[u8]) -> Result<Option<Vec<u8>>, String> {
        flat_image(artifact).map(Some)
    }
    fn launcher(&self) -> Launcher {
        Launcher::Qemu
    }
    fn runtime_flags(&self) -> Option<&'static str> {
        Some("--rpi4:")
    }
    fn deploy_formats(&self) -> &'static [DeployFormat] {
        &[]
    }
}

/// The flat image of an aarch64 ELF executable linked at [`LOAD_ADDRESS`] with its entry
/// there: the file bytes of every loadable segment, placed at their physical address
/// minus the load address, gaps zeroed (`.bss`, which has no file bytes, is left to the
/// runtime's start code).
pub fn flat_image(elf: &[u8]) -> Result<Vec<u8>, String> {
    use object::elf;
    use object::read::elf::{ElfFile64, FileHeader as _, ProgramHeader as _};
    let file = ElfFile64::<object::Endianness>::parse(elf)
        .map_err(|e| format!("the image is not an ELF64 file: {e}"))?;
    let endian = file.endian();
    let header = file.elf_header();
    if header.e_machine(endian) != elf::EM_AARCH64 {
        return Err("the image is not an aarch64 executable".into());
    }
    let entry = header.e_entry(endian);
    if entry != LOAD_ADDRESS {
        return Err(format!(
            "the entry point is {entry:#x}, not {LOAD_ADDRESS:#x} (was it linked with compose-rpi4's script?)"
        ));
    }
    let mut out: Vec<u8> = Vec::new();
    for ph in file.elf_program_headers() {
        if ph.p_type(endian) != elf::PT_LOAD || ph.p_filesz(endian) == 0 {
            continue;
        }
        let addr = ph.p_paddr(endian);
        let offset = addr
            .checked_sub(LOAD_ADDRESS)
            .ok_or_else(|| format!("a segment at {addr:#x} lies below {LOAD_ADDRESS:#x}"))?;
        let data = ph
            .data(endian, elf)
            .map_err(|_| "a segment's bytes lie outside the file".to_string())?;
        let offset = usize::try_from(offset).map_err(|_| "a segment is too far out")?;
        let end = offset + data.len();
        if end > 256 << 20 {
            return Err("the image would be larger than 256 MiB".into());
        }
        if out.len() < end {
            out.resize(end, 0);
        }
        out[offset..end].copy_from_slice(data);
    }
    if out.is_empty() {
        return Err("the image has no loadable bytes".into());
    }
    Ok(out)
}
