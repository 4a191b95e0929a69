//! What a message costs Redis: `used_memory` of the node, or of every primary of a cluster
//! added up (a replica holds a copy of its primary's), and the inbox lists of the devices a
//! send reached (the newest entry's length, the lists' `MEMORY USAGE`).

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

/// `used_memory` in an `INFO memory` answer.
fn used_memory(info: &str) -> Option<u64> {
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))?
        .trim()
        .parse()
        .ok()
}

impl Memory {
    /// Bytes Redis has allocated for data and itself, all primaries together; `None` when a
    /// node cannot be read.
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

/// The inboxes of `devices` (user id, device id) with the relay's key `prefix`.
pub fn inbox_keys(prefix: &str, devices: &[(String, u64)]) -> Vec<String> {
    let keys = RedisKeys::new(prefix);
    devices
        .iter()
        .filter_map(|(user, device)| {
            let user: uuid::Uuid = user.parse().ok()?;
            Some(keys.inbox(DeviceAddress::new(user, *device as u32)))
        })
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn used_memory_is_read_from_info() {
        let info = "# Memory\r\nused_memory:1048576\r\nused_memory_human:1.00M\r\n";
        assert_eq!(used_memory(info), Some(1_048_576));
        assert_eq!(used_memory("# Memory\r\n"), None);
    }
}
