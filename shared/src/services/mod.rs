//! Use cases, written against the storage traits only.

pub mod accounts;
pub mod auth;
pub mod directory;
pub mod relay;

use crate::config::Bucket;
use crate::error::{Error, Result};
use crate::storage::{RateDecision, RateLimiter};

/// Takes `cost` from a bucket, mapping a refusal to `RateLimited` with whole seconds to wait.
pub(crate) async fn limit(
    limiter: &dyn RateLimiter,
    key: &str,
    bucket: Bucket,
    cost: u32,
) -> Result<()> {
    match limiter.take(key, bucket, cost).await? {
        RateDecision::Allowed => Ok(()),
        RateDecision::Limited { retry_after_ms } => Err(Error::RateLimited {
            retry_after_secs: retry_after_ms.div_ceil(1000).max(1),
        }),
    }
}
