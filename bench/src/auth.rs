//! Scenario 11, log in: `POST /v1/sessions` with existing accounts, 8 at once, on a gateway that
//! hashes passwords at a deployment's Argon2id cost (the settings' defaults, not the run's cheap
//! one), beside its floor: the server's own Argon2id verification alone (`PasswordHashing` with
//! the same parameters) in the bench's process, as many at once, so that the floor shares the
//! machine's cores as the logins do.

use std::time::{Duration, Instant};

use futures::StreamExt;
use relay_tests::{Stack, User};
use serde::{Deserialize, Serialize};
use shared::config::Argon2Params;
use shared::crypto::password::PasswordHashing;

use super::table::{ms, print_rows, print_targets, rate, row, times, Row, Target};
use super::util::{cpu_secs, log, Lat};

/// The objective: a login answers within this long, p95.
pub const P95_TARGET_MS: f64 = 200.0;

#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Accounts logged in to, in turn.
    pub users: usize,
    pub logins: usize,
    pub concurrency: usize,
}

impl Plan {
    pub fn new(quick: bool) -> Self {
        Self {
            users: 8,
            logins: if quick { 48 } else { 400 },
            concurrency: 8,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Auth {
    /// The Argon2id cost, `m=… KiB, t=…, p=…`.
    pub argon2: String,
    pub concurrency: usize,
    pub logins: usize,
    pub errors: usize,
    pub first_error: Option<String>,
    /// Request → `200` with tokens.
    pub latency: Lat,
    pub logins_per_s: f64,
    /// The gateway process's CPU time per login, ms.
    pub gateway_cpu_ms: f64,
    /// One Argon2id verification alone, as many at once.
    pub floor: Lat,
    pub floor_per_s: f64,
    /// The bench process's CPU time per verification of the floor, ms.
    #[serde(default)]
    pub floor_cpu_ms: f64,
}

impl Auth {
    pub fn met(&self) -> bool {
        self.errors == 0 && self.latency.n > 0 && self.latency.p95_ms <= P95_TARGET_MS
    }
}

/// Times `n` runs of `f` (`concurrency` at once); returns them and the wall time.
async fn timed<F, Fut>(
    n: usize,
    concurrency: usize,
    f: F,
) -> (Vec<(Duration, Result<(), String>)>, Duration)
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let start = Instant::now();
    let results = futures::stream::iter(0..n)
        .map(|k| {
            let fut = f(k);
            async move {
                let t = Instant::now();
                let r = fut.await;
                (t.elapsed(), r)
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    (results, start.elapsed())
}

/// One `POST /v1/sessions` of `user`: `Ok` on a 200 with an access token.
async fn login(stack: &Stack, user: &User) -> Result<(), String> {
    let (status, body) = relay_tests::client::login(stack, &user.username, &user.password).await;
    match (status, body["access_token"].is_string()) {
        (200, true) => Ok(()),
        _ => Err(format!("{status} {body}")),
    }
}

/// What the logins or the floor measured: each run's time and outcome, the wall time and the
/// CPU time of the process that did the hashing.
#[derive(Default)]
struct Tally {
    times: Vec<Duration>,
    errors: usize,
    first_error: Option<String>,
    wall: Duration,
    cpu_secs: f64,
}

impl Tally {
    /// Adds `n` runs of `f`, `concurrency` at once, and `pid`'s CPU time meanwhile.
    async fn add<F, Fut>(&mut self, n: usize, concurrency: usize, pid: u32, f: F)
    where
        F: Fn(usize) -> Fut,
        Fut: std::future::Future<Output = Result<(), String>>,
    {
        let cpu0 = cpu_secs(pid).unwrap_or(0.0);
        let (results, wall) = timed(n, concurrency, f).await;
        self.cpu_secs += cpu_secs(pid).unwrap_or(0.0) - cpu0;
        self.wall += wall;
        for (took, r) in results {
            match r {
                Ok(()) => self.times.push(took),
                Err(e) => {
                    self.errors += 1;
                    self.first_error.get_or_insert(e);
                }
            }
        }
    }

    fn per_s(&self) -> f64 {
        self.times.len() as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    fn cpu_ms(&self) -> f64 {
        self.cpu_secs * 1e3 / self.times.len().max(1) as f64
    }
}

/// How many turns the logins and the floor take, alternating (the order swapped every round),
/// so that a change of the machine's load weighs on both alike.
const ROUNDS: usize = 4;

/// Registers the plan's users on `stack` (whose gateway hashes with `params`), then measures
/// the logins and the floor in turns.
pub async fn run(stack: &Stack, params: Argon2Params, gateway_pid: u32, plan: Plan) -> Auth {
    let argon2 = format!("m={} KiB, t={}, p={}", params.m_kib, params.t, params.p);
    log(format!(
        "11 · log in: registering {} users (Argon2id {argon2})",
        plan.users
    ));
    let users = super::scenarios::create_users(stack, plan.users, 1).await;
    let hashing = PasswordHashing::new(params).expect("Argon2 parameters");
    let password = "correct horse battery staple";
    let stored = hashing.hash(password).await.expect("hash");
    let verify = |_| {
        let (hashing, stored) = (hashing.clone(), stored.clone());
        async move {
            match hashing.verify(password, Some(&stored)).await {
                Ok(true) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        }
    };
    let login_k = |k: usize| login(stack, &users[k % users.len()]);
    // Warm-up: the client's connections, the hashing threads.
    let _ = timed(plan.concurrency, plan.concurrency, login_k).await;
    let _ = timed(plan.concurrency, plan.concurrency, verify).await;
    log(format!(
        "11 · {} logins and {} Argon2id verifications in the bench, {} at once, in {ROUNDS} turns each",
        plan.logins, plan.logins, plan.concurrency
    ));
    let (mut logins, mut floor) = (Tally::default(), Tally::default());
    let bench = std::process::id();
    let n = plan.logins.div_ceil(ROUNDS);
    for round in 0..ROUNDS {
        for floor_turn in [round % 2 == 1, round % 2 == 0] {
            match floor_turn {
                true => floor.add(n, plan.concurrency, bench, verify).await,
                false => logins.add(n, plan.concurrency, gateway_pid, login_k).await,
            }
        }
    }
    if let Some(e) = &logins.first_error {
        log(format!("11 · logins: {} errors, first: {e}", logins.errors));
    }
    Auth {
        argon2,
        concurrency: plan.concurrency,
        logins: n * ROUNDS,
        errors: logins.errors + floor.errors,
        first_error: logins.first_error.clone().or(floor.first_error.clone()),
        logins_per_s: logins.per_s(),
        gateway_cpu_ms: logins.cpu_ms(),
        latency: Lat::from_durations(&logins.times),
        floor_per_s: floor.per_s(),
        floor_cpu_ms: floor.cpu_ms(),
        floor: Lat::from_durations(&floor.times),
    }
}

pub fn rows(a: &Auth) -> Vec<Row> {
    let name = format!(
        "11 · log in ({} at once; Argon2id {})",
        a.concurrency, a.argon2
    );
    let floor = "Argon2id alone ";
    vec![
        row(
            &name,
            "POST /v1/sessions p50",
            ms(a.latency.p50_ms),
            format!("{floor}{}", ms(a.floor.p50_ms)),
            times(a.latency.p50_ms, a.floor.p50_ms),
        ),
        row(
            &name,
            "POST /v1/sessions p95",
            ms(a.latency.p95_ms),
            format!("{floor}{}", ms(a.floor.p95_ms)),
            format!(
                "{}, target ≤ {P95_TARGET_MS:.0} ms",
                times(a.latency.p95_ms, a.floor.p95_ms)
            ),
        ),
        row(
            &name,
            "logins/s",
            rate(a.logins_per_s, "/s"),
            format!("{floor}{}", rate(a.floor_per_s, "/s")),
            format!(
                "{:.0}% of floor",
                100.0 * a.logins_per_s / a.floor_per_s.max(1e-9)
            ),
        ),
        row(
            &name,
            "CPU per login (the gateway process's)",
            format!("{:.1} ms", a.gateway_cpu_ms),
            format!("{floor}{:.1} ms", a.floor_cpu_ms),
            times(a.gateway_cpu_ms, a.floor_cpu_ms),
        ),
    ]
}

pub fn targets(a: &Auth) -> Vec<Target> {
    vec![Target {
        name: "log in, 8 at once".into(),
        goal: format!("p95 ≤ {P95_TARGET_MS:.0} ms at a deployment's Argon2id cost"),
        measured: format!(
            "p50 {} / p95 {} (Argon2id alone {} / {}), {} errors",
            ms(a.latency.p50_ms),
            ms(a.latency.p95_ms),
            ms(a.floor.p50_ms),
            ms(a.floor.p95_ms),
            a.errors
        ),
        met: a.met(),
    }]
}

/// `--only auth`: the rows and the target.
pub fn print(a: &Auth) {
    print_rows(&rows(a));
    print_targets(&targets(a));
}
