//! A WebSocket frame fuzzer over a real connection: garbage text and binary, deep
//! nesting, every field of every action with values of the wrong type, huge strings, invalid
//! UTF-8, protocol violations and oversize frames. Every frame must be answered with one reply
//! frame (an `error` whenever it is not a well-formed request), or end the connection with the
//! close code RFC 6455 gives it; and the server must stay up. Seeded: a failure replays.

use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use relay_tests::process::rss_kib;
use relay_tests::{Stack, User, Ws};
use serde_json::{json, Map, Value};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::Message;

const SEED: u64 = 0x5eed_120a;
const FRAMES: usize = 3000;

/// What the server must do with a frame.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    /// One reply, and it is an `error` frame.
    Error,
    /// One reply of any kind (the frame may happen to be a valid request).
    Reply,
    /// A Close with this code.
    Close(u16),
}

/// Replies a client frame can get (docs/api.md §6.4); `messages` frames are pushes, not replies.
const REPLIES: [&str; 5] = ["error", "sent", "drained", "inbox", "pong"];

fn random_string(rng: &mut StdRng, max: usize) -> String {
    let len = rng.gen_range(0..=max);
    (0..len)
        .map(|_| match rng.gen_range(0..4) {
            0 => rng.gen_range(b' '..=b'~') as char,
            1 => ['"', '\\', '{', '}', '[', ']', ':', ',', '\0', '\n'][rng.gen_range(0..10)],
            2 => char::from_u32(rng.gen_range(0x80..0x2_FFFF)).unwrap_or('é'),
            _ => rng.gen::<char>(),
        })
        .collect()
}

/// A JSON value of a random type (nested a little).
fn random_value(rng: &mut StdRng, depth: u32) -> Value {
    match rng.gen_range(0..if depth > 2 { 6 } else { 8 }) {
        0 => Value::Null,
        1 => Value::Bool(rng.gen()),
        2 => json!(rng.gen::<i64>()),
        3 => json!(rng.gen::<f64>() * 1e300),
        4 => json!(u64::MAX),
        5 => Value::String(random_string(rng, 40)),
        6 => Value::Array(
            (0..rng.gen_range(0..4))
                .map(|_| random_value(rng, depth + 1))
                .collect(),
        ),
        _ => Value::Object(
            (0..rng.gen_range(0..4))
                .map(|_| (random_string(rng, 8), random_value(rng, depth + 1)))
                .collect(),
        ),
    }
}

/// A well-formed request, the base the mutations start from.
fn valid_frame(rng: &mut StdRng) -> Map<String, Value> {
    let frame = match rng.gen_range(0..4) {
        0 => json!({
            "action": "send",
            "id": "m-1",
            "to": uuid::Uuid::new_v4().to_string(),
            "body": "aGVsbG8=",
            "online_only": rng.gen::<bool>(),
        }),
        1 => json!({"action": "fetch", "id": "f"}),
        2 => json!({"action": "list"}),
        _ => json!({"action": "ping", "id": "p"}),
    };
    match frame {
        Value::Object(map) => map,
        _ => unreachable!(),
    }
}

/// Whether `value` has the type the field takes (then the frame may still be a valid request).
fn right_type(field: &str, value: &Value) -> bool {
    // `null` stands for an absent optional field.
    if value.is_null() && field != "action" {
        return true;
    }
    match field {
        "action" | "to" | "body" => value.is_string(),
        "id" => value.as_str().is_some_and(|s| s.len() <= 128),
        "online_only" => value.is_boolean(),
        _ => true,
    }
}

/// API Gateway's limit for one message, which the gateway applies too.
const MAX_MESSAGE: usize = 128 * 1024;

/// The next frame of the run and what the server must do with it.
fn generate(rng: &mut StdRng) -> (Message, Expect) {
    let (frame, expect) = generate_frame(rng);
    let size = match &frame {
        Message::Text(t) => t.len(),
        Message::Binary(b) => b.len(),
        Message::Frame(f) => f.payload().len(),
        _ => 0,
    };
    if size > MAX_MESSAGE {
        (frame, Expect::Close(1009))
    } else {
        (frame, expect)
    }
}

fn generate_frame(rng: &mut StdRng) -> (Message, Expect) {
    let text = |s: String| Message::Text(s.into());
    match rng.gen_range(0..100) {
        // Garbage text: not JSON, or JSON that is not an object with an action.
        0..=19 => {
            let s = match rng.gen_range(0..3) {
                0 => random_string(rng, 200),
                1 => random_value(rng, 0).to_string(),
                _ => {
                    let mut s = json!({"action": "ping"}).to_string();
                    s.truncate(rng.gen_range(0..s.len()));
                    s
                }
            };
            let valid = serde_json::from_str::<Value>(&s)
                .ok()
                .and_then(|v| v.get("action").cloned())
                .is_some();
            (text(s), if valid { Expect::Reply } else { Expect::Error })
        }
        // Binary frames, whatever they hold: refused as API Gateway refuses them.
        20..=29 => {
            let mut bytes = vec![0u8; rng.gen_range(1..300)];
            rng.fill(&mut bytes[..]);
            if rng.gen() {
                bytes = json!({"action": "ping"}).to_string().into_bytes();
            }
            (Message::Binary(bytes.into()), Expect::Close(1003))
        }
        // Deep nesting, up to 100k levels (under the 128 KB frame limit).
        30..=34 => {
            let depth = [200, 5_000, 100_000][rng.gen_range(0..3)];
            let (open, close) = [("[", "]"), ("{\"a\":", "}")][rng.gen_range(0..2)];
            let mut s = String::from("{\"action\":\"send\",\"to\":");
            if rng.gen() {
                s.clear();
            }
            s.push_str(&open.repeat(depth));
            if rng.gen() {
                s.push_str(&close.repeat(depth));
            }
            (text(s), Expect::Error)
        }
        // One field of a request with a value of a random type, or an extra field.
        35..=69 => {
            let mut frame = valid_frame(rng);
            let fields = ["action", "id", "to", "body", "online_only", "extra"];
            let field = fields[rng.gen_range(0..fields.len())];
            let value = random_value(rng, 0);
            let expect = if right_type(field, &value) {
                Expect::Reply
            } else {
                Expect::Error
            };
            frame.insert(field.to_string(), value);
            (text(Value::Object(frame).to_string()), expect)
        }
        // Huge strings in a field, the frame still under 128 KB.
        70..=79 => {
            let mut frame = valid_frame(rng);
            let field = ["id", "to", "body", "action"][rng.gen_range(0..4)];
            let len = [129, 4_096, 100_000][rng.gen_range(0..3)];
            let huge: String = (0..len)
                .map(|_| rng.gen_range(b'A'..=b'Z') as char)
                .collect();
            // `to` and `body` only matter to a `send`; other actions ignore them.
            let checked = matches!(field, "id" | "action") || frame["action"] == "send";
            frame.insert(field.to_string(), Value::String(huge));
            let expect = if checked {
                Expect::Error
            } else {
                Expect::Reply
            };
            (text(Value::Object(frame).to_string()), expect)
        }
        // Requests as they should be.
        80..=89 => (
            text(Value::Object(valid_frame(rng)).to_string()),
            Expect::Reply,
        ),
        // A text frame that is not UTF-8.
        90..=92 => {
            let mut bytes = br#"{"action":"ping","id":""#.to_vec();
            bytes.extend([0xc3, 0x28, 0xff, 0xfe]);
            bytes.extend(br#""}"#);
            let frame = Frame::message(bytes, OpCode::Data(Data::Text), true);
            (Message::Frame(frame), Expect::Close(1007))
        }
        // A continuation with nothing to continue.
        93..=94 => {
            let frame = Frame::message(b"{}".to_vec(), OpCode::Data(Data::Continue), true);
            (Message::Frame(frame), Expect::Close(1002))
        }
        // Over 128 KiB, text or binary.
        _ => {
            let len = rng.gen_range(128 * 1024 + 1..300 * 1024);
            let msg = if rng.gen() {
                Message::Text("x".repeat(len).into())
            } else {
                Message::Binary(vec![b'{'; len].into())
            };
            (msg, Expect::Close(1009))
        }
    }
}

/// The server's answer to one frame.
#[derive(Debug)]
enum Answer {
    Reply(Value),
    Close(Option<u16>),
    /// The connection ended without a Close (1006).
    Abnormal(String),
}

async fn answer(ws: &mut Ws) -> Answer {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.stream.next()).await {
            Err(_) => panic!("no answer within 10 s"),
            Ok(Some(Ok(Message::Text(t)))) => {
                let frame: Value = serde_json::from_str(&t).expect("a JSON reply");
                if frame["type"] != "messages" {
                    return Answer::Reply(frame);
                }
            }
            Ok(Some(Ok(Message::Close(frame)))) => {
                return Answer::Close(frame.map(|f| u16::from(f.code)))
            }
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(e))) => return Answer::Abnormal(e.to_string()),
            Ok(None) => return Answer::Abnormal("end of stream".into()),
        }
    }
}

#[tokio::test]
async fn every_fuzzed_frame_is_answered_or_closes_with_its_code() {
    // It measures the resident memory of the whole process.
    if !relay_tests::run_alone!() {
        return;
    }
    let started = Instant::now();
    let stack = Stack::start().await;
    let user = User::builder(&stack).create().await;
    let mut rng = StdRng::seed_from_u64(SEED);
    let mut ws = user.connect(&stack).await;
    let rss_before = rss_kib();
    let mut closes = 0;
    for i in 0..FRAMES {
        let (frame, expect) = generate(&mut rng);
        let shown = format!("{frame:?}").chars().take(200).collect::<String>();
        // A frame the server refuses mid-way may fail to send whole; the answer tells.
        let _ = ws.stream.send(frame).await;
        let got = answer(&mut ws).await;
        match (expect, &got) {
            (Expect::Error, Answer::Reply(r)) => {
                assert_eq!(r["type"], "error", "frame {i} ({shown}): {r}");
                assert!(r["code"].is_string(), "frame {i}: {r}");
            }
            (Expect::Reply, Answer::Reply(r)) => assert!(
                REPLIES.contains(&r["type"].as_str().unwrap_or_default()),
                "frame {i} ({shown}): {r}"
            ),
            (Expect::Close(code), Answer::Close(got_code)) => {
                assert_eq!(*got_code, Some(code), "frame {i} ({shown})");
            }
            (_, Answer::Abnormal(how)) => {
                panic!("frame {i} ({shown}): expected {expect:?}, the connection broke: {how}")
            }
            _ => panic!("frame {i} ({shown}): expected {expect:?}, got {got:?}"),
        }
        if let Answer::Close(_) = got {
            closes += 1;
            ws = user.connect(&stack).await;
        }
    }
    assert!(closes > 0, "the run closed no connection");
    // Still up: a fresh connection is served, and so is HTTP.
    let mut fresh = user.connect(&stack).await;
    fresh.send(json!({"action": "ping"})).await;
    assert_eq!(fresh.recv().await, json!({"type": "pong"}));
    let health = stack.http.get(stack.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status().as_u16(), 200);
    // Memory stays bounded: what the frames made the process hold (the gateway runs in this
    // process) is given back, up to the allocator's slack.
    let grown = rss_kib().saturating_sub(rss_before);
    assert!(
        grown < 64 * 1024,
        "the process grew by {grown} KiB over {FRAMES} frames"
    );
    eprintln!(
        "{FRAMES} frames, {closes} closes, RSS +{grown} KiB, {:?}",
        started.elapsed()
    );
}

/// A flood of `ack` frames, pipelined without waiting for replies, at the default frame limit:
/// fuzzed ids (envelope ids that were delivered, never delivered, garbage up to 64 bytes,
/// repeats), some quiet. Each loud frame gets one reply, `acked` or an `error`; each quiet one
/// only an `error`; every delivered envelope is acknowledged at most once; other users are still
/// served and the connection stays open.
#[tokio::test]
async fn an_ack_flood_is_answered_frame_by_frame_and_hurts_no_one() {
    // Its frames must outrun the limit's refill: other tests of the process would slow them.
    if !relay_tests::run_alone!() {
        return;
    }
    let stack = Stack::with_env(&[("RATE_LIMIT_FRAMES", "300/1")]).await;
    let (flooder, feeder) = User::pair(&stack).await;
    let bystander = User::builder(&stack).create().await;
    let url = format!("{}&ack=1", stack.ws_url(&flooder.access));
    let mut ws = Ws::connect(&url).await.expect("ack-mode handshake");
    let mut f = feeder.connect(&stack).await;
    let mut delivered = Vec::new();
    for i in 0..20 {
        let reply = f
            .send_message(&flooder.user_id, &format!("m{i}"), b"to be acknowledged")
            .await;
        assert_eq!(reply["delivery"], "delivered", "{reply}");
    }
    while delivered.len() < 20 {
        let frame = ws.recv().await;
        for e in frame["messages"].as_array().expect("a messages frame") {
            delivered.push(e["id"].as_str().unwrap().to_string());
        }
    }

    let mut rng = StdRng::seed_from_u64(SEED ^ 0xac);
    const FLOOD: usize = 600;
    let mut loud = 0;
    for n in 0..FLOOD {
        let ids: Vec<String> = (0..rng.gen_range(1..=100))
            .map(|_| match rng.gen_range(0..4) {
                0 => delivered[rng.gen_range(0..delivered.len())].clone(),
                1 => uuid::Uuid::new_v4().to_string(),
                2 => random_string(&mut rng, 20)
                    .chars()
                    .filter(|c| c.len_utf8() == 1)
                    .collect(),
                _ => "x".repeat(64),
            })
            .collect();
        let quiet = rng.gen_bool(0.3);
        loud += usize::from(!quiet);
        let frame = json!({"action": "ack", "id": format!("a{n}"), "ids": ids, "quiet": quiet});
        ws.stream
            .send(Message::Text(frame.to_string().into()))
            .await
            .expect("sent");
    }
    ws.send(json!({"action": "ping", "id": "last"})).await;
    let (mut acked, mut errors, mut replies) = (0u64, 0, 0);
    loop {
        let Answer::Reply(r) = answer(&mut ws).await else {
            panic!("the flood closed the connection")
        };
        // The closing ping: answered `pong`, or refused under its own id past the limit.
        if r["type"] == "pong" || r["id"] == "last" {
            break;
        }
        match r["type"].as_str() {
            Some("acked") => acked += r["acked"].as_u64().unwrap(),
            Some("error") => {
                assert!(
                    ["rate_limited", "invalid_frame"].contains(&r["code"].as_str().unwrap()),
                    "{r}"
                );
                errors += 1;
            }
            _ => panic!("not a reply to an ack: {r}"),
        }
        replies += 1;
    }
    assert!(replies >= loud, "{replies} replies to {loud} loud acks");
    assert!(errors > 0, "600 frames at 300/s were all allowed");
    assert!(acked <= 20, "{acked} acknowledgements of 20 envelopes");

    let mut b = bystander.connect(&stack).await;
    b.send(json!({"action": "ping", "id": "p"})).await;
    assert_eq!(b.recv().await, json!({"type": "pong"}));
}

/// A flood of WebSocket Pings with fuzzed payloads (0 to 125 bytes, the most a control frame
/// carries), pipelined between text frames, from a client that reads nothing until the end: the
/// gateway answers within the per-connection control budget, then closes with 1008 (policy
/// violation); it stays up, serves a fresh connection, and its memory stays bounded.
#[tokio::test]
async fn a_ping_flood_is_closed_with_1008_and_the_server_stays_up() {
    // It measures the resident memory of the whole process.
    if !relay_tests::run_alone!() {
        return;
    }
    let stack = Stack::start().await;
    let user = User::builder(&stack).create().await;
    let mut rng = StdRng::seed_from_u64(SEED ^ 0x9119);
    let rss_before = rss_kib();
    let mut ws = user.connect(&stack).await;
    let mut sent = 0;
    for n in 0..2000 {
        let message = if n % 50 == 49 {
            Message::Text(
                json!({"action": "list", "id": format!("l{n}")})
                    .to_string()
                    .into(),
            )
        } else {
            let payload: Vec<u8> = (0..rng.gen_range(0..=125)).map(|_| rng.gen()).collect();
            Message::Ping(payload.into())
        };
        if ws.stream.send(message).await.is_err() {
            break;
        }
        sent += 1;
    }
    let code = loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.stream.next()).await {
            Err(_) => panic!("no close within 10 s of {sent} frames"),
            Ok(Some(Ok(Message::Close(frame)))) => break frame.map(|f| u16::from(f.code)),
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(e))) => panic!("the connection broke without a Close: {e}"),
            Ok(None) => panic!("the stream ended without a Close"),
        }
    };
    assert_eq!(code, Some(1008), "after {sent} frames");
    let mut fresh = user.connect(&stack).await;
    fresh.send(json!({"action": "ping"})).await;
    assert_eq!(fresh.recv().await, json!({"type": "pong"}));
    let grown = rss_kib().saturating_sub(rss_before);
    assert!(grown < 64 * 1024, "the process grew by {grown} KiB");
}
