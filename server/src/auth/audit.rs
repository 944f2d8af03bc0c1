//! The audit log: sign-ins, failures, throttles and account changes, newest
//! last, for admins (`GET /api/audit`) and in the server log. It is bounded
//! (the oldest entries go first) and lives in memory: a restart starts it
//! afresh, while the server log keeps every line. No password, token or
//! cookie ever goes in.

use std::collections::VecDeque;
use std::sync::Mutex;

use serde::Serialize;

use crate::clock;

/// Entries kept at most.
pub const MAX_AUDIT_ENTRIES: usize = 10_000;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AuditEntry {
    /// When, RFC 3339.
    pub at: String,
    /// Who acted: a user name, or what a client claimed to be.
    pub actor: String,
    /// The client's address, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// `http`, `mqtt`, `cli`, `server`.
    pub protocol: &'static str,
    /// `sign_in`, `sign_out`, `setup`, `create_account`, `update_account`,
    /// `delete_account`, `reset_password`, `change_password`, `create_token`,
    /// `revoke_token`.
    pub action: &'static str,
    /// What was acted on, when not the actor.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// `ok`, `failed`, `throttled`, `refused`.
    pub outcome: &'static str,
}

#[derive(Default)]
pub struct Audit {
    entries: Mutex<VecDeque<AuditEntry>>,
}

impl Audit {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records an event (and logs it).
    pub fn record(
        &self,
        actor: &str,
        peer: Option<std::net::SocketAddr>,
        protocol: &'static str,
        action: &'static str,
        target: Option<&str>,
        outcome: &'static str,
    ) {
        let entry = AuditEntry {
            at: clock::now_rfc3339(),
            actor: actor.chars().take(64).collect(),
            peer: peer.map(|p| p.to_string()),
            protocol,
            action,
            target: target.map(str::to_owned),
            outcome,
        };
        tracing::info!(
            target: "marquee::audit",
            actor = %entry.actor,
            peer = entry.peer.as_deref().unwrap_or("-"),
            protocol,
            action,
            target = entry.target.as_deref().unwrap_or("-"),
            outcome,
            "audit"
        );
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= MAX_AUDIT_ENTRIES {
            entries.pop_front();
        }
        entries.push_back(entry);
    }

    /// The newest `limit` entries, newest first.
    pub fn newest(&self, limit: usize) -> Vec<AuditEntry> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.iter().rev().take(limit).cloned().collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_log_keeps_the_newest_entries_only() {
        let audit = Audit::new();
        for i in 0..MAX_AUDIT_ENTRIES + 5 {
            audit.record(&format!("u{i}"), None, "http", "sign_in", None, "failed");
        }
        let newest = audit.newest(usize::MAX);
        assert_eq!(newest.len(), MAX_AUDIT_ENTRIES);
        assert_eq!(newest[0].actor, format!("u{}", MAX_AUDIT_ENTRIES + 4));
        assert_eq!(newest.last().unwrap().actor, "u5");
    }
}
