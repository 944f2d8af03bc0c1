//! `/messages`: the message library. Create, edit (with a live preview on a
//! small virtual sign), duplicate and delete messages. The message being
//! edited is in the URL (`/messages?id=…`), so other pages can link to it.

use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::use_query_map;
use serde_json::{Value, json};

use super::common::{
    DeleteButton, ErrorNote, LiveStatus, NumberField, message_label, number_field, send,
};
use super::led::{LedSign, Showing};
use crate::auth::use_auth;
use crate::live::{Live, Write};
use crate::sign::{
    Align, ColorDepth, Effect as TextEffect, Font, MAX_DURATION, MAX_SPEED, MIN_DURATION,
    MIN_SPEED, Message, Sign, TextColor,
};

/// The editor's fields as typed.
#[derive(Clone, Copy)]
struct Draft {
    text: RwSignal<String>,
    color: RwSignal<String>,
    rainbow: RwSignal<bool>,
    background: RwSignal<String>,
    effect: RwSignal<String>,
    speed: RwSignal<String>,
    duration: RwSignal<String>,
    align: RwSignal<String>,
    font: RwSignal<String>,
    /// Changed by hand since loaded or saved: live changes no longer replace it.
    dirty: RwSignal<bool>,
    /// The version the fields were loaded from.
    base: RwSignal<Option<u64>>,
}

impl Draft {
    fn new() -> Self {
        let draft = Draft {
            text: RwSignal::new(String::new()),
            color: RwSignal::new(String::new()),
            rainbow: RwSignal::new(false),
            background: RwSignal::new(String::new()),
            effect: RwSignal::new(String::new()),
            speed: RwSignal::new(String::new()),
            duration: RwSignal::new(String::new()),
            align: RwSignal::new(String::new()),
            font: RwSignal::new(String::new()),
            dirty: RwSignal::new(false),
            base: RwSignal::new(None),
        };
        draft.load(&Message::default(), None);
        draft
    }

    fn load(self, m: &Message, version: Option<u64>) {
        self.text.set(m.text.clone());
        match m.color {
            TextColor::Solid(rgb) => {
                self.color.set(rgb.to_hex());
                self.rainbow.set(false);
            }
            TextColor::Rainbow => self.rainbow.set(true),
        }
        if self.color.get_untracked().is_empty() {
            self.color.set("#ffb000".into());
        }
        self.background.set(m.background.to_hex());
        self.effect.set(m.effect.as_str().into());
        self.speed.set(m.speed.to_string());
        self.duration.set(m.duration.to_string());
        self.align.set(m.align.as_str().into());
        self.font.set(m.font.as_str().into());
        self.dirty.set(false);
        self.base.set(version);
    }

    fn to_json(self) -> Value {
        let color = if self.rainbow.get() {
            "rainbow".to_string()
        } else {
            self.color.get()
        };
        json!({
            "text": self.text.get(),
            "color": color,
            "background": self.background.get(),
            "effect": self.effect.get(),
            "speed": number_field(&self.speed.get()),
            "duration": number_field(&self.duration.get()),
            "align": self.align.get(),
            "font": self.font.get(),
        })
    }
}

#[component]
pub fn MessagesPage() -> impl IntoView {
    let live = Live::new();
    live.connect();
    live.watch(Some("messages".into()));
    // Viewers read the library; they are offered no writes (the server refuses them).
    let can_edit = use_auth().can_edit();

    // The message being edited: first the one in the URL (links from other
    // pages), then whatever is picked here.
    let query = use_query_map();
    let selected = RwSignal::new(None::<String>);
    Effect::new(move |_| {
        let wanted = query.read().get("id").filter(|t| !t.is_empty());
        if wanted.is_some() {
            selected.set(wanted);
        }
    });
    // `true`: the editor is on a new, unsaved message.
    let creating = RwSignal::new(false);
    let draft = Draft::new();

    let items = move || {
        live.records.with(|records| {
            records
                .iter()
                .map(|(id, record)| {
                    let label = Message::from_json(&record.value)
                        .map(|m| message_label(&m))
                        .unwrap_or_else(|e| format!("(not a valid message: {e})"));
                    (id.clone(), label)
                })
                .collect::<Vec<_>>()
        })
    };
    let new_message = move |_| {
        draft.load(
            &Message {
                text: "Hello".into(),
                ..Message::default()
            },
            None,
        );
        creating.set(true);
        selected.set(None);
    };

    view! {
        <Title text="Messages · Marquee" />
        <div class="toolbar">
            <h1>"Messages"</h1>
            <Show when=move || can_edit.get()>
                <button class="primary" data-testid="message-new" on:click=new_message>
                    "New message"
                </button>
            </Show>
            <span class="spacer"></span>
            <LiveStatus live />
        </div>
        <div class="messages-grid">
            <section class="panel message-list">
                <ul>
                    <For
                        each=items
                        key=|item| item.clone()
                        children=move |(id, label)| {
                            let is_selected = {
                                let id = id.clone();
                                move || selected.get().as_deref() == Some(id.as_str())
                            };
                            let pick = id.clone();
                            view! {
                                <li>
                                    <button
                                        class="message-pick"
                                        class:selected=is_selected
                                        data-testid="message-item"
                                        data-id=id.clone()
                                        on:click=move |_| {
                                            creating.set(false);
                                            selected.set(Some(pick.clone()));
                                        }
                                    >
                                        {label}
                                    </button>
                                </li>
                            }
                        }
                    />
                </ul>
                <Show when=move || live.records.with(|r| r.is_empty())>
                    <p class="muted empty">
                        {move || {
                            if live.synced.get() {
                                "No messages yet."
                            } else {
                                "Loading messages…"
                            }
                        }}
                    </p>
                </Show>
            </section>
            {move || {
                if creating.get() || selected.get().is_some() {
                    view! { <MessageEditor live draft selected creating can_edit /> }.into_any()
                } else {
                    view! {
                        <section class="panel empty-state">
                            <p>
                                {move || {
                                    if can_edit.get() {
                                        "Pick a message to edit it, or write a new one."
                                    } else {
                                        "Pick a message to see it."
                                    }
                                }}
                            </p>
                        </section>
                    }
                        .into_any()
                }
            }}
        </div>
    }
    .into_any()
}

#[component]
fn MessageEditor(
    live: Live,
    draft: Draft,
    selected: RwSignal<Option<String>>,
    creating: RwSignal<bool>,
    can_edit: Memo<bool>,
) -> impl IntoView {
    let error = RwSignal::new(None::<String>);
    let note = RwSignal::new(None::<String>);
    let busy = RwSignal::new(false);
    let current = Memo::new(move |_| {
        let id = selected.get()?;
        live.records.with(|r| r.get(&id).cloned())
    });
    // Load the selected message, and follow live changes while untouched.
    Effect::new(move |previous: Option<Option<String>>| {
        let id = selected.get();
        let record = current.get();
        if creating.get_untracked() && id.is_none() {
            return id;
        }
        let switched = previous.as_ref() != Some(&id);
        if let Some(record) = record
            && (switched
                || (!draft.dirty.get_untracked() && draft.base.get_untracked() != record.version))
        {
            match Message::from_json(&record.value) {
                Ok(m) => draft.load(&m, record.version),
                Err(e) => error.set(Some(format!("The stored message is not valid: {e}"))),
            }
            if switched {
                error.set(None);
                note.set(None);
            }
        }
        id
    });
    let checked = Memo::new(move |_| Message::from_json(&draft.to_json()));
    // The preview shows the last valid state of the fields.
    let preview = RwSignal::new(None::<Message>);
    Effect::new(move |_| {
        if let Ok(m) = checked.get() {
            preview.set(Some(m));
        }
    });
    let preview_sign = Sign {
        name: "preview".into(),
        color_depth: ColorDepth::Rgb,
        brightness: 100,
        ..Sign::default()
    };
    let preview_showing = Signal::derive(move || {
        preview.get().map(|message| Showing {
            id: selected.get().unwrap_or_default(),
            message,
            round: 0,
        })
    });

    let write = move |id: Option<String>, value: Value, if_match: Option<u64>, duplicate: bool| {
        note.set(None);
        let write = Write::Put {
            id,
            value,
            if_match,
        };
        send(live, write, busy, error, move |ack| {
            draft.dirty.try_set(false);
            draft.base.try_set(ack.version);
            note.try_set(Some(if duplicate {
                "Duplicated; now editing the copy.".to_string()
            } else {
                "Saved.".to_string()
            }));
            creating.try_set(false);
            if let Some(id) = ack.id {
                selected.try_set(Some(id));
            }
        });
    };
    let save = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let value = draft.to_json();
        if let Err(problem) = Message::from_json(&value) {
            error.set(Some(problem.to_string()));
            return;
        }
        let id = if creating.get_untracked() {
            None
        } else {
            selected.get_untracked()
        };
        let if_match = id.as_ref().and(draft.base.get_untracked());
        write(id, value, if_match, false);
    };
    let duplicate = move |_| {
        let value = draft.to_json();
        if let Err(problem) = Message::from_json(&value) {
            error.set(Some(problem.to_string()));
            return;
        }
        write(None, value, None, true);
    };
    let delete = Callback::new(move |()| {
        if let Some(id) = selected.get_untracked() {
            let write = Write::Delete { id, if_match: None };
            send(live, write, busy, error, move |_| {
                selected.try_set(None);
            });
        }
    });
    let touched = Callback::new(move |()| {
        draft.dirty.set(true);
        error.set(None);
        note.set(None);
    });
    let effects: Vec<&'static str> = TextEffect::ALL.iter().map(|e| e.as_str()).collect();
    let aligns: Vec<&'static str> = Align::ALL.iter().map(|e| e.as_str()).collect();
    let fonts: Vec<&'static str> = Font::ALL.iter().map(|e| e.as_str()).collect();

    view! {
        <section class="panel message-editor" data-testid="message-editor">
            <div class="panel-head">
                <h2>
                    {move || {
                        if creating.get() {
                            "New message".to_string()
                        } else {
                            format!("Message {}", selected.get().unwrap_or_default())
                        }
                    }}
                </h2>
                <span class="muted">
                    {move || draft.base.get().map(|v| format!("version {v}")).unwrap_or_default()}
                </span>
            </div>
            <div class="preview">
                <LedSign
                    sign=Signal::derive(move || Some(preview_sign.clone()))
                    showing=preview_showing
                    pitch=6.0
                    label="Preview"
                    testid="message-preview"
                />
            </div>
            <form class="message-form" novalidate=true on:submit=save>
                // A viewer sees the fields, greyed: one `disabled` covers them all.
                <fieldset class="plain" disabled=move || !can_edit.get()>
                <label class="field">
                    <span>"Text"</span>
                    <textarea
                        data-testid="message-text"
                        rows="2"
                        prop:value=move || draft.text.get()
                        on:input=move |ev| {
                            draft.text.set(event_target_value(&ev));
                            touched.run(());
                        }
                    ></textarea>
                </label>
                <div class="field-row">
                    <label class="field">
                        <span>"Colour"</span>
                        <input
                            type="color"
                            data-testid="message-color"
                            disabled=move || draft.rainbow.get()
                            prop:value=move || draft.color.get()
                            on:input=move |ev| {
                                draft.color.set(event_target_value(&ev));
                                touched.run(());
                            }
                        />
                    </label>
                    <label class="field check">
                        <input
                            type="checkbox"
                            data-testid="message-rainbow"
                            prop:checked=move || draft.rainbow.get()
                            on:change=move |ev| {
                                draft.rainbow.set(event_target_checked(&ev));
                                touched.run(());
                            }
                        />
                        <span>"Rainbow"</span>
                    </label>
                    <label class="field">
                        <span>"Background"</span>
                        <input
                            type="color"
                            data-testid="message-background"
                            prop:value=move || draft.background.get()
                            on:input=move |ev| {
                                draft.background.set(event_target_value(&ev));
                                touched.run(());
                            }
                        />
                    </label>
                </div>
                <div class="field-row">
                    <ChoiceField
                        label="Effect"
                        testid="message-effect"
                        choices=effects
                        value=draft.effect
                        edited=touched
                    />
                    <NumberField
                        label="Speed (LEDs/s)"
                        testid="message-speed"
                        min=MIN_SPEED.into()
                        max=MAX_SPEED.into()
                        value=draft.speed
                        edited=touched
                    />
                    <NumberField
                        label="Duration (s)"
                        testid="message-duration"
                        min=MIN_DURATION
                        max=MAX_DURATION
                        value=draft.duration
                        edited=touched
                    />
                </div>
                <div class="field-row">
                    <ChoiceField
                        label="Align"
                        testid="message-align"
                        choices=aligns
                        value=draft.align
                        edited=touched
                    />
                    <ChoiceField
                        label="Font"
                        testid="message-font"
                        choices=fonts
                        value=draft.font
                        edited=touched
                    />
                </div>
                {move || {
                    checked
                        .get()
                        .err()
                        .map(|problem| {
                            view! { <p class="warning">{format!("Not saved as is: {problem}")}</p> }
                        })
                }}
                <ErrorNote error place="message" />
                {move || note.get().map(|message| view! { <p class="ok">{message}</p> })}
                </fieldset>
                <Show when=move || can_edit.get()>
                <div class="buttons">
                    <button
                        class="primary"
                        type="submit"
                        data-testid="message-save"
                        disabled=move || busy.get()
                    >
                        {move || if creating.get() { "Create" } else { "Save" }}
                    </button>
                    <Show when=move || !creating.get()>
                        <button type="button" data-testid="message-duplicate" on:click=duplicate>
                            "Duplicate"
                        </button>
                        <DeleteButton busy testid="message-delete" on_confirm=delete />
                    </Show>
                </div>
                </Show>
            </form>
        </section>
    }
    .into_any()
}

/// A labelled choice among a model's names (`scroll_left` reads "scroll left").
#[component]
fn ChoiceField(
    label: &'static str,
    testid: &'static str,
    choices: Vec<&'static str>,
    value: RwSignal<String>,
    edited: Callback<()>,
) -> impl IntoView {
    let options = choices
        .into_iter()
        .map(|name| {
            view! {
                <option value=name selected=move || value.get() == name>
                    {name.replace('_', " ")}
                </option>
            }
        })
        .collect_view();
    view! {
        <label class="field">
            <span>{label}</span>
            <select
                data-testid=testid
                prop:value=move || value.get()
                on:change=move |ev| {
                    value.set(event_target_value(&ev));
                    edited.run(());
                }
            >
                {options}
            </select>
        </label>
    }
    .into_any()
}
