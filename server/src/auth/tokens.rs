//! Tokens: the random secrets that stand for an account after it signed in
//! (browser sessions), that scripts send as `Authorization: Bearer` (API
//! tokens), and that open first-run setup. Only the SHA-256 of a secret is
//! stored, so a copy of the data directory holds no usable token; a fast
//! hash is enough for 256 random bits. Secrets carry a prefix saying what
//! they are (`mqs_` session, `mqt_` API, `mqx_` setup) so a leaked one is
//! easy to find in logs and repositories.

use std::time::Duration;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::AuthError;
use crate::clock;
use crate::store::Store;

/// What a token is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenKind {
    Session,
    Api,
    Setup,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    pub username: String,
    pub kind: TokenKind,
    /// What its owner called it (API tokens).
    pub name: Option<String>,
    /// Unix milliseconds.
    pub created_ms: i64,
    /// When it was last used (recorded at most once a minute); `None`: never.
    #[serde(default)]
    pub last_used_ms: Option<i64>,
    /// It ends then, however much it is used.
    pub expires_ms: Option<i64>,
    /// It ends after this long unused.
    pub idle_ms: Option<i64>,
}

impl Token {
    /// When it was last used, or made if never: what idle time counts from.
    pub fn last_active_ms(&self) -> i64 {
        self.last_used_ms.unwrap_or(self.created_ms)
    }
}

/// How long a token lives.
#[derive(Clone, Copy, Debug)]
pub struct Lifetime {
    pub absolute: Option<Duration>,
    pub idle: Option<Duration>,
}

/// A token's stored identity: the hex SHA-256 of its secret, safe to show
/// and to use for revoking it.
pub type TokenId = String;

/// Tokens kept in a store. Cheap to clone.
#[derive(Clone)]
pub struct Tokens {
    store: Store,
}

/// Bytes of randomness in a secret.
const SECRET_BYTES: usize = 32;
/// Live tokens of one kind one account may hold. Past it, a new session
/// ends the least recently used one (a script that signs in in a loop must
/// not grow the store for ever), and a new API or setup token is refused.
pub const MAX_TOKENS_PER_KIND: usize = 50;
/// Last-use times are written at most this often per token: a durable write
/// on every request would cost more than the information is worth.
const TOUCH_EVERY_MS: i64 = 60_000;

impl TokenKind {
    /// What every secret of this kind begins with.
    pub fn prefix(self) -> &'static str {
        match self {
            TokenKind::Session => "mqs_",
            TokenKind::Api => "mqt_",
            TokenKind::Setup => "mqx_",
        }
    }
}

impl Lifetime {
    /// A browser session: 7 days unused, 30 days at most (Grafana's defaults).
    pub const SESSION: Lifetime = Lifetime {
        absolute: Some(Duration::from_secs(30 * 24 * 3600)),
        idle: Some(Duration::from_secs(7 * 24 * 3600)),
    };
    /// An API token: until revoked.
    pub const API: Lifetime = Lifetime {
        absolute: None,
        idle: None,
    };
    /// A first-run setup link: 30 minutes.
    pub const SETUP: Lifetime = Lifetime {
        absolute: Some(Duration::from_secs(30 * 60)),
        idle: None,
    };
}

impl Tokens {
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    /// A new token for `username`: the secret (shown once, never stored)
    /// and what is stored.
    pub async fn issue(
        &self,
        username: &str,
        kind: TokenKind,
        name: Option<String>,
        lifetime: Lifetime,
    ) -> Result<(String, Token), AuthError> {
        self.make_room(username, kind).await?;
        let mut random = [0u8; SECRET_BYTES];
        getrandom::fill(&mut random).map_err(|e| AuthError::Hash(e.to_string()))?;
        let secret = format!(
            "{}{}",
            kind.prefix(),
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random)
        );
        let now = clock::now_millis();
        let millis = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        let token = Token {
            username: username.to_owned(),
            kind,
            name,
            created_ms: now,
            last_used_ms: None,
            expires_ms: lifetime.absolute.map(|d| now.saturating_add(millis(d))),
            idle_ms: lifetime.idle.map(millis),
        };
        self.save(&hash(&secret), &token).await?;
        Ok((secret, token))
    }

    /// Removes the account's expired tokens, and keeps its live ones of
    /// `kind` under [`MAX_TOKENS_PER_KIND`] so one more fits.
    async fn make_room(&self, username: &str, kind: TokenKind) -> Result<(), AuthError> {
        let now = clock::now_millis();
        let mut live = Vec::new();
        for (key, bytes) in self.store.tokens()? {
            let token = decode(&bytes)?;
            if token.username != username {
                continue;
            }
            if is_expired(&token, now) {
                self.store.set_token(&key, None).await?;
            } else if token.kind == kind {
                live.push((token.last_active_ms(), key));
            }
        }
        if live.len() < MAX_TOKENS_PER_KIND {
            return Ok(());
        }
        if kind != TokenKind::Session {
            return Err(AuthError::TooManyTokens);
        }
        live.sort_unstable();
        let excess = live.len() + 1 - MAX_TOKENS_PER_KIND;
        for (_, key) in live.into_iter().take(excess) {
            self.store.set_token(&key, None).await?;
        }
        Ok(())
    }

    /// The live token a secret stands for, if any: right prefix, known,
    /// neither expired nor idle too long. Use is recorded (coarsely); an
    /// expired token is removed.
    pub async fn resolve(&self, secret: &str) -> Result<Option<Token>, AuthError> {
        let known_prefix = [TokenKind::Session, TokenKind::Api, TokenKind::Setup]
            .iter()
            .any(|k| secret.starts_with(k.prefix()));
        if !known_prefix || secret.len() > 128 {
            return Ok(None);
        }
        let key = hash(secret);
        let mut found = self.store.token(&key)?;
        if found.is_none() {
            // Made on another node a moment ago (a sign-in there, a token
            // made there)? Only a miss costs the wait for this node to catch up.
            self.store.caught_up().await?;
            found = self.store.token(&key)?;
        }
        let Some(bytes) = found else {
            return Ok(None);
        };
        let mut token = decode(&bytes)?;
        if !secret.starts_with(token.kind.prefix()) {
            return Ok(None);
        }
        let now = clock::now_millis();
        if is_expired(&token, now) {
            self.store.set_token(&key, None).await?;
            return Ok(None);
        }
        if token
            .last_used_ms
            .is_none_or(|last| now - last >= TOUCH_EVERY_MS)
        {
            token.last_used_ms = Some(now);
            self.save(&key, &token).await?;
        }
        Ok(Some(token))
    }

    /// The key a secret's token is stored under (see [`Store::token`]).
    pub fn key_of(secret: &str) -> Vec<u8> {
        hash(secret)
    }

    /// The id a secret's token is listed and revoked by.
    pub fn id_of(secret: &str) -> TokenId {
        hex(&hash(secret))
    }

    /// Ends the token a secret stands for (sign-out, a used setup link).
    pub async fn revoke_secret(&self, secret: &str) -> Result<(), AuthError> {
        Ok(self.store.set_token(&hash(secret), None).await?)
    }

    /// Uses up the token a secret stands for: true for exactly one of any
    /// racing calls, on any node (a setup link makes one admin).
    pub async fn take_secret(&self, secret: &str) -> Result<bool, AuthError> {
        Ok(self.store.take_token(&hash(secret)).await?)
    }

    /// Ends a token by its id (from [`Tokens::list`]); false if there was none.
    pub async fn revoke(&self, id: &str) -> Result<bool, AuthError> {
        let Some(key) = unhex(id) else {
            return Ok(false);
        };
        Ok(self.store.take_token(&key).await?)
    }

    /// Ends every token of an account (its password changed, it was
    /// disabled); returns how many.
    pub async fn revoke_all(&self, username: &str) -> Result<usize, AuthError> {
        let mut ended = 0;
        for (key, bytes) in self.store.tokens()? {
            if decode(&bytes)?.username == username {
                self.store.set_token(&key, None).await?;
                ended += 1;
            }
        }
        Ok(ended)
    }

    /// The live tokens, of one account or of all, with their ids.
    pub fn list(&self, username: Option<&str>) -> Result<Vec<(TokenId, Token)>, AuthError> {
        let now = clock::now_millis();
        let mut out = Vec::new();
        for (key, bytes) in self.store.tokens()? {
            let token = decode(&bytes)?;
            if username.is_none_or(|u| u == token.username) && !is_expired(&token, now) {
                out.push((hex(&key), token));
            }
        }
        Ok(out)
    }

    async fn save(&self, key: &[u8], token: &Token) -> Result<(), AuthError> {
        let bytes = serde_json::to_vec(token).map_err(|e| AuthError::Corrupt(e.to_string()))?;
        Ok(self.store.set_token(key, Some(bytes)).await?)
    }
}

fn is_expired(token: &Token, now: i64) -> bool {
    token.expires_ms.is_some_and(|at| now >= at)
        || token
            .idle_ms
            .is_some_and(|idle| now.saturating_sub(token.last_active_ms()) >= idle)
}

fn hash(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .and_then(|b| u8::from_str_radix(b, 16).ok())
        })
        .collect()
}

fn decode(bytes: &[u8]) -> Result<Token, AuthError> {
    serde_json::from_slice(bytes).map_err(|e| AuthError::Corrupt(e.to_string()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::auth::tests::open;

    #[tokio::test]
    async fn a_secret_resolves_to_its_token_until_revoked_and_only_its_hash_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let tokens = Tokens::new(store.clone());
        let (secret, issued) = tokens
            .issue(
                "alice",
                TokenKind::Api,
                Some("deploy".into()),
                Lifetime::API,
            )
            .await
            .unwrap();
        assert!(
            secret.starts_with("mqt_") && secret.len() == 4 + 43,
            "{secret}"
        );
        assert_eq!(issued.last_used_ms, None);
        let resolved = tokens.resolve(&secret).await.unwrap().unwrap();
        assert!(resolved.last_used_ms.is_some(), "its first use is recorded");
        assert_eq!(
            Token {
                last_used_ms: None,
                ..resolved
            },
            issued
        );
        for stored in store.tokens().unwrap() {
            assert!(!String::from_utf8_lossy(&stored.0).contains(&secret[4..]));
            assert!(!String::from_utf8_lossy(&stored.1).contains(&secret[4..]));
        }
        // Another kind's prefix on the same random part, or any other string, is nothing.
        assert_eq!(
            tokens
                .resolve(&secret.replacen("mqt_", "mqs_", 1))
                .await
                .unwrap(),
            None
        );
        assert_eq!(tokens.resolve("mqt_nothing").await.unwrap(), None);
        assert_eq!(tokens.resolve("").await.unwrap(), None);

        let listed = tokens.list(Some("alice")).unwrap();
        assert_eq!(listed.len(), 1);
        assert!(tokens.revoke(&listed[0].0).await.unwrap());
        assert_eq!(tokens.resolve(&secret).await.unwrap(), None);
        assert!(!tokens.revoke(&listed[0].0).await.unwrap());
        store.shutdown().await;
    }

    #[tokio::test]
    async fn an_account_holds_a_bounded_number_of_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let tokens = Tokens::new(store.clone());
        let mut sessions = Vec::new();
        for _ in 0..MAX_TOKENS_PER_KIND + 3 {
            let (secret, _) = tokens
                .issue("loop", TokenKind::Session, None, Lifetime::SESSION)
                .await
                .unwrap();
            sessions.push(secret);
            // Age is kept to the millisecond; two sign-ins in one
            // millisecond have no order to evict by.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        // The oldest sessions made way; the newest still work.
        assert_eq!(
            tokens.list(Some("loop")).unwrap().len(),
            MAX_TOKENS_PER_KIND
        );
        assert_eq!(tokens.resolve(&sessions[0]).await.unwrap(), None);
        assert!(
            tokens
                .resolve(sessions.last().unwrap())
                .await
                .unwrap()
                .is_some()
        );
        for _ in 0..MAX_TOKENS_PER_KIND {
            tokens
                .issue("loop", TokenKind::Api, None, Lifetime::API)
                .await
                .unwrap();
        }
        assert!(matches!(
            tokens
                .issue("loop", TokenKind::Api, None, Lifetime::API)
                .await,
            Err(AuthError::TooManyTokens)
        ));
        store.shutdown().await;
    }

    #[tokio::test]
    async fn tokens_outlive_a_restart_and_end_when_expired_idle_or_revoked_for_all() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let tokens = Tokens::new(store.clone());
        let (session, _) = tokens
            .issue("bob", TokenKind::Session, None, Lifetime::SESSION)
            .await
            .unwrap();
        let (other, _) = tokens
            .issue("bob", TokenKind::Api, None, Lifetime::API)
            .await
            .unwrap();
        let (carol, _) = tokens
            .issue("carol", TokenKind::Api, None, Lifetime::API)
            .await
            .unwrap();
        let (gone, _) = tokens
            .issue(
                "carol",
                TokenKind::Setup,
                None,
                Lifetime {
                    absolute: Some(Duration::ZERO),
                    idle: None,
                },
            )
            .await
            .unwrap();
        let (idle, _) = tokens
            .issue(
                "carol",
                TokenKind::Session,
                None,
                Lifetime {
                    absolute: None,
                    idle: Some(Duration::ZERO),
                },
            )
            .await
            .unwrap();
        drop(tokens);
        store.shutdown().await;
        drop(store);

        let store = open(dir.path());
        let tokens = Tokens::new(store.clone());
        assert_eq!(
            tokens.resolve(&session).await.unwrap().unwrap().username,
            "bob"
        );
        assert_eq!(tokens.resolve(&gone).await.unwrap(), None, "expired");
        assert_eq!(tokens.resolve(&idle).await.unwrap(), None, "idle too long");
        assert_eq!(tokens.revoke_all("bob").await.unwrap(), 2);
        assert_eq!(tokens.resolve(&session).await.unwrap(), None);
        assert_eq!(tokens.resolve(&other).await.unwrap(), None);
        assert!(tokens.resolve(&carol).await.unwrap().is_some());
        store.shutdown().await;
    }
}
