//! Routes against a fake source: every page renders, JSON variants, graph sizes and
//! archive choice, escaping of untrusted names, and the sign-in/CSRF rules.

use super::*;
use crate::source::*;
use axum::body::Body;
use axum::http::Request;
use tower::ServiceExt;

const EVIL: &str = "<script>alert(\"x\")</script>'\"><img src=x onerror=alert(1)>";

#[derive(Default)]
struct Fake {
    hosts: Vec<HostInfo>,
    checks: Vec<CheckInfo>,
    evil: bool,
    actions: Mutex<Vec<Action>>,
    resolutions: Mutex<Vec<u64>>,
    /// Newest row of every series, for the graph cache; `None`: unknown (no caching).
    newest: Mutex<Option<i64>>,
    /// How long a fetch takes, as reading a cold archive from disk does.
    fetch_delay: std::time::Duration,
}

/// Ganglia's archive set: 15 s, 1 min, 10 min; the closest to the resolution.
fn step_for(resolution: u64) -> i64 {
    [15i64, 60, 600].into_iter().min_by_key(|s| (s - resolution as i64).abs()).unwrap()
}

fn host(name: &str, up: bool, v: f64) -> HostInfo {
    HostInfo {
        cluster: "web".into(),
        name: name.into(),
        up,
        silent_secs: 3.0,
        agent_version: "0.1".into(),
        value: Some(v),
        load_one: Some(v),
        cpu_num: Some(2.0),
    }
}

fn check(host: &str, service: &str, state: &str, handled: bool) -> CheckInfo {
    CheckInfo {
        cluster: "web".into(),
        host: host.into(),
        service: service.into(),
        state: state.into(),
        state_type: "HARD".into(),
        attempt: 3,
        max_attempts: 3,
        last_state_change: Some(1_700_000_000),
        output: format!("{state} - output of {service}"),
        problem: state != "OK" && state != "UP",
        host_up: true,
        handled,
        acknowledged: handled,
        ..CheckInfo::default()
    }
}

impl Fake {
    fn new() -> Fake {
        Fake {
            hosts: vec![host("web-1", true, 0.5), host("web-2", true, 3.0), host("db-1", false, 0.1)],
            checks: vec![
                CheckInfo {
                    perfdata_series: vec!["disk_root_used".into()],
                    ..check("web-1", "disk_root", "CRITICAL", false)
                },
                check("web-2", "load", "WARNING", true),
                check("web-1", "", "UP", false),
            ],
            ..Fake::default()
        }
    }

    fn evil() -> Fake {
        let mut h = host(EVIL, true, 1.0);
        h.agent_version = EVIL.into();
        let mut c = check(EVIL, EVIL, "CRITICAL", false);
        c.output = EVIL.into();
        c.long_output = EVIL.into();
        c.perfdata = EVIL.into();
        Fake { hosts: vec![h], checks: vec![c], evil: true, ..Fake::default() }
    }
}

impl DashboardSource for Fake {
    fn clusters(&self) -> Vec<ClusterInfo> {
        let name = if self.evil { EVIL } else { "web" };
        vec![ClusterInfo { name: name.into(), hosts: self.hosts.len(), hosts_up: 2, hosts_down: 1 }]
    }
    fn hosts(&self, cluster: &str, _metric: &str) -> Option<Vec<HostInfo>> {
        (cluster == "web" || cluster == EVIL).then(|| self.hosts.clone())
    }
    fn host(&self, _cluster: Option<&str>, name: &str) -> Option<HostDetail> {
        let h = self.hosts.iter().find(|h| h.name == name)?.clone();
        let metric = |n: &str, g: &str| MetricInfo {
            name: n.into(),
            value: Some(1.5),
            unit: if self.evil { EVIL.into() } else { "%".into() },
            group: g.into(),
            kind: "gauge".into(),
            description: if self.evil { EVIL.into() } else { "a metric".into() },
            time_ms: 1,
        };
        let mut metrics = vec![metric("load_one", "load"), metric("cpu_user", "cpu")];
        let mut facts = vec![("os".to_owned(), "Linux".to_owned())];
        if self.evil {
            metrics.push(metric(EVIL, EVIL));
            facts.push((format!("tag {EVIL}"), EVIL.to_owned()));
        }
        Some(HostDetail { host: h, facts, metrics, first_seen_ms: 0, last_seen_ms: 0, interval_secs: 15 })
    }
    fn fetch(
        &self,
        _series: &SeriesRef<'_>,
        cf: Cf,
        start: i64,
        end: i64,
        resolution: u64,
    ) -> Result<Option<Fetched>, String> {
        self.resolutions.lock().unwrap().push(resolution);
        std::thread::sleep(self.fetch_delay);
        if cf == Cf::Min {
            return Err("the RRD does not contain an RRA matching the chosen CF".into());
        }
        let step = step_for(resolution);
        let s0 = start - start % step;
        let n = ((end - s0) / step) as usize;
        let values = (0..n).map(|i| if i % 50 == 7 { None } else { Some((i as f64 / 20.0).sin() + 1.0) }).collect();
        Ok(Some(Fetched { start: s0, step, values }))
    }
    fn newest_row(
        &self,
        _series: &SeriesRef<'_>,
        cf: Cf,
        _start: i64,
        _end: i64,
        resolution: u64,
    ) -> Option<(i64, i64)> {
        let newest = (*self.newest.lock().unwrap())?;
        (cf != Cf::Min).then_some((step_for(resolution), newest))
    }
    fn checks(&self) -> Vec<CheckInfo> {
        self.checks.clone()
    }
    fn history(&self, host: Option<&str>, service: Option<&str>, _limit: usize) -> Vec<HistoryEntry> {
        vec![HistoryEntry {
            time: 1_700_000_000,
            host: host.unwrap_or("").into(),
            service: service.unwrap_or("").into(),
            state: "CRITICAL".into(),
            state_type: "HARD".into(),
            attempt: 3,
            output: if self.evil { EVIL.into() } else { "went critical".into() },
        }]
    }
    fn downtimes(&self) -> Vec<DowntimeInfo> {
        Vec::new()
    }
    fn comments(&self) -> Vec<CommentInfo> {
        if self.evil {
            vec![CommentInfo {
                id: 1,
                host: EVIL.into(),
                service: Some(EVIL.into()),
                time: 1,
                author: EVIL.into(),
                text: EVIL.into(),
                source: "user".into(),
            }]
        } else {
            Vec::new()
        }
    }
    fn health(&self) -> serde_json::Value {
        serde_json::json!({"version": "0.1", "uptime_secs": 5.0, "hosts": 3,
            "counters": {"samples_accepted": 100, "rejected_total": 2, "rejected": {"bad_tag": 2}},
            "storage": {"journal_bytes": 4096, "quarantined": 0, "unflushed_bytes": 10}})
    }
    fn notifications(&self) -> Option<serde_json::Value> {
        let (host, subject) = if self.evil { (EVIL, EVIL) } else { ("web-1", "PROBLEM web-1/disk_root is CRITICAL") };
        Some(
            serde_json::json!({"counts": {"sent": 1}, "messages": [{"id": 1, "key": format!("{host} disk_root {host}"),
            "subject": subject, "state": "sent", "channel": "email", "contact": "ops", "created": 1_700_000_000, "tries": 1}]}),
        )
    }
    fn act(&self, action: Action) -> BoxFuture<Result<String, String>> {
        self.actions.lock().unwrap().push(action);
        Box::pin(async { Ok("Done.".to_owned()) })
    }
}

fn config() -> WebConfig {
    WebConfig {
        admins: vec![Admin { user: "ops".into(), password_hash: auth::hash_password("pw-for-tests").unwrap() }],
        ..WebConfig::default()
    }
}

async fn send(app: &Router, req: Request<Body>) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = axum::body::to_bytes(resp.into_body(), 64 << 20).await.unwrap().to_vec();
    (status, headers, body)
}

async fn get(app: &Router, path: &str) -> (StatusCode, String) {
    let (s, _, b) = send(app, Request::get(path).body(Body::empty()).unwrap()).await;
    (s, String::from_utf8_lossy(&b).into_owned())
}

const PAGES: [&str; 10] = [
    "/",
    "/cluster?c=web",
    "/cluster?c=web&m=load_one&sort=desc&f=web",
    "/host?c=web&h=web-1&r=day",
    "/metric?c=web&h=web-1&m=load_one&r=custom&cs=1700000000&ce=1700003600",
    "/compare?c=web&m=load_one&hreg=web",
    "/search?q=web",
    "/problems",
    "/check?c=web&h=web-1&s=disk_root",
    "/health",
];

#[tokio::test]
async fn every_page_renders_and_has_json() {
    let app = router(Arc::new(Fake::new()), config());
    for p in PAGES {
        let (s, body) = get(&app, p).await;
        assert_eq!(s, StatusCode::OK, "{p}: {body}");
        assert!(body.starts_with("<!DOCTYPE html>"), "{p}");
        let sep = if p.contains('?') { '&' } else { '?' };
        let (s, json) = get(&app, &format!("{p}{sep}format=json")).await;
        assert_eq!(s, StatusCode::OK, "{p}");
        serde_json::from_str::<serde_json::Value>(&json).unwrap_or_else(|e| panic!("{p}: {e}: {json}"));
    }
    let (_, body) = get(&app, "/host?c=web&h=web-1").await;
    assert!(body.contains("plugin perfdata") && body.contains("m=disk_root_used"), "perfdata graphs on the host page");
    let (_, body) = get(&app, "/check?c=web&h=web-1&s=disk_root").await;
    assert!(body.contains("m=disk_root_used"), "perfdata graph on the check page");
    let (_, body) = get(&app, "/health").await;
    assert!(body.contains("Notification outbox") && body.contains("PROBLEM web-1/disk_root is CRITICAL"));
    let (_, body) = get(&app, "/check?c=web&h=web-1&s=disk_root").await;
    assert!(body.contains("PROBLEM web-1/disk_root is CRITICAL"), "notifications sent for this check");
    let (_, body) = get(&app, "/problems").await;
    // Unhandled first: the critical disk before the acknowledged load warning.
    let (a, b) = (body.find("disk_root").unwrap(), body.find(">load<").unwrap());
    assert!(a < b, "unhandled problems come first");
    let (_, body) = get(&app, "/cluster?c=web&sort=desc").await;
    let (a, b) = (body.find("data-host=\"web-2\"").unwrap(), body.find("data-host=\"web-1\"").unwrap());
    assert!(a < b, "sorted by value, descending");
    assert!(body.contains("tile s3"), "web-1 has a critical check: {body}");
    let (_, body) = get(&app, "/cluster?c=web&f=%5Edb").await;
    assert!(body.contains("data-host=\"db-1\"") && !body.contains("data-host=\"web-1\""));
    let (_, headers, _) = send(&app, Request::get("/problems").body(Body::empty()).unwrap()).await;
    assert_eq!(headers[header::X_FRAME_OPTIONS], "DENY");
    assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    let (s, _) = get(&app, "/host?h=nope").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = get(&app, "/cluster?c=web&f=(").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn graph_png_has_the_size_and_reads_one_point_per_pixel() {
    let fake = Arc::new(Fake::new());
    let app = router(fake.clone(), config());
    for (q, w, h) in [
        ("c=web&h=web-1&m=load_one&r=day&z=large", 600, 240),
        ("c=web&h=web-1&m=load_one&r=week&w=500&ht=200", 500, 200),
        ("c=web&g=cpu&r=hour&z=small", 260, 110),
        ("c=web&m=load_one&hreg=web&r=4hr", 400, 170),
        ("c=web&h=web-1&m=load_one&band=1&z=xlarge", 900, 340),
    ] {
        let (s, headers, body) = send(&app, Request::get(format!("/graph.png?{q}")).body(Body::empty()).unwrap()).await;
        assert_eq!(s, StatusCode::OK, "{q}: {}", String::from_utf8_lossy(&body));
        assert_eq!(headers[header::CONTENT_TYPE], "image/png");
        let info = png::Decoder::new(&body[..]).read_info().unwrap().info().clone();
        assert_eq!((info.width, info.height), (w, h), "{q}");
    }
    // A week over ~500 px asks for ~1200 s per row: storage picks its 10-minute archive.
    assert!(fake.resolutions.lock().unwrap().contains(&(604_800 / 430)));
    let (s, _) = get(&app, "/graph.png?c=web&h=web-1&m=load_one&w=99999").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = get(&app, "/graph.png?c=web&h=web-1&m=load_one&r=decade").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = get(&app, "/graph.png?m=load_one").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, svg) = get(&app, "/graph.svg?c=web&h=web-1&m=load_one&r=hour").await;
    assert_eq!(s, StatusCode::OK);
    assert!(svg.contains("<svg") && svg.contains("load_one on web-1"));
}

#[tokio::test]
async fn consolidated_graph_never_draws_more_points_than_pixels() {
    let fake = Fake::new();
    let q = charts::GraphQuery {
        c: Some("web".into()),
        h: Some("web-1".into()),
        m: Some("load_one".into()),
        r: Some("day".into()),
        w: Some(300),
        ..Default::default()
    };
    let spec = charts::build(&fake, &q, 1_700_000_000).unwrap();
    assert!(spec.lines[0].points.len() <= 300, "{}", spec.lines[0].points.len());
    assert!(spec.lines[0].points.len() >= 100);
}

#[tokio::test]
async fn untrusted_names_are_inert_in_pages_and_svg() {
    let app = router(Arc::new(Fake::evil()), config());
    let enc = serde_urlencoded::to_string([("h", EVIL), ("c", EVIL), ("s", EVIL), ("m", EVIL)]).unwrap();
    let pages = [
        "/".to_owned(),
        format!("/cluster?{enc}"),
        format!("/host?{enc}"),
        format!("/metric?{enc}"),
        format!("/compare?{enc}&hreg=."),
        "/search?q=%3Cscript".to_owned(),
        "/problems".to_owned(),
        "/health".to_owned(),
        format!("/check?{enc}"),
    ];
    for p in &pages {
        let (s, body) = get(&app, p).await;
        assert!(s == StatusCode::OK || s == StatusCode::NOT_FOUND, "{p}: {s}");
        assert!(!body.contains("<script>alert"), "{p}: raw script tag in {body}");
        assert!(!body.contains("<img src=x"), "{p}: raw img tag");
        assert!(!body.contains("\"><img src=x"), "{p}: attribute broken out");
        if s == StatusCode::OK && p != "/" && p != "/health" {
            assert!(body.contains("&lt;script&gt;"), "{p}: the name is shown, escaped");
        }
    }
    for q in [format!("/graph.svg?{enc}"), format!("/graph.svg?c={}&g=cpu", "web")] {
        let (_, svg) = get(&app, &q).await;
        assert!(!svg.contains("<script"), "{q}: {svg}");
        assert!(!svg.contains("<img"), "{q}");
    }
    // The error pages echo names escaped as well.
    let (_, body) = get(&app, "/host?h=%3Cscript%3Ex").await;
    assert!(!body.contains("<script>x"));
}

fn form(path: &str, body: &str, cookie: Option<&str>) -> Request<Body> {
    let mut r = Request::post(path).header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    if let Some(c) = cookie {
        r = r.header(header::COOKIE, c);
    }
    r.body(Body::from(body.to_owned())).unwrap()
}

/// Signs in through the form; returns the session cookie and the CSRF token of pages.
async fn sign_in(app: &Router) -> (String, String) {
    let (s, headers, body) = send(app, Request::get("/login").body(Body::empty()).unwrap()).await;
    assert_eq!(s, StatusCode::OK);
    let set = headers[header::SET_COOKIE].to_str().unwrap();
    let login_cookie = set.split(';').next().unwrap().to_owned();
    let page = String::from_utf8(body).unwrap();
    let token = page.split("name=\"csrf\" value=\"").nth(1).unwrap().split('"').next().unwrap().to_owned();
    // Without the form's token: refused.
    let (s, _, _) = send(app, form("/login", "user=ops&password=pw-for-tests", Some(&login_cookie))).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _, _) =
        send(app, form("/login", &format!("csrf={token}&user=ops&password=wrong"), Some(&login_cookie))).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, headers, _) =
        send(app, form("/login", &format!("csrf={token}&user=ops&password=pw-for-tests"), Some(&login_cookie))).await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    let set = headers[header::SET_COOKIE].to_str().unwrap().to_owned();
    assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict"), "{set}");
    let session = set.split(';').next().unwrap().to_owned();
    let (_, _, body) =
        send(app, Request::get("/problems").header(header::COOKIE, &session).body(Body::empty()).unwrap()).await;
    let page = String::from_utf8(body).unwrap();
    assert!(page.contains("Acknowledge"), "signed-in admins see the action forms");
    let csrf = page.split("name=\"csrf\" value=\"").nth(1).unwrap().split('"').next().unwrap().to_owned();
    (session, csrf)
}

#[tokio::test]
async fn actions_need_a_session_and_the_csrf_token() {
    let fake = Arc::new(Fake::new());
    let app = router(fake.clone(), config());
    let ack = "op=ack&c=web&h=web-1&s=disk_root&comment=looking&back=%2Fproblems";
    // Anonymous visitors see no forms, and a forged POST is refused.
    let (_, body) = get(&app, "/problems").await;
    assert!(!body.contains("name=\"op\""));
    let (s, _, _) = send(&app, form("/action", &format!("csrf=whatever&{ack}"), None)).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (session, csrf) = sign_in(&app).await;
    let (s, _, _) = send(&app, form("/action", ack, Some(&session))).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "no CSRF token");
    let (s, _, _) = send(&app, form("/action", &format!("csrf=0000{}&{ack}", &csrf[4..]), Some(&session))).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "wrong CSRF token");
    assert!(fake.actions.lock().unwrap().is_empty(), "nothing was done");
    let (s, headers, _) = send(&app, form("/action", &format!("csrf={csrf}&{ack}"), Some(&session))).await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert!(headers[header::LOCATION].to_str().unwrap().starts_with("/problems?msg="));
    let done = fake.actions.lock().unwrap().clone();
    assert!(
        matches!(&done[..], [Action::Acknowledge { host, service: Some(s), author, .. }] if host == "web-1" && s == "disk_root" && author == "ops"),
        "{done:?}"
    );
    for op in [
        "op=recheck&h=web-1",
        "op=downtime&h=web-1&s=disk_root&minutes=30&comment=x",
        "op=undowntime&id=4",
        "op=unack&h=web-1",
    ] {
        let (s, _, _) = send(&app, form("/action", &format!("csrf={csrf}&{op}"), Some(&session))).await;
        assert_eq!(s, StatusCode::SEE_OTHER, "{op}");
    }
    assert_eq!(fake.actions.lock().unwrap().len(), 5);
    // Sign-out needs the token too, and ends the session.
    let (s, _, _) = send(&app, form("/logout", "", Some(&session))).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _, _) = send(&app, form("/logout", &format!("csrf={csrf}"), Some(&session))).await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    let (s, _, _) = send(&app, form("/action", &format!("csrf={csrf}&{ack}"), Some(&session))).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn closed_dashboard_sends_visitors_to_sign_in() {
    let app = router(Arc::new(Fake::new()), WebConfig { public_read: false, ..config() });
    let (s, h, _) = send(&app, Request::get("/problems").body(Body::empty()).unwrap()).await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert_eq!(h[header::LOCATION], "/login");
    let (s, _, _) = send(&app, Request::get("/graph.png?c=web&h=web-1&m=load_one").body(Body::empty()).unwrap()).await;
    assert_eq!(s, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn cluster_page_of_a_thousand_hosts_stays_light() {
    let mut fake = Fake::new();
    fake.hosts = (0..1000).map(|i| host(&format!("sim-{i:05}"), true, f64::from(i))).collect();
    let app = router(Arc::new(fake), config());
    let (s, body) = get(&app, "/cluster?c=web&r=day").await;
    assert_eq!(s, StatusCode::OK);
    assert!(body.len() < 300 * 1024, "{} bytes", body.len());
    assert_eq!(body.matches("class=\"tile s").count(), 1000);
}

fn cached_app(budget: usize) -> (Arc<Fake>, Arc<cache::GraphCache>, Router) {
    let fake = Arc::new(Fake { newest: Mutex::new(Some(1_700_086_400)), ..Fake::new() });
    let graphs = Arc::new(cache::GraphCache::new(budget));
    (fake.clone(), graphs.clone(), router_with_cache(fake, config(), graphs))
}

/// A day of 600 px at a fixed time, so the test does not depend on the clock.
const DAY: &str = "/graph.png?c=web&h=web-1&m=load_one&z=large&r=custom&cs=1700000000&ce=1700086400";

#[tokio::test]
async fn graph_cache_keeps_a_graph_until_a_new_row_lands() {
    let (fake, graphs, app) = cached_app(1 << 20);
    let fetches = || fake.resolutions.lock().unwrap().len();
    let (s, h1, b1) = send(&app, Request::get(DAY).body(Body::empty()).unwrap()).await;
    assert_eq!(s, StatusCode::OK);
    let (_, h2, b2) = send(&app, Request::get(DAY).body(Body::empty()).unwrap()).await;
    assert_eq!((b1 == b2, fetches()), (true, 1), "the second request is served without reading rows");
    assert_eq!(h1[header::ETAG], h2[header::ETAG]);
    let st = graphs.stats();
    assert_eq!((st.hits, st.misses, st.entries), (1, 1, 1));

    // The browser's revalidation: not modified while nothing changed.
    let etag = h1[header::ETAG].clone();
    let (s, _, body) =
        send(&app, Request::get(DAY).header(header::IF_NONE_MATCH, etag.clone()).body(Body::empty()).unwrap()).await;
    assert_eq!((s, body.len()), (StatusCode::NOT_MODIFIED, 0));

    // A new row in the archive the graph reads: drawn again, with a new ETag.
    *fake.newest.lock().unwrap() = Some(1_700_086_415);
    let (s, h3, _) =
        send(&app, Request::get(DAY).header(header::IF_NONE_MATCH, etag.clone()).body(Body::empty()).unwrap()).await;
    assert_eq!((s, fetches()), (StatusCode::OK, 2));
    assert_ne!(h3[header::ETAG], etag);
    assert_eq!((graphs.stats().misses, graphs.stats().entries), (2, 1), "replaced, not added");
}

#[tokio::test]
async fn graph_cache_misses_on_other_parameters_and_hits_on_equivalent_ones() {
    let (fake, graphs, app) = cached_app(1 << 20);
    let fetches = || fake.resolutions.lock().unwrap().len();
    get(&app, DAY).await;
    for (other, n) in [
        (DAY.replace("m=load_one", "m=cpu_user"), 2),
        (DAY.replace("h=web-1", "h=web-2"), 3),
        (DAY.replace("z=large", "z=small"), 4),
        (format!("{DAY}&legend=0"), 5),
        (format!("{DAY}&title=x"), 6),
        (DAY.replace("graph.png", "graph.svg"), 7),
        (DAY.replace("ce=1700086400", "ce=1700090000"), 8),
        // The same graph spelt differently: kept.
        (DAY.replace("z=large", "w=600&ht=240"), 8),
        (format!("{DAY}&cf=average&legend=1"), 8),
    ] {
        let (s, _) = get(&app, &other).await;
        assert_eq!((s, fetches()), (StatusCode::OK, n), "{other}");
    }
    assert_eq!(graphs.stats().hits, 2);
    // A source that cannot tell its newest row gets no caching.
    *fake.newest.lock().unwrap() = None;
    get(&app, DAY).await;
    get(&app, DAY).await;
    assert_eq!(fetches(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn viewers_asking_for_a_graph_at_once_get_one_drawing() {
    // A wall of dashboards right after a row landed: every viewer misses at once.
    let fake = Arc::new(Fake {
        newest: Mutex::new(Some(1_700_086_400)),
        fetch_delay: std::time::Duration::from_millis(300),
        ..Fake::new()
    });
    let graphs = Arc::new(cache::GraphCache::new(1 << 20));
    let app = router_with_cache(fake.clone(), config(), graphs.clone());
    let viewers: Vec<_> = (0..8)
        .map(|_| {
            let app = app.clone();
            tokio::spawn(async move { send(&app, Request::get(DAY).body(Body::empty()).unwrap()).await })
        })
        .collect();
    let mut answers = Vec::new();
    for v in viewers {
        answers.push(v.await.unwrap());
    }
    assert_eq!(fake.resolutions.lock().unwrap().len(), 1, "drawn once for eight viewers");
    for (s, h, b) in &answers {
        assert_eq!(*s, StatusCode::OK);
        assert_eq!((&h[header::ETAG], b), (&answers[0].1[header::ETAG], &answers[0].2));
    }
    let st = graphs.stats();
    // A viewer that came after the drawing ended is a plain hit.
    assert_eq!((st.misses, st.coalesced + st.hits), (1, 7), "{st:?}");
    assert!(st.coalesced > 0, "{st:?}");
}

#[tokio::test]
async fn graph_cache_stays_within_its_budget() {
    // Room for a few one-day graphs (about 40 KB each here).
    let (_, graphs, app) = cached_app(400_000);
    for i in 0..30 {
        let (s, _) = get(&app, &format!("{DAY}&title=graph-{i}")).await;
        assert_eq!(s, StatusCode::OK);
        assert!(graphs.stats().bytes <= 400_000, "{:?}", graphs.stats());
    }
    let st = graphs.stats();
    assert!(st.evicted > 0 && st.entries < 30 && st.entries > 1, "{st:?}");
    // The most recent one is kept, the oldest ones went first.
    get(&app, &format!("{DAY}&title=graph-29")).await;
    get(&app, &format!("{DAY}&title=graph-0")).await;
    let after = graphs.stats();
    assert_eq!((after.hits, after.misses), (st.hits + 1, st.misses + 1));
    // A budget of 0 is off: nothing kept, nothing counted.
    let (_, off, app) = cached_app(0);
    get(&app, DAY).await;
    get(&app, DAY).await;
    assert_eq!(off.stats(), cache::CacheStats { capacity_bytes: 0, ..cache::CacheStats::default() });
}
