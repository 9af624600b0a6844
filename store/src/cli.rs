//! rrdtool-compatible operator commands on standalone files: `create`, `update`,
//! `fetch`, `info`, `dump`, with rrdtool's argument syntax (`-s/-e/-r`, `N:`, `U`) and
//! output layout, so scripts and the differential test drive both tools the same way.
//! The collector mounts [`RrdCommand`] as `ganglion rrd …`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context};
use clap::Subcommand;

use crate::disk::RealDisk;
use crate::file::RrdFile;
use crate::rrd::{format_value, Cf, DsDef, Fetched, RraDef, Rrd};

/// `ganglion rrd …`.
#[derive(Debug, Subcommand)]
pub enum RrdCommand {
    /// Create a database: `create FILE --step S [--start T] DS:name:TYPE:hb:min:max… RRA:CF:xff:steps:rows…`
    Create {
        file: PathBuf,
        /// Seconds per primary data point.
        #[arg(long, short = 's', default_value_t = 300)]
        step: u64,
        /// Time of the (virtual) first update; default now − 10 s.
        #[arg(long, short = 'b', allow_hyphen_values = true)]
        start: Option<String>,
        /// Refuse to overwrite an existing file.
        #[arg(long, short = 'O')]
        no_overwrite: bool,
        /// DS: and RRA: definitions.
        #[arg(required = true)]
        defs: Vec<String>,
    },
    /// Store readings: `update FILE T:V[:V…]…` (`N` = now, `U` = unknown).
    Update {
        file: PathBuf,
        #[arg(required = true, allow_hyphen_values = true)]
        values: Vec<String>,
    },
    /// Print rows: `fetch FILE CF [-s T] [-e T] [-r S]`, or of a collector's series:
    /// `fetch --data DIR [cluster/]host/metric CF …` (read-only, also while it runs).
    Fetch {
        /// A standalone file, or with `--data` a series name.
        file: PathBuf,
        /// A collector's storage directory (`data_dir/store`).
        #[arg(long)]
        data: Option<PathBuf>,
        cf: String,
        #[arg(long, short = 's', allow_hyphen_values = true)]
        start: Option<String>,
        #[arg(long, short = 'e', allow_hyphen_values = true)]
        end: Option<String>,
        #[arg(long, short = 'r', default_value = "1")]
        resolution: String,
        /// Shift start and end down to a multiple of the resolution.
        #[arg(long, short = 'a')]
        align_start: bool,
    },
    /// Print the header and live state as `key = value` lines.
    Info { file: PathBuf },
    /// Print the whole database as rrdtool's XML.
    Dump { file: PathBuf },
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// A subset of rrdtool's AT-style times: seconds since the epoch, `now`, `N`, and
/// `now`/`end`/`start`/`e`/`s` followed by `±N[s|m|h|d|w]` offsets; a bare `-1h` is
/// relative to `reference`.
pub fn parse_time(s: &str, now: u64, reference: u64, end: Option<u64>, start: Option<u64>) -> anyhow::Result<u64> {
    if let Ok(t) = s.parse::<u64>() {
        return Ok(t);
    }
    let (base, rest) = if let Some(r) = s.strip_prefix("now") {
        (now, r)
    } else if let Some(r) = s.strip_prefix("end") {
        (end.ok_or_else(|| anyhow!("'end' not allowed here: {s}"))?, r)
    } else if let Some(r) = s.strip_prefix("start") {
        (start.ok_or_else(|| anyhow!("'start' not allowed here: {s}"))?, r)
    } else if let Some(r) = s.strip_prefix('e').filter(|r| r.starts_with(['+', '-'])) {
        (end.ok_or_else(|| anyhow!("'e' not allowed here: {s}"))?, r)
    } else if let Some(r) = s.strip_prefix('s').filter(|r| r.starts_with(['+', '-'])) {
        (start.ok_or_else(|| anyhow!("'s' not allowed here: {s}"))?, r)
    } else if s == "N" {
        (now, "")
    } else {
        (reference, s)
    };
    let mut t = base as i64;
    let mut rest = rest;
    while !rest.is_empty() {
        let sign = match rest.as_bytes()[0] {
            b'+' => 1,
            b'-' => -1,
            _ => bail!("cannot parse time '{s}'"),
        };
        rest = &rest[1..];
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let n: i64 = rest[..digits].parse().with_context(|| format!("cannot parse time '{s}'"))?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let mult = match &rest[..unit_len] {
            "" | "s" | "sec" | "seconds" => 1,
            "m" | "min" | "minutes" => 60,
            "h" | "hours" => 3600,
            "d" | "days" => 86400,
            "w" | "weeks" => 7 * 86400,
            u => bail!("unknown time unit '{u}' in '{s}'"),
        };
        rest = &rest[unit_len..];
        t += sign * n * mult;
    }
    u64::try_from(t).map_err(|_| anyhow!("time before the epoch: '{s}'"))
}

/// `rrdtool fetch` output: DS names right-aligned in 20 columns after an 11-column
/// gutter, a blank line, then `%10lu:` timestamps and ` %0.10e` values.
pub fn render_fetch(f: &Fetched) -> String {
    let mut s = String::from("           ");
    for n in &f.ds_names {
        s.push_str(&format!("{n:>20}"));
    }
    s.push_str("\n\n");
    for (i, row) in f.rows.iter().enumerate() {
        s.push_str(&format!("{:>10}:", f.time(i)));
        for v in row {
            s.push(' ');
            s.push_str(&format_value(*v));
        }
        s.push('\n');
    }
    s
}

/// rrdtool's `info`/`dump` spelling of a value: `%0.10e`, but `NaN`.
fn info_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_string()
    } else {
        format_value(v)
    }
}

/// `YYYY-MM-DD HH:MM:SS UTC` (dump comments).
fn utc(t: u64) -> String {
    let days = (t / 86400) as i64;
    let secs = t % 86400;
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC", secs / 3600, secs / 60 % 60, secs % 60)
}

/// Renders `info` for a database.
pub fn render_info(path: &Path, db: &Rrd, header_size: u64) -> String {
    let mut s = String::new();
    s.push_str(&format!("filename = \"{}\"\n", path.display()));
    s.push_str(&format!("rrd_version = \"ganglion-{}\"\n", crate::file::VERSION));
    s.push_str(&format!("step = {}\nlast_update = {}\nheader_size = {header_size}\n", db.step, db.last_up));
    for (i, d) in db.ds.iter().enumerate() {
        let n = &d.name;
        s.push_str(&format!("ds[{n}].index = {i}\nds[{n}].type = \"{}\"\n", d.kind));
        s.push_str(&format!("ds[{n}].minimal_heartbeat = {}\n", d.heartbeat));
        s.push_str(&format!("ds[{n}].min = {}\nds[{n}].max = {}\n", info_value(d.min), info_value(d.max)));
        let p = &db.pdp[i];
        s.push_str(&format!("ds[{n}].last_ds = \"{}\"\nds[{n}].value = {}\n", p.last_ds, info_value(p.val)));
        s.push_str(&format!("ds[{n}].unknown_sec = {}\n", p.unkn_sec));
    }
    for (r, a) in db.rra.iter().enumerate() {
        s.push_str(&format!("rra[{r}].cf = \"{}\"\nrra[{r}].rows = {}\n", a.cf, a.rows));
        s.push_str(&format!("rra[{r}].cur_row = {}\nrra[{r}].pdp_per_row = {}\n", db.cur_row[r], a.pdp_cnt));
        s.push_str(&format!("rra[{r}].xff = {}\n", info_value(a.xff)));
        for i in 0..db.ds.len() {
            let c = &db.cdp[r * db.ds.len() + i];
            s.push_str(&format!("rra[{r}].cdp_prep[{i}].value = {}\n", info_value(c.val)));
            s.push_str(&format!("rra[{r}].cdp_prep[{i}].unknown_datapoints = {}\n", c.unkn_pdp));
        }
    }
    s
}

/// Renders `dump` in rrdtool's XML layout.
pub fn render_dump(db: &Rrd) -> String {
    let mut s = String::from("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n");
    s.push_str("<!DOCTYPE rrd SYSTEM \"https://oss.oetiker.ch/rrdtool/rrdtool.dtd\">\n");
    s.push_str("<!-- Round Robin Database Dump -->\n<rrd>\n\t<version>0003</version>\n");
    s.push_str(&format!("\t<step>{}</step> <!-- Seconds -->\n", db.step));
    s.push_str(&format!("\t<lastupdate>{}</lastupdate> <!-- {} -->\n\n", db.last_up, utc(db.last_up)));
    for (i, d) in db.ds.iter().enumerate() {
        let p = &db.pdp[i];
        s.push_str(&format!("\t<ds>\n\t\t<name> {} </name>\n\t\t<type> {} </type>\n", d.name, d.kind));
        s.push_str(&format!("\t\t<minimal_heartbeat>{}</minimal_heartbeat>\n", d.heartbeat));
        s.push_str(&format!("\t\t<min>{}</min>\n\t\t<max>{}</max>\n\n", info_value(d.min), info_value(d.max)));
        s.push_str(&format!("\t\t<!-- PDP Status -->\n\t\t<last_ds>{}</last_ds>\n", xml_escape(&p.last_ds)));
        s.push_str(&format!(
            "\t\t<value>{}</value>\n\t\t<unknown_sec> {} </unknown_sec>\n\t</ds>\n\n",
            info_value(p.val),
            p.unkn_sec
        ));
    }
    s.push_str("\t<!-- Round Robin Archives -->\n");
    for (r, a) in db.rra.iter().enumerate() {
        let rstep = db.step * a.pdp_cnt;
        s.push_str(&format!("\t<rra>\n\t\t<cf>{}</cf>\n", a.cf));
        s.push_str(&format!("\t\t<pdp_per_row>{}</pdp_per_row> <!-- {rstep} seconds -->\n\n", a.pdp_cnt));
        s.push_str(&format!("\t\t<params>\n\t\t<xff>{}</xff>\n\t\t</params>\n\t\t<cdp_prep>\n", info_value(a.xff)));
        for i in 0..db.ds.len() {
            let c = &db.cdp[r * db.ds.len() + i];
            s.push_str(&format!(
                "\t\t\t<ds>\n\t\t\t<primary_value>{}</primary_value>\n\t\t\t<secondary_value>{}</secondary_value>\n\t\t\t<value>{}</value>\n\t\t\t<unknown_datapoints>{}</unknown_datapoints>\n\t\t\t</ds>\n",
                info_value(c.primary),
                info_value(c.secondary),
                info_value(c.val),
                c.unkn_pdp
            ));
        }
        s.push_str("\t\t</cdp_prep>\n\t\t<database>\n");
        let end = db.last_up - db.last_up % rstep;
        for age in (0..a.rows).rev() {
            let row = (db.cur_row[r] + a.rows - age) % a.rows;
            let Some(t) = end.checked_sub(age * rstep) else { continue };
            s.push_str(&format!("\t\t\t<!-- {} / {t} --> <row>", utc(t)));
            for i in 0..db.ds.len() {
                s.push_str(&format!("<v>{}</v>", info_value(db.value(r, row, i))));
            }
            s.push_str("</row>\n");
        }
        s.push_str("\t\t</database>\n\t</rra>\n");
    }
    s.push_str("</rrd>\n");
    s
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// Runs one command, printing to stdout like rrdtool. Errors are returned for the
/// binary to print (`ERROR: …`-style, exit code 1).
///
/// # Errors
/// Anything rrdtool would report: bad definitions, refused updates, I/O, corrupt files.
pub fn run(cmd: RrdCommand) -> anyhow::Result<ExitCode> {
    let disk = RealDisk;
    let mut out = std::io::stdout().lock();
    match cmd {
        RrdCommand::Create { file, step, start, no_overwrite, defs } => {
            if no_overwrite && file.exists() {
                bail!("{}: file exists", file.display());
            }
            let t = now();
            let start = match start {
                Some(s) => parse_time(&s, t, t, None, None)?,
                None => t - 10,
            };
            let (mut ds, mut rra) = (Vec::new(), Vec::new());
            for d in &defs {
                if d.starts_with("DS:") {
                    ds.push(DsDef::parse(d)?);
                } else if d.starts_with("RRA:") {
                    rra.push(RraDef::parse(d)?);
                } else {
                    bail!("can't parse argument '{d}'");
                }
            }
            let db = Rrd::create(step, start, ds, rra)?;
            RrdFile::create(&disk, &file, &db, false)?;
        }
        RrdCommand::Update { file, values } => {
            let (mut f, mut db) = RrdFile::open(&disk, &file)?;
            let mut result = Ok(());
            for v in &values {
                let mut parts = v.split(':');
                let ts = parts.next().unwrap_or("");
                let t = if ts == "N" {
                    now()
                } else {
                    // rrdtool takes fractional seconds; whole seconds are what we keep.
                    match ts.split('.').next().unwrap_or("").parse::<u64>() {
                        Ok(t) => t,
                        Err(_) => {
                            result = Err(anyhow!("{}: cannot parse time '{ts}'", file.display()));
                            break;
                        }
                    }
                };
                let vals: Vec<&str> = parts.collect();
                // Like rrdtool, updates before a failing one stay applied.
                if let Err(e) = db.update(t, &vals) {
                    result = Err(anyhow!("{}: {e}", file.display()));
                    break;
                }
            }
            f.save(&mut db)?;
            result?;
        }
        RrdCommand::Fetch { file, data, cf, start, end, resolution, align_start } => {
            let db = match &data {
                Some(_) => None,
                None => Some(RrdFile::open(&disk, &file)?.1),
            };
            let cf = Cf::parse(&cf).ok_or_else(|| anyhow!("unknown consolidation function '{cf}'"))?;
            let t = now();
            let end_t = match &end {
                Some(e) => parse_time(e, t, t, None, None)?,
                None => t,
            };
            let mut start_t = match &start {
                Some(s) => parse_time(s, t, end_t, Some(end_t), None)?,
                None => end_t.saturating_sub(86400),
            };
            let mut end_t = match &end {
                Some(e) if e.starts_with('s') => parse_time(e, t, t, None, Some(start_t))?,
                _ => end_t,
            };
            let res: u64 = resolution.parse().with_context(|| format!("bad resolution '{resolution}'"))?;
            if align_start && res > 0 {
                let shift = start_t % res;
                start_t -= shift;
                end_t -= shift;
            }
            let f = match (db, data) {
                (Some(db), _) => db.fetch(cf, start_t, end_t, res.max(1))?,
                (None, Some(dir)) => {
                    let name = file.to_string_lossy();
                    crate::engine::offline::fetch(&dir, &name, cf, start_t, end_t, res.max(1))
                        .with_context(|| format!("{}: series {name}", dir.display()))?
                        .1
                }
                (None, None) => bail!("fetch needs a file or --data"),
            };
            out.write_all(render_fetch(&f).as_bytes())?;
        }
        RrdCommand::Info { file } => {
            let (f, db) = RrdFile::open(&disk, &file)?;
            out.write_all(render_info(&file, &db, f.layout().data_off).as_bytes())?;
        }
        RrdCommand::Dump { file } => {
            let (_, db) = RrdFile::open(&disk, &file)?;
            out.write_all(render_dump(&db).as_bytes())?;
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_at_style_times() {
        assert_eq!(parse_time("1200000000", 5000, 0, None, None).unwrap(), 1_200_000_000);
        assert_eq!(parse_time("now-1h", 5000, 0, None, None).unwrap(), 1400);
        assert_eq!(parse_time("end-1d", 0, 0, Some(100_000), None).unwrap(), 13_600);
        assert_eq!(parse_time("-300", 0, 1000, None, None).unwrap(), 700);
        assert!(parse_time("yesterday", 0, 0, None, None).is_err());
    }

    #[test]
    fn dump_dates_are_utc() {
        assert_eq!(utc(1_200_000_960), "2008-01-10 21:36:00 UTC");
    }
}
