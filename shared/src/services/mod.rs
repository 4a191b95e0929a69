//! Use cases, written against the storage traits only.

pub mod accounts;
pub mod auth;
pub mod directory;
pub mod relay;

use crate::config::{Bucket, RateLimits};
use crate::error::{Error, Result};
use crate::model::UserId;
use crate::storage::{RateDecision, RateLimiter};

/// Every rate limit of the relay: what one bucket counts (its key) and which setting sizes it.
#[derive(Debug, Clone, Copy)]
pub enum Limit<'a> {
    /// Requests to the unauthenticated auth routes, per client IP (`RATE_LIMIT_AUTH`).
    Auth { ip: &'a str },
    /// Failed logins per client IP (`RATE_LIMIT_LOGIN_FAILURES`).
    LoginFailures { ip: &'a str },
    /// Bundle fetches per requester (`RATE_LIMIT_BUNDLE`).
    Bundle { requester: UserId },
    /// Bundle fetches per requester → target pair (`RATE_LIMIT_BUNDLE_PAIR`).
    BundlePair { requester: UserId, target: UserId },
    /// Messages per sender (`RATE_LIMIT_MESSAGES`).
    Messages { sender: UserId },
}

impl Limit<'_> {
    /// The bucket's name (the Redis adapter prefixes it).
    pub fn key(&self) -> String {
        match self {
            Self::Auth { ip } => format!("auth:{ip}"),
            Self::LoginFailures { ip } => format!("login-fail:{ip}"),
            Self::Bundle { requester } => format!("bundle:{requester}"),
            Self::BundlePair { requester, target } => format!("bundle:{requester}:{target}"),
            Self::Messages { sender } => format!("msg:{sender}"),
        }
    }

    pub fn bucket(&self, limits: &RateLimits) -> Bucket {
        match self {
            Self::Auth { .. } => limits.auth,
            Self::LoginFailures { .. } => limits.login_failures,
            Self::Bundle { .. } => limits.bundle,
            Self::BundlePair { .. } => limits.bundle_pair,
            Self::Messages { .. } => limits.messages,
        }
    }
}

/// Takes `cost` from the limit's bucket (0 only asks), mapping a refusal to `RateLimited` with
/// whole seconds to wait.
pub(crate) async fn limit(
    limiter: &dyn RateLimiter,
    limits: &RateLimits,
    which: Limit<'_>,
    cost: u32,
) -> Result<()> {
    match limiter
        .take(&which.key(), which.bucket(limits), cost)
        .await?
    {
        RateDecision::Allowed => Ok(()),
        RateDecision::Limited { retry_after_ms } => Err(Error::RateLimited {
            retry_after_secs: retry_after_ms.div_ceil(1000).max(1),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    #[test]
    fn every_limit_has_its_own_bucket_and_setting() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let all = [
            Limit::Auth { ip: "203.0.113.7" },
            Limit::LoginFailures { ip: "203.0.113.7" },
            Limit::Bundle { requester: a },
            Limit::BundlePair {
                requester: a,
                target: b,
            },
            Limit::Messages { sender: a },
        ];
        let keys: std::collections::HashSet<String> = all.iter().map(Limit::key).collect();
        assert_eq!(keys.len(), all.len(), "{keys:?}");
        let limits = RateLimits {
            login_failures: Bucket::new(1, 1),
            auth: Bucket::new(2, 1),
            bundle: Bucket::new(3, 1),
            bundle_pair: Bucket::new(4, 1),
            messages: Bucket::new(5, 1),
        };
        let sizes: Vec<_> = all.iter().map(|l| l.bucket(&limits)).collect();
        assert_eq!(
            sizes,
            vec![
                limits.auth,
                limits.login_failures,
                limits.bundle,
                limits.bundle_pair,
                limits.messages
            ]
        );
    }
}
