//! Wire shapes of the MLS routes: the KeyPackage directory and an MLS group's commits and
//! GroupInfo. Every MLS message travels as standard base64 of its TLS encoding (RFC 9420
//! `MLSMessage`).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::GroupOut;

/// `PUT /v1/mls/key_packages`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct KeyPackagesUpload {
    /// At most `MLS_KEY_PACKAGES_PER_UPLOAD` KeyPackages (`MLSMessage`, base64), each handed out
    /// once.
    #[serde(default)]
    pub key_packages: Vec<String>,
    /// Handed out when none of the others is left (and then kept); replaces the one stored.
    #[serde(default)]
    pub last_resort: Option<String>,
}

/// `GET /v1/mls/key_packages/count` (and the answer of an upload).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct KeyPackageCount {
    /// KeyPackages stored, the last-resort one not counted.
    pub count: u32,
    pub last_resort: bool,
}

/// One device's KeyPackage, as `GET /v1/users/{user_id}/mls/key_packages` hands it out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ClaimedKeyPackageOut {
    pub device_id: u32,
    /// `MLSMessage` (KeyPackage), base64.
    pub key_package: String,
    /// The device's last-resort KeyPackage (handed out again to others).
    pub last_resort: bool,
}

/// `GET /v1/users/{user_id}/mls/key_packages`: one KeyPackage per device of the user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct KeyPackagesOut {
    #[schema(value_type = String, format = Uuid)]
    pub user_id: Uuid,
    pub key_packages: Vec<ClaimedKeyPackageOut>,
}

/// `POST /v1/groups/{group_id}/mls/init`: the group's first MLS state (or an admin's reset).
#[derive(Debug, Deserialize, ToSchema)]
pub struct MlsInitRequest {
    /// `MLSMessage` (GroupInfo) of epoch 0, base64: a group of the caller's devices only.
    pub group_info: String,
    /// The ratchet tree (`ExportedTree`), base64, when the GroupInfo does not carry it.
    #[serde(default)]
    pub ratchet_tree: Option<String>,
}

/// `POST /v1/groups/{group_id}/mls/commits`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct CommitRequest {
    /// `MLSMessage` (PublicMessage, a Commit) at the group's current epoch, base64.
    pub commit: String,
    /// `MLSMessage` (Welcome) for the devices the Commit adds, base64.
    #[serde(default)]
    pub welcome: Option<String>,
    /// `MLSMessage` (GroupInfo) of the epoch the Commit makes, base64.
    pub group_info: String,
    /// Users whose devices the Commit adds, all of them: invitees (who become members) or
    /// members (their devices not yet in the group).
    #[serde(default)]
    #[schema(value_type = Vec<String>)]
    pub adds: Vec<Uuid>,
    /// Members whose devices the Commit removes, all of them: they leave the roster.
    #[serde(default)]
    #[schema(value_type = Vec<String>)]
    pub removes: Vec<Uuid>,
}

/// The answer of an accepted commit or init.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MlsGroupOut {
    /// The group's MLS epoch now.
    pub epoch: u64,
    pub group: GroupOut,
}

/// `GET /v1/groups/{group_id}/mls/group_info`: what a device needs to join or rejoin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct GroupInfoOut {
    pub epoch: u64,
    /// `MLSMessage` (GroupInfo) of this epoch as its committer uploaded it, base64.
    pub group_info: String,
    /// The ratchet tree of this epoch as the relay tracks it, base64.
    pub ratchet_tree: String,
}

/// `GET /v1/groups/{group_id}/mls/commits/{epoch}`: the Commit accepted at that epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CommitOut {
    /// The epoch the Commit was made at (the group moved to `epoch + 1`).
    pub epoch: u64,
    /// `MLSMessage` (PublicMessage, the Commit), base64.
    pub commit: String,
    /// `MLSMessage` (Welcome), base64: only for a device the Welcome is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub welcome: Option<String>,
    /// The ratchet tree of epoch `epoch + 1`, base64, to join with: only with `welcome`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ratchet_tree: Option<String>,
}
