//! `KeyPackageStore` on DynamoDB, in the keys table: a device's KeyPackages in its partition
//! (`mlskp#<ref>`, and `mlslr` for the last-resort one), so removing a device's keys removes
//! them too; one record per handed-out reference (`mlsref#<ref>`), expiring by the table's TTL.
//! A claim takes a KeyPackage as a bundle fetch takes a one-time prekey (`keys.rs`): candidates
//! read, then a conditional delete of one, all devices at once.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::KeysAndAttributes;
use futures::future::join_all;

use super::items::{key, keys_pk};
use super::mls_items::{self, KEY_PACKAGE_PREFIX, LAST_RESORT_SK};
use super::{sdk_error, Dynamo, Item};
use crate::error::{Error, Result};
use crate::model::{DeviceAddress, DeviceId, UserId};
use crate::storage::{
    ClaimedKeyPackage, KeyPackageItem, KeyPackageStore, KEY_PACKAGE_HANDOUT_SECS,
};

/// BatchGetItem's limit of keys per request.
const BATCH_GET_KEYS: usize = 100;
/// Requests of one batch of keys before what is left unprocessed counts as unavailable.
const BATCH_GET_ATTEMPTS: u32 = 8;

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

    /// The items of `keys` that exist (strongly consistent), in no particular order.
    async fn batch_get(&self, table: &str, keys: Vec<Item>) -> Result<Vec<Item>> {
        let mut found = Vec::new();
        for chunk in keys.chunks(BATCH_GET_KEYS) {
            let mut pending = chunk.to_vec();
            let mut attempt = 0;
            while !pending.is_empty() {
                if attempt == BATCH_GET_ATTEMPTS {
                    return Err(Error::Unavailable(
                        "dynamodb: batch get left unprocessed keys".into(),
                    ));
                }
                if attempt > 0 {
                    tokio::time::sleep(Duration::from_millis(20 << attempt)).await;
                }
                attempt += 1;
                let request = KeysAndAttributes::builder()
                    .set_keys(Some(pending))
                    .consistent_read(true)
                    .build()
                    .expect("keys set");
                let mut out = self
                    .client
                    .batch_get_item()
                    .request_items(table, request)
                    .send()
                    .await
                    .map_err(|e| sdk_error("batch get", e))?;
                found.extend(
                    out.responses
                        .as_mut()
                        .and_then(|r| r.remove(table))
                        .unwrap_or_default(),
                );
                pending = out
                    .unprocessed_keys
                    .and_then(|mut u| u.remove(table))
                    .map(|k| k.keys)
                    .unwrap_or_default();
            }
        }
        Ok(found)
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
        // BatchGetItem refuses a request naming one key twice.
        let mut distinct: Vec<&String> = references.iter().collect();
        distinct.sort_unstable();
        distinct.dedup();
        let keys = distinct.iter().map(|r| mls_items::handout_key(r)).collect();
        let now = self.clock.now_secs();
        let found: HashMap<String, DeviceAddress> = self
            .batch_get(&self.tables.keys, keys)
            .await?
            .iter()
            .map(|item| mls_items::handout_from(item, now))
            .filter_map(Result::transpose)
            .collect::<Result<_>>()?;
        Ok(references.iter().map(|r| found.get(r).copied()).collect())
    }
}
