//! Groups over HTTP: create, list, read, invite, join, remove or leave, roles and `meta`. The
//! roster rules are `Group`'s methods; this service authenticates nothing (the caller's id comes
//! in), validates the wire values, charges the limits and writes every change as one
//! conditional write at the version it read.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::future::try_join_all;
use rand::Rng;

use super::{Limit, Limiter};
use crate::clock::SharedClock;
use crate::config::GroupLimits;
use crate::crypto::tokens::Principal;
use crate::error::{Error, Result};
use crate::groups::{Change, Group, GroupId};
use crate::model::{
    CreateGroupRequest, GroupOut, GroupsOut, InviteRequest, MetaRequest, RoleRequest, UserId,
    VersionedRequest,
};
use crate::storage::{GroupStore, GroupWrite, UserStore};
use crate::validation;

/// Users one request may list: with the creator, 99 index entries and the group item are the
/// 100 items one DynamoDB transaction holds.
pub const MAX_LISTED: usize = 98;

/// Groups per page of `GET /v1/groups`.
pub const PAGE: usize = 100;

/// Tries of a change without `if_version` that keeps losing to concurrent changes: each lost
/// try means another change was written, so ten concurrent changes to one group all succeed.
const ATTEMPTS: u32 = 10;

#[derive(Clone)]
pub struct Groups {
    pub(crate) groups: Arc<dyn GroupStore>,
    pub(crate) users: Arc<dyn UserStore>,
    pub(crate) limiter: Limiter,
    pub(crate) limits: GroupLimits,
    pub(crate) clock: SharedClock,
}

/// The version a change was asked for, if any: a mismatch refuses it instead of retrying.
type IfVersion = Option<u64>;

fn conflict(g: &Group) -> Error {
    Error::VersionConflict(Box::new(
        serde_json::to_value(GroupOut::from(g)).expect("a group serializes"),
    ))
}

impl Groups {
    /// `POST /v1/groups`.
    pub async fn create(&self, who: &Principal, req: CreateGroupRequest) -> Result<GroupOut> {
        let user = who.user_id;
        self.limiter.take(Limit::GroupChanges { user }).await?;
        if req.members.len() > MAX_LISTED {
            return Err(Error::invalid(format!(
                "members must list at most {MAX_LISTED} users"
            )));
        }
        let meta = self.meta(req.meta)?;
        let mut group = Group::create(
            uuid::Uuid::new_v4(),
            user,
            &req.members,
            meta,
            self.limits.max_members,
            self.clock.now_ms(),
        )?;
        group.protocol = req.protocol;
        self.all_exist(&req.members).await?;
        self.groups.create(&group).await?;
        tracing::info!(group_id = %group.id, invited = req.members.len(), "group created");
        Ok(GroupOut::from(&group))
    }

    /// `GET /v1/groups?after=…`.
    pub async fn list(&self, who: &Principal, after: Option<&str>) -> Result<GroupsOut> {
        let user = who.user_id;
        self.limiter.take(Limit::GroupReads { user }).await?;
        let after = after
            .map(|a| {
                uuid::Uuid::parse_str(a).map_err(|_| Error::invalid("after must be a group id"))
            })
            .transpose()?;
        // One more than a page tells whether there is a next one.
        let mut groups = self.groups.of_user(user, after, PAGE as u32 + 1).await?;
        let next = if groups.len() > PAGE {
            groups.truncate(PAGE);
            groups.last().map(|m| m.group_id)
        } else {
            None
        };
        Ok(GroupsOut { groups, next })
    }

    /// `GET /v1/groups/{group_id}`: for users in the roster only.
    pub async fn get(&self, who: &Principal, group_id: GroupId) -> Result<GroupOut> {
        let user = who.user_id;
        self.limiter.take(Limit::GroupReads { user }).await?;
        let group = self.roster_of(user, group_id).await?;
        Ok(GroupOut::from(&group))
    }

    /// `POST /v1/groups/{group_id}/members`.
    pub async fn invite(
        &self,
        who: &Principal,
        group_id: GroupId,
        req: InviteRequest,
    ) -> Result<GroupOut> {
        let by = who.user_id;
        self.limiter.take(Limit::GroupChanges { user: by }).await?;
        if req.user_ids.is_empty() || req.user_ids.len() > MAX_LISTED {
            return Err(Error::invalid(format!(
                "user_ids must list 1 to {MAX_LISTED} users"
            )));
        }
        let (max, now) = (self.limits.max_members, self.clock.now_ms());
        self.change(by, group_id, req.if_version, true, |g| {
            g.invite(by, &req.user_ids, max, now)
        })
        .await
    }

    /// `POST /v1/groups/{group_id}/join`.
    pub async fn join(
        &self,
        who: &Principal,
        group_id: GroupId,
        req: VersionedRequest,
    ) -> Result<GroupOut> {
        let user = who.user_id;
        self.limiter.take(Limit::GroupChanges { user }).await?;
        let now = self.clock.now_ms();
        self.change(user, group_id, req.if_version, false, |g| g.join(user, now))
            .await
    }

    /// `DELETE /v1/groups/{group_id}/members/{user_id}?if_version=…`.
    pub async fn remove(
        &self,
        who: &Principal,
        group_id: GroupId,
        target: UserId,
        if_version: Option<&str>,
    ) -> Result<GroupOut> {
        let by = who.user_id;
        self.limiter.take(Limit::GroupChanges { user: by }).await?;
        let if_version = if_version
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|_| Error::invalid("if_version must be a number"))
            })
            .transpose()?;
        self.change(by, group_id, if_version, false, |g| g.remove(by, target))
            .await
    }

    /// `PATCH /v1/groups/{group_id}/members/{user_id}`.
    pub async fn set_role(
        &self,
        who: &Principal,
        group_id: GroupId,
        target: UserId,
        req: RoleRequest,
    ) -> Result<GroupOut> {
        let by = who.user_id;
        self.limiter.take(Limit::GroupChanges { user: by }).await?;
        let role = req.role;
        self.change(by, group_id, req.if_version, false, |g| {
            g.set_role(by, target, role)
        })
        .await
    }

    /// `PUT /v1/groups/{group_id}/meta`.
    pub async fn set_meta(
        &self,
        who: &Principal,
        group_id: GroupId,
        req: MetaRequest,
    ) -> Result<GroupOut> {
        let by = who.user_id;
        self.limiter.take(Limit::GroupChanges { user: by }).await?;
        let meta = self.meta(req.meta)?;
        self.change(by, group_id, req.if_version, false, |g| {
            g.set_meta(by, meta.clone())
        })
        .await
    }

    /// Removes the user from every group they are in or invited to, as if they left each
    /// (account deletion: an admin's group gets a new one, an emptied group goes). No limit is
    /// charged: the account is going whatever its budget.
    pub async fn leave_all(&self, user: UserId) -> Result<()> {
        let mut after = None;
        loop {
            let page = self.groups.of_user(user, after, PAGE as u32).await?;
            for m in &page {
                match self
                    .change(user, m.group_id, None, false, |g| g.remove(user, user))
                    .await
                {
                    // Gone meanwhile (or an index entry left by a deletion cut short).
                    Ok(_) | Err(Error::GroupNotFound) => {}
                    Err(e) => return Err(e),
                }
            }
            match page.last() {
                Some(last) if page.len() == PAGE => after = Some(last.group_id),
                _ => return Ok(()),
            }
        }
    }

    /// The group, if `user` is in its roster: to anyone else it does not exist.
    async fn roster_of(&self, user: UserId, group_id: GroupId) -> Result<Group> {
        match self.groups.get(group_id).await? {
            Some(g) if g.entry(user).is_some() => Ok(g),
            _ => Err(Error::GroupNotFound),
        }
    }

    /// Reads the group, applies `apply` and writes the result at the version read. With
    /// `if_version`, a group at another version (read, or found by the write) refuses the change
    /// with the current group; without, a lost race reads again and retries. With
    /// `new_users_exist`, the users a change adds must have accounts.
    async fn change(
        &self,
        by: UserId,
        group_id: GroupId,
        if_version: IfVersion,
        new_users_exist: bool,
        apply: impl Fn(&mut Group) -> Result<Change>,
    ) -> Result<GroupOut> {
        let mut checked: HashSet<UserId> = HashSet::new();
        let mut read = self.roster_of(by, group_id).await?;
        for attempt in 0..ATTEMPTS {
            if if_version.is_some_and(|v| v != read.version) {
                return Err(conflict(&read));
            }
            let expected = read.version;
            let mut next = read.clone();
            let change = apply(&mut next)?;
            let written = match &change {
                Change::None => return Ok(GroupOut::from(&next)),
                Change::Replace { upserted, dropped } => {
                    if new_users_exist {
                        let unchecked: Vec<UserId> = upserted
                            .iter()
                            .filter(|u| !checked.contains(u))
                            .copied()
                            .collect();
                        self.all_exist(&unchecked).await?;
                        checked.extend(unchecked);
                    }
                    self.groups
                        .replace(&next, expected, upserted, dropped)
                        .await?
                }
                Change::Delete { dropped } => {
                    self.groups.delete(group_id, expected, dropped).await?
                }
            };
            match written {
                GroupWrite::Written => {
                    if let Change::Delete { .. } = change {
                        tracing::info!(%group_id, "group deleted: no member left");
                    }
                    return Ok(GroupOut::from(&next));
                }
                GroupWrite::Moved(Some(now)) if now.entry(by).is_some() => {
                    read = now;
                    if if_version.is_none() {
                        backoff(attempt).await;
                    }
                }
                GroupWrite::Moved(_) => return Err(Error::GroupNotFound),
            }
        }
        Err(Error::Unavailable(format!(
            "group {group_id}: {ATTEMPTS} tries lost to concurrent changes"
        )))
    }

    /// Every user has an account (else `user_not_found`), looked up concurrently.
    async fn all_exist(&self, users: &[UserId]) -> Result<()> {
        let found = try_join_all(users.iter().map(|u| self.users.exists(*u))).await?;
        if found.iter().all(|f| *f) {
            Ok(())
        } else {
            Err(Error::UserNotFound)
        }
    }

    /// A `meta` blob as sent: standard base64 of at most `GROUP_META_MAX_BYTES`.
    fn meta(&self, meta: Option<String>) -> Result<Option<String>> {
        let Some(meta) = meta else { return Ok(None) };
        let max = self.limits.meta_max_bytes;
        if validation::base64("meta", &meta)?.len() > max {
            return Err(Error::invalid(format!(
                "meta must be at most {max} bytes (GROUP_META_MAX_BYTES)"
            )));
        }
        Ok(Some(meta))
    }
}

/// A short random pause before a retry, so changes that keep colliding spread out.
async fn backoff(attempt: u32) {
    let most = 5u64 << attempt.min(5);
    let pause = rand::thread_rng().gen_range(0..=most);
    tokio::time::sleep(Duration::from_millis(pause)).await;
}
