//! `Pusher` over API Gateway's Management API (`PostToConnection`, `DeleteConnection`).

use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_apigatewaymanagement::error::{DisplayErrorContext, SdkError};
use aws_sdk_apigatewaymanagement::operation::delete_connection::DeleteConnectionError;
use aws_sdk_apigatewaymanagement::operation::post_to_connection::PostToConnectionError;
use aws_sdk_apigatewaymanagement::primitives::Blob;
use aws_sdk_apigatewaymanagement::Client;

use super::{PushError, Pusher};
use crate::config::{Config, ConfigError};

pub struct ManagementApiPusher {
    client: Client,
}

impl ManagementApiPusher {
    /// Needs `WS_MANAGEMENT_ENDPOINT` (`https://{api}.execute-api.{region}.amazonaws.com/{stage}`,
    /// or the local gateway's address).
    pub async fn from_config(config: &Config) -> Result<Arc<dyn Pusher>, ConfigError> {
        let endpoint = config
            .ws_management_endpoint
            .clone()
            .ok_or_else(|| ConfigError::Missing("WS_MANAGEMENT_ENDPOINT".into()))?;
        Ok(Arc::new(Self::new(&endpoint).await))
    }

    /// A pusher to the Management API at `endpoint`, with the timeouts of every AWS client: a
    /// push to an endpoint that does not answer fails within `aws::OPERATION_TIMEOUT`.
    pub async fn new(endpoint: &str) -> Self {
        let shared = super::aws::sdk_config(Some(endpoint)).await;
        let config = aws_sdk_apigatewaymanagement::config::Builder::from(&shared)
            .interceptor(super::aws::Calls::of("management_api"))
            .build();
        Self {
            client: Client::from_conf(config),
        }
    }
}

#[async_trait]
impl Pusher for ManagementApiPusher {
    async fn push(&self, connection_id: &str, frame: &str) -> Result<(), PushError> {
        let sent = self
            .client
            .post_to_connection()
            .connection_id(connection_id)
            .data(Blob::new(frame.as_bytes()))
            .send()
            .await;
        push_result(sent)
    }

    async fn close(&self, connection_id: &str) -> Result<(), PushError> {
        let sent = self
            .client
            .delete_connection()
            .connection_id(connection_id)
            .send()
            .await;
        push_result(sent)
    }
}

/// The service error of a Management API call that can say the connection is gone.
trait GoneError: std::error::Error + 'static {
    fn is_gone(&self) -> bool;
}

impl GoneError for PostToConnectionError {
    fn is_gone(&self) -> bool {
        self.is_gone_exception()
    }
}

impl GoneError for DeleteConnectionError {
    fn is_gone(&self) -> bool {
        self.is_gone_exception()
    }
}

/// A Management API call's outcome as a `PushError`: `Gone` for a connection that no longer
/// exists, otherwise the SDK's error with its whole context.
fn push_result<T, E, R>(sent: Result<T, SdkError<E, R>>) -> Result<(), PushError>
where
    E: GoneError,
    R: std::fmt::Debug,
{
    match sent {
        Ok(_) => Ok(()),
        Err(e) if e.as_service_error().is_some_and(GoneError::is_gone) => Err(PushError::Gone),
        Err(e) => Err(PushError::Failed(DisplayErrorContext(&e).to_string())),
    }
}
