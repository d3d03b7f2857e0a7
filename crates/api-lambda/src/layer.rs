//! Layers: PublishLayerVersion, GetLayerVersion (and by ARN), ListLayers, ListLayerVersions,
//! DeleteLayerVersion, AddLayerVersionPermission, RemoveLayerVersionPermission,
//! GetLayerVersionPolicy, under `/2018-10-31/layers`. A layer in a path is its name (the
//! caller's) or its ARN (another account's, for reading a version shared with the caller).

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use nimbus_identity::Caller;
use nimbus_types::layer::{LayerStatement, LayerVersion};
use serde::Deserialize;
use serde_json::{Value, json};

use nimbus_aws_wire::ErrorEnvelope as _;

use crate::error::ApiError;
use crate::{Shared, parse_json, read_body};

pub(crate) const LAYERS: &str = "/2018-10-31/layers";

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct ContentInput {
    zip_file: Option<String>,
    #[serde(rename = "S3Bucket")]
    s3_bucket: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct PublishInput {
    description: Option<String>,
    content: Option<ContentInput>,
    compatible_runtimes: Option<Vec<String>>,
    compatible_architectures: Option<Vec<String>>,
    license_info: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct PermissionInput {
    statement_id: Option<String>,
    action: Option<String>,
    principal: Option<String>,
    organization_id: Option<String>,
}

/// `(owner account, name)` of the layer a request's path names.
fn path_layer(
    caller: &Caller,
    params: &HashMap<String, String>,
) -> Result<(String, String), ApiError> {
    layer_of(
        caller,
        params.get("name").map(String::as_str).unwrap_or_default(),
    )
}

/// The layer version a request's path names, if the caller may see it.
fn path_version(
    f: &Shared,
    caller: &Caller,
    params: &HashMap<String, String>,
) -> Result<std::sync::Arc<LayerVersion>, ApiError> {
    let (owner, name) = path_layer(caller, params)?;
    Ok(f.control
        .layer_version(&caller.account, &owner, &name, version_of(params)?)?)
}

/// Refuses a change to another account's layer.
fn own(caller: &Caller, owner: &str) -> Result<(), ApiError> {
    if owner == caller.account {
        Ok(())
    } else {
        Err(ApiError::access_denied(
            "Only the account that owns a layer may change or delete its versions".into(),
        ))
    }
}

/// Whether another account's layer version (`resource`, its canonical ARN) is one whose
/// policy lets `caller` use it, and the caller's own policies allow reading it: how a shared
/// version is read by its ARN.
pub(crate) fn shared_with(f: &Shared, caller: &Caller, resource: &str) -> bool {
    let Ok((owner, name, version)) = nimbus_types::layer::parse_layer_version_arn(resource) else {
        return false;
    };
    owner != caller.account
        && f.control
            .layer_version(&caller.account, &owner, &name, version)
            .is_ok()
        && caller.authorize_with_resource_policy("lambda:GetLayerVersion", resource, true)
}

/// Checks that `caller` may use each layer it names for a function: its own policies must
/// allow `lambda:GetLayerVersion` on the version, and another account's version must be
/// shared with it.
pub(crate) fn check_use(f: &Shared, caller: &Caller, arns: &[String]) -> Result<(), ApiError> {
    for arn in arns {
        let Ok((owner, name, version)) = nimbus_types::layer::parse_layer_version_arn(arn) else {
            continue; // the control plane refuses it with Lambda's message
        };
        let canonical = format!(
            "arn:aws:lambda:{}:{owner}:layer:{name}:{version}",
            f.control.region()
        );
        let allowed = if owner == caller.account {
            caller
                .authorize("lambda:GetLayerVersion", &canonical)
                .is_ok()
        } else {
            shared_with(f, caller, &canonical)
        };
        if !allowed {
            return Err(ApiError::access_denied(format!(
                "User: {} is not authorized to perform: lambda:GetLayerVersion on resource: {canonical}",
                caller.arn()
            )));
        }
    }
    Ok(())
}

/// `(owner account, name)` of a layer named in a path by name or ARN.
pub(crate) fn layer_of(caller: &Caller, raw: &str) -> Result<(String, String), ApiError> {
    if raw.starts_with("arn:") {
        let parts: Vec<&str> = raw.split(':').collect();
        return match parts.as_slice() {
            ["arn", _, "lambda", _, account, "layer", name]
                if account.len() == 12 && account.chars().all(|c| c.is_ascii_digit()) =>
            {
                nimbus_types::layer::validate_layer_name(name)?;
                Ok(((*account).to_owned(), (*name).to_owned()))
            }
            _ => Err(ApiError::invalid_parameter(format!(
                "{raw} is not a layer ARN"
            ))),
        };
    }
    nimbus_types::layer::validate_layer_name(raw)?;
    Ok((caller.account.clone(), raw.to_owned()))
}

fn version_of(params: &HashMap<String, String>) -> Result<u64, ApiError> {
    params
        .get("version")
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|v| *v > 0)
        .ok_or_else(|| ApiError::invalid_parameter("The layer version must be a number from 1"))
}

/// Lambda's GetLayerVersionResponse (and PublishLayerVersion's).
fn version_json(f: &Shared, l: &LayerVersion) -> Value {
    let region = f.control.region();
    let mut out = json!({
        "LayerArn": l.layer_arn(region),
        "LayerVersionArn": l.version_arn(region),
        "Version": l.version,
        "Description": l.description,
        "CreatedDate": nimbus_types::time::lambda_timestamp(l.created_ms),
        "CompatibleRuntimes": l.compatible_runtimes,
        "CompatibleArchitectures": l.compatible_architectures,
        "Content": {
            "Location": format!("{LAYERS}/{}/versions/{}/content", l.layer_arn(region), l.version),
            "CodeSha256": crate::wire::sha256_base64(&l.code.sha256),
            "CodeSize": l.code.size,
        },
    });
    if let Some(license) = &l.license_info {
        out["LicenseInfo"] = json!(license);
    }
    out
}

/// The list entry of a version (`LayerVersionsListItem`).
fn item_json(f: &Shared, l: &LayerVersion) -> Value {
    let mut v = version_json(f, l);
    if let Some(o) = v.as_object_mut() {
        o.remove("Content");
        o.remove("LayerArn");
    }
    v
}

pub(crate) async fn publish(
    State(f): State<Shared>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(params): Path<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let (owner, name) = path_layer(&caller, &params)?;
    if owner != caller.account {
        return Err(ApiError::invalid_parameter(
            "A layer version is published under the caller's own account",
        ));
    }
    let body = read_body(
        &headers,
        body,
        nimbus_types::limits::MAX_CODE_REQUEST_BYTES,
        "PublishLayerVersion",
    )
    .await?;
    let input: PublishInput = parse_json(&body)?;
    let content = input.content.unwrap_or_default();
    if content.s3_bucket.is_some() {
        return Err(ApiError::invalid_parameter(
            "Content from S3 is not supported; give Content.ZipFile",
        ));
    }
    let zip = crate::wire::decode_zip("Content.ZipFile", content.zip_file.as_deref())?;
    let layer = f
        .control
        .publish_layer_version(
            &caller.account,
            nimbus_control::NewLayerVersion {
                name,
                description: input.description.unwrap_or_default(),
                compatible_runtimes: input.compatible_runtimes.unwrap_or_default(),
                compatible_architectures: input.compatible_architectures.unwrap_or_default(),
                license_info: input.license_info,
                zip,
            },
        )
        .await?;
    Ok((StatusCode::CREATED, axum::Json(version_json(&f, &layer))).into_response())
}

pub(crate) async fn get(
    State(f): State<Shared>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(params): Path<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let layer = path_version(&f, &caller, &params)?;
    Ok(axum::Json(version_json(&f, &layer)).into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct ListQuery {
    #[serde(rename = "CompatibleRuntime")]
    runtime: Option<String>,
    #[serde(rename = "CompatibleArchitecture")]
    architecture: Option<String>,
    #[serde(rename = "Marker")]
    marker: Option<String>,
    #[serde(rename = "MaxItems")]
    max_items: Option<usize>,
    find: Option<String>,
    #[serde(rename = "Arn")]
    arn: Option<String>,
}

/// One page of `items` after `marker` (an item's key), at most `max` (1 to 50, 50 by default).
fn page(
    items: Vec<(String, Value)>,
    marker: Option<&str>,
    max: Option<usize>,
) -> Result<(Vec<Value>, Option<String>), ApiError> {
    let max = match max {
        None => 50,
        Some(n) if (1..=50).contains(&n) => n,
        Some(_) => {
            return Err(ApiError::invalid_parameter(
                "MaxItems must be between 1 and 50",
            ));
        }
    };
    let start = match marker {
        Some(m) => items
            .iter()
            .position(|(k, _)| k == m)
            .map_or(items.len(), |i| i + 1),
        None => 0,
    };
    let rest = &items[start.min(items.len())..];
    let next = (rest.len() > max).then(|| rest[max - 1].0.clone());
    Ok((
        rest.iter().take(max).map(|(_, v)| v.clone()).collect(),
        next,
    ))
}

/// `ListLayers`, or `GetLayerVersionByArn` (`?find=LayerVersion&Arn=…`).
pub(crate) async fn list(
    State(f): State<Shared>,
    axum::Extension(caller): axum::Extension<Caller>,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    if q.find.as_deref() == Some("LayerVersion") {
        let arn = q
            .arn
            .ok_or_else(|| ApiError::invalid_parameter("Arn is required"))?;
        let (owner, name, version) = nimbus_types::layer::parse_layer_version_arn(&arn)?;
        // Authorized as GetLayerVersion on the version, not as the listing it is routed with.
        check_use(&f, &caller, std::slice::from_ref(&arn))?;
        let layer = f
            .control
            .layer_version(&caller.account, &owner, &name, version)?;
        return Ok(axum::Json(version_json(&f, &layer)).into_response());
    }
    let layers = f.control.layers(
        &caller.account,
        q.runtime.as_deref(),
        q.architecture.as_deref(),
    )?;
    let items = layers
        .iter()
        .map(|l| {
            (
                l.name.clone(),
                json!({
                    "LayerName": l.name,
                    "LayerArn": l.layer_arn(f.control.region()),
                    "LatestMatchingVersion": item_json(&f, l),
                }),
            )
        })
        .collect();
    let (items, next) = page(items, q.marker.as_deref(), q.max_items)?;
    Ok(axum::Json(json!({"Layers": items, "NextMarker": next})).into_response())
}

pub(crate) async fn list_versions(
    State(f): State<Shared>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(params): Path<HashMap<String, String>>,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let (owner, name) = path_layer(&caller, &params)?;
    let versions = f.control.layer_versions(
        &owner,
        &name,
        q.runtime.as_deref(),
        q.architecture.as_deref(),
    )?;
    let items = versions
        .iter()
        .filter(|l| l.usable_by(&caller.account))
        .map(|l| (l.version.to_string(), item_json(&f, l)))
        .collect();
    let (items, next) = page(items, q.marker.as_deref(), q.max_items)?;
    Ok(axum::Json(json!({"LayerVersions": items, "NextMarker": next})).into_response())
}

pub(crate) async fn delete(
    State(f): State<Shared>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(params): Path<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let (owner, name) = path_layer(&caller, &params)?;
    own(&caller, &owner)?;
    f.control
        .delete_layer_version(&owner, &name, version_of(&params)?)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn policy_json(f: &Shared, l: &LayerVersion) -> Value {
    let arn = l.version_arn(f.control.region());
    let statements: Vec<Value> = l.policy.iter().map(|s| statement_json(&arn, s)).collect();
    json!({"Version": "2012-10-17", "Id": "default", "Statement": statements})
}

fn statement_json(arn: &str, s: &LayerStatement) -> Value {
    let principal = if s.principal == "*" {
        json!("*")
    } else {
        json!({"AWS": format!("arn:aws:iam::{}:root", s.principal)})
    };
    let mut out = json!({"Sid": s.sid, "Effect": "Allow", "Principal": principal, "Action": "lambda:GetLayerVersion", "Resource": arn});
    if let Some(org) = &s.organization_id {
        out["Condition"] = json!({"StringEquals": {"aws:PrincipalOrgID": org}});
    }
    out
}

pub(crate) async fn add_permission(
    State(f): State<Shared>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(params): Path<HashMap<String, String>>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let (owner, name) = path_layer(&caller, &params)?;
    own(&caller, &owner)?;
    let body = read_body(&headers, body, 1 << 16, "AddLayerVersionPermission").await?;
    let input: PermissionInput = parse_json(&body)?;
    if input.action.as_deref() != Some("lambda:GetLayerVersion") {
        return Err(ApiError::invalid_parameter(
            "Action must be lambda:GetLayerVersion",
        ));
    }
    if input.organization_id.is_some() {
        return Err(ApiError::invalid_parameter(
            "OrganizationId is not supported: this node has no organizations",
        ));
    }
    let principal = input
        .principal
        .ok_or_else(|| ApiError::invalid_parameter("Principal is required"))?;
    // An account's root ARN names the account.
    let principal = principal
        .strip_prefix("arn:aws:iam::")
        .and_then(|p| p.strip_suffix(":root"))
        .map(str::to_owned)
        .unwrap_or(principal);
    let statement = LayerStatement {
        sid: input
            .statement_id
            .ok_or_else(|| ApiError::invalid_parameter("StatementId is required"))?,
        principal,
        organization_id: None,
    };
    let version = version_of(&params)?;
    let layer = f
        .control
        .add_layer_permission(
            &owner,
            &name,
            version,
            statement.clone(),
            q.get("RevisionId").map(String::as_str),
        )
        .await?;
    let arn = layer.version_arn(f.control.region());
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({"Statement": statement_json(&arn, &statement).to_string(), "RevisionId": layer.revision_id})),
    )
        .into_response())
}

pub(crate) async fn remove_permission(
    State(f): State<Shared>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(params): Path<HashMap<String, String>>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let (owner, name) = path_layer(&caller, &params)?;
    own(&caller, &owner)?;
    let sid = params.get("sid").cloned().unwrap_or_default();
    f.control
        .remove_layer_permission(
            &owner,
            &name,
            version_of(&params)?,
            &sid,
            q.get("RevisionId").map(String::as_str),
        )
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub(crate) async fn get_policy(
    State(f): State<Shared>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(params): Path<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let layer = path_version(&f, &caller, &params)?;
    if layer.policy.is_empty() {
        return Err(ApiError::not_found(
            "No policy is associated with the given resource.",
        ));
    }
    Ok(axum::Json(
        json!({"Policy": policy_json(&f, &layer).to_string(), "RevisionId": layer.revision_id}),
    )
    .into_response())
}

/// The package of a version, where `Content.Location` points.
pub(crate) async fn content(
    State(f): State<Shared>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(params): Path<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let layer = path_version(&f, &caller, &params)?;
    let zip = f.control.read_code(&layer.code).await?;
    Ok(([("content-type", "application/zip")], zip).into_response())
}
