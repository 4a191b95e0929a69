//! How an envelope is stored in a Redis inbox list: `[~]<expires_at_ms>|<client JSON>`, one
//! string, so delivery hands the stored JSON over without re-serializing; `~` marks one sent by
//! a new account (`scripts/prelude_store.lua` counts those together). The Lua scripts read the
//! prefix (`prelude_store.lua`: `^~?(%d+)|`); this module is the only Rust that writes or reads
//! it.

use crate::storage::StoredEnvelope;

pub fn encode(e: &StoredEnvelope) -> String {
    let mark = if e.from_new_account() { "~" } else { "" };
    format!("{mark}{}|{}", e.expires_at_ms(), e.json())
}

/// A stored string back into an envelope; one without a readable expiry counts as expired
/// (never delivered), as the scripts treat it.
pub fn decode(stored: &str) -> StoredEnvelope {
    let (marked, rest) = match stored.strip_prefix('~') {
        Some(rest) => (true, rest),
        None => (false, stored),
    };
    match rest.split_once('|') {
        Some((exp, json)) => {
            StoredEnvelope::new(exp.parse().unwrap_or(0), json).sent_by_new_account(marked)
        }
        None => StoredEnvelope::new(0, ""),
    }
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
    fn an_unreadable_entry_is_expired() {
        assert!(decode("garbage").is_expired(1));
        assert!(decode("x|{}").is_expired(1));
    }
}
