//! Fetch batches in flight (`in_flight.lua`): the `take` and `settle` of `Inbox`.

use std::sync::LazyLock;

use super::{envelope, Lua, RedisStore};
use crate::error::Result;
use crate::model::DeviceAddress;
use crate::storage::StoredEnvelope;

static IN_FLIGHT: LazyLock<Lua> = LazyLock::new(|| {
    Lua::new(concat!(
        include_str!("accounting.lua"),
        "\n",
        include_str!("in_flight.lua")
    ))
});

impl RedisStore {
    fn in_flight_call(
        &self,
        device: DeviceAddress,
        op: &str,
        lease_until_ms: u64,
        now_ms: u64,
    ) -> redis::Cmd {
        let mut call = IN_FLIGHT.call(&[
            &self.keys.inbox(device),
            &self.keys.inbox_accounting(device),
            &self.keys.in_flight(device),
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

    pub(super) async fn in_flight_ack(&self, device: DeviceAddress, ids: &[String]) -> Result<u64> {
        if ids.is_empty() {
            return Ok(0);
        }
        let now = self.clock.now_ms();
        let mut call = self.in_flight_call(device, "ack", now, now);
        for id in ids {
            call.arg(id);
        }
        self.run(&IN_FLIGHT, &call).await
    }

    pub(super) async fn in_flight_release(&self, device: DeviceAddress) -> Result<()> {
        let now = self.clock.now_ms();
        let call = self.in_flight_call(device, "release", now, now);
        let _: Vec<String> = self.run(&IN_FLIGHT, &call).await?;
        self.wait_for_replicas().await;
        Ok(())
    }
}
