//! Percentiles of a timing sample.

use std::time::Duration;

/// Nearest-rank percentiles of a sample.
pub struct Stats {
    sorted: Vec<Duration>,
}

impl Stats {
    pub fn of(mut sample: Vec<Duration>) -> Self {
        sample.sort();
        Self { sorted: sample }
    }

    /// Nearest rank: the smallest value with at least `p`% of the sample at or below.
    pub fn pct(&self, p: usize) -> Duration {
        let n = self.sorted.len();
        if n == 0 {
            return Duration::ZERO;
        }
        let rank = (p * n).div_ceil(100).clamp(1, n);
        self.sorted[rank - 1]
    }

    pub fn max(&self) -> Duration {
        self.sorted.last().copied().unwrap_or_default()
    }
}
