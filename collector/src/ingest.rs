//! The agent listener.
//!
//! One task per connection, under a semaphore of `max_connections`. A session is:
//! send a challenge (a fresh random nonce), read the hello, look up the cluster's key,
//! verify, register the host, then read batches and acknowledge each once it is in the
//! latest-value table. Anything wrong is counted and logged through
//! [`Stats::reject`]; a frame that breaks the stream or the authentication ends the
//! connection (after a refusal frame that tells the agent why), other connections are
//! untouched.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ganglion_proto::frame::{self, AuthError, Frame, FrameError, Kind, Nonce};
use ganglion_proto::io::{FrameReader, ReadError};
use ganglion_proto::msg::{self, Ack, Batch, Challenge, Hello, Previous, Refusal};
use ganglion_proto::name::{self, NameKind};
use rand::RngCore;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use ganglion_proto::msg::MetricKind;
use ganglion_store::engine::{DsKind, SeriesId, SeriesKey, Store, Ticket, WriteError};

use crate::durable::DurableHandle;
use crate::state::{lock, now_ms, Host, SeqStats, State};
use crate::stats::{Reason, Stats};

/// What a connection needs from the collector.
pub struct IngestContext {
    pub state: Arc<State>,
    pub stats: Arc<Stats>,
    pub max_frame_bytes: usize,
    pub max_connections: usize,
    pub max_clock_skew: Duration,
    pub max_sample_age: Duration,
    /// Where every accepted sample goes before its batch is acknowledged.
    pub store: Arc<Store>,
    pub durable: DurableHandle,
}

/// A hello must arrive this soon after the challenge.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves agents on `listener` until `shutdown`, then waits up to five seconds for
/// connections to finish.
///
/// # Errors
/// Never returns an error today; accept errors are logged and retried with backoff.
pub async fn serve(listener: TcpListener, ctx: Arc<IngestContext>, shutdown: CancellationToken) -> std::io::Result<()> {
    let permits = Arc::new(Semaphore::new(ctx.max_connections));
    let tracker = TaskTracker::new();
    let mut backoff = Duration::from_millis(10);
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            () = shutdown.cancelled() => break,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => { backoff = Duration::from_millis(10); x }
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(error = %e, "Accept failed.");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        ctx.stats.connections_accepted.fetch_add(1, Ordering::Relaxed);
        let ctx = ctx.clone();
        let shutdown = shutdown.clone();
        tracker.spawn(
            async move {
                ctx.stats.connections_open.fetch_add(1, Ordering::Relaxed);
                connection(stream, peer, &ctx, &shutdown).await;
                ctx.stats.connections_open.fetch_sub(1, Ordering::Relaxed);
                drop(permit);
            }
            .instrument(tracing::info_span!("conn", %peer)),
        );
    }
    tracker.close();
    if tokio::time::timeout(Duration::from_secs(5), tracker.wait()).await.is_err() {
        tracing::warn!("Agent connections did not finish in time; closing them.");
    }
    Ok(())
}

/// Why a session ended early: the reason to count, and a message.
struct Stop(Reason, String);

fn read_reason(e: &ReadError) -> Reason {
    match e {
        ReadError::Frame(FrameError::TooLarge { .. }) => Reason::TooLarge,
        ReadError::Frame(FrameError::Version(_)) => Reason::Version,
        _ => Reason::Malformed,
    }
}

struct Session {
    wr: OwnedWriteHalf,
    nonce: Nonce,
    key: Vec<u8>,
    send_counter: u32,
    recv_counter: u32,
}

impl Session {
    async fn send(&mut self, kind: Kind, payload: &[u8]) -> std::io::Result<()> {
        let bytes = frame::seal(kind, self.send_counter, &self.nonce, Some(&self.key), payload);
        // A counter may not repeat on a connection; at one ack a second this is 136
        // years away, so the connection just ends and the agent opens a new one.
        self.send_counter =
            self.send_counter.checked_add(1).ok_or_else(|| std::io::Error::other("frame counter exhausted"))?;
        self.wr.write_all(&bytes).await
    }

    /// The checks every agent frame after the hello must pass.
    fn check(&mut self, f: &Frame) -> Result<(), Stop> {
        match f.verify(&self.key, &self.nonce) {
            Ok(()) => {}
            Err(AuthError::OtherSession) => {
                return Err(Stop(Reason::Replayed, "frame belongs to another connection".into()));
            }
            Err(_) => return Err(Stop(Reason::BadTag, "authentication tag does not match the cluster key".into())),
        }
        if f.counter != self.recv_counter {
            return Err(Stop(
                Reason::Replayed,
                format!("frame counter {} where {} was due", f.counter, self.recv_counter),
            ));
        }
        self.recv_counter = self
            .recv_counter
            .checked_add(1)
            .ok_or_else(|| Stop(Reason::Unexpected, "frame counter exhausted; the agent must reconnect".into()))?;
        Ok(())
    }
}

async fn refuse(wr: &mut OwnedWriteHalf, nonce: Nonce, reason: Reason, message: &str) {
    let r = Refusal { reason: reason.as_str().to_owned(), message: message.to_owned() };
    if let Ok(payload) = msg::encode(&r) {
        let bytes = frame::seal(Kind::Error, 0, &nonce, None, &payload);
        let _ = tokio::time::timeout(Duration::from_secs(1), wr.write_all(&bytes)).await;
    }
}

async fn connection(stream: TcpStream, peer: SocketAddr, ctx: &IngestContext, shutdown: &CancellationToken) {
    let _ = stream.set_nodelay(true);
    let (rd, mut wr) = stream.into_split();
    let mut reader = FrameReader::new(rd, ctx.max_frame_bytes);
    let mut nonce = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut nonce);
    let challenge = Challenge {
        collector: env!("CARGO_PKG_VERSION").to_owned(),
        max_frame_bytes: u32::try_from(ctx.max_frame_bytes).unwrap_or(u32::MAX),
        nonce,
    };
    let payload = msg::encode(&challenge).expect("a challenge always encodes");
    if wr.write_all(&frame::seal(Kind::Challenge, 0, &nonce, None, &payload)).await.is_err() {
        return;
    }
    let result = tokio::select! {
        r = session(&mut reader, wr, nonce, peer, ctx) => r,
        () = shutdown.cancelled() => Ok(()),
    };
    ctx.stats.bytes_received.fetch_add(reader.take_bytes_read(), Ordering::Relaxed);
    if let Err((Stop(reason, message), wr)) = result {
        ctx.stats.reject(reason, peer, &message);
        if let Some(mut wr) = wr {
            refuse(&mut wr, nonce, reason, &message).await;
        }
    }
}

type SessionResult = Result<(), (Stop, Option<OwnedWriteHalf>)>;

async fn session(
    reader: &mut FrameReader<tokio::net::tcp::OwnedReadHalf>,
    wr: OwnedWriteHalf,
    nonce: Nonce,
    peer: SocketAddr,
    ctx: &IngestContext,
) -> SessionResult {
    // Hello: unauthenticated until we know which cluster's key to check it with.
    let first = match tokio::time::timeout(HELLO_TIMEOUT, reader.next()).await {
        Err(_) => return Err((Stop(Reason::Timeout, "no hello within 10 s".into()), Some(wr))),
        Ok(Ok(Some(f))) => f,
        Ok(Ok(None)) => return Ok(()),
        Ok(Err(e)) => return Err((Stop(read_reason(&e), e.to_string()), Some(wr))),
    };
    ctx.stats.frames_received.fetch_add(1, Ordering::Relaxed);
    if first.kind != Kind::Hello {
        return Err((Stop(Reason::Unexpected, format!("{:?} frame before hello", first.kind)), Some(wr)));
    }
    let hello: Hello = match msg::decode(&first.payload) {
        Ok(h) => h,
        Err(e) => return Err((Stop(Reason::BadPayload, format!("hello: {e}")), Some(wr))),
    };
    let Some(cluster) = ctx.state.clusters.get(&hello.cluster) else {
        let m = format!("unknown cluster {}", name::escaped(&hello.cluster));
        return Err((Stop(Reason::UnknownCluster, m), Some(wr)));
    };
    let mut s = Session { wr, nonce, key: cluster.key.clone(), send_counter: 1, recv_counter: 0 };
    if let Err(stop) = s.check(&first) {
        return Err((stop, Some(s.wr)));
    }
    let skew = (hello.sent_at_ms - now_ms()).unsigned_abs();
    if skew > ctx.max_clock_skew.as_millis() as u64 {
        let m = format!("hello clock differs from the collector's by {} s", skew / 1000);
        return Err((Stop(Reason::Stale, m), Some(s.wr)));
    }
    if let Err(e) = name::validate(NameKind::Host, &hello.host) {
        return Err((Stop(Reason::BadName, e.to_string()), Some(s.wr)));
    }
    let host = ctx.state.host(&hello.cluster, &hello.host, peer.to_string());
    // Maps the agent's metric ids to this host's slots.
    let mut ids: Vec<Option<usize>> = Vec::new();
    {
        let mut h = lock(&host);
        // `interval_secs` 0 is a one-shot sender (`ganglion-agent send --direct`): it
        // must not replace what the host's agent said about the host.
        let one_shot = hello.interval_secs == 0;
        if !one_shot || h.seq.batches == 0 {
            h.facts = hello.facts.clone();
            h.agent_version = hello.agent_version.clone();
        }
        if !one_shot {
            h.interval_secs = hello.interval_secs;
        }
        h.peer = peer.to_string();
        h.connections += 1;
        h.last_seen = Instant::now();
        h.last_seen_ms = now_ms();
        define(&mut h, &mut ids, &hello.metrics, ctx, peer);
    }
    tracing::info!(cluster = %hello.cluster, host = %hello.host, metrics = hello.metrics.len(), "Agent connected.");
    let result = batches(reader, &mut s, &host, &mut ids, peer, ctx).await;
    lock(&host).connections -= 1;
    result.map_err(|stop| (stop, Some(s.wr)))
}

/// Registers metric definitions; refuses bad names one by one (the rest still count).
fn define(
    h: &mut Host,
    ids: &mut Vec<Option<usize>>,
    metas: &[msg::MetricMeta],
    ctx: &IngestContext,
    peer: SocketAddr,
) {
    for m in metas {
        if let Err(e) = name::validate(NameKind::Metric, &m.name) {
            ctx.stats.reject(Reason::BadName, peer, &e);
            continue;
        }
        // Ids are small and dense in practice; refuse absurd ones rather than allocate.
        let Ok(id) = usize::try_from(m.id) else { continue };
        if m.id > MAX_METRIC_ID {
            ctx.stats.reject(Reason::BadSample, peer, &format!("metric id {id} is too large"));
            continue;
        }
        if ids.len() <= id {
            ids.resize(id + 1, None);
        }
        ids[id] = Some(h.slot_for(m));
    }
}

async fn batches(
    reader: &mut FrameReader<tokio::net::tcp::OwnedReadHalf>,
    s: &mut Session,
    host: &Arc<Mutex<Host>>,
    ids: &mut Vec<Option<usize>>,
    peer: SocketAddr,
    ctx: &IngestContext,
) -> Result<(), Stop> {
    // The previous batch on this connection: the agent sends differences from it
    // (PROTOCOL.md, "Batch").
    let mut prev = Previous::default();
    // Acks wait for the journal's group commit, but reading does not: batches keep
    // arriving (up to the agent's window) while one wait covers all of them, and the
    // ack sent afterwards is cumulative. Without this a connection would move one batch
    // per fsync interval.
    let mut waiting: Option<(Ack, Ticket, DurableWait)> = None;
    let mut next_ack: Option<(Ticket, Ack)> = None;
    // The journal position of the newest batch stored from this connection: an ack
    // covers every batch before it, so it waits for that one too.
    let mut stored: Option<Ticket> = None;
    loop {
        let next = tokio::select! {
            f = reader.next() => f,
            r = async { waiting.as_mut().expect("guarded by the branch condition").2.as_mut().await }, if waiting.is_some() => {
                let (ack, _, _) = waiting.take().expect("guarded by the branch condition");
                if let Err(e) = r {
                    tracing::warn!(%peer, error = %e, "Storage did not confirm a batch; closing without acknowledging it.");
                    return Ok(());
                }
                let payload = msg::encode(&ack).expect("an ack always encodes");
                if s.send(Kind::Ack, &payload).await.is_err() {
                    return Ok(());
                }
                if let Some((ticket, ack)) = next_ack.take() {
                    waiting = Some((ack, ticket, wait_for(ctx, ticket)));
                }
                continue;
            }
        };
        let f = match next {
            Ok(Some(f)) => f,
            Ok(None) => return Ok(()),
            Err(ReadError::Io(e)) => {
                tracing::debug!(error = %e, "Agent connection failed.");
                return Ok(());
            }
            Err(e) => return Err(Stop(read_reason(&e), e.to_string())),
        };
        ctx.stats.frames_received.fetch_add(1, Ordering::Relaxed);
        // Counted as frames arrive, so the health page shows a long-lived connection's
        // traffic before it closes.
        ctx.stats.bytes_received.fetch_add(reader.take_bytes_read(), Ordering::Relaxed);
        s.check(&f)?;
        if f.kind != Kind::Batch {
            return Err(Stop(Reason::Unexpected, format!("{:?} frame from an agent", f.kind)));
        }
        let mut batch: Batch = msg::decode(&f.payload).map_err(|e| Stop(Reason::BadPayload, format!("batch: {e}")))?;
        let bad = prev.rebuild(&mut batch, MAX_METRIC_ID);
        if bad > 0 {
            ctx.stats.reject(
                Reason::BadSample,
                peer,
                &format!("{bad} samples with NaN/infinite values or ids beyond {MAX_METRIC_ID}"),
            );
        }
        // Nothing to store for a duplicate or a stale batch.
        if let Some((samples, undo)) = apply(&batch, host, ids, peer, ctx) {
            match store(samples, host, peer, ctx) {
                Ok(ticket) => stored = Some(ticket),
                Err(e) => {
                    // Not acknowledged, and the sequence bookkeeping forgets the batch, so
                    // the agent's replay after it reconnects is stored rather than skipped
                    // as a duplicate. Closing is the only way to refuse one batch: acks are
                    // cumulative.
                    lock(host).seq = undo;
                    ctx.stats.batches_deferred.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%peer, seq = batch.seq, error = %e, "Storage refused a batch; closing so the agent resends it later.");
                    return Ok(());
                }
            }
        }
        if !batch.ack {
            continue;
        }
        let ack = Ack { run: batch.run, seq: batch.seq };
        // Acknowledged means in the journal: the ack waits for the group commit of
        // everything stored from this connection so far.
        match (stored, waiting.is_some()) {
            (None, _) => {
                let payload = msg::encode(&ack).expect("an ack always encodes");
                if s.send(Kind::Ack, &payload).await.is_err() {
                    return Ok(());
                }
            }
            (Some(ticket), false) => waiting = Some((ack, ticket, wait_for(ctx, ticket))),
            (Some(ticket), true) => next_ack = Some((ticket, ack)),
        }
    }
}

/// Appends a batch's samples by series id. A series removed since its id was cached
/// (host expiry racing a reconnect) refuses the batch; its slots resolve again and the
/// batch is retried, so no sample is lost to a stale id.
fn store(
    mut samples: Samples,
    host: &Arc<Mutex<Host>>,
    peer: SocketAddr,
    ctx: &IngestContext,
) -> Result<Ticket, WriteError> {
    loop {
        match ctx.store.try_append_ids(&samples.ids) {
            Err(WriteError::Stale(stale)) => {
                let mut h = lock(host);
                for &k in &stale {
                    h.slots[samples.slots[k]].series = None;
                }
                let mut keep = 0;
                for k in 0..samples.ids.len() {
                    let i = samples.slots[k];
                    if let Some(id) = series_of(&mut h, i, peer, ctx) {
                        samples.ids[keep] = (id, samples.ids[k].1, samples.ids[k].2);
                        samples.slots[keep] = i;
                        keep += 1;
                    }
                }
                samples.ids.truncate(keep);
                samples.slots.truncate(keep);
            }
            r => return r,
        }
    }
}

/// The storage id of slot `i`, resolved (and cached) on first use; `None` when the
/// store refuses the series (logged and counted once).
fn series_of(h: &mut Host, i: usize, peer: SocketAddr, ctx: &IngestContext) -> Option<SeriesId> {
    if let Some(id) = h.slots[i].series {
        return id;
    }
    let meta = &h.slots[i].meta;
    let key = SeriesKey::new(&h.cluster, &h.name, &meta.name);
    let id = ctx.store.series_id(&key, ds_kind(meta.kind));
    if id.is_none() {
        let m = format!("metric {} cannot be stored: its series has another kind", meta.name);
        ctx.stats.reject(Reason::BadSample, peer, &m);
    }
    h.slots[i].series = Some(id);
    id
}

/// Samples to store, with the host slot each came from.
struct Samples {
    ids: Vec<(SeriesId, i64, f64)>,
    slots: Vec<usize>,
}

type DurableWait = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send>>;

fn wait_for(ctx: &IngestContext, ticket: Ticket) -> DurableWait {
    let d = ctx.durable.clone();
    Box::pin(async move { d.wait(ticket).await })
}

/// Largest metric id an agent may use; ids index per-connection tables.
const MAX_METRIC_ID: u32 = (1 << 20) - 1;

fn ds_kind(k: MetricKind) -> DsKind {
    match k {
        MetricKind::Gauge => DsKind::Gauge,
        MetricKind::Counter => DsKind::Counter,
        MetricKind::Derive => DsKind::Derive,
        MetricKind::Absolute => DsKind::Absolute,
    }
}

/// Puts a batch into the host's latest values and returns the samples to store, with
/// the sequence bookkeeping as it was before (to undo if storing fails). Duplicates and
/// batches with absurd times give `None`: they are acknowledged without being applied,
/// since sending them again cannot help.
fn apply(
    batch: &Batch,
    host: &Arc<Mutex<Host>>,
    ids: &mut Vec<Option<usize>>,
    peer: SocketAddr,
    ctx: &IngestContext,
) -> Option<(Samples, SeqStats)> {
    let now = now_ms();
    let mut h = lock(host);
    h.last_seen = Instant::now();
    h.last_seen_ms = now;
    let undo = h.seq.clone();
    // Run 0 is a one-shot push: it has no sequence, and must not reset the agent's.
    if batch.run != 0 && !h.note_seq(batch.run, batch.seq) {
        ctx.stats.batches_duplicate.fetch_add(1, Ordering::Relaxed);
        return None;
    }
    if batch.time_ms > now + ctx.max_clock_skew.as_millis() as i64
        || batch.time_ms < now - ctx.max_sample_age.as_millis() as i64
    {
        ctx.stats.batches_dropped.fetch_add(1, Ordering::Relaxed);
        ctx.stats.reject(
            Reason::Stale,
            peer,
            &format!("batch {} has time {} ms, now is {now} ms", batch.seq, batch.time_ms),
        );
        return None;
    }
    if !batch.defs.is_empty() {
        define(&mut h, ids, &batch.defs, ctx, peer);
    }
    if let Some(f) = &batch.facts {
        h.facts = f.clone();
    }
    let mut accepted = 0u64;
    let mut bad = 0u64;
    let mut samples =
        Samples { ids: Vec::with_capacity(batch.values.len()), slots: Vec::with_capacity(batch.values.len()) };
    for &(id, value) in &batch.values {
        let slot = ids.get(id as usize).copied().flatten();
        match slot {
            Some(i) if value.is_finite() => {
                if let Some(sid) = series_of(&mut h, i, peer, ctx) {
                    samples.ids.push((sid, batch.time_ms, value));
                    samples.slots.push(i);
                }
                let s = &mut h.slots[i];
                // A replayed older batch must not overwrite a newer value.
                if batch.time_ms >= s.time_ms {
                    s.value = value;
                    s.time_ms = batch.time_ms;
                }
                accepted += 1;
            }
            _ => bad += 1,
        }
    }
    drop(h);
    if bad > 0 {
        ctx.stats.reject(
            Reason::BadSample,
            peer,
            &format!("{bad} samples with NaN/infinite values or undefined ids in batch {}", batch.seq),
        );
    }
    ctx.stats.samples_accepted.fetch_add(accepted, Ordering::Relaxed);
    ctx.stats.batches_accepted.fetch_add(1, Ordering::Relaxed);
    Some((samples, undo))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ClusterConfig;
    use ganglion_store::engine::StoreConfig;
    use ganglion_store::rrd::Cf;

    fn context(dir: &std::path::Path) -> IngestContext {
        let cfg = StoreConfig { background: false, ..StoreConfig::default() };
        let store = Arc::new(Store::open(dir, cfg).unwrap());
        let cluster = ClusterConfig { key: b"0123456789abcdef".to_vec(), host_timeout: None, host_expire: None };
        IngestContext {
            state: Arc::new(State::new([("c".to_owned(), cluster)].into())),
            stats: Arc::new(Stats::default()),
            max_frame_bytes: 1 << 20,
            max_connections: 1,
            max_clock_skew: Duration::from_secs(300),
            max_sample_age: Duration::from_secs(86_400),
            durable: DurableHandle::start(store.clone()),
            store,
        }
    }

    fn meta(name: &str, kind: MetricKind) -> msg::MetricMeta {
        msg::MetricMeta {
            id: 0,
            name: name.into(),
            unit: String::new(),
            kind,
            group: String::new(),
            description: String::new(),
        }
    }

    /// The host's series is removed (expiry) while the host keeps its cached id: the
    /// next sample recreates the series instead of being dropped.
    #[test]
    fn a_cached_series_id_survives_the_removal_of_its_series() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = context(dir.path());
        let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let host = ctx.state.host("c", "h", peer.to_string());
        let i = lock(&host).slot_for(&meta("load", MetricKind::Gauge));
        let t0 = 1_699_999_995_000i64;
        let sample = |k: i64| {
            let mut h = lock(&host);
            let id = series_of(&mut h, i, peer, &ctx).unwrap();
            Samples { ids: vec![(id, t0 + k * 15_000, k as f64)], slots: vec![i] }
        };
        store(sample(1), &host, peer, &ctx).unwrap();
        store(sample(2), &host, peer, &ctx).unwrap();
        let key = SeriesKey::new("c", "h", "load");
        ctx.store.remove_series(&key).unwrap();
        let stale = sample(3);
        assert!(lock(&host).slots[i].series.is_some(), "the id is still cached");
        store(stale, &host, peer, &ctx).unwrap();
        store(sample(4), &host, peer, &ctx).unwrap();
        let t = (t0 / 1000) as u64;
        let f = ctx.store.fetch(&key, Cf::Average, t, t + 60, 15).unwrap();
        let known: Vec<f64> = f.rows.iter().map(|r| r[0]).filter(|v| !v.is_nan()).collect();
        assert_eq!(known, vec![4.0], "samples 1 and 2 went with the removal; 3 started the new series");
        assert_eq!(ctx.store.stats().rejected.load(Ordering::Relaxed), 0);
    }

    /// A metric whose kind changed cannot be stored under the old series: refused once
    /// (logged, counted), and appended again once the kind is back.
    #[test]
    fn a_metric_that_changes_kind_is_refused_not_mixed() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = context(dir.path());
        let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let host = ctx.state.host("c", "h", peer.to_string());
        let i = lock(&host).slot_for(&meta("x", MetricKind::Gauge));
        assert!(series_of(&mut lock(&host), i, peer, &ctx).is_some());
        lock(&host).slot_for(&meta("x", MetricKind::Counter));
        assert!(series_of(&mut lock(&host), i, peer, &ctx).is_none());
        assert!(series_of(&mut lock(&host), i, peer, &ctx).is_none());
        assert_eq!(ctx.stats.snapshot().rejected_total, 1);
        lock(&host).slot_for(&meta("x", MetricKind::Gauge));
        assert!(series_of(&mut lock(&host), i, peer, &ctx).is_some());
    }
}
