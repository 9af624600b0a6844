//! One task per collector: connect, authenticate, send from the spool, read acks.
//!
//! A session is: the collector's challenge (its nonce), our hello, then batches sent
//! from the first batch this collector has not acknowledged, at most [`WINDOW`] ahead
//! of its acks. Acks release batches in the spool. A collector acks only the batches
//! that ask for it (each ack covers everything before): the first of a session, one
//! at least every `ack_interval`, the last of a replay and one whenever half the window
//! is out. On a quiet host that is one ack a minute instead of one per batch, and an
//! ack with its TCP segments was as many bytes on the wire as a batch.
//!
//! Any failure ends the session; the task waits with exponential backoff and jitter
//! and starts a new one, which resumes from the collector's acknowledged position: no
//! batch is skipped, and those sent but not yet acknowledged are sent again (a
//! collector that still knows the run counts them as duplicates and keeps one copy).

use std::io::{Read, Write};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ganglion_proto::frame::{self, Frame, Kind, Nonce};
use ganglion_proto::io::{FrameBuf, FrameReader, ReadError};
use ganglion_proto::msg::{self, Ack, Batch, Challenge, Hello, Previous, Refusal};
use rand::Rng;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::agent::{Shared, ToSend};

/// Batches sent ahead of the collector's acks.
pub const WINDOW: u64 = 64;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A collector that neither acks nor sends anything for this long is considered gone.
const IDLE_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("connect: {0}")]
    Connect(std::io::Error),
    #[error("connect timed out")]
    ConnectTimeout,
    #[error("collector closed the connection")]
    Closed,
    #[error("collector refused: {reason}: {message}")]
    Refused { reason: String, message: String },
    #[error("protocol: {0}")]
    Protocol(String),
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("no frame from the collector for {0:?}")]
    Idle(Duration),
}

/// Keeps one collector supplied until `shutdown`.
pub(crate) async fn run(idx: usize, addr: String, shared: Arc<Shared>, shutdown: CancellationToken) {
    let mut backoff = Duration::from_millis(500);
    let max = shared.config.reconnect_max;
    loop {
        let started_at = shared.spool_acked(idx);
        let result = tokio::select! {
            r = session(idx, &addr, &shared, &shutdown) => r,
            () = shutdown.cancelled() => return,
        };
        match result {
            Ok(()) => return,
            Err(e) => {
                shared.stats.session_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(collector = %addr, error = %e, "Collector session ended; will reconnect.");
            }
        }
        if shared.spool_acked(idx) > started_at {
            backoff = Duration::from_millis(500);
        }
        let jitter = rand::thread_rng().gen_range(0.5..1.5);
        let wait = backoff.mul_f64(jitter).min(max);
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = shutdown.cancelled() => return,
        }
        backoff = (backoff * 2).min(max);
    }
}

async fn session(idx: usize, addr: &str, shared: &Arc<Shared>, shutdown: &CancellationToken) -> Result<(), SendError> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| SendError::ConnectTimeout)?
        .map_err(SendError::Connect)?;
    stream.set_nodelay(true)?;
    let mut conn = Conn::new(stream, frame::DEFAULT_MAX_FRAME_BYTES);
    let key = shared.config.key.as_slice();

    let first = tokio::time::timeout(CONNECT_TIMEOUT, conn.next_frame())
        .await
        .map_err(|_| SendError::Idle(CONNECT_TIMEOUT))??
        .ok_or(SendError::Closed)?;
    let challenge = challenge(&first)?;
    let nonce = challenge.nonce;
    let max_frame = (challenge.max_frame_bytes as usize).min(frame::DEFAULT_MAX_FRAME_BYTES);

    let hello: Hello = shared.hello();
    let payload = msg::encode(&hello).map_err(|e| SendError::Protocol(e.to_string()))?;
    let bytes = frame::seal(Kind::Hello, 0, &nonce, Some(key), &payload);
    conn.write_all(&bytes).await?;
    shared.stats.bytes_sent.fetch_add(bytes.len() as u64, Ordering::Relaxed);
    tracing::info!(collector = %addr, version = %challenge.collector, "Connected to collector.");

    let mut acks = Acks { idx, key, nonce, recv_counter: 1, last_frame: Instant::now() };
    let mut counter = 1u32;
    let mut latest = shared.latest.subscribe();
    let mut next = shared.resume_point(idx);
    // The previous batch sent on this connection: a batch only carries what changed
    // since then (PROTOCOL.md, "Batch").
    let mut sent = Previous::default();
    let ack_every = shared.config.ack_interval;
    // When we last asked for an ack; `None` asks with the session's first batch.
    let mut asked_at: Option<Instant> = None;
    // A collector that owes an ack has this long to send it (acks come at least every
    // `ack_every`, read at the next batch).
    let idle = IDLE_TIMEOUT.max(2 * (ack_every + shared.config.interval));
    loop {
        // Acks that came in since the last look, without waiting for any.
        while let Some(f) = conn.try_frame()? {
            acks.take(shared, f)?;
        }
        // Send what the window allows.
        let mut burst = 0u32;
        while let Some(ToSend { seq, payload, acked, last_for_now }) = shared.next_to_send(idx, &mut next) {
            let mut batch = match msg::decode::<Batch>(&payload) {
                Ok(b) => b,
                Err(e) => {
                    // The spool holds only batches this process encoded.
                    tracing::error!(seq, error = %e, "Spooled batch does not decode; skipping it.");
                    continue;
                }
            };
            burst += 1;
            batch.ack =
                wants_ack(seq.saturating_sub(acked), last_for_now, burst, asked_at.map(|t| t.elapsed()), ack_every);
            let payload = match msg::encode(&sent.delta(&batch)) {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(seq, error = %e, "Could not encode a batch; skipping it.");
                    continue;
                }
            };
            let bytes = frame::seal(Kind::Batch, counter, &nonce, Some(key), &payload);
            if bytes.len() > max_frame + frame::PREFIX_LEN {
                tracing::error!(seq, bytes = bytes.len(), "Batch larger than the collector accepts; dropping it.");
                shared.stats.oversized.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            // A counter may not repeat on a connection; a new connection starts at 0.
            counter = counter.checked_add(1).ok_or_else(|| SendError::Protocol("frame counter exhausted".into()))?;
            sent.remember(&batch);
            if batch.ack {
                asked_at = Some(Instant::now());
            }
            conn.write_all(&bytes).await?;
            shared.stats.bytes_sent.fetch_add(bytes.len() as u64, Ordering::Relaxed);
            shared.stats.batches_sent.fetch_add(1, Ordering::Relaxed);
        }
        let unacked = shared.spool_acked(idx) + 1 < next;
        if unacked && acks.last_frame.elapsed() > idle {
            return Err(SendError::Idle(idle));
        }
        // With batches the window holds back, the acks are what we wait for. Caught up,
        // the next batch is: its ack is read when that batch goes out, so an ack does
        // not wake the agent in between (one wake-up per interval, not two).
        let backlog = shared.has_unsent(next);
        if !backlog {
            conn.quiet()?;
        }
        tokio::select! {
            f = tokio::time::timeout(idle, conn.next_frame()), if backlog => {
                let f = f.map_err(|_| SendError::Idle(idle))??.ok_or(SendError::Closed)?;
                acks.take(shared, f)?;
            }
            r = latest.changed() => {
                if r.is_err() {
                    return Ok(());
                }
            }
            () = shutdown.cancelled() => {
                // Let the collector ack what is in flight as it closes; we leave.
                conn.shutdown();
                return Ok(());
            }
        }
    }
}

/// The collector's first frame of a connection, which must be its challenge.
fn challenge(first: &Frame) -> Result<Challenge, SendError> {
    if first.kind != Kind::Challenge {
        return Err(SendError::Protocol(format!("expected a challenge, got {:?}", first.kind)));
    }
    msg::decode(&first.payload).map_err(|e| SendError::Protocol(e.to_string()))
}

/// Whether a batch asks the collector for an ack. `out` counts the batches sent and not
/// acknowledged, this one included; `last_for_now` is true when nothing else can be
/// sent after it until more is collected or acked; `burst` counts the batches sent in
/// a row with it; `since_asked` is how long ago an ack was last asked for on this
/// connection (`None`: never).
fn wants_ack(out: u64, last_for_now: bool, burst: u32, since_asked: Option<Duration>, ack_every: Duration) -> bool {
    // Half the window out: ask now, so the window never stalls waiting for an ack.
    out >= WINDOW / 2
        // A replay or catch-up ends: let the spool go.
        || (last_for_now && burst > 1)
        // The session's first batch, then at least every `ack_every`.
        || (last_for_now && since_asked.is_none_or(|t| t >= ack_every))
}

/// The collector's side of a session: acks, or a refusal that explains a close.
struct Acks<'a> {
    idx: usize,
    key: &'a [u8],
    nonce: Nonce,
    recv_counter: u32,
    last_frame: Instant,
}

impl Acks<'_> {
    fn take(&mut self, shared: &Shared, f: Frame) -> Result<(), SendError> {
        if f.kind == Kind::Error {
            // A refusal may come before the collector knows our key (unknown
            // cluster), so it is not signed: it only explains the close.
            let r: Refusal = msg::decode(&f.payload).map_err(|e| SendError::Protocol(e.to_string()))?;
            return Err(SendError::Refused { reason: r.reason, message: r.message });
        }
        if f.verify(self.key, &self.nonce).is_err() {
            return Err(SendError::Protocol("collector frame failed authentication".into()));
        }
        if f.counter != self.recv_counter {
            return Err(SendError::Protocol(format!(
                "collector frame counter {} where {} was due",
                f.counter, self.recv_counter
            )));
        }
        self.recv_counter = self.recv_counter.wrapping_add(1);
        self.last_frame = Instant::now();
        match f.kind {
            Kind::Ack => {
                let ack: Ack = msg::decode(&f.payload).map_err(|e| SendError::Protocol(e.to_string()))?;
                if ack.run == shared.run {
                    shared.ack(self.idx, ack.seq);
                }
                Ok(())
            }
            k => Err(SendError::Protocol(format!("unexpected {k:?} frame"))),
        }
    }
}

/// A collector connection, registered with the runtime only while the session waits on
/// it.
///
/// Caught up, the session waits for the next batch, not for the collector: were the
/// socket registered, the ack of the batch just sent would wake the agent only to be
/// buffered, and on a quiet host that wake-up costs about as much as a collection's
/// `/proc` reads. So between batches the socket is a plain non-blocking one that
/// nothing watches; acks wait in it and are read before the next batch goes out. It is
/// registered again to wait for acks (window full) or for room to write.
struct Conn {
    socket: Socket,
    frames: FrameBuf,
    /// The collector closed its side.
    closed: bool,
}

enum Socket {
    Watched(TcpStream),
    Quiet(std::net::TcpStream),
    /// Only while switching between the two.
    Moving,
}

impl Conn {
    fn new(stream: TcpStream, max: usize) -> Conn {
        Conn { socket: Socket::Watched(stream), frames: FrameBuf::new(max), closed: false }
    }

    fn watched(&mut self) -> std::io::Result<&TcpStream> {
        self.socket = match std::mem::replace(&mut self.socket, Socket::Moving) {
            Socket::Quiet(s) => Socket::Watched(TcpStream::from_std(s)?),
            held => held,
        };
        match &self.socket {
            Socket::Watched(s) => Ok(s),
            _ => Err(std::io::Error::other("connection lost while re-registering")),
        }
    }

    /// Stops watching the socket (see the type's doc).
    fn quiet(&mut self) -> std::io::Result<()> {
        self.socket = match std::mem::replace(&mut self.socket, Socket::Moving) {
            Socket::Watched(s) => Socket::Quiet(s.into_std()?),
            held => held,
        };
        Ok(())
    }

    /// Closes our direction; the collector still acks what is in flight as it closes.
    fn shutdown(&mut self) {
        if self.quiet().is_ok() {
            if let Socket::Quiet(s) = &self.socket {
                let _ = s.shutdown(std::net::Shutdown::Write);
            }
        }
    }

    /// A non-blocking read, whichever way the socket is held.
    fn read_now(&self, chunk: &mut [u8]) -> std::io::Result<usize> {
        match &self.socket {
            Socket::Watched(s) => s.try_read(chunk),
            Socket::Quiet(s) => (&mut &*s).read(chunk),
            Socket::Moving => Err(std::io::Error::other("connection lost while re-registering")),
        }
    }

    /// A non-blocking write, whichever way the socket is held.
    fn write_now(&self, bytes: &[u8]) -> std::io::Result<usize> {
        match &self.socket {
            Socket::Watched(s) => s.try_write(bytes),
            Socket::Quiet(s) => (&mut &*s).write(bytes),
            Socket::Moving => Err(std::io::Error::other("connection lost while re-registering")),
        }
    }

    /// The next whole frame already buffered or readable without waiting.
    fn try_frame(&mut self) -> Result<Option<Frame>, SendError> {
        loop {
            if let Some(f) = self.buffered()? {
                return Ok(Some(f));
            }
            let mut chunk = [0u8; 4096];
            match self.read_now(&mut chunk) {
                Ok(n) => self.append(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Waits for the next frame; `Ok(None)` when the collector closed between frames.
    async fn next_frame(&mut self) -> Result<Option<Frame>, SendError> {
        loop {
            match self.buffered() {
                Ok(Some(f)) => return Ok(Some(f)),
                Ok(None) => {}
                Err(SendError::Closed) => return Ok(None),
                Err(e) => return Err(e),
            }
            let mut chunk = [0u8; 4096];
            let stream = self.watched()?;
            stream.readable().await?;
            match stream.try_read(&mut chunk) {
                Ok(n) => self.append(&chunk[..n]),
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// A whole frame from the buffer; [`SendError::Closed`] once the stream ended
    /// between frames.
    fn buffered(&mut self) -> Result<Option<Frame>, SendError> {
        if let Some(f) = self.frames.next_frame().map_err(ReadError::from)? {
            return Ok(Some(f));
        }
        if self.closed {
            return Err(if self.frames.is_empty() { SendError::Closed } else { ReadError::Truncated.into() });
        }
        Ok(None)
    }

    /// Bytes read from the socket; none means the collector closed its side.
    fn append(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            self.closed = true;
        } else {
            self.frames.buffer().extend_from_slice(bytes);
        }
    }

    async fn write_all(&mut self, mut bytes: &[u8]) -> std::io::Result<()> {
        while !bytes.is_empty() {
            match self.write_now(bytes) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => bytes = &bytes[n..],
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                // The socket buffer is full: wait for room, watched.
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => self.watched()?.writable().await?,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// A one-shot session, for `ganglion-agent send --direct`: challenge, `hello`, one
/// batch, its ack, close. The batch's metrics must be in the hello's table.
///
/// # Errors
/// [`SendError`] for any failure, including no ack within the connect timeout.
pub async fn one_shot(addr: &str, key: &[u8], hello: &Hello, batch: &Batch) -> Result<(), SendError> {
    let protocol = |e: msg::PayloadError| SendError::Protocol(e.to_string());
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| SendError::ConnectTimeout)?
        .map_err(SendError::Connect)?;
    let (rd, mut wr) = stream.into_split();
    let mut reader = FrameReader::new(rd, frame::DEFAULT_MAX_FRAME_BYTES);
    let nonce = challenge(&next_frame(&mut reader).await?)?.nonce;
    let batch = Batch { ack: true, ..batch.clone() };
    wr.write_all(&frame::seal(Kind::Hello, 0, &nonce, Some(key), &msg::encode(hello).map_err(protocol)?)).await?;
    wr.write_all(&frame::seal(Kind::Batch, 1, &nonce, Some(key), &msg::encode(&batch).map_err(protocol)?)).await?;
    let f = next_frame(&mut reader).await?;
    if f.kind == Kind::Error {
        let r: Refusal = msg::decode(&f.payload).map_err(protocol)?;
        return Err(SendError::Refused { reason: r.reason, message: r.message });
    }
    if f.kind != Kind::Ack || f.verify(key, &nonce).is_err() {
        return Err(SendError::Protocol("no authentic ack from the collector".into()));
    }
    let ack: Ack = msg::decode(&f.payload).map_err(protocol)?;
    if (ack.run, ack.seq) != (batch.run, batch.seq) {
        return Err(SendError::Protocol(format!("ack for {}/{}, not for our batch", ack.run, ack.seq)));
    }
    let _ = wr.shutdown().await;
    Ok(())
}

async fn next_frame(
    reader: &mut FrameReader<tokio::net::tcp::OwnedReadHalf>,
) -> Result<ganglion_proto::frame::Frame, SendError> {
    tokio::time::timeout(CONNECT_TIMEOUT, reader.next())
        .await
        .map_err(|_| SendError::Idle(CONNECT_TIMEOUT))??
        .ok_or(SendError::Closed)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn pair() -> (Conn, tokio::net::TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (ours, theirs) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (Conn::new(ours.unwrap(), 4096), theirs.unwrap().0)
    }

    #[test]
    fn asks_for_acks_once_a_minute_at_the_end_of_a_replay_and_at_half_window() {
        let minute = Duration::from_secs(60);
        let ago = |s| Some(Duration::from_secs(s));
        assert!(wants_ack(1, true, 1, None, minute), "a session's first batch asks");
        assert!(!wants_ack(2, true, 1, ago(15), minute), "a quiet host's next batches do not");
        assert!(!wants_ack(4, true, 1, ago(45), minute));
        assert!(wants_ack(5, true, 1, ago(60), minute), "a minute later one does");
        assert!(!wants_ack(3, false, 2, ago(60), minute), "not in the middle of a replay");
        assert!(wants_ack(9, true, 9, ago(1), minute), "the replay's last batch does");
        assert!(wants_ack(WINDOW / 2, false, 1, ago(1), minute), "half the window out does");
        assert!(wants_ack(1, true, 1, ago(0), Duration::ZERO), "ack_interval_secs = 0: every batch");
    }

    #[tokio::test]
    async fn a_quiet_connection_hands_over_what_arrived_while_nobody_watched() {
        let (mut conn, mut collector) = pair().await;
        conn.quiet().unwrap();
        assert!(conn.try_frame().unwrap().is_none(), "nothing arrived yet");
        let mut bytes = frame::seal(Kind::Ack, 1, &[7; 16], Some(b"k"), b"one");
        bytes.extend(frame::seal(Kind::Ack, 2, &[7; 16], Some(b"k"), b"two"));
        let third = frame::seal(Kind::Ack, 3, &[7; 16], Some(b"k"), b"three");
        bytes.extend(&third[..10]);
        collector.write_all(&bytes).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(conn.try_frame().unwrap().unwrap().payload, b"one");
        assert_eq!(conn.try_frame().unwrap().unwrap().payload, b"two");
        assert!(conn.try_frame().unwrap().is_none(), "half a frame waits for the rest");

        // Waiting registers the socket again and finishes the frame.
        let rest = third[10..].to_vec();
        let writer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            collector.write_all(&rest).await.unwrap();
            collector
        });
        let f = tokio::time::timeout(Duration::from_secs(5), conn.next_frame()).await.unwrap().unwrap().unwrap();
        assert_eq!(f.payload, b"three");
        conn.quiet().unwrap();
        conn.write_all(b"still writable").await.unwrap();

        // A collector gone while the socket was quiet is noticed at the next look.
        let mut collector = writer.await.unwrap();
        let mut got = [0u8; 14];
        tokio::io::AsyncReadExt::read_exact(&mut collector, &mut got).await.unwrap();
        drop(collector);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(matches!(conn.try_frame(), Err(SendError::Closed)));
    }

    #[tokio::test]
    async fn a_collector_that_closes_inside_a_frame_is_a_truncated_stream() {
        let (mut conn, mut collector) = pair().await;
        let f = frame::seal(Kind::Ack, 1, &[7; 16], Some(b"k"), b"cut");
        collector.write_all(&f[..f.len() - 1]).await.unwrap();
        drop(collector);
        let r = tokio::time::timeout(Duration::from_secs(5), conn.next_frame()).await.unwrap();
        assert!(matches!(r, Err(SendError::Read(ReadError::Truncated))), "{r:?}");
    }
}
