//! The relay benchmark: starts its own stack (redis-server, `local-gateway` processes with
//! Dynoxide embedded), runs its bounded scenarios and their floors, and reports.

pub mod ackflood;
pub mod attachments;
pub mod auth;
pub mod bundle;
pub mod coldstart;
pub mod floors;
pub mod group_report;
pub mod group_setup;
pub mod groups;
pub mod metrics_cost;
pub mod mls;
pub mod mls_report;
pub mod redis_memory;
pub mod report;
pub mod scenarios;
pub mod table;
pub mod util;
pub mod ws;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use relay_tests::Stack;

use util::{command, log, Server};

pub const USAGE: &str = "\
usage: relay-bench [--quick] [--out DIR] [--bin-dir DIR] [--gateway-dir DIR] [--profile NAME]
                   [--pairs N] [--duration SECS] [--pipeline N] [--connections N]
                   [--dynamodb-url URL]
                   [--only acks|ackflood|bundle|groups|mls|metrics|auth]
       relay-bench --render DIR

Runs the relay benchmark against its own local stack and writes benchmarks.json,
benchmarks.svg and benchmarks.md to --out (default: docs/, or a temporary directory
with --quick). --bin-dir holds the local-gateway, users, keys and connection binaries
(default: target/release; --gateway-dir: local-gateway's, when built otherwise).
./local/bench builds them and runs this. The gateway embeds Dynoxide on a file, as
./local/up runs it; --dynamodb-url uses another DynamoDB-API server instead. --render redraws DIR's benchmarks.svg and
benchmarks.md from its benchmarks.json (notes in the page are kept). --only acks runs
scenario 1d alone (ack mode beside fire-and-forget), --only ackflood scenario 7 alone
(another user's ping while one account floods useless acks), --only bundle scenario 3's
concurrency levels (bundle fetches beside their storage floor; with --gateway-dir, the
gateway as one profile builds it), --only groups scenario 8 (group sends, on the single
node and on a Redis Cluster, beside scenario 1 and 1b run with it), --only mls scenario 9 (a
1,500-member MLS group: Commits accepted beside the relay's MLS work in-process, Welcome sizes,
application messages to 300 online members), --only metrics scenario 10 (server CPU per send and
per bundle fetch on a gateway recording metrics, scraped every 5 s, beside one that records none,
taking turns), --only auth scenario 11 (logins 8 at once at a deployment's Argon2id cost beside
the Argon2id verification alone); each prints its figures and the floors it was measured beside,
writing nothing.";

/// A scenario run alone (`--only`), printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Only {
    /// Scenario 1d: ack mode beside fire-and-forget (`--only acks`).
    Acks,
    /// Scenario 3's concurrency levels: bundle fetches beside their floor (`--only bundle`).
    Bundle,
    /// Scenario 7: another user's ping during an ack flood (`--only ackflood`).
    AckFlood,
    /// Scenario 8: group sends, beside scenario 1 (and 1b on the cluster) (`--only groups`).
    Groups,
    /// Scenario 9: MLS groups, Commits beside the relay's MLS work in-process (`--only mls`).
    Mls,
    /// Scenario 10: server CPU with metrics on beside off (`--only metrics`).
    Metrics,
    /// Scenario 11: logins beside Argon2id alone (`--only auth`).
    Auth,
}

#[derive(Debug, Clone)]
pub struct Opts {
    pub quick: bool,
    pub out: PathBuf,
    pub bin_dir: PathBuf,
    /// Where `local-gateway` is, when built with another profile than the functions.
    pub gateway_dir: Option<PathBuf>,
    pub profile: String,
    pub pairs: usize,
    pub duration: Duration,
    pub warmup: Duration,
    pub pipeline: usize,
    pub offline_messages: u64,
    pub bundle_users: usize,
    pub fetches: usize,
    pub connections: usize,
    pub connection_users: usize,
    pub handshake_concurrency: usize,
    pub cold_repeats: usize,
    pub command: String,
    /// Another DynamoDB engine than the embedded Dynoxide (e.g. a Dynoxide or moto process).
    pub dynamodb_url: Option<String>,
    /// One scenario alone, printed (`--only acks`, `--only ackflood`): for working on its cost.
    pub only: Option<Only>,
}

impl Opts {
    pub fn parse(args: &[String]) -> Result<Self, String> {
        let quick = args.iter().any(|a| a == "--quick");
        let root = relay_tests::servers::workspace_root();
        let mut o = if quick {
            Self {
                quick,
                out: std::env::temp_dir().join(format!("relay-bench-quick-{}", std::process::id())),
                bin_dir: root.join("target/release"),
                gateway_dir: None,
                profile: "release".into(),
                pairs: 10,
                duration: Duration::from_secs(1),
                warmup: Duration::from_millis(300),
                pipeline: 4,
                offline_messages: 200,
                bundle_users: 10,
                fetches: 60,
                connections: 500,
                connection_users: 5,
                handshake_concurrency: 64,
                cold_repeats: 1,
                command: String::new(),
                dynamodb_url: None,
                only: None,
            }
        } else {
            Self {
                quick,
                out: root.join("docs"),
                bin_dir: root.join("target/release"),
                gateway_dir: None,
                profile: "release".into(),
                pairs: 100,
                duration: Duration::from_secs(10),
                warmup: Duration::from_secs(2),
                pipeline: 4,
                offline_messages: 1000,
                bundle_users: 50,
                fetches: 2000,
                connections: 10_000,
                connection_users: 20,
                handshake_concurrency: 64,
                cold_repeats: 5,
                command: String::new(),
                dynamodb_url: None,
                only: None,
            }
        };
        let mut shown = vec!["./local/bench".to_string()];
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut value = |name: &str| -> Result<String, String> {
                it.next()
                    .cloned()
                    .ok_or_else(|| format!("{name} needs a value\n\n{USAGE}"))
            };
            let num = |v: String, name: &str| -> Result<u64, String> {
                v.parse::<u64>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| format!("{name} takes a positive whole number"))
            };
            match a.as_str() {
                "--quick" => shown.push(a.clone()),
                "--out" => o.out = PathBuf::from(value(a)?),
                "--bin-dir" => o.bin_dir = PathBuf::from(value(a)?),
                "--gateway-dir" => o.gateway_dir = Some(PathBuf::from(value(a)?)),
                "--profile" => o.profile = value(a)?,
                "--pairs" => {
                    o.pairs = num(value(a)?, a)?.min(1000) as usize;
                    shown.push(format!("--pairs {}", o.pairs));
                }
                "--duration" => {
                    o.duration = Duration::from_secs(num(value(a)?, a)?.min(600));
                    shown.push(format!("--duration {}", o.duration.as_secs()));
                }
                "--pipeline" => {
                    o.pipeline = num(value(a)?, a)?.min(256) as usize;
                    shown.push(format!("--pipeline {}", o.pipeline));
                }
                "--connections" => {
                    o.connections = num(value(a)?, a)?.min(60_000) as usize;
                    shown.push(format!("--connections {}", o.connections));
                }
                "--dynamodb-url" => {
                    let url = value(a)?;
                    shown.push(format!("--dynamodb-url {url}"));
                    o.dynamodb_url = Some(url);
                }
                "--only" => match value(a)?.as_str() {
                    "acks" => o.only = Some(Only::Acks),
                    "ackflood" => o.only = Some(Only::AckFlood),
                    "bundle" => o.only = Some(Only::Bundle),
                    "groups" => o.only = Some(Only::Groups),
                    "mls" => o.only = Some(Only::Mls),
                    "metrics" => o.only = Some(Only::Metrics),
                    "auth" => o.only = Some(Only::Auth),
                    other => {
                        return Err(format!(
                            "--only takes acks, ackflood, bundle, groups, mls, metrics or auth, not {other:?}"
                        ))
                    }
                },
                "-h" | "--help" => return Err(USAGE.into()),
                other => return Err(format!("unknown argument {other:?}\n\n{USAGE}")),
            }
        }
        o.command = shown.join(" ");
        Ok(o)
    }
}

/// A `local-gateway` process on a free port with the run's environment; `engine` are the
/// arguments of its embedded DynamoDB engine (none when the run uses another engine).
async fn start_gateway(
    bin_dir: &Path,
    env: &HashMap<String, String>,
    engine: &[String],
    create_tables: bool,
    log_file: &Path,
) -> Server {
    let port = util::free_port();
    let mut cmd = command(bin_dir.join("local-gateway"), Some(log_file));
    cmd.envs(env)
        .env("RELAY_LISTEN", format!("127.0.0.1:{port}"))
        .args(engine);
    if create_tables {
        cmd.arg("--create-tables");
    }
    Server::spawn(cmd, port, "local-gateway", 60).await
}

/// The bare echo server: this binary in `--serve-echo` mode, a process of its own.
async fn start_echo(log_file: &Path) -> Server {
    let port = util::free_port();
    let exe = std::env::current_exe().expect("current exe");
    let mut cmd = command(exe, Some(log_file));
    cmd.arg("--serve-echo").arg(format!("127.0.0.1:{port}"));
    Server::spawn(cmd, port, "echo server", 20).await
}

pub async fn run(o: Opts) -> Result<(), String> {
    let started = Instant::now();
    let nofile = util::raise_nofile();
    std::fs::create_dir_all(&o.out).map_err(|e| format!("cannot create {:?}: {e}", o.out))?;
    let logs = std::env::temp_dir().join(format!("relay-bench-logs-{}", std::process::id()));
    std::fs::create_dir_all(&logs).map_err(|e| e.to_string())?;
    let gateway_dir = o.gateway_dir.clone().unwrap_or_else(|| o.bin_dir.clone());
    // The function binaries are only exec'd by the cold starts, which no `--only` run measures.
    let functions = ["users", "keys", "connection"].map(|f| o.bin_dir.join(f));
    let needed = match o.only {
        Some(_) => &functions[..0],
        None => &functions[..],
    };
    for path in std::iter::once(&gateway_dir.join("local-gateway")).chain(needed) {
        if !path.is_file() {
            return Err(format!(
                "{path:?} is missing: build it (./local/bench does) or pass --bin-dir"
            ));
        }
    }
    log(format!(
        "mode {}, functions {:?}, gateway {:?}, logs {:?}, open-file limit {nofile}",
        if o.quick { "quick" } else { "full" },
        o.bin_dir,
        gateway_dir,
        logs
    ));

    // The gateway runs Dynoxide on a file, as ./local/up does, unless --dynamodb-url names
    // another engine; the harness then only starts redis-server.
    let engine: Vec<String> = match &o.dynamodb_url {
        Some(url) => {
            std::env::set_var("RELAY_TEST_DYNAMODB_URL", url);
            Vec::new()
        }
        None => {
            let listen = format!("127.0.0.1:{}", util::free_port());
            std::env::set_var("RELAY_TEST_DYNAMODB_URL", format!("http://{listen}"));
            let file = logs.join("dynamodb.sqlite");
            vec![
                "--dynamodb-file".into(),
                file.to_string_lossy().into_owned(),
                "--dynamodb-listen".into(),
                listen,
            ]
        }
    };
    log(format!(
        "starting redis-server; DynamoDB engine: {}",
        o.dynamodb_url
            .as_deref()
            .unwrap_or("Dynoxide embedded in the gateway")
    ));
    let dynamodb_url =
        tokio::task::spawn_blocking(|| relay_tests::servers::servers().dynamodb_url.clone())
            .await
            .map_err(|e| e.to_string())?;
    let env = util::relay_env();
    let config = shared::Config::from_lookup(|k| env.get(k).cloned()).map_err(|e| e.to_string())?;
    let gw = start_gateway(&gateway_dir, &env, &engine, true, &logs.join("gateway.log")).await;
    let stack = Stack::attach(
        ([127, 0, 0, 1], gw.port).into(),
        config.clone(),
        &dynamodb_url,
    )
    .await;
    let mut redis = shared::storage::redis::connect(&config.redis_url)
        .await
        .map_err(|e| e.to_string())?;

    log("floor: Redis round trips");
    let redis_floor = floors::redis_floor(&mut redis, o.quick).await;
    let redis_pid = util::local_redis_pid(&mut redis).await;
    let own = OwnGateways {
        gateway_dir: &gateway_dir,
        env: &env,
        logs: &logs,
        dynamodb_url: &dynamodb_url,
        redis: &redis,
        redis_pid,
    };
    let flood_plan = ackflood::Plan::new(o.quick);
    if o.only == Some(Only::Bundle) {
        let (levels, _) = bundle_levels(&o, &stack, &redis, gw.pid).await;
        print_floors(&redis_floor, None);
        print_bundle_levels(&levels);
        gw.stop().await;
        return Ok(());
    }
    if o.only == Some(Only::AckFlood) {
        let a = run_ack_flood(&own, flood_plan).await?;
        print_floors(&redis_floor, None);
        ackflood::print(&a);
        gw.stop().await;
        return Ok(());
    }

    if o.only == Some(Only::Metrics) {
        let m = run_metrics_cost(&own, &o).await?;
        print_floors(&redis_floor, None);
        metrics_cost::print(&m);
        gw.stop().await;
        return Ok(());
    }
    if o.only == Some(Only::Auth) {
        let a = run_auth(&own, &o).await?;
        print_floors(&redis_floor, None);
        auth::print(&a);
        gw.stop().await;
        return Ok(());
    }

    let mls_plan = mls::Plan::new(o.quick);
    if o.only == Some(Only::Mls) {
        let m = mls::run(&stack, &mls_plan).await;
        print_floors(&redis_floor, None);
        mls_report::print(&m);
        gw.stop().await;
        return Ok(());
    }

    let servers = scenarios::Servers {
        gateway: gw.pid,
        redis: redis_pid,
        redis_stats: Some(redis.clone()),
        redis_prefix: config.redis_prefix.clone(),
    };
    let group_plan = groups::Plan::new(o.quick);
    let timing = (o.warmup, o.duration, o.pipeline);
    let on_cluster = || ClusterRun {
        gateway_dir: &gateway_dir,
        env: &env,
        logs: &logs,
        dynamodb_url: &dynamodb_url,
        opts: &o,
        groups: Some(group_plan),
    };
    if o.only == Some(Only::Groups) {
        log(format!(
            "1 · online relay (the reference of scenario 8): {} pairs",
            o.pairs
        ));
        let online =
            scenarios::online(&stack, o.pairs, o.warmup, o.duration, o.pipeline, &servers).await;
        let memory = redis_memory::Memory::Node(redis.clone());
        let single = groups::run(&stack, &memory, &servers, &group_plan, timing, true).await;
        let (online_cluster, cluster) = run_on_cluster(on_cluster()).await?;
        let g = groups::Groups {
            single,
            cluster,
            one_to_one_msgs_per_s: online.msgs_per_s,
            one_to_one_cluster_msgs_per_s: Some(online_cluster.msgs_per_s),
            one_to_one_cpu_us: (online.cpu.sends > 0).then(|| online.cpu.total_us()),
        };
        print_floors(&redis_floor, None);
        println!(
            "1 · online: {:.0} msg/s, p50 {:.2} ms, p99 {:.2} ms; 1b · on the cluster: {:.0} msg/s",
            online.msgs_per_s,
            online.latency.p50_ms,
            online.latency.p99_ms,
            online_cluster.msgs_per_s
        );
        group_report::print(&g);
        gw.stop().await;
        return Ok(());
    }

    log("floor: WebSocket echo server");
    let echo = start_echo(&logs.join("echo.log")).await;
    let echo_url = format!("ws://127.0.0.1:{}/ws?token=x", echo.port);
    let echo_floor =
        scenarios::echo_load(&echo_url, o.pairs, o.warmup, o.duration, o.pipeline).await;
    echo.stop().await;

    if o.only == Some(Only::Acks) {
        let acks =
            scenarios::online_acks(&stack, o.pairs, o.warmup, o.duration, o.pipeline, &servers)
                .await;
        print_floors(&redis_floor, Some(&echo_floor));
        print_acks(&acks);
        gw.stop().await;
        return Ok(());
    }

    log(format!(
        "1 · online relay: {} pairs for {:?} (+{:?} warm-up), pipeline {}",
        o.pairs, o.duration, o.warmup, o.pipeline
    ));
    if servers.redis.is_none() {
        log("redis-server's process cannot be read: CPU per send is the gateway's only");
    }
    let online =
        scenarios::online(&stack, o.pairs, o.warmup, o.duration, o.pipeline, &servers).await;
    if let Some(e) = &online.first_error {
        log(format!("online: {} errors, first: {e}", online.errors));
    }

    log(format!(
        "1c · online relay, per-device form: {} pairs, one then two devices per recipient",
        o.pairs
    ));
    let online_devices =
        scenarios::online_devices(&stack, o.pairs, o.warmup, o.duration, o.pipeline, &servers)
            .await;
    for (n, run) in [(1, &online_devices.one), (2, &online_devices.two)] {
        if let Some(e) = &run.first_error {
            log(format!(
                "online, {n} device(s): {} errors, first: {e}",
                run.errors
            ));
        }
    }

    log(format!(
        "1d · online relay in ack mode beside fire-and-forget: {} pairs",
        o.pairs
    ));
    let online_acks =
        scenarios::online_acks(&stack, o.pairs, o.warmup, o.duration, o.pipeline, &servers).await;
    for (label, run) in [("fire-and-forget", &online_acks.fire_and_forget)]
        .into_iter()
        .chain(online_acks.ack_runs())
    {
        if let Some(e) = &run.first_error {
            log(format!(
                "online, {label}: {} errors, first: {e}",
                run.errors
            ));
        }
    }

    let ack_flood = run_ack_flood(&own, flood_plan).await?;
    if let Some(e) = &ack_flood.first_error {
        log(format!(
            "ack flood: {} errors, first: {e}",
            ack_flood.errors
        ));
    }

    log("8 · groups on the single node");
    let memory = redis_memory::Memory::Node(redis.clone());
    let groups_single = groups::run(&stack, &memory, &servers, &group_plan, timing, true).await;

    log("9 · MLS groups on the single node");
    let mls_groups = mls::run(&stack, &mls_plan).await;

    let metrics_cost = run_metrics_cost(&own, &o).await?;
    let auth = run_auth(&own, &o).await?;

    let size = if o.quick { 4 << 20 } else { 50 << 20 };
    let rounds = if o.quick { 1 } else { 3 };
    log(format!(
        "6 · attachments: {} MiB through presigned URLs beside the SDK straight to S3, {rounds} rounds",
        size >> 20
    ));
    let s3_url = relay_tests::servers::servers().s3_url.clone();
    let attachments = attachments::attachments(
        &stack,
        gw.pid,
        &s3_url,
        relay_tests::servers::TEST_BUCKET,
        size,
        rounds,
    )
    .await;
    if attachments.errors > 0 {
        log(format!("attachments: {} errors", attachments.errors));
    }

    let (online_cluster, groups_cluster) = run_on_cluster(on_cluster()).await?;
    let groups = groups::Groups {
        single: groups_single,
        cluster: groups_cluster,
        one_to_one_msgs_per_s: online.msgs_per_s,
        one_to_one_cluster_msgs_per_s: Some(online_cluster.msgs_per_s),
        one_to_one_cpu_us: (online.cpu.sends > 0).then(|| online.cpu.total_us()),
    };

    log(format!(
        "2 · offline relay: {} messages",
        o.offline_messages
    ));
    let offline = scenarios::offline(&stack, o.offline_messages, 16).await;

    let (bundle, users) = bundle_levels(&o, &stack, &redis, gw.pid).await;
    let getitem = floors::getitem_floor(
        &stack.dynamodb,
        &stack.table("keys"),
        &users[0].user_id,
        if o.quick { 50 } else { 300 },
    )
    .await;
    let (small, large, scale_n) = if o.quick {
        (1_000, 10_000, 20)
    } else {
        (1_000, 100_000, 200)
    };
    log(format!(
        "3 · bundle scale: {scale_n} fetches each from targets with {small} and {large} keys"
    ));
    let bundle_scale = bundle::scale(&stack, small, large, scale_n).await;

    log(format!(
        "5 · cold start: {} run(s) per function",
        o.cold_repeats
    ));
    let mut fenv = env.clone();
    fenv.insert(
        "WS_MANAGEMENT_ENDPOINT".into(),
        format!("http://127.0.0.1:{}", gw.port),
    );
    let mut cold = Vec::new();
    for (name, event) in [
        ("users", coldstart::users_event()),
        ("keys", coldstart::keys_event()),
        ("connection", coldstart::connection_event()),
    ] {
        let cs = coldstart::measure(
            name,
            &o.bin_dir.join(name),
            &[],
            &event,
            &fenv,
            o.cold_repeats,
            &logs,
        )
        .await;
        if let Some(e) = &cs.error {
            log(format!("cold start of {name} failed: {e}"));
        }
        cold.push(cs);
    }
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let cold_floor = coldstart::measure(
        "empty",
        &exe,
        &["--lambda-floor"],
        &coldstart::users_event(),
        &fenv,
        o.cold_repeats,
        &logs,
    )
    .await;

    let conn_users = scenarios::create_users(&stack, o.connection_users, 1).await;
    gw.stop().await;
    let n = o.connections.min(nofile.saturating_sub(1000) as usize);
    if n < o.connections {
        log(format!(
            "open-file limit {nofile}: {n} connections instead of {}",
            o.connections
        ));
    }
    log(format!("4 · connections: {n} idle WebSockets"));
    let gw2 = start_gateway(
        &gateway_dir,
        &env,
        &engine,
        false,
        &logs.join("gateway-connections.log"),
    )
    .await;
    let urls: Vec<String> = (0..n)
        .map(|i| {
            format!(
                "ws://127.0.0.1:{}/ws?token={}",
                gw2.port,
                conn_users[i % conn_users.len()].access
            )
        })
        .collect();
    let settle = Duration::from_millis(if o.quick { 200 } else { 1000 });
    let conns = scenarios::connections(urls, gw2.pid, o.handshake_concurrency, settle).await;
    gw2.stop().await;
    let echo2 = start_echo(&logs.join("echo-connections.log")).await;
    let urls = vec![format!("ws://127.0.0.1:{}/ws?token=x", echo2.port); n];
    let conns_floor =
        scenarios::connections(urls, echo2.pid, o.handshake_concurrency, settle).await;
    echo2.stop().await;

    let gateway_size = std::fs::metadata(gateway_dir.join("local-gateway"))
        .map(|m| m.len())
        .unwrap_or(0);
    let mut results = report::Results {
        mode: if o.quick { "quick" } else { "full" }.into(),
        profile: o.profile.clone(),
        command: o.command.clone(),
        machine: util::Machine::describe(),
        total_s: started.elapsed().as_secs_f64(),
        floors: report::Floors {
            redis: redis_floor,
            dynamodb_getitem: getitem,
            ws_echo: echo_floor,
            ws_echo_connections: conns_floor,
            cold_start: cold_floor,
        },
        online,
        online_devices: Some(online_devices),
        online_acks: Some(online_acks),
        attachments: Some(attachments),
        ack_flood: Some(ack_flood),
        groups: Some(groups),
        mls: Some(mls_groups),
        metrics_cost: Some(metrics_cost),
        auth: Some(auth),
        online_cluster,
        offline,
        bundle,
        bundle_scale,
        dynamodb_engine: o
            .dynamodb_url
            .clone()
            .unwrap_or_else(|| "Dynoxide embedded in the gateway (SQLite file)".into()),
        connections: conns,
        cold_start: cold,
        local_gateway_binary_bytes: gateway_size,
        targets: Vec::new(),
    };
    results.targets = report::targets(&results, if o.quick { n } else { 10_000 });
    report::print(&results);

    let json = o.out.join("benchmarks.json");
    std::fs::write(
        &json,
        serde_json::to_string_pretty(&results).map_err(|e| e.to_string())? + "\n",
    )
    .map_err(|e| format!("{json:?}: {e}"))?;
    report::write_plot_and_page(&results, &o.out)?;
    log(format!(
        "wrote benchmarks.json, .svg and .md to {:?} in {:.0} s",
        o.out,
        started.elapsed().as_secs_f64()
    ));
    let _ = std::fs::remove_dir_all(&logs);
    Ok(())
}

/// What the cluster runs need of the run: where the gateway is, the run's environment, the
/// options, and scenario 8's plan when it runs there too.
struct ClusterRun<'a> {
    gateway_dir: &'a Path,
    env: &'a HashMap<String, String>,
    logs: &'a Path,
    dynamodb_url: &'a str,
    opts: &'a Opts,
    groups: Option<groups::Plan>,
}

/// Scenario 1b, and scenario 8 but its online part, on a local Redis Cluster (3 primaries, 3
/// replicas) through a gateway of its own.
async fn run_on_cluster(
    r: ClusterRun<'_>,
) -> Result<(scenarios::Online, Option<groups::GroupRuns>), String> {
    let o = r.opts;
    log("1b · online relay on a local Redis Cluster (3 primaries, 3 replicas)");
    let (cluster, primaries) = tokio::task::spawn_blocking(|| {
        let cluster = relay_tests::cluster::Cluster::start(3, 1);
        let primaries: Vec<u16> = cluster.shards().iter().map(|s| s.primary).collect();
        (cluster, primaries)
    })
    .await
    .map_err(|e| e.to_string())?;
    let mut cluster_env = r.env.clone();
    cluster_env.insert("REDIS_URL".into(), cluster.seeds());
    cluster_env.insert("REDIS_CLUSTER".into(), "true".into());
    let cluster_config =
        shared::Config::from_lookup(|k| cluster_env.get(k).cloned()).map_err(|e| e.to_string())?;
    // Its own engine in memory: the first gateway holds the database file.
    let gw_cluster = start_gateway(
        r.gateway_dir,
        &cluster_env,
        &["--dynamodb-memory".to_string()],
        true,
        &r.logs.join("gateway-cluster.log"),
    )
    .await;
    let cluster_stack = Stack::attach(
        ([127, 0, 0, 1], gw_cluster.port).into(),
        cluster_config,
        r.dynamodb_url,
    )
    .await;
    // The cluster's six redis-servers are not read: CPU per send is the gateway's.
    let cluster_servers = scenarios::Servers {
        gateway: gw_cluster.pid,
        redis: None,
        redis_stats: None,
        redis_prefix: String::new(),
    };
    let online_cluster = scenarios::online(
        &cluster_stack,
        o.pairs,
        o.warmup,
        o.duration,
        o.pipeline,
        &cluster_servers,
    )
    .await;
    if let Some(e) = &online_cluster.first_error {
        log(format!(
            "online on the cluster: {} errors, first: {e}",
            online_cluster.errors
        ));
    }
    let mut groups = None;
    if let Some(plan) = r.groups {
        log("8 · groups on the Redis Cluster");
        let memory = redis_memory::Memory::Cluster(primaries);
        let timing = (o.warmup, o.duration, o.pipeline);
        groups = Some(
            groups::run(
                &cluster_stack,
                &memory,
                &cluster_servers,
                &plan,
                timing,
                false,
            )
            .await,
        );
    }
    gw_cluster.stop().await;
    drop(cluster);
    Ok((online_cluster, groups))
}

/// What a scenario on gateways of its own needs of the run: where the gateway is, the run's
/// environment and logs, the DynamoDB URL and the Redis of the run.
struct OwnGateways<'a> {
    gateway_dir: &'a Path,
    env: &'a HashMap<String, String>,
    logs: &'a Path,
    dynamodb_url: &'a str,
    redis: &'a redis::aio::ConnectionManager,
    redis_pid: Option<u32>,
}

impl OwnGateways<'_> {
    /// A gateway with `env` and its own engine in memory (the first gateway holds the database
    /// file), the same redis-server; its stack, and what reads its servers' costs.
    async fn start(
        &self,
        env: &HashMap<String, String>,
        log_file: &str,
    ) -> Result<(Server, Stack, scenarios::Servers, shared::Config), String> {
        let config =
            shared::Config::from_lookup(|k| env.get(k).cloned()).map_err(|e| e.to_string())?;
        let gw = start_gateway(
            self.gateway_dir,
            env,
            &["--dynamodb-memory".to_string()],
            true,
            &self.logs.join(log_file),
        )
        .await;
        let stack = Stack::attach(
            ([127, 0, 0, 1], gw.port).into(),
            config.clone(),
            self.dynamodb_url,
        )
        .await;
        let servers = scenarios::Servers {
            gateway: gw.pid,
            redis: self.redis_pid,
            redis_stats: Some(self.redis.clone()),
            redis_prefix: config.redis_prefix.clone(),
        };
        Ok((gw, stack, servers, config))
    }
}

/// Scenario 10: a gateway recording metrics (`RELAY_METRICS=on`, its management listener on a
/// known port for `/metrics`) beside one recording none (`off`), both alive, taking turns.
async fn run_metrics_cost(
    own: &OwnGateways<'_>,
    o: &Opts,
) -> Result<metrics_cost::MetricsCost, String> {
    use shared::config::settings::{RELAY_MANAGEMENT_LISTEN, RELAY_METRICS};
    // A fixed port lets a Prometheus started beside the bench scrape the loaded gateway (the
    // README's picture of the bench's traffic).
    let management = std::env::var("RELAY_BENCH_MANAGEMENT_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(util::free_port);
    let mut on_env = own.env.clone();
    on_env.insert(RELAY_METRICS.var.into(), "on".into());
    on_env.insert(
        RELAY_MANAGEMENT_LISTEN.var.into(),
        format!("127.0.0.1:{management}"),
    );
    let mut off_env = own.env.clone();
    off_env.insert(RELAY_METRICS.var.into(), "off".into());
    log("10 · metrics on vs off: two gateways of their own");
    let (gw_on, stack_on, servers_on, _) = own.start(&on_env, "gateway-metrics-on.log").await?;
    let (gw_off, stack_off, servers_off, _) =
        own.start(&off_env, "gateway-metrics-off.log").await?;
    let on = metrics_cost::Side {
        stack: &stack_on,
        servers: servers_on,
        metrics_url: Some(format!("http://127.0.0.1:{management}/metrics")),
    };
    let off = metrics_cost::Side {
        stack: &stack_off,
        servers: servers_off,
        metrics_url: None,
    };
    let timing = (o.pairs, o.warmup, o.duration, o.pipeline);
    let m = metrics_cost::run(on, off, metrics_cost::Plan::new(o.quick, timing)).await;
    gw_on.stop().await;
    gw_off.stop().await;
    Ok(m)
}

/// Scenario 11 on a gateway of its own hashing passwords at the settings' default Argon2id cost
/// (what a deployment runs), not the run's cheap one.
async fn run_auth(own: &OwnGateways<'_>, o: &Opts) -> Result<auth::Auth, String> {
    use shared::config::settings::{ARGON2_M_KIB, ARGON2_P, ARGON2_T};
    let mut env = own.env.clone();
    for s in [ARGON2_M_KIB, ARGON2_T, ARGON2_P] {
        env.remove(s.var);
    }
    let (gw, stack, _, config) = own.start(&env, "gateway-auth.log").await?;
    let a = auth::run(&stack, config.argon2, gw.pid, auth::Plan::new(o.quick)).await;
    gw.stop().await;
    Ok(a)
}

/// Scenario 7 on a gateway of its own, with the default frame limit (`RATE_LIMIT_FRAMES` as a
/// deployment has it; the run's other limits stay out of the way).
async fn run_ack_flood(
    own: &OwnGateways<'_>,
    plan: ackflood::Plan,
) -> Result<ackflood::AckFlood, String> {
    let mut env = own.env.clone();
    env.remove("RATE_LIMIT_FRAMES");
    let config = shared::Config::from_lookup(|k| env.get(k).cloned()).map_err(|e| e.to_string())?;
    let frames = config.rate_limits.frames;
    let frames_limit = format!("{}/{}", frames.capacity, frames.period.as_secs());
    log(format!(
        "7 · ack flood: a gateway of its own, RATE_LIMIT_FRAMES {frames_limit}"
    ));
    let (gw, stack, servers, _) = own.start(&env, "gateway-ackflood.log").await?;
    let a = ackflood::ack_flood(&stack, &servers, &frames_limit, plan).await;
    gw.stop().await;
    Ok(a)
}

/// Scenario 3's concurrency levels on `bundle_users` fresh users, and the users (the report's
/// floor reads one of them).
async fn bundle_levels(
    o: &Opts,
    stack: &Stack,
    redis: &redis::aio::ConnectionManager,
    gateway_pid: u32,
) -> (Vec<bundle::BundleLevel>, Vec<relay_tests::User>) {
    // (concurrency, fetches, storage paths of the floor)
    let plan: Vec<(usize, usize, usize)> = if o.quick {
        vec![(1, 20, 20), (8, 60, 40), (16, 60, 40)]
    } else {
        vec![(1, 300, 300), (8, o.fetches, 1000), (16, o.fetches, 1000)]
    };
    let needed: usize = plan.iter().map(|(_, n, f)| n + f).sum::<usize>() + 16;
    let keys = (needed as f64 / o.bundle_users as f64).ceil() as u32 + 10;
    log(format!(
        "3 · bundle fetch: registering {} users with {keys} one-time prekeys of each kind",
        o.bundle_users
    ));
    let users = scenarios::create_users(stack, o.bundle_users, keys).await;
    let bundle = bundle::levels(stack, redis, &users, keys, gateway_pid, &plan).await;
    (bundle, users)
}

/// `--only bundle`: each level's latency and rate beside its storage floor.
fn print_bundle_levels(levels: &[bundle::BundleLevel]) {
    for l in levels {
        println!(
            "bundle c={:<3} p50 {:>7.2} ms  p95 {:>7.2} ms  p99 {:>7.2} ms  {:>6.0}/s  \
             floor p95 {:>6.2} ms ({:.1}x)  cpu {:.0} us (engine {:.0})  errors {}",
            l.concurrency,
            l.scenario.latency.p50_ms,
            l.scenario.latency.p95_ms,
            l.scenario.latency.p99_ms,
            l.scenario.fetches_per_s,
            l.floor.p95_ms,
            l.scenario.latency.p95_ms / l.floor.p95_ms.max(1e-9),
            l.cpu.gateway_us,
            l.cpu.engine_us,
            l.scenario.errors,
        );
    }
}

/// `--only`: the floors measured in the same run.
fn print_floors(redis: &floors::RedisFloor, echo: Option<&scenarios::EchoFloor>) {
    println!(
        "floor: Redis PING p50 {:.3} ms  p99 {:.3} ms; pipelined PING {:.0} ops/s; RPUSH+LPOP p50 {:.3} ms",
        redis.ping.p50_ms, redis.ping.p99_ms, redis.pipelined_ping_ops_per_s, redis.rpush_lpop.p50_ms
    );
    if let Some(e) = echo {
        println!(
            "floor: WebSocket echo {:.0} frames/s, RTT p50 {:.2} ms  p99 {:.2} ms ({} connections, pipeline {})",
            e.frames_per_s, e.latency.p50_ms, e.latency.p99_ms, e.connections, e.pipeline
        );
    }
}

/// `--only acks`: each run's rate, its ratio to fire-and-forget's, CPU and Redis per message.
fn print_acks(acks: &scenarios::OnlineAcks) {
    let runs = [("fire-and-forget", &acks.fire_and_forget)]
        .into_iter()
        .chain(acks.ack_runs());
    for (label, run) in runs {
        println!(
            "{label:<24} {:>8.0} msg/s  {:>5.1} %  cpu {:>6.1} us (gateway {:.1}, redis {:.1})  \
             redis {}  errors {}",
            run.msgs_per_s,
            100.0 * acks.rate_ratio(run),
            run.cpu.total_us(),
            run.cpu.gateway_us,
            run.cpu.redis_us.unwrap_or(0.0),
            serde_json::to_string(&run.redis).unwrap_or_default(),
            run.errors,
        );
    }
}
