//! `/login`: sign in with a user name and password, then back to the page the
//! browser was sent here from (`/login?next=/signs/lobby`).

use leptos::html::Input;
use leptos::prelude::*;
use leptos::task::spawn_local;
use leptos_meta::Title;
use leptos_router::NavigateOptions;
use leptos_router::hooks::{use_navigate, use_query_map};
use serde_json::json;

use super::common::ErrorNote;
use super::common::handler;
use super::forms::{TextField, focus_when_shown};
use super::gate::mounted;
use crate::api;
use crate::auth::{Me, Session, safe_return, use_auth};

#[component]
pub fn LoginPage() -> impl IntoView {
    let auth = use_auth();
    let query = use_query_map();
    let navigate = use_navigate();
    let username = RwSignal::new(String::new());
    let password = RwSignal::new(String::new());
    let busy = RwSignal::new(false);
    let error = RwSignal::new(None::<String>);
    let first = NodeRef::<Input>::new();
    focus_when_shown(first);
    let edited = Callback::new(move |()| error.set(None));

    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        if busy.get_untracked() {
            return;
        }
        let name = username.get_untracked().trim().to_string();
        let secret = password.get_untracked();
        if name.is_empty() || secret.is_empty() {
            error.set(Some("Enter your user name and password.".into()));
            return;
        }
        let next = safe_return(query.read_untracked().get("next").as_deref());
        let navigate = navigate.clone();
        error.set(None);
        busy.set(true);
        spawn_local(async move {
            let body = json!({ "username": name, "password": secret });
            let result = api::post::<Me>(Some(auth), "/api/auth/login", Some(&body)).await;
            busy.try_set(false);
            match result {
                Ok(me) => {
                    password.try_set(String::new());
                    auth.signed_in(me);
                    navigate(
                        &next,
                        NavigateOptions {
                            replace: true,
                            ..NavigateOptions::default()
                        },
                    );
                }
                Err(failure) => {
                    error.try_set(Some(failure.words()));
                }
            }
        });
    };
    let mounted = mounted();
    let signed_in_as = move || match auth.session.get() {
        Session::SignedIn(me) if mounted.get() => me.username,
        _ => None,
    };

    view! {
        <Title text="Sign in · Marquee" />
        <section class="panel auth-card">
            <h1>"Sign in"</h1>
            {move || {
                signed_in_as()
                    .map(|name| {
                        view! {
                            <p class="ok">
                                "You are signed in as " <strong>{name}</strong>
                                ". Signing in again switches account."
                            </p>
                        }
                    })
            }}
            <form class="auth-form" data-testid="login-form" novalidate=true on:submit=handler(leptos::ev::submit, submit)>
                <TextField
                    label="User name"
                    value=username
                    name="username"
                    autocomplete="username"
                    node=first
                    edited
                />
                <TextField
                    label="Password"
                    value=password
                    kind="password"
                    name="password"
                    autocomplete="current-password"
                    edited
                />
                <ErrorNote error place="login" />
                <div class="buttons">
                    <button class="primary" type="submit" disabled=move || busy.get()>
                        {move || String::from(if busy.get() { "Signing in…" } else { "Sign in" })}
                    </button>
                </div>
            </form>
            <p class="muted small">
                "No account? An admin of this Marquee makes one for you. "
                "Devices use API tokens and MQTT, not this page."
            </p>
        </section>
    }
    .into_any()
}
