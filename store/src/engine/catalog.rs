//! The catalog (`catalog.log`): which series lives in which shard slot.
//!
//! An append-only log of records `len: u32, crc32c: u32, payload` (LE). A payload is
//! `op: u8` (1 add, 2 remove), `shard: u32, slot: u32, incarnation: u32`, and for an
//! add `kind: u8, created: u64, key_len: u16, key` (`cluster/host/metric`). The last
//! record for a slot wins; a remove frees it. A damaged record in the middle is skipped
//! (the reader resynchronises on the next record whose length and CRC check out); a
//! damaged tail is cut off. The log is rewritten with only live entries when it has
//! grown to more than twice their number.

use super::DsKind;

/// Longest record payload (a key is at most 3 × 128 bytes plus separators).
pub const MAX_PAYLOAD: usize = 1024;
const HEADER: usize = 8;

/// One catalog change.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    Add { shard: u32, slot: u32, incarnation: u32, kind: DsKind, created: u64, key: String },
    Remove { shard: u32, slot: u32, incarnation: u32 },
}

/// Appends the encoding of `op` to `out`.
pub fn encode(op: &Op, out: &mut Vec<u8>) {
    let mut p = Vec::with_capacity(64);
    match op {
        Op::Add { shard, slot, incarnation, kind, created, key } => {
            p.push(1);
            p.extend_from_slice(&shard.to_le_bytes());
            p.extend_from_slice(&slot.to_le_bytes());
            p.extend_from_slice(&incarnation.to_le_bytes());
            p.push(kind.code());
            p.extend_from_slice(&created.to_le_bytes());
            let k = &key.as_bytes()[..key.len().min(MAX_PAYLOAD - 32)];
            p.extend_from_slice(&(k.len() as u16).to_le_bytes());
            p.extend_from_slice(k);
        }
        Op::Remove { shard, slot, incarnation } => {
            p.push(2);
            p.extend_from_slice(&shard.to_le_bytes());
            p.extend_from_slice(&slot.to_le_bytes());
            p.extend_from_slice(&incarnation.to_le_bytes());
        }
    }
    out.extend_from_slice(&(p.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&p).to_le_bytes());
    out.extend_from_slice(&p);
}

/// Result of decoding the front of a byte slice.
#[derive(Debug, PartialEq)]
pub enum Decoded {
    Record(Op, usize),
    Incomplete,
    Invalid(&'static str),
}

fn le<const N: usize>(p: &[u8], at: usize) -> Option<[u8; N]> {
    let mut a = [0u8; N];
    a.copy_from_slice(p.get(at..at + N)?);
    Some(a)
}

/// Decodes one record. Never panics, whatever the bytes.
pub fn decode(b: &[u8]) -> Decoded {
    let (Some(len), Some(crc)) = (le::<4>(b, 0), le::<4>(b, 4)) else { return Decoded::Incomplete };
    let len = u32::from_le_bytes(len) as usize;
    if len == 0 || len > MAX_PAYLOAD {
        return Decoded::Invalid("catalog record length out of range");
    }
    let Some(p) = b.get(HEADER..HEADER + len) else { return Decoded::Incomplete };
    if crc32c::crc32c(p) != u32::from_le_bytes(crc) {
        return Decoded::Invalid("catalog record checksum mismatch");
    }
    let op = (|| {
        let shard = u32::from_le_bytes(le(p, 1)?);
        let slot = u32::from_le_bytes(le(p, 5)?);
        let incarnation = u32::from_le_bytes(le(p, 9)?);
        match p[0] {
            1 => {
                let kind = DsKind::from_code(*p.get(13)?)?;
                let created = u64::from_le_bytes(le(p, 14)?);
                let kl = u16::from_le_bytes(le(p, 22)?) as usize;
                if p.len() != 24 + kl {
                    return None;
                }
                let key = std::str::from_utf8(&p[24..]).ok()?.to_string();
                Some(Op::Add { shard, slot, incarnation, kind, created, key })
            }
            2 if p.len() == 13 => Some(Op::Remove { shard, slot, incarnation }),
            _ => None,
        }
    })();
    match op {
        Some(op) => Decoded::Record(op, HEADER + len),
        None => Decoded::Invalid("catalog record malformed"),
    }
}

/// Everything readable in a catalog file: the ops in order, how many damaged stretches
/// were skipped, and where the good data ends (the file is cut there).
pub struct Read {
    pub ops: Vec<Op>,
    pub skipped: u64,
    pub good_len: usize,
}

/// Reads all records, skipping damaged ones in the middle.
pub fn read_all(b: &[u8]) -> Read {
    let mut ops = Vec::new();
    let mut at = 0usize;
    let mut skipped = 0;
    let mut good_len = 0;
    while at < b.len() {
        match decode(&b[at..]) {
            Decoded::Record(op, used) => {
                ops.push(op);
                at += used;
                good_len = at;
            }
            Decoded::Incomplete | Decoded::Invalid(_) => {
                // Resynchronise: the next offset where a whole valid record starts.
                let next = (at + 1..b.len()).find(|&k| matches!(decode(&b[k..]), Decoded::Record(..)));
                match next {
                    Some(k) => {
                        skipped += 1;
                        at = k;
                    }
                    None => break,
                }
            }
        }
    }
    Read { ops, skipped, good_len }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn add(slot: u32) -> Op {
        Op::Add { shard: 1, slot, incarnation: 2, kind: DsKind::Counter, created: 99, key: format!("c/h/m{slot}") }
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (any::<u32>(), any::<u32>(), any::<u32>(), 0u8..4, any::<u64>(), "\\PC{1,80}").prop_map(
                |(shard, slot, incarnation, k, created, key)| Op::Add {
                    shard,
                    slot,
                    incarnation,
                    kind: DsKind::from_code(k).unwrap(),
                    created,
                    key
                }
            ),
            (any::<u32>(), any::<u32>(), any::<u32>()).prop_map(|(shard, slot, incarnation)| Op::Remove {
                shard,
                slot,
                incarnation
            }),
        ]
    }

    #[test]
    fn round_trips_and_skips_a_damaged_record() {
        let mut b = Vec::new();
        for s in 0..3 {
            encode(&add(s), &mut b);
        }
        encode(&Op::Remove { shard: 1, slot: 0, incarnation: 2 }, &mut b);
        let r = read_all(&b);
        assert_eq!(r.ops.len(), 4);
        assert_eq!(r.ops[1], add(1));
        assert_eq!(r.good_len, b.len());
        let one = {
            let mut v = Vec::new();
            encode(&add(0), &mut v);
            v.len()
        };
        let mut bad = b.clone();
        bad[one + 12] ^= 1; // inside the second record
        let r = read_all(&bad);
        assert_eq!(r.skipped, 1);
        assert_eq!(r.ops.len(), 3);
        // A torn tail ends the good data.
        let r = read_all(&b[..b.len() - 3]);
        assert_eq!(r.ops.len(), 3);
        assert_eq!(r.skipped, 0);
        assert_eq!(r.good_len, 3 * one);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
        #[test]
        fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            let _ = read_all(&bytes);
        }

        /// Any log of records reads back as written; cut anywhere, it reads back as a
        /// prefix with the good length at a record boundary.
        #[test]
        fn logs_round_trip_and_cut_at_a_record(ops in prop::collection::vec(op(), 0..20), cut in any::<prop::sample::Index>()) {
            let mut b = Vec::new();
            let mut ends = vec![0];
            for o in &ops {
                encode(o, &mut b);
                ends.push(b.len());
            }
            let r = read_all(&b);
            prop_assert_eq!(&r.ops, &ops);
            prop_assert_eq!((r.skipped, r.good_len), (0, b.len()));
            let at = cut.index(b.len() + 1);
            let r = read_all(&b[..at]);
            let whole = ends.iter().filter(|&&e| e <= at).count() - 1;
            prop_assert_eq!(&r.ops[..], &ops[..whole]);
            prop_assert_eq!(r.good_len, ends[whole]);
        }
    }
}
