//! `/messages`: the message library. Create, edit (with a live preview on the
//! sign it is for, in that sign's colours), duplicate and delete messages. The
//! message being edited is in the URL (`/messages?id=…`), so other pages can
//! link to it; `?new=1&sign=…` starts a new message for a sign and offers to
//! show it there once made. An edit that meets a change made elsewhere shows
//! both versions and lets the user keep theirs or take the other.

use std::collections::BTreeMap;

use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::{use_navigate, use_query_map};
use serde_json::{Value, json};

use super::common::{
    DeleteButton, FieldProblem, FormProblem, LiveStatus, NumberField, Problem, focus_soon, marks,
    message_label, number_field, send_checked, sign_title,
};
use super::common::{When, handler};
use super::common::{keyed_rows, pack, unpack};
use super::led::{LedSign, Showing};
use super::sign::shows_patch;
use crate::auth::use_auth;
use crate::live::{Live, Record, Write};
use crate::render::undrawable_chars;
use crate::sign::{
    Align, ColorDepth, Effect as TextEffect, Font, MAX_DURATION, MAX_SPEED, MIN_DURATION,
    MIN_SPEED, Message, Shows, Sign, TextColor,
};

/// The signs that use message `id`, in words: "Lobby (on it now)", "Hall (in its playlist)".
pub fn used_by(id: &str, signs: &BTreeMap<String, Record>) -> Vec<String> {
    signs
        .iter()
        .filter_map(|(sign_id, record)| {
            let sign = Sign::from_json(&record.value).ok()?;
            let name = sign_title(Some(&sign), sign_id);
            let on_now = sign.shows.current_message() == Some(id);
            let listed = match &sign.shows {
                Shows::Playlist(p) => p.items.iter().any(|item| item.message == id),
                _ => false,
            };
            match (on_now, listed) {
                (true, _) => Some(format!("{name} (on it now)")),
                (false, true) => Some(format!("{name} (in its playlist)")),
                _ => None,
            }
        })
        .collect()
}

/// The id for a copy of `id`: `id-copy`, else `id-copy-2`, … (the first one free).
pub fn copy_id(id: &str, taken: impl Fn(&str) -> bool) -> String {
    let first = format!("{id}-copy");
    if !taken(&first) {
        return first;
    }
    (2..)
        .map(|n| format!("{id}-copy-{n}"))
        .find(|candidate| !taken(candidate))
        .unwrap_or(first)
}

/// The fields on which two versions of a message differ: (what, mine, theirs).
pub fn differences(mine: &Message, theirs: &Message) -> Vec<(&'static str, String, String)> {
    /// A field as the conflict table shows it.
    type Shown = fn(&Message) -> String;
    const SHOWN: [(&str, Shown); 8] = [
        ("Text", |m| m.text.clone()),
        ("Colour", |m| m.color.to_string()),
        ("Background", |m| m.background.to_hex()),
        ("Effect", |m| m.effect.as_str().replace('_', " ")),
        ("Speed", |m| m.speed.to_string()),
        ("Duration", |m| m.duration.to_string()),
        ("Align", |m| m.align.as_str().into()),
        ("Font", |m| m.font.as_str().into()),
    ];
    SHOWN
        .iter()
        .map(|(what, show)| (*what, show(mine), show(theirs)))
        .filter(|(_, a, b)| a != b)
        .collect()
}

/// What the last action did ("Saved", "Duplicated as …"), for screen readers too.
fn saved_note(note: RwSignal<Option<String>>) -> impl IntoView {
    view! {
        {move || {
            note.get().map(|message| {
                view! {
                    <p class="ok" data-testid="message-note" role="status">
                        {message}
                    </p>
                }
                    .into_any()
            })
        }}
    }
}

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
    // The signs: which ones use a message, and what colours the preview has.
    let signs = Live::new();
    signs.connect();
    signs.watch(Some("signs".into()));
    // Viewers read the library; they are offered no writes (the server refuses them).
    let can_edit = use_auth().can_edit();

    // The message being edited: first the one in the URL (links from other
    // pages), then whatever is picked here.
    let query = use_query_map();
    let selected = RwSignal::new(None::<String>);
    // `true`: the editor is on a new, unsaved message.
    let creating = RwSignal::new(false);
    let draft = Draft::new();
    // What the editor last said happened ("Saved."), kept across the switch to a new id.
    let note = RwSignal::new(None::<String>);
    let problem = RwSignal::new(None::<Problem>);
    // The sign the user came from (`?sign=`): the preview takes its colours.
    let for_sign = RwSignal::new(None::<String>);
    let start_new = move || {
        draft.load(
            &Message {
                text: "Hello".into(),
                ..Message::default()
            },
            None,
        );
        creating.set(true);
        selected.set(None);
        note.set(None);
        problem.set(None);
        focus_soon("[data-testid=message-text]".into());
    };
    Effect::new(move |_| {
        let q = query.read();
        if let Some(sign) = q.get("sign").filter(|t| !t.is_empty()) {
            for_sign.set(Some(sign));
        }
        let wanted = q.get("id").filter(|t| !t.is_empty());
        if wanted.is_some() {
            selected.set(wanted);
        } else if q.get("new").is_some() && can_edit.get_untracked() {
            start_new();
        }
    });

    // Whether the editor is open: a memo, so picking another message (or a new one
    // saved, or a copy made) keeps the editor, and the keyboard focus in it.
    let editing = Memo::new(move |_| creating.get() || selected.with(Option::is_some));
    let items = move || {
        let on_signs = signs.records.with(|signs| {
            live.records.with(|records| {
                records
                    .keys()
                    .map(|id| used_by(id, signs).join(", "))
                    .collect::<Vec<_>>()
            })
        });
        live.records.with(|records| {
            records
                .iter()
                .zip(on_signs)
                .map(|((id, record), used)| {
                    let label = Message::from_json(&record.value)
                        .map(|m| message_label(&m))
                        .unwrap_or_else(|e| format!("(not a valid message: {e})"));
                    pack(&[id, &label, &used])
                })
                .collect::<Vec<_>>()
        })
    };

    view! {
        <Title text="Messages · Marquee" />
        <div class="toolbar">
            <h1>"Messages"</h1>
            <When when=move || can_edit.get()>
                <button class="primary" data-testid="message-new" on:click=handler(leptos::ev::click, move |_| start_new())>
                    "New message"
                </button>
            </When>
            <span class="spacer"></span>
            <LiveStatus live also=signs />
        </div>
        <div class="messages-grid">
            <section class="panel message-list">
                <ul>
                    {keyed_rows(
                        items,
                        move |key| {
                            let mut parts = unpack(&key).into_iter();
                            let (id, label, used) = (
                                parts.next().unwrap_or_default(),
                                parts.next().unwrap_or_default(),
                                parts.next().unwrap_or_default(),
                            );
                            let is_selected = {
                                let id = id.clone();
                                move || selected.get().as_deref() == Some(id.as_str())
                            };
                            let selected_class = is_selected.clone();
                            let pick = id.clone();
                            view! {
                                <li>
                                    <button
                                        class="message-pick"
                                        class:selected=move || selected_class()
                                        aria-current=move || is_selected().then(|| "true".to_string())
                                        data-testid="message-item"
                                        data-id=id.clone()
                                        on:click=handler(leptos::ev::click, move |_| {
                                            creating.set(false);
                                            note.set(None);
                                            problem.set(None);
                                            selected.set(Some(pick.clone()));
                                        })
                                    >
                                        <span class="label">{label}</span>
                                        <span class="muted small">{id.clone()}</span>
                                        {(!used.is_empty())
                                            .then(|| {
                                                view! {
                                                    <span class="badge" data-testid="used-on">
                                                        {format!("on {used}")}
                                                    </span>
                                                }
                                            })}
                                    </button>
                                </li>
                            }
                                .into_any()
                        },
                    )}
                </ul>
                <When when=move || live.records.with(|r| r.is_empty())>
                    <p class="muted empty">
                        {move || String::from({
                            if !live.synced.get() {
                                "Loading messages…"
                            } else if can_edit.get() {
                                "No messages yet: press “New message” to write the first."
                            } else {
                                "No messages yet."
                            }
                        })}
                    </p>
                </When>
            </section>
            {move || {
                if editing.get() {
                    view! {
                        <MessageEditor
                            live
                            signs
                            draft
                            selected
                            creating
                            can_edit
                            note
                            error=problem
                            for_sign
                        />
                    }
                        .into_any()
                } else {
                    view! {
                        <section class="panel empty-state">
                            {saved_note(note)}
                            <p>
                                {move || String::from({
                                    if can_edit.get() {
                                        "Pick a message to edit it, or write a new one."
                                    } else {
                                        "Pick a message to see it."
                                    }
                                })}
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
    signs: Live,
    draft: Draft,
    selected: RwSignal<Option<String>>,
    creating: RwSignal<bool>,
    can_edit: Memo<bool>,
    note: RwSignal<Option<String>>,
    error: RwSignal<Option<Problem>>,
    for_sign: RwSignal<Option<String>>,
) -> impl IntoView {
    let busy = RwSignal::new(false);
    let navigate = use_navigate();
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
                Err(e) => error.set(Some(Problem::general(format!(
                    "The stored message is not valid: {e}"
                )))),
            }
        }
        id
    });
    // Edited here while someone else saved another version: theirs, to compare.
    let theirs = Memo::new(move |_| {
        if creating.get() || !draft.dirty.get() {
            return None;
        }
        let record = current.get()?;
        if record.version == draft.base.get() {
            return None;
        }
        Message::from_json(&record.value)
            .ok()
            .map(|m| (m, record.version))
    });
    let checked = Memo::new(move |_| Message::from_json(&draft.to_json()));
    // The fields' problems, shown under each field as it is typed.
    let live_problem = RwSignal::new(None::<Problem>);
    Effect::new(move |_| {
        live_problem.set(checked.with(|c| c.as_ref().err().map(Problem::from_model)));
    });
    // The preview shows the last valid state of the fields.
    let preview = RwSignal::new(None::<Message>);
    Effect::new(move |_| {
        if let Ok(m) = checked.get() {
            preview.set(Some(m));
        }
    });
    // The preview is drawn as the chosen sign draws it: its size and colours.
    let sign_choices = move || {
        signs.records.with(|records| {
            records
                .iter()
                .filter_map(|(id, record)| {
                    let sign = Sign::from_json(&record.value).ok()?;
                    let text = format!(
                        "{} ({})",
                        sign_title(Some(&sign), id),
                        sign.color_depth.words().to_ascii_lowercase(),
                    );
                    Some(pack(&[id, &text]))
                })
                .collect::<Vec<_>>()
        })
    };
    let target = Memo::new(move |_| {
        let id = for_sign.get()?;
        signs.records.with(|records| {
            let sign = Sign::from_json(&records.get(&id)?.value).ok()?;
            Some((id.clone(), sign))
        })
    });
    let preview_sign = Signal::derive(move || {
        let sign = target.get().map(|(_, s)| s);
        Some(Sign {
            name: "preview".into(),
            brightness: 100,
            shows: Shows::Nothing,
            ..sign.unwrap_or(Sign {
                color_depth: ColorDepth::Rgb,
                ..Sign::default()
            })
        })
    });
    let preview_showing = Signal::derive(move || {
        preview.get().map(|message| Showing {
            id: selected.get().unwrap_or_default(),
            message,
            round: 0,
        })
    });
    // A one-colour sign shows every colour as its own: say so.
    let depth_note = move || {
        let (id, sign) = target.get()?;
        (sign.color_depth != ColorDepth::Rgb).then(|| {
            let name = sign_title(Some(&sign), &id);
            format!(
                "{name} can only show {}: this message will look like the preview there, \
                 whatever its colours.",
                sign.color_depth
                    .words()
                    .to_ascii_lowercase()
                    .replace(" only", "")
            )
        })
    };
    let glyph_warning = move || {
        let font = Font::from_name(&draft.font.get()).unwrap_or_default();
        let missing = draft.text.with(|t| undrawable_chars(t, font));
        (!missing.is_empty()).then(|| {
            let list = missing
                .iter()
                .map(|c| format!("“{c}”"))
                .collect::<Vec<_>>()
                .join(", ");
            format!(
                "The sign's letters do not include {list}: each will show as an empty box. \
                 Plain letters, digits and European accents show."
            )
        })
    };
    let used = Memo::new(move |_| {
        let id = selected.get()?;
        let names = signs.records.with(|signs| used_by(&id, signs));
        (!names.is_empty()).then(|| names.join(", "))
    });

    let write = move |id: Option<String>, value: Value, if_match: Option<u64>, said: String| {
        note.set(None);
        let write = Write::Put {
            id,
            value,
            if_match,
        };
        send_checked(live, write, busy, error, move |ack| {
            draft.dirty.try_set(false);
            draft.base.try_set(ack.version);
            creating.try_set(false);
            if let Some(id) = ack.id {
                selected.try_set(Some(id));
            }
            note.try_set(Some(said));
        });
    };
    // Saving waits for the fields to be valid; the cursor goes to the first bad one.
    let valid_draft = move || -> Option<Value> {
        let value = draft.to_json();
        if Message::from_json(&value).is_err() {
            focus_soon("[data-testid=message-editor] [aria-invalid=true]".into());
            return None;
        }
        Some(value)
    };
    let save_with = move |if_match: Option<u64>| {
        if busy.get_untracked() {
            return;
        }
        let Some(value) = valid_draft() else { return };
        let is_new = creating.get_untracked();
        let id = if is_new {
            None
        } else {
            selected.get_untracked()
        };
        let said = if is_new {
            "Created: it is in the list, ready to show on a sign."
        } else {
            "Saved: every sign showing it shows the change now."
        };
        write(id, value, if_match, said.to_string());
    };
    let save = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let if_match = if creating.get_untracked() {
            None
        } else {
            draft.base.get_untracked()
        };
        save_with(if_match);
    };
    let keep_mine = move |_| {
        // Saved over the other version, knowingly: held to the version seen.
        let version = theirs.get_untracked().and_then(|(_, v)| v);
        save_with(version);
    };
    let take_theirs = move |_| {
        if let Some((message, version)) = theirs.get_untracked() {
            draft.load(&message, version);
            error.set(None);
            note.set(Some(
                "Took the other version; your changes were dropped.".into(),
            ));
        }
    };
    let duplicate = move |_| {
        let Some(value) = valid_draft() else { return };
        let original = selected.get_untracked().unwrap_or_else(|| "message".into());
        let copy = live
            .records
            .with_untracked(|r| copy_id(&original, |id| r.contains_key(id)));
        let said = format!(
            "Duplicated as “{copy}”: you are now editing the copy; “{original}” is unchanged."
        );
        write(Some(copy), value, None, said);
    };
    let delete = Callback::new(move |()| {
        if let Some(id) = selected.get_untracked() {
            let write = Write::Delete { id, if_match: None };
            send_checked(live, write, busy, error, move |_| {
                selected.try_set(None);
                note.try_set(Some("Deleted.".into()));
                // The editor closes: the cursor goes on to writing another.
                focus_soon("[data-testid=message-new]".into());
            });
        }
    });
    let show_on_sign = move |_| {
        let (Some(message), Some((sign, _))) = (selected.get_untracked(), target.get_untracked())
        else {
            return;
        };
        let write = Write::Patch {
            id: sign.clone(),
            value: shows_patch(&Shows::Message(message)),
            if_match: None,
        };
        let navigate = navigate.clone();
        send_checked(signs, write, busy, error, move |_| {
            navigate(&format!("/signs/{sign}"), Default::default());
        });
    };
    let touched = Callback::new(move |()| {
        draft.dirty.set(true);
        error.set(None);
        note.set(None);
    });
    let effects: Vec<&'static str> = TextEffect::ALL.iter().map(|e| e.as_str()).collect();
    let aligns: Vec<&'static str> = Align::ALL.iter().map(|e| e.as_str()).collect();
    let fonts: Vec<&'static str> = Font::ALL.iter().map(|e| e.as_str()).collect();

    // Parts built apart from the page: one view this big overflows the compiler's type depth.
    let preview_part = view! {
            <div class="preview">
                <LedSign
                    sign=preview_sign
                    showing=preview_showing
                    pitch=6.0
                    label="Preview"
                    testid="message-preview"
                />
                <label class="field inline preview-on">
                    <span>"Preview on"</span>
                    <select
                        data-testid="preview-sign"
                        prop:value=move || for_sign.get().unwrap_or_default()
                        on:change=handler(leptos::ev::change, move |ev| {
                            let id = event_target_value(&ev);
                            for_sign.set((!id.is_empty()).then_some(id));
                        })
                    >
                        <option value="" selected=move || for_sign.get().is_none()>
                            "A full-colour sign"
                        </option>
                        {keyed_rows(
                            sign_choices,
                            move |key| {
                                let mut parts = unpack(&key).into_iter();
                                let value = parts.next().unwrap_or_default();
                                let text = parts.next().unwrap_or_default();
                                view! {
                                    <option
                                        value=value.clone()
                                        selected=move || for_sign.get().as_deref() == Some(value.as_str())
                                    >
                                        {text}
                                    </option>
                                }
                                    .into_any()
                            },
                        )}
                    </select>
                </label>
                {move || {
                    depth_note()
                        .map(|words| {
                            view! { <p class="note" data-testid="depth-note">{words}</p> }.into_any()
                        })
                }}
            </div>
    }
    .into_any();
    let field_rows = view! {
                <div class="field-row">
                    <label class="field">
                        <span>"Colour"</span>
                        <input
                            type="color"
                            data-testid="message-color"
                            disabled=move || draft.rainbow.get()
                            prop:value=move || draft.color.get()
                            on:input=handler(leptos::ev::input, move |ev| {
                                draft.color.set(event_target_value(&ev));
                                touched.run(());
                            })
                        />
                    </label>
                    <label class="field check">
                        <input
                            type="checkbox"
                            data-testid="message-rainbow"
                            prop:checked=move || draft.rainbow.get()
                            on:change=handler(leptos::ev::change, move |ev| {
                                draft.rainbow.set(event_target_checked(&ev));
                                touched.run(());
                            })
                        />
                        <span>"Rainbow"</span>
                    </label>
                    <label class="field">
                        <span>"Background"</span>
                        <input
                            type="color"
                            data-testid="message-background"
                            prop:value=move || draft.background.get()
                            on:input=handler(leptos::ev::input, move |ev| {
                                draft.background.set(event_target_value(&ev));
                                touched.run(());
                            })
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
                        checked=("speed", live_problem)
                    />
                    <NumberField
                        label="Duration (s)"
                        testid="message-duration"
                        min=MIN_DURATION
                        max=MAX_DURATION
                        value=draft.duration
                        edited=touched
                        checked=("duration", live_problem)
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
    }
    .into_any();
    view! {
        <section class="panel message-editor" data-testid="message-editor">
            <div class="panel-head">
                <h2 data-testid="editing">
                    {move || {
                        if creating.get() {
                            "New message".to_string()
                        } else {
                            format!("Editing “{}”", selected.get().unwrap_or_default())
                        }
                    }}
                </h2>
                <span class="muted">
                    {move || draft.base.get().map(|v| format!("version {v}")).unwrap_or_default()}
                </span>
            </div>
            {preview_part}
            <form class="message-form" novalidate=true on:submit=handler(leptos::ev::submit, save)>
                // A viewer sees the fields, greyed: one `disabled` covers them all.
                <fieldset class="plain" disabled=move || !can_edit.get()>
                <label class="field">
                    <span>"Text"</span>
                    <textarea
                        data-testid="message-text"
                        rows="2"
                        aria-invalid=marks(live_problem, "text")
                        prop:value=move || draft.text.get()
                        on:input=handler(leptos::ev::input, move |ev| {
                            draft.text.set(event_target_value(&ev));
                            touched.run(());
                        })
                    ></textarea>
                    <FieldProblem problem=live_problem field="text" />
                    {move || {
                        glyph_warning()
                            .map(|words| {
                                view! {
                                    <span class="warning field-error" data-testid="glyph-warning" role="status">
                                        {words}
                                    </span>
                                }
                                    .into_any()
                            })
                    }}
                </label>
                {field_rows}
                <FormProblem problem=live_problem place="message" shown=crate::sign::MESSAGE_FIELDS />
                <FormProblem problem=error place="message" shown=&[] />
                {move || {
                    theirs
                        .get()
                        .map(|(other, _)| {
                            let mine = Message::from_json(&draft.to_json()).ok();
                            let rows = mine
                                .map(|mine| differences(&mine, &other))
                                .unwrap_or_default()
                                .into_iter()
                                .map(|(what, mine, theirs)| {
                                    view! {
                                        <tr>
                                            <th scope="row">{what}</th>
                                            <td data-testid="conflict-mine">{mine}</td>
                                            <td data-testid="conflict-theirs">{theirs}</td>
                                        </tr>
                                    }
                                })
                                .collect_view()
                                .into_any();
                            view! {
                                <div class="conflict" data-testid="conflict" role="alert">
                                    <p>
                                        "Someone changed this message while you were editing it. "
                                        "Which version should it keep?"
                                    </p>
                                    <table>
                                        <thead>
                                            <tr>
                                                <th></th>
                                                <th>"Yours"</th>
                                                <th>"The other"</th>
                                            </tr>
                                        </thead>
                                        <tbody>{rows}</tbody>
                                    </table>
                                    <div class="buttons">
                                        <button
                                            type="button"
                                            class="primary"
                                            data-testid="keep-mine"
                                            on:click=handler(leptos::ev::click, keep_mine)
                                        >
                                            "Keep mine"
                                        </button>
                                        <button
                                            type="button"
                                            data-testid="take-theirs"
                                            on:click=handler(leptos::ev::click, take_theirs)
                                        >
                                            "Take the other"
                                        </button>
                                    </div>
                                </div>
                            }
                            .into_any()
                        })
                }}
                {saved_note(note)}
                <When when=move || {
                    !creating.get() && selected.get().is_some() && target.get().is_some()
                }>
                    <button
                        type="button"
                        class="primary"
                        data-testid="show-on-sign"
                        on:click=handler(leptos::ev::click, show_on_sign.clone())
                    >
                        {move || {
                            target
                                .get()
                                .map(|(id, sign)| {
                                    format!("Show it on {} now", sign_title(Some(&sign), &id))
                                })
                        }}
                    </button>
                </When>
                {move || {
                    used.get()
                        .map(|names| {
                            view! {
                                <p class="muted" data-testid="used-by">
                                    {format!("Used by {names}. Deleting it leaves them without it.")}
                                </p>
                            }
                                .into_any()
                        })
                }}
                </fieldset>
                <When when=move || can_edit.get()>
                <div class="buttons">
                    <button
                        class="primary"
                        type="submit"
                        data-testid="message-save"
                        // Not disabled while saving: a disabled button loses the keyboard focus.
                        aria-disabled=move || busy.get().then(|| "true".to_string())
                        disabled=move || theirs.with(Option::is_some)
                    >
                        {move || String::from(if creating.get() { "Create" } else { "Save" })}
                    </button>
                    <When when=move || !creating.get()>
                        <button type="button" data-testid="message-duplicate" on:click=handler(leptos::ev::click, duplicate)>
                            "Duplicate"
                        </button>
                        <DeleteButton busy testid="message-delete" on_confirm=delete />
                    </When>
                </div>
                </When>
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
                on:change=handler(leptos::ev::change, move |ev| {
                    value.set(event_target_value(&ev));
                    edited.run(());
                })
            >
                {options}
            </select>
        </label>
    }
    .into_any()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_using_a_message_are_named_with_how() {
        let mut signs = BTreeMap::new();
        signs.insert(
            "lobby".into(),
            Record::loaded(json!({"name": "Lobby", "shows": {"message": "m"}})),
        );
        signs.insert(
            "hall".into(),
            Record::loaded(json!({"shows": {"playlist": [{"message": "x"}, {"message": "m"}]}})),
        );
        signs.insert(
            "door".into(),
            Record::loaded(json!({"shows": {"message": "x"}})),
        );
        assert_eq!(
            used_by("m", &signs),
            vec!["hall (in its playlist)", "Lobby (on it now)"]
        );
        assert!(used_by("nobody", &signs).is_empty());
    }

    #[test]
    fn a_copy_gets_the_first_free_id() {
        assert_eq!(copy_id("hello", |_| false), "hello-copy");
        let taken = ["hello-copy", "hello-copy-2"];
        assert_eq!(copy_id("hello", |id| taken.contains(&id)), "hello-copy-3");
    }

    #[test]
    fn a_conflict_lists_only_what_differs() {
        let mine = Message {
            text: "Mine".into(),
            ..Message::default()
        };
        let theirs = Message {
            text: "Theirs".into(),
            speed: 40,
            ..Message::default()
        };
        let diff = differences(&mine, &theirs);
        assert_eq!(
            diff,
            vec![
                ("Text", "Mine".to_string(), "Theirs".to_string()),
                ("Speed", "20".to_string(), "40".to_string()),
            ]
        );
        assert!(differences(&mine, &mine).is_empty());
    }
}
