//! Aliases: CreateAlias, GetAlias, UpdateAlias, DeleteAlias and ListAliases. Invoking
//! `name:alias` (or with `Qualifier=alias`) runs the version the alias points to, or one of
//! its two versions by weight when it has a routing configuration.

use std::collections::BTreeMap;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use nimbus_control::AliasChange;
use nimbus_types::alias::Alias;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::{FunctionPath, Shared, parse_json, read_body};

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct AliasInput {
    name: Option<String>,
    function_version: Option<String>,
    description: Option<String>,
    routing_config: Option<RoutingInput>,
    revision_id: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct RoutingInput {
    additional_version_weights: Option<BTreeMap<String, f64>>,
}

impl AliasInput {
    fn change(self) -> AliasChange {
        AliasChange {
            function_version: self.function_version,
            description: self.description,
            // A RoutingConfig without weights (or with none) clears the split.
            additional_weights: self
                .routing_config
                .map(|r| r.additional_version_weights.unwrap_or_default()),
            revision_id: self.revision_id,
        }
    }
}

/// The function key of an alias request's path, which must name the function unqualified.
fn function_key(name: &FunctionPath) -> Result<String, ApiError> {
    let (key, reference) = name.key()?;
    if reference.qualifier.is_some() {
        return Err(ApiError::invalid_parameter(
            "An alias operation names the function without a qualifier",
        ));
    }
    Ok(key)
}

/// Lambda's AliasConfiguration.
fn alias_json(f: &Shared, key: &str, name: &str, alias: &Alias) -> Value {
    let mut out = json!({
        "AliasArn": format!("{}:{name}", f.control.arn(key)),
        "Name": name,
        "FunctionVersion": alias.function_version,
        "Description": alias.description,
        "RevisionId": alias.revision_id,
    });
    if !alias.additional_weights.is_empty() {
        out["RoutingConfig"] = json!({ "AdditionalVersionWeights": alias.additional_weights });
    }
    out
}

fn alias_name(params: &std::collections::HashMap<String, String>) -> &str {
    params.get("alias").map(String::as_str).unwrap_or_default()
}

async fn input_of(
    headers: &HeaderMap,
    body: Body,
    operation: &str,
) -> Result<AliasInput, ApiError> {
    let body = read_body(headers, body, 1 << 16, operation).await?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(AliasInput::default());
    }
    parse_json(&body)
}

pub(crate) async fn create(
    State(f): State<Shared>,
    name: FunctionPath,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let key = function_key(&name)?;
    let mut input = input_of(&headers, body, "CreateAlias").await?;
    let Some(alias_name) = input.name.take() else {
        return Err(nimbus_types::InvalidParameter::constraint(
            "name",
            None,
            "Member must not be null",
        )
        .into());
    };
    let (_, alias) = f
        .control
        .create_alias(&key, &alias_name, input.change())
        .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(alias_json(&f, &key, &alias_name, &alias)),
    )
        .into_response())
}

pub(crate) async fn get(
    State(f): State<Shared>,
    name: FunctionPath,
    Path(params): Path<std::collections::HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let key = function_key(&name)?;
    let alias_name = alias_name(&params);
    let alias = f.control.alias(&key, alias_name)?;
    Ok(axum::Json(alias_json(&f, &key, alias_name, &alias)).into_response())
}

pub(crate) async fn update(
    State(f): State<Shared>,
    name: FunctionPath,
    Path(params): Path<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let key = function_key(&name)?;
    let alias_name = alias_name(&params);
    let input = input_of(&headers, body, "UpdateAlias").await?;
    let (_, alias) = f
        .control
        .update_alias(&key, alias_name, input.change())
        .await?;
    Ok(axum::Json(alias_json(&f, &key, alias_name, &alias)).into_response())
}

pub(crate) async fn delete(
    State(f): State<Shared>,
    name: FunctionPath,
    Path(params): Path<std::collections::HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let key = function_key(&name)?;
    f.control.delete_alias(&key, alias_name(&params)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Debug, Deserialize)]
pub(crate) struct AliasListQuery {
    #[serde(rename = "FunctionVersion")]
    function_version: Option<String>,
    #[serde(rename = "Marker")]
    marker: Option<String>,
    #[serde(rename = "MaxItems")]
    max_items: Option<String>,
}

pub(crate) async fn list(
    State(f): State<Shared>,
    name: FunctionPath,
    Query(q): Query<AliasListQuery>,
) -> Result<Response, ApiError> {
    let key = function_key(&name)?;
    let function = crate::resolve(&f, &name, None)?;
    let limit = crate::max_items(q.max_items.as_deref())?;
    if let Some(v) = &q.function_version {
        nimbus_types::alias::validate_alias_version(v)?;
    }
    let matching: Vec<(&String, &Alias)> = function
        .aliases
        .iter()
        .filter(|(_, a)| {
            q.function_version
                .as_ref()
                .is_none_or(|v| a.function_version == *v || a.additional_weights.contains_key(v))
        })
        .collect();
    // The marker is the name of the last alias of the previous page.
    let start = match q.marker.as_deref() {
        None => 0,
        Some(m) => matching
            .iter()
            .position(|(n, _)| n.as_str() == m)
            .map(|i| i + 1)
            .ok_or_else(|| ApiError::invalid_parameter(format!("invalid Marker {m:?}")))?,
    };
    let page: Vec<_> = matching.iter().skip(start).take(limit).collect();
    let aliases: Vec<Value> = page
        .iter()
        .map(|(n, a)| alias_json(&f, &key, n, a))
        .collect();
    let mut out = json!({ "Aliases": aliases });
    if start + page.len() < matching.len()
        && let Some((last, _)) = page.last()
    {
        out["NextMarker"] = Value::from(last.as_str());
    }
    Ok(axum::Json(out).into_response())
}
