//! The narrow traits the domain depends on, and their adapters.

pub mod apigateway;
pub mod aws;
pub mod dynamodb;
pub mod redis;
pub mod s3;

use async_trait::async_trait;
use uuid::Uuid;

use crate::config::Bucket;
use crate::error::Result;
use crate::groups::{Group, GroupId, Membership, MlsEpoch};
use crate::model::{
    Bundle, Credentials, DeviceAddress, DeviceId, DeviceList, KeyCounts, KeyUpload, NewAccount,
    NewDevice, Profile, RetiredRegistrations, UserId, UserOut,
};

#[async_trait]
pub trait UserStore: Send + Sync {
    /// Stores the account and its first keys. The username claim, the user record and the
    /// profile are written in one transaction, so a taken name leaves nothing behind.
    async fn create(&self, account: &NewAccount) -> Result<()>;
    async fn credentials(&self, username: &str) -> Result<Option<Credentials>>;
    async fn find_by_name(&self, username: &str) -> Result<Option<UserOut>>;
    async fn exists(&self, user_id: UserId) -> Result<bool>;
    /// When the account was created (Unix seconds); `None` when it does not exist.
    async fn created_at(&self, user_id: UserId) -> Result<Option<u64>>;
    /// The account's username and creation time (Unix seconds), read strongly consistent;
    /// `None` when it does not exist.
    async fn account(&self, user_id: UserId) -> Result<Option<(String, u64)>>;
    /// Renames the account to `new` (already validated) in one transaction: the new name's
    /// claim (carrying the credentials) written only if nobody holds it (`UsernameTaken`), the
    /// old claim deleted, and the user item changed only while it still has the old name. Once
    /// it commits the old name is free and logins go by the new one. `UserNotFound` when the
    /// account is gone; renaming to the current name changes nothing.
    async fn rename(&self, user_id: UserId, new: &str) -> Result<()>;
    /// Removes the account, the keys of every device and its sessions.
    async fn delete(&self, user_id: UserId) -> Result<()>;
    /// The account's devices; `None` when the account does not exist.
    async fn devices(&self, user_id: UserId) -> Result<Option<DeviceList>>;
    /// The account's devices and the registration ids of those removed from it; `None` when
    /// the account does not exist.
    async fn device_history(
        &self,
        user_id: UserId,
    ) -> Result<Option<(DeviceList, RetiredRegistrations)>>;
    /// Adds a device with its keys under the smallest free id, unless the account has `max`
    /// devices (`TooManyDevices`), a device removed from that id had the new device's
    /// registration id (`RegistrationIdReused`), or the account is gone (`UserNotFound`);
    /// concurrent calls never share an id or pass `max`. Returns the new id and the new list.
    async fn add_device(
        &self,
        user_id: UserId,
        device: &NewDevice,
        max: u32,
    ) -> Result<(DeviceId, DeviceList)>;
    /// Removes a linked device and its keys (`DeviceNotFound` when it is not one), retiring its
    /// registration id under its device id; returns the list left.
    async fn remove_device(&self, user_id: UserId, device_id: DeviceId) -> Result<DeviceList>;
}

/// Keys per device (a bare user id is device 1).
#[async_trait]
pub trait KeyStore: Send + Sync {
    async fn profile(&self, device: DeviceAddress) -> Result<Option<Profile>>;
    async fn store(&self, device: DeviceAddress, upload: &KeyUpload) -> Result<()>;
    async fn counts(&self, device: DeviceAddress) -> Result<KeyCounts>;
    /// The key ids of the device's one-time prekeys, EC and Kyber, each in ascending order
    /// (at most `MAX_ONE_TIME_PREKEYS` of each kind are ever stored).
    async fn one_time_ids(&self, device: DeviceAddress) -> Result<(Vec<u32>, Vec<u32>)>;
    /// Takes one EC one-time prekey (and a Kyber one-time prekey when one is left) of each
    /// device, all or nothing: two concurrent calls never get the same key, and when a device
    /// has no EC one-time prekey left nothing is taken and the answer is `DevicesExhausted`
    /// naming those devices (unless `allow_without_one_time`: then its bundle has none).
    /// `UserNotFound` when a device's profile is gone.
    async fn take_bundles(
        &self,
        user_id: UserId,
        devices: &[DeviceId],
        allow_without_one_time: bool,
    ) -> Result<Vec<Bundle>>;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// The device the session is for.
    pub device_id: DeviceId,
    pub refresh_hash: String,
    pub expires_at: u64,
    /// The refresh token the current one replaced, still honoured for a short grace window.
    pub previous: Option<PreviousRefresh>,
}

/// A rotated-away refresh token that may still be presented until `until` (Unix s): a client
/// whose refresh answer was lost, or that refreshed twice at once, gets the same successor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreviousRefresh {
    pub hash: String,
    pub until: u64,
    /// The successor's secret, masked so only the previous token unmasks it (`RefreshToken::seal`).
    pub sealed_next: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rotation {
    Rotated,
    /// The session is gone or expired, or its refresh hash is no longer `old_hash`.
    Stale,
    /// The user no longer exists (deleted): nothing was written.
    UserGone,
}

#[async_trait]
pub trait SessionStore: Send + Sync {
    /// Stores the session only while the user exists, atomically; false (nothing stored) when
    /// the user is gone, so a login racing an account deletion cannot leave a session behind.
    async fn create(
        &self,
        user_id: UserId,
        session_id: Uuid,
        record: &SessionRecord,
    ) -> Result<bool>;
    async fn get(&self, user_id: UserId, session_id: Uuid) -> Result<Option<SessionRecord>>;
    /// Replaces the record only if its refresh hash still is `old_hash` and the user exists.
    async fn rotate(
        &self,
        user_id: UserId,
        session_id: Uuid,
        old_hash: &str,
        next: &SessionRecord,
    ) -> Result<Rotation>;
    async fn delete(&self, user_id: UserId, session_id: Uuid) -> Result<()>;
    /// Deletes every session of the user and returns their ids.
    async fn delete_all(&self, user_id: UserId) -> Result<Vec<Uuid>>;
    /// Deletes the sessions of one device and returns their ids.
    async fn delete_device(&self, user_id: UserId, device_id: DeviceId) -> Result<Vec<Uuid>>;
    /// The user's unexpired sessions, without their secrets, ordered by session id: at most
    /// `max`, and whether there were more.
    async fn list(&self, user_id: UserId, max: usize) -> Result<(Vec<SessionInfo>, bool)>;
}

/// What an account export shows of a session: never its refresh hash or sealed successor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    pub session_id: Uuid,
    pub device_id: DeviceId,
    /// Unix s; `None` for a session started before the time was kept.
    pub created_at: Option<u64>,
    /// When its refresh token was last rotated (Unix s); `None` if never.
    pub refreshed_at: Option<u64>,
    pub expires_at: u64,
}

/// What a conditional group write found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupWrite {
    Written,
    /// The stored group is no longer at the expected version (or is gone: `None`); nothing was
    /// written.
    Moved(Option<Group>),
}

/// The largest piece of an MLS group's state or GroupInfo one stored item holds: under
/// DynamoDB's 400 KB item limit with room for the key. A 1,500-member tree takes a few.
pub const MLS_CHUNK_BYTES: usize = 350_000;

/// An MLS group's tracked state (mls-rs `ExternalSnapshot` bytes) and the GroupInfo of the same
/// epoch as its committer uploaded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MlsBlobs {
    pub state: Vec<u8>,
    pub group_info: Vec<u8>,
    /// The Commit that made this epoch, kept for the devices it is fetched by (written with the
    /// state; none for a group's first state).
    pub log: Option<MlsLogEntry>,
}

/// An accepted Commit as its devices fetch it: kept `MLS_LOG_SECS` after it was accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MlsLogEntry {
    pub commit: Vec<u8>,
    pub welcome: Option<Vec<u8>>,
    /// The tree of the epoch the Commit made, which a device of the Welcome joins with.
    pub ratchet_tree: Option<Vec<u8>>,
    /// The devices the Welcome is for.
    pub welcomed: Vec<DeviceAddress>,
}

/// How long an accepted Commit stays fetchable: as long as the notice of it may wait in an
/// inbox (`INBOX_TTL_SECS` by default).
pub const MLS_LOG_SECS: u64 = 30 * 24 * 3600;

impl MlsLogEntry {
    pub fn bytes(&self) -> usize {
        self.commit.len()
            + self.welcome.as_ref().map_or(0, Vec::len)
            + self.ratchet_tree.as_ref().map_or(0, Vec::len)
    }
}

impl MlsBlobs {
    /// The chunks `state` is stored in.
    pub fn state_chunks(&self) -> u32 {
        chunks(&self.state)
    }

    /// The chunks `group_info` is stored in.
    pub fn info_chunks(&self) -> u32 {
        chunks(&self.group_info)
    }

    /// The group's `mls` once these blobs are its state at `epoch` of `generation`.
    pub fn at(&self, epoch: u64, generation: u32) -> MlsEpoch {
        MlsEpoch {
            epoch,
            generation,
            state_chunks: self.state_chunks(),
            info_chunks: self.info_chunks(),
        }
    }
}

fn chunks(bytes: &[u8]) -> u32 {
    bytes.len().div_ceil(MLS_CHUNK_BYTES) as u32
}

/// Groups and, per user, the groups they are in or invited to. Every change is one conditional
/// write on the group's version, together with the index entries of the users it touches.
#[async_trait]
pub trait GroupStore: Send + Sync {
    /// The group, read strongly consistent (a send reads the roster as of its start).
    async fn get(&self, group_id: GroupId) -> Result<Option<Group>>;
    /// Writes a new group (version 1) and an index entry for each of its users.
    async fn create(&self, group: &Group) -> Result<()>;
    /// Replaces the group if it is still at `expected` (and `group.version` is `expected + 1`),
    /// writing the index entries of `upserted` (users added, or whose role or state changed: the
    /// index carries both) and deleting those of `dropped`, all in one transaction.
    async fn replace(
        &self,
        group: &Group,
        expected: u64,
        upserted: &[crate::model::UserId],
        dropped: &[crate::model::UserId],
    ) -> Result<GroupWrite>;
    /// As [`GroupStore::replace`], and in the same transaction: the chunks of `blobs` written
    /// under `group.mls` (whose chunk counts must be those of `blobs`, see [`MlsBlobs::at`]) and
    /// those of `previous` (the epoch replaced) deleted. Exactly one of concurrent writers at one
    /// `expected` version wins (the others get `Moved`, and nothing of theirs is written).
    async fn replace_mls(
        &self,
        group: &Group,
        expected: u64,
        upserted: &[crate::model::UserId],
        dropped: &[crate::model::UserId],
        blobs: &MlsBlobs,
        previous: Option<&MlsEpoch>,
    ) -> Result<GroupWrite>;
    /// The state and GroupInfo stored for `at` (read strongly consistent), joined; `None` when
    /// they are not there: the group has no MLS state, or has moved past `at` since it was read.
    async fn mls_blobs(&self, group_id: GroupId, at: &MlsEpoch) -> Result<Option<MlsBlobs>>;
    /// The Commit accepted at `epoch` of `generation` (it made `epoch + 1`), if still kept.
    async fn mls_log(
        &self,
        group_id: GroupId,
        generation: u32,
        epoch: u64,
    ) -> Result<Option<MlsLogEntry>>;
    /// Deletes the group if it is still at `expected`, with the index entries of `dropped` (its
    /// last users) and its MLS state.
    async fn delete(
        &self,
        group_id: GroupId,
        expected: u64,
        dropped: &[crate::model::UserId],
    ) -> Result<GroupWrite>;
    /// The groups the user is in or invited to with their role and state there, ordered by
    /// group id, at most `limit`, after `after`.
    async fn of_user(
        &self,
        user_id: crate::model::UserId,
        after: Option<GroupId>,
        limit: u32,
    ) -> Result<Vec<Membership>>;
}

/// A KeyPackage as a device uploads it: its KeyPackageRef (lowercase hex) and the
/// MLSMessage(KeyPackage) bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPackageItem {
    pub reference: String,
    pub bytes: Vec<u8>,
}

/// A KeyPackage handed out to a committer that adds the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedKeyPackage {
    pub device_id: DeviceId,
    pub reference: String,
    pub bytes: Vec<u8>,
    /// The device had no other left: this one is handed out again until it is replaced.
    pub last_resort: bool,
}

/// How long the relay remembers which device a handed-out KeyPackage belongs to: a Welcome naming
/// it is routed to that device until then.
pub const KEY_PACKAGE_HANDOUT_SECS: u64 = 30 * 24 * 3600;

/// MLS KeyPackages per device, handed out once each (the last-resort one again and again).
#[async_trait]
pub trait KeyPackageStore: Send + Sync {
    /// Adds these (a reference already stored is overwritten) and replaces the last-resort one
    /// when given.
    async fn put_key_packages(
        &self,
        device: DeviceAddress,
        packages: &[KeyPackageItem],
        last_resort: Option<&KeyPackageItem>,
    ) -> Result<()>;
    /// Stored KeyPackages (the last-resort one not counted) and whether a last-resort one is
    /// stored.
    async fn key_package_count(&self, device: DeviceAddress) -> Result<(u32, bool)>;
    /// One KeyPackage per device, in the order of `devices`, each taken by a conditional delete
    /// (never handed out twice, concurrent claimers included); a device with none left gets its
    /// last-resort one (not deleted); when devices have neither, `KeyPackagesExhausted` names
    /// them and nothing is taken. Every handed-out reference is recorded (→ the device it
    /// belongs to, for [`KEY_PACKAGE_HANDOUT_SECS`]) for Welcome routing.
    async fn claim_key_packages(
        &self,
        user: UserId,
        devices: &[DeviceId],
        by: DeviceAddress,
    ) -> Result<Vec<ClaimedKeyPackage>>;
    /// The device each reference was handed out for, in order (`None`: never handed out, or
    /// longer ago than [`KEY_PACKAGE_HANDOUT_SECS`]).
    async fn handed_out(&self, references: &[String]) -> Result<Vec<Option<DeviceAddress>>>;
}

/// Sessions whose access tokens must stop working before they expire.
#[async_trait]
pub trait Revocations: Send + Sync {
    async fn revoke(&self, session_id: Uuid, until_unix_secs: u64) -> Result<()>;
    async fn is_revoked(&self, session_id: Uuid) -> Result<bool>;
}

/// A rate limit's cost taken by a storage operation in its own atomic step (the bucket's key in
/// the slot of the keys it writes), so a frame costs one round trip rather than two.
#[derive(Debug, Clone, Copy)]
pub struct Charge<'a> {
    pub key: &'a str,
    pub bucket: Bucket,
    pub cost: u32,
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
    /// Returns tokens taken for an attempt that turned out not to count (never above capacity).
    async fn give_back(&self, key: &str, bucket: Bucket, amount: u32) -> Result<()>;
    /// Takes from several buckets in one atomic step, all or none: when any lacks its cost,
    /// nothing is taken and the longest wait is returned. On a Redis Cluster the keys must share
    /// a hash slot (a `{tag}` in each name).
    async fn take_all(&self, takes: &[(&str, Bucket, u32)]) -> Result<RateDecision>;
}

/// An envelope as the inbox keeps it: its expiry and its client-facing JSON (or, for a group
/// send, a pointer to it), kept together so delivery never re-serializes. (How an adapter stores
/// it is the adapter's: Redis in `storage::redis::envelope`.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEnvelope {
    expires_at_ms: u64,
    content: Content,
    /// Sent by an account younger than `NEW_ACCOUNT_AGE_SECS`: such envelopes, together, hold
    /// only a bounded part of an inbox (docs/api.md §6.6).
    new_account: bool,
}

/// What an inbox entry holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// The client-facing JSON.
    Json(String),
    /// An entry of a group send: the envelope is stored once for every device of the send
    /// ([`Inbox::put_shared`]) and found by its id; `from` is who the entry counts against in
    /// the inbox's accounting. A disappearing message's entry points the same way at its
    /// envelope, stored for this device alone so that it expires on its own: `body_bytes` is
    /// then that envelope's length, which the inbox's accounting counts as this entry's.
    Shared {
        id: Uuid,
        from: UserId,
        body_bytes: Option<u64>,
    },
}

impl StoredEnvelope {
    pub fn new(expires_at_ms: u64, json: &str) -> Self {
        Self {
            expires_at_ms,
            content: Content::Json(json.to_string()),
            new_account: false,
        }
    }

    /// A group send's entry for one device, pointing at the envelope stored once.
    pub fn shared(expires_at_ms: u64, id: Uuid, from: UserId) -> Self {
        Self {
            expires_at_ms,
            content: Content::Shared {
                id,
                from,
                body_bytes: None,
            },
            new_account: false,
        }
    }

    /// A disappearing message's entry for one device, pointing at its envelope (`body_bytes`
    /// long) stored under its own key until `expires_at_ms`.
    pub fn own(expires_at_ms: u64, id: Uuid, from: UserId, body_bytes: u64) -> Self {
        Self {
            expires_at_ms,
            content: Content::Shared {
                id,
                from,
                body_bytes: Some(body_bytes),
            },
            new_account: false,
        }
    }

    pub fn sent_by_new_account(mut self, new_account: bool) -> Self {
        self.new_account = new_account;
        self
    }

    pub fn from_new_account(&self) -> bool {
        self.new_account
    }

    pub fn expires_at_ms(&self) -> u64 {
        self.expires_at_ms
    }

    pub fn content(&self) -> &Content {
        &self.content
    }

    /// The client-facing JSON, unless the entry points at a shared envelope.
    pub fn json(&self) -> Option<&str> {
        match &self.content {
            Content::Json(json) => Some(json),
            Content::Shared { .. } => None,
        }
    }

    /// The id of a disappearing message's envelope stored for this entry alone
    /// ([`StoredEnvelope::own`]).
    pub fn own_id(&self) -> Option<Uuid> {
        match self.content {
            Content::Shared {
                id,
                body_bytes: Some(_),
                ..
            } => Some(id),
            _ => None,
        }
    }

    /// The id of the shared envelope the entry points at.
    pub fn shared_id(&self) -> Option<Uuid> {
        match self.content {
            Content::Shared { id, .. } => Some(id),
            Content::Json(_) => None,
        }
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
    /// Stored; the device has no live connection.
    Queued,
    /// The recipient is connected: these envelopes (the new one included) were taken from the
    /// inbox for the caller to push, to one of `connections` (latest-ending registration first).
    Online {
        connections: Vec<String>,
        /// Those of `connections` in ack mode: what is written to them stays in flight.
        ack_connections: Vec<String>,
        envelopes: Vec<StoredEnvelope>,
        /// The envelopes wait in the recipient's in-flight list, leased until the
        /// `lease_until_ms` given to `deliver`, until the caller settles them
        /// (`settle_in_flight`); false when the new envelope was handed over without being
        /// stored (nothing was waiting).
        in_flight: bool,
    },
    /// Nothing stored: `online_only` and the recipient is not connected, or the inbox is full
    /// and the sender holds the largest share of it (or the envelope exceeds the byte cap).
    Dropped,
}

impl Delivery {
    /// Whether the envelope was written into the device's inbox (queued, or taken into flight
    /// to be pushed): not when handed over unstored, nor dropped.
    pub fn stored(&self) -> bool {
        matches!(
            self,
            Self::Queued
                | Self::Online {
                    in_flight: true,
                    ..
                }
        )
    }
}

/// One device's ciphertext in a send, with the registration id the sender knows for it (`None`:
/// the form from before devices, unchecked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addressed {
    pub device_id: DeviceId,
    pub registration_id: Option<u32>,
    pub envelope: StoredEnvelope,
}

/// A send to every device of one recipient, as the inbox stores it in one atomic step.
#[derive(Debug, Clone)]
pub struct Fanout {
    pub to: UserId,
    /// The sending device, when the recipient is the sender's own account: it is not a target.
    pub sender_device: Option<DeviceId>,
    /// The form from before devices: a self-send by an account with one device goes to that
    /// device (as it always did).
    pub legacy: bool,
    pub online_only: bool,
    pub envelopes: Vec<Addressed>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fanned {
    /// No device list for the recipient: the caller must ask the user store.
    UnknownInbox,
    /// The devices of the send are not the recipient's targets (`targets`, sorted); nothing
    /// stored.
    Mismatched {
        missing: Vec<DeviceId>,
        extra: Vec<DeviceId>,
        targets: Vec<DeviceId>,
    },
    /// These devices' registration ids differ from the send's; nothing stored.
    Stale(Vec<DeviceId>),
    /// Each device's outcome, in the order of the send.
    Done(Vec<(DeviceId, Delivery)>),
}

/// One group member's part of a group send: an entry per device pointing at the envelope
/// stored once, for the devices the send was checked against.
#[derive(Debug, Clone)]
pub struct SharedFanout {
    pub to: UserId,
    pub online_only: bool,
    /// Each device with the registration id it was checked with, and its entry.
    pub entries: Vec<Addressed>,
    /// An idempotent send: the member remembers that it was given this envelope (for this
    /// long, ms), and a repeat gives it nothing again.
    pub remember_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SharedFanned {
    /// The member was given this envelope before (a repeat); nothing stored.
    Already,
    /// Each device's outcome, in the order of the entries; a device removed or registered again
    /// since the check gets nothing (`Dropped`).
    Done(Vec<(DeviceId, Delivery)>),
}

/// Message inboxes, one per device, with the connection registry beside them (a user's keys
/// share a hash slot).
#[async_trait]
pub trait Inbox: Send + Sync {
    /// Takes `list` as the account's devices unless what it holds is as new (by version). A
    /// device that left the list, or whose registration changed, loses its inbox.
    async fn set_devices(&self, user_id: UserId, list: &DeviceList) -> Result<()>;
    /// Erases the device list and the inboxes, fetch batches in flight and connection sets of
    /// `devices` (at account deletion).
    async fn close(&self, user_id: UserId, devices: &[DeviceId]) -> Result<()>;
    /// Checks the send's devices against the recipient's list and then, for every device,
    /// stores (unless `online_only`) and, when the device is connected, takes its waiting
    /// envelopes for immediate push into its in-flight list (leased until `lease_until_ms`),
    /// all in one atomic step.
    async fn deliver(&self, send: &Fanout, now_ms: u64, lease_until_ms: u64) -> Result<Fanned>;
    /// Stores a group send's envelope once, for the entries that point at it, until
    /// `expires_at_ms`; a repeat keeps the first.
    async fn put_shared(&self, id: Uuid, json: &str, expires_at_ms: u64) -> Result<()>;
    /// The shared envelopes with these ids, in order (`None`: expired).
    async fn shared(&self, ids: &[Uuid]) -> Result<Vec<Option<String>>>;
    /// Deletes disappearing messages' envelopes stored for one device alone (`own_id`), once
    /// delivered for good; a key left behind expires with its message.
    async fn delete_own(&self, ids: &[Uuid]) -> Result<()>;
    /// For one member of a group send, in one atomic step: for each device still registered
    /// with the registration id it was checked with, stores its entry (unless `online_only`)
    /// and, when the device is connected, takes its waiting envelopes for immediate push, as
    /// [`Inbox::deliver`] does.
    async fn deliver_shared(
        &self,
        send: &SharedFanout,
        now_ms: u64,
        lease_until_ms: u64,
    ) -> Result<SharedFanned>;
    /// Each user's devices as the relay checks sends against them (device id, registration id),
    /// in order; `None` where the relay has no list (ask the user store).
    async fn devices_of(&self, users: &[UserId]) -> Result<Vec<Option<Vec<(DeviceId, u32)>>>>;
    /// Moves up to `max` envelopes from the head into the device's in-flight list, leased until
    /// `lease_until_ms`, so a taker that dies while writing them loses nothing. In the same
    /// atomic step, envelopes an earlier taker left in flight past their lease (a fetch that
    /// crashed or timed out) go back to the head first, in their order.
    async fn take_in_flight(
        &self,
        device: DeviceAddress,
        max: usize,
        lease_until_ms: u64,
        now_ms: u64,
    ) -> Result<Vec<StoredEnvelope>>;
    /// Ends a batch from [`Inbox::take_in_flight`] (same `lease_until_ms`): drops it from the
    /// in-flight list and puts `unsent` (the envelopes of it that were not written) back at the
    /// head in their order, in one atomic step.
    async fn settle_in_flight(
        &self,
        device: DeviceAddress,
        batch: &[StoredEnvelope],
        lease_until_ms: u64,
        unsent: &[StoredEnvelope],
    ) -> Result<()>;
    /// Puts envelopes back at the head, in their original order.
    async fn requeue(&self, device: DeviceAddress, envelopes: &[StoredEnvelope]) -> Result<()>;
    /// Deletes the device's in-flight envelopes with these envelope ids (acknowledged); returns
    /// how many there were. When none is, `charge` is taken in the same atomic step (its key is
    /// in the device's slot); an ack that deletes costs nothing (a paid send stored each
    /// envelope, and each is deleted once).
    async fn ack(
        &self,
        device: DeviceAddress,
        ids: &[String],
        charge: Charge<'_>,
    ) -> Result<(RateDecision, u64)>;
    /// Puts every in-flight envelope of the device back at the head in its order (an ack-mode
    /// connection closed).
    async fn release(&self, device: DeviceAddress) -> Result<()>;
    /// Waiting envelopes that have not expired.
    async fn pending(&self, device: DeviceAddress, now_ms: u64) -> Result<u64>;
    /// What the device's inbox holds, in counts and times only (never a body or a sender),
    /// read in O(1): its accounting and its two ends.
    async fn summary(&self, device: DeviceAddress) -> Result<InboxSummary>;
}

/// A device's inbox as an account export shows it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InboxSummary {
    /// Envelopes waiting (expired ones not yet dropped included).
    pub queued: u64,
    /// Their bytes as stored.
    pub bytes: u64,
    /// Envelopes taken for writing or written to an ack-mode connection, not yet settled.
    pub in_flight: u64,
    pub in_flight_bytes: u64,
    /// The oldest waiting envelope (the head) and the newest (the tail).
    pub oldest: Option<EntryTimes>,
    pub newest: Option<EntryTimes>,
}

/// When an inbox entry was accepted and when it expires (Unix ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryTimes {
    /// `None` for an entry that does not carry it (a pointer to an envelope stored apart).
    pub sent_at_ms: Option<u64>,
    pub expires_at_ms: u64,
}

/// Who is behind a connection: the user, device and session of the token it connected with,
/// and when that token stops being accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Registration {
    pub user_id: UserId,
    pub device_id: DeviceId,
    pub session_id: Uuid,
    /// Unix ms from which the connection's token is refused (leeway included).
    pub valid_until_ms: u64,
    /// Ack mode (`ack=1`): what is written to it waits in flight until acknowledged.
    pub ack: bool,
    /// Unix ms until which the account counts as new (`NEW_ACCOUNT_AGE_SECS`): what it sends
    /// then is held to the new accounts' part of each inbox. 0: an established account.
    pub new_account_until_ms: u64,
}

impl Registration {
    pub fn device(&self) -> DeviceAddress {
        DeviceAddress::new(self.user_id, self.device_id)
    }
}

/// What the registry keeps of a user's connection for closing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Connected {
    pub session_id: Uuid,
    pub device_id: DeviceId,
    pub ack: bool,
}

#[async_trait]
pub trait ConnectionRegistry: Send + Sync {
    /// Registers the connection until its token stops being accepted (or the gateway's
    /// connection lifetime ends, whichever comes first).
    async fn register(
        &self,
        connection_id: &str,
        registration: &Registration,
        now_ms: u64,
    ) -> Result<()>;
    /// Forgets the connection; returns what it was.
    async fn unregister(&self, connection_id: &str) -> Result<Option<Registration>>;
    async fn registration(&self, connection_id: &str) -> Result<Option<Registration>>;
    /// Forgets a connection found gone while pushing to it.
    async fn remove(&self, device: DeviceAddress, connection_id: &str) -> Result<()>;
    /// Keeps the device's `max` most recently connected registrations, `connection_id` (just
    /// registered) counting as the newest: the older ones leave the user's set in one atomic
    /// step, so concurrent handshakes cannot pass `max`, and are returned for the caller to
    /// forget ([`ConnectionRegistry::remove`]) and close, each with whether it was in ack mode.
    async fn evict_over(
        &self,
        device: DeviceAddress,
        connection_id: &str,
        max: u32,
        now_ms: u64,
    ) -> Result<Vec<(String, bool)>>;
    /// The user's registered connections with the session, device and mode of each, so
    /// logout, device removal and deletion can close them.
    async fn connections(&self, user_id: UserId) -> Result<Vec<(String, Connected)>>;
}

/// What recording a connection's arrival or departure did to its user's presence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// The user's first live connection: the user came online.
    Online,
    /// The user's last live connection left: the user went offline.
    Offline,
    /// Other connections of the user remain, or the connection was not counted (twice, or not
    /// at all).
    Unchanged,
}

/// One user's presence as the store keeps it, read for a viewer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    /// The user's share list names the viewer.
    pub shares_with_viewer: bool,
    pub online: bool,
    /// When the user last went offline (ms), kept only while the user allows `last_seen`.
    pub offline_at_ms: Option<u64>,
}

/// Presence: each user's share list and `last_seen` choice, and the set of the user's live
/// connections that tells when the user comes online or goes offline.
#[async_trait]
pub trait PresenceStore: Send + Sync {
    /// Replaces the user's share list and `last_seen` choice in one atomic step (turning
    /// `last_seen` off forgets when the user was last seen).
    async fn set_shares(&self, user: UserId, shares: &[UserId], last_seen: bool) -> Result<()>;
    /// The user's share list (sorted) and whether it shows `last_seen`.
    async fn shares(&self, user: UserId) -> Result<(Vec<UserId>, bool)>;
    /// Each of `users`' presence as `viewer` would see it, in order.
    async fn seen(&self, viewer: UserId, users: &[UserId], now_ms: u64) -> Result<Vec<Seen>>;
    /// Of `candidates`, those whose share list names `user`, each with its registered
    /// connections (connection id and device): where a change of `user`'s presence is pushed.
    async fn audience(
        &self,
        user: UserId,
        candidates: &[UserId],
    ) -> Result<Vec<(UserId, Vec<(String, DeviceId)>)>>;
    /// Counts a new live connection of the user, for as long as a connection can live at most
    /// (one whose removal was lost stops counting then); `Online` for exactly one of concurrent
    /// first connections.
    async fn connected(&self, user: UserId, connection_id: &str, now_ms: u64)
        -> Result<Transition>;
    /// Stops counting the connection; `Offline` for exactly one of concurrent last departures
    /// (and records when, if the user shows `last_seen`).
    async fn disconnected(
        &self,
        user: UserId,
        connection_id: &str,
        now_ms: u64,
    ) -> Result<Transition>;
    /// Erases the user's presence keys (account deletion).
    async fn forget(&self, user: UserId) -> Result<()>;
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
    /// Closes the connection (`DeleteConnection` on AWS); `Gone` when it no longer exists.
    async fn close(&self, connection_id: &str) -> std::result::Result<(), PushError>;
}

/// What a remembered send (an id from an ack-mode connection) is at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// First seen: the caller sends, then records or releases.
    New,
    /// Sent before with the same content: the answer it got.
    Done(String),
    /// Sent before with the same content, not answered yet.
    Pending,
    /// Sent before with other content.
    Conflict,
}

/// How long and how much a device's log of sends remembers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Remembering {
    /// How long an answer is remembered (ms).
    pub window_ms: u64,
    /// How long an unanswered claim holds (ms): a first send that died lets a repeat send then.
    pub lapse_ms: u64,
    /// Most bytes the remembered sends of a device may hold in the store, counted as the store
    /// holds them; the oldest go first.
    pub budget_bytes: u64,
}

/// Sends remembered by (sender device, id), so a repeat stores nothing new.
#[async_trait]
pub trait SendLog: Send + Sync {
    /// Claims the id for `content_hash` unless it is known.
    async fn claim(
        &self,
        sender: DeviceAddress,
        id: &str,
        content_hash: &str,
        now_ms: u64,
        policy: Remembering,
    ) -> Result<Claim>;
    /// Records the answer of a claimed send.
    async fn record(
        &self,
        sender: DeviceAddress,
        id: &str,
        content_hash: &str,
        answer: &str,
        now_ms: u64,
        policy: Remembering,
    ) -> Result<()>;
    /// Forgets a claim whose send was refused, so the id may be sent again.
    async fn forget(&self, sender: DeviceAddress, id: &str) -> Result<()>;
}

/// Linking codes and provisioning sockets: short-lived, single-use records (Redis, with TTLs).
#[async_trait]
pub trait Provisioning: Send + Sync {
    /// Keeps a linking code (by its hash) for the account for `ttl_secs`.
    async fn put_code(&self, code_hash: &str, user_id: UserId, ttl_secs: u64) -> Result<()>;
    /// The account a code links to, without using it up.
    async fn code_owner(&self, code_hash: &str) -> Result<Option<UserId>>;
    /// Uses the code up: only one caller ever gets `Some`.
    async fn take_code(&self, code_hash: &str) -> Result<Option<UserId>>;
    /// Marks a connection as a provisioning socket for `ttl_secs`.
    async fn open_socket(&self, connection_id: &str, ttl_secs: u64) -> Result<()>;
    /// Whether the connection is a live provisioning socket.
    async fn is_socket(&self, connection_id: &str) -> Result<bool>;
    /// The socket's address: `fresh` on the first ask, the same one after; `None` when the
    /// connection is not a (live) provisioning socket.
    async fn address(
        &self,
        connection_id: &str,
        fresh: &str,
        ttl_secs: u64,
    ) -> Result<Option<String>>;
    /// Uses an address up: its socket's connection id, for one caller only.
    async fn take_address(&self, address: &str) -> Result<Option<String>>;
    /// Forgets a provisioning socket (disconnected or done).
    async fn close_socket(&self, connection_id: &str) -> Result<()>;
}

/// A request signed in its URL, for a client to send to object storage itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presigned {
    pub url: String,
    pub method: String,
    /// Headers the request must carry with these values (signed with it).
    pub headers: Vec<(String, String)>,
}

/// Object storage for attachments: the relay only signs; bytes never pass through it.
#[async_trait]
pub trait BlobStore: Send + Sync {
    /// A `PUT` of exactly `size` bytes to `key`, valid for `ttl`.
    async fn presign_upload(
        &self,
        key: &str,
        size: u64,
        ttl: std::time::Duration,
    ) -> Result<Presigned>;
    /// A `GET` of `key`, valid for `ttl`.
    async fn presign_download(&self, key: &str, ttl: std::time::Duration) -> Result<Presigned>;
    /// Deletes the objects at `keys` (absent ones are no error), up to 1,000 per request.
    async fn delete(&self, keys: &[String]) -> Result<()>;
}

/// An upload signed for a user, as the user's index of uploads keeps it (Unix seconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadRecord {
    pub id: String,
    pub size: u64,
    pub created_at: u64,
    /// When object storage's lifecycle deletes the object, and the index its entry.
    pub expires_at: u64,
}

/// Which uploads are whose, for as long as their objects live: what an account export lists
/// and what account deletion erases from object storage.
#[async_trait]
pub trait AttachmentIndex: Send + Sync {
    /// Records an upload of `user`, only while the user exists (`UserNotFound`) and fewer than
    /// `max_per_day` were recorded on its UTC day (`RateLimited` until the next day), in one
    /// atomic step; with every upload living at most 30 days (31 day buckets), that keeps at
    /// most `31 * max_per_day` entries live.
    async fn record(&self, user: UserId, upload: &UploadRecord, max_per_day: u32) -> Result<()>;
    /// The user's unexpired uploads, oldest first: at most `max`, and whether there were more.
    async fn uploads(&self, user: UserId, max: usize) -> Result<(Vec<UploadRecord>, bool)>;
    /// The ids of every upload still indexed for the user, expired ones not yet dropped
    /// included (their objects may not be gone yet either).
    async fn all_ids(&self, user: UserId) -> Result<Vec<String>>;
    /// Deletes the user's index: every entry and day count.
    async fn forget(&self, user: UserId) -> Result<()>;
}

/// Answers whether the backing stores are reachable.
#[async_trait]
pub trait Health: Send + Sync {
    async fn ping(&self) -> Result<()>;
}
