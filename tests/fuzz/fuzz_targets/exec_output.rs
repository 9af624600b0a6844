//! Any bytes as an exec plugin's output, in every format: never a panic, never a
//! value that is not finite.
#![no_main]

use ganglion_agent::collect::exec::parse_output;
use ganglion_agent::config::ExecFormat;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for format in [ExecFormat::Auto, ExecFormat::Nagios, ExecFormat::Lines] {
        let out = parse_output(&text, format);
        assert!(out.values.iter().all(|v| v.value.is_finite()));
    }
});
