//! Scenario 10, what recording metrics costs the server: two gateways of the same build side by
//! side, one recording metrics (`RELAY_METRICS=on`, its `/metrics` scraped as Prometheus scrapes
//! it) and one not (`off`), loaded in turn with scenario 1's one-to-one sends and scenario 3's
//! bundle fetches; the server's CPU time per send and per fetch on each, and their ratio.
//!
//! The two take turns (on, off, then off, on, …) so that a drift of the machine's load weighs on
//! both alike; each pair of turns gives a ratio, and their spread says how much to trust the
//! mean's.

use std::time::{Duration, Instant};

use relay_tests::{Stack, User};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::bundle::{self, CpuPerFetch};
use super::scenarios::{self, AckMode, CpuPerSend, OneToOne, Run, Servers};
use super::table::{cpu, ms, plain, print_rows, print_targets, rate, row, Row, Target};
use super::util::{log, Lat};

/// The most the server's CPU per send and per fetch may be with metrics on, in times off.
pub const COST_RATIO_TARGET: f64 = 1.03;

/// How often the gateway with metrics on is scraped, as `./local/up --monitor`'s Prometheus does
/// (local/lib.sh `start_prometheus`).
pub const SCRAPE_EVERY: Duration = Duration::from_secs(5);

/// How much load, and how often each gateway takes its turn.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Turns of each gateway (on and off alternate, the order swapped every round).
    pub rounds: usize,
    /// Scenario 1's load per turn: pairs, warm-up, measured window, pipeline.
    pub pairs: usize,
    pub warmup: Duration,
    pub duration: Duration,
    pub pipeline: usize,
    /// Bundle fetches per turn, at `concurrency`, over `bundle_users` users.
    pub fetches: usize,
    pub concurrency: usize,
    pub bundle_users: usize,
}

impl Plan {
    pub fn new(
        quick: bool,
        (pairs, warmup, duration, pipeline): (usize, Duration, Duration, usize),
    ) -> Self {
        Self {
            rounds: if quick { 2 } else { 6 },
            pairs,
            warmup,
            // More, shorter turns: the machine's noise averages out better than over a few
            // long ones; a turn still holds a scrape.
            duration: duration.min(SCRAPE_EVERY),
            pipeline,
            fetches: if quick { 200 } else { 2000 },
            concurrency: 8,
            bundle_users: if quick { 10 } else { 50 },
        }
    }
}

/// One gateway of the scenario: its stack, the processes whose CPU is read, and the URL of its
/// `/metrics` when it records metrics.
pub struct Side<'a> {
    pub stack: &'a Stack,
    pub servers: Servers,
    pub metrics_url: Option<String>,
}

/// One turn of one gateway.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Turn {
    pub metrics: bool,
    /// Server CPU per `sent` reply in the measured window (gateway process and redis-server).
    pub send_cpu: CpuPerSend,
    pub sends_per_s: f64,
    pub send_errors: u64,
    /// The gateway process's CPU per bundle fetch (its threads and the embedded engine's).
    pub fetch_cpu: CpuPerFetch,
    pub fetches_per_s: f64,
    pub fetch_errors: usize,
    /// `/metrics` scrapes during the turn (0 with metrics off).
    pub scrapes: usize,
}

/// The exposition as scraped: its size and how long the gateway took to answer.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Exposition {
    pub scrapes: usize,
    pub failed: usize,
    /// Series (sample lines) and bytes of the last scrape.
    pub series: usize,
    pub bytes: usize,
    pub latency: Lat,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct MetricsCost {
    pub pairs: usize,
    pub pipeline: usize,
    pub duration_s: f64,
    pub fetches: usize,
    pub concurrency: usize,
    pub scrape_every_s: f64,
    /// Every turn in the order run.
    pub turns: Vec<Turn>,
    pub exposition: Exposition,
}

/// The means with metrics on and off and their ratio; and each round's own on ÷ off: their
/// median, least and greatest.
#[derive(Debug, Clone, Copy, Default)]
pub struct Compared {
    pub on: f64,
    pub off: f64,
    pub ratio: f64,
    /// The median of the rounds' ratios: what the target is held to, as one turn that the
    /// machine's other work slowed moves it least.
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Compared {
    fn of(on: &[f64], off: &[f64]) -> Self {
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
        let mut pairs: Vec<f64> = on.iter().zip(off).map(|(a, b)| a / b.max(1e-9)).collect();
        pairs.sort_by(f64::total_cmp);
        let median = match pairs.len() {
            0 => 0.0,
            n if n % 2 == 1 => pairs[n / 2],
            n => (pairs[n / 2 - 1] + pairs[n / 2]) / 2.0,
        };
        let (on, off) = (mean(on), mean(off));
        Self {
            on,
            off,
            ratio: on / off.max(1e-9),
            median,
            min: pairs.iter().copied().fold(f64::INFINITY, f64::min),
            max: pairs.iter().copied().fold(0.0, f64::max),
        }
    }
}

impl MetricsCost {
    fn figures(&self, metrics: bool, f: impl Fn(&Turn) -> f64) -> Vec<f64> {
        self.turns
            .iter()
            .filter(|t| t.metrics == metrics)
            .map(f)
            .collect()
    }

    fn compare(&self, f: impl Fn(&Turn) -> f64) -> Compared {
        Compared::of(&self.figures(true, &f), &self.figures(false, &f))
    }

    /// Server CPU per send (gateway and Redis).
    pub fn send(&self) -> Compared {
        self.compare(|t| t.send_cpu.total_us())
    }

    /// The gateway process's CPU per send alone.
    pub fn send_gateway(&self) -> Compared {
        self.compare(|t| t.send_cpu.gateway_us)
    }

    /// The gateway process's CPU per bundle fetch (engine included).
    pub fn fetch(&self) -> Compared {
        self.compare(|t| t.fetch_cpu.total_us())
    }

    /// The gateway's own threads per bundle fetch (the engine's left out).
    pub fn fetch_gateway(&self) -> Compared {
        self.compare(|t| t.fetch_cpu.gateway_us)
    }

    fn errors(&self) -> u64 {
        self.turns
            .iter()
            .map(|t| t.send_errors + t.fetch_errors as u64)
            .sum()
    }

    fn rate(&self, metrics: bool, f: impl Fn(&Turn) -> f64) -> f64 {
        let v = self.figures(metrics, f);
        v.iter().sum::<f64>() / v.len().max(1) as f64
    }
}

/// What one side holds for its turns: scenario 1's pairs and scenario 3's users.
struct Loaded<'a> {
    side: Side<'a>,
    pairs: OneToOne,
    users: Vec<User>,
    keys: u32,
    offset: usize,
}

/// Runs the plan on `on` (metrics recorded and scraped) and `off`.
pub async fn run(on: Side<'_>, off: Side<'_>, plan: Plan) -> MetricsCost {
    let keys =
        ((plan.rounds * plan.fetches + 32) as f64 / plan.bundle_users as f64).ceil() as u32 + 10;
    let mut sides = Vec::new();
    for side in [on, off] {
        let label = if side.metrics_url.is_some() {
            "on"
        } else {
            "off"
        };
        log(format!(
            "10 · metrics {label}: registering {} pairs and {} users with {keys} one-time prekeys",
            plan.pairs, plan.bundle_users
        ));
        let pairs = OneToOne::create(side.stack, plan.pairs).await;
        let users = scenarios::create_users(side.stack, plan.bundle_users, keys).await;
        // Warm-up: connections and the engine's caches.
        let mut warm = scenarios::Bundle::new(users.len(), keys, plan.concurrency);
        scenarios::bundle_round(side.stack, &users, 0, 32, &mut warm).await;
        sides.push(Loaded {
            side,
            pairs,
            users,
            keys,
            offset: 32,
        });
    }
    let mut turns = Vec::new();
    let mut scrapes = Vec::new();
    for round in 0..plan.rounds {
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for i in order {
            let (turn, mut seen) = take_turn(&mut sides[i], plan, round).await;
            turns.push(turn);
            scrapes.append(&mut seen);
        }
    }
    let ok: Vec<&Scrape> = scrapes.iter().filter(|s| s.bytes > 0).collect();
    let exposition = Exposition {
        scrapes: ok.len(),
        failed: scrapes.len() - ok.len(),
        series: ok.last().map_or(0, |s| s.series),
        bytes: ok.last().map_or(0, |s| s.bytes),
        latency: Lat::from_durations(&ok.iter().map(|s| s.took).collect::<Vec<_>>()),
    };
    MetricsCost {
        pairs: plan.pairs,
        pipeline: plan.pipeline,
        duration_s: plan.duration.as_secs_f64(),
        fetches: plan.fetches,
        concurrency: plan.concurrency,
        scrape_every_s: SCRAPE_EVERY.as_secs_f64(),
        turns,
        exposition,
    }
}

/// One turn of `s`: scenario 1's load, then the bundle fetches, its `/metrics` scraped meanwhile.
async fn take_turn(s: &mut Loaded<'_>, plan: Plan, round: usize) -> (Turn, Vec<Scrape>) {
    let metrics = s.side.metrics_url.is_some();
    log(format!(
        "10 · round {}/{}: metrics {}",
        round + 1,
        plan.rounds,
        if metrics { "on" } else { "off" }
    ));
    let (stop_tx, stop_rx) = watch::channel(false);
    let scraper = s.side.metrics_url.clone().map(|url| {
        let http = s.side.stack.http.clone();
        tokio::spawn(scrape(http, url, stop_rx))
    });
    let run = Run {
        warmup: plan.warmup,
        duration: plan.duration,
        window: plan.pipeline,
        mode: AckMode::default(),
    };
    let online = s.pairs.run(s.side.stack, run, &s.side.servers).await;
    if let Some(e) = &online.first_error {
        log(format!("10 · sends: {} errors, first: {e}", online.errors));
    }
    let round_plan = bundle::Round {
        keys_per_user: s.keys,
        offset: s.offset,
        fetches: plan.fetches,
        concurrency: plan.concurrency,
        gateway_pid: s.side.servers.gateway,
    };
    let (b, fetch_cpu) = bundle::measured_round(s.side.stack, &s.users, round_plan).await;
    s.offset += plan.fetches;
    let _ = stop_tx.send(true);
    let seen = match scraper {
        Some(task) => task.await.unwrap_or_default(),
        None => Vec::new(),
    };
    let turn = Turn {
        metrics,
        send_cpu: online.cpu,
        sends_per_s: online.sends_per_s,
        send_errors: online.errors,
        fetch_cpu,
        fetches_per_s: b.fetches_per_s,
        fetch_errors: b.errors,
        scrapes: seen.len(),
    };
    (turn, seen)
}

/// One `GET /metrics`: its size (0 if it failed), its sample lines and how long it took.
#[derive(Debug, Clone, Copy)]
struct Scrape {
    bytes: usize,
    series: usize,
    took: Duration,
}

/// Scrapes `url` every [`SCRAPE_EVERY`] (the first at once) until `stop`.
async fn scrape(
    http: reqwest::Client,
    url: String,
    mut stop: watch::Receiver<bool>,
) -> Vec<Scrape> {
    let mut every = tokio::time::interval(SCRAPE_EVERY);
    let mut seen = Vec::new();
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = stop.changed() => return seen,
        }
        let t = Instant::now();
        let body = match http.get(&url).timeout(Duration::from_secs(10)).send().await {
            Ok(r) if r.status().is_success() => r.text().await.unwrap_or_default(),
            _ => String::new(),
        };
        seen.push(Scrape {
            bytes: body.len(),
            series: body
                .lines()
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .count(),
            took: t.elapsed(),
        });
    }
}

fn us(v: f64) -> String {
    match v >= 100.0 {
        true => format!("{v:.0} µs"),
        false => format!("{v:.1} µs"),
    }
}

/// A CPU time with metrics on (`value`) beside its mean with them off, and the ratio of the means
/// with the range of the rounds' own ratios.
fn on_off(name: &str, metric: &str, value: String, c: &Compared, target: bool) -> Row {
    let target = match target {
        true => format!("; target ≤ {COST_RATIO_TARGET}×"),
        false => String::new(),
    };
    row(
        name,
        metric,
        value,
        format!("off {}", us(c.off)),
        format!(
            "{:.3}× off; rounds' median {:.3}× (range {:.3}–{:.3}×{target})",
            c.ratio, c.median, c.min, c.max
        ),
    )
}

pub fn rows(m: &MetricsCost) -> Vec<Row> {
    let rounds = m.turns.len() / 2;
    let name = format!(
        "10 · metrics on vs off ({rounds} turns each, alternating; /metrics scraped every {:.0} s)",
        m.scrape_every_s
    );
    let (send, fetch) = (m.send(), m.fetch());
    let (send_gw, fetch_gw) = (m.send_gateway(), m.fetch_gateway());
    let mean_send = |metrics: bool| {
        let t: Vec<&Turn> = m.turns.iter().filter(|t| t.metrics == metrics).collect();
        let n = t.len().max(1) as f64;
        CpuPerSend {
            sends: t.iter().map(|t| t.send_cpu.sends).sum(),
            gateway_us: t.iter().map(|t| t.send_cpu.gateway_us).sum::<f64>() / n,
            redis_us: t
                .iter()
                .map(|t| t.send_cpu.redis_us)
                .sum::<Option<f64>>()
                .map(|r| r / n),
        }
    };
    let e = &m.exposition;
    vec![
        on_off(
            &name,
            &format!(
                "server CPU per send ({} pairs, pipeline {}), metrics on",
                m.pairs, m.pipeline
            ),
            cpu(&mean_send(true)),
            &send,
            true,
        ),
        on_off(
            &name,
            "the gateway's alone",
            us(send_gw.on),
            &send_gw,
            false,
        ),
        on_off(
            &name,
            &format!(
                "server CPU per bundle fetch (c={}), metrics on",
                m.concurrency
            ),
            format!(
                "{} (gateway {} + engine {})",
                us(fetch.on),
                us(fetch_gw.on),
                us(fetch.on - fetch_gw.on)
            ),
            &fetch,
            true,
        ),
        on_off(
            &name,
            "the gateway's own threads alone",
            us(fetch_gw.on),
            &fetch_gw,
            false,
        ),
        plain(
            &name,
            "sends/s and fetches/s, on / off",
            format!(
                "{} / {}; {} / {}",
                rate(m.rate(true, |t| t.sends_per_s), "msg/s"),
                rate(m.rate(false, |t| t.sends_per_s), "msg/s"),
                rate(m.rate(true, |t| t.fetches_per_s), "/s"),
                rate(m.rate(false, |t| t.fetches_per_s), "/s"),
            ),
        ),
        plain(
            &name,
            "/metrics as scraped",
            format!(
                "{} series, {:.0} KiB, answered in p50 {} / max {} ({} scrapes, {} failed)",
                e.series,
                e.bytes as f64 / 1024.0,
                ms(e.latency.p50_ms),
                ms(e.latency.max_ms),
                e.scrapes,
                e.failed
            ),
        ),
    ]
}

pub fn targets(m: &MetricsCost) -> Vec<Target> {
    let (send, fetch) = (m.send(), m.fetch());
    let errors = m.errors();
    vec![Target {
        name: "metrics overhead".into(),
        goal: format!(
            "server CPU per send and per bundle fetch with metrics on ≤ {COST_RATIO_TARGET}× off (rounds' median)"
        ),
        measured: format!(
            "send {:.1} vs {:.1} µs (means {:.3}×; rounds' median {:.3}×, range {:.3}–{:.3}), fetch {:.0} vs {:.0} µs (means {:.3}×; median {:.3}×, range {:.3}–{:.3}), {} scrapes, {errors} errors",
            send.on,
            send.off,
            send.ratio,
            send.median,
            send.min,
            send.max,
            fetch.on,
            fetch.off,
            fetch.ratio,
            fetch.median,
            fetch.min,
            fetch.max,
            m.exposition.scrapes
        ),
        met: send.median <= COST_RATIO_TARGET
            && fetch.median <= COST_RATIO_TARGET
            && m.exposition.scrapes > 0
            && m.exposition.failed == 0
            && errors == 0
            && m.turns.iter().all(|t| t.send_cpu.sends > 0),
    }]
}

/// `--only metrics`: every turn, then the rows and the target.
pub fn print(m: &MetricsCost) {
    for t in &m.turns {
        println!(
            "metrics {:<3}  send {:>6.1} us (gateway {:>6.1})  {:>7.0} msg/s  fetch {:>6.0} us (gateway {:>5.0})  {:>5.0}/s  scrapes {}  errors {}",
            if t.metrics { "on" } else { "off" },
            t.send_cpu.total_us(),
            t.send_cpu.gateway_us,
            t.sends_per_s,
            t.fetch_cpu.total_us(),
            t.fetch_cpu.gateway_us,
            t.fetches_per_s,
            t.scrapes,
            t.send_errors + t.fetch_errors as u64,
        );
    }
    print_rows(&rows(m));
    print_targets(&targets(m));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turn(metrics: bool, send_us: f64) -> Turn {
        Turn {
            metrics,
            send_cpu: CpuPerSend {
                sends: 1,
                gateway_us: send_us,
                redis_us: None,
            },
            ..Default::default()
        }
    }

    #[test]
    fn the_ratio_is_the_means_and_each_round_pairs_its_own_two_turns() {
        // Round 1: on then off; round 2: off then on.
        let m = MetricsCost {
            turns: vec![
                turn(true, 110.0),
                turn(false, 100.0),
                turn(false, 100.0),
                turn(true, 90.0),
            ],
            ..Default::default()
        };
        let c = m.send();
        assert_eq!((c.on, c.off), (100.0, 100.0));
        assert_eq!(c.ratio, 1.0);
        assert!((c.min - 0.9).abs() < 1e-12 && (c.max - 1.1).abs() < 1e-12);
        assert!((c.median - 1.0).abs() < 1e-12);
    }
}
