//! The connection function: API Gateway WebSocket `$connect`, `$disconnect` and `$default`.

use std::convert::Infallible;

use aws_lambda_events::apigw::{ApiGatewayProxyResponse, ApiGatewayWebsocketProxyRequest};
use aws_lambda_events::encodings::Body;
use shared::services::relay::Relay;
use tracing::instrument;

fn reply(status: i64, body: Option<String>) -> ApiGatewayProxyResponse {
    let mut r = ApiGatewayProxyResponse::default();
    r.status_code = status;
    r.body = body.map(Body::Text);
    r
}

/// `$connect` (token in the query), `$disconnect`, and `$default` (client frames). The returned
/// body of `$default` is the reply frame, sent back by API Gateway's route response.
#[instrument(skip_all, fields(route = ev.request_context.route_key.as_deref().unwrap_or("")))]
pub async fn handler(
    relay: &Relay,
    ev: ApiGatewayWebsocketProxyRequest,
) -> Result<ApiGatewayProxyResponse, Infallible> {
    let connection_id = ev
        .request_context
        .connection_id
        .as_deref()
        .unwrap_or_default();
    Ok(match ev.request_context.route_key.as_deref() {
        Some("$connect") => match relay
            .connect(connection_id, ev.query_string_parameters.first("token"))
            .await
        {
            Ok(_) => reply(200, None),
            Err(e) => {
                e.log();
                reply(e.status() as i64, Some(e.to_json().to_string()))
            }
        },
        Some("$disconnect") => {
            if let Err(e) = relay.disconnect(connection_id).await {
                e.log();
            }
            reply(200, None)
        }
        _ => reply(
            200,
            Some(
                relay
                    .handle(connection_id, ev.body.as_deref().unwrap_or_default())
                    .await,
            ),
        ),
    })
}
