//! The browser entry point: hydrates the server-rendered page into the live app.

#[wasm_bindgen::prelude::wasm_bindgen]
pub fn hydrate() {
    console_error_panic_hook::set_once();
    // Lazy: a page split out of the main bundle is fetched before it hydrates.
    leptos::mount::hydrate_lazy(app::App);
}
