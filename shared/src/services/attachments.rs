//! Attachments: the client encrypts a file, uploads the ciphertext to object storage through a
//! presigned URL, and sends the pointer (id, key, digest) inside a Signal message. The relay only
//! signs URLs: it never sees a key or a byte of the file, and an attachment id is not linked to
//! any user (so account deletion need not, and cannot, find a user's uploads).

use std::sync::Arc;

use rand::RngCore;

use super::{AccountAge, Limit, Limiter};
use crate::config::AttachmentsConfig;
use crate::crypto::tokens::Principal;
use crate::error::{Error, Result};
use crate::model::{AttachmentDownloadOut, AttachmentRequest, AttachmentUploadOut};
use crate::storage::BlobStore;
use crate::validation;

#[derive(Clone)]
pub struct Attachments {
    pub(crate) blobs: Arc<dyn BlobStore>,
    pub(crate) age: AccountAge,
    pub(crate) limiter: Limiter,
    pub(crate) config: AttachmentsConfig,
}

/// The object key of an attachment id.
fn object_key(id: &str) -> String {
    format!("attachments/{id}")
}

/// An attachment id as the relay makes them: 22 characters of base64url (128 bits).
fn well_formed(id: &str) -> bool {
    id.len() == 22
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl Attachments {
    /// `POST /v1/attachments` from `source_ip`: a fresh id and a presigned `PUT` of exactly
    /// `size` bytes.
    pub async fn create(
        &self,
        who: &Principal,
        source_ip: &str,
        req: AttachmentRequest,
    ) -> Result<AttachmentUploadOut> {
        let max = self.config.max_bytes;
        if req.size == 0 || req.size > max {
            return Err(Error::invalid(format!(
                "size must be 1 to {max} bytes (ATTACHMENT_MAX_BYTES)"
            )));
        }
        self.charge_upload(who, source_ip).await?;
        let mut raw = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut raw);
        let id = validation::encode_url(&raw);
        let ttl = self.config.url_ttl;
        let signed = self
            .blobs
            .presign_upload(&object_key(&id), req.size, ttl)
            .await?;
        // Neither the uploader nor the id is logged beside the other: ids are not linked to users.
        tracing::info!(size = req.size, "attachment upload signed");
        Ok(AttachmentUploadOut {
            id,
            upload_url: signed.url,
            upload_method: signed.method,
            upload_headers: signed.headers.into_iter().collect(),
            expires_in: ttl.as_secs(),
        })
    }

    /// Storage is paid for by the byte and accounts cost only a registration: besides its own
    /// bucket (a smaller one while the account is new), an upload spends its address's, so
    /// neither fresh accounts nor many accounts from one host multiply what can be stored.
    /// The address is charged only once the account's bucket allowed the upload, so an account
    /// refused by its own bucket cannot spend what others behind the same address (a carrier's
    /// NAT) need; and the account gets its token back when the address refuses.
    async fn charge_upload(&self, who: &Principal, source_ip: &str) -> Result<()> {
        let user = who.user_id;
        let own = if self.age.is_new(user).await? {
            Limit::AttachmentsNew { user }
        } else {
            Limit::Attachments { user }
        };
        self.limiter.take(own).await?;
        let by_address = self
            .limiter
            .take(Limit::AttachmentsIp { ip: source_ip })
            .await;
        if by_address.is_err() {
            self.limiter.give_back(own, 1).await;
        }
        by_address
    }

    /// `GET /v1/attachments/{attachment_id}`: a presigned `GET` (object storage answers 404 for
    /// an id never uploaded or expired).
    pub async fn download(&self, who: &Principal, id: &str) -> Result<AttachmentDownloadOut> {
        // Each URL makes storage serve (and bill) the file again: counted before anything else.
        self.limiter
            .take(Limit::AttachmentDownloads { user: who.user_id })
            .await?;
        if !well_formed(id) {
            return Err(Error::AttachmentNotFound);
        }
        let ttl = self.config.url_ttl;
        let signed = self.blobs.presign_download(&object_key(id), ttl).await?;
        Ok(AttachmentDownloadOut {
            download_url: signed.url,
            expires_in: ttl.as_secs(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_22_characters_of_base64url() {
        assert!(well_formed(&validation::encode_url(&[7u8; 16])));
        for bad in [
            "",
            "short",
            "../../../../etc/passwd",
            &"a".repeat(23),
            "aaaaaaaaaaaaaaaaaaaa/a",
        ] {
            assert!(!well_formed(bad), "{bad}");
        }
    }
}
