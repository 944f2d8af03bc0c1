//! Pieces every page shares: the connection indicator, error wording, and
//! reading signs and messages out of the live tables.

use std::collections::BTreeMap;

use leptos::prelude::*;
use leptos::task::spawn_local;
use serde_json::Value;

use super::led::Showing;
use crate::event::ErrorBody;
use crate::live::{Acked, Live, Record, Write};
use crate::sign::{Message, Shows, Sign};

pub fn describe(error: &ErrorBody) -> String {
    format!("{} ({})", error.message, error.code)
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
    let state = move || if status().is_live() { "live" } else { "down" };
    view! {
        <div class="status-area">
            <Show when=move || notice().is_some()>
                <span class="notice" data-testid="error" data-for="connection">
                    {move || notice().map(|e| describe(&e))}
                </span>
            </Show>
            <span class="live-status" data-testid="live-status" data-state=state>
                <span class="dot" aria-hidden="true"></span>
                {move || status().label()}
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
    error.set(None);
    busy.set(true);
    spawn_local(async move {
        let result = live.write(write).await;
        busy.try_set(false);
        match result {
            Ok(ack) => done(ack),
            Err(e) => {
                error.try_set(Some(describe(&e)));
            }
        }
    });
}

/// An error in words, shown next to what caused it; `place` names that for tests.
#[component]
pub fn ErrorNote(error: RwSignal<Option<String>>, place: &'static str) -> impl IntoView {
    move || {
        error.get().map(|message| {
            view! {
                <p class="error" data-testid="error" data-for=place>
                    {message}
                </p>
            }
        })
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
            on:click=press
            on:blur=move |_| armed.set(false)
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
) -> impl IntoView {
    view! {
        <label class="field">
            <span>{label}</span>
            <input
                type="number"
                data-testid=testid
                min=min
                max=max
                prop:value=move || value.get()
                on:input=move |ev| {
                    value.set(event_target_value(&ev));
                    if let Some(edited) = edited {
                        edited.run(());
                    }
                }
            />
        </label>
    }
    .into_any()
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

    fn record(value: Value) -> Record {
        Record {
            version: Some(1),
            seq: Some(1),
            value,
            fresh: false,
        }
    }

    #[test]
    fn the_sign_shows_its_current_playlist_item() {
        let mut messages = BTreeMap::new();
        messages.insert("a".to_string(), record(json!({"text": "A"})));
        messages.insert("b".to_string(), record(json!({"text": "B"})));
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
    fn form_numbers_and_labels() {
        assert_eq!(number_field(" 64 "), json!(64));
        assert_eq!(number_field("abc"), json!("abc"));
        let mut signs = BTreeMap::new();
        signs.insert("s".to_string(), record(json!({"width": 9999})));
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
}
