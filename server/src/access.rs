//! Who may do what to which topic: the one decision every protocol asks, at
//! every place data comes in or goes out (SECURITY.md §7.2). A record is the
//! topic `{table}/{id}`; an MQTT message its own topic.
//!
//! The order: deny rules first, then the role's grant (a device account's
//! own topics), then allow rules;
//! what nothing grants is denied in `accounts` mode and allowed in `open`
//! mode (local experiments and outside test suites, loopback only). Topics
//! beginning with `$` are reached only by rules that name them (`#` never
//! matches them), and `$SYS` is written by the broker alone.

use serde::Deserialize;

use crate::auth::{Principal, Role};
use crate::topic::TopicFilter;

/// What a client wants to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Write or publish to the topic.
    Publish,
    /// Read, subscribe to, or receive a message on, the topic.
    Subscribe,
    /// Manage tables (the topic is ignored). Accounts and tokens are
    /// managed by admins alone, in either mode.
    Manage,
}

/// How strict the server is about who connects.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Everyone signs in; what no rule or role grants is denied.
    #[default]
    Accounts,
    /// Anyone may connect and do what no `[[acl]]` rule denies. Only on loopback.
    Open,
}

/// One `[[acl]]` rule from the config file.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AclRule {
    /// An MQTT topic filter; `%u` stands for the user name, `%c` for the
    /// client id, each a whole level.
    pub filter: String,
    /// Allow (`true`) or deny (`false`) publishing; absent: this rule says nothing about it.
    pub publish: Option<bool>,
    /// Allow or deny subscribing and receiving; absent: this rule says nothing about it.
    pub subscribe: Option<bool>,
    /// Only for this user.
    pub user: Option<String>,
    /// Only for accounts with this role.
    pub role: Option<Role>,
    /// `true`: only for clients not signed in; `false`: only for accounts.
    /// Absent (and no `user` or `role`): for every account — and in `open`
    /// mode for anonymous clients too.
    pub anonymous: Option<bool>,
}

/// The access policy.
#[derive(Clone, Debug)]
pub struct Access {
    pub mode: Mode,
    /// `open` mode: whether MQTT clients without a user name may connect.
    allow_anonymous: bool,
    rules: Vec<AclRule>,
    /// Each rule's filter, parsed once at start when it names no `%u`/`%c`
    /// (the policy runs on every delivery).
    fixed: Vec<Option<TopicFilter>>,
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
            mode: Mode::Accounts,
            allow_anonymous: false,
            rules: Vec::new(),
            fixed: Vec::new(),
        }
    }
}

impl Access {
    /// Checks every rule once, so a bad config fails at start.
    pub fn new(mode: Mode, allow_anonymous: bool, rules: Vec<AclRule>) -> Result<Self, AclError> {
        for (index, rule) in rules.iter().enumerate() {
            let fail = |reason: String| AclError {
                index: index + 1,
                reason,
            };
            for level in rule.filter.split('/') {
                if level.contains('%') && level != "%u" && level != "%c" {
                    return Err(fail(format!(
                        "'{}': %u and %c must each be a whole topic level",
                        rule.filter
                    )));
                }
            }
            let probe = rule.filter.replace("%u", "u").replace("%c", "c");
            TopicFilter::parse(&probe).map_err(|e| fail(format!("'{}': {e}", rule.filter)))?;
            if rule.publish.is_none() && rule.subscribe.is_none() {
                return Err(fail(format!(
                    "'{}': say publish = true/false or subscribe = true/false",
                    rule.filter
                )));
            }
            if rule.anonymous == Some(true) && (rule.user.is_some() || rule.role.is_some()) {
                return Err(fail(
                    "anonymous = true cannot be combined with user or role".into(),
                ));
            }
        }
        let fixed = rules
            .iter()
            .map(|r| {
                (!r.filter.contains('%'))
                    .then(|| TopicFilter::parse(&r.filter).ok())
                    .flatten()
            })
            .collect();
        Ok(Self {
            mode,
            allow_anonymous,
            rules,
            fixed,
        })
    }

    /// Whether a client that is not signed in may connect at all.
    pub fn admits_anonymous(&self) -> bool {
        match self.mode {
            Mode::Open => self.allow_anonymous,
            Mode::Accounts => self.rules.iter().any(|r| r.anonymous == Some(true)),
        }
    }

    /// Whether `who` may do `action` on `topic`. For a subscription, `topic`
    /// is the subscription's filter, whose `+` and `#` count as plain levels:
    /// a rule on `test/#` covers a subscription to `test/+`, a rule on
    /// `test/nosubscribe` does not cover `test/#` (each delivery is checked).
    pub fn allows(&self, who: &Principal, action: Action, topic: &str) -> bool {
        if action == Action::Manage {
            return who.is_admin() || self.mode == Mode::Open;
        }
        if action == Action::Publish && (topic == "$SYS" || topic.starts_with("$SYS/")) {
            return false;
        }
        let verdicts = || {
            self.rules
                .iter()
                .zip(&self.fixed)
                .filter_map(move |(rule, fixed)| {
                    let verdict = match action {
                        Action::Publish => rule.publish,
                        Action::Subscribe => rule.subscribe,
                        Action::Manage => None,
                    }?;
                    if !self.applies(rule, who) {
                        return None;
                    }
                    let matches = match fixed {
                        Some(filter) => filter.matches(topic),
                        None => substitute(&rule.filter, who).is_some_and(|f| {
                            TopicFilter::parse(&f).is_ok_and(|f| f.matches(topic))
                        }),
                    };
                    matches.then_some(verdict)
                })
        };
        if verdicts().any(|allowed| !allowed) {
            return false;
        }
        if role_grants(who.role, action, topic)
            || who.scope.allows(action == Action::Publish, topic)
            || verdicts().any(|allowed| allowed)
        {
            return true;
        }
        self.mode == Mode::Open
    }

    fn applies(&self, rule: &AclRule, who: &Principal) -> bool {
        if let Some(user) = &rule.user
            && who.username.as_deref() != Some(user.as_str())
        {
            return false;
        }
        if let Some(role) = rule.role
            && who.role != Some(role)
        {
            return false;
        }
        match rule.anonymous {
            Some(anonymous) => anonymous == who.is_anonymous(),
            None => {
                rule.user.is_some()
                    || rule.role.is_some()
                    || !who.is_anonymous()
                    || self.mode == Mode::Open
            }
        }
    }
}

/// What a role may do by itself (SECURITY.md §7.2): admins and editors read
/// and write every record, viewers read them, admins also read `$SYS`.
/// Devices get nothing but their scope and what rules grant.
fn role_grants(role: Option<Role>, action: Action, topic: &str) -> bool {
    if topic.starts_with('$') {
        return role == Some(Role::Admin) && action == Action::Subscribe;
    }
    match role {
        Some(Role::Admin | Role::Editor) => true,
        Some(Role::Viewer) => action == Action::Subscribe,
        Some(Role::Device) | None => false,
    }
}

/// The rule's filter for this client, or `None` if it names a user name or
/// client id the client lacks. Values with wildcards or `/` cannot widen a
/// rule.
fn substitute(filter: &str, who: &Principal) -> Option<String> {
    if !filter.contains('%') {
        return Some(filter.to_owned());
    }
    let safe = |s: &str| !s.is_empty() && !s.starts_with('$') && !s.contains(['/', '+', '#']);
    let mut out = filter.to_owned();
    if out.contains("%u") {
        let user = who.username.as_deref().filter(|u| safe(u))?;
        out = out.replace("%u", user);
    }
    if out.contains("%c") {
        if !safe(&who.client_id) {
            return None;
        }
        out = out.replace("%c", &who.client_id);
    }
    Some(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::auth::Proof;

    fn rule(filter: &str, publish: Option<bool>, subscribe: Option<bool>) -> AclRule {
        AclRule {
            filter: filter.into(),
            publish,
            subscribe,
            ..AclRule::default()
        }
    }

    fn who(username: Option<&str>, role: Option<Role>, client_id: &str) -> Principal {
        Principal {
            username: username.map(str::to_owned),
            role,
            client_id: client_id.into(),
            proof: Proof::Nothing,
            scope: crate::auth::Scope::default(),
        }
    }

    #[test]
    fn a_device_reaches_its_own_topics_as_its_scope_says_and_nothing_else() {
        use crate::auth::{Account, Grant};
        let account = Account {
            username: "dev-clock".into(),
            role: Role::Device,
            password_hash: String::new(),
            disabled: false,
            created_ms: 0,
            changed_ms: 0,
            device: Some("clock".into()),
            scope: vec![Grant::both("awtrix_k/#"), Grant::read("wled/all/#")],
        };
        let device = Principal::of_account(account, Proof::Nothing);
        let access = Access::default();
        assert!(access.allows(&device, Action::Publish, "awtrix_k/stats"));
        assert!(access.allows(&device, Action::Subscribe, "awtrix_k/custom/#"));
        assert!(access.allows(&device, Action::Subscribe, "wled/all"));
        assert!(!access.allows(&device, Action::Publish, "wled/all/api"));
        // `#` covers its parent: WLED listens on its bare device topic.
        assert!(access.allows(&device, Action::Subscribe, "awtrix_k"));
        for topic in [
            "awtrix_k2/stats",
            "awtrix",
            "signs/lobby",
            "#",
            "+/stats",
            "$SYS/x",
        ] {
            assert!(!access.allows(&device, Action::Publish, topic), "{topic}");
        }
        for filter in ["#", "+/#", "awtrix_+/stats", "$SYS/#", "signs/+"] {
            assert!(
                !access.allows(&device, Action::Subscribe, filter),
                "{filter}"
            );
        }
        assert!(!access.allows(&device, Action::Manage, ""));
    }

    #[test]
    fn open_mode_allows_what_no_rule_denies_and_deny_rules_come_first() {
        let access = Access::new(
            Mode::Open,
            true,
            vec![
                rule("test/#", Some(true), Some(true)),
                rule("test/nosubscribe", None, Some(false)),
                rule("test/nopublish", Some(false), None),
            ],
        )
        .unwrap();
        let anyone = Principal::anonymous();
        assert!(!access.allows(&anyone, Action::Subscribe, "test/nosubscribe"));
        assert!(access.allows(&anyone, Action::Subscribe, "test/+"));
        assert!(!access.allows(&anyone, Action::Publish, "test/nopublish"));
        assert!(access.allows(&anyone, Action::Publish, "other/topic"));
        assert!(!access.allows(&anyone, Action::Publish, "$SYS/broker/uptime"));
        assert!(access.allows(&anyone, Action::Manage, ""));
        assert!(access.admits_anonymous());
    }

    #[test]
    fn accounts_mode_grants_by_role_and_denies_the_rest() {
        let access = Access::new(Mode::Accounts, true, Vec::new()).unwrap();
        let admin = who(Some("root"), Some(Role::Admin), "");
        let editor = who(Some("ed"), Some(Role::Editor), "");
        let viewer = who(Some("vi"), Some(Role::Viewer), "");
        let device = who(Some("sign-1"), Some(Role::Device), "");
        let anonymous = Principal::anonymous();
        for (p, read, write) in [
            (&admin, true, true),
            (&editor, true, true),
            (&viewer, true, false),
            (&device, false, false),
            (&anonymous, false, false),
        ] {
            assert_eq!(access.allows(p, Action::Subscribe, "signs/lobby"), read);
            assert_eq!(access.allows(p, Action::Subscribe, "signs/#"), read);
            assert_eq!(access.allows(p, Action::Publish, "signs/lobby"), write);
        }
        assert!(access.allows(&admin, Action::Subscribe, "$SYS/#"));
        assert!(!access.allows(&editor, Action::Subscribe, "$SYS/#"));
        assert!(!access.allows(&admin, Action::Publish, "$SYS/x"));
        assert!(access.allows(&admin, Action::Manage, ""));
        assert!(!access.allows(&editor, Action::Manage, ""));
        assert!(!access.admits_anonymous());
    }

    #[test]
    fn rules_name_users_roles_or_anonymous_and_deny_beats_a_role() {
        let access = Access::new(
            Mode::Accounts,
            false,
            vec![
                AclRule {
                    anonymous: Some(true),
                    ..rule("public/#", None, Some(true))
                },
                AclRule {
                    role: Some(Role::Editor),
                    ..rule("secret/#", Some(false), Some(false))
                },
                AclRule {
                    user: Some("sign-1".into()),
                    ..rule("awtrix/%u/#", Some(true), Some(true))
                },
                rule("devices/%u/#", Some(true), Some(true)),
            ],
        )
        .unwrap();
        let anonymous = Principal::anonymous();
        assert!(access.admits_anonymous());
        assert!(access.allows(&anonymous, Action::Subscribe, "public/x"));
        assert!(!access.allows(&anonymous, Action::Publish, "public/x"));
        // A rule without selectors is for accounts only.
        assert!(!access.allows(&anonymous, Action::Publish, "devices/x/y"));
        let editor = who(Some("ed"), Some(Role::Editor), "");
        assert!(!access.allows(&editor, Action::Subscribe, "secret/plans"));
        assert!(access.allows(&editor, Action::Subscribe, "other/plans"));
        let device = who(Some("sign-1"), Some(Role::Device), "c");
        assert!(access.allows(&device, Action::Publish, "awtrix/sign-1/notify"));
        assert!(access.allows(&device, Action::Publish, "devices/sign-1/x"));
        assert!(!access.allows(&device, Action::Publish, "awtrix/sign-2/notify"));
        assert!(!access.allows(&device, Action::Subscribe, "#"));
        assert!(!access.allows(&device, Action::Subscribe, "awtrix/+/notify"));
        let other = who(Some("sign-2"), Some(Role::Device), "c");
        assert!(!access.allows(&other, Action::Publish, "awtrix/sign-2/notify"));
    }

    #[test]
    fn substituted_values_cannot_widen_a_rule() {
        let access = Access::new(
            Mode::Accounts,
            false,
            vec![
                rule("devices/%u/#", Some(true), Some(true)),
                rule("clients/%c", Some(true), None),
            ],
        )
        .unwrap();
        let alice = who(Some("alice"), Some(Role::Device), "c1");
        assert!(access.allows(&alice, Action::Publish, "devices/alice/x"));
        assert!(access.allows(&alice, Action::Publish, "clients/c1"));
        assert!(!access.allows(&alice, Action::Publish, "devices/bob/x"));
        for (username, client_id) in [("+", "#"), ("#", "+"), ("a/b", "a/b"), ("$SYS", "$SYS")] {
            let sneaky = who(Some(username), Some(Role::Device), client_id);
            assert!(!access.allows(&sneaky, Action::Publish, "devices/bob/x"));
            assert!(!access.allows(&sneaky, Action::Publish, "clients/x"));
            assert!(!access.allows(&sneaky, Action::Publish, "devices/a/b/x"));
        }
    }

    #[test]
    fn bad_rules_are_refused_at_start() {
        assert!(Access::new(Mode::Open, true, vec![rule("a/#/b", Some(false), None)]).is_err());
        assert!(Access::new(Mode::Open, true, vec![rule("a/x%u", Some(true), None)]).is_err());
        assert!(Access::new(Mode::Open, true, vec![rule("a/b", None, None)]).is_err());
    }
}
