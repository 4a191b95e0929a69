//! Every route of the API in one table: the HTTP API's route keys with the function that serves
//! each, and the WebSocket API's routes. The functions dispatch on it, the local gateway matches
//! requests with it, and `infra/check_contract.py` compares the AWS template with it (through
//! `relay-routes`, which prints it), so a route cannot exist in one place and not another.

/// A deployed function (its binary and Lambda name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Function {
    Users,
    Keys,
    Connection,
    Attachments,
    Groups,
}

impl Function {
    pub const ALL: [Function; 5] = [
        Self::Users,
        Self::Keys,
        Self::Connection,
        Self::Attachments,
        Self::Groups,
    ];

    /// The name the function is built and deployed (and run under cargo lambda watch) as.
    pub fn name(self) -> &'static str {
        match self {
            Self::Users => "users",
            Self::Keys => "keys",
            Self::Connection => "connection",
            Self::Attachments => "attachments",
            Self::Groups => "groups",
        }
    }
}

/// One HTTP API route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HttpRoute {
    Register,
    Login,
    Refresh,
    Logout,
    LookUp,
    DeleteMe,
    RenameMe,
    ExportAccount,
    Health,
    UploadKeys,
    CountKeys,
    Bundle,
    ProvisioningCode,
    SendProvisioning,
    LinkDevice,
    ListDevices,
    RemoveDevice,
    PutPresenceShares,
    GetPresenceShares,
    GetPresence,
    DeviceBundle,
    CreateAttachment,
    GetAttachment,
    CreateGroup,
    ListGroups,
    GetGroup,
    InviteMembers,
    JoinGroup,
    RemoveMember,
    SetRole,
    SetMeta,
    UploadKeyPackages,
    CountKeyPackages,
    ClaimKeyPackages,
    InitMls,
    Commit,
    GetCommit,
    GroupInfo,
}

impl HttpRoute {
    pub const ALL: [HttpRoute; 38] = [
        Self::Register,
        Self::Login,
        Self::Refresh,
        Self::Logout,
        Self::LookUp,
        Self::DeleteMe,
        Self::RenameMe,
        Self::ExportAccount,
        Self::Health,
        Self::UploadKeys,
        Self::CountKeys,
        Self::Bundle,
        Self::ProvisioningCode,
        Self::SendProvisioning,
        Self::LinkDevice,
        Self::ListDevices,
        Self::RemoveDevice,
        Self::PutPresenceShares,
        Self::GetPresenceShares,
        Self::GetPresence,
        Self::DeviceBundle,
        Self::CreateAttachment,
        Self::GetAttachment,
        Self::CreateGroup,
        Self::ListGroups,
        Self::GetGroup,
        Self::InviteMembers,
        Self::JoinGroup,
        Self::RemoveMember,
        Self::SetRole,
        Self::SetMeta,
        Self::UploadKeyPackages,
        Self::CountKeyPackages,
        Self::ClaimKeyPackages,
        Self::InitMls,
        Self::Commit,
        Self::GetCommit,
        Self::GroupInfo,
    ];

    /// The API Gateway route key (`METHOD /path/{param}`).
    pub fn key(self) -> &'static str {
        match self {
            Self::Register => "POST /v1/users",
            Self::Login => "POST /v1/sessions",
            Self::Refresh => "POST /v1/sessions/refresh",
            Self::Logout => "DELETE /v1/sessions/current",
            Self::LookUp => "GET /v1/users",
            Self::DeleteMe => "DELETE /v1/users/me",
            Self::RenameMe => "PATCH /v1/users/me",
            Self::ExportAccount => "GET /v1/account/export",
            Self::Health => "GET /healthz",
            Self::UploadKeys => "PUT /v1/keys",
            Self::CountKeys => "GET /v1/keys/count",
            Self::Bundle => "GET /v1/users/{user_id}/bundle",
            Self::ProvisioningCode => "POST /v1/devices/provisioning",
            Self::SendProvisioning => "PUT /v1/provisioning/{address}",
            Self::LinkDevice => "POST /v1/devices",
            Self::ListDevices => "GET /v1/devices",
            Self::RemoveDevice => "DELETE /v1/devices/{device_id}",
            Self::PutPresenceShares => "PUT /v1/presence/shares",
            Self::GetPresenceShares => "GET /v1/presence/shares",
            Self::GetPresence => "GET /v1/presence",
            Self::DeviceBundle => "GET /v1/users/{user_id}/devices/{device_id}/bundle",
            Self::CreateAttachment => "POST /v1/attachments",
            Self::GetAttachment => "GET /v1/attachments/{attachment_id}",
            Self::CreateGroup => "POST /v1/groups",
            Self::ListGroups => "GET /v1/groups",
            Self::GetGroup => "GET /v1/groups/{group_id}",
            Self::InviteMembers => "POST /v1/groups/{group_id}/members",
            Self::JoinGroup => "POST /v1/groups/{group_id}/join",
            Self::RemoveMember => "DELETE /v1/groups/{group_id}/members/{user_id}",
            Self::SetRole => "PATCH /v1/groups/{group_id}/members/{user_id}",
            Self::SetMeta => "PUT /v1/groups/{group_id}/meta",
            Self::UploadKeyPackages => "PUT /v1/mls/key_packages",
            Self::CountKeyPackages => "GET /v1/mls/key_packages/count",
            Self::ClaimKeyPackages => "GET /v1/users/{user_id}/mls/key_packages",
            Self::InitMls => "POST /v1/groups/{group_id}/mls/init",
            Self::Commit => "POST /v1/groups/{group_id}/mls/commits",
            Self::GetCommit => "GET /v1/groups/{group_id}/mls/commits/{epoch}",
            Self::GroupInfo => "GET /v1/groups/{group_id}/mls/group_info",
        }
    }

    pub fn function(self) -> Function {
        match self {
            Self::Register
            | Self::Login
            | Self::Refresh
            | Self::Logout
            | Self::LookUp
            | Self::DeleteMe
            | Self::RenameMe
            | Self::ExportAccount
            | Self::Health
            | Self::ProvisioningCode
            | Self::SendProvisioning
            | Self::LinkDevice
            | Self::ListDevices
            | Self::RemoveDevice
            | Self::PutPresenceShares
            | Self::GetPresenceShares
            | Self::GetPresence => Function::Users,
            Self::UploadKeys
            | Self::CountKeys
            | Self::Bundle
            | Self::DeviceBundle
            | Self::UploadKeyPackages
            | Self::CountKeyPackages
            | Self::ClaimKeyPackages => Function::Keys,
            Self::CreateAttachment | Self::GetAttachment => Function::Attachments,
            Self::CreateGroup
            | Self::ListGroups
            | Self::GetGroup
            | Self::InviteMembers
            | Self::JoinGroup
            | Self::RemoveMember
            | Self::SetRole
            | Self::SetMeta
            | Self::InitMls
            | Self::Commit
            | Self::GetCommit
            | Self::GroupInfo => Function::Groups,
        }
    }

    pub fn from_key(key: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.key() == key)
    }
}

/// The WebSocket API's routes (selected on `$request.body.action`), all served by
/// `Function::Connection`.
pub const WEBSOCKET_ROUTES: [&str; 3] = ["$connect", "$disconnect", "$default"];

/// The table as JSON, for tools outside Rust (`relay-routes`).
pub fn table_json() -> serde_json::Value {
    serde_json::json!({
        "http": HttpRoute::ALL
            .iter()
            .map(|r| serde_json::json!({"route_key": r.key(), "function": r.function().name()}))
            .collect::<Vec<_>>(),
        "websocket": {
            "function": Function::Connection.name(),
            "routes": WEBSOCKET_ROUTES,
        },
        "functions": Function::ALL.iter().map(|f| f.name()).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn route_keys_are_unique_and_read_back() {
        let keys: HashSet<&str> = HttpRoute::ALL.iter().map(|r| r.key()).collect();
        assert_eq!(keys.len(), HttpRoute::ALL.len());
        for r in HttpRoute::ALL {
            assert_eq!(HttpRoute::from_key(r.key()), Some(r));
            let (method, path) = r.key().split_once(' ').expect("METHOD /path");
            assert!(
                ["GET", "POST", "PUT", "PATCH", "DELETE"].contains(&method),
                "{method}"
            );
            assert!(path.starts_with('/'), "{path}");
        }
        assert_eq!(HttpRoute::from_key("GET /nope"), None);
    }

    #[test]
    fn only_the_http_functions_serve_http_routes() {
        assert!(HttpRoute::ALL
            .iter()
            .all(|r| r.function() != Function::Connection));
    }
}
