//! `/signs/{id}`: one sign, large and animated, with its brightness, what it
//! shows (one message or a playlist) and the message library beside it.
//!
//! Drag and drop: a message onto the sign shows it now; into the playlist
//! appends (or, on a row, goes before or after it, as the marker shows);
//! within the playlist reorders; out of it (onto the library or the trash)
//! removes. Every action also has a button, so none needs a mouse or a drag
//! (phones), and keyboard focus stays on the row acted on. The editor and its
//! rows are built once, so a sign that changes (a playing playlist) never
//! drops what the user is typing or dragging. Below: the devices that mirror it.

use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::components::A;
use leptos_router::hooks::use_params_map;
use serde_json::{Value, json};

use super::common::{
    FormProblem, LiveStatus, Problem, focus_soon, message_label, read_message, read_sign,
    send_checked, showing, sign_title,
};
use super::common::{When, handler};
use super::common::{keyed_rows, pack, unpack};
use super::devices::SignDevices;
use super::led::LedSign;
use crate::auth::use_auth;
use crate::live::{Live, Write};
use crate::sign::{MAX_DURATION, MIN_DURATION, Playlist, PlaylistItem, Shows, Sign};

/// The merge patch that makes `shows` exactly this (RFC 7396 merges objects,
/// so keys of the other form are removed explicitly with `null`).
pub fn shows_patch(shows: &Shows) -> Value {
    let shows = match shows {
        Shows::Nothing => Value::Null,
        Shows::Message(id) => json!({"message": id, "playlist": null, "position": null}),
        Shows::Playlist(playlist) => json!({
            "message": null,
            "playlist": playlist.items,
            "position": playlist.position,
        }),
    };
    json!({ "shows": shows })
}

/// Inserts `item` before index `at` (or at the end); the item playing now stays current.
pub fn insert_item(playlist: &mut Playlist, at: usize, item: PlaylistItem) {
    let at = at.min(playlist.items.len());
    let was_empty = playlist.items.is_empty();
    playlist.items.insert(at, item);
    if !was_empty && at <= playlist.position {
        playlist.position += 1;
    }
}

/// Moves the item at `from` to just before the item now at `to` (`to` = length: the end).
pub fn move_item(playlist: &mut Playlist, from: usize, to: usize) {
    let len = playlist.items.len();
    if from >= len || to > len || to == from || to == from + 1 {
        return;
    }
    let item = playlist.items.remove(from);
    let dest = if to > from { to - 1 } else { to };
    playlist.items.insert(dest, item);
    let current = playlist.position;
    playlist.position = if current == from {
        dest
    } else {
        let after_remove = current - usize::from(from < current);
        after_remove + usize::from(dest <= after_remove)
    };
}

/// Removes the item at `index`; if it was playing, the next one comes up.
pub fn remove_item(playlist: &mut Playlist, index: usize) {
    if index >= playlist.items.len() {
        return;
    }
    playlist.items.remove(index);
    if index < playlist.position {
        playlist.position -= 1;
    }
    if playlist.position >= playlist.items.len() {
        playlist.position = 0;
    }
}

/// A playlist item's duration as typed: empty means the message's own.
pub fn item_duration(text: &str) -> Result<Option<u32>, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    text.parse::<u32>()
        .ok()
        .filter(|s| (MIN_DURATION..=MAX_DURATION).contains(s))
        .map(Some)
        .ok_or_else(|| {
            format!(
                "Seconds must be a whole number from {MIN_DURATION} to {MAX_DURATION} \
                 (or empty for the message's own)."
            )
        })
}

/// A playlist row's identity across changes to the sign: its message, and which
/// of that message's appearances in the list it is (a message may be in twice).
pub type RowKey = (String, usize);

/// A row's identity as the key of its row in the list.
fn row_key_text((message, n): &RowKey) -> String {
    pack(&[&n.to_string(), message])
}

/// The row's identity from its key.
fn row_key_of(key: &str) -> RowKey {
    let mut parts = unpack(key).into_iter();
    let n = parts.next().and_then(|n| n.parse().ok()).unwrap_or(0);
    (parts.next().unwrap_or_default(), n)
}

/// The rows' identities, in the list's order.
pub fn row_keys(items: &[PlaylistItem]) -> Vec<RowKey> {
    let mut seen = std::collections::HashMap::<&str, usize>::new();
    items
        .iter()
        .map(|item| {
            let n = seen.entry(item.message.as_str()).or_insert(0);
            *n += 1;
            (item.message.clone(), *n - 1)
        })
        .collect()
}

/// What is being dragged on the page.
#[derive(Clone, Debug, PartialEq)]
enum Drag {
    /// A message from the library.
    Library(String),
    /// A playlist row (by identity: the list may change during the drag).
    Item(RowKey),
}

/// Where a drag hovers, for highlighting.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Zone {
    Stage,
    /// The playlist outside its rows: the end of the list.
    Playlist,
    /// Just before the row at this index (the row count: the end).
    At(usize),
    Library,
    Trash,
}

/// A button of a playlist row that keyboard focus can return to.
#[derive(Clone, Copy, Debug, PartialEq)]
enum RowButton {
    Up,
    Down,
    Play,
    Remove,
}

/// Where keyboard focus goes once the sign has changed: this row's button,
/// when the row has reached `at` (moving a row's element drops its focus).
#[derive(Clone, Debug, PartialEq)]
struct FocusRequest {
    row: RowKey,
    at: usize,
    button: RowButton,
}

/// What the sign page can show, without the sign's contents: the editor is
/// built once per sign, not again at every change the sign makes.
#[derive(Clone, Debug, PartialEq)]
enum PageState {
    Loading,
    Missing,
    Invalid(String),
    Valid,
}

#[component]
pub fn SignPage() -> impl IntoView {
    let params = use_params_map();
    let id = Memo::new(move |_| params.read().get("id").unwrap_or_default());

    let signs = Live::new();
    signs.connect();
    signs.watch(Some("signs".into()));
    let messages = Live::new();
    messages.connect();
    messages.watch(Some("messages".into()));

    let sign = Memo::new(move |_| signs.records.with(|r| read_sign(r, &id.get())));
    let valid = Memo::new(move |_| sign.get().and_then(Result::ok));
    let state = Memo::new(move |_| match sign.get() {
        None if signs.synced.get() => PageState::Missing,
        None => PageState::Loading,
        Some(Err(problem)) => PageState::Invalid(problem),
        Some(Ok(_)) => PageState::Valid,
    });
    let name = move || valid.with(|s| sign_title(s.as_ref(), &id.get()));

    view! {
        <Title text=move || format!("{} · Marquee", name()) />
        <div class="sign-page">
            <div class="toolbar">
                <A href="/" attr:class="back">
                    "← Signs"
                </A>
                <h1 data-testid="sign-name">{move || name()}</h1>
                <span class="muted">
                    {move || {
                        valid
                            .get()
                            .map(|s| {
                                format!(
                                    "{} × {} LEDs, {}",
                                    s.width,
                                    s.height,
                                    s.color_depth.words().to_ascii_lowercase(),
                                )
                            })
                            .unwrap_or_default()
                    }}
                </span>
                <span class="spacer"></span>
                <LiveStatus live=signs also=messages />
            </div>
            {move || match state.get() {
                PageState::Missing => {
                    view! {
                        <div class="panel empty-state">
                            <p>"There is no sign " <code>{id.get()}</code> "."</p>
                            <A href="/">"All signs"</A>
                        </div>
                    }
                        .into_any()
                }
                PageState::Loading => view! { <p class="muted">"Loading the sign…"</p> }.into_any(),
                PageState::Invalid(problem) => {
                    view! {
                        <p class="error" data-testid="error" data-for="sign-record">
                            {format!("This sign's record is not valid: {problem}")}
                        </p>
                    }
                        .into_any()
                }
                PageState::Valid => view! { <SignEditor id valid signs messages /> }.into_any(),
            }}
        </div>
    }
    .into_any()
}

/// Everything a playlist row needs from the editor.
#[derive(Clone, Copy)]
struct Rows {
    keys: Memo<Vec<RowKey>>,
    valid: Memo<Option<Sign>>,
    messages: Live,
    can_edit: Memo<bool>,
    drag: RwSignal<Option<Drag>>,
    over: RwSignal<Option<Zone>>,
    focus: RwSignal<Option<FocusRequest>>,
    set_shows: Callback<Shows>,
}

impl Rows {
    fn playlist_untracked(self) -> Option<Playlist> {
        match self.valid.get_untracked().map(|s| s.shows) {
            Some(Shows::Playlist(p)) => Some(p),
            _ => None,
        }
    }

    fn index_of(self, row: &RowKey) -> Option<usize> {
        self.keys.get_untracked().iter().position(|k| k == row)
    }

    fn len(self) -> usize {
        self.keys.with_untracked(Vec::len)
    }

    /// Moves the row at `from` to before `to`, keeping keyboard focus on it.
    fn move_row(self, from: usize, to: usize, button: RowButton) {
        let Some(mut list) = self.playlist_untracked() else {
            return;
        };
        let keys = row_keys(&list.items);
        move_item(&mut list, from, to);
        let moved = row_keys(&list.items);
        if let Some(row) = keys.get(from) {
            let at = moved.iter().position(|k| k == row).unwrap_or(from);
            // At the top "Up" is disabled (and cannot hold focus): "Down" then.
            let button = match button {
                RowButton::Up if at == 0 => RowButton::Down,
                RowButton::Down if at + 1 >= moved.len() => RowButton::Up,
                other => other,
            };
            self.focus.set(Some(FocusRequest {
                row: row.clone(),
                at,
                button,
            }));
        }
        self.set_shows.run(Shows::Playlist(list));
    }

    /// Removes the row at `index`; focus goes to the row that takes its place.
    fn remove_row(self, index: usize) {
        let Some(mut list) = self.playlist_untracked() else {
            return;
        };
        remove_item(&mut list, index);
        let left = row_keys(&list.items);
        let at = index.min(left.len().saturating_sub(1));
        match left.get(at) {
            Some(row) => self.focus.set(Some(FocusRequest {
                row: row.clone(),
                at,
                button: RowButton::Remove,
            })),
            // The list is empty: on to the library, to add something else.
            None => focus_soon("[data-testid=add-to-playlist]".into()),
        }
        self.set_shows.run(Shows::Playlist(list));
    }
}

#[component]
fn SignEditor(
    id: Memo<String>,
    valid: Memo<Option<Sign>>,
    signs: Live,
    messages: Live,
) -> impl IntoView {
    // Viewers watch: nothing to drag, no buttons that write (the server refuses them).
    let can_edit = use_auth().can_edit();
    let drag = RwSignal::new(None::<Drag>);
    let over = RwSignal::new(None::<Zone>);
    let error = RwSignal::new(None::<Problem>);
    let busy = RwSignal::new(false);
    let focus = RwSignal::new(None::<FocusRequest>);
    // The last playlist seen, so switching to one message and back keeps it.
    let remembered = StoredValue::new(None::<Playlist>);
    Effect::new(move |_| {
        if let Some(Shows::Playlist(p)) = valid.get().map(|s| s.shows) {
            remembered.set_value(Some(p));
        }
    });

    let sign_signal = Signal::derive(move || valid.get());
    let shown = Signal::derive(move || {
        let sign = valid.get()?;
        messages.records.with(|r| showing(&sign, r))
    });
    // The message on the sign now, for the library's marker.
    let on_now = Memo::new(move |_| {
        valid.with(|s| {
            s.as_ref()
                .and_then(|s| s.shows.current_message().map(str::to_string))
        })
    });

    let patch = move |value: Value| {
        let write = Write::Patch {
            id: id.get_untracked(),
            value,
            if_match: None,
        };
        send_checked(signs, write, busy, error, |_| {});
    };
    let set_shows = Callback::new(move |shows: Shows| patch(shows_patch(&shows)));
    let playlist = move || match valid.get_untracked().map(|s| s.shows) {
        Some(Shows::Playlist(p)) => Some(p),
        _ => None,
    };
    let show_now = move |message: String| set_shows.run(Shows::Message(message));
    let add_at = move |message: String, at: Option<usize>| {
        // Adding to the playlist plays the playlist.
        let mut list = playlist().unwrap_or_default();
        let at = at.unwrap_or(list.items.len());
        insert_item(
            &mut list,
            at,
            PlaylistItem {
                message,
                duration: None,
            },
        );
        set_shows.run(Shows::Playlist(list));
    };
    let keys = Memo::new(move |_| match valid.get().map(|s| s.shows) {
        Some(Shows::Playlist(p)) => row_keys(&p.items),
        _ => Vec::new(),
    });
    let play_item = move |index: usize| {
        if let Some(mut list) = playlist()
            && index < list.items.len()
        {
            list.position = index;
            set_shows.run(Shows::Playlist(list));
        }
    };

    let rows = Rows {
        keys,
        valid,
        messages,
        can_edit,
        drag,
        over,
        focus,
        set_shows,
    };
    // Drop handling shared by the zones: what was dragged, where it went.
    let dropped = Callback::new(move |zone: Zone| {
        over.set(None);
        let Some(what) = drag.get_untracked() else {
            return;
        };
        drag.set(None);
        if !can_edit.get_untracked() {
            return;
        }
        let len = rows.len();
        match (what, zone) {
            (Drag::Library(m), Zone::Stage) => show_now(m),
            (Drag::Library(m), Zone::Playlist) => add_at(m, None),
            (Drag::Library(m), Zone::At(at)) => add_at(m, Some(at)),
            (Drag::Library(_), Zone::Library | Zone::Trash) => {}
            (Drag::Item(row), zone) => {
                let Some(from) = rows.index_of(&row) else {
                    return;
                };
                match zone {
                    Zone::Stage => play_item(from),
                    Zone::Playlist => rows.move_row(from, len, RowButton::Up),
                    Zone::At(at) => rows.move_row(from, at, RowButton::Up),
                    Zone::Library | Zone::Trash => rows.remove_row(from),
                }
            }
        }
    });
    let zone_events = move |zone: Zone| {
        (
            move |ev: leptos::ev::DragEvent| {
                if drag.get_untracked().is_some() {
                    ev.prevent_default();
                    ev.stop_propagation();
                    if over.get_untracked() != Some(zone) {
                        over.set(Some(zone));
                    }
                }
            },
            move |ev: leptos::ev::DragEvent| {
                ev.prevent_default();
                ev.stop_propagation();
                dropped.run(zone);
            },
        )
    };
    let (stage_over, stage_drop) = zone_events(Zone::Stage);
    let (list_over, list_drop) = zone_events(Zone::Playlist);
    let (lib_over, lib_drop) = zone_events(Zone::Library);
    let (trash_over, trash_drop) = zone_events(Zone::Trash);
    let is_over = move |zone: Zone| over.get() == Some(zone);
    let dragging_item = move || matches!(drag.get(), Some(Drag::Item(_)));
    // A drop now would land at the end of the list: the marker shows there.
    let at_end = move || {
        let len = keys.with(Vec::len);
        matches!(over.get(), Some(Zone::Playlist)) || over.get() == Some(Zone::At(len))
    };

    // Brightness: follow the slider while it moves, write when it is let go.
    let brightness = RwSignal::new(None::<u8>);
    let shown_brightness = move || {
        brightness
            .get()
            .or_else(|| valid.get().map(|s| s.brightness))
            .unwrap_or(0)
    };
    let mode = move || match valid.get().map(|s| s.shows) {
        Some(Shows::Playlist(_)) => "playlist",
        Some(Shows::Message(_)) => "message",
        _ => "nothing",
    };
    let set_mode = move |wanted: &str| {
        let Some(sign) = valid.get_untracked() else {
            return;
        };
        match (wanted, sign.shows) {
            ("message", Shows::Playlist(p)) => {
                remembered.set_value(Some(p.clone()));
                match p.current() {
                    Some(item) => set_shows.run(Shows::Message(item.message.clone())),
                    None => set_shows.run(Shows::Nothing),
                }
            }
            ("playlist", Shows::Message(_) | Shows::Nothing) => {
                let list = remembered.get_value().unwrap_or_default();
                set_shows.run(Shows::Playlist(list));
            }
            _ => {}
        }
    };

    let library = move || {
        messages.records.with(|records| {
            records
                .iter()
                .map(|(id, record)| {
                    let label = crate::sign::Message::from_json(&record.value)
                        .map(|m| message_label(&m))
                        .unwrap_or_else(|e| format!("(not a valid message: {e})"));
                    (id.clone(), label)
                })
                .collect::<Vec<_>>()
        })
    };
    let count = move || keys.with(Vec::len);
    let new_message = move || format!("/messages?new=1&sign={}", id.get());

    view! {
        // A drag over no zone clears the highlight. (The zones stop their dragover
        // here; dragleave is not used: it also fires on moving onto a zone's own
        // children, and a marker appearing under the pointer would flicker.)
        <div
            class="sign-grid"
            on:dragover=handler(leptos::ev::dragover, move |_| {
                if over.get_untracked().is_some() {
                    over.set(None);
                }
            })
        >
            <div class="sign-main">
                <div
                    class="stage drop-zone"
                    class:over=move || is_over(Zone::Stage)
                    data-testid="stage"
                    on:dragover=handler(leptos::ev::dragover, stage_over)
                    on:drop=handler(leptos::ev::drop, stage_drop)
                >
                    <LedSign
                        sign=sign_signal
                        showing=shown
                        pitch=14.0
                        label="The sign, as it shows now"
                        testid="sign-canvas"
                    />
                    <When when=move || can_edit.get()>
                        <p class="stage-hint muted drag-only">"Drop a message here to show it now."</p>
                    </When>
                </div>
                <FormProblem problem=error place="sign" shown=&[] />
                <fieldset class="panel controls" disabled=move || !can_edit.get()>
                    <label class="field inline">
                        <span>"Brightness"</span>
                        <input
                            type="range"
                            min="0"
                            max="100"
                            data-testid="brightness"
                            prop:value=move || shown_brightness().to_string()
                            on:input=handler(leptos::ev::input, move |ev| {
                                brightness.set(event_target_value(&ev).parse().ok());
                            })
                            on:change=handler(leptos::ev::change, move |ev| {
                                if let Ok(v) = event_target_value(&ev).parse::<u8>() {
                                    patch(json!({ "brightness": v }));
                                }
                                brightness.set(None);
                            })
                        />
                        <output>{move || format!("{}%", shown_brightness())}</output>
                    </label>
                    <fieldset class="mode" data-testid="mode" data-mode=move || String::from(mode())>
                        <legend>"Shows"</legend>
                        <label>
                            <input
                                type="radio"
                                name="mode"
                                value="message"
                                prop:checked=move || mode() == "message"
                                on:change=handler(leptos::ev::change, move |_| set_mode("message"))
                            />
                            "One message"
                        </label>
                        <label>
                            <input
                                type="radio"
                                name="mode"
                                value="playlist"
                                data-testid="mode-playlist"
                                prop:checked=move || mode() == "playlist"
                                on:change=handler(leptos::ev::change, move |_| set_mode("playlist"))
                            />
                            "Playlist"
                        </label>
                        <When when=move || mode() == "nothing">
                            <span class="muted">"Nothing yet"</span>
                        </When>
                    </fieldset>
                </fieldset>
                <section
                    class="panel playlist drop-zone"
                    class:over=move || is_over(Zone::Playlist)
                    class:inactive=move || mode() != "playlist"
                    data-testid="playlist"
                    on:dragover=handler(leptos::ev::dragover, list_over)
                    on:drop=handler(leptos::ev::drop, list_drop)
                >
                    <div class="panel-head">
                        <h2>"Playlist"</h2>
                        <span class="muted">
                            {move || match count() {
                                1 => "1 item".to_string(),
                                n => format!("{n} items"),
                            }}
                        </span>
                    </div>
                    <ol class="playlist-items" class:drop-end=move || at_end()>
                        {keyed_rows(
                            move || keys.with(|keys| keys.iter().map(row_key_text).collect()),
                            move |key| {
                                let row = row_key_of(&key);
                                view! { <PlaylistRow row rows dropped /> }.into_any()
                            },
                        )}
                    </ol>
                    <p
                        class="drop-marker"
                        class:hidden=move || !at_end()
                        data-testid="drop-marker-end"
                        aria-hidden="true"
                    >
                        "Drop to add at the end"
                    </p>
                    <When when=move || count() == 0>
                        <p class="muted empty">
                            {move || String::from({
                                if can_edit.get() {
                                    "Use “Add to playlist” on messages (or drag them here) to play them in turn."
                                } else {
                                    "The playlist is empty."
                                }
                            })}
                        </p>
                    </When>
                </section>
                <div
                    class="trash drop-zone drag-only"
                    class:hidden=move || !can_edit.get()
                    class:over=move || is_over(Zone::Trash)
                    class:armed=move || dragging_item()
                    data-testid="trash"
                    on:dragover=handler(leptos::ev::dragover, trash_over)
                    on:drop=handler(leptos::ev::drop, trash_drop)
                >
                    "Drop a playlist item here to remove it"
                </div>
                <SignDevices sign=id />
            </div>
            <aside
                class="panel library drop-zone"
                class:over=move || is_over(Zone::Library)
                data-testid="library"
                on:dragover=handler(leptos::ev::dragover, lib_over)
                on:drop=handler(leptos::ev::drop, lib_drop)
            >
                <div class="panel-head">
                    <h2>"Messages"</h2>
                    <When when=move || can_edit.get()>
                        <a href=move || new_message() data-testid="write-message">"Write a message"</a>
                    </When>
                    <A href="/messages">"All messages →"</A>
                </div>
                <ul class="library-items">
                    {keyed_rows(
                        move || {
                            library()
                                .iter()
                                .map(|(message, label)| pack(&[message, label]))
                                .collect()
                        },
                        move |key| {
                            let mut parts = unpack(&key).into_iter();
                            let message = parts.next().unwrap_or_default();
                            let label = parts.next().unwrap_or_default();
                            let edit = format!("/messages?id={message}");
                            let (m1, m2, m3, m4) = (
                                message.clone(),
                                message.clone(),
                                message.clone(),
                                message.clone(),
                            );
                            let is_on = move || on_now.with(|m| m.as_deref() == Some(m4.as_str()));
                            let on_class = is_on.clone();
                            view! {
                                <li
                                    class="library-item"
                                    class:on-now=move || on_class()
                                    draggable=move || can_edit.get().to_string()
                                    data-testid="library-item"
                                    data-message=message.clone()
                                    on:dragstart=handler(leptos::ev::dragstart, move |ev: leptos::ev::DragEvent| {
                                        set_drag_data(&ev, &m1);
                                        drag.set(Some(Drag::Library(m1.clone())));
                                    })
                                    on:dragend=handler(leptos::ev::dragend, move |_| {
                                        drag.set(None);
                                        over.set(None);
                                    })
                                >
                                    <span class="grip drag-only" aria-hidden="true">
                                        "⠿"
                                    </span>
                                    <span class="label">{label}</span>
                                    <When when=is_on.clone()>
                                        <span class="badge" data-testid="on-sign">"on the sign"</span>
                                    </When>
                                    <span class="item-buttons">
                                        <button
                                            data-testid="show-now"
                                            class:hidden=move || !can_edit.get()
                                            on:click=handler(leptos::ev::click, move |_| show_now(m2.clone()))
                                        >
                                            "Show now"
                                        </button>
                                        <button
                                            data-testid="add-to-playlist"
                                            class:hidden=move || !can_edit.get()
                                            on:click=handler(leptos::ev::click, move |_| add_at(m3.clone(), None))
                                        >
                                            "Add to playlist"
                                        </button>
                                        <a href=edit class="button">
                                            {move || String::from(if can_edit.get() { "Edit" } else { "View" })}
                                        </a>
                                    </span>
                                </li>
                            }
                                .into_any()
                        },
                    )}
                </ul>
                <When when=move || messages.records.with(|r| r.is_empty())>
                    <p class="muted empty" data-testid="library-empty">
                        {move || {
                            if !messages.synced.get() {
                                "Loading messages…".into_any()
                            } else if can_edit.get() {
                                view! {
                                    "No messages yet. "
                                    <a href=move || new_message()>"Write the first one"</a>
                                    ", then press “Show now” here to put it on the sign."
                                }
                                    .into_any()
                            } else {
                                "No messages yet.".into_any()
                            }
                        }}
                    </p>
                </When>
            </aside>
        </div>
    }
    .into_any()
}

/// One playlist row. It lives as long as its message stays in the list, so a
/// change to the sign never takes away a half-typed duration or a drag.
#[component]
fn PlaylistRow(row: RowKey, rows: Rows, dropped: Callback<Zone>) -> impl IntoView {
    let Rows {
        keys,
        valid,
        messages,
        can_edit,
        drag,
        over,
        focus,
        set_shows,
    } = rows;
    let index = {
        let row = row.clone();
        Memo::new(move |_| keys.with(|k| k.iter().position(|k| k == &row).unwrap_or(0)))
    };
    let item = Memo::new(move |_| {
        valid.with(|s| match s.as_ref().map(|s| &s.shows) {
            Some(Shows::Playlist(p)) => p.items.get(index.get()).cloned().map(|i| (i, p.position)),
            _ => None,
        })
    });
    let current = move || item.with(|i| i.as_ref().is_some_and(|(_, at)| *at == index.get()));
    let message_id = row.0.clone();
    let message = {
        let id = message_id.clone();
        Memo::new(move |_| messages.records.with(|r| read_message(r, &id)))
    };
    let label = {
        let id = message_id.clone();
        move || {
            message
                .with(|m| m.as_ref().map(message_label))
                .unwrap_or_else(|| format!("(the message {id} is gone)"))
        }
    };
    let hint = move || message.with(|m| m.as_ref().map(|m| m.duration.to_string()));

    // The seconds as typed. While the field has the cursor, changes to the sign
    // leave it alone; otherwise it follows the stored value.
    let seconds = RwSignal::new(String::new());
    let typing = RwSignal::new(false);
    let problem = RwSignal::new(None::<String>);
    Effect::new(move |_| {
        let stored = item.with(|i| i.as_ref().and_then(|(i, _)| i.duration));
        if !typing.get_untracked() {
            seconds.set(stored.map(|d| d.to_string()).unwrap_or_default());
        }
    });
    let save_seconds = move || match item_duration(&seconds.get_untracked()) {
        Ok(duration) => {
            problem.set(None);
            let stored = item.with_untracked(|i| i.as_ref().and_then(|(i, _)| i.duration));
            if stored == duration {
                return;
            }
            if let Some(mut list) = rows.playlist_untracked()
                && let Some(entry) = list.items.get_mut(index.get_untracked())
            {
                entry.duration = duration;
                set_shows.run(Shows::Playlist(list));
            }
        }
        Err(words) => problem.set(Some(words)),
    };

    // Buttons that keep keyboard focus after the row moves.
    let up = NodeRef::<leptos::html::Button>::new();
    let down = NodeRef::<leptos::html::Button>::new();
    let play = NodeRef::<leptos::html::Button>::new();
    let remove = NodeRef::<leptos::html::Button>::new();
    let li = NodeRef::<leptos::html::Li>::new();
    {
        let row = row.clone();
        Effect::new(move |_| {
            let Some(request) = focus.get() else { return };
            if request.row != row || index.get() != request.at {
                return;
            }
            focus.set(None);
            let target = match request.button {
                RowButton::Up => up,
                RowButton::Down => down,
                RowButton::Play => play,
                RowButton::Remove => remove,
            };
            request_animation_frame(move || {
                if let Some(button) = target.get_untracked() {
                    let _ = button.focus();
                }
            });
        });
    }

    // Where a drop on this row lands: before it, or after it when the pointer is
    // low on the row (the lower 40%: the middle still means "before", as before).
    let zone_at = move |ev: &leptos::ev::DragEvent| -> Zone {
        let i = index.get_untracked();
        #[cfg(feature = "hydrate")]
        if let Some(el) = li.get_untracked() {
            let rect = el.get_bounding_client_rect();
            if f64::from(ev.client_y()) > rect.top() + rect.height() * 0.6 {
                return Zone::At(i + 1);
            }
        }
        #[cfg(not(feature = "hydrate"))]
        let _ = ev;
        Zone::At(i)
    };
    // (Named: a `>` written inside `view!` would end the tag.)
    let is_last = move || index.get() + 1 >= keys.with(Vec::len);
    let drag_row = row.clone();
    let play_row = row.clone();
    let drop_before = move || over.get() == Some(Zone::At(index.get()));

    view! {
        <li
            node_ref=li
            class="playlist-item"
            class:current=move || current()
            class:drop-before=move || drop_before()
            draggable=move || can_edit.get().to_string()
            data-testid="playlist-item"
            data-message=message_id.clone()
            data-index=move || index.get().to_string()
            on:dragstart=handler(leptos::ev::dragstart, move |ev: leptos::ev::DragEvent| {
                set_drag_data(&ev, &drag_row.0);
                drag.set(Some(Drag::Item(drag_row.clone())));
            })
            on:dragend=handler(leptos::ev::dragend, move |_| {
                drag.set(None);
                over.set(None);
            })
            on:dragover=handler(leptos::ev::dragover, move |ev: leptos::ev::DragEvent| {
                if drag.get_untracked().is_some() {
                    ev.prevent_default();
                    ev.stop_propagation();
                    let zone = zone_at(&ev);
                    if over.get_untracked() != Some(zone) {
                        over.set(Some(zone));
                    }
                }
            })
            on:drop=handler(leptos::ev::drop, move |ev: leptos::ev::DragEvent| {
                ev.prevent_default();
                ev.stop_propagation();
                dropped.run(zone_at(&ev));
            })
        >
            <span class="grip drag-only" aria-hidden="true">
                "⠿"
            </span>
            <span class="label">{move || label()}</span>
            <label class="item-duration" title="Seconds on the sign; empty: the message's own">
                <input
                    type="number"
                    data-testid="playlist-duration"
                    aria-label="Seconds on the sign"
                    aria-invalid=move || problem.with(Option::is_some).then(|| "true".to_string())
                    disabled=move || !can_edit.get()
                    min=MIN_DURATION
                    max=MAX_DURATION
                    placeholder=move || hint()
                    prop:value=move || seconds.get()
                    on:focus=handler(leptos::ev::focus, move |_| typing.set(true))
                    on:input=handler(leptos::ev::input, move |ev| seconds.set(event_target_value(&ev)))
                    on:change=handler(leptos::ev::change, move |_| save_seconds())
                    on:blur=handler(leptos::ev::blur, move |_| typing.set(false))
                />
                "s"
            </label>
            <When when=current>
                <span class="badge">"on now"</span>
            </When>
            <span class="item-buttons" class:hidden=move || !can_edit.get()>
                <button
                    node_ref=up
                    title="Move up"
                    aria-label="Move up"
                    data-action="up"
                    disabled=move || index.get() == 0
                    on:click=handler(leptos::ev::click, move |_| {
                        let i = index.get_untracked();
                        rows.move_row(i, i.saturating_sub(1), RowButton::Up);
                    })
                >
                    "↑"
                </button>
                <button
                    node_ref=down
                    title="Move down"
                    aria-label="Move down"
                    data-action="down"
                    disabled=move || is_last()
                    on:click=handler(leptos::ev::click, move |_| {
                        let i = index.get_untracked();
                        rows.move_row(i, i + 2, RowButton::Down);
                    })
                >
                    "↓"
                </button>
                <button
                    node_ref=play
                    title="Play this item now"
                    data-action="play"
                    on:click=handler(leptos::ev::click, move |_| {
                        if let Some(mut list) = rows.playlist_untracked() {
                            let i = index.get_untracked();
                            if i < list.items.len() {
                                list.position = i;
                                focus.set(Some(FocusRequest {
                                    row: play_row.clone(),
                                    at: i,
                                    button: RowButton::Play,
                                }));
                                set_shows.run(Shows::Playlist(list));
                            }
                        }
                    })
                >
                    "Play"
                </button>
                <button
                    node_ref=remove
                    class="danger"
                    data-testid="playlist-remove"
                    data-action="remove"
                    on:click=handler(leptos::ev::click, move |_| rows.remove_row(index.get_untracked()))
                >
                    "Remove"
                </button>
            </span>
            {move || {
                problem
                    .get()
                    .map(|words| {
                        view! {
                            <span class="error field-error row-error" data-testid="error" data-for="seconds" role="alert">
                                {words}
                            </span>
                        }
                            .into_any()
                    })
            }}
        </li>
    }
    .into_any()
}

/// Some browsers start a drag only when it carries data.
fn set_drag_data(ev: &leptos::ev::DragEvent, text: &str) {
    #[cfg(feature = "hydrate")]
    if let Some(transfer) = ev.data_transfer() {
        let _ = transfer.set_data("text/plain", text);
        transfer.set_effect_allowed("move");
    }
    #[cfg(not(feature = "hydrate"))]
    let _ = (ev, text);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(ids: &[&str], position: usize) -> Playlist {
        Playlist {
            items: ids
                .iter()
                .map(|id| PlaylistItem {
                    message: id.to_string(),
                    duration: None,
                })
                .collect(),
            position,
        }
    }

    fn ids(p: &Playlist) -> Vec<&str> {
        p.items.iter().map(|i| i.message.as_str()).collect()
    }

    #[test]
    fn moves_keep_the_current_item_current() {
        let mut p = list(&["a", "b", "c"], 1);
        move_item(&mut p, 2, 0);
        assert_eq!((ids(&p), p.position), (vec!["c", "a", "b"], 2));
        move_item(&mut p, 2, 0);
        assert_eq!((ids(&p), p.position), (vec!["b", "c", "a"], 0));
        move_item(&mut p, 0, 3);
        assert_eq!((ids(&p), p.position), (vec!["c", "a", "b"], 2));
        // No-ops: onto itself, just after itself, out of range.
        move_item(&mut p, 1, 2);
        move_item(&mut p, 1, 1);
        move_item(&mut p, 9, 0);
        assert_eq!(ids(&p), vec!["c", "a", "b"]);
    }

    #[test]
    fn inserts_and_removes() {
        let mut p = Playlist::default();
        let item = |m: &str| PlaylistItem {
            message: m.into(),
            duration: None,
        };
        insert_item(&mut p, 0, item("a"));
        insert_item(&mut p, 9, item("b"));
        insert_item(&mut p, 0, item("c"));
        assert_eq!((ids(&p), p.position), (vec!["c", "a", "b"], 1));
        remove_item(&mut p, 1);
        assert_eq!((ids(&p), p.position), (vec!["c", "b"], 1));
        remove_item(&mut p, 1);
        assert_eq!((ids(&p), p.position), (vec!["c"], 0));
        remove_item(&mut p, 0);
        assert_eq!((ids(&p), p.position), (vec![], 0));
    }

    #[test]
    fn item_durations_are_seconds_in_range_or_empty() {
        assert_eq!(item_duration(" 5 "), Ok(Some(5)));
        assert_eq!(item_duration(""), Ok(None));
        for bad in ["0", "-1", "1.5", "x", "86401"] {
            assert!(
                item_duration(bad).unwrap_err().starts_with("Seconds must"),
                "{bad}"
            );
        }
    }

    #[test]
    fn rows_keep_their_identity_when_the_list_changes() {
        let mut p = list(&["a", "b", "a"], 0);
        let before = row_keys(&p.items);
        assert_eq!(before[2], ("a".to_string(), 1));
        p.position = 2;
        assert_eq!(row_keys(&p.items), before);
        move_item(&mut p, 1, 0);
        let after = row_keys(&p.items);
        assert_eq!(after[0], ("b".to_string(), 0));
        assert!(after.contains(&before[0]) && after.contains(&before[2]));
    }

    #[test]
    fn shows_patches_replace_the_other_form() {
        assert_eq!(
            shows_patch(&Shows::Message("m".into())),
            json!({"shows": {"message": "m", "playlist": null, "position": null}})
        );
        let patch = shows_patch(&Shows::Playlist(list(&["a"], 0)));
        assert_eq!(patch["shows"]["playlist"], json!([{"message": "a"}]));
        assert_eq!(patch["shows"]["message"], Value::Null);
        assert_eq!(shows_patch(&Shows::Nothing), json!({"shows": null}));
    }
}
