//! The gateway's command line.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::dynamodb_engine::Storage;

pub const USAGE: &str = "\
usage: local-gateway [--create-tables] [--lambda-endpoint URL]
                     [--dynamodb-file PATH | --dynamodb-memory] [--dynamodb-listen ADDR]

Serves the relay on RELAY_LISTEN (default 127.0.0.1:8080).
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

#[cfg(test)]
mod tests {
    use super::*;

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
