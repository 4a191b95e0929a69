//! The groups function: group rosters, invitations, roles and `meta`.

use std::convert::Infallible;

use lambda_http::{Body, Request, Response};
use shared::routes::HttpRoute;
use shared::{http, App, Error};
use tracing::instrument;

/// Dispatches on the route table (`shared::routes`); a route of another function is not found.
#[instrument(skip_all, fields(route = %http::route_key(&req)))]
pub async fn handler(_app: &App, req: Request) -> Result<Response<Body>, Infallible> {
    let route = HttpRoute::from_key(&http::route_key(&req));
    Ok(match route {
        _ => http::error(&Error::RouteNotFound),
    })
}
