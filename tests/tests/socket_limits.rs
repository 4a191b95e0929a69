//! What a hostile or careless client does to the gateway and the connection registry, over real
//! WebSockets against a real stack: oversize, binary and control frames, a client that does not
//! read, idle sockets, handshake floods and the connection cap.

use std::collections::BTreeSet;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use redis::AsyncCommands;
use relay_tests::process::rss_kib;
use relay_tests::{eventually_within, Stack, User, Ws};
use serde_json::{json, Value};
use shared::validation::base64;
use tokio_tungstenite::tungstenite::Message;

/// Waits for the server to end the connection: true on a Close frame or the end of the stream,
/// false if it is still open after `wait` (frames on the way are skipped).
async fn closed_within(ws: &mut Ws, wait: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, ws.stream.next()).await {
            Err(_) => return false,
            Ok(None | Some(Err(_)) | Some(Ok(Message::Close(_)))) => return true,
            Ok(Some(Ok(_))) => continue,
        }
    }
}

/// A `ping` answered: the connection is open and served.
async fn answers_ping(ws: &mut Ws) -> bool {
    if ws
        .stream
        .send(Message::Text(json!({"action": "ping"}).to_string().into()))
        .await
        .is_err()
    {
        return false;
    }
    loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.stream.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => {
                let frame: Value = serde_json::from_str(&t).expect("json frame");
                if frame["type"] == "pong" {
                    return true;
                }
            }
            Ok(Some(Ok(Message::Close(_))) | Some(Err(_)) | None) => return false,
            Ok(Some(Ok(_))) => continue,
            Err(_) => panic!("neither a pong nor a close within 5 s"),
        }
    }
}

async fn registered_connections(stack: &Stack, user: &User) -> usize {
    let key = stack
        .redis_keys()
        .conns(uuid::Uuid::parse_str(&user.user_id).unwrap());
    stack.redis().await.zcard(key).await.expect("ZCARD")
}

/// The handshake's refusal: status and `retry-after`.
async fn refused_handshake(url: &str) -> (u16, Option<String>) {
    match tokio_tungstenite::connect_async(url).await {
        Ok(_) => (101, None),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => (
            resp.status().as_u16(),
            resp.headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_string()),
        ),
        Err(e) => panic!("handshake failed: {e}"),
    }
}

// The Management API writes to any connection whose id one knows; it must not be
// reachable where clients are.
#[tokio::test]
async fn the_management_api_is_not_served_on_the_public_port() {
    let stack = Stack::start().await;
    let bob = User::builder(&stack).create().await;
    let _live = bob.connect(&stack).await;
    for method in ["POST", "GET", "DELETE"] {
        let resp = stack
            .http
            .request(
                method.parse().unwrap(),
                stack.url("/@connections/AAAAAAAAAAAAAAAA"),
            )
            .body(r#"{"type":"messages","messages":[]}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.status().as_u16(),
            404,
            "{method} /@connections on the public port"
        );
    }
    // It is served on its own (loopback) listener, as API Gateway's Management API would answer.
    let management = stack.management.expect("the stack's management listener");
    let resp = stack
        .http
        .post(format!("http://{management}/@connections/AAAAAAAAAAAAAAAA"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 410, "unknown connection: Gone");
}

// API Gateway closes with 1009 for a message over 128 KB.
#[tokio::test]
async fn an_oversize_frame_closes_with_1009() {
    let stack = Stack::start().await;
    let bob = User::builder(&stack).create().await;
    let mut ws = bob.connect(&stack).await;
    let big = "x".repeat(200 * 1024);
    // The server may stop reading mid-frame; the write's outcome does not matter.
    let _ = ws.stream.send(Message::Text(big.into())).await;
    let code = loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.stream.next()).await {
            Ok(Some(Ok(Message::Close(Some(frame))))) => break Some(u16::from(frame.code)),
            Ok(Some(Ok(Message::Close(None)))) => break None,
            Ok(Some(Ok(_))) => continue,
            other => panic!("no Close frame (abnormal closure, 1006): {other:?}"),
        }
    };
    assert_eq!(code, Some(1009));
    let mut fresh = bob.connect(&stack).await;
    assert!(answers_ping(&mut fresh).await, "the gateway still serves");
}

fn numbered_body(i: u32) -> Vec<u8> {
    let mut body = i.to_be_bytes().to_vec();
    body.extend(std::iter::repeat_n(0xa5u8, 32 * 1024));
    body
}

fn numbers_in(frame: &Value) -> Vec<u32> {
    frame["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|e| {
            let body = base64("body", e["body"].as_str().unwrap()).unwrap();
            u32::from_be_bytes(body[..4].try_into().unwrap())
        })
        .collect()
}

// A recipient that never reads must not make the gateway queue without bound; it is
// dropped, and what it did not take stays in its inbox.
#[tokio::test]
async fn a_client_that_never_reads_is_dropped_and_its_messages_are_kept() {
    const SENDERS: u32 = 8;
    const EACH: u32 = 40;
    let stack = Stack::with_env(&[
        ("RELAY_WS_QUEUE_BYTES", "262144"),
        // Room in the inbox for everything sent here (about 14 MB).
        ("INBOX_MAX_BYTES", "100000000"),
    ])
    .await;
    let (alice, bob) = User::pair(&stack).await;
    // Bob's socket takes little and is never read while the messages are sent.
    let tcp = tokio::net::TcpSocket::new_v4().unwrap();
    tcp.set_recv_buffer_size(4096).unwrap();
    let tcp = tcp.connect(stack.addr).await.unwrap();
    let (mut silent, _) = tokio_tungstenite::client_async(stack.ws_url(&bob.access), tcp)
        .await
        .expect("handshake");

    let sends = (0..SENDERS).map(|s| {
        let (stack, alice, to) = (&stack, &alice, bob.user_id.clone());
        async move {
            let mut ws = alice.connect(stack).await;
            for i in s * EACH..(s + 1) * EACH {
                let reply = ws
                    .send_message(&to, &i.to_string(), &numbered_body(i))
                    .await;
                assert_eq!(reply["type"], "sent", "{reply}");
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(60), futures::future::join_all(sends))
        .await
        .expect("sends stalled behind a recipient that does not read");

    // What reached Bob's socket before the gateway dropped it is still readable; then it ends.
    let mut received = BTreeSet::new();
    let ended = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(Ok(msg)) = silent.next().await {
            if let Message::Text(t) = msg {
                let frame: Value = serde_json::from_str(&t).unwrap();
                if frame["type"] == "messages" {
                    received.extend(numbers_in(&frame));
                }
            }
        }
    })
    .await;
    assert!(
        ended.is_ok(),
        "the connection stayed open though its client never read"
    );

    let mut b = bob.connect(&stack).await;
    let fetched: Vec<u32> = b
        .fetch_all()
        .await
        .iter()
        .map(|e| numbers_in(&json!({ "messages": [e] }))[0])
        .collect();
    assert!(
        !fetched.is_empty(),
        "nothing was put back: the connection was never dropped with pushes pending"
    );
    let all: BTreeSet<u32> = received.iter().chain(&fetched).copied().collect();
    let sent: BTreeSet<u32> = (0..SENDERS * EACH).collect();
    assert_eq!(all, sent, "messages lost");
}

// Connections per user are capped; the oldest goes.
#[tokio::test]
async fn past_the_cap_the_oldest_connections_are_closed() {
    let stack = Stack::with_env(&[("MAX_CONNECTIONS_PER_USER", "3")]).await;
    let bob = User::builder(&stack).create().await;
    let mut conns = Vec::new();
    for _ in 0..5 {
        conns.push(bob.connect(&stack).await);
    }
    for (i, ws) in conns.iter_mut().enumerate() {
        if i < 2 {
            assert!(
                closed_within(ws, Duration::from_secs(5)).await,
                "connection {i} (among the oldest) still open"
            );
        } else {
            assert!(answers_ping(ws).await, "connection {i} (newest) closed");
        }
    }
    assert_eq!(registered_connections(&stack, &bob).await, 3);
    // Messages reach one of the connections kept: the push was written before the reply, so
    // it comes before the pong on whichever got it.
    let alice = User::builder(&stack).create().await;
    let mut a = alice.connect(&stack).await;
    let reply = a.send_message(&bob.user_id, "m", b"hi").await;
    assert_eq!(reply["delivery"], "delivered");
    let mut pushed = Vec::new();
    for ws in &mut conns[2..] {
        ws.send(json!({"action": "ping"})).await;
        ws.until("pong", &mut pushed).await;
    }
    assert_eq!(pushed.len(), 1, "{pushed:?}");
}

// With real concurrency: 50 handshakes at once with one token.
#[tokio::test]
async fn concurrent_handshakes_with_one_token_stay_within_the_cap() {
    const CAP: usize = 5;
    let stack = Stack::with_env(&[("MAX_CONNECTIONS_PER_USER", "5")]).await;
    let bob = User::builder(&stack).create().await;
    let url = stack.ws_url(&bob.access);
    let conns = futures::future::join_all((0..50).map(|_| Ws::connect(&url))).await;
    let mut conns: Vec<Ws> = conns.into_iter().map(|c| c.expect("handshake")).collect();
    assert!(registered_connections(&stack, &bob).await <= CAP);
    let open = futures::future::join_all(conns.iter_mut().map(answers_ping)).await;
    let open = open.iter().filter(|o| **o).count();
    assert!(
        (1..=CAP).contains(&open),
        "{open} connections open, cap {CAP}"
    );
}

// `$connect` is rate-limited per user...
#[tokio::test]
async fn handshakes_are_rate_limited_per_user() {
    let stack = Stack::with_env(&[("RATE_LIMIT_CONNECT", "3/3600")]).await;
    let (alice, bob) = User::pair(&stack).await;
    let mut kept = Vec::new();
    for _ in 0..3 {
        kept.push(bob.connect(&stack).await);
    }
    let (status, retry_after) = refused_handshake(&stack.ws_url(&bob.access)).await;
    assert_eq!(status, 429, "the 4th handshake of one user");
    let secs: u64 = retry_after.expect("retry-after").parse().unwrap();
    assert!(secs >= 1);
    assert!(alice.connect(&stack).await.stream.close(None).await.is_ok());
}

// ...and per client IP.
#[tokio::test]
async fn handshakes_are_rate_limited_per_ip() {
    let stack = Stack::with_env(&[("RATE_LIMIT_CONNECT_IP", "3/3600")]).await;
    let carol = User::builder(&stack).create().await;
    for _ in 0..3 {
        assert_eq!(refused_handshake(&stack.ws_url("not-a-token")).await.0, 401);
    }
    // Counted before the token: a valid one from the same address is refused too.
    assert_eq!(
        refused_handshake(&stack.ws_url(&carol.access)).await.0,
        429,
        "the 4th handshake from one address"
    );
}

/// A WebSocket on a TCP socket that takes little, for a client that never reads.
async fn small_socket(url: &str, addr: std::net::SocketAddr) -> Ws {
    let tcp = tokio::net::TcpSocket::new_v4().unwrap();
    tcp.set_recv_buffer_size(4096).unwrap();
    let tcp = tcp.connect(addr).await.unwrap();
    let (stream, _) =
        tokio_tungstenite::client_async(url, tokio_tungstenite::MaybeTlsStream::Plain(tcp))
            .await
            .expect("handshake");
    Ws { stream }
}

// The gateway answers a Ping itself: a client that sends Pings and reads nothing made it queue
// Pongs without end, on an anonymous socket (hundreds of MiB in seconds). Past a budget of
// control frames the socket is closed, and the socket's write buffer is bounded besides.
#[tokio::test]
async fn pings_from_a_client_that_reads_nothing_close_its_socket_and_memory_stays_bounded() {
    // It measures the resident memory of the whole process.
    if !relay_tests::run_alone!() {
        return;
    }
    const FLOOD_FOR: Duration = Duration::from_secs(20);
    // Far more than the socket buffers on both sides hold once the gateway stops reading (about
    // 30,000 of these frames here), and few enough that a gateway that never stops cannot take
    // the test process down with it (each unanswered Pong is kept: 40 MB at most).
    const MAX_PINGS: u64 = 300_000;
    let stack = Stack::start().await;
    let url = format!("ws://{}/ws?provisioning=1", stack.addr);
    let ws = small_socket(&url, stack.addr).await;
    // Only the sending half is used: nothing is ever read.
    let (mut sink, _unread) = ws.stream.split();
    let before = rss_kib();
    let started = tokio::time::Instant::now();
    let deadline = started + FLOOD_FOR;
    let mut pings = 0u64;
    let dropped = loop {
        if pings >= MAX_PINGS || tokio::time::Instant::now() >= deadline {
            break false;
        }
        let ping = Message::Ping(vec![b'p'; 125].into());
        match tokio::time::timeout_at(deadline, sink.send(ping)).await {
            Ok(Ok(())) => pings += 1,
            Ok(Err(_)) => break true,
            Err(_) => break false,
        }
    };
    let grown = rss_kib().saturating_sub(before);
    eprintln!(
        "{pings} pings in {:?}, connection dropped: {dropped}, RSS +{grown} KiB",
        started.elapsed()
    );
    assert!(
        dropped,
        "the socket took {pings} pings in {:?} without reading and is still open",
        started.elapsed()
    );
    assert!(
        grown < 64 * 1024,
        "the process grew by {grown} KiB while {pings} pings went unanswered"
    );
    // The gateway still serves.
    let mut fresh = Ws::connect(&url).await.expect("handshake");
    fresh.send(json!({"action": "provision"})).await;
    assert_eq!(fresh.recv().await["type"], "provisioning_address");
}

// The budget's close says why: 1008 (policy violation), after the Pongs of the budget.
#[tokio::test]
async fn control_frames_past_their_budget_close_with_1008() {
    let stack = Stack::start().await;
    let bob = User::builder(&stack).create().await;
    let mut ws = bob.connect(&stack).await;
    let burst = local_gateway::server::CONTROL_FRAMES_BURST;
    for _ in 0..burst * 2 {
        if ws
            .stream
            .send(Message::Ping(b"p".to_vec().into()))
            .await
            .is_err()
        {
            break;
        }
    }
    let mut pongs = 0;
    let code = loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.stream.next()).await {
            Ok(Some(Ok(Message::Pong(_)))) => pongs += 1,
            Ok(Some(Ok(Message::Close(frame)))) => break frame.map(|f| u16::from(f.code)),
            Ok(Some(Ok(other))) => panic!("unexpected {other:?}"),
            other => panic!("no Close frame: {other:?}"),
        }
    };
    assert_eq!(code, Some(1008));
    // One more may have been earned while they were sent (one a second).
    assert!(
        (burst..=burst + 1).contains(&pongs),
        "{pongs} Pongs, budget {burst}"
    );
}

// API Gateway does not take binary frames: it disconnects the client with 1003 (unsupported
// data). The gateway read them as lossy UTF-8 instead, so a client could work locally and fail
// on AWS.
#[tokio::test]
async fn a_binary_frame_closes_with_1003_as_on_api_gateway() {
    let stack = Stack::start().await;
    let bob = User::builder(&stack).create().await;
    let mut ws = bob.connect(&stack).await;
    let ping = json!({"action": "ping"}).to_string().into_bytes();
    ws.stream
        .send(Message::Binary(ping.into()))
        .await
        .expect("send");
    let code = loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.stream.next()).await {
            Ok(Some(Ok(Message::Close(frame)))) => break frame.map(|f| u16::from(f.code)),
            Ok(Some(Ok(Message::Text(t)))) => panic!("the binary frame was served: {t}"),
            Ok(Some(Ok(_))) => continue,
            other => panic!("no Close frame: {other:?}"),
        }
    };
    assert_eq!(code, Some(1003));
    let mut fresh = bob.connect(&stack).await;
    assert!(answers_ping(&mut fresh).await, "the gateway still serves");
}

/// Seconds of the idle timeout the stacks below run with (API Gateway's is 600).
const IDLE_SECS: u64 = 2;

/// Time for a close that is due to arrive, on a loaded machine.
const CLOSE_WAIT: Duration = Duration::from_secs(IDLE_SECS * 5);

// A provisioning socket lasts `PROVISIONING_TTL_SECS`, yet one that sent nothing more was only
// closed at the 2-hour limit. The gateway now plays API Gateway's idle timeout: a socket with no
// message either way for it is closed, so an idle provisioning socket ends within the timeout
// (at the defaults, when its lifetime does).
#[tokio::test]
async fn an_idle_provisioning_socket_is_closed_at_the_idle_timeout() {
    let stack = Stack::with_env(&[
        ("PROVISIONING_TTL_SECS", "1"),
        ("RELAY_WS_IDLE_TIMEOUT_SECS", &IDLE_SECS.to_string()),
    ])
    .await;
    let (mut ws, _address) = relay_tests::devices::provisioning_socket(&stack).await;
    let idle_from = tokio::time::Instant::now();
    let (closed, frames) = relay_tests::client::closed_within(&mut ws, CLOSE_WAIT).await;
    assert!(
        closed,
        "an idle provisioning socket still open after {CLOSE_WAIT:?}"
    );
    assert!(frames.is_empty(), "{frames:?}");
    let idle = idle_from.elapsed();
    assert!(
        idle >= Duration::from_secs(IDLE_SECS) - Duration::from_millis(100),
        "closed after {idle:?} idle, before the timeout"
    );
}

// A provisioning socket that keeps pinging is refused at its first frame after its lifetime and
// closed (on AWS too: the connection function does it, and API Gateway's idle timeout takes the
// idle ones).
#[tokio::test]
async fn a_provisioning_socket_is_closed_at_its_first_frame_after_its_lifetime() {
    let stack = Stack::with_env(&[("PROVISIONING_TTL_SECS", "1")]).await;
    let (mut ws, _address) = relay_tests::devices::provisioning_socket(&stack).await;
    // The lifetime is the native TTL of the socket's record in Redis: real time has to pass.
    let mut refusal = Value::Null;
    eventually_within(
        CLOSE_WAIT,
        "a refusal of the provisioning socket's frames after its 1 s lifetime",
        async || {
            ws.send(json!({"action": "ping"})).await;
            let reply = ws.recv().await;
            let refused = reply["type"] != "pong";
            if refused {
                refusal = reply;
            }
            refused
        },
    )
    .await;
    assert_eq!(refusal["code"], "unauthorized", "{refusal}");
    assert!(closed_within(&mut ws, Duration::from_secs(5)).await);
}

// What counts as activity is a message either way: frames the client sends and frames it is
// sent. WebSocket Pings are not messages (API Gateway's timeout counts messages), so a client
// that only sends Pings is closed as idle.
#[tokio::test]
async fn messages_either_way_keep_a_connection_open_and_pings_do_not() {
    let stack = Stack::with_env(&[("RELAY_WS_IDLE_TIMEOUT_SECS", &IDLE_SECS.to_string())]).await;
    let (alice, carol) = User::pair(&stack).await;
    let bob = User::builder(&stack).create().await;
    let mut sender = alice.connect(&stack).await;
    // Sends nothing: it is only sent to.
    let mut listener = carol.connect(&stack).await;
    let mut talker = bob.connect(&stack).await;
    let mut pinger = bob.connect(&stack).await;
    let until = tokio::time::Instant::now() + Duration::from_secs(IDLE_SECS * 2);
    let mut every = tokio::time::interval(Duration::from_millis(400));
    let mut n = 0;
    while tokio::time::Instant::now() < until {
        every.tick().await;
        n += 1;
        let reply = sender
            .send_message(&carol.user_id, &format!("m-{n}"), b"hi")
            .await;
        assert_eq!(reply["delivery"], "delivered", "{reply}");
        assert!(
            answers_ping(&mut talker).await,
            "a connection that talks was closed"
        );
        // Refused once the connection is closed, which it is expected to be.
        let _ = pinger
            .stream
            .send(Message::Ping(b"p".to_vec().into()))
            .await;
    }
    assert!(
        answers_ping(&mut listener).await,
        "a connection that was sent messages was closed"
    );
    assert!(
        closed_within(&mut pinger, CLOSE_WAIT).await,
        "a connection that only sent Pings is not idle"
    );
}
