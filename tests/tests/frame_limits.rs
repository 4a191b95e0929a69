//! What a client frame may be and how many a client may send. Every client frame counts against
//! the user's frame limit (`RATE_LIMIT_FRAMES`): frames that cost the relay a Redis round trip
//! without sending anything (`ping`, `list`, `fetch`, `provision`) cannot be looped, and a refused
//! frame leaves the connection open. A provisioning socket's frames count against the socket's
//! own budget (`RATE_LIMIT_PROVISIONING_FRAMES`). A frame `id` is a string of at most 128 bytes;
//! anything else is refused with an `invalid_frame` error that does not echo it, and nothing is
//! stored.

use std::time::Duration;

use futures::SinkExt;
use relay_tests::client::closed_within;
use relay_tests::devices::{provisioning_address, provisioning_socket, provisioning_url};
use relay_tests::{Stack, User, Ws};
use serde_json::{json, Value};
use shared::validation::encode;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn frames_of_every_kind_share_the_users_frame_limit() {
    let stack = Stack::with_env(&[("RATE_LIMIT_FRAMES", "4/3600")]).await;
    let (alice, bob) = User::pair(&stack).await;
    let mut ws = alice.connect(&stack).await;
    ws.send(json!({"action": "ping"})).await;
    assert_eq!(ws.recv().await["type"], "pong");
    ws.send(json!({"action": "list"})).await;
    assert_eq!(ws.recv().await["type"], "inbox");
    ws.send(json!({"action": "fetch"})).await;
    assert_eq!(ws.recv().await["type"], "drained");
    let reply = ws.send_message(&bob.user_id, "m-1", b"hi").await;
    assert_eq!(reply["type"], "sent", "{reply}");
    // The fifth frame, whatever it is, is refused; the connection stays open.
    for frame in [
        json!({"action": "ping", "id": "p"}),
        json!({"action": "list"}),
        json!({"action": "fetch"}),
        json!({"action": "send", "id": "m-2", "to": bob.user_id, "body": "aGk="}),
    ] {
        ws.send(frame.clone()).await;
        let reply = ws.recv().await;
        assert_eq!(reply["type"], "error", "{frame}: {reply}");
        assert_eq!(reply["code"], "rate_limited", "{frame}: {reply}");
    }
    // Another user's budget is their own.
    let mut other = bob.connect(&stack).await;
    other.send(json!({"action": "ping"})).await;
    assert_eq!(other.recv().await["type"], "pong");
}

// `provision` on a device's own connection costs Redis reads like any frame: it is one of the
// user's frames. Flooded at the default limit, it is refused `rate_limited` as a `ping` would be.
#[tokio::test]
async fn provision_on_a_devices_own_connection_counts_against_the_frame_limit() {
    const BATCH: usize = 500;
    const MAX_FRAMES: usize = 20_000;
    let stack = Stack::with_defaults(&["RATE_LIMIT_FRAMES"]).await;
    let alice = User::builder(&stack).create().await;
    let mut ws = alice.connect(&stack).await;
    let provision = json!({"action": "provision"}).to_string();
    let mut answered = 0;
    let mut limited = false;
    while !limited && answered < MAX_FRAMES {
        // Batches keep the connection busy: the bucket refills while a reply travels.
        for _ in 0..BATCH {
            ws.stream
                .feed(Message::Text(provision.clone().into()))
                .await
                .expect("feed");
        }
        ws.stream.flush().await.expect("flush");
        for _ in 0..BATCH {
            let reply = ws.recv().await;
            answered += 1;
            match reply["code"].as_str() {
                Some("rate_limited") => limited = true,
                Some("invalid_frame") => {}
                _ => panic!("frame {answered}: {reply}"),
            }
        }
    }
    assert!(
        limited,
        "{answered} `provision` frames on a device's connection, none refused at the frame limit"
    );
    // Refused, not ended: the connection is served again once the bucket has refilled a little.
    let mut served = false;
    for _ in 0..1000 {
        ws.send(json!({"action": "list"})).await;
        let reply = ws.recv().await;
        if reply["type"] == "inbox" {
            served = true;
            break;
        }
        assert_eq!(reply["code"], "rate_limited", "{reply}");
    }
    assert!(served, "the connection was not served again");
}

// A provisioning socket has no user to count its frames against: it has a budget of its own
// (`RATE_LIMIT_PROVISIONING_FRAMES`), and past it the socket is over, as an expired one is.
#[tokio::test]
async fn a_provisioning_socket_past_its_frame_budget_is_refused_and_closed() {
    let stack = Stack::with_defaults(&["RATE_LIMIT_PROVISIONING_FRAMES"]).await;
    let budget = shared::config::RateLimits::default()
        .provisioning_frames
        .capacity as usize;
    let mut ws = Ws::connect(&provisioning_url(&stack))
        .await
        .expect("provisioning handshake");
    // Its `provision` is one of its frames, then a flood of pings.
    provisioning_address(&mut ws).await;
    let mut answered = 1;
    let refusal = loop {
        assert!(
            answered <= 10 * budget,
            "{answered} frames answered on one provisioning socket, budget {budget}"
        );
        ws.send(json!({"action": "ping"})).await;
        let reply = ws.recv().await;
        if reply["type"] != "pong" {
            break reply;
        }
        answered += 1;
    };
    assert_eq!(refusal["code"], "unauthorized", "{refusal}");
    // One more token may have come back while the frames were answered (one a minute).
    assert!(
        (budget..=budget + 1).contains(&answered),
        "{answered} frames answered, budget {budget}"
    );
    let (closed, _) = closed_within(&mut ws, Duration::from_secs(5)).await;
    assert!(
        closed,
        "the provisioning socket stayed open past its budget"
    );
    // Another socket has its own budget.
    let (mut other, _) = provisioning_socket(&stack).await;
    other.send(json!({"action": "ping"})).await;
    assert_eq!(other.recv().await["type"], "pong");
}

// ---------------------------------------------------------------------------------------------
// Frame ids
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn frame_ids_are_strings_of_at_most_128_bytes() {
    let stack = Stack::start().await;
    let (alice, bob) = User::pair(&stack).await;
    let mut a = alice.connect(&stack).await;
    let send =
        |id: Value| json!({"action": "send", "to": bob.user_id, "id": id, "body": encode(b"hi")});

    for bad in [
        json!("x".repeat(100 * 1024)),
        json!("x".repeat(129)),
        json!(42),
        json!({"nested": ["x"]}),
        json!(["x"]),
        json!(true),
    ] {
        a.send(send(bad.clone())).await;
        let e = a.recv().await;
        let shown: String = bad.to_string().chars().take(40).collect();
        assert_eq!(
            (e["type"].as_str(), e["code"].as_str(), e["id"].is_null()),
            (Some("error"), Some("invalid_frame"), true),
            "id {shown}: the reply was {}",
            e.to_string().chars().take(200).collect::<String>()
        );
        assert!(e["message"].as_str().unwrap().contains("128 bytes"), "{e}");
    }
    a.send(json!({"action": "ping", "id": "p".repeat(129)}))
        .await;
    assert_eq!(a.recv().await["code"], "invalid_frame");

    // Nothing of the refused sends reached bob's inbox.
    let mut b = bob.connect(&stack).await;
    b.send(json!({"action": "list"})).await;
    assert_eq!(b.recv().await, json!({"type": "inbox", "pending": 0}));

    // 128 bytes (of multi-byte characters, too) are fine and echoed; so is no id at all.
    for id in ["i".repeat(128), "é".repeat(64)] {
        let reply = a.send_message(&bob.user_id, &id, b"ok").await;
        assert_eq!(reply["type"], "sent", "{reply}");
        assert_eq!(reply["id"], id.as_str());
    }
    a.send(json!({"action": "send", "to": bob.user_id, "body": encode(b"no id")}))
        .await;
    let reply = a.recv().await;
    assert_eq!(
        (&reply["type"], &reply["id"]),
        (&json!("sent"), &Value::Null)
    );
}
