//! Headless Chromium driven over the DevTools protocol, for end-to-end tests of the
//! dashboard: navigate, run script in the page, take screenshots, read cookies, and
//! collect every console error, uncaught exception and failed resource load.
//!
//! Chromium (Debian `chromium`) runs in its own process group with a private profile
//! and is killed with the [`Browser`]. The protocol client is a plain WebSocket
//! (`tungstenite`) exchanging JSON messages: a command carries an `id` and its answer
//! the same `id`; everything else is an event.

use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

use crate::{free_port, require, wait_for, Proc};

/// A headless Chromium with one page.
pub struct Browser {
    ws: WebSocket<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    /// Console errors, exceptions and failed loads seen so far, with the page's URL.
    pub errors: Vec<String>,
    loaded: bool,
    url: String,
    // Last, so the socket closes before the process is killed.
    proc: Proc,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts Chromium; fails with the install hint when it is missing.
    pub fn start(log_dir: &Path) -> Browser {
        let chromium = require("chromium", "chromium");
        let port = free_port();
        let profile = tempfile::tempdir().expect("a profile directory");
        let mut cmd = Command::new(chromium);
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--hide-scrollbars",
            "--window-size=1300,1000",
            &format!("--remote-debugging-port={port}"),
            "--remote-allow-origins=*",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("about:blank")
        // Chromium keeps its singleton socket in a directory under TMPDIR, which it
        // removes only when it exits by itself; it is killed, so that directory goes
        // in the profile and is removed with it.
        .env("TMPDIR", profile.path());
        let proc = Proc::spawn_group("chromium", cmd, log_dir.join("chromium.log"));
        let ws_url: String = wait_for(Duration::from_secs(30), "Chromium's DevTools endpoint", &[&proc], || {
            let list: Value = ureq::get(&format!("http://127.0.0.1:{port}/json/list")).call().ok()?.into_json().ok()?;
            list.as_array()?
                .iter()
                .find(|t| t["type"] == "page")
                .and_then(|t| t["webSocketDebuggerUrl"].as_str().map(str::to_owned))
        });
        let (ws, _) = tungstenite::connect(&ws_url).unwrap_or_else(|e| panic!("connecting to {ws_url}: {e}"));
        if let MaybeTlsStream::Plain(s) = ws.get_ref() {
            s.set_read_timeout(Some(Duration::from_secs(30))).expect("setting a read timeout");
        }
        let mut b =
            Browser { ws, next_id: 1, errors: Vec::new(), loaded: false, url: String::new(), proc, _profile: profile };
        for domain in ["Page.enable", "Runtime.enable", "Log.enable", "Network.enable"] {
            b.call(domain, json!({}));
        }
        b
    }

    fn read(&mut self) -> Value {
        loop {
            let msg = self.ws.read().unwrap_or_else(|e| panic!("reading from Chromium: {e}\n{}", self.proc.tail(30)));
            let Message::Text(text) = msg else { continue };
            let v: Value = serde_json::from_str(text.as_str()).expect("DevTools messages are JSON");
            self.note(&v);
            return v;
        }
    }

    /// Records the events that make a page fail the test.
    fn note(&mut self, v: &Value) {
        let p = &v["params"];
        match v["method"].as_str() {
            Some("Runtime.exceptionThrown") => {
                let d = &p["exceptionDetails"];
                self.errors.push(format!("{}: exception: {} {}", self.url, d["text"], d["exception"]["description"]));
            }
            Some("Runtime.consoleAPICalled") if p["type"] == "error" || p["type"] == "assert" => {
                self.errors.push(format!("{}: console.{}: {}", self.url, p["type"], p["args"]));
            }
            Some("Log.entryAdded") if p["entry"]["level"] == "error" => {
                self.errors.push(format!("{}: {} ({})", self.url, p["entry"]["text"], p["entry"]["url"]));
            }
            Some("Page.loadEventFired") => self.loaded = true,
            _ => {}
        }
    }

    /// Sends a command and returns its result; panics on a protocol error.
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let msg = json!({ "id": id, "method": method, "params": params }).to_string();
        self.ws.send(Message::text(msg)).unwrap_or_else(|e| panic!("sending {method} to Chromium: {e}"));
        loop {
            let v = self.read();
            if v["id"] == id {
                if let Some(err) = v.get("error") {
                    panic!("{method} failed: {err}");
                }
                return v["result"].clone();
            }
        }
    }

    /// Waits for the page's load event (after a navigation or a form submission).
    pub fn wait_loaded(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.loaded {
            assert!(Instant::now() < deadline, "{} did not finish loading within 30 s", self.url);
            self.read();
        }
        // Lazy images below the fold load later; wait for those in view.
        self.eval(
            "new Promise(r => { const t = Date.now(); (function w() { \
               if ([...document.images].every(i => i.complete) || Date.now() - t > 10000) r(true); \
               else setTimeout(w, 50); })(); })",
        );
        self.url = self.eval("location.href").as_str().unwrap_or_default().to_owned();
    }

    /// Opens `url` and waits until it has loaded.
    pub fn goto(&mut self, url: &str) {
        self.loaded = false;
        self.url = url.to_owned();
        let r = self.call("Page.navigate", json!({ "url": url }));
        if let Some(e) = r.get("errorText") {
            panic!("navigating to {url}: {e}");
        }
        self.wait_loaded();
    }

    /// Evaluates JavaScript in the page (promises are awaited) and returns its value.
    pub fn eval(&mut self, js: &str) -> Value {
        let r = self.call("Runtime.evaluate", json!({ "expression": js, "returnByValue": true, "awaitPromise": true }));
        if let Some(e) = r.get("exceptionDetails") {
            panic!("evaluating {js}: {e}");
        }
        r["result"]["value"].clone()
    }

    /// Runs `js` that submits a form or follows a link, and waits for the next page.
    pub fn submit(&mut self, js: &str) {
        self.loaded = false;
        self.eval(js);
        self.wait_loaded();
    }

    /// The visible text of the page.
    pub fn text(&mut self) -> String {
        self.eval("document.body.innerText").as_str().unwrap_or_default().to_owned()
    }

    /// Saves a PNG of the viewport.
    pub fn screenshot(&mut self, path: &Path) {
        let r = self.call("Page.captureScreenshot", json!({ "format": "png" }));
        let data = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().unwrap_or_default())
            .expect("screenshots are base64");
        std::fs::write(path, data).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    }

    /// Every cookie of the browser (HttpOnly ones included), as `(name, value)`.
    pub fn cookies(&mut self) -> Vec<(String, String)> {
        let r = self.call("Network.getAllCookies", json!({}));
        r["cookies"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|c| {
                        (c["name"].as_str().unwrap_or("").to_owned(), c["value"].as_str().unwrap_or("").to_owned())
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}
