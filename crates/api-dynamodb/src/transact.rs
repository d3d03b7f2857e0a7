//! TransactWriteItems and TransactGetItems: up to 100 actions on distinct items, all or none.

use std::collections::HashSet;
use std::hash::{Hash, Hasher};

use nimbus_tables::value::item_json;
use nimbus_tables::{Action, RequestToken, TableStore};
use serde_json::{Value, json};

use crate::items::{WriteKind, prepare};
use crate::{Result, field, string, validation};

/// The most actions in one transaction.
const MAX_ACTIONS: usize = 100;

fn actions(input: &Value) -> Result<&Vec<Value>> {
    let Some(Value::Array(actions)) = field(input, "TransactItems") else {
        return Err(validation(
            "1 validation error detected: Value null at 'transactItems' failed to satisfy constraint: Member must not be null",
        ));
    };
    if actions.is_empty() || actions.len() > MAX_ACTIONS {
        return Err(validation(format!(
            "1 validation error detected: Value at 'transactItems' failed to satisfy constraint: Member must have length less than or equal to {MAX_ACTIONS} and greater than or equal to 1"
        )));
    }
    Ok(actions)
}

/// The one member of a transaction's action, and what it is.
fn action_of<'a>(action: &'a Value, allowed: &[&str]) -> Result<(&'a str, &'a Value)> {
    let members: Vec<(&String, &Value)> = action
        .as_object()
        .map(|m| m.iter().filter(|(_, v)| !v.is_null()).collect())
        .unwrap_or_default();
    match members.as_slice() {
        [(kind, body)] if allowed.contains(&kind.as_str()) => Ok((kind.as_str(), body)),
        _ => Err(validation(format!(
            "TransactItems can only contain one of {}",
            allowed.join(", ")
        ))),
    }
}

/// A fingerprint of a request, to tell a retry from another request with the same token.
fn fingerprint(input: &Value) -> u64 {
    let mut copy = input.clone();
    if let Some(m) = copy.as_object_mut() {
        m.remove("ClientRequestToken");
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    copy.to_string().hash(&mut h);
    h.finish()
}

pub(crate) async fn write(store: &TableStore, account: &str, input: &Value) -> Result<Value> {
    let list = actions(input)?;
    let token = string(input, "ClientRequestToken")?;
    if let Some(t) = token
        && (t.is_empty() || t.len() > 36)
    {
        return Err(validation(
            "1 validation error detected: Value at 'clientRequestToken' failed to satisfy constraint: Member must have length less than or equal to 36",
        ));
    }
    let token = token.map(|t| RequestToken {
        account: account.to_owned(),
        token: t.to_owned(),
        fingerprint: fingerprint(input),
    });
    let mut prepared = Vec::with_capacity(list.len());
    let mut seen = HashSet::new();
    for a in list {
        let (kind, body) = action_of(a, &["ConditionCheck", "Put", "Delete", "Update"])?;
        let kind = match kind {
            "Put" => WriteKind::Put,
            "Delete" => WriteKind::Delete,
            "Update" => WriteKind::Update,
            _ => WriteKind::Check,
        };
        let p = prepare(store, account, body, kind)?;
        if !seen.insert((p.table.id, p.key.clone())) {
            return Err(validation(
                "Transaction request cannot include multiple operations on one item",
            ));
        }
        prepared.push(Action {
            table: p.table,
            key: p.key,
            change: p.change,
            check_only: kind == WriteKind::Check,
        });
    }
    store.transact(prepared, token).await?;
    Ok(json!({}))
}

pub(crate) fn get(store: &TableStore, account: &str, input: &Value) -> Result<Value> {
    let list = actions(input)?;
    let mut keys = Vec::with_capacity(list.len());
    let mut projections = Vec::with_capacity(list.len());
    for a in list {
        let (_, body) = action_of(a, &["Get"])?;
        let (table, key, paths) = crate::items::get_request(store, account, body)?;
        keys.push((table, key));
        projections.push(paths);
    }
    let found = store.get_many(&keys)?;
    let responses: Vec<Value> = found
        .into_iter()
        .zip(projections)
        .map(|(item, paths)| match item {
            Some(i) => {
                let i = match &paths {
                    Some(p) => nimbus_tables::expr::project(&i, p),
                    None => i,
                };
                json!({ "Item": Value::Object(item_json(&i)) })
            }
            None => json!({}),
        })
        .collect();
    Ok(json!({ "Responses": responses }))
}
