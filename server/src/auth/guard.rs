//! The guard at every door: it checks what a client presents (a password, a
//! session or API token, nothing), under the throttle and into the audit
//! log, and answers with the [`Principal`] the access policy judges. HTTP,
//! WebSockets, SSE and MQTT all come through here, and come back when
//! accounts or tokens change, to learn whether a live connection may stay.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::watch;

use super::password::check_strength;
use super::{
    Account, Accounts, Audit, AuthError, Lifetime, Passwords, Principal, Proof, Refusals, Refused,
    Role, Throttle, TokenKind, Tokens, normalize_username,
};
use crate::access::{Access, Action, Mode};
use crate::store::Store;

/// Why a client was not let in.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// A wrong or unknown user name or password, or an unknown token: the
    /// client should fix what it sends.
    #[error("bad user name or password")]
    BadCredentials,
    /// Known, but not allowed to connect (disabled, anonymous where no rule
    /// admits it, a device in the web app).
    #[error("not authorized")]
    NotAuthorized,
    /// No admin exists yet: first-run setup comes first.
    #[error("setup required: no admin account exists yet")]
    SetupRequired,
    /// Too many failures lately; try again after this long.
    #[error("too many failed attempts")]
    Throttled(Duration),
    #[error(transparent)]
    Internal(#[from] AuthError),
}

/// Why first-run setup was refused.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("this setup link is not valid (used, expired or mistyped)")]
    BadLink,
    #[error("an admin account exists already; sign in instead")]
    Done,
    #[error("too many failed attempts")]
    Throttled(Duration),
    #[error(transparent)]
    Auth(#[from] AuthError),
}

/// How long a failed check waits before it answers, so a client cannot
/// try passwords faster than this on one connection.
const FAILURE_DELAY: Duration = Duration::from_millis(500);
/// Setup tokens belong to this owner, which no account can be named.
const SETUP_OWNER: &str = "-setup";

/// Where the server is reached, for the browser rules.
#[derive(Clone, Debug, Default)]
pub struct Site {
    /// Our pages' origins besides a connection's own address: `localhost`
    /// for loopback, `public_url`, `allowed_origins`.
    pub origins: Vec<String>,
    /// The HTTP listener is on loopback, where a `Host` naming another site
    /// means DNS rebinding.
    pub loopback: bool,
    /// People reach us over https (`public_url`): the session cookie is
    /// then `Secure` and `__Host-` prefixed.
    pub https: bool,
}

/// Cheap to clone.
#[derive(Clone)]
pub struct Guard {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    accounts: Accounts,
    tokens: Tokens,
    throttle: Throttle,
    access: Access,
    audit: Audit,
    /// Once true, stays true: the last admin cannot be removed.
    admin_exists: AtomicBool,
    /// One setup at a time, so two browsers racing the link make one admin.
    setup: tokio::sync::Mutex<()>,
    /// Origins a browser page of ours has, besides the connection's own
    /// address (see [`Guard::origin_allowed`]).
    origins: Vec<String>,
    /// Whether requests must name us in `Host` (see [`Guard::host_allowed`]).
    check_hosts: bool,
    https: bool,
    failure_delay: Duration,
    refusals: Refusals,
}

impl Guard {
    pub fn new(store: Store, access: Access, site: Site) -> Self {
        let Site {
            origins,
            loopback: check_hosts,
            https,
        } = site;
        Self {
            inner: Arc::new(Inner {
                accounts: Accounts::new(store.clone(), Passwords::new()),
                tokens: Tokens::new(store.clone()),
                store,
                throttle: Throttle::new(),
                access,
                audit: Audit::new(),
                admin_exists: AtomicBool::new(false),
                setup: tokio::sync::Mutex::new(()),
                origins,
                check_hosts,
                https,
                failure_delay: FAILURE_DELAY,
                refusals: Refusals::new(),
            }),
        }
    }

    pub fn accounts(&self) -> &Accounts {
        &self.inner.accounts
    }

    pub fn tokens(&self) -> &Tokens {
        &self.inner.tokens
    }

    pub fn access(&self) -> &Access {
        &self.inner.access
    }

    pub fn audit(&self) -> &Audit {
        &self.inner.audit
    }

    /// Tells watchers (the device adapters) what the broker refused.
    pub fn refused(&self, refused: Refused) {
        self.inner.refusals.report(refused);
    }

    pub fn refusals(&self) -> tokio::sync::broadcast::Receiver<Refused> {
        self.inner.refusals.watch()
    }

    /// The policy's decision for `who`.
    pub fn allows(&self, who: &Principal, action: Action, topic: &str) -> bool {
        self.inner.access.allows(who, action, topic)
    }

    /// Whether the server waits for its first admin (in `accounts` mode).
    pub fn setup_required(&self) -> bool {
        if self.inner.access.mode == Mode::Open || self.inner.admin_exists.load(Ordering::Relaxed) {
            return false;
        }
        let exists = self
            .inner
            .accounts
            .list()
            .map(|all| all.iter().any(|a| a.role == Role::Admin))
            .unwrap_or(false);
        if exists {
            self.inner.admin_exists.store(true, Ordering::Relaxed);
        }
        !exists
    }

    /// Changes whenever an account or token changes; a live connection
    /// then asks [`Guard::still_valid`].
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.inner.store.access_changes()
    }

    /// Whether what `who` proved still holds: the account is unchanged and
    /// enabled, and the token (if any) not revoked. A storage error counts
    /// as no.
    pub fn still_valid(&self, who: &Principal) -> bool {
        let (username, changed, key) = match (&who.proof, &who.username) {
            (Proof::Nothing, _) => return true,
            (Proof::Password { changed_ms }, Some(name)) => (name, *changed_ms, None),
            (Proof::Token { key, changed_ms }, Some(name)) => (name, *changed_ms, Some(key)),
            (_, None) => return false,
        };
        let account_holds = matches!(
            self.inner.accounts.get(username),
            Ok(Some(a)) if !a.disabled && a.changed_ms == changed
        );
        let token_holds = key.is_none_or(|key| matches!(self.inner.store.token(key), Ok(Some(_))));
        account_holds && token_holds
    }

    /// Checks a user name and password under the throttle. A disabled
    /// account is [`Refusal::NotAuthorized`] even with the right password.
    pub async fn check_password(
        &self,
        username: &str,
        password: &str,
        peer: SocketAddr,
        protocol: &'static str,
    ) -> Result<Account, Refusal> {
        // Only a well-formed name is its own throttle key (at most 64 bytes):
        // whatever else a client sends shares one key, so it cannot grow the map.
        let name = normalize_username(username).unwrap_or_default();
        let audit = |outcome| {
            self.inner
                .audit
                .record(&name, Some(peer), protocol, "sign_in", None, outcome);
        };
        let attempt = match self.inner.throttle.begin(&name, peer.ip()) {
            Ok(attempt) => attempt,
            Err(wait) => {
                audit("throttled");
                return Err(Refusal::Throttled(wait));
            }
        };
        // An account made or changed on another node a moment ago counts.
        self.inner
            .store
            .caught_up()
            .await
            .map_err(|e| Refusal::Internal(e.into()))?;
        match self.inner.accounts.check(&name, password).await? {
            Some(account) if account.disabled => {
                audit("refused");
                Err(Refusal::NotAuthorized)
            }
            Some(account) => {
                attempt.succeeded();
                audit("ok");
                Ok(account)
            }
            None => {
                attempt.failed();
                audit("failed");
                tokio::time::sleep(self.inner.failure_delay).await;
                Err(Refusal::BadCredentials)
            }
        }
    }

    /// The principal a session or API token stands for, or `None` for an
    /// unknown, expired or revoked token, a token of another kind, or a
    /// disabled account.
    pub async fn principal_for_token(
        &self,
        secret: &str,
        kind: TokenKind,
    ) -> Result<Option<Principal>, AuthError> {
        let Some(token) = self.inner.tokens.resolve(secret).await? else {
            return Ok(None);
        };
        if token.kind != kind {
            return Ok(None);
        }
        let Some(account) = self.inner.accounts.get(&token.username)? else {
            return Ok(None);
        };
        if account.disabled {
            return Ok(None);
        }
        let proof = Proof::Token {
            key: Tokens::key_of(secret),
            changed_ms: account.changed_ms,
        };
        Ok(Some(Principal::of_account(account, proof)))
    }

    /// Who an MQTT client is, from its CONNECT: user name and password (an
    /// API token is accepted as the password), or nothing. `ambient` is the
    /// account a WebSocket upgrade already proved with its session cookie,
    /// used when CONNECT carries no credentials.
    pub async fn mqtt_principal(
        &self,
        username: Option<&str>,
        password: Option<&[u8]>,
        client_id: &str,
        peer: SocketAddr,
        ambient: Option<Principal>,
    ) -> Result<Principal, Refusal> {
        let with_client_id = |mut p: Principal| {
            p.client_id = client_id.to_owned();
            p
        };
        if self.inner.access.mode == Mode::Open {
            // Today's behaviour, for loopback experiments: names are taken on trust.
            if username.is_none() && !self.inner.access.admits_anonymous() {
                return Err(Refusal::NotAuthorized);
            }
            return Ok(with_client_id(Principal {
                username: username.map(str::to_owned),
                ..Principal::anonymous()
            }));
        }
        if self.setup_required() {
            return Err(Refusal::SetupRequired);
        }
        let (username, password) = match (username, password) {
            (None, None) => {
                return match ambient {
                    Some(principal) => Ok(with_client_id(principal)),
                    None if self.inner.access.admits_anonymous() => {
                        Ok(with_client_id(Principal::anonymous()))
                    }
                    None => Err(Refusal::NotAuthorized),
                };
            }
            (Some(u), Some(p)) if !u.is_empty() && !p.is_empty() => (u, p),
            _ => return Err(Refusal::BadCredentials),
        };
        let Ok(password) = std::str::from_utf8(password) else {
            return Err(Refusal::BadCredentials);
        };
        if password.starts_with(TokenKind::Api.prefix()) {
            return self
                .mqtt_token(username, password, peer)
                .await
                .map(with_client_id);
        }
        let account = self
            .check_password(username, password, peer, "mqtt")
            .await?;
        let proof = Proof::Password {
            changed_ms: account.changed_ms,
        };
        Ok(with_client_id(Principal::of_account(account, proof)))
    }

    /// An API token given as an MQTT password: it must be the named account's.
    async fn mqtt_token(
        &self,
        username: &str,
        secret: &str,
        peer: SocketAddr,
    ) -> Result<Principal, Refusal> {
        let name = normalize_username(username).unwrap_or_default();
        let attempt = match self.inner.throttle.begin(&name, peer.ip()) {
            Ok(attempt) => attempt,
            Err(wait) => {
                self.inner
                    .audit
                    .record(&name, Some(peer), "mqtt", "sign_in", None, "throttled");
                return Err(Refusal::Throttled(wait));
            }
        };
        match self.principal_for_token(secret, TokenKind::Api).await? {
            Some(principal) if principal.username.as_deref() == Some(name.as_str()) => {
                attempt.succeeded();
                self.inner
                    .audit
                    .record(&name, Some(peer), "mqtt", "sign_in", None, "ok");
                Ok(principal)
            }
            _ => {
                attempt.failed();
                self.inner
                    .audit
                    .record(&name, Some(peer), "mqtt", "sign_in", None, "failed");
                tokio::time::sleep(self.inner.failure_delay).await;
                Err(Refusal::BadCredentials)
            }
        }
    }

    /// A fresh first-run setup link's secret, if no admin exists (in
    /// `accounts` mode); any earlier link stops working.
    pub async fn open_setup(&self) -> Result<Option<String>, AuthError> {
        if !self.setup_required() {
            return Ok(None);
        }
        self.inner.tokens.revoke_all(SETUP_OWNER).await?;
        let (secret, _) = self
            .inner
            .tokens
            .issue(SETUP_OWNER, TokenKind::Setup, None, Lifetime::SETUP)
            .await?;
        Ok(Some(secret))
    }

    /// Creates the first admin with a setup link's secret, which is then
    /// used up. Exactly one of any racing attempts succeeds.
    pub async fn finish_setup(
        &self,
        secret: &str,
        username: &str,
        password: &str,
        peer: SocketAddr,
    ) -> Result<Account, SetupError> {
        let _one_at_a_time = self.inner.setup.lock().await;
        // On etcd the link may have been used on another node a moment ago:
        // see that admin (and the link's revocation) before judging.
        self.inner
            .store
            .caught_up()
            .await
            .map_err(AuthError::from)?;
        let audit = |outcome| {
            self.inner
                .audit
                .record(username, Some(peer), "http", "setup", None, outcome);
        };
        if !self.setup_required() {
            audit("refused");
            return Err(SetupError::Done);
        }
        let attempt = match self.inner.throttle.begin(SETUP_OWNER, peer.ip()) {
            Ok(attempt) => attempt,
            Err(wait) => {
                audit("throttled");
                return Err(SetupError::Throttled(wait));
            }
        };
        let valid = matches!(
            self.inner.tokens.resolve(secret).await?,
            Some(t) if t.kind == TokenKind::Setup && t.username == SETUP_OWNER
        );
        if !valid {
            attempt.failed();
            audit("failed");
            return Err(SetupError::BadLink);
        }
        drop(attempt);
        // What would refuse the account refuses it before the link is used
        // up; then the link is taken, by one attempt of any racing on any
        // node, and only that one makes its admin.
        normalize_username(username)?;
        check_strength(password)?;
        if !self.inner.tokens.take_secret(secret).await? {
            audit("refused");
            return Err(SetupError::BadLink);
        }
        let account = self
            .inner
            .accounts
            .create(username, Role::Admin, password)
            .await?;
        self.inner.tokens.revoke_all(SETUP_OWNER).await?;
        self.inner.admin_exists.store(true, Ordering::Relaxed);
        self.inner
            .audit
            .record(&account.username, Some(peer), "http", "setup", None, "ok");
        Ok(account)
    }

    /// Whether a browser page with this `Origin` may act with our cookie on
    /// a connection that arrived at `local`: a page of this server — its
    /// listener's own address, `localhost` for loopback, the configured
    /// `public_url` and `allowed_origins`. Never judged by the `Host` header,
    /// which the client chooses (DNS rebinding).
    pub fn origin_allowed(&self, origin: &str, local: Option<SocketAddr>) -> bool {
        if self.inner.origins.iter().any(|o| o == origin) {
            return true;
        }
        local.is_some_and(|local| {
            !local.ip().is_unspecified() && origin == format!("http://{local}")
        })
    }

    /// The session cookie's name: `__Host-` prefixed under https, where
    /// the browser then holds it to this exact host and to `Secure`.
    pub fn cookie_name(&self) -> &'static str {
        if self.inner.https {
            super::request::SECURE_SESSION_COOKIE
        } else {
            super::request::SESSION_COOKIE
        }
    }

    /// Whether the session cookie is `Secure` (sent over https only).
    pub fn secure_cookies(&self) -> bool {
        self.inner.https
    }

    /// Whether a request's `Host` may reach a loopback listener: an IP
    /// address, `localhost`, or a configured origin's host. A page on a
    /// name the attacker owns, re-pointed at 127.0.0.1 (DNS rebinding),
    /// would otherwise be same-origin with us and need no cookie in `open`
    /// mode; browsers cannot send a `Host` of an IP they did not connect to.
    pub fn host_allowed(&self, host: &str) -> bool {
        if !self.inner.check_hosts {
            return true;
        }
        let name = match host.strip_prefix('[') {
            Some(v6) => {
                return v6
                    .split(']')
                    .next()
                    .is_some_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok());
            }
            None => host.rsplit_once(':').map_or(host, |(name, _)| name),
        };
        let name = name.to_ascii_lowercase();
        name == "localhost"
            || name.parse::<std::net::Ipv4Addr>().is_ok()
            || self.inner.origins.iter().any(|origin| {
                origin
                    .split_once("://")
                    .map(|(_, authority)| authority.rsplit_once(':').map_or(authority, |(h, _)| h))
                    == Some(name.as_str())
            })
    }
}
