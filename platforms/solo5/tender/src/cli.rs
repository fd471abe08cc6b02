//! The Solo5 tender command line (§1.5, §2).
//!
//! ```text
//! TENDER [--mem=MiB] [--net:NAME=IFACE]... [--net-mac:NAME=xx:xx:xx:xx:xx:xx]...
//!        [--block:NAME=PATH]... [--block-ro:NAME=PATH]... [--block-sector-size:NAME=N]...
//!        [--] KERNEL [ARGS...]
//!
//! `--block-ro:NAME=PATH` is compose's addition to the Solo5 options: the image is opened
//! read-only and every guest write to it fails with `SOLO5_R_EUNSPEC` (Solo5's ABI has no
//! read-only flag in `solo5_block_info`, so the guest learns it from the failed write).
//! ```
//!
//! [`parse`] mirrors Solo5's two passes: the first finds KERNEL (the first
//! argument not starting with `-`, or the one after `--`) and stops at
//! `--help`/`--version`; the second checks every option before KERNEL. Only
//! the `=` forms exist, and options must come before KERNEL. Device names are
//! then checked against the kernel's manifest by [`Invocation::devices`].

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use solo5_abi::{CMDLINE_SIZE, DeviceType, MFT_NAME_MAX};

use crate::manifest::Manifest;

/// Longest TAP interface name (`IFNAMSIZ - 1`).
pub const IFACE_MAX: usize = 15;
/// Default block size.
pub const DEFAULT_SECTOR_SIZE: u16 = 512;

/// What the command line asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// `--help`: print [`usage`] and exit 1.
    Help,
    /// `--version`: print the version and exit 0.
    Version,
    /// Run KERNEL.
    Run(Invocation),
}

/// A syntactically valid request to run a kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invocation {
    /// `--mem=N` in MiB, if given (the tender applies its own default and
    /// rounding).
    pub mem_mib: Option<u64>,
    /// `--net:NAME=IFACE` in command-line order.
    pub nets: Vec<(String, String)>,
    /// `--net-mac:NAME=MAC`.
    pub net_macs: BTreeMap<String, [u8; 6]>,
    /// `--block:NAME=PATH` and `--block-ro:NAME=PATH` in command-line order: name, path,
    /// and whether it was `--block-ro:`.
    pub blocks: Vec<(String, PathBuf, bool)>,
    /// `--block-sector-size:NAME=N`.
    pub sector_sizes: BTreeMap<String, u16>,
    /// Tender-specific flags that were given (from the `extra_flags` of [`parse`]).
    pub flags: Vec<&'static str>,
    /// The unikernel executable.
    pub kernel: PathBuf,
    /// Arguments after KERNEL, for the guest.
    pub args: Vec<OsString>,
}

/// A device to attach, checked against the manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceArg {
    /// A NET_BASIC device backed by a TAP interface.
    Net {
        /// Manifest index.
        handle: u64,
        /// Device name.
        name: String,
        /// TAP interface name.
        iface: String,
        /// `--net-mac`, if given.
        mac: Option<[u8; 6]>,
    },
    /// A BLOCK_BASIC device backed by a file.
    Block {
        /// Manifest index.
        handle: u64,
        /// Device name.
        name: String,
        /// Image path.
        path: PathBuf,
        /// Block size (512 unless `--block-sector-size` says otherwise).
        sector_size: u16,
        /// Attached with `--block-ro:`: opened read-only, writes refused.
        read_only: bool,
    },
}

impl DeviceArg {
    /// The manifest index.
    pub fn handle(&self) -> u64 {
        match self {
            DeviceArg::Net { handle, .. } | DeviceArg::Block { handle, .. } => *handle,
        }
    }
}

/// A command-line problem. Every one ends the tender with exit 1.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CliError {
    /// No KERNEL.
    #[error("Missing KERNEL operand")]
    MissingKernel,
    /// An option nobody claims, or a malformed one.
    #[error("Invalid option: `{0}'")]
    InvalidOption(String),
    /// `--mem` is not a number.
    #[error("Invalid memory size: `{0}'")]
    InvalidMem(String),
    /// A device name that is not `[A-Za-z0-9]{{1,67}}`.
    #[error("Invalid device name `{0}' (must be 1 to 67 letters and digits)")]
    InvalidName(String),
    /// A malformed MAC address.
    #[error("Malformed MAC address for `{name}': `{value}'")]
    InvalidMac {
        /// Device name.
        name: String,
        /// The text given.
        value: String,
    },
    /// A block size that is not a power of two in 512..=32768.
    #[error("Invalid block sector size for `{name}': `{value}' (a power of two, 512 to 32768)")]
    InvalidSectorSize {
        /// Device name.
        name: String,
        /// The text given.
        value: String,
    },
    /// An interface name longer than 15 bytes, empty, or not UTF-8.
    #[error("Invalid interface name for `{name}': `{value}'")]
    InvalidIface {
        /// Device name.
        name: String,
        /// The text given.
        value: String,
    },
    /// The same option twice for one device.
    #[error("`{option}{name}' given more than once")]
    Duplicate {
        /// The option prefix (`--block:`).
        option: &'static str,
        /// Device name.
        name: String,
    },
    /// A device name the manifest does not declare with that type.
    #[error("Resource not declared in manifest: `{name}' (type {})", .ty.name())]
    NotInManifest {
        /// Device name.
        name: String,
        /// The type the option attaches.
        ty: DeviceType,
    },
    /// A device the manifest declares but no option attaches.
    #[error("Device `{name}' of type {ty} declared but not attached")]
    NotAttached {
        /// Device name.
        name: String,
        /// Solo5's type name, or the raw value for an unknown type.
        ty: String,
    },
    /// The joined ARGS do not fit the 8192-byte cmdline buffer.
    #[error("Guest command line too long (max={} characters)", CMDLINE_SIZE - 1)]
    CmdlineTooLong,
}

impl CliError {
    /// Whether the tender should print [`usage`] after the message.
    pub fn shows_usage(&self) -> bool {
        matches!(self, CliError::MissingKernel | CliError::InvalidOption(_))
    }
}

/// The usage text. `extra` lists tender-specific options, one per line.
pub fn usage(program: &str, extra: &str) -> String {
    format!(
        "usage: {program} [ CORE OPTIONS ] [ MODULE OPTIONS ] [ -- ] KERNEL [ ARGS ]\n\
         KERNEL is the filename of the unikernel to run.\n\
         ARGS are optional arguments passed to the unikernel.\n\
         Core options:\n\
         \x20 [ --mem=512 ] (guest memory in MB)\n\
         \x20   --help (display this help)\n\
         \x20   --version (display version information)\n\
         {extra}\
         Compiled-in modules: net block\n\
         Compiled-in module options:\n\
         \x20   --net:NAME=IFACE (attach tap at IFACE as network NAME)\n\
         \x20   --net-mac:NAME=HWADDR (set HWADDR for network NAME)\n\
         \x20   --block:NAME=PATH (attach block device/file at PATH as block storage NAME)\n\
         \x20   --block-ro:NAME=PATH (the same, read-only: guest writes fail)\n\
         \x20   --block-sector-size:NAME=SIZE (set sector size for block storage NAME)\n"
    )
}

/// Parses the arguments after the program name.
///
/// `extra_flags` are tender-specific flags without a value (spt's
/// `--x-exec-heap`); given ones are returned in [`Invocation::flags`].
pub fn parse(args: &[OsString], extra_flags: &[&'static str]) -> Result<Command, CliError> {
    // First pass: find KERNEL, stopping at a terminal option.
    let mut kernel_at = None;
    for (i, arg) in args.iter().enumerate() {
        let a = arg.as_bytes();
        if a == b"--" {
            kernel_at = Some(i + 1);
            break;
        }
        if !a.starts_with(b"-") {
            kernel_at = Some(i);
            break;
        }
        if a == b"--help" {
            return Ok(Command::Help);
        }
        if a == b"--version" {
            return Ok(Command::Version);
        }
    }
    let kernel_at = kernel_at
        .filter(|&i| i < args.len())
        .ok_or(CliError::MissingKernel)?;

    // Second pass: every option before KERNEL must be claimed.
    let mut inv = Invocation {
        mem_mib: None,
        nets: Vec::new(),
        net_macs: BTreeMap::new(),
        blocks: Vec::new(),
        sector_sizes: BTreeMap::new(),
        flags: Vec::new(),
        kernel: PathBuf::from(&args[kernel_at]),
        args: args[kernel_at + 1..].to_vec(),
    };
    for arg in &args[..kernel_at] {
        if arg.as_bytes() == b"--" {
            break;
        }
        parse_option(arg, extra_flags, &mut inv)?;
    }
    Ok(Command::Run(inv))
}

fn lossy(s: &OsStr) -> String {
    s.to_string_lossy().into_owned()
}

fn parse_option(
    arg: &OsStr,
    extra_flags: &[&'static str],
    inv: &mut Invocation,
) -> Result<(), CliError> {
    let invalid = || CliError::InvalidOption(lossy(arg));
    let bytes = arg.as_bytes();
    if let Some(flag) = extra_flags.iter().find(|f| f.as_bytes() == bytes) {
        if !inv.flags.contains(flag) {
            inv.flags.push(flag);
        }
        return Ok(());
    }
    if let Some(v) = bytes.strip_prefix(b"--mem=") {
        let v = std::str::from_utf8(v).map_err(|_| invalid())?;
        let n = (!v.is_empty() && v.bytes().all(|c| c.is_ascii_digit()))
            .then(|| v.parse::<u64>().ok())
            .flatten()
            .ok_or_else(|| CliError::InvalidMem(v.to_owned()))?;
        inv.mem_mib = Some(n);
        return Ok(());
    }
    // Module options: --PREFIX:NAME=VALUE.
    const PREFIXES: [&str; 5] = [
        "--net:",
        "--net-mac:",
        "--block:",
        "--block-ro:",
        "--block-sector-size:",
    ];
    let Some(prefix) = PREFIXES.iter().find(|p| bytes.starts_with(p.as_bytes())) else {
        return Err(invalid());
    };
    let rest = &bytes[prefix.len()..];
    let eq = rest.iter().position(|&c| c == b'=').ok_or_else(invalid)?;
    let name = std::str::from_utf8(&rest[..eq])
        .ok()
        .filter(|n| check_name(n))
        .ok_or_else(|| CliError::InvalidName(String::from_utf8_lossy(&rest[..eq]).into_owned()))?
        .to_owned();
    let value = OsStr::from_bytes(&rest[eq + 1..]);
    let dup = |option| CliError::Duplicate {
        option,
        name: name.clone(),
    };
    match *prefix {
        "--net:" => {
            let iface = value
                .to_str()
                .filter(|v| !v.is_empty() && v.len() <= IFACE_MAX)
                .ok_or_else(|| CliError::InvalidIface {
                    name: name.clone(),
                    value: lossy(value),
                })?;
            if inv.nets.iter().any(|(n, _)| *n == name) {
                return Err(dup("--net:"));
            }
            inv.nets.push((name, iface.to_owned()));
        }
        "--net-mac:" => {
            let mac = value
                .to_str()
                .and_then(parse_mac)
                .ok_or_else(|| CliError::InvalidMac {
                    name: name.clone(),
                    value: lossy(value),
                })?;
            if inv.net_macs.insert(name.clone(), mac).is_some() {
                return Err(dup("--net-mac:"));
            }
        }
        "--block:" | "--block-ro:" => {
            if value.is_empty() {
                return Err(invalid());
            }
            if inv.blocks.iter().any(|(n, _, _)| *n == name) {
                return Err(dup("--block:"));
            }
            let read_only = *prefix == "--block-ro:";
            inv.blocks.push((name, PathBuf::from(value), read_only));
        }
        _ => {
            let size = value
                .to_str()
                .filter(|v| v.bytes().all(|c| c.is_ascii_digit()))
                .and_then(|v| v.parse::<u16>().ok())
                .filter(|&n| n >= 512 && n.is_power_of_two())
                .ok_or_else(|| CliError::InvalidSectorSize {
                    name: name.clone(),
                    value: lossy(value),
                })?;
            if inv.sector_sizes.insert(name.clone(), size).is_some() {
                return Err(dup("--block-sector-size:"));
            }
        }
    }
    Ok(())
}

/// Whether `name` is a valid device name: `[A-Za-z0-9]{1,67}`.
pub fn check_name(name: &str) -> bool {
    (1..=MFT_NAME_MAX).contains(&name.len()) && name.bytes().all(|c| c.is_ascii_alphanumeric())
}

/// Parses `xx:xx:xx:xx:xx:xx` (one or two hex digits per byte).
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0; 6];
    let mut parts = s.split(':');
    for b in &mut mac {
        let p = parts.next()?;
        if p.is_empty() || p.len() > 2 || !p.bytes().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

impl Invocation {
    /// The guest command line: ARGS joined with single spaces, at most
    /// 8191 bytes (the NUL is added when it is written to guest memory).
    pub fn guest_cmdline(&self) -> Result<Vec<u8>, CliError> {
        let mut out = Vec::new();
        for (i, a) in self.args.iter().enumerate() {
            if i > 0 {
                out.push(b' ');
            }
            out.extend_from_slice(a.as_bytes());
        }
        if out.len() > CMDLINE_SIZE - 1 {
            return Err(CliError::CmdlineTooLong);
        }
        Ok(out)
    }

    /// Checks the device options against `manifest`: every name must be
    /// declared with the option's type, and every declared device must be
    /// attached. Returns the devices in handle order.
    pub fn devices(&self, manifest: &Manifest) -> Result<Vec<DeviceArg>, CliError> {
        let lookup = |name: &str, ty: DeviceType| {
            manifest
                .lookup(name)
                .filter(|(_, e)| e.device_type() == Some(ty))
                .map(|(h, _)| h)
                .ok_or_else(|| CliError::NotInManifest {
                    name: name.to_owned(),
                    ty,
                })
        };
        let mut out = Vec::new();
        for (name, iface) in &self.nets {
            out.push(DeviceArg::Net {
                handle: lookup(name, DeviceType::Net)?,
                name: name.clone(),
                iface: iface.clone(),
                mac: self.net_macs.get(name).copied(),
            });
        }
        for name in self.net_macs.keys() {
            lookup(name, DeviceType::Net)?;
        }
        for (name, path, read_only) in &self.blocks {
            out.push(DeviceArg::Block {
                handle: lookup(name, DeviceType::Block)?,
                name: name.clone(),
                path: path.clone(),
                sector_size: self
                    .sector_sizes
                    .get(name)
                    .copied()
                    .unwrap_or(DEFAULT_SECTOR_SIZE),
                read_only: *read_only,
            });
        }
        for name in self.sector_sizes.keys() {
            lookup(name, DeviceType::Block)?;
        }
        out.sort_by_key(DeviceArg::handle);
        for (handle, entry) in manifest.devices() {
            if !out.iter().any(|d| d.handle() == handle) {
                return Err(CliError::NotAttached {
                    name: String::from_utf8_lossy(entry.name_bytes()).into_owned(),
                    ty: match entry.device_type() {
                        Some(t) => t.name().to_owned(),
                        None => format!("{:#x}", entry.entry_type),
                    },
                });
            }
        }
        Ok(out)
    }
}

/// The front of a tender's `main`, the same for hvt and spt: parses `args`; `--help` and
/// `--version` are answered here, as are malformed command lines (with the usage when it
/// helps). Returns the invocation to run, or the exit code to end with.
pub fn front(
    args: &[OsString],
    extra_flags: &[&'static str],
    program: &str,
    usage: &str,
    abi: (&str, u32),
) -> Result<Invocation, i32> {
    match parse(args, extra_flags) {
        Ok(Command::Help) => {
            eprint!("{usage}");
            Err(solo5_abi::TENDER_EXIT_HELP)
        }
        Ok(Command::Version) => {
            eprintln!(
                "{program} {} (Solo5 {} ABI version {})",
                env!("CARGO_PKG_VERSION"),
                abi.0,
                abi.1
            );
            Err(solo5_abi::TENDER_EXIT_VERSION)
        }
        Ok(Command::Run(inv)) => Ok(inv),
        Err(e) => {
            eprintln!("{program}: {e}");
            if e.shows_usage() {
                eprint!("{usage}");
            }
            Err(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use solo5_abi::MftDevice;

    fn args(a: &[&str]) -> Vec<OsString> {
        a.iter().map(OsString::from).collect()
    }

    fn run(a: &[&str]) -> Result<Invocation, CliError> {
        match parse(&args(a), &["--x-exec-heap"])? {
            Command::Run(inv) => Ok(inv),
            other => panic!("expected Run, got {other:?}"),
        }
    }

    #[test]
    fn kernel_and_args() {
        let inv = run(&["--mem=8", "k.hvt", "a", "--b", "c d"]).unwrap();
        assert_eq!(inv.mem_mib, Some(8));
        assert_eq!(inv.kernel, PathBuf::from("k.hvt"));
        assert_eq!(inv.guest_cmdline().unwrap(), b"a --b c d");
        let inv = run(&["--", "-k", "x"]).unwrap();
        assert_eq!(inv.kernel, PathBuf::from("-k"));
        assert_eq!(inv.guest_cmdline().unwrap(), b"x");
        assert!(run(&["k"]).unwrap().guest_cmdline().unwrap().is_empty());
    }

    #[test]
    fn help_version_and_missing_kernel() {
        assert_eq!(parse(&args(&["--help"]), &[]), Ok(Command::Help));
        assert_eq!(
            parse(&args(&["--mem=2", "--version", "k"]), &[]),
            Ok(Command::Version)
        );
        // After KERNEL it is a guest argument.
        assert!(matches!(
            parse(&args(&["k", "--help"]), &[]),
            Ok(Command::Run(_))
        ));
        // Even an invalid option before --help: the first pass wins.
        assert_eq!(parse(&args(&["--bogus", "--help"]), &[]), Ok(Command::Help));
        assert_eq!(parse(&args(&[]), &[]), Err(CliError::MissingKernel));
        assert_eq!(
            parse(&args(&["--mem=2"]), &[]),
            Err(CliError::MissingKernel)
        );
        assert_eq!(parse(&args(&["--"]), &[]), Err(CliError::MissingKernel));
        assert!(CliError::MissingKernel.shows_usage());
    }

    #[test]
    fn option_errors() {
        let e = |a: &[&str]| run(a).unwrap_err();
        assert_eq!(
            e(&["--bogus", "k"]),
            CliError::InvalidOption("--bogus".into())
        );
        assert_eq!(e(&["--mem", "k"]), CliError::InvalidOption("--mem".into()));
        assert_eq!(e(&["--mem=x", "k"]), CliError::InvalidMem("x".into()));
        assert_eq!(e(&["--mem=-1", "k"]), CliError::InvalidMem("-1".into()));
        assert_eq!(
            e(&["--block:disk", "k"]),
            CliError::InvalidOption("--block:disk".into())
        );
        assert_eq!(
            e(&["--block:a-b=x", "k"]),
            CliError::InvalidName("a-b".into())
        );
        assert_eq!(e(&["--block:=x", "k"]), CliError::InvalidName("".into()));
        let long = format!("--block:{}=x", "a".repeat(68));
        assert!(matches!(e(&[&long, "k"]), CliError::InvalidName(_)));
        assert!(matches!(
            e(&["--net:n=averyveryverylongname", "k"]),
            CliError::InvalidIface { .. }
        ));
        assert!(matches!(
            e(&["--net-mac:n=00:11:22", "k"]),
            CliError::InvalidMac { .. }
        ));
        assert!(matches!(
            e(&["--block-sector-size:d=1000", "k"]),
            CliError::InvalidSectorSize { .. }
        ));
        assert!(matches!(
            e(&["--block-sector-size:d=65536", "k"]),
            CliError::InvalidSectorSize { .. }
        ));
        assert!(matches!(
            e(&["--block-sector-size:d=256", "k"]),
            CliError::InvalidSectorSize { .. }
        ));
        assert!(matches!(
            e(&["--block:d=a", "--block:d=b", "k"]),
            CliError::Duplicate { .. }
        ));
        assert_eq!(
            run(&["--x-exec-heap", "k"]).unwrap().flags,
            vec!["--x-exec-heap"]
        );
        assert!(parse(&args(&["--x-exec-heap", "k"]), &[]).is_err());
    }

    #[test]
    fn mac_parsing() {
        assert_eq!(parse_mac("02:00:0a:0B:c:ff"), Some([2, 0, 10, 11, 12, 255]));
        assert_eq!(parse_mac("02:00:0a:0b:0c"), None);
        assert_eq!(parse_mac("02:00:0a:0b:0c:0d:0e"), None);
        assert_eq!(parse_mac("02:00:0a:0b:0c:100"), None);
        assert_eq!(parse_mac("02:00:0a:0b:0c:"), None);
    }

    #[test]
    fn cmdline_limit() {
        let exact = "x".repeat(CMDLINE_SIZE - 1);
        assert_eq!(
            run(&["k", &exact]).unwrap().guest_cmdline().unwrap().len(),
            8191
        );
        let half = "x".repeat(4095);
        assert_eq!(
            run(&["k", &half, &half])
                .unwrap()
                .guest_cmdline()
                .unwrap()
                .len(),
            8191
        );
        let over = "x".repeat(CMDLINE_SIZE);
        assert_eq!(
            run(&["k", &over]).unwrap().guest_cmdline(),
            Err(CliError::CmdlineTooLong)
        );
    }

    #[test]
    fn devices_against_manifest() {
        let m = Manifest::from_devices(&[
            MftDevice::net("service"),
            MftDevice::block("storage"),
            MftDevice::block("logs"),
        ])
        .unwrap();
        let inv = run(&[
            "--block-ro:logs=/l",
            "--net:service=tap0",
            "--block-sector-size:storage=4096",
            "--net-mac:service=02:00:00:00:00:01",
            "--block:storage=/s",
            "k",
        ])
        .unwrap();
        let devs = inv.devices(&m).unwrap();
        assert_eq!(
            devs,
            vec![
                DeviceArg::Net {
                    handle: 1,
                    name: "service".into(),
                    iface: "tap0".into(),
                    mac: Some([2, 0, 0, 0, 0, 1])
                },
                DeviceArg::Block {
                    handle: 2,
                    name: "storage".into(),
                    path: "/s".into(),
                    sector_size: 4096,
                    read_only: false
                },
                DeviceArg::Block {
                    handle: 3,
                    name: "logs".into(),
                    path: "/l".into(),
                    sector_size: 512,
                    read_only: true
                },
            ]
        );

        // Missing device.
        let inv = run(&["--net:service=tap0", "--block:storage=/s", "k"]).unwrap();
        assert_eq!(
            inv.devices(&m),
            Err(CliError::NotAttached {
                name: "logs".into(),
                ty: "BLOCK_BASIC".into()
            })
        );
        // Undeclared name, and a declared name with the wrong type.
        let all = [
            "--net:service=tap0",
            "--block:storage=/s",
            "--block:logs=/l",
        ];
        for extra in [
            "--block:other=/o",
            "--block:service=/o",
            "--net-mac:storage=02:00:00:00:00:01",
        ] {
            let mut a = all.to_vec();
            a.push(extra);
            a.push("k");
            assert!(
                matches!(
                    run(&a).unwrap().devices(&m),
                    Err(CliError::NotInManifest { .. })
                ),
                "{extra}"
            );
        }
        let msg = CliError::NotInManifest {
            name: "x".into(),
            ty: DeviceType::Block,
        }
        .to_string();
        assert_eq!(
            msg,
            "Resource not declared in manifest: `x' (type BLOCK_BASIC)"
        );
    }
}
