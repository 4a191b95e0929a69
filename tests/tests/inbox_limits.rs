//! One account can neither fill Redis nor wipe another's inbox, and a full inbox keeps the
//! newest envelopes, made room for at the expense of the largest holder (docs/api.md §6.6).
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

/// The stored bodies of `envelopes`, as text.
fn bodies(envelopes: &[Value]) -> Vec<String> {
    envelopes
        .iter()
        .map(|e| {
            let raw = shared::validation::base64("body", e["body"].as_str().unwrap()).unwrap();
            String::from_utf8(raw).unwrap()
        })
        .collect()
}

/// The holders list beside `user_id`'s inbox keeps step with it, entry for entry.
async fn assert_holders_in_step(stack: &Stack, user_id: &str) {
    let mut redis = stack.redis().await;
    let user = uuid::Uuid::parse_str(user_id).unwrap();
    let holders: usize = redis
        .llen(stack.redis_keys().inbox_holders(user))
        .await
        .expect("LLEN");
    let stored: usize = redis.llen(stack.inbox_key(user_id)).await.expect("LLEN");
    assert_eq!(holders, stored, "one holder per stored envelope");
}

#[tokio::test]
async fn a_flooder_makes_room_from_its_own_oldest_never_from_a_smaller_holder() {
    let stack = Stack::with_env(&[("INBOX_MAX", "20")]).await;
    let (victim, friend) = User::pair(&stack).await;
    let flooder = User::builder(&stack).create().await;
    let mut f = friend.connect(&stack).await;
    send_all_queued(&mut f, &victim.user_id, "f", 0..3, b"hi").await;

    let mut m = flooder.connect(&stack).await;
    for i in 0..60 {
        let body = format!("spam {i}");
        let reply = m
            .send_message(&victim.user_id, &format!("m{i}"), body.as_bytes())
            .await;
        assert_eq!(
            delivery(&reply),
            "queued",
            "stored, at its own expense: {reply}"
        );
    }

    // A sender with a small share still gets in: the largest holder's oldest makes room.
    let reply = f.send_message(&victim.user_id, "f3", b"still here?").await;
    assert_eq!(delivery(&reply), "queued");
    assert_holders_in_step(&stack, &victim.user_id).await;

    let mut v = victim.connect(&stack).await;
    let got = v.fetch_all().await;
    assert_eq!(got.len(), 20, "the inbox holds INBOX_MAX envelopes");
    let counts = by_sender(&got);
    assert_eq!(
        counts[&friend.user_id], 4,
        "the friend's mail survived the flood"
    );
    assert_eq!(counts[&flooder.user_id], 16);
    let flooded: Vec<Value> = got
        .iter()
        .filter(|e| e["from"] == flooder.user_id.as_str())
        .cloned()
        .collect();
    let newest: Vec<String> = (44..60).map(|i| format!("spam {i}")).collect();
    assert_eq!(
        bodies(&flooded),
        newest,
        "the flooder's newest sixteen, in order"
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
        let user = User::builder(&stack).create().await;
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
    assert_holders_in_step(&stack, &victim.user_id).await;
    // Each was stored when it came, at the expense of the largest holder's oldest (the
    // flooders': the friend's smaller envelope is never the largest share).
    assert_eq!(queued, 24, "every send was stored when it came");

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

/// Logs `user` in again (after the clock moved past its access token's lifetime).
async fn log_in_again(stack: &Stack, user: &mut User) {
    user.access = user.log_in(stack).await.0;
}

#[tokio::test]
async fn throwaway_accounts_cannot_evict_a_contacts_queued_messages() {
    let age = 86_400;
    let stack = Stack::with_env(&[("NEW_ACCOUNT_AGE_SECS", &age.to_string())]).await;
    let (mut victim, mut contact) = User::pair(&stack).await;
    stack.advance(std::time::Duration::from_secs(age + 1));
    log_in_again(&stack, &mut victim).await;
    log_in_again(&stack, &mut contact).await;
    let mut c = contact.connect(&stack).await;
    send_all_queued(&mut c, &victim.user_id, "c", 0..10, &[3u8; 64 * KIB]).await;

    // 86 fresh accounts send two maximum-size messages each, a few at a time.
    let throwaways =
        futures::future::join_all((0..86).map(|_| User::builder(&stack).create())).await;
    let mut told = HashMap::<String, usize>::new();
    for chunk in throwaways.chunks(8) {
        let runs = chunk.iter().map(|t| {
            let to = victim.user_id.clone();
            let stack = &stack;
            async move {
                let mut ws = t.connect(stack).await;
                let mut answers = Vec::new();
                for i in 0..2 {
                    let reply = ws
                        .send_message(&to, &format!("t{i}"), &[9u8; 64 * KIB])
                        .await;
                    answers.push(delivery(&reply).to_string());
                }
                answers
            }
        });
        for answers in futures::future::join_all(runs).await {
            for a in answers {
                *told.entry(a).or_default() += 1;
            }
        }
    }
    let queued = told.get("queued").copied().unwrap_or(0);
    assert!(
        queued > 0,
        "a first contact from a new account still gets in: {told:?}"
    );
    assert!(told.get("dropped").copied().unwrap_or(0) > 0, "{told:?}");

    // New accounts together hold at most their part (a quarter of each cap).
    let (_, part_bytes) = stack.config.inbox.new_accounts_part();
    let accounting = stack
        .redis_keys()
        .inbox_accounting(uuid::Uuid::parse_str(&victim.user_id).unwrap());
    let held: Option<u64> = stack
        .redis()
        .await
        .hget(&accounting, "b:~")
        .await
        .expect("HGET");
    assert!(held.unwrap_or(0) <= part_bytes, "{held:?} > {part_bytes}");
    assert_holders_in_step(&stack, &victim.user_id).await;
    let (stored, accounted) = inbox_bytes(&stack, &victim.user_id).await;
    assert_eq!(stored, accounted);

    let mut v = victim.connect(&stack).await;
    let got = v.fetch_all().await;
    let from_contact: Vec<&Value> = got
        .iter()
        .filter(|e| e["from"] == contact.user_id.as_str())
        .collect();
    assert_eq!(
        from_contact.len(),
        10,
        "every message of the contact is kept"
    );
    assert!(
        got.len() - 10 <= queued,
        "{} from new accounts",
        got.len() - 10
    );
}

#[tokio::test]
async fn the_byte_quota_limits_what_one_sender_writes() {
    let stack = Stack::with_env(&[("RATE_LIMIT_MESSAGE_BYTES", "200000/3600")]).await;
    let (sender, a) = User::pair(&stack).await;
    let b = User::builder(&stack).create().await;
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
    let other = User::builder(&stack).create().await;
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
    let flooder = User::builder(&stack).create().await;
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
