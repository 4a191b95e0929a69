//! The full cycle with every function running as its own Lambda binary under
//! `cargo lambda watch`, behind the gateway in Lambda mode: the code path AWS runs, including
//! pushes through the Management API, and the CloudWatch Embedded Metric Format lines the
//! functions write on stdout beside their JSON logs, as on Lambda.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use relay_tests::client::Identity;
use relay_tests::servers::{free_port, workspace_root};
use relay_tests::Ws;
use serde_json::json;
use shared::validation::{base64, encode};

/// `cargo lambda watch` and the functions it starts, stopped as a process group.
struct Watch(Child);

impl Drop for Watch {
    fn drop(&mut self) {
        let group = -(self.0.id() as i32);
        // SAFETY: signals to the process group this test created.
        unsafe {
            libc::kill(group, libc::SIGTERM);
        }
        // A moment to stop cleanly, then whatever is left is killed.
        let deadline = std::time::Instant::now() + Duration::from_millis(300);
        while std::time::Instant::now() < deadline {
            let exited = matches!(self.0.try_wait(), Ok(Some(_)));
            if exited && unsafe { libc::kill(group, 0) } != 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        unsafe {
            libc::kill(-(self.0.id() as i32), libc::SIGKILL);
        }
        let _ = self.0.wait();
    }
}

fn cargo_lambda_dir() -> PathBuf {
    let dir = std::env::var_os("CARGO_LAMBDA_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".local/venv-infra/bin"));
    assert!(
        dir.join("cargo-lambda").exists(),
        "cargo-lambda not found in {dir:?}: ./local/test installs it (infra/venv)"
    );
    dir
}

#[tokio::test]
async fn full_cycle_under_cargo_lambda_watch() {
    // The harness's stack environment (prefixes, secret, cheap hashing, limits off), as a file.
    let mut env = relay_tests::stack::test_env();
    let prefix = env["RELAY_TABLE_PREFIX"].clone();
    relay_tests::stack::set_aws_env();
    let dynamodb = shared::storage::dynamodb::client_from_env().await;
    shared::storage::dynamodb::tables::create_tables(&dynamodb, &prefix)
        .await
        .unwrap();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gateway_addr = listener.local_addr().unwrap();
    // The functions push through the Management API, which has a loopback listener of its own.
    let management_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let management_addr = management_listener.local_addr().unwrap();
    let invoke_port = free_port();
    let env_file = std::env::temp_dir().join(format!("{prefix}.env"));
    for var in [
        "AWS_ENDPOINT_URL_DYNAMODB",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_REGION",
    ] {
        env.insert(var.into(), std::env::var(var).unwrap());
    }
    env.insert(
        "WS_MANAGEMENT_ENDPOINT".into(),
        format!("http://{management_addr}"),
    );
    // As the template sets them: JSON log lines, and the metrics in a namespace of their own.
    let namespace = format!("Relay/{prefix}");
    env.insert("RELAY_LOG_FORMAT".into(), "json".into());
    env.insert("RELAY_METRICS_NAMESPACE".into(), namespace.clone());
    let lines: String = env.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
    std::fs::write(&env_file, lines).unwrap();
    let path = format!(
        "{}:{}",
        cargo_lambda_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // The functions' stdout and stderr (logs and metrics) and cargo lambda's own output.
    let log_path = std::env::temp_dir().join(format!("{prefix}-watch.log"));
    let log = std::fs::File::create(&log_path).unwrap();
    let _watch = Watch(
        Command::new("cargo")
            .args([
                "lambda",
                "watch",
                "--ignore-changes",
                "-A",
                "127.0.0.1",
                "-P",
                &invoke_port.to_string(),
            ])
            .arg("--env-file")
            .arg(&env_file)
            .current_dir(workspace_root())
            .env("PATH", path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("cargo lambda watch"),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while std::net::TcpStream::connect(("127.0.0.1", invoke_port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "cargo lambda watch did not start"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let gateway = local_gateway::lambda_mode(
        &format!("http://127.0.0.1:{invoke_port}"),
        shared::config::DEFAULT_MAX_REQUEST_BYTES,
    );
    tokio::spawn(local_gateway::serve_management(
        management_listener,
        gateway.clone(),
        std::future::pending(),
    ));
    tokio::spawn(local_gateway::serve(
        listener,
        gateway,
        std::future::pending(),
    ));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()
        .unwrap();
    let base = format!("http://{gateway_addr}");

    // Users function: register and log in.
    let mut users = Vec::new();
    for name in ["alice", "bob"] {
        let id = Identity::new();
        let username = format!("{name}_{prefix}");
        let r = http
            .post(format!("{base}/v1/users"))
            .json(&id.registration(&username, "password123", 2, 1))
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            200,
            "register {name}: {}",
            r.text().await.unwrap()
        );
        let r = http
            .post(format!("{base}/v1/sessions"))
            .json(&json!({"username": username, "password": "password123"}))
            .send()
            .await
            .unwrap();
        let tokens: serde_json::Value = r.json().await.unwrap();
        users.push((
            tokens["user_id"].as_str().unwrap().to_string(),
            tokens["access_token"].as_str().unwrap().to_string(),
        ));
    }
    let ((alice_id, alice_token), (bob_id, bob_token)) = (users[0].clone(), users[1].clone());
    // Keys function: a bundle.
    let r = http
        .get(format!("{base}/v1/users/{bob_id}/bundle"))
        .bearer_auth(&alice_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let bundle: serde_json::Value = r.json().await.unwrap();
    assert_eq!(bundle["kyber_prekey"]["key_id"], 100);
    // Connection function: send while Bob is offline, then fetch.
    let ws = |token: &str| format!("ws://{gateway_addr}/ws?token={token}");
    assert_eq!(Ws::connect(&ws("bogus")).await.err(), Some(401));
    let mut a = Ws::connect(&ws(&alice_token))
        .await
        .expect("alice connects");
    let reply = a.send_message(&bob_id, "1", b"offline hello").await;
    assert_eq!(reply["delivery"], "queued");
    let mut b = Ws::connect(&ws(&bob_token)).await.expect("bob connects");
    let got = b.fetch_all().await;
    assert_eq!(got.len(), 1);
    assert_eq!(
        base64("b", got[0]["body"].as_str().unwrap()).unwrap(),
        b"offline hello"
    );
    assert_eq!(got[0]["from"], alice_id.as_str());
    // Online delivery: pushed by the connection function through the Management API.
    let reply = a.send_message(&bob_id, "2", b"online hello").await;
    assert_eq!(reply["delivery"], "delivered");
    let frame = b
        .recv_within(Duration::from_secs(30))
        .await
        .expect("pushed frame");
    assert_eq!(frame["messages"][0]["body"], encode(b"online hello"));
    assert_eq!(
        http.get(format!("{base}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let _ = std::fs::remove_file(env_file);

    // The metrics of that workload, as EMF lines on the functions' stdout: one line per label set
    // and invocation, so each request and frame is a line of its own, tagged with its request id.
    // Never a user id, username, token or connection id.
    let secrets = [
        alice_id.clone(),
        bob_id.clone(),
        alice_token.clone(),
        bob_token.clone(),
        format!("alice_{prefix}"),
        format!("bob_{prefix}"),
    ];
    let expected = |emf: &Emf| -> Result<(), String> {
        for function in ["users", "keys", "connection"] {
            emf.at_least("relay_cold_starts_total", &[("function", function)], 1)?;
        }
        emf.exactly(
            "relay_http_requests_total",
            &[("route", "POST /v1/users"), ("status_class", "2xx")],
            2,
        )?;
        emf.exactly(
            "relay_http_requests_total",
            &[("route", "POST /v1/sessions"), ("status_class", "2xx")],
            2,
        )?;
        emf.exactly(
            "relay_http_requests_total",
            &[
                ("route", "GET /v1/users/{user_id}/bundle"),
                ("status_class", "2xx"),
            ],
            1,
        )?;
        emf.at_least(
            "relay_http_requests_total",
            &[("route", "GET /healthz"), ("status_class", "2xx")],
            1,
        )?;
        emf.exactly(
            "relay_http_request_duration_seconds",
            &[("route", "POST /v1/sessions")],
            2,
        )?;
        emf.exactly("relay_bundle_fetches_total", &[("outcome", "ok")], 1)?;
        emf.exactly(
            "relay_frames_total",
            &[("action", "send"), ("outcome", "ok")],
            2,
        )?;
        emf.exactly("relay_frame_duration_seconds", &[("action", "send")], 2)?;
        emf.exactly(
            "relay_frames_total",
            &[("action", "$connect"), ("outcome", "ok")],
            2,
        )?;
        emf.exactly("relay_connections_opened_total", &[], 2)?;
        for event in ["stored", "fetched", "pushed"] {
            emf.at_least("relay_messages_total", &[("event", event)], 1)?;
        }
        for dependency in ["redis", "dynamodb", "management_api"] {
            emf.at_least(
                "relay_dependency_calls_total",
                &[("dependency", dependency)],
                1,
            )?;
        }
        // Flushed after each invocation: a request is one line, the only request of its id.
        emf.one_per_invocation("relay_http_requests_total")?;
        emf.one_per_invocation("relay_frames_total")
    };
    // The lines reach the file through cargo lambda: wait for them, briefly.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let emf = loop {
        let text = std::fs::read_to_string(&log_path).unwrap();
        let emf = Emf::parse(&text, &namespace, &secrets)
            .unwrap_or_else(|e| panic!("{e}\n(the functions' output is in {log_path:?})"));
        match expected(&emf) {
            Ok(()) => break emf,
            Err(e) if std::time::Instant::now() > deadline => panic!(
                "{e}; the functions wrote {} EMF lines (in {log_path:?})",
                emf.docs.len()
            ),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    assert!(emf.docs.len() >= 10, "{} EMF lines", emf.docs.len());
}

/// The EMF documents of the functions' output, each checked against the specification
/// (https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html)
/// and against `shared::metrics`.
struct Emf {
    docs: Vec<serde_json::Map<String, serde_json::Value>>,
}

/// Units CloudWatch accepts (MetricDatum's `Unit`).
const UNITS: [&str; 27] = [
    "Seconds",
    "Microseconds",
    "Milliseconds",
    "Bytes",
    "Kilobytes",
    "Megabytes",
    "Gigabytes",
    "Terabytes",
    "Bits",
    "Kilobits",
    "Megabits",
    "Gigabits",
    "Terabits",
    "Percent",
    "Count",
    "Bytes/Second",
    "Kilobytes/Second",
    "Megabytes/Second",
    "Gigabytes/Second",
    "Terabytes/Second",
    "Bits/Second",
    "Kilobits/Second",
    "Megabits/Second",
    "Gigabits/Second",
    "Terabits/Second",
    "Count/Second",
    "None",
];

impl Emf {
    /// Every line of `output` that is a JSON object must parse on its own (logs and metrics do
    /// not interleave); those with `_aws` are EMF documents and must be valid ones, in
    /// `namespace`, and carry none of `secrets`.
    fn parse(output: &str, namespace: &str, secrets: &[String]) -> Result<Emf, String> {
        let mut docs = Vec::new();
        // The last line may still be being written.
        let complete = &output[..output.rfind('\n').map_or(0, |i| i + 1)];
        for line in complete.lines() {
            let line = line.trim_end();
            if line.contains("\"_aws\"") && !line.starts_with('{') {
                return Err(format!("an EMF document not alone on its line: {line}"));
            }
            if !line.starts_with('{') {
                continue;
            }
            let value: serde_json::Value = serde_json::from_str(line)
                .map_err(|e| format!("a line that is not one JSON object ({e}): {line}"))?;
            let serde_json::Value::Object(doc) = value else {
                return Err(format!("not an object: {line}"));
            };
            if !doc.contains_key("_aws") {
                continue;
            }
            if let Some(secret) = secrets.iter().find(|s| line.contains(s.as_str())) {
                return Err(format!("an EMF line carries {secret:?}: {line}"));
            }
            check_document(&doc, namespace).map_err(|e| format!("{e}: {line}"))?;
            docs.push(doc);
        }
        Ok(Emf { docs })
    }

    /// The documents with metric `name` whose dimensions include `dims`.
    fn matching<'a>(
        &'a self,
        name: &'a str,
        dims: &'a [(&str, &str)],
    ) -> impl Iterator<Item = &'a serde_json::Map<String, serde_json::Value>> + 'a {
        self.docs.iter().filter(move |d| {
            d.contains_key(name)
                && dims
                    .iter()
                    .all(|(k, v)| d.get(*k).and_then(|x| x.as_str()) == Some(v))
        })
    }

    /// The sum of a counter's values, or the number of a histogram's samples.
    fn total(&self, name: &str, dims: &[(&str, &str)]) -> f64 {
        self.matching(name, dims)
            .map(|d| match &d[name] {
                serde_json::Value::Array(samples) => samples.len() as f64,
                v => v.as_f64().unwrap_or_default(),
            })
            .sum()
    }

    fn exactly(&self, name: &str, dims: &[(&str, &str)], n: u32) -> Result<(), String> {
        let got = self.total(name, dims);
        (got == f64::from(n))
            .then_some(())
            .ok_or_else(|| format!("{name} {dims:?}: {got}, expected {n}"))
    }

    fn at_least(&self, name: &str, dims: &[(&str, &str)], n: u32) -> Result<(), String> {
        let got = self.total(name, dims);
        (got >= f64::from(n))
            .then_some(())
            .ok_or_else(|| format!("{name} {dims:?}: {got}, expected at least {n}"))
    }

    /// Each document of counter `name` counts 1 under a request id of its own.
    fn one_per_invocation(&self, name: &str) -> Result<(), String> {
        let mut ids = std::collections::HashSet::new();
        for d in self.matching(name, &[]) {
            let id = d[shared::telemetry::REQUEST_ID_PROPERTY]
                .as_str()
                .unwrap_or_default();
            if d[name] != 1 || id.is_empty() || !ids.insert(id) {
                return Err(format!(
                    "{name}: a line counting {} under the request id {id:?}, once per \
                     invocation expected",
                    d[name]
                ));
            }
        }
        Ok(())
    }
}

/// One EMF document: the specification's structure, and what `shared::metrics` declares.
fn check_document(
    doc: &serde_json::Map<String, serde_json::Value>,
    namespace: &str,
) -> Result<(), String> {
    let aws = doc
        .get("_aws")
        .and_then(|a| a.as_object())
        .ok_or("_aws is not an object")?;
    let timestamp = aws
        .get("Timestamp")
        .and_then(|t| t.as_u64())
        .ok_or("_aws.Timestamp is not a whole number")?;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    if timestamp.abs_diff(now_ms) > 3_600_000 {
        return Err(format!(
            "_aws.Timestamp {timestamp} is not milliseconds of now"
        ));
    }
    let directives = aws
        .get("CloudWatchMetrics")
        .and_then(|d| d.as_array())
        .filter(|d| !d.is_empty())
        .ok_or("_aws.CloudWatchMetrics is not a non-empty array")?;
    // Members a document may have: its dimensions, its metrics, the request id. Nothing else,
    // so no connection id or user id rides along.
    let mut known =
        std::collections::HashSet::from(["_aws", shared::telemetry::REQUEST_ID_PROPERTY]);
    for directive in directives {
        if directive["Namespace"] != namespace {
            return Err(format!(
                "Namespace {}, expected {namespace}",
                directive["Namespace"]
            ));
        }
        let sets = directive["Dimensions"]
            .as_array()
            .ok_or("Dimensions is not an array")?;
        let metrics = directive["Metrics"]
            .as_array()
            .filter(|m| !m.is_empty() && m.len() <= 100)
            .ok_or("Metrics is not an array of 1 to 100 metric definitions")?;
        for set in sets {
            let keys: Vec<&str> = set
                .as_array()
                .ok_or("a dimension set is not an array")?
                .iter()
                .map(|k| k.as_str().ok_or("a dimension key is not a string"))
                .collect::<Result<_, _>>()?;
            if keys.len() > 30
                || keys.iter().collect::<std::collections::HashSet<_>>().len() != keys.len()
            {
                return Err(format!(
                    "dimension set {keys:?}: more than 30 keys, or one twice"
                ));
            }
            for key in &keys {
                known.insert(key);
                if !doc.get(*key).is_some_and(|v| v.is_string()) {
                    return Err(format!("dimension {key} is not a string member"));
                }
            }
            for definition in metrics {
                let name = definition["Name"]
                    .as_str()
                    .ok_or("a metric Name is not a string")?;
                let unit = definition.get("Unit").map(|u| u.as_str().unwrap_or("?"));
                if unit.is_some_and(|u| !UNITS.contains(&u)) {
                    return Err(format!("{name}: unit {unit:?}"));
                }
                let metric = shared::metrics::ALL
                    .iter()
                    .find(|m| m.name == name)
                    .ok_or_else(|| format!("{name} is not declared in shared::metrics"))?;
                // Its dimensions: the function, then its labels, each a value the label takes.
                let mut declared = vec![shared::telemetry::FUNCTION_DIMENSION];
                declared.extend(metric.labels.iter().map(|l| l.name()));
                declared.dedup();
                let mut sorted = keys.clone();
                sorted.sort_unstable();
                declared.sort_unstable();
                if sorted != declared {
                    return Err(format!(
                        "{name} with dimensions {keys:?}, declared {declared:?}"
                    ));
                }
                for key in &keys {
                    let label = metric
                        .labels
                        .iter()
                        .chain([&shared::metrics::Label::Function])
                        .find(|l| l.name() == *key)
                        .unwrap();
                    let value = doc[*key].as_str().unwrap();
                    if !label.allows(value) {
                        return Err(format!(
                            "{name}: {key}={value:?} is not a value of the label"
                        ));
                    }
                }
            }
        }
        for definition in metrics {
            let name = definition["Name"].as_str().unwrap_or_default();
            known.insert(name);
            let numbers = match doc.get(name) {
                Some(serde_json::Value::Number(_)) => true,
                Some(serde_json::Value::Array(values)) => {
                    values.len() <= 100 && values.iter().all(|v| v.is_number())
                }
                _ => false,
            };
            if !numbers {
                return Err(format!(
                    "{name} is not a number or an array of at most 100 numbers"
                ));
            }
        }
    }
    if !doc
        .get(shared::telemetry::REQUEST_ID_PROPERTY)
        .is_some_and(|id| id.is_string())
    {
        return Err("no request id".into());
    }
    if let Some(other) = doc.keys().find(|k| !known.contains(k.as_str())) {
        return Err(format!(
            "member {other:?} is neither a dimension, a metric nor the request id"
        ));
    }
    Ok(())
}

/// The EMF check refuses what the specification or `shared::metrics` refuses, so the test above
/// cannot pass on lines CloudWatch would drop or that carry an identity.
#[test]
fn emf_check_refuses_invalid_documents() {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let valid = json!({
        "_aws": {"Timestamp": now, "CloudWatchMetrics": [{
            "Namespace": "Relay/t",
            "Dimensions": [["function", "route"]],
            "Metrics": [{"Name": "relay_http_request_duration_seconds", "Unit": "Seconds"}],
        }]},
        "function": "keys",
        "route": "GET /v1/users/{user_id}/bundle",
        "request_id": "r1",
        "relay_http_request_duration_seconds": [0.01, 0.02],
    });
    let check = |doc: &serde_json::Value| check_document(doc.as_object().unwrap(), "Relay/t");
    assert_eq!(check(&valid), Ok(()));
    let changed = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut doc = valid.clone();
        f(&mut doc);
        doc
    };
    for (why, doc) in [
        (
            "a connection id",
            changed(&|d| d["connection_id"] = json!("abc=")),
        ),
        (
            "a path as route",
            changed(&|d| d["route"] = json!("GET /v1/users/5b0c7a2e/bundle")),
        ),
        (
            "an undeclared metric",
            changed(&|d| {
                d["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Name"] = json!("relay_latency")
            }),
        ),
        (
            "a dimension twice",
            changed(&|d| {
                d["_aws"]["CloudWatchMetrics"][0]["Dimensions"] =
                    json!([["function", "route", "route"]])
            }),
        ),
        (
            "a dimension not declared",
            changed(&|d| d["_aws"]["CloudWatchMetrics"][0]["Dimensions"] = json!([["function"]])),
        ),
        (
            "a dimension without its member",
            changed(&|d| {
                d.as_object_mut().unwrap().remove("function");
            }),
        ),
        (
            "a timestamp in seconds",
            changed(&|d| d["_aws"]["Timestamp"] = json!(now / 1000)),
        ),
        (
            "101 values",
            changed(&|d| d["relay_http_request_duration_seconds"] = json!(vec![0.1; 101])),
        ),
        (
            "another namespace",
            changed(&|d| d["_aws"]["CloudWatchMetrics"][0]["Namespace"] = json!("Relay")),
        ),
        (
            "no request id",
            changed(&|d| {
                d.as_object_mut().unwrap().remove("request_id");
            }),
        ),
    ] {
        assert!(check(&doc).is_err(), "accepted {why}");
    }
    let line = valid.to_string();
    assert_eq!(
        Emf::parse(&format!("{line}\n"), "Relay/t", &[])
            .unwrap()
            .docs
            .len(),
        1
    );
    assert!(Emf::parse(&format!("{line}\n"), "Relay/t", &["r1".into()]).is_err());
    assert!(Emf::parse(&format!("INFO {line}\n"), "Relay/t", &[]).is_err());
    assert!(Emf::parse(&format!("{}\n", &line[..40]), "Relay/t", &[]).is_err());
}
