//! Redis adapters: inboxes, the connection registry, rate-limit buckets and revocations.
//! Keys of one user share the hash slot `{<user_id>}`, so every script also runs on a cluster.

mod inbox;
pub use inbox::{CONNECTION_TTL_MS, POP_BATCH};
mod limits;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::time::Duration;
use uuid::Uuid;

use crate::error::{Error, Result};

#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    prefix: String,
    inbox_max: u32,
    inbox_ttl_secs: u64,
}

/// Connects once (at cold start); the manager reconnects by itself after a failure.
pub async fn connect(url: &str) -> Result<ConnectionManager> {
    let client = redis::Client::open(url).map_err(|e| Error::unavailable("redis url", e))?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(3)))
        .set_response_timeout(Some(Duration::from_secs(3)))
        .set_number_of_retries(2);
    ConnectionManager::new_with_config(client, config)
        .await
        .map_err(|e| Error::unavailable("redis connect", e))
}

impl RedisStore {
    pub fn new(conn: ConnectionManager, prefix: &str, inbox: &crate::config::InboxLimits) -> Self {
        Self {
            conn,
            prefix: prefix.to_string(),
            inbox_max: inbox.max_messages,
            inbox_ttl_secs: inbox.ttl.as_secs(),
        }
    }

    pub fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }

    pub fn inbox_key(&self, user_id: Uuid) -> String {
        format!("{}{{{user_id}}}:inbox", self.prefix)
    }

    fn marker_key(&self, user_id: Uuid) -> String {
        format!("{}{{{user_id}}}:user", self.prefix)
    }

    fn conns_key(&self, user_id: Uuid) -> String {
        format!("{}{{{user_id}}}:conns", self.prefix)
    }

    fn conn_key(&self, connection_id: &str) -> String {
        format!("{}conn:{{{connection_id}}}", self.prefix)
    }

    fn revoked_key(&self, session_id: Uuid) -> String {
        format!("{}revoked:{session_id}", self.prefix)
    }

    fn bucket_key(&self, name: &str) -> String {
        format!("{}rl:{name}", self.prefix)
    }
}

#[async_trait::async_trait]
impl crate::storage::Health for RedisStore {
    async fn ping(&self) -> Result<()> {
        let _: String = redis::cmd("PING")
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(())
    }
}
