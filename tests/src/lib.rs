//! Test harness shared by every suite: real servers, a stack per test, a client that plays an app.

pub mod acks;
pub mod alone;
pub mod app;
pub mod attachments;
pub mod client;
pub mod cluster;
pub mod devices;
pub mod groups;
pub mod inbox;
pub mod outage;
pub mod process;
pub mod servers;
pub mod stack;
pub mod wait;

pub use client::{Identity, User, Ws};
pub use stack::Stack;
pub use wait::{eventually, eventually_eq, eventually_within};
