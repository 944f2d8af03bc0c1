//! Pieces the sign-in and account forms share: a labelled text field that
//! password managers understand, focusing a form's first field, a secret
//! shown once with a copy button, a copy button of its own, and times as
//! people read them.

use super::common::handler;
use leptos::html::Input;
use leptos::prelude::*;

/// A labelled input. `autocomplete` tells browsers and password managers what
/// it holds (`username`, `current-password`, `new-password`, `off`); `name`
/// (unique on the page) also names its id, so the label and the hint belong
/// to the input by `for` and `aria-describedby`.
#[component]
pub fn TextField(
    label: &'static str,
    value: RwSignal<String>,
    name: &'static str,
    #[prop(default = "text")] kind: &'static str,
    #[prop(default = "off")] autocomplete: &'static str,
    #[prop(optional)] testid: &'static str,
    #[prop(optional)] placeholder: &'static str,
    #[prop(optional)] hint: &'static str,
    #[prop(optional)] node: Option<NodeRef<Input>>,
    /// Hears of every keystroke (to clear an old error).
    #[prop(optional)]
    edited: Option<Callback<()>>,
) -> impl IntoView {
    let node = node.unwrap_or_default();
    let id = format!("field-{name}");
    let hint_id = (!hint.is_empty()).then(|| format!("{id}-hint"));
    view! {
        <div class="field">
            <label for=id.clone()>{label}</label>
            <input
                node_ref=node
                id=id
                type=kind
                name=name
                autocomplete=autocomplete
                aria-describedby=hint_id.clone()
                data-testid=(!testid.is_empty()).then_some(testid)
                placeholder=(!placeholder.is_empty()).then_some(placeholder)
                spellcheck="false"
                autocapitalize="off"
                prop:value=move || value.get()
                on:input=handler(leptos::ev::input, move |ev| {
                    value.set(event_target_value(&ev));
                    if let Some(edited) = edited {
                        edited.run(());
                    }
                })
            />
            {match hint_id {
                Some(hint_id) => view! { <small class="hint" id=hint_id>{hint}</small> }.into_any(),
                None => ().into_any(),
            }}
        </div>
    }
    .into_any()
}

/// Puts the cursor in `node` once it is on the page (an `autofocus`
/// attribute does nothing on a page the router shows without a reload).
pub fn focus_when_shown(node: NodeRef<Input>) {
    Effect::new(move |_| {
        #[cfg(feature = "hydrate")]
        if let Some(input) = node.get() {
            let _ = input.focus();
        }
        #[cfg(not(feature = "hydrate"))]
        let _ = node;
    });
}

/// A password or API token shown this once: selectable text and a copy button.
#[component]
pub fn OnceSecret(
    /// What it is, as a sentence start: "The new password for ann".
    what: String,
    secret: String,
    testid: &'static str,
    on_done: Callback<()>,
) -> impl IntoView {
    let copied = RwSignal::new(None::<bool>);
    let copy = {
        let secret = secret.clone();
        move |_| copy_text(secret.clone(), copied)
    };
    view! {
        <div class="once-secret" role="status">
            <p>
                <strong>{what}</strong>
                " — copy it now: it is not shown again."
            </p>
            <div class="secret-row">
                <input
                    type="text"
                    readonly=true
                    class="json"
                    aria-label="The secret"
                    data-testid=testid
                    value=secret
                    on:focus=handler(leptos::ev::focus, move |ev| {
                        #[cfg(feature = "hydrate")]
                        event_target::<web_sys::HtmlInputElement>(&ev).select();
                        #[cfg(not(feature = "hydrate"))]
                        let _ = ev;
                    })
                />
                <button type="button" data-testid="copy" on:click=handler(leptos::ev::click, copy)>
                    {move || match copied.get() {
                        Some(true) => "Copied",
                        Some(false) => "Select and copy by hand",
                        None => "Copy",
                    }}
                </button>
                <button type="button" on:click=handler(leptos::ev::click, move |_| on_done.run(()))>
                    "Done"
                </button>
            </div>
        </div>
    }
    .into_any()
}

/// A "Copy" button for a value shown beside it; it says whether the browser let it.
#[component]
pub fn CopyButton(
    text: String,
    /// What is copied, for screen readers: "Copy Password".
    label: String,
) -> impl IntoView {
    let copied = RwSignal::new(None::<bool>);
    view! {
        <button
            type="button"
            class="copy"
            data-testid="copy"
            aria-label=label
            on:click=handler(leptos::ev::click, move |_| copy_text(text.clone(), copied))
        >
            {move || match copied.get() {
                Some(true) => "Copied",
                Some(false) => "Select and copy by hand",
                None => "Copy",
            }}
        </button>
    }
    .into_any()
}

/// Copies to the clipboard; `copied` says whether the browser let us.
fn copy_text(text: String, copied: RwSignal<Option<bool>>) {
    #[cfg(feature = "hydrate")]
    leptos::task::spawn_local(async move {
        let promise = window().navigator().clipboard().write_text(&text);
        let done = wasm_bindgen_futures::JsFuture::from(promise).await.is_ok();
        copied.try_set(Some(done));
    });
    #[cfg(not(feature = "hydrate"))]
    let _ = (text, copied);
}

/// `2026-11-28T10:00:00.000Z` → `2026-11-28 10:00 UTC`; anything else as is.
pub fn short_time(stamp: &str) -> String {
    match (stamp.get(..10), stamp.get(11..16)) {
        (Some(day), Some(time)) if stamp.ends_with('Z') => format!("{day} {time} UTC"),
        _ => stamp.to_string(),
    }
}

/// Runs a call the user asked for (a button's): `busy` meanwhile, the refusal in words in `error`.
pub fn act<T: 'static>(
    busy: RwSignal<bool>,
    error: RwSignal<Option<String>>,
    call: impl std::future::Future<Output = Result<T, crate::api::Failure>> + 'static,
    done: impl FnOnce(T) + 'static,
) {
    busy.set(true);
    error.set(None);
    leptos::task::spawn_local(async move {
        let result = call.await;
        busy.try_set(false);
        match result {
            Ok(answer) => done(answer),
            Err(failure) => {
                error.try_set(Some(failure.words()));
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_short() {
        assert_eq!(
            short_time("2026-11-28T10:00:59.123Z"),
            "2026-11-28 10:00 UTC"
        );
        assert_eq!(short_time("soon"), "soon");
    }
}
