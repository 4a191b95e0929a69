//! Groups as the domain keeps them: a roster of members and invitees with their roles, a version
//! every change increments, and an opaque `meta` blob the clients encrypt (the relay never sees
//! a group's name). Pure values: the groups service applies changes to them and the group store
//! writes each change as one conditional write.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::ids::{DeviceId, UserId};

pub type GroupId = Uuid;

/// How a group's messages are encrypted. Signal groups (every group from before MLS) carry one
/// ciphertext per device; MLS groups one ciphertext for the whole group, with the relay tracking
/// the group's epochs as an external observer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    #[default]
    Signal,
    Mls,
}

/// Where an MLS group's tracked state is: its epoch, and how many chunks the state and the
/// GroupInfo of that epoch are stored in (beside the group, too large for its item).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MlsEpoch {
    pub epoch: u64,
    /// A reset (an admin's new init) starts a new generation: its epochs may repeat those of the
    /// one it replaces, and the chunks of the two never share a key.
    pub generation: u32,
    pub state_chunks: u32,
    pub info_chunks: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Invites, removes anyone, changes roles and `meta`.
    Admin,
    Member,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MemberState {
    /// Invited, not joined: sees the group, receives nothing, cannot send.
    Invited,
    /// Joined: sends and receives.
    Member,
}

/// One entry of a roster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Member {
    #[schema(value_type = String, format = Uuid)]
    pub user_id: UserId,
    pub role: Role,
    pub state: MemberState,
    /// When the user joined (for an invitee: was invited), Unix ms: the longest-standing member
    /// is promoted when the last admin leaves.
    pub since: u64,
    /// The member's devices in the MLS tree (always empty in a Signal group). Kept out of the
    /// wire shape: what a roster shows of MLS is for the MLS routes to decide.
    #[serde(skip)]
    pub mls_devices: Vec<DeviceId>,
}

/// A user's entry in the per-user index of groups: what `GET /v1/groups` lists without reading
/// every group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Membership {
    #[schema(value_type = String, format = Uuid)]
    pub group_id: GroupId,
    pub role: Role,
    pub state: MemberState,
}

/// A group as stored: at most `GROUP_MAX_MEMBERS` roster entries (invitees included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub id: GroupId,
    /// Incremented by every change; a change made `if_version` another one is refused.
    pub version: u64,
    /// Opaque, standard base64 as the client sent it; at most `GROUP_META_MAX_BYTES` decoded.
    pub meta: Option<String>,
    /// Unix ms.
    pub created_at: u64,
    /// In the order users entered the roster.
    pub members: Vec<Member>,
    pub protocol: Protocol,
    /// The tracked MLS state; `None` for a Signal group and for an MLS group not yet initialised.
    pub mls: Option<MlsEpoch>,
}

impl Group {
    pub fn entry(&self, user_id: UserId) -> Option<&Member> {
        self.members.iter().find(|m| m.user_id == user_id)
    }

    /// A joined member (not an invitee).
    pub fn is_member(&self, user_id: UserId) -> bool {
        self.entry(user_id)
            .is_some_and(|m| m.state == MemberState::Member)
    }

    /// The joined members, who send and receive.
    pub fn joined(&self) -> impl Iterator<Item = UserId> + '_ {
        self.members
            .iter()
            .filter(|m| m.state == MemberState::Member)
            .map(|m| m.user_id)
    }
}

/// What a roster change asks the store to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The group already is as asked: nothing to write, the version stays.
    None,
    /// Write the group at its new version, the index entries of `upserted` (new, or their role
    /// or state changed) and delete those of `dropped`.
    Replace {
        upserted: Vec<UserId>,
        dropped: Vec<UserId>,
    },
    /// No joined member is left: delete the group and the index entries of `dropped`. The
    /// group value is left at its last version + 1 with no members, as the reply shows it.
    Delete { dropped: Vec<UserId> },
}

impl Group {
    /// A new group at version 1: `creator` its admin member, `invited` its invitees, in that
    /// order. The invitees must be distinct, and not the creator; at most `max_members` users.
    pub fn create(
        id: GroupId,
        creator: UserId,
        invited: &[UserId],
        meta: Option<String>,
        max_members: usize,
        now: u64,
    ) -> Result<Self> {
        if invited.contains(&creator) {
            return Err(Error::invalid("members must not include the creator"));
        }
        let distinct: HashSet<_> = invited.iter().collect();
        if distinct.len() != invited.len() {
            return Err(Error::invalid("members must be distinct"));
        }
        if invited.len() + 1 > max_members {
            return Err(Error::GroupFull);
        }
        let mut members = vec![Member {
            user_id: creator,
            role: Role::Admin,
            state: MemberState::Member,
            since: now,
            mls_devices: vec![],
        }];
        members.extend(invited.iter().map(|&user_id| Member {
            user_id,
            role: Role::Member,
            state: MemberState::Invited,
            since: now,
            mls_devices: vec![],
        }));
        Ok(Self {
            id,
            version: 1,
            meta,
            created_at: now,
            members,
            protocol: Protocol::Signal,
            mls: None,
        })
    }

    /// Every user in the roster, in roster order.
    pub fn user_ids(&self) -> Vec<UserId> {
        self.members.iter().map(|m| m.user_id).collect()
    }

    /// The caller's entry; a user outside the roster learns nothing, not even that the group
    /// exists.
    fn caller(&self, user_id: UserId) -> Result<&Member> {
        self.entry(user_id).ok_or(Error::GroupNotFound)
    }

    /// An admin who has joined: an invitee made admin acts only once they join.
    fn is_admin(m: &Member) -> bool {
        m.role == Role::Admin && m.state == MemberState::Member
    }

    pub(crate) fn require_admin(&self, user_id: UserId) -> Result<()> {
        if Self::is_admin(self.caller(user_id)?) {
            Ok(())
        } else {
            Err(Error::NotAnAdmin)
        }
    }

    fn position(&self, user_id: UserId) -> Result<usize> {
        self.members
            .iter()
            .position(|m| m.user_id == user_id)
            .ok_or(Error::UserNotFound)
    }

    fn changed(&mut self, upserted: Vec<UserId>, dropped: Vec<UserId>) -> Change {
        self.version += 1;
        Change::Replace { upserted, dropped }
    }

    /// An admin invites the users not yet in the roster (those already in it are ignored).
    pub fn invite(
        &mut self,
        by: UserId,
        user_ids: &[UserId],
        max_members: usize,
        now: u64,
    ) -> Result<Change> {
        self.require_admin(by)?;
        let mut new: Vec<UserId> = Vec::new();
        for &u in user_ids {
            if self.entry(u).is_none() && !new.contains(&u) {
                new.push(u);
            }
        }
        if new.is_empty() {
            return Ok(Change::None);
        }
        if self.members.len() + new.len() > max_members {
            return Err(Error::GroupFull);
        }
        self.members.extend(new.iter().map(|&user_id| Member {
            user_id,
            role: Role::Member,
            state: MemberState::Invited,
            since: now,
            mls_devices: vec![],
        }));
        Ok(self.changed(new, vec![]))
    }

    /// An invitee accepts; a member already joined changes nothing.
    pub fn join(&mut self, user_id: UserId, now: u64) -> Result<Change> {
        self.caller(user_id)?;
        let i = self.position(user_id)?;
        if self.members[i].state == MemberState::Member {
            return Ok(Change::None);
        }
        self.members[i].state = MemberState::Member;
        self.members[i].since = now;
        Ok(self.changed(vec![user_id], vec![]))
    }

    /// `by` removes `target`: an admin anyone, anyone themselves (leave, or decline an
    /// invitation). With no joined admin left, the longest-standing joined member becomes one;
    /// with no joined member left, the group goes.
    pub fn remove(&mut self, by: UserId, target: UserId) -> Result<Change> {
        self.caller(by)?;
        if by != target {
            self.require_admin(by)?;
        }
        let i = self.position(target)?;
        self.members.remove(i);
        if !self.members.iter().any(|m| m.state == MemberState::Member) {
            let mut dropped = vec![target];
            dropped.extend(self.members.drain(..).map(|m| m.user_id));
            self.version += 1;
            return Ok(Change::Delete { dropped });
        }
        let mut upserted = vec![];
        if !self.members.iter().any(Self::is_admin) {
            // The smallest `since`; `min_by_key` keeps the first of equals: roster order.
            let heir = self
                .members
                .iter_mut()
                .filter(|m| m.state == MemberState::Member)
                .min_by_key(|m| m.since)
                .expect("a joined member is left");
            heir.role = Role::Admin;
            upserted.push(heir.user_id);
        }
        Ok(self.changed(upserted, vec![target]))
    }

    /// An admin sets `target`'s role; the group keeps at least one joined admin.
    pub fn set_role(&mut self, by: UserId, target: UserId, role: Role) -> Result<Change> {
        self.require_admin(by)?;
        let i = self.position(target)?;
        if self.members[i].role == role {
            return Ok(Change::None);
        }
        self.members[i].role = role;
        if !self.members.iter().any(Self::is_admin) {
            self.members[i].role = Role::Admin;
            return Err(Error::invalid("the group needs an admin"));
        }
        Ok(self.changed(vec![target], vec![]))
    }

    /// An admin replaces the opaque `meta` (validated by the caller: base64, size).
    pub fn set_meta(&mut self, by: UserId, meta: Option<String>) -> Result<Change> {
        self.require_admin(by)?;
        if self.meta == meta {
            return Ok(Change::None);
        }
        self.meta = meta;
        Ok(self.changed(vec![], vec![]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    const MAX: usize = 5;

    fn users(n: usize) -> Vec<UserId> {
        (0..n).map(|_| Uuid::new_v4()).collect()
    }

    /// A group of `admin` and the invitees `invited`, created at time 10.
    fn group(admin: UserId, invited: &[UserId]) -> Group {
        Group::create(Uuid::new_v4(), admin, invited, None, MAX, 10).unwrap()
    }

    fn state(g: &Group, u: UserId) -> Option<(Role, MemberState)> {
        g.entry(u).map(|m| (m.role, m.state))
    }

    #[test]
    fn creation_checks_the_list_and_the_cap() {
        let u = users(5);
        let g = group(u[0], &u[1..3]);
        assert_eq!(g.version, 1);
        assert_eq!((g.protocol, &g.mls), (Protocol::Signal, &None));
        assert!(g.members.iter().all(|m| m.mls_devices.is_empty()));
        assert_eq!(g.user_ids(), u[..3]);
        assert_eq!(state(&g, u[0]), Some((Role::Admin, MemberState::Member)));
        assert_eq!(state(&g, u[1]), Some((Role::Member, MemberState::Invited)));
        let create =
            |invited: &[UserId]| Group::create(Uuid::new_v4(), u[0], invited, None, MAX, 1);
        assert_eq!(create(&u[..2]).unwrap_err().code(), "invalid_request");
        assert_eq!(create(&[u[1], u[1]]).unwrap_err().code(), "invalid_request");
        assert!(create(&u[1..5]).is_ok());
        let more = users(1);
        let six = [&u[1..5], &more[..]].concat();
        assert!(matches!(create(&six), Err(Error::GroupFull)));
    }

    #[test]
    fn admins_invite_up_to_the_cap_and_known_users_are_ignored() {
        let u = users(7);
        let mut g = group(u[0], &u[1..2]);
        assert_eq!(g.invite(u[0], &[u[1]], MAX, 20).unwrap(), Change::None);
        assert_eq!(g.version, 1);
        assert!(matches!(
            g.invite(u[1], &[u[2]], MAX, 20),
            Err(Error::NotAnAdmin)
        ));
        assert!(matches!(
            g.invite(u[6], &[u[2]], MAX, 20),
            Err(Error::GroupNotFound)
        ));
        assert_eq!(
            g.invite(u[0], &[u[1], u[2], u[3], u[2]], MAX, 20).unwrap(),
            Change::Replace {
                upserted: vec![u[2], u[3]],
                dropped: vec![]
            }
        );
        assert_eq!(g.version, 2);
        assert_eq!(g.user_ids(), u[..4]);
        let before = g.clone();
        assert!(matches!(
            g.invite(u[0], &u[4..6], MAX, 30),
            Err(Error::GroupFull)
        ));
        assert_eq!(g, before);
        assert!(g.invite(u[0], &u[4..5], MAX, 30).is_ok());
        assert_eq!(g.members.len(), MAX);
    }

    #[test]
    fn invitees_join_once_and_outsiders_cannot() {
        let u = users(3);
        let mut g = group(u[0], &u[1..2]);
        assert_eq!(
            g.join(u[1], 50).unwrap(),
            Change::Replace {
                upserted: vec![u[1]],
                dropped: vec![]
            }
        );
        assert_eq!(g.entry(u[1]).unwrap().since, 50);
        assert_eq!(state(&g, u[1]), Some((Role::Member, MemberState::Member)));
        assert_eq!(g.join(u[1], 60).unwrap(), Change::None);
        assert_eq!(g.join(u[0], 60).unwrap(), Change::None);
        assert!(matches!(g.join(u[2], 60), Err(Error::GroupNotFound)));
        assert_eq!(g.version, 2);
    }

    #[test]
    fn admins_remove_anyone_and_everyone_removes_themselves() {
        let u = users(5);
        let mut g = group(u[0], &u[1..4]);
        g.join(u[1], 11).unwrap();
        g.join(u[2], 12).unwrap();
        assert!(matches!(g.remove(u[1], u[2]), Err(Error::NotAnAdmin)));
        assert!(matches!(g.remove(u[4], u[4]), Err(Error::GroupNotFound)));
        assert!(matches!(g.remove(u[0], u[4]), Err(Error::UserNotFound)));
        // An invitee declines.
        assert_eq!(
            g.remove(u[3], u[3]).unwrap(),
            Change::Replace {
                upserted: vec![],
                dropped: vec![u[3]]
            }
        );
        assert_eq!(
            g.remove(u[0], u[2]).unwrap(),
            Change::Replace {
                upserted: vec![],
                dropped: vec![u[2]]
            }
        );
        assert_eq!(g.user_ids(), u[..2]);
        assert_eq!(g.version, 5);
    }

    #[test]
    fn the_last_admin_leaving_promotes_the_longest_standing_member() {
        let u = users(5);
        let mut g = group(u[0], &u[1..5]);
        // Joined in the order 3, 1, 2 (4 stays invited); 1 and 2 at the same time.
        g.join(u[3], 20).unwrap();
        g.join(u[1], 30).unwrap();
        g.join(u[2], 30).unwrap();
        assert_eq!(
            g.remove(u[0], u[0]).unwrap(),
            Change::Replace {
                upserted: vec![u[3]],
                dropped: vec![u[0]]
            }
        );
        assert_eq!(state(&g, u[3]), Some((Role::Admin, MemberState::Member)));
        // Between equals, roster order decides.
        g.remove(u[3], u[3]).unwrap();
        assert_eq!(state(&g, u[1]), Some((Role::Admin, MemberState::Member)));
        assert_eq!(state(&g, u[2]), Some((Role::Member, MemberState::Member)));
        // Another admin left: nobody is promoted.
        g.set_role(u[1], u[2], Role::Admin).unwrap();
        assert_eq!(
            g.remove(u[1], u[1]).unwrap(),
            Change::Replace {
                upserted: vec![],
                dropped: vec![u[1]]
            }
        );
    }

    #[test]
    fn the_group_goes_with_its_last_joined_member_and_its_invitees_entries() {
        let u = users(3);
        let mut g = group(u[0], &u[1..3]);
        let version = g.version;
        assert_eq!(
            g.remove(u[0], u[0]).unwrap(),
            Change::Delete {
                dropped: vec![u[0], u[1], u[2]]
            }
        );
        assert!(g.members.is_empty());
        assert_eq!(g.version, version + 1);
    }

    #[test]
    fn roles_change_but_the_group_keeps_an_admin() {
        let u = users(3);
        let mut g = group(u[0], &u[1..3]);
        g.join(u[1], 20).unwrap();
        assert!(matches!(
            g.set_role(u[1], u[1], Role::Admin),
            Err(Error::NotAnAdmin)
        ));
        assert!(matches!(
            g.set_role(u[0], Uuid::new_v4(), Role::Admin),
            Err(Error::UserNotFound)
        ));
        let before = g.clone();
        let err = g.set_role(u[0], u[0], Role::Member).unwrap_err();
        assert_eq!(err.code(), "invalid_request");
        assert_eq!(g, before);
        assert_eq!(g.set_role(u[0], u[0], Role::Admin).unwrap(), Change::None);
        assert_eq!(
            g.set_role(u[0], u[1], Role::Admin).unwrap(),
            Change::Replace {
                upserted: vec![u[1]],
                dropped: vec![]
            }
        );
        // Two admins: either may step down, then the other is the only one.
        g.set_role(u[1], u[0], Role::Member).unwrap();
        assert!(g.set_role(u[1], u[1], Role::Member).is_err());
        // An invited admin does not count: it acts only once joined.
        g.set_role(u[1], u[2], Role::Admin).unwrap();
        assert!(matches!(
            g.invite(u[2], &users(1), MAX, 30),
            Err(Error::NotAnAdmin)
        ));
        assert!(g.set_role(u[1], u[1], Role::Member).is_err());
    }

    #[test]
    fn protocols_have_snake_case_names_and_rosters_keep_their_wire_shape() {
        assert_eq!(serde_json::to_string(&Protocol::Mls).unwrap(), "\"mls\"");
        assert_eq!(
            serde_json::from_str::<Protocol>("\"signal\"").unwrap(),
            Protocol::default()
        );
        let mut m = group(Uuid::new_v4(), &[]).members.remove(0);
        m.mls_devices = vec![1, 2];
        let json = serde_json::to_value(&m).unwrap();
        assert!(json.get("mls_devices").is_none(), "{json}");
    }

    #[test]
    fn admins_set_the_meta() {
        let u = users(2);
        let mut g = group(u[0], &u[1..2]);
        assert!(matches!(
            g.set_meta(u[1], Some("eA==".into())),
            Err(Error::NotAnAdmin)
        ));
        assert_eq!(
            g.set_meta(u[0], Some("eA==".into())).unwrap(),
            Change::Replace {
                upserted: vec![],
                dropped: vec![]
            }
        );
        assert_eq!(g.set_meta(u[0], Some("eA==".into())).unwrap(), Change::None);
        assert_eq!(g.meta.as_deref(), Some("eA=="));
        assert_eq!(g.version, 2);
    }
}
