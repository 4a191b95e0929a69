//! Scenario 9's rows of the table and its targets, and its printout alone (`--only mls`).

use super::groups::GroupOnline;
use super::mls::{CommitRun, MlsGroups, MlsOnline};
use super::table::{ms, plain, print_rows, print_targets, row, Row, Target};
use super::util::Lat;

/// The most the server may take to accept a Commit at 1,500 members (request → 200), p95.
pub const COMMIT_P95_TARGET_MS: f64 = 200.0;
/// The most an application message may take to reach every online member device, p95 (as a
/// Signal-form group send's, scenario 8).
pub const ONLINE_P95_TARGET_MS: f64 = 500.0;

fn p50_p95(l: &Lat) -> String {
    format!("{} / {}", ms(l.p50_ms), ms(l.p95_ms))
}

fn kib(b: f64) -> String {
    if b >= 10_240.0 {
        format!("{:.1} KiB", b / 1024.0)
    } else {
        format!("{b:.0} B")
    }
}

fn commit_rows(name: &str, kind: &str, c: &CommitRun) -> Vec<Row> {
    let floor = "relay's MLS work in-process ";
    let mut rows = vec![
        row(
            name,
            &format!("{kind}: request → 200 p50"),
            ms(c.accept.p50_ms),
            format!("{floor}{}", ms(c.floor.p50_ms)),
            ratio(c.accept.p50_ms, c.floor.p50_ms),
        ),
        row(
            name,
            &format!("{kind}: request → 200 p95"),
            ms(c.accept.p95_ms),
            format!("{floor}{}", ms(c.floor.p95_ms)),
            format!(
                "{}, target ≤ {COMMIT_P95_TARGET_MS:.0} ms",
                ratio(c.accept.p95_ms, c.floor.p95_ms)
            ),
        ),
        plain(
            name,
            &format!("{kind}: sizes"),
            format!(
                "Commit {}, GroupInfo {}{}",
                kib(c.commit_bytes),
                kib(c.group_info_bytes),
                c.welcome_bytes
                    .map_or(String::new(), |w| format!(", Welcome {}", kib(w)))
            ),
        ),
        plain(
            name,
            &format!("{kind}: client builds the Commit p50 / p95"),
            p50_p95(&c.client),
        ),
    ];
    if c.errors > 0 {
        rows.push(plain(
            name,
            &format!("{kind}: errors"),
            format!(
                "{}, first: {}",
                c.errors,
                c.first_error.as_deref().unwrap_or("")
            ),
        ));
    }
    rows
}

fn ratio(v: f64, floor: f64) -> String {
    if floor > 0.0 && v > 0.0 {
        format!("{:.1}× floor", v / floor)
    } else {
        "–".into()
    }
}

fn online_rows(on: &MlsOnline, signal: Option<&GroupOnline>) -> Vec<Row> {
    let name = format!(
        "9 · the same group, {} members online ({} application messages, one at a time)",
        on.online, on.sends
    );
    let (floor, ratio) = match signal {
        Some(s) => (
            format!("8 · Signal form {}", p50_p95(&s.all_received)),
            format!(
                "p95 {:.2}× Signal form (target ≤ {ONLINE_P95_TARGET_MS:.0} ms)",
                on.all_received.p95_ms / s.all_received.p95_ms.max(1e-9)
            ),
        ),
        None => (
            String::new(),
            format!("target ≤ {ONLINE_P95_TARGET_MS:.0} ms"),
        ),
    };
    vec![
        row(
            &name,
            "send → every online device p50 / p95",
            p50_p95(&on.all_received),
            floor,
            ratio,
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
                "{} delivered, {} queued, {} dropped; {} receipts missed, {} errors{}; body {} B",
                on.delivered,
                on.queued,
                on.dropped,
                on.missed,
                on.errors,
                on.first_error
                    .as_deref()
                    .map_or(String::new(), |e| format!(" (first: {e})")),
                on.body_bytes
            ),
        ),
    ]
}

/// Scenario 9's rows; `signal` is scenario 8's online figure of the same run, when it ran.
pub fn rows(m: &MlsGroups, signal: Option<&GroupOnline>) -> Vec<Row> {
    let name = format!("9 · MLS group of {} members (one device each)", m.members);
    let mut rows = vec![plain(
        &name,
        "preparation (not timed)",
        format!(
            "{:.0} s: accounts, KeyPackages, {} members added {} per Commit; state {}, tree {}",
            m.setup_s,
            m.members.saturating_sub(1),
            m.batch_users,
            kib(m.state_bytes as f64),
            kib(m.tree_bytes as f64)
        ),
    )];
    if let Some(w) = m.batch_welcome_bytes {
        rows.push(plain(
            &name,
            &format!("Welcome adding {} users (preparation)", m.batch_users),
            format!(
                "{} (Commit {}, at {} members)",
                kib(w as f64),
                m.batch_commit_bytes.map_or("–".into(), |c| kib(c as f64)),
                m.batch_members
            ),
        ));
    }
    if let Some(c) = &m.removes {
        rows.extend(commit_rows(
            &name,
            &format!("{} Commits removing 1", c.accept.n + c.errors as usize),
            c,
        ));
    }
    if let Some(c) = &m.adds {
        rows.extend(commit_rows(
            &name,
            &format!("{} Commits adding 1", c.accept.n + c.errors as usize),
            c,
        ));
    }
    if let Some(on) = &m.online {
        rows.extend(online_rows(on, signal));
    }
    if let Some(e) = &m.error {
        let e: String = e.chars().take(200).collect();
        rows.push(plain(&name, "failed", e));
    }
    rows
}

fn commit_target(name: &str, c: Option<&CommitRun>, error: Option<&str>) -> Target {
    let goal = format!("request → 200 p95 ≤ {COMMIT_P95_TARGET_MS:.0} ms");
    match c {
        Some(c) => Target {
            name: name.into(),
            goal,
            measured: format!(
                "p95 {} (p50 {}), floor p95 {}, {} errors",
                ms(c.accept.p95_ms),
                ms(c.accept.p50_ms),
                ms(c.floor.p95_ms),
                c.errors
            ),
            met: c.accept.n > 0 && c.accept.p95_ms <= COMMIT_P95_TARGET_MS && c.errors == 0,
        },
        None => Target {
            name: name.into(),
            goal,
            measured: format!("did not run: {}", error.unwrap_or("no figures")),
            met: false,
        },
    }
}

/// Scenario 9's targets.
pub fn targets(m: &MlsGroups) -> Vec<Target> {
    let error = m.error.as_deref();
    let mut t = vec![
        commit_target(
            &format!("MLS add Commit, {}", m.members),
            m.adds.as_ref(),
            error,
        ),
        commit_target(
            &format!("MLS remove Commit, {}", m.members),
            m.removes.as_ref(),
            error,
        ),
    ];
    if let Some(on) = &m.online {
        t.push(Target {
            name: format!("MLS group send, {} online", on.online),
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
    t
}

/// `--only mls`: the table and the targets of scenario 9.
pub fn print(m: &MlsGroups) {
    print_rows(&rows(m, None));
    print_targets(&targets(m));
}
