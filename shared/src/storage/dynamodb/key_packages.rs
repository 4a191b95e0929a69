//! `KeyPackageStore` on DynamoDB, in the keys table: a device's KeyPackages in its partition
//! (`mlskp#<ref>`, and `mlslr` for the last-resort one), so removing a device's keys removes
//! them too; one record per handed-out reference (`mlsref#<ref>`), expiring by the table's TTL.
//! A claim takes a KeyPackage as a bundle fetch takes a one-time prekey (`keys.rs`): candidates
//! read, then a conditional delete of one, all devices at once.

use std::collections::HashMap;

use async_trait::async_trait;
use futures::future::join_all;
use futures::{StreamExt, TryStreamExt};

use super::items::{key, keys_pk};
use super::mls_items::{self, KEY_PACKAGE_PREFIX, LAST_RESORT_SK};
use super::{sdk_error, Dynamo, Item};
use crate::error::{Error, Result};
use crate::model::{DeviceAddress, DeviceId, UserId};
use crate::storage::{
    ClaimedKeyPackage, KeyPackageItem, KeyPackageStore, KEY_PACKAGE_HANDOUT_SECS,
};

/// Handout records read at once: a Welcome names one per device it adds (at most a few
/// hundred).
const GETS_AT_ONCE: usize = 16;

impl Dynamo {
    async fn last_resort(&self, device: DeviceAddress) -> Result<Option<Item>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.tables.keys)
            .set_key(Some(key(keys_pk(device), LAST_RESORT_SK)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_error("get last-resort key package", e))?;
        Ok(out.item)
    }

    /// One device's KeyPackage: one taken, else its last-resort one (`true`), else none.
    async fn claim_key_package(&self, device: DeviceAddress) -> Result<Option<(Item, bool)>> {
        let pk = keys_pk(device);
        let first = self.candidates(&pk, KEY_PACKAGE_PREFIX).await?;
        if let Some(item) = self.claim(&pk, KEY_PACKAGE_PREFIX, first).await? {
            return Ok(Some((item, false)));
        }
        Ok(self.last_resort(device).await?.map(|item| (item, true)))
    }

    /// The items of `keys` that exist (strongly consistent), in no particular order: one
    /// GetItem each, `GETS_AT_ONCE` at a time. (BatchGetItem would save requests, but its SDK
    /// code alone outgrows the size budget of every function that links the stores.)
    async fn get_each(&self, table: &str, keys: Vec<Item>) -> Result<Vec<Item>> {
        let gets = keys.into_iter().map(|k| async move {
            self.client
                .get_item()
                .table_name(table)
                .set_key(Some(k))
                .consistent_read(true)
                .send()
                .await
                .map(|out| out.item)
                .map_err(|e| sdk_error("get handout record", e))
        });
        let found: Vec<Option<Item>> = futures::stream::iter(gets)
            .buffer_unordered(GETS_AT_ONCE)
            .try_collect()
            .await?;
        Ok(found.into_iter().flatten().collect())
    }
}

#[async_trait]
impl KeyPackageStore for Dynamo {
    async fn put_key_packages(
        &self,
        device: DeviceAddress,
        packages: &[KeyPackageItem],
        last_resort: Option<&KeyPackageItem>,
    ) -> Result<()> {
        let items = packages
            .iter()
            .map(|p| mls_items::key_package_item(device, p))
            .chain(last_resort.map(|p| mls_items::last_resort_item(device, p)))
            .collect();
        self.batch_put(&self.tables.keys, items).await
    }

    async fn key_package_count(&self, device: DeviceAddress) -> Result<(u32, bool)> {
        let pk = keys_pk(device);
        let (count, last_resort) = futures::try_join!(
            self.count(&pk, KEY_PACKAGE_PREFIX),
            self.last_resort(device)
        )?;
        Ok((count as u32, last_resort.is_some()))
    }

    async fn claim_key_packages(
        &self,
        user: UserId,
        devices: &[DeviceId],
        by: DeviceAddress,
    ) -> Result<Vec<ClaimedKeyPackage>> {
        let claims = join_all(
            devices
                .iter()
                .map(|&d| self.claim_key_package(DeviceAddress::new(user, d))),
        )
        .await;
        // All or nothing: on any failure, the KeyPackages taken go back (a last-resort one was
        // never taken).
        let mut failure: Option<Error> = None;
        let mut exhausted = Vec::new();
        let mut taken: Vec<Item> = Vec::new();
        let mut ready = Vec::new();
        for (&device_id, claim) in devices.iter().zip(claims) {
            match claim {
                Err(e) => {
                    failure.get_or_insert(e);
                }
                Ok(None) => exhausted.push(device_id),
                Ok(Some((item, last_resort))) => {
                    if !last_resort {
                        taken.push(item.clone());
                    }
                    ready.push((device_id, item, last_resort));
                }
            }
        }
        let give_back = |taken: Vec<Item>| async move {
            for item in taken {
                self.put_back(item).await?;
            }
            Ok::<_, Error>(())
        };
        if failure.is_some() || !exhausted.is_empty() {
            give_back(taken).await?;
            if let Some(e) = failure {
                return Err(e);
            }
            exhausted.sort_unstable();
            return Err(Error::KeyPackagesExhausted(exhausted));
        }
        let claimed = ready
            .into_iter()
            .map(|(device_id, item, last_resort)| {
                let p = mls_items::key_package_from(&item)?;
                Ok(ClaimedKeyPackage {
                    device_id,
                    reference: p.reference,
                    bytes: p.bytes,
                    last_resort,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        // Recorded before they are handed out: a Welcome naming one is always routed.
        let expires_at = self.clock.now_secs() + KEY_PACKAGE_HANDOUT_SECS;
        let records = claimed
            .iter()
            .map(|c| {
                let device = DeviceAddress::new(user, c.device_id);
                mls_items::handout_item(&c.reference, device, by, expires_at)
            })
            .collect();
        if let Err(e) = self.batch_put(&self.tables.keys, records).await {
            give_back(taken).await?;
            return Err(e);
        }
        Ok(claimed)
    }

    async fn handed_out(&self, references: &[String]) -> Result<Vec<Option<DeviceAddress>>> {
        // Each reference is read once, however often it is named.
        let mut distinct: Vec<&String> = references.iter().collect();
        distinct.sort_unstable();
        distinct.dedup();
        let keys = distinct.iter().map(|r| mls_items::handout_key(r)).collect();
        let now = self.clock.now_secs();
        let found: HashMap<String, DeviceAddress> = self
            .get_each(&self.tables.keys, keys)
            .await?
            .iter()
            .map(|item| mls_items::handout_from(item, now))
            .filter_map(Result::transpose)
            .collect::<Result<_>>()?;
        Ok(references.iter().map(|r| found.get(r).copied()).collect())
    }
}
