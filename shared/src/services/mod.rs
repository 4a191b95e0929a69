//! Use cases, written against the storage traits only.

mod account_age;
pub mod accounts;
pub mod attachments;
pub mod auth;
pub mod devices;
pub mod directory;
pub mod relay;
mod relay_acks;
mod relay_provisioning;

pub use account_age::AccountAge;

pub use crate::config::Limit;
use crate::config::{Bucket, RateLimits};
use crate::error::{Error, Result};
use crate::storage::{RateDecision, RateLimiter};

/// Takes `cost` from the limit's bucket (0 only asks), mapping a refusal to `RateLimited` with
/// whole seconds to wait.
pub(crate) async fn limit(
    limiter: &dyn RateLimiter,
    limits: &RateLimits,
    which: Limit<'_>,
    cost: u32,
) -> Result<()> {
    let decision = limiter
        .take(&which.key(), which.bucket(limits), cost)
        .await?;
    decided(&which, decision)
}

/// A limit's decision (taken by the limiter, or by a storage step that charged it itself) as a
/// result: a refusal is `RateLimited` with whole seconds to wait.
pub(crate) fn decided(which: &Limit<'_>, decision: RateDecision) -> Result<()> {
    match decision {
        RateDecision::Allowed => Ok(()),
        RateDecision::Limited { retry_after_ms } => {
            let retry_after_secs = retry_after_ms.div_ceil(1000).max(1);
            // The bucket's key names the source: the client IP, or the user for per-user limits.
            tracing::info!(bucket = %which.key(), retry_after_secs, "rate limit hit");
            Err(Error::RateLimited { retry_after_secs })
        }
    }
}

/// Takes each limit's cost in one atomic step, all or none (a refusal costs nothing); the keys
/// must share a hash slot (see `Limit::key`). Refused: `RateLimited` with the longest wait.
pub(crate) async fn limit_all(
    limiter: &dyn RateLimiter,
    limits: &RateLimits,
    which: &[(Limit<'_>, u32)],
) -> Result<()> {
    let keys: Vec<String> = which.iter().map(|(l, _)| l.key()).collect();
    let takes: Vec<(&str, Bucket, u32)> = which
        .iter()
        .zip(&keys)
        .map(|((l, cost), key)| (key.as_str(), l.bucket(limits), *cost))
        .collect();
    match limiter.take_all(&takes).await? {
        RateDecision::Allowed => Ok(()),
        RateDecision::Limited { retry_after_ms } => {
            let retry_after_secs = retry_after_ms.div_ceil(1000).max(1);
            tracing::info!(buckets = ?keys, retry_after_secs, "rate limit hit");
            Err(Error::RateLimited { retry_after_secs })
        }
    }
}

/// Returns `amount` tokens to the limit's bucket; a failure only costs the client a token, so it
/// is logged, not raised.
pub(crate) async fn give_back(
    limiter: &dyn RateLimiter,
    limits: &RateLimits,
    which: Limit<'_>,
    amount: u32,
) {
    if let Err(e) = limiter
        .give_back(&which.key(), which.bucket(limits), amount)
        .await
    {
        e.log();
    }
}
