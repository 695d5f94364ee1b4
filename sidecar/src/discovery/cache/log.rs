//! The endpoint changes made since the snapshot file was written, appended to
//! `endpoints-<snapshot's hash>.log`.
//!
//! Why: rewriting the whole snapshot for each change cost time in proportion to the
//! mesh (a sidecar holding 5,000 instances encoded, hashed and wrote ~1 MB, with two
//! fsyncs, every time one of them came or went). A change is now one record and one
//! `fdatasync`. The log is named after the snapshot it continues, so a log is never
//! read onto another snapshot; once it grows past the snapshot's size, the next
//! change writes a new snapshot instead, and the old log goes.
//!
//! A record is `<len> <hash>\n<json>\n`, `hash` being `stable_hash` of the JSON. A
//! crash during an append leaves a short or unreadable last record: reading stops
//! there, at the state before it (that change was not ACKed). A bad record with more
//! records after it is damage, and the cache is rejected whole.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

use graylane_routing::{Instance, stable_hash};

use super::super::received::{Received, stored};
use super::CacheError;

pub(super) const PREFIX: &str = "endpoints-";
pub(super) const SUFFIX: &str = ".log";

/// The smallest log that is compacted (below it a log is cheaper than a rewrite).
const MIN_LIMIT: u64 = 64 * 1024;

/// The log of the snapshot whose body hashes to `hash`.
pub(super) fn name(hash: u64) -> String {
    format!("{PREFIX}{hash:016x}{SUFFIX}")
}

/// The log this process appends to, after the snapshot it wrote last.
pub(super) struct Log {
    name: String,
    /// Opened at the first append.
    file: Option<File>,
    len: u64,
    /// Past this length, the next change rewrites the snapshot.
    limit: u64,
    /// The revision and directory as the files hold them: a record carries the
    /// directory only when it changed.
    revision: u64,
    directory: Option<BTreeSet<(String, String)>>,
}

/// One change; see the module doc for its framing.
#[derive(serde::Serialize, serde::Deserialize)]
struct Record<'a> {
    revision: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    removed: Vec<Cow<'a, str>>,
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        serialize_with = "stored::serialize",
        deserialize_with = "stored::deserialize"
    )]
    upserted: BTreeMap<String, Instance>,
    /// Absent: unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    directory: Option<Directory<'a>>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Directory<'a> {
    /// `None`: the stream is not scoped (any more).
    services: Option<Cow<'a, BTreeSet<(String, String)>>>,
}

impl Log {
    /// The log of a snapshot just written: its body's `hash` and length, the
    /// `received` state it holds.
    pub(super) fn after(hash: u64, body_len: usize, received: &Received) -> Self {
        Self {
            name: name(hash),
            file: None,
            len: 0,
            limit: MIN_LIMIT.max(body_len as u64),
            revision: received.revision,
            directory: received.directory.clone(),
        }
    }

    pub(super) fn name(&self) -> &str {
        &self.name
    }

    /// Whether the next change should rewrite the snapshot instead.
    pub(super) fn full(&self) -> bool {
        self.len >= self.limit
    }

    /// Appends the change to `received` of the instances `ids` (what `received` now
    /// has of each: upserted, or removed if absent) and syncs it.
    pub(super) fn append(
        &mut self,
        dir: &Path,
        received: &Received,
        ids: &BTreeSet<String>,
    ) -> io::Result<()> {
        if ids.is_empty()
            && received.revision == self.revision
            && received.directory == self.directory
        {
            // Nothing the files hold changed (the same rules again, say).
            return Ok(());
        }
        let mut record = Record {
            revision: received.revision,
            removed: Vec::new(),
            upserted: BTreeMap::new(),
            directory: None,
        };
        for id in ids {
            match received.endpoints.get(id) {
                Some(instance) => {
                    record.upserted.insert(id.clone(), instance.clone());
                }
                None => record.removed.push(Cow::Borrowed(id)),
            }
        }
        if received.directory != self.directory {
            record.directory = Some(Directory {
                services: received.directory.as_ref().map(Cow::Borrowed),
            });
        }
        let json = serde_json::to_vec(&record).map_err(io::Error::other)?;
        let mut bytes = format!("{} {:016x}\n", json.len(), stable_hash(&json)).into_bytes();
        bytes.extend_from_slice(&json);
        bytes.push(b'\n');
        let file = match &mut self.file {
            Some(file) => file,
            None => {
                let file = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(dir.join(&self.name))?;
                // The new name must survive a crash as the records do.
                File::open(dir)?.sync_all()?;
                self.file.insert(file)
            }
        };
        file.write_all(&bytes)?;
        file.sync_data()?;
        self.len += bytes.len() as u64;
        self.revision = received.revision;
        self.directory.clone_from(&received.directory);
        Ok(())
    }
}

/// Applies the log of the snapshot hashing to `hash`, if there is one, to `received`.
pub(super) fn replay(dir: &Path, hash: u64, received: &mut Received) -> Result<(), CacheError> {
    let file = name(hash);
    let bytes = match super::read_file(&dir.join(&file)) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(CacheError::Log {
                file,
                reason: e.to_string(),
            });
        }
    };
    let mut rest = bytes.as_slice();
    let mut number = 0;
    while !rest.is_empty() {
        number += 1;
        match next(rest) {
            Next::Record(record, after) => {
                apply(received, record);
                rest = after;
            }
            // Short or unreadable up to the end, or bad and last: an append cut by
            // a crash.
            Next::Torn | Next::Bad(&[]) => {
                tracing::warn!(%file, record = number, "ignoring an incomplete last record of the endpoint log");
                return Ok(());
            }
            Next::Bad(_) => {
                return Err(CacheError::Log {
                    file,
                    reason: format!("record {number} is damaged and more follow"),
                });
            }
        }
    }
    Ok(())
}

/// The first record of a log's bytes.
enum Next<'b> {
    /// Read, and the bytes after it.
    Record(Record<'static>, &'b [u8]),
    /// Framed, but failing its hash or not a record; the bytes after it.
    Bad(&'b [u8]),
    /// Framing that runs past the end or cannot be read.
    Torn,
}

fn next(bytes: &[u8]) -> Next<'_> {
    let framed = || {
        let newline = bytes.iter().position(|b| *b == b'\n')?;
        let header = std::str::from_utf8(&bytes[..newline]).ok()?;
        let (len, hash) = header.split_once(' ')?;
        let len: usize = len.parse().ok()?;
        let hash = u64::from_str_radix(hash, 16).ok()?;
        let body = bytes.get(newline + 1..)?;
        let json = body.get(..len)?;
        let after = body.get(len..)?.strip_prefix(b"\n")?;
        Some((json, hash, after))
    };
    let Some((json, hash, after)) = framed() else {
        return Next::Torn;
    };
    if stable_hash(json) != hash {
        return Next::Bad(after);
    }
    match serde_json::from_slice(json) {
        Ok(record) => Next::Record(record, after),
        Err(_) => Next::Bad(after),
    }
}

fn apply(received: &mut Received, record: Record<'_>) {
    received.revision = record.revision;
    for id in &record.removed {
        received.endpoints.remove(id.as_ref());
    }
    received.endpoints.extend(record.upserted);
    if let Some(directory) = record.directory {
        received.directory = directory.services.map(Cow::into_owned);
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::MetadataExt;
    use std::sync::Arc;

    use super::super::{Cache, FILE, read};
    use super::*;
    use crate::discovery::stale::Change;

    fn instance(id: &str, address: &str) -> Instance {
        Instance {
            service: "orders".into(),
            id: id.into(),
            address: address.into(),
            labels: BTreeMap::from([("version".into(), "v1".into())]),
            namespace: "default".into(),
            identity: String::new(),
        }
    }

    fn state(ids: &[&str]) -> Received {
        Received {
            revision: 1,
            rules: Arc::from("apiVersion: graylane.io/v1\nkind: Lane\n"),
            endpoints: ids
                .iter()
                .map(|id| ((*id).to_string(), instance(id, "10.0.0.1:15006")))
                .collect(),
            directory: None,
        }
    }

    /// A full endpoint set read after state `from`.
    fn full(from: u64) -> Change {
        Change {
            from,
            to: from + 1,
            ids: None,
        }
    }

    fn change(from: u64, ids: &[&str]) -> Change {
        Change {
            from,
            to: from + 1,
            ids: Some(ids.iter().map(|s| (*s).to_string()).collect()),
        }
    }

    fn logs(dir: &Path) -> Vec<String> {
        super::super::tests::files(dir, PREFIX)
    }

    fn inode(dir: &Path) -> u64 {
        fs::metadata(dir.join(FILE)).unwrap().ino()
    }

    /// A cache holding `a` (state 1), then `b` added and `a` moved (state 2), then
    /// `b` gone (state 3), the two changes appended: the snapshot file is the one
    /// state 1 wrote.
    fn three_states(dir: &Path) -> (Cache, Received) {
        let cache = Cache::new(dir.into());
        let mut s = state(&["a"]);
        cache.write(&s, &full(0)).unwrap();
        let snapshot = inode(dir);
        s.endpoints
            .insert("b".into(), instance("b", "10.0.0.2:15006"));
        s.endpoints
            .insert("a".into(), instance("a", "10.0.0.9:15006"));
        cache.write(&s, &change(1, &["a", "b"])).unwrap();
        s.endpoints.remove("b");
        cache.write(&s, &change(2, &["b"])).unwrap();
        assert_eq!(inode(dir), snapshot, "the snapshot file is not rewritten");
        (cache, s)
    }

    #[test]
    fn an_endpoint_change_is_appended_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let (_, three) = three_states(dir.path());
        assert_eq!(logs(dir.path()).len(), 1);
        assert_eq!(read(dir.path()).unwrap(), Some(three));
    }

    #[test]
    fn a_change_from_another_state_than_the_files_hold_replaces_them() {
        let dir = tempfile::tempdir().unwrap();
        let (cache, mut s) = three_states(dir.path());
        let [old] = logs(dir.path()).try_into().unwrap();
        // State 3 -> 4 was never written (a NACK, a superseded snapshot): 4 -> 5 is
        // not appended onto 3.
        s.endpoints
            .insert("c".into(), instance("c", "10.0.0.3:15006"));
        s.endpoints
            .insert("d".into(), instance("d", "10.0.0.4:15006"));
        cache.write(&s, &change(4, &["d"])).unwrap();
        assert_eq!(read(dir.path()).unwrap(), Some(s.clone()), "c is there too");
        assert!(!logs(dir.path()).contains(&old), "the old log is gone");
        // So does a full set, and new rules.
        s.endpoints.remove("c");
        cache.write(&s, &full(5)).unwrap();
        assert_eq!(read(dir.path()).unwrap(), Some(s.clone()));
        s.rules = Arc::from("apiVersion: graylane.io/v1\nkind: TagPolicy\n");
        let before = inode(dir.path());
        cache.write(&s, &change(6, &[])).unwrap();
        assert_ne!(inode(dir.path()), before);
        assert_eq!(read(dir.path()).unwrap(), Some(s));
    }

    #[test]
    fn a_log_past_the_snapshots_size_is_folded_into_a_new_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path().into());
        let mut s = state(&["a"]);
        cache.write(&s, &full(0)).unwrap();
        let first = inode(dir.path());
        let mut at = 1;
        // Each record is ~250 bytes; the limit is 64 KiB.
        while inode(dir.path()) == first {
            assert!(at < 1000, "never folded");
            let id = format!("i{at}");
            s.endpoints
                .insert(id.clone(), instance(&id, "10.0.0.5:15006"));
            cache.write(&s, &change(at, &[&id])).unwrap();
            at += 1;
        }
        assert!(at > 100, "folded after {at} changes");
        assert_eq!(
            logs(dir.path()),
            Vec::<String>::new(),
            "the new snapshot has none yet"
        );
        assert_eq!(read(dir.path()).unwrap(), Some(s));
    }

    #[test]
    fn a_log_cut_anywhere_reads_as_one_of_the_states_it_went_through() {
        let dir = tempfile::tempdir().unwrap();
        let (_, three) = three_states(dir.path());
        let [log] = logs(dir.path()).try_into().unwrap();
        let path = dir.path().join(log);
        let whole = fs::read(&path).unwrap();
        let one = state(&["a"]);
        let mut two = three;
        two.endpoints
            .insert("b".into(), instance("b", "10.0.0.2:15006"));
        for cut in 0..whole.len() {
            fs::write(&path, &whole[..cut]).unwrap();
            let read = read(dir.path()).unwrap().unwrap();
            assert!(read == one || read == two, "cut at {cut}: {read:?}");
        }
    }

    #[test]
    fn a_torn_last_record_reads_as_the_state_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let (_, three) = three_states(dir.path());
        let [log] = logs(dir.path()).try_into().unwrap();
        let path = dir.path().join(log);
        let whole = fs::read(&path).unwrap();
        let last = whole[..whole.len() - 1]
            .iter()
            .rposition(|b| *b == b'\n')
            .unwrap();
        // The first record ends where the second's header starts.
        let second = whole[..last].iter().rposition(|b| *b == b'\n').unwrap() + 1;
        let mut two = three.clone();
        two.endpoints
            .insert("b".into(), instance("b", "10.0.0.2:15006"));
        for cut in [whole.len() - 1, whole.len() - 10, second + 3] {
            fs::write(&path, &whole[..cut]).unwrap();
            assert_eq!(read(dir.path()).unwrap(), Some(two.clone()), "cut at {cut}");
        }
        // Zeros where the last record was (a crash before its data reached the disk).
        let mut zeroed = whole.clone();
        zeroed[second..].fill(0);
        fs::write(&path, &zeroed).unwrap();
        assert_eq!(read(dir.path()).unwrap(), Some(two));
        fs::write(&path, &whole).unwrap();
        assert_eq!(read(dir.path()).unwrap(), Some(three));
    }

    #[test]
    fn a_damaged_record_with_more_after_it_rejects_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        three_states(dir.path());
        let [log] = logs(dir.path()).try_into().unwrap();
        let path = dir.path().join(&log);
        let text = fs::read_to_string(&path).unwrap();
        let altered = text.replacen("10.0.0.9", "10.6.6.6", 1);
        assert_ne!(altered, text);
        fs::write(&path, altered).unwrap();
        let r = read(dir.path());
        assert!(
            matches!(&r, Err(CacheError::Log { file, reason }) if *file == log && reason.contains("record 1")),
            "{r:?}"
        );
    }

    #[test]
    fn a_log_left_with_the_name_of_a_new_snapshot_is_not_read_onto_it() {
        let dir = tempfile::tempdir().unwrap();
        let (_, three) = three_states(dir.path());
        let [log] = logs(dir.path()).try_into().unwrap();
        let records = fs::read(dir.path().join(&log)).unwrap();
        // Another process (a restart) writes the same snapshot again, over an older
        // life's log of the same name.
        let cache = Cache::new(dir.path().into());
        cache.write(&state(&["a"]), &full(0)).unwrap();
        assert_eq!(logs(dir.path()), Vec::<String>::new());
        fs::write(dir.path().join(&log), &records).unwrap();
        assert_eq!(read(dir.path()).unwrap(), Some(three), "the same name");
        cache.write(&state(&["a"]), &full(0)).unwrap();
        assert_eq!(read(dir.path()).unwrap(), Some(state(&["a"])));
    }

    #[test]
    fn a_directory_change_is_logged_and_an_unchanged_state_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path().into());
        let mut s = state(&["a"]);
        s.directory = Some([("default".into(), "orders".into())].into());
        cache.write(&s, &full(0)).unwrap();
        cache.write(&s, &change(1, &[])).unwrap();
        assert_eq!(logs(dir.path()), Vec::<String>::new(), "nothing to append");
        s.directory
            .as_mut()
            .unwrap()
            .insert(("shop".into(), "cart".into()));
        cache.write(&s, &change(2, &[])).unwrap();
        assert_eq!(read(dir.path()).unwrap(), Some(s.clone()));
        s.directory = None;
        s.revision = 2;
        cache.write(&s, &change(3, &[])).unwrap();
        assert_eq!(read(dir.path()).unwrap(), Some(s));
    }
}
