//! The page frame (header, navigation, range selector, styles and the one small
//! script) and helpers for text and links.
//!
//! Pages are built with `maud`, which escapes every interpolated value; nothing here
//! writes untrusted text without it. Host, metric and cluster names, tags and plugin
//! output all come from outside and pass through the same escaping.

use maud::{html, Markup, PreEscaped, DOCTYPE};

/// At most `n` characters of `s`, for error messages that echo input.
pub fn clip(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

/// A name in double quotes with control characters and quotes escaped, for messages.
pub fn quoted(s: &str) -> String {
    format!("{:?}", clip(s, 200))
}

/// `path?k=v&...` with every value percent-encoded; empty values are left out.
pub fn link(path: &str, params: &[(&str, &str)]) -> String {
    let kept: Vec<(&str, &str)> = params.iter().copied().filter(|(_, v)| !v.is_empty()).collect();
    if kept.is_empty() {
        return path.to_owned();
    }
    // Encoding string pairs cannot fail.
    let q = serde_urlencoded::to_string(&kept).unwrap_or_default();
    format!("{path}?{q}")
}

/// Seconds as a short duration: `45s`, `12m`, `3h 5m`, `2d 4h`.
pub fn duration(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=86_399 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// Unix seconds as `2026-11-26 15:04:05 UTC`.
pub fn time(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0).map_or_else(String::new, |d| d.format("%Y-%m-%d %H:%M:%S UTC").to_string())
}

/// A number for tables: SI prefix, three significant digits; `-` when unknown.
pub fn num(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), crate::graph::format_si)
}

/// CSS class of a check state.
pub fn state_class(state: &str) -> &'static str {
    match state {
        "OK" | "UP" => "ok",
        "WARNING" => "warn",
        "UNKNOWN" | "PENDING" => "unk",
        _ => "crit",
    }
}

/// The time-range state a page carries in its URL.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct RangeQuery {
    pub r: Option<String>,
    pub cs: Option<i64>,
    pub ce: Option<i64>,
    /// The custom-range form's `datetime-local` fields (UTC), turned into `cs`/`ce`.
    pub from: Option<String>,
    pub to: Option<String>,
}

impl RangeQuery {
    /// Takes the form's `from`/`to` fields into `cs`/`ce`.
    pub fn normalized(mut self) -> RangeQuery {
        let parse = |s: &Option<String>| {
            s.as_deref()
                .and_then(|s| chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M").ok())
                .map(|d| d.and_utc().timestamp())
        };
        if let Some(t) = parse(&self.from) {
            self.cs = Some(t);
        }
        if let Some(t) = parse(&self.to) {
            self.ce = Some(t);
        }
        self.from = None;
        self.to = None;
        self
    }

    /// The parameters to append to graph and page links.
    pub fn params(&self) -> Vec<(&'static str, String)> {
        let mut v = vec![("r", self.r.clone().unwrap_or_default())];
        if let Some(cs) = self.cs {
            v.push(("cs", cs.to_string()));
        }
        if let Some(ce) = self.ce {
            v.push(("ce", ce.to_string()));
        }
        v
    }
}

/// What the frame needs to know about the request.
pub struct Frame<'a> {
    pub title: &'a str,
    /// The page's own path and parameters without the range, for the range selector.
    pub path: &'a str,
    pub params: Vec<(&'a str, String)>,
    pub range: Option<&'a RangeQuery>,
    pub refresh_secs: u64,
    /// Signed-in admin, if any.
    pub user: Option<&'a str>,
    pub csrf: Option<&'a str>,
    pub crumbs: Vec<(String, String)>,
}

const STYLE: &str = r#"
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#222;background:#fafafa}
header{background:#234;color:#fff;padding:.5em 1em;display:flex;flex-wrap:wrap;gap:1em;align-items:center}
header a{color:#fff;text-decoration:none}header .brand{font-weight:700}
header form{margin:0}header input[type=search]{width:14em}
.crumbs a{color:#cde}.spacer{flex:1}
main{padding:1em}
nav.ranges{margin:0 0 .8em;display:flex;gap:.4em;flex-wrap:wrap;align-items:center}
nav.ranges a{padding:.1em .5em;border:1px solid #bbb;border-radius:4px;text-decoration:none;color:#234}
nav.ranges a.on{background:#234;color:#fff}
table{border-collapse:collapse;background:#fff}th,td{padding:.25em .7em;text-align:left;border-bottom:1px solid #ddd;vertical-align:top}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.cards{display:flex;flex-wrap:wrap;gap:1em}.card{background:#fff;border:1px solid #ccc;border-radius:6px;padding:.6em 1em}
.card h2{margin:.1em 0 .4em;font-size:1.2em}
.tiles{display:flex;flex-wrap:wrap;gap:6px}
.tile{display:block;border:3px solid #ccc;border-radius:4px;background:#fff;text-decoration:none;color:#222;font-size:12px}
.tile span{display:block;padding:0 4px;white-space:nowrap;overflow:hidden;max-width:256px}
.tile img{display:block;width:260px;height:110px}
.tile.s1{border-color:#e0a800}.tile.s2{border-color:#b36ad6}.tile.s3{border-color:#c0392b}.tile.down{border-color:#000;opacity:.6}
.tile.l1{background:#eef6ff}.tile.l2{background:#fff6dd}.tile.l3{background:#ffe2cc}.tile.l4{background:#ffd0d0}
.ok{background:#c8efc8}.warn{background:#ffe89a}.crit{background:#f5b7b1}.unk{background:#e3c9f0}
.handled td{opacity:.65}
.graphs{display:flex;flex-wrap:wrap;gap:8px}.graphs img{background:#fff;border:1px solid #ddd}
img.zoom{cursor:crosshair}
#zoombox{position:absolute;background:rgba(50,100,200,.2);border:1px solid #36c;pointer-events:none;display:none}
h1{font-size:1.4em;margin:.2em 0 .6em}h2{font-size:1.15em;margin:1em 0 .4em}h3{margin:.8em 0 .3em;text-transform:capitalize}
form.inline{display:inline}.msg{padding:.4em .8em;background:#eef;border:1px solid #99c}
.err{padding:.4em .8em;background:#fdd;border:1px solid #c99}
pre{white-space:pre-wrap;margin:0}
"#;

/// Auto-refresh that keeps the scroll position (the page body is swapped in place, not
/// reloaded), drag-to-zoom on graphs, and the tile filter. No framework.
const SCRIPT: &str = r#"
"use strict";
(function(){
const main=document.querySelector("main");
const every=+document.body.dataset.refresh||0;
function stamp(){for(const img of main.querySelectorAll('img[src^="/graph."]')){img.src=img.getAttribute("src")+"&_="+Date.now();}}
async function refresh(){
  if(document.hidden||document.querySelector("main form :focus"))return;
  try{
    const r=await fetch(location.href,{headers:{"X-Refresh":"1"},credentials:"same-origin"});
    if(!r.ok)return;
    const doc=new DOMParser().parseFromString(await r.text(),"text/html");
    const fresh=doc.querySelector("main");
    if(!fresh)return;
    const x=window.scrollX,y=window.scrollY;
    main.innerHTML=fresh.innerHTML;
    stamp();wire();filter();
    window.scrollTo(x,y);
  }catch(e){}
}
if(every>0)setInterval(refresh,every*1000);
const box=document.getElementById("zoombox");
function wire(){
  for(const img of main.querySelectorAll("img.zoom")){
    img.addEventListener("mousedown",ev=>{
      ev.preventDefault();
      const rect=img.getBoundingClientRect();
      const x0=ev.clientX;
      const move=e=>{const a=Math.min(x0,e.clientX),b=Math.max(x0,e.clientX);
        box.style.display="block";box.style.left=(a+window.scrollX)+"px";box.style.width=(b-a)+"px";
        box.style.top=(rect.top+window.scrollY)+"px";box.style.height=rect.height+"px";};
      const up=e=>{
        document.removeEventListener("mousemove",move);document.removeEventListener("mouseup",up);
        box.style.display="none";
        const l=+img.dataset.left,w=+img.dataset.plot,s=+img.dataset.start,en=+img.dataset.end;
        const px=v=>Math.min(Math.max(v-rect.left-l,0),w);
        const a=px(Math.min(x0,e.clientX)),b=px(Math.max(x0,e.clientX));
        if(b-a<4||!w)return;
        const cs=Math.round(s+(en-s)*a/w),ce=Math.round(s+(en-s)*b/w);
        const u=new URL(location.href);u.searchParams.set("r","custom");u.searchParams.set("cs",cs);u.searchParams.set("ce",ce);
        location.href=u.toString();
      };
      document.addEventListener("mousemove",move);document.addEventListener("mouseup",up);
    });
  }
}
function filter(){
  const f=document.getElementById("hostfilter");
  if(!f)return;
  let re=null;try{re=new RegExp(f.value,"i");}catch(e){return;}
  for(const t of main.querySelectorAll(".tile")){t.style.display=re.test(t.dataset.host||"")?"":"none";}
}
document.addEventListener("input",e=>{if(e.target.id==="hostfilter")filter();});
wire();filter();
})();
"#;

/// The whole page around `body`.
pub fn page(f: &Frame<'_>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                // No favicon request (and no 404 for it in the console).
                link rel="icon" href="data:,";
                title { (f.title) " · ganglion" }
                style { (PreEscaped(STYLE)) }
            }
            body data-refresh=(f.refresh_secs) {
                header {
                    a.brand href="/" { "ganglion" }
                    span.crumbs {
                        @for (name, href) in &f.crumbs { " › " a href=(href) { (name) } }
                    }
                    a href="/" { "Grid" }
                    a href="/problems" { "Problems" }
                    a href="/compare" { "Compare" }
                    a href="/health" { "Health" }
                    span.spacer {}
                    form action="/search" method="get" {
                        input type="search" name="q" placeholder="hosts, metrics, clusters" aria-label="Search";
                    }
                    @if let Some(user) = f.user {
                        span { "admin: " (user) }
                        form.inline action="/logout" method="post" {
                            input type="hidden" name="csrf" value=(f.csrf.unwrap_or(""));
                            button type="submit" { "Sign out" }
                        }
                    } @else {
                        a href="/login" { "Sign in" }
                    }
                }
                main {
                    @if let Some(range) = f.range { (ranges(f, range)) }
                    (body)
                }
                div #zoombox {}
                script { (PreEscaped(SCRIPT)) }
            }
        }
    }
}

fn ranges(f: &Frame<'_>, range: &RangeQuery) -> Markup {
    let current = range.r.as_deref().unwrap_or(if range.cs.is_some() { "custom" } else { "hour" });
    let base: Vec<(&str, &str)> = f.params.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let to_local = |t: Option<i64>| {
        t.and_then(|t| chrono::DateTime::from_timestamp(t, 0)).map(|d| d.format("%Y-%m-%dT%H:%M").to_string())
    };
    html! {
        nav.ranges {
            "Range: "
            @for (name, _) in crate::charts::RANGES {
                @let p = [base.as_slice(), &[("r", name)]].concat();
                a class=@if current == name { "on" } href=(link(f.path, &p)) { (name) }
            }
            form.inline method="get" action=(f.path) {
                @for (k, v) in &f.params { input type="hidden" name=(k) value=(v); }
                input type="hidden" name="r" value="custom";
                " from (UTC) " input type="datetime-local" name="from" value=[to_local(range.cs)];
                " to " input type="datetime-local" name="to" value=[to_local(range.ce)];
                button type="submit" { "Show" }
                @if current == "custom" { " " span { "(custom range; drag on a graph to zoom)" } }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_encode_values() {
        assert_eq!(link("/host", &[("h", "a b&c"), ("r", "")]), "/host?h=a+b%26c");
        assert_eq!(link("/", &[]), "/");
    }

    #[test]
    fn durations() {
        assert_eq!(duration(5), "5s");
        assert_eq!(duration(3700), "1h 1m");
        assert_eq!(duration(200_000), "2d 7h");
    }
}
