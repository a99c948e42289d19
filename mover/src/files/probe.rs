//! What a disk or partition holds: a partition table (GPT, or MBR with its logical
//! partitions), a file system this crate reads (ext2/3/4, FAT, NTFS), or something it only
//! names (XFS, Btrfs, LVM, LUKS, swap, exFAT, ISO 9660).
//!
//! GPT is looked for first (its protective MBR would read as a one-partition MBR), then a
//! file system at the start (a FAT boot sector ends in 55 AA like an MBR), then an MBR.

use std::io;

use chunker::le;

use super::view::RangeReader;

/// Sector size of partition tables here (4 KiB-sector GPT is looked for too).
const SECTOR: u64 = 512;

/// One partition of a table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Part {
    /// 1-based number: the GPT slot, or the MBR slot (logical partitions from 5).
    pub number: u32,
    /// Bytes from the start of the disk.
    pub start: u64,
    /// Bytes.
    pub len: u64,
    /// The partition type, in words ("Linux filesystem", "EFI System", "0x83 Linux").
    pub kind: String,
    /// The GPT partition name, if any.
    pub name: String,
}

/// A kind of file system or other content found by its signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Found {
    Ext,
    Fat,
    Ntfs,
    /// Named, not read here.
    Other(&'static str),
    /// All zeros where the signatures would be.
    Empty,
    Unknown,
}

/// The layout of a whole disk.
#[derive(Debug)]
pub(crate) enum Layout {
    /// A partition table and its partitions (possibly none).
    Table {
        scheme: &'static str,
        parts: Vec<Part>,
    },
    /// No partition table: the disk is (or is not) one file system.
    Whole(Found),
}

/// The layout of the disk behind `r`.
pub(crate) fn layout(r: &mut RangeReader) -> io::Result<Layout> {
    for sector in [SECTOR, 4096] {
        if let Some(parts) = gpt(r, sector)? {
            return Ok(Layout::Table {
                scheme: "gpt",
                parts,
            });
        }
    }
    let found = file_system(r)?;
    if !matches!(found, Found::Empty | Found::Unknown) {
        return Ok(Layout::Whole(found));
    }
    if let Some(parts) = mbr(r)? {
        return Ok(Layout::Table {
            scheme: "mbr",
            parts,
        });
    }
    Ok(Layout::Whole(found))
}

/// The file system (or other content) starting at offset 0 of `r`.
pub(crate) fn file_system(r: &mut RangeReader) -> io::Result<Found> {
    let mut head = vec![0u8; (0x10048u64).min(r.len()) as usize];
    r.read_exact_at(0, &mut head)?;
    let at = |off: usize, magic: &[u8]| head.get(off..off + magic.len()) == Some(magic);
    let found = if at(1080, &[0x53, 0xEF]) {
        Found::Ext
    } else if at(3, b"NTFS    ") {
        Found::Ntfs
    } else if at(3, b"EXFAT   ") {
        Found::Other("exFAT")
    } else if is_fat(&head) {
        Found::Fat
    } else if at(0, b"XFSB") {
        Found::Other("XFS")
    } else if at(0x10040, b"_BHRfS_M") {
        Found::Other("Btrfs")
    } else if (0..4).any(|s| at(s * 512, b"LABELONE")) {
        Found::Other("LVM physical volume")
    } else if at(0, b"LUKS\xba\xbe") {
        Found::Other("LUKS encrypted volume")
    } else if at(4086, b"SWAPSPACE2") || at(4086, b"SWAP-SPACE") {
        Found::Other("Linux swap")
    } else if at(0x8001, b"CD001") {
        Found::Other("ISO 9660")
    } else if head.iter().all(|&b| b == 0) {
        Found::Empty
    } else {
        Found::Unknown
    };
    Ok(found)
}

/// A FAT boot sector: a jump, a sane BIOS parameter block and the 55 AA signature.
fn is_fat(b: &[u8]) -> bool {
    if b.len() < 512 || b[510..512] != [0x55, 0xAA] || !matches!(b[0], 0xEB | 0xE9) {
        return false;
    }
    let bytes_per_sector = le::u16_at(b, 11);
    let per_cluster = b[13];
    let reserved = le::u16_at(b, 14);
    matches!(bytes_per_sector, 512 | 1024 | 2048 | 4096)
        && per_cluster.is_power_of_two()
        && reserved > 0
        && (1..=4).contains(&b[16])
}

fn le32(b: &[u8], off: usize) -> u32 {
    le::u32_at(b, off)
}

fn le64(b: &[u8], off: usize) -> u64 {
    le::u64_at(b, off)
}

/// The partitions of a GPT whose header is at LBA 1 with `sector`-byte sectors.
fn gpt(r: &mut RangeReader, sector: u64) -> io::Result<Option<Vec<Part>>> {
    if r.len() < sector * 3 {
        return Ok(None);
    }
    let mut h = vec![0u8; 92];
    r.read_exact_at(sector, &mut h)?;
    if &h[..8] != b"EFI PART" {
        return Ok(None);
    }
    let (table, count, size) = (le64(&h, 72), le32(&h, 80), le32(&h, 84));
    if !(128..=4096).contains(&size) || count > 4096 {
        return Err(damaged(
            "the GPT header has an impossible partition entry size or count",
        ));
    }
    let mut entries = vec![0u8; count as usize * size as usize];
    r.read_exact_at(table.saturating_mul(sector), &mut entries)
        .map_err(|_| damaged("the GPT partition entries lie past the end of the disk"))?;
    let mut parts = Vec::new();
    for (i, e) in entries.chunks_exact(size as usize).enumerate() {
        let kind: [u8; 16] = e[..16].try_into().expect("16 bytes");
        if kind == [0; 16] {
            continue;
        }
        let (first, last) = (le64(e, 32), le64(e, 40));
        let name: Vec<u16> = e[56..128]
            .chunks_exact(2)
            .map(|c| le::u16_at(c, 0))
            .take_while(|&c| c != 0)
            .collect();
        parts.push(Part {
            number: i as u32 + 1,
            start: first * sector,
            len: (last + 1).saturating_sub(first) * sector,
            kind: gpt_kind(&guid(&kind)),
            name: String::from_utf16_lossy(&name),
        });
    }
    Ok(Some(parts))
}

/// A GUID in its usual text form (the first three fields are little-endian).
fn guid(b: &[u8; 16]) -> String {
    format!(
        "{:08X}-{:04X}-{:04X}-{:02X}{:02X}-{}",
        le32(b, 0),
        le::u16_at(b, 4),
        le::u16_at(b, 6),
        b[8],
        b[9],
        b[10..]
            .iter()
            .map(|x| format!("{x:02X}"))
            .collect::<String>()
    )
}

fn gpt_kind(guid: &str) -> String {
    let name = match guid {
        "0FC63DAF-8483-4772-8E79-3D69D8477DE4" => "Linux filesystem",
        "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709" => "Linux root (x86-64)",
        "933AC7E1-2EB4-4F13-B844-0E14E2AEF915" => "Linux home",
        "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F" => "Linux swap",
        "E6D6D379-F507-44C2-A23C-238F2A3DF928" => "Linux LVM",
        "A19D880F-05FC-4D3B-A006-743F0F84911E" => "Linux RAID",
        "C12A7328-F81F-11D2-BA4B-00A0C93EC93B" => "EFI System",
        "21686148-6449-6E6F-744E-656564454649" => "BIOS boot",
        "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7" => "Microsoft basic data",
        "E3C9E316-0B5C-4DB8-817D-F92DF00215AE" => "Microsoft reserved",
        "DE94BBA4-06D1-4D40-A16A-BFD50179D6AC" => "Windows recovery",
        _ => return guid.to_string(),
    };
    name.to_string()
}

fn mbr_kind(t: u8) -> String {
    let name = match t {
        0x01 => "FAT12",
        0x04 | 0x06 | 0x0e => "FAT16",
        0x0b | 0x0c => "FAT32",
        0x07 => "NTFS/exFAT",
        0x05 | 0x0f | 0x85 => "Extended",
        0x82 => "Linux swap",
        0x83 => "Linux",
        0x8e => "Linux LVM",
        0xef => "EFI System",
        0xfd => "Linux RAID",
        _ => "unknown",
    };
    format!("0x{t:02x} {name}")
}

/// The partitions of an MBR (primary ones as p1–p4, logical ones from p5), or `None` when
/// sector 0 is no MBR.
fn mbr(r: &mut RangeReader) -> io::Result<Option<Vec<Part>>> {
    if r.len() < SECTOR {
        return Ok(None);
    }
    let mut s = [0u8; 512];
    r.read_exact_at(0, &mut s)?;
    if s[510..] != [0x55, 0xAA] {
        return Ok(None);
    }
    let slots: Vec<(u8, u64, u64)> = (0..4)
        .map(|i| {
            let e = &s[446 + i * 16..462 + i * 16];
            (e[4], u64::from(le32(e, 8)), u64::from(le32(e, 12)))
        })
        .collect();
    let plausible = slots.iter().any(|&(t, _, n)| t != 0 && n > 0)
        && slots
            .iter()
            .all(|&(t, first, n)| t == 0 || (first + n) * SECTOR <= r.len() && first > 0);
    if !plausible {
        return Ok(None);
    }
    let mut parts = Vec::new();
    let mut extended = None;
    for (i, &(t, first, n)) in slots.iter().enumerate() {
        if t == 0 || n == 0 {
            continue;
        }
        if matches!(t, 0x05 | 0x0f | 0x85) {
            extended = Some(first);
        }
        parts.push(Part {
            number: i as u32 + 1,
            start: first * SECTOR,
            len: n * SECTOR,
            kind: mbr_kind(t),
            name: String::new(),
        });
    }
    if let Some(base) = extended {
        logical(r, base, &mut parts)?;
    }
    Ok(Some(parts))
}

/// Follows the chain of extended boot records from `base` (in sectors), adding p5, p6, …
fn logical(r: &mut RangeReader, base: u64, parts: &mut Vec<Part>) -> io::Result<()> {
    let mut ebr = base;
    for number in 5..256 {
        let mut s = [0u8; 512];
        if r.read_exact_at(ebr * SECTOR, &mut s).is_err() || s[510..] != [0x55, 0xAA] {
            return Err(damaged(
                "an extended boot record of the MBR is missing or damaged",
            ));
        }
        let (this, next) = (&s[446..462], &s[462..478]);
        if this[4] != 0 && le32(this, 12) > 0 {
            parts.push(Part {
                number,
                start: (ebr + u64::from(le32(this, 8))) * SECTOR,
                len: u64::from(le32(this, 12)) * SECTOR,
                kind: mbr_kind(this[4]),
                name: String::new(),
            });
        }
        if next[4] == 0 || le32(next, 8) == 0 {
            return Ok(());
        }
        ebr = base + u64::from(le32(next, 8));
    }
    Err(damaged(
        "the MBR's chain of logical partitions does not end",
    ))
}

fn damaged(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("damaged partition table: {what}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guids_print_mixed_endian() {
        let b = [
            0xAF, 0x3D, 0xC6, 0x0F, 0x83, 0x84, 0x72, 0x47, 0x8E, 0x79, 0x3D, 0x69, 0xD8, 0x47,
            0x7D, 0xE4,
        ];
        assert_eq!(gpt_kind(&guid(&b)), "Linux filesystem");
    }

    #[test]
    fn fat_boot_sectors_are_told_from_mbrs() {
        let mut b = vec![0u8; 512];
        b[510] = 0x55;
        b[511] = 0xAA;
        assert!(!is_fat(&b), "an MBR is no FAT boot sector");
        b[0] = 0xEB;
        b[11..13].copy_from_slice(&512u16.to_le_bytes());
        b[13] = 4;
        b[14] = 1;
        b[16] = 2;
        assert!(is_fat(&b));
    }
}
