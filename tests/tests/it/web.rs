//! The dashboard in a real browser: `ganglion demo --simulate` with a few simulated hosts,
//! every page loaded in headless Chromium with its key content and no console error,
//! screenshots under target/test-output/web, signing in and acknowledging a problem
//! through the form, and actions refused without a session or without the CSRF token.

use std::process::Command;
use std::time::Duration;

use ganglion_tests::browser::Browser;
use ganglion_tests::{bin, free_port, wait_for, workspace_root, Proc};
use serde_json::Value;

const PASSWORD: &str = "demo-pass-for-tests";

struct Demo {
    proc: Proc,
    web: String,
    _dir: tempfile::TempDir,
}

impl Demo {
    fn start(hosts: usize) -> Demo {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let web = format!("127.0.0.1:{}", free_port());
        let mut cmd = Command::new(bin("ganglion"));
        cmd.args([
            "--log",
            "info",
            "demo",
            "--simulate",
            &hosts.to_string(),
            "--interval-secs",
            "2",
            "--refresh-secs",
            "2",
        ])
        .arg("--data")
        .arg(dir.path().join("data"))
        .args(["--ingest", &format!("127.0.0.1:{}", free_port())])
        .args(["--web", &web])
        .args(["--nsca", &format!("127.0.0.1:{}", free_port())])
        .args(["--admin-password", PASSWORD]);
        let proc = Proc::spawn("demo", cmd, dir.path().join("demo.log"));
        let d = Demo { proc, web, _dir: dir };
        let url = d.url("/api/v1/health");
        wait_for(Duration::from_secs(30), "the demo's API", &[&d.proc], || ureq::get(&url).call().ok());
        d
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.web)
    }

    fn json(&self, path: &str) -> Option<Value> {
        ureq::get(&self.url(path)).call().ok()?.into_json().ok()
    }
}

fn out_dir() -> std::path::PathBuf {
    let d = workspace_root().join("target/test-output/web");
    std::fs::create_dir_all(&d).expect("creating target/test-output/web");
    d
}

#[test]
fn dashboard_pages_in_chromium_and_ack_through_the_form() {
    let demo = Demo::start(6);
    // The filling disk of batch-002 is critical from its first evaluation.
    wait_for(Duration::from_secs(60), "the simulated disk problem", &[&demo.proc], || {
        let p = demo.json("/problems?format=json")?;
        p["problems"]
            .as_array()?
            .iter()
            .any(|x| x["check"]["host"] == "batch-002" && x["check"]["service"] == "part_max_used")
            .then_some(())
    });
    let out = out_dir();
    let mut b = Browser::start(&out);
    let pages: [(&str, &str, &[&str]); 10] = [
        ("grid", "/", &["Grid", "web", "db", "batch", "hosts"]),
        ("cluster", "/cluster?c=web&r=day", &["Cluster web", "web-000", "web-003", "per host"]),
        ("cluster-sorted", "/cluster?c=db&m=cpu_steal&sort=desc", &["db-001", "cpu_steal"]),
        ("host", "/host?c=db&h=db-001&r=day", &["Host db-001", "Facts", "Checks", "cpu_steal", "noisyneighbour"]),
        ("metric", "/metric?c=batch&h=batch-002&m=part_max_used&r=day", &["part_max_used on batch-002", "Now"]),
        ("compare", "/compare?c=web&m=load_one&hreg=web", &["Compare hosts", "hosts (at most 32 are drawn)"]),
        ("search", "/search?q=db-00", &["Search: db-00", "db-001"]),
        ("problems", "/problems", &["Problems", "batch-002", "part_max_used", "unhandled"]),
        (
            "check",
            "/check?c=batch&h=batch-002&s=part_max_used",
            &["part_max_used on batch-002", "State history", "part_max_used = "],
        ),
        ("health", "/health", &["Collector health", "Rejected frames by reason", "Storage"]),
    ];
    for (name, path, wanted) in pages {
        b.goto(&demo.url(path));
        let text = b.text();
        for w in wanted {
            assert!(text.contains(w), "{path}: {w:?} not in the page:\n{text}");
        }
        // Every graph on screen was drawn (a broken image has no natural width).
        let broken = b.eval(
            "[...document.images].filter(i => i.getBoundingClientRect().top < innerHeight && i.complete && i.naturalWidth === 0).map(i => i.src)",
        );
        assert_eq!(broken, serde_json::json!([]), "{path}: images that did not load");
        b.screenshot(&out.join(format!("{name}.png")));
    }
    // The pages' graphs went through the collector's graph cache, which counts them.
    let health = demo.json("/api/v1/health").expect("health JSON");
    let cache = &health["web"]["graph_cache"];
    let count = |k: &str| cache[k].as_u64().unwrap_or_else(|| panic!("web.graph_cache.{k} in {cache}"));
    assert!(count("misses") > 0 && count("entries") > 0, "{cache}");
    count("hits");
    count("coalesced");
    // The page refreshes itself in place and keeps its scroll position.
    b.goto(&demo.url("/host?c=db&h=db-001&r=day"));
    b.eval("document.querySelector('main h1').dataset.before = '1'; window.scrollTo(0, 400); window.scrollY");
    let refreshed = b.eval(
        "new Promise(r => { const t = Date.now(); (function w() { \
           const h = document.querySelector('main h1'); \
           if ((h && !h.dataset.before) || Date.now() - t > 15000) r([!h.dataset.before, window.scrollY]); \
           else setTimeout(w, 100); })(); })",
    );
    assert_eq!(refreshed, serde_json::json!([true, 400]), "refreshed in place at the same scroll position");
    assert!(b.errors.is_empty(), "console errors:\n{}", b.errors.join("\n"));

    // An action without a session is refused, and nothing changes.
    let form = [("op", "ack"), ("c", "batch"), ("h", "batch-002"), ("s", "part_max_used"), ("comment", "forged")];
    let refused = ureq::post(&demo.url("/action")).send_form(&form);
    assert!(matches!(refused, Err(ureq::Error::Status(403, _))), "{refused:?}");

    // Sign in through the form, then acknowledge through the check page's form.
    b.goto(&demo.url("/login"));
    b.submit(&format!(
        "document.querySelector('input[name=user]').value='admin';\
         document.querySelector('input[name=password]').value='{PASSWORD}';\
         document.getElementById('login').submit();"
    ));
    assert!(b.text().contains("admin: admin"), "signed in:\n{}", b.text());
    let session = b.cookies().into_iter().find(|(n, _)| n == "ganglion_session").expect("the session cookie").1;
    // With the session but without the CSRF token: refused too.
    let refused =
        ureq::post(&demo.url("/action")).set("Cookie", &format!("ganglion_session={session}")).send_form(&form);
    assert!(matches!(refused, Err(ureq::Error::Status(403, _))), "{refused:?}");
    let still = demo.json("/check?c=batch&h=batch-002&s=part_max_used&format=json").expect("check JSON");
    assert_eq!(still["check"]["acknowledged"], false);

    b.goto(&demo.url("/check?c=batch&h=batch-002&s=part_max_used"));
    b.screenshot(&out.join("check-signed-in.png"));
    b.submit(
        "const f=document.getElementById('ack');\
         f.querySelector('input[name=comment]').value='disk cleanup <b>scheduled</b>';\
         f.submit();",
    );
    let text = b.text();
    assert!(text.contains("Acknowledged."), "{text}");
    assert!(text.contains("disk cleanup <b>scheduled</b>"), "the comment is shown as text: {text}");
    b.screenshot(&out.join("check-acknowledged.png"));
    let after = demo.json("/check?c=batch&h=batch-002&s=part_max_used&format=json").expect("check JSON");
    assert_eq!(after["check"]["acknowledged"], true, "{after}");
    assert_eq!(after["check"]["ack_author"], "admin");
    // The problems page now lists it as handled, after the unhandled ones.
    b.goto(&demo.url("/problems"));
    b.screenshot(&out.join("problems-after-ack.png"));
    assert!(b.errors.is_empty(), "console errors:\n{}", b.errors.join("\n"));
}

/// The README's first command: `ganglion demo` on its defaults, which keep the data in
/// `ganglion-demo` under the current directory. The demo's own agent must start and
/// report (its send socket needs an absolute path, which a relative default once broke).
#[test]
fn demo_on_its_default_data_directory_runs_its_agent() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let web = format!("127.0.0.1:{}", free_port());
    let mut cmd = Command::new(bin("ganglion"));
    cmd.current_dir(dir.path())
        .args(["--log", "info", "demo", "--interval-secs", "1"])
        .args(["--ingest", &format!("127.0.0.1:{}", free_port())])
        .args(["--web", &web])
        .args(["--nsca", &format!("127.0.0.1:{}", free_port())]);
    let proc = Proc::spawn("demo", cmd, dir.path().join("demo.log"));
    let url = format!("http://{web}/api/v1/clusters");
    wait_for(Duration::from_secs(30), "the demo's own agent reporting", &[&proc], || {
        let v: Value = ureq::get(&url).call().ok()?.into_json().ok()?;
        let demo = v.as_array()?.iter().find(|c| c["name"] == "demo")?;
        (demo["hosts_up"].as_u64()? >= 1).then_some(())
    });
    assert!(dir.path().join("ganglion-demo").is_dir());
}
