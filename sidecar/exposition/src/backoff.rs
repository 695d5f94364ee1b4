//! The one retry backoff of graylane's background loops (the sidecar's control-plane
//! stream and certificate renewal, the control plane's etcd follower and leader
//! campaign): doubling from a first wait to a cap, each wait jittered ±50% so a fleet
//! restarted together does not retry in lockstep.

use std::time::Duration;

/// Waits between attempts of one retry loop.
#[derive(Debug)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub const fn new(first: Duration, max: Duration) -> Self {
        Self {
            first,
            max,
            next: first,
        }
    }

    /// The wait before the next attempt (jittered); the one after is twice as long,
    /// up to the cap.
    pub fn next_wait(&mut self) -> Duration {
        let wait = self.next.mul_f64(0.5 + fastrand::f64());
        self.next = (self.next * 2).min(self.max);
        wait
    }

    /// After a success: the next failure waits the first wait again.
    pub fn reset(&mut self) {
        self.next = self.first;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_the_cap_with_jitter_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(400));
        let bounds = [100, 200, 400, 400];
        for base in bounds {
            let w = b.next_wait();
            let base = Duration::from_millis(base);
            assert!(w >= base / 2 && w <= base * 3 / 2, "{w:?} around {base:?}");
        }
        b.reset();
        assert!(b.next_wait() <= Duration::from_millis(150));
    }
}
