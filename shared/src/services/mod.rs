//! Use cases, written against the storage traits only.

mod account_age;
pub mod accounts;
pub mod attachments;
pub mod auth;
pub mod devices;
pub mod directory;
pub mod relay;
mod relay_acks;
mod relay_provisioning;

pub use account_age::AccountAge;

use crate::config::{Bucket, RateLimits};
use crate::error::{Error, Result};
use crate::model::UserId;
use crate::storage::{RateDecision, RateLimiter};

/// Every rate limit of the relay: what one bucket counts (its key) and which setting sizes it.
#[derive(Debug, Clone, Copy)]
pub enum Limit<'a> {
    /// Requests to the unauthenticated auth routes, per client IP (`RATE_LIMIT_AUTH`).
    Auth { ip: &'a str },
    /// Failed logins per client IP (`RATE_LIMIT_LOGIN_FAILURES`).
    LoginFailures { ip: &'a str },
    /// Failed logins per (normalized) username, from any IP (`RATE_LIMIT_LOGIN_FAILURES_USER`).
    LoginFailuresUser { username: &'a str },
    /// Bundle fetches per requester (`RATE_LIMIT_BUNDLE`).
    Bundle { requester: UserId },
    /// Bundle fetches per requester → target pair (`RATE_LIMIT_BUNDLE_PAIR`).
    BundlePair { requester: UserId, target: UserId },
    /// Bundle fetches of one target by established requesters (`RATE_LIMIT_BUNDLE_TARGET`).
    BundleTarget { target: UserId },
    /// Bundle fetches of one target by new accounts (`RATE_LIMIT_BUNDLE_TARGET_NEW`).
    BundleTargetNew { target: UserId },
    /// Username lookups per requester (`RATE_LIMIT_LOOKUP`).
    Lookup { requester: UserId },
    /// `PUT /v1/keys` per user (`RATE_LIMIT_KEYS_UPLOAD`).
    KeysUpload { user: UserId },
    /// Messages per sender (`RATE_LIMIT_MESSAGES`).
    Messages { sender: UserId },
    /// Message body bytes per sender (`RATE_LIMIT_MESSAGE_BYTES`), charged with each body's size.
    MessageBytes { sender: UserId },
    /// Messages per sender → recipient pair (`RATE_LIMIT_MESSAGE_PAIR`).
    MessagePair { sender: UserId, recipient: UserId },
    /// WebSocket handshakes per user (`RATE_LIMIT_CONNECT`).
    Connect { user: UserId },
    /// WebSocket handshakes per client IP, before the token is checked (`RATE_LIMIT_CONNECT_IP`).
    ConnectIp { ip: &'a str },
    /// Client frames of any kind per user (`RATE_LIMIT_FRAMES`).
    Frames { user: UserId },
    /// Linking codes and provisioning messages per account (`RATE_LIMIT_PROVISIONING`).
    Provisioning { user: UserId },
    /// Client frames per provisioning socket (`RATE_LIMIT_PROVISIONING_FRAMES`).
    ProvisioningFrames { connection_id: &'a str },
    /// Linking codes presented (`POST /v1/devices`) per client IP (`RATE_LIMIT_LINK`).
    Link { ip: &'a str },
    /// Attachment uploads per user (`RATE_LIMIT_ATTACHMENTS`).
    Attachments { user: UserId },
    /// Attachment uploads per account younger than `NEW_ACCOUNT_AGE_SECS`, instead of
    /// `Attachments` (`RATE_LIMIT_ATTACHMENTS_NEW`).
    AttachmentsNew { user: UserId },
    /// Attachment uploads per client IP, whatever the account (`RATE_LIMIT_ATTACHMENTS_IP`).
    AttachmentsIp { ip: &'a str },
    /// Attachment downloads per user (`RATE_LIMIT_ATTACHMENT_DOWNLOADS`).
    AttachmentDownloads { user: UserId },
}

impl Limit<'_> {
    /// The bucket's name (the Redis adapter prefixes it).
    pub fn key(&self) -> String {
        match self {
            Self::Auth { ip } => format!("auth:{ip}"),
            Self::LoginFailures { ip } => format!("login-fail:{ip}"),
            Self::LoginFailuresUser { username } => format!("login-fail-user:{username}"),
            Self::Bundle { requester } => format!("bundle:{requester}"),
            Self::BundlePair { requester, target } => format!("bundle:{requester}:{target}"),
            Self::BundleTarget { target } => format!("bundle-target:{target}"),
            Self::BundleTargetNew { target } => format!("bundle-target-new:{target}"),
            Self::Lookup { requester } => format!("lookup:{requester}"),
            Self::KeysUpload { user } => format!("keys-upload:{user}"),
            // A send takes these three in one script: `{sender}` puts them in one cluster slot.
            Self::Messages { sender } => format!("msg:{{{sender}}}"),
            Self::MessageBytes { sender } => format!("msg-bytes:{{{sender}}}"),
            Self::MessagePair { sender, recipient } => format!("msg:{{{sender}}}:{recipient}"),
            Self::Connect { user } => format!("connect:{user}"),
            Self::ConnectIp { ip } => format!("connect-ip:{ip}"),
            // In the sender's slot: a send takes it with the message limits in one script.
            Self::Frames { user } => format!("frames:{{{user}}}"),
            Self::Provisioning { user } => format!("provisioning:{user}"),
            Self::ProvisioningFrames { connection_id } => {
                format!("provisioning-frames:{connection_id}")
            }
            Self::Link { ip } => format!("link:{ip}"),
            Self::Attachments { user } => format!("attachments:{user}"),
            Self::AttachmentsNew { user } => format!("attachments-new:{user}"),
            Self::AttachmentsIp { ip } => format!("attachments-ip:{ip}"),
            Self::AttachmentDownloads { user } => format!("attachment-downloads:{user}"),
        }
    }

    pub fn bucket(&self, limits: &RateLimits) -> Bucket {
        match self {
            Self::Auth { .. } => limits.auth,
            Self::LoginFailures { .. } => limits.login_failures,
            Self::LoginFailuresUser { .. } => limits.login_failures_user,
            Self::Bundle { .. } => limits.bundle,
            Self::BundlePair { .. } => limits.bundle_pair,
            Self::BundleTarget { .. } => limits.bundle_target,
            Self::BundleTargetNew { .. } => limits.bundle_target_new,
            Self::Lookup { .. } => limits.lookup,
            Self::KeysUpload { .. } => limits.keys_upload,
            Self::Messages { .. } => limits.messages,
            Self::MessageBytes { .. } => limits.message_bytes,
            Self::MessagePair { .. } => limits.message_pair,
            Self::Connect { .. } => limits.connect,
            Self::ConnectIp { .. } => limits.connect_ip,
            Self::Frames { .. } => limits.frames,
            Self::Provisioning { .. } => limits.provisioning,
            Self::ProvisioningFrames { .. } => limits.provisioning_frames,
            Self::Link { .. } => limits.link,
            Self::Attachments { .. } => limits.attachments,
            Self::AttachmentsNew { .. } => limits.attachments_new,
            Self::AttachmentsIp { .. } => limits.attachments_ip,
            Self::AttachmentDownloads { .. } => limits.attachment_downloads,
        }
    }
}

/// Takes `cost` from the limit's bucket (0 only asks), mapping a refusal to `RateLimited` with
/// whole seconds to wait.
pub(crate) async fn limit(
    limiter: &dyn RateLimiter,
    limits: &RateLimits,
    which: Limit<'_>,
    cost: u32,
) -> Result<()> {
    let decision = limiter
        .take(&which.key(), which.bucket(limits), cost)
        .await?;
    decided(&which, decision)
}

/// A limit's decision (taken by the limiter, or by a storage step that charged it itself) as a
/// result: a refusal is `RateLimited` with whole seconds to wait.
pub(crate) fn decided(which: &Limit<'_>, decision: RateDecision) -> Result<()> {
    match decision {
        RateDecision::Allowed => Ok(()),
        RateDecision::Limited { retry_after_ms } => {
            let retry_after_secs = retry_after_ms.div_ceil(1000).max(1);
            // The bucket's key names the source: the client IP, or the user for per-user limits.
            tracing::info!(bucket = %which.key(), retry_after_secs, "rate limit hit");
            Err(Error::RateLimited { retry_after_secs })
        }
    }
}

/// Takes each limit's cost in one atomic step, all or none (a refusal costs nothing); the keys
/// must share a hash slot (see `Limit::key`). Refused: `RateLimited` with the longest wait.
pub(crate) async fn limit_all(
    limiter: &dyn RateLimiter,
    limits: &RateLimits,
    which: &[(Limit<'_>, u32)],
) -> Result<()> {
    let keys: Vec<String> = which.iter().map(|(l, _)| l.key()).collect();
    let takes: Vec<(&str, Bucket, u32)> = which
        .iter()
        .zip(&keys)
        .map(|((l, cost), key)| (key.as_str(), l.bucket(limits), *cost))
        .collect();
    match limiter.take_all(&takes).await? {
        RateDecision::Allowed => Ok(()),
        RateDecision::Limited { retry_after_ms } => {
            let retry_after_secs = retry_after_ms.div_ceil(1000).max(1);
            tracing::info!(buckets = ?keys, retry_after_secs, "rate limit hit");
            Err(Error::RateLimited { retry_after_secs })
        }
    }
}

/// Returns `amount` tokens to the limit's bucket; a failure only costs the client a token, so it
/// is logged, not raised.
pub(crate) async fn give_back(
    limiter: &dyn RateLimiter,
    limits: &RateLimits,
    which: Limit<'_>,
    amount: u32,
) {
    if let Err(e) = limiter
        .give_back(&which.key(), which.bucket(limits), amount)
        .await
    {
        e.log();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    #[test]
    fn the_limits_of_a_send_share_one_cluster_slot() {
        let (sender, recipient) = (Uuid::new_v4(), Uuid::new_v4());
        let tag = |l: Limit| {
            let key = l.key();
            let open = key.find('{').expect("a hash tag");
            let close = open + key[open..].find('}').expect("closed");
            key[open + 1..close].to_string()
        };
        for l in [
            Limit::Frames { user: sender },
            Limit::Messages { sender },
            Limit::MessageBytes { sender },
            Limit::MessagePair { sender, recipient },
        ] {
            assert_eq!(tag(l), sender.to_string(), "{}", l.key());
        }
    }

    #[test]
    fn every_limit_has_its_own_bucket_and_setting() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let all = [
            Limit::Auth { ip: "203.0.113.7" },
            Limit::LoginFailures { ip: "203.0.113.7" },
            Limit::LoginFailuresUser { username: "alice" },
            Limit::Bundle { requester: a },
            Limit::BundlePair {
                requester: a,
                target: b,
            },
            Limit::BundleTarget { target: b },
            Limit::BundleTargetNew { target: b },
            Limit::Lookup { requester: a },
            Limit::KeysUpload { user: a },
            Limit::Messages { sender: a },
            Limit::MessageBytes { sender: a },
            Limit::MessagePair {
                sender: a,
                recipient: b,
            },
            Limit::Connect { user: a },
            Limit::ConnectIp { ip: "203.0.113.7" },
            Limit::Frames { user: a },
            Limit::Provisioning { user: a },
            Limit::ProvisioningFrames {
                connection_id: "AAAAAAAAAAAAAAAA",
            },
            Limit::Link { ip: "203.0.113.7" },
            Limit::Attachments { user: a },
            Limit::AttachmentsNew { user: a },
            Limit::AttachmentsIp { ip: "203.0.113.7" },
            Limit::AttachmentDownloads { user: a },
        ];
        let keys: std::collections::HashSet<String> = all.iter().map(Limit::key).collect();
        assert_eq!(keys.len(), all.len(), "{keys:?}");
        let limits = RateLimits {
            login_failures: Bucket::new(1, 1),
            login_failures_user: Bucket::new(101, 1),
            auth: Bucket::new(2, 1),
            bundle: Bucket::new(3, 1),
            bundle_pair: Bucket::new(4, 1),
            bundle_target: Bucket::new(41, 1),
            bundle_target_new: Bucket::new(42, 1),
            lookup: Bucket::new(43, 1),
            keys_upload: Bucket::new(44, 1),
            messages: Bucket::new(5, 1),
            message_bytes: Bucket::new(6, 1),
            message_pair: Bucket::new(7, 1),
            connect: Bucket::new(8, 1),
            connect_ip: Bucket::new(9, 1),
            frames: Bucket::new(10, 1),
            provisioning: Bucket::new(11, 1),
            provisioning_frames: Bucket::new(111, 1),
            link: Bucket::new(12, 1),
            attachments: Bucket::new(13, 1),
            attachments_new: Bucket::new(131, 1),
            attachments_ip: Bucket::new(132, 1),
            attachment_downloads: Bucket::new(14, 1),
        };
        let sizes: Vec<_> = all.iter().map(|l| l.bucket(&limits)).collect();
        assert_eq!(
            sizes,
            vec![
                limits.auth,
                limits.login_failures,
                limits.login_failures_user,
                limits.bundle,
                limits.bundle_pair,
                limits.bundle_target,
                limits.bundle_target_new,
                limits.lookup,
                limits.keys_upload,
                limits.messages,
                limits.message_bytes,
                limits.message_pair,
                limits.connect,
                limits.connect_ip,
                limits.frames,
                limits.provisioning,
                limits.provisioning_frames,
                limits.link,
                limits.attachments,
                limits.attachments_new,
                limits.attachments_ip,
                limits.attachment_downloads,
            ]
        );
    }
}
