//! Limits on guessing: per source address, a token bucket over every sign-in and code attempt
//! (`TooManyRequestsException`); per user, a lockout after repeated wrong passwords that
//! doubles with each further failure (`NotAuthorizedException: Password attempts exceeded`),
//! as Cognito does. Both are checked before any password is hashed, so that guessing cannot
//! buy CPU either. Kept in memory: a restart forgives.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures a user may have before the first lockout.
pub const FREE_FAILURES: u32 = 5;
/// The longest lockout.
pub const MAX_LOCKOUT: Duration = Duration::from_secs(15 * 60);

/// Per source, by default: attempts per second, and the burst allowed.
pub const SOURCE_RATE: f64 = 50.0;
pub const SOURCE_BURST: f64 = 100.0;

/// Entries kept at most before the stalest are forgotten.
const MAX_ENTRIES: usize = 100_000;

struct Bucket {
    tokens: f64,
    at: Instant,
}

#[derive(Default)]
struct Failures {
    count: u32,
    until: Option<Instant>,
}

/// The unit a source is counted by: an IPv4 address, or an IPv6 /64 (what one host or site
/// is given, so that its addresses do not each get a bucket of their own).
fn network(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => {
            let mut octets = v6.octets();
            octets[8..].fill(0);
            IpAddr::from(octets)
        }
        v4 => v4,
    }
}

/// The limiter.
pub struct Limiter {
    rate: f64,
    burst: f64,
    sources: Mutex<HashMap<IpAddr, Bucket>>,
    users: Mutex<HashMap<(String, String), Failures>>,
}

impl Default for Limiter {
    fn default() -> Self {
        Self::new(SOURCE_RATE, SOURCE_BURST)
    }
}

impl Limiter {
    /// A limiter allowing each source `rate` attempts a second, `burst` at once.
    pub fn new(rate: f64, burst: f64) -> Self {
        Self {
            rate: rate.max(0.0),
            burst: burst.max(1.0),
            sources: Mutex::default(),
            users: Mutex::default(),
        }
    }

    /// Takes one attempt from `source`'s bucket; false if it is empty.
    pub fn source_allows(&self, source: Option<IpAddr>) -> bool {
        let Some(ip) = source.map(network) else {
            return true;
        };
        let Ok(mut sources) = self.sources.lock() else {
            return true;
        };
        let now = Instant::now();
        if sources.len() >= MAX_ENTRIES {
            sources.retain(|_, b| now.duration_since(b.at) < Duration::from_secs(10));
            // Still full of recent sources: start over rather than scan on every call.
            if sources.len() >= MAX_ENTRIES / 2 {
                sources.clear();
            }
        }
        let bucket = sources.entry(ip).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let refill = now.duration_since(bucket.at).as_secs_f64() * self.rate;
        bucket.tokens = (bucket.tokens + refill).min(self.burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Whether `user` of `pool` is locked out now.
    pub fn locked(&self, pool: &str, user: &str) -> bool {
        let Ok(users) = self.users.lock() else {
            return false;
        };
        users
            .get(&(pool.to_owned(), user.to_owned()))
            .and_then(|f| f.until)
            .is_some_and(|until| Instant::now() < until)
    }

    /// Records a wrong password; from the sixth on, each locks the user out for twice as long
    /// as the one before (1 s, 2 s, 4 s, … up to 15 minutes).
    pub fn failed(&self, pool: &str, user: &str) {
        let Ok(mut users) = self.users.lock() else {
            return;
        };
        if users.len() >= MAX_ENTRIES {
            let now = Instant::now();
            users.retain(|_, f| f.until.is_some_and(|u| u > now));
            if users.len() >= MAX_ENTRIES / 2 {
                users.clear();
            }
        }
        let f = users.entry((pool.to_owned(), user.to_owned())).or_default();
        f.count += 1;
        if f.count >= FREE_FAILURES {
            let doublings = (f.count - FREE_FAILURES).min(20);
            let lockout = Duration::from_secs(1u64 << doublings).min(MAX_LOCKOUT);
            f.until = Some(Instant::now() + lockout);
        }
    }

    /// Forgets a user's failures after a right password.
    pub fn succeeded(&self, pool: &str, user: &str) {
        if let Ok(mut users) = self.users.lock() {
            users.remove(&(pool.to_owned(), user.to_owned()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_gets_its_burst_then_is_refused() {
        let l = Limiter::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let allowed = (0..200).filter(|_| l.source_allows(Some(ip))).count();
        // The burst, plus what refilled while the loop ran.
        assert!((100..=102).contains(&allowed), "{allowed}");
        let strict = Limiter::new(0.0, 3.0);
        assert_eq!(
            (0..10).filter(|_| strict.source_allows(Some(ip))).count(),
            3
        );
        assert!(l.source_allows(Some("192.0.2.2".parse().unwrap())));
        assert!(l.source_allows(None));
    }

    #[test]
    fn users_are_locked_out_after_five_failures_until_a_success() {
        let l = Limiter::default();
        for _ in 0..4 {
            l.failed("p", "alice");
            assert!(!l.locked("p", "alice"));
        }
        l.failed("p", "alice");
        assert!(l.locked("p", "alice"));
        assert!(!l.locked("p", "bob"));
        assert!(!l.locked("q", "alice"));
        l.succeeded("p", "alice");
        assert!(!l.locked("p", "alice"));
    }
}
