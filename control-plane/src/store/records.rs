//! The records of the embedded stores (memory, file): a map plus a version counter,
//! with the compare-and-swap rules of `Store::record_put`/`record_delete` written
//! once. The file store persists each record and the counter (`file/record_files.rs`),
//! so a version is never handed out twice (no ABA after delete/recreate).

use std::collections::BTreeMap;
use std::ops::Bound;

use super::{MAX_RECORD_BYTES, Record, StoreError};

/// Every record of one store. Unknown fields are ignored, not refused: a store
/// written by a newer version must still open after a downgrade.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(super) struct Records {
    /// The last version handed out (0: none yet).
    version: u64,
    records: BTreeMap<String, Record>,
}

impl Records {
    /// The records read back from disk, with the last version handed out.
    pub(super) fn from_parts(version: u64, records: BTreeMap<String, Record>) -> Self {
        Self { version, records }
    }

    /// The last version handed out.
    pub(super) fn counter(&self) -> u64 {
        self.version
    }

    pub(super) fn get(&self, key: &str) -> Option<Record> {
        self.records.get(key).cloned()
    }

    /// Keys starting with `prefix`, in key order (the map's order).
    pub(super) fn list(&self, prefix: &str) -> Vec<(String, Record)> {
        self.records
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(|(key, _)| key.starts_with(prefix))
            .map(|(key, record)| (key.clone(), record.clone()))
            .collect()
    }

    /// Applies a put on `self` if `expected` matches; the caller persists the result
    /// before it publishes it, so a failed write changes nothing.
    pub(super) fn put(
        &mut self,
        key: &str,
        value: String,
        expected: u64,
    ) -> Result<u64, StoreError> {
        check_size(&value)?;
        let actual = self.records.get(key).map_or(0, |r| r.version);
        if actual != expected {
            return Err(StoreError::Conflict { expected, actual });
        }
        self.version += 1;
        let version = self.version;
        self.records
            .insert(key.to_string(), Record { version, value });
        Ok(version)
    }

    /// Removes `key` if its version is `expected`; `Ok(false)`: it was absent (nothing
    /// to write).
    pub(super) fn delete(&mut self, key: &str, expected: u64) -> Result<bool, StoreError> {
        match self.records.get(key) {
            None => Ok(false),
            Some(r) if r.version == expected => {
                self.records.remove(key);
                Ok(true)
            }
            Some(r) => Err(StoreError::Conflict {
                expected,
                actual: r.version,
            }),
        }
    }
}

/// Every backend refuses the same sizes, so a rollout that works on a file store does
/// not fail on etcd.
pub(super) fn check_size(value: &str) -> Result<(), StoreError> {
    if value.len() > MAX_RECORD_BYTES {
        return Err(StoreError::TooLarge(format!(
            "a record of {} bytes; the store takes at most {MAX_RECORD_BYTES}",
            value.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::Records;

    #[test]
    fn list_stops_at_the_end_of_the_prefix() {
        let mut r = Records::default();
        for key in ["a/1", "a/2", "a0", "b/1", "a/"] {
            r.put(key, key.into(), 0).expect("put");
        }
        let keys: Vec<String> = r.list("a/").into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["a/", "a/1", "a/2"]);
        assert_eq!(r.list("").len(), 5);
        assert!(r.list("c").is_empty());
    }

    #[test]
    fn versions_are_never_reused_after_a_delete() {
        let mut r = Records::default();
        let v1 = r.put("k", "1".into(), 0).expect("put");
        assert!(r.delete("k", v1).expect("delete"));
        let v2 = r.put("k", "2".into(), 0).expect("recreate");
        assert!(v2 > v1, "{v2} after {v1}");
        let json = serde_json::to_string(&r).expect("encode");
        let back: Records = serde_json::from_str(&json).expect("decode");
        assert_eq!(back, r);
    }
}
