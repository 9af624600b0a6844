//! The alerting sections of the collector's configuration: `[[contact]]`,
//! `[[contactgroup]]`, `[[route]]`, `[[escalation]]`, `[alerts]`, `[smtp]`,
//! `[[webhook]]`.
//!
//! [`build`] checks them and reports every problem (bad address, unknown contact or
//! group, bad regex, cron expression or time zone) with the position it comes from,
//! through the same reporter as the rest of [`crate::config`].

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::str::FromStr;
use std::time::Duration;

use chrono::{Datelike, TimeZone, Timelike};
use serde::{Deserialize, Serialize};
use toml::Spanned;

type Problem<'a> = &'a mut dyn FnMut(Range<usize>, String);

fn unspanned<T>(v: T) -> Spanned<T> {
    Spanned::new(0..0, v)
}

/// One `[[contact]]`: a person (or a team address) who receives notifications.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawContact {
    pub name: Spanned<String>,
    /// Address for full email notifications.
    pub email: Option<Spanned<String>>,
    /// Email-to-SMS gateway address: gets short (≤ 160 characters) texts.
    pub sms_email: Option<Spanned<String>>,
    /// Phone number, substituted as `{phone}` into the webhook body.
    pub phone: Option<String>,
    /// Name of a `[[webhook]]` that gets this contact's short texts.
    pub webhook: Option<Spanned<String>>,
    /// Nagios notification options: `w` warning, `u` unknown/unreachable, `c` critical,
    /// `d` host down, `r` recovery, `f` flapping, `s` downtime. Default all of them.
    pub states: Option<Spanned<String>>,
    /// When the contact may be notified: cron expressions (a time is inside when its
    /// minute matches) or ranges like `mon-fri 09:00-17:30`. Default always.
    pub period: Option<Vec<Spanned<String>>>,
    /// Time zone of `period` (IANA name, `UTC` or `+02:00`). Default `UTC`.
    pub time_zone: Option<Spanned<String>>,
}

/// One `[[contactgroup]]`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawContactGroup {
    pub name: Spanned<String>,
    pub members: Vec<Spanned<String>>,
}

/// One `[[route]]`: which problems go to which groups.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    /// Clusters the rule applies to. Default every cluster.
    pub clusters: Option<Vec<String>>,
    /// Regular expression on host names. Default every host.
    pub hosts: Option<Spanned<String>>,
    /// Regular expression on service names (the host check has the empty name).
    /// Default every service and the host check.
    pub services: Option<Spanned<String>>,
    /// States the rule applies to (`warning`, `critical`, `unknown`, `down`,
    /// `unreachable`). Default all.
    pub severity: Option<Vec<Spanned<String>>>,
    pub groups: Vec<Spanned<String>>,
    /// Keep looking at the next rules after this one matched. Default false.
    #[serde(default, rename = "continue")]
    pub continue_: bool,
}

/// One `[[escalation]]`: more contacts after some notifications or some time.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawEscalation {
    pub clusters: Option<Vec<String>>,
    pub hosts: Option<Spanned<String>>,
    pub services: Option<Spanned<String>>,
    /// Applies from this notification number on. Default 1.
    pub first_notification: Option<u32>,
    /// Applies up to this notification number; 0 = no end. Default 0.
    pub last_notification: Option<u32>,
    /// Applies once the problem is this old (seconds since its hard change). Default 0.
    pub after_secs: Option<u64>,
    /// Problem states it applies to, as `route.severity` (Nagios' `escalation_options`).
    /// Default all.
    pub severity: Option<Vec<Spanned<String>>>,
    pub groups: Vec<Spanned<String>>,
    /// The route's contacts keep getting the notifications too. Default true.
    pub also_normal_contacts: Option<bool>,
    /// Re-notification interval while this escalation applies. Default `[alerts]`'s.
    pub notification_interval_secs: Option<u64>,
}

/// `[alerts]`: timing of notifications.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawAlerts {
    /// Problems starting within this window for the same contact go in one message.
    #[serde(default = "default_group_window")]
    pub group_window_secs: u64,
    /// Reminder interval while a problem stays unhandled; 0 notifies once.
    #[serde(default = "default_interval")]
    pub notification_interval_secs: u64,
    /// A new problem is notified only once it is this old.
    #[serde(default)]
    pub first_notification_delay_secs: u64,
    /// Short texts (SMS email and webhook) per contact per `sms_rate_window_secs`;
    /// the excess is folded into one summary sent when the window has room again.
    #[serde(default = "default_sms_limit")]
    pub sms_rate_limit: u32,
    #[serde(default = "default_sms_window")]
    pub sms_rate_window_secs: u64,
    /// Base URL of the dashboard for links in messages, e.g. `http://mon.example:8080`.
    /// Default `http://<web.listen>`.
    pub dashboard_url: Option<Spanned<String>>,
    /// Delivery attempts before a message is `failed`.
    #[serde(default = "default_max_tries")]
    pub max_tries: u32,
    /// Wait before the first retry; doubled after each failed try up to
    /// `max_retry_secs`.
    #[serde(default = "default_retry")]
    pub retry_secs: u64,
    #[serde(default = "default_max_retry")]
    pub max_retry_secs: u64,
    /// Deadline of one SMTP or webhook delivery.
    #[serde(default = "default_send_timeout")]
    pub send_timeout_secs: u64,
}

impl Default for RawAlerts {
    fn default() -> Self {
        toml::from_str("").expect("every [alerts] key has a default")
    }
}
fn default_group_window() -> u64 {
    30
}
fn default_interval() -> u64 {
    3600
}
fn default_sms_limit() -> u32 {
    10
}
fn default_sms_window() -> u64 {
    3600
}
fn default_max_tries() -> u32 {
    10
}
fn default_retry() -> u64 {
    30
}
fn default_max_retry() -> u64 {
    3600
}
fn default_send_timeout() -> u64 {
    30
}

/// `[smtp]`: the mail server emails and SMS emails go through.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawSmtp {
    #[serde(default = "default_smtp_host")]
    pub host: String,
    /// Default 25 (`plain`), 587 (`starttls`) or 465 (`tls`).
    pub port: Option<u16>,
    /// `plain`, `starttls` or `tls`. Default `plain`.
    pub security: Option<Spanned<String>>,
    pub username: Option<String>,
    /// Either this or `password_file`, with `username`.
    pub password: Option<String>,
    pub password_file: Option<std::path::PathBuf>,
    /// Sender address. Default `ganglion@localhost`.
    pub from: Option<Spanned<String>>,
}

impl Default for RawSmtp {
    fn default() -> Self {
        toml::from_str("").expect("every [smtp] key has a default")
    }
}
fn default_smtp_host() -> String {
    "localhost".into()
}

/// One `[[webhook]]`: an HTTP endpoint of an SMS provider or chat tool.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebhook {
    pub name: Spanned<String>,
    pub url: Spanned<String>,
    /// Extra request headers (e.g. `Authorization`).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// `json` or `form`. Default `json`.
    pub format: Option<Spanned<String>>,
    /// Body template with `{text}`, `{phone}`, `{contact}`, `{subject}`, `{id}`; values are
    /// JSON-escaped (`json`) or percent-encoded (`form`). Default
    /// `{"to":"{phone}","text":"{text}"}` or `to={phone}&text={text}`.
    pub body: Option<String>,
}

/// Which notifications a contact wants (Nagios' notification options).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateFilter {
    pub warning: bool,
    pub unknown: bool,
    pub critical: bool,
    pub down: bool,
    pub recovery: bool,
    pub flapping: bool,
    pub downtime: bool,
}

impl StateFilter {
    pub const ALL: StateFilter = StateFilter {
        warning: true,
        unknown: true,
        critical: true,
        down: true,
        recovery: true,
        flapping: true,
        downtime: true,
    };

    fn parse(s: &str) -> Result<StateFilter, String> {
        let mut f = StateFilter {
            warning: false,
            unknown: false,
            critical: false,
            down: false,
            recovery: false,
            flapping: false,
            downtime: false,
        };
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "w" => f.warning = true,
                "u" => f.unknown = true,
                "c" => f.critical = true,
                "d" => f.down = true,
                "r" => f.recovery = true,
                "f" => f.flapping = true,
                "s" => f.downtime = true,
                "n" => {}
                other => return Err(format!("{other:?} is not one of w, u, c, d, r, f, s, n")),
            }
        }
        Ok(f)
    }

    /// Whether a problem in `state` (upper-case name) is wanted.
    pub fn wants_state(&self, state: &str) -> bool {
        match state {
            "WARNING" => self.warning,
            "CRITICAL" => self.critical,
            "UNKNOWN" | "UNREACHABLE" => self.unknown,
            "DOWN" => self.down,
            _ => false,
        }
    }
}

/// A time zone of a period.
#[derive(Debug, Clone, Copy)]
pub enum Zone {
    Utc,
    Fixed(chrono::FixedOffset),
    Named(chrono_tz::Tz),
}

fn parse_zone(s: &str) -> Option<Zone> {
    let t = s.trim();
    if t.eq_ignore_ascii_case("utc") || t == "Z" {
        return Some(Zone::Utc);
    }
    if let Ok(off) = chrono::FixedOffset::from_str(t) {
        return Some(Zone::Fixed(off));
    }
    chrono_tz::Tz::from_str(t).ok().map(Zone::Named)
}

/// One piece of a notification period.
#[derive(Debug, Clone)]
pub enum PeriodPart {
    /// Inside when the minute matches.
    Cron(Box<cron::Schedule>),
    /// Weekdays (bit 0 = Monday) and minutes of the day `[start, end)`.
    Range { days: u8, start: u32, end: u32 },
}

/// When a contact may be notified; empty = always.
#[derive(Debug, Clone)]
pub struct Period {
    pub parts: Vec<PeriodPart>,
    pub zone: Zone,
}

/// Local (weekday from Monday = 0, minute of day, the minute's start as a UTC time).
fn local_parts<Z: TimeZone>(zone: &Z, t: i64) -> Option<(u32, u32, chrono::DateTime<Z>)> {
    let utc = chrono::DateTime::<chrono::Utc>::from_timestamp(t - t.rem_euclid(60), 0)?;
    let local = utc.with_timezone(zone);
    Some((local.weekday().num_days_from_monday(), local.hour() * 60 + local.minute(), local))
}

impl Period {
    /// Whether `t` (seconds since the epoch) is inside the period.
    pub fn contains(&self, t: i64) -> bool {
        if self.parts.is_empty() {
            return true;
        }
        self.parts.iter().any(|p| match self.zone {
            Zone::Utc => part_contains(p, &chrono::Utc, t),
            Zone::Fixed(z) => part_contains(p, &z, t),
            Zone::Named(z) => part_contains(p, &z, t),
        })
    }
}

fn part_contains<Z: TimeZone>(p: &PeriodPart, zone: &Z, t: i64) -> bool {
    let Some((wd, minute, local)) = local_parts(zone, t) else { return false };
    match p {
        PeriodPart::Range { days, start, end } => days & (1 << wd) != 0 && minute >= *start && minute < *end,
        PeriodPart::Cron(s) => {
            let before = local.clone() - chrono::Duration::seconds(1);
            s.after(&before).next().is_some_and(|n| n == local)
        }
    }
}

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

fn parse_range(s: &str) -> Option<PeriodPart> {
    let mut words: Vec<&str> = s.split_whitespace().collect();
    let times = words.pop()?;
    let days = match words.as_slice() {
        [] => 0x7f,
        [d] => {
            let mut mask = 0u8;
            for item in d.split(',') {
                let day = |n: &str| DAYS.iter().position(|x| n.to_ascii_lowercase().starts_with(x));
                match item.split_once('-') {
                    Some((a, b)) => {
                        let (a, b) = (day(a)?, day(b)?);
                        let mut i = a;
                        loop {
                            mask |= 1 << i;
                            if i == b {
                                break;
                            }
                            i = (i + 1) % 7;
                        }
                    }
                    None => mask |= 1 << day(item)?,
                }
            }
            mask
        }
        _ => return None,
    };
    let (a, b) = times.split_once('-')?;
    let minute = |hm: &str| -> Option<u32> {
        let (h, m) = hm.split_once(':')?;
        let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
        (m < 60 && (h < 24 || (h == 24 && m == 0))).then_some(h * 60 + m)
    };
    let (start, end) = (minute(a)?, minute(b)?);
    (start < end).then_some(PeriodPart::Range { days, start, end })
}

fn parse_period_part(s: &str) -> Result<PeriodPart, String> {
    let first = s.split_whitespace().next().unwrap_or("");
    let looks_like_range = first.contains(':') || DAYS.iter().any(|d| first.to_ascii_lowercase().starts_with(d));
    if looks_like_range && s.contains(':') {
        return parse_range(s)
            .ok_or_else(|| format!("{s:?} is not a range like \"mon-fri 09:00-17:30\" or \"sat,sun 10:00-12:00\""));
    }
    let full = if s.split_whitespace().count() == 5 { format!("0 {s}") } else { s.to_owned() };
    cron::Schedule::from_str(&full).map(|c| PeriodPart::Cron(Box::new(c))).map_err(|e| {
        format!("{s:?} is neither a cron expression ({}) nor a range like \"mon-fri 09:00-17:30\"", one_line(&e))
    })
}

/// A contact as the alerting layer uses it.
#[derive(Debug, Clone)]
pub struct Contact {
    pub name: String,
    pub email: Option<String>,
    pub sms_email: Option<String>,
    pub phone: Option<String>,
    /// Index into [`AlertsConfig::webhooks`].
    pub webhook: Option<usize>,
    pub states: StateFilter,
    pub period: Period,
}

/// A compiled `[[route]]` or the selector of an `[[escalation]]`.
#[derive(Debug, Clone)]
pub struct Selector {
    pub clusters: Option<Vec<String>>,
    pub hosts: Option<regex::Regex>,
    pub services: Option<regex::Regex>,
}

impl Selector {
    pub fn matches(&self, cluster: &str, host: &str, service: &str) -> bool {
        self.clusters.as_ref().is_none_or(|c| c.iter().any(|x| x == cluster))
            && self.hosts.as_ref().is_none_or(|r| r.is_match(host))
            && self.services.as_ref().is_none_or(|r| r.is_match(service))
    }
}

#[derive(Debug, Clone)]
pub struct Route {
    pub select: Selector,
    /// Upper-case state names; `None` = all.
    pub severity: Option<Vec<String>>,
    /// Contact indices (groups expanded).
    pub contacts: Vec<usize>,
    pub continue_: bool,
}

#[derive(Debug, Clone)]
pub struct Escalation {
    pub select: Selector,
    pub first_notification: u32,
    /// 0 = no end.
    pub last_notification: u32,
    pub after_secs: i64,
    /// Problem states it applies to (upper case); `None`: all.
    pub severity: Option<Vec<String>>,
    pub contacts: Vec<usize>,
    pub also_normal_contacts: bool,
    pub notification_interval_secs: Option<i64>,
}

impl Escalation {
    /// Whether it applies to problem notification `number` of a check in `state` whose
    /// problem is `age` seconds old.
    pub fn applies(&self, (cluster, host, service): (&str, &str, &str), state: &str, number: u32, age: i64) -> bool {
        self.select.matches(cluster, host, service)
            && self.severity.as_ref().is_none_or(|list| list.iter().any(|x| x == state))
            && number >= self.first_notification
            && (self.last_notification == 0 || number <= self.last_notification)
            && age >= self.after_secs
    }
}

/// SMTP connection security.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    Plain,
    StartTls,
    Tls,
}

#[derive(Debug, Clone)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    pub security: Security,
    pub credentials: Option<(String, String)>,
    pub from: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    Json,
    Form,
}

#[derive(Debug, Clone)]
pub struct Webhook {
    pub name: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub format: BodyFormat,
    pub body: String,
}

/// Everything the alerting layer needs.
#[derive(Debug, Clone)]
pub struct AlertsConfig {
    pub contacts: Vec<Contact>,
    pub routes: Vec<Route>,
    pub escalations: Vec<Escalation>,
    pub group_window: Duration,
    pub notification_interval_secs: i64,
    pub first_notification_delay_secs: i64,
    pub sms_rate_limit: u32,
    pub sms_rate_window_secs: i64,
    /// Without a trailing `/`.
    pub dashboard_url: String,
    pub max_tries: u32,
    pub retry_secs: u64,
    pub max_retry_secs: u64,
    pub send_timeout: Duration,
    pub smtp: SmtpConfig,
    pub webhooks: Vec<Webhook>,
}

impl AlertsConfig {
    /// Whether anyone can be notified at all.
    pub fn enabled(&self) -> bool {
        !self.contacts.is_empty() && !self.routes.is_empty()
    }

    #[cfg(test)]
    pub fn contact_index(&self, name: &str) -> Option<usize> {
        self.contacts.iter().position(|c| c.name == name)
    }
}

/// The raw alerting sections, borrowed from [`crate::config::RawConfig`].
pub struct RawSections<'a> {
    pub contacts: &'a [RawContact],
    pub groups: &'a [RawContactGroup],
    pub routes: &'a [RawRoute],
    pub escalations: &'a [RawEscalation],
    pub alerts: &'a RawAlerts,
    pub smtp: Option<&'a RawSmtp>,
    pub webhooks: &'a [RawWebhook],
}

/// A library's multi-line error (with a caret under the input) as one line.
fn one_line(e: &dyn std::fmt::Display) -> String {
    let text = e.to_string();
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty() && *l != "^").collect();
    lines.last().map_or_else(String::new, |l| (*l).to_owned())
}

fn check_address(s: &Spanned<String>, what: &str, problem: Problem<'_>) -> Option<String> {
    match lettre::Address::from_str(s.get_ref().trim()) {
        Ok(a) => Some(a.to_string()),
        Err(e) => {
            problem(s.span(), format!("{what}: {:?} is not an email address ({e})", s.get_ref()));
            None
        }
    }
}

fn check_regex(s: &Option<Spanned<String>>, what: &str, problem: Problem<'_>) -> Option<regex::Regex> {
    let s = s.as_ref()?;
    match regex::Regex::new(s.get_ref()) {
        Ok(r) => Some(r),
        Err(e) => {
            problem(s.span(), format!("{what}: bad regular expression: {}", one_line(&e)));
            None
        }
    }
}

const SEVERITIES: [&str; 5] = ["WARNING", "CRITICAL", "UNKNOWN", "DOWN", "UNREACHABLE"];

/// Checks the alerting sections; `web_listen` gives the default dashboard URL.
/// Problems go to `problem` with the span they come from.
pub fn build(raw: RawSections<'_>, web_listen: Option<std::net::SocketAddr>, problem: Problem<'_>) -> AlertsConfig {
    let mut webhooks = Vec::new();
    for w in raw.webhooks {
        if webhooks.iter().any(|x: &Webhook| x.name == *w.name.get_ref()) {
            problem(w.name.span(), format!("webhook {}: defined twice", w.name.get_ref()));
        }
        let url = w.url.get_ref();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            problem(
                w.url.span(),
                format!("webhook {}: url {url:?} is not an http:// or https:// URL", w.name.get_ref()),
            );
        }
        let format = match w.format.as_ref().map(|f| f.get_ref().as_str()) {
            None | Some("json") => BodyFormat::Json,
            Some("form") => BodyFormat::Form,
            Some(other) => {
                let span = w.format.as_ref().map(Spanned::span).unwrap_or(0..0);
                problem(span, format!("webhook {}: format {other:?} is not json or form", w.name.get_ref()));
                BodyFormat::Json
            }
        };
        let body = w.body.clone().unwrap_or_else(|| match format {
            BodyFormat::Json => r#"{"to":"{phone}","text":"{text}"}"#.to_owned(),
            BodyFormat::Form => "to={phone}&text={text}".to_owned(),
        });
        webhooks.push(Webhook {
            name: w.name.get_ref().clone(),
            url: url.clone(),
            headers: w.headers.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            format,
            body,
        });
    }
    let mut contacts: Vec<Contact> = Vec::new();
    for c in raw.contacts {
        let name = c.name.get_ref().clone();
        if name.is_empty() || contacts.iter().any(|x| x.name == name) {
            problem(c.name.span(), format!("contact {name:?}: empty or defined twice"));
        }
        let email = c.email.as_ref().and_then(|e| check_address(e, &format!("contact {name}: email"), problem));
        let sms_email =
            c.sms_email.as_ref().and_then(|e| check_address(e, &format!("contact {name}: sms_email"), problem));
        let webhook = c.webhook.as_ref().and_then(|w| {
            let i = webhooks.iter().position(|x| x.name == *w.get_ref());
            if i.is_none() {
                problem(w.span(), format!("contact {name}: no [[webhook]] named {:?}", w.get_ref()));
            }
            i
        });
        if c.email.is_none() && c.sms_email.is_none() && c.webhook.is_none() {
            problem(c.name.span(), format!("contact {name}: give at least one of email, sms_email, webhook"));
        }
        let states = match &c.states {
            None => StateFilter::ALL,
            Some(s) => StateFilter::parse(s.get_ref()).unwrap_or_else(|e| {
                problem(s.span(), format!("contact {name}: states: {e}"));
                StateFilter::ALL
            }),
        };
        let zone = match &c.time_zone {
            None => Zone::Utc,
            Some(z) => parse_zone(z.get_ref()).unwrap_or_else(|| {
                problem(z.span(), format!("contact {name}: unknown time zone {:?}", z.get_ref()));
                Zone::Utc
            }),
        };
        let mut parts = Vec::new();
        for p in c.period.iter().flatten() {
            match parse_period_part(p.get_ref().trim()) {
                Ok(x) => parts.push(x),
                Err(e) => problem(p.span(), format!("contact {name}: period: {e}")),
            }
        }
        contacts.push(Contact {
            name,
            email,
            sms_email,
            phone: c.phone.clone(),
            webhook,
            states,
            period: Period { parts, zone },
        });
    }
    let mut groups: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for g in raw.groups {
        let mut members = Vec::new();
        for m in &g.members {
            match contacts.iter().position(|c| c.name == *m.get_ref()) {
                Some(i) => members.push(i),
                None => {
                    problem(m.span(), format!("contactgroup {}: unknown contact {:?}", g.name.get_ref(), m.get_ref()))
                }
            }
        }
        if groups.insert(g.name.get_ref().clone(), members).is_some() {
            problem(g.name.span(), format!("contactgroup {}: defined twice", g.name.get_ref()));
        }
    }
    let expand = |list: &[Spanned<String>], what: &str, problem: Problem<'_>| -> Vec<usize> {
        let mut out = BTreeSet::new();
        for g in list {
            match groups.get(g.get_ref()) {
                Some(m) => out.extend(m.iter().copied()),
                None => problem(g.span(), format!("{what}: unknown contactgroup {:?}", g.get_ref())),
            }
        }
        out.into_iter().collect()
    };
    let severity = |list: &Option<Vec<Spanned<String>>>, what: &str, problem: Problem<'_>| {
        list.as_ref().map(|list| {
            list.iter()
                .filter_map(|s| {
                    let up = s.get_ref().to_ascii_uppercase();
                    if SEVERITIES.contains(&up.as_str()) {
                        Some(up)
                    } else {
                        problem(
                            s.span(),
                            format!(
                                "{what}: severity {:?} is not one of {}",
                                s.get_ref(),
                                SEVERITIES.join(", ").to_lowercase()
                            ),
                        );
                        None
                    }
                })
                .collect()
        })
    };
    let mut routes = Vec::new();
    for r in raw.routes {
        let severity = severity(&r.severity, "route", problem);
        if r.groups.is_empty() {
            problem(0..0, "route: groups must name at least one contactgroup".into());
        }
        routes.push(Route {
            select: Selector {
                clusters: r.clusters.clone(),
                hosts: check_regex(&r.hosts, "route.hosts", problem),
                services: check_regex(&r.services, "route.services", problem),
            },
            severity,
            contacts: expand(&r.groups, "route.groups", problem),
            continue_: r.continue_,
        });
    }
    let mut escalations = Vec::new();
    for e in raw.escalations {
        escalations.push(Escalation {
            select: Selector {
                clusters: e.clusters.clone(),
                hosts: check_regex(&e.hosts, "escalation.hosts", problem),
                services: check_regex(&e.services, "escalation.services", problem),
            },
            first_notification: e.first_notification.unwrap_or(1).max(1),
            last_notification: e.last_notification.unwrap_or(0),
            after_secs: i64::try_from(e.after_secs.unwrap_or(0)).unwrap_or(i64::MAX),
            severity: severity(&e.severity, "escalation", problem),
            contacts: expand(&e.groups, "escalation.groups", problem),
            also_normal_contacts: e.also_normal_contacts.unwrap_or(true),
            notification_interval_secs: e.notification_interval_secs.map(|s| i64::try_from(s).unwrap_or(i64::MAX)),
        });
    }
    let a = raw.alerts;
    let dashboard_url = match &a.dashboard_url {
        Some(u) => {
            if !(u.get_ref().starts_with("http://") || u.get_ref().starts_with("https://")) {
                problem(u.span(), format!("alerts.dashboard_url: {:?} is not an http:// or https:// URL", u.get_ref()));
            }
            u.get_ref().trim_end_matches('/').to_owned()
        }
        None => format!("http://{}", web_listen.map_or_else(|| "127.0.0.1:8080".to_owned(), |w| w.to_string())),
    };
    let default_smtp = RawSmtp::default();
    let s = raw.smtp.unwrap_or(&default_smtp);
    let security = match s.security.as_ref().map(|x| x.get_ref().as_str()) {
        None | Some("plain") => Security::Plain,
        Some("starttls") => Security::StartTls,
        Some("tls") => Security::Tls,
        Some(other) => {
            let span = s.security.as_ref().map(Spanned::span).unwrap_or(0..0);
            problem(span, format!("smtp.security: {other:?} is not plain, starttls or tls"));
            Security::Plain
        }
    };
    let password = match (&s.password, &s.password_file) {
        (Some(p), None) => Some(p.clone()),
        (None, Some(f)) => match std::fs::read_to_string(f) {
            Ok(t) => Some(t.lines().next().unwrap_or("").to_owned()),
            Err(e) => {
                problem(0..0, format!("smtp.password_file {}: {e}", f.display()));
                None
            }
        },
        (None, None) => None,
        (Some(_), Some(_)) => {
            problem(0..0, "smtp: give at most one of password and password_file".into());
            None
        }
    };
    let credentials = match (&s.username, password) {
        (Some(u), Some(p)) => Some((u.clone(), p)),
        (None, None) => None,
        _ => {
            problem(0..0, "smtp: username and a password go together".into());
            None
        }
    };
    let from_raw = s.from.clone().unwrap_or_else(|| unspanned("ganglion@localhost".into()));
    let from = match lettre::message::Mailbox::from_str(from_raw.get_ref()) {
        Ok(m) => m.to_string(),
        Err(e) => {
            problem(from_raw.span(), format!("smtp.from: {:?} is not an email address ({e})", from_raw.get_ref()));
            String::new()
        }
    };
    let port = s.port.unwrap_or(match security {
        Security::Plain => 25,
        Security::StartTls => 587,
        Security::Tls => 465,
    });
    AlertsConfig {
        contacts,
        routes,
        escalations,
        group_window: Duration::from_secs(a.group_window_secs),
        notification_interval_secs: i64::try_from(a.notification_interval_secs).unwrap_or(i64::MAX),
        first_notification_delay_secs: i64::try_from(a.first_notification_delay_secs).unwrap_or(i64::MAX),
        sms_rate_limit: a.sms_rate_limit.max(1),
        sms_rate_window_secs: i64::try_from(a.sms_rate_window_secs.max(1)).unwrap_or(i64::MAX),
        dashboard_url,
        max_tries: a.max_tries.max(1),
        retry_secs: a.retry_secs.max(1),
        max_retry_secs: a.max_retry_secs.max(a.retry_secs.max(1)),
        send_timeout: Duration::from_secs(a.send_timeout_secs.max(1)),
        smtp: SmtpConfig { host: s.host.clone(), port, security, credentials, from },
        webhooks,
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    const BASE: &str = "[[cluster]]\nname = \"web\"\nkey = \"0123456789abcdef\"\n";

    fn parse(extra: &str) -> Result<Config, Vec<String>> {
        Config::parse(&format!("{BASE}{extra}"), "f").map_err(|e| e.0)
    }

    #[test]
    fn reads_contacts_routes_and_escalations() {
        let c = parse(
            r#"
[alerts]
group_window_secs = 5
dashboard_url = "http://mon.example:8080/"
[smtp]
host = "127.0.0.1"
port = 2525
security = "starttls"
from = "Monitoring <mon@example.com>"
[[webhook]]
name = "sms"
url = "http://127.0.0.1:9/send"
format = "form"
[[contact]]
name = "alice"
email = "alice@example.com"
phone = "+15550001"
webhook = "sms"
states = "c,r"
period = ["mon-fri 09:00-17:30", "0 * * * Sat"]
time_zone = "Europe/Berlin"
[[contact]]
name = "lead"
email = "lead@example.com"
[[contactgroup]]
name = "ops"
members = ["alice"]
[[contactgroup]]
name = "leads"
members = ["lead"]
[[route]]
hosts = "^web"
groups = ["ops"]
[[escalation]]
after_secs = 1800
groups = ["leads"]
"#,
        )
        .unwrap();
        let a = &c.alerts;
        assert_eq!(a.contacts.len(), 2);
        assert_eq!(a.dashboard_url, "http://mon.example:8080");
        assert_eq!(a.routes[0].contacts, vec![0]);
        assert_eq!(a.escalations[0].contacts, vec![1]);
        assert!(a.escalations[0].also_normal_contacts);
        assert_eq!(a.smtp.port, 2525);
        assert!(a.contacts[0].states.critical && !a.contacts[0].states.warning);
        // Monday 2026-11-23 10:00 in Berlin is 09:00 UTC.
        let monday_10_berlin = 1_795_424_400;
        assert!(a.contacts[0].period.contains(monday_10_berlin));
        assert!(!a.contacts[0].period.contains(monday_10_berlin + 9 * 3600));
        // Saturday 2026-11-28 at 13:00 Berlin matches the cron minute, 13:01 does not.
        let sat_13_berlin = monday_10_berlin + 5 * 86_400 + 3 * 3600;
        assert!(a.contacts[0].period.contains(sat_13_berlin + 30));
        assert!(!a.contacts[0].period.contains(sat_13_berlin + 60));
    }

    /// Every key of the alerting sections is in docs/CONFIG.md, and its example is valid.
    #[test]
    fn every_alerting_key_is_documented() {
        use super::*;
        let doc = include_str!("../../../docs/CONFIG.md");
        let section = doc.split("### Alerts").nth(1).unwrap();
        let example = section.split("```toml\n").nth(1).and_then(|b| b.split("```").next()).unwrap();
        let c = parse(example).unwrap();
        assert_eq!(c.alerts.contacts.len(), 2);
        assert_eq!(c.alerts.escalations[0].after_secs, 1800);
        let s = || Some(unspanned("x".to_owned()));
        let raw = |v: toml::Value| v.as_table().unwrap().keys().cloned().collect::<Vec<_>>();
        let tables: Vec<(&str, Vec<String>)> = vec![
            ("alerts", raw(toml::Value::try_from(RawAlerts { dashboard_url: s(), ..RawAlerts::default() }).unwrap())),
            (
                "smtp",
                raw(toml::Value::try_from(RawSmtp {
                    port: Some(1),
                    security: s(),
                    username: Some("x".into()),
                    password: Some("x".into()),
                    password_file: Some("x".into()),
                    from: s(),
                    ..RawSmtp::default()
                })
                .unwrap()),
            ),
            (
                "webhook",
                raw(toml::Value::try_from(RawWebhook {
                    name: unspanned("x".into()),
                    url: unspanned("x".into()),
                    headers: BTreeMap::new(),
                    format: s(),
                    body: Some("x".into()),
                })
                .unwrap()),
            ),
            (
                "contact",
                raw(toml::Value::try_from(RawContact {
                    name: unspanned("x".into()),
                    email: s(),
                    sms_email: s(),
                    phone: Some("x".into()),
                    webhook: s(),
                    states: s(),
                    period: Some(vec![]),
                    time_zone: s(),
                })
                .unwrap()),
            ),
            (
                "contactgroup",
                raw(toml::Value::try_from(RawContactGroup { name: unspanned("x".into()), members: vec![] }).unwrap()),
            ),
            (
                "route",
                raw(toml::Value::try_from(RawRoute {
                    clusters: Some(vec![]),
                    hosts: s(),
                    services: s(),
                    severity: Some(vec![]),
                    groups: vec![],
                    continue_: true,
                })
                .unwrap()),
            ),
            (
                "escalation",
                raw(toml::Value::try_from(RawEscalation {
                    clusters: Some(vec![]),
                    hosts: s(),
                    services: s(),
                    first_notification: Some(1),
                    last_notification: Some(1),
                    after_secs: Some(1),
                    severity: Some(vec![]),
                    groups: vec![],
                    also_normal_contacts: Some(true),
                    notification_interval_secs: Some(1),
                })
                .unwrap()),
            ),
        ];
        let mut missing = Vec::new();
        for (section, keys) in tables {
            for k in keys {
                if !doc.contains(&format!("`{section}.{k}`")) {
                    missing.push(format!("{section}.{k}"));
                }
            }
        }
        assert!(missing.is_empty(), "not in docs/CONFIG.md: {missing:?}");
    }

    #[test]
    fn reports_bad_alerting_input_with_positions() {
        let err = parse(
            r#"[[contact]]
name = "bob"
email = "not an address"
period = ["every tuesday"]
time_zone = "Mars/Olympus"
[[contactgroup]]
name = "ops"
members = ["bob", "carol"]
[[route]]
services = "("
groups = ["nobody"]
[smtp]
security = "ssl"
[[escalation]]
severity = ["critical", "severe"]
groups = ["ops"]
"#,
        )
        .unwrap_err();
        let want = [
            "f:6:9: contact bob: email",
            "f:7:11: contact bob: period",
            "f:8:13: contact bob: unknown time zone",
            "f:11:19: contactgroup ops: unknown contact \"carol\"",
            "f:13:12: route.services: bad regular expression",
            "f:14:11: route.groups: unknown contactgroup",
            "f:16:12: smtp.security",
            "f:18:25: escalation: severity \"severe\" is not one of warning, critical, unknown, down, unreachable",
        ];
        for w in want {
            assert!(err.iter().any(|e| e.starts_with(w)), "{w} not in {err:#?}");
        }
    }
}
