//! `--cache-dir`: the last good snapshot on disk, so a sidecar that starts while the
//! control plane is down still routes. Written like the control plane's file store:
//! temp file, fsync, rename, fsync of the directory, so a crash leaves the old or the
//! new file, never a torn one.
//!
//! The file is still not trusted when read back: a disk, a copy or a hand edit can
//! change it. Its first line carries the body's length and `stable_hash`, written in
//! the same file (one rename makes header and body appear together), and a file whose
//! header is missing, of another format, or does not match its body is rejected whole.
//! The hash catches accidents, not an attacker who can write the directory (they can
//! rewrite the header too).
//!
//! ```text
//! graylane-snapshot-cache v2 len=1234 hash=0123456789abcdef\n
//! {"revision":4,"rules":"...","endpoints":{...}}
//! ```
//!
//! The name stays `snapshot.json`, the name of the headerless format before it, so an
//! older sidecar's file is found and rejected (and counted) instead of lingering, and
//! an older sidecar fails to parse this one instead of trusting it.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

use graylane_routing::stable_hash;

use super::received::Received;

const FILE: &str = "snapshot.json";
const MAGIC: &str = "graylane-snapshot-cache";
const FORMAT: &str = "v2";

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
}

/// Replaces the cached snapshot. Blocks (two fsyncs): call it off the runtime threads.
/// Callers order concurrent writes themselves; the last rename wins.
pub(super) fn write(dir: &Path, received: &Received) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".{FILE}.tmp"));
    let bytes = encode(received).map_err(io::Error::other)?;
    let mut file = File::create(&tmp)?;
    file.write_all(&bytes)?;
    file.sync_all()?;
    fs::rename(&tmp, dir.join(FILE))?;
    File::open(dir)?.sync_all()
}

/// The cached snapshot; `Ok(None)` when there is none. Blocks: call it off the runtime
/// threads.
pub(super) fn read(dir: &Path) -> Result<Option<Received>, CacheError> {
    match fs::read(dir.join(FILE)) {
        Ok(bytes) => decode(&bytes).map(Some),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn encode(received: &Received) -> serde_json::Result<Vec<u8>> {
    let body = serde_json::to_vec(received)?;
    let header = format!(
        "{MAGIC} {FORMAT} len={} hash={:016x}\n",
        body.len(),
        stable_hash(&body)
    );
    let mut bytes = Vec::with_capacity(header.len() + body.len());
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(&body);
    Ok(bytes)
}

/// Checks the header against the body, then parses the body.
fn decode(bytes: &[u8]) -> Result<Received, CacheError> {
    // The format before this one was the bare JSON object.
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
    match fields.next() {
        Some(FORMAT) => {}
        Some(other) => return Err(CacheError::Format(other.chars().take(32).collect())),
        None => return Err(CacheError::Header),
    }
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
    serde_json::from_slice(body).map_err(CacheError::Body)
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
    use std::collections::BTreeMap;

    use super::super::received::CachedEndpoint;
    use super::*;

    fn snapshot() -> Received {
        let endpoint = CachedEndpoint {
            service: "orders".into(),
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
        write(dir.path(), &snapshot()).unwrap();
        let path = dir.path().join(FILE);
        fs::write(&path, edit(fs::read(&path).unwrap())).unwrap();
        read(dir.path())
    }

    #[test]
    fn written_snapshots_read_back_equal() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read(dir.path()).unwrap().is_none());
        write(dir.path(), &snapshot()).unwrap();
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
                serde_json::from_str::<Received>(body).is_ok(),
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
            text.replacen(" v2 ", " v3 ", 1).into_bytes()
        });
        assert!(matches!(r, Err(CacheError::Format(f)) if f == "v3"));
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
}
