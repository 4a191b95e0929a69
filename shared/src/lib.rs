//! Relay's shared library: domain, validation, auth, services, storage adapters, config, errors.

pub mod app;
pub mod clock;
pub mod config;
pub mod contract;
pub mod crypto;
pub mod error;
pub mod frames;
pub mod http;
pub mod ids;
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
