//! `sent.lua`: a device's sends remembered by id (claim, record, release).

use redis::Value;

use super::{Call, Reply, SENT};
use crate::error::Result;
use crate::model::DeviceAddress;
use crate::storage::redis::RedisKeys;
use crate::storage::{Claim, Remembering};

/// What the script does, with what only that op takes.
pub(crate) enum Op<'a> {
    Claim {
        content_hash: &'a str,
        policy: Remembering,
    },
    Record {
        content_hash: &'a str,
        answer: &'a str,
        policy: Remembering,
    },
    Release,
}

/// What a call to `sent.lua` takes, by name.
pub(crate) struct Sent<'a> {
    pub sender: DeviceAddress,
    /// The id's hash (ids are the client's: up to 128 bytes of anything).
    pub id_hash: &'a str,
    pub now_ms: u64,
    pub op: Op<'a>,
}

/// What the script did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Done {
    Claimed(Claim),
    Recorded,
    /// Nothing recorded: the claim was gone, or a later repeat's.
    Unclaimed,
    Released,
}

impl Sent<'_> {
    pub(crate) fn call(&self, keys: &RedisKeys) -> Call {
        let op = match self.op {
            Op::Claim { .. } => "claim",
            Op::Record { .. } => "record",
            Op::Release => "release",
        };
        let call = SENT
            .call()
            .key(keys.sent(self.sender))
            .key(keys.sent_times(self.sender))
            .arg(op)
            .arg(self.id_hash)
            .arg(self.now_ms);
        match self.op {
            Op::Claim {
                content_hash,
                policy,
            } => call
                .arg(content_hash)
                .arg(policy.window_ms)
                .arg(policy.lapse_ms)
                .arg(policy.budget_bytes),
            Op::Record {
                content_hash,
                answer,
                policy,
            } => call
                .arg(content_hash)
                .arg(answer)
                .arg(policy.window_ms)
                .arg(policy.budget_bytes),
            Op::Release => call,
        }
    }

    pub(crate) fn decode(&self, reply: Value) -> Result<Done> {
        let mut reply = Reply::new(&SENT, reply)?;
        let done = match (reply.tag(), &self.op) {
            ("new", Op::Claim { .. }) => Done::Claimed(Claim::New),
            ("conflict", Op::Claim { .. }) => Done::Claimed(Claim::Conflict),
            ("pending", Op::Claim { .. }) => Done::Claimed(Claim::Pending),
            ("done", Op::Claim { .. }) => Done::Claimed(Claim::Done(reply.field("answer")?)),
            ("recorded", Op::Record { .. }) => Done::Recorded,
            ("unclaimed", Op::Record { .. }) => Done::Unclaimed,
            ("released", Op::Release) => Done::Released,
            _ => return Err(reply.unknown()),
        };
        reply.end()?;
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{named, shape};
    use super::*;

    fn sent(op: Op<'_>) -> Sent<'_> {
        Sent {
            sender: DeviceAddress::new(uuid::Uuid::nil(), 1),
            id_hash: "h",
            now_ms: 1,
            op,
        }
    }

    #[test]
    fn the_call_has_the_layout_the_script_names() {
        let keys = RedisKeys::new("");
        let policy = Remembering {
            window_ms: 1,
            lapse_ms: 1,
            budget_bytes: 1,
        };
        let claim = sent(Op::Claim {
            content_hash: "c",
            policy,
        });
        let record = sent(Op::Record {
            content_hash: "c",
            answer: "a",
            policy,
        });
        assert_eq!(shape(&claim.call(&keys)), named(&SENT));
        assert_eq!(shape(&record.call(&keys)), named(&SENT));
        assert_eq!(shape(&sent(Op::Release).call(&keys)), (2, 3));
        let s = |t: &str| Value::BulkString(t.as_bytes().to_vec());
        let a = Value::Array;
        assert_eq!(
            claim.decode(a(vec![s("done"), s("{}")])).unwrap(),
            Done::Claimed(Claim::Done("{}".into()))
        );
        assert!(claim.decode(a(vec![s("recorded")])).is_err());
        assert_eq!(
            record.decode(a(vec![s("unclaimed")])).unwrap(),
            Done::Unclaimed
        );
        assert!(claim.decode(a(vec![])).is_err());
    }
}
