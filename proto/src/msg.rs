//! Frame payloads and their MessagePack encoding.
//!
//! Structs are encoded as MessagePack arrays (field order is the contract, see
//! `docs/PROTOCOL.md`), which keeps a sample at about six bytes: a batch names
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
    /// The connection's nonce, which every later frame's tag covers (see [`crate::frame`]).
    pub nonce: crate::frame::Nonce,
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
    /// `(metric id, value)` pairs, a map from id to value on the wire. Each value takes
    /// the shortest exact MessagePack form: an integer when it is integral, a 32-bit
    /// float when that holds it exactly, a 64-bit float otherwise (see [`values`]).
    /// An id appears at most once.
    #[serde(with = "values")]
    pub values: Vec<(u32, f64)>,
    /// Metrics that had a value in the previous batch of this connection and have none
    /// now (a disk unplugged, a source down), so the receiver stops carrying them.
    #[serde(default)]
    pub gone: Vec<u32>,
    /// The sender wants an ack for this batch (which covers every batch before it).
    /// A collector acknowledges only such batches; the agent asks once a minute, at the
    /// end of a replay and when its window fills, so a quiet host's connection carries
    /// one ack a minute instead of one per batch.
    #[serde(default)]
    pub ack: bool,
    /// Metrics not read for this batch: their source is read only every n-th interval
    /// (an application source's `interval_secs`, an exec plugin between runs). Unlike
    /// `gone`, the receiver keeps their last value as the base of the next difference,
    /// but it does not carry that value into this batch. Last, and left out when
    /// empty, so a batch without it is what it was before.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<u32>,
}

/// What one end of a connection remembers of the previous batch on it. The sender
/// writes each batch as a difference from the previous one ([`Previous::delta`]); the
/// receiver rebuilds it ([`Previous::rebuild`]). Both start empty on every connection,
/// so the first batch of a connection is always written in full and nothing depends on
/// another connection, a collector restart or a lost ack.
///
/// The difference, for a batch after the first (PROTOCOL.md, "Batch"):
/// - `run` is XORed with the previous run (0 when unchanged), `seq` and `time_ms` are
///   the wrapping differences from the previous ones (1 and about the interval);
/// - `values` leaves out every value equal, bit for bit, to the last value sent of the
///   same metric, and `gone` lists the metrics the previous batch had and this one
///   lacks, unless they are `skipped`: those keep their last value on both ends, and
///   are listed only when there is one.
#[derive(Debug, Default, Clone)]
pub struct Previous {
    /// The last value of each metric id; a skipped metric keeps its value here.
    values: Vec<Option<f64>>,
    head: Option<(u64, u64, i64)>,
}

impl Previous {
    /// `batch` as sent after the previous one. The sender calls [`Previous::remember`]
    /// once the result is on its way (not for a batch it ends up not sending).
    pub fn delta(&self, batch: &Batch) -> Batch {
        let prev = &self.values;
        let mut present = vec![false; prev.len()];
        let mut values = Vec::with_capacity(batch.values.len());
        for &(id, v) in &batch.values {
            let i = id as usize;
            if let Some(p) = present.get_mut(i) {
                *p = true;
            }
            // Bitwise, so NaN is sent again and -0.0 differs from 0.0.
            if prev.get(i).copied().flatten().map(f64::to_bits) != Some(v.to_bits()) {
                values.push((id, v));
            }
        }
        let mut skipped = Vec::new();
        for &id in &batch.skipped {
            let i = id as usize;
            if let (Some(Some(_)), Some(p)) = (prev.get(i), present.get_mut(i)) {
                if !*p {
                    *p = true;
                    skipped.push(id);
                }
            }
        }
        let gone = (0..prev.len()).filter(|&i| prev[i].is_some() && !present[i]).map(|i| i as u32).collect();
        let (run, seq, time_ms) = match self.head {
            None => (batch.run, batch.seq, batch.time_ms),
            Some((run, seq, time_ms)) => {
                (batch.run ^ run, batch.seq.wrapping_sub(seq), batch.time_ms.wrapping_sub(time_ms))
            }
        };
        Batch {
            run,
            seq,
            time_ms,
            defs: batch.defs.clone(),
            facts: batch.facts.clone(),
            values,
            gone,
            ack: batch.ack,
            skipped,
        }
    }

    /// Makes `batch` (as it is, not its delta) the previous batch. Its skipped
    /// metrics keep their last values.
    pub fn remember(&mut self, batch: &Batch) {
        self.head = Some((batch.run, batch.seq, batch.time_ms));
        let kept: Vec<(u32, f64)> = batch
            .skipped
            .iter()
            .filter_map(|&id| self.values.get(id as usize).copied().flatten().map(|v| (id, v)))
            .collect();
        for slot in &mut self.values {
            *slot = None;
        }
        for &(id, v) in kept.iter().chain(&batch.values) {
            let i = id as usize;
            if i >= self.values.len() {
                self.values.resize(i + 1, None);
            }
            self.values[i] = Some(v);
        }
    }

    /// Turns a batch as received into the full batch it stands for: run, sequence
    /// number and time made absolute, unchanged values carried forward, `gone` applied
    /// and cleared, `skipped` metrics kept for the next batch but left out of this one
    /// (a value sent for one anyway wins). Values with an id above `max_id` and NaN or
    /// infinite values are refused (not carried either); returns how many.
    pub fn rebuild(&mut self, batch: &mut Batch, max_id: u32) -> u64 {
        if let Some((run, seq, time_ms)) = self.head {
            batch.run ^= run;
            batch.seq = seq.wrapping_add(batch.seq);
            batch.time_ms = time_ms.wrapping_add(batch.time_ms);
        }
        self.head = Some((batch.run, batch.seq, batch.time_ms));
        let held = &mut self.values;
        for &id in &batch.gone {
            if let Some(slot) = held.get_mut(id as usize) {
                *slot = None;
            }
        }
        let mut bad = 0;
        for &(id, v) in &batch.values {
            if id > max_id {
                bad += 1;
                continue;
            }
            let i = id as usize;
            if held.len() <= i {
                held.resize(i + 1, None);
            }
            // A NaN is refused once, not carried into every later batch.
            held[i] = if v.is_finite() { Some(v) } else { None };
            bad += u64::from(!v.is_finite());
        }
        let mut skip = std::mem::take(&mut batch.skipped);
        if !skip.is_empty() {
            skip.sort_unstable();
            let mut sent: Vec<u32> = batch.values.iter().map(|&(id, _)| id).collect();
            sent.sort_unstable();
            skip.retain(|id| sent.binary_search(id).is_err());
        }
        batch.values.clear();
        batch.values.extend(
            held.iter()
                .enumerate()
                .filter_map(|(i, v)| v.map(|v| (i as u32, v)))
                .filter(|(id, _)| skip.binary_search(id).is_err()),
        );
        batch.gone.clear();
        bad
    }
}

/// Compact encoding of `(id, value)` pairs: see [`Batch::values`].
pub mod values {
    use serde::de::{self, MapAccess, Visitor};
    use serde::ser::SerializeMap;
    use serde::{Deserializer, Serializer};

    /// Largest magnitude below which every integer is exactly an f64.
    const EXACT_INT: f64 = 9_007_199_254_740_992.0;

    struct Num(f64);

    impl serde::Serialize for Num {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let v = self.0;
            if v.fract() == 0.0 && v.abs() < EXACT_INT && !(v == 0.0 && v.is_sign_negative()) {
                s.serialize_i64(v as i64)
            } else if f64::from(v as f32).to_bits() == v.to_bits() {
                s.serialize_f32(v as f32)
            } else {
                s.serialize_f64(v)
            }
        }
    }

    struct NumVisitor;

    impl Visitor<'_> for NumVisitor {
        type Value = f64;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a number")
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<f64, E> {
            Ok(v as f64)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<f64, E> {
            Ok(v as f64)
        }
        fn visit_f32<E: de::Error>(self, v: f32) -> Result<f64, E> {
            Ok(f64::from(v))
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<f64, E> {
            Ok(v)
        }
    }

    struct AnyNum(f64);

    impl<'de> serde::Deserialize<'de> for AnyNum {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(NumVisitor).map(AnyNum)
        }
    }

    pub fn serialize<S: Serializer>(values: &[(u32, f64)], s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(values.len()))?;
        for &(id, v) in values {
            map.serialize_entry(&id, &Num(v))?;
        }
        map.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(u32, f64)>, D::Error> {
        struct MapVisitor;
        impl<'de> Visitor<'de> for MapVisitor {
            type Value = Vec<(u32, f64)>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a map of metric id to value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                // The hint comes from the peer: cap it so a forged length cannot make us
                // allocate more than the frame could hold.
                let mut out = Vec::with_capacity(map.size_hint().unwrap_or(0).min(4096));
                while let Some((id, AnyNum(v))) = map.next_entry::<u32, AnyNum>()? {
                    out.push((id, v));
                }
                Ok(out)
            }
        }
        d.deserialize_map(MapVisitor)
    }
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

    /// A batch of `values` with nothing else in it, as an agent's seq 1 of a run.
    fn batch(values: Vec<(u32, f64)>) -> Batch {
        Batch {
            run: 1 << 60,
            seq: 1,
            time_ms: 1_700_000_000_000,
            defs: vec![],
            facts: None,
            values,
            gone: vec![],
            ack: false,
            skipped: vec![],
        }
    }

    proptest! {
        #[test]
        fn batch_round_trips(seq: u64, time_ms: i64,
                             defs in proptest::collection::vec(meta(), 0..4),
                             values in proptest::collection::vec((any::<u32>(), -1e12f64..1e12), 0..200)) {
            let b = Batch { run: 7, seq, time_ms, defs, ..batch(values) };
            let back: Batch = decode(&encode(&b).unwrap()).unwrap();
            prop_assert_eq!(back, b);
        }

        #[test]
        fn any_value_round_trips_bit_for_bit(v: f64, bits: u64) {
            for v in [v, f64::from_bits(bits), v.round(), f64::from(v as f32)] {
                let b = Batch { ack: true, ..batch(vec![(3, v)]) };
                let back: Batch = decode(&encode(&b).unwrap()).unwrap();
                prop_assert_eq!(back.values[0].1.to_bits(), v.to_bits(), "{}", v);
            }
        }

        #[test]
        fn deltas_rebuild_the_full_batches(start_seq in 1u64..u64::MAX / 2, run: u64, t0 in -1i64 << 50..1i64 << 50,
                                           batches in proptest::collection::vec((
            proptest::collection::btree_map(0u32..20, prop_oneof![Just(1.0f64), Just(2.5), -1e6f64..1e6], 0..20),
            1u64..3, -20_000i64..40_000, any::<bool>()), 1..12)) {
            let mut sender = Previous::default();
            let mut receiver = Previous::default();
            let (mut seq, mut time_ms) = (start_seq, t0);
            for (values, step, dt, ack) in &batches {
                let full = Batch { run, seq, time_ms, ack: *ack, ..batch(values.iter().map(|(k, v)| (*k, *v)).collect()) };
                let sent = sender.delta(&full);
                sender.remember(&full);
                let mut got: Batch = decode(&encode(&sent).unwrap()).unwrap();
                prop_assert_eq!(receiver.rebuild(&mut got, u32::MAX), 0);
                prop_assert_eq!(got, full);
                seq += step;
                time_ms += dt;
            }
        }

        #[test]
        fn skipped_metrics_keep_their_base_and_are_not_carried(
            batches in proptest::collection::vec((
                proptest::collection::btree_map(0u32..12, prop_oneof![Just(1.0f64), -1e3f64..1e3], 0..12),
                proptest::collection::btree_set(0u32..12, 0..6)), 1..12)) {
            // The receiver's view of each batch is its own values only, and the next
            // difference is taken against the last value sent, skipped batches or not.
            let mut sender = Previous::default();
            let mut receiver = Previous::default();
            let mut last = std::collections::BTreeMap::new();
            for (seq, (values, skipped)) in batches.iter().enumerate() {
                let skipped: Vec<u32> = skipped.iter().copied().filter(|id| !values.contains_key(id)).collect();
                let full = Batch { seq: seq as u64 + 1, skipped: skipped.clone(),
                                   ..batch(values.iter().map(|(k, v)| (*k, *v)).collect()) };
                let sent = sender.delta(&full);
                for &(id, v) in &sent.values {
                    prop_assert!(last.get(&id) != Some(&v.to_bits()), "value {} of {} sent twice", v, id);
                }
                prop_assert!(sent.skipped.iter().all(|id| last.contains_key(id)), "skipped without a base");
                prop_assert!(sent.gone.iter().all(|id| !skipped.contains(id)), "a skipped metric went");
                sender.remember(&full);
                let mut got: Batch = decode(&encode(&sent).unwrap()).unwrap();
                prop_assert_eq!(receiver.rebuild(&mut got, u32::MAX), 0);
                prop_assert_eq!(&got, &Batch { skipped: vec![], ..full.clone() });
                last.retain(|id, _| values.contains_key(id) || skipped.contains(id));
                last.extend(values.iter().map(|(k, v)| (*k, v.to_bits())));
            }
        }

        #[test]
        fn a_quiet_batch_after_the_first_is_a_few_bytes(run: u64, seq in 1u64..1 << 40) {
            let full = |seq: u64, t: i64| Batch { run, seq, time_ms: 1_700_000_000_000 + t,
                                                  ..batch((0..70).map(|i| (i, f64::from(i) * 1.5)).collect()) };
            let mut sender = Previous::default();
            sender.remember(&full(seq, 0));
            let next = encode(&sender.delta(&full(seq + 1, 15_000))).unwrap();
            // Array header, run 0, seq 1, time 15000 (3 bytes), two empty lists, nil,
            // an empty map and false.
            prop_assert_eq!(next.len(), 1 + 1 + 1 + 3 + 1 + 1 + 1 + 1 + 1);
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
    fn sample_costs_about_ten_bytes() {
        let values: Vec<(u32, f64)> = (0..100).map(|i| (i, i as f64 * 1.37)).collect();
        let b = batch(values);
        let len = encode(&b).unwrap().len();
        // Id and a 64-bit float: 10 bytes.
        assert!(len <= 100 * 10 + 40, "{len} bytes for 100 samples");
    }

    #[test]
    fn integral_and_single_precision_values_are_short() {
        let values: Vec<(u32, f64)> =
            (0..100).map(|i| (i, if i % 2 == 0 { f64::from(i * 1000) } else { 0.25 })).collect();
        let b = batch(values);
        let len = encode(&b).unwrap().len();
        // Id and a value of at most 5 bytes (u32 or f32): 6 bytes, not 10.
        assert!(len <= 100 * 6 + 40, "{len} bytes for 100 short samples");
    }
}
