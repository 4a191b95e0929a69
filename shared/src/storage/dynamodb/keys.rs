//! `KeyStore` on DynamoDB. A bundle fetch is two concurrent rounds: (profile, EC candidates,
//! Kyber candidates), then a conditional delete of one candidate of each kind.

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, Select};
use rand::seq::SliceRandom;

use super::items::{self, get_s, key, keys_pk, EC_PREFIX, KYBER_PREFIX, PROFILE_SK};
use super::{each_page, is_condition_failed, sdk_error, Dynamo, Item};
use crate::error::{Error, Result};
use crate::model::{Bundle, DeviceAddress, DeviceId, KeyCounts, KeyUpload, Profile, UserId};
use crate::storage::KeyStore;

/// Candidates read per query; fetchers pick among them at random to spread contention.
const CANDIDATES: i32 = 8;
/// Re-queries after every candidate was taken by someone else, before giving up as unavailable.
const MAX_ROUNDS: usize = 16;

impl Dynamo {
    pub(super) async fn candidates(&self, pk: &str, prefix: &str) -> Result<Vec<String>> {
        let out = self
            .query_partition(&self.tables.keys, pk, Some(prefix))
            .projection_expression("sk")
            .limit(CANDIDATES)
            .send()
            .await
            .map_err(|e| sdk_error("query candidates", e))?;
        let mut sks: Vec<String> = out
            .items
            .unwrap_or_default()
            .iter()
            .filter_map(|i| get_s(i, "sk").ok().map(str::to_string))
            .collect();
        sks.shuffle(&mut rand::thread_rng());
        Ok(sks)
    }

    /// Deletes the item only if it is still there, returning it: whoever deletes it owns it.
    async fn claim_one(&self, pk: &str, sk: &str) -> Result<Option<Item>> {
        let res = self
            .client
            .delete_item()
            .table_name(&self.tables.keys)
            .set_key(Some(key(pk, sk)))
            .condition_expression("attribute_exists(pk)")
            .return_values(ReturnValue::AllOld)
            .send()
            .await;
        match res {
            Ok(out) => Ok(out.attributes),
            Err(e) if is_condition_failed(&e) => Ok(None),
            Err(e) => Err(sdk_error("claim key", e)),
        }
    }

    /// Takes one key of the kind (any item of the partition under `prefix`: KeyPackages too),
    /// trying candidates until one is won; `None` when none is left.
    pub(super) async fn claim(
        &self,
        pk: &str,
        prefix: &str,
        first: Vec<String>,
    ) -> Result<Option<Item>> {
        let mut candidates = first;
        for _ in 0..MAX_ROUNDS {
            if candidates.is_empty() {
                return Ok(None);
            }
            for sk in &candidates {
                if let Some(item) = self.claim_one(pk, sk).await? {
                    return Ok(Some(item));
                }
            }
            candidates = self.candidates(pk, prefix).await?;
        }
        Err(Error::Unavailable(
            "dynamodb: one-time key contention did not settle".into(),
        ))
    }

    pub(super) async fn put_back(&self, item: Item) -> Result<()> {
        let res = self
            .client
            .put_item()
            .table_name(&self.tables.keys)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(sk)")
            .send()
            .await;
        match res {
            Ok(_) => Ok(()),
            Err(e) if is_condition_failed(&e) => Ok(()), // re-uploaded meanwhile: the newer one stays
            Err(e) => Err(sdk_error("put back key", e)),
        }
    }

    pub(super) async fn count(&self, pk: &str, prefix: &str) -> Result<u64> {
        let mut total = 0u64;
        let query = self
            .query_partition(&self.tables.keys, pk, Some(prefix))
            .select(Select::Count)
            .consistent_read(true);
        each_page(query, "count keys", |page| {
            total += page.count.max(0) as u64
        })
        .await?;
        Ok(total)
    }

    /// One device's part of a bundle fetch: its profile and one key of each kind claimed.
    async fn take_device(&self, device: DeviceAddress) -> Result<Taken> {
        let pk = keys_pk(device);
        let (profile, ec, ky) = futures::try_join!(
            self.profile(device),
            self.candidates(&pk, EC_PREFIX),
            self.candidates(&pk, KYBER_PREFIX)
        )?;
        let profile = profile.ok_or(Error::UserNotFound)?;
        let (ec, ky) = futures::join!(
            self.claim(&pk, EC_PREFIX, ec),
            self.claim(&pk, KYBER_PREFIX, ky)
        );
        Ok(Taken {
            device_id: device.device_id,
            profile,
            ec,
            ky,
        })
    }

    /// Deletes every key item of a device's partition (its profile included).
    pub(super) async fn remove_device_keys(&self, device: DeviceAddress) -> Result<()> {
        let keys = self
            .query_keys(&self.tables.keys, &keys_pk(device), None)
            .await?;
        self.batch_delete(&self.tables.keys, keys).await
    }
}

/// What one device's claims came to (each claim may have failed on its own).
struct Taken {
    device_id: DeviceId,
    profile: Profile,
    ec: Result<Option<Item>>,
    ky: Result<Option<Item>>,
}

#[async_trait]
impl KeyStore for Dynamo {
    async fn profile(&self, device: DeviceAddress) -> Result<Option<Profile>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.tables.keys)
            .set_key(Some(key(keys_pk(device), PROFILE_SK)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_error("get profile", e))?;
        out.item.map(|i| items::profile_from(&i)).transpose()
    }

    async fn store(&self, device: DeviceAddress, upload: &KeyUpload) -> Result<()> {
        let pk = keys_pk(device);
        let replaced: Vec<(String, AttributeValue)> = upload
            .signed_prekey
            .iter()
            .flat_map(|k| items::signed_attrs(items::SIGNED, k))
            .chain(
                upload
                    .kyber_last_resort
                    .iter()
                    .flat_map(|k| items::signed_attrs(items::KYBER_LAST_RESORT, k)),
            )
            .collect();
        let profile_update = async {
            if replaced.is_empty() {
                return Ok(());
            }
            let set = replaced
                .iter()
                .enumerate()
                .map(|(i, (name, _))| format!("{name} = :v{i}"))
                .collect::<Vec<_>>()
                .join(", ");
            let mut u = self
                .client
                .update_item()
                .table_name(&self.tables.keys)
                .set_key(Some(key(pk.as_str(), PROFILE_SK)))
                .update_expression(format!("SET {set}"))
                .condition_expression("attribute_exists(pk)");
            for (i, (_, v)) in replaced.iter().enumerate() {
                u = u.expression_attribute_values(format!(":v{i}"), v.clone());
            }
            u.send().await.map_err(|e| {
                if is_condition_failed(&e) {
                    Error::UserNotFound
                } else {
                    sdk_error("update profile", e)
                }
            })?;
            Ok(())
        };
        let one_time = items::one_time_items(&pk, &upload.one_time, &upload.kyber_one_time);
        let (a, b) = futures::join!(profile_update, self.batch_put(&self.tables.keys, one_time));
        a.and(b)
    }

    async fn counts(&self, device: DeviceAddress) -> Result<KeyCounts> {
        let pk = keys_pk(device);
        let (ec, ky) =
            futures::try_join!(self.count(&pk, EC_PREFIX), self.count(&pk, KYBER_PREFIX))?;
        Ok(KeyCounts {
            one_time_prekeys: ec,
            kyber_one_time_prekeys: ky,
        })
    }

    async fn one_time_ids(&self, device: DeviceAddress) -> Result<(Vec<u32>, Vec<u32>)> {
        let pk = keys_pk(device);
        // Keys only (the sort key holds the id): no public key is read.
        let ids = |prefix: &'static str| {
            let pk = pk.clone();
            async move {
                let items = self
                    .query_keys(&self.tables.keys, &pk, Some(prefix))
                    .await?;
                items
                    .iter()
                    .map(|i| {
                        get_s(i, "sk")?
                            .strip_prefix(prefix)
                            .and_then(|id| id.parse::<u32>().ok())
                            .ok_or_else(|| items::corrupt("sk"))
                    })
                    .collect::<Result<Vec<u32>>>()
            }
        };
        // Sort keys are zero-padded, so the query's order is numeric order.
        futures::try_join!(ids(EC_PREFIX), ids(KYBER_PREFIX))
    }

    async fn take_bundles(
        &self,
        user_id: UserId,
        devices: &[DeviceId],
        allow_without_one_time: bool,
    ) -> Result<Vec<Bundle>> {
        let taken = futures::future::join_all(
            devices
                .iter()
                .map(|&d| self.take_device(DeviceAddress::new(user_id, d))),
        )
        .await;
        // All or nothing: on any failure, whatever was claimed goes back.
        let mut failure: Option<Error> = None;
        let mut exhausted = Vec::new();
        let mut claimed: Vec<Item> = Vec::new();
        let mut ready = Vec::new();
        for t in taken {
            let t = match t {
                Ok(t) => t,
                Err(e) => {
                    failure.get_or_insert(e);
                    continue;
                }
            };
            let (ec, ky) = match (t.ec, t.ky) {
                (Ok(ec), Ok(ky)) => (ec, ky),
                (ec, ky) => {
                    claimed.extend(ec.ok().flatten().into_iter().chain(ky.ok().flatten()));
                    failure.get_or_insert(Error::unavailable("dynamodb", "key claim failed"));
                    continue;
                }
            };
            if ec.is_none() && !allow_without_one_time {
                exhausted.push(t.device_id);
            }
            claimed.extend(ec.iter().chain(ky.iter()).cloned());
            ready.push((t.device_id, t.profile, ec, ky));
        }
        if failure.is_some() || !exhausted.is_empty() {
            for item in claimed {
                self.put_back(item).await?;
            }
            if let Some(e) = failure {
                return Err(e);
            }
            exhausted.sort_unstable();
            return Err(Error::DevicesExhausted(exhausted));
        }
        ready
            .into_iter()
            .map(|(device_id, profile, ec, ky)| {
                Ok(Bundle {
                    user_id,
                    device_id,
                    profile,
                    one_time: ec.as_ref().map(items::one_time_from).transpose()?,
                    kyber_one_time: ky.as_ref().map(items::kyber_from).transpose()?,
                })
            })
            .collect()
    }
}
