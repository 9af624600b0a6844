//! Any bytes as an Apache mod_status `?auto` page: never a panic.
#![no_main]

use ganglion_agent::collect::apache::parse_status;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = parse_status(&String::from_utf8_lossy(data));
});
