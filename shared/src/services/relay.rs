//! The message relay behind the WebSocket routes: connect, disconnect and client frames.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use uuid::Uuid;

use super::auth::Authenticator;
use super::{limit, Limit};
use crate::config::{InboxLimits, RateLimits};
use crate::error::{Error, Result};
use crate::frames::{pack_messages, Delivery, Envelope};
use crate::model::UserId;
use crate::storage::{
    ConnectionRegistry, Delivery as Stored, Inbox, PushError, Pusher, RateLimiter, StoredEnvelope,
    UserStore,
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
    pub(crate) limiter: Arc<dyn RateLimiter>,
    pub(crate) pusher: Arc<dyn Pusher>,
    pub(crate) limits: RateLimits,
    pub(crate) inbox_limits: InboxLimits,
    /// A connection's user never changes, so a warm function remembers it.
    pub(crate) senders: Arc<Mutex<HashMap<String, UserId>>>,
    pub(crate) clock: crate::clock::SharedClock,
}

impl Relay {
    /// `$connect`: the token must be valid and not revoked.
    pub async fn connect(&self, connection_id: &str, token: Option<&str>) -> Result<UserId> {
        let who = self.auth.authenticate(token).await?;
        self.registry
            .register(connection_id, who.user_id, self.clock.now_ms())
            .await?;
        self.remember(connection_id, who.user_id);
        tracing::info!(user_id = %who.user_id, connection_id, "connected");
        Ok(who.user_id)
    }

    /// `$disconnect`
    pub async fn disconnect(&self, connection_id: &str) -> Result<()> {
        self.senders
            .lock()
            .expect("cache lock")
            .remove(connection_id);
        let user = self.registry.unregister(connection_id).await?;
        tracing::info!(user_id = ?user, connection_id, "disconnected");
        Ok(())
    }

    fn remember(&self, connection_id: &str, user_id: UserId) {
        let mut cache = self.senders.lock().expect("cache lock");
        if cache.len() >= SENDER_CACHE_MAX {
            cache.clear();
        }
        cache.insert(connection_id.to_string(), user_id);
    }

    async fn sender(&self, connection_id: &str) -> Result<UserId> {
        if let Some(u) = self.senders.lock().expect("cache lock").get(connection_id) {
            return Ok(*u);
        }
        let user = self
            .registry
            .user_of(connection_id)
            .await?
            .ok_or(Error::Unauthorized)?;
        self.remember(connection_id, user);
        Ok(user)
    }

    /// `send`: relays `body` (base64) from the connection's user to `to`.
    pub async fn send(
        &self,
        connection_id: &str,
        to: &str,
        body: &str,
        online_only: bool,
    ) -> Result<Delivery> {
        let from = self.sender(connection_id).await?;
        let to = Uuid::parse_str(to).map_err(|_| Error::UnknownRecipient)?;
        let bytes = validation::base64("body", body)
            .map_err(|_| Error::InvalidFrame("body is not valid base64".into()))?;
        if bytes.len() > self.inbox_limits.max_body_bytes {
            return Err(Error::MessageTooLarge);
        }
        limit(
            self.limiter.as_ref(),
            &self.limits,
            Limit::Messages { sender: from },
            1,
        )
        .await?;
        let now = self.clock.now_ms();
        let envelope_id = Uuid::new_v4();
        let json = serde_json::to_string(&Envelope {
            id: envelope_id,
            from,
            sent_at: now,
            body: validation::encode(&bytes),
        })
        .map_err(|e| Error::Internal(e.to_string()))?;
        let envelope = StoredEnvelope::new(now + self.inbox_limits.ttl.as_millis() as u64, &json);
        let mut outcome = self.inbox.deliver(to, &envelope, online_only, now).await?;
        if outcome == Stored::UnknownInbox {
            if !self.users.exists(to).await? {
                return Err(Error::UnknownRecipient);
            }
            self.inbox.open(to).await?;
            outcome = self.inbox.deliver(to, &envelope, online_only, now).await?;
        }
        let delivery = match outcome {
            Stored::UnknownInbox => return Err(Error::UnknownRecipient),
            Stored::Dropped => Delivery::Dropped,
            Stored::Queued => Delivery::Queued,
            Stored::Online {
                connections,
                envelopes,
            } => {
                // With a long backlog the new envelope may not be among those taken: it waits.
                let taken = envelopes.contains(&envelope);
                let unsent = self
                    .push_to_user(to, &connections, envelopes, !online_only)
                    .await;
                match (taken && !unsent.contains(&envelope), online_only) {
                    (true, _) => Delivery::Delivered,
                    (false, true) => Delivery::Dropped,
                    (false, false) => Delivery::Queued,
                }
            }
        };
        tracing::debug!(%from, %to, ?delivery, "message relayed");
        Ok(delivery)
    }

    /// Pushes to the recipient's connections, newest first, dropping any found gone. What could
    /// not be pushed is put back in the inbox (when `requeue`) and returned.
    async fn push_to_user(
        &self,
        user: UserId,
        connections: &[String],
        envelopes: Vec<StoredEnvelope>,
        requeue: bool,
    ) -> Vec<StoredEnvelope> {
        let now = self.clock.now_ms();
        let mut pending: Vec<StoredEnvelope> = envelopes
            .into_iter()
            .filter(|e| !e.is_expired(now))
            .collect();
        for conn in connections {
            if pending.is_empty() {
                break;
            }
            match self.push_envelopes(conn, &pending).await {
                Ok(()) => pending.clear(),
                Err((sent, gone)) => {
                    pending.drain(..sent);
                    if gone {
                        if let Err(e) = self.registry.remove(user, conn).await {
                            e.log();
                        }
                    }
                }
            }
        }
        if requeue && !pending.is_empty() {
            if let Err(e) = self.inbox.requeue(user, &pending).await {
                e.log();
            }
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

    /// `fetch`: writes the whole inbox to the connection, oldest first; `Ok` means drained.
    pub async fn fetch(&self, connection_id: &str) -> Result<()> {
        let user = self.sender(connection_id).await?;
        loop {
            let batch = self.inbox.pop(user, crate::storage::POP_BATCH).await?;
            if batch.is_empty() {
                break;
            }
            let now = self.clock.now_ms();
            let live: Vec<StoredEnvelope> =
                batch.into_iter().filter(|e| !e.is_expired(now)).collect();
            if let Err((sent, gone)) = self.push_envelopes(connection_id, &live).await {
                self.inbox.requeue(user, &live[sent..]).await?;
                if gone {
                    self.registry.remove(user, connection_id).await?;
                }
                return Err(Error::Unavailable(
                    "connection could not be written; messages kept".into(),
                ));
            }
        }
        Ok(())
    }

    /// `list`: how many unexpired envelopes wait.
    pub async fn list(&self, connection_id: &str) -> Result<u64> {
        let user = self.sender(connection_id).await?;
        self.inbox.pending(user, self.clock.now_ms()).await
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
