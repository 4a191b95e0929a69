//! `RateLimiter` (token buckets, one atomic script) and `Revocations` on Redis.

use async_trait::async_trait;
use redis::AsyncCommands;
use std::sync::LazyLock;
use uuid::Uuid;

use super::{Lua, RedisStore};
use crate::config::Bucket;
use crate::error::Result;
use crate::storage::{RateDecision, RateLimiter, Revocations};

/// The bucket script reads the time from Redis (`TIME`), not from the App's clock: every
/// instance (each Lambda, the local gateway) takes from the same buckets, and one clock — the
/// server's — keeps refills consistent whatever the skew between their hosts, inside the one
/// atomic script. So a test's `ManualClock` does not refill buckets; only waiting does.
static TOKEN_BUCKET: LazyLock<Lua> = LazyLock::new(|| {
    Lua::new(concat!(
        include_str!("bucket.lua"),
        include_str!("token_bucket.lua")
    ))
});
static TOKEN_BUCKETS: LazyLock<Lua> = LazyLock::new(|| Lua::new(include_str!("token_buckets.lua")));

#[async_trait]
impl RateLimiter for RedisStore {
    async fn take(&self, key: &str, bucket: Bucket, cost: u32) -> Result<RateDecision> {
        let mut call = TOKEN_BUCKET.call(&[&self.bucket_key(key)]);
        call.arg(bucket.capacity)
            .arg(bucket.refill_per_ms())
            .arg(cost);
        let (allowed, retry_after_ms): (i64, i64) = self.run(&TOKEN_BUCKET, &call).await?;
        Ok(if allowed == 1 {
            RateDecision::Allowed
        } else {
            RateDecision::Limited {
                retry_after_ms: retry_after_ms.max(1) as u64,
            }
        })
    }

    async fn take_all(&self, takes: &[(&str, Bucket, u32)]) -> Result<RateDecision> {
        let keys: Vec<String> = takes.iter().map(|(k, ..)| self.bucket_key(k)).collect();
        let mut call = TOKEN_BUCKETS.call(&keys.iter().map(String::as_str).collect::<Vec<_>>());
        for (_, bucket, cost) in takes {
            call.arg(bucket.capacity)
                .arg(bucket.refill_per_ms())
                .arg(*cost);
        }
        let (allowed, retry_after_ms): (i64, i64) = self.run(&TOKEN_BUCKETS, &call).await?;
        Ok(if allowed == 1 {
            RateDecision::Allowed
        } else {
            RateDecision::Limited {
                retry_after_ms: retry_after_ms.max(1) as u64,
            }
        })
    }

    async fn give_back(&self, key: &str, bucket: Bucket, amount: u32) -> Result<()> {
        let mut call = TOKEN_BUCKET.call(&[&self.bucket_key(key)]);
        call.arg(bucket.capacity)
            .arg(bucket.refill_per_ms())
            .arg(-i64::from(amount));
        let _: (i64, i64) = self.run(&TOKEN_BUCKET, &call).await?;
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
