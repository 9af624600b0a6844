//! ganglion's agent wire format.
//!
//! This crate owns the bytes that travel between an agent and a collector: the frame
//! layout, the MessagePack payloads inside frames, the HMAC-SHA256 authentication of
//! every frame and the rules for valid host, cluster and metric names. It does no I/O:
//! callers read bytes from a socket, hand them to [`frame::decode`] and act on the
//! result. `docs/PROTOCOL.md` is the byte-level description of the same thing.
//!
//! Layout:
//! - [`frame`]: frame header, length prefix, stream decoding, sealing and verifying.
//! - `io` (feature `tokio`): reading frames from an async stream.
//! - [`msg`]: the payloads (challenge, hello, batch, ack, error) and their encoding.
//! - [`name`]: the charset and length rules for names that end up in paths and logs.
//!
//! ```
//! use ganglion_proto::frame::{self, Kind};
//! let key = b"a shared cluster key";
//! let nonce = [7u8; 16];
//! let bytes = frame::seal(Kind::Ack, 1, &nonce, Some(key), b"payload");
//! let (f, used) = frame::decode(&bytes, frame::DEFAULT_MAX_FRAME_BYTES).unwrap().unwrap();
//! assert_eq!(used, bytes.len());
//! assert!(f.belongs_to(&nonce));
//! assert!(f.verify(key, &nonce).is_ok());
//! assert!(f.verify(b"another key", &nonce).is_err());
//! ```

pub mod frame;
#[cfg(feature = "tokio")]
pub mod io;
pub mod msg;
pub mod name;

/// Protocol version spoken by this build. A collector rejects frames of another version.
pub const PROTOCOL_VERSION: u8 = 2;
