//! `Provisioning` on Redis: linking codes and provisioning sockets, each a key with a TTL; using
//! one up is a `GETDEL`, so exactly one caller gets it.

use async_trait::async_trait;
use redis::AsyncCommands;
use uuid::Uuid;

use super::{unavailable, RedisStore};
use crate::error::Result;
use crate::model::UserId;
use crate::storage::Provisioning;

/// What a provisioning socket's key holds before it has asked for an address.
const NO_ADDRESS_YET: &str = "-";

#[async_trait]
impl Provisioning for RedisStore {
    async fn put_code(&self, code_hash: &str, user_id: UserId, ttl_secs: u64) -> Result<()> {
        let _: () = self
            .connection()
            .set_ex(
                self.keys.link_code(code_hash),
                user_id.to_string(),
                ttl_secs,
            )
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn code_owner(&self, code_hash: &str) -> Result<Option<UserId>> {
        let raw: Option<String> = self
            .connection()
            .get(self.keys.link_code(code_hash))
            .await
            .map_err(unavailable)?;
        Ok(raw.and_then(|u| Uuid::parse_str(&u).ok()))
    }

    async fn take_code(&self, code_hash: &str) -> Result<Option<UserId>> {
        let raw: Option<String> = self
            .connection()
            .get_del(self.keys.link_code(code_hash))
            .await
            .map_err(unavailable)?;
        Ok(raw.and_then(|u| Uuid::parse_str(&u).ok()))
    }

    async fn open_socket(&self, connection_id: &str, ttl_secs: u64) -> Result<()> {
        let _: () = self
            .connection()
            .set_ex(
                self.keys.provisioning_socket(connection_id),
                NO_ADDRESS_YET,
                ttl_secs,
            )
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn is_socket(&self, connection_id: &str) -> Result<bool> {
        self.connection()
            .exists(self.keys.provisioning_socket(connection_id))
            .await
            .map_err(unavailable)
    }

    async fn address(
        &self,
        connection_id: &str,
        fresh: &str,
        ttl_secs: u64,
    ) -> Result<Option<String>> {
        let socket = self.keys.provisioning_socket(connection_id);
        let mut conn = self.connection();
        let current: Option<String> = conn.get(&socket).await.map_err(unavailable)?;
        match current.as_deref() {
            None => Ok(None),
            Some(NO_ADDRESS_YET) => {
                // Only if still without an address: two `provision` frames at once agree.
                let set: Option<String> = redis::cmd("SET")
                    .arg(&socket)
                    .arg(fresh)
                    .arg("XX")
                    .arg("GET")
                    .arg("KEEPTTL")
                    .query_async(&mut conn)
                    .await
                    .map_err(unavailable)?;
                match set.as_deref() {
                    Some(NO_ADDRESS_YET) => {
                        let _: () = conn
                            .set_ex(self.keys.provisioning(fresh), connection_id, ttl_secs)
                            .await
                            .map_err(unavailable)?;
                        Ok(Some(fresh.to_string()))
                    }
                    Some(other) => {
                        // Lost the race: put the winner's address back.
                        let _: () = redis::cmd("SET")
                            .arg(&socket)
                            .arg(other)
                            .arg("XX")
                            .arg("KEEPTTL")
                            .query_async(&mut conn)
                            .await
                            .map_err(unavailable)?;
                        Ok(Some(other.to_string()))
                    }
                    None => Ok(None),
                }
            }
            Some(address) => Ok(Some(address.to_string())),
        }
    }

    async fn take_address(&self, address: &str) -> Result<Option<String>> {
        self.connection()
            .get_del(self.keys.provisioning(address))
            .await
            .map_err(unavailable)
    }

    async fn close_socket(&self, connection_id: &str) -> Result<()> {
        let _: () = self
            .connection()
            .del(self.keys.provisioning_socket(connection_id))
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}
