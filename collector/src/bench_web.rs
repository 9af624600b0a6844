//! `ganglion bench-web-data` (hidden, for `scripts/bench-web`): writes days of
//! simulated history straight into a stopped collector's storage, so the dashboard
//! benchmark reads a week of full-resolution data without waiting a week.
//!
//! Each series is built in memory as an RRD with the configured step and archives
//! (the same update path as live samples), then imported with `Store::import`. The
//! values are those of `ganglion demo --simulate` for the same host number, so the
//! simulated hosts that connect afterwards continue the same series. `--export`
//! prints one series as `time:value` lines for `rrdtool update`, so `rrdtool graph`
//! draws the very same data.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use ganglion_store::engine::{SeriesKey, Store};
use ganglion_store::rrd::{DsDef, DsType, RraDef, Rrd};

use crate::config::Config;

#[derive(clap::Args)]
pub struct BenchWebDataArgs {
    /// The collector's configuration (data_dir and storage archives).
    #[arg(long)]
    config: PathBuf,
    #[arg(long, default_value = "bench")]
    cluster: String,
    #[arg(long, default_value_t = 1000)]
    hosts: usize,
    #[arg(long, default_value_t = 7)]
    days: u64,
    /// Metrics per host written (the first of the simulated set in this order).
    #[arg(long, value_delimiter = ',', default_value = "load_one,cpu_user,cpu_system,bytes_out")]
    metrics: Vec<String>,
    /// Archives of the written series (rrdtool syntax). A series keeps the definition
    /// it was created with, so the collector's own `storage.archives` can stay small
    /// for every other series. Default: a week at 15 s and a week at 10 minutes.
    #[arg(long, value_delimiter = ',', default_value = "RRA:AVERAGE:0.5:1:40320,RRA:AVERAGE:0.5:40:1008")]
    archives: Vec<String>,
    /// Instead of writing: print host number N's first metric as `time:value` lines.
    #[arg(long)]
    export: Option<usize>,
    /// End of the history, unix seconds (default: now).
    #[arg(long)]
    end: Option<i64>,
}

pub fn run(args: &BenchWebDataArgs) -> anyhow::Result<ExitCode> {
    let config = Config::load(&args.config).with_context(|| format!("reading {}", args.config.display()))?;
    let step = config.storage.step_secs as i64;
    let end = args.end.unwrap_or_else(|| crate::state::now_ms() / 1000);
    let end = end - end % step;
    let start = end - args.days as i64 * 86_400;
    let sim = crate::simulate::Simulation {
        addr: String::new(),
        key: String::new(),
        hosts: args.hosts,
        clusters: vec![args.cluster.clone()],
        interval: std::time::Duration::from_secs(15),
        history: std::time::Duration::from_secs(args.days * 86_400),
        silent_after: std::time::Duration::from_secs(u64::MAX / 4),
    };
    let idx: Vec<usize> = args
        .metrics
        .iter()
        .map(|m| crate::simulate::metric_index(m).with_context(|| format!("{m} is not a simulated metric")))
        .collect::<anyhow::Result<_>>()?;
    if let Some(i) = args.export {
        let out = std::io::stdout();
        let mut out = std::io::BufWriter::new(out.lock());
        let mut t = start + step;
        while t <= end {
            writeln!(out, "{t}:{}", crate::simulate::values_at(i, t, start, end)[idx[0]])?;
            t += step;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let archives: Vec<RraDef> = args
        .archives
        .iter()
        .map(|a| RraDef::parse(a).map_err(|e| anyhow::anyhow!("{a}: {e}")))
        .collect::<anyhow::Result<_>>()?;
    let dir = config.data_dir.join("store");
    let store = Store::open(&dir, config.storage.clone()).with_context(|| format!("opening {}", dir.display()))?;
    let began = Instant::now();
    let ds = DsDef {
        name: "value".into(),
        kind: DsType::Gauge,
        heartbeat: config.storage.heartbeat_secs,
        min: f64::NAN,
        max: f64::NAN,
    };
    let mut samples = 0u64;
    for i in 0..args.hosts {
        let (cluster, host) = crate::simulate::host_name(&sim, i);
        let mut dbs: Vec<Rrd> = idx
            .iter()
            .map(|_| Rrd::create(step as u64, start as u64, vec![ds.clone()], archives.clone()))
            .collect::<Result<_, _>>()
            .map_err(|e| anyhow::anyhow!("archive definition: {e}"))?;
        let mut t = start + step;
        let mut buf = String::new();
        while t <= end {
            let v = crate::simulate::values_at(i, t, start, end);
            for (db, &m) in dbs.iter_mut().zip(&idx) {
                buf.clear();
                use std::fmt::Write as _;
                let _ = write!(buf, "{}", v[m]);
                db.update(t as u64, &[&buf]).map_err(|e| anyhow::anyhow!("update at {t}: {e}"))?;
                samples += 1;
            }
            t += step;
        }
        for (db, name) in dbs.iter().zip(&args.metrics) {
            store
                .import(&SeriesKey::new(&cluster, &host, name), db, 0)
                .with_context(|| format!("importing {cluster}/{host}/{name}"))?;
        }
        if i % 100 == 99 {
            eprintln!("{} hosts written ({:.0} s)", i + 1, began.elapsed().as_secs_f64());
        }
    }
    store.close().context("closing the storage")?;
    eprintln!(
        "{} series, {samples} samples, {} days, written in {:.1} s",
        args.hosts * idx.len(),
        args.days,
        began.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}
