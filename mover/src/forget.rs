//! Retention: which snapshots a `--keep-*` policy keeps, and why.
//!
//! Snapshots are grouped by name (the source or VM); each group is judged on its own, newest
//! first. A snapshot is kept when any rule wants it:
//!
//! - `last N`: the N newest;
//! - `hourly/daily/weekly/monthly/yearly N`: the newest snapshot of each of the N most recent
//!   hours, days, ISO weeks (Monday to Sunday), months or years that have snapshots (UTC);
//! - `within D`: every snapshot taken less than D before the newest one of its group.

use std::collections::HashSet;

/// A retention policy; `None` means the rule is not used.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// Keep the N newest.
    pub last: Option<usize>,
    /// Keep the newest of each of the last N hours.
    pub hourly: Option<usize>,
    /// … days.
    pub daily: Option<usize>,
    /// … ISO weeks.
    pub weekly: Option<usize>,
    /// … months.
    pub monthly: Option<usize>,
    /// … years.
    pub yearly: Option<usize>,
    /// Keep everything within this many ms of the group's newest snapshot.
    pub within_ms: Option<i64>,
}

impl Policy {
    /// True when no rule is set (such a policy would remove everything).
    pub fn is_empty(&self) -> bool {
        *self == Policy::default()
    }
}

/// The verdict on one snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// Index of the snapshot in the slice given to [`apply`].
    pub index: usize,
    /// Whether it is kept.
    pub keep: bool,
    /// The rules that keep it (`last`, `daily 2024-05-01`, …); empty when removed.
    pub reasons: Vec<String>,
}

/// The UTC date and time of `ms` since the epoch. Times outside the calendar's range (a
/// manifest cannot hold one, but a damaged clock could) count as the epoch.
pub fn utc(ms: i64) -> jiff::civil::DateTime {
    let t = jiff::Timestamp::from_millisecond(ms).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    t.to_zoned(jiff::tz::TimeZone::UTC).datetime()
}

/// The bucket labels of a time (ms since the epoch) for each calendar rule.
fn buckets(ms: i64) -> [String; 5] {
    let t = utc(ms);
    let (y, m, d, hour) = (t.year(), t.month(), t.day(), t.hour());
    let week = t.date().iso_week_date();
    [
        format!("{y:04}-{m:02}-{d:02} {hour:02}h"),
        format!("{y:04}-{m:02}-{d:02}"),
        format!("{:04}-W{:02}", week.year(), week.week()),
        format!("{y:04}-{m:02}"),
        format!("{y:04}"),
    ]
}

/// Judges snapshots given as `(group, created_ms)`, oldest first (as `mover snapshots` lists
/// them); returns one verdict per snapshot, in the order given.
pub fn apply(snapshots: &[(&str, i64)], policy: &Policy) -> Vec<Verdict> {
    let mut verdicts: Vec<Verdict> = (0..snapshots.len())
        .map(|index| Verdict {
            index,
            keep: false,
            reasons: Vec::new(),
        })
        .collect();
    let mut groups: Vec<&str> = snapshots.iter().map(|s| s.0).collect();
    groups.sort_unstable();
    groups.dedup();
    let rules = [
        ("hourly", policy.hourly),
        ("daily", policy.daily),
        ("weekly", policy.weekly),
        ("monthly", policy.monthly),
        ("yearly", policy.yearly),
    ];
    for group in groups {
        // Newest first; of snapshots taken in the same millisecond, the later one given
        // counts as newer (callers list snapshots as `latest` orders them).
        let mut members: Vec<usize> = (0..snapshots.len())
            .filter(|&i| snapshots[i].0 == group)
            .collect();
        members.sort_by_key(|&i| std::cmp::Reverse((snapshots[i].1, i)));
        let newest = snapshots[members[0]].1;
        for (rank, &i) in members.iter().enumerate() {
            let v = &mut verdicts[i];
            if policy.last.is_some_and(|n| rank < n) {
                v.reasons.push(format!("last {}", rank + 1));
            }
            if policy
                .within_ms
                .is_some_and(|w| newest - snapshots[i].1 < w)
            {
                v.reasons.push("within".to_string());
            }
        }
        for (slot, (rule, count)) in rules.iter().enumerate() {
            let Some(count) = *count else { continue };
            let mut seen = HashSet::new();
            for &i in &members {
                if seen.len() >= count {
                    break;
                }
                let label = buckets(snapshots[i].1)[slot].clone();
                if seen.insert(label.clone()) {
                    verdicts[i].reasons.push(format!("{rule} {label}"));
                }
            }
        }
    }
    for v in &mut verdicts {
        v.keep = !v.reasons.is_empty();
    }
    verdicts
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3_600_000;
    const D: i64 = 24 * H;

    /// Days since the epoch of a date.
    fn days_from_civil(y: i16, m: i8, d: i8) -> i64 {
        let t = jiff::civil::date(y, m, d)
            .to_zoned(jiff::tz::TimeZone::UTC)
            .unwrap();
        t.timestamp().as_second() / 86_400
    }

    #[test]
    fn calendar_buckets_match_known_dates() {
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        let at = |y, m, d| buckets(days_from_civil(y, m, d) * D + 5 * H);
        assert_eq!(buckets(0)[1], "1970-01-01");
        assert_eq!(at(2024, 2, 29)[0], "2024-02-29 05h");
        // 2021-01-03 is a Sunday in ISO week 53 of 2020; 2021-01-04 starts week 1.
        assert_eq!(at(2021, 1, 3)[2], "2020-W53");
        assert_eq!(at(2021, 1, 4)[2], "2021-W01");
        assert_eq!(at(2026, 11, 25)[2], "2026-W48");
        assert_eq!(
            at(2026, 11, 25)[3..],
            ["2026-11".to_string(), "2026".to_string()]
        );
        // Before the epoch, and out of range, still give a label.
        assert_eq!(buckets(-1)[1], "1969-12-31");
        assert_eq!(buckets(i64::MAX)[4], "1970");
    }

    fn kept(snaps: &[(&str, i64)], p: &Policy) -> Vec<usize> {
        apply(snaps, p)
            .into_iter()
            .filter(|v| v.keep)
            .map(|v| v.index)
            .collect()
    }

    #[test]
    fn last_and_daily_keep_the_newest_of_each() {
        let base = days_from_civil(2026, 11, 1) * D;
        // Two snapshots a day for five days, given oldest first.
        let snaps: Vec<(&str, i64)> = (0..10).map(|i| ("vm", base + i * 12 * H)).collect();
        let p = Policy {
            last: Some(1),
            ..Policy::default()
        };
        assert_eq!(kept(&snaps, &p), vec![9]);
        let p = Policy {
            daily: Some(3),
            ..Policy::default()
        };
        assert_eq!(kept(&snaps, &p), vec![5, 7, 9]);
        let p = Policy {
            within_ms: Some(2 * D),
            ..Policy::default()
        };
        assert_eq!(kept(&snaps, &p), vec![6, 7, 8, 9]);
    }

    #[test]
    fn groups_are_judged_apart() {
        let snaps = [("a", 1), ("b", 2), ("a", 3), ("b", 4)];
        let p = Policy {
            last: Some(1),
            ..Policy::default()
        };
        assert_eq!(kept(&snaps, &p), vec![2, 3]);
        let v = apply(&snaps, &p);
        assert_eq!(v[2].reasons, vec!["last 1".to_string()]);
        assert!(v[0].reasons.is_empty() && !v[0].keep);
    }

    #[test]
    fn monthly_and_yearly_count_periods_that_have_snapshots() {
        let t = |y, m, d| days_from_civil(y, m, d) * D;
        let snaps = [
            ("vm", t(2024, 12, 31)),
            ("vm", t(2025, 6, 1)),
            ("vm", t(2025, 6, 20)),
            ("vm", t(2026, 1, 5)),
        ];
        let p = Policy {
            monthly: Some(2),
            ..Policy::default()
        };
        assert_eq!(kept(&snaps, &p), vec![2, 3]);
        let p = Policy {
            yearly: Some(3),
            ..Policy::default()
        };
        assert_eq!(kept(&snaps, &p), vec![0, 2, 3]);
        assert!(Policy::default().is_empty());
    }
}

/// `mover forget`: the snapshots to remove, by id or by a policy.
#[derive(Clone, Debug, Default)]
pub struct ForgetRequest {
    /// Snapshot ids (unique prefixes) or `latest`; empty with a policy.
    pub snapshots: Vec<String>,
    /// Only snapshots of this name.
    pub name: Option<String>,
    /// The retention policy; empty with ids.
    pub policy: Policy,
    /// Say what would be removed, remove nothing.
    pub dry_run: bool,
}

/// The verdict on one snapshot, as `mover forget` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForgetRow {
    /// The snapshot.
    pub id: chunker::format::ObjectId,
    /// Its name (`?` when a named id has no readable manifest).
    pub name: String,
    /// When it was taken, ms since the epoch.
    pub created_ms: i64,
    /// Kept (true) or removed.
    pub keep: bool,
    /// Why: the rules that keep it, or `named` for an id given.
    pub reasons: Vec<String>,
}

/// Refuses a request that gives neither ids nor a policy, or both.
pub fn forget_check(request: &ForgetRequest) -> crate::Result<()> {
    use crate::Error;
    match (request.snapshots.is_empty(), request.policy.is_empty()) {
        (true, true) => Err(Error::Usage(
            "give the snapshots to forget, or a policy (--keep-last, --keep-daily, …, --keep-within); forget never removes every snapshot".into(),
        )),
        (false, false) => Err(Error::Usage(
            "give either snapshot ids or a --keep-* policy, not both".into(),
        )),
        _ => Ok(()),
    }
}

/// Judges the repository's snapshots by the request and, unless `dry_run`, deletes those
/// not kept (and their damage marks). Snapshots marked damaged are kept and do not count
/// toward a policy's rules: a damaged newest snapshot must not push out the last one that
/// restores. An id that matches nothing or several snapshots removes nothing.
pub fn forget(
    repo: &targets::Repository,
    request: &ForgetRequest,
) -> crate::Result<Vec<ForgetRow>> {
    forget_check(request)?;
    let all = repo.snapshots()?;
    let rows = match request.policy.is_empty() {
        true => named_rows(repo, request, &all)?,
        false => policy_rows(repo, request, &all)?,
    };
    let mut rows = rows;
    keep_locked(repo, &mut rows)?;
    if !request.dry_run {
        let backend = repo.backend();
        for row in rows.iter().filter(|r| !r.keep) {
            let hex = row.id.to_hex();
            backend.delete(&format!("snapshots/{hex}")).map_err(|e| {
                crate::Error::from(e).failed(format!("removal of snapshot {}", &hex[..12]), "")
            })?;
            backend.delete(&targets::gc::damage_key(&row.id))?;
            // A catalog that stays (a lock that outlives the snapshot's by seconds) is an
            // orphan that gc removes later.
            if let Err(e) = backend.delete(&targets::catalog_key(&row.id)) {
                tracing::info!("the file catalog of snapshot {} stays: {e}", &hex[..12]);
            }
        }
    }
    Ok(rows)
}

/// In a repository with Object Lock, a snapshot whose lock has not ended is kept, with the
/// reason `locked until <time>`: its removal waits until a later `forget` (issue 18).
fn keep_locked(repo: &targets::Repository, rows: &mut [ForgetRow]) -> crate::Result<()> {
    let backend = repo.backend();
    if backend.lock_policy()?.is_none() {
        return Ok(());
    }
    let now = targets::now_ms();
    for row in rows.iter_mut().filter(|r| !r.keep) {
        let key = format!("snapshots/{}", row.id.to_hex());
        match backend.locked_until_ms(&key) {
            Ok(Some(until)) if until > now => {
                row.keep = true;
                let when = crate::report::timestamp(until);
                row.reasons = vec![format!("locked until {when}")];
            }
            Ok(_) | Err(targets::Error::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

type Listed = [(chunker::format::ObjectId, chunker::format::Manifest)];

/// The snapshots named by id, all removed.
fn named_rows(
    repo: &targets::Repository,
    request: &ForgetRequest,
    all: &Listed,
) -> crate::Result<Vec<ForgetRow>> {
    use crate::Error;
    let ids = repo.snapshot_ids()?;
    let mut chosen = std::collections::BTreeSet::new();
    for spec in &request.snapshots {
        let spec_l = spec.to_ascii_lowercase();
        let id = if spec_l == "latest" {
            repo.find_snapshot(spec, request.name.as_deref())?.0
        } else {
            let found: Vec<_> = ids
                .iter()
                .filter(|id| !spec_l.is_empty() && id.to_hex().starts_with(&spec_l))
                .collect();
            match found.as_slice() {
                [one] => **one,
                [] => return Err(Error::Refused(format!(
                    "snapshot '{spec}' not found; list them with `mover snapshots`; nothing was removed"
                ))),
                many => return Err(Error::Refused(format!(
                    "snapshot '{spec}' is ambiguous: it matches {} snapshots; give more characters; nothing was removed",
                    many.len()
                ))),
            }
        };
        if let (Some(want), Some((_, m))) = (&request.name, all.iter().find(|(i, _)| *i == id)) {
            if &m.name != want {
                return Err(Error::Refused(format!(
                    "snapshot '{spec}' is named '{}', not '{want}'; nothing was removed",
                    m.name
                )));
            }
        }
        chosen.insert(id);
    }
    Ok(chosen
        .into_iter()
        .map(|id| {
            let (name, created_ms) = all
                .iter()
                .find(|(i, _)| *i == id)
                .map(|(_, m)| (m.name.clone(), m.created_ms))
                .unwrap_or_else(|| ("?".into(), 0));
            ForgetRow {
                id,
                name,
                created_ms,
                keep: false,
                reasons: vec!["named".into()],
            }
        })
        .collect())
}

/// Every snapshot of the request's name, judged by its policy.
fn policy_rows(
    repo: &targets::Repository,
    request: &ForgetRequest,
    all: &Listed,
) -> crate::Result<Vec<ForgetRow>> {
    let damaged = targets::gc::damaged_marks(&**repo.backend())?;
    let named = all
        .iter()
        .filter(|(_, m)| request.name.as_ref().is_none_or(|n| &m.name == n));
    let (marked, group): (Vec<_>, Vec<_>) = named.partition(|(id, _)| damaged.contains(id));
    let row = |(id, m): &(chunker::format::ObjectId, chunker::format::Manifest), keep, reasons| {
        ForgetRow {
            id: *id,
            name: m.name.clone(),
            created_ms: m.created_ms,
            keep,
            reasons,
        }
    };
    let why = "damaged: kept, not counted by the policy (`mover forget` it by id)";
    let mut rows: Vec<ForgetRow> = marked
        .iter()
        .map(|s| row(s, true, vec![why.to_string()]))
        .collect();
    let input: Vec<(&str, i64)> = group
        .iter()
        .map(|(_, m)| (m.name.as_str(), m.created_ms))
        .collect();
    for v in apply(&input, &request.policy) {
        rows.push(row(group[v.index], v.keep, v.reasons));
    }
    Ok(rows)
}
