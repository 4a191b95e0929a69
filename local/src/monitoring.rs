//! The gateway's monitoring, served on the management listener only (loopback, like the
//! Management API): Prometheus text of the metrics this process records (`/metrics`), liveness
//! (`/healthz`: the process answers) and readiness (`/readyz`: Redis and DynamoDB answer, asked
//! through the users function's `GET /healthz`, so that it holds in Lambda mode too).
//!
//! The `metrics` recorder is process-global: only the gateway binary installs it ([`install`],
//! from `run`), never `in_process`, which the integration tests call for many gateways at once.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::events::{self, HttpParts};
use crate::functions::Functions;
use crate::routes;

/// What the monitoring routes read: the functions (readiness asks the users function) and the
/// recorder's handle (none when metrics are off).
#[derive(Clone)]
pub struct Monitoring {
    pub functions: Arc<dyn Functions>,
    pub metrics: Option<PrometheusHandle>,
}

/// `/metrics`, `/healthz` and `/readyz`, for the management listener only.
pub fn router(state: Monitoring) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
}

/// How often histogram samples are folded into their buckets when nothing scrapes: without it
/// an unscraped gateway would keep every sample.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Installs the Prometheus recorder for the whole process (histograms as real Prometheus
/// histograms over `shared::metrics::BUCKETS`, not summaries), describes every metric and counts
/// this start. Call once, inside the runtime (it spawns the upkeep task).
pub fn install() -> Result<PrometheusHandle, String> {
    let handle = PrometheusBuilder::new()
        .set_buckets(shared::metrics::BUCKETS)
        .and_then(PrometheusBuilder::install_recorder)
        .map_err(|e| format!("cannot install the metrics recorder: {e}"))?;
    shared::metrics::describe();
    shared::metrics::cold_start(shared::metrics::GATEWAY);
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(UPKEEP_EVERY);
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });
    Ok(handle)
}

fn json(status: StatusCode, body: serde_json::Value) -> Response {
    (
        status,
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// `GET /metrics`: the Prometheus text exposition; 404 when metrics are off.
pub async fn metrics(State(gw): State<Monitoring>) -> Response {
    match &gw.metrics {
        Some(handle) => (
            StatusCode::OK,
            [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
            handle.render(),
        )
            .into_response(),
        None => json(
            StatusCode::NOT_FOUND,
            shared::Error::RouteNotFound.to_json(),
        ),
    }
}

/// `GET /healthz`: the gateway answers; no store is asked.
pub async fn healthz() -> Response {
    json(StatusCode::OK, serde_json::json!({"status": "ok"}))
}

/// `GET /readyz`: the users function's `GET /healthz` (it pings DynamoDB and Redis) answered
/// 200; else 503 with its error.
pub async fn readyz(State(gw): State<Monitoring>) -> Response {
    let health = shared::routes::HttpRoute::Health.key();
    let (method, path) = health.split_once(' ').expect("a route key");
    let route = routes::matching(method, path).expect("the health route is in the table");
    let event = events::http_event(
        &route,
        HttpParts {
            method: http::Method::GET,
            path,
            query: "",
            headers: http::HeaderMap::new(),
            source_ip: "127.0.0.1".into(),
            body: Vec::new(),
        },
    );
    let resp = gw.functions.http(route.function, event).await;
    if resp.status_code == 200 {
        return json(StatusCode::OK, serde_json::json!({"status": "ready"}));
    }
    let body = match resp.body {
        Some(aws_lambda_events::encodings::Body::Text(t)) => {
            serde_json::from_str(&t).unwrap_or(serde_json::Value::Null)
        }
        _ => serde_json::Value::Null,
    };
    let body = if body.get("error").is_some() {
        body
    } else {
        shared::Error::Unavailable(format!("health check answered {}", resp.status_code)).to_json()
    };
    json(StatusCode::SERVICE_UNAVAILABLE, body)
}
