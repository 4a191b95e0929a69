//! `SessionStore` on DynamoDB: one item per session under the user's partition. Every write
//! that starts or extends a session is a transaction with a condition on the user item, so no
//! session is written once the user is deleted.

use async_trait::async_trait;
use aws_sdk_dynamodb::operation::transact_write_items::{
    builders::TransactWriteItemsFluentBuilder, TransactWriteItemsError,
};
use aws_sdk_dynamodb::types::{ConditionCheck, Put, TransactWriteItem, Update};
use uuid::Uuid;

use super::items::{get_n, get_s, key, n, s, user_pk};
use super::{first_kept, sdk_error, Dynamo, Item};
use crate::error::Result;
use crate::model::{DeviceId, UserId};
use crate::storage::{PreviousRefresh, Rotation, SessionInfo, SessionRecord, SessionStore};

/// Why a transaction of a user check (item 0) and a session write (item 1) did not commit.
enum Cancelled {
    UserGone,
    SessionCondition,
    /// Another transaction on the same items was in flight; trying again settles it.
    Conflict,
}

/// Tries a conflicting transaction this many times before giving up as unavailable.
const CONFLICT_ATTEMPTS: usize = 4;

impl Dynamo {
    /// The user exists and, for a linked device, still lists the device: a login or refresh
    /// racing the removal of its device (or of the account) writes nothing.
    fn device_exists_check(&self, user_id: UserId, device_id: DeviceId) -> TransactWriteItem {
        let check = ConditionCheck::builder()
            .table_name(&self.tables.users)
            .set_key(Some(Item::from([("pk".to_string(), s(user_pk(user_id)))])));
        let check = if device_id == crate::model::PRIMARY_DEVICE {
            check.condition_expression("attribute_exists(pk)")
        } else {
            check
                .condition_expression("attribute_exists(pk) AND attribute_exists(devices.#d)")
                .expression_attribute_names("#d", device_id.to_string())
        };
        TransactWriteItem::builder()
            .condition_check(check.build().expect("table, key and condition set"))
            .build()
    }

    /// Sends the transaction, retrying conflicts; `Err(Ok(reason))` when a condition failed.
    async fn commit(
        &self,
        what: &str,
        tx: TransactWriteItemsFluentBuilder,
    ) -> Result<std::result::Result<(), Cancelled>> {
        for attempt in 1..=CONFLICT_ATTEMPTS {
            let e = match tx.clone().send().await {
                Ok(_) => return Ok(Ok(())),
                Err(e) => e,
            };
            let reasons: Vec<Option<String>> = match e.as_service_error() {
                Some(TransactWriteItemsError::TransactionCanceledException(c)) => c
                    .cancellation_reasons()
                    .iter()
                    .map(|r| r.code().map(str::to_string))
                    .collect(),
                _ => return Err(sdk_error(what, e)),
            };
            let is = |i: usize, code: &str| reasons.get(i).and_then(|r| r.as_deref()) == Some(code);
            let cancelled = if is(0, "ConditionalCheckFailed") {
                Cancelled::UserGone
            } else if is(1, "ConditionalCheckFailed") {
                Cancelled::SessionCondition
            } else if reasons
                .iter()
                .any(|r| r.as_deref() == Some("TransactionConflict"))
            {
                Cancelled::Conflict
            } else {
                return Err(sdk_error(what, e));
            };
            if !matches!(cancelled, Cancelled::Conflict) {
                return Ok(Err(cancelled));
            }
            if attempt < CONFLICT_ATTEMPTS {
                tokio::time::sleep(std::time::Duration::from_millis(5 * attempt as u64)).await;
            }
        }
        Ok(Err(Cancelled::Conflict))
    }
}

#[async_trait]
impl SessionStore for Dynamo {
    async fn create(
        &self,
        user_id: UserId,
        session_id: Uuid,
        record: &SessionRecord,
    ) -> Result<bool> {
        let mut item = key(user_id.to_string(), session_id.to_string());
        item.insert("refresh_hash".into(), s(&record.refresh_hash));
        item.insert("expires_at".into(), n(record.expires_at));
        item.insert("device_id".into(), n(record.device_id));
        item.insert("created_at".into(), n(self.clock.now_secs()));
        let put = Put::builder()
            .table_name(&self.tables.sessions)
            .set_item(Some(item))
            .build()
            .expect("table and item set");
        let tx = self
            .client
            .transact_write_items()
            .transact_items(self.device_exists_check(user_id, record.device_id))
            .transact_items(TransactWriteItem::builder().put(put).build());
        match self.commit("create session", tx).await? {
            Ok(()) => Ok(true),
            Err(Cancelled::UserGone) => Ok(false),
            Err(_) => Err(crate::error::Error::unavailable(
                "dynamodb create session",
                "transaction kept conflicting".to_string(),
            )),
        }
    }

    async fn get(&self, user_id: UserId, session_id: Uuid) -> Result<Option<SessionRecord>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.tables.sessions)
            .set_key(Some(key(user_id.to_string(), session_id.to_string())))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_error("get session", e))?;
        let Some(item) = out.item else {
            return Ok(None);
        };
        let previous = match item.get("prev_hash") {
            None => None,
            Some(_) => Some(PreviousRefresh {
                hash: get_s(&item, "prev_hash")?.to_string(),
                until: get_n(&item, "prev_until")?,
                sealed_next: get_s(&item, "next_sealed")?.to_string(),
            }),
        };
        let record = SessionRecord {
            // Sessions from before devices were device 1's.
            device_id: match item.get("device_id") {
                Some(_) => get_n(&item, "device_id")?,
                None => crate::model::PRIMARY_DEVICE,
            },
            refresh_hash: get_s(&item, "refresh_hash")?.to_string(),
            expires_at: get_n(&item, "expires_at")?,
            previous,
        };
        // TTL deletion is lazy: an expired item may still be there.
        Ok((record.expires_at > self.clock.now_secs()).then_some(record))
    }

    async fn rotate(
        &self,
        user_id: UserId,
        session_id: Uuid,
        old_hash: &str,
        next: &SessionRecord,
    ) -> Result<Rotation> {
        let mut update = Update::builder()
            .table_name(&self.tables.sessions)
            .set_key(Some(key(user_id.to_string(), session_id.to_string())))
            // An expired item may outlive its TTL: it must not come back to life.
            .condition_expression("refresh_hash = :old AND expires_at > :now")
            .expression_attribute_values(":new", s(&next.refresh_hash))
            .expression_attribute_values(":exp", n(next.expires_at))
            .expression_attribute_values(":old", s(old_hash))
            .expression_attribute_values(":now", n(self.clock.now_secs()))
            .expression_attribute_values(":at", n(self.clock.now_secs()));
        update = match &next.previous {
            Some(p) => update
                .update_expression(
                    "SET refresh_hash = :new, expires_at = :exp, refreshed_at = :at, \
                     prev_hash = :ph, prev_until = :pu, next_sealed = :ns",
                )
                .expression_attribute_values(":ph", s(&p.hash))
                .expression_attribute_values(":pu", n(p.until))
                .expression_attribute_values(":ns", s(&p.sealed_next)),
            None => update.update_expression(
                "SET refresh_hash = :new, expires_at = :exp, refreshed_at = :at \
                 REMOVE prev_hash, prev_until, next_sealed",
            ),
        };
        let update = update.build().expect("table, key and expression set");
        let tx = self
            .client
            .transact_write_items()
            .transact_items(self.device_exists_check(user_id, next.device_id))
            .transact_items(TransactWriteItem::builder().update(update).build());
        Ok(match self.commit("rotate session", tx).await? {
            Ok(()) => Rotation::Rotated,
            Err(Cancelled::UserGone) => Rotation::UserGone,
            // A conflict that never settled: another rotation holds the item, so this one lost.
            Err(Cancelled::SessionCondition | Cancelled::Conflict) => Rotation::Stale,
        })
    }

    async fn delete(&self, user_id: UserId, session_id: Uuid) -> Result<()> {
        self.client
            .delete_item()
            .table_name(&self.tables.sessions)
            .set_key(Some(key(user_id.to_string(), session_id.to_string())))
            .send()
            .await
            .map_err(|e| sdk_error("delete session", e))?;
        Ok(())
    }

    async fn delete_all(&self, user_id: UserId) -> Result<Vec<Uuid>> {
        let keys = self
            .query_keys(&self.tables.sessions, &user_id.to_string(), None)
            .await?;
        let ids = keys
            .iter()
            .filter_map(|k| get_s(k, "sk").ok().and_then(|s| Uuid::parse_str(s).ok()))
            .collect();
        self.batch_delete(&self.tables.sessions, keys).await?;
        Ok(ids)
    }

    async fn delete_device(&self, user_id: UserId, device_id: DeviceId) -> Result<Vec<Uuid>> {
        let mut ids = Vec::new();
        let query = self
            .query_partition(&self.tables.sessions, &user_id.to_string(), None)
            .projection_expression("sk, device_id")
            .consistent_read(true);
        super::each_page(query, "query sessions", |page| {
            for item in page.items.unwrap_or_default() {
                let device = get_n(&item, "device_id").unwrap_or(crate::model::PRIMARY_DEVICE);
                if device == device_id {
                    if let Some(id) = get_s(&item, "sk")
                        .ok()
                        .and_then(|s| Uuid::parse_str(s).ok())
                    {
                        ids.push(id);
                    }
                }
            }
        })
        .await?;
        let keys = ids
            .iter()
            .map(|id| key(user_id.to_string(), id.to_string()))
            .collect();
        self.batch_delete(&self.tables.sessions, keys).await?;
        Ok(ids)
    }

    async fn list(&self, user_id: UserId, max: usize) -> Result<(Vec<SessionInfo>, bool)> {
        let now = self.clock.now_secs();
        // Only these attributes are read: the refresh hash and sealed successor never leave
        // the table.
        let query = self
            .query_partition(&self.tables.sessions, &user_id.to_string(), None)
            .projection_expression("sk, device_id, created_at, refreshed_at, expires_at")
            .consistent_read(true);
        first_kept(query, "list sessions", max, |item| {
            let expires_at: u64 = get_n(item, "expires_at")?;
            if expires_at <= now {
                return Ok(None);
            }
            Ok(Some(SessionInfo {
                session_id: Uuid::parse_str(get_s(item, "sk")?)
                    .map_err(|_| super::items::corrupt("sk"))?,
                // Sessions from before devices were device 1's.
                device_id: get_n(item, "device_id").unwrap_or(crate::model::PRIMARY_DEVICE),
                created_at: get_n(item, "created_at").ok(),
                refreshed_at: get_n(item, "refreshed_at").ok(),
                expires_at,
            }))
        })
        .await
    }
}
