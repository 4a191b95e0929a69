//! The key directory: upload, count and bundle fetch.

use std::sync::Arc;

use super::{AccountAge, Limit, Limiter};
use crate::config::{DeviceLimits, KeyLimits};
use crate::crypto::tokens::Principal;
use crate::error::{Error, Result};
use crate::metrics;
use crate::model::{
    Bundle, BundleOut, DeviceAddress, DeviceBundleOut, DeviceId, DevicesBundleOut, KeyCounts,
    KeyUpload, KeysUploadRequest, SignedPreKeyOut, UserId, PRIMARY_DEVICE,
};
use crate::storage::{KeyPackageStore, KeyStore, UserStore};

#[derive(Clone)]
pub struct KeyDirectory {
    pub(crate) keys: Arc<dyn KeyStore>,
    pub(crate) key_packages: Arc<dyn KeyPackageStore>,
    pub(crate) users: Arc<dyn UserStore>,
    pub(crate) limiter: Limiter,
    pub(crate) key_limits: KeyLimits,
    pub(crate) device_limits: DeviceLimits,
    pub(crate) age: AccountAge,
}

impl KeyDirectory {
    /// `PUT /v1/keys`
    pub async fn upload(&self, who: &Principal, req: KeysUploadRequest) -> Result<KeyCounts> {
        let user = who.user_id;
        let device = DeviceAddress::new(user, who.device_id);
        self.limiter.take(Limit::KeysUpload { user }).await?;
        let (profile, stored) =
            futures::try_join!(self.keys.profile(device), self.keys.counts(device))?;
        let profile = profile.ok_or(Error::UserNotFound)?;
        let upload = req.validate(&profile.identity_key)?;
        within_cap(&stored, &upload, self.key_limits.max_one_time_prekeys)?;
        self.keys.store(device, &upload).await?;
        tracing::info!(
            device_id = who.device_id,
            one_time = upload.one_time.len(),
            kyber = upload.kyber_one_time.len(),
            "keys stored"
        );
        self.keys.counts(device).await
    }

    /// `GET /v1/keys/count`
    pub async fn count(&self, who: &Principal) -> Result<KeyCounts> {
        self.keys
            .counts(DeviceAddress::new(who.user_id, who.device_id))
            .await
    }

    /// `GET /v1/users/{user_id}/bundle`: device 1's bundle, in the shape from before devices.
    pub async fn bundle(&self, who: &Principal, target: UserId) -> Result<BundleOut> {
        let fetched = self.bundle_of(who, target).await;
        metrics::bundle_fetch(outcome(&fetched));
        fetched
    }

    async fn bundle_of(&self, who: &Principal, target: UserId) -> Result<BundleOut> {
        let budget = self.charge_requester(who, target).await?;
        let bundles = self
            .take_within(budget, target, &[PRIMARY_DEVICE], false)
            .await;
        let bundles = match bundles {
            Err(Error::DevicesExhausted(_)) => return Err(Error::PrekeysExhausted),
            other => other?,
        };
        // Neither party is named: who fetched whose bundle is who is about to talk to whom.
        tracing::info!("bundle handed out");
        bundles
            .first()
            .and_then(compose)
            .ok_or_else(|| Error::Internal("a bundle without its one-time key".into()))
    }

    /// `GET /v1/users/{user_id}/devices/{device_id}/bundle`: one device's bundle, or every
    /// device's (`None`), each consuming one of that device's one-time prekeys, all or none.
    pub async fn device_bundles(
        &self,
        who: &Principal,
        target: UserId,
        device: Option<DeviceId>,
    ) -> Result<DevicesBundleOut> {
        let fetched = self.device_bundles_of(who, target, device).await;
        metrics::bundle_fetch(outcome(&fetched));
        fetched
    }

    async fn device_bundles_of(
        &self,
        who: &Principal,
        target: UserId,
        device: Option<DeviceId>,
    ) -> Result<DevicesBundleOut> {
        // The requester pays before anything is looked up, so probing ids costs as it does on
        // the single-device route; the target's budget once the devices are known.
        let budget = self.charge_requester(who, target).await?;
        let list = self
            .users
            .devices(target)
            .await?
            .ok_or(Error::UserNotFound)?;
        let wanted: Vec<DeviceId> = match device {
            Some(d) if list.get(d).is_some() => vec![d],
            Some(_) => return Err(Error::DeviceNotFound),
            None => list.devices.iter().map(|d| d.device_id).collect(),
        };
        let bundles = self
            .take_within(
                budget,
                target,
                &wanted,
                self.device_limits.bundle_without_one_time,
            )
            .await?;
        let without_one_time = bundles.iter().filter(|b| b.one_time.is_none()).count();
        metrics::one_time_prekeys_exhausted(without_one_time as u64);
        tracing::info!(
            devices = bundles.len(),
            without_one_time,
            "bundles handed out"
        );
        let identity_key = bundles
            .first()
            .map(|b| crate::validation::encode(&b.profile.identity_key))
            .unwrap_or_default();
        Ok(DevicesBundleOut {
            user_id: target,
            identity_key,
            devices: bundles.iter().map(compose_device).collect(),
        })
    }

    /// Charges the requester's buckets (one fetch) and returns the target's budget to charge.
    pub(super) async fn charge_requester(
        &self,
        who: &Principal,
        target: UserId,
    ) -> Result<Limit<'static>> {
        let requester = who.user_id;
        // The pair bucket keeps one requester to a small share of someone else's budget; one's
        // own budget is one's own (a new device fetches its account's other devices).
        let pair = async {
            if requester == target {
                return Ok(());
            }
            self.limiter
                .take(Limit::BundlePair { requester, target })
                .await
        };
        let (a, b, is_new) = futures::join!(
            self.limiter.take(Limit::Bundle { requester }),
            pair,
            self.age.is_new(requester),
        );
        a.and(b)?;
        // The target's budget: established requesters share one, accounts younger than
        // `NEW_ACCOUNT_AGE_SECS` share a smaller one, so throwaway accounts can neither drain a
        // target's one-time keys (and then lock new contacts out with 412) nor spend the budget
        // of others. Charged only once the requester's own buckets allowed the fetch.
        Ok(if is_new? {
            Limit::BundleTargetNew { target }
        } else {
            Limit::BundleTarget { target }
        })
    }

    /// Takes one token of the target's budget, then the devices' keys; a fetch that hands out
    /// no keys (412, unknown user, a store failure) gives the token back, so requests refused
    /// for another reason never spend what the target's next contact needs. One token per
    /// fetch however many devices it covers: a fetch takes at most one key of each device, so
    /// the budget bounds how fast any one device's keys go.
    async fn take_within(
        &self,
        budget: Limit<'static>,
        target: UserId,
        devices: &[DeviceId],
        allow_without_one_time: bool,
    ) -> Result<Vec<Bundle>> {
        self.limiter.take(budget).await?;
        let taken = self
            .keys
            .take_bundles(target, devices, allow_without_one_time)
            .await;
        if taken.is_err() {
            self.limiter.give_back(budget, 1).await;
        }
        taken
    }
}

/// A fetch's outcome label: `ok` or the code answered.
fn outcome<T>(fetched: &Result<T>) -> &'static str {
    match fetched {
        Ok(_) => "ok",
        Err(e) => e.code(),
    }
}

/// Refuses an upload that would leave more one-time keys of a kind than `cap`. Every key of the
/// upload counts, also one replacing a stored key with the same id (checking which ids exist
/// would cost a read per key); concurrent uploads may pass together and overshoot by a batch.
fn within_cap(stored: &KeyCounts, upload: &KeyUpload, cap: u64) -> Result<()> {
    for (field, stored, adding) in [
        (
            "one_time_prekeys",
            stored.one_time_prekeys,
            upload.one_time.len(),
        ),
        (
            "kyber_one_time_prekeys",
            stored.kyber_one_time_prekeys,
            upload.kyber_one_time.len(),
        ),
    ] {
        if adding > 0 && stored + adding as u64 > cap {
            return Err(Error::invalid(format!(
                "{field}: {stored} stored + {adding} uploaded would exceed the limit of {cap} per kind"
            )));
        }
    }
    Ok(())
}

/// The Kyber prekey a bundle hands out: the one-time Kyber prekey taken when one was left, else
/// the last-resort one (PQXDH accepts either; the last-resort key is reused until replaced).
fn kyber_of(b: &Bundle) -> Option<SignedPreKeyOut> {
    b.kyber_one_time
        .as_ref()
        .or(b.profile.kyber_last_resort.as_ref())
        .map(Into::into)
}

/// A bundle in the shape from before devices: the profile, the one-time EC prekey taken (there
/// always is one: that route is strict) and one Kyber prekey.
fn compose(b: &Bundle) -> Option<BundleOut> {
    Some(BundleOut {
        user_id: b.user_id,
        registration_id: b.profile.registration_id,
        identity_key: crate::validation::encode(&b.profile.identity_key),
        signed_prekey: (&b.profile.signed_prekey).into(),
        one_time_prekey: b.one_time.as_ref()?.into(),
        kyber_prekey: kyber_of(b),
    })
}

/// One device's entry of a multi-device bundle.
fn compose_device(b: &Bundle) -> DeviceBundleOut {
    DeviceBundleOut {
        device_id: b.device_id,
        registration_id: b.profile.registration_id,
        signed_prekey: (&b.profile.signed_prekey).into(),
        one_time_prekey: b.one_time.as_ref().map(Into::into),
        kyber_prekey: kyber_of(b),
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
    fn the_cap_counts_every_uploaded_key_per_kind() {
        let stored = KeyCounts {
            one_time_prekeys: 990,
            kyber_one_time_prekeys: 1000,
        };
        let one_time = |n: u32| {
            (0..n)
                .map(|key_id| OneTimeKey {
                    key_id,
                    public_key: vec![5; 33],
                })
                .collect()
        };
        let mut upload = KeyUpload {
            one_time: one_time(10),
            ..Default::default()
        };
        assert!(within_cap(&stored, &upload, 1000).is_ok());
        upload.one_time = one_time(11);
        let err = within_cap(&stored, &upload, 1000).unwrap_err();
        assert_eq!(err.code(), "invalid_request");
        assert!(err
            .public_message()
            .contains("one_time_prekeys: 990 stored + 11 uploaded"));
        // A full kind does not block a signed-prekey rotation or keys of the other kind.
        upload.one_time.clear();
        upload.signed_prekey = Some(signed(5));
        assert!(within_cap(&stored, &upload, 1000).is_ok());
        upload.kyber_one_time = vec![signed(6)];
        let err = within_cap(&stored, &upload, 1000).unwrap_err();
        assert!(err.public_message().starts_with("kyber_one_time_prekeys"));
    }

    #[test]
    fn a_bundle_carries_the_one_time_kyber_key_else_the_last_resort_one() {
        let mut b = Bundle {
            user_id: uuid::Uuid::new_v4(),
            device_id: 1,
            profile: Profile {
                registration_id: 7,
                identity_key: vec![5; 33],
                signed_prekey: signed(1),
                kyber_last_resort: Some(signed(2)),
            },
            one_time: Some(OneTimeKey {
                key_id: 3,
                public_key: vec![5; 33],
            }),
            kyber_one_time: Some(signed(4)),
        };
        let out = compose(&b).unwrap();
        assert_eq!(out.kyber_prekey.as_ref().map(|k| k.key_id), Some(4));
        assert_eq!((out.one_time_prekey.key_id, out.registration_id), (3, 7));
        b.kyber_one_time = None;
        assert_eq!(compose(&b).unwrap().kyber_prekey.map(|k| k.key_id), Some(2));
        b.profile.kyber_last_resort = None;
        assert!(compose(&b).unwrap().kyber_prekey.is_none());
        // Without a one-time key: no bundle of the old shape, a null key in the device shape.
        b.one_time = None;
        assert!(compose(&b).is_none());
        assert_eq!(compose_device(&b).one_time_prekey, None);
    }
}
