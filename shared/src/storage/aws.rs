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
/// included), `ok` when the service served it ([`served`]). A presigned request, which never
/// leaves the process, is not a call.
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
            let ok = match outcome {
                Ok(_) => true,
                Err(e) if e.is_operation_error() => context
                    .response()
                    .is_some_and(|r| served(r.status().as_u16(), r.body().bytes())),
                Err(_) => false,
            };
            crate::metrics::dependency_call(
                self.dependency,
                operation.name().to_string(),
                ok,
                started.0.elapsed(),
            );
        }
        Ok(())
    }
}

/// Whether the service served a call it answered with an error (`status`, `body` when read):
/// a refusal that is the service working as meant (a failed condition, a connection gone) is;
/// a server error or a throttle (HTTP 429, or DynamoDB's 400 throttling errors) is not.
fn served(status: u16, body: Option<&[u8]>) -> bool {
    const THROTTLES: [&[u8]; 3] = [
        b"Throttling",
        b"ProvisionedThroughputExceeded",
        b"RequestLimitExceeded",
    ];
    let throttled = body.is_some_and(|b| {
        THROTTLES
            .iter()
            .any(|t| b.windows(t.len()).any(|w| w == *t))
    });
    status < 500 && status != 429 && !throttled
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::recorded::Recorded;
    use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};

    #[test]
    fn refusals_are_served_and_server_errors_and_throttles_are_not() {
        let condition =
            br#"{"__type":"com.amazonaws.dynamodb.v20120810#ConditionalCheckFailedException"}"#;
        assert!(served(400, Some(condition)));
        assert!(served(410, Some(br#"{"message":"GoneException"}"#)));
        assert!(served(404, None));
        let throttled = br#"{"__type":"com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException"}"#;
        assert!(!served(400, Some(throttled)));
        assert!(!served(400, Some(br#"{"__type":"ThrottlingException"}"#)));
        assert!(!served(429, None));
        assert!(!served(500, None));
        assert!(!served(503, Some(b"SlowDown")));
    }

    #[tokio::test]
    async fn a_call_is_recorded_once_by_operation_and_a_presigned_request_is_not() {
        let recorded = Recorded::default();
        let _local = metrics::set_default_local_recorder(&recorded);
        // Nothing listens on port 1: the call fails at once (no retry).
        let config = aws_sdk_dynamodb::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("a", "b", None, None, "test"))
            .endpoint_url("http://127.0.0.1:1")
            .retry_config(aws_sdk_dynamodb::config::retry::RetryConfig::disabled())
            .interceptor(Calls::of("dynamodb"))
            .build();
        let dynamodb = aws_sdk_dynamodb::Client::from_conf(config);
        assert!(dynamodb.list_tables().send().await.is_err());
        assert_eq!(
            recorded.get(
                "relay_dependency_calls_total{dependency=dynamodb,operation=ListTables,outcome=unavailable}"
            ),
            1
        );
        assert_eq!(
            recorded.get("relay_dependency_duration_seconds{dependency=dynamodb}"),
            1
        );

        let config = aws_sdk_s3::Config::builder()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_s3::config::Credentials::new(
                "a", "b", None, None, "test",
            ))
            .interceptor(Calls::of("s3"))
            .build();
        let presigning =
            aws_sdk_s3::presigning::PresigningConfig::expires_in(Duration::from_secs(60)).unwrap();
        aws_sdk_s3::Client::from_conf(config)
            .get_object()
            .bucket("b")
            .key("k")
            .presigned(presigning)
            .await
            .unwrap();
        assert!(
            !recorded
                .series()
                .keys()
                .any(|s| s.contains("dependency=s3")),
            "{:?}",
            recorded.series()
        );
    }
}
