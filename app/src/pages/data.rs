//! `/data`: pick a table, watch its records change live, edit, create and
//! delete them. The table is in the URL (`/data?table=signs`).

use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::NavigateOptions;
use leptos_router::hooks::{use_navigate, use_query_map};
use serde_json::Value;

use super::common::{DeleteButton, ErrorNote, LiveStatus, describe, send};
use super::common::{When, handler};
use crate::api;
use crate::auth::{Auth, use_auth};
use crate::event::{TableInfo, TableList};
use crate::live::{Live, Record, Write, parse_record};

/// The record being edited, and the state of its form.
#[derive(Clone, Copy)]
struct Editor {
    id: RwSignal<Option<String>>,
    /// The version the text was loaded from; saves are conditional on it.
    base: RwSignal<Option<u64>>,
    text: RwSignal<String>,
    /// The text was changed by hand since it was loaded or saved.
    dirty: RwSignal<bool>,
    busy: RwSignal<bool>,
    error: RwSignal<Option<String>>,
    note: RwSignal<Option<String>>,
}

impl Editor {
    fn new() -> Self {
        Editor {
            id: RwSignal::new(None),
            base: RwSignal::new(None),
            text: RwSignal::new(String::new()),
            dirty: RwSignal::new(false),
            busy: RwSignal::new(false),
            error: RwSignal::new(None),
            note: RwSignal::new(None),
        }
    }

    fn open(self, id: String, record: &Record) {
        self.id.set(Some(id));
        self.load(record);
        self.error.set(None);
        self.note.set(None);
    }

    fn load(self, record: &Record) {
        self.base.set(record.version);
        self.text.set(pretty(&record.value));
        self.dirty.set(false);
    }

    fn close(self) {
        self.id.set(None);
        self.error.set(None);
        self.note.set(None);
    }
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}

fn compact(value: &Value) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

/// `%`-encodes a query value (table names are plain, but be safe).
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The declared tables; a signed-out answer sends the app to sign-in.
async fn fetch_tables(auth: Auth) -> Result<Vec<TableInfo>, String> {
    api::get::<TableList>(Some(auth), "/api/_tables")
        .await
        .map(|list| list.tables)
        .map_err(|failure| format!("Cannot load the tables: {}", describe(&failure.error)))
}

#[component]
pub fn DataPage() -> impl IntoView {
    let live = Live::new();
    live.connect();
    let auth = use_auth();
    let can_edit = auth.can_edit();

    let query = use_query_map();
    let table = Memo::new(move |_| query.read().get("table").filter(|t| !t.is_empty()));
    Effect::new(move |_| live.watch(table.get()));

    let tables = RwSignal::new(None::<Result<Vec<TableInfo>, String>>);
    let load_tables = move || {
        leptos::task::spawn_local(async move {
            tables.try_set(Some(fetch_tables(auth).await));
        });
    };
    Effect::new(move |_| load_tables());

    let editor = Editor::new();
    // Close the editor when the table changes.
    Effect::new(move |previous: Option<Option<String>>| {
        let now = table.get();
        if previous.is_some_and(|p| p != now) {
            editor.close();
        }
        now
    });

    view! {
        <Title text=move || {
            table.get().map_or("Data · Marquee".to_string(), |t| format!("{t} · Data · Marquee"))
        } />
        <div class="data-page">
            <div class="toolbar">
                <h1>"Data"</h1>
                <TablePicker table tables load_tables />
                <span class="spacer"></span>
                <LiveStatus live />
            </div>
            <When
                when=move || table.get().is_some()
                fallback=move || {
                    view! {
                        <div class="panel empty-state">
                            <p>"Pick a table to see its records, live."</p>
                            <TableLinks tables />
                        </div>
                    }
                }
            >
                <div class="data-grid">
                    <RecordsPanel live editor table />
                    // Viewers read records; the editors would only meet a 403.
                    <When when=move || can_edit.get()>
                        <aside class="side">
                            <EditorPanel live editor />
                            <NewRecordPanel live />
                        </aside>
                    </When>
                </div>
            </When>
        </div>
    }
    .into_any()
}

/// The names to offer: the declared tables, plus the one in the URL.
fn table_names(
    tables: Option<Result<Vec<TableInfo>, String>>,
    current: Option<String>,
) -> Vec<(String, bool)> {
    let mut names: Vec<(String, bool)> = match tables {
        Some(Ok(list)) => list.into_iter().map(|t| (t.name, t.builtin)).collect(),
        _ => Vec::new(),
    };
    if let Some(current) = current
        && !names.iter().any(|(n, _)| *n == current)
    {
        names.push((current, false));
    }
    names
}

#[component]
fn TablePicker(
    table: Memo<Option<String>>,
    tables: RwSignal<Option<Result<Vec<TableInfo>, String>>>,
    load_tables: impl Fn() + Copy + Send + Sync + 'static,
) -> impl IntoView {
    let navigate = use_navigate();
    let on_change = move |ev: leptos::ev::Event| {
        let name = event_target_value(&ev);
        let url = if name.is_empty() {
            "/data".to_string()
        } else {
            format!("/data?table={}", encode(&name))
        };
        navigate(&url, NavigateOptions::default());
    };
    let options = move || {
        let current = table.get();
        table_names(tables.get(), current.clone())
            .into_iter()
            .map(|(name, builtin)| {
                let is_current = current.as_deref() == Some(name.as_str());
                let label = if builtin {
                    format!("{name} (built in)")
                } else {
                    name.clone()
                };
                view! {
                    <option value=name selected=is_current prop:selected=is_current>
                        {label}
                    </option>
                }
            })
            .collect_view()
    };
    view! {
        <label class="picker">
            <span>"Table"</span>
            <select data-testid="table-select" on:change=handler(leptos::ev::change, on_change)>
                <option
                    value=""
                    disabled=true
                    selected=move || table.get().is_none()
                    prop:selected=move || table.get().is_none()
                >
                    "Choose a table…"
                </option>
                {move || options()}
            </select>
        </label>
        <button class="icon" title="Reload the list of tables" on:click=handler(leptos::ev::click, move |_| load_tables())>
            "↻"
        </button>
        {move || {
            tables
                .get()
                .and_then(Result::err)
                .map(|message| {
                    view! {
                        <span class="error" data-testid="error" data-for="tables">
                            {message}
                        </span>
                    }
                })
        }}
    }
    .into_any()
}

/// Links to every table, for the page without one.
#[component]
fn TableLinks(tables: RwSignal<Option<Result<Vec<TableInfo>, String>>>) -> impl IntoView {
    move || match tables.get() {
        None => view! { <p class="muted">"Loading tables…"</p> }.into_any(),
        Some(Err(_)) => ().into_any(),
        Some(Ok(list)) => view! {
            <ul class="table-links">
                {list
                    .into_iter()
                    .map(|t| {
                        let href = format!("/data?table={}", encode(&t.name));
                        view! {
                            <li>
                                <a href=href>{t.name}</a>
                            </li>
                        }
                    })
                    .collect_view()}
            </ul>
        }
        .into_any(),
    }
}

#[component]
fn RecordsPanel(live: Live, editor: Editor, table: Memo<Option<String>>) -> impl IntoView {
    let count = move || live.records.with(|r| r.len());
    view! {
        <section class="panel records">
            <div class="panel-head">
                <h2>{move || table.get().unwrap_or_default()}</h2>
                <span class="muted">
                    {move || match count() {
                        1 => "1 record".to_string(),
                        n => format!("{n} records"),
                    }}
                </span>
            </div>
            {move || {
                live.table_error
                    .get()
                    .map(|e| {
                        view! {
                            <p class="error" data-testid="error" data-for="table">
                                {describe(&e)}
                            </p>
                        }
                    })
            }}
            <div class="table-wrap">
                <table class="records-table">
                    <thead>
                        <tr>
                            <th class="col-id">"id"</th>
                            <th class="col-version">"version"</th>
                            <th>"value"</th>
                            <th class="col-actions"></th>
                        </tr>
                    </thead>
                    <tbody>
                        <For
                            each=move || live.records.get()
                            key=|(id, record)| (id.clone(), record.version)
                            children=move |(id, record)| {
                                view! { <RecordRow id record live editor /> }
                            }
                        />
                    </tbody>
                </table>
            </div>
            <When when=move || count() == 0>
                <p class="muted empty">
                    {move || String::from({
                        if live.synced.get() { "No records yet." } else { "Loading records…" }
                    })}
                </p>
            </When>
        </section>
    }
    .into_any()
}

#[component]
fn RecordRow(id: String, record: Record, live: Live, editor: Editor) -> impl IntoView {
    let can_edit = use_auth().can_edit();
    let busy = RwSignal::new(false);
    let error = RwSignal::new(None::<String>);
    let version = record.version;
    let selected = {
        let id = id.clone();
        move || editor.id.with(|e| e.as_deref() == Some(id.as_str()))
    };
    let edit = {
        let id = id.clone();
        let record = record.clone();
        move |_| editor.open(id.clone(), &record)
    };
    let delete = {
        let id = id.clone();
        Callback::new(move |()| {
            let write = Write::Delete {
                id: id.clone(),
                if_match: version,
            };
            send(live, write, busy, error, |_| {});
        })
    };
    view! {
        <tr
            data-testid="record-row"
            data-id=id.clone()
            data-version=version.map(|v| v.to_string()).unwrap_or_default()
            class:fresh=record.fresh
            class:selected=move || selected()
        >
            <td class="col-id">
                <code>{id.clone()}</code>
            </td>
            <td class="col-version">{version.map(|v| v.to_string()).unwrap_or("–".into())}</td>
            <td class="col-value">
                <code class="json" data-testid="record-value">
                    {compact(&record.value)}
                </code>
            </td>
            <td class="col-actions">
                <When when=move || can_edit.get()>
                    <button data-testid="record-edit" on:click=handler(leptos::ev::click, edit.clone())>
                        "Edit"
                    </button>
                    <DeleteButton busy testid="record-delete" on_confirm=delete />
                </When>
                {move || {
                    error
                        .get()
                        .map(|message| {
                            view! {
                                <div class="error" data-testid="error" data-for="row">
                                    {message}
                                </div>
                            }
                        })
                }}
            </td>
        </tr>
    }
    .into_any()
}

#[component]
fn EditorPanel(live: Live, editor: Editor) -> impl IntoView {
    // The edited record as it is now on the server.
    let current = Memo::new(move |_| {
        editor
            .id
            .get()
            .and_then(|id| live.records.with(|records| records.get(&id).cloned()))
    });
    // Follow live changes while the text has not been touched.
    Effect::new(move |_| {
        if let Some(record) = current.get()
            && !editor.dirty.get_untracked()
            && editor.base.get_untracked() != record.version
        {
            editor.load(&record);
        }
    });
    let stale = move || {
        editor.id.get()?;
        match current.get() {
            None if live.synced.get() => Some(
                "This record has been deleted on the server; saving creates it again.".to_string(),
            ),
            None => None,
            Some(record) if record.version != editor.base.get() => Some(format!(
                "Changed on the server since you began editing (now version {}). \
                 Saving will be refused; load the latest version first.",
                record.version.unwrap_or_default()
            )),
            Some(_) => None,
        }
    };
    let save = move |_| {
        let Some(id) = editor.id.get_untracked() else {
            return;
        };
        editor.note.set(None);
        let value = match parse_record(&editor.text.get_untracked()) {
            Ok(value) => value,
            Err(message) => {
                editor.error.set(Some(message));
                return;
            }
        };
        // A record deleted meanwhile is created again; otherwise only over the version we loaded.
        let if_match = current
            .get_untracked()
            .and_then(|_| editor.base.get_untracked());
        let write = Write::Put {
            id: Some(id),
            value,
            if_match,
        };
        send(live, write, editor.busy, editor.error, move |ack| {
            editor.base.try_set(ack.version);
            editor.dirty.try_set(false);
            editor.note.try_set(Some(match ack.version {
                Some(v) => format!("Saved as version {v}."),
                None => "Saved.".to_string(),
            }));
        });
    };
    let reload = move |_| {
        if let Some(record) = current.get_untracked() {
            editor.load(&record);
            editor.error.set(None);
        }
    };
    view! {
        <When when=move || editor.id.get().is_some()>
            <section class="panel editor">
                <div class="panel-head">
                    <h2>
                        "Edit " <code>{move || editor.id.get().unwrap_or_default()}</code>
                    </h2>
                    <span class="muted">
                        {move || {
                            editor.base.get().map(|v| format!("version {v}")).unwrap_or_default()
                        }}
                    </span>
                </div>
                <textarea
                    data-testid="record-editor"
                    class="json"
                    class:invalid=move || editor.error.get().is_some()
                    spellcheck="false"
                    rows="12"
                    prop:value=move || editor.text.get()
                    on:input=handler(leptos::ev::input, move |ev| {
                        editor.text.set(event_target_value(&ev));
                        editor.dirty.set(true);
                        editor.error.set(None);
                        editor.note.set(None);
                    })
                ></textarea>
                <ErrorNote error=editor.error place="editor" />
                {move || stale().map(|message| view! { <p class="warning">{message}</p> })}
                {move || editor.note.get().map(|message| view! { <p class="ok">{message}</p> })}
                <div class="buttons">
                    <button
                        class="primary"
                        data-testid="record-save"
                        disabled=move || editor.busy.get()
                        on:click=handler(leptos::ev::click, save)
                    >
                        {move || String::from(if editor.busy.get() { "Saving…" } else { "Save" })}
                    </button>
                    <When when=move || stale().is_some() && current.get().is_some()>
                        <button on:click=handler(leptos::ev::click, reload)>"Load latest"</button>
                    </When>
                    <button on:click=handler(leptos::ev::click, move |_| editor.close())>"Close"</button>
                </div>
            </section>
        </When>
    }
    .into_any()
}

#[component]
fn NewRecordPanel(live: Live) -> impl IntoView {
    const EMPTY: &str = "{\n  \n}";
    let id = RwSignal::new(String::new());
    let text = RwSignal::new(EMPTY.to_string());
    let busy = RwSignal::new(false);
    let error = RwSignal::new(None::<String>);
    let note = RwSignal::new(None::<String>);
    let create = move |_| {
        note.set(None);
        let wanted = id.get_untracked().trim().to_string();
        let value = match parse_record(&text.get_untracked()) {
            Ok(value) => value,
            Err(message) => {
                error.set(Some(message));
                return;
            }
        };
        if !wanted.is_empty() && live.records.with_untracked(|r| r.contains_key(&wanted)) {
            error.set(Some(format!(
                "A record with id '{wanted}' already exists; use its Edit button to change it."
            )));
            return;
        }
        let write = Write::Put {
            id: (!wanted.is_empty()).then_some(wanted),
            value,
            if_match: None,
        };
        send(live, write, busy, error, move |ack| {
            note.try_set(Some(format!("Created '{}'.", ack.id.unwrap_or_default())));
            id.try_set(String::new());
            text.try_set(EMPTY.to_string());
        });
    };
    view! {
        <section class="panel new-record">
            <div class="panel-head">
                <h2>"New record"</h2>
            </div>
            <label class="field">
                <span>"id"</span>
                <input
                    data-testid="new-id"
                    type="text"
                    placeholder="empty: the server picks one"
                    spellcheck="false"
                    prop:value=move || id.get()
                    on:input=handler(leptos::ev::input, move |ev| id.set(event_target_value(&ev)))
                />
            </label>
            <label class="field">
                <span>"value (a JSON object)"</span>
                <textarea
                    data-testid="new-value"
                    class="json"
                    class:invalid=move || error.get().is_some()
                    spellcheck="false"
                    rows="6"
                    prop:value=move || text.get()
                    on:input=handler(leptos::ev::input, move |ev| {
                        text.set(event_target_value(&ev));
                        error.set(None);
                    })
                ></textarea>
            </label>
            <ErrorNote error place="new" />
            {move || note.get().map(|message| view! { <p class="ok">{message}</p> })}
            <div class="buttons">
                <button
                    class="primary"
                    data-testid="new-create"
                    disabled=move || busy.get()
                    on:click=handler(leptos::ev::click, create)
                >
                    "Create"
                </button>
            </div>
        </section>
    }
    .into_any()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_query_values() {
        assert_eq!(encode("e2e_ab-9"), "e2e_ab-9");
        assert_eq!(encode("a b/c"), "a%20b%2Fc");
    }

    #[test]
    fn offers_the_url_table_even_before_the_list_loads() {
        assert_eq!(
            table_names(None, Some("t".into())),
            vec![("t".to_string(), false)]
        );
        let list = vec![TableInfo {
            name: "signs".into(),
            builtin: true,
            schema: None,
        }];
        assert_eq!(
            table_names(Some(Ok(list)), Some("signs".into())),
            vec![("signs".to_string(), true)]
        );
    }
}
