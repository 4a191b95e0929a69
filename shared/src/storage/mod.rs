//! The narrow traits the domain depends on, and their adapters.

pub mod apigateway;
pub mod aws;
pub mod dynamodb;
pub mod redis;

use async_trait::async_trait;
use uuid::Uuid;

use crate::config::Bucket;
use crate::error::Result;
use crate::model::{
    Bundle, Credentials, KeyCounts, KeyUpload, NewAccount, Profile, UserId, UserOut,
};

#[async_trait]
pub trait UserStore: Send + Sync {
    /// Stores the account and its first keys. The username claim, the user record and the
    /// profile are written in one transaction, so a taken name leaves nothing behind.
    async fn create(&self, account: &NewAccount) -> Result<()>;
    async fn credentials(&self, username: &str) -> Result<Option<Credentials>>;
    async fn find_by_name(&self, username: &str) -> Result<Option<UserOut>>;
    async fn exists(&self, user_id: UserId) -> Result<bool>;
    /// Removes the account, its keys and its sessions.
    async fn delete(&self, user_id: UserId) -> Result<()>;
}

#[async_trait]
pub trait KeyStore: Send + Sync {
    async fn profile(&self, user_id: UserId) -> Result<Option<Profile>>;
    async fn store(&self, user_id: UserId, upload: &KeyUpload) -> Result<()>;
    async fn counts(&self, user_id: UserId) -> Result<KeyCounts>;
    /// Takes one EC one-time prekey (and a Kyber one-time prekey when one is left); two
    /// concurrent calls never get the same key. `UserNotFound` or `PrekeysExhausted` otherwise.
    async fn take_bundle(&self, user_id: UserId) -> Result<Bundle>;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub refresh_hash: String,
    pub expires_at: u64,
}

#[async_trait]
pub trait SessionStore: Send + Sync {
    async fn create(&self, user_id: UserId, session_id: Uuid, record: &SessionRecord)
        -> Result<()>;
    async fn get(&self, user_id: UserId, session_id: Uuid) -> Result<Option<SessionRecord>>;
    /// Replaces the refresh hash only if it still is `old_hash`; false when it was not.
    async fn rotate(
        &self,
        user_id: UserId,
        session_id: Uuid,
        old_hash: &str,
        next: &SessionRecord,
    ) -> Result<bool>;
    async fn delete(&self, user_id: UserId, session_id: Uuid) -> Result<()>;
    /// Deletes every session of the user and returns their ids.
    async fn delete_all(&self, user_id: UserId) -> Result<Vec<Uuid>>;
}

/// Sessions whose access tokens must stop working before they expire.
#[async_trait]
pub trait Revocations: Send + Sync {
    async fn revoke(&self, session_id: Uuid, until_unix_secs: u64) -> Result<()>;
    async fn is_revoked(&self, session_id: Uuid) -> Result<bool>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateDecision {
    Allowed,
    Limited { retry_after_ms: u64 },
}

#[async_trait]
pub trait RateLimiter: Send + Sync {
    /// Takes `cost` tokens from the bucket named `key`. A cost of 0 only asks whether one is left.
    async fn take(&self, key: &str, bucket: Bucket, cost: u32) -> Result<RateDecision>;
}

/// An envelope as the inbox keeps it: its expiry and its client-facing JSON, kept together so
/// delivery never re-serializes. (How an adapter stores it is the adapter's: Redis in
/// `storage::redis::envelope`.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEnvelope {
    expires_at_ms: u64,
    json: String,
}

impl StoredEnvelope {
    pub fn new(expires_at_ms: u64, json: &str) -> Self {
        Self {
            expires_at_ms,
            json: json.to_string(),
        }
    }

    pub fn expires_at_ms(&self) -> u64 {
        self.expires_at_ms
    }

    pub fn json(&self) -> &str {
        &self.json
    }

    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.expires_at_ms() <= now_ms
    }
}

/// Envelopes taken from an inbox at once: one `fetch` batch, or what a delivery to a connected
/// recipient takes out to push (docs/api.md §6.3, §6.6).
pub const POP_BATCH: usize = 100;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// No inbox marker for the recipient: the caller must check the user store.
    UnknownInbox,
    /// Stored; the recipient has no live connection.
    Queued,
    /// The recipient is connected: these envelopes (the new one included) were taken from the
    /// inbox for the caller to push, to one of `connections`, newest connection first.
    Online {
        connections: Vec<String>,
        envelopes: Vec<StoredEnvelope>,
    },
    /// `online_only` and the recipient is not connected: nothing stored.
    Dropped,
}

/// Per-user message inbox with the connection registry beside it (they share a hash slot).
#[async_trait]
pub trait Inbox: Send + Sync {
    /// Marks the user as having an inbox (at registration).
    async fn open(&self, user_id: UserId) -> Result<()>;
    /// Erases the inbox and the marker (at account deletion).
    async fn close(&self, user_id: UserId) -> Result<()>;
    /// Stores (unless `online_only`) and, when the recipient is connected, takes the waiting
    /// envelopes for immediate push, in one atomic step.
    async fn deliver(
        &self,
        to: UserId,
        envelope: &StoredEnvelope,
        online_only: bool,
        now_ms: u64,
    ) -> Result<Delivery>;
    /// Takes up to `max` envelopes from the head (oldest first).
    async fn pop(&self, user_id: UserId, max: usize) -> Result<Vec<StoredEnvelope>>;
    /// Puts envelopes back at the head, in their original order.
    async fn requeue(&self, user_id: UserId, envelopes: &[StoredEnvelope]) -> Result<()>;
    /// Waiting envelopes that have not expired.
    async fn pending(&self, user_id: UserId, now_ms: u64) -> Result<u64>;
}

#[async_trait]
pub trait ConnectionRegistry: Send + Sync {
    async fn register(&self, connection_id: &str, user_id: UserId, now_ms: u64) -> Result<()>;
    /// Forgets the connection; returns whose it was.
    async fn unregister(&self, connection_id: &str) -> Result<Option<UserId>>;
    async fn user_of(&self, connection_id: &str) -> Result<Option<UserId>>;
    /// Forgets a connection found gone while pushing to it.
    async fn remove(&self, user_id: UserId, connection_id: &str) -> Result<()>;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushError {
    /// The connection no longer exists.
    Gone,
    Failed(String),
}

/// Writes a frame to a WebSocket connection: API Gateway's Management API on AWS, the local
/// gateway's sockets locally.
#[async_trait]
pub trait Pusher: Send + Sync {
    async fn push(&self, connection_id: &str, frame: &str) -> std::result::Result<(), PushError>;
}

/// Answers whether the backing stores are reachable.
#[async_trait]
pub trait Health: Send + Sync {
    async fn ping(&self) -> Result<()>;
}
