//! Immutable repositories: S3 Object Lock (issue 18, item 3).
//!
//! A repository created with `--lock-days N` keeps its policy in the object `lock`. The S3
//! backend then gives every object it writes a retain-until date N days ahead, and the
//! server refuses to delete or overwrite that version until the date has passed, whoever
//! asks, the repository's own credentials included.
//!
//! A snapshot must stay whole for N days after its commit, so before each commit the packs
//! it references must be locked at least until then. Reused packs are extended *in
//! generations*, as Veeam does: a pack whose lock ends inside the window is extended to the
//! window's end plus [`GENERATION_MS`], so one pack is extended about once per generation,
//! not at every backup. What each pack is known to be locked until is cached locally (the
//! server stays the truth: a pack not in the cache is asked with a HEAD).
//!
//! Deleting waits for locks: `forget` keeps a snapshot whose lock has not ended (and says
//! so), and the backend's delete leaves a locked object where it is, so `gc` condemns and
//! sweeps it again after the lock ends. Nothing fails on a lock.

use crate::error::{Error, Result};

mod coverage;
mod generations;

pub use coverage::{lock_coverage, LockCoverage};
pub use generations::{cover_packs, packs_of};

/// The object holding a repository's lock policy.
pub const LOCK_KEY: &str = "lock";

/// How long a reused pack's lock is extended beyond the window: 10 days.
pub const GENERATION_MS: i64 = 10 * DAY_MS;

const DAY_MS: i64 = 86_400_000;

/// S3's two retention modes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockMode {
    /// Users with the `s3:BypassGovernanceRetention` permission may still delete.
    Governance,
    /// Nobody may delete or shorten the lock, the account's root user included.
    Compliance,
}

impl LockMode {
    /// The name S3 uses (`GOVERNANCE`, `COMPLIANCE`).
    pub fn s3_name(self) -> &'static str {
        match self {
            LockMode::Governance => "GOVERNANCE",
            LockMode::Compliance => "COMPLIANCE",
        }
    }

    /// Reads `governance` or `compliance` (any case).
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "governance" => Some(LockMode::Governance),
            "compliance" => Some(LockMode::Compliance),
            _ => None,
        }
    }
}

/// A repository's lock policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockPolicy {
    /// How long every object stays locked after it is written, days.
    pub days: u32,
    /// The retention mode.
    pub mode: LockMode,
}

impl LockPolicy {
    /// The lock window in ms.
    pub fn window_ms(&self) -> i64 {
        i64::from(self.days) * DAY_MS
    }

    /// The text of the `lock` object: `mode=governance\ndays=30\n`.
    pub fn encode(&self) -> String {
        let mode = self.mode.s3_name().to_ascii_lowercase();
        format!("mode={mode}\ndays={}\n", self.days)
    }

    /// Reads [`encode`](Self::encode)'s text.
    pub fn decode(text: &str) -> Option<Self> {
        let mut days = None;
        let mut mode = None;
        for line in text.lines() {
            match line.split_once('=') {
                Some(("days", d)) => days = d.trim().parse().ok(),
                Some(("mode", m)) => mode = LockMode::parse(m.trim()),
                _ => {}
            }
        }
        Some(LockPolicy {
            days: days.filter(|d| *d > 0)?,
            mode: mode?,
        })
    }

    /// Refuses a policy whose window is shorter than `grace_ms` (gc's grace period): a pack
    /// condemned by gc must stay readable to the backups that may still reuse it.
    pub fn check_grace(&self, location: &str, grace_ms: i64) -> Result<()> {
        if self.window_ms() < grace_ms {
            return Err(Error::Misconfigured {
                location: location.to_string(),
                problem: format!(
                    "the lock ({} days) is shorter than gc's grace period ({} h)",
                    self.days,
                    grace_ms / 3_600_000
                ),
                fix: "lock for longer, or run gc with a shorter --grace".into(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_read_back_and_refuse_short_windows() {
        let p = LockPolicy {
            days: 30,
            mode: LockMode::Compliance,
        };
        assert_eq!(LockPolicy::decode(&p.encode()), Some(p));
        assert_eq!(LockPolicy::decode("mode=governance\ndays=0\n"), None);
        assert_eq!(LockPolicy::decode("days=3"), None);
        assert!(p.check_grace("x", 3_600_000).is_ok());
        let e = p.check_grace("x", 31 * DAY_MS).unwrap_err().to_string();
        assert!(e.contains("shorter than gc's grace"), "{e}");
        assert_eq!(LockMode::parse("GOVERNANCE"), Some(LockMode::Governance));
        assert_eq!(LockMode::parse("strict"), None);
    }
}
