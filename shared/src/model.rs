//! Wire shapes of the API (docs/api.md, snake_case JSON) and the validated domain values behind them.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::crypto::xeddsa;
use crate::error::{Error, Result};
use crate::validation as v;

pub use crate::ids::{DeviceAddress, DeviceId, UserId, MAX_DEVICE_ID, PRIMARY_DEVICE};

mod export;
pub use export::{
    AccountExport, ExportAccount, ExportAttachment, ExportGroup, ExportInbox, ExportKeyIds,
    ExportKeys, ExportPresence, ExportRetired, ExportSession, RenameRequest,
};
mod groups;
pub use groups::{
    CreateGroupRequest, GroupOut, GroupsOut, InviteRequest, MetaRequest, RoleRequest,
    VersionedRequest,
};
mod presence;
pub use presence::{
    minute_of, PresenceOut, PresenceSharesOut, PresenceSharesRequest, UserPresence,
    MAX_PRESENCE_READ, MAX_PRESENCE_SHARES,
};
mod mls;
pub use mls::{
    ClaimedKeyPackageOut, CommitOut, CommitRequest, GroupInfoOut, KeyPackageCount, KeyPackagesOut,
    KeyPackagesUpload, MlsGroupOut, MlsInitRequest,
};

// ---- wire: requests ----

/// A public key signed (XEdDSA) by the identity key over its serialized form.
#[derive(Debug, Deserialize, ToSchema)]
pub struct SignedPreKeyIn {
    pub key_id: u64,
    pub public_key: String,
    pub signature: String,
}

/// An EC one-time prekey (unsigned).
#[derive(Debug, Deserialize, ToSchema)]
pub struct PreKeyIn {
    pub key_id: u64,
    pub public_key: String,
}

/// `POST /v1/users`. Keys are standard base64: EC keys 33 bytes (0x05…), Kyber keys 1569
/// bytes (0x08…), signatures 64 bytes.
#[derive(Deserialize, ToSchema)]
pub struct RegisterRequest {
    pub username: String,
    pub password: String,
    pub registration_id: u64,
    pub identity_key: String,
    pub signed_prekey: SignedPreKeyIn,
    pub one_time_prekeys: Vec<PreKeyIn>,
    #[serde(default)]
    pub kyber_last_resort_prekey: Option<SignedPreKeyIn>,
    #[serde(default)]
    pub kyber_one_time_prekeys: Vec<SignedPreKeyIn>,
}

/// `POST /v1/sessions`.
#[derive(Deserialize, ToSchema)]
pub struct LoginRequest {
    pub username: String,
    pub password: String,
    /// The device to start a session for (default 1, the primary).
    #[serde(default)]
    pub device_id: Option<u64>,
}

/// `POST /v1/devices`: the linking code from the primary and the new device's own keys (shapes
/// as in `POST /v1/users`), signed by the account's identity key.
#[derive(Deserialize, ToSchema)]
pub struct LinkDeviceRequest {
    pub code: String,
    pub registration_id: u64,
    pub signed_prekey: SignedPreKeyIn,
    pub one_time_prekeys: Vec<PreKeyIn>,
    #[serde(default)]
    pub kyber_last_resort_prekey: Option<SignedPreKeyIn>,
    #[serde(default)]
    pub kyber_one_time_prekeys: Vec<SignedPreKeyIn>,
}

/// `PUT /v1/provisioning/{address}`: an opaque message for the new device (the client encrypts
/// it to the new device's ephemeral key; the relay never reads it).
#[derive(Deserialize, ToSchema)]
pub struct ProvisioningMessageIn {
    /// Standard base64, at most `PROVISIONING_MAX_BYTES` decoded.
    pub body: String,
}

/// `POST /v1/sessions/refresh`: the current refresh token, which stops working.
#[derive(Deserialize, ToSchema)]
pub struct RefreshRequest {
    pub refresh_token: String,
}

/// `PUT /v1/keys`: at least one key; one-time keys with an existing key id replace it.
#[derive(Debug, Deserialize, Default, ToSchema)]
pub struct KeysUploadRequest {
    #[serde(default)]
    pub signed_prekey: Option<SignedPreKeyIn>,
    #[serde(default)]
    pub kyber_last_resort_prekey: Option<SignedPreKeyIn>,
    #[serde(default)]
    pub one_time_prekeys: Option<Vec<PreKeyIn>>,
    #[serde(default)]
    pub kyber_one_time_prekeys: Option<Vec<SignedPreKeyIn>>,
}

// ---- wire: responses ----

/// `GET /healthz`: every backing store answered.
#[derive(Debug, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct HealthOut {
    /// Always `ok` (an unhealthy relay answers 503 with an error body).
    pub status: String,
}

/// A user: its id and its (lowercase) username.
#[derive(Debug, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct UserOut {
    pub user_id: Uuid,
    pub username: String,
}

/// A session's tokens: a JWT access token and an opaque refresh token.
#[derive(Serialize, ToSchema)]
pub struct TokensOut {
    pub user_id: Uuid,
    /// The device the tokens are for.
    pub device_id: DeviceId,
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: u64,
    pub refresh_token: String,
}

/// One-time prekeys left for the calling user.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq, Clone, Copy, ToSchema)]
pub struct KeyCounts {
    pub one_time_prekeys: u64,
    pub kyber_one_time_prekeys: u64,
}

/// A signed public key (base64) with its key id.
#[derive(Debug, Serialize, Deserialize, PartialEq, Clone, ToSchema)]
pub struct SignedPreKeyOut {
    pub key_id: u32,
    pub public_key: String,
    pub signature: String,
}

/// A one-time public key (base64) with its key id.
#[derive(Debug, Serialize, Deserialize, PartialEq, Clone, ToSchema)]
pub struct PreKeyOut {
    pub key_id: u32,
    pub public_key: String,
}

/// A prekey bundle: the target's identity and keys for X3DH/PQXDH. `kyber_prekey` is a
/// one-time Kyber key when one is left, else the last-resort one, else null.
#[derive(Debug, Serialize, Deserialize, PartialEq, Clone, ToSchema)]
pub struct BundleOut {
    pub user_id: Uuid,
    pub registration_id: u32,
    pub identity_key: String,
    pub signed_prekey: SignedPreKeyOut,
    pub one_time_prekey: PreKeyOut,
    pub kyber_prekey: Option<SignedPreKeyOut>,
}

/// `POST /v1/attachments`: the size of the encrypted file to upload.
#[derive(Debug, Deserialize, ToSchema)]
pub struct AttachmentRequest {
    /// Bytes of ciphertext, 1 to `ATTACHMENT_MAX_BYTES`; the upload must be exactly this long.
    pub size: u64,
}

/// Where and how to upload an attachment: a presigned `PUT` bound to the exact size.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AttachmentUploadOut {
    /// The attachment's id (128 random bits, base64url): what the sender puts in its message.
    pub id: String,
    pub upload_url: String,
    /// Always `PUT`.
    pub upload_method: String,
    /// Headers the upload must carry with exactly these values (they are signed).
    pub upload_headers: std::collections::BTreeMap<String, String>,
    /// Seconds until the URL stops being accepted.
    pub expires_in: u64,
}

/// `GET /v1/attachments/{attachment_id}`: a presigned `GET`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AttachmentDownloadOut {
    pub download_url: String,
    /// Seconds until the URL stops being accepted.
    pub expires_in: u64,
}

/// `POST /v1/devices/provisioning`: a single-use linking code for a new device.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ProvisioningCodeOut {
    pub code: String,
    /// Seconds until the code stops being accepted.
    pub expires_in: u64,
}

/// A device of the caller's account.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct DeviceOut {
    pub device_id: DeviceId,
    pub registration_id: u32,
    /// When the device was registered or linked, Unix seconds.
    pub created_at: u64,
}

/// `GET /v1/devices`, sorted by device id.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DevicesOut {
    pub devices: Vec<DeviceOut>,
}

/// One device's keys in a multi-device bundle. `one_time_prekey` is null only when the relay
/// runs with `BUNDLE_WITHOUT_ONE_TIME=1` and the device has none left.
#[derive(Debug, Serialize, Deserialize, PartialEq, Clone, ToSchema)]
pub struct DeviceBundleOut {
    pub device_id: DeviceId,
    pub registration_id: u32,
    pub signed_prekey: SignedPreKeyOut,
    pub one_time_prekey: Option<PreKeyOut>,
    pub kyber_prekey: Option<SignedPreKeyOut>,
}

/// `GET /v1/users/{user_id}/devices/{device_id}/bundle`: the account's identity key and one
/// entry per requested device.
#[derive(Debug, Serialize, Deserialize, PartialEq, Clone, ToSchema)]
pub struct DevicesBundleOut {
    pub user_id: Uuid,
    pub identity_key: String,
    pub devices: Vec<DeviceBundleOut>,
}

// ---- domain ----

/// A device as the user store keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Device {
    pub device_id: DeviceId,
    pub registration_id: u32,
    pub created_at: u64,
}

impl From<&Device> for DeviceOut {
    fn from(d: &Device) -> Self {
        Self {
            device_id: d.device_id,
            registration_id: d.registration_id,
            created_at: d.created_at,
        }
    }
}

/// An account's devices, with the version every change of the list increments: the relay's
/// copy in Redis takes a list only when it is newer than the one it has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceList {
    pub version: u64,
    pub devices: Vec<Device>,
}

impl DeviceList {
    pub fn get(&self, device_id: DeviceId) -> Option<&Device> {
        self.devices.iter().find(|d| d.device_id == device_id)
    }

    /// The id a new device takes: the smallest free one from 2 on (as Signal assigns them).
    pub fn next_free(&self) -> DeviceId {
        (PRIMARY_DEVICE + 1..=MAX_DEVICE_ID)
            .find(|id| self.get(*id).is_none())
            .unwrap_or(MAX_DEVICE_ID + 1)
    }
}

/// How many registration ids of removed devices an account keeps per device id.
pub const RETIRED_REGISTRATIONS_KEPT: usize = 8;

/// The registration ids devices removed from an account had, per device id, newest last (at
/// most [`RETIRED_REGISTRATIONS_KEPT`] each). A sender names a device only by (device id,
/// registration id): a device linked under a freed id with one of its predecessors'
/// registration ids would be handed what senders still encrypt for the predecessor, which it
/// cannot decrypt. Refusing that link keeps such sends `stale_devices`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetiredRegistrations(pub std::collections::BTreeMap<DeviceId, Vec<u32>>);

impl RetiredRegistrations {
    /// Whether a device under `device_id` with `registration_id` would repeat a predecessor.
    pub fn repeats(&self, device_id: DeviceId, registration_id: u32) -> bool {
        self.0
            .get(&device_id)
            .is_some_and(|ids| ids.contains(&registration_id))
    }

    /// Remembers a removed device's registration id under its device id (the oldest beyond
    /// [`RETIRED_REGISTRATIONS_KEPT`] go).
    pub fn retire(&mut self, device: &Device) {
        let ids = self.0.entry(device.device_id).or_default();
        ids.retain(|&r| r != device.registration_id);
        ids.push(device.registration_id);
        let over = ids.len().saturating_sub(RETIRED_REGISTRATIONS_KEPT);
        ids.drain(..over);
    }
}

/// A new device with its keys, validated against the account's identity key.
#[derive(Debug, Clone)]
pub struct NewDevice {
    pub profile: Profile,
    pub one_time: Vec<OneTimeKey>,
    pub kyber_one_time: Vec<SignedKey>,
}

/// A public key with the identity key's XEdDSA signature over its serialized form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedKey {
    pub key_id: u32,
    pub public_key: Vec<u8>,
    pub signature: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OneTimeKey {
    pub key_id: u32,
    pub public_key: Vec<u8>,
}

impl From<&SignedKey> for SignedPreKeyOut {
    fn from(k: &SignedKey) -> Self {
        Self {
            key_id: k.key_id,
            public_key: v::encode(&k.public_key),
            signature: v::encode(&k.signature),
        }
    }
}

impl From<&OneTimeKey> for PreKeyOut {
    fn from(k: &OneTimeKey) -> Self {
        Self {
            key_id: k.key_id,
            public_key: v::encode(&k.public_key),
        }
    }
}

/// What never changes per user (identity) and what is replaced, not consumed (signed, last resort).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    pub registration_id: u32,
    pub identity_key: Vec<u8>,
    pub signed_prekey: SignedKey,
    pub kyber_last_resort: Option<SignedKey>,
}

/// A validated, signature-checked batch of keys to store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyUpload {
    pub signed_prekey: Option<SignedKey>,
    pub kyber_last_resort: Option<SignedKey>,
    pub one_time: Vec<OneTimeKey>,
    pub kyber_one_time: Vec<SignedKey>,
}

/// A new account with its first keys, validated.
#[derive(Debug, Clone)]
pub struct NewAccount {
    pub user_id: UserId,
    pub username: String,
    pub password_hash: String,
    pub profile: Profile,
    pub one_time: Vec<OneTimeKey>,
    pub kyber_one_time: Vec<SignedKey>,
}

/// Stored form of a user record needed to log in.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub user_id: UserId,
    pub username: String,
    pub password_hash: String,
}

/// A consumed bundle: profile plus the one-time keys taken for this fetch (no EC one-time key
/// only when the caller allowed it).
#[derive(Debug, Clone)]
pub struct Bundle {
    pub user_id: UserId,
    pub device_id: DeviceId,
    pub profile: Profile,
    pub one_time: Option<OneTimeKey>,
    pub kyber_one_time: Option<SignedKey>,
}

// ---- validation of wire into domain ----

impl SignedPreKeyIn {
    /// Checks shape and the identity key's signature.
    pub fn validate(&self, field: &str, kyber: bool) -> Result<SignedKey> {
        let key_id = v::key_id(&format!("{field}.key_id"), self.key_id)?;
        let pk_field = format!("{field}.public_key");
        let public_key = if kyber {
            v::kyber_public_key(&pk_field, &self.public_key)?
        } else {
            v::ec_public_key(&pk_field, &self.public_key)?
        };
        let signature = v::signature(&format!("{field}.signature"), &self.signature)?;
        Ok(SignedKey {
            key_id,
            public_key,
            signature,
        })
    }
}

impl PreKeyIn {
    pub fn validate(&self, field: &str) -> Result<OneTimeKey> {
        Ok(OneTimeKey {
            key_id: v::key_id(&format!("{field}.key_id"), self.key_id)?,
            public_key: v::ec_public_key(&format!("{field}.public_key"), &self.public_key)?,
        })
    }
}

/// Checks every signature only after every shape check, so a malformed request is reported as such.
fn verify_all<'a>(
    identity_key: &[u8],
    keys: impl IntoIterator<Item = &'a SignedKey>,
) -> Result<()> {
    for k in keys {
        if !xeddsa::verify(identity_key, &k.public_key, &k.signature) {
            return Err(Error::InvalidSignature);
        }
    }
    Ok(())
}

/// Later entries with the same key id replace earlier ones ("same key_id overwrites").
fn dedup_by_id<T>(items: Vec<T>, id: impl Fn(&T) -> u32) -> Vec<T> {
    let mut seen = std::collections::HashSet::new();
    let mut out: Vec<T> = items
        .into_iter()
        .rev()
        .filter(|k| seen.insert(id(k)))
        .collect();
    out.reverse();
    out
}

/// Shape checks of the one-time batches (signatures are checked by the caller afterwards).
fn one_time_batches(
    otk: &[PreKeyIn],
    kotk: &[SignedPreKeyIn],
    min: usize,
) -> Result<(Vec<OneTimeKey>, Vec<SignedKey>)> {
    v::batch_len("one_time_prekeys", otk.len(), min)?;
    v::batch_len("kyber_one_time_prekeys", kotk.len(), 0)?;
    let one_time = otk
        .iter()
        .enumerate()
        .map(|(i, k)| k.validate(&format!("one_time_prekeys[{i}]")))
        .collect::<Result<_>>()?;
    let kyber = kotk
        .iter()
        .enumerate()
        .map(|(i, k)| k.validate(&format!("kyber_one_time_prekeys[{i}]"), true))
        .collect::<Result<_>>()?;
    Ok((one_time, kyber))
}

fn signed(k: Option<&SignedPreKeyIn>, field: &str, kyber: bool) -> Result<Option<SignedKey>> {
    k.map(|k| k.validate(field, kyber)).transpose()
}

impl KeyUpload {
    /// Refuses EC keys equal to the identity key (a shape error, so it comes before any
    /// signature), then checks every signature.
    fn verified(self, identity_key: &[u8]) -> Result<Self> {
        if self
            .signed_prekey
            .as_ref()
            .is_some_and(|k| k.public_key == identity_key)
        {
            return Err(Error::invalid(
                "signed_prekey.public_key must differ from the identity key",
            ));
        }
        if let Some(i) = self
            .one_time
            .iter()
            .position(|k| k.public_key == identity_key)
        {
            return Err(Error::invalid(format!(
                "one_time_prekeys[{i}].public_key must differ from the identity key"
            )));
        }
        verify_all(
            identity_key,
            self.signed_prekey
                .iter()
                .chain(self.kyber_last_resort.iter())
                .chain(self.kyber_one_time.iter()),
        )?;
        Ok(KeyUpload {
            one_time: dedup_by_id(self.one_time, |k| k.key_id),
            kyber_one_time: dedup_by_id(self.kyber_one_time, |k| k.key_id),
            ..self
        })
    }
}

impl KeysUploadRequest {
    pub fn validate(&self, identity_key: &[u8]) -> Result<KeyUpload> {
        let (one_time, kyber_one_time) = one_time_batches(
            self.one_time_prekeys.as_deref().unwrap_or_default(),
            self.kyber_one_time_prekeys.as_deref().unwrap_or_default(),
            0,
        )?;
        let upload = KeyUpload {
            signed_prekey: signed(self.signed_prekey.as_ref(), "signed_prekey", false)?,
            kyber_last_resort: signed(
                self.kyber_last_resort_prekey.as_ref(),
                "kyber_last_resort_prekey",
                true,
            )?,
            one_time,
            kyber_one_time,
        };
        if upload == KeyUpload::default() {
            return Err(Error::invalid("nothing to upload: give at least one key"));
        }
        upload.verified(identity_key)
    }
}

/// A new device's keys, at registration and at linking: the batches' shapes, then every
/// signature against the identity key; the signed and last-resort keys go into its profile.
fn new_device(
    registration_id: u32,
    identity_key: Vec<u8>,
    signed_prekey: &SignedPreKeyIn,
    kyber_last_resort: Option<&SignedPreKeyIn>,
    one_time: &[PreKeyIn],
    kyber_one_time: &[SignedPreKeyIn],
) -> Result<NewDevice> {
    let (one_time, kyber_one_time) = one_time_batches(one_time, kyber_one_time, 1)?;
    let upload = KeyUpload {
        signed_prekey: signed(Some(signed_prekey), "signed_prekey", false)?,
        kyber_last_resort: signed(kyber_last_resort, "kyber_last_resort_prekey", true)?,
        one_time,
        kyber_one_time,
    }
    .verified(&identity_key)?;
    Ok(NewDevice {
        profile: Profile {
            registration_id,
            identity_key,
            signed_prekey: upload.signed_prekey.expect("validated above"),
            kyber_last_resort: upload.kyber_last_resort,
        },
        one_time: upload.one_time,
        kyber_one_time: upload.kyber_one_time,
    })
}

impl LinkDeviceRequest {
    /// Shape checks, then every signature against the account's identity key.
    pub fn validate(&self, identity_key: &[u8]) -> Result<NewDevice> {
        new_device(
            v::registration_id(self.registration_id)?,
            identity_key.to_vec(),
            &self.signed_prekey,
            self.kyber_last_resort_prekey.as_ref(),
            &self.one_time_prekeys,
            &self.kyber_one_time_prekeys,
        )
    }
}

impl RegisterRequest {
    /// Validates everything but the password hash, which the caller computes afterwards.
    /// The returned upload's signed and last-resort keys are moved into the profile.
    pub fn validate(&self) -> Result<(String, Profile, Vec<OneTimeKey>, Vec<SignedKey>)> {
        let username = v::username(&self.username)?;
        v::password(&self.password)?;
        let registration_id = v::registration_id(self.registration_id)?;
        let identity_key = v::ec_public_key("identity_key", &self.identity_key)?;
        let device = new_device(
            registration_id,
            identity_key,
            &self.signed_prekey,
            self.kyber_last_resort_prekey.as_ref(),
            &self.one_time_prekeys,
            &self.kyber_one_time_prekeys,
        )?;
        Ok((
            username,
            device.profile,
            device.one_time,
            device.kyber_one_time,
        ))
    }
}
