//! Test fixtures (feature `fixtures`): a tiny ELF writer, and what the tenders'
//! integration tests share ([`guest`], [`TempDir`], [`run`], [`netns`]).
//!
//! It writes exactly the header fields and program headers the tenders look
//! at, with every field under the test's control, so tests can build both
//! valid guests and each kind of broken executable. No section headers are
//! written: the tenders never read them.
//!
//! ```
//! use solo5_abi::{AbiTarget, MftDevice};
//! use solo5_tender::elf::{PF_R, PF_X};
//! use solo5_tender::fixtures::ElfBuilder;
//!
//! let code = [0xf4]; // hlt
//! let elf = ElfBuilder::new(0x100000)
//!     .segment(0x100000, PF_R | PF_X, &code, code.len() as u64)
//!     .abi_note(AbiTarget::Hvt)
//!     .manifest(&[MftDevice::block("storage")])
//!     .build();
//! let k = solo5_tender::load_kernel(&elf, AbiTarget::Hvt, 8 << 20).unwrap();
//! assert_eq!(k.plan.entry, 0x100000);
//! ```

use solo5_abi::{AbiTarget, MftDevice, abi1_note_bytes, encode_mft1_note, mft1_note_size};

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::elf::{EHDR_SIZE, ET_EXEC, HOST_MACHINE, PF_R, PF_X, PHDR_SIZE, PT_LOAD, PT_NOTE};

/// One program header and the file bytes it points at.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Phdr {
    /// `p_type`.
    pub p_type: u32,
    /// `p_flags`.
    pub p_flags: u32,
    /// `p_offset`; `None` = wherever [`Phdr::data`] is placed.
    pub p_offset: Option<u64>,
    /// `p_vaddr` (also written to `p_paddr`).
    pub p_vaddr: u64,
    /// `p_filesz`; `None` = `data.len()`.
    pub p_filesz: Option<u64>,
    /// `p_memsz`.
    pub p_memsz: u64,
    /// `p_align`.
    pub p_align: u64,
    /// File bytes, appended after the program header table.
    pub data: Vec<u8>,
}

/// Builds an ELF64 little-endian executable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ElfBuilder {
    /// `e_type` (default ET_EXEC).
    pub e_type: u16,
    /// `e_machine` (default the host's).
    pub e_machine: u16,
    /// `e_entry`.
    pub entry: u64,
    /// Program headers in file order.
    pub phdrs: Vec<Phdr>,
}

impl ElfBuilder {
    /// An ET_EXEC for the host machine with no program headers yet.
    pub fn new(entry: u64) -> Self {
        ElfBuilder {
            e_type: ET_EXEC,
            e_machine: HOST_MACHINE,
            entry,
            phdrs: Vec::new(),
        }
    }

    /// Adds any program header.
    pub fn phdr(mut self, phdr: Phdr) -> Self {
        self.phdrs.push(phdr);
        self
    }

    /// Adds a PT_LOAD of `data` at `vaddr` with `p_align` 0x1000.
    pub fn segment(self, vaddr: u64, flags: u32, data: &[u8], memsz: u64) -> Self {
        self.phdr(Phdr {
            p_type: PT_LOAD,
            p_flags: flags,
            p_vaddr: vaddr,
            p_memsz: memsz,
            p_align: 0x1000,
            data: data.to_vec(),
            ..Phdr::default()
        })
    }

    /// Adds a PT_NOTE holding `bytes`.
    pub fn note(self, bytes: &[u8]) -> Self {
        self.phdr(Phdr {
            p_type: PT_NOTE,
            p_flags: 4,
            p_align: 8,
            data: bytes.to_vec(),
            ..Phdr::default()
        })
    }

    /// Adds the ABI1 note for `target` in its own PT_NOTE.
    pub fn abi_note(self, target: AbiTarget) -> Self {
        self.note(&abi1_note_bytes(target))
    }

    /// Adds the MFT1 note declaring `devices` in its own PT_NOTE.
    pub fn manifest(self, devices: &[MftDevice<'_>]) -> Self {
        self.note(&mft1_note_bytes(devices))
    }

    /// The file bytes.
    pub fn build(&self) -> Vec<u8> {
        let table = EHDR_SIZE + PHDR_SIZE * self.phdrs.len();
        let mut out = vec![0u8; table];
        // e_ident: magic, ELFCLASS64, ELFDATA2LSB, EV_CURRENT.
        out[..7].copy_from_slice(b"\x7fELF\x02\x01\x01");
        out[16..18].copy_from_slice(&self.e_type.to_le_bytes());
        out[18..20].copy_from_slice(&self.e_machine.to_le_bytes());
        out[20..24].copy_from_slice(&1u32.to_le_bytes());
        out[24..32].copy_from_slice(&self.entry.to_le_bytes());
        out[32..40].copy_from_slice(&(EHDR_SIZE as u64).to_le_bytes());
        out[52..54].copy_from_slice(&(EHDR_SIZE as u16).to_le_bytes());
        out[54..56].copy_from_slice(&(PHDR_SIZE as u16).to_le_bytes());
        out[56..58].copy_from_slice(&(self.phdrs.len() as u16).to_le_bytes());
        for (i, ph) in self.phdrs.iter().enumerate() {
            out.resize(out.len().next_multiple_of(16), 0);
            let at = out.len() as u64;
            out.extend_from_slice(&ph.data);
            let mut raw = [0u8; PHDR_SIZE];
            raw[0..4].copy_from_slice(&ph.p_type.to_le_bytes());
            raw[4..8].copy_from_slice(&ph.p_flags.to_le_bytes());
            raw[8..16].copy_from_slice(&ph.p_offset.unwrap_or(at).to_le_bytes());
            raw[16..24].copy_from_slice(&ph.p_vaddr.to_le_bytes());
            raw[24..32].copy_from_slice(&ph.p_vaddr.to_le_bytes());
            let filesz = ph.p_filesz.unwrap_or(ph.data.len() as u64);
            raw[32..40].copy_from_slice(&filesz.to_le_bytes());
            raw[40..48].copy_from_slice(&ph.p_memsz.to_le_bytes());
            raw[48..56].copy_from_slice(&ph.p_align.to_le_bytes());
            let p = EHDR_SIZE + i * PHDR_SIZE;
            out[p..p + PHDR_SIZE].copy_from_slice(&raw);
        }
        out
    }
}

/// The MFT1 note bytes declaring `devices` (panics on an invalid list).
pub fn mft1_note_bytes(devices: &[MftDevice<'_>]) -> Vec<u8> {
    let mut buf = vec![0; mft1_note_size(devices.len())];
    encode_mft1_note(devices, &mut buf).expect("valid device list");
    buf
}

/// A guest for `target` whose only segment is `code`, at 0x100000 (its entry), with a
/// manifest of `devices`.
pub fn guest(target: AbiTarget, code: &[u8], devices: &[MftDevice<'_>]) -> Vec<u8> {
    ElfBuilder::new(0x10_0000)
        .segment(0x10_0000, PF_R | PF_X, code, code.len() as u64)
        .abi_note(target)
        .manifest(devices)
        .build()
}

/// A private temporary directory, removed on drop.
#[derive(Debug)]
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// `$TMPDIR/compose-tender-test-PID-NAME`, empty.
    pub fn new(name: &str) -> Self {
        let p =
            std::env::temp_dir().join(format!("compose-tender-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    /// Writes `bytes` to the file `name` in the directory; returns its path.
    pub fn file(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What a tender run produced.
#[derive(Debug)]
pub struct Run {
    /// The exit status's code (`None` if a signal ended the tender).
    pub code: Option<i32>,
    /// The exit status.
    pub status: ExitStatus,
    /// Standard output, lossily decoded.
    pub stdout: String,
    /// Standard error, lossily decoded.
    pub stderr: String,
    /// From the spawn to the exit.
    pub elapsed: Duration,
}

/// Runs `tender` (with no standard input) to completion, killing it after `limit`;
/// `before_wait` gets its process id once it is running.
pub fn run(mut tender: Command, limit: Duration, before_wait: impl FnOnce(u32)) -> Run {
    let start = Instant::now();
    let mut child = tender
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {tender:?}: {e}"));
    before_wait(child.id());
    let deadline = start + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let out = child.wait_with_output().unwrap();
    Run {
        code: out.status.code(),
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        elapsed: start.elapsed(),
    }
}

/// A path as `&str`, for argument lists (test paths are UTF-8).
pub fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Polls `check` every few milliseconds until it returns `Some`, and returns that; panics
/// naming `what` if `limit` passes first. Tests wait for conditions with this instead of
/// sleeping for a while and hoping.
pub fn wait_for<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Whether process `pid` has a handler installed for signal `sig` (the `SigCgt` mask of
/// `/proc/PID/status`); false if the process is gone.
pub fn catches_signal(pid: u32, sig: i32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .is_some_and(|mask| (1..=64).contains(&sig) && mask & (1 << (sig - 1)) != 0)
}

/// The system call process `pid` is blocked in (the first field of `/proc/PID/syscall`),
/// or `None` if it is running, gone, or the file cannot be read.
pub fn blocked_in_syscall(pid: u32) -> Option<i64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/syscall")).ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// Private network namespaces with TAP interfaces, for NET tests.
///
/// Namespaces belong to threads: [`netns::enter_private`] moves only the
/// calling thread (and the processes it spawns afterwards) into a fresh
/// network namespace, which disappears with its last user, taking its TAPs
/// along. It needs CAP_SYS_ADMIN; callers should skip the test on failure.
pub mod netns {
    use std::fs::OpenOptions;
    use std::io;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::path::Path;
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    fn check(rc: libc::c_int) -> io::Result<()> {
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    fn ifreq(name: &str) -> libc::ifreq {
        // SAFETY: `ifreq` is plain old data; all-zero is valid.
        let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
        for (d, s) in ifr.ifr_name.iter_mut().zip(name.bytes().take(15)) {
            *d = s as libc::c_char;
        }
        ifr
    }

    /// Moves the calling thread into a new, empty network namespace.
    pub fn enter_private() -> io::Result<()> {
        // SAFETY: unshare(2) takes no pointers.
        check(unsafe { libc::unshare(libc::CLONE_NEWNET) })
    }

    /// Creates a persistent TAP `name` (IFF_TAP | IFF_NO_PI) in the current
    /// namespace, optionally bringing it up.
    pub fn create_tap(name: &str, up: bool) -> io::Result<()> {
        let tun = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/net/tun")?;
        let mut ifr = ifreq(name);
        ifr.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short;
        // SAFETY: TUNSETIFF reads and writes one `ifreq`, valid for the call.
        check(unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETIFF, &mut ifr) })?;
        // SAFETY: TUNSETPERSIST takes an integer argument.
        check(unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETPERSIST, 1) })?;
        drop(tun);
        if up {
            set_up(name)?;
        }
        Ok(())
    }

    /// Sets IFF_UP on interface `name`.
    pub fn set_up(name: &str) -> io::Result<()> {
        // SAFETY: socket(2) takes no pointers; the result is checked.
        let s = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        check(s)?;
        // SAFETY: `s` is a fresh fd we own.
        let sock = unsafe { OwnedFd::from_raw_fd(s) };
        let mut ifr = ifreq(name);
        // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write one `ifreq`.
        check(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr) })?;
        // SAFETY: SIOCGIFFLAGS filled in `ifru_flags`.
        unsafe { ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
        // SAFETY: as above.
        check(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &mut ifr) })
    }

    /// An AF_PACKET socket bound to `name` that sees every frame on it, with
    /// a receive timeout of `timeout_ms`.
    pub fn packet_socket(name: &str, timeout_ms: u32) -> io::Result<OwnedFd> {
        let proto = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: socket(2) takes no pointers; the result is checked.
        let s = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                proto.into(),
            )
        };
        check(s)?;
        // SAFETY: `s` is a fresh fd we own.
        let sock = unsafe { OwnedFd::from_raw_fd(s) };
        let cname = std::ffi::CString::new(name).map_err(|_| io::ErrorKind::InvalidInput)?;
        // SAFETY: `cname` is a valid C string.
        let index = unsafe { libc::if_nametoindex(cname.as_ptr()) };
        if index == 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `sockaddr_ll` is plain old data; all-zero is valid.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto;
        sll.sll_ifindex = index as i32;
        // SAFETY: `sll` is a valid sockaddr_ll of the given length.
        check(unsafe {
            libc::bind(
                sock.as_raw_fd(),
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        })?;
        let tv = libc::timeval {
            tv_sec: (timeout_ms / 1000).into(),
            tv_usec: ((timeout_ms % 1000) * 1000).into(),
        };
        // SAFETY: `tv` is a valid timeval of the given length.
        check(unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as u32,
            )
        })?;
        Ok(sock)
    }

    /// Receives one frame from a packet socket.
    pub fn recv(sock: &OwnedFd, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: `buf` is valid for writes of `buf.len()` bytes.
        let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    /// NET end to end, the same for every tender: on a thread of its own, in a private
    /// namespace with a tap `tap0` that is up, runs `tender --mem=8 --net:service=tap0
    /// --net-mac:service=02:00:00:00:00:01 KERNEL`, whose guest must send one frame of
    /// EtherType 0x88b5 from that MAC with `greeting` (11 bytes) as its payload, then wait
    /// for the reply: a 64-byte frame of EtherType 0x88b6, whose length the guest exits
    /// with. Prints SKIPPED (and passes) if the namespace cannot be made.
    pub fn frame_round_trip(mut tender: Command, kernel: &Path, greeting: &'static [u8; 11]) {
        let kernel = kernel.to_path_buf();
        std::thread::spawn(move || {
            if let Err(e) = enter_private().and_then(|()| create_tap("tap0", true)) {
                println!("SKIPPED: cannot make a private netns with a TAP: {e}");
                eprintln!("SKIPPED: cannot make a private netns with a TAP: {e}");
                return;
            }
            let sock = packet_socket("tap0", 200).unwrap();
            let mut child = tender
                .args([
                    "--mem=8",
                    "--net:service=tap0",
                    "--net-mac:service=02:00:00:00:00:01",
                ])
                .arg(&kernel)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();

            // Wait for the guest's frame.
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut buf = [0u8; 2048];
            let seen = loop {
                assert!(Instant::now() < deadline, "no frame from the guest");
                if let Ok(Some(_)) = child.try_wait() {
                    break None;
                }
                match recv(&sock, &mut buf) {
                    Ok(n) if buf[12..14] == [0x88, 0xb5] => break Some(n),
                    _ => continue,
                }
            };
            let Some(n) = seen else {
                let out = child.wait_with_output().unwrap();
                panic!("tender exited early: {out:?}");
            };
            assert_eq!(n, 60);
            assert_eq!(&buf[6..12], &[2, 0, 0, 0, 0, 1]);
            assert_eq!(&buf[14..25], greeting);

            // Reply with a 64-byte frame; the guest exits with its length.
            let mut reply = [0u8; 64];
            reply[..6].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
            reply[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
            reply[12..14].copy_from_slice(&[0x88, 0xb6]);
            send(&sock, &reply).unwrap();

            let limit = Instant::now() + Duration::from_secs(60);
            while child.try_wait().unwrap().is_none() {
                if Instant::now() > limit {
                    let _ = child.kill();
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let out = child.wait_with_output().unwrap();
            assert_eq!(out.status.code(), Some(64), "{out:?}");
        })
        .join()
        .unwrap();
    }

    /// Sends one frame out of the interface a packet socket is bound to.
    pub fn send(sock: &OwnedFd, frame: &[u8]) -> io::Result<usize> {
        // SAFETY: `frame` is valid for reads of `frame.len()` bytes.
        let n = unsafe { libc::send(sock.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }
}
