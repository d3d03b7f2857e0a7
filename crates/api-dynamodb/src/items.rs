//! The item operations: PutItem, GetItem, UpdateItem, DeleteItem, Query, Scan, BatchWriteItem,
//! BatchGetItem. Expressions are parsed here, against the request's placeholders, into the
//! checks and changes the store runs inside its transaction.

use std::collections::{HashMap, HashSet};
use std::ops::Bound;
use std::sync::Arc;

use nimbus_tables::expr::{self, Condition, Context, Path, RangeCondition, Update};
use nimbus_tables::value::{self, Item, MAX_ITEM_BYTES, Value as Attr, item_json, item_size};
use nimbus_tables::{Change, IndexSpec, KeyAttr, ReadRange, StoredKey, TableRecord, TableStore};
use serde_json::{Map, Value, json};

use crate::tables::not_found;
use crate::{DynamoError, Result, field, string, table_name, validation};

/// A table a request names, or ResourceNotFoundException.
fn table(store: &TableStore, account: &str, name: &str) -> Result<Arc<TableRecord>> {
    store.table(account, name).map_err(|_| not_found(name))
}

/// An item or key member.
fn item_member(input: &Value, name: &str, wire: &str) -> Result<Item> {
    let json = field(input, name).ok_or_else(|| {
        validation(format!(
            "1 validation error detected: Value null at '{wire}' failed to satisfy constraint: Member must not be null"
        ))
    })?;
    value::item_from_json(json).map_err(|e| {
        validation(format!(
            "One or more parameter values were invalid: {}",
            e.0.trim_start_matches("One or more parameter values were invalid: ")
        ))
    })
}

/// The request's `ExpressionAttributeNames` and `ExpressionAttributeValues`.
struct Placeholders {
    names: Option<HashMap<String, String>>,
    values: Option<HashMap<String, Attr>>,
}

impl Placeholders {
    fn of(input: &Value) -> Result<Self> {
        let names = match field(input, "ExpressionAttributeNames") {
            None => None,
            Some(Value::Object(m)) => {
                if m.is_empty() {
                    return Err(validation(
                        "ExpressionAttributeNames can only be specified when using expressions and must not be empty",
                    ));
                }
                let mut out = HashMap::new();
                for (k, v) in m {
                    let v = v.as_str().ok_or_else(|| {
                        DynamoError::from(nimbus_tables::Error::Validation(format!(
                            "ExpressionAttributeNames contains invalid value for key {k}"
                        )))
                    })?;
                    out.insert(k.clone(), v.to_owned());
                }
                Some(out)
            }
            Some(_) => return Err(validation("ExpressionAttributeNames must be a map")),
        };
        let values = match field(input, "ExpressionAttributeValues") {
            None => None,
            Some(Value::Object(m)) => {
                if m.is_empty() {
                    return Err(validation("ExpressionAttributeValues must not be empty"));
                }
                let mut out = HashMap::new();
                for (k, v) in m {
                    let value = Attr::from_json(v).map_err(|e| {
                        validation(format!(
                            "ExpressionAttributeValues contains invalid value: {} for key {k}",
                            e.0
                        ))
                    })?;
                    out.insert(k.clone(), value);
                }
                Some(out)
            }
            Some(_) => return Err(validation("ExpressionAttributeValues must be a map")),
        };
        Ok(Self { names, values })
    }

    fn context(&self) -> Context<'_> {
        Context::new(self.names.as_ref(), self.values.as_ref())
    }
}

/// A condition member (`ConditionExpression`, `FilterExpression`).
fn condition(input: &Value, member: &str, cx: &Context<'_>) -> Result<Option<Condition>> {
    match string(input, member)? {
        Some(text) => Ok(Some(expr::parse_condition(text, cx, member)?)),
        None => Ok(None),
    }
}

/// The attributes to return: `ProjectionExpression` (or `AttributesToGet`).
fn projection(input: &Value, cx: &Context<'_>) -> Result<Option<Vec<Path>>> {
    if let Some(text) = string(input, "ProjectionExpression")? {
        return Ok(Some(expr::parse_projection(text, cx)?));
    }
    if let Some(names) = field(input, "AttributesToGet") {
        return Ok(Some(expr::legacy::attributes_to_get(names)?));
    }
    Ok(None)
}

const EXPRESSION_MEMBERS: [&str; 7] = [
    "ConditionExpression",
    "UpdateExpression",
    "ProjectionExpression",
    "KeyConditionExpression",
    "FilterExpression",
    "ExpressionAttributeNames",
    "ExpressionAttributeValues",
];
const LEGACY_MEMBERS: [&str; 7] = [
    "Expected",
    "AttributeUpdates",
    "KeyConditions",
    "QueryFilter",
    "ScanFilter",
    "AttributesToGet",
    "ConditionalOperator",
];

/// Refuses a request that mixes the expression parameters with the legacy ones, as DynamoDB
/// does.
fn one_style(input: &Value) -> Result<()> {
    let present = |members: &[&str]| -> Vec<String> {
        members
            .iter()
            .filter(|m| field(input, m).is_some())
            .map(|m| (*m).to_owned())
            .collect()
    };
    let (new, old) = (present(&EXPRESSION_MEMBERS), present(&LEGACY_MEMBERS));
    if !new.is_empty() && !old.is_empty() {
        return Err(validation(format!(
            "Can not use both expression and non-expression parameters in the same request: Non-expression parameters: {{{}}} Expression parameters: {{{}}}",
            old.join(", "),
            new.join(", ")
        )));
    }
    Ok(())
}

/// A write's condition: `ConditionExpression`, or the legacy `Expected`.
fn write_condition(input: &Value, cx: &Context<'_>) -> Result<Option<Condition>> {
    if let Some(expected) = field(input, "Expected") {
        return Ok(expr::legacy::expected(
            expected,
            field(input, "ConditionalOperator"),
        )?);
    }
    condition(input, "ConditionExpression", cx)
}

/// `ReturnValues`, one of `allowed`.
fn return_values(input: &Value, allowed: &[&str]) -> Result<String> {
    let rv = string(input, "ReturnValues")?.unwrap_or("NONE");
    if !allowed.contains(&rv) {
        return Err(validation("Return values set to invalid value"));
    }
    Ok(rv.to_owned())
}

fn check_size(item: &Item) -> Result<(), nimbus_tables::Error> {
    if item_size(item) > MAX_ITEM_BYTES {
        return Err(nimbus_tables::Error::Validation(
            "Item size has exceeded the maximum allowed size".into(),
        ));
    }
    Ok(())
}

/// Checks a write's condition against the item there: a failure carries the item when the
/// request asked for it.
fn holds(
    condition: Option<&Condition>,
    old: Option<&Item>,
    return_on_failure: bool,
) -> Result<(), nimbus_tables::Error> {
    if let Some(c) = condition {
        let empty = Item::new();
        if !c.eval(old.unwrap_or(&empty)) {
            return Err(nimbus_tables::Error::ConditionalCheckFailed(
                old.filter(|_| return_on_failure).cloned().map(Box::new),
            ));
        }
    }
    Ok(())
}

fn on_failure(input: &Value) -> Result<bool> {
    match string(input, "ReturnValuesOnConditionCheckFailure")? {
        None | Some("NONE") => Ok(false),
        Some("ALL_OLD") => Ok(true),
        Some(other) => Err(validation(format!(
            "1 validation error detected: Value '{other}' at 'returnValuesOnConditionCheckFailure' failed to satisfy constraint: Member must satisfy enum value set: [ALL_OLD, NONE]"
        ))),
    }
}

/// `ConsumedCapacity`, when the request asks for it.
fn consumed(input: &Value, table: &str, units: f64) -> Option<Value> {
    match field(input, "ReturnConsumedCapacity").and_then(Value::as_str) {
        Some("TOTAL" | "INDEXES") => Some(json!({ "TableName": table, "CapacityUnits": units })),
        _ => None,
    }
}

fn write_units(written: &nimbus_tables::Written) -> f64 {
    let size = [&written.old, &written.new]
        .iter()
        .filter_map(|i| i.as_ref().map(item_size))
        .max()
        .unwrap_or(0);
    size.div_ceil(1024).max(1) as f64
}

fn read_units(bytes: usize, consistent: bool) -> f64 {
    let units = bytes.div_ceil(4096).max(1) as f64;
    if consistent { units } else { units / 2.0 }
}

fn with_capacity(mut out: Value, capacity: Option<Value>) -> Value {
    if let Some(c) = capacity {
        out["ConsumedCapacity"] = c;
    }
    out
}

/// A write ready to run: its table, the item's key, the change the store runs, and the
/// top-level attributes an update touches.
pub(crate) struct Prepared {
    pub table: Arc<TableRecord>,
    pub key: StoredKey,
    pub change: Change,
    pub touched: Vec<String>,
}

/// How a write is described: `Put`, `Delete`, `Update` or `ConditionCheck` (the member names
/// of PutItem, DeleteItem, UpdateItem and of a transaction's actions are the same).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WriteKind {
    Put,
    Delete,
    Update,
    Check,
}

/// Parses a write's members into the change the store runs: the condition (and for an update
/// its actions) checked against the item as the transaction sees it.
pub(crate) fn prepare(
    store: &TableStore,
    account: &str,
    input: &Value,
    kind: WriteKind,
) -> Result<Prepared> {
    one_style(input)?;
    let table = table(store, account, table_name(input)?)?;
    let (key, item) = match kind {
        WriteKind::Put => {
            let item = item_member(input, "Item", "item")?;
            check_size(&item)?;
            nimbus_tables::schema::check_index_keys(&table.spec, &item)?;
            (table.spec.key.key_of(&item)?, item)
        }
        _ => {
            let key = item_member(input, "Key", "key")?;
            (table.spec.key.check_key(&key)?, key)
        }
    };
    let placeholders = Placeholders::of(input)?;
    let cx = placeholders.context();
    let cond = write_condition(input, &cx)?;
    let update: Option<Update> = match (
        string(input, "UpdateExpression")?,
        field(input, "AttributeUpdates"),
    ) {
        _ if kind != WriteKind::Update => None,
        (Some(text), _) => Some(expr::parse_update(text, &cx)?),
        (None, Some(updates)) => Some(expr::legacy::attribute_updates(updates)?),
        (None, None) => None,
    };
    cx.finish()?;
    if kind == WriteKind::Check && cond.is_none() {
        return Err(validation(
            "1 validation error detected: Value null at 'conditionExpression' failed to satisfy constraint: Member must not be null",
        ));
    }
    let touched = update.as_ref().map(Update::touched).unwrap_or_default();
    for k in table.spec.key.names() {
        if touched.iter().any(|t| t == k) {
            return Err(validation(format!(
                "One or more parameter values were invalid: Cannot update attribute {k}. This attribute is part of the key"
            )));
        }
    }
    let on_failure = on_failure(input)?;
    let record = table.clone();
    let change: Change = Box::new(move |old| {
        holds(cond.as_ref(), old, on_failure)?;
        match kind {
            WriteKind::Put => Ok(Some(item)),
            WriteKind::Delete => Ok(None),
            WriteKind::Check => Ok(old.cloned()),
            WriteKind::Update => {
                let mut new = old.cloned().unwrap_or(item);
                if let Some(u) = &update {
                    u.apply(&mut new)
                        .map_err(|e| nimbus_tables::Error::Validation(e.0))?;
                }
                check_size(&new)?;
                nimbus_tables::schema::check_index_keys(&record.spec, &new)?;
                Ok(Some(new))
            }
        }
    });
    Ok(Prepared {
        table,
        key,
        change,
        touched,
    })
}

/// PutItem, DeleteItem and UpdateItem: the write, and what `ReturnValues` asks for.
pub(crate) async fn write(
    store: &TableStore,
    account: &str,
    input: &Value,
    kind: WriteKind,
) -> Result<Value> {
    let allowed: &[&str] = if kind == WriteKind::Update {
        &["NONE", "ALL_OLD", "ALL_NEW", "UPDATED_OLD", "UPDATED_NEW"]
    } else {
        &["NONE", "ALL_OLD"]
    };
    let rv = return_values(input, allowed)?;
    let p = prepare(store, account, input, kind)?;
    let written = store.write(&p.table, p.key, p.change).await?;
    let pick = |item: &Option<Item>| -> Option<Map<String, Value>> {
        let item = item.as_ref()?;
        let chosen: Item = p
            .touched
            .iter()
            .filter_map(|t| item.get(t).map(|v| (t.clone(), v.clone())))
            .collect();
        (!chosen.is_empty()).then(|| item_json(&chosen))
    };
    let attributes = match rv.as_str() {
        "ALL_OLD" => written.old.as_ref().map(item_json),
        "ALL_NEW" => written.new.as_ref().map(item_json),
        "UPDATED_OLD" => pick(&written.old),
        "UPDATED_NEW" => pick(&written.new),
        _ => None,
    };
    let mut out = json!({});
    if let Some(a) = attributes {
        out["Attributes"] = Value::Object(a);
    }
    Ok(with_capacity(
        out,
        consumed(input, &p.table.spec.name, write_units(&written)),
    ))
}

/// A GetItem's (or a transaction's Get's) table, key and projection.
pub(crate) fn get_request(
    store: &TableStore,
    account: &str,
    input: &Value,
) -> Result<(Arc<TableRecord>, StoredKey, Option<Vec<Path>>)> {
    one_style(input)?;
    let table = table(store, account, table_name(input)?)?;
    let key = item_member(input, "Key", "key")?;
    let stored = table.spec.key.check_key(&key)?;
    let placeholders = Placeholders::of(input)?;
    let cx = placeholders.context();
    let paths = projection(input, &cx)?;
    cx.finish()?;
    Ok((table, stored, paths))
}

pub(crate) fn get(store: &TableStore, account: &str, input: &Value) -> Result<Value> {
    let (table, stored, paths) = get_request(store, account, input)?;
    let consistent = field(input, "ConsistentRead").and_then(Value::as_bool) == Some(true);
    let found = store.get(&table, &stored)?;
    let units = read_units(found.as_ref().map_or(0, item_size), consistent);
    let mut out = json!({});
    if let Some(item) = found {
        let item = match &paths {
            Some(p) => expr::project(&item, p),
            None => item,
        };
        out["Item"] = Value::Object(item_json(&item));
    }
    Ok(with_capacity(out, consumed(input, &table.spec.name, units)))
}

/// A key attribute's value as stored bytes, or DynamoDB's type mismatch.
fn key_value(attr: &KeyAttr, v: &Attr) -> Result<Vec<u8>> {
    let matches = matches!(
        (attr.kind, v),
        (nimbus_tables::KeyType::S, Attr::S(_))
            | (nimbus_tables::KeyType::N, Attr::N(_))
            | (nimbus_tables::KeyType::B, Attr::B(_))
    );
    match v.key_bytes() {
        Some(b) if matches => Ok(b),
        _ => Err(validation(
            "One or more parameter values were invalid: Condition parameter type does not match schema type",
        )),
    }
}

/// `Select`, `Limit`, `ExclusiveStartKey`, the filter and the projection of a Query or Scan.
struct Reading {
    filter: Option<Condition>,
    paths: Option<Vec<Path>>,
    count_only: bool,
    limit: Option<usize>,
    after: Option<StoredKey>,
    consistent: bool,
}

fn reading(
    input: &Value,
    table: &TableRecord,
    index: Option<&IndexSpec>,
    cx: &Context<'_>,
    filter_member: &str,
) -> Result<Reading> {
    let legacy = if filter_member == "FilterExpression" {
        None
    } else {
        field(input, filter_member)
    };
    let filter = match legacy {
        Some(f) => expr::legacy::filter(f, field(input, "ConditionalOperator"), filter_member)?,
        None => condition(input, "FilterExpression", cx)?,
    };
    let paths = projection(input, cx)?;
    let count_only = match string(input, "Select")? {
        None | Some("ALL_ATTRIBUTES" | "ALL_PROJECTED_ATTRIBUTES") => false,
        Some("SPECIFIC_ATTRIBUTES") => {
            if paths.is_none() {
                return Err(validation(
                    "One or more parameter values were invalid: Select type SPECIFIC_ATTRIBUTES requires AttributesToGet or ProjectionExpression",
                ));
            }
            false
        }
        Some("COUNT") => {
            if paths.is_some() {
                return Err(validation(
                    "One or more parameter values were invalid: Cannot specify the AttributesToGet or ProjectionExpression when choosing to get only the Count",
                ));
            }
            true
        }
        Some(other) => {
            return Err(validation(format!(
                "1 validation error detected: Value '{other}' at 'select' failed to satisfy constraint: Member must satisfy enum value set: [SPECIFIC_ATTRIBUTES, COUNT, ALL_ATTRIBUTES, ALL_PROJECTED_ATTRIBUTES]"
            )));
        }
    };
    let limit = match field(input, "Limit") {
        None => None,
        Some(v) => match v.as_u64() {
            Some(n) if n >= 1 => Some(n as usize),
            _ => {
                return Err(validation(format!(
                    "1 validation error detected: Value '{v}' at 'limit' failed to satisfy constraint: Member must have value greater than or equal to 1"
                )));
            }
        },
    };
    let after = match field(input, "ExclusiveStartKey") {
        None => None,
        Some(_) => {
            let key = item_member(input, "ExclusiveStartKey", "exclusiveStartKey")?;
            let invalid = || {
                validation(
                    "The provided starting key is invalid: The provided key element does not match the schema",
                )
            };
            match index {
                None => Some(table.spec.key.check_key(&key).map_err(|_| invalid())?),
                Some(index) => {
                    let names = index.key_names(&table.spec.key);
                    if key.len() != names.len() || !names.iter().all(|n| key.contains_key(*n)) {
                        return Err(invalid());
                    }
                    let base = table.spec.key.key_of(&key).map_err(|_| invalid())?;
                    Some(index.entry_key(&base, &key).ok_or_else(invalid)?)
                }
            }
        }
    };
    Ok(Reading {
        filter,
        paths,
        count_only,
        limit,
        after,
        consistent: field(input, "ConsistentRead").and_then(Value::as_bool) == Some(true),
    })
}

/// A page read, filtered and projected, in Query's and Scan's output shape.
fn page_output(
    input: &Value,
    table: &TableRecord,
    page: nimbus_tables::Page,
    how: &Reading,
) -> Value {
    let scanned = page.items.len();
    let bytes: usize = page.items.iter().map(item_size).sum();
    let kept: Vec<Item> = page
        .items
        .into_iter()
        .filter(|i| how.filter.as_ref().is_none_or(|f| f.eval(i)))
        .collect();
    let mut out = json!({ "Count": kept.len(), "ScannedCount": scanned });
    if !how.count_only {
        out["Items"] = Value::Array(
            kept.iter()
                .map(|i| match &how.paths {
                    Some(p) => Value::Object(item_json(&expr::project(i, p))),
                    None => Value::Object(item_json(i)),
                })
                .collect(),
        );
    }
    if let Some(last) = &page.last {
        out["LastEvaluatedKey"] = Value::Object(item_json(last));
    }
    with_capacity(
        out,
        consumed(input, &table.spec.name, read_units(bytes, how.consistent)),
    )
}

/// The table a Query or Scan reads (indexes are not served yet).
fn read_table(
    store: &TableStore,
    account: &str,
    input: &Value,
) -> Result<(Arc<TableRecord>, Option<IndexSpec>)> {
    one_style(input)?;
    let table = table(store, account, table_name(input)?)?;
    let index = match string(input, "IndexName")? {
        None => None,
        Some(name) => {
            let index = table.spec.index(name).cloned().ok_or_else(|| {
                validation(format!(
                    "The table does not have the specified index: {name}"
                ))
            })?;
            if index.global && field(input, "ConsistentRead").and_then(Value::as_bool) == Some(true)
            {
                return Err(validation(
                    "Consistent reads are not supported on global secondary indexes",
                ));
            }
            if index.global
                && index.projection != nimbus_tables::Projection::All
                && string(input, "Select")? == Some("ALL_ATTRIBUTES")
            {
                return Err(validation(format!(
                    "One or more parameter values were invalid: Select type ALL_ATTRIBUTES is not supported for global secondary index {name} because its projection type is not ALL"
                )));
            }
            Some(index)
        }
    };
    Ok((table, index))
}

pub(crate) fn query(store: &TableStore, account: &str, input: &Value) -> Result<Value> {
    let (table, index) = read_table(store, account, input)?;
    let schema = index.as_ref().map_or(&table.spec.key, |i| &i.key);
    let placeholders = Placeholders::of(input)?;
    let cx = placeholders.context();
    let kc = match (
        string(input, "KeyConditionExpression")?,
        field(input, "KeyConditions"),
    ) {
        (Some(text), _) => expr::parse_key_condition(text, &cx)?,
        (None, Some(conditions)) => expr::legacy::key_conditions(conditions)?,
        (None, None) => {
            return Err(validation(
                "Either the KeyConditions or KeyConditionExpression parameter must be specified in the request.",
            ));
        }
    }
    .with_hash_key(&schema.hash.name);
    let how = reading(input, &table, index.as_ref(), &cx, "QueryFilter")?;
    cx.finish()?;
    if kc.hash.0 != schema.hash.name {
        return Err(validation(format!(
            "Query condition missed key schema element: {}",
            schema.hash.name
        )));
    }
    if let Some(filter_names) = how.filter.as_ref().map(Condition::attributes) {
        for k in schema.names() {
            if filter_names.iter().any(|n| n == k) {
                return Err(validation(format!(
                    "Filter Expression can only contain non-primary key attributes: Primary key attribute: {k}"
                )));
            }
        }
    }
    let mut range = ReadRange {
        partition: Some(key_value(&schema.hash, &kc.hash.1)?),
        forward: field(input, "ScanIndexForward").and_then(Value::as_bool) != Some(false),
        limit: how.limit,
        after: how.after.clone(),
        index: index.clone(),
        ..Default::default()
    };
    if let Some((attr, cond)) = &kc.range {
        let Some(sort) = schema.range.as_ref().filter(|r| &r.name == attr) else {
            return Err(validation(match &schema.range {
                Some(r) => format!("Query condition missed key schema element: {}", r.name),
                None => "Query key condition not supported".to_owned(),
            }));
        };
        let b = |v: &Attr| key_value(sort, v);
        match cond {
            RangeCondition::Eq(v) => {
                range.lower = Bound::Included(b(v)?);
                range.upper = Bound::Included(b(v)?);
            }
            RangeCondition::Lt(v) => range.upper = Bound::Excluded(b(v)?),
            RangeCondition::Le(v) => range.upper = Bound::Included(b(v)?),
            RangeCondition::Gt(v) => range.lower = Bound::Excluded(b(v)?),
            RangeCondition::Ge(v) => range.lower = Bound::Included(b(v)?),
            RangeCondition::Between(lo, hi) => {
                let (lo, hi) = (b(lo)?, b(hi)?);
                if lo > hi {
                    return Err(validation(
                        "Invalid KeyConditionExpression: The BETWEEN operator requires upper bound to be greater than or equal to lower bound",
                    ));
                }
                range.lower = Bound::Included(lo);
                range.upper = Bound::Included(hi);
            }
            RangeCondition::BeginsWith(v) => {
                if sort.kind == nimbus_tables::KeyType::N {
                    return Err(validation(
                        "Invalid KeyConditionExpression: Incorrect operand type for operator or function; operator or function: begins_with, operand type: N",
                    ));
                }
                let prefix = b(v)?;
                range.lower = Bound::Included(prefix.clone());
                range.prefix = Some(prefix);
            }
        }
    }
    let fetch = local_fetch(input, range.index.as_ref(), &how)?;
    let mut page = store.read(&table, &range)?;
    if fetch {
        page.items = fetch_whole(store, &table, page.items)?;
    }
    Ok(page_output(input, &table, page, &how))
}

/// Whether a read of a local secondary index must fetch whole items from the table: it keeps
/// only some attributes, and the request asks for all of them or names some to project.
fn local_fetch(input: &Value, index: Option<&IndexSpec>, how: &Reading) -> Result<bool> {
    Ok(
        index.is_some_and(|i| !i.global && i.projection != nimbus_tables::Projection::All)
            && (string(input, "Select")? == Some("ALL_ATTRIBUTES") || how.paths.is_some()),
    )
}

/// The table's whole items for entries of a local secondary index, in the same order.
fn fetch_whole(
    store: &TableStore,
    table: &Arc<TableRecord>,
    entries: Vec<Item>,
) -> Result<Vec<Item>> {
    let keys = entries
        .iter()
        .map(|e| Ok((table.clone(), table.spec.key.key_of(e)?)))
        .collect::<Result<Vec<_>>>()?;
    Ok(store
        .get_many(&keys)?
        .into_iter()
        .zip(entries)
        .map(|(whole, entry)| whole.unwrap_or(entry))
        .collect())
}

pub(crate) fn scan(store: &TableStore, account: &str, input: &Value) -> Result<Value> {
    let (table, index) = read_table(store, account, input)?;
    let placeholders = Placeholders::of(input)?;
    let cx = placeholders.context();
    let how = reading(input, &table, index.as_ref(), &cx, "ScanFilter")?;
    cx.finish()?;
    let segment = match (field(input, "Segment"), field(input, "TotalSegments")) {
        (None, None) => None,
        (Some(s), Some(t)) => {
            let (s, t) = (s.as_u64().unwrap_or(u64::MAX), t.as_u64().unwrap_or(0));
            if !(1..=1_000_000).contains(&t) {
                return Err(validation(format!(
                    "1 validation error detected: Value '{t}' at 'totalSegments' failed to satisfy constraint: Member must have value less than or equal to 1000000"
                )));
            }
            if s >= t {
                return Err(validation(format!(
                    "The Segment parameter is zero-based and must be less than parameter TotalSegments: Segment: {s} is not less than TotalSegments: {t}"
                )));
            }
            Some((s as u32, t as u32))
        }
        (Some(_), None) => {
            return Err(validation(
                "The TotalSegments parameter is required but was not present in the request when Segment parameter is present",
            ));
        }
        (None, Some(_)) => {
            return Err(validation(
                "The Segment parameter is required but was not present in the request when parameter TotalSegments is present",
            ));
        }
    };
    let range = ReadRange {
        limit: how.limit,
        after: how.after.clone(),
        segment,
        index,
        ..Default::default()
    };
    let fetch = local_fetch(input, range.index.as_ref(), &how)?;
    let mut page = store.read(&table, &range)?;
    if fetch {
        page.items = fetch_whole(store, &table, page.items)?;
    }
    Ok(page_output(input, &table, page, &how))
}

/// The most writes in one BatchWriteItem, and keys in one BatchGetItem.
const MAX_BATCH_WRITES: usize = 25;
const MAX_BATCH_GETS: usize = 100;

pub(crate) async fn batch_write(store: &TableStore, account: &str, input: &Value) -> Result<Value> {
    let Some(Value::Object(requests)) = field(input, "RequestItems") else {
        return Err(validation(
            "1 validation error detected: Value null at 'requestItems' failed to satisfy constraint: Member must not be null",
        ));
    };
    let total: usize = requests
        .values()
        .map(|v| v.as_array().map_or(0, Vec::len))
        .sum();
    if total == 0
        || total > MAX_BATCH_WRITES
        || requests
            .values()
            .any(|v| v.as_array().is_none_or(Vec::is_empty))
    {
        return Err(validation(
            "1 validation error detected: Value at 'requestItems' failed to satisfy constraint: Map value must satisfy constraint: [Member must have length less than or equal to 25, Member must have length greater than or equal to 1]",
        ));
    }
    let mut writes = Vec::with_capacity(total);
    for (name, list) in requests {
        let table = table(store, account, name)?;
        let mut seen = HashSet::new();
        for request in list.as_array().into_iter().flatten() {
            let (stored, item) = match (
                field(request, "PutRequest"),
                field(request, "DeleteRequest"),
            ) {
                (Some(put), None) => {
                    let item = item_member(put, "Item", "item")?;
                    check_size(&item)?;
                    nimbus_tables::schema::check_index_keys(&table.spec, &item)?;
                    (table.spec.key.key_of(&item)?, Some(item))
                }
                (None, Some(delete)) => {
                    let key = item_member(delete, "Key", "key")?;
                    (table.spec.key.check_key(&key)?, None)
                }
                _ => {
                    return Err(validation(
                        "Supplied AttributeValue has more than one datatypes set, must contain exactly one of the supported datatypes",
                    ));
                }
            };
            if !seen.insert(stored.clone()) {
                return Err(validation("Provided list of item keys contains duplicates"));
            }
            writes.push((table.clone(), stored, item));
        }
    }
    let pending = writes.into_iter().map(|(table, key, item)| async move {
        let change: Change = Box::new(move |_| Ok(item));
        store.write(&table, key, change).await
    });
    for result in futures_util::future::join_all(pending).await {
        result?;
    }
    Ok(json!({ "UnprocessedItems": {} }))
}

pub(crate) fn batch_get(store: &TableStore, account: &str, input: &Value) -> Result<Value> {
    let Some(Value::Object(requests)) = field(input, "RequestItems") else {
        return Err(validation(
            "1 validation error detected: Value null at 'requestItems' failed to satisfy constraint: Member must not be null",
        ));
    };
    let total: usize = requests
        .values()
        .map(|v| v.get("Keys").and_then(Value::as_array).map_or(0, Vec::len))
        .sum();
    if total == 0 || total > MAX_BATCH_GETS {
        return Err(validation(
            "Too many items requested for the BatchGetItem call",
        ));
    }
    let mut responses = Map::new();
    for (name, request) in requests {
        let table = table(store, account, name)?;
        let placeholders = Placeholders::of(request)?;
        let cx = placeholders.context();
        let paths = projection(request, &cx)?;
        cx.finish()?;
        let mut seen = HashSet::new();
        let mut found = Vec::new();
        for key in request
            .get("Keys")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let key = value::item_from_json(key)?;
            let stored = table.spec.key.check_key(&key)?;
            if !seen.insert(stored.clone()) {
                return Err(validation("Provided list of item keys contains duplicates"));
            }
            if let Some(item) = store.get(&table, &stored)? {
                let item = match &paths {
                    Some(p) => expr::project(&item, p),
                    None => item,
                };
                found.push(Value::Object(item_json(&item)));
            }
        }
        responses.insert(name.clone(), Value::Array(found));
    }
    Ok(json!({ "Responses": responses, "UnprocessedKeys": {} }))
}
