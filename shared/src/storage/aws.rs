//! The one AWS SDK configuration every client is built from: region (us-east-1 when none is
//! set, for local servers), credentials chain, and the timeouts, so no client can hang a
//! function (a Lambda invocation holds its slot until its deadline).

use std::time::Duration;

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
