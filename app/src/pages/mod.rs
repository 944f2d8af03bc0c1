//! The pages of the web app.

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
