//! The MLS KeyPackage directory, beside the Signal prekeys and under the same budgets: a device
//! uploads KeyPackages (each checked: it parses, verifies and names the uploading device), and
//! whoever adds a user to an MLS group takes one of each of the user's devices, never one that
//! was handed out before, the device's last-resort one when none is left.

use super::directory::KeyDirectory;
use crate::crypto::tokens::Principal;
use crate::error::{Error, Result};
use crate::mls;
use crate::model::{
    ClaimedKeyPackageOut, DeviceAddress, DeviceId, KeyPackageCount, KeyPackagesOut,
    KeyPackagesUpload, UserId,
};
use crate::services::Limit;
use crate::storage::KeyPackageItem;
use crate::validation::{self, MAX_BATCH};

impl KeyDirectory {
    /// `PUT /v1/mls/key_packages`
    pub async fn upload_key_packages(
        &self,
        who: &Principal,
        req: KeyPackagesUpload,
    ) -> Result<KeyPackageCount> {
        let user = who.user_id;
        let device = DeviceAddress::new(user, who.device_id);
        self.limiter.take(Limit::KeysUpload { user }).await?;
        if req.key_packages.is_empty() && req.last_resort.is_none() {
            return Err(Error::invalid(
                "key_packages or last_resort must hold a KeyPackage",
            ));
        }
        if req.key_packages.len() > MAX_BATCH {
            return Err(Error::invalid(format!(
                "key_packages must hold at most {MAX_BATCH} KeyPackages"
            )));
        }
        let (stored, _) = self.key_packages.key_package_count(device).await?;
        let cap = self.key_limits.max_key_packages;
        let adding = req.key_packages.len() as u64;
        if adding > 0 && u64::from(stored) + adding > cap {
            return Err(Error::invalid(format!(
                "key_packages: {stored} stored + {adding} uploaded would exceed the limit of {cap}"
            )));
        }
        let packages: Vec<Vec<u8>> = req
            .key_packages
            .iter()
            .map(|p| validation::base64("key_packages", p))
            .collect::<Result<_>>()?;
        let last_resort = req
            .last_resort
            .as_deref()
            .map(|p| validation::base64("last_resort", p))
            .transpose()?;
        // Every signature is verified: a few ms for a full upload, off the async workers.
        let (packages, last_resort) = tokio::task::spawn_blocking(move || {
            let check = |bytes: &[u8]| {
                mls::check_key_package(bytes, device).map(|c| KeyPackageItem {
                    reference: c.reference,
                    bytes: c.bytes,
                })
            };
            let packages = packages
                .iter()
                .map(|p| check(p))
                .collect::<Result<Vec<_>>>()?;
            let last_resort = last_resort.as_deref().map(check).transpose()?;
            Ok::<_, Error>((packages, last_resort))
        })
        .await
        .map_err(|e| Error::Internal(format!("key package check: {e}")))??;
        self.key_packages
            .put_key_packages(device, &packages, last_resort.as_ref())
            .await?;
        tracing::info!(
            key_packages = packages.len(),
            last_resort = last_resort.is_some(),
            "key packages stored"
        );
        self.count_key_packages(who).await
    }

    /// `GET /v1/mls/key_packages/count`
    pub async fn count_key_packages(&self, who: &Principal) -> Result<KeyPackageCount> {
        let (count, last_resort) = self
            .key_packages
            .key_package_count(DeviceAddress::new(who.user_id, who.device_id))
            .await?;
        Ok(KeyPackageCount { count, last_resort })
    }

    /// `GET /v1/users/{user_id}/mls/key_packages`: one KeyPackage of each of the user's devices
    /// (the calling device's own left out), all or none, charged as a bundle fetch (the same budgets: one KeyPackage handed out is
    /// one one-time key gone).
    pub async fn claim_key_packages(
        &self,
        who: &Principal,
        target: UserId,
    ) -> Result<KeyPackagesOut> {
        let budget = self.charge_requester(who, target).await?;
        let list = self
            .users
            .devices(target)
            .await?
            .ok_or(Error::UserNotFound)?;
        let by = DeviceAddress::new(who.user_id, who.device_id);
        // A device adding its account's other devices is in the group already: none of its
        // own KeyPackages is spent on it.
        let devices: Vec<DeviceId> = list
            .devices
            .iter()
            .map(|d| d.device_id)
            .filter(|&d| DeviceAddress::new(target, d) != by)
            .collect();
        if devices.is_empty() {
            return Ok(KeyPackagesOut {
                user_id: target,
                key_packages: Vec::new(),
            });
        }
        self.limiter.take(budget).await?;
        let claimed = self
            .key_packages
            .claim_key_packages(target, &devices, by)
            .await;
        let claimed = match claimed {
            Ok(c) => c,
            Err(e) => {
                self.limiter.give_back(budget, 1).await;
                return Err(e);
            }
        };
        tracing::info!(devices = claimed.len(), "key packages handed out");
        Ok(KeyPackagesOut {
            user_id: target,
            key_packages: claimed
                .into_iter()
                .map(|c| ClaimedKeyPackageOut {
                    device_id: c.device_id,
                    key_package: validation::encode(&c.bytes),
                    last_resort: c.last_resort,
                })
                .collect(),
        })
    }
}
