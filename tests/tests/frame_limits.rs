//! Every client frame counts against the user's frame limit (`RATE_LIMIT_FRAMES`): frames that
//! cost the relay a Redis round trip without sending anything (`ping`, `list`, `fetch`,
//! `provision`) cannot be looped, and a refused frame leaves the connection open. A provisioning
//! socket's frames count against the socket's own budget (`RATE_LIMIT_PROVISIONING_FRAMES`).

use std::time::Duration;

use futures::SinkExt;
use relay_tests::client::{closed_within, User};
use relay_tests::devices::{provisioning_address, provisioning_socket, provisioning_url};
use relay_tests::stack::Stack;
use relay_tests::Ws;
use serde_json::json;
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
    let alice = User::create(&stack, 1, 0).await;
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
