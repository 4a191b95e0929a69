//! One redis-server, one Dynoxide engine and one s3s-fs (the S3-API server of attachments) per
//! test process, on free ports: redis-server and s3s-fs are children killed when the process
//! exits (children of a thread that lives as long as the process), Dynoxide runs embedded in the
//! test process exactly as `local-gateway --dynamodb-memory` runs it. moto_server, the second
//! DynamoDB engine, starts only for the suites that ask for it.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::process;

pub struct Servers {
    pub redis_url: String,
    pub dynamodb_url: String,
    /// The S3-API server (`AWS_ENDPOINT_URL_S3`); its bucket `TEST_BUCKET` exists.
    pub s3_url: String,
}

/// The bucket every stack of the process keeps attachments in (object keys are random ids).
pub const TEST_BUCKET: &str = "relay-test-attachments";

static SERVERS: OnceLock<Servers> = OnceLock::new();

pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// The debug build of `local-gateway` that tests start as a process of its own (./local/test
/// builds it before the suites).
pub fn gateway_bin() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    let bin = target.join("debug/local-gateway");
    assert!(
        bin.is_file(),
        "{bin:?} is missing: run `cargo build -p local-gateway` first (./local/test does)"
    );
    bin
}

/// A new directory under the system's temporary one, named by `prefix` and `tag` and unique to
/// this call.
pub fn scratch_dir(prefix: &str, tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "{prefix}-{tag}-{}-{:x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// A port nothing listens on, never the same twice in this process: the port is free again
/// once this returns, and the kernel may hand it to the next caller before the server it was
/// asked for binds it (a cluster picks a dozen ports at once, one of its nodes once failed to
/// start).
pub fn free_port() -> u16 {
    static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        if GIVEN.lock().expect("ports given").insert(port) {
            return port;
        }
    }
}

fn wait_for(port: u16, what: &str, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} did not start on port {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs `f` on a thread that then lives as long as the process: children it spawns die with
/// their parent *thread* (PR_SET_PDEATHSIG), so they must not be spawned from a test's thread.
pub(crate) fn on_lasting_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("test-servers".into())
        .spawn(move || {
            tx.send(f()).expect("send");
            loop {
                std::thread::park();
            }
        })
        .expect("thread");
    rx.recv().expect("server started")
}

/// A redis-server on a free port (a child of the calling thread: see `on_lasting_thread`).
pub fn start_redis() -> (u16, Child) {
    let port = free_port();
    let child = process::spawn(&mut process::redis_server(port));
    wait_for(port, "redis-server", 20);
    (port, child)
}

fn moto_binary() -> PathBuf {
    std::env::var_os("MOTO_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".local/venv/bin/moto_server"))
}

/// s3s-fs: `RELAY_S3_SERVER`, else where `ensure_s3` of local/lib.sh installs it.
pub fn s3_binary() -> PathBuf {
    let bin = std::env::var_os("RELAY_S3_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".local/s3s/bin/s3s-fs"));
    assert!(
        bin.is_file(),
        "s3s-fs not found at {bin:?}: run ./local/test (it installs it), or set RELAY_S3_SERVER"
    );
    bin
}

/// s3s-fs on a free port serving the buckets under `root` (a bucket is a directory: `bucket` is
/// created), accepting only requests signed with the harness's credentials (`stack::
/// set_aws_credentials`): signatures, presigned URLs' expiry and signed headers are checked. A
/// child of the calling thread (see `on_lasting_thread`).
pub fn start_s3(root: &Path, bucket: &str) -> (u16, Child) {
    std::fs::create_dir_all(root.join(bucket)).expect("S3 bucket directory");
    let port = free_port();
    let child = process::spawn(process::command(s3_binary(), None).args([
        "--host".as_ref(),
        "127.0.0.1".as_ref(),
        "--port".as_ref(),
        port.to_string().as_ref(),
        "--access-key".as_ref(),
        crate::stack::TEST_ACCESS_KEY.as_ref(),
        "--secret-key".as_ref(),
        crate::stack::TEST_SECRET_KEY.as_ref(),
        root.as_os_str(),
    ]));
    wait_for(port, "s3s-fs", 20);
    (port, child)
}

/// Where this process's s3s-fs keeps its objects: removed when the process exits (and, should it
/// be killed, by the next test process that finds it).
fn s3_root() -> PathBuf {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    extern "C" fn remove_root() {
        if let Some(root) = ROOT.get() {
            let _ = std::fs::remove_dir_all(root);
        }
    }
    ROOT.get_or_init(|| {
        let tmp = std::env::temp_dir();
        sweep_stale_s3_roots(&tmp);
        let root = tmp.join(format!("relay-s3-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        // SAFETY: registers a plain function, run once at exit.
        unsafe { libc::atexit(remove_root) };
        root
    })
    .clone()
}

/// Removes the `relay-s3-<pid>` directories of test processes that no longer run.
fn sweep_stale_s3_roots(tmp: &Path) {
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("relay-s3-"))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// The DynamoDB engine the stacks use: Dynoxide, in memory, on its own threads.
fn start_dynoxide() -> String {
    let engine = local_gateway::dynamodb_engine::EmbeddedDynamo::start(
        local_gateway::dynamodb_engine::Storage::Memory,
        ([127, 0, 0, 1], 0).into(),
    )
    .expect("dynoxide");
    let url = engine.endpoint();
    // It serves for as long as the process lives.
    std::mem::forget(engine);
    url
}

/// The servers every stack of this process uses; `RELAY_TEST_REDIS_URL` (one URL, or a Redis
/// Cluster's comma-separated seeds), `RELAY_TEST_DYNAMODB_URL` and `RELAY_TEST_S3_URL` (with the
/// bucket `TEST_BUCKET`, accepting the harness's credentials) name existing ones instead, and
/// `RELAY_TEST_REDIS=cluster` starts a local three-primary cluster for the process.
#[allow(clippy::zombie_processes)] // killed with the process, never reaped
pub fn servers() -> &'static Servers {
    SERVERS.get_or_init(|| {
        let cluster = std::env::var("RELAY_TEST_REDIS").is_ok_and(|v| v == "cluster");
        let redis_url = std::env::var("RELAY_TEST_REDIS_URL").unwrap_or_else(|_| {
            if cluster {
                return crate::cluster::shared_seeds();
            }
            on_lasting_thread(|| {
                let (port, child) = start_redis();
                std::mem::forget(child);
                format!("redis://127.0.0.1:{port}")
            })
        });
        let dynamodb_url =
            std::env::var("RELAY_TEST_DYNAMODB_URL").unwrap_or_else(|_| start_dynoxide());
        let s3_url = std::env::var("RELAY_TEST_S3_URL").unwrap_or_else(|_| {
            let root = s3_root();
            on_lasting_thread(move || {
                let (port, child) = start_s3(&root, TEST_BUCKET);
                std::mem::forget(child);
                format!("http://127.0.0.1:{port}")
            })
        });
        Servers {
            redis_url,
            dynamodb_url,
            s3_url,
        }
    })
}

static MOTO: OnceLock<String> = OnceLock::new();

/// A moto_server of this process (the second engine, for the DynamoDB adapter suite); its URL.
#[allow(clippy::zombie_processes)] // killed with the process, never reaped
pub fn moto() -> &'static str {
    MOTO.get_or_init(|| {
        on_lasting_thread(|| {
            let port = free_port();
            let child = process::spawn(process::command(moto_binary(), None).args([
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ]));
            std::mem::forget(child);
            wait_for(
                port,
                "moto_server (run ./local/test, or set MOTO_SERVER)",
                60,
            );
            format!("http://127.0.0.1:{port}")
        })
    })
}
