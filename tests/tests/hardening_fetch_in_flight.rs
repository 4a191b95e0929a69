//! Issue 12, finding 13: a fetch that dies mid-write loses nothing, and a fetch ends at its
//! deadline. Over a real WebSocket against the local gateway and a real Redis (a cluster too:
//! `RELAY_TEST_REDIS=cluster`).

use std::time::Duration;

use relay_tests::inbox::deliver_one;
use relay_tests::{Stack, User, Ws};
use serde_json::{json, Value};
use shared::frames::Envelope;
use shared::storage::{
    ConnectionRegistry, Delivery, Inbox, Registration, StoredEnvelope, POP_BATCH,
};
use uuid::Uuid;

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
