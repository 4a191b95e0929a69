//! The plaintext header of an application message: enough for the relay to route it and check
//! its epoch, nothing of its content.

use mls_rs::group::ContentType;
use mls_rs::{MlsMessage, MlsMessageDescription};

use crate::error::{Error, Result};

/// What the relay reads of an MLS PrivateMessage without any key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppHeader {
    pub group_id: Vec<u8>,
    pub epoch: u64,
    /// False for an encrypted Proposal or Commit: the relay only relays application data in
    /// group sends (handshake messages go through the commit route, in the clear).
    pub is_application: bool,
}

/// The header of an application message body (MLSMessage PrivateMessage); anything else →
/// InvalidFrame.
pub fn application_header(body: &[u8]) -> Result<AppHeader> {
    let message = MlsMessage::from_bytes(body)
        .map_err(|_| Error::InvalidFrame("body is not an MLS message".into()))?;
    match message.description() {
        MlsMessageDescription::PrivateProtocolMessage {
            group_id,
            epoch_id,
            content_type,
        } => Ok(AppHeader {
            group_id: group_id.to_vec(),
            epoch: epoch_id,
            is_application: content_type == ContentType::Application,
        }),
        _ => Err(Error::InvalidFrame(
            "body is not an MLS PrivateMessage".into(),
        )),
    }
}
