//! Sizes, durations and times as people read them: one formatter each, for every command.

/// `1.5 GiB`-style sizes.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

pub fn duration(secs: f64) -> String {
    let s = secs.round() as u64;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

pub use mover::report::timestamp;

/// The lock coverage line of `check` (`None`: the repository is not locked).
pub fn lock_line(c: &targets::LockCoverage) -> Option<String> {
    let policy = c.policy?;
    let until = c
        .earliest_until_ms
        .map(|ms| format!(", the earliest lock ends {}", mover::report::timestamp(ms)))
        .unwrap_or_default();
    let exposed = match c.exposed {
        0 => String::new(),
        n => format!(
            "; ERROR: {n} snapshot(s) younger than {} days are not wholly locked: run a backup \
             (it extends the locks) and check again",
            policy.days
        ),
    };
    Some(format!(
        "lock: {} days, {} mode: {} of {} snapshots and {} of {} packs locked{until}{exposed}",
        policy.days,
        policy.mode.s3_name().to_ascii_lowercase(),
        c.snapshots_locked,
        c.snapshots,
        c.packs_locked,
        c.packs,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_sizes() {
        assert_eq!(bytes(5), "5 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(4 << 30), "4.0 GiB");
    }

    #[test]
    fn times_in_utc() {
        assert_eq!(timestamp(0), "1970-01-01T00:00:00Z");
        assert_eq!(timestamp(1_717_243_200_000), "2024-06-01T12:00:00Z");
        assert_eq!(duration(3725.0), "1h02m");
    }
}
