//! Writing what was taken from a device's inbox to its connections, and settling it in the
//! inbox: one writer for the push after a send and for `fetch` (and for any fan-out that takes
//! envelopes for a device and holds its connections).

use std::collections::HashMap;
use std::sync::Arc;

use uuid::Uuid;

use super::Relay;
use crate::error::{Error, Result};
use crate::frames::{pack_messages, Delivery};
use crate::metrics::{self, MessageEvent};
use crate::model::DeviceAddress;
use crate::storage::{Content, Delivery as Stored, PushError, StoredEnvelope, POP_BATCH};

/// Where a device's envelopes may be written: its live connections, best first (latest-ending
/// registration), and those of them in ack mode.
pub(super) struct Route {
    pub device: DeviceAddress,
    pub connections: Vec<String>,
    pub acking: Vec<String>,
}

/// Envelopes taken out of a device's inbox to be written.
pub(super) struct Taken {
    pub envelopes: Vec<StoredEnvelope>,
    /// They wait in the device's in-flight list, leased until then; `None`: handed over without
    /// being stored.
    pub lease_until: Option<u64>,
    /// What is not written goes back to the head of the inbox, in order; otherwise it is
    /// dropped (an online-only send).
    pub requeue: bool,
    /// A group send's envelope the caller holds (its id and JSON): entries pointing at it are
    /// not read back from the inbox.
    pub known: Option<Known>,
}

/// A group send's envelope, by id, as its sender stored it.
#[derive(Clone)]
pub(super) struct Known {
    pub id: Uuid,
    pub json: Arc<str>,
}

/// Envelopes ready to be written, each with its client JSON.
type Ready = Vec<(StoredEnvelope, String)>;

/// No frame is written at or after `at_ms` once one has been (`wrote`: by an earlier batch of
/// the same fetch), so every fetch makes progress and none outlives its function.
#[derive(Clone, Copy)]
pub(super) struct Deadline {
    pub at_ms: u64,
    pub wrote: bool,
}

/// What became of envelopes given to [`Relay::write`].
pub(super) struct Written {
    /// The unexpired envelopes no connection took, in order.
    pub unsent: Vec<StoredEnvelope>,
    /// How many envelopes were written.
    pub sent: usize,
    /// At least one frame was written.
    pub wrote: bool,
    /// The last connection tried stopped taking frames (it is dropped from the registry when
    /// gone).
    pub failure: Option<PushError>,
    /// Writing stopped at the deadline.
    pub late: bool,
    /// Whether the inbox recorded the outcome (the leased envelopes settled, or the unsent put
    /// back); when it did not, leased envelopes stay in flight until their lease ends.
    pub recorded: Result<()>,
}

/// Counts what storing a send did in each device's inbox: `stored` for each entry written into
/// one, `dropped` for each refused by the inbox's caps (an online-only send to a device that is
/// not connected is refused by no cap: it is not counted). The older envelopes the same step
/// evicted to make room, and the expired ones it dropped, the inbox adapter counts as it reads
/// them from the step's reply.
pub(super) fn count_stored<'a>(outcomes: impl IntoIterator<Item = &'a Stored>, online_only: bool) {
    let (mut stored, mut dropped) = (0, 0);
    for outcome in outcomes {
        match outcome {
            Stored::Dropped if !online_only => dropped += 1,
            outcome if outcome.stored() => stored += 1,
            _ => {}
        }
    }
    metrics::messages(MessageEvent::Stored, stored);
    metrics::messages(MessageEvent::Dropped, dropped);
}

impl Relay {
    /// One device's part of a stored send (`sent`, its envelope): when the device is online,
    /// what was taken for it is written ([`Self::write`]), and the send counts as delivered
    /// there only if its own envelope was written.
    pub(super) async fn push_stored(
        &self,
        device: DeviceAddress,
        outcome: Stored,
        sent: &StoredEnvelope,
        online_only: bool,
        lease_until: u64,
        known: Option<Known>,
    ) -> Delivery {
        let (connections, acking, envelopes, in_flight) = match outcome {
            Stored::Dropped => return Delivery::Dropped,
            Stored::Queued => return Delivery::Queued,
            Stored::Online {
                connections,
                ack_connections,
                envelopes,
                in_flight,
            } => (connections, ack_connections, envelopes, in_flight),
        };
        // With a long backlog the new envelope may not be among those taken.
        let taken_sent = envelopes.contains(sent);
        let route = Route {
            device,
            connections,
            acking,
        };
        let taken = Taken {
            envelopes,
            lease_until: in_flight.then_some(lease_until),
            requeue: !online_only,
            known,
        };
        let written = self.write(&route, taken, None).await;
        metrics::messages(MessageEvent::Pushed, written.sent as u64);
        // On failure they stay in flight and a fetch after the lease gets them back.
        if let Err(e) = written.recorded {
            e.log();
        }
        match (taken_sent && !written.unsent.contains(sent), online_only) {
            (true, _) => Delivery::Delivered,
            (false, true) => Delivery::Dropped,
            (false, false) => Delivery::Queued,
        }
    }

    /// Writes `taken` to the route's connections in frames, in order, moving on to the next
    /// connection when one fails (one found gone leaves the registry). Expired envelopes are
    /// dropped, and so are group entries whose envelope expired; one that could not be read
    /// is not written, nor anything after it (they stay, in order). What was written to an ack-mode connection stays in flight until acknowledged;
    /// the rest of a leased batch leaves the in-flight list, its unsent part back at the head
    /// (when `requeue`).
    pub(super) async fn write(
        &self,
        route: &Route,
        taken: Taken,
        deadline: Option<Deadline>,
    ) -> Written {
        let now = self.clock.now_ms();
        let live: Vec<StoredEnvelope> = taken
            .envelopes
            .iter()
            .filter(|e| !e.is_expired(now))
            .cloned()
            .collect();
        let expired = taken.envelopes.len() - live.len();
        metrics::messages(MessageEvent::Expired, expired as u64);
        let (mut pending, held) = self.resolve(live, taken.known.as_ref()).await;
        let mut awaiting_ack: Vec<StoredEnvelope> = Vec::new();
        // Disappearing messages written for good: their own envelopes go now.
        let mut delivered_own: Vec<Uuid> = Vec::new();
        let (mut wrote, mut failure, mut late) = (false, None, false);
        let mut sent = 0;
        for conn in &route.connections {
            if pending.is_empty() || late {
                break;
            }
            let stop = deadline.map(|d| Deadline {
                wrote: d.wrote || wrote,
                ..d
            });
            let frames = self.write_frames(conn, &pending, stop).await;
            wrote |= frames.sent > 0;
            sent += frames.sent;
            late = frames.late;
            let written = pending.drain(..frames.sent).map(|(e, _)| e);
            if route.acking.contains(conn) {
                awaiting_ack.extend(written);
            } else {
                delivered_own.extend(written.filter_map(|e| e.own_id()));
            }
            if let Some(PushError::Gone) = frames.failure {
                match self.registry.remove(route.device, conn).await {
                    Ok(()) => {
                        self.presence
                            .disconnected(self.pusher.as_ref(), route.device.user_id, conn)
                            .await
                    }
                    Err(e) => e.log(),
                }
            }
            failure = frames.failure;
        }
        let pending: Vec<StoredEnvelope> =
            pending.into_iter().map(|(e, _)| e).chain(held).collect();
        let recorded = self
            .settle(route.device, taken, &awaiting_ack, &pending)
            .await;
        if !delivered_own.is_empty() {
            if let Err(e) = self.inbox.delete_own(&delivered_own).await {
                e.log();
            }
        }
        Written {
            unsent: pending,
            sent,
            wrote,
            failure,
            late,
            recorded,
        }
    }

    /// The client JSON of each envelope, in order: a group entry's is read from the inbox
    /// (unless `known`), and one whose envelope expired is dropped. When reading fails, the
    /// entry and everything after it are held back (second), to be kept in order.
    async fn resolve(
        &self,
        envelopes: Vec<StoredEnvelope>,
        known: Option<&Known>,
    ) -> (Ready, Vec<StoredEnvelope>) {
        let known_id = known.map(|k| k.id);
        let mut ids: Vec<Uuid> = envelopes
            .iter()
            .filter_map(StoredEnvelope::shared_id)
            .filter(|id| Some(*id) != known_id)
            .collect();
        ids.sort_unstable();
        ids.dedup();
        let found: Option<HashMap<Uuid, Option<String>>> = if ids.is_empty() {
            Some(HashMap::new())
        } else {
            match self.inbox.shared(&ids).await {
                Ok(jsons) => Some(ids.into_iter().zip(jsons).collect()),
                Err(e) => {
                    e.log();
                    None
                }
            }
        };
        let (mut ready, mut held) = (Vec::new(), Vec::new());
        let mut expired = 0;
        for e in envelopes {
            if !held.is_empty() {
                held.push(e);
                continue;
            }
            let json = match e.content() {
                Content::Json(json) => json.clone(),
                Content::Shared { id, .. } => match (known, &found) {
                    (Some(k), _) if k.id == *id => k.json.to_string(),
                    (_, Some(found)) => match found.get(id) {
                        Some(Some(json)) => json.clone(),
                        // Expired with its entries' inbox TTL: dropped, as they are.
                        _ => {
                            expired += 1;
                            continue;
                        }
                    },
                    (_, None) => {
                        held.push(e);
                        continue;
                    }
                },
            };
            ready.push((e, json));
        }
        metrics::messages(MessageEvent::Expired, expired);
        (ready, held)
    }

    /// Writes envelopes to one connection in frames until one fails or the deadline passes.
    async fn write_frames(
        &self,
        connection_id: &str,
        envelopes: &[(StoredEnvelope, String)],
        deadline: Option<Deadline>,
    ) -> Frames {
        let mut frames = Frames {
            sent: 0,
            failure: None,
            late: false,
        };
        for (frame, count) in pack_messages(envelopes.iter().map(|(_, json)| json.as_str())) {
            if let Some(d) = deadline {
                if (d.wrote || frames.sent > 0) && self.clock.now_ms() >= d.at_ms {
                    frames.late = true;
                    break;
                }
            }
            match self.pusher.push(connection_id, &frame).await {
                Ok(()) => frames.sent += count,
                Err(e) => {
                    if let PushError::Failed(detail) = &e {
                        tracing::warn!(connection_id, detail = %detail, "push failed");
                    }
                    frames.failure = Some(e);
                    break;
                }
            }
        }
        frames
    }

    /// Records in the inbox what became of `taken`: a leased batch leaves the in-flight list
    /// but for what awaits an acknowledgement, its `unsent` part back at the head when
    /// `requeue`; envelopes handed over unstored are put back only when unsent and `requeue`.
    async fn settle(
        &self,
        device: DeviceAddress,
        taken: Taken,
        awaiting_ack: &[StoredEnvelope],
        unsent: &[StoredEnvelope],
    ) -> Result<()> {
        let unsent = if taken.requeue { unsent } else { &[] };
        let Some(lease_until) = taken.lease_until else {
            return match unsent {
                [] => Ok(()),
                unsent => self.inbox.requeue(device, unsent).await,
            };
        };
        let settled: Vec<StoredEnvelope> = taken
            .envelopes
            .into_iter()
            .filter(|e| !awaiting_ack.contains(e))
            .collect();
        // Everything taken awaits an acknowledgement: nothing to settle.
        if settled.is_empty() {
            return Ok(());
        }
        self.inbox
            .settle_in_flight(device, &settled, lease_until, unsent)
            .await
    }

    /// `fetch`: writes the inbox to the connection, oldest first; `Ok` means drained. Each batch
    /// waits in the inbox's in-flight list while it is written, so a function that crashes or
    /// times out mid-fetch loses nothing (a fetch after the lease puts it back). After
    /// `fetch_deadline` no further frame is written (the first always is, so every fetch makes
    /// progress): the rest stays in the inbox and the answer is `FetchUnfinished`.
    pub async fn fetch(&self, connection_id: &str) -> Result<()> {
        let registration = self.frame_from(connection_id).await?;
        let device = registration.device();
        let started = self.clock.now_ms();
        let at_ms = started + self.timings.fetch_deadline.as_millis() as u64;
        let lease_until = started + self.timings.fetch_lease.as_millis() as u64;
        let connections = vec![connection_id.to_string()];
        let route = Route {
            device,
            acking: if registration.ack {
                connections.clone()
            } else {
                vec![]
            },
            connections,
        };
        let mut wrote = false;
        loop {
            let now = self.clock.now_ms();
            if wrote && now >= at_ms {
                return match self.inbox.pending(device, now).await? {
                    0 => Ok(()),
                    _ => Err(Error::FetchUnfinished),
                };
            }
            let envelopes = self
                .inbox
                .take_in_flight(device, POP_BATCH, lease_until, now)
                .await?;
            if envelopes.is_empty() {
                return Ok(());
            }
            let taken = Taken {
                envelopes,
                lease_until: Some(lease_until),
                requeue: true,
                known: None,
            };
            let written = self
                .write(&route, taken, Some(Deadline { at_ms, wrote }))
                .await;
            metrics::messages(MessageEvent::Fetched, written.sent as u64);
            wrote |= written.wrote;
            written.recorded?;
            match written.failure {
                None if written.late => return Err(Error::FetchUnfinished),
                None => {}
                Some(_) => {
                    return Err(Error::Unavailable(
                        "connection could not be written; messages kept".into(),
                    ))
                }
            }
        }
    }
}

/// How far writing to one connection went.
struct Frames {
    /// Envelopes written, from the first.
    sent: usize,
    failure: Option<PushError>,
    late: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::recorded::Recorded;

    fn online(in_flight: bool) -> Stored {
        Stored::Online {
            connections: vec!["c".into()],
            ack_connections: vec![],
            envelopes: vec![],
            in_flight,
        }
    }

    #[test]
    fn stored_counts_entries_written_and_dropped_counts_refusals_by_a_cap() {
        let recorded = Recorded::default();
        ::metrics::with_local_recorder(&recorded, || {
            let outcomes = [
                Stored::Queued,
                online(true),
                online(false),
                Stored::Dropped,
                Stored::Queued,
            ];
            count_stored(&outcomes, false);
            // Online only: nothing is stored, and a device offline is no refusal by a cap.
            count_stored(&[online(false), Stored::Dropped], true);
        });
        assert_eq!(
            recorded.series(),
            [
                ("relay_messages_total{event=dropped}".to_string(), 1),
                ("relay_messages_total{event=stored}".to_string(), 3),
            ]
            .into()
        );
    }
}
