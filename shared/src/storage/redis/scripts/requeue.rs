//! `requeue.lua`: envelopes back at the head of an inbox, in their order.

use redis::Value;

use super::{Call, InboxCaps, Reply, REQUEUE};
use crate::error::Result;
use crate::model::DeviceAddress;
use crate::storage::redis::{envelope, RedisKeys};
use crate::storage::StoredEnvelope;

pub(crate) fn call(
    keys: &RedisKeys,
    device: DeviceAddress,
    caps: InboxCaps,
    envelopes: &[StoredEnvelope],
) -> Call {
    let call = REQUEUE
        .call()
        .keys(keys.device_store(device))
        .arg(caps.max)
        .arg(caps.max_bytes)
        .arg(caps.ttl_secs);
    envelopes
        .iter()
        .fold(call, |call, e| call.arg(envelope::encode(e)))
}

/// The inbox's length after.
pub(crate) fn decode(reply: Value) -> Result<u64> {
    let mut reply = Reply::new(&REQUEUE, reply)?;
    let len = match reply.tag() {
        "requeued" => reply.field("inbox length")?,
        _ => return Err(reply.unknown()),
    };
    reply.end()?;
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::super::tests::{constant, named, shape};
    use super::*;

    #[test]
    fn the_call_has_the_layout_the_script_names() {
        let device = DeviceAddress::new(uuid::Uuid::nil(), 1);
        let caps = InboxCaps {
            max: 1,
            max_bytes: 1,
            ttl_secs: 1,
            new_part: (1, 1),
        };
        let (keys, args) = named(&REQUEUE);
        assert_eq!(constant(&REQUEUE, "ENTRIES_AT"), args + 1);
        let e = [StoredEnvelope::new(1, "{}")];
        assert_eq!(
            shape(&call(&RedisKeys::new(""), device, caps, &e)),
            (keys, args + 1)
        );
        let s = |t: &str| Value::BulkString(t.as_bytes().to_vec());
        assert_eq!(
            decode(Value::Array(vec![s("requeued"), Value::Int(3)])).unwrap(),
            3
        );
        assert!(decode(Value::Int(3)).is_err());
    }
}
