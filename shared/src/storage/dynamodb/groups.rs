//! `GroupStore` on DynamoDB: in the `groups` table, one item per group (`group#<id>`, `group`)
//! holding the roster, and one index item per user and group (`user#<id>`, `group#<id>`) with the
//! user's role and state there. Every change is one `TransactWriteItems`: the group item under
//! the condition `version = expected`, with the index items of the users it touches, so the
//! index never disagrees with a roster that was written. An MLS group's tracked state and
//! GroupInfo, too large for the group item, are chunk items beside it in the group's partition
//! (`mls#<generation>#<epoch>#s<n>` and `…#i<n>`), written and deleted in the transaction of the
//! change that moves the group to their epoch.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{Delete, Put, TransactWriteItem};

use super::items::{self, group_pk, group_sk, key, n, user_pk, GROUP_PREFIX, GROUP_SK};
use super::mls_items::{self, CHUNK_PREFIX};
use super::{each_page, sdk_error, Dynamo, Item};
use crate::error::{Error, Result};
use crate::groups::{Group, GroupId, Membership, MlsEpoch};
use crate::model::UserId;
use crate::storage::{GroupStore, GroupWrite, MlsBlobs, MlsLogEntry, MLS_LOG_SECS};

/// DynamoDB's limit of items in one transaction.
const TRANSACTION_ITEMS: usize = 100;

/// The most bytes of MLS state and GroupInfo one change writes: a transaction holds 4 MB of
/// items, and the group item (the roster) may take up to 400 KB of them.
const MLS_TRANSACTION_BYTES: usize = 4_000_000 - 400_000;

/// How often a transaction cancelled by another one in flight on the same items (not by its
/// condition) is sent again before the change reports the store unavailable.
const CONFLICT_ATTEMPTS: u32 = 6;

/// What a put of the group item requires of the stored one.
enum Condition {
    /// No group with this id yet.
    New,
    /// The group still at this version.
    At(u64),
}

fn put(table: &str, item: Item, condition: Option<Condition>) -> TransactWriteItem {
    let mut p = Put::builder().table_name(table).set_item(Some(item));
    match condition {
        Some(Condition::New) => p = p.condition_expression("attribute_not_exists(pk)"),
        Some(Condition::At(version)) => {
            p = p
                .condition_expression("version = :expected")
                .expression_attribute_values(":expected", n(version))
        }
        None => {}
    }
    TransactWriteItem::builder()
        .put(p.build().expect("table and item set"))
        .build()
}

fn delete(table: &str, key: Item, expected: Option<u64>) -> TransactWriteItem {
    let mut d = Delete::builder().table_name(table).set_key(Some(key));
    if let Some(version) = expected {
        d = d
            .condition_expression("version = :expected")
            .expression_attribute_values(":expected", n(version));
    }
    TransactWriteItem::builder()
        .delete(d.build().expect("table and key set"))
        .build()
}

fn index_key(user_id: UserId, group_id: GroupId) -> Item {
    key(user_pk(user_id), group_sk(group_id))
}

/// Refuses a change of `items` writes: DynamoDB would refuse the transaction less clearly.
fn fits_one_transaction(items: usize, what: &str) -> Result<()> {
    if items > TRANSACTION_ITEMS {
        return Err(Error::Internal(format!(
            "{what} takes {items} writes, more than one transaction holds ({TRANSACTION_ITEMS})"
        )));
    }
    Ok(())
}

/// The writes of a roster change: the group item on the condition that it is still at
/// `expected`, the index items of `upserted` and the deletes of those of `dropped`.
fn replace_items(
    table: &str,
    group: &Group,
    expected: u64,
    upserted: &[UserId],
    dropped: &[UserId],
) -> Result<Vec<TransactWriteItem>> {
    let mut tx = vec![put(
        table,
        items::group_item(group),
        Some(Condition::At(expected)),
    )];
    for user_id in upserted {
        let entry = group
            .entry(*user_id)
            .ok_or_else(|| Error::Internal("an index entry for a user not in the roster".into()))?;
        tx.push(put(
            table,
            items::membership_item(*user_id, group.id, entry),
            None,
        ));
    }
    tx.extend(
        dropped
            .iter()
            .map(|u| delete(table, index_key(*u, group.id), None)),
    );
    Ok(tx)
}

/// Why a transaction was cancelled, as far as the groups adapter cares.
enum Cancelled {
    /// The group item's condition failed: the group moved on (or is gone).
    Condition,
    /// Another transaction was in flight on one of the items; sending again may succeed.
    Conflict,
}

fn cancelled<R>(e: &SdkError<TransactWriteItemsError, R>) -> Option<Cancelled> {
    let Some(TransactWriteItemsError::TransactionCanceledException(c)) = e.as_service_error()
    else {
        return None;
    };
    let codes: Vec<_> = c
        .cancellation_reasons()
        .iter()
        .filter_map(|r| r.code())
        .collect();
    if codes.contains(&"ConditionalCheckFailed") {
        Some(Cancelled::Condition)
    } else if codes.contains(&"TransactionConflict") {
        Some(Cancelled::Conflict)
    } else {
        None
    }
}

impl Dynamo {
    /// Sends one group transaction: `Written`, or `Moved` with the group as it is now when the
    /// condition on its version failed.
    async fn group_transaction(
        &self,
        group_id: GroupId,
        items: Vec<TransactWriteItem>,
        what: &str,
    ) -> Result<GroupWrite> {
        for attempt in 0..CONFLICT_ATTEMPTS {
            let sent = self
                .client
                .transact_write_items()
                .set_transact_items(Some(items.clone()))
                .send()
                .await;
            match sent {
                Ok(_) => return Ok(GroupWrite::Written),
                Err(e) => match cancelled(&e) {
                    Some(Cancelled::Condition) => {
                        return Ok(GroupWrite::Moved(GroupStore::get(self, group_id).await?))
                    }
                    Some(Cancelled::Conflict) => {
                        tokio::time::sleep(Duration::from_millis(10 << attempt)).await
                    }
                    None => return Err(sdk_error(what, e)),
                },
            }
        }
        Err(Error::Unavailable(format!(
            "dynamodb {what}: transaction conflicts persisted"
        )))
    }
}

#[async_trait]
impl GroupStore for Dynamo {
    async fn get(&self, group_id: GroupId) -> Result<Option<Group>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.tables.groups)
            .set_key(Some(key(group_pk(group_id), GROUP_SK)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_error("get group", e))?;
        out.item.as_ref().map(items::group_from).transpose()
    }

    async fn create(&self, group: &Group) -> Result<()> {
        let table = &self.tables.groups;
        if group.members.len() + 1 > TRANSACTION_ITEMS {
            return Err(Error::Internal(format!(
                "a new group of {} users does not fit one transaction",
                group.members.len()
            )));
        }
        let mut tx = vec![put(table, items::group_item(group), Some(Condition::New))];
        tx.extend(
            group
                .members
                .iter()
                .map(|m| put(table, items::membership_item(m.user_id, group.id, m), None)),
        );
        match self.group_transaction(group.id, tx, "create group").await? {
            GroupWrite::Written => Ok(()),
            GroupWrite::Moved(_) => Err(Error::Internal("group id already taken".into())),
        }
    }

    async fn replace(
        &self,
        group: &Group,
        expected: u64,
        upserted: &[UserId],
        dropped: &[UserId],
    ) -> Result<GroupWrite> {
        let table = &self.tables.groups;
        fits_one_transaction(1 + upserted.len() + dropped.len(), "a group change")?;
        let tx = replace_items(table, group, expected, upserted, dropped)?;
        self.group_transaction(group.id, tx, "replace group").await
    }

    async fn replace_mls(
        &self,
        group: &Group,
        expected: u64,
        upserted: &[UserId],
        dropped: &[UserId],
        blobs: &MlsBlobs,
        previous: Option<&MlsEpoch>,
    ) -> Result<GroupWrite> {
        let table = &self.tables.groups;
        let at = group
            .mls
            .as_ref()
            .ok_or_else(|| Error::Internal("an MLS state for a group without an epoch".into()))?;
        if (at.state_chunks, at.info_chunks) != (blobs.state_chunks(), blobs.info_chunks()) {
            return Err(Error::Internal(
                "the group's chunk counts are not those of its MLS state".into(),
            ));
        }
        let bytes = blobs.state.len()
            + blobs.group_info.len()
            + blobs.log.as_ref().map_or(0, MlsLogEntry::bytes);
        if bytes > MLS_TRANSACTION_BYTES {
            return Err(Error::Internal(format!(
                "an MLS state and GroupInfo of {bytes} bytes do not fit one transaction"
            )));
        }
        let pk = group_pk(group.id);
        let mut chunks = mls_items::chunk_items(&pk, at, blobs);
        // The Commit is kept under the epoch it was made at (the one replaced).
        if let (Some(entry), Some(made_at)) = (&blobs.log, previous) {
            let expires = self.clock.now_ms() / 1000 + MLS_LOG_SECS;
            chunks.extend(mls_items::log_items(
                &pk,
                made_at.generation,
                made_at.epoch,
                entry,
                expires,
            ));
        }
        // A chunk key of the new epoch is overwritten, not deleted: one transaction may not
        // touch an item twice.
        let written: Vec<&str> = chunks
            .iter()
            .filter_map(|c| items::get_s(c, "sk").ok())
            .collect();
        let stale: Vec<Item> = previous
            .map(|p| mls_items::chunk_keys(&pk, p))
            .unwrap_or_default()
            .into_iter()
            .filter(|k| !items::get_s(k, "sk").is_ok_and(|sk| written.contains(&sk)))
            .collect();
        fits_one_transaction(
            1 + upserted.len() + dropped.len() + chunks.len() + stale.len(),
            "an MLS group change",
        )?;
        let mut tx = replace_items(table, group, expected, upserted, dropped)?;
        tx.extend(chunks.into_iter().map(|c| put(table, c, None)));
        tx.extend(stale.into_iter().map(|k| delete(table, k, None)));
        self.group_transaction(group.id, tx, "replace MLS group")
            .await
    }

    async fn mls_blobs(&self, group_id: GroupId, at: &MlsEpoch) -> Result<Option<MlsBlobs>> {
        let query = self
            .query_partition(
                &self.tables.groups,
                &group_pk(group_id),
                Some(&mls_items::epoch_prefix(at)),
            )
            .consistent_read(true);
        let mut chunks = Vec::new();
        each_page(query, "read MLS state", |page| {
            chunks.extend(page.items.unwrap_or_default())
        })
        .await?;
        mls_items::join_chunks(&chunks, at)
    }

    async fn mls_log(
        &self,
        group_id: GroupId,
        generation: u32,
        epoch: u64,
    ) -> Result<Option<MlsLogEntry>> {
        let query = self
            .query_partition(
                &self.tables.groups,
                &group_pk(group_id),
                Some(&mls_items::log_prefix(generation, epoch)),
            )
            .consistent_read(true);
        let mut items = Vec::new();
        each_page(query, "read MLS commit", |page| {
            items.extend(page.items.unwrap_or_default())
        })
        .await?;
        mls_items::join_log(&items, generation, epoch, self.clock.now_ms() / 1000)
    }

    async fn delete(
        &self,
        group_id: GroupId,
        expected: u64,
        dropped: &[UserId],
    ) -> Result<GroupWrite> {
        let table = &self.tables.groups;
        // The group item and as many index entries as fit go in one transaction; a group left
        // by its last member may still have up to `GROUP_MAX_MEMBERS` invitees, whose remaining
        // entries are deleted after it. Should that fail, the list shows them a group that reads
        // as `group_not_found`, which is what it is. The MLS chunks go after it the same way.
        let (now, later) = dropped.split_at(dropped.len().min(TRANSACTION_ITEMS - 1));
        let mut tx = vec![delete(
            table,
            key(group_pk(group_id), GROUP_SK),
            Some(expected),
        )];
        tx.extend(
            now.iter()
                .map(|u| delete(table, index_key(*u, group_id), None)),
        );
        let written = self.group_transaction(group_id, tx, "delete group").await?;
        if written == GroupWrite::Written {
            // Read once the group item is gone: no change can write chunks after that (each is
            // conditional on the group's version), so this finds every one there is.
            let chunks = self
                .query_keys(table, &group_pk(group_id), Some(CHUNK_PREFIX))
                .await?;
            let mut rest: Vec<Item> = later.iter().map(|u| index_key(*u, group_id)).collect();
            rest.extend(chunks);
            if !rest.is_empty() {
                self.batch_delete(table, rest).await?;
            }
        }
        Ok(written)
    }

    async fn of_user(
        &self,
        user_id: UserId,
        after: Option<GroupId>,
        limit: u32,
    ) -> Result<Vec<Membership>> {
        let pk = user_pk(user_id);
        let query = self
            .query_partition(&self.tables.groups, &pk, Some(GROUP_PREFIX))
            .consistent_read(true)
            .limit(limit as i32)
            .set_exclusive_start_key(after.map(|g| index_key(user_id, g)));
        let out = query
            .send()
            .await
            .map_err(|e| sdk_error("list groups", e))?;
        out.items
            .unwrap_or_default()
            .iter()
            .map(items::membership_from)
            .collect()
    }
}
