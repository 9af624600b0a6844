//! Any bytes as each payload type: never a panic.
#![no_main]

use ganglion_proto::msg::{self, Ack, Batch, Challenge, Hello, Refusal};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = msg::decode::<Hello>(data);
    let _ = msg::decode::<Batch>(data);
    let _ = msg::decode::<Ack>(data);
    let _ = msg::decode::<Challenge>(data);
    let _ = msg::decode::<Refusal>(data);
});
