//! `Inbox` on Redis lists, one per device (fetch batches in flight: `in_flight.rs`; the
//! connection registry: `registry.rs`).

use async_trait::async_trait;
use redis::AsyncCommands;

use super::scripts::{deliver::Deliver, devices, pending, requeue};
use super::RedisStore;
use crate::error::Result;
use crate::model::{DeviceAddress, DeviceId, DeviceList, UserId};
use crate::storage::{
    Charge, Delivery, Fanned, Fanout, Inbox, RateDecision, StoredEnvelope, POP_BATCH,
};

/// Most envelopes one stored envelope may evict to make room in a full inbox: bounds the work of
/// a send (a larger envelope than that frees is `dropped`).
pub const MOST_EVICTIONS_PER_ENVELOPE: u32 = 64;

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
        let fanned = deliver.decode(self.run(&deliver.call(&self.keys)).await?)?;
        if let Fanned::Done(outcomes) = &fanned {
            let stored = outcomes.iter().any(|(_, d)| {
                matches!(
                    d,
                    Delivery::Queued
                        | Delivery::Online {
                            in_flight: true,
                            ..
                        }
                )
            });
            if stored {
                self.wait_for_replicas().await;
            }
        }
        Ok(fanned)
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
        pending::decode(self.run(&call).await?)
    }
}
