//! The pages: grid, cluster, host, metric, compare, search, problems, check detail and
//! health. Each is server-rendered HTML and, with `?format=json`, the same data as JSON.
//!
//! Graph images point at `/graph.png` with the page's range, so a link to a page shows
//! the same view. Names from agents and plugin output are escaped by `maud`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::json;

use crate::charts::{REPORTS, SIZES};
use crate::html::{self as h, link, num, page, state_class, Frame, RangeQuery};
use crate::source::{CheckInfo, HostInfo};
use crate::App;

/// A page failure shown as a small page (or JSON) with its status.
pub struct PageError(pub StatusCode, pub String);

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let body = html! { (maud::DOCTYPE) html { head { title { "ganglion" } } body { h1 { (self.0.as_str()) } p.err { (self.1) } p { a href="/" { "Back to the grid" } } } } };
        (self.0, Html(body.into_string())).into_response()
    }
}

fn not_found(what: &str, name: &str) -> PageError {
    PageError(StatusCode::NOT_FOUND, format!("no {what} {}", h::quoted(name)))
}

/// Parameters most pages share.
#[derive(Debug, Default, Deserialize)]
pub struct PageQuery {
    pub c: Option<String>,
    pub h: Option<String>,
    pub m: Option<String>,
    pub s: Option<String>,
    pub q: Option<String>,
    pub hreg: Option<String>,
    pub sort: Option<String>,
    pub f: Option<String>,
    pub stack: Option<u8>,
    pub format: Option<String>,
    pub msg: Option<String>,
    /// The range (see [`RangeQuery`]); kept as text because serde cannot read numbers
    /// of a flattened query struct, and a bad number is ignored, not an error.
    pub r: Option<String>,
    pub cs: Option<String>,
    pub ce: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
}

impl PageQuery {
    fn range(&self) -> RangeQuery {
        let int = |s: &Option<String>| s.as_deref().and_then(|x| x.trim().parse::<i64>().ok());
        RangeQuery {
            r: self.r.clone().filter(|r| !r.is_empty()),
            cs: int(&self.cs),
            ce: int(&self.ce),
            from: self.from.clone().filter(|x| !x.is_empty()),
            to: self.to.clone().filter(|x| !x.is_empty()),
        }
        .normalized()
    }

    fn json(&self) -> bool {
        self.format.as_deref() == Some("json")
    }
}

/// Runs a blocking read of the source off the async workers.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, PageError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        tracing::error!(error = %e, "Page read failed.");
        PageError(StatusCode::INTERNAL_SERVER_ERROR, "internal error; see the collector log".into())
    })
}

fn frame<'a>(app: &'a App, viewer: &'a Viewer, title: &'a str, path: &'a str) -> Frame<'a> {
    Frame {
        title,
        path,
        params: Vec::new(),
        range: None,
        refresh_secs: app.config.refresh_secs,
        user: viewer.user.as_deref(),
        csrf: viewer.csrf.as_deref(),
        crumbs: Vec::new(),
    }
}

/// Who is looking: a signed-in admin or anyone.
#[derive(Debug, Default, Clone)]
pub struct Viewer {
    pub user: Option<String>,
    pub csrf: Option<String>,
}

/// The viewer of a request; `Err` when read-only views need a session and there is none.
pub fn viewer(app: &App, headers: &HeaderMap) -> Result<Viewer, axum::response::Redirect> {
    let s = app.auth.session(headers);
    if s.is_none() && !app.config.public_read {
        return Err(axum::response::Redirect::to("/login"));
    }
    Ok(Viewer { user: s.as_ref().map(|s| s.user.clone()), csrf: s.map(|s| s.csrf) })
}

macro_rules! viewer_or_return {
    ($app:expr, $headers:expr) => {
        match viewer(&$app, &$headers) {
            Ok(v) => v,
            Err(r) => return Ok(r.into_response()),
        }
    };
}

fn graph_url(params: &[(&str, &str)], range: &RangeQuery) -> String {
    let mut p: Vec<(&str, String)> = params.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
    p.extend(range.params());
    let refs: Vec<(&str, &str)> = p.iter().map(|(k, v)| (*k, v.as_str())).collect();
    link("/graph.png", &refs)
}

/// An `<img>` of a graph that can be zoomed by dragging (it knows its time span and
/// plot area) and is reloaded by the auto-refresh.
fn graph_img(app: &App, params: &[(&str, &str)], range: &RangeQuery, size: &str, alt: &str) -> Markup {
    let url = graph_url(&[params, &[("z", size)]].concat(), range);
    let (_, w, ht) = SIZES.iter().copied().find(|s| s.0 == size).unwrap_or(SIZES[1]);
    let (start, end) = crate::charts::time_range(range.r.as_deref(), range.cs, range.ce, app.now()).unwrap_or((0, 1));
    let (left, plot) = crate::graph::plot_x(w, ht);
    html! {
        img.zoom src=(url) width=(w) height=(ht) alt=(alt) loading="lazy"
            data-start=(start) data-end=(end) data-left=(left) data-plot=(plot);
    }
}

// ---------------------------------------------------------------- grid

pub async fn grid(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(q): Query<PageQuery>,
) -> Result<Response, PageError> {
    let v = viewer_or_return!(app, headers);
    let src = app.src.clone();
    let (clusters, checks) = blocking(move || (src.clusters(), src.checks_where(None, None, true))).await?;
    let mut problems: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for c in checks.iter().filter(|c| c.problem && !c.pending) {
        let e = problems.entry(c.cluster.as_str()).or_default();
        if c.handled {
            e.1 += 1;
        } else {
            e.0 += 1;
        }
    }
    if q.json() {
        let out: Vec<_> = clusters
            .iter()
            .map(|c| {
                let (u, hd) = problems.get(c.name.as_str()).copied().unwrap_or_default();
                json!({"name": c.name, "hosts": c.hosts, "hosts_up": c.hosts_up, "hosts_down": c.hosts_down, "problems_unhandled": u, "problems_handled": hd})
            })
            .collect();
        return Ok(Json(json!({ "clusters": out })).into_response());
    }
    let range = q.range();
    let mut f = frame(&app, &v, "Grid", "/");
    f.range = Some(&range);
    let body = html! {
        h1 { "Grid" }
        div.cards {
            @for c in &clusters {
                @let (u, hd) = problems.get(c.name.as_str()).copied().unwrap_or_default();
                div.card {
                    h2 { a href=(link("/cluster", &[("c", &c.name)])) { (c.name) } }
                    p {
                        (c.hosts) " hosts: " span.up { (c.hosts_up) " up" } ", "
                        span class=@if c.hosts_down > 0 { "down" } { (c.hosts_down) " down" }
                        " · problems: " a href="/problems" { (u) " unhandled, " (hd) " handled" }
                    }
                    div.graphs {
                        @for g in REPORTS { (graph_img(&app, &[("c", &c.name), ("g", g)], &range, "small", g)) }
                    }
                }
            }
            @if clusters.is_empty() { p { "No clusters are configured." } }
        }
    };
    Ok(Html(page(&f, body).into_string()).into_response())
}

// ---------------------------------------------------------------- cluster

/// Tile class for a host's load relative to its CPUs (Ganglia's load colours).
fn load_class(h: &HostInfo) -> &'static str {
    let Some(l) = h.load_one else { return "" };
    let per = l / h.cpu_num.filter(|c| *c > 0.0).unwrap_or(1.0);
    match per {
        x if x < 0.25 => "",
        x if x < 0.5 => "l1",
        x if x < 0.75 => "l2",
        x if x < 1.0 => "l3",
        _ => "l4",
    }
}

pub async fn cluster(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(q): Query<PageQuery>,
) -> Result<Response, PageError> {
    let v = viewer_or_return!(app, headers);
    let cname = q.c.clone().unwrap_or_default();
    let metric = q.m.clone().filter(|m| !m.is_empty()).unwrap_or_else(|| "load_one".into());
    let src = app.src.clone();
    let (cn, mn) = (cname.clone(), metric.clone());
    let (hosts, worst, metrics) = blocking(move || {
        let hosts = src.hosts(&cn, &mn);
        let metrics: Vec<String> = hosts
            .as_ref()
            .and_then(|hs| hs.iter().find(|h| h.up).or(hs.first()))
            .and_then(|h0| src.host(Some(&cn), &h0.name))
            .map(|d| d.metrics.into_iter().map(|m| m.name).collect())
            .unwrap_or_default();
        let worst = src.worst_states(&cn);
        (hosts, worst, metrics)
    })
    .await?;
    let mut hosts = hosts.ok_or_else(|| not_found("cluster", &cname))?;
    let filter = match q.f.as_deref().filter(|f| !f.is_empty()) {
        Some(f) => {
            Some(regex::RegexBuilder::new(f).case_insensitive(true).size_limit(1 << 20).build().map_err(|e| {
                PageError(StatusCode::BAD_REQUEST, format!("bad host filter: {}", h::clip(&e.to_string(), 200)))
            })?)
        }
        None => None,
    };
    if let Some(re) = &filter {
        hosts.retain(|h| re.is_match(&h.name));
    }
    let sort = q.sort.as_deref().unwrap_or("name");
    let by_value = |a: &HostInfo, b: &HostInfo| {
        let (x, y) = (a.value.unwrap_or(f64::NEG_INFINITY), b.value.unwrap_or(f64::NEG_INFINITY));
        x.total_cmp(&y).then_with(|| a.name.cmp(&b.name))
    };
    match sort {
        "asc" => hosts.sort_by(by_value),
        "desc" => hosts.sort_by(|a, b| by_value(b, a)),
        _ => hosts.sort_by(|a, b| a.name.cmp(&b.name)),
    }
    if q.json() {
        let out: Vec<_> = hosts
            .iter()
            .map(|h| json!({"name": h.name, "up": h.up, "value": h.value, "load_one": h.load_one, "worst_state": worst.get(&h.name).copied().unwrap_or(0)}))
            .collect();
        return Ok(Json(json!({ "cluster": cname, "metric": metric, "sort": sort, "hosts": out })).into_response());
    }
    let range = q.range();
    let title = format!("Cluster {cname}");
    let mut f = frame(&app, &v, &title, "/cluster");
    f.params = vec![
        ("c", cname.clone()),
        ("m", metric.clone()),
        ("sort", sort.to_owned()),
        ("f", q.f.clone().unwrap_or_default()),
    ];
    f.range = Some(&range);
    f.crumbs = vec![(cname.clone(), link("/cluster", &[("c", &cname)]))];
    let rp: Vec<(&str, String)> = range.params();
    let rp: Vec<(&str, &str)> = rp.iter().map(|(k, v)| (*k, v.as_str())).collect();
    // The tiles' graph URLs share everything but the host: built once.
    let tile_base = graph_url(&[("c", &cname), ("m", &metric), ("z", "small"), ("legend", "0")], &range);
    let body = html! {
        h1 { "Cluster " (cname) }
        div.graphs {
            @for g in REPORTS { (graph_img(&app, &[("c", &cname), ("g", g)], &range, "medium", g)) }
        }
        h2 { (metric) " per host" }
        form method="get" action="/cluster" {
            input type="hidden" name="c" value=(cname);
            @for (k, val) in &rp { input type="hidden" name=(k) value=(val); }
            "Metric "
            select name="m" {
                @if !metrics.contains(&metric) { option selected { (metric) } }
                @for m in &metrics { option selected[*m == metric] { (m) } }
            }
            " Sort "
            select name="sort" {
                option value="name" selected[sort == "name"] { "by name" }
                option value="desc" selected[sort == "desc"] { "by value, descending" }
                option value="asc" selected[sort == "asc"] { "by value, ascending" }
            }
            " Hosts matching "
            input #hostfilter type="text" name="f" value=(q.f.clone().unwrap_or_default()) placeholder="regex";
            " " button type="submit" { "Show" }
            " " (hosts.len()) " hosts"
        }
        div.tiles {
            @for host in &hosts {
                @let sev = worst.get(&host.name).copied().unwrap_or(0);
                @let cls = format!("tile s{sev}{}{}", if load_class(host).is_empty() { "" } else { " " }, load_class(host)) + if host.up { "" } else { " down" };
                @let src = format!("{tile_base}&h={}", serde_urlencoded::to_string([("", host.name.as_str())]).unwrap_or_default().trim_start_matches('='));
                a class=(cls) data-host=(host.name) href=(link("/host", &[("c", &cname), ("h", &host.name)])) {
                    span { (host.name) " " (num(host.value)) @if !host.up { " (down)" } }
                    img src=(src) loading="lazy" alt="";
                }
            }
        }
    };
    Ok(Html(page(&f, body).into_string()).into_response())
}

// ---------------------------------------------------------------- host

/// The group a metric is shown under (agent groups, with perfdata and custom last).
fn group_of(m: &crate::source::MetricInfo) -> String {
    if m.group.is_empty() {
        "custom".into()
    } else {
        m.group.clone()
    }
}

pub async fn host(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(q): Query<PageQuery>,
) -> Result<Response, PageError> {
    let v = viewer_or_return!(app, headers);
    let name = q.h.clone().unwrap_or_default();
    let src = app.src.clone();
    let (c, n) = (q.c.clone(), name.clone());
    let (detail, checks) = blocking(move || {
        let d = src.host(c.as_deref(), &n);
        let checks = match &d {
            Some(d) => src.checks_where(Some(&d.host.cluster), Some(&n), false),
            None => Vec::new(),
        };
        (d, checks)
    })
    .await?;
    let d = detail.ok_or_else(|| not_found("host", &name))?;
    let cname = d.host.cluster.clone();
    if q.json() {
        return Ok(Json(json!({ "host": d.host, "facts": d.facts, "metrics": d.metrics, "checks": checks, "interval_secs": d.interval_secs, "first_seen_ms": d.first_seen_ms, "last_seen_ms": d.last_seen_ms })).into_response());
    }
    let mut groups: BTreeMap<String, Vec<&crate::source::MetricInfo>> = BTreeMap::new();
    for m in &d.metrics {
        groups.entry(group_of(m)).or_default().push(m);
    }
    let range = q.range();
    let title = format!("Host {name}");
    let mut f = frame(&app, &v, &title, "/host");
    f.params = vec![("c", cname.clone()), ("h", name.clone())];
    f.range = Some(&range);
    f.crumbs = vec![
        (cname.clone(), link("/cluster", &[("c", &cname)])),
        (name.clone(), link("/host", &[("c", &cname), ("h", &name)])),
    ];
    let body = html! {
        h1 { "Host " (name) " " @if d.host.up { span.ok { "UP" } } @else { span.crit { "DOWN" } } }
        p { "Last report " (h::duration(d.host.silent_secs as i64)) " ago · every " (d.interval_secs) "s · agent " (d.host.agent_version) }
        div.graphs { @for g in REPORTS { (graph_img(&app, &[("c", &cname), ("h", &name), ("g", g)], &range, "medium", g)) } }
        h2 { "Checks" }
        (checks_table(&checks, false))
        h2 { "Facts" }
        table { @for (k, val) in &d.facts { tr { th { (k) } td { (val) } } } }
        h2 { "Metrics" }
        @let plugin: Vec<(&str, &str)> = checks.iter().flat_map(|c| c.perfdata_series.iter().map(move |m| (c.service.as_str(), m.as_str()))).collect();
        @if !plugin.is_empty() {
            h3 { "plugin perfdata" }
            div.graphs {
                @for (svc, m) in &plugin {
                    a href=(link("/check", &[("c", &cname), ("h", &name), ("s", svc)])) {
                        (graph_img(&app, &[("c", &cname), ("h", &name), ("m", m)], &range, "small", m))
                    }
                }
            }
        }
        @for (g, ms) in &groups {
            h3 { (g) }
            div.graphs {
                @for m in ms {
                    a href=(link("/metric", &[("c", &cname), ("h", &name), ("m", &m.name)])) title=(m.description) {
                        (graph_img(&app, &[("c", &cname), ("h", &name), ("m", &m.name)], &range, "small", &m.name))
                    }
                }
            }
        }
    };
    Ok(Html(page(&f, body).into_string()).into_response())
}

fn checks_table(checks: &[CheckInfo], with_host: bool) -> Markup {
    html! {
        table {
            tr { @if with_host { th { "Host" } } th { "Service" } th { "State" } th { "Duration" } th { "Attempt" } th { "Output" } }
            @for c in checks {
                @let now = chrono::Utc::now().timestamp();
                tr class=@if c.handled && c.problem { "handled" } {
                    @if with_host { td { a href=(link("/host", &[("c", &c.cluster), ("h", &c.host)])) { (c.host) } } }
                    td { a href=(link("/check", &[("c", &c.cluster), ("h", &c.host), ("s", &c.service)])) { @if c.service.is_empty() { "(host)" } @else { (c.service) } } }
                    td class=(state_class(if c.pending { "PENDING" } else { &c.state })) {
                        @if c.pending { "PENDING" } @else { (c.state) }
                        @if c.acknowledged { " (ack)" } @if c.in_downtime { " (downtime)" } @if c.flapping { " (flapping)" }
                    }
                    td { (c.last_state_change.map(|t| h::duration(now - t)).unwrap_or_default()) }
                    td { (c.attempt) "/" (c.max_attempts) " " (c.state_type) }
                    td { (c.output) }
                }
            }
        }
    }
}

// ---------------------------------------------------------------- metric

pub async fn metric(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(q): Query<PageQuery>,
) -> Result<Response, PageError> {
    let v = viewer_or_return!(app, headers);
    let name = q.h.clone().unwrap_or_default();
    let metric = q.m.clone().unwrap_or_default();
    let src = app.src.clone();
    let (c, n) = (q.c.clone(), name.clone());
    let d = blocking(move || src.host(c.as_deref(), &n)).await?.ok_or_else(|| not_found("host", &name))?;
    let m = d.metrics.iter().find(|x| x.name == metric).cloned().ok_or_else(|| not_found("metric", &metric))?;
    let cname = d.host.cluster.clone();
    if q.json() {
        return Ok(Json(json!({ "cluster": cname, "host": name, "metric": m })).into_response());
    }
    let range = q.range();
    let title = format!("{metric} on {name}");
    let mut f = frame(&app, &v, &title, "/metric");
    f.params = vec![("c", cname.clone()), ("h", name.clone()), ("m", metric.clone())];
    f.range = Some(&range);
    f.crumbs = vec![
        (cname.clone(), link("/cluster", &[("c", &cname)])),
        (name.clone(), link("/host", &[("c", &cname), ("h", &name)])),
        (metric.clone(), link("/metric", &[("c", &cname), ("h", &name), ("m", &metric)])),
    ];
    let body = html! {
        h1 { (metric) " on " (name) }
        p { "Now " (num(m.value)) " " (m.unit) " · " (m.kind) " · " (m.description) }
        (graph_img(&app, &[("c", &cname), ("h", &name), ("m", &metric), ("band", "1")], &range, "xlarge", &metric))
        p { "The band shows the minimum and maximum of each point where the archives keep them. "
            a href=(link("/compare", &[("c", &cname), ("m", &metric), ("hreg", ".")])) { "Compare with the other hosts of " (cname) } }
    };
    Ok(Html(page(&f, body).into_string()).into_response())
}

// ---------------------------------------------------------------- compare

pub async fn compare(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(q): Query<PageQuery>,
) -> Result<Response, PageError> {
    let v = viewer_or_return!(app, headers);
    let src = app.src.clone();
    let cname = q.c.clone().unwrap_or_default();
    let cn = cname.clone();
    let (clusters, hosts) = blocking(move || (src.clusters(), src.hosts(&cn, ""))).await?;
    let hreg = q.hreg.clone().unwrap_or_default();
    let metric = q.m.clone().unwrap_or_default();
    let matched: Vec<String> = match (regex::RegexBuilder::new(&hreg).size_limit(1 << 20).build(), &hosts) {
        (Ok(re), Some(hs)) if !hreg.is_empty() => {
            hs.iter().filter(|h| re.is_match(&h.name)).map(|h| h.name.clone()).collect()
        }
        _ => Vec::new(),
    };
    if q.json() {
        return Ok(Json(json!({ "cluster": cname, "metric": metric, "hreg": hreg, "hosts": matched })).into_response());
    }
    let range = q.range();
    let stack = q.stack == Some(1);
    let mut f = frame(&app, &v, "Compare hosts", "/compare");
    f.params = vec![
        ("c", cname.clone()),
        ("m", metric.clone()),
        ("hreg", hreg.clone()),
        ("stack", if stack { "1".into() } else { String::new() }),
    ];
    f.range = Some(&range);
    let rp = range.params();
    let body = html! {
        h1 { "Compare hosts" }
        form method="get" action="/compare" {
            @for (k, val) in &rp { input type="hidden" name=(k) value=(val); }
            "Cluster " select name="c" { @for c in &clusters { option selected[c.name == cname] { (c.name) } } }
            " metric " input type="text" name="m" value=(metric) placeholder="load_one";
            " hosts matching " input type="text" name="hreg" value=(hreg) placeholder="regex";
            " " label { input type="checkbox" name="stack" value="1" checked[stack]; " stacked" }
            " " button type="submit" { "Compare" }
        }
        @if !metric.is_empty() && !matched.is_empty() {
            @let st = if stack { "1" } else { "0" };
            (graph_img(&app, &[("c", &cname), ("m", &metric), ("hreg", &hreg), ("stack", st)], &range, "xlarge", &metric))
            p { (matched.len()) " hosts (at most 32 are drawn): " @for h in &matched { a href=(link("/host", &[("c", &cname), ("h", h)])) { (h) } " " } }
        } @else if !hreg.is_empty() {
            p { "No host of the cluster matches, or no metric was given." }
        }
    };
    Ok(Html(page(&f, body).into_string()).into_response())
}

// ---------------------------------------------------------------- search

pub async fn search(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(q): Query<PageQuery>,
) -> Result<Response, PageError> {
    let v = viewer_or_return!(app, headers);
    let needle = q.q.clone().unwrap_or_default().to_lowercase();
    let src = app.src.clone();
    let n = needle.clone();
    let (clusters, hosts, metrics) = blocking(move || {
        let mut clusters = Vec::new();
        let mut hosts = Vec::new();
        let mut metrics: Vec<(String, String, String)> = Vec::new();
        if n.is_empty() {
            return (clusters, hosts, metrics);
        }
        for c in src.clusters() {
            if c.name.to_lowercase().contains(&n) {
                clusters.push(c.name.clone());
            }
            let hs = src.hosts(&c.name, "").unwrap_or_default();
            for h in &hs {
                if h.name.to_lowercase().contains(&n) && hosts.len() < 200 {
                    hosts.push((c.name.clone(), h.name.clone()));
                }
            }
            // Metric names: from one host of the cluster (agents of a cluster report the
            // same set), so a search stays cheap with thousands of hosts.
            if let Some(h0) = hs.iter().find(|h| h.up).or(hs.first()) {
                if let Some(d) = src.host(Some(&c.name), &h0.name) {
                    for m in d.metrics.into_iter().filter(|m| m.name.to_lowercase().contains(&n)).take(100) {
                        metrics.push((c.name.clone(), h0.name.clone(), m.name));
                    }
                }
            }
        }
        (clusters, hosts, metrics)
    })
    .await?;
    if q.json() {
        return Ok(
            Json(json!({ "q": needle, "clusters": clusters, "hosts": hosts, "metrics": metrics })).into_response()
        );
    }
    let f = frame(&app, &v, "Search", "/search");
    let body = html! {
        h1 { "Search: " (needle) }
        h2 { "Clusters" }
        ul { @for c in &clusters { li { a href=(link("/cluster", &[("c", c)])) { (c) } } } }
        h2 { "Hosts" }
        ul { @for (c, hn) in &hosts { li { a href=(link("/host", &[("c", c), ("h", hn)])) { (hn) } " (" (c) ")" } } }
        h2 { "Metrics" }
        ul { @for (c, _, m) in &metrics { li { a href=(link("/cluster", &[("c", c), ("m", m)])) { (m) } " in " (c) } } }
        @if clusters.is_empty() && hosts.is_empty() && metrics.is_empty() { p { "Nothing matches." } }
    };
    Ok(Html(page(&f, body).into_string()).into_response())
}

// ---------------------------------------------------------------- problems

/// Problems, unhandled first, then by severity and age; a service of a host that is
/// down is listed under its host.
pub fn order_problems(checks: Vec<CheckInfo>) -> Vec<(CheckInfo, Vec<CheckInfo>)> {
    let mut problems: Vec<CheckInfo> = checks.into_iter().filter(|c| c.problem && !c.pending).collect();
    problems.sort_by(|a, b| {
        a.handled
            .cmp(&b.handled)
            .then(b.severity().cmp(&a.severity()))
            .then(a.last_state_change.cmp(&b.last_state_change))
            .then(a.host.cmp(&b.host))
            .then(a.service.cmp(&b.service))
    });
    let down: Vec<(String, String)> =
        problems.iter().filter(|c| c.service.is_empty()).map(|c| (c.cluster.clone(), c.host.clone())).collect();
    let (under, top): (Vec<CheckInfo>, Vec<CheckInfo>) = problems
        .into_iter()
        .partition(|c| !c.service.is_empty() && !c.host_up && down.contains(&(c.cluster.clone(), c.host.clone())));
    top.into_iter()
        .map(|c| {
            let kids = if c.service.is_empty() {
                under.iter().filter(|u| u.cluster == c.cluster && u.host == c.host).cloned().collect()
            } else {
                Vec::new()
            };
            (c, kids)
        })
        .collect()
}

pub async fn problems(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(q): Query<PageQuery>,
) -> Result<Response, PageError> {
    let v = viewer_or_return!(app, headers);
    let src = app.src.clone();
    let checks = blocking(move || src.checks_where(None, None, true)).await?;
    let ordered = order_problems(checks);
    if q.json() {
        let out: Vec<_> = ordered.iter().map(|(c, kids)| json!({ "check": c, "services": kids })).collect();
        return Ok(Json(json!({ "problems": out })).into_response());
    }
    let mut f = frame(&app, &v, "Problems", "/problems");
    f.params = Vec::new();
    let unhandled = ordered.iter().filter(|(c, _)| !c.handled).count();
    let now = chrono::Utc::now().timestamp();
    let body = html! {
        h1 { "Problems" }
        @if let Some(m) = &q.msg { p.msg { (m) } }
        p { (unhandled) " unhandled, " (ordered.len() - unhandled) " handled" }
        table {
            tr { th { "Host" } th { "Service" } th { "State" } th { "Duration" } th { "Attempt" } th { "Output" } @if v.user.is_some() { th { "Actions" } } }
            @for (c, kids) in &ordered {
                tr class=@if c.handled { "handled" } {
                    td { a href=(link("/host", &[("c", &c.cluster), ("h", &c.host)])) { (c.host) } }
                    td { a href=(link("/check", &[("c", &c.cluster), ("h", &c.host), ("s", &c.service)])) { @if c.service.is_empty() { "(host)" } @else { (c.service) } } }
                    td class=(state_class(&c.state)) { (c.state) @if c.acknowledged { " (ack)" } @if c.in_downtime { " (downtime)" } }
                    td { (c.last_state_change.map(|t| h::duration(now - t)).unwrap_or_default()) }
                    td { (c.attempt) "/" (c.max_attempts) }
                    td { (c.output) @if !kids.is_empty() { " · " (kids.len()) " services of this host:" } }
                    @if let Some(csrf) = &v.csrf { td { (crate::actions::quick_forms(c, csrf, "/problems")) } }
                }
                @for k in kids {
                    tr.handled {
                        td {} td { "↳ " a href=(link("/check", &[("c", &k.cluster), ("h", &k.host), ("s", &k.service)])) { (k.service) } }
                        td class=(state_class(&k.state)) { (k.state) }
                        td { (k.last_state_change.map(|t| h::duration(now - t)).unwrap_or_default()) }
                        td { (k.attempt) "/" (k.max_attempts) } td { (k.output) }
                        @if v.user.is_some() { td {} }
                    }
                }
            }
        }
        @if ordered.is_empty() { p { "No problems." } }
    };
    Ok(Html(page(&f, body).into_string()).into_response())
}

// ---------------------------------------------------------------- check detail

pub async fn check(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(q): Query<PageQuery>,
) -> Result<Response, PageError> {
    let v = viewer_or_return!(app, headers);
    let host = q.h.clone().unwrap_or_default();
    let service = q.s.clone().unwrap_or_default();
    let cluster = q.c.clone();
    let src = app.src.clone();
    let (hn, sv, cl) = (host.clone(), service.clone(), cluster.clone());
    let (check, history, downtimes, comments, perf, outbox) = blocking(move || {
        let check = src.checks_where(cl.as_deref(), Some(&hn), false).into_iter().find(|c| c.service == sv);
        let history = src.history(Some(&hn), Some(&sv), 100);
        let downtimes: Vec<_> = src
            .downtimes()
            .into_iter()
            .filter(|d| d.host == hn && (d.service.as_deref().unwrap_or("") == sv || d.service.is_none()))
            .collect();
        let comments: Vec<_> =
            src.comments().into_iter().filter(|c| c.host == hn && c.service.as_deref().unwrap_or("") == sv).collect();
        let perf: Vec<String> = check.as_ref().map(|c| c.perfdata_series.clone()).unwrap_or_default();
        let outbox = src.notifications();
        (check, history, downtimes, comments, perf, outbox)
    })
    .await?;
    let c = check.ok_or_else(|| not_found("check", &format!("{host}/{service}")))?;
    if q.json() {
        let sent = outbox.as_ref().map(|o| messages_about(o, &host, &service));
        return Ok(Json(json!({ "check": c, "history": history, "downtimes": downtimes, "comments": comments, "perfdata_series": perf, "notifications": sent })).into_response());
    }
    let range = q.range();
    let title = if service.is_empty() { format!("Host check of {host}") } else { format!("{service} on {host}") };
    let mut f = frame(&app, &v, &title, "/check");
    f.params = vec![("c", c.cluster.clone()), ("h", host.clone()), ("s", service.clone())];
    f.range = Some(&range);
    f.crumbs = vec![
        (c.cluster.clone(), link("/cluster", &[("c", &c.cluster)])),
        (host.clone(), link("/host", &[("c", &c.cluster), ("h", &host)])),
    ];
    let back = link("/check", &[("c", &c.cluster), ("h", &host), ("s", &service)]);
    let body = html! {
        h1 { (title) }
        @if let Some(m) = &q.msg { p.msg { (m) } }
        table {
            tr { th { "State" } td class=(state_class(if c.pending { "PENDING" } else { &c.state })) { @if c.pending { "PENDING" } @else { (c.state) } " (" (c.state_type) ", attempt " (c.attempt) "/" (c.max_attempts) ")" } }
            tr { th { "Output" } td { pre { (c.output) } @if !c.long_output.is_empty() { pre { (c.long_output) } } } }
            tr { th { "Performance data" } td { (c.perfdata) } }
            tr { th { "Last check" } td { (c.last_check.map(h::time).unwrap_or_default()) } }
            tr { th { "Last state change" } td { (c.last_state_change.map(h::time).unwrap_or_default()) } }
            tr { th { "Acknowledged" } td { @if c.acknowledged { "yes, by " (c.ack_author.clone().unwrap_or_default()) ": " (c.ack_comment.clone().unwrap_or_default()) } @else { "no" } } }
            tr { th { "In downtime" } td { @if c.in_downtime { "yes" } @else { "no" } } }
            tr { th { "Flapping" } td { @if c.flapping { "yes" } @else { "no" } } }
        }
        @if let Some(csrf) = &v.csrf {
            h2 { "Actions" }
            (crate::actions::full_forms(&c, csrf, &back, &downtimes))
        } @else {
            p { a href="/login" { "Sign in" } " to acknowledge, schedule downtime or recheck." }
        }
        @if !perf.is_empty() {
            h2 { "Performance data" }
            div.graphs { @for m in &perf { (graph_img(&app, &[("c", &c.cluster), ("h", &host), ("m", m)], &range, "medium", m)) } }
        }
        h2 { "State history" }
        table {
            tr { th { "Time" } th { "State" } th { "Type" } th { "Attempt" } th { "Output" } }
            @for e in &history { tr { td { (h::time(e.time)) } td class=(state_class(&e.state)) { (e.state) } td { (e.state_type) } td { (e.attempt) } td { (e.output) } } }
        }
        h2 { "Downtimes" }
        table {
            tr { th { "Id" } th { "From" } th { "To" } th { "Author" } th { "Comment" } th { "In effect" } }
            @for d in &downtimes { tr { td { (d.id) } td { (d.start.map(h::time).unwrap_or_default()) } td { (d.end.map(h::time).unwrap_or_default()) } td { (d.author) } td { (d.comment) } td { @if d.in_effect { "yes" } @else { "no" } } } }
        }
        h2 { "Comments" }
        table {
            tr { th { "Time" } th { "Author" } th { "Source" } th { "Text" } }
            @for cm in &comments { tr { td { (h::time(cm.time)) } td { (cm.author) } td { (cm.source) } td { (cm.text) } } }
        }
        @if let Some(o) = &outbox {
            h2 { "Notifications" }
            (messages_table(&messages_about(o, &host, &service)))
        }
    };
    Ok(Html(page(&f, body).into_string()).into_response())
}

/// Outbox messages that name this host (and service): their key or subject does.
fn messages_about(outbox: &serde_json::Value, host: &str, service: &str) -> Vec<serde_json::Value> {
    let names = |m: &serde_json::Value| {
        let k = format!("{} {}", m["key"].as_str().unwrap_or(""), m["subject"].as_str().unwrap_or(""));
        k.contains(host) && (service.is_empty() || k.contains(service))
    };
    outbox["messages"].as_array().map(|a| a.iter().filter(|m| names(m)).take(50).cloned().collect()).unwrap_or_default()
}

fn messages_table(messages: &[serde_json::Value]) -> Markup {
    let s = |m: &serde_json::Value, k: &str| match &m[k] {
        serde_json::Value::String(x) => x.clone(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    };
    html! {
        @if messages.is_empty() { p { "None recorded." } }
        @else {
            table {
                tr { th { "Created" } th { "State" } th { "Channel" } th { "Contact" } th { "Subject" } th { "Tries" } th { "Last error" } }
                @for m in messages {
                    tr {
                        td { (m["created"].as_i64().map(h::time).unwrap_or_default()) }
                        td { (s(m, "state")) } td { (s(m, "channel")) } td { (s(m, "contact")) }
                        td { (s(m, "subject")) } td { (s(m, "tries")) } td { (s(m, "last_error")) }
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------- health

pub async fn health(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(q): Query<PageQuery>,
) -> Result<Response, PageError> {
    let v = viewer_or_return!(app, headers);
    let src = app.src.clone();
    let (doc, outbox) = blocking(move || (src.health(), src.notifications())).await?;
    if q.json() {
        return Ok(Json(json!({ "health": doc, "notifications": outbox })).into_response());
    }
    // Ingest rates: the counters now against those at the previous view.
    let now = std::time::Instant::now();
    let counters = doc.get("counters").cloned().unwrap_or_default();
    let rates: Vec<(String, f64)> = {
        let mut prev = app.last_health.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::new();
        if let Some((t0, old)) = prev.as_ref() {
            let secs = now.duration_since(*t0).as_secs_f64().max(0.001);
            for k in ["samples_accepted", "batches_accepted", "rejected_total"] {
                if let (Some(a), Some(b)) =
                    (old.get(k).and_then(|x| x.as_f64()), counters.get(k).and_then(|x| x.as_f64()))
                {
                    out.push((k.to_owned(), (b - a) / secs));
                }
            }
        }
        *prev = Some((now, counters.clone()));
        out
    };
    let f = frame(&app, &v, "Health", "/health");
    let flat = |v: &serde_json::Value| -> Vec<(String, String)> {
        v.as_object()
            .map(|o| {
                o.iter()
                    .filter(|(_, x)| !x.is_object() && !x.is_array())
                    .map(|(k, x)| (k.clone(), x.to_string()))
                    .collect()
            })
            .unwrap_or_default()
    };
    let body = html! {
        h1 { "Collector health" }
        p { "Version " (doc.get("version").and_then(|x| x.as_str()).unwrap_or("")) " · up " (h::duration(doc.get("uptime_secs").and_then(|x| x.as_f64()).unwrap_or(0.0) as i64)) " · " (doc.get("hosts").map(|x| x.to_string()).unwrap_or_default()) " hosts" }
        h2 { "Ingest rates" }
        @if rates.is_empty() { p { "Rates appear from the second view of this page (the auto-refresh makes it)." } }
        table { @for (k, r) in &rates { tr { th { (k) } td.num { (format!("{r:.1}")) " /s" } } } }
        h2 { "Ingest counters" }
        table { @for (k, x) in flat(&counters) { tr { th { (k) } td.num { (x) } } } }
        h2 { "Rejected frames by reason" }
        table { @for (k, x) in flat(counters.get("rejected").unwrap_or(&serde_json::Value::Null)) { tr { th { (k) } td.num { (x) } } } }
        h2 { "Storage" }
        table { @for (k, x) in flat(doc.get("storage").unwrap_or(&serde_json::Value::Null)) { tr { th { (k) } td.num { (x) } } } }
        h2 { "Checks" }
        table { @for (k, x) in flat(doc.get("checks").unwrap_or(&serde_json::Value::Null)) { tr { th { (k) } td.num { (x) } } } }
        @for (k, x) in doc.as_object().map(|o| o.iter().filter(|(k, x)| x.is_object() && !["counters", "storage", "checks"].contains(&k.as_str())).collect::<Vec<_>>()).unwrap_or_default() {
            h2 { (k) }
            table { @for (a, b) in flat(x) { tr { th { (a) } td.num { (b) } } } }
        }
        @if let Some(o) = &outbox {
            h2 { "Notification outbox" }
            table { @for (k, x) in flat(&o["counts"]) { tr { th { (k) } td.num { (x) } } } }
            @let recent: Vec<serde_json::Value> = o["messages"].as_array().map(|a| a.iter().take(20).cloned().collect()).unwrap_or_default();
            (messages_table(&recent))
        }
    };
    Ok(Html(page(&f, body).into_string()).into_response())
}
