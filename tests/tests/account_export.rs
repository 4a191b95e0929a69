//! `GET /v1/account/export` and `PATCH /v1/users/me` over real HTTP: an account built with two
//! devices, sessions, keys, queued envelopes, an attachment and a group, compared field by field
//! with its export (which holds no secret); renames raced over HTTP.

use std::collections::BTreeSet;

use redis::AsyncCommands;
use relay_tests::attachments::Upload;
use relay_tests::client::{
    assert_rate_limited, error_code, get_auth, login, post, post_auth_json, put_auth, refresh,
    status_json, unique_username, User,
};
use relay_tests::devices::{
    link_with_keys, list_devices, send_messages, token_claims, Device, LINKED_KYBER_LAST_RESORT_ID,
    LINKED_KYBER_ONE_TIME_FIRST, LINKED_SIGNED_PREKEY_ID,
};
use relay_tests::Stack;
use serde_json::{json, Value};
use shared::model::DeviceAddress;
use uuid::Uuid;

const LINKED_REGISTRATION_ID: u64 = 4321;

async fn export(stack: &Stack, token: &str) -> (u16, Value) {
    get_auth(stack, "/v1/account/export", token).await
}

async fn rename_response(stack: &Stack, token: &str, body: &Value) -> reqwest::Response {
    stack
        .http
        .patch(stack.url("/v1/users/me"))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .expect("PATCH /v1/users/me")
}

async fn rename(stack: &Stack, token: &str, username: &str) -> (u16, Value) {
    status_json(rename_response(stack, token, &json!({ "username": username })).await).await
}

fn ids(value: &Value) -> Vec<u64> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {value}"))
        .iter()
        .map(|v| v.as_u64().expect("an id"))
        .collect()
}

fn session_id(access: &str) -> String {
    token_claims(access)["sid"]
        .as_str()
        .expect("sid")
        .to_string()
}

/// The bytes of a device's inbox entries, read from Redis itself.
async fn stored_bytes(stack: &Stack, user_id: &str, device_id: u32) -> (u64, u64) {
    let device = DeviceAddress::new(Uuid::parse_str(user_id).unwrap(), device_id);
    let entries: Vec<Vec<u8>> = stack
        .redis()
        .await
        .lrange(stack.redis_keys().inbox(device), 0, -1)
        .await
        .expect("LRANGE");
    (
        entries.len() as u64,
        entries.iter().map(|e| e.len() as u64).sum(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_export_shows_what_the_account_holds_and_no_secret() {
    let stack = Stack::start().await;
    let before = shared::clock::unix_secs();
    let alice = User::builder(&stack)
        .one_time_prekeys(7)
        .kyber_one_time_prekeys(3)
        .create()
        .await;
    let bob = User::builder(&stack).create().await;
    let linked = link_with_keys(&stack, &alice, LINKED_REGISTRATION_ID, 5, 2).await;
    // A second session of device 1, whose refresh token is then rotated.
    let (second_access, second_refresh) = alice.log_in(&stack).await;
    let (s, rotated) = refresh(&stack, &second_refresh).await;
    assert_eq!(s, 200, "{rotated}");
    let rotated_refresh = rotated["refresh_token"].as_str().unwrap().to_string();

    // Three envelopes for each of alice's devices while she is offline.
    let primary = Device::primary(&alice);
    let bodies: Vec<Vec<u8>> = [100, 200, 300].iter().map(|&n| vec![7u8; n]).collect();
    let mut ws = Device::primary(&bob).connect(&stack).await;
    for (i, body) in bodies.iter().enumerate() {
        let reply = send_messages(
            &mut ws,
            &alice.user_id,
            &format!("m{i}"),
            vec![primary.message(body), linked.message(body)],
        )
        .await;
        assert_eq!(reply["type"], "sent", "{reply}");
    }
    ws.close().await;

    // Two upload URLs, one used: both are listed (the relay cannot tell which was used).
    let upload = Upload::grant(&stack, &alice.access, 1000).await;
    assert_eq!(upload.put(&[7u8; 1000]).await.0, 200);
    let unused = Upload::grant(&stack, &alice.access, 2048).await;
    let (s, group) = post_auth_json(
        &stack,
        "/v1/groups",
        &alice.access,
        &json!({"members": [bob.user_id]}),
    )
    .await;
    assert_eq!(s, 201, "{group}");
    let group_id = group["group_id"].as_str().unwrap().to_string();
    let (s, shares) = put_auth(
        &stack,
        "/v1/presence/shares",
        &alice.access,
        &json!({"user_ids": [bob.user_id], "last_seen": true}),
    )
    .await;
    assert_eq!(s, 200, "{shares}");

    let (s, doc) = export(&stack, &linked.access).await;
    assert_eq!(s, 200, "{doc}");
    let after = shared::clock::unix_secs();

    // Account and devices.
    assert_eq!(doc["account"]["user_id"], alice.user_id.as_str());
    assert_eq!(doc["account"]["username"], alice.username.as_str());
    let created = doc["account"]["created_at"].as_u64().unwrap();
    assert!((before..=after).contains(&created), "{created}");
    let (s, devices) = list_devices(&stack, &alice.access).await;
    assert_eq!(s, 200);
    assert_eq!(doc["devices"], devices["devices"]);
    assert_eq!(doc["devices"][1]["registration_id"], LINKED_REGISTRATION_ID);
    assert_eq!(doc["retired_registration_ids"], json!([]));
    assert!((before..=after + 1).contains(&doc["exported_at"].as_u64().unwrap()));

    // Sessions: device 1's two (one rotated) and the linked device's, no more.
    assert_eq!(doc["sessions_truncated"], false);
    let sessions = doc["sessions"].as_array().unwrap();
    let listed: BTreeSet<(String, u64)> = sessions
        .iter()
        .map(|s| {
            (
                s["session_id"].as_str().unwrap().to_string(),
                s["device_id"].as_u64().unwrap(),
            )
        })
        .collect();
    let expected: BTreeSet<(String, u64)> = [
        (session_id(&alice.access), 1),
        (session_id(&second_access), 1),
        (session_id(&linked.access), 2),
    ]
    .into();
    assert_eq!(listed, expected);
    for s in sessions {
        let created = s["created_at"].as_u64().expect("created_at");
        assert!((before..=after).contains(&created), "{s}");
        assert!(s["expires_at"].as_u64().unwrap() > after, "{s}");
        let rotated = s["session_id"] == session_id(&second_access).as_str();
        assert_eq!(s["last_refreshed_at"].is_u64(), rotated, "{s}");
    }

    // Keys: ids and counts as uploaded.
    let keys = doc["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0]["device_id"], 1);
    assert_eq!(keys[0]["signed_prekey_id"], 1);
    assert_eq!(keys[0]["kyber_last_resort_prekey_id"], 9000);
    assert_eq!(keys[0]["one_time_prekeys"]["count"], 7);
    assert_eq!(
        ids(&keys[0]["one_time_prekeys"]["ids"]),
        (1..=7).collect::<Vec<_>>()
    );
    assert_eq!(keys[0]["kyber_one_time_prekeys"]["count"], 3);
    assert_eq!(
        ids(&keys[0]["kyber_one_time_prekeys"]["ids"]),
        vec![100, 101, 102]
    );
    assert_eq!(keys[1]["device_id"], 2);
    assert_eq!(keys[1]["signed_prekey_id"], LINKED_SIGNED_PREKEY_ID);
    assert_eq!(
        keys[1]["kyber_last_resort_prekey_id"],
        LINKED_KYBER_LAST_RESORT_ID
    );
    assert_eq!(
        ids(&keys[1]["one_time_prekeys"]["ids"]),
        (1..=5).collect::<Vec<_>>()
    );
    let first = LINKED_KYBER_ONE_TIME_FIRST as u64;
    assert_eq!(
        ids(&keys[1]["kyber_one_time_prekeys"]["ids"]),
        vec![first, first + 1]
    );
    for k in keys {
        assert_eq!(k["mls_key_packages"], 0);
        assert_eq!(k["mls_last_resort_key_package"], false);
    }

    // Inboxes: three envelopes each, their bytes as Redis holds them, and the times of the
    // first and last (read back by fetching them afterwards).
    let inbox = doc["inbox"].as_array().unwrap();
    assert_eq!(inbox.len(), 2);
    for (entry, device_id) in inbox.iter().zip([1u32, 2]) {
        assert_eq!(entry["device_id"], device_id);
        let (count, bytes) = stored_bytes(&stack, &alice.user_id, device_id).await;
        assert_eq!(count, 3);
        assert_eq!(entry["queued"], count, "{entry}");
        assert_eq!(entry["bytes"], bytes, "{entry}");
        let bodies_len: u64 = bodies.iter().map(|b| b.len() as u64).sum();
        assert!(bytes > bodies_len, "{bytes}");
        assert_eq!(
            (
                entry["in_flight"].as_u64(),
                entry["in_flight_bytes"].as_u64()
            ),
            (Some(0), Some(0))
        );
    }
    let mut ws = primary.connect(&stack).await;
    let fetched = ws.fetch_all().await;
    ws.close().await;
    assert_eq!(fetched.len(), 3);
    let ttl_ms = stack.config.inbox.ttl.as_millis() as u64;
    let sent = |i: usize| fetched[i]["sent_at"].as_u64().unwrap();
    assert_eq!(inbox[0]["oldest_sent_at"], sent(0));
    assert_eq!(inbox[0]["newest_sent_at"], sent(2));
    assert_eq!(inbox[0]["oldest_expires_at"], sent(0) + ttl_ms);
    assert_eq!(inbox[0]["newest_expires_at"], sent(2) + ttl_ms);

    // The group, its role and state, and nothing of its roster.
    assert_eq!(
        doc["groups"],
        json!([{"group_id": group_id, "role": "admin", "state": "member"}])
    );
    assert_eq!(doc["groups_truncated"], false);
    let (s, bobs) = export(&stack, &bob.access).await;
    assert_eq!(s, 200, "{bobs}");
    assert_eq!(
        bobs["groups"],
        json!([{"group_id": group_id, "role": "member", "state": "invited"}])
    );

    // Presence: whom alice shows hers to.
    assert_eq!(
        doc["presence"],
        json!({"shares": [bob.user_id], "last_seen": true})
    );
    assert_eq!(bobs["presence"], json!({"shares": [], "last_seen": false}));

    // Attachments: exactly the two uploads, their sizes, and times of this test; each
    // expires with its object. Bob's export has none.
    let listed = doc["attachments"].as_array().expect("attachments");
    let mut got: Vec<(String, u64)> = listed
        .iter()
        .map(|a| {
            let created = a["created_at"].as_u64().unwrap();
            assert!((before..=after).contains(&created), "{a}");
            // The bucket's lifecycle: 30 days, rounded up to the next midnight UTC.
            let expiry = (created + 30 * 86_400).div_ceil(86_400) * 86_400;
            assert_eq!(a["expires_at"].as_u64().unwrap(), expiry);
            (
                a["attachment_id"].as_str().unwrap().to_string(),
                a["size"].as_u64().unwrap(),
            )
        })
        .collect();
    got.sort();
    let mut want = vec![(upload.id.clone(), 1000), (unused.id.clone(), 2048)];
    want.sort();
    assert_eq!(got, want);
    let created: Vec<u64> = listed
        .iter()
        .map(|a| a["created_at"].as_u64().unwrap())
        .collect();
    assert!(created.windows(2).all(|w| w[0] <= w[1]), "oldest first");
    assert_eq!(doc["attachments_truncated"], false);
    assert_eq!(bobs["attachments"], json!([]));
    let text = doc.to_string();

    // No secret and no message: tokens, refresh tokens, the password and its hash, the stored
    // refresh hashes, bodies and senders.
    let mut secrets = vec![
        alice.access.clone(),
        alice.refresh.clone(),
        second_access.clone(),
        second_refresh.clone(),
        rotated_refresh.clone(),
        rotated["access_token"].as_str().unwrap().to_string(),
        linked.access.clone(),
        linked.refresh.clone(),
        alice.password.clone(),
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &bodies[0]),
    ];
    for item in stack.items("users").await {
        if let Some(hash) = item.get("password_hash") {
            secrets.push(hash.as_s().unwrap().clone());
        }
    }
    for item in stack.items("sessions").await {
        for name in ["refresh_hash", "prev_hash", "next_sealed"] {
            if let Some(v) = item.get(name) {
                secrets.push(v.as_s().unwrap().clone());
            }
        }
    }
    assert!(secrets.len() > 12, "the sessions' hashes were read");
    for secret in &secrets {
        // Each secret and each of its dot-separated parts (a JWT's signature, a refresh
        // token's secret half).
        for part in std::iter::once(secret.as_str()).chain(secret.split('.')) {
            if part.len() >= 16 {
                assert!(!text.contains(part), "the export holds a secret: {part}");
            }
        }
    }
    assert!(!doc["inbox"].to_string().contains(&bob.user_id));
    assert!(!text.contains("password"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_are_rate_limited_per_user() {
    let stack = Stack::with_env(&[("RATE_LIMIT_EXPORT", "2/3600")]).await;
    let (alice, bob) = User::pair(&stack).await;
    for _ in 0..2 {
        let (s, doc) = export(&stack, &alice.access).await;
        assert_eq!(s, 200, "{doc}");
    }
    let r = stack
        .http
        .get(stack.url("/v1/account/export"))
        .bearer_auth(&alice.access)
        .send()
        .await
        .unwrap();
    assert_rate_limited(r, 1800).await;
    // Another account has its own bucket; no token, no export.
    assert_eq!(export(&stack, &bob.access).await.0, 200);
    let (s, _) = status_json(
        stack
            .http
            .get(stack.url("/v1/account/export"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 401);
}

/// Four accounts renamed to one free name at once, over HTTP: exactly one 200, the others 409;
/// the winner logs in by the new name and no longer by the old, lookups follow, and the old
/// name is registered by someone else at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_renames_to_one_name_give_it_to_one() {
    let stack = Stack::start().await;
    let users = futures::future::join_all((0..4).map(|_| User::builder(&stack).create())).await;
    let wanted = unique_username("r");
    let answers =
        futures::future::join_all(users.iter().map(|u| rename(&stack, &u.access, &wanted))).await;
    let winners: Vec<usize> = answers
        .iter()
        .enumerate()
        .filter(|(_, (s, _))| *s == 200)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(winners.len(), 1, "{answers:?}");
    let w = &users[winners[0]];
    assert_eq!(
        answers[winners[0]].1,
        json!({"user_id": w.user_id, "username": wanted})
    );
    for (i, (s, body)) in answers.iter().enumerate() {
        if i != winners[0] {
            assert_eq!((*s, error_code(body)), (409, "username_taken"), "{body}");
            // The losers keep their names.
            assert_eq!(
                login(&stack, &users[i].username, &users[i].password)
                    .await
                    .0,
                200
            );
        }
    }
    let (s, tokens) = login(&stack, &wanted, &w.password).await;
    assert_eq!(s, 200, "{tokens}");
    assert_eq!(tokens["user_id"], w.user_id.as_str());
    let (s, body) = login(&stack, &w.username, &w.password).await;
    assert_eq!((s, error_code(&body)), (401, "invalid_credentials"));
    let other = &users[(winners[0] + 1) % users.len()];
    let (s, found) = get_auth(
        &stack,
        &format!("/v1/users?username={wanted}"),
        &other.access,
    )
    .await;
    assert_eq!((s, &found["user_id"]), (200, &json!(w.user_id)), "{found}");
    let (s, _) = get_auth(
        &stack,
        &format!("/v1/users?username={}", w.username),
        &other.access,
    )
    .await;
    assert_eq!(s, 404);
    // The old name is free: someone registers it.
    let fresh = relay_tests::client::Identity::new();
    let (s, body) = post(
        &stack,
        "/v1/users",
        &fresh.registration(&w.username, "another good password", 1, 0),
    )
    .await;
    assert_eq!(s, 200, "{body}");
    // The export names the account by its new name.
    let (s, doc) = export(&stack, &w.access).await;
    assert_eq!((s, &doc["account"]["username"]), (200, &json!(wanted)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renames_are_validated_like_registration() {
    let stack = Stack::start().await;
    let (alice, bob) = User::pair(&stack).await;
    for bad in ["ab", &"a".repeat(33), "al ice", "älice", ""] {
        let (s, body) = rename(&stack, &alice.access, bad).await;
        assert_eq!(
            (s, error_code(&body)),
            (400, "invalid_request"),
            "{bad}: {body}"
        );
    }
    let (s, body) = status_json(rename_response(&stack, &alice.access, &json!({})).await).await;
    assert_eq!((s, error_code(&body)), (400, "invalid_request"), "{body}");
    let (s, body) = rename(&stack, &alice.access, &bob.username).await;
    assert_eq!((s, error_code(&body)), (409, "username_taken"), "{body}");
    // Names are case-insensitive: the lower-case form is stored.
    let upper = unique_username("Up").to_ascii_uppercase();
    let (s, body) = rename(&stack, &alice.access, &upper).await;
    assert_eq!(
        (s, &body["username"]),
        (200, &json!(upper.to_ascii_lowercase()))
    );
    // The same name again changes nothing.
    let (s, _) = rename(&stack, &alice.access, &upper).await;
    assert_eq!(s, 200);
    assert_eq!(login(&stack, &upper, &alice.password).await.0, 200);
    // A linked device may not rename the account; no token, no rename.
    let linked = link_with_keys(&stack, &alice, LINKED_REGISTRATION_ID, 1, 0).await;
    let (s, body) = rename(&stack, &linked.access, &unique_username("l")).await;
    assert_eq!((s, error_code(&body)), (403, "forbidden"), "{body}");
    let r = stack
        .http
        .patch(stack.url("/v1/users/me"))
        .json(&json!({"username": unique_username("n")}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renames_are_rate_limited_per_user() {
    let stack = Stack::with_env(&[("RATE_LIMIT_RENAME", "1/86400")]).await;
    let (alice, bob) = User::pair(&stack).await;
    assert_eq!(
        rename(&stack, &alice.access, &unique_username("a")).await.0,
        200
    );
    let r = rename_response(
        &stack,
        &alice.access,
        &json!({"username": unique_username("b")}),
    )
    .await;
    assert_rate_limited(r, 86400).await;
    assert_eq!(
        rename(&stack, &bob.access, &unique_username("c")).await.0,
        200
    );
}
