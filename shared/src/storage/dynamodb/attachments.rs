//! `AttachmentIndex` on DynamoDB: in the groups table, under the user's partition beside the
//! user's group index (`user#<id>`), one item per upload (`att#<created_at>#<id>`, so a query
//! lists them oldest first) and one count per UTC day of uploads (`attday#<day>`). Both carry
//! `expires_at`, the table's TTL attribute: an entry goes with its object (the bucket's
//! lifecycle), a day's count once no upload of that day can be live.

use async_trait::async_trait;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{ConditionCheck, Put, TransactWriteItem, Update};

use super::items::{get_n, get_s, key, n, s, user_pk};
use super::{first_kept, sdk_error, Dynamo, Item};
use crate::error::{Error, Result};
use crate::model::UserId;
use crate::storage::{AttachmentIndex, UploadRecord};

const UPLOAD_PREFIX: &str = "att#";
const DAY_PREFIX: &str = "attday#";
const DAY_SECS: u64 = 86_400;
/// A day's count is kept while an upload of that day may still be live (30 days), and a day more.
const DAY_COUNT_SECS: u64 = 32 * DAY_SECS;

/// Zero-padded so the sort key orders by time.
fn upload_sk(upload: &UploadRecord) -> String {
    format!("{UPLOAD_PREFIX}{:010}#{}", upload.created_at, upload.id)
}

fn day_sk(day: u64) -> String {
    format!("{DAY_PREFIX}{day}")
}

fn upload_from(item: &Item) -> Result<UploadRecord> {
    let sk = get_s(item, "sk")?;
    let id = sk
        .strip_prefix(UPLOAD_PREFIX)
        .and_then(|rest| rest.split_once('#'))
        .map(|(_, id)| id.to_string())
        .ok_or_else(|| super::items::corrupt("sk"))?;
    Ok(UploadRecord {
        id,
        size: get_n(item, "size")?,
        created_at: get_n(item, "created_at")?,
        expires_at: get_n(item, "expires_at")?,
    })
}

#[async_trait]
impl AttachmentIndex for Dynamo {
    async fn record(&self, user: UserId, upload: &UploadRecord, max_per_day: u32) -> Result<()> {
        let pk = user_pk(user);
        let table = &self.tables.groups;
        let day = upload.created_at / DAY_SECS;
        let user_exists = ConditionCheck::builder()
            .table_name(&self.tables.users)
            .set_key(Some(Item::from([("pk".to_string(), s(&pk))])))
            .condition_expression("attribute_exists(pk)")
            .build()
            .expect("table, key and condition set");
        let count = Update::builder()
            .table_name(table)
            .set_key(Some(key(&pk, day_sk(day))))
            .update_expression("ADD uploads :one SET expires_at = :exp")
            .condition_expression("attribute_not_exists(uploads) OR uploads < :max")
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":max", n(max_per_day))
            .expression_attribute_values(":exp", n(day * DAY_SECS + DAY_COUNT_SECS))
            .build()
            .expect("table, key and expression set");
        let mut item = key(&pk, upload_sk(upload));
        item.insert("size".into(), n(upload.size));
        item.insert("created_at".into(), n(upload.created_at));
        item.insert("expires_at".into(), n(upload.expires_at));
        let put = Put::builder()
            .table_name(table)
            .set_item(Some(item))
            .build()
            .expect("table and item set");
        let tx = self
            .client
            .transact_write_items()
            .transact_items(
                TransactWriteItem::builder()
                    .condition_check(user_exists)
                    .build(),
            )
            .transact_items(TransactWriteItem::builder().update(count).build())
            .transact_items(TransactWriteItem::builder().put(put).build());
        // Uploads of one user at once contend for the day's count: a few tries settle them.
        for attempt in 1..=4u64 {
            let e = match tx.clone().send().await {
                Ok(_) => return Ok(()),
                Err(e) => e,
            };
            let reasons: Vec<Option<String>> = match e.as_service_error() {
                Some(TransactWriteItemsError::TransactionCanceledException(c)) => c
                    .cancellation_reasons()
                    .iter()
                    .map(|r| r.code().map(str::to_string))
                    .collect(),
                _ => return Err(sdk_error("record upload", e)),
            };
            let is = |i: usize, code: &str| reasons.get(i).and_then(|r| r.as_deref()) == Some(code);
            if is(0, "ConditionalCheckFailed") {
                return Err(Error::UserNotFound);
            }
            if is(1, "ConditionalCheckFailed") {
                let next_day = (day + 1) * DAY_SECS;
                return Err(Error::RateLimited {
                    retry_after_secs: next_day.saturating_sub(upload.created_at).max(1),
                });
            }
            if !reasons
                .iter()
                .any(|r| r.as_deref() == Some("TransactionConflict"))
            {
                return Err(sdk_error("record upload", e));
            }
            tokio::time::sleep(std::time::Duration::from_millis(5 * attempt)).await;
        }
        Err(Error::unavailable(
            "dynamodb record upload",
            "transaction kept conflicting",
        ))
    }

    async fn uploads(&self, user: UserId, max: usize) -> Result<(Vec<UploadRecord>, bool)> {
        let now = self.clock.now_secs();
        let query = self
            .query_partition(&self.tables.groups, &user_pk(user), Some(UPLOAD_PREFIX))
            .projection_expression("sk, #size, created_at, expires_at")
            .expression_attribute_names("#size", "size")
            .consistent_read(true);
        first_kept(query, "list uploads", max, |item| {
            let upload = upload_from(item)?;
            Ok((upload.expires_at > now).then_some(upload))
        })
        .await
    }

    async fn all_ids(&self, user: UserId) -> Result<Vec<String>> {
        let keys = self
            .query_keys(&self.tables.groups, &user_pk(user), Some(UPLOAD_PREFIX))
            .await?;
        keys.iter()
            .map(|k| {
                get_s(k, "sk")?
                    .strip_prefix(UPLOAD_PREFIX)
                    .and_then(|rest| rest.split_once('#'))
                    .map(|(_, id)| id.to_string())
                    .ok_or_else(|| super::items::corrupt("sk"))
            })
            .collect()
    }

    async fn forget(&self, user: UserId) -> Result<()> {
        let pk = user_pk(user);
        let table = &self.tables.groups;
        let (uploads, days) = futures::try_join!(
            self.query_keys(table, &pk, Some(UPLOAD_PREFIX)),
            self.query_keys(table, &pk, Some(DAY_PREFIX)),
        )?;
        self.batch_delete(table, uploads.into_iter().chain(days).collect())
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sort_keys_order_by_time_and_give_the_id_back() {
        let at = |created_at: u64| UploadRecord {
            id: "AAAAAAAAAAAAAAAAAAAA-_".into(),
            size: 1,
            created_at,
            expires_at: created_at + 30 * DAY_SECS,
        };
        assert!(upload_sk(&at(9)) < upload_sk(&at(10)));
        let mut item = key("user#x", upload_sk(&at(1_700_000_000)));
        item.insert("size".into(), n(1));
        item.insert("created_at".into(), n(1_700_000_000));
        item.insert("expires_at".into(), n(1_700_000_000 + 30 * DAY_SECS));
        assert_eq!(upload_from(&item).unwrap(), at(1_700_000_000));
    }
}
