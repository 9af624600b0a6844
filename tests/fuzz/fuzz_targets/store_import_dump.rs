//! Any text through the `rrdtool dump` parser of `ganglion import-rrd`: never a panic;
//! a database it accepts can be fetched and dumped again.
#![no_main]

use ganglion_store::cli::render_dump;
use ganglion_store::import::parse_dump;
use ganglion_store::rrd::Cf;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(db) = parse_dump(text) {
        let end = db.last_up;
        let _ = db.fetch(Cf::Average, end.saturating_sub(db.step.saturating_mul(10)), end, 1);
        let _ = render_dump(&db);
    }
});
