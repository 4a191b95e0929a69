//! `BlobStore` on S3 (`aws-sdk-s3`): presigning is local computation with the function's
//! credentials, so no request reaches S3 from the relay. Locally `AWS_ENDPOINT_URL_S3` points at
//! an S3-API server, addressed path-style (`http://host/bucket/key`).

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::presigning::{PresignedRequest, PresigningConfig};
use aws_sdk_s3::types::{Delete, ObjectIdentifier};
use aws_sdk_s3::Client;

use crate::config::{settings, Env};
use crate::error::{Error, Result};
use crate::storage::{BlobStore, Presigned};

#[derive(Clone)]
pub struct S3 {
    client: Client,
    bucket: String,
}

/// Builds the client from the standard AWS settings (`storage::aws`); with an endpoint set
/// (`AWS_ENDPOINT_URL_S3`, a local server) buckets are addressed in the path.
pub async fn client_from_env() -> Client {
    let shared = crate::storage::aws::sdk_config(None).await;
    let env = |k: &str| std::env::var(k).ok();
    let local = Env::new(&env).set(&settings::AWS_ENDPOINT_URL_S3).is_some();
    let config = aws_sdk_s3::config::Builder::from(&shared)
        .force_path_style(local)
        .interceptor(crate::storage::aws::Calls::of("s3"))
        .build();
    Client::from_conf(config)
}

/// The attachments' store as `config` says (`ATTACHMENTS_BUCKET`), for `App::from_parts`.
pub async fn blobs(config: &crate::config::Config) -> Option<std::sync::Arc<dyn BlobStore>> {
    let bucket = &config.attachments.as_ref()?.bucket;
    Some(std::sync::Arc::new(S3::new(
        client_from_env().await,
        bucket,
    )))
}

impl S3 {
    pub fn new(client: Client, bucket: &str) -> Self {
        Self {
            client,
            bucket: bucket.to_string(),
        }
    }
}

/// What every download is served as, whatever its uploader sent: the bytes are ciphertext, and a
/// browser opening a download URL must save them, never render them (an upload of `text/html`
/// would otherwise come back as a page on storage's origin).
pub const DOWNLOAD_CONTENT_TYPE: &str = "application/octet-stream";
pub const DOWNLOAD_CONTENT_DISPOSITION: &str = "attachment";

/// Most keys one DeleteObjects request takes.
const DELETE_BATCH: usize = 1000;

fn presigning(ttl: Duration) -> Result<PresigningConfig> {
    PresigningConfig::expires_in(ttl).map_err(|e| Error::Internal(format!("presigning: {e}")))
}

fn presigned(req: PresignedRequest) -> Presigned {
    Presigned {
        url: req.uri().to_string(),
        method: req.method().to_string(),
        headers: req
            .headers()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
            .collect(),
    }
}

#[async_trait]
impl BlobStore for S3 {
    async fn presign_upload(&self, key: &str, size: u64, ttl: Duration) -> Result<Presigned> {
        let length = i64::try_from(size).map_err(|_| Error::invalid("size is too large"))?;
        let req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_length(length)
            // Signed, so an upload with any other type or disposition is refused: storage
            // keeps these and serves them back.
            .content_type(DOWNLOAD_CONTENT_TYPE)
            .content_disposition(DOWNLOAD_CONTENT_DISPOSITION)
            .presigned(presigning(ttl)?)
            .await
            .map_err(|e| Error::Internal(format!("presign upload: {e}")))?;
        Ok(presigned(req))
    }

    async fn presign_download(&self, key: &str, ttl: Duration) -> Result<Presigned> {
        let req = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            // S3 serves these instead of what is stored (objects signed before the upload
            // fixed them included); the local server ignores them and serves what is stored.
            .response_content_type(DOWNLOAD_CONTENT_TYPE)
            .response_content_disposition(DOWNLOAD_CONTENT_DISPOSITION)
            .presigned(presigning(ttl)?)
            .await
            .map_err(|e| Error::Internal(format!("presign download: {e}")))?;
        Ok(presigned(req))
    }

    async fn delete(&self, keys: &[String]) -> Result<()> {
        for batch in keys.chunks(DELETE_BATCH) {
            let objects = batch
                .iter()
                .map(|k| ObjectIdentifier::builder().key(k).build())
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| Error::Internal(format!("delete objects: {e}")))?;
            let delete = Delete::builder()
                .set_objects(Some(objects))
                // Only failures come back: the answer stays small.
                .quiet(true)
                .build()
                .map_err(|e| Error::Internal(format!("delete objects: {e}")))?;
            let out = self
                .client
                .delete_objects()
                .bucket(&self.bucket)
                .delete(delete)
                .send()
                .await
                .map_err(|e| {
                    Error::unavailable(
                        "s3 delete objects",
                        aws_sdk_s3::error::DisplayErrorContext(e).to_string(),
                    )
                })?;
            // A key that does not exist is deleted as far as S3 is concerned: any error listed
            // is a real failure (access, throttling), and the caller tries again.
            if let Some(first) = out.errors().first() {
                return Err(Error::unavailable(
                    "s3 delete objects",
                    format!(
                        "{} of {} failed, first: {}",
                        out.errors().len(),
                        batch.len(),
                        first.code().unwrap_or("error")
                    ),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};

    fn local_s3() -> S3 {
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("id", "secret", None, None, "test"))
            .endpoint_url("http://127.0.0.1:9")
            .force_path_style(true)
            .build();
        S3::new(Client::from_conf(config), "bucket")
    }

    fn query_param<'a>(url: &'a str, name: &str) -> Option<&'a str> {
        let (_, query) = url.split_once('?')?;
        query
            .split('&')
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
    }

    #[tokio::test]
    async fn uploads_are_signed_and_downloads_asked_for_as_octet_stream_attachments() {
        let s3 = local_s3();
        let ttl = Duration::from_secs(60);
        let up = s3.presign_upload("attachments/x", 10, ttl).await.unwrap();
        assert_eq!(
            query_param(&up.url, "X-Amz-SignedHeaders"),
            Some("content-disposition%3Bcontent-length%3Bcontent-type%3Bhost"),
            "{}",
            up.url
        );
        for (name, value) in [
            ("content-type", DOWNLOAD_CONTENT_TYPE),
            ("content-disposition", DOWNLOAD_CONTENT_DISPOSITION),
            ("content-length", "10"),
        ] {
            assert!(
                up.headers.contains(&(name.to_string(), value.to_string())),
                "{:?}",
                up.headers
            );
        }
        let down = s3.presign_download("attachments/x", ttl).await.unwrap();
        assert_eq!(
            query_param(&down.url, "response-content-type"),
            Some("application%2Foctet-stream"),
            "{}",
            down.url
        );
        assert_eq!(
            query_param(&down.url, "response-content-disposition"),
            Some("attachment")
        );
        assert_eq!(query_param(&down.url, "X-Amz-SignedHeaders"), Some("host"));
    }
}
