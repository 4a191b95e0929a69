//! MLS groups as the relay sees them: it never holds a group secret, it tracks each group as an
//! external observer (mls-rs `ExternalClient`) so that it can order Commits (one per epoch),
//! refuse forged or stale ones and know which devices are in the tree.
//!
//! Everything here is pure and synchronous; the signature checks and tree hashing are CPU work
//! that callers run inside `tokio::task::spawn_blocking`.
//!
//! Clients must send handshake messages as PublicMessage (`encrypt_control_messages = false`) or
//! the observer cannot follow the group, and must not put the ratchet tree into Commits'
//! GroupInfo/Welcome: joiners take it from the relay ([`export_tree`]).

mod commits;
mod errors;
mod header;
mod identity;
mod key_packages;
mod observer;
mod tracking;
mod welcome;

#[cfg(any(test, feature = "mls-testing"))]
pub mod testing;

#[cfg(test)]
mod tests;

pub use commits::{apply_commit, commit_epoch, Applied};
pub use header::{application_header, AppHeader};
pub use identity::{device_of, identity};
pub use key_packages::{check_key_package, CheckedKeyPackage};
pub use tracking::{check_group_info, export_tree, observe, Tracked};
pub use welcome::welcome_refs;

/// The one cipher suite the relay accepts: X25519, AES-128-GCM, SHA-256, Ed25519 (pure-Rust
/// implementations exist for all of it, so the Lambda builds need no OpenSSL).
pub const CIPHER_SUITE: mls_rs::CipherSuite = mls_rs::CipherSuite::CURVE25519_AES128;
