//! Issue 12, findings 3 and 4: one account can neither fill Redis nor wipe another's inbox.
//! Over real WebSockets against the local gateway and a real Redis (a cluster too:
//! `RELAY_TEST_REDIS=cluster`).

use std::collections::HashMap;
use std::ops::Range;

use redis::AsyncCommands;
use relay_tests::{Stack, User, Ws};
use serde_json::Value;

const KIB: usize = 1024;

/// The stored bytes of `user_id`'s inbox, counted from the list itself, and as the relay's
/// accounting beside it has them.
async fn inbox_bytes(stack: &Stack, user_id: &str) -> (u64, u64) {
    let mut redis = stack.redis().await;
    let stored: Vec<Vec<u8>> = redis
        .lrange(stack.inbox_key(user_id), 0, -1)
        .await
        .expect("LRANGE");
    let accounting = stack
        .redis_keys()
        .inbox_accounting(uuid::Uuid::parse_str(user_id).unwrap());
    let accounted: Option<u64> = redis.hget(accounting, "b").await.expect("HGET");
    (
        stored.iter().map(|e| e.len() as u64).sum(),
        accounted.unwrap_or(0),
    )
}

fn delivery(reply: &Value) -> &str {
    assert_eq!(reply["type"], "sent", "not a send reply: {reply}");
    reply["delivery"].as_str().expect("delivery")
}

/// Sends `body` to `to` once for each id `{prefix}{i}`, `i` in `ids`, and asserts every one
/// queued.
async fn send_all_queued(ws: &mut Ws, to: &str, prefix: &str, ids: Range<usize>, body: &[u8]) {
    for i in ids {
        let reply = ws.send_message(to, &format!("{prefix}{i}"), body).await;
        assert_eq!(delivery(&reply), "queued", "{reply}");
    }
}

/// How many of `envelopes` each sender sent.
fn by_sender(envelopes: &[Value]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for e in envelopes {
        *counts
            .entry(e["from"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    counts
}

#[tokio::test]
async fn a_flooder_fills_only_its_share_and_is_told_dropped() {
    let stack = Stack::with_env(&[("INBOX_MAX", "20")]).await;
    let (victim, friend) = User::pair(&stack).await;
    let flooder = User::create(&stack, 1, 0).await;
    let mut f = friend.connect(&stack).await;
    send_all_queued(&mut f, &victim.user_id, "f", 0..3, b"hi").await;

    let mut m = flooder.connect(&stack).await;
    let mut told = HashMap::<String, usize>::new();
    for i in 0..60 {
        let body = format!("spam {i}");
        let reply = m
            .send_message(&victim.user_id, &format!("m{i}"), body.as_bytes())
            .await;
        *told.entry(delivery(&reply).to_string()).or_default() += 1;
    }
    assert_eq!(
        told,
        HashMap::from([("queued".into(), 17), ("dropped".into(), 43)]),
        "the flooder fills the free room, then is refused, honestly"
    );

    // A sender with a small share still gets in: the flooder's oldest makes room.
    let reply = f.send_message(&victim.user_id, "f3", b"still here?").await;
    assert_eq!(delivery(&reply), "queued");

    let mut v = victim.connect(&stack).await;
    let got = v.fetch_all().await;
    assert_eq!(got.len(), 20, "the inbox holds INBOX_MAX envelopes");
    let counts = by_sender(&got);
    assert_eq!(
        counts[&friend.user_id], 4,
        "the friend's mail survived the flood"
    );
    assert_eq!(counts[&flooder.user_id], 16);
    let first = got
        .iter()
        .find(|e| e["from"] == flooder.user_id.as_str())
        .unwrap();
    assert_eq!(
        shared::validation::base64("body", first["body"].as_str().unwrap()).unwrap(),
        b"spam 1",
        "the flooder's own oldest envelope made room"
    );
    assert_eq!(inbox_bytes(&stack, &victim.user_id).await, (0, 0));
}

#[tokio::test]
async fn concurrent_floods_of_large_messages_stay_under_the_inbox_byte_cap() {
    let cap: u64 = 400_000;
    let stack = Stack::with_env(&[("INBOX_MAX_BYTES", &cap.to_string())]).await;
    let (victim, friend) = User::pair(&stack).await;
    let mut f = friend.connect(&stack).await;
    let reply = f
        .send_message(&victim.user_id, "before", &vec![7u8; 60 * KIB])
        .await;
    assert_eq!(delivery(&reply), "queued");

    // Three flooders, each on its own connection, sending at once.
    let mut flooders = Vec::new();
    for _ in 0..3 {
        let user = User::create(&stack, 1, 0).await;
        let ws = user.connect(&stack).await;
        flooders.push((user, ws));
    }
    let to = victim.user_id.clone();
    let runs = flooders.iter_mut().map(|(_, ws)| {
        let to = to.clone();
        async move {
            let mut queued = 0;
            for i in 0..8 {
                let reply = ws
                    .send_message(&to, &format!("m{i}"), &[1u8; 64 * KIB])
                    .await;
                if delivery(&reply) == "queued" {
                    queued += 1;
                }
            }
            queued
        }
    });
    let queued: usize = futures::future::join_all(runs).await.into_iter().sum();
    let (stored, accounted) = inbox_bytes(&stack, &victim.user_id).await;
    assert!(stored <= cap, "{stored} bytes stored, cap {cap}");
    assert_eq!(stored, accounted, "the accounting matches the list");
    // Three fit; a flooder holding nothing yet may then push out one holding more, until
    // each holds an equal share and every one of them is refused.
    assert!(
        (3..=5).contains(&queued),
        "{queued} of 24 maximum-size messages stored in a {cap}-byte inbox"
    );

    // The friend's later large message still gets in, at the flooders' expense.
    let reply = f
        .send_message(&victim.user_id, "after", &vec![8u8; 60 * KIB])
        .await;
    assert_eq!(delivery(&reply), "queued");
    let (stored, accounted) = inbox_bytes(&stack, &victim.user_id).await;
    assert!(stored <= cap, "{stored} bytes stored, cap {cap}");
    assert_eq!(stored, accounted);

    let mut v = victim.connect(&stack).await;
    let got = v.fetch_all().await;
    assert_eq!(
        by_sender(&got)[&friend.user_id],
        2,
        "both of the friend's kept"
    );
}

#[tokio::test]
async fn the_byte_quota_limits_what_one_sender_writes() {
    let stack = Stack::with_env(&[("RATE_LIMIT_MESSAGE_BYTES", "200000/3600")]).await;
    let (sender, a) = User::pair(&stack).await;
    let b = User::create(&stack, 1, 0).await;
    let mut ws = sender.connect(&stack).await;
    for (i, to) in [&a, &b, &a].iter().enumerate() {
        let reply = ws
            .send_message(&to.user_id, &format!("m{i}"), &[0u8; 64 * KIB])
            .await;
        assert_eq!(delivery(&reply), "queued", "{reply}");
    }
    // 196,608 bytes taken: the quota is per sender, whoever the recipients.
    let reply = ws.send_message(&b.user_id, "m3", &[0u8; 8 * KIB]).await;
    assert_eq!(reply["type"], "error", "{reply}");
    assert_eq!(reply["code"], "rate_limited");
    // A small body still fits in what is left.
    let reply = ws.send_message(&b.user_id, "m4", b"ok").await;
    assert_eq!(delivery(&reply), "queued", "{reply}");
}

#[tokio::test]
async fn the_pair_limit_is_per_recipient_and_a_refusal_costs_nothing() {
    let stack = Stack::with_env(&[
        ("RATE_LIMIT_MESSAGE_PAIR", "5/3600"),
        ("RATE_LIMIT_MESSAGES", "6/3600"),
    ])
    .await;
    let (sender, victim) = User::pair(&stack).await;
    let other = User::create(&stack, 1, 0).await;
    let mut ws = sender.connect(&stack).await;
    send_all_queued(&mut ws, &victim.user_id, "m", 0..5, b"x").await;
    for i in 5..8 {
        let reply = ws
            .send_message(&victim.user_id, &format!("m{i}"), b"x")
            .await;
        assert_eq!(reply["code"], "rate_limited", "{reply}");
    }
    // The refused sends took nothing from the sender's `messages` bucket: its sixth token is
    // still there, for another recipient.
    let reply = ws.send_message(&other.user_id, "o", b"x").await;
    assert_eq!(
        delivery(&reply),
        "queued",
        "another recipient is not limited"
    );
    let reply = ws.send_message(&other.user_id, "o2", b"x").await;
    assert_eq!(reply["code"], "rate_limited", "{reply}");
}

#[tokio::test]
async fn fetching_and_listing_keep_the_accounting_exact() {
    let stack = Stack::with_env(&[("INBOX_MAX", "10")]).await;
    let (victim, friend) = User::pair(&stack).await;
    let flooder = User::create(&stack, 1, 0).await;
    let mut f = friend.connect(&stack).await;
    let mut m = flooder.connect(&stack).await;
    for i in 0..8 {
        m.send_message(&victim.user_id, &format!("m{i}"), &[i as u8; 300])
            .await;
    }
    f.send_message(&victim.user_id, "f", b"hello").await;
    let (stored, accounted) = inbox_bytes(&stack, &victim.user_id).await;
    assert!(stored > 0);
    assert_eq!(stored, accounted);
    // `list` drops nothing unexpired and keeps the numbers.
    let mut v: Ws = victim.connect(&stack).await;
    v.send(serde_json::json!({"action": "list"})).await;
    assert_eq!(v.recv().await["pending"], 9);
    assert_eq!(inbox_bytes(&stack, &victim.user_id).await, (stored, stored));
    let got = v.fetch_all().await;
    assert_eq!(got.len(), 9);
    assert_eq!(inbox_bytes(&stack, &victim.user_id).await, (0, 0));
    let accounting = stack
        .redis_keys()
        .inbox_accounting(uuid::Uuid::parse_str(&victim.user_id).unwrap());
    let left: bool = stack
        .redis()
        .await
        .exists(accounting)
        .await
        .expect("EXISTS");
    assert!(!left, "an empty inbox leaves no accounting behind");
}

#[tokio::test]
async fn the_relays_redis_does_not_evict() {
    let stack = Stack::start().await;
    if stack.config.redis_cluster {
        // The cluster's nodes start from the same `process::redis_server`; CONFIG is per node.
        return;
    }
    let policy: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory-policy")
        .query_async(&mut stack.redis().await)
        .await
        .expect("CONFIG GET");
    assert_eq!(policy, ["maxmemory-policy", "noeviction"]);
}
