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

pub use schema::{KeyAttr, KeySchema, KeyType, StoredKey, TableRecord, TableSpec, Throughput};
use value::{Item, decode_item, encode_item};

/// An item's place: (table id, partition key bytes, sort key bytes).
type ItemKey = (u64, &'static [u8], &'static [u8]);

/// Tables by (account, name): [`TableRecord`] as JSON.
const TABLES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("tables");
/// Items by (table id, partition key bytes, sort key bytes): the item's stored form.
const ITEMS: TableDefinition<ItemKey, &[u8]> = TableDefinition::new("items");
/// Per table id: (item count, bytes), as DescribeTable shows them.
const STATS: TableDefinition<u64, (u64, u64)> = TableDefinition::new("stats");
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
    meta: Table<'t, &'static str, u64>,
}

struct Schema;

impl nimbus_store::commit::Schema for Schema {
    type Tables<'t> = Tables<'t>;
    type Error = Error;

    fn open(txn: &WriteTransaction) -> Result<Tables<'_>, redb::TableError> {
        Ok(Tables {
            tables: txn.open_table(TABLES)?,
            items: txn.open_table(ITEMS)?,
            stats: txn.open_table(STATS)?,
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
        })
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
                t.meta.insert("table", id)?;
                let record = TableRecord {
                    id,
                    account: acct.clone(),
                    region,
                    spec,
                    created_ms: nimbus_types::time::now_ms(),
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
        self.committer
            .write(move |t| {
                if t.tables.remove((acct.as_str(), table.as_str()))?.is_none() {
                    return Err(Self::not_found());
                }
                t.items.retain_in(
                    (id, &[][..], &[][..])..(id + 1, &[][..], &[][..]),
                    |_, _| false,
                )?;
                t.stats.remove(id)?;
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
        let txn = self.db.begin_read()?;
        let stats = txn.open_table(STATS)?;
        Ok(stats.get(table.id)?.map_or((0, 0), |v| v.value()))
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
        table: &TableRecord,
        key: StoredKey,
        change: Change,
    ) -> Result<Written, Error> {
        let (account, name, id) = (table.account.clone(), table.spec.name.clone(), table.id);
        self.committer
            .write(move |t| {
                // The table may have gone (or been made again) since the caller looked.
                match t.tables.get((account.as_str(), name.as_str()))? {
                    Some(v) if decode_record(v.value())?.id == id => {}
                    _ => return Err(Self::not_found()),
                }
                write_item(t, id, &key, change)
            })
            .await
    }

    /// Reads a range of items in key order (a Query's partition, or a Scan's table).
    pub fn read(&self, table: &TableRecord, range: &ReadRange) -> Result<Page, Error> {
        use std::ops::Bound;
        let txn = self.db.begin_read()?;
        let items = txn.open_table(ITEMS)?;
        let id = table.id;
        let empty: &[u8] = &[];
        let mut page = Page::default();
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
                let lo = match &range.lower {
                    Bound::Included(b) => Bound::Included((id, p.as_slice(), b.as_slice())),
                    Bound::Excluded(b) => Bound::Excluded((id, p.as_slice(), b.as_slice())),
                    Bound::Unbounded => Bound::Included((id, p.as_slice(), empty)),
                };
                let hi = match &range.upper {
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
            if let Some(prefix) = &range.prefix
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
            last_key = Some((hash.to_vec(), sort.to_vec(), table.spec.key.key_item(&item)));
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

/// Runs one item's change in a transaction.
fn write_item(
    t: &mut Tables<'_>,
    id: u64,
    key: &StoredKey,
    change: Change,
) -> Result<Written, Error> {
    let at = (id, key.hash.as_slice(), key.range.as_slice());
    let (old, old_len) = match t.items.get(at)? {
        Some(v) => (Some(decode_item(v.value())?), v.value().len() as u64),
        None => (None, 0),
    };
    let new = change(old.as_ref())?;
    let (count, size) = t.stats.get(id)?.map_or((0, 0), |v| v.value());
    let (count, size) = match &new {
        Some(item) => {
            let bytes = encode_item(item);
            t.items.insert(at, bytes.as_slice())?;
            (
                count + u64::from(old.is_none()),
                (size + bytes.len() as u64).saturating_sub(old_len),
            )
        }
        None => {
            if old.is_some() {
                t.items.remove(at)?;
            }
            (
                count.saturating_sub(u64::from(old.is_some())),
                size.saturating_sub(old_len),
            )
        }
    };
    t.stats.insert(id, (count, size))?;
    Ok(Written { old, new })
}

impl Drop for TableStore {
    fn drop(&mut self) {
        self.committer.stop();
    }
}

#[cfg(test)]
mod tests;
