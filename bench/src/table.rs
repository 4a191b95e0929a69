//! The shapes every scenario's report is made of (a row of the table, a target) and the
//! formatting and printing they share, so the scenarios' own report modules and `report` use
//! them without importing each other.

use serde::{Deserialize, Serialize};

use super::scenarios::CpuPerSend;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Target {
    pub name: String,
    pub goal: String,
    pub measured: String,
    pub met: bool,
}

pub struct Row {
    pub scenario: String,
    pub metric: String,
    pub value: String,
    pub floor: String,
    pub ratio: String,
}

pub fn row(scenario: &str, metric: &str, value: String, floor: String, ratio: String) -> Row {
    Row {
        scenario: scenario.into(),
        metric: metric.into(),
        value,
        floor,
        ratio,
    }
}

/// A figure without a floor.
pub fn plain(scenario: &str, metric: &str, value: String) -> Row {
    row(scenario, metric, value, String::new(), String::new())
}

pub fn ms(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0} ms")
    } else if v >= 1.0 {
        format!("{v:.2} ms")
    } else {
        format!("{:.0} µs", v * 1e3)
    }
}

pub fn rate(v: f64, unit: &str) -> String {
    if v >= 10_000.0 {
        format!("{:.1}k {unit}", v / 1e3)
    } else {
        format!("{v:.0} {unit}")
    }
}

/// A time against its floor: how many times the floor it takes.
pub fn times(value: f64, floor: f64) -> String {
    if floor > 0.0 && value > 0.0 {
        format!("{:.1}× floor", value / floor)
    } else {
        "–".into()
    }
}

/// Server CPU per send: the total, and the gateway's and Redis' shares.
pub fn cpu(c: &CpuPerSend) -> String {
    match c.redis_us {
        Some(redis) => format!(
            "{:.0} µs (gateway {:.0} + Redis {redis:.0})",
            c.total_us(),
            c.gateway_us
        ),
        None => format!("{:.0} µs (gateway; Redis not read)", c.gateway_us),
    }
}

/// Redis commands per send: the round trips (commands the gateway sent, a script counting as
/// one), and the commands its scripts ran besides.
/// The table of `rows`, a scenario's name written once above its rows.
pub fn print_rows(rows: &[Row]) {
    let w = |f: &dyn Fn(&Row) -> usize, min: usize| rows.iter().map(f).max().unwrap_or(0).max(min);
    let (w0, w1, w2, w3) = (
        w(&|x| x.scenario.chars().count(), 8),
        w(&|x| x.metric.chars().count(), 6),
        w(&|x| x.value.chars().count(), 5),
        w(&|x| x.floor.chars().count(), 5),
    );
    println!();
    println!(
        "{:<w0$}  {:<w1$}  {:>w2$}  {:>w3$}  ratio",
        "scenario", "metric", "value", "floor"
    );
    let mut last = String::new();
    for x in rows {
        let s = if x.scenario == last { "" } else { &x.scenario };
        println!(
            "{:<w0$}  {:<w1$}  {:>w2$}  {:>w3$}  {}",
            s, x.metric, x.value, x.floor, x.ratio
        );
        last = x.scenario.clone();
    }
    println!();
}

pub fn print_targets(targets: &[Target]) {
    println!("targets:");
    for t in targets {
        println!(
            "  [{}] {:<24} {:<40} {}",
            if t.met { "met   " } else { "missed" },
            t.name,
            t.goal,
            t.measured
        );
    }
    println!();
}
