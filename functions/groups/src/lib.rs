//! The groups function: group rosters, invitations, roles and `meta`, and the Delivery Service
//! of MLS groups (their commits and GroupInfo).

use std::convert::Infallible;

use lambda_http::{Body, Request, Response};
use shared::crypto::tokens::Principal;
use shared::groups::GroupId;
use shared::routes::HttpRoute;
use shared::{http, validation, App, Error};

/// Dispatches on the route table (`shared::routes`); a route of another function is not found.
pub async fn handler(app: &App, req: Request) -> Result<Response<Body>, Infallible> {
    Ok(http::serve(req, |route, req| dispatch(app, route, req)).await)
}

async fn dispatch(app: &App, route: Option<HttpRoute>, req: Request) -> Response<Body> {
    match route {
        Some(HttpRoute::CreateGroup) => create(app, &req).await,
        Some(HttpRoute::ListGroups) => list(app, &req).await,
        Some(HttpRoute::GetGroup) => get(app, &req).await,
        Some(HttpRoute::InviteMembers) => invite(app, &req).await,
        Some(HttpRoute::JoinGroup) => join(app, &req).await,
        Some(HttpRoute::RemoveMember) => remove(app, &req).await,
        Some(HttpRoute::SetRole) => set_role(app, &req).await,
        Some(HttpRoute::SetMeta) => set_meta(app, &req).await,
        Some(HttpRoute::InitMls) => init_mls(app, &req).await,
        Some(HttpRoute::Commit) => commit(app, &req).await,
        Some(HttpRoute::GetCommit) => get_commit(app, &req).await,
        Some(HttpRoute::GroupInfo) => group_info(app, &req).await,
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
            | HttpRoute::UploadKeys
            | HttpRoute::CountKeys
            | HttpRoute::Bundle
            | HttpRoute::DeviceBundle
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
            | HttpRoute::UploadKeyPackages
            | HttpRoute::CountKeyPackages
            | HttpRoute::ClaimKeyPackages,
        )
        | None => http::error(&Error::RouteNotFound),
    }
}

/// The caller and the `{group_id}` of the path.
async fn caller_and_group(app: &App, req: &Request) -> shared::Result<(Principal, GroupId)> {
    let who = app.auth.authenticate(http::bearer(req)).await?;
    let group = validation::group_id(&http::path_param(req, "group_id").unwrap_or_default())?;
    Ok((who, group))
}

/// The `{user_id}` of the path.
fn member(req: &Request) -> shared::Result<shared::model::UserId> {
    validation::user_id(&http::path_param(req, "user_id").unwrap_or_default())
}

/// POST /v1/groups
async fn create(app: &App, req: &Request) -> Response<Body> {
    let run = async {
        let who = app.auth.authenticate(http::bearer(req)).await?;
        app.groups
            .create(&who, http::body(req, app.config.max_request_bytes)?)
            .await
    };
    match run.await {
        Ok(group) => http::json(201, &group),
        Err(e) => http::error(&e),
    }
}

/// GET /v1/groups
async fn list(app: &App, req: &Request) -> Response<Body> {
    let run = async {
        let who = app.auth.authenticate(http::bearer(req)).await?;
        app.groups
            .list(&who, http::query_param(req, "after").as_deref())
            .await
    };
    http::respond(run.await)
}

/// GET /v1/groups/{group_id}
async fn get(app: &App, req: &Request) -> Response<Body> {
    let run = async {
        let (who, group) = caller_and_group(app, req).await?;
        app.groups.get(&who, group).await
    };
    http::respond(run.await)
}

/// POST /v1/groups/{group_id}/members
async fn invite(app: &App, req: &Request) -> Response<Body> {
    let run = async {
        let (who, group) = caller_and_group(app, req).await?;
        app.groups
            .invite(&who, group, http::body(req, app.config.max_request_bytes)?)
            .await
    };
    http::respond(run.await)
}

/// POST /v1/groups/{group_id}/join
async fn join(app: &App, req: &Request) -> Response<Body> {
    let run = async {
        let (who, group) = caller_and_group(app, req).await?;
        app.groups
            .join(
                &who,
                group,
                http::optional_body(req, app.config.max_request_bytes)?,
            )
            .await
    };
    http::respond(run.await)
}

/// DELETE /v1/groups/{group_id}/members/{user_id}
async fn remove(app: &App, req: &Request) -> Response<Body> {
    let run = async {
        let (who, group) = caller_and_group(app, req).await?;
        let target = member(req)?;
        app.groups
            .remove(
                &who,
                group,
                target,
                http::query_param(req, "if_version").as_deref(),
            )
            .await
    };
    http::respond(run.await)
}

/// PATCH /v1/groups/{group_id}/members/{user_id}
async fn set_role(app: &App, req: &Request) -> Response<Body> {
    let run = async {
        let (who, group) = caller_and_group(app, req).await?;
        let target = member(req)?;
        app.groups
            .set_role(
                &who,
                group,
                target,
                http::body(req, app.config.max_request_bytes)?,
            )
            .await
    };
    http::respond(run.await)
}

/// PUT /v1/groups/{group_id}/meta
async fn set_meta(app: &App, req: &Request) -> Response<Body> {
    let run = async {
        let (who, group) = caller_and_group(app, req).await?;
        app.groups
            .set_meta(&who, group, http::body(req, app.config.max_request_bytes)?)
            .await
    };
    http::respond(run.await)
}

/// POST /v1/groups/{group_id}/mls/init
async fn init_mls(app: &App, req: &Request) -> Response<Body> {
    let run = async {
        let (who, group) = caller_and_group(app, req).await?;
        app.mls
            .init(&who, group, http::body(req, app.config.max_request_bytes)?)
            .await
    };
    http::respond(run.await)
}

/// POST /v1/groups/{group_id}/mls/commits
async fn commit(app: &App, req: &Request) -> Response<Body> {
    let run = async {
        let (who, group) = caller_and_group(app, req).await?;
        app.mls
            .commit(&who, group, http::body(req, app.config.max_request_bytes)?)
            .await
    };
    http::respond(run.await)
}

/// GET /v1/groups/{group_id}/mls/group_info
async fn group_info(app: &App, req: &Request) -> Response<Body> {
    let run = async {
        let (who, group) = caller_and_group(app, req).await?;
        app.mls.group_info(&who, group).await
    };
    http::respond(run.await)
}

/// GET /v1/groups/{group_id}/mls/commits/{epoch}
async fn get_commit(app: &App, req: &Request) -> Response<Body> {
    let run = async {
        let (who, group) = caller_and_group(app, req).await?;
        let epoch = http::path_param(req, "epoch")
            .and_then(|e| e.parse::<u64>().ok())
            .ok_or_else(|| Error::invalid("epoch must be a number"))?;
        app.mls.get_commit(&who, group, epoch).await
    };
    http::respond(run.await)
}
