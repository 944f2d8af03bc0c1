//! Everything the server and the browser share: the wire types, the live
//! connection, the sign-in state, and the web app's pages.

pub mod api;
pub mod auth;
pub mod device;
pub mod event;
pub mod live;
pub mod names;
mod pages;
pub mod render;
pub mod sign;

use leptos::prelude::*;
use leptos_meta::{MetaTags, Stylesheet, provide_meta_context};
use leptos_router::components::{Route, Router, Routes};
use leptos_router::{Lazy, LazyRoute, lazy_route, path};

use crate::auth::Auth;
use crate::pages::{
    AccountPage, AdminOnly, AdminPage, AuthRedirect, DataPage, DevicesPage, HomePage, LoginPage,
    MessagesPage, NotFound, SetupPage, SignPage, SignedInOnly, TopBar,
};

/// The HTML document the server renders every page into.
pub fn shell(options: LeptosOptions) -> impl IntoView {
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8" />
                <meta name="viewport" content="width=device-width, initial-scale=1" />
                <meta name="color-scheme" content="light" />
                <link rel="icon" type="image/svg+xml" href="/favicon.svg" />
                <AutoReload options=options.clone() />
                <HydrationScripts options />
                <MetaTags />
            </head>
            <body>
                <App />
            </body>
        </html>
    }
}

/// The web app: header, navigation and the routes.
#[component]
pub fn App() -> impl IntoView {
    provide_meta_context();
    // Who is signed in, for every page, the header and the live connections.
    Auth::provide();

    // Each page sets its own <Title>: a <Title> here, beside the router, made
    // hydration expect a marker node that the server never rendered.
    view! {
        <Stylesheet id="leptos" href="/pkg/marquee.css" />
        <Router>
            <AuthRedirect />
            <TopBar />
            <main class="main">
                <Routes fallback=NotFound>
                    <Route path=path!("/") view={Lazy::<HomeRoute>::new()} />
                    <Route path=path!("/signs/:id") view={Lazy::<SignRoute>::new()} />
                    <Route path=path!("/messages") view={Lazy::<MessagesRoute>::new()} />
                    <Route path=path!("/data") view={Lazy::<DataRoute>::new()} />
                    <Route path=path!("/devices") view={Lazy::<DevicesRoute>::new()} />
                    <Route path=path!("/login") view={Lazy::<LoginRoute>::new()} />
                    <Route path=path!("/setup") view={Lazy::<SetupRoute>::new()} />
                    <Route path=path!("/account") view={Lazy::<AccountRoute>::new()} />
                    <Route path=path!("/admin") view={Lazy::<AdminRoute>::new()} />
                </Routes>
            </main>
        </Router>
    }
}

// Every page's code is split out of the main bundle (by `cargo leptos build
// --split`): the browser fetches a page's code, and the code it shares with
// other pages, when the page is first shown, so no page waits for all of them.

struct HomeRoute;

#[lazy_route]
impl LazyRoute for HomeRoute {
    fn data() -> Self {
        HomeRoute
    }

    fn view(_this: Self) -> AnyView {
        view! {
            <SignedInOnly>
                <HomePage />
            </SignedInOnly>
        }
        .into_any()
    }
}

struct SignRoute;

#[lazy_route]
impl LazyRoute for SignRoute {
    fn data() -> Self {
        SignRoute
    }

    fn view(_this: Self) -> AnyView {
        view! {
            <SignedInOnly>
                <SignPage />
            </SignedInOnly>
        }
        .into_any()
    }
}

struct MessagesRoute;

#[lazy_route]
impl LazyRoute for MessagesRoute {
    fn data() -> Self {
        MessagesRoute
    }

    fn view(_this: Self) -> AnyView {
        view! {
            <SignedInOnly>
                <MessagesPage />
            </SignedInOnly>
        }
        .into_any()
    }
}

struct DataRoute;

#[lazy_route]
impl LazyRoute for DataRoute {
    fn data() -> Self {
        DataRoute
    }

    fn view(_this: Self) -> AnyView {
        view! {
            <SignedInOnly>
                <DataPage />
            </SignedInOnly>
        }
        .into_any()
    }
}

struct DevicesRoute;

#[lazy_route]
impl LazyRoute for DevicesRoute {
    fn data() -> Self {
        DevicesRoute
    }

    fn view(_this: Self) -> AnyView {
        view! {
            <SignedInOnly>
                <DevicesPage />
            </SignedInOnly>
        }
        .into_any()
    }
}

// Sign-in and setup are for the signed out; the account pages gate themselves.
//
// These four pages share one split module (`account_pages`): whichever of them
// is shown first brings the other three along. Split one by one, the code they
// share with each other and with the live pages above was cut into dozens of
// small files; together, the live pages load fewer and larger files, which
// gzip better (the heaviest page ~10 KB lighter), for ~100 KB more on these
// four, which stay well under the budget.

/// Which of the account pages a route shows.
#[derive(Clone, Copy)]
enum Which {
    Login,
    Setup,
    Account,
    Admin,
}

#[cfg_attr(
    feature = "hydrate",
    leptos::wasm_split::wasm_split(
        account_pages,
        wasm_split_path = ::leptos::wasm_split,
        preload(#[doc(hidden)] preload_account_pages)
    )
)]
fn account_page_view(page: Which) -> AnyView {
    match page {
        Which::Login => view! { <LoginPage /> }.into_any(),
        Which::Setup => view! { <SetupPage /> }.into_any(),
        Which::Account => view! {
            <SignedInOnly>
                <AccountPage />
            </SignedInOnly>
        }
        .into_any(),
        Which::Admin => view! {
            <SignedInOnly>
                <AdminOnly>
                    <AdminPage />
                </AdminOnly>
            </SignedInOnly>
        }
        .into_any(),
    }
}

/// The view of an account page, from the shared split module.
async fn account_page(page: Which) -> AnyView {
    #[cfg(feature = "hydrate")]
    {
        account_page_view(page).await
    }
    #[cfg(not(feature = "hydrate"))]
    {
        // As `#[lazy]` does: the server tells the page to preload the module.
        leptos::prefetch_lazy_fn_on_server("account_pages");
        account_page_view(page)
    }
}

/// Routes to the account pages, one type each (as `Lazy` wants).
macro_rules! account_route {
    ($route:ident, $page:ident) => {
        struct $route;

        impl LazyRoute for $route {
            fn data() -> Self {
                $route
            }

            async fn view(_this: Self) -> AnyView {
                account_page(Which::$page).await
            }

            async fn preload() {
                #[cfg(all(feature = "hydrate", target_arch = "wasm32"))]
                preload_account_pages().await;
            }
        }
    };
}

account_route!(LoginRoute, Login);
account_route!(SetupRoute, Setup);
account_route!(AccountRoute, Account);
account_route!(AdminRoute, Admin);
