//! Scenario 8, groups: one group send to 1,500 members' devices (all offline: the round trip
//! and what Redis stores; then 300 of them online: until every online device has it), and many
//! small groups of two-device members sending at once (member devices reached per second,
//! beside scenario 1's one-to-one messages per second).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use relay_tests::devices::Device;
use relay_tests::{Stack, User};
use serde::{Deserialize, Serialize};
use shared::storage::redis::RedisKeys;
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message;

use super::floors;
use super::group_setup::{self, accounts, create_group, primaries, with_linked_devices};
use super::redis_memory::{self, Memory};
use super::scenarios::{self, AckMode, Inbound, Online, Run, Servers};
use super::util::{log, Lat};
use super::ws::{self, GroupTarget, Recipient, WsStream, BODY_BYTES};

/// How big the groups are and how many sends are timed.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Members of the large group, its creator (the sender) included; one device each.
    pub members: usize,
    /// Of them, connected during the online run.
    pub online: usize,
    /// Sends to the large group before anything is measured (each member's inbox accounting
    /// learns the sender on the first).
    pub warmup_sends: usize,
    /// Timed sends to the large group, all members offline.
    pub offline_sends: usize,
    /// Timed sends to the large group with `online` members connected.
    pub online_sends: usize,
    /// Small groups sending at once.
    pub groups: usize,
    /// Members of each small group, two devices each.
    pub group_size: usize,
}

impl Plan {
    pub fn new(quick: bool) -> Self {
        if quick {
            // Small: the quick run (inside ./local/test) only checks that every part works.
            Self {
                members: 50,
                online: 10,
                warmup_sends: 1,
                offline_sends: 5,
                online_sends: 5,
                groups: 5,
                group_size: 4,
            }
        } else {
            Self {
                members: 1500,
                online: 300,
                warmup_sends: 3,
                offline_sends: 50,
                online_sends: 30,
                groups: 100,
                group_size: 10,
            }
        }
    }
}

/// Scenario 8 on one Redis (a node or a cluster).
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct GroupRuns {
    /// The large group, all offline (`None` when its setup failed: see `error`).
    pub offline: Option<GroupOffline>,
    /// The large group with some members connected (run on the single node only).
    #[serde(default)]
    pub online: Option<GroupOnline>,
    /// The small groups sending at once; `msgs_per_s` is member devices reached per second,
    /// `sends_per_s` group sends answered per second.
    pub many: Option<Online>,
    /// Why a part did not run (a setup request refused), when one did not.
    #[serde(default)]
    pub error: Option<String>,
}

/// Scenario 8 in a run: on the single node and on the cluster, beside scenario 1's rates.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Groups {
    pub single: GroupRuns,
    #[serde(default)]
    pub cluster: Option<GroupRuns>,
    /// Scenario 1's one-to-one messages/s in the same run (the reference of `many`).
    pub one_to_one_msgs_per_s: f64,
    /// Scenario 1b's, on the cluster.
    #[serde(default)]
    pub one_to_one_cluster_msgs_per_s: Option<f64>,
    /// Scenario 1's server CPU per message (gateway and Redis), µs.
    #[serde(default)]
    pub one_to_one_cpu_us: Option<f64>,
}

/// The large group, every member offline: each send answered once every member device's inbox
/// is written.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct GroupOffline {
    pub members: usize,
    /// Member devices one send reaches (every member's but the sender's).
    pub devices: u64,
    pub sends: usize,
    /// Decoded bytes of every send's body (the payload), and as base64 in the frame.
    pub body_bytes: usize,
    pub body_base64_bytes: usize,
    /// Bytes of the send frame (most of it the `devices` map).
    pub frame_bytes: usize,
    /// Send → `sent` reply, one send at a time.
    pub latency: Lat,
    /// The replies' counts, added up over the timed sends.
    pub delivered: u64,
    pub queued: u64,
    pub dropped: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    /// Mean length of the newest inbox entry of the devices reached (the entry as stored).
    pub entry_bytes: f64,
    /// Mean length of the newest entry of their lists of who holds each inbox entry.
    #[serde(default)]
    pub holder_bytes: f64,
    /// The envelope those entries point at, stored once: its length (the envelope's JSON) and
    /// its key's `MEMORY USAGE`.
    #[serde(default)]
    pub payload_json_bytes: Option<u64>,
    #[serde(default)]
    pub payload_key_bytes: Option<u64>,
    /// The inbox and holders lists' `MEMORY USAGE` growth over the timed sends, per device and
    /// send.
    pub lists_bytes_per_device: Option<f64>,
    /// Redis' `used_memory` growth over the timed sends, per send (all primaries of a cluster).
    pub used_memory_per_send: Option<f64>,
    /// The storage floor (single node): one pipelined round trip appending an entry-sized value
    /// to as many lists as the send reaches devices.
    #[serde(default)]
    pub floor: Option<Lat>,
}

impl GroupOffline {
    /// `used_memory` growth per send and device reached.
    pub fn used_memory_per_device(&self) -> Option<f64> {
        self.used_memory_per_send
            .map(|b| b / self.devices.max(1) as f64)
    }

    /// The payload as stored once: its key's `MEMORY USAGE` when it was read, else the body.
    pub fn payload_stored(&self) -> u64 {
        self.payload_key_bytes
            .unwrap_or(self.body_base64_bytes as u64)
    }

    /// `used_memory` growth per send, less the payload stored once, per device reached.
    pub fn per_device_beyond_payload(&self) -> Option<f64> {
        self.used_memory_per_send
            .map(|b| (b - self.payload_stored() as f64) / self.devices.max(1) as f64)
    }

    /// What one send stores beyond its per-device entries (the payload, once), from
    /// `used_memory`.
    pub fn payload_share(&self) -> Option<f64> {
        let per_entry = self.lists_bytes_per_device?;
        self.used_memory_per_send
            .map(|b| b - per_entry * self.devices as f64)
    }
}

/// The large group with `online` members connected: each send timed until every online device
/// has read it.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct GroupOnline {
    pub members: usize,
    pub online: usize,
    pub sends: usize,
    /// Send → the last online device reading it, per send.
    pub all_received: Lat,
    /// Send → each online device reading it.
    pub each_received: Lat,
    /// Send → `sent` reply.
    pub sent: Lat,
    /// Online receipts not seen within 10 s of their send.
    pub missed: u64,
    pub delivered: u64,
    pub queued: u64,
    pub dropped: u64,
    pub errors: u64,
    pub first_error: Option<String>,
}

/// The counts of a group `sent` reply: (delivered, queued, dropped).
pub(crate) fn counts(sent: &str) -> (u64, u64, u64) {
    let number = |name: &str| {
        let key = format!(r#""{name}":"#);
        sent.find(&key)
            .map(|at| &sent[at + key.len()..])
            .map(|rest| {
                rest.chars()
                    .take_while(char::is_ascii_digit)
                    .collect::<String>()
            })
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    (number("delivered"), number("queued"), number("dropped"))
}

/// One group send and its reply: the round trip and the reply (an error frame's text as `Err`).
async fn send_once(
    ws: &mut WsStream,
    target: &GroupTarget,
    seq: u64,
    base: Instant,
) -> (Duration, Result<String, String>) {
    let frame = ws::group_send_frame(target, seq, base);
    let t = Instant::now();
    if let Err(e) = ws.send(Message::Text(frame.into())).await {
        return (t.elapsed(), Err(format!("socket: {e}")));
    }
    loop {
        match tokio::time::timeout(Duration::from_secs(30), ws.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => {
                let text = text.as_str();
                if text.contains(r#""type":"sent""#) {
                    return (t.elapsed(), Ok(text.to_string()));
                }
                if text.contains(r#""type":"error""#) {
                    return (t.elapsed(), Err(text.chars().take(300).collect()));
                }
            }
            Ok(Some(Ok(_))) => {}
            Ok(_) => return (t.elapsed(), Err("socket closed".into())),
            Err(_) => return (t.elapsed(), Err("no reply within 30 s".into())),
        }
    }
}

/// The large group, made: its id and its members (the creator, who sends, first).
struct LargeGroup {
    group_id: String,
    members: Vec<User>,
}

impl LargeGroup {
    async fn make(stack: &Stack, plan: &Plan) -> Result<Self, String> {
        log(format!(
            "8 · groups: registering {} users for one group",
            plan.members
        ));
        let members = accounts(stack, plan.members).await;
        log(format!(
            "8 · groups: creating the group ({} invited {} at a time, then each joins)",
            plan.members - 1,
            group_setup::INVITES_PER_REQUEST
        ));
        let t = Instant::now();
        let others: Vec<&User> = members[1..].iter().collect();
        let group_id = create_group(stack, &members[0], &others).await?;
        log(format!(
            "8 · groups: {} members joined in {:.1} s",
            plan.members,
            t.elapsed().as_secs_f64()
        ));
        Ok(Self { group_id, members })
    }

    /// The creator's send target: every other member's one device.
    fn target(&self) -> (Device, Arc<GroupTarget>) {
        let devices = primaries(&self.members);
        let lists: Vec<&[Device]> = devices.iter().map(Vec::as_slice).collect();
        let sender = devices[0][0].clone();
        let target = group_setup::target(&self.group_id, &lists, &sender);
        (sender, target)
    }
}

/// The large group with every member offline: `plan.offline_sends` sends one at a time, after
/// the warm-up sends; what Redis holds read before and after.
async fn offline(
    stack: &Stack,
    group: &LargeGroup,
    memory: &Memory,
    plan: &Plan,
) -> Result<GroupOffline, String> {
    let (sender, target) = group.target();
    let mut out = GroupOffline {
        members: group.members.len(),
        devices: target.fanout,
        sends: plan.offline_sends,
        body_bytes: BODY_BYTES,
        ..Default::default()
    };
    let base = Instant::now();
    let frame = ws::group_send_frame(&target, 0, base);
    out.frame_bytes = frame.len();
    out.body_base64_bytes = ws::body(0, 1, base).len();
    let reached: Vec<(String, u64)> = group.members[1..]
        .iter()
        .map(|u| (u.user_id.clone(), 1))
        .collect();
    let (inboxes, holders) = redis_memory::device_lists(&stack.config.redis_prefix, &reached);
    let lists: Vec<String> = inboxes.iter().chain(&holders).cloned().collect();
    let conn = stack.redis().await;
    let mut ws = ws::connect(&stack.ws_url(&sender.access)).await;
    for seq in 0..plan.warmup_sends as u64 {
        if let (_, Err(e)) = send_once(&mut ws, &target, seq, base).await {
            return Err(format!("warm-up group send: {e}"));
        }
    }
    log(format!(
        "8 · groups: {} sends to {} offline devices, one at a time ({} byte frames)",
        plan.offline_sends, target.fanout, out.frame_bytes
    ));
    let (used0, lists0) = (
        memory.used().await,
        redis_memory::memory_usage(&conn, &lists).await,
    );
    let mut times = Vec::new();
    for i in 0..plan.offline_sends as u64 {
        let (took, reply) = send_once(&mut ws, &target, plan.warmup_sends as u64 + i, base).await;
        match reply {
            Ok(sent) => {
                let (d, q, x) = counts(&sent);
                (out.delivered, out.queued, out.dropped) =
                    (out.delivered + d, out.queued + q, out.dropped + x);
                times.push(took);
            }
            Err(e) => {
                out.errors += 1;
                out.first_error.get_or_insert(e);
            }
        }
    }
    let (used1, lists1) = (
        memory.used().await,
        redis_memory::memory_usage(&conn, &lists).await,
    );
    let _ = ws.close(None).await;
    out.latency = Lat::from_durations(&times);
    let entries = (times.len() as f64 * target.fanout as f64).max(1.0);
    out.used_memory_per_send = used0
        .zip(used1)
        .map(|(a, b)| (b as f64 - a as f64) / times.len().max(1) as f64);
    out.lists_bytes_per_device = lists0
        .zip(lists1)
        .map(|(a, b)| (b as f64 - a as f64) / entries);
    let mean = |entries: &[Vec<u8>]| {
        entries.iter().map(Vec::len).sum::<usize>() as f64 / entries.len().max(1) as f64
    };
    let newest = redis_memory::newest_entries(&conn, &inboxes).await;
    out.entry_bytes = mean(&newest);
    out.holder_bytes = mean(&redis_memory::newest_entries(&conn, &holders).await);
    if let Some(id) = newest.first().and_then(|e| redis_memory::pointed_at(e)) {
        let key = RedisKeys::new(&stack.config.redis_prefix).shared(id);
        if let Some((json, usage)) = redis_memory::string_size(&conn, &key).await {
            (out.payload_json_bytes, out.payload_key_bytes) = (Some(json), Some(usage));
        }
    }
    if let Memory::Node(node) = memory {
        let mut node = node.clone();
        let lists = target.fanout as usize;
        let entry = out.entry_bytes.round() as usize;
        out.floor = Some(floors::fanout_floor(&mut node, lists, entry, plan.offline_sends).await);
    }
    Ok(out)
}

/// What an online member's connection read: (sequence number, ns since `base`) of each
/// envelope, sent on `to` until `stop`.
async fn receive(
    mut ws: WsStream,
    base: Instant,
    to: mpsc::UnboundedSender<(u64, u64)>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let msg = tokio::select! {
            _ = stop.changed() => break,
            msg = ws.next() => msg,
        };
        match msg {
            Some(Ok(Message::Text(t))) => {
                let now = ws::ns_since(base);
                for (_, seq) in ws::stamps(t.as_str()) {
                    let _ = to.send((seq, now));
                }
            }
            Some(Ok(_)) => {}
            _ => break,
        }
    }
    let _ = ws.close(None).await;
}

/// The large group with `plan.online` members connected (their inboxes drained first): sends
/// one at a time, each timed until every online device has read it.
async fn online(stack: &Stack, group: &LargeGroup, plan: &Plan) -> GroupOnline {
    let (sender, target) = group.target();
    let n = plan.online.min(group.members.len() - 1);
    let mut out = GroupOnline {
        members: group.members.len(),
        online: n,
        sends: plan.online_sends,
        ..Default::default()
    };
    log(format!(
        "8 · groups: connecting {n} members (each fetches what it was sent offline first)"
    ));
    let base = Instant::now();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = watch::channel(false);
    // A member whose drain failed is left out of the receipts awaited.
    let mut n = 0;
    for ws in group_setup::connect_drained(stack, &group.members[1..=n]).await {
        tokio::spawn(receive(ws, base, tx.clone(), stop_rx.clone()));
        n += 1;
    }
    out.online = n;
    let mut ws = ws::connect(&stack.ws_url(&sender.access)).await;
    log(format!(
        "8 · groups: {} sends to {} devices, {n} of them online",
        plan.online_sends, target.fanout
    ));
    let (mut all, mut each, mut sent) = (Vec::new(), Vec::new(), Vec::new());
    // Receipts of sends not yet complete, by sequence number (a late one of an earlier send is
    // dropped).
    let mut receipts: HashMap<u64, Vec<u64>> = HashMap::new();
    let first = 1_000_000;
    for i in 0..(plan.warmup_sends + plan.online_sends) as u64 {
        let seq = first + i;
        let at = ws::ns_since(base);
        let (took, reply) = send_once(&mut ws, &target, seq, base).await;
        let timed = i >= plan.warmup_sends as u64;
        match reply {
            Ok(text) if timed => {
                let (d, q, x) = counts(&text);
                (out.delivered, out.queued, out.dropped) =
                    (out.delivered + d, out.queued + q, out.dropped + x);
                sent.push(took);
            }
            Ok(_) => {}
            Err(e) => {
                out.errors += 1;
                out.first_error.get_or_insert(e);
                continue;
            }
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while receipts.get(&seq).map_or(0, Vec::len) < n {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some((s, ns))) => receipts.entry(s).or_default().push(ns),
                _ => break,
            }
        }
        let got = receipts.remove(&seq).unwrap_or_default();
        receipts.clear();
        if timed {
            out.missed += (n - got.len().min(n)) as u64;
            each.extend(got.iter().map(|ns| ns.saturating_sub(at)));
            if got.len() >= n {
                all.extend(got.iter().max().map(|ns| ns.saturating_sub(at)));
            }
        }
    }
    let _ = stop_tx.send(true);
    let _ = ws.close(None).await;
    out.all_received = Lat::from_ns(all);
    out.each_received = Lat::from_ns(each);
    out.sent = Lat::from_durations(&sent);
    out
}

/// `plan.groups` groups of `plan.group_size` members with two devices each, every device
/// connected, each group's creator sending from its first device as fast as the run lets it
/// (pipelined like scenario 1) for `warmup + duration`.
async fn many(stack: &Stack, plan: &Plan, run: Run, servers: &Servers) -> Result<Online, String> {
    let n = plan.groups * plan.group_size;
    log(format!(
        "8 · groups: registering {n} users and linking a second device to each"
    ));
    let users = accounts(stack, n).await;
    let devices = with_linked_devices(stack, &users).await;
    log(format!(
        "8 · groups: creating {} groups of {} members",
        plan.groups, plan.group_size
    ));
    // The creators are the first `groups` users (the senders, a slice for the online run); the
    // others fill the groups in order.
    let (creators, others) = users.split_at(plan.groups);
    let per_group = plan.group_size - 1;
    let made: Vec<Result<String, String>> = futures::stream::iter(0..plan.groups)
        .map(|g| {
            let members: Vec<&User> = others[g * per_group..(g + 1) * per_group].iter().collect();
            let creator = &creators[g];
            async move { create_group(stack, creator, &members).await }
        })
        .buffered(8)
        .collect()
        .await;
    let mut inbound = Vec::new();
    for (g, group_id) in made.into_iter().enumerate() {
        let group_id = group_id?;
        let member_devices: Vec<&[Device]> = std::iter::once(g)
            .chain((0..per_group).map(|k| plan.groups + g * per_group + k))
            .map(|i| devices[i].as_slice())
            .collect();
        let sender = &member_devices[0][0];
        let target = group_setup::target(&group_id, &member_devices, sender);
        let tokens = member_devices
            .iter()
            .flat_map(|d| d.iter())
            .filter(|d| !(d.user_id == sender.user_id && d.device_id == sender.device_id))
            .map(|d| d.access.clone())
            .collect();
        inbound.push(Inbound::group(Recipient::group(target), tokens));
    }
    log(format!(
        "8 · groups: {} groups sending at once to {} devices each",
        plan.groups,
        plan.group_size * 2 - 1
    ));
    Ok(scenarios::online_run(stack, creators, &inbound, run, servers).await)
}

/// Scenario 8 on one stack: the large group offline (and, when `with_online`, online), then
/// the small groups.
pub async fn run(
    stack: &Stack,
    memory: &Memory,
    servers: &Servers,
    plan: &Plan,
    timing: (Duration, Duration, usize),
    with_online: bool,
) -> GroupRuns {
    let (warmup, duration, window) = timing;
    let mut out = GroupRuns::default();
    match LargeGroup::make(stack, plan).await {
        Ok(group) => {
            match offline(stack, &group, memory, plan).await {
                Ok(o) => out.offline = Some(o),
                Err(e) => out.error = Some(e),
            }
            if with_online && out.error.is_none() {
                out.online = Some(online(stack, &group, plan).await);
            }
        }
        Err(e) => out.error = Some(e),
    }
    let run = Run {
        warmup,
        duration,
        window,
        mode: AckMode::default(),
    };
    match many(stack, plan, run, servers).await {
        Ok(m) => out.many = Some(m),
        Err(e) => {
            out.error.get_or_insert(e);
        }
    }
    if let Some(e) = &out.error {
        log(format!("8 · groups: {e}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sent_reply_gives_its_counts() {
        let sent = r#"{"type":"sent","id":"7","delivery":"queued","devices":[],"group_id":"g","delivered":3,"queued":1496,"dropped":0}"#;
        assert_eq!(counts(sent), (3, 1496, 0));
    }

    #[test]
    fn a_group_frame_of_1500_members_fits_the_frame_limit() {
        let devices: Vec<Vec<Device>> = (0..1500)
            .map(|_| {
                vec![Device {
                    user_id: uuid::Uuid::new_v4().to_string(),
                    device_id: 1,
                    registration_id: 16380,
                    access: String::new(),
                    refresh: String::new(),
                }]
            })
            .collect();
        let lists: Vec<&[Device]> = devices.iter().map(Vec::as_slice).collect();
        let target = group_setup::target(&uuid::Uuid::new_v4().to_string(), &lists, &devices[0][0]);
        let frame = ws::group_send_frame(&target, u64::MAX, Instant::now());
        assert_eq!(target.fanout, 1499);
        assert!(
            frame.len() <= shared::frames::MAX_FRAME_BYTES,
            "{}",
            frame.len()
        );
    }
}
