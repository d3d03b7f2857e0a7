//! Identities: the access keys requests are signed with, the accounts they act in, IAM's
//! users and roles with their policies, and the temporary credentials of a role's session.
//! The gateway resolves a request's key with [`Identity::resolve`], verifies the signature with
//! the secret it gets (`nimbus_aws_wire::sigv4`) and hands the [`Caller`] to the APIs, which
//! ask [`Caller::authorize`] before acting.
//!
//! The first start on an empty data directory creates an administrator key for the default
//! account and writes it, readable only by its owner, to `DATA/admin.credentials` in the
//! format of the `aws` CLI's credentials file.

#![forbid(unsafe_code)]

mod caller;
pub mod iam;
pub mod managed;
pub mod policy;
mod session;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock, RwLock};

use nimbus_store::{IamStore, KeyStore};
use nimbus_types::iam::{Role, User};
use nimbus_types::identity::{AccessKey, Account, valid_access_key_id, valid_account_name};
use nimbus_types::name::DEFAULT_ACCOUNT;

pub use caller::{Caller, Denied, Grants, InProcess, Principal};
pub use iam::IamError;
pub use session::Claims;

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
    #[error("{0}")]
    Exists(String),
    #[error("the key registry's lock was poisoned by a panic")]
    Poisoned,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The file the first start writes the administrator key to, in the data directory.
pub const ADMIN_CREDENTIALS: &str = "admin.credentials";

pub use nimbus_types::identity::SESSION_LIFETIME_S;

/// Why a request's key was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// No such access key (or it was deleted).
    UnknownKey,
    /// Temporary credentials whose token is missing, forged, expired or revoked.
    BadToken,
}

/// Tells the identity layer which role a function runs with now, so that the credentials of
/// a deleted function (or one given another role) stop working.
pub type FunctionRoles = dyn Fn(&str, &str) -> Option<String> + Send + Sync;

/// A user or role as held in memory, with its policies parsed.
struct Entry<T> {
    value: T,
    grants: Arc<[policy::Policy]>,
}

#[derive(Default)]
struct State {
    accounts: HashMap<String, Account>,
    keys: HashMap<String, AccessKey>,
    users: HashMap<(String, String), Entry<User>>,
    roles: HashMap<(String, String), Entry<Role>>,
}

pub struct Identity {
    keys_store: Arc<dyn KeyStore>,
    iam_store: Arc<dyn IamStore>,
    state: RwLock<State>,
    sessions: session::SessionKey,
    function_roles: OnceLock<Arc<FunctionRoles>>,
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
    pub fn load<S: KeyStore + IamStore + 'static>(store: Arc<S>) -> Result<Self> {
        let mut state = State {
            keys: store
                .keys()?
                .into_iter()
                .map(|k| (k.access_key_id.clone(), k))
                .collect(),
            accounts: store
                .accounts()?
                .into_iter()
                .map(|a| (a.id.clone(), a))
                .collect(),
            ..State::default()
        };
        for user in store.users()? {
            let grants = iam::compile(user.policies.values(), &[]);
            state.users.insert(
                (user.account.clone(), user.name.clone()),
                Entry {
                    value: user,
                    grants,
                },
            );
        }
        for role in store.roles()? {
            let grants = iam::compile(role.policies.values(), &role.attached);
            state.roles.insert(
                (role.account.clone(), role.name.clone()),
                Entry {
                    value: role,
                    grants,
                },
            );
        }
        let secret = store.secret("session-tokens", &|| {
            let mut bytes = vec![0u8; 32];
            // Without randomness the node cannot start safely; an all-zero key is never
            // stored because getrandom only fails where the OS has no entropy source at all.
            getrandom::fill(&mut bytes).expect("the OS has no source of randomness");
            bytes
        })?;
        Ok(Self {
            keys_store: store.clone(),
            iam_store: store,
            state: RwLock::new(state),
            sessions: session::SessionKey::new(secret),
            function_roles: OnceLock::new(),
        })
    }

    /// Gives the identity layer the way to learn a function's current role (set once, when
    /// the control plane exists).
    pub fn set_function_roles(&self, roles: Arc<FunctionRoles>) {
        let _ = self.function_roles.set(roles);
    }

    pub fn key(&self, access_key_id: &str) -> Option<AccessKey> {
        self.state.read().ok()?.keys.get(access_key_id).cloned()
    }

    pub fn is_empty(&self) -> bool {
        self.state.read().map(|s| s.keys.is_empty()).unwrap_or(true)
    }

    /// The secret a request signed with `access_key_id` must be signed with, and who its
    /// caller is. `token` is the request's `X-Amz-Security-Token`.
    pub fn resolve(
        &self,
        access_key_id: &str,
        token: Option<&str>,
        now_s: i64,
    ) -> Result<(String, Caller), Refused> {
        let state = self.state.read().map_err(|_| Refused::UnknownKey)?;
        if let Some(key) = state.keys.get(access_key_id) {
            if token.is_some() {
                // A long-lived key with a session token is a client mixing credentials up.
                return Err(Refused::BadToken);
            }
            let caller = if key.root {
                Caller {
                    access_key_id: key.access_key_id.clone(),
                    ..Caller::root(&key.account)
                }
            } else {
                let entry = state
                    .users
                    .get(&(key.account.clone(), key.user.clone()))
                    .ok_or(Refused::UnknownKey)?;
                Caller {
                    account: key.account.clone(),
                    access_key_id: key.access_key_id.clone(),
                    principal: Principal::User {
                        name: entry.value.name.clone(),
                        path: entry.value.path.clone(),
                    },
                    grants: Grants::Policies(entry.grants.clone()),
                }
            };
            return Ok((key.secret_access_key.clone(), caller));
        }
        if !access_key_id.starts_with("ASIA") {
            return Err(Refused::UnknownKey);
        }
        let token = token.ok_or(Refused::BadToken)?;
        let (claims, secret) = self
            .sessions
            .open(access_key_id, token, now_s)
            .ok_or(Refused::BadToken)?;
        let role = state
            .roles
            .get(&(claims.account.clone(), claims.role.clone()))
            .filter(|r| r.value.role_id == claims.role_id)
            .ok_or(Refused::BadToken)?;
        if let Some(roles) = self.function_roles.get()
            && roles(&claims.account, &claims.function).as_deref() != Some(&role.value.arn())
        {
            return Err(Refused::BadToken);
        }
        let caller = Caller {
            account: claims.account.clone(),
            access_key_id: access_key_id.to_owned(),
            principal: Principal::Role {
                name: claims.role.clone(),
                session: claims.function.clone(),
            },
            grants: Grants::Policies(role.grants.clone()),
        };
        Ok((secret, caller))
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
        self.keys_store.put_key(&key)?;
        self.state
            .write()
            .map_err(|_| Error::Poisoned)?
            .keys
            .insert(key.access_key_id.clone(), key);
        Ok(())
    }

    /// Creates a new administrator (root) key for `account`.
    pub fn create_key(&self, account: &str) -> Result<AccessKey> {
        let key = AccessKey {
            access_key_id: random_string("NKIA", 16, ID_ALPHABET)?,
            secret_access_key: random_string("", 40, SECRET_ALPHABET)?,
            account: account.to_owned(),
            user: "admin".to_owned(),
            root: true,
            created_ms: nimbus_types::time::now_ms(),
        };
        self.put(key.clone())?;
        Ok(key)
    }

    pub fn delete_key(&self, access_key_id: &str) -> Result<bool> {
        let removed = self.keys_store.delete_key(access_key_id)?;
        self.state
            .write()
            .map_err(|_| Error::Poisoned)?
            .keys
            .remove(access_key_id);
        Ok(removed)
    }

    /// Every account, the default one (which always exists: the node's operator's) first, the
    /// others by name.
    pub fn accounts(&self) -> Vec<Account> {
        let mut out: Vec<Account> = self
            .state
            .read()
            .map(|s| s.accounts.values().cloned().collect())
            .unwrap_or_default();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out.insert(
            0,
            Account {
                id: DEFAULT_ACCOUNT.to_owned(),
                name: "default".to_owned(),
                created_ms: 0,
            },
        );
        out
    }

    /// Creates an account with a new 12-digit id and its administrator (root) key.
    pub fn create_account(&self, name: &str) -> Result<(Account, AccessKey)> {
        if !valid_account_name(name) || name == "default" {
            return Err(Error::Invalid(format!(
                "{name:?} cannot name an account: 1 to 50 of A-Z, a-z, 0-9, - and _, not \"default\""
            )));
        }
        let account = {
            let state = self.state.read().map_err(|_| Error::Poisoned)?;
            if state.accounts.values().any(|a| a.name == name) {
                return Err(Error::Exists(format!("an account named {name} exists")));
            }
            let id = loop {
                let mut bytes = [0u8; 8];
                getrandom::fill(&mut bytes).map_err(|e| Error::Random(e.to_string()))?;
                let id = format!("{:012}", u64::from_le_bytes(bytes) % 1_000_000_000_000);
                if id != DEFAULT_ACCOUNT && !state.accounts.contains_key(&id) {
                    break id;
                }
            };
            Account {
                id,
                name: name.to_owned(),
                created_ms: nimbus_types::time::now_ms(),
            }
        };
        self.iam_store.put_account(&account)?;
        self.state
            .write()
            .map_err(|_| Error::Poisoned)?
            .accounts
            .insert(account.id.clone(), account.clone());
        let key = self.create_key(&account.id)?;
        Ok((account, key))
    }

    /// On a node without keys, creates the default account's administrator key and writes it
    /// to `DATA/admin.credentials` (mode 0600). Returns the key if it made one.
    pub fn bootstrap(&self, data_dir: &Path) -> Result<Option<AccessKey>> {
        if !self.is_empty() {
            return Ok(None);
        }
        let key = self.create_key(DEFAULT_ACCOUNT)?;
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
            root: true,
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
