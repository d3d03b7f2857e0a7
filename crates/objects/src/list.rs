//! Listing a bucket as ListObjects and ListObjectsV2 do: keys in byte order of their UTF-8,
//! from after a marker, under a prefix, with keys that share a prefix up to the next
//! delimiter rolled up into one common prefix that counts once towards the page.

use redb::ReadableTable;

use crate::Error;
use crate::db::{ObjectRecord, decode};

/// What to list.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub prefix: String,
    pub delimiter: Option<String>,
    /// List what comes after this key (`marker`, `start-after`, or a continuation token's
    /// key).
    pub after: Option<String>,
    /// Keys and common prefixes together, at most.
    pub max: usize,
}

/// An object in a listing.
#[derive(Debug, Clone)]
pub struct ListedObject {
    pub key: String,
    pub record: ObjectRecord,
}

/// A page of a listing.
#[derive(Debug, Clone, Default)]
pub struct ListPage {
    pub objects: Vec<ListedObject>,
    pub common_prefixes: Vec<String>,
    /// Whether more follow.
    pub truncated: bool,
    /// The last key or common prefix of the page: where the next page starts after.
    pub last: Option<String>,
}

/// The common prefix `key` rolls up into, if it has one.
pub(crate) fn rolled_up<'k>(
    key: &'k str,
    prefix: &str,
    delimiter: Option<&str>,
) -> Option<&'k str> {
    let delimiter = delimiter.filter(|d| !d.is_empty())?;
    let rest = key.get(prefix.len()..)?;
    let at = rest.find(delimiter)?;
    Some(&key[..prefix.len() + at + delimiter.len()])
}

pub(crate) fn list(
    objects: &impl ReadableTable<(&'static str, &'static str), &'static [u8]>,
    bucket: &str,
    query: &ListQuery,
) -> Result<ListPage, Error> {
    let mut page = ListPage::default();
    if query.max == 0 {
        return Ok(page);
    }
    let delimiter = query.delimiter.as_deref();
    // Start at the prefix, or after the marker if that is further on. A marker inside a
    // common prefix stands for the whole of it: that prefix was listed already.
    let mut skip_under: Option<String> = None;
    let mut start = query.prefix.clone();
    if let Some(after) = &query.after
        && after.as_str() >= query.prefix.as_str()
    {
        start = after.clone();
        if let Some(cp) = rolled_up(after, &query.prefix, delimiter) {
            skip_under = Some(cp.to_owned());
        }
    }
    let mut iter = objects.range((bucket, start.as_str())..)?;
    loop {
        let Some(entry) = iter.next() else {
            break;
        };
        let (k, v) = entry?;
        let (b, key) = k.value();
        if b != bucket || !key.starts_with(query.prefix.as_str()) {
            if b != bucket || key > query.prefix.as_str() {
                break;
            }
            continue;
        }
        if query.after.as_deref().is_some_and(|a| key <= a) {
            continue;
        }
        if skip_under.as_deref().is_some_and(|cp| key.starts_with(cp)) {
            continue;
        }
        let item = rolled_up(key, &query.prefix, delimiter).map(str::to_owned);
        if page.objects.len() + page.common_prefixes.len() == query.max {
            page.truncated = true;
            break;
        }
        match item {
            Some(cp) => {
                page.last = Some(cp.clone());
                page.common_prefixes.push(cp.clone());
                // Skip the rest of the keys under it without reading them.
                let mut after = cp.clone();
                after.push(char::MAX);
                skip_under = Some(cp);
                drop(k);
                drop(v);
                iter = objects.range((bucket, after.as_str())..)?;
            }
            None => {
                page.last = Some(key.to_owned());
                page.objects.push(crate::ListedObject {
                    key: key.to_owned(),
                    record: decode(v.value())?,
                });
            }
        }
    }
    Ok(page)
}
