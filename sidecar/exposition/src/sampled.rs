//! One log line per period for something that can happen thousands of times a second
//! (a failing upstream, `accept(2)` out of file descriptors): the first is logged at
//! once, then at most one a period, each saying how many were not. An operator sees
//! that it happens and how often, and a storm does not become a disk-filling log.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Shared by every thread (a `static` is fine); lock-free.
pub struct Sampled {
    period_ms: u64,
    /// Milliseconds since the process's first sample when the next line may go out.
    next_ms: AtomicU64,
    /// Events since the last line, this one included.
    since: AtomicU64,
}

impl Sampled {
    pub const fn new(period: Duration) -> Self {
        Self {
            period_ms: period.as_secs() * 1000 + period.subsec_millis() as u64,
            next_ms: AtomicU64::new(0),
            since: AtomicU64::new(0),
        }
    }

    /// Counts an event; `Some(n)` when this one is to be logged, `n` being how many
    /// were not since the last line.
    pub fn sample(&self) -> Option<u64> {
        self.sample_at(elapsed_ms())
    }

    fn sample_at(&self, now_ms: u64) -> Option<u64> {
        self.since.fetch_add(1, Ordering::Relaxed);
        let next = self.next_ms.load(Ordering::Relaxed);
        if now_ms < next {
            return None;
        }
        // One thread wins the line; the others count toward the next one.
        self.next_ms
            .compare_exchange(
                next,
                now_ms + self.period_ms,
                Ordering::Relaxed,
                Ordering::Relaxed,
            )
            .ok()?;
        Some(self.since.swap(0, Ordering::Relaxed).saturating_sub(1))
    }
}

fn elapsed_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let ms = START.get_or_init(Instant::now).elapsed().as_millis();
    u64::try_from(ms).unwrap_or(u64::MAX)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_first_is_logged_then_one_a_period_with_the_count_of_the_others() {
        let s = Sampled::new(Duration::from_secs(1));
        assert_eq!(s.sample_at(0), Some(0));
        assert_eq!(s.sample_at(10), None);
        assert_eq!(s.sample_at(999), None);
        assert_eq!(s.sample_at(1000), Some(2));
        assert_eq!(s.sample_at(1500), None);
        assert_eq!(
            s.sample_at(5000),
            Some(1),
            "a quiet spell: the next is logged at once"
        );
        assert_eq!(s.sample_at(6000), Some(0));
    }

    #[test]
    fn threads_racing_log_one_line_and_lose_no_count() {
        let s = Sampled::new(Duration::from_secs(3600));
        let logged: u64 = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..4)
                .map(|_| scope.spawn(|| (0..1000).filter_map(|_| s.sample_at(0)).count() as u64))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(logged, 1);
        assert_eq!(s.sample_at(3_600_000), Some(3999));
    }
}
