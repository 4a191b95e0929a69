//! Several devices per account: linking a device (the provisioning socket, linking
//! codes, `POST /v1/devices`), per-device sessions and bundles, and sends in the per-device form.

use std::time::Duration;

use base64::Engine;
use futures::SinkExt;
use serde_json::{json, Value};
use shared::validation::{base64, encode};
use tokio_tungstenite::tungstenite::Message;

use crate::client::{get_auth, post, status_json, Identity, User, Ws};
use crate::stack::Stack;

/// The registration id `Identity::registration` gives every primary device.
pub const PRIMARY_REGISTRATION_ID: u64 = 1234;

/// Key ids a linked device publishes (distinct from the primary's 1, 1.., 100.., 9000, so a
/// bundle shows whose keys it holds).
pub const LINKED_SIGNED_PREKEY_ID: u64 = 7;
pub const LINKED_KYBER_ONE_TIME_FIRST: u32 = 200;
pub const LINKED_KYBER_LAST_RESORT_ID: u64 = 9100;

/// One device of an account and its session.
#[derive(Clone, Debug)]
pub struct Device {
    pub user_id: String,
    pub device_id: u64,
    pub registration_id: u64,
    pub access: String,
    pub refresh: String,
}

impl Device {
    /// The primary device (1) of a user registered with `User::builder(..).create()`, with its first session.
    pub fn primary(user: &User) -> Self {
        Self {
            user_id: user.user_id.clone(),
            device_id: 1,
            registration_id: PRIMARY_REGISTRATION_ID,
            access: user.access.clone(),
            refresh: user.refresh.clone(),
        }
    }

    pub async fn connect(&self, stack: &Stack) -> Ws {
        Ws::connect(&stack.ws_url(&self.access))
            .await
            .expect("websocket handshake")
    }

    /// `GET /v1/keys/count` with this device's token: its EC and Kyber one-time prekeys.
    pub async fn counts(&self, stack: &Stack) -> (u64, u64) {
        let (s, b) = get_auth(stack, "/v1/keys/count", &self.access).await;
        assert_eq!(s, 200, "count of device {}: {b}", self.device_id);
        (
            b["one_time_prekeys"].as_u64().unwrap(),
            b["kyber_one_time_prekeys"].as_u64().unwrap(),
        )
    }

    /// This device's entry of a per-device `send`.
    pub fn message(&self, body: &[u8]) -> Value {
        message(self.device_id, self.registration_id, body)
    }
}

/// The anonymous provisioning socket of the local gateway.
pub fn provisioning_url(stack: &Stack) -> String {
    format!("ws://{}/ws/provisioning", stack.addr)
}

/// Opens a provisioning socket and asks for its address: the socket and the address.
pub async fn provisioning_socket(stack: &Stack) -> (Ws, String) {
    let mut ws = Ws::connect(&provisioning_url(stack))
        .await
        .expect("provisioning handshake");
    let address = provisioning_address(&mut ws).await;
    (ws, address)
}

/// Sends `provision` on a provisioning socket: the address of its `provisioning_address` reply.
pub async fn provisioning_address(ws: &mut Ws) -> String {
    ws.send(json!({"action": "provision"})).await;
    let reply = ws.recv().await;
    assert_eq!(reply["type"], "provisioning_address", "{reply}");
    reply["address"]
        .as_str()
        .unwrap_or_else(|| panic!("no address: {reply}"))
        .to_string()
}

/// `POST /v1/devices/provisioning` with `access`: the status and the body.
pub async fn request_code(stack: &Stack, access: &str) -> (u16, Value) {
    let request = stack
        .http
        .post(stack.url("/v1/devices/provisioning"))
        .bearer_auth(access);
    status_json(request.send().await.expect("request")).await
}

/// A linking code the primary (`access`) obtains.
pub async fn code(stack: &Stack, access: &str) -> String {
    let (status, body) = request_code(stack, access).await;
    assert_eq!(status, 200, "linking code: {body}");
    body["code"].as_str().expect("code").to_string()
}

/// `PUT /v1/provisioning/{address}` with `body` (already base64): the status and the body.
pub async fn provision(stack: &Stack, access: &str, address: &str, body: &str) -> (u16, Value) {
    let request = stack
        .http
        .put(stack.url(&format!("/v1/provisioning/{address}")))
        .bearer_auth(access)
        .json(&json!({"body": body}));
    status_json(request.send().await.expect("request")).await
}

/// A `POST /v1/devices` body: `code` and the keys of a new device of `identity`'s account, with
/// `n` EC and `k` Kyber one-time prekeys.
pub fn device_keys(identity: &Identity, code: &str, registration_id: u64, n: u32, k: u32) -> Value {
    json!({
        "code": code,
        "registration_id": registration_id,
        "signed_prekey": identity.signed(LINKED_SIGNED_PREKEY_ID as u32, &crate::client::ec_key()),
        "one_time_prekeys": identity.one_time(1..n + 1),
        "kyber_last_resort_prekey":
            identity.signed(LINKED_KYBER_LAST_RESORT_ID as u32, &crate::client::kyber_key()),
        "kyber_one_time_prekeys": identity
            .kyber_one_time(LINKED_KYBER_ONE_TIME_FIRST..LINKED_KYBER_ONE_TIME_FIRST + k),
    })
}

/// `POST /v1/devices` (no bearer): the status and the body.
pub async fn add_device(stack: &Stack, body: &Value) -> (u16, Value) {
    post(stack, "/v1/devices", body).await
}

/// The device a successful `POST /v1/devices` answer describes.
pub fn device_from(answer: &Value, registration_id: u64) -> Device {
    Device {
        user_id: answer["user_id"].as_str().expect("user_id").to_string(),
        device_id: answer["device_id"].as_u64().expect("device_id"),
        registration_id,
        access: answer["access_token"]
            .as_str()
            .expect("access_token")
            .to_string(),
        refresh: answer["refresh_token"]
            .as_str()
            .expect("refresh_token")
            .to_string(),
    }
}

/// Links a new device to `user` with `n` EC and `k` Kyber one-time prekeys: a code from the
/// primary, then `POST /v1/devices` (the provisioning message, which the relay never reads, is
/// not needed for that).
pub async fn link_with_keys(
    stack: &Stack,
    user: &User,
    registration_id: u64,
    n: u32,
    k: u32,
) -> Device {
    let code = code(stack, &user.access).await;
    let (status, answer) = add_device(
        stack,
        &device_keys(&user.identity, &code, registration_id, n, k),
    )
    .await;
    assert_eq!(status, 200, "link: {answer}");
    assert_eq!(answer["user_id"], user.user_id.as_str(), "{answer}");
    device_from(&answer, registration_id)
}

/// Links a new device with five EC and one Kyber one-time prekeys.
pub async fn link(stack: &Stack, user: &User, registration_id: u64) -> Device {
    link_with_keys(stack, user, registration_id, 5, 1).await
}

/// `GET /v1/devices` with `access`: the status and the body.
pub async fn list_devices(stack: &Stack, access: &str) -> (u16, Value) {
    get_auth(stack, "/v1/devices", access).await
}

/// The device ids `GET /v1/devices` lists, in the order listed.
pub async fn device_ids(stack: &Stack, access: &str) -> Vec<u64> {
    let (status, body) = list_devices(stack, access).await;
    assert_eq!(status, 200, "devices: {body}");
    body["devices"]
        .as_array()
        .unwrap_or_else(|| panic!("no devices list: {body}"))
        .iter()
        .map(|d| d["device_id"].as_u64().expect("device_id"))
        .collect()
}

/// `DELETE /v1/devices/{device_id}` with `access`: the status and the body (Null when empty).
pub async fn remove_device(stack: &Stack, access: &str, device_id: &str) -> (u16, Value) {
    let request = stack
        .http
        .delete(stack.url(&format!("/v1/devices/{device_id}")))
        .bearer_auth(access);
    status_json(request.send().await.expect("request")).await
}

/// `POST /v1/sessions` for `user`, with `device_id` when given: the status and the body.
pub async fn login_device(stack: &Stack, user: &User, device_id: Option<u64>) -> (u16, Value) {
    let mut body = json!({"username": user.username, "password": user.password});
    if let Some(d) = device_id {
        body["device_id"] = json!(d);
    }
    post(stack, "/v1/sessions", &body).await
}

/// `GET /v1/users/{user_id}/devices/{which}/bundle` (`which` a device id or `*`).
pub async fn device_bundle(
    stack: &Stack,
    access: &str,
    user_id: &str,
    which: &str,
) -> (u16, Value) {
    get_auth(
        stack,
        &format!("/v1/users/{user_id}/devices/{which}/bundle"),
        access,
    )
    .await
}

/// The device entries of a per-device bundle, by device id.
pub fn bundle_entries(bundle: &Value) -> std::collections::BTreeMap<u64, Value> {
    bundle["devices"]
        .as_array()
        .unwrap_or_else(|| panic!("no devices in the bundle: {bundle}"))
        .iter()
        .map(|e| (e["device_id"].as_u64().expect("device_id"), e.clone()))
        .collect()
}

/// The claims of a JWT, undecoded signature and all.
pub fn token_claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("a JWT");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url claims");
    serde_json::from_slice(&bytes).expect("json claims")
}

/// One entry of a per-device `send`.
pub fn message(device_id: u64, registration_id: u64, body: &[u8]) -> Value {
    json!({"device_id": device_id, "registration_id": registration_id, "body": encode(body)})
}

/// A `send` frame in the per-device form.
pub fn send_frame(to: &str, id: &str, messages: Vec<Value>) -> Value {
    json!({"action": "send", "id": id, "to": to, "messages": messages})
}

/// Sends a per-device `send` on `ws` and returns its reply; the sender gets no message pushed
/// on the way.
pub async fn send_messages(ws: &mut Ws, to: &str, id: &str, messages: Vec<Value>) -> Value {
    ws.send(send_frame(to, id, messages)).await;
    let mut pushed = Vec::new();
    let reply = ws.until_reply(&mut pushed).await;
    assert!(
        pushed.is_empty(),
        "messages pushed to the sending device: {pushed:?}"
    );
    reply
}

/// Each device's delivery in a `sent` reply, sorted by device id.
pub fn deliveries(reply: &Value) -> Vec<(u64, String)> {
    let mut out: Vec<(u64, String)> = reply["devices"]
        .as_array()
        .unwrap_or_else(|| panic!("no devices in the reply: {reply}"))
        .iter()
        .map(|d| {
            (
                d["device_id"].as_u64().expect("device_id"),
                d["delivery"].as_str().expect("delivery").to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

/// The sorted device ids of a list field (`missing_devices`, `extra_devices`, `stale_devices`,
/// an error body's `devices`); panics when the field is not a list.
pub fn ids(list: &Value) -> Vec<u64> {
    let mut out: Vec<u64> = list
        .as_array()
        .unwrap_or_else(|| panic!("not a list of device ids: {list}"))
        .iter()
        .map(|d| d.as_u64().expect("a device id"))
        .collect();
    out.sort();
    out
}

/// Asserts a `mismatched_devices` error frame for `id` with these missing and extra devices.
pub fn assert_mismatched(reply: &Value, id: &str, missing: &[u64], extra: &[u64]) {
    assert_eq!(reply["type"], "error", "{reply}");
    assert_eq!(reply["id"], id, "{reply}");
    assert_eq!(reply["code"], "mismatched_devices", "{reply}");
    assert!(reply["message"].is_string(), "{reply}");
    assert_eq!(ids(&reply["missing_devices"]), missing, "missing: {reply}");
    assert_eq!(ids(&reply["extra_devices"]), extra, "extra: {reply}");
}

/// Asserts a `stale_devices` error frame for `id` naming these devices.
pub fn assert_stale(reply: &Value, id: &str, stale: &[u64]) {
    assert_eq!(reply["type"], "error", "{reply}");
    assert_eq!(reply["id"], id, "{reply}");
    assert_eq!(reply["code"], "stale_devices", "{reply}");
    assert!(reply["message"].is_string(), "{reply}");
    assert_eq!(ids(&reply["stale_devices"]), stale, "stale: {reply}");
}

/// The decoded body of an envelope.
pub fn body_of(envelope: &Value) -> Vec<u8> {
    base64("body", envelope["body"].as_str().expect("body")).expect("base64 body")
}

/// `list` on a connection: how many envelopes wait in its device's inbox.
pub async fn pending(ws: &mut Ws) -> u64 {
    ws.send(json!({"action": "list"})).await;
    let reply = ws.recv().await;
    assert_eq!(reply["type"], "inbox", "{reply}");
    reply["pending"].as_u64().expect("pending")
}

/// The Redis key of a device's inbox: `{user}:inbox` for device 1, `{user}:d<n>:inbox` else.
pub fn device_inbox_key(stack: &Stack, user_id: &str, device_id: u64) -> String {
    let user_id = uuid::Uuid::parse_str(user_id).expect("a user id");
    let device_id = u32::try_from(device_id).expect("a device id");
    stack
        .redis_keys()
        .inbox(shared::model::DeviceAddress::new(user_id, device_id))
}

pub use crate::client::closed_within;

/// The connection is open and served: a ping gets its pong (messages pushed meanwhile are
/// skipped).
pub async fn answers_ping(ws: &mut Ws) -> bool {
    let ping = Message::Text(json!({"action": "ping"}).to_string().into());
    if ws.stream.send(ping).await.is_err() {
        return false;
    }
    loop {
        match ws.recv_within(Duration::from_secs(5)).await {
            Some(f) if f["type"] == "pong" => return true,
            Some(f) if f["type"] == "messages" => continue,
            _ => return false,
        }
    }
}

/// Whether a device's inbox key exists in Redis (anything is stored for that device).
pub async fn has_device_inbox(stack: &Stack, user_id: &str, device_id: u64) -> bool {
    use redis::AsyncCommands;
    stack
        .redis()
        .await
        .exists(device_inbox_key(stack, user_id, device_id))
        .await
        .expect("EXISTS")
}

/// Waits until the provisioning socket that `address` was issued to is gone for the relay: its
/// `$disconnect` has been handled (after the gateway dropped the socket), so a message to the
/// address can no longer reach it.
pub async fn wait_provisioning_socket_gone(stack: &Stack, address: &str) {
    use redis::AsyncCommands;
    let keys = stack.redis_keys();
    let mut redis = stack.redis().await;
    let connection: String = redis
        .get(keys.provisioning(address))
        .await
        .expect("the address's socket");
    let socket = keys.provisioning_socket(&connection);
    crate::eventually("the provisioning socket's disconnect", async || {
        let open: bool = redis.exists(&socket).await.expect("EXISTS");
        !open
    })
    .await
}

/// The device's address, as the relay's storage names it.
pub fn address(d: &Device) -> shared::model::DeviceAddress {
    shared::model::DeviceAddress::new(
        uuid::Uuid::parse_str(&d.user_id).expect("a user id"),
        d.device_id as u32,
    )
}

/// The raw entries of a device's inbox, read from Redis.
pub async fn entries(stack: &Stack, d: &Device) -> Vec<String> {
    use redis::AsyncCommands;
    let key = stack.redis_keys().inbox(address(d));
    stack
        .redis()
        .await
        .lrange(key, 0, -1)
        .await
        .expect("LRANGE")
}
