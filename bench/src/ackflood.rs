//! Scenario 7, ack flood: another user's `ping` round trip at rest, then while one account with
//! about 8 MiB parked in its own in-flight envelopes floods useless `ack` frames (100 random ids
//! each, never delivered), one at a time as fast as their replies come, at the default
//! `RATE_LIMIT_FRAMES`. An ack costs O(ids), not O(what is in flight): the ping should barely
//! move. Runs against a gateway of its own (the default frame limit; see `lib.rs`).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use futures::{SinkExt, StreamExt};
use relay_tests::Stack;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

use super::scenarios::{create_users, Servers};
use super::util::{cpu_secs, log, mib, Lat};
use super::ws::{self, WsStream, ACK_IDS_MAX};

/// The decoded size of each parked message: `MESSAGE_MAX_BYTES`, the largest a send may carry.
pub const PARKED_BODY_BYTES: usize = 64 * 1024;

/// The most another user's ping p50 may be during the flood, in times its p50 at rest.
pub const PING_RATIO_TARGET: f64 = 3.0;

/// The victim's pings are paced (one at most every this long, each after the previous pong):
/// its own frame budget (300/s at the default) is never what slows it.
const PING_INTERVAL: Duration = Duration::from_millis(5);

/// How large the scenario is.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// 64 KiB messages sent to the attacker's ack-mode connection, read and never acknowledged.
    pub parked: usize,
    /// Pings measured at rest, and again during the flood.
    pub pings: usize,
    /// How long the flood runs before the pings are measured (past the frame bucket's burst).
    pub warmup: Duration,
}

impl Plan {
    pub fn new(quick: bool) -> Self {
        match quick {
            // 95 maximum-size envelopes are about what `INBOX_MAX_BYTES` (8 MiB) holds.
            false => Self {
                parked: 95,
                pings: 1000,
                warmup: Duration::from_secs(2),
            },
            true => Self {
                parked: 12,
                pings: 100,
                warmup: Duration::from_millis(300),
            },
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct AckFlood {
    /// The frame limit of the flooding account (`RATE_LIMIT_FRAMES`, capacity/period s).
    pub frames_limit: String,
    /// 64 KiB messages sent to the attacker, and how many were delivered to its connection.
    pub parked_sent: u64,
    pub parked_delivered: u64,
    /// The attacker's device in Redis before the flood: `ZCARD` of its in-flight set, and the
    /// bytes its in-flight envelopes hold (`HGET … #b`).
    pub in_flight: u64,
    pub in_flight_bytes: u64,
    /// The same after the flood (nothing should have been deleted).
    pub in_flight_after: u64,
    pub in_flight_bytes_after: u64,
    /// Another user's `ping` → `pong`, at rest (the parked envelopes idle) and during the flood.
    pub rest: Lat,
    pub loaded: Lat,
    /// The measured window of the flood (the loaded pings).
    pub flood_s: f64,
    /// `ack` frames answered in the window, and how many of those were `rate_limited`.
    pub acks: u64,
    pub acks_rate_limited: u64,
    pub acks_per_s: f64,
    /// Envelopes the flood deleted (its ids are unknown: 0).
    pub acked: u64,
    /// redis-server's CPU per ack frame in the window (`INFO cpu`: used_cpu_sys + used_cpu_user);
    /// the victim's pings (one frame-bucket step each) are in it too.
    pub redis_cpu_us_per_ack: Option<f64>,
    /// Script calls (`EVALSHA`) per ack frame in the window and the time Redis spent in them
    /// per ack frame (`INFO commandstats`, its `usec`), the victim's pings' included.
    #[serde(default)]
    pub redis_scripts_per_ack: Option<f64>,
    #[serde(default)]
    pub redis_script_us_per_ack: Option<f64>,
    /// The gateway process's CPU per ack frame in the window (`/proc/PID/stat`).
    pub gateway_cpu_us_per_ack: f64,
    pub errors: u64,
    pub first_error: Option<String>,
}

impl AckFlood {
    /// Ping p50 during the flood ÷ at rest.
    pub fn ratio(&self) -> f64 {
        self.loaded.p50_ms / self.rest.p50_ms.max(1e-9)
    }

    pub fn p99_ratio(&self) -> f64 {
        self.loaded.p99_ms / self.rest.p99_ms.max(1e-9)
    }

    /// The target: the ping p50 within [`PING_RATIO_TARGET`]× at rest, with the envelopes
    /// parked throughout and nothing failing.
    pub fn met(&self) -> bool {
        self.ratio() <= PING_RATIO_TARGET
            && self.loaded.n > 0
            && self.rest.n > 0
            && self.errors == 0
            && self.in_flight > 0
            && self.in_flight_after == self.in_flight
            && self.acked == 0
    }
}

#[derive(Default)]
struct Errors {
    n: AtomicU64,
    first: Mutex<Option<String>>,
}

impl Errors {
    fn add(&self, text: &str) {
        self.n.fetch_add(1, Relaxed);
        let mut first = self.first.lock().expect("lock");
        if first.is_none() {
            *first = Some(text.chars().take(300).collect());
        }
    }
}

/// The ack replies the attacker has read.
#[derive(Default)]
struct FloodCounters {
    answered: AtomicU64,
    rate_limited: AtomicU64,
    acked: AtomicU64,
}

/// The number after `"key":` in a frame.
fn number_after(text: &str, key: &str) -> Option<u64> {
    let at = text.find(key)? + key.len();
    let digits: String = text[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// The next text frame within `limit`; `Err` when the socket closed or nothing came.
async fn next_text(ws: &mut WsStream, limit: Duration) -> Result<String, String> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => return Ok(t.as_str().to_string()),
            Ok(Some(Ok(_))) => {}
            Ok(_) => return Err("socket closed".into()),
            Err(_) => return Err(format!("no frame within {limit:?}")),
        }
    }
}

/// `pings` pings on `ws`, each after the previous pong and at most one per [`PING_INTERVAL`]:
/// their round trips (ns).
async fn ping_times(ws: &mut WsStream, pings: usize, errors: &Errors) -> Vec<u64> {
    let mut out = Vec::with_capacity(pings);
    let mut tick = tokio::time::interval(PING_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let deadline = Instant::now() + Duration::from_secs(120);
    for _ in 0..pings {
        tick.tick().await;
        if Instant::now() > deadline {
            errors.add("pings: out of time");
            break;
        }
        let t = Instant::now();
        if ws
            .send(Message::Text(r#"{"action":"ping"}"#.into()))
            .await
            .is_err()
        {
            errors.add("ping: socket closed");
            break;
        }
        match next_text(ws, Duration::from_secs(10)).await {
            Ok(t2) if t2.contains(r#""type":"pong""#) => out.push(t.elapsed().as_nanos() as u64),
            Ok(other) => errors.add(&format!("ping answered with {other}")),
            Err(e) => {
                errors.add(&format!("ping: {e}"));
                break;
            }
        }
    }
    out
}

/// An `ack` frame (not quiet: its reply paces the flood) of 100 random ids.
fn useless_ack(n: u64) -> String {
    let ids: Vec<String> = (0..ACK_IDS_MAX)
        .map(|_| format!(r#""{}""#, uuid::Uuid::new_v4()))
        .collect();
    format!(
        r#"{{"action":"ack","id":"f{n}","ids":[{}]}}"#,
        ids.join(",")
    )
}

/// The attacker: useless acks, each once the previous one is answered, until `stop`.
async fn flood(
    mut ws: WsStream,
    stop: watch::Receiver<bool>,
    c: Arc<FloodCounters>,
    errors: Arc<Errors>,
) -> WsStream {
    let mut n = 0;
    while !*stop.borrow() {
        n += 1;
        if ws.send(Message::Text(useless_ack(n).into())).await.is_err() {
            errors.add("ack: socket closed");
            break;
        }
        // Its reply: `acked` (a token was left) or `rate_limited`; pushes are not expected.
        let reply = loop {
            match next_text(&mut ws, Duration::from_secs(10)).await {
                Ok(t) if t.contains(r#""type":"acked""#) || t.contains(r#""type":"error""#) => {
                    break Ok(t)
                }
                Ok(_) => {}
                Err(e) => break Err(e),
            }
        };
        match reply {
            Ok(t) if t.contains(r#""type":"acked""#) => {
                let acked = number_after(&t, r#""acked":"#).unwrap_or(0);
                c.acked.fetch_add(acked, Relaxed);
            }
            Ok(t) if t.contains(r#""code":"rate_limited""#) => {
                c.rate_limited.fetch_add(1, Relaxed);
            }
            Ok(t) => errors.add(&t),
            Err(e) => {
                errors.add(&format!("ack: {e}"));
                break;
            }
        }
        c.answered.fetch_add(1, Relaxed);
    }
    ws
}

/// The attacker's connection while messages are parked: reads (and counts) every envelope
/// pushed to it, acknowledging none, until `stop`.
async fn read_parked(
    mut ws: WsStream,
    mut stop: watch::Receiver<bool>,
    read: Arc<AtomicU64>,
    errors: Arc<Errors>,
) -> WsStream {
    loop {
        let msg = tokio::select! {
            _ = stop.changed() => break,
            msg = ws.next() => msg,
        };
        match msg {
            Some(Ok(Message::Text(t))) => {
                let t = t.as_str();
                if t.contains(r#""type":"messages""#) {
                    read.fetch_add(ws::envelope_ids(t).count() as u64, Relaxed);
                } else if t.contains(r#""type":"error""#) {
                    errors.add(t);
                }
            }
            Some(Ok(_)) => {}
            _ => {
                errors.add("attacker: socket closed while parking");
                break;
            }
        }
    }
    ws
}

/// Sends `n` messages of [`PARKED_BODY_BYTES`] to `to`, one at a time: how many were delivered.
async fn park(ws: &mut WsStream, to: &str, n: usize, errors: &Errors) -> u64 {
    let body = STANDARD.encode(vec![0x5a_u8; PARKED_BODY_BYTES]);
    let mut delivered = 0;
    for i in 0..n {
        let frame = format!(r#"{{"action":"send","to":"{to}","id":"p{i}","body":"{body}"}}"#);
        if ws.send(Message::Text(frame.into())).await.is_err() {
            errors.add("feeder: socket closed");
            return delivered;
        }
        match next_text(ws, Duration::from_secs(10)).await {
            Ok(t) if t.contains(r#""type":"sent""#) => {
                if ws::overall_delivery(&t) == "delivered" {
                    delivered += 1;
                } else {
                    errors.add(&format!("parked message {i}: {t}"));
                }
            }
            Ok(t) => errors.add(&t),
            Err(e) => {
                errors.add(&format!("feeder: {e}"));
                return delivered;
            }
        }
    }
    delivered
}

/// The attacker's device in Redis: its envelopes in flight and the bytes they hold.
async fn in_flight(servers: &Servers, user_id: &str) -> (u64, u64) {
    let (Some(mut redis), Ok(user)) = (servers.redis_stats.clone(), user_id.parse()) else {
        return (0, 0);
    };
    let keys = shared::storage::redis::RedisKeys::new(&servers.redis_prefix);
    let device = shared::model::DeviceAddress::new(user, 1);
    let r: Result<(u64, Option<u64>), _> = redis::pipe()
        .zcard(keys.in_flight(device))
        .hget(keys.in_flight_parked(device), "#b")
        .query_async(&mut redis)
        .await;
    r.map(|(n, bytes)| (n, bytes.unwrap_or(0)))
        .unwrap_or((0, 0))
}

/// redis-server's CPU seconds so far (`INFO cpu`: used_cpu_sys + used_cpu_user).
async fn redis_cpu_secs(servers: &Servers) -> Option<f64> {
    let mut redis = servers.redis_stats.clone()?;
    let info: String = redis::cmd("INFO")
        .arg("cpu")
        .query_async(&mut redis)
        .await
        .ok()?;
    let field = |name: &str| -> Option<f64> {
        info.lines()
            .find_map(|l| l.strip_prefix(name))?
            .trim()
            .parse()
            .ok()
    };
    Some(field("used_cpu_sys:")? + field("used_cpu_user:")?)
}

/// redis-server's `EVALSHA` so far: (calls, µs spent in them), from `INFO commandstats`.
async fn redis_script_usec(servers: &Servers) -> Option<(u64, u64)> {
    let mut redis = servers.redis_stats.clone()?;
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut redis)
        .await
        .ok()?;
    let stats = info
        .lines()
        .find_map(|l| l.strip_prefix("cmdstat_evalsha:"))?;
    let field = |name: &str| -> Option<u64> {
        stats
            .split(',')
            .find_map(|f| f.strip_prefix(name))?
            .trim()
            .parse()
            .ok()
    };
    Some((field("calls=")?, field("usec=")?))
}

/// Scenario 7 against `stack` (a gateway whose pid and Redis `servers` names), with the frame
/// limit `frames_limit` (for the report).
pub async fn ack_flood(
    stack: &Stack,
    servers: &Servers,
    frames_limit: &str,
    plan: Plan,
) -> AckFlood {
    let users = create_users(stack, 3, 1).await;
    let (victim, attacker, feeder) = (&users[0], &users[1], &users[2]);
    let errors = Arc::new(Errors::default());
    let mut victim_ws = ws::connect(&stack.ws_url(&victim.access)).await;
    let attacker_ws = ws::connect(&(stack.ws_url(&attacker.access) + "&ack=1")).await;
    let mut feeder_ws = ws::connect(&stack.ws_url(&feeder.access)).await;

    log(format!(
        "7 · parking {} × {} KiB in the attacker's flight",
        plan.parked,
        PARKED_BODY_BYTES >> 10
    ));
    let (stop_tx, stop_rx) = watch::channel(false);
    let read = Arc::new(AtomicU64::new(0));
    let reader = tokio::spawn(read_parked(
        attacker_ws,
        stop_rx,
        read.clone(),
        errors.clone(),
    ));
    let delivered = park(&mut feeder_ws, &attacker.user_id, plan.parked, &errors).await;
    let _ = feeder_ws.close(None).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while read.load(Relaxed) < delivered && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = stop_tx.send(true);
    let attacker_ws = reader.await.expect("attacker reader");
    if read.load(Relaxed) < delivered {
        errors.add(&format!(
            "attacker read {} of {delivered} envelopes",
            read.load(Relaxed)
        ));
    }
    let (parked, parked_bytes) = in_flight(servers, &attacker.user_id).await;
    log(format!(
        "7 · in flight: {parked} envelopes, {:.2} MiB; {} pings at rest",
        mib(parked_bytes),
        plan.pings
    ));

    ping_times(&mut victim_ws, 20, &errors).await;
    let rest = ping_times(&mut victim_ws, plan.pings, &errors).await;

    log(format!(
        "7 · flooding useless acks ({} ids each) for {:?}, then {} pings",
        ACK_IDS_MAX, plan.warmup, plan.pings
    ));
    let c = Arc::new(FloodCounters::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let flooder = tokio::spawn(flood(attacker_ws, stop_rx, c.clone(), errors.clone()));
    tokio::time::sleep(plan.warmup).await;
    let counts = |c: &FloodCounters| {
        (
            c.answered.load(Relaxed),
            c.rate_limited.load(Relaxed),
            c.acked.load(Relaxed),
        )
    };
    let scripts0 = redis_script_usec(servers).await;
    let (t0, n0, gw0, redis0) = (
        Instant::now(),
        counts(&c),
        cpu_secs(servers.gateway).unwrap_or(0.0),
        redis_cpu_secs(servers).await,
    );
    let loaded = ping_times(&mut victim_ws, plan.pings, &errors).await;
    let (t1, n1, gw1, redis1) = (
        Instant::now(),
        counts(&c),
        cpu_secs(servers.gateway).unwrap_or(0.0),
        redis_cpu_secs(servers).await,
    );
    let scripts1 = redis_script_usec(servers).await;
    let _ = stop_tx.send(true);
    let mut attacker_ws = flooder.await.expect("flooder");
    let (after, after_bytes) = in_flight(servers, &attacker.user_id).await;
    let _ = victim_ws.close(None).await;
    let _ = attacker_ws.close(None).await;

    let acks = n1.0 - n0.0;
    let per_ack = |secs: f64| secs * 1e6 / acks.max(1) as f64;
    let flood_s = (t1 - t0).as_secs_f64();
    let first_error = errors.first.lock().expect("lock").clone();
    AckFlood {
        frames_limit: frames_limit.to_string(),
        parked_sent: plan.parked as u64,
        parked_delivered: delivered,
        in_flight: parked,
        in_flight_bytes: parked_bytes,
        in_flight_after: after,
        in_flight_bytes_after: after_bytes,
        rest: Lat::from_ns(rest),
        loaded: Lat::from_ns(loaded),
        flood_s,
        acks,
        acks_rate_limited: n1.1 - n0.1,
        acks_per_s: acks as f64 / flood_s.max(1e-9),
        acked: c.acked.load(Relaxed),
        redis_cpu_us_per_ack: redis0.zip(redis1).map(|(a, b)| per_ack(b - a)),
        redis_scripts_per_ack: scripts0
            .zip(scripts1)
            .map(|(a, b)| (b.0 - a.0) as f64 / acks.max(1) as f64),
        redis_script_us_per_ack: scripts0
            .zip(scripts1)
            .map(|(a, b)| (b.1 - a.1) as f64 / acks.max(1) as f64),
        gateway_cpu_us_per_ack: per_ack(gw1 - gw0),
        errors: errors.n.load(Relaxed),
        first_error,
    }
}

/// `--only ackflood`: the figures, printed.
pub fn print(a: &AckFlood) {
    println!(
        "in flight (attacker)    {} envelopes, {:.2} MiB (after the flood: {}, {:.2} MiB); \
         {} of {} × {} KiB delivered",
        a.in_flight,
        mib(a.in_flight_bytes),
        a.in_flight_after,
        mib(a.in_flight_bytes_after),
        a.parked_delivered,
        a.parked_sent,
        PARKED_BODY_BYTES >> 10
    );
    for (label, lat) in [
        ("ping at rest", &a.rest),
        ("ping during the flood", &a.loaded),
    ] {
        println!(
            "{label:<23} p50 {:.3} ms  p99 {:.3} ms  (n {})",
            lat.p50_ms, lat.p99_ms, lat.n
        );
    }
    println!(
        "loaded / rest           p50 {:.2}×  p99 {:.2}×  (target p50 ≤ {PING_RATIO_TARGET}×: {})",
        a.ratio(),
        a.p99_ratio(),
        if a.met() { "met" } else { "missed" }
    );
    println!(
        "flood                   {:.0} acks/s over {:.1} s ({} answered, {} rate_limited, \
         {} envelopes deleted), RATE_LIMIT_FRAMES {}",
        a.acks_per_s, a.flood_s, a.acks, a.acks_rate_limited, a.acked, a.frames_limit
    );
    let figure = |v: Option<f64>| v.map_or("?".into(), |v| format!("{v:.1}"));
    println!(
        "CPU per ack             redis {} µs, gateway {:.1} µs; redis EVALSHA {} calls, {} µs in them",
        figure(a.redis_cpu_us_per_ack),
        a.gateway_cpu_us_per_ack,
        figure(a.redis_scripts_per_ack),
        figure(a.redis_script_us_per_ack),
    );
    println!(
        "errors                  {}{}",
        a.errors,
        a.first_error
            .as_deref()
            .map_or(String::new(), |e| format!(", first: {e}"))
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_useless_ack_names_100_distinct_ids_and_a_count_is_read_back() {
        let frame = useless_ack(7);
        let v: serde_json::Value = serde_json::from_str(&frame).expect("json");
        let ids = v["ids"].as_array().expect("ids");
        assert_eq!(ids.len(), ACK_IDS_MAX);
        let distinct: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!(distinct.len(), ACK_IDS_MAX);
        assert_eq!(v["id"], "f7");
        assert_eq!(
            number_after(r#"{"type":"acked","id":"f1","acked":12}"#, r#""acked":"#),
            Some(12)
        );
    }
}
