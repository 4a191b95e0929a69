//! mls-rs errors as the relay's: a short reason, never a dump of the message that failed.

use mls_rs::error::MlsError;

use crate::error::Error;

/// Longest reason passed on: mls-rs messages are short, but some carry values (lifetimes,
/// indexes) and a client needs the kind of failure, not a transcript.
const MAX_REASON: usize = 160;

pub(crate) fn reason(error: &MlsError) -> String {
    let mut text = error.to_string();
    if text.len() > MAX_REASON {
        let mut end = MAX_REASON;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

pub(crate) fn invalid_commit(context: &str, error: &MlsError) -> Error {
    Error::InvalidCommit(format!("{context}: {}", reason(error)))
}

pub(crate) fn invalid_key_package(context: &str, error: &MlsError) -> Error {
    Error::InvalidKeyPackage(format!("{context}: {}", reason(error)))
}

/// The tracked state is the relay's own bytes: failing to read or write it is not the
/// client's fault.
pub(crate) fn internal(context: &str, error: &MlsError) -> Error {
    Error::Internal(format!("MLS {context}: {}", reason(error)))
}
