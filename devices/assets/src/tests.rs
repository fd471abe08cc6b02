//! Tests of the runtime backends on archives built by hand and (feature `pack`) by the
//! packer, including corrupt ones.

use std::boxed::Box;
use std::cell::Cell;
use std::string::String;
use std::vec;
use std::vec::Vec;

use compose_devices::block::{Block, BlockError, BlockInfo};
use compose_devices::kv::{Encoding, Kv, KvError};
use sha2::{Digest, Sha256};

use crate::format::{HEADER_LEN, Header, Record, Span};
use crate::{ArchiveError, Embedded, OnBlock};

/// Polls a future that never waits on anything external to completion.
pub(crate) fn run<F: core::future::Future>(f: F) -> F::Output {
    let mut f = core::pin::pin!(f);
    let mut cx = core::task::Context::from_waker(core::task::Waker::noop());
    loop {
        if let core::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
}

/// A block device in memory that counts reads.
pub(crate) struct MemBlock {
    pub data: Vec<u8>,
    pub sector_size: u32,
    pub reads: Cell<u64>,
}

impl MemBlock {
    pub fn new(mut data: Vec<u8>, sector_size: u32) -> &'static MemBlock {
        let ss = sector_size as usize;
        data.resize(data.len().div_ceil(ss).max(1) * ss, 0);
        Box::leak(Box::new(MemBlock {
            data,
            sector_size,
            reads: Cell::new(0),
        }))
    }
}

impl Block for MemBlock {
    fn info(&self) -> BlockInfo {
        let mut info = BlockInfo::new(
            self.sector_size,
            self.data.len() as u64 / self.sector_size as u64,
        );
        info.read_only = true;
        info
    }
    async fn read(&self, sector: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        self.check_range(sector, buf.len())?;
        self.reads.set(self.reads.get() + 1);
        let start = sector as usize * self.sector_size as usize;
        buf.copy_from_slice(&self.data[start..start + buf.len()]);
        Ok(())
    }
    async fn write(&self, _: u64, _: &[u8]) -> Result<(), BlockError> {
        Err(BlockError::ReadOnly)
    }
}

fn leak(bytes: Vec<u8>) -> &'static [u8] {
    Box::leak(bytes.into_boxed_slice())
}

/// Builds an archive by hand (no compression), as the packer lays it out.
pub(crate) fn build(files: &[(&str, &[u8])], align: u32) -> Vec<u8> {
    build_version(files, align, crate::format::VERSION)
}

/// [`build`] in format `version` (1: records without the time; 2: each file's time is
/// 1_700_000_000 plus its position).
pub(crate) fn build_version(files: &[(&str, &[u8])], align: u32, version: u32) -> Vec<u8> {
    let align = align as usize;
    let up = |n: usize| n.div_ceil(align) * align;
    let mut out = vec![0u8; up(HEADER_LEN)];
    let mut strings = Vec::new();
    let mut records = Vec::new();
    for (i, (key, data)) in files.iter().enumerate() {
        let offset = out.len();
        out.extend_from_slice(data);
        out.resize(up(out.len()), 0);
        let key_ref = (strings.len() as u32, key.len() as u32);
        strings.extend_from_slice(key.as_bytes());
        let ty = "text/plain";
        let ty_ref = (strings.len() as u32, ty.len() as u32);
        strings.extend_from_slice(ty.as_bytes());
        let sha: [u8; 32] = Sha256::digest(data).into();
        let data = Span {
            offset: offset as u64,
            len: data.len() as u64,
        };
        let modified = 1_700_000_000 + i as u64;
        let record = Record::encode(key_ref, ty_ref, data, None, None, &sha, modified);
        let len = if version == 1 {
            crate::format::RECORD_LEN_V1
        } else {
            record.len()
        };
        records.extend_from_slice(&record[..len]);
    }
    let index_offset = out.len();
    let mut index = records;
    index.extend_from_slice(&strings);
    out.extend_from_slice(&index);
    out.resize(up(out.len()).div_ceil(512) * 512, 0);
    let header = Header {
        version,
        align: align as u32,
        entry_count: files.len() as u64,
        index_offset: index_offset as u64,
        index_len: index.len() as u64,
        archive_len: out.len() as u64,
        source_date_epoch: 0,
        index_sha256: Sha256::digest(&index).into(),
    };
    out[..HEADER_LEN].copy_from_slice(&header.encode());
    out
}

/// Rewrites the header's index checksum so that a mutated index gets past it.
fn fix_checksum(archive: &mut [u8]) {
    if let Ok(h) = Header::parse(archive) {
        let (start, len) = (h.index_offset as usize, h.index_len as usize);
        if let Some(index) = archive.get(start..start + len) {
            let sha: [u8; 32] = Sha256::digest(index).into();
            archive[56..88].copy_from_slice(&sha);
        }
    }
}

/// Every operation of `kv` on every key it lists, checking nothing but that none panics.
fn exercise<K: Kv>(kv: &K) {
    run(async {
        let keys = kv.list("", None, 1000).await.unwrap_or_default();
        for key in keys
            .iter()
            .map(String::as_str)
            .chain(["", "missing", "\u{0}"])
        {
            if let Ok(Some(entry)) = kv.get(key).await {
                for enc in Encoding::ALL {
                    let mut buf = [0u8; 700];
                    for offset in [0, 1, 511, 512, 4095, u64::MAX] {
                        let _ = kv.read(&entry, enc, offset, &mut buf).await;
                    }
                    let _ = kv.slice(&entry, enc);
                }
            }
        }
    });
}

const FILES: &[(&str, &[u8])] = &[
    ("a.txt", b"alpha"),
    ("docs/guide.html", b"<h1>guide</h1>"),
    ("docs/index.html", b"<h1>docs</h1>"),
    ("empty", b""),
    ("z", b"zed"),
];

#[test]
fn embedded_reads_a_hand_built_archive() {
    let archive = leak(build(FILES, 512));
    let kv = Embedded::new(archive).unwrap();
    assert_eq!(kv.len(), 5);
    assert_eq!(kv.modified(), None);
    run(async {
        for (key, data) in FILES {
            let e = kv.get(key).await.unwrap().unwrap();
            assert_eq!(e.key, *key);
            assert_eq!(e.size, data.len() as u64);
            assert_eq!(e.sha256, <[u8; 32]>::from(Sha256::digest(data)));
            assert_eq!(kv.slice(&e, Encoding::Identity), Some(*data));
            assert_eq!(kv.slice(&e, Encoding::Gzip), None);
            let mut buf = [0u8; 64];
            assert_eq!(
                kv.read(&e, Encoding::Identity, 0, &mut buf).await,
                Ok(data.len())
            );
            assert_eq!(&buf[..data.len()], *data);
            assert_eq!(
                kv.read(&e, Encoding::Identity, 1 << 40, &mut buf).await,
                Ok(0)
            );
            assert_eq!(
                kv.read(&e, Encoding::Zstd, 0, &mut buf).await,
                Err(KvError::NotFound)
            );
        }
        assert_eq!(kv.get("docs").await, Ok(None));
        assert_eq!(kv.get("docs/").await, Ok(None));
        assert_eq!(kv.get("zz").await, Ok(None));
        assert_eq!(
            kv.list("docs/", None, 10).await.unwrap(),
            ["docs/guide.html", "docs/index.html"]
        );
        assert_eq!(
            kv.list("docs/", Some("docs/guide.html"), 10).await.unwrap(),
            ["docs/index.html"]
        );
        assert_eq!(
            kv.list("", Some("b"), 2).await.unwrap(),
            ["docs/guide.html", "docs/index.html"]
        );
        assert_eq!(kv.list("", None, 0).await.unwrap(), Vec::<String>::new());
        assert_eq!(kv.list("q", None, 10).await.unwrap(), Vec::<String>::new());
    });
}

#[test]
fn each_file_has_its_time_and_version_1_archives_still_read() {
    for version in [1, crate::format::VERSION] {
        let bytes = build_version(FILES, 512, version);
        let embedded = Embedded::new(leak(bytes.clone())).unwrap();
        let block = run(OnBlock::open(MemBlock::new(bytes, 512), 64 * 1024)).unwrap();
        run(async {
            for (i, (key, data)) in FILES.iter().enumerate() {
                let want = (version > 1).then_some(1_700_000_000 + i as u64);
                for e in [
                    embedded.get(key).await.unwrap().unwrap(),
                    block.get(key).await.unwrap().unwrap(),
                ] {
                    assert_eq!(e.modified, want, "{key} v{version}");
                    assert_eq!(e.size, data.len() as u64);
                }
            }
        });
    }
    let mut v3 = build(FILES, 512);
    v3[8] = 3;
    assert!(matches!(
        Embedded::new(leak(v3)),
        Err(crate::ArchiveError::UnsupportedVersion(3))
    ));
}

#[test]
fn handles_from_another_store_are_rejected_not_trusted() {
    let small = Embedded::new(leak(build(&FILES[..1], 512))).unwrap();
    let big = Embedded::new(leak(build(FILES, 512))).unwrap();
    run(async {
        let e = big.get("z").await.unwrap().unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(
            small.read(&e, Encoding::Identity, 0, &mut buf).await,
            Err(KvError::NotFound)
        );
        assert_eq!(small.slice(&e, Encoding::Identity), None);
    });
}

#[test]
fn on_block_reads_like_embedded() {
    for (align, sector) in [(512, 512), (1, 512), (4096, 4096), (512, 4096)] {
        let bytes = build(FILES, align);
        let embedded = Embedded::new(leak(bytes.clone())).unwrap();
        let block = MemBlock::new(bytes, sector);
        let kv = run(OnBlock::open(block, 64 * 1024)).unwrap();
        assert_eq!(kv.len(), embedded.len());
        run(async {
            for (key, data) in FILES {
                let e = kv.get(key).await.unwrap().unwrap();
                assert_eq!(Some(e), embedded.get(key).await.unwrap());
                assert_eq!(kv.slice(&e, Encoding::Identity), None);
                for offset in 0..=data.len() as u64 {
                    let mut buf = [0u8; 3];
                    let n = kv
                        .read(&e, Encoding::Identity, offset, &mut buf)
                        .await
                        .unwrap();
                    let rest = &data[offset as usize..];
                    assert_eq!(&buf[..n], &rest[..rest.len().min(3)]);
                }
            }
            assert_eq!(
                kv.list("docs/", None, 10).await,
                embedded.list("docs/", None, 10).await
            );
        });
    }
}

#[test]
fn on_block_cache_is_bounded_and_hit() {
    // 40 files of 5000 bytes: each spans two 4 KiB pages.
    let names: Vec<String> = (0..40).map(|i| std::format!("f{i:02}")).collect();
    let contents: Vec<Vec<u8>> = (0..40u8).map(|i| vec![i; 5000]).collect();
    let files: Vec<(&str, &[u8])> = names
        .iter()
        .map(String::as_str)
        .zip(contents.iter().map(Vec::as_slice))
        .collect();
    let block = MemBlock::new(build(&files, 512), 512);
    let kv = run(OnBlock::open(block, 16 * 4096)).unwrap();
    let stats = kv.cache_stats();
    assert_eq!(
        (stats.capacity, stats.page_size, stats.pages),
        (16, 4096, 0)
    );
    run(async {
        let e = kv.get("f00").await.unwrap().unwrap();
        let mut buf = vec![0u8; 5000];
        assert_eq!(kv.read(&e, Encoding::Identity, 0, &mut buf).await, Ok(5000));
        assert!(buf.iter().all(|&b| b == 0));
        let reads = block.reads.get();
        assert_eq!(kv.read(&e, Encoding::Identity, 0, &mut buf).await, Ok(5000));
        assert_eq!(
            block.reads.get(),
            reads,
            "second read is served from the cache"
        );
        assert!(kv.cache_stats().hits >= 2);
        for (name, data) in &files {
            let e = kv.get(name).await.unwrap().unwrap();
            assert_eq!(kv.read(&e, Encoding::Identity, 0, &mut buf).await, Ok(5000));
            assert_eq!(&buf[..], *data);
            assert!(kv.cache_stats().pages <= 16);
        }
    });
}

#[test]
fn on_block_streams_large_values_past_the_cache() {
    let big: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let block = MemBlock::new(build(&[("big", &big), ("small", b"hi")], 512), 512);
    let kv = run(OnBlock::open(block, 8 * 4096)).unwrap();
    run(async {
        let e = kv.get("big").await.unwrap().unwrap();
        let mut out = Vec::new();
        let mut buf = vec![0u8; 7000];
        loop {
            let n = kv
                .read(&e, Encoding::Identity, out.len() as u64, &mut buf)
                .await
                .unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        assert_eq!(out, big);
        assert_eq!(kv.cache_stats().pages, 0, "large values bypass the cache");
    });
    // Without a cache everything still works.
    let kv = run(OnBlock::open(block, 0)).unwrap();
    run(async {
        let e = kv.get("small").await.unwrap().unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(kv.read(&e, Encoding::Identity, 0, &mut buf).await, Ok(2));
        assert_eq!(&buf[..2], b"hi");
    });
}

#[test]
fn open_rejects_bad_archives_with_errors() {
    let good = build(FILES, 512);
    assert_eq!(Embedded::new(&[]).unwrap_err(), ArchiveError::Truncated);
    assert_eq!(
        Embedded::new(leak(vec![0; 4096])).unwrap_err(),
        ArchiveError::BadMagic
    );
    assert_eq!(
        Embedded::new(leak(good[..good.len() - 1].to_vec())).unwrap_err(),
        ArchiveError::Truncated
    );

    let mut bad = good.clone();
    let h = Header::parse(&bad).unwrap();
    bad[h.index_offset as usize + 20] ^= 1;
    assert_eq!(
        Embedded::new(leak(bad.clone())).unwrap_err(),
        ArchiveError::IndexChecksum
    );
    // A record whose span points into the index, with a valid checksum.
    fix_checksum(&mut bad);
    assert!(matches!(
        Embedded::new(leak(bad)),
        Err(ArchiveError::BadEntry { .. })
    ));

    // Keys out of order.
    let unsorted = build(&[("b", b"1"), ("a", b"2")], 512);
    assert!(matches!(
        Embedded::new(leak(unsorted)),
        Err(ArchiveError::BadEntry {
            reason: "keys are not sorted and unique",
            ..
        })
    ));
    let dup = build(&[("a", b"1"), ("a", b"2")], 512);
    assert!(matches!(
        Embedded::new(leak(dup)),
        Err(ArchiveError::BadEntry { .. })
    ));

    // A block device smaller than the archive, and one with odd sectors.
    let block = MemBlock::new(good[..1024].to_vec(), 512);
    assert_eq!(
        run(OnBlock::open(block, 4096)).err(),
        Some(ArchiveError::Truncated)
    );
    let block = MemBlock::new(good.clone(), 64);
    assert_eq!(
        run(OnBlock::open(block, 4096)).err(),
        Some(ArchiveError::UnsupportedSectorSize(64))
    );
}

mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let mut bytes = bytes;
            if bytes.len() >= 8 && bytes[0] & 1 == 0 {
                bytes[..8].copy_from_slice(&crate::format::MAGIC);
            }
            if let Ok(kv) = Embedded::new(leak(bytes.clone())) {
                exercise(&kv);
            }
            if let Ok(kv) = run(OnBlock::open(MemBlock::new(bytes, 512), 8192)) {
                exercise(&kv);
            }
        }

        #[test]
        fn mutated_archives_never_panic(
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
            truncate in any::<Option<prop::sample::Index>>(),
            fix in any::<bool>(),
        ) {
            let mut bytes = build(FILES, 512);
            for (at, value) in edits {
                let i = at.index(bytes.len());
                bytes[i] = value;
            }
            if let Some(t) = truncate {
                bytes.truncate(t.index(bytes.len()));
            }
            if fix {
                fix_checksum(&mut bytes);
            }
            if let Ok(kv) = Embedded::new(leak(bytes.clone())) {
                exercise(&kv);
            }
            if let Ok(kv) = run(OnBlock::open(MemBlock::new(bytes, 512), 8192)) {
                exercise(&kv);
            }
        }

        /// Mutations confined to the index (checksum fixed up) reach the record checks.
        #[test]
        fn mutated_indexes_never_panic(
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        ) {
            let mut bytes = build(FILES, 512);
            let h = Header::parse(&bytes).unwrap();
            let (start, len) = (h.index_offset as usize, h.index_len as usize);
            for (at, value) in edits {
                bytes[start + at.index(len)] = value;
            }
            fix_checksum(&mut bytes);
            if let Ok(kv) = Embedded::new(leak(bytes.clone())) {
                exercise(&kv);
            }
            if let Ok(kv) = run(OnBlock::open(MemBlock::new(bytes, 512), 8192)) {
                exercise(&kv);
            }
        }
    }
}

#[cfg(feature = "pack")]
mod packed;
