//! The rpi4 SD card image: an MBR with one FAT32 partition (type 0x0C, at LBA 2048 =
//! 1 MiB, which keeps it aligned to erase blocks) holding the files the Pi 4 boots from.
//!
//! The image is a function of its files: the FAT is written by the `fatfs` crate with a
//! fixed time (1980-01-01 00:00, the FAT epoch) on every entry, the files in name order,
//! the volume id and the MBR's disk signature taken from a hash of the contents, and the
//! boot sector's hidden-sectors field (which fatfs leaves 0, not knowing the offset) set
//! to the partition's start in both boot sectors. The partition is at least 64 MiB with
//! 512-byte clusters (over 65525 clusters, so a valid FAT32), grown for large contents.

use sha2::Digest as _;
use std::io::{Cursor, Seek, SeekFrom, Write as _};

/// Sectors before the partition: 1 MiB.
pub const PARTITION_START: u32 = 2048;
const SECTOR: u64 = 512;
const MIN_PARTITION: u64 = 64 << 20;
const MAX_PARTITION: u64 = 2 << 30;

#[derive(Debug)]
struct FatEpoch;

impl fatfs::TimeProvider for FatEpoch {
    fn get_current_date(&self) -> fatfs::Date {
        fatfs::Date {
            year: 1980,
            month: 1,
            day: 1,
        }
    }
    fn get_current_date_time(&self) -> fatfs::DateTime {
        fatfs::DateTime {
            date: self.get_current_date(),
            time: fatfs::Time {
                hour: 0,
                min: 0,
                sec: 0,
                millis: 0,
            },
        }
    }
}

static FAT_EPOCH: FatEpoch = FatEpoch;

/// The card image holding `files` (name, contents) in its boot partition's root.
pub fn image(files: &[(String, Vec<u8>)]) -> Result<Vec<u8>, String> {
    let mut files: Vec<&(String, Vec<u8>)> = files.iter().collect();
    files.sort_by(|a, b| a.0.cmp(&b.0));
    let mut hash = sha2::Sha256::new();
    let mut total = 0u64;
    for (name, bytes) in &files {
        hash.update((name.len() as u64).to_le_bytes());
        hash.update(name.as_bytes());
        hash.update((bytes.len() as u64).to_le_bytes());
        hash.update(bytes);
        total += bytes.len() as u64;
    }
    let digest = hash.finalize();
    let volume_id = u32::from_le_bytes(digest[..4].try_into().expect("4 bytes"));
    let disk_signature = u32::from_le_bytes(digest[4..8].try_into().expect("4 bytes"));
    // Room for the FATs, the directory and cluster slack, in whole MiB.
    let partition = (total + total / 4 + (4 << 20))
        .next_multiple_of(1 << 20)
        .max(MIN_PARTITION);
    if partition > MAX_PARTITION {
        return Err(format!(
            "the boot partition would need {} MiB (at most {} MiB)",
            partition >> 20,
            MAX_PARTITION >> 20
        ));
    }
    let sectors = u32::try_from(partition / SECTOR).map_err(|_| "partition too large")?;
    let fat = fat_partition(&files, partition, volume_id)
        .map_err(|e| format!("cannot write the FAT boot partition: {e}"))?;
    let mut out = vec![0u8; (u64::from(PARTITION_START) * SECTOR) as usize];
    out[440..444].copy_from_slice(&disk_signature.to_le_bytes());
    let entry = &mut out[446..462];
    entry[0] = 0x00; // not "active": the Pi's boot ROM does not look
    entry[1..4].copy_from_slice(&[0xfe, 0xff, 0xff]); // CHS: use the LBA fields
    entry[4] = 0x0c; // W95 FAT32 (LBA)
    entry[5..8].copy_from_slice(&[0xfe, 0xff, 0xff]);
    entry[8..12].copy_from_slice(&PARTITION_START.to_le_bytes());
    entry[12..16].copy_from_slice(&sectors.to_le_bytes());
    out[510] = 0x55;
    out[511] = 0xaa;
    out.extend_from_slice(&fat);
    Ok(out)
}

fn fat_partition(
    files: &[&(String, Vec<u8>)],
    size: u64,
    volume_id: u32,
) -> std::io::Result<Vec<u8>> {
    let mut disk = Cursor::new(vec![0u8; size as usize]);
    fatfs::format_volume(
        &mut disk,
        fatfs::FormatVolumeOptions::new()
            .fat_type(fatfs::FatType::Fat32)
            .bytes_per_cluster(512)
            .total_sectors((size / SECTOR) as u32)
            .volume_id(volume_id)
            .volume_label(*b"RPI4-BOOT  "),
    )?;
    disk.seek(SeekFrom::Start(0))?;
    let free = {
        let fs = fatfs::FileSystem::new(
            &mut disk,
            fatfs::FsOptions::new()
                .time_provider(&FAT_EPOCH)
                .update_accessed_date(false),
        )?;
        if fs.fat_type() != fatfs::FatType::Fat32 {
            return Err(std::io::Error::other("fatfs did not write a FAT32 volume"));
        }
        {
            let root = fs.root_dir();
            for (name, bytes) in files {
                let mut f = root.create_file(name)?;
                f.write_all(bytes)?;
                f.flush()?;
            }
        }
        let free = fs.stats()?.free_clusters();
        fs.unmount()?;
        free
    };
    let mut part = disk.into_inner();
    // The BPB's hidden sectors (offset 0x1C): the partition's start, in the boot sector
    // and in its FAT32 backup (sector BPB_BkBootSec, at offset 0x32).
    let backup = u64::from(u16::from_le_bytes([part[0x32], part[0x33]]));
    let fsinfo = u64::from(u16::from_le_bytes([part[0x30], part[0x31]]));
    for sector in [0, backup] {
        let at = (sector * SECTOR) as usize;
        part[at + 0x1c..at + 0x20].copy_from_slice(&PARTITION_START.to_le_bytes());
        // FSInfo's free-cluster count (fatfs leaves it "unknown", which fsck reports).
        let info = ((sector + fsinfo) * SECTOR) as usize;
        if part[info..info + 4] == *b"RRaA" {
            part[info + 488..info + 492].copy_from_slice(&free.to_le_bytes());
        }
    }
    Ok(part)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_card_is_a_function_of_its_files() {
        let files = |k: &[u8]| {
            vec![
                ("kernel8.img".to_string(), k.to_vec()),
                ("config.txt".to_string(), b"arm_64bit=1\n".to_vec()),
            ]
        };
        let a = image(&files(b"one")).unwrap();
        let mut reversed = files(b"one");
        reversed.reverse();
        assert_eq!(
            a,
            image(&reversed).unwrap(),
            "the order given does not matter"
        );
        assert_ne!(a, image(&files(b"two")).unwrap());
        assert_eq!(a.len() as u64, (1 << 20) + MIN_PARTITION);
        assert_eq!(&a[510..512], &[0x55, 0xaa]);
        assert_eq!(a[446 + 4], 0x0c);
        let part = &a[1 << 20..];
        assert_eq!(&part[0x1c..0x20], &2048u32.to_le_bytes());
        assert_eq!(&part[0x52..0x5a], b"FAT32   ");
    }
}
