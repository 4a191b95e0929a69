//! `UserStore` on DynamoDB: a username claim item and a user item, created in one transaction
//! together with the key profile, so names are unique by the database itself.

use async_trait::async_trait;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{Delete, Put, TransactWriteItem, Update};

use super::items::{self, get_s, get_uuid, key, keys_pk, n, name_pk, s, user_pk, PROFILE_SK};
use super::{sdk_error, Dynamo, Item};
use crate::error::{Error, Result};
use crate::model::{
    Credentials, Device, DeviceAddress, DeviceId, DeviceList, NewAccount, NewDevice,
    RetiredRegistrations, UserId, UserOut, PRIMARY_DEVICE,
};
use crate::storage::{KeyStore, UserStore};

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
    items::one_time_items(
        &keys_pk(DeviceAddress::primary(account.user_id)),
        &account.one_time,
        &account.kyber_one_time,
    )
}

/// How often a device-list change re-reads and tries again when another change won the race.
const DEVICE_LIST_ATTEMPTS: usize = 8;

impl Dynamo {
    async fn user_item(&self, user_id: UserId) -> Result<Option<Item>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.tables.users)
            .key("pk", s(user_pk(user_id)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_error("get user", e))?;
        Ok(out.item)
    }

    /// The device list of a user item; an item from before devices has device 1 only, whose
    /// registration id is in its key profile.
    async fn list_of(&self, user_id: UserId, item: &Item) -> Result<DeviceList> {
        if let Some(list) = items::device_list_from(item)? {
            return Ok(list);
        }
        let profile = KeyStore::profile(self, DeviceAddress::primary(user_id))
            .await?
            .ok_or(Error::UserNotFound)?;
        Ok(DeviceList {
            version: 1,
            devices: vec![Device {
                device_id: PRIMARY_DEVICE,
                registration_id: profile.registration_id,
                created_at: items::get_n(item, "created_at").unwrap_or(0),
            }],
        })
    }

    /// Replaces the list (and the retired registration ids, when given) if it is still at
    /// `seen` (and the item still has none when it is an item from before devices); false when
    /// another change came first.
    async fn write_list(
        &self,
        user_id: UserId,
        item: &Item,
        next: &DeviceList,
        profile: Option<(DeviceId, &crate::model::Profile)>,
        retired: Option<&RetiredRegistrations>,
    ) -> Result<bool> {
        let mut set = "SET devices = :d, devices_version = :next".to_string();
        if retired.is_some() {
            set.push_str(&format!(", {} = :r", items::RETIRED));
        }
        let mut update = Update::builder()
            .table_name(&self.tables.users)
            .key("pk", s(user_pk(user_id)))
            .update_expression(set)
            .expression_attribute_values(":d", items::devices_attr(&next.devices))
            .expression_attribute_values(":next", n(next.version));
        if let Some(retired) = retired {
            update = update.expression_attribute_values(":r", items::retired_attr(retired));
        }
        update = if item.contains_key("devices_version") {
            update
                .condition_expression("devices_version = :seen")
                .expression_attribute_values(":seen", n(next.version - 1))
        } else {
            update.condition_expression(
                "attribute_exists(pk) AND attribute_not_exists(devices_version)",
            )
        };
        let mut tx = self.client.transact_write_items().transact_items(
            TransactWriteItem::builder()
                .update(update.build().expect("table, key and expression set"))
                .build(),
        );
        if let Some((device_id, profile)) = profile {
            let pk = keys_pk(DeviceAddress::new(user_id, device_id));
            tx = tx.transact_items(put(
                &self.tables.keys,
                items::profile_item(&pk, profile),
                false,
            ));
        }
        match tx.send().await {
            Ok(_) => Ok(true),
            Err(e) if is_conflict(&e) || is_cancelled_by_condition(&e) => Ok(false),
            Err(e) => Err(sdk_error("write device list", e)),
        }
    }
}

/// What one rename transaction came to.
enum Renamed {
    Done,
    /// The new name's claim exists (someone else's): nothing was written.
    Taken,
    /// The user item no longer has the name read, or its claim changed; nothing was written.
    Moved,
}

/// How often a rename re-reads and tries again when the account changed under it.
const RENAME_ATTEMPTS: u32 = 4;

impl Dynamo {
    /// One rename transaction from the name the user item has now:
    /// 0. put the new claim (user id, name, password hash) if no item has its key;
    /// 1. delete the old claim if it still belongs to the user with the same hash;
    /// 2. set the user item's name if it still is the old one.
    ///
    /// A cancellation on item 0 is a taken name; on 1 or 2, a change to this account (retried).
    async fn rename_once(&self, user_id: UserId, new: &str) -> Result<Renamed> {
        let user = self.user_item(user_id).await?.ok_or(Error::UserNotFound)?;
        let old = get_s(&user, "username")?.to_string();
        if old == new {
            return Ok(Renamed::Done);
        }
        let creds = self
            .credentials(&old)
            .await?
            .filter(|c| c.user_id == user_id)
            .ok_or(Error::UserNotFound)?;
        let claim = Item::from([
            ("pk".to_string(), s(name_pk(new))),
            ("user_id".to_string(), s(user_id.to_string())),
            ("username".to_string(), s(new)),
            ("password_hash".to_string(), s(&creds.password_hash)),
        ]);
        let release = Delete::builder()
            .table_name(&self.tables.users)
            .set_key(Some(pk_only(name_pk(&old))))
            .condition_expression("user_id = :me AND password_hash = :hash")
            .expression_attribute_values(":me", s(user_id.to_string()))
            .expression_attribute_values(":hash", s(&creds.password_hash))
            .build()
            .expect("table, key and condition set");
        let update = Update::builder()
            .table_name(&self.tables.users)
            .key("pk", s(user_pk(user_id)))
            .update_expression("SET username = :new")
            .condition_expression("username = :old")
            .expression_attribute_values(":new", s(new))
            .expression_attribute_values(":old", s(&old))
            .build()
            .expect("table, key and expression set");
        let result = self
            .client
            .transact_write_items()
            .transact_items(put(&self.tables.users, claim, true))
            .transact_items(TransactWriteItem::builder().delete(release).build())
            .transact_items(TransactWriteItem::builder().update(update).build())
            .send()
            .await;
        let e = match result {
            Ok(_) => return Ok(Renamed::Done),
            Err(e) => e,
        };
        let reasons: Vec<Option<String>> = match e.as_service_error() {
            Some(TransactWriteItemsError::TransactionCanceledException(c)) => c
                .cancellation_reasons()
                .iter()
                .map(|r| r.code().map(str::to_string))
                .collect(),
            _ => return Err(sdk_error("rename", e)),
        };
        let failed =
            |i: usize| reasons.get(i).and_then(|r| r.as_deref()) == Some("ConditionalCheckFailed");
        if failed(0) {
            Ok(Renamed::Taken)
        } else if failed(1)
            || failed(2)
            || reasons
                .iter()
                .any(|r| r.as_deref() == Some("TransactionConflict"))
        {
            Ok(Renamed::Moved)
        } else {
            Err(sdk_error("rename", e))
        }
    }
}

fn is_cancelled_by_condition<R>(
    e: &aws_sdk_dynamodb::error::SdkError<TransactWriteItemsError, R>,
) -> bool {
    matches!(
        e.as_service_error(),
        Some(TransactWriteItemsError::TransactionCanceledException(c))
            if c.cancellation_reasons().iter().any(|r| r.code() == Some("ConditionalCheckFailed"))
    )
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
            (
                "devices".to_string(),
                items::devices_attr(&[Device {
                    device_id: PRIMARY_DEVICE,
                    registration_id: account.profile.registration_id,
                    created_at: self.clock.now_secs(),
                }]),
            ),
            ("devices_version".to_string(), n(1)),
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
                items::profile_item(
                    &keys_pk(DeviceAddress::primary(account.user_id)),
                    &account.profile,
                ),
                false,
            ))
            .send()
            .await;
        let Err(e) = result else { return Ok(()) };
        let taken = is_cancelled_by_condition(&e);
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

    async fn account(&self, user_id: UserId) -> Result<Option<(String, u64)>> {
        let Some(item) = self.user_item(user_id).await? else {
            return Ok(None);
        };
        Ok(Some((
            get_s(&item, "username")?.to_string(),
            items::get_n(&item, "created_at")?,
        )))
    }

    async fn rename(&self, user_id: UserId, new: &str) -> Result<()> {
        for attempt in 1..=RENAME_ATTEMPTS {
            match self.rename_once(user_id, new).await? {
                Renamed::Done => return Ok(()),
                Renamed::Taken => return Err(Error::UsernameTaken),
                // The user item or the old claim changed under this attempt (a concurrent rename
                // of the same account): read again and retry.
                Renamed::Moved if attempt < RENAME_ATTEMPTS => {
                    tokio::time::sleep(std::time::Duration::from_millis(5 * attempt as u64)).await;
                }
                Renamed::Moved => break,
            }
        }
        Err(Error::unavailable(
            "dynamodb rename",
            "concurrent renames kept conflicting",
        ))
    }

    async fn delete(&self, user_id: UserId) -> Result<()> {
        let user = self.user_item(user_id).await?;
        let devices = match &user {
            Some(item) => items::device_list_from(item)?
                .map(|l| l.devices.iter().map(|d| d.device_id).collect())
                .unwrap_or_else(|| vec![PRIMARY_DEVICE]),
            None => vec![PRIMARY_DEVICE],
        };
        let mut user = user;
        let mut attempt = 0;
        while let Some(item) = user {
            attempt += 1;
            let username = get_s(&item, "username")?;
            // The user, the name claim and the profile go together: after this, bundles are 404.
            // The user item goes only while it has the name read, so a rename committed in
            // between cannot leave its new claim behind.
            let user_gone = Delete::builder()
                .table_name(&self.tables.users)
                .set_key(Some(pk_only(user_pk(user_id))))
                .condition_expression("attribute_not_exists(pk) OR username = :name")
                .expression_attribute_values(":name", s(username))
                .build()
                .expect("table, key and condition set");
            let sent = self
                .client
                .transact_write_items()
                .transact_items(delete(&self.tables.users, pk_only(name_pk(username))))
                .transact_items(TransactWriteItem::builder().delete(user_gone).build())
                .transact_items(delete(
                    &self.tables.keys,
                    key(keys_pk(DeviceAddress::primary(user_id)), PROFILE_SK),
                ))
                .send()
                .await;
            // A login or refresh checking the user item at this moment conflicts with this
            // transaction (theirs are short), and a rename changes the name: trying again from
            // a fresh read soon succeeds.
            match sent {
                Ok(_) => break,
                Err(e) if attempt < 4 && (is_conflict(&e) || is_cancelled_by_condition(&e)) => {
                    tokio::time::sleep(std::time::Duration::from_millis(5 * attempt)).await;
                    user = self.user_item(user_id).await?;
                }
                Err(e) => return Err(sdk_error("delete user", e)),
            }
        }
        for device_id in devices {
            self.remove_device_keys(DeviceAddress::new(user_id, device_id))
                .await?;
        }
        Ok(())
    }

    async fn devices(&self, user_id: UserId) -> Result<Option<DeviceList>> {
        match self.user_item(user_id).await? {
            Some(item) => Ok(Some(self.list_of(user_id, &item).await?)),
            None => Ok(None),
        }
    }

    async fn device_history(
        &self,
        user_id: UserId,
    ) -> Result<Option<(DeviceList, RetiredRegistrations)>> {
        match self.user_item(user_id).await? {
            Some(item) => Ok(Some((
                self.list_of(user_id, &item).await?,
                items::retired_from(&item)?,
            ))),
            None => Ok(None),
        }
    }

    async fn add_device(
        &self,
        user_id: UserId,
        device: &NewDevice,
        max: u32,
    ) -> Result<(DeviceId, DeviceList)> {
        for _ in 0..DEVICE_LIST_ATTEMPTS {
            let item = self.user_item(user_id).await?.ok_or(Error::UserNotFound)?;
            let list = self.list_of(user_id, &item).await?;
            if list.devices.len() >= max as usize {
                return Err(Error::TooManyDevices);
            }
            let device_id = list.next_free();
            if device_id > crate::model::MAX_DEVICE_ID {
                return Err(Error::TooManyDevices);
            }
            // Read with the list it guards: the write below is conditional on the list's
            // version, which every removal (the only writer of this attribute) increments.
            if items::retired_from(&item)?.repeats(device_id, device.profile.registration_id) {
                return Err(Error::RegistrationIdReused);
            }
            let mut next = list.clone();
            next.version += 1;
            next.devices.push(Device {
                device_id,
                registration_id: device.profile.registration_id,
                created_at: self.clock.now_secs(),
            });
            next.devices.sort_by_key(|d| d.device_id);
            // The list and the profile go in one transaction; the one-time keys follow (too many
            // for one), so a fetch in between finds the device without them for a moment.
            if !self
                .write_list(
                    user_id,
                    &item,
                    &next,
                    Some((device_id, &device.profile)),
                    None,
                )
                .await?
            {
                continue;
            }
            let pk = keys_pk(DeviceAddress::new(user_id, device_id));
            let keys = items::one_time_items(&pk, &device.one_time, &device.kyber_one_time);
            if let Err(e) = self.batch_put(&self.tables.keys, keys).await {
                // Without its keys the device is no use: it goes again rather than count.
                if let Err(undo) = self.remove_device(user_id, device_id).await {
                    tracing::warn!(error = %undo, "could not remove a device whose keys failed");
                }
                return Err(e);
            }
            return Ok((device_id, next));
        }
        Err(Error::unavailable(
            "dynamodb add device",
            "concurrent device changes kept conflicting",
        ))
    }

    async fn remove_device(&self, user_id: UserId, device_id: DeviceId) -> Result<DeviceList> {
        let mut keys_removed = false;
        for _ in 0..DEVICE_LIST_ATTEMPTS {
            let item = self.user_item(user_id).await?.ok_or(Error::UserNotFound)?;
            let list = self.list_of(user_id, &item).await?;
            let removed = match list.get(device_id) {
                Some(d) if device_id != PRIMARY_DEVICE => *d,
                _ => return Err(Error::DeviceNotFound),
            };
            // Keys before the list: while the id is still listed no link can take it, so this
            // never deletes the keys of a device linked under the same id afterwards.
            if !keys_removed {
                self.remove_device_keys(DeviceAddress::new(user_id, device_id))
                    .await?;
                keys_removed = true;
            }
            let next = DeviceList {
                version: list.version + 1,
                devices: list
                    .devices
                    .iter()
                    .filter(|d| d.device_id != device_id)
                    .copied()
                    .collect(),
            };
            let mut retired = items::retired_from(&item)?;
            retired.retire(&removed);
            if self
                .write_list(user_id, &item, &next, None, Some(&retired))
                .await?
            {
                return Ok(next);
            }
        }
        Err(Error::unavailable(
            "dynamodb remove device",
            "concurrent device changes kept conflicting",
        ))
    }
}
