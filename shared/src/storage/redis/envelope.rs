//! How an envelope is stored in a Redis inbox list, one string, so delivery hands the stored
//! JSON over without re-serializing:
//! - `[~]<expires_at_ms>|<client JSON>`: an envelope of a one-to-one send;
//! - `[~]<expires_at_ms>|@<envelope id>|<sender>`: a group send's entry (88 bytes), pointing at
//!   the envelope stored once for every device of the send (`RedisKeys::shared`).
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
        Content::Shared { id, from } => format!("{mark}{}|@{id}|{from}", e.expires_at_ms()),
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
        Some(pointer) => match pointer
            .split_once('|')
            .and_then(|(id, from)| Some((Uuid::parse_str(id).ok()?, Uuid::parse_str(from).ok()?)))
        {
            Some((id, from)) => StoredEnvelope::shared(expires, id, from),
            None => StoredEnvelope::new(0, ""),
        },
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
    fn an_unreadable_entry_is_expired() {
        assert!(decode("garbage").is_expired(1));
        assert!(decode("x|{}").is_expired(1));
        assert!(decode("5|@nope|x").is_expired(1));
    }
}
