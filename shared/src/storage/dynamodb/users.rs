//! `UserStore` on DynamoDB: a username claim item and a user item, created in one transaction
//! together with the key profile, so names are unique by the database itself.

use async_trait::async_trait;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{Delete, Put, TransactWriteItem};

use super::items::{self, get_s, get_uuid, key, n, name_pk, s, user_pk, PROFILE_SK};
use super::{sdk_error, Dynamo, Item};
use crate::error::{Error, Result};
use crate::model::{Credentials, NewAccount, UserId, UserOut};
use crate::storage::UserStore;

fn put(table: &str, item: Item, must_be_new: bool) -> TransactWriteItem {
    let mut p = Put::builder().table_name(table).set_item(Some(item));
    if must_be_new {
        p = p.condition_expression("attribute_not_exists(pk)");
    }
    TransactWriteItem::builder()
        .put(p.build().expect("table and item set"))
        .build()
}

fn delete(table: &str, key: Item) -> TransactWriteItem {
    TransactWriteItem::builder()
        .delete(
            Delete::builder()
                .table_name(table)
                .set_key(Some(key))
                .build()
                .expect("key set"),
        )
        .build()
}

fn is_conflict<R>(e: &aws_sdk_dynamodb::error::SdkError<TransactWriteItemsError, R>) -> bool {
    match e.as_service_error() {
        Some(TransactWriteItemsError::TransactionCanceledException(c)) => c
            .cancellation_reasons()
            .iter()
            .any(|r| r.code() == Some("TransactionConflict")),
        _ => false,
    }
}

fn pk_only(pk: String) -> Item {
    Item::from([("pk".to_string(), s(pk))])
}

fn one_time_keys(account: &NewAccount) -> Vec<Item> {
    items::one_time_items(account.user_id, &account.one_time, &account.kyber_one_time)
}

impl Dynamo {
    async fn remove_keys(&self, user_id: UserId) -> Result<()> {
        let keys = self
            .query_keys(&self.tables.keys, &user_id.to_string(), None)
            .await?;
        self.batch_delete(&self.tables.keys, keys).await
    }
}

#[async_trait]
impl UserStore for Dynamo {
    async fn create(&self, account: &NewAccount) -> Result<()> {
        // One-time keys first, under the fresh user id nobody can see yet; the transaction below
        // is the commit point. Too many keys for one transaction, so on failure they are removed.
        self.batch_put(&self.tables.keys, one_time_keys(account))
            .await?;
        let user_item = Item::from([
            ("pk".to_string(), s(user_pk(account.user_id))),
            ("user_id".to_string(), s(account.user_id.to_string())),
            ("username".to_string(), s(&account.username)),
            ("created_at".to_string(), n(self.clock.now_secs())),
        ]);
        let name_item = Item::from([
            ("pk".to_string(), s(name_pk(&account.username))),
            ("user_id".to_string(), s(account.user_id.to_string())),
            ("username".to_string(), s(&account.username)),
            ("password_hash".to_string(), s(&account.password_hash)),
        ]);
        let result = self
            .client
            .transact_write_items()
            .transact_items(put(&self.tables.users, name_item, true))
            .transact_items(put(&self.tables.users, user_item, true))
            .transact_items(put(
                &self.tables.keys,
                items::profile_item(account.user_id, &account.profile),
                false,
            ))
            .send()
            .await;
        let Err(e) = result else { return Ok(()) };
        let taken = matches!(
            e.as_service_error(),
            Some(TransactWriteItemsError::TransactionCanceledException(c))
                if c.cancellation_reasons().iter().any(|r| r.code() == Some("ConditionalCheckFailed"))
        );
        let cleanup = self.batch_delete(
            &self.tables.keys,
            one_time_keys(account)
                .into_iter()
                .map(|i| {
                    key(
                        get_s(&i, "pk").unwrap_or_default(),
                        get_s(&i, "sk").unwrap_or_default(),
                    )
                })
                .collect(),
        );
        if let Err(ce) = cleanup.await {
            tracing::warn!(error = %ce, "could not remove one-time keys of a failed registration");
        }
        Err(if taken {
            Error::UsernameTaken
        } else {
            sdk_error("register", e)
        })
    }

    async fn credentials(&self, username: &str) -> Result<Option<Credentials>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.tables.users)
            .key("pk", s(name_pk(username)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_error("get credentials", e))?;
        out.item
            .map(|i| {
                Ok(Credentials {
                    user_id: get_uuid(&i, "user_id")?,
                    username: get_s(&i, "username")?.to_string(),
                    password_hash: get_s(&i, "password_hash")?.to_string(),
                })
            })
            .transpose()
    }

    async fn find_by_name(&self, username: &str) -> Result<Option<UserOut>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.tables.users)
            .key("pk", s(name_pk(username)))
            .projection_expression("user_id, username")
            .send()
            .await
            .map_err(|e| sdk_error("find user", e))?;
        out.item
            .map(|i| {
                Ok(UserOut {
                    user_id: get_uuid(&i, "user_id")?,
                    username: get_s(&i, "username")?.to_string(),
                })
            })
            .transpose()
    }

    async fn exists(&self, user_id: UserId) -> Result<bool> {
        let out = self
            .client
            .get_item()
            .table_name(&self.tables.users)
            .key("pk", s(user_pk(user_id)))
            .projection_expression("pk")
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_error("user exists", e))?;
        Ok(out.item.is_some())
    }

    async fn created_at(&self, user_id: UserId) -> Result<Option<u64>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.tables.users)
            .key("pk", s(user_pk(user_id)))
            .projection_expression("created_at")
            .send()
            .await
            .map_err(|e| sdk_error("user created_at", e))?;
        out.item.map(|i| items::get_n(&i, "created_at")).transpose()
    }

    async fn delete(&self, user_id: UserId) -> Result<()> {
        let out = self
            .client
            .get_item()
            .table_name(&self.tables.users)
            .key("pk", s(user_pk(user_id)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_error("get user", e))?;
        if let Some(user) = out.item {
            let username = get_s(&user, "username")?;
            // The user, the name claim and the profile go together: after this, bundles are 404.
            let tx = self
                .client
                .transact_write_items()
                .transact_items(delete(&self.tables.users, pk_only(name_pk(username))))
                .transact_items(delete(&self.tables.users, pk_only(user_pk(user_id))))
                .transact_items(delete(
                    &self.tables.keys,
                    key(user_id.to_string(), PROFILE_SK),
                ));
            // A login or refresh checking the user item at this moment conflicts with this
            // transaction; theirs are short, so trying again soon succeeds.
            let mut attempt = 0;
            loop {
                attempt += 1;
                match tx.clone().send().await {
                    Ok(_) => break,
                    Err(e) if attempt < 4 && is_conflict(&e) => {
                        tokio::time::sleep(std::time::Duration::from_millis(5 * attempt)).await;
                    }
                    Err(e) => return Err(sdk_error("delete user", e)),
                }
            }
        }
        self.remove_keys(user_id).await
    }
}
