//! Records in etcd: `P/records/<key>`, the value as is; a record's version is its
//! key's `mod_revision` (never 0, changes on every write, never reused). Every write
//! is one transaction comparing that `mod_revision` (0: absent); a fenced one also
//! compares `P/leader`'s lease with ours, so a deposed leader writes nothing.

use etcd_client::{
    Compare, CompareOp, GetOptions, KeyValue, SortOrder, SortTarget, Txn, TxnOp, TxnOpResponse,
};

use super::{EtcdStore, once_connected};
use crate::store::records::check_size;
use crate::store::{Record, StoreError};

impl EtcdStore {
    fn record_key(&self, key: &str) -> String {
        format!("{}{key}", self.keys.records)
    }

    pub(super) async fn get_record(&self, key: &str) -> Result<Option<Record>, StoreError> {
        let key = self.record_key(key);
        let response = once_connected(&self.client, |mut c| {
            let key = key.clone();
            async move { c.get(key, None).await }
        })
        .await?;
        response.kvs().first().map(record).transpose()
    }

    pub(super) async fn list_records(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, Record)>, StoreError> {
        let start = self.record_key(prefix);
        let options = GetOptions::new()
            .with_prefix()
            .with_sort(SortTarget::Key, SortOrder::Ascend);
        let response = once_connected(&self.client, |mut c| {
            let (start, options) = (start.clone(), options.clone());
            async move { c.get(start, Some(options)).await }
        })
        .await?;
        response
            .kvs()
            .iter()
            .map(|kv| {
                let full = String::from_utf8_lossy(kv.key());
                let key = full
                    .strip_prefix(&self.keys.records)
                    .ok_or_else(|| StoreError::Corrupt(format!("record key {full:?}")))?;
                Ok((key.to_string(), record(kv)?))
            })
            .collect()
    }

    pub(super) async fn put_record(
        &self,
        key: &str,
        value: String,
        expected: u64,
        fenced: bool,
    ) -> Result<u64, StoreError> {
        check_size(&value)?;
        // Checked here first so a deposed leader does not even reach etcd; etcd
        // checks again in the transaction, which is what makes it safe.
        let fence = if fenced {
            Some(self.fence().ok_or(StoreError::NotLeader)?)
        } else {
            None
        };
        self.write_record(key, value, expected, fence).await
    }

    /// One transaction: `key`'s version is `expected` and, with `fence`, `P/leader`
    /// carries that lease.
    pub(super) async fn write_record(
        &self,
        key: &str,
        value: String,
        expected: u64,
        fence: Option<i64>,
    ) -> Result<u64, StoreError> {
        let full = self.record_key(key);
        let Ok(revision) = i64::try_from(expected) else {
            return Err(self.conflict(key, expected).await);
        };
        let mut when = vec![Compare::mod_revision(
            full.as_str(),
            CompareOp::Equal,
            revision,
        )];
        if let Some(lease) = fence {
            when.push(Compare::lease(
                self.keys.leader.as_str(),
                CompareOp::Equal,
                lease,
            ));
        }
        let txn = Txn::new()
            .when(when)
            .and_then([TxnOp::put(full.as_str(), value, None)])
            .or_else([
                TxnOp::get(full.as_str(), None),
                TxnOp::get(self.keys.leader.as_str(), None),
            ]);
        let response = once_connected(&self.client, |mut c| {
            let txn = txn.clone();
            async move { c.txn(txn).await }
        })
        .await?;
        if response.succeeded() {
            // The transaction's revision is the key's new mod_revision.
            let at = response.header().map_or(0, |h| h.revision());
            return u64::try_from(at)
                .ok()
                .filter(|v| *v > 0)
                .ok_or_else(|| StoreError::Corrupt(format!("etcd answered revision {at}")));
        }
        let answers = response.op_responses();
        if let (Some(lease), Some(TxnOpResponse::Get(leader))) = (fence, answers.get(1))
            && leader.kvs().first().map(KeyValue::lease) != Some(lease)
        {
            return Err(StoreError::NotLeader);
        }
        let actual = match answers.first() {
            Some(TxnOpResponse::Get(get)) => version_of(get.kvs().first())?,
            _ => return Err(unexpected()),
        };
        Err(StoreError::Conflict { expected, actual })
    }

    pub(super) async fn delete_record(&self, key: &str, expected: u64) -> Result<(), StoreError> {
        let full = self.record_key(key);
        let Ok(revision) = i64::try_from(expected) else {
            return match self.conflict(key, expected).await {
                StoreError::Conflict { actual: 0, .. } => Ok(()),
                e => Err(e),
            };
        };
        let txn = Txn::new()
            .when([Compare::mod_revision(
                full.as_str(),
                CompareOp::Equal,
                revision,
            )])
            .and_then([TxnOp::delete(full.as_str(), None)])
            .or_else([TxnOp::get(full.as_str(), None)]);
        let response = once_connected(&self.client, |mut c| {
            let txn = txn.clone();
            async move { c.txn(txn).await }
        })
        .await?;
        if response.succeeded() {
            return Ok(());
        }
        match response.op_responses().first() {
            Some(TxnOpResponse::Get(get)) => match version_of(get.kvs().first())? {
                0 => Ok(()),
                actual => Err(StoreError::Conflict { expected, actual }),
            },
            _ => Err(unexpected()),
        }
    }

    /// The conflict for an `expected` no etcd revision can equal.
    async fn conflict(&self, key: &str, expected: u64) -> StoreError {
        match self.get_record(key).await {
            Ok(record) => StoreError::Conflict {
                expected,
                actual: record.map_or(0, |r| r.version),
            },
            Err(e) => e,
        }
    }
}

fn record(kv: &KeyValue) -> Result<Record, StoreError> {
    let value = String::from_utf8(kv.value().to_vec()).map_err(|e| {
        StoreError::Corrupt(format!(
            "record {:?} in etcd: {e}",
            String::from_utf8_lossy(kv.key())
        ))
    })?;
    Ok(Record {
        version: version_of(Some(kv))?,
        value,
    })
}

/// A key's `mod_revision` as a record version; 0 when absent.
fn version_of(kv: Option<&KeyValue>) -> Result<u64, StoreError> {
    let Some(kv) = kv else { return Ok(0) };
    u64::try_from(kv.mod_revision())
        .ok()
        .filter(|v| *v > 0)
        .ok_or_else(|| StoreError::Corrupt(format!("etcd mod_revision {}", kv.mod_revision())))
}

fn unexpected() -> StoreError {
    StoreError::Corrupt("etcd: unexpected transaction answer".into())
}
