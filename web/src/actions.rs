//! Sign-in, sign-out and the admin actions (acknowledge, remove an acknowledgement,
//! schedule or remove downtime, recheck now), each a POSTed form that must carry the
//! session's CSRF token. A request without a session or with a wrong token is refused
//! with 403 and changes nothing.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::Form;
use maud::{html, Markup};
use serde::Deserialize;

use crate::auth::{cookie, same, LOGIN_COOKIE};
use crate::html::{page, Frame};
use crate::source::{Action, CheckInfo, DowntimeInfo};
use crate::App;

/// Buttons for a problem row: acknowledge and recheck.
pub fn quick_forms(c: &CheckInfo, csrf: &str, back: &str) -> Markup {
    html! {
        @if !c.acknowledged {
            form.inline method="post" action="/action" {
                input type="hidden" name="csrf" value=(csrf);
                input type="hidden" name="op" value="ack";
                input type="hidden" name="c" value=(c.cluster);
                input type="hidden" name="h" value=(c.host);
                input type="hidden" name="s" value=(c.service);
                input type="hidden" name="back" value=(back);
                input type="text" name="comment" placeholder="comment" required size="12";
                button type="submit" { "Acknowledge" }
            }
        }
        form.inline method="post" action="/action" {
            input type="hidden" name="csrf" value=(csrf);
            input type="hidden" name="op" value="recheck";
            input type="hidden" name="c" value=(c.cluster);
            input type="hidden" name="h" value=(c.host);
            input type="hidden" name="s" value=(c.service);
            input type="hidden" name="back" value=(back);
            button type="submit" { "Recheck" }
        }
    }
}

/// Every action on one check's page.
pub fn full_forms(c: &CheckInfo, csrf: &str, back: &str, downtimes: &[DowntimeInfo]) -> Markup {
    let hidden = |op: &str| {
        html! {
            input type="hidden" name="csrf" value=(csrf);
            input type="hidden" name="op" value=(op);
            input type="hidden" name="c" value=(c.cluster);
            input type="hidden" name="h" value=(c.host);
            input type="hidden" name="s" value=(c.service);
            input type="hidden" name="back" value=(back);
        }
    };
    html! {
        @if c.acknowledged {
            form method="post" action="/action" { (hidden("unack")) button type="submit" { "Remove acknowledgement" } }
        } @else if c.problem {
            form #ack method="post" action="/action" {
                (hidden("ack"))
                input type="text" name="comment" placeholder="comment" required size="40";
                label { input type="checkbox" name="sticky" value="1" checked; " sticky" }
                " " button type="submit" { "Acknowledge" }
            }
        }
        form method="post" action="/action" {
            (hidden("downtime"))
            "Downtime for " input type="number" name="minutes" value="60" min="1" max="525600" size="6"; " minutes "
            input type="text" name="comment" placeholder="comment" required size="30";
            " " button type="submit" { "Schedule downtime" }
        }
        @for d in downtimes {
            form method="post" action="/action" {
                (hidden("undowntime"))
                input type="hidden" name="id" value=(d.id);
                button type="submit" { "Remove downtime " (d.id) }
            }
        }
        form method="post" action="/action" { (hidden("recheck")) button type="submit" { "Recheck now" } }
    }
}

/// A POSTed action form.
#[derive(Debug, Deserialize)]
pub struct ActionForm {
    pub csrf: Option<String>,
    pub op: String,
    pub c: Option<String>,
    pub h: Option<String>,
    pub s: Option<String>,
    pub comment: Option<String>,
    pub sticky: Option<String>,
    pub minutes: Option<i64>,
    pub id: Option<u64>,
    pub back: Option<String>,
}

/// A local path to return to; anything else (another site, `//host`) goes to `/`.
fn safe_back(b: Option<&str>) -> String {
    match b {
        Some(p) if p.starts_with('/') && !p.starts_with("//") && !p.contains('\\') => p.to_owned(),
        _ => "/".to_owned(),
    }
}

fn refuse(msg: &str) -> Response {
    tracing::warn!(reason = msg, "Refused a dashboard action.");
    (
        StatusCode::FORBIDDEN,
        Html(html! { h1 { "Forbidden" } p { (msg) } p { a href="/login" { "Sign in" } } }.into_string()),
    )
        .into_response()
}

pub async fn action(State(app): State<Arc<App>>, headers: HeaderMap, Form(f): Form<ActionForm>) -> Response {
    let Some(session) = app.auth.session(&headers) else { return refuse("sign in as an admin first") };
    if !f.csrf.as_deref().is_some_and(|t| same(t, &session.csrf)) {
        return refuse("the form's CSRF token is missing or wrong; reload the page and try again");
    }
    let none_if_empty = |s: &Option<String>| s.clone().filter(|x| !x.is_empty());
    let host = f.h.clone().unwrap_or_default();
    let service = none_if_empty(&f.s);
    let cluster = none_if_empty(&f.c);
    let comment = f.comment.clone().unwrap_or_default();
    let author = session.user.clone();
    let act = match f.op.as_str() {
        "ack" => Action::Acknowledge { cluster, host, service, author, comment, sticky: f.sticky.is_some() },
        "unack" => Action::RemoveAck { cluster, host, service },
        "downtime" => {
            let now = app.now();
            let minutes = f.minutes.unwrap_or(60).clamp(1, 525_600);
            Action::Downtime { host, service, start: now, end: now + minutes * 60, author, comment }
        }
        "undowntime" => match f.id {
            Some(id) => Action::RemoveDowntime { id },
            None => return (StatusCode::BAD_REQUEST, "a downtime id is needed").into_response(),
        },
        "recheck" => Action::Recheck { cluster, host, service },
        _ => return (StatusCode::BAD_REQUEST, "unknown action").into_response(),
    };
    tracing::info!(user = %session.user, op = %f.op, "Dashboard action.");
    let msg = match app.src.act(act).await {
        Ok(m) => m,
        Err(e) => format!("Not done: {e}"),
    };
    let back = safe_back(f.back.as_deref());
    let sep = if back.contains('?') { '&' } else { '?' };
    let q = serde_urlencoded::to_string([("msg", msg.as_str())]).unwrap_or_default();
    Redirect::to(&format!("{back}{sep}{q}")).into_response()
}

fn login_page(app: &App, token: &str, error: Option<&str>) -> String {
    let f = Frame {
        title: "Sign in",
        path: "/login",
        params: Vec::new(),
        range: None,
        refresh_secs: 0,
        user: None,
        csrf: None,
        crumbs: Vec::new(),
    };
    let body = html! {
        h1 { "Sign in" }
        @if !app.auth.enabled() { p.err { "No admin account is configured ([[web.admin]] in the collector's configuration)." } }
        @if let Some(e) = error { p.err { (e) } }
        form #login method="post" action="/login" {
            input type="hidden" name="csrf" value=(token);
            p { label { "User " input type="text" name="user" autocomplete="username" required; } }
            p { label { "Password " input type="password" name="password" autocomplete="current-password" required; } }
            button type="submit" { "Sign in" }
        }
    };
    page(&f, body).into_string()
}

pub async fn login_form(State(app): State<Arc<App>>) -> Response {
    let (token, set) = app.auth.login_token();
    ([(header::SET_COOKIE, set), (header::CACHE_CONTROL, "no-store".into())], Html(login_page(&app, &token, None)))
        .into_response()
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    pub csrf: Option<String>,
    pub user: String,
    pub password: String,
}

pub async fn login(State(app): State<Arc<App>>, headers: HeaderMap, Form(f): Form<LoginForm>) -> Response {
    let expected = cookie(&headers, LOGIN_COOKIE);
    let ok_token = matches!((&expected, &f.csrf), (Some(a), Some(b)) if same(a, b));
    if !ok_token {
        return refuse("the sign-in form's CSRF token is missing or wrong; reload the sign-in page");
    }
    let auth = app.clone();
    let (user, password) = (f.user.clone(), f.password.clone());
    // argon2 is slow on purpose: off the async workers.
    let id = tokio::task::spawn_blocking(move || auth.auth.sign_in(&user, &password)).await.ok().flatten();
    match id {
        Some(id) => {
            tracing::info!(user = %f.user, "Admin signed in.");
            ([(header::SET_COOKIE, app.auth.session_cookie(&id))], Redirect::to("/problems")).into_response()
        }
        None => {
            tracing::warn!(user = %crate::html::quoted(&f.user), "Failed sign-in.");
            let (token, set) = app.auth.login_token();
            (
                StatusCode::UNAUTHORIZED,
                [(header::SET_COOKIE, set)],
                Html(login_page(&app, &token, Some("Wrong user or password."))),
            )
                .into_response()
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct LogoutForm {
    pub csrf: Option<String>,
}

pub async fn logout(State(app): State<Arc<App>>, headers: HeaderMap, Form(f): Form<LogoutForm>) -> Response {
    let Some(session) = app.auth.session(&headers) else { return Redirect::to("/").into_response() };
    if !f.csrf.as_deref().is_some_and(|t| same(t, &session.csrf)) {
        return refuse("the form's CSRF token is missing or wrong");
    }
    app.auth.sign_out(&headers);
    ([(header::SET_COOKIE, app.auth.clear_cookie())], Redirect::to("/")).into_response()
}

#[cfg(test)]
mod tests {
    #[test]
    fn back_stays_on_this_site() {
        assert_eq!(super::safe_back(Some("/problems?x=1")), "/problems?x=1");
        assert_eq!(super::safe_back(Some("//evil.example/")), "/");
        assert_eq!(super::safe_back(Some("https://evil.example/")), "/");
        assert_eq!(super::safe_back(None), "/");
    }
}
