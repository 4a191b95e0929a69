//! The message relay behind the WebSocket routes: connect, disconnect and client frames.
//!
//! `connections`: a connection's life (connect, renew, disconnect, eviction, its cache);
//! `send`: storing a send for every device of its recipient; `group_send`: one send to every
//! member device of a group, stored once; `delivery`: writing what was taken
//! from an inbox to a device's connections (after a send, and for `fetch`); `acks`: ack mode;
//! `provisioning`: the sockets of devices being linked.

mod acks;
mod connections;
mod delivery;
mod group_send;
mod mls_send;
mod provisioning;
mod send;

use std::sync::Arc;

pub use group_send::{GroupSend, GroupSent};
pub use mls_send::EPOCH_GRACE;
pub use send::{Payload, Sent};

use self::connections::ConnectionCache;
use super::auth::Authenticator;
use super::presence::Presence;
use super::{AccountAge, Limit, Limiter};
use crate::clock::SharedClock;
use crate::config::{Config, DeviceLimits, GroupLimits, InboxLimits, RelayTimings};
use crate::error::{Error, Result};
use crate::storage::{
    ConnectionRegistry, GroupStore, Inbox, Provisioning, Pusher, Registration, SendLog, UserStore,
};

#[derive(Clone)]
pub struct Relay {
    auth: Authenticator,
    limiter: Limiter,
    inbox: Arc<dyn Inbox>,
    registry: Arc<dyn ConnectionRegistry>,
    users: Arc<dyn UserStore>,
    groups: Arc<dyn GroupStore>,
    provisioning: Arc<dyn Provisioning>,
    sent_log: Arc<dyn SendLog>,
    pusher: Arc<dyn Pusher>,
    /// Counts connections in and out of their user's presence, announcing transitions.
    presence: Presence,
    known: ConnectionCache,
    /// How a group send pushes to the member devices online.
    group_push: GroupLimits,
    inbox_limits: InboxLimits,
    timings: RelayTimings,
    /// Live connections per device (`MAX_CONNECTIONS_PER_USER`); a new one evicts the oldest.
    max_connections: u32,
    device_limits: DeviceLimits,
    /// Whether a connection's account is new: its sends are then held to the new accounts'
    /// part of each inbox.
    age: AccountAge,
    clock: SharedClock,
}

/// What the relay is built from besides its settings: the services it asks, its stores and the
/// gateway it pushes through.
pub struct Parts {
    pub auth: Authenticator,
    pub limiter: Limiter,
    pub age: AccountAge,
    pub inbox: Arc<dyn Inbox>,
    pub registry: Arc<dyn ConnectionRegistry>,
    pub users: Arc<dyn UserStore>,
    pub groups: Arc<dyn GroupStore>,
    pub provisioning: Arc<dyn Provisioning>,
    pub sent_log: Arc<dyn SendLog>,
    pub presence: Presence,
    pub pusher: Arc<dyn Pusher>,
    pub clock: SharedClock,
}

impl Relay {
    pub fn new(parts: Parts, config: &Config) -> Self {
        Self {
            known: ConnectionCache::default(),
            inbox_limits: config.inbox,
            timings: config.relay,
            max_connections: config.max_connections_per_user,
            device_limits: config.devices,
            group_push: config.groups,
            auth: parts.auth,
            limiter: parts.limiter,
            age: parts.age,
            inbox: parts.inbox,
            registry: parts.registry,
            users: parts.users,
            groups: parts.groups,
            provisioning: parts.provisioning,
            sent_log: parts.sent_log,
            presence: parts.presence,
            pusher: parts.pusher,
            clock: parts.clock,
        }
    }

    /// The connection's user, once the frame has been counted against the user's frame limit
    /// (`send` counts it with the message limits instead).
    async fn frame_from(&self, connection_id: &str) -> Result<Registration> {
        let device = self.sender(connection_id).await?;
        self.limiter
            .take(Limit::Frames {
                user: device.user_id,
            })
            .await?;
        Ok(device)
    }

    /// `ping`: only a live session's connection (or a provisioning socket) is kept alive, and
    /// every ping is counted: the user's frame limit, or the provisioning socket's budget.
    pub async fn ping(&self, connection_id: &str) -> Result<()> {
        match self.frame_from(connection_id).await {
            Err(Error::Unauthorized) => self.provisioning_frame(connection_id).await,
            other => other.map(|_| ()),
        }
    }

    /// `list`: how many unexpired envelopes wait.
    pub async fn list(&self, connection_id: &str) -> Result<u64> {
        let device = self.frame_from(connection_id).await?.device();
        self.inbox.pending(device, self.clock.now_ms()).await
    }
}

#[cfg(test)]
mod tests {
    use crate::storage::StoredEnvelope;

    #[test]
    fn stored_envelopes_carry_their_expiry() {
        let e = StoredEnvelope::new(42, r#"{"a":"b|c"}"#);
        assert_eq!(e.expires_at_ms(), 42);
        assert_eq!(e.json(), Some(r#"{"a":"b|c"}"#));
        assert!(e.is_expired(42) && !e.is_expired(41));
    }
}
