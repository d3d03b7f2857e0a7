//! DynamoDB's expressions: ConditionExpression, FilterExpression, KeyConditionExpression,
//! ProjectionExpression and UpdateExpression, parsed and checked with DynamoDB's error
//! messages, then evaluated against items; and, in [`legacy`], the older request parameters
//! (`Expected`, `KeyConditions`, `QueryFilter`, `ScanFilter`, `AttributeUpdates`,
//! `AttributesToGet`) turned into the same trees.
//!
//! This module knows nothing of tables: the caller checks key attribute names and types against
//! the key schema, whether expression and legacy parameters were mixed, and the size of the
//! item an update produces. It does no I/O.

mod check;
mod eval;
pub mod legacy;
mod lexer;
mod parser;
mod reserved;
mod update;

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::fmt;

use crate::value::Value;

pub use eval::project;
pub use update::Update;

/// The longest expression DynamoDB accepts, in bytes.
const MAX_EXPRESSION_BYTES: usize = 4096;

/// A request's rejection, with the ValidationException message exactly as DynamoDB words it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ExprError(pub String);

/// Where an expression's placeholders come from, and which of them were used.
///
/// One context serves all the expressions of a request; after parsing them, [`Context::finish`]
/// reports the placeholders that none of them used, as DynamoDB does.
#[derive(Debug)]
pub struct Context<'a> {
    names: Option<&'a HashMap<String, String>>,
    values: Option<&'a HashMap<String, Value>>,
    used_names: RefCell<BTreeSet<String>>,
    used_values: RefCell<BTreeSet<String>>,
}

impl<'a> Context<'a> {
    /// A context over a request's `ExpressionAttributeNames` (`#n` to a name) and
    /// `ExpressionAttributeValues` (`:v` to a value).
    pub fn new(
        names: Option<&'a HashMap<String, String>>,
        values: Option<&'a HashMap<String, Value>>,
    ) -> Self {
        Self {
            names,
            values,
            used_names: RefCell::new(BTreeSet::new()),
            used_values: RefCell::new(BTreeSet::new()),
        }
    }

    /// The name `#n` stands for, recording that it was used.
    fn name(&self, placeholder: &str) -> Option<&'a str> {
        let name = self.names?.get(placeholder)?;
        self.used_names.borrow_mut().insert(placeholder.to_owned());
        Some(name)
    }

    /// The value `:v` stands for, recording that it was used.
    fn value(&self, placeholder: &str) -> Option<&'a Value> {
        let value = self.values?.get(placeholder)?;
        self.used_values.borrow_mut().insert(placeholder.to_owned());
        Some(value)
    }

    /// After every expression of a request was parsed: DynamoDB's error for placeholders that
    /// were given but never used, names before values, e.g. `Value provided in
    /// ExpressionAttributeValues unused in expressions: keys: {:v}`.
    pub fn finish(&self) -> Result<(), ExprError> {
        fn unused<T>(
            given: Option<&HashMap<String, T>>,
            used: &RefCell<BTreeSet<String>>,
            member: &str,
        ) -> Result<(), ExprError> {
            let used = used.borrow();
            let mut keys: Vec<&str> = given
                .into_iter()
                .flat_map(HashMap::keys)
                .filter(|k| !used.contains(k.as_str()))
                .map(String::as_str)
                .collect();
            if keys.is_empty() {
                return Ok(());
            }
            keys.sort_unstable();
            Err(ExprError(format!(
                "Value provided in {member} unused in expressions: keys: {{{}}}",
                keys.join(", ")
            )))
        }
        unused(self.names, &self.used_names, "ExpressionAttributeNames")?;
        unused(self.values, &self.used_values, "ExpressionAttributeValues")
    }
}

/// One step of a document path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PathElem {
    /// A map key (at the top, an attribute name).
    Attr(String),
    /// A list index.
    Index(usize),
}

/// A document path such as `a.b[2].c`; it always starts with an attribute name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Path(pub Vec<PathElem>);

impl Path {
    /// The top-level attribute the path starts at.
    pub fn top(&self) -> Option<&str> {
        match self.0.first() {
            Some(PathElem::Attr(name)) => Some(name),
            _ => None,
        }
    }

    /// The path as DynamoDB shows it in messages: `[a, b, [2]]`.
    fn listed(&self) -> String {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|e| match e {
                PathElem::Attr(name) => name.clone(),
                PathElem::Index(i) => format!("[{i}]"),
            })
            .collect();
        format!("[{}]", parts.join(", "))
    }
}

impl fmt::Display for Path {
    /// The path as written in an expression: `a.b[2].c`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, elem) in self.0.iter().enumerate() {
            match elem {
                PathElem::Attr(name) if i == 0 => f.write_str(name)?,
                PathElem::Attr(name) => write!(f, ".{name}")?,
                PathElem::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparator {
    /// `=`
    Eq,
    /// `<>`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

impl Comparator {
    /// The operator as written.
    pub fn symbol(self) -> &'static str {
        match self {
            Self::Eq => "=",
            Self::Ne => "<>",
            Self::Lt => "<",
            Self::Le => "<=",
            Self::Gt => ">",
            Self::Ge => ">=",
        }
    }
}

/// What a condition compares: an attribute, a constant, or the size of an attribute.
#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    /// The attribute at a path; absent when the item has nothing there.
    Path(Path),
    /// A constant from `ExpressionAttributeValues`.
    Value(Value),
    /// `size(path)`: a string's length in UTF-16 code units, a binary's length in bytes, the
    /// number of elements of a set, list or map; absent for other types.
    Size(Path),
}

/// A checked condition, ready to evaluate against items.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// `a = b`, `a < b`, …
    Compare(Operand, Comparator, Operand),
    /// `a BETWEEN low AND high`, both ends included.
    Between(Operand, Operand, Operand),
    /// `a IN (b, c, …)`
    In(Operand, Vec<Operand>),
    /// `attribute_exists(path)`
    AttributeExists(Path),
    /// `attribute_not_exists(path)`
    AttributeNotExists(Path),
    /// `attribute_type(path, :t)`, holding the type's name (`S`, `SS`, `BOOL`, …).
    AttributeType(Path, String),
    /// `begins_with(a, b)` on strings or binaries.
    BeginsWith(Operand, Operand),
    /// `contains(a, b)`: a substring, a set member or a list element.
    Contains(Operand, Operand),
    /// `NOT c`
    Not(Box<Condition>),
    /// `c AND d`
    And(Box<Condition>, Box<Condition>),
    /// `c OR d`
    Or(Box<Condition>, Box<Condition>),
}

/// The key condition of a Query: one equality on the partition key and at most one condition
/// on the sort key.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyCondition {
    /// The partition key's name and the value it must equal.
    pub hash: (String, Value),
    /// The sort key's name and its condition.
    pub range: Option<(String, RangeCondition)>,
}

impl KeyCondition {
    /// The same condition with `hash_name` as the partition key. When both conditions are
    /// equalities the parser cannot tell which attribute is the partition key and takes the
    /// first; this swaps them if the second is named `hash_name`.
    pub fn with_hash_key(self, hash_name: &str) -> Self {
        match self.range {
            Some((range_name, RangeCondition::Eq(range_value)))
                if range_name == hash_name && self.hash.0 != hash_name =>
            {
                Self {
                    hash: (range_name, range_value),
                    range: Some((self.hash.0, RangeCondition::Eq(self.hash.1))),
                }
            }
            range => Self {
                hash: self.hash,
                range,
            },
        }
    }
}

/// A condition on a sort key.
#[derive(Debug, Clone, PartialEq)]
pub enum RangeCondition {
    /// `= v`
    Eq(Value),
    /// `< v`
    Lt(Value),
    /// `<= v`
    Le(Value),
    /// `> v`
    Gt(Value),
    /// `>= v`
    Ge(Value),
    /// `BETWEEN low AND high`, both ends included.
    Between(Value, Value),
    /// `begins_with(key, prefix)`
    BeginsWith(Value),
}

impl RangeCondition {
    /// Whether a sort key value satisfies the condition; values of another type never do.
    pub fn matches(&self, key: &Value) -> bool {
        use std::cmp::Ordering::{Equal, Greater, Less};
        let order = |v: &Value| eval::order(key, v);
        match self {
            Self::Eq(v) => key == v,
            Self::Lt(v) => order(v) == Some(Less),
            Self::Le(v) => matches!(order(v), Some(Less | Equal)),
            Self::Gt(v) => order(v) == Some(Greater),
            Self::Ge(v) => matches!(order(v), Some(Greater | Equal)),
            Self::Between(low, high) => {
                matches!(order(low), Some(Greater | Equal))
                    && matches!(order(high), Some(Less | Equal))
            }
            Self::BeginsWith(prefix) => eval::begins_with(key, prefix),
        }
    }
}

/// Rejects what DynamoDB rejects before parsing: an empty or an overlong expression.
fn check_text(text: &str, kind: &str) -> Result<(), ExprError> {
    if text.trim().is_empty() {
        return Err(ExprError(format!(
            "Invalid {kind}: The expression can not be empty;"
        )));
    }
    if text.len() > MAX_EXPRESSION_BYTES {
        return Err(ExprError(format!(
            "Invalid {kind}: Expression size has exceeded the maximum allowed size; expression size: {}",
            text.len()
        )));
    }
    Ok(())
}

/// Parses and checks a condition. `kind` names the request member in messages:
/// `ConditionExpression` or `FilterExpression`.
pub fn parse_condition(text: &str, cx: &Context, kind: &str) -> Result<Condition, ExprError> {
    check_text(text, kind)?;
    let parsed = parser::condition(text).map_err(|e| ExprError(format!("Invalid {kind}: {e}")))?;
    check::condition(&parsed, cx, kind)
}

/// Parses and checks a ProjectionExpression.
pub fn parse_projection(text: &str, cx: &Context) -> Result<Vec<Path>, ExprError> {
    const KIND: &str = "ProjectionExpression";
    check_text(text, KIND)?;
    let parsed = parser::projection(text).map_err(|e| ExprError(format!("Invalid {KIND}: {e}")))?;
    check::projection(&parsed, cx)
}

/// Parses and checks an UpdateExpression.
pub fn parse_update(text: &str, cx: &Context) -> Result<Update, ExprError> {
    const KIND: &str = "UpdateExpression";
    check_text(text, KIND)?;
    let parsed = parser::update(text).map_err(|e| ExprError(format!("Invalid {KIND}: {e}")))?;
    check::update(&parsed, cx)
}

/// Parses and checks a KeyConditionExpression: `hashName = :v`, optionally AND one condition
/// on another attribute (`=`, `<`, `<=`, `>`, `>=`, `BETWEEN`, `begins_with`). The caller then
/// checks the attribute names against the key schema (see [`KeyCondition::with_hash_key`]).
pub fn parse_key_condition(text: &str, cx: &Context) -> Result<KeyCondition, ExprError> {
    const KIND: &str = "KeyConditionExpression";
    check_text(text, KIND)?;
    let parsed = parser::condition(text).map_err(|e| ExprError(format!("Invalid {KIND}: {e}")))?;
    let cond = check::condition(&parsed, cx, KIND)?;
    check::key_condition(cond)
}

#[cfg(test)]
mod tests;
