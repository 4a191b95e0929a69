//! Wire shapes of `GET /v1/account/export` and `PATCH /v1/users/me` (docs/api.md §5.34–§5.35).
//! An export shows what the relay stores about the caller, never a secret: no token, refresh
//! hash, password hash, key material other than public keys' ids, message body or sender.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::groups::{MemberState, Role};
use crate::model::{DeviceId, DeviceOut};

/// `PATCH /v1/users/me`: the new username (the rules of registration).
#[derive(Debug, Deserialize, ToSchema)]
pub struct RenameRequest {
    pub username: String,
}

/// `GET /v1/account/export`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AccountExport {
    /// When the export was made, Unix seconds.
    pub exported_at: u64,
    pub account: ExportAccount,
    /// Every device of the account, sorted by device id.
    pub devices: Vec<DeviceOut>,
    /// Registration ids of devices removed from the account, kept per device id so a new
    /// device under that id cannot reuse them.
    pub retired_registration_ids: Vec<ExportRetired>,
    /// Unexpired sessions, ordered by session id; at most `EXPORT_MAX_SESSIONS`.
    pub sessions: Vec<ExportSession>,
    /// More sessions exist than the export lists.
    pub sessions_truncated: bool,
    /// Each device's public-key state: ids and counts only.
    pub keys: Vec<ExportKeys>,
    /// Each device's stored envelopes, in counts and times only.
    pub inbox: Vec<ExportInbox>,
    /// The uploads the caller was given URLs for whose objects may still live, oldest first;
    /// at most `MAX_LIVE_UPLOADS` (the most a user can have).
    pub attachments: Vec<ExportAttachment>,
    /// More uploads exist than the export lists.
    pub attachments_truncated: bool,
    /// The groups the user is in or invited to, ordered by group id; at most
    /// `EXPORT_MAX_GROUPS`. A group's name and settings are the clients' ciphertext: not shown.
    pub groups: Vec<ExportGroup>,
    /// More groups exist than the export lists.
    pub groups_truncated: bool,
    /// Whom the user shows their presence to; null where presence is not served.
    pub presence: Option<ExportPresence>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ExportAccount {
    #[schema(value_type = String, format = Uuid)]
    pub user_id: Uuid,
    pub username: String,
    /// Unix seconds.
    pub created_at: u64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ExportRetired {
    pub device_id: DeviceId,
    /// Oldest first.
    pub registration_ids: Vec<u32>,
}

/// A session: its id (in the access token's `sid` claim, not a secret), never a token.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ExportSession {
    #[schema(value_type = String, format = Uuid)]
    pub session_id: Uuid,
    pub device_id: DeviceId,
    /// When it started (log in or link), Unix seconds; null for a session from before this
    /// was kept.
    pub created_at: Option<u64>,
    /// When its refresh token was last rotated, Unix seconds; null if never.
    pub last_refreshed_at: Option<u64>,
    /// When its refresh token stops working, Unix seconds.
    pub expires_at: u64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ExportKeyIds {
    pub count: u64,
    /// Ascending.
    pub ids: Vec<u32>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ExportKeys {
    pub device_id: DeviceId,
    /// Null when the device has no key profile (gone meanwhile).
    pub signed_prekey_id: Option<u32>,
    pub kyber_last_resort_prekey_id: Option<u32>,
    pub one_time_prekeys: ExportKeyIds,
    pub kyber_one_time_prekeys: ExportKeyIds,
    /// MLS KeyPackages stored (the last-resort one not counted).
    pub mls_key_packages: u32,
    pub mls_last_resort_key_package: bool,
}

/// A device's inbox. Times are Unix milliseconds, as an envelope's `sent_at`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ExportInbox {
    pub device_id: DeviceId,
    /// Envelopes waiting.
    pub queued: u64,
    /// Their bytes as stored (envelope JSON included).
    pub bytes: u64,
    /// Envelopes handed to a connection and not yet settled or acknowledged.
    pub in_flight: u64,
    pub in_flight_bytes: u64,
    /// `sent_at` of the oldest waiting envelope (null: empty, or an entry pointing at an
    /// envelope stored in a key of its own: a group send's, or a disappearing message's).
    pub oldest_sent_at: Option<u64>,
    pub oldest_expires_at: Option<u64>,
    pub newest_sent_at: Option<u64>,
    pub newest_expires_at: Option<u64>,
}

/// An upload URL handed out to the account (docs/api.md §5.17), whether or not anything was
/// uploaded with it. Times are Unix seconds.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ExportAttachment {
    pub attachment_id: String,
    /// The size the upload was signed for, in bytes.
    pub size: u64,
    pub created_at: u64,
    /// When object storage deletes the object (and the relay forgets the upload).
    pub expires_at: u64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ExportGroup {
    #[schema(value_type = String, format = Uuid)]
    pub group_id: Uuid,
    pub role: Role,
    pub state: MemberState,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ExportPresence {
    /// The users the caller shows their presence to, sorted.
    #[schema(value_type = Vec<String>)]
    pub shares: Vec<Uuid>,
    /// Whether they see when the caller was last online.
    pub last_seen: bool,
}
