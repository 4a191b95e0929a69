//! The one rate limiter every service asks: a limit's bucket is sized by the settings, taken
//! from the backend, and a refusal becomes `RateLimited` with whole seconds to wait.

use std::sync::Arc;

use super::Limit;
use crate::config::{Bucket, RateLimits};
use crate::error::{Error, Result};
use crate::storage::{RateDecision, RateLimiter};

#[derive(Clone)]
pub struct Limiter {
    backend: Arc<dyn RateLimiter>,
    limits: RateLimits,
}

impl Limiter {
    pub fn new(backend: Arc<dyn RateLimiter>, limits: RateLimits) -> Self {
        Self { backend, limits }
    }

    /// Takes one token from the limit's bucket.
    pub async fn take(&self, which: Limit<'_>) -> Result<()> {
        self.take_n(which, 1).await
    }

    /// Takes `cost` tokens from the limit's bucket (0 only asks).
    pub async fn take_n(&self, which: Limit<'_>, cost: u32) -> Result<()> {
        let decision = self
            .backend
            .take(&which.key(), self.bucket(&which), cost)
            .await?;
        self.decided(&which, decision)
    }

    /// Takes each limit's cost in one atomic step, all or none (a refusal costs nothing); the
    /// keys must share a hash slot (see `Limit::key`). Refused: `RateLimited` with the longest
    /// wait.
    pub async fn take_all(&self, which: &[(Limit<'_>, u32)]) -> Result<()> {
        let keys: Vec<String> = which.iter().map(|(l, _)| l.key()).collect();
        let takes: Vec<(&str, Bucket, u32)> = which
            .iter()
            .zip(&keys)
            .map(|((l, cost), key)| (key.as_str(), self.bucket(l), *cost))
            .collect();
        match self.backend.take_all(&takes).await? {
            RateDecision::Allowed => Ok(()),
            RateDecision::Limited { retry_after_ms } => {
                let retry_after_secs = wait_secs(retry_after_ms);
                // One refusal, named by the step's first limit (a send's `frames`); the keys
                // name users and addresses, so they stay out of the log.
                let limit = which.first().map_or("", |(l, _)| l.name());
                crate::metrics::rate_limited(limit);
                tracing::info!(limit, retry_after_secs, "rate limit hit");
                Err(Error::RateLimited { retry_after_secs })
            }
        }
    }

    /// Returns `amount` tokens to the limit's bucket; a failure only costs the client a token, so
    /// it is logged, not raised.
    pub async fn give_back(&self, which: Limit<'_>, amount: u32) {
        if let Err(e) = self
            .backend
            .give_back(&which.key(), self.bucket(&which), amount)
            .await
        {
            e.log();
        }
    }

    /// The size of the limit's bucket, for a storage step that charges it itself.
    pub fn bucket(&self, which: &Limit<'_>) -> Bucket {
        which.bucket(&self.limits)
    }

    /// A limit's decision (taken here, or by a storage step that charged it itself) as a
    /// result.
    pub fn decided(&self, which: &Limit<'_>, decision: RateDecision) -> Result<()> {
        match decision {
            RateDecision::Allowed => Ok(()),
            RateDecision::Limited { retry_after_ms } => {
                let retry_after_secs = wait_secs(retry_after_ms);
                // The bucket's key names the source (a client IP or a user): only the limit's
                // name is logged.
                crate::metrics::rate_limited(which.name());
                tracing::info!(limit = which.name(), retry_after_secs, "rate limit hit");
                Err(Error::RateLimited { retry_after_secs })
            }
        }
    }
}

/// A refusal's wait in whole seconds, at least one.
fn wait_secs(retry_after_ms: u64) -> u64 {
    retry_after_ms.div_ceil(1000).max(1)
}
