//! The message relay behind the WebSocket routes: connect, disconnect and client frames.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use uuid::Uuid;

use super::auth::Authenticator;
use super::{limit, limit_all, Limit};
use crate::config::{DeviceLimits, InboxLimits, RateLimits, RelayTimings};
use crate::crypto::tokens::Principal;
use crate::error::{Error, Result};
use crate::frames::{pack_messages, Delivery, DeviceDelivery, DeviceMessage, Envelope};
use crate::model::{DeviceAddress, DeviceId, UserId, PRIMARY_DEVICE};
use crate::storage::{
    Addressed, ConnectionRegistry, Delivery as Stored, Fanned, Fanout, Inbox, Provisioning,
    PushError, Pusher, RateLimiter, Registration, SendLog, StoredEnvelope, UserStore,
};
use crate::validation;

/// Bounds the in-process connection → user cache of a warm function.
const SENDER_CACHE_MAX: usize = 100_000;

#[derive(Clone)]
pub struct Relay {
    pub(crate) auth: Authenticator,
    pub(crate) inbox: Arc<dyn Inbox>,
    pub(crate) registry: Arc<dyn ConnectionRegistry>,
    pub(crate) users: Arc<dyn UserStore>,
    pub(crate) provisioning: Arc<dyn Provisioning>,
    pub(crate) sent_log: Arc<dyn SendLog>,
    pub(crate) limiter: Arc<dyn RateLimiter>,
    pub(crate) pusher: Arc<dyn Pusher>,
    pub(crate) limits: RateLimits,
    pub(crate) inbox_limits: InboxLimits,
    /// A connection's user and session never change, so a warm function remembers them (and
    /// when it last found the session alive).
    pub(crate) senders: Arc<Mutex<HashMap<String, Known>>>,
    pub(crate) timings: RelayTimings,
    /// Live connections per device (`MAX_CONNECTIONS_PER_USER`); a new one evicts the oldest.
    pub(crate) max_connections: u32,
    pub(crate) device_limits: DeviceLimits,
    /// Whether a connection's account is new: its sends are then held to the new accounts'
    /// part of each inbox.
    pub(crate) age: super::AccountAge,
    pub(crate) clock: crate::clock::SharedClock,
}

/// What a warm function remembers of a connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Known {
    registration: Registration,
    /// When the registration was last found in Redis and its session not revoked.
    checked_at_ms: u64,
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
        limit(
            self.limiter.as_ref(),
            &self.limits,
            Limit::ConnectIp { ip: source_ip },
            1,
        )
        .await?;
        let who = self.auth.authenticate(token).await?;
        limit(
            self.limiter.as_ref(),
            &self.limits,
            Limit::Connect { user: who.user_id },
            1,
        )
        .await?;
        // Read once per connection: meanwhile its sends are held to the new accounts' part of
        // each inbox.
        let new_account_until_ms = self.age.new_until_ms(who.user_id).await?;
        let (_, now) = self
            .register(connection_id, &who, ack, new_account_until_ms)
            .await?;
        let device = DeviceAddress::new(who.user_id, who.device_id);
        self.evict_oldest(device, connection_id, now).await?;
        tracing::info!(user_id = %who.user_id, device_id = who.device_id, connection_id, ack, "connected");
        Ok(who.user_id)
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
        self.remember(connection_id, registration, now);
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
        let user_id = device.user_id;
        let evicted = self
            .registry
            .evict_over(device, connection_id, self.max_connections, now_ms)
            .await?;
        let mut released = false;
        for (old, ack) in evicted {
            self.forget(&old);
            self.registry.remove(device, &old).await?;
            // Its `$disconnect` will find no registration: what it held goes back now.
            if ack && !released {
                self.inbox.release(device).await?;
                released = true;
            }
            match self.pusher.close(&old).await {
                Ok(()) | Err(PushError::Gone) => {}
                Err(PushError::Failed(detail)) => tracing::warn!(
                    connection_id = %old,
                    detail = %detail,
                    "closing an evicted connection failed"
                ),
            }
            tracing::info!(%user_id, connection_id = %old, "evicted: over the connection cap");
        }
        Ok(())
    }

    /// `$disconnect`
    pub async fn disconnect(&self, connection_id: &str) -> Result<()> {
        self.forget(connection_id);
        let registration = self.registry.unregister(connection_id).await?;
        let user = registration.map(|r| r.user_id);
        match registration {
            None => self.provisioning.close_socket(connection_id).await?,
            // What it was sent and did not acknowledge is delivered again, at once.
            Some(r) if r.ack => self.inbox.release(r.device()).await?,
            Some(_) => {}
        }
        tracing::info!(user_id = ?user, connection_id, "disconnected");
        Ok(())
    }

    fn remember(&self, connection_id: &str, registration: Registration, now_ms: u64) {
        let mut cache = self.senders.lock().expect("cache lock");
        if cache.len() >= SENDER_CACHE_MAX {
            cache.clear();
        }
        let known = Known {
            registration,
            checked_at_ms: now_ms,
        };
        cache.insert(connection_id.to_string(), known);
    }

    fn forget(&self, connection_id: &str) {
        self.senders
            .lock()
            .expect("cache lock")
            .remove(connection_id);
    }

    /// The connection's user, while its token is unexpired and its session neither ended nor
    /// revoked; `Unauthorized` otherwise (the caller then ends the connection: [`Self::end`]).
    /// Logout and deletion close the session's connections themselves, so Redis is asked again
    /// only every `session_check` (two GETs), not on every frame.
    pub(super) async fn sender(&self, connection_id: &str) -> Result<Registration> {
        let now = self.clock.now_ms();
        let known = self
            .senders
            .lock()
            .expect("cache lock")
            .get(connection_id)
            .copied();
        let registration = match known {
            // An expired registration is read again before it is refused: another instance may
            // have renewed the connection since this one cached it.
            Some(k)
                if now < k.checked_at_ms + self.timings.session_check.as_millis() as u64
                    && now < k.registration.valid_until_ms =>
            {
                k.registration
            }
            _ => {
                let Some(registration) = self.registry.registration(connection_id).await? else {
                    self.forget(connection_id);
                    return Err(Error::Unauthorized);
                };
                if self
                    .auth
                    .revocations
                    .is_revoked(registration.session_id)
                    .await?
                {
                    self.forget(connection_id);
                    return Err(Error::Unauthorized);
                }
                self.remember(connection_id, registration, now);
                registration
            }
        };
        if now >= registration.valid_until_ms {
            return Err(Error::Unauthorized);
        }
        Ok(registration)
    }

    /// Ends a connection refused as `unauthorized`: writes `last_frame` (the refusal), then
    /// closes it, so a client learns why before the socket goes.
    pub async fn end(&self, connection_id: &str, last_frame: &str) {
        if let Err(PushError::Failed(detail)) = self.pusher.push(connection_id, last_frame).await {
            tracing::warn!(connection_id, detail = %detail, "refusal not written");
        }
        if let Err(PushError::Failed(detail)) = self.pusher.close(connection_id).await {
            tracing::warn!(connection_id, detail = %detail, "connection not closed");
        }
        self.forget(connection_id);
        match self.registry.unregister(connection_id).await {
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

    /// `send`: relays one ciphertext per device of `to` from the connection's device, checked
    /// against `to`'s devices and stored for all of them or none.
    pub async fn send(
        &self,
        connection_id: &str,
        to: &str,
        payload: Payload,
        online_only: bool,
        id: Option<&str>,
    ) -> Result<Sent> {
        let from = self.sender(connection_id).await?;
        let new_account = self.clock.now_ms() < from.new_account_until_ms;
        match id {
            // An ack-mode connection's sends with an id are remembered: a repeat stores nothing.
            Some(id) if from.ack => {
                self.send_once(from.device(), new_account, id, to, payload, online_only)
                    .await
            }
            _ => {
                self.send_from(from.device(), new_account, to, payload, online_only)
                    .await
            }
        }
    }

    /// A send from `from` (the connection's device, already authenticated); `new_account`: its
    /// account is younger than `NEW_ACCOUNT_AGE_SECS`.
    pub(crate) async fn send_from(
        &self,
        from: DeviceAddress,
        new_account: bool,
        to: &str,
        payload: Payload,
        online_only: bool,
    ) -> Result<Sent> {
        let to = Uuid::parse_str(to).map_err(|_| Error::UnknownRecipient)?;
        let legacy = matches!(payload, Payload::Body(_));
        let parts: Vec<(DeviceId, Option<u32>, Vec<u8>)> = match payload {
            Payload::Body(body) => vec![(PRIMARY_DEVICE, None, self.body_bytes(&body)?)],
            Payload::Devices(messages) => messages
                .into_iter()
                .map(|m| {
                    Ok((
                        m.device_id,
                        Some(m.registration_id),
                        self.body_bytes(&m.body)?,
                    ))
                })
                .collect::<Result<_>>()?,
        };
        // One step for the sender's messages, the bytes it may write into Redis and its share of
        // this one recipient; a refusal by any takes nothing from the others.
        let count = u32::try_from(parts.len()).unwrap_or(u32::MAX);
        let bytes: usize = parts.iter().map(|(_, _, b)| b.len()).sum();
        let body_cost = u32::try_from(bytes).unwrap_or(u32::MAX);
        limit_all(
            self.limiter.as_ref(),
            &self.limits,
            &[
                (Limit::Frames { user: from.user_id }, 1),
                (
                    Limit::Messages {
                        sender: from.user_id,
                    },
                    count,
                ),
                (
                    Limit::MessageBytes {
                        sender: from.user_id,
                    },
                    body_cost,
                ),
                (
                    Limit::MessagePair {
                        sender: from.user_id,
                        recipient: to,
                    },
                    count,
                ),
            ],
        )
        .await?;
        let now = self.clock.now_ms();
        let expires = now + self.inbox_limits.ttl.as_millis() as u64;
        let envelopes = parts
            .into_iter()
            .map(|(device_id, registration_id, bytes)| {
                let json = serde_json::to_string(&Envelope {
                    id: Uuid::new_v4(),
                    from: from.user_id,
                    source_device: from.device_id,
                    sent_at: now,
                    body: validation::encode(&bytes),
                })
                .map_err(|e| Error::Internal(e.to_string()))?;
                Ok(Addressed {
                    device_id,
                    registration_id,
                    envelope: StoredEnvelope::new(expires, &json).sent_by_new_account(new_account),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let mut fanout = Fanout {
            to,
            sender_device: (to == from.user_id).then_some(from.device_id),
            legacy,
            online_only,
            envelopes,
        };
        // What a delivery takes out of an inbox to push waits in flight until written, so a
        // function that dies while pushing loses nothing (a fetch after the lease gets it).
        let lease = now + self.timings.fetch_lease.as_millis() as u64;
        let outcomes = self.store(&mut fanout, now, lease).await?;
        let pushes =
            outcomes
                .into_iter()
                .zip(&fanout.envelopes)
                .map(|((device_id, outcome), sent)| {
                    let device = DeviceAddress::new(to, device_id);
                    async move {
                        let delivery = match outcome {
                            Stored::Dropped => Delivery::Dropped,
                            Stored::Queued => Delivery::Queued,
                            Stored::Online {
                                connections,
                                ack_connections,
                                envelopes,
                                in_flight,
                            } => {
                                // With a long backlog the new envelope may not be among those taken.
                                let taken = envelopes.contains(&sent.envelope);
                                let leased = in_flight.then_some(lease);
                                let unsent = self
                                    .push_to_device(
                                        device,
                                        &connections,
                                        &ack_connections,
                                        envelopes,
                                        !online_only,
                                        leased,
                                    )
                                    .await;
                                match (taken && !unsent.contains(&sent.envelope), online_only) {
                                    (true, _) => Delivery::Delivered,
                                    (false, true) => Delivery::Dropped,
                                    (false, false) => Delivery::Queued,
                                }
                            }
                        };
                        DeviceDelivery {
                            device_id,
                            delivery,
                        }
                    }
                });
        let devices = futures::future::join_all(pushes).await;
        let delivery = overall(&devices);
        tracing::debug!(from = %from.user_id, %to, ?delivery, "message relayed");
        Ok(Sent { delivery, devices })
    }

    fn body_bytes(&self, body: &str) -> Result<Vec<u8>> {
        let bytes = validation::base64("body", body)
            .map_err(|_| Error::InvalidFrame("body is not valid base64".into()))?;
        if bytes.len() > self.inbox_limits.max_body_bytes {
            return Err(Error::MessageTooLarge);
        }
        Ok(bytes)
    }

    /// Stores the send, checked against the recipient's devices. The relay's copy of the device
    /// list is refreshed from the user store when it is missing, and once before a mismatch is
    /// reported (the copy may lag a link or removal whose last step failed). A send in the form
    /// from before devices goes to the recipient's one device, whichever it is.
    async fn store(
        &self,
        fanout: &mut Fanout,
        now: u64,
        lease: u64,
    ) -> Result<Vec<(DeviceId, Stored)>> {
        let mut refreshed = false;
        // A legacy send follows the recipient's one device; bounded, as the list may keep moving.
        for _ in 0..4 {
            match self.inbox.deliver(fanout, now, lease).await? {
                Fanned::Done(outcomes) => return Ok(outcomes),
                Fanned::Mismatched { targets, .. }
                    if fanout.legacy
                        && targets.len() == 1
                        && fanout.envelopes[0].device_id != targets[0] =>
                {
                    fanout.envelopes[0].device_id = targets[0];
                }
                outcome if !refreshed => {
                    refreshed = true;
                    let Some(list) = self.users.devices(fanout.to).await? else {
                        return Err(Error::UnknownRecipient);
                    };
                    self.inbox.set_devices(fanout.to, &list).await?;
                    if outcome == Fanned::UnknownInbox {
                        continue;
                    }
                    // Checked again against the list just read (`set_devices` keeps a newer one).
                }
                Fanned::UnknownInbox => return Err(Error::UnknownRecipient),
                Fanned::Mismatched {
                    missing,
                    extra,
                    targets,
                } => {
                    return Err(if fanout.legacy {
                        Error::MismatchedDevices {
                            missing: targets,
                            extra: vec![],
                        }
                    } else {
                        Error::MismatchedDevices { missing, extra }
                    })
                }
                Fanned::Stale(stale) => return Err(Error::StaleDevices(stale)),
            }
        }
        Err(Error::unavailable(
            "relay",
            "the recipient's device list kept changing",
        ))
    }

    /// Pushes to the device's connections (latest-ending registration first), dropping any found gone. What could
    /// not be pushed is put back in the inbox (when `requeue`) and returned. Envelopes `leased`
    /// in the in-flight list are settled there: the written ones leave it (those written to an
    /// ack-mode connection stay until acknowledged), the rest go back.
    async fn push_to_device(
        &self,
        device: DeviceAddress,
        connections: &[String],
        ack_connections: &[String],
        envelopes: Vec<StoredEnvelope>,
        requeue: bool,
        leased: Option<u64>,
    ) -> Vec<StoredEnvelope> {
        let now = self.clock.now_ms();
        let mut taken = leased.map(|_| envelopes.clone());
        let mut pending: Vec<StoredEnvelope> = envelopes
            .into_iter()
            .filter(|e| !e.is_expired(now))
            .collect();
        let mut awaiting_ack: Vec<StoredEnvelope> = Vec::new();
        for conn in connections {
            if pending.is_empty() {
                break;
            }
            let acking = ack_connections.contains(conn);
            match self.push_envelopes(conn, &pending).await {
                Ok(()) if acking => awaiting_ack.append(&mut pending),
                Ok(()) => pending.clear(),
                Err((sent, gone)) => {
                    let written = pending.drain(..sent);
                    if acking {
                        awaiting_ack.extend(written);
                    } else {
                        drop(written);
                    }
                    if gone {
                        if let Err(e) = self.registry.remove(device, conn).await {
                            e.log();
                        }
                    }
                }
            }
        }
        if let Some(taken) = taken.as_mut() {
            taken.retain(|e| !awaiting_ack.contains(e));
        }
        match (leased, taken) {
            // Everything taken awaits an acknowledgement: nothing to settle.
            (Some(_), Some(taken)) if taken.is_empty() => {}
            (Some(lease_until), Some(taken)) => {
                let unsent: &[StoredEnvelope] = if requeue { &pending } else { &[] };
                // On failure they stay in flight and a fetch after the lease gets them back.
                if let Err(e) = self
                    .inbox
                    .settle_in_flight(device, &taken, lease_until, unsent)
                    .await
                {
                    e.log();
                }
            }
            _ if requeue && !pending.is_empty() => {
                if let Err(e) = self.inbox.requeue(device, &pending).await {
                    e.log();
                }
            }
            _ => {}
        }
        pending
    }

    /// Pushes envelopes in frames; on failure returns how many were written and whether the
    /// connection is gone.
    async fn push_envelopes(
        &self,
        connection_id: &str,
        envelopes: &[StoredEnvelope],
    ) -> std::result::Result<(), (usize, bool)> {
        let mut sent = 0;
        for (frame, count) in pack_messages(envelopes.iter().map(StoredEnvelope::json)) {
            match self.pusher.push(connection_id, &frame).await {
                Ok(()) => sent += count,
                Err(PushError::Gone) => return Err((sent, true)),
                Err(PushError::Failed(detail)) => {
                    tracing::warn!(connection_id, detail = %detail, "push failed");
                    return Err((sent, false));
                }
            }
        }
        Ok(())
    }

    /// `fetch`: writes the inbox to the connection, oldest first; `Ok` means drained. Each batch
    /// waits in the inbox's in-flight list while it is written, so a function that crashes or
    /// times out mid-fetch loses nothing (a fetch after the lease puts it back). After
    /// `fetch_deadline` no further frame is written (the first always is, so every fetch makes
    /// progress): the rest stays in the inbox and the answer is `FetchUnfinished`.
    pub async fn fetch(&self, connection_id: &str) -> Result<()> {
        let registration = self.frame_from(connection_id).await?;
        let device = registration.device();
        let started = self.clock.now_ms();
        let deadline = started + self.timings.fetch_deadline.as_millis() as u64;
        let lease_until = started + self.timings.fetch_lease.as_millis() as u64;
        let mut wrote = false;
        loop {
            let now = self.clock.now_ms();
            if wrote && now >= deadline {
                return match self.inbox.pending(device, now).await? {
                    0 => Ok(()),
                    _ => Err(Error::FetchUnfinished),
                };
            }
            let batch = self
                .inbox
                .take_in_flight(device, crate::storage::POP_BATCH, lease_until, now)
                .await?;
            if batch.is_empty() {
                return Ok(());
            }
            let live: Vec<StoredEnvelope> = batch
                .iter()
                .filter(|e| !e.is_expired(now))
                .cloned()
                .collect();
            let (mut sent, mut failure, mut late) = (0, None, false);
            for (frame, count) in pack_messages(live.iter().map(StoredEnvelope::json)) {
                if wrote && self.clock.now_ms() >= deadline {
                    late = true;
                    break;
                }
                match self.pusher.push(connection_id, &frame).await {
                    Ok(()) => (sent, wrote) = (sent + count, true),
                    Err(e) => {
                        failure = Some(e);
                        break;
                    }
                }
            }
            // In ack mode what was written stays in flight until acknowledged (or the lease ends).
            let settled: Vec<StoredEnvelope> = if registration.ack {
                batch
                    .iter()
                    .filter(|e| !live[..sent].contains(e))
                    .cloned()
                    .collect()
            } else {
                batch.clone()
            };
            if !settled.is_empty() {
                self.inbox
                    .settle_in_flight(device, &settled, lease_until, &live[sent..])
                    .await?;
            }
            match failure {
                None if late => return Err(Error::FetchUnfinished),
                None => {}
                Some(e) => {
                    if let PushError::Failed(detail) = &e {
                        tracing::warn!(connection_id, detail = %detail, "push failed");
                    } else {
                        self.registry.remove(device, connection_id).await?;
                    }
                    return Err(Error::Unavailable(
                        "connection could not be written; messages kept".into(),
                    ));
                }
            }
        }
    }

    /// `ping`: only a live session's connection (or a provisioning socket) is kept alive, and
    /// every ping is counted: the user's frame limit, or the provisioning socket's budget.
    pub async fn ping(&self, connection_id: &str) -> Result<()> {
        match self.frame_from(connection_id).await {
            Err(Error::Unauthorized) => self.provisioning_frame(connection_id).await,
            other => other.map(|_| ()),
        }
    }

    /// The connection's user, once the frame has been counted against the user's frame limit
    /// (`send` counts it with the message limits instead).
    pub(crate) async fn frame_from(&self, connection_id: &str) -> Result<Registration> {
        let device = self.sender(connection_id).await?;
        limit(
            self.limiter.as_ref(),
            &self.limits,
            Limit::Frames {
                user: device.user_id,
            },
            1,
        )
        .await?;
        Ok(device)
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
        tracing::info!(user_id = %device.user_id, connection_id, "connection renewed");
        Ok(registration.valid_until_ms)
    }

    /// `list`: how many unexpired envelopes wait.
    pub async fn list(&self, connection_id: &str) -> Result<u64> {
        let device = self.frame_from(connection_id).await?.device();
        self.inbox.pending(device, self.clock.now_ms()).await
    }
}

/// What a `send` carries: one body (the form from before devices) or one per device.
#[derive(Debug, Clone)]
pub enum Payload {
    Body(String),
    Devices(Vec<DeviceMessage>),
}

/// The outcome of a `send`: overall and per device.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Sent {
    pub delivery: Delivery,
    pub devices: Vec<DeviceDelivery>,
}

/// `dropped` if any device's is, else `queued` if any device's is, else `delivered`.
fn overall(devices: &[DeviceDelivery]) -> Delivery {
    let any = |d: Delivery| devices.iter().any(|x| x.delivery == d);
    if any(Delivery::Dropped) {
        Delivery::Dropped
    } else if any(Delivery::Queued) {
        Delivery::Queued
    } else {
        Delivery::Delivered
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_envelopes_carry_their_expiry() {
        let e = StoredEnvelope::new(42, r#"{"a":"b|c"}"#);
        assert_eq!(e.expires_at_ms(), 42);
        assert_eq!(e.json(), r#"{"a":"b|c"}"#);
        assert!(e.is_expired(42) && !e.is_expired(41));
    }
}
