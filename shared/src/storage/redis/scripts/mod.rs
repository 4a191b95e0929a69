//! The Lua scripts, which hold the adapter's atomicity guarantees, and their one Rust caller each.
//!
//! Every `<name>.lua` starts with what it does atomically, its worst case and its replies, then
//! names each `KEYS[i]` and `ARGV[i]` as a local. Beside it, `<name>.rs` is its only caller: a
//! builder that takes named inputs and lays out `KEYS` and `ARGV` in the order the script names
//! them, and a decoder that turns the script's tagged reply (`{'queued'}`, `{'limited', ms}`…)
//! into a type, or into an error on anything else.
//!
//! Lua in Redis has no includes: what several scripts share is a prelude, sent before the
//! script's own text. Which preludes each script takes is declared here, in the table below, and
//! nowhere else; a prelude only defines functions (and `prelude_deliver.lua` the tally its
//! function keeps), so a script pays for the preludes it names.

use std::sync::OnceLock;

use redis::{Cmd, FromRedisValue, ToRedisArgs, Value};

use crate::error::{Error, Result};

pub(crate) mod ack;
pub(crate) mod deliver;
pub(crate) mod deliver_shared;
pub(crate) mod devices;
pub(crate) mod evict;
pub(crate) mod in_flight;
pub(crate) mod inbox_summary;
pub(crate) mod pending;
pub(crate) mod presence;
pub(crate) mod register;
pub(crate) mod requeue;
pub(crate) mod sent;
pub(crate) mod token_bucket;
pub(crate) mod token_buckets;

/// Lua functions shared by several scripts, sent before each of them.
#[derive(Clone, Copy)]
pub(crate) struct Prelude {
    #[cfg_attr(not(test), allow(dead_code))]
    name: &'static str,
    source: &'static str,
}

/// A device's stored envelopes and their accounting (inbox, holders, stats).
const STORE: Prelude = Prelude {
    name: "prelude_store.lua",
    source: include_str!("prelude_store.lua"),
};
/// Envelopes in flight, by id (flight, parked); after `STORE`, whose `put_back` it uses.
const IN_FLIGHT_PRELUDE: Prelude = Prelude {
    name: "prelude_in_flight.lua",
    source: include_str!("prelude_in_flight.lua"),
};
/// One envelope stored for one device and taken for push when it is connected; after `STORE`
/// and `IN_FLIGHT_PRELUDE`.
const DELIVER_PRELUDE: Prelude = Prelude {
    name: "prelude_deliver.lua",
    source: include_str!("prelude_deliver.lua"),
};
/// One token bucket.
const BUCKET: Prelude = Prelude {
    name: "prelude_bucket.lua",
    source: include_str!("prelude_bucket.lua"),
};

pub(crate) static DELIVER: Script = Script::new(
    "deliver.lua",
    &[STORE, IN_FLIGHT_PRELUDE, DELIVER_PRELUDE],
    include_str!("deliver.lua"),
);
pub(crate) static DELIVER_SHARED: Script = Script::new(
    "deliver_shared.lua",
    &[STORE, IN_FLIGHT_PRELUDE, DELIVER_PRELUDE],
    include_str!("deliver_shared.lua"),
);
pub(crate) static IN_FLIGHT: Script = Script::new(
    "in_flight.lua",
    &[STORE, IN_FLIGHT_PRELUDE],
    include_str!("in_flight.lua"),
);
pub(crate) static PENDING: Script =
    Script::new("pending.lua", &[STORE], include_str!("pending.lua"));
pub(crate) static INBOX_SUMMARY: Script =
    Script::new("inbox_summary.lua", &[], include_str!("inbox_summary.lua"));
pub(crate) static REQUEUE: Script =
    Script::new("requeue.lua", &[STORE], include_str!("requeue.lua"));
pub(crate) static ACK: Script = Script::new("ack.lua", &[BUCKET], include_str!("ack.lua"));
pub(crate) static DEVICES: Script = Script::new("devices.lua", &[], include_str!("devices.lua"));
pub(crate) static REGISTER: Script = Script::new("register.lua", &[], include_str!("register.lua"));
pub(crate) static EVICT: Script = Script::new("evict.lua", &[], include_str!("evict.lua"));
pub(crate) static PRESENCE: Script = Script::new("presence.lua", &[], include_str!("presence.lua"));
pub(crate) static SENT: Script = Script::new("sent.lua", &[], include_str!("sent.lua"));
pub(crate) static TOKEN_BUCKET: Script = Script::new(
    "token_bucket.lua",
    &[BUCKET],
    include_str!("token_bucket.lua"),
);
pub(crate) static TOKEN_BUCKETS: Script =
    Script::new("token_buckets.lua", &[], include_str!("token_buckets.lua"));

#[cfg(test)]
static ALL: [&Script; 14] = [
    &INBOX_SUMMARY,
    &DELIVER,
    &DELIVER_SHARED,
    &IN_FLIGHT,
    &PENDING,
    &REQUEUE,
    &ACK,
    &DEVICES,
    &REGISTER,
    &EVICT,
    &PRESENCE,
    &SENT,
    &TOKEN_BUCKET,
    &TOKEN_BUCKETS,
];

/// A script as Redis runs it: its preludes, then its own text; run by its SHA1 (`EVALSHA`),
/// with the source at hand for a node that lacks it.
pub(crate) struct Script {
    name: &'static str,
    preludes: &'static [Prelude],
    body: &'static str,
    /// The source sent to Redis and its SHA1, assembled on first use.
    loaded: OnceLock<(String, String)>,
}

impl Script {
    const fn new(name: &'static str, preludes: &'static [Prelude], body: &'static str) -> Self {
        Self {
            name,
            preludes,
            body,
            loaded: OnceLock::new(),
        }
    }

    fn loaded(&self) -> &(String, String) {
        self.loaded.get_or_init(|| {
            let source: String = self
                .preludes
                .iter()
                .map(|p| p.source)
                .chain([self.body])
                .collect();
            let hash = redis::Script::new(&source).get_hash().to_string();
            (source, hash)
        })
    }

    /// The text Redis runs: the preludes, then the script.
    pub(crate) fn source(&self) -> &str {
        &self.loaded().0
    }

    fn hash(&self) -> &str {
        &self.loaded().1
    }

    /// An empty call, for the script's builder to fill.
    fn call(&'static self) -> Call {
        Call {
            script: self,
            keys: Vec::new(),
            args: Vec::new(),
        }
    }

    /// An error naming the script: its reply was not one it documents.
    fn unexpected(&self, what: impl std::fmt::Display) -> Error {
        Error::Internal(format!("{} answered {what}", self.name))
    }
}

/// One invocation of a script, as its builder laid it out. Every key the script touches is in
/// `keys`, and on a cluster they share one hash slot.
pub(crate) struct Call {
    script: &'static Script,
    keys: Vec<String>,
    args: Vec<Vec<u8>>,
}

impl Call {
    fn key(mut self, key: impl Into<String>) -> Self {
        self.keys.push(key.into());
        self
    }

    fn keys(mut self, keys: impl IntoIterator<Item = String>) -> Self {
        self.keys.extend(keys);
        self
    }

    /// One `ARGV` entry (a value that Redis takes as exactly one argument: a number or a string).
    fn arg(mut self, value: impl ToRedisArgs) -> Self {
        let mut parts = value.to_redis_args();
        debug_assert_eq!(parts.len(), 1, "one argument per ARGV entry");
        self.args.append(&mut parts);
        self
    }

    /// `EVALSHA hash numkeys keys… args…`.
    pub(crate) fn evalsha(&self) -> Cmd {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(self.script.hash());
        self.keys_and_args(&mut cmd);
        cmd
    }

    /// `EVAL source numkeys keys… args…`: for a node that never saw the script (e.g. a replica
    /// just promoted). Unlike `SCRIPT LOAD`, which a cluster client sends to every primary (and
    /// which fails while one is down), this stays on the node of the script's keys.
    pub(crate) fn eval(&self) -> Cmd {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(self.script.source());
        self.keys_and_args(&mut cmd);
        cmd
    }

    fn keys_and_args(&self, cmd: &mut Cmd) {
        cmd.arg(self.keys.len()).arg(&self.keys);
        for a in &self.args {
            cmd.arg(a.as_slice());
        }
    }
}

/// A script's reply: `{tag, field…}`, read field by field.
struct Reply {
    script: &'static Script,
    tag: String,
    fields: std::vec::IntoIter<Value>,
}

impl Reply {
    fn new(script: &'static Script, value: Value) -> Result<Self> {
        let Value::Array(items) = value else {
            return Err(script.unexpected(format_args!("{value:?}, not a tagged reply")));
        };
        let mut fields = items.into_iter();
        let tag = fields
            .next()
            .and_then(|t| String::from_redis_value(t).ok())
            .ok_or_else(|| script.unexpected("a reply without a tag"))?;
        Ok(Self {
            script,
            tag,
            fields,
        })
    }

    fn tag(&self) -> &str {
        &self.tag
    }

    /// The next field, named `what` in the error when it is missing or not a `T`.
    fn field<T: FromRedisValue>(&mut self, what: &str) -> Result<T> {
        let value = self.fields.next().ok_or_else(|| {
            self.script
                .unexpected(format_args!("'{}' without its {what}", self.tag))
        })?;
        T::from_redis_value(value).map_err(|_| {
            self.script
                .unexpected(format_args!("'{}' with a malformed {what}", self.tag))
        })
    }

    /// The next field, itself a tagged reply.
    fn nested(&mut self, what: &str) -> Result<Reply> {
        let value: Value = self.field(what)?;
        Reply::new(self.script, value)
    }

    /// Checks that no field is left over.
    fn end(&self) -> Result<()> {
        if self.fields.as_slice().is_empty() {
            Ok(())
        } else {
            Err(self.script.unexpected(format_args!(
                "'{}' with {} fields too many",
                self.tag,
                self.fields.len()
            )))
        }
    }

    fn unknown(&self) -> Error {
        self.script
            .unexpected(format_args!("an unknown tag '{}'", self.tag))
    }
}

/// The inbox caps every script that stores envelopes enforces.
#[derive(Debug, Clone, Copy)]
pub(crate) struct InboxCaps {
    pub max: u32,
    pub max_bytes: u64,
    pub ttl_secs: u64,
    /// What new accounts together may hold of an inbox (`InboxLimits::new_accounts_part`).
    pub new_part: (u32, u64),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The highest `KEYS[n]` and `ARGV[n]` a script names with a literal index: its fixed part.
    pub(super) fn named(script: &Script) -> (usize, usize) {
        let highest = |table: &str| {
            script
                .body
                .match_indices(&format!("{table}["))
                .filter_map(|(at, m)| {
                    let rest = &script.body[at + m.len()..];
                    // `KEYS[1 … 5]` in a comment names a run of keys.
                    let index = rest[..rest.find(']')?].rsplit(" … ").next()?;
                    index.parse::<usize>().ok()
                })
                .max()
                .unwrap_or(0)
        };
        (highest("KEYS"), highest("ARGV"))
    }

    /// The value of `local NAME = <n>` (or `local A, NAME = <a>, <n>`) in a script.
    pub(super) fn constant(script: &Script, name: &str) -> usize {
        for line in script.body.lines() {
            let Some((names, values)) = line.strip_prefix("local ").and_then(|l| l.split_once('='))
            else {
                continue;
            };
            let names: Vec<&str> = names.split(',').map(str::trim).collect();
            if let Some(i) = names.iter().position(|n| *n == name) {
                let value = values.split("--").next().unwrap_or_default();
                return value.split(',').nth(i).unwrap().trim().parse().unwrap();
            }
        }
        panic!("{} has no constant {name}", script.name)
    }

    /// (keys, args) of a call.
    pub(super) fn shape(call: &Call) -> (usize, usize) {
        (call.keys.len(), call.args.len())
    }

    #[test]
    fn every_script_file_is_declared_once_and_starts_with_its_header() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/storage/redis/scripts");
        let preludes = [STORE, IN_FLIGHT_PRELUDE, DELIVER_PRELUDE, BUCKET];
        let mut declared: Vec<&str> = ALL.iter().map(|s| s.name).collect();
        declared.extend(preludes.iter().map(|p| p.name));
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".lua"))
            .collect();
        files.sort();
        declared.sort();
        assert_eq!(files, declared);
        for s in ALL {
            let stem = s.name.trim_end_matches(".lua");
            assert!(
                s.body.starts_with(&format!("-- {stem}")),
                "{} starts with its header",
                s.name
            );
            assert!(s.body.contains("Worst case") || s.body.contains("Work:"));
            assert!(s.source().ends_with(s.body));
        }
        for p in preludes {
            assert!(p.source.starts_with("-- Prelude `"), "{}", p.name);
        }
    }

    #[test]
    fn a_reply_that_is_not_documented_is_an_error() {
        let tagged = |tag: &str| Value::Array(vec![Value::BulkString(tag.into())]);
        assert!(Reply::new(&PENDING, Value::Int(1)).is_err());
        assert!(Reply::new(&PENDING, Value::Array(vec![])).is_err());
        let mut reply = Reply::new(&PENDING, tagged("pending")).unwrap();
        assert_eq!(reply.tag(), "pending");
        let missing = reply.field::<u64>("count").unwrap_err();
        assert!(
            format!("{missing:?}").contains("pending.lua"),
            "{missing:?}"
        );
    }
}
