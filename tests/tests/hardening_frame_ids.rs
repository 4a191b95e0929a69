//! Issue 12, finding 9 (the id part), over a real WebSocket: a frame `id` is a string of at
//! most 128 bytes; anything else is refused with an `invalid_frame` error that does not echo it,
//! and nothing is stored.

use relay_tests::{Stack, User};
use serde_json::{json, Value};
use shared::validation::encode;

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
