//! Attachments: the client encrypts a file, uploads the ciphertext to object storage through a
//! presigned URL, and sends the pointer (id, key, digest) inside a Signal message. The relay only
//! signs URLs: it never sees a key or a byte of the file. It does keep which uploads are whose
//! (id, size, times) for as long as the objects live, so an account's export can list them and
//! its deletion can erase them.

use std::sync::Arc;

use rand::RngCore;

use super::{AccountAge, Limit, Limiter};
use crate::clock::SharedClock;
use crate::config::AttachmentsConfig;
use crate::crypto::tokens::Principal;
use crate::error::{Error, Result};
use crate::model::{AttachmentDownloadOut, AttachmentRequest, AttachmentUploadOut, UserId};
use crate::storage::{AttachmentIndex, BlobStore, UploadRecord};
use crate::validation;

/// How long an uploaded object lives: the bucket's lifecycle rule (infra/template.yaml), as long
/// as an inbox keeps an envelope.
pub const ATTACHMENT_LIFETIME_SECS: u64 = 30 * 24 * 3600;

/// When the lifecycle rule expires an object uploaded at `created_at` (Unix s): S3 adds the
/// days and rounds up to the next midnight UTC. The index entry expires then, not before, so
/// account deletion still finds every object the bucket may hold.
pub fn object_expiry(created_at: u64) -> u64 {
    (created_at + ATTACHMENT_LIFETIME_SECS).div_ceil(86_400) * 86_400
}

/// Most uploads indexed per user on one UTC day. An upload lives 30 days, so the entries live
/// at once span at most 31 days: at most 31 × 322 = 9,982 per user (`MAX_LIVE_UPLOADS`), what
/// an export lists in full. `RATE_LIMIT_ATTACHMENTS` (30/1800: 30 at once, then one a minute)
/// alone would allow 1,470 a day, 43,230 in 30 days.
pub const UPLOADS_PER_DAY: u32 = 322;

/// Most uploads of a user live at once (see `UPLOADS_PER_DAY`), and so the most an export lists.
pub const MAX_LIVE_UPLOADS: usize = 10_000;

/// Deletes the account's uploads from object storage, then their index entries: every
/// upload still indexed (at most `MAX_LIVE_UPLOADS`, and entries expired but not yet dropped
/// by the table's TTL), in DeleteObjects requests of 1,000 keys.
pub(crate) async fn erase_uploads(
    index: &dyn AttachmentIndex,
    blobs: Option<&dyn BlobStore>,
    user: UserId,
) -> Result<usize> {
    let ids = index.all_ids(user).await?;
    if ids.is_empty() {
        return Ok(0);
    }
    match blobs {
        Some(blobs) => {
            let keys: Vec<String> = ids.iter().map(|id| object_key(id)).collect();
            blobs.delete(&keys).await?;
        }
        // Without object storage the index is all there is to erase; the objects go with the
        // bucket's lifecycle.
        None => tracing::warn!(
            uploads = ids.len(),
            "uploads left to the lifecycle: no attachments bucket configured"
        ),
    }
    index.forget(user).await?;
    Ok(ids.len())
}

#[derive(Clone)]
pub struct Attachments {
    pub(crate) blobs: Arc<dyn BlobStore>,
    /// Which uploads are whose, recorded before an upload URL is handed out.
    pub(crate) index: Arc<dyn AttachmentIndex>,
    pub(crate) clock: SharedClock,
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
        // Recorded before the URL exists: every object that can be uploaded is indexed, so
        // deletion finds it.
        let created_at = self.clock.now_secs();
        let record = UploadRecord {
            id: id.clone(),
            size: req.size,
            created_at,
            expires_at: object_expiry(created_at),
        };
        self.index
            .record(who.user_id, &record, UPLOADS_PER_DAY)
            .await?;
        let signed = self
            .blobs
            .presign_upload(&object_key(&id), req.size, ttl)
            .await?;
        // Neither the uploader nor the id is logged (the index is the only link between them).
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
    fn objects_expire_at_the_midnight_after_30_days() {
        let day = 86_400;
        assert_eq!(object_expiry(100 * day), 130 * day);
        assert_eq!(object_expiry(100 * day + 1), 131 * day);
        assert_eq!(object_expiry(101 * day - 1), 131 * day);
    }

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
