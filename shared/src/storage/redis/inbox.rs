//! `Inbox` and `ConnectionRegistry` on Redis lists and sorted sets.

use async_trait::async_trait;
use redis::{AsyncCommands, Script};
use std::sync::LazyLock;
use uuid::Uuid;

use super::RedisStore;
use crate::error::Result;
use crate::model::UserId;
use crate::storage::{ConnectionRegistry, Delivery, Inbox, StoredEnvelope};

static DELIVER: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("deliver.lua")));
static PENDING: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("pending.lua")));

/// API Gateway closes WebSocket connections after two hours; registrations expire with them.
pub const CONNECTION_TTL_MS: u64 = 2 * 3600 * 1000;
/// Envelopes taken per pop (and per online drain).
pub const POP_BATCH: usize = 100;

#[async_trait]
impl Inbox for RedisStore {
    async fn open(&self, user_id: UserId) -> Result<()> {
        let _: () = self.connection().set(self.marker_key(user_id), 1).await?;
        Ok(())
    }

    async fn close(&self, user_id: UserId) -> Result<()> {
        let _: () = self
            .connection()
            .del(&[self.marker_key(user_id), self.inbox_key(user_id)])
            .await?;
        Ok(())
    }

    async fn deliver(
        &self,
        to: UserId,
        envelope: &StoredEnvelope,
        online_only: bool,
        now_ms: u64,
    ) -> Result<Delivery> {
        let (code, connections, envelopes): (i64, Vec<String>, Vec<String>) = DELIVER
            .key(self.marker_key(to))
            .key(self.inbox_key(to))
            .key(self.conns_key(to))
            .arg(&envelope.0)
            .arg(self.inbox_max)
            .arg(self.inbox_ttl_secs)
            .arg(now_ms)
            .arg(if online_only { 1 } else { 0 })
            .arg(POP_BATCH)
            .invoke_async(&mut self.connection())
            .await?;
        Ok(match code {
            -1 => Delivery::UnknownInbox,
            0 => Delivery::Dropped,
            1 => Delivery::Queued,
            _ => Delivery::Online {
                connections,
                envelopes: envelopes.into_iter().map(StoredEnvelope).collect(),
            },
        })
    }

    async fn pop(&self, user_id: UserId, max: usize) -> Result<Vec<StoredEnvelope>> {
        let popped: Option<Vec<String>> = self
            .connection()
            .lpop(
                self.inbox_key(user_id),
                std::num::NonZeroUsize::new(max.max(1)),
            )
            .await?;
        Ok(popped
            .unwrap_or_default()
            .into_iter()
            .map(StoredEnvelope)
            .collect())
    }

    async fn requeue(&self, user_id: UserId, envelopes: &[StoredEnvelope]) -> Result<()> {
        if envelopes.is_empty() {
            return Ok(());
        }
        let key = self.inbox_key(user_id);
        // LPUSH a b c leaves c b a at the head, so push newest first to keep the original order.
        let reversed: Vec<&str> = envelopes.iter().rev().map(|e| e.0.as_str()).collect();
        let max = self.inbox_max as isize;
        let _: () = redis::pipe()
            .atomic()
            .lpush(&key, reversed)
            .ignore()
            .ltrim(&key, -max, -1)
            .ignore()
            .expire(&key, self.inbox_ttl_secs as i64)
            .ignore()
            .query_async(&mut self.connection())
            .await?;
        Ok(())
    }

    async fn pending(&self, user_id: UserId, now_ms: u64) -> Result<u64> {
        Ok(PENDING
            .key(self.inbox_key(user_id))
            .arg(now_ms)
            .invoke_async(&mut self.connection())
            .await?)
    }
}

#[async_trait]
impl ConnectionRegistry for RedisStore {
    async fn register(&self, connection_id: &str, user_id: UserId, now_ms: u64) -> Result<()> {
        let conns = self.conns_key(user_id);
        let _: () = redis::pipe()
            .zadd(&conns, connection_id, now_ms + CONNECTION_TTL_MS)
            .ignore()
            .pexpire(&conns, CONNECTION_TTL_MS as i64)
            .ignore()
            .pset_ex(
                self.conn_key(connection_id),
                user_id.to_string(),
                CONNECTION_TTL_MS,
            )
            .ignore()
            .query_async(&mut self.connection())
            .await?;
        Ok(())
    }

    async fn unregister(&self, connection_id: &str) -> Result<Option<UserId>> {
        let user = self.user_of(connection_id).await?;
        if let Some(user_id) = user {
            self.remove(user_id, connection_id).await?;
        }
        Ok(user)
    }

    async fn user_of(&self, connection_id: &str) -> Result<Option<UserId>> {
        let raw: Option<String> = self.connection().get(self.conn_key(connection_id)).await?;
        Ok(raw.and_then(|s| Uuid::parse_str(&s).ok()))
    }

    async fn remove(&self, user_id: UserId, connection_id: &str) -> Result<()> {
        let _: () = redis::pipe()
            .zrem(self.conns_key(user_id), connection_id)
            .ignore()
            .del(self.conn_key(connection_id))
            .ignore()
            .query_async(&mut self.connection())
            .await?;
        Ok(())
    }
}
