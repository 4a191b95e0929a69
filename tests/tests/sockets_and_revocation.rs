//! Issue 12, finding 2: an open WebSocket ends with its session. Logout, refresh-token reuse and
//! account deletion close the session's (or the user's) connections; a frame on a connection
//! whose token has expired is refused with `unauthorized` and the connection closed.

use std::time::Duration;

use relay_tests::client::{closed_within, delete_auth, refresh};
use relay_tests::{Stack, User, Ws};
use serde_json::json;

/// The connection is open and served: a ping gets its pong.
async fn assert_alive(ws: &mut Ws) {
    ws.send(json!({"action": "ping"})).await;
    assert_eq!(ws.recv().await["type"], "pong");
}

async fn connect(stack: &Stack, access: &str) -> Ws {
    Ws::connect(&stack.ws_url(access)).await.expect("handshake")
}

const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// Asserts that the server closes `ws` within `CLOSE_WAIT`; `what` names the socket.
async fn assert_closes(ws: &mut Ws, what: &str) {
    let (closed, frames) = closed_within(ws, CLOSE_WAIT).await;
    assert!(closed, "{what} stays open ({frames:?})");
}

#[tokio::test]
async fn logout_closes_the_sessions_sockets_and_no_other() {
    let stack = Stack::start().await;
    let alice = User::create(&stack, 1, 0).await;
    let (other_access, _) = alice.log_in(&stack).await;
    let mut first = connect(&stack, &alice.access).await;
    let mut second = connect(&stack, &alice.access).await;
    let mut other = connect(&stack, &other_access).await;
    assert_alive(&mut first).await;

    assert_eq!(
        delete_auth(&stack, "/v1/sessions/current", &alice.access).await,
        204
    );
    for ws in [&mut first, &mut second] {
        assert_closes(ws, "a socket of the ended session").await;
    }
    assert_alive(&mut other).await;
    let (closed, _) = closed_within(&mut other, Duration::from_millis(300)).await;
    assert!(!closed, "the other session's socket was closed");
}

#[tokio::test]
async fn refresh_token_reuse_closes_the_sessions_sockets() {
    let stack = Stack::start().await;
    let alice = User::create(&stack, 1, 0).await;
    let (other_access, _) = alice.log_in(&stack).await;
    let mut ws = connect(&stack, &alice.access).await;
    let mut other = connect(&stack, &other_access).await;
    let mut token = alice.refresh.clone();
    let stolen = token.clone();
    for _ in 0..2 {
        let (status, tokens) = refresh(&stack, &token).await;
        assert_eq!(status, 200, "refresh: {tokens}");
        token = tokens["refresh_token"].as_str().unwrap().to_string();
    }
    // A token two rotations old: reuse, which ends the session.
    let (status, _) = refresh(&stack, &stolen).await;
    assert_eq!(status, 401);

    assert_closes(&mut ws, "the revoked session's socket").await;
    assert_alive(&mut other).await;
}

#[tokio::test]
async fn account_deletion_closes_every_socket_of_the_user() {
    let stack = Stack::start().await;
    let (alice, bob) = User::pair(&stack).await;
    let (other_access, _) = alice.log_in(&stack).await;
    let mut sockets = vec![
        connect(&stack, &alice.access).await,
        connect(&stack, &other_access).await,
    ];
    let mut bobs = bob.connect(&stack).await;

    assert_eq!(
        delete_auth(&stack, "/v1/users/me", &alice.access).await,
        204
    );
    for ws in &mut sockets {
        assert_closes(ws, "a socket of the deleted user").await;
    }
    assert_alive(&mut bobs).await;
}

#[tokio::test]
async fn a_frame_after_the_token_expired_is_refused_and_the_socket_closed() {
    let stack = Stack::start().await;
    let (alice, bob) = User::pair(&stack).await;
    let mut ws = alice.connect(&stack).await;
    assert_alive(&mut ws).await;

    let jwt = &stack.config.jwt;
    stack.advance(jwt.access_ttl + jwt.leeway + Duration::from_secs(1));
    ws.send(json!({"action": "send", "to": bob.user_id, "id": "late", "body": "aGk="}))
        .await;
    let (closed, frames) = closed_within(&mut ws, CLOSE_WAIT).await;
    assert_eq!(frames.len(), 1, "one refusal, then the close: {frames:?}");
    assert_eq!(frames[0]["type"], "error");
    assert_eq!(frames[0]["code"], "unauthorized");
    assert_eq!(frames[0]["id"], "late");
    assert!(closed, "the expired connection stays open");

    // Nothing was relayed for the refused frame.
    let (access, _) = bob.log_in(&stack).await;
    let mut bobs = connect(&stack, &access).await;
    assert!(bobs.fetch_all().await.is_empty());
}

#[tokio::test]
async fn a_connection_within_its_token_lifetime_keeps_working() {
    let stack = Stack::start().await;
    let (alice, bob) = User::pair(&stack).await;
    let mut ws = alice.connect(&stack).await;
    // Past the session re-check interval, well before expiry: still served.
    stack.advance(stack.config.relay.session_check + Duration::from_secs(1));
    let reply = ws.send_message(&bob.user_id, "m", b"hi").await;
    assert_eq!(reply["type"], "sent", "{reply}");
    assert_eq!(reply["delivery"], "queued");
}

/// A connection handed a fresh token of its user lives on past the token it was opened with,
/// and then belongs to the new token's session.
#[tokio::test]
async fn a_renewed_connection_outlives_its_first_token_and_follows_the_new_session() {
    let stack = Stack::start().await;
    let (alice, bob) = User::pair(&stack).await;
    let mut ws = connect(&stack, &alice.access).await;
    // A minute before the first token expires, the client gets a new one.
    stack.advance(stack.config.jwt.access_ttl - Duration::from_secs(60));
    let (fresh_access, _) = alice.log_in(&stack).await;

    // Refused without ending the connection: another user's token, and garbage.
    for (token, what) in [(bob.access.as_str(), "bob's token"), ("nope", "garbage")] {
        ws.send(json!({"action": "renew", "id": "r0", "token": token}))
            .await;
        let reply = ws.recv().await;
        assert_eq!(reply["code"], "invalid_frame", "{what}: {reply}");
        assert_eq!(reply["id"], "r0", "{what}: {reply}");
        assert_alive(&mut ws).await;
    }
    ws.send(json!({"action": "renew", "token": fresh_access}))
        .await;
    let reply = ws.recv().await;
    assert_eq!(reply["type"], "renewed", "{reply}");
    assert!(reply["valid_until"].as_u64().is_some(), "{reply}");

    // Past the first token's lifetime (leeway included), within the new one's.
    stack.advance(stack.config.jwt.leeway + Duration::from_secs(240));
    assert_alive(&mut ws).await;
    // Ending the first session no longer ends it; ending the new one does.
    assert_eq!(
        delete_auth(&stack, "/v1/sessions/current", &alice.access).await,
        401,
        "the first token has expired by now"
    );
    assert_eq!(
        delete_auth(&stack, "/v1/sessions/current", &fresh_access).await,
        204
    );
    assert_closes(&mut ws, "the renewed socket of the ended session").await;
}
