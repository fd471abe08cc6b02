//! rpi4: a bare-metal Raspberry Pi 4 image (`kernel8.img`), booted by the Pi's firmware
//! from an SD card, or by `qemu-system-aarch64 -M raspi4b` (`compose run`).
//!
//! The glue links `compose-rpi4` (platforms/rpi4) for `aarch64-unknown-none` at 0x80000
//! with its linker script; [`Rpi4::finish_image`] turns the ELF into the flat image the
//! firmware and QEMU load (the bytes of its loadable segments from 0x80000 on, as
//! `objcopy -O binary` would, read with the `object` crate). The platform has a console,
//! the generic timer and randomness; network, block devices, secrets and a wall clock
//! are refused by `compose check` (no GENET, EMMC2 or RTC driver yet).

use super::{DeployFormat, ExtraOutputs, HostDevice, Launcher, PlatformCrate, Target};
use crate::graph::Graph;
use std::collections::BTreeMap;
use std::path::PathBuf;

mod sdcard;

/// The variable that names the directory holding the Pi 4's firmware.
pub const FIRMWARE_ENV: &str = "COMPOSE_RPI4_FIRMWARE";
/// The firmware files the SD card needs (a matched pair: the VideoCore's boot loader
/// and its memory-layout fix-up).
pub const FIRMWARE: &[&str] = &["fixup4.dat", "start4.elf"];
/// Files copied from the firmware directory when they are there: the Pi 4 B's device
/// tree (from a Linux kernel package; Debian's raspi-firmware has none) and the
/// firmware's licence, which its terms want next to it.
pub const FIRMWARE_OPTIONAL: &[&str] = &["LICENCE.broadcom", "bcm2711-rpi-4-b.dtb"];

/// How to get the firmware, for messages and docs.
pub const FIRMWARE_HOWTO: &str = "the Raspberry Pi firmware is not free software and is not part of compose: \
get it from Debian's raspi-firmware package (non-free-firmware): `apt-get download raspi-firmware && \
dpkg-deb -x raspi-firmware_*.deb fw`, then COMPOSE_RPI4_FIRMWARE=fw/usr/lib/raspi-firmware";

/// The firmware directory's files, as (label, path): none when `$COMPOSE_RPI4_FIRMWARE`
/// is unset; an error when it names a directory without the required files.
pub fn firmware_files() -> Result<Vec<(String, PathBuf)>, String> {
    let Some(dir) = std::env::var_os(FIRMWARE_ENV).filter(|d| !d.is_empty()) else {
        return Ok(Vec::new());
    };
    let dir = PathBuf::from(dir);
    if !dir.is_dir() {
        return Err(format!(
            "{FIRMWARE_ENV}={}: not a directory ({FIRMWARE_HOWTO})",
            dir.display()
        ));
    }
    let missing: Vec<&str> = FIRMWARE
        .iter()
        .copied()
        .filter(|f| !dir.join(f).is_file())
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "{FIRMWARE_ENV}={}: no {} there ({FIRMWARE_HOWTO})",
            dir.display(),
            missing.join(" or ")
        ));
    }
    Ok(FIRMWARE
        .iter()
        .chain(FIRMWARE_OPTIONAL)
        .filter(|f| dir.join(f).is_file())
        .map(|f| (format!("firmware/{f}"), dir.join(f)))
        .collect())
}

/// `config.txt`: what the firmware needs to boot a bare-metal 64-bit kernel8.img with
/// the PL011 on GPIO 14/15 (the kernel routes them itself) and interrupts on the GIC.
pub fn config_txt(name: &str) -> String {
    format!(
        "# {name}: a compose unikernel for the Raspberry Pi 4 (written by compose).\n\
         # The firmware (start4.elf) reads this file, then loads kernel8.img at 0x80000\n\
         # and starts it at EL2 on core 0; the boot arguments are in cmdline.txt.\n\
         arm_64bit=1\n\
         kernel=kernel8.img\n\
         kernel_address=0x80000\n\
         enable_uart=1\n\
         enable_gic=1\n"
    )
}

/// `cmdline.txt`: the boot arguments with their defaults (the image has them baked in:
/// edit the file on the card to change them), one line. An argument whose default has
/// white space is left out (a command line is split at white space).
pub fn cmdline_txt(graph: &Graph) -> String {
    let words: Vec<String> = graph
        .bootargs
        .iter()
        .filter_map(|b| {
            let v = b.default.as_ref()?.text();
            (!v.chars().any(char::is_whitespace)).then(|| format!("--{}={v}", b.name))
        })
        .collect();
    words.join(" ") + "\n"
}

/// The rpi4 target.
#[derive(Debug, Clone, Copy)]
pub struct Rpi4;

/// Where the firmware (`kernel_address=0x80000` in config.txt) and QEMU load the image.
pub const LOAD_ADDRESS: u64 = 0x80000;

/// The device kinds the platform implements.
pub const KINDS: &[&str] = &["console", "clock", "random", "audio"];

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
        super::memory_within(
            bytes,
            MEM_MIN,
            MEM_MAX,
            "an rpi4 unikernel",
            "the ARM's share of the smallest Pi 4",
        )
    }
    fn check_image(&self, image: &[u8]) -> Result<(), String> {
        flat_image(image).map(|_| ())
    }
    fn finish_image(&self, artifact: &[u8]) -> Result<Option<Vec<u8>>, String> {
        flat_image(artifact).map(Some)
    }
    fn input_files(&self) -> Result<Vec<(String, PathBuf)>, String> {
        firmware_files()
    }
    fn extra_outputs(
        &self,
        graph: &Graph,
        image: &[u8],
        inputs: &[(String, PathBuf)],
    ) -> Result<ExtraOutputs, String> {
        if inputs.is_empty() {
            return Ok(ExtraOutputs {
                note: Some(format!(
                    "no SD card image: {FIRMWARE_ENV} names no firmware directory ({FIRMWARE_HOWTO})"
                )),
                ..ExtraOutputs::default()
            });
        }
        let mut files = vec![
            (
                "config.txt".to_string(),
                config_txt(&graph.name).into_bytes(),
            ),
            ("cmdline.txt".to_string(), cmdline_txt(graph).into_bytes()),
            ("kernel8.img".to_string(), image.to_vec()),
        ];
        let mut components = Vec::new();
        for (label, path) in inputs {
            let name = label.strip_prefix("firmware/").unwrap_or(label).to_string();
            let bytes =
                std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            use sha2::Digest as _;
            let sha = hex::encode(sha2::Sha256::digest(&bytes));
            let licence = if name.ends_with(".dtb") {
                "the Linux kernel's device tree (GPL-2.0)"
            } else {
                "Raspberry Pi firmware: proprietary (Broadcom, Raspberry Pi Ltd), redistributable unmodified for Raspberry Pi devices"
            };
            components.push(serde_json::json!({
                "type": "firmware",
                "bom-ref": format!("file:{name}"),
                "name": name,
                "hashes": [{ "alg": "SHA-256", "content": sha }],
                "licenses": [{ "license": { "name": licence } }],
                "properties": [{ "name": "compose:source", "value": format!("{FIRMWARE_ENV} (not part of compose), in the SD card image") }],
            }));
            files.push((name, bytes));
        }
        let card = sdcard::image(&files)?;
        Ok(ExtraOutputs {
            files: vec![(format!("{}.sdcard.img", graph.name), card)],
            sbom_components: components,
            note: None,
        })
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
