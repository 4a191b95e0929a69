//! Counts the store round trips behind one bundle fetch and one relayed message: DynamoDB
//! requests through a counting proxy in front of moto_server, Redis commands through
//! `INFO commandstats` of a Redis server of this test's own.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use relay_tests::client::User;
use relay_tests::servers::{servers, start_redis};
use relay_tests::{eventually, Stack};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

type Counts = Arc<Mutex<BTreeMap<String, u64>>>;

/// Forwards to `upstream`, counting requests by their `X-Amz-Target` operation.
async fn counting_proxy(upstream: String) -> (String, Counts) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let counts: Counts = Default::default();
    let c = counts.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let server = TcpStream::connect(upstream.trim_start_matches("http://"))
                .await
                .unwrap();
            let (mut cr, mut cw) = client.into_split();
            let (mut sr, mut sw) = server.into_split();
            let c = c.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let mut tail = String::new();
                while let Ok(n) = cr.read(&mut buf).await {
                    if n == 0 || sw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                    let text =
                        tail.clone() + &String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase();
                    let mut rest = text.as_str();
                    while let Some(i) = rest.find("x-amz-target: dynamodb_20120810.") {
                        let after = &rest[i + 32..];
                        let Some(end) = after.find("\r\n") else { break };
                        *c.lock()
                            .unwrap()
                            .entry(after[..end].to_string())
                            .or_default() += 1;
                        rest = &after[end..];
                    }
                    tail = rest
                        .chars()
                        .rev()
                        .take(64)
                        .collect::<Vec<_>>()
                        .into_iter()
                        .rev()
                        .collect();
                }
            });
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut sr, &mut cw).await;
            });
        }
    });
    (format!("http://{addr}"), counts)
}

/// Counts the commands clients send to Redis (not those scripts run), by name, via MONITOR.
async fn redis_monitor(port: u16) -> Counts {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    conn.write_all(b"MONITOR\r\n").await.unwrap();
    let counts: Counts = Default::default();
    let c = counts.clone();
    tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(conn);
        let mut line = String::new();
        use tokio::io::AsyncBufReadExt;
        while lines.read_line(&mut line).await.unwrap_or(0) > 0 {
            // `+<time> [<db> <client address>] "COMMAND" ...`; scripts' commands say `lua]`.
            if let Some((who, cmd)) = line.split_once("] \"") {
                if !who.ends_with("lua") {
                    let name = cmd.split('"').next().unwrap_or("").to_ascii_lowercase();
                    *c.lock().unwrap().entry(name).or_default() += 1;
                }
            }
            line.clear();
        }
    });
    counts
}

/// A connection that sends a marker command (`ECHO`, which the relay never sends) to Redis, as
/// is, without the handshake a client library sends.
struct Marker(TcpStream);

impl Marker {
    async fn connect(port: u16) -> Self {
        Self(TcpStream::connect(("127.0.0.1", port)).await.unwrap())
    }

    /// The commands counted so far. MONITOR lists commands in the order Redis runs them: once
    /// it lists the marker, sent now, every command run before it has been counted.
    async fn take(&mut self, counts: &Counts) -> BTreeMap<String, u64> {
        self.0.write_all(b"ECHO marker\r\n").await.unwrap();
        let mut reply = [0u8; 64];
        let _ = self.0.read(&mut reply).await.unwrap();
        eventually("MONITOR to list the marker", async || {
            counts.lock().unwrap().contains_key("echo")
        })
        .await;
        let mut taken = std::mem::take(&mut *counts.lock().unwrap());
        taken.remove("echo");
        taken
    }
}

#[tokio::test]
async fn round_trips_per_bundle_fetch_and_per_message() {
    // It points the process's DynamoDB endpoint at its proxy and counts what goes through.
    if !relay_tests::run_alone!() {
        return;
    }
    let (proxy, dynamo_counts) = counting_proxy(servers().dynamodb_url.clone()).await;
    let (redis_port, _redis) = start_redis();
    let redis_url = format!("redis://127.0.0.1:{redis_port}");
    // New accounts, as a first contact is (the test environment has none by default).
    let stack = Stack::with_env(&[
        ("REDIS_URL", redis_url.as_str()),
        ("NEW_ACCOUNT_AGE_SECS", "86400"),
    ])
    .await;
    let config = stack.config.clone();
    // A second gateway on the same tables and Redis whose DynamoDB client goes through the proxy.
    std::env::set_var("AWS_ENDPOINT_URL_DYNAMODB", &proxy);
    let gateway = local_gateway::in_process(config.clone()).await.unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(local_gateway::serve(
        listener,
        gateway,
        std::future::pending(),
    ));
    let counted = Stack::attach(addr, config, &servers().dynamodb_url).await;

    let bob = User::builder(&stack)
        .one_time_prekeys(20)
        .kyber_one_time_prekeys(20)
        .create()
        .await;
    let alice = User::builder(&stack).create().await;
    let redis_counts = redis_monitor(redis_port).await;
    let mut marker = Marker::connect(redis_port).await;
    assert_eq!(
        alice.bundle_of(&counted, &bob.user_id).await.0,
        200,
        "warm-up"
    );
    dynamo_counts.lock().unwrap().clear();
    marker.take(&redis_counts).await;
    const FETCHES: u64 = 10;
    for _ in 0..FETCHES {
        assert_eq!(alice.bundle_of(&counted, &bob.user_id).await.0, 200);
    }
    let dynamo: BTreeMap<String, u64> = dynamo_counts
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v / FETCHES))
        .collect();
    let per_fetch_redis = marker.take(&redis_counts).await;
    println!(
        "per bundle fetch: DynamoDB {dynamo:?}, Redis {per_fetch_redis:?} over {FETCHES} fetches"
    );
    assert_eq!(
        dynamo,
        BTreeMap::from([
            ("deleteitem".to_string(), 2),
            // The target's profile, and the requester's account age (read beside its limits;
            // a new account, as here, is asked about on every fetch, an established one once
            // per warm function).
            ("getitem".to_string(), 2),
            ("query".to_string(), 2)
        ]),
        "DynamoDB requests per fetch (in two concurrent rounds)"
    );
    assert_eq!(
        per_fetch_redis.values().sum::<u64>(),
        4 * FETCHES,
        "revocation check + two requester buckets + the target's bucket: {per_fetch_redis:?}"
    );

    let mut b = bob.connect(&counted).await;
    let mut a = alice.connect(&counted).await;
    a.send_message(&bob.user_id, "warm", b"warm").await;
    b.recv().await;
    marker.take(&redis_counts).await;
    const MESSAGES: u64 = 50;
    for i in 0..MESSAGES {
        assert_eq!(
            a.send_message(&bob.user_id, &i.to_string(), b"x").await["delivery"],
            "delivered"
        );
        b.recv().await;
    }
    let per_message = marker.take(&redis_counts).await;
    println!(
        "per relayed message (recipient online): Redis {per_message:?} over {MESSAGES} messages"
    );
    assert_eq!(
        per_message.values().sum::<u64>(),
        2 * MESSAGES,
        "rate limit + store-and-take script: {per_message:?}"
    );
}
