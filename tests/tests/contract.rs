//! schemathesis (an OpenAPI-driven fuzzer from PyPI, installed by ./local/test) against a stack
//! of real servers: every route of docs/openapi.json is called with generated valid and invalid
//! input, and every answer must be no 5xx, a status the document lists, its content type and a
//! body matching its schema.

use std::path::PathBuf;
use std::process::Command;

use relay_tests::client::User;
use relay_tests::servers::workspace_root;
use relay_tests::stack::Stack;

fn schemathesis() -> PathBuf {
    std::env::var_os("RELAY_SCHEMATHESIS")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".local/venv-fuzz/bin/schemathesis"))
}

const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
                      response_headers_conformance,response_schema_conformance";

/// Runs schemathesis on some operations with a user's token; returns its output and the
/// number of requests it made.
fn fuzz(stack: &Stack, user: &User, operations: &[&str], exclude: bool, label: &str) -> u64 {
    let bin = schemathesis();
    assert!(
        bin.exists(),
        "{} not found (run ./local/test, which installs it, or set RELAY_SCHEMATHESIS)",
        bin.display()
    );
    let report =
        std::env::temp_dir().join(format!("relay-fuzz-{}-{label}.ndjson", std::process::id()));
    let filter = if exclude {
        "--exclude-operation-id"
    } else {
        "--include-operation-id"
    };
    let mut cmd = Command::new(&bin);
    cmd.arg("run")
        .arg(workspace_root().join("docs/openapi.json"))
        .args(["--url", &stack.url("")])
        .args([
            "--header",
            &format!("Authorization: Bearer {}", user.access),
        ])
        .args(["--checks", CHECKS])
        .args(["--phases", "examples,coverage,fuzzing"])
        .args([
            "--max-examples",
            "40",
            "--seed",
            "20261127",
            "--workers",
            "2",
        ])
        .args(["--report", "ndjson", "--report-ndjson-path"])
        .arg(&report)
        .env("NO_COLOR", "1")
        // Its cache directory lands in the working directory: not in the repository.
        .current_dir(std::env::temp_dir());
    for op in operations {
        cmd.args([filter, op]);
    }
    let mut out = cmd.output().expect("run schemathesis");
    // A crash inside the fuzzer itself (a Python error while it builds a test case, reported as
    // an error with no failing check) says nothing of the relay: the run is made once more, and
    // a relay that answers wrongly fails either way.
    if !out.status.success() && fuzzer_crashed_only(&String::from_utf8_lossy(&out.stdout)) {
        eprintln!("schemathesis ({label}): the fuzzer itself crashed; running it again");
        out = cmd.output().expect("run schemathesis");
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found problems ({label}):\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events = std::fs::read_to_string(&report).unwrap_or_default();
    let _ = std::fs::remove_file(&report);
    // Each response recorded in the report is one request the fuzzer made.
    let requests = events.matches("\"response\":{").count() as u64;
    eprintln!("schemathesis ({label}): {requests} requests\n{stdout}");
    requests
}

/// The run's only problems are the fuzzer's own runtime errors: no check failed.
fn fuzzer_crashed_only(stdout: &str) -> bool {
    stdout.contains("Runtime Error") && !stdout.contains("FAILURES")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_running_relay_answers_as_openapi_json_says_on_every_route() {
    let stack = Stack::start().await;
    let stack_ref = &stack;
    let user = User::builder(stack_ref)
        .one_time_prekeys(5)
        .kyber_one_time_prekeys(2)
        .create()
        .await;
    // Logging out or deleting the account would end the token for the routes after them: those
    // two run last, on a user of their own.
    let ending = ["Logout", "DeleteMe"];
    let keeping = tokio::task::block_in_place(|| fuzz(stack_ref, &user, &ending, true, "routes"));
    let last = User::builder(stack_ref).create().await;
    let ended = tokio::task::block_in_place(|| fuzz(stack_ref, &last, &ending, false, "ending"));
    assert!(keeping > 100 && ended > 0, "{keeping} + {ended} requests");
    eprintln!("schemathesis: {} requests in all", keeping + ended);
}
