//! WebSocket load: pipelined senders, receivers that time each message (and, in ack mode,
//! acknowledge it), the echo client of the floor, and opening many connections. Frames are scanned, not parsed into JSON trees, so the
//! client spends little of the machine's two cores.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use futures::{FutureExt, SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::{watch, Semaphore};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type WsStream = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Decoded size of every benchmark message body.
pub const BODY_BYTES: usize = 64;

pub async fn connect(url: &str) -> WsStream {
    match tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::connect_async(url),
    )
    .await
    {
        Ok(Ok((s, _))) => s,
        Ok(Err(e)) => panic!("websocket handshake failed: {e}"),
        Err(_) => panic!("websocket handshake timed out"),
    }
}

pub fn ns_since(base: Instant) -> u64 {
    base.elapsed().as_nanos() as u64
}

/// Where a sender sends: a user and, for the per-device form of `send`, each of its devices as
/// `(device_id, registration_id)`; no devices means the single-device form (`"body"`). With
/// `group`, a group send instead (the user and devices are then unused).
#[derive(Debug, Clone)]
pub struct Recipient {
    pub user_id: String,
    pub devices: Vec<(u64, u64)>,
    pub group: Option<Arc<GroupTarget>>,
}

/// A group send's target: the group and its `devices` map, written once (a 1,500-member map is
/// most of a frame, and the sender repeats it on every send).
#[derive(Debug)]
pub struct GroupTarget {
    pub group_id: String,
    /// The `devices` object of the frame, JSON.
    pub devices_json: String,
    /// The member devices the map names: the envelopes one send delivers.
    pub fanout: u64,
}

impl Recipient {
    /// A recipient sent to in the single-device form.
    pub fn single(user_id: &str) -> Self {
        Self {
            user_id: user_id.to_string(),
            devices: Vec::new(),
            group: None,
        }
    }

    /// A group sent to with `group_id`.
    pub fn group(target: Arc<GroupTarget>) -> Self {
        Self {
            user_id: String::new(),
            devices: Vec::new(),
            group: Some(target),
        }
    }

    /// How many envelopes one send delivers.
    pub fn fanout(&self) -> u64 {
        match &self.group {
            Some(g) => g.fanout,
            None => self.devices.len().max(1) as u64,
        }
    }
}

/// A body carrying the send time (ns since `base`), a sequence number and a device id.
pub fn body(seq: u64, device_id: u64, base: Instant) -> String {
    let mut body = [0u8; BODY_BYTES];
    body[..8].copy_from_slice(&ns_since(base).to_le_bytes());
    body[8..16].copy_from_slice(&seq.to_le_bytes());
    body[16..24].copy_from_slice(&device_id.to_le_bytes());
    STANDARD.encode(body)
}

/// A `send` frame to `to` whose bodies carry the send time: the single-device form (`"body"`),
/// or one ciphertext per device (`"messages"`) when `to` lists devices.
pub fn send_frame(to: &Recipient, seq: u64, base: Instant) -> String {
    if let Some(g) = &to.group {
        return group_send_frame(g, seq, base);
    }
    let user = &to.user_id;
    if to.devices.is_empty() {
        let body = body(seq, 1, base);
        return format!(r#"{{"action":"send","to":"{user}","id":"{seq}","body":"{body}"}}"#);
    }
    let messages: Vec<String> = to
        .devices
        .iter()
        .map(|&(device, registration)| {
            let body = body(seq, device, base);
            format!(r#"{{"device_id":{device},"registration_id":{registration},"body":"{body}"}}"#)
        })
        .collect();
    format!(
        r#"{{"action":"send","to":"{user}","id":"{seq}","messages":[{}]}}"#,
        messages.join(",")
    )
}

/// A group `send` frame: one body for every member device the map names. Written without
/// spaces: a 1,500-member map is about 95% of the 128,000-byte frame limit.
pub fn group_send_frame(to: &GroupTarget, seq: u64, base: Instant) -> String {
    let body = body(seq, 1, base);
    format!(
        r#"{{"action":"send","id":"{seq}","group_id":"{}","body":"{body}","devices":{}}}"#,
        to.group_id, to.devices_json
    )
}

/// The most envelope ids one `ack` frame may name.
pub const ACK_IDS_MAX: usize = 100;

/// The ids of the envelopes in a `messages` frame (each envelope object starts with its `id`).
pub fn envelope_ids(text: &str) -> impl Iterator<Item = &str> + '_ {
    const KEY: &str = r#"{"id":""#;
    text.match_indices(KEY).filter_map(move |(at, _)| {
        let rest = &text[at + KEY.len()..];
        rest.find('"').map(|end| &rest[..end])
    })
}

/// The quiet `ack` frames (no `acked` reply) that acknowledge these envelope ids (quoted),
/// [`ACK_IDS_MAX`] a frame.
pub fn ack_frames(ids: &[String]) -> Vec<String> {
    ids.chunks(ACK_IDS_MAX)
        .map(|chunk| {
            format!(
                r#"{{"action":"ack","quiet":true,"ids":[{}]}}"#,
                chunk.join(",")
            )
        })
        .collect()
}

/// The ids of a `messages` frame's envelopes, quoted for an `ack` frame.
pub fn quoted_ids(messages: &str) -> impl Iterator<Item = String> + '_ {
    envelope_ids(messages).map(|id| format!(r#""{id}""#))
}

/// The overall delivery of a `sent` reply: its first `delivery` (each device's follows it).
pub fn overall_delivery(sent: &str) -> &str {
    const KEY: &str = r#""delivery":""#;
    sent.find(KEY)
        .map(|at| &sent[at + KEY.len()..])
        .and_then(|rest| rest.split('"').next())
        .unwrap_or("")
}

/// Send times carried by the bodies in a frame (a `messages` frame, or an echoed `send`).
pub fn send_times(text: &str) -> impl Iterator<Item = u64> + '_ {
    stamps(text).map(|(sent, _)| sent)
}

/// The send time (ns since `base`) and the sequence number of every body in a frame.
pub fn stamps(text: &str) -> impl Iterator<Item = (u64, u64)> + '_ {
    const KEY: &str = r#""body":""#;
    text.match_indices(KEY).filter_map(move |(at, _)| {
        let rest = &text[at + KEY.len()..];
        let b64 = &rest[..rest.find('"')?];
        let bytes = STANDARD.decode(b64).ok()?;
        let word = |i: usize| Some(u64::from_le_bytes(bytes.get(i..i + 8)?.try_into().ok()?));
        Some((word(0)?, word(8)?))
    })
}

#[derive(Default)]
pub struct Counters {
    pub sent: AtomicU64,
    pub delivered: AtomicU64,
    pub queued: AtomicU64,
    pub dropped: AtomicU64,
    pub errors: AtomicU64,
    pub received: AtomicU64,
    /// `ack` frames the receivers sent (ack mode).
    pub ack_frames: AtomicU64,
    /// Envelope ids the receivers acknowledged (ack mode).
    pub acked: AtomicU64,
    pub first_error: Mutex<Option<String>>,
}

impl Counters {
    fn error(&self, text: &str) {
        self.errors.fetch_add(1, Relaxed);
        let mut first = self.first_error.lock().expect("lock");
        if first.is_none() {
            *first = Some(text.chars().take(300).collect());
        }
    }

    pub fn get(&self, c: &AtomicU64) -> u64 {
        c.load(Relaxed)
    }

    /// `sent` replies so far (delivered, queued or dropped).
    pub fn sends_answered(&self) -> u64 {
        self.get(&self.delivered) + self.get(&self.queued) + self.get(&self.dropped)
    }
}

/// Sends to `to` until `max` messages or `end`, keeping at most `window` sends unanswered, then
/// waits (bounded) for the outstanding `sent` replies.
pub async fn run_sender(
    ws: WsStream,
    to: Recipient,
    base: Instant,
    max: u64,
    end: Instant,
    window: usize,
    c: Arc<Counters>,
) {
    let (mut sink, mut stream) = ws.split();
    let sem = Arc::new(Semaphore::new(window));
    let (rc, rsem) = (c.clone(), sem.clone());
    let reader = tokio::spawn(async move {
        while let Some(Ok(msg)) = stream.next().await {
            let Message::Text(t) = msg else { continue };
            let t = t.as_str();
            if t.contains(r#""type":"sent""#) {
                let counter = match overall_delivery(t) {
                    "delivered" => &rc.delivered,
                    "queued" => &rc.queued,
                    _ => &rc.dropped,
                };
                counter.fetch_add(1, Relaxed);
                rsem.add_permits(1);
            } else if t.contains(r#""type":"error""#) {
                rc.error(t);
                rsem.add_permits(1);
            }
        }
    });
    let end_at = tokio::time::Instant::from_std(end);
    let mut seq = 0;
    while seq < max && Instant::now() < end {
        match tokio::time::timeout_at(end_at, sem.acquire()).await {
            Ok(Ok(permit)) => permit.forget(),
            _ => break,
        }
        let frame = send_frame(&to, seq, base);
        if sink.send(Message::Text(frame.into())).await.is_err() {
            c.error("socket closed while sending");
            break;
        }
        c.sent.fetch_add(1, Relaxed);
        seq += 1;
    }
    let _ = tokio::time::timeout(Duration::from_secs(15), sem.acquire_many(window as u32)).await;
    reader.abort();
    let _ = sink.close().await;
}

/// Times every message pushed to this connection until `stop`; returns (receive ns, latency ns).
/// With `ack` (a connection in ack mode), acknowledges what it has read in quiet `ack` frames (up
/// to 100 ids each) as a client would that handles every frame already received and then
/// acknowledges them together: once no further frame is waiting (`Duration::ZERO`), or, with a
/// window, once the oldest envelope not yet acknowledged has waited that long (or 100 wait).
pub async fn run_receiver(
    mut ws: WsStream,
    base: Instant,
    mut stop: watch::Receiver<bool>,
    c: Arc<Counters>,
    ack: Option<Duration>,
) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut unacked: Vec<String> = Vec::new();
    // When the acknowledgements waiting in `unacked` are due (with a window).
    let mut due: Option<tokio::time::Instant> = None;
    'read: loop {
        let mut next = tokio::select! {
            _ = stop.changed() => break,
            msg = ws.next() => Some(msg),
            _ = tokio::time::sleep_until(due.unwrap_or_else(tokio::time::Instant::now)),
                if due.is_some() => None,
        };
        while let Some(msg) = next.take() {
            match msg {
                Some(Ok(Message::Text(t))) => {
                    let t = t.as_str();
                    let now = ns_since(base);
                    for sent in send_times(t) {
                        out.push((now, now.saturating_sub(sent)));
                        c.received.fetch_add(1, Relaxed);
                    }
                    if t.contains(r#""type":"messages""#) {
                        if ack.is_some() {
                            unacked.extend(quoted_ids(t));
                        }
                    } else if t.contains(r#""type":"error""#) {
                        c.error(t);
                    }
                }
                Some(Ok(_)) => {}
                _ => break 'read,
            }
            // A frame already read is handled before acknowledging (`next` is cancel-safe).
            next = ws.next().now_or_never();
        }
        let (Some(window), false) = (ack, unacked.is_empty()) else {
            continue;
        };
        let now = tokio::time::Instant::now();
        let waited = due.is_some_and(|at| now >= at);
        if !window.is_zero() && !waited && unacked.len() < ACK_IDS_MAX {
            due.get_or_insert(now + window);
            continue;
        }
        due = None;
        for frame in ack_frames(&unacked) {
            if ws.send(Message::Text(frame.into())).await.is_err() {
                c.error("socket closed while acknowledging");
                break 'read;
            }
            c.ack_frames.fetch_add(1, Relaxed);
        }
        c.acked.fetch_add(unacked.len() as u64, Relaxed);
        unacked.clear();
    }
    let _ = ws.close(None).await;
    out
}

/// The floor's client: the same frames, pipelined the same way, echoed back by a bare server.
pub async fn run_echo(
    ws: WsStream,
    base: Instant,
    end: Instant,
    window: usize,
    c: Arc<Counters>,
) -> Vec<(u64, u64)> {
    let (mut sink, mut stream) = ws.split();
    let sem = Arc::new(Semaphore::new(window));
    let (rc, rsem) = (c.clone(), sem.clone());
    let reader = tokio::spawn(async move {
        let mut out = Vec::new();
        while let Some(Ok(msg)) = stream.next().await {
            let Message::Text(t) = msg else { continue };
            let now = ns_since(base);
            for sent in send_times(t.as_str()) {
                out.push((now, now.saturating_sub(sent)));
                rc.received.fetch_add(1, Relaxed);
                rsem.add_permits(1);
            }
        }
        out
    });
    let to = Recipient::single(&uuid::Uuid::new_v4().to_string());
    let end_at = tokio::time::Instant::from_std(end);
    let mut seq = 0;
    while Instant::now() < end {
        match tokio::time::timeout_at(end_at, sem.acquire()).await {
            Ok(Ok(permit)) => permit.forget(),
            _ => break,
        }
        if sink
            .send(Message::Text(send_frame(&to, seq, base).into()))
            .await
            .is_err()
        {
            break;
        }
        c.sent.fetch_add(1, Relaxed);
        seq += 1;
    }
    let _ = tokio::time::timeout(Duration::from_secs(15), sem.acquire_many(window as u32)).await;
    let _ = sink.close().await;
    match tokio::time::timeout(Duration::from_secs(5), reader).await {
        Ok(Ok(v)) => v,
        _ => Vec::new(),
    }
}

/// Throughput in the measured window and latencies of messages sent in it.
pub fn window_stats(samples: &[(u64, u64)], from_ns: u64, to_ns: u64) -> (f64, Vec<u64>) {
    let received = samples
        .iter()
        .filter(|(at, _)| *at >= from_ns && *at < to_ns)
        .count();
    let lat = samples
        .iter()
        .filter(|(at, lat)| at.saturating_sub(*lat) >= from_ns && at.saturating_sub(*lat) < to_ns)
        .map(|(_, lat)| *lat)
        .collect();
    let secs = (to_ns.saturating_sub(from_ns)) as f64 / 1e9;
    (received as f64 / secs.max(1e-9), lat)
}

/// Sends `fetch` and reads up to `drained`; returns (envelopes, frames).
pub async fn drain(ws: &mut WsStream, limit: Duration) -> Result<(usize, usize), String> {
    ws.send(Message::Text(r#"{"action":"fetch"}"#.into()))
        .await
        .map_err(|e| e.to_string())?;
    let deadline = tokio::time::Instant::now() + limit;
    let (mut envelopes, mut frames) = (0, 0);
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => {
                let t = t.as_str();
                if t.contains(r#""type":"drained""#) {
                    return Ok((envelopes, frames));
                }
                if t.contains(r#""type":"error""#) {
                    return Err(t.chars().take(300).collect());
                }
                frames += 1;
                envelopes += t.matches(r#""body":""#).count();
            }
            Ok(Some(Ok(_))) => {}
            Ok(_) => return Err("socket closed before drained".into()),
            Err(_) => return Err(format!("no drained within {limit:?}")),
        }
    }
}

/// Opens a connection per URL, `concurrency` at a time, stopping at `deadline`; returns the open
/// streams, each handshake's duration (ns), the failures and the wall time.
pub async fn open_many(
    urls: Vec<String>,
    concurrency: usize,
    deadline: Instant,
) -> (Vec<WsStream>, Vec<u64>, usize, Duration) {
    let start = Instant::now();
    let results: Vec<_> = futures::stream::iter(urls)
        .map(|url| async move {
            if Instant::now() >= deadline {
                return None;
            }
            let t = Instant::now();
            let r = tokio::time::timeout(
                Duration::from_secs(10),
                tokio_tungstenite::connect_async(url),
            )
            .await;
            Some((t.elapsed(), r))
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let wall = start.elapsed();
    let (mut open, mut times, mut failed) = (Vec::new(), Vec::new(), 0);
    let mut first_err = None;
    for r in results {
        match r {
            Some((took, Ok(Ok((s, _))))) => {
                open.push(s);
                times.push(took.as_nanos() as u64);
            }
            Some((_, Ok(Err(e)))) => {
                failed += 1;
                first_err.get_or_insert(e.to_string());
            }
            _ => failed += 1,
        }
    }
    if let Some(e) = first_err {
        super::util::log(format!("{failed} handshakes failed, first: {e}"));
    }
    (open, times, failed, wall)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_envelope_read_is_acknowledged_100_ids_a_frame() {
        let envelope = |i: usize| {
            format!(r#"{{"id":"e{i}","from":"u","source_device":1,"sent_at":1,"body":"QQ=="}}"#)
        };
        let envelopes: Vec<String> = (0..150).map(envelope).collect();
        let frame = format!(
            r#"{{"type":"messages","messages":[{}]}}"#,
            envelopes.join(",")
        );
        let read: Vec<String> = quoted_ids(&frame).collect();
        let acks = ack_frames(&read);
        let ids = |range: std::ops::Range<usize>| {
            let ids: Vec<String> = range.map(|i| format!(r#""e{i}""#)).collect();
            format!(
                r#"{{"action":"ack","quiet":true,"ids":[{}]}}"#,
                ids.join(",")
            )
        };
        assert_eq!(acks, vec![ids(0..100), ids(100..150)]);
    }
}
