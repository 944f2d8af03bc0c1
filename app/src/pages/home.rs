//! `/`: every sign as a live thumbnail, and creating, renaming, resizing and
//! deleting signs (with the colours their LEDs can show). A first visit is led
//! to create a sign, then a message for it. Also the page for paths that have none.

use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::components::A;
use serde_json::{Value, json};

use super::common::keyed_rows;
use super::common::{
    DeleteButton, FieldProblem, FormProblem, LiveStatus, NumberField, Problem, focus_soon, marks,
    number_field, read_sign, send_checked, showing, sign_title,
};
use super::common::{When, handler};
use super::led::LedSign;
use crate::auth::use_auth;
use crate::live::{Live, Write};
use crate::sign::{
    ColorDepth, DEFAULT_HEIGHT, DEFAULT_WIDTH, MAX_HEIGHT, MAX_WIDTH, MIN_HEIGHT, MIN_WIDTH, Sign,
};

/// The fields the sign forms show, by the model's names: problems about them show under them.
const SIGN_FORM_FIELDS: &[&str] = &["name", "width", "height", "color_depth"];

/// Checks a sign's name, size and colours as typed; the fields as JSON, or the problem.
fn sign_fields(name: &str, width: &str, height: &str, depth: &str) -> Result<Value, Problem> {
    if name.trim().is_empty() {
        return Err(Problem::about(
            "name",
            "Give the sign a name, such as “Lobby” or “Shop window”.",
        ));
    }
    let value = json!({
        "name": name.trim(),
        "width": number_field(width),
        "height": number_field(height),
        "color_depth": depth,
    });
    // The server checks too; checking here names the field before anything is sent.
    Sign::from_json(&value).map_err(|e| Problem::from_model(&e))?;
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
                <h1>"Your signs"</h1>
                <p class="lead">
                    "Each sign below shows what its LEDs show right now. Choose what a sign "
                    "shows here, and every screen and sign linked to it changes at once."
                </p>
                <When when=move || can_edit.get()>
                    <ol class="steps" data-testid="first-steps">
                        <li>"Create a sign: give it a name and its size in LEDs."</li>
                        <li>"Write a message: the words, colour and how they move."</li>
                        <li>"Open the sign and press “Show now” on the message."</li>
                    </ol>
                </When>
            </div>
            <div class="intro-links">
                <When when=move || can_edit.get()>
                    <button
                        class="primary"
                        data-testid="start-create"
                        on:click=handler(leptos::ev::click, move |_| focus_soon("[data-testid=new-sign] input".into()))
                    >
                        "Create a sign"
                    </button>
                </When>
                <A href="/messages" attr:class="button">
                    "Messages"
                </A>
            </div>
        </section>
        <div class="toolbar">
            <h2>"Signs"</h2>
            <span class="spacer"></span>
            <LiveStatus live=signs also=messages />
        </div>
        <div class="sign-cards" data-testid="sign-cards">
            {keyed_rows(
                ids,
                move |id| view! { <SignCard id signs messages can_edit /> }.into_any(),
            )}
            // Viewers are offered no writes: the server would refuse them (403).
            <When when=move || can_edit.get()>
                <NewSign signs />
            </When>
        </div>
        <When when=move || signs.synced.get() && signs.records.with(|r| r.is_empty())>
            <p class="muted">
                {move || String::from({
                    if can_edit.get() {
                        "No signs yet: start with “New sign”."
                    } else {
                        "No signs yet."
                    }
                })}
            </p>
        </When>
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
    let error = RwSignal::new(None::<Problem>);
    let fields = Fields::new(ColorDepth::Rgb);
    let open = move |_| {
        if let Some(s) = valid.get_untracked() {
            fields.name.set(s.name);
            fields.width.set(s.width.to_string());
            fields.height.set(s.height.to_string());
            fields.depth.set(s.color_depth.as_str().to_string());
        }
        error.set(None);
        editing.set(true);
    };
    let save = {
        let id = id.clone();
        move |ev: leptos::ev::SubmitEvent| {
            ev.prevent_default();
            let value = match fields.checked() {
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
            send_checked(signs, write, busy, error, move |_| {
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
            send_checked(signs, write, busy, error, |_| {});
        })
    };
    let href = format!("/signs/{id}");
    let title = {
        let id = id.clone();
        move || valid.with(|s| sign_title(s.as_ref(), &id))
    };
    let thumb_label = title.clone();
    view! {
        <article class="panel sign-card" data-testid="sign-card" data-id=id.clone()>
            <a class="thumb" href=href.clone() aria-label=move || thumb_label()>
                <LedSign sign=valid showing=shown pitch=4.0 testid="thumb" />
            </a>
            <div class="sign-card-head">
                <a class="sign-title" href=href data-testid="sign-title">
                    {move || title()}
                </a>
                <span class="muted" data-testid="sign-size">
                    {move || valid.get().map(|s| format!("{}×{}", s.width, s.height))}
                </span>
                <span class="muted" data-testid="sign-colors">
                    {move || valid.get().map(|s| s.color_depth.words().to_string())}
                </span>
            </div>
            {move || {
                sign.get()
                    .and_then(Result::err)
                    .map(|problem| {
                        view! { <p class="warning">{format!("Not a valid sign: {problem}")}</p> }
                    })
            }}
            <When
                when=move || editing.get()
                fallback=move || {
                    view! {
                        <When when=move || can_edit.get()>
                            <div class="buttons">
                                <button data-testid="sign-edit" on:click=handler(leptos::ev::click, open)>
                                    "Change"
                                </button>
                                <DeleteButton busy testid="sign-delete" on_confirm=delete />
                            </div>
                        </When>
                    }
                }
            >
                <form class="sign-form" novalidate=true on:submit=handler(leptos::ev::submit, save.clone())>
                    <SignFields fields problem=error />
                    <div class="buttons">
                        <button class="primary" type="submit" disabled=move || busy.get()>
                            "Save"
                        </button>
                        <button type="button" on:click=handler(leptos::ev::click, move |_| editing.set(false))>
                            "Cancel"
                        </button>
                    </div>
                </form>
            </When>
            <FormProblem problem=error place="sign-card" shown=SIGN_FORM_FIELDS />
        </article>
    }
    .into_any()
}

/// The sign form's fields as typed.
#[derive(Clone, Copy)]
struct Fields {
    name: RwSignal<String>,
    width: RwSignal<String>,
    height: RwSignal<String>,
    depth: RwSignal<String>,
}

impl Fields {
    fn new(depth: ColorDepth) -> Fields {
        Fields {
            name: RwSignal::new(String::new()),
            width: RwSignal::new(DEFAULT_WIDTH.to_string()),
            height: RwSignal::new(DEFAULT_HEIGHT.to_string()),
            depth: RwSignal::new(depth.as_str().to_string()),
        }
    }

    fn checked(self) -> Result<Value, Problem> {
        sign_fields(
            &self.name.get_untracked(),
            &self.width.get_untracked(),
            &self.height.get_untracked(),
            &self.depth.get_untracked(),
        )
    }
}

/// Name, size and colour inputs, each with its problem under it.
#[component]
fn SignFields(fields: Fields, problem: RwSignal<Option<Problem>>) -> impl IntoView {
    let depths = ColorDepth::ALL
        .iter()
        .map(|depth| {
            let name = depth.as_str();
            view! {
                <option value=name selected=move || fields.depth.get() == name>
                    {depth.words()}
                </option>
            }
        })
        .collect_view();
    view! {
        <label class="field">
            <span>"Name"</span>
            <input
                type="text"
                data-testid="sign-name-input"
                placeholder="Lobby"
                aria-invalid=marks(problem, "name")
                prop:value=move || fields.name.get()
                on:input=handler(leptos::ev::input, move |ev| fields.name.set(event_target_value(&ev)))
            />
            <FieldProblem problem field="name" />
        </label>
        <div class="field-row">
            <NumberField
                label="Width (LEDs)"
                testid="sign-width-input"
                min=MIN_WIDTH.into()
                max=MAX_WIDTH.into()
                value=fields.width
                checked=("width", problem)
            />
            <NumberField
                label="Height (LEDs)"
                testid="sign-height-input"
                min=MIN_HEIGHT.into()
                max=MAX_HEIGHT.into()
                value=fields.height
                checked=("height", problem)
            />
        </div>
        <label class="field">
            <span>"Colours its LEDs can show"</span>
            <select
                data-testid="sign-colors-input"
                aria-invalid=marks(problem, "color_depth")
                prop:value=move || fields.depth.get()
                on:change=handler(leptos::ev::change, move |ev| fields.depth.set(event_target_value(&ev)))
            >
                {depths}
            </select>
            <FieldProblem problem field="color_depth" />
        </label>
    }
    .into_any()
}

#[component]
fn NewSign(signs: Live) -> impl IntoView {
    // Most signs sold today are full colour; one-colour signs are picked here.
    let fields = Fields::new(ColorDepth::Rgb);
    let busy = RwSignal::new(false);
    let error = RwSignal::new(None::<Problem>);
    // The sign just made, to lead on to it.
    let made = RwSignal::new(None::<(String, String)>);
    let create = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        made.set(None);
        let value = match fields.checked() {
            Ok(value) => value,
            Err(problem) => {
                error.set(Some(problem));
                // The cursor goes to the field to mend.
                focus_soon("[data-testid=new-sign] [aria-invalid=true]".into());
                return;
            }
        };
        let name = fields.name.get_untracked().trim().to_string();
        let write = Write::Put {
            id: None,
            value,
            if_match: None,
        };
        send_checked(signs, write, busy, error, move |ack| {
            fields.name.try_set(String::new());
            if let Some(id) = ack.id {
                made.try_set(Some((id, name)));
                focus_soon("[data-testid=sign-made] a".into());
            }
        });
    };
    view! {
        <form
            class="panel sign-card new-sign"
            data-testid="new-sign"
            novalidate=true
            on:submit=handler(leptos::ev::submit, create)
        >
            <h2>"New sign"</h2>
            <SignFields fields problem=error />
            <FormProblem problem=error place="new-sign" shown=SIGN_FORM_FIELDS />
            {move || {
                made.get()
                    .map(|(id, name)| {
                        view! {
                            <p class="ok" data-testid="sign-made" role="status">
                                {format!("“{name}” is ready. ")}
                                <a href=format!("/signs/{id}")>
                                    {format!("Open {name} to choose what it shows →")}
                                </a>
                            </p>
                        }
                    })
            }}
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
            sign_fields(" Lobby ", "64", "16", "rgb"),
            Ok(json!({"name": "Lobby", "width": 64, "height": 16, "color_depth": "rgb"}))
        );
        let field = |r: Result<Value, Problem>| r.unwrap_err().field;
        assert_eq!(
            field(sign_fields("x", "9999", "16", "rgb")),
            Some("width".into())
        );
        assert_eq!(
            field(sign_fields("x", "64", "", "rgb")),
            Some("height".into())
        );
        assert_eq!(
            field(sign_fields("  ", "64", "16", "rgb")),
            Some("name".into())
        );
        assert_eq!(
            field(sign_fields("x", "64", "16", "blue")),
            Some("color_depth".into())
        );
        let words = sign_fields("x", "9999", "16", "rgb").unwrap_err().words;
        assert_eq!(words, "The width must be between 1 and 256.");
    }
}
