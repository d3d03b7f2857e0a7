//! The object store's metadata in one redb file, written by a group-committing thread
//! ([`nimbus_store::commit`]): every change (a bucket, an object, an upload's part) is a job
//! run in a batch's write transaction. Reads open their own read transactions and never wait
//! for it.

use redb::{ReadableTable, Table, TableDefinition, WriteTransaction};
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

nimbus_store::redb_errors_into!(Error);

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
    pub(crate) fn open(txn: &'t WriteTransaction) -> Result<Self, redb::TableError> {
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

/// The object store's tables, for the committer.
pub(crate) struct Schema;

impl nimbus_store::commit::Schema for Schema {
    type Tables<'t> = Tables<'t>;
    type Error = Error;

    fn open(txn: &WriteTransaction) -> Result<Tables<'_>, redb::TableError> {
        Tables::open(txn)
    }
}

impl nimbus_store::commit::CommitError for Error {
    fn storage(message: String) -> Self {
        Error::Storage(message)
    }

    fn poisons(&self) -> bool {
        matches!(self, Error::Storage(_))
    }
}

/// The thread that writes the store's metadata.
pub(crate) type Committer = nimbus_store::commit::Committer<Schema>;

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
