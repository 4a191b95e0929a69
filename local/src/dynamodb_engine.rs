//! Dynoxide, a DynamoDB-API server on SQLite, embedded: its HTTP server on a loopback port, so
//! the handlers still reach it through `aws-sdk-dynamodb` exactly as they reach DynamoDB on AWS.
//!
//! It runs on a thread and runtime of its own (threads named `dynoxide`): SQLite calls block, and
//! must not stall the gateway's sockets; the benchmark also tells the engine's CPU time from the
//! gateway's by those thread names.

use std::fs::File;
use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use tokio::sync::oneshot;

/// Where the engine keeps its tables.
#[derive(Debug, Clone)]
pub enum Storage {
    /// Gone when the process ends (tests).
    Memory,
    /// A SQLite database file, kept across restarts; `<file>.lock` marks it as in use.
    File(PathBuf),
}

/// The running engine; dropping it stops the server and closes the database.
pub struct EmbeddedDynamo {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    _lock: Option<File>,
}

/// The first bytes of every SQLite 3 database file.
const SQLITE_HEADER: &[u8; 16] = b"SQLite format 3\0";

impl EmbeddedDynamo {
    /// Opens the database and starts serving on `listen` (port 0: a free one). Fails, naming the
    /// file, when the file is not a SQLite database or another process has it open.
    pub fn start(storage: Storage, listen: SocketAddr) -> Result<Self, String> {
        let (db, lock) = match &storage {
            Storage::Memory => (
                dynoxide::Database::memory().map_err(|e| format!("dynoxide (memory): {e}"))?,
                None,
            ),
            Storage::File(path) => {
                let lock = lock_file(path)?;
                check_sqlite_file(path)?;
                let name = path
                    .to_str()
                    .ok_or_else(|| format!("{}: path is not UTF-8", path.display()))?;
                let open_error = |e| {
                    format!(
                        "{}: cannot open as a Dynoxide database: {e}",
                        path.display()
                    )
                };
                let db = dynoxide::Database::new(name).map_err(open_error)?;
                // WAL with `synchronous = NORMAL` (what this call sets): a commit is written, not
                // fsynced, so a killed process loses nothing and a crash of the machine can lose
                // the last commits — the durability of Redis' `appendfsync everysec` beside it.
                // Dynoxide's default (FULL) fsyncs every write and costs a third of the bundle
                // fetch rate (docs/benchmarks.md).
                db.disable_bulk_loading().map_err(open_error)?;
                (db, Some(lock))
            }
        };
        let listener = TcpListener::bind(listen)
            .map_err(|e| format!("dynoxide: cannot listen on {listen}: {e}"))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| format!("dynoxide: {e}"))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("dynoxide")
            .enable_all()
            .build()
            .map_err(|e| format!("dynoxide runtime: {e}"))?;
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("dynoxide".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let listener =
                        tokio::net::TcpListener::from_std(listener).expect("listener from std");
                    let shutdown = async move {
                        let _ = stopped.await;
                    };
                    if let Err(e) =
                        dynoxide::server::serve_with_shutdown(listener, db, shutdown).await
                    {
                        tracing::error!(error = %e, "dynoxide server stopped");
                    }
                });
                // Requests still running end with the runtime; the database closes after them.
                runtime.shutdown_timeout(std::time::Duration::from_secs(2));
            })
            .map_err(|e| format!("dynoxide thread: {e}"))?;
        Ok(Self {
            addr,
            stop: Some(stop),
            thread: Some(thread),
            _lock: lock,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The endpoint URL for `AWS_ENDPOINT_URL_DYNAMODB`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for EmbeddedDynamo {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Holds `<file>.lock` for as long as the engine runs; a second holder is refused.
fn lock_file(path: &Path) -> Result<File, String> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let lock_path = lock_path(path);
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| format!("{}: {e}", lock_path.display()))?;
    match lock.try_lock() {
        Ok(()) => Ok(lock),
        Err(std::fs::TryLockError::WouldBlock) => Err(format!(
            "{} is in use by another running relay ({} is locked): stop it first, or give this \
             one another data directory",
            path.display(),
            lock_path.display()
        )),
        Err(std::fs::TryLockError::Error(e)) => Err(format!("{}: {e}", lock_path.display())),
    }
}

pub fn lock_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// A missing or empty file becomes a new database; anything else must be SQLite.
fn check_sqlite_file(path: &Path) -> Result<(), String> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let mut header = [0u8; 16];
    let mut read = 0;
    while read < header.len() {
        match file.read(&mut header[read..]) {
            Ok(0) => break,
            Ok(n) => read += n,
            Err(e) => return Err(format!("{}: {e}", path.display())),
        }
    }
    if read == 0 || &header == SQLITE_HEADER {
        Ok(())
    } else {
        Err(format!(
            "{} is not a Dynoxide (SQLite) database file; nothing was changed. Move it away, or \
             wipe the local data with ./local/up --reset",
            path.display()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "relay-dynoxide-{name}-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    fn loopback() -> SocketAddr {
        ([127, 0, 0, 1], 0).into()
    }

    #[test]
    fn a_file_that_is_not_sqlite_is_refused_by_name_and_left_alone() {
        let dir = temp_dir("garbage");
        let file = dir.join("dynamodb.sqlite");
        std::fs::write(&file, b"this is a text file, not a database").expect("write");
        let err = EmbeddedDynamo::start(Storage::File(file.clone()), loopback())
            .err()
            .expect("refused");
        assert!(err.contains(file.to_str().unwrap()), "{err}");
        assert!(err.contains("not a Dynoxide (SQLite) database"), "{err}");
        assert_eq!(
            std::fs::read(&file).expect("read"),
            b"this is a text file, not a database"
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_second_engine_on_the_same_file_is_refused_while_the_first_runs() {
        let dir = temp_dir("lock");
        let file = dir.join("dynamodb.sqlite");
        let first = EmbeddedDynamo::start(Storage::File(file.clone()), loopback()).expect("first");
        let err = EmbeddedDynamo::start(Storage::File(file.clone()), loopback())
            .err()
            .expect("second refused");
        assert!(err.contains(file.to_str().unwrap()), "{err}");
        assert!(err.contains("in use by another running relay"), "{err}");
        drop(first);
        let again = EmbeddedDynamo::start(Storage::File(file), loopback());
        assert!(again.is_ok(), "free again after the first stopped");
        drop(again);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_new_file_becomes_a_sqlite_database() {
        let dir = temp_dir("new");
        let file = dir.join("sub/dynamodb.sqlite");
        let engine = EmbeddedDynamo::start(Storage::File(file.clone()), loopback()).expect("start");
        assert!(engine.addr().port() > 0);
        drop(engine);
        let bytes = std::fs::read(&file).expect("file exists");
        assert!(bytes.starts_with(SQLITE_HEADER));
        let _ = std::fs::remove_dir_all(dir);
    }
}
