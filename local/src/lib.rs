//! The local gateway: plays API Gateway's part (HTTP API v2, WebSocket API, Management API) in
//! front of the very handler functions the Lambda binaries run.

pub mod cli;
pub mod dynamodb_engine;
pub mod events;
pub mod functions;
pub mod lambda;
pub mod monitoring;
pub mod routes;
pub mod server;
pub mod socket_writer;
pub mod sockets;

use std::sync::Arc;

use shared::config::{settings, Env};
use shared::{App, Config};

pub use server::{management_router, router, serve, serve_management, Gateway};

/// A gateway calling the handlers in this process, with its sockets as the relay's pusher.
pub async fn in_process(config: Config) -> shared::Result<Gateway> {
    let max_body_bytes = config.max_request_bytes;
    let sockets = sockets::Sockets::default();
    let pusher: Arc<dyn shared::storage::Pusher> = Arc::new(sockets.clone());
    let blobs = shared::storage::s3::blobs(&config).await;
    let app = App::from_parts(config, shared::clock::system(), Some(pusher), blobs).await?;
    Ok(in_process_with(app, sockets, max_body_bytes))
}

/// `sockets` are the ones `app` closes connections through (`App::from_parts`), so that logout
/// and account deletion close this gateway's sockets.
pub fn in_process_with(app: Arc<App>, sockets: sockets::Sockets, max_body_bytes: usize) -> Gateway {
    let relay = app.relay(Arc::new(sockets.clone()));
    Gateway {
        functions: Arc::new(functions::InProcess { app, relay }),
        sockets,
        max_body_bytes,
        queue_bytes: cli::DEFAULT_QUEUE_BYTES,
        idle_timeout: cli::DEFAULT_IDLE_TIMEOUT,
        metrics: None,
    }
}

/// A gateway sending every event to functions behind a Lambda invoke API at `endpoint`.
pub fn lambda_mode(endpoint: &str, max_body_bytes: usize) -> Gateway {
    Gateway {
        functions: Arc::new(lambda::LambdaEndpoint::new(endpoint)),
        sockets: sockets::Sockets::default(),
        max_body_bytes,
        queue_bytes: cli::DEFAULT_QUEUE_BYTES,
        idle_timeout: cli::DEFAULT_IDLE_TIMEOUT,
        metrics: None,
    }
}

/// The gateway process after its options are read (and its embedded engine started): tables,
/// listener, then serve until Ctrl-C or SIGTERM.
pub async fn run(options: cli::Options) -> Result<(), Box<dyn std::error::Error>> {
    let env = |k: &str| std::env::var(k).ok();
    // Installed first, so that the start's own calls (tables, connections) are counted.
    let metrics = if shared::telemetry::metrics_enabled(&Env::new(&env))? {
        Some(monitoring::install()?)
    } else {
        None
    };
    if options.create_tables {
        let prefix = Env::new(&env).string(&settings::RELAY_TABLE_PREFIX);
        let client = shared::storage::dynamodb::client_from_env().await;
        shared::storage::dynamodb::tables::create_tables(&client, &prefix).await?;
    }
    let settings = cli::Settings::from_env()?;
    if options.lambda_endpoint.is_some() && settings.management_listen.port() == 0 {
        // The functions push through the Management API: they must know where it is.
        return Err(
            "RELAY_MANAGEMENT_LISTEN is required with --lambda-endpoint (point the \
                    functions' WS_MANAGEMENT_ENDPOINT at it)"
                .into(),
        );
    }
    let listen = &settings.listen;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let management = settings.management_listen;
    let management_listener = tokio::net::TcpListener::bind(management)
        .await
        .map_err(|e| format!("cannot listen on {management} (RELAY_MANAGEMENT_LISTEN): {e}"))?;
    let gateway = match &options.lambda_endpoint {
        Some(endpoint) => {
            // The functions read the relay's settings; the gateway needs only the body limit.
            let max_body =
                Env::new(&|k| std::env::var(k).ok()).number(&settings::RELAY_MAX_REQUEST_BYTES)?;
            lambda_mode(endpoint, max_body)
        }
        None => in_process(Config::from_env()?).await?,
    }
    .with_settings(&settings)
    .with_metrics(metrics);
    tracing::info!(
        listen = %listener.local_addr()?,
        management = %management_listener.local_addr()?,
        "relay gateway serving"
    );
    // Ends with the process: nothing waits on it at shutdown.
    tokio::spawn(serve_management(
        management_listener,
        gateway.clone(),
        std::future::pending(),
    ));
    serve(listener, gateway, shutdown_signal()).await?;
    Ok(())
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
