//! Temporary objects of writes that never finished (issue 14, item 6): a backup killed while
//! it writes a pack leaves `packs/XX/.tmp-*` (up to a pack's size) in a local repository, and
//! nothing else ever looks at it. `gc` removes those older than its grace period whose writer
//! no longer runs; `check` and `doctor` report them.
//!
//! A temporary file of a write that is still running is never removed: its writer runs on
//! this machine (its name holds the process id), or it was written within the grace period.
//! A single object is written in far less time than the grace period, which must already
//! exceed the longest backup.

use crate::{Backend, Result, Temporary};

/// The temporary objects of a repository, summed up.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Temporaries {
    /// All of them.
    pub count: usize,
    /// Their bytes.
    pub bytes: u64,
    /// Those whose writer is gone and that are older than the grace period asked about: left
    /// by killed writes, removed by `gc`.
    pub stale: Vec<Temporary>,
}

impl Temporaries {
    /// Bytes of the stale ones.
    pub fn stale_bytes(&self) -> u64 {
        self.stale.iter().map(|t| t.bytes).sum()
    }

    /// One line for `check` and `doctor`, with what to do; `None` when there are none.
    pub fn describe(&self, grace_ms: i64) -> Option<String> {
        if self.count == 0 {
            return None;
        }
        let fresh = self.count - self.stale.len();
        let mut line = format!(
            "{} temporary files of unfinished writes hold {} bytes",
            self.count, self.bytes
        );
        if !self.stale.is_empty() {
            line.push_str(&format!(
                "; {} of them ({} bytes) were left by killed writes more than {} s ago: \
                 `mover gc` removes them",
                self.stale.len(),
                self.stale_bytes(),
                grace_ms / 1000
            ));
        }
        if fresh > 0 {
            line.push_str(&format!(
                "; {fresh} may belong to a write still running: `mover gc` removes them once \
                 they are older than its grace period and their writer is gone"
            ));
        }
        Some(line)
    }
}

/// The temporary objects below the backend's root; those older than `grace_ms` whose writer
/// is gone are stale.
pub fn temporaries(backend: &dyn Backend, grace_ms: i64) -> Result<Temporaries> {
    let now = crate::now_ms();
    let mut out = Temporaries::default();
    for t in backend.temporaries()? {
        out.count += 1;
        out.bytes += t.bytes;
        let old = t
            .modified_ms
            .is_some_and(|m| now.saturating_sub(m) >= grace_ms);
        if old && !t.writer_running {
            out.stale.push(t);
        }
    }
    out.stale.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(out)
}

/// Removes the stale temporary objects (unless `dry_run`); returns how many and their bytes.
pub(crate) fn remove_stale(
    backend: &dyn Backend,
    grace_ms: i64,
    dry_run: bool,
) -> Result<(usize, u64)> {
    let found = temporaries(backend, grace_ms)?;
    if !dry_run {
        for t in &found.stale {
            backend.delete(&t.key)?;
        }
    }
    Ok((found.stale.len(), found.stale_bytes()))
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::LocalBackend;

    fn aged(path: &std::path::Path, secs: u64) {
        let f = fs::File::options().write(true).open(path).unwrap();
        f.set_modified(SystemTime::now() - Duration::from_secs(secs))
            .unwrap();
    }

    #[test]
    fn old_temporaries_of_gone_writers_are_stale_others_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let b = LocalBackend::new(dir.path());
        b.put("packs/ab/x", b"pack").unwrap();
        fs::create_dir_all(dir.path().join("index")).unwrap();
        // No process has this id (above the kernel's limit): a killed writer.
        let killed = [
            "packs/ab/.tmp-4999999-0",
            "index/.tmp-4999999-1",
            ".tmp-4999999-2",
        ];
        for k in killed {
            fs::write(dir.path().join(k), b"partial").unwrap();
            aged(&dir.path().join(k), 7200);
        }
        // A fresh one, and an old one whose writer (this process) still runs.
        fs::write(dir.path().join("packs/ab/.tmp-4999999-3"), b"new").unwrap();
        let mine = format!("packs/ab/.tmp-{}-9", std::process::id());
        fs::write(dir.path().join(&mine), b"mine").unwrap();
        aged(&dir.path().join(&mine), 7200);

        let t = temporaries(&b, 3_600_000).unwrap();
        assert_eq!((t.count, t.bytes), (5, 7 * 3 + 3 + 4));
        let mut stale: Vec<&str> = t.stale.iter().map(|t| t.key.as_str()).collect();
        stale.sort_unstable();
        assert_eq!(
            stale,
            [
                ".tmp-4999999-2",
                "index/.tmp-4999999-1",
                "packs/ab/.tmp-4999999-0"
            ]
        );
        assert!(t
            .describe(3_600_000)
            .unwrap()
            .contains("`mover gc` removes them"));

        assert_eq!(remove_stale(&b, 3_600_000, true).unwrap(), (3, 21));
        assert_eq!(
            temporaries(&b, 3_600_000).unwrap().count,
            5,
            "a dry run removes nothing"
        );
        assert_eq!(remove_stale(&b, 3_600_000, false).unwrap(), (3, 21));
        let left = temporaries(&b, 0).unwrap();
        assert_eq!(left.count, 2);
        assert_eq!(
            left.stale.len(),
            1,
            "the running writer's file is never stale"
        );
        assert_eq!(b.list("").unwrap(), ["packs/ab/x"], "objects are untouched");
    }
}
