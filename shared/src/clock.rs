//! Time as the domain sees it, passed in rather than read from the system everywhere: token
//! lifetimes, session expiry and envelope expiry follow it, so tests advance it instead of
//! sleeping. (Redis' native key TTLs run on the server's own clock.)

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub trait Clock: Send + Sync {
    /// Unix time in milliseconds.
    fn now_ms(&self) -> u64;

    /// Unix time in seconds.
    fn now_secs(&self) -> u64 {
        self.now_ms() / 1000
    }
}

pub type SharedClock = Arc<dyn Clock>;

/// The system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        unix_ms()
    }
}

pub fn system() -> SharedClock {
    Arc::new(SystemClock)
}

/// The system's Unix time in milliseconds, for code that has no `Clock` passed in (the local
/// gateway's event timestamps, test fixtures); domain code asks its injected clock instead.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The system's Unix time in seconds (see `unix_ms`).
pub fn unix_secs() -> u64 {
    unix_ms() / 1000
}

/// The system's clock plus an offset that only grows: a test moves time forward with
/// `advance` (tokens expire, envelopes age) without waiting.
#[derive(Debug, Default)]
pub struct ManualClock {
    ahead_ms: AtomicU64,
}

impl ManualClock {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn advance(&self, by: Duration) {
        self.ahead_ms
            .fetch_add(by.as_millis() as u64, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        unix_ms() + self.ahead_ms.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_ahead_of_the_system_clock() {
        let clock = ManualClock::new();
        let before = SystemClock.now_ms();
        clock.advance(Duration::from_secs(90));
        let ahead = clock.now_ms() - before;
        assert!((90_000..95_000).contains(&ahead), "{ahead}");
        assert!(clock.now_secs() >= SystemClock.now_secs() + 89);
    }
}
