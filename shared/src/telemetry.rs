//! Tracing setup: JSON lines on Lambda (`RELAY_LOG_FORMAT=json`), compact text locally.

use tracing_subscriber::EnvFilter;

use crate::config::{settings, Env};

pub fn init() {
    let env = Env::new(&|k| std::env::var(k).ok());
    let filter = EnvFilter::try_new(env.string(&settings::RUST_LOG))
        .unwrap_or_else(|_| EnvFilter::new(settings::RUST_LOG.default));
    let json = env.string(&settings::RELAY_LOG_FORMAT) == "json";
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    let _ = if json {
        builder.json().without_time().try_init()
    } else {
        builder.compact().try_init()
    };
}
