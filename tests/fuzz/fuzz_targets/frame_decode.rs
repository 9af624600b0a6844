//! Any bytes through the stream decoder: never a panic, never a frame larger than the
//! limit, and every decoded frame re-encodes to the bytes it came from.
#![no_main]

use ganglion_proto::frame;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Ok(Some((f, used))) = frame::decode(rest, 64 * 1024) {
        assert!(used <= 4 + 64 * 1024);
        assert_eq!(f.to_bytes(), &rest[..used]);
        let _ = f.verify(b"fuzz key", &[0; 16]);
        rest = &rest[used..];
    }
});
