//! A backing store that stops answering: 503 `unavailable`, and nothing half-written.

use relay_tests::client::{error_code, get_auth, post, unique_username, Identity};
use relay_tests::servers::start_redis;
use relay_tests::{Stack, User};

#[tokio::test]
async fn redis_going_down_gives_503_and_writes_nothing() {
    let (port, mut redis) = start_redis();
    let url = format!("redis://127.0.0.1:{port}");
    let stack = Stack::with_env(&[("REDIS_URL", url.as_str())]).await;
    let alice = User::create(&stack, 1, 0).await;
    let before = stack.items("users").await.len();
    redis.kill().unwrap();
    redis.wait().unwrap();

    let r = stack.http.get(stack.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(error_code(&body), "unavailable");
    assert!(
        !body.to_string().contains(&port.to_string()),
        "internal detail leaked: {body}"
    );

    let (status, body) = post(
        &stack,
        "/v1/users",
        &Identity::new().registration(&unique_username("down"), "password123", 2, 0),
    )
    .await;
    assert_eq!((status, error_code(&body)), (503, "unavailable"));
    let (status, _) = get_auth(&stack, "/v1/keys/count", &alice.access).await;
    assert_eq!(
        status, 503,
        "an unverifiable revocation must not let the token through"
    );
    let after = stack.items("users").await.len();
    assert_eq!(
        before, after,
        "a registration was half-written while Redis was down"
    );
}
