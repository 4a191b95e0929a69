//! One Commit applied to the tracked state: the relay's check that a Commit is one every member
//! will accept, and what it changes in the tree.

use std::collections::BTreeSet;

use mls_rs::external_client::ExternalReceivedMessage;
use mls_rs::group::{ContentType, Sender};
use mls_rs::{MlsMessage, MlsMessageDescription};

use super::errors::invalid_commit;
use super::identity::device_of_signer;
use super::tracking::{devices, load, tracked, Tracked};
use crate::error::{Error, Result};
use crate::groups::GroupId;
use crate::model::DeviceAddress;

/// The tracked state after a Commit, who committed and the devices it added and removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub tracked: Tracked,
    pub sender: DeviceAddress,
    pub added: BTreeSet<DeviceAddress>,
    pub removed: BTreeSet<DeviceAddress>,
}

/// Applies an MLSMessage(PublicMessage Commit) to the tracked state. Wrong group_id →
/// InvalidCommit; epoch != tracked epoch → StaleEpoch{current}; not a commit, an external
/// commit, a member sender that is not a leaf, a bad signature, proposal or update path, a leaf
/// whose credential is not a device → InvalidCommit.
///
/// An observer holds no group secret: it verifies the signature, the proposals and the update
/// path against the public tree, but not the membership tag nor the confirmation tag (members
/// do; a commit that fails those fails for every member alike).
pub fn apply_commit(state: &[u8], group_id: GroupId, commit: &[u8]) -> Result<Applied> {
    let (message, epoch, sender) = commit_header(group_id, commit)?;
    let mut group = load(state)?;
    let current = group.group_context().epoch;
    if epoch != current {
        return Err(Error::StaleEpoch { current });
    }
    // External commits (a device joining by itself) would let anyone holding a GroupInfo into
    // the tree without an admin's add; the relay does not take them.
    let Sender::Member(committer) = sender else {
        return Err(Error::InvalidCommit(
            "only a member of the group may commit".into(),
        ));
    };
    let before = devices(&group)?;
    let sender = group
        .roster()
        .member_with_index(committer)
        .ok()
        .and_then(|member| device_of_signer(&member.signing_identity))
        .ok_or_else(|| Error::InvalidCommit("the committer is not a leaf of the tree".into()))?;
    match group.process_incoming_message(message) {
        Ok(ExternalReceivedMessage::Commit(_)) => {}
        Ok(_) => return Err(Error::InvalidCommit("not a Commit".into())),
        Err(e) => return Err(invalid_commit("commit does not verify", &e)),
    }
    // The committer's own leaf cannot change device: mls-rs's basic identity provider only
    // accepts a successor leaf with the same identity.
    let tracked = tracked(&group)?;
    let added = tracked.devices.difference(&before).copied().collect();
    let removed = before.difference(&tracked.devices).copied().collect();
    Ok(Applied {
        tracked,
        sender,
        added,
        removed,
    })
}

/// The epoch a Commit was made at, read from its plaintext header without the group's state:
/// a Commit of this group at another epoch than the one the caller knows can be refused before
/// the state is read. Not a Commit of this group as a PublicMessage → InvalidCommit.
pub fn commit_epoch(group_id: GroupId, commit: &[u8]) -> Result<u64> {
    commit_header(group_id, commit).map(|(_, epoch, _)| epoch)
}

fn commit_header(group_id: GroupId, commit: &[u8]) -> Result<(MlsMessage, u64, Sender)> {
    let message =
        MlsMessage::from_bytes(commit).map_err(|e| invalid_commit("commit does not parse", &e))?;
    let (epoch, sender) = match message.description() {
        MlsMessageDescription::PublicProtocolMessage {
            group_id: id,
            epoch_id,
            content_type,
            sender,
            ..
        } => {
            if id != group_id.as_bytes().as_slice() {
                return Err(Error::InvalidCommit(
                    "MLS group id is not the group's id".into(),
                ));
            }
            if content_type != ContentType::Commit {
                return Err(Error::InvalidCommit("not a Commit".into()));
            }
            (epoch_id, sender)
        }
        MlsMessageDescription::PrivateProtocolMessage { .. } => {
            return Err(Error::InvalidCommit(
                "handshake messages must be PublicMessage".into(),
            ))
        }
        _ => return Err(Error::InvalidCommit("not a Commit".into())),
    };
    Ok((message, epoch, sender))
}
