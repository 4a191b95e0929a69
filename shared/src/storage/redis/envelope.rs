//! How an envelope is stored in a Redis inbox list, one string, so delivery hands the stored
//! JSON over without re-serializing:
//! - `[~]<expires_at_ms>|<client JSON>`: an envelope of a one-to-one send;
//! - `[~]<expires_at_ms>|@<envelope id>|<sender>`: a group send's entry (88 bytes), pointing at
//!   the envelope stored once for every device of the send (`RedisKeys::shared`);
//! - `[~]<expires_at_ms>|@<envelope id>|<sender>|<bytes>`: a disappearing message's entry,
//!   pointing at its envelope (`bytes` long) stored for this device alone under the same kind
//!   of key, with Redis expiring it at `expires_at_ms`; the inbox's accounting counts `bytes`
//!   with the entry (`weight`, prelude_store.lua).
//!
//! `~` marks one sent by a new account (`scripts/prelude_store.lua` counts those together). The
//! Lua scripts read the prefix, the sender and the envelope id of both forms
//! (`prelude_store.lua`'s `sender_of`, `prelude_in_flight.lua`'s `id_of`); this module is the
//! only Rust that writes or reads them.

use uuid::Uuid;

use crate::storage::{Content, StoredEnvelope};

pub fn encode(e: &StoredEnvelope) -> String {
    let mark = if e.from_new_account() { "~" } else { "" };
    match e.content() {
        Content::Json(json) => format!("{mark}{}|{json}", e.expires_at_ms()),
        Content::Shared {
            id,
            from,
            body_bytes: None,
        } => format!("{mark}{}|@{id}|{from}", e.expires_at_ms()),
        Content::Shared {
            id,
            from,
            body_bytes: Some(bytes),
        } => format!("{mark}{}|@{id}|{from}|{bytes}", e.expires_at_ms()),
    }
}

/// A stored string back into an envelope; one without a readable expiry counts as expired
/// (never delivered), as the scripts treat it.
pub fn decode(stored: &str) -> StoredEnvelope {
    let (marked, rest) = match stored.strip_prefix('~') {
        Some(rest) => (true, rest),
        None => (false, stored),
    };
    let Some((exp, content)) = rest.split_once('|') else {
        return StoredEnvelope::new(0, "");
    };
    let expires = exp.parse().unwrap_or(0);
    let envelope = match content.strip_prefix('@') {
        Some(pointer) => {
            let mut fields = pointer.splitn(3, '|');
            let id = fields.next().and_then(|id| Uuid::parse_str(id).ok());
            let from = fields.next().and_then(|from| Uuid::parse_str(from).ok());
            match (id, from, fields.next().map(str::parse)) {
                (Some(id), Some(from), None) => StoredEnvelope::shared(expires, id, from),
                (Some(id), Some(from), Some(Ok(bytes))) => {
                    StoredEnvelope::own(expires, id, from, bytes)
                }
                _ => StoredEnvelope::new(0, ""),
            }
        }
        None => StoredEnvelope::new(expires, content),
    };
    envelope.sent_by_new_account(marked)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_with_a_bar_inside_the_json() {
        let e = StoredEnvelope::new(42, r#"{"a":"b|c"}"#);
        let stored = encode(&e);
        assert_eq!(stored, r#"42|{"a":"b|c"}"#);
        assert_eq!(decode(&stored), e);
    }

    #[test]
    fn a_new_account_s_envelope_keeps_its_mark() {
        let e = StoredEnvelope::new(42, r#"{"a":"b|c"}"#).sent_by_new_account(true);
        let stored = encode(&e);
        assert_eq!(stored, r#"~42|{"a":"b|c"}"#);
        assert_eq!(decode(&stored), e);
        assert!(decode(&stored).from_new_account());
        assert!(!decode(r#"42|{}"#).from_new_account());
    }

    #[test]
    fn a_group_entry_is_a_small_pointer_that_round_trips() {
        let (id, from) = (Uuid::new_v4(), Uuid::new_v4());
        let e = StoredEnvelope::shared(1_800_000_000_000, id, from).sent_by_new_account(true);
        let stored = encode(&e);
        assert_eq!(stored, format!("~1800000000000|@{id}|{from}"));
        assert!(stored.len() <= 100, "{}", stored.len());
        assert_eq!(decode(&stored), e);
        assert_eq!(decode(&stored).shared_id(), Some(id));
    }

    #[test]
    fn a_disappearing_message_s_entry_names_its_body_s_bytes_and_round_trips() {
        let (id, from) = (Uuid::new_v4(), Uuid::new_v4());
        let e = StoredEnvelope::own(1_800_000_000_000, id, from, 65_536);
        let stored = encode(&e);
        assert_eq!(stored, format!("1800000000000|@{id}|{from}|65536"));
        assert_eq!(decode(&stored), e);
        assert_eq!(decode(&stored).shared_id(), Some(id));
        assert!(decode(&format!("5|@{id}|{from}|x")).is_expired(1));
    }

    #[test]
    fn an_unreadable_entry_is_expired() {
        assert!(decode("garbage").is_expired(1));
        assert!(decode("x|{}").is_expired(1));
        assert!(decode("5|@nope|x").is_expired(1));
    }
}
