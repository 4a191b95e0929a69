//! The one AWS SDK configuration every client is built from: region (us-east-1 when none is
//! set, for local servers), credentials chain, and the timeouts, so no client can hang a
//! function (a Lambda invocation holds its slot until its deadline); and the interceptor each
//! client is built with, which counts and times its calls.

use std::time::{Duration, Instant};

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeSerializationInterceptorContextRef, FinalizerInterceptorContextRef,
};
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::{ConfigBag, Storable, StoreReplace};

/// Connecting to an endpoint.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// One attempt (request sent → response read).
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// A whole operation, retries included.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(10);

/// The shared configuration, sent to `endpoint` when one is given (else the standard settings,
/// e.g. `AWS_ENDPOINT_URL_DYNAMODB`, decide).
pub async fn sdk_config(endpoint: Option<&str>) -> aws_config::SdkConfig {
    let region =
        aws_config::meta::region::RegionProviderChain::default_provider().or_else("us-east-1");
    let timeouts = aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .operation_attempt_timeout(ATTEMPT_TIMEOUT)
        .operation_timeout(OPERATION_TIMEOUT)
        .build();
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(region)
        .timeout_config(timeouts);
    if let Some(url) = endpoint {
        loader = loader.endpoint_url(url);
    }
    loader.load().await
}

/// Records each operation of one client as a call to its dependency: named by the operation
/// (`GetItem`, `PostToConnection`, …), timed from the start of its execution to its end (retries
/// included), `ok` when it produced an output rather than an error. A presigned request, which
/// never leaves the process, is not a call.
#[derive(Debug)]
pub struct Calls {
    /// A [`crate::metrics::DEPENDENCIES`] name.
    dependency: &'static str,
}

impl Calls {
    /// The interceptor of a client of `dependency` (`dynamodb`, `s3`, `management_api`).
    pub fn of(dependency: &'static str) -> Self {
        Self { dependency }
    }
}

/// When the operation's execution started.
#[derive(Debug, Clone, Copy)]
struct Started(Instant);

impl Storable for Started {
    type Storer = StoreReplace<Self>;
}

impl Intercept for Calls {
    fn name(&self) -> &'static str {
        "relay::Calls"
    }

    fn read_before_execution(
        &self,
        _context: &BeforeSerializationInterceptorContextRef<'_>,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        cfg.interceptor_state().store_put(Started(Instant::now()));
        Ok(())
    }

    fn read_after_execution(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        // No output nor error: stopped before transmitting (presigning).
        if let (Some(outcome), Some(started), Some(operation)) = (
            context.output_or_error(),
            cfg.load::<Started>(),
            cfg.load::<Metadata>(),
        ) {
            crate::metrics::dependency_call(
                self.dependency,
                operation.name(),
                outcome.is_ok(),
                started.0.elapsed(),
            );
        }
        Ok(())
    }
}
