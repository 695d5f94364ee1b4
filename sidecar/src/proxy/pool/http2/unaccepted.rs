//! Which unanswered streams a connection may reset now, without the app taking it
//! for a rapid-reset attack on the connection every other request shares.
//!
//! An h2 server counts the streams its peer reset before it accepted them (read
//! their HEADERS but not yet handed them to the app), and closes the connection past
//! a bound: GOAWAY ENHANCE_YOUR_CALM past 20 in hyper's server (h2's default, so
//! tonic's and most Rust apps'). A busy app reads late, so a client cancelling many
//! requests at once — or one this sidecar cut off — makes the app read all of their
//! HEADERS and resets in one go, and every request on the connection fails with it.
//!
//! An app that has answered a stream has accepted every stream opened before it (h2
//! servers accept in the order streams were opened). So a reset of a stream older
//! than the newest answered one is safe; a younger one is *unconfirmed* until a
//! later stream is answered. At most [`MAX_UNCONFIRMED`] go out unconfirmed; past
//! that a stream is held open, its answer read and dropped, until the app answers
//! it or a later stream, or [`HOLD_LIMIT`] passes. The app does the work of a
//! cancelled request it would have started anyway; the connection stays up. A
//! stream whose request body failed is given up the same way: held, the app waits
//! for the rest of the body a little longer.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

/// Half of hyper's bound (20): the margin is for the resets h2 sends on its own (an
/// answer it cannot take, a stream the app overran), which nothing here counts.
pub(super) const MAX_UNCONFIRMED: usize = 10;

/// How long a held stream waits for its answer before it is reset anyway: an app
/// that has read nothing for this long is not busy but stuck, and a slot on its
/// connection is worth more than its verdict on one reset.
pub(super) const HOLD_LIMIT: Duration = Duration::from_secs(5);

#[derive(Default)]
pub(super) struct Unaccepted {
    /// Set while some reset is unconfirmed or some stream held: only then is an
    /// answer's stream id (a lock in h2) worth reading.
    watching: AtomicBool,
    /// The highest stream id answered while watching (a lower bound otherwise).
    answered: AtomicU32,
    state: Mutex<State>,
    /// Wakes the held streams when `answered` moves.
    moved: Notify,
}

#[derive(Default)]
struct State {
    /// Streams reset younger than every answered one, oldest first.
    unconfirmed: Vec<u32>,
    /// Streams held open, waiting for [`Unaccepted::accepted`] or their own answer.
    held: usize,
}

impl State {
    fn watching(&self) -> bool {
        !self.unconfirmed.is_empty() || self.held > 0
    }
}

impl Unaccepted {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether answers should be reported with [`Self::answered`].
    pub(super) fn watching(&self) -> bool {
        self.watching.load(Ordering::Relaxed)
    }

    /// The app answered stream `id`: the resets before it are confirmed, and the
    /// streams held before it may go.
    pub(super) fn answered(&self, id: u32) {
        let answered = self.answered.fetch_max(id, Ordering::Relaxed).max(id);
        let mut state = self.state();
        state.unconfirmed.retain(|r| *r > answered);
        self.watching.store(state.watching(), Ordering::Relaxed);
        if state.held > 0 {
            self.moved.notify_waiters();
        }
    }

    /// Whether unanswered stream `id` may be reset now (then it is counted until a
    /// later stream is answered); if not, it is held, and [`Self::release`]d once
    /// its hold ends. (An answer missed while `watching` was being set only keeps a
    /// reset counted longer: the error is on the safe side.)
    pub(super) fn may_reset(&self, id: u32) -> bool {
        let mut state = self.state();
        let answered = self.answered.load(Ordering::Relaxed);
        state.unconfirmed.retain(|r| *r > answered);
        if id <= answered || state.unconfirmed.contains(&id) {
            return true;
        }
        self.watching.store(true, Ordering::Relaxed);
        if state.unconfirmed.len() >= MAX_UNCONFIRMED {
            state.held += 1;
            return false;
        }
        state.unconfirmed.push(id);
        true
    }

    /// The hold of a stream [`Self::may_reset`] refused has ended.
    pub(super) fn release(&self) {
        let mut state = self.state();
        state.held -= 1;
        self.watching.store(state.watching(), Ordering::Relaxed);
    }

    /// Resolves once the app has accepted stream `id`: a stream as young or younger
    /// was answered.
    pub(super) async fn accepted(&self, id: u32) {
        loop {
            // Registered before the check: an answer in between still wakes it.
            let moved = self.moved.notified();
            if self.answered.load(Ordering::Relaxed) >= id {
                return;
            }
            moved.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;

    use super::*;

    #[test]
    fn resets_of_unaccepted_streams_stop_at_the_bound_until_a_later_stream_is_answered() {
        let resets = Unaccepted::default();
        assert!(!resets.watching(), "nothing to watch before a reset");
        let ids: Vec<u32> = (0..12).map(|i| 2 * i + 1).collect();
        let allowed: Vec<bool> = ids.iter().map(|id| resets.may_reset(*id)).collect();
        assert_eq!(allowed.iter().filter(|a| **a).count(), MAX_UNCONFIRMED);
        assert!(!allowed[MAX_UNCONFIRMED] && !allowed[MAX_UNCONFIRMED + 1]);
        assert!(resets.watching());
        // An answer on a stream younger than some of them confirms those before it:
        // 1 to 7, four of the ten.
        resets.answered(7);
        assert!(
            resets.may_reset(5),
            "older than an answered stream: accepted"
        );
        assert!([25, 27, 29, 31].iter().all(|id| resets.may_reset(*id)));
        assert!(!resets.may_reset(33), "the bound again");
        // The three holds end (their streams answered or given up at the limit).
        (0..3).for_each(|_| resets.release());
        // A stream opened after all of them answered: every one was accepted.
        resets.answered(35);
        assert!(!resets.watching(), "nothing left to confirm");
        assert!(
            (37..)
                .step_by(2)
                .take(MAX_UNCONFIRMED)
                .all(|id| resets.may_reset(id))
        );
        assert!(!resets.may_reset(99));
    }

    #[test]
    fn a_held_stream_is_accepted_once_a_stream_as_young_is_answered() {
        let resets = Unaccepted::default();
        assert!(
            (1..)
                .step_by(2)
                .take(MAX_UNCONFIRMED)
                .all(|id| resets.may_reset(id))
        );
        assert!(resets.may_reset(19), "counted already: not twice");
        assert!(!resets.may_reset(21), "held");
        // The ten are confirmed; the held one is not, and keeps answers watched.
        resets.answered(19);
        assert!(resets.watching());
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let mut accepted = std::pin::pin!(resets.accepted(21));
        assert!(accepted.as_mut().poll(&mut cx).is_pending());
        resets.answered(23);
        assert!(accepted.as_mut().poll(&mut cx).is_ready());
        resets.release();
        assert!(!resets.watching(), "nothing held, nothing unconfirmed");
    }

    #[test]
    fn an_answer_never_moves_the_mark_back() {
        let resets = Unaccepted::default();
        resets.answered(41);
        resets.answered(9);
        assert!(resets.may_reset(39), "39 < 41: accepted");
        for id in (43..).step_by(2).take(MAX_UNCONFIRMED) {
            assert!(resets.may_reset(id));
        }
        assert!(!resets.may_reset(101));
    }
}
