//! `file:PATH` — the default embedded store: one JSON file per revision on local disk.
//!
//! ```text
//! PATH/lock                    held (flock) while a control plane uses PATH
//! PATH/revisions/00000000000000000042.json   revision 42, whole rule set + meta
//! PATH/revisions/.tmp-43       a commit in progress (ignored and removed at open)
//! PATH/ca-key.pem, PATH/ca.pem the mesh CA's key and certificate (mode 0600)
//! PATH/records/                one file per record, and the version counter
//!                              (mode 0600; `file/record_files.rs`)
//! ```
//!
//! Crash safety: a revision is written to a temp file, fsynced, renamed to its final
//! name, then the directory is fsynced. rename(2) is atomic, so after a crash at any
//! moment a revision file is either absent or complete; the current revision is the
//! highest complete file. A commit is acknowledged only after the directory fsync, so
//! an acknowledged revision survives power loss. The CA files are written the same way,
//! the key first: `ca.pem` present means both are complete. Records too: a record
//! write is acknowledged after the directory fsync.

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::{Mutex, watch};

use super::records::Records;

mod record_files;
use super::{CaPem, MIN_HISTORY, Record, Revision, RevisionMeta, Store, StoreError, StoreFuture};

/// The embedded on-disk store.
pub struct FileStore {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    limit: usize,
    /// Serialises commits within this process; the `lock` file keeps other processes out.
    state: Mutex<State>,
    /// Serialises CA get-or-create within this process. Not `state`: creating the CA
    /// fsyncs twice, and reads of the rules (`/ready`) must not wait for that.
    ca: Mutex<()>,
    /// The records as on disk; held across a record write (one writer at a time).
    records: Mutex<Records>,
    notify: watch::Sender<u64>,
    /// Always true: the directory lock already makes this process the only one.
    leader: watch::Sender<bool>,
    /// Held for the store's lifetime: the OS releases the lock when the process dies.
    _lock: File,
}

struct State {
    current: Revision,
    /// Kept revision numbers with their meta, oldest first.
    history: Vec<(u64, RevisionMeta)>,
}

impl FileStore {
    /// Opens (creating if needed) the store at `dir`. Fails when another process holds
    /// it, or when a revision file cannot be parsed.
    pub async fn open(dir: PathBuf, history_limit: usize) -> Result<Self, StoreError> {
        let limit = history_limit.max(MIN_HISTORY);
        let (lock, state, records) = tokio::task::spawn_blocking({
            let dir = dir.clone();
            move || open_dir(&dir)
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("open task failed: {e}")))??;
        let notify = watch::channel(state.current.number).0;
        Ok(Self {
            inner: Arc::new(Inner {
                dir,
                limit,
                state: Mutex::new(state),
                ca: Mutex::new(()),
                records: Mutex::new(records),
                notify,
                leader: watch::channel(true).0,
                _lock: lock,
            }),
        })
    }
}

fn unavailable(what: &str, path: &Path, e: std::io::Error) -> StoreError {
    StoreError::Unavailable(format!("{what} {}: {e}", path.display()))
}

fn revisions_dir(dir: &Path) -> PathBuf {
    dir.join("revisions")
}

fn revision_path(dir: &Path, number: u64) -> PathBuf {
    revisions_dir(dir).join(format!("{number:020}.json"))
}

fn open_dir(dir: &Path) -> Result<(File, State, Records), StoreError> {
    let revs = revisions_dir(dir);
    fs::create_dir_all(&revs).map_err(|e| unavailable("create", &revs, e))?;
    let lock_path = dir.join("lock");
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| unavailable("open", &lock_path, e))?;
    lock.try_lock().map_err(|_| {
        StoreError::Unavailable(format!(
            "{} is in use by another graylane-control process",
            dir.display()
        ))
    })?;

    let mut numbers = Vec::new();
    for entry in fs::read_dir(&revs).map_err(|e| unavailable("read", &revs, e))? {
        let entry = entry.map_err(|e| unavailable("read", &revs, e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(".tmp-") {
            // A commit that never reached its rename: it was never acknowledged.
            let _ = fs::remove_file(entry.path());
        } else if let Some(n) = name
            .strip_suffix(".json")
            .and_then(|n| n.parse::<u64>().ok())
        {
            numbers.push(n);
        }
    }
    numbers.sort_unstable();
    let mut history = Vec::with_capacity(numbers.len());
    let mut current = super::memory::empty_revision();
    for n in numbers {
        let rev = read_revision(dir, n)?;
        history.push((n, rev.meta.clone()));
        current = rev;
    }
    Ok((lock, State { current, history }, record_files::read(dir)?))
}

fn read_revision(dir: &Path, number: u64) -> Result<Revision, StoreError> {
    let path = revision_path(dir, number);
    let bytes = fs::read(&path).map_err(|e| unavailable("read", &path, e))?;
    let rev: Revision = serde_json::from_slice(&bytes)
        .map_err(|e| StoreError::Corrupt(format!("{}: {e}", path.display())))?;
    if rev.number != number {
        return Err(StoreError::Corrupt(format!(
            "{} holds revision {}",
            path.display(),
            rev.number
        )));
    }
    Ok(rev)
}

/// temp file → fsync → rename → fsync(dir): see the module docs.
fn write_revision(dir: &Path, rev: &Revision) -> Result<(), StoreError> {
    let revs = revisions_dir(dir);
    let tmp = revs.join(format!(".tmp-{}", rev.number));
    let bytes = serde_json::to_vec(rev)
        .map_err(|e| StoreError::Unavailable(format!("encode revision: {e}")))?;
    let mut file = File::create(&tmp).map_err(|e| unavailable("create", &tmp, e))?;
    file.write_all(&bytes)
        .map_err(|e| unavailable("write", &tmp, e))?;
    file.sync_all().map_err(|e| unavailable("fsync", &tmp, e))?;
    drop(file);
    let target = revision_path(dir, rev.number);
    fs::rename(&tmp, &target).map_err(|e| unavailable("rename", &target, e))?;
    File::open(&revs)
        .and_then(|d| d.sync_all())
        .map_err(|e| unavailable("fsync", &revs, e))
}

/// temp file (created mode 0600) → fsync → rename → fsync(dir).
fn write_private(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
    let tmp = dir.join(format!(".tmp-{name}"));
    let mut file = File::options()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| unavailable("create", &tmp, e))?;
    file.write_all(bytes)
        .map_err(|e| unavailable("write", &tmp, e))?;
    file.sync_all().map_err(|e| unavailable("fsync", &tmp, e))?;
    drop(file);
    let target = dir.join(name);
    fs::rename(&tmp, &target).map_err(|e| unavailable("rename", &target, e))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| unavailable("fsync", dir, e))
}

/// The caller holds the directory lock and the CA mutex, so nothing else is writing.
fn ca_get_or_create(dir: &Path, candidate: CaPem) -> Result<CaPem, StoreError> {
    let (cert_path, key_path) = (dir.join("ca.pem"), dir.join("ca-key.pem"));
    match fs::read_to_string(&cert_path) {
        Ok(cert) => {
            let key = fs::read_to_string(&key_path).map_err(|e| {
                StoreError::Corrupt(format!("{} without its key: {e}", cert_path.display()))
            })?;
            return Ok(CaPem { cert, key });
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(unavailable("read", &cert_path, e)),
    }
    // A crash between the two renames leaves a key without ca.pem: overwritten here.
    write_private(dir, "ca-key.pem", candidate.key.as_bytes())?;
    write_private(dir, "ca.pem", candidate.cert.as_bytes())?;
    Ok(candidate)
}

impl Inner {
    async fn ca_get_or_create(&self, candidate: CaPem) -> Result<CaPem, StoreError> {
        // Held across the blocking I/O on purpose: one get-or-create at a time in this
        // process (the `lock` file keeps other processes out). The CA files are
        // written by nothing else, so the rules' lock is not needed.
        let _ca = self.ca.lock().await;
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || ca_get_or_create(&dir, candidate))
            .await
            .map_err(|e| StoreError::Unavailable(format!("CA task failed: {e}")))?
    }

    /// Applies `change` to a copy of the records, writes what it changed crash-safely
    /// (the record it names: `Some(key)`), and only then makes it the records: a
    /// failed write changes nothing.
    async fn change_records<T: Send + 'static>(
        &self,
        change: impl FnOnce(&mut Records) -> Result<(T, Option<String>), StoreError>,
    ) -> Result<T, StoreError> {
        // Held across the write on purpose: record writes are serialised.
        let mut records = self.records.lock().await;
        let mut next = records.clone();
        let (answer, changed) = change(&mut next)?;
        let Some(key) = changed else {
            return Ok(answer);
        };
        let dir = self.dir.clone();
        let (record, counter) = (next.get(&key), next.counter());
        tokio::task::spawn_blocking(move || match record {
            Some(record) => record_files::write(&dir, &key, &record),
            None => record_files::delete(&dir, &key, counter),
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("records task failed: {e}")))??;
        *records = next;
        Ok(answer)
    }

    async fn commit(
        &self,
        expected: u64,
        rules: String,
        meta: RevisionMeta,
    ) -> Result<u64, StoreError> {
        let mut state = self.state.lock().await;
        let actual = state.current.number;
        if actual != expected {
            return Err(StoreError::Conflict { expected, actual });
        }
        let rev = Revision {
            number: actual + 1,
            rules,
            meta,
        };
        let dir = self.dir.clone();
        let written = rev.clone();
        // Blocking file I/O and fsync stay off the runtime threads. The state lock is
        // held across this await on purpose: commits must be serialised (a tokio Mutex).
        tokio::task::spawn_blocking(move || write_revision(&dir, &written))
            .await
            .map_err(|e| StoreError::Unavailable(format!("write task failed: {e}")))??;
        state.history.push((rev.number, rev.meta.clone()));
        let number = rev.number;
        state.current = rev;
        let excess = state.history.len().saturating_sub(self.limit);
        let pruned: Vec<u64> = state.history.drain(..excess).map(|(n, _)| n).collect();
        drop(state);
        for n in pruned {
            // Losing a prune (crash) only keeps one more old revision around.
            let _ = fs::remove_file(revision_path(&self.dir, n));
        }
        self.notify.send_replace(number);
        Ok(number)
    }
}

impl Store for FileStore {
    fn current(&self) -> StoreFuture<'_, Revision> {
        Box::pin(async move { Ok(self.inner.state.lock().await.current.clone()) })
    }

    fn commit(&self, expected: u64, rules: String, meta: RevisionMeta) -> StoreFuture<'_, u64> {
        Box::pin(self.inner.commit(expected, rules, meta))
    }

    fn history(&self, limit: usize) -> StoreFuture<'_, Vec<(u64, RevisionMeta)>> {
        Box::pin(async move {
            let state = self.inner.state.lock().await;
            let take = if limit == 0 { usize::MAX } else { limit };
            Ok(state.history.iter().rev().take(take).cloned().collect())
        })
    }

    fn get(&self, number: u64) -> StoreFuture<'_, Option<Revision>> {
        Box::pin(async move {
            let kept = {
                let state = self.inner.state.lock().await;
                if state.current.number == number && number > 0 {
                    return Ok(Some(state.current.clone()));
                }
                state.history.iter().any(|(n, _)| *n == number)
            };
            if !kept {
                return Ok(None);
            }
            let dir = self.inner.dir.clone();
            tokio::task::spawn_blocking(move || read_revision(&dir, number).map(Some))
                .await
                .map_err(|e| StoreError::Unavailable(format!("read task failed: {e}")))?
        })
    }

    fn watch(&self) -> watch::Receiver<u64> {
        self.inner.notify.subscribe()
    }

    fn ca_get_or_create(&self, candidate: CaPem) -> StoreFuture<'_, CaPem> {
        Box::pin(self.inner.ca_get_or_create(candidate))
    }

    fn record_get(&self, key: &str) -> StoreFuture<'_, Option<Record>> {
        let key = key.to_string();
        Box::pin(async move { Ok(self.inner.records.lock().await.get(&key)) })
    }

    fn record_list(&self, prefix: &str) -> StoreFuture<'_, Vec<(String, Record)>> {
        let prefix = prefix.to_string();
        Box::pin(async move { Ok(self.inner.records.lock().await.list(&prefix)) })
    }

    fn record_put(
        &self,
        key: &str,
        value: String,
        expected: u64,
        _fenced: bool,
    ) -> StoreFuture<'_, u64> {
        // Fenced or not: the directory lock makes this process the leader.
        let key = key.to_string();
        Box::pin(self.inner.change_records(move |r| {
            let version = r.put(&key, value, expected)?;
            Ok((version, Some(key)))
        }))
    }

    fn record_delete(&self, key: &str, expected: u64) -> StoreFuture<'_, ()> {
        let key = key.to_string();
        Box::pin(self.inner.change_records(move |r| {
            let removed = r.delete(&key, expected)?;
            Ok(((), removed.then_some(key)))
        }))
    }

    fn leadership(&self, _holder: &str) -> watch::Receiver<bool> {
        self.inner.leader.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::FileStore;

    crate::store::conformance::suite!(|dir: &std::path::Path| {
        let dir = dir.to_path_buf();
        async move {
            let store = FileStore::open(dir, crate::store::MIN_HISTORY)
                .await
                .expect("open");
            (store, ())
        }
    });

    #[tokio::test]
    async fn survives_reopen_and_refuses_second_opener() {
        use crate::store::{RevisionMeta, Store};
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = FileStore::open(tmp.path().into(), 100).await.expect("open");
        store
            .commit(0, "a".into(), RevisionMeta::default())
            .await
            .expect("commit");
        let second = FileStore::open(tmp.path().into(), 100).await;
        assert!(
            second.is_err(),
            "a second process must not share the directory"
        );
        drop(store);
        let reopened = FileStore::open(tmp.path().into(), 100)
            .await
            .expect("reopen");
        let current = reopened.current().await.expect("current");
        assert_eq!((current.number, current.rules.as_str()), (1, "a"));
    }

    #[tokio::test]
    async fn the_ca_survives_reopen_in_private_files() {
        use std::os::unix::fs::PermissionsExt;

        use crate::store::{CaPem, Store};
        let tmp = tempfile::tempdir().expect("tempdir");
        let pem = |n: &str| CaPem {
            cert: format!("cert {n}"),
            key: format!("key {n}"),
        };
        let store = FileStore::open(tmp.path().into(), 100).await.expect("open");
        let first = store.ca_get_or_create(pem("1")).await.expect("create");
        assert_eq!(first, pem("1"));
        drop(store);
        let reopened = FileStore::open(tmp.path().into(), 100)
            .await
            .expect("reopen");
        let again = reopened.ca_get_or_create(pem("2")).await.expect("get");
        assert_eq!(again, pem("1"));
        for name in ["ca.pem", "ca-key.pem"] {
            let mode = std::fs::metadata(tmp.path().join(name))
                .expect("stat")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{name}");
        }
    }

    #[tokio::test]
    async fn records_survive_reopen() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_path_buf();
        let store = FileStore::open(dir.clone(), 100).await.expect("open");
        crate::store::conformance::records_survive_reopening(store, |store| async move {
            drop(store);
            FileStore::open(dir, 100).await.expect("reopen")
        })
        .await;
    }

    #[tokio::test]
    async fn a_deleted_records_version_is_not_handed_out_again_after_a_restart() {
        use crate::store::Store;
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = FileStore::open(tmp.path().into(), 100).await.expect("open");
        let first = store
            .record_put("a", "1".into(), 0, true)
            .await
            .expect("put");
        let second = store
            .record_put("b", "2".into(), 0, true)
            .await
            .expect("put");
        store.record_delete("b", second).await.expect("delete");
        drop(store);
        let store = FileStore::open(tmp.path().into(), 100)
            .await
            .expect("reopen");
        let third = store
            .record_put("b", "3".into(), 0, true)
            .await
            .expect("put");
        assert!(third > second && second > first, "{first} {second} {third}");
        // One file per record: a write touches that record only.
        let files = std::fs::read_dir(tmp.path().join("records"))
            .expect("list")
            .count();
        assert_eq!(files, 3, "a, b and the counter");
    }

    #[tokio::test]
    async fn leads_at_once_and_a_damaged_records_file_is_refused_at_open() {
        use crate::store::{Store, StoreError};
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = FileStore::open(tmp.path().into(), 100).await.expect("open");
        assert!(*store.leadership("a").borrow());
        store
            .record_put("k", "v".into(), 0, true)
            .await
            .expect("put");
        drop(store);
        // A hand edit gone wrong: refused with the path, not read as "no records".
        let file = tmp.path().join("records").join("6b.json");
        assert!(file.exists(), "record k is stored as records/6b.json");
        std::fs::write(&file, b"{\"version\": 1, \"rec").expect("write");
        match FileStore::open(tmp.path().into(), 100).await {
            Err(StoreError::Corrupt(msg)) => assert!(msg.contains("6b.json"), "{msg}"),
            Err(e) => panic!("expected Corrupt, got {e}"),
            Ok(_) => panic!("a damaged records file must not open"),
        }
    }

    #[tokio::test]
    async fn leftover_temp_files_are_ignored_and_removed() {
        use crate::store::Store;
        let tmp = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(tmp.path().join("revisions")).expect("mkdir");
        let junk = tmp.path().join("revisions/.tmp-1");
        std::fs::write(&junk, b"{\"number\": 1, \"ru").expect("write");
        let store = FileStore::open(tmp.path().into(), 100).await.expect("open");
        assert_eq!(store.current().await.expect("current").number, 0);
        assert!(!junk.exists());
    }
}
