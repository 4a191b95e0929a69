//! Acknowledged delivery ("ack mode", `?ack=1`) and idempotent sends, over real
//! WebSockets against the local gateway and a real Redis (a cluster too:
//! `RELAY_TEST_REDIS=cluster`). The contract: docs/api.md §6.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures::SinkExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use redis::AsyncCommands;
use relay_tests::acks::{
    ack, ack_frame, ack_lease, acked, connect_ack, envelope_ids, inbox_len, names, next_frame,
    receive_pushed, reply_alone, texts, user_key, wait_disconnected, wait_inbox_len, with_query,
    Next,
};
use relay_tests::devices::{
    assert_mismatched, assert_stale, link, message, pending, send_frame, Device,
    PRIMARY_REGISTRATION_ID,
};
use relay_tests::{Stack, User, Ws};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use shared::validation::encode;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

/// A lease and a second: every unacknowledged envelope is due again.
fn past_lease(stack: &Stack) -> Duration {
    ack_lease(stack) + Duration::from_secs(1)
}

/// A `send` frame in the single form.
fn single(to: &str, id: &str, body: &[u8]) -> Value {
    json!({"action": "send", "to": to, "id": id, "body": encode(body)})
}

/// The `sent` reply of a single-form send to a one-device recipient.
fn sent(id: &str, delivery: &str) -> Value {
    json!({"type": "sent", "id": id, "delivery": delivery,
           "devices": [{"device_id": 1, "delivery": delivery}]})
}

/// Sends `prefix{i}` (id and body) for each `i` of `range` from `ws` to `to`; every reply must
/// be `delivery`.
async fn send_texts(
    ws: &mut Ws,
    to: &str,
    prefix: &str,
    range: std::ops::Range<usize>,
    delivery: &str,
) {
    for text in names(prefix, range) {
        let reply = ws.send_message(to, &text, text.as_bytes()).await;
        assert_eq!(reply, sent(&text, delivery), "send {text}");
    }
}

/// Asserts an error frame with this id and code.
fn assert_error(reply: &Value, id: &str, code: &str) {
    assert_eq!(reply["type"], "error", "not an error: {reply}");
    assert_eq!(reply["id"], id, "id not echoed: {reply}");
    assert_eq!(reply["code"], code, "{reply}");
    assert!(reply["message"].is_string(), "no message: {reply}");
}

// ---------------------------------------------------------------------------------------------
// Ack mode: receiving
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn unacked_envelopes_come_back_in_order_after_a_dropped_socket_and_never_after_an_ack() {
    let stack = Stack::start().await;
    let (alice, bob) = User::pair(&stack).await;
    let mut a = alice.connect(&stack).await;

    // Three while Bob is offline, two pushed to his ack-mode connection.
    send_texts(&mut a, &bob.user_id, "m", 0..3, "queued").await;
    let mut b = connect_ack(&stack, &bob.access).await;
    let mut first = b.fetch_all().await;
    assert_eq!(texts(&first), names("m", 0..3));
    send_texts(&mut a, &bob.user_id, "m", 3..5, "delivered").await;
    first.extend(receive_pushed(&mut b, 2).await);
    assert_eq!(texts(&first), names("m", 0..5));
    assert!(
        b.fetch_all().await.is_empty(),
        "a fetch within the lease brings nothing back"
    );

    // Bob's app dies before acknowledging anything: the socket goes without a Close.
    drop(b);
    wait_inbox_len(&stack, &bob.user_id, 5).await;
    // What arrives meanwhile queues behind the five put back.
    send_texts(&mut a, &bob.user_id, "m", 5..6, "queued").await;

    let mut b = connect_ack(&stack, &bob.access).await;
    assert_eq!(pending(&mut b).await, 6);
    let again = b.fetch_all().await;
    assert_eq!(
        again[..5],
        first[..],
        "the same envelopes (ids, sent_at, bodies), in the original order"
    );
    assert_eq!(texts(&again[5..]), ["m5"]);

    let ids = envelope_ids(&again);
    assert_eq!(
        ack(&mut b, Some("ack-all"), &ids).await,
        json!({"type": "acked", "id": "ack-all", "acked": 6})
    );
    b.close().await;
    wait_disconnected(&stack, &bob.user_id).await;

    let mut b = connect_ack(&stack, &bob.access).await;
    assert!(b.fetch_all().await.is_empty(), "delivered after its ack");
    assert_eq!(pending(&mut b).await, 0);
    // Acking them again acknowledges nothing; without a frame id the reply's id is null.
    assert_eq!(
        ack(&mut b, None, &ids).await,
        json!({"type": "acked", "id": null, "acked": 0})
    );
    stack.advance(past_lease(&stack));
    assert!(
        b.fetch_all().await.is_empty(),
        "delivered after its ack, past the lease"
    );
    b.close().await;
    wait_disconnected(&stack, &bob.user_id).await;
    assert!(!stack.has_inbox(&bob.user_id).await, "inbox key left");
    let inflight: bool = stack
        .redis()
        .await
        .exists(user_key(&stack, &bob.user_id, "in-flight"))
        .await
        .expect("EXISTS");
    assert!(!inflight, "in-flight entries left after every ack");
}

/// Seconds left before the in-flight list of `user_id`'s device 1 expires (`TTL`).
async fn in_flight_ttl(stack: &Stack, user_id: &str) -> i64 {
    stack
        .redis()
        .await
        .ttl(user_key(stack, user_id, "in-flight"))
        .await
        .expect("TTL")
}

#[tokio::test]
async fn acks_out_of_order_delete_just_those_and_renew_the_expiry_of_what_stays_in_flight() {
    let stack = Stack::start().await;
    let (alice, bob) = User::pair(&stack).await;
    let mut a = alice.connect(&stack).await;
    let mut b = connect_ack(&stack, &bob.access).await;
    send_texts(&mut a, &bob.user_id, "m", 0..5, "delivered").await;
    let got = receive_pushed(&mut b, 5).await;
    assert_eq!(texts(&got), names("m", 0..5));
    let ids = envelope_ids(&got);
    let ttl = stack.config.inbox.ttl.as_secs() as i64;
    let mut redis = stack.redis().await;
    let key = user_key(&stack, &bob.user_id, "in-flight");
    assert!(
        in_flight_ttl(&stack, &bob.user_id).await > ttl - 60,
        "the list expires with the inbox"
    );

    // Not the oldest: m1 and m3 go, the others stay in their order.
    let _: () = redis.expire(&key, 100).await.expect("EXPIRE");
    let picked = [ids[1].clone(), ids[3].clone()];
    assert_eq!(acked(&mut b, "middle", &picked).await, 2);
    assert!(
        in_flight_ttl(&stack, &bob.user_id).await > ttl - 60,
        "an ack that leaves envelopes in flight renews the list's expiry"
    );
    // The oldest: m0 goes.
    let _: () = redis.expire(&key, 100).await.expect("EXPIRE");
    assert_eq!(acked(&mut b, "oldest", &ids[..1]).await, 1);
    assert!(in_flight_ttl(&stack, &bob.user_id).await > ttl - 60);

    drop(b);
    wait_inbox_len(&stack, &bob.user_id, 2).await;
    let mut b = connect_ack(&stack, &bob.access).await;
    let again = b.fetch_all().await;
    assert_eq!(
        texts(&again),
        ["m2", "m4"],
        "exactly the unacknowledged, in order"
    );
    assert_eq!(&again[..], &[got[2].clone(), got[4].clone()]);
    assert_eq!(acked(&mut b, "rest", &envelope_ids(&again)).await, 2);
    assert_eq!(
        in_flight_ttl(&stack, &bob.user_id).await,
        -2,
        "nothing left in flight"
    );
}

#[tokio::test]
async fn an_unacked_envelope_comes_back_on_the_same_connection_after_the_lease() {
    let stack = Stack::start().await;
    let (alice, bob) = User::pair(&stack).await;
    let mut b = connect_ack(&stack, &bob.access).await;
    assert!(b.fetch_all().await.is_empty());
    let mut a = alice.connect(&stack).await;
    send_texts(&mut a, &bob.user_id, "m", 0..1, "delivered").await;
    let first = receive_pushed(&mut b, 1).await;

    // Half a lease: still in flight, not delivered again.
    stack.advance(ack_lease(&stack) / 2);
    assert!(
        b.fetch_all().await.is_empty(),
        "redelivered within its lease"
    );

    // Past the lease: `fetch` on the same connection writes it again, then `drained`.
    stack.advance(ack_lease(&stack) / 2 + Duration::from_secs(1));
    b.send(json!({"action": "fetch"})).await;
    assert_eq!(
        b.recv().await,
        json!({"type": "messages", "messages": first}),
        "the same envelope again"
    );
    assert_eq!(b.recv().await, json!({"type": "drained"}));

    // Acknowledging after the redelivery works, and it is gone for good.
    assert_eq!(acked(&mut b, "late", &envelope_ids(&first)).await, 1);
    stack.advance(past_lease(&stack));
    assert!(b.fetch_all().await.is_empty(), "delivered after its ack");
    assert_eq!(pending(&mut b).await, 0);
}

#[tokio::test]
async fn after_the_lease_the_next_message_to_a_connected_device_brings_the_unacked_one_first() {
    let stack = Stack::start().await;
    let (alice, bob) = User::pair(&stack).await;
    let mut b = connect_ack(&stack, &bob.access).await;
    assert!(b.fetch_all().await.is_empty());
    let mut a = alice.connect(&stack).await;
    send_texts(&mut a, &bob.user_id, "m", 0..1, "delivered").await;
    let first = receive_pushed(&mut b, 1).await;

    stack.advance(past_lease(&stack));
    send_texts(&mut a, &bob.user_id, "m", 1..2, "delivered").await;
    let got = receive_pushed(&mut b, 2).await;
    assert_eq!(
        got[0], first[0],
        "the unacknowledged envelope first, unchanged"
    );
    assert_eq!(texts(&got), names("m", 0..2));

    assert_eq!(acked(&mut b, "both", &envelope_ids(&got)).await, 2);
    stack.advance(past_lease(&stack));
    assert!(b.fetch_all().await.is_empty(), "delivered after its ack");
}

#[tokio::test]
async fn after_the_lease_another_connection_of_the_device_fetches_it() {
    let stack = Stack::start().await;
    let (alice, bob) = User::pair(&stack).await;
    let mut one = connect_ack(&stack, &bob.access).await;
    let mut two = connect_ack(&stack, &bob.access).await;
    let mut a = alice.connect(&stack).await;
    send_texts(&mut a, &bob.user_id, "m", 0..1, "delivered").await;
    // One of the device's connections gets the push (which one is not the point here).
    let (first, pushed_to_one) = tokio::select! {
        got = receive_pushed(&mut one, 1) => (got, true),
        got = receive_pushed(&mut two, 1) => (got, false),
    };
    let (mut holder, mut other) = if pushed_to_one {
        (one, two)
    } else {
        (two, one)
    };
    assert!(
        holder.frames_before_pong().await.is_empty() && other.frames_before_pong().await.is_empty(),
        "pushed twice"
    );

    stack.advance(past_lease(&stack));
    assert_eq!(
        other.fetch_all().await,
        first,
        "the other connection gets it"
    );
    assert_eq!(acked(&mut other, "a", &envelope_ids(&first)).await, 1);
    assert!(holder.fetch_all().await.is_empty());
    stack.advance(past_lease(&stack));
    assert!(
        holder.fetch_all().await.is_empty(),
        "delivered after its ack"
    );
    assert!(
        other.fetch_all().await.is_empty(),
        "delivered after its ack"
    );
}

#[tokio::test]
async fn acking_unknown_foreign_or_malformed_ids_changes_nothing() {
    let stack = Stack::start().await;
    let (alice, bob) = User::pair(&stack).await;
    let carol = User::builder(&stack).create().await;
    let mut a = connect_ack(&stack, &alice.access).await;
    let mut b = connect_ack(&stack, &bob.access).await;
    let mut c = connect_ack(&stack, &carol.access).await;
    send_texts(&mut a, &bob.user_id, "to-bob-", 0..1, "delivered").await;
    send_texts(&mut a, &carol.user_id, "to-carol-", 0..1, "delivered").await;
    let bobs = receive_pushed(&mut b, 1).await;
    let carols = receive_pushed(&mut c, 1).await;
    let bob_id = envelope_ids(&bobs).remove(0);
    let carol_id = envelope_ids(&carols).remove(0);

    let random: Vec<String> = (0..3).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    assert_eq!(acked(&mut b, "random", &random).await, 0);
    assert_eq!(
        acked(&mut b, "carols", std::slice::from_ref(&carol_id)).await,
        0,
        "Bob acks Carol's envelope"
    );
    assert_eq!(
        acked(&mut a, "senders", &[bob_id.clone(), carol_id.clone()]).await,
        0,
        "the sender acks what she sent"
    );
    // Well-formed at the limits (100 ids of 64 bytes; 64 bytes of two-byte characters), and
    // acknowledging nothing.
    let longest: Vec<String> = (0..100).map(|i| format!("{i:064}")).collect();
    assert_eq!(acked(&mut b, "longest", &longest).await, 0);
    assert_eq!(acked(&mut b, "utf8", &["é".repeat(32)]).await, 0);

    // Malformed frames are refused as a whole, even with Bob's real id among the ids.
    let mut too_many = vec![bob_id.clone()];
    too_many.extend((0..100).map(|_| uuid::Uuid::new_v4().to_string()));
    let malformed = [
        ("an empty list", json!([])),
        ("101 ids", json!(too_many)),
        ("a number among the ids", json!([bob_id, 7])),
        ("null among the ids", json!([bob_id, null])),
        ("an object among the ids", json!([bob_id, {"id": bob_id}])),
        ("an id of 65 bytes", json!([bob_id, "x".repeat(65)])),
        (
            "an id of 66 bytes in 33 characters",
            json!([bob_id, "é".repeat(33)]),
        ),
        ("ids a string", json!(bob_id)),
        ("ids null", json!(null)),
    ];
    for (what, ids) in malformed {
        let reply = reply_alone(&mut b, json!({"action": "ack", "id": "bad", "ids": ids})).await;
        assert_eq!(reply["type"], "error", "{what}: {reply}");
        assert_error(&reply, "bad", "invalid_frame");
    }
    let reply = reply_alone(&mut b, json!({"action": "ack", "id": "bad"})).await;
    assert_error(&reply, "bad", "invalid_frame");

    // Nothing was acknowledged: both envelopes come back after the lease, unchanged.
    stack.advance(past_lease(&stack));
    assert_eq!(b.fetch_all().await, bobs, "Bob's envelope after the lease");
    assert_eq!(
        c.fetch_all().await,
        carols,
        "Carol's envelope after the lease"
    );
    // One id twice in a frame deletes one envelope.
    assert_eq!(acked(&mut b, "twice", &[bob_id.clone(), bob_id]).await, 1);
    assert_eq!(acked(&mut c, "carol", &[carol_id]).await, 1);
    stack.advance(past_lease(&stack));
    assert!(b.fetch_all().await.is_empty());
    assert!(c.fetch_all().await.is_empty());
}

#[tokio::test]
async fn unacked_envelopes_in_flight_count_toward_the_inbox_cap() {
    let stack = Stack::with_env(&[("INBOX_MAX", "5")]).await;
    let (alice, bob) = User::pair(&stack).await;
    let mut b = connect_ack(&stack, &bob.access).await;
    assert!(b.fetch_all().await.is_empty());
    let mut a = alice.connect(&stack).await;

    // Five in flight, none acknowledged: the inbox is full though nothing waits in it.
    send_texts(&mut a, &bob.user_id, "m", 0..3, "delivered").await;
    let mut got = receive_pushed(&mut b, 3).await;
    send_texts(&mut a, &bob.user_id, "m", 3..5, "delivered").await;
    got.extend(receive_pushed(&mut b, 2).await);
    assert_eq!(texts(&got), names("m", 0..5));
    // Alice holds all of it: her next ones are refused.
    send_texts(&mut a, &bob.user_id, "m", 5..7, "dropped").await;
    assert!(
        b.frames_before_pong().await.is_empty(),
        "a dropped message was pushed"
    );

    // Two acknowledged make room for two.
    let ids = envelope_ids(&got);
    assert_eq!(acked(&mut b, "two", &ids[..2]).await, 2);
    send_texts(&mut a, &bob.user_id, "m", 7..9, "delivered").await;
    let later = receive_pushed(&mut b, 2).await;
    assert_eq!(texts(&later), names("m", 7..9));
    send_texts(&mut a, &bob.user_id, "m", 9..10, "dropped").await;

    // Bob goes: the five unacknowledged fill the inbox; now that they wait there, Alice's next
    // one replaces her oldest (first in, first out).
    drop(b);
    wait_inbox_len(&stack, &bob.user_id, 5).await;
    send_texts(&mut a, &bob.user_id, "m", 10..11, "queued").await;
    let mut b = connect_ack(&stack, &bob.access).await;
    let again = b.fetch_all().await;
    assert_eq!(texts(&again), ["m3", "m4", "m7", "m8", "m10"]);
    assert_eq!(acked(&mut b, "rest", &envelope_ids(&again)).await, 5);
}

#[tokio::test]
async fn an_envelope_that_expires_in_flight_is_never_delivered_again() {
    let stack = Stack::with_env(&[("INBOX_TTL_SECS", "45"), ("FETCH_LEASE_MS", "30000")]).await;
    let (alice, bob) = User::pair(&stack).await;
    let mut b = connect_ack(&stack, &bob.access).await;
    assert!(b.fetch_all().await.is_empty());
    let mut a = alice.connect(&stack).await;
    send_texts(&mut a, &bob.user_id, "m", 0..1, "delivered").await;
    receive_pushed(&mut b, 1).await;
    stack.advance(Duration::from_secs(20));
    send_texts(&mut a, &bob.user_id, "m", 1..2, "delivered").await;
    receive_pushed(&mut b, 1).await;

    // 51 s: both leases are over, m0 (45 s TTL) has expired, m1 has not.
    stack.advance(Duration::from_secs(31));
    assert_eq!(texts(&b.fetch_all().await), ["m1"]);
    drop(b);
    wait_inbox_len(&stack, &bob.user_id, 1).await;
    let mut b = connect_ack(&stack, &bob.access).await;
    assert_eq!(
        texts(&b.fetch_all().await),
        ["m1"],
        "put back at disconnect"
    );
}

#[tokio::test]
async fn online_only_messages_are_fire_and_forget_in_ack_mode_too() {
    let stack = Stack::start().await;
    let (alice, bob) = User::pair(&stack).await;
    let mut b = connect_ack(&stack, &bob.access).await;
    assert!(b.fetch_all().await.is_empty());
    let mut a = connect_ack(&stack, &alice.access).await;
    let mut typing = single(&bob.user_id, "typing", b"typing");
    typing["online_only"] = json!(true);
    assert_eq!(
        reply_alone(&mut a, typing).await,
        sent("typing", "delivered")
    );
    let got = receive_pushed(&mut b, 1).await;
    assert_eq!(
        acked(&mut b, "a", &envelope_ids(&got)).await,
        0,
        "never held"
    );

    drop(b);
    wait_disconnected(&stack, &bob.user_id).await;
    assert_eq!(inbox_len(&stack, &bob.user_id).await, 0);
    let mut b = connect_ack(&stack, &bob.access).await;
    assert!(
        b.fetch_all().await.is_empty(),
        "an online_only message held"
    );
    stack.advance(past_lease(&stack));
    assert!(
        b.fetch_all().await.is_empty(),
        "an online_only message held"
    );
}

// ---------------------------------------------------------------------------------------------
// Fire-and-forget: unchanged
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn without_ack_mode_a_written_envelope_is_gone_and_acks_acknowledge_nothing() {
    let stack = Stack::start().await;
    let (alice, bob) = User::pair(&stack).await;
    let mut a = alice.connect(&stack).await;

    // Pushed live.
    let mut b = bob.connect(&stack).await;
    send_texts(&mut a, &bob.user_id, "m", 0..1, "delivered").await;
    let pushed = receive_pushed(&mut b, 1).await;
    assert_eq!(
        ack(&mut b, Some("a-1"), &envelope_ids(&pushed)).await,
        json!({"type": "acked", "id": "a-1", "acked": 0})
    );
    drop(b);

    // Written by a fetch.
    wait_disconnected(&stack, &bob.user_id).await;
    send_texts(&mut a, &bob.user_id, "m", 1..2, "queued").await;
    let mut b = bob.connect(&stack).await;
    let fetched = b.fetch_all().await;
    assert_eq!(texts(&fetched), ["m1"]);
    drop(b);

    wait_disconnected(&stack, &bob.user_id).await;
    assert!(!stack.has_inbox(&bob.user_id).await, "inbox key left");
    let inflight: bool = stack
        .redis()
        .await
        .exists(user_key(&stack, &bob.user_id, "in-flight"))
        .await
        .expect("EXISTS");
    assert!(
        !inflight,
        "a fire-and-forget write left an envelope in flight"
    );
    let mut b = bob.connect(&stack).await;
    assert!(b.fetch_all().await.is_empty(), "delivered twice");
    stack.advance(past_lease(&stack));
    assert!(
        b.fetch_all().await.is_empty(),
        "delivered twice, past the lease"
    );
    assert_eq!(pending(&mut b).await, 0);
    assert_eq!(
        ack(&mut b, None, &envelope_ids(&fetched)).await,
        json!({"type": "acked", "id": null, "acked": 0})
    );
}

#[tokio::test]
async fn ack_true_opts_in_too_and_any_other_value_is_fire_and_forget() {
    let stack = Stack::start().await;
    let (alice, bob) = User::pair(&stack).await;
    let mut a = alice.connect(&stack).await;

    let mut b = Ws::connect(&with_query(&stack, &bob.access, "ack=true"))
        .await
        .expect("handshake");
    send_texts(&mut a, &bob.user_id, "m", 0..1, "delivered").await;
    let first = receive_pushed(&mut b, 1).await;
    drop(b);
    wait_inbox_len(&stack, &bob.user_id, 1).await;
    let mut b = connect_ack(&stack, &bob.access).await;
    assert_eq!(b.fetch_all().await, first, "ack=true is ack mode");
    assert_eq!(acked(&mut b, "a", &envelope_ids(&first)).await, 1);
    b.close().await;

    for value in ["ack=0", "ack=false", "ack=yes", "ack="] {
        wait_disconnected(&stack, &bob.user_id).await;
        let mut b = Ws::connect(&with_query(&stack, &bob.access, value))
            .await
            .expect("handshake");
        let text = format!("with {value}");
        let reply = a.send_message(&bob.user_id, &text, text.as_bytes()).await;
        assert_eq!(reply, sent(&text, "delivered"));
        receive_pushed(&mut b, 1).await;
        drop(b);
        wait_disconnected(&stack, &bob.user_id).await;
        assert_eq!(
            inbox_len(&stack, &bob.user_id).await,
            0,
            "{value} kept the envelope"
        );
        let mut b = connect_ack(&stack, &bob.access).await;
        stack.advance(past_lease(&stack));
        assert!(b.fetch_all().await.is_empty(), "{value} is ack mode");
        b.close().await;
    }
}

// ---------------------------------------------------------------------------------------------
// Random kills
// ---------------------------------------------------------------------------------------------

/// What Bob's connections went through in the random-kill test.
#[derive(Debug, Default)]
struct KillStats {
    connections: usize,
    dropped: usize,
    closed: usize,
    crashed_before_processing: usize,
    closed_by_server: usize,
    kills_while_sending: usize,
    unavailable: usize,
    duplicates: usize,
    acked_in_replies_read: u64,
}

/// Writes a frame, ignoring a socket that is already gone (the kill test's connections die at
/// any moment).
async fn try_send(ws: &mut Ws, frame: Value) {
    let _ = ws
        .stream
        .send(Message::Text(frame.to_string().into()))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn random_socket_kills_lose_nothing_and_leave_the_inbox_empty() {
    const SENDERS: usize = 10;
    const PER_SENDER: usize = 50;
    const TOTAL: usize = SENDERS * PER_SENDER;
    let stack = Stack::start().await;
    let bob = User::builder(&stack).create().await;
    let seed: u64 = std::env::var("ACKS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("random kills: ACKS_SEED={seed}");
    let mut rng = StdRng::seed_from_u64(seed);

    let mut senders = Vec::new();
    for _ in 0..SENDERS {
        senders.push(User::builder(&stack).create().await);
    }
    let mut sends = Vec::new();
    for (s, sender) in senders.iter().enumerate() {
        let url = stack.ws_url(&sender.access);
        let to = bob.user_id.clone();
        let mut pace = StdRng::seed_from_u64(seed ^ (s as u64 + 1));
        sends.push(tokio::spawn(async move {
            let mut ws = Ws::connect(&url).await.expect("sender handshake");
            for m in 0..PER_SENDER {
                let text = format!("s{s}-m{m}");
                let reply = ws.send_message(&to, &text, text.as_bytes()).await;
                assert_eq!(reply["type"], "sent", "{text}: {reply}");
                assert!(
                    matches!(reply["delivery"].as_str(), Some("delivered" | "queued")),
                    "{text}: {reply}"
                );
                tokio::time::sleep(Duration::from_millis(pace.gen_range(0..4))).await;
            }
            ws.close().await;
        }));
    }

    // Bob: connect in ack mode, fetch, process what arrives and ack it (sometimes), and die at
    // a random moment: dropped or closed, sometimes with a frame received but not processed.
    let mut seen: HashMap<String, String> = HashMap::new(); // envelope id → body
    let mut stats = KillStats::default();
    let started = Instant::now();
    let mut ack_no = 0usize;
    loop {
        let bodies: HashSet<&String> = seen.values().collect();
        if sends.iter().all(|t| t.is_finished()) && bodies.len() == TOTAL {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "after 2 minutes Bob has {} of {TOTAL} bodies; {stats:?}",
            bodies.len()
        );
        let mut b = connect_ack(&stack, &bob.access).await;
        stats.connections += 1;
        try_send(&mut b, json!({"action": "fetch"})).await;
        let end = Instant::now() + Duration::from_millis(rng.gen_range(10..200));
        let mut processed: Vec<String> = Vec::new();
        let mut acks_sent: HashMap<String, usize> = HashMap::new();
        loop {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let f = match next_frame(&mut b, left).await {
                Next::Quiet => break,
                Next::Closed => {
                    stats.closed_by_server += 1;
                    break;
                }
                Next::Frame(f) => f,
            };
            match f["type"].as_str() {
                Some("messages") => {
                    if rng.gen_bool(0.08) {
                        // The app dies with this frame read but not processed.
                        stats.crashed_before_processing += 1;
                        break;
                    }
                    for e in f["messages"].as_array().expect("messages") {
                        let id = e["id"].as_str().expect("id").to_string();
                        let body = texts(std::slice::from_ref(e)).remove(0);
                        if let Some(before) = seen.insert(id.clone(), body.clone()) {
                            stats.duplicates += 1;
                            assert_eq!(before, body, "envelope {id} changed");
                        }
                        processed.push(id);
                    }
                    if rng.gen_bool(0.7) {
                        for chunk in processed.chunks(100) {
                            ack_no += 1;
                            let id = format!("k{ack_no}");
                            acks_sent.insert(id.clone(), chunk.len());
                            try_send(&mut b, ack_frame(Some(&id), chunk)).await;
                        }
                        processed.clear();
                    }
                }
                Some("acked") => {
                    let id = f["id"].as_str().expect("ack reply id");
                    let sent = acks_sent.remove(id).expect("a reply to an ack sent");
                    let n = f["acked"].as_u64().expect("acked");
                    assert!(n as usize <= sent, "{n} acked of {sent} ids: {f}");
                    stats.acked_in_replies_read += n;
                }
                Some("drained") => {}
                Some("error") if f["code"] == "unavailable" => stats.unavailable += 1,
                _ => panic!("unexpected frame {f}"),
            }
        }
        if !sends.iter().all(|t| t.is_finished()) {
            stats.kills_while_sending += 1;
        }
        if rng.gen_bool(0.5) {
            drop(b);
            stats.dropped += 1;
        } else {
            b.close().await;
            stats.closed += 1;
        }
    }
    for t in sends {
        t.await.expect("a sender failed");
    }

    // The last connection's unacknowledged envelopes are back in the inbox: process them (each
    // one a duplicate now) and ack them.
    wait_disconnected(&stack, &bob.user_id).await;
    let mut b = connect_ack(&stack, &bob.access).await;
    for round in 0.. {
        assert!(round < 20, "fetches keep bringing envelopes");
        let got = b.fetch_all().await;
        if got.is_empty() {
            break;
        }
        for e in &got {
            let id = e["id"].as_str().expect("id");
            assert!(seen.contains_key(id), "an envelope never seen before: {e}");
            stats.duplicates += 1;
        }
        // A killed connection whose close the relay handles only now hands back the device's
        // whole in-flight list (docs/api.md §6.9), this fetch's too: those come round again.
        for chunk in envelope_ids(&got).chunks(100) {
            let n = acked(&mut b, "final", chunk).await;
            assert!(n as usize <= chunk.len(), "{n} acked of {}", chunk.len());
            stats.acked_in_replies_read += n;
        }
    }
    eprintln!("random kills: {stats:?}");

    let mut bodies: Vec<&String> = seen.values().collect();
    bodies.sort();
    let mut expected: Vec<String> = (0..SENDERS)
        .flat_map(|s| (0..PER_SENDER).map(move |m| format!("s{s}-m{m}")))
        .collect();
    expected.sort();
    assert_eq!(
        bodies,
        expected.iter().collect::<Vec<_>>(),
        "every body exactly once by envelope id"
    );
    assert!(
        stats.kills_while_sending >= 3,
        "the senders finished before Bob's connections died: {stats:?}"
    );
    assert!(
        stats.acked_in_replies_read <= TOTAL as u64,
        "more deletions than envelopes: {stats:?}"
    );

    // Bob's inbox is empty, also once every lease is over.
    assert_eq!(pending(&mut b).await, 0);
    assert!(b.fetch_all().await.is_empty());
    b.close().await;
    wait_disconnected(&stack, &bob.user_id).await;
    stack.advance(past_lease(&stack));
    let mut b = connect_ack(&stack, &bob.access).await;
    assert!(b.fetch_all().await.is_empty(), "redelivered past the lease");
    assert_eq!(pending(&mut b).await, 0);
    b.close().await;
    wait_disconnected(&stack, &bob.user_id).await;
    assert!(!stack.has_inbox(&bob.user_id).await, "inbox key left");
    let inflight: bool = stack
        .redis()
        .await
        .exists(user_key(&stack, &bob.user_id, "in-flight"))
        .await
        .expect("EXISTS");
    assert!(!inflight, "in-flight entries left");
}

// ---------------------------------------------------------------------------------------------
// Idempotent sends
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_send_repeated_with_its_id_is_stored_once_and_answered_the_same_each_time() {
    let stack = Stack::start().await;
    let (alice, bob) = User::pair(&stack).await;
    let mut a = connect_ack(&stack, &alice.access).await;

    // Bob offline: queued once.
    let frame = single(&bob.user_id, "once-1", b"only once");
    let first = reply_alone(&mut a, frame.clone()).await;
    assert_eq!(first, sent("once-1", "queued"));
    for i in 0..4 {
        assert_eq!(
            reply_alone(&mut a, frame.clone()).await,
            first,
            "repeat {i}"
        );
    }
    let mut b = bob.connect(&stack).await;
    let got = b.fetch_all().await;
    assert_eq!(texts(&got), ["only once"]);
    // With Bob online now, a repeat still answers what the first send did and delivers nothing.
    assert_eq!(reply_alone(&mut a, frame).await, first);
    assert!(
        b.frames_before_pong().await.is_empty(),
        "a repeat delivered"
    );
    assert!(b.fetch_all().await.is_empty(), "a repeat stored");

    // Bob online: delivered once.
    let frame = single(&bob.user_id, "once-2", b"live once");
    let first = reply_alone(&mut a, frame.clone()).await;
    assert_eq!(first, sent("once-2", "delivered"));
    for i in 0..4 {
        assert_eq!(
            reply_alone(&mut a, frame.clone()).await,
            first,
            "repeat {i}"
        );
    }
    assert_eq!(texts(&receive_pushed(&mut b, 1).await), ["live once"]);
    assert!(
        b.frames_before_pong().await.is_empty(),
        "a repeat delivered"
    );
    assert!(b.fetch_all().await.is_empty(), "a repeat stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_repeats_store_one_envelope_and_get_five_identical_answers() {
    let stack = Stack::start().await;
    let (alice, bob) = User::pair(&stack).await;
    let mut b = bob.connect(&stack).await;
    let mut conns = Vec::new();
    for _ in 0..5 {
        conns.push(connect_ack(&stack, &alice.access).await);
    }

    // Five connections of Alice: every frame is on the wire before any reply is read.
    let frame = single(&bob.user_id, "burst-1", b"burst");
    futures::future::join_all(conns.iter_mut().map(|c| c.send(frame.clone()))).await;
    let replies = futures::future::join_all(conns.iter_mut().map(|c| async move {
        let mut pushed = Vec::new();
        let reply = c.until_reply(&mut pushed).await;
        assert!(pushed.is_empty(), "pushed to Alice: {pushed:?}");
        reply
    }))
    .await;
    for reply in &replies {
        assert_eq!(reply, &sent("burst-1", "delivered"), "{replies:?}");
    }
    assert_eq!(texts(&receive_pushed(&mut b, 1).await), ["burst"]);
    assert!(
        b.frames_before_pong().await.is_empty(),
        "a repeat delivered"
    );
    assert!(b.fetch_all().await.is_empty(), "a repeat stored");

    // One connection, rapid fire: five frames written before a reply is read.
    let c = &mut conns[0];
    let frame = single(&bob.user_id, "burst-2", b"rapid");
    for _ in 0..5 {
        c.send(frame.clone()).await;
    }
    for i in 0..5 {
        let mut pushed = Vec::new();
        let reply = c.until_reply(&mut pushed).await;
        assert_eq!(reply, sent("burst-2", "delivered"), "reply {i}");
    }
    assert_eq!(texts(&receive_pushed(&mut b, 1).await), ["rapid"]);
    assert!(
        b.frames_before_pong().await.is_empty(),
        "a repeat delivered"
    );
    assert!(b.fetch_all().await.is_empty(), "a repeat stored");
}

#[tokio::test]
async fn a_reused_id_with_other_content_is_refused_and_stores_nothing() {
    let stack = Stack::start().await;
    let (alice, bob) = User::pair(&stack).await;
    let carol = User::builder(&stack).create().await;
    let mut a = connect_ack(&stack, &alice.access).await;
    let original = single(&bob.user_id, "r-1", b"first");
    let first = reply_alone(&mut a, original.clone()).await;
    assert_eq!(first, sent("r-1", "queued"));

    let mut online_only = original.clone();
    online_only["online_only"] = json!(true);
    let others = [
        ("another body", single(&bob.user_id, "r-1", b"second")),
        ("another recipient", single(&carol.user_id, "r-1", b"first")),
        ("online_only", online_only),
    ];
    for (what, frame) in others {
        let reply = reply_alone(&mut a, frame).await;
        assert_eq!(reply["code"], "id_reused", "{what}: {reply}");
        assert_error(&reply, "r-1", "id_reused");
    }
    // The original is still remembered as it was.
    assert_eq!(reply_alone(&mut a, original).await, first);

    let mut b = bob.connect(&stack).await;
    assert_eq!(texts(&b.fetch_all().await), ["first"]);
    let mut c = carol.connect(&stack).await;
    assert!(c.fetch_all().await.is_empty(), "a refused send stored");
}

#[tokio::test]
async fn a_refused_send_is_not_remembered_and_its_id_can_be_used_again() {
    let stack = Stack::start().await;
    let (alice, bob) = User::pair(&stack).await;
    let carol = User::builder(&stack).create().await;
    let bob2 = link(&stack, &bob, 2002).await;
    let mut a = connect_ack(&stack, &alice.access).await;

    // The single form to a recipient with two devices, then a stale registration id.
    let reply = reply_alone(&mut a, single(&bob.user_id, "fix-1", b"one body")).await;
    assert_mismatched(&reply, "fix-1", &[1, 2], &[]);
    let stale = vec![
        message(1, PRIMARY_REGISTRATION_ID, b"for 1"),
        message(2, 9999, b"for 2"),
    ];
    let reply = reply_alone(&mut a, send_frame(&bob.user_id, "fix-1", stale)).await;
    assert_stale(&reply, "fix-1", &[2]);
    // Fixed: the same id goes through, once.
    let right = send_frame(
        &bob.user_id,
        "fix-1",
        vec![
            Device::primary(&bob).message(b"for 1"),
            bob2.message(b"for 2"),
        ],
    );
    let ok = reply_alone(&mut a, right.clone()).await;
    assert_eq!(
        ok,
        json!({"type": "sent", "id": "fix-1", "delivery": "queued", "devices": [
            {"device_id": 1, "delivery": "queued"}, {"device_id": 2, "delivery": "queued"}]})
    );
    assert_eq!(reply_alone(&mut a, right).await, ok);

    // Too large, then a body that fits.
    let big = vec![0u8; 65_537];
    let reply = reply_alone(&mut a, single(&carol.user_id, "fix-2", &big)).await;
    assert_error(&reply, "fix-2", "too_large");
    let reply = reply_alone(&mut a, single(&carol.user_id, "fix-2", b"small")).await;
    assert_eq!(reply, sent("fix-2", "queued"));

    // An unknown recipient, then a known one.
    let nobody = uuid::Uuid::new_v4().to_string();
    let reply = reply_alone(&mut a, single(&nobody, "fix-3", b"lost?")).await;
    assert_error(&reply, "fix-3", "unknown_recipient");
    let reply = reply_alone(&mut a, single(&carol.user_id, "fix-3", b"found")).await;
    assert_eq!(reply, sent("fix-3", "queued"));

    let mut b1 = bob.connect(&stack).await;
    assert_eq!(texts(&b1.fetch_all().await), ["for 1"]);
    let mut b2 = bob2.connect(&stack).await;
    assert_eq!(texts(&b2.fetch_all().await), ["for 2"]);
    let mut c = carol.connect(&stack).await;
    assert_eq!(texts(&c.fetch_all().await), ["small", "found"]);
}

#[tokio::test]
async fn sends_from_fire_and_forget_connections_or_without_an_id_are_not_deduplicated() {
    let stack = Stack::start().await;
    let (alice, bob) = User::pair(&stack).await;
    let mut plain = alice.connect(&stack).await;
    for _ in 0..2 {
        let reply = plain.send_message(&bob.user_id, "same", b"twice").await;
        assert_eq!(reply, sent("same", "queued"));
    }
    let mut acking = connect_ack(&stack, &alice.access).await;
    let no_id = json!({"action": "send", "to": bob.user_id, "body": encode(b"no id")});
    for _ in 0..2 {
        let reply = reply_alone(&mut acking, no_id.clone()).await;
        assert_eq!(reply["type"], "sent", "{reply}");
        assert_eq!(reply["id"], Value::Null, "{reply}");
        assert_eq!(reply["delivery"], "queued", "{reply}");
    }
    let mut b = bob.connect(&stack).await;
    let got = b.fetch_all().await;
    assert_eq!(texts(&got), ["twice", "twice", "no id", "no id"]);
    let distinct: HashSet<String> = envelope_ids(&got).into_iter().collect();
    assert_eq!(distinct.len(), 4, "four envelopes");
}

#[tokio::test]
async fn idempotency_is_per_sending_device() {
    let stack = Stack::start().await;
    let (alice, bob) = User::pair(&stack).await;
    let alice2 = link(&stack, &alice, 2002).await;
    let mut a1 = connect_ack(&stack, &alice.access).await;
    let mut a2 = connect_ack(&stack, &alice2.access).await;

    // The same frame from both devices: two sends.
    let frame = single(&bob.user_id, "dev-1", b"same frame");
    let r1 = reply_alone(&mut a1, frame.clone()).await;
    let r2 = reply_alone(&mut a2, frame.clone()).await;
    assert_eq!(r1, sent("dev-1", "queued"));
    assert_eq!(r2, sent("dev-1", "queued"));
    // The same id with another body from the other device: its own send, not a reuse.
    let from1 = single(&bob.user_id, "dev-2", b"from device 1");
    let from2 = single(&bob.user_id, "dev-2", b"from device 2");
    assert_eq!(
        reply_alone(&mut a1, from1.clone()).await,
        sent("dev-2", "queued")
    );
    assert_eq!(
        reply_alone(&mut a2, from2.clone()).await,
        sent("dev-2", "queued")
    );
    // Each device still has its own remembered: repeats store nothing.
    assert_eq!(reply_alone(&mut a1, frame.clone()).await, r1);
    assert_eq!(reply_alone(&mut a2, frame).await, r2);
    assert_eq!(reply_alone(&mut a1, from1).await, sent("dev-2", "queued"));
    assert_eq!(reply_alone(&mut a2, from2).await, sent("dev-2", "queued"));

    let mut b = bob.connect(&stack).await;
    let got = b.fetch_all().await;
    assert_eq!(
        texts(&got),
        ["same frame", "same frame", "from device 1", "from device 2"]
    );
    let devices: Vec<u64> = got
        .iter()
        .map(|e| e["source_device"].as_u64().expect("source_device"))
        .collect();
    assert_eq!(devices, [1, 2, 1, 2]);
    assert_eq!(alice2.device_id, 2);
}

/// The field of a remembered send in its device's `sent` hash: the hex SHA-256 of the id.
fn id_hash(id: &str) -> String {
    Sha256::digest(id.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test]
async fn a_remembered_send_is_kept_a_day_in_the_sender_devices_log() {
    let stack = Stack::start().await;
    let (alice, bob) = User::pair(&stack).await;
    let log = user_key(&stack, &alice.user_id, "sent");
    let times = user_key(&stack, &alice.user_id, "sent-times");
    let mut redis = stack.redis().await;

    let mut a = connect_ack(&stack, &alice.access).await;
    let reply = reply_alone(&mut a, single(&bob.user_id, "kept-1", b"x")).await;
    assert_eq!(reply, sent("kept-1", "queued"));
    let entry: Option<String> = redis.hget(&log, id_hash("kept-1")).await.expect("HGET");
    let entry = entry.unwrap_or_else(|| panic!("kept-1 not in {log}"));
    let (content, answer) = entry
        .split_once('|')
        .unwrap_or_else(|| panic!("not <content hash>|<answer>: {entry}"));
    assert!(!content.is_empty() && !answer.is_empty(), "{entry}");
    let claimed: Option<f64> = redis
        .zscore(&times, id_hash("kept-1"))
        .await
        .expect("ZSCORE");
    assert!(claimed.is_some(), "kept-1 not in {times}");
    for key in [&log, &times] {
        let ttl: i64 = redis.ttl(key).await.expect("TTL");
        assert!((86_000..=86_400).contains(&ttl), "TTL {ttl} of {key}");
    }

    // A refused send and a fire-and-forget send leave nothing.
    let nobody = uuid::Uuid::new_v4().to_string();
    let reply = reply_alone(&mut a, single(&nobody, "kept-2", b"x")).await;
    assert_error(&reply, "kept-2", "unknown_recipient");
    let mut plain = alice.connect(&stack).await;
    let reply = plain.send_message(&bob.user_id, "kept-3", b"x").await;
    assert_eq!(reply, sent("kept-3", "queued"));
    for id in ["kept-2", "kept-3"] {
        let there: bool = redis.hexists(&log, id_hash(id)).await.expect("HEXISTS");
        assert!(!there, "{id} remembered");
    }
}

#[tokio::test]
async fn a_repeat_within_a_day_is_answered_from_memory_and_after_a_day_is_a_new_send() {
    let stack = Stack::start().await;
    let (alice, bob) = User::pair(&stack).await;
    let frame = single(&bob.user_id, "day-1", b"daily");
    let mut a = connect_ack(&stack, &alice.access).await;
    let first = reply_alone(&mut a, frame.clone()).await;
    assert_eq!(first, sent("day-1", "queued"));
    a.close().await;

    // 23 hours on (a fresh login: the first token has expired), the same send is remembered.
    stack.advance(Duration::from_secs(23 * 3600));
    let (access, _) = alice.log_in(&stack).await;
    let mut a = connect_ack(&stack, &access).await;
    assert_eq!(reply_alone(&mut a, frame.clone()).await, first);
    a.close().await;

    // Past 24 hours it is forgotten: the same frame is a new send.
    stack.advance(Duration::from_secs(3600 + 1));
    let (access, _) = alice.log_in(&stack).await;
    let mut a = connect_ack(&stack, &access).await;
    assert_eq!(reply_alone(&mut a, frame).await, sent("day-1", "queued"));

    let (access, _) = bob.log_in(&stack).await;
    let mut b = Ws::connect(&stack.ws_url(&access))
        .await
        .expect("handshake");
    assert_eq!(texts(&b.fetch_all().await), ["daily", "daily"]);
}

/// What docs/api.md §6.9 lets a device's remembered sends hold in Redis.
const REMEMBERED_BUDGET: u64 = 256 * 1024;

/// All the memory Redis reports for `key` (`MEMORY USAGE … SAMPLES 0`); 0 when it is absent.
async fn memory_usage(stack: &Stack, key: &str) -> u64 {
    let used: Option<u64> = redis::cmd("MEMORY")
        .arg("USAGE")
        .arg(key)
        .arg("SAMPLES")
        .arg(0)
        .query_async(&mut stack.redis().await)
        .await
        .expect("MEMORY USAGE");
    used.unwrap_or(0)
}

#[tokio::test]
async fn remembered_sends_stay_within_their_byte_budget_and_the_newest_still_answer() {
    let stack = Stack::start().await;
    let (alice, bob) = User::pair(&stack).await;
    let log = user_key(&stack, &alice.user_id, "sent");
    let times = user_key(&stack, &alice.user_id, "sent-times");
    let mut redis = stack.redis().await;
    let mut a = connect_ack(&stack, &alice.access).await;

    // Well past the budget, which keeps about 500 sends to a one-device recipient.
    let ids = names("budget-", 0..800);
    for id in &ids {
        let reply = reply_alone(&mut a, single(&bob.user_id, id, id.as_bytes())).await;
        assert_eq!(reply, sent(id, "queued"));
    }
    let held = memory_usage(&stack, &log).await + memory_usage(&stack, &times).await;
    assert!(
        held <= REMEMBERED_BUDGET,
        "Redis holds {held} bytes, budget {REMEMBERED_BUDGET}"
    );
    let counted: Option<u64> = redis.hget(&log, "bytes").await.expect("HGET bytes");
    assert!(
        counted.is_some_and(|c| held <= c && c <= REMEMBERED_BUDGET),
        "Redis holds {held} bytes, counted {counted:?}"
    );
    let kept: usize = redis.zcard(&times).await.expect("ZCARD");
    assert!((400..ids.len()).contains(&kept), "{kept} sends remembered");

    // The newest are remembered: answered as at first, nothing stored again. (Sends claimed in
    // one millisecond leave in any order, so only the boundary is blurred.)
    let stored = inbox_len(&stack, &bob.user_id).await;
    assert_eq!(stored, ids.len());
    for id in &ids[ids.len() - 300..] {
        let repeat = reply_alone(&mut a, single(&bob.user_id, id, id.as_bytes())).await;
        assert_eq!(repeat, sent(id, "queued"), "repeat of {id}");
    }
    assert_eq!(
        inbox_len(&stack, &bob.user_id).await,
        stored,
        "a repeat stored"
    );
    // The oldest are forgotten: their ids are free for other content.
    let reply = reply_alone(&mut a, single(&bob.user_id, &ids[0], b"other content")).await;
    assert_eq!(reply, sent(&ids[0], "queued"));
    assert_eq!(inbox_len(&stack, &bob.user_id).await, stored + 1);
}

/// A log written before its cost was counted (no `bytes` field, up to the 10,000 entries the
/// old cap allowed) is counted at the device's next send with an id and brought within budget.
#[tokio::test]
async fn a_log_from_before_the_budget_is_brought_within_it_at_the_next_send() {
    let stack = Stack::start().await;
    let (alice, bob) = User::pair(&stack).await;
    let log = user_key(&stack, &alice.user_id, "sent");
    let times = user_key(&stack, &alice.user_id, "sent-times");
    let mut redis = stack.redis().await;
    let answer = r#"{"delivery":"queued","devices":[{"device_id":1,"delivery":"queued"}]}"#;
    let entries: Vec<(String, String)> = (0..2_000)
        .map(|i| {
            let content = id_hash(&format!("content-{i}"));
            (id_hash(&format!("old-{i}")), format!("{content}|{answer}"))
        })
        .collect();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    let claimed: Vec<(u64, String)> = entries
        .iter()
        .enumerate()
        .map(|(i, (field, _))| (now_ms - 60_000 + i as u64, field.clone()))
        .collect();
    let () = redis.hset_multiple(&log, &entries).await.expect("HSET");
    let () = redis.zadd_multiple(&times, &claimed).await.expect("ZADD");
    assert!(memory_usage(&stack, &log).await > REMEMBERED_BUDGET);

    let mut a = connect_ack(&stack, &alice.access).await;
    let reply = reply_alone(&mut a, single(&bob.user_id, "after", b"after")).await;
    assert_eq!(reply, sent("after", "queued"));
    let held = memory_usage(&stack, &log).await + memory_usage(&stack, &times).await;
    assert!(held <= REMEMBERED_BUDGET, "Redis holds {held} bytes");
    let counted: Option<u64> = redis.hget(&log, "bytes").await.expect("HGET bytes");
    assert!(
        counted.is_some_and(|c| held <= c && c <= REMEMBERED_BUDGET),
        "Redis holds {held} bytes, counted {counted:?}"
    );
    for (id, kept) in [("after", true), ("old-1999", true), ("old-0", false)] {
        let there: bool = redis.hexists(&log, id_hash(id)).await.expect("HEXISTS");
        assert_eq!(there, kept, "{id}");
    }
}

// ---------------------------------------------------------------------------------------------
// Connections the relay closes itself hand back what they held at once
// ---------------------------------------------------------------------------------------------

/// An ack-mode connection closed by the relay (evicted past the per-device cap, or its session
/// logged out) gets no `$disconnect` release of its own: the relay releases for it, so the next
/// connection fetches what it held without waiting for the lease.
#[tokio::test]
async fn evicted_and_logged_out_ack_connections_hand_back_what_they_held() {
    let stack = Stack::with_env(&[("MAX_CONNECTIONS_PER_USER", "1")]).await;
    let (alice, bob) = User::pair(&stack).await;
    let mut a = alice.connect(&stack).await;

    let mut first = connect_ack(&stack, &bob.access).await;
    assert!(first.fetch_all().await.is_empty());
    a.send_message(&bob.user_id, "e1", b"held-by-evicted").await;
    let held = receive_pushed(&mut first, 1).await;
    // A second connection evicts the first, which never acknowledged.
    let mut second = connect_ack(&stack, &bob.access).await;
    let again = second.fetch_all().await;
    assert_eq!(
        envelope_ids(&again),
        envelope_ids(&held),
        "within the lease"
    );
    assert_eq!(acked(&mut second, "a1", &envelope_ids(&again)).await, 1);

    a.send_message(&bob.user_id, "e2", b"held-by-logged-out")
        .await;
    let held = receive_pushed(&mut second, 1).await;
    let (access, _) = bob.log_in(&stack).await;
    assert_eq!(
        relay_tests::client::delete_auth(&stack, "/v1/sessions/current", &bob.access).await,
        204
    );
    let mut third = connect_ack(&stack, &access).await;
    let again = third.fetch_all().await;
    assert_eq!(
        envelope_ids(&again),
        envelope_ids(&held),
        "within the lease"
    );
}

/// A send that stored nothing (every device `dropped`) is not remembered: its id may be sent
/// again and this time be delivered.
#[tokio::test]
async fn a_dropped_send_is_not_remembered() {
    let stack = Stack::start().await;
    let (alice, bob) = User::pair(&stack).await;
    let mut a = connect_ack(&stack, &alice.access).await;
    let mut typing = single(&bob.user_id, "t-1", b"typing");
    typing["online_only"] = json!(true);
    assert_eq!(
        reply_alone(&mut a, typing.clone()).await,
        sent("t-1", "dropped")
    );
    let mut b = bob.connect(&stack).await;
    assert!(b.fetch_all().await.is_empty());
    assert_eq!(reply_alone(&mut a, typing).await, sent("t-1", "delivered"));
    assert_eq!(receive_pushed(&mut b, 1).await.len(), 1);
}

/// An `ack` that acknowledges nothing is a frame like any other (`RATE_LIMIT_FRAMES`), refused
/// once the budget is spent; one that deletes envelopes costs nothing, so a receiver can always
/// acknowledge what it was sent.
#[tokio::test]
async fn useless_acks_are_rate_limited_and_useful_acks_are_given_their_token_back() {
    let stack = Stack::with_env(&[("RATE_LIMIT_FRAMES", "3/3600")]).await;
    let (alice, bob) = User::pair(&stack).await;
    let mut a = alice.connect(&stack).await;
    let mut b = connect_ack(&stack, &bob.access).await;
    send_texts(&mut a, &bob.user_id, "m-", 0..2, "delivered").await;
    let ids = envelope_ids(&receive_pushed(&mut b, 2).await);
    assert_eq!(acked(&mut b, "useful", &ids[..1]).await, 1, "costs nothing");
    let unknown = [uuid::Uuid::new_v4().to_string()];
    for n in 1..=3 {
        assert_eq!(
            acked(&mut b, "useless", &unknown).await,
            0,
            "frame {n} of 3"
        );
    }
    let reply = reply_alone(&mut b, ack_frame(Some("fourth"), &unknown)).await;
    assert_error(&reply, "fourth", "rate_limited");
    let reply = reply_alone(&mut b, json!({"action": "ping", "id": "p"})).await;
    assert_error(&reply, "p", "rate_limited");
    // The token is taken before anything else: with the budget spent even a useful ack is
    // refused, and what it named stays in flight, delivered again after the connection.
    let reply = reply_alone(&mut b, ack_frame(Some("useful-2"), &ids[1..])).await;
    assert_error(&reply, "useful-2", "rate_limited");
    drop(b);
    wait_inbox_len(&stack, &bob.user_id, 1).await;
    let waiting: Vec<String> = stack
        .redis()
        .await
        .lrange(stack.inbox_key(&bob.user_id), 0, -1)
        .await
        .expect("LRANGE");
    assert!(
        waiting[0].contains(&ids[1]),
        "the unacknowledged one waits: {waiting:?}"
    );
}

/// A quiet `ack` (`"quiet": true`): the envelopes are deleted and nothing is answered; the
/// frame's errors still are.
fn quiet_ack(id: &str, ids: &[String]) -> Value {
    json!({"action": "ack", "id": id, "ids": ids, "quiet": true})
}

#[tokio::test]
async fn a_quiet_ack_deletes_without_a_reply_and_its_errors_are_still_answered() {
    let stack = Stack::with_env(&[("RATE_LIMIT_FRAMES", "3/3600")]).await;
    let (alice, bob) = User::pair(&stack).await;
    let mut a = alice.connect(&stack).await;
    let mut b = connect_ack(&stack, &bob.access).await;
    send_texts(&mut a, &bob.user_id, "q", 0..3, "delivered").await;
    let ids = envelope_ids(&receive_pushed(&mut b, 3).await);

    // Two acknowledged quietly: the next reply is the ping's (frames are answered in order).
    b.send(quiet_ack("q-1", &ids[..2])).await;
    let reply = reply_alone(&mut b, json!({"action": "ping", "id": "p-1"})).await;
    assert_eq!(reply["type"], "pong", "a quiet ack answered: {reply}");
    // `quiet: false` is the usual ack, answered.
    let loud = json!({"action": "ack", "id": "loud", "ids": ids[..1], "quiet": false});
    assert_eq!(
        reply_alone(&mut b, loud).await,
        json!({"type": "acked", "id": "loud", "acked": 0}),
        "already deleted by the quiet ack"
    );
    // Errors of a quiet ack are answered: a malformed one, a mistyped `quiet`, rate limited.
    let reply = reply_alone(&mut b, quiet_ack("empty", &[])).await;
    assert_error(&reply, "empty", "invalid_frame");
    let mistyped = json!({"action": "ack", "id": "typed", "ids": ids, "quiet": "yes"});
    let reply = reply_alone(&mut b, mistyped).await;
    assert_eq!(reply["code"], "invalid_frame", "{reply}");
    assert_eq!(reply["id"], Value::Null, "{reply}");
    // Useless acks pay the frame limit (3: the ping, the loud ack, this one), quiet or not.
    let unknown = [uuid::Uuid::new_v4().to_string()];
    b.send(quiet_ack("useless-1", &unknown)).await;
    let reply = reply_alone(&mut b, quiet_ack("useless-2", &unknown)).await;
    assert_error(&reply, "useless-2", "rate_limited");

    // The socket drops: only the envelope never acknowledged goes back to the inbox (a fetch
    // would be a frame over the spent budget: Redis is read instead).
    drop(b);
    wait_inbox_len(&stack, &bob.user_id, 1).await;
    let inbox: Vec<String> = stack
        .redis()
        .await
        .lrange(stack.inbox_key(&bob.user_id), 0, -1)
        .await
        .expect("LRANGE");
    assert!(inbox[0].contains(&ids[2]), "not the third: {inbox:?}");
}

/// Redis' own time per script call since the last `CONFIG RESETSTAT` (INFO commandstats,
/// EVALSHA and EVAL together): what the calls cost the server, whatever the machine's load.
async fn script_usec_per_call(redis: &mut shared::storage::redis::RedisConnection) -> f64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(redis)
        .await
        .expect("INFO");
    let (mut calls, mut usec) = (0.0, 0.0);
    for line in info.lines() {
        let Some(stats) = line
            .strip_prefix("cmdstat_evalsha:")
            .or_else(|| line.strip_prefix("cmdstat_eval:"))
        else {
            continue;
        };
        for field in stats.split(',') {
            match field.split_once('=') {
                Some(("calls", v)) => calls += v.parse::<f64>().unwrap(),
                Some(("usec", v)) => usec += v.parse::<f64>().unwrap(),
                _ => {}
            }
        }
    }
    assert!(calls > 0.0, "no script ran: {info}");
    usec / calls
}

/// An `ack` costs Redis the same whatever its device holds in flight. The attack: an account
/// parks ~8 MB in its own in-flight envelopes (sent by a second account of its own, written to
/// an ack-mode connection, never acknowledged), then floods `ack` frames of ids that were never
/// delivered, at the default frame limit, while another user pings. When acks looked for their
/// ids through the envelopes in flight, each such frame copied the 8 MB into the script
/// (milliseconds of Redis time each, stalling every other user); by id it is a few lookups.
/// Measured in Redis' own time per call, on a redis-server of the test's own, against the same
/// flood with nothing in flight.
#[tokio::test]
async fn useless_acks_cost_redis_the_same_whatever_is_in_flight() {
    let (port, _redis) = relay_tests::servers::start_redis();
    let url = format!("redis://127.0.0.1:{port}");
    let stack = Stack::with_env(&[("REDIS_URL", &url), ("RATE_LIMIT_FRAMES", "300/1")]).await;
    let (attacker, feeder) = User::pair(&stack).await;
    let bystander = User::builder(&stack).create().await;
    let mut a = connect_ack(&stack, &attacker.access).await;
    assert!(a.fetch_all().await.is_empty());
    let mut b = bystander.connect(&stack).await;
    let mut redis = stack.redis().await;
    let never: Vec<String> = (0..100).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    assert_eq!(acked(&mut a, "warm", &never).await, 0);

    // 200 useless acks of 100 ids each while the bystander pings 50 times; Redis' time per
    // script call over that.
    let mut flood_while_pinging = async |a: &mut Ws, b: &mut Ws| {
        let _: () = redis::cmd("CONFIG")
            .arg("RESETSTAT")
            .query_async(&mut redis)
            .await
            .expect("RESETSTAT");
        let flood = async {
            for n in 0..200 {
                let reply = ack(a, Some(&format!("u{n}")), &never).await;
                assert!(
                    reply["type"] == "acked" || reply["code"] == "rate_limited",
                    "{reply}"
                );
            }
        };
        let pings = async {
            for n in 0..50 {
                b.send(json!({"action": "ping", "id": format!("p{n}")}))
                    .await;
                let reply = b.recv().await;
                assert_eq!(reply["type"], "pong", "{reply}");
            }
        };
        futures::join!(flood, pings);
        script_usec_per_call(&mut redis).await
    };
    let at_rest = flood_while_pinging(&mut a, &mut b).await;

    let mut f = feeder.connect(&stack).await;
    let mut parked = 0;
    for i in 0..100 {
        let reply = f
            .send_message(&attacker.user_id, &format!("p{i}"), &[5u8; 64 * 1024])
            .await;
        if reply["delivery"] == "delivered" {
            parked += 1;
            receive_pushed(&mut a, 1).await;
        }
    }
    let mut check = stack.redis().await;
    let in_flight: usize = check
        .zcard(user_key(&stack, &attacker.user_id, "in-flight"))
        .await
        .expect("ZCARD");
    assert_eq!(in_flight, parked);
    let bytes: u64 = check
        .hget(
            user_key(&stack, &attacker.user_id, "in-flight-envelopes"),
            "#b",
        )
        .await
        .expect("HGET");
    assert!(bytes > 7_000_000, "{bytes} bytes in flight");
    assert!(
        bytes <= stack.config.inbox.max_bytes,
        "in flight stays under INBOX_MAX_BYTES: {bytes}"
    );

    let loaded = flood_while_pinging(&mut a, &mut b).await;
    eprintln!("Redis time per script call: {at_rest:.1} µs at rest, {loaded:.1} µs with {bytes} bytes in flight");
    assert!(
        loaded < 3.0 * at_rest + 50.0,
        "{loaded:.0} µs per script call with {bytes} bytes in flight, {at_rest:.0} µs with none"
    );
}
