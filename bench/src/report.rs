//! The results: a printed table, JSON, an SVG latency plot and `docs/benchmarks.md`.

use std::path::Path;

use plotters::prelude::*;
use serde::{Deserialize, Serialize};

use super::ackflood::{AckFlood, PING_RATIO_TARGET};
use super::bundle::{BundleLevel, BundleScale};
use super::coldstart::ColdStart;
use super::floors::RedisFloor;
use super::scenarios::{
    Connections, EchoFloor, Offline, Online, OnlineAcks, OnlineDevices, RedisPerSend,
};
use super::table::{cpu, ms, plain, rate, row, times};
pub use super::table::{print_rows, print_targets, Row, Target};
use super::util::{Lat, Machine};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Results {
    pub mode: String,
    pub profile: String,
    pub command: String,
    pub machine: Machine,
    pub total_s: f64,
    pub floors: Floors,
    pub online: Online,
    /// The online scenario in the per-device form of `send`, one and two devices per recipient
    /// (absent from runs before devices).
    #[serde(default)]
    pub online_devices: Option<OnlineDevices>,
    /// The online scenario with receivers in ack mode (and senders too: idempotent sends) beside
    /// fire-and-forget (absent from runs before ack mode).
    #[serde(default)]
    pub online_acks: Option<OnlineAcks>,
    /// An attachment through the presigned URLs beside the same transfer straight to S3
    /// (absent from runs before attachments).
    #[serde(default)]
    pub attachments: Option<crate::attachments::Attachments>,
    /// Another user's ping while one account floods useless acks with ~8 MiB in flight
    /// (absent from runs before envelopes in flight were kept by id).
    #[serde(default)]
    pub ack_flood: Option<AckFlood>,
    /// Group sends on the single node and on the cluster (absent from runs before groups).
    #[serde(default)]
    pub groups: Option<crate::groups::Groups>,
    /// A 1,500-member MLS group: Commits, Welcomes, application messages (absent from runs
    /// before MLS groups).
    #[serde(default)]
    pub mls: Option<crate::mls::MlsGroups>,
    /// Server CPU per send and per bundle fetch with metrics on beside off (absent from runs
    /// before metrics).
    #[serde(default)]
    pub metrics_cost: Option<crate::metrics_cost::MetricsCost>,
    /// Logins 8 at once beside Argon2id alone (absent from runs before it was measured).
    #[serde(default)]
    pub auth: Option<crate::auth::Auth>,
    /// The online scenario again, on a local Redis Cluster (3 primaries, 3 replicas).
    pub online_cluster: Online,
    pub offline: Offline,
    /// Bundle fetches at each concurrency, each beside its storage floor.
    pub bundle: Vec<BundleLevel>,
    pub bundle_scale: BundleScale,
    /// What served the DynamoDB API in this run.
    pub dynamodb_engine: String,
    pub connections: Connections,
    pub cold_start: Vec<ColdStart>,
    pub local_gateway_binary_bytes: u64,
    pub targets: Vec<Target>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Floors {
    pub redis: RedisFloor,
    pub dynamodb_getitem: Lat,
    pub ws_echo: EchoFloor,
    pub ws_echo_connections: Connections,
    pub cold_start: ColdStart,
}

/// A latency beside its floor's (written after `label`): how many times the floor it takes.
fn latency_row(scenario: &str, metric: &str, value: f64, label: &str, floor: f64) -> Row {
    let floor_text = format!("{label}{}", ms(floor));
    row(scenario, metric, ms(value), floor_text, times(value, floor))
}

/// A rate beside its floor's (written after `label`), each `(per second, unit)`: what share of
/// the floor it reaches.
fn rate_row(
    scenario: &str,
    metric: &str,
    (value, unit): (f64, &str),
    label: &str,
    (floor, floor_unit): (f64, &str),
) -> Row {
    let floor_text = format!("{label}{}", rate(floor, floor_unit));
    row(
        scenario,
        metric,
        rate(value, unit),
        floor_text,
        share(value, floor),
    )
}

/// The `names` percentiles of a latency (metrics `{prefix}{name}`), each beside its floor's.
fn percentile_rows(
    scenario: &str,
    prefix: &str,
    names: &[&str],
    value: &Lat,
    floor: &Lat,
) -> Vec<Row> {
    names
        .iter()
        .map(|name| {
            let metric = format!("{prefix}{name}");
            let (v, f) = (value.percentile(name), floor.percentile(name));
            latency_row(scenario, &metric, v, "", f)
        })
        .collect()
}

fn delta(v: f64) -> String {
    let sign = if v < 0.0 { "−" } else { "+" };
    format!("{sign}{}", ms(v.abs()))
}

/// A rate against its floor: what share of the floor's rate it reaches.
fn share(value: f64, floor: f64) -> String {
    if floor > 0.0 {
        format!("{:.0}% of floor", 100.0 * value / floor)
    } else {
        "–".into()
    }
}

fn redis_commands(r: &RedisPerSend) -> String {
    format!(
        "{:.2} round trips (+ {:.1} run by scripts)",
        r.round_trips, r.in_scripts
    )
}

/// The most two devices' server CPU per send may be, in times one device's.
pub const TWO_DEVICES_CPU_TARGET: f64 = 1.5;

/// Scenario 1c: one device per recipient beside two, in the per-device form of `send`.
fn device_rows(d: &OnlineDevices, echo: &EchoFloor) -> Vec<Row> {
    let (one, two) = (&d.one, &d.two);
    let name = format!(
        "1c · online, 1 vs 2 devices per recipient ({} pairs, pipeline {})",
        one.pairs, one.pipeline
    );
    let p50_p99 = |o: &Online| format!("{} / {}", ms(o.latency.p50_ms), ms(o.latency.p99_ms));
    vec![
        rate_row(
            &name,
            "1 device: sends/s",
            (one.sends_per_s, "msg/s"),
            "echo ",
            (echo.frames_per_s, "frames/s"),
        ),
        row(
            &name,
            "2 devices: sends/s (deliveries/s)",
            format!(
                "{} ({})",
                rate(two.sends_per_s, "msg/s"),
                rate(two.msgs_per_s, "/s")
            ),
            format!("1 device {}", rate(one.sends_per_s, "msg/s")),
            format!(
                "{:.0}% of 1 device",
                100.0 * two.sends_per_s / one.sends_per_s.max(1e-9)
            ),
        ),
        row(
            &name,
            "2 devices: send→receive p50 / p99",
            p50_p99(two),
            format!("1 device {}", p50_p99(one)),
            format!(
                "p99 {:.1}× 1 device",
                two.latency.p99_ms / one.latency.p99_ms.max(1e-9)
            ),
        ),
        plain(&name, "1 device: server CPU per send", cpu(&one.cpu)),
        row(
            &name,
            "2 devices: server CPU per send",
            cpu(&two.cpu),
            format!("1 device {:.0} µs", one.cpu.total_us()),
            format!(
                "{:.2}× 1 device (target ≤ {TWO_DEVICES_CPU_TARGET}×)",
                d.cpu_ratio()
            ),
        ),
    ]
}

/// The least share of fire-and-forget's messages/s that ack mode must keep.
pub const ACK_RATE_TARGET: f64 = 0.7;

/// Scenario 1d: receivers in ack mode (then senders too) beside fire-and-forget, same users.
fn ack_rows(a: &OnlineAcks, echo: &EchoFloor) -> Vec<Row> {
    let ff = &a.fire_and_forget;
    let name = format!(
        "1d · online, ack mode vs fire-and-forget ({} pairs, pipeline {})",
        ff.pairs, ff.pipeline
    );
    let p50_p99 = |o: &Online| format!("{} / {}", ms(o.latency.p50_ms), ms(o.latency.p99_ms));
    let ff_label = |v: String| format!("fire-and-forget {v}");
    let mut rows = vec![rate_row(
        &name,
        "fire-and-forget: messages/s",
        (ff.msgs_per_s, "msg/s"),
        "echo ",
        (echo.frames_per_s, "frames/s"),
    )];
    for (label, run) in a.ack_runs() {
        rows.push(row(
            &name,
            &format!("{label}: messages/s"),
            rate(run.msgs_per_s, "msg/s"),
            ff_label(rate(ff.msgs_per_s, "msg/s")),
            match std::ptr::eq(run, &a.ack) {
                true => format!(
                    "{:.0}% of fire-and-forget (target ≥ {:.0}%)",
                    100.0 * a.rate_ratio(run),
                    100.0 * ACK_RATE_TARGET
                ),
                false => format!("{:.0}% of fire-and-forget", 100.0 * a.rate_ratio(run)),
            },
        ));
    }
    rows.push(plain(
        &name,
        "fire-and-forget: send→receive p50 / p99",
        p50_p99(ff),
    ));
    for (label, run) in a.ack_runs() {
        rows.push(row(
            &name,
            &format!("{label}: send→receive p50 / p99"),
            p50_p99(run),
            ff_label(p50_p99(ff)),
            format!(
                "p99 {:.1}× fire-and-forget",
                run.latency.p99_ms / ff.latency.p99_ms.max(1e-9)
            ),
        ));
    }
    rows.push(plain(
        &name,
        "fire-and-forget: server CPU per message",
        cpu(&ff.cpu),
    ));
    for (label, run) in a.ack_runs() {
        rows.push(row(
            &name,
            &format!("{label}: server CPU per message"),
            cpu(&run.cpu),
            ff_label(format!("{:.0} µs", ff.cpu.total_us())),
            format!(
                "{:.2}× fire-and-forget",
                run.cpu.total_us() / ff.cpu.total_us().max(1e-9)
            ),
        ));
    }
    if let Some(ff_redis) = &ff.redis {
        rows.push(plain(
            &name,
            "fire-and-forget: Redis commands per message",
            redis_commands(ff_redis),
        ));
        for (label, run) in a.ack_runs() {
            if let Some(redis) = &run.redis {
                rows.push(row(
                    &name,
                    &format!("{label}: Redis commands per message"),
                    redis_commands(redis),
                    ff_label(format!("{:.2}", ff_redis.round_trips)),
                    format!(
                        "{:+.2} round trips",
                        redis.round_trips - ff_redis.round_trips
                    ),
                ));
            }
        }
    }
    for (label, run) in a.ack_runs() {
        rows.push(plain(
            &name,
            &format!("{label}: envelopes acknowledged"),
            format!(
                "{} of {} received ({} quiet ack frames), {} left in flight or in the inbox",
                run.acked, run.received, run.ack_frames, run.left
            ),
        ));
    }
    rows
}

/// Scenario 7: another user's ping at rest and during one account's flood of useless acks.
fn ack_flood_rows(a: &AckFlood, redis: &RedisFloor) -> Vec<Row> {
    let name = format!(
        "7 · ack flood ({} envelopes, {:.1} MiB in flight; acks of 100 unknown ids, RATE_LIMIT_FRAMES {})",
        a.in_flight,
        super::util::mib(a.in_flight_bytes),
        a.frames_limit
    );
    let p50_p99 = |l: &Lat| format!("{} / {}", ms(l.p50_ms), ms(l.p99_ms));
    let scripts = a.redis_script_us_per_ack.map_or(String::new(), |us| {
        format!("; {us:.0} µs of Redis' in scripts")
    });
    let cpu = match a.redis_cpu_us_per_ack {
        Some(redis) => format!(
            "{:.0} µs (gateway {:.0} + Redis {redis:.0}{scripts})",
            a.gateway_cpu_us_per_ack + redis,
            a.gateway_cpu_us_per_ack
        ),
        None => format!(
            "{:.0} µs (gateway; Redis not read)",
            a.gateway_cpu_us_per_ack
        ),
    };
    vec![
        row(
            &name,
            "another user's ping p50 / p99, at rest",
            p50_p99(&a.rest),
            format!("Redis PING {}", p50_p99(&redis.ping)),
            times(a.rest.p50_ms, redis.ping.p50_ms),
        ),
        row(
            &name,
            "the same during the flood",
            p50_p99(&a.loaded),
            format!("at rest {}", p50_p99(&a.rest)),
            format!(
                "p50 {:.2}× at rest (target ≤ {PING_RATIO_TARGET}×), p99 {:.2}×",
                a.ratio(),
                a.p99_ratio()
            ),
        ),
        plain(
            &name,
            "acks answered",
            format!(
                "{} ({:.0}% rate_limited), {} envelopes deleted, {} still in flight after",
                rate(a.acks_per_s, "/s"),
                100.0 * a.acks_rate_limited as f64 / a.acks.max(1) as f64,
                a.acked,
                a.in_flight_after
            ),
        ),
        plain(&name, "server CPU per ack", cpu),
    ]
}

pub fn rows(r: &Results) -> Vec<Row> {
    let f = &r.floors;
    let o = &r.online;
    let e = &f.ws_echo;
    let on = format!("1 · online ({} pairs, pipeline {})", o.pairs, o.pipeline);
    let msgs = (o.msgs_per_s, "msg/s");
    let mut rows = vec![
        rate_row(
            &on,
            "messages/s",
            msgs,
            "echo ",
            (e.frames_per_s, "frames/s"),
        ),
        latency_row(
            &on,
            "send→receive p50",
            o.latency.p50_ms,
            "echo RTT ",
            e.latency.p50_ms,
        ),
    ];
    rows.extend(percentile_rows(
        &on,
        "",
        &["p95", "p99", "max"],
        &o.latency,
        &e.latency,
    ));
    if o.cpu.sends > 0 {
        rows.push(plain(&on, "server CPU per send", cpu(&o.cpu)));
    }
    if let Some(redis) = &o.redis {
        rows.push(plain(&on, "Redis commands per send", redis_commands(redis)));
    }
    let oc = &r.online_cluster;
    let ocn = format!(
        "1b · online on a Redis Cluster ({} pairs, pipeline {})",
        oc.pairs, oc.pipeline
    );
    rows.extend([
        row(
            &ocn,
            "messages/s",
            rate(oc.msgs_per_s, "msg/s"),
            format!("single node {}", rate(o.msgs_per_s, "msg/s")),
            format!(
                "{:.0}% of single node",
                100.0 * oc.msgs_per_s / o.msgs_per_s.max(1e-9)
            ),
        ),
        row(
            &ocn,
            "send→receive p50 / p99",
            format!("{} / {}", ms(oc.latency.p50_ms), ms(oc.latency.p99_ms)),
            format!("{} / {}", ms(o.latency.p50_ms), ms(o.latency.p99_ms)),
            times(oc.latency.p99_ms, o.latency.p99_ms),
        ),
    ]);
    if let Some(d) = &r.online_devices {
        rows.extend(device_rows(d, e));
    }
    if let Some(a) = &r.online_acks {
        rows.extend(ack_rows(a, e));
    }
    if let Some(a) = &r.ack_flood {
        rows.extend(ack_flood_rows(a, &f.redis));
    }
    if let Some(g) = &r.groups {
        rows.extend(crate::group_report::rows(g));
    }
    if let Some(m) = &r.mls {
        let signal = r.groups.as_ref().and_then(|g| g.single.online.as_ref());
        rows.extend(crate::mls_report::rows(m, signal));
    }
    if let Some(m) = &r.metrics_cost {
        rows.extend(crate::metrics_cost::rows(m));
    }
    if let Some(a) = &r.auth {
        rows.extend(crate::auth::rows(a));
    }
    if let Some(a) = &r.attachments {
        let name = format!(
            "6 · attachment of {:.0} MiB ({} rounds)",
            a.size_mib, a.rounds
        );
        rows.extend([
            rate_row(
                &name,
                "upload through the presigned URL",
                (a.upload_mib_s, "MiB/s"),
                "SDK PUT ",
                (a.floor_upload_mib_s, "MiB/s"),
            ),
            rate_row(
                &name,
                "download through the presigned URL",
                (a.download_mib_s, "MiB/s"),
                "SDK GET ",
                (a.floor_download_mib_s, "MiB/s"),
            ),
            row(
                &name,
                "relay CPU per attachment (both URLs signed)",
                format!("{:.2} ms", a.relay_cpu_ms),
                String::new(),
                format!("target < {ATTACHMENT_CPU_TARGET_MS} ms"),
            ),
        ]);
    }
    let off = &r.offline;
    let offn = format!("2 · offline ({} msgs)", off.messages);
    let pair_rate = if f.redis.rpush_lpop.p50_ms > 0.0 {
        1e3 / f.redis.rpush_lpop.p50_ms
    } else {
        0.0
    };
    let drain_floor_ms = f.redis.drain_1000_ms * off.messages as f64 / 1000.0;
    let drain_floor_rate = off.messages as f64 / (drain_floor_ms / 1e3).max(1e-9);
    rows.extend([
        rate_row(
            &offn,
            "enqueue msg/s (1 sender)",
            (off.enqueue_msgs_per_s, "msg/s"),
            "RPUSH+LPOP ",
            (pair_rate, "pairs/s"),
        ),
        latency_row(
            &offn,
            "drain time",
            off.drain_ms,
            "LPOP×100 ",
            drain_floor_ms,
        ),
        rate_row(
            &offn,
            "drain msg/s",
            (off.drain_msgs_per_s, "msg/s"),
            "",
            (drain_floor_rate, "msg/s"),
        ),
    ]);
    for level in &r.bundle {
        let b = &level.scenario;
        let bf = &level.floor;
        let bn = format!(
            "3 · bundle ({} fetches, c={})",
            b.fetches, level.concurrency
        );
        let mut p50 = latency_row(&bn, "p50", b.latency.p50_ms, "storage ", bf.p50_ms);
        p50.ratio += &format!(" ({})", delta(b.latency.p50_ms - bf.p50_ms));
        rows.extend([
            rate_row(
                &bn,
                "fetches/s",
                (b.fetches_per_s, "fetch/s"),
                "storage ",
                (level.floor_per_s, "/s"),
            ),
            p50,
        ]);
        rows.extend(percentile_rows(&bn, "", &["p95", "p99"], &b.latency, bf));
        rows.push(plain(
            &bn,
            "CPU per fetch: gateway / engine",
            format!(
                "{:.0} µs / {:.0} µs",
                level.cpu.gateway_us, level.cpu.engine_us
            ),
        ));
    }
    let sc = &r.bundle_scale;
    let sn = format!("3 · bundle scale ({} fetches each, c=1)", sc.fetches);
    rows.push(row(
        &sn,
        &format!("p50 at {} keys", sc.large_keys),
        ms(sc.large.p50_ms),
        format!("at {} keys {}", sc.small_keys, ms(sc.small.p50_ms)),
        format!("{:.2}× ", sc.large.p50_ms / sc.small.p50_ms.max(1e-9)),
    ));
    let c = &r.connections;
    let cf = &f.ws_echo_connections;
    let cn = format!("4 · connections ({} idle)", c.opened);
    rows.push(latency_row(
        &cn,
        "handshake p50",
        c.handshake.p50_ms,
        "echo ",
        cf.handshake.p50_ms,
    ));
    rows.extend(percentile_rows(
        &cn,
        "handshake ",
        &["p95"],
        &c.handshake,
        &cf.handshake,
    ));
    rows.extend([
        rate_row(
            &cn,
            "handshakes/s",
            (c.handshakes_per_s, "/s"),
            "",
            (cf.handshakes_per_s, "/s"),
        ),
        row(
            &cn,
            "RSS per connection",
            format!("{:.1} KiB", c.rss_per_conn_kib),
            format!("echo {:.1} KiB", cf.rss_per_conn_kib),
            times(c.rss_per_conn_kib, cf.rss_per_conn_kib),
        ),
    ]);
    let cold = &f.cold_start;
    for cs in &r.cold_start {
        let name = format!("5 · cold start: {}", cs.function);
        rows.push(row(
            &name,
            "exec → response (median / min)",
            format!("{} / {}", ms(cs.median_ms), ms(cs.min_ms)),
            format!("empty fn {}", ms(cold.median_ms)),
            times(cs.median_ms, cold.median_ms),
        ));
        rows.push(row(
            &name,
            "binary size",
            format!("{:.2} MiB", cs.size_mib),
            "–".into(),
            "–".into(),
        ));
    }
    let fl = "floors";
    let ping = &f.redis.ping;
    let getitem = &f.dynamodb_getitem;
    rows.extend([
        plain(
            fl,
            "Redis PING p50 / p99",
            format!("{} / {}", ms(ping.p50_ms), ms(ping.p99_ms)),
        ),
        plain(
            fl,
            "Redis pipelined PING",
            rate(f.redis.pipelined_ping_ops_per_s, "ops/s"),
        ),
        plain(fl, "Redis RPUSH+LPOP p50", ms(f.redis.rpush_lpop.p50_ms)),
        plain(
            fl,
            "DynamoDB-API GetItem p50 / p99",
            format!("{} / {}", ms(getitem.p50_ms), ms(getitem.p99_ms)),
        ),
    ]);
    rows
}

/// The relay's own CPU per attachment stays under this.
const ATTACHMENT_CPU_TARGET_MS: f64 = 5.0;

pub fn targets(r: &Results, full_connections: usize) -> Vec<Target> {
    let mut t = Vec::new();
    let o = &r.online;
    t.push(Target {
        name: "online relay".into(),
        goal: "≥ 20,000 msg/s with p99 ≤ 20 ms".into(),
        measured: format!("{:.0} msg/s, p99 {}", o.msgs_per_s, ms(o.latency.p99_ms)),
        met: o.msgs_per_s >= 20_000.0 && o.latency.p99_ms <= 20.0 && o.latency.n > 0,
    });
    if let Some(d) = &r.online_devices {
        let ratio = d.cpu_ratio();
        t.push(Target {
            name: "two devices per recipient".into(),
            goal: format!("server CPU per send ≤ {TWO_DEVICES_CPU_TARGET}× one device's"),
            measured: format!(
                "{:.0} µs vs {:.0} µs ({ratio:.2}×), {} errors",
                d.two.cpu.total_us(),
                d.one.cpu.total_us(),
                d.one.errors + d.two.errors
            ),
            met: ratio <= TWO_DEVICES_CPU_TARGET
                && d.one.cpu.sends > 0
                && d.two.cpu.sends > 0
                && d.one.errors + d.two.errors == 0,
        });
    }
    if let Some(a) = &r.attachments {
        let share = |v: f64, f: f64| if f > 0.0 { v / f } else { 0.0 };
        let (up, down) = (
            share(a.upload_mib_s, a.floor_upload_mib_s),
            share(a.download_mib_s, a.floor_download_mib_s),
        );
        t.push(Target {
            name: "attachments".into(),
            goal: format!(
                "≥ 90 % of the direct transfer each way, relay CPU < {ATTACHMENT_CPU_TARGET_MS} ms per attachment"
            ),
            measured: format!(
                "upload {:.0} vs {:.0} MiB/s ({:.0} %), download {:.0} vs {:.0} MiB/s ({:.0} %), {:.2} ms CPU, {} errors",
                a.upload_mib_s,
                a.floor_upload_mib_s,
                up * 100.0,
                a.download_mib_s,
                a.floor_download_mib_s,
                down * 100.0,
                a.relay_cpu_ms,
                a.errors
            ),
            met: a.errors == 0 && up >= 0.9 && down >= 0.9 && a.relay_cpu_ms < ATTACHMENT_CPU_TARGET_MS,
        });
    }
    if let Some(a) = &r.online_acks {
        let ff = &a.fire_and_forget;
        // The target is ack mode's; idempotent sends (a claim and an answer remembered per
        // send) are reported beside it, in the scenario's rows.
        let runs = [("online, ack mode", &a.ack)];
        for (name, run) in runs {
            let ratio = a.rate_ratio(run);
            let redis = match (&ff.redis, &run.redis) {
                (Some(f), Some(r)) => format!(
                    ", Redis round trips per message {:.2} vs {:.2}",
                    r.round_trips, f.round_trips
                ),
                _ => String::new(),
            };
            t.push(Target {
                name: name.into(),
                goal: format!(
                    "≥ {:.0} % of fire-and-forget's msg/s",
                    100.0 * ACK_RATE_TARGET
                ),
                measured: format!(
                    "{:.0} vs {:.0} msg/s ({:.0} %), p99 {}{redis}, {} errors, {} of {} acknowledged, {} left",
                    run.msgs_per_s,
                    ff.msgs_per_s,
                    100.0 * ratio,
                    ms(run.latency.p99_ms),
                    ff.errors + run.errors,
                    run.acked,
                    run.received,
                    run.left
                ),
                met: ratio >= ACK_RATE_TARGET
                    && run.latency.n > 0
                    && ff.errors + run.errors == 0
                    && run.acked == run.received
                    && run.left == 0,
            });
        }
    }
    if let Some(g) = &r.groups {
        t.extend(crate::group_report::targets(g));
    }
    if let Some(m) = &r.mls {
        t.extend(crate::mls_report::targets(m));
    }
    if let Some(m) = &r.metrics_cost {
        t.extend(crate::metrics_cost::targets(m));
    }
    if let Some(a) = &r.auth {
        t.extend(crate::auth::targets(a));
    }
    if let Some(a) = &r.ack_flood {
        t.push(Target {
            name: "ack flood".into(),
            goal: format!(
                "another user's ping p50 ≤ {PING_RATIO_TARGET}× at rest while one account floods useless acks"
            ),
            measured: format!(
                "p50 {} vs {} ({:.2}×), p99 {} vs {}, {:.0} acks/s, {} envelopes ({:.1} MiB) in flight, {} errors",
                ms(a.loaded.p50_ms),
                ms(a.rest.p50_ms),
                a.ratio(),
                ms(a.loaded.p99_ms),
                ms(a.rest.p99_ms),
                a.acks_per_s,
                a.in_flight,
                super::util::mib(a.in_flight_bytes),
                a.errors
            ),
            met: a.met(),
        });
    }
    if let Some(l) = r.bundle.iter().find(|l| l.concurrency == 8) {
        let b = &l.scenario;
        t.push(Target {
            name: "bundle fetch, c=8".into(),
            goal: "p95 ≤ 20 ms (SC-003: 200 ms)".into(),
            measured: format!("p95 {}, {} errors", ms(b.latency.p95_ms), b.errors),
            met: b.latency.p95_ms <= 20.0 && b.ok > 0 && b.errors == 0,
        });
    }
    if let Some(best) = r.bundle.iter().max_by(|a, b| {
        a.scenario
            .fetches_per_s
            .total_cmp(&b.scenario.fetches_per_s)
    }) {
        t.push(Target {
            name: "bundle throughput".into(),
            goal: "≥ 700 fetches/s".into(),
            measured: format!(
                "{:.0} fetches/s at c={}",
                best.scenario.fetches_per_s, best.concurrency
            ),
            met: best.scenario.fetches_per_s >= 700.0,
        });
    }
    if let Some(l) = r.bundle.iter().find(|l| l.concurrency == 1) {
        let d = l.scenario.latency.p50_ms - l.floor.p50_ms;
        t.push(Target {
            name: "bundle fetch, c=1".into(),
            goal: "p50 within 1 ms of its storage floor".into(),
            measured: format!(
                "p50 {} vs floor {} ({})",
                ms(l.scenario.latency.p50_ms),
                ms(l.floor.p50_ms),
                delta(d)
            ),
            met: d <= 1.0 && l.scenario.ok > 0 && l.scenario.errors == 0,
        });
    }
    let sc = &r.bundle_scale;
    let ratio = sc.large.p50_ms / sc.small.p50_ms.max(1e-9);
    t.push(Target {
        name: "bundle scale".into(),
        goal: format!(
            "p50 at {} keys ≤ 1.5× p50 at {}",
            sc.large_keys, sc.small_keys
        ),
        measured: format!(
            "{} vs {} ({ratio:.2}×)",
            ms(sc.large.p50_ms),
            ms(sc.small.p50_ms)
        ),
        met: ratio <= 1.5 && sc.errors == 0 && sc.large.n > 0,
    });
    let c = &r.connections;
    t.push(Target {
        name: "idle connections".into(),
        goal: format!("{full_connections} connections at ≤ 16 KiB RSS each"),
        measured: format!("{} open, {:.1} KiB each", c.opened, c.rss_per_conn_kib),
        met: c.opened >= full_connections && c.rss_per_conn_kib <= 16.0,
    });
    let oc = &r.online_cluster;
    t.push(Target {
        name: "online relay on a cluster".into(),
        goal: "≥ 80 % of the single node's messages/s".into(),
        measured: format!(
            "{:.0} msg/s ({:.0} %), {} errors",
            oc.msgs_per_s,
            100.0 * oc.msgs_per_s / o.msgs_per_s.max(1e-9),
            oc.errors
        ),
        met: oc.msgs_per_s >= 0.8 * o.msgs_per_s && oc.latency.n > 0,
    });
    for cs in &r.cold_start {
        t.push(Target {
            name: format!("cold start: {}", cs.function),
            goal: "≤ 30 ms exec → first response".into(),
            measured: match &cs.error {
                Some(e) => format!("failed: {}", e.chars().take(80).collect::<String>()),
                None => format!("median {} (min {})", ms(cs.median_ms), ms(cs.min_ms)),
            },
            met: cs.error.is_none() && !cs.runs_ms.is_empty() && cs.median_ms <= 30.0,
        });
    }
    for cs in &r.cold_start {
        t.push(Target {
            name: format!("binary: {}", cs.function),
            goal: "≤ 8 MiB".into(),
            measured: format!("{:.2} MiB", cs.size_mib),
            met: cs.size_bytes > 0 && cs.size_bytes <= 8 * 1024 * 1024,
        });
    }
    t
}

pub fn print(r: &Results) {
    print_rows(&rows(r));
    print_targets(&r.targets);
}

fn md_escape(s: &str) -> String {
    s.replace('|', "\\|")
}

pub fn markdown_table(r: &Results) -> String {
    let mut out =
        String::from("| scenario | metric | value | floor | ratio |\n|---|---|---:|---:|---|\n");
    let mut last = String::new();
    for x in rows(r) {
        let s = if x.scenario == last {
            String::new()
        } else {
            format!("**{}**", md_escape(&x.scenario))
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            s,
            md_escape(&x.metric),
            md_escape(&x.value),
            md_escape(&x.floor),
            md_escape(&x.ratio)
        ));
        last = x.scenario;
    }
    out
}

pub fn markdown_targets(r: &Results) -> String {
    let mut out = String::from("| target | goal | measured | |\n|---|---|---|---|\n");
    for t in &r.targets {
        out.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            md_escape(&t.name),
            md_escape(&t.goal),
            md_escape(&t.measured),
            if t.met { "met" } else { "**missed**" }
        ));
    }
    out
}

const TEMPLATE: &str = include_str!("benchmarks.md.in");
const NOTES_START: &str = "<!-- notes:start -->";
const NOTES_END: &str = "<!-- notes:end -->";

/// Renders the page; the notes between the markers of an existing page are kept.
pub fn markdown(r: &Results, existing: Option<&str>, plot_file: &str) -> String {
    let m = &r.machine;
    let notes = existing
        .and_then(|old| {
            let a = old.find(NOTES_START)? + NOTES_START.len();
            let b = old[a..].find(NOTES_END)? + a;
            Some(old[a..b].trim().to_string())
        })
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "_No notes yet._".into());
    TEMPLATE
        .replace("{{command}}", &r.command)
        .replace("{{date}}", &m.date_utc)
        .replace(
            "{{machine}}",
            &format!(
                "{} CPUs ({}), {} GiB memory, Linux {}",
                m.cpus, m.cpu_model, m.memory_gib, m.kernel
            ),
        )
        .replace("{{profile}}", &r.profile)
        .replace("{{engine}}", &r.dynamodb_engine)
        .replace("{{total}}", &format!("{:.0}", r.total_s))
        .replace("{{table}}", markdown_table(r).trim_end())
        .replace("{{targets}}", markdown_targets(r).trim_end())
        .replace("{{plot}}", plot_file)
        .replace("{{pairs}}", &r.online.pairs.to_string())
        .replace("{{pipeline}}", &r.online.pipeline.to_string())
        .replace("{{duration}}", &format!("{:.0}", r.online.duration_s))
        .replace("{{notes}}", &notes)
}

/// Latency percentiles of each measurement beside its floor, log scale.
pub fn plot(r: &Results, path: &Path) -> Result<(), String> {
    let f = &r.floors;
    let series: Vec<(String, Lat, usize, bool)> = vec![
        (
            "online relay: send → receive".into(),
            r.online.latency,
            0,
            false,
        ),
        (
            "floor: WebSocket echo round trip".into(),
            f.ws_echo.latency,
            0,
            true,
        ),
        (
            "bundle fetch (highest concurrency)".into(),
            r.bundle
                .last()
                .map(|l| l.scenario.latency)
                .unwrap_or_default(),
            1,
            false,
        ),
        (
            "floor: bundle storage path".into(),
            r.bundle.last().map(|l| l.floor).unwrap_or_default(),
            1,
            true,
        ),
        (
            "WebSocket handshake".into(),
            r.connections.handshake,
            2,
            false,
        ),
        (
            "floor: echo server handshake".into(),
            f.ws_echo_connections.handshake,
            2,
            true,
        ),
        ("floor: Redis PING".into(), f.redis.ping, 3, true),
        (
            "floor: DynamoDB-API GetItem".into(),
            f.dynamodb_getitem,
            4,
            true,
        ),
    ];
    let values: Vec<f64> = series
        .iter()
        .filter(|s| s.1.n > 0)
        .flat_map(|s| [s.1.p50_ms, s.1.p95_ms, s.1.p99_ms, s.1.max_ms])
        .filter(|v| *v > 0.0)
        .collect();
    let lo = values
        .iter()
        .copied()
        .fold(f64::INFINITY, f64::min)
        .max(0.001)
        / 1.5;
    // Headroom above the highest line for the legend.
    let hi = values.iter().copied().fold(0.0, f64::max).max(lo * 10.0) * 400.0;
    let err = |e: &dyn std::fmt::Display| e.to_string();
    let root = SVGBackend::new(path, (1000, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let labels = ["p50", "p95", "p99", "max"];
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "Relay latency vs floors, same run ({}, {})",
                r.mode, r.machine.date_utc
            ),
            ("sans-serif", 20),
        )
        .margin(16)
        .x_label_area_size(36)
        .y_label_area_size(70)
        .build_cartesian_2d((0u32..3u32).into_segmented(), (lo..hi).log_scale())
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (ms, log scale)")
        .x_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => labels.get(*i as usize).unwrap_or(&"").to_string(),
            _ => String::new(),
        })
        .y_label_formatter(&|v| {
            if *v >= 1.0 {
                format!("{v:.0}")
            } else {
                format!("{v:.2}")
            }
        })
        .draw()
        .map_err(|e| err(&e))?;
    let colors = [
        RGBColor(0x1f, 0x77, 0xb4),
        RGBColor(0xd6, 0x27, 0x28),
        RGBColor(0x2c, 0xa0, 0x2c),
        RGBColor(0x7f, 0x7f, 0x7f),
        RGBColor(0x94, 0x67, 0xbd),
    ];
    for (name, lat, group, floor) in series {
        if lat.n == 0 {
            continue;
        }
        let color = colors[group % colors.len()];
        let style = if floor {
            color.mix(0.6).stroke_width(1)
        } else {
            color.stroke_width(3)
        };
        let points: Vec<(SegmentValue<u32>, f64)> =
            [lat.p50_ms, lat.p95_ms, lat.p99_ms, lat.max_ms]
                .iter()
                .enumerate()
                .map(|(i, v)| (SegmentValue::CenterOf(i as u32), v.max(lo)))
                .collect();
        chart
            .draw_series(LineSeries::new(points.clone(), style))
            .map_err(|e| err(&e))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], style));
        chart
            .draw_series(
                points
                    .into_iter()
                    .map(|p| Circle::new(p, if floor { 3 } else { 4 }, color.filled())),
            )
            .map_err(|e| err(&e))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

/// Writes the SVG and the page for `r` into `dir`, keeping the page's notes.
pub fn write_plot_and_page(r: &Results, dir: &Path) -> Result<(), String> {
    let svg = dir.join("benchmarks.svg");
    plot(r, &svg)?;
    let md = dir.join("benchmarks.md");
    let existing = std::fs::read_to_string(&md).ok();
    std::fs::write(&md, markdown(r, existing.as_deref(), "benchmarks.svg"))
        .map_err(|e| format!("{md:?}: {e}"))
}

/// `relay-bench --render DIR`: the SVG and the page again from `DIR/benchmarks.json` (after a
/// change of the template or of the notes), without measuring.
pub fn render(dir: &Path) -> Result<(), String> {
    let json = dir.join("benchmarks.json");
    let text = std::fs::read_to_string(&json).map_err(|e| format!("{json:?}: {e}"))?;
    let r: Results = serde_json::from_str(&text).map_err(|e| format!("{json:?}: {e}"))?;
    write_plot_and_page(&r, dir)
}
