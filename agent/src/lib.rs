//! ganglion's push agent.
//!
//! The agent owns collecting metrics on one host and delivering them to one or more
//! collectors without losing any: every collection becomes a numbered batch in a
//! bounded spool, and each collector connection sends from its own position in that
//! spool until the collector acknowledges. It owns no storage, no web server and no
//! check logic; those live in the collector.
//!
//! Layout:
//! - [`config`]: the agent's TOML file (collector addresses, cluster, key, interval).
//! - [`collect`]: host metrics read from `/proc` and `/sys`; Apache, MySQL/MariaDB,
//!   memcached and exec plugins.
//! - [`registry`]: the metric table that maps names to the ids used on the wire.
//! - [`spool`]: batches not yet acknowledged by every collector (memory, then disk).
//! - [`send`]: one task per collector: connect, authenticate, send, read acks.
//! - [`push`]: custom metrics from `ganglion-agent send`, over a local socket.
//! - [`run`](run()): the loop that ties them together.

mod agent;
pub mod collect;
pub mod config;
pub mod push;
pub mod registry;
pub mod send;
pub mod spool;
mod ticker;

pub use agent::{collect_once, run, Agent, AgentStats};
