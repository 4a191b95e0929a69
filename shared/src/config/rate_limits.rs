//! Every rate limit, declared once: its `Limit` variant (what one bucket counts), the bucket's
//! key, its field in `RateLimits`, its variable and default, and the line of the configuration
//! reference. docs/api.md §7.1 explains each; a test checks that its table names the same
//! variables and defaults.

use std::time::Duration;

use super::env::{invalid, Env};
use super::settings::Setting;
use super::ConfigError;
use crate::ids::UserId;

/// A token bucket: `capacity` tokens, refilled at `capacity / period` per second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    pub capacity: u32,
    pub period: Duration,
}

impl Bucket {
    pub const fn new(capacity: u32, period_secs: u64) -> Self {
        Self {
            capacity,
            period: Duration::from_secs(period_secs),
        }
    }

    /// Tokens regained per millisecond.
    pub fn refill_per_ms(&self) -> f64 {
        self.capacity as f64 / (self.period.as_millis().max(1) as f64)
    }

    /// `COUNT/SECONDS`, both positive, `SECONDS` possibly fractional.
    fn parse(setting: &Setting, raw: &str) -> Result<Self, ConfigError> {
        let bad = || invalid(setting, "COUNT/SECONDS, e.g. 5/900");
        let (count, secs) = raw.split_once('/').ok_or_else(bad)?;
        let capacity: u32 = count.trim().parse().map_err(|_| bad())?;
        let secs: f64 = secs.trim().parse().map_err(|_| bad())?;
        if capacity == 0 || secs <= 0.0 {
            return Err(bad());
        }
        Ok(Self {
            capacity,
            period: Duration::from_secs_f64(secs),
        })
    }
}

/// Declares the limits: the `Limit` enum, `Limit::key`, `Limit::bucket`, `Limit::setting`, the
/// `RateLimits` struct, its defaults and parsing, and `RateLimits::SETTINGS`.
macro_rules! rate_limits {
    ($(
        $(#[doc = $doc:literal])*
        $variant:ident { $($arg:ident: $ty:ty),* } => $field:ident, key $key:literal,
            $var:ident = $default:literal, $meaning:literal;
    )*) => {
        /// Every rate limit of the relay: what one bucket counts (its key) and which setting
        /// sizes it.
        #[derive(Debug, Clone, Copy)]
        pub enum Limit<'a> {
            $( $(#[doc = $doc])* $variant { $($arg: $ty),* }, )*
        }

        impl Limit<'_> {
            /// The bucket's name (the Redis adapter prefixes it).
            pub fn key(&self) -> String {
                match self {
                    $( Self::$variant { $($arg),* } => format!($key), )*
                }
            }

            /// The bucket's size, as configured.
            pub fn bucket(&self, limits: &RateLimits) -> Bucket {
                match self {
                    $( Self::$variant { .. } => limits.$field, )*
                }
            }

            /// The limit's name: a metric label and a log field that, unlike the key, names
            /// no user or address.
            pub fn name(&self) -> &'static str {
                match self {
                    $( Self::$variant { .. } => stringify!($field), )*
                }
            }

            /// The variable that sizes it.
            pub fn setting(&self) -> &'static Setting {
                match self {
                    $( Self::$variant { .. } => &RateLimits::SETTINGS[Field::$variant as usize], )*
                }
            }
        }

        #[allow(non_camel_case_types, clippy::enum_variant_names)]
        enum Field { $($variant),* }

        /// The size of every limit's bucket.
        #[derive(Debug, Clone, Copy, PartialEq)]
        pub struct RateLimits {
            $( $(#[doc = $doc])* pub $field: Bucket, )*
        }

        impl RateLimits {
            /// The limits' variables, in the order of the enum.
            pub const SETTINGS: &'static [Setting] = &[$(
                Setting { var: stringify!($var), default: $default, shown: None, meaning: $meaning },
            )*];

            /// Each limit from its variable, else its default.
            pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
                Ok(Self {
                    $( $field: Bucket::parse(
                        &Self::SETTINGS[Field::$variant as usize],
                        &env.string(&Self::SETTINGS[Field::$variant as usize]),
                    )?, )*
                })
            }
        }

        impl Default for RateLimits {
            fn default() -> Self {
                Self::from_env(&Env::new(&|_| None)).expect("the declared defaults parse")
            }
        }
    };
}

rate_limits! {
    /// Requests to the unauthenticated auth routes, per client IP.
    Auth { ip: &'a str } => auth, key "auth:{ip}",
        RATE_LIMIT_AUTH = "5/1",
        "requests to `POST /v1/users`, `/v1/sessions`, `/v1/sessions/refresh` per client IP";
    /// Failed logins per client IP.
    LoginFailures { ip: &'a str } => login_failures, key "login-fail:{ip}",
        RATE_LIMIT_LOGIN_FAILURES = "5/900", "failed logins per client IP";
    /// Failed logins per (normalized) username, from any IP: a distributed guesser backs off
    /// too. 10 guesses at once, then one a minute: a typo-prone owner is never stuck for long,
    /// while guessing one password from many addresses gets ~1,400 tries a day.
    LoginFailuresUser { username: &'a str } => login_failures_user, key "login-fail-user:{username}",
        RATE_LIMIT_LOGIN_FAILURES_USER = "10/600", "failed logins per username, from any IP";
    /// Bundle fetches per requester.
    Bundle { requester: UserId } => bundle, key "bundle:{requester}",
        RATE_LIMIT_BUNDLE = "120/60", "bundle fetches per requester";
    /// Bundle fetches per requester → target pair: one requester's share of a target's budget,
    /// 3 at once, then one every 20 minutes (a twentieth of `bundle_target`, under a third of
    /// `bundle_target_new`), so one requester hammering cannot lock out the others. First
    /// contact from each of a few devices fits; each fetch takes at most one key of every device.
    BundlePair { requester: UserId, target: UserId } => bundle_pair, key "bundle:{requester}:{target}",
        RATE_LIMIT_BUNDLE_PAIR = "3/3600",
        "bundle fetches per requester → target pair (not of one's own account): one requester's small share of the target's budget";
    /// Bundle fetches of one target by established requesters, all together, each taking at most
    /// one key of each of its devices: a device's usual batch of 100 one-time keys lasts at least
    /// an hour however many accounts ask; contacts made in one sitting (a group of dozens) fit.
    BundleTarget { target: UserId } => bundle_target, key "bundle-target:{target}",
        RATE_LIMIT_BUNDLE_TARGET = "60/3600",
        "bundle fetches per target (one per fetch, however many devices), shared by all established requesters; a fetch that hands out no key gives its token back";
    /// Bundle fetches of one target by requesters younger than `NEW_ACCOUNT_AGE_SECS`, all
    /// together: throwaway accounts share a far smaller budget, so draining a target takes aged
    /// accounts; a few real new contacts a day fit.
    BundleTargetNew { target: UserId } => bundle_target_new, key "bundle-target-new:{target}",
        RATE_LIMIT_BUNDLE_TARGET_NEW = "10/3600",
        "bundle fetches per target, shared by requesters whose account is younger than `NEW_ACCOUNT_AGE_SECS`";
    /// Username lookups per requester: enough for a person adding contacts by name; enumeration
    /// gets ~1 name a minute.
    Lookup { requester: UserId } => lookup, key "lookup:{requester}",
        RATE_LIMIT_LOOKUP = "30/1800", "username lookups per requester";
    /// `PUT /v1/keys` per user: a client uploads on start and when its count runs low; a loop
    /// cannot flood.
    KeysUpload { user: UserId } => keys_upload, key "keys-upload:{user}",
        RATE_LIMIT_KEYS_UPLOAD = "10/60", "`PUT /v1/keys` per user";
    /// Messages per sender. A send takes the message limits in one script: `{sender}` puts them
    /// in one cluster slot.
    Messages { sender: UserId } => messages, key "msg:{{{sender}}}",
        RATE_LIMIT_MESSAGES = "200/1", "messages per sender (one per device a message goes to)";
    /// Message body bytes per sender, charged with each body's size: what one account may write
    /// into Redis. 8 MiB at once (128 maximum-size bodies), then about 140 KB/s: far above what a
    /// person types or a client syncs, yet one account needs about 20 hours to write 10 GB, so
    /// the memory alarm fires long before the cache is full.
    MessageBytes { sender: UserId } => message_bytes, key "msg-bytes:{{{sender}}}",
        RATE_LIMIT_MESSAGE_BYTES = "8388608/60",
        "message body bytes per sender; `COUNT` at least `MESSAGE_MAX_BYTES`";
    /// Messages per sender → recipient pair: a busy chat with receipts stays far below; a flood
    /// into one inbox is slowed to under 2 per second after a burst of 100.
    MessagePair { sender: UserId, recipient: UserId } => message_pair, key "msg:{{{sender}}}:{recipient}",
        RATE_LIMIT_MESSAGE_PAIR = "100/60", "messages per sender → recipient";
    /// WebSocket handshakes per user: a client reconnecting after every network change, on a few
    /// devices, stays well below; a handshake loop gets one every 3 s after a burst of 20.
    Connect { user: UserId } => connect, key "connect:{user}",
        RATE_LIMIT_CONNECT = "20/60", "WebSocket handshakes per user (refused: 429)";
    /// WebSocket handshakes per client IP, before the token is checked: wider, as many users may
    /// share one address (carrier NAT), yet a token-guessing or reconnect flood from one host is
    /// slowed to 2 a second.
    ConnectIp { ip: &'a str } => connect_ip, key "connect-ip:{ip}",
        RATE_LIMIT_CONNECT_IP = "120/60",
        "WebSocket handshakes per client IP, counted before the token is checked";
    /// Client frames of any kind per user, in the sender's slot (a send takes it with the message
    /// limits in one script). Above `messages`, so that limit stays the one a sender meets; what
    /// it bounds is the frames that cost a Redis round trip without sending (fetch, list, ping).
    Frames { user: UserId } => frames, key "frames:{{{user}}}",
        RATE_LIMIT_FRAMES = "300/1",
        "WebSocket client frames of any kind (`send`, `fetch`, `list`, `ping`, `renew`, `ack`, `provision`) per user";
    /// Linking codes and provisioning messages per account: linking a device takes a code and a
    /// message; a person retrying a few times fits.
    Provisioning { user: UserId } => provisioning, key "provisioning:{user}",
        RATE_LIMIT_PROVISIONING = "10/600", "linking codes and provisioning messages per account";
    /// Client frames per provisioning socket (it has no user to count them against): a
    /// `provision` and a `ping` now and then, 5 at once, then one a minute. Its handshake costs a
    /// `connect_ip` token, so one address gets about 10 such frames a second.
    ProvisioningFrames { connection_id: &'a str } => provisioning_frames, key "provisioning-frames:{connection_id}",
        RATE_LIMIT_PROVISIONING_FRAMES = "5/300",
        "client frames per provisioning socket (`provision`, `ping`); past it the socket is closed";
    /// Linking codes presented (`POST /v1/devices`) per client IP: codes are 256 random bits, so
    /// guessing is hopeless anyway; this bounds the cost.
    Link { ip: &'a str } => link, key "link:{ip}",
        RATE_LIMIT_LINK = "10/600", "`POST /v1/devices` per client IP";
    /// Group changes (create, invite, join, leave, remove, role, meta) per user: setting up a
    /// few groups at once fits; an invitation flood gets one change a second after 60.
    GroupChanges { user: UserId } => group_changes, key "group-changes:{user}",
        RATE_LIMIT_GROUP_CHANGES = "60/60", "group changes per user (`POST`, `PATCH`, `PUT`, `DELETE` of `/v1/groups…`)";
    /// Group reads per user: a client syncing its groups after a restart fits.
    GroupReads { user: UserId } => group_reads, key "group-reads:{user}",
        RATE_LIMIT_GROUP_READS = "120/60", "`GET /v1/groups` and `GET /v1/groups/{group_id}` per user";
    /// Member devices a sender's group sends reach, in the sender's slot (taken with the message
    /// limits in one step): a group send costs one token per device it is stored for, so a large
    /// group of throwaway accounts cannot make the relay write without bound. 40 sends to 1,500
    /// members at once, then 1,000 devices a second.
    GroupDeliveries { sender: UserId } => group_deliveries, key "group-deliveries:{{{sender}}}",
        RATE_LIMIT_GROUP_DELIVERIES = "60000/60", "member devices reached by group sends per sender";
    /// Attachment uploads (presigned upload URLs) per user: a person sharing photos in bursts
    /// fits; a loop filling storage does not (30 at once, then one a minute).
    Attachments { user: UserId } => attachments, key "attachments:{user}",
        RATE_LIMIT_ATTACHMENTS = "30/1800", "upload URLs per user";
    /// Attachment uploads per account younger than `NEW_ACCOUNT_AGE_SECS`, instead of
    /// `Attachments`: 10 at once (1 GiB at the largest size), then one every 6 minutes, so
    /// registering many accounts does not multiply what can be stored.
    AttachmentsNew { user: UserId } => attachments_new, key "attachments-new:{user}",
        RATE_LIMIT_ATTACHMENTS_NEW = "10/3600",
        "upload URLs per account younger than `NEW_ACCOUNT_AGE_SECS`, instead of the line above";
    /// Attachment uploads per client IP, whatever the account: four accounts' worth, so a
    /// household or office behind one address fits, while one host with many accounts gets 4
    /// URLs a minute however many it registers.
    AttachmentsIp { ip: &'a str } => attachments_ip, key "attachments-ip:{ip}",
        RATE_LIMIT_ATTACHMENTS_IP = "120/1800", "upload URLs per client IP, all accounts together";
    /// Attachment downloads (presigned download URLs) per user: scrolling back through a chat
    /// full of photos fits; a loop making storage serve one file over and over (paid per GB) gets
    /// one URL every 6 s.
    AttachmentDownloads { user: UserId } => attachment_downloads, key "attachment-downloads:{user}",
        RATE_LIMIT_ATTACHMENT_DOWNLOADS = "120/720", "download URLs per user";
    /// Account exports per user: each reads every store the account has data in (a few
    /// hundred requests at worst), so a person downloading their data now and then fits and a
    /// loop gets one every 10 minutes.
    Export { user: UserId } => export, key "export:{user}",
        RATE_LIMIT_EXPORT = "6/3600", "`GET /v1/account/export` per user";
    /// Username changes per user: correcting a name a few times fits; cycling through names
    /// (squatting, or dodging the per-username login limit) gets one a day.
    Rename { user: UserId } => rename, key "rename:{user}",
        RATE_LIMIT_RENAME = "3/86400", "`PATCH /v1/users/me` per user";
    /// Share-list replacements per user: setting presence up and adjusting it a few times
    /// fits (10 at once, then one every 2 minutes); each stores up to 1,000 ids.
    PresenceShares { user: UserId } => presence_shares, key "presence-shares:{user}",
        RATE_LIMIT_PRESENCE_SHARES = "10/1200", "`PUT /v1/presence/shares` per user";
    /// Presence reads per user (each asks about up to 100 users): a client refreshing its
    /// contact list when it starts and now and then fits; the frames make polling needless.
    PresenceReads { user: UserId } => presence_reads, key "presence-reads:{user}",
        RATE_LIMIT_PRESENCE_READS = "60/60",
        "`GET /v1/presence` and `GET /v1/presence/shares` per user";
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
            Limit::Export { user: a },
            Limit::Rename { user: a },
            Limit::GroupChanges { user: a },
            Limit::GroupReads { user: a },
            Limit::GroupDeliveries { sender: a },
            Limit::PresenceShares { user: a },
            Limit::PresenceReads { user: a },
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
            export: Bucket::new(141, 1),
            rename: Bucket::new(142, 1),
            group_changes: Bucket::new(15, 1),
            group_reads: Bucket::new(16, 1),
            group_deliveries: Bucket::new(17, 1),
            presence_shares: Bucket::new(18, 1),
            presence_reads: Bucket::new(19, 1),
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
                limits.export,
                limits.rename,
                limits.group_changes,
                limits.group_reads,
                limits.group_deliveries,
                limits.presence_shares,
                limits.presence_reads,
            ]
        );
    }
}
