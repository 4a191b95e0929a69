//! `token_buckets.lua`: several buckets taken together, all or none.

use redis::Value;

use super::{Call, Reply, TOKEN_BUCKETS};
use crate::config::Bucket;
use crate::error::Result;
use crate::storage::redis::RedisKeys;
use crate::storage::RateDecision;

/// Per bucket: its name, its rule and the cost to take (0: only ask).
pub(crate) fn call(keys: &RedisKeys, takes: &[(&str, Bucket, u32)]) -> Call {
    takes
        .iter()
        .fold(TOKEN_BUCKETS.call(), |call, (name, bucket, cost)| {
            // BUCKET_FIELDS per bucket: CAPACITY, REFILL_PER_MS, COST.
            call.key(keys.bucket(name))
                .arg(bucket.capacity)
                .arg(bucket.refill_per_ms())
                .arg(*cost)
        })
}

pub(crate) fn decode(reply: Value) -> Result<RateDecision> {
    super::token_bucket::decision(Reply::new(&TOKEN_BUCKETS, reply)?)
}

#[cfg(test)]
mod tests {
    use super::super::tests::{constant, shape};
    use super::*;

    #[test]
    fn the_call_has_the_layout_the_script_names() {
        let b = Bucket::new(1, 1);
        let c = call(&RedisKeys::new(""), &[("a", b, 1), ("b", b, 0)]);
        assert_eq!(
            shape(&c),
            (2, 2 * constant(&TOKEN_BUCKETS, "BUCKET_FIELDS"))
        );
        let s = |t: &str| Value::BulkString(t.as_bytes().to_vec());
        assert_eq!(
            decode(Value::Array(vec![s("limited"), Value::Int(9)])).unwrap(),
            RateDecision::Limited { retry_after_ms: 9 }
        );
        assert!(decode(Value::Array(vec![s("allowed"), Value::Int(0)])).is_err());
    }
}
