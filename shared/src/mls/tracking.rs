//! The state the relay keeps per MLS group: an mls-rs ExternalSnapshot (group context, public
//! ratchet tree, transcript hashes), started from a member's GroupInfo.

use std::collections::BTreeSet;

use mls_rs::external_client::{
    builder::MlsConfig, ExternalGroup, ExternalReceivedMessage, ExternalSnapshot,
};
use mls_rs::group::ExportedTree;
use mls_rs::{MlsMessage, WireFormat};

use super::errors::{internal, invalid_commit};
use super::identity::device_of_signer;
use super::observer::observer;
use super::CIPHER_SUITE;
use crate::error::{Error, Result};
use crate::groups::GroupId;
use crate::model::DeviceAddress;

/// The tracked state: mls-rs ExternalSnapshot bytes, its epoch and its leaves' devices.
#[derive(Clone, PartialEq, Eq)]
pub struct Tracked {
    pub state: Vec<u8>,
    pub epoch: u64,
    pub devices: BTreeSet<DeviceAddress>,
}

/// The state's size, not its bytes: a large group's snapshot is hundreds of kilobytes of log.
impl std::fmt::Debug for Tracked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracked")
            .field("state_bytes", &self.state.len())
            .field("epoch", &self.epoch)
            .field("devices", &self.devices)
            .finish()
    }
}

/// Starts tracking from an MLSMessage(GroupInfo) (no ratchet-tree extension needed if `tree` is
/// given; with it, fine too). The MLS group_id must be the 16 bytes of `group_id`; every leaf's
/// credential must parse. Else Error::InvalidCommit.
pub fn observe(group_id: GroupId, group_info: &[u8], tree: Option<&[u8]>) -> Result<Tracked> {
    let message = group_info_message(group_id, group_info)?;
    let tree = tree
        .map(ExportedTree::from_bytes)
        .transpose()
        .map_err(|e| invalid_commit("ratchet tree does not parse", &e))?;
    // Verifies the tree (parent hashes, leaf signatures, tree hash against the GroupInfo's
    // context) and the GroupInfo's signature by the leaf it names.
    let group = observer()
        .observe_group(message, tree, None)
        .map_err(|e| invalid_commit("group info does not verify", &e))?;
    tracked(&group)
}

/// The GroupInfo a committer uploads for the new epoch: same group, epoch == tracked.epoch and
/// the same group context as the tracked state (tree hash, transcript hash), signed by a member.
pub fn check_group_info(tracked: &Tracked, group_id: GroupId, group_info: &[u8]) -> Result<()> {
    let message = group_info_message(group_id, group_info)?;
    let epoch = message.epoch().unwrap_or_default();
    if epoch != tracked.epoch {
        // Not StaleEpoch: this is the committer's own GroupInfo, taken before or after the
        // wrong epoch, not a race with another member.
        return Err(Error::InvalidCommit(format!(
            "group info is for epoch {epoch}, the group is at {}",
            tracked.epoch
        )));
    }
    let mut group = load(&tracked.state)?;
    // mls-rs checks the signer is a leaf of the tracked tree, the signature, and that the group
    // context and confirmation tag equal the tracked ones (and an included tree the tracked one).
    match group.process_incoming_message(message) {
        Ok(ExternalReceivedMessage::GroupInfo(_)) => Ok(()),
        Ok(_) => Err(Error::InvalidCommit("not a GroupInfo".into())),
        Err(e) => Err(invalid_commit(
            "group info does not match the tracked group",
            &e,
        )),
    }
}

/// The ratchet tree of the tracked state (as clients pass it to `join_group`).
pub fn export_tree(state: &[u8]) -> Result<Vec<u8>> {
    load(state)?
        .export_tree()
        .map_err(|e| internal("tree export", &e))
}

/// Parses a GroupInfo of this group in the relay's cipher suite.
fn group_info_message(group_id: GroupId, group_info: &[u8]) -> Result<MlsMessage> {
    let message = MlsMessage::from_bytes(group_info)
        .map_err(|e| invalid_commit("group info does not parse", &e))?;
    if message.wire_format() != WireFormat::GroupInfo {
        return Err(Error::InvalidCommit("not a GroupInfo".into()));
    }
    if message.group_id() != Some(group_id.as_bytes().as_slice()) {
        return Err(Error::InvalidCommit(
            "MLS group id is not the group's id".into(),
        ));
    }
    if message.cipher_suite() != Some(CIPHER_SUITE) {
        return Err(Error::InvalidCommit(
            "cipher suite must be CURVE25519_AES128".into(),
        ));
    }
    Ok(message)
}

/// The observed group of a tracked state.
pub(crate) fn load(state: &[u8]) -> Result<ExternalGroup<impl MlsConfig>> {
    let snapshot =
        ExternalSnapshot::from_bytes(state).map_err(|e| internal("state does not parse", &e))?;
    observer()
        .load_group(snapshot)
        .map_err(|e| internal("state does not load", &e))
}

/// The devices of the tree's leaves; a leaf that is not a device → InvalidCommit.
pub(crate) fn devices<C: MlsConfig>(group: &ExternalGroup<C>) -> Result<BTreeSet<DeviceAddress>> {
    group
        .roster()
        .members_iter()
        .map(|member| {
            device_of_signer(&member.signing_identity).ok_or_else(|| {
                Error::InvalidCommit(format!(
                    "leaf {} has a credential that is not a device",
                    member.index
                ))
            })
        })
        .collect()
}

/// What the relay stores of an observed group.
pub(crate) fn tracked<C: MlsConfig>(group: &ExternalGroup<C>) -> Result<Tracked> {
    Ok(Tracked {
        devices: devices(group)?,
        epoch: group.group_context().epoch,
        state: group
            .snapshot()
            .to_bytes()
            .map_err(|e| internal("state does not encode", &e))?,
    })
}
