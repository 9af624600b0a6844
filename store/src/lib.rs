//! ganglion's round-robin storage.
//!
//! This crate owns how metric samples are kept on disk: RRDtool 1.7's update,
//! consolidation and fetch semantics ([`rrd`]), a standalone checksummed file format for
//! one database ([`file`], described byte for byte in `docs/STORAGE.md`), the
//! rrdtool-compatible operator commands ([`cli`], run as `ganglion rrd …`), and the
//! collector-facing engine for many series with a journal and a write-behind flusher
//! ([`engine`]). It does not own sockets, the HTTP API or host expiry policy: the
//! collector calls in.
//!
//! Layout:
//! - [`rrd`]: the in-memory model of one database ([`rrd::Rrd`]), exact to rrdtool.
//! - [`disk`]: the `Disk` trait all file I/O goes through, with a fault-injecting test
//!   implementation.
//! - [`file`]: the on-disk format of one database and reading/writing it.
//! - [`cli`]: `create`, `update`, `fetch`, `info`, `dump` with rrdtool's syntax and output.
//! - [`engine`]: `Store`, the many-series engine (journal, group commit, flusher,
//!   shard files; `engine::offline` reads a running store from outside).
//! - [`import`]: Ganglia RRD trees into a store (`ganglion import-rrd`).
//!
//! ```
//! use ganglion_store::rrd::{Cf, DsDef, Rrd, RraDef};
//! let ds = vec![DsDef::parse("DS:load:GAUGE:120:U:U").unwrap()];
//! let rra = vec![RraDef::parse("RRA:AVERAGE:0.5:1:10").unwrap()];
//! let mut db = Rrd::create(60, 1_200_000_000, ds, rra).unwrap();
//! db.update(1_200_000_060, &["1.5"]).unwrap();
//! let f = db.fetch(Cf::Average, 1_200_000_000, 1_200_000_060, 1).unwrap();
//! assert_eq!(f.time(0), 1_200_000_060);
//! assert_eq!(f.rows[0][0], 1.5);
//! ```

pub mod cli;
pub mod disk;
pub mod engine;
pub mod file;
pub mod import;
pub mod rrd;
