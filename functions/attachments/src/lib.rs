//! The attachments function: presigned upload and download URLs. The files themselves go
//! between clients and object storage; this function never sees a byte of them.

use std::convert::Infallible;

use lambda_http::{Body, Request, Response};
use shared::routes::HttpRoute;
use shared::{http, App, Error};

/// Dispatches on the route table (`shared::routes`); a route of another function is not found.
pub async fn handler(app: &App, req: Request) -> Result<Response<Body>, Infallible> {
    Ok(http::serve(req, |route, req| dispatch(app, route, req)).await)
}

async fn dispatch(app: &App, route: Option<HttpRoute>, req: Request) -> Response<Body> {
    match route {
        Some(HttpRoute::CreateAttachment) => create(app, &req).await,
        Some(HttpRoute::GetAttachment) => get(app, &req).await,
        _ => http::error(&Error::RouteNotFound),
    }
}

/// POST /v1/attachments
async fn create(app: &App, req: &Request) -> Response<Body> {
    let run = async {
        let who = app.auth.authenticate(http::bearer(req)).await?;
        let attachments = app.attachments()?;
        let body = http::body(req, app.config.max_request_bytes)?;
        attachments.create(&who, &http::source_ip(req), body).await
    };
    http::respond(run.await)
}

/// GET /v1/attachments/{attachment_id}
async fn get(app: &App, req: &Request) -> Response<Body> {
    let run = async {
        let who = app.auth.authenticate(http::bearer(req)).await?;
        let id = http::path_param(req, "attachment_id").unwrap_or_default();
        app.attachments()?.download(&who, &id).await
    };
    http::respond(run.await)
}
