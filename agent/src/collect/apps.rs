//! Running the application sources (Apache, MySQL, memcached) once per interval, or
//! every n-th interval for one with an `interval_secs` of its own.
//!
//! This module owns *when* and *where* a source runs and what its failure looks like;
//! each source module owns talking to its server and turning the answer into
//! readings. Apache and memcached do blocking I/O (an HTTP request, a socket). A local
//! server answers in well under a millisecond, and handing such a call to another
//! thread and back cost more CPU than the call (two thread wake-ups, about 100 µs a
//! source per collection), so a blocking source runs on the runtime thread while it is
//! fast. One that takes longer than [`INLINE_BUDGET`] (a slow or hanging server) moves
//! to tokio's blocking pool for [`OFFLOAD_COLLECTIONS`] collections, so the senders are
//! not held up again; there all offloaded sources run at once and the batch waits for
//! each at most its own timeout (plus a little grace): a server that hangs costs its
//! own metrics, not the host's. A source still busy at the next interval is not started
//! a second time; it reports down until it returns. What counts is the time the
//! `collect` call itself holds the thread: MySQL's client is async, returns at once
//! and is awaited on the runtime thread without holding it, cut off at its timeout.
//! Its query goes out before the blocking sources are read and its answer is picked
//! up after them, so the agent waits for two servers at once.
//!
//! Every source reports `<source>_up`: 1 when this collection worked, 0 when not. The
//! log gets one line per change of state — down with the reason, up again — and the
//! same failure at every interval is only a debug line, so a stopped server does not
//! fill the log.

use std::borrow::Cow;
use std::fmt::Display;
use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use super::{gauge, Reading};
use crate::config::AgentConfig;

/// Extra time after a source's timeout before the batch stops waiting for it: its
/// own I/O timeouts should fire first and give the better error message.
const GRACE: Duration = Duration::from_millis(500);

/// A source whose collection takes longer than this on the runtime thread runs on the
/// blocking pool next time.
const INLINE_BUDGET: Duration = Duration::from_millis(50);

/// Collections a slow source spends on the blocking pool before it is tried on the
/// runtime thread again (5 minutes at the default interval).
const OFFLOAD_COLLECTIONS: u32 = 20;

/// Why a source gave nothing this time.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AppError {
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("HTTP request failed: {0}")]
    Http(String),
    #[error(transparent)]
    Mysql(#[from] sqlx::Error),
    #[error("unexpected answer: {0}")]
    Parse(#[from] ParseError),
    #[error("no answer within {0:?}")]
    Overrun(Duration),
    #[error("the source failed for good: {0}")]
    Lost(String),
}

/// Why a server's answer could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// The answer stopped before its end marker.
    #[error("incomplete: {0}")]
    Incomplete(&'static str),
    #[error("{0}")]
    Invalid(&'static str),
}

/// One collection of a source. A blocking source has done its work by the time it
/// returns this (an answer ready at the first poll); an async one does it when
/// awaited.
pub(crate) type Collecting<'a> = Pin<Box<dyn Future<Output = Result<(), AppError>> + Send + 'a>>;

/// A blocking source's collection, already done.
pub(crate) fn done<'a>(result: Result<(), AppError>) -> Collecting<'a> {
    Box::pin(std::future::ready(result))
}

/// One application source. A blocking one blocks on its server in the `collect` call,
/// bounded by its own I/O timeouts, and runs in place while that call is fast, else on
/// a blocking thread; an async one returns at once and is awaited on the runtime
/// thread.
pub(crate) trait AppSource: Send + 'static {
    /// Prefix of the source's metrics and its name in the log (`apache`).
    fn name(&self) -> &'static str;
    /// Longest one collection may take; the source sets its I/O timeouts from it.
    fn timeout(&self) -> Duration;
    /// Collections of the agent per collection of this source: 1 reads it every
    /// interval, 4 every fourth (its `interval_secs` in the config).
    fn every(&self) -> u32 {
        1
    }
    /// Sends this collection's request ahead without waiting for the answer, so the
    /// server works on it while the other sources are read; returns whether a request
    /// is now in flight. A failure is kept for [`collect`](Self::collect) to report.
    /// `collect` works whether or not this was called.
    fn begin(&mut self) -> bool {
        false
    }
    /// Reads the server once at `now`; appends readings only when it ends in `Ok`.
    fn collect<'a>(&'a mut self, now: Instant, out: &'a mut Vec<Reading>) -> Collecting<'a>;
    /// Ends a kept session the way the server expects when the agent stops, so it is
    /// not counted as an aborted client.
    fn close(&mut self) -> Collecting<'_> {
        done(Ok(()))
    }
}

/// Up/down state of one source, for the `_up` metric and one log line per change.
#[derive(Debug)]
pub(crate) struct Health {
    source: Cow<'static, str>,
    /// `None` until the first collection.
    up: Option<bool>,
    down_since: Option<Instant>,
}

impl Health {
    pub(crate) fn new(source: impl Into<Cow<'static, str>>) -> Health {
        Health { source: source.into(), up: None, down_since: None }
    }

    /// Records one collection's outcome and returns the `_up` value.
    pub(crate) fn record(&mut self, error: Option<&dyn Display>) -> f64 {
        let was = self.up.replace(error.is_none());
        let source = &*self.source;
        match (was, error) {
            (Some(true), None) => {}
            (None, None) => tracing::info!(source, "Application source is up."),
            (Some(false), None) => {
                let down_secs = self.down_since.take().map_or(0, |t| t.elapsed().as_secs());
                tracing::info!(source, down_secs, "Application source is up again.");
            }
            (Some(false), Some(e)) => {
                tracing::debug!(source, error = %e, "Application source still down.");
            }
            (_, Some(e)) => {
                self.down_since = Some(Instant::now());
                tracing::warn!(
                    source,
                    error = %e,
                    "Application source is down; reporting it as down until it answers again."
                );
            }
        }
        if error.is_none() {
            1.0
        } else {
            0.0
        }
    }
}

/// The `<source>_up` reading.
pub(crate) fn up_reading(name: &str, group: &'static str, up: f64) -> Reading {
    gauge(format!("{name}_up"), "", group, "1 when the last collection from this source worked, 0 when not.", up)
}

type Finished = (Box<dyn AppSource>, Vec<Reading>, Result<(), AppError>);

struct Slot {
    name: &'static str,
    timeout: Duration,
    /// Here between collections; on a blocking thread while one runs.
    source: Option<Box<dyn AppSource>>,
    running: Option<JoinHandle<Finished>>,
    health: Health,
    /// Collections left on the blocking pool; 0: runs on the runtime thread.
    offload: u32,
    every: u32,
    /// Collections to pass over before this source is read again.
    skip: u32,
    /// Not read in the last collection.
    skipped: bool,
}

impl Slot {
    /// Collected on the runtime thread this time: here (not busy on the blocking pool,
    /// nor lost to a panic), and not moved to the blocking pool for being slow.
    fn inline(&self) -> bool {
        self.source.is_some() && self.offload == 0
    }
}

/// The configured application sources.
pub struct AppSet {
    slots: Vec<Slot>,
}

impl AppSet {
    /// The sources named in `config`; empty when none is configured.
    pub fn new(config: &AgentConfig) -> AppSet {
        let mut sources: Vec<Box<dyn AppSource>> = Vec::new();
        // MySQL first: its client is async, so its query is in flight while Apache,
        // whose client blocks, is read (see `collect_inline`).
        if let Some(c) = &config.mysql {
            sources.push(Box::new(super::mysql::MysqlSource::new(c.clone())));
        }
        if let Some(c) = &config.apache {
            sources.push(Box::new(super::apache::ApacheSource::new(c.clone())));
        }
        if let Some(c) = &config.memcached {
            sources.push(Box::new(super::memcached::MemcachedSource::new(c.clone())));
        }
        AppSet::from_sources(sources)
    }

    pub(crate) fn from_sources(sources: Vec<Box<dyn AppSource>>) -> AppSet {
        let slots = sources
            .into_iter()
            .map(|s| Slot {
                name: s.name(),
                timeout: s.timeout(),
                health: Health::new(s.name()),
                every: s.every().max(1),
                skip: 0,
                skipped: false,
                source: Some(s),
                running: None,
                offload: 0,
            })
            .collect();
        AppSet { slots }
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Collects every source that is due and appends their readings and `_up` metrics
    /// to `out`: fast sources in place, slow ones on the blocking pool at once, waiting
    /// for each of those at most its timeout. A source read only every n-th
    /// collection is left out of the others entirely (no `_up` either; see
    /// [`skipped`](Self::skipped)), as gmond reads a module only every `collect_every`;
    /// its rates cover the n intervals. The first call reads every source.
    pub async fn collect(&mut self, out: &mut Vec<Reading>) {
        let started = tokio::time::Instant::now();
        for slot in &mut self.slots {
            slot.skipped = slot.skip > 0;
            slot.skip = if slot.skipped { slot.skip - 1 } else { slot.every - 1 };
        }
        // Sources moved to the blocking pool start first, so they run while the others
        // are read here. A source still running from last time is waited for below,
        // not restarted; one without its source (it panicked) reports why.
        let mut waiting = Vec::new();
        for (i, slot) in self.slots.iter_mut().enumerate() {
            if slot.skipped || slot.inline() {
                continue;
            }
            slot.offload = slot.offload.saturating_sub(1);
            waiting.push(i);
            if slot.running.is_none() {
                if let Some(mut source) = slot.source.take() {
                    let runtime = tokio::runtime::Handle::current();
                    slot.running = Some(tokio::task::spawn_blocking(move || {
                        let mut readings = Vec::new();
                        // Only a source whose `collect` call itself was slow comes
                        // here: a blocking one, whose answer is ready at the first poll.
                        let result = runtime.block_on(source.collect(Instant::now(), &mut readings));
                        (source, readings, result)
                    }));
                }
            }
        }
        self.collect_inline(out).await;
        for i in waiting {
            let slot = &mut self.slots[i];
            let result = match slot.running.as_mut() {
                None => Err(AppError::Lost("it panicked earlier".into())),
                Some(handle) => match tokio::time::timeout_at(started + slot.timeout + GRACE, handle).await {
                    Ok(Ok((source, readings, result))) => {
                        slot.running = None;
                        slot.source = Some(source);
                        result.map(|()| readings)
                    }
                    Ok(Err(join)) => {
                        slot.running = None;
                        Err(AppError::Lost(join.to_string()))
                    }
                    Err(_) => Err(AppError::Overrun(slot.timeout)),
                },
            };
            finish(slot.name, &mut slot.health, result, out);
        }
    }

    /// The due sources that run on the runtime thread, so that a collection sleeps
    /// about once rather than once per source (each sleep and wake-up is CPU time of
    /// its own):
    /// - a source that can send its request ahead does so first
    ///   ([`AppSource::begin`]) and is read last, when its answer is there;
    /// - each `collect` future is polled once as soon as it is made. An async source's
    ///   first poll sends its request, and it is awaited only after the blocking
    ///   sources after it have been read, while its server works on the answer.
    ///
    /// What the `collect` call and that first poll take decides whether the source
    /// moves to the blocking pool.
    async fn collect_inline(&mut self, out: &mut Vec<Reading>) {
        let mut bufs: Vec<Vec<Reading>> = std::iter::repeat_with(Vec::new).take(self.slots.len()).collect();
        // Which source ended how, in that order; the readings are in `bufs`.
        let mut ended = Vec::with_capacity(self.slots.len());
        {
            // The due sources as (sent ahead, index, slot, buffer): every request that
            // can go ahead goes out in this pass, before any source is read. Those
            // that sent ahead are read last; the sort is stable, so the order of the
            // sources holds otherwise.
            let mut due: Vec<_> = self
                .slots
                .iter_mut()
                .zip(bufs.iter_mut())
                .enumerate()
                .filter(|(_, (slot, _))| !slot.skipped && slot.inline())
                .filter_map(|(i, (slot, buf))| Some((slot.source.as_mut()?.begin(), i, slot, buf)))
                .collect();
            due.sort_by_key(|d| d.0);
            let mut pending = Vec::new();
            for (_, i, slot, buf) in due {
                let Slot { name, timeout, source: Some(source), offload, .. } = slot else { continue };
                let began = Instant::now();
                let mut collecting = source.collect(began, buf);
                let first = poll_once(&mut collecting).await;
                let took = began.elapsed();
                if took > INLINE_BUDGET {
                    tracing::info!(
                        source = *name,
                        ms = took.as_millis() as u64,
                        "Application source is slow; collecting it on a thread of its own for a while."
                    );
                    *offload = OFFLOAD_COLLECTIONS;
                }
                match first {
                    Poll::Ready(result) => ended.push((i, result)),
                    Poll::Pending => {
                        let deadline = tokio::time::Instant::from_std(began) + *timeout + GRACE;
                        pending.push((i, *timeout, deadline, collecting));
                    }
                }
            }
            for (i, timeout, deadline, collecting) in pending {
                let result = tokio::time::timeout_at(deadline, collecting).await;
                ended.push((i, result.unwrap_or(Err(AppError::Overrun(timeout)))));
            }
        }
        for (i, result) in ended {
            let slot = &mut self.slots[i];
            finish(slot.name, &mut slot.health, result.map(|()| std::mem::take(&mut bufs[i])), out);
        }
    }

    /// Reads every source once and throws the readings away, so the first batch has
    /// rates; that batch then reads every source again, whatever its interval, so
    /// a source read every minute shows in the first batch and not a minute later.
    pub async fn prime(&mut self) {
        self.collect(&mut Vec::new()).await;
        for slot in &mut self.slots {
            slot.skip = 0;
        }
    }

    /// Closes the sources' sessions, each within its timeout, when the agent stops; a
    /// source still busy on the blocking pool is left to end with the process.
    pub async fn close(&mut self) {
        for slot in &mut self.slots {
            if let Some(source) = slot.source.as_mut() {
                if let Ok(Err(e)) = tokio::time::timeout(slot.timeout, source.close()).await {
                    tracing::debug!(source = slot.name, error = %e, "Closing the session failed.");
                }
            }
        }
    }

    /// The sources the last [`collect`](Self::collect) did not read (not due), whose
    /// metrics the batch marks skipped rather than gone.
    pub fn skipped(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.slots.iter().filter(|s| s.skipped).map(|s| s.name)
    }
}

/// Polls `f` once with the calling task's waker, which is what a later await of it
/// will be woken by.
async fn poll_once<F: Future + Unpin>(f: &mut F) -> Poll<F::Output> {
    std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut *f).poll(cx))).await
}

fn finish(name: &'static str, health: &mut Health, result: Result<Vec<Reading>, AppError>, out: &mut Vec<Reading>) {
    let up = match result {
        Ok(readings) => {
            out.extend(readings);
            health.record(None)
        }
        Err(e) => health.record(Some(&e)),
    };
    out.push(up_reading(name, name, up));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::tests::value;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    /// A source that answers from a script of outcomes: `Some(ms)` sleeps that long
    /// and succeeds, `None` fails.
    struct Scripted {
        steps: Vec<Option<u64>>,
        calls: Arc<AtomicU32>,
    }

    impl AppSource for Scripted {
        fn name(&self) -> &'static str {
            "fake"
        }
        fn timeout(&self) -> Duration {
            Duration::from_millis(200)
        }
        fn collect<'a>(&'a mut self, _now: Instant, out: &'a mut Vec<Reading>) -> Collecting<'a> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst) as usize;
            let result = match self.steps.get(n).copied().flatten() {
                Some(ms) => {
                    std::thread::sleep(Duration::from_millis(ms));
                    out.push(gauge("fake_value", "", "fake", "", n as f64));
                    Ok(())
                }
                None => Err(AppError::Io {
                    what: "connecting",
                    source: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
                }),
            };
            done(result)
        }
    }

    fn set(steps: Vec<Option<u64>>) -> (AppSet, Arc<AtomicU32>) {
        let calls = Arc::new(AtomicU32::new(0));
        (AppSet::from_sources(vec![Box::new(Scripted { steps, calls: calls.clone() })]), calls)
    }

    #[tokio::test]
    async fn reports_up_and_values_then_down_without_values() {
        let (mut apps, _) = set(vec![Some(0), None, Some(0)]);
        let mut out = Vec::new();
        apps.collect(&mut out).await;
        assert_eq!((value(&out, "fake_up"), value(&out, "fake_value")), (Some(1.0), Some(0.0)));
        out.clear();
        apps.collect(&mut out).await;
        assert_eq!((value(&out, "fake_up"), value(&out, "fake_value")), (Some(0.0), None));
        out.clear();
        apps.collect(&mut out).await;
        assert_eq!((value(&out, "fake_up"), value(&out, "fake_value")), (Some(1.0), Some(2.0)));
    }

    #[tokio::test]
    async fn a_hanging_source_is_not_waited_for_nor_started_twice() {
        // 100 ms on the runtime thread is over budget: from then on it runs off it.
        let (mut apps, calls) = set(vec![Some(100), Some(1_500), Some(0)]);
        let mut out = Vec::new();
        apps.collect(&mut out).await;
        assert_eq!(value(&out, "fake_up"), Some(1.0));
        let t0 = std::time::Instant::now();
        out.clear();
        apps.collect(&mut out).await;
        assert!(t0.elapsed() < Duration::from_millis(1_200), "waited {:?}", t0.elapsed());
        assert_eq!(value(&out, "fake_up"), Some(0.0));
        out.clear();
        apps.collect(&mut out).await;
        assert_eq!(calls.load(Ordering::SeqCst), 2, "started again while still busy");
        assert_eq!(value(&out, "fake_up"), Some(0.0));
        // Once it returns, the source runs again.
        std::thread::sleep(Duration::from_millis(1_000));
        out.clear();
        apps.collect(&mut out).await;
        out.clear();
        apps.collect(&mut out).await;
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert_eq!(value(&out, "fake_up"), Some(1.0));
    }

    /// Records the thread each collection ran on.
    struct Where(Arc<std::sync::Mutex<Vec<std::thread::ThreadId>>>, u64);

    impl AppSource for Where {
        fn name(&self) -> &'static str {
            "where"
        }
        fn timeout(&self) -> Duration {
            Duration::from_secs(1)
        }
        fn collect<'a>(&'a mut self, _now: Instant, _out: &'a mut Vec<Reading>) -> Collecting<'a> {
            self.0.lock().unwrap().push(std::thread::current().id());
            std::thread::sleep(Duration::from_millis(self.1));
            done(Ok(()))
        }
    }

    #[tokio::test]
    async fn fast_sources_run_in_place_and_slow_ones_on_the_blocking_pool() {
        let here = std::thread::current().id();
        let fast = Arc::new(std::sync::Mutex::new(Vec::new()));
        let slow = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut apps = AppSet::from_sources(vec![
            Box::new(Where(fast.clone(), 0)),
            Box::new(Where(slow.clone(), INLINE_BUDGET.as_millis() as u64 + 20)),
        ]);
        let mut out = Vec::new();
        for _ in 0..3 {
            apps.collect(&mut out).await;
        }
        assert_eq!(*fast.lock().unwrap(), vec![here; 3]);
        let slow = slow.lock().unwrap();
        assert_eq!(slow[0], here, "tried in place first");
        assert!(slow[1..].iter().all(|t| *t != here), "then off the runtime thread: {slow:?}");
        assert_eq!(apps.slots[1].offload, OFFLOAD_COLLECTIONS - 2);
    }

    /// An async source that answers after `self.0` ms and counts its answers.
    struct Waits(&'static str, u64, Arc<AtomicU32>);

    impl AppSource for Waits {
        fn name(&self) -> &'static str {
            self.0
        }
        fn timeout(&self) -> Duration {
            Duration::from_millis(200)
        }
        fn collect<'a>(&'a mut self, _now: Instant, out: &'a mut Vec<Reading>) -> Collecting<'a> {
            Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(self.1)).await;
                self.2.fetch_add(1, Ordering::SeqCst);
                out.push(gauge(format!("{}_value", self.0), "", "waits", "", 1.0));
                Ok(())
            })
        }
    }

    #[tokio::test]
    async fn an_async_source_is_cut_off_at_its_timeout_and_stays_on_the_runtime_thread() {
        let answers = Arc::new(AtomicU32::new(0));
        let mut apps = AppSet::from_sources(vec![
            Box::new(Waits("hangs", 5_000, answers.clone())),
            Box::new(Waits("slow", INLINE_BUDGET.as_millis() as u64 + 20, answers.clone())),
        ]);
        let mut out = Vec::new();
        let t0 = std::time::Instant::now();
        apps.collect(&mut out).await;
        assert!(t0.elapsed() < Duration::from_millis(1_000), "waited {:?}", t0.elapsed());
        assert_eq!((value(&out, "hangs_up"), value(&out, "hangs_value")), (Some(0.0), None));
        assert_eq!((value(&out, "slow_up"), value(&out, "slow_value")), (Some(1.0), Some(1.0)));
        assert_eq!(answers.load(Ordering::SeqCst), 1, "the hanging collection was dropped, not left running");
        // Waiting does not hold up the thread, so neither moves to the blocking pool.
        assert!(apps.slots.iter().all(|s| s.offload == 0 && s.running.is_none()));
    }

    /// Logs its `begin` and `collect` calls; sends ahead when `ahead`.
    struct Logged(&'static str, bool, Arc<std::sync::Mutex<Vec<String>>>);

    impl AppSource for Logged {
        fn name(&self) -> &'static str {
            self.0
        }
        fn timeout(&self) -> Duration {
            Duration::from_secs(1)
        }
        fn begin(&mut self) -> bool {
            self.2.lock().unwrap().push(format!("begin {}", self.0));
            self.1
        }
        fn collect<'a>(&'a mut self, _now: Instant, _out: &'a mut Vec<Reading>) -> Collecting<'a> {
            self.2.lock().unwrap().push(format!("collect {}", self.0));
            done(Ok(()))
        }
    }

    #[tokio::test]
    async fn requests_go_out_first_and_their_sources_are_read_last() {
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut apps = AppSet::from_sources(vec![
            Box::new(Logged("a", true, log.clone())),
            Box::new(Logged("b", false, log.clone())),
            Box::new(Logged("c", true, log.clone())),
        ]);
        let mut out = Vec::new();
        apps.collect(&mut out).await;
        let want = ["begin a", "begin b", "begin c", "collect b", "collect a", "collect c"];
        assert_eq!(*log.lock().unwrap(), want);
        assert_eq!(out.iter().filter(|r| r.name.ends_with("_up") && r.value == 1.0).count(), 3);
    }

    /// An async source that logs when its request goes out (its first poll) and when
    /// its answer is read.
    struct Asks(&'static str, Arc<std::sync::Mutex<Vec<String>>>);

    impl AppSource for Asks {
        fn name(&self) -> &'static str {
            self.0
        }
        fn timeout(&self) -> Duration {
            Duration::from_secs(1)
        }
        fn collect<'a>(&'a mut self, _now: Instant, _out: &'a mut Vec<Reading>) -> Collecting<'a> {
            Box::pin(async move {
                self.1.lock().unwrap().push(format!("ask {}", self.0));
                tokio::task::yield_now().await;
                self.1.lock().unwrap().push(format!("answer {}", self.0));
                Ok(())
            })
        }
    }

    #[tokio::test]
    async fn an_async_source_asks_before_the_blocking_ones_and_is_read_after_them() {
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut apps =
            AppSet::from_sources(vec![Box::new(Asks("a", log.clone())), Box::new(Logged("b", false, log.clone()))]);
        let mut out = Vec::new();
        apps.collect(&mut out).await;
        assert_eq!(*log.lock().unwrap(), ["begin b", "ask a", "collect b", "answer a"]);
        assert_eq!(value(&out, "a_up"), Some(1.0));
        assert_eq!(value(&out, "b_up"), Some(1.0));
    }

    /// Counts its collections; read every `self.0`-th collection.
    struct Every(u32, Arc<AtomicU32>);

    impl AppSource for Every {
        fn name(&self) -> &'static str {
            "every"
        }
        fn timeout(&self) -> Duration {
            Duration::from_secs(1)
        }
        fn every(&self) -> u32 {
            self.0
        }
        fn collect<'a>(&'a mut self, _now: Instant, out: &'a mut Vec<Reading>) -> Collecting<'a> {
            out.push(gauge("every_value", "", "every", "", f64::from(self.1.fetch_add(1, Ordering::SeqCst))));
            done(Ok(()))
        }
    }

    #[tokio::test]
    async fn a_source_read_every_third_collection_is_absent_from_the_others() {
        let calls = Arc::new(AtomicU32::new(0));
        let mut apps = AppSet::from_sources(vec![Box::new(Every(3, calls.clone())), Box::new(Every(1, calls.clone()))]);
        let mut present = Vec::new();
        for _ in 0..7 {
            let mut out = Vec::new();
            apps.collect(&mut out).await;
            assert_eq!(apps.skipped().count(), 2 - out.iter().filter(|r| r.name.ends_with("_up")).count());
            let ups = out.iter().filter(|r| r.name == "every_up").count();
            let values = out.iter().filter(|r| r.name == "every_value").count();
            assert_eq!(ups, values, "an _up for every collection made, no other");
            present.push(ups);
        }
        assert_eq!(present, [2, 1, 1, 2, 1, 1, 2]);
        assert_eq!(calls.load(Ordering::SeqCst), 7 + 3);
    }

    #[tokio::test]
    async fn after_priming_the_first_collection_reads_every_source() {
        let calls = Arc::new(AtomicU32::new(0));
        let mut apps = AppSet::from_sources(vec![Box::new(Every(4, calls.clone()))]);
        apps.prime().await;
        let mut present = Vec::new();
        for _ in 0..6 {
            let mut out = Vec::new();
            apps.collect(&mut out).await;
            present.push(out.iter().any(|r| r.name == "every_up"));
        }
        assert_eq!(present, [true, false, false, false, true, false]);
        assert_eq!(calls.load(Ordering::SeqCst), 1 + 2);
    }

    #[test]
    fn health_changes_state_once_per_change() {
        let mut h = Health::new("x");
        let err = "refused";
        assert_eq!(h.record(Some(&err)), 0.0);
        assert!(h.down_since.is_some() && h.up == Some(false));
        assert_eq!(h.record(Some(&err)), 0.0);
        assert_eq!(h.record(None), 1.0);
        assert!(h.down_since.is_none() && h.up == Some(true));
    }
}
