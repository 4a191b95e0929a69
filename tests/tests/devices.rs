//! Several devices per account over real HTTP and WebSockets: registration's device 1,
//! linking through the provisioning socket and a single-use code, per-device keys and bundles,
//! sends in the per-device form (mismatched and stale device lists, nothing stored), copies to
//! one's own other devices, removal, and sends and bundle fetches racing links and removals.

use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use redis::AsyncCommands;
use relay_tests::client::{
    assert_rate_limited, delete_auth, ec_key, error_code, get_auth, put_auth, refresh,
};
use relay_tests::devices::{
    add_device, answers_ping, assert_mismatched, assert_stale, body_of, bundle_entries,
    closed_within, code, deliveries, device_bundle, device_from, device_ids, device_keys,
    has_device_inbox, ids, link, link_with_keys, list_devices, login_device, message, pending,
    provision, provisioning_address, provisioning_socket, provisioning_url, remove_device,
    request_code, send_frame, send_messages, token_claims, wait_provisioning_socket_gone, Device,
    LINKED_KYBER_LAST_RESORT_ID, LINKED_KYBER_ONE_TIME_FIRST, LINKED_SIGNED_PREKEY_ID,
    PRIMARY_REGISTRATION_ID,
};
use relay_tests::{eventually, Identity, Stack, User, Ws};
use serde_json::{json, Value};
use sha2::Digest;
use shared::validation::encode;

const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// Asserts that the server closes `ws` within `CLOSE_WAIT`; `what` names the socket.
async fn assert_closes(ws: &mut Ws, what: &str) {
    let (closed, frames) = closed_within(ws, CLOSE_WAIT).await;
    assert!(closed, "{what} stays open ({frames:?})");
}

/// Asserts an HTTP error answer: the status and the code.
fn assert_error(answer: &(u16, Value), status: u16, code: &str, what: &str) {
    assert_eq!(answer.0, status, "{what}: {}", answer.1);
    assert_eq!(error_code(&answer.1), code, "{what}: {}", answer.1);
}

/// Whether `s` is base64url without padding.
fn is_base64url(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A well-formed linking code no one issued.
fn unissued_code() -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

/// The one envelope of a `messages` push.
fn only_envelope(frame: &Value) -> &Value {
    assert_eq!(frame["type"], "messages", "{frame}");
    let messages = frame["messages"].as_array().expect("messages");
    assert_eq!(messages.len(), 1, "{frame}");
    &messages[0]
}

/// Asserts an envelope's body, sender and sending device.
fn assert_envelope(envelope: &Value, body: &[u8], from: &str, source_device: u64) {
    assert_eq!(body_of(envelope), body, "{envelope}");
    assert_eq!(envelope["from"], from, "{envelope}");
    assert_eq!(envelope["source_device"], source_device, "{envelope}");
}

/// Asserts that nothing is waiting for any of `devices`, by `list` and `fetch` on a fresh
/// connection of each, and that no inbox key was written.
async fn assert_nothing_stored(stack: &Stack, devices: &[&Device]) {
    for d in devices {
        assert!(
            !has_device_inbox(stack, &d.user_id, d.device_id).await,
            "an inbox key for device {}",
            d.device_id
        );
        let mut ws = d.connect(stack).await;
        assert_eq!(pending(&mut ws).await, 0, "device {}", d.device_id);
        assert!(ws.fetch_all().await.is_empty(), "device {}", d.device_id);
        ws.close().await;
    }
}

// 1. Registration and logins.

#[tokio::test]
async fn registration_makes_device_1_and_a_login_without_device_id_is_device_1() {
    let stack = Stack::start().await;
    let alice = User::builder(&stack).create().await;
    let (status, list) = list_devices(&stack, &alice.access).await;
    assert_eq!(status, 200, "{list}");
    let devices = list["devices"].as_array().expect("devices");
    assert_eq!(devices.len(), 1, "{list}");
    assert_eq!(devices[0]["device_id"], 1);
    assert_eq!(devices[0]["registration_id"], PRIMARY_REGISTRATION_ID);
    let created = devices[0]["created_at"].as_u64().expect("created_at");
    assert!(
        (1_700_000_000..10_000_000_000).contains(&created),
        "created_at in unix seconds: {list}"
    );

    let (status, tokens) = login_device(&stack, &alice, None).await;
    assert_eq!(status, 200, "{tokens}");
    assert_eq!(tokens["device_id"], 1, "{tokens}");
    let dev = &token_claims(tokens["access_token"].as_str().unwrap())["dev"];
    assert!(dev.is_null() || *dev == 1, "dev claim {dev}");
    let (status, tokens) = login_device(&stack, &alice, Some(1)).await;
    assert_eq!((status, &tokens["device_id"]), (200, &json!(1)), "{tokens}");
    let (status, rotated) = refresh(&stack, tokens["refresh_token"].as_str().unwrap()).await;
    assert_eq!(
        (status, &rotated["device_id"]),
        (200, &json!(1)),
        "{rotated}"
    );

    // A device the account does not have looks like a wrong password.
    for device in [2, 255] {
        assert_error(
            &login_device(&stack, &alice, Some(device)).await,
            401,
            "invalid_credentials",
            &format!("login as device {device}"),
        );
    }
}

// 2. Linking.

#[tokio::test]
async fn a_new_device_links_through_the_provisioning_socket_and_a_code() {
    let stack = Stack::start().await;
    let alice = User::builder(&stack).create().await;

    // The new device: an anonymous socket and its one-time address.
    let mut new = Ws::connect(&provisioning_url(&stack))
        .await
        .expect("provisioning handshake");
    new.send(json!({"action": "provision"})).await;
    let reply = new.recv().await;
    assert_eq!(reply["type"], "provisioning_address", "{reply}");
    assert_eq!(reply["expires_in"], 600, "{reply}");
    let address = reply["address"].as_str().expect("address").to_string();
    assert!(
        address.len() == 22 && is_base64url(&address),
        "address {address:?}"
    );

    // The primary: a linking code.
    let (status, issued) = request_code(&stack, &alice.access).await;
    assert_eq!(status, 200, "{issued}");
    assert_eq!(issued["expires_in"], 600, "{issued}");
    let code = issued["code"].as_str().expect("code").to_string();
    assert!(code.len() == 43 && is_base64url(&code), "code {code:?}");

    // The primary's provisioning message (a real client encrypts the identity key pair and the
    // code to the new device's ephemeral key): opaque to the relay, passed on unchanged.
    let opaque: Vec<u8> = (0..=255u8).chain(code.bytes()).collect();
    let sealed = encode(&opaque);
    let answer = provision(&stack, &alice.access, &address, &sealed).await;
    assert_eq!(answer.0, 204, "{}", answer.1);
    let (closed, frames) = closed_within(&mut new, CLOSE_WAIT).await;
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert_eq!(frames[0]["type"], "provisioning_message", "{frames:?}");
    assert_eq!(
        frames[0]["body"],
        sealed.as_str(),
        "body altered in transit"
    );
    assert!(
        closed,
        "the provisioning socket stays open after its message"
    );

    // The new device registers its keys with the code.
    let (status, answer) =
        add_device(&stack, &device_keys(&alice.identity, &code, 2002, 3, 1)).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["user_id"], alice.user_id.as_str());
    assert_eq!(answer["device_id"], 2);
    assert_eq!(answer["token_type"], "Bearer");
    assert!(answer["expires_in"].as_u64().is_some(), "{answer}");
    let alice2 = device_from(&answer, 2002);
    assert_eq!(token_claims(&alice2.access)["dev"], 2);

    // Both devices list the account's two.
    for token in [&alice.access, &alice2.access] {
        let (status, list) = list_devices(&stack, token).await;
        assert_eq!(status, 200, "{list}");
        let listed: Vec<(u64, u64)> = list["devices"]
            .as_array()
            .expect("devices")
            .iter()
            .map(|d| {
                (
                    d["device_id"].as_u64().unwrap(),
                    d["registration_id"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(listed, vec![(1, PRIMARY_REGISTRATION_ID), (2, 2002)]);
    }

    // The new device's session is its own: its keys, its refresh, its password login.
    assert_eq!(alice2.counts(&stack).await, (3, 1));
    assert_eq!(Device::primary(&alice).counts(&stack).await, (1, 0));
    let (status, rotated) = refresh(&stack, &alice2.refresh).await;
    assert_eq!(
        (status, &rotated["device_id"]),
        (200, &json!(2)),
        "{rotated}"
    );
    let (status, tokens) = login_device(&stack, &alice, Some(2)).await;
    assert_eq!((status, &tokens["device_id"]), (200, &json!(2)), "{tokens}");
    assert_eq!(
        token_claims(tokens["access_token"].as_str().unwrap())["dev"],
        2
    );

    // The code is spent; a code no one issued is refused alike; the address is spent.
    let reused = add_device(&stack, &device_keys(&alice.identity, &code, 3003, 1, 0)).await;
    assert_error(&reused, 403, "invalid_code", "the code again");
    let wrong = device_keys(&alice.identity, &unissued_code(), 3003, 1, 0);
    assert_error(
        &add_device(&stack, &wrong).await,
        403,
        "invalid_code",
        "a wrong code",
    );
    assert_error(
        &provision(&stack, &alice.access, &address, &sealed).await,
        404,
        "unknown_address",
        "the address again",
    );
    assert_eq!(device_ids(&stack, &alice.access).await, vec![1, 2]);

    // Only the primary hands out codes.
    assert_error(
        &request_code(&stack, &alice2.access).await,
        403,
        "forbidden",
        "a code for a linked device",
    );
}

#[tokio::test]
async fn refused_device_keys_do_not_spend_the_code() {
    let stack = Stack::start().await;
    let alice = User::builder(&stack).create().await;
    let code = code(&stack, &alice.access).await;

    let mut foreign = device_keys(&alice.identity, &code, 2002, 2, 0);
    foreign["signed_prekey"] = Identity::new().signed(LINKED_SIGNED_PREKEY_ID as u32, &ec_key());
    assert_error(
        &add_device(&stack, &foreign).await,
        400,
        "invalid_signature",
        "a signed prekey signed by another identity",
    );
    let mut none = device_keys(&alice.identity, &code, 2002, 2, 0);
    none["one_time_prekeys"] = json!([]);
    assert_error(
        &add_device(&stack, &none).await,
        400,
        "invalid_request",
        "no one-time prekeys",
    );
    let mut no_code = device_keys(&alice.identity, &code, 2002, 2, 0);
    no_code.as_object_mut().unwrap().remove("code");
    assert_error(
        &add_device(&stack, &no_code).await,
        400,
        "invalid_request",
        "no code",
    );
    assert_eq!(device_ids(&stack, &alice.access).await, vec![1]);

    let (status, answer) =
        add_device(&stack, &device_keys(&alice.identity, &code, 2002, 2, 0)).await;
    assert_eq!(status, 200, "the code after refused keys: {answer}");
    assert_eq!(answer["device_id"], 2);
}

#[tokio::test]
async fn provisioning_messages_are_capped_at_8192_bytes_and_addresses_are_single_use() {
    let stack = Stack::start().await;
    let alice = User::builder(&stack).create().await;
    let alice2 = link(&stack, &alice, 2002).await;

    // One byte over: refused, and nothing reaches the socket.
    let (mut over, address) = provisioning_socket(&stack).await;
    assert_error(
        &provision(&stack, &alice.access, &address, &encode(&[7u8; 8193])).await,
        400,
        "too_large",
        "8193 bytes",
    );
    assert!(
        over.frames_before_pong().await.is_empty(),
        "a refused message reached the socket"
    );

    // Not base64: a bad request.
    let (_open, address) = provisioning_socket(&stack).await;
    assert_error(
        &provision(&stack, &alice.access, &address, "%%% not base64 %%%").await,
        400,
        "invalid_request",
        "a body that is not base64",
    );

    // Exactly the limit, from a linked device (any device of the account may provision).
    let (mut at_limit, address) = provisioning_socket(&stack).await;
    let body = encode(&[9u8; 8192]);
    let answer = provision(&stack, &alice2.access, &address, &body).await;
    assert_eq!(answer.0, 204, "8192 bytes: {}", answer.1);
    let got = at_limit.recv().await;
    assert_eq!(got["type"], "provisioning_message", "{got}");
    assert_eq!(got["body"], body.as_str());
    assert_closes(&mut at_limit, "a provisioning socket after its message").await;
    assert_error(
        &provision(&stack, &alice.access, &address, &body).await,
        404,
        "unknown_address",
        "a used address",
    );

    // Never issued, and issued to a socket that is gone.
    let unknown = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([1u8; 16]);
    assert_error(
        &provision(&stack, &alice.access, &unknown, &body).await,
        404,
        "unknown_address",
        "an address never issued",
    );
    let (gone, address) = provisioning_socket(&stack).await;
    gone.close().await;
    wait_provisioning_socket_gone(&stack, &address).await;
    assert_error(
        &provision(&stack, &alice.access, &address, &body).await,
        404,
        "unknown_address",
        "the address of a closed socket",
    );

    // Without a token: 401.
    let (_open, address) = provisioning_socket(&stack).await;
    let r = stack
        .http
        .put(stack.url(&format!("/v1/provisioning/{address}")))
        .json(&json!({"body": body}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn the_provisioning_socket_keeps_one_address_and_serves_only_provision_and_ping() {
    let stack = Stack::start().await;
    let (mut ws, address) = provisioning_socket(&stack).await;
    assert_eq!(
        provisioning_address(&mut ws).await,
        address,
        "asked again on the same socket"
    );
    ws.send(json!({"action": "ping"})).await;
    assert_eq!(ws.recv().await["type"], "pong");
    let (_other, other) = provisioning_socket(&stack).await;
    assert_ne!(other, address, "two sockets share an address");

    // The query form works locally too.
    let mut query = Ws::connect(&format!("ws://{}/ws?provisioning=1", stack.addr))
        .await
        .expect("provisioning handshake by query");
    let by_query = provisioning_address(&mut query).await;
    assert!(by_query.len() == 22 && is_base64url(&by_query));

    // Anonymous: nothing else is served.
    for frame in [
        json!({"action": "fetch", "id": "f"}),
        json!({"action": "list", "id": "l"}),
        json!({"action": "send", "id": "s", "to": uuid::Uuid::new_v4(), "body": encode(b"x")}),
    ] {
        let mut ws = Ws::connect(&provisioning_url(&stack)).await.unwrap();
        ws.send(frame.clone()).await;
        let reply = ws.recv().await;
        assert_eq!(reply["type"], "error", "{frame}: {reply}");
        assert_eq!(reply["code"], "unauthorized", "{frame}: {reply}");
    }
}

#[tokio::test]
async fn linking_codes_provisioning_messages_and_links_are_rate_limited() {
    // Codes per account.
    let stack = Stack::with_env(&[("RATE_LIMIT_PROVISIONING", "2/3600")]).await;
    let alice = User::builder(&stack).create().await;
    for _ in 0..2 {
        assert_eq!(request_code(&stack, &alice.access).await.0, 200);
    }
    let r = stack
        .http
        .post(stack.url("/v1/devices/provisioning"))
        .bearer_auth(&alice.access)
        .send()
        .await
        .unwrap();
    assert_rate_limited(r, 3600).await;
    let bob = User::builder(&stack).create().await;
    assert_eq!(
        request_code(&stack, &bob.access).await.0,
        200,
        "another account's limit"
    );

    // Provisioning messages per account.
    let stack = Stack::with_env(&[("RATE_LIMIT_PROVISIONING", "2/3600")]).await;
    let alice = User::builder(&stack).create().await;
    for _ in 0..2 {
        let (_ws, address) = provisioning_socket(&stack).await;
        assert_eq!(
            provision(&stack, &alice.access, &address, &encode(b"m"))
                .await
                .0,
            204
        );
    }
    let (_ws, address) = provisioning_socket(&stack).await;
    let r = stack
        .http
        .put(stack.url(&format!("/v1/provisioning/{address}")))
        .bearer_auth(&alice.access)
        .json(&json!({"body": encode(b"m")}))
        .send()
        .await
        .unwrap();
    assert_rate_limited(r, 3600).await;

    // Links per client IP, counted whatever the code.
    let stack = Stack::with_env(&[("RATE_LIMIT_LINK", "2/3600")]).await;
    let alice = User::builder(&stack).create().await;
    for _ in 0..2 {
        let wrong = device_keys(&alice.identity, &unissued_code(), 2002, 1, 0);
        assert_error(
            &add_device(&stack, &wrong).await,
            403,
            "invalid_code",
            "a wrong code within the limit",
        );
    }
    let good = device_keys(
        &alice.identity,
        &code(&stack, &alice.access).await,
        2002,
        1,
        0,
    );
    let r = stack
        .http
        .post(stack.url("/v1/devices"))
        .json(&good)
        .send()
        .await
        .unwrap();
    assert_rate_limited(r, 3600).await;
    assert_eq!(device_ids(&stack, &alice.access).await, vec![1]);
}

// 3. The device cap.

#[tokio::test]
async fn a_seventh_device_is_refused_with_the_default_cap_of_six() {
    let stack = Stack::start().await;
    let alice = User::builder(&stack).create().await;
    for expected in 2..=6u64 {
        let device = link(&stack, &alice, 2000 + expected).await;
        assert_eq!(device.device_id, expected, "the smallest free id");
    }
    assert_eq!(
        device_ids(&stack, &alice.access).await,
        vec![1, 2, 3, 4, 5, 6]
    );
    assert_error(
        &request_code(&stack, &alice.access).await,
        409,
        "too_many_devices",
        "a code for a seventh device",
    );
}

#[tokio::test]
async fn a_code_issued_before_the_account_filled_up_is_refused_too_many_devices() {
    let stack = Stack::with_env(&[("MAX_DEVICES", "2")]).await;
    let alice = User::builder(&stack).create().await;
    let first = code(&stack, &alice.access).await;
    let second = code(&stack, &alice.access).await;
    let (status, answer) =
        add_device(&stack, &device_keys(&alice.identity, &first, 2002, 1, 0)).await;
    assert_eq!((status, &answer["device_id"]), (200, &json!(2)), "{answer}");
    assert_error(
        &add_device(&stack, &device_keys(&alice.identity, &second, 3003, 1, 0)).await,
        409,
        "too_many_devices",
        "a third device with MAX_DEVICES=2",
    );
    assert_error(
        &request_code(&stack, &alice.access).await,
        409,
        "too_many_devices",
        "a code with MAX_DEVICES=2 reached",
    );
    assert_eq!(device_ids(&stack, &alice.access).await, vec![1, 2]);
    // A removal makes room again, and the code refused for a full account still links.
    assert_eq!(remove_device(&stack, &alice.access, "2").await.0, 204);
    let (status, answer) =
        add_device(&stack, &device_keys(&alice.identity, &second, 3003, 1, 0)).await;
    assert_eq!((status, &answer["device_id"]), (200, &json!(2)), "{answer}");
    assert_eq!(remove_device(&stack, &alice.access, "2").await.0, 204);
    assert_eq!(request_code(&stack, &alice.access).await.0, 200);
}

#[tokio::test]
async fn only_the_primary_deletes_the_account() {
    let stack = Stack::start().await;
    let alice = User::builder(&stack).create().await;
    let laptop = link(&stack, &alice, 2002).await;
    let refused = stack
        .http
        .delete(stack.url("/v1/users/me"))
        .bearer_auth(&laptop.access)
        .send()
        .await
        .expect("delete");
    assert_error(
        &relay_tests::client::status_json(refused).await,
        403,
        "forbidden",
        "a linked device deleting the account",
    );
    assert_eq!(device_ids(&stack, &alice.access).await, vec![1, 2]);
    assert_eq!(
        delete_auth(&stack, "/v1/users/me", &alice.access).await,
        204
    );
    assert_eq!(list_devices(&stack, &laptop.access).await.0, 401);
}

// 4. Expiry.

#[tokio::test]
async fn expired_codes_and_addresses_are_refused() {
    let stack = Stack::with_env(&[("PROVISIONING_TTL_SECS", "2")]).await;
    let alice = User::builder(&stack).create().await;
    let mut ws = Ws::connect(&provisioning_url(&stack)).await.unwrap();
    ws.send(json!({"action": "provision"})).await;
    let reply = ws.recv().await;
    assert_eq!(reply["expires_in"], 2, "{reply}");
    let address = reply["address"].as_str().expect("address").to_string();
    let (status, issued) = request_code(&stack, &alice.access).await;
    assert_eq!(
        (status, &issued["expires_in"]),
        (200, &json!(2)),
        "{issued}"
    );
    let code = issued["code"].as_str().unwrap().to_string();

    // Past the lifetime by the relay's clock and by Redis' own (a native TTL, which only real
    // time runs down).
    stack.advance(Duration::from_secs(3));
    let keys = stack.redis_keys();
    let code_hash: String = sha2::Sha256::digest(code.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut redis = stack.redis().await;
    let expiring = [
        ("the linking code", keys.link_code(&code_hash)),
        ("the provisioning address", keys.provisioning(&address)),
    ];
    for (what, key) in expiring {
        eventually(&format!("{what} to expire in Redis"), async || {
            let kept: bool = redis.exists(&key).await.expect("EXISTS");
            !kept
        })
        .await;
    }
    assert_error(
        &add_device(&stack, &device_keys(&alice.identity, &code, 2002, 1, 0)).await,
        403,
        "invalid_code",
        "an expired code",
    );
    assert_error(
        &provision(&stack, &alice.access, &address, &encode(b"late")).await,
        404,
        "unknown_address",
        "an expired address",
    );
    // A fresh code within its lifetime still links.
    assert_eq!(link(&stack, &alice, 2002).await.device_id, 2);
}

// 5. Keys per device.

#[tokio::test]
async fn keys_uploads_counts_and_bundles_are_per_device() {
    let stack = Stack::start().await;
    let alice = User::builder(&stack).create().await;
    let bob = User::builder(&stack).one_time_prekeys(2).create().await;
    let bob1 = Device::primary(&bob);
    let bob2 = link_with_keys(&stack, &bob, 2002, 3, 1).await;
    assert_eq!(bob1.counts(&stack).await, (2, 0));
    assert_eq!(bob2.counts(&stack).await, (3, 1));

    // An upload with device 2's token fills device 2 only.
    let up = json!({
        "one_time_prekeys": bob.identity.one_time(50..55),
        "signed_prekey": bob.identity.signed(8, &ec_key()),
    });
    let (status, b) = put_auth(&stack, "/v1/keys", &bob2.access, &up).await;
    assert_eq!(status, 200, "{b}");
    assert_eq!(
        b,
        json!({"one_time_prekeys": 8, "kyber_one_time_prekeys": 1})
    );
    assert_eq!(bob1.counts(&stack).await, (2, 0), "device 1 changed");

    // One device: only its entry, its registration id and keys; one key of it consumed.
    let (status, one) = device_bundle(&stack, &alice.access, &bob.user_id, "2").await;
    assert_eq!(status, 200, "{one}");
    assert_eq!(one["user_id"], bob.user_id.as_str());
    assert_eq!(one["identity_key"], bob.identity.public());
    let entries = bundle_entries(&one);
    assert_eq!(entries.keys().copied().collect::<Vec<_>>(), vec![2]);
    let e = &entries[&2];
    assert_eq!(e["registration_id"], 2002);
    assert_eq!(
        e["signed_prekey"]["key_id"], 8,
        "the uploaded signed prekey"
    );
    let ec = e["one_time_prekey"]["key_id"].as_u64().expect("one-time");
    assert!((1..=3).contains(&ec) || (50..55).contains(&ec), "{e}");
    assert_eq!(
        e["kyber_prekey"]["key_id"], LINKED_KYBER_ONE_TIME_FIRST,
        "Kyber one-time key first"
    );
    assert_eq!(bob2.counts(&stack).await, (7, 0));
    assert_eq!(bob1.counts(&stack).await, (2, 0));

    // The old route stays device 1, in its old shape.
    let (status, old) = alice.bundle_of(&stack, &bob.user_id).await;
    assert_eq!(status, 200, "{old}");
    assert_eq!(old["registration_id"], PRIMARY_REGISTRATION_ID);
    assert_eq!(old["signed_prekey"]["key_id"], 1);
    assert!(old["one_time_prekey"]["key_id"].as_u64().is_some(), "{old}");
    assert_eq!(bob1.counts(&stack).await, (1, 0));
    assert_eq!(bob2.counts(&stack).await, (7, 0));

    // Every device: one entry each, one key of each consumed.
    let (status, all) = device_bundle(&stack, &alice.access, &bob.user_id, "*").await;
    assert_eq!(status, 200, "{all}");
    assert_eq!(all["identity_key"], bob.identity.public());
    let entries = bundle_entries(&all);
    assert_eq!(entries.keys().copied().collect::<Vec<_>>(), vec![1, 2]);
    assert_eq!(entries[&1]["registration_id"], PRIMARY_REGISTRATION_ID);
    assert_eq!(entries[&1]["signed_prekey"]["key_id"], 1);
    assert_eq!(entries[&1]["kyber_prekey"]["key_id"], 9000, "last resort");
    assert_eq!(entries[&2]["registration_id"], 2002);
    assert_eq!(
        entries[&2]["kyber_prekey"]["key_id"], LINKED_KYBER_LAST_RESORT_ID,
        "last resort once the one-time ones are gone"
    );
    for (d, e) in &entries {
        assert!(
            e["one_time_prekey"]["key_id"].as_u64().is_some(),
            "device {d}: {e}"
        );
    }
    assert_eq!(bob1.counts(&stack).await, (0, 0));
    assert_eq!(bob2.counts(&stack).await, (6, 0));

    assert_error(
        &device_bundle(&stack, &alice.access, &bob.user_id, "3").await,
        404,
        "device_not_found",
        "a device bob does not have",
    );
    let stranger = uuid::Uuid::new_v4().to_string();
    assert_error(
        &device_bundle(&stack, &alice.access, &stranger, "*").await,
        404,
        "user_not_found",
        "an unknown user",
    );
}

#[tokio::test]
async fn an_exhausted_device_makes_a_strict_bundle_412_and_nothing_is_consumed() {
    let stack = Stack::start().await;
    let alice = User::builder(&stack).create().await;
    let bob = User::builder(&stack).create().await;
    let bob1 = Device::primary(&bob);
    let bob2 = link_with_keys(&stack, &bob, 2002, 3, 0).await;
    assert_eq!(
        device_bundle(&stack, &alice.access, &bob.user_id, "*")
            .await
            .0,
        200
    );
    assert_eq!(bob1.counts(&stack).await, (0, 0));
    assert_eq!(bob2.counts(&stack).await, (2, 0));

    for which in ["*", "1"] {
        let answer = device_bundle(&stack, &alice.access, &bob.user_id, which).await;
        assert_error(&answer, 412, "prekeys_exhausted", which);
        assert_eq!(ids(&answer.1["error"]["devices"]), vec![1], "{}", answer.1);
        assert_eq!(
            bob2.counts(&stack).await,
            (2, 0),
            "device 2 lost a key to a refused bundle ({which})"
        );
    }
    assert_eq!(
        device_bundle(&stack, &alice.access, &bob.user_id, "2")
            .await
            .0,
        200
    );
    assert_eq!(
        device_bundle(&stack, &alice.access, &bob.user_id, "2")
            .await
            .0,
        200
    );
    assert_eq!(bob2.counts(&stack).await, (0, 0));
    let answer = device_bundle(&stack, &alice.access, &bob.user_id, "*").await;
    assert_error(&answer, 412, "prekeys_exhausted", "both exhausted");
    assert_eq!(ids(&answer.1["error"]["devices"]), vec![1, 2]);
}

#[tokio::test]
async fn with_bundle_without_one_time_an_exhausted_device_comes_without_a_one_time_prekey() {
    let stack = Stack::with_env(&[("BUNDLE_WITHOUT_ONE_TIME", "1")]).await;
    let alice = User::builder(&stack).create().await;
    let bob = User::builder(&stack).create().await;
    let bob2 = link_with_keys(&stack, &bob, 2002, 2, 0).await;
    assert_eq!(
        device_bundle(&stack, &alice.access, &bob.user_id, "*")
            .await
            .0,
        200
    );
    let (status, all) = device_bundle(&stack, &alice.access, &bob.user_id, "*").await;
    assert_eq!(status, 200, "{all}");
    let entries = bundle_entries(&all);
    assert!(entries[&1]["one_time_prekey"].is_null(), "{all}");
    assert_eq!(entries[&1]["kyber_prekey"]["key_id"], 9000, "{all}");
    assert!(
        entries[&2]["one_time_prekey"]["key_id"].as_u64().is_some(),
        "{all}"
    );
    assert_eq!(bob2.counts(&stack).await, (0, 0));
}

// 6. Relay to several devices.

#[tokio::test]
async fn each_connected_device_receives_exactly_its_own_ciphertext() {
    let stack = Stack::start().await;
    let (alice, bob) = User::pair(&stack).await;
    let bob1 = Device::primary(&bob);
    let bob2 = link(&stack, &bob, 2002).await;
    let mut b1 = bob1.connect(&stack).await;
    let mut b2 = bob2.connect(&stack).await;
    let mut a = alice.connect(&stack).await;

    let reply = send_messages(
        &mut a,
        &bob.user_id,
        "m",
        vec![bob1.message(b"for one"), bob2.message(b"for two")],
    )
    .await;
    assert_eq!(reply["type"], "sent", "{reply}");
    assert_eq!(reply["id"], "m");
    assert_eq!(reply["delivery"], "delivered", "{reply}");
    assert_eq!(
        deliveries(&reply),
        vec![(1, "delivered".into()), (2, "delivered".into())]
    );
    for (ws, body) in [(&mut b1, &b"for one"[..]), (&mut b2, &b"for two"[..])] {
        let frame = ws.recv().await;
        assert_envelope(only_envelope(&frame), body, &alice.user_id, 1);
        assert!(ws.frames_before_pong().await.is_empty(), "a second push");
        assert_eq!(pending(ws).await, 0);
    }
}

#[tokio::test]
async fn an_offline_devices_copy_is_queued_for_that_device_alone() {
    let stack = Stack::start().await;
    let (alice, bob) = User::pair(&stack).await;
    let bob1 = Device::primary(&bob);
    let bob2 = link(&stack, &bob, 2002).await;
    let mut b1 = bob1.connect(&stack).await;
    let mut a = alice.connect(&stack).await;

    let reply = send_messages(
        &mut a,
        &bob.user_id,
        "half",
        vec![bob1.message(b"live"), bob2.message(b"stored")],
    )
    .await;
    assert_eq!(reply["delivery"], "queued", "{reply}");
    assert_eq!(
        deliveries(&reply),
        vec![(1, "delivered".into()), (2, "queued".into())]
    );
    assert_envelope(only_envelope(&b1.recv().await), b"live", &alice.user_id, 1);
    b1.close().await;

    // Both offline: each device's copy waits in its own inbox.
    let reply = send_messages(
        &mut a,
        &bob.user_id,
        "both",
        vec![bob1.message(b"one later"), bob2.message(b"two later")],
    )
    .await;
    assert_eq!(
        deliveries(&reply),
        vec![(1, "queued".into()), (2, "queued".into())]
    );

    let mut b2 = bob2.connect(&stack).await;
    assert_eq!(pending(&mut b2).await, 2);
    let got = b2.fetch_all().await;
    assert_eq!(got.len(), 2, "{got:?}");
    assert_envelope(&got[0], b"stored", &alice.user_id, 1);
    assert_envelope(&got[1], b"two later", &alice.user_id, 1);
    let mut b1 = bob1.connect(&stack).await;
    let got = b1.fetch_all().await;
    assert_eq!(got.len(), 1, "device 1 got device 2's copy: {got:?}");
    assert_envelope(&got[0], b"one later", &alice.user_id, 1);
}

#[tokio::test]
async fn online_only_is_delivered_or_dropped_per_device() {
    let stack = Stack::start().await;
    let (alice, bob) = User::pair(&stack).await;
    let bob1 = Device::primary(&bob);
    let bob2 = link(&stack, &bob, 2002).await;
    let mut b1 = bob1.connect(&stack).await;
    let mut a = alice.connect(&stack).await;
    let mut frame = send_frame(
        &bob.user_id,
        "typing",
        vec![bob1.message(b"typing"), bob2.message(b"typing")],
    );
    frame["online_only"] = json!(true);
    a.send(frame).await;
    let reply = a.recv().await;
    assert_eq!(reply["delivery"], "dropped", "{reply}");
    assert_eq!(
        deliveries(&reply),
        vec![(1, "delivered".into()), (2, "dropped".into())]
    );
    assert_envelope(
        only_envelope(&b1.recv().await),
        b"typing",
        &alice.user_id,
        1,
    );
    assert_nothing_stored(&stack, &[&bob1, &bob2]).await;
}

// 7. Mismatched and stale device lists.

#[tokio::test]
async fn mismatched_stale_and_malformed_device_lists_are_refused_and_store_nothing() {
    let stack = Stack::start().await;
    let (alice, bob) = User::pair(&stack).await;
    let bob1 = Device::primary(&bob);
    let bob2 = link(&stack, &bob, 2002).await;
    let mut a = alice.connect(&stack).await;
    let to = bob.user_id.as_str();

    let r = send_messages(&mut a, to, "only-1", vec![bob1.message(b"x")]).await;
    assert_mismatched(&r, "only-1", &[2], &[]);
    let r = send_messages(&mut a, to, "only-2", vec![bob2.message(b"x")]).await;
    assert_mismatched(&r, "only-2", &[1], &[]);
    let extra = vec![
        bob1.message(b"x"),
        bob2.message(b"x"),
        message(3, 3003, b"x"),
    ];
    let r = send_messages(&mut a, to, "plus-3", extra).await;
    assert_mismatched(&r, "plus-3", &[], &[3]);
    let r = send_messages(
        &mut a,
        to,
        "swap",
        vec![bob1.message(b"x"), message(3, 3003, b"x")],
    )
    .await;
    assert_mismatched(&r, "swap", &[2], &[3]);
    let stale = vec![bob1.message(b"x"), message(2, 2003, b"x")];
    let r = send_messages(&mut a, to, "stale", stale).await;
    assert_stale(&r, "stale", &[2]);
    let stale = vec![message(1, 1, b"x"), message(2, 2003, b"x")];
    let r = send_messages(&mut a, to, "both-stale", stale).await;
    assert_stale(&r, "both-stale", &[1, 2]);

    // Malformed lists.
    let dup = vec![bob1.message(b"x"), bob2.message(b"x"), bob2.message(b"y")];
    let r = send_messages(&mut a, to, "dup", dup).await;
    assert_eq!(
        (r["code"].as_str(), r["id"].as_str()),
        (Some("invalid_frame"), Some("dup")),
        "{r}"
    );
    let r = send_messages(&mut a, to, "empty", vec![]).await;
    assert_eq!(
        (r["code"].as_str(), r["id"].as_str()),
        (Some("invalid_frame"), Some("empty")),
        "{r}"
    );
    let big = vec![bob1.message(b"x"), bob2.message(&vec![7u8; 64 * 1024 + 1])];
    let r = send_messages(&mut a, to, "big", big).await;
    assert_eq!(
        (r["code"].as_str(), r["id"].as_str()),
        (Some("too_large"), Some("big")),
        "{r}"
    );

    assert_nothing_stored(&stack, &[&bob1, &bob2]).await;
    // The connection is still served, and a correct list goes through.
    let r = send_messages(
        &mut a,
        to,
        "ok",
        vec![bob1.message(b"x"), bob2.message(b"x")],
    )
    .await;
    assert_eq!(r["type"], "sent", "{r}");
}

// 8. The old form.

#[tokio::test]
async fn the_old_form_reaches_a_single_device_and_is_mismatched_for_two() {
    let stack = Stack::start().await;
    let (alice, bob) = User::pair(&stack).await;
    let bob1 = Device::primary(&bob);
    let mut a = alice.connect(&stack).await;
    let reply = a.send_message(&bob.user_id, "old", b"old form").await;
    assert_eq!(reply["type"], "sent", "{reply}");
    assert_eq!(reply["id"], "old");
    assert_eq!(reply["delivery"], "queued");
    assert_eq!(deliveries(&reply), vec![(1, "queued".into())]);
    let mut b1 = bob1.connect(&stack).await;
    let got = b1.fetch_all().await;
    assert_eq!(got.len(), 1);
    assert_envelope(&got[0], b"old form", &alice.user_id, 1);
    b1.close().await;

    // A self-send by a single-device account still reaches its device 1 (pushed or stored).
    a.send(json!({"action": "send", "to": alice.user_id, "id": "me", "body": encode(b"note")}))
        .await;
    let mut pushed = Vec::new();
    let reply = a.until_reply(&mut pushed).await;
    assert_eq!(reply["type"], "sent", "{reply}");
    pushed.extend(a.fetch_all().await);
    assert_eq!(pushed.len(), 1, "{pushed:?}");
    assert_envelope(&pushed[0], b"note", &alice.user_id, 1);

    // Two devices: the old form no longer says for whom.
    let bob2 = link(&stack, &bob, 2002).await;
    a.send(json!({"action": "send", "to": bob.user_id, "id": "old-2", "body": encode(b"?")}))
        .await;
    let mut pushed = Vec::new();
    let reply = a.until_reply(&mut pushed).await;
    assert!(pushed.is_empty());
    assert_mismatched(&reply, "old-2", &[1, 2], &[]);
    assert_nothing_stored(&stack, &[&bob1, &bob2]).await;
}

// 9. Copies to one's own devices.

#[tokio::test]
async fn copies_to_ones_own_devices_skip_the_sending_device() {
    let stack = Stack::start().await;
    let alice = User::builder(&stack).create().await;
    let bob = User::builder(&stack).create().await;
    let alice1 = Device::primary(&alice);
    let alice2 = link(&stack, &alice, 2002).await;
    let me = alice.user_id.as_str();
    let mut a1 = alice1.connect(&stack).await;
    let mut a2 = alice2.connect(&stack).await;

    // Device 1's copy: the target set is device 2 alone.
    let r = send_messages(&mut a1, me, "copy", vec![alice2.message(b"sync")]).await;
    assert_eq!(r["type"], "sent", "{r}");
    assert_eq!(deliveries(&r), vec![(2, "delivered".into())]);
    assert_envelope(only_envelope(&a2.recv().await), b"sync", me, 1);
    assert!(
        a1.frames_before_pong().await.is_empty(),
        "an echo to the sender"
    );

    // The sending device itself is an extra device.
    let with_self = vec![alice1.message(b"echo"), alice2.message(b"echo")];
    let r = send_messages(&mut a1, me, "echo", with_self).await;
    assert_mismatched(&r, "echo", &[], &[1]);
    let r = send_messages(&mut a1, me, "self", vec![alice1.message(b"echo")]).await;
    assert_mismatched(&r, "self", &[2], &[1]);

    // And the other way round.
    let r = send_messages(&mut a2, me, "back", vec![alice1.message(b"from two")]).await;
    assert_eq!(deliveries(&r), vec![(1, "delivered".into())], "{r}");
    assert_envelope(only_envelope(&a1.recv().await), b"from two", me, 2);
    assert!(
        a2.frames_before_pong().await.is_empty(),
        "an echo to the sender"
    );

    // The old form to oneself: accepted as the target set (device 2) has one device.
    a1.send(json!({"action": "send", "to": me, "id": "old", "body": encode(b"old copy")}))
        .await;
    let mut pushed = Vec::new();
    let r = a1.until_reply(&mut pushed).await;
    assert!(pushed.is_empty(), "an echo to the sender: {pushed:?}");
    assert_eq!(deliveries(&r), vec![(2, "delivered".into())], "{r}");
    assert_envelope(only_envelope(&a2.recv().await), b"old copy", me, 1);

    // A linked device's envelopes to others name it.
    let r = send_messages(
        &mut a2,
        &bob.user_id,
        "to-bob",
        vec![message(1, PRIMARY_REGISTRATION_ID, b"hi bob")],
    )
    .await;
    assert_eq!(r["type"], "sent", "{r}");
    let mut b = bob.connect(&stack).await;
    let got = b.fetch_all().await;
    assert_eq!(got.len(), 1);
    assert_envelope(&got[0], b"hi bob", me, 2);
}

// 10. Removal.

#[tokio::test]
async fn removing_a_device_ends_its_socket_tokens_keys_and_inbox() {
    let stack = Stack::start().await;
    let (alice, bob) = User::pair(&stack).await;
    let bob1 = Device::primary(&bob);
    let bob2 = link(&stack, &bob, 2002).await;
    let bob3 = link(&stack, &bob, 3003).await;
    let mut a = alice.connect(&stack).await;
    let everyone = |body: &[u8]| vec![bob1.message(body), bob2.message(body), bob3.message(body)];
    let r = send_messages(&mut a, &bob.user_id, "before", everyone(b"before")).await;
    assert_eq!(r["delivery"], "queued", "{r}");
    assert!(has_device_inbox(&stack, &bob.user_id, 2).await);
    let mut b2 = bob2.connect(&stack).await;
    let mut b3 = bob3.connect(&stack).await;

    let (status, body) = remove_device(&stack, &bob.access, "2").await;
    assert_eq!(status, 204, "{body}");
    assert_closes(&mut b2, "the removed device's socket").await;
    assert!(
        answers_ping(&mut b3).await,
        "another device's socket closed"
    );

    // Its tokens.
    assert_eq!(
        get_auth(&stack, "/v1/keys/count", &bob2.access).await.0,
        401
    );
    assert_eq!(list_devices(&stack, &bob2.access).await.0, 401);
    assert_eq!(refresh(&stack, &bob2.refresh).await.0, 401);
    assert_eq!(
        Ws::connect(&stack.ws_url(&bob2.access)).await.err(),
        Some(401)
    );
    assert_error(
        &login_device(&stack, &bob, Some(2)).await,
        401,
        "invalid_credentials",
        "a login as the removed device",
    );

    // Its keys and inbox.
    assert_error(
        &device_bundle(&stack, &alice.access, &bob.user_id, "2").await,
        404,
        "device_not_found",
        "the removed device's bundle",
    );
    let (status, all) = device_bundle(&stack, &alice.access, &bob.user_id, "*").await;
    assert_eq!(status, 200, "{all}");
    assert_eq!(
        bundle_entries(&all).keys().copied().collect::<Vec<_>>(),
        vec![1, 3]
    );
    assert!(
        !has_device_inbox(&stack, &bob.user_id, 2).await,
        "the removed device's inbox is left"
    );
    assert_eq!(device_ids(&stack, &bob.access).await, vec![1, 3]);

    // Its id in a send.
    let r = send_messages(&mut a, &bob.user_id, "after", everyone(b"after")).await;
    assert_mismatched(&r, "after", &[], &[2]);
    let r = send_messages(
        &mut a,
        &bob.user_id,
        "rest",
        vec![bob1.message(b"rest"), bob3.message(b"rest")],
    )
    .await;
    // Device 3 is connected: its copy is pushed, with the one that waited.
    assert_eq!(
        deliveries(&r),
        vec![(1, "queued".into()), (3, "delivered".into())],
        "{r}"
    );
    let mut seen = Vec::new();
    b3.send(json!({"action": "ping"})).await;
    b3.until("pong", &mut seen).await;
    seen.extend(b3.fetch_all().await);
    let bodies: Vec<Vec<u8>> = seen.iter().map(body_of).collect();
    assert_eq!(bodies, vec![b"before".to_vec(), b"rest".to_vec()]);
    // The other devices keep their keys (the `*` bundle took one of each).
    assert_eq!(bob1.counts(&stack).await, (0, 0));
    assert_eq!(bob3.counts(&stack).await.0, 4);
}

#[tokio::test]
async fn a_linked_device_may_remove_itself_but_no_other_and_device_1_stays() {
    let stack = Stack::start().await;
    let bob = User::builder(&stack).create().await;
    let alice = User::builder(&stack).create().await;
    let bob2 = link(&stack, &bob, 2002).await;
    let bob3 = link(&stack, &bob, 3003).await;

    assert_error(
        &remove_device(&stack, &bob2.access, "3").await,
        403,
        "forbidden",
        "a linked device removing another",
    );
    assert_error(
        &remove_device(&stack, &bob.access, "1").await,
        400,
        "invalid_request",
        "removing device 1",
    );
    assert_error(
        &remove_device(&stack, &bob.access, "abc").await,
        400,
        "invalid_request",
        "a non-numeric id",
    );
    assert_error(
        &remove_device(&stack, &bob.access, "9").await,
        404,
        "device_not_found",
        "an id that is no device",
    );
    assert_error(
        &remove_device(&stack, &alice.access, "2").await,
        404,
        "device_not_found",
        "another account's device id",
    );
    assert_eq!(device_ids(&stack, &bob.access).await, vec![1, 2, 3]);

    let (status, body) = remove_device(&stack, &bob3.access, "3").await;
    assert_eq!(status, 204, "a device removing itself: {body}");
    assert_eq!(
        get_auth(&stack, "/v1/keys/count", &bob3.access).await.0,
        401
    );
    assert_eq!(device_ids(&stack, &bob.access).await, vec![1, 2]);
    assert_eq!(bob2.counts(&stack).await.0, 5, "device 2 is untouched");
}

#[tokio::test]
async fn a_removed_devices_id_is_reused_and_its_old_registration_id_is_stale() {
    let stack = Stack::start().await;
    let (alice, bob) = User::pair(&stack).await;
    let bob1 = Device::primary(&bob);
    let old = link(&stack, &bob, 2002).await;
    assert_eq!(remove_device(&stack, &bob.access, "2").await.0, 204);
    let new = link(&stack, &bob, 4004).await;
    assert_eq!(new.device_id, 2, "the smallest free id again");
    let (_, list) = list_devices(&stack, &bob.access).await;
    assert_eq!(list["devices"][1]["registration_id"], 4004, "{list}");
    let (status, one) = device_bundle(&stack, &alice.access, &bob.user_id, "2").await;
    assert_eq!(status, 200, "{one}");
    assert_eq!(bundle_entries(&one)[&2]["registration_id"], 4004);
    // The removed device's tokens do not come back with its id.
    assert_eq!(get_auth(&stack, "/v1/keys/count", &old.access).await.0, 401);

    let mut a = alice.connect(&stack).await;
    let r = send_messages(
        &mut a,
        &bob.user_id,
        "old-reg",
        vec![bob1.message(b"x"), old.message(b"x")],
    )
    .await;
    assert_stale(&r, "old-reg", &[2]);
    let r = send_messages(
        &mut a,
        &bob.user_id,
        "new-reg",
        vec![bob1.message(b"x"), new.message(b"x")],
    )
    .await;
    assert_eq!(r["type"], "sent", "{r}");
    let mut b2 = new.connect(&stack).await;
    assert_eq!(b2.fetch_all().await.len(), 1);
}

/// Senders name a device by (device id, registration id) alone: a device relinked under its
/// predecessor's id and registration id would be handed what was encrypted for the predecessor.
#[tokio::test]
async fn a_relinked_device_may_not_repeat_its_predecessors_registration_id() {
    let stack = Stack::start().await;
    let (alice, bob) = User::pair(&stack).await;
    let bob1 = Device::primary(&bob);
    let old = link(&stack, &bob, 2002).await;
    assert_eq!(remove_device(&stack, &bob.access, "2").await.0, 204);

    // Refused before the code is spent: the same code then links with another registration id.
    let first = code(&stack, &bob.access).await;
    let keys = |registration_id| device_keys(&bob.identity, &first, registration_id, 2, 0);
    assert_error(
        &add_device(&stack, &keys(2002)).await,
        409,
        "registration_id_reused",
        "the removed device's registration id under its device id",
    );
    assert_eq!(device_ids(&stack, &bob.access).await, vec![1]);
    let (status, answer) = add_device(&stack, &keys(3003)).await;
    assert_eq!(status, 200, "another registration id: {answer}");
    let new = device_from(&answer, 3003);
    assert_eq!(new.device_id, 2);

    // A send still encrypted for the removed device is stale, and nothing reaches its successor.
    let mut a = alice.connect(&stack).await;
    let r = send_messages(
        &mut a,
        &bob.user_id,
        "for-old",
        vec![bob1.message(b"x"), old.message(b"for the removed device")],
    )
    .await;
    assert_stale(&r, "for-old", &[2]);
    assert_nothing_stored(&stack, &[&bob1, &new]).await;

    // A sender silent through a whole generation holds a session with the first one: its
    // registration id stays refused under id 2, but not under another device id.
    assert_eq!(remove_device(&stack, &bob.access, "2").await.0, 204);
    let second = code(&stack, &bob.access).await;
    let keys = |registration_id| device_keys(&bob.identity, &second, registration_id, 2, 0);
    for registration_id in [2002, 3003] {
        assert_error(
            &add_device(&stack, &keys(registration_id)).await,
            409,
            "registration_id_reused",
            "an earlier generation's registration id",
        );
    }
    let (status, answer) = add_device(&stack, &keys(4004)).await;
    assert_eq!((status, answer["device_id"].as_u64()), (200, Some(2)));
    let third = link(&stack, &bob, 2002).await;
    assert_eq!(third.device_id, 3, "id 3 never had 2002");
}

#[tokio::test]
async fn the_connection_cap_applies_per_device() {
    let stack = Stack::with_env(&[("MAX_CONNECTIONS_PER_USER", "1")]).await;
    let bob = User::builder(&stack).create().await;
    let bob1 = Device::primary(&bob);
    let bob2 = link(&stack, &bob, 2002).await;
    let mut first = bob1.connect(&stack).await;
    let mut b2 = bob2.connect(&stack).await;
    assert!(
        answers_ping(&mut first).await,
        "device 2 displaced device 1"
    );
    assert!(answers_ping(&mut b2).await);
    let mut second = bob1.connect(&stack).await;
    assert_closes(&mut first, "device 1's older connection past the cap").await;
    assert!(answers_ping(&mut second).await);
    assert!(
        answers_ping(&mut b2).await,
        "device 1's handshake closed device 2"
    );
}

// 11. Concurrency.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forty_concurrent_star_bundles_hand_out_each_key_at_most_once() {
    let stack = Stack::start().await;
    let alice = User::builder(&stack).create().await;
    let bob = User::builder(&stack).one_time_prekeys(25).create().await;
    let bob1 = Device::primary(&bob);
    let bob2 = link_with_keys(&stack, &bob, 2002, 25, 0).await;
    let results = futures::future::join_all(
        (0..40).map(|_| device_bundle(&stack, &alice.access, &bob.user_id, "*")),
    )
    .await;
    let mut handed: [Vec<u64>; 2] = [Vec::new(), Vec::new()];
    let mut ok = 0u64;
    for (status, body) in &results {
        match status {
            200 => {
                ok += 1;
                let entries = bundle_entries(body);
                assert_eq!(
                    entries.keys().copied().collect::<Vec<_>>(),
                    vec![1, 2],
                    "{body}"
                );
                for (d, e) in &entries {
                    let id = e["one_time_prekey"]["key_id"].as_u64().expect("one-time");
                    handed[*d as usize - 1].push(id);
                }
            }
            412 => assert_eq!(error_code(body), "prekeys_exhausted"),
            other => panic!("status {other}: {body}"),
        }
    }
    assert!((1..=25).contains(&ok), "{ok} bundles");
    for (d, keys) in handed.iter().enumerate() {
        let unique: HashSet<&u64> = keys.iter().collect();
        assert_eq!(
            unique.len(),
            keys.len(),
            "device {}: a key handed out twice",
            d + 1
        );
        assert_eq!(keys.len() as u64, ok);
    }
    // Refused fetches consumed nothing.
    assert_eq!(bob1.counts(&stack).await, (25 - ok, 0));
    assert_eq!(bob2.counts(&stack).await, (25 - ok, 0));

    // What is left is handed out one at a time, never a key twice, then 412 for both.
    loop {
        let (status, body) = device_bundle(&stack, &alice.access, &bob.user_id, "*").await;
        if status == 412 {
            assert_eq!(ids(&body["error"]["devices"]), vec![1, 2], "{body}");
            break;
        }
        assert_eq!(status, 200, "{body}");
        for (d, e) in &bundle_entries(&body) {
            handed[*d as usize - 1].push(e["one_time_prekey"]["key_id"].as_u64().unwrap());
        }
    }
    for keys in &handed {
        let unique: BTreeSet<&u64> = keys.iter().collect();
        assert_eq!(unique.len(), 25, "{keys:?}");
        assert_eq!(keys.len(), 25, "{keys:?}");
    }
}

/// Senders racing a change of the recipient's device list: each sender connection sends to the
/// same fixed device list until, once the change is done (`changed`), it has sent `AFTER` more.
struct Race {
    changed: AtomicBool,
    accepted: AtomicUsize,
}

const SENDERS: usize = 6;
const AFTER: usize = 3;
/// A bound per sender, should the change never come: with `PACE` it covers a change that takes
/// 15 s on a loaded machine, and all senders together stay under the test's `INBOX_MAX` (5000).
const MAX_SENDS: usize = 800;
/// The first sends go back to back, so the change lands among running sends; then each sender
/// waits this long between sends.
const BURST: usize = 20;
const PACE: Duration = Duration::from_millis(20);

/// A send of the race: its id (also its body), whether it started after the change, its reply.
type Outcome = (String, bool, Value);

fn race_senders(
    stack: &Stack,
    sender: &User,
    to: &str,
    targets: &[(u64, u64)],
    race: &Arc<Race>,
) -> Vec<tokio::task::JoinHandle<Vec<Outcome>>> {
    (0..SENDERS)
        .map(|s| {
            let url = stack.ws_url(&sender.access);
            let to = to.to_string();
            let targets = targets.to_vec();
            let race = race.clone();
            tokio::spawn(async move {
                let mut ws = Ws::connect(&url).await.expect("handshake");
                let mut out = Vec::new();
                let mut after = 0;
                for i in 0..MAX_SENDS {
                    let started_after = race.changed.load(Ordering::SeqCst);
                    if started_after {
                        after += 1;
                        if after > AFTER {
                            break;
                        }
                    }
                    let id = format!("{s}:{i}");
                    let messages = targets
                        .iter()
                        .map(|&(d, r)| message(d, r, id.as_bytes()))
                        .collect();
                    let reply = send_messages(&mut ws, &to, &id, messages).await;
                    if reply["type"] == "sent" {
                        race.accepted.fetch_add(1, Ordering::SeqCst);
                    }
                    out.push((id, started_after, reply));
                    let pause = if i < BURST {
                        Duration::from_millis(2)
                    } else {
                        PACE
                    };
                    tokio::time::sleep(pause).await;
                }
                assert!(
                    after > 0,
                    "sender {s}: {MAX_SENDS} sends and the change had not come"
                );
                out
            })
        })
        .collect()
}

impl Race {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            changed: AtomicBool::new(false),
            accepted: AtomicUsize::new(0),
        })
    }

    /// Waits until `n` sends were accepted, so that the change lands while sends run.
    async fn accepted_at_least(&self, n: usize) {
        eventually(
            &format!("{n} sends accepted before the change"),
            async || self.accepted.load(Ordering::SeqCst) >= n,
        )
        .await
    }
}

async fn outcomes(tasks: Vec<tokio::task::JoinHandle<Vec<Outcome>>>) -> Vec<Outcome> {
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("sender task"));
    }
    all
}

/// The bodies (send ids) a device holds, fetched on a fresh connection.
async fn held(stack: &Stack, device: &Device) -> Vec<String> {
    let mut ws = device.connect(stack).await;
    let got = ws.fetch_all().await;
    ws.close().await;
    got.iter()
        .map(|e| String::from_utf8(body_of(e)).expect("utf-8 body"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sends_racing_a_link_are_stored_for_device_1_or_refused_as_missing_device_2() {
    let stack = Stack::with_env(&[("INBOX_MAX", "5000")]).await;
    let (alice, bob) = User::pair(&stack).await;
    let bob1 = Device::primary(&bob);
    let race = Race::new();
    let tasks = race_senders(
        &stack,
        &alice,
        &bob.user_id,
        &[(1, PRIMARY_REGISTRATION_ID)],
        &race,
    );
    race.accepted_at_least(12).await;
    let bob2 = link(&stack, &bob, 2002).await;
    race.changed.store(true, Ordering::SeqCst);

    let mut accepted = BTreeSet::new();
    let mut refused = 0;
    for (id, after, reply) in outcomes(tasks).await {
        if reply["type"] == "sent" {
            assert!(
                !after,
                "{id}: accepted for device 1 alone after the link: {reply}"
            );
            assert_eq!(deliveries(&reply), vec![(1, "queued".into())], "{reply}");
            accepted.insert(id);
        } else {
            assert_mismatched(&reply, &id, &[2], &[]);
            refused += 1;
        }
    }
    assert!(refused >= SENDERS * AFTER, "{refused} refused");
    let stored = held(&stack, &bob1).await;
    assert_eq!(
        stored.len(),
        accepted.len(),
        "stored twice or refused yet stored"
    );
    assert_eq!(stored.into_iter().collect::<BTreeSet<_>>(), accepted);
    assert!(held(&stack, &bob2).await.is_empty(), "device 2 got a copy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sends_racing_a_removal_are_stored_for_both_devices_or_refused_as_extra() {
    let stack = Stack::with_env(&[("INBOX_MAX", "5000")]).await;
    let (alice, bob) = User::pair(&stack).await;
    let bob1 = Device::primary(&bob);
    let bob2 = link(&stack, &bob, 2002).await;
    let race = Race::new();
    let targets = [(1, PRIMARY_REGISTRATION_ID), (2, bob2.registration_id)];
    let tasks = race_senders(&stack, &alice, &bob.user_id, &targets, &race);
    race.accepted_at_least(12).await;
    let (status, body) = remove_device(&stack, &bob.access, "2").await;
    assert_eq!(status, 204, "{body}");
    race.changed.store(true, Ordering::SeqCst);

    let mut accepted = BTreeSet::new();
    let mut refused = 0;
    for (id, after, reply) in outcomes(tasks).await {
        if reply["type"] == "sent" {
            assert!(!after, "{id}: accepted for a removed device: {reply}");
            assert_eq!(
                deliveries(&reply),
                vec![(1, "queued".into()), (2, "queued".into())],
                "{reply}"
            );
            accepted.insert(id);
        } else {
            assert_mismatched(&reply, &id, &[], &[2]);
            refused += 1;
        }
    }
    assert!(refused >= SENDERS * AFTER, "{refused} refused");
    assert!(
        !has_device_inbox(&stack, &bob.user_id, 2).await,
        "stored for device 2 after its removal"
    );
    let stored = held(&stack, &bob1).await;
    assert_eq!(
        stored.len(),
        accepted.len(),
        "stored twice or refused yet stored"
    );
    assert_eq!(stored.into_iter().collect::<BTreeSet<_>>(), accepted);
}
