//! The key directory over real HTTP: registration, bundles, uploads, counts and bad input; keys
//! no private key stands behind are refused, throwaway accounts cannot drain a target's one-time
//! keys, stored keys are capped, and uploads and username lookups are rate-limited.

use std::collections::HashSet;
use std::time::Duration;

use curve25519_dalek::edwards::EdwardsPoint;
use curve25519_dalek::montgomery::MontgomeryPoint;
use curve25519_dalek::scalar::Scalar;
use relay_tests::client::{
    self, assert_rate_limited, ec_key, error_code, get_auth, post, put_auth, unique_username,
    Identity,
};
use relay_tests::devices::{device_bundle, link_with_keys};
use relay_tests::{Stack, User};
use serde_json::{json, Value};
use sha2::{Digest, Sha512};
use shared::validation::encode;

#[tokio::test]
async fn bundle_has_identity_signed_and_one_time_prekey_which_is_then_gone() {
    let stack = Stack::start().await;
    let alice = User::builder(&stack).create().await;
    let bob = User::builder(&stack)
        .one_time_prekeys(2)
        .kyber_one_time_prekeys(1)
        .create()
        .await;
    assert_eq!(bob.counts(&stack).await, (2, 1));
    let (status, b) = alice.bundle_of(&stack, &bob.user_id).await;
    assert_eq!(status, 200, "{b}");
    assert_eq!(b["user_id"], bob.user_id.as_str());
    assert_eq!(b["registration_id"], 1234);
    assert_eq!(b["identity_key"], bob.identity.public());
    assert_eq!(b["signed_prekey"]["key_id"], 1);
    assert!(b["signed_prekey"]["signature"].as_str().unwrap().len() == 88);
    let first = b["one_time_prekey"]["key_id"].as_u64().unwrap();
    assert!((1..=2).contains(&first));
    assert_eq!(b["kyber_prekey"]["key_id"], 100, "Kyber one-time key first");
    assert_eq!(bob.counts(&stack).await, (1, 0));
    let (status, b2) = alice.bundle_of(&stack, &bob.user_id).await;
    assert_eq!(status, 200);
    assert_ne!(
        b2["one_time_prekey"]["key_id"].as_u64().unwrap(),
        first,
        "a consumed key came back"
    );
    assert_eq!(
        b2["kyber_prekey"]["key_id"], 9000,
        "last-resort Kyber key once one-time ones are gone"
    );
    let (status, b3) = alice.bundle_of(&stack, &bob.user_id).await;
    assert_eq!(status, 412, "{b3}");
    assert_eq!(error_code(&b3), "prekeys_exhausted");
    assert_eq!(bob.counts(&stack).await, (0, 0));
}

#[tokio::test]
async fn unknown_user_is_404_and_registration_without_keys_is_400() {
    let stack = Stack::start().await;
    let alice = User::builder(&stack).create().await;
    let (status, b) = alice
        .bundle_of(&stack, &uuid::Uuid::new_v4().to_string())
        .await;
    assert_eq!((status, error_code(&b)), (404, "user_not_found"));
    let (status, b) = alice.bundle_of(&stack, "not-a-uuid").await;
    assert_eq!((status, error_code(&b)), (404, "user_not_found"));
    let id = Identity::new();
    for missing in [
        "identity_key",
        "signed_prekey",
        "one_time_prekeys",
        "username",
        "password",
    ] {
        let mut body = id.registration(&unique_username("m"), "password123", 3, 0);
        body.as_object_mut().unwrap().remove(missing);
        let (status, b) = post(&stack, "/v1/users", &body).await;
        assert_eq!(status, 400, "without {missing}: {b}");
        assert_eq!(error_code(&b), "invalid_request");
        assert!(
            b["error"]["message"].as_str().unwrap().contains(missing),
            "{b}"
        );
    }
    let mut body = id.registration(&unique_username("m"), "password123", 3, 0);
    body["one_time_prekeys"] = json!([]);
    assert_eq!(post(&stack, "/v1/users", &body).await.0, 400);
}

#[tokio::test]
async fn forty_concurrent_fetches_of_twenty_five_keys() {
    let stack = Stack::start().await;
    let bob = User::builder(&stack).one_time_prekeys(25).create().await;
    let alice = User::builder(&stack).create().await;
    let results =
        futures::future::join_all((0..40).map(|_| alice.bundle_of(&stack, &bob.user_id))).await;
    let ok: Vec<&Value> = results
        .iter()
        .filter(|(s, _)| *s == 200)
        .map(|(_, b)| b)
        .collect();
    let exhausted = results
        .iter()
        .filter(|(s, b)| *s == 412 && error_code(b) == "prekeys_exhausted")
        .count();
    let ids: HashSet<u64> = ok
        .iter()
        .map(|b| b["one_time_prekey"]["key_id"].as_u64().unwrap())
        .collect();
    assert_eq!(
        ok.len(),
        25,
        "statuses: {:?}",
        results.iter().map(|r| r.0).collect::<Vec<_>>()
    );
    assert_eq!(ids.len(), 25, "a one-time prekey was handed out twice");
    assert_eq!(exhausted, 15);
    assert_eq!(bob.counts(&stack).await, (0, 0));
}

#[tokio::test]
async fn ten_concurrent_registrations_of_one_username() {
    let stack = Stack::start().await;
    let name = unique_username("race");
    let bodies: Vec<Value> = (0..10)
        .map(|_| Identity::new().registration(&name, "password123", 5, 2))
        .collect();
    let results =
        futures::future::join_all(bodies.iter().map(|b| post(&stack, "/v1/users", b))).await;
    let won: Vec<&Value> = results
        .iter()
        .filter(|(s, _)| *s == 200)
        .map(|(_, b)| b)
        .collect();
    let taken = results
        .iter()
        .filter(|(s, b)| *s == 409 && error_code(b) == "username_taken")
        .count();
    assert_eq!((won.len(), taken), (1, 9), "{results:?}");
    // Only the winner's keys exist: the losers left nothing behind.
    let scan = stack.items("keys").await;
    let owners: HashSet<String> = scan
        .iter()
        .map(|i| i["pk"].as_s().unwrap().to_string())
        .collect();
    assert_eq!(
        owners,
        HashSet::from([won[0]["user_id"].as_str().unwrap().to_string()])
    );
    assert_eq!(scan.len(), 1 + 5 + 2);
    // Case-insensitive: the upper-case form is the same name.
    let (status, _) = post(
        &stack,
        "/v1/users",
        &Identity::new().registration(&name.to_uppercase(), "password123", 1, 0),
    )
    .await;
    assert_eq!(status, 409);
}

async fn stored_items(stack: &Stack) -> (usize, usize) {
    let users = stack.items("users").await.len();
    let keys = stack.items("keys").await.len();
    (users, keys)
}

#[tokio::test]
async fn bad_registrations_are_refused_and_store_nothing() {
    let stack = Stack::start().await;
    let id = Identity::new();
    let good = || id.registration(&unique_username("bad"), "password123", 3, 1);
    let mut cases: Vec<(&str, Value, &str)> = Vec::new();
    let mut v = good();
    let mut sig =
        shared::validation::base64("s", v["signed_prekey"]["signature"].as_str().unwrap()).unwrap();
    sig[10] ^= 1;
    v["signed_prekey"]["signature"] = json!(encode(&sig));
    cases.push(("bad signature", v, "invalid_signature"));
    let mut v = good();
    let other = Identity::new().signed(9000, &client::kyber_key());
    v["kyber_last_resort_prekey"] = other;
    cases.push(("kyber signed by another identity", v, "invalid_signature"));
    let mut v = good();
    v["one_time_prekeys"][1]["public_key"] = json!(encode(&[5u8; 32]));
    cases.push(("short key", v, "invalid_request"));
    let mut v = good();
    let mut k = client::ec_key();
    k[0] = 0x08;
    v["identity_key"] = json!(encode(&k));
    cases.push(("wrong prefix", v, "invalid_request"));
    let mut v = good();
    v["signed_prekey"]["public_key"] = json!("***not base64***");
    cases.push(("bad base64", v, "invalid_request"));
    let mut v = good();
    v["one_time_prekeys"] = json!(id.one_time(0..101));
    cases.push(("101 keys", v, "invalid_request"));
    let mut v = good();
    v["signed_prekey"]["key_id"] = json!(1u64 << 31);
    cases.push(("key id out of range", v, "invalid_request"));
    let mut v = good();
    v["username"] = json!("no spaces allowed");
    cases.push(("bad username", v, "invalid_request"));
    let mut v = good();
    v["password"] = json!("short");
    cases.push(("short password", v, "invalid_request"));
    for (what, body, code) in cases {
        let (status, b) = post(&stack, "/v1/users", &body).await;
        assert_eq!((status, error_code(&b)), (400, code), "{what}: {b}");
    }
    let r = stack
        .http
        .post(stack.url("/v1/users"))
        .header("content-type", "application/json")
        .body("{\"username\": ")
        .send()
        .await
        .unwrap();
    let (status, b) = client::status_json(r).await;
    assert_eq!((status, error_code(&b)), (400, "malformed_json"));
    let huge = json!({"username": "x".repeat(600 * 1024)});
    let (status, b) = post(&stack, "/v1/users", &huge).await;
    assert_eq!((status, error_code(&b)), (413, "payload_too_large"));
    assert_eq!(
        stored_items(&stack).await,
        (0, 0),
        "a refused registration left items behind"
    );
}

#[tokio::test]
async fn uploads_append_replace_and_validate() {
    let stack = Stack::start().await;
    let bob = User::builder(&stack).one_time_prekeys(2).create().await;
    let alice = User::builder(&stack).create().await;
    let up = json!({
        "one_time_prekeys": bob.identity.one_time(2..12),
        "kyber_one_time_prekeys": bob.identity.kyber_one_time(500..503),
        "signed_prekey": bob.identity.signed(2, &client::ec_key()),
    });
    let (status, b) = put_auth(&stack, "/v1/keys", &bob.access, &up).await;
    assert_eq!(status, 200, "{b}");
    // key id 2 was uploaded again: it overwrites rather than duplicates.
    assert_eq!(
        b,
        json!({"one_time_prekeys": 11, "kyber_one_time_prekeys": 3})
    );
    let (_, bundle) = alice.bundle_of(&stack, &bob.user_id).await;
    assert_eq!(
        bundle["signed_prekey"]["key_id"], 2,
        "signed prekey replaced"
    );
    assert!(bundle["kyber_prekey"]["key_id"].as_u64().unwrap() >= 500);

    let mut bad = json!({"one_time_prekeys": bob.identity.one_time(50..60), "kyber_one_time_prekeys": bob.identity.kyber_one_time(600..602)});
    let mut sig = shared::validation::base64(
        "s",
        bad["kyber_one_time_prekeys"][1]["signature"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    sig[63] ^= 0x80;
    bad["kyber_one_time_prekeys"][1]["signature"] = json!(encode(&sig));
    let (status, b) = put_auth(&stack, "/v1/keys", &bob.access, &bad).await;
    assert_eq!((status, error_code(&b)), (400, "invalid_signature"));
    let too_many = json!({"one_time_prekeys": bob.identity.one_time(1000..1101)});
    let (status, b) = put_auth(&stack, "/v1/keys", &bob.access, &too_many).await;
    assert_eq!((status, error_code(&b)), (400, "invalid_request"));
    let (status, b) = put_auth(&stack, "/v1/keys", &bob.access, &json!({})).await;
    assert_eq!((status, error_code(&b)), (400, "invalid_request"));
    assert_eq!(
        bob.counts(&stack).await,
        (10, 2),
        "a refused upload stored something"
    );
    let (status, _) = get_auth(&stack, "/v1/keys/count", "garbage").await;
    assert_eq!(status, 401);
}

// ---------------------------------------------------------------------------------------------
// Keys without a private key behind them, draining, caps and rate limits
// ---------------------------------------------------------------------------------------------

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

    let user = User::builder(&stack).one_time_prekeys(2).create().await;
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

    let user = User::builder(&stack).one_time_prekeys(2).create().await;
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
    let mut bob = User::builder(&stack).one_time_prekeys(10).create().await;
    let mut veteran = User::builder(&stack).create().await;
    // The veteran's account ages past NEW_ACCOUNT_AGE_SECS (default one day).
    stack.advance(Duration::from_secs(86_400 + 1));
    log_in_again(&stack, &mut veteran).await;
    log_in_again(&stack, &mut bob).await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let throwaway = User::builder(&stack).create().await;
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
    let carol = User::builder(&stack).create().await;
    assert_eq!(veteran.bundle_of(&stack, &carol.user_id).await.0, 200);
}

#[tokio::test]
async fn stored_one_time_keys_are_capped_per_kind() {
    let stack = Stack::with_env(&[("MAX_ONE_TIME_PREKEYS", "100")]).await;
    let user = User::builder(&stack).one_time_prekeys(100).create().await;
    let alice = User::builder(&stack).create().await;
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
    let user = User::builder(&stack).create().await;
    let other = User::builder(&stack).create().await;
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
    let user = User::builder(stack).one_time_prekeys(keys).create().await;
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
    let bob = User::builder(&stack).create().await;
    let first = User::builder(&stack).create().await;
    assert_eq!(first.bundle_of(&stack, &bob.user_id).await.0, 200);
    // Bob's only key is gone: four new accounts try three times each on both routes, more
    // than the new accounts' budget of 10 holds. Each is told the keys are gone, every time.
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let late = User::builder(&stack).create().await;
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
    let next = User::builder(&stack).create().await;
    assert_eq!(next.bundle_of(&stack, &bob.user_id).await.0, 200);
}
