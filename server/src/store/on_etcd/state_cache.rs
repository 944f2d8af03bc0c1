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
    use std::collections::BTreeMap;
    use std::sync::{Arc, RwLock};

    use super::*;

    fn cache(dir: &tempfile::TempDir) -> Cache {
        let db = fjall::Database::builder(dir.path()).open().unwrap();
        let keyspace = |name: &str| {
            db.keyspace(name, fjall::KeyspaceCreateOptions::default)
                .unwrap()
        };
        Cache {
            records: keyspace("records"),
            changes: keyspace("changes"),
            meta: keyspace("meta"),
            accounts: keyspace("accounts"),
            tokens: keyspace("tokens"),
            revisions: keyspace(REVISIONS_KEYSPACE),
            db,
        }
    }

    fn builtins() -> Tables {
        let tables = BUILTIN_TABLES
            .iter()
            .map(|name| {
                let def = TableDef {
                    builtin: true,
                    schema: None,
                };
                ((*name).to_owned(), def)
            })
            .collect::<BTreeMap<_, _>>();
        Arc::new(RwLock::new(tables))
    }

    /// Applies `changes` as one revision each, from 10 on; the effects of each.
    fn apply_all(cache: &Cache, tables: &Tables, changes: &[(Key, Option<&[u8]>)]) -> Vec<bool> {
        let mut access = Vec::new();
        for (revision, (key, value)) in (10..).zip(changes) {
            let mut batch = cache.db.batch();
            let mut effects = Effects::default();
            apply(cache, &mut batch, key, *value, revision, &mut effects);
            effects.apply_tables(tables);
            batch.commit().unwrap();
            access.push(effects.access);
        }
        access
    }

    fn decl(name: &str) -> Vec<u8> {
        serde_json::to_vec(&TableDecl {
            name: name.into(),
            schema: None,
        })
        .unwrap()
    }

    #[test]
    fn each_kind_lands_where_the_embedded_store_keeps_it() {
        let dir = tempfile::tempdir().unwrap();
        let cache = cache(&dir);
        let tables = builtins();
        let hash = [0xab_u8; 32];
        let things = decl("things");
        let access = apply_all(
            &cache,
            &tables,
            &[
                (Key::Account("alice".into()), Some(b"alice")),
                (Key::Token(hex(&hash)), Some(b"token")),
                (Key::Session("dev/1".into()), Some(b"subs")),
                (Key::Table("things".into()), Some(&things)),
                (Key::Token(hex(&hash)), None),
            ],
        );
        // A token written takes no one's access away; its removal may.
        assert_eq!(access, vec![true, false, false, false, true]);
        assert_eq!(
            cache.accounts.get("alice").unwrap().as_deref(),
            Some(&b"alice"[..])
        );
        assert_eq!(cache.tokens.get(hash).unwrap(), None);
        assert_eq!(
            cache.meta.get("session:dev/1").unwrap().as_deref(),
            Some(&b"subs"[..])
        );
        assert_eq!(
            cache.meta.get("table:things").unwrap().as_deref(),
            Some(things.as_slice())
        );
        assert!(tables.read().unwrap().contains_key("things"));
        let snapshot = cache.db.snapshot();
        let (_, revisions) = revisions(
            &cache,
            &snapshot,
            [
                &Key::Account("alice".into()),
                &Key::Table("things".into()),
                &Key::Token(hex(&hash)),
            ],
        )
        .unwrap();
        assert_eq!(revisions, [Some(10), Some(13), None]);
    }

    #[test]
    fn built_in_and_unusable_declarations_change_no_table() {
        let dir = tempfile::tempdir().unwrap();
        let cache = cache(&dir);
        let tables = builtins();
        let signs = decl("signs");
        let other = decl("other");
        let bad_schema = serde_json::to_vec(&serde_json::json!({
            "name": "strict", "schema": {"type": "nonsense"}
        }))
        .unwrap();
        let strict = decl("strict");
        apply_all(
            &cache,
            &tables,
            &[
                (Key::Table("signs".into()), Some(&signs)),
                (Key::Table("signs".into()), None),
                (Key::Table("mismatch".into()), Some(&other)),
                (Key::Table("strict".into()), Some(&strict)),
                // Re-declared with a schema this node cannot use: refused
                // writes beat unchecked ones.
                (Key::Table("strict".into()), Some(&bad_schema)),
            ],
        );
        let tables = tables.read().unwrap();
        assert!(tables.get("signs").is_some_and(|def| def.builtin));
        assert!(!tables.contains_key("mismatch"));
        assert!(!tables.contains_key("strict"));
        assert_eq!(cache.meta.prefix(TABLE_KEY_PREFIX).count(), 0);
    }

    #[test]
    fn a_snapshot_replaces_everything_but_the_built_in_tables() {
        let dir = tempfile::tempdir().unwrap();
        let cache = cache(&dir);
        let tables = builtins();
        let old = decl("old");
        apply_all(
            &cache,
            &tables,
            &[
                (Key::Account("gone".into()), Some(b"gone")),
                (Key::Token("00".into()), Some(b"gone")),
                (Key::Session("gone".into()), Some(b"gone")),
                (Key::Table("old".into()), Some(&old)),
            ],
        );
        let item = |key: Key, value: &[u8]| Item {
            key,
            value: value.to_vec(),
            create_revision: 20,
            mod_revision: 21,
            version: 1,
        };
        let fresh = decl("fresh");
        let items = [
            item(Key::Account("kept".into()), b"kept"),
            item(Key::record("signs", "a"), b"not state"),
            item(Key::Table("fresh".into()), &fresh),
        ];
        let mut batch = cache.db.batch();
        let mut effects = Effects::default();
        replace_all(&cache, &mut batch, items.iter(), &mut effects).unwrap();
        effects.apply_tables(&tables);
        batch.commit().unwrap();
        assert!(effects.access);
        let accounts: Vec<_> = cache
            .accounts
            .iter()
            .map(|guard| guard.key().unwrap().to_vec())
            .collect();
        assert_eq!(accounts, vec![b"kept".to_vec()]);
        assert_eq!(cache.tokens.iter().count(), 0);
        assert_eq!(cache.meta.prefix(SESSION_KEY_PREFIX).count(), 0);
        let names: Vec<String> = tables.read().unwrap().keys().cloned().collect();
        let mut expected: Vec<String> = BUILTIN_TABLES.iter().map(|t| (*t).to_owned()).collect();
        expected.push("fresh".into());
        expected.sort();
        assert_eq!(names, expected);
        // Every cached key's revision is the snapshot's, and only theirs.
        assert_eq!(cache.revisions.iter().count(), 2);
    }

    #[test]
    fn token_keys_round_trip_through_hex() {
        let hash: Vec<u8> = (0..32u8).map(|i| i.wrapping_mul(37)).collect();
        assert_eq!(unhex(&hex(&hash)), Some(hash));
        assert_eq!(unhex("0g"), None);
        assert_eq!(unhex("abc"), None);
        assert_eq!(unhex(""), Some(Vec::new()));
    }
}
