//! An MLS group's Delivery Service: the relay tracks each MLS group as an external observer and
//! accepts exactly one Commit per epoch, only one the members would accept too (it verifies
//! against the tracked state) and only in step with the roster (the users it adds and removes,
//! all their devices). The epoch, the tree's devices and the roster change in one conditional
//! write; then the Commit goes to the group's other devices and the Welcome to the devices whose
//! KeyPackages it names, never before its Commit won.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use uuid::Uuid;

use super::groups::Groups;
use super::relay::Relay;
use super::Limit;
use crate::crypto::tokens::Principal;
use crate::error::{Error, Result, UserDevices};
use crate::groups::{Change, Group, GroupId, MemberState, MlsEpoch, Protocol};
use crate::mls::{self, Applied};
use crate::model::{
    CommitOut, CommitRequest, DeviceAddress, DeviceId, GroupInfoOut, GroupOut, MlsGroupOut,
    MlsInitRequest, UserId,
};
use crate::storage::{GroupWrite, KeyPackageStore, MlsBlobs, MlsLogEntry};
use crate::validation;

/// Tries of a commit that keeps losing to roster changes at the same epoch (each lost try
/// means another change was written).
const ATTEMPTS: u32 = 10;

/// Users one commit may add and remove together: each is an index item in the commit's
/// transaction, beside the group item and up to a dozen chunks of state, GroupInfo, Commit,
/// Welcome and tree (DynamoDB holds 100 items in one).
pub const MAX_COMMIT_USERS: usize = 80;

#[derive(Clone)]
pub struct MlsGroups {
    pub(crate) groups: Groups,
    pub(crate) key_packages: Arc<dyn KeyPackageStore>,
    /// Hands Commits and Welcomes to devices; None where no WebSocket pusher is configured
    /// (then commits are refused as unavailable rather than accepted and never delivered).
    pub(crate) relay: Option<Relay>,
}

impl MlsGroups {
    /// `POST /v1/groups/{group_id}/mls/init`: the group's first MLS state, from a GroupInfo of
    /// epoch 0 whose tree holds only the calling admin's devices. On a group that has one
    /// already it starts over (a new generation), for members who lost sync: the other members
    /// are then added again by Commits.
    pub async fn init(
        &self,
        who: &Principal,
        group_id: GroupId,
        req: MlsInitRequest,
    ) -> Result<MlsGroupOut> {
        let by = who.user_id;
        self.groups
            .limiter
            .take(Limit::GroupChanges { user: by })
            .await?;
        let group_info = validation::base64("group_info", &req.group_info)?;
        let tree = req
            .ratchet_tree
            .as_deref()
            .map(|t| validation::base64("ratchet_tree", t))
            .transpose()?;
        // Who may start it is settled before any MLS work is done.
        self.mls_group(by, group_id).await?.require_admin(by)?;
        let info = group_info.clone();
        let tracked =
            blocking(move || mls::observe(group_id, &group_info, tree.as_deref())).await?;
        if tracked.epoch != 0 {
            return Err(Error::InvalidCommit(
                "a group starts from a GroupInfo of epoch 0".into(),
            ));
        }
        let caller = DeviceAddress::new(by, who.device_id);
        if !tracked.devices.contains(&caller) || tracked.devices.iter().any(|d| d.user_id != by) {
            return Err(Error::InvalidCommit(
                "the first tree holds the calling device and only its account's devices".into(),
            ));
        }
        for _ in 0..ATTEMPTS {
            let read = self.mls_group(by, group_id).await?;
            read.require_admin(by)?;
            let mut next = read.clone();
            next.version += 1;
            let generation = read.mls.as_ref().map_or(0, |m| m.generation + 1);
            for m in &mut next.members {
                m.mls_devices = devices_of(&tracked.devices, m.user_id);
            }
            let blobs = MlsBlobs {
                state: tracked.state.clone(),
                group_info: info.clone(),
                log: None,
            };
            next.mls = Some(blobs.at(tracked.epoch, generation));
            match self
                .groups
                .groups
                .replace_mls(&next, read.version, &[], &[], &blobs, read.mls.as_ref())
                .await?
            {
                GroupWrite::Written => {
                    tracing::info!(generation, "mls group started");
                    return Ok(MlsGroupOut {
                        epoch: tracked.epoch,
                        group: GroupOut::from(&next),
                    });
                }
                GroupWrite::Moved(_) => continue,
            }
        }
        Err(lost_races(group_id))
    }

    /// `POST /v1/groups/{group_id}/mls/commits`.
    pub async fn commit(
        &self,
        who: &Principal,
        group_id: GroupId,
        req: CommitRequest,
    ) -> Result<MlsGroupOut> {
        let by = who.user_id;
        self.groups
            .limiter
            .take(Limit::GroupChanges { user: by })
            .await?;
        let relay = self
            .relay
            .as_ref()
            .ok_or_else(|| Error::unavailable("mls commits", "no WebSocket pusher configured"))?;
        let commit = validation::base64("commit", &req.commit)?;
        let welcome = req
            .welcome
            .as_deref()
            .map(|w| validation::base64("welcome", w))
            .transpose()?;
        let group_info = validation::base64("group_info", &req.group_info)?;
        let adds: BTreeSet<UserId> = req.adds.iter().copied().collect();
        let removes: BTreeSet<UserId> = req.removes.iter().copied().collect();
        if adds.len() + removes.len() > MAX_COMMIT_USERS {
            return Err(Error::invalid(format!(
                "adds and removes must list at most {MAX_COMMIT_USERS} users together"
            )));
        }
        if adds.iter().any(|u| removes.contains(u)) {
            return Err(Error::invalid("a user is in both adds and removes"));
        }
        let caller = DeviceAddress::new(by, who.device_id);
        let welcome_refs = match &welcome {
            Some(w) => mls::welcome_refs(w)?,
            None => Vec::new(),
        };

        for _ in 0..ATTEMPTS {
            let read = self.mls_group(by, group_id).await?;
            if !read.is_member(by) {
                return Err(Error::NotAMember);
            }
            let at = read.mls.clone().ok_or_else(|| {
                Error::InvalidCommit("the group has no MLS state yet: init it first".into())
            })?;
            // A Commit of another epoch is refused before the state is read.
            let made_at = mls::commit_epoch(group_id, &commit)?;
            if made_at != at.epoch {
                return Err(Error::StaleEpoch { current: at.epoch });
            }
            let Some(blobs) = self.blobs_at(group_id, &at).await? else {
                continue;
            };
            let (commit_bytes, info) = (commit.clone(), group_info.clone());
            let applied = blocking(move || {
                let applied = mls::apply_commit(&blobs.state, group_id, &commit_bytes)?;
                mls::check_group_info(&applied.tracked, group_id, &info)?;
                Ok(applied)
            })
            .await?;
            if applied.sender != caller {
                return Err(Error::InvalidCommit(
                    "the commit's sender is not the calling device".into(),
                ));
            }
            let (next, upserted, dropped) = self.roster_after(&read, by, &adds, &removes)?;
            self.check_devices(&read, &applied, &adds, &removes).await?;
            let welcomed = self.welcomed(&welcome_refs, &applied).await?;
            if welcome.is_some() && welcomed.is_empty() {
                return Err(Error::InvalidCommit(
                    "the welcome names no KeyPackage handed out for a device the commit adds"
                        .into(),
                ));
            }
            let mut next = next;
            for m in &mut next.members {
                m.mls_devices = devices_of(&applied.tracked.devices, m.user_id);
            }
            // A device the Welcome is for joins with the tree of the epoch it makes.
            let ratchet_tree = match &welcome {
                Some(_) => {
                    let state = applied.tracked.state.clone();
                    Some(blocking(move || mls::export_tree(&state)).await?)
                }
                None => None,
            };
            let blobs = MlsBlobs {
                state: applied.tracked.state.clone(),
                group_info: group_info.clone(),
                log: Some(MlsLogEntry {
                    commit: commit.clone(),
                    welcome: welcome.clone(),
                    ratchet_tree,
                    welcomed: welcomed.clone(),
                }),
            };
            next.mls = Some(blobs.at(applied.tracked.epoch, at.generation));
            match self
                .groups
                .groups
                .replace_mls(&next, read.version, &upserted, &dropped, &blobs, Some(&at))
                .await?
            {
                GroupWrite::Written => {
                    tracing::info!(epoch = applied.tracked.epoch, "mls commit accepted");
                    self.notify(relay, caller, &next, at.epoch, &applied, &welcomed)
                        .await;
                    return Ok(MlsGroupOut {
                        epoch: applied.tracked.epoch,
                        group: GroupOut::from(&next),
                    });
                }
                GroupWrite::Moved(Some(now)) => {
                    let current = now.mls.as_ref().map_or(0, |m| m.epoch);
                    if current != at.epoch
                        || now.mls.as_ref().map(|m| m.generation) != Some(at.generation)
                    {
                        return Err(Error::StaleEpoch { current });
                    }
                }
                GroupWrite::Moved(None) => return Err(Error::GroupNotFound),
            }
        }
        Err(lost_races(group_id))
    }

    /// `GET /v1/groups/{group_id}/mls/group_info`: for joined members.
    pub async fn group_info(&self, who: &Principal, group_id: GroupId) -> Result<GroupInfoOut> {
        let user = who.user_id;
        self.groups.limiter.take(Limit::GroupReads { user }).await?;
        let mut read = None;
        for _ in 0..ATTEMPTS {
            let group = self.mls_group(user, group_id).await?;
            if !group.is_member(user) {
                return Err(Error::NotAMember);
            }
            let at = group.mls.clone().ok_or_else(|| {
                Error::InvalidCommit("the group has no MLS state yet: init it first".into())
            })?;
            if let Some(blobs) = self.blobs_at(group_id, &at).await? {
                read = Some((at, blobs));
                break;
            }
        }
        let (at, blobs) = read.ok_or_else(|| lost_races(group_id))?;
        let tree = blocking(move || mls::export_tree(&blobs.state).map(|t| (t, blobs))).await?;
        let (tree, blobs) = tree;
        Ok(GroupInfoOut {
            epoch: at.epoch,
            group_info: validation::encode(&blobs.group_info),
            ratchet_tree: validation::encode(&tree),
        })
    }

    /// `GET /v1/groups/{group_id}/mls/commits/{epoch}`: the Commit accepted at `epoch` of the
    /// current generation, for users in the roster; its Welcome and the tree to join with, for
    /// the devices the Welcome is for.
    pub async fn get_commit(
        &self,
        who: &Principal,
        group_id: GroupId,
        epoch: u64,
    ) -> Result<CommitOut> {
        let user = who.user_id;
        self.groups.limiter.take(Limit::GroupReads { user }).await?;
        let group = self.mls_group(user, group_id).await?;
        let generation = group.mls.as_ref().map_or(0, |m| m.generation);
        let entry = self
            .groups
            .groups
            .mls_log(group_id, generation, epoch)
            .await?
            .ok_or_else(|| Error::invalid("no commit of the group was accepted at that epoch"))?;
        let caller = DeviceAddress::new(user, who.device_id);
        let welcomed = entry.welcomed.contains(&caller);
        Ok(CommitOut {
            epoch,
            commit: validation::encode(&entry.commit),
            welcome: entry
                .welcome
                .filter(|_| welcomed)
                .map(|w| validation::encode(&w)),
            ratchet_tree: entry
                .ratchet_tree
                .filter(|_| welcomed)
                .map(|t| validation::encode(&t)),
        })
    }

    /// The MLS state of epoch `at`; None when a Commit accepted since `at` was read has
    /// replaced it (the write that moves the epoch deletes the previous epoch's chunks): the
    /// caller reads the group again rather than failing a request that merely raced a commit.
    async fn blobs_at(&self, group_id: GroupId, at: &MlsEpoch) -> Result<Option<MlsBlobs>> {
        if let Some(blobs) = self.groups.groups.mls_blobs(group_id, at).await? {
            return Ok(Some(blobs));
        }
        let now = self.groups.groups.get(group_id).await?;
        if now.and_then(|g| g.mls).as_ref() == Some(at) {
            return Err(Error::Internal("an MLS group without its state".into()));
        }
        Ok(None)
    }

    /// The group if `user` is in its roster and it runs MLS.
    async fn mls_group(&self, user: UserId, group_id: GroupId) -> Result<Group> {
        let group = match self.groups.groups.get(group_id).await? {
            Some(g) if g.entry(user).is_some() => g,
            _ => return Err(Error::GroupNotFound),
        };
        if group.protocol != Protocol::Mls {
            return Err(Error::WrongProtocol);
        }
        Ok(group)
    }

    /// The roster after the commit: `adds` join (invitees become members; members stay), and
    /// `removes` leave (an admin's right). Adding others is an admin's right too; a member may
    /// add only their own new devices.
    fn roster_after(
        &self,
        read: &Group,
        by: UserId,
        adds: &BTreeSet<UserId>,
        removes: &BTreeSet<UserId>,
    ) -> Result<(Group, Vec<UserId>, Vec<UserId>)> {
        if adds.iter().chain(removes).any(|&u| u != by) {
            read.require_admin(by)?;
        }
        if removes.contains(&by) {
            return Err(Error::invalid(
                "a device cannot commit its own removal: leave with DELETE …/members/{user_id}",
            ));
        }
        let mut next = read.clone();
        let now = self.groups.clock.now_ms();
        let (mut upserted, mut dropped) = (BTreeSet::new(), BTreeSet::new());
        let mut merge = |change: Change| match change {
            Change::Replace {
                upserted: u,
                dropped: d,
            } => {
                upserted.extend(u);
                dropped.extend(d);
            }
            Change::None | Change::Delete { .. } => {}
        };
        for &u in adds {
            match next.entry(u).map(|m| m.state) {
                Some(MemberState::Invited) => {
                    let mut joined = next.clone();
                    merge(joined.join(u, now)?);
                    next = joined;
                }
                Some(MemberState::Member) => {}
                None => {
                    return Err(Error::invalid(
                        "adds must name users in the roster: invite them first",
                    ))
                }
            }
        }
        for &u in removes {
            if !next.is_member(u) {
                return Err(Error::invalid("removes must name joined members"));
            }
            merge(next.remove(by, u)?);
        }
        // One version step for the whole request, whatever the domain methods counted.
        next.version = read.version + 1;
        let upserted: Vec<UserId> = upserted.difference(&dropped).copied().collect();
        Ok((next, upserted, dropped.into_iter().collect()))
    }

    /// The commit adds all the current devices of each user in `adds`, removes every device of
    /// each user in `removes` and of users no longer joined, and otherwise only removes devices
    /// their accounts no longer have. Every difference comes back in one list.
    async fn check_devices(
        &self,
        read: &Group,
        applied: &Applied,
        adds: &BTreeSet<UserId>,
        removes: &BTreeSet<UserId>,
    ) -> Result<()> {
        let after = &applied.tracked.devices;
        let before: BTreeSet<DeviceAddress> = after
            .difference(&applied.added)
            .chain(&applied.removed)
            .copied()
            .collect();
        let before = &before;
        let touched: BTreeSet<UserId> = adds
            .iter()
            .chain(removes)
            .copied()
            .chain(applied.added.iter().map(|d| d.user_id))
            .chain(applied.removed.iter().map(|d| d.user_id))
            .chain(
                before
                    .iter()
                    .filter(|d| !read.is_member(d.user_id))
                    .map(|d| d.user_id),
            )
            .collect();
        let mut mismatched = Vec::new();
        for user in touched {
            let has_before = devices_of(before, user);
            let has_after = devices_of(after, user);
            let (missing, extra): (Vec<DeviceId>, Vec<DeviceId>) = if adds.contains(&user) {
                let current = self.current_devices(user).await?;
                (without(&current, &has_after), without(&has_after, &current))
            } else if removes.contains(&user) || !read.is_member(user) {
                (Vec::new(), has_after)
            } else {
                let current = self.current_devices(user).await?;
                let added = without(&has_after, &has_before);
                // Removing a device the account still has is not this commit's to do.
                let dropped_linked: Vec<DeviceId> = without(&has_before, &has_after)
                    .into_iter()
                    .filter(|d| current.contains(d))
                    .collect();
                (dropped_linked, added)
            };
            if !missing.is_empty() || !extra.is_empty() {
                mismatched.push(UserDevices {
                    user_id: user,
                    missing,
                    extra,
                    stale: Vec::new(),
                });
            }
        }
        if mismatched.is_empty() {
            Ok(())
        } else {
            Err(Error::MlsClientMismatch(mismatched))
        }
    }

    async fn current_devices(&self, user: UserId) -> Result<Vec<DeviceId>> {
        let list = self.groups.users.devices(user).await?;
        Ok(list
            .map(|l| l.devices.iter().map(|d| d.device_id).collect())
            .unwrap_or_default())
    }

    /// Tells every other tree device of a joined member, and each device the Welcome is for,
    /// that a Commit was accepted at `epoch` (they fetch it with `GET …/mls/commits/{epoch}`).
    /// The commit is accepted whatever happens here: a failure is logged, and a device that
    /// missed the notice finds the commit by its epoch.
    async fn notify(
        &self,
        relay: &Relay,
        from: DeviceAddress,
        group: &Group,
        epoch: u64,
        applied: &Applied,
        welcomed: &[DeviceAddress],
    ) {
        let devices: BTreeMap<UserId, Vec<DeviceId>> = applied
            .tracked
            .devices
            .iter()
            .filter(|d| **d != from && group.is_member(d.user_id))
            .filter(|d| !applied.added.contains(d) || welcomed.contains(d))
            .chain(welcomed)
            .fold(BTreeMap::new(), |mut map, d| {
                let list: &mut Vec<DeviceId> = map.entry(d.user_id).or_default();
                if !list.contains(&d.device_id) {
                    list.push(d.device_id);
                }
                map
            });
        if let Err(e) = relay.notify_commit(from, group.id, epoch, &devices).await {
            e.log();
        }
    }

    /// The devices a Welcome is for: those its KeyPackages were handed out for, among the
    /// devices the Commit adds.
    async fn welcomed(&self, refs: &[String], applied: &Applied) -> Result<Vec<DeviceAddress>> {
        if refs.is_empty() {
            return Ok(Vec::new());
        }
        let handed = self.key_packages.handed_out(refs).await?;
        Ok(handed
            .into_iter()
            .flatten()
            .filter(|d| applied.added.contains(d))
            .collect())
    }
}

/// The device ids of `user` among `devices`.
fn devices_of(devices: &BTreeSet<DeviceAddress>, user: UserId) -> Vec<DeviceId> {
    devices
        .iter()
        .filter(|d| d.user_id == user)
        .map(|d| d.device_id)
        .collect()
}

/// The ids in `a` that are not in `b`.
fn without(a: &[DeviceId], b: &[DeviceId]) -> Vec<DeviceId> {
    a.iter().copied().filter(|d| !b.contains(d)).collect()
}

fn lost_races(group_id: Uuid) -> Error {
    Error::Unavailable(format!(
        "group {group_id}: {ATTEMPTS} tries lost to concurrent changes"
    ))
}

/// Runs MLS processing (signatures, tree hashes: milliseconds at 1,500 members) off the async
/// workers.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Internal(format!("mls task: {e}")))?
}
