//! Two warm connection functions are two `Relay` values over the same stores, each with its own
//! in-process cache of connections: what one instance changes, the other must honour.

use std::sync::Arc;
use std::time::Duration;

use relay_tests::client::{unique_username, Identity};
use relay_tests::stack::{config_with_tables, test_env};
use shared::clock::ManualClock;
use shared::model::{LoginRequest, RegisterRequest};
use shared::storage::{PushError, Pusher};
use shared::App;

struct Silent;

#[async_trait::async_trait]
impl Pusher for Silent {
    async fn push(&self, _: &str, _: &str) -> Result<(), PushError> {
        Ok(())
    }
    async fn close(&self, _: &str) -> Result<(), PushError> {
        Ok(())
    }
}

#[tokio::test]
async fn a_connection_renewed_on_one_instance_is_not_ended_by_another() {
    let (config, _) = config_with_tables(&test_env()).await;
    let clock = ManualClock::new();
    let one = App::from_config_with_clock(config.clone(), clock.clone())
        .await
        .expect("app");
    let other = App::from_config_with_clock(config.clone(), clock.clone())
        .await
        .expect("app");
    let (a, b) = (one.relay(Arc::new(Silent)), other.relay(Arc::new(Silent)));

    let (username, password) = (unique_username("inst"), "correct horse battery".to_string());
    let registration = Identity::new().registration(&username, &password, 1, 0);
    let request: RegisterRequest = serde_json::from_value(registration).expect("request");
    one.accounts
        .register(request, "198.51.100.1")
        .await
        .expect("register");
    let login = || LoginRequest {
        username: username.clone(),
        password: password.clone(),
        device_id: None,
    };
    let first = one
        .accounts
        .login(login(), "198.51.100.1")
        .await
        .expect("login");
    a.connect("conn-1", Some(&first.access_token), "198.51.100.1", false)
        .await
        .expect("connect");

    // Two seconds before the first token runs out, the other instance serves (and caches) the
    // connection; then the client renews it through the first instance.
    let lifetime = config.jwt.access_ttl + config.jwt.leeway;
    clock.advance(lifetime - Duration::from_secs(2));
    b.ping("conn-1").await.expect("served before expiry");
    let second = one
        .accounts
        .login(login(), "198.51.100.1")
        .await
        .expect("login");
    a.renew("conn-1", &second.access_token)
        .await
        .expect("renewed");

    // Past the first token, within the other instance's cache window: still served.
    clock.advance(Duration::from_secs(3));
    b.ping("conn-1")
        .await
        .expect("the renewal made on the first instance holds on the other");
}
