//! A local Redis Cluster for the suites: three primaries with one replica each, on free ports,
//! created with `redis-cli --cluster create`. The nodes die with the test process (they are
//! children of a thread that lives as long as the process, with `PR_SET_PDEATHSIG`); one can be
//! killed on purpose (`kill`) to make its replica take over.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::process;
use crate::servers::{free_port, on_lasting_thread};

/// Node timeout of the clusters started here: a primary that does not answer for this long is
/// failed over to its replica (Redis' default is 15 s; a test wants it short).
pub const NODE_TIMEOUT_MS: u64 = 2000;

pub struct Cluster {
    /// Every node's port, primaries first as created (the replicas follow).
    pub ports: Vec<u16>,
    pids: Mutex<HashMap<u16, i32>>,
    pub dir: PathBuf,
}

/// One shard as `CLUSTER NODES` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shard {
    pub primary: u16,
    pub replicas: Vec<u16>,
    pub slots: Vec<(u16, u16)>,
}

static SHARED: OnceLock<Cluster> = OnceLock::new();

/// The cluster every suite of this process shares (for stacks that run on a cluster).
pub fn shared() -> &'static Cluster {
    SHARED.get_or_init(|| Cluster::start(3, 1))
}

/// `REDIS_URL` / `REDIS_CLUSTER` for a stack: `RELAY_TEST_REDIS_CLUSTER_URL` names an existing
/// cluster (comma-separated seeds, e.g. the one `local/test` starts), else the shared one.
pub fn shared_seeds() -> String {
    match std::env::var("RELAY_TEST_REDIS_CLUSTER_URL") {
        Ok(url) if !url.trim().is_empty() => url,
        _ => shared().seeds(),
    }
}

fn redis_cli(args: &[&str]) -> std::process::Output {
    Command::new("redis-cli")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run redis-cli {args:?}: {e}"))
}

/// One command through `redis-cli -p PORT`, its standard output; None when the node is down.
pub fn query(port: u16, args: &[&str]) -> Option<String> {
    let mut all = vec!["-h", "127.0.0.1"];
    let p = port.to_string();
    all.extend(["-p", p.as_str()]);
    all.extend(args);
    let out = redis_cli(&all);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    (out.status.success() && !text.starts_with("Could not connect")).then_some(text)
}

/// Whether the node on `port` answers `PING` within `wait`.
fn answers_within(port: u16, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    loop {
        if query(port, &["PING"]).is_some_and(|s| s.trim() == "PONG") {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_until(what: &str, secs: u64, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !ok() {
        assert!(Instant::now() < deadline, "{what} within {secs} s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Cluster {
    /// Starts `primaries` primaries with `replicas` replicas each and waits until every node
    /// says `cluster_state:ok` with all 16384 slots assigned and every replica in sync.
    pub fn start(primaries: usize, replicas: usize) -> Self {
        remove_stale_dirs();
        let count = primaries * (1 + replicas);
        let mut ports: Vec<u16> = (0..count).map(|_| free_port()).collect();
        let dir =
            std::env::temp_dir().join(format!("relay-cluster-{}-{}", std::process::id(), ports[0]));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("cluster dir");
        let (spawn_ports, spawn_dir) = (ports.clone(), dir.clone());
        let mut pids: HashMap<u16, i32> = on_lasting_thread(move || {
            spawn_ports
                .iter()
                .map(|&port| (port, spawn_node(port, &spawn_dir)))
                .collect()
        });
        // A node that does not answer (its port taken meanwhile by another process) is started
        // again on other ports, twice at most.
        for port in ports.iter_mut() {
            for attempt in 1.. {
                if answers_within(*port, Duration::from_secs(20)) {
                    break;
                }
                assert!(attempt < 3, "redis-server on port {port} within 20 s");
                let pid = pids.remove(port).expect("the node's pid");
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                    libc::waitpid(pid, std::ptr::null_mut(), 0);
                }
                *port = free_port();
                let (again, spawn_dir) = (*port, dir.clone());
                pids.insert(
                    again,
                    on_lasting_thread(move || spawn_node(again, &spawn_dir)),
                );
            }
        }
        let mut args: Vec<String> = vec!["--cluster".into(), "create".into()];
        args.extend(ports.iter().map(|p| format!("127.0.0.1:{p}")));
        args.extend([
            "--cluster-replicas".into(),
            replicas.to_string(),
            "--cluster-yes".into(),
        ]);
        let out = redis_cli(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = Self {
            ports,
            pids: Mutex::new(pids),
            dir,
        };
        cluster.wait_healthy(60);
        cluster
    }

    /// Comma-separated seed URLs (every node), the `REDIS_URL` of a stack on this cluster.
    pub fn seeds(&self) -> String {
        self.ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The variables a stack needs to run on this cluster.
    pub fn env(&self) -> [(&'static str, String); 2] {
        [
            ("REDIS_URL", self.seeds()),
            ("REDIS_CLUSTER", "true".to_string()),
        ]
    }

    pub fn alive(&self) -> Vec<u16> {
        let pids = self.pids.lock().expect("pids");
        self.ports
            .iter()
            .copied()
            .filter(|p| pids.contains_key(p))
            .collect()
    }

    /// The shards as a live node sees them (failed nodes left out).
    pub fn shards(&self) -> Vec<Shard> {
        for port in self.alive() {
            if let Some(text) = query(port, &["CLUSTER", "NODES"]) {
                return parse_nodes(&text);
            }
        }
        panic!("no node of the cluster answers");
    }

    /// The port of the primary that serves `key`'s hash slot now.
    pub fn primary_of(&self, key: &str) -> u16 {
        self.serving(key)
            .unwrap_or_else(|| panic!("no live primary serves {key}"))
    }

    /// The live primary serving `key`'s slot, if any (none while its shard fails over).
    pub fn serving(&self, key: &str) -> Option<u16> {
        let slot = self.slot_of(key);
        self.shards()
            .into_iter()
            .find(|s| s.slots.iter().any(|&(a, b)| (a..=b).contains(&slot)))
            .map(|s| s.primary)
    }

    pub fn slot_of(&self, key: &str) -> u16 {
        let port = self.alive()[0];
        query(port, &["CLUSTER", "KEYSLOT", key])
            .and_then(|s| s.trim().parse().ok())
            .expect("CLUSTER KEYSLOT")
    }

    /// SIGKILLs the node on `port` (no shutdown, no goodbye to the cluster).
    pub fn kill(&self, port: u16) {
        let pid = self
            .pids
            .lock()
            .expect("pids")
            .remove(&port)
            .expect("a running node on that port");
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
    }

    /// Every live node says `cluster_state:ok` and all slots are served; every live node is in
    /// the map (each replica under its primary), and every replica has its link up.
    pub fn is_healthy(&self) -> bool {
        let alive = self.alive();
        let states_ok = alive.iter().all(|&p| {
            query(p, &["CLUSTER", "INFO"]).is_some_and(|info| {
                info.contains("cluster_state:ok") && info.contains("cluster_slots_ok:16384")
            })
        });
        if !states_ok {
            return false;
        }
        let shards = self.shards();
        let served: u32 = shards
            .iter()
            .flat_map(|s| s.slots.iter())
            .map(|&(a, b)| u32::from(b - a) + 1)
            .sum();
        let nodes: usize = shards.iter().map(|s| 1 + s.replicas.len()).sum();
        served == 16384
            && nodes == alive.len()
            && shards.iter().all(|s| alive.contains(&s.primary))
            && shards.iter().flat_map(|s| s.replicas.iter()).all(|&r| {
                query(r, &["INFO", "replication"])
                    .is_some_and(|i| i.contains("master_link_status:up"))
            })
    }

    pub fn wait_healthy(&self, secs: u64) {
        wait_until("the cluster is healthy", secs, || self.is_healthy());
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for port in self.alive() {
            self.kill(port);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Directories of clusters whose test process is gone (a shared cluster is never dropped).
fn remove_stale_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let Some(pid) = name
            .strip_prefix("relay-cluster-")
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<i32>().ok())
        else {
            continue;
        };
        let gone = unsafe { libc::kill(pid, 0) } != 0
            && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        if gone {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Masters with their slot ranges and replicas, from `CLUSTER NODES` (failed nodes left out).
pub fn parse_nodes(text: &str) -> Vec<Shard> {
    struct Line {
        id: String,
        port: u16,
        flags: String,
        master: String,
        slots: Vec<(u16, u16)>,
    }
    let lines: Vec<Line> = text
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 8 {
                return None;
            }
            let port = f[1].split('@').next()?.rsplit(':').next()?.parse().ok()?;
            let slots = f[8..]
                .iter()
                .filter(|s| !s.starts_with('['))
                .filter_map(|s| match s.split_once('-') {
                    Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                    None => s.parse().ok().map(|a| (a, a)),
                })
                .collect();
            Some(Line {
                id: f[0].to_string(),
                port,
                flags: f[2].to_string(),
                master: f[3].to_string(),
                slots,
            })
        })
        .filter(|l| !l.flags.contains("fail") || l.flags.contains("fail?"))
        .collect();
    let mut shards: Vec<Shard> = lines
        .iter()
        .filter(|l| l.flags.contains("master") && !l.slots.is_empty())
        .map(|m| Shard {
            primary: m.port,
            replicas: lines
                .iter()
                .filter(|r| r.master == m.id)
                .map(|r| r.port)
                .collect(),
            slots: m.slots.clone(),
        })
        .collect();
    shards.sort_by_key(|s| s.slots.first().copied());
    shards
}

/// Starts one node; `Cluster::kill` (or the process' exit) ends it and reaps it by its pid.
#[allow(clippy::zombie_processes)]
fn spawn_node(port: u16, dir: &std::path::Path) -> i32 {
    let node_dir = dir.join(port.to_string());
    std::fs::create_dir_all(&node_dir).expect("node dir");
    // The bus port is named: the default, port + 10000, may be taken or above 65535.
    let bus = free_port();
    let child = process::spawn(process::redis_server(port).args([
        "--dir",
        node_dir.to_str().expect("utf-8 path"),
        "--cluster-enabled",
        "yes",
        "--cluster-port",
        &bus.to_string(),
        "--cluster-config-file",
        "nodes.conf",
        "--cluster-node-timeout",
        &NODE_TIMEOUT_MS.to_string(),
        // The other shards keep serving while one is failing over.
        "--cluster-require-full-coverage",
        "no",
    ]));
    child.id() as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_nodes_are_parsed() {
        let text = "\
a1 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460
b1 127.0.0.1:7001@17001 master - 0 0 2 connected 5461-10922
c1 127.0.0.1:7002@17002 master,fail - 0 0 3 connected
a2 127.0.0.1:7003@17003 slave a1 0 0 1 connected
b2 127.0.0.1:7004@17004 slave b1 0 0 2 connected
c2 127.0.0.1:7005@17005 master - 0 0 7 connected 10923-16383 [10923->-xyz]
";
        let shards = parse_nodes(text);
        assert_eq!(
            shards,
            vec![
                Shard {
                    primary: 7000,
                    replicas: vec![7003],
                    slots: vec![(0, 5460)]
                },
                Shard {
                    primary: 7001,
                    replicas: vec![7004],
                    slots: vec![(5461, 10922)]
                },
                Shard {
                    primary: 7005,
                    replicas: vec![],
                    slots: vec![(10923, 16383)]
                },
            ]
        );
    }
}
