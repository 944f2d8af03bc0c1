//! Snapshot reads: the whole Store state (every kind of key), or every record
//! (or one table's), as it was at one revision, and a single key now. A node
//! builds (or rebuilds, after a gap) its local cache from
//! [`EtcdLog::read_state`] at revision `R` and then
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

use super::{
    EtcdError, EtcdLog, Failure, Key, KeyKind, WATCH_MAX_MESSAGE, protocol, revision, to_i64,
};

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

/// A key of the Store's state, of any kind, as etcd holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    pub key: Key,
    pub value: Vec<u8>,
    /// The revision that created it (since its last delete).
    pub create_revision: u64,
    /// The revision that last wrote it.
    pub mod_revision: u64,
    /// Writes since its creation, from 1 (restarts after a delete).
    pub version: u64,
}

impl Item {
    /// The item as a record, or itself back if its key is of another kind.
    pub fn into_record(self) -> Result<Record, Item> {
        match self.key {
            Key::Record { table, id } => Ok(Record {
                table,
                id,
                value: self.value,
                create_revision: self.create_revision,
                mod_revision: self.mod_revision,
                version: self.version,
            }),
            key => Err(Item { key, ..self }),
        }
    }
}

/// The whole Store state as it was at one revision: every key of every
/// kind, in key order (by kind: `acct/`, `r/`, `sess/`, `t/`, `tbl/`, `tok/`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct State {
    /// The revision read at: follow with a watch from `revision + 1`.
    pub revision: u64,
    pub items: Vec<Item>,
}

impl State {
    /// The items of one kind, in key order.
    pub fn of(&self, kind: KeyKind) -> impl Iterator<Item = &Item> {
        self.items
            .iter()
            .filter(move |item| item.key.kind() == kind)
    }
}

/// One key now (`None`: absent), and the revision the read saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GotItem {
    pub revision: u64,
    pub item: Option<Item>,
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
                self.shared.keys.record(table, "")
            }
            None => format!("{}{}", self.shared.keys.root, KeyKind::Record.prefix()),
        };
        let mut pinned = at.map(|at| at.max(1));
        let mut records = Vec::new();
        self.read_range(prefix, &mut pinned, |item| match item.into_record() {
            Ok(record) => records.push(record),
            Err(other) => tracing::warn!(key = %other.key, "not a record key; ignored"),
        })
        .await?;
        Ok(Snapshot {
            revision: pinned.unwrap_or(0),
            records,
        })
    }

    /// The whole Store state (every key of every [`KeyKind`]) at revision
    /// `at` (`None`: now, a linearizable read). One paginated read per kind,
    /// all pinned to the same revision, so the layer's own keys (thousands
    /// of idempotency keys) are never read. See the module doc.
    pub async fn read_state(&self, at: Option<u64>) -> Result<State, EtcdError> {
        let mut pinned = at.map(|at| at.max(1));
        let mut items = Vec::new();
        for kind in KeyKind::ALL {
            let prefix = format!("{}{}", self.shared.keys.root, kind.prefix());
            self.read_range(prefix, &mut pinned, |item| items.push(item))
                .await?;
        }
        Ok(State {
            revision: pinned.unwrap_or(0),
            items,
        })
    }

    /// Every key starting with `prefix`, in pages, at the revision `pinned`
    /// holds, or (if `None`) at the first page's, which is then pinned.
    async fn read_range(
        &self,
        prefix: String,
        pinned: &mut Option<u64>,
        mut each: impl FnMut(Item),
    ) -> Result<(), EtcdError> {
        let end = prefix_end(prefix.as_bytes());
        let mut from = prefix.into_bytes();
        let mut page = self.shared.options.read_page.max(1);
        loop {
            // 0 asks for the newest revision; the first page's header pins it.
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
            if pinned.is_none() {
                *pinned = Some(revision(header.revision())?);
            }
            let kvs = response.kvs();
            for kv in kvs {
                match self.decode_item(kv) {
                    Some(item) => each(item),
                    None => tracing::warn!(
                        key = %String::from_utf8_lossy(kv.key()),
                        "not a Marquee key; ignored"
                    ),
                }
            }
            match kvs.last() {
                Some(last) if response.more() => {
                    from = last.key().to_vec();
                    from.push(0);
                }
                _ => return Ok(()),
            }
        }
    }

    /// One record now, by a linearizable read.
    pub async fn get(&self, table: &str, id: &str) -> Result<Got, EtcdError> {
        check_table(table)?;
        if id.is_empty() {
            return Err(EtcdError::InvalidName("an empty record id".into()));
        }
        let got = self.get_key(&Key::record(table, id)).await?;
        Ok(Got {
            revision: got.revision,
            record: got.item.and_then(|item| item.into_record().ok()),
        })
    }

    /// One key of any kind now, by a linearizable read.
    pub async fn get_key(&self, key: &Key) -> Result<GotItem, EtcdError> {
        key.check().map_err(EtcdError::InvalidName)?;
        let full = self.shared.keys.key(key).into_bytes();
        let response = self
            .retrying("read", || self.range(full.clone(), GetOptions::new()))
            .await?;
        let header = response
            .header()
            .ok_or_else(|| protocol("a read without a header"))?;
        Ok(GotItem {
            revision: revision(header.revision())?,
            item: response.kvs().first().and_then(|kv| self.decode_item(kv)),
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

    fn decode_item(&self, kv: &KeyValue) -> Option<Item> {
        Some(Item {
            key: self.shared.keys.parse(kv.key())?,
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
