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
    /// Also simulate this many hosts in clusters `web`, `db` and `batch`, over the real
    /// protocol, with a day of history (a noisy neighbour, a filling disk, a busy host
    /// and one that goes silent among them).
    #[arg(long, default_value_t = 0)]
    simulate: usize,
    /// Seconds between the dashboard pages' refreshes.
    #[arg(long, default_value_t = 30)]
    refresh_secs: u64,
    /// Password of the dashboard's `admin` account; default: a random one, printed.
    #[arg(long, env = "GANGLION_DEMO_PASSWORD")]
    admin_password: Option<String>,
}

/// Clusters of the simulated hosts.
const SIM_CLUSTERS: [&str; 3] = ["web", "db", "batch"];

pub async fn run(mut args: DemoArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.data).with_context(|| format!("creating {}", args.data.display()))?;
    // The agent's send socket must be an absolute path, and the default directory is
    // relative to where the demo was started.
    args.data = std::fs::canonicalize(&args.data).with_context(|| format!("resolving {}", args.data.display()))?;
    let mut raw_key = [0u8; 24];
    rand::thread_rng().fill_bytes(&mut raw_key);
    let key = hex::encode(raw_key);
    let mut config = Config::demo(args.ingest, args.web, &key, &args.data);
    if args.simulate > 0 {
        for name in SIM_CLUSTERS {
            let c = config.clusters["demo"].clone();
            config.clusters.insert(name.to_owned(), c);
        }
    }
    let admin_password = args.admin_password.clone().unwrap_or_else(|| {
        let mut raw = [0u8; 9];
        rand::thread_rng().fill_bytes(&mut raw);
        hex::encode(raw)
    });
    config.web.admins = vec![ganglion_web::Admin {
        user: "admin".into(),
        password_hash: ganglion_web::auth::hash_password(&admin_password).map_err(|e| anyhow::anyhow!(e))?,
    }];
    config.web.refresh_secs = args.refresh_secs;
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

    // The send socket lives in the demo's directory, so two demos (or a demo beside an
    // installed agent) do not take each other's socket.
    let quoted = |p: std::path::PathBuf| toml::Value::String(p.to_string_lossy().into_owned()).to_string();
    let agent_raw: ganglion_agent::config::RawConfig = toml::from_str(&format!(
        "collectors = [\"{}\"]\ncluster = \"demo\"\nkey = \"{key}\"\ninterval_secs = {}\nsend_socket = {}\n[spool]\ndir = {}\n",
        running.ingest_addr,
        args.interval_secs,
        quoted(args.data.join("agent-send.sock")),
        quoted(args.data.join("agent-spool")),
    ))
    .context("building the demo agent's configuration")?;
    let mut agent_config = AgentConfig::from_raw(agent_raw).map_err(|e| anyhow::anyhow!("{e}"))?;
    agent_config.first_delay = Some(Duration::ZERO);
    let host = agent_config.host.clone();
    let _agent = ganglion_agent::run(agent_config, shutdown.clone()).await.context("starting the demo agent")?;

    let sim = (args.simulate > 0).then(|| {
        let sim = crate::simulate::Simulation {
            addr: running.ingest_addr.to_string(),
            key: key.clone(),
            hosts: args.simulate,
            clusters: SIM_CLUSTERS.iter().map(|s| (*s).to_owned()).collect(),
            interval: Duration::from_secs(args.interval_secs.max(1)),
            history: Duration::from_secs(86_400),
            silent_after: Duration::from_secs(120),
        };
        tokio::spawn(crate::simulate::run(sim, shutdown.clone()))
    });
    println!("ganglion demo is running (Ctrl-C to stop)");
    println!("  dashboard:  http://{}/", running.web_addr);
    println!("  API:        http://{}/api/v1/health", running.web_addr);
    println!("  this host:  http://{}/api/v1/hosts/{host}", running.web_addr);
    println!("  agents:     {} (cluster \"demo\", key {key})", running.ingest_addr);
    println!("  data:       {}", args.data.display());
    if let Some(nsca) = running.nsca_addr {
        println!("  NSCA:       {nsca} (send_nsca with encryption_method=1, no password)");
    }
    if args.simulate > 0 {
        println!("  simulated:  {} hosts in clusters {}", args.simulate, SIM_CLUSTERS.join(", "));
    }
    println!("  sign in:    http://{}/login as admin, password {admin_password}", running.web_addr);
    println!("  admin:      token {admin_token} (ganglion ack|downtime --api http://{} --token ...)", running.web_addr);
    crate::wait_for_signal().await?;
    tracing::info!("Stopping.");
    shutdown.cancel();
    if let Some(sim) = sim {
        let _ = sim.await;
    }
    running.stopped().await;
    Ok(())
}
