//! Admin sign-in for the dashboard's actions: credentials from the configuration
//! (argon2 password hashes), a session cookie (`HttpOnly`, `SameSite=Strict`), and a
//! CSRF token per session that every form carries and every POST must return.
//!
//! Sessions live in memory: a collector restart signs everyone out, which is the safe
//! failure. Tokens are 128-bit random values compared in constant time.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use axum::http::HeaderMap;
use rand::RngCore;
use subtle::ConstantTimeEq;

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "ganglion_session";
/// Name of the cookie that carries the sign-in form's CSRF token before a session exists.
pub const LOGIN_COOKIE: &str = "ganglion_login";

/// One admin account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admin {
    pub user: String,
    /// PHC string of an argon2 hash (`ganglion hash-password` makes one).
    pub password_hash: String,
}

/// Hashes a password for the configuration (argon2id, random salt).
///
/// # Errors
/// When hashing fails (not expected with the default parameters).
pub fn hash_password(password: &str) -> Result<String, String> {
    let mut salt = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    Argon2::default().hash_password(password.as_bytes(), &salt).map(|h| h.to_string()).map_err(|e| e.to_string())
}

/// Whether `hash` is a PHC string argon2 can verify against, for config checks.
pub fn valid_hash(hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| h.algorithm.as_str().starts_with("argon2"))
}

fn token() -> String {
    let mut b = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut b);
    hex::encode(b)
}

/// Constant-time equality of two tokens.
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// A signed-in admin.
#[derive(Debug, Clone)]
pub struct Session {
    pub user: String,
    pub csrf: String,
    expires: Instant,
}

/// Accounts and open sessions.
pub struct Auth {
    admins: Vec<Admin>,
    ttl: Duration,
    secure: bool,
    sessions: Mutex<HashMap<String, Session>>,
}

/// Most sessions kept at once; the oldest go first beyond it.
const MAX_SESSIONS: usize = 1024;

impl Auth {
    pub fn new(admins: Vec<Admin>, ttl: Duration, secure: bool) -> Auth {
        Auth { admins, ttl, secure, sessions: Mutex::new(HashMap::new()) }
    }

    /// Whether any admin account is configured (otherwise actions are off).
    pub fn enabled(&self) -> bool {
        !self.admins.is_empty()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        // A panic while holding the lock leaves the map consistent (single inserts/removes).
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Checks the credentials; on success opens a session and returns its cookie value.
    /// The password check is argon2's (slow on purpose) and runs for unknown users too,
    /// so timing does not tell which user names exist.
    pub fn sign_in(&self, user: &str, password: &str) -> Option<String> {
        let found = self.admins.iter().find(|a| same(&a.user, user));
        // A fixed valid hash to verify against when the user is unknown.
        const DUMMY: &str =
            "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$3Sg9Q0u0Hk2m3q8lQ0mVZkq5c6C3t6mJb4a9oX4mV1E";
        let hash = found.map_or(DUMMY, |a| a.password_hash.as_str());
        let ok = PasswordHash::new(hash)
            .is_ok_and(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
            && found.is_some();
        if !ok {
            return None;
        }
        let id = token();
        let now = Instant::now();
        let mut s = self.lock();
        s.retain(|_, v| v.expires > now);
        if s.len() >= MAX_SESSIONS {
            if let Some(oldest) = s.iter().min_by_key(|(_, v)| v.expires).map(|(k, _)| k.clone()) {
                s.remove(&oldest);
            }
        }
        s.insert(id.clone(), Session { user: user.to_owned(), csrf: token(), expires: now + self.ttl });
        Some(id)
    }

    /// The session a request's cookie names, if it is open.
    pub fn session(&self, headers: &HeaderMap) -> Option<Session> {
        let id = cookie(headers, SESSION_COOKIE)?;
        let s = self.lock();
        s.get(&id).filter(|v| v.expires > Instant::now()).cloned()
    }

    pub fn sign_out(&self, headers: &HeaderMap) {
        if let Some(id) = cookie(headers, SESSION_COOKIE) {
            self.lock().remove(&id);
        }
    }

    /// `Set-Cookie` value that opens the session cookie.
    pub fn session_cookie(&self, id: &str) -> String {
        let secure = if self.secure { "; Secure" } else { "" };
        format!("{SESSION_COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}", self.ttl.as_secs())
    }

    /// `Set-Cookie` value that removes the session cookie.
    pub fn clear_cookie(&self) -> String {
        format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")
    }

    /// A fresh sign-in form token and the `Set-Cookie` value that carries it.
    pub fn login_token(&self) -> (String, String) {
        let t = token();
        let secure = if self.secure { "; Secure" } else { "" };
        let c = format!("{LOGIN_COOKIE}={t}; Path=/login; HttpOnly; SameSite=Strict; Max-Age=1800{secure}");
        (t, c)
    }
}

/// The value of cookie `name` in a request.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> Auth {
        Auth::new(
            vec![Admin { user: "ops".into(), password_hash: hash_password("s3cret-pass").unwrap() }],
            Duration::from_secs(60),
            false,
        )
    }

    #[test]
    fn signs_in_with_the_right_password_only() {
        let a = auth();
        assert!(a.sign_in("ops", "wrong").is_none());
        assert!(a.sign_in("nobody", "s3cret-pass").is_none());
        let id = a.sign_in("ops", "s3cret-pass").unwrap();
        let mut h = HeaderMap::new();
        h.insert(axum::http::header::COOKIE, format!("x=1; {SESSION_COOKIE}={id}").parse().unwrap());
        let s = a.session(&h).unwrap();
        assert_eq!(s.user, "ops");
        assert_eq!(s.csrf.len(), 32);
        a.sign_out(&h);
        assert!(a.session(&h).is_none());
    }

    #[test]
    fn cookie_flags() {
        let a = auth();
        let c = a.session_cookie("abc");
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict"));
        assert!(valid_hash(&hash_password("x").unwrap()));
        assert!(!valid_hash("plaintext"));
    }
}
