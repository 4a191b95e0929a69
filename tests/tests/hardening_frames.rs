//! Every client frame counts against the user's frame limit (`RATE_LIMIT_FRAMES`): frames that
//! cost the relay a Redis round trip without sending anything (`ping`, `list`, `fetch`) cannot be
//! looped, and a refused frame leaves the connection open.

use relay_tests::client::User;
use relay_tests::stack::Stack;
use serde_json::json;

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
