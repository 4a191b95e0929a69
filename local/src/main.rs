//! `local-gateway [--create-tables] [--lambda-endpoint URL]`: serves the relay on `RELAY_LISTEN`
//! (default 127.0.0.1:8080). With `--lambda-endpoint`, events go to functions behind that Lambda
//! invoke API (e.g. `cargo lambda watch`) instead of the handlers in this process.

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    shared::telemetry::init();
    let args: Vec<String> = std::env::args().collect();
    let lambda = args.iter().position(|a| a == "--lambda-endpoint").map(|i| {
        args.get(i + 1)
            .cloned()
            .ok_or("--lambda-endpoint needs a URL")
    });
    if args.iter().any(|a| a == "--create-tables") {
        let prefix = std::env::var("RELAY_TABLE_PREFIX").unwrap_or_else(|_| "relay".into());
        let client = shared::storage::dynamodb::client_from_env().await;
        shared::storage::dynamodb::tables::create_tables(&client, &prefix).await?;
    }
    let listen = std::env::var("RELAY_LISTEN").unwrap_or_else(|_| "127.0.0.1:8080".into());
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let gateway = match lambda {
        Some(endpoint) => {
            let max_body = std::env::var("RELAY_MAX_REQUEST_BYTES")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(shared::config::DEFAULT_MAX_REQUEST_BYTES);
            local_gateway::lambda_mode(&endpoint?, max_body)
        }
        None => local_gateway::in_process(shared::Config::from_env()?).await?,
    };
    tracing::info!(listen = %listener.local_addr()?, "relay gateway serving");
    local_gateway::serve(listener, gateway, shutdown()).await?;
    Ok(())
}

async fn shutdown() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
