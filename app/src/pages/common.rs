//! Pieces every page shares: the connection indicator, error wording, and
//! reading signs and messages out of the live tables.

use std::collections::BTreeMap;
use std::sync::Arc;

use leptos::prelude::*;
use leptos::task::spawn_local;
use serde_json::Value;

use super::led::Showing;
use crate::event::ErrorBody;
use crate::live::{Acked, Live, Record, Write};
use crate::sign::{Message, ModelError, Shows, Sign};

/// An event handler, boxed: `on:click=handler(leptos::ev::click, move |_| …)`.
///
/// Every closure is a type of its own, and with erased components every `on:`
/// attribute of a new type brings its own copy of the attribute machinery
/// (build, hydrate, rebuild, clone, …) into the WASM. Boxed, the handlers of
/// one event share one copy.
pub fn handler<E>(_event: E, f: impl FnMut(E::EventType) + 'static) -> Box<dyn FnMut(E::EventType)>
where
    E: leptos::tachys::html::event::EventDescriptor,
    E::EventType: 'static,
{
    Box::new(f)
}

/// `<When>` without its generics: shows `children` while `when` is true, else
/// `fallback`, and builds them again only when `when` flips.
///
/// `Show` is generic over its condition and children, so each use brought its
/// own copy of the memo, the branch and the view's render/hydrate code; here one
/// copy serves every use.
#[component]
pub fn When(
    #[prop(into)] when: Signal<bool>,
    children: ChildrenFn,
    #[prop(optional, into)] fallback: ViewFn,
) -> impl IntoView {
    let shown = Memo::new(move |_| when.get());
    move || {
        if shown.get() {
            children()
        } else {
            fallback.run()
        }
    }
}

/// `<For>` over string keys, without its generics: one row per key, built by
/// `row` when its key appears and dropped when it goes, kept as it moves.
///
/// `For` is generic over its three closures, so every list brought its own
/// copy of the keyed diffing, building and hydrating code (about 15 KB before
/// compression). Here one copy serves every list; a list of tuples keys its
/// rows by [`pack`]ing them.
pub fn keyed_rows(
    each: impl Fn() -> Vec<String> + Send + Sync + 'static,
    row: impl Fn(String) -> AnyView + Send + Sync + 'static,
) -> AnyView {
    rows_of(Arc::new(each), Arc::new(row))
}

type Keys = Arc<dyn Fn() -> Vec<String> + Send + Sync>;
type Row = Arc<dyn Fn(String) -> AnyView + Send + Sync>;

fn rows_of(each: Keys, row: Row) -> AnyView {
    view! { <For each=move || each() key=|key| key.clone() children=move |key| row(key) /> }
        .into_any()
}

/// One key from several strings; [`unpack`] gives them back.
pub fn pack(parts: &[&str]) -> String {
    let mut key = String::new();
    for part in parts {
        key.push_str(&part.len().to_string());
        key.push(':');
        key.push_str(part);
    }
    key
}

/// The strings a [`pack`]ed key was made of.
pub fn unpack(mut key: &str) -> Vec<String> {
    let mut parts = Vec::new();
    while let Some((len, rest)) = key.split_once(':') {
        let len = len.parse::<usize>().unwrap_or(rest.len()).min(rest.len());
        let (part, rest) = rest.split_at(rest.floor_char_boundary(len));
        parts.push(part.to_string());
        key = rest;
    }
    parts
}

pub fn describe(error: &ErrorBody) -> String {
    format!("{} ({})", error.message, error.code)
}

/// What the user typed that cannot be saved, in words, and which field it is
/// about (so the page shows it next to that field and marks the field).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The model's path of the field (`width`, `speed`), if it is about one.
    pub field: Option<String>,
    pub words: String,
}

impl Problem {
    pub fn general(words: impl Into<String>) -> Problem {
        Problem {
            field: None,
            words: words.into(),
        }
    }

    pub fn about(field: &str, words: impl Into<String>) -> Problem {
        Problem {
            field: Some(field.to_string()),
            words: words.into(),
        }
    }

    /// A model check's refusal, said about the field it names.
    pub fn from_model(error: &ModelError) -> Problem {
        match error {
            ModelError::NotAnObject => Problem::general(error.to_string()),
            ModelError::Field { field, reason } => {
                Problem::about(field, format!("{} {reason}.", field_words(field)))
            }
        }
    }

    /// A write the server refused, in words rather than its error code.
    pub fn from_server(error: &ErrorBody) -> Problem {
        match error.code.as_str() {
            "version_mismatch" => {
                Problem::general("Someone else changed this in the meantime; nothing was saved.")
            }
            "forbidden" => Problem::general("Your account may not change this."),
            "unauthorized" => Problem::general("You are signed out: sign in again to save."),
            _ => match error.message.split_once(": ") {
                // The model's "field: reason", as the same sentence as a check here.
                Some((field, reason)) if !field.contains(' ') => {
                    Problem::about(field, format!("{} {reason}.", field_words(field)))
                }
                _ => Problem::general(error.message.clone()),
            },
        }
    }

    fn is_about(&self, field: &str) -> bool {
        self.field.as_deref() == Some(field)
    }
}

/// How a page names a model field in a sentence ("The width must be …").
pub fn field_words(field: &str) -> &'static str {
    match field {
        "name" => "The name",
        "width" => "The width",
        "height" => "The height",
        "color_depth" => "The colours",
        "brightness" => "The brightness",
        "text" => "The text",
        "color" => "The colour",
        "background" => "The background",
        "effect" => "The effect",
        "speed" => "The speed",
        "duration" => "The duration",
        "align" => "The alignment",
        "font" => "The font",
        _ if field.ends_with(".duration") => "The seconds",
        _ if field.starts_with("shows") => "What the sign shows",
        _ => "This value",
    }
}

/// A problem shown under the field it is about (`field`, the model's path);
/// `place` names it for tests.
#[component]
pub fn FieldProblem(problem: RwSignal<Option<Problem>>, field: &'static str) -> impl IntoView {
    // In place in view!, the closure shares its render code with the others
    // giving an Option<AnyView>.
    view! {
        {move || {
            problem.with(|p| {
                p.as_ref().filter(|p| p.is_about(field)).map(|p| {
                    view! {
                        <span class="error field-error" data-testid="error" data-for=field role="alert">
                            {p.words.clone()}
                        </span>
                    }
                        .into_any()
                })
            })
        }}
    }
}

/// A problem about no field shown on this form (`shown`: the fields it shows).
#[component]
pub fn FormProblem(
    problem: RwSignal<Option<Problem>>,
    place: &'static str,
    shown: &'static [&'static str],
) -> impl IntoView {
    view! {
        {move || {
            problem.with(|p| {
                p.as_ref()
                    .filter(|p| !p.field.as_deref().is_some_and(|f| shown.contains(&f)))
                    .map(|p| {
                        view! {
                            <p class="error" data-testid="error" data-for=place role="alert">
                                {p.words.clone()}
                            </p>
                        }
                            .into_any()
                    })
            })
        }}
    }
}

/// Whether `problem` is about `field`: the field is marked invalid.
pub fn marks(
    problem: RwSignal<Option<Problem>>,
    field: &'static str,
) -> impl Fn() -> Option<String> + Copy {
    move || {
        problem
            .with(|p| p.as_ref().is_some_and(|p| p.is_about(field)))
            .then(|| "true".to_string())
    }
}

/// Like [`send`], with the server's refusal as a [`Problem`].
pub fn send_checked(
    live: Live,
    write: Write,
    busy: RwSignal<bool>,
    problem: RwSignal<Option<Problem>>,
    done: impl FnOnce(Acked) + 'static,
) {
    run_write(live, write, busy, problem, Problem::from_server, done);
}

/// The connection indicator; with two connections, live only when both are.
#[component]
pub fn LiveStatus(live: Live, #[prop(optional)] also: Option<Live>) -> impl IntoView {
    let status = move || match also {
        Some(other) if live.status.get().is_live() => other.status.get(),
        _ => live.status.get(),
    };
    let notice = move || {
        live.notice
            .get()
            .or_else(|| also.and_then(|other| other.notice.get()))
    };
    let state = move || String::from(if status().is_live() { "live" } else { "down" });
    view! {
        <div class="status-area">
            <When when=move || notice().is_some()>
                <span class="notice" data-testid="error" data-for="connection">
                    {move || notice().map(|e| describe(&e))}
                </span>
            </When>
            <span class="live-status" data-testid="live-status" data-state=move || state()>
                <span class="dot" aria-hidden="true"></span>
                {move || String::from(status().label())}
            </span>
        </div>
    }
    .into_any()
}

/// Runs a write the user asked for, as every page runs one: `busy` while it is
/// on its way, the server's refusal in words in `error`, then `done` on success.
pub fn send(
    live: Live,
    write: Write,
    busy: RwSignal<bool>,
    error: RwSignal<Option<String>>,
    done: impl FnOnce(Acked) + 'static,
) {
    run_write(live, write, busy, error, describe, done);
}

/// What [`send`] and [`send_checked`] share; `refusal` says how the server's
/// refusal is kept.
fn run_write<E: Send + Sync + 'static>(
    live: Live,
    write: Write,
    busy: RwSignal<bool>,
    refused: RwSignal<Option<E>>,
    refusal: fn(&ErrorBody) -> E,
    done: impl FnOnce(Acked) + 'static,
) {
    refused.set(None);
    busy.set(true);
    spawn_local(async move {
        let result = live.write(write).await;
        busy.try_set(false);
        match result {
            Ok(ack) => done(ack),
            Err(e) => {
                refused.try_set(Some(refusal(&e)));
            }
        }
    });
}

/// An error in words, shown next to what caused it; `place` names that for tests.
#[component]
pub fn ErrorNote(error: RwSignal<Option<String>>, place: &'static str) -> impl IntoView {
    view! {
        {move || {
            error.get().map(|message| {
                view! {
                    <p class="error" data-testid="error" data-for=place>
                        {message}
                    </p>
                }
                    .into_any()
            })
        }}
    }
}

/// A delete button that asks once more before it acts: the first press arms
/// it, the second confirms, leaving it disarms it. `label` / `confirm` name
/// other drastic acts ("Revoke", "Reset password").
#[component]
pub fn DeleteButton(
    busy: RwSignal<bool>,
    testid: &'static str,
    on_confirm: Callback<()>,
    #[prop(default = "Delete")] label: &'static str,
    #[prop(default = "Confirm delete")] confirm: &'static str,
) -> impl IntoView {
    let armed = RwSignal::new(false);
    let press = move |_| {
        if armed.get_untracked() {
            armed.set(false);
            on_confirm.run(());
        } else {
            armed.set(true);
        }
    };
    view! {
        <button
            type="button"
            class="danger"
            data-testid=testid
            disabled=move || busy.get()
            on:click=handler(leptos::ev::click, press)
            on:blur=handler(leptos::ev::blur, move |_| armed.set(false))
        >
            {move || if armed.get() { confirm } else { label }}
        </button>
    }
    .into_any()
}

/// A labelled number input holding its text as typed (the model's checks name
/// what is wrong with it); `edited` hears of every keystroke.
#[component]
pub fn NumberField(
    label: &'static str,
    testid: &'static str,
    min: u32,
    max: u32,
    value: RwSignal<String>,
    #[prop(optional)] edited: Option<Callback<()>>,
    /// The model's name of the field, with the form's problem: shown under it.
    #[prop(optional)]
    checked: Option<(&'static str, RwSignal<Option<Problem>>)>,
) -> impl IntoView {
    let (field, problem) = checked.unwrap_or(("", RwSignal::new(None)));
    view! {
        <label class="field">
            <span>{label}</span>
            <input
                type="number"
                data-testid=testid
                aria-invalid=marks(problem, field)
                min=min
                max=max
                prop:value=move || value.get()
                on:input=handler(leptos::ev::input, move |ev| {
                    value.set(event_target_value(&ev));
                    if let Some(edited) = edited {
                        edited.run(());
                    }
                })
            />
            <FieldProblem problem field />
        </label>
    }
    .into_any()
}

/// Puts keyboard focus on the first element matching `selector` once the page
/// has drawn what the last change asked for (the next frame), so an action
/// leaves the cursor where the user works next instead of at the page's top.
pub fn focus_soon(selector: String) {
    #[cfg(feature = "hydrate")]
    request_animation_frame(move || {
        use wasm_bindgen::JsCast;
        let element = document()
            .query_selector(&selector)
            .ok()
            .flatten()
            .and_then(|e| e.dyn_into::<web_sys::HtmlElement>().ok());
        if let Some(element) = element {
            let _ = element.focus();
        }
    });
    #[cfg(not(feature = "hydrate"))]
    let _ = selector;
}

/// What a sign is called on the page: its name, else its id.
pub fn sign_title(sign: Option<&Sign>, id: &str) -> String {
    sign.map(|s| s.name.as_str())
        .filter(|name| !name.is_empty())
        .unwrap_or(id)
        .to_string()
}

/// A sign record: `None` while absent, `Err` (in words) if the record is not a valid sign.
pub fn read_sign(records: &BTreeMap<String, Record>, id: &str) -> Option<Result<Sign, String>> {
    records
        .get(id)
        .map(|record| Sign::from_json(&record.value).map_err(|e| e.to_string()))
}

/// A message record, if it is a valid message.
pub fn read_message(records: &BTreeMap<String, Record>, id: &str) -> Option<Message> {
    records
        .get(id)
        .and_then(|record| Message::from_json(&record.value).ok())
}

/// What the sign shows now, if that message exists.
pub fn showing(sign: &Sign, messages: &BTreeMap<String, Record>) -> Option<Showing> {
    let id = sign.shows.current_message()?;
    let round = match &sign.shows {
        Shows::Playlist(playlist) => playlist.position,
        _ => 0,
    };
    read_message(messages, id).map(|message| Showing {
        id: id.to_string(),
        message,
        round,
    })
}

/// A short, one-line label for a message.
pub fn message_label(message: &Message) -> String {
    let line = message.text.replace('\n', " ⏎ ");
    let line = line.trim();
    if line.is_empty() {
        "(no text)".to_string()
    } else if line.chars().count() > 40 {
        format!("{}…", line.chars().take(39).collect::<String>())
    } else {
        line.to_string()
    }
}

/// A number typed into a form: JSON number when it is one, else the text, so
/// the model's checks name the field ("must be a whole number …").
pub fn number_field(text: &str) -> Value {
    let text = text.trim();
    match text.parse::<i64>() {
        Ok(n) => Value::from(n),
        Err(_) => Value::from(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_sign_shows_its_current_playlist_item() {
        let mut messages = BTreeMap::new();
        messages.insert("a".to_string(), Record::loaded(json!({"text": "A"})));
        messages.insert("b".to_string(), Record::loaded(json!({"text": "B"})));
        let sign = Sign::from_json(&json!({"shows": {"playlist":
            [{"message": "a"}, {"message": "b"}], "position": 1}}))
        .expect("valid sign");
        let now = showing(&sign, &messages).expect("showing b");
        assert_eq!((now.id.as_str(), now.round), ("b", 1));
        assert_eq!(now.message.text, "B");
        let sign = Sign::from_json(&json!({"shows": {"message": "zz"}})).expect("valid sign");
        assert!(showing(&sign, &messages).is_none());
    }

    #[test]
    fn problems_are_sentences_about_their_field() {
        let e = Sign::from_json(&json!({"width": 0})).expect_err("too narrow");
        let p = Problem::from_model(&e);
        assert_eq!(p.field.as_deref(), Some("width"));
        assert_eq!(p.words, "The width must be between 1 and 256.");
        let server = ErrorBody {
            code: "invalid_record".into(),
            message: "speed: must be between 1 and 500".into(),
        };
        let p = Problem::from_server(&server);
        assert_eq!(p.field.as_deref(), Some("speed"));
        assert!(!p.words.contains("invalid_record"));
        let conflict = ErrorBody {
            code: "version_mismatch".into(),
            message: "'messages/m' is at version 3".into(),
        };
        assert!(
            Problem::from_server(&conflict)
                .words
                .starts_with("Someone else changed")
        );
    }

    #[test]
    fn form_numbers_and_labels() {
        assert_eq!(number_field(" 64 "), json!(64));
        assert_eq!(number_field("abc"), json!("abc"));
        let mut signs = BTreeMap::new();
        signs.insert("s".to_string(), Record::loaded(json!({"width": 9999})));
        assert!(
            read_sign(&signs, "s")
                .and_then(Result::err)
                .is_some_and(|e| e.contains("width"))
        );
        let long = Message {
            text: "x".repeat(50),
            ..Message::default()
        };
        assert_eq!(message_label(&long).chars().count(), 40);
    }

    #[test]
    fn packed_keys_give_back_their_parts_whatever_they_hold() {
        for parts in [
            vec!["lobby", "3"],
            vec!["a:b", "12:x", ""],
            vec!["Grüße", "3:über", "7"],
            vec![],
        ] {
            assert_eq!(unpack(&pack(&parts)), parts, "{parts:?}");
        }
        // Different parts never make the same key.
        assert_ne!(pack(&["a", "bc"]), pack(&["ab", "c"]));
    }
}
