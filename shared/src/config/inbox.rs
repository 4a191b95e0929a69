//! How much one inbox holds and for how long, and the sizing rules the Redis scripts apply.

use std::time::Duration;

use super::env::{invalid, Env};
use super::settings as s;
use super::ConfigError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InboxLimits {
    pub max_messages: u32,
    pub ttl: Duration,
    /// Largest decoded message body.
    pub max_body_bytes: usize,
    /// Stored bytes one inbox may hold (envelopes as stored: about 4/3 of the bodies plus
    /// ~160 bytes each).
    pub max_bytes: u64,
}

impl InboxLimits {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let max_messages = env.number_at_least(&s::INBOX_MAX, 1, "at least 1")?;
        let max_body_bytes: usize = env.number(&s::MESSAGE_MAX_BYTES)?;
        let max_bytes: u64 = env.number(&s::INBOX_MAX_BYTES)?;
        if max_bytes < stored_envelope_bytes(max_body_bytes) {
            return Err(invalid(
                &s::INBOX_MAX_BYTES,
                "room for one envelope of MESSAGE_MAX_BYTES (4/3 of it + 256)",
            ));
        }
        Ok(Self {
            max_messages,
            ttl: Duration::from_secs(env.number(&s::INBOX_TTL_SECS)?),
            max_body_bytes,
            max_bytes,
        })
    }

    /// Envelopes and bytes that accounts younger than `NEW_ACCOUNT_AGE_SECS`, together, may hold
    /// in one inbox: a quarter of each cap, so throwaway accounts can never crowd out a contact.
    pub fn new_accounts_part(&self) -> (u32, u64) {
        ((self.max_messages / 4).max(1), self.max_bytes / 4)
    }
}

impl Default for InboxLimits {
    fn default() -> Self {
        Self::from_env(&Env::new(&|_| None)).expect("the declared defaults parse")
    }
}

/// Stored size of an envelope beside its base64 body: the JSON fields and the expiry prefix.
pub const ENVELOPE_OVERHEAD_BYTES: u64 = 256;

/// The most bytes one envelope with a `body_bytes` body can take in an inbox.
pub fn stored_envelope_bytes(body_bytes: usize) -> u64 {
    (body_bytes as u64).div_ceil(3) * 4 + ENVELOPE_OVERHEAD_BYTES
}

/// Default `INBOX_MAX_BYTES`: about 95 maximum-size envelopes or thousands of ordinary ones
/// (a Signal text message is well under 1 KB; attachments travel elsewhere), so it bounds what
/// a flood leaves in one inbox to 8 MiB without touching ordinary offline queues.
pub const DEFAULT_INBOX_MAX_BYTES: u64 = s::INBOX_MAX_BYTES.default_number();
