//! Concurrency controls with Lambda's API: reserved concurrency per function
//! (Put/Get/DeleteFunctionConcurrency), provisioned concurrency per published version
//! (Put/Get/Delete/ListProvisionedConcurrencyConfig(s)) and GetAccountSettings.

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use nimbus_types::name::LATEST;
use nimbus_types::{FunctionConfig, InvalidParameter};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::{FunctionPath, Shared, parse_json, read_body, resolve};

/// Reads a non-negative integer field of a request body, with Lambda's validation messages.
fn count_field(body: &Value, field: &str, member: &str, min: i64) -> Result<u32, ApiError> {
    let value = body.get(field).unwrap_or(&Value::Null);
    if value.is_null() {
        return Err(InvalidParameter::constraint(member, None, "Member must not be null").into());
    }
    let n = value.as_i64().ok_or_else(|| {
        ApiError::invalid_parameter(format!("{field} must be an integer, got {value}"))
    })?;
    if n < min {
        return Err(InvalidParameter::constraint(
            member,
            Some(&n),
            format!("Member must have value greater than or equal to {min}"),
        )
        .into());
    }
    u32::try_from(n).map_err(|_| ApiError::invalid_parameter(format!("{field} is too large: {n}")))
}

/// The function a function-level setting applies to: unqualified.
fn unqualified(
    f: &Shared,
    name: &FunctionPath,
) -> Result<std::sync::Arc<FunctionConfig>, ApiError> {
    let function = resolve(f, name, None)?;
    if function.version != LATEST {
        return Err(ApiError::invalid_parameter(
            "This operation applies to the function, not to a version: omit the qualifier",
        ));
    }
    Ok(function)
}

pub(crate) async fn put_reserved(
    State(f): State<Shared>,
    name: FunctionPath,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = read_body(&headers, body, 1 << 16, "PutFunctionConcurrency").await?;
    let input: Value = parse_json(&body)?;
    let reserved = count_field(
        &input,
        "ReservedConcurrentExecutions",
        "reservedConcurrentExecutions",
        0,
    )?;
    let function = unqualified(&f, &name)?;
    f.control
        .set_reserved(&function.key(), Some(reserved))
        .await?;
    Ok(axum::Json(json!({ "ReservedConcurrentExecutions": reserved })).into_response())
}

pub(crate) async fn get_reserved(
    State(f): State<Shared>,
    name: FunctionPath,
) -> Result<Response, ApiError> {
    let function = unqualified(&f, &name)?;
    let out = match function.reserved_concurrency {
        Some(r) => json!({ "ReservedConcurrentExecutions": r }),
        None => json!({}),
    };
    Ok(axum::Json(out).into_response())
}

pub(crate) async fn delete_reserved(
    State(f): State<Shared>,
    name: FunctionPath,
) -> Result<Response, ApiError> {
    let function = unqualified(&f, &name)?;
    f.control.set_reserved(&function.key(), None).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Debug, Deserialize)]
pub(crate) struct ProvisionedQuery {
    #[serde(rename = "Qualifier")]
    qualifier: Option<String>,
    #[serde(rename = "List")]
    list: Option<String>,
}

/// The published version a provisioned-concurrency request names.
fn version_of(
    f: &Shared,
    name: &FunctionPath,
    qualifier: Option<&str>,
) -> Result<std::sync::Arc<FunctionConfig>, ApiError> {
    let Some(qualifier) = qualifier else {
        return Err(
            InvalidParameter::constraint("qualifier", None, "Member must not be null").into(),
        );
    };
    let function = resolve(f, name, Some(qualifier))?;
    if function.version == LATEST {
        return Err(ApiError::invalid_parameter(
            "Provisioned Concurrency Configs cannot be applied to unpublished function versions.",
        ));
    }
    Ok(function)
}

fn not_configured() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "ProvisionedConcurrencyConfigNotFoundException",
        "No Provisioned Concurrency Config found for this function",
    )
}

/// Lambda's shape of one provisioned-concurrency configuration.
fn provisioned_json(f: &Shared, version: &FunctionConfig, with_arn: bool) -> Option<Value> {
    let latest = f.control.function(&version.key())?;
    let request = latest.provisioned.get(&version.version)?;
    let status = f.manager.provisioned(&version.qualified_name());
    let (allocated, state, reason) = match &status {
        Some(s) => (s.allocated, s.status.as_str(), s.reason.clone()),
        None => (0, "IN_PROGRESS", None),
    };
    let mut out = json!({
        "RequestedProvisionedConcurrentExecutions": request.requested,
        "AvailableProvisionedConcurrentExecutions": allocated,
        "AllocatedProvisionedConcurrentExecutions": allocated,
        "Status": state,
        "LastModified": nimbus_types::time::lambda_timestamp(request.last_modified_ms),
    });
    if let Some(reason) = reason {
        out["StatusReason"] = Value::from(reason);
    }
    if with_arn {
        out["FunctionArn"] = Value::from(format!(
            "{}:{}",
            f.control.arn(&version.key()),
            version.version
        ));
    }
    Some(out)
}

pub(crate) async fn put_provisioned(
    State(f): State<Shared>,
    name: FunctionPath,
    Query(q): Query<ProvisionedQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = read_body(&headers, body, 1 << 16, "PutProvisionedConcurrencyConfig").await?;
    let input: Value = parse_json(&body)?;
    let requested = count_field(
        &input,
        "ProvisionedConcurrentExecutions",
        "provisionedConcurrentExecutions",
        1,
    )?;
    let version = version_of(&f, &name, q.qualifier.as_deref())?;
    let number: u32 = version
        .version
        .parse()
        .map_err(|_| ApiError::internal("version without a number"))?;
    f.control
        .set_provisioned(&version.key(), number, requested)
        .await?;
    let out = provisioned_json(&f, &version, false)
        .ok_or_else(|| ApiError::internal("provisioned configuration vanished"))?;
    Ok((StatusCode::ACCEPTED, axum::Json(out)).into_response())
}

pub(crate) async fn get_provisioned(
    State(f): State<Shared>,
    name: FunctionPath,
    Query(q): Query<ProvisionedQuery>,
) -> Result<Response, ApiError> {
    if q.list.as_deref() == Some("ALL") {
        let latest = unqualified(&f, &name)?;
        let configs: Vec<Value> = f
            .control
            .versions_of(&latest.key())
            .iter()
            .filter_map(|v| provisioned_json(&f, v, true))
            .collect();
        return Ok(axum::Json(json!({ "ProvisionedConcurrencyConfigs": configs })).into_response());
    }
    let version = version_of(&f, &name, q.qualifier.as_deref())?;
    let out = provisioned_json(&f, &version, false).ok_or_else(not_configured)?;
    Ok(axum::Json(out).into_response())
}

pub(crate) async fn delete_provisioned(
    State(f): State<Shared>,
    name: FunctionPath,
    Query(q): Query<ProvisionedQuery>,
) -> Result<Response, ApiError> {
    let version = version_of(&f, &name, q.qualifier.as_deref())?;
    let configured = f
        .control
        .function(&version.key())
        .is_some_and(|l| l.provisioned.contains_key(&version.version));
    if !configured {
        return Err(not_configured());
    }
    let number: u32 = version.version.parse().unwrap_or(0);
    f.control.set_provisioned(&version.key(), number, 0).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub(crate) async fn account_settings(
    State(f): State<Shared>,
    axum::extract::Extension(caller): axum::extract::Extension<nimbus_identity::Caller>,
) -> Result<Response, ApiError> {
    let account = f.manager.account();
    let functions = f.control.functions_of(&caller.account);
    let code_size: u64 = functions.iter().map(|f| f.code.size).sum();
    Ok(axum::Json(json!({
        "AccountLimit": {
            "TotalCodeSize": 80u64 << 30,
            "CodeSizeUnzipped": nimbus_types::limits::MAX_UNZIPPED_BYTES,
            "CodeSizeZipped": nimbus_types::limits::MAX_ZIP_BYTES,
            "ConcurrentExecutions": account.limit,
            "UnreservedConcurrentExecutions": account.unreserved,
        },
        "AccountUsage": {
            "TotalCodeSize": code_size,
            "FunctionCount": functions.len(),
        },
    }))
    .into_response())
}
