//! The pages of the web app.
//!
//! A reactive attribute is written as a closure in place (`class:over=move ||
//! is_over()`), never as the closure's name: view! gives every closure written
//! in place one shared type per output type, so they share one copy of the
//! attribute code in the WASM, where a named closure brings its own (see
//! BENCHMARKS.md, "web app bundle within budget"). Clippy sees those closures
//! as redundant.
#![allow(clippy::redundant_closure)]

mod account;
mod common;
mod data;
mod devices;
mod forms;
mod gate;
mod home;
mod led;
mod login;
mod messages;
mod setup;
mod sign;
mod tokens;
mod topbar;
mod users;

pub use account::AccountPage;
pub use data::DataPage;
pub use devices::DevicesPage;
pub use gate::{AdminOnly, AuthRedirect, SignedInOnly};
pub use home::{HomePage, NotFound};
pub use login::LoginPage;
pub use messages::MessagesPage;
pub use setup::SetupPage;
pub use sign::SignPage;
pub use topbar::TopBar;
pub use users::AdminPage;
