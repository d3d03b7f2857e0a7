//! Identities: the access keys requests are signed with and the accounts they act in. The
//! gateway looks a request's key up with [`Identity::key`], verifies the signature with its
//! secret (`nimbus_aws_wire::sigv4`) and learns the caller's account from it.
//!
//! The first start on an empty data directory creates an administrator key for the default
//! account and writes it, readable only by its owner, to `DATA/admin.credentials` in the
//! format of the `aws` CLI's credentials file.

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use nimbus_store::KeyStore;
use nimbus_types::identity::{AccessKey, valid_access_key_id};
use nimbus_types::name::DEFAULT_ACCOUNT;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the key store failed")]
    Store(#[from] nimbus_store::Error),
    #[error("could not write {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no randomness available: {0}")]
    Random(String),
    #[error("{0}")]
    Invalid(String),
    #[error("the key registry's lock was poisoned by a panic")]
    Poisoned,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The file the first start writes the administrator key to, in the data directory.
pub const ADMIN_CREDENTIALS: &str = "admin.credentials";

pub struct Identity {
    store: Arc<dyn KeyStore>,
    keys: RwLock<HashMap<String, AccessKey>>,
}

const ID_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const SECRET_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn random_string(prefix: &str, len: usize, alphabet: &[u8]) -> Result<String> {
    let mut bytes = vec![0u8; len];
    getrandom::fill(&mut bytes).map_err(|e| Error::Random(e.to_string()))?;
    let mut out = String::with_capacity(prefix.len() + len);
    out.push_str(prefix);
    // The alphabets have 32 and 64 letters, so taking the low bits keeps them uniform.
    out.extend(
        bytes
            .iter()
            .map(|b| alphabet[*b as usize % alphabet.len()] as char),
    );
    Ok(out)
}

impl Identity {
    pub fn load(store: Arc<dyn KeyStore>) -> Result<Self> {
        let keys = store
            .keys()?
            .into_iter()
            .map(|k| (k.access_key_id.clone(), k))
            .collect();
        Ok(Self {
            store,
            keys: RwLock::new(keys),
        })
    }

    pub fn key(&self, access_key_id: &str) -> Option<AccessKey> {
        self.keys.read().ok()?.get(access_key_id).cloned()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.read().map(|k| k.is_empty()).unwrap_or(true)
    }

    /// Stores a key with a given id and secret (an administrator key named in the
    /// configuration).
    pub fn put(&self, key: AccessKey) -> Result<()> {
        if !valid_access_key_id(&key.access_key_id) {
            return Err(Error::Invalid(format!(
                "{:?} is not an access key id: 16 to 128 of A-Z and 0-9",
                key.access_key_id
            )));
        }
        if key.secret_access_key.len() < 16 || key.secret_access_key.len() > 128 {
            return Err(Error::Invalid(
                "a secret access key must be 16 to 128 characters".into(),
            ));
        }
        self.store.put_key(&key)?;
        self.keys
            .write()
            .map_err(|_| Error::Poisoned)?
            .insert(key.access_key_id.clone(), key);
        Ok(())
    }

    /// Creates a new key for `user` of `account`.
    pub fn create_key(&self, account: &str, user: &str) -> Result<AccessKey> {
        let key = AccessKey {
            access_key_id: random_string("NKIA", 16, ID_ALPHABET)?,
            secret_access_key: random_string("", 40, SECRET_ALPHABET)?,
            account: account.to_owned(),
            user: user.to_owned(),
            created_ms: nimbus_types::time::now_ms(),
        };
        self.put(key.clone())?;
        Ok(key)
    }

    pub fn delete_key(&self, access_key_id: &str) -> Result<bool> {
        let removed = self.store.delete_key(access_key_id)?;
        self.keys
            .write()
            .map_err(|_| Error::Poisoned)?
            .remove(access_key_id);
        Ok(removed)
    }

    /// On a node without keys, creates the default account's administrator key and writes it
    /// to `DATA/admin.credentials` (mode 0600). Returns the key if it made one.
    pub fn bootstrap(&self, data_dir: &Path) -> Result<Option<AccessKey>> {
        if !self.is_empty() {
            return Ok(None);
        }
        let key = self.create_key(DEFAULT_ACCOUNT, "admin")?;
        write_credentials(&data_dir.join(ADMIN_CREDENTIALS), &key)?;
        Ok(Some(key))
    }
}

/// Writes a key as an `aws` CLI credentials file with one `[default]` profile, readable only
/// by its owner.
pub fn write_credentials(path: &Path, key: &AccessKey) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| Error::Io {
        path: path.to_owned(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    write!(
        file,
        "[default]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
        key.access_key_id, key.secret_access_key
    )
    .map_err(io)?;
    file.sync_all().map_err(io)
}

/// Reads the first profile's key from an `aws` CLI credentials file.
pub fn read_credentials(path: &Path) -> Option<(String, String)> {
    let text = std::fs::read_to_string(path).ok()?;
    let value = |name: &str| {
        text.lines().find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == name).then(|| v.trim().to_owned())
        })
    };
    Some((value("aws_access_key_id")?, value("aws_secret_access_key")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_start_makes_an_admin_key_only_its_owner_reads() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let store =
            Arc::new(nimbus_store::EmbeddedStore::open(&dir.path().join("n.redb")).unwrap());
        let identity = Identity::load(store.clone()).unwrap();
        let key = identity.bootstrap(dir.path()).unwrap().expect("a key");
        assert!(valid_access_key_id(&key.access_key_id));
        assert_eq!(key.account, DEFAULT_ACCOUNT);
        let path = dir.path().join(ADMIN_CREDENTIALS);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            read_credentials(&path),
            Some((key.access_key_id.clone(), key.secret_access_key.clone()))
        );
        // Kept across restarts, and not made again.
        let again = Identity::load(store).unwrap();
        assert_eq!(
            again.key(&key.access_key_id).map(|k| k.secret_access_key),
            Some(key.secret_access_key)
        );
        assert!(again.bootstrap(dir.path()).unwrap().is_none());
        assert!(again.delete_key(&key.access_key_id).unwrap());
        assert_eq!(
            again.key(&key.access_key_id).map(|k| k.secret_access_key),
            None
        );
    }

    #[test]
    fn configured_keys_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            Arc::new(nimbus_store::EmbeddedStore::open(&dir.path().join("n.redb")).unwrap());
        let identity = Identity::load(store).unwrap();
        let key = |id: &str, secret: &str| AccessKey {
            access_key_id: id.into(),
            secret_access_key: secret.into(),
            account: DEFAULT_ACCOUNT.into(),
            user: "admin".into(),
            created_ms: 0,
        };
        assert!(identity.put(key("short", "0123456789abcdef")).is_err());
        assert!(identity.put(key("AKIAIOSFODNN7EXAMPLE", "short")).is_err());
        assert!(
            identity
                .put(key("akiaiosfodnn7example", "0123456789abcdef"))
                .is_err()
        );
        identity
            .put(key(
                "AKIAIOSFODNN7EXAMPLE",
                "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            ))
            .unwrap();
        assert!(identity.key("AKIAIOSFODNN7EXAMPLE").is_some());
    }
}
