//! `token_bucket.lua`: tokens taken from (or given back to) one bucket.

use redis::Value;

use super::{Call, Reply, TOKEN_BUCKET};
use crate::config::Bucket;
use crate::error::Result;
use crate::storage::redis::RedisKeys;
use crate::storage::RateDecision;

/// `cost` tokens from the bucket named `name`: 0 only asks, below 0 gives back.
pub(crate) fn call(keys: &RedisKeys, name: &str, bucket: Bucket, cost: i64) -> Call {
    TOKEN_BUCKET
        .call()
        .key(keys.bucket(name))
        .arg(bucket.capacity)
        .arg(bucket.refill_per_ms())
        .arg(cost)
}

pub(crate) fn decode(reply: Value) -> Result<RateDecision> {
    decision(Reply::new(&TOKEN_BUCKET, reply)?)
}

/// `{'allowed'}` or `{'limited', retry after ms}`, as every bucket script answers.
pub(super) fn decision(mut reply: Reply) -> Result<RateDecision> {
    let decided = match reply.tag() {
        "allowed" => RateDecision::Allowed,
        "limited" => limited(&mut reply)?,
        _ => return Err(reply.unknown()),
    };
    reply.end()?;
    Ok(decided)
}

/// The wait of a `{'limited', retry after ms}` reply: at least 1 ms.
pub(super) fn limited(reply: &mut Reply) -> Result<RateDecision> {
    let retry_after_ms: i64 = reply.field("retry after ms")?;
    Ok(RateDecision::Limited {
        retry_after_ms: retry_after_ms.max(1) as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::super::tests::{named, shape};
    use super::*;

    #[test]
    fn the_call_has_the_layout_the_script_names() {
        let c = call(&RedisKeys::new(""), "k", Bucket::new(1, 1), -1);
        assert_eq!(shape(&c), named(&TOKEN_BUCKET));
        let s = |t: &str| Value::BulkString(t.as_bytes().to_vec());
        assert_eq!(
            decode(Value::Array(vec![s("allowed")])).unwrap(),
            RateDecision::Allowed
        );
        assert_eq!(
            decode(Value::Array(vec![s("limited"), Value::Int(250)])).unwrap(),
            RateDecision::Limited {
                retry_after_ms: 250
            }
        );
        assert!(decode(Value::Array(vec![s("limited")])).is_err());
        assert!(decode(Value::Array(vec![Value::Int(1), Value::Int(0)])).is_err());
    }
}
