//! Waiting for what a test expects to become true, instead of sleeping a fixed time: the wait
//! ends as soon as the condition holds, and a condition that never holds fails with its name.

use std::time::Duration;

/// How long a condition may take before the test fails: far beyond what any of them takes on a
/// loaded machine, so that only a condition that never holds reaches it.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// How often a condition is checked: short against what the tests wait for, long enough not to
/// load the servers the conditions read.
pub const INTERVAL: Duration = Duration::from_millis(10);

/// Checks `condition` every [`INTERVAL`] until it holds; after [`DEADLINE`] panics naming
/// `what` (what was awaited).
pub async fn eventually(what: &str, condition: impl AsyncFnMut() -> bool) {
    eventually_within(DEADLINE, what, condition).await
}

/// [`eventually`] with a deadline of its own, for a condition that takes long by design (a
/// failover, a process that builds before it starts).
pub async fn eventually_within(
    deadline: Duration,
    what: &str,
    mut condition: impl AsyncFnMut() -> bool,
) {
    let started = tokio::time::Instant::now();
    loop {
        if condition().await {
            waited(what, started);
            return;
        }
        assert!(
            started.elapsed() < deadline,
            "waited {deadline:?} for {what}, in vain"
        );
        tokio::time::sleep(INTERVAL).await;
    }
}

/// Checks `read` every [`INTERVAL`] until it gives `expected`; after [`DEADLINE`] panics naming
/// `what` and the last value read.
pub async fn eventually_eq<T: PartialEq + std::fmt::Debug>(
    what: &str,
    expected: T,
    mut read: impl AsyncFnMut() -> T,
) {
    let started = tokio::time::Instant::now();
    loop {
        let got = read().await;
        if got == expected {
            waited(what, started);
            return;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "waited {DEADLINE:?} for {what} to be {expected:?}, in vain: still {got:?}"
        );
        tokio::time::sleep(INTERVAL).await;
    }
}

/// Reports a wait long enough to matter in a suite's run time (`--nocapture` shows it): what the
/// suite spends waiting on real time stays visible.
fn waited(what: &str, started: tokio::time::Instant) {
    let waited = started.elapsed();
    if waited >= Duration::from_millis(100) {
        eprintln!("waited {waited:?} for {what}");
    }
}
