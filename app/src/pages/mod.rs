//! The pages of the web app.

mod data;
mod home;

pub use data::DataPage;
pub use home::{HomePage, NotFound};
