//! `pending.lua`: expired envelopes dropped from the head, the rest counted.

use redis::Value;

use super::{Call, Reply, PENDING};
use crate::error::Result;
use crate::model::DeviceAddress;
use crate::storage::redis::RedisKeys;

pub(crate) fn call(keys: &RedisKeys, device: DeviceAddress, now_ms: u64) -> Call {
    PENDING.call().keys(keys.device_store(device)).arg(now_ms)
}

/// How many envelopes wait.
pub(crate) fn decode(reply: Value) -> Result<u64> {
    let mut reply = Reply::new(&PENDING, reply)?;
    let count = match reply.tag() {
        "pending" => reply.field("count")?,
        _ => return Err(reply.unknown()),
    };
    reply.end()?;
    Ok(count)
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
            decode(Value::Array(vec![s("pending"), Value::Int(3)])).unwrap(),
            3
        );
        assert!(decode(Value::Array(vec![s("queued")])).is_err());
    }
}
