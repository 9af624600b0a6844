//! The NSCA listener: accepts passive check results from the real `send_nsca` (NSCA 2.x,
//! research/nsca.md) and hands them to the checks engine.
//!
//! It owns the sockets and the per-connection flow: send the init packet (128 bytes of
//! IV from the OS and the listener's time), feed what arrives to a
//! `ganglion_checks::nsca::Session` (which decrypts, checks version, CRC, the init
//! timestamp and `max_packet_age`), and pass each read's decoded results to the engine in
//! one batch. The codec itself lives in `ganglion-checks`.
//!
//! Nothing is ever sent back after the init packet, as in NSCA. A bad packet (garbage, a
//! wrong password or method, a bad CRC, a replayed or stale timestamp, a truncated packet)
//! or a peer idle for [`READ_TIMEOUT`] ends only its own connection: the CFB cipher stream
//! cannot be resynchronised anyway. Each such end is counted by reason under `nsca` in
//! `/api/v1/health` and logged once. Results the engine refuses (unknown host or service)
//! are counted and logged by the engine.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ganglion_checks::nsca::{self as codec, DecodeError, Invalid, Session};
use rand::RngCore;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::engine::{EngineHandle, PassiveResult};

/// Longest wait for the next bytes of a packet, as real nsca's hard-coded socket timeout.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long connections may take to finish after shutdown before they are aborted.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Bytes read at most per read call: a few dozen packets, decoded and submitted together.
const READ_CHUNK: usize = 32 * codec::PACKET_LEN;

/// The `[nsca]` section, checked.
#[derive(Debug, Clone)]
pub struct NscaConfig {
    pub listen: SocketAddr,
    /// Method, password and `max_packet_age` for every connection of this listener.
    pub codec: codec::Config,
    /// Connections served at once; more wait in the kernel's backlog.
    pub max_connections: usize,
}

/// Why a connection was ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Packet version is not 3 after decryption: garbage, or a wrong password or method.
    Version,
    /// CRC32 mismatch: a wrong password or method, or corruption.
    Crc,
    /// The packet does not carry this connection's init timestamp (replayed or forged).
    Timestamp,
    /// The connection is older than `max_packet_age`.
    TooOld,
    /// The peer closed in the middle of a packet.
    Truncated,
    /// Nothing arrived for [`READ_TIMEOUT`].
    Idle,
}

impl Reason {
    pub const ALL: [Reason; 6] =
        [Reason::Version, Reason::Crc, Reason::Timestamp, Reason::TooOld, Reason::Truncated, Reason::Idle];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Version => "version",
            Reason::Crc => "crc",
            Reason::Timestamp => "timestamp",
            Reason::TooOld => "too_old",
            Reason::Truncated => "truncated",
            Reason::Idle => "idle",
        }
    }

    fn of(invalid: &Invalid) -> Reason {
        match invalid {
            Invalid::Crc { .. } => Reason::Crc,
            Invalid::Timestamp { .. } => Reason::Timestamp,
            Invalid::TooOld { .. } => Reason::TooOld,
            Invalid::Truncated { .. } => Reason::Truncated,
            // Version, and anything a later codec adds: the packet is not what it should be.
            _ => Reason::Version,
        }
    }
}

/// Counters of the listener, shown under `nsca` in `/api/v1/health`.
#[derive(Debug, Default)]
pub struct NscaStats {
    /// Whether a listener is running.
    pub listening: std::sync::atomic::AtomicBool,
    pub connections: AtomicU64,
    /// Packets decoded and handed to the engine.
    pub received: AtomicU64,
    rejected: [AtomicU64; Reason::ALL.len()],
}

impl NscaStats {
    /// The one place a connection is rejected: counted by reason, logged once.
    fn reject(&self, peer: SocketAddr, reason: Reason, detail: &dyn std::fmt::Display) {
        self.rejected[reason as usize].fetch_add(1, Ordering::Relaxed);
        tracing::warn!(%peer, reason = reason.as_str(), error = %detail, "Rejected NSCA connection.");
    }

    pub fn rejected(&self, reason: Reason) -> u64 {
        self.rejected[reason as usize].load(Ordering::Relaxed)
    }

    /// The health section.
    pub fn to_json(&self) -> serde_json::Value {
        let mut rejected = serde_json::Map::new();
        let mut total = 0;
        for r in Reason::ALL {
            let n = self.rejected(r);
            total += n;
            rejected.insert(r.as_str().to_owned(), n.into());
        }
        json!({
            "listening": self.listening.load(Ordering::Relaxed),
            "connections": self.connections.load(Ordering::Relaxed),
            "received": self.received.load(Ordering::Relaxed),
            "rejected": rejected,
            "rejected_total": total,
        })
    }
}

/// What the listener needs.
pub struct NscaContext {
    pub engine: EngineHandle,
    pub config: NscaConfig,
}

/// Serves NSCA on `listener` until `shutdown`; the caller binds.
///
/// # Errors
/// None so far: a bad peer ends its connection, and failing accepts (out of file
/// descriptors) are retried with backoff. The signature matches the other listeners.
pub async fn serve(listener: TcpListener, ctx: Arc<NscaContext>, shutdown: CancellationToken) -> std::io::Result<()> {
    let stats = ctx.engine.nsca_stats().clone();
    stats.listening.store(true, Ordering::Relaxed);
    let permits = Arc::new(Semaphore::new(ctx.config.max_connections.max(1)));
    let mut conns = JoinSet::new();
    let mut backoff = Duration::from_millis(5);
    loop {
        while conns.try_join_next().is_some() {}
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => p.expect("the connection semaphore is never closed"),
            () = shutdown.cancelled() => break,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => {
                    backoff = Duration::from_millis(5);
                    x
                }
                Err(e) => {
                    // Out of file descriptors and the like: wait and try again.
                    tracing::warn!(error = %e, "Accepting an NSCA connection failed; backing off.");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        stats.connections.fetch_add(1, Ordering::Relaxed);
        let ctx = ctx.clone();
        let token = shutdown.clone();
        conns.spawn(
            async move {
                connection(stream, peer, &ctx, &token).await;
                drop(permit);
            }
            .instrument(tracing::info_span!("nsca", %peer)),
        );
    }
    stats.listening.store(false, Ordering::Relaxed);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async { while conns.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        conns.abort_all();
    }
    Ok(())
}

fn to_result(p: codec::Packet, now: i64) -> PassiveResult {
    PassiveResult { host: p.host, service: p.service, code: i64::from(p.return_code), output: p.output, time: now }
}

async fn connection(mut stream: TcpStream, peer: SocketAddr, ctx: &NscaContext, shutdown: &CancellationToken) {
    let stats = ctx.engine.nsca_stats();
    let _ = stream.set_nodelay(true);
    let mut iv = [0u8; codec::IV_LEN];
    // Real nsca seeds rand() with one byte, giving 256 possible IVs; these come from the OS.
    rand::rngs::OsRng.fill_bytes(&mut iv);
    let init_time = crate::engine::now_secs();
    let init_ts = u32::try_from(init_time).unwrap_or(u32::MAX);
    let init = codec::init_packet(&iv, init_ts);
    match tokio::time::timeout(READ_TIMEOUT, stream.write_all(&init)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "NSCA peer left before the init packet.");
            return;
        }
        Err(_) => {
            stats.reject(peer, Reason::Idle, &"the peer did not take the init packet");
            return;
        }
    }
    let mut session = Session::new(ctx.config.codec.clone(), iv, init_ts);
    let mut buf: Vec<u8> = Vec::with_capacity(READ_CHUNK + codec::PACKET_LEN);
    loop {
        buf.reserve(READ_CHUNK);
        let read = tokio::select! {
            r = tokio::time::timeout(READ_TIMEOUT, stream.read_buf(&mut buf)) => r,
            () = shutdown.cancelled() => return,
        };
        let n = match read {
            Ok(Ok(n)) => n,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "NSCA connection failed.");
                return;
            }
            Err(_) => {
                stats.reject(peer, Reason::Idle, &format_args!("nothing received for {} s", READ_TIMEOUT.as_secs()));
                return;
            }
        };
        let now = crate::engine::now_secs();
        let mut results = Vec::new();
        let mut pos = 0;
        let mut failed = None;
        if n == 0 {
            match session.decode_at_eof(&buf, now) {
                Ok(Some(p)) => results.push(to_result(p, now)),
                Ok(None) => {}
                Err(e) => failed = Some(e),
            }
        } else {
            loop {
                match session.decode(&buf[pos..], now) {
                    Ok((p, used)) => {
                        pos += used;
                        results.push(to_result(p, now));
                    }
                    Err(DecodeError::Incomplete { .. }) => break,
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            buf.drain(..pos);
        }
        if !results.is_empty() {
            stats.received.fetch_add(results.len() as u64, Ordering::Relaxed);
            // Good packets before a bad one are kept, as real nsca writes them before
            // it closes the connection.
            if ctx.engine.submit_nowait(results).await.is_err() {
                return;
            }
        }
        match failed {
            Some(DecodeError::Invalid { reason }) => {
                stats.reject(peer, Reason::of(&reason), &reason);
                return;
            }
            Some(e) => {
                stats.reject(peer, Reason::Version, &e);
                return;
            }
            None if n == 0 => return,
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ganglion_checks::nsca::{Encoder, Method};

    #[test]
    fn reasons_map_each_invalid_packet() {
        assert_eq!(Reason::of(&Invalid::Version(2)), Reason::Version);
        assert_eq!(Reason::of(&Invalid::Crc { sent: 1, computed: 2 }), Reason::Crc);
        assert_eq!(Reason::of(&Invalid::Timestamp { packet: 1, init: 2 }), Reason::Timestamp);
        assert_eq!(Reason::of(&Invalid::TooOld { age_secs: 40, max_secs: 30 }), Reason::TooOld);
        assert_eq!(Reason::of(&Invalid::Truncated { len: 5 }), Reason::Truncated);
        let s = NscaStats::default();
        s.reject("127.0.0.1:1".parse().unwrap(), Reason::Crc, &"x");
        let j = s.to_json();
        assert_eq!((j["rejected"]["crc"].as_u64(), j["rejected_total"].as_u64()), (Some(1), Some(1)));
    }

    #[test]
    fn check_config_refuses_methods_it_cannot_decode_with_the_reason() {
        let base = "[[cluster]]\nname = \"c\"\nkey = \"0123456789abcdef\"\n[nsca]\nlisten = \"127.0.0.1:5667\"\n";
        let err = crate::config::Config::parse(&format!("{base}method = 15\n"), "f").unwrap_err().to_string();
        assert!(err.contains("nsca.method: NSCA encryption method 15 is not supported: RIJNDAEL-192"), "{err}");
        let err = crate::config::Config::parse(&format!("{base}method = 99\n"), "f").unwrap_err().to_string();
        assert!(err.contains("not an NSCA encryption method"), "{err}");
        let c = crate::config::Config::parse(&format!("{base}method = 14\npassword = \"pw \"\n"), "f").unwrap();
        let n = c.nsca.unwrap();
        assert_eq!((n.codec.method, n.codec.password.as_slice()), (Method::Rijndael128, &b"pw "[..]));
        assert_eq!(n.codec.max_packet_age_secs, 30);
        let off = crate::config::Config::parse("[[cluster]]\nname = \"c\"\nkey = \"0123456789abcdef\"\n", "f").unwrap();
        assert!(off.nsca.is_none(), "no listener without [nsca] listen");
    }

    /// A client speaking the protocol as send_nsca does, against `serve` on loopback:
    /// good packets arrive, a wrong password ends only its own connection.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn serves_packets_and_drops_a_bad_connection_only() {
        let (engine, dir) = crate::engine::tests::engine_with_host("h1", &["svc"]).await;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let config = NscaConfig {
            listen: addr,
            codec: codec::Config { method: Method::Rijndael128, password: b"pw".to_vec(), max_packet_age_secs: 30 },
            max_connections: 8,
        };
        let ctx = Arc::new(NscaContext { engine: engine.clone(), config });
        let token = CancellationToken::new();
        let server = tokio::spawn(serve(listener, ctx, token.clone()));

        async fn send(addr: SocketAddr, password: &[u8], n: usize) -> TcpStream {
            let mut s = TcpStream::connect(addr).await.unwrap();
            let mut init = [0u8; codec::INIT_PACKET_LEN];
            s.read_exact(&mut init).await.unwrap();
            let mut enc = Encoder::new(Method::Rijndael128, password, &init);
            for i in 0..n {
                let p = enc.packet(2, "h1", "svc", &format!("CRITICAL - {i}"), false);
                s.write_all(&p).await.unwrap();
            }
            s
        }
        let bad = send(addr, b"wrong", 1).await;
        let good = send(addr, b"pw", 3).await;
        drop(good);
        let stats = engine.nsca_stats().clone();
        // Packets are counted when read and applied by the engine a moment later.
        let applied = |e: &crate::engine::EngineHandle| {
            e.status().iter().any(|c| c.service == "svc" && c.output == "CRITICAL - 2")
        };
        tokio::time::timeout(Duration::from_secs(10), async {
            while stats.received.load(Ordering::Relaxed) < 3 || stats.rejected(Reason::Version) < 1 || !applied(&engine)
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("three packets and one rejection");
        drop(bad);
        let status = engine.status();
        let svc = status.iter().find(|c| c.service == "svc").unwrap();
        assert_eq!(svc.output, "CRITICAL - 2");
        token.cancel();
        server.await.unwrap().unwrap();
        drop(dir);
    }
}
