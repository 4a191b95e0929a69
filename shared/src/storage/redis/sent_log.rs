//! `SendLog` on Redis (`scripts/sent.lua`): per sender device, a hash of the remembered sends (with
//! what they cost, held to the policy's budget) and a sorted set of when each was claimed, in
//! the sender's slot; ids are hashed (they are the client's: up to 128 bytes of anything).

use async_trait::async_trait;
use sha2::{Digest, Sha256};

use super::scripts::sent::{Done, Op, Sent};
use super::RedisStore;
use crate::error::{Error, Result};
use crate::model::DeviceAddress;
use crate::storage::{Claim, Remembering, SendLog};

fn id_hash(id: &str) -> String {
    Sha256::digest(id.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl RedisStore {
    async fn sent(&self, sender: DeviceAddress, id: &str, now_ms: u64, op: Op<'_>) -> Result<Done> {
        let id_hash = id_hash(id);
        let sent = Sent {
            sender,
            id_hash: &id_hash,
            now_ms,
            op,
        };
        sent.decode(self.run(&sent.call(&self.keys)).await?)
    }
}

#[async_trait]
impl SendLog for RedisStore {
    async fn claim(
        &self,
        sender: DeviceAddress,
        id: &str,
        content_hash: &str,
        now_ms: u64,
        policy: Remembering,
    ) -> Result<Claim> {
        let op = Op::Claim {
            content_hash,
            policy,
        };
        match self.sent(sender, id, now_ms, op).await? {
            Done::Claimed(claim) => Ok(claim),
            other => Err(Error::Internal(format!("claim answered {other:?}"))),
        }
    }

    async fn record(
        &self,
        sender: DeviceAddress,
        id: &str,
        content_hash: &str,
        answer: &str,
        now_ms: u64,
        policy: Remembering,
    ) -> Result<()> {
        let op = Op::Record {
            content_hash,
            answer,
            policy,
        };
        self.sent(sender, id, now_ms, op).await?;
        Ok(())
    }

    async fn forget(&self, sender: DeviceAddress, id: &str) -> Result<()> {
        self.sent(sender, id, self.clock.now_ms(), Op::Release)
            .await?;
        Ok(())
    }
}
