//! Change maps from outside: VMware-style `DiskChangeInfo` lists of changed areas.
//!
//! A change map is a hint (see `docs/FORMAT.md`, "Incrementals"): what it calls changed is
//! read; what it does not cover at all is read too, because nothing is known about it.

use serde::Deserialize;

use crate::{Error, Result};

/// One changed area, bytes.
#[derive(Deserialize)]
struct Area {
    start: u64,
    length: u64,
}

/// The `DiskChangeInfo` document that a VADP-style front end hands over (byte units):
/// `{"startOffset": …, "length": …, "changedArea": [{"start": …, "length": …}, …]}`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DiskChangeInfo {
    start_offset: u64,
    length: u64,
    #[serde(default)]
    changed_area: Vec<Area>,
}

/// Parses a `DiskChangeInfo` JSON document for a disk of `disk_len` bytes and returns the
/// byte ranges (offset, length) to read, sorted and merged: the changed areas, plus whatever
/// lies outside the queried range `startOffset..startOffset + length` (unknown, so read).
///
/// Fails with one line naming `what` when the document is not such JSON or an area lies
/// outside the queried range or the disk.
pub fn parse_disk_change_info(text: &str, disk_len: u64, what: &str) -> Result<Vec<(u64, u64)>> {
    let bad = |detail: String| {
        Error::Incremental(format!(
            "changed-extent list {what}: {detail}; give a DiskChangeInfo JSON document \
             ({{\"startOffset\":…,\"length\":…,\"changedArea\":[{{\"start\":…,\"length\":…}}]}})"
        ))
    };
    let info: DiskChangeInfo =
        serde_json::from_str(text).map_err(|e| bad(format!("not valid JSON ({e})")))?;
    let query_end = info
        .start_offset
        .checked_add(info.length)
        .ok_or_else(|| bad("startOffset + length overflows".into()))?;
    if query_end > disk_len {
        return Err(bad(format!(
            "the queried range ends at {query_end}, past the disk's {disk_len} bytes"
        )));
    }
    let mut ranges = Vec::with_capacity(info.changed_area.len() + 2);
    for a in &info.changed_area {
        let end = a.start.checked_add(a.length);
        if a.start < info.start_offset || end.is_none_or(|e| e > query_end) {
            return Err(bad(format!(
                "area at {} of {} bytes lies outside the queried range {}..{query_end}",
                a.start, a.length, info.start_offset
            )));
        }
        ranges.push((a.start, a.length));
    }
    ranges.push((0, info.start_offset));
    ranges.push((query_end, disk_len - query_end));
    Ok(merge(ranges))
}

/// Sorts ranges (offset, length), drops empty ones and merges those that touch.
pub fn merge(mut ranges: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    ranges.retain(|r| r.1 > 0);
    ranges.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
    for (off, len) in ranges {
        match out.last_mut() {
            Some(last) if off <= last.0 + last.1 => {
                last.1 = last.1.max(off + len - last.0);
            }
            _ => out.push((off, len)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn areas_and_unqueried_ranges_are_read() {
        let doc = r#"{"startOffset":1024,"length":8192,"changedArea":[
            {"start":4096,"length":100},{"start":2048,"length":2048}]}"#;
        let r = parse_disk_change_info(doc, 16384, "x").unwrap();
        assert_eq!(r, vec![(0, 1024), (2048, 2148), (9216, 7168)]);
    }

    #[test]
    fn whole_disk_query_with_no_changes_reads_nothing() {
        let doc = r#"{"startOffset":0,"length":65536,"changedArea":[]}"#;
        assert!(parse_disk_change_info(doc, 65536, "x").unwrap().is_empty());
    }

    #[test]
    fn bad_documents_are_refused() {
        for doc in [
            "not json",
            r#"{"startOffset":0,"length":100000}"#,
            r#"{"startOffset":0,"length":65536,"changedArea":[{"start":65000,"length":1000}]}"#,
            r#"{"startOffset":4096,"length":4096,"changedArea":[{"start":0,"length":10}]}"#,
            r#"{"startOffset":0,"length":65536,"changedArea":[{"start":18446744073709551615,"length":2}]}"#,
        ] {
            let e = parse_disk_change_info(doc, 65536, "f.json").unwrap_err();
            assert!(e.to_string().contains("f.json"), "{e}");
        }
    }
}
