//! Accounts and sign-in: who may connect, with which role, and how their
//! passwords and tokens are kept. Each account lives in the store's own
//! `accounts` keyspace (written durably through the writer like everything
//! else, or on etcd and shared by every node, and never reachable through
//! the record API); passwords are argon2id hashes, checked a few at a time
//! off the async runtime. The [`Guard`] is what the protocols talk to.

mod account;
mod audit;
mod guard;
mod password;
mod principal;
mod refusals;
mod request;
mod throttle;
mod tokens;

pub use account::{Account, Grant, MAX_USERNAME_LEN, Role, normalize_username};
pub use audit::{Audit, AuditEntry, MAX_AUDIT_ENTRIES};
pub use guard::{Guard, Refusal, SetupError, Site};
pub use password::{MAX_PASSWORD_LEN, MIN_PASSWORD_LEN, Passwords, generate_password};
pub use principal::{Principal, Proof, Scope};
pub use refusals::{Refusals, Refused, RefusedAction};
pub use request::{Presented, RequestRefusal, SECURE_SESSION_COOKIE, SESSION_COOKIE, presented};
pub use throttle::{Attempt, Throttle};
pub use tokens::{Lifetime, Token, TokenId, TokenKind, Tokens};

use crate::clock;
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{0}")]
    BadUsername(String),
    #[error("{0}")]
    WeakPassword(String),
    #[error("cannot hash the password: {0}")]
    Hash(String),
    #[error("a stored account cannot be read: {0}")]
    Corrupt(String),
    #[error("this would leave no enabled admin account")]
    LastAdmin,
    #[error("this account has as many tokens as it may; revoke one first")]
    TooManyTokens,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The accounts kept in a store. Cheap to clone.
#[derive(Clone)]
pub struct Accounts {
    store: Store,
    passwords: Passwords,
}

impl Accounts {
    pub fn new(store: Store, passwords: Passwords) -> Self {
        Self { store, passwords }
    }

    /// Creates an account; refuses a user name that is taken.
    pub async fn create(
        &self,
        username: &str,
        role: Role,
        password: &str,
    ) -> Result<Account, AuthError> {
        let username = normalize_username(username)?;
        let now = clock::now_millis();
        let account = Account {
            username,
            role,
            password_hash: self.passwords.hash(password).await?,
            disabled: false,
            created_ms: now,
            changed_ms: now,
            device: None,
            scope: Vec::new(),
        };
        self.save(&account, true).await?;
        Ok(account)
    }

    /// Creates the account of a paired device: it may reach `scope` alone.
    pub async fn create_device(
        &self,
        username: &str,
        device: &str,
        scope: Vec<Grant>,
        password: &str,
    ) -> Result<Account, AuthError> {
        let username = normalize_username(username)?;
        let now = clock::now_millis();
        let account = Account {
            username,
            role: Role::Device,
            password_hash: self.passwords.hash(password).await?,
            disabled: false,
            created_ms: now,
            changed_ms: now,
            device: Some(device.to_owned()),
            scope,
        };
        self.save(&account, true).await?;
        Ok(account)
    }

    /// Removes a device's account (a device is never the last admin).
    pub async fn delete_device(&self, username: &str) -> Result<(), AuthError> {
        let name = normalize_username(username)?;
        self.store.delete_account(&name).await?;
        Ok(())
    }

    /// Creates an admin account, only if no admin exists yet; returns whether
    /// it did. For automation (`MARQUEE_ADMIN_PASSWORD`): there is never a
    /// default password.
    pub async fn create_first_admin(
        &self,
        username: &str,
        password: &str,
    ) -> Result<bool, AuthError> {
        let any_admin = |accounts: Vec<Account>| accounts.iter().any(|a| a.role == Role::Admin);
        if any_admin(self.list()?) {
            return Ok(false);
        }
        match self.create(username, Role::Admin, password).await {
            Ok(_) => Ok(true),
            // Nodes of one etcd store starting together each saw no admin;
            // another made it first. (A name taken by a non-admin is still
            // an error: then there is no admin.)
            Err(AuthError::Store(StoreError::AccountExists(_))) if any_admin(self.list()?) => {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Gives an existing account a new password; returns its (stored) user name.
    pub async fn set_password(&self, username: &str, password: &str) -> Result<String, AuthError> {
        let mut account = self.require(username)?;
        account.password_hash = self.passwords.hash(password).await?;
        account.changed_ms = clock::now_millis();
        self.save(&account, false).await?;
        Ok(account.username)
    }

    /// Changes an account's role or whether it is disabled, and says whether
    /// either changed. Refuses to leave no enabled admin.
    pub async fn update(
        &self,
        username: &str,
        role: Option<Role>,
        disabled: Option<bool>,
    ) -> Result<(Account, bool), AuthError> {
        let mut account = self.require(username)?;
        let before = (account.role, account.disabled);
        account.role = role.unwrap_or(account.role);
        account.disabled = disabled.unwrap_or(account.disabled);
        if account.role != Role::Admin || account.disabled {
            self.keep_an_admin(&account.username)?;
        }
        account.changed_ms = clock::now_millis();
        self.save(&account, false).await?;
        let changed = before != (account.role, account.disabled);
        Ok((account, changed))
    }

    /// Removes an account and returns its (stored) user name. Refuses to
    /// remove the last enabled admin.
    pub async fn delete(&self, username: &str) -> Result<String, AuthError> {
        let account = self.require(username)?;
        self.keep_an_admin(&account.username)?;
        self.store.delete_account(&account.username).await?;
        Ok(account.username)
    }

    fn require(&self, username: &str) -> Result<Account, AuthError> {
        let name = normalize_username(username)?;
        self.get(&name)?
            .ok_or_else(|| StoreError::NoSuchAccount(name).into())
    }

    /// Err unless an enabled admin other than `username` exists.
    fn keep_an_admin(&self, username: &str) -> Result<(), AuthError> {
        let others = self
            .list()?
            .into_iter()
            .any(|a| a.role == Role::Admin && !a.disabled && a.username != username);
        if others {
            Ok(())
        } else {
            Err(AuthError::LastAdmin)
        }
    }

    /// The account with this user name, if there is one.
    pub fn get(&self, username: &str) -> Result<Option<Account>, AuthError> {
        let Ok(username) = normalize_username(username) else {
            return Ok(None);
        };
        self.store
            .account(&username)?
            .map(|bytes| decode(&bytes))
            .transpose()
    }

    /// Every account, in user-name order.
    pub fn list(&self) -> Result<Vec<Account>, AuthError> {
        self.store.accounts()?.iter().map(|b| decode(b)).collect()
    }

    /// The account, if `password` is its password (disabled or not). An
    /// unknown user name costs the same time as a wrong password. A hash
    /// made with older parameters is made anew with today's (the account
    /// otherwise unchanged, so its sessions and connections stay).
    pub async fn check(
        &self,
        username: &str,
        password: &str,
    ) -> Result<Option<Account>, AuthError> {
        let account = self.get(username)?;
        let stored = account.as_ref().map(|a| a.password_hash.as_str());
        if !self.passwords.verify(stored, password).await {
            return Ok(None);
        }
        let Some(mut account) = account else {
            return Ok(None);
        };
        if password::needs_rehash(&account.password_hash) {
            // Best effort: the sign-in stands whether or not this works.
            match self.passwords.hash_unchecked(password).await {
                // Onto the account as it is now, not as it was read before
                // the (slow) hashing: a change made meanwhile (disabled, a
                // new role or password) is kept.
                Ok(hash) => match self.get(&account.username) {
                    Ok(Some(mut now)) if now.password_hash == account.password_hash => {
                        now.password_hash = hash;
                        match self.save(&now, false).await {
                            Ok(()) => account = now,
                            Err(e) => {
                                tracing::warn!(username = %account.username, "cannot store the re-made password hash: {e}");
                            }
                        }
                    }
                    _ => {}
                },
                Err(e) => {
                    tracing::warn!(username = %account.username, "cannot re-hash the password: {e}");
                }
            }
        }
        Ok(Some(account))
    }

    async fn save(&self, account: &Account, create: bool) -> Result<(), AuthError> {
        let bytes = serde_json::to_vec(account).map_err(|e| AuthError::Corrupt(e.to_string()))?;
        self.store
            .put_account(&account.username, bytes, create)
            .await?;
        Ok(())
    }
}

fn decode(bytes: &[u8]) -> Result<Account, AuthError> {
    serde_json::from_slice(bytes).map_err(|e| AuthError::Corrupt(e.to_string()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use argon2::password_hash::PasswordHasher as _;

    use super::*;
    use crate::bus::Bus;
    use crate::store::StoreOptions;

    /// A store in `dir`, for the auth tests.
    pub(super) fn open(dir: &std::path::Path) -> Store {
        let metrics = std::sync::Arc::new(crate::metrics::Metrics::default());
        Store::open(
            StoreOptions {
                data_dir: dir.to_path_buf(),
                change_log_window: 100,
                tables: Vec::new(),
                fail_persist_after: None,
                address: Default::default(),
            },
            Bus::new(crate::bus::QueueLimit::events(16), metrics.clone()),
            metrics,
        )
        .unwrap()
    }

    /// SECURITY.md §8.47: a hash made with older settings still signs in,
    /// and is made anew with today's settings, leaving the account (and
    /// its live connections) otherwise as it was.
    #[tokio::test]
    async fn an_old_hash_signs_in_and_is_replaced_by_a_current_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let accounts = Accounts::new(store.clone(), Passwords::new());
        let old = argon2::Argon2::new(
            argon2::Algorithm::Argon2id,
            argon2::Version::V0x13,
            argon2::Params::new(8192, 1, 1, None).unwrap(),
        )
        .hash_password(b"old password")
        .unwrap()
        .to_string();
        let account = Account {
            username: "old".into(),
            role: Role::Editor,
            password_hash: old.clone(),
            disabled: false,
            created_ms: 1,
            changed_ms: 2,
            device: None,
            scope: Vec::new(),
        };
        accounts.save(&account, true).await.unwrap();
        assert!(accounts.check("old", "wrong").await.unwrap().is_none());
        assert_eq!(accounts.get("old").unwrap().unwrap().password_hash, old);

        let signed_in = accounts
            .check("old", "old password")
            .await
            .unwrap()
            .unwrap();
        let stored = accounts.get("old").unwrap().unwrap();
        assert_eq!(stored, signed_in);
        assert!(
            stored
                .password_hash
                .starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{}",
            stored.password_hash
        );
        assert_eq!((stored.created_ms, stored.changed_ms), (1, 2));
        assert!(
            accounts
                .check("old", "old password")
                .await
                .unwrap()
                .is_some()
        );
        store.shutdown().await;
    }
}
