//! `presence.lua`: a connection counted in or out of its user's live connections, and whether
//! that made the user come online or go offline.

use redis::Value;

use super::{Call, Reply, PRESENCE};
use crate::error::Result;
use crate::model::UserId;
use crate::storage::redis::RedisKeys;
use crate::storage::Transition;

/// Which way the connection goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    /// Counted in until `ends_ms`; the set expires after `ttl_ms` without an arrival.
    In {
        ends_ms: u64,
        ttl_ms: u64,
    },
    Out,
}

/// What a call to `presence.lua` takes, by name.
pub(crate) struct Presence<'a> {
    pub user: UserId,
    pub connection_id: &'a str,
    pub direction: Direction,
    pub now_ms: u64,
}

impl Presence<'_> {
    pub(crate) fn call(&self, keys: &RedisKeys) -> Call {
        let (op, ends_ms, ttl_ms) = match self.direction {
            Direction::In { ends_ms, ttl_ms } => ("in", ends_ms, ttl_ms),
            Direction::Out => ("out", 0, 0),
        };
        PRESENCE
            .call()
            .key(keys.presence_conns(self.user))
            .key(keys.presence(self.user))
            .arg(op)
            .arg(self.connection_id)
            .arg(self.now_ms)
            .arg(ends_ms)
            .arg(ttl_ms)
    }
}

pub(crate) fn decode(reply: Value) -> Result<Transition> {
    let reply = Reply::new(&PRESENCE, reply)?;
    let transition = match reply.tag() {
        "online" => Transition::Online,
        "offline" => Transition::Offline,
        "unchanged" => Transition::Unchanged,
        _ => return Err(reply.unknown()),
    };
    reply.end()?;
    Ok(transition)
}

#[cfg(test)]
mod tests {
    use super::super::tests::{named, shape};
    use super::*;

    #[test]
    fn the_call_has_the_layout_the_script_names() {
        for direction in [
            Direction::In {
                ends_ms: 2,
                ttl_ms: 3,
            },
            Direction::Out,
        ] {
            let c = Presence {
                user: uuid::Uuid::nil(),
                connection_id: "c",
                direction,
                now_ms: 1,
            }
            .call(&RedisKeys::new(""));
            assert_eq!(shape(&c), named(&PRESENCE));
        }
        let s = |t: &str| Value::BulkString(t.as_bytes().to_vec());
        let a = Value::Array;
        assert_eq!(decode(a(vec![s("online")])).unwrap(), Transition::Online);
        assert_eq!(decode(a(vec![s("offline")])).unwrap(), Transition::Offline);
        assert_eq!(
            decode(a(vec![s("unchanged")])).unwrap(),
            Transition::Unchanged
        );
        assert!(decode(a(vec![s("offline"), s("1")])).is_err());
        assert!(decode(a(vec![s("gone")])).is_err());
    }
}
