//! `ganglion`: the collector binary.
//!
//! This crate owns the collector process: receiving agent frames (`ingest`), the
//! in-memory table of hosts and latest values (`state`), counters (`stats`), the
//! JSON API (`api`) and the operator subcommands. Wire-format rules live in
//! `ganglion-proto`, the pages in `ganglion-web`.
//!
//! Layout:
//! - `config`: the TOML file, checked with line and column.
//! - `ingest`: the agent listener, one task per connection.
//! - `state`: hosts, latest values, liveness and expiry.
//! - `stats`: counters and the one place rejections are logged.
//! - `api`: `/api/v1/...`.
//! - `server`: binds listeners, starts and stops the tasks.
//! - `engine`: the checks engine (definitions, scheduling, plugins, state database).
//! - `cli_checks`: `ganglion status`, `ack`, `downtime`, `checks list` over the API.
//! - `durable`: one thread waiting for the storage journal on behalf of every connection.
//! - `demo`: collector + dashboard + an agent for this host in one process.
//! - `loadgen`: simulated agents for `scripts/bench-ingest`.
//! - `simulate`: plausible simulated hosts for `ganglion demo --simulate N`.
//! - `nsca`: the NSCA listener for passive results from `send_nsca`.
//! - `import`: `ganglion import-rrd`, a Ganglia RRD tree into a stopped collector's storage.
//! - `dashboard`: what the dashboard (`ganglion-web`) reads, from state, storage and checks.
//! - `alerts`: notifications (contacts, routes, escalations, grouping, the outbox,
//!   email, SMS and webhooks) and `ganglion notify test`.

mod alerts;
mod api;
mod bench_web;
mod cli_checks;
mod config;
mod dashboard;
mod demo;
mod durable;
mod engine;
mod import;
mod ingest;
mod loadgen;
mod nsca;
mod server;
mod simulate;
mod state;
mod stats;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(name = "ganglion", version, about = "ganglion collector: ingest, API and dashboard.")]
struct Args {
    /// Log filter (error, warn, info, debug, trace or a tracing directive).
    #[arg(long, global = true, default_value = "info", env = "GANGLION_LOG")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a collector from a configuration file.
    Serve {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Check a configuration file and print every problem with its line and column.
    CheckConfig { file: PathBuf },
    /// Start a collector, the dashboard and an agent for this host, on embedded defaults.
    Demo(demo::DemoArgs),
    /// Simulate many agents against a collector (for benchmarks).
    Loadgen(loadgen::LoadgenArgs),
    /// rrdtool-compatible commands on ganglion round-robin files (create, update, fetch, info, dump).
    Rrd {
        #[command(subcommand)]
        cmd: ganglion_store::cli::RrdCommand,
    },
    /// Import a Ganglia/gmetad RRD tree (DIR/<cluster>/<host>/<metric>.rrd) with its
    /// history into the storage of a stopped collector.
    ImportRrd(import::ImportArgs),
    /// Check states of a running collector: every check, or the problems, unhandled first.
    Status(cli_checks::StatusArgs),
    /// Acknowledge a problem of a host or service (or remove an acknowledgement).
    Ack(cli_checks::AckArgs),
    /// Schedule downtime for a host or service (one-off or recurring), list or delete it.
    Downtime(cli_checks::DowntimeArgs),
    /// Check definitions: `ganglion checks list --host H` shows a host's effective checks.
    Checks {
        #[command(subcommand)]
        cmd: cli_checks::ChecksCommand,
    },
    /// Hash a dashboard admin password for `[[web.admin]] password_hash` (reads it from
    /// standard input, one line).
    HashPassword,
    /// Notifications: `ganglion notify test CONTACT --config FILE` sends a test message
    /// through each of the contact's channels.
    Notify {
        #[command(subcommand)]
        cmd: NotifyCommand,
    },
    /// Simulated history written straight into a stopped collector's storage (for
    /// scripts/bench-web).
    #[command(hide = true)]
    BenchWebData(bench_web::BenchWebDataArgs),
    /// Simulated hosts with the demo's shapes against a running collector (for
    /// scripts/bench-web).
    #[command(hide = true)]
    Simulate(simulate::SimulateArgs),
    /// One evaluation round of many metric checks in-process (for scripts/bench-checks).
    #[command(hide = true)]
    BenchChecks(engine::bench::BenchArgs),
}

#[derive(Subcommand)]
enum NotifyCommand {
    /// Send a test message to CONTACT by email, SMS email and webhook, as configured.
    Test {
        contact: String,
        #[arg(long, short)]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&args.log))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(args.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ganglion: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::CheckConfig { file } => match config::Config::load(&file) {
            Ok(c) => {
                println!("{}: ok ({} clusters)", file.display(), c.clusters.len());
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("{e}");
                Ok(ExitCode::from(1))
            }
        },
        Command::Serve { config } => {
            let config = config::Config::load(&config).with_context(|| format!("reading {}", config.display()))?;
            runtime()?.block_on(async move {
                let shutdown = CancellationToken::new();
                let running = server::start(&config, shutdown.clone()).await?;
                wait_for_signal().await?;
                tracing::info!("Stopping.");
                shutdown.cancel();
                running.stopped().await;
                Ok(ExitCode::SUCCESS)
            })
        }
        Command::Demo(args) => runtime()?.block_on(demo::run(args)).map(|()| ExitCode::SUCCESS),
        Command::Rrd { cmd } => ganglion_store::cli::run(cmd),
        Command::ImportRrd(args) => import::run(&args),
        Command::Status(args) => cli_checks::status(args),
        Command::Ack(args) => cli_checks::ack(args),
        Command::Downtime(args) => cli_checks::downtime(args),
        Command::Checks { cmd } => cli_checks::checks(cmd),
        Command::BenchWebData(args) => bench_web::run(&args),
        Command::Simulate(args) => {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(async move {
                let stop = CancellationToken::new();
                let s = stop.clone();
                let task = tokio::spawn(simulate::run(args.into_simulation(), s));
                wait_for_signal().await?;
                stop.cancel();
                task.await??;
                Ok(ExitCode::SUCCESS)
            })
        }
        Command::HashPassword => {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).context("reading the password from standard input")?;
            let password = line.trim_end_matches(['\r', '\n']);
            if password.is_empty() {
                anyhow::bail!("the password is empty");
            }
            println!("{}", ganglion_web::auth::hash_password(password).map_err(|e| anyhow::anyhow!(e))?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Notify { cmd: NotifyCommand::Test { contact, config } } => {
            let config = config::Config::load(&config).with_context(|| format!("reading {}", config.display()))?;
            for line in alerts::send_test(&config.alerts, &contact)? {
                println!("{line}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::BenchChecks(args) => engine::bench::run(&args).map(|()| ExitCode::SUCCESS),
        Command::Loadgen(args) => {
            // One thread, so the collector under test keeps the other core.
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(loadgen::run(args)).map(|()| ExitCode::SUCCESS)
        }
    }
}

pub(crate) async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    Ok(())
}
