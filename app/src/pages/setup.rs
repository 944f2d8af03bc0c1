//! `/setup#mqx_…`: the first run. Marquee prints this link once, while no
//! admin exists; the page makes the first admin and signs it in.
//!
//! The token is the link's fragment, which a browser never sends to the
//! server, so it reaches neither logs nor `Referer`; the page reads it from
//! `location.hash` and posts it once. On success the page replaces its history
//! entry, so the token does not stay in the back button either.

use leptos::html::Input;
use leptos::prelude::*;
use leptos::task::spawn_local;
use leptos_meta::Title;
use leptos_router::NavigateOptions;
use leptos_router::hooks::use_navigate;
use serde_json::json;

use super::common::ErrorNote;
use super::common::{When, handler};
use super::forms::{TextField, focus_when_shown};
use crate::api;
use crate::auth::{Me, PASSWORD_HINT, new_password_problem, use_auth};

/// The token in a `#fragment`, if it has one.
#[cfg_attr(not(feature = "hydrate"), allow(dead_code))]
pub fn token_of(hash: &str) -> Option<String> {
    let token = hash.trim_start_matches('#').trim();
    (!token.is_empty()).then(|| token.to_string())
}

#[component]
pub fn SetupPage() -> impl IntoView {
    let auth = use_auth();
    let navigate = use_navigate();
    // `None` until the browser has read the fragment (the server never sees it).
    let token = RwSignal::new(None::<Option<String>>);
    let read_token = move || {
        #[cfg(feature = "hydrate")]
        token.set(Some(token_of(
            &window().location().hash().unwrap_or_default(),
        )));
    };
    Effect::new(move |_| read_token());
    // Pasting the link into a tab already on /setup only changes the fragment.
    #[cfg(feature = "hydrate")]
    {
        let listener = window_event_listener(leptos::ev::hashchange, move |_| read_token());
        on_cleanup(move || listener.remove());
    }
    let username = RwSignal::new("admin".to_string());
    let password = RwSignal::new(String::new());
    let repeat = RwSignal::new(String::new());
    let busy = RwSignal::new(false);
    let error = RwSignal::new(None::<String>);
    // Set when the link can no longer work: sign in instead.
    let spent = RwSignal::new(false);
    let first = NodeRef::<Input>::new();
    focus_when_shown(first);
    let edited = Callback::new(move |()| error.set(None));

    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        if busy.get_untracked() {
            return;
        }
        let Some(Some(secret)) = token.get_untracked() else {
            return;
        };
        let name = username.get_untracked().trim().to_string();
        let new = password.get_untracked();
        if name.is_empty() {
            error.set(Some("Choose a user name for the admin.".into()));
            return;
        }
        if let Some(problem) = new_password_problem(&new, &repeat.get_untracked()) {
            error.set(Some(problem));
            return;
        }
        let navigate = navigate.clone();
        error.set(None);
        busy.set(true);
        spawn_local(async move {
            let body = json!({ "token": secret, "username": name, "password": new });
            let result = api::post::<Me>(Some(auth), "/api/auth/setup", Some(&body)).await;
            busy.try_set(false);
            match result {
                Ok(me) => {
                    auth.signed_in(me);
                    navigate(
                        "/",
                        NavigateOptions {
                            replace: true,
                            ..NavigateOptions::default()
                        },
                    );
                }
                Err(failure) => {
                    let code = failure.error.code.as_str();
                    spent.try_set(matches!(code, "bad_setup_token" | "setup_done"));
                    error.try_set(Some(failure.words()));
                }
            }
        });
    };

    view! {
        <Title text="Set up · Marquee" />
        <section class="panel auth-card">
            <h1>"Set up Marquee"</h1>
            {move || match token.get() {
                None => view! { <p class="muted">"Reading the setup link…"</p> }.into_any(),
                Some(None) => {
                    view! {
                        <p class="warning" data-testid="error" data-for="setup">
                            "No admin exists yet. Open the setup link Marquee printed when it "
                            "started (it ends in " <code>"#mqx_…"</code>
                            "); restarting Marquee prints a new one."
                        </p>
                    }
                        .into_any()
                }
                Some(Some(_)) => ().into_any(),
            }}
            <When when=move || matches!(token.get(), Some(Some(_)))>
                <p class="lead">
                    "Make the first admin account. Admins add everyone else on the Users page."
                </p>
                <form class="auth-form" data-testid="setup-form" novalidate=true on:submit=handler(leptos::ev::submit, submit.clone())>
                    <TextField
                        label="User name"
                        value=username
                        name="username"
                        autocomplete="username"
                        node=first
                        hint="1–64 of a–z, 0–9, . _ -"
                        edited
                    />
                    <TextField
                        label="Password"
                        value=password
                        kind="password"
                        name="new-password"
                        autocomplete="new-password"
                        hint=PASSWORD_HINT
                        edited
                    />
                    <TextField
                        label="Password again"
                        value=repeat
                        kind="password"
                        name="repeat-password"
                        autocomplete="new-password"
                        edited
                    />
                    <ErrorNote error place="setup" />
                    <When when=move || spent.get()>
                        <p>
                            <a href="/login" class="button">
                                "Sign in instead"
                            </a>
                        </p>
                    </When>
                    <div class="buttons">
                        <button class="primary" type="submit" disabled=move || busy.get()>
                            {move || String::from(if busy.get() { "Creating…" } else { "Create admin and sign in" })}
                        </button>
                    </div>
                </form>
            </When>
        </section>
    }
    .into_any()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_token_from_the_fragment() {
        assert_eq!(token_of("#mqx_abc"), Some("mqx_abc".to_string()));
        assert_eq!(token_of(""), None);
        assert_eq!(token_of("#"), None);
    }
}
