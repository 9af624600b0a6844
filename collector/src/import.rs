//! `ganglion import-rrd --config FILE DIR`: brings a Ganglia/gmetad RRD tree
//! (`DIR/<cluster>/<host>/<metric>.rrd`, gmetad's `rrds` directory) into the storage of
//! a stopped collector, with its history (`ganglion_store::import`, through
//! `rrdtool dump`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use ganglion_store::engine::{Store, StoreConfig, StoreOptions};

use crate::config::Config;

#[derive(clap::Args)]
pub struct ImportArgs {
    /// The collector's configuration: its data_dir receives the series, its
    /// [storage] settings apply.
    #[arg(long, short)]
    config: PathBuf,
    /// The RRD tree: one directory per cluster, one per host inside, `<metric>.rrd` files.
    dir: PathBuf,
}

/// Runs the import; exit code 1 when some file or series was left out (each is printed
/// with the reason; series that exist already are among them, so an import can be run
/// again after a partial failure).
///
/// # Errors
/// When the configuration or the storage cannot be opened, the collector is running,
/// `rrdtool` is missing or `dir` cannot be read.
pub fn run(args: &ImportArgs) -> anyhow::Result<ExitCode> {
    let config = Config::load(&args.config).with_context(|| format!("reading {}", args.config.display()))?;
    std::process::Command::new("rrdtool")
        .arg("--version")
        .output()
        .context("import-rrd reads RRD files with rrdtool dump: install rrdtool (Debian package rrdtool)")?;
    // The collector holds this lock while it runs: its journal and catalog are not
    // shared.
    let _lock = crate::server::lock_data_dir(&config.data_dir)?;
    let dir = config.data_dir.join("store");
    // No flusher or block scan: an import writes each series durably itself.
    let cfg = StoreConfig { background: false, ..config.storage.clone() };
    let opts = StoreOptions { rules: config.storage_rules.clone(), scan_blocks: false, ..StoreOptions::default() };
    let store =
        Store::open_with(&dir, cfg, opts).with_context(|| format!("opening the storage in {}", dir.display()))?;
    let t0 = Instant::now();
    let mut shown = Instant::now() - Duration::from_secs(1);
    let report = ganglion_store::import::import_tree_progress(&store, &args.dir, |k, n, f: &Path| {
        if k == n || shown.elapsed() >= Duration::from_secs(1) {
            eprintln!("[{k}/{n}] {}", f.strip_prefix(&args.dir).unwrap_or(f).display());
            shown = Instant::now();
        }
    })
    .with_context(|| format!("reading {}", args.dir.display()))?;
    store.close().context("closing the storage")?;
    for (f, why) in &report.skipped {
        eprintln!("skipped {}: {why}", f.display());
    }
    let mut unknown: Vec<&str> = report
        .imported
        .iter()
        .filter_map(|k| k.split('/').next())
        .filter(|c| !config.clusters.contains_key(*c))
        .collect();
    unknown.dedup();
    for c in unknown {
        eprintln!(
            "warning: cluster {c} is not in {}: its agents cannot report, and its series are reached with ?cluster=",
            args.config.display()
        );
    }
    println!(
        "imported {} series in {:.1} s; {} left out",
        report.imported.len(),
        t0.elapsed().as_secs_f64(),
        report.skipped.len()
    );
    Ok(if report.skipped.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
