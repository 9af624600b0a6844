//! Any bytes as memcached's answer to `stats`: never a panic.
#![no_main]

use ganglion_agent::collect::memcached::parse_stats;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = parse_stats(&String::from_utf8_lossy(data));
});
