//! Accounts and sessions over real HTTP (and WebSocket where a token is tried there): login,
//! refresh rotation and its grace window, logout, lookup, deletion and their limits, and what a
//! hostile user or a bad network does to them, with real concurrency.

use std::time::{Duration, Instant};

use base64::Engine;
use futures::future::join_all;
use rand::Rng;
use relay_tests::client::{
    assert_rate_limited, assert_retry_after, delete_auth, error_code, get_auth, login,
    login_response, post, refresh, unique_username, Identity, Ws,
};
use relay_tests::{Stack, User};
use serde_json::{json, Value};

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
    let alice = User::builder(&stack).create().await;
    let stranger = User::builder(&other).create().await;
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
    let alice = User::builder(&stack).create().await;
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
    let alice = User::builder(&stack).create().await;
    stack.advance(Duration::from_secs(61));
    let (s, body) = refresh(&stack, &alice.refresh).await;
    assert_eq!((s, error_code(&body)), (401, "unauthorized"), "{body}");
}

#[tokio::test]
async fn refresh_rotates_and_reuse_revokes_the_session() {
    let stack = Stack::start().await;
    let alice = User::builder(&stack).create().await;
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
    let alice = User::builder(&stack).create().await;
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
    let alice = User::builder(&stack).create().await;
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
    let alice = User::builder(&stack).create().await;
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
    let alice = User::builder(&stack)
        .one_time_prekeys(3)
        .kyber_one_time_prekeys(2)
        .create()
        .await;
    let bob = User::builder(&stack).create().await;
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

// ---------------------------------------------------------------------------------------------
// Races and abuse: logins racing deletion, guessing, concurrent and late refreshes
// ---------------------------------------------------------------------------------------------

fn field<'a>(body: &'a Value, name: &str) -> &'a str {
    body[name]
        .as_str()
        .unwrap_or_else(|| panic!("no {name} in {body}"))
}

/// A login whose password check is still running while `DELETE /v1/users/me`
/// executes must not leave a working session behind. Each round starts the login, waits a random
/// part of a login's duration (so the rounds sweep the whole window), then deletes the account.
/// Afterwards no token of the user works anywhere: HTTP, WebSocket, refresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn login_racing_account_deletion_leaves_no_working_token() {
    // Spec Argon2 parameters: the race window is the hashing time.
    let stack = Stack::with_env(&[("ARGON2_M_KIB", "19456"), ("ARGON2_T", "2")]).await;
    let probe = User::builder(&stack).create().await;
    let started = Instant::now();
    assert_eq!(login(&stack, &probe.username, &probe.password).await.0, 200);
    let login_time = started.elapsed();
    let (mut raced_in, rounds) = (0, 24);
    for round in 0..rounds {
        let user = User::builder(&stack).create().await;
        let delay = login_time.mul_f64(rand::thread_rng().gen_range(0.0..1.3));
        let racing_login = login(&stack, &user.username, &user.password);
        let deletion = async {
            tokio::time::sleep(delay).await;
            delete_auth(&stack, "/v1/users/me", &user.access).await
        };
        let ((status, tokens), deleted) = tokio::join!(racing_login, deletion);
        assert_eq!(deleted, 204, "round {round}");
        let mut accesses = vec![user.access.clone()];
        let mut refreshes = vec![user.refresh.clone()];
        if status == 200 {
            raced_in += 1;
            accesses.push(field(&tokens, "access_token").to_string());
            refreshes.push(field(&tokens, "refresh_token").to_string());
        } else {
            assert_eq!(
                (status, error_code(&tokens)),
                (401, "invalid_credentials"),
                "round {round}"
            );
        }
        for access in &accesses {
            let (s, b) = get_auth(&stack, "/v1/keys/count", access).await;
            assert_eq!(s, 401, "round {round}: a deleted user's token works: {b}");
            let (s, _) = get_auth(
                &stack,
                &format!("/v1/users/{}/bundle", probe.user_id),
                access,
            )
            .await;
            assert_eq!(s, 401, "round {round}: a deleted user fetched a bundle");
            assert_eq!(
                Ws::connect(&stack.ws_url(access)).await.err(),
                Some(401),
                "round {round}: a deleted user's WebSocket handshake passed"
            );
        }
        for token in &refreshes {
            let (s, b) = refresh(&stack, token).await;
            assert_eq!(s, 401, "round {round}: a deleted user refreshed: {b}");
        }
    }
    eprintln!("{raced_in} of {rounds} racing logins got a session");
    // Some logins must have got in before the deletion, or the race was never run.
    assert!(raced_in > 0, "no login won the race in {rounds} rounds");
    let (s, _) = login(&stack, &probe.username, &probe.password).await;
    assert_eq!(s, 200, "an unrelated account was touched");
}

/// N concurrent wrong-password logins against a failure bucket of k: at most k are
/// evaluated (401), the others are refused before any password check (429).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_wrong_passwords_evaluate_at_most_the_bucket() {
    const K: usize = 3;
    const N: usize = 24;
    for round in 0..3 {
        let stack = Stack::with_env(&[("RATE_LIMIT_LOGIN_FAILURES", &format!("{K}/3600"))]).await;
        let user = User::builder(&stack).create().await;
        let guesses: Vec<String> = (0..N).map(|i| format!("wrong {i}")).collect();
        let replies = join_all(guesses.iter().map(|g| login(&stack, &user.username, g))).await;
        let evaluated = replies.iter().filter(|(s, _)| *s == 401).count();
        let limited = replies.iter().filter(|(s, _)| *s == 429).count();
        assert_eq!(evaluated + limited, N, "round {round}: {replies:?}");
        assert!(
            (1..=K).contains(&evaluated),
            "round {round}: {evaluated} wrong passwords evaluated with a bucket of {K}"
        );
    }
}

/// The same per username, from one IP whose own bucket is off: a guesser spreading
/// over many addresses meets it too. It counts the name case-insensitively, refuses the right
/// password too while empty (the point of a backoff), and leaves other users alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failed_logins_back_off_per_username() {
    const K: usize = 4;
    let stack = Stack::with_env(&[("RATE_LIMIT_LOGIN_FAILURES_USER", &format!("{K}/3600"))]).await;
    let (alice, bob) = User::pair(&stack).await;
    let shouted = alice.username.to_uppercase();
    let replies = join_all((0..16).map(|i| {
        let name = if i % 2 == 0 {
            &alice.username
        } else {
            &shouted
        };
        login(&stack, name, "not the password")
    }))
    .await;
    let evaluated = replies.iter().filter(|(s, _)| *s == 401).count();
    assert!(
        (1..=K).contains(&evaluated),
        "{evaluated} guesses at one username evaluated with a bucket of {K}"
    );
    let r = login_response(&stack, &alice.username, &alice.password).await;
    assert_eq!(r.status(), 429, "the backoff let a login through");
    assert_retry_after(&r, 900);
    assert_eq!(login(&stack, &bob.username, &bob.password).await.0, 200);
    assert_eq!(login(&stack, &bob.username, "wrong").await.0, 401);
}

/// Backward compatibility: a successful login gives its token back, so an owner who
/// mistyped once can log in any number of times and the failures still count as before.
#[tokio::test]
async fn successful_logins_give_their_token_back() {
    let stack = Stack::with_env(&[("RATE_LIMIT_LOGIN_FAILURES", "2/3600")]).await;
    let alice = User::builder(&stack).create().await;
    assert_eq!(login(&stack, &alice.username, "typo").await.0, 401);
    for i in 0..6 {
        let (s, b) = login(&stack, &alice.username, &alice.password).await;
        assert_eq!(s, 200, "login {i}: {b}");
    }
    assert_eq!(login(&stack, &alice.username, "typo").await.0, 401);
    let (s, b) = login(&stack, &alice.username, &alice.password).await;
    assert_eq!((s, error_code(&b)), (429, "rate_limited"));
}

/// Several refreshes with one token at the same moment (a retry over a flaky
/// network) all get the same new pair and the session lives on; repeated for reliability.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_refreshes_with_one_token_keep_the_session() {
    let stack = Stack::start().await;
    let alice = User::builder(&stack).create().await;
    let mut token = alice.refresh.clone();
    for round in 0..12 {
        let replies = join_all((0..4).map(|_| refresh(&stack, &token))).await;
        for (s, b) in &replies {
            assert_eq!(*s, 200, "round {round}: a concurrent refresh failed: {b}");
        }
        let next = field(&replies[0].1, "refresh_token").to_string();
        assert!(
            replies
                .iter()
                .all(|(_, b)| field(b, "refresh_token") == next),
            "round {round}: different successors: {replies:?}"
        );
        assert_ne!(next, token, "round {round}: not rotated");
        for (_, b) in &replies {
            let (s, _) = get_auth(&stack, "/v1/keys/count", field(b, "access_token")).await;
            assert_eq!(
                s, 200,
                "round {round}: an access token of the pair is refused"
            );
        }
        token = next;
    }
    let (s, b) = refresh(&stack, &token).await;
    assert_eq!(s, 200, "the session did not survive: {b}");
}

/// The grace window is short and only for the token rotated away last: after the
/// window that token is reuse again, and an older one is reuse at once; both end the session.
#[tokio::test]
async fn reuse_after_the_grace_window_or_of_older_tokens_still_revokes() {
    let stack = Stack::start().await;
    let grace = stack.config.jwt.refresh_grace;
    assert_eq!(grace, Duration::from_secs(10), "the documented default");
    let alice = User::builder(&stack).create().await;

    // The previous token, again within the window: the same successor, a working access token.
    // The gateway's clock is real time plus what the test adds, and the window is counted in
    // whole seconds: half the window leaves seconds of slack for a slow machine.
    let (s, first) = refresh(&stack, &alice.refresh).await;
    assert_eq!(s, 200, "{first}");
    stack.advance(grace / 2);
    let (s, again) = refresh(&stack, &alice.refresh).await;
    assert_eq!(s, 200, "{again}");
    assert_eq!(
        field(&again, "refresh_token"),
        field(&first, "refresh_token")
    );
    let (s, _) = get_auth(&stack, "/v1/keys/count", field(&again, "access_token")).await;
    assert_eq!(s, 200);
    // After the window: reuse, and the whole session ends.
    stack.advance(grace / 2 + Duration::from_secs(1));
    let (s, b) = refresh(&stack, &alice.refresh).await;
    assert_eq!((s, error_code(&b)), (401, "unauthorized"));
    let (s, _) = refresh(&stack, field(&first, "refresh_token")).await;
    assert_eq!(
        s, 401,
        "the session survived a reuse after the grace window"
    );
    for access in [&alice.access, field(&first, "access_token")] {
        assert_eq!(get_auth(&stack, "/v1/keys/count", access).await.0, 401);
    }

    // Two rotations within a window: the oldest token is not the previous one, so it is reuse.
    let (s, t0) = login(&stack, &alice.username, &alice.password).await;
    assert_eq!(s, 200);
    let (_, t1) = refresh(&stack, field(&t0, "refresh_token")).await;
    let (s, t2) = refresh(&stack, field(&t1, "refresh_token")).await;
    assert_eq!(s, 200, "{t2}");
    let (s, _) = refresh(&stack, field(&t0, "refresh_token")).await;
    assert_eq!(s, 401, "a token two rotations old was honoured");
    let (s, _) = refresh(&stack, field(&t2, "refresh_token")).await;
    assert_eq!(s, 401, "the session survived the reuse of an older token");
    assert_eq!(
        get_auth(&stack, "/v1/keys/count", field(&t2, "access_token"))
            .await
            .0,
        401
    );
}

/// `REFRESH_GRACE_SECS=0` turns the window off: the previous token is reuse at once.
#[tokio::test]
async fn a_zero_grace_window_is_strict_rotation() {
    let stack = Stack::with_env(&[("REFRESH_GRACE_SECS", "0")]).await;
    let alice = User::builder(&stack).create().await;
    let (s, first) = refresh(&stack, &alice.refresh).await;
    assert_eq!(s, 200);
    assert_eq!(refresh(&stack, &alice.refresh).await.0, 401);
    assert_eq!(refresh(&stack, field(&first, "refresh_token")).await.0, 401);
}
