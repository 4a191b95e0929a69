//! `./local/up` keeps its data: after a stop with SIGTERM, and after SIGKILL of every process, the
//! accounts, sessions and queued messages are still there; a second `./local/up` on the same data
//! and a data file that is not a database are refused by name; only `--reset` wipes, after asking.
//!
//! Each test runs the real script (redis-server with its append-only file, the gateway with
//! Dynoxide embedded on a SQLite file) on free ports and a data directory of its own. The gateway
//! binary is the one `cargo build -p local-gateway` makes (./local/test builds it first).

use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use relay_tests::attachments::{download_url, get, random_bytes, Upload};
use relay_tests::client::{login, refresh, User};
use relay_tests::servers::{free_port, gateway_bin, scratch_dir, workspace_root};
use relay_tests::{eventually, Stack};

const SECRET: &str = "local-up-test-secret-0123456789-abcdefghijklmnopqrstuvwxyz";

struct Ports {
    gateway: u16,
    redis: u16,
    dynamodb: u16,
    s3: u16,
}

impl Ports {
    fn new() -> Self {
        Self {
            gateway: free_port(),
            redis: free_port(),
            dynamodb: free_port(),
            s3: free_port(),
        }
    }
}

fn data_dir(tag: &str) -> PathBuf {
    scratch_dir("relay-up", tag)
}

/// `./local/up` with the given data directory and ports, in a process group of its own.
fn up_command(data: &Path, ports: &Ports, args: &[&str]) -> Command {
    let mut cmd = Command::new(workspace_root().join("local/up"));
    cmd.args(args)
        .env("RELAY_DATA_DIR", data)
        .env("RELAY_LISTEN", format!("127.0.0.1:{}", ports.gateway))
        .env("RELAY_REDIS_PORT", ports.redis.to_string())
        .env("RELAY_DYNAMODB_PORT", ports.dynamodb.to_string())
        .env("RELAY_S3_PORT", ports.s3.to_string())
        .env("RELAY_GATEWAY_BIN", gateway_bin())
        .env("JWT_SECRET", SECRET)
        .env("ARGON2_M_KIB", "4096")
        .env("ARGON2_T", "1")
        .envs(relay_tests::stack::limits_off())
        .env_remove("REDIS_URL")
        .env_remove("AWS_ENDPOINT_URL_DYNAMODB")
        .env_remove("AWS_ENDPOINT_URL_S3")
        .env_remove("ATTACHMENTS_BUCKET")
        .env_remove("RELAY_TABLE_PREFIX")
        .env_remove("RELAY_REDIS_PREFIX")
        .process_group(0);
    cmd
}

struct Up {
    child: Child,
    log: PathBuf,
}

/// A test that fails half-way must not leave a stack running: SIGKILL to the whole group.
impl Drop for Up {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            // SAFETY: a signal to the process group we created.
            unsafe { libc::kill(-self.group(), libc::SIGKILL) };
            let _ = self.child.wait();
        }
    }
}

impl Up {
    /// Starts the stack and waits until `/healthz` answers 200.
    async fn start(data: &Path, ports: &Ports) -> Self {
        let log = data.join(format!("up-{}.log", rand::random::<u32>()));
        let file = std::fs::File::create(&log).expect("log");
        let child = up_command(data, ports, &[])
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log"))
            .stderr(file)
            .spawn()
            .expect("spawn ./local/up");
        let mut up = Self { child, log };
        let url = format!("http://127.0.0.1:{}/healthz", ports.gateway);
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(r) = reqwest::get(&url).await {
                if r.status() == 200 {
                    return up;
                }
            }
            if let Ok(Some(status)) = up.child.try_wait() {
                panic!("./local/up exited with {status}:\n{}", up.output());
            }
            assert!(
                Instant::now() < deadline,
                "./local/up not healthy in 120 s:\n{}",
                up.output()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM to the script (as a supervisor would): it stops what it started.
    fn terminate(mut self) {
        // SAFETY: a signal to our own child.
        unsafe { libc::kill(self.group(), libc::SIGTERM) };
        self.wait_exit();
    }

    /// SIGKILL to every process of the stack at once: nothing gets to clean up.
    fn kill_all(mut self) {
        // SAFETY: a signal to the process group we created.
        unsafe { libc::kill(-self.group(), libc::SIGKILL) };
        self.wait_exit();
    }

    /// The process group: the script, redis-server and the gateway.
    fn group(&self) -> i32 {
        self.child.id() as i32
    }

    fn wait_exit(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.child.try_wait().expect("wait").is_none() {
            assert!(Instant::now() < deadline, "./local/up did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
        // The group's other processes (redis-server, the gateway) are gone too.
        while unsafe { libc::kill(-self.group(), 0) } == 0 {
            assert!(
                Instant::now() < deadline,
                "processes of ./local/up still run"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

async fn attach(ports: &Ports) -> Stack {
    let env = [
        ("REDIS_URL", format!("redis://127.0.0.1:{}", ports.redis)),
        ("JWT_SECRET", SECRET.to_string()),
    ];
    let config = shared::Config::from_lookup(|k| {
        env.iter()
            .find(|(name, _)| *name == k)
            .map(|(_, v)| v.clone())
    })
    .expect("config");
    let addr: SocketAddr = ([127, 0, 0, 1], ports.gateway).into();
    Stack::attach(
        addr,
        config,
        &format!("http://127.0.0.1:{}", ports.dynamodb),
    )
    .await
}

/// Two accounts, and a message from alice queued for bob (offline).
async fn populate(stack: &Stack) -> (User, User) {
    let alice = User::builder(stack).one_time_prekeys(2).create().await;
    let bob = User::builder(stack).one_time_prekeys(2).create().await;
    let mut ws = alice.connect(stack).await;
    let reply = ws
        .send_message(&bob.user_id, "m1", b"kept across restarts")
        .await;
    assert_eq!(reply["delivery"], "queued", "{reply}");
    ws.close().await;
    (alice, bob)
}

/// Both log in again, alice's refresh token still rotates, bob gets the message exactly once.
async fn assert_kept(stack: &Stack, alice: &User, bob: &User) {
    for u in [alice, bob] {
        let (status, body) = login(stack, &u.username, &u.password).await;
        assert_eq!(status, 200, "login of {} after restart: {body}", u.username);
    }
    let (status, body) = refresh(stack, &alice.refresh).await;
    assert_eq!(status, 200, "refresh after restart: {body}");
    let mut ws = bob.connect(stack).await;
    let got = ws.fetch_all().await;
    assert_eq!(got.len(), 1, "exactly one message: {got:?}");
    assert_eq!(got[0]["from"], alice.user_id.as_str());
    let body = base64_decode(got[0]["body"].as_str().expect("body"));
    assert_eq!(body, b"kept across restarts");
    let again = ws.fetch_all().await;
    assert!(again.is_empty(), "delivered twice: {again:?}");
    ws.close().await;
}

/// Waits until Redis has written every command it ran so far to its append-only file. A killed
/// process keeps what it wrote (the page cache is the kernel's), whether or not it was fsynced;
/// under `appendfsync everysec` Redis may hold its buffer back while a background fsync runs.
async fn aof_written(stack: &Stack) {
    let mut redis = stack.redis().await;
    eventually("Redis to write its append-only buffer out", async || {
        let info: String = redis::cmd("INFO")
            .arg("persistence")
            .query_async(&mut redis)
            .await
            .expect("INFO persistence");
        info.lines().any(|l| l.trim() == "aof_buffer_length:0")
    })
    .await
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .expect("base64")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_after_sigterm_keeps_accounts_sessions_and_queued_messages() {
    let (data, ports) = (data_dir("term"), Ports::new());
    let up = Up::start(&data, &ports).await;
    let stack = attach(&ports).await;
    let (alice, bob) = populate(&stack).await;
    up.terminate();

    let up = Up::start(&data, &ports).await;
    assert_kept(&stack, &alice, &bob).await;
    up.terminate();
    let _ = std::fs::remove_dir_all(data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_after_sigkill_of_every_process_keeps_what_was_written() {
    let (data, ports) = (data_dir("kill"), Ports::new());
    let up = Up::start(&data, &ports).await;
    let stack = attach(&ports).await;
    let (alice, bob) = populate(&stack).await;
    aof_written(&stack).await;
    up.kill_all();

    let up = Up::start(&data, &ports).await;
    assert_kept(&stack, &alice, &bob).await;
    up.kill_all();
    let _ = std::fs::remove_dir_all(data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_up_on_the_same_data_and_a_foreign_database_file_are_refused_by_name() {
    let (data, ports) = (data_dir("busy"), Ports::new());
    let up = Up::start(&data, &ports).await;
    let out = up_command(&data, &Ports::new(), &[])
        .stdin(Stdio::null())
        .output()
        .expect("second up");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "second up must fail: {stderr}");
    assert!(
        stderr.contains(&format!("{}/up.lock", data.display())),
        "names the lock file: {stderr}"
    );
    up.terminate();

    let foreign = data_dir("foreign");
    std::fs::write(foreign.join("dynamodb.sqlite"), b"not a database at all").expect("write");
    let out = up_command(&foreign, &Ports::new(), &[])
        .stdin(Stdio::null())
        .output()
        .expect("up on a foreign file");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "must refuse: {stderr}");
    assert!(
        stderr.contains(&format!("{}/dynamodb.sqlite", foreign.display()))
            && stderr.contains("not a Dynoxide (SQLite) database"),
        "names the file: {stderr}"
    );
    assert_eq!(
        std::fs::read(foreign.join("dynamodb.sqlite")).expect("still there"),
        b"not a database at all"
    );
    let _ = std::fs::remove_dir_all(data);
    let _ = std::fs::remove_dir_all(foreign);
}

fn reset(data: &Path, answer: &str) -> (bool, String) {
    let mut child = up_command(data, &Ports::new(), &["--reset"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("reset");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(answer.as_bytes())
        .expect("answer");
    let out = child.wait_with_output().expect("reset output");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_asks_first_and_then_wipes_the_data() {
    let (data, ports) = (data_dir("reset"), Ports::new());
    let up = Up::start(&data, &ports).await;
    let stack = attach(&ports).await;
    let alice = User::builder(&stack).create().await;
    up.terminate();

    let (ok, stderr) = reset(&data, "no\n");
    assert!(!ok && stderr.contains("nothing deleted"), "{stderr}");
    assert!(data.join("dynamodb.sqlite").is_file());
    let (ok, stderr) = reset(&data, "");
    assert!(
        !ok && stderr.contains("nothing deleted"),
        "no answer: {stderr}"
    );

    let up = Up::start(&data, &ports).await;
    let (status, _) = login(&stack, &alice.username, &alice.password).await;
    assert_eq!(status, 200, "still there after a refused reset");
    let (ok, stderr) = reset(&data, "reset\n");
    assert!(!ok, "refused while the stack runs: {stderr}");
    up.terminate();

    let (ok, stderr) = reset(&data, "reset\n");
    assert!(ok, "{stderr}");
    assert!(!data.join("dynamodb.sqlite").exists());
    assert!(!data.join("redis").exists());
    let up = Up::start(&data, &ports).await;
    let (status, body) = login(&stack, &alice.username, &alice.password).await;
    assert_eq!(status, 401, "gone after reset: {body}");
    up.terminate();
    let _ = std::fs::remove_dir_all(data);
}

/// An S3 client of the local stack's server signing with `secret` (and the access key id every
/// presigned URL shows).
async fn s3_signing_with(ports: &Ports, access_key: &str, secret: &str) -> aws_sdk_s3::Client {
    let url = format!("http://127.0.0.1:{}", ports.s3);
    let shared = shared::storage::aws::sdk_config(Some(&url)).await;
    let credentials =
        aws_sdk_s3::config::Credentials::new(access_key, secret, None, None, "local-up-test");
    let config = aws_sdk_s3::config::Builder::from(&shared)
        .credentials_provider(credentials)
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

/// The access key id of a presigned URL (`X-Amz-Credential=<id>%2F<date>%2F…`).
fn access_key_of(url: &str) -> String {
    let credential = url
        .split("X-Amz-Credential=")
        .nth(1)
        .expect("a presigned URL");
    credential.split("%2F").next().expect("an id").to_string()
}

/// What an S3 client can do with the local stack's bucket: list it, read, overwrite and
/// delete `key`; the failures' messages, one per operation that was refused.
async fn s3_refusals(client: &aws_sdk_s3::Client, key: &str) -> Vec<String> {
    const BUCKET: &str = "relay-attachments";
    let list = client.list_objects_v2().bucket(BUCKET).send().await;
    let read = client.get_object().bucket(BUCKET).key(key).send().await;
    let overwrite = client
        .put_object()
        .bucket(BUCKET)
        .key(key)
        .body(b"replaced".to_vec().into())
        .send()
        .await;
    let delete = client.delete_object().bucket(BUCKET).key(key).send().await;
    [
        list.err().map(|e| format!("list: {e:?}")),
        read.err().map(|e| format!("read: {e:?}")),
        overwrite.err().map(|e| format!("overwrite: {e:?}")),
        delete.err().map(|e| format!("delete: {e:?}")),
    ]
    .into_iter()
    .flatten()
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_s3_server_takes_only_the_data_directorys_random_secret() {
    use std::os::unix::fs::PermissionsExt;
    let (data, ports) = (data_dir("s3"), Ports::new());
    let up = Up::start(&data, &ports).await;
    let secret_file = data.join("s3_secret");
    let secret = std::fs::read_to_string(&secret_file).expect("s3_secret");
    assert!(secret.len() >= 32, "a random secret: {secret:?}");
    let mode = std::fs::metadata(&secret_file)
        .expect("meta")
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "s3_secret is the owner's only: {mode:o}");

    // The relay and the server share it: a granted upload is stored.
    let stack = attach(&ports).await;
    let alice = User::builder(&stack).create().await;
    let bytes = random_bytes(1000);
    let upload = Upload::grant(&stack, &alice.access, bytes.len() as u64).await;
    assert!(!upload.url.contains(&secret), "{}", upload.url);
    assert_eq!(upload.put(&bytes).await.0, 200);
    let key = format!("attachments/{}", upload.id);

    // What anyone can read off a URL, or used to be the secret, gets nothing.
    let access_key = access_key_of(&upload.url);
    for guess in ["local", access_key.as_str()] {
        let refused = s3_refusals(&s3_signing_with(&ports, &access_key, guess).await, &key).await;
        assert_eq!(refused.len(), 4, "signed with {guess:?}: {refused:?}");
    }
    let url = download_url(&stack, &alice.access, &upload.id).await;
    assert_eq!(get(&url).await, (200, bytes.clone()), "nothing was changed");

    // Kept per data directory: the same secret after a restart, and the upload still there.
    up.terminate();
    let up = Up::start(&data, &ports).await;
    assert_eq!(std::fs::read_to_string(&secret_file).unwrap(), secret);
    let url = download_url(&stack, &alice.access, &upload.id).await;
    assert_eq!(get(&url).await, (200, bytes));
    let owner = s3_signing_with(&ports, &access_key, secret.trim()).await;
    let listed = owner
        .list_objects_v2()
        .bucket("relay-attachments")
        .send()
        .await
        .expect("the secret's holder lists the bucket");
    assert_eq!(listed.key_count(), Some(1), "{listed:?}");
    up.terminate();
    let _ = std::fs::remove_dir_all(data);
}
