//! `memory:` — revisions in a map; gone when the process ends. For tests and demos.

use std::collections::BTreeMap;
use std::sync::Mutex;

use tokio::sync::watch;

use super::records::Records;
use super::{CaPem, MIN_HISTORY, Record, Revision, RevisionMeta, Store, StoreError, StoreFuture};

/// An in-process store. Commits are serialised by one mutex, never held across `.await`.
pub struct MemoryStore {
    inner: Mutex<BTreeMap<u64, Revision>>,
    limit: usize,
    /// The mesh CA, once created: the mutex makes get-or-create atomic in the process.
    ca: Mutex<Option<CaPem>>,
    /// Tells the push hub the newest revision number.
    notify: watch::Sender<u64>,
    /// Rollout progress and the like; every call is one critical section.
    records: Mutex<Records>,
    /// Always true: one process, one leader. Kept so receivers never see it closed.
    leader: watch::Sender<bool>,
}

impl MemoryStore {
    /// An empty store keeping at least `MIN_HISTORY` and at most `history_limit` revisions.
    pub fn new(history_limit: usize) -> Self {
        Self {
            inner: Mutex::new(BTreeMap::new()),
            limit: history_limit.max(MIN_HISTORY),
            ca: Mutex::new(None),
            notify: watch::channel(0).0,
            records: Mutex::new(Records::default()),
            leader: watch::channel(true).0,
        }
    }

    fn records(&self) -> std::sync::MutexGuard<'_, Records> {
        // Every mutation checks first and changes after, without panicking in
        // between, so a poisoned lock is still consistent.
        self.records.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Revision>> {
        // A panic while holding the lock cannot leave the map half-updated (every
        // mutation is a single insert/remove), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub(super) fn empty_revision() -> Revision {
    Revision {
        number: 0,
        rules: String::new(),
        meta: RevisionMeta::default(),
    }
}

impl Store for MemoryStore {
    fn current(&self) -> StoreFuture<'_, Revision> {
        let rev = self.lock().last_key_value().map(|(_, r)| r.clone());
        Box::pin(async move { Ok(rev.unwrap_or_else(empty_revision)) })
    }

    fn commit(&self, expected: u64, rules: String, meta: RevisionMeta) -> StoreFuture<'_, u64> {
        let result = {
            let mut map = self.lock();
            let actual = map.last_key_value().map_or(0, |(n, _)| *n);
            if actual == expected {
                let number = actual + 1;
                map.insert(
                    number,
                    Revision {
                        number,
                        rules,
                        meta,
                    },
                );
                while map.len() > self.limit {
                    map.pop_first();
                }
                Ok(number)
            } else {
                Err(StoreError::Conflict { expected, actual })
            }
        };
        if let Ok(n) = result {
            self.notify.send_replace(n);
        }
        Box::pin(async move { result })
    }

    fn history(&self, limit: usize) -> StoreFuture<'_, Vec<(u64, RevisionMeta)>> {
        let map = self.lock();
        let take = if limit == 0 { usize::MAX } else { limit };
        let list = map
            .iter()
            .rev()
            .take(take)
            .map(|(n, r)| (*n, r.meta.clone()))
            .collect();
        Box::pin(async move { Ok(list) })
    }

    fn get(&self, number: u64) -> StoreFuture<'_, Option<Revision>> {
        let rev = self.lock().get(&number).cloned();
        Box::pin(async move { Ok(rev) })
    }

    fn watch(&self) -> watch::Receiver<u64> {
        self.notify.subscribe()
    }

    fn ca_get_or_create(&self, candidate: CaPem) -> StoreFuture<'_, CaPem> {
        // Poisoning cannot leave a half-set Option (one assignment), so it is ignored.
        let mut ca = self.ca.lock().unwrap_or_else(|e| e.into_inner());
        let stored = ca.get_or_insert(candidate).clone();
        drop(ca);
        Box::pin(async move { Ok(stored) })
    }

    fn record_get(&self, key: &str) -> StoreFuture<'_, Option<Record>> {
        let record = self.records().get(key);
        Box::pin(async move { Ok(record) })
    }

    fn record_list(&self, prefix: &str) -> StoreFuture<'_, Vec<(String, Record)>> {
        let list = self.records().list(prefix);
        Box::pin(async move { Ok(list) })
    }

    fn record_put(
        &self,
        key: &str,
        value: String,
        expected: u64,
        _fenced: bool,
    ) -> StoreFuture<'_, u64> {
        // Fenced or not: this process always leads its own memory.
        let result = self.records().put(key, value, expected);
        Box::pin(async move { result })
    }

    fn record_delete(&self, key: &str, expected: u64) -> StoreFuture<'_, ()> {
        let result = self.records().delete(key, expected).map(drop);
        Box::pin(async move { result })
    }

    fn leadership(&self, _holder: &str) -> watch::Receiver<bool> {
        self.leader.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::MemoryStore;

    crate::store::conformance::suite!(|_dir: &std::path::Path| async {
        (MemoryStore::new(crate::store::MIN_HISTORY), ())
    });

    #[test]
    fn leads_at_once() {
        use crate::store::Store;
        let store = MemoryStore::new(crate::store::MIN_HISTORY);
        assert!(*store.leadership("a").borrow());
    }
}
