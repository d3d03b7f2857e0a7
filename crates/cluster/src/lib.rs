//! Workers in their own processes. A worker (`nimbus worker --join URL`) registers with a node's
//! Worker Manager, heartbeats its capacity and hosts sandboxes for it; the node reaches it
//! through [`node::RemoteWorker`], an implementation of the same `Worker` trait the built-in
//! worker has, so the manager and Placement treat both alike.
//!
//! Both sides prove that they hold the cluster secret on every request: a header carries an
//! HMAC-SHA256 of the method, the path and the time under the secret, and the receiver refuses
//! a missing, wrong or stale one. The secret itself never crosses the wire. Every connection is
//! TLS 1.3 with a certificate derived from the secret and pinned by both sides ([`tls`]), with
//! no plaintext fallback.
//!
//! [`node`] is the node's side (registrations, heartbeats, code downloads, the lost-worker
//! monitor); [`agent`] is the worker's side (its API and its registration loop).

#![forbid(unsafe_code)]

pub mod agent;
mod http;
pub use http::FROM_SANDBOX_HEADER;
pub mod node;
pub mod tls;

use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// The header that carries a request's proof of the secret.
pub const AUTH_HEADER: &str = "x-nimbus-cluster-auth";
/// How far a request's time may be from the receiver's clock.
const MAX_SKEW_S: i64 = 300;

/// The shared secret of a node and its workers.
#[derive(Clone)]
pub struct Secret(pub(crate) Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    /// A secret given as text (a file's content or an environment variable), trimmed. At least
    /// 16 characters.
    pub fn from_text(text: &str) -> anyhow::Result<Self> {
        let text = text.trim();
        anyhow::ensure!(
            text.len() >= 16,
            "the cluster secret must be at least 16 characters long"
        );
        Ok(Self(text.as_bytes().to_vec()))
    }

    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the cluster secret from {}", path.display()))?;
        Self::from_text(&text)
    }

    /// The node's secret in its data directory, created (mode 0600) on first start.
    pub fn load_or_create(path: &Path) -> anyhow::Result<Self> {
        if path.exists() {
            return Self::read(path);
        }
        let mut random = [0u8; 32];
        getrandom::fill(&mut random)
            .map_err(|e| anyhow::anyhow!("the system's random source failed: {e}"))?;
        let text = nimbus_types::hex::encode(&random);
        let tmp = path.with_extension("tmp");
        {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .with_context(|| format!("creating {}", tmp.display()))?;
            writeln!(f, "{text}")?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path).with_context(|| format!("creating {}", path.display()))?;
        Self::from_text(&text)
    }

    fn mac(&self, time_s: i64, method: &str, path: &str) -> [u8; 32] {
        hmac_sha256(&self.0, format!("{time_s}\n{method}\n{path}").as_bytes())
    }

    /// The auth header's value for a request.
    pub fn sign(&self, method: &str, path: &str) -> String {
        let now = nimbus_types::time::now_ms() / 1000;
        format!(
            "v1 {now} {}",
            nimbus_types::hex::encode(&self.mac(now, method, path))
        )
    }

    /// Checks a request's auth header; the error says why it was refused.
    pub fn verify(&self, header: Option<&str>, method: &str, path: &str) -> Result<(), String> {
        let header = header.ok_or("the request carries no cluster credentials")?;
        let mut parts = header.split(' ');
        let (Some("v1"), Some(time), Some(mac), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err("malformed cluster credentials".into());
        };
        let time: i64 = time
            .parse()
            .map_err(|_| "malformed cluster credentials".to_owned())?;
        let now = nimbus_types::time::now_ms() / 1000;
        if (now - time).abs() > MAX_SKEW_S {
            return Err("the cluster credentials are stale (check the clocks)".into());
        }
        let expected = nimbus_types::hex::encode(&self.mac(time, method, path));
        // Compare in constant time.
        let same = expected.len() == mac.len()
            && expected
                .bytes()
                .zip(mac.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        if same {
            Ok(())
        } else {
            Err("wrong cluster secret".into())
        }
    }
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    use hmac::Mac;
    // HMAC accepts a key of any length; new_from_slice cannot fail for it.
    let Ok(mut mac) = hmac::Hmac::<Sha256>::new_from_slice(key) else {
        return [0; 32];
    };
    mac.update(message);
    mac.finalize().into_bytes().into()
}

/// A worker's name: 1 to 64 letters, digits, `.`, `_` or `-`.
pub fn validate_worker_name(name: &str) -> Result<(), String> {
    if (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        Ok(())
    } else {
        Err(format!(
            "invalid worker name {name:?}: use 1 to 64 letters, digits, '.', '_' or '-'"
        ))
    }
}

/// What a worker sends to join.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Registration {
    pub name: String,
    /// Random per worker process: tells a worker that restarted from one that retries.
    pub incarnation: String,
    /// Where the worker's API listens, `host:port`.
    pub address: String,
    pub capacity_mb: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Registered {
    pub worker_id: u64,
    pub heartbeat_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Heartbeat {
    pub incarnation: String,
    pub capacity_mb: u64,
    pub sandboxes: u32,
    /// What the worker keeps for SnapStart versions (absent from older workers).
    #[serde(default)]
    pub snapshots: nimbus_worker::SnapshotUse,
}

/// An error between node and worker: `{"kind","message"}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireError {
    pub kind: String,
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231_case_2() {
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            nimbus_types::hex::encode(&mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn only_the_same_secret_method_and_path_verify() {
        let a = Secret::from_text("0123456789abcdef0123").unwrap();
        let b = Secret::from_text("another-secret-of-length").unwrap();
        let header = a.sign("POST", "/x");
        assert_eq!(a.verify(Some(&header), "POST", "/x"), Ok(()));
        assert!(b.verify(Some(&header), "POST", "/x").is_err());
        assert!(a.verify(Some(&header), "POST", "/y").is_err());
        assert!(a.verify(Some(&header), "GET", "/x").is_err());
        assert!(a.verify(None, "POST", "/x").is_err());
        assert!(a.verify(Some("v1 0 00"), "POST", "/x").is_err());
        assert!(a.verify(Some("garbage"), "POST", "/x").is_err());
        assert!(Secret::from_text("short").is_err());
    }

    #[test]
    fn the_node_secret_is_created_once_and_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cluster.secret");
        let a = Secret::load_or_create(&path).unwrap();
        let b = Secret::load_or_create(&path).unwrap();
        assert_eq!(a.0, b.0);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn worker_names() {
        assert!(validate_worker_name("w-1.a_b").is_ok());
        assert!(validate_worker_name("").is_err());
        assert!(validate_worker_name("a/b").is_err());
        assert!(validate_worker_name(&"x".repeat(65)).is_err());
    }
}
