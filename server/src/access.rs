//! Who may publish to or subscribe to which topics: one decision function for
//! every protocol. Until accounts exist the rules come from the config file
//! (`[[acl]]`), checked in order, first match wins, no match allows.

use serde::Deserialize;

use crate::topic::TopicFilter;

/// What a client wants to do with a topic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Write or publish to the topic.
    Publish,
    /// Subscribe to, or receive a message on, the topic.
    Subscribe,
}

/// Who is asking: an MQTT client's username and client id; HTTP clients are
/// anonymous with an empty client id until accounts exist.
#[derive(Clone, Copy, Debug, Default)]
pub struct Identity<'a> {
    pub username: Option<&'a str>,
    pub client_id: &'a str,
}

/// One `[[acl]]` rule from the config file.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AclRule {
    /// An MQTT topic filter; `%u` stands for the username, `%c` for the client id.
    pub filter: String,
    /// Allow (`true`) or deny (`false`) publishing; absent: this rule says nothing about it.
    pub publish: Option<bool>,
    /// Allow or deny subscribing and receiving; absent: this rule says nothing about it.
    pub subscribe: Option<bool>,
}

/// The access policy.
#[derive(Clone, Debug)]
pub struct Access {
    pub allow_anonymous: bool,
    rules: Vec<AclRule>,
}

#[derive(Debug, thiserror::Error)]
#[error("acl rule {index}: {reason}")]
pub struct AclError {
    index: usize,
    reason: String,
}

impl Default for Access {
    fn default() -> Self {
        Self {
            allow_anonymous: true,
            rules: Vec::new(),
        }
    }
}

impl Access {
    /// Checks every rule's filter once, so a bad config fails at start.
    pub fn new(allow_anonymous: bool, rules: Vec<AclRule>) -> Result<Self, AclError> {
        for (index, rule) in rules.iter().enumerate() {
            let probe = rule.filter.replace("%u", "u").replace("%c", "c");
            TopicFilter::parse(&probe).map_err(|e| AclError {
                index: index + 1,
                reason: format!("'{}': {e}", rule.filter),
            })?;
        }
        Ok(Self {
            allow_anonymous,
            rules,
        })
    }

    /// Whether a client without a username may connect.
    pub fn admits(&self, who: &Identity) -> bool {
        self.allow_anonymous || who.username.is_some()
    }

    /// Whether `who` may do `action` on `topic`. For a subscription, `topic`
    /// is the subscription's filter, whose `+` and `#` count as plain levels:
    /// a rule on `test/#` covers a subscription to `test/+`, a rule on
    /// `test/nosubscribe` does not cover `test/#` (each delivery is checked).
    pub fn allows(&self, who: &Identity, action: Action, topic: &str) -> bool {
        for rule in &self.rules {
            let verdict = match action {
                Action::Publish => rule.publish,
                Action::Subscribe => rule.subscribe,
            };
            let Some(verdict) = verdict else { continue };
            let Some(filter) = substitute(&rule.filter, who) else {
                continue;
            };
            if TopicFilter::parse(&filter).is_ok_and(|f| f.matches(topic)) {
                return verdict;
            }
        }
        true
    }
}

/// The rule's filter for this client, or `None` if it names a username the
/// client lacks. Substituted values with wildcards or `/` cannot widen a rule.
fn substitute(filter: &str, who: &Identity) -> Option<String> {
    if !filter.contains('%') {
        return Some(filter.to_owned());
    }
    let safe = |s: &str| !s.is_empty() && !s.contains(['/', '+', '#']);
    let mut out = filter.to_owned();
    if out.contains("%u") {
        let user = who.username.filter(|u| safe(u))?;
        out = out.replace("%u", user);
    }
    if out.contains("%c") {
        if !safe(who.client_id) {
            return None;
        }
        out = out.replace("%c", who.client_id);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(filter: &str, publish: Option<bool>, subscribe: Option<bool>) -> AclRule {
        AclRule {
            filter: filter.into(),
            publish,
            subscribe,
        }
    }

    #[test]
    fn first_matching_rule_wins_and_no_match_allows() {
        let access = Access::new(
            true,
            vec![
                rule("test/nosubscribe", None, Some(false)),
                rule("test/#", Some(false), Some(true)),
            ],
        )
        .unwrap();
        let who = Identity::default();
        assert!(!access.allows(&who, Action::Subscribe, "test/nosubscribe"));
        assert!(access.allows(&who, Action::Subscribe, "test/+"));
        assert!(!access.allows(&who, Action::Publish, "test/nosubscribe"));
        assert!(access.allows(&who, Action::Publish, "other/topic"));
    }

    #[test]
    fn username_and_client_id_are_substituted() {
        let access = Access::new(
            false,
            vec![
                rule("devices/%u/#", Some(true), Some(true)),
                rule("clients/%c", Some(true), None),
                rule("#", Some(false), None),
            ],
        )
        .unwrap();
        let alice = Identity {
            username: Some("alice"),
            client_id: "c1",
        };
        assert!(access.allows(&alice, Action::Publish, "devices/alice/x"));
        assert!(!access.allows(&alice, Action::Publish, "devices/bob/x"));
        assert!(access.allows(&alice, Action::Publish, "clients/c1"));
        let sneaky = Identity {
            username: Some("+"),
            client_id: "#",
        };
        assert!(!access.allows(&sneaky, Action::Publish, "devices/bob/x"));
        assert!(!access.allows(&sneaky, Action::Publish, "clients/x"));
        assert!(!access.admits(&Identity::default()));
        assert!(access.admits(&alice));
    }

    #[test]
    fn bad_filters_are_refused_at_start() {
        assert!(Access::new(true, vec![rule("a/#/b", Some(false), None)]).is_err());
    }
}
