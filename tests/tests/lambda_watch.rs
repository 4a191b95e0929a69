//! The full cycle with every function running as its own Lambda binary under
//! `cargo lambda watch`, behind the gateway in Lambda mode: the code path AWS runs, including
//! pushes through the Management API.

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
    let lines: String = env.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
    std::fs::write(&env_file, lines).unwrap();
    let path = format!(
        "{}:{}",
        cargo_lambda_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let log =
        std::fs::File::create(std::env::temp_dir().join(format!("{prefix}-watch.log"))).unwrap();
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
}
