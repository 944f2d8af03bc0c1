//! Snapshot reads: every record (or one table's) as it was at one revision,
//! and a single record now. A node builds (or rebuilds, after a gap) its
//! local cache from [`EtcdLog::read_records`] at revision `R` and then
//! follows [`EtcdLog::watch_from`]`(R + 1)`: the two together give every
//! state from `R` on, with nothing missed or applied twice, because a range
//! read pinned to `R` is exactly the MVCC state at `R`.
//!
//! A read is paginated (etcd's range `limit`, the next page from the key
//! after the last one, every page pinned to the same revision), so a large
//! store never needs one huge message. A page that still exceeds the message
//! limit (a few records near etcd's 1.5 MiB value limit) is read again with
//! half the limit, down to one record, which always fits. A revision below
//! the compaction floor gives [`EtcdError::Compacted`] with the floor: etcd's
//! range error does not carry the floor, so a watch from that revision,
//! which etcd cancels with it, is asked for it.

use etcd_client::{GetOptions, KeyValue};

use super::{EtcdError, EtcdLog, Failure, WATCH_MAX_MESSAGE, protocol, revision, to_i64};

/// A record as etcd holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub table: String,
    pub id: String,
    pub value: Vec<u8>,
    /// The revision that created it (since its last delete).
    pub create_revision: u64,
    /// The revision that last wrote it: its ETag, unique across the store.
    pub mod_revision: u64,
    /// Writes since its creation, from 1 (restarts after a delete).
    pub version: u64,
}

/// Records as they were at one revision, in key order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// The revision read at: follow with a watch from `revision + 1`.
    pub revision: u64,
    pub records: Vec<Record>,
}

/// One record now (`None`: absent), and the revision the read saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Got {
    pub revision: u64,
    pub record: Option<Record>,
}

impl EtcdLog {
    /// Every record (of `table`, or of all tables) at revision `at` (`None`:
    /// now, a linearizable read), in key order. See the module doc.
    pub async fn read_records(
        &self,
        table: Option<&str>,
        at: Option<u64>,
    ) -> Result<Snapshot, EtcdError> {
        let prefix = match table {
            Some(table) => {
                check_table(table)?;
                format!("{}r/{table}/", self.shared.keys.root)
            }
            None => format!("{}r/", self.shared.keys.root),
        };
        let end = prefix_end(prefix.as_bytes());
        let mut from = prefix.into_bytes();
        // 0 asks for the newest revision; the first page's header pins it.
        let mut pinned = at.map(|at| at.max(1));
        let mut page = self.shared.options.read_page.max(1);
        let mut records = Vec::new();
        loop {
            let read_at = pinned.map_or(Ok(0), to_i64)?;
            let limit = i64::try_from(page).unwrap_or(i64::MAX);
            let result = self
                .retrying("snapshot read", || {
                    let options = GetOptions::new()
                        .with_range(end.clone())
                        .with_limit(limit)
                        .with_revision(read_at);
                    self.range(from.clone(), options)
                })
                .await;
            let response = match result {
                Ok(response) => response,
                Err(EtcdError::Rejected(reason)) if reason.contains("message length too large") => {
                    if page == 1 {
                        return Err(EtcdError::Rejected(reason));
                    }
                    page = (page / 2).max(1);
                    tracing::debug!(page, "etcd snapshot read: a page was too large, halving");
                    continue;
                }
                Err(EtcdError::Rejected(reason)) if reason.contains("has been compacted") => {
                    let start = pinned.unwrap_or(0);
                    return Err(EtcdError::Compacted {
                        start,
                        compact_revision: self.compaction_floor(start).await,
                    });
                }
                Err(e) => return Err(e),
            };
            let header = response
                .header()
                .ok_or_else(|| protocol("a range read without a header"))?;
            let at = *pinned.get_or_insert(revision(header.revision())?);
            let kvs = response.kvs();
            for kv in kvs {
                match self.decode_record(kv) {
                    Some(record) => records.push(record),
                    None => tracing::warn!(
                        key = %String::from_utf8_lossy(kv.key()),
                        "not a record key; ignored"
                    ),
                }
            }
            match kvs.last() {
                Some(last) if response.more() => {
                    from = last.key().to_vec();
                    from.push(0);
                }
                _ => {
                    return Ok(Snapshot {
                        revision: at,
                        records,
                    });
                }
            }
        }
    }

    /// One record now, by a linearizable read.
    pub async fn get(&self, table: &str, id: &str) -> Result<Got, EtcdError> {
        check_table(table)?;
        if id.is_empty() {
            return Err(EtcdError::InvalidName("an empty record id".into()));
        }
        let key = self.shared.keys.record(table, id).into_bytes();
        let response = self
            .retrying("read", || self.range(key.clone(), GetOptions::new()))
            .await?;
        let header = response
            .header()
            .ok_or_else(|| protocol("a read without a header"))?;
        Ok(Got {
            revision: revision(header.revision())?,
            record: response.kvs().first().and_then(|kv| self.decode_record(kv)),
        })
    }

    /// One range request to the preferred member.
    pub(super) async fn range(
        &self,
        key: Vec<u8>,
        options: GetOptions,
    ) -> Result<etcd_client::GetResponse, Failure> {
        let (member, client) = self.member()?;
        let mut kv = client
            .kv_client()
            .max_decoding_message_size(WATCH_MAX_MESSAGE);
        self.deadline(member, kv.get(key, Some(options))).await
    }

    /// The compaction floor, learnt from a watch from `start` that etcd
    /// cancels with it; `start + 1` (the least it can be) if that fails.
    async fn compaction_floor(&self, start: u64) -> u64 {
        let mut watch = self.watch_from(start);
        let wait = self.shared.options.request_timeout * 2;
        match tokio::time::timeout(wait, watch.next()).await {
            Ok(Err(EtcdError::Compacted {
                compact_revision, ..
            })) => compact_revision,
            _ => start + 1,
        }
    }

    fn decode_record(&self, kv: &KeyValue) -> Option<Record> {
        let rest = kv
            .key()
            .strip_prefix(self.shared.keys.root.as_bytes())?
            .strip_prefix(b"r/")?;
        let (table, id) = std::str::from_utf8(rest).ok()?.split_once('/')?;
        Some(Record {
            table: table.to_owned(),
            id: id.to_owned(),
            value: kv.value().to_vec(),
            create_revision: u64::try_from(kv.create_revision()).ok()?,
            mod_revision: u64::try_from(kv.mod_revision()).ok()?,
            version: u64::try_from(kv.version()).ok()?,
        })
    }
}

fn check_table(table: &str) -> Result<(), EtcdError> {
    if table.is_empty() || table.contains('/') {
        return Err(EtcdError::InvalidName(format!(
            "table '{table}': a table is non-empty, without '/'"
        )));
    }
    Ok(())
}

/// The end of the range of keys starting with `prefix`: the first key after them all.
pub(super) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte 0xff: to the end of the keyspace.
    vec![0]
}
