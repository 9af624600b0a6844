//! Reading frames from an async byte stream.

use tokio::io::{AsyncRead, AsyncReadExt};

use crate::frame::{self, Frame, FrameError};

/// Why no frame could be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("connection closed in the middle of a frame")]
    Truncated,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Bytes received and not yet cut into frames no larger than `max` bytes: the
/// buffering of [`FrameReader`], for callers that read the socket themselves.
pub struct FrameBuf {
    buf: Vec<u8>,
    start: usize,
    max: usize,
}

impl FrameBuf {
    pub fn new(max: usize) -> Self {
        FrameBuf { buf: Vec::with_capacity(8192), start: 0, max }
    }

    /// The next whole frame received, if there is one.
    ///
    /// # Errors
    /// [`FrameError`] when the bytes are not a frame; the stream cannot be trusted after.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        let Some((f, used)) = frame::decode(&self.buf[self.start..], self.max)? else {
            return Ok(None);
        };
        self.start += used;
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        Ok(Some(f))
    }

    /// Where received bytes go: append to it.
    pub fn buffer(&mut self) -> &mut Vec<u8> {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        &mut self.buf
    }

    /// No part of a frame is waiting for the rest.
    pub fn is_empty(&self) -> bool {
        self.start == self.buf.len()
    }
}

/// Buffers a stream and cuts it into frames no larger than `max` bytes.
pub struct FrameReader<R> {
    rd: R,
    frames: FrameBuf,
    /// Bytes read and not yet taken by [`FrameReader::take_bytes_read`].
    bytes_read: u64,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(rd: R, max: usize) -> Self {
        FrameReader { rd, frames: FrameBuf::new(max), bytes_read: 0 }
    }

    /// Bytes read from the stream since the last call, for traffic counters.
    pub fn take_bytes_read(&mut self) -> u64 {
        std::mem::take(&mut self.bytes_read)
    }

    /// Reads the next frame; `Ok(None)` when the peer closed the stream between frames.
    ///
    /// # Errors
    /// [`ReadError`] when the bytes are not a frame, the stream ends inside one, or the
    /// socket fails. The stream cannot be trusted after an error.
    pub async fn next(&mut self) -> Result<Option<Frame>, ReadError> {
        loop {
            if let Some(f) = self.frames.next_frame()? {
                return Ok(Some(f));
            }
            let n = self.rd.read_buf(self.frames.buffer()).await?;
            self.bytes_read += n as u64;
            if n == 0 {
                return if self.frames.is_empty() { Ok(None) } else { Err(ReadError::Truncated) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{seal, Kind};

    #[tokio::test]
    async fn reads_frames_split_across_reads() {
        let mut bytes = seal(Kind::Hello, 0, &[1; 16], Some(b"k"), b"hello");
        bytes.extend(seal(Kind::Batch, 1, &[1; 16], Some(b"k"), &[9; 3000]));
        let (mut a, b) = tokio::io::duplex(7);
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            a.write_all(&bytes).await.unwrap();
        });
        let mut r = FrameReader::new(b, 4096);
        assert_eq!(r.next().await.unwrap().unwrap().kind, Kind::Hello);
        assert_eq!(r.next().await.unwrap().unwrap().payload.len(), 3000);
        writer.await.unwrap();
        assert!(r.next().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn truncated_stream_is_an_error() {
        let bytes = seal(Kind::Hello, 0, &[1; 16], Some(b"k"), b"hello");
        let mut r = FrameReader::new(&bytes[..bytes.len() - 1], 4096);
        assert!(matches!(r.next().await, Err(ReadError::Truncated)));
    }
}
