//! Packing streams: the packer's memory does not grow with the size of the files.
//!
//! A test binary of its own, so that the peak resident size it measures is this test's.

use std::fs::File;
use std::io::{BufWriter, Read, Write};

use compose_assets::format::Header;
use compose_assets::{PackOptions, pack};

/// Peak resident set size of this process, in bytes (Linux only).
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[test]
fn packing_large_files_uses_bounded_memory() {
    const MIB: u64 = 1 << 20;
    let dir = tempfile::tempdir().unwrap();
    // 256 MiB that does not compress (not even tried: octet-stream), and 8 MiB of text that
    // does, at the default (slowest) levels.
    let mut big = BufWriter::new(File::create(dir.path().join("big.bin")).unwrap());
    let mut x: u64 = 0x9E3779B97F4A7C15;
    let mut chunk = vec![0u8; MIB as usize];
    for b in chunk.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = (x >> 32) as u8;
    }
    for i in 0..256u32 {
        chunk[..4].copy_from_slice(&i.to_le_bytes());
        big.write_all(&chunk).unwrap();
    }
    big.flush().unwrap();
    drop(big);
    let mut text = BufWriter::new(File::create(dir.path().join("book.txt")).unwrap());
    let mut written = 0u64;
    let mut i = 0u64;
    while written < 8 * MIB {
        let line = format!(
            "line {i}: compose packs a directory into one archive, {}\n",
            i * 7919 % 10007
        );
        text.write_all(line.as_bytes()).unwrap();
        written += line.len() as u64;
        i += 1;
    }
    text.flush().unwrap();
    drop(text);

    let before = peak_rss();
    let out = dir.path().join("site.kv");
    let summary = pack(dir.path(), &PackOptions::default(), &out).unwrap();
    let after = peak_rss();
    assert_eq!(summary.files, 2);
    assert_eq!(summary.gzip_variants, 1);
    assert_eq!(summary.zstd_variants, 1);

    let mut head = [0u8; 128];
    File::open(&out).unwrap().read_exact(&mut head).unwrap();
    let header = Header::parse(&head).unwrap();
    assert_eq!(header.entry_count, 2);
    assert_eq!(header.archive_len, std::fs::metadata(&out).unwrap().len());

    if let (Some(before), Some(after)) = (before, after) {
        eprintln!(
            "peak RSS: {} MiB before packing, {} MiB after",
            before / MIB,
            after / MIB
        );
        assert!(
            after < 160 * MIB,
            "packing 264 MiB peaked at {} MiB",
            after / MIB
        );
    }
}
