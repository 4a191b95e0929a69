//! Typed configuration read once at cold start from the environment.

use std::time::Duration;

/// A token bucket: `capacity` tokens, refilled at `capacity / period` per second.
/// Largest HTTP request body by default: a full key upload (100 Kyber keys) fits.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 512 * 1024;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    pub capacity: u32,
    pub period: Duration,
}

impl Bucket {
    pub const fn new(capacity: u32, period_secs: u64) -> Self {
        Self {
            capacity,
            period: Duration::from_secs(period_secs),
        }
    }

    /// Tokens regained per millisecond.
    pub fn refill_per_ms(&self) -> f64 {
        self.capacity as f64 / (self.period.as_millis().max(1) as f64)
    }

    fn parse(var: &str, raw: &str) -> Result<Self, ConfigError> {
        let bad = || ConfigError::Invalid {
            var: var.to_string(),
            expected: "COUNT/SECONDS, e.g. 5/900",
        };
        let (count, secs) = raw.split_once('/').ok_or_else(bad)?;
        let capacity: u32 = count.trim().parse().map_err(|_| bad())?;
        let secs: f64 = secs.trim().parse().map_err(|_| bad())?;
        if capacity == 0 || secs <= 0.0 {
            return Err(bad());
        }
        Ok(Self {
            capacity,
            period: Duration::from_secs_f64(secs),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimits {
    /// Failed logins per client IP.
    pub login_failures: Bucket,
    /// Failed logins per username, whatever the IP: a distributed guesser backs off too.
    pub login_failures_user: Bucket,
    /// Requests to the unauthenticated auth endpoints per client IP.
    pub auth: Bucket,
    /// Bundle fetches per requester.
    pub bundle: Bucket,
    /// Bundle fetches per requester → target pair.
    pub bundle_pair: Bucket,
    /// Messages per sender.
    pub messages: Bucket,
    /// Bundle fetches per target by established requesters (all of them together).
    pub bundle_target: Bucket,
    /// Bundle fetches per target by requesters whose account is younger than
    /// `KeyLimits::new_account_age` (all of them together).
    pub bundle_target_new: Bucket,
    /// Username lookups per requester.
    pub lookup: Bucket,
    /// Key uploads per user.
    pub keys_upload: Bucket,
    /// Message body bytes per sender: what one account may write into Redis.
    pub message_bytes: Bucket,
    /// Messages per sender → recipient pair.
    pub message_pair: Bucket,
    /// WebSocket handshakes (`$connect`) per user.
    pub connect: Bucket,
    /// WebSocket handshakes (`$connect`) per client IP, counted before the token is checked.
    pub connect_ip: Bucket,
    /// Client frames of any kind per user (a `send` also counts against `messages`).
    pub frames: Bucket,
    /// Linking codes and provisioning messages per account.
    pub provisioning: Bucket,
    /// Client frames per provisioning socket (it has no user to count them against).
    pub provisioning_frames: Bucket,
    /// Attachment uploads (presigned upload URLs) per user.
    pub attachments: Bucket,
    /// Attachment uploads per account younger than `KeyLimits::new_account_age`, instead of
    /// `attachments`.
    pub attachments_new: Bucket,
    /// Attachment uploads per client IP, all accounts together.
    pub attachments_ip: Bucket,
    /// Attachment downloads (presigned download URLs) per user.
    pub attachment_downloads: Bucket,
    /// `POST /v1/devices` (a linking code presented) per client IP.
    pub link: Bucket,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            login_failures: Bucket::new(5, 900),
            // 10 guesses at once, then one a minute: a typo-prone owner is never stuck for
            // long, while guessing one password from many addresses gets ~1,400 tries a day.
            login_failures_user: Bucket::new(10, 600),
            auth: Bucket::new(5, 1),
            bundle: Bucket::new(120, 60),
            // One requester's share of a target's budget (below): 3 fetches at once, then one
            // every 20 minutes, a twentieth of `bundle_target` and under a third of
            // `bundle_target_new`, so one requester hammering cannot lock out the others.
            // First contact from each of a few devices fits; each fetch takes at most one key
            // of every device of the target.
            bundle_pair: Bucket::new(3, 3600),
            messages: Bucket::new(200, 1),
            // Fetches of one target, each taking at most one key of each of its devices: a
            // device's usual batch of 100 one-time keys lasts at least an hour however many
            // accounts ask; contacts made in one sitting (a group of dozens) still fit.
            bundle_target: Bucket::new(60, 3600),
            // Throwaway accounts share a far smaller budget, so draining a target takes aged
            // accounts (and then still the hour above); a few real new contacts a day fit.
            bundle_target_new: Bucket::new(10, 3600),
            // Enough for a person adding contacts by name; enumeration gets ~1 name a minute.
            lookup: Bucket::new(30, 1800),
            // A client uploads on start and when its count runs low; a loop cannot flood.
            keys_upload: Bucket::new(10, 60),
            // 8 MiB at once (128 maximum-size bodies), then about 140 KB/s: far above what a
            // person types or a client syncs, yet one account needs about 20 hours to write
            // 10 GB, so the memory alarm fires long before the cache is full.
            message_bytes: Bucket::new(8 * 1024 * 1024, 60),
            // A busy chat with receipts stays far below; a flood into one inbox is slowed to
            // under 2 per second after a burst of 100.
            message_pair: Bucket::new(100, 60),
            // A client reconnecting after every network change, on a few devices, stays well
            // below; a handshake loop gets one every 3 s after a burst of 20.
            connect: Bucket::new(20, 60),
            // Wider, as many users may share one address (carrier NAT), yet a token-guessing
            // or reconnect flood from one host is slowed to 2 a second.
            connect_ip: Bucket::new(120, 60),
            // Above `messages`, so that limit stays the one a sender meets; what it bounds is
            // the frames that cost a Redis round trip without sending (fetch, list, ping).
            frames: Bucket::new(300, 1),
            // Linking a device takes a code and a message; a person retrying a few times fits.
            provisioning: Bucket::new(10, 600),
            // A provisioning socket needs a `provision` and a `ping` now and then (one every few
            // minutes keeps it from idling out): 5 at once, then one a minute. Its handshake
            // costs a `connect_ip` token, so one address gets about 10 such frames a second.
            provisioning_frames: Bucket::new(5, 300),
            // Codes are 256 random bits, so guessing is hopeless anyway; this bounds the cost.
            link: Bucket::new(10, 600),
            // A person sharing photos in bursts fits; a loop filling storage does not (30 at
            // once, then one a minute).
            attachments: Bucket::new(30, 1800),
            // A new account costs only a registration: until it is a day old, 10 at once (1 GiB
            // at the largest size), then one every 6 minutes, so registering many accounts does
            // not multiply what can be stored.
            attachments_new: Bucket::new(10, 3600),
            // Four accounts' worth: a household or office behind one address fits, while one
            // host with many accounts gets 4 URLs a minute however many it registers.
            attachments_ip: Bucket::new(120, 1800),
            // Scrolling back through a chat full of photos fits; a loop making storage serve one
            // file over and over (paid per GB) gets one URL every 6 s.
            attachment_downloads: Bucket::new(120, 720),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Argon2Params {
    pub m_kib: u32,
    pub t: u32,
    pub p: u32,
}

#[derive(Clone)]
pub struct JwtConfig {
    pub secret: Vec<u8>,
    pub issuer: String,
    pub audience: String,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    pub leeway: Duration,
    /// How long a rotated-away refresh token still yields its successor (0: not at all).
    pub refresh_grace: Duration,
}

impl std::fmt::Debug for JwtConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtConfig")
            .field("secret", &"<redacted>")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("access_ttl", &self.access_ttl)
            .field("refresh_ttl", &self.refresh_ttl)
            .field("refresh_grace", &self.refresh_grace)
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InboxLimits {
    pub max_messages: u32,
    pub ttl: Duration,
    /// Largest decoded message body.
    pub max_body_bytes: usize,
    /// Stored bytes one inbox may hold (envelopes as stored: about 4/3 of the bodies plus
    /// ~160 bytes each).
    pub max_bytes: u64,
}

impl InboxLimits {
    /// Envelopes and bytes that accounts younger than `NEW_ACCOUNT_AGE_SECS`, together, may hold
    /// in one inbox: a quarter of each cap, so throwaway accounts can never crowd out a contact.
    pub fn new_accounts_part(&self) -> (u32, u64) {
        ((self.max_messages / 4).max(1), self.max_bytes / 4)
    }
}

/// Most envelopes one stored envelope may evict to make room in a full inbox: bounds the work of
/// a send (a larger envelope than that frees is `dropped`).
pub const MOST_EVICTIONS_PER_ENVELOPE: u32 = 64;

/// Stored size of an envelope beside its base64 body: the JSON fields and the expiry prefix.
pub const ENVELOPE_OVERHEAD_BYTES: u64 = 256;

/// The most bytes one envelope with a `body_bytes` body can take in an inbox.
pub fn stored_envelope_bytes(body_bytes: usize) -> u64 {
    (body_bytes as u64).div_ceil(3) * 4 + ENVELOPE_OVERHEAD_BYTES
}

/// Default `INBOX_MAX_BYTES`: about 95 maximum-size envelopes or thousands of ordinary ones
/// (a Signal text message is well under 1 KB; attachments travel elsewhere), so it bounds what
/// a flood leaves in one inbox to 8 MiB without touching ordinary offline queues.
pub const DEFAULT_INBOX_MAX_BYTES: u64 = 8 * 1024 * 1024;

/// Stored keys and who counts as new when bundles are handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyLimits {
    /// One-time prekeys stored per user and per kind (EC, Kyber).
    pub max_one_time_prekeys: u64,
    /// Accounts younger than this fetch from the `bundle_target_new` budget and upload from
    /// `attachments_new`.
    pub new_account_age: Duration,
}

/// Devices per account and linking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceLimits {
    /// Devices per account, the primary included (`MAX_DEVICES`).
    pub max_devices: u32,
    /// How long a linking code and a provisioning address last (`PROVISIONING_TTL_SECS`).
    pub provisioning_ttl: Duration,
    /// Largest decoded provisioning message (`PROVISIONING_MAX_BYTES`).
    pub provisioning_max_bytes: usize,
    /// `BUNDLE_WITHOUT_ONE_TIME=1`: a device with no one-time prekey left is handed out without
    /// one (Signal's behaviour) instead of the whole fetch answering 412.
    pub bundle_without_one_time: bool,
}

impl Default for DeviceLimits {
    fn default() -> Self {
        Self {
            max_devices: 6,
            provisioning_ttl: Duration::from_secs(600),
            provisioning_max_bytes: 8192,
            bundle_without_one_time: false,
        }
    }
}

/// Attachments in object storage (`ATTACHMENTS_BUCKET`); none configured: the attachment
/// routes answer `unavailable`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachmentsConfig {
    pub bucket: String,
    /// Largest attachment, in bytes of ciphertext (`ATTACHMENT_MAX_BYTES`).
    pub max_bytes: u64,
    /// How long presigned URLs last (`ATTACHMENT_URL_TTL_SECS`).
    pub url_ttl: Duration,
}

/// Default `ATTACHMENT_MAX_BYTES`: 100 MiB.
pub const DEFAULT_ATTACHMENT_MAX_BYTES: u64 = 100 * 1024 * 1024;

/// How the relay keeps WebSocket connections honest and fetches bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayTimings {
    /// How long a warm function trusts what it remembers of a connection (registration, session
    /// not revoked) before asking Redis again. Logout and deletion close connections at once;
    /// this only bounds how long one whose close failed can go on.
    pub session_check: Duration,
    /// A `fetch` writes no further frame after this long (what is left stays in the inbox), so
    /// it ends before the function's timeout.
    pub fetch_deadline: Duration,
    /// How long a batch taken by a `fetch` is left in flight before the next fetch puts it back:
    /// longer than a fetch can live (the connection function's timeout).
    pub fetch_lease: Duration,
}

/// `WAIT numreplicas timeout` after envelopes are stored: the reply `queued` then means the
/// envelope reached `replicas` replicas, unless `timeout` passed first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RedisWait {
    pub replicas: u32,
    pub timeout: Duration,
}

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
    /// DynamoDB tables are `<prefix>-users`, `<prefix>-keys`, `<prefix>-sessions`.
    pub table_prefix: String,
    pub jwt: JwtConfig,
    pub argon2: Argon2Params,
    pub inbox: InboxLimits,
    pub rate_limits: RateLimits,
    pub keys: KeyLimits,
    pub devices: DeviceLimits,
    pub attachments: Option<AttachmentsConfig>,
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
        let env = Env(&get);
        let secret = env.required("JWT_SECRET")?;
        if secret.len() < 32 {
            return Err(ConfigError::Invalid {
                var: "JWT_SECRET".into(),
                expected: "at least 32 bytes",
            });
        }
        let defaults = RateLimits::default();
        let inbox_max: u32 = env.number("INBOX_MAX", 1000)?;
        if inbox_max == 0 {
            return Err(ConfigError::Invalid {
                var: "INBOX_MAX".into(),
                expected: "at least 1",
            });
        }
        let max_body_bytes: usize = env.number("MESSAGE_MAX_BYTES", 64 * 1024)?;
        let inbox_max_bytes: u64 = env.number("INBOX_MAX_BYTES", DEFAULT_INBOX_MAX_BYTES)?;
        if inbox_max_bytes < stored_envelope_bytes(max_body_bytes) {
            return Err(ConfigError::Invalid {
                var: "INBOX_MAX_BYTES".into(),
                expected: "room for one envelope of MESSAGE_MAX_BYTES (4/3 of it + 256)",
            });
        }
        let message_bytes = env.bucket("RATE_LIMIT_MESSAGE_BYTES", defaults.message_bytes)?;
        if (message_bytes.capacity as usize) < max_body_bytes {
            return Err(ConfigError::Invalid {
                var: "RATE_LIMIT_MESSAGE_BYTES".into(),
                expected: "a COUNT of at least MESSAGE_MAX_BYTES (one largest body)",
            });
        }
        let max_one_time_prekeys: u64 = env.number("MAX_ONE_TIME_PREKEYS", 1000)?;
        if max_one_time_prekeys < crate::validation::MAX_BATCH as u64 {
            return Err(ConfigError::Invalid {
                var: "MAX_ONE_TIME_PREKEYS".into(),
                expected: "at least 100 (a registration may bring 100 of each kind)",
            });
        }
        let max_connections_per_user: u32 = env.number("MAX_CONNECTIONS_PER_USER", 10)?;
        if max_connections_per_user == 0 {
            return Err(ConfigError::Invalid {
                var: "MAX_CONNECTIONS_PER_USER".into(),
                expected: "at least 1",
            });
        }
        let fetch_deadline_ms: u64 = env.number("FETCH_DEADLINE_MS", 10_000)?;
        let fetch_lease_ms: u64 = env.number("FETCH_LEASE_MS", 30_000)?;
        if fetch_lease_ms <= fetch_deadline_ms {
            return Err(ConfigError::Invalid {
                var: "FETCH_LEASE_MS".into(),
                expected:
                    "more than FETCH_DEADLINE_MS (and than the connection function's timeout)",
            });
        }
        let max_devices: u32 = env.number("MAX_DEVICES", DeviceLimits::default().max_devices)?;
        if !(1..=crate::model::MAX_DEVICE_ID).contains(&max_devices) {
            return Err(ConfigError::Invalid {
                var: "MAX_DEVICES".into(),
                expected: "1 to 255",
            });
        }
        let provisioning_ttl_secs: u64 = env.number("PROVISIONING_TTL_SECS", 600)?;
        if provisioning_ttl_secs == 0 {
            return Err(ConfigError::Invalid {
                var: "PROVISIONING_TTL_SECS".into(),
                expected: "at least 1",
            });
        }
        let devices = DeviceLimits {
            max_devices,
            provisioning_ttl: Duration::from_secs(provisioning_ttl_secs),
            provisioning_max_bytes: env.number("PROVISIONING_MAX_BYTES", 8192)?,
            bundle_without_one_time: env.flag("BUNDLE_WITHOUT_ONE_TIME")?.unwrap_or(false),
        };
        let attachments = match get("ATTACHMENTS_BUCKET").filter(|b| !b.is_empty()) {
            None => None,
            Some(bucket) => {
                let url_ttl_secs: u64 = env.number("ATTACHMENT_URL_TTL_SECS", 300)?;
                // SigV4 presigned URLs last at most 7 days.
                if !(1..=604_800).contains(&url_ttl_secs) {
                    return Err(ConfigError::Invalid {
                        var: "ATTACHMENT_URL_TTL_SECS".into(),
                        expected: "1 to 604800 (7 days)",
                    });
                }
                let max_bytes: u64 =
                    env.number("ATTACHMENT_MAX_BYTES", DEFAULT_ATTACHMENT_MAX_BYTES)?;
                // One PUT carries at most 5 GiB.
                if !(1..=5 * 1024 * 1024 * 1024).contains(&max_bytes) {
                    return Err(ConfigError::Invalid {
                        var: "ATTACHMENT_MAX_BYTES".into(),
                        expected: "1 to 5368709120 (5 GiB, one PUT)",
                    });
                }
                Some(AttachmentsConfig {
                    bucket,
                    max_bytes,
                    url_ttl: Duration::from_secs(url_ttl_secs),
                })
            }
        };
        let redis_url = env.required("REDIS_URL")?;
        let redis_cluster = redis_mode(&redis_url, env.flag("REDIS_CLUSTER")?)?;
        Ok(Self {
            redis_url,
            redis_cluster,
            redis_wait: env.redis_wait("REDIS_WAIT")?,
            redis_prefix: env.string("RELAY_REDIS_PREFIX", ""),
            table_prefix: env.string("RELAY_TABLE_PREFIX", "relay"),
            jwt: JwtConfig {
                secret: secret.into_bytes(),
                issuer: env.string("JWT_ISSUER", "relay"),
                audience: env.string("JWT_AUDIENCE", "relay-clients"),
                access_ttl: Duration::from_secs(env.number("ACCESS_TOKEN_TTL_SECS", 900)?),
                refresh_ttl: Duration::from_secs(
                    env.number("REFRESH_TOKEN_TTL_SECS", 30 * 86_400)?,
                ),
                leeway: Duration::from_secs(env.number("JWT_LEEWAY_SECS", 60)?),
                refresh_grace: Duration::from_secs(env.number("REFRESH_GRACE_SECS", 10)?),
            },
            argon2: Argon2Params {
                m_kib: env.number("ARGON2_M_KIB", 19_456)?,
                t: env.number("ARGON2_T", 2)?,
                p: env.number("ARGON2_P", 1)?,
            },
            inbox: InboxLimits {
                max_messages: inbox_max,
                ttl: Duration::from_secs(env.number("INBOX_TTL_SECS", 30 * 86_400)?),
                max_body_bytes,
                max_bytes: inbox_max_bytes,
            },
            rate_limits: RateLimits {
                login_failures: env.bucket("RATE_LIMIT_LOGIN_FAILURES", defaults.login_failures)?,
                login_failures_user: env.bucket(
                    "RATE_LIMIT_LOGIN_FAILURES_USER",
                    defaults.login_failures_user,
                )?,
                auth: env.bucket("RATE_LIMIT_AUTH", defaults.auth)?,
                bundle: env.bucket("RATE_LIMIT_BUNDLE", defaults.bundle)?,
                bundle_pair: env.bucket("RATE_LIMIT_BUNDLE_PAIR", defaults.bundle_pair)?,
                messages: env.bucket("RATE_LIMIT_MESSAGES", defaults.messages)?,
                bundle_target: env.bucket("RATE_LIMIT_BUNDLE_TARGET", defaults.bundle_target)?,
                bundle_target_new: env
                    .bucket("RATE_LIMIT_BUNDLE_TARGET_NEW", defaults.bundle_target_new)?,
                lookup: env.bucket("RATE_LIMIT_LOOKUP", defaults.lookup)?,
                keys_upload: env.bucket("RATE_LIMIT_KEYS_UPLOAD", defaults.keys_upload)?,
                message_bytes,
                message_pair: env.bucket("RATE_LIMIT_MESSAGE_PAIR", defaults.message_pair)?,
                connect: env.bucket("RATE_LIMIT_CONNECT", defaults.connect)?,
                connect_ip: env.bucket("RATE_LIMIT_CONNECT_IP", defaults.connect_ip)?,
                frames: env.bucket("RATE_LIMIT_FRAMES", defaults.frames)?,
                provisioning: env.bucket("RATE_LIMIT_PROVISIONING", defaults.provisioning)?,
                provisioning_frames: env.bucket(
                    "RATE_LIMIT_PROVISIONING_FRAMES",
                    defaults.provisioning_frames,
                )?,
                link: env.bucket("RATE_LIMIT_LINK", defaults.link)?,
                attachments: env.bucket("RATE_LIMIT_ATTACHMENTS", defaults.attachments)?,
                attachments_new: env
                    .bucket("RATE_LIMIT_ATTACHMENTS_NEW", defaults.attachments_new)?,
                attachments_ip: env.bucket("RATE_LIMIT_ATTACHMENTS_IP", defaults.attachments_ip)?,
                attachment_downloads: env.bucket(
                    "RATE_LIMIT_ATTACHMENT_DOWNLOADS",
                    defaults.attachment_downloads,
                )?,
            },
            keys: KeyLimits {
                max_one_time_prekeys,
                new_account_age: Duration::from_secs(env.number("NEW_ACCOUNT_AGE_SECS", 86_400)?),
            },
            devices,
            attachments,
            max_connections_per_user,
            max_request_bytes: env.number("RELAY_MAX_REQUEST_BYTES", DEFAULT_MAX_REQUEST_BYTES)?,
            ws_management_endpoint: get("WS_MANAGEMENT_ENDPOINT").filter(|s| !s.is_empty()),
            relay: RelayTimings {
                session_check: Duration::from_secs(env.number("WS_SESSION_CHECK_SECS", 5)?),
                fetch_deadline: Duration::from_millis(fetch_deadline_ms),
                fetch_lease: Duration::from_millis(fetch_lease_ms),
            },
        })
    }
}

/// The seed URLs of `REDIS_URL` (one for a single node; one or more for a cluster).
pub fn redis_seeds(redis_url: &str) -> Vec<&str> {
    redis_url
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
}

/// Checks `REDIS_URL` and decides the mode: a cluster when asked for or when several seeds are
/// given; every seed must parse, and a cluster's seeds are all `redis://` or all `rediss://`.
fn redis_mode(redis_url: &str, cluster: Option<bool>) -> Result<bool, ConfigError> {
    let seeds = redis_seeds(redis_url);
    let invalid = |expected| ConfigError::Invalid {
        var: "REDIS_URL".into(),
        expected,
    };
    if seeds.is_empty() {
        return Err(invalid("a redis:// or rediss:// URL"));
    }
    for seed in &seeds {
        redis::IntoConnectionInfo::into_connection_info(*seed)
            .map_err(|_| invalid("a redis:// or rediss:// URL"))?;
    }
    let cluster = match cluster {
        Some(false) if seeds.len() > 1 => {
            return Err(invalid(
                "one URL when REDIS_CLUSTER is false (several are cluster seeds)",
            ))
        }
        Some(c) => c,
        None => seeds.len() > 1,
    };
    if cluster {
        let tls = seeds[0].starts_with("rediss://");
        let same_scheme =
            |s: &&str| (tls && s.starts_with("rediss://")) || (!tls && s.starts_with("redis://"));
        if !seeds.iter().all(same_scheme) {
            return Err(invalid(
                "cluster seeds that are all redis:// or all rediss:// URLs",
            ));
        }
    }
    Ok(cluster)
}

struct Env<'a, F: Fn(&str) -> Option<String>>(&'a F);

impl<F: Fn(&str) -> Option<String>> Env<'_, F> {
    fn get(&self, var: &str) -> Option<String> {
        (self.0)(var).filter(|v| !v.trim().is_empty())
    }

    fn required(&self, var: &str) -> Result<String, ConfigError> {
        self.get(var)
            .ok_or_else(|| ConfigError::Missing(var.to_string()))
    }

    fn string(&self, var: &str, default: &str) -> String {
        self.get(var).unwrap_or_else(|| default.to_string())
    }

    fn number<T: std::str::FromStr>(&self, var: &str, default: T) -> Result<T, ConfigError> {
        match self.get(var) {
            None => Ok(default),
            Some(raw) => raw.trim().parse().map_err(|_| ConfigError::Invalid {
                var: var.to_string(),
                expected: "a non-negative whole number",
            }),
        }
    }

    fn flag(&self, var: &str) -> Result<Option<bool>, ConfigError> {
        match self.get(var).map(|v| v.trim().to_ascii_lowercase()) {
            None => Ok(None),
            Some(v) => match v.as_str() {
                "true" | "1" | "yes" => Ok(Some(true)),
                "false" | "0" | "no" => Ok(Some(false)),
                _ => Err(ConfigError::Invalid {
                    var: var.to_string(),
                    expected: "true or false",
                }),
            },
        }
    }

    fn redis_wait(&self, var: &str) -> Result<Option<RedisWait>, ConfigError> {
        let Some(raw) = self.get(var) else {
            return Ok(None);
        };
        let bad = || ConfigError::Invalid {
            var: var.to_string(),
            expected: "REPLICAS/MILLISECONDS, e.g. 1/50 (0 to disable)",
        };
        if raw.trim() == "0" {
            return Ok(None);
        }
        let (replicas, millis) = raw.split_once('/').ok_or_else(bad)?;
        let replicas: u32 = replicas.trim().parse().map_err(|_| bad())?;
        let millis: u64 = millis.trim().parse().map_err(|_| bad())?;
        if replicas == 0 {
            return Ok(None);
        }
        if millis == 0 {
            return Err(bad());
        }
        Ok(Some(RedisWait {
            replicas,
            timeout: Duration::from_millis(millis),
        }))
    }

    fn bucket(&self, var: &str, default: Bucket) -> Result<Bucket, ConfigError> {
        match self.get(var) {
            None => Ok(default),
            Some(raw) => Bucket::parse(var, &raw),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

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
