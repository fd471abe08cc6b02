//! Block devices backed by files attached with `--block:NAME=PATH`.

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};

use compose_devices::block::{Block as _, BlockError};
use compose_unix::{Block, Boot, run};

/// The executor is one per process and tests run on parallel threads: one `run` at a time.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// A temporary disk image, removed on drop.
struct Image(PathBuf);

impl Image {
    fn new(tag: &str, len: u64) -> Image {
        let path = std::env::temp_dir().join(format!(
            "compose-unix-block-{}-{tag}.img",
            std::process::id()
        ));
        std::fs::File::create(&path).unwrap().set_len(len).unwrap();
        Image(path)
    }
    fn boot(&self, name: &str) -> Boot {
        Boot::parse(&[], [format!("--block:{name}={}", self.0.display())]).unwrap()
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn read_write_round_trip() {
    let _turn = serial();
    let image = Image::new("rw", 8 * 512);
    let disk = Block::open(&image.boot("storage"), "storage", 512).unwrap();
    let info = disk.info();
    assert_eq!(
        (info.sector_size, info.sectors, info.read_only),
        (512, 8, false)
    );
    run(async {
        let data: Vec<u8> = (0..1024u32).map(|i| (i % 253) as u8).collect();
        disk.write(3, &data).await.unwrap();
        let mut back = vec![0u8; 1024];
        disk.read(3, &mut back).await.unwrap();
        assert_eq!(back, data);
        // Untouched sectors stay zero.
        let mut first = vec![0xffu8; 512];
        disk.read(0, &mut first).await.unwrap();
        assert!(first.iter().all(|&b| b == 0));
        // Out of the device, or not whole sectors.
        assert_eq!(disk.read(7, &mut back).await, Err(BlockError::OutOfRange));
        assert_eq!(
            disk.write(8, &data[..512]).await,
            Err(BlockError::OutOfRange)
        );
        assert_eq!(
            disk.write(0, &data[..100]).await,
            Err(BlockError::OutOfRange)
        );
        assert_eq!(
            disk.read(u64::MAX, &mut back).await,
            Err(BlockError::OutOfRange)
        );
    });
    // The data is in the file, where sector 3 starts.
    let bytes = std::fs::read(&image.0).unwrap();
    assert_eq!(bytes[3 * 512 + 1], 1);
}

#[test]
fn open_errors_name_the_device() {
    let image = Image::new("odd", 1000);
    let boot = image.boot("storage");
    let err = Block::open(&boot, "other", 512).unwrap_err().to_string();
    assert_eq!(
        err,
        "block device 'other' is not attached: pass --block:other=PATH"
    );
    let err = Block::open(&boot, "storage", 512).unwrap_err().to_string();
    assert!(
        err.contains("size 1000 is not a multiple of the sector size 512"),
        "{err}"
    );
    let err = Block::open(&boot, "storage", 100).unwrap_err().to_string();
    assert!(err.contains("sector size 100"), "{err}");
    let missing = Boot::parse(&[], ["--block:storage=/nonexistent/compose.img"]).unwrap();
    let err = Block::open(&missing, "storage", 512)
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("/nonexistent/compose.img: "), "{err}");
}

#[test]
fn attached_read_only_refuses_writes_even_to_a_writable_file() {
    let _turn = serial();
    let image = Image::new("ro", 4 * 512);
    std::fs::write(&image.0, vec![7u8; 4 * 512]).unwrap();
    let boot = Boot::parse(&[], [format!("--block-ro:disk={}", image.0.display())]).unwrap();
    assert!(boot.block_read_only("disk"));
    let disk = Block::open(&boot, "disk", 512).unwrap();
    assert!(disk.info().read_only);
    run(async {
        let mut buf = vec![0u8; 512];
        disk.read(1, &mut buf).await.unwrap();
        assert_eq!(buf, vec![7u8; 512]);
        assert_eq!(disk.write(1, &[0u8; 512]).await, Err(BlockError::ReadOnly));
    });
    assert_eq!(std::fs::read(&image.0).unwrap(), vec![7u8; 4 * 512]);
    // The same name cannot be attached both ways.
    let twice = Boot::parse(
        &[],
        [
            format!("--block-ro:disk={}", image.0.display()),
            format!("--block:disk={}", image.0.display()),
        ],
    );
    assert!(twice.is_err());
    // And --block: stays read-write.
    let rw = Block::open(&image.boot("disk"), "disk", 512).unwrap();
    assert!(!rw.info().read_only);
}
