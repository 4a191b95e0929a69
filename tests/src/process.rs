//! Server child processes of the harness and the benchmark, started one way: no input, output
//! to a log file or nowhere, and killed when the thread that spawned them ends
//! (`PR_SET_PDEATHSIG`), so that none outlives the process that needs it.

use std::ffi::OsStr;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A command for a server child: stdin closed, stdout and stderr to `log_file` (nowhere when it
/// is `None` or cannot be created), SIGKILLed when its parent *thread* ends. Spawn it from a
/// thread that lives as long as the child should (see `servers::on_lasting_thread`); the bench
/// turns it into a `tokio::process::Command`.
pub fn command(program: impl AsRef<OsStr>, log_file: Option<&Path>) -> Command {
    let mut cmd = Command::new(program);
    cmd.stdin(Stdio::null());
    match log_file.and_then(|p| std::fs::File::create(p).ok()) {
        Some(f) => {
            let f2 = f.try_clone().expect("log file");
            cmd.stdout(f).stderr(f2);
        }
        None => {
            cmd.stdout(Stdio::null()).stderr(Stdio::null());
        }
    }
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    cmd
}

/// Spawns `cmd`; a program that cannot start is a panic that names it.
pub fn spawn(cmd: &mut Command) -> Child {
    cmd.spawn()
        .unwrap_or_else(|e| panic!("cannot start {:?}: {e}", cmd.get_program()))
}

/// `redis-server` on 127.0.0.1:`port`, keeping nothing on disk (no RDB, no AOF) and never
/// evicting (as the relay's Redis must not: docs/api.md §7.4); more options may be added.
pub fn redis_server(port: u16) -> Command {
    let mut cmd = command("redis-server", None);
    cmd.args([
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--maxmemory-policy",
        "noeviction",
    ]);
    cmd
}

/// This process's resident memory in KiB (Linux): an in-process gateway's included.
pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .expect("VmRSS in /proc/self/status")
}
