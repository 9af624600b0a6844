//! Any bytes as `mysql -B` output of SHOW GLOBAL STATUS / VARIABLES and of
//! SHOW REPLICA STATUS: never a panic.
#![no_main]

use ganglion_agent::collect::mysql::{pairs_from_tsv, parse_replica, parse_status, parse_variables, row_from_tsv};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = parse_status(pairs_from_tsv(&text));
    let _ = parse_variables(pairs_from_tsv(&text));
    let _ = parse_replica(row_from_tsv(&text));
});
