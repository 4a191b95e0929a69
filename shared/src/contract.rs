//! The machine-readable contract, generated from the code: an OpenAPI 3.1 document of the HTTP
//! API (paths from the route table in `routes`, schemas from the wire types in `model`) and a
//! JSON Schema of the WebSocket frames (from `frames`). `relay-contract --write` commits them
//! as docs/openapi.json and docs/frames.schema.json; a test fails while they differ from the code.

use serde_json::{json, Map, Value};
use utoipa::OpenApi;

use crate::routes::HttpRoute;

#[derive(OpenApi)]
#[openapi(components(schemas(
    crate::model::RegisterRequest,
    crate::model::LoginRequest,
    crate::model::RefreshRequest,
    crate::model::KeysUploadRequest,
    crate::model::SignedPreKeyIn,
    crate::model::PreKeyIn,
    crate::model::UserOut,
    crate::model::TokensOut,
    crate::model::KeyCounts,
    crate::model::SignedPreKeyOut,
    crate::model::PreKeyOut,
    crate::model::BundleOut,
    crate::model::HealthOut,
    crate::model::LinkDeviceRequest,
    crate::model::ProvisioningMessageIn,
    crate::model::ProvisioningCodeOut,
    crate::model::DeviceOut,
    crate::model::DevicesOut,
    crate::model::DeviceBundleOut,
    crate::model::DevicesBundleOut,
    crate::model::AttachmentRequest,
    crate::model::AttachmentUploadOut,
    crate::model::AttachmentDownloadOut,
    crate::model::CreateGroupRequest,
    crate::model::InviteRequest,
    crate::model::VersionedRequest,
    crate::model::RoleRequest,
    crate::model::MetaRequest,
    crate::model::GroupOut,
    crate::model::GroupsOut,
    crate::model::KeyPackagesUpload,
    crate::model::KeyPackageCount,
    crate::model::ClaimedKeyPackageOut,
    crate::model::KeyPackagesOut,
    crate::model::MlsInitRequest,
    crate::model::CommitRequest,
    crate::model::CommitOut,
    crate::model::MlsGroupOut,
    crate::model::GroupInfoOut,
    crate::model::PresenceSharesRequest,
    crate::model::PresenceSharesOut,
    crate::model::PresenceOut,
    crate::model::UserPresence,
    crate::model::RenameRequest,
    crate::model::AccountExport,
    crate::model::ExportAccount,
    crate::model::ExportRetired,
    crate::model::ExportSession,
    crate::model::ExportKeyIds,
    crate::model::ExportKeys,
    crate::model::ExportInbox,
    crate::model::ExportAttachment,
    crate::model::ExportGroup,
    crate::model::ExportPresence,
    crate::groups::Protocol,
    crate::groups::Member,
    crate::groups::Membership,
    crate::groups::Role,
    crate::groups::MemberState,
    crate::error::ErrorBody,
    crate::error::ErrorDetail,
)))]
struct HttpSchemas;

#[derive(OpenApi)]
#[openapi(components(schemas(
    crate::frames::ClientFrame,
    crate::frames::SendFrame,
    crate::frames::Correlation,
    crate::frames::DeviceMessage,
    crate::frames::GroupDevice,
    crate::frames::AckFrame,
    crate::frames::DeviceDelivery,
    crate::frames::ServerFrame,
    crate::frames::Delivery,
    crate::frames::Envelope,
    crate::error::UserDevices,
)))]
struct FrameSchemas;

/// A parameter of a route: (name, `query` or `path`, description).
type Param = (&'static str, &'static str, &'static str);

const GROUP_ID: Param = ("group_id", "path", "The group's id (a UUID)");
const MEMBER_ID: Param = ("user_id", "path", "The user's id (a UUID)");
const IF_VERSION: Param = (
    "if_version",
    "query",
    "Change only if the group is still at this version (else `409 version_conflict`)",
);

/// What the document says of one route; the match in [`describe`] has an arm per route, so a
/// route added to the table cannot be left out of the document.
struct RouteDoc {
    summary: &'static str,
    bearer: bool,
    body: Option<&'static str>,
    params: &'static [Param],
    ok: (u16, Option<&'static str>),
    /// Error statuses besides those every route can give (see [`COMMON_ERRORS`]).
    errors: &'static [u16],
}

/// Any route: the local gateway refuses an oversized body (413), and a store may fail (503) or
/// the code may (500).
const COMMON_ERRORS: [u16; 3] = [413, 500, 503];

fn describe(route: HttpRoute) -> RouteDoc {
    use HttpRoute::*;
    match route {
        Register => RouteDoc {
            summary: "Register an account with its identity key and first prekeys",
            bearer: false,
            body: Some("RegisterRequest"),
            params: &[],
            ok: (200, Some("UserOut")),
            errors: &[400, 409, 429],
        },
        Login => RouteDoc {
            summary: "Log in: a new session with an access and a refresh token",
            bearer: false,
            body: Some("LoginRequest"),
            params: &[],
            ok: (200, Some("TokensOut")),
            errors: &[400, 401, 429],
        },
        Refresh => RouteDoc {
            summary: "Rotate the refresh token (reuse revokes the session)",
            bearer: false,
            body: Some("RefreshRequest"),
            params: &[],
            ok: (200, Some("TokensOut")),
            errors: &[400, 401, 429],
        },
        Logout => RouteDoc {
            summary: "Log out: revoke the calling session",
            bearer: true,
            body: None,
            params: &[],
            ok: (204, None),
            errors: &[401],
        },
        LookUp => RouteDoc {
            summary: "Look up a user by username",
            bearer: true,
            body: None,
            params: &[(
                "username",
                "query",
                "The username (matched case-insensitively)",
            )],
            ok: (200, Some("UserOut")),
            errors: &[400, 401, 404, 429],
        },
        DeleteMe => RouteDoc {
            summary:
                "Delete the account: every device, session, key and inbox (primary device only)",
            bearer: true,
            body: None,
            params: &[],
            ok: (204, None),
            errors: &[401, 403],
        },
        RenameMe => RouteDoc {
            summary: "Change the username (primary device only): the old name is free at once",
            bearer: true,
            body: Some("RenameRequest"),
            params: &[],
            ok: (200, Some("UserOut")),
            errors: &[400, 401, 403, 404, 409, 429],
        },
        ExportAccount => RouteDoc {
            summary: "Export everything the relay stores about the account (no secrets, no bodies)",
            bearer: true,
            body: None,
            params: &[],
            ok: (200, Some("AccountExport")),
            errors: &[401, 404, 429],
        },
        Health => RouteDoc {
            summary: "Health check: every backing store answers",
            bearer: false,
            body: None,
            params: &[],
            ok: (200, Some("HealthOut")),
            errors: &[],
        },
        UploadKeys => RouteDoc {
            summary: "Upload prekeys of the calling user",
            bearer: true,
            body: Some("KeysUploadRequest"),
            params: &[],
            ok: (200, Some("KeyCounts")),
            errors: &[400, 401, 404, 429],
        },
        CountKeys => RouteDoc {
            summary: "Count the calling user's remaining one-time prekeys",
            bearer: true,
            body: None,
            params: &[],
            ok: (200, Some("KeyCounts")),
            errors: &[401],
        },
        Bundle => RouteDoc {
            summary: "Fetch a prekey bundle (consumes one one-time prekey)",
            bearer: true,
            body: None,
            params: &[("user_id", "path", "The user whose bundle to fetch")],
            ok: (200, Some("BundleOut")),
            errors: &[401, 404, 412, 429],
        },
        ProvisioningCode => RouteDoc {
            summary: "Get a single-use code to link a new device (primary device only)",
            bearer: true,
            body: None,
            params: &[],
            ok: (200, Some("ProvisioningCodeOut")),
            errors: &[401, 403, 404, 409, 429],
        },
        SendProvisioning => RouteDoc {
            summary: "Send the opaque provisioning message to a new device's provisioning socket",
            bearer: true,
            body: Some("ProvisioningMessageIn"),
            params: &[(
                "address",
                "path",
                "The address the new device's provisioning socket was given",
            )],
            ok: (204, None),
            errors: &[400, 401, 404, 429],
        },
        LinkDevice => RouteDoc {
            summary: "Link a new device with a linking code and its own keys",
            bearer: false,
            body: Some("LinkDeviceRequest"),
            params: &[],
            ok: (200, Some("TokensOut")),
            errors: &[400, 403, 409, 429],
        },
        ListDevices => RouteDoc {
            summary: "List the devices of the caller's account",
            bearer: true,
            body: None,
            params: &[],
            ok: (200, Some("DevicesOut")),
            errors: &[401, 404],
        },
        PutPresenceShares => RouteDoc {
            summary: "Replace whom the caller lets see their presence (at most 1,000 users)",
            bearer: true,
            body: Some("PresenceSharesRequest"),
            params: &[],
            ok: (200, Some("PresenceSharesOut")),
            errors: &[400, 401, 429],
        },
        GetPresenceShares => RouteDoc {
            summary: "Read the caller's presence share list",
            bearer: true,
            body: None,
            params: &[],
            ok: (200, Some("PresenceSharesOut")),
            errors: &[401, 429],
        },
        GetPresence => RouteDoc {
            summary: "Presence of users who share theirs with the caller and whom the caller shares with (others are left out)",
            bearer: true,
            body: None,
            params: &[(
                "user_ids",
                "query",
                "Comma-separated user ids, at most 100",
            )],
            ok: (200, Some("PresenceOut")),
            errors: &[400, 401, 429],
        },
        RemoveDevice => RouteDoc {
            summary: "Remove a linked device: its keys, inbox, sessions and sockets",
            bearer: true,
            body: None,
            params: &[("device_id", "path", "The device to remove (2 to 255)")],
            ok: (204, None),
            errors: &[400, 401, 403, 404],
        },
        DeviceBundle => RouteDoc {
            summary: "Fetch one device's or every device's (`*`) prekey bundle, all or none",
            bearer: true,
            body: None,
            params: &[
                ("user_id", "path", "The user whose bundles to fetch"),
                ("device_id", "path", "A device id, or `*` for every device"),
            ],
            ok: (200, Some("DevicesBundleOut")),
            errors: &[400, 401, 404, 412, 429],
        },
        CreateAttachment => RouteDoc {
            summary: "Get an attachment id and a presigned upload URL bound to the exact size",
            bearer: true,
            body: Some("AttachmentRequest"),
            params: &[],
            ok: (200, Some("AttachmentUploadOut")),
            errors: &[400, 401, 429],
        },
        GetAttachment => RouteDoc {
            summary: "Get a presigned download URL of an attachment",
            bearer: true,
            body: None,
            params: &[(
                "attachment_id",
                "path",
                "The attachment's id (22 characters of base64url)",
            )],
            ok: (200, Some("AttachmentDownloadOut")),
            errors: &[401, 404, 429],
        },
        CreateGroup => RouteDoc {
            summary: "Create a group: the caller its admin, the listed users invited",
            bearer: true,
            body: Some("CreateGroupRequest"),
            params: &[],
            ok: (201, Some("GroupOut")),
            errors: &[400, 401, 404, 409, 429],
        },
        ListGroups => RouteDoc {
            summary: "The caller's groups and invitations, a page at a time",
            bearer: true,
            body: None,
            params: &[(
                "after",
                "query",
                "The `next` of the previous page: the page after that group id",
            )],
            ok: (200, Some("GroupsOut")),
            errors: &[400, 401, 429],
        },
        GetGroup => RouteDoc {
            summary: "A group's info and roster (members and invitees only)",
            bearer: true,
            body: None,
            params: &[GROUP_ID],
            ok: (200, Some("GroupOut")),
            errors: &[400, 401, 404, 429],
        },
        InviteMembers => RouteDoc {
            summary: "Invite users to the group (admins)",
            bearer: true,
            body: Some("InviteRequest"),
            params: &[GROUP_ID],
            ok: (200, Some("GroupOut")),
            errors: &[400, 401, 403, 404, 409, 429],
        },
        JoinGroup => RouteDoc {
            summary: "Accept an invitation: the caller becomes a member",
            bearer: true,
            body: Some("VersionedRequest"),
            params: &[GROUP_ID],
            ok: (200, Some("GroupOut")),
            errors: &[400, 401, 404, 409, 429],
        },
        RemoveMember => RouteDoc {
            summary:
                "Remove a user from the group (admins), or leave or decline (anyone, themselves)",
            bearer: true,
            body: None,
            params: &[GROUP_ID, MEMBER_ID, IF_VERSION],
            ok: (200, Some("GroupOut")),
            errors: &[400, 401, 403, 404, 409, 429],
        },
        SetRole => RouteDoc {
            summary: "Make a member an admin or a plain member (admins)",
            bearer: true,
            body: Some("RoleRequest"),
            params: &[GROUP_ID, MEMBER_ID],
            ok: (200, Some("GroupOut")),
            errors: &[400, 401, 403, 404, 409, 429],
        },
        SetMeta => RouteDoc {
            summary: "Replace the group's opaque, client-encrypted meta blob (admins)",
            bearer: true,
            body: Some("MetaRequest"),
            params: &[GROUP_ID],
            ok: (200, Some("GroupOut")),
            errors: &[400, 401, 403, 404, 409, 429],
        },
        UploadKeyPackages => RouteDoc {
            summary: "Upload MLS KeyPackages of the calling device (and its last-resort one)",
            bearer: true,
            body: Some("KeyPackagesUpload"),
            params: &[],
            ok: (200, Some("KeyPackageCount")),
            errors: &[400, 401, 429],
        },
        CountKeyPackages => RouteDoc {
            summary: "Count the calling device's MLS KeyPackages",
            bearer: true,
            body: None,
            params: &[],
            ok: (200, Some("KeyPackageCount")),
            errors: &[401],
        },
        ClaimKeyPackages => RouteDoc {
            summary: "Take one MLS KeyPackage of each of a user's devices (each handed out once)",
            bearer: true,
            body: None,
            params: &[MEMBER_ID],
            ok: (200, Some("KeyPackagesOut")),
            errors: &[400, 401, 404, 412, 429],
        },
        InitMls => RouteDoc {
            summary: "Start (or, for an admin, restart) an MLS group's state from its GroupInfo",
            bearer: true,
            body: Some("MlsInitRequest"),
            params: &[GROUP_ID],
            ok: (200, Some("MlsGroupOut")),
            errors: &[400, 401, 403, 404, 409, 429],
        },
        Commit => RouteDoc {
            summary: "Submit an MLS Commit at the group's epoch (exactly one per epoch wins)",
            bearer: true,
            body: Some("CommitRequest"),
            params: &[GROUP_ID],
            ok: (200, Some("MlsGroupOut")),
            errors: &[400, 401, 403, 404, 409, 429],
        },
        GetCommit => RouteDoc {
            summary: "The MLS Commit accepted at an epoch (with the Welcome, for its devices)",
            bearer: true,
            body: None,
            params: &[
                GROUP_ID,
                (
                    "epoch",
                    "path",
                    "The epoch the Commit was made at (an envelope's `mls_epoch`)",
                ),
            ],
            ok: (200, Some("CommitOut")),
            errors: &[400, 401, 404, 409, 429],
        },
        GroupInfo => RouteDoc {
            summary: "The MLS group's GroupInfo and ratchet tree, to join or rejoin (members)",
            bearer: true,
            body: None,
            params: &[GROUP_ID],
            ok: (200, Some("GroupInfoOut")),
            errors: &[400, 401, 403, 404, 409, 429],
        },
    }
}

fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn json_content(schema: &str) -> Value {
    json!({"application/json": {"schema": schema_ref(schema)}})
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No content",
        400 => "Invalid request, malformed JSON or a bad signature",
        401 => "Missing, invalid, expired or revoked token, or invalid credentials",
        404 => "Not found",
        412 => "No one-time prekey (or KeyPackage) left",
        413 => "Request body too large",
        429 => "Rate limited; see Retry-After",
        500 => "Internal error",
        503 => "A backing store is unavailable; nothing was changed",
        _ => "See docs/api.md",
    }
}

/// A 409 means something else on each route that gives one (docs/api.md §4.2).
fn conflict(route: HttpRoute) -> &'static str {
    match route {
        HttpRoute::Register | HttpRoute::RenameMe => "Username taken",
        HttpRoute::LinkDevice => {
            "Too many devices, or a registration id a device removed from the new device's id \
             had (registration_id_reused: generate another, the code stays usable)"
        }
        HttpRoute::ProvisioningCode => "Too many devices",
        _ => "Conflict: see docs/api.md",
    }
}

fn operation(route: HttpRoute) -> Value {
    let doc = describe(route);
    let mut responses = Map::new();
    let (status, schema) = doc.ok;
    let mut ok = json!({"description": reason(status)});
    if let Some(schema) = schema {
        ok["content"] = json_content(schema);
    }
    responses.insert(status.to_string(), ok);
    let mut errors: Vec<u16> = doc.errors.iter().chain(&COMMON_ERRORS).copied().collect();
    errors.sort_unstable();
    for status in errors {
        let description = match status {
            409 => conflict(route),
            _ => reason(status),
        };
        let mut response =
            json!({"description": description, "content": json_content("ErrorBody")});
        if status == 429 {
            response["headers"] = json!({"Retry-After": {
                "description": "Seconds to wait before trying again",
                "schema": {"type": "integer", "minimum": 0},
            }});
        }
        responses.insert(status.to_string(), response);
    }
    let mut op = json!({
        "operationId": format!("{route:?}"),
        "summary": doc.summary,
        "responses": responses,
    });
    if doc.bearer {
        op["security"] = json!([{"bearer": []}]);
    }
    if let Some(body) = doc.body {
        op["requestBody"] = json!({"required": true, "content": json_content(body)});
    }
    if !doc.params.is_empty() {
        op["parameters"] = doc
            .params
            .iter()
            .map(|(name, location, description)| {
                json!({"name": name, "in": location, "required": true,
                       "description": description, "schema": {"type": "string"}})
            })
            .collect();
    }
    op
}

/// The OpenAPI 3.1 document of the HTTP API.
pub fn openapi() -> Value {
    let mut paths: Map<String, Value> = Map::new();
    for route in HttpRoute::ALL {
        let (method, path) = route.key().split_once(' ').expect("METHOD /path");
        paths
            .entry(path)
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .expect("path item")
            .insert(method.to_ascii_lowercase(), operation(route));
    }
    let mut components =
        serde_json::to_value(HttpSchemas::openapi().components).expect("components serialize");
    components["securitySchemes"] = json!({"bearer": {
        "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
        "description": "An access token from POST /v1/sessions or /v1/sessions/refresh",
    }});
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Relay HTTP API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Generated from the code (shared/src/contract.rs); the prose, with \
                            every rule and limit, is docs/api.md. The WebSocket frames are in \
                            docs/frames.schema.json.",
        },
        "paths": paths,
        "components": components,
    })
}

/// Moves OpenAPI component references to the `$defs` of a standalone JSON Schema.
fn to_defs(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                match v {
                    Value::String(s) if key == "$ref" => {
                        *s = s.replace("#/components/schemas/", "#/$defs/");
                    }
                    _ => to_defs(v),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(to_defs),
        _ => {}
    }
}

/// The JSON Schema (2020-12) of every WebSocket frame: a frame is a `ClientFrame` or a
/// `ServerFrame`.
pub fn frames_schema() -> Value {
    let components = FrameSchemas::openapi()
        .components
        .expect("frame schemas are listed");
    let mut defs = serde_json::to_value(components.schemas).expect("schemas serialize");
    to_defs(&mut defs);
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Relay WebSocket frames",
        "description": "Generated from shared/src/frames.rs; the prose is docs/api.md §6. \
                        Clients send ClientFrame (routed on `action`); the server sends \
                        ServerFrame (named by `type`).",
        "anyOf": [{"$ref": "#/$defs/ClientFrame"}, {"$ref": "#/$defs/ServerFrame"}],
        "$defs": defs,
    })
}

/// Where `documented` and `generated` differ, as JSON pointers with what differs there.
pub fn differences(documented: &Value, generated: &Value) -> Vec<String> {
    fn walk(pointer: String, doc: &Value, code: &Value, out: &mut Vec<String>) {
        match (doc, code) {
            (Value::Object(d), Value::Object(c)) => {
                for (k, cv) in c {
                    let p = format!("{pointer}/{}", k.replace('~', "~0").replace('/', "~1"));
                    match d.get(k) {
                        Some(dv) => walk(p, dv, cv, out),
                        None => out.push(format!("{p}: in the code, not in the document")),
                    }
                }
                for k in d.keys().filter(|k| !c.contains_key(*k)) {
                    let p = format!("{pointer}/{}", k.replace('~', "~0").replace('/', "~1"));
                    out.push(format!("{p}: in the document, not in the code"));
                }
            }
            (Value::Array(d), Value::Array(c)) if d.len() == c.len() => {
                for (i, (dv, cv)) in d.iter().zip(c).enumerate() {
                    walk(format!("{pointer}/{i}"), dv, cv, out);
                }
            }
            _ if doc != code => out.push(format!(
                "{pointer}: the document says {doc}, the code {code}"
            )),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(String::new(), documented, generated, &mut out);
    out
}

/// The generated documents with their paths in the repository.
pub fn documents() -> [(&'static str, Value); 2] {
    [
        ("docs/openapi.json", openapi()),
        ("docs/frames.schema.json", frames_schema()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frames::ClientFrame;

    fn committed(path: &str) -> Value {
        serde_json::from_str(&crate::repo_file(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn the_committed_documents_match_the_code() {
        for (path, generated) in documents() {
            let diffs = differences(&committed(path), &generated);
            assert!(
                diffs.is_empty(),
                "{path} is out of date with the code; run \
                 `cargo run -p local-gateway --bin relay-contract -- --write`:\n  {}",
                diffs.join("\n  ")
            );
        }
    }

    /// The check broken on purpose: a route, a field and a frame the code has and the document
    /// lacks are each named.
    #[test]
    fn the_check_names_a_route_a_field_and_a_frame_missing_from_the_document() {
        let code = openapi();
        let mut doc = code.clone();
        doc["paths"]
            .as_object_mut()
            .unwrap()
            .remove("/v1/keys/count");
        doc["components"]["schemas"]["BundleOut"]["properties"]
            .as_object_mut()
            .unwrap()
            .remove("kyber_prekey");
        let diffs = differences(&doc, &code);
        assert!(
            diffs
                .iter()
                .any(|d| d.starts_with("/paths/~1v1~1keys~1count: in the code")),
            "{diffs:?}"
        );
        assert!(
            diffs
                .iter()
                .any(|d| d.contains("/BundleOut/properties/kyber_prekey: in the code")),
            "{diffs:?}"
        );
        assert_eq!(diffs.len(), 2, "{diffs:?}");

        let code = frames_schema();
        let mut doc = code.clone();
        let variants = doc["$defs"]["ServerFrame"]["oneOf"].as_array_mut().unwrap();
        variants.pop();
        let diffs = differences(&doc, &code);
        assert!(
            diffs
                .iter()
                .any(|d| d.starts_with("/$defs/ServerFrame/oneOf")),
            "{diffs:?}"
        );
        assert!(differences(&code, &frames_schema()).is_empty());
    }

    #[test]
    fn every_route_of_the_table_is_an_operation_with_its_method() {
        let doc = openapi();
        let mut count = 0;
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let key = format!("{} {path}", method.to_ascii_uppercase());
                let route = HttpRoute::from_key(&key).unwrap_or_else(|| panic!("{key}"));
                assert_eq!(op["operationId"], format!("{route:?}"));
                count += 1;
            }
        }
        assert_eq!(count, HttpRoute::ALL.len());
    }

    /// Every action the schema names is one the frame parser reads, with the schema's required
    /// fields and nothing else.
    #[test]
    fn every_client_frame_in_the_schema_is_read_by_the_parser() {
        let schema = frames_schema();
        let defs = &schema["$defs"];
        let variants = defs["ClientFrame"]["oneOf"].as_array().unwrap();
        assert_eq!(variants.len(), 7);
        for variant in variants {
            let text = variant.to_string();
            let action = text
                .split(r#""enum":[""#)
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .unwrap_or_else(|| panic!("no action in {text}"));
            let frame = match action {
                "send" => json!({"action": "send", "to": "x", "body": ""}),
                "renew" => json!({"action": "renew", "token": "t"}),
                "ack" => json!({"action": "ack", "ids": ["x"]}),
                other => json!({"action": other}),
            };
            ClientFrame::parse(&frame.to_string()).unwrap_or_else(|(_, e)| panic!("{action}: {e}"));
        }
    }
}
