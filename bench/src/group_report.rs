//! Scenario 8's rows of the table and its targets, and its printout alone (`--only groups`).

use super::groups::{GroupOffline, GroupRuns, Groups};
use super::table::{cpu, ms, plain, print_rows, print_targets, rate, row, times, Row, Target};
use super::util::Lat;

/// The most a group send to 1,500 offline devices may take (send → `sent`), p95.
pub const OFFLINE_P95_TARGET_MS: f64 = 200.0;
/// The most a group send may take to reach every online member device, p95.
pub const ONLINE_P95_TARGET_MS: f64 = 500.0;
/// The least group deliveries/s may be, in times the one-to-one messages/s of the same run.
pub const DELIVERIES_RATIO_TARGET: f64 = 3.0;
/// The most a group message may store per device reached beyond its payload (stored once).
pub const BYTES_PER_DEVICE_TARGET: f64 = 100.0;

fn p50_p95(l: &Lat) -> String {
    format!("{} / {}", ms(l.p50_ms), ms(l.p95_ms))
}

fn p50_p99(l: &Lat) -> String {
    format!("{} / {}", ms(l.p50_ms), ms(l.p99_ms))
}

fn bytes(v: f64) -> String {
    if v.abs() >= 10_240.0 {
        format!("{:.1} KiB", v / 1024.0)
    } else {
        format!("{v:.0} B")
    }
}

/// Group deliveries/s ÷ one-to-one messages/s.
fn ratio(deliveries: f64, one_to_one: f64) -> f64 {
    deliveries / one_to_one.max(1e-9)
}

/// What one send stored: `used_memory` per send and per device, the inbox entries, the payload.
fn storage(o: &GroupOffline) -> (String, String) {
    let used = match (o.used_memory_per_send, o.used_memory_per_device()) {
        (Some(send), Some(device)) => format!(
            "used_memory +{} per send, {} per device",
            bytes(send),
            bytes(device)
        ),
        _ => "used_memory not read".into(),
    };
    let entries = format!(
        "inbox entry {} + holder {} as stored{}",
        bytes(o.entry_bytes),
        bytes(o.holder_bytes),
        o.lists_bytes_per_device.map_or(String::new(), |b| format!(
            "; the two lists +{} per device",
            bytes(b)
        ))
    );
    (used, entries)
}

fn offline_rows(name: &str, o: &GroupOffline) -> Vec<Row> {
    let floor = o.floor.unwrap_or_default();
    let label = format!("RPUSH×{} pipelined ", o.devices);
    let with_floor = |metric: &str, v: f64, f: f64, extra: String| {
        let floor_text = match o.floor {
            Some(_) => format!("{label}{}", ms(f)),
            None => String::new(),
        };
        let ratio = match o.floor {
            Some(_) => format!("{}{extra}", times(v, f)),
            None => extra.trim_start_matches(", ").to_string(),
        };
        row(name, metric, ms(v), floor_text, ratio)
    };
    let (used, entries) = storage(o);
    let payload = format!(
        "payload {} B ({} B base64)",
        o.body_bytes, o.body_base64_bytes
    );
    vec![
        with_floor(
            "send → sent p50",
            o.latency.p50_ms,
            floor.p50_ms,
            String::new(),
        ),
        with_floor(
            "send → sent p95",
            o.latency.p95_ms,
            floor.p95_ms,
            format!(", target ≤ {OFFLINE_P95_TARGET_MS:.0} ms"),
        ),
        plain(
            name,
            "replies (device counts, all sends)",
            format!(
                "{} queued, {} delivered, {} dropped of {}; {} errors",
                o.queued,
                o.delivered,
                o.dropped,
                o.devices * o.latency.n as u64,
                o.errors
            ),
        ),
        row(
            name,
            "stored per message",
            used,
            payload.clone(),
            o.per_device_beyond_payload().map_or("–".into(), |d| {
                format!("{d:.0} B per device beyond the payload (target ≤ {BYTES_PER_DEVICE_TARGET:.0} B)")
            }),
        ),
        row(
            name,
            "entries per device",
            entries,
            payload,
            o.lists_bytes_per_device.map_or("–".into(), |b| {
                format!("{:.1}× payload", b / o.body_bytes.max(1) as f64)
            }),
        ),
        plain(
            name,
            "stored once per message",
            format!(
                "envelope key {}{}; used_memory − entries {}",
                o.payload_key_bytes.map_or("–".into(), |b| bytes(b as f64)),
                o.payload_json_bytes
                    .map_or(String::new(), |b| format!(" ({b} B of JSON)")),
                o.payload_share().map_or("–".into(), bytes)
            ),
        ),
        plain(
            name,
            "send frame",
            // The map grows with every member device: how much room the frame limit leaves.
            format!(
                "{} ({} devices in the map), {:.0}% of the {} B frame limit",
                bytes(o.frame_bytes as f64),
                o.devices,
                100.0 * o.frame_bytes as f64 / shared::frames::MAX_FRAME_BYTES as f64,
                shared::frames::MAX_FRAME_BYTES
            ),
        ),
    ]
}

fn single_rows(g: &Groups, r: &GroupRuns) -> Vec<Row> {
    let mut rows = Vec::new();
    if let Some(o) = &r.offline {
        let name = format!(
            "8 · group of {} members, all offline ({} sends, one at a time)",
            o.members, o.sends
        );
        rows.extend(offline_rows(&name, o));
    }
    if let (Some(on), Some(o)) = (&r.online, &r.offline) {
        let name = format!(
            "8 · the same group, {} members online ({} sends, one at a time)",
            on.online, on.sends
        );
        rows.extend([
            row(
                &name,
                "send → every online device p50 / p95",
                p50_p95(&on.all_received),
                format!("all offline {}", p50_p95(&o.latency)),
                format!(
                    "p95 {:.1}× all offline (target ≤ {ONLINE_P95_TARGET_MS:.0} ms)",
                    on.all_received.p95_ms / o.latency.p95_ms.max(1e-9)
                ),
            ),
            plain(
                &name,
                "send → each online device p50 / p95",
                p50_p95(&on.each_received),
            ),
            plain(&name, "send → sent p50 / p95", p50_p95(&on.sent)),
            plain(
                &name,
                "replies (device counts, all sends)",
                format!(
                    "{} delivered, {} queued, {} dropped; {} receipts missed, {} errors",
                    on.delivered, on.queued, on.dropped, on.missed, on.errors
                ),
            ),
        ]);
    }
    if let Some(m) = &r.many {
        rows.extend(many_rows(m, g.one_to_one_msgs_per_s, "1 · one-to-one "));
        if let (Some(one), true) = (g.one_to_one_cpu_us, m.cpu.sends > 0) {
            // A group send's cost spread over the devices it reaches, beside a one-to-one
            // message's: what the fan-out saves the server per delivery.
            let per_delivery = m.cpu.total_us() / m.devices.max(1) as f64;
            rows.push(row(
                &many_name(m),
                "server CPU per delivery",
                format!("{per_delivery:.0} µs"),
                format!("1 · one-to-one {one:.0} µs per message"),
                format!("{:.2}× one-to-one", per_delivery / one.max(1e-9)),
            ));
        }
    }
    rows
}

fn many_name(m: &super::scenarios::Online) -> String {
    format!(
        "8 · {} groups sending at once, {} devices each (pipeline {})",
        m.pairs, m.devices, m.pipeline
    )
}

fn many_rows(m: &super::scenarios::Online, one_to_one: f64, label: &str) -> Vec<Row> {
    let name = many_name(m);
    let mut rows = vec![
        row(
            &name,
            "group deliveries/s (member devices reached)",
            rate(m.msgs_per_s, "/s"),
            format!("{label}{}", rate(one_to_one, "msg/s")),
            format!(
                "{:.2}× one-to-one (target ≥ {DELIVERIES_RATIO_TARGET:.0}×)",
                ratio(m.msgs_per_s, one_to_one)
            ),
        ),
        plain(&name, "group sends/s", rate(m.sends_per_s, "/s")),
        plain(&name, "send → receive p50 / p99", p50_p99(&m.latency)),
    ];
    if m.cpu.sends > 0 {
        rows.push(plain(&name, "server CPU per group send", cpu(&m.cpu)));
    }
    if let Some(redis) = &m.redis {
        rows.push(plain(
            &name,
            "Redis commands per group send",
            format!(
                "{:.2} round trips (+ {:.1} run by scripts)",
                redis.round_trips, redis.in_scripts
            ),
        ));
    }
    if m.errors > 0 {
        rows.push(plain(
            &name,
            "errors",
            format!(
                "{}, first: {}",
                m.errors,
                m.first_error.as_deref().unwrap_or("")
            ),
        ));
    }
    rows
}

fn cluster_rows(g: &Groups, c: &GroupRuns) -> Vec<Row> {
    let name = "8 · groups on a Redis Cluster (3 primaries, 3 replicas)";
    let mut rows = Vec::new();
    let single = g.single.offline.as_ref();
    if let Some(o) = &c.offline {
        let (used, _) = storage(o);
        rows.extend([
            row(
                name,
                &format!("{} offline devices: send → sent p50 / p95", o.devices),
                p50_p95(&o.latency),
                single.map_or(String::new(), |s| {
                    format!("single node {}", p50_p95(&s.latency))
                }),
                format!(
                    "p95 {}(target ≤ {OFFLINE_P95_TARGET_MS:.0} ms)",
                    single.map_or(String::new(), |s| format!(
                        "{:.1}× single node ",
                        o.latency.p95_ms / s.latency.p95_ms.max(1e-9)
                    ))
                ),
            ),
            row(
                name,
                "stored per message",
                used,
                single
                    .and_then(GroupOffline::used_memory_per_device)
                    .map_or(String::new(), |d| {
                        format!("single node {} per device", bytes(d))
                    }),
                format!(
                    "entry {} + holder {}",
                    bytes(o.entry_bytes),
                    bytes(o.holder_bytes)
                ),
            ),
        ]);
    }
    if let Some(m) = &c.many {
        let one_to_one = g.one_to_one_cluster_msgs_per_s.unwrap_or(0.0);
        let of_single = g.single.many.as_ref().map_or(String::new(), |s| {
            format!(
                "; {:.0}% of single node",
                100.0 * m.msgs_per_s / s.msgs_per_s.max(1e-9)
            )
        });
        rows.extend([
            row(
                name,
                &format!("{} groups: group deliveries/s", m.pairs),
                rate(m.msgs_per_s, "/s"),
                format!("1b · one-to-one {}", rate(one_to_one, "msg/s")),
                format!(
                    "{:.2}× one-to-one (target ≥ {DELIVERIES_RATIO_TARGET:.0}×){of_single}",
                    ratio(m.msgs_per_s, one_to_one)
                ),
            ),
            plain(
                name,
                &format!("{} groups: send → receive p50 / p99", m.pairs),
                p50_p99(&m.latency),
            ),
        ]);
    }
    rows
}

/// Scenario 8's rows: the single node's, then the cluster's beside them.
pub fn rows(g: &Groups) -> Vec<Row> {
    let mut rows = single_rows(g, &g.single);
    if let Some(c) = &g.cluster {
        rows.extend(cluster_rows(g, c));
    }
    for (label, r) in [
        ("single node", Some(&g.single)),
        ("cluster", g.cluster.as_ref()),
    ] {
        if let Some(e) = r.and_then(|r| r.error.as_ref()) {
            let e: String = e.chars().take(100).collect();
            rows.push(plain("8 · groups", &format!("failed on the {label}"), e));
        }
    }
    rows
}

fn offline_target(name: &str, o: &GroupOffline) -> Target {
    let reached = o.queued + o.delivered;
    Target {
        name: name.into(),
        goal: format!("send → sent p95 ≤ {OFFLINE_P95_TARGET_MS:.0} ms, every inbox written"),
        measured: format!(
            "p95 {} (p50 {}), {reached} of {} devices reached, {} errors, {} per device stored",
            ms(o.latency.p95_ms),
            ms(o.latency.p50_ms),
            o.devices * o.latency.n as u64,
            o.errors,
            o.used_memory_per_device().map_or("–".into(), bytes),
        ),
        met: o.latency.n > 0
            && o.latency.p95_ms <= OFFLINE_P95_TARGET_MS
            && o.errors == 0
            && o.dropped == 0
            && reached == o.devices * o.latency.n as u64,
    }
}

/// Redis' memory per message: the payload once and at most [`BYTES_PER_DEVICE_TARGET`] per
/// device, from `used_memory` (what the server really holds, allocator overhead included).
fn storage_target(name: &str, o: &GroupOffline) -> Option<Target> {
    let send = o.used_memory_per_send?;
    let per_device = o.per_device_beyond_payload()?;
    let payload = o.payload_stored();
    Some(Target {
        name: name.into(),
        goal: format!("≤ payload + {BYTES_PER_DEVICE_TARGET:.0} B per device"),
        measured: format!(
            "used_memory +{} per send to {} devices: payload {} B + {per_device:.0} B per device \
             (inbox entry {} + holder {} as stored{})",
            bytes(send),
            o.devices,
            payload,
            bytes(o.entry_bytes),
            bytes(o.holder_bytes),
            o.lists_bytes_per_device
                .map_or(String::new(), |b| format!(", {} in the lists", bytes(b)))
        ),
        met: o.latency.n > 0 && per_device <= BYTES_PER_DEVICE_TARGET,
    })
}

fn deliveries_target(name: &str, m: &super::scenarios::Online, one_to_one: f64) -> Target {
    let x = ratio(m.msgs_per_s, one_to_one);
    Target {
        name: name.into(),
        goal: format!("≥ {DELIVERIES_RATIO_TARGET:.0}× one-to-one msg/s"),
        measured: format!(
            "{:.0} deliveries/s vs {:.0} msg/s ({x:.2}×), {} errors",
            m.msgs_per_s, one_to_one, m.errors
        ),
        met: x >= DELIVERIES_RATIO_TARGET && m.latency.n > 0 && m.errors == 0,
    }
}

/// A target of a part that did not run: missed, with why.
fn not_run(name: &str, goal: &str, r: &GroupRuns) -> Target {
    Target {
        name: name.into(),
        goal: goal.into(),
        measured: format!(
            "did not run: {}",
            r.error.as_deref().unwrap_or("no figures")
        ),
        met: false,
    }
}

/// The targets of one stack's runs (`suffix` names the cluster's), against `one_to_one`.
fn run_targets(r: &GroupRuns, one_to_one: f64, suffix: &str) -> Vec<Target> {
    let mut t = Vec::new();
    let offline_goal =
        format!("send → sent p95 ≤ {OFFLINE_P95_TARGET_MS:.0} ms, every inbox written");
    match &r.offline {
        Some(o) => {
            t.push(offline_target(
                &format!("group send, {} offline{suffix}", o.members),
                o,
            ));
            t.extend(storage_target(&format!("group message storage{suffix}"), o));
        }
        None => t.push(not_run(
            &format!("group send, offline{suffix}"),
            &offline_goal,
            r,
        )),
    }
    if let Some(on) = &r.online {
        t.push(Target {
            name: format!("group send, {} online{suffix}", on.online),
            goal: format!("every online device has it: p95 ≤ {ONLINE_P95_TARGET_MS:.0} ms"),
            measured: format!(
                "p95 {} (p50 {}), {} receipts missed, {} errors",
                ms(on.all_received.p95_ms),
                ms(on.all_received.p50_ms),
                on.missed,
                on.errors
            ),
            met: on.all_received.n > 0
                && on.all_received.p95_ms <= ONLINE_P95_TARGET_MS
                && on.missed == 0
                && on.errors == 0,
        });
    }
    let name = format!("group deliveries{suffix}");
    match &r.many {
        Some(m) => t.push(deliveries_target(&name, m, one_to_one)),
        None => t.push(not_run(
            &name,
            &format!("≥ {DELIVERIES_RATIO_TARGET:.0}× one-to-one msg/s"),
            r,
        )),
    }
    t
}

/// Scenario 8's targets, the cluster's beside the single node's.
pub fn targets(g: &Groups) -> Vec<Target> {
    let mut t = run_targets(&g.single, g.one_to_one_msgs_per_s, "");
    if let Some(c) = &g.cluster {
        let one_to_one = g.one_to_one_cluster_msgs_per_s.unwrap_or(0.0);
        t.extend(run_targets(c, one_to_one, ", cluster"));
    }
    t
}

/// `--only groups`: the table and the targets of scenario 8.
pub fn print(g: &Groups) {
    print_rows(&rows(g));
    print_targets(&targets(g));
}
