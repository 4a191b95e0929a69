//! One redis-server and one moto_server per test process, on free ports, killed when the
//! process exits (they are children of a thread that lives as long as the process).

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

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

/// Children die with their parent thread; the thread below never ends before the process.
fn spawn(cmd: &mut Command) -> Child {
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"))
}

pub fn start_redis() -> (u16, Child) {
    let port = free_port();
    let child = spawn(Command::new("redis-server").args([
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
    ]));
    wait_for(port, "redis-server", 20);
    (port, child)
}

fn moto_binary() -> PathBuf {
    std::env::var_os("MOTO_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".local/venv/bin/moto_server"))
}

/// The servers every stack of this process uses; `RELAY_TEST_REDIS_URL` and
/// `RELAY_TEST_DYNAMODB_URL` name existing ones instead.
#[allow(clippy::zombie_processes)] // they are killed with the process, never reaped
pub fn servers() -> &'static Servers {
    SERVERS.get_or_init(|| {
        if let (Ok(r), Ok(d)) = (
            std::env::var("RELAY_TEST_REDIS_URL"),
            std::env::var("RELAY_TEST_DYNAMODB_URL"),
        ) {
            return Servers {
                redis_url: r,
                dynamodb_url: d,
            };
        }
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("test-servers".into())
            .spawn(move || {
                let (redis_port, _redis) = start_redis();
                let moto_port = free_port();
                let _moto = spawn(Command::new(moto_binary()).args([
                    "-H",
                    "127.0.0.1",
                    "-p",
                    &moto_port.to_string(),
                ]));
                wait_for(
                    moto_port,
                    "moto_server (run ./local/test, or set MOTO_SERVER)",
                    60,
                );
                tx.send(Servers {
                    redis_url: format!("redis://127.0.0.1:{redis_port}"),
                    dynamodb_url: format!("http://127.0.0.1:{moto_port}"),
                })
                .expect("send");
                loop {
                    std::thread::park();
                }
            })
            .expect("thread");
        rx.recv().expect("servers started")
    })
}
