//! Interoperability with the real `send_nsca` (Debian `nsca-client` 2.10.x): for every
//! supported encryption method, a listener on 127.0.0.1 serves an init packet built by
//! `ganglion_checks::nsca`, feeds send_nsca three results on stdin and decodes what it sends.
//! Every step has a deadline, and nothing outlives the test.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ganglion_checks::nsca::{self, Config, DecodeError, Invalid, Method, Packet, Session, IV_LEN};

const DEADLINE: Duration = Duration::from_secs(10);

fn send_nsca() -> PathBuf {
    for dir in std::env::var("PATH").unwrap_or_default().split(':').chain(["/usr/sbin", "/usr/bin"]) {
        let p = PathBuf::from(dir).join("send_nsca");
        if p.is_file() {
            return p;
        }
    }
    panic!("send_nsca not found: install the Debian package nsca-client (apt-get install nsca-client)");
}

struct Run {
    raw: Vec<u8>,
    iv: [u8; IV_LEN],
    timestamp: u32,
    status: i32,
    stdout: String,
}

fn accept(listener: &TcpListener) -> TcpStream {
    listener.set_nonblocking(true).unwrap();
    let start = Instant::now();
    loop {
        match listener.accept() {
            Ok((s, _)) => return s,
            Err(e) if e.kind() == ErrorKind::WouldBlock && start.elapsed() < DEADLINE => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("send_nsca did not connect within {DEADLINE:?}: {e}"),
        }
    }
}

/// Runs send_nsca once against a listener that speaks through our codec; returns the raw
/// bytes it sent.
fn run(method: u8, password: Option<&str>, input: &[u8], extra: &[&str]) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("send_nsca.cfg");
    let mut text = String::new();
    if let Some(pw) = password {
        text.push_str(&format!("password={pw}\n"));
    }
    text.push_str(&format!("encryption_method={method}\n"));
    std::fs::write(&cfg, text).unwrap();

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let mut child = Command::new(send_nsca())
        .args(["-H", "127.0.0.1", "-p", &port, "-c"])
        .arg(&cfg)
        .args(["-to", "5"])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut conn = accept(&listener);
    conn.set_nonblocking(false).unwrap();
    conn.set_read_timeout(Some(DEADLINE)).unwrap();

    let iv: [u8; IV_LEN] = std::array::from_fn(|i| (i as u8).wrapping_mul(7).wrapping_add(method));
    let timestamp = u32::try_from(SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()).unwrap();
    conn.write_all(&nsca::init_packet(&iv, timestamp)).unwrap();

    let mut stdin = child.stdin.take().unwrap();
    // send_nsca may exit before reading stdin (cipher set-up failure): ignore a broken pipe.
    let _ = stdin.write_all(input);
    drop(stdin);

    let mut raw = Vec::new();
    conn.read_to_end(&mut raw).unwrap();
    let out = child.wait_with_output().unwrap();
    Run {
        raw,
        iv,
        timestamp,
        status: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    }
}

fn now() -> i64 {
    i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()).unwrap()
}

fn decode_all(run: &Run, method: Method, password: &str) -> Result<Vec<Packet>, DecodeError> {
    let cfg = Config { method, password: password.as_bytes().to_vec(), max_packet_age_secs: 30 };
    let mut s = Session::new(cfg, run.iv, run.timestamp);
    let mut rest: &[u8] = &run.raw;
    let mut out = Vec::new();
    loop {
        match s.decode(rest, now()) {
            Ok((p, used)) => {
                out.push(p);
                rest = &rest[used..];
            }
            Err(DecodeError::Incomplete { .. }) => break,
            Err(e) => return Err(e),
        }
    }
    out.extend(s.decode_at_eof(rest, now())?);
    Ok(out)
}

const PASSWORD: &str = "Sup3r$ecret=with more";

#[test]
fn every_supported_method_decodes_real_send_nsca() {
    let input = b"web01\tHTTP\t0\tHTTP OK - 200 | time=0.01s;1;2;0\x17gw01\t1\tPING WARNING - 20% loss\x17\
                  db01\tMySQL\t2\tCRITICAL - down\nsecond line|conns=0\x17";
    let mut report = Vec::new();
    for method in Method::ALL {
        let r = run(method.code(), Some(PASSWORD), input, &[]);
        assert_eq!(r.status, 0, "{method}: send_nsca said {}", r.stdout);
        assert_eq!(r.raw.len(), 3 * nsca::PACKET_LEN, "{method}");
        let packets = decode_all(&r, method, PASSWORD).unwrap_or_else(|e| panic!("{method}: {e}"));
        assert_eq!(packets.len(), 3, "{method}");
        assert_eq!(
            (packets[0].host.as_str(), packets[0].service.as_str(), packets[0].return_code),
            ("web01", "HTTP", 0)
        );
        assert_eq!(packets[0].output, "HTTP OK - 200 | time=0.01s;1;2;0");
        assert!(packets[1].is_host_result(), "{method}");
        assert_eq!((packets[1].host.as_str(), packets[1].return_code), ("gw01", 1));
        assert_eq!(packets[2].output, "CRITICAL - down\nsecond line|conns=0");
        assert!(packets.iter().all(|p| p.timestamp == r.timestamp && !p.legacy));
        report.push(method.code());
    }
    eprintln!("send_nsca interop OK for methods {report:?}");
}

#[test]
fn no_password_and_legacy_packets() {
    for method in [Method::None, Method::Xor, Method::Rijndael128] {
        let r = run(method.code(), None, b"web01\tHTTP\t0\tno password\n", &["-ds", "0x0a"]);
        let p = decode_all(&r, method, "").unwrap_or_else(|e| panic!("{method}: {e}"));
        assert_eq!(p[0].output, "no password", "{method}");

        let r = run(method.code(), Some("pw"), b"gw01\t2\tlegacy host down", &["--legacy-2-7-mode"]);
        assert_eq!(r.raw.len(), nsca::LEGACY_PACKET_LEN, "{method}");
        let p = decode_all(&r, method, "pw").unwrap_or_else(|e| panic!("{method}: {e}"));
        assert!(p[0].legacy && p[0].is_host_result());
        assert_eq!((p[0].return_code, p[0].output.as_str()), (2, "legacy host down"));
    }
}

#[test]
fn wrong_password_is_rejected() {
    for method in [Method::Xor, Method::Des, Method::Rijndael128, Method::Gost] {
        let r = run(method.code(), Some("right"), b"web01\tHTTP\t0\tok\x17", &[]);
        assert_eq!(r.status, 0, "send_nsca cannot tell: the server never answers");
        let err = decode_all(&r, method, "wrong").unwrap_err();
        assert!(
            matches!(err, DecodeError::Invalid { reason: Invalid::Version(_) | Invalid::Crc { .. } }),
            "{method}: {err}"
        );
    }
}

#[test]
fn refused_methods_are_ones_send_nsca_cannot_use_or_we_cannot_match() {
    // send_nsca itself fails to set up these ciphers: nothing to match.
    for code in [7u8, 12, 19, 22, 24, 25] {
        let r = run(code, Some("pw"), b"h\ts\t0\tx\x17", &[]);
        assert_eq!(r.status, 2, "method {code}: {}", r.stdout);
        assert!(r.raw.is_empty() && Method::from_code(code).is_err());
    }
    // These work in send_nsca but have no matching Rust implementation: refused with a reason.
    for code in [10u8, 15, 16, 26] {
        let r = run(code, Some("pw"), b"h\ts\t0\tx\x17", &[]);
        assert_eq!(r.raw.len(), nsca::PACKET_LEN, "method {code}: {}", r.stdout);
        let err = Method::from_code(code).unwrap_err();
        assert!(!err.reason.is_empty());
    }
}
