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
