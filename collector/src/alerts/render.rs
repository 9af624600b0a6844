//! Message texts: email subject, plain-text and HTML bodies, and short texts (at most
//! [`SMS_MAX`] characters) for SMS gateways and webhooks, for one notification or a
//! group of them ("12 services CRITICAL on 3 hosts in cluster web").

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use super::logic::{Note, NoteKind};

/// Longest short text, in characters (one SMS).
pub const SMS_MAX: usize = 160;

/// Notifications shown in full in one email; a storm's message lists the first ones and
/// links to the dashboard's problems page for the rest (a 10,000-item email helps no one).
pub const MAX_DETAIL: usize = 50;

/// Percent-encodes a query or path value.
pub fn enc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The dashboard's host page.
pub fn host_link(base: &str, n: &Note) -> String {
    format!("{base}/host?c={}&h={}", enc(&n.cluster), enc(&n.host))
}

/// The dashboard's page of the check (state, history, acknowledge).
pub fn check_link(base: &str, n: &Note) -> String {
    format!("{base}/check?c={}&h={}&s={}", enc(&n.cluster), enc(&n.host), enc(&n.service))
}

/// The dashboard's graph of the check's series over the last day, when it has one.
pub fn graph_link(base: &str, n: &Note) -> Option<String> {
    let m = n.metric.as_ref()?;
    Some(format!("{base}/graph.png?c={}&h={}&m={}&r=day", enc(&n.cluster), enc(&n.host), enc(m)))
}

fn what(n: &Note) -> String {
    if n.service.is_empty() {
        format!("host {}", n.host)
    } else {
        format!("{}/{}", n.host, n.service)
    }
}

fn ago(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h {}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d {}h", s / 86_400, (s % 86_400) / 3600),
    }
}

fn time(t: i64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp(t, 0)
        .map_or_else(|| t.to_string(), |d| d.format("%Y-%m-%d %H:%M:%S UTC").to_string())
}

/// Subject of one notification: kind, host, service, state.
pub fn subject_one(n: &Note) -> String {
    match n.kind {
        NoteKind::Problem | NoteKind::Recovery => format!("{}: {} is {}", n.kind.label(), what(n), n.state),
        _ => format!("{}: {} ({})", n.kind.label(), what(n), n.state),
    }
}

/// "12 services CRITICAL, 1 host DOWN on 3 hosts in cluster web; 2 recovered".
pub fn summary(notes: &[Note]) -> String {
    let mut problems: BTreeMap<(bool, &str), usize> = BTreeMap::new();
    let (mut recovered, mut notices) = (0, 0);
    let mut hosts = BTreeSet::new();
    let mut clusters = BTreeSet::new();
    for n in notes {
        hosts.insert((&n.cluster, &n.host));
        clusters.insert(n.cluster.as_str());
        match n.kind {
            NoteKind::Problem => *problems.entry((n.service.is_empty(), n.state.as_str())).or_default() += 1,
            NoteKind::Recovery => recovered += 1,
            _ => notices += 1,
        }
    }
    let plural = |n: usize, one: &str, many: &str| if n == 1 { format!("1 {one}") } else { format!("{n} {many}") };
    let mut parts: Vec<String> = problems
        .iter()
        .map(|((is_host, state), n)| {
            let noun = if *is_host { plural(*n, "host", "hosts") } else { plural(*n, "service", "services") };
            format!("{noun} {state}")
        })
        .collect();
    if recovered > 0 {
        parts.push(format!("{recovered} recovered"));
    }
    if notices > 0 {
        parts.push(plural(notices, "notice", "notices"));
    }
    let where_ = match clusters.len() {
        1 => format!("in cluster {}", clusters.iter().next().copied().unwrap_or_default()),
        _ => format!("in clusters {}", clusters.into_iter().collect::<Vec<_>>().join(", ")),
    };
    format!("{} on {} {where_}", parts.join(", "), plural(hosts.len(), "host", "hosts"))
}

pub fn subject(notes: &[Note]) -> String {
    match notes {
        [one] => subject_one(one),
        many => summary(many),
    }
}

fn block(out: &mut String, n: &Note, base: &str) {
    let _ = writeln!(out, "{} - {} in cluster {} is {}", n.kind.label(), what(n), n.cluster, n.state);
    let _ = writeln!(out, "Output:   {}", n.output.lines().next().unwrap_or(""));
    if !n.perfdata.is_empty() {
        let _ = writeln!(out, "Perfdata: {}", n.perfdata);
    }
    let _ = writeln!(out, "Since:    {} ({} when notified)", time(n.since), ago(n.time - n.since));
    let _ = write!(out, "Attempt:  {}/{}", n.attempt, n.max_attempts);
    if n.number > 0 {
        let _ = write!(out, "   Notification: #{}{}", n.number, if n.escalated { " (escalated)" } else { "" });
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "Host:     {}", host_link(base, n));
    if !n.service.is_empty() {
        let _ = writeln!(out, "Check:    {}", check_link(base, n));
    }
    if let Some(g) = graph_link(base, n) {
        let _ = writeln!(out, "Graph:    {g}");
    }
}

/// The plain-text body.
pub fn text(notes: &[Note], base: &str) -> String {
    let mut out = String::new();
    if notes.len() > 1 {
        let _ = writeln!(out, "{}\n", summary(notes));
    }
    for (i, n) in notes.iter().take(MAX_DETAIL).enumerate() {
        if i > 0 {
            out.push('\n');
        }
        block(&mut out, n, base);
    }
    if notes.len() > MAX_DETAIL {
        let _ = writeln!(out, "\n... and {} more: {base}/problems", notes.len() - MAX_DETAIL);
    }
    let _ = write!(out, "\n-- \nganglion, {base}/");
    out
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// The HTML body; `graph_cid` is the content id of the inline graph of the first
/// notification, when one was rendered.
pub fn html(notes: &[Note], base: &str, graph_cid: Option<&str>) -> String {
    let mut out = String::from("<!DOCTYPE html><html><body style=\"font-family:sans-serif\">");
    if notes.len() > 1 {
        let _ = write!(out, "<h2>{}</h2>", esc(&summary(notes)));
    }
    let _ = write!(out, "<table border=\"1\" cellpadding=\"4\" style=\"border-collapse:collapse\"><tr><th>What</th><th>State</th><th>Output</th><th>Since</th><th>Attempt</th><th>Links</th></tr>");
    for n in notes.iter().take(MAX_DETAIL) {
        let color = match n.state.as_str() {
            "OK" | "UP" => "#8f8",
            "WARNING" => "#ff8",
            "UNKNOWN" => "#f8f",
            _ => "#f88",
        };
        let graph = graph_link(base, n).map(|g| format!(" <a href=\"{}\">graph</a>", esc(&g))).unwrap_or_default();
        let _ = write!(
            out,
            "<tr><td>{} {}<br><small>cluster {}</small></td><td style=\"background:{color}\">{}</td><td>{}<br><small>{}</small></td><td>{}</td><td>{}/{}</td><td><a href=\"{}\">host</a>{graph}</td></tr>",
            esc(n.kind.label()),
            esc(&what(n)),
            esc(&n.cluster),
            esc(&n.state),
            esc(n.output.lines().next().unwrap_or("")),
            esc(&n.perfdata),
            esc(&time(n.since)),
            n.attempt,
            n.max_attempts,
            esc(&host_link(base, n)),
        );
    }
    out.push_str("</table>");
    if notes.len() > MAX_DETAIL {
        let _ = write!(
            out,
            "<p>… and {} more: <a href=\"{}\">problems</a></p>",
            notes.len() - MAX_DETAIL,
            esc(&format!("{base}/problems"))
        );
    }
    if let Some(cid) = graph_cid {
        let _ = write!(out, "<p><img src=\"cid:{}\" alt=\"graph\"></p>", esc(cid));
    }
    out.push_str("</body></html>");
    out
}

fn abbrev(state: &str) -> &str {
    match state {
        "CRITICAL" => "CRIT",
        "WARNING" => "WARN",
        "UNKNOWN" => "UNKN",
        "UNREACHABLE" => "UNRCH",
        s => s,
    }
}

/// Cuts `s` to at most [`SMS_MAX`] characters, marking a cut with `...`.
pub fn fit(s: &str) -> String {
    let s = s.replace(['\n', '\r'], " ");
    if s.chars().count() <= SMS_MAX {
        return s;
    }
    let mut out: String = s.chars().take(SMS_MAX - 3).collect();
    out.push_str("...");
    out
}

/// The short text of one notification or a group.
pub fn short(notes: &[Note]) -> String {
    match notes {
        [n] => {
            let tag = match n.kind {
                NoteKind::Problem | NoteKind::Recovery | NoteKind::Test => abbrev(&n.state).to_owned(),
                NoteKind::Acknowledgement => "ACK".into(),
                NoteKind::FlappingStart => "FLAP".into(),
                NoteKind::FlappingStop => "FLAP END".into(),
                NoteKind::DowntimeStart => "DT".into(),
                NoteKind::DowntimeEnd => "DT END".into(),
            };
            fit(&format!("{tag} {}: {}", what(n), n.output.lines().next().unwrap_or("")))
        }
        many => {
            let mut s = summary(many);
            for n in many.iter().filter(|n| n.kind == NoteKind::Problem) {
                let item = format!(" {}", what(n));
                if s.chars().count() + item.chars().count() + 1 > SMS_MAX {
                    break;
                }
                s.push_str(if s.ends_with(':') || s.contains(": ") { "," } else { ":" });
                s.push_str(&item);
            }
            fit(&s)
        }
    }
}

/// The short text that stands for notifications held back by the rate limit.
pub fn folded(notes: &[Note]) -> String {
    fit(&format!("+{} more held by the SMS limit: {}", notes.len(), summary(notes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(kind: NoteKind, host: &str, service: &str, state: &str) -> Note {
        Note {
            kind,
            cluster: "web".into(),
            host: host.into(),
            service: service.into(),
            state: state.into(),
            output: format!("{state} - {}", "x".repeat(300)),
            perfdata: "time=0.5s;1;2".into(),
            since: 1_000,
            attempt: 3,
            max_attempts: 3,
            number: 1,
            escalated: false,
            time: 1_065,
            metric: Some(format!("{service}_time")),
        }
    }

    #[test]
    fn summarises_a_storm() {
        let mut notes: Vec<Note> =
            (0..12).map(|i| note(NoteKind::Problem, &format!("web{}", i % 3), &format!("s{i}"), "CRITICAL")).collect();
        notes.push(note(NoteKind::Recovery, "web0", "x", "OK"));
        assert_eq!(summary(&notes), "12 services CRITICAL, 1 recovered on 3 hosts in cluster web");
        let many: Vec<Note> = (0..120).map(|i| note(NoteKind::Problem, "web1", &format!("s{i}"), "CRITICAL")).collect();
        let t = text(&many, "http://m");
        assert!(t.contains("web1/s49 in cluster") && !t.contains("web1/s50 in cluster"), "{t}");
        assert!(t.contains("... and 70 more: http://m/problems"), "{t}");
        let s = short(&notes);
        assert!(s.chars().count() <= SMS_MAX, "{s}");
        assert!(s.starts_with("12 services CRITICAL"), "{s}");
    }

    #[test]
    fn single_message_has_what_where_since_and_links() {
        let n = note(NoteKind::Problem, "web01", "http", "CRITICAL");
        assert_eq!(subject(std::slice::from_ref(&n)), "PROBLEM: web01/http is CRITICAL");
        let t = text(std::slice::from_ref(&n), "http://mon:8080");
        assert!(t.contains("Perfdata: time=0.5s;1;2"), "{t}");
        assert!(t.contains("1970-01-01 00:16:40 UTC (1m 5s when notified)"), "{t}");
        assert!(t.contains("Attempt:  3/3   Notification: #1"), "{t}");
        assert!(t.contains("http://mon:8080/host?c=web&h=web01"), "{t}");
        assert!(t.contains("http://mon:8080/check?c=web&h=web01&s=http"), "{t}");
        assert!(t.contains("http://mon:8080/graph.png?c=web&h=web01&m=http_time&r=day"), "{t}");
        let s = short(std::slice::from_ref(&n));
        assert_eq!(s.chars().count(), SMS_MAX);
        assert!(s.starts_with("CRIT web01/http: CRITICAL - xxx") && s.ends_with("..."), "{s}");
        let h = html(std::slice::from_ref(&n), "http://mon:8080", Some("graph1"));
        assert!(h.contains("cid:graph1") && h.contains("PROBLEM web01/http"), "{h}");
    }
}
