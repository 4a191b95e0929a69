//! The integration suites, one module per topic, in one test binary: the harness, the servers
//! and the SDKs are linked once. Every test starts its own stack (tables and Redis key prefix of
//! its own on the process's servers), so tests run beside each other; the few that measure or
//! change what belongs to the whole process run alone in a child process (`run_alone!`).
//!
//! `cargo test -p relay-tests --test integration -- MODULE::` runs one topic.

mod account_export;
mod accounts_and_sessions;
mod acks;
mod attachments;
mod cluster_failover;
mod cold_start_secrets;
mod contract;
mod devices;
mod disappearing;
mod dynamodb_adapters;
mod frame_fuzz;
mod frame_limits;
mod group_sends;
mod groups;
mod handlers;
mod inbox_limits;
mod keys;
mod lambda_watch;
mod local_up;
mod logs;
mod mls;
mod monitoring;
mod presence;
mod redis_outage;
mod relay;
mod round_trips;
mod socket_limits;
mod sockets_and_revocation;
