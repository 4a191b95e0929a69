//! The gateway's command line.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::dynamodb_engine::Storage;
use shared::config::settings;
use shared::config::{invalid, Env};

pub const USAGE: &str = "\
usage: local-gateway [--create-tables] [--lambda-endpoint URL]
                     [--dynamodb-file PATH | --dynamodb-memory] [--dynamodb-listen ADDR]

Serves the relay on RELAY_LISTEN (default 127.0.0.1:8080), and the Management API
(/@connections/{id}) on RELAY_MANAGEMENT_LISTEN (a loopback address; default 127.0.0.1:0, a free
port, required with --lambda-endpoint); that listener also serves /metrics (Prometheus text;
RELAY_METRICS=off turns metrics off), /healthz (liveness) and /readyz (Redis and DynamoDB
answer). RELAY_WS_QUEUE_BYTES bounds each connection's outbound queue (default 1048576);
RELAY_WS_IDLE_TIMEOUT_SECS closes a connection without a message either way for that long
(default 600, API Gateway's).
  --create-tables        create missing tables (from infra/tables.json) before serving
  --lambda-endpoint URL  send events to functions behind a Lambda invoke API instead of calling
                         the handlers in this process
  --dynamodb-file PATH   run Dynoxide (a DynamoDB-API server on SQLite) in this process with its
                         data in PATH, and use it (sets AWS_ENDPOINT_URL_DYNAMODB)
  --dynamodb-memory      the same with the data in memory (gone at exit)
  --dynamodb-listen ADDR where the embedded engine listens (default 127.0.0.1:0, a free port)";

#[derive(Debug, Clone, Default)]
pub struct Options {
    pub create_tables: bool,
    pub lambda_endpoint: Option<String>,
    pub dynamodb: Option<Storage>,
    pub dynamodb_listen: Option<SocketAddr>,
}

impl Options {
    pub fn parse(args: &[String]) -> Result<Self, String> {
        let mut o = Self::default();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut value = || {
                it.next()
                    .cloned()
                    .ok_or_else(|| format!("{a} needs a value\n\n{USAGE}"))
            };
            match a.as_str() {
                "--create-tables" => o.create_tables = true,
                "--lambda-endpoint" => o.lambda_endpoint = Some(value()?),
                "--dynamodb-file" => o.dynamodb = Some(Storage::File(PathBuf::from(value()?))),
                "--dynamodb-memory" => o.dynamodb = Some(Storage::Memory),
                "--dynamodb-listen" => {
                    let v = value()?;
                    o.dynamodb_listen = Some(
                        v.parse()
                            .map_err(|_| format!("--dynamodb-listen {v:?}: not HOST:PORT"))?,
                    );
                }
                "-h" | "--help" => return Err(USAGE.into()),
                other => return Err(format!("unknown argument {other:?}\n\n{USAGE}")),
            }
        }
        if o.dynamodb_listen.is_some() && o.dynamodb.is_none() {
            return Err("--dynamodb-listen goes with --dynamodb-file or --dynamodb-memory".into());
        }
        Ok(o)
    }
}

/// API Gateway's idle connection timeout (fixed there; `RELAY_WS_IDLE_TIMEOUT_SECS` here).
pub const DEFAULT_IDLE_TIMEOUT: std::time::Duration =
    std::time::Duration::from_secs(settings::RELAY_WS_IDLE_TIMEOUT_SECS.default_number());

/// Bytes a connection's outbound queue may hold by default (`RELAY_WS_QUEUE_BYTES`).
pub const DEFAULT_QUEUE_BYTES: usize = settings::RELAY_WS_QUEUE_BYTES.default_number() as usize;

/// The gateway's own settings, from the environment (the relay's are `shared::Config`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `RELAY_LISTEN`: the public listener (HTTP API and `/ws`).
    pub listen: String,
    /// `RELAY_MANAGEMENT_LISTEN`: the Management API's listener. It has no authentication (API
    /// Gateway's is IAM-signed), so only a loopback address is accepted; port 0 picks a free one.
    pub management_listen: SocketAddr,
    /// `RELAY_WS_QUEUE_BYTES`: bytes a connection's outbound queue may hold before the
    /// connection is dropped (a client that does not read).
    pub queue_bytes: usize,
    /// `RELAY_WS_IDLE_TIMEOUT_SECS`: a connection with no message either way for this long is
    /// closed, as API Gateway closes it (whose timeout is fixed at the default).
    pub idle_timeout: std::time::Duration,
}

impl Settings {
    pub fn from_env() -> Result<Self, String> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let env = Env::new(&get);
        let raw = env.string(&settings::RELAY_MANAGEMENT_LISTEN);
        let management_listen: SocketAddr = raw
            .trim()
            .parse()
            .map_err(|_| invalid(&settings::RELAY_MANAGEMENT_LISTEN, "HOST:PORT").to_string())?;
        if !management_listen.ip().is_loopback() {
            return Err(invalid(
                &settings::RELAY_MANAGEMENT_LISTEN,
                "a loopback address (the Management API has no authentication)",
            )
            .to_string());
        }
        let queue_bytes = env
            .number_at_least(
                &settings::RELAY_WS_QUEUE_BYTES,
                shared::frames::MAX_FRAME_BYTES,
                "a whole number of bytes, at least one frame (128000)",
            )
            .map_err(|e| e.to_string())?;
        let idle_secs = env
            .number_at_least(
                &settings::RELAY_WS_IDLE_TIMEOUT_SECS,
                1,
                "a whole number of seconds, at least 1",
            )
            .map_err(|e| e.to_string())?;
        Ok(Self {
            listen: env.string(&settings::RELAY_LISTEN),
            management_listen,
            queue_bytes,
            idle_timeout: std::time::Duration::from_secs(idle_secs),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Result<Settings, String> {
        let map: std::collections::HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn settings_default_to_loopback_and_a_bounded_queue() {
        let s = settings(&[]).unwrap();
        assert_eq!(s.listen, "127.0.0.1:8080");
        assert_eq!(s.management_listen, "127.0.0.1:0".parse().unwrap());
        assert_eq!(s.queue_bytes, DEFAULT_QUEUE_BYTES);
        assert_eq!(s.idle_timeout, std::time::Duration::from_secs(600));
        let s = settings(&[
            ("RELAY_MANAGEMENT_LISTEN", "[::1]:9001"),
            ("RELAY_WS_QUEUE_BYTES", "200000"),
            ("RELAY_WS_IDLE_TIMEOUT_SECS", "30"),
        ])
        .unwrap();
        assert_eq!(s.management_listen, "[::1]:9001".parse().unwrap());
        assert_eq!(s.queue_bytes, 200_000);
        assert_eq!(s.idle_timeout, std::time::Duration::from_secs(30));
    }

    #[test]
    fn settings_refuse_a_public_management_listener_a_tiny_queue_and_no_idle_timeout() {
        let e = settings(&[("RELAY_MANAGEMENT_LISTEN", "0.0.0.0:9001")]).unwrap_err();
        assert!(
            e.contains("RELAY_MANAGEMENT_LISTEN") && e.contains("loopback"),
            "{e}"
        );
        let e = settings(&[("RELAY_MANAGEMENT_LISTEN", "nope")]).unwrap_err();
        assert!(e.contains("RELAY_MANAGEMENT_LISTEN"), "{e}");
        let e = settings(&[("RELAY_WS_QUEUE_BYTES", "1000")]).unwrap_err();
        assert!(e.contains("RELAY_WS_QUEUE_BYTES"), "{e}");
        for bad in ["0", "ten", "-5"] {
            let e = settings(&[("RELAY_WS_IDLE_TIMEOUT_SECS", bad)]).unwrap_err();
            assert!(e.contains("RELAY_WS_IDLE_TIMEOUT_SECS"), "{e}");
        }
    }

    fn parse(args: &[&str]) -> Result<Options, String> {
        Options::parse(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn reads_every_option() {
        let o = parse(&[
            "--create-tables",
            "--dynamodb-file",
            "/tmp/x.sqlite",
            "--dynamodb-listen",
            "127.0.0.1:15000",
        ])
        .expect("parse");
        assert!(o.create_tables);
        assert!(
            matches!(o.dynamodb, Some(Storage::File(p)) if p == std::path::Path::new("/tmp/x.sqlite"))
        );
        assert_eq!(o.dynamodb_listen, Some("127.0.0.1:15000".parse().unwrap()));
    }

    #[test]
    fn refuses_what_it_does_not_know_or_lacks_a_value() {
        assert!(parse(&["--bogus"])
            .unwrap_err()
            .contains("unknown argument"));
        assert!(parse(&["--dynamodb-file"])
            .unwrap_err()
            .contains("needs a value"));
        assert!(parse(&["--dynamodb-listen", "nope", "--dynamodb-memory"])
            .unwrap_err()
            .contains("not HOST:PORT"));
        assert!(parse(&["--dynamodb-listen", "127.0.0.1:1"])
            .unwrap_err()
            .contains("goes with"));
    }
}
