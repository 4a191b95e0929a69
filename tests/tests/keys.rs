//! The key directory over real HTTP: registration, bundles, uploads, counts and bad input.

use std::collections::HashSet;

use relay_tests::client::{self, error_code, get_auth, post, put_auth, unique_username, Identity};
use relay_tests::{Stack, User};
use serde_json::{json, Value};
use shared::validation::encode;

#[tokio::test]
async fn bundle_has_identity_signed_and_one_time_prekey_which_is_then_gone() {
    let stack = Stack::start().await;
    let alice = User::create(&stack, 1, 0).await;
    let bob = User::create(&stack, 2, 1).await;
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
    let alice = User::create(&stack, 1, 0).await;
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
    let bob = User::create(&stack, 25, 0).await;
    let alice = User::create(&stack, 1, 0).await;
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
    let bob = User::create(&stack, 2, 0).await;
    let alice = User::create(&stack, 1, 0).await;
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
