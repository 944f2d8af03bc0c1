//! Who is signed in: the app's auth state, shared by every page as a context.
//!
//! The browser asks `GET /api/auth/me` once when the app starts. Afterwards
//! anything that meets a signed-out answer — a REST call's 401, a WebSocket
//! the server closed with 1008 or would not open — asks again ([`Auth::recheck`])
//! or reports it ([`Auth::lost`]); the app then shows the sign-in page (or the
//! first-run setup page) instead of the one the user was on.
//!
//! The server renders every page as `Checking`: it does not know the browser's
//! session, and the browser's first render must match what it hydrates.

use leptos::prelude::*;
use serde::{Deserialize, Serialize};

use crate::event::ErrorBody;

/// What an account may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything, including accounts.
    Admin,
    /// Reads and writes records.
    Editor,
    /// Reads only.
    Viewer,
    /// A sign or sensor: MQTT and API tokens, never the web app.
    Device,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Admin, Role::Editor, Role::Viewer, Role::Device];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Editor => "editor",
            Role::Viewer => "viewer",
            Role::Device => "device",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == text)
    }

    /// May create, change and delete signs, messages and records.
    pub fn can_edit(self) -> bool {
        matches!(self, Role::Admin | Role::Editor)
    }

    pub fn is_admin(self) -> bool {
        self == Role::Admin
    }

    /// One line for a role picker.
    pub fn explain(self) -> &'static str {
        match self {
            Role::Admin => "admin: everything, including accounts",
            Role::Editor => "editor: changes signs, messages and data",
            Role::Viewer => "viewer: looks, changes nothing",
            Role::Device => "device: API tokens and MQTT only, no sign-in",
        }
    }
}

/// The shortest password the server takes (`server/src/auth/password.rs`);
/// checked here too, so a form says so before anything is sent.
pub const MIN_PASSWORD_LEN: usize = 8;

/// What a new-password field says about length.
pub const PASSWORD_HINT: &str = "at least 8 characters";

/// What is wrong with a new password typed twice, if anything.
pub fn new_password_problem(new: &str, repeat: &str) -> Option<String> {
    if new.chars().count() < MIN_PASSWORD_LEN {
        Some(format!(
            "The password needs at least {MIN_PASSWORD_LEN} characters."
        ))
    } else if new != repeat {
        Some("The two passwords differ; type the same one twice.".to_string())
    } else {
        None
    }
}

/// How the server admits people.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Sign-in required.
    #[default]
    Accounts,
    /// No sign-in (loopback only): whoever reaches it may read and write.
    Open,
}

/// Who the browser is, as `/api/auth/me`, `login`, `setup` and `password` answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Me {
    /// `None`: nobody signed in, on a server in open mode.
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub role: Option<Role>,
    #[serde(default)]
    pub mode: Mode,
}

impl Me {
    /// The name to show: the account's, or "anyone" on an open server.
    pub fn name(&self) -> String {
        self.username
            .clone()
            .unwrap_or_else(|| "anyone".to_string())
    }

    /// May change records: a role that writes, or anyone on an open server.
    pub fn can_edit(&self) -> bool {
        match self.role {
            Some(role) => role.can_edit(),
            None => self.mode == Mode::Open,
        }
    }

    pub fn is_admin(&self) -> bool {
        self.role == Some(Role::Admin)
    }

    /// Signed in to an account (so there is something to sign out of).
    pub fn has_account(&self) -> bool {
        self.username.is_some()
    }
}

/// Where the browser stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Session {
    /// Not known yet (always so on the server).
    Checking,
    SignedIn(Me),
    SignedOut,
    /// No admin exists yet: the first-run setup link makes one.
    SetupRequired,
}

/// The error codes that mean "not signed in" rather than "not allowed".
pub fn signed_out_by(error: &ErrorBody) -> Option<Session> {
    match error.code.as_str() {
        "unauthenticated" => Some(Session::SignedOut),
        "setup_required" => Some(Session::SetupRequired),
        _ => None,
    }
}

/// The app's auth state; `Copy`, so pages and connections keep one each.
#[derive(Clone, Copy)]
pub struct Auth {
    pub session: RwSignal<Session>,
    /// Why the state cannot be known right now (the server is unreachable).
    pub problem: RwSignal<Option<String>>,
    /// A `me` request is on its way: more asks wait for its answer.
    #[cfg_attr(not(feature = "hydrate"), allow(dead_code))]
    asking: StoredValue<bool>,
}

/// The app's [`Auth`], provided by [`Auth::provide`] at the top of the app.
pub fn use_auth() -> Auth {
    expect_context::<Auth>()
}

impl Auth {
    /// Makes the auth state the app's context and, in the browser, asks who is signed in.
    pub fn provide() -> Auth {
        let auth = Auth {
            session: RwSignal::new(Session::Checking),
            problem: RwSignal::new(None),
            asking: StoredValue::new(false),
        };
        provide_context(auth);
        // Effects run only in the browser, once it has hydrated.
        Effect::new(move |_| auth.recheck());
        auth
    }

    /// The signed-in account, if any (tracked).
    pub fn me(self) -> Option<Me> {
        self.session.with(|s| match s {
            Session::SignedIn(me) => Some(me.clone()),
            _ => None,
        })
    }

    pub fn role(self) -> Option<Role> {
        self.session.with(|s| match s {
            Session::SignedIn(me) => me.role,
            _ => None,
        })
    }

    /// Whether edit controls are offered: only once a role that may write is known.
    pub fn can_edit(self) -> Memo<bool> {
        Memo::new(move |_| self.me().is_some_and(|me| me.can_edit()))
    }

    /// Whether the admin's pages are offered.
    pub fn is_admin(self) -> Memo<bool> {
        Memo::new(move |_| self.me().is_some_and(|me| me.is_admin()))
    }

    pub fn signed_in(self, me: Me) {
        self.problem.set(None);
        self.session.set(Session::SignedIn(me));
    }

    /// A request was refused with `error`: if that means the session is gone,
    /// the app goes to sign-in (or setup). `true` if it did.
    pub fn lost(self, error: &ErrorBody) -> bool {
        match signed_out_by(error) {
            Some(session) => {
                self.session.try_set(session);
                true
            }
            None => false,
        }
    }

    /// Asks the server who is signed in, unless a question is on its way.
    pub fn recheck(self) {
        #[cfg(feature = "hydrate")]
        {
            if self.asking.get_value() {
                return;
            }
            self.asking.set_value(true);
            leptos::task::spawn_local(async move {
                let answer = crate::api::get::<Me>(None, "/api/auth/me").await;
                self.asking.try_set_value(false);
                match answer {
                    Ok(me) => {
                        self.problem.try_set(None);
                        // An unchanged answer is no change: pages are not rebuilt.
                        if self.session.try_get_untracked() != Some(Session::SignedIn(me.clone())) {
                            self.session.try_set(Session::SignedIn(me));
                        }
                    }
                    Err(failure) if failure.status == 401 => {
                        let session = signed_out_by(&failure.error).unwrap_or(Session::SignedOut);
                        self.problem.try_set(None);
                        self.session.try_set(session);
                    }
                    Err(failure) => {
                        // Unreachable or failing: say so, and ask again shortly
                        // if nothing is known yet.
                        self.problem.try_set(Some(failure.words()));
                        if self.session.try_get_untracked() == Some(Session::Checking) {
                            set_timeout(move || self.recheck(), std::time::Duration::from_secs(3));
                        }
                    }
                }
            });
        }
    }

    /// Signs out of this browser, then shows the sign-in page.
    pub fn sign_out(self) {
        #[cfg(feature = "hydrate")]
        leptos::task::spawn_local(async move {
            // Whatever the answer, this page stops acting as signed in; a
            // failed logout leaves a cookie the next `me` still accepts.
            let result = crate::api::post::<()>(None, "/api/auth/logout", None).await;
            match result {
                Ok(()) => {
                    self.session.try_set(Session::SignedOut);
                }
                Err(failure) => {
                    self.problem.try_set(Some(failure.words()));
                    self.recheck();
                }
            }
        });
    }
}

/// Where to return after signing in: a path of this site, never another site
/// (`//host` or `/\host` would leave it).
pub fn safe_return(next: Option<&str>) -> String {
    match next {
        Some(path)
            if path.starts_with('/')
                && !path.starts_with("//")
                && !path.starts_with("/\\")
                && !path.starts_with("/login")
                && !path.starts_with("/setup") =>
        {
            path.to_string()
        }
        _ => "/".to_string(),
    }
}

/// `%`-encodes a query value.
pub fn encode_query(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_read_as_the_server_writes_them() {
        let me: Me =
            serde_json::from_str(r#"{"username":"ann","role":"viewer","mode":"accounts"}"#)
                .expect("me");
        assert_eq!(me.role, Some(Role::Viewer));
        assert!(!me.can_edit() && !me.is_admin() && me.has_account());
        // Before the server said its mode, and an open server's anonymous visitor.
        let me: Me = serde_json::from_str(r#"{"username":"bo","role":"admin"}"#).expect("me");
        assert!(me.is_admin() && me.can_edit() && me.mode == Mode::Accounts);
        let anyone: Me =
            serde_json::from_str(r#"{"username":null,"role":null,"mode":"open"}"#).expect("me");
        assert!(anyone.can_edit() && !anyone.is_admin() && !anyone.has_account());
        assert_eq!(anyone.name(), "anyone");
        assert!(Role::Editor.can_edit() && !Role::Editor.is_admin());
        assert_eq!(Role::parse("device"), Some(Role::Device));
        assert_eq!(Role::parse("root"), None);
    }

    #[test]
    fn new_passwords_are_long_enough_and_typed_twice() {
        assert!(PASSWORD_HINT.contains(&MIN_PASSWORD_LEN.to_string()));
        assert!(new_password_problem("short", "short").is_some_and(|p| p.contains('8')));
        assert!(
            new_password_problem("long enough", "long enougH")
                .is_some_and(|p| p.contains("differ"))
        );
        assert_eq!(new_password_problem("long enough", "long enough"), None);
    }

    #[test]
    fn only_session_codes_sign_out() {
        let error = |code: &str| ErrorBody {
            code: code.into(),
            message: String::new(),
        };
        assert_eq!(
            signed_out_by(&error("unauthenticated")),
            Some(Session::SignedOut)
        );
        assert_eq!(
            signed_out_by(&error("setup_required")),
            Some(Session::SetupRequired)
        );
        assert_eq!(signed_out_by(&error("invalid_credentials")), None);
        assert_eq!(signed_out_by(&error("forbidden")), None);
    }

    #[test]
    fn returns_only_to_pages_of_this_site() {
        assert_eq!(safe_return(Some("/signs/a?x=1")), "/signs/a?x=1");
        assert_eq!(safe_return(Some("//evil.example/")), "/");
        assert_eq!(safe_return(Some("/\\evil.example")), "/");
        assert_eq!(safe_return(Some("https://evil.example/")), "/");
        assert_eq!(safe_return(Some("/login?next=/")), "/");
        assert_eq!(safe_return(None), "/");
        assert_eq!(encode_query("/data?table=a b"), "/data%3Ftable%3Da%20b");
    }
}
