//! The append-only journal: every accepted sample is written here before it is
//! acknowledged, and replayed at start-up until the flusher has put it into the shard
//! files.
//!
//! A segment is a sequence of records: `len: u32 LE` (payload bytes), `crc32c: u32 LE`
//! (of the payload), payload. One [`super::Store::append`] call is one record. A
//! payload is
//!
//! ```text
//! defines: varint n, then n × (id: varint, kind: u8, key_len: varint, key)
//! samples: base: u64 LE (seconds), varint m, then m × (id: varint, dt: zigzag varint, value: f64 LE)
//! removes: varint r, then r × (key_len: varint, key)
//! ```
//!
//! `id` is a number the writer gives a series; a segment defines every id it uses
//! (key `cluster/host/metric` and kind) before its first sample, so each segment can be
//! read on its own. A sample's time is `base + dt`. A typical sample costs 11 bytes.
//! A remove (host expiry) makes replay forget the series' earlier samples.
//! A record that is cut short or fails its checksum ends the segment: replay truncates
//! the file there.

use super::{DsKind, SeriesKey};

/// Bytes before a record's payload.
pub const RECORD_HEADER: usize = 8;
/// Largest payload replay accepts (a corrupt length never allocates more).
pub const MAX_RECORD: usize = 64 << 20;

/// A series definition inside a segment.
#[derive(Clone, Debug, PartialEq)]
pub struct Define {
    pub id: u32,
    pub kind: DsKind,
    pub key: SeriesKey,
}

/// One sample (time in whole seconds).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    pub id: u32,
    pub time: u64,
    pub value: f64,
}

/// One decoded record.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Record {
    pub defines: Vec<Define>,
    pub samples: Vec<Sample>,
    pub removes: Vec<SeriesKey>,
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(b: &[u8], at: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*at)?;
        *at += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Some(v);
        }
    }
    None
}

/// Builds one record from defines and samples in any order, reusing its buffers.
#[derive(Default)]
pub struct Encoder {
    defines: Vec<u8>,
    samples: Vec<u8>,
    removes: Vec<u8>,
    n_defines: u64,
    n_samples: u64,
    n_removes: u64,
    base: Option<u64>,
}

impl Encoder {
    /// Starts a new record.
    pub fn clear(&mut self) {
        self.defines.clear();
        self.samples.clear();
        self.removes.clear();
        self.n_defines = 0;
        self.n_samples = 0;
        self.n_removes = 0;
        self.base = None;
    }

    /// Defines `id` as `cluster/host/metric`.
    pub fn define(&mut self, id: u32, kind: DsKind, key: [&str; 3]) {
        put_varint(&mut self.defines, u64::from(id));
        self.defines.push(kind.code());
        let len = key.iter().map(|k| k.len()).sum::<usize>() + 2;
        put_varint(&mut self.defines, len as u64);
        self.defines.extend_from_slice(key[0].as_bytes());
        self.defines.push(b'/');
        self.defines.extend_from_slice(key[1].as_bytes());
        self.defines.push(b'/');
        self.defines.extend_from_slice(key[2].as_bytes());
        self.n_defines += 1;
    }

    pub fn sample(&mut self, id: u32, time: u64, value: f64) {
        let base = *self.base.get_or_insert(time);
        put_varint(&mut self.samples, u64::from(id));
        let dt = time.wrapping_sub(base) as i64;
        put_varint(&mut self.samples, ((dt << 1) ^ (dt >> 63)) as u64);
        self.samples.extend_from_slice(&value.to_bits().to_le_bytes());
        self.n_samples += 1;
    }

    /// Replay forgets the series `key` (and its samples so far).
    pub fn remove(&mut self, key: &str) {
        put_varint(&mut self.removes, key.len() as u64);
        self.removes.extend_from_slice(key.as_bytes());
        self.n_removes += 1;
    }

    pub fn is_empty(&self) -> bool {
        self.n_samples == 0 && self.n_defines == 0 && self.n_removes == 0
    }

    /// Writes the record (header and payload) into `out` (cleared first).
    pub fn finish(&self, out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(&[0u8; RECORD_HEADER]);
        put_varint(out, self.n_defines);
        out.extend_from_slice(&self.defines);
        out.extend_from_slice(&self.base.unwrap_or(0).to_le_bytes());
        put_varint(out, self.n_samples);
        out.extend_from_slice(&self.samples);
        put_varint(out, self.n_removes);
        out.extend_from_slice(&self.removes);
        let len = (out.len() - RECORD_HEADER) as u32;
        let crc = crc32c::crc32c(&out[RECORD_HEADER..]);
        out[..4].copy_from_slice(&len.to_le_bytes());
        out[4..8].copy_from_slice(&crc.to_le_bytes());
    }
}

/// Result of decoding the front of a byte slice.
#[derive(Debug, PartialEq)]
pub enum Decoded {
    /// A record and the bytes it used.
    Record(Record, usize),
    /// The bytes end inside a record (a torn tail).
    Incomplete,
    /// The record is damaged.
    Invalid(&'static str),
}

/// Decodes one record from the front of `b`. Never panics, whatever the bytes.
pub fn decode(b: &[u8]) -> Decoded {
    if b.len() < RECORD_HEADER {
        return Decoded::Incomplete;
    }
    let len = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
    let crc = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
    if len > MAX_RECORD {
        return Decoded::Invalid("record length out of range");
    }
    let Some(p) = b.get(RECORD_HEADER..RECORD_HEADER + len) else { return Decoded::Incomplete };
    if crc32c::crc32c(p) != crc {
        return Decoded::Invalid("record checksum mismatch");
    }
    match decode_payload(p) {
        Ok(r) => Decoded::Record(r, RECORD_HEADER + len),
        Err(e) => Decoded::Invalid(e),
    }
}

fn decode_payload(p: &[u8]) -> Result<Record, &'static str> {
    let mut at = 0;
    let n = get_varint(p, &mut at).ok_or("defines cut short")?;
    let mut rec = Record::default();
    for _ in 0..n {
        let id = get_varint(p, &mut at).ok_or("define cut short")?;
        let kind = p.get(at).and_then(|&k| DsKind::from_code(k)).ok_or("unknown kind")?;
        at += 1;
        let kl = get_varint(p, &mut at).ok_or("define cut short")? as usize;
        let kb = p.get(at..at.checked_add(kl).ok_or("key length")?).ok_or("key cut short")?;
        at += kl;
        let key = std::str::from_utf8(kb).ok().and_then(SeriesKey::from_joined).ok_or("bad series key")?;
        rec.defines.push(Define { id: u32::try_from(id).map_err(|_| "id out of range")?, kind, key });
    }
    let base = p.get(at..at + 8).ok_or("samples cut short")?;
    let base = u64::from_le_bytes(base.try_into().map_err(|_| "samples cut short")?);
    at += 8;
    let m = get_varint(p, &mut at).ok_or("samples cut short")?;
    rec.samples.reserve((m as usize).min(p.len() / 10 + 1));
    for _ in 0..m {
        let id = get_varint(p, &mut at).ok_or("sample cut short")?;
        let z = get_varint(p, &mut at).ok_or("sample cut short")?;
        let dt = ((z >> 1) as i64) ^ -((z & 1) as i64);
        let v = p.get(at..at + 8).ok_or("sample cut short")?;
        at += 8;
        let value = f64::from_bits(u64::from_le_bytes(v.try_into().map_err(|_| "sample cut short")?));
        rec.samples.push(Sample {
            id: u32::try_from(id).map_err(|_| "id out of range")?,
            time: base.wrapping_add(dt as u64),
            value,
        });
    }
    let r = get_varint(p, &mut at).ok_or("removes cut short")?;
    for _ in 0..r {
        let kl = get_varint(p, &mut at).ok_or("remove cut short")? as usize;
        let kb = p.get(at..at.checked_add(kl).ok_or("key length")?).ok_or("key cut short")?;
        at += kl;
        rec.removes.push(std::str::from_utf8(kb).ok().and_then(SeriesKey::from_joined).ok_or("bad series key")?);
    }
    if at != p.len() {
        return Err("trailing bytes in record");
    }
    Ok(rec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn record() -> Vec<u8> {
        let mut e = Encoder::default();
        e.define(7, DsKind::Counter, ["c", "h2", "bytes_in"]);
        e.sample(7, 1_700_000_015, 1.5);
        e.sample(3, 1_700_000_000, -3.0);
        e.remove("c/h1/x");
        let mut out = Vec::new();
        e.finish(&mut out);
        out
    }

    #[test]
    fn round_trips_and_detects_damage() {
        let bytes = record();
        match decode(&bytes) {
            Decoded::Record(r, used) => {
                assert_eq!(used, bytes.len());
                assert_eq!(r.defines[0].key, SeriesKey::new("c", "h2", "bytes_in"));
                assert_eq!(r.defines[0].kind, DsKind::Counter);
                assert_eq!(r.samples[1], Sample { id: 3, time: 1_700_000_000, value: -3.0 });
                assert_eq!(r.samples[0].time, 1_700_000_015);
                assert_eq!(r.removes, vec![SeriesKey::new("c", "h1", "x")]);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(decode(&bytes[..bytes.len() - 1]), Decoded::Incomplete);
        let mut bad = bytes.clone();
        bad[12] ^= 1;
        assert!(matches!(decode(&bad), Decoded::Invalid(_)));
    }

    #[test]
    fn a_sample_costs_eleven_bytes() {
        let mut e = Encoder::default();
        for id in 0..100 {
            e.sample(id, 1_700_000_000, 0.25);
        }
        let mut out = Vec::new();
        e.finish(&mut out);
        assert!(out.len() <= 100 * 10 + 20, "{}", out.len());
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
        #[test]
        fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode(&bytes);
        }

        /// Any record decodes to what was encoded: defines, samples (times across the
        /// whole range, values bit for bit) and removes.
        #[test]
        fn records_round_trip(
            defines in prop::collection::vec((any::<u32>(), 0u8..4, "[a-z0-9_]{1,20}", "[a-z0-9_-]{1,30}", "[a-z0-9_]{1,40}"), 0..8),
            samples in prop::collection::vec((any::<u32>(), any::<u64>(), any::<u64>()), 0..40),
            removes in prop::collection::vec(("[a-z0-9_]{1,20}", "[a-z0-9_]{1,20}", "[a-z0-9_]{1,20}"), 0..4),
        ) {
            let mut e = Encoder::default();
            for (id, k, c, h, m) in &defines {
                e.define(*id, DsKind::from_code(*k).unwrap(), [c, h, m]);
            }
            for &(id, t, bits) in &samples {
                e.sample(id, t, f64::from_bits(bits));
            }
            for (c, h, m) in &removes {
                e.remove(&format!("{c}/{h}/{m}"));
            }
            let mut out = Vec::new();
            e.finish(&mut out);
            let Decoded::Record(r, used) = decode(&out) else { panic!("{:?}", decode(&out)) };
            prop_assert_eq!(used, out.len());
            let want: Vec<(u32, DsKind, SeriesKey)> =
                defines.iter().map(|(id, k, c, h, m)| (*id, DsKind::from_code(*k).unwrap(), SeriesKey::new(c, h, m))).collect();
            let got: Vec<(u32, DsKind, SeriesKey)> = r.defines.iter().map(|d| (d.id, d.kind, d.key.clone())).collect();
            prop_assert_eq!(got, want);
            let got: Vec<(u32, u64, u64)> = r.samples.iter().map(|x| (x.id, x.time, x.value.to_bits())).collect();
            prop_assert_eq!(got, samples);
            let want: Vec<SeriesKey> = removes.iter().map(|(c, h, m)| SeriesKey::new(c, h, m)).collect();
            prop_assert_eq!(r.removes, want);
        }

        #[test]
        fn garbage_with_a_valid_checksum_never_panics(p in prop::collection::vec(any::<u8>(), 0..256)) {
            let mut b = (p.len() as u32).to_le_bytes().to_vec();
            b.extend_from_slice(&crc32c::crc32c(&p).to_le_bytes());
            b.extend_from_slice(&p);
            let _ = decode(&b);
        }
    }
}
