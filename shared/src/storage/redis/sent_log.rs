//! `SendLog` on Redis: one hash per remembered send, in the sender's slot, keyed by a hash of
//! the id (ids are the client's: up to 128 bytes of anything).

use std::sync::LazyLock;

use async_trait::async_trait;
use sha2::{Digest, Sha256};

use super::{unavailable, Lua, RedisStore};
use crate::error::{Error, Result};
use crate::model::DeviceAddress;
use crate::storage::{Claim, SendLog};

static CLAIM: LazyLock<Lua> = LazyLock::new(|| Lua::new(include_str!("sent.lua")));

fn id_hash(id: &str) -> String {
    Sha256::digest(id.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[async_trait]
impl SendLog for RedisStore {
    async fn claim(
        &self,
        sender: DeviceAddress,
        id: &str,
        content_hash: &str,
        pending_secs: u64,
    ) -> Result<Claim> {
        let key = self.keys.sent(sender, &id_hash(id));
        let mut call = CLAIM.call(&[&key]);
        call.arg(content_hash).arg(pending_secs.max(1));
        let reply: Vec<String> = self.run(&CLAIM, &call).await?;
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
        answer: &str,
        answered_secs: u64,
    ) -> Result<()> {
        let key = self.keys.sent(sender, &id_hash(id));
        let mut pipe = redis::pipe();
        pipe.atomic()
            .hset(&key, "a", answer)
            .ignore()
            .expire(&key, answered_secs.max(1) as i64)
            .ignore();
        let _: () = pipe
            .query_async(&mut self.connection())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn release(&self, sender: DeviceAddress, id: &str) -> Result<()> {
        let key = self.keys.sent(sender, &id_hash(id));
        let _: () = redis::AsyncCommands::del(&mut self.connection(), key)
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}
