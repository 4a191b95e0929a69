//! Where Redis is and how it is used: the URL (one node, or a cluster's seeds), the replica wait
//! after stores, the key prefix.

use std::time::Duration;

use super::env::{invalid, Env};
use super::settings as s;
use super::ConfigError;

/// `WAIT numreplicas timeout` after envelopes are stored: the reply `queued` then means the
/// envelope reached `replicas` replicas, unless `timeout` passed first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RedisWait {
    pub replicas: u32,
    pub timeout: Duration,
}

/// The Redis section of `Config`.
pub(super) struct RedisSettings {
    pub url: String,
    pub cluster: bool,
    pub wait: Option<RedisWait>,
    pub prefix: String,
}

impl RedisSettings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let url = env.required(&s::REDIS_URL)?;
        let cluster = redis_mode(&url, env.flag(&s::REDIS_CLUSTER)?)?;
        Ok(Self {
            url,
            cluster,
            wait: redis_wait(env)?,
            prefix: env.string(&s::RELAY_REDIS_PREFIX),
        })
    }
}

/// The seed URLs of `REDIS_URL` (one for a single node; one or more for a cluster).
pub fn redis_seeds(redis_url: &str) -> Vec<&str> {
    redis_url
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
}

/// Checks `REDIS_URL` and decides the mode: a cluster when asked for or when several seeds are
/// given; every seed must parse, and a cluster's seeds are all `redis://` or all `rediss://`.
fn redis_mode(redis_url: &str, cluster: Option<bool>) -> Result<bool, ConfigError> {
    let seeds = redis_seeds(redis_url);
    let bad = |expected| invalid(&s::REDIS_URL, expected);
    if seeds.is_empty() {
        return Err(bad("a redis:// or rediss:// URL"));
    }
    for seed in &seeds {
        redis::IntoConnectionInfo::into_connection_info(*seed)
            .map_err(|_| bad("a redis:// or rediss:// URL"))?;
    }
    let cluster = match cluster {
        Some(false) if seeds.len() > 1 => {
            return Err(bad(
                "one URL when REDIS_CLUSTER is false (several are cluster seeds)",
            ))
        }
        Some(c) => c,
        None => seeds.len() > 1,
    };
    if cluster {
        let tls = seeds[0].starts_with("rediss://");
        let same_scheme =
            |s: &&str| (tls && s.starts_with("rediss://")) || (!tls && s.starts_with("redis://"));
        if !seeds.iter().all(same_scheme) {
            return Err(bad(
                "cluster seeds that are all redis:// or all rediss:// URLs",
            ));
        }
    }
    Ok(cluster)
}

/// `REPLICAS/MILLISECONDS`; `0` (the default) or 0 replicas: no wait.
fn redis_wait(env: &Env) -> Result<Option<RedisWait>, ConfigError> {
    let raw = env.string(&s::REDIS_WAIT);
    let bad = || {
        invalid(
            &s::REDIS_WAIT,
            "REPLICAS/MILLISECONDS, e.g. 1/50 (0 to disable)",
        )
    };
    if raw.trim() == "0" {
        return Ok(None);
    }
    let (replicas, millis) = raw.split_once('/').ok_or_else(bad)?;
    let replicas: u32 = replicas.trim().parse().map_err(|_| bad())?;
    let millis: u64 = millis.trim().parse().map_err(|_| bad())?;
    if replicas == 0 {
        return Ok(None);
    }
    if millis == 0 {
        return Err(bad());
    }
    Ok(Some(RedisWait {
        replicas,
        timeout: Duration::from_millis(millis),
    }))
}
