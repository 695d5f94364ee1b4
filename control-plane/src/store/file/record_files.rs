//! The file store's records: one file per record under `PATH/records/`, so a write
//! costs the size of that record, not of every record (a rollout's verdict rewrote the
//! whole set when they shared one file: 870 KiB per verdict at 100 rollouts).
//!
//! ```text
//! PATH/records/<hex of the key>.json   {"key", "version", "value"} (mode 0600)
//! PATH/records/.version                the version counter, written on delete
//! ```
//!
//! Each file is written as revisions are (temp file, fsync, rename, fsync of the
//! directory). Versions never repeat across restarts: at open the counter is the
//! highest of every record's version and `.version`, and `.version` is written when a
//! record is deleted (the only way a version handed out could leave no file behind).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use super::{unavailable, write_private};
use crate::store::records::Records;
use crate::store::{Record, StoreError};

const DIR: &str = "records";
const COUNTER: &str = ".version";

#[derive(serde::Serialize, serde::Deserialize)]
struct OnDisk {
    key: String,
    version: u64,
    value: String,
}

fn records_dir(dir: &Path) -> PathBuf {
    dir.join(DIR)
}

/// Keys hold `/` and whatever a caller chose: hex keeps every one a plain file name.
fn file_name(key: &str) -> String {
    let mut name = String::with_capacity(key.len() * 2 + 5);
    for b in key.bytes() {
        name.push_str(&format!("{b:02x}"));
    }
    name.push_str(".json");
    name
}

/// Every record, and the counter; a file that cannot be read is an error naming it
/// (never read as "no record": a rollout would start over).
pub(super) fn read(dir: &Path) -> Result<Records, StoreError> {
    let path = records_dir(dir);
    fs::create_dir_all(&path).map_err(|e| unavailable("create", &path, e))?;
    let mut counter = match fs::read_to_string(path.join(COUNTER)) {
        Ok(text) => text
            .trim()
            .parse::<u64>()
            .map_err(|e| StoreError::Corrupt(format!("{}: {e}", path.join(COUNTER).display())))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(unavailable("read", &path.join(COUNTER), e)),
    };
    let mut records = BTreeMap::new();
    let entries = fs::read_dir(&path).map_err(|e| unavailable("list", &path, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| unavailable("list", &path, e))?;
        let file = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(".tmp-") {
            // A write cut short by a crash: never acknowledged.
            let _ = fs::remove_file(&file);
            continue;
        }
        if !name.ends_with(".json") {
            continue;
        }
        let bytes = fs::read(&file).map_err(|e| unavailable("read", &file, e))?;
        let record: OnDisk = serde_json::from_slice(&bytes)
            .map_err(|e| StoreError::Corrupt(format!("{}: {e}", file.display())))?;
        counter = counter.max(record.version);
        records.insert(
            record.key,
            Record {
                version: record.version,
                value: record.value,
            },
        );
    }
    Ok(Records::from_parts(counter, records))
}

/// Writes `key`'s record crash-safely.
pub(super) fn write(dir: &Path, key: &str, record: &Record) -> Result<(), StoreError> {
    let on_disk = OnDisk {
        key: key.to_owned(),
        version: record.version,
        value: record.value.clone(),
    };
    let bytes = serde_json::to_vec(&on_disk)
        .map_err(|e| StoreError::Unavailable(format!("encode record: {e}")))?;
    write_private(&records_dir(dir), &file_name(key), &bytes)
}

/// Removes `key`'s record, keeping `counter` so its version is never handed out again.
pub(super) fn delete(dir: &Path, key: &str, counter: u64) -> Result<(), StoreError> {
    let path = records_dir(dir);
    write_private(&path, COUNTER, counter.to_string().as_bytes())?;
    let file = path.join(file_name(key));
    match fs::remove_file(&file) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(unavailable("remove", &file, e)),
    }
    fs::File::open(&path)
        .and_then(|d| d.sync_all())
        .map_err(|e| unavailable("fsync", &path, e))
}
