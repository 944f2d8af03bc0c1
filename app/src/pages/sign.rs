//! `/signs/{id}`: one sign, large and animated, with its brightness, what it
//! shows (one message or a playlist) and the message library beside it.
//!
//! Drag and drop: a message onto the sign shows it now; into the playlist
//! appends (or inserts before the item it is dropped on); within the playlist
//! reorders; out of it (onto the library or the trash) removes. Every action
//! also has a button, so none needs a mouse. Below: the devices that mirror it.

use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::components::A;
use leptos_router::hooks::use_params_map;
use serde_json::{Value, json};

use super::common::{
    ErrorNote, LiveStatus, message_label, read_message, read_sign, send, showing, sign_title,
};
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
                "duration: must be a whole number of seconds from {MIN_DURATION} to {MAX_DURATION}, \
                 or empty for the message's own"
            )
        })
}

/// What is being dragged on the page.
#[derive(Clone, Debug, PartialEq)]
enum Drag {
    /// A message from the library.
    Library(String),
    /// The playlist item at this index.
    Item(usize),
}

/// Where a drag hovers, for highlighting.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Zone {
    Stage,
    Playlist,
    Item(usize),
    Library,
    Trash,
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
    let name = move || valid.with(|s| sign_title(s.as_ref(), &id.get()));

    view! {
        <Title text=move || format!("{} · Marquee", name()) />
        <div class="sign-page">
            <div class="toolbar">
                <A href="/" attr:class="back">
                    "← Signs"
                </A>
                <h1 data-testid="sign-name">{name}</h1>
                <span class="muted">
                    {move || {
                        valid
                            .get()
                            .map(|s| format!("{} × {} LEDs", s.width, s.height))
                            .unwrap_or_default()
                    }}
                </span>
                <span class="spacer"></span>
                <LiveStatus live=signs also=messages />
            </div>
            {move || match sign.get() {
                None if signs.synced.get() => {
                    view! {
                        <div class="panel empty-state">
                            <p>"There is no sign " <code>{id.get()}</code> "."</p>
                            <A href="/">"All signs"</A>
                        </div>
                    }
                        .into_any()
                }
                None => view! { <p class="muted">"Loading the sign…"</p> }.into_any(),
                Some(Err(problem)) => {
                    view! {
                        <p class="error" data-testid="error" data-for="sign-record">
                            {format!("This sign's record is not valid: {problem}")}
                        </p>
                    }
                        .into_any()
                }
                Some(Ok(_)) => view! { <SignEditor id valid signs messages /> }.into_any(),
            }}
        </div>
    }
    .into_any()
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
    let error = RwSignal::new(None::<String>);
    let busy = RwSignal::new(false);
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

    let patch = move |value: Value| {
        let write = Write::Patch {
            id: id.get_untracked(),
            value,
            if_match: None,
        };
        send(signs, write, busy, error, |_| {});
    };
    let set_shows = move |shows: Shows| patch(shows_patch(&shows));
    let playlist = move || match valid.get_untracked().map(|s| s.shows) {
        Some(Shows::Playlist(p)) => Some(p),
        _ => None,
    };
    let show_now = move |message: String| set_shows(Shows::Message(message));
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
        set_shows(Shows::Playlist(list));
    };
    let move_to = move |from: usize, to: usize| {
        if let Some(mut list) = playlist() {
            move_item(&mut list, from, to);
            set_shows(Shows::Playlist(list));
        }
    };
    let remove = move |index: usize| {
        if let Some(mut list) = playlist() {
            remove_item(&mut list, index);
            set_shows(Shows::Playlist(list));
        }
    };
    let set_duration = move |index: usize, text: String| match item_duration(&text) {
        Ok(duration) => {
            if let Some(mut list) = playlist()
                && let Some(item) = list.items.get_mut(index)
            {
                item.duration = duration;
                set_shows(Shows::Playlist(list));
            }
        }
        Err(problem) => error.set(Some(problem)),
    };
    let play_item = move |index: usize| {
        if let Some(mut list) = playlist()
            && index < list.items.len()
        {
            list.position = index;
            set_shows(Shows::Playlist(list));
        }
    };

    // Drop handling shared by the zones: what was dragged, where it went.
    let dropped = move |zone: Zone| {
        over.set(None);
        let Some(what) = drag.get_untracked() else {
            return;
        };
        if !can_edit.get_untracked() {
            return;
        }
        drag.set(None);
        match (what, zone) {
            (Drag::Library(m), Zone::Stage) => show_now(m),
            (Drag::Item(i), Zone::Stage) => play_item(i),
            (Drag::Library(m), Zone::Playlist) => add_at(m, None),
            (Drag::Library(m), Zone::Item(at)) => add_at(m, Some(at)),
            (Drag::Item(i), Zone::Playlist) => move_to(i, len_of(valid)),
            (Drag::Item(i), Zone::Item(at)) => move_to(i, at),
            (Drag::Item(i), Zone::Library | Zone::Trash) => remove(i),
            (Drag::Library(_), Zone::Library | Zone::Trash) => {}
        }
    };
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
                dropped(zone);
            },
        )
    };
    let (stage_over, stage_drop) = zone_events(Zone::Stage);
    let (list_over, list_drop) = zone_events(Zone::Playlist);
    let (lib_over, lib_drop) = zone_events(Zone::Library);
    let (trash_over, trash_drop) = zone_events(Zone::Trash);
    let is_over = move |zone: Zone| over.get() == Some(zone);
    let dragging_item = move || matches!(drag.get(), Some(Drag::Item(_)));

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
                    Some(item) => set_shows(Shows::Message(item.message.clone())),
                    None => set_shows(Shows::Nothing),
                }
            }
            ("playlist", Shows::Message(_) | Shows::Nothing) => {
                let list = remembered.get_value().unwrap_or_default();
                set_shows(Shows::Playlist(list));
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
    let items = move || {
        let list = match valid.get().map(|s| s.shows) {
            Some(Shows::Playlist(p)) => p,
            _ => Playlist::default(),
        };
        let position = list.position;
        list.items
            .into_iter()
            .enumerate()
            .map(|(index, item)| {
                let message = messages.records.with(|r| read_message(r, &item.message));
                let label = message
                    .as_ref()
                    .map(message_label)
                    .unwrap_or_else(|| format!("(missing message {})", item.message));
                let own = message.map(|m| m.duration);
                (index, item, label, own, index == position)
            })
            .collect::<Vec<_>>()
    };
    let count = move || items().len();

    view! {
        <div class="sign-grid">
            <div class="sign-main">
                <div
                    class="stage drop-zone"
                    class:over=move || is_over(Zone::Stage)
                    data-testid="stage"
                    on:dragover=stage_over
                    on:dragleave=move |_| over.set(None)
                    on:drop=stage_drop
                >
                    <LedSign
                        sign=sign_signal
                        showing=shown
                        pitch=14.0
                        label="The sign, as it shows now"
                        testid="sign-canvas"
                    />
                    <Show when=move || can_edit.get()>
                        <p class="stage-hint muted">"Drop a message here to show it now."</p>
                    </Show>
                </div>
                <ErrorNote error place="sign" />
                <fieldset class="panel controls" disabled=move || !can_edit.get()>
                    <label class="field inline">
                        <span>"Brightness"</span>
                        <input
                            type="range"
                            min="0"
                            max="100"
                            data-testid="brightness"
                            prop:value=move || shown_brightness().to_string()
                            on:input=move |ev| {
                                brightness.set(event_target_value(&ev).parse().ok());
                            }
                            on:change=move |ev| {
                                if let Ok(v) = event_target_value(&ev).parse::<u8>() {
                                    patch(json!({ "brightness": v }));
                                }
                                brightness.set(None);
                            }
                        />
                        <output>{move || format!("{}%", shown_brightness())}</output>
                    </label>
                    <fieldset class="mode" data-testid="mode" data-mode=mode>
                        <legend>"Shows"</legend>
                        <label>
                            <input
                                type="radio"
                                name="mode"
                                value="message"
                                prop:checked=move || mode() == "message"
                                on:change=move |_| set_mode("message")
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
                                on:change=move |_| set_mode("playlist")
                            />
                            "Playlist"
                        </label>
                        <Show when=move || mode() == "nothing">
                            <span class="muted">"Nothing yet"</span>
                        </Show>
                    </fieldset>
                </fieldset>
                <section
                    class="panel playlist drop-zone"
                    class:over=move || is_over(Zone::Playlist)
                    class:inactive=move || mode() != "playlist"
                    data-testid="playlist"
                    on:dragover=list_over
                    on:drop=list_drop
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
                    <ol class="playlist-items">
                        {move || {
                            let len = count();
                            items()
                                .into_iter()
                                .map(|(index, item, label, own, current)| {
                                    let (item_over, item_drop) = zone_events(Zone::Item(index));
                                    let message = item.message.clone();
                                    let seconds = item
                                        .duration
                                        .map(|d| d.to_string())
                                        .unwrap_or_default();
                                    let hint = own.map(|d| d.to_string()).unwrap_or_default();
                                    view! {
                                        <li
                                            class="playlist-item"
                                            class:current=current
                                            class:over=move || is_over(Zone::Item(index))
                                            draggable=move || can_edit.get().to_string()
                                            data-testid="playlist-item"
                                            data-message=message.clone()
                                            data-index=index.to_string()
                                            on:dragstart=move |ev: leptos::ev::DragEvent| {
                                                set_drag_data(&ev, &message);
                                                drag.set(Some(Drag::Item(index)));
                                            }
                                            on:dragend=move |_| {
                                                drag.set(None);
                                                over.set(None);
                                            }
                                            on:dragover=item_over
                                            on:drop=item_drop
                                        >
                                            <span class="grip" aria-hidden="true">
                                                "⠿"
                                            </span>
                                            <span class="label">{label}</span>
                                            <label class="item-duration" title="Seconds on the sign; empty: the message's own">
                                                <input
                                                    type="number"
                                                    data-testid="playlist-duration"
                                                    aria-label="Seconds"
                                                    disabled=move || !can_edit.get()
                                                    min=MIN_DURATION
                                                    max=MAX_DURATION
                                                    placeholder=hint
                                                    prop:value=seconds
                                                    on:change=move |ev| {
                                                        set_duration(index, event_target_value(&ev));
                                                    }
                                                />
                                                "s"
                                            </label>
                                            {current
                                                .then(|| view! { <span class="badge">"on now"</span> })}
                                            <span class="item-buttons" class:hidden=move || !can_edit.get()>
                                                <button
                                                    title="Move up"
                                                    aria-label="Move up"
                                                    disabled={index == 0}
                                                    on:click=move |_| move_to(index, index.saturating_sub(1))
                                                >
                                                    "↑"
                                                </button>
                                                <button
                                                    title="Move down"
                                                    aria-label="Move down"
                                                    disabled={index + 1 >= len}
                                                    on:click=move |_| move_to(index, index + 2)
                                                >
                                                    "↓"
                                                </button>
                                                <button
                                                    title="Play this item now"
                                                    on:click=move |_| play_item(index)
                                                >
                                                    "Play"
                                                </button>
                                                <button
                                                    class="danger"
                                                    data-testid="playlist-remove"
                                                    on:click=move |_| remove(index)
                                                >
                                                    "Remove"
                                                </button>
                                            </span>
                                        </li>
                                    }
                                })
                                .collect_view()
                        }}
                    </ol>
                    <Show when=move || count() == 0>
                        <p class="muted empty">
                            {move || {
                                if can_edit.get() {
                                    "Drag messages here (or use “Add to playlist”) to play them in turn."
                                } else {
                                    "The playlist is empty."
                                }
                            }}
                        </p>
                    </Show>
                </section>
                <div
                    class="trash drop-zone"
                    class:hidden=move || !can_edit.get()
                    class:over=move || is_over(Zone::Trash)
                    class:armed=dragging_item
                    data-testid="trash"
                    on:dragover=trash_over
                    on:dragleave=move |_| over.set(None)
                    on:drop=trash_drop
                >
                    "Drop a playlist item here to remove it"
                </div>
                <SignDevices sign=id />
            </div>
            <aside
                class="panel library drop-zone"
                class:over=move || is_over(Zone::Library)
                data-testid="library"
                on:dragover=lib_over
                on:drop=lib_drop
            >
                <div class="panel-head">
                    <h2>"Messages"</h2>
                    <A href="/messages">"Library →"</A>
                </div>
                <ul class="library-items">
                    <For
                        each=library
                        key=|item| item.clone()
                        children=move |(message, label)| {
                            let edit = format!("/messages?id={message}");
                            let (m1, m2, m3) = (message.clone(), message.clone(), message.clone());
                            view! {
                                <li
                                    class="library-item"
                                    draggable=move || can_edit.get().to_string()
                                    data-testid="library-item"
                                    data-message=message.clone()
                                    on:dragstart=move |ev: leptos::ev::DragEvent| {
                                        set_drag_data(&ev, &m1);
                                        drag.set(Some(Drag::Library(m1.clone())));
                                    }
                                    on:dragend=move |_| {
                                        drag.set(None);
                                        over.set(None);
                                    }
                                >
                                    <span class="grip" aria-hidden="true">
                                        "⠿"
                                    </span>
                                    <span class="label">{label}</span>
                                    <span class="item-buttons">
                                        <button
                                            data-testid="show-now"
                                            class:hidden=move || !can_edit.get()
                                            on:click=move |_| show_now(m2.clone())
                                        >
                                            "Show now"
                                        </button>
                                        <button
                                            data-testid="add-to-playlist"
                                            class:hidden=move || !can_edit.get()
                                            on:click=move |_| add_at(m3.clone(), None)
                                        >
                                            "Add to playlist"
                                        </button>
                                        <a href=edit>
                                            {move || if can_edit.get() { "Edit" } else { "View" }}
                                        </a>
                                    </span>
                                </li>
                            }
                        }
                    />
                </ul>
                <Show when=move || messages.records.with(|r| r.is_empty())>
                    <p class="muted empty">
                        {move || {
                            if messages.synced.get() {
                                "No messages yet: write one in the library."
                            } else {
                                "Loading messages…"
                            }
                        }}
                    </p>
                </Show>
            </aside>
        </div>
    }
    .into_any()
}

fn len_of(valid: Memo<Option<Sign>>) -> usize {
    match valid.get_untracked().map(|s| s.shows) {
        Some(Shows::Playlist(p)) => p.items.len(),
        _ => 0,
    }
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
                item_duration(bad).unwrap_err().starts_with("duration"),
                "{bad}"
            );
        }
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
