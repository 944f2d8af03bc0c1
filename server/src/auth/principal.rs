//! Who is asking: the one description of a client that every protocol hands
//! to the access policy — an account with its role, or nobody (anonymous).
//! It remembers how it was proved, so a live connection can be re-checked
//! when accounts or tokens change.

use super::Role;

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
