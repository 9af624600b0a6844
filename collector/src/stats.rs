//! The collector's counters, shown at `/api/v1/health`.
//!
//! Every rejection goes through [`Stats::reject`], which counts it under its reason and
//! logs it once with the peer, so the log and the counters always agree.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// Why input from an agent was refused. The names are the keys in `/api/v1/health`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Bytes that are not a frame (bad length, unknown kind, closed mid-frame).
    Malformed,
    /// A frame longer than `max_frame_bytes`.
    TooLarge,
    /// Another protocol version.
    Version,
    /// The HMAC tag does not match the cluster's key.
    BadTag,
    /// A frame for another connection's nonce, or played twice on this one.
    Replayed,
    /// A hello whose clock is too far from ours, or samples too old or in the future.
    Stale,
    UnknownCluster,
    /// A host or metric name outside the allowed charset or length.
    BadName,
    /// A payload that does not decode.
    BadPayload,
    /// A sample value that is NaN or infinite, or a metric id the agent never defined.
    BadSample,
    /// A frame of the wrong kind at this point of the session.
    Unexpected,
    /// A peer that sent nothing in time.
    Timeout,
}

const REASONS: [Reason; 12] = [
    Reason::Malformed,
    Reason::TooLarge,
    Reason::Version,
    Reason::BadTag,
    Reason::Replayed,
    Reason::Stale,
    Reason::UnknownCluster,
    Reason::BadName,
    Reason::BadPayload,
    Reason::BadSample,
    Reason::Unexpected,
    Reason::Timeout,
];

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Malformed => "malformed",
            Reason::TooLarge => "too_large",
            Reason::Version => "version",
            Reason::BadTag => "bad_tag",
            Reason::Replayed => "replayed",
            Reason::Stale => "stale",
            Reason::UnknownCluster => "unknown_cluster",
            Reason::BadName => "bad_name",
            Reason::BadPayload => "bad_payload",
            Reason::BadSample => "bad_sample",
            Reason::Unexpected => "unexpected",
            Reason::Timeout => "timeout",
        }
    }
}

#[derive(Debug, Default)]
pub struct Stats {
    pub connections_accepted: AtomicU64,
    pub connections_open: AtomicU64,
    pub frames_received: AtomicU64,
    pub bytes_received: AtomicU64,
    /// Batches accepted into memory and acknowledged.
    pub batches_accepted: AtomicU64,
    /// Samples written into the latest-value table.
    pub samples_accepted: AtomicU64,
    /// Batches received again (a replay after a lost ack); acknowledged, not applied.
    pub batches_duplicate: AtomicU64,
    /// Batches discarded because their samples were too old or in the future.
    pub batches_dropped: AtomicU64,
    /// Batches not acknowledged because storage refused them (disk full or failing);
    /// their agents send them again after reconnecting.
    pub batches_deferred: AtomicU64,
    rejected: [AtomicU64; REASONS.len()],
}

/// Counters as JSON.
#[derive(Debug, Serialize)]
pub struct StatsSnapshot {
    pub connections_accepted: u64,
    pub connections_open: u64,
    pub frames_received: u64,
    pub bytes_received: u64,
    pub batches_accepted: u64,
    pub samples_accepted: u64,
    pub batches_duplicate: u64,
    pub batches_dropped: u64,
    pub batches_deferred: u64,
    pub rejected_total: u64,
    pub rejected: std::collections::BTreeMap<&'static str, u64>,
}

impl Stats {
    /// Counts and logs one rejection. `detail` is already escaped by the caller when it
    /// carries text from the peer.
    pub fn reject(&self, reason: Reason, peer: SocketAddr, detail: &dyn std::fmt::Display) {
        self.rejected[reason as usize].fetch_add(1, Ordering::Relaxed);
        tracing::warn!(%peer, reason = reason.as_str(), detail = %detail, "Rejected input from agent.");
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let rejected: std::collections::BTreeMap<_, _> =
            REASONS.iter().map(|r| (r.as_str(), get(&self.rejected[*r as usize]))).collect();
        StatsSnapshot {
            connections_accepted: get(&self.connections_accepted),
            connections_open: get(&self.connections_open),
            frames_received: get(&self.frames_received),
            bytes_received: get(&self.bytes_received),
            batches_accepted: get(&self.batches_accepted),
            samples_accepted: get(&self.samples_accepted),
            batches_duplicate: get(&self.batches_duplicate),
            batches_dropped: get(&self.batches_dropped),
            batches_deferred: get(&self.batches_deferred),
            rejected_total: rejected.values().sum(),
            rejected,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_table_matches_enum_order() {
        for (i, r) in REASONS.iter().enumerate() {
            assert_eq!(*r as usize, i, "{}", r.as_str());
        }
    }
}
