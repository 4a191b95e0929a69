//! Relay's shared library: domain, validation, auth, services, storage adapters, config, errors.

pub mod app;
pub mod clock;
pub mod config;
pub mod contract;
pub mod crypto;
pub mod error;
pub mod frames;
pub mod groups;
pub mod http;
pub mod ids;
pub mod metrics;
pub mod mls;
pub mod model;
pub mod routes;
pub mod secrets;
pub mod services;
pub mod storage;
pub mod telemetry;
pub mod validation;

pub use app::App;
pub use config::Config;
pub use error::{Error, Result};

/// A file of the repository as committed, for tests that hold generated documents against the
/// code.
#[cfg(test)]
pub(crate) fn repo_file(path: &str) -> String {
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path);
    std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}
