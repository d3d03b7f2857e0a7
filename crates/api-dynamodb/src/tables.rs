//! CreateTable, DescribeTable, ListTables, DeleteTable.

use nimbus_tables::{
    IndexSpec, KeyAttr, KeySchema, KeyType, Projection, TableRecord, TableSpec, TableStore,
    Throughput,
};
use serde_json::{Value, json};

use crate::{DynamoError, Result, field, string, table_name, validation};

/// A table's description, as DescribeTable and the other table operations show it.
pub(crate) fn description(store: &TableStore, record: &TableRecord, status: &str) -> Result<Value> {
    let (count, bytes) = store.stats(record)?;
    let spec = &record.spec;
    let key_schema = key_schema_json(&spec.key);
    let throughput = spec.throughput.unwrap_or_default();
    let mut out = json!({
        "TableName": spec.name,
        "TableArn": record.arn(),
        "TableId": format!("{:08x}-0000-4000-8000-{:012x}", record.id, record.id),
        "TableStatus": status,
        "KeySchema": key_schema,
        "AttributeDefinitions": spec.attributes.iter()
            .map(|(n, t)| json!({"AttributeName": n, "AttributeType": t.name()}))
            .collect::<Vec<_>>(),
        "CreationDateTime": record.created_ms as f64 / 1000.0,
        "ItemCount": count,
        "TableSizeBytes": bytes,
        "ProvisionedThroughput": {
            "NumberOfDecreasesToday": 0,
            "ReadCapacityUnits": throughput.read,
            "WriteCapacityUnits": throughput.write,
        },
        "DeletionProtectionEnabled": false,
    });
    let (global, local): (Vec<&IndexSpec>, Vec<&IndexSpec>) =
        spec.indexes.iter().partition(|i| i.global);
    if !global.is_empty() {
        out["GlobalSecondaryIndexes"] = Value::Array(
            global
                .iter()
                .map(|i| index_json(store, record, i))
                .collect::<Result<_>>()?,
        );
    }
    if !local.is_empty() {
        out["LocalSecondaryIndexes"] = Value::Array(
            local
                .iter()
                .map(|i| index_json(store, record, i))
                .collect::<Result<_>>()?,
        );
    }
    if let Some(stream) = record.streams.last() {
        out["LatestStreamLabel"] = json!(stream.label);
        out["LatestStreamArn"] = json!(record.stream_arn(stream));
    }
    if let Some(stream) = record.live_stream() {
        out["StreamSpecification"] =
            json!({ "StreamEnabled": true, "StreamViewType": stream.view.name() });
    }
    if spec.billing_mode == "PAY_PER_REQUEST" {
        out["BillingModeSummary"] = json!({
            "BillingMode": "PAY_PER_REQUEST",
            "LastUpdateToPayPerRequestDateTime": record.created_ms as f64 / 1000.0,
        });
    }
    Ok(out)
}

fn key_schema_json(key: &KeySchema) -> Vec<Value> {
    let mut out = vec![json!({"AttributeName": key.hash.name, "KeyType": "HASH"})];
    if let Some(r) = &key.range {
        out.push(json!({"AttributeName": r.name, "KeyType": "RANGE"}));
    }
    out
}

fn index_json(store: &TableStore, record: &TableRecord, index: &IndexSpec) -> Result<Value> {
    let (count, bytes) = store.stats_of(index.id)?;
    let mut projection = json!({ "ProjectionType": match &index.projection {
        Projection::All => "ALL",
        Projection::KeysOnly => "KEYS_ONLY",
        Projection::Include(_) => "INCLUDE",
    }});
    if let Projection::Include(names) = &index.projection {
        projection["NonKeyAttributes"] = json!(names);
    }
    let mut out = json!({
        "IndexName": index.name,
        "KeySchema": key_schema_json(&index.key),
        "Projection": projection,
        "IndexSizeBytes": bytes,
        "ItemCount": count,
        "IndexArn": format!("{}/index/{}", record.arn(), index.name),
    });
    if index.global {
        let t = index.throughput.unwrap_or_default();
        out["IndexStatus"] = json!("ACTIVE");
        out["ProvisionedThroughput"] = json!({
            "NumberOfDecreasesToday": 0,
            "ReadCapacityUnits": t.read,
            "WriteCapacityUnits": t.write,
        });
    }
    Ok(out)
}

fn key_schema(input: &Value, defined: &[(String, KeyType)]) -> Result<KeySchema> {
    let Some(Value::Array(elements)) = field(input, "KeySchema") else {
        return Err(validation(
            "1 validation error detected: Value null at 'keySchema' failed to satisfy constraint: Member must not be null",
        ));
    };
    if elements.is_empty() || elements.len() > 2 {
        return Err(validation(format!(
            "1 validation error detected: Value '{}' at 'keySchema' failed to satisfy constraint: Member must have length less than or equal to 2",
            elements.len()
        )));
    }
    let mut hash = None;
    let mut range = None;
    for e in elements {
        let name = string(e, "AttributeName")?.unwrap_or_default();
        let kind = string(e, "KeyType")?.unwrap_or_default();
        let Some((_, t)) = defined.iter().find(|(n, _)| n == name) else {
            let names: Vec<&str> = defined.iter().map(|(n, _)| n.as_str()).collect();
            return Err(validation(format!(
                "One or more parameter values were invalid: Some index key attributes are not defined in AttributeDefinitions. Keys: [{name}], AttributeDefinitions: [{}]",
                names.join(", ")
            )));
        };
        let attr = KeyAttr {
            name: name.to_owned(),
            kind: *t,
        };
        match kind {
            "HASH" if hash.is_none() => hash = Some(attr),
            "RANGE" if range.is_none() && hash.is_some() => range = Some(attr),
            "HASH" | "RANGE" => {
                return Err(validation(
                    "Invalid KeySchema: The first KeySchemaElement is not a HASH key type",
                ));
            }
            other => {
                return Err(validation(format!(
                    "1 validation error detected: Value '{other}' at 'keySchema.1.member.keyType' failed to satisfy constraint: Member must satisfy enum value set: [HASH, RANGE]"
                )));
            }
        }
    }
    let hash = hash.ok_or_else(|| {
        validation("Invalid KeySchema: The first KeySchemaElement is not a HASH key type")
    })?;
    if range.as_ref().is_some_and(|r| r.name == hash.name) {
        return Err(validation(
            "Both the Hash Key and the Range Key element in the KeySchema have the same name",
        ));
    }
    Ok(KeySchema { hash, range })
}

fn attribute_definitions(input: &Value) -> Result<Vec<(String, KeyType)>> {
    let Some(Value::Array(defs)) = field(input, "AttributeDefinitions") else {
        return Err(validation(
            "1 validation error detected: Value null at 'attributeDefinitions' failed to satisfy constraint: Member must not be null",
        ));
    };
    let mut out: Vec<(String, KeyType)> = Vec::new();
    for d in defs {
        let name = string(d, "AttributeName")?.unwrap_or_default().to_owned();
        let t = string(d, "AttributeType")?.unwrap_or_default();
        let kind = KeyType::parse(t).ok_or_else(|| {
            validation(format!(
                "1 validation error detected: Value '{t}' at 'attributeDefinitions.1.member.attributeType' failed to satisfy constraint: Member must satisfy enum value set: [B, N, S]"
            ))
        })?;
        if name.is_empty() || name.len() > 255 {
            return Err(validation(
                "One or more parameter values were invalid: An AttributeName must be 1 to 255 bytes long",
            ));
        }
        if out.iter().any(|(n, _)| *n == name) {
            return Err(validation(format!(
                "Cannot have two attributes with the same name: {name}"
            )));
        }
        out.push((name, kind));
    }
    Ok(out)
}

fn throughput(input: &Value) -> Result<(String, Option<Throughput>)> {
    let mode = string(input, "BillingMode")?.unwrap_or("PROVISIONED");
    let given = field(input, "ProvisionedThroughput");
    match mode {
        "PAY_PER_REQUEST" => {
            if given.is_some() {
                return Err(validation(
                    "One or more parameter values were invalid: Neither ReadCapacityUnits nor WriteCapacityUnits can be specified when BillingMode is PAY_PER_REQUEST",
                ));
            }
            Ok((mode.to_owned(), None))
        }
        "PROVISIONED" => {
            let units = |name: &str| given.and_then(|g| g.get(name)).and_then(Value::as_u64);
            match (units("ReadCapacityUnits"), units("WriteCapacityUnits")) {
                (Some(read), Some(write)) if read >= 1 && write >= 1 => {
                    Ok((mode.to_owned(), Some(Throughput { read, write })))
                }
                (Some(_), Some(_)) => Err(validation(
                    "One or more parameter values were invalid: Each of ReadCapacityUnits and WriteCapacityUnits must be at least 1",
                )),
                _ => Err(validation(
                    "One or more parameter values were invalid: ReadCapacityUnits and WriteCapacityUnits must both be specified when BillingMode is PROVISIONED",
                )),
            }
        }
        other => Err(validation(format!(
            "1 validation error detected: Value '{other}' at 'billingMode' failed to satisfy constraint: Member must satisfy enum value set: [PROVISIONED, PAY_PER_REQUEST]"
        ))),
    }
}

/// An index's `ProvisionedThroughput` (units below 1 count as 1).
fn index_throughput(t: &Value) -> Throughput {
    let units = |name: &str| t.get(name).and_then(Value::as_u64).unwrap_or(1).max(1);
    Throughput {
        read: units("ReadCapacityUnits"),
        write: units("WriteCapacityUnits"),
    }
}

/// The most global and local secondary indexes a table may have.
const MAX_GLOBAL_INDEXES: usize = 20;
const MAX_LOCAL_INDEXES: usize = 5;

/// CreateTable's `GlobalSecondaryIndexes` and `LocalSecondaryIndexes`.
fn indexes(
    input: &Value,
    attributes: &[(String, KeyType)],
    table_key: &KeySchema,
    billing_mode: &str,
) -> Result<Vec<IndexSpec>> {
    let mut out: Vec<IndexSpec> = Vec::new();
    for (member, global, max) in [
        ("GlobalSecondaryIndexes", true, MAX_GLOBAL_INDEXES),
        ("LocalSecondaryIndexes", false, MAX_LOCAL_INDEXES),
    ] {
        let Some(list) = field(input, member) else {
            continue;
        };
        let list = list
            .as_array()
            .ok_or_else(|| validation(format!("{member} must be a list")))?;
        if list.is_empty() || list.len() > max {
            return Err(validation(format!(
                "One or more parameter values were invalid: {member} must have between 1 and {max} indexes"
            )));
        }
        for i in list {
            let name = string(i, "IndexName")?.unwrap_or_default().to_owned();
            nimbus_tables::schema::check_table_name(&name).map_err(|_| {
                validation(format!(
                    "1 validation error detected: Value '{name}' at 'indexName' failed to satisfy constraint: Member must satisfy regular expression pattern: [a-zA-Z0-9_.-]+ and have length between 3 and 255"
                ))
            })?;
            if out.iter().any(|o| o.name == name) {
                return Err(validation(format!(
                    "One or more parameter values were invalid: Duplicate index name: {name}"
                )));
            }
            let key = key_schema(i, attributes)?;
            if !global {
                if table_key.range.is_none() {
                    return Err(validation(
                        "One or more parameter values were invalid: Table KeySchema does not have a range key, which is required when specifying a LocalSecondaryIndex",
                    ));
                }
                if key.hash != table_key.hash || key.range.is_none() {
                    return Err(validation(format!(
                        "One or more parameter values were invalid: Index KeySchema does not have the same leading hash key as table KeySchema for index: {name}. index hash key: {}, table hash key: {}",
                        key.hash.name, table_key.hash.name
                    )));
                }
            }
            let p = field(i, "Projection").ok_or_else(|| {
                validation(format!(
                    "One or more parameter values were invalid: Projection is required for index: {name}"
                ))
            })?;
            let non_key = match field(p, "NonKeyAttributes") {
                None => None,
                Some(Value::Array(a)) => Some(
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect::<Vec<_>>(),
                ),
                Some(_) => return Err(validation("NonKeyAttributes must be a list")),
            };
            let projection = match (string(p, "ProjectionType")?.unwrap_or("ALL"), non_key) {
                ("ALL", None) => Projection::All,
                ("KEYS_ONLY", None) => Projection::KeysOnly,
                ("INCLUDE", Some(names)) if !names.is_empty() => Projection::Include(names),
                ("INCLUDE", _) => {
                    return Err(validation(
                        "One or more parameter values were invalid: NonKeyAttributes must be specified for ProjectionType INCLUDE",
                    ));
                }
                ("ALL" | "KEYS_ONLY", Some(_)) => {
                    return Err(validation(
                        "One or more parameter values were invalid: ProjectionType is ALL or KEYS_ONLY, but NonKeyAttributes are specified",
                    ));
                }
                (other, _) => {
                    return Err(validation(format!(
                        "1 validation error detected: Value '{other}' at 'projection.projectionType' failed to satisfy constraint: Member must satisfy enum value set: [ALL, INCLUDE, KEYS_ONLY]"
                    )));
                }
            };
            let given = field(i, "ProvisionedThroughput");
            let throughput = match (global, billing_mode, given) {
                (false, _, _) | (true, "PAY_PER_REQUEST", None) => None,
                (true, "PAY_PER_REQUEST", Some(_)) => {
                    return Err(validation(format!(
                        "One or more parameter values were invalid: ProvisionedThroughput should not be specified for index: {name} when BillingMode is PAY_PER_REQUEST"
                    )));
                }
                (true, _, None) => {
                    return Err(validation(format!(
                        "One or more parameter values were invalid: ProvisionedThroughput must be specified for index: {name}"
                    )));
                }
                (true, _, Some(t)) => Some(index_throughput(t)),
            };
            out.push(IndexSpec {
                name,
                id: 0,
                global,
                key,
                projection,
                throughput,
            });
        }
    }
    Ok(out)
}

pub(crate) async fn create(store: &TableStore, account: &str, input: &Value) -> Result<Value> {
    let name = table_name(input)?.to_owned();
    let attributes = attribute_definitions(input)?;
    let key = key_schema(input, &attributes)?;
    let (billing_mode, throughput) = throughput(input)?;
    let indexes = indexes(input, &attributes, &key, &billing_mode)?;
    let stream = stream_spec(input)?;
    let mut used: Vec<&str> = key.names().collect();
    for i in &indexes {
        used.extend(i.key.names());
    }
    used.sort_unstable();
    used.dedup();
    if attributes.len() != used.len() {
        return Err(validation(
            "One or more parameter values were invalid: Number of attributes in KeySchema does not exactly match number of attributes defined in AttributeDefinitions",
        ));
    }
    let mut record = store
        .create_table(
            account,
            TableSpec {
                name,
                key,
                attributes,
                billing_mode,
                throughput,
                indexes,
            },
        )
        .await?;
    if let Some(Some(view)) = stream {
        record = store
            .set_stream(account, &record.spec.name, Some(view))
            .await?;
    }
    Ok(json!({ "TableDescription": description(store, &record, "ACTIVE")? }))
}

/// A `StreamSpecification`: `None` when absent, `Some(None)` to turn the stream off.
fn stream_spec(input: &Value) -> Result<Option<Option<nimbus_tables::StreamView>>> {
    let Some(spec) = field(input, "StreamSpecification") else {
        return Ok(None);
    };
    let enabled = spec
        .get("StreamEnabled")
        .and_then(Value::as_bool)
        .ok_or_else(|| {
            validation(
                "1 validation error detected: Value null at 'streamSpecification.streamEnabled' failed to satisfy constraint: Member must not be null",
            )
        })?;
    let view = string(spec, "StreamViewType")?;
    match (enabled, view) {
        (false, _) => Ok(Some(None)),
        (true, None) => Err(validation(
            "One or more parameter values were invalid: StreamViewType is required when StreamEnabled is true",
        )),
        (true, Some(v)) => nimbus_tables::StreamView::parse(v)
            .map(|v| Some(Some(v)))
            .ok_or_else(|| {
                validation(format!(
                    "1 validation error detected: Value '{v}' at 'streamSpecification.streamViewType' failed to satisfy constraint: Member must satisfy enum value set: [NEW_IMAGE, OLD_IMAGE, NEW_AND_OLD_IMAGES, KEYS_ONLY]"
                ))
            }),
    }
}

pub(crate) fn describe(store: &TableStore, account: &str, input: &Value) -> Result<Value> {
    let name = table_name(input)?;
    let record = store.table(account, name).map_err(|_| not_found(name))?;
    Ok(json!({ "Table": description(store, &record, "ACTIVE")? }))
}

pub(crate) fn not_found(name: &str) -> DynamoError {
    DynamoError::from(nimbus_tables::Error::ResourceNotFound(format!(
        "Requested resource not found: Table: {name} not found"
    )))
}

pub(crate) fn list(store: &TableStore, account: &str, input: &Value) -> Result<Value> {
    let limit = match field(input, "Limit") {
        None => 100,
        Some(v) => match v.as_u64() {
            Some(n @ 1..=100) => n as usize,
            _ => {
                return Err(validation(format!(
                    "1 validation error detected: Value '{v}' at 'limit' failed to satisfy constraint: Member must have value less than or equal to 100"
                )));
            }
        },
    };
    let after = string(input, "ExclusiveStartTableName")?;
    let (names, more) = store.list_tables(account, after, limit)?;
    let mut out = json!({ "TableNames": names });
    if more && let Some(last) = names.last() {
        out["LastEvaluatedTableName"] = json!(last);
    }
    Ok(out)
}

pub(crate) async fn delete(store: &TableStore, account: &str, input: &Value) -> Result<Value> {
    let name = table_name(input)?;
    let record = store.table(account, name).map_err(|_| not_found(name))?;
    let shown = description(store, &record, "DELETING")?;
    store.delete_table(account, name).await?;
    Ok(json!({ "TableDescription": shown }))
}

pub(crate) async fn update_ttl(store: &TableStore, account: &str, input: &Value) -> Result<Value> {
    let name = table_name(input)?;
    store.table(account, name).map_err(|_| not_found(name))?;
    let spec = field(input, "TimeToLiveSpecification").ok_or_else(|| {
        validation(
            "1 validation error detected: Value null at 'timeToLiveSpecification' failed to satisfy constraint: Member must not be null",
        )
    })?;
    let enabled = spec
        .get("Enabled")
        .and_then(Value::as_bool)
        .ok_or_else(|| {
            validation(
                "1 validation error detected: Value null at 'timeToLiveSpecification.enabled' failed to satisfy constraint: Member must not be null",
            )
        })?;
    let attribute = string(spec, "AttributeName")?.unwrap_or_default();
    if attribute.is_empty() || attribute.len() > 255 {
        return Err(validation(
            "1 validation error detected: Value at 'timeToLiveSpecification.attributeName' failed to satisfy constraint: Member must have length between 1 and 255",
        ));
    }
    store
        .set_ttl(account, name, enabled.then(|| attribute.to_owned()))
        .await?;
    Ok(json!({ "TimeToLiveSpecification": { "Enabled": enabled, "AttributeName": attribute } }))
}

pub(crate) fn describe_ttl(store: &TableStore, account: &str, input: &Value) -> Result<Value> {
    let name = table_name(input)?;
    let record = store.table(account, name).map_err(|_| not_found(name))?;
    Ok(json!({ "TimeToLiveDescription": match &record.ttl {
        Some(a) => json!({ "TimeToLiveStatus": "ENABLED", "AttributeName": a }),
        None => json!({ "TimeToLiveStatus": "DISABLED" }),
    }}))
}

pub(crate) async fn update(store: &TableStore, account: &str, input: &Value) -> Result<Value> {
    let name = table_name(input)?;
    let record = store.table(account, name).map_err(|_| not_found(name))?;
    let stream = stream_spec(input)?;
    let mut spec = record.spec.clone();
    // New attribute definitions add to the table's (for a new index's keys).
    if field(input, "AttributeDefinitions").is_some() {
        for (n, t) in attribute_definitions(input)? {
            match spec.attributes.iter().find(|(name, _)| *name == n) {
                Some((_, have)) if *have != t => {
                    return Err(validation(format!(
                        "One or more parameter values were invalid: Attribute {n} is already defined with type {}",
                        have.name()
                    )));
                }
                Some(_) => {}
                None => spec.attributes.push((n, t)),
            }
        }
    }
    if field(input, "BillingMode").is_some() || field(input, "ProvisionedThroughput").is_some() {
        let mut billing = json!({
            "BillingMode": string(input, "BillingMode")?.unwrap_or(&spec.billing_mode),
        });
        if let Some(t) = field(input, "ProvisionedThroughput") {
            billing["ProvisionedThroughput"] = t.clone();
        } else if billing["BillingMode"] == "PROVISIONED"
            && let Some(t) = spec.throughput
        {
            billing["ProvisionedThroughput"] =
                json!({"ReadCapacityUnits": t.read, "WriteCapacityUnits": t.write});
        }
        let (mode, throughput) = throughput(&billing)?;
        spec.billing_mode = mode;
        spec.throughput = throughput;
    }
    let updates = match field(input, "GlobalSecondaryIndexUpdates") {
        None => Vec::new(),
        Some(Value::Array(u)) => u.clone(),
        Some(_) => return Err(validation("GlobalSecondaryIndexUpdates must be a list")),
    };
    let online = updates
        .iter()
        .filter(|u| field(u, "Create").is_some() || field(u, "Delete").is_some())
        .count();
    if online > 1 {
        return Err(DynamoError::from(nimbus_tables::Error::LimitExceeded(
            "Subscriber limit exceeded: Only 1 online index can be created or deleted simultaneously per table".into(),
        )));
    }
    for u in &updates {
        if let Some(create) = field(u, "Create") {
            let parsed = indexes(
                &json!({ "GlobalSecondaryIndexes": [create] }),
                &spec.attributes,
                &spec.key,
                &spec.billing_mode,
            )?;
            for index in parsed {
                if spec.index(&index.name).is_some() {
                    return Err(validation(format!(
                        "One or more parameter values were invalid: Index {} already exists",
                        index.name
                    )));
                }
                if spec.indexes.iter().filter(|i| i.global).count() >= MAX_GLOBAL_INDEXES {
                    return Err(DynamoError::from(nimbus_tables::Error::LimitExceeded(
                        format!(
                            "Subscriber limit exceeded: at most {MAX_GLOBAL_INDEXES} global secondary indexes per table"
                        ),
                    )));
                }
                spec.indexes.push(index);
            }
        } else if let Some(delete) = field(u, "Delete") {
            let index = string(delete, "IndexName")?.unwrap_or_default();
            let before = spec.indexes.len();
            spec.indexes.retain(|i| !(i.global && i.name == index));
            if spec.indexes.len() == before {
                return Err(DynamoError::from(nimbus_tables::Error::ResourceNotFound(
                    format!("Requested resource not found: Index: {index} not found"),
                )));
            }
        } else if let Some(update) = field(u, "Update") {
            let index = string(update, "IndexName")?.unwrap_or_default();
            let target = spec
                .indexes
                .iter_mut()
                .find(|i| i.global && i.name == index)
                .ok_or_else(|| {
                    DynamoError::from(nimbus_tables::Error::ResourceNotFound(format!(
                        "Requested resource not found: Index: {index} not found"
                    )))
                })?;
            if let Some(t) = field(update, "ProvisionedThroughput") {
                target.throughput = Some(index_throughput(t));
            }
        } else {
            return Err(validation(
                "One or more parameter values were invalid: an index update holds Create, Update or Delete",
            ));
        }
    }
    // Attribute definitions that no key uses any more go, as DynamoDB keeps them.
    let mut used: Vec<String> = spec.key.names().map(str::to_owned).collect();
    for i in &spec.indexes {
        used.extend(i.key.names().map(str::to_owned));
    }
    spec.attributes.retain(|(n, _)| used.contains(n));
    let mut record = store
        .alter_table(
            account,
            name,
            Box::new(move |s: &mut TableSpec| {
                *s = spec;
                Ok(())
            }),
        )
        .await?;
    if let Some(view) = stream {
        record = store.set_stream(account, name, view).await?;
    }
    Ok(json!({ "TableDescription": description(store, &record, "ACTIVE")? }))
}
