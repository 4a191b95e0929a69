//! The relay's external client: basic credentials (the relay reads identities itself), the one
//! cipher suite, no signing key (it never proposes).

use mls_rs::external_client::{builder::MlsConfig, ExternalClient};
use mls_rs::identity::basic::BasicIdentityProvider;
use mls_rs::{CipherSuiteProvider, CryptoProvider};
use mls_rs_crypto_rustcrypto::RustCryptoProvider;

use super::CIPHER_SUITE;

/// Only [`CIPHER_SUITE`] is enabled, so a group or KeyPackage of another suite fails to load.
pub(crate) fn crypto() -> RustCryptoProvider {
    RustCryptoProvider::with_enabled_cipher_suites(vec![CIPHER_SUITE])
}

pub(crate) fn cipher_suite() -> impl CipherSuiteProvider {
    crypto()
        .cipher_suite_provider(CIPHER_SUITE)
        .expect("the rustcrypto provider implements the relay's cipher suite")
}

pub(crate) fn observer() -> ExternalClient<impl MlsConfig> {
    ExternalClient::builder()
        .identity_provider(BasicIdentityProvider)
        .crypto_provider(crypto())
        .build()
}
