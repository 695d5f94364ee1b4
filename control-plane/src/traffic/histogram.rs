//! The latency histogram of traffic reports: fixed buckets, merged by adding counts,
//! quantiles by linear interpolation inside the bucket that holds them.

/// Upper bounds (ms) of the buckets; one more bucket (no upper bound) follows. Must
/// equal the sidecar's `traffic::LATENCY_BOUNDS_MS` (reports carry their bounds, and a
/// report with other bounds keeps its counts but not its histogram).
///
/// Why these: 1 ms (a hop inside a node) to 10 s (past every default timeout) in
/// steps of at most 2× (1.5× above 10 ms), so an interpolated p50/p99 is within about
/// one step's width of the truth at every scale, in 24 counts per series.
pub(crate) const LATENCY_BOUNDS_MS: [f64; 23] = [
    1.0, 2.0, 3.0, 5.0, 7.0, 10.0, 15.0, 20.0, 30.0, 50.0, 70.0, 100.0, 150.0, 200.0, 300.0, 500.0,
    700.0, 1000.0, 1500.0, 2000.0, 3000.0, 5000.0, 10000.0,
];

/// Buckets per histogram: the bounds and the open-ended last one.
pub(crate) const BUCKETS: usize = LATENCY_BOUNDS_MS.len() + 1;

/// The `q` quantile (0..=1) of a histogram in milliseconds; `None` when it is empty.
///
/// Interpolates linearly inside the bucket holding the quantile (from 0 for the first
/// bucket); a quantile in the open-ended bucket is reported as its lower bound, the
/// largest value the buckets can tell.
pub(crate) fn quantile(buckets: &[u64; BUCKETS], q: f64) -> Option<f64> {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return None;
    }
    // The rank of the quantile among the samples, at least the first one.
    let rank = (q.clamp(0.0, 1.0) * total as f64).max(1.0);
    let mut below = 0u64;
    for (i, &count) in buckets.iter().enumerate() {
        if count > 0 && (below + count) as f64 >= rank {
            let lower = if i == 0 {
                0.0
            } else {
                LATENCY_BOUNDS_MS[i - 1]
            };
            let Some(&upper) = LATENCY_BOUNDS_MS.get(i) else {
                return Some(lower);
            };
            let within = (rank - below as f64) / count as f64;
            return Some(lower + (upper - lower) * within);
        }
        below += count;
    }
    // Unreachable for a non-empty histogram (the last bucket reaches `total`).
    LATENCY_BOUNDS_MS.last().copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(counts: &[(usize, u64)]) -> [u64; BUCKETS] {
        let mut buckets = [0; BUCKETS];
        for &(i, n) in counts {
            buckets[i] = n;
        }
        buckets
    }

    #[test]
    fn an_empty_histogram_has_no_quantiles() {
        assert_eq!(quantile(&[0; BUCKETS], 0.5), None);
    }

    #[test]
    fn quantiles_interpolate_inside_their_bucket() {
        // 100 samples in (10, 15] ms: p50 halfway through, p99 near its top.
        let h = with(&[(6, 100)]);
        assert_eq!(quantile(&h, 0.5), Some(12.5));
        assert!((quantile(&h, 0.99).unwrap() - 14.95).abs() < 1e-9);
    }

    #[test]
    fn p99_lands_in_the_slow_tail() {
        // 98 fast ((0, 1] ms), 2 slow ((500, 700] ms): p50 fast, p99 in the tail.
        let h = with(&[(0, 98), (16, 2)]);
        assert!(quantile(&h, 0.5).unwrap() <= 1.0);
        let p99 = quantile(&h, 0.99).unwrap();
        assert!((500.0..=700.0).contains(&p99), "{p99}");
    }

    #[test]
    fn the_open_ended_bucket_reports_its_lower_bound() {
        let h = with(&[(BUCKETS - 1, 3)]);
        assert_eq!(quantile(&h, 0.99), Some(10000.0));
    }

    #[test]
    fn bounds_ascend() {
        assert!(LATENCY_BOUNDS_MS.windows(2).all(|w| w[0] < w[1]));
    }
}
