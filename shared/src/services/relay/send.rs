//! `send`: one ciphertext per device of the recipient, charged, checked against the recipient's
//! devices, stored for all of them or none, then pushed to those online.

use uuid::Uuid;

use super::delivery::Known;
use super::Relay;
use crate::error::{Error, Result};
use crate::frames::{Delivery, DeviceDelivery, DeviceMessage, Envelope, MIN_EXPIRES_IN_SECS};
use crate::model::{DeviceAddress, DeviceId, UserId, PRIMARY_DEVICE};
use crate::services::Limit;
use crate::storage::{Addressed, Delivery as Stored, Fanned, Fanout, StoredEnvelope};
use crate::validation;

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

/// One device's ciphertext, decoded, with the registration id the sender knows for it.
struct Part {
    device_id: DeviceId,
    registration_id: Option<u32>,
    bytes: Vec<u8>,
}

impl Relay {
    /// `send`: relays one ciphertext per device of `to` from the connection's device, checked
    /// against `to`'s devices and stored for all of them or none. With `expires_in` (seconds) a
    /// disappearing message: never delivered after it, and the relay's copy gone by then.
    pub async fn send(
        &self,
        connection_id: &str,
        to: &str,
        payload: Payload,
        online_only: bool,
        expires_in: Option<u64>,
        id: Option<&str>,
    ) -> Result<Sent> {
        self.check_expires_in(expires_in)?;
        let from = self.sender(connection_id).await?;
        let new_account = self.clock.now_ms() < from.new_account_until_ms;
        let send = Options {
            online_only,
            expires_in,
        };
        match id {
            // An ack-mode connection's sends with an id are remembered: a repeat stores nothing.
            Some(id) if from.ack => {
                self.send_once(from.device(), new_account, id, to, payload, send)
                    .await
            }
            _ => {
                self.send_from(from.device(), new_account, to, payload, send)
                    .await
            }
        }
    }

    /// `expires_in` of a `send`, from `MIN_EXPIRES_IN_SECS` to the inbox TTL (an envelope lives
    /// no longer than that anyway).
    pub(super) fn check_expires_in(&self, expires_in: Option<u64>) -> Result<()> {
        let most = self.inbox_limits.ttl.as_secs();
        match expires_in {
            Some(secs) if !(MIN_EXPIRES_IN_SECS..=most).contains(&secs) => {
                Err(Error::InvalidFrame(format!(
                    "`expires_in` must be from {MIN_EXPIRES_IN_SECS} to {most} seconds"
                )))
            }
            _ => Ok(()),
        }
    }

    /// A send from `from` (the connection's device, already authenticated); `new_account`: its
    /// account is younger than `NEW_ACCOUNT_AGE_SECS`.
    pub(super) async fn send_from(
        &self,
        from: DeviceAddress,
        new_account: bool,
        to: &str,
        payload: Payload,
        send: Options,
    ) -> Result<Sent> {
        let Options {
            online_only,
            expires_in,
        } = send;
        let to = Uuid::parse_str(to).map_err(|_| Error::UnknownRecipient)?;
        let legacy = matches!(payload, Payload::Body(_));
        let parts = self.parts(payload)?;
        self.charge_send(from.user_id, to, &parts).await?;
        let now = self.clock.now_ms();
        let (envelopes, known) = match expires_in {
            None => (self.envelopes(from, new_account, parts, now)?, Vec::new()),
            Some(secs) => {
                self.disappearing(from, new_account, parts, now, secs, online_only)
                    .await?
            }
        };
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
        let outcomes = match self.store(&mut fanout, now, lease).await {
            Ok(outcomes) => outcomes,
            Err(e) => {
                if !online_only {
                    self.forget_refused(&known).await;
                }
                return Err(e);
            }
        };
        let pushes = outcomes.into_iter().zip(&fanout.envelopes).enumerate().map(
            |(i, ((device_id, outcome), sent))| {
                let device = DeviceAddress::new(to, device_id);
                let known = known.get(i).cloned();
                self.push_device(device, outcome, &sent.envelope, online_only, lease, known)
            },
        );
        let devices = futures::future::join_all(pushes).await;
        let delivery = overall(&devices);
        tracing::debug!(?delivery, "message relayed");
        Ok(Sent { delivery, devices })
    }

    /// One recipient device's part of the send, pushed when it is online.
    async fn push_device(
        &self,
        device: DeviceAddress,
        outcome: Stored,
        sent: &StoredEnvelope,
        online_only: bool,
        lease: u64,
        known: Option<Known>,
    ) -> DeviceDelivery {
        let delivery = self
            .push_stored(device, outcome, sent, online_only, lease, known)
            .await;
        DeviceDelivery {
            device_id: device.device_id,
            delivery,
        }
    }

    /// The payload's ciphertexts, decoded and each within the body cap.
    fn parts(&self, payload: Payload) -> Result<Vec<Part>> {
        match payload {
            Payload::Body(body) => Ok(vec![Part {
                device_id: PRIMARY_DEVICE,
                registration_id: None,
                bytes: self.body_bytes(&body)?,
            }]),
            Payload::Devices(messages) => messages
                .into_iter()
                .map(|m| {
                    Ok(Part {
                        device_id: m.device_id,
                        registration_id: Some(m.registration_id),
                        bytes: self.body_bytes(&m.body)?,
                    })
                })
                .collect(),
        }
    }

    pub(super) fn body_bytes(&self, body: &str) -> Result<Vec<u8>> {
        let bytes = validation::base64("body", body)
            .map_err(|_| Error::InvalidFrame("body is not valid base64".into()))?;
        if bytes.len() > self.inbox_limits.max_body_bytes {
            return Err(Error::MessageTooLarge);
        }
        Ok(bytes)
    }

    /// One step for the sender's frame, its messages, the bytes it may write into Redis and its
    /// share of this one recipient; a refusal by any takes nothing from the others.
    async fn charge_send(&self, sender: UserId, recipient: UserId, parts: &[Part]) -> Result<()> {
        let count = u32::try_from(parts.len()).unwrap_or(u32::MAX);
        let bytes: usize = parts.iter().map(|p| p.bytes.len()).sum();
        let body_cost = u32::try_from(bytes).unwrap_or(u32::MAX);
        self.limiter
            .take_all(&[
                (Limit::Frames { user: sender }, 1),
                (Limit::Messages { sender }, count),
                (Limit::MessageBytes { sender }, body_cost),
                (Limit::MessagePair { sender, recipient }, count),
            ])
            .await
    }

    /// Each part as the inbox stores it: a client-facing envelope with a fresh id, expiring
    /// after the inbox TTL.
    fn envelopes(
        &self,
        from: DeviceAddress,
        new_account: bool,
        parts: Vec<Part>,
        now: u64,
    ) -> Result<Vec<Addressed>> {
        let expires = now + self.inbox_limits.ttl.as_millis() as u64;
        parts
            .into_iter()
            .map(|part| {
                let json = client_json(Uuid::new_v4(), from, now, None, &part.bytes)?;
                Ok(Addressed {
                    device_id: part.device_id,
                    registration_id: part.registration_id,
                    envelope: StoredEnvelope::new(expires, &json).sent_by_new_account(new_account),
                })
            })
            .collect()
    }

    /// Each part of a disappearing message (`secs`): its envelope, with `expires_at`, stored
    /// under its own key that Redis deletes at the expiry, and the inbox entry a pointer to it
    /// (envelope.rs), so that no copy outlives the expiry wherever the entry is (inbox, in
    /// flight, put back). Also each envelope's JSON, for the push to skip reading it back. An
    /// online-only send is never stored: its envelopes stay inline.
    async fn disappearing(
        &self,
        from: DeviceAddress,
        new_account: bool,
        parts: Vec<Part>,
        now: u64,
        secs: u64,
        online_only: bool,
    ) -> Result<(Vec<Addressed>, Vec<Known>)> {
        let expires = now + secs * 1000;
        let mut envelopes = Vec::with_capacity(parts.len());
        let mut known = Vec::with_capacity(parts.len());
        for part in parts {
            let id = Uuid::new_v4();
            let json = client_json(id, from, now, Some(expires), &part.bytes)?;
            let envelope = match online_only {
                true => StoredEnvelope::new(expires, &json),
                false => StoredEnvelope::own(expires, id, from.user_id, json.len() as u64),
            };
            envelopes.push(Addressed {
                device_id: part.device_id,
                registration_id: part.registration_id,
                envelope: envelope.sent_by_new_account(new_account),
            });
            known.push(Known {
                id,
                json: json.into(),
            });
        }
        if !online_only {
            // Before any entry points at them. A send refused after this (a device mismatch)
            // deletes them again (`forget_refused`); one that fails to is paid for and gone
            // by `expires`.
            // Collected in a loop: futures made by a closure borrowing `self` would make the
            // caller's future not `Send` (the closure's higher-ranked lifetimes).
            let mut puts = Vec::with_capacity(known.len());
            for k in &known {
                puts.push(self.inbox.put_shared(k.id, &k.json, expires));
            }
            futures::future::try_join_all(puts).await?;
        }
        Ok((envelopes, known))
    }

    /// A disappearing send refused after its envelopes were written (a device mismatch, an
    /// unknown recipient, Redis failing part way): no entry points at them, so they go now
    /// rather than hold Redis memory until their expiry. Best effort: one missed still expires.
    async fn forget_refused(&self, known: &[Known]) {
        if known.is_empty() {
            return;
        }
        let ids: Vec<Uuid> = known.iter().map(|k| k.id).collect();
        if let Err(e) = self.inbox.delete_own(&ids).await {
            e.log();
        }
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
                Fanned::Done(outcomes) => {
                    super::delivery::count_stored(
                        outcomes.iter().map(|(_, d)| d),
                        fanout.online_only,
                    );
                    return Ok(outcomes);
                }
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
}

/// How a `send` is delivered: its `online_only` and `expires_in` (seconds, checked).
#[derive(Debug, Clone, Copy)]
pub(super) struct Options {
    pub online_only: bool,
    pub expires_in: Option<u64>,
}

/// A one-to-one envelope as the recipient receives it.
fn client_json(
    id: Uuid,
    from: DeviceAddress,
    now: u64,
    expires_at: Option<u64>,
    body: &[u8],
) -> Result<String> {
    serde_json::to_string(&Envelope {
        id,
        from: from.user_id,
        source_device: from.device_id,
        sent_at: now,
        group_id: None,
        mls_epoch: None,
        expires_at,
        body: validation::encode(body),
    })
    .map_err(|e| Error::Internal(e.to_string()))
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
