//! The gateway's own WebSocket connections, and the `Pusher` that writes to them. A push returns
//! only once the frame is handed to the socket, as API Gateway's `PostToConnection` does.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use shared::storage::{PushError, Pusher};
use tokio::sync::{mpsc, oneshot, watch};

/// A frame for a connection's writer task; `ack` learns whether the socket took it.
#[derive(Default)]
pub struct Outgoing {
    pub frame: String,
    pub ack: Option<oneshot::Sender<bool>>,
    /// Close the socket after this frame.
    pub close: bool,
    /// The close code sent with a close (none: a Close without a code).
    pub close_code: Option<u16>,
    /// The frame's share of its queue's byte bound, given back once the socket has it (flushed)
    /// or the frame is dropped.
    pub charge: Option<Charge>,
}

impl Outgoing {
    /// A close after the frames queued before it.
    pub fn close(code: Option<u16>) -> Self {
        Self {
            close: true,
            close_code: code,
            ..Self::default()
        }
    }
}

/// Bytes of a frame counted against its connection's queue until the socket has it.
pub struct Charge {
    queued: Arc<AtomicUsize>,
    bytes: usize,
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.queued.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// One connection's outbound queue, bounded in bytes. A client that does not read leaves its
/// frames here (its socket buffers full); past the bound the connection is dropped instead of
/// growing the gateway's memory: pushes waiting on it fail `Gone` (the relay puts their envelopes
/// back in the inbox) and the client fetches them again on its next connection.
#[derive(Clone)]
pub struct Queue {
    tx: mpsc::UnboundedSender<Outgoing>,
    queued: Arc<AtomicUsize>,
    max_bytes: usize,
    kill: Arc<watch::Sender<bool>>,
    /// When the queue was made, and how long after that a frame was last queued (ms): the
    /// server's side of the connection's activity, for the idle timeout.
    created: tokio::time::Instant,
    last_frame_ms: Arc<AtomicU64>,
}

impl Queue {
    /// The queue and the writer's end of it.
    pub fn new(max_bytes: usize) -> (Self, mpsc::UnboundedReceiver<Outgoing>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let (kill, _) = watch::channel(false);
        let queue = Self {
            tx,
            queued: Arc::new(AtomicUsize::new(0)),
            max_bytes,
            kill: Arc::new(kill),
            created: tokio::time::Instant::now(),
            last_frame_ms: Arc::new(AtomicU64::new(0)),
        };
        (queue, rx)
    }

    /// When a frame was last queued for the client (the queue's creation if none was).
    pub fn last_frame_at(&self) -> tokio::time::Instant {
        self.created + Duration::from_millis(self.last_frame_ms.load(Ordering::Acquire))
    }

    /// A handle that kills the connection without keeping its queue open.
    pub fn kill_switch(&self) -> KillSwitch {
        KillSwitch(self.kill.clone())
    }

    /// Queues a frame; false when the connection is gone, or when the frame would pass the
    /// bound (the connection is then killed).
    pub fn send(&self, mut out: Outgoing) -> bool {
        let bytes = out.frame.len();
        let before = self.queued.fetch_add(bytes, Ordering::AcqRel);
        let charge = Charge {
            queued: self.queued.clone(),
            bytes,
        };
        // Close frames (empty) always pass: a close must reach a full queue too.
        if bytes > 0 && before + bytes > self.max_bytes {
            drop(charge);
            tracing::warn!(
                queued = before,
                max = self.max_bytes,
                "outbound queue full: dropping the connection"
            );
            self.kill();
            return false;
        }
        out.charge = Some(charge);
        if bytes > 0 {
            let since = self.created.elapsed().as_millis() as u64;
            self.last_frame_ms.fetch_max(since, Ordering::AcqRel);
        }
        self.tx.send(out).is_ok()
    }

    /// Ends the connection now, whatever its writer is doing.
    pub fn kill(&self) {
        self.kill.send_replace(true);
    }

    /// Resolves once the connection is killed.
    pub fn killed(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.kill.subscribe();
        async move {
            // Every queue dropped is not a kill: the writer then ends by itself, after writing
            // what is queued (a Close among it).
            if rx.wait_for(|k| *k).await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// Bytes waiting for the socket (queued, or fed and not yet flushed).
    pub fn queued_bytes(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }
}

/// Kills a connection as [`Queue::kill`] does, for a task that must not hold its queue open.
pub struct KillSwitch(Arc<watch::Sender<bool>>);

impl KillSwitch {
    pub fn kill(&self) {
        self.0.send_replace(true);
    }
}

#[derive(Clone, Default)]
pub struct Sockets {
    inner: Arc<RwLock<HashMap<String, Connection>>>,
}

#[derive(Clone)]
struct Connection {
    queue: Queue,
    connected_at_ms: u64,
    source_ip: String,
}

/// How long a push may wait for a socket write before it counts as failed.
const PUSH_TIMEOUT: Duration = Duration::from_secs(10);

impl Sockets {
    pub fn insert(&self, id: &str, queue: Queue, source_ip: String) {
        let conn = Connection {
            queue,
            connected_at_ms: shared::clock::unix_ms(),
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

    fn queue(&self, id: &str) -> Option<Queue> {
        self.inner
            .read()
            .expect("sockets lock")
            .get(id)
            .map(|c| c.queue.clone())
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
        let queue = self.queue(id).ok_or(PushError::Gone)?;
        let (ack, written) = oneshot::channel();
        let out = Outgoing {
            frame,
            ack: Some(ack),
            ..Outgoing::default()
        };
        if !queue.send(out) {
            return Err(PushError::Gone);
        }
        match tokio::time::timeout(PUSH_TIMEOUT, written).await {
            Ok(Ok(true)) => Ok(()),
            Ok(_) => Err(PushError::Gone),
            Err(_) => Err(PushError::Failed("socket write timed out".into())),
        }
    }

    /// Asks the connection to close; false if there is none.
    pub fn close(&self, id: &str) -> bool {
        match self.queue(id) {
            Some(queue) => queue.send(Outgoing::close(None)),
            None => false,
        }
    }
}

#[async_trait]
impl Pusher for Sockets {
    async fn push(&self, connection_id: &str, frame: &str) -> Result<(), PushError> {
        self.send(connection_id, frame.to_string()).await
    }

    async fn close(&self, connection_id: &str) -> Result<(), PushError> {
        if Sockets::close(self, connection_id) {
            Ok(())
        } else {
            Err(PushError::Gone)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(text: &str) -> Outgoing {
        Outgoing {
            frame: text.to_string(),
            ..Outgoing::default()
        }
    }

    #[tokio::test]
    async fn a_frame_past_the_byte_bound_kills_the_connection() {
        let (queue, mut rx) = Queue::new(10);
        assert!(queue.send(frame("12345")));
        assert!(queue.send(frame("12345")));
        assert_eq!(queue.queued_bytes(), 10);
        assert!(!queue.send(frame("1")), "past the bound");
        tokio::time::timeout(Duration::from_secs(1), queue.killed())
            .await
            .expect("killed");
        // A frame the writer is done with no longer counts.
        drop(rx.recv().await);
        assert_eq!(queue.queued_bytes(), 5);
        assert!(
            queue.send(Outgoing::close(Some(1000))),
            "a close always passes"
        );
    }

    #[tokio::test]
    async fn a_queued_frame_is_activity_and_a_close_is_not() {
        let (queue, _rx) = Queue::new(100);
        let made = queue.last_frame_at();
        // Past a whole millisecond, so a frame queued now is later than the queue's creation.
        let later = made + Duration::from_millis(2);
        while tokio::time::Instant::now() < later {
            tokio::task::yield_now().await;
        }
        assert!(queue.send(Outgoing::close(None)));
        assert_eq!(queue.last_frame_at(), made, "a close is no activity");
        assert!(queue.send(frame("pong")));
        assert!(queue.last_frame_at() > made, "a frame is");
    }

    #[tokio::test]
    async fn the_kill_switch_kills_without_holding_the_queue() {
        let (queue, mut rx) = Queue::new(100);
        let switch = queue.kill_switch();
        let killed = queue.killed();
        drop(queue);
        assert!(
            rx.recv().await.is_none(),
            "the queue closed with its last sender"
        );
        switch.kill();
        tokio::time::timeout(Duration::from_secs(1), killed)
            .await
            .expect("killed");
    }
}
