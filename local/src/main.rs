//! `local-gateway [--create-tables]`: serves the relay on `RELAY_LISTEN` (default 127.0.0.1:8080).

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    shared::telemetry::init();
    let config = shared::Config::from_env()?;
    if std::env::args().any(|a| a == "--create-tables") {
        let client = shared::storage::dynamodb::client_from_env().await;
        shared::storage::dynamodb::tables::create_tables(&client, &config.table_prefix).await?;
    }
    let listen = std::env::var("RELAY_LISTEN").unwrap_or_else(|_| "127.0.0.1:8080".into());
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let gateway = local_gateway::in_process(config).await?;
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
