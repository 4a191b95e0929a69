//! Attachments in object storage.

use std::time::Duration;

use super::env::{invalid, Env};
use super::settings as s;
use super::ConfigError;

/// Attachments in object storage (`ATTACHMENTS_BUCKET`); none configured: the attachment
/// routes answer `unavailable`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachmentsConfig {
    pub bucket: String,
    /// Largest attachment, in bytes of ciphertext (`ATTACHMENT_MAX_BYTES`).
    pub max_bytes: u64,
    /// How long presigned URLs last (`ATTACHMENT_URL_TTL_SECS`).
    pub url_ttl: Duration,
}

impl AttachmentsConfig {
    /// `None` without a bucket (the other two settings are then not read).
    pub fn from_env(env: &Env) -> Result<Option<Self>, ConfigError> {
        let Some(bucket) = env.set(&s::ATTACHMENTS_BUCKET) else {
            return Ok(None);
        };
        let url_ttl_secs: u64 = env.number(&s::ATTACHMENT_URL_TTL_SECS)?;
        // SigV4 presigned URLs last at most 7 days.
        if !(1..=604_800).contains(&url_ttl_secs) {
            return Err(invalid(&s::ATTACHMENT_URL_TTL_SECS, "1 to 604800 (7 days)"));
        }
        let max_bytes: u64 = env.number(&s::ATTACHMENT_MAX_BYTES)?;
        // One PUT carries at most 5 GiB.
        if !(1..=5 * 1024 * 1024 * 1024).contains(&max_bytes) {
            return Err(invalid(
                &s::ATTACHMENT_MAX_BYTES,
                "1 to 5368709120 (5 GiB, one PUT)",
            ));
        }
        Ok(Some(Self {
            bucket,
            max_bytes,
            url_ttl: Duration::from_secs(url_ttl_secs),
        }))
    }
}
