//! What a stack whose Redis stopped answering must do, shared by the single-node and the cluster
//! outage tests.

use crate::client::{error_code, get_auth, post, unique_username, Identity};
use crate::{Stack, User};

/// `/healthz` answers 503 `unavailable` without internal detail (`hidden`, e.g. the dead port,
/// must not appear), a registration is refused with nothing written (`users_before` items in the
/// users table), and `user`'s token is refused because its revocation cannot be checked.
pub async fn assert_redis_outage(stack: &Stack, user: &User, users_before: usize, hidden: &str) {
    let r = stack.http.get(stack.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(error_code(&body), "unavailable");
    assert!(
        !body.to_string().contains(hidden),
        "internal detail leaked: {body}"
    );
    let (status, body) = post(
        stack,
        "/v1/users",
        &Identity::new().registration(&unique_username("down"), "password123", 2, 0),
    )
    .await;
    assert_eq!((status, error_code(&body)), (503, "unavailable"));
    let (status, _) = get_auth(stack, "/v1/keys/count", &user.access).await;
    assert_eq!(
        status, 503,
        "an unverifiable revocation must not let the token through"
    );
    assert_eq!(
        users_before,
        stack.items("users").await.len(),
        "a registration was half-written while Redis was down"
    );
}
