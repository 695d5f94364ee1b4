//! The revision follower: keeps the store's `watch` channel on `P/rules/current`.
//! When the etcd watch is cancelled (its start revision was compacted), breaks, or
//! etcd changes leader, it reads the current number again and watches on from the
//! etcd revision of that read, so a change is never missed. What it publishes is
//! what the key holds, lower numbers too: after etcd was restored from a backup its
//! numbers go back (and are used again for other rules), and a hand-edited key can
//! go back too. A fresh read wakes the subscribers even when the number is the same,
//! since only the rules under it may differ. The subscriber reads the store again on
//! every wake-up, so an event that arrives late (a commit's own `publish` came first)
//! costs one read and changes nothing.

use std::time::Duration;

use etcd_client::{Client, EventType, WatchOptions};
use tokio::sync::watch;

use super::{parse_number, unavailable};
use crate::store::StoreError;
use graylane_exposition::backoff::Backoff;

/// Between attempts to re-establish the watch: doubles up to the last.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(3);

/// Keeps `notify` on the current revision number for as long as the store lives.
pub(super) async fn follow(client: Client, key: String, notify: watch::Sender<u64>) {
    let mut backoff = Backoff::new(RETRY_FIRST, RETRY_MAX);
    loop {
        match follow_once(client.clone(), &key, &notify).await {
            // Cancelled (compacted) or ended: read again and watch on, at once.
            Ok(()) => backoff.reset(),
            Err(e) => {
                tracing::warn!(error = %e, "etcd watch lost; retrying");
                tokio::time::sleep(backoff.next_wait()).await;
            }
        }
    }
}

/// Reads the number, publishes it, then watches from the etcd revision right after
/// that read: nothing can change unseen between the two.
async fn follow_once(
    mut client: Client,
    key: &str,
    notify: &watch::Sender<u64>,
) -> Result<(), StoreError> {
    let response = client.get(key, None).await.map_err(unavailable)?;
    if let Some(number) = parse_number(response.kvs().first().map(|kv| kv.value()))? {
        // Read whatever it is: the subscriber compares the rules themselves.
        notify.send_modify(|current| *current = number);
    }
    let read_at = response.header().map_or(0, |h| h.revision());
    watch_from(client, key, read_at + 1, notify).await
}

/// Publishes every new number from etcd revision `start` on. Returns `Ok` when etcd
/// cancels the watch (`start` was compacted away) or ends it: the caller reads again.
pub(super) async fn watch_from(
    mut client: Client,
    key: &str,
    start: i64,
    notify: &watch::Sender<u64>,
) -> Result<(), StoreError> {
    let options = WatchOptions::new()
        .with_start_revision(start)
        .with_progress_notify();
    let mut stream = client
        .watch(key, Some(options))
        .await
        .map_err(unavailable)?;
    while let Some(message) = stream.message().await.map_err(unavailable)? {
        if message.canceled() {
            tracing::info!(
                compacted_to = message.compact_revision(),
                reason = message.cancel_reason(),
                "etcd watch cancelled; reading the current revision again"
            );
            return Ok(());
        }
        for event in message.events() {
            if event.event_type() == EventType::Put
                && let Some(number) = parse_number(event.kv().map(|kv| kv.value()))?
            {
                notify.send_if_modified(|current| {
                    let moved = *current != number;
                    *current = number;
                    moved
                });
            }
        }
    }
    Ok(())
}

/// Moves `notify` forward only: what a commit of this store publishes.
pub(super) fn publish(notify: &watch::Sender<u64>, number: u64) {
    notify.send_if_modified(|current| {
        let newer = number > *current;
        if newer {
            *current = number;
        }
        newer
    });
}
