//! One task per collector: connect, authenticate, send from the spool, read acks.
//!
//! A session is: the collector's challenge (its nonce), our hello, then batches sent
//! from the first batch this collector has not acknowledged, at most [`WINDOW`] ahead
//! of its acks. Acks release batches in the spool. Any failure ends the session; the
//! task waits with exponential backoff and jitter and starts a new one, which resumes
//! from the collector's acknowledged position, so nothing is skipped or sent twice
//! unless a collector died before its ack reached us.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use ganglion_proto::frame::{self, Kind};
use ganglion_proto::io::{FrameReader, ReadError};
use ganglion_proto::msg::{self, Ack, Batch, Challenge, Hello, Refusal};
use rand::Rng;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::agent::Shared;

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
    let (rd, mut wr) = stream.into_split();
    let mut reader = FrameReader::new(rd, frame::DEFAULT_MAX_FRAME_BYTES);
    let key = shared.config.key.as_slice();

    let first = tokio::time::timeout(CONNECT_TIMEOUT, reader.next())
        .await
        .map_err(|_| SendError::Idle(CONNECT_TIMEOUT))??
        .ok_or(SendError::Closed)?;
    if first.kind != Kind::Challenge {
        return Err(SendError::Protocol(format!("expected a challenge, got {:?}", first.kind)));
    }
    let challenge: Challenge = msg::decode(&first.payload).map_err(|e| SendError::Protocol(e.to_string()))?;
    let nonce = first.nonce;
    let max_frame = (challenge.max_frame_bytes as usize).min(frame::DEFAULT_MAX_FRAME_BYTES);

    let hello: Hello = shared.hello();
    let payload = msg::encode(&hello).map_err(|e| SendError::Protocol(e.to_string()))?;
    let bytes = frame::seal(Kind::Hello, 0, nonce, Some(key), &payload);
    wr.write_all(&bytes).await?;
    shared.stats.bytes_sent.fetch_add(bytes.len() as u64, Ordering::Relaxed);
    tracing::info!(collector = %addr, version = %challenge.collector, "Connected to collector.");

    let mut counter = 1u64;
    let mut recv_counter = 1u64;
    let mut latest = shared.latest.subscribe();
    let mut next = shared.resume_point(idx);
    // Values of the previous batch sent on this connection, by metric id: a batch only
    // carries what changed since then (PROTOCOL.md, "Batch").
    let mut sent: Vec<Option<f64>> = Vec::new();
    loop {
        // Send what the window allows.
        while let Some((seq, payload)) = shared.next_to_send(idx, &mut next) {
            let payload = match msg::decode::<Batch>(&payload).and_then(|b| msg::encode(&b.delta_against(&mut sent))) {
                Ok(p) => p,
                Err(e) => {
                    // The spool holds only batches this process encoded.
                    tracing::error!(seq, error = %e, "Spooled batch does not decode; skipping it.");
                    continue;
                }
            };
            let bytes = frame::seal(Kind::Batch, counter, nonce, Some(key), &payload);
            if bytes.len() > max_frame + frame::PREFIX_LEN {
                tracing::error!(seq, bytes = bytes.len(), "Batch larger than the collector accepts; dropping it.");
                shared.stats.oversized.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            counter += 1;
            wr.write_all(&bytes).await?;
            shared.stats.bytes_sent.fetch_add(bytes.len() as u64, Ordering::Relaxed);
            shared.stats.batches_sent.fetch_add(1, Ordering::Relaxed);
        }
        tokio::select! {
            f = tokio::time::timeout(IDLE_TIMEOUT, reader.next()) => {
                let f = f.map_err(|_| SendError::Idle(IDLE_TIMEOUT))??.ok_or(SendError::Closed)?;
                if f.kind == Kind::Error {
                    // A refusal may come before the collector knows our key (unknown
                    // cluster), so it is not signed: it only explains the close.
                    let r: Refusal = msg::decode(&f.payload).map_err(|e| SendError::Protocol(e.to_string()))?;
                    return Err(SendError::Refused { reason: r.reason, message: r.message });
                }
                if f.verify(key).is_err() || f.nonce != nonce {
                    return Err(SendError::Protocol("collector frame failed authentication".into()));
                }
                if f.counter != recv_counter {
                    return Err(SendError::Protocol(format!("collector frame counter {} where {recv_counter} was due", f.counter)));
                }
                recv_counter += 1;
                match f.kind {
                    Kind::Ack => {
                        let ack: Ack = msg::decode(&f.payload).map_err(|e| SendError::Protocol(e.to_string()))?;
                        if ack.run == shared.run {
                            shared.ack(idx, ack.seq);
                        }
                    }
                    k => return Err(SendError::Protocol(format!("unexpected {k:?} frame"))),
                }
            }
            r = latest.changed() => {
                if r.is_err() {
                    return Ok(());
                }
            }
            () = shutdown.cancelled() => {
                // Give the collector a moment to ack what is in flight, then leave.
                let _ = wr.shutdown().await;
                return Ok(());
            }
        }
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
    let first = next_frame(&mut reader).await?;
    if first.kind != Kind::Challenge {
        return Err(SendError::Protocol(format!("expected a challenge, got {:?}", first.kind)));
    }
    let nonce = first.nonce;
    wr.write_all(&frame::seal(Kind::Hello, 0, nonce, Some(key), &msg::encode(hello).map_err(protocol)?)).await?;
    wr.write_all(&frame::seal(Kind::Batch, 1, nonce, Some(key), &msg::encode(batch).map_err(protocol)?)).await?;
    let f = next_frame(&mut reader).await?;
    if f.kind == Kind::Error {
        let r: Refusal = msg::decode(&f.payload).map_err(protocol)?;
        return Err(SendError::Refused { reason: r.reason, message: r.message });
    }
    if f.kind != Kind::Ack || f.verify(key).is_err() || f.nonce != nonce {
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
