//! User pools: an application's own users, their passwords, groups and sign-in sessions, and
//! the keys their tokens are signed with — what Cognito's user pools keep.
//!
//! One redb file (`DATA/userpools/userpools.redb`, readable by the node's user only, as it
//! holds the pools' private keys) written through the shared group committer. Pools and their
//! app clients are also kept in memory (every sign-in reads them); users are read from the
//! file. A user is found by its username or by an alias: the value of a pool's username or
//! alias attribute (`email:…`, `phone_number:…`, `preferred_username:…`) and its `sub`.
//!
//! The protocol (`nimbus-api-cognito`) runs the flows: it checks input, hashes passwords
//! ([`password`]), runs triggers and mints tokens ([`tokens`]); every change to a record is
//! made here, inside one transaction that reads what it changes.

#![forbid(unsafe_code)]

pub mod model;
pub mod password;
pub mod srp;
pub mod tokens;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, RwLock};

use base64::Engine;
use redb::{Database, ReadableTable, Table, TableDefinition, WriteTransaction};
use sha2::Digest;

use model::{Client, Group, Pool, Session, User};

const POOLS: TableDefinition<&str, &[u8]> = TableDefinition::new("pools");
const CLIENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("clients");
/// (pool, canonical username) → user.
const USERS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("users");
/// (pool, `attribute:value`) → canonical username.
const ALIASES: TableDefinition<(&str, &str), &str> = TableDefinition::new("aliases");
const GROUPS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("groups");
/// origin_jti → refresh session.
const SESSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("sessions");
/// (pool, canonical username, origin_jti): a user's sessions.
const USER_SESSIONS: TableDefinition<(&str, &str, &str), ()> =
    TableDefinition::new("user_sessions");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// What went wrong, as Cognito names it; the protocol crate gives each its exception.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    ResourceNotFound,
    UserNotFound,
    UsernameExists,
    AliasExists,
    GroupExists,
    InvalidParameter,
    InvalidPassword,
    CodeMismatch,
    ExpiredCode,
    NotAuthorized,
    UserNotConfirmed,
    PasswordResetRequired,
    TooManyRequests,
    TooManyFailedAttempts,
    LimitExceeded,
    UserLambdaValidation,
    Storage,
}

/// A refusal or failure, with the message the client sees.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    pub kind: Kind,
    pub message: String,
}

impl Error {
    pub fn new(kind: Kind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    pub fn storage(message: impl Into<String>) -> Self {
        Self::new(Kind::Storage, message)
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(Kind::InvalidParameter, message)
    }
}

nimbus_store::redb_errors_into!(Error);

impl nimbus_store::commit::CommitError for Error {
    fn storage(message: String) -> Self {
        Error::storage(message)
    }

    fn poisons(&self) -> bool {
        self.kind == Kind::Storage
    }
}

/// Fills `buf` from the operating system's generator.
pub fn random_bytes(buf: &mut [u8]) {
    use rand_core::RngCore;
    rand_core::OsRng.fill_bytes(buf);
}

/// Whether two byte strings are equal, compared without an early exit.
pub fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `len` random characters from `alphabet`.
pub fn random_string(alphabet: &[u8], len: usize) -> String {
    let mut bytes = vec![0u8; len];
    random_bytes(&mut bytes);
    bytes
        .iter()
        .map(|b| alphabet[*b as usize % alphabet.len()] as char)
        .collect()
}

fn now_ms() -> i64 {
    nimbus_types::time::now_ms()
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(bytes).map_err(|e| Error::storage(format!("a damaged record: {e}")))
}

fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, Error> {
    serde_json::to_vec(value).map_err(|e| Error::storage(e.to_string()))
}

struct Tables<'t> {
    pools: Table<'t, &'static str, &'static [u8]>,
    clients: Table<'t, &'static str, &'static [u8]>,
    users: Table<'t, (&'static str, &'static str), &'static [u8]>,
    aliases: Table<'t, (&'static str, &'static str), &'static str>,
    groups: Table<'t, (&'static str, &'static str), &'static [u8]>,
    sessions: Table<'t, &'static str, &'static [u8]>,
    user_sessions: Table<'t, (&'static str, &'static str, &'static str), ()>,
}

struct Schema;

impl nimbus_store::commit::Schema for Schema {
    type Tables<'t> = Tables<'t>;
    type Error = Error;

    fn open(txn: &WriteTransaction) -> Result<Tables<'_>, redb::TableError> {
        Ok(Tables {
            pools: txn.open_table(POOLS)?,
            clients: txn.open_table(CLIENTS)?,
            users: txn.open_table(USERS)?,
            aliases: txn.open_table(ALIASES)?,
            groups: txn.open_table(GROUPS)?,
            sessions: txn.open_table(SESSIONS)?,
            user_sessions: txn.open_table(USER_SESSIONS)?,
        })
    }
}

/// Whether a pool's usernames are compared without case, and so stored lower-cased.
fn canonical(pool: &Pool, username: &str) -> String {
    if pool.settings.case_sensitive {
        username.to_owned()
    } else {
        username.to_lowercase()
    }
}

/// The alias keys a user is found by: its `sub`, and the values of the pool's username
/// attributes (always) and alias attributes (once verified).
fn alias_keys(pool: &Pool, user: &User) -> Vec<String> {
    let mut keys = vec![format!("sub:{}", user.sub())];
    for attr in &pool.settings.username_attributes {
        if let Some(v) = user.attribute(attr) {
            keys.push(alias_key(attr, v));
        }
    }
    for attr in &pool.settings.alias_attributes {
        if user.status == model::Status::Confirmed
            && (attr == "preferred_username" || user.verified(attr))
            && let Some(v) = user.attribute(attr)
        {
            keys.push(alias_key(attr, v));
        }
    }
    keys.sort();
    keys.dedup();
    keys
}

/// `attribute:value`, with e-mail addresses and preferred usernames compared without case.
pub fn alias_key(attribute: &str, value: &str) -> String {
    match attribute {
        "email" | "preferred_username" => format!("{attribute}:{}", value.to_lowercase()),
        _ => format!("{attribute}:{value}"),
    }
}

/// A refresh token: `origin_jti` (a UUID) and a secret, base64url; the store keeps only the
/// secret's hash.
fn refresh_token(jti: &str, secret: &[u8; 32]) -> String {
    let mut raw = jti.as_bytes().to_vec();
    raw.push(b'.');
    raw.extend_from_slice(secret);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

fn secret_hash(secret: &[u8]) -> String {
    sha2::Sha256::digest(secret)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The store.
pub struct UserPools {
    db: Arc<Database>,
    committer: nimbus_store::commit::Committer<Schema>,
    region: String,
    pools: RwLock<HashMap<String, Arc<Pool>>>,
    clients: RwLock<HashMap<String, Arc<Client>>>,
    /// The node's secret for challenge sessions (made once, kept in the file).
    secret: [u8; 32],
    pub signer: tokens::Signer,
}

impl UserPools {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path, region: &str) -> Result<Self, Error> {
        std::fs::create_dir_all(dir).map_err(|e| Error::storage(e.to_string()))?;
        restrict(dir, 0o700)?;
        let file = dir.join("userpools.redb");
        let db = Database::create(&file)?;
        restrict(&file, 0o600)?;
        let db = Arc::new(db);
        let txn = db.begin_write()?;
        let secret = {
            // Create every table, so that readers never find one missing.
            let _ = txn.open_table(POOLS)?;
            let _ = txn.open_table(CLIENTS)?;
            let _ = txn.open_table(USERS)?;
            let _ = txn.open_table(ALIASES)?;
            let _ = txn.open_table(GROUPS)?;
            let _ = txn.open_table(SESSIONS)?;
            let _ = txn.open_table(USER_SESSIONS)?;
            let mut meta = txn.open_table(META)?;
            let existing = meta.get("secret")?.map(|v| v.value().to_vec());
            let secret = match existing {
                Some(s) if s.len() == 32 => s,
                _ => {
                    let mut s = vec![0u8; 32];
                    random_bytes(&mut s);
                    meta.insert("secret", s.as_slice())?;
                    s
                }
            };
            let mut out = [0u8; 32];
            out.copy_from_slice(&secret);
            out
        };
        txn.commit()?;
        let (mut pools, mut clients) = (HashMap::new(), HashMap::new());
        {
            let read = db.begin_read()?;
            for entry in read.open_table(POOLS)?.iter()? {
                let (k, v) = entry?;
                pools.insert(k.value().to_owned(), Arc::new(decode::<Pool>(v.value())?));
            }
            for entry in read.open_table(CLIENTS)?.iter()? {
                let (k, v) = entry?;
                clients.insert(k.value().to_owned(), Arc::new(decode::<Client>(v.value())?));
            }
        }
        Ok(Self {
            committer: nimbus_store::commit::Committer::start(db.clone(), "nimbus-userpools"),
            db,
            region: region.to_owned(),
            pools: RwLock::new(pools),
            clients: RwLock::new(clients),
            secret,
            signer: tokens::Signer::default(),
        })
    }

    pub fn region(&self) -> &str {
        &self.region
    }

    /// The node's secret for signing challenge sessions.
    pub fn session_secret(&self) -> &[u8; 32] {
        &self.secret
    }

    /// Stops the committer.
    pub fn close(&self) {
        self.committer.stop();
    }

    // ---- pools ----

    pub fn pool(&self, id: &str) -> Option<Arc<Pool>> {
        self.pools.read().ok()?.get(id).cloned()
    }

    /// The pool `id` if it belongs to `account`.
    pub fn pool_of(&self, account: &str, id: &str) -> Result<Arc<Pool>, Error> {
        self.pool(id)
            .filter(|p| p.account == account)
            .ok_or_else(|| {
                Error::new(
                    Kind::ResourceNotFound,
                    format!("User pool {id} does not exist."),
                )
            })
    }

    /// An account's pools, oldest first.
    pub fn pools(&self, account: &str) -> Vec<Arc<Pool>> {
        let mut out: Vec<Arc<Pool>> = self
            .pools
            .read()
            .map(|p| {
                p.values()
                    .filter(|p| p.account == account)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        out.sort_by(|a, b| (a.created_ms, &a.id).cmp(&(b.created_ms, &b.id)));
        out
    }

    fn cache_pool(&self, pool: Option<Pool>, id: &str) {
        if let Ok(mut pools) = self.pools.write() {
            match pool {
                Some(p) => pools.insert(id.to_owned(), Arc::new(p)),
                None => pools.remove(id),
            };
        }
    }

    /// Makes a pool with a fresh signing key.
    pub async fn create_pool(
        &self,
        account: &str,
        name: &str,
        settings: model::PoolSettings,
    ) -> Result<Arc<Pool>, Error> {
        let now = now_ms();
        let key = tokio::task::spawn_blocking(move || tokens::generate(now))
            .await
            .map_err(|e| Error::storage(e.to_string()))??;
        let id = format!(
            "{}_{}",
            self.region,
            random_string(
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
                9
            )
        );
        let pool = Pool {
            id: id.clone(),
            account: account.to_owned(),
            name: name.to_owned(),
            created_ms: now,
            modified_ms: now,
            settings,
            keys: vec![key],
        };
        let bytes = encode(&pool)?;
        let key = id.clone();
        self.committer
            .write(move |t| {
                if t.pools.get(key.as_str())?.is_some() {
                    return Err(Error::storage("a pool id collided"));
                }
                t.pools.insert(key.as_str(), bytes.as_slice())?;
                Ok(())
            })
            .await?;
        self.cache_pool(Some(pool.clone()), &id);
        Ok(Arc::new(pool))
    }

    /// Changes a pool's record with `change`, inside the transaction.
    pub async fn modify_pool(
        &self,
        id: &str,
        change: impl FnOnce(&mut Pool) -> Result<(), Error> + Send + 'static,
    ) -> Result<Arc<Pool>, Error> {
        let key = id.to_owned();
        let pool = self
            .committer
            .write(move |t| {
                let mut pool: Pool = match t.pools.get(key.as_str())? {
                    Some(v) => decode(v.value())?,
                    None => {
                        return Err(Error::new(
                            Kind::ResourceNotFound,
                            format!("User pool {key} does not exist."),
                        ));
                    }
                };
                change(&mut pool)?;
                pool.modified_ms = now_ms();
                t.pools.insert(key.as_str(), encode(&pool)?.as_slice())?;
                Ok(pool)
            })
            .await?;
        self.cache_pool(Some(pool.clone()), id);
        Ok(Arc::new(pool))
    }

    /// Replaces the pool's signing key: the new one signs from now on; the old one stays
    /// published for a day (the longest an ID or access token lasts), then goes.
    pub async fn rotate_key(&self, id: &str) -> Result<Arc<Pool>, Error> {
        let now = now_ms();
        let key = tokio::task::spawn_blocking(move || tokens::generate(now))
            .await
            .map_err(|e| Error::storage(e.to_string()))??;
        self.modify_pool(id, move |pool| {
            pool.keys
                .retain(|k| k.retired_ms.is_none_or(|r| now - r < 86_400_000));
            for k in &mut pool.keys {
                k.retired_ms.get_or_insert(now);
            }
            pool.keys.push(key);
            Ok(())
        })
        .await
    }

    /// Deletes a pool with its clients, users, groups and sessions.
    pub async fn delete_pool(&self, id: &str) -> Result<(), Error> {
        let key = id.to_owned();
        let clients: Vec<String> = self
            .clients
            .read()
            .map(|c| {
                c.values()
                    .filter(|c| c.pool_id == id)
                    .map(|c| c.id.clone())
                    .collect()
            })
            .unwrap_or_default();
        let gone = clients.clone();
        self.committer
            .write(move |t| {
                if t.pools.remove(key.as_str())?.is_none() {
                    return Err(Error::new(
                        Kind::ResourceNotFound,
                        format!("User pool {key} does not exist."),
                    ));
                }
                for c in &gone {
                    t.clients.remove(c.as_str())?;
                }
                let range = (key.as_str(), "")..(key.as_str(), "\u{10FFFF}");
                t.users.retain_in(range.clone(), |_, _| false)?;
                t.aliases.retain_in(range.clone(), |_, _| false)?;
                t.groups.retain_in(range, |_, _| false)?;
                let mut jtis = Vec::new();
                for entry in t
                    .user_sessions
                    .range((key.as_str(), "", "")..(key.as_str(), "\u{10FFFF}", ""))?
                {
                    let (k, _) = entry?;
                    jtis.push(k.value().2.to_owned());
                }
                for jti in &jtis {
                    t.sessions.remove(jti.as_str())?;
                }
                t.user_sessions.retain_in(
                    (key.as_str(), "", "")..(key.as_str(), "\u{10FFFF}", ""),
                    |_, _| false,
                )?;
                Ok(())
            })
            .await?;
        self.cache_pool(None, id);
        if let Ok(mut c) = self.clients.write() {
            for id in clients {
                c.remove(&id);
            }
        }
        Ok(())
    }

    /// How many users a pool has.
    pub fn user_count(&self, pool_id: &str) -> Result<u64, Error> {
        let read = self.db.begin_read()?;
        let users = read.open_table(USERS)?;
        let mut n = 0;
        for entry in users.range((pool_id, "")..(pool_id, "\u{10FFFF}"))? {
            entry?;
            n += 1;
        }
        Ok(n)
    }

    // ---- clients ----

    pub fn client(&self, id: &str) -> Option<Arc<Client>> {
        self.clients.read().ok()?.get(id).cloned()
    }

    /// A pool's clients, by name.
    pub fn clients(&self, pool_id: &str) -> Vec<Arc<Client>> {
        let mut out: Vec<Arc<Client>> = self
            .clients
            .read()
            .map(|c| {
                c.values()
                    .filter(|c| c.pool_id == pool_id)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        out.sort_by(|a, b| (a.created_ms, &a.id).cmp(&(b.created_ms, &b.id)));
        out
    }

    /// Stores a client (new or changed).
    pub async fn put_client(&self, client: Client) -> Result<Arc<Client>, Error> {
        let bytes = encode(&client)?;
        let (id, pool) = (client.id.clone(), client.pool_id.clone());
        self.committer
            .write(move |t| {
                if t.pools.get(pool.as_str())?.is_none() {
                    return Err(Error::new(
                        Kind::ResourceNotFound,
                        format!("User pool {pool} does not exist."),
                    ));
                }
                t.clients.insert(id.as_str(), bytes.as_slice())?;
                Ok(())
            })
            .await?;
        let client = Arc::new(client);
        if let Ok(mut c) = self.clients.write() {
            c.insert(client.id.clone(), client.clone());
        }
        Ok(client)
    }

    pub async fn delete_client(&self, id: &str) -> Result<(), Error> {
        let key = id.to_owned();
        self.committer
            .write(move |t| {
                t.clients.remove(key.as_str())?;
                Ok(())
            })
            .await?;
        if let Ok(mut c) = self.clients.write() {
            c.remove(id);
        }
        Ok(())
    }

    // ---- users ----

    /// A user by username, alias or `sub`.
    pub fn user(&self, pool: &Pool, name: &str) -> Result<Option<User>, Error> {
        let read = self.db.begin_read()?;
        let users = read.open_table(USERS)?;
        let canon = canonical(pool, name);
        if let Some(v) = users.get((pool.id.as_str(), canon.as_str()))? {
            return Ok(Some(decode(v.value())?));
        }
        let aliases = read.open_table(ALIASES)?;
        for attr in ["email", "phone_number", "preferred_username", "sub"] {
            let key = alias_key(attr, name);
            if let Some(owner) = aliases.get((pool.id.as_str(), key.as_str()))? {
                let owner = owner.value().to_owned();
                if let Some(v) = users.get((pool.id.as_str(), owner.as_str()))? {
                    return Ok(Some(decode(v.value())?));
                }
            }
        }
        Ok(None)
    }

    /// Adds a new user. Fails with `UsernameExists` if the username, or a value of a username
    /// attribute, is taken.
    pub async fn create_user(&self, pool: &Pool, user: User) -> Result<User, Error> {
        let pool = pool.clone();
        self.committer
            .write(move |t| {
                let canon = canonical(&pool, &user.username);
                if t.users.get((pool.id.as_str(), canon.as_str()))?.is_some() {
                    return Err(Error::new(Kind::UsernameExists, "User already exists"));
                }
                let keys = alias_keys(&pool, &user);
                for k in &keys {
                    if t.aliases.get((pool.id.as_str(), k.as_str()))?.is_some() {
                        let attr = k.split(':').next().unwrap_or("alias");
                        return Err(Error::new(
                            Kind::UsernameExists,
                            format!("An account with the given {attr} already exists."),
                        ));
                    }
                }
                t.users.insert(
                    (pool.id.as_str(), canon.as_str()),
                    encode(&user)?.as_slice(),
                )?;
                for k in &keys {
                    t.aliases
                        .insert((pool.id.as_str(), k.as_str()), canon.as_str())?;
                }
                Ok(user)
            })
            .await
    }

    /// Changes a user inside one transaction: `change` gets the user as stored (found by
    /// username, alias or sub) and decides; its aliases follow its attributes (a value another
    /// user holds is refused with `AliasExists`).
    pub async fn update_user<T: Send + 'static>(
        &self,
        pool: &Pool,
        name: &str,
        change: impl FnOnce(&mut User) -> Result<T, Error> + Send + 'static,
    ) -> Result<(T, User), Error> {
        let pool = pool.clone();
        let name = name.to_owned();
        let found = self.user(&pool, &name)?;
        let Some(found) = found else {
            return Err(Error::new(Kind::UserNotFound, "User does not exist."));
        };
        let canon = canonical(&pool, &found.username);
        self.committer
            .write(move |t| {
                let mut user: User = match t.users.get((pool.id.as_str(), canon.as_str()))? {
                    Some(v) => decode(v.value())?,
                    None => return Err(Error::new(Kind::UserNotFound, "User does not exist.")),
                };
                let before = alias_keys(&pool, &user);
                let out = change(&mut user)?;
                user.modified_ms = now_ms();
                let after = alias_keys(&pool, &user);
                for k in after.iter().filter(|k| !before.contains(k)) {
                    if let Some(owner) = t.aliases.get((pool.id.as_str(), k.as_str()))?
                        && owner.value() != canon
                    {
                        return Err(Error::new(
                            Kind::AliasExists,
                            "An account with the given email already exists.",
                        ));
                    }
                }
                for k in before.iter().filter(|k| !after.contains(k)) {
                    t.aliases.remove((pool.id.as_str(), k.as_str()))?;
                }
                for k in after.iter().filter(|k| !before.contains(k)) {
                    t.aliases
                        .insert((pool.id.as_str(), k.as_str()), canon.as_str())?;
                }
                t.users.insert(
                    (pool.id.as_str(), canon.as_str()),
                    encode(&user)?.as_slice(),
                )?;
                Ok((out, user))
            })
            .await
    }

    /// Deletes a user with its aliases and sessions.
    pub async fn delete_user(&self, pool: &Pool, name: &str) -> Result<User, Error> {
        let Some(found) = self.user(pool, name)? else {
            return Err(Error::new(Kind::UserNotFound, "User does not exist."));
        };
        let pool = pool.clone();
        let canon = canonical(&pool, &found.username);
        self.committer
            .write(move |t| {
                // The user as it is now, not as it was read above: its aliases may have
                // changed since, and only those it still owns are its to remove.
                let user: User = match t.users.get((pool.id.as_str(), canon.as_str()))? {
                    Some(v) => decode(v.value())?,
                    None => return Err(Error::new(Kind::UserNotFound, "User does not exist.")),
                };
                let mut owned = Vec::new();
                for k in alias_keys(&pool, &user) {
                    if t.aliases
                        .get((pool.id.as_str(), k.as_str()))?
                        .is_some_and(|owner| owner.value() == canon)
                    {
                        owned.push(k);
                    }
                }
                t.users.remove((pool.id.as_str(), canon.as_str()))?;
                for k in owned {
                    t.aliases.remove((pool.id.as_str(), k.as_str()))?;
                }
                drop_sessions(t, &pool.id, &canon)?;
                Ok(user)
            })
            .await
    }

    /// A page of a pool's users in username order, after `after`, of those `keep` accepts.
    pub fn list_users(
        &self,
        pool: &Pool,
        after: Option<&str>,
        limit: usize,
        mut keep: impl FnMut(&User) -> bool,
    ) -> Result<(Vec<User>, Option<String>), Error> {
        let read = self.db.begin_read()?;
        let users = read.open_table(USERS)?;
        let start = after.unwrap_or("");
        let mut out = Vec::new();
        for entry in users.range((pool.id.as_str(), start)..(pool.id.as_str(), "\u{10FFFF}"))? {
            let (k, v) = entry?;
            if after.is_some_and(|a| k.value().1 == a) {
                continue;
            }
            let user: User = decode(v.value())?;
            if !keep(&user) {
                continue;
            }
            if out.len() == limit {
                let last: &User = &out[limit - 1];
                return Ok((out.clone(), Some(canonical(pool, &last.username))));
            }
            out.push(user);
        }
        Ok((out, None))
    }

    // ---- groups ----

    pub fn group(&self, pool_id: &str, name: &str) -> Result<Option<Group>, Error> {
        let read = self.db.begin_read()?;
        let groups = read.open_table(GROUPS)?;
        groups
            .get((pool_id, name))?
            .map(|v| decode(v.value()))
            .transpose()
    }

    pub fn groups(&self, pool_id: &str) -> Result<Vec<Group>, Error> {
        let read = self.db.begin_read()?;
        let groups = read.open_table(GROUPS)?;
        let mut out = Vec::new();
        for entry in groups.range((pool_id, "")..(pool_id, "\u{10FFFF}"))? {
            out.push(decode(entry?.1.value())?);
        }
        Ok(out)
    }

    /// Stores a group: `create` refuses an existing name, otherwise it must exist.
    pub async fn put_group(
        &self,
        pool_id: &str,
        group: Group,
        create: bool,
    ) -> Result<Group, Error> {
        let pool = pool_id.to_owned();
        self.committer
            .write(move |t| {
                let exists = t
                    .groups
                    .get((pool.as_str(), group.name.as_str()))?
                    .is_some();
                if create && exists {
                    return Err(Error::new(
                        Kind::GroupExists,
                        "A group with the name already exists.",
                    ));
                }
                if !create && !exists {
                    return Err(Error::new(Kind::ResourceNotFound, "Group not found."));
                }
                t.groups.insert(
                    (pool.as_str(), group.name.as_str()),
                    encode(&group)?.as_slice(),
                )?;
                Ok(group)
            })
            .await
    }

    /// Deletes a group and takes every member out of it.
    pub async fn delete_group(&self, pool: &Pool, name: &str) -> Result<(), Error> {
        let pool = pool.clone();
        let name = name.to_owned();
        self.committer
            .write(move |t| {
                if t.groups
                    .remove((pool.id.as_str(), name.as_str()))?
                    .is_none()
                {
                    return Err(Error::new(Kind::ResourceNotFound, "Group not found."));
                }
                let mut members = Vec::new();
                for entry in t
                    .users
                    .range((pool.id.as_str(), "")..(pool.id.as_str(), "\u{10FFFF}"))?
                {
                    let (k, v) = entry?;
                    let user: User = decode(v.value())?;
                    if user.groups.contains(&name) {
                        members.push((k.value().1.to_owned(), user));
                    }
                }
                for (canon, mut user) in members {
                    user.groups.remove(&name);
                    t.users.insert(
                        (pool.id.as_str(), canon.as_str()),
                        encode(&user)?.as_slice(),
                    )?;
                }
                Ok(())
            })
            .await
    }

    /// Puts a user in a group (`add`) or takes it out; the group must exist.
    pub async fn membership(
        &self,
        pool: &Pool,
        username: &str,
        group: &str,
        add: bool,
    ) -> Result<(), Error> {
        if self.group(&pool.id, group)?.is_none() {
            return Err(Error::new(Kind::ResourceNotFound, "Group not found."));
        }
        let group = group.to_owned();
        self.update_user(pool, username, move |u| {
            if add {
                u.groups.insert(group);
            } else {
                u.groups.remove(&group);
            }
            Ok(())
        })
        .await
        .map(|_| ())
    }

    // ---- refresh sessions ----

    /// Records a sign-in's refresh session and returns its refresh token.
    pub async fn open_session(
        &self,
        pool: &Pool,
        client: &Client,
        user: &User,
        jti: &str,
        auth_time: i64,
    ) -> Result<String, Error> {
        let mut secret = [0u8; 32];
        random_bytes(&mut secret);
        let now = now_ms();
        let session = Session {
            pool_id: pool.id.clone(),
            client_id: client.id.clone(),
            username: canonical(pool, &user.username),
            sub: user.sub().to_owned(),
            hash: secret_hash(&secret),
            issued_ms: now,
            expires_ms: now + (client.validity.refresh_s as i64) * 1000,
            auth_time,
        };
        let bytes = encode(&session)?;
        let key = jti.to_owned();
        self.committer
            .write(move |t| {
                t.sessions.insert(key.as_str(), bytes.as_slice())?;
                t.user_sessions.insert(
                    (
                        session.pool_id.as_str(),
                        session.username.as_str(),
                        key.as_str(),
                    ),
                    (),
                )?;
                Ok(())
            })
            .await?;
        Ok(refresh_token(jti, &secret))
    }

    /// The session a refresh token belongs to, with its `origin_jti`, if the token is genuine
    /// and the session not revoked; `None` otherwise (expiry is the caller's to check).
    pub fn session(&self, token: &str) -> Result<Option<(String, Session)>, Error> {
        let Ok(raw) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token.trim()) else {
            return Ok(None);
        };
        if raw.len() != 36 + 1 + 32 || raw[36] != b'.' {
            return Ok(None);
        }
        let Ok(jti) = std::str::from_utf8(&raw[..36]) else {
            return Ok(None);
        };
        let Some(session) = self.session_by_jti(jti)? else {
            return Ok(None);
        };
        let given = secret_hash(&raw[37..]);
        let same = same_bytes(given.as_bytes(), session.hash.as_bytes());
        Ok(same.then(|| (jti.to_owned(), session)))
    }

    /// A live session by its `origin_jti`.
    pub fn session_by_jti(&self, jti: &str) -> Result<Option<Session>, Error> {
        let read = self.db.begin_read()?;
        let sessions = read.open_table(SESSIONS)?;
        sessions.get(jti)?.map(|v| decode(v.value())).transpose()
    }

    /// Ends one session (RevokeToken).
    pub async fn end_session(&self, jti: &str) -> Result<(), Error> {
        let key = jti.to_owned();
        self.committer
            .write(move |t| {
                let removed = t
                    .sessions
                    .remove(key.as_str())?
                    .map(|v| decode::<Session>(v.value()))
                    .transpose()?;
                if let Some(s) = removed {
                    t.user_sessions.remove((
                        s.pool_id.as_str(),
                        s.username.as_str(),
                        key.as_str(),
                    ))?;
                }
                Ok(())
            })
            .await
    }

    /// Ends every session of a user (GlobalSignOut).
    pub async fn end_sessions(&self, pool: &Pool, username: &str) -> Result<(), Error> {
        let pool_id = pool.id.clone();
        let canon = canonical(pool, username);
        self.committer
            .write(move |t| drop_sessions(t, &pool_id, &canon))
            .await
    }

    /// Removes sessions past their expiry; returns how many went.
    pub async fn sweep(&self) -> Result<usize, Error> {
        let now = now_ms();
        let expired: Vec<(String, Session)> = {
            let read = self.db.begin_read()?;
            let sessions = read.open_table(SESSIONS)?;
            let mut out = Vec::new();
            for entry in sessions.iter()? {
                let (k, v) = entry?;
                let s: Session = decode(v.value())?;
                if s.expires_ms <= now {
                    out.push((k.value().to_owned(), s));
                }
                if out.len() >= 10_000 {
                    break;
                }
            }
            out
        };
        if expired.is_empty() {
            return Ok(0);
        }
        let n = expired.len();
        self.committer
            .write(move |t| {
                for (jti, s) in &expired {
                    t.sessions.remove(jti.as_str())?;
                    t.user_sessions.remove((
                        s.pool_id.as_str(),
                        s.username.as_str(),
                        jti.as_str(),
                    ))?;
                }
                Ok(())
            })
            .await?;
        Ok(n)
    }
}

fn drop_sessions(t: &mut Tables<'_>, pool_id: &str, canon: &str) -> Result<(), Error> {
    let mut jtis = Vec::new();
    for entry in t
        .user_sessions
        .range((pool_id, canon, "")..(pool_id, canon, "\u{10FFFF}"))?
    {
        jtis.push(entry?.0.value().2.to_owned());
    }
    for jti in &jtis {
        t.sessions.remove(jti.as_str())?;
        t.user_sessions.remove((pool_id, canon, jti.as_str()))?;
    }
    Ok(())
}

/// Makes a file or directory readable by the node's user only.
fn restrict(path: &Path, mode: u32) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| Error::storage(format!("{}: {e}", path.display())))
}

#[cfg(test)]
mod tests;
