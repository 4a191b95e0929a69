//! The handler functions called directly with events shaped exactly as API Gateway sends them
//! (JSON as in AWS's payload documentation), against the real stores: what runs on Lambda.

use std::sync::Arc;

use aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest;
use aws_lambda_events::encodings::Body;
use base64::Engine;
use lambda_http::request::LambdaRequest;
use relay_tests::app::test_app;
use relay_tests::client::{unique_username, Identity};
use serde_json::{json, Value};
use shared::storage::{PushError, Pusher};

fn http_event(
    route_key: &str,
    path: &str,
    query: &str,
    body: Option<(&str, bool)>,
    headers: Value,
    path_params: Value,
) -> lambda_http::Request {
    let (method, _) = route_key.split_once(' ').unwrap();
    let mut ev = json!({
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": path,
        "rawQueryString": query,
        "headers": headers,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "r3pmxmplak",
            "domainName": "r3pmxmplak.execute-api.us-east-1.amazonaws.com",
            "domainPrefix": "r3pmxmplak",
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "203.0.113.7", "userAgent": "agent/1"},
            "requestId": "JKJaXmPLvHcESHA=",
            "routeKey": route_key,
            "stage": "$default",
            "time": "22/Nov/2026:00:00:00 +0000",
            "timeEpoch": 1_795_000_000_000u64
        },
        "isBase64Encoded": false
    });
    if !path_params.is_null() {
        ev["pathParameters"] = path_params;
    }
    if let Some((b, encoded)) = body {
        ev["body"] = json!(b);
        ev["isBase64Encoded"] = json!(encoded);
    }
    serde_json::from_value::<LambdaRequest>(ev)
        .expect("an HTTP API v2 event")
        .into()
}

async fn call(app: &shared::App, function: &str, req: lambda_http::Request) -> (u16, Value) {
    let resp = match function {
        "users" => users::handler(app, req).await,
        "attachments" => attachments::handler(app, req).await,
        "groups" => groups::handler(app, req).await,
        _ => keys::handler(app, req).await,
    }
    .unwrap();
    let status = resp.status().as_u16();
    let body = match resp.body() {
        lambda_http::Body::Text(t) => serde_json::from_str(t).unwrap_or(Value::Null),
        _ => Value::Null,
    };
    (status, body)
}

/// Every route of the route table is served by the function it names, and by no other.
#[tokio::test]
async fn each_route_of_the_table_is_served_by_its_function_only() {
    use shared::routes::{Function, HttpRoute};
    let app = test_app().await;
    for route in HttpRoute::ALL {
        let (_, pattern) = route.key().split_once(' ').unwrap();
        // Each `{name}` of the pattern gets a value, in the path and as API Gateway's path
        // parameter.
        let mut params = serde_json::Map::new();
        let path: Vec<String> = pattern
            .split('/')
            .map(|segment| {
                let Some(name) = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) else {
                    return segment.to_string();
                };
                let value = match name {
                    "device_id" => "2".to_string(),
                    _ => uuid::Uuid::new_v4().to_string(),
                };
                params.insert(name.to_string(), json!(value));
                value
            })
            .collect();
        let path = path.join("/");
        let params = if params.is_empty() {
            Value::Null
        } else {
            Value::Object(params)
        };
        let event = || http_event(route.key(), &path, "", None, json!({}), params.clone());
        let (own, other) = match route.function() {
            Function::Users => ("users", "keys"),
            Function::Keys => ("keys", "users"),
            Function::Attachments => ("attachments", "keys"),
            Function::Groups => ("groups", "keys"),
            Function::Connection => unreachable!("no HTTP route is the connection function's"),
        };
        let (status, body) = call(&app, own, event()).await;
        assert_ne!(
            body["error"]["code"],
            "route_not_found",
            "{} not served by {own}: {status} {body}",
            route.key()
        );
        let (status, body) = call(&app, other, event()).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (404, Some("not_found")),
            "{} also served by {other}",
            route.key()
        );
    }
}

#[tokio::test]
async fn http_functions_answer_api_gateway_v2_events() {
    let app = test_app().await;
    let name = unique_username("ev");
    let reg = Identity::new()
        .registration(&name, "password123", 3, 1)
        .to_string();
    let json_headers = json!({"content-type": "application/json"});
    let (s, user) = call(
        &app,
        "users",
        http_event(
            "POST /v1/users",
            "/v1/users",
            "",
            Some((&reg, false)),
            json_headers.clone(),
            Value::Null,
        ),
    )
    .await;
    assert_eq!(s, 200, "{user}");
    // API Gateway base64-encodes bodies of some content types; the handler reads them the same.
    let login = base64::engine::general_purpose::STANDARD
        .encode(json!({"username": name, "password": "password123"}).to_string());
    let (s, tokens) = call(
        &app,
        "users",
        http_event(
            "POST /v1/sessions",
            "/v1/sessions",
            "",
            Some((&login, true)),
            json!({}),
            Value::Null,
        ),
    )
    .await;
    assert_eq!(s, 200, "{tokens}");
    let auth =
        json!({"authorization": format!("Bearer {}", tokens["access_token"].as_str().unwrap())});
    let (s, found) = call(
        &app,
        "users",
        http_event(
            "GET /v1/users",
            "/v1/users",
            &format!("username={name}"),
            None,
            auth.clone(),
            Value::Null,
        ),
    )
    .await;
    assert_eq!((s, &found["user_id"]), (200, &user["user_id"]));
    let uid = user["user_id"].as_str().unwrap();
    let path = format!("/v1/users/{uid}/bundle");
    let (s, bundle) = call(
        &app,
        "keys",
        http_event(
            "GET /v1/users/{user_id}/bundle",
            &path,
            "",
            None,
            auth.clone(),
            json!({"user_id": uid}),
        ),
    )
    .await;
    assert_eq!(s, 200, "{bundle}");
    assert_eq!(bundle["user_id"], uid);
    let (s, counts) = call(
        &app,
        "keys",
        http_event(
            "GET /v1/keys/count",
            "/v1/keys/count",
            "",
            None,
            auth.clone(),
            Value::Null,
        ),
    )
    .await;
    assert_eq!(
        (s, counts),
        (
            200,
            json!({"one_time_prekeys": 2, "kyber_one_time_prekeys": 0})
        )
    );
    let (s, body) = call(
        &app,
        "keys",
        http_event(
            "GET /v1/keys/count",
            "/v1/keys/count",
            "",
            None,
            json!({}),
            Value::Null,
        ),
    )
    .await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );
    let (s, _) = call(
        &app,
        "users",
        http_event("PUT /v1/keys", "/v1/keys", "", None, auth, Value::Null),
    )
    .await;
    assert_eq!(s, 404, "a route of another function");
    let (s, health) = call(
        &app,
        "users",
        http_event("GET /healthz", "/healthz", "", None, json!({}), Value::Null),
    )
    .await;
    assert_eq!((s, health), (200, json!({"status": "ok"})));
}

/// The groups function reads `{group_id}` and `{user_id}` from API Gateway's path parameters and
/// `if_version` from the query string, and answers a creation with 201.
#[tokio::test]
async fn the_groups_function_reads_path_parameters_and_the_query() {
    let app = test_app().await;
    let name = unique_username("gr");
    let reg = Identity::new()
        .registration(&name, "password123", 1, 0)
        .to_string();
    let json_headers = json!({"content-type": "application/json"});
    let event = |key: &str, path: &str, query: &str, body: Option<&str>, params: Value| {
        http_event(
            key,
            path,
            query,
            body.map(|b| (b, false)),
            json_headers.clone(),
            params,
        )
    };
    let (s, user) = call(
        &app,
        "users",
        event("POST /v1/users", "/v1/users", "", Some(&reg), Value::Null),
    )
    .await;
    assert_eq!(s, 200, "{user}");
    let login = json!({"username": name, "password": "password123"}).to_string();
    let (s, tokens) = call(
        &app,
        "users",
        event(
            "POST /v1/sessions",
            "/v1/sessions",
            "",
            Some(&login),
            Value::Null,
        ),
    )
    .await;
    assert_eq!(s, 200, "{tokens}");
    let bearer = format!("Bearer {}", tokens["access_token"].as_str().unwrap());
    let authed = |key: &str, path: &str, query: &str, body: Option<&str>, params: Value| {
        http_event(
            key,
            path,
            query,
            body.map(|b| (b, false)),
            json!({"authorization": bearer, "content-type": "application/json"}),
            params,
        )
    };
    let uid = user["user_id"].as_str().unwrap();

    let create = json!({"members": []}).to_string();
    let (s, group) = call(
        &app,
        "groups",
        authed(
            "POST /v1/groups",
            "/v1/groups",
            "",
            Some(&create),
            Value::Null,
        ),
    )
    .await;
    assert_eq!(s, 201, "{group}");
    let gid = group["group_id"].as_str().unwrap();
    let (s, read) = call(
        &app,
        "groups",
        authed(
            "GET /v1/groups/{group_id}",
            &format!("/v1/groups/{gid}"),
            "",
            None,
            json!({"group_id": gid}),
        ),
    )
    .await;
    assert_eq!((s, &read), (200, &group));
    let member = json!({"group_id": gid, "user_id": uid});
    let member_path = format!("/v1/groups/{gid}/members/{uid}");
    let (s, same) = call(
        &app,
        "groups",
        authed(
            "PATCH /v1/groups/{group_id}/members/{user_id}",
            &member_path,
            "",
            Some(r#"{"role":"admin"}"#),
            member.clone(),
        ),
    )
    .await;
    assert_eq!((s, &same), (200, &group));
    let (s, conflict) = call(
        &app,
        "groups",
        authed(
            "DELETE /v1/groups/{group_id}/members/{user_id}",
            &member_path,
            "if_version=7",
            None,
            member.clone(),
        ),
    )
    .await;
    assert_eq!(
        (s, conflict["error"]["code"].as_str()),
        (409, Some("version_conflict"))
    );
    assert_eq!(conflict["error"]["group"], group);
    let (s, gone) = call(
        &app,
        "groups",
        authed(
            "DELETE /v1/groups/{group_id}/members/{user_id}",
            &member_path,
            "if_version=1",
            None,
            member,
        ),
    )
    .await;
    assert_eq!(s, 200, "{gone}");
    assert_eq!(
        (&gone["version"], &gone["members"]),
        (&json!(2), &json!([]))
    );
}

/// Records pushes instead of writing to a socket.
#[derive(Default)]
struct Recorder(std::sync::Mutex<Vec<(String, String)>>);

#[async_trait::async_trait]
impl Pusher for Recorder {
    async fn push(&self, connection_id: &str, frame: &str) -> Result<(), PushError> {
        self.0
            .lock()
            .unwrap()
            .push((connection_id.to_string(), frame.to_string()));
        Ok(())
    }

    async fn close(&self, _connection_id: &str) -> Result<(), PushError> {
        Ok(())
    }
}

fn ws_event(
    route_key: &str,
    connection_id: &str,
    query: Value,
    body: Option<&str>,
) -> ApiGatewayWebsocketProxyRequest {
    let mut ev = json!({
        "requestContext": {
            "routeKey": route_key,
            "eventType": match route_key { "$connect" => "CONNECT", "$disconnect" => "DISCONNECT", _ => "MESSAGE" },
            "extendedRequestId": "ABCD1234=",
            "requestTime": "22/Nov/2026:00:00:00 +0000",
            "messageDirection": "IN",
            "stage": "prod",
            "connectedAt": 1_795_000_000_000u64,
            "requestTimeEpoch": 1_795_000_000_000u64,
            "identity": {"sourceIp": "203.0.113.7"},
            "requestId": "ABCD1234=",
            "domainName": "abcdef.execute-api.us-east-1.amazonaws.com",
            "connectionId": connection_id,
            "apiId": "abcdef"
        },
        "isBase64Encoded": false
    });
    if !query.is_null() {
        ev["queryStringParameters"] = query;
    }
    if let Some(b) = body {
        ev["body"] = json!(b);
    }
    serde_json::from_value(ev).expect("a WebSocket event")
}

fn text(resp: &aws_lambda_events::apigw::ApiGatewayProxyResponse) -> Value {
    match &resp.body {
        Some(Body::Text(t)) => serde_json::from_str(t).unwrap(),
        _ => Value::Null,
    }
}

#[tokio::test]
async fn connection_function_answers_websocket_events() {
    let app = test_app().await;
    let recorder = Arc::new(Recorder::default());
    let relay = app.relay(recorder.clone());
    let mut tokens = Vec::new();
    for _ in 0..2 {
        let name = unique_username("ws");
        let reg = Identity::new().registration(&name, "password123", 1, 0);
        let user = app
            .accounts
            .register(serde_json::from_value(reg).unwrap(), "ip")
            .await
            .unwrap();
        let t = app
            .accounts
            .login(
                serde_json::from_value(json!({"username": name, "password": "password123"}))
                    .unwrap(),
                "ip",
            )
            .await
            .unwrap();
        tokens.push((user.user_id.to_string(), t.access_token));
    }
    let refused = connection::handler(
        &relay,
        ws_event("$connect", "c0", json!({"token": "nope"}), None),
    )
    .await
    .unwrap();
    assert_eq!(refused.status_code, 401);
    for (i, (_, token)) in tokens.iter().enumerate() {
        let ok = connection::handler(
            &relay,
            ws_event(
                "$connect",
                &format!("c{}", i + 1),
                json!({"token": token}),
                None,
            ),
        )
        .await
        .unwrap();
        assert_eq!(ok.status_code, 200);
    }
    let pong = connection::handler(
        &relay,
        ws_event("$default", "c1", Value::Null, Some(r#"{"action":"ping"}"#)),
    )
    .await
    .unwrap();
    assert_eq!(text(&pong), json!({"type": "pong"}));
    // A quiet ack is answered with no body at all (API Gateway then sends nothing back).
    let quiet = r#"{"action":"ack","id":"q","ids":["x"],"quiet":true}"#;
    let quiet = connection::handler(&relay, ws_event("$default", "c1", Value::Null, Some(quiet)))
        .await
        .unwrap();
    assert_eq!((quiet.status_code, quiet.body), (200, None));
    let loud = r#"{"action":"ack","id":"l","ids":["x"]}"#;
    let loud = connection::handler(&relay, ws_event("$default", "c1", Value::Null, Some(loud)))
        .await
        .unwrap();
    assert_eq!(text(&loud), json!({"type": "acked", "id": "l", "acked": 0}));
    let send = json!({"action": "send", "to": tokens[1].0, "id": "e1", "body": "aGk="}).to_string();
    let sent = connection::handler(&relay, ws_event("$default", "c1", Value::Null, Some(&send)))
        .await
        .unwrap();
    assert_eq!(
        text(&sent),
        json!({"type": "sent", "id": "e1", "delivery": "delivered",
               "devices": [{"device_id": 1, "delivery": "delivered"}]})
    );
    let pushes = recorder.0.lock().unwrap().clone();
    assert_eq!(pushes.len(), 1);
    assert_eq!(pushes[0].0, "c2");
    let frame: Value = serde_json::from_str(&pushes[0].1).unwrap();
    assert_eq!(frame["messages"][0]["body"], "aGk=");
    assert_eq!(frame["messages"][0]["from"], tokens[0].0.as_str());
    let bye = connection::handler(&relay, ws_event("$disconnect", "c2", Value::Null, None))
        .await
        .unwrap();
    assert_eq!(bye.status_code, 200);
    let queued = connection::handler(&relay, ws_event("$default", "c1", Value::Null, Some(&send)))
        .await
        .unwrap();
    assert_eq!(text(&queued)["delivery"], "queued");
}
