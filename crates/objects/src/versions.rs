//! Object versions. A key's current object (if it has one) is in `OBJECTS`, so reads and
//! listings of current objects never look further; every other version of it, and every
//! delete marker, is in `VERSIONS`, newest first. A bucket never versioned keeps one object
//! per key and nothing in `VERSIONS`. Each version owns its blob files: removing one frees
//! them.
//!
//! Version ids are 32 hex digits: the version's sequence number, then 16 random digits. The
//! null version (written before versioning, or while it is suspended) is named `null`.

use std::path::PathBuf;

use redb::ReadableTable;

use crate::db::{ObjectRecord, Tables, Versioning, decode, encode, get_json};
use crate::{Error, blob::BlobDir, list::rolled_up};

/// A version a request names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionRef {
    Null,
    Id { seq: u64, id: String },
}

impl VersionRef {
    /// Parses a `versionId`: `null`, or an id this store gave.
    pub fn parse(s: &str) -> Result<Self, Error> {
        if s == "null" {
            return Ok(Self::Null);
        }
        if s.len() == 32
            && s.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
            && let Ok(seq) = u64::from_str_radix(&s[..16], 16)
        {
            return Ok(Self::Id {
                seq,
                id: s.to_owned(),
            });
        }
        Err(Error::InvalidArgument(
            "Invalid version id specified".into(),
        ))
    }

    fn matches(&self, record: &ObjectRecord) -> bool {
        match self {
            Self::Null => record.version_id.is_none(),
            Self::Id { id, .. } => record.version_id.as_deref() == Some(id.as_str()),
        }
    }
}

/// A version's id as S3 shows it.
pub fn shown_id(record: &ObjectRecord) -> &str {
    record.version_id.as_deref().unwrap_or("null")
}

fn new_id(seq: u64) -> String {
    format!("{seq:016x}{:016x}", crate::blob::new_blob_id() as u64)
}

fn slot(seq: u64) -> u64 {
    u64::MAX - seq
}

fn next_seq(t: &mut Tables<'_>) -> Result<u64, Error> {
    let seq = t.meta.get("version")?.map_or(0, |v| v.value()) + 1;
    t.meta.insert("version", seq)?;
    Ok(seq)
}

/// Forgets a version's body; returns the files to remove after the commit.
fn drop_body(
    t: &mut Tables<'_>,
    blobs: &BlobDir,
    record: &ObjectRecord,
) -> Result<Vec<PathBuf>, Error> {
    let mut files = Vec::new();
    for extent in &record.body {
        files.extend(crate::drop_extent(t, blobs, *extent)?);
    }
    Ok(files)
}

/// A key's noncurrent versions, newest first, with their slots.
fn noncurrent(
    versions: &impl ReadableTable<(&'static str, &'static str, u64), &'static [u8]>,
    bucket: &str,
    key: &str,
) -> Result<Vec<(u64, ObjectRecord)>, Error> {
    let mut out = Vec::new();
    for entry in versions.range((bucket, key, 0)..=(bucket, key, u64::MAX))? {
        let (k, v) = entry?;
        out.push((k.value().2, decode(v.value())?));
    }
    Ok(out)
}

/// A noncurrent version by reference, with its slot.
fn find_noncurrent(
    versions: &impl ReadableTable<(&'static str, &'static str, u64), &'static [u8]>,
    bucket: &str,
    key: &str,
    version: &VersionRef,
) -> Result<Option<(u64, ObjectRecord)>, Error> {
    match version {
        VersionRef::Id { seq, .. } => {
            let found: Option<ObjectRecord> = get_json(versions, (bucket, key, slot(*seq)))?;
            Ok(found
                .filter(|r| version.matches(r))
                .map(|r| (slot(*seq), r)))
        }
        VersionRef::Null => Ok(noncurrent(versions, bucket, key)?
            .into_iter()
            .find(|(_, r)| version.matches(r))),
    }
}

/// The version `version` names (the current object without one), delete markers included.
pub(crate) fn find(
    objects: &impl ReadableTable<(&'static str, &'static str), &'static [u8]>,
    versions: &impl ReadableTable<(&'static str, &'static str, u64), &'static [u8]>,
    bucket: &str,
    key: &str,
    version: Option<&VersionRef>,
) -> Result<Option<ObjectRecord>, Error> {
    let current: Option<ObjectRecord> = get_json(objects, (bucket, key))?;
    let Some(version) = version else {
        return Ok(current);
    };
    if let Some(c) = current.filter(|c| version.matches(c)) {
        return Ok(Some(c));
    }
    Ok(find_noncurrent(versions, bucket, key, version)?.map(|(_, r)| r))
}

/// The delete marker that hides a key, if its newest version is one.
pub(crate) fn hiding_marker(
    versions: &impl ReadableTable<(&'static str, &'static str, u64), &'static [u8]>,
    bucket: &str,
    key: &str,
) -> Result<Option<ObjectRecord>, Error> {
    let mut range = versions.range((bucket, key, 0)..=(bucket, key, u64::MAX))?;
    match range.next() {
        Some(entry) => {
            let (_, v) = entry?;
            let newest: ObjectRecord = decode(v.value())?;
            Ok(newest.delete_marker.then_some(newest))
        }
        None => Ok(None),
    }
}

/// Stores a new version of `key` (an object, or a delete marker), as the bucket's versioning
/// state says: replacing the object (never versioned), on top of the others (enabled), or
/// replacing the null version (suspended). Returns the version as stored and the files
/// the change leaves unreferenced.
pub(crate) fn install(
    t: &mut Tables<'_>,
    blobs: &BlobDir,
    bucket: &str,
    key: &str,
    versioning: Versioning,
    mut record: ObjectRecord,
) -> Result<(ObjectRecord, Vec<PathBuf>), Error> {
    let current: Option<ObjectRecord> = get_json(&t.objects, (bucket, key))?;
    let mut files = Vec::new();
    if versioning == Versioning::Unversioned {
        record.version_id = None;
        record.seq = 0;
        if let Some(old) = current {
            files.extend(drop_body(t, blobs, &old)?);
        }
        if record.delete_marker {
            t.objects.remove((bucket, key))?;
        } else {
            t.objects
                .insert((bucket, key), encode(&record).as_slice())?;
        }
        return Ok((record, files));
    }
    let seq = next_seq(t)?;
    record.seq = seq;
    record.version_id = (versioning == Versioning::Enabled).then(|| new_id(seq));
    if versioning == Versioning::Suspended {
        // The null version goes, wherever it is.
        for (at, old) in noncurrent(&t.versions, bucket, key)? {
            if old.version_id.is_none() {
                t.versions.remove((bucket, key, at))?;
                files.extend(drop_body(t, blobs, &old)?);
            }
        }
    }
    if let Some(old) = current {
        if versioning == Versioning::Suspended && old.version_id.is_none() {
            files.extend(drop_body(t, blobs, &old)?);
        } else {
            t.versions
                .insert((bucket, key, slot(old.seq)), encode(&old).as_slice())?;
        }
    }
    if record.delete_marker {
        t.objects.remove((bucket, key))?;
        t.versions
            .insert((bucket, key, slot(seq)), encode(&record).as_slice())?;
    } else {
        t.objects
            .insert((bucket, key), encode(&record).as_slice())?;
    }
    Ok((record, files))
}

/// Removes one version for good. When it was the newest, the next newest becomes current
/// (unless it is a delete marker, which keeps hiding the key). Returns the version removed,
/// if it was there, and the files it leaves.
pub(crate) fn remove(
    t: &mut Tables<'_>,
    blobs: &BlobDir,
    bucket: &str,
    key: &str,
    version: &VersionRef,
) -> Result<(Option<ObjectRecord>, Vec<PathBuf>), Error> {
    let current: Option<ObjectRecord> = get_json(&t.objects, (bucket, key))?;
    let removed = match current.filter(|c| version.matches(c)) {
        Some(c) => {
            t.objects.remove((bucket, key))?;
            Some(c)
        }
        None => match find_noncurrent(&t.versions, bucket, key, version)? {
            Some((at, r)) => {
                t.versions.remove((bucket, key, at))?;
                Some(r)
            }
            None => None,
        },
    };
    let Some(removed) = removed else {
        return Ok((None, Vec::new()));
    };
    let files = drop_body(t, blobs, &removed)?;
    if t.objects.get((bucket, key))?.is_none() {
        let newest = noncurrent(&t.versions, bucket, key)?.into_iter().next();
        if let Some((at, r)) = newest
            && !r.delete_marker
        {
            t.versions.remove((bucket, key, at))?;
            t.objects.insert((bucket, key), encode(&r).as_slice())?;
        }
    }
    Ok((Some(removed), files))
}

/// Replaces the tags of one version (the current object without one).
pub(crate) fn set_tags(
    t: &mut Tables<'_>,
    bucket: &str,
    key: &str,
    version: Option<&VersionRef>,
    tags: Vec<(String, String)>,
) -> Result<ObjectRecord, Error> {
    let current: Option<ObjectRecord> = get_json(&t.objects, (bucket, key))?;
    let in_current = match (version, &current) {
        (None, Some(_)) => true,
        (Some(v), Some(c)) => v.matches(c),
        _ => false,
    };
    if in_current && let Some(mut record) = current {
        record.tags = tags;
        t.objects
            .insert((bucket, key), encode(&record).as_slice())?;
        return Ok(record);
    }
    let Some(version) = version else {
        return Err(Error::NoSuchKey);
    };
    let (at, mut record) =
        find_noncurrent(&t.versions, bucket, key, version)?.ok_or(Error::NoSuchVersion)?;
    if record.delete_marker {
        return Err(Error::DeleteMarker {
            version_id: record.version_id,
            named: true,
        });
    }
    record.tags = tags;
    t.versions
        .insert((bucket, key, at), encode(&record).as_slice())?;
    Ok(record)
}

/// What to list of a bucket's versions.
#[derive(Debug, Clone, Default)]
pub struct VersionQuery {
    pub prefix: String,
    pub delimiter: Option<String>,
    /// Start after this key (after its version `version_marker`, when given).
    pub key_marker: Option<String>,
    pub version_marker: Option<String>,
    /// Versions and common prefixes together, at most.
    pub max: usize,
}

/// A version in a listing.
#[derive(Debug, Clone)]
pub struct ListedVersion {
    pub key: String,
    pub record: ObjectRecord,
    /// Whether it is the key's newest version.
    pub latest: bool,
}

/// A page of ListObjectVersions.
#[derive(Debug, Clone, Default)]
pub struct VersionPage {
    pub versions: Vec<ListedVersion>,
    pub common_prefixes: Vec<String>,
    pub truncated: bool,
    /// Where the next page starts, when truncated: a key, and a version id unless the page
    /// ended with a common prefix.
    pub next_key_marker: Option<String>,
    pub next_version_marker: Option<String>,
}

/// The first key at or after `from` that has a version.
fn next_key(
    objects: &impl ReadableTable<(&'static str, &'static str), &'static [u8]>,
    versions: &impl ReadableTable<(&'static str, &'static str, u64), &'static [u8]>,
    bucket: &str,
    from: &str,
) -> Result<Option<String>, Error> {
    let mut best: Option<String> = None;
    if let Some(entry) = objects.range((bucket, from)..)?.next() {
        let (k, _) = entry?;
        let (b, key) = k.value();
        if b == bucket {
            best = Some(key.to_owned());
        }
    }
    if let Some(entry) = versions.range((bucket, from, 0)..)?.next() {
        let (k, _) = entry?;
        let (b, key, _) = k.value();
        if b == bucket && best.as_deref().is_none_or(|other| key < other) {
            best = Some(key.to_owned());
        }
    }
    Ok(best)
}

/// Lists versions in S3's order: keys in byte order, each key's versions newest first.
pub(crate) fn list(
    objects: &impl ReadableTable<(&'static str, &'static str), &'static [u8]>,
    versions: &impl ReadableTable<(&'static str, &'static str, u64), &'static [u8]>,
    bucket: &str,
    query: &VersionQuery,
) -> Result<VersionPage, Error> {
    let mut page = VersionPage::default();
    if query.max == 0 {
        return Ok(page);
    }
    let prefix = query.prefix.as_str();
    let delimiter = query.delimiter.as_deref();
    let mut cursor = prefix.to_owned();
    let mut skip_under: Option<String> = None;
    // The key whose versions resume after the version marker.
    let mut resume: Option<(&str, &str)> = None;
    if let Some(marker) = query.key_marker.as_deref()
        && marker >= prefix
    {
        match query.version_marker.as_deref() {
            Some(v) => {
                cursor = marker.to_owned();
                resume = Some((marker, v));
            }
            None => cursor = format!("{marker}\0"),
        }
        skip_under = rolled_up(marker, prefix, delimiter).map(str::to_owned);
    }
    let mut last: Option<(String, Option<String>)> = None;
    let mut count = 0;
    'keys: while let Some(key) = next_key(objects, versions, bucket, &cursor)? {
        if !key.starts_with(prefix) {
            break;
        }
        if let Some(cp) = skip_under.as_deref()
            && key.starts_with(cp)
        {
            cursor = format!("{cp}{}", char::MAX);
            continue;
        }
        if let Some(cp) = rolled_up(&key, prefix, delimiter) {
            if count == query.max {
                page.truncated = true;
                break;
            }
            count += 1;
            let cp = cp.to_owned();
            page.common_prefixes.push(cp.clone());
            last = Some((cp.clone(), None));
            cursor = format!("{cp}{}", char::MAX);
            skip_under = Some(cp);
            continue;
        }
        let mut all: Vec<ObjectRecord> = Vec::new();
        if let Some(current) = get_json(objects, (bucket, key.as_str()))? {
            all.push(current);
        }
        all.extend(
            noncurrent(versions, bucket, &key)?
                .into_iter()
                .map(|(_, r)| r),
        );
        let mut skipping = resume.is_some_and(|(k, _)| k == key);
        for (i, record) in all.into_iter().enumerate() {
            if skipping {
                if resume.is_some_and(|(_, v)| v == shown_id(&record)) {
                    skipping = false;
                }
                continue;
            }
            if count == query.max {
                page.truncated = true;
                break 'keys;
            }
            count += 1;
            last = Some((key.clone(), Some(shown_id(&record).to_owned())));
            page.versions.push(ListedVersion {
                key: key.clone(),
                latest: i == 0,
                record,
            });
        }
        cursor = format!("{key}\0");
    }
    if page.truncated
        && let Some((key, version)) = last
    {
        page.next_key_marker = Some(key);
        page.next_version_marker = version;
    }
    Ok(page)
}

/// Whether a bucket holds any version at all.
pub(crate) fn any(
    versions: &impl ReadableTable<(&'static str, &'static str, u64), &'static [u8]>,
    bucket: &str,
) -> Result<bool, Error> {
    match versions.range((bucket, "", 0)..)?.next() {
        Some(entry) => {
            let (k, _) = entry?;
            Ok(k.value().0 == bucket)
        }
        None => Ok(false),
    }
}
