//! Monitoring: a real `local-gateway` process (its own metrics recorder, as `./local/up` runs it)
//! scraped by a real Prometheus with the rules of infra/prometheus/rules.yml. After a known
//! workload over HTTP and WebSocket, Prometheus' HTTP API holds exactly that workload's counts
//! (requests by route and status class, frames, messages, histogram counts), and the exposition
//! passes `promtool check metrics`. The label rule: every exported series is declared in
//! `shared::metrics`, carries only its declared labels with values of their bounded sets, and
//! nothing the workload's clients sent or were given (usernames, ids, tokens, bodies) appears.
//! `/metrics`, `/healthz` and `/readyz` are on the loopback management listener, never public;
//! readiness follows the stores, liveness does not; `RELAY_METRICS=off` exports nothing.
//! `./local/up --monitor` runs Prometheus on the gateway, keeps its history across a restart and
//! stops it with the stack.
//!
//! The gateway binary is the one `cargo build -p local-gateway` makes (./local/test builds it
//! first). Prometheus is Debian's package (`ensure_prometheus` of local/lib.sh); without it the
//! Prometheus tests are skipped with a message, unless `RELAY_REQUIRE_PROMETHEUS` is set (as
//! ./local/test sets it).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use relay_tests::client::{error_code, login, status_json};
use relay_tests::servers::{free_port, gateway_bin, servers, workspace_root};
use relay_tests::stack::{config_with_tables, test_env};
use relay_tests::{eventually_within, process, Stack, User};
use serde_json::Value;
use shared::metrics::{self, Kind, Label};

/// How long a process start or a Prometheus scrape may take on a loaded machine.
const SLOW: Duration = Duration::from_secs(60);

/// A child process killed (and reaped) when the test ends, passed or not.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn scratch_dir(tag: &str) -> PathBuf {
    relay_tests::servers::scratch_dir("relay-monitoring", tag)
}

/// A `local-gateway` process on the harness's servers (tables and Redis prefix of its own), with
/// metrics on and a management listener, and a stack attached to it.
struct Gateway {
    stack: Stack,
    management: SocketAddr,
    log: PathBuf,
    _process: Killed,
}

impl Gateway {
    /// `metrics`: the gateway's `RELAY_METRICS`.
    async fn start(dir: &Path, metrics: &str) -> Self {
        let env = test_env();
        let (config, _) = config_with_tables(&env).await;
        let public: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let management: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let log = dir.join("gateway.log");
        let s = servers();
        // The AWS endpoints and credentials are the test process's (`config_with_tables` set
        // them), inherited.
        let child = process::spawn(
            process::command(gateway_bin(), Some(&log))
                .envs(&env)
                .env("RELAY_LISTEN", public.to_string())
                .env("RELAY_MANAGEMENT_LISTEN", management.to_string())
                .env("RELAY_METRICS", metrics)
                .env("AWS_ENDPOINT_URL_DYNAMODB", &s.dynamodb_url)
                .env("AWS_ENDPOINT_URL_S3", &s.s3_url)
                .env_remove("REDIS_CLUSTER"),
        );
        let gateway = Self {
            stack: Stack::attach(public, config, &s.dynamodb_url).await,
            management,
            log,
            _process: Killed(child),
        };
        let url = gateway.management_url("/healthz");
        let http = gateway.stack.http.clone();
        eventually_within(SLOW, "the gateway's liveness answer", async || {
            http.get(&url).send().await.is_ok_and(|r| r.status() == 200)
        })
        .await;
        gateway
    }

    fn management_url(&self, path: &str) -> String {
        format!("http://{}{}", self.management, path)
    }

    async fn exposition(&self) -> String {
        let r = self
            .stack
            .http
            .get(self.management_url("/metrics"))
            .send()
            .await
            .expect("GET /metrics");
        assert_eq!(r.status(), 200, "GET /metrics:\n{}", self.output());
        let content_type = r.headers()["content-type"].to_str().unwrap().to_string();
        assert!(content_type.starts_with("text/plain"), "{content_type}");
        r.text().await.expect("exposition")
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// What the workload did, as the metrics must count it.
#[derive(Default)]
struct Expected {
    /// `relay_http_requests_total` by (route, status class).
    http: BTreeMap<(String, String), f64>,
    /// `relay_frames_total` by (action, outcome).
    frames: BTreeMap<(String, String), f64>,
    /// `relay_messages_total` by event.
    messages: BTreeMap<String, f64>,
    /// Everything the clients sent or were given that identifies them or is content.
    secrets: Vec<String>,
}

impl Expected {
    fn request(&mut self, route: &str, status: u16) {
        *self
            .http
            .entry((route.into(), metrics::status_class(status).into()))
            .or_default() += 1.0;
    }

    fn messages(&mut self, event: &str, n: usize) {
        *self.messages.entry(event.into()).or_default() += n as f64;
    }

    fn frame(&mut self, action: &str, outcome: &str) {
        *self
            .frames
            .entry((action.into(), outcome.into()))
            .or_default() += 1.0;
    }

    /// Requests per route, all status classes: the histogram's `_count`.
    fn per_route(&self) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        for ((route, _), n) in &self.http {
            *out.entry(route.clone()).or_default() += n;
        }
        out
    }

    fn per_action(&self) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        for ((action, _), n) in &self.frames {
            *out.entry(action.clone()).or_default() += n;
        }
        out
    }
}

const REGISTRATIONS: usize = 3;
const SENDS: usize = 4;
const PUSHES: usize = 2;
const BAD_LOGINS: usize = 2;

/// The known workload: a readiness check, REGISTRATIONS registrations and logins, a bundle
/// fetch, SENDS one-to-one sends over WebSocket to an offline recipient who then connects and
/// fetches them, PUSHES more sends pushed to him online, BAD_LOGINS logins with a wrong password (401), and two requests for routes
/// that do not exist (one of them `/metrics` on the public listener). It ends once both sockets'
/// `$disconnect` is handled (the gateway's open-connection gauge is back to 0).
async fn workload(gw: &Gateway) -> Expected {
    let stack = &gw.stack;
    let mut expected = Expected::default();
    let r = stack
        .http
        .get(gw.management_url("/readyz"))
        .send()
        .await
        .expect("GET /readyz");
    let status = r.status().as_u16();
    assert_eq!(status, 200, "readiness: {:?}", r.text().await);
    expected.request("GET /healthz", status);

    let mut users = Vec::new();
    for _ in 0..REGISTRATIONS {
        users.push(User::builder(stack).create().await);
        expected.request("POST /v1/users", 200);
        expected.request("POST /v1/sessions", 200);
    }
    let (alice, bob) = (&users[0], &users[1]);
    assert_eq!(alice.bundle_of(stack, &bob.user_id).await.0, 200);
    expected.request("GET /v1/users/{user_id}/bundle", 200);

    let mut a = alice.connect(stack).await;
    expected.frame("$connect", "ok");
    let send = async |a: &mut relay_tests::Ws, i: usize, expected: &mut Expected| {
        let id = format!("monitoring-message-{i}");
        let body = format!("monitoring body {i} {}", rand::random::<u64>());
        let reply = a.send_message(&bob.user_id, &id, body.as_bytes()).await;
        assert_eq!(reply["type"], "sent", "{reply}");
        expected.frame("send", "ok");
        let encoded = shared::validation::encode(body.as_bytes());
        expected.secrets.extend([encoded, body, id]);
    };
    // To bob offline: stored in his inbox, then fetched.
    for i in 0..SENDS {
        send(&mut a, i, &mut expected).await;
    }
    expected.messages("stored", SENDS);
    let mut b = bob.connect(stack).await;
    expected.frame("$connect", "ok");
    assert_eq!(b.fetch_all().await.len(), SENDS);
    expected.frame("fetch", "ok");
    expected.messages("fetched", SENDS);
    // To bob online, his inbox empty: handed to his socket without being stored.
    for i in SENDS..SENDS + PUSHES {
        send(&mut a, i, &mut expected).await;
    }
    expected.messages("pushed", PUSHES);
    let mut pushed = Vec::new();
    while pushed.len() < PUSHES {
        let frame = b.recv().await;
        assert_eq!(frame["type"], "messages", "{frame}");
        pushed.extend(frame["messages"].as_array().expect("messages").clone());
    }
    assert_eq!(pushed.len(), PUSHES);
    for ws in [a, b] {
        ws.close().await;
        expected.frame("$disconnect", "ok");
    }

    for _ in 0..BAD_LOGINS {
        let (status, body) = login(stack, &alice.username, "not the password").await;
        assert_eq!((status, error_code(&body)), (401, "invalid_credentials"));
        expected.request("POST /v1/sessions", status);
    }
    for path in ["/v1/nope", "/metrics"] {
        let (status, body) =
            status_json(stack.http.get(stack.url(path)).send().await.unwrap()).await;
        assert_eq!((status, error_code(&body)), (404, "not_found"), "{path}");
        expected.request(metrics::UNMATCHED_ROUTE, status);
    }

    for user in &users {
        expected.secrets.extend([
            user.username.clone(),
            user.user_id.clone(),
            user.password.clone(),
            user.access.clone(),
            user.refresh.clone(),
            user.identity.public(),
        ]);
    }
    expected.secrets.push("127.0.0.1".into());
    eventually_within(SLOW, "both sockets' $disconnect handled", async || {
        gw.exposition()
            .await
            .lines()
            .any(|l| l == "relay_connections_open 0")
    })
    .await;
    expected
}

/// One sample line of the text exposition.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

/// The samples of a Prometheus text exposition (comments and blank lines skipped); label values
/// unescaped.
fn samples(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|line| {
            let end = line.find(['{', ' ']).expect("a sample line");
            let name = line[..end].to_string();
            let (labels, rest) = match line[end..].strip_prefix('{') {
                Some(inner) => parse_labels(inner),
                None => (Vec::new(), &line[end..]),
            };
            let value = rest
                .split_whitespace()
                .next()
                .expect("a value")
                .replace("+Inf", "inf")
                .parse()
                .unwrap_or_else(|_| panic!("not a number in {line:?}"));
            Sample {
                name,
                labels,
                value,
            }
        })
        .collect()
}

/// `k="v",…}` and what follows the `}`.
fn parse_labels(mut rest: &str) -> (Vec<(String, String)>, &str) {
    let mut labels = Vec::new();
    loop {
        rest = rest.trim_start_matches(',');
        if let Some(after) = rest.strip_prefix('}') {
            return (labels, after);
        }
        let (key, quoted) = rest.split_once("=\"").expect("key=\"value\"");
        let mut value = String::new();
        let mut chars = quoted.char_indices();
        let end = loop {
            match chars.next().expect("an unterminated label value") {
                (i, '"') => break i,
                (_, '\\') => match chars.next().expect("an escape").1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (_, c) => value.push(c),
            }
        };
        labels.push((key.to_string(), value));
        rest = &quoted[end + 1..];
    }
}

/// The rule every exported series keeps: declared name, declared labels (or `EXTRA_LABELS`),
/// values of their bounded sets.
fn assert_label_rule(text: &str) {
    for line in text.lines().filter(|l| l.starts_with("# ")) {
        let name = line.split_whitespace().nth(2).expect("a metric name");
        assert!(
            metrics::declared(name).is_some(),
            "undeclared metric: {line}"
        );
    }
    let all = samples(text);
    assert!(!all.is_empty(), "an empty exposition proves nothing");
    for s in &all {
        let metric = metrics::declared(&s.name)
            .unwrap_or_else(|| panic!("series {} is declared nowhere", s.name));
        assert!(s.value >= 0.0, "{s:?}: no relay metric goes below zero");
        for (key, value) in &s.labels {
            if key == "le" {
                assert!(
                    metric.kind == Kind::Histogram && s.name.ends_with("_bucket"),
                    "le on {}",
                    s.name
                );
                assert!(
                    value == "+Inf" || value.parse::<f64>().is_ok(),
                    "le={value}"
                );
                continue;
            }
            let label = metric
                .labels
                .iter()
                .find(|l| l.name() == key)
                .copied()
                .or_else(|| {
                    (metrics::EXTRA_LABELS.contains(&key.as_str()) && key == "function")
                        .then_some(Label::Function)
                })
                .unwrap_or_else(|| panic!("label {key} is not one of {}'s", s.name));
            assert!(
                label.allows(value),
                "{}{{{key}={value:?}}}: not a value of the label's bounded set",
                s.name
            );
        }
    }
}

#[tokio::test]
async fn every_series_is_declared_with_bounded_labels_and_nothing_of_the_users() {
    let dir = scratch_dir("labels");
    let gw = Gateway::start(&dir, "on").await;
    let expected = workload(&gw).await;
    let text = gw.exposition().await;
    assert_label_rule(&text);
    for secret in &expected.secrets {
        assert!(
            !text.contains(secret.as_str()),
            "{secret:?} of the workload appears in the exposition"
        );
    }
    let names: std::collections::BTreeSet<String> =
        samples(&text).into_iter().map(|s| s.name).collect();
    for must in [
        "relay_cold_starts_total",
        "relay_connections_open",
        "relay_http_requests_total",
    ] {
        assert!(names.contains(must), "{must} missing from:\n{text}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The prometheus binary: `RELAY_PROMETHEUS`, else `prometheus` on the PATH.
fn prometheus_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("RELAY_PROMETHEUS") {
        return Some(PathBuf::from(p));
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("prometheus"))
            .find(|p| p.is_file())
    })
}

/// The prometheus binary; `None` (the test then skips, saying so) only when there is none and
/// `RELAY_REQUIRE_PROMETHEUS` is unset.
fn prometheus_or_skip(test: &str) -> Option<PathBuf> {
    let bin = prometheus_bin();
    if bin.is_none() {
        assert!(
            std::env::var_os("RELAY_REQUIRE_PROMETHEUS").is_none(),
            "prometheus not found (RELAY_REQUIRE_PROMETHEUS is set): install Debian's \
             `prometheus` (ensure_prometheus of local/lib.sh), or set RELAY_PROMETHEUS"
        );
        eprintln!(
            "SKIPPED {test}: no prometheus binary (install Debian's `prometheus`, or run \
             ./local/test, which does)"
        );
    }
    bin
}

/// A Prometheus scraping `target` every second with the relay's rules; its data in `dir`.
fn start_prometheus(bin: &Path, dir: &Path, target: SocketAddr) -> (SocketAddr, Killed) {
    let rules = workspace_root().join("infra/prometheus/rules.yml");
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {}\n\
             scrape_configs:\n  - job_name: relay-gateway\n    static_configs:\n      - targets: ['{target}']\n",
            rules.display()
        ),
    )
    .expect("prometheus.yml");
    let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let child = process::spawn(
        process::command(bin, Some(&dir.join("prometheus.log"))).args([
            format!("--config.file={}", config.display()),
            format!("--storage.tsdb.path={}", dir.join("data").display()),
            format!("--web.listen-address={addr}"),
        ]),
    );
    (addr, Killed(child))
}

/// The result vector of an instant query: each series' labels and value.
async fn query(
    http: &reqwest::Client,
    prometheus: SocketAddr,
    q: &str,
) -> Vec<(BTreeMap<String, String>, f64)> {
    let r = http
        .get(format!("http://{prometheus}/api/v1/query"))
        .query(&[("query", q)])
        .send()
        .await
        .expect("Prometheus query");
    let body: Value = r.json().await.expect("Prometheus answer");
    assert_eq!(body["status"], "success", "{q}: {body}");
    body["data"]["result"]
        .as_array()
        .expect("a vector")
        .iter()
        .map(|s| {
            let labels = s["metric"]
                .as_object()
                .expect("labels")
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect();
            let value = s["value"][1].as_str().expect("value").parse().expect("f64");
            (labels, value)
        })
        .collect()
}

/// A query's series keyed by the values of `by`, series of zero left out (a counter that
/// stayed at zero counts as absent).
async fn by_labels(
    http: &reqwest::Client,
    prometheus: SocketAddr,
    q: &str,
    by: &[&str],
) -> BTreeMap<Vec<String>, f64> {
    query(http, prometheus, q)
        .await
        .into_iter()
        .filter(|(_, v)| *v != 0.0)
        .map(|(labels, v)| {
            (
                by.iter()
                    .map(|k| labels.get(*k).cloned().unwrap_or_default())
                    .collect(),
                v,
            )
        })
        .collect()
}

fn keyed2(m: &BTreeMap<(String, String), f64>) -> BTreeMap<Vec<String>, f64> {
    m.iter()
        .map(|((a, b), v)| (vec![a.clone(), b.clone()], *v))
        .collect()
}

fn keyed1(m: &BTreeMap<String, f64>) -> BTreeMap<Vec<String>, f64> {
    m.iter().map(|(a, v)| (vec![a.clone()], *v)).collect()
}

fn unix_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("time")
        .as_secs_f64()
}

#[tokio::test]
async fn prometheus_scrapes_exactly_the_workload() {
    let Some(bin) = prometheus_or_skip("prometheus_scrapes_exactly_the_workload") else {
        return;
    };
    let dir = scratch_dir("prometheus");
    let gw = Gateway::start(&dir, "on").await;
    let (prometheus, _prometheus_process) = start_prometheus(&bin, &dir, gw.management);
    let http = gw.stack.http.clone();
    let log = dir.join("prometheus.log");
    let up = async || {
        query(&http, prometheus, "up{job=\"relay-gateway\"}")
            .await
            .first()
            .is_some_and(|(_, v)| *v == 1.0)
    };
    eventually_within(SLOW, "Prometheus up and scraping the gateway", async || {
        http.get(format!("http://{prometheus}/-/ready"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
            && up().await
    })
    .await;

    let expected = workload(&gw).await;
    let finished = unix_secs();
    // A scrape that started after the workload ended holds all of it.
    eventually_within(SLOW, "a scrape after the workload", async || {
        query(&http, prometheus, "timestamp(up{job=\"relay-gateway\"})")
            .await
            .first()
            .is_some_and(|(_, t)| *t > finished)
    })
    .await;

    let report = |what: &str| {
        format!(
            "{what}\ngateway log:\n{}\nprometheus log:\n{}",
            gw.output(),
            std::fs::read_to_string(&log).unwrap_or_default()
        )
    };
    assert_eq!(
        by_labels(
            &http,
            prometheus,
            "relay_http_requests_total",
            &["route", "status_class"]
        )
        .await,
        keyed2(&expected.http),
        "{}",
        report("requests by route and status class")
    );
    assert_eq!(
        by_labels(
            &http,
            prometheus,
            "relay_http_request_duration_seconds_count",
            &["route"]
        )
        .await,
        keyed1(&expected.per_route()),
        "request histogram counts by route"
    );
    assert_eq!(
        by_labels(
            &http,
            prometheus,
            "relay_http_request_duration_seconds_bucket{le=\"+Inf\"}",
            &["route"]
        )
        .await,
        keyed1(&expected.per_route()),
        "a real histogram: its +Inf bucket holds every request"
    );
    assert_eq!(
        by_labels(
            &http,
            prometheus,
            "relay_frames_total",
            &["action", "outcome"]
        )
        .await,
        keyed2(&expected.frames),
        "frames by action and outcome"
    );
    assert_eq!(
        by_labels(
            &http,
            prometheus,
            "relay_frame_duration_seconds_count",
            &["action"]
        )
        .await,
        keyed1(&expected.per_action()),
        "frame histogram counts by action"
    );
    assert_eq!(
        by_labels(&http, prometheus, "relay_messages_total", &["event"]).await,
        keyed1(&expected.messages),
        "messages by event"
    );
    assert_eq!(
        by_labels(
            &http,
            prometheus,
            "relay_bundle_fetches_total",
            &["outcome"]
        )
        .await,
        keyed1(&BTreeMap::from([("ok".to_string(), 1.0)])),
        "bundle fetches"
    );
    // Every request above reached Redis and DynamoDB: their calls are counted and timed.
    let calls = by_labels(
        &http,
        prometheus,
        "sum by (dependency) (relay_dependency_calls_total)",
        &["dependency"],
    )
    .await;
    let timed = by_labels(
        &http,
        prometheus,
        "sum by (dependency) (relay_dependency_duration_seconds_count)",
        &["dependency"],
    )
    .await;
    for dependency in ["redis", "dynamodb"] {
        let key = vec![dependency.to_string()];
        assert!(
            calls.get(&key).is_some_and(|n| *n > 0.0),
            "{dependency}: {calls:?}"
        );
        assert_eq!(
            calls.get(&key),
            timed.get(&key),
            "{dependency}: one duration per call"
        );
    }
    let connections = |q: &'static str| {
        let http = http.clone();
        async move { query(&http, prometheus, q).await.first().map(|(_, v)| *v) }
    };
    assert_eq!(
        connections("relay_connections_opened_total").await,
        Some(2.0)
    );
    assert_eq!(
        connections("relay_connections_closed_total").await,
        Some(2.0)
    );
    assert_eq!(connections("relay_connections_open").await, Some(0.0));
    assert_eq!(
        connections("relay_cold_starts_total{function=\"gateway\"}").await,
        Some(1.0)
    );

    // The recording rules evaluate over these series (a rate needs two scrapes of a series).
    eventually_within(SLOW, "the per-route recording rules", async || {
        let rate = query(&http, prometheus, "route:relay_http_requests:rate1m").await;
        let p95 = query(
            &http,
            prometheus,
            "route:relay_http_request_duration_seconds:p95_1m",
        )
        .await;
        let frames = query(&http, prometheus, "action:relay_frames:rate1m").await;
        let has = |v: &[(BTreeMap<String, String>, f64)], k: &str, want: &str| {
            v.iter()
                .any(|(l, _)| l.get(k).map(String::as_str) == Some(want))
        };
        has(&rate, "route", "POST /v1/users")
            && has(&p95, "route", "POST /v1/sessions")
            && has(&frames, "action", "send")
    })
    .await;

    // promtool, beside prometheus in Debian's package, accepts the exposition.
    let promtool = bin.with_file_name("promtool");
    let text = gw.exposition().await;
    let mut child = std::process::Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {promtool:?}: {e}"));
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), text.as_bytes()).unwrap();
    let out = child.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool check metrics refused the exposition: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    drop(_prometheus_process);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn with_relay_metrics_off_the_gateway_exports_nothing() {
    let dir = scratch_dir("off");
    let gw = Gateway::start(&dir, "off").await;
    let r = gw
        .stack
        .http
        .get(gw.management_url("/metrics"))
        .send()
        .await
        .unwrap();
    let (status, body) = status_json(r).await;
    assert_eq!(
        (status, error_code(&body)),
        (404, "not_found"),
        "{}",
        gw.output()
    );
    let r = gw
        .stack
        .http
        .get(gw.management_url("/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "readiness does not depend on metrics");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn monitoring_is_on_the_management_listener_only() {
    let stack = Stack::start().await;
    let management = stack.management.expect("a management listener");
    // The public listener: no such routes.
    for path in ["/metrics", "/readyz"] {
        let (status, body) =
            status_json(stack.http.get(stack.url(path)).send().await.unwrap()).await;
        assert_eq!((status, error_code(&body)), (404, "not_found"), "{path}");
    }
    let get = |path: &str| {
        let http = stack.http.clone();
        let url = format!("http://{management}{path}");
        async move { status_json(http.get(url).send().await.unwrap()).await }
    };
    assert_eq!(get("/healthz").await.0, 200);
    let (status, body) = get("/readyz").await;
    assert_eq!(status, 200, "{body}");
    // In-process gateways (this test binary's) install no recorder: it is the process's.
    let (status, body) = get("/metrics").await;
    assert_eq!((status, error_code(&body)), (404, "not_found"));
}

#[tokio::test]
async fn readiness_follows_the_stores_and_liveness_does_not() {
    let (port, mut redis) = relay_tests::servers::start_redis();
    let url = format!("redis://127.0.0.1:{port}");
    let stack = Stack::with_env(&[("REDIS_URL", url.as_str())]).await;
    let management = stack.management.expect("a management listener");
    let get = |path: &str| {
        let http = stack.http.clone();
        let url = format!("http://{management}{path}");
        async move { status_json(http.get(url).send().await.unwrap()).await }
    };
    assert_eq!(get("/readyz").await.0, 200);
    redis.kill().unwrap();
    redis.wait().unwrap();
    let (status, body) = get("/readyz").await;
    assert_eq!((status, error_code(&body)), (503, "unavailable"), "{body}");
    assert!(
        !body.to_string().contains(&port.to_string()),
        "internal detail leaked: {body}"
    );
    assert_eq!(get("/healthz").await.0, 200, "liveness asks no store");
}

/// `./local/up --monitor` in a process group of its own, SIGKILLed whole if the test fails.
struct UpMonitor {
    child: Child,
    log: PathBuf,
}

impl Drop for UpMonitor {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            // SAFETY: a signal to the process group we created.
            unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
            let _ = self.child.wait();
        }
    }
}

impl UpMonitor {
    fn start(data: &Path, ports: &[u16; 6]) -> Self {
        use std::os::unix::process::CommandExt;
        let [gateway, management, redis, dynamodb, s3, prometheus] = ports;
        let log = data.join(format!("up-{:x}.log", rand::random::<u32>()));
        let file = std::fs::File::create(&log).expect("log");
        let child = std::process::Command::new(workspace_root().join("local/up"))
            .arg("--monitor")
            .env("RELAY_DATA_DIR", data)
            .env("RELAY_LISTEN", format!("127.0.0.1:{gateway}"))
            .env("RELAY_MANAGEMENT_LISTEN", format!("127.0.0.1:{management}"))
            .env("RELAY_REDIS_PORT", redis.to_string())
            .env("RELAY_DYNAMODB_PORT", dynamodb.to_string())
            .env("RELAY_S3_PORT", s3.to_string())
            .env("RELAY_PROMETHEUS_PORT", prometheus.to_string())
            .env("RELAY_GATEWAY_BIN", gateway_bin())
            .env("ARGON2_M_KIB", "4096")
            .env("ARGON2_T", "1")
            .envs(relay_tests::stack::limits_off())
            .env_remove("REDIS_URL")
            .env_remove("AWS_ENDPOINT_URL_DYNAMODB")
            .env_remove("AWS_ENDPOINT_URL_S3")
            .env_remove("RELAY_TABLE_PREFIX")
            .env_remove("RELAY_REDIS_PREFIX")
            .env_remove("RELAY_METRICS")
            .stdin(std::process::Stdio::null())
            .stdout(file.try_clone().expect("log"))
            .stderr(file)
            .process_group(0)
            .spawn()
            .expect("spawn ./local/up --monitor");
        Self { child, log }
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether the script still runs (an exited child stays a zombie until reaped).
    fn running(&self) -> bool {
        std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))
            .ok()
            .and_then(|stat| {
                // The state follows the command name's closing parenthesis.
                let after = &stat[stat.rfind(')')? + 1..];
                after.split_whitespace().next().map(|state| state != "Z")
            })
            .unwrap_or(false)
    }

    /// SIGTERM to the script, as Ctrl-C would: it stops everything it started, Prometheus too.
    fn terminate(mut self) {
        let group = self.child.id() as i32;
        // SAFETY: a signal to our own child.
        unsafe { libc::kill(group, libc::SIGTERM) };
        let deadline = std::time::Instant::now() + SLOW;
        while self.child.try_wait().expect("wait").is_none() {
            assert!(
                std::time::Instant::now() < deadline,
                "./local/up did not stop"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // SAFETY: signal 0 only asks whether the group has a process left.
        while unsafe { libc::kill(-group, 0) } == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "processes of ./local/up --monitor still run:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_up_monitor_scrapes_the_gateway_keeps_the_history_and_stops_with_the_stack() {
    if prometheus_or_skip(
        "local_up_monitor_scrapes_the_gateway_keeps_the_history_and_stops_with_the_stack",
    )
    .is_none()
    {
        return;
    }
    let data = scratch_dir("up");
    let ports = [(); 6].map(|()| free_port());
    let prometheus: SocketAddr = ([127, 0, 0, 1], ports[5]).into();
    let http = reqwest::Client::new();
    let scraped = async |up: &UpMonitor| {
        eventually_within(
            Duration::from_secs(120),
            "Prometheus scraping the gateway",
            async || {
                assert!(
                    up.running(),
                    "./local/up --monitor exited:\n{}",
                    up.output()
                );
                let ready = http
                    .get(format!("http://{prometheus}/-/ready"))
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 200);
                ready
                    && query(
                        &http,
                        prometheus,
                        "relay_cold_starts_total{function=\"gateway\"}",
                    )
                    .await
                    .first()
                    .is_some_and(|(_, v)| *v == 1.0)
            },
        )
        .await;
    };

    let up = UpMonitor::start(&data, &ports);
    scraped(&up).await;
    let first_run = unix_secs();
    assert!(
        up.output()
            .contains(&format!("Prometheus UI on http://{prometheus}")),
        "the UI's URL is printed:\n{}",
        up.output()
    );
    up.terminate();
    assert!(
        data.join("prometheus/wal").is_dir(),
        "the history is kept in the data directory"
    );

    // Started again on the same data: the first run's samples are still there.
    let up = UpMonitor::start(&data, &ports);
    scraped(&up).await;
    let r: Value = http
        .get(format!("http://{prometheus}/api/v1/query"))
        .query(&[
            ("query", "up{job=\"relay-gateway\"}".to_string()),
            ("time", format!("{first_run:.3}")),
        ])
        .send()
        .await
        .expect("query")
        .json()
        .await
        .expect("json");
    assert_eq!(
        r["data"]["result"][0]["value"][1], "1",
        "the first run's scrapes survive the restart: {r}"
    );
    up.terminate();
    let _ = std::fs::remove_dir_all(&data);
}
