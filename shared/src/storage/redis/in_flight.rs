//! Envelopes in flight, kept by id: fetch batches (`in_flight.lua`: the `take` and `settle` of
//! `Inbox`) and what ack-mode connections hold until they acknowledge it (`ack.lua`).

use std::sync::LazyLock;

use super::{envelope, Lua, RedisStore};
use crate::error::Result;
use crate::model::DeviceAddress;
use crate::storage::{Charge, RateDecision, StoredEnvelope};

static IN_FLIGHT: LazyLock<Lua> = LazyLock::new(|| {
    Lua::new(concat!(
        include_str!("store.lua"),
        include_str!("in_flight.lua")
    ))
});
/// Acks are most of the in-flight calls of a busy ack-mode connection: their script carries only
/// the bucket's prelude (each prelude line runs again on every call), and touches envelopes by
/// id only.
static ACK: LazyLock<Lua> =
    LazyLock::new(|| Lua::new(concat!(include_str!("bucket.lua"), include_str!("ack.lua"))));

impl RedisStore {
    fn in_flight_call(
        &self,
        device: DeviceAddress,
        op: &str,
        lease_until_ms: u64,
        now_ms: u64,
    ) -> redis::Cmd {
        let [inbox, holders, stats, flight, parked] = self.keys.device_store(device);
        let legacy = self.keys.legacy_in_flight(device);
        let mut call = IN_FLIGHT.call(&[
            inbox.as_str(),
            holders.as_str(),
            stats.as_str(),
            flight.as_str(),
            parked.as_str(),
            legacy.as_str(),
        ]);
        call.arg(op)
            .arg(lease_until_ms)
            .arg(now_ms)
            .arg(self.inbox_max)
            .arg(self.inbox_max_bytes)
            .arg(self.inbox_ttl_secs);
        call
    }

    pub(super) async fn in_flight_take(
        &self,
        device: DeviceAddress,
        max: usize,
        lease_until_ms: u64,
        now_ms: u64,
    ) -> Result<Vec<StoredEnvelope>> {
        let mut call = self.in_flight_call(device, "take", lease_until_ms, now_ms);
        call.arg(max.max(1));
        let taken: Vec<String> = self.run(&IN_FLIGHT, &call).await?;
        Ok(taken.iter().map(|e| envelope::decode(e)).collect())
    }

    pub(super) async fn in_flight_settle(
        &self,
        device: DeviceAddress,
        batch: &[StoredEnvelope],
        lease_until_ms: u64,
        unsent: &[StoredEnvelope],
    ) -> Result<()> {
        let mut call = self.in_flight_call(device, "done", lease_until_ms, self.clock.now_ms());
        call.arg(batch.len());
        for e in batch.iter().chain(unsent) {
            call.arg(envelope::encode(e));
        }
        let _: Vec<String> = self.run(&IN_FLIGHT, &call).await?;
        if !unsent.is_empty() {
            self.wait_for_replicas().await;
        }
        Ok(())
    }

    /// `ack`, with the frame's charge (when it deletes nothing) taken in the same script: one
    /// round trip per `ack` frame.
    pub(super) async fn in_flight_ack(
        &self,
        device: DeviceAddress,
        ids: &[String],
        charge: Charge<'_>,
    ) -> Result<(RateDecision, u64)> {
        let (flight, parked, bucket) = (
            self.keys.in_flight(device),
            self.keys.in_flight_parked(device),
            self.bucket_key(charge.key),
        );
        let mut call = ACK.call(&[flight.as_str(), parked.as_str(), bucket.as_str()]);
        call.arg(self.inbox_ttl_secs)
            .arg(charge.bucket.capacity)
            .arg(charge.bucket.refill_per_ms())
            .arg(charge.cost);
        for id in ids {
            call.arg(id);
        }
        let (allowed, retry_after_ms, deleted): (i64, i64, u64) = self.run(&ACK, &call).await?;
        Ok(if allowed == 1 {
            (RateDecision::Allowed, deleted)
        } else {
            let retry_after_ms = retry_after_ms.max(1) as u64;
            (RateDecision::Limited { retry_after_ms }, 0)
        })
    }

    pub(super) async fn in_flight_release(&self, device: DeviceAddress) -> Result<()> {
        let now = self.clock.now_ms();
        let call = self.in_flight_call(device, "release", now, now);
        let _: Vec<String> = self.run(&IN_FLIGHT, &call).await?;
        self.wait_for_replicas().await;
        Ok(())
    }
}
