//! `local-gateway`: serves the relay on `RELAY_LISTEN` (default 127.0.0.1:8080); `--help` lists
//! the options. The embedded DynamoDB engine starts before the runtime, so its address is in the
//! environment before any thread reads it.

use local_gateway::{cli::Options, dynamodb_engine::EmbeddedDynamo};

/// Frames and events are many small, short-lived allocations across threads; glibc's malloc
/// spent a quarter of the gateway's CPU on them under load (`./local/bench`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    shared::telemetry::init();
    match start() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("local-gateway: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn start() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let options = Options::parse(&args)?;
    let engine = match &options.dynamodb {
        Some(storage) => {
            let listen = options
                .dynamodb_listen
                .unwrap_or(([127, 0, 0, 1], 0).into());
            let started = std::time::Instant::now();
            let engine = EmbeddedDynamo::start(storage.clone(), listen)?;
            tracing::info!(
                addr = %engine.addr(),
                start_us = started.elapsed().as_micros() as u64,
                "dynoxide (embedded DynamoDB API) serving"
            );
            // Single-threaded still: nothing else reads the environment yet.
            std::env::set_var("AWS_ENDPOINT_URL_DYNAMODB", engine.endpoint());
            Some(engine)
        }
        None => None,
    };
    let runtime = tokio::runtime::Runtime::new()?;
    let result = runtime.block_on(local_gateway::run(options));
    drop(runtime);
    drop(engine); // after the gateway: the database closes last
    result
}
