//! Typed configuration read once at cold start from the environment. Every variable is declared
//! once in `settings` (the rate limits in `rate_limits`); each section parses its own, and
//! `Config::from_lookup` only adds the checks that span sections. `reference` renders the
//! configuration tables of README.md and docs/api.md §8 from the declarations.

mod attachments;
mod devices;
mod env;
mod groups;
mod inbox;
mod jwt;
mod rate_limits;
mod redis;
pub mod reference;
pub mod settings;
mod timings;

pub use attachments::AttachmentsConfig;
pub use devices::{DeviceLimits, KeyLimits};
pub use env::{invalid, Env};
pub use groups::GroupLimits;
pub use inbox::{
    stored_envelope_bytes, InboxLimits, DEFAULT_INBOX_MAX_BYTES, ENVELOPE_OVERHEAD_BYTES,
};
pub use jwt::{Argon2Params, JwtConfig};
pub use rate_limits::{Bucket, Limit, RateLimits};
pub use redis::{redis_seeds, RedisWait};
pub use timings::RelayTimings;

/// Largest HTTP request body by default: a full key upload (100 Kyber keys) fits.
pub const DEFAULT_MAX_REQUEST_BYTES: usize =
    settings::RELAY_MAX_REQUEST_BYTES.default_number() as usize;

#[derive(Debug, Clone)]
pub struct Config {
    /// One URL, or for a cluster one or more comma-separated seed URLs (`redis://` or `rediss://`).
    pub redis_url: String,
    /// Redis Cluster (`REDIS_CLUSTER=true`, or several seed URLs): keys are routed by hash slot and
    /// the slot map follows failovers and resharding.
    pub redis_cluster: bool,
    /// `REDIS_WAIT=REPLICAS/MILLIS`: wait for replicas after storing envelopes (unset: don't).
    pub redis_wait: Option<RedisWait>,
    /// Prepended to every Redis key, so several deployments can share one Redis.
    pub redis_prefix: String,
    /// DynamoDB tables are `<prefix>-users`, `<prefix>-keys`, `<prefix>-sessions`,
    /// `<prefix>-groups`.
    pub table_prefix: String,
    pub jwt: JwtConfig,
    pub argon2: Argon2Params,
    pub inbox: InboxLimits,
    pub rate_limits: RateLimits,
    pub keys: KeyLimits,
    pub devices: DeviceLimits,
    pub attachments: Option<AttachmentsConfig>,
    pub groups: GroupLimits,
    /// Live WebSocket connections per user; a new one past it closes the oldest.
    pub max_connections_per_user: u32,
    /// Largest accepted HTTP request body.
    pub max_request_bytes: usize,
    /// API Gateway Management API endpoint for pushing to WebSocket connections.
    pub ws_management_endpoint: Option<String>,
    pub relay: RelayTimings,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    #[error("environment variable {0} is required but not set")]
    Missing(String),
    #[error("environment variable {var} is invalid: expected {expected}")]
    Invalid { var: String, expected: &'static str },
    #[error("environment variable {var} names a secret that could not be read: {detail}")]
    Secret { var: String, detail: String },
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads from any source of variables; `from_env` passes the process environment.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env = Env::new(&get);
        let jwt = JwtConfig::from_env(&env)?;
        let inbox = InboxLimits::from_env(&env)?;
        let rate_limits = RateLimits::from_env(&env)?;
        // A largest body must fit one sender's byte budget, or it could never be sent.
        if (rate_limits.message_bytes.capacity as usize) < inbox.max_body_bytes {
            return Err(invalid(
                Limit::MessageBytes {
                    sender: uuid::Uuid::nil(),
                }
                .setting(),
                "a COUNT of at least MESSAGE_MAX_BYTES (one largest body)",
            ));
        }
        let redis = redis::RedisSettings::from_env(&env)?;
        Ok(Self {
            redis_url: redis.url,
            redis_cluster: redis.cluster,
            redis_wait: redis.wait,
            redis_prefix: redis.prefix,
            table_prefix: env.string(&settings::RELAY_TABLE_PREFIX),
            jwt,
            argon2: Argon2Params::from_env(&env)?,
            inbox,
            rate_limits,
            keys: KeyLimits::from_env(&env)?,
            devices: DeviceLimits::from_env(&env)?,
            attachments: AttachmentsConfig::from_env(&env)?,
            groups: GroupLimits::from_env(&env)?,
            max_connections_per_user: env.number_at_least(
                &settings::MAX_CONNECTIONS_PER_USER,
                1,
                "at least 1",
            )?,
            max_request_bytes: env.number(&settings::RELAY_MAX_REQUEST_BYTES)?,
            ws_management_endpoint: env.set(&settings::WS_MANAGEMENT_ENDPOINT),
            relay: RelayTimings::from_env(&env)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::time::Duration;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn missing_variable_is_named() {
        let err = Config::from_lookup(lookup(&[("JWT_SECRET", SECRET)])).unwrap_err();
        assert_eq!(err, ConfigError::Missing("REDIS_URL".into()));
        assert!(err.to_string().contains("REDIS_URL"));
    }

    #[test]
    fn relay_timings_default_below_the_function_timeout_and_a_short_lease_is_refused() {
        let base = [("JWT_SECRET", SECRET), ("REDIS_URL", "redis://x")];
        let c = Config::from_lookup(lookup(&base)).unwrap();
        assert_eq!(c.relay.session_check, Duration::from_secs(5));
        assert_eq!(c.relay.fetch_deadline, Duration::from_secs(10));
        assert_eq!(c.relay.fetch_lease, Duration::from_secs(30));
        let short = [base[0], base[1], ("FETCH_LEASE_MS", "10000")];
        let err = Config::from_lookup(lookup(&short)).unwrap_err();
        assert!(err.to_string().contains("FETCH_LEASE_MS"), "{err}");
        let bad = [base[0], base[1], ("FETCH_DEADLINE_MS", "soon")];
        let err = Config::from_lookup(lookup(&bad)).unwrap_err();
        assert!(err.to_string().contains("FETCH_DEADLINE_MS"), "{err}");
    }

    #[test]
    fn short_secret_is_refused() {
        let err = Config::from_lookup(lookup(&[
            ("JWT_SECRET", "short"),
            ("REDIS_URL", "redis://x"),
        ]))
        .unwrap_err();
        assert!(err.to_string().contains("JWT_SECRET"));
    }

    #[test]
    fn defaults_follow_the_spec() {
        let c = Config::from_lookup(lookup(&[
            ("JWT_SECRET", SECRET),
            ("REDIS_URL", "redis://x"),
        ]))
        .unwrap();
        assert_eq!(c.inbox.max_messages, 1000);
        assert_eq!(c.inbox.ttl, Duration::from_secs(30 * 86_400));
        assert_eq!(c.inbox.max_bytes, 8 * 1024 * 1024);
        assert_eq!(
            c.rate_limits.message_bytes,
            Bucket::new(8 * 1024 * 1024, 60)
        );
        assert_eq!(c.rate_limits.message_pair, Bucket::new(100, 60));
        assert_eq!(c.rate_limits.connect, Bucket::new(20, 60));
        assert_eq!(c.rate_limits.connect_ip, Bucket::new(120, 60));
        assert_eq!(c.max_connections_per_user, 10);
        assert_eq!(c.jwt.access_ttl, Duration::from_secs(900));
        assert_eq!(
            c.argon2,
            Argon2Params {
                m_kib: 19_456,
                t: 2,
                p: 1
            }
        );
        assert_eq!(c.rate_limits.login_failures, Bucket::new(5, 900));
        assert_eq!(c.rate_limits.login_failures_user, Bucket::new(10, 600));
        assert_eq!(c.jwt.refresh_grace, Duration::from_secs(10));
        assert!(
            !format!("{c:?}").contains(SECRET),
            "Debug output leaks the secret"
        );
    }

    #[test]
    fn buckets_and_numbers_are_validated() {
        let base = [("JWT_SECRET", SECRET), ("REDIS_URL", "redis://x")];
        let mut bad = base.to_vec();
        bad.push(("RATE_LIMIT_AUTH", "five"));
        let err = Config::from_lookup(lookup(&bad)).unwrap_err();
        assert!(err.to_string().contains("RATE_LIMIT_AUTH"));
        let mut bad = base.to_vec();
        bad.push(("INBOX_MAX", "-3"));
        assert!(Config::from_lookup(lookup(&bad))
            .unwrap_err()
            .to_string()
            .contains("INBOX_MAX"));
        let mut ok = base.to_vec();
        ok.push(("RATE_LIMIT_MESSAGES", "50/0.5"));
        let c = Config::from_lookup(lookup(&ok)).unwrap();
        assert_eq!(c.rate_limits.messages.capacity, 50);
        assert!((c.rate_limits.messages.refill_per_ms() - 0.1).abs() < 1e-9);
    }

    #[test]
    fn inbox_bytes_and_byte_quota_must_hold_one_largest_message() {
        let base = [("JWT_SECRET", SECRET), ("REDIS_URL", "redis://x")];
        for (var, value) in [
            ("INBOX_MAX_BYTES", "65536"),
            ("INBOX_MAX_BYTES", "lots"),
            ("RATE_LIMIT_MESSAGE_BYTES", "1000/1"),
            ("RATE_LIMIT_MESSAGE_PAIR", "0/1"),
        ] {
            let mut env = base.to_vec();
            env.push((var, value));
            let err = Config::from_lookup(lookup(&env)).unwrap_err();
            assert!(err.to_string().contains(var), "{var}={value}: {err}");
        }
        let mut env = base.to_vec();
        env.extend([("MESSAGE_MAX_BYTES", "1000"), ("INBOX_MAX_BYTES", "2000")]);
        let c = Config::from_lookup(lookup(&env)).unwrap();
        assert_eq!(c.inbox.max_bytes, 2000);
    }

    #[test]
    fn device_settings_are_checked() {
        let base = [("JWT_SECRET", SECRET), ("REDIS_URL", "redis://x")];
        let c = Config::from_lookup(lookup(&base)).unwrap();
        assert_eq!(c.devices, DeviceLimits::default());
        for (var, value) in [
            ("MAX_DEVICES", "0"),
            ("MAX_DEVICES", "256"),
            ("PROVISIONING_TTL_SECS", "0"),
            ("PROVISIONING_MAX_BYTES", "big"),
            ("BUNDLE_WITHOUT_ONE_TIME", "maybe"),
        ] {
            let mut env = base.to_vec();
            env.push((var, value));
            let err = Config::from_lookup(lookup(&env)).unwrap_err();
            assert!(err.to_string().contains(var), "{var}={value}: {err}");
        }
        let mut env = base.to_vec();
        env.extend([("MAX_DEVICES", "2"), ("BUNDLE_WITHOUT_ONE_TIME", "1")]);
        let c = Config::from_lookup(lookup(&env)).unwrap();
        assert_eq!(
            (c.devices.max_devices, c.devices.bundle_without_one_time),
            (2, true)
        );
    }

    #[test]
    fn redis_mode_and_wait() {
        let with = |pairs: &[(&'static str, &'static str)]| {
            let mut all = vec![("JWT_SECRET", SECRET)];
            all.extend_from_slice(pairs);
            Config::from_lookup(lookup(&all))
        };
        let c = with(&[("REDIS_URL", "redis://127.0.0.1:6379")]).unwrap();
        assert!(!c.redis_cluster);
        assert_eq!(c.redis_wait, None);
        let c = with(&[
            ("REDIS_URL", "rediss://cache.example:6379"),
            ("REDIS_CLUSTER", "true"),
        ])
        .unwrap();
        assert!(c.redis_cluster);
        let c = with(&[(
            "REDIS_URL",
            "redis://127.0.0.1:7000, redis://127.0.0.1:7001",
        )])
        .unwrap();
        assert!(c.redis_cluster, "several seeds mean a cluster");
        assert_eq!(
            redis_seeds(&c.redis_url),
            ["redis://127.0.0.1:7000", "redis://127.0.0.1:7001"]
        );
        let c = with(&[("REDIS_URL", "redis://x"), ("REDIS_WAIT", "1/50")]).unwrap();
        assert_eq!(
            c.redis_wait,
            Some(RedisWait {
                replicas: 1,
                timeout: Duration::from_millis(50)
            })
        );
        for (pairs, var) in [
            (
                vec![("REDIS_URL", "redis://x"), ("REDIS_CLUSTER", "maybe")],
                "REDIS_CLUSTER",
            ),
            (
                vec![
                    ("REDIS_URL", "redis://a,redis://b"),
                    ("REDIS_CLUSTER", "false"),
                ],
                "REDIS_URL",
            ),
            (vec![("REDIS_URL", "redis://a,rediss://b")], "REDIS_URL"),
            (vec![("REDIS_URL", "http://a")], "REDIS_URL"),
            (vec![("REDIS_URL", " , ")], "REDIS_URL"),
            (
                vec![("REDIS_URL", "redis://x"), ("REDIS_WAIT", "1")],
                "REDIS_WAIT",
            ),
            (
                vec![("REDIS_URL", "redis://x"), ("REDIS_WAIT", "1/0")],
                "REDIS_WAIT",
            ),
        ] {
            let err = with(&pairs).unwrap_err();
            assert!(err.to_string().contains(var), "{pairs:?}: {err}");
        }
    }

    #[test]
    fn attachment_upload_budgets_per_account_age_and_address() {
        let base = [("JWT_SECRET", SECRET), ("REDIS_URL", "redis://x")];
        let c = Config::from_lookup(lookup(&base)).unwrap();
        assert_eq!(c.rate_limits.attachments, Bucket::new(30, 1800));
        assert_eq!(c.rate_limits.attachments_new, Bucket::new(10, 3600));
        assert_eq!(c.rate_limits.attachments_ip, Bucket::new(120, 1800));
        for var in ["RATE_LIMIT_ATTACHMENTS_NEW", "RATE_LIMIT_ATTACHMENTS_IP"] {
            let mut bad = base.to_vec();
            bad.push((var, "10"));
            let err = Config::from_lookup(lookup(&bad)).unwrap_err();
            assert!(err.to_string().contains(var), "{var}: {err}");
        }
    }

    #[test]
    fn key_limits_and_their_buckets() {
        let base = [("JWT_SECRET", SECRET), ("REDIS_URL", "redis://x")];
        let c = Config::from_lookup(lookup(&base)).unwrap();
        assert_eq!(
            c.keys,
            KeyLimits {
                max_one_time_prekeys: 1000,
                max_key_packages: 200,
                new_account_age: Duration::from_secs(86_400)
            }
        );
        assert_eq!(c.rate_limits.bundle_target_new, Bucket::new(10, 3600));
        // One requester's share stays well below the smaller of the target's budgets.
        assert_eq!(c.rate_limits.bundle_pair, Bucket::new(3, 3600));
        assert!(
            c.rate_limits.bundle_pair.refill_per_ms()
                < c.rate_limits.bundle_target_new.refill_per_ms() / 3.0
        );
        for (var, value) in [
            ("MAX_ONE_TIME_PREKEYS", "99"),
            ("MAX_ONE_TIME_PREKEYS", "lots"),
            ("NEW_ACCOUNT_AGE_SECS", "-1"),
            ("RATE_LIMIT_BUNDLE_TARGET", "0/60"),
            ("RATE_LIMIT_BUNDLE_TARGET_NEW", "x"),
            ("RATE_LIMIT_LOOKUP", "5"),
            ("RATE_LIMIT_KEYS_UPLOAD", "5/0"),
        ] {
            let mut bad = base.to_vec();
            bad.push((var, value));
            let err = Config::from_lookup(lookup(&bad)).unwrap_err();
            assert!(err.to_string().contains(var), "{var}={value}: {err}");
        }
    }
}
