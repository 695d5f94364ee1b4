//! The traffic report period: the flag's, or a shorter one the control plane asks for
//! (a LaneRollout judging its steps needs fresh counts), within bounds.

use std::time::Duration;

/// The report periods a control plane may ask for: a buggy or hostile one can neither
/// make every sidecar report in a busy loop nor silence the reports for long.
const MIN_ASKED_PERIOD: Duration = Duration::from_secs(1);
const MAX_ASKED_PERIOD: Duration = Duration::from_secs(60);

/// The report period after a snapshot asking for `asked` (ms), `current` before it,
/// `flag` the flag's: the shorter of the flag's and the asked one, read inside
/// `MIN_ASKED_PERIOD..=MAX_ASKED_PERIOD`. Absent means unchanged, except in the first
/// snapshot of a stream (which carries it whenever the control plane knows of it):
/// there it means a control plane that never asks, so the flag's.
pub(super) fn report_period(
    flag: Duration,
    current: Duration,
    asked: Option<u32>,
    first: bool,
) -> Duration {
    match asked {
        Some(ms) => {
            let asked = Duration::from_millis(u64::from(ms));
            flag.min(asked.clamp(MIN_ASKED_PERIOD, MAX_ASKED_PERIOD))
        }
        None if first => flag,
        None => current,
    }
}

/// A report ticker whose first tick is one `period` from now; a late tick delays the
/// next ones rather than bursting.
pub(super) fn ticker(period: Duration) -> tokio::time::Interval {
    let mut report = tokio::time::interval(period);
    report.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    report.reset();
    report
}

pub(super) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIVE: Duration = Duration::from_secs(5);
    const ONE: Duration = Duration::from_secs(1);

    /// The period after one later snapshot of a stream, from `current`.
    fn asked(flag: Duration, ms: u32) -> Duration {
        report_period(flag, Duration::from_secs(3), Some(ms), false)
    }

    #[test]
    fn the_shorter_of_the_flag_and_the_asked_period_wins() {
        assert_eq!(asked(FIVE, 1_000), ONE);
        assert_eq!(asked(FIVE, 2_500), Duration::from_millis(2_500));
        assert_eq!(asked(FIVE, 5_000), FIVE);
        // What a control plane without rollouts asks for: the flag's.
        assert_eq!(asked(FIVE, 30_000), FIVE);
        // A test's 100 ms flag stays below what a control plane may ask.
        let fast = Duration::from_millis(100);
        assert_eq!(asked(fast, 1_000), fast);
    }

    #[test]
    fn hostile_asked_periods_are_clamped() {
        // 0 or 1 ms would make every sidecar report in a busy loop (and 0 would make
        // the ticker panic).
        assert_eq!(asked(FIVE, 0), MIN_ASKED_PERIOD);
        assert_eq!(asked(FIVE, 1), MIN_ASKED_PERIOD);
        // A huge one cannot stretch the flag's period; with a long flag, 60 s at most.
        assert_eq!(asked(FIVE, u32::MAX), FIVE);
        let hour = Duration::from_secs(3_600);
        assert_eq!(asked(hour, u32::MAX), MAX_ASKED_PERIOD);
    }

    #[test]
    fn an_absent_period_is_unchanged_except_from_a_control_plane_that_never_sends_one() {
        // A later snapshot without it (endpoints only): unchanged.
        assert_eq!(report_period(FIVE, ONE, None, false), ONE);
        // A stream's first snapshot without it: a control plane that does not know
        // of periods (older, mid-upgrade); the one of the previous stream is stale.
        assert_eq!(report_period(FIVE, ONE, None, true), FIVE);
        assert_eq!(report_period(FIVE, FIVE, Some(1_000), true), ONE);
    }
}
