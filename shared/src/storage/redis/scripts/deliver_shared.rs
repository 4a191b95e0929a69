//! `deliver_shared.lua`: one member's part of a group send, stored in the member's slot.

use redis::Value;

use super::deliver::{outcome, Removed};
use super::{Call, InboxCaps, Reply, DELIVER_SHARED};
use crate::error::Result;
use crate::model::DeviceAddress;
use crate::storage::redis::{envelope, RedisKeys};
use crate::storage::{Delivery, SharedFanned, SharedFanout};

/// What a call to `deliver_shared.lua` takes, by name.
pub(crate) struct DeliverShared<'a> {
    pub send: &'a SharedFanout,
    pub caps: InboxCaps,
    pub now_ms: u64,
    /// Lease end of what the call takes into flight.
    pub lease_until_ms: u64,
    /// Most envelopes taken out to push.
    pub pop_batch: usize,
    pub most_evictions: u32,
    /// Marks of repeatable sends kept per member (the oldest go first).
    pub most_marks: u32,
}

impl DeliverShared<'_> {
    pub(crate) fn call(&self, keys: &RedisKeys) -> Call {
        let send = self.send;
        // A repeatable send is remembered by the envelope id its entries point at.
        let mark = match send.remember_ms {
            Some(_) => send
                .entries
                .first()
                .and_then(|a| a.envelope.shared_id())
                .map(|id| id.to_string())
                .unwrap_or_default(),
            None => String::new(),
        };
        let mut call = DELIVER_SHARED
            .call()
            .key(keys.devices(send.to))
            .key(keys.group_marks(send.to))
            .arg(send.entries.len())
            .arg(self.caps.max)
            .arg(self.caps.ttl_secs)
            .arg(self.now_ms)
            .arg(u8::from(send.online_only))
            .arg(self.pop_batch)
            .arg(self.caps.max_bytes)
            .arg(self.lease_until_ms)
            .arg(self.caps.new_part.0)
            .arg(self.caps.new_part.1)
            .arg(self.most_evictions)
            .arg(mark)
            .arg(send.remember_ms.unwrap_or(0))
            .arg(self.most_marks);
        // Per target: TARGET_KEYS keys and TARGET_FIELDS arguments.
        for a in &send.entries {
            let device = DeviceAddress::new(send.to, a.device_id);
            call = call
                .keys(keys.device_store(device))
                .key(keys.conns(device))
                .key(keys.ack_conns(device))
                .arg(a.device_id)
                .arg(a.registration_id.map(|r| r.to_string()).unwrap_or_default())
                .arg(envelope::encode(&a.envelope));
        }
        call
    }

    /// The reply, with each outcome given the device of its target (they come in the send's
    /// order).
    pub(crate) fn decode(&self, reply: Value) -> Result<(SharedFanned, Removed)> {
        let mut reply = Reply::new(&DELIVER_SHARED, reply)?;
        let mut removed = Removed::default();
        let fanned = match reply.tag() {
            "already" => SharedFanned::Already,
            "done" => SharedFanned::Done(
                self.send
                    .entries
                    .iter()
                    .map(|a| {
                        let one = reply.nested("outcome")?;
                        let delivery = match one.tag() {
                            "gone" => {
                                one.end()?;
                                Delivery::Dropped
                            }
                            _ => outcome(one)?,
                        };
                        Ok((a.device_id, delivery))
                    })
                    .collect::<Result<_>>()?,
            ),
            _ => return Err(reply.unknown()),
        };
        if let SharedFanned::Done(_) = fanned {
            removed = Removed::read(&mut reply)?;
        }
        reply.end()?;
        Ok((fanned, removed))
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{constant, named, shape};
    use super::*;
    use crate::storage::{Addressed, StoredEnvelope};
    use uuid::Uuid;

    fn send(targets: usize, remember: bool) -> SharedFanout {
        SharedFanout {
            to: Uuid::nil(),
            online_only: false,
            remember_ms: remember.then_some(1000),
            entries: (0..targets)
                .map(|i| Addressed {
                    device_id: i as u32 + 1,
                    registration_id: Some(7),
                    envelope: StoredEnvelope::shared(1, Uuid::from_u128(9), Uuid::nil()),
                })
                .collect(),
        }
    }

    fn deliver(send: &SharedFanout) -> DeliverShared<'_> {
        DeliverShared {
            send,
            caps: InboxCaps {
                max: 1,
                max_bytes: 1,
                ttl_secs: 1,
                new_part: (1, 1),
            },
            now_ms: 0,
            lease_until_ms: 0,
            pop_batch: 1,
            most_evictions: 1,
            most_marks: 1,
        }
    }

    #[test]
    fn the_call_has_the_layout_the_script_names() {
        let (keys, args) = named(&DELIVER_SHARED);
        let none = send(0, false);
        assert_eq!(
            shape(&deliver(&none).call(&RedisKeys::new(""))),
            (keys, args)
        );
        assert_eq!(constant(&DELIVER_SHARED, "TARGET_KEYS_AT"), keys + 1);
        assert_eq!(constant(&DELIVER_SHARED, "TARGET_FIELDS_AT"), args + 1);
        let per_target = (
            constant(&DELIVER_SHARED, "TARGET_KEYS"),
            constant(&DELIVER_SHARED, "TARGET_FIELDS"),
        );
        let two = send(2, true);
        let call = deliver(&two).call(&RedisKeys::new(""));
        assert_eq!(
            shape(&call),
            (keys + 2 * per_target.0, args + 2 * per_target.1)
        );
        assert_eq!(call.args[11], Uuid::from_u128(9).to_string().into_bytes());
    }

    #[test]
    fn replies_decode_and_anything_else_is_an_error() {
        let s = |t: &str| Value::BulkString(t.as_bytes().to_vec());
        let a = Value::Array;
        let two = send(2, false);
        let d = deliver(&two);
        let done = a(vec![
            s("done"),
            a(vec![s("gone")]),
            a(vec![s("queued")]),
            Value::Int(0),
            Value::Int(3),
            a(vec![]),
        ]);
        assert_eq!(
            d.decode(done).unwrap(),
            (
                SharedFanned::Done(vec![(1, Delivery::Dropped), (2, Delivery::Queued)]),
                Removed {
                    evicted: 0,
                    expired: 3,
                    bodies: vec![],
                }
            )
        );
        assert_eq!(
            d.decode(a(vec![s("already")])).unwrap().0,
            SharedFanned::Already
        );
        assert!(d
            .decode(a(vec![s("done"), a(vec![s("gone")]), a(vec![s("queued")])]))
            .is_err());
        assert!(d.decode(a(vec![s("done"), a(vec![s("gone")])])).is_err());
        assert!(d.decode(a(vec![s("stale")])).is_err());
    }
}
