//! Redis adapters: inboxes, the connection registry, rate-limit buckets and revocations.
//!
//! One `RedisStore` serves a single node and a Redis Cluster alike: it talks through
//! [`RedisConnection`], a single-node `ConnectionManager` or a cluster connection that routes each
//! command by hash slot and follows failovers. For the cluster, every script, transaction and
//! pipeline touches the keys of one hash slot and names them all in `KEYS`:
//!
//! | key | slot | used by |
//! |---|---|---|
//! | `<prefix>{<user>}:devices` (version, device → registration) | `{user}` | devices script, deliver script, `close` |
//! | `<prefix>{<user>}[:d<n>]:inbox` (device n; device 1 without `:d1`) | `{user}` | scripts (deliver, in-flight, requeue, pending, devices), `close` |
//! | `<prefix>{<user>}[:d<n>]:inbox-holders` (the holder of each inbox entry) | `{user}` | the same scripts, `close` |
//! | `<prefix>{<user>}[:d<n>]:inbox-senders` (envelopes and bytes per holder) | `{user}` | the same scripts, `close` |
//! | `<prefix>{<user>}[:d<n>]:in-flight`, `:in-flight-envelopes` (envelopes in flight by id) | `{user}` | in-flight, ack and deliver scripts, `close` |
//! | `<prefix>{<user>}[:d<n>]:inflight` (the in-flight list of older relays) | `{user}` | in-flight script (empties it), `close` |
//! | `<prefix>{<user>}[:d<n>]:conns` | `{user}` | deliver script, register script, remove (MULTI) |
//! | `<prefix>{<user>}:conn_sessions` (connection → session and device) | `{user}` | register script, remove (MULTI), `connections` |
//! | `<prefix>{<user>}[:d<n>]:conn-order` (arrival of each connection) | `{user}` | evict script |
//! | `<prefix>{<user>}:presence-shares`, `:presence` (share list; `last_seen` choice and time) | `{user}` | `presence.rs` (MULTI for a new list), presence script, `forget` |
//! | `<prefix>{<user>}:presence-conns` (the user's live connections) | `{user}` | presence script, `seen`, `forget` |
//! | `<prefix>conn:{<connection>}` | `{connection}` | register / remove / `registration`, alone |
//! | `<prefix>link:<sha256 of code>` (linking code → account) | its own | `provisioning.rs`, alone |
//! | `<prefix>prov:<address>`, `<prefix>prov-conn:{<connection>}` | their own | `provisioning.rs`, alone |
//! | `<prefix>revoked:<session>` | its own | `revoke`, `is_revoked`, alone |
//! | `<prefix>rl:<name>` | its own | token-bucket script, its only key |
//! | `<prefix>rl:msg…:{<sender>}…` (a send's three buckets) | `{sender}` | `token_buckets.lua`, all three at once |
//!
//! The scripts, their preludes and their one caller each are in `scripts/`. Every change to a
//! device's envelopes goes through `scripts/prelude_store.lua`, which keeps the inbox, its
//! holders and its accounting in step: the caps and the choice of what a full inbox evicts read
//! them.
//!
//! Registering a connection writes two slots (the user's set and the connection → user key), so
//! it is two single-slot requests, not one transaction: see `registry.rs`.

mod envelope;
mod in_flight;
mod inbox;
mod keys;
mod limits;
mod presence;
mod provisioning;
mod registry;
mod scripts;
mod sent_log;

pub use inbox::CONNECTION_TTL_MS;
pub use keys::RedisKeys;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};
use std::time::Duration;
use uuid::Uuid;

use crate::clock::SharedClock;
use crate::config::{Config, RedisWait};
use crate::error::{Error, Result};

/// How long one attempt may take to connect, and to answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(3);
/// A cluster request, retries and redirections included, gives up after this long.
const CLUSTER_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// A connection to a single node or to a cluster; cheap to clone (clones share the sockets).
#[derive(Clone)]
pub enum RedisConnection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl From<ConnectionManager> for RedisConnection {
    fn from(c: ConnectionManager) -> Self {
        Self::Single(c)
    }
}

impl From<ClusterConnection> for RedisConnection {
    fn from(c: ClusterConnection) -> Self {
        Self::Cluster(c)
    }
}

/// Every request to Redis goes through here, so each is counted and timed once (a script call
/// is a `command`; a transaction or pipeline one `pipeline`), retries and redirections included.
impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        let call = match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        };
        Box::pin(timed("command", call))
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        let call = match self {
            Self::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        };
        Box::pin(timed("pipeline", call))
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

/// `call`, recorded as one Redis call of `operation` when it ends.
async fn timed<T>(
    operation: &'static str,
    call: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> redis::RedisResult<T> {
    let started = std::time::Instant::now();
    let result = call.await;
    crate::metrics::dependency_call("redis", operation, served(&result), started.elapsed());
    result
}

/// Whether Redis served the call: a `NOSCRIPT` reply (the script cache emptied by a restart or
/// failover, which `RedisStore::run` answers by sending the script) is Redis working as meant.
fn served<T>(result: &redis::RedisResult<T>) -> bool {
    match result {
        Ok(_) => true,
        Err(e) => e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript),
    }
}

/// Connects to a single node (at cold start); the manager reconnects by itself after a failure.
pub async fn connect(url: &str) -> Result<ConnectionManager> {
    let client = redis::Client::open(url).map_err(|e| Error::unavailable("redis url", e))?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_number_of_retries(2);
    ConnectionManager::new_with_config(client, config)
        .await
        .map_err(|e| Error::unavailable("redis connect", e))
}

/// Connects to a Redis Cluster through any of `seeds` (`redis://` or `rediss://` URLs; TLS and
/// credentials come from the first). The connection reads the slot map at start and again on a
/// MOVED reply, a READONLY reply (a demoted primary) or a node it can no longer reach, so it
/// follows a failover by itself; each request retries with a short backoff within
/// `CLUSTER_REQUEST_TIMEOUT`.
pub async fn connect_cluster(seeds: &[&str]) -> Result<ClusterConnection> {
    ClusterClientBuilder::new(seeds.iter().copied())
        .connection_timeout(CONNECT_TIMEOUT)
        .response_timeout(RESPONSE_TIMEOUT)
        .overall_response_timeout(Some(CLUSTER_REQUEST_TIMEOUT))
        .retries(12)
        .min_retry_wait(20)
        .max_retry_wait(500)
        .retry_wait_formula(20, 2)
        // A node that refuses this many reconnects is dropped until the next slot map.
        .max_connection_attempts(std::num::NonZeroUsize::new(3).expect("non-zero"))
        .build()
        .map_err(|e| Error::unavailable("redis url", e))?
        .get_async_connection()
        .await
        .map_err(|e| Error::unavailable("redis connect", e))
}

/// Connects as `config` says: `REDIS_URL` and `REDIS_CLUSTER`.
pub async fn connect_from(config: &Config) -> Result<RedisConnection> {
    let seeds = crate::config::redis_seeds(&config.redis_url);
    if config.redis_cluster {
        Ok(connect_cluster(&seeds).await?.into())
    } else {
        let url = seeds.first().copied().unwrap_or(config.redis_url.as_str());
        Ok(connect(url).await?.into())
    }
}

/// A Redis failure as the domain sees it: the store is unavailable (the detail is logged, never
/// shown to a client). The only place a Redis error becomes a domain error.
pub(crate) fn unavailable(e: redis::RedisError) -> Error {
    Error::unavailable_by("redis", &e)
}

#[derive(Clone)]
pub struct RedisStore {
    conn: RedisConnection,
    keys: RedisKeys,
    caps: scripts::InboxCaps,
    wait: Option<std::sync::Arc<ReplicaWait>>,
    /// Revocation lifetimes follow it: `App::assemble` hands over the App's clock. (Token
    /// buckets read Redis' own `TIME` instead: see `limits.rs`.)
    clock: SharedClock,
}

impl RedisStore {
    /// On the system clock until [`Self::with_clock`] (which `App::assemble` calls).
    pub fn new(
        conn: impl Into<RedisConnection>,
        prefix: &str,
        inbox: &crate::config::InboxLimits,
    ) -> Self {
        Self {
            conn: conn.into(),
            keys: RedisKeys::new(prefix),
            caps: scripts::InboxCaps {
                max: inbox.max_messages,
                max_bytes: inbox.max_bytes,
                ttl_secs: inbox.ttl.as_secs(),
                new_part: inbox.new_accounts_part(),
            },
            wait: None,
            clock: crate::clock::system(),
        }
    }

    /// The same store reading time from `clock`.
    pub fn with_clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// After storing envelopes, `WAIT` for replicas (`REDIS_WAIT`).
    pub fn with_wait(mut self, wait: Option<RedisWait>) -> Self {
        self.wait = wait.map(|config| {
            std::sync::Arc::new(ReplicaWait {
                config,
                rounds: Default::default(),
                done: tokio::sync::Notify::new(),
            })
        });
        self
    }

    pub fn connection(&self) -> RedisConnection {
        self.conn.clone()
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self.conn, RedisConnection::Cluster(_))
    }

    /// The key layout this store uses.
    pub fn keys(&self) -> &RedisKeys {
        &self.keys
    }

    fn marker_key(&self, user_id: Uuid) -> String {
        self.keys.marker(user_id)
    }

    fn conn_key(&self, connection_id: &str) -> String {
        self.keys.conn(connection_id)
    }

    fn revoked_key(&self, session_id: Uuid) -> String {
        self.keys.revoked(session_id)
    }

    /// Runs a script call, by its SHA1, sending the source instead on NOSCRIPT (a node that never
    /// saw it); the reply is for the script's decoder.
    async fn run(&self, call: &scripts::Call) -> Result<Value> {
        let mut conn = self.connection();
        match call.evalsha().query_async(&mut conn).await {
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                call.eval()
                    .query_async(&mut conn)
                    .await
                    .map_err(unavailable)
            }
            other => other.map_err(unavailable),
        }
    }

    /// `WAIT` for replicas (REDIS_WAIT) after this task's writes: returns how many replicas
    /// acknowledged them, or None when not configured or WAIT failed. A failure or a short count
    /// is logged, never returned: the envelope is stored on the primary either way.
    async fn wait_for_replicas(&self) -> Option<i64> {
        let wait = self.wait.as_ref()?;
        wait.after_my_writes(self.connection()).await
    }
}

/// Group commit for `WAIT`. WAIT blocks the connection it is sent on until the replicas catch
/// up, and every task shares one connection per node, so a WAIT per envelope would serialize
/// them all (measured: a tenth of the throughput). Instead one WAIT round runs at a time; a task
/// whose write completed is covered by the first round *started* after that, and every task
/// waiting for it shares its answer. On a cluster the WAIT goes to every primary (the client's
/// default routing, smallest count wins), so one round covers writes on every shard.
struct ReplicaWait {
    config: RedisWait,
    rounds: std::sync::Mutex<Rounds>,
    done: tokio::sync::Notify,
}

#[derive(Default)]
struct Rounds {
    started: u64,
    completed: u64,
    running: bool,
    /// The answer of the last completed round.
    acked: Option<i64>,
}

impl ReplicaWait {
    async fn after_my_writes(&self, mut conn: RedisConnection) -> Option<i64> {
        let target = self.rounds.lock().expect("wait lock").started + 1;
        loop {
            let notified = self.done.notified();
            tokio::pin!(notified);
            // Under the lock: done, lead a round, or wait for the running one.
            let lead = {
                let mut r = self.rounds.lock().expect("wait lock");
                if r.completed >= target {
                    return r.acked;
                }
                if r.running {
                    notified.as_mut().enable();
                    None
                } else {
                    r.running = true;
                    r.started += 1;
                    Some(r.started)
                }
            };
            match lead {
                None => notified.await,
                Some(round) => {
                    let acked = self.round(&mut conn).await;
                    {
                        let mut r = self.rounds.lock().expect("wait lock");
                        r.running = false;
                        r.completed = round;
                        r.acked = acked;
                    }
                    self.done.notify_waiters();
                }
            }
        }
    }

    async fn round(&self, conn: &mut RedisConnection) -> Option<i64> {
        let wanted = self.config.replicas;
        let result: redis::RedisResult<i64> = redis::cmd("WAIT")
            .arg(wanted)
            .arg(self.config.timeout.as_millis() as u64)
            .query_async(conn)
            .await;
        match result {
            Ok(acked) => {
                if acked < i64::from(wanted) {
                    tracing::warn!(acked, wanted, "envelopes stored before replicas caught up");
                }
                Some(acked)
            }
            Err(e) => {
                tracing::warn!(error = %e, "WAIT for replicas failed");
                None
            }
        }
    }
}

#[async_trait::async_trait]
impl crate::storage::Health for RedisStore {
    async fn ping(&self) -> Result<()> {
        let _: String = redis::cmd("PING")
            .query_async(&mut self.connection())
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_script_is_redis_serving_the_call() {
        use redis::{ErrorKind, RedisError, ServerErrorKind};
        let ok: redis::RedisResult<()> = Ok(());
        assert!(served(&ok));
        let no_script = RedisError::from((ErrorKind::Server(ServerErrorKind::NoScript), "no"));
        assert!(served::<()>(&Err(no_script)));
        let io = RedisError::from(std::io::Error::other("connection refused"));
        assert!(!served::<()>(&Err(io)));
    }
}
