//! Passwords: the pool's policy, Argon2id hashes as PHC strings, temporary passwords.
//!
//! Parameters: Argon2id, 19 MiB of memory, 2 passes, 1 lane — the first of the settings
//! OWASP's password storage guidance lists as equivalent. One hash takes about 25 ms of one
//! core here; hashing runs on the blocking pool, at most one per core at a time, so that sign-in
//! storms queue instead of taking every core's memory bandwidth from the rest of the node.

use std::sync::{Arc, LazyLock};

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::Semaphore;

use crate::model::PasswordPolicy;
use crate::{Error, Kind};

/// Memory in KiB, passes, lanes.
pub const PARAMS: (u32, u32, u32) = (19 * 1024, 2, 1);

/// Cognito's symbols (any of them satisfies `RequireSymbols`).
const SYMBOLS: &str = "^$*.[]{}()?\"!@#%&/\\,><':;|_~`=+- ";

/// The longest password Cognito accepts.
pub const MAX_LENGTH: usize = 256;

fn hasher() -> Argon2<'static> {
    let (m, t, p) = PARAMS;
    #[allow(clippy::unwrap_used)] // constant, valid parameters
    let params = Params::new(m, t, p, None).unwrap();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// At most one hash per core at a time.
static HASHING: LazyLock<Arc<Semaphore>> = LazyLock::new(|| {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    Arc::new(Semaphore::new(cores))
});

/// Checks `password` against `policy`, with Cognito's messages.
pub fn check(policy: &PasswordPolicy, password: &str) -> Result<(), Error> {
    let fail = |what: &str| {
        Err(Error::new(
            Kind::InvalidPassword,
            format!("Password did not conform with policy: {what}"),
        ))
    };
    if password.chars().count() < policy.minimum_length as usize {
        return fail("Password not long enough");
    }
    if password.len() > MAX_LENGTH {
        return fail("Password is too long");
    }
    if policy.require_uppercase && !password.chars().any(|c| c.is_ascii_uppercase()) {
        return fail("Password must have uppercase characters");
    }
    if policy.require_lowercase && !password.chars().any(|c| c.is_ascii_lowercase()) {
        return fail("Password must have lowercase characters");
    }
    if policy.require_numbers && !password.chars().any(|c| c.is_ascii_digit()) {
        return fail("Password must have numeric characters");
    }
    if policy.require_symbols && !password.chars().any(|c| SYMBOLS.contains(c)) {
        return fail("Password must have symbol characters");
    }
    Ok(())
}

/// Hashes a password (on the blocking pool).
pub async fn hash(password: &str) -> Result<String, Error> {
    let password = password.to_owned();
    let _permit = HASHING
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| Error::storage("the hashing pool is closed"))?;
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        hasher()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| Error::storage(format!("hashing a password failed: {e}")))
    })
    .await
    .map_err(|e| Error::storage(e.to_string()))?
}

/// Whether `password` matches the PHC string `stored`. With `None` (no such user, or no
/// password) a hash is still computed against a fixed string, so that the answer takes as long
/// as for a real user and its timing reveals nothing.
pub async fn verify(password: &str, stored: Option<&str>) -> Result<bool, Error> {
    static DUMMY: LazyLock<String> = LazyLock::new(|| {
        SaltString::from_b64("bmltYnVzZHVtbXlzYWx0")
            .and_then(|salt| {
                hasher()
                    .hash_password(b"not a password anyone has", &salt)
                    .map(|h| h.to_string())
            })
            .unwrap_or_default()
    });
    let real = stored.is_some();
    let stored = stored.map_or_else(|| DUMMY.clone(), str::to_owned);
    let password = password.to_owned();
    let _permit = HASHING
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| Error::storage("the hashing pool is closed"))?;
    tokio::task::spawn_blocking(move || {
        let Ok(parsed) = PasswordHash::new(&stored) else {
            return false;
        };
        // Verify with the parameters the hash was made with (they may change over time).
        let ok = Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok();
        ok && real
    })
    .await
    .map_err(|e| Error::storage(e.to_string()))
}

/// A temporary password that satisfies `policy`: 12 characters or the policy's minimum,
/// with one of each class.
pub fn temporary(policy: &PasswordPolicy) -> String {
    const CLASSES: [&str; 4] = [
        "ABCDEFGHJKLMNPQRSTUVWXYZ",
        "abcdefghijkmnopqrstuvwxyz",
        "23456789",
        "^$*.!@#%&-_=+",
    ];
    let len = (policy.minimum_length as usize).max(12);
    let mut bytes = vec![0u8; len * 2];
    crate::random_bytes(&mut bytes);
    let mut out: Vec<char> = Vec::with_capacity(len);
    for (i, class) in CLASSES.iter().enumerate() {
        let chars: Vec<char> = class.chars().collect();
        out.push(chars[bytes[i] as usize % chars.len()]);
    }
    let all: Vec<char> = CLASSES.concat().chars().collect();
    for b in &bytes[4..len] {
        out.push(all[*b as usize % all.len()]);
    }
    // Shuffle so that the classes are not always in front.
    for i in (1..out.len()).rev() {
        let j = bytes[len + i % len] as usize % (i + 1);
        out.swap(i, j);
    }
    out.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_messages_name_the_first_rule_broken() {
        let p = PasswordPolicy::default();
        let msg = |pw: &str| check(&p, pw).err().map(|e| e.message);
        assert_eq!(
            msg("Sh0rt!").as_deref(),
            Some("Password did not conform with policy: Password not long enough")
        );
        assert!(msg("alllowercase1!").unwrap().contains("uppercase"));
        assert!(msg("ALLUPPERCASE1!").unwrap().contains("lowercase"));
        assert!(msg("NoNumbers!!").unwrap().contains("numeric"));
        assert!(msg("NoSymbols123").unwrap().contains("symbol"));
        assert_eq!(msg("Corr3ct-Horse"), None);
        let lax = PasswordPolicy {
            minimum_length: 6,
            require_uppercase: false,
            require_lowercase: false,
            require_numbers: false,
            require_symbols: false,
            temporary_password_validity_days: 7,
        };
        assert!(check(&lax, "secret").is_ok());
        assert!(check(&lax, &"x".repeat(300)).is_err());
    }

    #[test]
    fn temporary_passwords_satisfy_the_policy() {
        let p = PasswordPolicy {
            minimum_length: 20,
            ..PasswordPolicy::default()
        };
        for _ in 0..50 {
            let t = temporary(&p);
            assert_eq!(t.chars().count(), 20);
            check(&p, &t).unwrap();
        }
    }

    #[tokio::test]
    async fn hashes_are_argon2id_phc_strings_that_verify() {
        let h = hash("Corr3ct-Horse").await.unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(verify("Corr3ct-Horse", Some(&h)).await.unwrap());
        assert!(!verify("corr3ct-Horse", Some(&h)).await.unwrap());
        assert!(!verify("Corr3ct-Horse", None).await.unwrap());
        assert!(!verify("x", Some("not a phc string")).await.unwrap());
        // Two hashes of one password differ by their salt.
        assert_ne!(h, hash("Corr3ct-Horse").await.unwrap());
    }
}
