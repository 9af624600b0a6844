//! `ganglion-agent`: the binary around the agent library. Reads the config file, sets
//! up logging and runs until SIGINT/SIGTERM. `--once` prints one collection as a
//! table, for troubleshooting a host.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use ganglion_agent::config::AgentConfig;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(name = "ganglion-agent", version, about = "Pushes this host's metrics to ganglion collectors.")]
struct Args {
    /// Agent configuration file (TOML).
    #[arg(long, short, default_value = "/etc/ganglion/agent.toml")]
    config: PathBuf,
    /// Collect once over `--over-secs`, print a table and exit.
    #[arg(long)]
    once: bool,
    /// Length of the `--once` measurement, in seconds.
    #[arg(long, default_value_t = 1.0)]
    over_secs: f64,
    /// Log filter (error, warn, info, debug, trace or a tracing directive).
    #[arg(long, default_value = "info", env = "GANGLION_LOG")]
    log: String,
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&args.log))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ganglion-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    if args.once {
        let skip = match AgentConfig::load(&args.config) {
            Ok(c) => c.skip_devices,
            Err(_) => ganglion_agent::collect::HostConfig::default().skip_devices,
        };
        let over = Duration::try_from_secs_f64(args.over_secs).context("--over-secs")?;
        let readings = ganglion_agent::collect_once(over, skip);
        print!("{}", ganglion_agent::collect::render_table(&readings));
        return Ok(());
    }
    let config = AgentConfig::load(&args.config).with_context(|| format!("reading {}", args.config.display()))?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        let shutdown = CancellationToken::new();
        let agent = ganglion_agent::run(config, shutdown.clone()).await.context("starting the agent")?;
        wait_for_signal().await?;
        tracing::info!(batches = agent.stats().collections.load(std::sync::atomic::Ordering::Relaxed), "Stopping.");
        shutdown.cancel();
        tokio::time::sleep(Duration::from_millis(200)).await;
        Ok(())
    })
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    Ok(())
}
