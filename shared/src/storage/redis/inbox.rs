//! `Inbox` on Redis lists (fetch batches in flight: `in_flight.rs`; the connection registry:
//! `registry.rs`).

use async_trait::async_trait;
use redis::AsyncCommands;
use std::sync::LazyLock;

use super::{envelope, Lua, RedisStore};
use crate::error::Result;
use crate::model::UserId;
use crate::storage::{Delivery, Inbox, StoredEnvelope, POP_BATCH};

/// Each inbox script starts with the accounting prelude (Lua has no includes in Redis).
macro_rules! inbox_script {
    ($file:literal) => {
        LazyLock::new(|| Lua::new(concat!(include_str!("accounting.lua"), include_str!($file))))
    };
}
static DELIVER: LazyLock<Lua> = inbox_script!("deliver.lua");
static PENDING: LazyLock<Lua> = inbox_script!("pending.lua");
static POP: LazyLock<Lua> = inbox_script!("pop.lua");
static REQUEUE: LazyLock<Lua> = inbox_script!("requeue.lua");

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
            .del(&[
                self.marker_key(user_id),
                self.inbox_key(user_id),
                self.accounting_key(user_id),
                self.keys.in_flight(user_id),
            ])
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
        lease_until_ms: u64,
    ) -> Result<Delivery> {
        let inbox = self.inbox_key(to);
        let mut call = DELIVER.call(&[
            &self.marker_key(to),
            &inbox,
            &self.conns_key(to),
            &self.accounting_key(to),
            &self.keys.in_flight(to),
        ]);
        call.arg(envelope::encode(envelope))
            .arg(self.inbox_max)
            .arg(self.inbox_ttl_secs)
            .arg(now_ms)
            .arg(if online_only { 1 } else { 0 })
            .arg(POP_BATCH)
            .arg(self.inbox_max_bytes)
            .arg(lease_until_ms);
        let (code, connections, envelopes): (i64, Vec<String>, Vec<String>) =
            self.run(&DELIVER, &call).await?;
        Ok(match code {
            -1 => Delivery::UnknownInbox,
            0 => Delivery::Dropped,
            1 => {
                self.wait_for_replicas().await;
                Delivery::Queued
            }
            code => Delivery::Online {
                connections,
                envelopes: envelopes.iter().map(|e| envelope::decode(e)).collect(),
                in_flight: code == 3,
            },
        })
    }

    async fn pop(&self, user_id: UserId, max: usize) -> Result<Vec<StoredEnvelope>> {
        let mut call = POP.call(&[&self.inbox_key(user_id), &self.accounting_key(user_id)]);
        call.arg(max.max(1));
        let popped: Vec<String> = self.run(&POP, &call).await?;
        Ok(popped.iter().map(|e| envelope::decode(e)).collect())
    }

    async fn take_in_flight(
        &self,
        user_id: UserId,
        max: usize,
        lease_until_ms: u64,
        now_ms: u64,
    ) -> Result<Vec<StoredEnvelope>> {
        self.in_flight_take(user_id, max, lease_until_ms, now_ms)
            .await
    }

    async fn settle_in_flight(
        &self,
        user_id: UserId,
        batch: &[StoredEnvelope],
        lease_until_ms: u64,
        unsent: &[StoredEnvelope],
    ) -> Result<()> {
        self.in_flight_settle(user_id, batch, lease_until_ms, unsent)
            .await
    }

    async fn requeue(&self, user_id: UserId, envelopes: &[StoredEnvelope]) -> Result<()> {
        if envelopes.is_empty() {
            return Ok(());
        }
        let mut call = REQUEUE.call(&[&self.inbox_key(user_id), &self.accounting_key(user_id)]);
        call.arg(self.inbox_max)
            .arg(self.inbox_max_bytes)
            .arg(self.inbox_ttl_secs);
        for e in envelopes {
            call.arg(envelope::encode(e));
        }
        let _: i64 = self.run(&REQUEUE, &call).await?;
        self.wait_for_replicas().await;
        Ok(())
    }

    async fn pending(&self, user_id: UserId, now_ms: u64) -> Result<u64> {
        let mut call = PENDING.call(&[&self.inbox_key(user_id), &self.accounting_key(user_id)]);
        call.arg(now_ms);
        self.run(&PENDING, &call).await
    }
}
