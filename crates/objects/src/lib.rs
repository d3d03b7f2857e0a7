//! The object store: buckets, objects, multipart uploads, on the node's disk. Its rules are
//! S3's (names, sizes, conditions, listing order, ETags, checksums); it knows no wire format.
//!
//! Layout under its directory: `objects.redb` holds buckets, object records, upload records
//! and bodies of up to [`INLINE_MAX`] bytes; larger bodies are blob files under `blobs/`,
//! written and synced before the record that names them commits, and never changed after.
//! An object replaced or deleted gives up its blob files once the change is durable; a blob
//! file that no record names (a write cut short by a crash) is removed at start. So an
//! acknowledged write is on disk whole, and an unacknowledged one is never visible.

#![forbid(unsafe_code)]

mod blob;
mod cors;
mod db;
mod digest;
mod list;
mod names;
mod notify;
mod versions;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::Stream;
use redb::{Database, ReadableTable, ReadableTableMetadata};

pub use blob::{BodyReader, INLINE_MAX, Staged};
pub use cors::{CorsRule, MAX_CORS_RULES, check_cors, cors_match};
pub use db::{
    BucketRecord, ContentHeaders, Extent, ObjectRecord, PartRecord, PartSummary, UploadRecord,
    Versioning,
};
pub use digest::{
    Checksum, ChecksumAlgorithm, ChecksumKind, Digests, Expected, Wanted, multipart_checksum,
};
pub use list::{ListPage, ListQuery, ListedObject};
pub use names::{MAX_KEY_BYTES, check_bucket_name, check_key};
pub use notify::{Change, Notification, NotificationRule, Target, Targets, check_rules};
pub use versions::{ListedVersion, VersionPage, VersionQuery, VersionRef, shown_id};

use blob::{BlobDir, Segment};
use db::{
    BLOB_FILES, BUCKETS, Committer, INLINE, META, OBJECTS, OUTBOX, PARTS, Tables, UPLOADS,
    UPLOADS_BY_KEY, VERSIONS, decode, encode, get_json,
};

/// The largest object one PUT may store (S3's limit).
pub const MAX_PUT_BYTES: u64 = 5 * 1024 * 1024 * 1024;
/// The largest part.
pub const MAX_PART_BYTES: u64 = MAX_PUT_BYTES;
/// The smallest part but the last.
pub const MIN_PART_BYTES: u64 = 5 * 1024 * 1024;
/// Part numbers run from 1 to this.
pub const MAX_PARTS: u32 = 10_000;

#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    #[error("The specified bucket is not valid: {0}")]
    InvalidBucketName(String),
    #[error("The specified bucket does not exist")]
    NoSuchBucket,
    #[error("The requested bucket name is not available.")]
    BucketAlreadyExists,
    #[error("Your previous request to create the named bucket succeeded and you already own it.")]
    BucketAlreadyOwnedByYou,
    #[error("The bucket you tried to delete is not empty")]
    BucketNotEmpty,
    #[error("The specified key does not exist.")]
    NoSuchKey,
    #[error("The specified version does not exist.")]
    NoSuchVersion,
    /// The version read is a delete marker: named by the request (S3 answers 405), or the
    /// key's newest version (404, NoSuchKey). Its id, for the response's headers.
    #[error("{}", if *named { "The specified method is not allowed against this resource." } else { "The specified key does not exist." })]
    DeleteMarker {
        version_id: Option<String>,
        named: bool,
    },
    #[error("Your key is too long: {0} bytes, the most is 1024")]
    KeyTooLong(usize),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    InvalidRequest(String),
    #[error(
        "The XML you provided was not well-formed or did not validate against our published schema: {0}"
    )]
    MalformedXml(String),
    #[error("At least one of the pre-conditions you specified did not hold")]
    PreconditionFailed,
    /// A conditional read whose object did not change: the object, for the response headers.
    #[error("Not Modified")]
    NotModified(Box<ObjectRecord>),
    #[error("The requested range is not satisfiable")]
    InvalidRange { size: u64 },
    #[error("The Content-MD5 you specified is not valid.")]
    InvalidDigest,
    #[error("{0}")]
    BadDigest(String),
    #[error(
        "You did not provide the number of bytes specified by the Content-Length HTTP header: \
         expected {expected}, got {got}"
    )]
    IncompleteBody { expected: u64, got: u64 },
    #[error("Your proposed upload exceeds the maximum allowed size of {0} bytes")]
    EntityTooLarge(u64),
    #[error("Your proposed upload is smaller than the minimum allowed size")]
    EntityTooSmall,
    #[error(
        "The specified upload does not exist. The upload ID may be invalid, or the upload may \
         have been aborted or completed."
    )]
    NoSuchUpload,
    #[error("{0}")]
    InvalidPart(String),
    #[error("The list of parts was not in ascending order. Parts must be ordered by part number.")]
    InvalidPartOrder,
    /// The body could not be read (the client went away, or its framing was wrong); the
    /// stream's own error, for the protocol to map.
    #[error("the request body could not be read: {0}")]
    Body(Arc<dyn std::error::Error + Send + Sync>),
    #[error("the object store failed: {0}")]
    Storage(String),
}

/// A conditional read's `If-Match` / `If-None-Match`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EtagMatch {
    /// `*`
    Any,
    /// ETags without quotes.
    Tags(Vec<String>),
}

impl EtagMatch {
    fn matches(&self, etag: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Tags(tags) => tags.iter().any(|t| t == etag),
        }
    }
}

/// The conditions of a GET, HEAD or copy source, as S3 evaluates them.
#[derive(Debug, Clone, Default)]
pub struct ReadConditions {
    pub if_match: Option<EtagMatch>,
    pub if_none_match: Option<EtagMatch>,
    pub if_modified_since_ms: Option<i64>,
    pub if_unmodified_since_ms: Option<i64>,
}

impl ReadConditions {
    /// `If-Match` (or, without it, `If-Unmodified-Since`) failing is 412; `If-None-Match`
    /// matching (or, without it, `If-Modified-Since` finding no change) is 304. Times compare
    /// in whole seconds, as HTTP dates carry them.
    pub fn check(&self, record: &ObjectRecord) -> Result<(), Error> {
        let modified_s = record.last_modified_ms.div_euclid(1000);
        match &self.if_match {
            Some(m) if !m.matches(&record.etag) => return Err(Error::PreconditionFailed),
            Some(_) => {}
            None => {
                if let Some(since) = self.if_unmodified_since_ms
                    && modified_s > since.div_euclid(1000)
                {
                    return Err(Error::PreconditionFailed);
                }
            }
        }
        match &self.if_none_match {
            Some(m) if m.matches(&record.etag) => {
                return Err(Error::NotModified(Box::new(record.clone())));
            }
            Some(_) => {}
            None => {
                if let Some(since) = self.if_modified_since_ms
                    && modified_s <= since.div_euclid(1000)
                {
                    return Err(Error::NotModified(Box::new(record.clone())));
                }
            }
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.if_match.is_none()
            && self.if_none_match.is_none()
            && self.if_modified_since_ms.is_none()
            && self.if_unmodified_since_ms.is_none()
    }
}

/// The conditions of a write: `If-None-Match: *` (only if nothing is there) and `If-Match`
/// (only over this ETag).
#[derive(Debug, Clone, Default)]
pub struct WriteConditions {
    pub if_none_match_any: bool,
    pub if_match: Option<String>,
}

impl WriteConditions {
    fn check(&self, current: Option<&ObjectRecord>) -> Result<(), Error> {
        if self.if_none_match_any && current.is_some() {
            return Err(Error::PreconditionFailed);
        }
        if let Some(etag) = &self.if_match {
            match current {
                None => return Err(Error::NoSuchKey),
                Some(c) if &c.etag != etag => return Err(Error::PreconditionFailed),
                Some(_) => {}
            }
        }
        Ok(())
    }
}

/// A byte range of a GET.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// `bytes=first-` or `bytes=first-last`.
    From { first: u64, last: Option<u64> },
    /// `bytes=-n`: the last n bytes.
    Suffix(u64),
}

impl ByteRange {
    /// The first and last byte (inclusive) this range selects of `size` bytes.
    pub fn resolve(self, size: u64) -> Result<(u64, u64), Error> {
        let bad = Err(Error::InvalidRange { size });
        match self {
            Self::From { first, last } => {
                if first >= size || last.is_some_and(|l| l < first) {
                    return bad;
                }
                Ok((first, last.map_or(size - 1, |l| l.min(size - 1))))
            }
            Self::Suffix(0) => bad,
            Self::Suffix(n) => {
                if size == 0 {
                    return bad;
                }
                Ok((size.saturating_sub(n), size - 1))
            }
        }
    }
}

/// What a new object carries besides its bytes.
#[derive(Debug, Clone, Default)]
pub struct NewObject {
    pub headers: ContentHeaders,
    pub metadata: BTreeMap<String, String>,
    pub tags: Vec<(String, String)>,
}

/// Who makes a change, and how: what its notification records say.
#[derive(Debug, Clone, Default)]
pub struct Actor {
    /// The caller's ARN.
    pub principal: String,
    /// Put or Post, for a new object's bytes.
    pub change: Change,
}

/// An object read: its record, and the bytes asked for.
pub struct Opened {
    pub record: ObjectRecord,
    pub body: BodyReader,
    /// The first and last byte sent, when a range or a part was asked for.
    pub range: Option<(u64, u64)>,
}

/// What CopyObject does with the source's metadata.
#[derive(Debug, Clone)]
pub enum MetadataDirective {
    Copy,
    Replace(NewObject),
}

/// A key, or one of its versions, to delete.
#[derive(Debug, Clone)]
pub struct Doomed {
    pub key: String,
    pub version: Option<String>,
}

/// What deleting a key or a version did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Removal {
    /// A delete marker was made, or the version removed was one.
    pub delete_marker: bool,
    /// The version made or removed (in a bucket never versioned, none).
    pub version_id: Option<String>,
}

/// One key of a DeleteObjects.
#[derive(Debug, Clone)]
pub struct Deleted {
    pub key: String,
    /// The version asked for.
    pub version: Option<String>,
    pub result: Result<Removal, Error>,
}

/// A part of CompleteMultipartUpload's list.
#[derive(Debug, Clone)]
pub struct CompletedPart {
    pub number: u32,
    /// Without quotes.
    pub etag: String,
    pub checksum: Option<String>,
}

/// An upload in a listing.
#[derive(Debug, Clone)]
pub struct ListedUpload {
    pub id: String,
    pub record: UploadRecord,
}

/// The object store.
pub struct Objects {
    db: Arc<Database>,
    blobs: BlobDir,
    committer: Committer,
    /// Woken when a change leaves notifications in the outbox.
    outbox_filled: Arc<tokio::sync::Notify>,
    /// Every bucket's record, as last committed: every request looks its bucket up (the
    /// owner for the access check, existence, rules), so this saves a read transaction each.
    /// Changed only by [`Self::refresh_bucket`] after a bucket's change commits.
    buckets: std::sync::RwLock<HashMap<String, Arc<BucketRecord>>>,
}

impl Objects {
    /// Opens (or creates) the store in `dir`, and removes blob files no record names.
    pub fn open(dir: &Path) -> Result<Self, Error> {
        std::fs::create_dir_all(dir).map_err(blob::io)?;
        let db = Database::create(dir.join("objects.redb"))?;
        {
            let txn = db.begin_write()?;
            txn.open_table(BUCKETS)?;
            txn.open_table(OBJECTS)?;
            txn.open_table(VERSIONS)?;
            txn.open_table(INLINE)?;
            txn.open_table(BLOB_FILES)?;
            txn.open_table(UPLOADS)?;
            txn.open_table(UPLOADS_BY_KEY)?;
            txn.open_table(PARTS)?;
            txn.open_table(OUTBOX)?;
            txn.open_table(META)?;
            txn.commit()?;
        }
        let blobs = BlobDir {
            root: dir.join("blobs"),
        };
        std::fs::create_dir_all(&blobs.root).map_err(blob::io)?;
        let db = Arc::new(db);
        let orphans = {
            let txn = db.begin_read()?;
            let files = txn.open_table(BLOB_FILES)?;
            let mut orphans = Vec::new();
            for id in blobs.scan().map_err(blob::io)? {
                if files.get(id)?.is_none() {
                    orphans.push(id);
                }
            }
            orphans
        };
        for id in &orphans {
            let _ = std::fs::remove_file(blobs.path(*id));
        }
        if !orphans.is_empty() {
            tracing::info!(
                files = orphans.len(),
                "removed blob files of writes that never committed"
            );
        }
        let buckets = {
            let txn = db.begin_read()?;
            let table = txn.open_table(BUCKETS)?;
            let mut all = HashMap::new();
            for entry in table.iter()? {
                let (name, value) = entry?;
                all.insert(name.value().to_owned(), Arc::new(decode(value.value())?));
            }
            all
        };
        Ok(Self {
            committer: Committer::start(db.clone(), "nimbus-objects-commit"),
            db,
            blobs,
            outbox_filled: Arc::new(tokio::sync::Notify::new()),
            buckets: std::sync::RwLock::new(buckets),
        })
    }

    /// Stops the committer after the writes already taken.
    pub fn shutdown(&self) {
        self.committer.stop();
    }

    // ---- buckets ----

    /// Creates a bucket owned by `owner`.
    pub async fn create_bucket(&self, owner: &str, name: &str, region: &str) -> Result<(), Error> {
        check_bucket_name(name)?;
        let created = name;
        let (owner, name, region) = (owner.to_owned(), name.to_owned(), region.to_owned());
        self.committer
            .write_files(move |t| {
                let buckets = &mut t.buckets;
                if let Some(existing) = get_json::<_, BucketRecord>(&*buckets, name.as_str())? {
                    return Err(if existing.owner == owner {
                        Error::BucketAlreadyOwnedByYou
                    } else {
                        Error::BucketAlreadyExists
                    });
                }
                let record = BucketRecord {
                    owner,
                    region,
                    created_ms: nimbus_types::time::now_ms(),
                    tags: Vec::new(),
                    notifications: Vec::new(),
                    cors: Vec::new(),
                    versioning: Versioning::Unversioned,
                };
                buckets.insert(name.as_str(), encode(&record).as_slice())?;
                Ok(((), Vec::new()))
            })
            .await?;
        self.refresh_bucket(created)
    }

    /// Sets the cached record of a bucket to what is committed now. Under the cache's lock, so
    /// that of two changes committed one after the other, the cache ends with the later.
    fn refresh_bucket(&self, name: &str) -> Result<(), Error> {
        let mut cache = self
            .buckets
            .write()
            .map_err(|_| Error::Storage("the bucket cache is poisoned".into()))?;
        let txn = self.db.begin_read()?;
        let table = txn.open_table(BUCKETS)?;
        match get_json::<_, BucketRecord>(&table, name)? {
            Some(record) => cache.insert(name.to_owned(), Arc::new(record)),
            None => cache.remove(name),
        };
        Ok(())
    }

    /// A bucket, if it exists.
    pub fn bucket(&self, name: &str) -> Result<Option<Arc<BucketRecord>>, Error> {
        let cache = self
            .buckets
            .read()
            .map_err(|_| Error::Storage("the bucket cache is poisoned".into()))?;
        Ok(cache.get(name).cloned())
    }

    /// The buckets `owner` owns, by name.
    pub fn buckets_of(&self, owner: &str) -> Result<Vec<(String, Arc<BucketRecord>)>, Error> {
        let cache = self
            .buckets
            .read()
            .map_err(|_| Error::Storage("the bucket cache is poisoned".into()))?;
        let mut out: Vec<(String, Arc<BucketRecord>)> = cache
            .iter()
            .filter(|(_, r)| r.owner == owner)
            .map(|(n, r)| (n.clone(), r.clone()))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// Deletes an empty bucket; uploads still in progress in it are aborted.
    pub async fn delete_bucket(&self, name: &str) -> Result<(), Error> {
        let deleted = name;
        let name = name.to_owned();
        let blobs = self.blobs.clone();
        self.committer
            .write_files(move |t| {
                if t.buckets.get(name.as_str())?.is_none() {
                    return Err(Error::NoSuchBucket);
                }
                {
                    let objects = &t.objects;
                    let mut range = objects.range((name.as_str(), "")..)?;
                    if let Some(first) = range.next() {
                        let (k, _) = first?;
                        if k.value().0 == name {
                            return Err(Error::BucketNotEmpty);
                        }
                    }
                }
                if versions::any(&t.versions, &name)? {
                    return Err(Error::BucketNotEmpty);
                }
                let uploads: Vec<String> = {
                    let by_key = &t.uploads_by_key;
                    let mut ids = Vec::new();
                    for entry in by_key.range((name.as_str(), "", "")..)? {
                        let (k, _) = entry?;
                        let (bucket, _, id) = k.value();
                        if bucket != name {
                            break;
                        }
                        ids.push(id.to_owned());
                    }
                    ids
                };
                let mut files = Vec::new();
                for id in uploads {
                    files.extend(remove_upload(t, &blobs, &id)?);
                }
                t.buckets.remove(name.as_str())?;
                Ok(((), files))
            })
            .await?;
        self.refresh_bucket(deleted)
    }

    /// Replaces a bucket's tags.
    pub async fn set_bucket_tags(
        &self,
        name: &str,
        tags: Vec<(String, String)>,
    ) -> Result<(), Error> {
        self.modify_bucket(name, move |b| b.tags = tags).await
    }

    /// Replaces a bucket's notification configuration, after checking its rules and that
    /// each target exists and may receive the bucket's events.
    pub async fn set_notifications(
        &self,
        name: &str,
        rules: Vec<NotificationRule>,
        targets: &dyn Targets,
    ) -> Result<(), Error> {
        check_rules(&rules)?;
        let bucket = self.bucket(name)?.ok_or(Error::NoSuchBucket)?;
        for rule in &rules {
            targets.check(&bucket.owner, &rule.target).map_err(|why| {
                Error::InvalidArgument(format!(
                    "Unable to validate the following destination configurations: {}: {why}",
                    rule.target.arn()
                ))
            })?;
        }
        self.modify_bucket(name, move |b| b.notifications = rules)
            .await
    }

    /// Turns a bucket's versioning on or suspends it; a bucket once versioned cannot go back
    /// to never having been.
    pub async fn set_versioning(&self, name: &str, state: Versioning) -> Result<(), Error> {
        if state == Versioning::Unversioned {
            return Err(Error::MalformedXml(
                "versioning can be Enabled or Suspended".into(),
            ));
        }
        self.modify_bucket(name, move |b| b.versioning = state)
            .await
    }

    /// Replaces a bucket's CORS rules (none: removes them).
    pub async fn set_cors(&self, name: &str, rules: Vec<CorsRule>) -> Result<(), Error> {
        if !rules.is_empty() {
            check_cors(&rules)?;
        }
        self.modify_bucket(name, move |b| b.cors = rules).await
    }

    async fn modify_bucket(
        &self,
        name: &str,
        change: impl FnOnce(&mut BucketRecord) + Send + 'static,
    ) -> Result<(), Error> {
        let changed = name;
        let name = name.to_owned();
        self.committer
            .write_files(move |t| {
                let buckets = &mut t.buckets;
                let mut record: BucketRecord =
                    get_json(&*buckets, name.as_str())?.ok_or(Error::NoSuchBucket)?;
                change(&mut record);
                buckets.insert(name.as_str(), encode(&record).as_slice())?;
                Ok(((), Vec::new()))
            })
            .await?;
        self.refresh_bucket(changed)
    }

    // ---- notifications ----

    /// The oldest notifications not yet handed over, at most `max`, with their numbers.
    pub fn outbox(&self, max: usize) -> Result<Vec<(u64, Notification)>, Error> {
        let txn = self.db.begin_read()?;
        let outbox = txn.open_table(OUTBOX)?;
        let mut out = Vec::new();
        for entry in outbox.iter()?.take(max) {
            let (k, v) = entry?;
            out.push((k.value(), decode(v.value())?));
        }
        Ok(out)
    }

    /// Forgets notifications their targets have.
    pub async fn delivered(&self, numbers: Vec<u64>) -> Result<(), Error> {
        self.committer
            .write_files(move |t| {
                let outbox = &mut t.outbox;
                for n in numbers {
                    outbox.remove(n)?;
                }
                Ok(((), Vec::new()))
            })
            .await
    }

    /// Resolves when a change has left notifications in the outbox since the last call.
    pub async fn outbox_filled(&self) {
        self.outbox_filled.notified().await;
    }

    /// Wakes the dispatcher when a change sent notifications.
    fn sent(&self, sent: bool) {
        if sent {
            self.outbox_filled.notify_one();
        }
    }

    // ---- objects ----

    /// Reads a body to its end into a staged body, ready for [`Self::put`] or
    /// [`Self::put_part`]. Bodies longer than `max` are refused.
    pub async fn stage<S, E>(
        &self,
        body: S,
        wanted: Wanted,
        expected_len: Option<u64>,
        max: u64,
    ) -> Result<Staged, Error>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        blob::stage(&self.blobs, body, wanted, expected_len, max).await
    }

    /// Stores a staged body as `bucket/key`, replacing what was there.
    pub async fn put(
        &self,
        bucket: &str,
        key: &str,
        mut staged: Staged,
        new: NewObject,
        conditions: WriteConditions,
        actor: &Actor,
    ) -> Result<ObjectRecord, Error> {
        check_key(key)?;
        let (bucket, key) = (bucket.to_owned(), key.to_owned());
        let blobs = self.blobs.clone();
        let actor = actor.clone();
        let (record, sent) = self
            .committer
            .write_files(move |t| {
                let place = bucket_in(t, &bucket)?;
                let current = get_json(&t.objects, (bucket.as_str(), key.as_str()))?;
                conditions.check(current.as_ref())?;
                let digests = staged.digests.clone();
                let (extent, inline, _) = staged.take();
                let record = ObjectRecord {
                    size: digests.len,
                    etag: digest::to_hex(&digests.md5),
                    last_modified_ms: nimbus_types::time::now_ms(),
                    headers: new.headers,
                    metadata: new.metadata,
                    tags: new.tags,
                    checksum: digests.checksum,
                    body: vec![extent],
                    ..Default::default()
                };
                store_extent(t, extent, inline)?;
                let (record, files) =
                    versions::install(t, &blobs, &bucket, &key, place.versioning, record)?;
                let sent = emit(
                    t,
                    &place,
                    &bucket,
                    &key,
                    actor.change,
                    &actor.principal,
                    &record,
                )?;
                Ok(((record, sent), files))
            })
            .await?;
        self.sent(sent);
        Ok(record)
    }

    /// An object's record: the current one, or the version named.
    pub fn head(
        &self,
        bucket: &str,
        key: &str,
        version: Option<&VersionRef>,
    ) -> Result<ObjectRecord, Error> {
        let txn = self.db.begin_read()?;
        let objects = txn.open_table(OBJECTS)?;
        self.lookup(&txn, &objects, bucket, key, version)
    }

    /// The version a read names (the current object without one). The versions table is
    /// opened only when a version is named or the key has no current object, so a plain read
    /// costs one lookup.
    fn lookup(
        &self,
        txn: &redb::ReadTransaction,
        objects: &impl ReadableTable<(&'static str, &'static str), &'static [u8]>,
        bucket: &str,
        key: &str,
        version: Option<&VersionRef>,
    ) -> Result<ObjectRecord, Error> {
        if version.is_none()
            && let Some(record) = get_json(objects, (bucket, key))?
        {
            return Ok(record);
        }
        let versions = txn.open_table(VERSIONS)?;
        if let Some(v) = version {
            return match versions::find(objects, &versions, bucket, key, Some(v))? {
                Some(r) if r.delete_marker => Err(Error::DeleteMarker {
                    version_id: r.version_id,
                    named: true,
                }),
                Some(r) => Ok(r),
                None => Err(match self.bucket(bucket)? {
                    Some(_) => Error::NoSuchVersion,
                    None => Error::NoSuchBucket,
                }),
            };
        }
        Err(match self.bucket(bucket)? {
            None => Error::NoSuchBucket,
            Some(_) => match versions::hiding_marker(&versions, bucket, key)? {
                Some(marker) => Error::DeleteMarker {
                    version_id: marker.version_id,
                    named: false,
                },
                None => Error::NoSuchKey,
            },
        })
    }

    /// Opens an object for reading: the whole of it, a byte range, or one part of a multipart
    /// object (`part`, from 1), after checking the read's conditions.
    pub fn open_object(
        &self,
        bucket: &str,
        key: &str,
        version: Option<&VersionRef>,
        conditions: &ReadConditions,
        range: Option<ByteRange>,
        part: Option<u32>,
    ) -> Result<Opened, Error> {
        // A blob file can go between reading the record and opening the file (the object was
        // replaced meanwhile): then the newer record is read again.
        let mut attempts = 0;
        loop {
            let txn = self.db.begin_read()?;
            let objects = txn.open_table(OBJECTS)?;
            let record = self.lookup(&txn, &objects, bucket, key, version)?;
            conditions.check(&record)?;
            let span = match (part, range) {
                (Some(n), _) => Some(part_span(&record, n)?),
                (None, Some(r)) => Some(r.resolve(record.size)?),
                (None, None) => None,
            };
            let inline = txn.open_table(INLINE)?;
            match self.segments(&inline, &record, span) {
                Ok(segments) => {
                    return Ok(Opened {
                        body: BodyReader::new(segments),
                        range: span,
                        record,
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && attempts < 3 => {
                    attempts += 1;
                }
                Err(e) => return Err(blob::io(e)),
            }
        }
    }

    /// The sources of the bytes `span` selects (all of them without one).
    fn segments(
        &self,
        inline: &impl ReadableTable<u128, &'static [u8]>,
        record: &ObjectRecord,
        span: Option<(u64, u64)>,
    ) -> std::io::Result<Vec<Segment>> {
        let (first, end) = match span {
            Some((f, l)) => (f, l + 1),
            None => (0, record.size),
        };
        let mut out = Vec::new();
        let mut at = 0u64;
        for extent in &record.body {
            let (start, stop) = (at, at + extent.len);
            at = stop;
            if stop <= first || start >= end {
                continue;
            }
            let from = first.max(start) - start;
            let to = end.min(stop) - start;
            if extent.inline {
                let bytes = inline
                    .get(extent.blob)
                    .map_err(|e| std::io::Error::other(e.to_string()))?
                    .map(|v| Bytes::copy_from_slice(v.value()))
                    .unwrap_or_default();
                let to = (to as usize).min(bytes.len());
                let from = (from as usize).min(to);
                out.push(Segment::Inline(bytes.slice(from..to)));
            } else {
                let file = std::fs::File::open(self.blobs.path(extent.blob))?;
                out.push(Segment::File {
                    file: Arc::new(file),
                    offset: from,
                    len: to - from,
                });
            }
        }
        Ok(out)
    }

    /// Deletes a key (in a versioned bucket: hides it under a new delete marker) or, named,
    /// one version for good. A key or version that is not there is no error.
    pub async fn delete(
        &self,
        bucket: &str,
        key: &str,
        version: Option<&str>,
        actor: &Actor,
    ) -> Result<Removal, Error> {
        let target = Doomed {
            key: key.to_owned(),
            version: version.map(str::to_owned),
        };
        let mut results = self.delete_many(bucket, vec![target], actor).await?;
        results.pop().map_or(Ok(Removal::default()), |d| d.result)
    }

    /// Deletes several keys or versions in one change.
    pub async fn delete_many(
        &self,
        bucket: &str,
        targets: Vec<Doomed>,
        actor: &Actor,
    ) -> Result<Vec<Deleted>, Error> {
        let bucket = bucket.to_owned();
        let blobs = self.blobs.clone();
        let principal = actor.principal.clone();
        let (out, sent) = self
            .committer
            .write_files(move |t| {
                let place = bucket_in(t, &bucket)?;
                let mut files = Vec::new();
                let mut out = Vec::with_capacity(targets.len());
                let mut sent = false;
                for Doomed { key, version } in targets {
                    let named = match (check_key(&key), version.as_deref().map(VersionRef::parse)) {
                        (Err(e), _) | (Ok(()), Some(Err(e))) => {
                            out.push(Deleted {
                                key,
                                version,
                                result: Err(e),
                            });
                            continue;
                        }
                        (Ok(()), Some(Ok(v))) => Some(v),
                        (Ok(()), None) => None,
                    };
                    let removal = match named {
                        Some(v) => {
                            let (removed, gone) = versions::remove(t, &blobs, &bucket, &key, &v)?;
                            files.extend(gone);
                            match removed {
                                Some(r) => {
                                    sent |= emit(
                                        t,
                                        &place,
                                        &bucket,
                                        &key,
                                        Change::Delete,
                                        &principal,
                                        &r,
                                    )?;
                                    Removal {
                                        delete_marker: r.delete_marker,
                                        version_id: Some(shown_id(&r).to_owned()),
                                    }
                                }
                                None => Removal {
                                    delete_marker: false,
                                    version_id: version.clone(),
                                },
                            }
                        }
                        None => {
                            let (removal, gone, emitted) =
                                delete_key(t, &blobs, &place, &bucket, &key, &principal)?;
                            files.extend(gone);
                            sent |= emitted;
                            removal
                        }
                    };
                    out.push(Deleted {
                        key,
                        version,
                        result: Ok(removal),
                    });
                }
                Ok(((out, sent), files))
            })
            .await?;
        self.sent(sent);
        Ok(out)
    }

    /// Copies an object (or replaces an object's metadata, when source and destination are
    /// the same). Blob files are shared by hard links, never copied.
    #[allow(clippy::too_many_arguments)]
    pub async fn copy(
        &self,
        source_bucket: &str,
        source_key: &str,
        source_version: Option<&VersionRef>,
        source_conditions: &ReadConditions,
        bucket: &str,
        key: &str,
        directive: MetadataDirective,
        conditions: WriteConditions,
        actor: &Actor,
    ) -> Result<ObjectRecord, Error> {
        check_key(key)?;
        let source = self.head(source_bucket, source_key, source_version)?;
        source_conditions.check(&source).map_err(|e| match e {
            Error::NotModified(_) => Error::PreconditionFailed,
            other => other,
        })?;
        if source_bucket == bucket
            && source_key == key
            && source_version.is_none()
            && matches!(directive, MetadataDirective::Copy)
        {
            return Err(Error::InvalidRequest(
                "This copy request is illegal because it is trying to copy an object to itself \
                 without changing the object's metadata, storage class, website redirect \
                 location or encryption attributes."
                    .into(),
            ));
        }
        if self.bucket(bucket)?.is_none() {
            return Err(Error::NoSuchBucket);
        }
        // New blob files for the copy, linked to the source's; the source may be replaced
        // meanwhile, which the commit notices.
        let mut body = Vec::with_capacity(source.body.len());
        let mut linked = Vec::new();
        let mut inline_copies = Vec::new();
        {
            let txn = self.db.begin_read()?;
            let inline = txn.open_table(INLINE)?;
            for extent in &source.body {
                let blob = blob::new_blob_id();
                if extent.inline {
                    let bytes = inline
                        .get(extent.blob)?
                        .map(|v| Bytes::copy_from_slice(v.value()))
                        .unwrap_or_default();
                    inline_copies.push((blob, bytes));
                } else {
                    let to = self.blobs.path(blob);
                    if let Some(parent) = to.parent() {
                        std::fs::create_dir_all(parent).map_err(blob::io)?;
                    }
                    match std::fs::hard_link(self.blobs.path(extent.blob), &to) {
                        Ok(()) => linked.push(to),
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                            remove_files(&linked);
                            return Err(Error::NoSuchKey);
                        }
                        Err(e) => {
                            remove_files(&linked);
                            return Err(blob::io(e));
                        }
                    }
                }
                body.push(Extent { blob, ..*extent });
            }
        }
        sync_parents(&linked).await?;
        let guard = LinkGuard(linked);
        let (source_bucket, source_key) = (source_bucket.to_owned(), source_key.to_owned());
        let source_version = source_version.cloned();
        let (bucket, key) = (bucket.to_owned(), key.to_owned());
        let blobs = self.blobs.clone();
        let principal = actor.principal.clone();
        let result = self
            .committer
            .write_files(move |t| {
                if t.buckets.get(source_bucket.as_str())?.is_none() {
                    return Err(Error::NoSuchBucket);
                }
                let now_source = versions::find(
                    &t.objects,
                    &t.versions,
                    &source_bucket,
                    &source_key,
                    source_version.as_ref(),
                )?;
                match &now_source {
                    Some(s)
                        if s.etag == source.etag
                            && s.last_modified_ms == source.last_modified_ms => {}
                    _ => return Err(Error::NoSuchKey),
                }
                let place = bucket_in(t, &bucket)?;
                let current = get_json(&t.objects, (bucket.as_str(), key.as_str()))?;
                conditions.check(current.as_ref())?;
                let (headers, metadata, tags) = match directive {
                    MetadataDirective::Copy => (source.headers, source.metadata, source.tags),
                    MetadataDirective::Replace(new) => (new.headers, new.metadata, new.tags),
                };
                let record = ObjectRecord {
                    size: source.size,
                    etag: source.etag,
                    last_modified_ms: nimbus_types::time::now_ms(),
                    headers,
                    metadata,
                    tags,
                    checksum: source.checksum,
                    body,
                    parts: source.parts,
                    ..Default::default()
                };
                let mut inline_copies = inline_copies.into_iter();
                for extent in &record.body {
                    if extent.inline {
                        let bytes = inline_copies.next().map(|(_, b)| b).unwrap_or_default();
                        store_extent(t, *extent, Some(bytes))?;
                    } else {
                        store_extent(t, *extent, None)?;
                    }
                }
                let (record, files) =
                    versions::install(t, &blobs, &bucket, &key, place.versioning, record)?;
                let sent = emit(t, &place, &bucket, &key, Change::Copy, &principal, &record)?;
                Ok(((record, sent), files))
            })
            .await;
        let (record, sent) = result?;
        std::mem::forget(guard);
        self.sent(sent);
        Ok(record)
    }

    /// Replaces the tags of an object (of one of its versions, named); returns the version.
    pub async fn set_object_tags(
        &self,
        bucket: &str,
        key: &str,
        version: Option<&VersionRef>,
        tags: Vec<(String, String)>,
    ) -> Result<ObjectRecord, Error> {
        let (bucket, key) = (bucket.to_owned(), key.to_owned());
        let version = version.cloned();
        self.committer
            .write_files(move |t| {
                if t.buckets.get(bucket.as_str())?.is_none() {
                    return Err(Error::NoSuchBucket);
                }
                let record = versions::set_tags(t, &bucket, &key, version.as_ref(), tags)?;
                Ok((record, Vec::new()))
            })
            .await
    }

    /// Lists a bucket's objects in S3's order.
    pub fn list(&self, bucket: &str, query: &ListQuery) -> Result<ListPage, Error> {
        let txn = self.db.begin_read()?;
        if txn.open_table(BUCKETS)?.get(bucket)?.is_none() {
            return Err(Error::NoSuchBucket);
        }
        let objects = txn.open_table(OBJECTS)?;
        list::list(&objects, bucket, query)
    }

    /// Lists a bucket's versions and delete markers in S3's order.
    pub fn list_versions(&self, bucket: &str, query: &VersionQuery) -> Result<VersionPage, Error> {
        let txn = self.db.begin_read()?;
        if txn.open_table(BUCKETS)?.get(bucket)?.is_none() {
            return Err(Error::NoSuchBucket);
        }
        let objects = txn.open_table(OBJECTS)?;
        let versions = txn.open_table(VERSIONS)?;
        versions::list(&objects, &versions, bucket, query)
    }

    // ---- multipart uploads ----

    /// Starts a multipart upload; returns its id.
    pub async fn create_upload(&self, record: UploadRecord) -> Result<String, Error> {
        check_key(&record.key)?;
        if record.checksum_kind == ChecksumKind::FullObject
            && record.checksum_algorithm.is_some_and(|a| !a.combines())
        {
            return Err(Error::InvalidRequest(format!(
                "The FULL_OBJECT checksum type cannot be used with the {} checksum algorithm.",
                record.checksum_algorithm.map_or("", |a| a.name())
            )));
        }
        // Ids sort by start time, as ListMultipartUploads orders uploads of one key.
        let id = format!(
            "{:016x}{:032x}",
            nimbus_types::time::now_ms(),
            blob::new_blob_id()
        );
        let upload_id = id.clone();
        self.committer
            .write_files(move |t| {
                if t.buckets.get(record.bucket.as_str())?.is_none() {
                    return Err(Error::NoSuchBucket);
                }
                t.uploads
                    .insert(upload_id.as_str(), encode(&record).as_slice())?;
                t.uploads_by_key.insert(
                    (
                        record.bucket.as_str(),
                        record.key.as_str(),
                        upload_id.as_str(),
                    ),
                    (),
                )?;
                Ok(((), Vec::new()))
            })
            .await?;
        Ok(id)
    }

    /// An upload in progress of `bucket/key`.
    pub fn upload(&self, bucket: &str, key: &str, id: &str) -> Result<UploadRecord, Error> {
        let txn = self.db.begin_read()?;
        let uploads = txn.open_table(UPLOADS)?;
        get_json::<_, UploadRecord>(&uploads, id)?
            .filter(|u| u.bucket == bucket && u.key == key)
            .ok_or(Error::NoSuchUpload)
    }

    /// Stores a part, replacing one of the same number.
    pub async fn put_part(
        &self,
        bucket: &str,
        key: &str,
        id: &str,
        number: u32,
        mut staged: Staged,
    ) -> Result<PartRecord, Error> {
        check_part_number(number)?;
        let (bucket, key, id) = (bucket.to_owned(), key.to_owned(), id.to_owned());
        let blobs = self.blobs.clone();
        self.committer
            .write_files(move |t| {
                let uploads = &t.uploads;
                get_json::<_, UploadRecord>(uploads, id.as_str())?
                    .filter(|u| u.bucket == bucket && u.key == key)
                    .ok_or(Error::NoSuchUpload)?;
                let old: Option<PartRecord> = get_json(&t.parts, (id.as_str(), number))?;
                let digests = staged.digests.clone();
                let (extent, inline, _) = staged.take();
                store_extent(t, extent, inline)?;
                let record = PartRecord {
                    size: digests.len,
                    etag: digest::to_hex(&digests.md5),
                    last_modified_ms: nimbus_types::time::now_ms(),
                    checksum: digests.checksum,
                    body: extent,
                };
                t.parts
                    .insert((id.as_str(), number), encode(&record).as_slice())?;
                let mut files = Vec::new();
                if let Some(old) = old {
                    files.extend(drop_extent(t, &blobs, old.body)?);
                }
                Ok((record, files))
            })
            .await
    }

    /// The parts of an upload, by number, after `after`, at most `max`; and whether more
    /// follow.
    pub fn parts(
        &self,
        bucket: &str,
        key: &str,
        id: &str,
        after: u32,
        max: usize,
    ) -> Result<(Vec<(u32, PartRecord)>, bool), Error> {
        self.upload(bucket, key, id)?;
        let txn = self.db.begin_read()?;
        let parts = txn.open_table(PARTS)?;
        let mut out = Vec::new();
        for entry in parts.range((id, after.saturating_add(1))..=(id, u32::MAX))? {
            let (k, v) = entry?;
            if out.len() == max {
                return Ok((out, true));
            }
            out.push((k.value().1, decode(v.value())?));
        }
        Ok((out, false))
    }

    /// Completes an upload: the object becomes the listed parts, in order.
    pub async fn complete_upload(
        &self,
        bucket: &str,
        key: &str,
        id: &str,
        listed: Vec<CompletedPart>,
        conditions: WriteConditions,
        actor: &Actor,
    ) -> Result<ObjectRecord, Error> {
        if listed.is_empty() {
            return Err(Error::InvalidRequest(
                "You must specify at least one part".into(),
            ));
        }
        if listed.windows(2).any(|w| w[0].number >= w[1].number) {
            return Err(Error::InvalidPartOrder);
        }
        let (bucket, key, id) = (bucket.to_owned(), key.to_owned(), id.to_owned());
        let blobs = self.blobs.clone();
        let principal = actor.principal.clone();
        let (record, sent) = self
            .committer
            .write_files(move |t| {
                let upload: UploadRecord = get_json::<_, UploadRecord>(&t.uploads, id.as_str())?
                    .filter(|u| u.bucket == bucket && u.key == key)
                    .ok_or(Error::NoSuchUpload)?;
                let mut chosen = Vec::with_capacity(listed.len());
                {
                    let parts = &t.parts;
                    for (i, want) in listed.iter().enumerate() {
                        let part: PartRecord = get_json(parts, (id.as_str(), want.number))?
                            .ok_or_else(|| Error::InvalidPart(format!(
                                "One or more of the specified parts could not be found: part {}",
                                want.number
                            )))?;
                        if part.etag != want.etag {
                            return Err(Error::InvalidPart(format!(
                                "The ETag of part {} does not match the part uploaded",
                                want.number
                            )));
                        }
                        if let (Some(sent), Some(have)) = (&want.checksum, &part.checksum)
                            && sent != &have.value
                        {
                            return Err(Error::InvalidPart(format!(
                                "The {} checksum of part {} does not match the part uploaded",
                                have.algorithm.name(),
                                want.number
                            )));
                        }
                        if i + 1 < listed.len() && part.size < MIN_PART_BYTES {
                            return Err(Error::EntityTooSmall);
                        }
                        chosen.push(part);
                    }
                }
                let place = bucket_in(t, &bucket)?;
                let current = get_json(&t.objects, (bucket.as_str(), key.as_str()))?;
                conditions.check(current.as_ref())?;
                let mut md5s = Vec::with_capacity(chosen.len() * 16);
                for part in &chosen {
                    for i in 0..16 {
                        let byte =
                            u8::from_str_radix(part.etag.get(2 * i..2 * i + 2).unwrap_or("00"), 16)
                                .unwrap_or(0);
                        md5s.push(byte);
                    }
                }
                let etag = {
                    use md5::Digest as _;
                    format!(
                        "{}-{}",
                        digest::to_hex(&md5::Md5::digest(&md5s)),
                        chosen.len()
                    )
                };
                let checksum = upload.checksum_algorithm.and_then(|algorithm| {
                    let values: Option<Vec<(&str, u64)>> = chosen
                        .iter()
                        .map(|p| {
                            p.checksum
                                .as_ref()
                                .filter(|c| c.algorithm == algorithm)
                                .map(|c| (c.value.as_str(), p.size))
                        })
                        .collect();
                    multipart_checksum(algorithm, upload.checksum_kind, &values?)
                });
                let record = ObjectRecord {
                    size: chosen.iter().map(|p| p.size).sum(),
                    etag,
                    last_modified_ms: nimbus_types::time::now_ms(),
                    headers: upload.headers.clone(),
                    metadata: upload.metadata.clone(),
                    tags: upload.tags.clone(),
                    checksum,
                    body: chosen.iter().map(|p| p.body).collect(),
                    parts: chosen
                        .iter()
                        .map(|p| PartSummary { size: p.size })
                        .collect(),
                    ..Default::default()
                };
                // The parts listed move to the object; the others go with the upload.
                let kept: std::collections::HashSet<u128> =
                    record.body.iter().map(|e| e.blob).collect();
                let mut files = Vec::new();
                {
                    let numbers: Vec<(u32, PartRecord)> = {
                        let mut v = Vec::new();
                        for entry in t.parts.range((id.as_str(), 0)..=(id.as_str(), u32::MAX))? {
                            let (k, val) = entry?;
                            v.push((k.value().1, decode(val.value())?));
                        }
                        v
                    };
                    for (n, part) in numbers {
                        t.parts.remove((id.as_str(), n))?;
                        if !kept.contains(&part.body.blob) {
                            files.extend(drop_extent(t, &blobs, part.body)?);
                        }
                    }
                }
                t.uploads.remove(id.as_str())?;
                t.uploads_by_key
                    .remove((bucket.as_str(), key.as_str(), id.as_str()))?;
                let (record, gone) =
                    versions::install(t, &blobs, &bucket, &key, place.versioning, record)?;
                files.extend(gone);
                let sent = emit(
                    t,
                    &place,
                    &bucket,
                    &key,
                    Change::CompleteMultipartUpload,
                    &principal,
                    &record,
                )?;
                Ok(((record, sent), files))
            })
            .await?;
        self.sent(sent);
        Ok(record)
    }

    /// Aborts an upload and frees its parts.
    pub async fn abort_upload(&self, bucket: &str, key: &str, id: &str) -> Result<(), Error> {
        let (bucket, key, id) = (bucket.to_owned(), key.to_owned(), id.to_owned());
        let blobs = self.blobs.clone();
        self.committer
            .write_files(move |t| {
                get_json::<_, UploadRecord>(&t.uploads, id.as_str())?
                    .filter(|u| u.bucket == bucket && u.key == key)
                    .ok_or(Error::NoSuchUpload)?;
                let files = remove_upload(t, &blobs, &id)?;
                Ok(((), files))
            })
            .await
    }

    /// Uploads in progress in a bucket, by key and then start, after (`key_marker`,
    /// `id_marker`), at most `max`; and whether more follow.
    pub fn uploads(
        &self,
        bucket: &str,
        prefix: &str,
        key_marker: &str,
        id_marker: &str,
        max: usize,
    ) -> Result<(Vec<(String, ListedUpload)>, bool), Error> {
        let txn = self.db.begin_read()?;
        if txn.open_table(BUCKETS)?.get(bucket)?.is_none() {
            return Err(Error::NoSuchBucket);
        }
        let by_key = txn.open_table(UPLOADS_BY_KEY)?;
        let uploads = txn.open_table(UPLOADS)?;
        let start = if key_marker.is_empty() {
            prefix
        } else {
            key_marker
        };
        let mut out = Vec::new();
        for entry in by_key.range((bucket, start, "")..)? {
            let (k, _) = entry?;
            let (b, key, id) = k.value();
            if b != bucket || !key.starts_with(prefix) {
                if b != bucket || key > prefix {
                    break;
                }
                continue;
            }
            if !key_marker.is_empty()
                && (key < key_marker
                    || (key == key_marker && (id_marker.is_empty() || id <= id_marker)))
            {
                continue;
            }
            if out.len() == max {
                return Ok((out, true));
            }
            if let Some(record) = get_json::<_, UploadRecord>(&uploads, id)? {
                out.push((
                    key.to_owned(),
                    ListedUpload {
                        id: id.to_owned(),
                        record,
                    },
                ));
            }
        }
        Ok((out, false))
    }
}

impl Drop for Objects {
    fn drop(&mut self) {
        self.committer.stop();
    }
}

/// Removes linked copies if the copy does not commit.
struct LinkGuard(Vec<PathBuf>);

impl Drop for LinkGuard {
    fn drop(&mut self) {
        remove_files(&self.0);
    }
}

fn remove_files(files: &[PathBuf]) {
    for f in files {
        let _ = std::fs::remove_file(f);
    }
}

/// Makes new directory entries durable.
async fn sync_parents(files: &[PathBuf]) -> Result<(), Error> {
    let dirs: std::collections::BTreeSet<PathBuf> = files
        .iter()
        .filter_map(|f| f.parent().map(Path::to_path_buf))
        .collect();
    if dirs.is_empty() {
        return Ok(());
    }
    tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        for d in dirs {
            std::fs::File::open(d)?.sync_all()?;
        }
        Ok(())
    })
    .await
    .map_err(|e| Error::Storage(e.to_string()))?
    .map_err(blob::io)
}

fn check_part_number(number: u32) -> Result<(), Error> {
    if !(1..=MAX_PARTS).contains(&number) {
        return Err(Error::InvalidArgument(format!(
            "Part number must be an integer between 1 and {MAX_PARTS}, inclusive"
        )));
    }
    Ok(())
}

/// The bytes of part `n` (from 1) of a multipart object; part 1 of an object uploaded whole is
/// all of it.
fn part_span(record: &ObjectRecord, n: u32) -> Result<(u64, u64), Error> {
    check_part_number(n)?;
    if record.parts.is_empty() {
        if n == 1 {
            return if record.size == 0 {
                Err(Error::InvalidRange { size: 0 })
            } else {
                Ok((0, record.size - 1))
            };
        }
        return Err(Error::InvalidRange { size: record.size });
    }
    let index = (n - 1) as usize;
    let part = record
        .parts
        .get(index)
        .ok_or(Error::InvalidRange { size: record.size })?;
    let start: u64 = record.parts[..index].iter().map(|p| p.size).sum();
    if part.size == 0 {
        return Err(Error::InvalidRange { size: record.size });
    }
    Ok((start, start + part.size - 1))
}

/// Deletes a key without naming a version: removes its object (a bucket never versioned), or
/// hides it under a new delete marker. Returns what it did, the files it leaves and whether it
/// sent notifications.
fn delete_key(
    t: &mut Tables<'_>,
    blobs: &BlobDir,
    place: &BucketRecord,
    bucket: &str,
    key: &str,
    principal: &str,
) -> Result<(Removal, Vec<PathBuf>, bool), Error> {
    let versioned = place.versioning != Versioning::Unversioned;
    let current: Option<ObjectRecord> = get_json(&t.objects, (bucket, key))?;
    if !versioned && current.is_none() {
        return Ok((Removal::default(), Vec::new(), false));
    }
    let marker = ObjectRecord {
        delete_marker: true,
        last_modified_ms: nimbus_types::time::now_ms(),
        ..Default::default()
    };
    let (marker, files) = versions::install(t, blobs, bucket, key, place.versioning, marker)?;
    let (change, removal, subject) = match current {
        Some(gone) if !versioned => (Change::Delete, Removal::default(), gone),
        _ => (
            Change::DeleteMarkerCreated,
            Removal {
                delete_marker: true,
                version_id: Some(shown_id(&marker).to_owned()),
            },
            marker,
        ),
    };
    let sent = emit(t, place, bucket, key, change, principal, &subject)?;
    Ok((removal, files, sent))
}

/// A bucket's record as this transaction sees it (its rules may change in the same batch).
fn bucket_in(t: &Tables<'_>, bucket: &str) -> Result<BucketRecord, Error> {
    get_json(&t.buckets, bucket)?.ok_or(Error::NoSuchBucket)
}

/// Writes the notifications a change to an object of `record` (the bucket named `bucket`)
/// sends to the outbox, in the change's transaction; returns whether it sent any. `object` is
/// the version made or removed.
fn emit(
    t: &mut Tables<'_>,
    record: &BucketRecord,
    bucket: &str,
    key: &str,
    change: Change,
    principal: &str,
    object: &ObjectRecord,
) -> Result<bool, Error> {
    if record.notifications.is_empty() {
        return Ok(false);
    }
    let meta = &mut t.meta;
    let last = meta.get("sequence")?.map_or(0, |v| v.value());
    let first = last + 1;
    let sent = notify::notifications(
        &record.notifications,
        &notify::Event {
            change,
            bucket,
            key,
            region: &record.region,
            owner: &record.owner,
            principal,
            object: change
                .creates()
                .then_some((object.size, object.etag.as_str())),
            version_id: object.version_id.as_deref(),
            sequencer: first,
        },
    );
    if sent.is_empty() {
        return Ok(false);
    }
    let outbox = &mut t.outbox;
    let mut n = first;
    for notification in &sent {
        outbox.insert(n, encode(notification).as_slice())?;
        n += 1;
    }
    meta.insert("sequence", n - 1)?;
    Ok(true)
}

/// Records a new extent: its bytes when inline, its file as referenced otherwise.
fn store_extent(t: &mut Tables<'_>, extent: Extent, inline: Option<Bytes>) -> Result<(), Error> {
    if extent.inline {
        t.inline
            .insert(extent.blob, inline.as_deref().unwrap_or_default())?;
    } else {
        t.blob_files.insert(extent.blob, ())?;
    }
    Ok(())
}

/// Forgets an extent; returns its file, to remove after the commit.
fn drop_extent(
    t: &mut Tables<'_>,
    blobs: &BlobDir,
    extent: Extent,
) -> Result<Option<PathBuf>, Error> {
    if extent.inline {
        t.inline.remove(extent.blob)?;
        Ok(None)
    } else {
        t.blob_files.remove(extent.blob)?;
        Ok(Some(blobs.path(extent.blob)))
    }
}

/// Removes an upload, its parts and their blobs; returns the files to remove.
fn remove_upload(t: &mut Tables<'_>, blobs: &BlobDir, id: &str) -> Result<Vec<PathBuf>, Error> {
    let uploads = &mut t.uploads;
    let Some(record) = get_json::<_, UploadRecord>(&*uploads, id)? else {
        return Ok(Vec::new());
    };
    uploads.remove(id)?;
    t.uploads_by_key
        .remove((record.bucket.as_str(), record.key.as_str(), id))?;
    let all: Vec<(u32, PartRecord)> = {
        let mut v = Vec::new();
        for entry in t.parts.range((id, 0)..=(id, u32::MAX))? {
            let (k, val) = entry?;
            v.push((k.value().1, decode(val.value())?));
        }
        v
    };
    let mut files = Vec::new();
    for (n, part) in all {
        t.parts.remove((id, n))?;
        files.extend(drop_extent(t, blobs, part.body)?);
    }
    Ok(files)
}

/// How many objects a bucket holds (for tests and status).
pub fn count_objects(objects: &Objects, bucket: &str) -> Result<u64, Error> {
    let txn = objects.db.begin_read()?;
    let table = txn.open_table(OBJECTS)?;
    let mut n = 0;
    for entry in table.range((bucket, "")..)? {
        let (k, _) = entry?;
        if k.value().0 != bucket {
            break;
        }
        n += 1;
    }
    let _ = table.len();
    Ok(n)
}

#[cfg(test)]
mod tests;
