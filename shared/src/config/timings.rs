//! How the relay keeps WebSocket connections honest and fetches bounded.

use std::time::Duration;

use super::env::{invalid, Env};
use super::settings as s;
use super::ConfigError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayTimings {
    /// How long a warm function trusts what it remembers of a connection (registration, session
    /// not revoked) before asking Redis again. Logout and deletion close connections at once;
    /// this only bounds how long one whose close failed can go on.
    pub session_check: Duration,
    /// A `fetch` writes no further frame after this long (what is left stays in the inbox), so
    /// it ends before the function's timeout.
    pub fetch_deadline: Duration,
    /// How long a batch taken by a `fetch` is left in flight before the next fetch puts it back:
    /// longer than a fetch can live (the connection function's timeout).
    pub fetch_lease: Duration,
}

impl RelayTimings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let fetch_deadline_ms: u64 = env.number(&s::FETCH_DEADLINE_MS)?;
        let fetch_lease_ms: u64 = env.number(&s::FETCH_LEASE_MS)?;
        if fetch_lease_ms <= fetch_deadline_ms {
            return Err(invalid(
                &s::FETCH_LEASE_MS,
                "more than FETCH_DEADLINE_MS (and than the connection function's timeout)",
            ));
        }
        Ok(Self {
            session_check: Duration::from_secs(env.number(&s::WS_SESSION_CHECK_SECS)?),
            fetch_deadline: Duration::from_millis(fetch_deadline_ms),
            fetch_lease: Duration::from_millis(fetch_lease_ms),
        })
    }
}
