//! `ganglion demo`: a collector, the dashboard and an agent for this host in one
//! process, on embedded defaults, so a new user sees the stack work with one command.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use ganglion_agent::config::AgentConfig;
use rand::RngCore;
use tokio_util::sync::CancellationToken;

use crate::config::Config;

#[derive(clap::Args)]
pub struct DemoArgs {
    /// Directory for the demo's data (created if missing).
    #[arg(long, default_value = "ganglion-demo")]
    data: PathBuf,
    /// Address the collector takes agents on.
    #[arg(long, default_value = "127.0.0.1:8650")]
    ingest: SocketAddr,
    /// Address of the dashboard and API.
    #[arg(long, default_value = "127.0.0.1:8080")]
    web: SocketAddr,
    /// Address of the NSCA listener for `send_nsca` (encryption_method 1, no password).
    #[arg(long, default_value = "127.0.0.1:5667")]
    nsca: SocketAddr,
    /// Seconds between the demo agent's collections.
    #[arg(long, default_value_t = 5)]
    interval_secs: u64,
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.data).with_context(|| format!("creating {}", args.data.display()))?;
    let mut raw_key = [0u8; 24];
    rand::thread_rng().fill_bytes(&mut raw_key);
    let key = hex::encode(raw_key);
    let mut config = Config::demo(args.ingest, args.web, &key, &args.data);
    // Checks: NSCA as a stock send_nsca configuration speaks it, and an admin token for
    // acks and downtime from this run's output.
    config.nsca = Some(crate::nsca::NscaConfig {
        listen: args.nsca,
        codec: ganglion_checks::nsca::Config {
            method: ganglion_checks::nsca::Method::Xor,
            password: Vec::new(),
            max_packet_age_secs: ganglion_checks::nsca::DEFAULT_MAX_PACKET_AGE_SECS,
        },
        max_connections: 1024,
    });
    let mut raw_token = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut raw_token);
    let admin_token = hex::encode(raw_token);
    config.admin_token = Some(admin_token.clone());
    let shutdown = CancellationToken::new();
    let running = crate::server::start(&config, shutdown.clone()).await?;

    let agent_raw: ganglion_agent::config::RawConfig = toml::from_str(&format!(
        "collectors = [\"{}\"]\ncluster = \"demo\"\nkey = \"{key}\"\ninterval_secs = {}\n[spool]\ndir = \"{}\"\n",
        running.ingest_addr,
        args.interval_secs,
        args.data.join("agent-spool").display()
    ))
    .context("building the demo agent's configuration")?;
    let mut agent_config = AgentConfig::from_raw(agent_raw).map_err(|e| anyhow::anyhow!("{e}"))?;
    agent_config.first_delay = Some(Duration::ZERO);
    let host = agent_config.host.clone();
    let _agent = ganglion_agent::run(agent_config, shutdown.clone()).await.context("starting the demo agent")?;

    println!("ganglion demo is running (Ctrl-C to stop)");
    println!("  dashboard:  http://{}/", running.web_addr);
    println!("  API:        http://{}/api/v1/health", running.web_addr);
    println!("  this host:  http://{}/api/v1/hosts/{host}", running.web_addr);
    println!("  agents:     {} (cluster \"demo\", key {key})", running.ingest_addr);
    println!("  data:       {}", args.data.display());
    if let Some(nsca) = running.nsca_addr {
        println!("  NSCA:       {nsca} (send_nsca with encryption_method=1, no password)");
    }
    println!("  admin:      token {admin_token} (ganglion ack|downtime --api http://{} --token ...)", running.web_addr);
    crate::wait_for_signal().await?;
    tracing::info!("Stopping.");
    shutdown.cancel();
    running.stopped().await;
    Ok(())
}
