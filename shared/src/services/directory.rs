//! The key directory: upload, count and bundle fetch.

use std::sync::Arc;

use super::{limit, Limit};
use crate::config::RateLimits;
use crate::crypto::tokens::Principal;
use crate::error::{Error, Result};
use crate::model::{Bundle, BundleOut, KeyCounts, KeysUploadRequest, UserId};
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
        Ok(compose(&bundle))
    }
}

/// What a bundle hands out: the profile, the one-time EC prekey taken, and one Kyber prekey —
/// the one-time Kyber prekey taken when one was left, else the last-resort one (PQXDH accepts
/// either; the last-resort key is reused until replaced).
fn compose(b: &Bundle) -> BundleOut {
    let kyber = b
        .kyber_one_time
        .as_ref()
        .or(b.profile.kyber_last_resort.as_ref());
    BundleOut {
        user_id: b.user_id,
        registration_id: b.profile.registration_id,
        identity_key: crate::validation::encode(&b.profile.identity_key),
        signed_prekey: (&b.profile.signed_prekey).into(),
        one_time_prekey: (&b.one_time).into(),
        kyber_prekey: kyber.map(Into::into),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{OneTimeKey, Profile, SignedKey};

    fn signed(key_id: u32) -> SignedKey {
        SignedKey {
            key_id,
            public_key: vec![5; 33],
            signature: vec![7; 64],
        }
    }

    #[test]
    fn a_bundle_carries_the_one_time_kyber_key_else_the_last_resort_one() {
        let mut b = Bundle {
            user_id: uuid::Uuid::new_v4(),
            profile: Profile {
                registration_id: 7,
                identity_key: vec![5; 33],
                signed_prekey: signed(1),
                kyber_last_resort: Some(signed(2)),
            },
            one_time: OneTimeKey {
                key_id: 3,
                public_key: vec![5; 33],
            },
            kyber_one_time: Some(signed(4)),
        };
        let out = compose(&b);
        assert_eq!(out.kyber_prekey.as_ref().map(|k| k.key_id), Some(4));
        assert_eq!((out.one_time_prekey.key_id, out.registration_id), (3, 7));
        b.kyber_one_time = None;
        assert_eq!(compose(&b).kyber_prekey.map(|k| k.key_id), Some(2));
        b.profile.kyber_last_resort = None;
        assert!(compose(&b).kyber_prekey.is_none());
    }
}
