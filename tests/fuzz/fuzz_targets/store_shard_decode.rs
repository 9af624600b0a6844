//! Any bytes through the shard file decoders: header, state records and data blocks
//! never panic, and a state record that decodes encodes back to bytes that decode the
//! same.
#![no_main]

use ganglion_store::engine::shard::{
    check_block, check_state, decode_header, decode_state, encode_state_vec, state_len, Layout, ShardDef,
    BLOCK_LEN, HEADER_LEN, MAGIC, VERSION,
};
use ganglion_store::rrd::{DsDef, RraDef};
use libfuzzer_sys::fuzz_target;

fn fixed_def() -> ShardDef {
    ShardDef {
        step: 15,
        ds: DsDef::parse("DS:value:GAUGE:120:U:U").expect("a valid DS"),
        rra: ["RRA:AVERAGE:0.5:1:244", "RRA:MAX:0.5:24:244"].iter().map(|s| RraDef::parse(s).expect("a valid RRA")).collect(),
    }
}

/// `data` as the fields of a header with a valid magic, version and checksum, so the
/// range checks behind the checksum are explored too (the fuzzer cannot forge CRCs).
fn sealed_header(data: &[u8]) -> Vec<u8> {
    let mut h = vec![0u8; HEADER_LEN as usize];
    let n = data.len().min(h.len() - 20);
    h[16..16 + n].copy_from_slice(&data[..n]);
    h[..8].copy_from_slice(&MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    h[12..16].copy_from_slice(&(HEADER_LEN as u32).to_le_bytes());
    let end = h.len() - 4;
    let crc = crc32c::crc32c(&h[..end]);
    h[end..].copy_from_slice(&crc.to_le_bytes());
    h
}

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = decode_header(&sealed_header(data)) {
        let l = Layout::new(&h.def, h.capacity);
        let _ = l.block_off(h.def.rra.len() - 1, 0, h.capacity - 1);
    }
    let head = &data[..data.len().min(4096)];
    let def = match decode_header(head) {
        Ok(h) => {
            // Offsets of a decoded header are computed without overflow.
            let l = Layout::new(&h.def, h.capacity);
            let _ = l.state_off(1, h.capacity - 1);
            let _ = l.block_off(h.def.rra.len() - 1, 0, h.capacity - 1);
            h.def
        }
        Err(_) => fixed_def(),
    };
    let rest = &data[head.len()..];
    let body = if rest.is_empty() { data } else { rest };
    for slot in 0..2u32 {
        let _ = check_state(0, slot, def.rra.len(), body);
        if let Ok(Some(st)) = decode_state(0, slot, &def, body) {
            let bytes = encode_state_vec(0, slot, &st, def.rra.len());
            assert_eq!(bytes.len(), state_len(def.rra.len()));
            let again = decode_state(0, slot, &def, &bytes).expect("a fresh encoding decodes").expect("not free");
            assert_eq!(encode_state_vec(0, slot, &again, def.rra.len()), bytes);
        }
    }
    for (k, b) in body.chunks(BLOCK_LEN).take(4).enumerate() {
        let _ = check_block(0, k as u32, 0, 0, b);
    }
});
