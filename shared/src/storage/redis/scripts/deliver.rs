//! `deliver.lua`: a send to every device of one recipient, checked and stored in one step.

use redis::Value;
use uuid::Uuid;

use super::{Call, InboxCaps, Reply, DELIVER};
use crate::error::Result;
use crate::model::{DeviceAddress, DeviceId};
use crate::storage::redis::{envelope, RedisKeys};
use crate::storage::{Delivery, Fanned, Fanout};

/// What a call to `deliver.lua` takes, by name.
pub(crate) struct Deliver<'a> {
    pub send: &'a Fanout,
    pub caps: InboxCaps,
    pub now_ms: u64,
    /// Lease end of what the call takes into flight.
    pub lease_until_ms: u64,
    /// Most envelopes taken out to push.
    pub pop_batch: usize,
    pub most_evictions: u32,
}

impl Deliver<'_> {
    pub(crate) fn call(&self, keys: &RedisKeys) -> Call {
        let send = self.send;
        let mut call = DELIVER
            .call()
            .key(keys.devices(send.to))
            .arg(send.envelopes.len())
            .arg(self.caps.max)
            .arg(self.caps.ttl_secs)
            .arg(self.now_ms)
            .arg(u8::from(send.online_only))
            .arg(self.pop_batch)
            .arg(self.caps.max_bytes)
            .arg(self.lease_until_ms)
            .arg(
                send.sender_device
                    .map(|d| d.to_string())
                    .unwrap_or_default(),
            )
            .arg(u8::from(send.legacy))
            .arg(self.caps.new_part.0)
            .arg(self.caps.new_part.1)
            .arg(self.most_evictions);
        // Per target: TARGET_KEYS keys and TARGET_FIELDS arguments.
        for a in &send.envelopes {
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
    /// order), and what the step removed from the inboxes.
    pub(crate) fn decode(&self, reply: Value) -> Result<(Fanned, Removed)> {
        let mut reply = Reply::new(&DELIVER, reply)?;
        let mut removed = Removed::default();
        let fanned = match reply.tag() {
            "unknown_recipient" => Fanned::UnknownInbox,
            "mismatched" => Fanned::Mismatched {
                missing: reply.field::<Vec<DeviceId>>("missing devices")?,
                extra: reply.field("extra devices")?,
                targets: reply.field("targets")?,
            },
            "stale" => Fanned::Stale(reply.field("stale devices")?),
            "done" => Fanned::Done(
                self.send
                    .envelopes
                    .iter()
                    .map(|a| Ok((a.device_id, outcome(reply.nested("outcome")?)?)))
                    .collect::<Result<_>>()?,
            ),
            _ => return Err(reply.unknown()),
        };
        if let Fanned::Done(_) = fanned {
            removed = Removed::read(&mut reply)?;
        }
        reply.end()?;
        Ok((fanned, removed))
    }
}

/// Envelopes a delivery step removed from the inboxes it stored into: `evicted` to make room
/// within the caps, `expired` dropped from a head as it stored; `bodies`, the envelope ids of
/// the evicted disappearing messages, whose bodies (keys in other slots) the caller deletes.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Removed {
    pub evicted: u64,
    pub expired: u64,
    pub bodies: Vec<Uuid>,
}

impl Removed {
    /// The last three fields of a `done` reply.
    pub(super) fn read(reply: &mut Reply) -> Result<Self> {
        let evicted = reply.field("evicted")?;
        let expired = reply.field("expired")?;
        let bodies: Vec<String> = reply.field("evicted bodies")?;
        Ok(Self {
            evicted,
            expired,
            // Only ids this relay wrote are ever pointed at; anything else names no body.
            bodies: bodies
                .iter()
                .filter_map(|b| Uuid::parse_str(b).ok())
                .collect(),
        })
    }

    /// Counted as messages dropped by an inbox cap, and found expired.
    pub(crate) fn record(&self) {
        use crate::metrics::{messages, MessageEvent};
        messages(MessageEvent::Dropped, self.evicted);
        messages(MessageEvent::Expired, self.expired);
    }
}

/// One target's outcome; its device id is the caller's (outcomes come in the send's order).
pub(super) fn outcome(mut reply: Reply) -> Result<Delivery> {
    let online = |reply: &mut Reply, in_flight: bool| -> Result<Delivery> {
        let connections = reply.field("connections")?;
        let entries: Vec<String> = reply.field("entries")?;
        let ack_connections = if in_flight {
            reply.field("ack-mode connections")?
        } else {
            Vec::new()
        };
        Ok(Delivery::Online {
            connections,
            ack_connections,
            envelopes: entries.iter().map(|e| envelope::decode(e)).collect(),
            in_flight,
        })
    };
    match reply.tag() {
        "dropped" => Ok(Delivery::Dropped),
        "queued" => Ok(Delivery::Queued),
        "handed_over" => online(&mut reply, false),
        "in_flight" => online(&mut reply, true),
        _ => Err(reply.unknown()),
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{constant, named, shape};
    use super::*;
    use crate::storage::{Addressed, StoredEnvelope};
    use uuid::Uuid;

    fn send(targets: usize) -> Fanout {
        Fanout {
            to: Uuid::nil(),
            sender_device: None,
            legacy: false,
            online_only: false,
            envelopes: (0..targets)
                .map(|i| Addressed {
                    device_id: i as DeviceId + 1,
                    registration_id: Some(7),
                    envelope: StoredEnvelope::new(1, "{}"),
                })
                .collect(),
        }
    }

    fn deliver(send: &Fanout) -> Deliver<'_> {
        Deliver {
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
        }
    }

    #[test]
    fn the_call_has_the_layout_the_script_names() {
        let (keys, args) = named(&DELIVER);
        let none = send(0);
        assert_eq!(
            shape(&deliver(&none).call(&RedisKeys::new(""))),
            (keys, args)
        );
        assert_eq!(constant(&DELIVER, "TARGET_KEYS_AT"), keys + 1);
        assert_eq!(constant(&DELIVER, "TARGET_FIELDS_AT"), args + 1);
        let per_target = (
            constant(&DELIVER, "TARGET_KEYS"),
            constant(&DELIVER, "TARGET_FIELDS"),
        );
        let two = send(2);
        assert_eq!(
            shape(&deliver(&two).call(&RedisKeys::new(""))),
            (keys + 2 * per_target.0, args + 2 * per_target.1)
        );
    }

    #[test]
    fn replies_decode_and_anything_else_is_an_error() {
        let s = |t: &str| Value::BulkString(t.as_bytes().to_vec());
        let a = Value::Array;
        let four = send(4);
        let evicted_body = Uuid::new_v4();
        let done = a(vec![
            s("done"),
            a(vec![s("queued")]),
            a(vec![s("handed_over"), a(vec![s("c1")]), a(vec![s("5|{}")])]),
            a(vec![
                s("in_flight"),
                a(vec![s("c1")]),
                a(vec![s("5|{}")]),
                a(vec![s("c1")]),
            ]),
            a(vec![s("dropped")]),
            Value::Int(2),
            Value::Int(1),
            a(vec![s(&evicted_body.to_string())]),
        ]);
        let (Fanned::Done(outcomes), removed) = deliver(&four).decode(done.clone()).unwrap() else {
            panic!("done")
        };
        assert_eq!(
            removed,
            Removed {
                evicted: 2,
                expired: 1,
                bodies: vec![evicted_body],
            }
        );
        assert_eq!(outcomes.len(), 4);
        assert_eq!(outcomes[0], (1, Delivery::Queued));
        assert!(matches!(
            &outcomes[1].1,
            Delivery::Online { in_flight: false, ack_connections, .. } if ack_connections.is_empty()
        ));
        assert!(matches!(
            &outcomes[2].1,
            Delivery::Online { in_flight: true, ack_connections, .. } if ack_connections.len() == 1
        ));
        assert_eq!(outcomes[3], (4, Delivery::Dropped));
        let one = send(1);
        let d = deliver(&one);
        assert!(d.decode(done).is_err(), "more outcomes than targets");
        assert_eq!(
            d.decode(a(vec![s("stale"), a(vec![Value::Int(2)])]))
                .unwrap()
                .0,
            Fanned::Stale(vec![2])
        );
        assert_eq!(
            d.decode(a(vec![s("unknown_recipient")])).unwrap().0,
            Fanned::UnknownInbox
        );
        assert!(
            d.decode(a(vec![s("done"), a(vec![s("queued")])])).is_err(),
            "a done reply without what it removed"
        );
        assert!(d.decode(a(vec![s("mismatched"), a(vec![])])).is_err());
        assert!(d.decode(a(vec![s("done"), a(vec![s("lost")])])).is_err());
        assert!(d.decode(a(vec![s("done")])).is_err());
        assert!(d.decode(a(vec![Value::Int(1)])).is_err());
    }
}
