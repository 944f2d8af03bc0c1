//! `/admin` (admins only): the accounts — create one with a role, change its
//! role, disable or enable it, reset its password, delete it — and everyone's
//! API tokens. A password the server generates is shown once, here.

use leptos::prelude::*;
use leptos::task::spawn_local;
use leptos_meta::Title;
use serde::Deserialize;
use serde_json::{Value, json};

use super::common::handler;
use super::common::{DeleteButton, ErrorNote};
use super::forms::{OnceSecret, TextField, act, short_time};
use super::tokens::TokenPanel;
use crate::api;
use crate::auth::{PASSWORD_HINT, Role, use_auth};

/// An account as `/api/accounts` lists it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct AccountInfo {
    pub username: String,
    pub role: Role,
    pub disabled: bool,
    pub created: String,
    pub changed: String,
    /// A generated password: only in the answer that made it.
    #[serde(default)]
    pub password: Option<String>,
}

#[derive(Deserialize)]
struct Items<T> {
    items: Vec<T>,
}

/// The answer to a password reset.
#[derive(Deserialize)]
struct Reset {
    username: String,
    #[serde(default)]
    password: Option<String>,
}

/// A password to show once: whose, and the password.
#[derive(Clone, Debug, PartialEq)]
struct Fresh {
    username: String,
    password: String,
}

#[component]
pub fn AdminPage() -> impl IntoView {
    view! {
        <Title text="Users · Marquee" />
        <div class="toolbar">
            <h1>"Users"</h1>
        </div>
        <UsersPanel />
        <TokenPanel all=true />
    }
    .into_any()
}

#[component]
fn UsersPanel() -> impl IntoView {
    let auth = use_auth();
    let accounts = RwSignal::new(None::<Result<Vec<AccountInfo>, String>>);
    let fresh = RwSignal::new(None::<Fresh>);
    let load = Callback::new(move |()| {
        spawn_local(async move {
            let result = api::get::<Items<AccountInfo>>(Some(auth), "/api/accounts").await;
            accounts.try_set(Some(
                result
                    .map(|list| list.items)
                    .map_err(|failure| failure.words()),
            ));
        });
    });
    Effect::new(move |_| load.run(()));
    let show_password = Callback::new(move |shown: Fresh| fresh.set(Some(shown)));
    let rows = move || match accounts.get() {
        None => view! { <p class="muted">"Loading accounts…"</p> }.into_any(),
        Some(Err(message)) => view! {
            <p class="error" data-testid="error" data-for="accounts">
                {message}
            </p>
        }
        .into_any(),
        Some(Ok(list)) => view! {
            <div class="table-wrap">
                <table class="records-table accounts-table">
                    <thead>
                        <tr>
                            <th>"User name"</th>
                            <th>"Role"</th>
                            <th>"Status"</th>
                            <th>"Created"</th>
                            <th class="col-actions"></th>
                        </tr>
                    </thead>
                    <tbody>
                        <For
                            each=move || list.clone()
                            key=|a| (a.username.clone(), a.role, a.disabled, a.changed.clone())
                            children=move |account| {
                                view! { <AccountRow account reload=load show_password /> }
                            }
                        />
                    </tbody>
                </table>
            </div>
        }
        .into_any(),
    };
    view! {
        <section class="panel users" data-testid="users">
            <div class="panel-head">
                <h2>"Accounts"</h2>
            </div>
            {move || {
                fresh
                    .get()
                    .map(|shown| {
                        view! {
                            <OnceSecret
                                what=format!("The password for {}", shown.username)
                                secret=shown.password
                                testid="generated-password"
                                on_done=Callback::new(move |()| fresh.set(None))
                            />
                        }
                    })
            }}
            {move || rows()}
            <NewAccount made=Callback::new(move |account: AccountInfo| {
                if let Some(password) = account.password {
                    show_password.run(Fresh { username: account.username, password });
                } else {
                    fresh.set(None);
                }
                load.run(());
            }) />
        </section>
    }
    .into_any()
}

#[component]
fn AccountRow(
    account: AccountInfo,
    reload: Callback<()>,
    show_password: Callback<Fresh>,
) -> impl IntoView {
    let auth = use_auth();
    let busy = RwSignal::new(false);
    let error = RwSignal::new(None::<String>);
    let name = account.username.clone();
    let path = format!("/api/accounts/{}", api::segment(&name));
    let is_me = auth
        .me()
        .is_some_and(|me| me.username.as_deref() == Some(name.as_str()));
    // The picker shows the role the server has; a refused change puts it back.
    let role = RwSignal::new(account.role.as_str().to_string());
    let change = {
        let path = path.clone();
        move |body: Value| {
            let path = path.clone();
            act(
                busy,
                error,
                async move { api::patch::<Value>(Some(auth), &path, &body).await },
                move |_| reload.run(()),
            );
        }
    };
    let pick_role = {
        let change = change.clone();
        let was = account.role;
        move |ev: leptos::ev::Event| {
            let wanted = event_target_value(&ev);
            role.set(wanted.clone());
            if Role::parse(&wanted).is_some() && wanted != was.as_str() {
                change(json!({ "role": wanted }));
            }
        }
    };
    let server_role = account.role;
    Effect::new(move |_| {
        // A refusal leaves the server's role in place: show it again.
        if error.get().is_some() {
            role.set(server_role.as_str().to_string());
        }
    });
    let disabled = account.disabled;
    let toggle = {
        let change = change.clone();
        move |_| change(json!({ "disabled": !disabled }))
    };
    let reset = {
        let path = format!("{path}/password");
        Callback::new(move |()| {
            let path = path.clone();
            act(
                busy,
                error,
                async move { api::post::<Value>(Some(auth), &path, Some(&json!({}))).await },
                move |answer| {
                    if let Ok(Reset {
                        username,
                        password: Some(password),
                    }) = serde_json::from_value::<Reset>(answer)
                    {
                        show_password.run(Fresh { username, password });
                    }
                    reload.run(());
                },
            );
        })
    };
    let delete = {
        let path = path.clone();
        Callback::new(move |()| {
            let path = path.clone();
            act(
                busy,
                error,
                async move { api::delete(Some(auth), &path).await.map(|()| Value::Null) },
                move |_| reload.run(()),
            );
        })
    };
    let options = Role::ALL
        .into_iter()
        .map(|r| {
            view! {
                <option value=r.as_str() selected=r == account.role title=r.explain()>
                    {r.as_str()}
                </option>
            }
        })
        .collect_view();
    view! {
        <tr data-testid="account-row" data-username=name.clone() class:disabled=disabled>
            <td>
                <strong>{name.clone()}</strong>
                {is_me.then(|| view! { <span class="muted">" (you)"</span> })}
            </td>
            <td>
                <select
                    data-testid="account-role"
                    aria-label=format!("Role of {name}")
                    disabled=move || busy.get()
                    prop:value=move || role.get()
                    on:change=handler(leptos::ev::change, pick_role)
                >
                    {options}
                </select>
            </td>
            <td data-testid="account-status">{if disabled { "disabled" } else { "active" }}</td>
            <td title=account.changed.clone()>{short_time(&account.created)}</td>
            <td class="col-actions">
                <button
                    type="button"
                    data-testid="account-toggle"
                    disabled=move || busy.get()
                    on:click=handler(leptos::ev::click, toggle)
                >
                    {if disabled { "Enable" } else { "Disable" }}
                </button>
                <DeleteButton
                    busy
                    testid="account-reset"
                    on_confirm=reset
                    label="Reset password"
                    confirm="Confirm reset"
                />
                <DeleteButton busy testid="account-delete" on_confirm=delete />
                <ErrorNote error place="account" />
            </td>
        </tr>
    }
    .into_any()
}

/// Makes an account; an empty password asks the server to generate one.
#[component]
fn NewAccount(made: Callback<AccountInfo>) -> impl IntoView {
    let auth = use_auth();
    let username = RwSignal::new(String::new());
    let role = RwSignal::new(Role::Editor.as_str().to_string());
    let password = RwSignal::new(String::new());
    let busy = RwSignal::new(false);
    let error = RwSignal::new(None::<String>);
    let edited = Callback::new(move |()| error.set(None));
    let create = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        if busy.get_untracked() {
            return;
        }
        let name = crate::api::lower(username.get_untracked().trim());
        if name.is_empty() {
            error.set(Some("Enter a user name.".into()));
            return;
        }
        let mut body = json!({ "username": name, "role": role.get_untracked() });
        let chosen = password.get_untracked();
        if !chosen.is_empty() {
            body["password"] = Value::from(chosen);
        }
        act(
            busy,
            error,
            async move { api::post::<Value>(Some(auth), "/api/accounts", Some(&body)).await },
            move |answer| {
                username.try_set(String::new());
                password.try_set(String::new());
                if let Ok(account) = serde_json::from_value::<AccountInfo>(answer) {
                    made.run(account);
                }
            },
        );
    };
    let options = Role::ALL
        .into_iter()
        .map(|r| view! { <option value=r.as_str()>{r.explain()}</option> })
        .collect_view();
    view! {
        <form class="new-account" data-testid="new-account" novalidate=true on:submit=handler(leptos::ev::submit, create)>
            <h3>"New account"</h3>
            <div class="field-row">
                <TextField
                    label="User name"
                    value=username
                    name="new-username"
                    autocomplete="off"
                    testid="new-username"
                    hint="1–64 of a–z, 0–9, . _ -"
                    edited
                />
                <label class="field">
                    <span>"Role"</span>
                    <select
                        data-testid="new-role"
                        prop:value=move || role.get()
                        on:change=handler(leptos::ev::change, move |ev| role.set(event_target_value(&ev)))
                    >
                        {options}
                    </select>
                </label>
                <TextField
                    label="Password"
                    value=password
                    kind="password"
                    name="new-password"
                    autocomplete="new-password"
                    testid="new-password"
                    placeholder="empty: generate one"
                    hint=PASSWORD_HINT
                    edited
                />
            </div>
            <ErrorNote error place="new-account" />
            <div class="buttons">
                <button
                    class="primary"
                    type="submit"
                    data-testid="account-create"
                    disabled=move || busy.get()
                >
                    "Create account"
                </button>
            </div>
        </form>
    }
    .into_any()
}
