//! Ack mode and idempotent sends: ack-mode connections (`?ack=1`), `ack` frames, and
//! the small readers the suite needs to tell a pushed frame, a quiet socket and a closed one
//! apart.

use std::time::Duration;

use futures::StreamExt;
use redis::AsyncCommands;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::client::Ws;
use crate::stack::Stack;

/// How long an envelope written to an ack-mode connection waits for its acknowledgement before
/// it is delivered again: the stack's `FETCH_LEASE_MS` (the lease of fetch batches in flight).
pub fn ack_lease(stack: &Stack) -> Duration {
    stack.config.relay.fetch_lease
}

/// The WebSocket URL of an ack-mode connection with `token`.
pub fn ack_url(stack: &Stack, token: &str) -> String {
    with_query(stack, token, "ack=1")
}

/// The WebSocket URL with `token` and one more query parameter (`ack=true`, `ack=0`, …).
pub fn with_query(stack: &Stack, token: &str, query: &str) -> String {
    format!("{}&{query}", stack.ws_url(token))
}

/// An ack-mode connection with `token`.
pub async fn connect_ack(stack: &Stack, token: &str) -> Ws {
    Ws::connect(&ack_url(stack, token))
        .await
        .expect("ack-mode websocket handshake")
}

/// An `ack` frame for `ids`, with frame id `id` when given.
pub fn ack_frame(id: Option<&str>, ids: &[String]) -> Value {
    match id {
        Some(id) => json!({"action": "ack", "id": id, "ids": ids}),
        None => json!({"action": "ack", "ids": ids}),
    }
}

/// Sends `frame` and returns the next frame that is not a pushed `messages` frame; envelopes
/// pushed meanwhile are collected into `pushed`.
pub async fn reply_to(ws: &mut Ws, frame: Value, pushed: &mut Vec<Value>) -> Value {
    ws.send(frame).await;
    ws.until_reply(pushed).await
}

/// Sends `frame` and returns its reply; asserts nothing is pushed to `ws` on the way.
pub async fn reply_alone(ws: &mut Ws, frame: Value) -> Value {
    let mut pushed = Vec::new();
    let reply = reply_to(ws, frame, &mut pushed).await;
    assert!(pushed.is_empty(), "messages pushed meanwhile: {pushed:?}");
    reply
}

/// Sends an `ack` for `ids` with frame id `id` and returns its whole reply (nothing may be
/// pushed on the way).
pub async fn ack(ws: &mut Ws, id: Option<&str>, ids: &[String]) -> Value {
    reply_alone(ws, ack_frame(id, ids)).await
}

/// Acks `ids` (frame id `id`), asserts the reply's shape and returns its `acked` count.
pub async fn acked(ws: &mut Ws, id: &str, ids: &[String]) -> u64 {
    let reply = ack(ws, Some(id), ids).await;
    assert_eq!(reply["type"], "acked", "not an ack reply: {reply}");
    assert_eq!(reply["id"], id, "frame id not echoed: {reply}");
    assert_eq!(
        reply.as_object().map(|o| o.len()),
        Some(3),
        "an ack reply has exactly type, id, acked: {reply}"
    );
    reply["acked"]
        .as_u64()
        .unwrap_or_else(|| panic!("no acked count: {reply}"))
}

/// The `id`s of envelopes, in order.
pub fn envelope_ids(envelopes: &[Value]) -> Vec<String> {
    envelopes
        .iter()
        .map(|e| {
            e["id"]
                .as_str()
                .unwrap_or_else(|| panic!("envelope without id: {e}"))
                .to_string()
        })
        .collect()
}

/// The bodies of envelopes as text, in order.
pub fn texts(envelopes: &[Value]) -> Vec<String> {
    envelopes
        .iter()
        .map(|e| String::from_utf8(crate::devices::body_of(e)).expect("utf-8 body"))
        .collect()
}

/// `prefix0`, `prefix1`, … for `range`.
pub fn names(prefix: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("{prefix}{i}")).collect()
}

/// What the next read of a socket gave.
#[derive(Debug)]
pub enum Next {
    /// A JSON text frame.
    Frame(Value),
    /// Nothing within the wait.
    Quiet,
    /// The server closed the socket (a Close frame, the end of the stream or an error).
    Closed,
}

/// The next text frame of `ws` within `wait`.
pub async fn next_frame(ws: &mut Ws, wait: Duration) -> Next {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, ws.stream.next()).await {
            Err(_) => return Next::Quiet,
            Ok(None | Some(Err(_)) | Some(Ok(Message::Close(_)))) => return Next::Closed,
            Ok(Some(Ok(Message::Text(t)))) => {
                return Next::Frame(serde_json::from_str(&t).expect("json frame"))
            }
            Ok(Some(Ok(_))) => {}
        }
    }
}

/// Receives pushed `messages` frames until `count` envelopes have arrived (10 s at most);
/// panics on any other frame.
pub async fn receive_pushed(ws: &mut Ws, count: usize) -> Vec<Value> {
    let mut got = Vec::new();
    while got.len() < count {
        let f = ws.recv().await;
        assert_eq!(f["type"], "messages", "expected a push, got {f}");
        got.extend(f["messages"].as_array().expect("messages").iter().cloned());
    }
    assert_eq!(got.len(), count, "more envelopes pushed than sent: {got:?}");
    got
}

/// The frames `ws` receives within `wait` (a check that nothing arrives).
pub async fn frames_within(ws: &mut Ws, wait: Duration) -> Vec<Value> {
    let mut frames = Vec::new();
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match next_frame(ws, left).await {
            Next::Frame(f) => frames.push(f),
            Next::Quiet | Next::Closed => return frames,
        }
    }
}

/// The Redis key of a device-1 key of `user_id` with this suffix (`in-flight`, `ack-conns`, …),
/// as the spec names them.
pub fn user_key(stack: &Stack, user_id: &str, suffix: &str) -> String {
    format!("{}{{{user_id}}}:{suffix}", stack.config.redis_prefix)
}

/// How many envelopes wait in the inbox list of `user_id`'s device 1 (read in Redis).
pub async fn inbox_len(stack: &Stack, user_id: &str) -> usize {
    stack
        .redis()
        .await
        .llen(stack.inbox_key(user_id))
        .await
        .expect("LLEN")
}

/// Waits until `user_id`'s device-1 inbox holds `count` envelopes: the relay has handled a
/// disconnect that puts unacknowledged envelopes back.
pub async fn wait_inbox_len(stack: &Stack, user_id: &str, count: usize) {
    crate::eventually_eq(
        "the envelopes in the inbox after the disconnect",
        count,
        async || inbox_len(stack, user_id).await,
    )
    .await
}

/// Waits until no connection of `user_id`'s device 1 is registered: the relay has handled the
/// disconnect of every socket the test dropped or closed (it unregisters a connection, then
/// hands back what the connection held, in the same `$disconnect`).
pub async fn wait_disconnected(stack: &Stack, user_id: &str) {
    let device = uuid::Uuid::parse_str(user_id).expect("a user id");
    let key = stack.redis_keys().conns(device);
    let mut redis = stack.redis().await;
    crate::eventually_eq("the device's registered connections", 0, async || {
        let n: usize = redis.zcard(&key).await.expect("ZCARD");
        n
    })
    .await
}
