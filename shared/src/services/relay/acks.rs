//! Reliable delivery, for connections in ack mode (`ack=1`): acknowledgements of what was
//! written to them, and sends remembered by id so that a repeat stores nothing new.

use std::time::Duration;

use sha2::{Digest, Sha256};

use super::send::Options;
use super::{Payload, Relay, Sent};
use crate::error::{Error, Result};
use crate::frames::Delivery;
use crate::model::DeviceAddress;
use crate::services::Limit;
use crate::storage::{Charge, Claim, Remembering};

/// Sends with ids are remembered for 24 h, in at most 256 KiB of Redis per device, the oldest
/// dropped first: some 500 sends to one-device recipients, what a client retrying the sends it
/// got no answer for needs many times over, while a device sending more in a day remembers
/// less than a day. One whose function died while sending may send again after a minute,
/// longer than any send takes.
pub(super) const REMEMBERING: Remembering = Remembering {
    window_ms: 24 * 3600 * 1000,
    lapse_ms: 60_000,
    budget_bytes: 256 * 1024,
};
/// How long a repeat waits for the answer of a concurrent first send, and how often it looks.
const REPEAT_WAIT: Duration = Duration::from_secs(5);
const REPEAT_POLL: Duration = Duration::from_millis(100);

/// What identifies a send's content: a repeat must be the same send, byte for byte.
fn content_hash(to: &str, payload: &Payload, send: Options) -> String {
    let mut h = Sha256::new();
    h.update(to.as_bytes());
    h.update([0, u8::from(send.online_only)]);
    // Only when given: the hash of a send without it is the same as before it existed.
    if let Some(secs) = send.expires_in {
        h.update(format!("\0expires_in\0{secs}\0").as_bytes());
    }
    match payload {
        Payload::Body(body) => {
            h.update(b"body\0");
            h.update(body.as_bytes());
        }
        Payload::Devices(messages) => {
            let mut sorted: Vec<_> = messages.iter().collect();
            sorted.sort_by_key(|m| m.device_id);
            for m in sorted {
                h.update(format!("\0{}\0{}\0", m.device_id, m.registration_id).as_bytes());
                h.update(m.body.as_bytes());
            }
        }
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

impl Relay {
    /// `ack`: deletes the connection's device's in-flight envelopes with these ids; returns how
    /// many there were. Unknown, repeated or other users' ids change nothing.
    /// The frame's rate limit is charged by the same Redis step, and only when the ack deletes
    /// nothing: useful acks are bounded by the envelopes paid sends stored, useless ones by the
    /// frame limit.
    pub async fn ack(&self, connection_id: &str, ids: &[String]) -> Result<u64> {
        let device = self.sender(connection_id).await?.device();
        let which = Limit::Frames {
            user: device.user_id,
        };
        let key = which.key();
        let charge = Charge {
            key: &key,
            bucket: self.limiter.bucket(&which),
            cost: 1,
        };
        let (decision, acked) = self.inbox.ack(device, ids, charge).await?;
        self.limiter.decided(&which, decision)?;
        Ok(acked)
    }

    /// A send remembered by (device, id): the first stores and records its answer; a repeat
    /// with the same content gets that answer (waiting for it while the first is under way),
    /// one with other content is refused. A refused send is forgotten, so it may be retried.
    pub(super) async fn send_once(
        &self,
        from: DeviceAddress,
        new_account: bool,
        id: &str,
        to: &str,
        payload: Payload,
        send: Options,
    ) -> Result<Sent> {
        let hash = content_hash(to, &payload, send);
        if let Some(answer) = self.claim(from, id, &hash).await? {
            return remembered(&answer);
        }
        match self.send_from(from, new_account, to, payload, send).await {
            // Nothing was stored anywhere: a repeat may try again.
            Ok(sent) if sent.devices.iter().all(|d| d.delivery == Delivery::Dropped) => {
                self.forget_send(from, id).await;
                Ok(sent)
            }
            Ok(sent) => {
                self.record_send(from, id, &hash, &sent).await?;
                Ok(sent)
            }
            Err(e) => {
                self.forget_send(from, id).await;
                Err(e)
            }
        }
    }

    /// Claims the id for this send: `None` when it is new (the caller sends), the first send's
    /// answer for a repeat (waiting for it while the first is under way).
    pub(super) async fn claim(
        &self,
        from: DeviceAddress,
        id: &str,
        hash: &str,
    ) -> Result<Option<String>> {
        let deadline = self.clock.now_ms() + REPEAT_WAIT.as_millis() as u64;
        let mut charged = false;
        loop {
            match self
                .sent_log
                .claim(from, id, hash, self.clock.now_ms(), REMEMBERING)
                .await?
            {
                Claim::New => return Ok(None),
                // A repeat is a frame like any other (a first send pays with the send's limits).
                _ if !charged => {
                    self.limiter
                        .take(Limit::Frames { user: from.user_id })
                        .await?;
                    charged = true;
                }
                Claim::Done(answer) => return Ok(Some(answer)),
                Claim::Conflict => return Err(Error::IdReused),
                Claim::Pending if self.clock.now_ms() < deadline => {
                    tokio::time::sleep(REPEAT_POLL).await
                }
                Claim::Pending => {
                    return Err(Error::unavailable(
                        "send",
                        "the first send with this id is still under way",
                    ))
                }
            }
        }
    }

    /// Records a stored send's answer for its repeats.
    pub(super) async fn record_send(
        &self,
        from: DeviceAddress,
        id: &str,
        hash: &str,
        sent: &impl serde::Serialize,
    ) -> Result<()> {
        let answer = serde_json::to_string(sent).map_err(|e| Error::Internal(e.to_string()))?;
        // Stored either way: a failure here only means a repeat may store again.
        if let Err(e) = self
            .sent_log
            .record(from, id, hash, &answer, self.clock.now_ms(), REMEMBERING)
            .await
        {
            e.log();
        }
        Ok(())
    }

    /// Forgets a send that stored nothing, so that it may be retried.
    pub(super) async fn forget_send(&self, from: DeviceAddress, id: &str) {
        if let Err(e) = self.sent_log.forget(from, id).await {
            e.log();
        }
    }
}

/// A remembered answer, as the first send recorded it.
pub(super) fn remembered<T: serde::de::DeserializeOwned>(answer: &str) -> Result<T> {
    serde_json::from_str(answer).map_err(|e| Error::Internal(format!("remembered answer: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frames::DeviceMessage;

    fn plain(online_only: bool) -> Options {
        Options {
            online_only,
            expires_in: None,
        }
    }

    #[test]
    fn the_content_hash_tells_sends_apart_but_not_the_order_of_devices() {
        let m = |device_id, body: &str| DeviceMessage {
            device_id,
            registration_id: 7,
            body: body.into(),
        };
        let a = Payload::Devices(vec![m(1, "QQ=="), m(2, "Qg==")]);
        let b = Payload::Devices(vec![m(2, "Qg=="), m(1, "QQ==")]);
        assert_eq!(
            content_hash("u", &a, plain(false)),
            content_hash("u", &b, plain(false))
        );
        assert_ne!(
            content_hash("u", &a, plain(false)),
            content_hash("u", &a, plain(true))
        );
        assert_ne!(
            content_hash("u", &a, plain(false)),
            content_hash("v", &a, plain(false))
        );
        let c = Payload::Devices(vec![m(1, "QQ=="), m(2, "Qw==")]);
        assert_ne!(
            content_hash("u", &a, plain(false)),
            content_hash("u", &c, plain(false))
        );
        assert_ne!(
            content_hash("u", &Payload::Body("QQ==".into()), plain(false)),
            content_hash("u", &Payload::Body("Qg==".into()), plain(false))
        );
        let expiring = Options {
            online_only: false,
            expires_in: Some(60),
        };
        assert_ne!(
            content_hash("u", &a, plain(false)),
            content_hash("u", &a, expiring)
        );
    }
}
