//! Writes of the Store's state other than records (accounts, tokens, saved
//! MQTT sessions, table declarations) on etcd, so that every node shares
//! them: an account made on one node signs in on all of them.
//!
//! Each write is one etcd transaction on its key, planned against this
//! node's cache (`state_cache.rs`) and conditioned on the key's mod revision
//! there (or its absence), so a write planned on a stale cache fails instead
//! of silently undoing another node's change; it is then planned again once
//! the applier has caught up, and refused with the error the embedded store
//! gives (`AccountExists`, `NoSuchAccount`, `TableExists`, …) when that is
//! what the change it lost to means. Like a record write, it answers only
//! once this node's applier has applied its revision, so a read on this node
//! right after sees it.

use fjall::Readable;

use super::state_cache::{self, hex};
use super::{Backend, MAX_REPLANS, etcd_error};
use crate::store::etcd::{Batch, EtcdError, Expect, Key, Op};
use crate::store::{StoreError, TableDecl, blocking};

impl Backend {
    /// Stores an account: `create` only if the name is free, else only if
    /// the account exists (and is as this node last saw it).
    pub(in crate::store) async fn put_account(
        &self,
        username: &str,
        account: Vec<u8>,
        create: bool,
    ) -> Result<(), StoreError> {
        let key = Key::Account(username.to_owned());
        for _ in 0..MAX_REPLANS {
            let (at, current) = self.cached(&key).await?;
            let expect = match (create, current) {
                (true, Some(_)) => return Err(StoreError::AccountExists(username.to_owned())),
                (false, None) => return Err(StoreError::NoSuchAccount(username.to_owned())),
                (true, None) => Expect::Absent,
                (false, Some(revision)) => Expect::ModRevision(revision),
            };
            let op = Op::put(key.clone(), account.clone()).expecting(expect);
            if self.commit_here(op, at).await? {
                return Ok(());
            }
        }
        Err(contended(&key))
    }

    /// Removes an account (it must exist).
    pub(in crate::store) async fn delete_account(&self, username: &str) -> Result<(), StoreError> {
        let key = Key::Account(username.to_owned());
        for _ in 0..MAX_REPLANS {
            let (at, current) = self.cached(&key).await?;
            let Some(revision) = current else {
                return Err(StoreError::NoSuchAccount(username.to_owned()));
            };
            let op = Op::delete(key.clone()).expecting(Expect::ModRevision(revision));
            if self.commit_here(op, at).await? {
                return Ok(());
            }
        }
        Err(contended(&key))
    }

    /// Stores (or with `None` removes) a token under the hash of its secret.
    pub(in crate::store) async fn set_token(
        &self,
        hash: &[u8],
        token: Option<Vec<u8>>,
    ) -> Result<(), StoreError> {
        let key = Key::Token(hex(hash));
        let Some(token) = token else {
            // Unconditional: removing a token that is already gone (or not
            // here yet) is no error on the embedded store either.
            let (at, _) = self.cached(&key).await?;
            self.commit_here(Op::delete(key), at).await?;
            return Ok(());
        };
        // A token is written when it is made (a fresh secret: absent) and
        // when its use is recorded (present). The latter must not bring back
        // a token another node revoked meanwhile: such a write is taken as
        // made just before the removal, which it could have been.
        let mut seen = false;
        for _ in 0..MAX_REPLANS {
            let (at, current) = self.cached(&key).await?;
            let expect = match current {
                Some(revision) => {
                    seen = true;
                    Expect::ModRevision(revision)
                }
                None if seen => return Ok(()),
                None => Expect::Absent,
            };
            let op = Op::put(key.clone(), token.clone()).expecting(expect);
            if self.commit_here(op, at).await? {
                return Ok(());
            }
        }
        Err(contended(&key))
    }

    /// Removes a token if it is there, as one node of all: whether this
    /// call removed it (a racing take on another node finds it gone).
    pub(in crate::store) async fn take_token(&self, hash: &[u8]) -> Result<bool, StoreError> {
        let key = Key::Token(hex(hash));
        for _ in 0..MAX_REPLANS {
            let (at, current) = self.cached(&key).await?;
            let Some(revision) = current else {
                return Ok(false);
            };
            let op = Op::delete(key.clone()).expecting(Expect::ModRevision(revision));
            if self.commit_here(op, at).await? {
                return Ok(true);
            }
        }
        Err(contended(&key))
    }

    /// Saves an MQTT session's state (or with `None` forgets it). The last
    /// write wins, as on the embedded store: a persistent session is
    /// written by the one node its client is connected to.
    pub(in crate::store) async fn save_session(
        &self,
        client_id: &str,
        state: Option<Vec<u8>>,
    ) -> Result<(), StoreError> {
        let key = Key::Session(client_id.to_owned());
        let op = match state {
            Some(state) => Op::put(key, state),
            None => Op::delete(key),
        };
        // No condition to fail: no cache state to plan on.
        self.commit_here(op, 0).await?;
        Ok(())
    }

    /// Declares a table (already checked by the caller), only if no table
    /// of that name exists, here or on etcd.
    pub(in crate::store) async fn declare_table(&self, decl: &TableDecl) -> Result<(), StoreError> {
        if self.has_table(&decl.name) {
            return Err(StoreError::TableExists(decl.name.clone()));
        }
        let key = Key::Table(decl.name.clone());
        let bytes = serde_json::to_vec(decl).map_err(|e| StoreError::Storage(e.to_string()))?;
        let (at, _) = self.cached(&key).await?;
        let op = Op::put(key, bytes).expecting(Expect::Absent);
        if self.commit_here(op, at).await? {
            Ok(())
        } else {
            Err(StoreError::TableExists(decl.name.clone()))
        }
    }

    /// Removes an empty, non-built-in table. The drop commits only if no
    /// record of the table was written after the revision at which this
    /// node's cache had none, so a drop racing a record write on another
    /// node fails instead of orphaning the record.
    pub(in crate::store) async fn drop_table(&self, name: &str) -> Result<(), StoreError> {
        let key = Key::Table(name.to_owned());
        for _ in 0..MAX_REPLANS {
            {
                let tables = self.tables.read().unwrap_or_else(|p| p.into_inner());
                match tables.get(name) {
                    None => return Err(StoreError::NoSuchTable(name.to_owned())),
                    Some(def) if def.builtin => return Err(StoreError::BuiltIn(name.to_owned())),
                    Some(_) => {}
                }
            }
            let cache = self.cache.clone();
            let planned_key = key.clone();
            let mut prefix = name.as_bytes().to_vec();
            prefix.push(0);
            let (at, declared, has_records) = blocking(move || {
                let snapshot = cache.db.snapshot();
                let (at, [declared]) = state_cache::revisions(&cache, &snapshot, [&planned_key])?;
                let has_records = snapshot.prefix(&cache.records, &prefix).next().is_some();
                Ok((at, declared, has_records))
            })
            .await?;
            if has_records {
                return Err(StoreError::TableNotEmpty(name.to_owned()));
            }
            // Declared on this node alone: a config-file table not yet
            // declared on etcd (start declares them before it answers).
            let Some(declared) = declared else {
                return Err(StoreError::Storage(format!(
                    "table '{name}' is not declared on etcd yet; try again"
                )));
            };
            let batch = Batch::drop_table(self.next_wid(), name, Expect::ModRevision(declared), at);
            if self.commit_batch_here(&batch, at).await? {
                return Ok(());
            }
        }
        Err(contended(&key))
    }

    /// Declares the config file's tables on etcd, each only if it is not
    /// declared as the file says: the file wins, as on the embedded store,
    /// so a different declaration is overwritten.
    pub(in crate::store) async fn declare_config_tables(
        &self,
        decls: &[TableDecl],
    ) -> Result<(), StoreError> {
        for decl in decls {
            let key = Key::Table(decl.name.clone());
            let bytes = serde_json::to_vec(decl).map_err(|e| StoreError::Storage(e.to_string()))?;
            let mut done = false;
            for _ in 0..MAX_REPLANS {
                let got = self.log.get_key(&key).await.map_err(etcd_error)?;
                let expect = match got.item {
                    Some(item) if item.value == bytes => {
                        self.wait_published(item.mod_revision).await?;
                        done = true;
                        break;
                    }
                    Some(item) => Expect::ModRevision(item.mod_revision),
                    None => Expect::Absent,
                };
                let batch = Batch::new(self.next_wid())
                    .with(Op::put(key.clone(), bytes.clone()).expecting(expect));
                match self.log.commit(&batch).await {
                    Ok(committed) => {
                        self.wait_published(committed.revision).await?;
                        done = true;
                        break;
                    }
                    // Another node (re)declared it meanwhile: look again.
                    Err(EtcdError::ConditionFailed { .. }) => continue,
                    Err(e) => return Err(etcd_error(e)),
                }
            }
            if !done {
                return Err(contended(&key));
            }
        }
        Ok(())
    }

    fn has_table(&self, name: &str) -> bool {
        self.tables
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(name)
    }

    /// The cache's last seq and `key`'s cached mod revision (`None`: absent).
    async fn cached(&self, key: &Key) -> Result<(u64, Option<u64>), StoreError> {
        let cache = self.cache.clone();
        let key = key.clone();
        blocking(move || {
            let snapshot = cache.db.snapshot();
            let (at, [revision]) = state_cache::revisions(&cache, &snapshot, [&key])?;
            Ok((at, revision))
        })
        .await
    }

    /// [`Backend::commit_batch_here`] of a batch of one write.
    async fn commit_here(&self, op: Op, at: u64) -> Result<bool, StoreError> {
        let batch = Batch::new(self.next_wid()).with(op);
        self.commit_batch_here(&batch, at).await
    }

    /// Commits `batch`, planned on the cache at seq `at`, and waits until
    /// this node has applied it: `true`. `false`: a condition failed, and
    /// this node has since applied the change that failed it, so planning
    /// again sees that change.
    async fn commit_batch_here(&self, batch: &Batch, at: u64) -> Result<bool, StoreError> {
        match self.log.commit(batch).await {
            Ok(committed) => {
                self.wait_published(committed.revision).await?;
                Ok(true)
            }
            Err(EtcdError::ConditionFailed { current, .. }) => {
                // `current` is 0 for a key deleted since, which was after
                // `at`. A key written at or before `at` that the cache does
                // not hold (a declaration this node cannot use) needs no
                // wait: an idle cluster might make no later revision.
                let target = if current == 0 { at + 1 } else { current };
                self.wait_published(target).await?;
                Ok(false)
            }
            Err(EtcdError::RecordWrittenAfter { written, .. }) => {
                self.wait_published(written.max(at + 1)).await?;
                Ok(false)
            }
            Err(e) => Err(etcd_error(e)),
        }
    }
}

fn contended(key: &Key) -> StoreError {
    StoreError::Storage(format!(
        "{key}: still contended after {MAX_REPLANS} attempts; try again"
    ))
}
