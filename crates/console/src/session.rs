//! Console sessions: a random token in an HTTP-only, `SameSite=Strict` cookie names a session
//! held in memory (a restart signs everyone out). A session remembers only the access key it
//! was opened with: the caller, with its policies, is looked up again on every request, so a
//! deleted key or a changed policy takes effect at once. Each session has its own form token,
//! which every form that changes something must carry back.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;

/// The session cookie.
pub const COOKIE: &str = "nimbus_console";
/// The sign-in form's own token (a double-submit cookie: a form posted from elsewhere lacks it).
pub const SIGNIN_COOKIE: &str = "nimbus_signin";
/// The chosen theme.
pub const THEME_COOKIE: &str = "nimbus_theme";

/// A session ends after this long without a request.
pub const IDLE: Duration = Duration::from_secs(3600);
/// A session ends this long after sign-in, however busy.
pub const MAX_AGE: Duration = Duration::from_secs(12 * 3600);
/// The most sessions held; the least recently used goes first.
const MAX_SESSIONS: usize = 10_000;
/// Failed sign-ins within [`FAILURE_WINDOW`] after which further attempts are refused until
/// the window has passed: per access key id, and (higher, since many people may share an
/// address, loopback above all) per client address.
pub const MAX_KEY_FAILURES: u32 = 5;
pub const MAX_ADDRESS_FAILURES: u32 = 50;
const FAILURE_WINDOW: Duration = Duration::from_secs(300);

#[derive(Debug, Clone)]
pub struct Session {
    /// The access key signed in with; `None` in development mode (the default account's root).
    pub key_id: Option<String>,
    /// The token forms carry.
    pub csrf: String,
    created: Instant,
    seen: Instant,
}

#[derive(Default)]
pub struct Sessions {
    open: Mutex<HashMap<String, Session>>,
    failures: Mutex<HashMap<String, (u32, Instant)>>,
}

/// 32 random bytes, hex.
pub fn token() -> String {
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw).expect("the OS has randomness");
    raw.iter().map(|b| format!("{b:02x}")).collect()
}

/// Compares two secrets in time that depends only on their lengths.
pub fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A cookie's value from the request's `Cookie` headers.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().to_owned())
}

/// A `Set-Cookie` value for the console's path; `max_age` 0 removes the cookie.
pub fn set_cookie(name: &str, value: &str, max_age: Option<u64>) -> String {
    let mut c = format!("{name}={value}; Path=/console; HttpOnly; SameSite=Strict");
    if let Some(age) = max_age {
        c.push_str(&format!("; Max-Age={age}"));
    }
    c
}

impl Sessions {
    /// Opens a session and returns its token.
    pub fn open(&self, key_id: Option<String>) -> (String, Session) {
        let now = Instant::now();
        let session = Session {
            key_id,
            csrf: token(),
            created: now,
            seen: now,
        };
        let id = token();
        if let Ok(mut open) = self.open.lock() {
            open.retain(|_, s| live(s, now));
            if open.len() >= MAX_SESSIONS
                && let Some(oldest) = open
                    .iter()
                    .min_by_key(|(_, s)| s.seen)
                    .map(|(k, _)| k.clone())
            {
                open.remove(&oldest);
            }
            open.insert(id.clone(), session.clone());
        }
        (id, session)
    }

    /// The live session a token names, its idle clock restarted.
    pub fn get(&self, id: &str) -> Option<Session> {
        let now = Instant::now();
        let mut open = self.open.lock().ok()?;
        let session = open.get_mut(id)?;
        if !live(session, now) {
            open.remove(id);
            return None;
        }
        session.seen = now;
        Some(session.clone())
    }

    pub fn close(&self, id: &str) {
        if let Ok(mut open) = self.open.lock() {
            open.remove(id);
        }
    }

    /// Whether sign-in attempts for any of `subjects` (a key id, a client address, each with
    /// its own limit) are refused for now.
    pub fn locked_out(&self, subjects: &[(&str, u32)]) -> bool {
        let now = Instant::now();
        let Ok(failures) = self.failures.lock() else {
            return true;
        };
        subjects.iter().any(|(s, max)| {
            failures
                .get(*s)
                .is_some_and(|(n, since)| n >= max && now - *since < FAILURE_WINDOW)
        })
    }

    /// Counts a failed sign-in against each subject.
    pub fn failed(&self, subjects: &[&str]) {
        let now = Instant::now();
        if let Ok(mut failures) = self.failures.lock() {
            if failures.len() > 100_000 {
                failures.retain(|_, (_, since)| now - *since < FAILURE_WINDOW);
                if failures.len() > 100_000 {
                    // Under a flood from many addresses, forget rather than grow.
                    failures.clear();
                }
            }
            for s in subjects {
                let entry = failures.entry((*s).to_owned()).or_insert((0, now));
                if now - entry.1 >= FAILURE_WINDOW {
                    *entry = (0, now);
                }
                entry.0 += 1;
            }
        }
    }

    /// Forgets the failures of a subject that signed in.
    pub fn succeeded(&self, subject: &str) {
        if let Ok(mut failures) = self.failures.lock() {
            failures.remove(subject);
        }
    }
}

fn live(s: &Session, now: Instant) -> bool {
    fresh(now - s.seen, now - s.created)
}

/// Whether a session idle for `idle` and opened `age` ago still counts.
fn fresh(idle: Duration, age: Duration) -> bool {
    idle < IDLE && age < MAX_AGE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_open_find_and_close() {
        let sessions = Sessions::default();
        let (id, s) = sessions.open(Some("AKIAEXAMPLE".into()));
        assert_eq!(id.len(), 64);
        assert_ne!(s.csrf, id);
        assert_eq!(
            sessions.get(&id).and_then(|s| s.key_id).as_deref(),
            Some("AKIAEXAMPLE")
        );
        assert!(sessions.get("not-a-session").is_none());
        sessions.close(&id);
        assert!(sessions.get(&id).is_none());
    }

    #[test]
    fn sessions_end_when_idle_or_old() {
        let minute = Duration::from_secs(60);
        assert!(fresh(minute, minute));
        assert!(!fresh(IDLE + minute, IDLE + minute), "idle too long");
        assert!(!fresh(minute, MAX_AGE + minute), "busy but too old");
    }

    #[test]
    fn repeated_failures_lock_a_subject_out() {
        let sessions = Sessions::default();
        let key = |k| [(k, MAX_KEY_FAILURES), ("10.0.0.1", MAX_ADDRESS_FAILURES)];
        for _ in 0..MAX_KEY_FAILURES {
            assert!(!sessions.locked_out(&key("AKIA1")));
            sessions.failed(&["AKIA1", "10.0.0.1"]);
        }
        assert!(sessions.locked_out(&key("AKIA1")));
        // The address has room left for other keys.
        assert!(!sessions.locked_out(&key("AKIA2")));
        for _ in MAX_KEY_FAILURES..MAX_ADDRESS_FAILURES {
            sessions.failed(&["AKIA3", "10.0.0.1"]);
        }
        assert!(sessions.locked_out(&key("AKIA2")));
        sessions.succeeded("AKIA1");
        assert!(!sessions.locked_out(&[("AKIA1", MAX_KEY_FAILURES)]));
    }

    #[test]
    fn cookies_are_read_by_name() {
        let mut h = HeaderMap::new();
        h.append("cookie", "a=1; nimbus_console=abc".parse().unwrap());
        h.append("cookie", "nimbus_theme=dark".parse().unwrap());
        assert_eq!(cookie(&h, COOKIE).as_deref(), Some("abc"));
        assert_eq!(cookie(&h, THEME_COOKIE).as_deref(), Some("dark"));
        assert_eq!(cookie(&h, "nimbus"), None);
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd"));
        assert!(!same("abc", "ab"));
    }
}
