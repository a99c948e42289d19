//! Durations counted in buckets 5 % wide, so that percentiles of millions of fetches come
//! without keeping them: [`Latencies::percentile`] is within 2.5 % of the true value.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Bucket `k` holds durations of `GROWTH^k` to `GROWTH^(k+1)` microseconds.
const GROWTH: f64 = 1.05;
/// Enough buckets for about half an hour; longer durations count in the last.
const BUCKETS: usize = 440;

pub(crate) struct Latencies {
    counts: Vec<AtomicU64>,
}

impl Latencies {
    pub(crate) fn new() -> Self {
        Latencies {
            counts: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    pub(crate) fn record(&self, d: Duration) {
        let us = d.as_secs_f64() * 1e6;
        let k = if us <= 1.0 {
            0
        } else {
            ((us.ln() / GROWTH.ln()) as usize).min(BUCKETS - 1)
        };
        self.counts[k].fetch_add(1, Ordering::Relaxed);
    }

    /// Durations recorded.
    pub(crate) fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// The duration that a fraction `p` (0 < p ≤ 1) of those recorded do not exceed (the
    /// middle of its bucket); `None` before any was recorded.
    pub(crate) fn percentile(&self, p: f64) -> Option<Duration> {
        let counts: Vec<u64> = (self.counts.iter())
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        let rank = ((p * total as f64).ceil() as u64).clamp(1, total.max(1));
        let mut seen = 0;
        let k = counts.iter().position(|&c| {
            seen += c;
            seen >= rank
        })?;
        let us = GROWTH.powf(k as f64 + 0.5);
        Some(Duration::from_secs_f64(us / 1e6))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_within_the_bucket_width() {
        let l = Latencies::new();
        assert_eq!((l.count(), l.percentile(0.5)), (0, None));
        // 1..=1000 ms: the median is 500 ms, the 99th percentile 990 ms.
        for ms in 1..=1000 {
            l.record(Duration::from_millis(ms));
        }
        let near = |d: Duration, ms: f64| (d.as_secs_f64() * 1e3 / ms - 1.0).abs() < 0.03;
        assert_eq!(l.count(), 1000);
        assert!(
            near(l.percentile(0.5).unwrap(), 500.0),
            "{:?}",
            l.percentile(0.5)
        );
        assert!(
            near(l.percentile(0.99).unwrap(), 990.0),
            "{:?}",
            l.percentile(0.99)
        );
        assert!(
            near(l.percentile(1.0).unwrap(), 1000.0),
            "{:?}",
            l.percentile(1.0)
        );
    }

    #[test]
    fn tiny_and_huge_durations_land_in_the_end_buckets() {
        let l = Latencies::new();
        l.record(Duration::from_nanos(10));
        l.record(Duration::from_secs(100_000));
        assert!(l.percentile(0.5).unwrap() < Duration::from_micros(2));
        assert!(l.percentile(1.0).unwrap() > Duration::from_secs(600));
    }
}
