//! Host devices behind the manifest's entries: block images and TAP interfaces.
//!
//! [`attach`] opens every device the command line names, fills in the
//! tender's manifest copy (`attached`, capacity and block size, MAC and MTU,
//! host fd) and returns the owned host handles. The I/O methods check bounds
//! themselves, so a guest-supplied offset can never reach the host file
//! outside the image.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::cli::DeviceArg;
use crate::manifest::Manifest;

/// A host-side device problem. Every one ends the tender with exit 1.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// The image could not be opened or sized.
    #[error("Could not open block device image `{}': {source}", .path.display())]
    BlockOpen {
        /// Image path.
        path: PathBuf,
        /// The host error.
        source: io::Error,
    },
    /// The image size is zero or not a multiple of the block size.
    #[error(
        "Block device image `{}': size {capacity} is not a non-zero multiple of the block size {block_size}",
        .path.display()
    )]
    BlockCapacity {
        /// Image path.
        path: PathBuf,
        /// Image size in bytes.
        capacity: u64,
        /// Block size.
        block_size: u16,
    },
    /// The TAP interface could not be attached.
    #[error("Could not attach interface: {iface}: {source}")]
    TapAttach {
        /// Interface name.
        iface: String,
        /// The host error.
        source: io::Error,
    },
    /// The device handle is not in the manifest (a caller bug).
    #[error("Device handle {0} is not in the manifest")]
    NoSuchHandle(u64),
}

/// Why a block transfer did not happen.
#[derive(Debug, thiserror::Error)]
pub enum BlockIoError {
    /// `offset >= capacity` or `offset + len > capacity`: the guest gets EINVAL.
    #[error("transfer outside the device")]
    OutOfRange,
    /// A write to a device attached read-only (`--block-ro:`): the guest gets
    /// `SOLO5_R_EUNSPEC`, the tender goes on.
    #[error("the device is attached read-only")]
    ReadOnly,
    /// The host read or write failed or was short: the tender exits.
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// A block device backed by a host file, opened read-write, or read-only for a device
/// attached with `--block-ro:` (then the descriptor itself cannot write, and
/// [`BlockDevice::write_at`] refuses before trying).
///
/// A layered image (`compose_blockfile`: what compose's store keeps of a large block image
/// a rebuild changed) is read through its parts and is always read-only.
#[derive(Debug)]
pub struct BlockDevice {
    file: File,
    /// The image, when `file` is a layered image's descriptor.
    layered: Option<compose_blockfile::BlockFile>,
    path: PathBuf,
    capacity: u64,
    block_size: u16,
    read_only: bool,
}

impl BlockDevice {
    /// Opens `path` O_RDWR; the capacity is the file size, which must be a
    /// non-zero multiple of `block_size`.
    pub fn open(path: &Path, block_size: u16) -> Result<Self, DeviceError> {
        BlockDevice::open_with(path, block_size, false)
    }

    /// Opens `path` O_RDONLY if `read_only`, else O_RDWR; see [`BlockDevice::open`].
    pub fn open_with(path: &Path, block_size: u16, read_only: bool) -> Result<Self, DeviceError> {
        let open_err = |source| DeviceError::BlockOpen {
            path: path.to_owned(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(!read_only)
            .open(path)
            .map_err(open_err)?;
        let layered = if compose_blockfile::is_layered(path).map_err(open_err)? {
            Some(compose_blockfile::BlockFile::open(path).map_err(open_err)?)
        } else {
            None
        };
        let read_only = read_only || layered.is_some();
        // Seek rather than stat: a block special file has st_size 0.
        let capacity = match &layered {
            Some(image) => image.size(),
            None => file.seek(SeekFrom::End(0)).map_err(open_err)?,
        };
        if capacity == 0 || block_size == 0 || capacity % u64::from(block_size) != 0 {
            return Err(DeviceError::BlockCapacity {
                path: path.to_owned(),
                capacity,
                block_size,
            });
        }
        Ok(BlockDevice {
            file,
            layered,
            path: path.to_owned(),
            capacity,
            block_size,
            read_only,
        })
    }

    /// Whether the device was attached read-only (a layered image always is).
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// Whether the image is a layered one, read through its parts.
    pub fn is_layered(&self) -> bool {
        self.layered.is_some()
    }

    /// The fds reads go to: the image's, or a layered image's parts.
    pub fn read_fds(&self) -> Vec<RawFd> {
        match &self.layered {
            Some(image) => image.parts().iter().map(|f| f.as_raw_fd()).collect(),
            None => vec![self.file.as_raw_fd()],
        }
    }

    /// Size in bytes.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Block size in bytes.
    pub fn block_size(&self) -> u16 {
        self.block_size
    }

    /// The image path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether `[offset, offset + len)` lies inside the device, as Solo5
    /// checks it: `offset < capacity && offset + len <= capacity`.
    pub fn in_range(&self, offset: u64, len: u64) -> bool {
        offset < self.capacity
            && offset
                .checked_add(len)
                .is_some_and(|end| end <= self.capacity)
    }

    /// Reads `buf.len()` bytes at `offset` (pread).
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), BlockIoError> {
        if !self.in_range(offset, buf.len() as u64) {
            return Err(BlockIoError::OutOfRange);
        }
        match &self.layered {
            Some(image) => Ok(image.read_exact_at(buf, offset)?),
            None => Ok(self.file.read_exact_at(buf, offset)?),
        }
    }

    /// Writes `data` at `offset` (pwrite); refused on a read-only device.
    pub fn write_at(&self, offset: u64, data: &[u8]) -> Result<(), BlockIoError> {
        if !self.in_range(offset, data.len() as u64) {
            return Err(BlockIoError::OutOfRange);
        }
        if self.read_only {
            return Err(BlockIoError::ReadOnly);
        }
        Ok(self.file.write_all_at(data, offset)?)
    }
}

impl AsFd for BlockDevice {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

impl AsRawFd for BlockDevice {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

/// A network device: a non-blocking TAP fd (IFF_TAP | IFF_NO_PI).
#[derive(Debug)]
pub struct TapDevice {
    fd: OwnedFd,
    iface: String,
    mac: [u8; 6],
    mtu: u16,
}

/// A datagram socket for interface ioctls.
fn ioctl_socket() -> io::Result<OwnedFd> {
    // SAFETY: socket(2) takes no pointers; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// An `ifreq` naming `iface` (at most 15 bytes, checked by the caller).
fn ifreq_for(iface: &str) -> libc::ifreq {
    // SAFETY: `ifreq` is plain old data; all-zero is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr
        .ifr_name
        .iter_mut()
        .zip(iface.bytes().take(libc::IFNAMSIZ - 1))
    {
        *dst = src as libc::c_char;
    }
    ifr
}

/// Runs an interface ioctl that reads or writes `ifr`.
fn ifreq_ioctl(fd: BorrowedFd<'_>, request: libc::Ioctl, ifr: &mut libc::ifreq) -> io::Result<()> {
    // SAFETY: every request passed here (SIOCGIFFLAGS, SIOCGIFMTU, TUNSETIFF)
    // reads and writes at most one `struct ifreq`, and `ifr` is one, valid for
    // the duration of the call.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), request, ifr as *mut libc::ifreq) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl TapDevice {
    /// Attaches to the existing TAP interface `iface`, which must be up.
    /// Without `mac`, a random locally-administered unicast MAC is made up.
    pub fn open(iface: &str, mac: Option<[u8; 6]>) -> Result<Self, DeviceError> {
        let err = |source| DeviceError::TapAttach {
            iface: iface.to_owned(),
            source,
        };
        if iface.is_empty() || iface.len() >= libc::IFNAMSIZ {
            return Err(err(io::Error::from_raw_os_error(libc::EINVAL)));
        }
        // Refuse to create an interface: it must exist and be up already.
        let cname = CString::new(iface).map_err(|_| err(io::ErrorKind::InvalidInput.into()))?;
        // SAFETY: `cname` is a valid NUL-terminated string for the call.
        if unsafe { libc::if_nametoindex(cname.as_ptr()) } == 0 {
            return Err(err(io::Error::from_raw_os_error(libc::ENOENT)));
        }
        let sock = ioctl_socket().map_err(err)?;
        let mut ifr = ifreq_for(iface);
        ifreq_ioctl(sock.as_fd(), libc::SIOCGIFFLAGS as libc::Ioctl, &mut ifr).map_err(err)?;
        // SAFETY: SIOCGIFFLAGS filled in the `ifru_flags` member.
        let flags = i32::from(unsafe { ifr.ifr_ifru.ifru_flags });
        if flags & libc::IFF_UP == 0 {
            return Err(err(io::Error::from_raw_os_error(libc::ENETDOWN)));
        }

        let tun = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open("/dev/net/tun")
            .map_err(err)?;
        let mut ifr = ifreq_for(iface);
        ifr.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short;
        ifreq_ioctl(tun.as_fd(), libc::TUNSETIFF as libc::Ioctl, &mut ifr).map_err(err)?;
        let got: Vec<u8> = ifr
            .ifr_name
            .iter()
            .take_while(|&&c| c != 0)
            .map(|&c| c as u8)
            .collect();
        if got != iface.as_bytes() {
            return Err(err(io::Error::from_raw_os_error(libc::EINVAL)));
        }

        let mut ifr = ifreq_for(iface);
        ifreq_ioctl(sock.as_fd(), libc::SIOCGIFMTU as libc::Ioctl, &mut ifr).map_err(err)?;
        // SAFETY: SIOCGIFMTU filled in the `ifru_mtu` member.
        let mtu = unsafe { ifr.ifr_ifru.ifru_mtu };
        let mtu =
            u16::try_from(mtu).map_err(|_| err(io::Error::from_raw_os_error(libc::ERANGE)))?;
        let mac = match mac {
            Some(m) => m,
            None => random_mac().map_err(err)?,
        };
        Ok(TapDevice {
            fd: tun.into(),
            iface: iface.to_owned(),
            mac,
            mtu,
        })
    }

    /// Wraps an already-open packet fd (tests, or an fd handed down by a
    /// parent). The fd should be non-blocking.
    pub fn from_parts(fd: OwnedFd, iface: &str, mac: [u8; 6], mtu: u16) -> Self {
        TapDevice {
            fd,
            iface: iface.to_owned(),
            mac,
            mtu,
        }
    }

    /// Interface name.
    pub fn iface(&self) -> &str {
        &self.iface
    }

    /// MAC address given to the guest.
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// Interface MTU (Ethernet header excluded).
    pub fn mtu(&self) -> u16 {
        self.mtu
    }

    /// Reads one frame; `Ok(None)` if none is pending.
    pub fn read(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        // SAFETY: `buf` is valid for writes of `buf.len()` bytes and the fd is open.
        let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock => Ok(None),
                _ => Err(e),
            };
        }
        Ok(Some(n as usize))
    }

    /// Writes one frame; returns the bytes written.
    pub fn write(&self, frame: &[u8]) -> io::Result<usize> {
        // SAFETY: `frame` is valid for reads of `frame.len()` bytes and the fd is open.
        let n = unsafe { libc::write(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len()) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }
}

impl AsFd for TapDevice {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for TapDevice {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// A random locally-administered unicast MAC (bit 0 of byte 0 clear, bit 1 set).
pub fn random_mac() -> io::Result<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut filled = 0;
    while filled < mac.len() {
        let rest = &mut mac[filled..];
        // SAFETY: `rest` is valid for writes of `rest.len()` bytes.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        filled += n as usize;
    }
    mac[0] = (mac[0] & !0x01) | 0x02;
    Ok(mac)
}

/// An attached device and its manifest handle.
#[derive(Debug)]
pub enum Attachment {
    /// A NET_BASIC device.
    Net {
        /// Manifest index.
        handle: u64,
        /// The TAP.
        dev: TapDevice,
    },
    /// A BLOCK_BASIC device.
    Block {
        /// Manifest index.
        handle: u64,
        /// The image.
        dev: BlockDevice,
    },
}

impl Attachment {
    /// The manifest index.
    pub fn handle(&self) -> u64 {
        match self {
            Attachment::Net { handle, .. } | Attachment::Block { handle, .. } => *handle,
        }
    }

    /// The host fd.
    pub fn raw_fd(&self) -> RawFd {
        match self {
            Attachment::Net { dev, .. } => dev.as_raw_fd(),
            Attachment::Block { dev, .. } => dev.as_raw_fd(),
        }
    }
}

/// Opens every device in `args` (from [`crate::cli::Invocation::devices`])
/// and records it in `manifest`: `attached = 1`, the `u` union (capacity and
/// block size, or MAC and MTU) and the host fd.
pub fn attach(args: &[DeviceArg], manifest: &mut Manifest) -> Result<Vec<Attachment>, DeviceError> {
    let mut out = Vec::with_capacity(args.len());
    for arg in args {
        let attachment = match arg {
            DeviceArg::Net {
                handle, iface, mac, ..
            } => Attachment::Net {
                handle: *handle,
                dev: TapDevice::open(iface, *mac)?,
            },
            DeviceArg::Block {
                handle,
                path,
                sector_size,
                read_only,
                ..
            } => Attachment::Block {
                handle: *handle,
                dev: BlockDevice::open_with(path, *sector_size, *read_only)?,
            },
        };
        record(&attachment, manifest)?;
        out.push(attachment);
    }
    Ok(out)
}

/// Records one attached device in the manifest copy.
pub fn record(attachment: &Attachment, manifest: &mut Manifest) -> Result<(), DeviceError> {
    let handle = attachment.handle();
    let entry = manifest
        .entry_mut(handle)
        .filter(|_| handle != 0)
        .ok_or(DeviceError::NoSuchHandle(handle))?;
    match attachment {
        Attachment::Net { dev, .. } => entry.set_net_info(dev.mac(), dev.mtu()),
        Attachment::Block { dev, .. } => entry.set_block_info(dev.capacity(), dev.block_size()),
    }
    entry.set_hostfd(attachment.raw_fd());
    entry.attached = 1;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_image(name: &str, size: u64) -> PathBuf {
        let path =
            std::env::temp_dir().join(format!("solo5-tender-{}-{name}.img", std::process::id()));
        let f = File::create(&path).unwrap();
        f.set_len(size).unwrap();
        path
    }

    #[test]
    fn block_device_bounds_and_io() {
        let path = temp_image("io", 4096);
        let dev = BlockDevice::open(&path, 512).unwrap();
        assert_eq!((dev.capacity(), dev.block_size()), (4096, 512));
        dev.write_at(512, &[0xAB; 512]).unwrap();
        let mut buf = [0; 512];
        dev.read_at(512, &mut buf).unwrap();
        assert_eq!(buf, [0xAB; 512]);
        assert!(dev.in_range(3584, 512));
        assert!(!dev.in_range(3585, 512));
        assert!(!dev.in_range(4096, 0));
        assert!(!dev.in_range(u64::MAX, 2));
        assert!(matches!(
            dev.read_at(4096, &mut buf),
            Err(BlockIoError::OutOfRange)
        ));
        assert!(matches!(
            dev.write_at(3600, &buf),
            Err(BlockIoError::OutOfRange)
        ));
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn a_read_only_device_refuses_writes_and_cannot_write() {
        let path = temp_image("ro", 2048);
        std::fs::write(&path, [5u8; 2048]).unwrap();
        let dev = BlockDevice::open_with(&path, 512, true).unwrap();
        assert!(dev.is_read_only());
        let mut buf = [0u8; 512];
        dev.read_at(512, &mut buf).unwrap();
        assert_eq!(buf, [5u8; 512]);
        assert!(matches!(
            dev.write_at(512, &[0; 512]),
            Err(BlockIoError::ReadOnly)
        ));
        // The descriptor itself is read-only: even a direct pwrite (what an spt guest
        // does) fails.
        assert!(dev.file.write_all_at(&[0; 512], 0).is_err());
        assert_eq!(std::fs::read(&path).unwrap(), vec![5u8; 2048]);
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn block_device_capacity_rules() {
        let odd = temp_image("odd", 1000);
        assert!(matches!(
            BlockDevice::open(&odd, 512),
            Err(DeviceError::BlockCapacity { capacity: 1000, .. })
        ));
        let empty = temp_image("empty", 0);
        assert!(matches!(
            BlockDevice::open(&empty, 512),
            Err(DeviceError::BlockCapacity { capacity: 0, .. })
        ));
        let big = temp_image("big", 8192);
        assert!(BlockDevice::open(&big, 4096).is_ok());
        assert!(matches!(
            BlockDevice::open(Path::new("/nonexistent/x.img"), 512),
            Err(DeviceError::BlockOpen { .. })
        ));
        for p in [odd, empty, big] {
            std::fs::remove_file(p).unwrap();
        }
    }

    #[test]
    fn attach_fills_the_manifest() {
        use solo5_abi::MftDevice;
        let path = temp_image("attach", 2048);
        let mut m = Manifest::from_devices(&[MftDevice::block("storage")]).unwrap();
        let args = [DeviceArg::Block {
            handle: 1,
            name: "storage".into(),
            path: path.clone(),
            sector_size: 1024,
            read_only: false,
        }];
        let att = attach(&args, &mut m).unwrap();
        let e = m.entry(1).unwrap();
        assert!(e.is_attached());
        assert_eq!(e.block_info(), (2048, 1024));
        assert_eq!(e.hostfd(), att[0].raw_fd());
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn random_macs_are_local_unicast() {
        for _ in 0..32 {
            let m = random_mac().unwrap();
            assert_eq!(m[0] & 1, 0);
            assert_eq!(m[0] & 2, 2);
        }
    }

    #[test]
    fn tap_in_a_private_netns() {
        use crate::fixtures::netns;
        // The namespace belongs to this thread only.
        std::thread::spawn(|| {
            if let Err(e) = netns::enter_private().and_then(|()| netns::create_tap("tap0", false)) {
                println!("SKIPPED: cannot make a private netns with a TAP: {e}");
                return;
            }
            // Down: refused.
            assert!(matches!(
                TapDevice::open("tap0", None),
                Err(DeviceError::TapAttach { .. })
            ));
            netns::set_up("tap0").unwrap();
            let tap = TapDevice::open("tap0", Some([2, 0, 0, 0, 0, 9])).unwrap();
            assert_eq!(tap.mtu(), 1500);
            assert_eq!(tap.mac(), [2, 0, 0, 0, 0, 9]);
            assert_eq!(tap.iface(), "tap0");
            let random = TapDevice::open("tap0", None);
            // Already attached (not multi-queue): busy.
            assert!(random.is_err());
            // A frame written by the guest side shows up on the interface.
            let sock = netns::packet_socket("tap0", 2000).unwrap();
            let mut frame = [0u8; 60];
            frame[..6].fill(0xff);
            frame[6..12].copy_from_slice(&tap.mac());
            frame[12..14].copy_from_slice(&[0x88, 0xb5]);
            assert_eq!(tap.write(&frame).unwrap(), 60);
            let mut buf = [0u8; 2048];
            loop {
                let n = netns::recv(&sock, &mut buf).unwrap();
                if buf[12..14] == [0x88, 0xb5] {
                    assert_eq!(&buf[..n], &frame);
                    break;
                }
            }
            // And one sent to the interface reaches the TAP fd.
            let mut reply = frame;
            reply[12..14].copy_from_slice(&[0x88, 0xb6]);
            netns::send(&sock, &reply).unwrap();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            loop {
                match tap.read(&mut buf).unwrap() {
                    Some(n) if buf[12..14] == [0x88, 0xb6] => {
                        assert_eq!(n, 60);
                        break;
                    }
                    _ => {
                        assert!(std::time::Instant::now() < deadline, "no frame on the TAP");
                        std::thread::sleep(std::time::Duration::from_millis(10));
                    }
                }
            }
        })
        .join()
        .unwrap();
    }

    #[test]
    fn missing_tap_is_refused() {
        assert!(matches!(
            TapDevice::open("nosuchtap0", None),
            Err(DeviceError::TapAttach { .. })
        ));
        assert!(matches!(
            TapDevice::open("waytoolongname0123", None),
            Err(DeviceError::TapAttach { .. })
        ));
    }
}
