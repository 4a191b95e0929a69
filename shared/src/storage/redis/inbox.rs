//! `Inbox` on Redis lists, one per device (fetch batches in flight: `in_flight.rs`; the
//! connection registry: `registry.rs`).

use async_trait::async_trait;
use redis::AsyncCommands;
use std::sync::LazyLock;

use super::{envelope, Lua, RedisStore};
use crate::error::{Error, Result};
use crate::model::{DeviceAddress, DeviceId, DeviceList, UserId};
use crate::storage::{
    Charge, Delivery, Fanned, Fanout, Inbox, RateDecision, StoredEnvelope, POP_BATCH,
};

/// Each inbox script starts with the store's prelude (Lua has no includes in Redis).
macro_rules! inbox_script {
    ($file:literal) => {
        LazyLock::new(|| Lua::new(concat!(include_str!("store.lua"), include_str!($file))))
    };
}
static DELIVER: LazyLock<Lua> = inbox_script!("deliver.lua");
static PENDING: LazyLock<Lua> = inbox_script!("pending.lua");
static POP: LazyLock<Lua> = inbox_script!("pop.lua");
static REQUEUE: LazyLock<Lua> = inbox_script!("requeue.lua");
static DEVICES: LazyLock<Lua> = LazyLock::new(|| Lua::new(include_str!("devices.lua")));

/// API Gateway closes WebSocket connections after two hours; registrations expire with them.
pub const CONNECTION_TTL_MS: u64 = 2 * 3600 * 1000;

fn corrupt(what: &str) -> Error {
    Error::Internal(format!("deliver script answered {what}"))
}

fn ids(v: &redis::Value) -> Result<Vec<DeviceId>> {
    redis::from_redis_value(v.clone()).map_err(|_| corrupt("a malformed device list"))
}

/// One target's `{code, connections, envelopes, ack-mode connections}`.
type Outcome = (i64, Vec<String>, Vec<String>, Vec<String>);

fn device_outcome(v: &redis::Value) -> Result<Outcome> {
    redis::from_redis_value(v.clone()).map_err(|_| corrupt("a malformed outcome"))
}

#[async_trait]
impl Inbox for RedisStore {
    async fn set_devices(&self, user_id: UserId, list: &DeviceList) -> Result<()> {
        let mut call = DEVICES.call(&[&self.keys.devices(user_id)]);
        call.arg(self.keys.user_base(user_id)).arg(list.version);
        for d in &list.devices {
            call.arg(d.device_id)
                .arg(format!("{}:{}", d.registration_id, d.created_at));
        }
        let _: i64 = self.run(&DEVICES, &call).await?;
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
        let to = send.to;
        let mut keys = vec![self.keys.devices(to)];
        for a in &send.envelopes {
            let device = DeviceAddress::new(to, a.device_id);
            keys.extend(self.keys.device_store(device));
            keys.extend([self.keys.conns(device), self.keys.ack_conns(device)]);
        }
        let key_refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let mut call = DELIVER.call(&key_refs);
        call.arg(send.envelopes.len())
            .arg(self.inbox_max)
            .arg(self.inbox_ttl_secs)
            .arg(now_ms)
            .arg(if send.online_only { 1 } else { 0 })
            .arg(POP_BATCH)
            .arg(self.inbox_max_bytes)
            .arg(lease_until_ms)
            .arg(
                send.sender_device
                    .map(|d| d.to_string())
                    .unwrap_or_default(),
            )
            .arg(if send.legacy { 1 } else { 0 })
            .arg(self.inbox_new_part.0)
            .arg(self.inbox_new_part.1)
            .arg(crate::config::MOST_EVICTIONS_PER_ENVELOPE);
        for a in &send.envelopes {
            call.arg(a.device_id)
                .arg(a.registration_id.map(|r| r.to_string()).unwrap_or_default())
                .arg(envelope::encode(&a.envelope));
        }
        let reply: Vec<redis::Value> = self.run(&DELIVER, &call).await?;
        let code: i64 = reply
            .first()
            .map(|v| redis::from_redis_value(v.clone()))
            .transpose()
            .map_err(|_| corrupt("no code"))?
            .ok_or_else(|| corrupt("nothing"))?;
        let at = |i: usize| reply.get(i).ok_or_else(|| corrupt("too little"));
        match code {
            -1 => return Ok(Fanned::UnknownInbox),
            -2 => {
                return Ok(Fanned::Mismatched {
                    missing: ids(at(1)?)?,
                    extra: ids(at(2)?)?,
                    targets: ids(at(3)?)?,
                })
            }
            -3 => return Ok(Fanned::Stale(ids(at(1)?)?)),
            _ => {}
        }
        let mut outcomes = Vec::with_capacity(send.envelopes.len());
        let mut stored = false;
        for (i, a) in send.envelopes.iter().enumerate() {
            let (code, connections, envelopes, ack_connections) = device_outcome(at(i + 1)?)?;
            stored |= code == 1 || code == 3;
            outcomes.push((
                a.device_id,
                match code {
                    0 => Delivery::Dropped,
                    1 => Delivery::Queued,
                    code => Delivery::Online {
                        connections,
                        ack_connections,
                        envelopes: envelopes.iter().map(|e| envelope::decode(e)).collect(),
                        in_flight: code == 3,
                    },
                },
            ));
        }
        if stored {
            self.wait_for_replicas().await;
        }
        Ok(Fanned::Done(outcomes))
    }

    async fn pop(&self, device: DeviceAddress, max: usize) -> Result<Vec<StoredEnvelope>> {
        let mut call = POP.call(&self.keys.device_store(device));
        call.arg(max.max(1));
        let popped: Vec<String> = self.run(&POP, &call).await?;
        Ok(popped.iter().map(|e| envelope::decode(e)).collect())
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
        let mut call = REQUEUE.call(&self.keys.device_store(device));
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
        let mut call = PENDING.call(&self.keys.device_store(device));
        call.arg(now_ms);
        self.run(&PENDING, &call).await
    }
}
