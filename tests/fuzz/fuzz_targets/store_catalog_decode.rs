//! Any bytes through the catalog reader: never a panic, the good length never exceeds
//! the input, and the records it kept encode to a log that reads back the same. The
//! input is read twice: as a log, and as payloads (a length byte, then that many bytes)
//! framed with valid lengths and checksums, so the payload parser behind the checksum is
//! explored too.
#![no_main]

use ganglion_store::engine::catalog::{encode, read_all};
use libfuzzer_sys::fuzz_target;

fn check(log: &[u8]) {
    let r = read_all(log);
    assert!(r.good_len <= log.len());
    let mut again = Vec::new();
    for op in &r.ops {
        encode(op, &mut again);
    }
    let back = read_all(&again);
    assert_eq!(back.ops, r.ops);
    assert_eq!((back.skipped, back.good_len), (0, again.len()));
}

fuzz_target!(|data: &[u8]| {
    check(data);
    let mut framed = Vec::new();
    let mut rest = data;
    while let Some((&n, tail)) = rest.split_first() {
        let p = &tail[..usize::from(n).min(tail.len())];
        framed.extend_from_slice(&(p.len() as u32).to_le_bytes());
        framed.extend_from_slice(&crc32c::crc32c(p).to_le_bytes());
        framed.extend_from_slice(p);
        rest = &tail[p.len()..];
    }
    check(&framed);
});
