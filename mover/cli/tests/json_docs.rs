//! `docs/JSON.md` lists every field the binary prints with `--json`: the first column of each
//! command's tables. This test serializes a sample of each summary of `mover::report` (built
//! from the library's reports, with every list and optional object filled in) and compares its
//! keys with the documented ones, both ways: every key printed is documented, every documented
//! key is printed.
//!
//! In the tables, `a[].b` is field `b` of each object of the list `a`, `a.b` field `b` of the
//! object `a`; a cell may name several fields (`a`, `b`), and `prefix*` stands for every field
//! that starts with `prefix`.

use std::collections::{BTreeMap, BTreeSet};

use chunker::crypto::{Aead, KdfParams};
use chunker::format::{Attachment, BackupStats, Chunking, Disk, Entry, Manifest, ObjectId};
use mover::archive::{ArchiveListing, ArchiveRestoreReport, ExportReport};
use mover::benchmark::{BenchReport, Row, SourceInfo, Stage};
use mover::report::*;
use serde_json::Value;
use targets::archive::{ArchiveHeader, ArchiveId, ArchiveSummary, DiskInfo, Trailer};

// ---------------------------------------------------------------------------------------------
// Reading the document.

/// A heading and the rows of the tables under it (up to the next heading), cells trimmed.
struct Section {
    heading: String,
    rows: Vec<Vec<String>>,
}

fn sections(doc: &str) -> Vec<Section> {
    let mut out: Vec<Section> = Vec::new();
    let mut header_next = false;
    for line in doc.lines() {
        if line.starts_with('#') {
            out.push(Section {
                heading: line.trim_start_matches('#').trim().to_string(),
                rows: Vec::new(),
            });
            header_next = true;
            continue;
        }
        let Some(section) = out.last_mut() else {
            continue;
        };
        let t = line.trim();
        if !t.starts_with('|') {
            header_next = true;
            continue;
        }
        // The first row of a table is its header; the second its alignment row.
        let first_row = std::mem::replace(&mut header_next, false);
        if first_row || t.starts_with("|---") || t.starts_with("| ---") {
            continue;
        }
        let cells = t.trim_matches('|').split('|').map(|c| c.trim().to_string());
        section.rows.push(cells.collect());
    }
    out
}

/// The names in backquotes in `cell`.
fn names(cell: &str) -> Vec<String> {
    cell.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// The field names documented in the first column of `section`'s tables.
fn documented(section: &Section) -> BTreeSet<String> {
    section.rows.iter().flat_map(|r| names(&r[0])).collect()
}

// ---------------------------------------------------------------------------------------------
// Reading the summaries.

/// Every key of `v` as a path: `a`, `a.b` in an object, `a[].b` in each object of a list.
fn keys(v: &Value, prefix: &str, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                let path = format!("{prefix}{k}");
                out.insert(path.clone());
                match v {
                    Value::Object(_) => keys(v, &format!("{path}."), out),
                    Value::Array(items) => {
                        for item in items {
                            keys(item, &format!("{path}[]."), out);
                        }
                    }
                    _ => {}
                }
            }
        }
        // A listing (`snapshots`, `key list`): the fields of its items.
        Value::Array(items) => items.iter().for_each(|i| keys(i, prefix, out)),
        _ => {}
    }
}

fn keys_of<T: serde::Serialize>(summary: &T) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    keys(&serde_json::to_value(summary).unwrap(), "", &mut out);
    out
}

/// `pattern` names `key`: the same, or a `prefix*` pattern.
fn matches(pattern: &str, key: &str) -> bool {
    match pattern.split_once('*') {
        Some((head, tail)) => key.starts_with(head) && key[head.len()..].ends_with(tail),
        None => pattern == key,
    }
}

/// The differences between what is printed and what is documented, one line each.
fn compare(what: &str, printed: &BTreeSet<String>, doc: &BTreeSet<String>) -> Vec<String> {
    let mut problems = Vec::new();
    for key in printed {
        if !doc.iter().any(|p| matches(p, key)) {
            problems.push(format!("{what}: `{key}` is printed but not documented"));
        }
    }
    for pattern in doc {
        if !printed.iter().any(|k| matches(pattern, k)) {
            problems.push(format!("{what}: `{pattern}` is documented but not printed"));
        }
    }
    problems
}

// ---------------------------------------------------------------------------------------------
// Samples: every list holds an item, every optional object is there.

fn id(n: u8) -> ObjectId {
    ObjectId([n; 32])
}

fn manifest() -> Manifest {
    let stats = BackupStats {
        bytes_read: 3 << 20,
        bytes_new: 2 << 20,
        bytes_stored: 1 << 20,
        bytes_zero: 1 << 20,
        chunks_new: 2,
        chunks_reused: 1,
        duration_ms: 1200,
    };
    let disk = |name: &str| Disk {
        name: name.into(),
        source: format!("/dev/{name}"),
        chunking: Chunking::Fixed(1 << 20),
        source_len: 4 << 20,
        change_token: "bitmap0".into(),
        stats,
        entries: vec![
            Entry {
                len: 1 << 20,
                id: None
            };
            4
        ],
    };
    Manifest {
        created_ms: 1_795_569_844_000,
        nonce: [0; 16],
        parent: Some(id(9)),
        stats,
        name: "vm1".into(),
        disks: vec![disk("vda"), disk("vdb")],
        attachments: vec![Attachment {
            name: "vm1.xml".into(),
            data: vec![b'<'; 10],
        }],
    }
}

fn backup(archive: bool) -> BackupSummary {
    let report = mover::BackupReport {
        snapshot: id(1),
        manifest: manifest(),
        chunks_zero: 1,
        chunks_unchanged: 1,
        bytes_unchanged: 1 << 20,
        warnings: vec!["the parent was not usable".into()],
        seconds: 1.5,
    };
    let archive = archive.then(|| mover::ArchiveWritten {
        id: "ab".repeat(16),
        volumes: 1,
        bytes_written: 5 << 20,
        chunks: 3,
        stored_bytes: 1 << 20,
        parents: vec!["cd".repeat(16)],
    });
    BackupSummary::from(&mover::BackupOutcome { report, archive })
}

fn archive_header() -> ArchiveHeader {
    let mut h = ArchiveHeader::new("mover 0.1.0");
    h.chunk_size = 1 << 20;
    h.disks = vec![DiskInfo {
        name: "vda".into(),
        size: 4 << 20,
    }];
    h.parents = vec![ArchiveId([7; 16])];
    h
}

fn archive_listing() -> ArchiveListingSummary {
    let listing = ArchiveListing {
        header: Some(archive_header()),
        manifest: Some(manifest()),
        trailer: Some(Trailer {
            incomplete: false,
            frames: 9,
            chunks: 3,
            chunk_bytes: 3 << 20,
            stored_bytes: 1 << 20,
            archive_hash: [0; 32],
            verified: true,
        }),
        volumes: 1,
        chunks: 3,
        chunk_bytes: 3 << 20,
        damage: vec!["frame 4: bad checksum".into()],
        cipher: Some(Aead::Aes256Gcm),
    };
    ArchiveListingSummary::new(std::slice::from_ref(&listing), true)
}

fn benchmark() -> BenchmarkSummary {
    let row = |stage| Row {
        stage,
        threads: 2,
        bytes: 100 << 20,
        stored_bytes: Some(40 << 20),
        seconds: 0.5,
    };
    BenchmarkSummary::from(&BenchReport {
        threads: 2,
        seconds: 0.5,
        level: 3,
        corpus_bytes: 16 << 20,
        chunk_size: 1 << 20,
        rows: vec![
            row(Stage::Hash),
            row(Stage::Compress(3)),
            row(Stage::Decode(3)),
            row(Stage::Seal(Aead::XChaCha20Poly1305)),
        ],
        source: Some(SourceInfo {
            spec: "disk.img".into(),
            len: 64 << 20,
            data_bytes: 1 << 20,
            read_whole: true,
        }),
    })
}

fn maintenance() -> BTreeMap<&'static str, BTreeSet<String>> {
    let forget_row = |keep| mover::forget::ForgetRow {
        id: id(2),
        name: "vm1".into(),
        created_ms: 1_795_569_844_000,
        keep,
        reasons: vec!["last 1".into()],
    };
    let gc = targets::gc::GcReport {
        pending: vec![targets::gc::Pending {
            key: "gc/x".into(),
            packs: 2,
            due_ms: 1_795_573_444_000,
        }],
        warnings: vec!["pack x is damaged".into()],
        ..Default::default()
    };
    let check = targets::gc::CheckReport {
        errors: vec!["pack x is missing".into()],
        notes: vec!["3 packs are named by no index segment".into()],
        ..Default::default()
    };
    let repair = targets::gc::RepairIndexReport {
        unreadable: vec!["pack x: damaged".into()],
        recovered: vec!["pack y: trailer salvaged".into()],
        ..Default::default()
    };
    let serving = mover::Serving {
        snapshot: id(4),
        exports: vec![mover::ServedExport {
            name: "sda".into(),
            uri: "nbd+unix:///sda?socket=/run/vm1.sock".into(),
            size: 1 << 30,
            read_only: true,
        }],
    };
    let damaged = targets::gc::DamagedSnapshot {
        id: id(3),
        name: "vm1".into(),
        missing_chunks: 1,
        bytes_lost: 1 << 20,
    };
    let key = targets::KeyInfo {
        id: "ef".repeat(32),
        created_ms: 1_795_569_844_000,
        params: KdfParams::default(),
        in_use: true,
    };
    let doctor = DoctorCheck {
        subject: "source disk.img".into(),
        check: "readable".into(),
        ok: false,
        detail: "permission denied".into(),
        fix: Some("run as root".into()),
    };
    BTreeMap::from([
        (
            "`mover forget --json`",
            keys_of(&ForgetSummary::new(
                &[forget_row(true), forget_row(false)],
                false,
            )),
        ),
        ("`mover gc --json`", keys_of(&GcSummary::new(&gc, false))),
        (
            "`mover check --json`",
            keys_of(&CheckSummary::new(&check, &["damage".into()])),
        ),
        (
            "`mover repair index --json`",
            keys_of(&RepairIndexSummary::new(&repair, false)),
        ),
        (
            "`mover repair config --json`",
            keys_of(&mover::report::RepairConfigSummary::new(
                &targets::gc::RepairConfigReport {
                    intact: false,
                    config: chunker::format::Config {
                        id: [7; 32],
                        created_ms: 1_795_573_444_000,
                        encryption: Some(Aead::Aes256Gcm),
                    },
                    recovered: vec!["not encrypted".into()],
                },
                false,
            )),
        ),
        (
            "`mover ls --json`, `mover find --json`",
            keys_of(&mover::report::FoundItem::from(&mover::FindHit {
                snapshot: id(5),
                snapshot_name: "vm1".into(),
                created_ms: 1_795_573_444_000,
                entry: file_entry(),
            })),
        ),
        (
            "`mover extract --json`",
            keys_of(&mover::report::ExtractSummary::new(
                &mover::ExtractReport {
                    snapshot: Some(id(5)),
                    files: 1,
                    dirs: 1,
                    symlinks: 1,
                    hard_links: 1,
                    bytes: 1,
                    notes: vec!["n".into()],
                },
                "restored",
                0.5,
            )),
        ),
        (
            "`mover serve --json`",
            // The `serving` and the `stopped` event, documented in one section.
            keys_of(&mover::report::ServingEvent::from(&serving))
                .into_iter()
                .chain(keys_of(&mover::report::StoppedEvent::from(
                    &[mover::ExportStats {
                        name: "sda".into(),
                        reader: mover::ReaderStats::default(),
                        reads: 0,
                        read_p50: None,
                        read_p99: None,
                    }][..],
                )))
                .collect(),
        ),
        (
            "`mover repair snapshots --json`",
            keys_of(&RepairSnapshotsSummary::new(&[damaged], true)),
        ),
        (
            "`mover key list --json`",
            keys_of(&vec![KeyItem::from(&key)]),
        ),
        (
            "`mover doctor --json`",
            keys_of(&DoctorSummary::new(vec![doctor])),
        ),
    ])
}

/// A listing entry with every optional field set.
fn file_entry() -> mover::FileEntry {
    let mut e = mover::FileEntry::default();
    e.path = "p2/etc/fstab".into();
    e.name = "fstab".into();
    e.kind = mover::FileKind::File;
    e.size = 512;
    e.mode = 0o644;
    e.mtime = (1_795_569_844, 5);
    e.target = Some("x".into());
    e.part_type = Some("Linux filesystem".into());
    e.fs_type = Some("ext4".into());
    e.label = Some("root".into());
    e
}

/// The keys each section's tables must document, by heading.
fn samples() -> BTreeMap<&'static str, BTreeSet<String>> {
    let m = manifest();
    let restore = mover::RestoreReport {
        bytes_total: 4 << 20,
        bytes_written: 3 << 20,
        chunks_fetched: 3,
        bytes_compared: 0,
        seconds: 0.5,
    };
    let verify = mover::VerifyReport {
        snapshots: vec![mover::SnapshotCheck {
            id: id(1),
            name: Some("vm1".into()),
            problems: vec!["chunk x is missing".into()],
        }],
        chunks_total: 3,
        chunks_checked: 3,
        bytes_checked: 3 << 20,
    };
    let archive_restore = ArchiveRestoreReport {
        disk: "vda".into(),
        snapshot: Some(id(1)),
        damage: vec!["frame 4: bad checksum".into()],
        lost: vec![(0, 1 << 20)],
        ..Default::default()
    };
    let export = ExportReport {
        snapshot: id(1),
        summary: ArchiveSummary {
            id: ArchiveId([7; 16]),
            volumes: 1,
            frames: 9,
            chunks: 3,
            chunk_bytes: 3 << 20,
            stored_bytes: 1 << 20,
            bytes_written: 5 << 20,
            archive_hash: [0; 32],
        },
    };
    // What a backup onto an archive adds to the backup summary.
    let plain = keys_of(&backup(false));
    let onto_archive = keys_of(&backup(true)).difference(&plain).cloned().collect();
    let mut all = BTreeMap::from([
        ("`mover backup --json`", plain),
        ("`mover backup --to-archive … --json`", onto_archive),
        (
            "`mover restore --json`",
            keys_of(&RestoreSummary::new(&id(1), &restore)),
        ),
        (
            "`mover verify --json`",
            keys_of(&VerifySummary::from(&verify)),
        ),
        (
            "`mover snapshots --json`",
            keys_of(&vec![SnapshotItem::new(&id(1), &m, true)]),
        ),
        (
            "`mover restore --from-archive … --json`",
            keys_of(&ArchiveRestoreSummary::new(&archive_restore, 1.0)),
        ),
        (
            "`mover archive ls|verify PATH --json`",
            keys_of(&archive_listing()),
        ),
        (
            "`mover archive import --json`",
            keys_of(&ImportSummary::new(&id(1), &m, 2)),
        ),
        (
            "`mover archive export --json`",
            keys_of(&ExportSummary::from(&export)),
        ),
        ("`mover benchmark --json`", keys_of(&benchmark())),
    ]);
    all.extend(maintenance());
    all
}

/// The events besides `summary`, by type.
fn events() -> BTreeMap<&'static str, BTreeSet<String>> {
    let begin = BeginEvent {
        command: "backup".into(),
        version: "0.1.0".into(),
        pid: 1,
    };
    let warning = WarningEvent {
        message: "…".into(),
    };
    let error = ErrorEvent {
        command: "backup".into(),
        message: "…".into(),
        exit_code: 1,
    };
    BTreeMap::from([
        ("begin", keys_of(&begin)),
        (
            "progress",
            keys_of(&ProgressEvent::new("backup", 1, 2, 0.5)),
        ),
        ("warning", keys_of(&warning)),
        ("error", keys_of(&error)),
    ])
}

// ---------------------------------------------------------------------------------------------

fn doc() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/JSON.md");
    std::fs::read_to_string(path).expect("docs/JSON.md")
}

#[test]
fn every_printed_field_is_documented_and_every_documented_field_is_printed() {
    let doc = doc();
    let sections = sections(&doc);
    let mut samples = samples();
    let mut problems = Vec::new();
    for section in &sections {
        if section.heading == "Events (JSON Lines)" {
            continue;
        }
        let fields = documented(section);
        match samples.remove(section.heading.as_str()) {
            Some(printed) => problems.extend(compare(&section.heading, &printed, &fields)),
            None if fields.is_empty() => {}
            None => problems.push(format!(
                "{}: documents fields, but no summary of mover::report is checked against it \
                 (add a sample to {})",
                section.heading,
                file!()
            )),
        }
    }
    for heading in samples.keys() {
        problems.push(format!("{heading}: no such section with a field table"));
    }
    assert!(
        problems.is_empty(),
        "docs/JSON.md:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_events_table_names_each_events_fields() {
    let doc = doc();
    let sections = sections(&doc);
    let table = sections
        .iter()
        .find(|s| s.heading == "Events (JSON Lines)")
        .expect("the events section");
    let mut problems = Vec::new();
    for (kind, printed) in events() {
        let row = table.rows.iter().find(|r| names(&r[0]) == [kind]);
        let Some(row) = row else {
            problems.push(format!("event `{kind}` is not in the table"));
            continue;
        };
        let fields = names(&row[2]).into_iter().collect();
        problems.extend(compare(&format!("event `{kind}`"), &printed, &fields));
    }
    assert!(
        problems.is_empty(),
        "docs/JSON.md:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_reader_finds_tables_names_and_patterns() {
    let doc = "## A\n\ntext `x`\n\n| field | meaning |\n|---|---|\n| `a`, `b[].c` | `d` |\n\n\
               ## B\n\n| field | meaning |\n|---|---|\n| `chunks_*` | counts |\n";
    let s = sections(doc);
    assert_eq!(s.len(), 2);
    assert_eq!(
        documented(&s[0]),
        BTreeSet::from(["a".into(), "b[].c".into()])
    );
    let printed = BTreeSet::from(["chunks_new".to_string(), "chunks_zero".into()]);
    assert!(compare("B", &printed, &documented(&s[1])).is_empty());
    let printed = BTreeSet::from(["chunks_new".to_string(), "bytes".into()]);
    assert_eq!(compare("B", &printed, &documented(&s[1])).len(), 1);
    let mut k = BTreeSet::new();
    keys(
        &serde_json::json!({"a": {"b": 1}, "c": [{"d": 2}], "e": null}),
        "",
        &mut k,
    );
    let want = ["a", "a.b", "c", "c[].d", "e"];
    assert_eq!(k, want.iter().map(|s| s.to_string()).collect());
}
