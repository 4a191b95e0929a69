//! What a message costs Redis: `used_memory` of the node, or of every primary of a cluster
//! added up (a replica holds a copy of its primary's), without the buffers of clients and
//! replication (they hold what is in transit, not what is stored); and the inbox lists of the
//! devices a send reached (the newest entry's length, the lists' `MEMORY USAGE`).

use shared::model::DeviceAddress;
use shared::storage::redis::{RedisConnection, RedisKeys};

/// Where the relay's data is, to read its memory.
#[derive(Clone)]
pub enum Memory {
    /// One redis-server.
    Node(redis::aio::ConnectionManager),
    /// A cluster's primaries, by port (read with `redis-cli`).
    Cluster(Vec<u16>),
}

/// The `INFO memory` fields of the buffers `used_memory` counts besides stored data: clients'
/// query and output buffers (the gateway's pipelined script calls, the replicas' streams), the
/// replication backlog and the AOF buffer.
const BUFFERS: [&str; 4] = [
    "mem_clients_normal",
    "mem_clients_slaves",
    "mem_replication_backlog",
    "mem_aof_buffer",
];

/// `used_memory` in an `INFO memory` answer, less [`BUFFERS`].
fn used_memory(info: &str) -> Option<u64> {
    let field = |name: &str| -> Option<u64> {
        info.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))?
            .trim()
            .parse()
            .ok()
    };
    let buffers: u64 = BUFFERS.iter().filter_map(|b| field(b)).sum();
    field("used_memory")?.checked_sub(buffers)
}

impl Memory {
    /// Bytes Redis has allocated for data and itself but its buffers, all primaries together;
    /// `None` when a node cannot be read.
    pub async fn used(&self) -> Option<u64> {
        match self {
            Self::Node(conn) => {
                let mut conn = conn.clone();
                let info: String = redis::cmd("INFO")
                    .arg("memory")
                    .query_async(&mut conn)
                    .await
                    .ok()?;
                used_memory(&info)
            }
            Self::Cluster(ports) => {
                let ports = ports.clone();
                tokio::task::spawn_blocking(move || {
                    ports
                        .iter()
                        .map(|&p| {
                            relay_tests::cluster::query(p, &["INFO", "memory"])
                                .and_then(|info| used_memory(&info))
                        })
                        .sum::<Option<u64>>()
                })
                .await
                .ok()?
            }
        }
    }
}

/// The lists every stored envelope adds an entry to, for each of `devices` (user id, device
/// id) with the relay's key `prefix`: the inboxes, and the lists of who holds each entry.
pub fn device_lists(prefix: &str, devices: &[(String, u64)]) -> (Vec<String>, Vec<String>) {
    let keys = RedisKeys::new(prefix);
    devices
        .iter()
        .filter_map(|(user, device)| {
            let device = DeviceAddress::new(user.parse().ok()?, *device as u32);
            Some((keys.inbox(device), keys.inbox_holders(device)))
        })
        .unzip()
}

/// `MEMORY USAGE` of every key (exact: every element counted), added up; `None` on an error.
pub async fn memory_usage(conn: &RedisConnection, keys: &[String]) -> Option<u64> {
    let mut conn = conn.clone();
    let mut total = 0;
    for key in keys {
        let bytes: Option<u64> = redis::cmd("MEMORY")
            .arg("USAGE")
            .arg(key)
            .arg("SAMPLES")
            .arg(0)
            .query_async(&mut conn)
            .await
            .ok()?;
        total += bytes.unwrap_or(0);
    }
    Some(total)
}

/// The newest entry of each list (`LINDEX key -1`), as stored; lists that are empty are left out.
pub async fn newest_entries(conn: &RedisConnection, keys: &[String]) -> Vec<Vec<u8>> {
    let mut conn = conn.clone();
    let mut out = Vec::with_capacity(keys.len());
    for key in keys {
        let entry: Option<Vec<u8>> = redis::cmd("LINDEX")
            .arg(key)
            .arg(-1)
            .query_async(&mut conn)
            .await
            .unwrap_or(None);
        out.extend(entry);
    }
    out
}

/// The envelope a group send's inbox entry points at: such an entry is
/// `[~]<expires at>|@<envelope id>|<sender>` (a one-to-one entry holds its JSON instead).
pub fn pointed_at(entry: &[u8]) -> Option<uuid::Uuid> {
    let entry = std::str::from_utf8(entry).ok()?;
    let (_, pointer) = entry.split_once("|@")?;
    pointer.split('|').next()?.parse().ok()
}

/// A string key's length and its `MEMORY USAGE` (key, value and Redis' overhead); `None` when it
/// is not there.
pub async fn string_size(conn: &RedisConnection, key: &str) -> Option<(u64, u64)> {
    let mut conn = conn.clone();
    let len: u64 = redis::cmd("STRLEN")
        .arg(key)
        .query_async(&mut conn)
        .await
        .ok()?;
    let usage: Option<u64> = redis::cmd("MEMORY")
        .arg("USAGE")
        .arg(key)
        .query_async(&mut conn)
        .await
        .ok()?;
    Some((len, usage?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_entry_names_the_envelope_it_points_at() {
        let id = uuid::Uuid::new_v4();
        let from = uuid::Uuid::new_v4();
        let entry = format!("~1800000000000|@{id}|{from}");
        assert_eq!(pointed_at(entry.as_bytes()), Some(id));
        assert_eq!(
            pointed_at(br#"1800000000000|{"id":"x","body":"QQ=="}"#),
            None
        );
    }

    #[test]
    fn used_memory_is_read_from_info() {
        let info = "# Memory\r\nused_memory:1048576\r\nused_memory_human:1.00M\r\n\
                    mem_clients_normal:1024\r\nmem_replication_backlog:0\r\n";
        assert_eq!(used_memory(info), Some(1_048_576 - 1024));
        assert_eq!(used_memory("# Memory\r\n"), None);
    }
}
