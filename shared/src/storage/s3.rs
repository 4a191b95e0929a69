//! `BlobStore` on S3 (`aws-sdk-s3`): presigning is local computation with the function's
//! credentials, so no request reaches S3 from the relay. Locally `AWS_ENDPOINT_URL_S3` points at
//! an S3-API server, addressed path-style (`http://host/bucket/key`).

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::presigning::{PresignedRequest, PresigningConfig};
use aws_sdk_s3::Client;

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
    let local = std::env::var("AWS_ENDPOINT_URL_S3").is_ok_and(|v| !v.is_empty());
    let config = aws_sdk_s3::config::Builder::from(&shared)
        .force_path_style(local)
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
            .presigned(presigning(ttl)?)
            .await
            .map_err(|e| Error::Internal(format!("presign download: {e}")))?;
        Ok(presigned(req))
    }
}
