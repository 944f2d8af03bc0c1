//! The pages of the web app.

mod common;
mod data;
mod home;
mod led;
mod messages;
mod sign;

pub use data::DataPage;
pub use home::{HomePage, NotFound};
pub use messages::MessagesPage;
pub use sign::SignPage;
