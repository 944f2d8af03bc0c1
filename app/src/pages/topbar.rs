//! The header: the brand, the pages the signed-in account may use, and the
//! user menu (who is signed in and as what, their account, sign out).

use leptos::prelude::*;
use leptos_router::components::A;

use super::common::{When, handler};
use crate::auth::use_auth;

#[component]
pub fn TopBar() -> impl IntoView {
    let auth = use_auth();
    let signed_in = Memo::new(move |_| auth.me().is_some());
    let admin = auth.is_admin();
    view! {
        <header class="topbar">
            <a class="brand" href="/">
                <span class="brand-mark" aria-hidden="true"></span>
                "Marquee"
            </a>
            <When when=move || signed_in.get()>
                <nav class="nav">
                    <A href="/" exact=true>
                        "Signs"
                    </A>
                    <A href="/messages">"Messages"</A>
                    <A href="/devices">"Devices"</A>
                    <A href="/data">"Data"</A>
                    // Offered only to those who may use it; the server refuses the rest anyway.
                    <When when=move || admin.get()>
                        <A href="/admin">"Users"</A>
                    </When>
                </nav>
                <span class="spacer"></span>
                <UserMenu />
            </When>
        </header>
    }
    .into_any()
}

/// "ann · editor", opening onto the account page and sign out.
#[component]
fn UserMenu() -> impl IntoView {
    let auth = use_auth();
    let open = RwSignal::new(false);
    let username = move || auth.me().map(|me| me.name()).unwrap_or_default();
    let role = move || auth.role().map_or("open", |r| r.as_str());
    let has_account = move || auth.me().is_some_and(|me| me.has_account());
    let signing_out = RwSignal::new(false);
    // A sign-out that failed says why (`problem`) and may be tried again.
    Effect::new(move |_| {
        if auth.problem.get().is_some() {
            signing_out.set(false);
        }
    });
    let sign_out = move |_| {
        signing_out.set(true);
        open.set(false);
        auth.sign_out();
    };
    view! {
        <div
            class="user-menu"
            data-testid="user-menu"
            on:keydown=handler(leptos::ev::keydown, move |ev| {
                if ev.key() == "Escape" {
                    open.set(false);
                }
            })
        >
            <button
                type="button"
                class="user-button"
                data-testid="whoami"
                aria-haspopup="true"
                aria-expanded=move || open.get().to_string()
                on:click=handler(leptos::ev::click, move |_| open.update(|o| *o = !*o))
            >
                <span class="user-name" data-testid="username">
                    {move || username()}
                </span>
                <span class="role-badge" data-testid="role">
                    {move || role()}
                </span>
            </button>
            <When when=move || open.get()>
                <div class="menu" role="menu">
                    {move || {
                        auth.problem
                            .get()
                            .map(|problem| {
                                view! {
                                    <p class="error" data-testid="error" data-for="user-menu">
                                        {problem}
                                    </p>
                                }
                            })
                    }}
                    // On an open server with nobody signed in: only the way to sign in.
                    <When
                        when=has_account
                        fallback=|| {
                            view! {
                                <a href="/login" role="menuitem">
                                    "Sign in"
                                </a>
                            }
                        }
                    >
                        <a href="/account" role="menuitem" on:click=handler(leptos::ev::click, move |_| open.set(false))>
                            "Your account and password"
                        </a>
                        <button
                            type="button"
                            role="menuitem"
                            data-testid="sign-out"
                            disabled=move || signing_out.get()
                            on:click=handler(leptos::ev::click, sign_out)
                        >
                            "Sign out"
                        </button>
                    </When>
                </div>
            </When>
        </div>
    }
    .into_any()
}
