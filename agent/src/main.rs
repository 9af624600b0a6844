//! `ganglion-agent`: the binary around the agent library. Reads the config file, sets
//! up logging and runs until SIGINT/SIGTERM. `--once` prints one collection as a
//! table, for troubleshooting a host. `send` pushes one custom metric, through the
//! running agent's socket or (`--direct`) straight to the collectors, like gmetric.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand, ValueEnum};
use ganglion_agent::config::{AgentConfig, DEFAULT_SEND_SOCKET};
use ganglion_agent::push::{self, Push};
use ganglion_proto::msg::MetricKind;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(name = "ganglion-agent", version, about = "Pushes this host's metrics to ganglion collectors.")]
struct Args {
    /// Agent configuration file (TOML).
    #[arg(long, short, default_value = "/etc/ganglion/agent.toml", global = true)]
    config: PathBuf,
    /// Collect once over `--over-secs`, print a table and exit.
    #[arg(long)]
    once: bool,
    /// Length of the `--once` measurement, in seconds.
    #[arg(long, default_value_t = 1.0)]
    over_secs: f64,
    /// Log filter: error, warn, info, debug, trace, or `target=level` directives
    /// separated by commas (`info,ganglion_agent::send=debug`).
    #[arg(long, default_value = "info", env = "GANGLION_LOG", global = true)]
    log: String,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Push one custom metric: to the running agent, which adds it to its next batch,
    /// or with --direct straight to the collectors of the config file.
    Send(SendArgs),
}

#[derive(clap::Args)]
struct SendArgs {
    /// Metric name (A-Z a-z 0-9 _ - . :).
    #[arg(long)]
    name: String,
    /// Value.
    #[arg(long, allow_negative_numbers = true)]
    value: f64,
    /// Unit shown with the value (`s`, `jobs`, `bytes/sec`).
    #[arg(long, default_value = "")]
    unit: String,
    /// Gauge (a level) or counter (an ever-increasing count).
    #[arg(long = "type", value_enum, default_value_t = Kind::Gauge)]
    kind: Kind,
    /// Dashboard group.
    #[arg(long, default_value = "custom")]
    group: String,
    /// Seconds the value stays current: the running agent repeats a gauge in its
    /// batches for this long after the push.
    #[arg(long, default_value_t = push::DEFAULT_TMAX.as_secs())]
    tmax: u64,
    /// The agent's socket. Default: `send_socket` of the config file, else /run/ganglion-agent/send.sock.
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Send straight to the collectors named in the config file, in a one-shot session.
    #[arg(long)]
    direct: bool,
    /// With --direct: report under this host name instead of the config's.
    #[arg(long, requires = "direct")]
    host: Option<String>,
    /// With --direct: report in this cluster (the config's key must be that cluster's).
    #[arg(long, requires = "direct")]
    cluster: Option<String>,
}

#[derive(Clone, Copy, ValueEnum)]
enum Kind {
    Gauge,
    Counter,
}

fn main() -> ExitCode {
    let args = Args::parse();
    // `Targets` rather than `EnvFilter`: the latter brings a regular-expression engine,
    // a quarter of the agent's code, for span and field filters nobody needs here.
    let filter: tracing_subscriber::filter::Targets = match args.log.parse() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("ganglion-agent: --log {}: {e}", args.log);
            return ExitCode::FAILURE;
        }
    };
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
        )
        .with(filter)
        .init();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ganglion-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime(config: Option<&AgentConfig>) -> anyhow::Result<tokio::runtime::Runtime> {
    // A slow blocking source runs on the blocking pool once per interval; keeping its
    // thread a little longer than that reuses it instead of starting a new one.
    let keep = config.map_or(Duration::from_secs(10), |c| c.interval + Duration::from_secs(5));
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_keep_alive(keep)
        .max_blocking_threads(16)
        .build()?)
}

fn run(args: Args) -> anyhow::Result<()> {
    if let Some(Command::Send(s)) = args.command {
        return send(&args.config, s);
    }
    if args.once {
        // Without a config file the table shows this host's metrics; a file that is
        // there but wrong is an error, not a silent host-only table.
        let config = match AgentConfig::load(&args.config) {
            Ok(c) => Some(c),
            Err(_) if !args.config.try_exists().unwrap_or(true) => {
                eprintln!("ganglion-agent: {} does not exist; host metrics only.", args.config.display());
                None
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", args.config.display())),
        };
        let over = Duration::try_from_secs_f64(args.over_secs).context("--over-secs")?;
        let readings = runtime(config.as_ref())?.block_on(ganglion_agent::collect_once(config.as_ref(), over));
        print!("{}", ganglion_agent::collect::render_table(&readings));
        return Ok(());
    }
    let config = AgentConfig::load(&args.config).with_context(|| format!("reading {}", args.config.display()))?;
    let rt = runtime(Some(&config))?;
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

fn send(config_path: &std::path::Path, s: SendArgs) -> anyhow::Result<()> {
    let p = Push {
        name: s.name,
        value: s.value,
        unit: s.unit,
        kind: match s.kind {
            Kind::Gauge => MetricKind::Gauge,
            Kind::Counter => MetricKind::Counter,
        },
        group: s.group,
        tmax: Duration::from_secs(s.tmax),
    };
    p.check()?;
    if s.direct {
        let config = AgentConfig::load(config_path).with_context(|| format!("reading {}", config_path.display()))?;
        let results = runtime(None)?.block_on(push::direct(
            &config,
            s.cluster.as_deref(),
            s.host.as_deref(),
            std::slice::from_ref(&p),
        ));
        let mut failed = 0;
        for (collector, r) in results {
            if let Err(e) = r {
                eprintln!("ganglion-agent: {collector}: {e}");
                failed += 1;
            }
        }
        if failed > 0 {
            bail!("{failed} collector(s) did not take the metric");
        }
        return Ok(());
    }
    let socket = match s.socket {
        Some(p) => p,
        None if config_path.exists() => AgentConfig::load(config_path)
            .with_context(|| format!("reading {}", config_path.display()))?
            .send_socket
            .context("the agent's send_socket is turned off in its config; use --direct")?,
        None => PathBuf::from(DEFAULT_SEND_SOCKET),
    };
    let answers = push::send_to_socket(&socket, std::slice::from_ref(&p), Duration::from_secs(5))
        .with_context(|| format!("sending to the agent at {} (is it running? --direct skips it)", socket.display()))?;
    if let Some(Err(e)) = answers.into_iter().next() {
        bail!("the agent refused {}: {e}", p.name);
    }
    Ok(())
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
