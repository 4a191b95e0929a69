//! The account's own data: an export of everything the relay stores about it, and a username
//! change (rectification). Neither touches a secret: the export reads ids, counts and times
//! through the stores' narrow reads, never a token, hash, key or body.

use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};

use super::attachments::MAX_LIVE_UPLOADS;
use super::{Limit, Limiter};
use crate::clock::SharedClock;
use crate::crypto::tokens::Principal;
use crate::error::{Error, Result};
use crate::groups::GroupId;
use crate::model::{
    AccountExport, DeviceAddress, DeviceId, DeviceOut, ExportAccount, ExportAttachment,
    ExportGroup, ExportInbox, ExportKeyIds, ExportKeys, ExportPresence, ExportRetired,
    ExportSession, RenameRequest, UserId, UserOut, PRIMARY_DEVICE,
};
use crate::storage::{
    AttachmentIndex, GroupStore, Inbox, KeyPackageStore, KeyStore, PresenceStore, SessionStore,
    UserStore,
};
use crate::validation;

/// Most sessions an export lists (nothing else caps a user's sessions: each login makes one,
/// kept until its refresh token expires); `sessions_truncated` says when there were more.
pub const EXPORT_MAX_SESSIONS: usize = 1000;

/// Most groups an export lists (a user may be in any number); `groups_truncated` says when
/// there were more.
pub const EXPORT_MAX_GROUPS: usize = 1000;

/// Devices whose keys and inbox an export reads at once.
const DEVICES_AT_ONCE: usize = 8;

#[derive(Clone)]
pub struct AccountData {
    pub(crate) users: Arc<dyn UserStore>,
    pub(crate) sessions: Arc<dyn SessionStore>,
    pub(crate) keys: Arc<dyn KeyStore>,
    pub(crate) key_packages: Arc<dyn KeyPackageStore>,
    pub(crate) inbox: Arc<dyn Inbox>,
    pub(crate) groups: Arc<dyn GroupStore>,
    /// The caller's uploads.
    pub(crate) uploads: Arc<dyn AttachmentIndex>,
    /// The caller's share list, where presence is served.
    pub(crate) presence: Option<Arc<dyn PresenceStore>>,
    pub(crate) limiter: Limiter,
    pub(crate) clock: SharedClock,
}

impl AccountData {
    /// `PATCH /v1/users/me`: the account takes the name, atomically and uniquely as
    /// registration claims one; the old name is free for anyone at once. Only the primary
    /// device may (the account is its, as for deletion). Charged before the name is looked at,
    /// so probing names costs the same whether they are valid, free or taken.
    pub async fn rename(&self, who: &Principal, req: RenameRequest) -> Result<UserOut> {
        if who.device_id != PRIMARY_DEVICE {
            return Err(Error::Forbidden);
        }
        self.limiter
            .take(Limit::Rename { user: who.user_id })
            .await?;
        let username = validation::username(&req.username)?;
        self.users.rename(who.user_id, &username).await?;
        tracing::info!("username changed");
        Ok(UserOut {
            user_id: who.user_id,
            username,
        })
    }

    /// `GET /v1/account/export`. Work: two reads of the user item; one bounded sessions query
    /// (`EXPORT_MAX_SESSIONS`); per device (at most `MAX_DEVICES`) a profile read, two key-id
    /// queries (at most `MAX_ONE_TIME_PREKEYS` ids each), a KeyPackage count and a Redis script
    /// of O(1); group index pages up to `EXPORT_MAX_GROUPS`; one presence read; upload index
    /// pages up to `MAX_LIVE_UPLOADS` entries (about 1 MB).
    pub async fn export(&self, who: &Principal) -> Result<AccountExport> {
        let user = who.user_id;
        self.limiter.take(Limit::Export { user }).await?;
        let (history, account) =
            futures::try_join!(self.users.device_history(user), self.users.account(user))?;
        let ((list, retired), (username, created_at)) =
            history.zip(account).ok_or(Error::UserNotFound)?;
        let ids: Vec<DeviceId> = list.devices.iter().map(|d| d.device_id).collect();
        // Collected first: a stream over a closure's futures is not `Send` for every lifetime,
        // which the handler's future must be.
        let reads: Vec<_> = ids.iter().map(|&d| self.device(user, d)).collect();
        let per_device = futures::stream::iter(reads)
            .buffered(DEVICES_AT_ONCE)
            .try_collect::<Vec<_>>();
        let (
            per_device,
            (sessions, sessions_truncated),
            (groups, groups_truncated),
            presence,
            (uploads, attachments_truncated),
        ) = futures::try_join!(
            per_device,
            self.sessions.list(user, EXPORT_MAX_SESSIONS),
            self.groups_of(user),
            self.presence_of(user),
            self.uploads.uploads(user, MAX_LIVE_UPLOADS),
        )?;
        let (keys, inbox) = per_device.into_iter().unzip();
        tracing::info!(devices = ids.len(), "account exported");
        Ok(AccountExport {
            exported_at: self.clock.now_secs(),
            account: ExportAccount {
                user_id: user,
                username,
                created_at,
            },
            devices: list.devices.iter().map(DeviceOut::from).collect(),
            retired_registration_ids: retired
                .0
                .into_iter()
                .map(|(device_id, registration_ids)| ExportRetired {
                    device_id,
                    registration_ids,
                })
                .collect(),
            sessions: sessions
                .into_iter()
                .map(|s| ExportSession {
                    session_id: s.session_id,
                    device_id: s.device_id,
                    created_at: s.created_at,
                    last_refreshed_at: s.refreshed_at,
                    expires_at: s.expires_at,
                })
                .collect(),
            sessions_truncated,
            keys,
            inbox,
            attachments: uploads
                .into_iter()
                .map(|u| ExportAttachment {
                    attachment_id: u.id,
                    size: u.size,
                    created_at: u.created_at,
                    expires_at: u.expires_at,
                })
                .collect(),
            attachments_truncated,
            groups,
            groups_truncated,
            presence,
        })
    }

    /// One device's keys (ids and counts) and inbox (counts and times).
    async fn device(&self, user: UserId, device_id: DeviceId) -> Result<(ExportKeys, ExportInbox)> {
        let device = DeviceAddress::new(user, device_id);
        let (profile, (ec, kyber), (packages, last_resort), summary) = futures::try_join!(
            self.keys.profile(device),
            self.keys.one_time_ids(device),
            self.key_packages.key_package_count(device),
            self.inbox.summary(device),
        )?;
        let key_ids = |ids: Vec<u32>| ExportKeyIds {
            count: ids.len() as u64,
            ids,
        };
        let keys = ExportKeys {
            device_id,
            signed_prekey_id: profile.as_ref().map(|p| p.signed_prekey.key_id),
            kyber_last_resort_prekey_id: profile
                .as_ref()
                .and_then(|p| p.kyber_last_resort.as_ref().map(|k| k.key_id)),
            one_time_prekeys: key_ids(ec),
            kyber_one_time_prekeys: key_ids(kyber),
            mls_key_packages: packages,
            mls_last_resort_key_package: last_resort,
        };
        let inbox = ExportInbox {
            device_id,
            queued: summary.queued,
            bytes: summary.bytes,
            in_flight: summary.in_flight,
            in_flight_bytes: summary.in_flight_bytes,
            oldest_sent_at: summary.oldest.and_then(|t| t.sent_at_ms),
            oldest_expires_at: summary.oldest.map(|t| t.expires_at_ms),
            newest_sent_at: summary.newest.and_then(|t| t.sent_at_ms),
            newest_expires_at: summary.newest.map(|t| t.expires_at_ms),
        };
        Ok((keys, inbox))
    }

    /// The user's groups from the per-user index, a page at a time, at most
    /// `EXPORT_MAX_GROUPS`, and whether there were more.
    async fn groups_of(&self, user: UserId) -> Result<(Vec<ExportGroup>, bool)> {
        let page = super::groups::PAGE;
        let mut found = Vec::new();
        let mut after: Option<GroupId> = None;
        loop {
            let batch = self.groups.of_user(user, after, page as u32).await?;
            let full = batch.len() == page;
            after = batch.last().map(|m| m.group_id);
            found.extend(batch.into_iter().map(|m| ExportGroup {
                group_id: m.group_id,
                role: m.role,
                state: m.state,
            }));
            if found.len() > EXPORT_MAX_GROUPS {
                found.truncate(EXPORT_MAX_GROUPS);
                return Ok((found, true));
            }
            if !full {
                return Ok((found, false));
            }
        }
    }

    async fn presence_of(&self, user: UserId) -> Result<Option<ExportPresence>> {
        let Some(presence) = &self.presence else {
            return Ok(None);
        };
        let (shares, last_seen) = presence.shares(user).await?;
        Ok(Some(ExportPresence { shares, last_seen }))
    }
}
