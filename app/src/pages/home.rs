//! `/`: every sign as a live thumbnail, and creating, renaming, resizing and
//! deleting signs. Also the page for paths that have none.

use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::components::A;
use serde_json::{Value, json};

use super::common::{
    DeleteButton, ErrorNote, LiveStatus, NumberField, number_field, read_sign, send, showing,
    sign_title,
};
use super::led::LedSign;
use crate::auth::use_auth;
use crate::live::{Live, Write};
use crate::sign::{
    DEFAULT_HEIGHT, DEFAULT_WIDTH, MAX_HEIGHT, MAX_WIDTH, MIN_HEIGHT, MIN_WIDTH, Sign,
};

/// Checks a sign's name and size as typed; the fields as JSON, or the problem in words.
fn sign_fields(name: &str, width: &str, height: &str) -> Result<Value, String> {
    let value = json!({
        "name": name.trim(),
        "width": number_field(width),
        "height": number_field(height),
    });
    // The server checks too; checking here names the field before anything is sent.
    Sign::from_json(&value).map_err(|e| e.to_string())?;
    Ok(value)
}

#[component]
pub fn HomePage() -> impl IntoView {
    let signs = Live::new();
    signs.connect();
    signs.watch(Some("signs".into()));
    let messages = Live::new();
    messages.connect();
    messages.watch(Some("messages".into()));
    let can_edit = use_auth().can_edit();

    let ids = move || {
        signs
            .records
            .with(|r| r.keys().cloned().collect::<Vec<_>>())
    };
    view! {
        <Title text="Signs · Marquee" />
        <section class="intro">
            <div>
                <h1>"Marquee"</h1>
                <p class="lead">
                    "Your LED signs, live: what each one shows now, kept on disk and sent to "
                    "every browser and device over WebSockets and MQTT."
                </p>
            </div>
            <div class="intro-links">
                <A href="/messages" attr:class="button primary">
                    "Message library"
                </A>
                <A href="/data" attr:class="button">
                    "Open the data explorer"
                </A>
            </div>
        </section>
        <div class="toolbar">
            <h2>"Signs"</h2>
            <span class="spacer"></span>
            <LiveStatus live=signs also=messages />
        </div>
        <div class="sign-cards" data-testid="sign-cards">
            <For
                each=ids
                key=|id| id.clone()
                children=move |id| view! { <SignCard id signs messages can_edit /> }
            />
            // Viewers are offered no writes: the server would refuse them (403).
            <Show when=move || can_edit.get()>
                <NewSign signs />
            </Show>
        </div>
        <Show when=move || signs.synced.get() && signs.records.with(|r| r.is_empty())>
            <p class="muted">
                {move || {
                    if can_edit.get() { "No signs yet: create the first one." } else { "No signs yet." }
                }}
            </p>
        </Show>
    }
    .into_any()
}

#[component]
fn SignCard(id: String, signs: Live, messages: Live, can_edit: Memo<bool>) -> impl IntoView {
    let sign = {
        let id = id.clone();
        Memo::new(move |_| signs.records.with(|r| read_sign(r, &id)))
    };
    let valid = Memo::new(move |_| sign.get().and_then(Result::ok));
    let shown = Signal::derive(move || {
        let sign = valid.get()?;
        messages.records.with(|r| showing(&sign, r))
    });
    let editing = RwSignal::new(false);
    let busy = RwSignal::new(false);
    let error = RwSignal::new(None::<String>);
    let name = RwSignal::new(String::new());
    let width = RwSignal::new(String::new());
    let height = RwSignal::new(String::new());
    let open = move |_| {
        if let Some(s) = valid.get_untracked() {
            name.set(s.name);
            width.set(s.width.to_string());
            height.set(s.height.to_string());
        }
        error.set(None);
        editing.set(true);
    };
    let save = {
        let id = id.clone();
        move |ev: leptos::ev::SubmitEvent| {
            ev.prevent_default();
            let value = match sign_fields(&name.get(), &width.get(), &height.get()) {
                Ok(value) => value,
                Err(problem) => {
                    error.set(Some(problem));
                    return;
                }
            };
            let write = Write::Patch {
                id: id.clone(),
                value,
                if_match: None,
            };
            send(signs, write, busy, error, move |_| {
                editing.try_set(false);
            });
        }
    };
    let delete = {
        let id = id.clone();
        Callback::new(move |()| {
            let write = Write::Delete {
                id: id.clone(),
                if_match: None,
            };
            send(signs, write, busy, error, |_| {});
        })
    };
    let href = format!("/signs/{id}");
    let title = {
        let id = id.clone();
        move || valid.with(|s| sign_title(s.as_ref(), &id))
    };
    view! {
        <article class="panel sign-card" data-testid="sign-card" data-id=id.clone()>
            <a class="thumb" href=href.clone() aria-label=title.clone()>
                <LedSign sign=valid showing=shown pitch=4.0 testid="thumb" />
            </a>
            <div class="sign-card-head">
                <a class="sign-title" href=href data-testid="sign-title">
                    {title}
                </a>
                <span class="muted" data-testid="sign-size">
                    {move || valid.get().map(|s| format!("{}×{}", s.width, s.height))}
                </span>
            </div>
            {move || {
                sign.get()
                    .and_then(Result::err)
                    .map(|problem| {
                        view! { <p class="warning">{format!("Not a valid sign: {problem}")}</p> }
                    })
            }}
            <Show
                when=move || editing.get()
                fallback=move || {
                    view! {
                        <Show when=move || can_edit.get()>
                            <div class="buttons">
                                <button data-testid="sign-edit" on:click=open>
                                    "Rename / resize"
                                </button>
                                <DeleteButton busy testid="sign-delete" on_confirm=delete />
                            </div>
                        </Show>
                    }
                }
            >
                <form class="sign-form" novalidate=true on:submit=save.clone()>
                    <SignFields name width height />
                    <div class="buttons">
                        <button class="primary" type="submit" disabled=move || busy.get()>
                            "Save"
                        </button>
                        <button type="button" on:click=move |_| editing.set(false)>
                            "Cancel"
                        </button>
                    </div>
                </form>
            </Show>
            <ErrorNote error place="sign-card" />
        </article>
    }
    .into_any()
}

/// Name, width and height inputs.
#[component]
fn SignFields(
    name: RwSignal<String>,
    width: RwSignal<String>,
    height: RwSignal<String>,
) -> impl IntoView {
    view! {
        <label class="field">
            <span>"Name"</span>
            <input
                type="text"
                data-testid="sign-name-input"
                prop:value=move || name.get()
                on:input=move |ev| name.set(event_target_value(&ev))
            />
        </label>
        <div class="field-row">
            <NumberField
                label="Width (LEDs)"
                testid="sign-width-input"
                min=MIN_WIDTH.into()
                max=MAX_WIDTH.into()
                value=width
            />
            <NumberField
                label="Height (LEDs)"
                testid="sign-height-input"
                min=MIN_HEIGHT.into()
                max=MAX_HEIGHT.into()
                value=height
            />
        </div>
    }
    .into_any()
}

#[component]
fn NewSign(signs: Live) -> impl IntoView {
    let name = RwSignal::new(String::new());
    let width = RwSignal::new(DEFAULT_WIDTH.to_string());
    let height = RwSignal::new(DEFAULT_HEIGHT.to_string());
    let busy = RwSignal::new(false);
    let error = RwSignal::new(None::<String>);
    let create = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let value = match sign_fields(&name.get(), &width.get(), &height.get()) {
            Ok(value) => value,
            Err(problem) => {
                error.set(Some(problem));
                return;
            }
        };
        let write = Write::Put {
            id: None,
            value,
            if_match: None,
        };
        send(signs, write, busy, error, move |_| {
            name.try_set(String::new());
        });
    };
    view! {
        <form
            class="panel sign-card new-sign"
            data-testid="new-sign"
            novalidate=true
            on:submit=create
        >
            <h2>"New sign"</h2>
            <SignFields name width height />
            <ErrorNote error place="new-sign" />
            <div class="buttons">
                <button
                    class="primary"
                    type="submit"
                    data-testid="sign-create"
                    disabled=move || busy.get()
                >
                    "Create sign"
                </button>
            </div>
        </form>
    }
    .into_any()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_fields_name_the_bad_field() {
        assert_eq!(
            sign_fields(" Lobby ", "64", "16"),
            Ok(json!({"name": "Lobby", "width": 64, "height": 16}))
        );
        assert!(
            sign_fields("x", "9999", "16")
                .unwrap_err()
                .starts_with("width")
        );
        assert!(
            sign_fields("x", "64", "")
                .unwrap_err()
                .starts_with("height")
        );
    }
}
