//! `Inbox` on Redis lists, one per device (fetch batches in flight: `in_flight.rs`; the
//! connection registry: `registry.rs`).

use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use redis::AsyncCommands;
use uuid::Uuid;

use super::scripts::{
    deliver::Deliver, deliver_shared::DeliverShared, devices, inbox_summary, pending, requeue,
};
use super::RedisStore;
use crate::error::Result;
use crate::model::{DeviceAddress, DeviceId, DeviceList, UserId};
use crate::storage::{
    Charge, Fanned, Fanout, Inbox, InboxSummary, RateDecision, SharedFanned, SharedFanout,
    StoredEnvelope, POP_BATCH,
};

/// Most envelopes one stored envelope may evict to make room in a full inbox: bounds the work of
/// a send (a larger envelope than that frees is `dropped`).
pub const MOST_EVICTIONS_PER_ENVELOPE: u32 = 64;

/// Marks of idempotent group sends a member keeps (`deliver_shared.lua`), the oldest dropped
/// first: some 1,000 ids (about 100 KB) within the send log's window, many times what the
/// retries of a member's groups after a failure part way need.
pub const MOST_GROUP_MARKS: u32 = 1000;

/// Most commands in flight at once when reading many keys of different slots.
const READ_CONCURRENCY: usize = 64;

/// API Gateway closes WebSocket connections after two hours; registrations expire with them.
pub const CONNECTION_TTL_MS: u64 = 2 * 3600 * 1000;

#[async_trait]
impl Inbox for RedisStore {
    async fn set_devices(&self, user_id: UserId, list: &DeviceList) -> Result<()> {
        let call = devices::call(&self.keys, user_id, list);
        devices::decode(self.run(&call).await?)?;
        Ok(())
    }

    async fn close(&self, user_id: UserId, devices: &[DeviceId]) -> Result<()> {
        let mut keys = vec![
            self.keys.devices(user_id),
            self.keys.group_marks(user_id),
            self.marker_key(user_id),
            self.keys.conn_sessions(user_id),
        ];
        for &d in devices {
            let device = DeviceAddress::new(user_id, d);
            keys.extend(self.keys.device_store(device));
            keys.extend([
                self.keys.legacy_in_flight(device),
                self.keys.conns(device),
                self.keys.conn_order(device),
                self.keys.ack_conns(device),
                self.keys.sent(device),
                self.keys.sent_times(device),
            ]);
        }
        let _: () = self
            .connection()
            .del(&keys)
            .await
            .map_err(super::unavailable)?;
        Ok(())
    }

    async fn deliver(&self, send: &Fanout, now_ms: u64, lease_until_ms: u64) -> Result<Fanned> {
        let deliver = Deliver {
            send,
            caps: self.caps,
            now_ms,
            lease_until_ms,
            pop_batch: POP_BATCH,
            most_evictions: MOST_EVICTIONS_PER_ENVELOPE,
        };
        let (fanned, removed) = deliver.decode(self.run(&deliver.call(&self.keys)).await?)?;
        removed.record();
        self.forget_evicted(&removed.bodies).await;
        if let Fanned::Done(outcomes) = &fanned {
            if outcomes.iter().any(|(_, d)| d.stored()) {
                self.wait_for_replicas().await;
            }
        }
        Ok(fanned)
    }

    async fn put_shared(&self, id: Uuid, json: &str, expires_at_ms: u64) -> Result<()> {
        // NX: a repeat of the send keeps the envelope its first attempt stored.
        let _: Option<String> = redis::cmd("SET")
            .arg(self.keys.shared(id))
            .arg(json)
            .arg("NX")
            .arg("PXAT")
            .arg(expires_at_ms)
            .query_async(&mut self.connection())
            .await
            .map_err(super::unavailable)?;
        Ok(())
    }

    async fn shared(&self, ids: &[Uuid]) -> Result<Vec<Option<String>>> {
        // One key per slot: a GET each, concurrently (one round trip on a single node, as the
        // connection pipelines them).
        let gets: Vec<_> = ids
            .iter()
            .map(|&id| {
                let mut conn = self.connection();
                let key = self.keys.shared(id);
                async move {
                    let json: Option<String> = conn.get(key).await.map_err(super::unavailable)?;
                    Ok::<_, crate::error::Error>(json)
                }
            })
            .collect();
        futures::stream::iter(gets)
            .buffered(READ_CONCURRENCY)
            .try_collect()
            .await
    }

    async fn delete_own(&self, ids: &[Uuid]) -> Result<()> {
        // One key per slot: a DEL each, concurrently.
        let dels: Vec<_> = ids
            .iter()
            .map(|&id| {
                let mut conn = self.connection();
                let key = self.keys.shared(id);
                async move {
                    let _: () = conn.del(key).await.map_err(super::unavailable)?;
                    Ok::<_, crate::error::Error>(())
                }
            })
            .collect();
        futures::stream::iter(dels)
            .buffer_unordered(READ_CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }

    async fn deliver_shared(
        &self,
        send: &SharedFanout,
        now_ms: u64,
        lease_until_ms: u64,
    ) -> Result<SharedFanned> {
        let deliver = DeliverShared {
            send,
            caps: self.caps,
            now_ms,
            lease_until_ms,
            pop_batch: POP_BATCH,
            most_evictions: MOST_EVICTIONS_PER_ENVELOPE,
            most_marks: MOST_GROUP_MARKS,
        };
        let (fanned, removed) = deliver.decode(self.run(&deliver.call(&self.keys)).await?)?;
        removed.record();
        self.forget_evicted(&removed.bodies).await;
        if let SharedFanned::Done(outcomes) = &fanned {
            if outcomes.iter().any(|(_, d)| d.stored()) {
                self.wait_for_replicas().await;
            }
        }
        Ok(fanned)
    }

    async fn devices_of(&self, users: &[UserId]) -> Result<Vec<Option<Vec<(DeviceId, u32)>>>> {
        let reads: Vec<_> = users
            .iter()
            .map(|&user_id| {
                let mut conn = self.connection();
                let key = self.keys.devices(user_id);
                async move {
                    let hash: Vec<(String, String)> =
                        conn.hgetall(key).await.map_err(super::unavailable)?;
                    Ok::<_, crate::error::Error>(devices::parse(&hash))
                }
            })
            .collect();
        futures::stream::iter(reads)
            .buffered(READ_CONCURRENCY)
            .try_collect()
            .await
    }

    async fn take_in_flight(
        &self,
        device: DeviceAddress,
        max: usize,
        lease_until_ms: u64,
        now_ms: u64,
    ) -> Result<Vec<StoredEnvelope>> {
        self.in_flight_take(device, max, lease_until_ms, now_ms)
            .await
    }

    async fn settle_in_flight(
        &self,
        device: DeviceAddress,
        batch: &[StoredEnvelope],
        lease_until_ms: u64,
        unsent: &[StoredEnvelope],
    ) -> Result<()> {
        self.in_flight_settle(device, batch, lease_until_ms, unsent)
            .await
    }

    async fn requeue(&self, device: DeviceAddress, envelopes: &[StoredEnvelope]) -> Result<()> {
        if envelopes.is_empty() {
            return Ok(());
        }
        let call = requeue::call(&self.keys, device, self.caps, envelopes);
        requeue::decode(self.run(&call).await?)?;
        self.wait_for_replicas().await;
        Ok(())
    }

    async fn ack(
        &self,
        device: DeviceAddress,
        ids: &[String],
        charge: Charge<'_>,
    ) -> Result<(RateDecision, u64)> {
        self.in_flight_ack(device, ids, charge).await
    }

    async fn release(&self, device: DeviceAddress) -> Result<()> {
        self.in_flight_release(device).await
    }

    async fn pending(&self, device: DeviceAddress, now_ms: u64) -> Result<u64> {
        let call = pending::call(&self.keys, device, now_ms);
        let (count, expired) = pending::decode(self.run(&call).await?)?;
        crate::metrics::messages(crate::metrics::MessageEvent::Expired, expired);
        Ok(count)
    }

    async fn summary(&self, device: DeviceAddress) -> Result<InboxSummary> {
        let call = inbox_summary::call(&self.keys, device);
        inbox_summary::decode(self.run(&call).await?)
    }
}

impl RedisStore {
    /// Deletes the bodies of disappearing messages a delivery step evicted (their keys are in
    /// other slots than the inbox, so the script could not): a sender overflowing an inbox
    /// does not leave bodies holding memory until their expiry. Best effort: one missed still
    /// expires then.
    async fn forget_evicted(&self, bodies: &[Uuid]) {
        if bodies.is_empty() {
            return;
        }
        if let Err(e) = self.delete_own(bodies).await {
            e.log();
        }
    }
}
