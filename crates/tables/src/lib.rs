//! The table store: DynamoDB's tables and items, without the wire.
//!
//! Layout: one redb file, `tables.redb`. `tables` holds each table's record by (account,
//! name); `items` holds every item by (table id, partition key bytes, sort key bytes), the
//! key bytes ordered as DynamoDB orders key values ([`value::Value::key_bytes`]), so a Query
//! is a range scan of one partition and a table's items are contiguous. Items are stored in a
//! compact binary form ([`value::encode_item`]). Every change is a job for the group-committing
//! thread ([`nimbus_store::commit`]); it checks its condition against the item as the
//! transaction sees it, so a conditional write is atomic, and it is acknowledged only once
//! committed.

#![forbid(unsafe_code)]

pub mod expr;
pub mod schema;
pub mod value;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, RwLock};

use redb::{Database, ReadableTable, Table, TableDefinition, WriteTransaction};

pub use schema::{
    IndexSpec, KeyAttr, KeySchema, KeyType, Projection, StoredKey, StreamState, StreamView,
    TableRecord, TableSpec, Throughput,
};
use value::{Item, decode_item, encode_item};

/// An item's place: (table id, partition key bytes, sort key bytes).
type ItemKey = (u64, &'static [u8], &'static [u8]);

/// Tables by (account, name): [`TableRecord`] as JSON.
const TABLES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("tables");
/// Items by (table id, partition key bytes, sort key bytes): the item's stored form.
const ITEMS: TableDefinition<ItemKey, &[u8]> = TableDefinition::new("items");
/// Per table id: (item count, bytes), as DescribeTable shows them.
const STATS: TableDefinition<u64, (u64, u64)> = TableDefinition::new("stats");
/// Items that expire, by (expiry in seconds, table id, partition key bytes, sort key bytes),
/// for tables with time to live on: the sweeper reads it from the start up to now.
const EXPIRY: TableDefinition<ExpiryKey, ()> = TableDefinition::new("expiry");
/// Stream records by (stream id, sequence number): the record's JSON as DynamoDB Streams
/// shows it.
const RECORDS: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("records");
/// Transactions' client request tokens by (account, token): (request fingerprint, when it
/// went through in ms), kept ten minutes.
const TOKENS: TableDefinition<(&str, &str), (u64, i64)> = TableDefinition::new("tokens");
/// Counters: `table`, the last table id given.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// The most tables an account may have.
pub const MAX_TABLES: usize = 2500;

#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// DynamoDB's ValidationException, with its message.
    #[error("{0}")]
    Validation(String),
    #[error("{0}")]
    ResourceNotFound(String),
    #[error("{0}")]
    ResourceInUse(String),
    #[error("{0}")]
    LimitExceeded(String),
    /// A condition did not hold; the item as it was, for
    /// `ReturnValuesOnConditionCheckFailure`.
    #[error("The conditional request failed")]
    ConditionalCheckFailed(Option<Box<Item>>),
    /// A transaction refused: each action's reason, `None` for those that would have
    /// gone through.
    #[error("Transaction cancelled, please refer cancellation reasons for specific reasons")]
    TransactionCanceled(Vec<Option<Error>>),
    /// A client request token seen with another request in the last ten minutes.
    #[error("The request uses the same client token as a previous, but non-identical request.")]
    IdempotentParameterMismatch,
    #[error("the table store failed: {0}")]
    Storage(String),
}

impl From<value::Invalid> for Error {
    fn from(e: value::Invalid) -> Self {
        Error::Validation(e.0)
    }
}

nimbus_store::redb_errors_into!(Error);

impl nimbus_store::commit::CommitError for Error {
    fn storage(message: String) -> Self {
        Error::Storage(message)
    }

    fn poisons(&self) -> bool {
        matches!(self, Error::Storage(_))
    }
}

/// Every table of the store, opened once per write transaction.
struct Tables<'t> {
    tables: Table<'t, (&'static str, &'static str), &'static [u8]>,
    items: Table<'t, ItemKey, &'static [u8]>,
    stats: Table<'t, u64, (u64, u64)>,
    expiry: Table<'t, ExpiryKey, ()>,
    records: Table<'t, (u64, u64), &'static [u8]>,
    tokens: Table<'t, (&'static str, &'static str), (u64, i64)>,
    meta: Table<'t, &'static str, u64>,
}

/// An expiring item's place in [`EXPIRY`].
type ExpiryKey = (u64, u64, &'static [u8], &'static [u8]);

struct Schema;

impl nimbus_store::commit::Schema for Schema {
    type Tables<'t> = Tables<'t>;
    type Error = Error;

    fn open(txn: &WriteTransaction) -> Result<Tables<'_>, redb::TableError> {
        Ok(Tables {
            tables: txn.open_table(TABLES)?,
            items: txn.open_table(ITEMS)?,
            stats: txn.open_table(STATS)?,
            expiry: txn.open_table(EXPIRY)?,
            records: txn.open_table(RECORDS)?,
            tokens: txn.open_table(TOKENS)?,
            meta: txn.open_table(META)?,
        })
    }
}

fn decode_record(bytes: &[u8]) -> Result<TableRecord, Error> {
    serde_json::from_slice(bytes).map_err(|e| Error::Storage(format!("a damaged table: {e}")))
}

/// What a write does to the item it finds (`None`: there is none), decided inside the
/// transaction: the item to leave (`None`: none), or an error that changes nothing.
pub type Change = Box<dyn FnOnce(Option<&Item>) -> Result<Option<Item>, Error> + Send>;

/// One action of a transaction: a change to one item, or (`check_only`) a condition that must
/// hold of it.
pub struct Action {
    pub table: Arc<TableRecord>,
    pub key: StoredKey,
    pub change: Change,
    pub check_only: bool,
}

/// A change to a table's definition, decided inside the transaction.
pub type SpecChange = Box<dyn FnOnce(&mut TableSpec) -> Result<(), Error> + Send>;

/// An item before and after a write.
#[derive(Debug, Clone, Default)]
pub struct Written {
    pub old: Option<Item>,
    pub new: Option<Item>,
}

/// Where a Query or Scan reads, in key order.
#[derive(Debug, Clone)]
pub struct ReadRange {
    /// Only this partition (a Query), or every partition (a Scan).
    pub partition: Option<Vec<u8>>,
    /// Sort key bounds within the partition, inclusive or not.
    pub lower: std::ops::Bound<Vec<u8>>,
    pub upper: std::ops::Bound<Vec<u8>>,
    /// Sort keys starting with this (begins_with).
    pub prefix: Option<Vec<u8>>,
    /// Continue after this key (ExclusiveStartKey).
    pub after: Option<StoredKey>,
    pub forward: bool,
    /// Items read at most (Limit).
    pub limit: Option<usize>,
    /// Bytes of items read at most (DynamoDB's 1 MB page).
    pub max_bytes: usize,
    /// A Scan's segment: (segment, total).
    pub segment: Option<(u32, u32)>,
    /// Read this index's entries instead of the table's items. The bounds and prefix are in
    /// sort key values' bytes as for the table; `after` is an entry's key
    /// ([`IndexSpec::entry_key`]).
    pub index: Option<IndexSpec>,
}

impl Default for ReadRange {
    fn default() -> Self {
        Self {
            partition: None,
            lower: std::ops::Bound::Unbounded,
            upper: std::ops::Bound::Unbounded,
            prefix: None,
            after: None,
            forward: true,
            limit: None,
            max_bytes: 1024 * 1024,
            segment: None,
            index: None,
        }
    }
}

/// A page of a Query or Scan: the items read (before any filter), and where to continue.
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub items: Vec<Item>,
    /// The key of the last item read, when the page stopped before the end.
    pub last: Option<Item>,
}

/// The table store.
pub struct TableStore {
    db: Arc<Database>,
    committer: nimbus_store::commit::Committer<Schema>,
    region: String,
    /// Every table's record, as last committed, by (account, name).
    cache: RwLock<HashMap<(String, String), Arc<TableRecord>>>,
    /// Woken when a change adds stream records.
    streamed: tokio::sync::Notify,
}

/// How long a transaction's client request token makes a retry idempotent.
pub const TOKEN_TTL_MS: i64 = 10 * 60 * 1000;

/// A transaction's client request token: who sent it, and a fingerprint of the request it
/// came with.
#[derive(Debug, Clone)]
pub struct RequestToken {
    pub account: String,
    pub token: String,
    pub fingerprint: u64,
}

impl TableStore {
    /// Opens (or creates) the store in `dir`, for tables of `region`.
    pub fn open(dir: &Path, region: &str) -> Result<Self, Error> {
        std::fs::create_dir_all(dir).map_err(|e| Error::Storage(e.to_string()))?;
        let db = Database::create(dir.join("tables.redb"))?;
        {
            let txn = db.begin_write()?;
            txn.open_table(TABLES)?;
            txn.open_table(ITEMS)?;
            txn.open_table(STATS)?;
            txn.open_table(EXPIRY)?;
            txn.open_table(RECORDS)?;
            txn.open_table(TOKENS)?;
            txn.open_table(META)?;
            txn.commit()?;
        }
        let mut cache = HashMap::new();
        {
            let txn = db.begin_read()?;
            let tables = txn.open_table(TABLES)?;
            for entry in tables.iter()? {
                let (k, v) = entry?;
                let (account, name) = k.value();
                cache.insert(
                    (account.to_owned(), name.to_owned()),
                    Arc::new(decode_record(v.value())?),
                );
            }
        }
        let db = Arc::new(db);
        Ok(Self {
            committer: nimbus_store::commit::Committer::start(db.clone(), "nimbus-tables-commit"),
            db,
            region: region.to_owned(),
            cache: RwLock::new(cache),
            streamed: tokio::sync::Notify::new(),
        })
    }

    /// Resolves when a change adds stream records after this is called (create the future
    /// before reading the stream, so that no record is missed between the two).
    pub fn streamed(&self) -> tokio::sync::futures::Notified<'_> {
        self.streamed.notified()
    }

    fn wake_streams(&self, table: &TableRecord) {
        if table.live_stream().is_some() {
            self.streamed.notify_waiters();
        }
    }

    /// The region its tables are in.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// Stops the committer after the writes already taken.
    pub fn shutdown(&self) {
        self.committer.stop();
    }

    fn not_found() -> Error {
        Error::ResourceNotFound("Requested resource not found".into())
    }

    /// A table, if it exists.
    pub fn table(&self, account: &str, name: &str) -> Result<Arc<TableRecord>, Error> {
        let cache = self
            .cache
            .read()
            .map_err(|_| Error::Storage("the table cache is poisoned".into()))?;
        cache
            .get(&(account.to_owned(), name.to_owned()))
            .cloned()
            .ok_or_else(Self::not_found)
    }

    fn refresh(&self, account: &str, name: &str) -> Result<(), Error> {
        let mut cache = self
            .cache
            .write()
            .map_err(|_| Error::Storage("the table cache is poisoned".into()))?;
        let txn = self.db.begin_read()?;
        let tables = txn.open_table(TABLES)?;
        let key = (account.to_owned(), name.to_owned());
        match tables.get((account, name))? {
            Some(v) => {
                cache.insert(key, Arc::new(decode_record(v.value())?));
            }
            None => {
                cache.remove(&key);
            }
        }
        Ok(())
    }

    /// Creates a table.
    pub async fn create_table(
        &self,
        account: &str,
        spec: TableSpec,
    ) -> Result<Arc<TableRecord>, Error> {
        schema::check_table_name(&spec.name)?;
        let name = spec.name.clone();
        let acct = account.to_owned();
        let region = self.region.clone();
        self.committer
            .write(move |t| {
                let name = spec.name.clone();
                if t.tables.get((acct.as_str(), name.as_str()))?.is_some() {
                    return Err(Error::ResourceInUse(format!(
                        "Table already exists: {name}"
                    )));
                }
                let mut count = 0;
                for entry in t.tables.range((acct.as_str(), "")..)? {
                    let (k, _) = entry?;
                    if k.value().0 != acct {
                        break;
                    }
                    count += 1;
                }
                if count >= MAX_TABLES {
                    return Err(Error::LimitExceeded(format!(
                        "Subscriber limit exceeded: Number of tables per account exceeds {MAX_TABLES}"
                    )));
                }
                let id = t.meta.get("table")?.map_or(0, |v| v.value()) + 1;
                let mut spec = spec;
                for (n, index) in spec.indexes.iter_mut().enumerate() {
                    index.id = id + 1 + n as u64;
                }
                t.meta.insert("table", id + spec.indexes.len() as u64)?;
                let record = TableRecord {
                    id,
                    account: acct.clone(),
                    region,
                    spec,
                    created_ms: nimbus_types::time::now_ms(),
                    ttl: None,
                    streams: Vec::new(),
                };
                let bytes = serde_json::to_vec(&record).unwrap_or_default();
                t.tables
                    .insert((acct.as_str(), name.as_str()), bytes.as_slice())?;
                t.stats.insert(id, (0, 0))?;
                Ok(())
            })
            .await?;
        self.refresh(account, &name)?;
        self.table(account, &name)
    }

    /// Deletes a table and its items; returns its record.
    pub async fn delete_table(&self, account: &str, name: &str) -> Result<Arc<TableRecord>, Error> {
        let record = self.table(account, name)?;
        let (acct, table) = (account.to_owned(), name.to_owned());
        let id = record.id;
        let ids: Vec<u64> = std::iter::once(id)
            .chain(record.spec.indexes.iter().map(|i| i.id))
            .collect();
        let streams: Vec<u64> = record.streams.iter().map(|s| s.id).collect();
        self.committer
            .write(move |t| {
                if t.tables.remove((acct.as_str(), table.as_str()))?.is_none() {
                    return Err(Self::not_found());
                }
                for id in ids {
                    drop_items(t, id)?;
                    t.stats.remove(id)?;
                }
                forget_expiry(t, id)?;
                for sid in streams {
                    t.records
                        .retain_in((sid, 0)..=(sid, u64::MAX), |_, _| false)?;
                }
                Ok(())
            })
            .await?;
        self.refresh(account, name)?;
        Ok(record)
    }

    /// An account's table names in order, after `after`, at most `limit`; and whether more
    /// follow.
    pub fn list_tables(
        &self,
        account: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<String>, bool), Error> {
        let cache = self
            .cache
            .read()
            .map_err(|_| Error::Storage("the table cache is poisoned".into()))?;
        let mut names: Vec<&String> = cache
            .keys()
            .filter(|(a, n)| a == account && after.is_none_or(|after| n.as_str() > after))
            .map(|(_, n)| n)
            .collect();
        names.sort();
        let more = names.len() > limit;
        Ok((names.into_iter().take(limit).cloned().collect(), more))
    }

    /// A table's item count and size in bytes.
    pub fn stats(&self, table: &TableRecord) -> Result<(u64, u64), Error> {
        self.stats_of(table.id)
    }

    /// The item count and size in bytes of a table or index, by id.
    pub fn stats_of(&self, id: u64) -> Result<(u64, u64), Error> {
        let txn = self.db.begin_read()?;
        let stats = txn.open_table(STATS)?;
        Ok(stats.get(id)?.map_or((0, 0), |v| v.value()))
    }

    /// Reads one item by its stored key.
    pub fn get(&self, table: &TableRecord, key: &StoredKey) -> Result<Option<Item>, Error> {
        let txn = self.db.begin_read()?;
        let items = txn.open_table(ITEMS)?;
        match items.get((table.id, key.hash.as_slice(), key.range.as_slice()))? {
            Some(v) => Ok(Some(decode_item(v.value())?)),
            None => Ok(None),
        }
    }

    /// Writes one item: `change` decides, from the item there now, what is left (the new item
    /// must have the same key). Returns the item before and after.
    pub async fn write(
        &self,
        table: &Arc<TableRecord>,
        key: StoredKey,
        change: Change,
    ) -> Result<Written, Error> {
        let record = table.clone();
        let written = self
            .committer
            .write(move |t| {
                // The table may have gone (or been made again) since the caller looked.
                if !still_there(t, &record)? {
                    return Err(Self::not_found());
                }
                write_item(t, &record, &key, change)
            })
            .await?;
        self.wake_streams(table);
        Ok(written)
    }

    /// Runs a transaction's actions all or not at all: every change is decided against the
    /// items as they are, and only if none refuses are the changes written, in one commit. A
    /// refusal cancels the whole transaction, with each action's reason (`None`: it would
    /// have gone through).
    /// With a client request token, a request that went through in the last ten minutes is
    /// not run again (`None`), and the token is kept in the transaction's own commit.
    pub async fn transact(
        &self,
        actions: Vec<Action>,
        token: Option<RequestToken>,
    ) -> Result<Option<Vec<Written>>, Error> {
        let streamed = actions.iter().any(|a| a.table.live_stream().is_some());
        let written = self
            .committer
            .write(move |t| {
                let now = nimbus_types::time::now_ms();
                if let Some(rt) = &token
                    && let Some(seen) = t.tokens.get((rt.account.as_str(), rt.token.as_str()))?
                {
                    let (fingerprint, at) = seen.value();
                    if now - at < TOKEN_TTL_MS {
                        return if fingerprint == rt.fingerprint {
                            Ok(None)
                        } else {
                            Err(Error::IdempotentParameterMismatch)
                        };
                    }
                }
                let mut decided = Vec::with_capacity(actions.len());
                let mut reasons = Vec::with_capacity(actions.len());
                let mut refused = false;
                for action in actions {
                    if !still_there(t, &action.table)? {
                        return Err(Self::not_found());
                    }
                    let (old, old_len) = read_old(t, action.table.id, &action.key)?;
                    match (action.change)(old.as_ref()) {
                        Ok(new) => {
                            reasons.push(None);
                            decided.push((
                                action.table,
                                action.key,
                                action.check_only,
                                old,
                                old_len,
                                new,
                            ));
                        }
                        Err(e @ Error::Storage(_)) => return Err(e),
                        Err(e) => {
                            refused = true;
                            reasons.push(Some(e));
                        }
                    }
                }
                if refused {
                    return Err(Error::TransactionCanceled(reasons));
                }
                if let Some(rt) = &token {
                    t.tokens.insert(
                        (rt.account.as_str(), rt.token.as_str()),
                        (rt.fingerprint, now),
                    )?;
                }
                let mut out = Vec::with_capacity(decided.len());
                for (table, key, check_only, old, old_len, new) in decided {
                    if !check_only {
                        apply(t, &table, &key, old.as_ref(), old_len, new.as_ref(), false)?;
                    }
                    out.push(Written { old, new });
                }
                Ok(Some(out))
            })
            .await?;
        if streamed {
            self.streamed.notify_waiters();
        }
        Ok(written)
    }

    /// Runs `change` on a table's record inside a write transaction (after checking the table
    /// is still the one the caller looked up), writes the record back with it, and returns it
    /// as committed.
    async fn modify_table(
        &self,
        account: &str,
        name: &str,
        change: impl FnOnce(&mut Tables<'_>, &mut TableRecord) -> Result<(), Error> + Send + 'static,
    ) -> Result<Arc<TableRecord>, Error> {
        let table = self.table(account, name)?;
        self.committer
            .write(move |t| {
                if !still_there(t, &table)? {
                    return Err(Self::not_found());
                }
                let mut record = (*table).clone();
                change(t, &mut record)?;
                put_record(t, &record)
            })
            .await?;
        self.refresh(account, name)?;
        self.table(account, name)
    }

    /// Changes a table's definition: `change` edits its spec (throughput, billing, indexes).
    /// An index it adds (with id 0) gets an id and an entry for every item already there; an
    /// index it drops loses its entries. Returns the new record.
    pub async fn alter_table(
        &self,
        account: &str,
        name: &str,
        change: SpecChange,
    ) -> Result<Arc<TableRecord>, Error> {
        self.modify_table(account, name, move |t, record| {
            let before: Vec<u64> = record.spec.indexes.iter().map(|i| i.id).collect();
            change(&mut record.spec)?;
            let mut next = t.meta.get("table")?.map_or(0, |v| v.value());
            let mut added = Vec::new();
            for index in record.spec.indexes.iter_mut().filter(|i| i.id == 0) {
                next += 1;
                index.id = next;
                added.push(index.clone());
            }
            t.meta.insert("table", next)?;
            for id in before
                .into_iter()
                .filter(|old| !record.spec.indexes.iter().any(|i| i.id == *old))
            {
                drop_items(t, id)?;
                t.stats.remove(id)?;
            }
            if !added.is_empty() {
                let id = record.id;
                let mut entries = Vec::new();
                for entry in t.items.range::<(u64, &[u8], &[u8])>(
                    (id, &[][..], &[][..])..(id + 1, &[][..], &[][..]),
                )? {
                    let (k, v) = entry?;
                    let (_, hash, range) = k.value();
                    let item = decode_item(v.value())?;
                    let base = StoredKey {
                        hash: hash.to_vec(),
                        range: range.to_vec(),
                    };
                    for index in &added {
                        if let Some(e) = index.entry_key(&base, &item) {
                            entries.push((
                                index.id,
                                e,
                                encode_item(&index.project(&record.spec.key, &item)),
                            ));
                        }
                    }
                }
                for (index, e, bytes) in entries {
                    let replaced = t
                        .items
                        .insert(
                            (index, e.hash.as_slice(), e.range.as_slice()),
                            bytes.as_slice(),
                        )?
                        .map(|v| v.value().len() as i64);
                    let delta = (
                        i64::from(replaced.is_none()),
                        bytes.len() as i64 - replaced.unwrap_or(0),
                    );
                    add_stats(t, index, delta)?;
                }
            }
            Ok(())
        })
        .await
    }

    /// Turns time to live on (with the attribute that holds each item's expiry) or off. Turning
    /// it on indexes the expiry of the items already there.
    pub async fn set_ttl(
        &self,
        account: &str,
        name: &str,
        attribute: Option<String>,
    ) -> Result<(), Error> {
        self.modify_table(account, name, move |t, record| {
            match (&record.ttl, &attribute) {
                (Some(_), Some(_)) => {
                    return Err(Error::Validation("TimeToLive is already enabled".into()));
                }
                (None, None) => {
                    return Err(Error::Validation("TimeToLive is already disabled".into()));
                }
                _ => {}
            }
            record.ttl = attribute;
            forget_expiry(t, record.id)?;
            if record.ttl.is_some() {
                let id = record.id;
                let mut found = Vec::new();
                for entry in t.items.range::<(u64, &[u8], &[u8])>(
                    (id, &[][..], &[][..])..(id + 1, &[][..], &[][..]),
                )? {
                    let (k, v) = entry?;
                    let (_, hash, range) = k.value();
                    if let Some(e) = expiry_of(record, Some(&decode_item(v.value())?)) {
                        found.push((e, hash.to_vec(), range.to_vec()));
                    }
                }
                for (e, hash, range) in found {
                    t.expiry
                        .insert((e, id, hash.as_slice(), range.as_slice()), ())?;
                }
            }
            Ok(())
        })
        .await
        .map(|_| ())
    }

    /// Deletes items whose time to live has passed (`now`, in seconds), at most `max` of them;
    /// returns the items deleted with their tables.
    pub async fn sweep(
        &self,
        now: u64,
        max: usize,
    ) -> Result<Vec<(Arc<TableRecord>, Item)>, Error> {
        let due: Vec<(u64, u64, Vec<u8>, Vec<u8>)> = {
            let txn = self.db.begin_read()?;
            let expiry = txn.open_table(EXPIRY)?;
            let mut due = Vec::new();
            for entry in
                expiry.range::<(u64, u64, &[u8], &[u8])>(..(now + 1, 0, &[][..], &[][..]))?
            {
                let (k, _) = entry?;
                let (e, id, hash, range) = k.value();
                due.push((e, id, hash.to_vec(), range.to_vec()));
                if due.len() >= max {
                    break;
                }
            }
            due
        };
        if due.is_empty() {
            return Ok(Vec::new());
        }
        let tables: HashMap<u64, Arc<TableRecord>> = self
            .cache
            .read()
            .map_err(|_| Error::Storage("the table cache is poisoned".into()))?
            .values()
            .map(|t| (t.id, t.clone()))
            .collect();
        self.committer
            .write(move |t| {
                let mut gone = Vec::new();
                for (e, id, hash, range) in due {
                    t.expiry
                        .remove((e, id, hash.as_slice(), range.as_slice()))?;
                    let Some(table) = tables.get(&id) else {
                        continue;
                    };
                    let key = StoredKey { hash, range };
                    let (old, old_len) = read_old(t, id, &key)?;
                    // Still there and still expired, as the transaction sees it.
                    if let Some(item) = old
                        && expiry_of(table, Some(&item)).is_some_and(|x| x <= now)
                    {
                        apply(t, table, &key, Some(&item), old_len, None, true)?;
                        gone.push((table.clone(), item));
                    }
                }
                Ok(gone)
            })
            .await
            .inspect(|gone| {
                if gone.iter().any(|(t, _)| t.live_stream().is_some()) {
                    self.streamed.notify_waiters();
                }
            })
    }

    /// Turns a table's stream on (a new stream, with its own ARN) or off (the stream stops
    /// taking changes and stays readable for its retention).
    pub async fn set_stream(
        &self,
        account: &str,
        name: &str,
        view: Option<StreamView>,
    ) -> Result<Arc<TableRecord>, Error> {
        self.modify_table(account, name, move |t, record| {
            match (record.live_stream().is_some(), view) {
                (true, Some(_)) => {
                    return Err(Error::Validation(format!(
                        "Table already has an enabled stream: {}",
                        record.arn()
                    )));
                }
                (false, None) => {
                    return Err(Error::Validation(
                        "Table already has no enabled stream".into(),
                    ));
                }
                (true, None) => {
                    if let Some(s) = record.streams.last_mut() {
                        s.enabled = false;
                    }
                }
                (false, Some(view)) => {
                    let id = t.meta.get("table")?.map_or(0, |v| v.value()) + 1;
                    t.meta.insert("table", id)?;
                    let now = nimbus_types::time::now_ms();
                    record.streams.push(StreamState {
                        id,
                        label: nimbus_types::time::iso8601_millis_local(now),
                        view,
                        enabled: true,
                        created_ms: now,
                    });
                }
            }
            Ok(())
        })
        .await
    }

    /// A stream's records after sequence number `after`, at most `max`, oldest first.
    pub fn stream_records(
        &self,
        stream: u64,
        after: u64,
        max: usize,
    ) -> Result<Vec<(u64, serde_json::Value)>, Error> {
        let txn = self.db.begin_read()?;
        let records = txn.open_table(RECORDS)?;
        let mut out = Vec::new();
        for entry in records.range((stream, after.saturating_add(1))..=(stream, u64::MAX))? {
            let (k, v) = entry?;
            let record = serde_json::from_slice(v.value())
                .map_err(|e| Error::Storage(format!("a damaged stream record: {e}")))?;
            out.push((k.value().1, record));
            if out.len() >= max {
                break;
            }
        }
        Ok(out)
    }

    /// The first and last sequence numbers a stream holds, if any.
    pub fn stream_bounds(&self, stream: u64) -> Result<Option<(u64, u64)>, Error> {
        let txn = self.db.begin_read()?;
        let records = txn.open_table(RECORDS)?;
        let mut range = records.range((stream, 0)..=(stream, u64::MAX))?;
        let first = match range.next() {
            Some(e) => e?.0.value().1,
            None => return Ok(None),
        };
        let last = match range.next_back() {
            Some(e) => e?.0.value().1,
            None => first,
        };
        Ok(Some((first, last)))
    }

    /// The last sequence number given to any stream record.
    pub fn last_sequence(&self) -> Result<u64, Error> {
        let txn = self.db.begin_read()?;
        let meta = txn.open_table(META)?;
        Ok(meta.get("record")?.map_or(0, |v| v.value()))
    }

    /// Every table of every account (for the stream readers).
    pub fn all_tables(&self) -> Result<Vec<Arc<TableRecord>>, Error> {
        Ok(self
            .cache
            .read()
            .map_err(|_| Error::Storage("the table cache is poisoned".into()))?
            .values()
            .cloned()
            .collect())
    }

    /// Forgets client request tokens older than ten minutes (`now_ms`).
    pub async fn trim_tokens(&self, now_ms: i64) -> Result<(), Error> {
        let any_old = {
            let txn = self.db.begin_read()?;
            let tokens = txn.open_table(TOKENS)?;
            let mut old = false;
            for entry in tokens.iter()? {
                if now_ms - entry?.1.value().1 >= TOKEN_TTL_MS {
                    old = true;
                    break;
                }
            }
            old
        };
        if any_old {
            self.committer
                .write(move |t| {
                    t.tokens.retain(|_, (_, at)| now_ms - at < TOKEN_TTL_MS)?;
                    Ok(())
                })
                .await?;
        }
        Ok(())
    }

    /// Drops stream records older than their retention (`now_ms`), at most `max`.
    pub async fn trim_streams(&self, now_ms: i64, max: usize) -> Result<usize, Error> {
        let cutoff = now_ms - STREAM_RETENTION_MS;
        let streams: Vec<u64> = self
            .all_tables()?
            .iter()
            .flat_map(|t| t.streams.iter().map(|s| s.id))
            .collect();
        let old: Vec<(u64, u64)> = {
            let txn = self.db.begin_read()?;
            let records = txn.open_table(RECORDS)?;
            let mut old = Vec::new();
            'streams: for sid in streams {
                for entry in records.range((sid, 0)..=(sid, u64::MAX))? {
                    let (k, v) = entry?;
                    let created = serde_json::from_slice::<serde_json::Value>(v.value())
                        .ok()
                        .and_then(|r| r.get("createdMs").and_then(serde_json::Value::as_i64))
                        .unwrap_or(0);
                    // A stream's records are in time order: the rest are newer.
                    if created >= cutoff {
                        break;
                    }
                    old.push(k.value());
                    if old.len() >= max {
                        break 'streams;
                    }
                }
            }
            old
        };
        let n = old.len();
        if n > 0 {
            self.committer
                .write(move |t| {
                    for k in old {
                        t.records.remove(k)?;
                    }
                    Ok(())
                })
                .await?;
        }
        Ok(n)
    }

    /// Reads several items as of one moment.
    pub fn get_many(
        &self,
        keys: &[(Arc<TableRecord>, StoredKey)],
    ) -> Result<Vec<Option<Item>>, Error> {
        let txn = self.db.begin_read()?;
        let items = txn.open_table(ITEMS)?;
        let mut out = Vec::with_capacity(keys.len());
        for (table, key) in keys {
            out.push(
                match items.get((table.id, key.hash.as_slice(), key.range.as_slice()))? {
                    Some(v) => Some(decode_item(v.value())?),
                    None => None,
                },
            );
        }
        Ok(out)
    }

    /// Reads a range of items in key order (a Query's partition, or a Scan's table).
    pub fn read(&self, table: &TableRecord, range: &ReadRange) -> Result<Page, Error> {
        use std::ops::Bound;
        let txn = self.db.begin_read()?;
        let items = txn.open_table(ITEMS)?;
        let id = range.index.as_ref().map_or(table.id, |i| i.id);
        let empty: &[u8] = &[];
        let mut page = Page::default();
        // An index's sort part is the escaped sort key, `0 0`, then the item's key: bounds
        // on sort key values become bounds on that.
        let escaped = |b: &Vec<u8>, tail: [u8; 2]| {
            let mut e = schema::escape(b);
            e.extend_from_slice(&tail);
            e
        };
        let (lower_bound, upper_bound, prefix) = match &range.index {
            None => (
                range.lower.clone(),
                range.upper.clone(),
                range.prefix.clone(),
            ),
            Some(_) => (
                match &range.lower {
                    Bound::Included(b) => Bound::Included(escaped(b, [0, 0])),
                    Bound::Excluded(b) => Bound::Included(escaped(b, [0, 1])),
                    Bound::Unbounded => Bound::Unbounded,
                },
                match &range.upper {
                    Bound::Included(b) => Bound::Excluded(escaped(b, [0, 1])),
                    Bound::Excluded(b) => Bound::Excluded(escaped(b, [0, 0])),
                    Bound::Unbounded => Bound::Unbounded,
                },
                range.prefix.as_ref().map(|p| schema::escape(p)),
            ),
        };
        let mut bytes = 0usize;
        // The partition key's immediate successor bounds the partition from above.
        let next_partition: Option<Vec<u8>> = range.partition.as_ref().map(|p| {
            let mut n = p.clone();
            n.push(0);
            n
        });
        type At<'k> = Bound<(u64, &'k [u8], &'k [u8])>;
        let (lower, upper): (At<'_>, At<'_>) = match &range.partition {
            Some(p) => {
                let lo = match &lower_bound {
                    Bound::Included(b) => Bound::Included((id, p.as_slice(), b.as_slice())),
                    Bound::Excluded(b) => Bound::Excluded((id, p.as_slice(), b.as_slice())),
                    Bound::Unbounded => Bound::Included((id, p.as_slice(), empty)),
                };
                let hi = match &upper_bound {
                    Bound::Included(b) => Bound::Included((id, p.as_slice(), b.as_slice())),
                    Bound::Excluded(b) => Bound::Excluded((id, p.as_slice(), b.as_slice())),
                    Bound::Unbounded => {
                        Bound::Excluded((id, next_partition.as_deref().unwrap_or(empty), empty))
                    }
                };
                (lo, hi)
            }
            None => (
                Bound::Included((id, empty, empty)),
                Bound::Excluded((id + 1, empty, empty)),
            ),
        };
        let iter = items.range::<(u64, &[u8], &[u8])>((lower, upper))?;
        let mut iter: Box<dyn Iterator<Item = _>> = if range.forward {
            Box::new(iter)
        } else {
            Box::new(iter.rev())
        };
        let mut last_key: Option<(Vec<u8>, Vec<u8>, Item)> = None;
        let mut stopped = false;
        for entry in iter.by_ref() {
            let (k, v) = entry?;
            let (_, hash, sort) = k.value();
            if let Some(p) = &range.partition
                && hash != p.as_slice()
            {
                continue;
            }
            if let Some(prefix) = &prefix
                && !sort.starts_with(prefix)
            {
                continue;
            }
            if let Some(after) = &range.after {
                let here = (hash, sort);
                let passed = if range.forward {
                    here <= (after.hash.as_slice(), after.range.as_slice())
                } else {
                    here >= (after.hash.as_slice(), after.range.as_slice())
                };
                if passed {
                    continue;
                }
            }
            if let Some((segment, total)) = range.segment
                && segment_of(hash, total) != segment
            {
                continue;
            }
            if range.limit.is_some_and(|l| page.items.len() >= l) || bytes >= range.max_bytes {
                stopped = true;
                break;
            }
            let item = decode_item(v.value())?;
            bytes += v.value().len();
            let key = match &range.index {
                None => table.spec.key.key_item(&item),
                Some(index) => index
                    .key_names(&table.spec.key)
                    .into_iter()
                    .filter_map(|n| item.get(n).map(|v| (n.to_owned(), v.clone())))
                    .collect(),
            };
            last_key = Some((hash.to_vec(), sort.to_vec(), key));
            page.items.push(item);
        }
        // A page that filled up says where to go on, even when nothing follows (as DynamoDB).
        let full = range.limit.is_some_and(|l| page.items.len() >= l) || bytes >= range.max_bytes;
        if stopped || full {
            page.last = last_key.map(|(_, _, k)| k);
        }
        Ok(page)
    }
}

/// The Scan segment a partition key belongs to.
fn segment_of(hash: &[u8], total: u32) -> u32 {
    // FNV-1a: stable across runs and machines.
    let mut h: u32 = 0x811c_9dc5;
    for b in hash {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h % total.max(1)
}

/// An item as the transaction sees it, with its stored length.
fn read_old(t: &Tables<'_>, id: u64, key: &StoredKey) -> Result<(Option<Item>, u64), Error> {
    match t
        .items
        .get((id, key.hash.as_slice(), key.range.as_slice()))?
    {
        Some(v) => Ok((Some(decode_item(v.value())?), v.value().len() as u64)),
        None => Ok((None, 0)),
    }
}

/// How long stream records are kept.
pub const STREAM_RETENTION_MS: i64 = 24 * 3600 * 1000;

/// A change as a stream record in DynamoDB Streams' shape (without `eventSourceARN` and
/// `awsRegion`, which the reader adds).
fn stream_record(
    table: &TableRecord,
    stream: &StreamState,
    seq: u64,
    old: Option<&Item>,
    new: Option<&Item>,
    by_ttl: bool,
) -> serde_json::Value {
    let event = match (old, new) {
        (None, _) => "INSERT",
        (Some(_), Some(_)) => "MODIFY",
        (Some(_), None) => "REMOVE",
    };
    let any = new.or(old).cloned().unwrap_or_default();
    let keys = table.spec.key.key_item(&any);
    let now = nimbus_types::time::now_ms();
    let mut size = value::item_size(&keys);
    let mut dynamodb = serde_json::json!({
        "ApproximateCreationDateTime": now / 1000,
        "Keys": value::item_json(&keys),
        "SequenceNumber": format!("{seq:021}"),
        "StreamViewType": stream.view.name(),
    });
    let (with_new, with_old) = match stream.view {
        StreamView::KeysOnly => (false, false),
        StreamView::NewImage => (true, false),
        StreamView::OldImage => (false, true),
        StreamView::NewAndOldImages => (true, true),
    };
    if with_new && let Some(n) = new {
        size += value::item_size(n);
        dynamodb["NewImage"] = serde_json::Value::Object(value::item_json(n));
    }
    if with_old && let Some(o) = old {
        size += value::item_size(o);
        dynamodb["OldImage"] = serde_json::Value::Object(value::item_json(o));
    }
    dynamodb["SizeBytes"] = serde_json::json!(size);
    let mut record = serde_json::json!({
        "eventID": format!("{:032x}", (u128::from(stream.id) << 64) | u128::from(seq)),
        "eventName": event,
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "dynamodb": dynamodb,
        "createdMs": now,
    });
    if by_ttl {
        // A deletion by time to live names the service that made it.
        record["userIdentity"] = serde_json::json!({
            "Type": "Service",
            "PrincipalId": "dynamodb.amazonaws.com",
        });
    }
    record
}

/// When an item expires, if its table has time to live on and the item's attribute is a
/// number of seconds (DynamoDB ignores any other type).
fn expiry_of(table: &TableRecord, item: Option<&Item>) -> Option<u64> {
    let name = table.ttl.as_deref()?;
    match item?.get(name)? {
        value::Value::N(n) => {
            let secs = n.to_f64();
            (secs.is_finite() && secs >= 0.0).then_some(secs as u64)
        }
        _ => None,
    }
}

/// Leaves `new` (or nothing) where `old` (of `old_len` bytes) was, and keeps the table's
/// counts and the expiry index.
fn apply(
    t: &mut Tables<'_>,
    table: &TableRecord,
    key: &StoredKey,
    old: Option<&Item>,
    old_len: u64,
    new: Option<&Item>,
    by_ttl: bool,
) -> Result<(), Error> {
    if let Some(stream) = table.live_stream()
        && old != new
    {
        let seq = t.meta.get("record")?.map_or(0, |v| v.value()) + 1;
        t.meta.insert("record", seq)?;
        let record = stream_record(table, stream, seq, old, new, by_ttl);
        t.records
            .insert((stream.id, seq), record.to_string().as_bytes())?;
    }
    let id = table.id;
    let had = old.is_some();
    let at = (id, key.hash.as_slice(), key.range.as_slice());
    let (count, size) = t.stats.get(id)?.map_or((0, 0), |v| v.value());
    let (count, size) = match new {
        Some(item) => {
            let bytes = encode_item(item);
            t.items.insert(at, bytes.as_slice())?;
            (
                count + u64::from(!had),
                (size + bytes.len() as u64).saturating_sub(old_len),
            )
        }
        None => {
            if had {
                t.items.remove(at)?;
            }
            (
                count.saturating_sub(u64::from(had)),
                size.saturating_sub(old_len),
            )
        }
    };
    t.stats.insert(id, (count, size))?;
    for index in &table.spec.indexes {
        let mut delta = (0i64, 0i64);
        if let Some(e) = old.and_then(|o| index.entry_key(key, o))
            && let Some(gone) = t
                .items
                .remove((index.id, e.hash.as_slice(), e.range.as_slice()))?
        {
            delta = (-1, -(gone.value().len() as i64));
        }
        if let Some(item) = new
            && let Some(e) = index.entry_key(key, item)
        {
            let bytes = encode_item(&index.project(&table.spec.key, item));
            let replaced = t
                .items
                .insert(
                    (index.id, e.hash.as_slice(), e.range.as_slice()),
                    bytes.as_slice(),
                )?
                .map(|v| v.value().len() as i64);
            delta.0 += i64::from(replaced.is_none());
            delta.1 += bytes.len() as i64 - replaced.unwrap_or(0);
        }
        if delta != (0, 0) {
            add_stats(t, index.id, delta)?;
        }
    }
    let (was, will) = (expiry_of(table, old), expiry_of(table, new));
    if was != will {
        if let Some(e) = was {
            t.expiry
                .remove((e, id, key.hash.as_slice(), key.range.as_slice()))?;
        }
        if let Some(e) = will {
            t.expiry
                .insert((e, id, key.hash.as_slice(), key.range.as_slice()), ())?;
        }
    }
    Ok(())
}

/// Runs one item's change in a transaction.
fn write_item(
    t: &mut Tables<'_>,
    table: &TableRecord,
    key: &StoredKey,
    change: Change,
) -> Result<Written, Error> {
    let (old, old_len) = read_old(t, table.id, key)?;
    let new = change(old.as_ref())?;
    apply(t, table, key, old.as_ref(), old_len, new.as_ref(), false)?;
    Ok(Written { old, new })
}

/// Removes every item (or index entry) stored under `id`.
/// Adds (count, bytes) to the statistics of a table or index.
fn add_stats(t: &mut Tables<'_>, id: u64, (count, bytes): (i64, i64)) -> Result<(), Error> {
    let (c, b) = t.stats.get(id)?.map_or((0, 0), |v| v.value());
    let apply = |v: u64, d: i64| {
        if d < 0 {
            v.saturating_sub(d.unsigned_abs())
        } else {
            v.saturating_add(d as u64)
        }
    };
    t.stats.insert(id, (apply(c, count), apply(b, bytes)))?;
    Ok(())
}

fn drop_items(t: &mut Tables<'_>, id: u64) -> Result<(), Error> {
    t.items.retain_in(
        (id, &[][..], &[][..])..(id + 1, &[][..], &[][..]),
        |_, _| false,
    )?;
    Ok(())
}

/// Writes a table's record.
fn put_record(t: &mut Tables<'_>, record: &TableRecord) -> Result<(), Error> {
    let bytes = serde_json::to_vec(record).unwrap_or_default();
    t.tables.insert(
        (record.account.as_str(), record.spec.name.as_str()),
        bytes.as_slice(),
    )?;
    Ok(())
}

/// Removes a table's entries from the expiry index.
fn forget_expiry(t: &mut Tables<'_>, id: u64) -> Result<(), Error> {
    t.expiry.retain(|(_, table, _, _), ()| table != id)?;
    Ok(())
}

/// Whether a table record in the transaction is still the one with this id.
fn still_there(t: &Tables<'_>, table: &TableRecord) -> Result<bool, Error> {
    Ok(
        match t
            .tables
            .get((table.account.as_str(), table.spec.name.as_str()))?
        {
            // Only the id is needed: the rest of the record is skipped, not decoded.
            Some(v) => {
                #[derive(serde::Deserialize)]
                struct Id {
                    id: u64,
                }
                serde_json::from_slice::<Id>(v.value())
                    .map_err(|e| Error::Storage(format!("a damaged table: {e}")))?
                    .id
                    == table.id
            }
            None => false,
        },
    )
}

impl Drop for TableStore {
    fn drop(&mut self) {
        self.committer.stop();
    }
}

#[cfg(test)]
mod tests;
