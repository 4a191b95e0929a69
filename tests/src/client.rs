//! A test client that plays a Signal app: makes keys, signs them (XEdDSA), registers, logs in,
//! and talks to the relay over HTTP and WebSocket.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use rand::Rng;
use serde_json::{json, Value};
use shared::crypto::xeddsa::KeyPair;
use shared::validation::encode;
use tokio_tungstenite::tungstenite::Message;

use crate::stack::Stack;

pub fn unique_username(tag: &str) -> String {
    let n: u32 = rand::thread_rng().gen();
    format!("{tag}_{n:08x}")
}

pub fn ec_key() -> Vec<u8> {
    KeyPair::generate(&mut rand::thread_rng()).public_key()
}

pub fn kyber_key() -> Vec<u8> {
    let mut k = vec![0u8; shared::validation::KYBER_KEY_LEN];
    rand::thread_rng().fill(&mut k[..]);
    k[0] = shared::validation::KYBER_KEY_PREFIX;
    k
}

/// The identity of a test user and the keys it publishes.
pub struct Identity {
    pub pair: KeyPair,
}

impl Default for Identity {
    fn default() -> Self {
        Self::new()
    }
}

impl Identity {
    pub fn new() -> Self {
        Self {
            pair: KeyPair::generate(&mut rand::thread_rng()),
        }
    }

    pub fn public(&self) -> String {
        encode(&self.pair.public_key())
    }

    pub fn signed(&self, key_id: u32, public_key: &[u8]) -> Value {
        let sig = self.pair.sign(public_key, &mut rand::thread_rng());
        json!({"key_id": key_id, "public_key": encode(public_key), "signature": encode(&sig)})
    }

    pub fn one_time(&self, ids: std::ops::Range<u32>) -> Vec<Value> {
        ids.map(|id| json!({"key_id": id, "public_key": encode(&ec_key())}))
            .collect()
    }

    pub fn kyber_one_time(&self, ids: std::ops::Range<u32>) -> Vec<Value> {
        ids.map(|id| self.signed(id, &kyber_key())).collect()
    }

    /// A complete registration body with `n` EC and `k` Kyber one-time prekeys.
    pub fn registration(&self, username: &str, password: &str, n: u32, k: u32) -> Value {
        json!({
            "username": username,
            "password": password,
            "registration_id": 1234,
            "identity_key": self.public(),
            "signed_prekey": self.signed(1, &ec_key()),
            "one_time_prekeys": self.one_time(1..n + 1),
            "kyber_last_resort_prekey": self.signed(9000, &kyber_key()),
            "kyber_one_time_prekeys": self.kyber_one_time(100..100 + k),
        })
    }
}

pub struct User {
    pub username: String,
    pub password: String,
    pub user_id: String,
    pub access: String,
    pub refresh: String,
    pub identity: Identity,
}

async fn send(request: reqwest::RequestBuilder) -> reqwest::Response {
    request.send().await.expect("request")
}

pub async fn post(stack: &Stack, path: &str, body: &Value) -> (u16, Value) {
    status_json(send(stack.http.post(stack.url(path)).json(body)).await).await
}

pub async fn status_json(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    let text = r.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

pub async fn post_auth_json(stack: &Stack, path: &str, token: &str, body: &Value) -> (u16, Value) {
    let request = stack
        .http
        .post(stack.url(path))
        .bearer_auth(token)
        .json(body);
    status_json(send(request).await).await
}

pub async fn get_auth(stack: &Stack, path: &str, token: &str) -> (u16, Value) {
    status_json(send(stack.http.get(stack.url(path)).bearer_auth(token)).await).await
}

pub async fn put_auth(stack: &Stack, path: &str, token: &str, body: &Value) -> (u16, Value) {
    let request = stack
        .http
        .put(stack.url(path))
        .bearer_auth(token)
        .json(body);
    status_json(send(request).await).await
}

pub async fn delete_auth(stack: &Stack, path: &str, token: &str) -> u16 {
    let request = stack.http.delete(stack.url(path)).bearer_auth(token);
    send(request).await.status().as_u16()
}

/// `POST /v1/sessions`, the response as it came (for its headers).
pub async fn login_response(stack: &Stack, username: &str, password: &str) -> reqwest::Response {
    let body = json!({"username": username, "password": password});
    send(stack.http.post(stack.url("/v1/sessions")).json(&body)).await
}

/// `POST /v1/sessions`: the status and the body.
pub async fn login(stack: &Stack, username: &str, password: &str) -> (u16, Value) {
    status_json(login_response(stack, username, password).await).await
}

/// A successful login: the new session's access and refresh tokens.
pub async fn session(stack: &Stack, username: &str, password: &str) -> (String, String) {
    let (status, tokens) = login(stack, username, password).await;
    assert_eq!(status, 200, "login: {tokens}");
    (
        tokens["access_token"].as_str().expect("access").to_string(),
        tokens["refresh_token"]
            .as_str()
            .expect("refresh")
            .to_string(),
    )
}

/// `POST /v1/sessions/refresh`: the status and the body.
pub async fn refresh(stack: &Stack, refresh_token: &str) -> (u16, Value) {
    post(
        stack,
        "/v1/sessions/refresh",
        &json!({"refresh_token": refresh_token}),
    )
    .await
}

/// Asserts that `r` carries a `Retry-After` of 1 to `max_secs` seconds.
pub fn assert_retry_after(r: &reqwest::Response, max_secs: u64) {
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=max_secs).contains(&retry), "Retry-After {retry}");
}

/// Asserts a 429 `rate_limited` refusal whose `Retry-After` is 1 to `max_secs` seconds.
pub async fn assert_rate_limited(r: reqwest::Response, max_secs: u64) {
    assert_eq!(r.status(), 429);
    assert_retry_after(&r, max_secs);
    let b: Value = r.json().await.unwrap();
    assert_eq!(error_code(&b), "rate_limited");
}

/// Asserts the API's error shape and returns the code.
pub fn error_code(body: &Value) -> &str {
    let code = body["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("not an error body: {body}"));
    assert!(
        body["error"]["message"].is_string(),
        "error without message: {body}"
    );
    code
}

/// A user to register: `User::builder(&stack)`, the counts it needs, then `create`.
pub struct NewUser<'a> {
    stack: &'a Stack,
    one_time_prekeys: u32,
    kyber_one_time_prekeys: u32,
    attempts: u64,
}

impl NewUser<'_> {
    /// EC one-time prekeys uploaded with the registration (default 1: one first contact).
    pub fn one_time_prekeys(mut self, count: u32) -> Self {
        self.one_time_prekeys = count;
        self
    }

    /// Kyber one-time prekeys uploaded with the registration, beside the last-resort Kyber key
    /// every registration has (default 0: bundles carry the last-resort key).
    pub fn kyber_one_time_prekeys(mut self, count: u32) -> Self {
        self.kyber_one_time_prekeys = count;
        self
    }

    /// Registration and login tried up to `attempts` times while answered 503 (a DynamoDB
    /// engine may refuse concurrent transactions with a conflict, nothing written), as a client
    /// under load retries; default 1: a refusal fails the test.
    pub fn attempts(mut self, attempts: u64) -> Self {
        self.attempts = attempts.max(1);
        self
    }

    /// Registers, then logs in.
    pub async fn create(self) -> User {
        let stack = self.stack;
        let identity = Identity::new();
        let username = unique_username("u");
        let password = "correct horse battery".to_string();
        let registration = identity.registration(
            &username,
            &password,
            self.one_time_prekeys,
            self.kyber_one_time_prekeys,
        );
        let (status, body) = self
            .retried(|| post(stack, "/v1/users", &registration))
            .await;
        assert_eq!(status, 200, "register: {body}");
        let user_id = body["user_id"].as_str().expect("user_id").to_string();
        let (status, tokens) = self.retried(|| login(stack, &username, &password)).await;
        assert_eq!(status, 200, "login: {tokens}");
        let token = |name: &str| tokens[name].as_str().expect("token").to_string();
        User {
            access: token("access_token"),
            refresh: token("refresh_token"),
            username,
            password,
            user_id,
            identity,
        }
    }

    async fn retried<F: std::future::Future<Output = (u16, Value)>>(
        &self,
        mut request: impl FnMut() -> F,
    ) -> (u16, Value) {
        let mut attempt = 1;
        loop {
            let (status, body) = request().await;
            if status != 503 || attempt >= self.attempts {
                return (status, body);
            }
            // Backing off, as a client does: the conflict is another request's transaction.
            tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
            attempt += 1;
        }
    }
}

impl User {
    /// A user to register on `stack`, with 1 EC and no Kyber one-time prekeys unless told.
    pub fn builder(stack: &Stack) -> NewUser<'_> {
        NewUser {
            stack,
            one_time_prekeys: 1,
            kyber_one_time_prekeys: 0,
            attempts: 1,
        }
    }

    /// Another session of this user (a second device, or a login after the clock moved past the
    /// access token's lifetime): its access and refresh tokens.
    pub async fn log_in(&self, stack: &Stack) -> (String, String) {
        session(stack, &self.username, &self.password).await
    }

    /// Alice and Bob, one one-time prekey each: the two ends of most relay tests.
    pub async fn pair(stack: &Stack) -> (Self, Self) {
        (
            Self::builder(stack).create().await,
            Self::builder(stack).create().await,
        )
    }

    pub async fn bundle_of(&self, stack: &Stack, user_id: &str) -> (u16, Value) {
        get_auth(stack, &format!("/v1/users/{user_id}/bundle"), &self.access).await
    }

    /// `PUT /v1/keys` with `body`: the status and the reply.
    pub async fn put_keys(&self, stack: &Stack, body: &Value) -> (u16, Value) {
        put_auth(stack, "/v1/keys", &self.access, body).await
    }

    pub async fn counts(&self, stack: &Stack) -> (u64, u64) {
        let (s, b) = get_auth(stack, "/v1/keys/count", &self.access).await;
        assert_eq!(s, 200, "count: {b}");
        (
            b["one_time_prekeys"].as_u64().unwrap(),
            b["kyber_one_time_prekeys"].as_u64().unwrap(),
        )
    }

    pub async fn connect(&self, stack: &Stack) -> Ws {
        Ws::connect(&stack.ws_url(&self.access))
            .await
            .expect("websocket handshake")
    }
}

type Stream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub struct Ws {
    pub stream: Stream,
}

impl Ws {
    /// Connects; on a refused handshake returns the HTTP status.
    pub async fn connect(url: &str) -> Result<Self, u16> {
        match tokio_tungstenite::connect_async(url).await {
            Ok((stream, _)) => Ok(Self { stream }),
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => Err(resp.status().as_u16()),
            Err(e) => panic!("websocket connect failed: {e}"),
        }
    }

    pub async fn send(&mut self, frame: Value) {
        self.stream
            .send(Message::Text(frame.to_string().into()))
            .await
            .expect("ws send");
    }

    pub async fn send_raw(&mut self, text: &str) {
        self.stream
            .send(Message::Text(text.to_string().into()))
            .await
            .expect("ws send");
    }

    /// The next JSON frame, or None after `wait`.
    pub async fn recv_within(&mut self, wait: Duration) -> Option<Value> {
        loop {
            match tokio::time::timeout(wait, self.stream.next()).await {
                Ok(Some(Ok(Message::Text(t)))) => {
                    return Some(serde_json::from_str(&t).expect("json frame"))
                }
                Ok(Some(Ok(_))) => continue,
                _ => return None,
            }
        }
    }

    pub async fn recv(&mut self) -> Value {
        self.recv_within(Duration::from_secs(10))
            .await
            .expect("a frame within 10 s")
    }

    /// Receives until a frame of `kind` arrives; message envelopes seen on the way are collected.
    pub async fn until(&mut self, kind: &str, seen: &mut Vec<Value>) -> Value {
        loop {
            let f = self.recv().await;
            if f["type"] == "messages" {
                seen.extend(f["messages"].as_array().expect("messages").iter().cloned());
            }
            if f["type"] == kind {
                return f;
            }
        }
    }

    pub async fn send_message(&mut self, to: &str, id: &str, body: &[u8]) -> Value {
        self.send(json!({"action": "send", "to": to, "id": id, "body": encode(body)}))
            .await;
        let mut pushed = Vec::new();
        let reply = self.until_reply(&mut pushed).await;
        assert!(pushed.is_empty(), "unexpected messages to the sender");
        reply
    }

    /// The next reply that is not a pushed `messages` frame.
    pub async fn until_reply(&mut self, pushed: &mut Vec<Value>) -> Value {
        loop {
            let f = self.recv().await;
            if f["type"] == "messages" {
                pushed.extend(f["messages"].as_array().expect("messages").iter().cloned());
            } else {
                return f;
            }
        }
    }

    /// The frames the server queued for this socket before its answer to a `ping` sent now.
    /// The relay pushes what a request makes it push before it answers the request, and one
    /// socket's frames arrive in order: once a request is answered, whatever it pushed here
    /// comes before this pong, so an empty answer shows that nothing was pushed, without a
    /// quiet wait that only makes that likely.
    pub async fn frames_before_pong(&mut self) -> Vec<Value> {
        self.send(json!({"action": "ping"})).await;
        let mut frames = Vec::new();
        loop {
            let f = self.recv().await;
            if f["type"] == "pong" {
                return frames;
            }
            frames.push(f);
        }
    }

    /// `fetch` and everything it yields, up to `drained`. A fetch answered `unavailable` (one
    /// stopped at its deadline, or a failed write) is sent again, as a client does.
    pub async fn fetch_all(&mut self) -> Vec<Value> {
        let mut seen = Vec::new();
        for _ in 0..100 {
            self.send(json!({"action": "fetch"})).await;
            loop {
                let f = self.recv().await;
                if f["type"] == "messages" {
                    seen.extend(f["messages"].as_array().expect("messages").iter().cloned());
                } else if f["type"] == "drained" {
                    return seen;
                } else if f["type"] == "error" && f["code"] == "unavailable" {
                    break;
                }
            }
        }
        panic!("no fetch drained the inbox in 100 attempts");
    }

    pub async fn close(mut self) {
        let _ = self.stream.close(None).await;
    }
}

/// Whether the server closes `ws` within `wait` (a Close frame or the end of the stream); the
/// text frames read on the way are returned too.
pub async fn closed_within(ws: &mut Ws, wait: Duration) -> (bool, Vec<Value>) {
    let mut frames = Vec::new();
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, ws.stream.next()).await {
            Err(_) => return (false, frames),
            Ok(None | Some(Err(_)) | Some(Ok(Message::Close(_)))) => return (true, frames),
            Ok(Some(Ok(Message::Text(t)))) => {
                frames.push(serde_json::from_str(&t).expect("json frame"))
            }
            Ok(Some(Ok(_))) => {}
        }
    }
}
