//! `Inbox` and `ConnectionRegistry` on Redis lists and sorted sets.

use async_trait::async_trait;
use redis::AsyncCommands;
use std::sync::LazyLock;
use uuid::Uuid;

use super::{envelope, Lua, RedisStore};
use crate::error::Result;
use crate::model::UserId;
use crate::storage::{ConnectionRegistry, Delivery, Inbox, StoredEnvelope, POP_BATCH};

static DELIVER: LazyLock<Lua> = LazyLock::new(|| Lua::new(include_str!("deliver.lua")));
static PENDING: LazyLock<Lua> = LazyLock::new(|| Lua::new(include_str!("pending.lua")));

/// API Gateway closes WebSocket connections after two hours; registrations expire with them.
pub const CONNECTION_TTL_MS: u64 = 2 * 3600 * 1000;

#[async_trait]
impl Inbox for RedisStore {
    async fn open(&self, user_id: UserId) -> Result<()> {
        let _: () = self
            .connection()
            .set(self.marker_key(user_id), 1)
            .await
            .map_err(super::unavailable)?;
        Ok(())
    }

    async fn close(&self, user_id: UserId) -> Result<()> {
        let _: () = self
            .connection()
            .del(&[self.marker_key(user_id), self.inbox_key(user_id)])
            .await
            .map_err(super::unavailable)?;
        Ok(())
    }

    async fn deliver(
        &self,
        to: UserId,
        envelope: &StoredEnvelope,
        online_only: bool,
        now_ms: u64,
    ) -> Result<Delivery> {
        let inbox = self.inbox_key(to);
        let mut call = DELIVER.call(&[&self.marker_key(to), &inbox, &self.conns_key(to)]);
        call.arg(envelope::encode(envelope))
            .arg(self.inbox_max)
            .arg(self.inbox_ttl_secs)
            .arg(now_ms)
            .arg(if online_only { 1 } else { 0 })
            .arg(POP_BATCH);
        let (code, connections, envelopes): (i64, Vec<String>, Vec<String>) =
            self.run(&DELIVER, &call).await?;
        Ok(match code {
            -1 => Delivery::UnknownInbox,
            0 => Delivery::Dropped,
            1 => {
                self.wait_for_replicas().await;
                Delivery::Queued
            }
            _ => Delivery::Online {
                connections,
                envelopes: envelopes.iter().map(|e| envelope::decode(e)).collect(),
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
            .await
            .map_err(super::unavailable)?;
        Ok(popped
            .unwrap_or_default()
            .iter()
            .map(|e| envelope::decode(e))
            .collect())
    }

    async fn requeue(&self, user_id: UserId, envelopes: &[StoredEnvelope]) -> Result<()> {
        if envelopes.is_empty() {
            return Ok(());
        }
        let key = self.inbox_key(user_id);
        // LPUSH a b c leaves c b a at the head, so push newest first to keep the original order.
        let reversed: Vec<String> = envelopes.iter().rev().map(envelope::encode).collect();
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
            .await
            .map_err(super::unavailable)?;
        self.wait_for_replicas().await;
        Ok(())
    }

    async fn pending(&self, user_id: UserId, now_ms: u64) -> Result<u64> {
        let mut call = PENDING.call(&[&self.inbox_key(user_id)]);
        call.arg(now_ms);
        self.run(&PENDING, &call).await
    }
}

/// The user's connection set (`{user}` slot) and the connection → user key (`{connection}` slot)
/// live in two hash slots, so each change is two single-slot requests sent together. Neither
/// order leaves a stale entry behind for long: a set member whose key is gone expires by its
/// score (the deliver script drops it), and the key expires with the connection.
#[async_trait]
impl ConnectionRegistry for RedisStore {
    async fn register(&self, connection_id: &str, user_id: UserId, now_ms: u64) -> Result<()> {
        let conns = self.conns_key(user_id);
        let mut by_user = redis::pipe();
        by_user
            .atomic()
            .zadd(&conns, connection_id, now_ms + CONNECTION_TTL_MS)
            .ignore()
            .pexpire(&conns, CONNECTION_TTL_MS as i64)
            .ignore();
        let (mut a, mut b) = (self.connection(), self.connection());
        let (set, key): (redis::RedisResult<()>, redis::RedisResult<()>) = futures::join!(
            by_user.query_async(&mut a),
            b.pset_ex(
                self.conn_key(connection_id),
                user_id.to_string(),
                CONNECTION_TTL_MS,
            )
        );
        set.map_err(super::unavailable)?;
        key.map_err(super::unavailable)?;
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
        let raw: Option<String> = self
            .connection()
            .get(self.conn_key(connection_id))
            .await
            .map_err(super::unavailable)?;
        Ok(raw.and_then(|s| Uuid::parse_str(&s).ok()))
    }

    async fn remove(&self, user_id: UserId, connection_id: &str) -> Result<()> {
        let (mut a, mut b) = (self.connection(), self.connection());
        let (set, key): (redis::RedisResult<()>, redis::RedisResult<()>) = futures::join!(
            a.zrem(self.conns_key(user_id), connection_id),
            b.del(self.conn_key(connection_id))
        );
        set.map_err(super::unavailable)?;
        key.map_err(super::unavailable)?;
        Ok(())
    }
}
