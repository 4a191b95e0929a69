//! Logs and, on Lambda, metrics. Logs: JSON lines on Lambda (`RELAY_LOG_FORMAT=json`), compact
//! text locally. Metrics on Lambda: CloudWatch Embedded Metric Format (EMF) lines on stdout,
//! written after each invocation, from which CloudWatch Logs extracts the metrics (no
//! PutMetricData call, no agent). Only the functions' `main` installs it ([`lambda`]): the local
//! gateway installs its Prometheus recorder instead, and the recorder is process-global.

use std::future::Future;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

use aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest;
use lambda_http::request::RequestContext;
use lambda_http::{Request, RequestExt};
use metrics_cloudwatch_embedded::Collector;
use tracing_subscriber::EnvFilter;

use crate::config::{invalid, settings, ConfigError, Env};
use crate::metrics::{self as relay_metrics, Kind, Label, Metric};
use crate::routes::{Function, HttpRoute};

/// Sets up the logs (`RUST_LOG`, `RELAY_LOG_FORMAT`).
pub fn init() {
    init_logs(&[]);
}

fn init_logs(directives: &[&str]) {
    let env = Env::new(&|k| std::env::var(k).ok());
    let mut filter = EnvFilter::try_new(env.string(&settings::RUST_LOG))
        .unwrap_or_else(|_| EnvFilter::new(settings::RUST_LOG.default));
    for directive in directives {
        if let Ok(directive) = directive.parse() {
            filter = filter.add_directive(directive);
        }
    }
    let json = env.string(&settings::RELAY_LOG_FORMAT) == "json";
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    let _ = if json {
        builder.json().without_time().try_init()
    } else {
        builder.compact().try_init()
    };
}

/// `RELAY_METRICS`: `on` (the default) or `off`.
pub fn metrics_enabled(env: &Env) -> Result<bool, ConfigError> {
    match env
        .string(&settings::RELAY_METRICS)
        .trim()
        .to_ascii_lowercase()
        .as_str()
    {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(invalid(&settings::RELAY_METRICS, "on or off")),
    }
}

/// The dimension every EMF metric carries besides its labels: the function that wrote it.
pub const FUNCTION_DIMENSION: &str = "function";
/// The EMF property that names the invocation's API Gateway request id, as the `request_id` of
/// its log lines does, so one Logs Insights filter finds a request's metrics and logs together.
pub const REQUEST_ID_PROPERTY: &str = "request_id";

/// A Lambda function's telemetry: its logs are set up, and with `RELAY_METRICS` on, every metric
/// recorded during an invocation is written as EMF when the invocation ends.
pub struct Lambda {
    emf: Option<&'static Collector>,
    /// Whether the cold start is still to be written (with the first invocation's metrics).
    cold: AtomicBool,
}

/// Sets up logs and, with `RELAY_METRICS` on, the EMF recorder: namespace
/// `RELAY_METRICS_NAMESPACE`, dimension `function` = `function`'s name; describes every metric.
/// The cold start is written with the first invocation's metrics. Call once, first thing in
/// `main`.
pub fn lambda(function: Function) -> Result<Lambda, String> {
    // The collector keeps at most 100 samples per histogram series between flushes (an EMF
    // value array's maximum) and logs an error for each sample beyond: an invocation that calls
    // a dependency more than 100 times (a push to a large group's connections) would write a
    // log line per call. Those samples are dropped either way (the counters stay exact), and the
    // collector's other errors cannot happen with the declared metrics.
    init_logs(&["metrics_cloudwatch_embedded=off"]);
    let env = Env::new(&|k| std::env::var(k).ok());
    let cold = AtomicBool::new(true);
    if !metrics_enabled(&env).map_err(|e| e.to_string())? {
        return Ok(Lambda { emf: None, cold });
    }
    let emf = metrics_cloudwatch_embedded::Builder::new()
        .cloudwatch_namespace(env.string(&settings::RELAY_METRICS_NAMESPACE))
        .with_dimension(FUNCTION_DIMENSION, function.name())
        .init()
        .map_err(|e| format!("cannot install the metrics recorder: {e}"))?;
    relay_metrics::describe();
    Ok(Lambda {
        emf: Some(emf),
        cold,
    })
}

impl Lambda {
    /// Serves one HTTP API event through `handler`, then writes its metrics.
    pub async fn http<F, Fut, T>(&self, req: Request, handler: F) -> T
    where
        F: FnOnce(Request) -> Fut,
        Fut: Future<Output = T>,
    {
        let request_id = match req.request_context_ref() {
            Some(RequestContext::ApiGatewayV2(ctx)) => ctx.request_id.clone(),
            _ => None,
        };
        self.invocation(request_id.as_deref(), handler(req)).await
    }

    /// Serves one WebSocket API event through `handler`, then writes its metrics.
    pub async fn websocket<F, Fut, T>(&self, ev: ApiGatewayWebsocketProxyRequest, handler: F) -> T
    where
        F: FnOnce(ApiGatewayWebsocketProxyRequest) -> Fut,
        Fut: Future<Output = T>,
    {
        let request_id = ev.request_context.request_id.clone();
        self.invocation(request_id.as_deref(), handler(ev)).await
    }

    /// Runs one invocation, then writes what it recorded: before the runtime is handed the
    /// response, since Lambda may freeze the process as soon as it has it.
    pub async fn invocation<T>(&self, request_id: Option<&str>, run: impl Future<Output = T>) -> T {
        let out = run.await;
        self.flush(request_id.unwrap_or_default());
        out
    }

    /// Writes the metrics recorded since the last flush to stdout, one EMF line per label set,
    /// each tagged with `request_id`.
    pub fn flush(&self, request_id: &str) {
        let Some(emf) = self.emf else { return };
        let mut lines = Vec::with_capacity(4096);
        emf.set_property(REQUEST_ID_PROPERTY, request_id);
        let written = if self.cold.swap(false, Ordering::Relaxed) {
            // Not through `metrics::cold_start`: its `function` label is the collector's own
            // dimension, which a label may not repeat (the collector would name it twice, then
            // drop it from the lines after). Written alone, the line has exactly that dimension.
            emf.write_single(
                relay_metrics::COLD_STARTS.name,
                Some(metrics::Unit::Count),
                1,
                &mut lines,
            )
        } else {
            Ok(())
        };
        if let Err(e) = written.and_then(|()| emf.flush(&mut lines)) {
            tracing::warn!(error = %e, "cannot write the metrics");
            return;
        }
        // One write of whole lines, so no log line lands inside a metrics line.
        let _ = std::io::stdout().lock().write_all(&lines);
    }
}

/// The values a label takes, for the checks outside Rust (`infra/check_contract.py`); `None` for
/// [`Label::Operation`], whose values are the AWS APIs' operation names.
pub fn label_values(label: Label) -> Option<Vec<String>> {
    let values: Vec<&str> = match label {
        Label::Route => std::iter::once(relay_metrics::UNMATCHED_ROUTE)
            .chain(HttpRoute::ALL.iter().map(|r| r.key()))
            .collect(),
        Label::StatusClass => relay_metrics::STATUS_CLASSES.to_vec(),
        Label::Action => relay_metrics::EVENT_ACTIONS
            .iter()
            .chain(crate::frames::ACTIONS.iter())
            .copied()
            .collect(),
        Label::Outcome => std::iter::once("ok")
            .chain(crate::error::CODES.iter().copied())
            .collect(),
        Label::Event => relay_metrics::MESSAGE_EVENTS.to_vec(),
        Label::Limit => {
            return Some(
                crate::config::RateLimits::SETTINGS
                    .iter()
                    .filter_map(|s| s.var.strip_prefix("RATE_LIMIT_"))
                    .map(str::to_ascii_lowercase)
                    .collect(),
            )
        }
        Label::Dependency => relay_metrics::DEPENDENCIES.to_vec(),
        Label::Operation => return None,
        Label::Function => Function::ALL.iter().map(|f| f.name()).collect(),
    };
    Some(values.into_iter().map(String::from).collect())
}

/// The functions that write `metric` (its `recorded_by`: "every function", or their names).
pub fn writers(metric: &Metric) -> Vec<&'static str> {
    let every = metric.recorded_by.starts_with("every function");
    Function::ALL
        .iter()
        .map(|f| f.name())
        .filter(|name| every || metric.recorded_by.split(", ").any(|w| w == *name))
        .collect()
}

/// How the functions' metrics reach CloudWatch, for the checks outside Rust: the namespace's
/// setting, the constant dimension, and per metric its EMF dimension set (the constant
/// dimension, then its labels) and the values of each label.
pub fn emf_json() -> serde_json::Value {
    let metric = |m: &Metric| {
        let mut dimensions = vec![FUNCTION_DIMENSION];
        dimensions.extend(m.labels.iter().map(|l| l.name()));
        dimensions.dedup();
        let unit = if m.name.ends_with("_seconds") {
            "Seconds"
        } else {
            "Count"
        };
        serde_json::json!({
            "name": m.name,
            "functions": writers(m),
            "kind": m.kind.name(),
            "unit": unit,
            "dimensions": dimensions,
            "histogram": m.kind == Kind::Histogram,
        })
    };
    let labels: serde_json::Map<String, serde_json::Value> = relay_metrics::ALL
        .iter()
        .flat_map(|m| m.labels.iter().copied())
        .chain([Label::Function])
        .map(|l| (l.name().to_string(), serde_json::json!(label_values(l))))
        .collect();
    serde_json::json!({
        "namespace_setting": settings::RELAY_METRICS_NAMESPACE.var,
        "namespace_default": settings::RELAY_METRICS_NAMESPACE.default,
        "dimension": FUNCTION_DIMENSION,
        "request_id_property": REQUEST_ID_PROPERTY,
        "metrics": relay_metrics::ALL.iter().map(metric).collect::<Vec<_>>(),
        "labels": labels,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_the_labels_own() {
        for m in relay_metrics::ALL {
            for &label in m.labels {
                for value in label_values(label).unwrap_or_default() {
                    assert!(label.allows(&value), "{}={value}", label.name());
                }
            }
        }
        assert_eq!(Label::Function.name(), FUNCTION_DIMENSION);
        assert!(label_values(Label::Limit)
            .unwrap()
            .contains(&"messages".to_string()));
    }

    #[test]
    fn every_metric_but_the_gateways_has_its_writers() {
        for m in relay_metrics::ALL {
            let gateway_only = m.recorded_by == relay_metrics::GATEWAY;
            assert_eq!(writers(m).is_empty(), gateway_only, "{}", m.name);
        }
        assert_eq!(writers(&relay_metrics::FRAMES), ["connection"]);
        assert_eq!(
            writers(&relay_metrics::COLD_STARTS).len(),
            Function::ALL.len()
        );
    }

    #[test]
    fn metrics_switch() {
        let on = |v: Option<&str>| {
            let v = v.map(str::to_string);
            metrics_enabled(&Env::new(&move |_| v.clone()))
        };
        assert!(on(None).unwrap());
        assert!(!on(Some("OFF")).unwrap());
        assert!(on(Some("maybe")).is_err());
    }
}
