//! `relay-contract`: the machine-readable contract generated from the code (`shared::contract`).
//!   relay-contract            prints docs/openapi.json and docs/frames.schema.json to stdout
//!   relay-contract --write    writes them into docs/ (run after changing a route, field or frame)
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
    if stale {
        eprintln!(
            "relay-contract: run `cargo run -p local-gateway --bin relay-contract -- --write`"
        );
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
