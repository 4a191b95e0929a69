//! `pending.lua`: expired envelopes dropped from the head, the rest counted.

use redis::Value;

use super::{Call, Reply, PENDING};
use crate::error::Result;
use crate::model::DeviceAddress;
use crate::storage::redis::RedisKeys;

pub(crate) fn call(keys: &RedisKeys, device: DeviceAddress, now_ms: u64) -> Call {
    PENDING.call().keys(keys.device_store(device)).arg(now_ms)
}

/// How many envelopes wait, and how many expired ones the call dropped.
pub(crate) fn decode(reply: Value) -> Result<(u64, u64)> {
    let mut reply = Reply::new(&PENDING, reply)?;
    let counts = match reply.tag() {
        "pending" => (reply.field("count")?, reply.field("expired")?),
        _ => return Err(reply.unknown()),
    };
    reply.end()?;
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::super::tests::{named, shape};
    use super::*;

    #[test]
    fn the_call_has_the_layout_the_script_names() {
        let device = DeviceAddress::new(uuid::Uuid::nil(), 1);
        assert_eq!(
            shape(&call(&RedisKeys::new(""), device, 1)),
            named(&PENDING)
        );
        let s = |t: &str| Value::BulkString(t.as_bytes().to_vec());
        assert_eq!(
            decode(Value::Array(vec![
                s("pending"),
                Value::Int(3),
                Value::Int(2)
            ]))
            .unwrap(),
            (3, 2)
        );
        assert!(decode(Value::Array(vec![s("pending"), Value::Int(3)])).is_err());
        assert!(decode(Value::Array(vec![s("queued")])).is_err());
    }
}
