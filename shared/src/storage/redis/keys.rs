//! The Redis key layout (see the table in `mod.rs`), in one place: the adapters build every key
//! here, and the tests import it rather than retype the formats.

use uuid::Uuid;

use crate::model::{DeviceAddress, PRIMARY_DEVICE};

#[derive(Debug, Clone)]
pub struct RedisKeys {
    prefix: String,
}

impl RedisKeys {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_string(),
        }
    }

    /// `<prefix>{<user>}`: what every key of the user starts with (one hash slot). The scripts
    /// that reach a device's keys by its id build them from it as [`Self::device_key`] does.
    pub fn user_base(&self, user_id: Uuid) -> String {
        format!("{}{{{user_id}}}", self.prefix)
    }

    /// A key of one device: device 1 keeps the names from before devices (`{user}:inbox`), so
    /// what an older relay stored stays where it is; device n has `{user}:d<n>:inbox`.
    fn device_key(&self, device: DeviceAddress, name: &str) -> String {
        let base = self.user_base(device.user_id);
        match device.device_id {
            PRIMARY_DEVICE => format!("{base}:{name}"),
            n => format!("{base}:d{n}:{name}"),
        }
    }

    /// A device's envelopes (list), slot `{user}`. A bare user id means device 1.
    pub fn inbox(&self, device: impl Into<DeviceAddress>) -> String {
        self.device_key(device.into(), "inbox")
    }

    /// Who holds how much of a device's inbox (hash: `b` total stored bytes, `n:<holder>` and
    /// `b:<holder>`, `n:~` and `b:~` for new accounts together), kept by the inbox scripts beside
    /// the list, slot `{user}`.
    pub fn inbox_accounting(&self, device: impl Into<DeviceAddress>) -> String {
        self.device_key(device.into(), "inbox-senders")
    }

    /// The account's devices as the relay checks sends against them (hash: `v` the list's
    /// version, `<device id>` → `<registration id>:<created at>`), slot `{user}`. Its absence
    /// means "ask the user store" (an unknown user, or an account from before devices).
    pub fn devices(&self, user_id: Uuid) -> String {
        format!("{}:devices", self.user_base(user_id))
    }

    /// The inbox marker of relays before devices (the devices hash replaced it); only deleted.
    pub fn marker(&self, user_id: Uuid) -> String {
        format!("{}:user", self.user_base(user_id))
    }

    /// A device's connections (sorted set scored by expiry), slot `{user}`.
    pub fn conns(&self, device: impl Into<DeviceAddress>) -> String {
        self.device_key(device.into(), "conns")
    }

    /// A device's connections in ack mode (set), slot `{user}`: a delivery to the device then
    /// keeps what it writes in flight until acknowledged.
    pub fn ack_conns(&self, device: impl Into<DeviceAddress>) -> String {
        self.device_key(device.into(), "ack-conns")
    }

    /// The sends a device made with ids, for repeats (hash: `<sha256 of id>` →
    /// `<content hash>|<answer>`), slot `{user}`.
    pub fn sent(&self, sender: DeviceAddress) -> String {
        self.device_key(sender, "sent")
    }

    /// When each remembered send was claimed (sorted set), slot `{user}`.
    pub fn sent_times(&self, sender: DeviceAddress) -> String {
        self.device_key(sender, "sent-times")
    }

    /// A device's connections in order of arrival (sorted set), slot `{user}`: which to evict
    /// past the per-device cap.
    pub fn conn_order(&self, device: impl Into<DeviceAddress>) -> String {
        self.device_key(device.into(), "conn-order")
    }

    /// A user's connection → `<session id>|<device id>` (hash), slot `{user}`: what logout,
    /// device removal and deletion close.
    pub fn conn_sessions(&self, user_id: Uuid) -> String {
        format!("{}:conn_sessions", self.user_base(user_id))
    }

    /// Who holds each envelope of a device's inbox (list beside it, entry for entry: `<sender>`,
    /// or `~<sender>` for a new account), slot `{user}`.
    pub fn inbox_holders(&self, device: impl Into<DeviceAddress>) -> String {
        self.device_key(device.into(), "inbox-holders")
    }

    /// A device's envelopes in flight: being written by a fetch or a delivery, or written to an
    /// ack-mode connection and not yet acknowledged (sorted set: envelope id → lease end ms),
    /// slot `{user}`.
    pub fn in_flight(&self, device: impl Into<DeviceAddress>) -> String {
        self.device_key(device.into(), "in-flight")
    }

    /// The envelopes in flight themselves (hash: envelope id → `<seq>|<entry>`, `#seq` their
    /// order, `#b` their bytes), slot `{user}`.
    pub fn in_flight_parked(&self, device: impl Into<DeviceAddress>) -> String {
        self.device_key(device.into(), "in-flight-envelopes")
    }

    /// The in-flight list of relays before envelopes in flight were kept by id (list of
    /// `<lease_until_ms>|<entry>`); only emptied back into the inbox.
    pub fn legacy_in_flight(&self, device: impl Into<DeviceAddress>) -> String {
        self.device_key(device.into(), "inflight")
    }

    /// A device's store as `scripts/prelude_store.lua` takes it: inbox, holders, accounting, flight, parked.
    pub fn device_store(&self, device: DeviceAddress) -> [String; 5] {
        [
            self.inbox(device),
            self.inbox_holders(device),
            self.inbox_accounting(device),
            self.in_flight(device),
            self.in_flight_parked(device),
        ]
    }

    /// The group sends a user's devices were given, by envelope id (sorted set: id → when, ms),
    /// kept for repeats of idempotent sends, slot `{user}`.
    pub fn group_marks(&self, user_id: Uuid) -> String {
        format!("{}:group-marks", self.user_base(user_id))
    }

    /// Whom the user lets see their presence (set of user ids), slot `{user}`; no expiry: it
    /// lasts until replaced or the account is deleted.
    pub fn presence_shares(&self, user_id: Uuid) -> String {
        format!("{}:presence-shares", self.user_base(user_id))
    }

    /// The user's presence choices and state (hash: `last_seen` `1` when the share list shows
    /// it, `offline_at` ms the user last went offline, kept only then), slot `{user}`.
    pub fn presence(&self, user_id: Uuid) -> String {
        format!("{}:presence", self.user_base(user_id))
    }

    /// The user's live connections, all devices together (sorted set: connection → when its
    /// lifetime ends, ms), slot `{user}`: its emptying and filling are the user's presence
    /// transitions.
    pub fn presence_conns(&self, user_id: Uuid) -> String {
        format!("{}:presence-conns", self.user_base(user_id))
    }

    /// A group send's envelope (its client JSON), stored once for the entries of every device
    /// of the send that point at it, slot `{<envelope id>}`.
    pub fn shared(&self, envelope_id: Uuid) -> String {
        format!("{}shared:{{{envelope_id}}}", self.prefix)
    }

    /// Connection → user, device, session and token expiry, slot `{connection}`.
    pub fn conn(&self, connection_id: &str) -> String {
        format!("{}conn:{{{connection_id}}}", self.prefix)
    }

    pub fn revoked(&self, session_id: Uuid) -> String {
        format!("{}revoked:{session_id}", self.prefix)
    }

    /// A rate-limit token bucket.
    pub fn bucket(&self, name: &str) -> String {
        format!("{}rl:{name}", self.prefix)
    }

    /// A linking code (by its SHA-256, hex) → the account it links to, until it expires.
    pub fn link_code(&self, code_hash: &str) -> String {
        format!("{}link:{code_hash}", self.prefix)
    }

    /// A provisioning address → its socket's connection id, until it expires.
    pub fn provisioning(&self, address: &str) -> String {
        format!("{}prov:{address}", self.prefix)
    }

    /// A provisioning socket → its address (what `$connect` of a provisioning socket records).
    pub fn provisioning_socket(&self, connection_id: &str) -> String {
        format!("{}prov-conn:{{{connection_id}}}", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_one_keeps_the_names_from_before_devices() {
        let k = RedisKeys::new("p:");
        let u = Uuid::nil();
        assert_eq!(k.inbox(u), format!("p:{{{u}}}:inbox"));
        assert_eq!(k.inbox(DeviceAddress::new(u, 1)), k.inbox(u));
        assert_eq!(
            k.in_flight(DeviceAddress::new(u, 2)),
            format!("p:{{{u}}}:d2:in-flight")
        );
    }
}
