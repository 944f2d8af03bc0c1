//! `/account`: who you are signed in as, changing your password, and your own
//! API tokens.

use leptos::html::Input;
use leptos::prelude::*;
use leptos::task::spawn_local;
use leptos_meta::Title;
use serde_json::json;

use super::common::ErrorNote;
use super::common::handler;
use super::forms::{TextField, focus_when_shown};
use super::tokens::TokenPanel;
use crate::api;
use crate::auth::{Me, PASSWORD_HINT, new_password_problem, use_auth};

#[component]
pub fn AccountPage() -> impl IntoView {
    let auth = use_auth();
    // A password change ends every token of the account: the list reloads.
    let refresh = RwSignal::new(0u32);
    view! {
        <Title text="Your account · Marquee" />
        <div class="toolbar">
            <h1>"Your account"</h1>
        </div>
        <p class="lead" data-testid="account-who">
            "Signed in as " <strong>{move || auth.me().map(|m| m.name())}</strong> ", "
            {move || auth.role().map_or("with no account", |r| r.explain())} "."
        </p>
        <div class="account-grid">
            <PasswordPanel changed=Callback::new(move |()| refresh.update(|n| *n += 1)) />
            <TokenPanel all=false refresh />
        </div>
    }
    .into_any()
}

/// Change your password: the current one, then the new one twice.
#[component]
fn PasswordPanel(changed: Callback<()>) -> impl IntoView {
    let auth = use_auth();
    let current = RwSignal::new(String::new());
    let new = RwSignal::new(String::new());
    let repeat = RwSignal::new(String::new());
    let busy = RwSignal::new(false);
    let error = RwSignal::new(None::<String>);
    let note = RwSignal::new(None::<String>);
    let first = NodeRef::<Input>::new();
    focus_when_shown(first);
    let edited = Callback::new(move |()| {
        error.set(None);
        note.set(None);
    });
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        if busy.get_untracked() {
            return;
        }
        let (old, wanted) = (current.get_untracked(), new.get_untracked());
        if old.is_empty() {
            error.set(Some("Enter your current password.".into()));
            return;
        }
        if let Some(problem) = new_password_problem(&wanted, &repeat.get_untracked()) {
            error.set(Some(problem));
            return;
        }
        busy.set(true);
        edited.run(());
        spawn_local(async move {
            let body = json!({ "current": old, "new": wanted });
            let result = api::post::<Me>(Some(auth), "/api/auth/password", Some(&body)).await;
            busy.try_set(false);
            match result {
                Ok(me) => {
                    for field in [current, new, repeat] {
                        field.try_set(String::new());
                    }
                    note.try_set(Some(
                        "Password changed. Your other browsers are signed out, and your \
                         API tokens no longer work."
                            .into(),
                    ));
                    auth.signed_in(me);
                    changed.run(());
                }
                Err(failure) => {
                    error.try_set(Some(failure.words()));
                }
            }
        });
    };
    view! {
        <section class="panel">
            <div class="panel-head">
                <h2>"Change your password"</h2>
            </div>
            <form class="auth-form" data-testid="password-form" novalidate=true on:submit=handler(leptos::ev::submit, submit)>
                // A hidden user name tells password managers whose password this is.
                <input
                    type="text"
                    class="visually-hidden"
                    name="username"
                    autocomplete="username"
                    tabindex="-1"
                    aria-hidden="true"
                    readonly=true
                    prop:value=move || auth.me().and_then(|m| m.username).unwrap_or_default()
                />
                <TextField
                    label="Current password"
                    value=current
                    kind="password"
                    name="current-password"
                    autocomplete="current-password"
                    node=first
                    edited
                />
                <TextField
                    label="New password"
                    value=new
                    kind="password"
                    name="new-password"
                    autocomplete="new-password"
                    hint=PASSWORD_HINT
                    edited
                />
                <TextField
                    label="New password again"
                    value=repeat
                    kind="password"
                    name="repeat-password"
                    autocomplete="new-password"
                    edited
                />
                <ErrorNote error place="password" />
                {move || note.get().map(|message| view! { <p class="ok">{message}</p> })}
                <div class="buttons">
                    <button class="primary" type="submit" disabled=move || busy.get()>
                        {move || String::from(if busy.get() { "Changing…" } else { "Change password" })}
                    </button>
                </div>
            </form>
        </section>
    }
    .into_any()
}
