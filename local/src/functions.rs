//! Where the gateway sends events: the handler functions in this process, exactly as the Lambda
//! binaries call them.

use std::sync::Arc;

use async_trait::async_trait;
use aws_lambda_events::apigw::{
    ApiGatewayProxyResponse, ApiGatewayV2httpRequest, ApiGatewayV2httpResponse,
    ApiGatewayWebsocketProxyRequest,
};
use aws_lambda_events::encodings::Body;
use lambda_http::request::LambdaRequest;
use shared::services::relay::Relay;
use shared::App;

use crate::routes::Function;

#[async_trait]
pub trait Functions: Send + Sync {
    async fn http(
        &self,
        function: Function,
        event: ApiGatewayV2httpRequest,
    ) -> ApiGatewayV2httpResponse;
    async fn websocket(&self, event: ApiGatewayWebsocketProxyRequest) -> ApiGatewayProxyResponse;
}

/// The users, keys and connection handlers, called in this process.
pub struct InProcess {
    pub app: Arc<App>,
    pub relay: Relay,
}

/// What lambda_http does with a handler's response for an HTTP API (payload v2).
fn to_v2_response(resp: http::Response<lambda_http::Body>) -> ApiGatewayV2httpResponse {
    let (parts, body) = resp.into_parts();
    let mut out = ApiGatewayV2httpResponse::default();
    out.status_code = parts.status.as_u16() as i64;
    out.headers = parts.headers;
    (out.body, out.is_base64_encoded) = match body {
        lambda_http::Body::Text(t) => (Some(Body::Text(t)), false),
        lambda_http::Body::Binary(b) => (Some(Body::Binary(b)), true),
        _ => (None, false),
    };
    out
}

#[async_trait]
impl Functions for InProcess {
    async fn http(
        &self,
        function: Function,
        event: ApiGatewayV2httpRequest,
    ) -> ApiGatewayV2httpResponse {
        let req: lambda_http::Request = LambdaRequest::ApiGatewayV2(event).into();
        let resp = match function {
            Function::Users => users::handler(&self.app, req).await,
            Function::Keys => keys::handler(&self.app, req).await,
            Function::Attachments => attachments::handler(&self.app, req).await,
            Function::Groups => groups::handler(&self.app, req).await,
            // No HTTP route is the connection function's (`shared::routes` tests it).
            Function::Connection => Ok(shared::http::error(&shared::Error::RouteNotFound)),
        };
        match resp {
            Ok(r) => to_v2_response(r),
            Err(never) => match never {},
        }
    }

    async fn websocket(&self, event: ApiGatewayWebsocketProxyRequest) -> ApiGatewayProxyResponse {
        match connection::handler(&self.relay, event).await {
            Ok(r) => r,
            Err(never) => match never {},
        }
    }
}
