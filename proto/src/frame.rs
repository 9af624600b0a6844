//! Frames: a length prefix, a fixed header and an authenticated payload.
//!
//! ```text
//! offset size field
//!      0    4 length of everything after this field (u32, big-endian)
//!      4    1 protocol version (2)
//!      5    1 kind (1 challenge, 2 hello, 3 batch, 4 ack, 5 error)
//!      6    4 counter (u32, big-endian): 0, 1, 2, ... per direction per connection
//!     10    4 session: the first 4 bytes of the nonce the collector chose for this connection
//!     14   16 tag: HMAC-SHA256 over version, kind, counter, the whole 16-byte nonce and
//!             the payload, cut to its first 16 bytes (zero in a challenge or an error)
//!     30    n payload (MessagePack)
//! ```
//!
//! The tag binds every frame to one connection (the nonce) and one position in it (the
//! counter), so a frame recorded on one connection is useless on any other and cannot be
//! played twice on the same one. The nonce itself travels once, in the challenge; frames
//! name their connection by its first 4 bytes only so that a receiver can tell a frame of
//! another connection (a replay) from a forged one. A tag of 128 bits is the truncation
//! RFC 2104 and RFC 4868 allow; the header is 26 bytes instead of 58, which matters
//! because a quiet host's batch is only a few dozen bytes more.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::PROTOCOL_VERSION;

type HmacSha256 = Hmac<Sha256>;

/// Bytes of the length prefix.
pub const PREFIX_LEN: usize = 4;
/// Bytes of the authentication tag.
pub const TAG_LEN: usize = 16;
/// Bytes of the header after the length prefix (version, kind, counter, session, tag).
pub const HEADER_LEN: usize = 1 + 1 + 4 + 4 + TAG_LEN;
/// Largest frame (length prefix excluded) a peer accepts unless configured otherwise.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 1024 * 1024;

/// The per-connection secret-free random value that every tag covers.
pub type Nonce = [u8; 16];

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Collector → agent, first frame of a connection: the session nonce. Not signed.
    Challenge = 1,
    /// Agent → collector: who is speaking, host facts and the metric table.
    Hello = 2,
    /// Agent → collector: one collection of samples with a sequence number.
    Batch = 3,
    /// Collector → agent: every batch up to this sequence number is accepted.
    Ack = 4,
    /// Collector → agent: why the connection is being closed.
    Error = 5,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Challenge,
            2 => Kind::Hello,
            3 => Kind::Batch,
            4 => Kind::Ack,
            5 => Kind::Error,
            _ => return None,
        })
    }
}

/// Why bytes are not a frame.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameError {
    /// More bytes are needed; not an error of the peer.
    #[error("incomplete frame")]
    Incomplete,
    /// The length prefix announces more than the receiver accepts.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    /// The length prefix is smaller than the fixed header.
    #[error("frame of {len} bytes is shorter than the {HEADER_LEN}-byte header")]
    TooShort { len: usize },
    /// The peer speaks another protocol version.
    #[error("unsupported protocol version {0}")]
    Version(u8),
    /// The kind byte names no known frame.
    #[error("unknown frame kind {0}")]
    Kind(u8),
}

/// Why a frame's tag does not hold.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthError {
    /// The frame names another connection's session: recorded elsewhere, or forged.
    #[error("frame belongs to another connection")]
    OtherSession,
    /// The tag does not match: wrong key, or bytes changed in flight.
    #[error("authentication tag does not match")]
    BadTag,
}

/// One decoded frame. The payload is not yet trusted: call [`Frame::verify`] first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: Kind,
    pub counter: u32,
    /// The first bytes of the nonce of the connection the frame was sealed for.
    pub session: [u8; 4],
    pub tag: [u8; TAG_LEN],
    pub payload: Vec<u8>,
}

impl Frame {
    /// Whether the frame names the connection whose nonce is `nonce`. A frame that does
    /// not was recorded elsewhere (or is forged); one that does must still be verified.
    pub fn belongs_to(&self, nonce: &Nonce) -> bool {
        self.session == session_of(nonce)
    }

    /// Checks that the frame names this connection ([`belongs_to`](Self::belongs_to))
    /// and its tag against `key` and the connection's `nonce`, in constant time.
    ///
    /// # Errors
    /// [`AuthError::OtherSession`] when the frame names another connection;
    /// [`AuthError::BadTag`] when it was not sealed with `key` for this connection, or
    /// was altered.
    pub fn verify(&self, key: &[u8], nonce: &Nonce) -> Result<(), AuthError> {
        if !self.belongs_to(nonce) {
            return Err(AuthError::OtherSession);
        }
        let mut mac = mac_over(key, self.kind, self.counter, nonce);
        mac.update(&self.payload);
        mac.verify_truncated_left(&self.tag).map_err(|_| AuthError::BadTag)
    }

    /// Encodes the frame again (length prefix included), keeping its tag as it is.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(PREFIX_LEN + HEADER_LEN + self.payload.len());
        write_header(&mut out, self.kind, self.counter, self.session, self.payload.len());
        out.extend_from_slice(&self.tag);
        out.extend_from_slice(&self.payload);
        out
    }
}

fn session_of(nonce: &Nonce) -> [u8; 4] {
    [nonce[0], nonce[1], nonce[2], nonce[3]]
}

fn mac_over(key: &[u8], kind: Kind, counter: u32, nonce: &Nonce) -> HmacSha256 {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(&[PROTOCOL_VERSION, kind as u8]);
    mac.update(&counter.to_be_bytes());
    mac.update(nonce);
    mac
}

fn write_header(out: &mut Vec<u8>, kind: Kind, counter: u32, session: [u8; 4], payload: usize) {
    let len = u32::try_from(HEADER_LEN + payload).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.push(PROTOCOL_VERSION);
    out.push(kind as u8);
    out.extend_from_slice(&counter.to_be_bytes());
    out.extend_from_slice(&session);
}

/// Builds a complete frame, length prefix included. Without a key the tag is zero
/// (only challenges and errors are sent that way).
pub fn seal(kind: Kind, counter: u32, nonce: &Nonce, key: Option<&[u8]>, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(PREFIX_LEN + HEADER_LEN + payload.len());
    write_header(&mut out, kind, counter, session_of(nonce), payload.len());
    match key {
        Some(key) => {
            let mut mac = mac_over(key, kind, counter, nonce);
            mac.update(payload);
            out.extend_from_slice(&mac.finalize().into_bytes()[..TAG_LEN]);
        }
        None => out.extend_from_slice(&[0u8; TAG_LEN]),
    }
    out.extend_from_slice(payload);
    out
}

/// Decodes the first frame in `buf`.
///
/// Returns the frame and the number of bytes it used, or `Ok(None)` when `buf` holds
/// only the start of a frame. The length prefix is checked against `max` before any
/// payload is buffered, so a peer cannot make the receiver allocate more than `max`.
///
/// # Errors
/// [`FrameError`] when the bytes cannot be a frame; the stream can no longer be trusted
/// after that and the connection should be closed.
pub fn decode(buf: &[u8], max: usize) -> Result<Option<(Frame, usize)>, FrameError> {
    let Some(prefix) = buf.get(..PREFIX_LEN) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
    check_len(len, max)?;
    if buf.len() >= PREFIX_LEN + 2 {
        // Reject a foreign stream as early as possible, before its body arrives.
        check_version_kind(buf[PREFIX_LEN], buf[PREFIX_LEN + 1])?;
    }
    let Some(body) = buf.get(PREFIX_LEN..PREFIX_LEN + len) else {
        return Ok(None);
    };
    let kind = check_version_kind(body[0], body[1])?;
    let counter = u32::from_be_bytes([body[2], body[3], body[4], body[5]]);
    let session = [body[6], body[7], body[8], body[9]];
    let mut tag = [0u8; TAG_LEN];
    tag.copy_from_slice(&body[10..HEADER_LEN]);
    let frame = Frame { kind, counter, session, tag, payload: body[HEADER_LEN..].to_vec() };
    Ok(Some((frame, PREFIX_LEN + len)))
}

/// Checks a length prefix; exposed so readers can refuse before buffering.
///
/// # Errors
/// [`FrameError::TooShort`] or [`FrameError::TooLarge`].
pub fn check_len(len: usize, max: usize) -> Result<(), FrameError> {
    if len < HEADER_LEN {
        return Err(FrameError::TooShort { len });
    }
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    Ok(())
}

fn check_version_kind(version: u8, kind: u8) -> Result<Kind, FrameError> {
    if version != PROTOCOL_VERSION {
        return Err(FrameError::Version(version));
    }
    Kind::from_u8(kind).ok_or(FrameError::Kind(kind))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rejects_frame_with_bad_tag() {
        let nonce = [1; 16];
        let bytes = seal(Kind::Batch, 3, &nonce, Some(b"right"), b"data");
        let (f, _) = decode(&bytes, DEFAULT_MAX_FRAME_BYTES).unwrap().unwrap();
        assert_eq!(f.verify(b"wrong", &nonce), Err(AuthError::BadTag));
        let mut changed = f.clone();
        changed.counter = 4;
        assert_eq!(changed.verify(b"right", &nonce), Err(AuthError::BadTag));
        let mut other = nonce;
        other[15] ^= 1;
        assert!(f.belongs_to(&other), "the session names the nonce's first bytes only");
        assert_eq!(f.verify(b"right", &other), Err(AuthError::BadTag), "the tag covers the whole nonce");
        other[0] ^= 1;
        assert!(!f.belongs_to(&other));
        assert_eq!(f.verify(b"right", &other), Err(AuthError::OtherSession));
        let mut changed = f.clone();
        changed.payload[0] ^= 1;
        assert_eq!(changed.verify(b"right", &nonce), Err(AuthError::BadTag));
        assert!(f.verify(b"right", &nonce).is_ok());
    }

    #[test]
    fn header_is_26_bytes_and_the_tag_is_hmac_sha256_cut_to_16() {
        let nonce = [9; 16];
        let bytes = seal(Kind::Ack, 0x0102_0304, &nonce, Some(b"k"), b"xyz");
        assert_eq!(bytes.len(), PREFIX_LEN + 26 + 3);
        assert_eq!(&bytes[..4], &(26u32 + 3).to_be_bytes());
        assert_eq!(&bytes[4..14], &[PROTOCOL_VERSION, 4, 1, 2, 3, 4, 9, 9, 9, 9]);
        let mut mac = HmacSha256::new_from_slice(b"k").unwrap();
        mac.update(&[PROTOCOL_VERSION, 4, 1, 2, 3, 4]);
        mac.update(&nonce);
        mac.update(b"xyz");
        assert_eq!(&bytes[14..30], &mac.finalize().into_bytes()[..16]);
        assert_eq!(&bytes[30..], b"xyz");
    }

    #[test]
    fn refuses_oversized_length_before_body_arrives() {
        let bytes = [0, 0x10, 0, 1, PROTOCOL_VERSION, 3];
        assert_eq!(
            decode(&bytes, DEFAULT_MAX_FRAME_BYTES),
            Err(FrameError::TooLarge { len: 0x10_0001, max: DEFAULT_MAX_FRAME_BYTES })
        );
        assert!(matches!(decode(&[0xff; 4], 1024), Err(FrameError::TooLarge { .. })));
        assert!(matches!(decode(&[0, 0, 0, 3], 1024), Err(FrameError::TooShort { len: 3 })));
    }

    #[test]
    fn rejects_unknown_version_and_kind() {
        let mut bytes = seal(Kind::Ack, 0, &[0; 16], Some(b"k"), b"");
        bytes[4] = 9;
        assert_eq!(decode(&bytes, 1024), Err(FrameError::Version(9)));
        bytes[4] = 1;
        assert_eq!(decode(&bytes, 1024), Err(FrameError::Version(1)), "version 1 frames are refused");
        bytes[4] = PROTOCOL_VERSION;
        bytes[5] = 77;
        assert_eq!(decode(&bytes, 1024), Err(FrameError::Kind(77)));
    }

    #[test]
    fn partial_input_is_incomplete_not_invalid() {
        let bytes = seal(Kind::Hello, 0, &[2; 16], Some(b"k"), b"0123456789");
        for cut in 0..bytes.len() {
            assert_eq!(decode(&bytes[..cut], 1024), Ok(None), "cut at {cut}");
        }
    }

    proptest! {
        #[test]
        fn round_trips(kind in 1u8..=5, counter: u32, nonce: [u8; 16],
                       key in proptest::collection::vec(any::<u8>(), 0..64),
                       payload in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let kind = Kind::from_u8(kind).unwrap();
            let bytes = seal(kind, counter, &nonce, Some(&key), &payload);
            let (f, used) = decode(&bytes, DEFAULT_MAX_FRAME_BYTES).unwrap().unwrap();
            prop_assert_eq!(used, bytes.len());
            prop_assert_eq!(f.kind, kind);
            prop_assert_eq!(f.counter, counter);
            prop_assert!(f.belongs_to(&nonce));
            prop_assert_eq!(&f.payload, &payload);
            prop_assert!(f.verify(&key, &nonce).is_ok());
            prop_assert_eq!(f.to_bytes(), bytes);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut rest: &[u8] = &bytes;
            while let Ok(Some((_, used))) = decode(rest, 4096) {
                rest = &rest[used..];
            }
        }
    }
}
