use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::components::A;

/// `/`: what Marquee is, and the way in.
#[component]
pub fn HomePage() -> impl IntoView {
    view! {
        <Title text="Marquee" />
        <section class="hero">
            <h1>"Marquee"</h1>
            <p class="lead">
                "One process that keeps your sign data on disk and serves every change live, "
                "over REST, Server-Sent Events, WebSockets and MQTT alike."
            </p>
            <A href="/data" attr:class="button primary">
                "Open the data explorer"
            </A>
        </section>
    }
}

/// Any path without a page.
#[component]
pub fn NotFound() -> impl IntoView {
    view! {
        <Title text="Not found · Marquee" />
        <section class="hero">
            <h1>"Not found"</h1>
            <p class="lead">"There is no page here."</p>
            <A href="/" attr:class="button">
                "Back home"
            </A>
        </section>
    }
}
