//! Group sends over the WebSocket: one frame fanned out to every member device (the sender's
//! other devices included, never the sending one), the roster and device-map checks, the
//! envelope stored once with a small entry per device, ack mode and fetch, idempotent repeats,
//! `online_only`, and sends racing a removal (`DELETE …/members/{user_id}` over HTTP).

use std::collections::BTreeSet;
use std::sync::Arc;

use redis::AsyncCommands;
use relay_tests::acks::{ack_frame, connect_ack, reply_alone};
use relay_tests::client::delete_auth;
use relay_tests::devices::{address, body_of, entries, link, pending, Device};
use relay_tests::groups::group_over_http;
use relay_tests::{Stack, User, Ws};
use serde_json::{json, Value};
use shared::groups::Group;
use shared::storage::dynamodb::{Dynamo, Tables};
use shared::storage::GroupStore;
use shared::validation::encode;
use uuid::Uuid;

/// The stack's group store, as the groups function and the relay use it.
fn store(stack: &Stack) -> Dynamo {
    Dynamo::new(
        stack.dynamodb.clone(),
        Tables::with_prefix(&stack.config.table_prefix),
    )
}

/// A new group over HTTP: the first of `members` creates it, the others join, `invited` stay
/// invited; the group as stored.
async fn group_of(stack: &Stack, members: &[&User], invited: &[&User]) -> Group {
    let id = group_over_http(stack, members, invited).await;
    store(stack).get(id).await.unwrap().expect("the group")
}

/// `DELETE /v1/groups/{group}/members/{user}` by `admin`.
async fn remove(stack: &Stack, admin: &User, group: &Group, user: &User) {
    let path = format!("/v1/groups/{}/members/{}", group.id, user.user_id);
    assert_eq!(delete_auth(stack, &path, &admin.access).await, 200);
}

/// A group `send` frame addressed to `devices`.
fn group_frame(group: &Group, id: &str, body: &[u8], devices: &[&Device]) -> Value {
    let mut map = serde_json::Map::new();
    for d in devices {
        map.entry(d.user_id.clone())
            .or_insert_with(|| json!([]))
            .as_array_mut()
            .unwrap()
            .push(json!({"device_id": d.device_id, "registration_id": d.registration_id}));
    }
    json!({"action": "send", "id": id, "group_id": group.id, "body": encode(body), "devices": map})
}

/// Sends a group frame and returns its reply; nothing is pushed to the sending device.
async fn send_group(ws: &mut Ws, frame: Value) -> Value {
    reply_alone(ws, frame).await
}

fn counts(reply: &Value) -> (u64, u64, u64) {
    assert_eq!(reply["type"], "sent", "{reply}");
    let n = |k: &str| reply[k].as_u64().unwrap_or_else(|| panic!("{k}: {reply}"));
    (n("delivered"), n("queued"), n("dropped"))
}

/// The ids of the users named in an error frame's `users`, with their lists.
fn users(reply: &Value) -> Vec<(String, Value)> {
    reply["users"]
        .as_array()
        .unwrap_or_else(|| panic!("no users: {reply}"))
        .iter()
        .map(|u| {
            let mut lists = u.clone();
            lists.as_object_mut().unwrap().remove("user_id");
            (u["user_id"].as_str().unwrap().to_string(), lists)
        })
        .collect()
}

#[tokio::test]
async fn one_send_reaches_every_member_device_once_stored() {
    let stack = Stack::start().await;
    let (alice, bob) = User::pair(&stack).await;
    let carol = User::builder(&stack).create().await;
    let group = group_of(&stack, &[&alice, &bob], &[&carol]).await;
    let a1 = Device::primary(&alice);
    let a2 = link(&stack, &alice, 4242).await;
    let b1 = Device::primary(&bob);
    let mut bob_ws = b1.connect(&stack).await;
    let mut sender = a1.connect(&stack).await;

    let body = b"one ciphertext for everyone";
    let reply = send_group(&mut sender, group_frame(&group, "g1", body, &[&a2, &b1])).await;
    assert_eq!(reply["id"], "g1");
    assert_eq!(reply["group_id"], group.id.to_string());
    assert_eq!(reply["devices"], json!([]));
    assert_eq!(
        counts(&reply),
        (1, 1, 0),
        "bob online, alice's other device not"
    );
    assert_eq!(reply["delivery"], "queued");

    let pushed = bob_ws.recv().await;
    assert_eq!(pushed["type"], "messages", "{pushed}");
    let envelope = pushed["messages"][0].clone();
    assert_eq!(envelope["group_id"], group.id.to_string());
    assert_eq!(envelope["from"], alice.user_id.as_str());
    assert_eq!(envelope["source_device"], 1);
    assert_eq!(body_of(&envelope), body);

    // Stored once: the envelope under its id, and a pointer of at most 100 bytes in the inbox.
    let id = Uuid::parse_str(envelope["id"].as_str().unwrap()).unwrap();
    let stored: Option<String> = stack
        .redis()
        .await
        .get(stack.redis_keys().shared(id))
        .await
        .unwrap();
    let stored: Value = serde_json::from_str(&stored.expect("the shared envelope")).unwrap();
    assert_eq!(stored, envelope);
    let waiting = entries(&stack, &a2).await;
    assert_eq!(waiting.len(), 1);
    assert!(
        waiting[0].len() <= 100,
        "{} bytes: {}",
        waiting[0].len(),
        waiting[0]
    );
    assert!(waiting[0].contains(&id.to_string()));

    // The sender's other device fetches the same envelope; the sending device and the invitee
    // get nothing.
    let mut a2_ws = a2.connect(&stack).await;
    let fetched = a2_ws.fetch_all().await;
    assert_eq!(fetched, vec![envelope]);
    assert!(sender.frames_before_pong().await.is_empty());
    let mut carol_ws = carol.connect(&stack).await;
    assert!(carol_ws.fetch_all().await.is_empty());
    assert!(
        bob_ws.fetch_all().await.is_empty(),
        "pushed, not left queued"
    );

    // A group where the sender has no other member device: accepted, nothing to count.
    let alone = group_of(&stack, &[&carol], &[&bob]).await;
    let reply = send_group(&mut carol_ws, group_frame(&alone, "g2", b"x", &[])).await;
    assert_eq!(counts(&reply), (0, 0, 0));
    assert_eq!(reply["delivery"], "delivered");
}

#[tokio::test]
async fn only_joined_members_send() {
    let stack = Stack::start().await;
    let (alice, bob) = User::pair(&stack).await;
    let carol = User::builder(&stack).create().await;
    let dave = User::builder(&stack).create().await;
    let group = group_of(&stack, &[&alice, &bob], &[&carol]).await;
    let to = [&Device::primary(&alice), &Device::primary(&bob)];
    for user in [&carol, &dave] {
        let mut ws = user.connect(&stack).await;
        let reply = send_group(&mut ws, group_frame(&group, "n", b"x", &to)).await;
        assert_eq!(reply["type"], "error", "{reply}");
        assert_eq!(reply["code"], "not_a_member", "{reply}");
        assert_eq!(reply["id"], "n");
    }
    let mut ws = alice.connect(&stack).await;
    let mut unknown = group.clone();
    unknown.id = Uuid::new_v4();
    let reply = send_group(&mut ws, group_frame(&unknown, "u", b"x", &to[1..])).await;
    assert_eq!(reply["code"], "not_a_member", "{reply}");
    let reply = send_group(
        &mut ws,
        json!({"action": "send", "id": "m", "group_id": group.id, "to": bob.user_id, "body": "", "devices": {}}),
    )
    .await;
    assert_eq!(reply["code"], "invalid_frame", "{reply}");
    assert!(!stack.has_inbox(&bob.user_id).await);
}

#[tokio::test]
async fn device_maps_that_differ_are_answered_in_one_list_with_nothing_stored() {
    let stack = Stack::start().await;
    let (alice, bob) = User::pair(&stack).await;
    let carol = User::builder(&stack).create().await;
    let dave = User::builder(&stack).create().await;
    let group = group_of(&stack, &[&alice, &bob, &carol], &[&dave]).await;
    let a1 = Device::primary(&alice);
    let a2 = link(&stack, &alice, 4242).await;
    let b1 = Device::primary(&bob);
    let c1 = Device::primary(&carol);
    let d1 = Device::primary(&dave);
    let mut ws = a1.connect(&stack).await;

    // Alice's other device left out, Bob's right, the sending device and an invitee named.
    let reply = send_group(
        &mut ws,
        group_frame(&group, "m", b"x", &[&a1, &b1, &c1, &d1]),
    )
    .await;
    assert_eq!(reply["type"], "error", "{reply}");
    assert_eq!(reply["code"], "mismatched_devices", "{reply}");
    assert_eq!(reply["id"], "m");
    let mut listed = users(&reply);
    listed.sort_by(|a, b| a.0.cmp(&b.0));
    let mut expected = vec![
        (
            alice.user_id.clone(),
            json!({"missing": [a2.device_id], "extra": [1]}),
        ),
        (dave.user_id.clone(), json!({"extra": [1]})),
    ];
    expected.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(listed, expected, "{reply}");
    assert!(reply.get("missing_devices").is_none(), "{reply}");

    // The right devices with an old registration id for Bob's.
    let old = Device {
        registration_id: b1.registration_id + 1,
        ..b1.clone()
    };
    let reply = send_group(&mut ws, group_frame(&group, "s", b"x", &[&a2, &old, &c1])).await;
    assert_eq!(reply["code"], "stale_devices", "{reply}");
    assert_eq!(
        users(&reply),
        vec![(bob.user_id.clone(), json!({"stale": [1]}))]
    );

    for d in [&a2, &b1, &c1, &d1] {
        assert!(entries(&stack, d).await.is_empty(), "nothing stored");
    }
    let reply = send_group(&mut ws, group_frame(&group, "ok", b"x", &[&a2, &b1, &c1])).await;
    assert_eq!(counts(&reply), (0, 3, 0));
    let mut carol_ws = c1.connect(&stack).await;
    assert_eq!(pending(&mut carol_ws).await, 1);
}

/// A send makes the relay read the whole roster and every joined member's devices whatever its
/// map names, so it costs at least one `group_deliveries` token per roster entry: a flood of
/// empty maps (or of sends to a group the sender is not in) is refused once the tokens it paid
/// for are spent, and one sender's flood costs no other sender anything.
#[tokio::test]
async fn an_empty_device_map_pays_for_the_whole_roster() {
    let stack = Stack::with_env(&[("RATE_LIMIT_GROUP_DELIVERIES", "10/3600")]).await;
    let (alice, bob) = User::pair(&stack).await;
    let carol = User::builder(&stack).create().await;
    let dave = User::builder(&stack).create().await;
    // A roster of four: three joined, one invited.
    let group = group_of(&stack, &[&alice, &bob, &carol], &[&dave]).await;
    let empty = |id: &str| json!({"action": "send", "id": id, "group_id": group.id, "body": encode(b"x"), "devices": {}});

    let mut ws = alice.connect(&stack).await;
    for id in ["e1", "e2"] {
        let reply = send_group(&mut ws, empty(id)).await;
        assert_eq!(reply["code"], "mismatched_devices", "{reply}");
    }
    // 8 of 10 tokens spent: the next needs 4.
    let reply = send_group(&mut ws, empty("e3")).await;
    assert_eq!(reply["code"], "rate_limited", "{reply}");
    assert_eq!(reply["id"], "e3");
    // A right map of two devices still pays for four.
    let right = [&Device::primary(&bob), &Device::primary(&carol)];
    let reply = send_group(&mut ws, group_frame(&group, "r", b"x", &right)).await;
    assert_eq!(reply["code"], "rate_limited", "{reply}");
    assert!(!stack.has_inbox(&bob.user_id).await);

    // An invitee is not a member, and its refused sends are paid for the same way.
    let mut dave_ws = dave.connect(&stack).await;
    for id in ["d1", "d2"] {
        let reply = send_group(&mut dave_ws, empty(id)).await;
        assert_eq!(reply["code"], "not_a_member", "{reply}");
    }
    let reply = send_group(&mut dave_ws, empty("d3")).await;
    assert_eq!(reply["code"], "rate_limited", "{reply}");

    // Bob's budget is his own.
    let right = [&Device::primary(&alice), &Device::primary(&carol)];
    let mut bob_ws = bob.connect(&stack).await;
    let reply = send_group(&mut bob_ws, group_frame(&group, "b", b"x", &right)).await;
    let (delivered, queued, dropped) = counts(&reply);
    assert_eq!((delivered + queued, dropped), (2, 0), "{reply}");
}

#[tokio::test]
async fn ack_mode_acknowledges_the_shared_id_per_device() {
    let stack = Stack::start().await;
    let (alice, bob) = User::pair(&stack).await;
    let carol = User::builder(&stack).create().await;
    let group = group_of(&stack, &[&alice, &bob, &carol], &[]).await;
    let (b1, c1) = (Device::primary(&bob), Device::primary(&carol));
    let mut sender = alice.connect(&stack).await;
    // Bob in ack mode and online; Carol offline.
    let mut bob_ws = connect_ack(&stack, &bob.access).await;
    let reply = send_group(&mut sender, group_frame(&group, "a", b"hi", &[&b1, &c1])).await;
    assert_eq!(counts(&reply), (1, 1, 0));
    let pushed = bob_ws.recv().await;
    let envelope = pushed["messages"][0].clone();
    let id = envelope["id"].as_str().unwrap().to_string();

    // Unacknowledged, Bob's copy waits in flight; acknowledged, it is gone.
    let reply = reply_alone(&mut bob_ws, ack_frame(Some("k"), std::slice::from_ref(&id))).await;
    assert_eq!(reply["acked"], 1, "{reply}");
    assert!(bob_ws.fetch_all().await.is_empty());

    // Carol fetches the same envelope in ack mode and acknowledges the same id.
    let mut carol_ws = connect_ack(&stack, &carol.access).await;
    let fetched = carol_ws.fetch_all().await;
    assert_eq!(fetched, vec![envelope]);
    let reply = reply_alone(&mut carol_ws, ack_frame(None, &[id])).await;
    assert_eq!(reply["acked"], 1, "{reply}");
    carol_ws.close().await;
    let mut carol_ws = connect_ack(&stack, &carol.access).await;
    assert!(carol_ws.fetch_all().await.is_empty());
}

#[tokio::test]
async fn a_repeat_with_the_same_id_stores_nothing_twice() {
    let stack = Stack::start().await;
    let (alice, bob) = User::pair(&stack).await;
    let carol = User::builder(&stack).create().await;
    let group = group_of(&stack, &[&alice, &bob, &carol], &[]).await;
    let (a1, b1, c1) = (
        Device::primary(&alice),
        Device::primary(&bob),
        Device::primary(&carol),
    );
    let mut sender = connect_ack(&stack, &alice.access).await;
    let frame = group_frame(&group, "once", b"hello", &[&b1, &c1]);
    let first = send_group(&mut sender, frame.clone()).await;
    assert_eq!(counts(&first), (0, 2, 0));
    // A repeat gets the first answer.
    assert_eq!(send_group(&mut sender, frame.clone()).await, first);
    // A repeat after a failure part way (the send log forgot it; each member remembers what
    // it was given): stores nothing twice.
    let keys = stack.redis_keys();
    let _: () = stack
        .redis()
        .await
        .del(&[keys.sent(address(&a1)), keys.sent_times(address(&a1))])
        .await
        .unwrap();
    let again = send_group(&mut sender, frame).await;
    assert_eq!(counts(&again), (0, 2, 0), "{again}");
    for d in [&b1, &c1] {
        assert_eq!(
            entries(&stack, d).await.len(),
            1,
            "one entry for {}",
            d.user_id
        );
    }
    // The same id with other content is refused.
    let other = send_group(
        &mut sender,
        group_frame(&group, "once", b"other", &[&b1, &c1]),
    )
    .await;
    assert_eq!(other["code"], "id_reused", "{other}");
    // Without ack mode an id is only a correlation: a second send is a second message.
    let mut plain = alice.connect(&stack).await;
    let frame = group_frame(&group, "plain", b"x", &[&b1, &c1]);
    send_group(&mut plain, frame.clone()).await;
    send_group(&mut plain, frame).await;
    assert_eq!(entries(&stack, &b1).await.len(), 3);
}

#[tokio::test]
async fn online_only_reaches_only_the_devices_online() {
    let stack = Stack::start().await;
    let (alice, bob) = User::pair(&stack).await;
    let carol = User::builder(&stack).create().await;
    let group = group_of(&stack, &[&alice, &bob, &carol], &[]).await;
    let (b1, c1) = (Device::primary(&bob), Device::primary(&carol));
    let mut bob_ws = b1.connect(&stack).await;
    let mut sender = alice.connect(&stack).await;
    let mut frame = group_frame(&group, "t", b"typing", &[&b1, &c1]);
    frame["online_only"] = json!(true);
    let reply = send_group(&mut sender, frame).await;
    assert_eq!(counts(&reply), (1, 0, 1));
    assert_eq!(reply["delivery"], "dropped");
    let pushed = bob_ws.recv().await;
    assert_eq!(body_of(&pushed["messages"][0]), b"typing");
    assert!(entries(&stack, &c1).await.is_empty());
    let mut carol_ws = c1.connect(&stack).await;
    assert!(carol_ws.fetch_all().await.is_empty());
}

/// Many sends in flight while Carol is removed: each reaches exactly the roster it was checked
/// against (the old one with Carol, or the new one without her; a map for the other is
/// refused), and none sent after the removal answered reaches her.
#[tokio::test]
async fn sends_racing_a_removal_reach_the_old_or_the_new_roster() {
    let stack = Arc::new(Stack::start().await);
    let (alice, bob) = User::pair(&stack).await;
    let carol = User::builder(&stack).create().await;
    let group = group_of(&stack, &[&alice, &bob, &carol], &[]).await;
    let (b1, c1) = (Device::primary(&bob), Device::primary(&carol));
    const SOCKETS: usize = 8;
    const SENDS: usize = 8;
    let removed = Arc::new(tokio::sync::OnceCell::<tokio::time::Instant>::new());
    let first_reply = Arc::new(tokio::sync::Notify::new());
    let mut tasks = Vec::new();
    for s in 0..SOCKETS {
        let mut ws = alice.connect(&stack).await;
        let (group, b1, c1) = (group.clone(), b1.clone(), c1.clone());
        let (removed, first_reply) = (removed.clone(), first_reply.clone());
        tasks.push(tokio::spawn(async move {
            let mut outcomes = Vec::new();
            for i in 0..SENDS {
                // Half the sends name the old roster, half the new one.
                let old = (s + i) % 2 == 0;
                let to: Vec<&Device> = if old { vec![&b1, &c1] } else { vec![&b1] };
                let id = format!("{s}-{i}");
                let after_removal = removed.get().is_some();
                let reply = send_group(&mut ws, group_frame(&group, &id, id.as_bytes(), &to)).await;
                if old && reply["type"] == "sent" {
                    first_reply.notify_one();
                }
                outcomes.push((id, old, after_removal, reply));
            }
            outcomes
        }));
    }
    // The removal lands while sends are in flight: after the first one accepted.
    first_reply.notified().await;
    remove(&stack, &alice, &group, &carol).await;
    removed.set(tokio::time::Instant::now()).unwrap();
    let mut outcomes = Vec::new();
    for t in tasks {
        outcomes.extend(t.await.unwrap());
    }

    let mut bob_ws = b1.connect(&stack).await;
    let to_bob: BTreeSet<Vec<u8>> = bob_ws.fetch_all().await.iter().map(body_of).collect();
    let mut carol_ws = c1.connect(&stack).await;
    let to_carol: BTreeSet<Vec<u8>> = carol_ws.fetch_all().await.iter().map(body_of).collect();
    let (mut accepted_old, mut accepted_new) = (0, 0);
    for (id, old, after_removal, reply) in &outcomes {
        let body = id.as_bytes().to_vec();
        match reply["type"].as_str() {
            Some("sent") => {
                assert!(to_bob.contains(&body), "{id} reached bob");
                assert_eq!(to_carol.contains(&body), *old, "{id}: {reply}");
                assert!(
                    !(*old && *after_removal),
                    "{id} sent after the removal reached carol"
                );
                if *old {
                    accepted_old += 1
                } else {
                    accepted_new += 1
                }
            }
            _ => {
                assert_eq!(reply["code"], "mismatched_devices", "{id}: {reply}");
                assert!(!to_bob.contains(&body) && !to_carol.contains(&body), "{id}");
            }
        }
    }
    assert_eq!(to_bob.len(), accepted_old + accepted_new);
    assert_eq!(to_carol.len(), accepted_old);
    assert!(accepted_old > 0, "some sends went before the removal");
    assert!(
        outcomes.iter().any(|(_, _, after, _)| *after),
        "some sends started after the removal answered"
    );
    // After the removal answered, Carol's sends are refused too.
    let mut ws = carol.connect(&stack).await;
    let reply = send_group(&mut ws, group_frame(&group, "late", b"x", &[&b1])).await;
    assert_eq!(reply["code"], "not_a_member", "{reply}");
}

/// An entry whose shared envelope is gone (expired with the inbox TTL) is dropped when it comes
/// to be delivered, and the entries after it still arrive.
#[tokio::test]
async fn an_entry_whose_envelope_expired_is_dropped() {
    let stack = Stack::start().await;
    let (alice, bob) = User::pair(&stack).await;
    let group = group_of(&stack, &[&alice, &bob], &[]).await;
    let b1 = Device::primary(&bob);
    let mut sender = alice.connect(&stack).await;
    for (id, body) in [("1", b"first".as_slice()), ("2", b"second".as_slice())] {
        let reply = send_group(&mut sender, group_frame(&group, id, body, &[&b1])).await;
        assert_eq!(counts(&reply), (0, 1, 0));
    }
    let first = &entries(&stack, &b1).await[0];
    let id = Uuid::parse_str(first.split('|').nth(1).unwrap().trim_start_matches('@')).unwrap();
    let _: () = stack
        .redis()
        .await
        .del(stack.redis_keys().shared(id))
        .await
        .unwrap();
    let mut bob_ws = b1.connect(&stack).await;
    let fetched = bob_ws.fetch_all().await;
    assert_eq!(
        fetched.iter().map(body_of).collect::<Vec<_>>(),
        vec![b"second".to_vec()]
    );
    assert!(bob_ws.fetch_all().await.is_empty());
    assert_eq!(pending(&mut bob_ws).await, 0);
}

/// A member whose slot fails (here: a key of the wrong type in it, as a node that refuses the
/// script) is reported with what was stored; the repeat with the same id from the ack-mode
/// connection stores only what was missing.
#[tokio::test]
async fn a_failure_part_way_is_reported_and_the_repeat_completes_it() {
    let stack = Stack::start().await;
    let (alice, bob) = User::pair(&stack).await;
    let carol = User::builder(&stack).create().await;
    let group = group_of(&stack, &[&alice, &bob, &carol], &[]).await;
    let (b1, c1) = (Device::primary(&bob), Device::primary(&carol));
    let broken = stack.redis_keys().conns(address(&c1));
    let mut redis = stack.redis().await;
    let _: () = redis.set(&broken, "not a sorted set").await.unwrap();

    let mut sender = connect_ack(&stack, &alice.access).await;
    let frame = group_frame(&group, "p", b"part", &[&b1, &c1]);
    let reply = send_group(&mut sender, frame.clone()).await;
    assert_eq!(reply["type"], "error", "{reply}");
    assert_eq!(reply["code"], "unavailable", "{reply}");
    assert_eq!(reply["id"], "p");
    assert_eq!(reply["stored_users"], 1, "{reply}");
    assert_eq!(reply["unstored_users"], json!([carol.user_id]), "{reply}");
    assert_eq!(entries(&stack, &b1).await.len(), 1);
    assert!(entries(&stack, &c1).await.is_empty());

    let _: () = redis.del(&broken).await.unwrap();
    let reply = send_group(&mut sender, frame).await;
    assert_eq!(counts(&reply), (0, 2, 0), "{reply}");
    assert_eq!(entries(&stack, &b1).await.len(), 1, "nothing stored twice");
    let mut carol_ws = c1.connect(&stack).await;
    let fetched = carol_ws.fetch_all().await;
    assert_eq!(
        fetched.iter().map(body_of).collect::<Vec<_>>(),
        vec![b"part".to_vec()]
    );
}
