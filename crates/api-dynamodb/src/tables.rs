//! CreateTable, DescribeTable, ListTables, DeleteTable.

use nimbus_tables::{KeyAttr, KeySchema, KeyType, TableRecord, TableSpec, TableStore, Throughput};
use serde_json::{Value, json};

use crate::{DynamoError, Result, field, string, table_name, validation};

/// A table's description, as DescribeTable and the other table operations show it.
pub(crate) fn description(store: &TableStore, record: &TableRecord, status: &str) -> Result<Value> {
    let (count, bytes) = store.stats(record)?;
    let spec = &record.spec;
    let mut key_schema = vec![json!({"AttributeName": spec.key.hash.name, "KeyType": "HASH"})];
    if let Some(r) = &spec.key.range {
        key_schema.push(json!({"AttributeName": r.name, "KeyType": "RANGE"}));
    }
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
    if spec.billing_mode == "PAY_PER_REQUEST" {
        out["BillingModeSummary"] = json!({
            "BillingMode": "PAY_PER_REQUEST",
            "LastUpdateToPayPerRequestDateTime": record.created_ms as f64 / 1000.0,
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

pub(crate) async fn create(store: &TableStore, account: &str, input: &Value) -> Result<Value> {
    let name = table_name(input)?.to_owned();
    let attributes = attribute_definitions(input)?;
    let key = key_schema(input, &attributes)?;
    for index in ["GlobalSecondaryIndexes", "LocalSecondaryIndexes"] {
        if field(input, index).is_some_and(|v| v.as_array().is_none_or(|a| !a.is_empty())) {
            return Err(validation(format!(
                "One or more parameter values were invalid: {index} are not supported by this server yet"
            )));
        }
    }
    if field(input, "StreamSpecification")
        .and_then(|s| s.get("StreamEnabled"))
        .and_then(Value::as_bool)
        == Some(true)
    {
        return Err(validation(
            "One or more parameter values were invalid: streams are not supported by this server yet",
        ));
    }
    let used: Vec<&str> = key.names().collect();
    if attributes.len() != used.len() {
        return Err(validation(
            "One or more parameter values were invalid: Number of attributes in KeySchema does not exactly match number of attributes defined in AttributeDefinitions",
        ));
    }
    let (billing_mode, throughput) = throughput(input)?;
    let record = store
        .create_table(
            account,
            TableSpec {
                name,
                key,
                attributes,
                billing_mode,
                throughput,
            },
        )
        .await?;
    Ok(json!({ "TableDescription": description(store, &record, "ACTIVE")? }))
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
