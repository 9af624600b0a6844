//! Any bytes through the journal record decoder: never a panic, and a decoded record
//! never claims more bytes than it was given.
#![no_main]

use ganglion_store::engine::journal::{decode, Decoded};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Decoded::Record(_, used) = decode(rest) {
        assert!(used <= rest.len());
        rest = &rest[used..];
    }
});
