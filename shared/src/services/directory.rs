//! The key directory: upload, count and bundle fetch.

use std::sync::Arc;

use super::{limit, Limit};
use crate::config::RateLimits;
use crate::crypto::tokens::Principal;
use crate::error::{Error, Result};
use crate::model::{BundleOut, KeyCounts, KeysUploadRequest, UserId};
use crate::storage::{KeyStore, RateLimiter};

#[derive(Clone)]
pub struct KeyDirectory {
    pub(crate) keys: Arc<dyn KeyStore>,
    pub(crate) limiter: Arc<dyn RateLimiter>,
    pub(crate) limits: RateLimits,
}

impl KeyDirectory {
    /// `PUT /v1/keys`
    pub async fn upload(&self, who: &Principal, req: KeysUploadRequest) -> Result<KeyCounts> {
        let profile = self
            .keys
            .profile(who.user_id)
            .await?
            .ok_or(Error::UserNotFound)?;
        let upload = req.validate(&profile.identity_key)?;
        self.keys.store(who.user_id, &upload).await?;
        tracing::info!(user_id = %who.user_id, one_time = upload.one_time.len(), kyber = upload.kyber_one_time.len(), "keys stored");
        self.keys.counts(who.user_id).await
    }

    /// `GET /v1/keys/count`
    pub async fn count(&self, who: &Principal) -> Result<KeyCounts> {
        self.keys.counts(who.user_id).await
    }

    /// `GET /v1/users/{user_id}/bundle`
    pub async fn bundle(&self, who: &Principal, target: UserId) -> Result<BundleOut> {
        let requester = who.user_id;
        let (a, b) = futures::join!(
            limit(
                self.limiter.as_ref(),
                &self.limits,
                Limit::Bundle { requester },
                1
            ),
            limit(
                self.limiter.as_ref(),
                &self.limits,
                Limit::BundlePair { requester, target },
                1
            ),
        );
        a.and(b)?;
        let bundle = self.keys.take_bundle(target).await?;
        tracing::info!(%requester, %target, one_time_key = bundle.one_time.key_id, "bundle handed out");
        Ok((&bundle).into())
    }
}
