//! A table's definition: its key schema, attribute definitions and settings, as CreateTable
//! gives them and DescribeTable shows them, and the checks that make an item or a key fit it.

use serde::{Deserialize, Serialize};

use crate::Error;
use crate::value::{Item, Value};

/// The largest partition key value, in bytes.
pub const MAX_HASH_KEY_BYTES: usize = 2048;
/// The largest sort key value, in bytes.
pub const MAX_RANGE_KEY_BYTES: usize = 1024;

/// The types a key attribute may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyType {
    S,
    N,
    B,
}

impl KeyType {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "S" => Some(Self::S),
            "N" => Some(Self::N),
            "B" => Some(Self::B),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::S => "S",
            Self::N => "N",
            Self::B => "B",
        }
    }
}

/// A key attribute: its name and type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyAttr {
    pub name: String,
    pub kind: KeyType,
}

/// A table's (or an index's) primary key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeySchema {
    pub hash: KeyAttr,
    pub range: Option<KeyAttr>,
}

/// A key as stored: the partition key's and the sort key's order-preserving bytes (empty
/// without a sort key).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StoredKey {
    pub hash: Vec<u8>,
    pub range: Vec<u8>,
}

impl KeySchema {
    /// The key attributes' names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.hash.name.as_str()).chain(self.range.iter().map(|r| r.name.as_str()))
    }

    /// The stored key of an item, after checking that it has each key attribute with the
    /// right type, not empty, not too large.
    pub fn key_of(&self, item: &Item) -> Result<StoredKey, Error> {
        let hash = key_bytes(&self.hash, item, MAX_HASH_KEY_BYTES, "hashkey")?;
        let range = match &self.range {
            Some(r) => key_bytes(r, item, MAX_RANGE_KEY_BYTES, "rangekey")?,
            None => Vec::new(),
        };
        Ok(StoredKey { hash, range })
    }

    /// A `Key` parameter: exactly the key attributes, nothing else.
    pub fn check_key(&self, key: &Item) -> Result<StoredKey, Error> {
        let expected = 1 + usize::from(self.range.is_some());
        if key.len() != expected || !self.names().all(|n| key.contains_key(n)) {
            return Err(Error::Validation(
                "The provided key element does not match the schema".into(),
            ));
        }
        self.key_of(key)
    }

    /// The key attributes of an item.
    pub fn key_item(&self, item: &Item) -> Item {
        self.names()
            .filter_map(|n| item.get(n).map(|v| (n.to_owned(), v.clone())))
            .collect()
    }
}

fn key_bytes(attr: &KeyAttr, item: &Item, max: usize, what: &str) -> Result<Vec<u8>, Error> {
    let Some(value) = item.get(&attr.name) else {
        return Err(Error::Validation(format!(
            "One or more parameter values were invalid: Missing the key {} in the item",
            attr.name
        )));
    };
    let kind = match value {
        Value::S(_) => KeyType::S,
        Value::N(_) => KeyType::N,
        Value::B(_) => KeyType::B,
        other => {
            return Err(Error::Validation(format!(
                "One or more parameter values were invalid: Type mismatch for key {} expected: {} actual: {}",
                attr.name,
                attr.kind.name(),
                other.type_name()
            )));
        }
    };
    if kind != attr.kind {
        return Err(Error::Validation(format!(
            "One or more parameter values were invalid: Type mismatch for key {} expected: {} actual: {}",
            attr.name,
            attr.kind.name(),
            kind.name()
        )));
    }
    match value {
        Value::S(s) if s.is_empty() => {
            return Err(Error::Validation(format!(
                "One or more parameter values are not valid. The AttributeValue for a key attribute cannot contain an empty string value. Key: {}",
                attr.name
            )));
        }
        Value::B(b) if b.is_empty() => {
            return Err(Error::Validation(format!(
                "One or more parameter values are not valid. The AttributeValue for a key attribute cannot contain an empty binary value. Key: {}",
                attr.name
            )));
        }
        _ => {}
    }
    if value.size() > max {
        return Err(Error::Validation(format!(
            "One or more parameter values were invalid: Size of {what} has exceeded the maximum size limit of{max} bytes"
        )));
    }
    value
        .key_bytes()
        .ok_or_else(|| Error::Validation("a key attribute must be S, N or B".into()))
}

/// Throughput settings, kept and shown; nimbus does not throttle.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Throughput {
    pub read: u64,
    pub write: u64,
}

/// What CreateTable asks for.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TableSpec {
    pub name: String,
    pub key: KeySchema,
    /// Every attribute definition given (key attributes of the table and its indexes).
    pub attributes: Vec<(String, KeyType)>,
    /// `PROVISIONED` or `PAY_PER_REQUEST`.
    pub billing_mode: String,
    pub throughput: Option<Throughput>,
    /// Secondary indexes, global and local.
    #[serde(default)]
    pub indexes: Vec<IndexSpec>,
}

impl TableSpec {
    pub fn index(&self, name: &str) -> Option<&IndexSpec> {
        self.indexes.iter().find(|i| i.name == name)
    }
}

/// Which attributes an index keeps of each item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Projection {
    All,
    KeysOnly,
    /// The keys and these.
    Include(Vec<String>),
}

/// A secondary index.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IndexSpec {
    pub name: String,
    /// Its entries are stored under this number, as a table's items under the table's.
    #[serde(default)]
    pub id: u64,
    pub global: bool,
    pub key: KeySchema,
    pub projection: Projection,
    pub throughput: Option<Throughput>,
}

impl IndexSpec {
    /// The attributes an entry keeps of `item`.
    pub fn project(&self, table: &KeySchema, item: &Item) -> Item {
        match &self.projection {
            Projection::All => item.clone(),
            Projection::KeysOnly | Projection::Include(_) => {
                let extra: &[String] = match &self.projection {
                    Projection::Include(names) => names,
                    _ => &[],
                };
                item.iter()
                    .filter(|(k, _)| {
                        table.names().any(|n| n == k.as_str())
                            || self.key.names().any(|n| n == k.as_str())
                            || extra.contains(k)
                    })
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            }
        }
    }

    /// Where an item's entry sits in the index: the index's partition key bytes and a sort
    /// part that orders by the index's sort key and then by the item's own key (so entries
    /// with equal index keys stay apart). `None` when the item lacks an index key attribute
    /// (the index is sparse).
    pub fn entry_key(&self, base: &StoredKey, item: &Item) -> Option<StoredKey> {
        let hash = index_key_bytes(&self.key.hash, item)?;
        let mut range = match &self.key.range {
            Some(r) => escape(&index_key_bytes(r, item)?),
            None => Vec::new(),
        };
        range.extend_from_slice(&[0, 0]);
        range.extend_from_slice(&(base.hash.len() as u32).to_be_bytes());
        range.extend_from_slice(&base.hash);
        range.extend_from_slice(&base.range);
        Some(StoredKey { hash, range })
    }

    /// The names a key of this index's entries carries: the table's and the index's.
    pub fn key_names<'a>(&'a self, table: &'a KeySchema) -> Vec<&'a str> {
        let mut names: Vec<&str> = table.names().collect();
        for n in self.key.names() {
            if !names.contains(&n) {
                names.push(n);
            }
        }
        names
    }
}

/// A value's bytes in an index key, if the item has it with the index's type.
fn index_key_bytes(attr: &KeyAttr, item: &Item) -> Option<Vec<u8>> {
    let v = item.get(&attr.name)?;
    let fits = matches!(
        (attr.kind, v),
        (KeyType::S, Value::S(_)) | (KeyType::N, Value::N(_)) | (KeyType::B, Value::B(_))
    );
    v.key_bytes().filter(|_| fits)
}

/// Sort key bytes made safe to follow with more: each 0 becomes 0 1, so that `[0, 0]` ends
/// them and the order of the original bytes is kept.
pub fn escape(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + 2);
    for &b in bytes {
        out.push(b);
        if b == 0 {
            out.push(1);
        }
    }
    out
}

/// Refuses an item whose index key attributes have the wrong type or are empty, as DynamoDB
/// does (an item without them is fine: it is left out of the index).
pub fn check_index_keys(spec: &TableSpec, item: &Item) -> Result<(), Error> {
    for index in &spec.indexes {
        for attr in std::iter::once(&index.key.hash).chain(index.key.range.iter()) {
            let Some(v) = item.get(&attr.name) else {
                continue;
            };
            let actual = v.type_name();
            if actual != attr.kind.name() {
                return Err(Error::Validation(format!(
                    "One or more parameter values were invalid: Type mismatch for Index Key {} Expected: {} Actual: {} IndexName: {}",
                    attr.name,
                    attr.kind.name(),
                    actual,
                    index.name
                )));
            }
            if matches!(v, Value::S(s) if s.is_empty()) || matches!(v, Value::B(b) if b.is_empty())
            {
                return Err(Error::Validation(format!(
                    "One or more parameter values are not valid. A value specified for a secondary index key is not supported. The AttributeValue for a key attribute cannot contain an empty string value. IndexName: {}, IndexKey: {}",
                    index.name, attr.name
                )));
            }
        }
    }
    Ok(())
}

/// A table as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TableRecord {
    /// Items are stored under this number, so a name can be reused at once after a delete.
    pub id: u64,
    pub account: String,
    pub region: String,
    pub spec: TableSpec,
    pub created_ms: i64,
    /// The attribute holding each item's expiry (seconds since the epoch), when time to live
    /// is on.
    #[serde(default)]
    pub ttl: Option<String>,
    /// The table's streams, oldest first: the last one takes changes while it is enabled;
    /// earlier ones stay readable for their retention.
    #[serde(default)]
    pub streams: Vec<StreamState>,
}

/// What a stream record carries of the item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StreamView {
    KeysOnly,
    NewImage,
    OldImage,
    NewAndOldImages,
}

impl StreamView {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "KEYS_ONLY" => Self::KeysOnly,
            "NEW_IMAGE" => Self::NewImage,
            "OLD_IMAGE" => Self::OldImage,
            "NEW_AND_OLD_IMAGES" => Self::NewAndOldImages,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::KeysOnly => "KEYS_ONLY",
            Self::NewImage => "NEW_IMAGE",
            Self::OldImage => "OLD_IMAGE",
            Self::NewAndOldImages => "NEW_AND_OLD_IMAGES",
        }
    }
}

/// A table's stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamState {
    /// Its records are stored under this number.
    pub id: u64,
    /// The stream's label: its creation time, as in its ARN.
    pub label: String,
    pub view: StreamView,
    pub enabled: bool,
    pub created_ms: i64,
}

impl TableRecord {
    /// The stream that takes changes now, if any.
    pub fn live_stream(&self) -> Option<&StreamState> {
        self.streams.last().filter(|s| s.enabled)
    }

    pub fn stream_arn(&self, stream: &StreamState) -> String {
        format!("{}/stream/{}", self.arn(), stream.label)
    }
}

impl TableRecord {
    pub fn arn(&self) -> String {
        format!(
            "arn:aws:dynamodb:{}:{}:table/{}",
            self.region, self.account, self.spec.name
        )
    }
}

/// Checks a table name as DynamoDB does: 3 to 255 of `a-z A-Z 0-9 _ - .`.
pub fn check_table_name(name: &str) -> Result<(), Error> {
    if name.len() < 3 || name.len() > 255 {
        return Err(Error::Validation(format!(
            "1 validation error detected: Value '{name}' at 'tableName' failed to satisfy constraint: Member must have length between 3 and 255"
        )));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        return Err(Error::Validation(format!(
            "1 validation error detected: Value '{name}' at 'tableName' failed to satisfy constraint: Member must satisfy regular expression pattern: [a-zA-Z0-9_.-]+"
        )));
    }
    Ok(())
}
