//! An account: a user name, a role, an argon2id password hash, and whether
//! it may sign in. Stored as JSON under its user name in the store's
//! `accounts` keyspace, which no record API reaches.

use serde::{Deserialize, Serialize};

use super::AuthError;

/// What an account may do (SECURITY.md §7.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything, accounts included.
    Admin,
    /// Read and write every record.
    Editor,
    /// Read every record.
    Viewer,
    /// Only its own topics; cannot sign in to the web app.
    Device,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub username: String,
    pub role: Role,
    /// A PHC string (`$argon2id$v=19$…`); never shown, logged or sent.
    pub password_hash: String,
    pub disabled: bool,
    /// Unix milliseconds.
    pub created_ms: i64,
    pub changed_ms: i64,
    /// A device account: the `devices` record it belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// A device account: the only topics it may reach (SECURITY.md §7.3).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scope: Vec<Grant>,
}

/// One set of topics a device account may reach, and how.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// An MQTT topic filter.
    pub filter: String,
    pub publish: bool,
    pub subscribe: bool,
}

impl Grant {
    pub fn both(filter: impl Into<String>) -> Self {
        Self {
            filter: filter.into(),
            publish: true,
            subscribe: true,
        }
    }

    pub fn read(filter: impl Into<String>) -> Self {
        Self {
            filter: filter.into(),
            publish: false,
            subscribe: true,
        }
    }

    pub fn write(filter: impl Into<String>) -> Self {
        Self {
            filter: filter.into(),
            publish: true,
            subscribe: false,
        }
    }
}

/// Longest user name, in bytes.
pub const MAX_USERNAME_LEN: usize = 64;

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Editor => "editor",
            Role::Viewer => "viewer",
            Role::Device => "device",
        }
    }
}

/// The user name as stored: lower case, `[a-z0-9][a-z0-9._-]*`, at most 64
/// bytes. Nothing that could act as a topic level separator, wildcard or
/// `$`, so `%u` in an access rule can never widen it.
pub fn normalize_username(name: &str) -> Result<String, AuthError> {
    let name = name.trim().to_ascii_lowercase();
    let valid_first = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let valid_rest = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'));
    if !valid_first || !valid_rest || name.len() > MAX_USERNAME_LEN {
        return Err(AuthError::BadUsername(format!(
            "a user name is 1–{MAX_USERNAME_LEN} letters, digits, '.', '_' or '-', starting with a letter or digit"
        )));
    }
    Ok(name)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn user_names_are_lower_case_and_cannot_hold_topic_syntax() {
        assert_eq!(normalize_username(" Alice ").unwrap(), "alice");
        assert_eq!(
            normalize_username("sign-lobby.2_b").unwrap(),
            "sign-lobby.2_b"
        );
        for bad in [
            "",
            "-x",
            ".x",
            "a/b",
            "a+b",
            "a#",
            "$sys",
            "a:b",
            "a b",
            "ä",
            &"a".repeat(65),
        ] {
            assert!(normalize_username(bad).is_err(), "{bad:?} accepted");
        }
    }
}
