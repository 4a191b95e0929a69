//! Every environment variable the relay and its local gateway read, declared once: its name, its
//! default as it would be written in the environment, and what it means. Parsing takes its
//! default from here, and the configuration tables of README.md and docs/api.md §8 are generated
//! from here (`config::reference`); the rate limits are declared beside their buckets
//! (`config::rate_limits`) and join the tables from there.

/// One environment variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    pub var: &'static str,
    /// The value used when the variable is unset, written as it would be set; empty: none (the
    /// variable is required, or unset means off, as `shown` says).
    pub default: &'static str,
    /// The default column of the reference when the raw default needs words; `None`: the raw
    /// default in backticks.
    pub shown: Option<&'static str>,
    /// The meaning column of the reference. `§N.N` names a section of docs/api.md (linked in the
    /// generated tables).
    pub meaning: &'static str,
}

impl Setting {
    /// The default as a whole number, for constants that other code sizes things by (a default
    /// that is not one fails the build).
    pub const fn default_number(&self) -> u64 {
        let digits = self.default.as_bytes();
        assert!(!digits.is_empty(), "the default is not a whole number");
        let mut n: u64 = 0;
        let mut i = 0;
        while i < digits.len() {
            assert!(
                digits[i].is_ascii_digit(),
                "the default is not a whole number"
            );
            n = n * 10 + (digits[i] - b'0') as u64;
            i += 1;
        }
        n
    }

    /// The default column of the reference tables.
    pub fn default_column(&self) -> String {
        match self.shown {
            Some(shown) => shown.to_string(),
            None => format!("`{}`", self.default),
        }
    }
}

/// Declares each setting as a constant named as its variable, and `ALL` in this order.
macro_rules! settings {
    ($(
        $(#[doc = $doc:literal])*
        $var:ident = $default:literal $(shown $shown:literal)?, $meaning:literal;
    )*) => {
        $(
            $(#[doc = $doc])*
            pub const $var: Setting = Setting {
                var: stringify!($var),
                default: $default,
                shown: settings!(@shown $($shown)?),
                meaning: $meaning,
            };
        )*
        /// Every setting but the rate limits (`RateLimits::SETTINGS`), in the reference's order.
        pub const ALL: &[Setting] = &[$($var),*];
    };
    (@shown) => { None };
    (@shown $shown:literal) => { Some($shown) };
}

settings! {
    REDIS_URL = "" shown "(required)",
        "`redis://` or `rediss://` (TLS) URL; for a Redis Cluster one URL or several comma-separated seeds";
    REDIS_URL_SECRET_ID = "" shown "unset",
        "instead of `REDIS_URL`: the id of a Secrets Manager secret whose SecretString is the URL (e.g. with a password), read once at a function's cold start";
    REDIS_CLUSTER = "" shown "`false` (`true` when `REDIS_URL` has several seeds)",
        "a Redis Cluster (e.g. ElastiCache Serverless, which is cluster-mode only): keys routed by hash slot, slot map refreshed after a failover";
    REDIS_WAIT = "0" shown "off",
        "`REPLICAS/MILLIS`: after storing envelopes, wait (grouped) for that many replicas to acknowledge, so a failover loses less";
    RELAY_REDIS_PREFIX = "" shown "empty",
        "prepended to every Redis key, so several deployments can share one Redis";
    JWT_SECRET = "" shown "(required, ≥ 32 bytes)",
        "HS256 key for access tokens; `./local/up` generates one into `.local/jwt_secret`";
    JWT_SECRET_ID = "" shown "unset",
        "instead of `JWT_SECRET`: the id of a Secrets Manager secret whose SecretString is the key, read once at a function's cold start (what the AWS template sets, so the value is not in the Lambda configuration)";
    JWT_SECRET_GENERATION = "" shown "unset",
        "not read by the relay: the template sets it from its `JwtSecretGeneration` parameter, so that changing it after a key rotation starts new function instances, which read the new key at their cold start";
    JWT_ISSUER = "relay", "`iss` claim of access tokens";
    JWT_AUDIENCE = "relay-clients", "`aud` claim of access tokens";
    ACCESS_TOKEN_TTL_SECS = "900", "access token lifetime; also `expires_in`";
    REFRESH_TOKEN_TTL_SECS = "2592000" shown "`2592000` (30 d)",
        "refresh token lifetime, renewed on each rotation";
    REFRESH_GRACE_SECS = "10",
        "how long the refresh token rotated away last still yields the same successor (§3.2); `0` for strict rotation";
    JWT_LEEWAY_SECS = "60", "accepted clock skew on `exp`";
    ARGON2_M_KIB = "19456", "Argon2id memory cost (KiB)";
    ARGON2_T = "2", "Argon2id iterations";
    ARGON2_P = "1", "Argon2id parallelism";
    AWS_REGION = "us-east-1", "region of DynamoDB, S3 and Secrets Manager (a standard AWS SDK setting)";
    AWS_ENDPOINT_URL_DYNAMODB = "" shown "AWS",
        "a DynamoDB-API server instead of AWS (a standard AWS SDK setting); `./local/up` uses the Dynoxide engine embedded in the gateway (`http://127.0.0.1:15000`) unless this is set";
    RELAY_TABLE_PREFIX = "relay", "DynamoDB tables are `<prefix>-users`, `<prefix>-keys`, `<prefix>-sessions`, `<prefix>-groups`";
    INBOX_MAX = "1000",
        "envelopes kept per inbox (one inbox per device), in flight included, at least 1; full: the largest holder's oldest go, the sender's own on a tie, and new accounts together hold at most a quarter (§6.6)";
    INBOX_MAX_BYTES = "8388608" shown "`8388608` (8 MiB)",
        "stored bytes kept per inbox, in flight included, the same rule (§7.4); room for at least one envelope of `MESSAGE_MAX_BYTES`";
    INBOX_TTL_SECS = "2592000" shown "`2592000` (30 d)", "envelope lifetime and inbox key TTL";
    MESSAGE_MAX_BYTES = "65536", "largest decoded message body";
    NEW_ACCOUNT_AGE_SECS = "86400" shown "`86400` (1 d)",
        "accounts younger than this fetch bundles from `RATE_LIMIT_BUNDLE_TARGET_NEW`, upload from `RATE_LIMIT_ATTACHMENTS_NEW`, and together hold at most a quarter of any inbox (§6.6); `0`: none";
    MAX_ONE_TIME_PREKEYS = "1000",
        "one-time prekeys stored per device and kind (EC, Kyber), at least 100; an upload beyond it is refused (§7.5)";
    MLS_MAX_KEY_PACKAGES = "200",
        "MLS KeyPackages stored per device (the last-resort one not counted), at least 100; an upload beyond it is refused";
    MAX_DEVICES = "6", "devices per account, the primary included, 1–255 (§7.7)";
    PROVISIONING_TTL_SECS = "600",
        "lifetime of linking codes, provisioning addresses and provisioning sockets (a socket's first frame after it is refused and the socket closed)";
    PROVISIONING_MAX_BYTES = "8192", "largest decoded provisioning message";
    BUNDLE_WITHOUT_ONE_TIME = "false",
        "`true`/`1`/`yes`: the multi-device bundle route returns a device without EC one-time prekeys with `\"one_time_prekey\": null` (Signal's behaviour) instead of `412`";
    ATTACHMENTS_BUCKET = "" shown "unset (`./local/up`: `relay-attachments`)",
        "the S3 bucket of attachments (objects `attachments/<id>`); unset: the attachment routes answer `503 unavailable`. Set by the template on AWS (the attachments function only)";
    ATTACHMENT_MAX_BYTES = "104857600" shown "`104857600` (100 MiB)",
        "largest attachment, in bytes of ciphertext, 1 to 5 GiB; the upload URL signs the exact size (§7.8)";
    ATTACHMENT_URL_TTL_SECS = "300", "lifetime of presigned upload and download URLs, 1 to 604800";
    AWS_ENDPOINT_URL_S3 = "" shown "AWS",
        "an S3-API server instead of AWS S3, addressed path-style (`http://host:port/<bucket>/<key>`); `./local/up` starts s3s-fs on a free port and sets it. URLs are signed with the standard credentials (`AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`; on AWS the function's role): `./local/up` gives the gateway and its s3s-fs the access key id `local` and a secret key generated once per data directory (`.local/s3_secret`)";
    GROUP_MAX_MEMBERS = "1500",
        "roster entries per group, invitees included, 2 to 5000 (§5.19); a change past it: `409 group_full`";
    GROUP_META_MAX_BYTES = "4096", "largest decoded group `meta` blob (the clients' encrypted name and settings)";
    GROUP_PUSH_CONCURRENCY = "32",
        "pushes to online member devices a group send runs at once (on AWS each is a Management API call)";
    GROUP_PUSH_BUDGET_MS = "5000",
        "how long a group send pushes to online member devices; the devices not reached by then keep the message in their inbox (as if offline). Below the connection function's timeout";
    MAX_CONNECTIONS_PER_USER = "10",
        "live WebSocket connections per **device** (despite the name), at least 1; a new one past it closes the device's oldest (§6.1)";
    RELAY_MAX_REQUEST_BYTES = "524288", "largest HTTP request body (larger: `413`)";
    WS_MANAGEMENT_ENDPOINT = "" shown "unset",
        "API Gateway Management API endpoint for pushes and closes (set by the template on AWS); **required** by the connection and users functions (the users function closes the connections of ended sessions)";
    WS_SESSION_CHECK_SECS = "5",
        "how often at most the relay re-reads a connection's registration and its session's revocation (§6.8); `0`: on every frame";
    FETCH_DEADLINE_MS = "10000",
        "a `fetch` writes no new frame after this long (§6.3); keep it below the connection function's timeout minus one push (the template: 25 s − 10 s)";
    FETCH_LEASE_MS = "30000",
        "how long a batch a `fetch` (or a push) took stays in flight before the next fetch puts it back; also the **ack lease**: how long an envelope written to an ack-mode connection waits for its `ack` before it is delivered again (§6.9). More than `FETCH_DEADLINE_MS` and than the connection function's timeout";
    RELAY_LISTEN = "127.0.0.1:8080", "local gateway: the public listener (HTTP API and `/ws`)";
    RELAY_MANAGEMENT_LISTEN = "127.0.0.1:0" shown "`127.0.0.1:0` (a free port)",
        "local gateway: the Management API's listener (`/@connections/{id}`, unauthenticated, so loopback only and never on `RELAY_LISTEN`); required with `--lambda-endpoint` (`./local/up --lambda`: `127.0.0.1:8081`) (§7.6)";
    RELAY_WS_QUEUE_BYTES = "1048576",
        "local gateway: bytes waiting for one WebSocket before the connection is dropped (its unwritten messages stay queued); the socket's write buffer is bounded at twice this (§7.6)";
    RELAY_WS_IDLE_TIMEOUT_SECS = "600",
        "local gateway: a WebSocket without a message either way for this long is closed, as API Gateway closes it after its fixed 10 minutes (change it only to test) (§7.6)";
    RUST_LOG = "info", "log filter";
    RELAY_LOG_FORMAT = "text", "`json` for JSON lines (set on Lambda)";
    RELAY_METRICS = "on",
        "`off`: no metric is recorded. On, the local gateway serves Prometheus text at `/metrics` of its management listener and each Lambda function writes CloudWatch Embedded Metric Format lines (docs/operations.md)";
    RELAY_METRICS_NAMESPACE = "Relay",
        "the CloudWatch namespace of the functions' metrics (the template: `Relay/<stack>`, so that two stacks in one account keep theirs apart)";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variable_is_declared_once() {
        let mut names: Vec<&str> = ALL
            .iter()
            .chain(super::super::RateLimits::SETTINGS)
            .map(|s| s.var)
            .collect();
        let count = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), count, "a variable is declared twice");
    }
}
