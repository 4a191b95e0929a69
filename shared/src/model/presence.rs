//! Presence: whom a user lets see when they are online, and what a viewer reads of it.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// Most users one share list names: a connect or a disconnect reads at most this many lists
/// and pushes to the devices of at most this many users.
pub const MAX_PRESENCE_SHARES: usize = 1000;
/// Most users one `GET /v1/presence` asks about.
pub const MAX_PRESENCE_READ: usize = 100;

/// `PUT /v1/presence/shares`: replaces the caller's whole share list.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct PresenceSharesRequest {
    /// The users who may see the caller's presence (when they share theirs back): at most 1,000
    /// distinct user ids. Repeats and the caller's own id are dropped; ids need not name an
    /// existing account.
    #[schema(value_type = Vec<String>, max_items = 1000)]
    pub user_ids: Vec<Uuid>,
    /// Whether they also see when the caller was last online (rounded down to the minute).
    #[serde(default)]
    pub last_seen: bool,
}

/// The caller's share list as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PresenceSharesOut {
    /// Sorted.
    #[schema(value_type = Vec<String>)]
    pub user_ids: Vec<Uuid>,
    pub last_seen: bool,
}

/// One user's presence as a viewer may see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UserPresence {
    #[schema(value_type = String, format = Uuid)]
    pub user_id: Uuid,
    /// At least one of the user's devices has a live WebSocket connection.
    pub online: bool,
    /// Offline users who allow it: when the last connection of the user ended, Unix ms rounded
    /// down to the minute (absent when unknown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<u64>,
}

/// `GET /v1/presence?user_ids=…`: only the users asked about who share their presence with the
/// caller and with whom the caller shares theirs; anyone else is left out, unnamed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PresenceOut {
    pub presence: Vec<UserPresence>,
}

/// `last_seen` as shown: rounded down to the minute, so a viewer learns no finer timing.
pub fn minute_of(ms: u64) -> u64 {
    ms - ms % 60_000
}
