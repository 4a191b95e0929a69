//! Disappearing messages: `send` with `expires_in` (seconds, 5 to INBOX_TTL_SECS), one-to-one and
//! group. Before its expiry the envelope is delivered with `expires_at`; after it, it is never
//! delivered (fetch, push, an ack-mode connection's redelivery, after a Redis restart), and no
//! Redis key holds a byte of its body: every key of every primary is scanned and read for it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::AsyncCommands;
use relay_tests::acks::{ack_frame, connect_ack, receive_pushed, reply_alone, reply_to};
use relay_tests::devices::{address, body_of, entries, link, Device};
use relay_tests::groups::group_over_http;
use relay_tests::servers::{free_port, scratch_dir};
use relay_tests::{eventually_within, Stack, User, Ws};
use serde_json::{json, Value};
use shared::validation::encode;
use uuid::Uuid;

/// Longer than any expiry these tests use (5 s), with room for a loaded machine.
const PAST_EXPIRY: Duration = Duration::from_secs(40);

/// A body no other test sends: what the scans look for.
fn marker(tag: &str) -> Vec<u8> {
    format!("disappearing-{tag}-{}", Uuid::new_v4()).into_bytes()
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64
}

/// A one-to-one `send` of `body` with `expires_in` as given (any JSON, to try refused ones).
fn expiring(to: &str, id: &str, body: &[u8], expires_in: Value) -> Value {
    json!({"action": "send", "to": to, "id": id, "body": encode(body), "expires_in": expires_in})
}

/// A group `send` of `body` to `devices`, with `expires_in`.
fn group_expiring(
    group: Uuid,
    id: &str,
    body: &[u8],
    devices: &[&Device],
    expires_in: Value,
) -> Value {
    let mut map = serde_json::Map::new();
    for d in devices {
        map.entry(d.user_id.clone())
            .or_insert_with(|| json!([]))
            .as_array_mut()
            .unwrap()
            .push(json!({"device_id": d.device_id, "registration_id": d.registration_id}));
    }
    json!({"action": "send", "id": id, "group_id": group, "body": encode(body), "devices": map,
           "expires_in": expires_in})
}

/// A group created by `members[0]` and joined by the others, over HTTP.
async fn group_of(stack: &Stack, members: &[&User]) -> Uuid {
    group_over_http(stack, members, &[]).await
}

/// The URL of every primary of the stack's Redis (one node, or each primary of a cluster).
async fn primaries(stack: &Stack) -> Vec<String> {
    let seeds: Vec<String> = stack
        .config
        .redis_url
        .split(',')
        .map(|s| match s.trim() {
            s if s.contains("://") => s.to_string(),
            s => format!("redis://{s}"),
        })
        .collect();
    if !stack.config.redis_cluster {
        return seeds;
    }
    let client = redis::Client::open(seeds[0].as_str()).expect("seed url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("seed");
    let nodes: String = redis::cmd("CLUSTER")
        .arg("NODES")
        .query_async(&mut conn)
        .await
        .expect("CLUSTER NODES");
    nodes
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (addr, flags) = (fields.get(1)?, fields.get(2)?);
            let usable = flags.contains("master") && !flags.contains("fail");
            let host_port = addr.split('@').next()?;
            usable.then(|| format!("redis://{host_port}"))
        })
        .collect()
}

fn holds(value: &redis::Value, needles: &[Vec<u8>]) -> bool {
    let found = |bytes: &[u8]| {
        needles
            .iter()
            .any(|n| bytes.windows(n.len()).any(|w| w == n.as_slice()))
    };
    match value {
        redis::Value::BulkString(bytes) => found(bytes),
        redis::Value::SimpleString(s) => found(s.as_bytes()),
        redis::Value::Array(items) | redis::Value::Set(items) => {
            items.iter().any(|v| holds(v, needles))
        }
        redis::Value::Map(pairs) => pairs
            .iter()
            .any(|(k, v)| holds(k, needles) || holds(v, needles)),
        _ => false,
    }
}

/// Every key, on every primary, whose name or value holds `body` (raw, or base64 as envelopes
/// carry it): SCAN, then each key read whole by its type.
async fn keys_holding(stack: &Stack, body: &[u8]) -> Vec<String> {
    let needles = vec![body.to_vec(), encode(body).into_bytes()];
    let mut found = Vec::new();
    for url in primaries(stack).await {
        let client = redis::Client::open(url.as_str()).expect("node url");
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .expect("node");
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await
                .expect("SCAN");
            for key in keys {
                let kind: String = redis::cmd("TYPE")
                    .arg(&key)
                    .query_async(&mut conn)
                    .await
                    .expect("TYPE");
                let read = match kind.as_str() {
                    "string" => redis::cmd("GET").arg(&key).clone(),
                    "list" => redis::cmd("LRANGE").arg(&key).arg(0).arg(-1).clone(),
                    "hash" => redis::cmd("HGETALL").arg(&key).clone(),
                    "zset" => redis::cmd("ZRANGE").arg(&key).arg(0).arg(-1).clone(),
                    "set" => redis::cmd("SMEMBERS").arg(&key).clone(),
                    // Gone since the scan saw it.
                    "none" => continue,
                    other => panic!("a key of type {other} ({key}): this scan reads no such type"),
                };
                let value: redis::Value = read.query_async(&mut conn).await.expect("read");
                if holds(
                    &redis::Value::BulkString(key.clone().into_bytes()),
                    &needles,
                ) || holds(&value, &needles)
                {
                    found.push(key);
                }
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
    }
    found
}

/// Polls until no Redis key holds `body` (its expiry passed and Redis deleted it).
async fn until_gone(stack: &Stack, body: &[u8]) {
    eventually_within(PAST_EXPIRY, "no Redis key to hold the body", async || {
        keys_holding(stack, body).await.is_empty()
    })
    .await;
}

/// Sends `frame` from `ws` and returns its reply (nothing pushed to the sender meanwhile).
async fn send(ws: &mut Ws, frame: Value) -> Value {
    reply_alone(ws, frame).await
}

#[tokio::test]
async fn out_of_range_expiries_are_refused_and_nothing_is_stored() {
    let stack = Stack::start().await;
    let (alice, bob) = User::pair(&stack).await;
    let ttl = stack.config.inbox.ttl.as_secs();
    let group = group_of(&stack, &[&alice, &bob]).await;
    let b1 = Device::primary(&bob);
    let body = marker("refused");
    let mut ws = alice.connect(&stack).await;

    for bad in [
        json!(0),
        json!(4),
        json!(ttl + 1),
        json!(-5),
        json!(7.5),
        json!("60"),
        json!(true),
        json!({}),
    ] {
        for frame in [
            expiring(&bob.user_id, "r", &body, bad.clone()),
            group_expiring(group, "r", &body, &[&b1], bad.clone()),
        ] {
            let reply = send(&mut ws, frame).await;
            assert_eq!(reply["type"], "error", "{bad}: {reply}");
            assert_eq!(reply["code"], "invalid_frame", "{bad}: {reply}");
            assert_eq!(reply["id"], "r", "{bad}: {reply}");
            assert!(
                reply["message"].as_str().unwrap().contains("expires_in"),
                "{bad}: {reply}"
            );
        }
    }
    assert!(!stack.has_inbox(&bob.user_id).await, "an inbox was written");
    assert!(keys_holding(&stack, &body).await.is_empty());
    let mut bob_ws = bob.connect(&stack).await;
    assert!(bob_ws.fetch_all().await.is_empty());
    bob_ws.close().await;

    // The bounds themselves are accepted.
    for (id, secs) in [("low", 5), ("high", ttl)] {
        let reply = send(&mut ws, expiring(&bob.user_id, id, &body, json!(secs))).await;
        assert_eq!(
            (reply["type"].as_str(), reply["delivery"].as_str()),
            (Some("sent"), Some("queued")),
            "{reply}"
        );
    }
}

#[tokio::test]
async fn before_its_expiry_an_envelope_is_delivered_with_it_and_its_body_is_held_apart() {
    let stack = Stack::start().await;
    let (alice, bob) = User::pair(&stack).await;
    let b1 = Device::primary(&bob);
    let body = marker("fetched");
    let mut ws = alice.connect(&stack).await;

    // Offline: queued. The inbox holds a pointer, never the body; the body's own key expires.
    let reply = send(&mut ws, expiring(&bob.user_id, "f", &body, json!(60))).await;
    assert_eq!(reply["delivery"], "queued", "{reply}");
    let waiting = entries(&stack, &b1).await;
    assert_eq!(waiting.len(), 1);
    assert!(!waiting[0].contains(&encode(&body)), "{}", waiting[0]);
    let holding = keys_holding(&stack, &body).await;
    assert_eq!(holding.len(), 1, "{holding:?}");
    let mut redis = stack.redis().await;
    let pttl: i64 = redis.pttl(&holding[0]).await.unwrap();
    assert!((1..=60_000).contains(&pttl), "PTTL {pttl}");
    // The inbox's accounting counts the pointer and the envelope it points at.
    let envelope: String = redis.get(&holding[0]).await.unwrap();
    let stats: std::collections::HashMap<String, usize> = redis
        .hgetall(stack.redis_keys().inbox_accounting(address(&b1)))
        .await
        .unwrap();
    let bytes = waiting[0].len() + envelope.len();
    assert_eq!(stats["b"], bytes, "{stats:?}");
    assert_eq!(stats[&format!("b:{}", alice.user_id)], bytes, "{stats:?}");
    assert_eq!(stats[&format!("n:{}", alice.user_id)], 1, "{stats:?}");

    // Fetched: with its expiry, the send's time plus 60 s.
    let mut bob_ws = bob.connect(&stack).await;
    let got = bob_ws.fetch_all().await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(body_of(&got[0]), body);
    assert_eq!(got[0]["from"], alice.user_id.as_str());
    let sent_at = got[0]["sent_at"].as_u64().unwrap();
    assert_eq!(
        got[0]["expires_at"].as_u64(),
        Some(sent_at + 60_000),
        "{}",
        got[0]
    );
    assert!(holding[0].contains(got[0]["id"].as_str().unwrap()));
    assert!(bob_ws.fetch_all().await.is_empty(), "delivered twice");
    // Delivered for good: the relay's copy is deleted then, before its expiry.
    assert!(keys_holding(&stack, &body).await.is_empty());

    // Online: pushed with its expiry too. A send without one carries none.
    let pushed_body = marker("pushed");
    let reply = send(
        &mut ws,
        expiring(&bob.user_id, "p", &pushed_body, json!(30)),
    )
    .await;
    assert_eq!(reply["delivery"], "delivered", "{reply}");
    let pushed = receive_pushed(&mut bob_ws, 1).await;
    assert_eq!(body_of(&pushed[0]), pushed_body);
    let sent_at = pushed[0]["sent_at"].as_u64().unwrap();
    assert_eq!(pushed[0]["expires_at"].as_u64(), Some(sent_at + 30_000));
    // The push is answered after the relay settled it: nothing of it is left.
    assert!(keys_holding(&stack, &pushed_body).await.is_empty());
    let reply = ws.send_message(&bob.user_id, "plain", b"plain").await;
    assert_eq!(reply["delivery"], "delivered", "{reply}");
    let pushed = receive_pushed(&mut bob_ws, 1).await;
    assert!(pushed[0].get("expires_at").is_none(), "{}", pushed[0]);
}

#[tokio::test]
async fn after_its_expiry_an_offline_recipient_never_fetches_it_and_no_key_holds_it() {
    let stack = Stack::start().await;
    let (alice, bob) = User::pair(&stack).await;
    let b1 = Device::primary(&bob);
    let gone = marker("gone");
    let kept = marker("kept");
    let mut ws = alice.connect(&stack).await;
    let reply = send(&mut ws, expiring(&bob.user_id, "g", &gone, json!(5))).await;
    assert_eq!(reply["delivery"], "queued", "{reply}");
    let reply = ws.send_message(&bob.user_id, "k", &kept).await;
    assert_eq!(reply["delivery"], "queued", "{reply}");

    until_gone(&stack, &gone).await;
    // Its entry may still wait (a pointer, no body) until the fetch drops it.
    assert!(entries(&stack, &b1).await.len() <= 2);
    let mut bob_ws = bob.connect(&stack).await;
    let got = bob_ws.fetch_all().await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(body_of(&got[0]), kept);
    assert!(entries(&stack, &b1).await.is_empty());
    assert!(keys_holding(&stack, &gone).await.is_empty());
}

#[tokio::test]
async fn past_its_expiry_by_the_relay_s_clock_it_is_not_delivered_even_while_redis_holds_it() {
    let stack = Stack::start().await;
    let (alice, bob) = User::pair(&stack).await;
    let body = marker("clock");
    let mut ws = alice.connect(&stack).await;
    let reply = send(&mut ws, expiring(&bob.user_id, "c", &body, json!(60))).await;
    assert_eq!(reply["delivery"], "queued", "{reply}");
    stack.advance(Duration::from_secs(61));
    assert_eq!(
        keys_holding(&stack, &body).await.len(),
        1,
        "Redis's clock did not move"
    );
    let mut bob_ws = bob.connect(&stack).await;
    assert!(bob_ws.fetch_all().await.is_empty());
}

#[tokio::test]
async fn an_ack_mode_connection_holding_it_past_its_expiry_never_gets_it_again() {
    let stack = Stack::start().await;
    let (alice, bob) = User::pair(&stack).await;
    let body = marker("held");
    let mut ws = alice.connect(&stack).await;
    let mut bob_ws = connect_ack(&stack, &bob.access).await;
    let reply = send(&mut ws, expiring(&bob.user_id, "h", &body, json!(5))).await;
    assert_eq!(reply["delivery"], "delivered", "{reply}");
    let pushed = receive_pushed(&mut bob_ws, 1).await;
    assert_eq!(body_of(&pushed[0]), body);
    assert!(pushed[0]["expires_at"].is_u64());
    let held = pushed[0]["id"].as_str().unwrap().to_string();

    // Never acknowledged; past its expiry, and past the lease that would deliver it again.
    until_gone(&stack, &body).await;
    stack.advance(stack.config.relay.fetch_lease + Duration::from_secs(1));
    // A new send takes back what the lease left in flight, and pushes only the new envelope.
    let reply = ws.send_message(&bob.user_id, "next", b"next").await;
    assert_eq!(reply["delivery"], "delivered", "{reply}");
    let pushed = receive_pushed(&mut bob_ws, 1).await;
    assert_eq!(body_of(&pushed[0]), b"next");
    let next = pushed[0]["id"].as_str().unwrap().to_string();
    let mut seen = Vec::new();
    let reply = reply_to(
        &mut bob_ws,
        ack_frame(Some("a"), &[next, held.clone()]),
        &mut seen,
    )
    .await;
    assert_eq!(reply["acked"], 1, "{reply}");
    assert!(seen.is_empty(), "{seen:?}");

    // One acknowledged before its expiry: held until the ack, deleted by it.
    let body = marker("acked");
    let reply = send(&mut ws, expiring(&bob.user_id, "a", &body, json!(60))).await;
    assert_eq!(reply["delivery"], "delivered", "{reply}");
    let pushed = receive_pushed(&mut bob_ws, 1).await;
    let holding = keys_holding(&stack, &body).await;
    assert_eq!(holding.len(), 1, "gone before its ack");
    let ids = [pushed[0]["id"].as_str().unwrap().to_string()];
    // In flight, it counts the pointer and the envelope it points at, as in the inbox.
    let mut redis = stack.redis().await;
    let parked = stack
        .redis_keys()
        .in_flight_parked(address(&Device::primary(&bob)));
    let value: String = redis.hget(&parked, &ids[0]).await.unwrap();
    let counted: usize = redis.hget(&parked, "#b").await.unwrap();
    let envelope: String = redis.get(&holding[0]).await.unwrap();
    assert_eq!(counted, value.len() + envelope.len());
    let reply = reply_alone(&mut bob_ws, ack_frame(Some("b"), &ids)).await;
    assert_eq!(reply["acked"], 1, "{reply}");
    assert!(keys_holding(&stack, &body).await.is_empty());

    // Another envelope held unacknowledged past its expiry, then the connection closes: on
    // reconnecting it is not delivered again.
    let body = marker("reconnect");
    let reply = send(&mut ws, expiring(&bob.user_id, "r", &body, json!(5))).await;
    assert_eq!(reply["delivery"], "delivered", "{reply}");
    assert_eq!(body_of(&receive_pushed(&mut bob_ws, 1).await[0]), body);
    until_gone(&stack, &body).await;
    bob_ws.close().await;
    let mut bob_ws = connect_ack(&stack, &bob.access).await;
    assert!(bob_ws.fetch_all().await.is_empty());
    assert!(bob_ws.frames_before_pong().await.is_empty());
    assert!(keys_holding(&stack, &body).await.is_empty());
}

#[tokio::test]
async fn a_group_message_past_its_expiry_reaches_no_member_device() {
    let stack = Stack::start().await;
    let (alice, bob) = User::pair(&stack).await;
    let carol = User::builder(&stack).create().await;
    let group = group_of(&stack, &[&alice, &bob, &carol]).await;
    let (b1, c1) = (Device::primary(&bob), Device::primary(&carol));
    let b2 = link(&stack, &bob, 4242).await;
    let body = marker("group");
    let mut ws = alice.connect(&stack).await;
    // Carol online: pushed before the expiry, with it. Bob's two devices offline.
    let mut carol_ws = c1.connect(&stack).await;
    let reply = send(
        &mut ws,
        group_expiring(group, "g", &body, &[&b1, &b2, &c1], json!(5)),
    )
    .await;
    assert_eq!(
        (reply["delivered"].as_u64(), reply["queued"].as_u64()),
        (Some(1), Some(2)),
        "{reply}"
    );
    let pushed = receive_pushed(&mut carol_ws, 1).await;
    assert_eq!(body_of(&pushed[0]), body);
    let sent_at = pushed[0]["sent_at"].as_u64().unwrap();
    assert_eq!(pushed[0]["expires_at"].as_u64(), Some(sent_at + 5_000));
    assert_eq!(pushed[0]["group_id"], group.to_string());

    until_gone(&stack, &body).await;
    for d in [&b1, &b2, &c1] {
        let mut d_ws = d.connect(&stack).await;
        assert!(d_ws.fetch_all().await.is_empty(), "device {}", d.device_id);
        d_ws.close().await;
    }
    assert!(keys_holding(&stack, &body).await.is_empty());
}

/// A redis-server of this test's own, keeping its data in `dir` (an RDB written on SHUTDOWN
/// SAVE), on `port`; a child of the test's thread.
fn redis_in(dir: &std::path::Path, port: u16) -> std::process::Child {
    let mut cmd = relay_tests::process::redis_server(port);
    cmd.arg("--dir").arg(dir);
    relay_tests::process::spawn(&mut cmd)
}

async fn listening(port: u16) -> bool {
    tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_redis_restart_past_its_expiry_it_is_gone() {
    let dir = scratch_dir("relay-disappearing", "restart");
    let port = free_port();
    let mut redis = redis_in(&dir, port);
    eventually_within(PAST_EXPIRY, "redis-server to listen", async || {
        listening(port).await
    })
    .await;
    let url = format!("redis://127.0.0.1:{port}");
    let stack = Stack::with_env(&[("REDIS_URL", url.as_str())]).await;
    let (alice, bob) = User::pair(&stack).await;
    let b1 = Device::primary(&bob);
    let (gone, kept) = (marker("restart-gone"), marker("restart-kept"));
    let mut ws = alice.connect(&stack).await;
    let reply = send(&mut ws, expiring(&bob.user_id, "g", &gone, json!(5))).await;
    assert_eq!(reply["delivery"], "queued", "{reply}");
    let reply = ws.send_message(&bob.user_id, "k", &kept).await;
    assert_eq!(reply["delivery"], "queued", "{reply}");
    ws.close().await;
    let waiting = entries(&stack, &b1).await;
    let expires_at: u64 = waiting[0].split('|').next().unwrap().parse().unwrap();

    // Down with its data saved, before the expiry; up again after it.
    let mut admin = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: redis::RedisResult<()> = redis::cmd("SHUTDOWN")
        .arg("SAVE")
        .query_async(&mut admin)
        .await;
    redis.wait().expect("redis-server exits");
    assert!(
        unix_ms() < expires_at,
        "the expiry passed before the shutdown: a slower machine than planned"
    );
    assert!(dir.join("dump.rdb").exists());
    eventually_within(PAST_EXPIRY, "the expiry to pass", async || {
        unix_ms() > expires_at
    })
    .await;
    let mut redis = redis_in(&dir, port);
    eventually_within(PAST_EXPIRY, "the relay to reach Redis again", async || {
        let r = stack.http.get(stack.url("/healthz")).send().await;
        r.is_ok_and(|r| r.status() == 200)
    })
    .await;

    // What Redis kept came back (the other message); the expired one did not.
    assert!(keys_holding(&stack, &gone).await.is_empty());
    assert!(
        !keys_holding(&stack, &kept).await.is_empty(),
        "Redis lost its data"
    );
    let mut bob_ws = bob.connect(&stack).await;
    let got = bob_ws.fetch_all().await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(body_of(&got[0]), kept);
    bob_ws.close().await;
    redis.kill().unwrap();
    redis.wait().unwrap();
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_disappearing_message_takes_as_much_of_an_inbox_as_an_ordinary_one() {
    // Room for two envelopes of 60 KiB, not three, however they are stored.
    let cap: usize = 200_000;
    let stack = Stack::with_env(&[("INBOX_MAX_BYTES", &cap.to_string())]).await;
    let (alice, bob) = User::pair(&stack).await;
    let b1 = Device::primary(&bob);
    let mut ws = alice.connect(&stack).await;
    let bodies: Vec<Vec<u8>> = (0..4u8).map(|i| vec![i; 60 * 1024]).collect();
    for (i, body) in bodies.iter().enumerate() {
        let reply = send(
            &mut ws,
            expiring(&bob.user_id, &format!("m{i}"), body, json!(60)),
        )
        .await;
        assert_eq!(reply["delivery"], "queued", "{reply}");
    }
    // The pointers alone would be some 500 bytes: the envelopes they point at count too.
    assert_eq!(entries(&stack, &b1).await.len(), 2);
    let stats: std::collections::HashMap<String, usize> = stack
        .redis()
        .await
        .hgetall(stack.redis_keys().inbox_accounting(address(&b1)))
        .await
        .unwrap();
    assert!(stats["b"] <= cap, "{stats:?}");
    let mut bob_ws = bob.connect(&stack).await;
    let got: Vec<Vec<u8>> = bob_ws.fetch_all().await.iter().map(body_of).collect();
    assert_eq!(
        got,
        bodies[2..].to_vec(),
        "the newest two, first in first out"
    );
}

#[tokio::test]
async fn a_refused_send_leaves_no_envelope_behind() {
    let stack = Stack::start().await;
    let (alice, bob) = User::pair(&stack).await;
    let body = marker("mismatched");
    let mut ws = alice.connect(&stack).await;
    // Device 1 and a device 7 bob does not have: refused after the envelopes were written.
    let messages: Vec<Value> = [1, 7]
        .iter()
        .map(|d| json!({"device_id": d, "registration_id": 1, "body": encode(&body)}))
        .collect();
    let frame = json!({"action": "send", "to": bob.user_id, "id": "m", "messages": messages,
                       "expires_in": stack.config.inbox.ttl.as_secs()});
    let reply = send(&mut ws, frame).await;
    assert_eq!(reply["code"], "mismatched_devices", "{reply}");
    assert!(
        keys_holding(&stack, &body).await.is_empty(),
        "a refused send's envelope stays in Redis"
    );
}

#[tokio::test]
async fn an_evicted_message_leaves_no_body_behind() {
    let stack = Stack::with_env(&[("INBOX_MAX", "3")]).await;
    let (alice, bob) = User::pair(&stack).await;
    let b1 = Device::primary(&bob);
    let ttl = stack.config.inbox.ttl.as_secs();
    let bodies: Vec<Vec<u8>> = (0..5).map(|i| marker(&format!("evicted-{i}"))).collect();
    let mut ws = alice.connect(&stack).await;
    for (i, body) in bodies.iter().enumerate() {
        let reply = send(
            &mut ws,
            expiring(&bob.user_id, &i.to_string(), body, json!(ttl)),
        )
        .await;
        assert_eq!(reply["delivery"], "queued", "{reply}");
    }

    // One sender over the cap makes room from its own oldest: the first two went, bodies too.
    assert_eq!(entries(&stack, &b1).await.len(), 3);
    for body in &bodies[..2] {
        assert!(
            keys_holding(&stack, body).await.is_empty(),
            "an evicted message's body stays in Redis"
        );
    }
    for body in &bodies[2..] {
        assert_eq!(keys_holding(&stack, body).await.len(), 1, "a kept body");
    }
    let mut bob_ws = bob.connect(&stack).await;
    let got: Vec<Vec<u8>> = bob_ws.fetch_all().await.iter().map(body_of).collect();
    assert_eq!(got, bodies[2..].to_vec());
}
