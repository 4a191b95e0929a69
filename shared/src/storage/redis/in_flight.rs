//! Envelopes in flight, kept by id: fetch batches (`scripts/in_flight.lua`: the `take` and
//! `settle` of `Inbox`) and what ack-mode connections hold until they acknowledge it
//! (`scripts/ack.lua`).

use super::scripts::{
    ack,
    in_flight::{Done, InFlight, Op},
};
use super::RedisStore;
use crate::error::{Error, Result};
use crate::model::DeviceAddress;
use crate::storage::{Charge, Inbox, RateDecision, StoredEnvelope};

impl RedisStore {
    async fn in_flight(
        &self,
        device: DeviceAddress,
        op: Op<'_>,
        lease_until_ms: u64,
        now_ms: u64,
    ) -> Result<Done> {
        let in_flight = InFlight {
            device,
            op,
            lease_until_ms,
            now_ms,
            caps: self.caps,
        };
        in_flight.decode(self.run(&in_flight.call(&self.keys)).await?)
    }

    pub(super) async fn in_flight_take(
        &self,
        device: DeviceAddress,
        max: usize,
        lease_until_ms: u64,
        now_ms: u64,
    ) -> Result<Vec<StoredEnvelope>> {
        match self
            .in_flight(device, Op::Take { max }, lease_until_ms, now_ms)
            .await?
        {
            Done::Taken(batch) => Ok(batch),
            other => Err(Error::Internal(format!("take answered {other:?}"))),
        }
    }

    pub(super) async fn in_flight_settle(
        &self,
        device: DeviceAddress,
        batch: &[StoredEnvelope],
        lease_until_ms: u64,
        unsent: &[StoredEnvelope],
    ) -> Result<()> {
        let op = Op::Settle { batch, unsent };
        self.in_flight(device, op, lease_until_ms, self.clock.now_ms())
            .await?;
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
        let call = ack::call(&self.keys, device, self.caps.ttl_secs, charge, ids);
        let (decision, acked, own) = ack::decode(self.run(&call).await?)?;
        if !own.is_empty() {
            // Acknowledged: the relay keeps no copy. Best effort, as the key expires anyway.
            let own: Vec<uuid::Uuid> = own
                .iter()
                .filter_map(|id| uuid::Uuid::parse_str(id).ok())
                .collect();
            if let Err(e) = self.delete_own(&own).await {
                e.log();
            }
        }
        Ok((decision, acked))
    }

    pub(super) async fn in_flight_release(&self, device: DeviceAddress) -> Result<()> {
        let now = self.clock.now_ms();
        self.in_flight(device, Op::Release, now, now).await?;
        self.wait_for_replicas().await;
        Ok(())
    }
}
