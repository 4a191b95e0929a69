//! The message relay over real WebSockets against the local gateway and a real Redis (a cluster
//! too: `RELAY_TEST_REDIS=cluster`): delivery, queues, expiry, bad frames, pushes; a fetch that
//! dies mid-write loses nothing, and a fetch ends at its deadline.

use std::collections::HashSet;
use std::time::Duration;

use redis::AsyncCommands;
use relay_tests::acks::inbox_len;
use relay_tests::client::{delete_auth, error_code};
use relay_tests::eventually;
use relay_tests::inbox::deliver_one;
use relay_tests::{Stack, User, Ws};
use serde_json::{json, Value};
use shared::frames::Envelope;
use shared::storage::{
    ConnectionRegistry, Delivery, Inbox, Registration, StoredEnvelope, POP_BATCH,
};
use shared::validation::{base64, encode};
use uuid::Uuid;

fn body_of(envelope: &Value) -> Vec<u8> {
    base64("body", envelope["body"].as_str().expect("body")).expect("base64 body")
}

#[tokio::test]
async fn offline_cycle_delivers_exact_bytes_once_and_leaves_nothing_stored() {
    let stack = Stack::start().await;
    let alice = User::builder(&stack).create().await;
    let bob = User::builder(&stack).one_time_prekeys(3).create().await;
    assert_eq!(alice.bundle_of(&stack, &bob.user_id).await.0, 200);
    let payload: Vec<u8> = (0..=255u8).chain(0..=255u8).collect();
    let mut a = alice.connect(&stack).await;
    let reply = a.send_message(&bob.user_id, "m-1", &payload).await;
    assert_eq!(
        reply,
        json!({"type": "sent", "id": "m-1", "delivery": "queued",
               "devices": [{"device_id": 1, "delivery": "queued"}]})
    );
    assert!(stack.has_inbox(&bob.user_id).await);

    let mut b = bob.connect(&stack).await;
    b.send(json!({"action": "list"})).await;
    assert_eq!(b.recv().await, json!({"type": "inbox", "pending": 1}));
    let got = b.fetch_all().await;
    assert_eq!(got.len(), 1);
    assert_eq!(body_of(&got[0]), payload, "body altered in transit");
    assert_eq!(got[0]["from"], alice.user_id.as_str());
    assert!(got[0]["sent_at"].as_u64().unwrap() > 1_700_000_000_000);
    assert!(uuid::Uuid::parse_str(got[0]["id"].as_str().unwrap()).is_ok());
    assert_eq!(got[0]["source_device"], 1, "sent from alice's only device");
    assert_eq!(
        got[0].as_object().unwrap().len(),
        5,
        "envelope has exactly id, from, source_device, sent_at, body: {}",
        got[0]
    );
    assert!(b.fetch_all().await.is_empty(), "delivered twice");
    assert!(
        !stack.has_inbox(&bob.user_id).await,
        "inbox key left in Redis"
    );
    b.send(json!({"action": "ping"})).await;
    assert_eq!(b.recv().await, json!({"type": "pong"}));
}

#[tokio::test]
async fn connected_recipient_gets_the_message_at_once() {
    let stack = Stack::start().await;
    let (alice, bob) = User::pair(&stack).await;
    let mut b = bob.connect(&stack).await;
    let mut a = alice.connect(&stack).await;
    let reply = a.send_message(&bob.user_id, "x", b"hello bob").await;
    assert_eq!(reply["delivery"], "delivered");
    let frame = b.recv().await;
    assert_eq!(frame["type"], "messages");
    assert_eq!(body_of(&frame["messages"][0]), b"hello bob");
    assert_eq!(frame["messages"][0]["from"], alice.user_id.as_str());
    assert!(!stack.has_inbox(&bob.user_id).await);
}

#[tokio::test]
async fn a_full_inbox_keeps_the_newest_thousand_in_send_order() {
    let stack = Stack::start().await;
    let (alice, bob) = User::pair(&stack).await;
    let mut a = alice.connect(&stack).await;
    for i in 0..1005u32 {
        let r = a
            .send_message(&bob.user_id, &i.to_string(), &i.to_be_bytes())
            .await;
        // Alice holds the whole inbox: her 1001st is stored over her 1st, first in, first out
        // (docs/api.md §6.6; tests/tests/hardening_inbox.rs has several senders' shares).
        assert_eq!(r["delivery"], "queued", "message {i}");
    }
    let holders: usize = stack
        .redis()
        .await
        .llen(
            stack
                .redis_keys()
                .inbox_holders(uuid::Uuid::parse_str(&bob.user_id).unwrap()),
        )
        .await
        .expect("LLEN");
    assert_eq!(holders, 1000, "one holder per stored envelope");
    let mut b = bob.connect(&stack).await;
    let got = b.fetch_all().await;
    let seq: Vec<u32> = got
        .iter()
        .map(|e| u32::from_be_bytes(body_of(e).try_into().unwrap()))
        .collect();
    assert_eq!(seq, (5..1005).collect::<Vec<_>>());
}

#[tokio::test]
async fn expired_envelopes_are_never_delivered_and_the_key_expires() {
    // The gateway's clock is real time plus what the test adds: "new" has 2 s of real time left
    // when bob fetches, slack for a slow machine.
    let stack = Stack::with_env(&[("INBOX_TTL_SECS", "4")]).await;
    let (alice, bob) = User::pair(&stack).await;
    let mut a = alice.connect(&stack).await;
    a.send_message(&bob.user_id, "old", b"old").await;
    stack.advance(Duration::from_millis(2500));
    // This send renews the key's TTL, so only the envelope's own expiry can keep "old" out.
    a.send_message(&bob.user_id, "new", b"new").await;
    stack.advance(Duration::from_millis(2000));
    let mut b = bob.connect(&stack).await;
    b.send(json!({"action": "list"})).await;
    assert_eq!(b.recv().await["pending"], 1);
    let got = b.fetch_all().await;
    assert_eq!(
        got.iter().map(body_of).collect::<Vec<_>>(),
        vec![b"new".to_vec()]
    );
    // Carol never connects: her inbox key carries the native TTL and vanishes with it.
    let carol = User::builder(&stack).create().await;
    a.send_message(&carol.user_id, "later", b"later").await;
    let mut redis = stack.redis().await;
    let ttl: i64 = redis.ttl(stack.inbox_key(&carol.user_id)).await.unwrap();
    assert!((1..=4).contains(&ttl), "native TTL {ttl}");
    // Redis expires the key by its own clock: real time has to pass.
    eventually("Carol's inbox key to expire", async || {
        !stack.has_inbox(&carol.user_id).await
    })
    .await;
    assert!(b.fetch_all().await.is_empty());
}

#[tokio::test]
async fn messages_for_a_vanished_connection_are_kept_for_the_next_fetch() {
    let stack = Stack::start().await;
    let (alice, bob) = User::pair(&stack).await;
    // A connection API Gateway dropped without a $disconnect: registered, but gone.
    let conns = stack
        .redis_keys()
        .conns(uuid::Uuid::parse_str(&bob.user_id).unwrap());
    let mut redis = stack.redis().await;
    let far = shared::clock::unix_ms() + 3_600_000;
    let _: () = redis.zadd(&conns, "ghost-connection", far).await.unwrap();
    let mut a = alice.connect(&stack).await;
    for i in 0..3u8 {
        let r = a.send_message(&bob.user_id, &format!("g{i}"), &[i]).await;
        assert_eq!(
            r["delivery"], "queued",
            "push to a gone connection must requeue: {r}"
        );
    }
    let left: Vec<String> = redis.zrange(&conns, 0, -1).await.unwrap();
    assert!(
        !left.contains(&"ghost-connection".to_string()),
        "gone connection not unregistered"
    );
    let mut b = bob.connect(&stack).await;
    let got = b.fetch_all().await;
    assert_eq!(
        got.iter().map(body_of).collect::<Vec<_>>(),
        vec![vec![0], vec![1], vec![2]]
    );
    assert!(b.fetch_all().await.is_empty());
}

#[tokio::test]
async fn handshake_refuses_missing_invalid_expired_and_revoked_tokens() {
    let stack = Stack::with_env(&[("ACCESS_TOKEN_TTL_SECS", "1"), ("JWT_LEEWAY_SECS", "0")]).await;
    let bob = User::builder(&stack).create().await;
    let base = format!("ws://{}/ws", stack.addr);
    assert_eq!(Ws::connect(&base).await.err(), Some(401), "missing");
    assert_eq!(
        Ws::connect(&format!("{base}?token=")).await.err(),
        Some(401),
        "empty"
    );
    assert_eq!(
        Ws::connect(&format!("{base}?token=abc.def.ghi"))
            .await
            .err(),
        Some(401),
        "invalid"
    );
    stack.advance(Duration::from_millis(2100));
    assert_eq!(
        Ws::connect(&stack.ws_url(&bob.access)).await.err(),
        Some(401),
        "expired"
    );
    let stack = Stack::start().await;
    let carol = User::builder(&stack).create().await;
    assert!(Ws::connect(&stack.ws_url(&carol.access)).await.is_ok());
    assert_eq!(
        delete_auth(&stack, "/v1/sessions/current", &carol.access).await,
        204
    );
    assert_eq!(
        Ws::connect(&stack.ws_url(&carol.access)).await.err(),
        Some(401),
        "revoked"
    );
}

#[tokio::test]
async fn the_sender_is_the_token_user_whatever_the_frame_says() {
    let stack = Stack::start().await;
    let (alice, bob) = User::pair(&stack).await;
    let mallory_claims = uuid::Uuid::new_v4().to_string();
    let mut a = alice.connect(&stack).await;
    a.send(json!({"action": "send", "to": bob.user_id, "id": "f", "from": mallory_claims, "body": encode(b"hi")})).await;
    assert_eq!(a.recv().await["delivery"], "queued");
    let mut b = bob.connect(&stack).await;
    let got = b.fetch_all().await;
    assert_eq!(got[0]["from"], alice.user_id.as_str());
}

#[tokio::test]
async fn online_only_is_delivered_live_or_dropped_never_stored() {
    let stack = Stack::start().await;
    let (alice, bob) = User::pair(&stack).await;
    let mut a = alice.connect(&stack).await;
    let typing = |id: &str| json!({"action": "send", "to": bob.user_id, "id": id, "body": encode(b"typing"), "online_only": true});
    a.send(typing("t1")).await;
    assert_eq!(
        a.recv().await,
        json!({"type": "sent", "id": "t1", "delivery": "dropped",
               "devices": [{"device_id": 1, "delivery": "dropped"}]})
    );
    assert!(!stack.has_inbox(&bob.user_id).await, "online_only stored");
    let mut b = bob.connect(&stack).await;
    a.send(typing("t2")).await;
    assert_eq!(a.recv().await["delivery"], "delivered");
    assert_eq!(body_of(&b.recv().await["messages"][0]), b"typing");
    assert!(!stack.has_inbox(&bob.user_id).await, "online_only stored");
    assert!(b.fetch_all().await.is_empty());
}

#[tokio::test]
async fn five_hundred_messages_from_ten_senders_arrive_exactly_once() {
    let stack = Stack::start().await;
    let bob = User::builder(&stack).create().await;
    let mut senders = Vec::new();
    for _ in 0..10 {
        senders.push(User::builder(&stack).create().await);
    }
    let bob_id = bob.user_id.clone();
    let tasks: Vec<_> = senders
        .iter()
        .enumerate()
        .map(|(s, user)| {
            let url = stack.ws_url(&user.access);
            let to = bob_id.clone();
            tokio::spawn(async move {
                let mut ws = Ws::connect(&url).await.unwrap();
                for m in 0..50u32 {
                    let tag = format!("{s}:{m}");
                    let r = ws.send_message(&to, &tag, tag.as_bytes()).await;
                    assert!(
                        r["delivery"] == "queued" || r["delivery"] == "delivered",
                        "{r}"
                    );
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            })
        })
        .collect();
    // Bob connects once some messages wait for him, while the others are being sent.
    eventually("a first message queued for Bob", async || {
        inbox_len(&stack, &bob_id).await > 0
    })
    .await;
    let mut b = bob.connect(&stack).await;
    let mut seen: Vec<Value> = b.fetch_all().await;
    for t in tasks {
        t.await.unwrap();
    }
    // Anything sent after the fetch arrived live; drain what is left and any frame in flight
    // (every send is answered, so whatever it pushed comes before the pong).
    seen.extend(b.fetch_all().await);
    for f in b.frames_before_pong().await {
        seen.extend(f["messages"].as_array().cloned().unwrap_or_default());
    }
    let tags: Vec<String> = seen
        .iter()
        .map(|e| String::from_utf8(body_of(e)).unwrap())
        .collect();
    let unique: HashSet<&String> = tags.iter().collect();
    assert_eq!(unique.len(), 500, "missing messages");
    assert_eq!(tags.len(), 500, "duplicates delivered");
}

#[tokio::test]
async fn bad_frames_get_error_frames_and_the_connection_stays_open() {
    let stack = Stack::with_env(&[("RATE_LIMIT_MESSAGES", "3/60")]).await;
    let (alice, bob) = User::pair(&stack).await;
    let mut a = alice.connect(&stack).await;
    a.send_raw("not json").await;
    assert_eq!(
        error_code(&json!({"error": a.recv().await})),
        "invalid_frame"
    );
    a.send(json!({"action": "dance"})).await;
    assert_eq!(a.recv().await["code"], "invalid_frame");
    a.send(json!({"action": "send", "to": uuid::Uuid::new_v4(), "id": "u", "body": encode(b"x")}))
        .await;
    let e = a.recv().await;
    assert_eq!(
        (e["type"].as_str(), e["id"].as_str(), e["code"].as_str()),
        (Some("error"), Some("u"), Some("unknown_recipient"))
    );
    a.send(json!({"action": "send", "to": bob.user_id, "id": "big", "body": encode(&vec![7u8; 64 * 1024 + 1])})).await;
    assert_eq!(a.recv().await["code"], "too_large");
    a.send(json!({"action": "send", "to": bob.user_id, "id": "b64", "body": "%%%"}))
        .await;
    assert_eq!(a.recv().await["code"], "invalid_frame");
    a.send(json!({"action": "send", "to": bob.user_id, "id": "max", "body": encode(&vec![7u8; 64 * 1024])})).await;
    assert_eq!(
        a.recv().await["delivery"],
        "queued",
        "a 64 KiB body is allowed"
    );
    for _ in 0..2 {
        a.send_message(&bob.user_id, "ok", b"ok").await;
    }
    a.send(json!({"action": "send", "to": bob.user_id, "id": "rl", "body": encode(b"x")}))
        .await;
    assert_eq!(a.recv().await["code"], "rate_limited");
    a.send(json!({"action": "ping"})).await;
    assert_eq!(a.recv().await["type"], "pong");
}

#[tokio::test]
async fn deleting_the_account_erases_the_inbox() {
    let stack = Stack::start().await;
    let (alice, bob) = User::pair(&stack).await;
    let mut a = alice.connect(&stack).await;
    a.send_message(&bob.user_id, "1", b"1").await;
    assert!(stack.has_inbox(&bob.user_id).await);
    assert_eq!(delete_auth(&stack, "/v1/users/me", &bob.access).await, 204);
    assert!(!stack.has_inbox(&bob.user_id).await);
    a.send(json!({"action": "send", "to": bob.user_id, "id": "2", "body": encode(b"2")}))
        .await;
    assert_eq!(a.recv().await["code"], "unknown_recipient");
}

#[tokio::test]
async fn the_management_api_pusher_reaches_live_connections_and_reports_gone_ones() {
    use shared::storage::{apigateway::ManagementApiPusher, PushError};
    let stack = Stack::start().await;
    let bob = User::builder(&stack).create().await;
    let mut b = bob.connect(&stack).await;
    let mut config = stack.config.clone();
    // The Management API has a loopback listener of its own, not the public one.
    let management = stack.management.expect("the stack's management listener");
    config.ws_management_endpoint = Some(format!("http://{management}"));
    let pusher = ManagementApiPusher::from_config(&config).await.unwrap();
    // The connection id is the one the registry holds for Bob.
    let conns = stack
        .redis_keys()
        .conns(uuid::Uuid::parse_str(&bob.user_id).unwrap());
    let ids: Vec<String> = stack.redis().await.zrange(&conns, 0, -1).await.unwrap();
    assert_eq!(ids.len(), 1);
    pusher.push(&ids[0], r#"{"type":"pong"}"#).await.unwrap();
    assert_eq!(b.recv().await, json!({"type": "pong"}));
    assert_eq!(
        pusher.push("no-such-connection", "{}").await,
        Err(PushError::Gone)
    );
}

/// A Management API that accepts connections and never answers must not hold the function: the
/// push fails within the AWS clients' operation timeout.
#[tokio::test]
async fn a_push_to_a_management_api_that_never_answers_fails_within_the_timeout() {
    use shared::storage::{
        apigateway::ManagementApiPusher, aws::OPERATION_TIMEOUT, PushError, Pusher,
    };
    relay_tests::stack::set_aws_credentials();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            open.push(socket); // read nothing, answer nothing
        }
    });
    let pusher = ManagementApiPusher::new(&format!("http://{addr}")).await;
    let started = std::time::Instant::now();
    let result = tokio::time::timeout(
        OPERATION_TIMEOUT + std::time::Duration::from_secs(5),
        pusher.push("any-connection", "{}"),
    )
    .await
    .expect("the push hung past the operation timeout");
    assert!(matches!(result, Err(PushError::Failed(_))), "{result:?}");
    assert!(started.elapsed() >= std::time::Duration::from_secs(1));
    held.abort();
}

#[tokio::test]
async fn a_send_behind_a_long_backlog_reports_queued_and_nothing_is_lost() {
    let stack = Stack::start().await;
    let (alice, bob) = User::pair(&stack).await;
    let mut a = alice.connect(&stack).await;
    for i in 0..150u32 {
        a.send_message(&bob.user_id, "q", &i.to_be_bytes()).await;
    }
    let mut b = bob.connect(&stack).await;
    // Bob is connected but has not fetched: this send drains the oldest 100 to him, and the new
    // message, behind them, waits for his fetch.
    let reply = a
        .send_message(&bob.user_id, "new", &150u32.to_be_bytes())
        .await;
    assert_eq!(reply["delivery"], "queued", "{reply}");
    let mut seen = Vec::new();
    let first = b.recv().await;
    seen.extend(first["messages"].as_array().unwrap().iter().cloned());
    seen.extend(b.fetch_all().await);
    let seq: Vec<u32> = seen
        .iter()
        .map(|e| u32::from_be_bytes(body_of(e).try_into().unwrap()))
        .collect();
    assert_eq!(seq, (0..151).collect::<Vec<_>>());
}

// ---------------------------------------------------------------------------------------------
// Fetches interrupted mid-write or past their deadline
// ---------------------------------------------------------------------------------------------

/// Sends `count` messages `m0`, `m1`, … from `from` to `to`, each stored (`queued`).
async fn queue(from: &mut Ws, to: &User, count: usize) {
    for i in 0..count {
        let reply = from
            .send_message(&to.user_id, &format!("m{i}"), format!("m{i}").as_bytes())
            .await;
        assert_eq!(reply["delivery"], "queued", "{reply}");
    }
}

/// The message texts of fetched envelopes, in the order they arrived.
fn texts(envelopes: &[Value]) -> Vec<String> {
    envelopes
        .iter()
        .map(|e| {
            let body = shared::validation::base64("body", e["body"].as_str().unwrap()).unwrap();
            String::from_utf8(body).unwrap()
        })
        .collect()
}

fn expected(count: usize) -> Vec<String> {
    (0..count).map(|i| format!("m{i}")).collect()
}

#[tokio::test]
async fn a_batch_left_in_flight_by_a_crashed_fetch_arrives_in_order_once() {
    let stack = Stack::start().await;
    let (alice, bob) = User::pair(&stack).await;
    let mut a = alice.connect(&stack).await;
    const COUNT: usize = 150;
    queue(&mut a, &bob, COUNT).await;

    // A fetch takes its first batch, as the relay's fetch does, and dies before writing it.
    let store = stack.redis_store().await;
    let lease = stack.config.relay.fetch_lease;
    let now = shared::clock::system().now_ms();
    let bob_id = Uuid::parse_str(&bob.user_id).unwrap();
    let taken = store
        .take_in_flight(
            bob_id.into(),
            POP_BATCH,
            now + lease.as_millis() as u64,
            now,
        )
        .await
        .expect("take");
    assert_eq!(taken.len(), POP_BATCH);
    drop(taken);

    // Once the dead fetch's lease has passed, the next fetch gets everything, oldest first.
    stack.advance(lease + Duration::from_secs(1));
    let mut b = bob.connect(&stack).await;
    assert_eq!(texts(&b.fetch_all().await), expected(COUNT));
    assert!(b.fetch_all().await.is_empty(), "delivered twice");
}

#[tokio::test]
async fn a_fetch_past_its_deadline_stops_and_says_fetch_again() {
    // Deadline 0: each fetch writes one frame (always at least one), then stops.
    let stack = Stack::with_env(&[("FETCH_DEADLINE_MS", "0")]).await;
    let (alice, bob) = User::pair(&stack).await;
    let mut a = alice.connect(&stack).await;
    const COUNT: usize = 150;
    queue(&mut a, &bob, COUNT).await;

    let mut b = bob.connect(&stack).await;
    b.send(json!({"action": "fetch"})).await;
    let mut first = Vec::new();
    let reply = b.until_reply(&mut first).await;
    assert_eq!(reply["type"], "error", "{reply}");
    assert_eq!(reply["code"], "unavailable", "{reply}");
    assert_eq!(first.len(), POP_BATCH, "one frame of one batch");
    b.send(json!({"action": "list"})).await;
    assert_eq!(b.recv().await["pending"], COUNT - POP_BATCH);

    let rest = b.fetch_all().await;
    let all: Vec<Value> = first.into_iter().chain(rest).collect();
    assert_eq!(texts(&all), expected(COUNT));
}

/// A send to a connected recipient takes the waiting backlog out of the inbox to push it; if the
/// function dies while pushing, the backlog waits in flight and the next fetch after the lease
/// gets it, in order, once.
#[tokio::test]
async fn a_backlog_taken_by_a_send_whose_push_dies_arrives_on_the_next_fetch() {
    let stack = Stack::start().await;
    let (alice, bob) = User::pair(&stack).await;
    let mut a = alice.connect(&stack).await;
    const WAITING: usize = 3;
    queue(&mut a, &bob, WAITING).await;

    // Bob shows up on a connection of a function instance that then dies: the delivery takes
    // the backlog and the new envelope for that connection, and nothing is ever pushed.
    let store = stack.redis_store().await;
    let now = shared::clock::system().now_ms();
    let lease = stack.config.relay.fetch_lease;
    let bob_id = Uuid::parse_str(&bob.user_id).unwrap();
    let ghost = Registration {
        user_id: bob_id,
        device_id: 1,
        session_id: Uuid::new_v4(),
        valid_until_ms: now + 600_000,
        ack: false,
        new_account_until_ms: 0,
    };
    store
        .register("ghost", &ghost, now)
        .await
        .expect("register");
    let json = serde_json::to_string(&Envelope {
        id: Uuid::new_v4(),
        from: Uuid::parse_str(&alice.user_id).unwrap(),
        source_device: 1,
        sent_at: now,
        group_id: None,
        mls_epoch: None,
        expires_at: None,
        body: shared::validation::encode(format!("m{WAITING}").as_bytes()),
    })
    .unwrap();
    let envelope = StoredEnvelope::new(now + 3_600_000, &json);
    let outcome = deliver_one(
        &store,
        bob_id,
        &envelope,
        false,
        now,
        now + lease.as_millis() as u64,
    )
    .await
    .expect("deliver");
    let Some(Delivery::Online {
        envelopes,
        in_flight,
        ..
    }) = outcome
    else {
        panic!("expected an online delivery, got {outcome:?}");
    };
    assert_eq!(envelopes.len(), WAITING + 1);
    assert!(in_flight);
    drop(envelopes);
    store.unregister("ghost").await.expect("unregister");

    stack.advance(lease + Duration::from_secs(1));
    let mut b = bob.connect(&stack).await;
    assert_eq!(texts(&b.fetch_all().await), expected(WAITING + 1));
    assert!(b.fetch_all().await.is_empty(), "delivered twice");
}
