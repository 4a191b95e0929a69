//! Use cases, written against the storage traits only.

mod account_age;
pub mod account_data;
pub mod accounts;
pub mod attachments;
pub mod auth;
pub mod devices;
pub mod directory;
pub mod groups;
mod key_packages;
mod limiter;
pub mod mls_groups;
pub mod presence;
#[cfg(test)]
pub(crate) mod recorded;
pub mod relay;

pub use account_age::AccountAge;
pub use limiter::Limiter;

pub use crate::config::Limit;
