//! The gateway's own WebSocket connections, and the `Pusher` that writes to them. A push returns
//! only once the frame is handed to the socket, as API Gateway's `PostToConnection` does.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use shared::storage::{PushError, Pusher};
use tokio::sync::{mpsc, oneshot};

/// A frame for a connection's writer task; `ack` learns whether the socket took it.
pub struct Outgoing {
    pub frame: String,
    pub ack: Option<oneshot::Sender<bool>>,
    /// Close the socket after this frame.
    pub close: bool,
}

#[derive(Clone, Default)]
pub struct Sockets {
    inner: Arc<RwLock<HashMap<String, Connection>>>,
}

#[derive(Clone)]
struct Connection {
    tx: mpsc::UnboundedSender<Outgoing>,
    connected_at_ms: u64,
    source_ip: String,
}

/// How long a push may wait for a socket write before it counts as failed.
const PUSH_TIMEOUT: Duration = Duration::from_secs(10);

impl Sockets {
    pub fn insert(&self, id: &str, tx: mpsc::UnboundedSender<Outgoing>, source_ip: String) {
        let conn = Connection {
            tx,
            connected_at_ms: shared::crypto::tokens::now_millis(),
            source_ip,
        };
        self.inner
            .write()
            .expect("sockets lock")
            .insert(id.to_string(), conn);
    }

    pub fn remove(&self, id: &str) {
        self.inner.write().expect("sockets lock").remove(id);
    }

    pub fn len(&self) -> usize {
        self.inner.read().expect("sockets lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn sender(&self, id: &str) -> Option<mpsc::UnboundedSender<Outgoing>> {
        self.inner
            .read()
            .expect("sockets lock")
            .get(id)
            .map(|c| c.tx.clone())
    }

    /// `(connected_at_ms, source_ip)` of a live connection.
    pub fn info(&self, id: &str) -> Option<(u64, String)> {
        self.inner
            .read()
            .expect("sockets lock")
            .get(id)
            .map(|c| (c.connected_at_ms, c.source_ip.clone()))
    }

    /// Writes a frame and waits until the socket has taken it.
    pub async fn send(&self, id: &str, frame: String) -> Result<(), PushError> {
        let tx = self.sender(id).ok_or(PushError::Gone)?;
        let (ack, written) = oneshot::channel();
        tx.send(Outgoing {
            frame,
            ack: Some(ack),
            close: false,
        })
        .map_err(|_| PushError::Gone)?;
        match tokio::time::timeout(PUSH_TIMEOUT, written).await {
            Ok(Ok(true)) => Ok(()),
            Ok(_) => Err(PushError::Gone),
            Err(_) => Err(PushError::Failed("socket write timed out".into())),
        }
    }

    /// Asks the connection to close; false if there is none.
    pub fn close(&self, id: &str) -> bool {
        match self.sender(id) {
            Some(tx) => tx
                .send(Outgoing {
                    frame: String::new(),
                    ack: None,
                    close: true,
                })
                .is_ok(),
            None => false,
        }
    }
}

#[async_trait]
impl Pusher for Sockets {
    async fn push(&self, connection_id: &str, frame: &str) -> Result<(), PushError> {
        self.send(connection_id, frame.to_string()).await
    }
}
