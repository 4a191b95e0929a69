//! Every metric the relay records, declared once: name, kind, labels and meaning. The recording
//! functions below are the only callers of the `metrics` facade, so no call site can invent a
//! name or a label; docs/operations.md's table is generated from [`ALL`], and the label rule test
//! holds every exported series against [`Label::allows`].
//!
//! Labels are bounded sets (route keys, frame actions, error codes, limit names, dependency
//! operations): never a user id, username, connection id, IP or body. With no recorder installed
//! (`RELAY_METRICS=off`) every call is a no-op of the facade.

use std::time::Duration;

use crate::routes::{Function, HttpRoute};

/// What a metric counts or measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
            Self::Histogram => "histogram",
        }
    }
}

/// A label and the bounded set of values it takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Label {
    /// An HTTP route key of the route table (`POST /v1/users`), or `unmatched`.
    Route,
    /// `2xx`, `3xx`, `4xx` or `5xx`.
    StatusClass,
    /// A client frame's action (`send`, `fetch`, …), `$connect`, `$disconnect`, or `invalid` for
    /// a frame that does not parse.
    Action,
    /// `ok`, or the error code answered (docs/api.md §3).
    Outcome,
    /// What happened to messages: `stored`, `pushed`, `fetched`, `dropped`, `expired`.
    Event,
    /// A rate limit's name (`messages`, `bundle_target`, …: its variable without `RATE_LIMIT_`).
    Limit,
    /// `redis`, `dynamodb`, `s3` or `management_api`.
    Dependency,
    /// The operation called: `command` or `pipeline` for Redis, the API's operation name
    /// (`GetItem`, `PostToConnection`, …) for the AWS services.
    Operation,
    /// The function (`users`, `keys`, `connection`, `attachments`, `groups`), or `gateway`.
    Function,
}

/// Values of [`Label::StatusClass`].
pub const STATUS_CLASSES: [&str; 4] = ["2xx", "3xx", "4xx", "5xx"];
/// Values of [`Label::Action`] besides the client frames' actions.
pub const EVENT_ACTIONS: [&str; 3] = ["$connect", "$disconnect", "invalid"];
/// Values of [`Label::Event`].
pub const MESSAGE_EVENTS: [&str; 5] = ["stored", "pushed", "fetched", "dropped", "expired"];
/// Values of [`Label::Dependency`].
pub const DEPENDENCIES: [&str; 4] = ["redis", "dynamodb", "s3", "management_api"];
/// The route label of a request that matches no route (its path is never a label).
pub const UNMATCHED_ROUTE: &str = "unmatched";
/// The function label of the local gateway's own series.
pub const GATEWAY: &str = "gateway";

impl Label {
    pub fn name(self) -> &'static str {
        match self {
            Self::Route => "route",
            Self::StatusClass => "status_class",
            Self::Action => "action",
            Self::Outcome => "outcome",
            Self::Event => "event",
            Self::Limit => "limit",
            Self::Dependency => "dependency",
            Self::Operation => "operation",
            Self::Function => "function",
        }
    }

    /// Whether `value` is one of the label's values: the rule every exported series keeps.
    pub fn allows(self, value: &str) -> bool {
        match self {
            Self::Route => {
                value == UNMATCHED_ROUTE || HttpRoute::ALL.iter().any(|r| r.key() == value)
            }
            Self::StatusClass => STATUS_CLASSES.contains(&value),
            Self::Action => {
                EVENT_ACTIONS.contains(&value) || crate::frames::ACTIONS.contains(&value)
            }
            Self::Outcome => value == "ok" || crate::error::CODES.contains(&value),
            Self::Event => MESSAGE_EVENTS.contains(&value),
            Self::Limit => crate::config::RateLimits::SETTINGS
                .iter()
                .any(|s| s.var.strip_prefix("RATE_LIMIT_") == Some(&value.to_uppercase())),
            Self::Dependency => DEPENDENCIES.contains(&value),
            // An AWS operation name is a word in CamelCase; nothing a caller sends reaches it.
            Self::Operation => {
                value == "command"
                    || value == "pipeline"
                    || (value.len() <= 40
                        && value.starts_with(|c: char| c.is_ascii_uppercase())
                        && value.chars().all(|c| c.is_ascii_alphanumeric()))
            }
            Self::Function => value == GATEWAY || Function::ALL.iter().any(|f| f.name() == value),
        }
    }
}

/// One metric.
#[derive(Debug, Clone, Copy)]
pub struct Metric {
    /// The name as exported (Prometheus and CloudWatch alike).
    pub name: &'static str,
    pub kind: Kind,
    pub labels: &'static [Label],
    /// What it counts: the table's meaning column and Prometheus' HELP line.
    pub help: &'static str,
    /// Where it is recorded: every function and the gateway, or one of them.
    pub recorded_by: &'static str,
}

macro_rules! metrics_table {
    ($( $(#[doc = $doc:literal])* $konst:ident = $name:literal, $kind:ident, [$($label:ident),*], $by:literal, $help:literal; )*) => {
        $( $(#[doc = $doc])* pub const $konst: Metric = Metric {
            name: $name,
            kind: Kind::$kind,
            labels: &[$(Label::$label),*],
            help: $help,
            recorded_by: $by,
        }; )*

        /// Every metric, in the order of the table.
        pub const ALL: &[Metric] = &[$($konst),*];
    };
}

metrics_table! {
    HTTP_REQUESTS = "relay_http_requests_total", Counter, [Route, StatusClass], "users, keys, attachments, groups",
        "HTTP requests answered, by route and status class";
    HTTP_DURATION = "relay_http_request_duration_seconds", Histogram, [Route], "users, keys, attachments, groups",
        "time from the request reaching the function to its response, by route";
    FRAMES = "relay_frames_total", Counter, [Action, Outcome], "connection",
        "WebSocket events handled (client frames, `$connect`, `$disconnect`), by action and outcome";
    FRAME_DURATION = "relay_frame_duration_seconds", Histogram, [Action], "connection",
        "time from the event reaching the function to its reply, by action";
    MESSAGES = "relay_messages_total", Counter, [Event], "connection, groups",
        "envelopes stored in inboxes, pushed to open connections, fetched, dropped by an inbox cap, or found expired";
    BUNDLE_FETCHES = "relay_bundle_fetches_total", Counter, [Outcome], "keys",
        "prekey bundle fetches, by outcome (`prekeys_exhausted` when a device had no signed prekey to give)";
    PREKEYS_EXHAUSTED = "relay_one_time_prekeys_exhausted_total", Counter, [], "keys",
        "devices handed out in a bundle without a one-time prekey (their owner should upload more)";
    RATE_LIMITED = "relay_rate_limited_total", Counter, [Limit], "every function",
        "requests and frames refused by a rate limit, by limit";
    CONNECTIONS_OPENED = "relay_connections_opened_total", Counter, [], "connection",
        "WebSocket connections accepted (`$connect` answered 200)";
    CONNECTIONS_CLOSED = "relay_connections_closed_total", Counter, [], "connection",
        "WebSocket connections gone (`$disconnect`)";
    CONNECTIONS_OPEN = "relay_connections_open", Gauge, [], "gateway",
        "WebSocket connections open on this gateway";
    DEPENDENCY_CALLS = "relay_dependency_calls_total", Counter, [Dependency, Operation, Outcome], "every function",
        "calls to Redis, DynamoDB, S3 and the Management API, by operation; outcome `ok` or `unavailable`";
    DEPENDENCY_DURATION = "relay_dependency_duration_seconds", Histogram, [Dependency], "every function",
        "time of one call to a dependency, retries included";
    COLD_STARTS = "relay_cold_starts_total", Counter, [Function], "every function and the gateway",
        "processes started (a Lambda cold start)";
}

/// The histogram buckets of the Prometheus exporter, in seconds: they hold the objectives'
/// bounds (200 ms, 500 ms) exactly, so `histogram_quantile` is exact at them.
pub const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The status class label of an HTTP status.
pub fn status_class(status: u16) -> &'static str {
    match status {
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// The route label of a route key: the key itself when the route table has it.
pub fn route_label(key: &str) -> &'static str {
    HttpRoute::from_key(key)
        .map(HttpRoute::key)
        .unwrap_or(UNMATCHED_ROUTE)
}

/// One HTTP request answered.
pub fn http_request(route: &'static str, status: u16, elapsed: Duration) {
    metrics::counter!(HTTP_REQUESTS.name, "route" => route, "status_class" => status_class(status))
        .increment(1);
    metrics::histogram!(HTTP_DURATION.name, "route" => route).record(elapsed.as_secs_f64());
}

/// One WebSocket event handled; `outcome` is `ok` or an error code.
pub fn frame(action: &'static str, outcome: &'static str, elapsed: Duration) {
    metrics::counter!(FRAMES.name, "action" => action, "outcome" => outcome).increment(1);
    metrics::histogram!(FRAME_DURATION.name, "action" => action).record(elapsed.as_secs_f64());
}

/// What happened to `n` envelopes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageEvent {
    Stored,
    Pushed,
    Fetched,
    Dropped,
    Expired,
}

impl MessageEvent {
    pub fn label(self) -> &'static str {
        match self {
            Self::Stored => "stored",
            Self::Pushed => "pushed",
            Self::Fetched => "fetched",
            Self::Dropped => "dropped",
            Self::Expired => "expired",
        }
    }
}

pub fn messages(event: MessageEvent, n: u64) {
    if n > 0 {
        metrics::counter!(MESSAGES.name, "event" => event.label()).increment(n);
    }
}

/// One bundle fetch; `outcome` is `ok` or the error code answered.
pub fn bundle_fetch(outcome: &'static str) {
    metrics::counter!(BUNDLE_FETCHES.name, "outcome" => outcome).increment(1);
}

/// `n` devices handed out without a one-time prekey.
pub fn one_time_prekeys_exhausted(n: u64) {
    if n > 0 {
        metrics::counter!(PREKEYS_EXHAUSTED.name).increment(n);
    }
}

/// One refusal by the limit named `limit` (`Limit::name`).
pub fn rate_limited(limit: &'static str) {
    metrics::counter!(RATE_LIMITED.name, "limit" => limit).increment(1);
}

pub fn connection_opened() {
    metrics::counter!(CONNECTIONS_OPENED.name).increment(1);
}

pub fn connection_closed() {
    metrics::counter!(CONNECTIONS_CLOSED.name).increment(1);
}

/// The gateway's count of open connections moved by `delta`.
pub fn connections_open(delta: f64) {
    metrics::gauge!(CONNECTIONS_OPEN.name).increment(delta);
}

/// One call to a dependency (`DEPENDENCIES`), `ok` or not. A static operation name costs no
/// allocation (Redis); the AWS SDK lends its operation names, which are copied.
pub fn dependency_call(
    dependency: &'static str,
    operation: impl Into<metrics::SharedString>,
    ok: bool,
    elapsed: Duration,
) {
    let outcome = if ok { "ok" } else { "unavailable" };
    metrics::counter!(
        DEPENDENCY_CALLS.name,
        "dependency" => dependency,
        "operation" => operation.into(),
        "outcome" => outcome
    )
    .increment(1);
    metrics::histogram!(DEPENDENCY_DURATION.name, "dependency" => dependency)
        .record(elapsed.as_secs_f64());
}

/// The process started: `function` is its [`Function`] name or [`GATEWAY`].
pub fn cold_start(function: &'static str) {
    metrics::counter!(COLD_STARTS.name, "function" => function).increment(1);
}

/// The units and help lines, given to whichever recorder is installed.
pub fn describe() {
    for m in ALL {
        let unit = if m.name.ends_with("_seconds") {
            metrics::Unit::Seconds
        } else {
            metrics::Unit::Count
        };
        match m.kind {
            Kind::Counter => metrics::describe_counter!(m.name, unit, m.help),
            Kind::Gauge => metrics::describe_gauge!(m.name, unit, m.help),
            Kind::Histogram => metrics::describe_histogram!(m.name, unit, m.help),
        }
    }
}

/// The metrics table of docs/operations.md.
pub fn table_markdown() -> String {
    let mut out =
        String::from("| metric | kind | labels | recorded by | meaning |\n|---|---|---|---|---|\n");
    for m in ALL {
        let labels = if m.labels.is_empty() {
            "none".to_string()
        } else {
            m.labels
                .iter()
                .map(|l| format!("`{}`", l.name()))
                .collect::<Vec<_>>()
                .join(", ")
        };
        out.push_str(&format!(
            "| `{}` | {} | {} | {} | {} |\n",
            m.name,
            m.kind.name(),
            labels,
            m.recorded_by,
            m.help
        ));
    }
    out
}

/// The document that carries the metrics table.
pub const TABLE_DOCUMENT: &str = "docs/operations.md";

const TABLE_BEGIN: &str = "<!-- metrics table: generated from shared/src/metrics.rs by \
`cargo run -p local-gateway --bin relay-contract -- --write`; edit that, not this table -->";
const TABLE_END: &str = "<!-- end of the generated metrics table -->";

/// `text` with its generated metrics table replaced by the code's; `None` without the markers.
pub fn regenerate_table(text: &str) -> Option<String> {
    let start = text.find(TABLE_BEGIN)?;
    let end = start + text[start..].find(TABLE_END)? + TABLE_END.len();
    Some(format!(
        "{}{TABLE_BEGIN}\n{}{TABLE_END}{}",
        &text[..start],
        table_markdown(),
        &text[end..]
    ))
}

/// The declaration of the series `name` (a histogram's `_bucket`, `_sum` and `_count` series
/// belong to it), if any.
pub fn declared(series: &str) -> Option<&'static Metric> {
    ALL.iter().find(|m| {
        m.name == series
            || (m.kind == Kind::Histogram
                && ["_bucket", "_sum", "_count"]
                    .iter()
                    .any(|s| series.strip_suffix(s) == Some(m.name)))
    })
}

/// Label names a series may carry beside its declared ones: a histogram bucket's bound, and the
/// constant labels the exporters add.
pub const EXTRA_LABELS: [&str; 2] = ["le", "function"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_prometheus_shaped() {
        let mut seen = std::collections::HashSet::new();
        for m in ALL {
            assert!(seen.insert(m.name), "{} twice", m.name);
            assert!(m.name.starts_with("relay_"));
            assert!(m.name.chars().all(|c| c.is_ascii_lowercase() || c == '_'));
            match m.kind {
                Kind::Counter => assert!(m.name.ends_with("_total"), "{}", m.name),
                Kind::Histogram => assert!(m.name.ends_with("_seconds"), "{}", m.name),
                Kind::Gauge => assert!(!m.name.ends_with("_total"), "{}", m.name),
            }
        }
    }

    #[test]
    fn labels_refuse_what_a_caller_could_choose() {
        assert!(Label::Route.allows("POST /v1/users"));
        assert!(Label::Route.allows("GET /v1/users/{user_id}/bundle"));
        assert!(!Label::Route.allows("GET /v1/users/5b0c7a2e-0000-4000-8000-000000000000/bundle"));
        assert!(Label::Action.allows("send") && Label::Action.allows("$connect"));
        assert!(!Label::Action.allows("dance"));
        assert!(Label::Outcome.allows("ok") && Label::Outcome.allows("rate_limited"));
        assert!(!Label::Outcome.allows("alice"));
        assert!(Label::Limit.allows("messages") && Label::Limit.allows("bundle_target_new"));
        assert!(!Label::Limit.allows("msg:{alice}"));
        assert!(Label::Operation.allows("GetItem") && Label::Operation.allows("pipeline"));
        assert!(!Label::Operation.allows("get item") && !Label::Operation.allows("alice"));
        assert_eq!(route_label("GET /v1/nope/x"), UNMATCHED_ROUTE);
        assert_eq!(status_class(204), "2xx");
        assert_eq!(status_class(503), "5xx");
    }

    #[test]
    fn the_metrics_table_of_operations_md_matches_the_code() {
        let text = crate::repo_file(TABLE_DOCUMENT);
        let generated = regenerate_table(&text).expect("docs/operations.md has the table markers");
        assert!(
            generated == text,
            "docs/operations.md's metrics table is out of date with shared/src/metrics.rs; run \
             `cargo run -p local-gateway --bin relay-contract -- --write`"
        );
    }

    #[test]
    fn histogram_series_belong_to_their_metric() {
        assert_eq!(
            declared("relay_http_request_duration_seconds_bucket").map(|m| m.name),
            Some(HTTP_DURATION.name)
        );
        assert!(declared("relay_http_requests_total_bucket").is_none());
        assert!(declared("process_cpu_seconds_total").is_none());
    }
}
