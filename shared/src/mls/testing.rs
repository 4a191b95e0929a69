//! Test support for every suite: one device's real mls-rs client, configured the way the relay
//! needs clients to be (handshake messages in the clear, no ratchet tree in Commits).
//!
//! Methods panic on what a well-behaved client never sees fail; `join`, `process` and `decrypt`
//! return mls-rs's error so that tests can check what members refuse.

use std::collections::BTreeSet;

use mls_rs::client_builder::{
    BaseConfig, PaddingMode, WithCryptoProvider, WithIdentityProvider, WithMlsRules,
};
use mls_rs::error::MlsError;
use mls_rs::group::{ExportedTree, ReceivedMessage};
use mls_rs::identity::basic::{BasicCredential, BasicIdentityProvider};
use mls_rs::identity::SigningIdentity;
use mls_rs::mls_rules::{CommitOptions, DefaultMlsRules, EncryptionOptions};
use mls_rs::{CipherSuiteProvider, Client, ExtensionList, Group, MlsMessage};
use mls_rs_crypto_rustcrypto::RustCryptoProvider;

use super::identity::{device_of_signer, identity};
use super::observer::{cipher_suite, crypto};
use super::CIPHER_SUITE;
use crate::groups::GroupId;
use crate::model::DeviceAddress;

type Config = WithMlsRules<
    DefaultMlsRules,
    WithCryptoProvider<RustCryptoProvider, WithIdentityProvider<BasicIdentityProvider, BaseConfig>>,
>;

/// What a client must configure: Commits and Proposals as PublicMessage so the relay can track
/// the group; no ratchet tree in GroupInfo/Welcome (joiners take it from the relay); a path in
/// every commit so each one refreshes the committer's keys.
pub fn client_rules() -> DefaultMlsRules {
    DefaultMlsRules::new()
        .with_commit_options(
            CommitOptions::new()
                .with_ratchet_tree_extension(false)
                .with_path_required(true),
        )
        .with_encryption_options(EncryptionOptions::new(false, PaddingMode::None))
}

/// What a member uploads after its own Commit.
#[derive(Debug, Clone)]
pub struct Committed {
    /// MLSMessage(PublicMessage Commit).
    pub commit: Vec<u8>,
    /// MLSMessage(Welcome) when the Commit adds devices.
    pub welcome: Option<Vec<u8>>,
    /// MLSMessage(GroupInfo) of the new epoch, without the ratchet tree.
    pub group_info: Vec<u8>,
}

/// One device's MLS client and (once created or joined) its group.
pub struct TestMember {
    pub device: DeviceAddress,
    client: Client<Config>,
    group: Option<Group<Config>>,
    /// The group as it was before this member's last own Commit, for when the relay refuses it.
    before_commit: Option<Group<Config>>,
}

impl TestMember {
    pub fn new(device: DeviceAddress) -> Self {
        Self::with_identity(device, identity(device))
    }

    /// A client whose credential says `credential_identity` rather than its device's identity
    /// (for tests of leaves the relay cannot place).
    pub fn with_identity(device: DeviceAddress, credential_identity: Vec<u8>) -> Self {
        let (secret, public) = cipher_suite()
            .signature_key_generate()
            .expect("signature key");
        let credential = BasicCredential::new(credential_identity).into_credential();
        let client = Client::builder()
            .identity_provider(BasicIdentityProvider)
            .crypto_provider(crypto())
            .mls_rules(client_rules())
            .signing_identity(
                SigningIdentity::new(credential, public),
                secret,
                CIPHER_SUITE,
            )
            .build();
        Self {
            device,
            client,
            group: None,
            before_commit: None,
        }
    }

    /// A fresh MLSMessage(KeyPackage) (its private keys stay with this client for `join`).
    pub fn key_package(&self) -> Vec<u8> {
        self.client
            .generate_key_package_message(ExtensionList::new(), ExtensionList::new(), None)
            .and_then(|m| m.to_bytes())
            .expect("key package")
    }

    /// Creates the group (MLS group id = the 16 bytes of `group_id`) with this device alone;
    /// the GroupInfo of epoch 0 (for the relay's `observe`, with [`Self::export_tree`]).
    pub fn create_group(&mut self, group_id: GroupId) -> Vec<u8> {
        let group = self
            .client
            .create_group_with_id(
                group_id.as_bytes().to_vec(),
                ExtensionList::new(),
                ExtensionList::new(),
                None,
            )
            .expect("create group");
        self.group = Some(group);
        self.group_info()
    }

    /// Commits the Adds of these KeyPackages (MLSMessage bytes) and applies it.
    pub fn add(&mut self, key_packages: &[Vec<u8>]) -> Committed {
        self.commit(key_packages, &[])
    }

    /// Commits the Removes of these devices' leaves and applies it.
    pub fn remove(&mut self, devices: &[DeviceAddress]) -> Committed {
        self.commit(&[], devices)
    }

    /// Commits nothing but a fresh path (new keys for this leaf) and applies it.
    pub fn update(&mut self) -> Committed {
        self.commit(&[], &[])
    }

    /// Commits Adds and Removes together and applies it at once; [`Self::discard_commit`]
    /// goes back if the relay refuses the Commit.
    pub fn commit(&mut self, key_packages: &[Vec<u8>], removes: &[DeviceAddress]) -> Committed {
        let group = self.group.as_mut().expect("not in a group");
        self.before_commit = Some(group.clone());
        let indexes: Vec<u32> = removes
            .iter()
            .map(|device| {
                group
                    .roster()
                    .members_iter()
                    .find(|m| device_of_signer(&m.signing_identity) == Some(*device))
                    .expect("removed device is in the group")
                    .index
            })
            .collect();
        let mut builder = group.commit_builder();
        for key_package in key_packages {
            let message = MlsMessage::from_bytes(key_package).expect("key package parses");
            builder = builder.add_member(message).expect("add");
        }
        for index in indexes {
            builder = builder.remove_member(index).expect("remove");
        }
        let output = builder.build().expect("commit");
        group.apply_pending_commit().expect("apply own commit");
        Committed {
            commit: output.commit_message.to_bytes().expect("commit bytes"),
            welcome: output
                .welcome_messages
                .first()
                .map(|w| w.to_bytes().expect("welcome bytes")),
            group_info: self.group_info(),
        }
    }

    /// Back to the state before this member's last own Commit (the relay took another one).
    pub fn discard_commit(&mut self) {
        self.group = Some(self.before_commit.take().expect("no own commit to discard"));
    }

    /// Joins with a Welcome and the ratchet tree (from the relay's `export_tree`).
    pub fn join(&mut self, welcome: &[u8], tree: &[u8]) -> Result<(), MlsError> {
        let welcome = MlsMessage::from_bytes(welcome)?;
        let tree = ExportedTree::from_bytes(tree)?;
        let (group, _) = self.client.join_group(Some(tree), &welcome, None)?;
        self.group = Some(group);
        Ok(())
    }

    /// A GroupInfo of the current epoch that allows an external commit (with the external
    /// public key), for tests of what the relay does with external commits.
    pub fn group_info_for_external_commit(&self) -> Vec<u8> {
        self.group()
            .group_info_message_allowing_ext_commit(false)
            .and_then(|m| m.to_bytes())
            .expect("group info")
    }

    /// Joins by an external commit (no Welcome, no one's add): the Commit to upload.
    pub fn join_externally(&mut self, group_info: &[u8], tree: &[u8]) -> Result<Vec<u8>, MlsError> {
        let group_info = MlsMessage::from_bytes(group_info)?;
        let tree = ExportedTree::from_bytes(tree)?;
        let (group, commit) = self
            .client
            .external_commit_builder()?
            .with_tree_data(tree)
            .build(group_info)?;
        self.group = Some(group);
        commit.to_bytes()
    }

    /// Processes another member's Commit or Proposal.
    pub fn process(&mut self, message: &[u8]) -> Result<(), MlsError> {
        let message = MlsMessage::from_bytes(message)?;
        self.group_mut().process_incoming_message(message)?;
        Ok(())
    }

    /// An application message: MLSMessage(PrivateMessage), the body of a group send.
    pub fn encrypt(&mut self, plaintext: &[u8]) -> Vec<u8> {
        self.group_mut()
            .encrypt_application_message(plaintext, Vec::new())
            .and_then(|m| m.to_bytes())
            .expect("encrypt")
    }

    /// The plaintext of another member's application message.
    pub fn decrypt(&mut self, body: &[u8]) -> Result<Vec<u8>, MlsError> {
        let message = MlsMessage::from_bytes(body)?;
        match self.group_mut().process_incoming_message(message)? {
            ReceivedMessage::ApplicationMessage(app) => Ok(app.data().to_vec()),
            _ => Err(MlsError::UnexpectedMessageType),
        }
    }

    /// The GroupInfo of the current epoch, without the ratchet tree.
    pub fn group_info(&self) -> Vec<u8> {
        self.group()
            .group_info_message(false)
            .and_then(|m| m.to_bytes())
            .expect("group info")
    }

    /// The member's view of the ratchet tree.
    pub fn export_tree(&self) -> Vec<u8> {
        self.group().export_tree().to_bytes().expect("tree bytes")
    }

    pub fn epoch(&self) -> u64 {
        self.group().current_epoch()
    }

    /// The devices of the member's view of the tree.
    pub fn devices(&self) -> BTreeSet<DeviceAddress> {
        self.group()
            .roster()
            .members_iter()
            .map(|m| device_of_signer(&m.signing_identity).expect("leaf is a device"))
            .collect()
    }

    fn group(&self) -> &Group<Config> {
        self.group.as_ref().expect("not in a group")
    }

    fn group_mut(&mut self) -> &mut Group<Config> {
        self.group.as_mut().expect("not in a group")
    }
}
