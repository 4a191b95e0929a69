//! A relay stack per test: its own tables and Redis key prefix on the shared servers, and its own
//! gateway on a free port, torn down when dropped.

use std::collections::HashMap;
use std::net::SocketAddr;

use rand::Rng;
use redis::AsyncCommands;
use shared::clock::ManualClock;
use shared::Config;
use std::sync::Arc;
use tokio::sync::oneshot;

use crate::servers::{servers, TEST_BUCKET};

pub struct Stack {
    pub addr: SocketAddr,
    pub config: Config,
    pub http: reqwest::Client,
    pub dynamodb: aws_sdk_dynamodb::Client,
    /// The gateway's Management API listener (loopback), when the stack runs one.
    pub management: Option<SocketAddr>,
    /// The in-process gateway's clock (none for a gateway elsewhere).
    clock: Option<Arc<ManualClock>>,
    stop: Option<oneshot::Sender<()>>,
    stop_management: Option<oneshot::Sender<()>>,
}

fn rand_name() -> String {
    let n: u64 = rand::thread_rng().gen();
    format!("t{n:x}")
}

/// Environment a test stack runs with: rate limits off and cheap hashing unless a test sets
/// them.
pub fn test_env() -> HashMap<String, String> {
    let s = servers();
    let prefix = rand_name();
    [
        ("JWT_SECRET", rand_name() + &rand_name() + &rand_name()),
        ("REDIS_URL", s.redis_url.clone()),
        ("RELAY_REDIS_PREFIX", format!("{prefix}:")),
        ("RELAY_TABLE_PREFIX", prefix),
        ("ARGON2_M_KIB", "4096".into()),
        ("ARGON2_T", "1".into()),
        // Attachments on the process's S3 server (`set_aws_env` points the SDK at it).
        ("ATTACHMENTS_BUCKET", TEST_BUCKET.into()),
    ]
    .map(|(k, v)| (k.to_string(), v))
    .into_iter()
    .chain(limits_off())
    .collect()
}

/// `tests/limits-off.env`: the rate limits out of the way (the one copy; local/test sources it).
const LIMITS_OFF: &str = include_str!("../limits-off.env");

/// The variables of `tests/limits-off.env`.
pub fn limits_off() -> Vec<(String, String)> {
    LIMITS_OFF
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub fn set_aws_env() {
    // The SDK reads these; every stack of the process uses the same DynamoDB and S3 servers.
    // Set once: the tests of the binary run on threads beside each other, and the environment
    // is the process's.
    static SET: std::sync::Once = std::sync::Once::new();
    SET.call_once(|| {
        let s = servers();
        std::env::set_var("AWS_ENDPOINT_URL_DYNAMODB", &s.dynamodb_url);
        std::env::set_var("AWS_ENDPOINT_URL_S3", &s.s3_url);
        set_aws_credentials();
    });
}

/// The harness's dummy credentials: DynamoDB engines accept any; the S3 server is started with
/// these and refuses requests signed with others.
pub const TEST_ACCESS_KEY: &str = "test";
pub const TEST_SECRET_KEY: &str = "test";

/// Dummy credentials and region.
pub fn set_aws_credentials() {
    std::env::set_var("AWS_ACCESS_KEY_ID", TEST_ACCESS_KEY);
    std::env::set_var("AWS_SECRET_ACCESS_KEY", TEST_SECRET_KEY);
    std::env::set_var("AWS_REGION", "us-east-1");
}

/// `env`'s configuration with its tables created on the process's DynamoDB engine (as a cold
/// start or `local-gateway --create-tables` would), and the client that created them.
pub async fn config_with_tables(
    env: &HashMap<String, String>,
) -> (Config, aws_sdk_dynamodb::Client) {
    let config = Config::from_lookup(|k| env.get(k).cloned()).expect("test config");
    set_aws_env();
    let dynamodb = shared::storage::dynamodb::client_from_env().await;
    shared::storage::dynamodb::tables::create_tables(&dynamodb, &config.table_prefix)
        .await
        .expect("create tables");
    (config, dynamodb)
}

impl Stack {
    pub async fn start() -> Self {
        Self::with_env(&[]).await
    }

    /// A stack with some variables of `test_env` replaced.
    pub async fn with_env(overrides: &[(&str, &str)]) -> Self {
        let mut env = test_env();
        for (k, v) in overrides {
            env.insert(k.to_string(), v.to_string());
        }
        Self::from_env(env).await
    }

    /// A stack where these variables of `test_env` are unset, so the code's defaults apply (a
    /// rate limit as deployed, rather than out of the way).
    pub async fn with_defaults(unset: &[&str]) -> Self {
        let mut env = test_env();
        for k in unset {
            env.remove(*k);
        }
        Self::from_env(env).await
    }

    async fn from_env(env: HashMap<String, String>) -> Self {
        let (config, dynamodb) = config_with_tables(&env).await;
        let clock = ManualClock::new();
        let sockets = local_gateway::sockets::Sockets::default();
        let blobs = shared::storage::s3::blobs(&config).await;
        let app = shared::App::from_parts(
            config.clone(),
            clock.clone(),
            Some(Arc::new(sockets.clone())),
            blobs,
        )
        .await
        .expect("app");
        let settings = local_gateway::cli::Settings::from_lookup(|k| env.get(k).cloned())
            .expect("gateway settings");
        let gateway = local_gateway::in_process_with(app, sockets, config.max_request_bytes)
            .with_settings(&settings);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let management_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let management = management_listener.local_addr().expect("addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let (stop_management, management_stopped) = oneshot::channel::<()>();
        tokio::spawn(local_gateway::serve_management(
            management_listener,
            gateway.clone(),
            async move {
                let _ = management_stopped.await;
            },
        ));
        tokio::spawn(local_gateway::serve(listener, gateway, async move {
            let _ = stopped.await;
        }));
        Self {
            addr,
            config,
            http: reqwest::Client::new(),
            dynamodb,
            management: Some(management),
            clock: Some(clock),
            stop: Some(stop),
            stop_management: Some(stop_management),
        }
    }

    /// Moves the gateway's clock forward: tokens, sessions and envelopes age without a wait.
    pub fn advance(&self, by: std::time::Duration) {
        self.clock
            .as_ref()
            .expect("only an in-process stack's clock can be advanced")
            .advance(by);
    }

    /// A stack whose gateway runs elsewhere (e.g. a `local-gateway` process started with
    /// `config`'s variables) on the DynamoDB engine at `dynamodb_url`; nothing is stopped when
    /// it is dropped.
    pub async fn attach(addr: SocketAddr, config: Config, dynamodb_url: &str) -> Self {
        set_aws_credentials();
        let dynamodb = shared::storage::dynamodb::client_for_endpoint(dynamodb_url).await;
        Self {
            addr,
            config,
            http: reqwest::Client::new(),
            dynamodb,
            management: None,
            clock: None,
            stop: None,
            stop_management: None,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn ws_url(&self, token: &str) -> String {
        format!("ws://{}/ws?token={}", self.addr, token)
    }

    /// A Redis connection to the stack's server (or cluster), for checks of what is stored.
    pub async fn redis(&self) -> shared::storage::redis::RedisConnection {
        shared::storage::redis::connect_from(&self.config)
            .await
            .expect("redis")
    }

    /// The stack's Redis adapter, as the gateway builds it: for tests that play a function
    /// instance dying half-way through an operation.
    pub async fn redis_store(&self) -> shared::storage::redis::RedisStore {
        shared::storage::redis::RedisStore::new(
            self.redis().await,
            &self.config.redis_prefix,
            &self.config.inbox,
        )
    }

    /// The Redis key layout of the stack (the adapters' own, not a copy).
    pub fn redis_keys(&self) -> shared::storage::redis::RedisKeys {
        shared::storage::redis::RedisKeys::new(&self.config.redis_prefix)
    }

    pub fn inbox_key(&self, user_id: &str) -> String {
        self.redis_keys()
            .inbox(uuid::Uuid::parse_str(user_id).expect("a user id"))
    }

    /// Whether `user_id`'s inbox key exists in Redis (anything is stored for the user).
    pub async fn has_inbox(&self, user_id: &str) -> bool {
        self.redis()
            .await
            .exists(self.inbox_key(user_id))
            .await
            .expect("EXISTS")
    }

    /// Every item of one of the stack's tables (`users`, `keys`, `sessions`, `groups`), read
    /// directly.
    pub async fn items(
        &self,
        name: &str,
    ) -> Vec<std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>> {
        let out = self
            .dynamodb
            .scan()
            .table_name(self.table(name))
            .send()
            .await
            .expect("scan");
        out.items.unwrap_or_default()
    }

    /// The stack's table of that role (`users`, `keys`, `sessions`, `groups`), named as the
    /// adapters name it.
    pub fn table(&self, name: &str) -> String {
        let t = shared::storage::dynamodb::Tables::with_prefix(&self.config.table_prefix);
        match name {
            "users" => t.users,
            "keys" => t.keys,
            "sessions" => t.sessions,
            "groups" => t.groups,
            other => panic!("no table {other:?}"),
        }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(stop) = self.stop_management.take() {
            let _ = stop.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    /// A rate limit added to the code but not to `tests/limits-off.env` would throttle every
    /// suite that assumes the limits are out of the way.
    #[test]
    fn limits_off_lifts_every_rate_limit() {
        let off = super::limits_off();
        for setting in shared::config::RateLimits::SETTINGS {
            assert!(
                off.iter().any(|(var, _)| var == setting.var),
                "tests/limits-off.env does not set {}",
                setting.var
            );
        }
    }
}
