//! `--cache-dir`: the last good snapshot on disk, so a sidecar that starts while the
//! control plane is down still routes. Written like the control plane's file store:
//! temp file, fsync, rename, fsync of the directory, so a crash leaves the old or the
//! new file, never a torn one.
//!
//! Three files: the snapshot, the rules it names, and the log of endpoint changes
//! since (`log`). Most snapshots change endpoints only: the rules (1.3 MB for 3,000
//! documents) are then neither encoded, hashed nor written again, and the change is
//! appended to the log instead of the whole mesh's endpoints being written again. A
//! rules file is in place (renamed, the directory synced) before a snapshot names
//! it, and the others are removed only after, so a crash at any point leaves a
//! snapshot whose rules are there.
//!
//! Neither file is trusted when read back: a disk, a copy or a hand edit can change
//! it. The snapshot's first line carries its body's length and `stable_hash`, written
//! in the same file (one rename makes header and body appear together); the snapshot
//! names its rules by length and hash, and the rules file must match both. A file
//! whose header is missing, of another format, or does not match is rejected whole.
//! The hashes catch accidents, not an attacker who can write the directory.
//!
//! ```text
//! snapshot.json                 graylane-snapshot-cache v3 len=1234 hash=0123456789abcdef\n
//!                               {"revision":4,"rules":{"len":5678,"hash":…},"endpoints":{…}}
//! rules-89abcdef01234567.yaml   the rules text as received
//! endpoints-0123456789abcdef.log  changes since that snapshot (its hash), one record each
//! ```
//!
//! The name stays `snapshot.json`, the name of the headerless format before `v2`, so
//! an older sidecar's file is found and rejected (and counted) instead of lingering.
//! A `v2` file (rules inline) is still read: a sidecar upgraded while the control
//! plane is down keeps its routes.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use graylane_routing::{Instance, stable_hash};

use self::log::Log;
use super::received::{Received, same_text, stored};
use super::stale::Change;

mod log;

const FILE: &str = "snapshot.json";
const MAGIC: &str = "graylane-snapshot-cache";
const FORMAT: &str = "v3";
/// Rules inline, one file (read, no longer written).
const FORMAT_INLINE: &str = "v2";
const RULES_PREFIX: &str = "rules-";
const RULES_SUFFIX: &str = ".yaml";

/// Why a cache file was not used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CacheError {
    #[error("cannot read it: {0}")]
    Io(#[from] io::Error),
    #[error("written by an older sidecar (no integrity header)")]
    OldFormat,
    #[error("no valid header line")]
    Header,
    #[error("format {0:?} is not one this sidecar reads")]
    Format(String),
    #[error("truncated or extended: the header says {expected} bytes, the body has {actual}")]
    Length { expected: usize, actual: usize },
    #[error("altered: the body hashes to {actual:016x}, the header says {expected:016x}")]
    Hash { expected: u64, actual: u64 },
    #[error("the body is not a snapshot: {0}")]
    Body(#[source] serde_json::Error),
    #[error("its rules file {file}: {reason}")]
    Rules { file: String, reason: String },
    #[error("its endpoint log {file}: {reason}")]
    Log { file: String, reason: String },
}

/// The cache directory, written by one applier.
pub(super) struct Cache {
    dir: PathBuf,
    written: Mutex<Written>,
}

/// What this process wrote last.
#[derive(Default)]
struct Written {
    /// The rules text and its hash: a snapshot with the same text (shared, or equal)
    /// names that file again without writing it.
    rules: Option<(Arc<str>, u64)>,
    /// The held state the files hold (see `stale::Change`), and the log continuing
    /// them; `None` when unknown (nothing written yet, or a write failed).
    at: Option<(u64, Log)>,
    /// The length of the last snapshot body: the next one's buffer is allocated once
    /// at about that size, not grown by doubling (a mesh of 5,000 endpoints: ~1 MB).
    body_len: usize,
}

/// The snapshot file's body: a [`Received`] whose rules are named, not inlined.
#[derive(serde::Serialize, serde::Deserialize)]
struct Stored<'a> {
    revision: u64,
    rules: RulesRef,
    #[serde(
        serialize_with = "stored::serialize",
        deserialize_with = "owned_endpoints"
    )]
    endpoints: Cow<'a, BTreeMap<String, Instance>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    directory: Option<Cow<'a, BTreeSet<(String, String)>>>,
}

fn owned_endpoints<'de, 'a, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Cow<'a, BTreeMap<String, Instance>>, D::Error> {
    stored::deserialize(d).map(Cow::Owned)
}

/// The rules file a snapshot routes by: `rules-{hash:016x}.yaml`, `len` bytes.
#[derive(Clone, Copy, serde::Serialize, serde::Deserialize)]
struct RulesRef {
    len: usize,
    hash: u64,
}

impl RulesRef {
    fn file(self) -> String {
        format!("{RULES_PREFIX}{:016x}{RULES_SUFFIX}", self.hash)
    }
}

impl Cache {
    pub(super) fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            written: Mutex::default(),
        }
    }

    pub(super) fn dir(&self) -> &Path {
        &self.dir
    }

    /// The cached snapshot (see [`read`]).
    pub(super) fn read(&self) -> Result<Option<Received>, CacheError> {
        read(&self.dir)
    }

    /// Caches `received`, the state `change` made: appended to the log when the files
    /// hold the state it was made from and the rules are the same, else a new snapshot
    /// file (its rules file first, if they are new). Blocks (one fsync to append, two
    /// to replace, four when the rules change): call it off the runtime threads.
    /// Callers order concurrent writes themselves; the last rename wins.
    pub(super) fn write(&self, received: &Received, change: &Change) -> io::Result<()> {
        let mut written = self.written.lock().unwrap_or_else(PoisonError::into_inner);
        let at = written.at.take();
        // The hash of the rules file this process wrote, if `received` has those rules.
        let known = written
            .rules
            .as_ref()
            .and_then(|(text, hash)| same_text(text, &received.rules).then_some(*hash));
        if let (Some((state, mut log)), Some(ids), Some(_)) = (at, &change.ids, known)
            && state == change.from
            && !log.full()
        {
            // On failure `at` stays unknown: the next write replaces the files.
            log.append(&self.dir, received, ids)?;
            written.at = Some((change.to, log));
            return Ok(());
        }
        self.replace_all(&mut written, known, received, change)
    }

    fn replace_all(
        &self,
        written: &mut Written,
        known: Option<u64>,
        received: &Received,
        change: &Change,
    ) -> io::Result<()> {
        fs::create_dir_all(&self.dir)?;
        let rules = RulesRef {
            len: received.rules.len(),
            hash: known.unwrap_or_else(|| stable_hash(received.rules.as_bytes())),
        };
        // Written again if it went missing meanwhile: a snapshot never names a
        // rules file that is not there.
        let new_rules = known.is_none() || !self.dir.join(rules.file()).exists();
        if new_rules {
            replace(&self.dir, &rules.file(), received.rules.as_bytes())?;
            written.rules = Some((Arc::clone(&received.rules), rules.hash));
        }
        let stored = Stored {
            revision: received.revision,
            rules,
            endpoints: Cow::Borrowed(&received.endpoints),
            directory: received.directory.as_ref().map(Cow::Borrowed),
        };
        let mut body = Vec::with_capacity(written.body_len + written.body_len / 8);
        serde_json::to_writer(&mut body, &stored).map_err(io::Error::other)?;
        written.body_len = body.len();
        let hash = stable_hash(&body);
        let log = Log::after(hash, body.len(), received);
        // A log of that name can only be an older life's, or this snapshot's own
        // while its records undid each other: never one to read onto it.
        remove_if_there(&self.dir.join(log.name()))?;
        replace(&self.dir, FILE, &with_header(FORMAT, &body, hash))?;
        self.remove_but(&[&rules.file(), log.name()]);
        written.at = Some((change.to, log));
        Ok(())
    }

    /// Removes every rules file and log but those in `keep` (older rule sets,
    /// snapshots replaced). Best effort: a file left behind is only disk space.
    fn remove_but(&self, keep: &[&str]) {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let ours = name.starts_with(RULES_PREFIX) && name.ends_with(RULES_SUFFIX)
                || name.starts_with(log::PREFIX) && name.ends_with(log::SUFFIX);
            if ours && !keep.contains(&name) {
                let _ = fs::remove_file(entry.path());
            }
        }
    }
}

fn remove_if_there(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// `dir/name` replaced by `bytes`: temp file, fsync, rename, fsync of the directory.
fn replace(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut file = File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    fs::rename(&tmp, dir.join(name))?;
    File::open(dir)?.sync_all()
}

/// The largest cache file read back: far over any snapshot (10,000 endpoints take
/// ~1 MB), far under what a runaway read (a link to `/dev/zero`) would take.
const MAX_FILE: u64 = 256 << 20;

/// `path`'s bytes, if it is a regular file of at most [`MAX_FILE`]. Looked at before it
/// is opened: opening a FIFO put in its place would block the sidecar's start (and
/// with it its first connection to the control plane) until something wrote to it.
pub(super) fn read_file(path: &Path) -> io::Result<Vec<u8>> {
    use std::io::Read;
    if !fs::metadata(path)?.is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    let file = File::open(path)?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_FILE {
        return Err(io::Error::other(format!("larger than {MAX_FILE} bytes")));
    }
    Ok(bytes)
}

/// Claims `dir` for this process: an advisory lock on `dir/.lock`, released when the
/// process ends however it ends. Two sidecars sharing one cache would each start from
/// the other's view after an offline restart (its scope, its services) and remove each
/// other's files. `Ok(None)`: the directory cannot be written, so there is nothing to
/// collide on (a read-only cache still serves a start).
pub fn claim(dir: &Path) -> Result<Option<File>, String> {
    let lock = dir.join(".lock");
    // Opening a FIFO put there would wait for a reader: the start would hang.
    if fs::symlink_metadata(&lock).is_ok_and(|m| !m.is_file()) {
        return Err(format!("{}: not a regular file", lock.display()));
    }
    let opened = fs::create_dir_all(dir).and_then(|()| {
        fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock)
    });
    let file = match opened {
        Ok(file) => file,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem
            ) =>
        {
            tracing::warn!(cache_dir = %dir.display(), error = %e, "the cache directory cannot be written: started from it, never written");
            return Ok(None);
        }
        Err(e) => return Err(format!("{}: {e}", dir.display())),
    };
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(fs::TryLockError::WouldBlock) => Err(format!(
            "{}: in use by another running sidecar; give each sidecar its own cache directory",
            dir.display()
        )),
        Err(fs::TryLockError::Error(e)) => Err(format!("{}: locking it: {e}", dir.display())),
    }
}

/// The cached snapshot; `Ok(None)` when there is none. Blocks: call it off the runtime
/// threads.
pub(super) fn read(dir: &Path) -> Result<Option<Received>, CacheError> {
    let bytes = match read_file(&dir.join(FILE)) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let (format, body, hash) = checked(&bytes)?;
    if format == FORMAT_INLINE {
        return serde_json::from_slice(body)
            .map_err(CacheError::Body)
            .map(Some);
    }
    let stored: Stored<'_> = serde_json::from_slice(body).map_err(CacheError::Body)?;
    let rules = read_rules(dir, stored.rules)?;
    let mut received = Received {
        revision: stored.revision,
        rules,
        endpoints: stored.endpoints.into_owned(),
        directory: stored.directory.map(Cow::into_owned),
    };
    log::replay(dir, hash, &mut received)?;
    Ok(Some(received))
}

/// The rules file `rules` names, checked against its length and hash.
fn read_rules(dir: &Path, rules: RulesRef) -> Result<Arc<str>, CacheError> {
    let file = rules.file();
    let failed = |reason: String| CacheError::Rules {
        file: file.clone(),
        reason,
    };
    let bytes = read_file(&dir.join(&file)).map_err(|e| failed(e.to_string()))?;
    if bytes.len() != rules.len {
        return Err(failed(format!(
            "{} bytes, the snapshot says {}",
            bytes.len(),
            rules.len
        )));
    }
    let actual = stable_hash(&bytes);
    if actual != rules.hash {
        return Err(failed(format!("altered: it hashes to {actual:016x}")));
    }
    String::from_utf8(bytes)
        .map(Arc::from)
        .map_err(|_| failed("not UTF-8".into()))
}

/// `body` (hashing to `hash`) behind its header line.
fn with_header(format: &str, body: &[u8], hash: u64) -> Vec<u8> {
    let header = format!("{MAGIC} {format} len={} hash={hash:016x}\n", body.len());
    let mut bytes = Vec::with_capacity(header.len() + body.len());
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(body);
    bytes
}

/// The format, the body and its hash of a snapshot file whose header matches its body.
fn checked(bytes: &[u8]) -> Result<(&str, &[u8], u64), CacheError> {
    // The format before `v2` was the bare JSON object.
    if bytes.first() == Some(&b'{') {
        return Err(CacheError::OldFormat);
    }
    let newline = bytes
        .iter()
        .position(|b| *b == b'\n')
        .ok_or(CacheError::Header)?;
    let (header, body) = (&bytes[..newline], &bytes[newline + 1..]);
    let header = std::str::from_utf8(header).map_err(|_| CacheError::Header)?;
    let mut fields = header.split(' ');
    if fields.next() != Some(MAGIC) {
        return Err(CacheError::Header);
    }
    let format = match fields.next() {
        Some(f @ (FORMAT | FORMAT_INLINE)) => f,
        Some(other) => return Err(CacheError::Format(other.chars().take(32).collect())),
        None => return Err(CacheError::Header),
    };
    let expected_len: usize = field(fields.next(), "len=", |v| v.parse().ok())?;
    let expected_hash = field(fields.next(), "hash=", |v| u64::from_str_radix(v, 16).ok())?;
    if fields.next().is_some() {
        return Err(CacheError::Header);
    }
    if body.len() != expected_len {
        return Err(CacheError::Length {
            expected: expected_len,
            actual: body.len(),
        });
    }
    let actual = stable_hash(body);
    if actual != expected_hash {
        return Err(CacheError::Hash {
            expected: expected_hash,
            actual,
        });
    }
    Ok((format, body, actual))
}

/// The value of `key=value` in a header field.
fn field<T>(
    text: Option<&str>,
    key: &str,
    parse: impl Fn(&str) -> Option<T>,
) -> Result<T, CacheError> {
    text.and_then(|t| t.strip_prefix(key))
        .and_then(parse)
        .ok_or(CacheError::Header)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    fn snapshot() -> Received {
        let endpoint = Instance {
            service: "orders".into(),
            id: "orders-1".into(),
            address: "10.0.0.7:15006".into(),
            labels: BTreeMap::from([("version".into(), "v2".into())]),
            namespace: "shop".into(),
            identity: "spiffe://cluster.local/ns/shop/sa/orders".into(),
        };
        Received {
            revision: 4,
            rules: "apiVersion: graylane.io/v1\nkind: Lane\n".into(),
            endpoints: BTreeMap::from([("orders-1".into(), endpoint)]),
            directory: Some([("shop".into(), "orders".into())].into()),
        }
    }

    /// Writes `snapshot()` to a fresh dir, lets `edit` change the file, reads it back.
    fn read_after(edit: impl FnOnce(Vec<u8>) -> Vec<u8>) -> Result<Option<Received>, CacheError> {
        let dir = tempfile::tempdir().unwrap();
        Cache::new(dir.path().into())
            .write(&snapshot(), &Change::default())
            .unwrap();
        let path = dir.path().join(FILE);
        fs::write(&path, edit(fs::read(&path).unwrap())).unwrap();
        read(dir.path())
    }

    #[test]
    fn written_snapshots_read_back_equal() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read(dir.path()).unwrap().is_none());
        Cache::new(dir.path().into())
            .write(&snapshot(), &Change::default())
            .unwrap();
        assert_eq!(read(dir.path()).unwrap(), Some(snapshot()));
        assert!(
            !dir.path().join(format!(".{FILE}.tmp")).exists(),
            "the temp file is renamed away"
        );
    }

    #[test]
    fn a_truncated_file_is_rejected() {
        let r = read_after(|mut b| {
            b.truncate(b.len() - 3);
            b
        });
        assert!(matches!(r, Err(CacheError::Length { .. })), "{r:?}");
        let r = read_after(|mut b| {
            b.truncate(10);
            b
        });
        assert!(matches!(r, Err(CacheError::Header)), "{r:?}");
    }

    #[test]
    fn an_altered_body_that_still_parses_is_rejected() {
        let r = read_after(|b| {
            let text = String::from_utf8(b).unwrap();
            let tampered = text.replace("10.0.0.7", "10.6.6.6");
            let body = tampered.split_once('\n').unwrap().1;
            assert!(
                serde_json::from_str::<Stored<'_>>(body).is_ok(),
                "still parses"
            );
            tampered.into_bytes()
        });
        assert!(matches!(r, Err(CacheError::Hash { .. })), "{r:?}");
    }

    #[test]
    fn garbage_and_empty_files_are_rejected() {
        let r = read_after(|_| b"\x00\xff\xfe garbage\n\x01".to_vec());
        assert!(matches!(r, Err(CacheError::Header)), "{r:?}");
        let r = read_after(|_| Vec::new());
        assert!(matches!(r, Err(CacheError::Header)), "{r:?}");
    }

    #[test]
    fn a_file_in_the_older_headerless_format_is_rejected() {
        let r = read_after(|_| serde_json::to_vec(&snapshot()).unwrap());
        assert!(matches!(r, Err(CacheError::OldFormat)), "{r:?}");
    }

    #[test]
    fn a_header_of_another_format_or_with_extra_fields_is_rejected() {
        let r = read_after(|b| {
            let text = String::from_utf8(b).unwrap();
            text.replacen(" v3 ", " v9 ", 1).into_bytes()
        });
        assert!(matches!(r, Err(CacheError::Format(f)) if f == "v9"));
        let r = read_after(|b| {
            let text = String::from_utf8(b).unwrap();
            let (header, body) = text.split_once('\n').unwrap();
            format!("{header} extra=1\n{body}").into_bytes()
        });
        assert!(matches!(r, Err(CacheError::Header)), "{r:?}");
    }

    #[test]
    fn a_header_rewritten_to_match_a_body_that_is_not_a_snapshot_is_rejected() {
        let r = read_after(|_| {
            let body = br#"{"revision":"four"}"#;
            let mut b = format!(
                "{MAGIC} {FORMAT} len={} hash={:016x}\n",
                body.len(),
                stable_hash(body)
            )
            .into_bytes();
            b.extend_from_slice(body);
            b
        });
        assert!(matches!(r, Err(CacheError::Body(_))), "{r:?}");
    }

    /// The names of the files in `dir` starting with `prefix`, sorted.
    pub(super) fn files(dir: &Path, prefix: &str) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with(prefix))
            .collect();
        names.sort();
        names
    }

    fn rules_files(dir: &Path) -> Vec<String> {
        files(dir, RULES_PREFIX)
    }

    fn inode(path: &Path) -> u64 {
        fs::metadata(path).unwrap().ino()
    }

    #[test]
    fn an_endpoint_change_writes_the_snapshot_and_not_the_rules_again() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path().into());
        let first = snapshot();
        cache.write(&first, &Change::default()).unwrap();
        let [rules] = rules_files(dir.path()).try_into().unwrap();
        let before = inode(&dir.path().join(&rules));

        // Shared text, then an equal copy (as after a reconnect): neither rewrites it.
        let mut next = first.clone();
        next.endpoints.clear();
        cache.write(&next, &Change::default()).unwrap();
        let mut copy = next.clone();
        copy.revision = 5;
        copy.rules = Arc::from(&*first.rules);
        cache.write(&copy, &Change::default()).unwrap();
        assert_eq!(
            inode(&dir.path().join(&rules)),
            before,
            "rules not rewritten"
        );
        assert_eq!(read(dir.path()).unwrap(), Some(copy));
    }

    #[test]
    fn new_rules_replace_the_old_rules_file() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path().into());
        cache.write(&snapshot(), &Change::default()).unwrap();
        let old = rules_files(dir.path());
        let mut next = snapshot();
        next.rules = "apiVersion: graylane.io/v1\nkind: TagPolicy\n".into();
        cache.write(&next, &Change::default()).unwrap();
        let now = rules_files(dir.path());
        assert_eq!(now.len(), 1, "{now:?}");
        assert_ne!(now, old);
        assert_eq!(read(dir.path()).unwrap(), Some(next));
    }

    #[test]
    fn a_missing_or_altered_rules_file_is_rejected_and_written_again() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path().into());
        cache.write(&snapshot(), &Change::default()).unwrap();
        let [rules] = rules_files(dir.path()).try_into().unwrap();
        let path = dir.path().join(&rules);

        let text = fs::read_to_string(&path).unwrap();
        fs::write(&path, text.replace("Lane", "Lame")).unwrap();
        let r = read(dir.path());
        assert!(
            matches!(&r, Err(CacheError::Rules { file, reason }) if *file == rules && reason.contains("altered")),
            "{r:?}"
        );
        fs::write(&path, format!("{text}#")).unwrap();
        let r = read(dir.path());
        assert!(
            matches!(&r, Err(CacheError::Rules { reason, .. }) if reason.contains("bytes")),
            "{r:?}"
        );
        fs::remove_file(&path).unwrap();
        let r = read(dir.path());
        assert!(matches!(r, Err(CacheError::Rules { .. })), "{r:?}");

        // The same rules again: the file this process wrote is gone, so it is rewritten.
        cache.write(&snapshot(), &Change::default()).unwrap();
        assert_eq!(read(dir.path()).unwrap(), Some(snapshot()));
    }

    #[test]
    fn a_file_with_the_rules_inline_is_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let body = serde_json::to_vec(&snapshot()).unwrap();
        fs::write(
            dir.path().join(FILE),
            with_header(FORMAT_INLINE, &body, stable_hash(&body)),
        )
        .unwrap();
        assert_eq!(read(dir.path()).unwrap(), Some(snapshot()));
    }
}
