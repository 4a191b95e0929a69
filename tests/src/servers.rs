//! One redis-server and one Dynoxide engine per test process, on free ports: redis-server is a
//! child killed when the process exits (a child of a thread that lives as long as the process),
//! Dynoxide runs embedded in the test process exactly as `local-gateway --dynamodb-memory` runs
//! it. moto_server, the second DynamoDB engine, starts only for the suites that ask for it.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Child;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::process;

pub struct Servers {
    pub redis_url: String,
    pub dynamodb_url: String,
}

static SERVERS: OnceLock<Servers> = OnceLock::new();

pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
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
/// Cluster's comma-separated seeds) and `RELAY_TEST_DYNAMODB_URL` name existing ones instead, and
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
        Servers {
            redis_url,
            dynamodb_url,
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
