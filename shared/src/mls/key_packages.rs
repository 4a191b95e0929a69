//! KeyPackages a device uploads: checked once on upload, so whoever claims one gets a package
//! that verifies and belongs to the device it was claimed for.

use mls_rs::{MlsMessage, WireFormat};

use super::errors::invalid_key_package;
use super::identity::device_of_signer;
use super::observer::{cipher_suite, observer};
use super::welcome::hex;
use super::CIPHER_SUITE;
use crate::error::{Error, Result};
use crate::model::DeviceAddress;

/// A verified KeyPackage: its reference (how a Welcome names it) and its canonical encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedKeyPackage {
    /// Lowercase hex KeyPackageRef.
    pub reference: String,
    /// The MLSMessage(KeyPackage) re-encoded: the bytes the reference is the hash of.
    pub bytes: Vec<u8>,
}

/// Parses an MLSMessage(KeyPackage), verifies it (signature, lifetime, cipher suite) and that its
/// leaf credential names `uploader`; else Error::InvalidKeyPackage(reason).
pub fn check_key_package(bytes: &[u8], uploader: DeviceAddress) -> Result<CheckedKeyPackage> {
    let message =
        MlsMessage::from_bytes(bytes).map_err(|e| invalid_key_package("does not parse", &e))?;
    if message.wire_format() != WireFormat::KeyPackage {
        return Err(Error::InvalidKeyPackage("not a KeyPackage".into()));
    }
    if message.cipher_suite() != Some(CIPHER_SUITE) {
        return Err(Error::InvalidKeyPackage(format!(
            "cipher suite must be {} (CURVE25519_AES128)",
            u16::from(CIPHER_SUITE)
        )));
    }
    let bytes = message
        .to_bytes()
        .map_err(|e| invalid_key_package("does not encode", &e))?;
    // Lifetime is checked against the current time (mls-rs takes the clock when given none).
    let key_package = observer()
        .validate_key_package(message, None)
        .map_err(|e| invalid_key_package("does not verify", &e))?;
    if device_of_signer(key_package.signing_identity()) != Some(uploader) {
        return Err(Error::InvalidKeyPackage(
            "its credential does not name the uploading device".into(),
        ));
    }
    let reference = key_package
        .to_reference(&cipher_suite())
        .map_err(|e| invalid_key_package("no reference", &e))?;
    Ok(CheckedKeyPackage {
        reference: hex(&reference),
        bytes,
    })
}
