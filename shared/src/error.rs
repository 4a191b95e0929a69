//! The one error type of the domain, and its one mapping to status codes and public messages.

/// Everything a request can fail with. Messages shown to clients come from [`Error::public_message`],
/// never from the `Debug` of an internal error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("malformed JSON body")]
    MalformedJson,
    #[error("a signature does not verify against the identity key")]
    InvalidSignature,
    #[error("username is taken")]
    UsernameTaken,
    #[error("invalid credentials")]
    InvalidCredentials,
    #[error("missing, invalid, expired or revoked token")]
    Unauthorized,
    #[error("user not found")]
    UserNotFound,
    #[error("no such route")]
    RouteNotFound,
    #[error("no one-time prekey left")]
    PrekeysExhausted,
    /// A multi-device bundle: these devices have no one-time prekey left (nothing was taken).
    #[error("no one-time prekey left on devices {0:?}")]
    DevicesExhausted(Vec<u32>),
    #[error("not allowed for this device")]
    Forbidden,
    #[error("device not found")]
    DeviceNotFound,
    #[error("attachment not found")]
    AttachmentNotFound,
    #[error("the account has the most devices it may have")]
    TooManyDevices,
    /// A link would give a device id a registration id a removed device under it had.
    #[error("registration_id was used by a removed device under the id this device would get; generate another")]
    RegistrationIdReused,
    #[error("linking code is wrong, expired or already used")]
    InvalidCode,
    #[error("provisioning address is unknown, expired or already used")]
    UnknownAddress,
    /// A send's device list is not the recipient's: nothing was stored.
    #[error("the devices of the message are not the recipient's devices")]
    MismatchedDevices { missing: Vec<u32>, extra: Vec<u32> },
    /// A send from an ack-mode connection reused an id with other content.
    #[error("this id was sent before with other content; use a new id")]
    IdReused,
    /// A send named devices whose registration id changed (re-registered): nothing was stored.
    #[error("some devices of the message were registered again")]
    StaleDevices(Vec<u32>),
    #[error("request body too large")]
    PayloadTooLarge,
    /// Not in the group's roster (or no such group): existence does not leak.
    #[error("group not found")]
    GroupNotFound,
    #[error("only an admin of the group may do this")]
    NotAnAdmin,
    /// A group send or change by a user who is not a joined member.
    #[error("not a member of the group")]
    NotAMember,
    #[error("the group has the most members it may have")]
    GroupFull,
    /// `if_version` no longer matches: nothing was changed; the current group (wire JSON) goes
    /// back with the error.
    #[error("the group changed since that version")]
    VersionConflict(Box<serde_json::Value>),
    /// A group send's device map is not the members' devices: nothing was stored.
    #[error("the devices of the message are not the members' devices")]
    GroupMismatchedDevices(Vec<UserDevices>),
    /// A group send named devices whose registration id changed: nothing was stored.
    #[error("some devices of the message were registered again")]
    GroupStaleDevices(Vec<UserDevices>),
    /// An uploaded MLS KeyPackage that does not parse, verify, use the relay's cipher suite or
    /// name the uploading device in its credential.
    #[error("invalid key package: {0}")]
    InvalidKeyPackage(String),
    /// An MLS Commit, Welcome or GroupInfo the relay refuses: it does not parse or verify
    /// against the group state the relay tracks (members would reject it too).
    #[error("invalid commit: {0}")]
    InvalidCommit(String),
    /// An MLS message for another epoch than the group's: the current one goes back.
    #[error("the group is at epoch {current}")]
    StaleEpoch { current: u64 },
    /// An MLS Commit whose Adds and Removes are not all the devices of the users the request
    /// adds and removes (or change devices of other users).
    #[error("the commit does not add or remove exactly the users' devices")]
    MlsClientMismatch(Vec<UserDevices>),
    /// An MLS route on a group that does not run MLS, or a Signal-form send to one that does.
    #[error("the group does not use this protocol")]
    WrongProtocol,
    /// No KeyPackage (not even a last-resort one) is left for these devices: nothing was taken.
    #[error("no key package left on devices {0:?}")]
    KeyPackagesExhausted(Vec<u32>),
    #[error("rate limited")]
    RateLimited { retry_after_secs: u64 },
    #[error("unknown recipient")]
    UnknownRecipient,
    #[error("message body too large")]
    MessageTooLarge,
    #[error("invalid frame: {0}")]
    InvalidFrame(String),
    /// A `fetch` reached its deadline with envelopes left: they stay in the inbox (code
    /// `unavailable`, as a client already fetches again after it).
    #[error("fetch stopped at its time limit; the remaining messages are kept, fetch again")]
    FetchUnfinished,
    /// A backing store did not answer; the detail is logged, not returned.
    #[error("backing store unavailable: {0}")]
    Unavailable(String),
    /// A group send stored for some members and not for others (a Redis node did not answer):
    /// code `unavailable`, with what was stored; a repeat with the same id from an ack-mode
    /// connection stores only what is missing.
    #[error("the message was stored for {stored_users} members, not for {unstored_users:?}")]
    GroupSendIncomplete {
        stored_users: u32,
        unstored_users: Vec<uuid::Uuid>,
    },
    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One member's part of a refused group send: the devices the map lacks (`missing`), names but
/// the member does not have (`extra`), or names with an old registration id (`stale`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct UserDevices {
    #[schema(value_type = String, format = Uuid)]
    pub user_id: uuid::Uuid,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra: Vec<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stale: Vec<u32>,
}

/// The body of every HTTP error response.
#[derive(Debug, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// A stable snake_case code (docs/api.md §4.2).
    pub code: String,
    /// Human-readable; never internal details.
    pub message: String,
    /// `prekeys_exhausted` of a multi-device bundle: the devices without a one-time prekey.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub devices: Option<Vec<u32>>,
    /// `version_conflict`: the group as it is now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub group: Option<serde_json::Value>,
    /// `stale_epoch`: the group's current MLS epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
    /// `mls_client_mismatch`: per user, the devices the commit should have added or removed
    /// (`missing`) and those it should not have (`extra`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub users: Option<Vec<UserDevices>>,
}

impl Error {
    pub fn invalid(msg: impl Into<String>) -> Self {
        Self::InvalidRequest(msg.into())
    }

    pub fn unavailable(what: &str, err: impl std::fmt::Display) -> Self {
        Self::Unavailable(format!("{what}: {err}"))
    }

    /// `Unavailable`, its detail `err` with its whole chain of causes.
    pub fn unavailable_by(what: &str, err: &(dyn std::error::Error + 'static)) -> Self {
        Self::unavailable(what, chain(err))
    }

    pub fn status(&self) -> u16 {
        match self {
            Self::InvalidRequest(_)
            | Self::MalformedJson
            | Self::InvalidSignature
            | Self::InvalidFrame(_)
            | Self::InvalidKeyPackage(_)
            | Self::InvalidCommit(_)
            | Self::MessageTooLarge => 400,
            Self::InvalidCredentials | Self::Unauthorized => 401,
            Self::Forbidden | Self::InvalidCode | Self::NotAnAdmin | Self::NotAMember => 403,
            Self::UserNotFound
            | Self::RouteNotFound
            | Self::UnknownRecipient
            | Self::DeviceNotFound
            | Self::AttachmentNotFound
            | Self::GroupNotFound
            | Self::UnknownAddress => 404,
            Self::UsernameTaken
            | Self::TooManyDevices
            | Self::RegistrationIdReused
            | Self::MismatchedDevices { .. }
            | Self::GroupMismatchedDevices(_)
            | Self::GroupFull
            | Self::VersionConflict(_)
            | Self::StaleEpoch { .. }
            | Self::MlsClientMismatch(_)
            | Self::WrongProtocol
            | Self::IdReused => 409,
            Self::StaleDevices(_) | Self::GroupStaleDevices(_) => 410,
            Self::PrekeysExhausted | Self::DevicesExhausted(_) | Self::KeyPackagesExhausted(_) => {
                412
            }
            Self::PayloadTooLarge => 413,
            Self::RateLimited { .. } => 429,
            Self::Internal(_) => 500,
            Self::Unavailable(_) | Self::FetchUnfinished | Self::GroupSendIncomplete { .. } => 503,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidRequest(_) => "invalid_request",
            Self::MalformedJson => "malformed_json",
            Self::InvalidSignature => "invalid_signature",
            Self::UsernameTaken => "username_taken",
            Self::InvalidCredentials => "invalid_credentials",
            Self::Unauthorized => "unauthorized",
            Self::UserNotFound => "user_not_found",
            Self::RouteNotFound => "not_found",
            Self::PrekeysExhausted | Self::DevicesExhausted(_) => "prekeys_exhausted",
            Self::Forbidden => "forbidden",
            Self::DeviceNotFound => "device_not_found",
            Self::AttachmentNotFound => "attachment_not_found",
            Self::TooManyDevices => "too_many_devices",
            Self::RegistrationIdReused => "registration_id_reused",
            Self::InvalidCode => "invalid_code",
            Self::UnknownAddress => "unknown_address",
            Self::MismatchedDevices { .. } | Self::GroupMismatchedDevices(_) => {
                "mismatched_devices"
            }
            Self::StaleDevices(_) | Self::GroupStaleDevices(_) => "stale_devices",
            Self::GroupNotFound => "group_not_found",
            Self::NotAnAdmin => "not_an_admin",
            Self::NotAMember => "not_a_member",
            Self::GroupFull => "group_full",
            Self::VersionConflict(_) => "version_conflict",
            Self::InvalidKeyPackage(_) => "invalid_key_package",
            Self::InvalidCommit(_) => "invalid_commit",
            Self::StaleEpoch { .. } => "stale_epoch",
            Self::MlsClientMismatch(_) => "mls_client_mismatch",
            Self::WrongProtocol => "wrong_protocol",
            Self::KeyPackagesExhausted(_) => "key_packages_exhausted",
            Self::IdReused => "id_reused",
            Self::PayloadTooLarge => "payload_too_large",
            Self::RateLimited { .. } => "rate_limited",
            Self::UnknownRecipient => "unknown_recipient",
            Self::MessageTooLarge => "too_large",
            Self::InvalidFrame(_) => "invalid_frame",
            Self::Unavailable(_) | Self::FetchUnfinished | Self::GroupSendIncomplete { .. } => {
                "unavailable"
            }
            Self::Internal(_) => "internal",
        }
    }

    /// Human text safe to show a client: validation details, never internals.
    pub fn public_message(&self) -> String {
        match self {
            Self::InvalidRequest(m) => m.clone(),
            Self::InvalidFrame(m) => m.clone(),
            Self::Unavailable(_) => {
                "a backing store is unavailable; nothing was changed, try again".into()
            }
            Self::Internal(_) => "internal error".into(),
            Self::RateLimited { retry_after_secs } => {
                format!("too many requests; retry after {retry_after_secs} s")
            }
            Self::MessageTooLarge => "message body over the size limit".into(),
            Self::MismatchedDevices { missing, extra } => {
                format!("devices missing: {missing:?}, devices not the recipient's: {extra:?}")
            }
            Self::StaleDevices(stale) => {
                format!("devices registered again (fetch their bundles): {stale:?}")
            }
            Self::GroupSendIncomplete { stored_users, .. } => {
                format!("stored for {stored_users} members only; send again with the same id")
            }
            other => other.to_string(),
        }
    }

    /// The `{"error":{"code","message"}}` body of the API (docs/api.md).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(ErrorBody {
            error: ErrorDetail {
                code: self.code().into(),
                message: self.public_message(),
                devices: match self {
                    Self::DevicesExhausted(devices) | Self::KeyPackagesExhausted(devices) => {
                        Some(devices.clone())
                    }
                    _ => None,
                },
                group: match self {
                    Self::VersionConflict(group) => Some((**group).clone()),
                    _ => None,
                },
                epoch: match self {
                    Self::StaleEpoch { current } => Some(*current),
                    _ => None,
                },
                users: match self {
                    Self::MlsClientMismatch(users) => Some(users.clone()),
                    _ => None,
                },
            },
        })
        .expect("error bodies serialize")
    }

    /// Logs server-side faults at the right level; client errors are not worth a warning.
    pub fn log(&self) {
        match self {
            Self::Unavailable(detail) => {
                tracing::warn!(code = self.code(), detail = %detail, "backing store error")
            }
            Self::Internal(detail) => {
                tracing::error!(code = self.code(), detail = %detail, "internal error")
            }
            _ => tracing::debug!(code = self.code(), "request refused"),
        }
    }
}

/// An error and its causes, `: `-separated; a cause whose text the error's already holds is
/// not repeated.
pub fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
        cause = c.source();
    }
    text
}

/// Every code [`Error::code`] answers (a unit test holds the two together).
pub const CODES: &[&str] = &[
    "invalid_request",
    "malformed_json",
    "invalid_signature",
    "username_taken",
    "invalid_credentials",
    "unauthorized",
    "user_not_found",
    "not_found",
    "prekeys_exhausted",
    "forbidden",
    "device_not_found",
    "attachment_not_found",
    "too_many_devices",
    "registration_id_reused",
    "invalid_code",
    "unknown_address",
    "mismatched_devices",
    "stale_devices",
    "group_not_found",
    "not_an_admin",
    "not_a_member",
    "group_full",
    "version_conflict",
    "invalid_key_package",
    "invalid_commit",
    "stale_epoch",
    "mls_client_mismatch",
    "wrong_protocol",
    "key_packages_exhausted",
    "id_reused",
    "payload_too_large",
    "rate_limited",
    "unknown_recipient",
    "too_large",
    "invalid_frame",
    "unavailable",
    "internal",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_details_never_reach_the_client() {
        let e = Error::unavailable("dynamodb", "connection refused to 10.0.0.1:8000 secret=abc");
        assert_eq!(e.status(), 503);
        let body = e.to_json().to_string();
        assert!(!body.contains("10.0.0.1") && !body.contains("secret"));
        assert!(body.contains("\"code\":\"unavailable\""));
        let e = Error::Internal("panic at foo.rs".into());
        assert!(!e.to_json().to_string().contains("foo.rs"));
    }

    #[test]
    fn every_code_answered_is_listed() {
        let source = crate::repo_file("shared/src/error.rs");
        let body = source
            .split("pub fn code(&self)")
            .nth(1)
            .and_then(|rest| rest.split("\n    }\n").next())
            .expect("Error::code in error.rs");
        let answered: std::collections::BTreeSet<&str> =
            body.split('"').skip(1).step_by(2).collect();
        let listed: std::collections::BTreeSet<&str> = CODES.iter().copied().collect();
        assert_eq!(answered, listed);
    }

    #[test]
    fn a_cause_chain_is_written_out_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("connect failed")]
        struct Outer(#[source] std::io::Error);
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert_eq!(chain(&Outer(refused)), "connect failed: refused");
        let io = std::io::Error::other("refused");
        assert_eq!(chain(&io), "refused");
        assert!(matches!(
            Error::unavailable_by("redis", &Outer(io)),
            Error::Unavailable(d) if d == "redis: connect failed: refused"
        ));
    }

    #[test]
    fn codes_match_the_spec() {
        assert_eq!(
            (Error::UsernameTaken.status(), Error::UsernameTaken.code()),
            (409, "username_taken")
        );
        assert_eq!(Error::PrekeysExhausted.status(), 412);
        assert_eq!(
            Error::RateLimited {
                retry_after_secs: 3
            }
            .status(),
            429
        );
        assert_eq!(Error::MessageTooLarge.code(), "too_large");
        assert_eq!(Error::InvalidSignature.code(), "invalid_signature");
    }
}
