//! Wire shapes of the group routes (docs/api.md §5.19–§5.26).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::groups::{Group, Member, Membership, Protocol, Role};

/// `POST /v1/groups`: the users to invite (the creator is the group's first admin).
#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateGroupRequest {
    /// 0 to 98 distinct user ids, not the creator's.
    #[schema(value_type = Vec<String>)]
    pub members: Vec<Uuid>,
    /// Opaque standard base64 the clients encrypt (the group's name and settings).
    #[serde(default)]
    pub meta: Option<String>,
    /// `signal` (sender keys over the group form of `send`, the default) or `mls` (RFC 9420:
    /// the relay is the group's Delivery Service).
    #[serde(default)]
    pub protocol: Protocol,
}

/// `POST /v1/groups/{group_id}/members`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct InviteRequest {
    /// 1 to 98 user ids; those already in the roster are ignored.
    #[schema(value_type = Vec<String>)]
    pub user_ids: Vec<Uuid>,
    /// Change only if the group is still at this version.
    #[serde(default)]
    pub if_version: Option<u64>,
}

/// `POST /v1/groups/{group_id}/join` (the body is optional).
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct VersionedRequest {
    /// Change only if the group is still at this version.
    #[serde(default)]
    pub if_version: Option<u64>,
}

/// `PATCH /v1/groups/{group_id}/members/{user_id}`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct RoleRequest {
    pub role: Role,
    /// Change only if the group is still at this version.
    #[serde(default)]
    pub if_version: Option<u64>,
}

/// `PUT /v1/groups/{group_id}/meta`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct MetaRequest {
    /// Standard base64, or null to clear it.
    pub meta: Option<String>,
    /// Change only if the group is still at this version.
    #[serde(default)]
    pub if_version: Option<u64>,
}

/// A group as its members see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct GroupOut {
    #[schema(value_type = String, format = Uuid)]
    pub group_id: Uuid,
    pub version: u64,
    pub meta: Option<String>,
    /// Unix ms.
    pub created_at: u64,
    /// In the order users entered the roster.
    pub members: Vec<Member>,
    pub protocol: Protocol,
    /// An MLS group's epoch (absent until its first state is uploaded, and for Signal groups).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mls_epoch: Option<u64>,
}

impl From<&Group> for GroupOut {
    fn from(g: &Group) -> Self {
        Self {
            group_id: g.id,
            version: g.version,
            meta: g.meta.clone(),
            created_at: g.created_at,
            members: g.members.clone(),
            protocol: g.protocol,
            mls_epoch: g.mls.as_ref().map(|m| m.epoch),
        }
    }
}

/// `GET /v1/groups`: a page of the caller's groups and invitations, ordered by group id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct GroupsOut {
    pub groups: Vec<Membership>,
    /// Pass as `after` for the next page; null on the last.
    #[schema(value_type = Option<String>, format = Uuid)]
    pub next: Option<Uuid>,
}
