//! Floors, measured in the same run with the same client libraries: Redis round trips, a bare
//! WebSocket echo server (axum + tokio-tungstenite, as the gateway and the bench use), the
//! DynamoDB-API server's GetItem, the storage path of a bundle fetch, and a do-nothing Lambda
//! function process.

use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use futures::StreamExt;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};

use super::util::Lat;

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct RedisFloor {
    /// One PING at a time.
    pub ping: Lat,
    /// PINGs pipelined 1000 per round trip.
    pub pipelined_ping_ops_per_s: f64,
    /// RPUSH + LPOP of a 200-byte value in one round trip (MULTI), one pair at a time.
    pub rpush_lpop: Lat,
    /// LPOP of 1000 stored envelope-sized values, 100 per round trip (the drain's storage work).
    pub drain_1000_ms: f64,
}

pub async fn redis_floor(conn: &mut ConnectionManager, quick: bool) -> RedisFloor {
    let singles = if quick { 300 } else { 3000 };
    let batches = if quick { 5 } else { 50 };
    let key = format!("bench:floor:{}", uuid::Uuid::new_v4());
    for _ in 0..50 {
        let _: String = redis::cmd("PING").query_async(conn).await.expect("ping");
    }
    let mut v = Vec::with_capacity(singles);
    for _ in 0..singles {
        let t = Instant::now();
        let _: String = redis::cmd("PING").query_async(conn).await.expect("ping");
        v.push(t.elapsed());
    }
    let ping = Lat::from_durations(&v);

    let t = Instant::now();
    for _ in 0..batches {
        let mut p = redis::pipe();
        for _ in 0..1000 {
            p.cmd("PING");
        }
        let _: Vec<String> = p.query_async(conn).await.expect("pipelined ping");
    }
    let pipelined = (batches * 1000) as f64 / t.elapsed().as_secs_f64();

    let value = "x".repeat(200);
    let mut v = Vec::with_capacity(singles);
    for _ in 0..singles {
        let t = Instant::now();
        let _: (i64, Option<String>) = redis::pipe()
            .atomic()
            .rpush(&key, &value)
            .lpop(&key, None)
            .query_async(conn)
            .await
            .expect("rpush+lpop");
        v.push(t.elapsed());
    }
    let rpush_lpop = Lat::from_durations(&v);

    let mut p = redis::pipe();
    for _ in 0..1000 {
        p.rpush(&key, &value).ignore();
    }
    let _: () = p.query_async(conn).await.expect("fill");
    let t = Instant::now();
    for _ in 0..10 {
        let _: Vec<String> = redis::cmd("LPOP")
            .arg(&key)
            .arg(100)
            .query_async(conn)
            .await
            .expect("lpop");
    }
    let drain_1000_ms = t.elapsed().as_secs_f64() * 1e3;
    let _: () = redis::cmd("DEL")
        .arg(&key)
        .query_async(conn)
        .await
        .expect("del");
    RedisFloor {
        ping,
        pipelined_ping_ops_per_s: pipelined,
        rpush_lpop,
        drain_1000_ms,
    }
}

/// The floor of a group send to `lists` offline devices: one pipelined round trip that appends
/// an `entry_bytes` value to each of `lists` lists (the least storage work that leaves every
/// device an entry), `rounds` times; the lists are deleted after.
pub async fn fanout_floor(
    conn: &mut ConnectionManager,
    lists: usize,
    entry_bytes: usize,
    rounds: usize,
) -> Lat {
    let prefix = format!("bench:fanout:{}", uuid::Uuid::new_v4());
    let keys: Vec<String> = (0..lists).map(|i| format!("{prefix}:{i}")).collect();
    let value = "x".repeat(entry_bytes.max(1));
    let mut v = Vec::with_capacity(rounds);
    for round in 0..rounds + 2 {
        let mut p = redis::pipe();
        for key in &keys {
            p.rpush(key, &value).ignore();
        }
        let t = Instant::now();
        let _: () = p.query_async(conn).await.expect("fan-out floor");
        // The first two rounds warm the connection and create the lists.
        if round >= 2 {
            v.push(t.elapsed());
        }
    }
    for chunk in keys.chunks(1000) {
        let _: () = redis::cmd("DEL")
            .arg(chunk)
            .query_async(conn)
            .await
            .expect("del");
    }
    Lat::from_durations(&v)
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

/// The keys table's item names (shared's `items` module is private).
const PROFILE_SK: &str = "profile";
const EC_PREFIX: &str = "ec#";
const KYBER_PREFIX: &str = "ky#";

/// GetItem of a user's key profile, one at a time.
pub async fn getitem_floor(
    db: &aws_sdk_dynamodb::Client,
    table: &str,
    user_id: &str,
    n: usize,
) -> Lat {
    let mut v = Vec::with_capacity(n);
    for i in 0..n + 5 {
        let t = Instant::now();
        db.get_item()
            .table_name(table)
            .key("pk", s(user_id))
            .key("sk", s(PROFILE_SK))
            .send()
            .await
            .expect("get item");
        if i >= 5 {
            v.push(t.elapsed());
        }
    }
    Lat::from_durations(&v)
}

/// The storage round trips of one bundle fetch, issued directly: the revocation check, the two
/// requester rate-limit buckets and the requester's account-age GetItem (concurrently), the
/// target's bucket, then (profile ‖ EC candidates ‖ Kyber candidates), then the conditional
/// deletes of one EC and one Kyber key (concurrently).
pub async fn bundle_storage_path(
    db: &aws_sdk_dynamodb::Client,
    redis: &ConnectionManager,
    table: &str,
    user_id: &str,
) -> bool {
    let mut r1 = redis.clone();
    let mut r2 = redis.clone();
    let mut r3 = redis.clone();
    let _: Option<String> = redis::cmd("GET")
        .arg("bench:revoked:none")
        .query_async(&mut r1)
        .await
        .expect("get");
    let ping = redis::cmd("PING");
    // The account-age read goes to the users table in the relay; a GetItem of the same size on
    // this table costs the same round trip.
    let (a, b, age) = futures::join!(
        ping.query_async::<String>(&mut r2),
        ping.query_async::<String>(&mut r3),
        db.get_item()
            .table_name(table)
            .key("pk", s(user_id))
            .key("sk", s(PROFILE_SK))
            .projection_expression("pk")
            .send()
    );
    a.and(b).expect("ping");
    age.expect("account age");
    ping.query_async::<String>(&mut r2).await.expect("ping");
    let query = |prefix: &'static str| {
        db.query()
            .table_name(table)
            .key_condition_expression("pk = :pk AND begins_with(sk, :p)")
            .expression_attribute_values(":pk", s(user_id))
            .expression_attribute_values(":p", s(prefix))
            .projection_expression("sk")
            .limit(8)
            .send()
    };
    let (profile, ec, ky) = futures::join!(
        db.get_item()
            .table_name(table)
            .key("pk", s(user_id))
            .key("sk", s(PROFILE_SK))
            .send(),
        query(EC_PREFIX),
        query(KYBER_PREFIX)
    );
    profile.expect("profile");
    let first = |out: aws_sdk_dynamodb::operation::query::QueryOutput| {
        out.items
            .unwrap_or_default()
            .first()
            .and_then(|i| i.get("sk"))
            .and_then(|v| v.as_s().ok())
            .cloned()
    };
    let (ec, ky) = (
        first(ec.expect("query ec")),
        first(ky.expect("query kyber")),
    );
    let claim = |sk: Option<String>| async move {
        let Some(sk) = sk else { return false };
        db.delete_item()
            .table_name(table)
            .key("pk", s(user_id))
            .key("sk", s(sk))
            .condition_expression("attribute_exists(pk)")
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .is_ok()
    };
    let (a, _) = futures::join!(claim(ec), claim(ky));
    a
}

/// `n` storage paths over `users` (path i takes a key of user offset+i), `concurrency` at a
/// time; returns each one's time and the
/// wall time.
pub async fn bundle_floor(
    db: &aws_sdk_dynamodb::Client,
    redis: &ConnectionManager,
    table: &str,
    users: &[String],
    offset: usize,
    n: usize,
    concurrency: usize,
) -> (Vec<Duration>, f64) {
    let start = Instant::now();
    let times: Vec<Duration> = futures::stream::iter(0..n)
        .map(|i| {
            let user = &users[(offset + i) % users.len()];
            async move {
                let t = Instant::now();
                bundle_storage_path(db, redis, table, user).await;
                t.elapsed()
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    (times, start.elapsed().as_secs_f64())
}

/// `relay-bench --serve-echo ADDR`: a bare WebSocket echo server, run as its own process like
/// the gateway, with the libraries' defaults. For experiments only,
/// `RELAY_BENCH_ECHO_READ_BUFFER=BYTES` sets tungstenite's read buffer and
/// `RELAY_BENCH_ECHO_NODELAY=1` disables Nagle's algorithm on accepted sockets.
pub async fn serve_echo(addr: &str) {
    use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
    use axum::response::Response;
    use axum::serve::ListenerExt;
    async fn upgrade(ws: WebSocketUpgrade) -> Response {
        match std::env::var("RELAY_BENCH_ECHO_READ_BUFFER")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            Some(size) => ws.read_buffer_size(size).on_upgrade(echo),
            None => ws.on_upgrade(echo),
        }
    }
    async fn echo(mut socket: WebSocket) {
        while let Some(Ok(msg)) = socket.recv().await {
            let echo = matches!(msg, Message::Text(_) | Message::Binary(_));
            if matches!(msg, Message::Close(_)) || (echo && socket.send(msg).await.is_err()) {
                break;
            }
        }
    }
    let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
    let app = axum::Router::new().route("/ws", axum::routing::get(upgrade));
    if std::env::var("RELAY_BENCH_ECHO_NODELAY").is_ok_and(|v| v == "1") {
        let listener = listener.tap_io(|s| {
            let _ = s.set_nodelay(true);
        });
        axum::serve(listener, app).await.expect("serve");
    } else {
        axum::serve(listener, app).await.expect("serve");
    }
}

/// `relay-bench --lambda-floor`: a function that does nothing, on the same runtime and an HTTP
/// client: asks the runtime API for the next event and answers it.
pub async fn lambda_floor() {
    let api = std::env::var("AWS_LAMBDA_RUNTIME_API").expect("AWS_LAMBDA_RUNTIME_API");
    let http = reqwest::Client::new();
    let next = http
        .get(format!("http://{api}/2018-06-01/runtime/invocation/next"))
        .send()
        .await
        .expect("next");
    let id = next
        .headers()
        .get("lambda-runtime-aws-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("none")
        .to_string();
    let _ = next.bytes().await;
    http.post(format!(
        "http://{api}/2018-06-01/runtime/invocation/{id}/response"
    ))
    .body(r#"{"statusCode":200}"#)
    .send()
    .await
    .expect("response");
}
