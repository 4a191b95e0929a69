//! An open WebSocket ends with its session. Logout, refresh-token reuse and account deletion close
//! the session's (or the user's) connections; a frame on a connection whose token has expired is
//! refused with `unauthorized` and the connection closed; a renewed connection follows its new
//! token, on every warm instance of the connection function.

use std::sync::Arc;
use std::time::Duration;

use relay_tests::client::{closed_within, delete_auth, refresh, unique_username, Identity};
use relay_tests::stack::{config_with_tables, test_env};
use relay_tests::{Stack, User, Ws};
use serde_json::json;
use shared::clock::ManualClock;
use shared::model::{LoginRequest, RegisterRequest};
use shared::storage::{PushError, Pusher};
use shared::App;

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
    let alice = User::builder(&stack).create().await;
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
    // The logout closed its session's sockets before it answered: had it closed this one too,
    // no pong would come for a ping sent after the answer.
    assert_alive(&mut other).await;
}

#[tokio::test]
async fn refresh_token_reuse_closes_the_sessions_sockets() {
    let stack = Stack::start().await;
    let alice = User::builder(&stack).create().await;
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

// ---------------------------------------------------------------------------------------------
// Two warm connection functions are two `Relay` values over the same stores, each with its own
// in-process cache of connections: what one instance changes, the other must honour.
// ---------------------------------------------------------------------------------------------

struct Silent;

#[async_trait::async_trait]
impl Pusher for Silent {
    async fn push(&self, _: &str, _: &str) -> Result<(), PushError> {
        Ok(())
    }
    async fn close(&self, _: &str) -> Result<(), PushError> {
        Ok(())
    }
}

#[tokio::test]
async fn a_connection_renewed_on_one_instance_is_not_ended_by_another() {
    let (config, _) = config_with_tables(&test_env()).await;
    let clock = ManualClock::new();
    let one = App::from_config_with_clock(config.clone(), clock.clone())
        .await
        .expect("app");
    let other = App::from_config_with_clock(config.clone(), clock.clone())
        .await
        .expect("app");
    let (a, b) = (one.relay(Arc::new(Silent)), other.relay(Arc::new(Silent)));

    let (username, password) = (unique_username("inst"), "correct horse battery".to_string());
    let registration = Identity::new().registration(&username, &password, 1, 0);
    let request: RegisterRequest = serde_json::from_value(registration).expect("request");
    one.accounts
        .register(request, "198.51.100.1")
        .await
        .expect("register");
    let login = || LoginRequest {
        username: username.clone(),
        password: password.clone(),
        device_id: None,
    };
    let first = one
        .accounts
        .login(login(), "198.51.100.1")
        .await
        .expect("login");
    a.connect("conn-1", Some(&first.access_token), "198.51.100.1", false)
        .await
        .expect("connect");

    // Two seconds before the first token runs out, the other instance serves (and caches) the
    // connection; then the client renews it through the first instance.
    let lifetime = config.jwt.access_ttl + config.jwt.leeway;
    clock.advance(lifetime - Duration::from_secs(2));
    b.ping("conn-1").await.expect("served before expiry");
    let second = one
        .accounts
        .login(login(), "198.51.100.1")
        .await
        .expect("login");
    a.renew("conn-1", &second.access_token)
        .await
        .expect("renewed");

    // Past the first token, within the other instance's cache window: still served.
    clock.advance(Duration::from_secs(3));
    b.ping("conn-1")
        .await
        .expect("the renewal made on the first instance holds on the other");
}
