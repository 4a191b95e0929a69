//! The keys function: prekey upload, count and bundle fetch.

use std::convert::Infallible;

use lambda_http::{Body, Request, Response};
use shared::{http, validation, App, Error};
use tracing::instrument;

/// The API Gateway route keys this function serves.
pub const ROUTES: &[&str] = &[
    "PUT /v1/keys",
    "GET /v1/keys/count",
    "GET /v1/users/{user_id}/bundle",
];

#[instrument(skip_all, fields(route = %http::route_key(&req)))]
pub async fn handler(app: &App, req: Request) -> Result<Response<Body>, Infallible> {
    Ok(match http::route_key(&req).as_str() {
        "PUT /v1/keys" => upload(app, &req).await,
        "GET /v1/keys/count" => count(app, &req).await,
        "GET /v1/users/{user_id}/bundle" => bundle(app, &req).await,
        _ => http::error(&Error::RouteNotFound),
    })
}

/// PUT /v1/keys
async fn upload(app: &App, req: &Request) -> Response<Body> {
    let run = async {
        let who = app.auth.authenticate(http::bearer(req)).await?;
        app.keys
            .upload(&who, http::body(req, app.config.max_request_bytes)?)
            .await
    };
    http::respond(run.await)
}

/// GET /v1/keys/count
async fn count(app: &App, req: &Request) -> Response<Body> {
    let run = async {
        app.keys
            .count(&app.auth.authenticate(http::bearer(req)).await?)
            .await
    };
    http::respond(run.await)
}

/// GET /v1/users/{user_id}/bundle
async fn bundle(app: &App, req: &Request) -> Response<Body> {
    let run = async {
        let who = app.auth.authenticate(http::bearer(req)).await?;
        let target = validation::user_id(&http::path_param(req, "user_id").unwrap_or_default())?;
        app.keys.bundle(&who, target).await
    };
    http::respond(run.await)
}
