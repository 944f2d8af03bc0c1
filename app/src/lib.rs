//! Everything the server and the browser share: the wire types, the live
//! connection, and the web app's pages.

pub mod event;
pub mod live;
mod pages;
pub mod render;
pub mod sign;

use leptos::prelude::*;
use leptos_meta::{MetaTags, Stylesheet, provide_meta_context};
use leptos_router::components::{A, Route, Router, Routes};
use leptos_router::{Lazy, LazyRoute, lazy_route, path};

use crate::pages::{DataPage, HomePage, MessagesPage, NotFound, SignPage};

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

    // Each page sets its own <Title>: a <Title> here, beside the router, made
    // hydration expect a marker node that the server never rendered.
    view! {
        <Stylesheet id="leptos" href="/pkg/marquee.css" />
        <Router>
            <header class="topbar">
                <a class="brand" href="/">
                    <span class="brand-mark" aria-hidden="true"></span>
                    "Marquee"
                </a>
                <nav class="nav">
                    <A href="/" exact=true>
                        "Signs"
                    </A>
                    <A href="/messages">"Messages"</A>
                    <A href="/data">"Data"</A>
                </nav>
            </header>
            <main class="main">
                <Routes fallback=NotFound>
                    <Route path=path!("/") view={Lazy::<HomeRoute>::new()} />
                    <Route path=path!("/signs/:id") view={Lazy::<SignRoute>::new()} />
                    <Route path=path!("/messages") view={Lazy::<MessagesRoute>::new()} />
                    <Route path=path!("/data") view={Lazy::<DataRoute>::new()} />
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
        view! { <HomePage /> }.into_any()
    }
}

struct SignRoute;

#[lazy_route]
impl LazyRoute for SignRoute {
    fn data() -> Self {
        SignRoute
    }

    fn view(_this: Self) -> AnyView {
        view! { <SignPage /> }.into_any()
    }
}

struct MessagesRoute;

#[lazy_route]
impl LazyRoute for MessagesRoute {
    fn data() -> Self {
        MessagesRoute
    }

    fn view(_this: Self) -> AnyView {
        view! { <MessagesPage /> }.into_any()
    }
}

struct DataRoute;

#[lazy_route]
impl LazyRoute for DataRoute {
    fn data() -> Self {
        DataRoute
    }

    fn view(_this: Self) -> AnyView {
        view! { <DataPage /> }.into_any()
    }
}
