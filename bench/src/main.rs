//! `relay-bench`: the relay's benchmark (run it with `./local/bench`). See the library, `bench/src/`.
//!
//! `--render DIR` redraws DIR's benchmarks.svg and benchmarks.md from its benchmarks.json. Two
//! internal modes are helper processes of a run: `--serve-echo ADDR` (the bare WebSocket echo
//! server of the floors) and `--lambda-floor` (a do-nothing Lambda function).

use relay_bench as bench;

/// The gateway's allocator (local/src/main.rs), so that a floor run in this process (scenario 11's
/// Argon2id, whose 19 MiB blocks glibc's malloc maps and unmaps at every hash; the echo server)
/// allocates as the server it stands beside.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(i) = args.iter().position(|a| a == "--serve-echo") {
        let addr = args.get(i + 1).map(String::as_str).unwrap_or("127.0.0.1:0");
        bench::floors::serve_echo(addr).await;
        return;
    }
    if let Some(i) = args.iter().position(|a| a == "--render") {
        let dir = args.get(i + 1).map(String::as_str).unwrap_or("docs");
        if let Err(e) = bench::report::render(std::path::Path::new(dir)) {
            eprintln!("relay-bench: {e}");
            std::process::exit(2);
        }
        return;
    }
    if args.iter().any(|a| a == "--lambda-floor") {
        bench::floors::lambda_floor().await;
        return;
    }
    let result = match bench::Opts::parse(&args) {
        Ok(opts) => bench::run(opts).await,
        Err(e) => Err(e),
    };
    if let Err(e) = result {
        eprintln!("relay-bench: {e}");
        std::process::exit(2);
    }
}
