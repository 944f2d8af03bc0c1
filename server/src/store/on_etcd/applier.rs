//! Follows etcd's log into this node's cache and onto its bus: the same
//! changes, in the same (revision) order, on every node.
//!
//! Each revision becomes change events with `seq` = the revision, written to
//! the cache (records, tombstones, change log, last seq) in one fjall batch;
//! then `durable` moves, the events go on the bus, then `published` moves,
//! which is what a write on this node waits for before it answers. No fsync:
//! etcd holds the durable copy, an atomic batch keeps the cache a prefix of
//! the log, and a restart resumes the watch from the cache's last seq.
//!
//! Accounts, tokens, sessions and table declarations go into the cache the
//! same way, in the same batch (`state_cache.rs` says where), and a change
//! to who may do what moves `access` on every node, so live connections
//! everywhere re-check their credentials.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use app::event::{ChangeType, Origin};
use tokio::sync::watch;

use super::Cache;
use super::envelope::{Envelope, TransientEnvelope};
use super::shares::ShareNodes;
use super::state_cache::{self, Effects};
use crate::bus::Bus;
use crate::clock;
use crate::store::etcd::{EtcdError, EtcdLog, Key, KeyKind, LogEntry};
use crate::store::writer::{TOMBSTONE_PREFIX, tombstone_key};
use crate::store::{
    LAST_SEQ_KEY, StoreError, StoredRecord, Tables, decode_record, decode_seq, record_key,
};

/// How long the applier waits before it watches again after a failure.
const REWATCH_PAUSE: std::time::Duration = std::time::Duration::from_secs(1);

/// Follows the etcd log into the cache and onto the bus.
pub(super) struct Applier {
    pub log: EtcdLog,
    pub cache: Cache,
    pub durable: watch::Sender<u64>,
    pub published: watch::Sender<u64>,
    /// The declared tables, kept as the cache's `table:` keys say.
    pub tables: Tables,
    /// The store's `access_changes`.
    pub access: watch::Sender<u64>,
    pub log_start: Arc<AtomicU64>,
    pub bus: Bus,
    /// How many revisions back the cache's change log reaches.
    pub window: u64,
    /// The last revision applied.
    pub last: u64,
    pub failed: watch::Sender<Option<String>>,
    /// Which nodes have members of each MQTT shared subscription, as of
    /// each revision: updated before any later event goes on the bus.
    pub shares: Arc<ShareNodes>,
}

impl Applier {
    /// Applies revisions for as long as the node runs. A watch that fails
    /// (etcd unreachable for longer than the watch retries) is made again
    /// after a pause: the node serves what it has meanwhile, and its writes
    /// fail. Only a cache that cannot be written stops the process.
    pub async fn run(mut self) {
        loop {
            let mut watch = self.log.watch_from(self.last + 1);
            let ended = loop {
                let entry = match watch.next().await {
                    Ok(entry) => entry,
                    Err(e) => break e,
                };
                if let Err(e) = self.apply(entry) {
                    let reason = format!("cannot write this node's cache of etcd: {e}");
                    tracing::error!("{reason}");
                    self.failed.send_replace(Some(reason));
                    return;
                }
            };
            match ended {
                EtcdError::Compacted {
                    compact_revision, ..
                } => {
                    // Away longer than etcd keeps history: the changes in
                    // between are gone, so every subscriber is told (cut off,
                    // as a slow one is) and the cache starts again from the
                    // records as they are now.
                    tracing::warn!(
                        last = self.last,
                        compact_revision,
                        "etcd applier: behind the compaction floor; re-reading the records"
                    );
                    match self.resnapshot().await {
                        Ok(()) => self.bus.cut_off_all(),
                        Err(e) => {
                            tracing::error!("etcd applier: re-reading the records failed: {e}");
                            tokio::time::sleep(REWATCH_PAUSE).await;
                        }
                    }
                }
                e => {
                    tracing::error!("etcd applier: the watch ended ({e}); watching again");
                    tokio::time::sleep(REWATCH_PAUSE).await;
                }
            }
        }
    }

    /// Replaces the cache's whole state (records, accounts, tokens,
    /// sessions, tables) with etcd's at its current revision.
    pub async fn resnapshot(&mut self) -> Result<(), StoreError> {
        let state = self.log.read_state(None).await.map_err(super::etcd_error)?;
        let shares = self
            .log
            .read_shares(Some(state.revision))
            .await
            .map_err(super::etcd_error)?;
        let cache = self.cache.clone();
        let tables = self.tables.clone();
        let revision = state.revision;
        // No record key at all (deletes leave tombstones, so none was ever
        // written): every change of this store is still to come, and a
        // resume from the very start (`since=0`) has nothing to miss.
        let untouched = state.of(KeyKind::Record).next().is_none();
        crate::store::blocking(move || {
            let mut batch = cache.db.batch();
            for guard in cache.records.iter() {
                let (key, _) = guard.into_inner()?;
                batch.remove(&cache.records, key.to_vec());
            }
            for guard in cache.meta.prefix(TOMBSTONE_PREFIX) {
                let (key, _) = guard.into_inner()?;
                batch.remove(&cache.meta, key.to_vec());
            }
            // The log before the snapshot has gaps nobody can fill now.
            for guard in cache.changes.iter() {
                let (key, _) = guard.into_inner()?;
                batch.remove(&cache.changes, key.to_vec());
            }
            let mut effects = Effects::default();
            state_cache::replace_all(&cache, &mut batch, state.items.iter(), &mut effects)?;
            for item in state.items {
                let Ok(record) = item.into_record() else {
                    continue;
                };
                let envelope: Envelope = match serde_json::from_slice(&record.value) {
                    Ok(envelope) => envelope,
                    Err(e) => {
                        tracing::warn!(table = %record.table, id = %record.id, "not a record envelope: {e}");
                        continue;
                    }
                };
                let key = record_key(&record.table, &record.id);
                put_state(&cache, &mut batch, key, &envelope, record.mod_revision)?;
            }
            batch.insert(&cache.meta, LAST_SEQ_KEY, revision.to_be_bytes().to_vec());
            effects.apply_tables(&tables);
            batch.commit()?;
            Ok(())
        })
        .await?;
        self.shares.replace_all(shares.members);
        self.last = revision;
        let log_start = if untouched { 1 } else { revision + 1 };
        self.log_start.store(log_start, Ordering::Release);
        self.durable.send_replace(revision);
        // Any account or token may have changed while this node was away.
        self.access.send_modify(|n| *n = n.wrapping_add(1));
        self.published.send_replace(revision);
        Ok(())
    }

    /// One revision: into the cache, then `durable`, the bus, `published`.
    fn apply(&mut self, entry: LogEntry) -> Result<(), StoreError> {
        let revision = entry.revision;
        if revision <= self.last {
            return Ok(());
        }
        let cache = &self.cache;
        let mut batch = cache.db.batch();
        let mut events = Vec::new();
        let mut effects = Effects::default();
        let mut logged = 0u32;
        if !entry.shares.is_empty() {
            self.shares.apply(revision, &entry.shares);
        }
        for change in entry.changes {
            match &change.key {
                Key::Record { table, id } => {
                    let key = record_key(table, id);
                    let deleted_outside = change.value.is_none();
                    let envelope = match change.value {
                        Some(bytes) => match serde_json::from_slice::<Envelope>(&bytes) {
                            Ok(envelope) => envelope,
                            Err(e) => {
                                tracing::warn!(%table, %id, "not a record envelope: {e}");
                                continue;
                            }
                        },
                        // A key deleted outside Marquee (etcdctl): a delete.
                        None => match cache.records.get(&key)? {
                            Some(bytes) => Envelope {
                                version: decode_record(&bytes)?.version + 1,
                                ts: clock::now_rfc3339(),
                                origin: Origin::System,
                                kind: ChangeType::Delete,
                                created: false,
                                wid: String::new(),
                                value: None,
                                mqtt: None,
                            },
                            None => continue,
                        },
                    };
                    // A key deleted outside Marquee is absent in etcd: its
                    // tombstone has no revision to compare with (0).
                    let tombstone_revision = if deleted_outside { 0 } else { revision };
                    put_state(cache, &mut batch, key, &envelope, tombstone_revision)?;
                    let event = envelope.event(table, id, revision);
                    let bytes = serde_json::to_vec(&event)
                        .map_err(|e| StoreError::Storage(e.to_string()))?;
                    batch.insert(&cache.changes, change_log_key(revision, logged), bytes);
                    logged += 1;
                    events.push(Arc::new(event));
                }
                Key::Transient(_) => {
                    let Some(bytes) = change.value else { continue };
                    match serde_json::from_slice::<Vec<TransientEnvelope>>(&bytes) {
                        Ok(list) => events.extend((0u32..).zip(list).map(|(index, t)| {
                            let mut event = t.into_event();
                            // What names it alike on every node.
                            event.carried_at = Some((revision, index));
                            Arc::new(event)
                        })),
                        Err(e) => tracing::warn!(key = %change.key, "not transient publishes: {e}"),
                    }
                }
                Key::Account(_) | Key::Token(_) | Key::Session(_) | Key::Table(_) => {
                    state_cache::apply(
                        cache,
                        &mut batch,
                        &change.key,
                        change.value.as_deref(),
                        revision,
                        &mut effects,
                    );
                }
            }
        }
        batch.insert(&cache.meta, LAST_SEQ_KEY, revision.to_be_bytes().to_vec());
        let keep_from = revision.saturating_sub(self.window) + 1;
        if keep_from > self.log_start.load(Ordering::Acquire) {
            for guard in cache
                .changes
                .range(..keep_from.to_be_bytes().to_vec())
                .take(256)
            {
                let key = guard.key()?;
                batch.remove(&cache.changes, key.to_vec());
            }
        }
        effects.apply_tables(&self.tables);
        batch.commit()?;
        self.last = revision;
        if keep_from > self.log_start.load(Ordering::Acquire) {
            self.log_start.store(keep_from, Ordering::Release);
        }
        self.durable.send_replace(revision);
        for event in events {
            self.bus.publish(event);
        }
        // Before `published`: a write that removed a token or changed an
        // account answers only once connections here have been told.
        if effects.access {
            self.access.send_modify(|n| *n = n.wrapping_add(1));
        }
        self.published.send_replace(revision);
        Ok(())
    }
}

/// The change log's key for the `index`th record change of a revision: the
/// revision (as the embedded store's seq), then the index from the second on.
/// Marquee's own writes make one change per revision; a batch written by
/// another tool may make more, all with the same seq.
fn change_log_key(revision: u64, index: u32) -> Vec<u8> {
    let mut key = revision.to_be_bytes().to_vec();
    if index > 0 {
        key.extend_from_slice(&index.to_be_bytes());
    }
    key
}

/// Writes a record's state (value or tombstone) into the cache batch.
fn put_state(
    cache: &Cache,
    batch: &mut fjall::OwnedWriteBatch,
    key: Vec<u8>,
    envelope: &Envelope,
    mod_revision: u64,
) -> Result<(), StoreError> {
    match &envelope.value {
        Some(value) => {
            let record = StoredRecord {
                version: envelope.version,
                seq: mod_revision,
                ts: envelope.ts.clone(),
                origin: envelope.origin,
                value: value.clone(),
            };
            let bytes =
                serde_json::to_vec(&record).map_err(|e| StoreError::Storage(e.to_string()))?;
            batch.remove(&cache.meta, tombstone_key(&key));
            batch.insert(&cache.records, key, bytes);
        }
        None => {
            let mut tomb = envelope.version.to_be_bytes().to_vec();
            tomb.extend_from_slice(&mod_revision.to_be_bytes());
            batch.insert(&cache.meta, tombstone_key(&key), tomb);
            batch.remove(&cache.records, key);
        }
    }
    Ok(())
}

/// A cached tombstone: the version deleted at (first 8 bytes, as the
/// embedded store keeps it) and, on etcd, the tombstone's mod revision.
pub(super) fn decode_tombstone(bytes: &[u8]) -> (u64, u64) {
    let version = decode_seq(bytes);
    let revision = bytes.get(8..).map_or(0, decode_seq);
    (version, revision)
}
