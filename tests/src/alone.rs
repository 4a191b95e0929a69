//! A test that measures or changes what belongs to the whole process (its resident memory, the
//! global tracing subscriber, environment variables) runs in a process of its own: the test
//! binary started again for that one test, so that the other tests of the binary, which run
//! beside each other in one process, neither disturb it nor are disturbed by it.

use std::process::Command;

/// The variable that tells the child process which test it runs alone.
const ALONE: &str = "RELAY_TEST_ALONE";

/// Whether the calling test's body runs here. In the child process started for it: yes. In
/// the suite's process: it starts the child (this binary, the one test, `--exact`), asserts
/// that the test ran and passed there, and answers no. `test` is the test's path as libtest
/// names it (`module::function`); [`run_alone!`](crate::run_alone) passes it.
pub fn here(test: &str) -> bool {
    if std::env::var(ALONE).is_ok_and(|t| t == test) {
        return true;
    }
    let binary = std::env::current_exe().expect("the test binary");
    let out = Command::new(binary)
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(ALONE, test)
        .output()
        .expect("start the test binary for one test");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("test result: ok. 1 passed"),
        "{test}, alone in a process, did not pass ({}):\n{stdout}\n{stderr}",
        out.status
    );
    // Indented: a summary line of the child's must not read as one of this run's.
    let output: String = format!("{stdout}{stderr}")
        .lines()
        .map(|l| format!("  | {l}\n"))
        .collect();
    eprint!("{test} passed in a process of its own:\n{output}");
    false
}

/// The libtest path of the function this expands in (`module::function`), from the path of an
/// item declared there (`crate::module::function[::{{closure}}]::item`).
pub fn test_path(item: &str) -> String {
    let segments: Vec<&str> = item
        .split("::")
        .skip(1)
        .filter(|s| !s.starts_with('{'))
        .collect();
    segments[..segments.len() - 1].join("::")
}

/// At the top of a test: `if !run_alone!() { return; }` runs the rest of the test in a process
/// of its own (see [`here`]).
#[macro_export]
macro_rules! run_alone {
    () => {{
        fn item() {}
        $crate::alone::here(&$crate::alone::test_path(std::any::type_name_of_val(&item)))
    }};
}
