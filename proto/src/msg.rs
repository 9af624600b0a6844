//! Frame payloads and their MessagePack encoding.
//!
//! Structs are encoded as MessagePack arrays (field order is the contract, see
//! `docs/PROTOCOL.md`), which keeps a sample at about eleven bytes: a batch names
//! metrics by the small integer id the agent assigned in its metric table, and only
//! the hello (and a batch that first uses a new id) carries names, units and types.

use std::collections::BTreeMap;

use serde::{de::DeserializeOwned, Deserialize, Serialize};

/// Why a payload could not be decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PayloadError {
    #[error("malformed payload: {0}")]
    Decode(#[from] rmp_serde::decode::Error),
    #[error("payload could not be encoded: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
}

/// Encodes a payload.
///
/// # Errors
/// Only when serde refuses the value, which the types in this module never do.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, PayloadError> {
    Ok(rmp_serde::to_vec(value)?)
}

/// Decodes a payload from bytes that came from outside the process.
///
/// # Errors
/// [`PayloadError::Decode`] when the bytes do not hold a `T`.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, PayloadError> {
    Ok(rmp_serde::from_slice(bytes)?)
}

/// First frame of a connection, from the collector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Challenge {
    /// Collector software version, for the agent's log.
    pub collector: String,
    /// Largest frame the collector accepts, so an agent can split batches.
    pub max_frame_bytes: u32,
}

/// How a metric's values are to be read, as in RRDtool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetricKind {
    /// A value as it is (a temperature, a percentage).
    Gauge,
    /// An ever-increasing counter; the rate is what matters and wraps are expected.
    Counter,
    /// A counter that may decrease; the rate may be negative.
    Derive,
    /// A count since the last sample.
    Absolute,
}

impl MetricKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MetricKind::Gauge => "GAUGE",
            MetricKind::Counter => "COUNTER",
            MetricKind::Derive => "DERIVE",
            MetricKind::Absolute => "ABSOLUTE",
        }
    }
}

/// One entry of an agent's metric table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetricMeta {
    /// Small integer the agent uses for this metric in batches; stable for the life of
    /// the agent's spool.
    pub id: u32,
    pub name: String,
    /// Unit as shown to users (`%`, `KiB`, `bytes/sec`, `ms`).
    pub unit: String,
    pub kind: MetricKind,
    /// Dashboard group (`cpu`, `memory`, `disk`, `network`, …).
    pub group: String,
    pub description: String,
}

/// Facts about a host, sent in every hello and in a batch when they change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Facts {
    pub hostname: String,
    pub os: String,
    pub kernel: String,
    pub arch: String,
    pub cpu_count: u32,
    pub mem_total_bytes: u64,
    pub addresses: Vec<String>,
    /// Operator tags from the agent's config (`location`, `role`, …).
    pub tags: BTreeMap<String, String>,
    /// Seconds since the epoch at which the host booted.
    pub boottime: i64,
}

/// Second frame of a connection, from the agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    pub cluster: String,
    pub host: String,
    pub agent_version: String,
    /// The agent's clock when it sent this hello, in milliseconds since the epoch;
    /// a collector refuses a hello too far from its own clock.
    pub sent_at_ms: i64,
    /// The collection interval, so the collector can tell when a host fell silent.
    pub interval_secs: u32,
    pub facts: Facts,
    /// The agent's whole metric table.
    pub metrics: Vec<MetricMeta>,
}

/// One collection of samples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    /// Random number chosen when the agent process started; `seq` restarts with it.
    pub run: u64,
    /// Increases by one per batch within a run, across connections and collectors, so
    /// a collector can tell gaps from duplicates.
    pub seq: u64,
    /// When the samples were taken, in milliseconds since the epoch.
    pub time_ms: i64,
    /// Table entries first used by this batch (hot-plugged disks, custom metrics).
    pub defs: Vec<MetricMeta>,
    /// New facts when they changed since the hello.
    pub facts: Option<Facts>,
    /// `(metric id, value)` pairs.
    pub values: Vec<(u32, f64)>,
}

/// The collector accepted every batch up to and including `seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    pub run: u64,
    pub seq: u64,
}

/// Why the collector is closing the connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    /// Short machine-readable reason (`unknown_cluster`, `bad_tag`, …).
    pub reason: String,
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn meta() -> impl Strategy<Value = MetricMeta> {
        (any::<u32>(), "[a-z_]{1,20}", ".{0,8}", 0u8..4, "[a-z]{0,8}", ".{0,40}").prop_map(
            |(id, name, unit, k, group, description)| MetricMeta {
                id,
                name,
                unit,
                kind: [MetricKind::Gauge, MetricKind::Counter, MetricKind::Derive, MetricKind::Absolute][k as usize],
                group,
                description,
            },
        )
    }

    proptest! {
        #[test]
        fn batch_round_trips(seq: u64, time_ms: i64,
                             defs in proptest::collection::vec(meta(), 0..4),
                             values in proptest::collection::vec((any::<u32>(), -1e12f64..1e12), 0..200)) {
            let b = Batch { run: 7, seq, time_ms, defs, facts: None, values };
            let back: Batch = decode(&encode(&b).unwrap()).unwrap();
            prop_assert_eq!(back, b);
        }

        #[test]
        fn hello_round_trips(cluster in "[a-z]{1,10}", host in "[a-z0-9.-]{1,30}",
                             metrics in proptest::collection::vec(meta(), 0..30),
                             tags in proptest::collection::btree_map("[a-z]{1,5}", ".{0,10}", 0..3)) {
            let h = Hello {
                cluster, host, agent_version: "0.1.0".into(), sent_at_ms: 1, interval_secs: 15,
                facts: Facts { tags, cpu_count: 2, ..Facts::default() }, metrics,
            };
            let back: Hello = decode(&encode(&h).unwrap()).unwrap();
            prop_assert_eq!(back, h);
        }

        #[test]
        fn garbage_payload_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode::<Hello>(&bytes);
            let _ = decode::<Batch>(&bytes);
            let _ = decode::<Ack>(&bytes);
        }
    }

    #[test]
    fn sample_costs_about_eleven_bytes() {
        let values: Vec<(u32, f64)> = (0..100).map(|i| (i, i as f64 * 1.37)).collect();
        let b = Batch { run: 1 << 60, seq: 1, time_ms: 1_700_000_000_000, defs: vec![], facts: None, values };
        let len = encode(&b).unwrap().len();
        assert!(len <= 100 * 11 + 40, "{len} bytes for 100 samples");
    }
}
