//! The object store's metadata in one redb file, and the committer that writes it: every change
//! (a bucket, an object, an upload's part) is a job run on one thread, which takes whatever
//! jobs are waiting, runs them in one write transaction and commits it with one sync. Writes
//! that arrive together share that sync, so durable writes scale with concurrency instead of
//! queueing for one sync each. Reads open their own read transactions and never wait for it.

use std::path::PathBuf;
use std::sync::mpsc;

use redb::{Database, ReadableTable, Table, TableDefinition, WriteTransaction};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::Error;

/// Buckets by name: [`BucketRecord`] as JSON.
pub(crate) const BUCKETS: TableDefinition<&str, &[u8]> = TableDefinition::new("buckets");
/// Objects by (bucket, key), in S3's listing order (bytes of UTF-8): [`ObjectRecord`] as JSON.
pub(crate) const OBJECTS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("objects");
/// Bodies small enough to live in the metadata file, by blob id.
pub(crate) const INLINE: TableDefinition<u128, &[u8]> = TableDefinition::new("inline");
/// Blob files that an object or a part refers to; any other file in the blob directory is
/// left over from a write that never committed, and is removed at start.
pub(crate) const BLOB_FILES: TableDefinition<u128, ()> = TableDefinition::new("blob_files");
/// Multipart uploads by id: [`UploadRecord`] as JSON.
pub(crate) const UPLOADS: TableDefinition<&str, &[u8]> = TableDefinition::new("uploads");
/// Uploads by (bucket, key, id), for listing them in S3's order (ids sort by start time).
pub(crate) const UPLOADS_BY_KEY: TableDefinition<(&str, &str, &str), ()> =
    TableDefinition::new("uploads_by_key");
/// Parts by (upload id, part number): [`PartRecord`] as JSON.
pub(crate) const PARTS: TableDefinition<(&str, u32), &[u8]> = TableDefinition::new("parts");
/// Versions of objects that are not their key's current object, by (bucket, key, the
/// version's sequence number subtracted from `u64::MAX`), so that a key's versions read newest
/// first: [`ObjectRecord`] as JSON, objects and delete markers. A key's current object, if it
/// has one, is in [`OBJECTS`] and is newer than all of these; a key whose newest version is a
/// delete marker has none there.
pub(crate) const VERSIONS: TableDefinition<(&str, &str, u64), &[u8]> =
    TableDefinition::new("versions");
/// Notifications not yet handed to their targets, in order: [`crate::Notification`] as JSON.
pub(crate) const OUTBOX: TableDefinition<u64, &[u8]> = TableDefinition::new("outbox");
/// Counters: `sequence`, the last number given to a notification; `version`, the last given
/// to an object version.
pub(crate) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// A bucket.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BucketRecord {
    /// The account that owns it.
    pub owner: String,
    pub region: String,
    pub created_ms: i64,
    #[serde(default)]
    pub tags: Vec<(String, String)>,
    /// Which changes of its objects are sent where.
    #[serde(default)]
    pub notifications: Vec<crate::NotificationRule>,
    /// Cross-origin rules for browsers.
    #[serde(default)]
    pub cors: Vec<crate::CorsRule>,
    #[serde(default)]
    pub versioning: Versioning,
}

/// A bucket's versioning state. A bucket never versioned keeps one object per key; once
/// enabled, versioning can be suspended but never turned off.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Versioning {
    #[default]
    Unversioned,
    Enabled,
    Suspended,
}

/// A run of an object's bytes: a blob, inline or in a file of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Extent {
    pub blob: u128,
    pub len: u64,
    pub inline: bool,
}

/// The headers S3 stores with an object and returns with it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContentHeaders {
    pub content_type: Option<String>,
    pub content_encoding: Option<String>,
    pub content_disposition: Option<String>,
    pub content_language: Option<String>,
    pub cache_control: Option<String>,
    pub expires: Option<String>,
}

/// A part of a multipart object, as GetObject with `partNumber` needs it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartSummary {
    pub size: u64,
}

/// An object (or a delete marker).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ObjectRecord {
    pub size: u64,
    /// Without quotes: 32 hex digits, or for a multipart object 32 hex digits, `-`, the number
    /// of parts.
    pub etag: String,
    pub last_modified_ms: i64,
    #[serde(default)]
    pub headers: ContentHeaders,
    /// `x-amz-meta-*`, names in lowercase without the prefix.
    #[serde(default)]
    pub metadata: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub tags: Vec<(String, String)>,
    pub checksum: Option<crate::Checksum>,
    pub body: Vec<Extent>,
    /// The parts of a multipart object, in order; empty for one uploaded whole.
    #[serde(default)]
    pub parts: Vec<PartSummary>,
    /// The version's id; `None` for the null version (every object of a bucket never
    /// versioned, and those written while versioning is suspended).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_id: Option<String>,
    /// Whether this version is a delete marker (no body).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub delete_marker: bool,
    /// Orders a key's versions: 0 for an object written before its bucket was versioned.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub seq: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A multipart upload in progress.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UploadRecord {
    pub bucket: String,
    pub key: String,
    pub initiated_ms: i64,
    /// Who started it (an ARN), as ListMultipartUploads shows it.
    pub initiator: String,
    pub headers: ContentHeaders,
    pub metadata: std::collections::BTreeMap<String, String>,
    pub tags: Vec<(String, String)>,
    pub checksum_algorithm: Option<crate::ChecksumAlgorithm>,
    pub checksum_kind: crate::ChecksumKind,
}

/// A part uploaded.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartRecord {
    pub size: u64,
    pub etag: String,
    pub last_modified_ms: i64,
    pub checksum: Option<crate::Checksum>,
    pub body: Extent,
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(bytes).map_err(|e| Error::Storage(format!("a damaged record: {e}")))
}

impl From<redb::Error> for Error {
    fn from(e: redb::Error) -> Self {
        Error::Storage(e.to_string())
    }
}

macro_rules! storage_from {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Self {
                Error::Storage(e.to_string())
            }
        }
    )*};
}
storage_from!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::DatabaseError
);

/// Every table, opened once per transaction: opening a table looks it up and closing a changed
/// one writes its root back, so a batch of jobs shares one open of each.
pub(crate) struct Tables<'t> {
    pub buckets: Table<'t, &'static str, &'static [u8]>,
    pub objects: Table<'t, (&'static str, &'static str), &'static [u8]>,
    pub versions: Table<'t, (&'static str, &'static str, u64), &'static [u8]>,
    pub inline: Table<'t, u128, &'static [u8]>,
    pub blob_files: Table<'t, u128, ()>,
    pub uploads: Table<'t, &'static str, &'static [u8]>,
    pub uploads_by_key: Table<'t, (&'static str, &'static str, &'static str), ()>,
    pub parts: Table<'t, (&'static str, u32), &'static [u8]>,
    pub outbox: Table<'t, u64, &'static [u8]>,
    pub meta: Table<'t, &'static str, u64>,
}

impl<'t> Tables<'t> {
    pub(crate) fn open(txn: &'t WriteTransaction) -> Result<Self, Error> {
        Ok(Self {
            buckets: txn.open_table(BUCKETS)?,
            objects: txn.open_table(OBJECTS)?,
            versions: txn.open_table(VERSIONS)?,
            inline: txn.open_table(INLINE)?,
            blob_files: txn.open_table(BLOB_FILES)?,
            uploads: txn.open_table(UPLOADS)?,
            uploads_by_key: txn.open_table(UPLOADS_BY_KEY)?,
            parts: txn.open_table(PARTS)?,
            outbox: txn.open_table(OUTBOX)?,
            meta: txn.open_table(META)?,
        })
    }
}

/// What a job leaves to do once its transaction has committed, or failed to.
type Finish = Box<dyn FnOnce(Result<(), Error>) + Send>;
/// A change, run inside the committer's transaction. It returns what to do after the commit,
/// and whether the transaction is now unusable (a storage error midway), in which case the
/// whole batch is abandoned.
type Job = Box<dyn for<'a, 't> FnOnce(&'a mut Tables<'t>) -> (Finish, bool) + Send>;

/// The thread that writes metadata.
pub(crate) struct Committer {
    jobs: std::sync::Mutex<Option<mpsc::Sender<Job>>>,
    thread: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// The most jobs one transaction takes.
const MAX_BATCH: usize = 512;

impl Committer {
    pub(crate) fn start(db: std::sync::Arc<Database>) -> Self {
        let (tx, rx) = mpsc::channel::<Job>();
        let thread = std::thread::Builder::new()
            .name("nimbus-objects-commit".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut batch = vec![first];
                    while batch.len() < MAX_BATCH {
                        match rx.try_recv() {
                            Ok(job) => batch.push(job),
                            Err(_) => break,
                        }
                    }
                    run_batch(&db, batch);
                }
            })
            .ok();
        Self {
            jobs: std::sync::Mutex::new(Some(tx)),
            thread: std::sync::Mutex::new(thread),
        }
    }

    /// Runs `op` in the next transaction and waits for its commit. `op` checks before it
    /// writes: an `Err` it returns must leave the transaction as it found it, unless it is
    /// [`Error::Storage`]. The files it returns are removed once the change is durable (the
    /// blobs that the change made unreferenced).
    pub(crate) async fn write<T: Send + 'static>(
        &self,
        op: impl for<'a, 't> FnOnce(&'a mut Tables<'t>) -> Result<(T, Vec<PathBuf>), Error>
        + Send
        + 'static,
    ) -> Result<T, Error> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |tables| match op(tables) {
            Ok((value, files)) => {
                let finish: Finish = Box::new(move |committed| {
                    let result = committed.map(|()| {
                        for f in &files {
                            if let Err(e) = std::fs::remove_file(f)
                                && e.kind() != std::io::ErrorKind::NotFound
                            {
                                tracing::warn!(file = %f.display(), error = %e, "could not remove an unreferenced blob");
                            }
                        }
                        value
                    });
                    let _ = reply.send(result);
                });
                (finish, false)
            }
            Err(e) => {
                let poisoned = matches!(e, Error::Storage(_));
                let finish: Finish = Box::new(move |committed| {
                    let _ = reply.send(Err(committed.err().unwrap_or(e)));
                });
                (finish, poisoned)
            }
        });
        let sent = self
            .jobs
            .lock()
            .ok()
            .and_then(|j| j.as_ref().map(|tx| tx.send(job).is_ok()))
            .unwrap_or(false);
        if !sent {
            return Err(Error::Storage("the object store is shut down".into()));
        }
        answer
            .await
            .map_err(|_| Error::Storage("the object store's committer stopped".into()))?
    }

    /// Stops taking jobs and waits for those already taken.
    pub(crate) fn stop(&self) {
        if let Ok(mut jobs) = self.jobs.lock() {
            jobs.take();
        }
        if let Some(thread) = self.thread.lock().ok().and_then(|mut t| t.take()) {
            let _ = thread.join();
        }
    }
}

fn run_batch(db: &Database, batch: Vec<Job>) {
    let txn = match db.begin_write() {
        Ok(t) => t,
        Err(e) => {
            // Dropping the jobs drops their reply channels: each waiting writer gets an error.
            tracing::error!(error = %e, "the object store could not start a transaction");
            return;
        }
    };
    let mut finishes = Vec::with_capacity(batch.len());
    let mut poisoned = false;
    match Tables::open(&txn) {
        Ok(mut tables) => {
            for job in batch {
                let (finish, bad) = job(&mut tables);
                poisoned |= bad;
                finishes.push(finish);
            }
        }
        Err(e) => {
            // Dropping the jobs drops their reply channels: each waiting writer gets an error.
            tracing::error!(error = %e, "the object store could not open its tables");
            return;
        }
    }
    let result = if poisoned {
        let _ = txn.abort();
        Err(Error::Storage(
            "a storage error in the same transaction; nothing was written".into(),
        ))
    } else {
        txn.commit().map_err(Error::from)
    };
    for finish in finishes {
        finish(result.clone());
    }
}

/// Reads one record of a table keyed by `K`.
pub(crate) fn get_json<K: redb::Key + 'static, T: DeserializeOwned>(
    table: &impl ReadableTable<K, &'static [u8]>,
    key: K::SelfType<'_>,
) -> Result<Option<T>, Error> {
    match table.get(key)? {
        Some(v) => Ok(Some(decode(v.value())?)),
        None => Ok(None),
    }
}
