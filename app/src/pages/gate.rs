//! Pages for the signed in only: the gate that shows a page once the browser
//! is known to be signed in, the admin-only gate, and the redirect that sends
//! a signed-out browser to sign-in (remembering where it was) or a server
//! without an admin to first-run setup.

use leptos::prelude::*;
use leptos_router::NavigateOptions;
use leptos_router::hooks::{use_location, use_navigate};

use super::common::When;
use crate::auth::{Session, encode_query, use_auth};

/// `false` while the view is being hydrated, `true` once it is live.
///
/// The server renders every page signed out (`Checking`), so a view that
/// depends on who is signed in must hydrate as that too. A page's code is
/// fetched after the app starts (`--split`), by which time `/api/auth/me`
/// may have answered: such a view waits for this before it shows the answer.
pub fn mounted() -> ReadSignal<bool> {
    let (mounted, set_mounted) = signal(false);
    // Effects run only in the browser, after the view is hydrated or built.
    Effect::new(move |_| set_mounted.set(true));
    mounted
}

/// Shows `children` while signed in. Until the browser knows (and always on
/// the server, which cannot tell), a quiet placeholder; signed out, the
/// redirect below has already moved on.
#[component]
pub fn SignedInOnly(children: ChildrenFn) -> impl IntoView {
    let auth = use_auth();
    let mounted = mounted();
    // Only a change of signed in / out rebuilds the page, not a fresh `me`.
    let signed_in = Memo::new(move |_| {
        mounted.get() && auth.session.with(|s| matches!(s, Session::SignedIn(_)))
    });
    view! {
        <When
            when=move || signed_in.get()
            fallback=move || {
                view! {
                    <div class="checking" data-testid="checking">
                        {move || {
                            auth.problem
                                .get()
                                .filter(|_| mounted.get())
                                .unwrap_or_else(|| "Checking who is signed in…".to_string())
                        }}
                    </div>
                }
            }
        >
            {children()}
        </When>
    }
    .into_any()
}

/// Shows `children` to admins only; others learn why there is nothing here.
#[component]
pub fn AdminOnly(children: ChildrenFn) -> impl IntoView {
    let auth = use_auth();
    let admin = auth.is_admin();
    view! {
        <When
            when=move || admin.get()
            fallback=|| {
                view! {
                    <section class="hero">
                        <h1>"Admins only"</h1>
                        <p class="lead">"Only an admin manages accounts."</p>
                        <a href="/account" class="button">
                            "Your account"
                        </a>
                    </section>
                }
            }
        >
            {children()}
        </When>
    }
    .into_any()
}

/// Sends a signed-out browser to `/login?next=<where it was>`, and a server
/// without an admin to `/setup`. Renders nothing.
#[component]
pub fn AuthRedirect() -> impl IntoView {
    let auth = use_auth();
    let location = use_location();
    let navigate = use_navigate();
    Effect::new(move |_| {
        let session = auth.session.get();
        let path = location.pathname.get();
        let replace = NavigateOptions {
            replace: true,
            ..NavigateOptions::default()
        };
        match session {
            Session::SignedOut if path != "/login" && path != "/setup" => {
                let here = format!("{path}{}", location.search.get_untracked());
                let target = if here == "/" {
                    "/login".to_string()
                } else {
                    format!("/login?next={}", encode_query(&here))
                };
                navigate(&target, replace);
            }
            Session::SetupRequired if path != "/setup" => navigate("/setup", replace),
            _ => {}
        }
    });
}
