//! API Gateway events as AWS builds them: HTTP API payload v2 and WebSocket proxy events.

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayWebsocketProxyRequest};
use base64::Engine;
use http::{HeaderMap, Method};
use shared::clock::unix_ms;

use crate::routes::Route;

pub struct HttpParts<'a> {
    pub method: Method,
    pub path: &'a str,
    pub query: &'a str,
    pub headers: HeaderMap,
    pub source_ip: String,
    pub body: Vec<u8>,
}

pub fn http_event(route: &Route, parts: HttpParts<'_>) -> ApiGatewayV2httpRequest {
    let mut ev = ApiGatewayV2httpRequest::default();
    ev.version = Some("2.0".into());
    ev.route_key = Some(route.key.to_string());
    ev.raw_path = Some(parts.path.to_string());
    ev.raw_query_string = Some(parts.query.to_string());
    ev.query_string_parameters = parts.query.parse().unwrap_or_default();
    ev.path_parameters = route.params.clone();
    let ctx = &mut ev.request_context;
    ctx.route_key = Some(route.key.to_string());
    ctx.stage = Some("$default".into());
    ctx.request_id = Some(uuid::Uuid::new_v4().to_string());
    ctx.domain_name = parts
        .headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .map(str::to_string);
    ctx.time_epoch = unix_ms() as i64;
    ctx.http.method = parts.method;
    ctx.http.path = Some(parts.path.to_string());
    ctx.http.protocol = Some("HTTP/1.1".into());
    ctx.http.source_ip = Some(parts.source_ip);
    ctx.http.user_agent = parts
        .headers
        .get("user-agent")
        .and_then(|h| h.to_str().ok())
        .map(str::to_string);
    ev.headers = parts.headers;
    if !parts.body.is_empty() {
        match String::from_utf8(parts.body) {
            Ok(text) => ev.body = Some(text),
            Err(e) => {
                ev.body = Some(base64::engine::general_purpose::STANDARD.encode(e.into_bytes()));
                ev.is_base64_encoded = true;
            }
        }
    }
    ev
}

/// `$connect`, `$disconnect` or `$default` for one connection.
pub fn websocket_event(
    route_key: &str,
    connection_id: &str,
    source_ip: &str,
    query: Option<&str>,
    body: Option<String>,
) -> ApiGatewayWebsocketProxyRequest {
    let mut ev = ApiGatewayWebsocketProxyRequest::default();
    if let Some(q) = query {
        ev.query_string_parameters = q.parse().unwrap_or_default();
    }
    ev.body = body;
    let ctx = &mut ev.request_context;
    ctx.route_key = Some(route_key.to_string());
    ctx.event_type = Some(
        match route_key {
            "$connect" => "CONNECT",
            "$disconnect" => "DISCONNECT",
            _ => "MESSAGE",
        }
        .into(),
    );
    ctx.connection_id = Some(connection_id.to_string());
    ctx.stage = Some("local".into());
    ctx.request_id = Some(uuid::Uuid::new_v4().to_string());
    ctx.request_time_epoch = unix_ms() as i64;
    ctx.message_direction = Some("IN".into());
    ctx.identity.source_ip = Some(source_ip.to_string());
    ev
}
