//! Translation between lambda_http requests/responses and the domain, in one place.

use std::borrow::Cow;
use std::future::Future;
use std::time::Instant;

use lambda_http::request::RequestContext;
use lambda_http::{Body, Request, RequestExt, Response};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tracing::Instrument;

use crate::error::{Error, Result};
use crate::metrics;
use crate::routes::HttpRoute;

/// Serves one request through `handle`, given the request's route (`None`: no route of the
/// table). Every function's handler goes through it, on Lambda and behind the local gateway
/// alike, so each request is counted and timed once under its route key (never its path), and
/// every log line of it carries its API Gateway request id and route.
pub async fn serve<F, Fut>(req: Request, handle: F) -> Response<Body>
where
    F: FnOnce(Option<HttpRoute>, Request) -> Fut,
    Fut: Future<Output = Response<Body>>,
{
    let started = Instant::now();
    let route = HttpRoute::from_key(&route_key(&req));
    let label = route.map_or(metrics::UNMATCHED_ROUTE, HttpRoute::key);
    // At the error level: enabled whenever any line of the request is, whatever the filter.
    let span = tracing::error_span!("request", request_id = request_id(&req), route = label);
    let resp = handle(route, req).instrument(span).await;
    metrics::http_request(label, resp.status().as_u16(), started.elapsed());
    resp
}

/// API Gateway's id of the request (empty when the event has none).
pub fn request_id(req: &Request) -> &str {
    match req.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(ctx)) => ctx.request_id.as_deref().unwrap_or_default(),
        _ => "",
    }
}

pub fn json<T: Serialize>(status: u16, value: &T) -> Response<Body> {
    let body = serde_json::to_string(value).unwrap_or_else(|_| "{}".into());
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::Text(body))
        .expect("static response parts are valid")
}

pub fn error(e: &Error) -> Response<Body> {
    e.log();
    let mut resp = json(e.status(), &e.to_json());
    if let Error::RateLimited { retry_after_secs } = e {
        resp.headers_mut()
            .insert("retry-after", (*retry_after_secs).into());
    }
    resp
}

/// Maps a service result to 200 with its JSON, or to the error response.
pub fn respond<T: Serialize>(result: Result<T>) -> Response<Body> {
    match result {
        Ok(v) => json(200, &v),
        Err(e) => error(&e),
    }
}

/// Parses a JSON body, refusing oversize bodies before parsing. Messages from the parser are
/// reduced to what is safe to echo (they can quote the offending value otherwise).
pub fn body<T: DeserializeOwned>(req: &Request, max_bytes: usize) -> Result<T> {
    let bytes: &[u8] = match req.body() {
        Body::Empty => b"",
        Body::Text(t) => t.as_bytes(),
        Body::Binary(b) => b,
        _ => b"",
    };
    if bytes.len() > max_bytes {
        return Err(Error::PayloadTooLarge);
    }
    serde_json::from_slice(bytes).map_err(|e| {
        use serde_json::error::Category;
        match e.classify() {
            Category::Data => {
                let msg = e.to_string();
                if msg.starts_with("missing field") {
                    Error::invalid(
                        msg.split(" at line")
                            .next()
                            .unwrap_or("missing field")
                            .to_string(),
                    )
                } else {
                    Error::invalid("a field has the wrong type or value")
                }
            }
            _ => Error::MalformedJson,
        }
    })
}

/// A JSON body that may be left out: no body is the type's default.
pub fn optional_body<T: DeserializeOwned + Default>(req: &Request, max_bytes: usize) -> Result<T> {
    let empty = match req.body() {
        Body::Text(t) => t.trim().is_empty(),
        Body::Binary(b) => b.is_empty(),
        _ => true,
    };
    if empty {
        Ok(T::default())
    } else {
        body(req, max_bytes)
    }
}

pub fn bearer(req: &Request) -> Option<&str> {
    let value = req.headers().get("authorization")?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

pub fn source_ip(req: &Request) -> String {
    match req.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(ctx)) => ctx.http.source_ip.clone().unwrap_or_default(),
        _ => String::new(),
    }
}

/// API Gateway's route key (`"GET /v1/keys/count"`), or method and path when there is none.
pub fn route_key(req: &Request) -> Cow<'_, str> {
    match req.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(ctx)) => match ctx.route_key.as_deref() {
            Some(key) if key != "$default" => Cow::Borrowed(key),
            _ => Cow::Owned(format!("{} {}", req.method(), req.raw_http_path())),
        },
        _ => Cow::Owned(format!("{} {}", req.method(), req.raw_http_path())),
    }
}

pub fn path_param(req: &Request, name: &str) -> Option<String> {
    req.path_parameters_ref()
        .and_then(|p| p.first(name))
        .map(str::to_string)
}

pub fn query_param(req: &Request, name: &str) -> Option<String> {
    req.query_string_parameters_ref()
        .and_then(|p| p.first(name))
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::recorded::Recorded;
    use aws_lambda_events::apigw::ApiGatewayV2httpRequest;
    use lambda_http::request::LambdaRequest;

    fn request(route_key: &str, path: &str) -> Request {
        let mut ev = ApiGatewayV2httpRequest::default();
        ev.route_key = Some(route_key.into());
        ev.raw_path = Some(path.into());
        ev.request_context.route_key = Some(route_key.into());
        ev.request_context.request_id = Some("req-1".into());
        ev.request_context.http.method = http::Method::GET;
        ev.request_context.http.path = Some(path.into());
        LambdaRequest::ApiGatewayV2(ev).into()
    }

    #[tokio::test]
    async fn a_request_is_counted_under_its_route_key_never_its_path() {
        let recorded = Recorded::default();
        let _local = ::metrics::set_default_local_recorder(&recorded);
        let req = request(
            "GET /v1/users/{user_id}/bundle",
            "/v1/users/5b0c7a2e-0000-4000-8000-000000000000/bundle",
        );
        assert_eq!(request_id(&req), "req-1");
        let seen = serve(req, |route, _| async move {
            json(
                200,
                &serde_json::json!({"route": route.map(HttpRoute::key)}),
            )
        })
        .await;
        assert_eq!(seen.status(), 200);
        // No route key (`$default`): the path decides, and an unknown one is `unmatched`.
        let unknown = request("$default", "/v1/nope/5b0c7a2e");
        let refused = serve(unknown, |route, _| async move {
            assert!(route.is_none());
            error(&Error::RouteNotFound)
        })
        .await;
        assert_eq!(refused.status(), 404);
        assert_eq!(
            recorded.series(),
            [
                (
                    "relay_http_request_duration_seconds{route=GET /v1/users/{user_id}/bundle}"
                        .to_string(),
                    1
                ),
                (
                    "relay_http_request_duration_seconds{route=unmatched}".to_string(),
                    1
                ),
                (
                    "relay_http_requests_total{route=GET /v1/users/{user_id}/bundle,status_class=2xx}"
                        .to_string(),
                    1
                ),
                (
                    "relay_http_requests_total{route=unmatched,status_class=4xx}".to_string(),
                    1
                ),
            ]
            .into()
        );
    }
}
