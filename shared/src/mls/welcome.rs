//! Whom a Welcome is for: the KeyPackageRefs of its encrypted group secrets.

use mls_rs::{MlsMessage, WireFormat};

use crate::error::{Error, Result};

/// The KeyPackageRefs (lowercase hex) a Welcome names; not a Welcome → InvalidCommit.
pub fn welcome_refs(welcome: &[u8]) -> Result<Vec<String>> {
    let message = MlsMessage::from_bytes(welcome)
        .map_err(|e| super::errors::invalid_commit("welcome does not parse", &e))?;
    if message.wire_format() != WireFormat::Welcome {
        return Err(Error::InvalidCommit("not a Welcome".into()));
    }
    Ok(message
        .welcome_key_package_references()
        .into_iter()
        .map(|reference| hex(reference))
        .collect())
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut out, b| {
            let _ = write!(out, "{b:02x}");
            out
        })
}
