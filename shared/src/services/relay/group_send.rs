//! A group send: one ciphertext for every member device. The roster is read strongly consistent
//! at the start of every send (a send that starts after a removal answered never reaches the
//! removed member), the device map is checked against every joined member's devices and answered
//! in one list, then the envelope is stored once and each device's inbox gets a small entry
//! pointing at it, one atomic step per member in the member's own slot (never one step across
//! slots), and the devices online get it pushed with bounded concurrency within a time budget.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::acks::{remembered, REMEMBERING};
use super::delivery::Known;
use super::Relay;
use crate::error::{Error, Result, UserDevices};
use crate::frames::{Delivery, Envelope, GroupDevice};
use crate::groups::{GroupId, Protocol};
use crate::model::{DeviceAddress, DeviceId, UserId};
use crate::services::Limit;
use crate::storage::{Addressed, Delivery as Stored, SharedFanned, SharedFanout, StoredEnvelope};
use crate::validation;

/// Members stored for at once: each is one script call in the member's slot.
const STORE_CONCURRENCY: usize = 32;

/// What a group `send` frame carries.
#[derive(Debug, Clone)]
pub struct GroupSend {
    pub group_id: String,
    pub body: String,
    /// User id → the devices the sender addresses (every joined member's, the sending device
    /// left out).
    pub devices: BTreeMap<String, Vec<GroupDevice>>,
    pub online_only: bool,
    /// A disappearing message: seconds (checked by `send_group`).
    pub expires_in: Option<u64>,
}

/// The outcome of a group send, counted over member devices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupSent {
    pub group_id: GroupId,
    /// `dropped` if any device's is, else `queued` if any device's is, else `delivered`.
    pub delivery: Delivery,
    pub delivered: u32,
    pub queued: u32,
    pub dropped: u32,
}

/// The device map of a send, by member.
pub(super) type DeviceMap = BTreeMap<UserId, Vec<GroupDevice>>;

/// Whom a fan-out reaches: member devices (with the registration ids they were checked with).
pub(super) struct Targets<'a> {
    pub group_id: GroupId,
    pub devices: &'a DeviceMap,
    pub online_only: bool,
    /// A notice of the MLS Commit accepted at this epoch (the envelope's `mls_epoch`).
    pub mls_epoch: Option<u64>,
    /// A disappearing message: seconds after which it is never delivered, and its envelope
    /// (stored once, with Redis deleting it then) is gone.
    pub expires_in: Option<u64>,
}
/// Each member's devices (device id, registration id), sorted.
pub(super) type Current = HashMap<UserId, Vec<(DeviceId, u32)>>;

/// How a device map compares with the members' devices.
#[derive(Debug, PartialEq, Eq)]
enum Check {
    Matches,
    /// Devices missing or in excess (members not joined: all their devices), per user.
    Mismatched(Vec<UserDevices>),
    /// Registration ids that changed, per member.
    Stale(Vec<UserDevices>),
}

impl Relay {
    /// `send` with `group_id`: relays one ciphertext to every device of the group's joined
    /// members but the sending one. From an ack-mode connection a send with an id is remembered:
    /// a repeat stores nothing twice (after a failure part way, it stores what was missing).
    pub async fn send_group(
        &self,
        connection_id: &str,
        send: GroupSend,
        id: Option<&str>,
    ) -> Result<GroupSent> {
        self.check_expires_in(send.expires_in)?;
        let from = self.sender(connection_id).await?;
        let new_account = self.clock.now_ms() < from.new_account_until_ms;
        let sender = from.device();
        let Some(id) = id.filter(|_| from.ack) else {
            return self.group_send_from(sender, new_account, &send, None).await;
        };
        let hash = content_hash(&send);
        if let Some(answer) = self.claim(sender, id, &hash).await? {
            return remembered(&answer);
        }
        let envelope_id = repeatable_id(sender, id);
        match self
            .group_send_from(sender, new_account, &send, Some(envelope_id))
            .await
        {
            Ok(sent) if sent.delivered + sent.queued > 0 => {
                self.record_send(sender, id, &hash, &sent).await?;
                Ok(sent)
            }
            // Nothing stored, or stored part way (the members given it remember it): a repeat
            // sends again.
            other => {
                self.forget_send(sender, id).await;
                other
            }
        }
    }

    async fn group_send_from(
        &self,
        from: DeviceAddress,
        new_account: bool,
        send: &GroupSend,
        repeatable: Option<Uuid>,
    ) -> Result<GroupSent> {
        let bytes = self.body_bytes(&send.body)?;
        let map = device_map(&send.devices)?;
        let addressed: usize = map.values().map(Vec::len).sum();
        self.charge_group_send(from.user_id, bytes.len(), addressed)
            .await?;
        let group_id = Uuid::parse_str(&send.group_id).map_err(|_| Error::NotAMember)?;
        let group = self.groups.get(group_id).await?;
        let roster = group.as_ref().map_or(0, |g| g.members.len());
        self.charge_roster(from.user_id, roster, addressed).await?;
        let Some(group) = group.filter(|g| g.is_member(from.user_id)) else {
            return Err(Error::NotAMember);
        };
        let map = match group.protocol {
            Protocol::Mls => self.mls_targets(from, &group, &bytes, addressed).await?,
            Protocol::Signal => {
                let members: Vec<UserId> = group.joined().collect();
                self.check_devices(from, &members, &map).await?;
                map
            }
        };
        let targets = Targets {
            group_id,
            devices: &map,
            online_only: send.online_only,
            mls_epoch: None,
            expires_in: send.expires_in,
        };
        self.fan_out(from, new_account, &bytes, targets, repeatable)
            .await
    }

    /// Stores `bytes` once as an envelope of the group and gives each device of `targets` an
    /// entry pointing at it (one atomic step per member, in the member's slot), then pushes to
    /// the devices online. The devices were checked by the caller; one removed or registered
    /// again since gets nothing.
    pub(super) async fn fan_out(
        &self,
        from: DeviceAddress,
        new_account: bool,
        bytes: &[u8],
        targets: Targets<'_>,
        repeatable: Option<Uuid>,
    ) -> Result<GroupSent> {
        let Targets {
            group_id,
            devices: map,
            online_only,
            mls_epoch,
            expires_in,
        } = targets;
        let addressed: usize = map.values().map(Vec::len).sum();
        let now = self.clock.now_ms();
        let mut sent = GroupSent {
            group_id,
            delivery: Delivery::Delivered,
            delivered: 0,
            queued: 0,
            dropped: 0,
        };
        if addressed == 0 {
            return Ok(sent);
        }
        let id = repeatable.unwrap_or_else(Uuid::new_v4);
        let expires_at = expires_in.map(|secs| now + secs * 1000);
        let json = serde_json::to_string(&Envelope {
            id,
            from: from.user_id,
            source_device: from.device_id,
            sent_at: now,
            group_id: Some(group_id),
            mls_epoch,
            expires_at,
            body: validation::encode(bytes),
        })
        .map_err(|e| Error::Internal(e.to_string()))?;
        let lease = now + self.timings.fetch_lease.as_millis() as u64;
        // An online-only send is only handed over, within this invocation. A disappearing
        // message's envelope and entries expire with it (Redis deletes the envelope then).
        let expires = match online_only {
            true => lease,
            false => now + self.inbox_limits.ttl.as_millis() as u64,
        };
        let expires = expires_at.map_or(expires, |at| expires.min(at));
        self.inbox.put_shared(id, &json, expires).await?;
        let entry =
            StoredEnvelope::shared(expires, id, from.user_id).sent_by_new_account(new_account);

        // One script call per member, each in the member's slot.
        // Collected first: a lazy iterator of futures borrowing `self` would make the caller's
        // future not `Send` (a closure's higher-ranked lifetimes).
        let stores: Vec<_> = map
            .iter()
            .map(|(&member, devices)| {
                let fanout = SharedFanout {
                    to: member,
                    online_only,
                    entries: devices
                        .iter()
                        .map(|d| Addressed {
                            device_id: d.device_id,
                            registration_id: Some(d.registration_id),
                            envelope: entry.clone(),
                        })
                        .collect(),
                    remember_ms: repeatable.map(|_| REMEMBERING.window_ms),
                };
                async move {
                    let outcome = self.inbox.deliver_shared(&fanout, now, lease).await;
                    (fanout, outcome)
                }
            })
            .collect();
        let stored: Vec<_> = futures::stream::iter(stores)
            .buffer_unordered(STORE_CONCURRENCY)
            .collect()
            .await;
        let mut unstored = Vec::new();
        let mut online = Vec::new();
        for (fanout, outcome) in stored {
            match outcome {
                Ok(SharedFanned::Already) => sent.queued += fanout.entries.len() as u32,
                Ok(SharedFanned::Done(outcomes)) => {
                    super::delivery::count_stored(outcomes.iter().map(|(_, d)| d), online_only);
                    for (device_id, outcome) in outcomes {
                        let device = DeviceAddress::new(fanout.to, device_id);
                        match outcome {
                            Stored::Queued => sent.queued += 1,
                            Stored::Dropped => sent.dropped += 1,
                            online_now => online.push((device, online_now)),
                        }
                    }
                }
                Err(e) => {
                    e.log();
                    unstored.push(fanout.to);
                }
            }
        }
        self.push_group(&mut sent, online, &entry, &json, online_only, lease, now)
            .await;
        sent.delivery = match (sent.dropped, sent.queued) {
            (0, 0) => Delivery::Delivered,
            (0, _) => Delivery::Queued,
            _ => Delivery::Dropped,
        };
        if !unstored.is_empty() {
            unstored.sort_unstable();
            return Err(Error::GroupSendIncomplete {
                stored_users: (map.len() - unstored.len()) as u32,
                unstored_users: unstored,
            });
        }
        tracing::debug!(group = %group_id, ?sent, "group message relayed");
        Ok(sent)
    }

    /// Pushes to the devices online, at most `push_concurrency` at once; a device whose turn
    /// comes after `push_budget` is not pushed to, and keeps what was taken for it in its inbox
    /// (as if it were offline).
    #[allow(clippy::too_many_arguments)]
    async fn push_group(
        &self,
        sent: &mut GroupSent,
        online: Vec<(DeviceAddress, Stored)>,
        entry: &StoredEnvelope,
        json: &str,
        online_only: bool,
        lease: u64,
        started: u64,
    ) {
        let known = Known {
            id: entry.shared_id().unwrap_or_default(),
            json: Arc::from(json),
        };
        let budget_end = started + self.group_push.push_budget.as_millis() as u64;
        let pushes: Vec<_> = online
            .into_iter()
            .map(|(device, outcome)| {
                let known = known.clone();
                async move {
                    let outcome = match outcome {
                        // Past the budget: written to no connection, so settled back in the inbox.
                        Stored::Online {
                            ack_connections,
                            envelopes,
                            in_flight,
                            ..
                        } if self.clock.now_ms() >= budget_end => Stored::Online {
                            connections: Vec::new(),
                            ack_connections,
                            envelopes,
                            in_flight,
                        },
                        outcome => outcome,
                    };
                    self.push_stored(device, outcome, entry, online_only, lease, Some(known))
                        .await
                }
            })
            .collect();
        let deliveries: Vec<Delivery> = futures::stream::iter(pushes)
            .buffer_unordered(self.group_push.push_concurrency.max(1))
            .collect()
            .await;
        for d in deliveries {
            match d {
                Delivery::Delivered => sent.delivered += 1,
                Delivery::Queued => sent.queued += 1,
                Delivery::Dropped => sent.dropped += 1,
            }
        }
    }

    /// One step on the sender's slot: the frame, one message, its bytes and one group delivery
    /// per device addressed; a refusal by any takes nothing from the others.
    async fn charge_group_send(&self, sender: UserId, bytes: usize, devices: usize) -> Result<()> {
        let cost = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        self.limiter
            .take_all(&[
                (Limit::Frames { user: sender }, 1),
                (Limit::Messages { sender }, 1),
                (Limit::MessageBytes { sender }, cost(bytes)),
                (Limit::GroupDeliveries { sender }, cost(devices)),
            ])
            .await
    }

    /// A send reads the whole roster and every joined member's device list whatever its map
    /// says: it costs at least one group delivery per roster entry, so a map that leaves members
    /// out (or a group the sender is not in) makes the relay do no more work than the tokens pay
    /// for. Taken after the roster read, as only then is its size known.
    async fn charge_roster(&self, sender: UserId, roster: usize, addressed: usize) -> Result<()> {
        let extra = roster.saturating_sub(addressed);
        if extra == 0 {
            return Ok(());
        }
        let extra = u32::try_from(extra).unwrap_or(u32::MAX);
        self.limiter
            .take_n(Limit::GroupDeliveries { sender }, extra)
            .await
    }

    /// Checks the map against every member's devices (the relay's copy, read from the user
    /// store where it has none). A mismatch is checked once more against the user store's
    /// lists of the members concerned (the copy may lag a link or removal whose last step
    /// failed) before it is answered.
    async fn check_devices(
        &self,
        from: DeviceAddress,
        members: &[UserId],
        map: &DeviceMap,
    ) -> Result<()> {
        let copies = self.inbox.devices_of(members).await?;
        let mut current = Current::new();
        let mut unknown = Vec::new();
        for (&member, copy) in members.iter().zip(copies) {
            match copy {
                Some(devices) => {
                    current.insert(member, devices);
                }
                None => unknown.push(member),
            }
        }
        self.read_devices(&unknown, &mut current).await?;
        let concerned = match compare(from, members, &current, map) {
            Check::Matches => return Ok(()),
            Check::Mismatched(users) | Check::Stale(users) => users,
        };
        let refresh: Vec<UserId> = concerned
            .iter()
            .map(|u| u.user_id)
            .filter(|u| current.contains_key(u) && !unknown.contains(u))
            .collect();
        self.read_devices(&refresh, &mut current).await?;
        match compare(from, members, &current, map) {
            Check::Matches => Ok(()),
            Check::Mismatched(users) => Err(Error::GroupMismatchedDevices(users)),
            Check::Stale(users) => Err(Error::GroupStaleDevices(users)),
        }
    }

    /// Reads these members' devices from the user store into `current`, and refreshes the
    /// relay's copy with them (a member whose account is gone has none).
    pub(super) async fn read_devices(&self, users: &[UserId], current: &mut Current) -> Result<()> {
        let reads: Vec<_> = users
            .iter()
            .map(|&user| async move {
                let list = self.users.devices(user).await?;
                if let Some(list) = &list {
                    self.inbox.set_devices(user, list).await?;
                }
                Ok::<_, Error>((user, list))
            })
            .collect();
        let lists: Vec<_> = futures::stream::iter(reads)
            .buffer_unordered(STORE_CONCURRENCY)
            .try_collect()
            .await?;
        for (user, list) in lists {
            let mut devices: Vec<(DeviceId, u32)> = list
                .map(|l| {
                    l.devices
                        .iter()
                        .map(|d| (d.device_id, d.registration_id))
                        .collect()
                })
                .unwrap_or_default();
            devices.sort_unstable();
            current.insert(user, devices);
        }
        Ok(())
    }
}

/// The frame's map by user id (a key that is not a user id is refused).
fn device_map(devices: &BTreeMap<String, Vec<GroupDevice>>) -> Result<DeviceMap> {
    devices
        .iter()
        .map(|(user, list)| {
            let user = Uuid::parse_str(user).map_err(|_| {
                Error::InvalidFrame(format!("`devices` key {user:?} is not a user id"))
            })?;
            Ok((user, list.clone()))
        })
        .collect()
}

/// The map against every joined member's devices (the sending device left out): device ids
/// first (one list of every user with devices missing or in excess), then registration ids.
fn compare(from: DeviceAddress, members: &[UserId], current: &Current, map: &DeviceMap) -> Check {
    let mut mismatched = Vec::new();
    let mut stale = Vec::new();
    let none = Vec::new();
    for &member in members {
        let expected: Vec<(DeviceId, u32)> = current
            .get(&member)
            .unwrap_or(&none)
            .iter()
            .copied()
            .filter(|&(d, _)| member != from.user_id || d != from.device_id)
            .collect();
        let given = map.get(&member).map(Vec::as_slice).unwrap_or(&[]);
        let mut user = UserDevices {
            user_id: member,
            missing: expected
                .iter()
                .filter(|(d, _)| !given.iter().any(|g| g.device_id == *d))
                .map(|&(d, _)| d)
                .collect(),
            extra: given
                .iter()
                .filter(|g| !expected.iter().any(|(d, _)| *d == g.device_id))
                .map(|g| g.device_id)
                .collect(),
            stale: given
                .iter()
                .filter(|g| {
                    expected
                        .iter()
                        .any(|&(d, r)| d == g.device_id && r != g.registration_id)
                })
                .map(|g| g.device_id)
                .collect(),
        };
        user.missing.sort_unstable();
        user.extra.sort_unstable();
        user.stale.sort_unstable();
        if !user.missing.is_empty() || !user.extra.is_empty() {
            mismatched.push(UserDevices {
                stale: vec![],
                ..user
            });
        } else if !user.stale.is_empty() {
            stale.push(UserDevices {
                missing: vec![],
                extra: vec![],
                ..user
            });
        }
    }
    for (user, given) in map {
        if !members.contains(user) {
            let mut extra: Vec<DeviceId> = given.iter().map(|g| g.device_id).collect();
            extra.sort_unstable();
            mismatched.push(UserDevices {
                user_id: *user,
                missing: vec![],
                extra,
                stale: vec![],
            });
        }
    }
    if !mismatched.is_empty() {
        Check::Mismatched(mismatched)
    } else if !stale.is_empty() {
        Check::Stale(stale)
    } else {
        Check::Matches
    }
}

/// The envelope id of a repeatable send: the same for every attempt with the same id from the
/// same device, so that each member's mark of it makes a repeat store nothing twice.
fn repeatable_id(from: DeviceAddress, id: &str) -> Uuid {
    let mut h = Sha256::new();
    h.update(b"group-send\0");
    h.update(from.user_id.as_bytes());
    h.update(from.device_id.to_be_bytes());
    h.update(id.as_bytes());
    let digest = h.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_random_bytes(bytes).into_uuid()
}

/// What identifies a group send's content: a repeat must be the same send.
fn content_hash(send: &GroupSend) -> String {
    let mut h = Sha256::new();
    h.update(b"group\0");
    h.update(send.group_id.as_bytes());
    h.update([0, u8::from(send.online_only)]);
    // Only when given: the hash of a send without it is the same as before it existed.
    if let Some(secs) = send.expires_in {
        h.update(format!("\0expires_in\0{secs}\0").as_bytes());
    }
    for (user, devices) in &send.devices {
        let mut devices = devices.clone();
        devices.sort_by_key(|d| d.device_id);
        h.update(format!("\0{user}").as_bytes());
        for d in devices {
            h.update(format!("\0{}:{}", d.device_id, d.registration_id).as_bytes());
        }
    }
    h.update(b"\0body\0");
    h.update(send.body.as_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gd(device_id: DeviceId, registration_id: u32) -> GroupDevice {
        GroupDevice {
            device_id,
            registration_id,
        }
    }

    #[test]
    fn the_map_is_compared_with_every_member_in_one_list() {
        let (a, b, c, x) = (
            Uuid::from_u128(1),
            Uuid::from_u128(2),
            Uuid::from_u128(3),
            Uuid::from_u128(9),
        );
        let from = DeviceAddress::new(a, 1);
        let members = [a, b, c];
        let current: Current = [
            (a, vec![(1, 10), (2, 20)]),
            (b, vec![(1, 30)]),
            (c, vec![(1, 40), (3, 41)]),
        ]
        .into_iter()
        .collect();
        let map = |entries: Vec<(UserId, Vec<GroupDevice>)>| -> DeviceMap {
            entries.into_iter().collect()
        };
        let right = map(vec![
            (a, vec![gd(2, 20)]),
            (b, vec![gd(1, 30)]),
            (c, vec![gd(3, 41), gd(1, 40)]),
        ]);
        assert_eq!(compare(from, &members, &current, &right), Check::Matches);
        // The sending device is never a target; c lacks device 3; x is not a member.
        let wrong = map(vec![
            (a, vec![gd(1, 10), gd(2, 20)]),
            (b, vec![gd(1, 30)]),
            (c, vec![gd(1, 40)]),
            (x, vec![gd(2, 1), gd(1, 1)]),
        ]);
        let Check::Mismatched(users) = compare(from, &members, &current, &wrong) else {
            panic!("mismatched")
        };
        let shape: Vec<_> = users
            .iter()
            .map(|u| (u.user_id, u.missing.clone(), u.extra.clone()))
            .collect();
        assert_eq!(
            shape,
            vec![
                (a, vec![], vec![1]),
                (c, vec![3], vec![]),
                (x, vec![], vec![1, 2])
            ]
        );
        let stale = map(vec![
            (a, vec![gd(2, 21)]),
            (b, vec![gd(1, 30)]),
            (c, vec![gd(1, 40), gd(3, 41)]),
        ]);
        assert_eq!(
            compare(from, &members, &current, &stale),
            Check::Stale(vec![UserDevices {
                user_id: a,
                missing: vec![],
                extra: vec![],
                stale: vec![2],
            }])
        );
        // A member missing from the map entirely: all its devices are missing.
        let absent = map(vec![(a, vec![gd(2, 20)]), (b, vec![gd(1, 30)])]);
        let Check::Mismatched(users) = compare(from, &members, &current, &absent) else {
            panic!("mismatched")
        };
        assert_eq!(users[0].missing, vec![1, 3]);
    }

    #[test]
    fn a_repeat_has_the_same_envelope_id_and_content_hash() {
        let from = DeviceAddress::new(Uuid::from_u128(1), 2);
        assert_eq!(repeatable_id(from, "m1"), repeatable_id(from, "m1"));
        assert_ne!(repeatable_id(from, "m1"), repeatable_id(from, "m2"));
        let other = DeviceAddress::new(Uuid::from_u128(1), 3);
        assert_ne!(repeatable_id(from, "m1"), repeatable_id(other, "m1"));
        let send = |body: &str, order: bool| GroupSend {
            group_id: "g".into(),
            body: body.into(),
            devices: [(
                "u".to_string(),
                if order {
                    vec![gd(1, 1), gd(2, 2)]
                } else {
                    vec![gd(2, 2), gd(1, 1)]
                },
            )]
            .into_iter()
            .collect(),
            online_only: false,
            expires_in: None,
        };
        assert_eq!(
            content_hash(&send("QQ==", true)),
            content_hash(&send("QQ==", false))
        );
        assert_ne!(
            content_hash(&send("QQ==", true)),
            content_hash(&send("Qg==", true))
        );
        let expiring = GroupSend {
            expires_in: Some(60),
            ..send("QQ==", true)
        };
        assert_ne!(content_hash(&send("QQ==", true)), content_hash(&expiring));
    }
}
