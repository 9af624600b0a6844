//! Nagios external command lines (research/nagios.md §5.3), as scripts write them to
//! `nagios.cmd` and as ganglion accepts them over HTTP.
//!
//! Line format: `[<epoch>] <NAME>;<arg1>;<arg2>…`. As Nagios does: CR and LF are stripped, the
//! number between `[` and `]` is the entry time, exactly one character after `]` is skipped,
//! the name is case-insensitive, a line is at most 8192 bytes. The entry time is the check
//! time of passive results.
//!
//! Differences from Nagios, on purpose:
//! * a downtime comment runs to the end of the line like an ack comment (Nagios cuts it at the
//!   next `;`, losing text);
//! * ack `sticky` accepts 1 as well as 2 (Naemon documents 1, Nagios needs 2; scripts exist for
//!   both) — see [`crate::ack::AckKind::from_nagios`];
//! * a passive service return code outside 0–3 is kept here and mapped to UNKNOWN by
//!   [`crate::plugin::service_state_from_exit_code`], a host code outside 0–2 is rejected, as
//!   in Nagios.

use crate::ack::AckKind;
use crate::state::{HostState, Timestamp};

/// Longest accepted line (`MAX_EXTERNAL_COMMAND_LENGTH`).
pub const MAX_LINE_BYTES: usize = 8192;

/// One parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandLine {
    /// The `[epoch]` entry time.
    pub entry_time: Timestamp,
    /// The command.
    pub command: ExternalCommand,
}

/// The commands ganglion understands.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExternalCommand {
    /// `PROCESS_SERVICE_CHECK_RESULT;host;service;return_code;output`
    ProcessServiceCheckResult {
        host: String,
        service: String,
        /// As sent; map with [`crate::plugin::service_state_from_exit_code`] (passive).
        return_code: i64,
        /// Output with `\n` and `\\` unescaped, ready for [`crate::plugin::parse_output`].
        output: String,
    },
    /// `PROCESS_HOST_CHECK_RESULT;host;status;output`
    ProcessHostCheckResult { host: String, state: HostState, output: String },
    /// `ACKNOWLEDGE_SVC_PROBLEM;host;service;sticky;notify;persistent;author;comment`
    AcknowledgeServiceProblem { host: String, service: String, ack: AckArgs },
    /// `ACKNOWLEDGE_HOST_PROBLEM;host;sticky;notify;persistent;author;comment`
    AcknowledgeHostProblem { host: String, ack: AckArgs },
    /// `SCHEDULE_SVC_DOWNTIME;host;service;start;end;fixed;trigger_id;duration;author;comment`
    ScheduleServiceDowntime { host: String, service: String, downtime: DowntimeArgs },
    /// `SCHEDULE_HOST_DOWNTIME;host;start;end;fixed;trigger_id;duration;author;comment`
    ScheduleHostDowntime { host: String, downtime: DowntimeArgs },
    /// `REMOVE_SVC_ACKNOWLEDGEMENT;host;service`
    RemoveServiceAcknowledgement { host: String, service: String },
    /// `REMOVE_HOST_ACKNOWLEDGEMENT;host`
    RemoveHostAcknowledgement { host: String },
    /// `DEL_SVC_DOWNTIME;downtime_id`
    DeleteServiceDowntime { id: u64 },
    /// `DEL_HOST_DOWNTIME;downtime_id`
    DeleteHostDowntime { id: u64 },
}

/// Arguments of an acknowledgement command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckArgs {
    pub kind: AckKind,
    /// Send an ACKNOWLEDGEMENT notification.
    pub notify: bool,
    /// Keep the comment across restarts.
    pub persistent: bool,
    pub author: String,
    /// Runs to the end of the line, `;` included.
    pub comment: String,
}

/// Arguments of a downtime command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DowntimeArgs {
    pub start: Timestamp,
    pub end: Timestamp,
    /// Fixed (true) or flexible.
    pub fixed: bool,
    /// Downtime id that triggers this one; 0 in the line means none.
    pub trigger_id: Option<u64>,
    /// Seconds; used only by flexible downtime (> 0 required then).
    pub duration_secs: u64,
    pub author: String,
    pub comment: String,
}

/// Why a line is not a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError {
    #[error("command line longer than {MAX_LINE_BYTES} bytes")]
    TooLong,
    #[error("command line does not start with `[<epoch>] `")]
    NoEntryTime,
    #[error("unknown command {0:?}")]
    Unknown(String),
    #[error("{command}: expected {expected} fields, got {got}")]
    FieldCount { command: &'static str, expected: usize, got: usize },
    #[error("{command}: field {field} {value:?} is not valid: {why}")]
    BadField { command: &'static str, field: &'static str, value: String, why: &'static str },
}

/// Parses one external command line.
///
/// # Errors
/// [`CommandError`] naming the problem: no `[epoch]`, unknown command, wrong field count, or a
/// field that is not a number, a known state, or a consistent downtime.
pub fn parse(line: &str) -> Result<CommandLine, CommandError> {
    if line.len() > MAX_LINE_BYTES {
        return Err(CommandError::TooLong);
    }
    let line = line.trim_end_matches(['\r', '\n']);
    let rest = line.strip_prefix('[').ok_or(CommandError::NoEntryTime)?;
    let (ts, rest) = rest.split_once(']').ok_or(CommandError::NoEntryTime)?;
    let entry_time: Timestamp = ts.trim().parse().map_err(|_| CommandError::NoEntryTime)?;
    // Nagios skips exactly one character (the space) after `]`.
    let mut chars = rest.chars();
    chars.next();
    let rest = chars.as_str();
    let (name, args) = rest.split_once(';').unwrap_or((rest, ""));
    let command = match name.to_ascii_uppercase().as_str() {
        "PROCESS_SERVICE_CHECK_RESULT" => {
            const C: &str = "PROCESS_SERVICE_CHECK_RESULT";
            let f = fields(C, args, 4)?;
            ExternalCommand::ProcessServiceCheckResult {
                host: name_field(C, "host", f[0])?,
                service: name_field(C, "service", f[1])?,
                return_code: int(C, "return_code", f[2])?,
                output: unescape(f[3]),
            }
        }
        "PROCESS_HOST_CHECK_RESULT" => {
            const C: &str = "PROCESS_HOST_CHECK_RESULT";
            let f = fields(C, args, 3)?;
            let code = int(C, "status_code", f[1])?;
            let state = HostState::from_code(code).ok_or_else(|| bad(C, "status_code", f[1], "must be 0, 1 or 2"))?;
            ExternalCommand::ProcessHostCheckResult {
                host: name_field(C, "host", f[0])?,
                state,
                output: unescape(f[2]),
            }
        }
        "ACKNOWLEDGE_SVC_PROBLEM" => {
            const C: &str = "ACKNOWLEDGE_SVC_PROBLEM";
            let f = fields(C, args, 7)?;
            ExternalCommand::AcknowledgeServiceProblem {
                host: name_field(C, "host", f[0])?,
                service: name_field(C, "service", f[1])?,
                ack: ack_args(C, &f[2..])?,
            }
        }
        "ACKNOWLEDGE_HOST_PROBLEM" => {
            const C: &str = "ACKNOWLEDGE_HOST_PROBLEM";
            let f = fields(C, args, 6)?;
            ExternalCommand::AcknowledgeHostProblem { host: name_field(C, "host", f[0])?, ack: ack_args(C, &f[1..])? }
        }
        "SCHEDULE_SVC_DOWNTIME" => {
            const C: &str = "SCHEDULE_SVC_DOWNTIME";
            let f = fields(C, args, 9)?;
            ExternalCommand::ScheduleServiceDowntime {
                host: name_field(C, "host", f[0])?,
                service: name_field(C, "service", f[1])?,
                downtime: downtime_args(C, &f[2..])?,
            }
        }
        "SCHEDULE_HOST_DOWNTIME" => {
            const C: &str = "SCHEDULE_HOST_DOWNTIME";
            let f = fields(C, args, 8)?;
            ExternalCommand::ScheduleHostDowntime {
                host: name_field(C, "host", f[0])?,
                downtime: downtime_args(C, &f[1..])?,
            }
        }
        "REMOVE_SVC_ACKNOWLEDGEMENT" => {
            const C: &str = "REMOVE_SVC_ACKNOWLEDGEMENT";
            let f = fields(C, args, 2)?;
            ExternalCommand::RemoveServiceAcknowledgement {
                host: name_field(C, "host", f[0])?,
                service: name_field(C, "service", f[1])?,
            }
        }
        "REMOVE_HOST_ACKNOWLEDGEMENT" => {
            const C: &str = "REMOVE_HOST_ACKNOWLEDGEMENT";
            let f = fields(C, args, 1)?;
            ExternalCommand::RemoveHostAcknowledgement { host: name_field(C, "host", f[0])? }
        }
        "DEL_SVC_DOWNTIME" => {
            const C: &str = "DEL_SVC_DOWNTIME";
            let f = fields(C, args, 1)?;
            ExternalCommand::DeleteServiceDowntime { id: uint(C, "downtime_id", f[0])? }
        }
        "DEL_HOST_DOWNTIME" => {
            const C: &str = "DEL_HOST_DOWNTIME";
            let f = fields(C, args, 1)?;
            ExternalCommand::DeleteHostDowntime { id: uint(C, "downtime_id", f[0])? }
        }
        _ => return Err(CommandError::Unknown(name.chars().take(64).collect())),
    };
    Ok(CommandLine { entry_time, command })
}

/// Splits into `n` fields; the last one takes the rest of the line, `;` included.
fn fields<'a>(command: &'static str, args: &'a str, n: usize) -> Result<Vec<&'a str>, CommandError> {
    let f: Vec<&str> = if args.is_empty() { Vec::new() } else { args.splitn(n, ';').collect() };
    if f.len() != n {
        return Err(CommandError::FieldCount { command, expected: n, got: f.len() });
    }
    Ok(f)
}

fn bad(command: &'static str, field: &'static str, value: &str, why: &'static str) -> CommandError {
    CommandError::BadField { command, field, value: value.chars().take(64).collect(), why }
}

fn name_field(command: &'static str, field: &'static str, v: &str) -> Result<String, CommandError> {
    if v.is_empty() {
        return Err(bad(command, field, v, "must not be empty"));
    }
    Ok(v.to_owned())
}

fn int(command: &'static str, field: &'static str, v: &str) -> Result<i64, CommandError> {
    v.trim().parse().map_err(|_| bad(command, field, v, "not an integer"))
}

fn uint(command: &'static str, field: &'static str, v: &str) -> Result<u64, CommandError> {
    v.trim().parse().map_err(|_| bad(command, field, v, "not a non-negative integer"))
}

fn flag(command: &'static str, field: &'static str, v: &str) -> Result<bool, CommandError> {
    Ok(int(command, field, v)? > 0)
}

fn ack_args(c: &'static str, f: &[&str]) -> Result<AckArgs, CommandError> {
    Ok(AckArgs {
        kind: AckKind::from_nagios(int(c, "sticky", f[0])?),
        notify: flag(c, "notify", f[1])?,
        persistent: flag(c, "persistent", f[2])?,
        author: f[3].to_owned(),
        comment: f[4].to_owned(),
    })
}

fn downtime_args(c: &'static str, f: &[&str]) -> Result<DowntimeArgs, CommandError> {
    let start = int(c, "start_time", f[0])?;
    let end = int(c, "end_time", f[1])?;
    let fixed = flag(c, "fixed", f[2])?;
    let trigger = uint(c, "trigger_id", f[3])?;
    let duration_secs = uint(c, "duration", f[4])?;
    if end <= start {
        return Err(bad(c, "end_time", f[1], "must be after start_time"));
    }
    if !fixed && duration_secs == 0 {
        return Err(bad(c, "duration", f[4], "a flexible downtime needs a duration > 0"));
    }
    Ok(DowntimeArgs {
        start,
        end,
        fixed,
        trigger_id: (trigger != 0).then_some(trigger),
        duration_secs,
        author: f[5].to_owned(),
        comment: f[6].to_owned(),
    })
}

/// Undoes Nagios' escaping of passive output: `\n` is a newline, `\\` a backslash; any other
/// backslash stays as it is.
pub fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.clone().next() {
            Some('n') => {
                chars.next();
                out.push('\n');
            }
            Some('\\') => {
                chars.next();
                out.push('\\');
            }
            _ => out.push('\\'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_the_examples_nagios_accepted() {
        let c = parse(
            "[1700000000] PROCESS_SERVICE_CHECK_RESULT;h1;passive_ml;1;WARN - first line|a=1;2;3\\nlong line 1\\nlong line 2|b=2;;;0;10\\nc=3\n",
        )
        .unwrap();
        assert_eq!(c.entry_time, 1_700_000_000);
        let ExternalCommand::ProcessServiceCheckResult { host, service, return_code, output } = c.command else {
            panic!()
        };
        assert_eq!((host.as_str(), service.as_str(), return_code), ("h1", "passive_ml", 1));
        assert_eq!(output, "WARN - first line|a=1;2;3\nlong line 1\nlong line 2|b=2;;;0;10\nc=3");
        let o = crate::plugin::parse_output(&output);
        assert_eq!(o.perfdata, "a=1;2;3 b=2;;;0;10 c=3");

        assert_eq!(
            parse("[5] PROCESS_HOST_CHECK_RESULT;passhost;1;passive host DOWN").unwrap().command,
            ExternalCommand::ProcessHostCheckResult {
                host: "passhost".into(),
                state: HostState::Down,
                output: "passive host DOWN".into()
            }
        );
        let ExternalCommand::AcknowledgeServiceProblem { ack, .. } =
            parse("[5] ACKNOWLEDGE_SVC_PROBLEM;h1;ackme;2;1;1;tester;sticky ack; with semicolon").unwrap().command
        else {
            panic!()
        };
        assert_eq!(ack.kind, AckKind::Sticky);
        assert!(ack.notify && ack.persistent);
        assert_eq!((ack.author.as_str(), ack.comment.as_str()), ("tester", "sticky ack; with semicolon"));
        let ExternalCommand::AcknowledgeHostProblem { ack, .. } =
            parse("[5] acknowledge_host_problem;gw;0;0;0;me;normal").unwrap().command
        else {
            panic!()
        };
        assert_eq!((ack.kind, ack.notify), (AckKind::Normal, false));

        let c = parse("[5] SCHEDULE_SVC_DOWNTIME;h1;dtme;100;108;1;0;0;tester;fixed maintenance").unwrap();
        let ExternalCommand::ScheduleServiceDowntime { downtime, .. } = c.command else { panic!() };
        assert_eq!((downtime.start, downtime.end, downtime.fixed, downtime.trigger_id), (100, 108, true, None));
        let c = parse("[5] SCHEDULE_HOST_DOWNTIME;web;100;160;0;3;5;tester;flexible 5s").unwrap();
        let ExternalCommand::ScheduleHostDowntime { host, downtime } = c.command else { panic!() };
        assert_eq!(
            (host.as_str(), downtime.fixed, downtime.trigger_id, downtime.duration_secs),
            ("web", false, Some(3), 5)
        );
        assert_eq!(
            parse("[5] REMOVE_SVC_ACKNOWLEDGEMENT;h;s").unwrap().command,
            ExternalCommand::RemoveServiceAcknowledgement { host: "h".into(), service: "s".into() }
        );
        assert_eq!(
            parse("[5] REMOVE_HOST_ACKNOWLEDGEMENT;h\r\n").unwrap().command,
            ExternalCommand::RemoveHostAcknowledgement { host: "h".into() }
        );
        assert_eq!(
            parse("[5] DEL_SVC_DOWNTIME;12").unwrap().command,
            ExternalCommand::DeleteServiceDowntime { id: 12 }
        );
        assert_eq!(parse("[5] DEL_HOST_DOWNTIME;3").unwrap().command, ExternalCommand::DeleteHostDowntime { id: 3 });
    }

    #[test]
    fn rejects_bad_lines_with_a_reason() {
        assert_eq!(parse("PROCESS_HOST_CHECK_RESULT;h;0;x"), Err(CommandError::NoEntryTime));
        assert_eq!(parse("[abc] X"), Err(CommandError::NoEntryTime));
        assert!(matches!(parse("[1] NOPE;1"), Err(CommandError::Unknown(n)) if n == "NOPE"));
        assert!(matches!(parse("[1] PROCESS_HOST_CHECK_RESULT;h;3;x"), Err(CommandError::BadField { .. })));
        assert!(matches!(parse("[1] PROCESS_SERVICE_CHECK_RESULT;h;s;x;out"), Err(CommandError::BadField { .. })));
        assert!(matches!(parse("[1] PROCESS_SERVICE_CHECK_RESULT;h;s"), Err(CommandError::FieldCount { .. })));
        assert!(matches!(parse("[1] PROCESS_SERVICE_CHECK_RESULT;;s;0;x"), Err(CommandError::BadField { .. })));
        assert!(matches!(parse("[1] SCHEDULE_HOST_DOWNTIME;h;10;5;1;0;0;a;c"), Err(CommandError::BadField { .. })));
        let e = parse("[1] SCHEDULE_HOST_DOWNTIME;h;10;50;0;0;0;a;c").unwrap_err();
        assert!(e.to_string().contains("flexible downtime needs a duration"), "{e}");
        assert_eq!(parse(&format!("[1] X;{}", "a".repeat(MAX_LINE_BYTES))), Err(CommandError::TooLong));
    }

    #[test]
    fn passive_out_of_range_codes_are_kept_for_the_mapping() {
        let c = parse("[1] PROCESS_SERVICE_CHECK_RESULT;h;s;7;odd").unwrap();
        let ExternalCommand::ProcessServiceCheckResult { return_code, .. } = c.command else { panic!() };
        assert_eq!(
            crate::plugin::service_state_from_exit_code(return_code, crate::plugin::CheckSource::Passive),
            crate::state::ServiceState::Unknown
        );
    }

    #[test]
    fn unescapes_only_newline_and_backslash() {
        assert_eq!(unescape(r"a\nb\\n\t\"), "a\nb\\n\\t\\");
    }

    proptest! {
        #[test]
        fn garbage_never_panics(s in "\\PC{0,300}", name in "[A-Z_]{0,30}", args in "[;0-9a-z\\\\]{0,40}") {
            let _ = parse(&s);
            let _ = parse(&format!("[1] {name};{args}"));
            let _ = unescape(&s);
        }
    }
}
