//! API tokens: for scripts and devices, sent as `Authorization: Bearer`. On
//! the account page, your own (create, revoke); on the admin page, everyone's
//! (revoke any). A token's secret is shown once, when it is made.

use leptos::prelude::*;
use leptos::task::spawn_local;
use serde::Deserialize;
use serde_json::json;

use super::common::handler;
use super::common::{DeleteButton, ErrorNote};
use super::forms::{OnceSecret, TextField, short_time};
use crate::api;
use crate::auth::use_auth;

/// A token as `/api/tokens` lists it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct TokenInfo {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    pub username: String,
    pub created: String,
    /// `None` until first used; then moved on at most once a minute.
    #[serde(default)]
    pub last_used: Option<String>,
    /// The secret: only in the answer that made it.
    #[serde(default)]
    pub token: Option<String>,
}

#[derive(Deserialize)]
struct Items<T> {
    items: Vec<T>,
}

/// The list of tokens; `all`: everyone's (admins), else your own with a form
/// to make one. Bumping `refresh` loads the list again.
#[component]
pub fn TokenPanel(all: bool, #[prop(optional)] refresh: Option<RwSignal<u32>>) -> impl IntoView {
    let auth = use_auth();
    let tokens = RwSignal::new(None::<Result<Vec<TokenInfo>, String>>);
    let path = if all {
        "/api/tokens?all=true"
    } else {
        "/api/tokens"
    };
    let load = move || {
        spawn_local(async move {
            let result = api::get::<Items<TokenInfo>>(Some(auth), path).await;
            tokens.try_set(Some(
                result
                    .map(|list| list.items)
                    .map_err(|failure| failure.words()),
            ));
        });
    };
    Effect::new(move |_| {
        if let Some(refresh) = refresh {
            refresh.track();
        }
        load();
    });
    let fresh = RwSignal::new(None::<TokenInfo>);
    let rows = move || {
        match tokens.get() {
        None => view! { <p class="muted">"Loading tokens…"</p> }.into_any(),
        Some(Err(message)) => view! {
            <p class="error" data-testid="error" data-for="tokens">
                {message}
            </p>
        }
        .into_any(),
        Some(Ok(list)) if list.is_empty() => {
            view! { <p class="muted empty">"No API tokens."</p> }.into_any()
        }
        Some(Ok(list)) => view! {
            <div class="table-wrap">
                <table class="records-table tokens-table">
                    <thead>
                        <tr>
                            <th>"Name"</th>
                            {all.then(|| view! { <th>"Account"</th> })}
                            <th>"Created"</th>
                            <th>"Last used"</th>
                            <th class="col-actions"></th>
                        </tr>
                    </thead>
                    <tbody>
                        {list
                            .into_iter()
                            .map(|token| view! { <TokenRow token all reload=Callback::new(move |()| load()) /> })
                            .collect_view()}
                    </tbody>
                </table>
            </div>
        }
        .into_any(),
    }
    };
    view! {
        <section class="panel tokens" data-testid="tokens">
            <div class="panel-head">
                <h2>{if all { "Everyone's API tokens" } else { "Your API tokens" }}</h2>
            </div>
            <p class="muted small">
                "A script or device sends a token as "
                <code>"Authorization: Bearer mqt_…"</code>
                " and acts as the account that made it. Revoke one you no longer use."
            </p>
            {move || {
                fresh
                    .get()
                    .and_then(|token| {
                        let name = token.name.clone().unwrap_or_default();
                        token
                            .token
                            .map(|secret| {
                                view! {
                                    <OnceSecret
                                        what=format!("The token “{name}”")
                                        secret
                                        testid="token-secret"
                                        on_done=Callback::new(move |()| fresh.set(None))
                                    />
                                }
                            })
                    })
            }}
            {move || rows()}
            {(!all)
                .then(|| {
                    view! {
                        <NewToken
                            made=Callback::new(move |token: TokenInfo| {
                                fresh.set(Some(token));
                                load();
                            })
                        />
                    }
                })}
        </section>
    }
    .into_any()
}

#[component]
fn TokenRow(token: TokenInfo, all: bool, reload: Callback<()>) -> impl IntoView {
    let auth = use_auth();
    let busy = RwSignal::new(false);
    let error = RwSignal::new(None::<String>);
    let revoke = {
        let path = format!("/api/tokens/{}", api::segment(&token.id));
        Callback::new(move |()| {
            let path = path.clone();
            busy.set(true);
            error.set(None);
            spawn_local(async move {
                let result = api::delete(Some(auth), &path).await;
                busy.try_set(false);
                match result {
                    Ok(()) => reload.run(()),
                    Err(failure) => {
                        error.try_set(Some(failure.words()));
                    }
                }
            });
        })
    };
    let name = token.name.clone().unwrap_or_else(|| "(no name)".into());
    view! {
        <tr data-testid="token-row" data-name=name.clone()>
            <td>{name.clone()}</td>
            {all.then(|| view! { <td>{token.username.clone()}</td> })}
            <td title=token.created.clone()>{short_time(&token.created)}</td>
            <td title=token.last_used.clone().unwrap_or_default() data-testid="token-last-used">
                {token.last_used.as_deref().map_or_else(|| "never".to_owned(), short_time)}
            </td>
            <td class="col-actions">
                <DeleteButton
                    busy
                    testid="token-revoke"
                    on_confirm=revoke
                    label="Revoke"
                    confirm="Confirm revoke"
                />
                <ErrorNote error place="token" />
            </td>
        </tr>
    }
    .into_any()
}

/// Makes a token of your own; `made` gets it, secret included.
#[component]
fn NewToken(made: Callback<TokenInfo>) -> impl IntoView {
    let auth = use_auth();
    let name = RwSignal::new(String::new());
    let busy = RwSignal::new(false);
    let error = RwSignal::new(None::<String>);
    let create = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        if busy.get_untracked() {
            return;
        }
        let wanted = name.get_untracked().trim().to_string();
        if wanted.is_empty() {
            error.set(Some(
                "Name the token after what will use it, such as “lobby sign”.".into(),
            ));
            return;
        }
        busy.set(true);
        error.set(None);
        spawn_local(async move {
            let body = json!({ "name": wanted });
            let result = api::post::<TokenInfo>(Some(auth), "/api/tokens", Some(&body)).await;
            busy.try_set(false);
            match result {
                Ok(token) => {
                    name.try_set(String::new());
                    made.run(token);
                }
                Err(failure) => {
                    error.try_set(Some(failure.words()));
                }
            }
        });
    };
    view! {
        <form class="inline-form" data-testid="new-token" novalidate=true on:submit=handler(leptos::ev::submit, create)>
            <TextField
                label="New token's name"
                value=name
                name="token-name"
                testid="token-name"
                placeholder="what will use it"
                edited=Callback::new(move |()| error.set(None))
            />
            <button class="primary" type="submit" disabled=move || busy.get()>
                "Create token"
            </button>
            <ErrorNote error place="new-token" />
        </form>
    }
    .into_any()
}
