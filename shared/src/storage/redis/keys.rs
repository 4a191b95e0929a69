//! The Redis key layout (see the table in `mod.rs`), in one place: the adapters build every key
//! here, and the tests import it rather than retype the formats.

use uuid::Uuid;

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

    /// A user's envelopes (list), slot `{user}`.
    pub fn inbox(&self, user_id: Uuid) -> String {
        format!("{}{{{user_id}}}:inbox", self.prefix)
    }

    /// Who holds how much of a user's inbox (hash: `b` total stored bytes, `n:<sender>` and
    /// `b:<sender>`), kept by the inbox scripts beside the list, slot `{user}`.
    pub fn inbox_accounting(&self, user_id: Uuid) -> String {
        format!("{}{{{user_id}}}:inbox-senders", self.prefix)
    }

    /// Marks a live account's inbox (deliveries to an unknown user are refused), slot `{user}`.
    pub fn marker(&self, user_id: Uuid) -> String {
        format!("{}{{{user_id}}}:user", self.prefix)
    }

    /// A user's connections (sorted set scored by expiry), slot `{user}`.
    pub fn conns(&self, user_id: Uuid) -> String {
        format!("{}{{{user_id}}}:conns", self.prefix)
    }

    /// A user's connections in order of arrival (sorted set), slot `{user}`: which to evict
    /// past the per-user cap.
    pub fn conn_order(&self, user_id: Uuid) -> String {
        format!("{}{{{user_id}}}:conn-order", self.prefix)
    }

    /// A user's connection → session id (hash), slot `{user}`: what logout and deletion close.
    pub fn conn_sessions(&self, user_id: Uuid) -> String {
        format!("{}{{{user_id}}}:conn_sessions", self.prefix)
    }

    /// Envelopes a fetch took and is writing (list of `<lease_until_ms>|<envelope>`), slot
    /// `{user}`.
    pub fn in_flight(&self, user_id: Uuid) -> String {
        format!("{}{{{user_id}}}:inflight", self.prefix)
    }

    /// Connection → user, session and token expiry, slot `{connection}`.
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
}
