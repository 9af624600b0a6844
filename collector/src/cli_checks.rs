//! Operator subcommands for checks, talking to a running collector's HTTP API:
//! `ganglion status`, `ganglion ack`, `ganglion downtime`, `ganglion checks list`.
//!
//! The collector is found with `--api URL` (or `GANGLION_API`), or through `--config`,
//! the collector's own configuration file, which also gives the admin token that the
//! write commands need (else `--token`, `GANGLION_ADMIN_TOKEN` or `--token-file`).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::{json, Value};

/// Where the collector is and how to authenticate.
#[derive(clap::Args, Debug, Clone)]
pub struct Target {
    /// Base URL of the collector's API, e.g. `http://127.0.0.1:8080`.
    #[arg(long, env = "GANGLION_API")]
    api: Option<String>,
    /// The collector's configuration file: the API address (`[web] listen`) and the admin
    /// token (`[api]`) are read from it.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Admin token for write commands.
    #[arg(long, env = "GANGLION_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// File whose first line is the admin token.
    #[arg(long)]
    token_file: Option<PathBuf>,
}

struct Client {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
}

impl Target {
    fn client(&self) -> anyhow::Result<Client> {
        let mut base = self.api.clone();
        let mut token = self.token.clone();
        if let Some(path) = &self.config {
            let c = crate::config::Config::load(path).with_context(|| format!("reading {}", path.display()))?;
            let mut web = c.web_listen;
            if web.ip().is_unspecified() {
                web.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
            }
            base.get_or_insert_with(|| format!("http://{web}"));
            if token.is_none() {
                token = c.admin_token;
            }
        }
        if let (None, Some(f)) = (&token, &self.token_file) {
            let t = std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
            token = Some(t.lines().next().unwrap_or("").trim().to_owned());
        }
        let base = base.unwrap_or_else(|| "http://127.0.0.1:8080".into());
        let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(30)).build();
        Ok(Client { base: base.trim_end_matches('/').to_owned(), token, agent })
    }
}

impl Client {
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let mut req = self.agent.request(method, &url);
        if let Some(t) = &self.token {
            req = req.set("Authorization", &format!("Bearer {t}"));
        }
        let resp = match body {
            Some(b) => req.send_json(b.clone()),
            None => req.call(),
        };
        match resp {
            Ok(r) => Ok(r.into_json().unwrap_or(Value::Null)),
            Err(ureq::Error::Status(code, r)) => {
                let v: Value = r.into_json().unwrap_or(Value::Null);
                let msg = v["error"].as_str().map_or_else(|| v.to_string(), str::to_owned);
                let hint = if code == 401 && self.token.is_none() {
                    " (give --token, --token-file, GANGLION_ADMIN_TOKEN or --config)"
                } else {
                    ""
                };
                bail!("{method} {url}: {code}: {msg}{hint}")
            }
            Err(e) => bail!("{method} {url}: {e}"),
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    /// Only problems, unhandled first.
    #[arg(long)]
    problems: bool,
    /// Only this host.
    #[arg(long)]
    host: Option<String>,
    /// Print the API's JSON instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    target: Target,
}

#[derive(clap::Args, Debug)]
pub struct AckArgs {
    host: String,
    /// Without it, the host check is acknowledged.
    service: Option<String>,
    /// Why (shown with the problem and in the notification); required unless --remove.
    #[arg(long, short = 'm')]
    comment: Option<String>,
    /// Keep the acknowledgement until the check is OK again.
    #[arg(long)]
    sticky: bool,
    /// Who acknowledges. Default: the user name.
    #[arg(long)]
    author: Option<String>,
    /// Do not send an ACKNOWLEDGEMENT notification.
    #[arg(long)]
    no_notify: bool,
    /// Keep the comment after the acknowledgement is gone.
    #[arg(long)]
    persistent: bool,
    /// Only in this cluster (default: every cluster with the host).
    #[arg(long)]
    cluster: Option<String>,
    /// Remove the acknowledgement instead.
    #[arg(long)]
    remove: bool,
    #[command(flatten)]
    target: Target,
}

#[derive(clap::Args, Debug)]
pub struct DowntimeArgs {
    /// Host to schedule downtime for (not needed with --list or --delete).
    #[arg(required_unless_present_any = ["list", "delete"])]
    host: Option<String>,
    /// Without it, the downtime is for the host (and so all its services).
    service: Option<String>,
    /// Start: `now`, `+2h`, seconds since the epoch or RFC 3339 (`2025-01-05T02:00:00Z`).
    /// Default now.
    #[arg(long)]
    start: Option<String>,
    /// End, in the same forms.
    #[arg(long, conflicts_with = "cron")]
    end: Option<String>,
    /// Length: `90m`, `2h`, `1d` or seconds. With --flexible, how long it lasts once it
    /// starts; with --cron, the length of each window.
    #[arg(long)]
    duration: Option<String>,
    /// Starts only when the check enters a problem state inside [start, end].
    #[arg(long)]
    flexible: bool,
    /// Recurring: a cron expression for the window starts, e.g. `0 2 * * Sun`.
    #[arg(long)]
    cron: Option<String>,
    /// Time zone the cron expression is read in (`UTC`, `+02:00`, `Europe/Berlin`).
    #[arg(long, default_value = "UTC")]
    tz: String,
    #[arg(long, short = 'm', default_value = "")]
    comment: String,
    #[arg(long)]
    author: Option<String>,
    /// List the scheduled downtimes.
    #[arg(long)]
    list: bool,
    /// Delete the downtime with this id.
    #[arg(long)]
    delete: Option<u64>,
    #[command(flatten)]
    target: Target,
}

#[derive(clap::Subcommand, Debug)]
pub enum ChecksCommand {
    /// The effective checks of a host and where each setting came from.
    List {
        #[arg(long)]
        host: String,
        #[arg(long)]
        cluster: Option<String>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
}

fn user() -> String {
    std::env::var("USER").or_else(|_| std::env::var("LOGNAME")).unwrap_or_else(|_| "ganglion".into())
}

fn query_escape(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Seconds for `90`, `90s`, `15m`, `2h`, `1d`, `1w`.
pub fn parse_duration(text: &str) -> anyhow::Result<u64> {
    let t = text.trim();
    let (num, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let n: u64 = num.parse().with_context(|| format!("{text:?} is not a duration (like 90m, 2h, 1d)"))?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => bail!("{text:?}: unit must be s, m, h, d or w"),
    };
    Ok(n * mult)
}

/// Seconds since the epoch for `now`, `+2h`, `now+2h`, an epoch number or RFC 3339.
pub fn parse_time(text: &str, now: i64) -> anyhow::Result<i64> {
    let t = text.trim();
    if t == "now" {
        return Ok(now);
    }
    if let Some(rel) = t.strip_prefix("now+").or_else(|| t.strip_prefix('+')) {
        return Ok(now + i64::try_from(parse_duration(rel)?)?);
    }
    if let Ok(n) = t.parse::<i64>() {
        return Ok(n);
    }
    chrono::DateTime::parse_from_rfc3339(t)
        .map(|d| d.timestamp())
        .with_context(|| format!("{text:?} is not a time (now, +2h, epoch seconds or 2025-01-05T02:00:00Z)"))
}

fn fmt_time(t: Option<i64>) -> String {
    t.and_then(|t| chrono::DateTime::from_timestamp(t, 0))
        .map_or_else(|| "-".to_owned(), |d| d.format("%Y-%m-%d %H:%M:%S").to_string())
}

pub fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let c = args.target.client()?;
    let path = match (&args.problems, &args.host) {
        (true, _) => "/api/v1/status/problems".to_owned(),
        (false, Some(h)) => format!("/api/v1/status?host={}", query_escape(h)),
        (false, None) => "/api/v1/status".to_owned(),
    };
    let mut v = c.call("GET", &path, None)?;
    if let (true, Some(h), Some(list)) = (args.problems, &args.host, v.as_array_mut()) {
        list.retain(|x| x["host"] == h.as_str());
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(
        out,
        "{:<24} {:<28} {:<11} {:<4} {:>5} {:<5} {:<19} OUTPUT",
        "HOST", "SERVICE", "STATE", "TYPE", "TRY", "FLAGS", "SINCE"
    )?;
    let mut unhandled = 0;
    for x in v.as_array().map(Vec::as_slice).unwrap_or_default() {
        let flag = |k: &str, c: char| if x[k] == true { c } else { '-' };
        let flags: String =
            [flag("acknowledged", 'A'), flag("in_downtime", 'D'), flag("flapping", 'F'), flag("pending", 'P')]
                .into_iter()
                .collect();
        if x["problem"] == true && x["handled"] == false && x["pending"] == false {
            unhandled += 1;
        }
        let service = x["service"].as_str().filter(|s| !s.is_empty()).unwrap_or("(host)");
        writeln!(
            out,
            "{:<24} {:<28} {:<11} {:<4} {:>5} {:<5} {:<19} {}",
            x["host"].as_str().unwrap_or(""),
            service,
            x["state"].as_str().unwrap_or(""),
            x["state_type"].as_str().unwrap_or("").get(..4).unwrap_or(""),
            format!("{}/{}", x["attempt"], x["max_attempts"]),
            flags,
            fmt_time(x["last_state_change"].as_i64()),
            x["output"].as_str().unwrap_or("")
        )?;
    }
    if args.problems {
        writeln!(out, "{unhandled} unhandled problem(s); flags: A acknowledged, D downtime, F flapping, P pending")?;
    }
    Ok(ExitCode::SUCCESS)
}

pub fn ack(args: AckArgs) -> anyhow::Result<ExitCode> {
    let c = args.target.client()?;
    if args.remove {
        let mut path = format!("/api/v1/ack?host={}", query_escape(&args.host));
        if let Some(s) = &args.service {
            path.push_str(&format!("&service={}", query_escape(s)));
        }
        if let Some(cl) = &args.cluster {
            path.push_str(&format!("&cluster={}", query_escape(cl)));
        }
        let v = c.call("DELETE", &path, None)?;
        println!("removed {} acknowledgement(s)", v["removed"]);
        return Ok(ExitCode::SUCCESS);
    }
    let comment = args.comment.context("--comment is required: say why the problem is acknowledged")?;
    let body = json!({
        "host": args.host,
        "service": args.service,
        "cluster": args.cluster,
        "comment": comment,
        "author": args.author.unwrap_or_else(user),
        "sticky": args.sticky,
        "notify": !args.no_notify,
        "persistent": args.persistent,
    });
    let v = c.call("POST", "/api/v1/ack", Some(&body))?;
    println!("acknowledged {} check(s)", v["acknowledged"]);
    Ok(ExitCode::SUCCESS)
}

pub fn downtime(args: DowntimeArgs) -> anyhow::Result<ExitCode> {
    let c = args.target.client()?;
    if let Some(id) = args.delete {
        c.call("DELETE", &format!("/api/v1/downtime/{id}"), None)?;
        println!("deleted downtime {id}");
        return Ok(ExitCode::SUCCESS);
    }
    if args.list {
        let v = c.call("GET", "/api/v1/downtime", None)?;
        println!(
            "{:>4} {:<24} {:<24} {:<6} {:<36} {:<8} COMMENT",
            "ID", "HOST", "SERVICE", "ACTIVE", "SCHEDULE", "MODE"
        );
        for d in v.as_array().map(Vec::as_slice).unwrap_or_default() {
            let sched = &d["schedule"];
            let when = match sched["kind"].as_str() {
                Some("recurring") => format!(
                    "{} ({}s, {})",
                    sched["cron"].as_str().unwrap_or(""),
                    sched["window_secs"],
                    sched["time_zone"].as_str().unwrap_or("")
                ),
                _ => format!("{} .. {}", fmt_time(sched["start"].as_i64()), fmt_time(sched["end"].as_i64())),
            };
            println!(
                "{:>4} {:<24} {:<24} {:<6} {:<36} {:<8} {}",
                d["id"],
                d["target"]["host"].as_str().unwrap_or(""),
                d["target"]["service"].as_str().unwrap_or("(host)"),
                if d["in_effect"] == true { "yes" } else { "no" },
                when,
                d["mode"]["mode"].as_str().unwrap_or(""),
                d["comment"].as_str().unwrap_or("")
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let host = args.host.context("a host is needed")?;
    let now = crate::engine::now_secs();
    let duration = args.duration.as_deref().map(parse_duration).transpose()?;
    let mut body = json!({
        "host": host,
        "service": args.service,
        "flexible": args.flexible,
        "author": args.author.unwrap_or_else(user),
        "comment": args.comment,
    });
    if let Some(cron) = &args.cron {
        body["cron"] = json!(cron);
        body["time_zone"] = json!(args.tz);
        body["window_secs"] = json!(duration.context("a recurring downtime needs --duration (each window's length)")?);
    } else {
        let start = args.start.as_deref().map(|s| parse_time(s, now)).transpose()?.unwrap_or(now);
        body["start"] = json!(start);
        match (&args.end, duration) {
            (Some(e), _) => body["end"] = json!(parse_time(e, now)?),
            (None, Some(d)) if !args.flexible => body["end"] = json!(start + i64::try_from(d)?),
            _ => bail!("give --end, or --duration for a fixed downtime"),
        }
        if args.flexible {
            body["duration_secs"] = json!(duration.context("a flexible downtime needs --duration")?);
        }
    }
    let v = c.call("POST", "/api/v1/downtime", Some(&body))?;
    println!("scheduled downtime {}", v["id"]);
    Ok(ExitCode::SUCCESS)
}

pub fn checks(cmd: ChecksCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ChecksCommand::List { host, cluster, json, target } => {
            let c = target.client()?;
            let mut path = format!("/api/v1/checks?host={}", query_escape(&host));
            if let Some(cl) = &cluster {
                path.push_str(&format!("&cluster={}", query_escape(cl)));
            }
            let v = c.call("GET", &path, None)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(ExitCode::SUCCESS);
            }
            println!("host {} (cluster {})", v["host"].as_str().unwrap_or(""), v["cluster"].as_str().unwrap_or(""));
            if let Some(d) = v["host_definition"].as_object() {
                println!("  from [[host]]:");
                for (k, v) in d.iter().filter(|(_, v)| !v.is_null()) {
                    println!("    {k:<20} {}", v.as_str().map_or_else(|| v.to_string(), str::to_owned));
                }
            }
            for ch in v["checks"].as_array().map(Vec::as_slice).unwrap_or_default() {
                println!(
                    "\n{} ({}): every {}s, retry {}s, {} attempts",
                    ch["service"].as_str().unwrap_or(""),
                    ch["kind"].as_str().unwrap_or(""),
                    ch["check_interval_secs"],
                    ch["retry_interval_secs"],
                    ch["max_check_attempts"]
                );
                if let Some(what) = ch["check"].as_object() {
                    for (k, v) in what.iter().filter(|(_, v)| !v.is_null()) {
                        println!("  {k:<22} {}", v.as_str().map_or_else(|| v.to_string(), str::to_owned));
                    }
                }
                if let Some(origin) = ch["origin"].as_object() {
                    println!("  settings from:");
                    for (k, o) in origin {
                        println!("    {k:<20} {}", o.as_str().unwrap_or(""));
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_durations() {
        assert_eq!(parse_duration("90").unwrap(), 90);
        assert_eq!(parse_duration("15m").unwrap(), 900);
        assert_eq!(parse_duration("2h").unwrap(), 7200);
        assert_eq!(parse_duration("1d").unwrap(), 86_400);
        assert!(parse_duration("2x").is_err());
        assert_eq!(parse_time("now", 100).unwrap(), 100);
        assert_eq!(parse_time("+2h", 100).unwrap(), 7300);
        assert_eq!(parse_time("now+1m", 100).unwrap(), 160);
        assert_eq!(parse_time("1700000000", 0).unwrap(), 1_700_000_000);
        assert_eq!(parse_time("2023-11-14T22:13:20Z", 0).unwrap(), 1_700_000_000);
        assert!(parse_time("tomorrow", 0).is_err());
        assert_eq!(query_escape("a b/c"), "a%20b%2Fc");
    }
}
