//! The append-only journal: every accepted update is written here before it is
//! acknowledged, and replayed at start-up until the flusher has put it into the series
//! files.
//!
//! A segment is a sequence of records: `len: u32 LE` (payload bytes), `crc32c: u32 LE`
//! (of the payload), payload. A payload is `count: u32`, then `count` entries of
//! `kind: u8, time: u64 (s), value: f64, key_len: u16, key` (all LE, key is
//! `cluster/host/metric` in UTF-8). A record that is cut short or fails its checksum
//! ends the segment: replay truncates the file there.

use super::{DsKind, SeriesKey, Update};

/// Bytes before a record's payload.
pub const RECORD_HEADER: usize = 8;
/// Largest payload replay accepts (a corrupt length never allocates more).
pub const MAX_RECORD: usize = 64 << 20;

/// One update as journaled (time already in whole seconds).
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub key: SeriesKey,
    pub kind: DsKind,
    pub time: u64,
    pub value: f64,
}

/// Encodes one record holding `entries`.
pub fn encode(entries: &[(&Update, u64)]) -> Vec<u8> {
    let mut p = Vec::with_capacity(4 + entries.len() * 48);
    p.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for (u, t) in entries {
        p.push(u.kind.code());
        p.extend_from_slice(&t.to_le_bytes());
        p.extend_from_slice(&u.value.to_bits().to_le_bytes());
        let key = u.series.joined();
        let kb = key.as_bytes();
        let n = kb.len().min(u16::MAX as usize);
        p.extend_from_slice(&(n as u16).to_le_bytes());
        p.extend_from_slice(&kb[..n]);
    }
    let mut out = Vec::with_capacity(p.len() + RECORD_HEADER);
    out.extend_from_slice(&(p.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&p).to_le_bytes());
    out.extend_from_slice(&p);
    out
}

/// Result of decoding the front of a byte slice.
#[derive(Debug, PartialEq)]
pub enum Decoded {
    /// A record and the bytes it used.
    Record(Vec<Entry>, usize),
    /// The bytes end inside a record (a torn tail).
    Incomplete,
    /// The record is damaged.
    Invalid(&'static str),
}

fn rd<const N: usize>(b: &[u8], at: &mut usize) -> Option<[u8; N]> {
    let s = b.get(*at..at.checked_add(N)?)?;
    *at += N;
    let mut a = [0u8; N];
    a.copy_from_slice(s);
    Some(a)
}

/// Decodes one record from the front of `b`. Never panics, whatever the bytes.
pub fn decode(b: &[u8]) -> Decoded {
    let mut at = 0;
    let (Some(len), Some(crc)) = (rd::<4>(b, &mut at), rd::<4>(b, &mut at)) else { return Decoded::Incomplete };
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_RECORD {
        return Decoded::Invalid("record length out of range");
    }
    let Some(p) = b.get(RECORD_HEADER..RECORD_HEADER + len) else { return Decoded::Incomplete };
    if crc32c::crc32c(p) != u32::from_le_bytes(crc) {
        return Decoded::Invalid("record checksum mismatch");
    }
    let mut at = 0;
    let Some(count) = rd::<4>(p, &mut at) else { return Decoded::Invalid("record too short") };
    let count = u32::from_le_bytes(count) as usize;
    let mut out = Vec::with_capacity(count.min(len / 19 + 1));
    for _ in 0..count {
        let (Some(kind), Some(t), Some(v), Some(kl)) =
            (rd::<1>(p, &mut at), rd::<8>(p, &mut at), rd::<8>(p, &mut at), rd::<2>(p, &mut at))
        else {
            return Decoded::Invalid("entry cut short");
        };
        let Some(kind) = DsKind::from_code(kind[0]) else { return Decoded::Invalid("unknown kind") };
        let kl = u16::from_le_bytes(kl) as usize;
        let Some(kb) = p.get(at..at + kl) else { return Decoded::Invalid("key cut short") };
        at += kl;
        let Some(key) = std::str::from_utf8(kb).ok().and_then(SeriesKey::from_joined) else {
            return Decoded::Invalid("bad series key");
        };
        out.push(Entry { key, kind, time: u64::from_le_bytes(t), value: f64::from_bits(u64::from_le_bytes(v)) });
    }
    if at != p.len() {
        return Decoded::Invalid("trailing bytes in record");
    }
    Decoded::Record(out, RECORD_HEADER + len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn upd(host: &str, v: f64) -> Update {
        Update { series: SeriesKey::new("c", host, "load_one"), kind: DsKind::Gauge, time_ms: 0, value: v }
    }

    #[test]
    fn round_trips_and_detects_damage() {
        let (a, b) = (upd("h1", 1.5), upd("h2", -3.0));
        let bytes = encode(&[(&a, 10), (&b, 20)]);
        match decode(&bytes) {
            Decoded::Record(e, used) => {
                assert_eq!(used, bytes.len());
                assert_eq!(e[1].key.host, "h2");
                assert_eq!((e[1].time, e[1].value), (20, -3.0));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(decode(&bytes[..bytes.len() - 1]), Decoded::Incomplete);
        let mut bad = bytes.clone();
        bad[12] ^= 1;
        assert!(matches!(decode(&bad), Decoded::Invalid(_)));
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
        #[test]
        fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode(&bytes);
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
