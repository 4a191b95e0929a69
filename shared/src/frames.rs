//! Wire shapes of the WebSocket API (docs/api.md §6; generated into docs/frames.schema.json):
//! the frames a client sends, the frames the server sends, and the envelope inside `messages`.
//! The connection function translates between these and the relay service's values.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::{Error, UserDevices};

/// The API: each `messages` frame is at most 128,000 bytes; API Gateway's limit is "128 KB", so
/// the smaller reading of both.
pub const MAX_FRAME_BYTES: usize = 128_000;
/// Longest client frame `id`, in bytes of UTF-8: room for a UUID or any sensible tag, while an
/// id cannot carry a payload of its own through the relay's replies.
pub const MAX_FRAME_ID_BYTES: usize = 128;
/// Most envelope ids one `ack` frame takes, and the longest id it accepts (envelope ids are
/// UUIDs).
pub const MAX_ACK_IDS: usize = 100;
pub const MAX_ACK_ID_BYTES: usize = 64;
const MESSAGES_HEAD: &str = r#"{"type":"messages","messages":["#;
const MESSAGES_TAIL: &str = "]}";

/// A frame from a client: one JSON object whose `action` names it. Unknown fields are ignored.
/// `id` is a string of at most 128 bytes the client chooses; replies to `send` and every error
/// frame echo it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum ClientFrame {
    /// Relays a ciphertext; answered with `sent` (or `error`).
    Send(SendFrame),
    /// Drains the caller's inbox as `messages` frames, oldest first; answered with `drained`.
    Fetch(Correlation),
    /// Counts the envelopes waiting; answered with `inbox`.
    List(Correlation),
    /// Keeps the connection alive; answered with `pong`.
    Ping(Correlation),
    /// Hands the connection a fresh access token of the same user, so it outlives the token it
    /// was opened with; answered with `renewed`.
    Renew(RenewFrame),
    /// On a provisioning socket only: asks for the socket's provisioning address; answered with
    /// `provisioning_address`.
    Provision(Correlation),
    /// Acknowledges envelopes (ack mode): they are deleted; answered with `acked`.
    Ack(AckFrame),
}

/// Every client frame's `action`, as [`ClientFrame::action`] names it.
pub const ACTIONS: [&str; 7] = ["send", "fetch", "list", "ping", "renew", "provision", "ack"];

impl ClientFrame {
    /// The frame's `action` (a metric label: one of [`ACTIONS`]).
    pub fn action(&self) -> &'static str {
        match self {
            Self::Send(_) => "send",
            Self::Fetch(_) => "fetch",
            Self::List(_) => "list",
            Self::Ping(_) => "ping",
            Self::Renew(_) => "renew",
            Self::Provision(_) => "provision",
            Self::Ack(_) => "ack",
        }
    }
}

/// `ack`: the ids of envelopes the client has processed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AckFrame {
    /// Echoed in the reply; a string of at most 128 bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, max_length = 128)]
    pub id: Option<Value>,
    /// Envelope ids (`id` of each envelope), 1 to 100, each at most 64 bytes.
    #[schema(min_items = 1, max_items = 100)]
    pub ids: Vec<String>,
    /// `true`: no `acked` reply when the ack succeeds (an error is still answered). Saves a
    /// frame per ack for a client that does not need the count.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub quiet: bool,
}

/// `renew`: an access token from `POST /v1/sessions/refresh` (or a new login) of the
/// connection's user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RenewFrame {
    /// Echoed in an error frame; a string of at most 128 bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, max_length = 128)]
    pub id: Option<Value>,
    /// The new access token.
    pub token: String,
}

/// The optional correlation id of a frame without other fields.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Correlation {
    /// A string of at most 128 bytes (UTF-8), echoed in an error frame.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, max_length = 128)]
    pub id: Option<Value>,
}

/// `send`: the sender is the connection's user, whatever else the frame says. To one user
/// (`to`, with `body` or `messages`) or to a group (`group_id`, with `body` and `devices`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SendFrame {
    /// A string of at most 128 bytes (UTF-8; a UUID by convention), echoed in the reply; from an
    /// ack-mode connection a repeat with the same id stores nothing again (§6.9).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, max_length = 128)]
    pub id: Option<Value>,
    /// The recipient's user id (a string that is not a UUID is an `unknown_recipient`); not
    /// with `group_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// A group send: the group's id (the sender must be a joined member). Takes `body` (one
    /// ciphertext for every member device) and `devices`, not `to` or `messages`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_id: Option<String>,
    /// A group send: every joined member's devices as the sender knows them (user id → its
    /// devices), the sending device left out (the sender's other devices included); `{}` when
    /// there is none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub devices: Option<std::collections::BTreeMap<String, Vec<GroupDevice>>>,
    /// One ciphertext for a recipient with exactly one device (the form from before devices),
    /// or for every device of a group send: standard base64 (padding optional), at most
    /// `MESSAGE_MAX_BYTES` decoded. A frame to one user has either `body` or `messages`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// One ciphertext per device of the recipient (without the sending device when sending to
    /// oneself); stored for all of them in one step or for none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages: Option<Vec<DeviceMessage>>,
    /// `true`: deliver only to a connected recipient and never store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub online_only: Option<bool>,
    /// A disappearing message: seconds, from `MIN_EXPIRES_IN_SECS` (5) to `INBOX_TTL_SECS`,
    /// after which the envelope is never delivered and the relay holds no copy of it (docs/api.md
    /// §6.6, disappearing messages). Each envelope then carries `expires_at`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 5)]
    pub expires_in: Option<u64>,
}

/// The shortest `expires_in` of a `send`: shorter would expire before a slow push lands.
pub const MIN_EXPIRES_IN_SECS: u64 = 5;

/// `expires_in` of a `send`: a whole number of seconds (its range is checked by the relay,
/// which knows `INBOX_TTL_SECS`).
fn expires_in(value: Option<Value>) -> Result<Option<u64>, Error> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| {
            Error::InvalidFrame(
                "`expires_in` is a whole number of seconds (from 5 to the inbox TTL)".into(),
            )
        }),
    }
}

/// The ciphertext for one device of the recipient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DeviceMessage {
    pub device_id: u32,
    /// The registration id of the device the sender's session was made with.
    pub registration_id: u32,
    /// Standard base64 (padding optional), at most `MESSAGE_MAX_BYTES` decoded.
    pub body: String,
}

/// One member device of a group send, with the registration id the sender's sender-key
/// distribution went to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct GroupDevice {
    pub device_id: u32,
    pub registration_id: u32,
}

/// What became of a message for one device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DeviceDelivery {
    pub device_id: u32,
    pub delivery: Delivery,
}

/// `ids` of an `ack`: 1 to `MAX_ACK_IDS` strings of at most `MAX_ACK_ID_BYTES`.
fn ack_ids(value: Option<Value>) -> Result<Vec<String>, Error> {
    let refused = || {
        Error::InvalidFrame(format!(
            "ack needs `ids`: 1 to {MAX_ACK_IDS} envelope ids, strings of at most {MAX_ACK_ID_BYTES} bytes"
        ))
    };
    let ids: Vec<String> = value
        .and_then(|v| serde_json::from_value(v).ok())
        .ok_or_else(refused)?;
    if ids.is_empty() || ids.len() > MAX_ACK_IDS || ids.iter().any(|i| i.len() > MAX_ACK_ID_BYTES) {
        return Err(refused());
    }
    Ok(ids)
}

/// `messages` of a `send`: a non-empty list, each device once.
fn device_messages(value: Value) -> Result<Vec<DeviceMessage>, Error> {
    let messages: Vec<DeviceMessage> = serde_json::from_value(value).map_err(|_| {
        Error::InvalidFrame(
            "`messages` is a list of {device_id, registration_id, body} objects".into(),
        )
    })?;
    if messages.is_empty() {
        return Err(Error::InvalidFrame("`messages` is empty".into()));
    }
    let mut seen = std::collections::HashSet::new();
    if let Some(twice) = messages.iter().find(|m| !seen.insert(m.device_id)) {
        return Err(Error::InvalidFrame(format!(
            "device {} appears twice in `messages`",
            twice.device_id
        )));
    }
    Ok(messages)
}

/// `devices` of a group send: user id → a list of {device_id, registration_id}, each device
/// once per user.
fn group_devices(
    value: Option<Value>,
) -> Result<std::collections::BTreeMap<String, Vec<GroupDevice>>, Error> {
    let refused = || {
        Error::InvalidFrame(
            "a group send needs `devices`: user id → list of {device_id, registration_id}".into(),
        )
    };
    let devices: std::collections::BTreeMap<String, Vec<GroupDevice>> = value
        .and_then(|v| serde_json::from_value(v).ok())
        .ok_or_else(refused)?;
    for (user, list) in &devices {
        let mut seen = std::collections::HashSet::new();
        if let Some(twice) = list.iter().find(|d| !seen.insert(d.device_id)) {
            return Err(Error::InvalidFrame(format!(
                "device {} of {user} appears twice in `devices`",
                twice.device_id
            )));
        }
    }
    Ok(devices)
}

impl ClientFrame {
    /// Reads a client frame as the API always has: a frame that is not a JSON object with a
    /// string `action`, or with a known field of the wrong type, is refused without an id; an
    /// unknown action or a `send` without `to` or `body` is refused with the frame's id. An id
    /// that is not a string of at most `MAX_FRAME_ID_BYTES` is refused too, without being
    /// echoed: a client could otherwise have the relay store and repeat any amount of data.
    pub fn parse(text: &str) -> Result<Self, (Option<Value>, Error)> {
        /// Every field optional, so that the id can be echoed when only the action is wrong.
        #[derive(Deserialize)]
        struct Loose {
            action: String,
            #[serde(default)]
            id: Option<Value>,
            #[serde(default)]
            to: Option<String>,
            #[serde(default)]
            body: Option<String>,
            #[serde(default)]
            messages: Option<Value>,
            #[serde(default)]
            group_id: Option<String>,
            #[serde(default)]
            devices: Option<Value>,
            #[serde(default)]
            online_only: Option<bool>,
            #[serde(default)]
            expires_in: Option<Value>,
            #[serde(default)]
            token: Option<String>,
            #[serde(default)]
            ids: Option<Value>,
            #[serde(default)]
            quiet: Option<bool>,
        }
        let frame: Loose = serde_json::from_str(text).map_err(|_| {
            (
                None,
                Error::InvalidFrame("frames are JSON objects with an action".into()),
            )
        })?;
        let id = match frame.id {
            Some(Value::String(s)) if s.len() > MAX_FRAME_ID_BYTES => None,
            Some(Value::String(s)) => Some(Some(Value::String(s))),
            None => Some(None),
            Some(_) => None,
        }
        .ok_or_else(|| {
            (
                None,
                Error::InvalidFrame(format!(
                    "`id` must be a string of at most {MAX_FRAME_ID_BYTES} bytes"
                )),
            )
        })?;
        let correlation = |id| Correlation { id };
        match frame.action.as_str() {
            "send" if frame.group_id.is_some() => {
                if frame.to.is_some() || frame.messages.is_some() {
                    return Err((
                        id,
                        Error::InvalidFrame(
                            "a group send takes `group_id`, `body` and `devices`, not `to` or `messages`"
                                .into(),
                        ),
                    ));
                }
                let Some(body) = frame.body else {
                    return Err((id, Error::InvalidFrame("send needs `body`".into())));
                };
                let devices = group_devices(frame.devices).map_err(|e| (id.clone(), e))?;
                let expires_in = expires_in(frame.expires_in).map_err(|e| (id.clone(), e))?;
                Ok(Self::Send(SendFrame {
                    id,
                    to: None,
                    group_id: frame.group_id,
                    devices: Some(devices),
                    body: Some(body),
                    messages: None,
                    online_only: frame.online_only,
                    expires_in,
                }))
            }
            "send" => {
                let Some(to) = frame.to else {
                    return Err((id, Error::InvalidFrame("send needs `to`".into())));
                };
                let messages = match frame.messages {
                    None | Some(Value::Null) => None,
                    Some(m) => Some(device_messages(m).map_err(|e| (id.clone(), e))?),
                };
                if frame.body.is_none() && messages.is_none() {
                    return Err((id, Error::InvalidFrame("send needs `body`".into())));
                }
                let expires_in = expires_in(frame.expires_in).map_err(|e| (id.clone(), e))?;
                if frame.body.is_some() && messages.is_some() {
                    return Err((
                        id,
                        Error::InvalidFrame("send takes `body` or `messages`, not both".into()),
                    ));
                }
                Ok(Self::Send(SendFrame {
                    id,
                    to: Some(to),
                    group_id: None,
                    devices: None,
                    body: frame.body,
                    messages,
                    online_only: frame.online_only,
                    expires_in,
                }))
            }
            "provision" => Ok(Self::Provision(correlation(id))),
            "ack" => match ack_ids(frame.ids) {
                Ok(ids) => Ok(Self::Ack(AckFrame {
                    id,
                    ids,
                    quiet: frame.quiet.unwrap_or(false),
                })),
                Err(e) => Err((id, e)),
            },
            "fetch" => Ok(Self::Fetch(correlation(id))),
            "list" => Ok(Self::List(correlation(id))),
            "ping" => Ok(Self::Ping(correlation(id))),
            "renew" => match frame.token {
                Some(token) => Ok(Self::Renew(RenewFrame { id, token })),
                None => Err((id, Error::InvalidFrame("renew needs `token`".into()))),
            },
            other => {
                let action: String = other.chars().take(32).collect();
                Err((
                    id,
                    Error::InvalidFrame(format!("unknown action {action:?}")),
                ))
            }
        }
    }

    pub fn id(&self) -> Option<&Value> {
        match self {
            Self::Send(f) => f.id.as_ref(),
            Self::Fetch(c) | Self::List(c) | Self::Ping(c) | Self::Provision(c) => c.id.as_ref(),
            Self::Renew(f) => f.id.as_ref(),
            Self::Ack(f) => f.id.as_ref(),
        }
    }
}

/// What became of a sent message (docs/api.md §6.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    /// Written to one of the recipient's connections; not stored.
    Delivered,
    /// In the recipient's inbox, waiting for a `fetch`.
    Queued,
    /// Nothing was stored: `online_only` and the recipient was not reached, or the recipient's
    /// inbox is full and the sender holds the largest share of it.
    Dropped,
}

/// A frame from the server: one JSON object whose `type` names it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    /// The reply to `send`.
    Sent {
        /// The `send` frame's id, or null.
        #[schema(value_type = Option<String>)]
        id: Option<Value>,
        /// Overall: `dropped` if any device's is, else `queued` if any device's is, else
        /// `delivered`.
        delivery: Delivery,
        /// Each device's delivery (empty for a group send).
        devices: Vec<DeviceDelivery>,
        /// A group send: the group.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        group_id: Option<Uuid>,
        /// A group send: member devices it was written to.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        delivered: Option<u32>,
        /// A group send: member devices whose inbox it waits in.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        queued: Option<u32>,
        /// A group send: member devices it was not stored for.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        dropped: Option<u32>,
    },
    /// Envelopes, oldest first: during a `fetch`, and pushed at any time while connected.
    Messages { messages: Vec<Envelope> },
    /// The end of a `fetch`: the inbox was empty.
    Drained,
    /// The reply to `list`.
    Inbox {
        /// Unexpired envelopes waiting.
        pending: u64,
    },
    /// The reply to `ping`.
    Pong,
    /// The reply to `renew`: the connection now lasts as long as the new token.
    Renewed {
        /// When the new token stops being accepted (leeway included), Unix milliseconds.
        valid_until: u64,
    },
    /// A frame that failed; the connection stays open.
    Error {
        /// The failed frame's id, or null when the frame could not be read (or its id was not
        /// acceptable).
        #[schema(value_type = Option<String>)]
        id: Option<Value>,
        /// A stable code (docs/api.md §6.7).
        code: String,
        message: String,
        /// `mismatched_devices`: devices of the recipient the message lacks.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        missing_devices: Option<Vec<u32>>,
        /// `mismatched_devices`: devices of the message the recipient does not have.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        extra_devices: Option<Vec<u32>>,
        /// `stale_devices`: devices whose registration id changed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stale_devices: Option<Vec<u32>>,
        /// A group send's `mismatched_devices` or `stale_devices`: per member, what the device
        /// map lacks, names in excess, or names with an old registration id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        users: Option<Vec<UserDevices>>,
        /// A group send's `unavailable` part way: members it was stored for.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stored_users: Option<u32>,
        /// A group send's `unavailable` part way: members it was not stored for.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        unstored_users: Option<Vec<Uuid>>,
        /// `stale_epoch` (an MLS group's application message): the group's current epoch.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        epoch: Option<u64>,
    },
    /// The reply to `ack`.
    Acked {
        /// The `ack` frame's id, or null.
        #[schema(value_type = Option<String>)]
        id: Option<Value>,
        /// How many of the ids were in flight and are now deleted.
        acked: u64,
    },
    /// On a provisioning socket, the reply to `provision`.
    ProvisioningAddress {
        /// Where the primary device sends the provisioning message (`PUT /v1/provisioning/{address}`).
        address: String,
        /// Seconds until the address expires.
        expires_in: u64,
    },
    /// On a provisioning socket: the primary's opaque provisioning message; the socket is
    /// closed after it.
    ProvisioningMessage {
        /// Standard base64, as the primary sent it.
        body: String,
    },
    /// Pushed to every connected device of a user who shares presence with `user_id` both ways
    /// (docs/api.md §6.10): `user_id`'s first connection opened, or its last one ended.
    Presence {
        #[schema(value_type = String, format = Uuid)]
        user_id: Uuid,
        online: bool,
        /// Going offline, when `user_id` shows it: now, Unix ms rounded down to the minute.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        last_seen: Option<u64>,
    },
}

impl ServerFrame {
    pub fn error(id: Option<Value>, e: &Error) -> Self {
        let (missing, extra, stale) = match e {
            Error::MismatchedDevices { missing, extra } => {
                (Some(missing.clone()), Some(extra.clone()), None)
            }
            Error::StaleDevices(stale) => (None, None, Some(stale.clone())),
            _ => (None, None, None),
        };
        let users = match e {
            Error::GroupMismatchedDevices(users) | Error::GroupStaleDevices(users) => {
                Some(users.clone())
            }
            _ => None,
        };
        let (stored_users, unstored_users) = match e {
            Error::GroupSendIncomplete {
                stored_users,
                unstored_users,
            } => (Some(*stored_users), Some(unstored_users.clone())),
            _ => (None, None),
        };
        Self::Error {
            id,
            code: e.code().into(),
            message: e.public_message(),
            missing_devices: missing,
            extra_devices: extra,
            stale_devices: stale,
            users,
            stored_users,
            unstored_users,
            epoch: match e {
                Error::StaleEpoch { current } => Some(*current),
                _ => None,
            },
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("frames serialize")
    }

    /// The code of an error frame.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Error { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// One relayed message as the recipient receives it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Envelope {
    /// Chosen by the server (not the sender's frame id).
    pub id: Uuid,
    /// The sender's user id, from the sender's token.
    pub from: Uuid,
    /// The sending device, from the sender's token.
    pub source_device: u32,
    /// When the relay accepted it, Unix milliseconds.
    pub sent_at: u64,
    /// A group send: the group (absent for a one-to-one message). The `id` is then the same for
    /// every device the send reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_id: Option<Uuid>,
    /// An MLS group's Commit was accepted at this epoch: it (and, for a device it adds, the
    /// Welcome) is fetched with `GET /v1/groups/{group_id}/mls/commits/{mls_epoch}`, as it may
    /// be larger than a WebSocket message; `body` is then empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mls_epoch: Option<u64>,
    /// A disappearing message (`send`'s `expires_in`): Unix milliseconds after which the relay
    /// never delivers it and holds no copy; the client deletes its own by then too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
    /// The ciphertext as sent, standard base64 with padding.
    pub body: String,
}

/// Packs envelopes (each already JSON) into `messages` frames of at most `MAX_FRAME_BYTES`,
/// without parsing them again; returns each frame with the number of envelopes it carries.
pub fn pack_messages<'a>(envelopes: impl IntoIterator<Item = &'a str>) -> Vec<(String, usize)> {
    let mut frames = Vec::new();
    let mut frame = String::from(MESSAGES_HEAD);
    let mut count = 0;
    for json in envelopes {
        if count > 0 && frame.len() + 1 + json.len() + MESSAGES_TAIL.len() > MAX_FRAME_BYTES {
            frame.push_str(MESSAGES_TAIL);
            frames.push((
                std::mem::replace(&mut frame, String::from(MESSAGES_HEAD)),
                count,
            ));
            count = 0;
        }
        if count > 0 {
            frame.push(',');
        }
        frame.push_str(json);
        count += 1;
    }
    if count > 0 {
        frame.push_str(MESSAGES_TAIL);
        frames.push((frame, count));
    }
    frames
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn envelope(i: u128, size: usize) -> String {
        serde_json::to_string(&Envelope {
            id: Uuid::from_u128(i),
            from: Uuid::from_u128(7),
            source_device: 1,
            sent_at: 1,
            group_id: None,
            mls_epoch: None,
            expires_at: None,
            body: "A".repeat(size),
        })
        .unwrap()
    }

    #[test]
    fn messages_frames_stay_under_the_limit_keep_order_and_read_as_server_frames() {
        let envs: Vec<String> = (0..10).map(|i| envelope(i, 60 * 1024)).collect();
        let frames = pack_messages(envs.iter().map(String::as_str));
        assert_eq!(frames.iter().map(|f| f.1).sum::<usize>(), 10);
        assert!(frames.len() > 1);
        let mut next = 0;
        for (frame, count) in &frames {
            assert!(frame.len() <= MAX_FRAME_BYTES, "{}", frame.len());
            let ServerFrame::Messages { messages } = serde_json::from_str(frame).unwrap() else {
                panic!("not a messages frame: {}", &frame[..40]);
            };
            assert_eq!(messages.len(), *count);
            for m in messages {
                assert_eq!(m.id, Uuid::from_u128(next));
                next += 1;
            }
        }
        assert!(pack_messages([]).is_empty());
    }

    #[test]
    fn client_frames_parse_as_the_api_documents() {
        let send =
            ClientFrame::parse(r#"{"action":"send","id":"7","to":"x","body":"","from":"y"}"#);
        assert_eq!(
            send.unwrap(),
            ClientFrame::Send(SendFrame {
                id: Some(json!("7")),
                to: Some("x".into()),
                group_id: None,
                devices: None,
                body: Some(String::new()),
                messages: None,
                online_only: None,
                expires_in: None,
            })
        );
        let group = ClientFrame::parse(
            r#"{"action":"send","group_id":"g","body":"QQ==","devices":{"u":[{"device_id":2,"registration_id":9}]}}"#,
        )
        .unwrap();
        let ClientFrame::Send(SendFrame {
            group_id: Some(g),
            devices: Some(devices),
            to: None,
            ..
        }) = group
        else {
            panic!("a group send: {group:?}")
        };
        assert_eq!(g, "g");
        assert_eq!(devices["u"][0].registration_id, 9);
        let fetch = ClientFrame::parse(r#"{"action":"fetch","id":"f"}"#).unwrap();
        assert_eq!(fetch.id(), Some(&json!("f")));
        // What the typed frame serializes to reads back the same.
        let ping = ClientFrame::Ping(Correlation::default());
        assert_eq!(
            ClientFrame::parse(&serde_json::to_string(&ping).unwrap()).unwrap(),
            ping
        );
    }

    #[test]
    fn refusals_echo_the_id_only_when_the_frame_could_be_read() {
        let refused = |text: &str| {
            let (id, e) = ClientFrame::parse(text).unwrap_err();
            (id, e.code(), e.public_message())
        };
        assert_eq!(
            refused(r#"{"action":"dance","id":"d"}"#),
            (
                Some(json!("d")),
                "invalid_frame",
                r#"unknown action "dance""#.into()
            )
        );
        assert_eq!(
            refused(r#"{"action":"send","id":"1","body":""}"#),
            (Some(json!("1")), "invalid_frame", "send needs `to`".into())
        );
        assert_eq!(
            refused(r#"{"action":"send","id":"1","to":"x"}"#).2,
            "send needs `body`"
        );
        for bad in [
            r#"{"action":"send","id":"1","group_id":"g","to":"x","body":"","devices":{}}"#,
            r#"{"action":"send","id":"1","group_id":"g","body":"","messages":[],"devices":{}}"#,
            r#"{"action":"send","id":"1","group_id":"g","body":""}"#,
            r#"{"action":"send","id":"1","group_id":"g","devices":{}}"#,
            r#"{"action":"send","id":"1","group_id":"g","body":"","devices":{"u":[{"device_id":1,"registration_id":1},{"device_id":1,"registration_id":2}]}}"#,
        ] {
            assert_eq!(refused(bad).0, Some(json!("1")), "{bad}");
            assert_eq!(refused(bad).1, "invalid_frame", "{bad}");
        }
        for bad in [
            "nope",
            "[]",
            r#"{"id":1}"#,
            r#"{"action":"send","id":1,"to":"x","body":"","online_only":"yes"}"#,
        ] {
            assert_eq!(refused(bad).0, None, "{bad}");
        }
    }

    #[test]
    fn ids_are_strings_of_at_most_128_bytes() {
        let with_id = |id: Value| {
            ClientFrame::parse(&json!({"action":"send","id":id,"to":"x","body":""}).to_string())
        };
        let longest = "é".repeat(64);
        assert_eq!(longest.len(), MAX_FRAME_ID_BYTES);
        assert_eq!(with_id(json!(longest)).unwrap().id(), Some(&json!(longest)));
        assert_eq!(with_id(Value::Null).unwrap().id(), None, "null is no id");
        for bad in [
            json!("a".repeat(129)),
            json!(format!("{longest}x")),
            json!(7),
            json!(1.5),
            json!(true),
            json!(["a"]),
            json!({"a": 1}),
        ] {
            let (id, e) = with_id(bad.clone()).unwrap_err();
            assert_eq!(id, None, "{bad} must not be echoed");
            assert_eq!(e.code(), "invalid_frame");
            assert_eq!(
                e.public_message(),
                "`id` must be a string of at most 128 bytes"
            );
        }
        // Refused before the action is looked at: an unknown action does not echo it either.
        let (id, _) = ClientFrame::parse(r#"{"action":"dance","id":{"x":1}}"#).unwrap_err();
        assert_eq!(id, None);
    }

    #[test]
    fn error_frames_carry_the_public_code_and_message() {
        let frame = ServerFrame::error(Some(json!("m-1")), &Error::UnknownRecipient);
        assert_eq!(
            serde_json::from_str::<Value>(&frame.to_json()).unwrap(),
            json!({"type":"error","id":"m-1","code":"unknown_recipient","message":"unknown recipient"})
        );
        let frame = ServerFrame::error(
            None,
            &Error::GroupMismatchedDevices(vec![UserDevices {
                user_id: Uuid::nil(),
                missing: vec![2],
                extra: vec![],
                stale: vec![],
            }]),
        );
        let value = serde_json::from_str::<Value>(&frame.to_json()).unwrap();
        assert_eq!(value["code"], "mismatched_devices");
        assert_eq!(
            value["users"],
            json!([{"user_id": Uuid::nil(), "missing": [2]}])
        );
        assert!(value.get("missing_devices").is_none());
        let frame = ServerFrame::error(None, &Error::Unavailable("10.0.0.1 refused".into()));
        assert!(!frame.to_json().contains("10.0.0.1"));
        assert!(frame.to_json().contains(r#""id":null"#));
    }

    #[test]
    fn expires_in_is_a_whole_number_of_seconds_echoing_the_id_when_refused() {
        let parsed = |text: &str| match ClientFrame::parse(text) {
            Ok(ClientFrame::Send(send)) => Ok(send.expires_in),
            Ok(other) => panic!("{other:?}"),
            Err((id, e)) => Err((id, e.code())),
        };
        assert_eq!(
            parsed(r#"{"action":"send","to":"x","body":"","expires_in":30}"#),
            Ok(Some(30))
        );
        assert_eq!(
            parsed(r#"{"action":"send","group_id":"g","body":"","devices":{},"expires_in":5}"#),
            Ok(Some(5))
        );
        assert_eq!(parsed(r#"{"action":"send","to":"x","body":""}"#), Ok(None));
        for bad in ["-1", "1.5", "\"30\"", "true"] {
            let text =
                format!(r#"{{"action":"send","id":"i","to":"x","body":"","expires_in":{bad}}}"#);
            assert_eq!(
                parsed(&text),
                Err((Some(json!("i")), "invalid_frame")),
                "{bad}"
            );
        }
    }
}
