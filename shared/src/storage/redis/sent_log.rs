//! `SendLog` on Redis (`sent.lua`): per sender device, a hash of the remembered sends (with
//! what they cost, held to the policy's budget) and a sorted set of when each was claimed, in
//! the sender's slot; ids are hashed (they are the client's: up to 128 bytes of anything).

use std::sync::LazyLock;

use async_trait::async_trait;
use sha2::{Digest, Sha256};

use super::{Lua, RedisStore};
use crate::error::{Error, Result};
use crate::model::DeviceAddress;
use crate::storage::{Claim, Remembering, SendLog};

static SENT: LazyLock<Lua> = LazyLock::new(|| Lua::new(include_str!("sent.lua")));

fn id_hash(id: &str) -> String {
    Sha256::digest(id.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl RedisStore {
    fn sent_call(&self, sender: DeviceAddress, op: &str, id: &str, now_ms: u64) -> redis::Cmd {
        let mut call = SENT.call(&[&self.keys.sent(sender), &self.keys.sent_times(sender)]);
        call.arg(op).arg(id_hash(id)).arg(now_ms);
        call
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
        let mut call = self.sent_call(sender, "claim", id, now_ms);
        call.arg(content_hash)
            .arg(policy.window_ms)
            .arg(policy.lapse_ms)
            .arg(policy.budget_bytes);
        let reply: Vec<String> = self.run(&SENT, &call).await?;
        match reply.first().map(String::as_str) {
            Some("new") => Ok(Claim::New),
            Some("conflict") => Ok(Claim::Conflict),
            Some("pending") => Ok(Claim::Pending),
            Some("done") => Ok(Claim::Done(reply.get(1).cloned().unwrap_or_default())),
            _ => Err(Error::Internal("send log answered nothing".into())),
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
        let mut call = self.sent_call(sender, "record", id, now_ms);
        call.arg(content_hash)
            .arg(answer)
            .arg(policy.window_ms)
            .arg(policy.budget_bytes);
        let _: Vec<String> = self.run(&SENT, &call).await?;
        Ok(())
    }

    async fn forget(&self, sender: DeviceAddress, id: &str) -> Result<()> {
        let call = self.sent_call(sender, "release", id, self.clock.now_ms());
        let _: Vec<String> = self.run(&SENT, &call).await?;
        Ok(())
    }
}
