//! The keys function: prekey upload, count and bundle fetch, and the MLS KeyPackage directory.

use std::convert::Infallible;

use lambda_http::{Body, Request, Response};
use shared::routes::HttpRoute;
use shared::{http, validation, App, Error};

/// Dispatches on the route table (`shared::routes`); a route of another function is not found.
pub async fn handler(app: &App, req: Request) -> Result<Response<Body>, Infallible> {
    Ok(http::serve(req, |route, req| dispatch(app, route, req)).await)
}

async fn dispatch(app: &App, route: Option<HttpRoute>, req: Request) -> Response<Body> {
    match route {
        Some(HttpRoute::UploadKeys) => upload(app, &req).await,
        Some(HttpRoute::CountKeys) => count(app, &req).await,
        Some(HttpRoute::Bundle) => bundle(app, &req).await,
        Some(HttpRoute::DeviceBundle) => device_bundle(app, &req).await,
        Some(HttpRoute::UploadKeyPackages) => upload_key_packages(app, &req).await,
        Some(HttpRoute::CountKeyPackages) => count_key_packages(app, &req).await,
        Some(HttpRoute::ClaimKeyPackages) => claim_key_packages(app, &req).await,
        Some(
            HttpRoute::Register
            | HttpRoute::Login
            | HttpRoute::Refresh
            | HttpRoute::Logout
            | HttpRoute::LookUp
            | HttpRoute::DeleteMe
            | HttpRoute::RenameMe
            | HttpRoute::ExportAccount
            | HttpRoute::Health
            | HttpRoute::ProvisioningCode
            | HttpRoute::SendProvisioning
            | HttpRoute::LinkDevice
            | HttpRoute::ListDevices
            | HttpRoute::RemoveDevice
            | HttpRoute::PutPresenceShares
            | HttpRoute::GetPresenceShares
            | HttpRoute::GetPresence
            | HttpRoute::CreateAttachment
            | HttpRoute::GetAttachment
            | HttpRoute::CreateGroup
            | HttpRoute::ListGroups
            | HttpRoute::GetGroup
            | HttpRoute::InviteMembers
            | HttpRoute::JoinGroup
            | HttpRoute::RemoveMember
            | HttpRoute::SetRole
            | HttpRoute::SetMeta
            | HttpRoute::InitMls
            | HttpRoute::Commit
            | HttpRoute::GetCommit
            | HttpRoute::GroupInfo,
        )
        | None => http::error(&Error::RouteNotFound),
    }
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

/// GET /v1/users/{user_id}/devices/{device_id}/bundle
async fn device_bundle(app: &App, req: &Request) -> Response<Body> {
    let run = async {
        let who = app.auth.authenticate(http::bearer(req)).await?;
        let target = validation::user_id(&http::path_param(req, "user_id").unwrap_or_default())?;
        let device = match http::path_param(req, "device_id").as_deref() {
            Some("*") => None,
            other => Some(validation::device_id(other.unwrap_or_default())?),
        };
        app.keys.device_bundles(&who, target, device).await
    };
    http::respond(run.await)
}

/// PUT /v1/mls/key_packages
async fn upload_key_packages(app: &App, req: &Request) -> Response<Body> {
    let run = async {
        let who = app.auth.authenticate(http::bearer(req)).await?;
        app.keys
            .upload_key_packages(&who, http::body(req, app.config.max_request_bytes)?)
            .await
    };
    http::respond(run.await)
}

/// GET /v1/mls/key_packages/count
async fn count_key_packages(app: &App, req: &Request) -> Response<Body> {
    let run = async {
        app.keys
            .count_key_packages(&app.auth.authenticate(http::bearer(req)).await?)
            .await
    };
    http::respond(run.await)
}

/// GET /v1/users/{user_id}/mls/key_packages
async fn claim_key_packages(app: &App, req: &Request) -> Response<Body> {
    let run = async {
        let who = app.auth.authenticate(http::bearer(req)).await?;
        let target = validation::user_id(&http::path_param(req, "user_id").unwrap_or_default())?;
        app.keys.claim_key_packages(&who, target).await
    };
    http::respond(run.await)
}
