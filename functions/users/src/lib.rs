//! The users function: accounts, sessions and the health check.

use std::convert::Infallible;

use lambda_http::{Body, Request, Response};
use shared::routes::HttpRoute;
use shared::{http, validation, App, Error, Result};

/// Dispatches on the route table (`shared::routes`); a route of another function is not found.
pub async fn handler(app: &App, req: Request) -> Result<Response<Body>, Infallible> {
    Ok(http::serve(req, |route, req| dispatch(app, route, req)).await)
}

async fn dispatch(app: &App, route: Option<HttpRoute>, req: Request) -> Response<Body> {
    match route {
        Some(HttpRoute::Register) => register(app, &req).await,
        Some(HttpRoute::Login) => login(app, &req).await,
        Some(HttpRoute::Refresh) => refresh(app, &req).await,
        Some(HttpRoute::Logout) => logout(app, &req).await,
        Some(HttpRoute::LookUp) => lookup(app, &req).await,
        Some(HttpRoute::DeleteMe) => delete_me(app, &req).await,
        Some(HttpRoute::RenameMe) => rename_me(app, &req).await,
        Some(HttpRoute::ExportAccount) => export_account(app, &req).await,
        Some(HttpRoute::Health) => health(app).await,
        Some(HttpRoute::ProvisioningCode) => provisioning_code(app, &req).await,
        Some(HttpRoute::SendProvisioning) => send_provisioning(app, &req).await,
        Some(HttpRoute::LinkDevice) => link_device(app, &req).await,
        Some(HttpRoute::ListDevices) => list_devices(app, &req).await,
        Some(HttpRoute::RemoveDevice) => remove_device(app, &req).await,
        Some(HttpRoute::PutPresenceShares) => put_presence_shares(app, &req).await,
        Some(HttpRoute::GetPresenceShares) => get_presence_shares(app, &req).await,
        Some(HttpRoute::GetPresence) => get_presence(app, &req).await,
        Some(
            HttpRoute::UploadKeys
            | HttpRoute::CountKeys
            | HttpRoute::Bundle
            | HttpRoute::DeviceBundle
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
            | HttpRoute::UploadKeyPackages
            | HttpRoute::CountKeyPackages
            | HttpRoute::ClaimKeyPackages
            | HttpRoute::InitMls
            | HttpRoute::Commit
            | HttpRoute::GetCommit
            | HttpRoute::GroupInfo,
        )
        | None => http::error(&Error::RouteNotFound),
    }
}

fn no_content(result: Result<()>) -> Response<Body> {
    match result {
        Ok(()) => Response::builder()
            .status(204)
            .body(Body::Empty)
            .expect("static response"),
        Err(e) => http::error(&e),
    }
}

/// POST /v1/users
async fn register(app: &App, req: &Request) -> Response<Body> {
    let run = async {
        app.accounts
            .register(
                http::body(req, app.config.max_request_bytes)?,
                &http::source_ip(req),
            )
            .await
    };
    http::respond(run.await)
}

/// POST /v1/sessions
async fn login(app: &App, req: &Request) -> Response<Body> {
    let run = async {
        app.accounts
            .login(
                http::body(req, app.config.max_request_bytes)?,
                &http::source_ip(req),
            )
            .await
    };
    http::respond(run.await)
}

/// POST /v1/sessions/refresh
async fn refresh(app: &App, req: &Request) -> Response<Body> {
    let run = async {
        app.accounts
            .refresh(
                http::body(req, app.config.max_request_bytes)?,
                &http::source_ip(req),
            )
            .await
    };
    http::respond(run.await)
}

/// DELETE /v1/sessions/current
async fn logout(app: &App, req: &Request) -> Response<Body> {
    let run = async {
        app.accounts
            .logout(&app.auth.authenticate(http::bearer(req)).await?)
            .await
    };
    no_content(run.await)
}

/// GET /v1/users?username=NAME
async fn lookup(app: &App, req: &Request) -> Response<Body> {
    let run = async {
        let who = app.auth.authenticate(http::bearer(req)).await?;
        let name = http::query_param(req, "username")
            .ok_or_else(|| Error::invalid("username query parameter is required"))?;
        app.accounts.lookup(&who, &name).await
    };
    http::respond(run.await)
}

/// DELETE /v1/users/me
async fn delete_me(app: &App, req: &Request) -> Response<Body> {
    let run = async {
        app.accounts
            .delete(&app.auth.authenticate(http::bearer(req)).await?)
            .await
    };
    no_content(run.await)
}

/// PATCH /v1/users/me
async fn rename_me(app: &App, req: &Request) -> Response<Body> {
    let run = async {
        let who = app.auth.authenticate(http::bearer(req)).await?;
        app.account_data
            .rename(&who, http::body(req, app.config.max_request_bytes)?)
            .await
    };
    http::respond(run.await)
}

/// GET /v1/account/export
async fn export_account(app: &App, req: &Request) -> Response<Body> {
    let run = async {
        app.account_data
            .export(&app.auth.authenticate(http::bearer(req)).await?)
            .await
    };
    http::respond(run.await)
}

/// GET /healthz
async fn health(app: &App) -> Response<Body> {
    http::respond(app.health().await.map(|()| shared::model::HealthOut {
        status: "ok".into(),
    }))
}

/// POST /v1/devices/provisioning
async fn provisioning_code(app: &App, req: &Request) -> Response<Body> {
    let run = async {
        app.devices
            .provisioning_code(&app.auth.authenticate(http::bearer(req)).await?)
            .await
    };
    http::respond(run.await)
}

/// PUT /v1/provisioning/{address}
async fn send_provisioning(app: &App, req: &Request) -> Response<Body> {
    let run = async {
        let who = app.auth.authenticate(http::bearer(req)).await?;
        let message: shared::model::ProvisioningMessageIn =
            http::body(req, app.config.max_request_bytes)?;
        let address = http::path_param(req, "address").unwrap_or_default();
        app.devices
            .send_provisioning(&who, &address, &message.body)
            .await
    };
    no_content(run.await)
}

/// POST /v1/devices
async fn link_device(app: &App, req: &Request) -> Response<Body> {
    let run = async {
        app.devices
            .link(
                http::body(req, app.config.max_request_bytes)?,
                &http::source_ip(req),
            )
            .await
    };
    http::respond(run.await)
}

/// GET /v1/devices
async fn list_devices(app: &App, req: &Request) -> Response<Body> {
    let run = async {
        app.devices
            .list(&app.auth.authenticate(http::bearer(req)).await?)
            .await
    };
    http::respond(run.await)
}

/// DELETE /v1/devices/{device_id}
async fn remove_device(app: &App, req: &Request) -> Response<Body> {
    let run = async {
        let who = app.auth.authenticate(http::bearer(req)).await?;
        let device =
            validation::device_id(&http::path_param(req, "device_id").unwrap_or_default())?;
        app.devices.remove(&who, device).await
    };
    no_content(run.await)
}

/// PUT /v1/presence/shares
async fn put_presence_shares(app: &App, req: &Request) -> Response<Body> {
    let run = async {
        let who = app.auth.authenticate(http::bearer(req)).await?;
        app.presence
            .set_shares(&who, http::body(req, app.config.max_request_bytes)?)
            .await
    };
    http::respond(run.await)
}

/// GET /v1/presence/shares
async fn get_presence_shares(app: &App, req: &Request) -> Response<Body> {
    let run = async {
        app.presence
            .shares(&app.auth.authenticate(http::bearer(req)).await?)
            .await
    };
    http::respond(run.await)
}

/// GET /v1/presence?user_ids=a,b,…
async fn get_presence(app: &App, req: &Request) -> Response<Body> {
    let run = async {
        let who = app.auth.authenticate(http::bearer(req)).await?;
        let ids = http::query_param(req, "user_ids")
            .ok_or_else(|| Error::invalid("user_ids query parameter is required"))?;
        app.presence.read(&who, &ids).await
    };
    http::respond(run.await)
}
