//! The message relay behind the WebSocket routes: connect, disconnect and client frames.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use super::auth::Authenticator;
use super::{limit, Limit};
use crate::config::{InboxLimits, RateLimits};
use crate::error::{Error, Result};
use crate::model::UserId;
use crate::storage::{
    ConnectionRegistry, Delivery, Inbox, PushError, Pusher, RateLimiter, StoredEnvelope, UserStore,
};
use crate::validation;

/// The API: each `messages` frame is at most 128 KiB; API Gateway's limit is "128 KB", so the
/// smaller reading of both.
pub const MAX_FRAME_BYTES: usize = 128_000;
const FRAME_HEAD: &str = r#"{"type":"messages","messages":["#;
const FRAME_TAIL: &str = "]}";
/// Bounds the in-process connection → user cache of a warm function.
const SENDER_CACHE_MAX: usize = 100_000;

#[derive(Deserialize)]
struct Frame {
    action: String,
    #[serde(default)]
    id: Option<serde_json::Value>,
    #[serde(default)]
    to: Option<String>,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    online_only: Option<bool>,
}

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

fn error_frame(id: Option<&serde_json::Value>, e: &Error) -> String {
    json!({"type": "error", "id": id, "code": e.code(), "message": e.public_message()}).to_string()
}

/// Packs envelopes into `messages` frames of at most `MAX_FRAME_BYTES`; returns each frame with
/// the number of envelopes it carries.
pub fn pack_frames(envelopes: &[StoredEnvelope]) -> Vec<(String, usize)> {
    let mut frames = Vec::new();
    let mut frame = String::from(FRAME_HEAD);
    let mut count = 0;
    for e in envelopes {
        let json = e.json();
        if count > 0 && frame.len() + 1 + json.len() + FRAME_TAIL.len() > MAX_FRAME_BYTES {
            frame.push_str(FRAME_TAIL);
            frames.push((
                std::mem::replace(&mut frame, String::from(FRAME_HEAD)),
                count,
            ));
            count = 0;
        }
        if count > 0 {
            frame.push(',');
        }
        frame.push_str(json);
        count += 1;
    }
    if count > 0 {
        frame.push_str(FRAME_TAIL);
        frames.push((frame, count));
    }
    frames
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

    /// `$default`: one client frame in, the reply frame out (pushed frames go through the pusher).
    pub async fn handle(&self, connection_id: &str, text: &str) -> String {
        let frame: Frame = match serde_json::from_str(text) {
            Ok(f) => f,
            Err(_) => {
                return error_frame(
                    None,
                    &Error::InvalidFrame("frames are JSON objects with an action".into()),
                )
            }
        };
        let id = frame.id.as_ref();
        let result = match frame.action.as_str() {
            "send" => self.send(connection_id, &frame).await,
            "fetch" => self.fetch(connection_id).await,
            "list" => self.list(connection_id).await,
            "ping" => Ok(json!({"type": "pong"}).to_string()),
            other => Err(Error::InvalidFrame(format!(
                "unknown action {:?}",
                other.chars().take(32).collect::<String>()
            ))),
        };
        result.unwrap_or_else(|e| {
            e.log();
            error_frame(id, &e)
        })
    }

    async fn send(&self, connection_id: &str, frame: &Frame) -> Result<String> {
        let from = self.sender(connection_id).await?;
        let to = frame
            .to
            .as_deref()
            .ok_or_else(|| Error::InvalidFrame("send needs `to`".into()))?;
        let body = frame
            .body
            .as_deref()
            .ok_or_else(|| Error::InvalidFrame("send needs `body`".into()))?;
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
        let online_only = frame.online_only.unwrap_or(false);
        let now = self.clock.now_ms();
        let envelope_id = Uuid::new_v4();
        let json = json!({"id": envelope_id, "from": from, "sent_at": now, "body": validation::encode(&bytes)}).to_string();
        let envelope = StoredEnvelope::new(now + self.inbox_limits.ttl.as_millis() as u64, &json);
        let mut outcome = self.inbox.deliver(to, &envelope, online_only, now).await?;
        if outcome == Delivery::UnknownInbox {
            if !self.users.exists(to).await? {
                return Err(Error::UnknownRecipient);
            }
            self.inbox.open(to).await?;
            outcome = self.inbox.deliver(to, &envelope, online_only, now).await?;
        }
        let delivery = match outcome {
            Delivery::UnknownInbox => return Err(Error::UnknownRecipient),
            Delivery::Dropped => "dropped",
            Delivery::Queued => "queued",
            Delivery::Online {
                connections,
                envelopes,
            } => {
                // With a long backlog the new envelope may not be among those taken: it waits.
                let taken = envelopes.contains(&envelope);
                let unsent = self
                    .push_to_user(to, &connections, envelopes, !online_only)
                    .await;
                match (taken && !unsent.contains(&envelope), online_only) {
                    (true, _) => "delivered",
                    (false, true) => "dropped",
                    (false, false) => "queued",
                }
            }
        };
        tracing::debug!(%from, %to, delivery, "message relayed");
        Ok(json!({"type": "sent", "id": frame.id, "delivery": delivery}).to_string())
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
        for (frame, count) in pack_frames(envelopes) {
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

    async fn fetch(&self, connection_id: &str) -> Result<String> {
        let user = self.sender(connection_id).await?;
        loop {
            let batch = self
                .inbox
                .pop(user, crate::storage::redis::POP_BATCH)
                .await?;
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
        Ok(json!({"type": "drained"}).to_string())
    }

    async fn list(&self, connection_id: &str) -> Result<String> {
        let user = self.sender(connection_id).await?;
        let pending = self.inbox.pending(user, self.clock.now_ms()).await?;
        Ok(json!({"type": "inbox", "pending": pending}).to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(n: usize, size: usize) -> Vec<StoredEnvelope> {
        (0..n)
            .map(|i| {
                StoredEnvelope::new(
                    1,
                    &format!(r#"{{"id":"{i}","body":"{}"}}"#, "x".repeat(size)),
                )
            })
            .collect()
    }

    #[test]
    fn frames_stay_under_the_limit_and_keep_order() {
        let envs = env(10, 60 * 1024);
        let frames = pack_frames(&envs);
        assert_eq!(frames.iter().map(|f| f.1).sum::<usize>(), 10);
        let mut next = 0;
        for (frame, count) in &frames {
            assert!(frame.len() <= MAX_FRAME_BYTES, "{}", frame.len());
            let v: serde_json::Value = serde_json::from_str(frame).unwrap();
            let msgs = v["messages"].as_array().unwrap();
            assert_eq!(msgs.len(), *count);
            for m in msgs {
                assert_eq!(m["id"], next.to_string());
                next += 1;
            }
        }
        assert!(pack_frames(&[]).is_empty());
    }

    #[test]
    fn stored_envelopes_carry_their_expiry() {
        let e = StoredEnvelope::new(42, r#"{"a":"b|c"}"#);
        assert_eq!(e.expires_at_ms(), 42);
        assert_eq!(e.json(), r#"{"a":"b|c"}"#);
        assert!(e.is_expired(42) && !e.is_expired(41));
    }
}
