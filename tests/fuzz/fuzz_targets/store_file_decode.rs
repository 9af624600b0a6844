//! Any bytes through the round-robin file decoders: superblock, state slots and data
//! blocks never panic, whatever a damaged disk hands back.
#![no_main]

use ganglion_store::file::{decode_block, decode_slot, decode_superblock, Layout};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(sb) = decode_superblock(data) {
        let _ = decode_slot(data, &sb);
        let layout = Layout::new(sb.ds.len(), &sb.rra);
        let total = layout.blocks.last().map_or(0, |b| b.1 + b.2);
        if total > 1 << 16 {
            return; // a valid but huge file: decoding its blocks needs no fuzzing
        }
        let mut out = vec![0.0; total];
        for k in 0..layout.blocks.len().min(4) {
            let _ = decode_block(&layout, k, data, &mut out);
        }
    }
});
