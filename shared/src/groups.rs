//! Groups as the domain keeps them: a roster of members and invitees with their roles, a version
//! every change increments, and an opaque `meta` blob the clients encrypt (the relay never sees
//! a group's name). Pure values: the groups service applies changes to them and the group store
//! writes each change as one conditional write.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::ids::UserId;

pub type GroupId = Uuid;

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
