//! `RateLimiter` (token buckets, one atomic script) and `Revocations` on Redis.

use async_trait::async_trait;
use redis::AsyncCommands;
use uuid::Uuid;

use super::scripts::{token_bucket, token_buckets};
use super::RedisStore;
use crate::config::Bucket;
use crate::error::Result;
use crate::storage::{RateDecision, RateLimiter, Revocations};

/// The bucket scripts read the time from Redis (`TIME`), not from the App's clock: every
/// instance (each Lambda, the local gateway) takes from the same buckets, and one clock — the
/// server's — keeps refills consistent whatever the skew between their hosts, inside the one
/// atomic script. So a test's `ManualClock` does not refill buckets; only waiting does.
#[async_trait]
impl RateLimiter for RedisStore {
    async fn take(&self, key: &str, bucket: Bucket, cost: u32) -> Result<RateDecision> {
        let call = token_bucket::call(&self.keys, key, bucket, i64::from(cost));
        token_bucket::decode(self.run(&call).await?)
    }

    async fn take_all(&self, takes: &[(&str, Bucket, u32)]) -> Result<RateDecision> {
        let call = token_buckets::call(&self.keys, takes);
        token_buckets::decode(self.run(&call).await?)
    }

    async fn give_back(&self, key: &str, bucket: Bucket, amount: u32) -> Result<()> {
        let call = token_bucket::call(&self.keys, key, bucket, -i64::from(amount));
        token_bucket::decode(self.run(&call).await?)?;
        Ok(())
    }
}

#[async_trait]
impl Revocations for RedisStore {
    async fn revoke(&self, session_id: Uuid, until_unix_secs: u64) -> Result<()> {
        let now = self.clock.now_secs();
        let ttl = until_unix_secs.saturating_sub(now).max(1);
        let _: () = self
            .connection()
            .set_ex(self.revoked_key(session_id), 1, ttl)
            .await
            .map_err(super::unavailable)?;
        Ok(())
    }

    async fn is_revoked(&self, session_id: Uuid) -> Result<bool> {
        Ok(self
            .connection()
            .exists(self.revoked_key(session_id))
            .await
            .map_err(super::unavailable)?)
    }
}
