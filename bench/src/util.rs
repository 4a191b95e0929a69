//! Shared pieces of the benchmark: latency statistics, child processes that die with the bench,
//! resident memory, CPU time, Redis command counts, file limits, the machine's description.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::process::{Child, Command};

/// Latency percentiles (nearest rank), in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Lat {
    pub n: usize,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

impl Lat {
    pub fn from_ns(mut v: Vec<u64>) -> Self {
        if v.is_empty() {
            return Self::default();
        }
        v.sort_unstable();
        let n = v.len();
        let at = |q: f64| {
            let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
            v[rank - 1] as f64 / 1e6
        };
        Self {
            n,
            p50_ms: at(0.50),
            p95_ms: at(0.95),
            p99_ms: at(0.99),
            max_ms: v[n - 1] as f64 / 1e6,
            mean_ms: v.iter().map(|&x| x as f64).sum::<f64>() / n as f64 / 1e6,
        }
    }

    pub fn from_durations(v: &[Duration]) -> Self {
        Self::from_ns(v.iter().map(|d| d.as_nanos() as u64).collect())
    }

    /// The figure named `p50`, `p95`, `p99` or `max`.
    pub fn percentile(&self, name: &str) -> f64 {
        match name {
            "p50" => self.p50_ms,
            "p95" => self.p95_ms,
            "p99" => self.p99_ms,
            "max" => self.max_ms,
            other => panic!("no percentile {other:?}"),
        }
    }
}

static STARTED: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

pub fn log(msg: impl std::fmt::Display) {
    let t = STARTED.get_or_init(Instant::now).elapsed().as_secs_f64();
    eprintln!("[bench {t:6.1}s] {msg}");
}

/// The harness's server child (`relay_tests::process::command`), also killed when the bench
/// drops it; it dies with the bench too, as the spawning tokio worker thread lives as long as
/// the runtime.
pub fn command(program: impl AsRef<std::ffi::OsStr>, log_file: Option<&Path>) -> Command {
    let mut cmd = Command::from(relay_tests::process::command(program, log_file));
    cmd.kill_on_drop(true);
    cmd
}

/// A started server process and the port it answers on.
pub struct Server {
    pub child: Child,
    pub pid: u32,
    pub port: u16,
}

impl Server {
    /// Spawns and waits (at most `secs`) until the port accepts connections.
    pub async fn spawn(mut cmd: Command, port: u16, what: &str, secs: u64) -> Self {
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        let pid = child.id().expect("pid");
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("{what} exited during start-up: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "{what} did not listen on {port} within {secs} s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Self { child, pid, port }
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// The number after `name` in a `/proc` file of `name: value [unit]` lines.
fn proc_field<T: std::str::FromStr>(path: &str, name: &str) -> Option<T> {
    std::fs::read_to_string(path).ok().and_then(|s| {
        s.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
    })
}

/// VmRSS of a process, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    proc_field(&format!("/proc/{pid}/status"), "VmRSS:").unwrap_or(0)
}

/// Raises the soft limit on open files to the hard limit; returns the soft limit in force.
pub fn raise_nofile() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let want = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    lim.rlim_cur
}

pub use relay_tests::servers::free_port;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub memory_gib: f64,
    pub kernel: String,
    pub date_utc: String,
}

impl Machine {
    pub fn describe() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        let mem_kib: f64 = proc_field("/proc/meminfo", "MemTotal:").unwrap_or(0.0);
        Self {
            cpus: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            cpu_model,
            memory_gib: (mem_kib / 1024.0 / 1024.0 * 10.0).round() / 10.0,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_string())
                .unwrap_or_default(),
            date_utc: utc_now(),
        }
    }
}

/// `YYYY-MM-DD HH:MM UTC` without a date library (civil-from-days).
pub fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rem / 3600,
        (rem % 3600) / 60
    )
}

/// The variables every relay process of the run gets: the harness's test environment (its own
/// table and key prefix, cheap password hashing) with rate limits out of the way.
pub fn relay_env() -> HashMap<String, String> {
    let mut env = relay_tests::stack::test_env();
    let servers = relay_tests::servers::servers();
    env.insert(
        "AWS_ENDPOINT_URL_DYNAMODB".into(),
        servers.dynamodb_url.clone(),
    );
    env.insert("AWS_ENDPOINT_URL_S3".into(), servers.s3_url.clone());
    for (k, v) in [
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_REGION", "us-east-1"),
    ] {
        env.insert(k.into(), v.into());
    }
    // The idle-connection scenario spreads hundreds of connections over a few users.
    env.insert("MAX_CONNECTIONS_PER_USER".into(), "1000000".into());
    env
}

pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// CPU seconds (user + system) a process has used so far, split by thread name: threads named
/// `engine` (the embedded DynamoDB engine's) and all the others.
pub fn cpu_secs_by_thread(pid: u32, engine: &str) -> (f64, f64) {
    // SAFETY: sysconf has no preconditions.
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let (mut other, mut engine_secs) = (0.0, 0.0);
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return (0.0, 0.0);
    };
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state …`: comm may hold spaces, so split at the last ')'.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = &stat[open + 1..close];
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        // After the comm: state is field 3, utime 14 and stime 15 (1-based over the whole line).
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        let secs = (ticks(11) + ticks(12)) / tick;
        if comm == engine {
            engine_secs += secs;
        } else {
            other += secs;
        }
    }
    (other, engine_secs)
}

/// CPU seconds (user + system) a process has used so far, all its threads (`/proc/PID/stat`);
/// `None` when the process cannot be read.
pub fn cpu_secs(pid: u32) -> Option<f64> {
    // SAFETY: sysconf has no preconditions.
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state …`: comm may hold spaces, so split at the last ')'.
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    // After the comm: utime is field 14 and stime 15 (1-based over the whole line).
    let ticks = |i: usize| fields.get(i)?.parse::<f64>().ok();
    Some((ticks(11)? + ticks(12)?) / tick)
}

/// The pid of the redis-server behind `redis` when it runs on this machine (INFO's `process_id`,
/// checked against `/proc/PID/comm`), so that its CPU time can be read.
pub async fn local_redis_pid(redis: &mut redis::aio::ConnectionManager) -> Option<u32> {
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(redis)
        .await
        .ok()?;
    let pid: u32 = info
        .lines()
        .find_map(|l| l.strip_prefix("process_id:"))?
        .trim()
        .parse()
        .ok()?;
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    comm.starts_with("redis-server").then_some(pid)
}

/// How many times redis-server has run each command so far, by name (`INFO commandstats`:
/// `cmdstat_<name>:calls=<n>,…`; subcommands as `client|setname`). Commands run by Lua scripts
/// count too, each under its own name, besides the script's `EVALSHA`. `None` when INFO fails.
pub async fn redis_command_calls(
    redis: &mut redis::aio::ConnectionManager,
) -> Option<BTreeMap<String, u64>> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(redis)
        .await
        .ok()?;
    Some(
        info.lines()
            .filter_map(|l| {
                let (name, stats) = l.strip_prefix("cmdstat_")?.split_once(':')?;
                let calls = stats.split(',').find_map(|f| f.strip_prefix("calls="))?;
                Some((name.to_string(), calls.trim().parse().ok()?))
            })
            .collect(),
    )
}
