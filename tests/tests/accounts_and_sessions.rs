//! Accounts and tokens over real HTTP: login, refresh rotation, logout, lookup, deletion, limits.

use std::time::Duration;

use base64::Engine;
use relay_tests::client::{
    assert_rate_limited, delete_auth, error_code, get_auth, login, login_response, post, refresh,
    unique_username, Identity,
};
use relay_tests::{Stack, User};
use serde_json::json;

const B64URL: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

async fn count_status(stack: &Stack, token: &str) -> (u16, String) {
    let (s, b) = get_auth(stack, "/v1/keys/count", token).await;
    let code = if s == 200 {
        String::new()
    } else {
        error_code(&b).to_string()
    };
    (s, code)
}

#[tokio::test]
async fn bad_tokens_are_401() {
    let stack = Stack::start().await;
    let other = Stack::start().await;
    let alice = User::create(&stack, 1, 0).await;
    let stranger = User::create(&other, 1, 0).await;
    assert_eq!(count_status(&stack, &alice.access).await.0, 200);
    let r = stack
        .http
        .get(stack.url("/v1/keys/count"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "no token");
    assert_eq!(
        count_status(&stack, "garbage").await,
        (401, "unauthorized".into())
    );
    assert_eq!(
        count_status(&stack, &stranger.access).await.0,
        401,
        "token signed with another secret"
    );
    let claims = alice.access.split('.').nth(1).unwrap();
    let none = format!(
        "{}.{}.",
        B64URL.encode(r#"{"alg":"none","typ":"JWT"}"#),
        claims
    );
    assert_eq!(count_status(&stack, &none).await.0, 401, "alg none");
    // The claims of a valid token with the subject changed: the signature no longer matches.
    let mut payload: serde_json::Value =
        serde_json::from_slice(&B64URL.decode(claims).unwrap()).unwrap();
    payload["sub"] = json!(stranger.user_id);
    let parts: Vec<&str> = alice.access.split('.').collect();
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        B64URL.encode(payload.to_string()),
        parts[2]
    );
    assert_eq!(count_status(&stack, &forged).await.0, 401, "altered claims");
}

#[tokio::test]
async fn expired_tokens_are_401() {
    let stack = Stack::with_env(&[("ACCESS_TOKEN_TTL_SECS", "1"), ("JWT_LEEWAY_SECS", "0")]).await;
    let alice = User::create(&stack, 1, 0).await;
    assert_eq!(count_status(&stack, &alice.access).await.0, 200);
    stack.advance(Duration::from_millis(2100));
    assert_eq!(
        count_status(&stack, &alice.access).await,
        (401, "unauthorized".into())
    );
}

/// A session ends on the relay's clock, the one its tokens follow: the session store reads it too.
#[tokio::test]
async fn refresh_tokens_expire_on_the_relays_clock() {
    let stack = Stack::with_env(&[("REFRESH_TOKEN_TTL_SECS", "60")]).await;
    let alice = User::create(&stack, 1, 0).await;
    stack.advance(Duration::from_secs(61));
    let (s, body) = refresh(&stack, &alice.refresh).await;
    assert_eq!((s, error_code(&body)), (401, "unauthorized"), "{body}");
}

#[tokio::test]
async fn refresh_rotates_and_reuse_revokes_the_session() {
    let stack = Stack::start().await;
    let alice = User::create(&stack, 1, 0).await;
    let (s, first) = refresh(&stack, &alice.refresh).await;
    assert_eq!(s, 200, "{first}");
    assert_eq!(first["token_type"], "Bearer");
    assert_eq!(first["expires_in"], 900);
    let r1 = first["refresh_token"].as_str().unwrap();
    let a1 = first["access_token"].as_str().unwrap();
    assert_ne!(r1, alice.refresh, "refresh token not rotated");
    assert_eq!(count_status(&stack, a1).await.0, 200);
    let (s, second) = refresh(&stack, r1).await;
    assert_eq!(s, 200);
    let r2 = second["refresh_token"].as_str().unwrap();
    // The rotated-away token is presented again after its grace window: the whole session ends.
    stack.advance(Duration::from_secs(
        stack.config.jwt.refresh_grace.as_secs() + 1,
    ));
    let (s, b) = refresh(&stack, r1).await;
    assert_eq!((s, error_code(&b)), (401, "unauthorized"));
    let (s, _) = refresh(&stack, r2).await;
    assert_eq!(s, 401, "the newest refresh token survived a reuse");
    assert_eq!(
        count_status(&stack, second["access_token"].as_str().unwrap())
            .await
            .0,
        401
    );
    assert_eq!(count_status(&stack, a1).await.0, 401);
    // A new login still works.
    let (s, _) = login(&stack, &alice.username, &alice.password).await;
    assert_eq!(s, 200);
    let (s, _) = refresh(&stack, "not-a-token").await;
    assert_eq!(s, 401);
}

#[tokio::test]
async fn logout_ends_both_tokens() {
    let stack = Stack::start().await;
    let alice = User::create(&stack, 1, 0).await;
    let (s, other) = login(&stack, &alice.username, &alice.password).await;
    assert_eq!(s, 200);
    assert_eq!(
        delete_auth(&stack, "/v1/sessions/current", &alice.access).await,
        204
    );
    assert_eq!(count_status(&stack, &alice.access).await.0, 401);
    let (s, _) = refresh(&stack, &alice.refresh).await;
    assert_eq!(s, 401);
    assert_eq!(
        relay_tests::Ws::connect(&stack.ws_url(&alice.access))
            .await
            .err(),
        Some(401)
    );
    // Another session of the same user is untouched.
    assert_eq!(
        count_status(&stack, other["access_token"].as_str().unwrap())
            .await
            .0,
        200
    );
}

#[tokio::test]
async fn login_failures_and_lookup() {
    let stack = Stack::start().await;
    let alice = User::create(&stack, 1, 0).await;
    for (user, pass) in [
        (alice.username.as_str(), "wrong password"),
        ("nobody_here", "whatever123"),
        ("x", "y"),
    ] {
        let (s, b) = login(&stack, user, pass).await;
        assert_eq!((s, error_code(&b)), (401, "invalid_credentials"));
    }
    let (s, b) = login(&stack, &alice.username.to_uppercase(), &alice.password).await;
    assert_eq!(s, 200, "usernames are case-insensitive: {b}");
    let (s, b) = get_auth(
        &stack,
        &format!("/v1/users?username={}", alice.username.to_uppercase()),
        &alice.access,
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(
        b,
        json!({"user_id": alice.user_id, "username": alice.username})
    );
    let (s, b) = get_auth(&stack, "/v1/users?username=nobody_here", &alice.access).await;
    assert_eq!((s, error_code(&b)), (404, "user_not_found"));
    let r = stack
        .http
        .get(stack.url("/v1/users?username=x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn sixth_failed_login_from_one_ip_is_rate_limited() {
    let stack = Stack::with_env(&[("RATE_LIMIT_LOGIN_FAILURES", "5/900")]).await;
    let alice = User::create(&stack, 1, 0).await;
    for i in 0..5 {
        let (s, _) = login(&stack, &alice.username, &format!("wrong-{i}-pass")).await;
        assert_eq!(s, 401, "attempt {i}");
    }
    assert_rate_limited(
        login_response(&stack, &alice.username, &alice.password).await,
        900,
    )
    .await;
}

#[tokio::test]
async fn auth_endpoints_are_limited_per_ip() {
    let stack = Stack::with_env(&[("RATE_LIMIT_AUTH", "5/1")]).await;
    let body = json!({"username": "nobody_here", "password": "whatever123"});
    let statuses =
        futures::future::join_all((0..8).map(|_| post(&stack, "/v1/sessions", &body))).await;
    let limited = statuses.iter().filter(|(s, _)| *s == 429).count();
    assert_eq!(limited, 3, "{statuses:?}");
}

#[tokio::test]
async fn password_hash_is_argon2id_phc_with_spec_parameters() {
    let stack = Stack::with_env(&[("ARGON2_M_KIB", "19456"), ("ARGON2_T", "2")]).await;
    let name = unique_username("hash");
    let (s, _) = post(
        &stack,
        "/v1/users",
        &Identity::new().registration(&name, "a very secret pw", 1, 0),
    )
    .await;
    assert_eq!(s, 200);
    let item = stack
        .dynamodb
        .get_item()
        .table_name(stack.table("users"))
        .key(
            "pk",
            aws_sdk_dynamodb::types::AttributeValue::S(format!("name#{name}")),
        )
        .send()
        .await
        .unwrap()
        .item
        .unwrap();
    let hash = item["password_hash"].as_s().unwrap();
    assert!(
        hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{hash}"
    );
    assert!(!hash.contains("a very secret pw"));
}

#[tokio::test]
async fn deleting_the_account_erases_it() {
    let stack = Stack::start().await;
    let alice = User::create(&stack, 3, 2).await;
    let bob = User::create(&stack, 1, 0).await;
    assert_eq!(
        delete_auth(&stack, "/v1/users/me", &alice.access).await,
        204
    );
    let (s, b) = bob.bundle_of(&stack, &alice.user_id).await;
    assert_eq!((s, error_code(&b)), (404, "user_not_found"));
    assert_eq!(count_status(&stack, &alice.access).await.0, 401);
    let (s, _) = login(&stack, &alice.username, &alice.password).await;
    assert_eq!(s, 401);
    let keys = stack.items("keys").await;
    assert!(
        keys.iter()
            .all(|i| i["pk"].as_s().unwrap() != &alice.user_id),
        "keys left behind"
    );
    let sessions = stack.items("sessions").await;
    assert!(
        sessions
            .iter()
            .all(|i| i["pk"].as_s().unwrap() != &alice.user_id),
        "sessions left behind"
    );
    // The name is free again.
    let (s, _) = post(
        &stack,
        "/v1/users",
        &Identity::new().registration(&alice.username, "password123", 1, 0),
    )
    .await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn health_answers_ok_and_unknown_routes_are_404() {
    let stack = Stack::start().await;
    let r = stack.http.get(stack.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap(),
        json!({"status": "ok"})
    );
    let r = stack
        .http
        .get(stack.url("/v2/nothing"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}
