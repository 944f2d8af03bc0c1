//! The kinds of key that hold the Store's state, as one typed [`Key`]: what
//! a batch writes ([`super::Op`]), what the watch says changed
//! ([`super::Change`]) and what a snapshot holds ([`super::Item`]).
//!
//! Under the prefix (SCALE-OUT.md §5):
//! - `acct/{username}`: an account;
//! - `r/{table}/{id}`: a record (the table has no `/`; the id may);
//! - `sess/{client_id}`: a saved MQTT session;
//! - `t/{node}`: the node's latest transient publish, overwritten each time
//!   (every put is a revision of its own, so the watch yields each one);
//! - `tbl/{name}`: a table declaration (no `/` in the name);
//! - `tok/{hex}`: a token, by the hex of its hash.
//!
//! The layer's own keys sit between and around them (`idem/`, `role/`,
//! `node/`, `own/`, `will/`): no kind starts with `n` or `o`, because the
//! ownership watch covers every key from `node/` to the end of `own/`.

use std::fmt;

/// Which kind of Store state a key holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KeyKind {
    Account,
    Record,
    Session,
    Transient,
    Table,
    Token,
}

impl KeyKind {
    /// Every kind, in the key order of their prefixes.
    pub const ALL: [KeyKind; 6] = [
        KeyKind::Account,
        KeyKind::Record,
        KeyKind::Session,
        KeyKind::Transient,
        KeyKind::Table,
        KeyKind::Token,
    ];

    /// The kind's keys start with this, after the prefix.
    pub const fn prefix(self) -> &'static str {
        match self {
            KeyKind::Account => "acct/",
            KeyKind::Record => "r/",
            KeyKind::Session => "sess/",
            KeyKind::Transient => "t/",
            KeyKind::Table => "tbl/",
            KeyKind::Token => "tok/",
        }
    }
}

/// One key of the Store's state, by kind.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Key {
    /// `r/{table}/{id}`.
    Record { table: String, id: String },
    /// `tbl/{name}`: the table's declaration.
    Table(String),
    /// `acct/{username}`.
    Account(String),
    /// `tok/{hex of the token's hash}` (lower-case hex digits).
    Token(String),
    /// `sess/{client_id}`: an MQTT session.
    Session(String),
    /// `t/{node}`: the node's latest transient publish.
    Transient(String),
}

impl Key {
    pub fn record(table: impl Into<String>, id: impl Into<String>) -> Self {
        Key::Record {
            table: table.into(),
            id: id.into(),
        }
    }

    pub fn kind(&self) -> KeyKind {
        match self {
            Key::Record { .. } => KeyKind::Record,
            Key::Table(_) => KeyKind::Table,
            Key::Account(_) => KeyKind::Account,
            Key::Token(_) => KeyKind::Token,
            Key::Session(_) => KeyKind::Session,
            Key::Transient(_) => KeyKind::Transient,
        }
    }

    /// The record's table and id, if this is a record's key.
    pub fn as_record(&self) -> Option<(&str, &str)> {
        match self {
            Key::Record { table, id } => Some((table, id)),
            _ => None,
        }
    }

    /// The key under the prefix, e.g. `r/signs/lobby`, `tbl/signs`.
    pub fn path(&self) -> String {
        let prefix = self.kind().prefix();
        match self {
            Key::Record { table, id } => format!("{prefix}{table}/{id}"),
            Key::Table(name)
            | Key::Account(name)
            | Key::Token(name)
            | Key::Session(name)
            | Key::Transient(name) => format!("{prefix}{name}"),
        }
    }

    /// Why this key cannot be written, if it cannot.
    pub(super) fn check(&self) -> Result<(), String> {
        let bad = |what: &str| Err(format!("'{}': {what}", self.path()));
        match self {
            Key::Record { table, id } => {
                if table.is_empty() || table.contains('/') || id.is_empty() {
                    return bad("a table is non-empty without '/', an id non-empty");
                }
            }
            Key::Table(name) | Key::Transient(name) => {
                if name.is_empty() || name.contains('/') {
                    return bad("a table or node name is non-empty, without '/'");
                }
            }
            Key::Token(hex) => {
                if hex.is_empty() || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
                    return bad("a token key is the lower-case hex of its hash");
                }
            }
            Key::Account(name) | Key::Session(name) => {
                if name.is_empty() {
                    return bad("a username or MQTT client id is non-empty");
                }
            }
        }
        Ok(())
    }

    /// The key whose path (after the prefix) is `path`; `None` for the
    /// layer's own keys and anything else.
    pub(super) fn parse(path: &[u8]) -> Option<Key> {
        let path = std::str::from_utf8(path).ok()?;
        let name = |prefix: &str| {
            path.strip_prefix(prefix)
                .filter(|rest| !rest.is_empty())
                .map(str::to_owned)
        };
        if let Some(rest) = path.strip_prefix(KeyKind::Record.prefix()) {
            let (table, id) = rest.split_once('/')?;
            return (!table.is_empty() && !id.is_empty()).then(|| Key::record(table, id));
        }
        let key = if let Some(name) = name(KeyKind::Table.prefix()) {
            Key::Table(name)
        } else if let Some(name) = name(KeyKind::Account.prefix()) {
            Key::Account(name)
        } else if let Some(name) = name(KeyKind::Token.prefix()) {
            Key::Token(name)
        } else if let Some(name) = name(KeyKind::Session.prefix()) {
            Key::Session(name)
        } else {
            Key::Transient(name(KeyKind::Transient.prefix())?)
        };
        Some(key)
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.path())
    }
}
