//! DynamoDB Streams' JSON 1.0 protocol (`DynamoDBStreams_20120810.*`): ListStreams,
//! DescribeStream, GetShardIterator, GetRecords over the table store's stream records. Each
//! stream has one shard; an iterator is an opaque token naming the stream and the last
//! sequence number read, valid for 15 minutes.

use std::sync::Arc;

use base64::Engine as _;
use nimbus_tables::{StreamState, TableRecord, TableStore};
use serde_json::{Value, json};

use crate::{DynamoError, Result, field, string, validation};

/// How long a shard iterator stays valid.
const ITERATOR_TTL_MS: i64 = 15 * 60 * 1000;

fn not_found(what: &str) -> DynamoError {
    DynamoError::from(nimbus_tables::Error::ResourceNotFound(format!(
        "Requested resource not found: Stream: {what} not found"
    )))
}

/// The shard id of a stream's one shard.
fn shard_id(stream: &StreamState) -> String {
    format!("shardId-{:020}-{:08x}", stream.created_ms, stream.id)
}

fn sequence(n: u64) -> String {
    format!("{n:021}")
}

/// The table and stream a stream ARN names, among the caller's.
fn stream_of(
    store: &TableStore,
    account: &str,
    arn: &str,
) -> Result<(Arc<TableRecord>, StreamState)> {
    let prefix = format!("arn:aws:dynamodb:{}:{account}:table/", store.region());
    let rest = arn.strip_prefix(&prefix).ok_or_else(|| not_found(arn))?;
    let (table, label) = rest.split_once("/stream/").ok_or_else(|| not_found(arn))?;
    let record = store.table(account, table).map_err(|_| not_found(arn))?;
    let stream = record
        .streams
        .iter()
        .find(|s| s.label == label)
        .cloned()
        .ok_or_else(|| not_found(arn))?;
    Ok((record, stream))
}

fn stream_arn_member(input: &Value) -> Result<&str> {
    string(input, "StreamArn")?.ok_or_else(|| {
        validation(
            "1 validation error detected: Value null at 'streamArn' failed to satisfy constraint: Member must not be null",
        )
    })
}

pub(crate) fn list(store: &TableStore, account: &str, input: &Value) -> Result<Value> {
    let limit = field(input, "Limit").and_then(Value::as_u64).unwrap_or(100);
    if !(1..=100).contains(&limit) {
        return Err(validation(
            "1 validation error detected: Value at 'limit' failed to satisfy constraint: Member must have value between 1 and 100",
        ));
    }
    let only = string(input, "TableName")?;
    let after = string(input, "ExclusiveStartStreamArn")?;
    let mut all: Vec<(String, String, String)> = store
        .all_tables()?
        .iter()
        .filter(|t| t.account == account && only.is_none_or(|n| n == t.spec.name))
        .flat_map(|t| {
            t.streams
                .iter()
                .map(|s| (t.stream_arn(s), t.spec.name.clone(), s.label.clone()))
                .collect::<Vec<_>>()
        })
        .collect();
    all.sort();
    let start = after.map_or(0, |a| {
        all.iter().position(|s| s.0 == a).map_or(0, |i| i + 1)
    });
    let page: Vec<_> = all.iter().skip(start).take(limit as usize).collect();
    let mut out = json!({
        "Streams": page.iter().map(|(arn, table, label)| json!({
            "StreamArn": arn, "TableName": table, "StreamLabel": label,
        })).collect::<Vec<_>>(),
    });
    if start + page.len() < all.len()
        && let Some(last) = page.last()
    {
        out["LastEvaluatedStreamArn"] = json!(last.0);
    }
    Ok(out)
}

pub(crate) fn describe(store: &TableStore, account: &str, input: &Value) -> Result<Value> {
    let arn = stream_arn_member(input)?;
    let (table, stream) = stream_of(store, account, arn)?;
    let bounds = store.stream_bounds(stream.id)?;
    let mut range = json!({
        "StartingSequenceNumber": sequence(bounds.map_or(1, |b| b.0)),
    });
    if !stream.enabled {
        range["EndingSequenceNumber"] = json!(sequence(bounds.map_or(1, |b| b.1)));
    }
    let mut key_schema =
        vec![json!({"AttributeName": table.spec.key.hash.name, "KeyType": "HASH"})];
    if let Some(r) = &table.spec.key.range {
        key_schema.push(json!({"AttributeName": r.name, "KeyType": "RANGE"}));
    }
    Ok(json!({ "StreamDescription": {
        "StreamArn": arn,
        "StreamLabel": stream.label,
        "StreamStatus": if stream.enabled { "ENABLED" } else { "DISABLED" },
        "StreamViewType": stream.view.name(),
        "CreationRequestDateTime": stream.created_ms as f64 / 1000.0,
        "TableName": table.spec.name,
        "KeySchema": key_schema,
        "Shards": [{ "ShardId": shard_id(&stream), "SequenceNumberRange": range }],
    }}))
}

/// A shard iterator's contents.
fn iterator(account: &str, table: &str, stream: u64, after: u64) -> String {
    let token = json!({
        "a": account, "t": table, "s": stream, "p": after,
        "i": nimbus_types::time::now_ms(),
    });
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(token.to_string())
}

fn parse_sequence(s: Option<&str>) -> Result<u64> {
    s.and_then(|s| s.parse::<u64>().ok()).ok_or_else(|| {
        validation("1 validation error detected: Value at 'sequenceNumber' failed to satisfy constraint: Member must be a number")
    })
}

pub(crate) fn shard_iterator(store: &TableStore, account: &str, input: &Value) -> Result<Value> {
    let arn = stream_arn_member(input)?;
    let (table, stream) = stream_of(store, account, arn)?;
    let shard = string(input, "ShardId")?.unwrap_or_default();
    if shard != shard_id(&stream) {
        return Err(DynamoError::from(nimbus_tables::Error::ResourceNotFound(
            format!("Requested resource not found: Shard does not exist: {shard}"),
        )));
    }
    let bounds = store.stream_bounds(stream.id)?;
    let after = match string(input, "ShardIteratorType")? {
        Some("TRIM_HORIZON") => bounds.map_or(0, |b| b.0 - 1),
        Some("LATEST") => store.last_sequence()?,
        Some("AT_SEQUENCE_NUMBER") => {
            parse_sequence(string(input, "SequenceNumber")?)?.saturating_sub(1)
        }
        Some("AFTER_SEQUENCE_NUMBER") => parse_sequence(string(input, "SequenceNumber")?)?,
        other => {
            return Err(validation(format!(
                "1 validation error detected: Value '{}' at 'shardIteratorType' failed to satisfy constraint: Member must satisfy enum value set: [AFTER_SEQUENCE_NUMBER, LATEST, AT_SEQUENCE_NUMBER, TRIM_HORIZON]",
                other.unwrap_or("null")
            )));
        }
    };
    Ok(json!({ "ShardIterator": iterator(account, &table.spec.name, stream.id, after) }))
}

pub(crate) fn records(store: &TableStore, account: &str, input: &Value) -> Result<Value> {
    let bad = || validation("Invalid ShardIterator");
    let token = string(input, "ShardIterator")?.ok_or_else(bad)?;
    let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .ok_or_else(bad)?;
    let (Some(a), Some(t), Some(sid), Some(after), Some(issued)) = (
        decoded["a"].as_str(),
        decoded["t"].as_str(),
        decoded["s"].as_u64(),
        decoded["p"].as_u64(),
        decoded["i"].as_i64(),
    ) else {
        return Err(bad());
    };
    if a != account {
        return Err(bad());
    }
    if nimbus_types::time::now_ms() - issued > ITERATOR_TTL_MS {
        return Err(DynamoError::new(
            axum::http::StatusCode::BAD_REQUEST,
            "ExpiredIteratorException",
            "Iterator expired",
        ));
    }
    let limit = field(input, "Limit")
        .and_then(Value::as_u64)
        .unwrap_or(1000);
    if !(1..=1000).contains(&limit) {
        return Err(validation(
            "1 validation error detected: Value at 'limit' failed to satisfy constraint: Member must have value between 1 and 1000",
        ));
    }
    let table = store.table(account, t).map_err(|_| not_found(t))?;
    let stream = table
        .streams
        .iter()
        .find(|s| s.id == sid)
        .cloned()
        .ok_or_else(|| not_found(t))?;
    let got = store.stream_records(sid, after, limit as usize)?;
    let last = got.last().map_or(after, |(seq, _)| *seq);
    let records: Vec<Value> = got
        .into_iter()
        .map(|(_, mut r)| {
            if let Some(m) = r.as_object_mut() {
                m.remove("createdMs");
                m.insert("awsRegion".into(), json!(store.region()));
            }
            r
        })
        .collect();
    let mut out = json!({ "Records": records });
    // A disabled stream's shard is closed: once read to its end, no next iterator.
    let exhausted = store.stream_bounds(sid)?.is_none_or(|b| last >= b.1);
    if stream.enabled || !exhausted {
        out["NextShardIterator"] = json!(iterator(account, t, sid, last));
    }
    Ok(out)
}
