//! Everything the relay logs during a whole user journey, captured: no password, token, key or
//! payload may appear in it.

use std::io::Write;
use std::sync::{Arc, Mutex};

use relay_tests::client::{login, put_auth, refresh};
use relay_tests::{Stack, User};
use serde_json::json;
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

#[tokio::test]
async fn logs_of_a_whole_journey_hold_no_secret_or_payload() {
    // It installs the global subscriber and reads everything the process logs.
    if !relay_tests::run_alone!() {
        return;
    }
    let capture = Capture::default();
    let sink = capture.clone();
    tracing_subscriber::fmt()
        .with_env_filter(
            "debug,shared=trace,users=trace,keys=trace,connection=trace,local_gateway=trace",
        )
        .json()
        .with_writer(move || sink.clone())
        .init();
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

    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
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
}
