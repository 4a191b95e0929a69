//! How an envelope is stored in a Redis inbox list: `<expires_at_ms>|<client JSON>`, one string,
//! so delivery hands the stored JSON over without re-serializing. The Lua scripts read the
//! expiry prefix (`pending.lua`: `^(%d+)|`); this module is the only Rust that writes or reads it.

use crate::storage::StoredEnvelope;

pub fn encode(e: &StoredEnvelope) -> String {
    format!("{}|{}", e.expires_at_ms(), e.json())
}

/// A stored string back into an envelope; one without a readable expiry counts as expired
/// (never delivered), as the scripts treat it.
pub fn decode(stored: &str) -> StoredEnvelope {
    match stored.split_once('|') {
        Some((exp, json)) => StoredEnvelope::new(exp.parse().unwrap_or(0), json),
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
    fn an_unreadable_entry_is_expired() {
        assert!(decode("garbage").is_expired(1));
        assert!(decode("x|{}").is_expired(1));
    }
}
