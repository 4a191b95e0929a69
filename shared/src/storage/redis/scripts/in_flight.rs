//! `in_flight.lua`: fetch batches taken into flight and settled, and a device's flight released.

use redis::Value;

use super::{Call, InboxCaps, Reply, IN_FLIGHT};
use crate::error::Result;
use crate::model::DeviceAddress;
use crate::storage::redis::{envelope, RedisKeys};
use crate::storage::StoredEnvelope;

/// What the script does, with what only that op takes.
pub(crate) enum Op<'a> {
    /// Up to `max` envelopes from the head into flight.
    Take { max: usize },
    /// A taken batch out of flight, and `unsent` (those of it not written) back to the head.
    Settle {
        batch: &'a [StoredEnvelope],
        unsent: &'a [StoredEnvelope],
    },
    /// Everything in flight back to the head.
    Release,
}

/// What a call to `in_flight.lua` takes, by name.
pub(crate) struct InFlight<'a> {
    pub device: DeviceAddress,
    pub op: Op<'a>,
    /// Lease end of the batch taken, or settled.
    pub lease_until_ms: u64,
    pub now_ms: u64,
    pub caps: InboxCaps,
}

/// What the script did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Done {
    Taken(Vec<StoredEnvelope>),
    Settled,
    Released,
}

impl InFlight<'_> {
    pub(crate) fn call(&self, keys: &RedisKeys) -> Call {
        let op = match self.op {
            Op::Take { .. } => "take",
            Op::Settle { .. } => "settle",
            Op::Release => "release",
        };
        let call = IN_FLIGHT
            .call()
            .keys(keys.device_store(self.device))
            .key(keys.legacy_in_flight(self.device))
            .arg(op)
            .arg(self.lease_until_ms)
            .arg(self.now_ms)
            .arg(self.caps.max)
            .arg(self.caps.max_bytes)
            .arg(self.caps.ttl_secs);
        match self.op {
            Op::Take { max } => call.arg(max.max(1)),
            Op::Settle { batch, unsent } => batch
                .iter()
                .chain(unsent)
                .fold(call.arg(batch.len()), |call, e| {
                    call.arg(envelope::encode(e))
                }),
            Op::Release => call,
        }
    }

    pub(crate) fn decode(&self, reply: Value) -> Result<Done> {
        let mut reply = Reply::new(&IN_FLIGHT, reply)?;
        let done = match (reply.tag(), &self.op) {
            ("taken", Op::Take { .. }) => {
                let entries: Vec<String> = reply.field("batch")?;
                Done::Taken(entries.iter().map(|e| envelope::decode(e)).collect())
            }
            ("settled", Op::Settle { .. }) => Done::Settled,
            ("released", Op::Release) => Done::Released,
            _ => return Err(reply.unknown()),
        };
        reply.end()?;
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{constant, named, shape};
    use super::*;

    fn in_flight(op: Op<'_>) -> InFlight<'_> {
        InFlight {
            device: DeviceAddress::new(uuid::Uuid::nil(), 2),
            op,
            lease_until_ms: 1,
            now_ms: 1,
            caps: InboxCaps {
                max: 1,
                max_bytes: 1,
                ttl_secs: 1,
                new_part: (1, 1),
            },
        }
    }

    #[test]
    fn the_call_has_the_layout_the_script_names() {
        let keys = RedisKeys::new("");
        let (named_keys, named_args) = named(&IN_FLIGHT);
        let at = constant(&IN_FLIGHT, "OP_ARGS_AT");
        assert_eq!(named_args, at, "take's batch size is the last named");
        let take = in_flight(Op::Take { max: 5 }).call(&keys);
        assert_eq!(shape(&take), (named_keys, at));
        let release = in_flight(Op::Release).call(&keys);
        assert_eq!(shape(&release), (named_keys, at - 1));
        let e = [StoredEnvelope::new(1, "{}"), StoredEnvelope::new(2, "{}")];
        let settle = in_flight(Op::Settle {
            batch: &e,
            unsent: &e[1..],
        })
        .call(&keys);
        assert_eq!(shape(&settle), (named_keys, at + 3));
    }

    #[test]
    fn replies_decode_and_anything_else_is_an_error() {
        let s = |t: &str| Value::BulkString(t.as_bytes().to_vec());
        let taken = Value::Array(vec![s("taken"), Value::Array(vec![s("5|{}")])]);
        assert_eq!(
            in_flight(Op::Take { max: 1 })
                .decode(taken.clone())
                .unwrap(),
            Done::Taken(vec![StoredEnvelope::new(5, "{}")])
        );
        assert!(in_flight(Op::Release).decode(taken).is_err());
        assert_eq!(
            in_flight(Op::Release)
                .decode(Value::Array(vec![s("released")]))
                .unwrap(),
            Done::Released
        );
        assert!(in_flight(Op::Release).decode(Value::Array(vec![])).is_err());
    }
}
