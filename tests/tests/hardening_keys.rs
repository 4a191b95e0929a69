//! Issue 12, findings 5, 8 and 12, over real HTTP: keys no private key stands behind are
//! refused, throwaway accounts cannot drain a target's one-time keys, stored keys are capped and
//! uploads and username lookups are rate-limited.

use std::time::Duration;

use curve25519_dalek::edwards::EdwardsPoint;
use curve25519_dalek::montgomery::MontgomeryPoint;
use curve25519_dalek::scalar::Scalar;
use relay_tests::client::{
    assert_rate_limited, ec_key, error_code, get_auth, post, unique_username, Identity,
};
use relay_tests::devices::{device_bundle, link_with_keys};
use relay_tests::{Stack, User};
use serde_json::{json, Value};
use sha2::{Digest, Sha512};
use shared::validation::encode;

/// 0x05 ‖ u.
fn ec_with_u(u: [u8; 32]) -> Vec<u8> {
    let mut k = vec![5u8];
    k.extend_from_slice(&u);
    k
}

/// p = 2^255 - 19, little-endian.
fn p() -> [u8; 32] {
    let mut p = [0xFF; 32];
    p[0] = 0xED;
    p[31] = 0x7F;
    p
}

fn u_small(n: u8) -> [u8; 32] {
    let mut u = [0u8; 32];
    u[0] = n;
    u
}

/// A signature "by" the all-zero identity key over `message`, made without any private key:
/// that key's Edwards point A has order 2, so with s = 0 the check s·B − h·A = R holds for
/// R = identity when h is even and for R = A when h is odd. `None` for the one message in four
/// where neither parity lines up.
fn forge_for_zero_identity(message: &[u8]) -> Option<Vec<u8>> {
    let a = MontgomeryPoint([0; 32]).to_edwards(0)?;
    let cap_a = a.compress();
    for cap_r in [EdwardsPoint::default().compress(), cap_a] {
        let h = Scalar::from_hash(
            Sha512::new()
                .chain_update(cap_r.as_bytes())
                .chain_update(cap_a.as_bytes())
                .chain_update(message),
        );
        if EdwardsPoint::vartime_double_scalar_mul_basepoint(&h, &-a, &Scalar::ZERO).compress()
            == cap_r
        {
            let mut sig = cap_r.as_bytes().to_vec();
            sig.extend_from_slice(&[0; 32]);
            return Some(sig);
        }
    }
    None
}

async fn register(stack: &Stack, body: &Value) -> (u16, Value) {
    post(stack, "/v1/users", body).await
}

/// Asserts a 400 `invalid_request` whose message names `field`.
fn assert_refused(status: u16, body: &Value, field: &str) {
    assert_eq!(status, 400, "{field}: {body}");
    assert_eq!(error_code(body), "invalid_request", "{field}: {body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains(field), "{field}: {message}");
}

/// Registers with `body` and asserts the refusal naming `field`; returns the reply.
async fn refused_registration(stack: &Stack, body: &Value, field: &str) -> Value {
    let (status, b) = register(stack, body).await;
    assert_refused(status, &b, field);
    b
}

/// Uploads `body` as `user` and asserts the refusal naming `field`.
async fn refused_upload(stack: &Stack, user: &User, body: &Value, field: &str) {
    let (status, b) = user.put_keys(stack, body).await;
    assert_refused(status, &b, field);
}

/// Uploads `key`, signed by `user`, as its new signed prekey and asserts the refusal.
async fn refused_signed_prekey_upload(stack: &Stack, user: &User, key: &[u8]) {
    let body = json!({"signed_prekey": user.identity.signed(2, key)});
    refused_upload(stack, user, &body, "signed_prekey.public_key").await;
}

#[tokio::test]
async fn a_signature_forged_for_the_all_zero_identity_key_is_refused() {
    let stack = Stack::start().await;
    let id = Identity::new();
    let (spk, sig) = loop {
        let spk = ec_key();
        if let Some(sig) = forge_for_zero_identity(&spk) {
            break (spk, sig);
        }
    };
    let mut body = id.registration(&unique_username("zero"), "password123", 2, 0);
    body["identity_key"] = json!(encode(&ec_with_u([0; 32])));
    body["signed_prekey"] =
        json!({"key_id": 1, "public_key": encode(&spk), "signature": encode(&sig)});
    body.as_object_mut()
        .unwrap()
        .remove("kyber_last_resort_prekey");
    let b = refused_registration(&stack, &body, "identity_key").await;
    assert!(b["error"]["message"]
        .as_str()
        .unwrap()
        .contains("low-order"));
}

#[tokio::test]
async fn identity_keys_that_are_not_usable_points_are_refused() {
    let stack = Stack::start().await;
    let id = Identity::new();
    // The real key with bit 255 set: X25519 ignores that bit, so the real signatures verified
    // against this second encoding of the key.
    let mut high: [u8; 32] = id.pair.public_key()[1..].try_into().unwrap();
    high[31] |= 0x80;
    let mut p_minus_one = p();
    p_minus_one[0] = 0xEC;
    let mut order_8 = [0u8; 32];
    order_8.copy_from_slice(
        &(0..32)
            .map(|i| {
                u8::from_str_radix(
                    &"e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"
                        [2 * i..2 * i + 2],
                    16,
                )
                .unwrap()
            })
            .collect::<Vec<_>>(),
    );
    for (u, says) in [
        (high, "top bit"),
        ([0; 32], "low-order"),
        (u_small(1), "low-order"),
        (order_8, "low-order"),
        (p_minus_one, "low-order"),
        (p(), "not reduced"),
        (u_small(2), "not a point on Curve25519"),
    ] {
        let mut body = id.registration(&unique_username("bad"), "password123", 2, 1);
        body["identity_key"] = json!(encode(&ec_with_u(u)));
        let b = refused_registration(&stack, &body, "identity_key").await;
        assert!(
            b["error"]["message"].as_str().unwrap().contains(says),
            "{says}: {b}"
        );
    }
    // The same identity, encoded canonically, is fine.
    let body = id.registration(&unique_username("good"), "password123", 2, 1);
    assert_eq!(register(&stack, &body).await.0, 200);
}

#[tokio::test]
async fn a_signed_prekey_equal_to_the_identity_key_is_refused() {
    let stack = Stack::start().await;
    let id = Identity::new();
    let own = id.pair.public_key();
    let mut body = id.registration(&unique_username("same"), "password123", 2, 0);
    body["signed_prekey"] = id.signed(1, &own);
    refused_registration(&stack, &body, "signed_prekey.public_key").await;

    let user = User::create(&stack, 2, 0).await;
    let own = user.identity.pair.public_key();
    refused_signed_prekey_upload(&stack, &user, &own).await;
    refused_upload(
        &stack,
        &user,
        &json!({"one_time_prekeys": [{"key_id": 50, "public_key": encode(&own)}]}),
        "one_time_prekeys[0].public_key",
    )
    .await;
    assert_eq!(user.counts(&stack).await, (2, 0));
}

#[tokio::test]
async fn low_order_signed_and_one_time_keys_are_refused() {
    let stack = Stack::start().await;
    let id = Identity::new();
    let zero = ec_with_u([0; 32]);
    let mut body = id.registration(&unique_username("otk"), "password123", 3, 0);
    body["one_time_prekeys"][1]["public_key"] = json!(encode(&zero));
    refused_registration(&stack, &body, "one_time_prekeys[1].public_key").await;
    let mut body = id.registration(&unique_username("spk"), "password123", 3, 0);
    body["signed_prekey"] = id.signed(1, &zero);
    refused_registration(&stack, &body, "signed_prekey.public_key").await;

    let user = User::create(&stack, 2, 0).await;
    let mut keys = user.identity.one_time(10..13);
    keys[2]["public_key"] = json!(encode(&ec_with_u(u_small(1))));
    refused_upload(
        &stack,
        &user,
        &json!({"one_time_prekeys": keys}),
        "one_time_prekeys[2].public_key",
    )
    .await;
    refused_signed_prekey_upload(&stack, &user, &zero).await;
    assert_eq!(user.counts(&stack).await, (2, 0), "nothing was stored");
}

/// Logs `user` in again (after the clock moved past its access token's lifetime).
async fn log_in_again(stack: &Stack, user: &mut User) {
    user.access = user.log_in(stack).await.0;
}

#[tokio::test]
async fn throwaway_accounts_cannot_drain_a_targets_one_time_keys() {
    let stack = Stack::with_env(&[
        ("RATE_LIMIT_BUNDLE_TARGET_NEW", "3/3600"),
        ("RATE_LIMIT_BUNDLE_TARGET", "5/3600"),
        ("NEW_ACCOUNT_AGE_SECS", "86400"),
    ])
    .await;
    let mut bob = User::create(&stack, 10, 0).await;
    let mut veteran = User::create(&stack, 1, 0).await;
    // The veteran's account ages past NEW_ACCOUNT_AGE_SECS (default one day).
    stack.advance(Duration::from_secs(86_400 + 1));
    log_in_again(&stack, &mut veteran).await;
    log_in_again(&stack, &mut bob).await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let throwaway = User::create(&stack, 1, 0).await;
        for _ in 0..2 {
            let r = stack
                .http
                .get(stack.url(&format!("/v1/users/{}/bundle", bob.user_id)))
                .bearer_auth(&throwaway.access)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            if status == 429 {
                assert_rate_limited(r, 3600).await;
            }
            statuses.push(status);
        }
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429, 429, 429, 429]);
    assert_eq!(
        bob.counts(&stack).await.0,
        7,
        "new accounts took only 3 keys"
    );

    // Established accounts have their own budget, untouched by the throwaways.
    let mut got = Vec::new();
    for _ in 0..6 {
        got.push(veteran.bundle_of(&stack, &bob.user_id).await.0);
    }
    assert_eq!(got, [200, 200, 200, 200, 200, 429]);
    assert_eq!(
        bob.counts(&stack).await.0,
        2,
        "the target still has keys for the next contact"
    );
    // Another target is not affected by bob's empty buckets.
    let carol = User::create(&stack, 1, 0).await;
    assert_eq!(veteran.bundle_of(&stack, &carol.user_id).await.0, 200);
}

#[tokio::test]
async fn stored_one_time_keys_are_capped_per_kind() {
    let stack = Stack::with_env(&[("MAX_ONE_TIME_PREKEYS", "100")]).await;
    let user = User::create(&stack, 100, 0).await;
    let alice = User::create(&stack, 1, 0).await;
    let put = |body: Value| {
        let (stack, user) = (&stack, &user);
        async move { user.put_keys(stack, &body).await }
    };
    let (status, b) = put(json!({"one_time_prekeys": user.identity.one_time(500..501)})).await;
    assert_refused(status, &b, "one_time_prekeys");
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("would exceed the limit of 100"),
        "{b}"
    );
    assert_eq!(user.counts(&stack).await, (100, 0));
    // The other kind has its own room, and rotating the signed prekey is never blocked.
    let (status, b) =
        put(json!({"kyber_one_time_prekeys": user.identity.kyber_one_time(600..700)})).await;
    assert_eq!(
        (status, &b["kyber_one_time_prekeys"]),
        (200, &json!(100)),
        "{b}"
    );
    let (status, b) =
        put(json!({"kyber_one_time_prekeys": user.identity.kyber_one_time(700..701)})).await;
    assert_refused(status, &b, "kyber_one_time_prekeys");
    let (status, b) = put(json!({"signed_prekey": user.identity.signed(7, &ec_key())})).await;
    assert_eq!(status, 200, "{b}");
    // A fetched key makes room for one more.
    assert_eq!(alice.bundle_of(&stack, &user.user_id).await.0, 200);
    let (status, b) = put(json!({"one_time_prekeys": user.identity.one_time(500..501)})).await;
    assert_eq!((status, &b["one_time_prekeys"]), (200, &json!(100)), "{b}");
}

#[tokio::test]
async fn key_uploads_are_rate_limited_per_user() {
    let stack = Stack::with_env(&[("RATE_LIMIT_KEYS_UPLOAD", "3/3600")]).await;
    let user = User::create(&stack, 1, 0).await;
    let other = User::create(&stack, 1, 0).await;
    for i in 0..3 {
        let (status, b) = user
            .put_keys(
                &stack,
                &json!({"one_time_prekeys": user.identity.one_time(10 * i + 10..10 * i + 12)}),
            )
            .await;
        assert_eq!(status, 200, "upload {i}: {b}");
    }
    let r = stack
        .http
        .put(stack.url("/v1/keys"))
        .bearer_auth(&user.access)
        .json(&json!({"one_time_prekeys": user.identity.one_time(90..91)}))
        .send()
        .await
        .unwrap();
    assert_rate_limited(r, 3600).await;
    assert_eq!(
        user.counts(&stack).await,
        (7, 0),
        "the refused upload stored nothing"
    );
    let (status, _) = other
        .put_keys(
            &stack,
            &json!({"one_time_prekeys": other.identity.one_time(10..11)}),
        )
        .await;
    assert_eq!(status, 200, "another user has its own bucket");
}

#[tokio::test]
async fn username_lookups_are_rate_limited_per_requester() {
    let stack = Stack::with_env(&[("RATE_LIMIT_LOOKUP", "3/3600")]).await;
    let (alice, bob) = User::pair(&stack).await;
    let lookup = |who: &User, name: &str| {
        let request = stack
            .http
            .get(stack.url("/v1/users"))
            .query(&[("username", name)])
            .bearer_auth(&who.access);
        async move { request.send().await.unwrap() }
    };
    // Found, not found and invalid names all cost the same.
    let mut statuses = Vec::new();
    for name in [
        bob.username.as_str(),
        "nobody_here_at_all",
        "x",
        bob.username.as_str(),
    ] {
        statuses.push(lookup(&alice, name).await.status().as_u16());
    }
    assert_eq!(statuses, [200, 404, 404, 429]);
    let r = lookup(&alice, &bob.username).await;
    assert_rate_limited(r, 3600).await;
    let (status, b) = get_auth(
        &stack,
        &format!("/v1/users?username={}", alice.username),
        &bob.access,
    )
    .await;
    assert_eq!((status, &b["user_id"]), (200, &json!(alice.user_id)));
}

/// The bundle limits at their defaults (an empty variable is unset), the others out of the way.
const DEFAULT_BUNDLE_LIMITS: [(&str, &str); 5] = [
    ("RATE_LIMIT_BUNDLE", ""),
    ("RATE_LIMIT_BUNDLE_PAIR", ""),
    ("RATE_LIMIT_BUNDLE_TARGET", ""),
    ("RATE_LIMIT_BUNDLE_TARGET_NEW", ""),
    // The default age (tests/limits-off.env counts no account as new).
    ("NEW_ACCOUNT_AGE_SECS", "86400"),
];

/// A user with six devices (the default `MAX_DEVICES`), `keys` one-time prekeys each.
async fn six_devices(stack: &Stack, keys: u32) -> User {
    let user = User::create(stack, keys, 0).await;
    for registration_id in 2..=6 {
        link_with_keys(stack, &user, registration_id, keys, 0).await;
    }
    user
}

/// `requester` fetches `target`'s bundles on all three routes at once (device 1's, device 2's,
/// every device's): the statuses.
async fn first_contact(stack: &Stack, requester: &str, target: &str) -> Vec<u16> {
    let single_path = format!("/v1/users/{target}/bundle");
    let (single, one, all) = tokio::join!(
        get_auth(stack, &single_path, requester),
        device_bundle(stack, requester, target, "2"),
        device_bundle(stack, requester, target, "*"),
    );
    vec![single.0, one.0, all.0]
}

/// 20 concurrent every-device fetches of `target` by `hammer`, twice over, the second round
/// beside `victim`'s first contact: the victim gets through, and the hammer got 3 fetches.
async fn hammer_beside_first_contact(stack: &Stack, hammer: &str, victim: &str, target: &str) {
    let round =
        || futures::future::join_all((0..20).map(|_| device_bundle(stack, hammer, target, "*")));
    let first = round().await;
    let (second, contact) = tokio::join!(round(), first_contact(stack, victim, target));
    assert_eq!(
        contact,
        [200, 200, 200],
        "the other requester is locked out"
    );
    let statuses: Vec<u16> = first.iter().chain(&second).map(|(s, _)| *s).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        3,
        "one requester's share: {statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| [200, 429].contains(s)),
        "{statuses:?}"
    );
}

#[tokio::test]
async fn one_established_requester_hammering_cannot_lock_others_out_of_a_targets_bundles() {
    let stack = Stack::with_env(&DEFAULT_BUNDLE_LIMITS).await;
    let bob = six_devices(&stack, 20).await;
    let (mut hammer, mut victim) = User::pair(&stack).await;
    stack.advance(Duration::from_secs(86_400 + 1));
    log_in_again(&stack, &mut hammer).await;
    log_in_again(&stack, &mut victim).await;
    hammer_beside_first_contact(&stack, &hammer.access, &victim.access, &bob.user_id).await;
}

#[tokio::test]
async fn one_new_account_hammering_cannot_lock_other_new_accounts_out_of_a_targets_bundles() {
    let stack = Stack::with_env(&DEFAULT_BUNDLE_LIMITS).await;
    let bob = six_devices(&stack, 20).await;
    let (throwaway, newcomer) = User::pair(&stack).await;
    hammer_beside_first_contact(&stack, &throwaway.access, &newcomer.access, &bob.user_id).await;
}

#[tokio::test]
async fn fetches_refused_for_exhausted_keys_leave_the_targets_budget_to_its_next_contact() {
    let stack = Stack::with_env(&DEFAULT_BUNDLE_LIMITS).await;
    let bob = User::create(&stack, 1, 0).await;
    let first = User::create(&stack, 1, 0).await;
    assert_eq!(first.bundle_of(&stack, &bob.user_id).await.0, 200);
    // Bob's only key is gone: four new accounts try three times each on both routes, more
    // than the new accounts' budget of 10 holds. Each is told the keys are gone, every time.
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let late = User::create(&stack, 1, 0).await;
        for route in ["single", "*", "1"] {
            let (status, body) = match route {
                "single" => late.bundle_of(&stack, &bob.user_id).await,
                which => device_bundle(&stack, &late.access, &bob.user_id, which).await,
            };
            if status == 412 {
                assert_eq!(error_code(&body), "prekeys_exhausted", "{body}");
            }
            statuses.push(status);
        }
    }
    assert_eq!(statuses, [412; 12], "refused fetches spent the budget");
    // Bob's client refills; the next new contact is served.
    let (status, b) = bob
        .put_keys(
            &stack,
            &json!({"one_time_prekeys": bob.identity.one_time(100..105)}),
        )
        .await;
    assert_eq!(status, 200, "{b}");
    let next = User::create(&stack, 1, 0).await;
    assert_eq!(next.bundle_of(&stack, &bob.user_id).await.0, 200);
}
