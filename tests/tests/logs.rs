//! Everything the relay logs, captured: no password, token, key, payload, user id or username
//! may appear in it; every line of a request or WebSocket event carries its request id (and
//! connection id), and a failure is logged once, with its cause.

use std::io::Write;
use std::sync::{Arc, Mutex};

use relay_tests::client::{login, put_auth, refresh};
use relay_tests::servers::start_redis;
use relay_tests::{Stack, User};
use serde_json::{json, Value};
use shared::validation::encode;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Capture {
    /// Installs the process' subscriber (JSON lines), writing into the capture.
    fn install() -> Self {
        let capture = Capture::default();
        let sink = capture.clone();
        tracing_subscriber::fmt()
            .with_env_filter(
                "debug,shared=trace,users=trace,keys=trace,connection=trace,local_gateway=trace",
            )
            .json()
            .with_writer(move || sink.clone())
            .init();
        capture
    }

    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }

    /// The lines written so far, parsed.
    fn lines(&self) -> Vec<Value> {
        self.text()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }
}

fn message(line: &Value) -> &str {
    line["fields"]["message"].as_str().unwrap_or_default()
}

/// A field of the span the line was logged in (`""` when none).
fn span_field<'a>(line: &'a Value, name: &str) -> &'a str {
    line["span"][name].as_str().unwrap_or_default()
}

/// The lines of the relay's own code (its crates), not of libraries.
fn relay_lines(lines: &[Value]) -> Vec<&Value> {
    lines
        .iter()
        .filter(|l| {
            let target = l["target"].as_str().unwrap_or_default();
            [
                "shared",
                "users",
                "keys",
                "connection",
                "attachments",
                "groups",
                "local_gateway",
            ]
            .iter()
            .any(|c| target == *c || target.starts_with(&format!("{c}::")))
        })
        .collect()
}

#[tokio::test]
async fn logs_of_a_whole_journey_hold_no_secret_or_payload() {
    // It installs the global subscriber and reads everything the process logs.
    if !relay_tests::run_alone!() {
        return;
    }
    let capture = Capture::install();
    let stack = Stack::start().await;
    let alice = User::builder(&stack)
        .one_time_prekeys(2)
        .kyber_one_time_prekeys(1)
        .create()
        .await;
    let bob = User::builder(&stack)
        .one_time_prekeys(2)
        .kyber_one_time_prekeys(1)
        .create()
        .await;
    let (_, refreshed) = refresh(&stack, &alice.refresh).await;
    let (_, failed) = login(&stack, &bob.username, "wrong password 1").await;
    assert_eq!(failed["error"]["code"], "invalid_credentials");
    let upload = json!({"one_time_prekeys": bob.identity.one_time(10..12)});
    assert_eq!(
        put_auth(&stack, "/v1/keys", &bob.access, &upload).await.0,
        200
    );
    let (_, bundle) = alice.bundle_of(&stack, &bob.user_id).await;
    let secret_body = b"the plaintext-looking ciphertext 0123456789";
    let mut b = bob.connect(&stack).await;
    let mut a = alice.connect(&stack).await;
    a.send_message(&bob.user_id, "m", secret_body).await;
    b.recv().await;
    tracing::info!("journey done");

    let logs = capture.text();
    assert!(
        logs.contains("journey done") && logs.contains("registered"),
        "capture is not working"
    );
    let forbidden = [
        ("password", alice.password.clone()),
        ("wrong password", "wrong password 1".to_string()),
        ("access token", alice.access.clone()),
        (
            "access token signature",
            alice.access.rsplit('.').next().unwrap().to_string(),
        ),
        ("refresh token", alice.refresh.clone()),
        (
            "rotated refresh token",
            refreshed["refresh_token"].as_str().unwrap().to_string(),
        ),
        ("identity key", bob.identity.public()),
        (
            "signed prekey",
            bundle["signed_prekey"]["public_key"]
                .as_str()
                .unwrap()
                .to_string(),
        ),
        (
            "one-time prekey",
            bundle["one_time_prekey"]["public_key"]
                .as_str()
                .unwrap()
                .to_string(),
        ),
        (
            "kyber prekey",
            bundle["kyber_prekey"]["public_key"].as_str().unwrap()[..64].to_string(),
        ),
        ("payload", encode(secret_body)),
        (
            "payload bytes",
            String::from_utf8_lossy(secret_body).into_owned(),
        ),
        (
            "jwt secret",
            String::from_utf8(stack.config.jwt.secret.clone()).unwrap(),
        ),
    ];
    for (what, value) in forbidden {
        assert!(!logs.contains(&value), "the logs contain the {what}");
    }
    // Who talks to whom is not the relay's to write down: its own lines name no user.
    let lines = capture.lines();
    let own: String = relay_lines(&lines).iter().map(|l| l.to_string()).collect();
    for (what, value) in [
        ("user id", &alice.user_id),
        ("user id", &bob.user_id),
        ("username", &alice.username),
        ("username", &bob.username),
    ] {
        assert!(
            !own.contains(value.as_str()),
            "the relay's logs contain a {what}"
        );
    }
}

#[tokio::test]
async fn every_line_of_a_request_or_event_carries_its_request_id() {
    if !relay_tests::run_alone!() {
        return;
    }
    let capture = Capture::install();
    let stack = Stack::start().await;
    let alice = User::builder(&stack).create().await;
    let bob = User::builder(&stack).create().await;
    let mut b = bob.connect(&stack).await;
    let mut a = alice.connect(&stack).await;
    a.send_message(&bob.user_id, "m", b"hello").await;
    b.recv().await;

    let lines = capture.lines();
    let registered: Vec<&Value> = lines
        .iter()
        .filter(|l| message(l) == "registered")
        .collect();
    assert_eq!(registered.len(), 2, "one line per registration");
    let ids: Vec<&str> = registered
        .iter()
        .map(|l| span_field(l, "request_id"))
        .collect();
    for (line, id) in registered.iter().zip(&ids) {
        assert!(uuid::Uuid::parse_str(id).is_ok(), "no request id: {line}");
        assert_eq!(span_field(line, "route"), "POST /v1/users", "{line}");
    }
    assert_ne!(ids[0], ids[1], "two requests, two ids");

    let connected: Vec<&Value> = lines.iter().filter(|l| message(l) == "connected").collect();
    assert_eq!(connected.len(), 2, "one line per connection");
    for line in &connected {
        assert!(!span_field(line, "request_id").is_empty(), "{line}");
        assert!(!span_field(line, "connection_id").is_empty(), "{line}");
        assert_eq!(span_field(line, "route"), "$connect", "{line}");
    }
    drop((a, b));
}

#[tokio::test]
async fn a_failure_is_logged_once_with_its_cause() {
    if !relay_tests::run_alone!() {
        return;
    }
    let capture = Capture::install();
    let (port, mut redis) = start_redis();
    let url = format!("redis://127.0.0.1:{port}");
    let stack = Stack::with_env(&[("REDIS_URL", url.as_str())]).await;
    redis.kill().unwrap();
    redis.wait().unwrap();

    let r = stack.http.get(stack.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 503);

    let lines = capture.lines();
    let of_health: Vec<&Value> = lines
        .iter()
        .filter(|l| span_field(l, "route") == "GET /healthz")
        .collect();
    let request_id = span_field(
        of_health.first().expect("lines of the request"),
        "request_id",
    );
    assert!(!request_id.is_empty());
    let failures: Vec<&&Value> = of_health
        .iter()
        .filter(|l| matches!(l["level"].as_str(), Some("WARN" | "ERROR")))
        .collect();
    assert_eq!(failures.len(), 1, "logged once: {failures:?}");
    let failure = failures[0];
    assert_eq!(span_field(failure, "request_id"), request_id);
    assert_eq!(failure["fields"]["code"], "unavailable", "{failure}");
    let detail = failure["fields"]["detail"].as_str().unwrap_or_default();
    // The store and what went wrong with it, not just that something did.
    assert!(
        detail.starts_with("redis: ") && detail.len() > "redis: ".len() + 5,
        "{failure}"
    );
}
