//! Scenario 5: each function's release binary started against a minimal Lambda Runtime API stub
//! served by the bench; the time from exec to the first response posted.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use local_gateway::events::{self, HttpParts};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::util::{command, mib};

enum Seen {
    Next(Instant),
    Response(Instant, String),
    Error(String),
}

#[derive(Clone)]
struct Stub {
    event: Arc<Mutex<Option<String>>>,
    function: String,
    seen: mpsc::UnboundedSender<Seen>,
}

const REQUEST_ID: &str = "8476a536-e9f4-11e8-9739-2dfe598c3fcd";

async fn next(State(stub): State<Stub>) -> Response {
    let _ = stub.seen.send(Seen::Next(Instant::now()));
    let event = stub.event.lock().expect("lock").take();
    let Some(body) = event else {
        // One invocation per run: later polls wait (bounded) until the function is killed.
        tokio::time::sleep(Duration::from_secs(30)).await;
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    };
    let deadline = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64 + 30_000)
        .unwrap_or(0);
    (
        StatusCode::OK,
        [
            ("content-type", "application/json".to_string()),
            ("lambda-runtime-aws-request-id", REQUEST_ID.to_string()),
            ("lambda-runtime-deadline-ms", deadline.to_string()),
            (
                "lambda-runtime-invoked-function-arn",
                format!(
                    "arn:aws:lambda:us-east-1:000000000000:function:{}",
                    stub.function
                ),
            ),
            (
                "lambda-runtime-trace-id",
                "Root=1-5bef4de7-ad49b0e87f6ef6c87fc2e700;Parent=9a9197af755a6419;Sampled=0"
                    .to_string(),
            ),
        ],
        body,
    )
        .into_response()
}

async fn response(State(stub): State<Stub>, body: String) -> StatusCode {
    let _ = stub.seen.send(Seen::Response(Instant::now(), body));
    StatusCode::ACCEPTED
}

async fn error(State(stub): State<Stub>, _h: HeaderMap, body: String) -> StatusCode {
    let _ = stub.seen.send(Seen::Error(body));
    StatusCode::ACCEPTED
}

pub struct Run {
    pub total: Duration,
    pub init: Option<Duration>,
    pub response: String,
}

/// Starts `bin` once against a fresh stub holding `event`; waits at most 20 s for its answer.
pub async fn run_once(
    bin: &Path,
    args: &[&str],
    function: &str,
    event: &str,
    env: &HashMap<String, String>,
    log_file: &Path,
) -> Result<Run, String> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let stub = Stub {
        event: Arc::new(Mutex::new(Some(event.to_string()))),
        function: function.to_string(),
        seen: tx,
    };
    let app = Router::new()
        .route("/2018-06-01/runtime/invocation/next", get(next))
        .route(
            "/2018-06-01/runtime/invocation/{id}/response",
            post(response),
        )
        .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
        .route("/2018-06-01/runtime/init/error", post(error))
        .with_state(stub);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let mut cmd = command(bin, Some(log_file));
    cmd.args(args)
        .envs(env)
        .env("AWS_LAMBDA_RUNTIME_API", addr.to_string())
        .env("AWS_LAMBDA_FUNCTION_NAME", function)
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "2026/01/01/[1]bench")
        .env(
            "AWS_LAMBDA_LOG_GROUP_NAME",
            format!("/aws/lambda/{function}"),
        )
        .env("RELAY_LOG_FORMAT", "json");
    let t0 = Instant::now();
    let mut child = cmd.spawn().map_err(|e| format!("exec {bin:?}: {e}"))?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut init = None;
    let outcome = loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(Seen::Next(at))) => {
                init.get_or_insert(at - t0);
            }
            Ok(Some(Seen::Response(at, body))) => break Ok((at - t0, body)),
            Ok(Some(Seen::Error(body))) => {
                break Err(format!("{function} reported an error: {body}"))
            }
            Ok(None) => break Err("stub closed".into()),
            Err(_) => {
                let exited = child.try_wait().ok().flatten();
                break Err(format!(
                    "{function} did not answer within 20 s (exit: {exited:?}; log {log_file:?})"
                ));
            }
        }
    };
    let _ = child.kill().await;
    server.abort();
    let (total, response) = outcome?;
    Ok(Run {
        total,
        init,
        response,
    })
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct ColdStart {
    pub function: String,
    pub binary: String,
    pub size_bytes: u64,
    pub size_mib: f64,
    pub runs_ms: Vec<f64>,
    pub min_ms: f64,
    pub median_ms: f64,
    /// Exec to the first `GET …/invocation/next` (the init phase), median.
    pub init_median_ms: f64,
    pub status_code: Option<i64>,
    pub error: Option<String>,
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        0.0
    } else {
        v[v.len() / 2]
    }
}

/// Runs `bin` `repeats` times against the stub.
pub async fn measure(
    function: &str,
    bin: &Path,
    args: &[&str],
    event: &str,
    env: &HashMap<String, String>,
    repeats: usize,
    log_dir: &Path,
) -> ColdStart {
    let size_bytes = std::fs::metadata(bin).map(|m| m.len()).unwrap_or(0);
    let mut out = ColdStart {
        function: function.into(),
        binary: bin.display().to_string(),
        size_bytes,
        size_mib: mib(size_bytes),
        ..Default::default()
    };
    let mut inits = Vec::new();
    for i in 0..repeats {
        let log = log_dir.join(format!("cold-{function}-{i}.log"));
        match run_once(bin, args, function, event, env, &log).await {
            Ok(run) => {
                out.runs_ms.push(run.total.as_secs_f64() * 1e3);
                if let Some(d) = run.init {
                    inits.push(d.as_secs_f64() * 1e3);
                }
                out.status_code = serde_json::from_str::<serde_json::Value>(&run.response)
                    .ok()
                    .and_then(|v| v["statusCode"].as_i64());
            }
            Err(e) => {
                out.error = Some(e);
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    out.min_ms = out.runs_ms.iter().copied().fold(f64::INFINITY, f64::min);
    if !out.min_ms.is_finite() {
        out.min_ms = 0.0;
    }
    out.median_ms = median(&out.runs_ms);
    out.init_median_ms = median(&inits);
    out
}

/// The events each function is cold-started with, as the gateway builds them.
pub fn users_event() -> String {
    http_event("GET", "/healthz")
}

pub fn keys_event() -> String {
    http_event("GET", "/v1/keys/count")
}

fn http_event(method: &str, path: &str) -> String {
    let route = local_gateway::routes::matching(method, path).expect("route");
    let mut headers = http::HeaderMap::new();
    headers.insert("host", http::HeaderValue::from_static("127.0.0.1"));
    headers.insert("user-agent", http::HeaderValue::from_static("relay-bench"));
    let ev = events::http_event(
        &route,
        HttpParts {
            method: method.parse().expect("method"),
            path,
            query: "",
            headers,
            source_ip: "127.0.0.1".into(),
            body: Vec::new(),
        },
    );
    serde_json::to_string(&ev).expect("event json")
}

pub fn connection_event() -> String {
    let ev = events::websocket_event(
        "$default",
        "benchConnId0",
        "127.0.0.1",
        None,
        Some(r#"{"action":"ping"}"#.into()),
    );
    serde_json::to_string(&ev).expect("event json")
}
