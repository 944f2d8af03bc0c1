//! How the Store's state other than records (accounts, tokens, saved MQTT
//! sessions, table declarations) sits in a node's cache: in the very
//! keyspaces and keys the embedded store keeps it in, so every read of it
//! (`Store::account`, `tokens`, `saved_sessions`, `tables`, …) is the same
//! code on both; plus each key's etcd mod revision, in a keyspace of its own,
//! which the writes (`state.rs`) condition on so that a write planned on a
//! stale cache fails instead of undoing another node's change.

use fjall::{Keyspace, OwnedWriteBatch, Readable, Snapshot};

use super::Cache;
use crate::store::etcd::{Item, Key};
use crate::store::{
    BUILTIN_TABLES, SESSION_KEY_PREFIX, StoreError, TABLE_KEY_PREFIX, TableDecl, TableDef, Tables,
    decode_seq, table_def, table_key,
};

/// The keyspace of the mod revisions of the cached non-record keys, by the
/// key's path under the etcd prefix (`acct/alice`, `tbl/things`, …). Only a
/// cache of an etcd store has it.
pub(in crate::store) const REVISIONS_KEYSPACE: &str = "etcd_revisions";

/// What applying state changes means beyond the cache's own batch.
#[derive(Default)]
pub(super) struct Effects {
    /// An account was written or removed, or a token removed: live
    /// connections re-check their credentials (as on the embedded store, a
    /// token written is not a reason: it takes nobody's access away).
    pub access: bool,
    /// Every declared table is replaced (a snapshot), before `tables`.
    pub reset_tables: bool,
    /// Tables declared (with their definition) or dropped (`None`), in order.
    pub tables: Vec<(String, Option<TableDef>)>,
}

impl Effects {
    /// Brings the in-memory table list to what the cache batch holds. Called
    /// before that batch commits, so a write that reads a table's schema from
    /// the list and its revision from the cache never pairs a newer revision
    /// with an older schema (the other way round, its condition fails).
    pub fn apply_tables(&mut self, tables: &Tables) {
        if !self.reset_tables && self.tables.is_empty() {
            return;
        }
        let mut tables = tables.write().unwrap_or_else(|p| p.into_inner());
        if self.reset_tables {
            tables.retain(|_, def| def.builtin);
        }
        for (name, def) in self.tables.drain(..) {
            match def {
                Some(def) => {
                    tables.insert(name, def);
                }
                None => {
                    tables.remove(&name);
                }
            }
        }
    }
}

/// Where a non-record key is cached: its keyspace and key there; `None` for
/// records and transient publishes (not cached here) and for a token key
/// that is not hex.
fn cached_at<'a>(cache: &'a Cache, key: &Key) -> Option<(&'a Keyspace, Vec<u8>)> {
    match key {
        Key::Account(name) => Some((&cache.accounts, name.as_bytes().to_vec())),
        Key::Token(hex) => Some((&cache.tokens, unhex(hex)?)),
        Key::Session(id) => Some((
            &cache.meta,
            format!("{SESSION_KEY_PREFIX}{id}").into_bytes(),
        )),
        Key::Table(name) => Some((&cache.meta, table_key(name).into_bytes())),
        Key::Record { .. } | Key::Transient(_) => None,
    }
}

/// Adds one change of a non-record key (`value` `None`: deleted) at
/// `revision` to the cache batch, and what it means to `effects`.
pub(super) fn apply(
    cache: &Cache,
    batch: &mut OwnedWriteBatch,
    key: &Key,
    value: Option<&[u8]>,
    revision: u64,
    effects: &mut Effects,
) {
    let Some((keyspace, local)) = cached_at(cache, key) else {
        tracing::warn!(%key, "not a key this node caches; ignored");
        return;
    };
    // Built-in tables are every node's own: never declared or dropped on etcd.
    if matches!(key, Key::Table(name) if BUILTIN_TABLES.contains(&name.as_str())) {
        tracing::warn!(%key, "a built-in table's key on etcd; ignored");
        return;
    }
    let value = match (key, value) {
        (Key::Table(name), Some(bytes)) => match declaration(name, bytes) {
            Some(def) => {
                effects.tables.push((name.clone(), Some(def)));
                Some(bytes)
            }
            // Not a declaration this node can use: as if absent, so that
            // writes to the table are refused rather than unchecked.
            None => {
                effects.tables.push((name.clone(), None));
                None
            }
        },
        (Key::Table(name), None) => {
            effects.tables.push((name.clone(), None));
            None
        }
        (Key::Account(_), value) => {
            effects.access = true;
            value
        }
        (Key::Token(_), None) => {
            effects.access = true;
            None
        }
        (_, value) => value,
    };
    let path = key.path().into_bytes();
    match value {
        Some(bytes) => {
            batch.insert(keyspace, local, bytes.to_vec());
            batch.insert(&cache.revisions, path, revision.to_be_bytes().to_vec());
        }
        None => {
            batch.remove(keyspace, local);
            batch.remove(&cache.revisions, path);
        }
    }
}

/// Replaces every cached non-record key with `items` (a snapshot's), in
/// the cache batch.
pub(super) fn replace_all<'a>(
    cache: &Cache,
    batch: &mut OwnedWriteBatch,
    items: impl Iterator<Item = &'a Item>,
    effects: &mut Effects,
) -> Result<(), StoreError> {
    let mut clear = |keyspace: &Keyspace, prefix: &[u8]| -> Result<(), StoreError> {
        for guard in keyspace.prefix(prefix) {
            let key = guard.key()?;
            batch.remove(keyspace, key.to_vec());
        }
        Ok(())
    };
    clear(&cache.accounts, b"")?;
    clear(&cache.tokens, b"")?;
    clear(&cache.revisions, b"")?;
    clear(&cache.meta, SESSION_KEY_PREFIX.as_bytes())?;
    clear(&cache.meta, TABLE_KEY_PREFIX.as_bytes())?;
    effects.reset_tables = true;
    effects.access = true;
    for item in items {
        if matches!(item.key, Key::Record { .. } | Key::Transient(_)) {
            continue;
        }
        apply(
            cache,
            batch,
            &item.key,
            Some(&item.value),
            item.mod_revision,
            effects,
        );
    }
    Ok(())
}

/// A table's declaration as etcd holds it (a [`TableDecl`] in JSON, as the
/// embedded store keeps it in its meta keyspace), if this node can use it.
fn declaration(name: &str, bytes: &[u8]) -> Option<TableDef> {
    let decl: TableDecl = match serde_json::from_slice(bytes) {
        Ok(decl) => decl,
        Err(e) => {
            tracing::warn!(table = %name, "not a table declaration: {e}");
            return None;
        }
    };
    if decl.name != name {
        tracing::warn!(table = %name, declared = %decl.name, "a declaration under another table's key; ignored");
        return None;
    }
    match table_def(&decl) {
        Ok(def) => Some(def),
        Err(e) => {
            tracing::warn!(table = %name, "a table declaration this node cannot use: {e}");
            None
        }
    }
}

/// The cache's last seq and the cached mod revisions of `keys` (`None`:
/// absent), read together from one snapshot.
pub(super) fn revisions<const N: usize>(
    cache: &Cache,
    snapshot: &Snapshot,
    keys: [&Key; N],
) -> Result<(u64, [Option<u64>; N]), StoreError> {
    let at = snapshot
        .get(&cache.meta, crate::store::LAST_SEQ_KEY)?
        .map_or(0, |v| decode_seq(&v));
    let mut out = [None; N];
    for (slot, key) in out.iter_mut().zip(keys) {
        *slot = snapshot
            .get(&cache.revisions, key.path())?
            .map(|v| decode_seq(&v));
    }
    Ok((at, out))
}

/// The lower-case hex of a token's hash: its key on etcd.
pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn token_keys_round_trip_through_hex() {
        let hash: Vec<u8> = (0..32u8).map(|i| i.wrapping_mul(37)).collect();
        assert_eq!(unhex(&hex(&hash)), Some(hash));
        assert_eq!(unhex("0g"), None);
        assert_eq!(unhex("abc"), None);
        assert_eq!(unhex(""), Some(Vec::new()));
    }
}
