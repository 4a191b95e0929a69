//! `ack.lua`: acknowledged envelopes out of flight, the frame's charge taken when none was.

use redis::Value;

use super::{Call, Reply, ACK};
use crate::error::Result;
use crate::model::DeviceAddress;
use crate::storage::redis::RedisKeys;
use crate::storage::{Charge, RateDecision};

pub(crate) fn call(
    keys: &RedisKeys,
    device: DeviceAddress,
    ttl_secs: u64,
    charge: Charge<'_>,
    ids: &[String],
) -> Call {
    let call = ACK
        .call()
        .key(keys.in_flight(device))
        .key(keys.in_flight_parked(device))
        .key(keys.bucket(charge.key))
        .arg(ttl_secs)
        .arg(charge.bucket.capacity)
        .arg(charge.bucket.refill_per_ms())
        .arg(charge.cost);
    ids.iter().fold(call, |call, id| call.arg(id))
}

/// The charge's decision, how many envelopes were deleted (none when limited) and the ids of
/// those that pointed at a disappearing message's envelope of their own.
pub(crate) fn decode(reply: Value) -> Result<(RateDecision, u64, Vec<String>)> {
    let mut reply = Reply::new(&ACK, reply)?;
    let decided = match reply.tag() {
        "acked" => (
            RateDecision::Allowed,
            reply.field("count")?,
            reply.field("own ids")?,
        ),
        "limited" => (super::token_bucket::limited(&mut reply)?, 0, Vec::new()),
        _ => return Err(reply.unknown()),
    };
    reply.end()?;
    Ok(decided)
}

#[cfg(test)]
mod tests {
    use super::super::tests::{constant, named, shape};
    use super::*;
    use crate::config::Bucket;

    #[test]
    fn the_call_has_the_layout_the_script_names() {
        let device = DeviceAddress::new(uuid::Uuid::nil(), 1);
        let charge = Charge {
            key: "k",
            bucket: Bucket::new(1, 1),
            cost: 1,
        };
        let (keys, args) = named(&ACK);
        assert_eq!(constant(&ACK, "IDS_AT"), args + 1);
        let ids = ["a".to_string(), "b".to_string()];
        assert_eq!(
            shape(&call(&RedisKeys::new(""), device, 1, charge, &ids)),
            (keys, args + 2)
        );
        let s = |t: &str| Value::BulkString(t.as_bytes().to_vec());
        assert_eq!(
            decode(Value::Array(vec![
                s("acked"),
                Value::Int(2),
                Value::Array(vec![s("x")])
            ]))
            .unwrap(),
            (RateDecision::Allowed, 2, vec!["x".to_string()])
        );
        assert_eq!(
            decode(Value::Array(vec![s("limited"), Value::Int(0)])).unwrap(),
            (RateDecision::Limited { retry_after_ms: 1 }, 0, vec![])
        );
        assert!(decode(Value::Array(vec![Value::Int(1), Value::Int(0)])).is_err());
    }
}
