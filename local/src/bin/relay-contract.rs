//! `relay-contract`: the machine-readable contract generated from the code (`shared::contract`).
//!   relay-contract            prints docs/openapi.json and docs/frames.schema.json to stdout
//!   relay-contract --write    writes them into docs/, the configuration tables of README.md
//!                             and docs/api.md and the metrics table of docs/operations.md (run
//!                             after changing a route, field, frame, setting or metric)
//!   relay-contract --check    exits 1, naming each difference, while docs/ differs from the code

use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mode = std::env::args().nth(1).unwrap_or_default();
    let mut stale = false;
    for (path, generated) in shared::contract::documents() {
        let text = format!("{generated:#}\n");
        let file = root.join(path);
        match mode.as_str() {
            "--write" => {
                if let Err(e) = std::fs::write(&file, text) {
                    eprintln!("relay-contract: {path}: {e}");
                    return ExitCode::FAILURE;
                }
                eprintln!("relay-contract: wrote {path}");
            }
            "--check" => {
                let committed = std::fs::read_to_string(&file)
                    .ok()
                    .and_then(|t| serde_json::from_str(&t).ok())
                    .unwrap_or(serde_json::Value::Null);
                for d in shared::contract::differences(&committed, &generated) {
                    eprintln!("relay-contract: {path}{d}");
                    stale = true;
                }
            }
            "" => print!("{text}"),
            other => {
                eprintln!("relay-contract: unknown option {other:?} (use --write or --check)");
                return ExitCode::FAILURE;
            }
        }
    }
    let api_doc = std::fs::read_to_string(root.join("docs/api.md")).unwrap_or_default();
    let mut tables: Vec<(&str, &str, Option<String>, String)> = Vec::new();
    for path in shared::config::reference::DOCUMENTS {
        let text = std::fs::read_to_string(root.join(path)).unwrap_or_default();
        let generated = shared::config::reference::regenerate(path, &text, &api_doc);
        tables.push((path, "configuration table", generated, text));
    }
    let path = shared::metrics::TABLE_DOCUMENT;
    let text = std::fs::read_to_string(root.join(path)).unwrap_or_default();
    tables.push((
        path,
        "metrics table",
        shared::metrics::regenerate_table(&text),
        text,
    ));
    for (path, what, generated, text) in tables {
        let Some(generated) = generated else {
            eprintln!("relay-contract: {path} has no generated {what} (its markers)");
            return ExitCode::FAILURE;
        };
        match mode.as_str() {
            "--write" if generated != text => {
                if let Err(e) = std::fs::write(root.join(path), generated) {
                    eprintln!("relay-contract: {path}: {e}");
                    return ExitCode::FAILURE;
                }
                eprintln!("relay-contract: wrote the {what} of {path}");
            }
            "--check" if generated != text => {
                eprintln!("relay-contract: {path}: the {what} differs from the code");
                stale = true;
            }
            _ => {}
        }
    }
    for d in shared::config::reference::rate_limit_differences(&api_doc) {
        eprintln!("relay-contract: {d} (edit docs/api.md §7.1 by hand)");
        stale = true;
    }
    if stale {
        eprintln!(
            "relay-contract: run `cargo run -p local-gateway --bin relay-contract -- --write`"
        );
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
