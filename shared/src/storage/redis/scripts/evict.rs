//! `evict.lua`: a device's connections past the cap, oldest first, out of its sets.

use redis::Value;

use super::{Call, Reply, EVICT};
use crate::error::Result;
use crate::model::DeviceAddress;
use crate::storage::redis::RedisKeys;

/// What a call to `evict.lua` takes, by name.
pub(crate) struct Evict<'a> {
    pub device: DeviceAddress,
    /// Just registered: the newest.
    pub connection_id: &'a str,
    /// Connections kept.
    pub max: u32,
    pub now_ms: u64,
    pub ttl_ms: u64,
}

impl Evict<'_> {
    pub(crate) fn call(&self, keys: &RedisKeys) -> Call {
        EVICT
            .call()
            .key(keys.conns(self.device))
            .key(keys.conn_order(self.device))
            .key(keys.ack_conns(self.device))
            .arg(self.connection_id)
            .arg(self.now_ms)
            .arg(self.max)
            .arg(self.ttl_ms)
    }
}

/// The evicted connections, each with whether it was in ack mode.
pub(crate) fn decode(reply: Value) -> Result<Vec<(String, bool)>> {
    let mut reply = Reply::new(&EVICT, reply)?;
    let (evicted, acking): (Vec<String>, Vec<String>) = match reply.tag() {
        "evicted" => (
            reply.field("evicted connections")?,
            reply.field("ack-mode connections")?,
        ),
        _ => return Err(reply.unknown()),
    };
    reply.end()?;
    Ok(evicted
        .into_iter()
        .map(|c| {
            let ack = acking.contains(&c);
            (c, ack)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::super::tests::{named, shape};
    use super::*;

    #[test]
    fn the_call_has_the_layout_the_script_names() {
        let c = Evict {
            device: DeviceAddress::new(uuid::Uuid::nil(), 1),
            connection_id: "c",
            max: 1,
            now_ms: 1,
            ttl_ms: 1,
        }
        .call(&RedisKeys::new(""));
        assert_eq!(shape(&c), named(&EVICT));
        let s = |t: &str| Value::BulkString(t.as_bytes().to_vec());
        let a = Value::Array;
        assert_eq!(
            decode(a(vec![
                s("evicted"),
                a(vec![s("x"), s("y")]),
                a(vec![s("y")])
            ]))
            .unwrap(),
            vec![("x".to_string(), false), ("y".to_string(), true)]
        );
        assert!(decode(a(vec![s("evicted"), a(vec![])])).is_err());
    }
}
