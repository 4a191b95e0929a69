//! The local gateway: plays API Gateway's part (HTTP API v2, WebSocket API, Management API) in
//! front of the very handler functions the Lambda binaries run.

pub mod events;
pub mod functions;
pub mod lambda;
pub mod routes;
pub mod server;
pub mod sockets;

use std::sync::Arc;

use shared::{App, Config};

pub use server::{router, serve, Gateway};

/// A gateway calling the handlers in this process, with its sockets as the relay's pusher.
pub async fn in_process(config: Config) -> shared::Result<Gateway> {
    let max_body_bytes = config.max_request_bytes;
    let app = App::from_config(config).await?;
    Ok(in_process_with(app, max_body_bytes))
}

pub fn in_process_with(app: Arc<App>, max_body_bytes: usize) -> Gateway {
    let sockets = sockets::Sockets::default();
    let relay = app.relay(Arc::new(sockets.clone()));
    Gateway {
        functions: Arc::new(functions::InProcess { app, relay }),
        sockets,
        max_body_bytes,
    }
}

/// A gateway sending every event to functions behind a Lambda invoke API at `endpoint`.
pub fn lambda_mode(endpoint: &str, max_body_bytes: usize) -> Gateway {
    Gateway {
        functions: Arc::new(lambda::LambdaEndpoint::new(endpoint)),
        sockets: sockets::Sockets::default(),
        max_body_bytes,
    }
}
