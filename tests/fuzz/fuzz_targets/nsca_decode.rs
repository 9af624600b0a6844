//! Any bytes through the NSCA session decoder, for every supported method: never a panic,
//! each accepted packet uses exactly one packet's bytes and honours the field limits.
#![no_main]

use ganglion_checks::nsca::{Config, Method, Session, IV_LEN, PACKET_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else { return };
    let method = Method::ALL[usize::from(selector) % Method::ALL.len()];
    let iv: [u8; IV_LEN] = std::array::from_fn(|i| i as u8);
    let cfg = Config { method, password: b"fuzz".to_vec(), max_packet_age_secs: 30 };
    let mut s = Session::new(cfg, iv, 0);
    let mut rest = rest;
    while let Ok((p, used)) = s.decode(rest, 0) {
        assert_eq!(used, PACKET_LEN);
        assert!(p.host.len() <= 63 * 3 && p.service.len() <= 127 * 3 && p.output.len() <= 4095 * 3);
        rest = &rest[used..];
    }
    let _ = s.decode_at_eof(rest, 0);
});
