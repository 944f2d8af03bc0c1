//! Who is asking: the one description of a client that every protocol hands
//! to the access policy — an account with its role, or nobody (anonymous).
//! It remembers how it was proved, so a live connection can be re-checked
//! when accounts or tokens change.

use std::sync::Arc;

use super::{Account, Role};
use crate::topic::TopicFilter;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// The account's user name; in `open` mode, whatever user name an MQTT
    /// client typed (unchecked).
    pub username: Option<String>,
    /// The account's role; `None` for anyone not signed in.
    pub role: Option<Role>,
    /// The MQTT client id; empty over HTTP.
    pub client_id: String,
    pub proof: Proof,
    /// A device account's topics, parsed once at sign-in.
    pub scope: Scope,
}

/// The topics a device account may reach: (filter, publish, subscribe).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scope(Arc<[(TopicFilter, bool, bool)]>);

impl Scope {
    /// Whether the scope lets its holder publish (`publish`) or read a topic.
    pub fn allows(&self, publish: bool, topic: &str) -> bool {
        self.0.iter().any(|(filter, may_publish, may_read)| {
            (if publish { *may_publish } else { *may_read }) && filter.matches(topic)
        })
    }
}

/// How a principal proved who it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Proof {
    /// Nothing: anonymous, or a user name `open` mode took on trust.
    Nothing,
    /// The account's password, as the account stood then.
    Password { changed_ms: i64 },
    /// A session or API token (by the hash of its secret), and the account
    /// as it stood then.
    Token { key: Vec<u8>, changed_ms: i64 },
}

impl Principal {
    /// Nobody signed in.
    pub fn anonymous() -> Self {
        Self {
            username: None,
            role: None,
            client_id: String::new(),
            proof: Proof::Nothing,
            scope: Scope::default(),
        }
    }

    /// An account, signed in with `proof`.
    pub fn of_account(account: Account, proof: Proof) -> Self {
        let scope = account
            .scope
            .iter()
            .filter_map(|grant| {
                let filter = TopicFilter::parse(&grant.filter).ok()?;
                Some((filter, grant.publish, grant.subscribe))
            })
            .collect();
        Self {
            username: Some(account.username),
            role: Some(account.role),
            client_id: String::new(),
            proof,
            scope: Scope(scope),
        }
    }

    /// Whether no account stands behind this principal.
    pub fn is_anonymous(&self) -> bool {
        self.role.is_none()
    }

    pub fn is_admin(&self) -> bool {
        self.role == Some(Role::Admin)
    }

    /// A name for logs and the audit: the user name, or `anonymous`.
    pub fn name(&self) -> &str {
        self.username.as_deref().unwrap_or("anonymous")
    }
}
