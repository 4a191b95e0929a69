//! Scenario 3, bundle fetches: each concurrency level beside its storage floor (the same DynamoDB
//! and Redis calls issued directly), the CPU time per fetch of the gateway and of the embedded
//! engine, and the scale case (a target with many stored one-time keys against one with few).

use std::time::Instant;

use redis::aio::ConnectionManager;
use relay_tests::{Stack, User};
use serde::{Deserialize, Serialize};

use super::floors;
use super::scenarios::{bundle_round, Bundle};
use super::util::{cpu_secs, cpu_secs_by_thread, log, Lat};

/// The embedded engine's thread name (`local_gateway::dynamodb_engine`).
const ENGINE_THREADS: &str = "dynoxide";

#[derive(Debug, Clone, Copy, Serialize, Deserialize, Default)]
pub struct CpuPerFetch {
    /// The gateway's own threads (HTTP, handlers, SDK and Redis clients), µs per fetch.
    pub gateway_us: f64,
    /// The embedded DynamoDB engine's threads, µs per fetch (0 when the engine runs elsewhere).
    pub engine_us: f64,
}

impl CpuPerFetch {
    /// The whole gateway process, engine included, µs per fetch.
    pub fn total_us(&self) -> f64 {
        self.gateway_us + self.engine_us
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BundleLevel {
    pub concurrency: usize,
    pub scenario: Bundle,
    /// The storage path issued directly at the same concurrency.
    pub floor: Lat,
    pub floor_per_s: f64,
    pub cpu: CpuPerFetch,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BundleScale {
    pub fetches: usize,
    pub small_keys: u64,
    pub large_keys: u64,
    /// Fetches from a target holding `small_keys` one-time keys, one at a time.
    pub small: Lat,
    /// The same from a target holding `large_keys`, interleaved with the small ones.
    pub large: Lat,
    pub errors: usize,
}

/// Every level in turn: its floor, then its fetches (CPU time measured around the fetches).
#[allow(clippy::too_many_arguments)]
pub async fn levels(
    stack: &Stack,
    redis: &ConnectionManager,
    users: &[User],
    keys_per_user: u32,
    gateway_pid: u32,
    plan: &[(usize, usize, usize)],
) -> Vec<BundleLevel> {
    let ids: Vec<String> = users.iter().map(|u| u.user_id.clone()).collect();
    let table = stack.table("keys");
    let (mut offset, mut floor_offset) = (0, 1);
    let mut out = Vec::new();
    // Warm-up: connections and the engine's caches.
    let mut warm = Bundle::new(users.len(), keys_per_user, 8);
    bundle_round(stack, users, offset, 16, &mut warm).await;
    offset += 16;
    for &(concurrency, fetches, floor_n) in plan {
        log(format!(
            "3 · bundle fetch: c={concurrency}: {floor_n} storage paths, then {fetches} fetches"
        ));
        let (times, secs) = floors::bundle_floor(
            &stack.dynamodb,
            redis,
            &table,
            &ids,
            floor_offset,
            floor_n,
            concurrency,
        )
        .await;
        floor_offset += floor_n;
        let round = Round {
            keys_per_user,
            offset,
            fetches,
            concurrency,
            gateway_pid,
        };
        let (b, cpu) = measured_round(stack, users, round).await;
        offset += fetches;
        out.push(BundleLevel {
            concurrency,
            floor_per_s: times.len() as f64 / secs.max(1e-9),
            floor: Lat::from_durations(&times),
            cpu,
            scenario: b,
        });
    }
    out
}

/// One measured round of bundle fetches: how many, at what concurrency, from which fetch on
/// (fetch k: user k fetches user k+1's bundle), and the gateway process whose CPU is read.
#[derive(Debug, Clone, Copy)]
pub struct Round {
    pub keys_per_user: u32,
    pub offset: usize,
    pub fetches: usize,
    pub concurrency: usize,
    pub gateway_pid: u32,
}

/// `round`'s fetches over `users`, and the gateway's CPU time per fetch during them (its own
/// threads and the embedded engine's apart).
pub async fn measured_round(stack: &Stack, users: &[User], round: Round) -> (Bundle, CpuPerFetch) {
    let mut b = Bundle::new(users.len(), round.keys_per_user, round.concurrency);
    // The process's total (`/proc/PID/stat`) keeps the time of threads that ended meanwhile
    // (idle blocking-pool threads end after 10 s), which a sum over the live threads loses;
    // the engine's threads live as long as the process, so their sum is whole.
    let cpu = || {
        let (_, engine) = cpu_secs_by_thread(round.gateway_pid, ENGINE_THREADS);
        (cpu_secs(round.gateway_pid).unwrap_or(0.0), engine)
    };
    let (all0, en0) = cpu();
    bundle_round(stack, users, round.offset, round.fetches, &mut b).await;
    let (all1, en1) = cpu();
    b.finish();
    if let Some(e) = &b.first_error {
        log(format!(
            "bundle c={}: {} errors, first: {e}",
            round.concurrency, b.errors
        ));
    }
    let per = |d: f64| d * 1e6 / b.ok.max(1) as f64;
    let cpu = CpuPerFetch {
        gateway_us: per((all1 - all0) - (en1 - en0)),
        engine_us: per(en1 - en0),
    };
    (b, cpu)
}

/// Stores `extra` more one-time keys for `user` directly through the adapter (the HTTP API takes
/// 100 per request), in slices so the engine sees a bounded number of requests at once.
async fn store_keys(stack: &Stack, user: &User, extra: u32) {
    use shared::model::{KeyUpload, OneTimeKey};
    use shared::storage::KeyStore;
    let dynamo = shared::storage::dynamodb::Dynamo::new(
        stack.dynamodb.clone(),
        shared::storage::dynamodb::Tables::with_prefix(&stack.config.table_prefix),
    );
    let user_id = uuid::Uuid::parse_str(&user.user_id).expect("user id");
    let mut next = 1_000_000u32;
    let mut left = extra;
    while left > 0 {
        let n = left.min(2_500);
        let upload = KeyUpload {
            one_time: (next..next + n)
                .map(|key_id| OneTimeKey {
                    key_id,
                    public_key: relay_tests::client::ec_key(),
                })
                .collect(),
            ..Default::default()
        };
        dynamo
            .store(user_id.into(), &upload)
            .await
            .expect("store keys");
        next += n;
        left -= n;
    }
}

/// p50 of fetches from a target with `small` one-time keys beside one with `large`.
pub async fn scale(stack: &Stack, small: u32, large: u32, fetches: usize) -> BundleScale {
    let users = super::scenarios::create_users(stack, 3, 1).await;
    let (requester, few, many) = (&users[0], &users[1], &users[2]);
    let started = Instant::now();
    futures::join!(
        store_keys(stack, few, small - 1),
        store_keys(stack, many, large - 1)
    );
    log(format!(
        "3 · bundle scale: stored {small} and {large} one-time keys in {:.1} s",
        started.elapsed().as_secs_f64()
    ));
    let (mut a, mut b, mut errors) = (Vec::new(), Vec::new(), 0);
    for i in 0..fetches * 2 {
        let target = if i % 2 == 0 { few } else { many };
        match super::scenarios::fetch_bundle(stack, requester, target).await {
            (took, Ok(())) => if i % 2 == 0 { &mut a } else { &mut b }.push(took),
            (_, Err(_)) => errors += 1,
        }
    }
    BundleScale {
        fetches,
        small_keys: small as u64,
        large_keys: large as u64,
        small: Lat::from_durations(&a),
        large: Lat::from_durations(&b),
        errors,
    }
}
