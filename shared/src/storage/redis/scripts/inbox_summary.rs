//! `inbox_summary.lua`: a device's inbox in counts and times, for an account export.

use redis::Value;

use super::{Call, Reply, INBOX_SUMMARY};
use crate::error::Result;
use crate::model::DeviceAddress;
use crate::storage::redis::RedisKeys;
use crate::storage::{EntryTimes, InboxSummary};

pub(crate) fn call(keys: &RedisKeys, device: DeviceAddress) -> Call {
    INBOX_SUMMARY
        .call()
        .key(keys.inbox(device))
        .key(keys.inbox_accounting(device))
        .key(keys.in_flight(device))
        .key(keys.in_flight_parked(device))
}

/// An end of the inbox: none when its expiry is 0 (empty).
fn end(expires_at_ms: u64, sent_at_ms: u64) -> Option<EntryTimes> {
    (expires_at_ms > 0).then_some(EntryTimes {
        expires_at_ms,
        sent_at_ms: (sent_at_ms > 0).then_some(sent_at_ms),
    })
}

pub(crate) fn decode(reply: Value) -> Result<InboxSummary> {
    let mut reply = Reply::new(&INBOX_SUMMARY, reply)?;
    let summary = match reply.tag() {
        "summary" => {
            let queued = reply.field("queued")?;
            let bytes = reply.field("bytes")?;
            let in_flight = reply.field("in_flight")?;
            let in_flight_bytes = reply.field("in_flight_bytes")?;
            let oldest = end(reply.field("oldest_expires")?, reply.field("oldest_sent")?);
            let newest = end(reply.field("newest_expires")?, reply.field("newest_sent")?);
            InboxSummary {
                queued,
                bytes,
                in_flight,
                in_flight_bytes,
                oldest,
                newest,
            }
        }
        _ => return Err(reply.unknown()),
    };
    reply.end()?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::super::tests::{named, shape};
    use super::*;

    #[test]
    fn the_call_has_the_layout_the_script_names() {
        let device = DeviceAddress::new(uuid::Uuid::nil(), 2);
        assert_eq!(
            shape(&call(&RedisKeys::new(""), device)),
            named(&INBOX_SUMMARY)
        );
        let s = |t: &str| Value::BulkString(t.as_bytes().to_vec());
        let n = Value::Int;
        let reply = |times: [i64; 4]| {
            let mut v = vec![s("summary"), n(3), n(900), n(1), n(300)];
            v.extend(times.map(n));
            Value::Array(v)
        };
        let full = decode(reply([20, 10, 40, 0])).unwrap();
        assert_eq!(
            (
                full.queued,
                full.bytes,
                full.in_flight,
                full.in_flight_bytes
            ),
            (3, 900, 1, 300)
        );
        assert_eq!(
            full.oldest,
            Some(EntryTimes {
                expires_at_ms: 20,
                sent_at_ms: Some(10)
            })
        );
        assert_eq!(
            full.newest,
            Some(EntryTimes {
                expires_at_ms: 40,
                sent_at_ms: None
            })
        );
        let empty = decode(reply([0, 0, 0, 0])).unwrap();
        assert_eq!((empty.oldest, empty.newest), (None, None));
        assert!(decode(Value::Array(vec![s("summary"), n(3)])).is_err());
        assert!(decode(Value::Array(vec![s("pending")])).is_err());
    }
}
