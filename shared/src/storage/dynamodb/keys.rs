//! `KeyStore` on DynamoDB. A bundle fetch is two concurrent rounds: (profile, EC candidates,
//! Kyber candidates), then a conditional delete of one candidate of each kind.

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, Select};
use rand::seq::SliceRandom;

use super::items::{self, get_s, key, EC_PREFIX, KYBER_PREFIX, PROFILE_SK};
use super::{each_page, is_condition_failed, sdk_error, Dynamo, Item};
use crate::error::{Error, Result};
use crate::model::{Bundle, KeyCounts, KeyUpload, Profile, UserId};
use crate::storage::KeyStore;

/// Candidates read per query; fetchers pick among them at random to spread contention.
const CANDIDATES: i32 = 8;
/// Re-queries after every candidate was taken by someone else, before giving up as unavailable.
const MAX_ROUNDS: usize = 16;

impl Dynamo {
    async fn candidates(&self, user_id: UserId, prefix: &str) -> Result<Vec<String>> {
        let out = self
            .query_partition(&self.tables.keys, &user_id.to_string(), Some(prefix))
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
    async fn claim_one(&self, user_id: UserId, sk: &str) -> Result<Option<Item>> {
        let res = self
            .client
            .delete_item()
            .table_name(&self.tables.keys)
            .set_key(Some(key(user_id.to_string(), sk)))
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

    /// Takes one key of the kind, trying candidates until one is won; `None` when none is left.
    async fn claim(
        &self,
        user_id: UserId,
        prefix: &str,
        first: Vec<String>,
    ) -> Result<Option<Item>> {
        let mut candidates = first;
        for _ in 0..MAX_ROUNDS {
            if candidates.is_empty() {
                return Ok(None);
            }
            for sk in &candidates {
                if let Some(item) = self.claim_one(user_id, sk).await? {
                    return Ok(Some(item));
                }
            }
            candidates = self.candidates(user_id, prefix).await?;
        }
        Err(Error::Unavailable(
            "dynamodb: one-time key contention did not settle".into(),
        ))
    }

    async fn put_back(&self, item: Item) -> Result<()> {
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

    async fn count(&self, user_id: UserId, prefix: &str) -> Result<u64> {
        let mut total = 0u64;
        let query = self
            .query_partition(&self.tables.keys, &user_id.to_string(), Some(prefix))
            .select(Select::Count)
            .consistent_read(true);
        each_page(query, "count keys", |page| {
            total += page.count.max(0) as u64
        })
        .await?;
        Ok(total)
    }
}

#[async_trait]
impl KeyStore for Dynamo {
    async fn profile(&self, user_id: UserId) -> Result<Option<Profile>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.tables.keys)
            .set_key(Some(key(user_id.to_string(), PROFILE_SK)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_error("get profile", e))?;
        out.item.map(|i| items::profile_from(&i)).transpose()
    }

    async fn store(&self, user_id: UserId, upload: &KeyUpload) -> Result<()> {
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
                .set_key(Some(key(user_id.to_string(), PROFILE_SK)))
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
        let one_time = items::one_time_items(user_id, &upload.one_time, &upload.kyber_one_time);
        let (a, b) = futures::join!(profile_update, self.batch_put(&self.tables.keys, one_time));
        a.and(b)
    }

    async fn counts(&self, user_id: UserId) -> Result<KeyCounts> {
        let (ec, ky) = futures::try_join!(
            self.count(user_id, EC_PREFIX),
            self.count(user_id, KYBER_PREFIX)
        )?;
        Ok(KeyCounts {
            one_time_prekeys: ec,
            kyber_one_time_prekeys: ky,
        })
    }

    async fn take_bundle(&self, user_id: UserId) -> Result<Bundle> {
        let (profile, ec, ky) = futures::try_join!(
            self.profile(user_id),
            self.candidates(user_id, EC_PREFIX),
            self.candidates(user_id, KYBER_PREFIX)
        )?;
        let profile = profile.ok_or(Error::UserNotFound)?;
        if ec.is_empty() {
            return Err(Error::PrekeysExhausted);
        }
        let (ec_claim, ky_claim) = futures::join!(
            self.claim(user_id, EC_PREFIX, ec),
            self.claim(user_id, KYBER_PREFIX, ky)
        );
        // Whatever one claim took goes back when the other failed: nothing is consumed for a
        // fetch that returns an error.
        let (ec_item, ky_item) = match (ec_claim, ky_claim) {
            (Ok(ec), Ok(ky)) => (ec, ky),
            (Ok(taken), Err(e)) | (Err(e), Ok(taken)) => {
                if let Some(item) = taken {
                    self.put_back(item).await?;
                }
                return Err(e);
            }
            (Err(e), Err(_)) => return Err(e),
        };
        let Some(ec_item) = ec_item else {
            // The last EC key went to someone else meanwhile: the Kyber key we took is returned.
            if let Some(k) = ky_item {
                self.put_back(k).await?;
            }
            return Err(Error::PrekeysExhausted);
        };
        Ok(Bundle {
            user_id,
            profile,
            one_time: items::one_time_from(&ec_item)?,
            kyber_one_time: ky_item.as_ref().map(items::kyber_from).transpose()?,
        })
    }
}
