//! Which nodes have members of which MQTT shared subscription
//! (`$share/{group}/{filter}`), so that the nodes can agree which of them
//! hands each message to the group.
//!
//! - `{prefix}share/{subscription}/{node}` (value: the node id) is on the
//!   node's lease: put when the node's first member of the group joins
//!   ([`Node::share`]), deleted when its last leaves ([`Node::unshare`]),
//!   and gone with the lease when the node dies or is cut off.
//! - The log watch reports these keys' changes in [`LogEntry::shares`], in
//!   revision order with everything else, so every node's applier knows
//!   each group's member nodes as of any revision it has applied.
//! - [`EtcdLog::read_shares`] reads them all at one revision, for a cache
//!   (re)built from a snapshot at that revision.
//!
//! A subscription holds `/` (its filter does); a node id holds none, so the
//! last `/` of the key ends the subscription.
//!
//! [`LogEntry::shares`]: super::LogEntry::shares

use etcd_client::GetOptions;

use super::read::prefix_end;
use super::{EtcdError, EtcdLog, Keys, LeaseState, Node, protocol, revision, to_i64};

/// Share keys read per request.
const READ_PAGE: i64 = 1000;

/// One `share/` key's change, as the watch reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShareChange {
    /// `$share/{group}/{filter}`.
    pub subscription: String,
    pub node: String,
    /// Put (the node has members now) or deleted (it has none, or died).
    pub present: bool,
}

/// Every `(subscription, node)` with members, as of `revision`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShareMembers {
    pub revision: u64,
    pub members: Vec<(String, String)>,
}

impl Node {
    /// Says that this node has members of `subscription`, on its lease as
    /// held now: the put's revision. [`EtcdError::LeaseLost`] without one.
    pub async fn share(&self, subscription: &str) -> Result<u64, EtcdError> {
        check_subscription(subscription)?;
        let LeaseState::Alive { lease } = *self.state.borrow() else {
            return Err(EtcdError::LeaseLost(self.id.clone()));
        };
        let key = self.log.shared.keys.share(subscription, &self.id);
        let response = self
            .log
            .put_on_lease(
                "shared subscription put",
                &key,
                self.id.as_bytes(),
                lease,
                &self.id,
                false,
            )
            .await?;
        let header = response
            .header()
            .ok_or_else(|| protocol("a put without a header"))?;
        revision(header.revision())
    }

    /// Says that this node has no members of `subscription` any more.
    pub async fn unshare(&self, subscription: &str) -> Result<(), EtcdError> {
        check_subscription(subscription)?;
        let key = self.log.shared.keys.share(subscription, &self.id);
        self.log
            .retrying("shared subscription delete", || async {
                let (member, client) = self.log.member()?;
                let mut kv = client.kv_client();
                self.log
                    .deadline(member, kv.delete(key.clone(), None))
                    .await
            })
            .await?;
        Ok(())
    }
}

impl EtcdLog {
    /// Every node's shared subscriptions at revision `at` (`None`: now).
    pub async fn read_shares(&self, at: Option<u64>) -> Result<ShareMembers, EtcdError> {
        let prefix = self.shared.keys.shares();
        let end = prefix_end(prefix.as_bytes());
        let mut pinned = at.map(|at| at.max(1));
        let mut from = prefix.clone().into_bytes();
        let mut members = Vec::new();
        loop {
            let read_at = pinned.map_or(Ok(0), to_i64)?;
            let response = self
                .retrying("shared subscriptions read", || {
                    let options = GetOptions::new()
                        .with_range(end.clone())
                        .with_limit(READ_PAGE)
                        .with_keys_only()
                        .with_revision(read_at);
                    self.range(from.clone(), options)
                })
                .await?;
            let header = response
                .header()
                .ok_or_else(|| protocol("a range read without a header"))?;
            if pinned.is_none() {
                pinned = Some(revision(header.revision())?);
            }
            let kvs = response.kvs();
            for kv in kvs {
                let parsed = kv
                    .key()
                    .strip_prefix(self.shared.keys.root.as_bytes())
                    .and_then(Keys::parse_share);
                match parsed {
                    Some(member) => members.push(member),
                    None => tracing::warn!(
                        key = %String::from_utf8_lossy(kv.key()),
                        "not a shared subscription key; ignored"
                    ),
                }
            }
            match kvs.last() {
                Some(last) if response.more() => {
                    from = last.key().to_vec();
                    from.push(0);
                }
                _ => break,
            }
        }
        Ok(ShareMembers {
            revision: pinned.unwrap_or(0),
            members,
        })
    }
}

impl Keys {
    /// Where every `share/` key starts.
    pub(super) fn shares(&self) -> String {
        format!("{}share/", self.root)
    }

    /// `{prefix}share/{subscription}/{node}`.
    pub(super) fn share(&self, subscription: &str, node: &str) -> String {
        format!("{}share/{subscription}/{node}", self.root)
    }

    /// The subscription and node of a `share/` key's path (after the prefix).
    pub(super) fn parse_share(path: &[u8]) -> Option<(String, String)> {
        let rest = std::str::from_utf8(path.strip_prefix(b"share/")?).ok()?;
        let (subscription, node) = rest.rsplit_once('/')?;
        (!subscription.is_empty() && !node.is_empty())
            .then(|| (subscription.to_owned(), node.to_owned()))
    }
}

fn check_subscription(subscription: &str) -> Result<(), EtcdError> {
    if subscription.is_empty() {
        return Err(EtcdError::InvalidName(
            "an empty shared subscription".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_slash_ends_the_subscription() {
        let keys = Keys::new("/m/").unwrap();
        let key = keys.share("$share/workers/jobs/+/#", "n01");
        assert_eq!(key, "/m/share/$share/workers/jobs/+/#/n01");
        let path = key.strip_prefix("/m/").unwrap();
        assert_eq!(
            Keys::parse_share(path.as_bytes()),
            Some(("$share/workers/jobs/+/#".into(), "n01".into()))
        );
        // A filter may end in an empty level.
        let key = keys.share("$share/g/a/", "n02");
        let path = key.strip_prefix("/m/").unwrap();
        assert_eq!(
            Keys::parse_share(path.as_bytes()),
            Some(("$share/g/a/".into(), "n02".into()))
        );
        assert_eq!(Keys::parse_share(b"share/n01"), None);
        assert_eq!(Keys::parse_share(b"own/x"), None);
    }
}
