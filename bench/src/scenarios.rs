//! Scenarios 1–4, against a `local-gateway` process: online relay (with devices and in ack
//! mode), offline relay and drain, bundle fetch, idle connections.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use relay_tests::client::put_auth;
use relay_tests::devices::{self, Device};
use relay_tests::{Stack, User};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::util::{cpu_secs, log, redis_command_calls, rss_kib, Lat};
use super::ws::{self, Counters, Recipient};

/// Registers and logs in `n` users, each with `keys` EC and `keys` Kyber one-time prekeys
/// (more than 100 are uploaded by further `PUT /v1/keys`, 100 at a time).
pub async fn create_users(stack: &Stack, n: usize, keys: u32) -> Vec<User> {
    futures::stream::iter(0..n)
        .map(|_| async move {
            let first = keys.clamp(1, 100);
            // A DynamoDB engine may refuse concurrent registrations with a conflict (503).
            let u = User::builder(stack)
                .one_time_prekeys(first)
                .kyber_one_time_prekeys(if keys > 1 { first } else { 0 })
                .attempts(5)
                .create()
                .await;
            let mut have = first;
            while have < keys {
                let more = (keys - have).min(100);
                let (status, body) = put_auth(
                    stack,
                    "/v1/keys",
                    &u.access,
                    &json!({
                        "one_time_prekeys": u.identity.one_time(1000 + have..1000 + have + more),
                        "kyber_one_time_prekeys":
                            u.identity.kyber_one_time(5000 + have..5000 + have + more),
                    }),
                )
                .await;
                assert_eq!(status, 200, "key upload: {body}");
                have += more;
            }
            u
        })
        .buffer_unordered(4)
        .collect()
        .await
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Online {
    pub pairs: usize,
    pub pipeline: usize,
    pub duration_s: f64,
    pub warmup_s: f64,
    /// Devices per recipient, each connected.
    #[serde(default = "one")]
    pub devices: usize,
    /// Whether senders used the per-device form of `send` (`"messages"`), else `"body"`.
    #[serde(default)]
    pub per_device_form: bool,
    pub sent: u64,
    pub delivered: u64,
    pub queued: u64,
    pub dropped: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub received: u64,
    /// Envelopes received per second in the measured window (every device's).
    pub msgs_per_s: f64,
    /// `sent` replies per second in the measured window: messages sent, whatever the fan-out.
    #[serde(default)]
    pub sends_per_s: f64,
    pub latency: Lat,
    /// The server's CPU time per send in the measured window.
    #[serde(default)]
    pub cpu: CpuPerSend,
    /// The Redis commands per send in the measured window (absent on a cluster, and from runs
    /// before they were counted).
    #[serde(default)]
    pub redis: Option<RedisPerSend>,
    /// Which clients connected in ack mode (none: fire-and-forget).
    #[serde(default)]
    pub ack_mode: AckMode,
    /// `ack` frames the receivers sent (ack mode).
    #[serde(default)]
    pub ack_frames: u64,
    /// Envelope ids the receivers acknowledged (ack mode, in quiet `ack` frames).
    #[serde(default)]
    pub acked: u64,
    /// Envelopes left in the recipients' in-flight lists and inboxes once the run settled (ack
    /// mode; read in Redis): 0 when every envelope was deleted by its ack.
    #[serde(default)]
    pub left: u64,
}

fn one() -> usize {
    1
}

/// How an online run's clients connect: fire-and-forget (the default) or in ack mode
/// (`?token=…&ack=1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct AckMode {
    /// The receivers connect in ack mode and acknowledge what they read with `ack` frames.
    pub receivers: bool,
    /// The senders connect in ack mode too, so that every send (each has an `id`) is
    /// idempotent: remembered by (sender device, id).
    pub senders: bool,
    /// How long receivers let acknowledgements gather (ms): each envelope is acknowledged at
    /// most this long after it was read, with what was read meanwhile. 0: once no further frame
    /// is waiting on the socket.
    #[serde(default)]
    pub window_ms: u64,
}

/// The WebSocket URL of a connection with `token`, in ack mode when `ack`.
fn ws_url(stack: &Stack, token: &str, ack: bool) -> String {
    let url = stack.ws_url(token);
    if ack {
        url + "&ack=1"
    } else {
        url
    }
}

/// What an online run reads on the servers: the CPU time of the gateway's process and, when it
/// runs on this machine, redis-server's; and, on a single Redis node, its command counts.
#[derive(Clone)]
pub struct Servers {
    pub gateway: u32,
    pub redis: Option<u32>,
    /// A connection to the redis-server the gateway uses, for `INFO commandstats`.
    pub redis_stats: Option<redis::aio::ConnectionManager>,
    /// The relay's key prefix in that server (`RELAY_REDIS_PREFIX`).
    pub redis_prefix: String,
}

impl Servers {
    /// Envelopes in the in-flight lists and inboxes of `recipients`' devices; `None` without a
    /// Redis connection.
    async fn left(&self, recipients: &[Inbound]) -> Option<u64> {
        let mut redis = self.redis_stats.clone()?;
        let keys = shared::storage::redis::RedisKeys::new(&self.redis_prefix);
        let mut pipe = redis::pipe();
        for r in recipients {
            let user: uuid::Uuid = r.to.user_id.parse().ok()?;
            let devices: Vec<u32> = match r.to.devices.is_empty() {
                true => vec![1],
                false => r.to.devices.iter().map(|&(d, _)| d as u32).collect(),
            };
            for d in devices {
                let device = shared::model::DeviceAddress::new(user, d);
                pipe.zcard(keys.in_flight(device)).llen(keys.inbox(device));
            }
        }
        let lens: Vec<u64> = pipe.query_async(&mut redis).await.ok()?;
        Some(lens.iter().sum())
    }

    /// CPU seconds so far: the gateway's, and redis-server's when it can be read.
    fn cpu_secs(&self) -> (f64, Option<f64>) {
        (
            cpu_secs(self.gateway).unwrap_or(0.0),
            self.redis.and_then(cpu_secs),
        )
    }

    /// Redis' calls of each command so far, when there is a node to read.
    async fn redis_calls(&mut self) -> Option<BTreeMap<String, u64>> {
        redis_command_calls(self.redis_stats.as_mut()?).await
    }
}

/// Server CPU time (user + system, from `/proc/PID/stat`) per `sent` reply over the measured
/// window of an online run.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, Default)]
pub struct CpuPerSend {
    /// `sent` replies in the window.
    pub sends: u64,
    /// The gateway process, all its threads, µs per send.
    pub gateway_us: f64,
    /// redis-server, µs per send; `None` when its process could not be read.
    pub redis_us: Option<f64>,
}

impl CpuPerSend {
    /// Gateway and Redis together, µs per send.
    pub fn total_us(&self) -> f64 {
        self.gateway_us + self.redis_us.unwrap_or(0.0)
    }
}

/// The Redis commands per `sent` reply over the measured window of an online run: redis-server's
/// `INFO commandstats` read at the start and the end of the window (the bench's own `INFO` left
/// out), divided by the sends.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct RedisPerSend {
    /// `sent` replies in the window.
    pub sends: u64,
    /// Commands the gateway sent, each a round trip: its Lua scripts (`EVALSHA`, one command
    /// however much the script does) and any command only a client can send.
    pub round_trips: f64,
    /// Commands those scripts ran (`redis.call`), not round trips. The relay's Redis adapter
    /// reads and writes data only in scripts (it pipelines only when a connection opens,
    /// outside the window), so every data command counted is one.
    pub in_scripts: f64,
    /// Every command per send, by name, the scripts' included.
    pub by_command: BTreeMap<String, f64>,
}

impl RedisPerSend {
    /// The commands between two `INFO commandstats` readings, per send.
    fn between(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>, sends: u64) -> Self {
        let per = |n: u64| n as f64 / sends.max(1) as f64;
        let by_command: BTreeMap<String, f64> = after
            .iter()
            .filter(|(name, _)| name.as_str() != "info")
            .map(|(name, n)| (name, n.saturating_sub(*before.get(name).unwrap_or(&0))))
            .filter(|(_, n)| *n > 0)
            .map(|(name, n)| (name.clone(), per(n)))
            .collect();
        let (clients, scripts): (Vec<_>, Vec<_>) =
            by_command.iter().partition(|(name, _)| client_only(name));
        Self {
            sends,
            round_trips: clients.iter().map(|(_, n)| **n).sum(),
            in_scripts: scripts.iter().map(|(_, n)| **n).sum(),
            by_command,
        }
    }
}

/// Commands a Lua script cannot run, so only a client sends them: each is a round trip.
fn client_only(name: &str) -> bool {
    matches!(
        name,
        "eval"
            | "evalsha"
            | "eval_ro"
            | "evalsha_ro"
            | "fcall"
            | "fcall_ro"
            | "multi"
            | "exec"
            | "discard"
            | "watch"
            | "wait"
            | "ping"
            | "hello"
            | "auth"
            | "select"
    ) || name.contains('|') // container subcommands: client|setname, script|load, …
}

/// Scenario 1c: the online run in the per-device form of `send`, with one device per recipient
/// and, on the same users, with two.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct OnlineDevices {
    /// Every recipient has its primary device only (one ciphertext per send).
    pub one: Online,
    /// Every recipient has linked a second device, both connected (two ciphertexts per send).
    pub two: Online,
}

impl OnlineDevices {
    /// Server CPU per send with two devices ÷ with one.
    pub fn cpu_ratio(&self) -> f64 {
        self.two.cpu.total_us() / self.one.cpu.total_us().max(1e-9)
    }
}

/// Scenario 1d: the online run with fire-and-forget receivers and, on the same users in the
/// same run, with receivers in ack mode acknowledging everything; then with senders in ack mode
/// too (idempotent sends).
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct OnlineAcks {
    /// Every connection fire-and-forget: the reference.
    pub fire_and_forget: Online,
    /// The receivers in ack mode, acknowledging every envelope within [`ACK_WINDOW_MS`].
    pub ack: Online,
    /// The receivers in ack mode, acknowledging what they read once nothing more is waiting
    /// (at this load about one ack frame per envelope).
    #[serde(default)]
    pub ack_each_read: Option<Online>,
    /// The senders in ack mode as well: every send remembered by its id.
    pub idempotent: Online,
}

impl OnlineAcks {
    /// The runs in ack mode, each with its label.
    pub fn ack_runs(&self) -> Vec<(&'static str, &Online)> {
        let mut runs = vec![("ack mode", &self.ack)];
        runs.extend(
            self.ack_each_read
                .as_ref()
                .map(|run| ("ack mode, an ack per read", run)),
        );
        runs.push(("ack + idempotent sends", &self.idempotent));
        runs
    }

    /// Messages/s of `run` ÷ fire-and-forget's.
    pub fn rate_ratio(&self, run: &Online) -> f64 {
        run.msgs_per_s / self.fire_and_forget.msgs_per_s.max(1e-9)
    }
}

/// How long the receivers of scenario 1d let acknowledgements gather, as docs/api.md §6.9
/// recommends: every envelope is acknowledged within this long of being read.
pub const ACK_WINDOW_MS: u64 = 20;

/// A recipient of an online run: where its sender sends, and each device's access token.
pub(crate) struct Inbound {
    to: Recipient,
    tokens: Vec<String>,
}

impl Inbound {
    /// A group sent to: the tokens of every member device it reaches (connected by the run).
    pub(crate) fn group(to: Recipient, tokens: Vec<String>) -> Self {
        Self { to, tokens }
    }

    /// A recipient sent to in the single-device form.
    fn single(user: &User) -> Self {
        Self {
            to: Recipient::single(&user.user_id),
            tokens: vec![user.access.clone()],
        }
    }

    /// A recipient sent to in the per-device form, one ciphertext for each of `devices`.
    fn devices(devices: &[&Device]) -> Self {
        Self {
            to: Recipient {
                user_id: devices[0].user_id.clone(),
                devices: devices
                    .iter()
                    .map(|d| (d.device_id, d.registration_id))
                    .collect(),
                group: None,
            },
            tokens: devices.iter().map(|d| d.access.clone()).collect(),
        }
    }
}

/// Scenario 1: `pairs` connected sender → recipient pairs for `warmup + duration`, in the
/// single-device form of `send`; rate, latency and server CPU are taken over `duration`.
pub async fn online(
    stack: &Stack,
    pairs: usize,
    warmup: Duration,
    duration: Duration,
    window: usize,
    servers: &Servers,
) -> Online {
    let p = OneToOne::create(stack, pairs).await;
    let run = Run {
        warmup,
        duration,
        window,
        mode: AckMode::default(),
    };
    p.run(stack, run, servers).await
}

/// The users of scenario 1: `pairs` senders, each sending to its own recipient in the
/// single-device form of `send`; kept to run the same load again (scenario 10).
pub(crate) struct OneToOne {
    senders: Vec<User>,
    recipients: Vec<Inbound>,
}

impl OneToOne {
    /// Registers `2 × pairs` users.
    pub(crate) async fn create(stack: &Stack, pairs: usize) -> Self {
        let mut senders = create_users(stack, 2 * pairs, 1).await;
        let recipients = senders.split_off(pairs);
        Self {
            senders,
            recipients: recipients.iter().map(Inbound::single).collect(),
        }
    }

    /// One online run of these pairs.
    pub(crate) async fn run(&self, stack: &Stack, run: Run, servers: &Servers) -> Online {
        online_run(stack, &self.senders, &self.recipients, run, servers).await
    }
}

/// The registration id of the recipients' linked devices in scenario 1c.
const LINKED_REGISTRATION_ID: u64 = 4321;

/// Scenario 1c: as scenario 1, senders using the per-device form of `send`: first every recipient
/// has one device, then (the same users) every recipient links a second device, connected too,
/// and each send carries a ciphertext for each.
pub async fn online_devices(
    stack: &Stack,
    pairs: usize,
    warmup: Duration,
    duration: Duration,
    window: usize,
    servers: &Servers,
) -> OnlineDevices {
    let users = create_users(stack, 2 * pairs, 1).await;
    let (senders, recipients) = users.split_at(pairs);
    let primaries: Vec<Device> = recipients.iter().map(Device::primary).collect();
    let inbound: Vec<Inbound> = primaries.iter().map(|p| Inbound::devices(&[p])).collect();
    let run = Run {
        warmup,
        duration,
        window,
        mode: AckMode::default(),
    };
    log("1c · one device per recipient");
    let one = online_run(stack, senders, &inbound, run, servers).await;
    log(format!(
        "1c · linking a second device to {pairs} recipients"
    ));
    let linked: Vec<Device> = futures::stream::iter(recipients)
        .map(|r| devices::link(stack, r, LINKED_REGISTRATION_ID))
        .buffered(4)
        .collect()
        .await;
    let inbound: Vec<Inbound> = primaries
        .iter()
        .zip(&linked)
        .map(|(p, l)| Inbound::devices(&[p, l]))
        .collect();
    log("1c · two devices per recipient");
    let two = online_run(stack, senders, &inbound, run, servers).await;
    OnlineDevices { one, two }
}

/// Scenario 1d: as scenario 1 (single-device form), on `pairs` new pairs, three times: every
/// connection fire-and-forget; the receivers in ack mode, acknowledging every envelope;
/// the senders in ack mode too, every send idempotent (each carries an id).
pub async fn online_acks(
    stack: &Stack,
    pairs: usize,
    warmup: Duration,
    duration: Duration,
    window: usize,
    servers: &Servers,
) -> OnlineAcks {
    let users = create_users(stack, 2 * pairs, 1).await;
    let (senders, recipients) = users.split_at(pairs);
    let inbound: Vec<Inbound> = recipients.iter().map(Inbound::single).collect();
    let run = |receivers, senders, window_ms| Run {
        warmup,
        duration,
        window,
        mode: AckMode {
            receivers,
            senders,
            window_ms,
        },
    };
    let ms = ACK_WINDOW_MS;
    log("1d · fire-and-forget");
    let fire_and_forget = online_run(stack, senders, &inbound, run(false, false, 0), servers).await;
    log(format!(
        "1d · receivers in ack mode, acknowledging what they read within {ms} ms"
    ));
    let ack = online_run(stack, senders, &inbound, run(true, false, ms), servers).await;
    log("1d · receivers in ack mode, acknowledging once nothing more is waiting");
    let ack_each_read = online_run(stack, senders, &inbound, run(true, false, 0), servers).await;
    log("1d · senders in ack mode too: idempotent sends");
    let idempotent = online_run(stack, senders, &inbound, run(true, true, ms), servers).await;
    OnlineAcks {
        fire_and_forget,
        ack,
        ack_each_read: Some(ack_each_read),
        idempotent,
    }
}

/// How long an online run lasts, how deep its senders pipeline, and how its clients connect.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Run {
    pub warmup: Duration,
    pub duration: Duration,
    pub window: usize,
    pub mode: AckMode,
}

/// One online run: every device of every recipient connected, each sender sending to its
/// recipient for `warmup + duration`; rate, latency, server CPU and Redis commands are taken over
/// `duration`. In ack mode the run ends once every envelope received is acknowledged (or after
/// 10 s), so that none is in flight when the next run connects.
pub(crate) async fn online_run(
    stack: &Stack,
    senders: &[User],
    recipients: &[Inbound],
    run: Run,
    servers: &Servers,
) -> Online {
    let Run {
        warmup,
        duration,
        window,
        mode,
    } = run;
    let pairs = senders.len();
    let fanout = recipients.first().map_or(1, |r| r.to.fanout());
    let base = Instant::now();
    let c = Arc::new(Counters::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut receivers = Vec::new();
    for token in recipients.iter().flat_map(|r| &r.tokens) {
        let ws = ws::connect(&ws_url(stack, token, mode.receivers)).await;
        receivers.push(tokio::spawn(ws::run_receiver(
            ws,
            base,
            stop_rx.clone(),
            c.clone(),
            mode.receivers
                .then_some(Duration::from_millis(mode.window_ms)),
        )));
    }
    let mut sockets = Vec::new();
    for s in senders {
        sockets.push(ws::connect(&ws_url(stack, &s.access, mode.senders)).await);
    }
    log(format!(
        "online: {pairs} pairs connected ({fanout} device(s) per recipient{}), sending",
        match (mode.receivers, mode.senders) {
            (false, false) => "",
            (true, false) => ", receivers in ack mode",
            (_, true) => ", receivers and senders in ack mode",
        }
    ));
    let start = Instant::now();
    let end = start + warmup + duration;
    let costs = tokio::spawn(server_costs(
        servers.clone(),
        c.clone(),
        start + warmup,
        end,
    ));
    let tasks: Vec<_> = sockets
        .into_iter()
        .zip(recipients)
        .map(|(sock, r)| {
            tokio::spawn(ws::run_sender(
                sock,
                r.to.clone(),
                base,
                u64::MAX,
                end,
                window,
                c.clone(),
            ))
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    let settle = Instant::now() + Duration::from_secs(10);
    let mut left = 0;
    loop {
        let read = c.get(&c.received) >= fanout * c.get(&c.delivered)
            && (!mode.receivers || c.get(&c.acked) >= c.get(&c.received));
        if read && mode.receivers {
            left = servers.left(recipients).await.unwrap_or(u64::MAX);
        }
        if (read && left == 0) || Instant::now() >= settle {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = stop_tx.send(true);
    let (rate, lat) = measured(receivers, base, start + warmup, end).await;
    let (cpu, redis, sends_per_s) = costs.await.unwrap_or_default();
    let first_error = c.first_error.lock().expect("lock").clone();
    Online {
        pairs,
        pipeline: window,
        duration_s: duration.as_secs_f64(),
        warmup_s: warmup.as_secs_f64(),
        devices: fanout as usize,
        per_device_form: recipients.iter().any(|r| !r.to.devices.is_empty()),
        sent: c.get(&c.sent),
        delivered: c.get(&c.delivered),
        queued: c.get(&c.queued),
        dropped: c.get(&c.dropped),
        errors: c.get(&c.errors),
        first_error,
        received: c.get(&c.received),
        msgs_per_s: rate,
        sends_per_s,
        latency: Lat::from_ns(lat),
        cpu,
        redis,
        ack_mode: mode,
        ack_frames: c.get(&c.ack_frames),
        acked: c.get(&c.acked),
        left,
    }
}

/// The servers' CPU time, Redis' command counts and the `sent` replies between `from` and `to`:
/// the CPU and the Redis commands per send, and the sends per second.
async fn server_costs(
    mut servers: Servers,
    c: Arc<Counters>,
    from: Instant,
    to: Instant,
) -> (CpuPerSend, Option<RedisPerSend>, f64) {
    tokio::time::sleep_until(from.into()).await;
    let (n0, t0, (gateway0, redis0)) = (c.sends_answered(), Instant::now(), servers.cpu_secs());
    let calls0 = servers.redis_calls().await;
    tokio::time::sleep_until(to.into()).await;
    let (n1, t1, (gateway1, redis1)) = (c.sends_answered(), Instant::now(), servers.cpu_secs());
    let calls1 = servers.redis_calls().await;
    let sends = n1.saturating_sub(n0);
    let per = |secs: f64| secs * 1e6 / sends.max(1) as f64;
    let cpu = CpuPerSend {
        sends,
        gateway_us: per(gateway1 - gateway0),
        redis_us: redis0.zip(redis1).map(|(a, b)| per(b - a)),
    };
    let redis = calls0
        .zip(calls1)
        .map(|(before, after)| RedisPerSend::between(&before, &after, sends));
    (cpu, redis, sends as f64 / (t1 - t0).as_secs_f64().max(1e-9))
}

/// The samples (received at, latency; ns since `base`) of `tasks`, joined: the rate in the
/// measured window, `from` to `end`, and the latencies of what was sent in it.
async fn measured(
    tasks: Vec<JoinHandle<Vec<(u64, u64)>>>,
    base: Instant,
    from: Instant,
    end: Instant,
) -> (f64, Vec<u64>) {
    let mut samples = Vec::new();
    for t in tasks {
        if let Ok(v) = t.await {
            samples.extend(v);
        }
    }
    let from = from.duration_since(base).as_nanos() as u64;
    let to = end.duration_since(base).as_nanos() as u64;
    ws::window_stats(&samples, from, to)
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct EchoFloor {
    pub connections: usize,
    pub pipeline: usize,
    pub duration_s: f64,
    pub frames_per_s: f64,
    pub latency: Lat,
}

/// The floor of scenario 1: the same frames, connections and pipelining against a bare echo
/// server; latency is the round trip.
pub async fn echo_load(
    url: &str,
    connections: usize,
    warmup: Duration,
    duration: Duration,
    window: usize,
) -> EchoFloor {
    let base = Instant::now();
    let c = Arc::new(Counters::default());
    let mut sockets = Vec::new();
    for _ in 0..connections {
        sockets.push(ws::connect(url).await);
    }
    let start = Instant::now();
    let end = start + warmup + duration;
    let tasks: Vec<_> = sockets
        .into_iter()
        .map(|s| tokio::spawn(ws::run_echo(s, base, end, window, c.clone())))
        .collect();
    let (rate, lat) = measured(tasks, base, start + warmup, end).await;
    EchoFloor {
        connections,
        pipeline: window,
        duration_s: duration.as_secs_f64(),
        frames_per_s: rate,
        latency: Lat::from_ns(lat),
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Offline {
    pub messages: u64,
    pub queued: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub enqueue_s: f64,
    pub enqueue_msgs_per_s: f64,
    pub connect_ms: f64,
    pub drain_ms: f64,
    pub drained: usize,
    pub frames: usize,
    pub drain_msgs_per_s: f64,
}

/// Scenario 2: `messages` to a user who is not connected, then the user connects and fetches
/// until `drained`.
pub async fn offline(stack: &Stack, messages: u64, window: usize) -> Offline {
    let users = create_users(stack, 2, 1).await;
    let (sender, recipient) = (&users[0], &users[1]);
    let c = Arc::new(Counters::default());
    let sock = ws::connect(&stack.ws_url(&sender.access)).await;
    let base = Instant::now();
    let t = Instant::now();
    ws::run_sender(
        sock,
        Recipient::single(&recipient.user_id),
        base,
        messages,
        Instant::now() + Duration::from_secs(60),
        window,
        c.clone(),
    )
    .await;
    let enqueue = t.elapsed();
    let t = Instant::now();
    let mut sock = ws::connect(&stack.ws_url(&recipient.access)).await;
    let connect = t.elapsed();
    let t = Instant::now();
    let (drained, frames) = match ws::drain(&mut sock, Duration::from_secs(60)).await {
        Ok(r) => r,
        Err(e) => {
            log(format!("offline drain failed: {e}"));
            (0, 0)
        }
    };
    let drain = t.elapsed();
    let _ = sock.close(None).await;
    let queued = c.get(&c.queued);
    let first_error = c.first_error.lock().expect("lock").clone();
    Offline {
        messages,
        queued,
        errors: c.get(&c.errors),
        first_error,
        enqueue_s: enqueue.as_secs_f64(),
        enqueue_msgs_per_s: queued as f64 / enqueue.as_secs_f64(),
        connect_ms: connect.as_secs_f64() * 1e3,
        drain_ms: drain.as_secs_f64() * 1e3,
        drained,
        frames,
        drain_msgs_per_s: drained as f64 / drain.as_secs_f64(),
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Bundle {
    pub users: usize,
    pub keys_per_user: u32,
    pub fetches: usize,
    pub concurrency: usize,
    pub ok: usize,
    pub errors: usize,
    pub first_error: Option<String>,
    /// Time spent fetching (the rounds added up, without what ran between them).
    pub secs: f64,
    pub fetches_per_s: f64,
    pub latency: Lat,
    #[serde(skip)]
    pub times: Vec<Duration>,
}

impl Bundle {
    pub fn new(users: usize, keys_per_user: u32, concurrency: usize) -> Self {
        Self {
            users,
            keys_per_user,
            concurrency,
            ..Default::default()
        }
    }

    pub fn finish(&mut self) {
        self.ok = self.times.len();
        self.fetches_per_s = self.ok as f64 / self.secs.max(1e-9);
        self.latency = Lat::from_durations(&self.times);
    }
}

/// One bundle fetch of `target`'s by `requester`: its time, and the error if it was not a 200.
pub async fn fetch_bundle(
    stack: &Stack,
    requester: &User,
    target: &User,
) -> (Duration, Result<(), String>) {
    let t = Instant::now();
    let r = stack
        .http
        .get(stack.url(&format!("/v1/users/{}/bundle", target.user_id)))
        .bearer_auth(&requester.access)
        .timeout(Duration::from_secs(30))
        .send()
        .await;
    let outcome = match r {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let body = resp.bytes().await.unwrap_or_default();
            if status == 200 {
                Ok(())
            } else {
                Err(format!("{status} {}", String::from_utf8_lossy(&body)))
            }
        }
        Err(e) => Err(e.to_string()),
    };
    (t.elapsed(), outcome)
}

/// Scenario 3, one round: `n` bundle fetches at `acc.concurrency` over `users` (fetch k: user k
/// fetches user k+1's bundle, k counted from `offset`), added to `acc`.
pub async fn bundle_round(
    stack: &Stack,
    users: &[User],
    offset: usize,
    n: usize,
    acc: &mut Bundle,
) {
    let fetch = |k: usize| async move {
        let k = k + offset;
        fetch_bundle(
            stack,
            &users[k % users.len()],
            &users[(k + 1) % users.len()],
        )
        .await
    };
    let deadline = Instant::now() + Duration::from_secs(300);
    let start = Instant::now();
    let results: Vec<_> = futures::stream::iter(0..n)
        .map(|k| async move {
            if Instant::now() > deadline {
                None
            } else {
                Some(fetch(k).await)
            }
        })
        .buffer_unordered(acc.concurrency)
        .collect()
        .await;
    acc.secs += start.elapsed().as_secs_f64();
    acc.fetches += n;
    for r in results.into_iter().flatten() {
        match r {
            (took, Ok(())) => acc.times.push(took),
            (_, Err(e)) => {
                acc.errors += 1;
                acc.first_error.get_or_insert(e);
            }
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Connections {
    pub target: usize,
    pub opened: usize,
    pub failed: usize,
    pub concurrency: usize,
    pub secs: f64,
    pub handshakes_per_s: f64,
    pub handshake: Lat,
    pub rss_before_kib: u64,
    pub rss_after_kib: u64,
    pub rss_per_conn_kib: f64,
}

/// Scenario 4 (and its floor): opens one connection per URL and holds them idle; the server's
/// resident memory is read before and after.
pub async fn connections(
    urls: Vec<String>,
    server_pid: u32,
    concurrency: usize,
    settle: Duration,
) -> Connections {
    let target = urls.len();
    // Warm the server's lazily built parts (runtime workers, client pools) first.
    let warm: Vec<String> = urls.iter().take(concurrency).cloned().collect();
    let (socks, _, _, _) =
        ws::open_many(warm, concurrency, Instant::now() + Duration::from_secs(30)).await;
    drop(socks);
    tokio::time::sleep(settle).await;
    let rss_before_kib = rss_kib(server_pid);
    let deadline = Instant::now() + Duration::from_secs(180);
    let (socks, times, failed, wall) = ws::open_many(urls, concurrency, deadline).await;
    tokio::time::sleep(settle * 2).await;
    let rss_after_kib = rss_kib(server_pid);
    let opened = socks.len();
    drop(socks);
    tokio::time::sleep(settle).await;
    Connections {
        target,
        opened,
        failed,
        concurrency,
        secs: wall.as_secs_f64(),
        handshakes_per_s: opened as f64 / wall.as_secs_f64(),
        handshake: Lat::from_ns(times),
        rss_before_kib,
        rss_after_kib,
        rss_per_conn_kib: rss_after_kib.saturating_sub(rss_before_kib) as f64
            / opened.max(1) as f64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_commands_per_send_tell_round_trips_from_what_scripts_ran() {
        let calls = |pairs: &[(&str, u64)]| -> BTreeMap<String, u64> {
            pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
        };
        let before = calls(&[("evalsha", 10), ("hset", 40), ("info", 3)]);
        let after = calls(&[
            ("evalsha", 30),
            ("hset", 80),
            ("lpop", 10),
            ("info", 9),
            ("client|setname", 1),
        ]);
        let r = RedisPerSend::between(&before, &after, 10);
        assert_eq!(r.round_trips, 2.1);
        assert_eq!(r.in_scripts, 5.0);
        assert!(!r.by_command.contains_key("info"));
    }
}
