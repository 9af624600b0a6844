//! Any bytes as a line on the agent's send socket: never a panic, and what is
//! accepted passes the checks and reads back the same.
#![no_main]

use ganglion_agent::push::parse_line;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = parse_line(&String::from_utf8_lossy(data)) {
        assert!(p.check().is_ok());
        assert_eq!(parse_line(&p.to_line()).as_ref(), Ok(&p));
    }
});
