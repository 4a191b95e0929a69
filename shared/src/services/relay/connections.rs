//! A connection's life: `$connect`, `renew`, `$disconnect`, eviction past the per-device cap,
//! and the ending of one whose session is over; who is behind a connection, remembered by a warm
//! function.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::Relay;
use crate::crypto::tokens::Principal;
use crate::error::{Error, Result};
use crate::model::{DeviceAddress, UserId};
use crate::services::Limit;
use crate::storage::{PushError, Registration};

/// Bounds the in-process connection → user cache of a warm function.
const CACHE_MAX: usize = 100_000;

/// A connection's user and session never change, so a warm function remembers them (and when
/// it last found the session alive).
#[derive(Clone, Default)]
pub(super) struct ConnectionCache(Arc<Mutex<HashMap<String, Known>>>);

/// What a warm function remembers of a connection.
#[derive(Debug, Clone, Copy)]
struct Known {
    registration: Registration,
    /// When the registration was last found in Redis and its session not revoked.
    checked_at_ms: u64,
}

impl ConnectionCache {
    fn remember(&self, connection_id: &str, registration: Registration, now_ms: u64) {
        let mut cache = self.0.lock().expect("cache lock");
        if cache.len() >= CACHE_MAX {
            cache.clear();
        }
        let known = Known {
            registration,
            checked_at_ms: now_ms,
        };
        cache.insert(connection_id.to_string(), known);
    }

    fn forget(&self, connection_id: &str) {
        self.0.lock().expect("cache lock").remove(connection_id);
    }

    /// The connection's registration while it may be trusted without asking Redis: checked
    /// less than `check_ms` ago and unexpired. An expired one is read again before it is
    /// refused: another instance may have renewed the connection since this one cached it.
    fn trusted(&self, connection_id: &str, now_ms: u64, check_ms: u64) -> Option<Registration> {
        let known = self
            .0
            .lock()
            .expect("cache lock")
            .get(connection_id)
            .copied()?;
        (now_ms < known.checked_at_ms + check_ms && now_ms < known.registration.valid_until_ms)
            .then_some(known.registration)
    }
}

impl Relay {
    /// `$connect`: the token must be valid and not revoked. `ack`: the connection asked for ack
    /// mode (`ack=1`).
    pub async fn connect(
        &self,
        connection_id: &str,
        token: Option<&str>,
        source_ip: &str,
        ack: bool,
    ) -> Result<UserId> {
        // Before the token is checked, so a flood of handshakes costs no verification either.
        self.limiter
            .take(Limit::ConnectIp { ip: source_ip })
            .await?;
        let who = self.auth.authenticate(token).await?;
        self.limiter
            .take(Limit::Connect { user: who.user_id })
            .await?;
        // Read once per connection: meanwhile its sends are held to the new accounts' part of
        // each inbox.
        let new_account_until_ms = self.age.new_until_ms(who.user_id).await?;
        let (_, now) = self
            .register(connection_id, &who, ack, new_account_until_ms)
            .await?;
        // Counted before any eviction, so replacing the device's oldest connection is no
        // transition.
        self.presence
            .connected(self.pusher.as_ref(), who.user_id, connection_id)
            .await;
        let device = DeviceAddress::new(who.user_id, who.device_id);
        if let Err(e) = self.evict_oldest(device, connection_id, now).await {
            // The handshake is refused, so no `$disconnect` will count the connection out.
            self.presence
                .disconnected(self.pusher.as_ref(), who.user_id, connection_id)
                .await;
            return Err(e);
        }
        tracing::info!(device_id = who.device_id, connection_id, ack, "connected");
        Ok(who.user_id)
    }

    /// `renew`: the connection takes a fresh access token of its own user (and that token's
    /// session) and lasts as long as it. A token that is invalid, revoked or another user's is
    /// refused as `invalid_frame`, and the connection keeps its old token.
    pub async fn renew(&self, connection_id: &str, token: &str) -> Result<u64> {
        let current = self.frame_from(connection_id).await?;
        let device = current.device();
        let refused = || {
            Error::InvalidFrame("`token` is not a valid access token of this user's device".into())
        };
        let who = match self.auth.authenticate(Some(token)).await {
            Ok(who) if who.user_id == device.user_id && who.device_id == device.device_id => who,
            Ok(_) | Err(Error::Unauthorized) => return Err(refused()),
            Err(e) => return Err(e),
        };
        let (registration, _) = self
            .register(
                connection_id,
                &who,
                current.ack,
                current.new_account_until_ms,
            )
            .await?;
        tracing::info!(connection_id, "connection renewed");
        Ok(registration.valid_until_ms)
    }

    /// Records the connection as `who`'s, for as long as `who`'s token lasts, in the registry and
    /// in this instance's cache; returns the registration and the time it was made.
    async fn register(
        &self,
        connection_id: &str,
        who: &Principal,
        ack: bool,
        new_account_until_ms: u64,
    ) -> Result<(Registration, u64)> {
        let now = self.clock.now_ms();
        let registration = Registration {
            user_id: who.user_id,
            device_id: who.device_id,
            session_id: who.session_id,
            valid_until_ms: who.valid_until.saturating_mul(1000),
            ack,
            new_account_until_ms,
        };
        self.registry
            .register(connection_id, &registration, now)
            .await?;
        self.known.remember(connection_id, registration, now);
        Ok((registration, now))
    }

    /// Holds the user to `max_connections`: every send carries the list of the recipient's
    /// connections, and each costs a push, so an unbounded list is a cost anyone could inflate.
    /// The registry picks the oldest atomically; they are forgotten, then closed.
    async fn evict_oldest(
        &self,
        device: DeviceAddress,
        connection_id: &str,
        now_ms: u64,
    ) -> Result<()> {
        let evicted = self
            .registry
            .evict_over(device, connection_id, self.max_connections, now_ms)
            .await?;
        let mut released = false;
        for (old, ack) in evicted {
            self.known.forget(&old);
            self.registry.remove(device, &old).await?;
            self.presence
                .disconnected(self.pusher.as_ref(), device.user_id, &old)
                .await;
            // Its `$disconnect` will find no registration: what it held goes back now.
            if ack && !released {
                self.inbox.release(device).await?;
                released = true;
            }
            self.close(&old, "closing an evicted connection failed")
                .await;
            tracing::info!(connection_id = %old, "evicted: over the connection cap");
        }
        Ok(())
    }

    /// `$disconnect`
    pub async fn disconnect(&self, connection_id: &str) -> Result<()> {
        self.known.forget(connection_id);
        let registration = self.registry.unregister(connection_id).await?;
        if let Some(r) = &registration {
            self.presence
                .disconnected(self.pusher.as_ref(), r.user_id, connection_id)
                .await;
        }
        match registration {
            None => self.provisioning.close_socket(connection_id).await?,
            // What it was sent and did not acknowledge is delivered again, at once.
            Some(r) if r.ack => self.inbox.release(r.device()).await?,
            Some(_) => {}
        }
        tracing::info!(connection_id, "disconnected");
        Ok(())
    }

    /// Ends a connection refused as `unauthorized`: writes `last_frame` (the refusal), then
    /// closes it, so a client learns why before the socket goes.
    pub async fn end(&self, connection_id: &str, last_frame: &str) {
        if let Err(PushError::Failed(detail)) = self.pusher.push(connection_id, last_frame).await {
            tracing::warn!(connection_id, detail = %detail, "refusal not written");
        }
        self.close(connection_id, "connection not closed").await;
        self.known.forget(connection_id);
        let registration = self.registry.unregister(connection_id).await;
        if let Ok(Some(r)) = &registration {
            self.presence
                .disconnected(self.pusher.as_ref(), r.user_id, connection_id)
                .await;
        }
        match registration {
            Ok(Some(r)) if r.ack => {
                if let Err(e) = self.inbox.release(r.device()).await {
                    e.log();
                }
            }
            Ok(_) => {}
            Err(e) => e.log(),
        }
        tracing::info!(connection_id, "connection ended: session over");
    }

    /// Closes a connection the relay ends; one already gone is fine, a failure is only logged
    /// (as `failed`): the connection is refused at its next frame anyway.
    async fn close(&self, connection_id: &str, failed: &str) {
        if let Err(PushError::Failed(detail)) = self.pusher.close(connection_id).await {
            tracing::warn!(connection_id, detail = %detail, "{failed}");
        }
    }

    /// The connection's user, while its token is unexpired and its session neither ended nor
    /// revoked; `Unauthorized` otherwise (the caller then ends the connection: [`Self::end`]).
    /// Logout and deletion close the session's connections themselves, so Redis is asked again
    /// only every `session_check` (two GETs), not on every frame.
    pub(super) async fn sender(&self, connection_id: &str) -> Result<Registration> {
        let now = self.clock.now_ms();
        let check_ms = self.timings.session_check.as_millis() as u64;
        let registration = match self.known.trusted(connection_id, now, check_ms) {
            Some(registration) => registration,
            None => self.check(connection_id, now).await?,
        };
        if now >= registration.valid_until_ms {
            return Err(Error::Unauthorized);
        }
        Ok(registration)
    }

    /// Reads the connection's registration and its session's revocation, and remembers the
    /// registration if both are found alive.
    async fn check(&self, connection_id: &str, now_ms: u64) -> Result<Registration> {
        let alive = match self.registry.registration(connection_id).await? {
            Some(r) if !self.auth.revocations.is_revoked(r.session_id).await? => Some(r),
            _ => None,
        };
        let Some(registration) = alive else {
            self.known.forget(connection_id);
            return Err(Error::Unauthorized);
        };
        self.known.remember(connection_id, registration, now_ms);
        Ok(registration)
    }
}
