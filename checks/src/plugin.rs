//! The Nagios plugin API: exit code → state, the split of plugin output into first line,
//! long output and performance data, and the performance-data grammar.
//!
//! The output split is research/nagios.md §1.2 (Nagios 4.4.6 `parse_check_output`, measured):
//! the first line up to its first `|` is the short output and everything after that `|` is
//! perfdata (further `|` included); following lines are long output until the first line with
//! a `|`, whose right side is perfdata too; every line after that is perfdata. Perfdata pieces
//! are joined with one space; short output and perfdata are stripped of spaces, tabs, CR and
//! LF at both ends; long output lines are kept as they are and joined with `\n`.
//!
//! One deliberate difference: Nagios replaces `;` with `:` in the short output because its
//! status and command files are `;`-separated. ganglion stores output in its own format, so the
//! text is kept as the plugin printed it.
//!
//! The perfdata grammar is §1.3: `'label'=value[UOM];[warn];[crit];[min];[max]`, tolerant of
//! extra spaces, missing trailing fields and junk tokens (which are reported, not fatal).

use std::fmt;

use crate::range::Range;
use crate::state::{HostState, ServiceState};

/// Bytes of plugin output looked at; the rest is cut (Nagios 4 keeps 20 kB+ lines, we cap
/// explicitly so one broken plugin cannot fill memory or the database).
pub const MAX_OUTPUT_BYTES: usize = 64 * 1024;

/// Where a result came from; Nagios maps out-of-range exit codes differently for each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckSource {
    /// A plugin run by the collector.
    Active,
    /// A result submitted from outside (NSCA, external command, HTTP).
    Passive,
}

/// The service state for a plugin exit code. 0–3 map to OK, WARNING, CRITICAL, UNKNOWN.
/// Any other code is what Nagios 4.4.6 does (research/nagios.md §1.1, measured): CRITICAL for
/// an active check (with the output replaced, see [`out_of_bounds_output`]), UNKNOWN for a
/// passive result (`process_passive_service_check` coerces it).
pub fn service_state_from_exit_code(code: i64, source: CheckSource) -> ServiceState {
    match (ServiceState::from_code(code), source) {
        (Some(s), _) => s,
        (None, CheckSource::Active) => ServiceState::Critical,
        (None, CheckSource::Passive) => ServiceState::Unknown,
    }
}

/// The host state for an active host-check plugin exit code, before reachability
/// ([`crate::state::reachability`]): 0 is UP; 1 (WARNING) is UP unless aggressive host checking
/// is on; 2, 3 and anything else are DOWN.
pub fn host_state_from_exit_code(code: i64, aggressive_host_checking: bool) -> HostState {
    match code {
        0 => HostState::Up,
        1 if !aggressive_host_checking => HostState::Up,
        _ => HostState::Down,
    }
}

/// The output Nagios substitutes for an active check's out-of-range exit code.
pub fn out_of_bounds_output(code: i64, host: &str, service: Option<&str>) -> String {
    match (code, service) {
        (126, _) => "(Return code of 126 is out of bounds. Check if plugin is executable)".to_owned(),
        (127, _) => "(Return code of 127 is out of bounds. Check if plugin exists)".to_owned(),
        (_, Some(svc)) => format!("(Return code of {code} for service '{svc}' on host '{host}' was out of bounds)"),
        (_, None) => format!("(Return code of {code} for host '{host}' was out of bounds)"),
    }
}

/// Plugin output split into its three parts.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct PluginOutput {
    /// First line before `|`, stripped ($SERVICEOUTPUT$).
    pub output: String,
    /// Following lines up to the perfdata, joined with `\n` ($LONGSERVICEOUTPUT$); may be empty.
    pub long_output: String,
    /// All perfdata pieces joined with a space, stripped ($SERVICEPERFDATA$); may be empty.
    pub perfdata: String,
}

fn strip(s: &str) -> &str {
    s.trim_matches([' ', '\t', '\r', '\n'])
}

fn cap(s: &str) -> &str {
    if s.len() <= MAX_OUTPUT_BYTES {
        return s;
    }
    let mut end = MAX_OUTPUT_BYTES;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Splits plugin output (stdout, or a passive result's unescaped text) into short output,
/// long output and perfdata exactly as Nagios 4 does. Input beyond [`MAX_OUTPUT_BYTES`] is
/// ignored.
pub fn parse_output(text: &str) -> PluginOutput {
    let text = cap(text);
    // A final newline ends the last line; it does not start an empty one.
    let text = text.strip_suffix('\n').unwrap_or(text);
    let mut lines = text.split('\n');
    let first = lines.next().unwrap_or("");
    let mut perf: Vec<&str> = Vec::new();
    let short = match first.split_once('|') {
        Some((short, p)) => {
            perf.push(p);
            short
        }
        None => first,
    };
    let mut long: Vec<&str> = Vec::new();
    let mut in_perf = false;
    for line in lines {
        if in_perf {
            perf.push(line);
        } else if let Some((l, p)) = line.split_once('|') {
            long.push(l);
            perf.push(p);
            in_perf = true;
        } else {
            long.push(line);
        }
    }
    let mut output = strip(short).to_owned();
    let long_output = long.join("\n");
    if output.is_empty() && !strip(&long_output).is_empty() {
        output = "(No output returned from plugin)".to_owned();
    }
    PluginOutput { output, long_output, perfdata: strip(&perf.join(" ")).to_owned() }
}

/// Output of a finished plugin process: bytes are decoded lossily as UTF-8; empty stdout
/// gives Nagios 4's `(No output on stdout) stderr: …` so the operator sees why.
pub fn parse_process_output(stdout: &[u8], stderr: &[u8]) -> PluginOutput {
    let out = String::from_utf8_lossy(&stdout[..stdout.len().min(MAX_OUTPUT_BYTES)]);
    if strip(&out).is_empty() {
        let err = String::from_utf8_lossy(&stderr[..stderr.len().min(MAX_OUTPUT_BYTES)]);
        let err = strip(&err);
        let output = if err.is_empty() {
            "(No output on stdout) stderr:".to_owned()
        } else {
            format!("(No output on stdout) stderr: {}", err.replace('\n', " "))
        };
        return PluginOutput { output, ..PluginOutput::default() };
    }
    parse_output(&out)
}

/// Unit of measurement of a perfdata value.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Uom {
    /// No unit: a count.
    None,
    Seconds,
    Milliseconds,
    Microseconds,
    Percent,
    Bytes,
    Kilobytes,
    Megabytes,
    /// Not in the guidelines' list but printed by real plugins (`check_disk -u GB`).
    Gigabytes,
    Terabytes,
    /// `c`: a continuous counter (the consumer computes a rate).
    Counter,
    /// Anything else, kept verbatim so nothing is lost.
    Other(String),
}

impl Uom {
    fn parse(s: &str) -> Uom {
        match s {
            "" => Uom::None,
            "s" => Uom::Seconds,
            "ms" => Uom::Milliseconds,
            "us" => Uom::Microseconds,
            "%" => Uom::Percent,
            "B" => Uom::Bytes,
            "KB" => Uom::Kilobytes,
            "MB" => Uom::Megabytes,
            "GB" => Uom::Gigabytes,
            "TB" => Uom::Terabytes,
            "c" => Uom::Counter,
            other => Uom::Other(other.to_owned()),
        }
    }

    /// The unit as written in perfdata.
    pub fn as_str(&self) -> &str {
        match self {
            Uom::None => "",
            Uom::Seconds => "s",
            Uom::Milliseconds => "ms",
            Uom::Microseconds => "us",
            Uom::Percent => "%",
            Uom::Bytes => "B",
            Uom::Kilobytes => "KB",
            Uom::Megabytes => "MB",
            Uom::Gigabytes => "GB",
            Uom::Terabytes => "TB",
            Uom::Counter => "c",
            Uom::Other(s) => s,
        }
    }
}

/// One `label=value` item of performance data.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PerfDatum {
    /// Label, unquoted (`''` inside quotes already turned into `'`).
    pub label: String,
    /// The value; `None` for the literal `U` ("could not be determined").
    pub value: Option<f64>,
    /// Unit shared by value, min and max.
    pub uom: Uom,
    /// Warning range; `None` when empty or not a valid range.
    pub warn: Option<Range>,
    /// Critical range; `None` when empty or not a valid range.
    pub crit: Option<Range>,
    /// Minimum possible value.
    pub min: Option<f64>,
    /// Maximum possible value.
    pub max: Option<f64>,
}

/// Parsed performance data: the items, and the tokens that were not items.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Perfdata {
    /// Items in the order printed.
    pub data: Vec<PerfDatum>,
    /// Tokens that are not `label=value…` (a stray `|`, a bare word, a bad number), kept so the
    /// caller can count or log them; they do not stop parsing.
    pub junk: Vec<String>,
}

/// Parses a perfdata string (the `perfdata` of [`PluginOutput`]).
pub fn parse_perfdata(text: &str) -> Perfdata {
    let mut out = Perfdata::default();
    let mut rest = cap(text);
    loop {
        rest = rest.trim_start_matches(is_space);
        if rest.is_empty() {
            break;
        }
        let (token_end, label) = if let Some(after_quote) = rest.strip_prefix('\'') {
            match quoted_label(after_quote) {
                Some((label, used)) => (1 + used, Some(label)),
                None => {
                    out.junk.push(rest.to_owned());
                    break;
                }
            }
        } else {
            (0, None)
        };
        let value_end = rest[token_end..].find(is_space).map_or(rest.len(), |i| token_end + i);
        let token = &rest[..value_end];
        let parsed = match label {
            Some(label) => rest[token_end..value_end].strip_prefix('=').and_then(|v| datum(label, v)),
            None => token.split_once('=').and_then(|(l, v)| datum(l.to_owned(), v)),
        };
        match parsed {
            Some(d) => out.data.push(d),
            None => out.junk.push(token.to_owned()),
        }
        rest = &rest[value_end..];
    }
    out
}

fn is_space(c: char) -> bool {
    c == ' ' || c == '\t' || c == '\n' || c == '\r'
}

/// Reads a quoted label after its opening quote; returns it and the bytes used, closing quote
/// included. `''` is a literal quote.
fn quoted_label(s: &str) -> Option<(String, usize)> {
    let mut label = String::new();
    let mut chars = s.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c == '\'' {
            if chars.peek().is_some_and(|&(_, n)| n == '\'') {
                chars.next();
                label.push('\'');
            } else {
                return Some((label, i + 1));
            }
        } else {
            label.push(c);
        }
    }
    None
}

fn datum(label: String, rest: &str) -> Option<PerfDatum> {
    if label.is_empty() {
        return None;
    }
    let mut fields = rest.split(';');
    let first = fields.next().unwrap_or("");
    let (value, uom) = if let Some(uom) = first.strip_prefix('U') {
        // `U` alone or with a unit: the value could not be determined.
        if uom.bytes().any(|b| b.is_ascii_digit()) {
            return None;
        }
        (None, Uom::parse(uom))
    } else {
        let n = number_prefix(first);
        if n == 0 {
            return None;
        }
        (Some(first[..n].parse::<f64>().ok().filter(|v| v.is_finite())?), Uom::parse(&first[n..]))
    };
    // `b=1|c=2` is two items glued by a stray `|`, not a value with the unit `|c=2`; `1,5`
    // is a decimal comma (wrong locale), not 1 with the unit `,5`.
    if uom.as_str().contains(|c: char| matches!(c, '=' | '|' | '\'' | ',') || c.is_ascii_digit()) {
        return None;
    }
    let range = |f: Option<&str>| f.filter(|s| !s.is_empty()).and_then(|s| Range::parse(s).ok());
    let num = |f: Option<&str>| {
        f.and_then(|s| {
            let n = number_prefix(s);
            s[..n].parse::<f64>().ok().filter(|v| v.is_finite())
        })
    };
    let warn = range(fields.next());
    let crit = range(fields.next());
    let min = num(fields.next());
    let max = num(fields.next());
    Some(PerfDatum { label, value, uom, warn, crit, min, max })
}

/// Length of the longest prefix of `s` that looks like `[-+]digits[.digits][e[-+]digits]`.
fn number_prefix(s: &str) -> usize {
    let b = s.as_bytes();
    let mut i = 0;
    if i < b.len() && (b[i] == b'-' || b[i] == b'+') {
        i += 1;
    }
    let digits_start = i;
    while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'.') {
        i += 1;
    }
    if !b[digits_start..i].iter().any(u8::is_ascii_digit) {
        return 0;
    }
    // An exponent only when digits follow, so a unit can never be eaten.
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        let mut j = i + 1;
        if j < b.len() && (b[j] == b'-' || b[j] == b'+') {
            j += 1;
        }
        let exp_digits = j;
        while j < b.len() && b[j].is_ascii_digit() {
            j += 1;
        }
        if j > exp_digits {
            i = j;
        }
    }
    i
}

impl fmt::Display for PerfDatum {
    /// Writes the item back in the guidelines' syntax, quoting the label when needed and
    /// dropping empty trailing fields.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.label.chars().any(|c| is_space(c) || c == '\'' || c == '=' || c == ';') {
            write!(f, "'{}'=", self.label.replace('\'', "''"))?;
        } else {
            write!(f, "{}=", self.label)?;
        }
        match self.value {
            Some(v) => write!(f, "{v}{}", self.uom.as_str())?,
            None => write!(f, "U{}", self.uom.as_str())?,
        }
        let fields = [
            self.warn.map(|r| r.to_string()),
            self.crit.map(|r| r.to_string()),
            self.min.map(|v| v.to_string()),
            self.max.map(|v| v.to_string()),
        ];
        let used = fields.iter().rposition(Option::is_some).map_or(0, |i| i + 1);
        for field in &fields[..used] {
            write!(f, ";{}", field.as_deref().unwrap_or(""))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::path::Path;

    #[test]
    fn exit_codes_map_as_nagios_does() {
        use CheckSource::*;
        assert_eq!(service_state_from_exit_code(0, Active), ServiceState::Ok);
        assert_eq!(service_state_from_exit_code(1, Passive), ServiceState::Warning);
        assert_eq!(service_state_from_exit_code(2, Active), ServiceState::Critical);
        assert_eq!(service_state_from_exit_code(3, Active), ServiceState::Unknown);
        assert_eq!(service_state_from_exit_code(5, Active), ServiceState::Critical);
        assert_eq!(service_state_from_exit_code(-1, Active), ServiceState::Critical);
        assert_eq!(service_state_from_exit_code(4464, Passive), ServiceState::Unknown);
        assert_eq!(
            out_of_bounds_output(5, "h1", Some("rc5")),
            "(Return code of 5 for service 'rc5' on host 'h1' was out of bounds)"
        );
        assert!(out_of_bounds_output(127, "h", None).contains("Check if plugin exists"));
        assert_eq!(host_state_from_exit_code(1, false), HostState::Up);
        assert_eq!(host_state_from_exit_code(1, true), HostState::Down);
        assert_eq!(host_state_from_exit_code(3, false), HostState::Down);
        assert_eq!(host_state_from_exit_code(42, false), HostState::Down);
    }

    fn split(s: &str) -> (String, String, String) {
        let o = parse_output(s);
        (o.output, o.long_output, o.perfdata)
    }

    #[test]
    fn splits_output_as_nagios_4_stored_it() {
        // research/nagios.md §1.2, rows measured in status.dat.
        assert_eq!(
            split("OK - a|b=1|c=2\nlong1 | d=4 | e=5\nafter\n"),
            ("OK - a".into(), "long1 ".into(), "b=1|c=2  d=4 | e=5 after".into())
        );
        assert_eq!(
            split("OK - first\nlong a\nlong b|x=1;2;3\ny=2\n"),
            ("OK - first".into(), "long a\nlong b".into(), "x=1;2;3 y=2".into())
        );
        let disk = "DISK WARNING - free space: / 3326 MB (56%); | /=2643MB;5948;5958;0;5968\n\
                    / 15272 MB (77%);\n/boot 68 MB (69%);\n/home 69357 MB (27%);\n\
                    /var/log 819 MB (84%); | /boot=68MB;88;93;0;98\n\
                    /home=69357MB;253404;253409;0;253414 \n/var/log=818MB;970;975;0;980\n";
        let (o, l, p) = split(disk);
        assert_eq!(o, "DISK WARNING - free space: / 3326 MB (56%);");
        assert_eq!(l, "/ 15272 MB (77%);\n/boot 68 MB (69%);\n/home 69357 MB (27%);\n/var/log 819 MB (84%); ");
        assert_eq!(
            p,
            "/=2643MB;5948;5958;0;5968  /boot=68MB;88;93;0;98 /home=69357MB;253404;253409;0;253414  \
             /var/log=818MB;970;975;0;980"
        );
        // The passive multi-line example, after unescaping.
        assert_eq!(
            split("WARN - first line|a=1;2;3\nlong line 1\nlong line 2|b=2;;;0;10\nc=3"),
            ("WARN - first line".into(), "long line 1\nlong line 2".into(), "a=1;2;3 b=2;;;0;10 c=3".into())
        );
        // Semicolons in the short output are kept (Nagios would turn them into colons).
        assert_eq!(split("WARN - a;b;c|p=1;2;3").0, "WARN - a;b;c");
    }

    #[test]
    fn empty_outputs_read_as_nagios_4_shows_them() {
        assert_eq!(parse_process_output(b"", b"").output, "(No output on stdout) stderr:");
        assert_eq!(parse_process_output(b"\n", b"boom\n").output, "(No output on stdout) stderr: boom");
        let o = parse_output("\nsecond line\n");
        assert_eq!((o.output.as_str(), o.long_output.as_str()), ("(No output returned from plugin)", "second line"));
        assert_eq!(parse_process_output(b"OK \xff\n", b"").output, "OK \u{fffd}");
    }

    #[test]
    fn caps_huge_output() {
        let big = "é".repeat(MAX_OUTPUT_BYTES);
        assert!(parse_output(&big).output.len() <= MAX_OUTPUT_BYTES);
    }

    #[test]
    fn parses_the_perfdata_grammar() {
        let p = parse_perfdata("'my label'=5.5ms;~:10;@20:30;0;100 'it''s'=U b=1 c=2c;;;0; pct=99%");
        assert!(p.junk.is_empty(), "{:?}", p.junk);
        let d = &p.data[0];
        assert_eq!(d.label, "my label");
        assert_eq!((d.value, &d.uom), (Some(5.5), &Uom::Milliseconds));
        assert_eq!(d.warn, Some(Range::parse("~:10").unwrap()));
        assert_eq!(d.crit, Some(Range::parse("@20:30").unwrap()));
        assert_eq!((d.min, d.max), (Some(0.0), Some(100.0)));
        assert_eq!((p.data[1].label.as_str(), p.data[1].value), ("it's", None));
        assert_eq!((p.data[2].value, &p.data[2].uom, p.data[2].warn), (Some(1.0), &Uom::None, None));
        assert_eq!((&p.data[3].uom, p.data[3].min, p.data[3].max), (&Uom::Counter, Some(0.0), None));
        assert_eq!(p.data[4].uom, Uom::Percent);
    }

    #[test]
    fn tolerates_junk_and_spacing() {
        let p = parse_perfdata("b=1|c=2  d=4 | e=5 after x=1,5 =3 'open=1");
        assert_eq!(p.data.iter().map(|d| d.label.as_str()).collect::<Vec<_>>(), ["d", "e"]);
        assert_eq!(p.junk, ["b=1|c=2", "|", "after", "x=1,5", "=3", "'open=1"]);
        // A bad range is dropped, the value is kept.
        let p = parse_perfdata("a=1;20:10;abc;x;1e3");
        assert_eq!((p.data[0].warn, p.data[0].crit, p.data[0].min, p.data[0].max), (None, None, None, Some(1000.0)));
    }

    #[test]
    fn displays_perfdata_back() {
        let p = parse_perfdata("'a b'=1.5s;10;20;0; time=0.000117s;;;0.000000;10.000000 u=U");
        let shown: Vec<String> = p.data.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["'a b'=1.5s;10;20;0", "time=0.000117s;;;0;10", "u=U"]);
    }

    struct Fixture {
        name: String,
        stdout: String,
        exit: i64,
    }

    fn fixtures() -> Vec<Fixture> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/plugins");
        let mut out = vec![];
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "stdout") {
                let name = path.file_stem().unwrap().to_string_lossy().into_owned();
                let exit = std::fs::read_to_string(dir.join(format!("{name}.exit"))).unwrap();
                out.push(Fixture {
                    stdout: std::fs::read_to_string(&path).unwrap(),
                    exit: exit.trim().parse().unwrap(),
                    name,
                });
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        assert!(out.len() >= 15, "fixtures missing in {}", dir.display());
        out
    }

    #[test]
    fn parses_every_captured_plugin_output() {
        for f in fixtures() {
            let state = service_state_from_exit_code(f.exit, CheckSource::Active);
            let o = parse_process_output(f.stdout.as_bytes(), b"");
            let perf = parse_perfdata(&o.perfdata);
            assert!(perf.junk.is_empty(), "{}: junk {:?}", f.name, perf.junk);
            assert!(!o.output.is_empty(), "{}", f.name);
            // Plugins name their state in the text; check_tcp/check_http on a closed port
            // print only the connect error first.
            if !f.name.ends_with("closed") && !f.name.contains("usage") {
                assert!(o.output.contains(state.as_str()), "{}: {state} vs {:?}", f.name, o.output);
            }
            match f.name.as_str() {
                "check_tcp_open" => {
                    assert!(o.output.starts_with("TCP OK - "));
                    let t = &perf.data[0];
                    assert_eq!(
                        (t.label.as_str(), &t.uom, t.min, t.max),
                        ("time", &Uom::Seconds, Some(0.0), Some(10.0))
                    );
                }
                "check_tcp_closed" => {
                    assert_eq!(state, ServiceState::Critical);
                    assert!(o.output.ends_with("Connection refused") && o.perfdata.is_empty());
                }
                "check_http_closed" => {
                    assert_eq!(o.long_output, "HTTP CRITICAL - Unable to open TCP socket");
                }
                "check_disk_root" | "check_disk_critical" => {
                    let d = &perf.data[0];
                    assert_eq!((d.label.as_str(), &d.uom, d.min), ("/", &Uom::Bytes, Some(0.0)));
                    assert!(d.warn.is_some() && d.crit.is_some() && d.max.is_some());
                }
                "check_load" => {
                    let labels: Vec<_> = perf.data.iter().map(|d| d.label.as_str()).collect();
                    assert_eq!(labels, ["load1", "load5", "load15"]);
                    assert_eq!(perf.data[0].warn, Some(Range::parse("5").unwrap()));
                    assert_eq!(perf.data[0].crit, Some(Range::parse("10").unwrap()));
                }
                "check_procs_none" => {
                    assert_eq!(perf.data[0].crit, Some(Range::parse("1:").unwrap()));
                    assert_eq!(perf.data[0].value, Some(0.0));
                }
                "check_dummy_usage" => {
                    assert_eq!(o.output, "check_dummy: Could not parse arguments");
                    assert_eq!(o.long_output, "Usage:\n check_dummy <integer state> [optional text]");
                }
                "check_ping_loopback" => {
                    assert_eq!(perf.data[0].uom, Uom::Milliseconds);
                    assert_eq!(perf.data[1].uom, Uom::Percent);
                }
                _ => {}
            }
        }
    }

    fn label() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9_ '/=.:-]{1,12}"
    }

    fn uom() -> impl Strategy<Value = Uom> {
        prop_oneof![
            Just(Uom::None),
            Just(Uom::Seconds),
            Just(Uom::Milliseconds),
            Just(Uom::Microseconds),
            Just(Uom::Percent),
            Just(Uom::Bytes),
            Just(Uom::Kilobytes),
            Just(Uom::Megabytes),
            Just(Uom::Gigabytes),
            Just(Uom::Terabytes),
            Just(Uom::Counter),
        ]
    }

    fn num() -> impl Strategy<Value = f64> {
        prop_oneof![(-100_000i64..100_000).prop_map(|v| v as f64), -1e9f64..1e9]
    }

    fn range() -> impl Strategy<Value = Option<Range>> {
        proptest::option::of((num(), num(), any::<bool>()).prop_map(|(a, b, inside)| Range {
            start: a.min(b),
            end: a.max(b),
            inside,
        }))
    }

    proptest! {
        #[test]
        fn perfdata_display_then_parse_is_identity(
            label in label(), value in proptest::option::of(num()), uom in uom(),
            warn in range(), crit in range(),
            min in proptest::option::of(num()), max in proptest::option::of(num()),
        ) {
            let d = PerfDatum { label, value, uom, warn, crit, min, max };
            let text = format!("  {d} x=1 ");
            let p = parse_perfdata(&text);
            prop_assert!(p.junk.is_empty(), "{} -> {:?}", text, p.junk);
            prop_assert_eq!(&p.data[0], &d, "text {}", text);
        }

        #[test]
        fn garbage_never_panics(s in "\\PC{0,200}", bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let o = parse_output(&s);
            let _ = parse_perfdata(&o.perfdata);
            let _ = parse_perfdata(&s);
            let _ = parse_process_output(&bytes, &bytes);
        }

        #[test]
        fn splitting_loses_no_line(lines in proptest::collection::vec("[a-z |]{0,10}", 1..6)) {
            let text = lines.join("\n");
            let o = parse_output(&text);
            // Every non-space character ends up in one of the three parts.
            let count = |s: &str| s.chars().filter(|c| !c.is_whitespace() && *c != '|').count();
            let total = count(&o.output) + count(&o.long_output) + count(&o.perfdata);
            let expected = if o.output == "(No output returned from plugin)" {
                count(&text) + count(&o.output)
            } else {
                count(&text)
            };
            prop_assert_eq!(total, expected);
        }
    }
}
