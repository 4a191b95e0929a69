//! The gateway's HTTP servers: the public one (the HTTP API and the WebSocket API at `/ws`), and
//! the Management API at `/@connections/{id}` on a listener of its own (loopback only: it has no
//! authentication, so a client that learned a connection id could otherwise write to it).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::apigw::ApiGatewayV2httpResponse;
use aws_lambda_events::encodings::Body as EventBody;
use axum::body::{to_bytes, Body};
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, FromRequestParts, Path, State};
use axum::http::{Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use base64::Engine;
use futures::StreamExt;
use metrics_exporter_prometheus::PrometheusHandle;
use shared::Error;
use tokio::sync::mpsc;
use tungstenite::error::ProtocolError;

use crate::cli::Settings;
use crate::events::{self, HttpParts};
use crate::functions::Functions;
use crate::socket_writer::{Ended, SocketWriter};
use crate::sockets::{Outgoing, Queue, Sockets};
use crate::{monitoring, routes};

#[derive(Clone)]
pub struct Gateway {
    pub functions: Arc<dyn Functions>,
    pub sockets: Sockets,
    pub max_body_bytes: usize,
    /// Bound of each connection's outbound queue (`RELAY_WS_QUEUE_BYTES`).
    pub queue_bytes: usize,
    /// A connection with no message either way for this long is closed
    /// (`RELAY_WS_IDLE_TIMEOUT_SECS`).
    pub idle_timeout: Duration,
    /// The process's Prometheus recorder, when the gateway binary installed one
    /// (`RELAY_METRICS=on`): `/metrics` of the management listener renders it.
    pub metrics: Option<PrometheusHandle>,
}

impl Gateway {
    /// The gateway's own settings applied to every connection opened from now on.
    pub fn with_settings(mut self, settings: &Settings) -> Self {
        self.queue_bytes = settings.queue_bytes;
        self.idle_timeout = settings.idle_timeout;
        self
    }

    /// `/metrics` serves what `handle`'s recorder holds.
    pub fn with_metrics(mut self, handle: Option<PrometheusHandle>) -> Self {
        self.metrics = handle;
        self
    }
}

/// The public routes: the HTTP API and `/ws` (`/@connections` is not among them: see
/// [`management_router`]).
pub fn router(gateway: Gateway) -> Router {
    Router::new()
        .route("/ws", get(websocket))
        .route("/ws/provisioning", get(websocket))
        .fallback(http_api)
        .with_state(gateway)
}

/// The loopback listener's routes: the Management API, and the monitoring (`/metrics`,
/// `/healthz`, `/readyz`), which tells more about the traffic than a client should learn.
pub fn management_router(gateway: Gateway) -> Router {
    let monitoring = monitoring::router(monitoring::Monitoring {
        functions: gateway.functions.clone(),
        metrics: gateway.metrics.clone(),
    });
    Router::new()
        .route("/@connections/{id}", any(management))
        .with_state(gateway)
        .merge(monitoring)
}

/// Serves the public routes until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    gateway: Gateway,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_router(listener, router(gateway), shutdown).await
}

/// Serves the Management API until `shutdown` resolves; `listener` should be on loopback.
pub async fn serve_management(
    listener: tokio::net::TcpListener,
    gateway: Gateway,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_router(listener, management_router(gateway), shutdown).await
}

async fn serve_router(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    // Small frames must leave at once: with Nagle on, the last frame of a burst waits for the
    // peer's delayed ACK (≈ 40 ms).
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

fn error_response(e: &Error) -> Response {
    (
        StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        [("content-type", "application/json")],
        e.to_json().to_string(),
    )
        .into_response()
}

fn from_v2(resp: ApiGatewayV2httpResponse) -> Response {
    let status = StatusCode::from_u16(resp.status_code as u16).unwrap_or(StatusCode::BAD_GATEWAY);
    let body = match resp.body {
        Some(EventBody::Text(t)) => Body::from(t),
        Some(EventBody::Binary(b)) => Body::from(b),
        _ => Body::empty(),
    };
    let mut out = Response::new(body);
    *out.status_mut() = status;
    *out.headers_mut() = resp.headers;
    out
}

/// Any route of the HTTP API: match it, build the payload v2 event, call the function.
async fn http_api(
    State(gw): State<Gateway>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request<Body>,
) -> Response {
    let started = std::time::Instant::now();
    // What the gateway answers itself never reaches a function, whose wrapper records the rest.
    let answered = |route: &'static str, e: Error| {
        shared::metrics::http_request(route, e.status(), started.elapsed());
        error_response(&e)
    };
    let (parts, body) = req.into_parts();
    let Some(route) = routes::matching(parts.method.as_str(), parts.uri.path()) else {
        return answered(shared::metrics::UNMATCHED_ROUTE, Error::RouteNotFound);
    };
    let declared = parts
        .headers
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > gw.max_body_bytes) {
        return answered(route.key, Error::PayloadTooLarge);
    }
    let Ok(body) = to_bytes(body, gw.max_body_bytes).await else {
        return answered(route.key, Error::PayloadTooLarge);
    };
    let event = events::http_event(
        &route,
        HttpParts {
            method: parts.method.clone(),
            path: parts.uri.path(),
            query: parts.uri.query().unwrap_or(""),
            headers: parts.headers.clone(),
            source_ip: peer.ip().to_string(),
            body: body.to_vec(),
        },
    );
    from_v2(gw.functions.http(route.function, event).await)
}

/// API Gateway's limit for one WebSocket message.
const MAX_INBOUND_MESSAGE: usize = 128 * 1024;

/// How long a closing connection's writer may take to send what is queued and the Close.
const WRITER_GRACE: Duration = Duration::from_secs(1);

/// How long the socket stays open after a Close for a bad frame. The rest of the frame is unread
/// (an oversize one is refused at its header), and closing a socket with unread input resets
/// it, which would destroy the Close before a client still writing that frame reads it.
const CLOSE_LINGER: Duration = Duration::from_secs(2);

/// Control frames (Ping, Pong) one connection may send: a burst of [`CONTROL_FRAMES_BURST`],
/// then one per [`CONTROL_FRAME_EVERY`]. The gateway answers a Ping itself, no function sees it
/// and no rate limit counts it, so without this budget one anonymous socket could keep the
/// gateway writing Pongs as fast as it sends Pings.
pub const CONTROL_FRAMES_BURST: u32 = 20;
pub const CONTROL_FRAME_EVERY: Duration = Duration::from_secs(1);

/// The close code for a connection past its control-frame budget (RFC 6455: policy violation).
const CLOSE_POLICY: u16 = 1008;

/// The close code for a binary frame: API Gateway does not take binary frames and disconnects
/// the client with it (RFC 6455: unsupported data).
const CLOSE_BINARY: u16 = 1003;

/// One connection's control-frame budget, a token bucket refilled by whole frames.
#[derive(Debug)]
struct ControlBudget {
    tokens: u32,
    since: tokio::time::Instant,
}

impl ControlBudget {
    fn new(now: tokio::time::Instant) -> Self {
        Self {
            tokens: CONTROL_FRAMES_BURST,
            since: now,
        }
    }

    /// Takes one frame's token; false once the budget is spent.
    fn take(&mut self, now: tokio::time::Instant) -> bool {
        let every = CONTROL_FRAME_EVERY.as_millis();
        let earned = now.saturating_duration_since(self.since).as_millis() / every;
        if earned > 0 {
            let tokens = (u128::from(self.tokens) + earned).min(u128::from(CONTROL_FRAMES_BURST));
            self.tokens = tokens as u32;
            // A full bucket earns nothing while it waits.
            self.since = if self.tokens == CONTROL_FRAMES_BURST {
                now
            } else {
                self.since + CONTROL_FRAME_EVERY * earned as u32
            };
        }
        match self.tokens.checked_sub(1) {
            Some(left) => {
                self.tokens = left;
                true
            }
            None => false,
        }
    }
}

/// The close code (RFC 6455) for a frame the socket refused: 1009 for a message over
/// [`MAX_INBOUND_MESSAGE`] (as API Gateway closes), 1007 for a text frame that is not UTF-8,
/// 1002 for a protocol violation; none for a lost connection.
fn close_code(e: axum::Error) -> Option<u16> {
    match *e.into_inner().downcast::<tungstenite::Error>().ok()? {
        tungstenite::Error::Capacity(_) => Some(1009),
        tungstenite::Error::Utf8(_) => Some(1007),
        tungstenite::Error::Protocol(ProtocolError::ResetWithoutClosingHandshake) => None,
        tungstenite::Error::Protocol(_) => Some(1002),
        _ => None,
    }
}

fn new_connection_id() -> String {
    let bytes: [u8; 12] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// `GET /ws?token=…`: `$connect` decides before the upgrade; a refusal fails the handshake.
/// `GET /ws/provisioning` is the anonymous provisioning socket, `/ws?provisioning=1` as on AWS
/// (whose WebSocket API has one URL).
async fn websocket(
    State(gw): State<Gateway>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request<Body>,
) -> Response {
    let query = match req.uri().path() {
        "/ws/provisioning" => Some("provisioning=1".to_string()),
        _ => req.uri().query().map(str::to_string),
    };
    let (mut parts, _) = req.into_parts();
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(u) => u,
        Err(rejection) => return rejection.into_response(),
    };
    let id = new_connection_id();
    let ip = peer.ip().to_string();
    let (queue, rx) = Queue::new(gw.queue_bytes);
    // Registered before `$connect` so a message pushed in the meantime is not lost.
    gw.sockets.insert(&id, queue.clone(), ip.clone());
    let resp = gw
        .functions
        .websocket(events::websocket_event(
            "$connect",
            &id,
            &ip,
            query.as_deref(),
            None,
        ))
        .await;
    if resp.status_code != 200 {
        gw.sockets.remove(&id);
        let status =
            StatusCode::from_u16(resp.status_code as u16).unwrap_or(StatusCode::UNAUTHORIZED);
        let body = match resp.body {
            Some(EventBody::Text(t)) => t,
            _ => String::new(),
        };
        // `retry-after` of a rate-limited handshake among them.
        let headers = resp.headers;
        return (
            status,
            headers,
            [("content-type", "application/json")],
            body,
        )
            .into_response();
    }
    upgrade
        // Small buffers keep idle connections cheap (the 128 KiB default read buffer would
        // dominate); messages are bounded as API Gateway bounds them (128 KB).
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        // What the socket holds unwritten: the frames the queue bound lets through (counted
        // there until flushed) with their headers, and the Pongs tungstenite answers Pings
        // with by itself, which the queue never sees. Unbounded (the default), a client that
        // sends Pings and reads nothing grows it without end; bounded, a Pong that does not fit
        // replaces the one waiting, and a frame that does not fit fails the connection.
        .max_write_buffer_size(gw.queue_bytes.saturating_mul(2))
        .max_message_size(MAX_INBOUND_MESSAGE)
        .max_frame_size(MAX_INBOUND_MESSAGE)
        .on_upgrade(move |socket| connection(gw, id, ip, socket, queue, rx))
}

/// One upgraded connection. Its writer ([`SocketWriter`]) runs as a task of its own, fed by
/// `rx`; this task reads frames in order, answers each through `$default` (the reply queued on
/// `queue`), and ends the connection with `$disconnect`. A killed queue (full: the client does
/// not read) ends both at once, without waiting for a socket that takes nothing.
async fn connection(
    gw: Gateway,
    id: String,
    ip: String,
    socket: WebSocket,
    queue: Queue,
    rx: mpsc::UnboundedReceiver<Outgoing>,
) {
    shared::metrics::connections_open(1.0);
    let (sink, mut stream) = socket.split();
    let killed = queue.killed();
    let kill_switch = queue.kill_switch();
    let mut writer = tokio::spawn(async move {
        tokio::select! {
            // Dropping the writer drops the frames it holds: their pushes see the connection gone.
            _ = killed => {}
            ended = SocketWriter::new(sink, rx).run() => {
                // A socket that failed takes nothing more: the connection ends, reader included.
                if ended == Ended::Failed {
                    kill_switch.kill();
                }
            }
        }
    });
    let killed = queue.killed();
    tokio::pin!(killed);
    let mut linger = false;
    // API Gateway ends every connection after two hours; so does this gateway.
    let lifetime = tokio::time::sleep(Duration::from_millis(
        shared::storage::redis::CONNECTION_TTL_MS,
    ));
    tokio::pin!(lifetime);
    // API Gateway closes a connection with no message either way for its idle timeout. Control
    // frames are not messages: only what is read here and what is queued for the client counts.
    let idle = tokio::time::sleep(gw.idle_timeout);
    tokio::pin!(idle);
    let mut last_read = tokio::time::Instant::now();
    let mut control = ControlBudget::new(last_read);
    // Frames of one connection are handled in order, one at a time.
    loop {
        let msg = tokio::select! {
            next = stream.next() => match next {
                Some(Ok(msg)) => msg,
                Some(Err(e)) => {
                    if let Some(code) = close_code(e) {
                        queue.send(Outgoing::close(Some(code)));
                        linger = true;
                    }
                    break;
                }
                None => break,
            },
            _ = &mut lifetime => {
                queue.send(Outgoing::close(None));
                break;
            }
            _ = &mut idle => {
                let active_until = last_read.max(queue.last_frame_at()) + gw.idle_timeout;
                if active_until > tokio::time::Instant::now() {
                    idle.as_mut().reset(active_until);
                    continue;
                }
                tracing::info!(connection_id = %id, "idle connection closed");
                queue.send(Outgoing::close(None));
                break;
            }
            _ = &mut killed => break,
        };
        let text = match msg {
            Message::Text(t) => t.to_string(),
            Message::Binary(_) => {
                queue.send(Outgoing::close(Some(CLOSE_BINARY)));
                linger = true;
                break;
            }
            Message::Ping(_) | Message::Pong(_) => {
                if control.take(tokio::time::Instant::now()) {
                    continue;
                }
                tracing::warn!(connection_id = %id, "control frames past the budget: closing");
                queue.send(Outgoing::close(Some(CLOSE_POLICY)));
                linger = true;
                break;
            }
            Message::Close(_) => break,
        };
        last_read = tokio::time::Instant::now();
        let resp = gw
            .functions
            .websocket(events::websocket_event(
                "$default",
                &id,
                &ip,
                None,
                Some(text),
            ))
            .await;
        if let Some(EventBody::Text(reply)) = resp.body {
            let reply = Outgoing {
                frame: reply,
                ..Outgoing::default()
            };
            if !queue.send(reply) {
                break;
            }
        }
    }
    gw.sockets.remove(&id);
    // The writer ends once the last sender is gone: it writes what is queued (a Close among it)
    // unless the socket is past taking it.
    drop(queue);
    if tokio::time::timeout(WRITER_GRACE, &mut writer)
        .await
        .is_err()
    {
        writer.abort();
    }
    let _ = gw
        .functions
        .websocket(events::websocket_event("$disconnect", &id, &ip, None, None))
        .await;
    // Open until `$disconnect` is answered: a scrape that sees none open sees it counted.
    shared::metrics::connections_open(-1.0);
    if linger {
        tokio::spawn(async move {
            tokio::time::sleep(CLOSE_LINGER).await;
            drop(stream);
        });
    }
}

fn gone() -> Response {
    (
        StatusCode::GONE,
        [
            ("x-amzn-errortype", "GoneException"),
            ("content-type", "application/json"),
        ],
        r#"{"message":"Gone"}"#,
    )
        .into_response()
}

/// API Gateway's Management API: `POST` writes a frame, `GET` describes, `DELETE` closes.
async fn management(
    State(gw): State<Gateway>,
    Path(id): Path<String>,
    req: Request<Body>,
) -> Response {
    let method = req.method().clone();
    match method.as_str() {
        "POST" => {
            let Ok(body) = to_bytes(req.into_body(), 128 * 1024).await else {
                return (
                    StatusCode::PAYLOAD_TOO_LARGE,
                    r#"{"message":"Payload too large"}"#,
                )
                    .into_response();
            };
            match gw
                .sockets
                .send(&id, String::from_utf8_lossy(&body).into_owned())
                .await
            {
                Ok(()) => StatusCode::OK.into_response(),
                Err(_) => gone(),
            }
        }
        "GET" => match gw.sockets.info(&id) {
            Some((at, ip)) => axum::Json(serde_json::json!({
                "ConnectedAt": at as f64 / 1000.0,
                "LastActiveAt": at as f64 / 1000.0,
                "Identity": {"SourceIp": ip},
            }))
            .into_response(),
            None => gone(),
        },
        "DELETE" => {
            if gw.sockets.close(&id) {
                StatusCode::NO_CONTENT.into_response()
            } else {
                gone()
            }
        }
        _ => StatusCode::METHOD_NOT_ALLOWED.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_control_budget_allows_a_burst_then_one_frame_per_interval() {
        let start = tokio::time::Instant::now();
        let mut budget = ControlBudget::new(start);
        for i in 0..CONTROL_FRAMES_BURST {
            assert!(budget.take(start), "frame {i} of the burst");
        }
        assert!(!budget.take(start), "past the burst");
        let almost = start + CONTROL_FRAME_EVERY - Duration::from_millis(1);
        assert!(!budget.take(almost), "before a whole interval");
        assert!(
            budget.take(start + CONTROL_FRAME_EVERY),
            "one more per interval"
        );
        assert!(!budget.take(start + CONTROL_FRAME_EVERY));
        assert!(budget.take(start + CONTROL_FRAME_EVERY * 2), "and one more");
    }

    #[test]
    fn a_full_control_budget_saves_nothing_while_it_waits() {
        let start = tokio::time::Instant::now();
        let mut budget = ControlBudget::new(start);
        let later = start + CONTROL_FRAME_EVERY * 1000;
        for _ in 0..CONTROL_FRAMES_BURST {
            assert!(budget.take(later));
        }
        assert!(
            !budget.take(later),
            "the burst, not a thousand intervals' worth"
        );
    }
}
