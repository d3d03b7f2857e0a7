//! Published versions: PublishVersion and ListVersionsByFunction. A version is an immutable
//! copy of `$LATEST`'s code and configuration, numbered from 1 and never renumbered; invoking
//! with a `Qualifier` (or `name:N`) runs it.

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::error::ApiError;
use crate::wire::FunctionConfiguration;
use crate::{FunctionPath, ListQuery, Shared, parse_json, read_body, resolve};

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct PublishInput {
    code_sha256: Option<String>,
    description: Option<String>,
    revision_id: Option<String>,
}

pub(crate) async fn publish(
    State(f): State<Shared>,
    name: FunctionPath,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = read_body(&headers, body, 1 << 20, "PublishVersion").await?;
    let input: PublishInput = if body.iter().all(u8::is_ascii_whitespace) {
        PublishInput::default()
    } else {
        parse_json(&body)?
    };
    let latest = resolve(&f, &name, None)?;
    let (version, created) = f
        .control
        .publish_version(
            &latest.key(),
            input.code_sha256.as_deref(),
            input.description,
            input.revision_id.as_deref(),
        )
        .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let out = FunctionConfiguration::from_config(&version, f.control.region());
    Ok((status, axum::Json(out)).into_response())
}

pub(crate) async fn list(
    State(f): State<Shared>,
    name: FunctionPath,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let latest = resolve(&f, &name, None)?;
    let limit = crate::max_items(q.max_items.as_deref())?;
    let mut all = vec![latest.clone()];
    all.extend(f.control.versions_of(&latest.key()));
    // The marker is the last version of the previous page.
    let start = match q.marker.as_deref() {
        None => 0,
        Some(m) => all
            .iter()
            .position(|v| v.version == m)
            .map(|i| i + 1)
            .ok_or_else(|| ApiError::invalid_parameter(format!("invalid Marker {m:?}")))?,
    };
    let page: Vec<_> = all.iter().skip(start).take(limit).collect();
    let next = (start + page.len() < all.len())
        .then(|| page.last().map(|v| v.version.clone()))
        .flatten();
    let versions: Vec<FunctionConfiguration> = page
        .iter()
        .map(|v| FunctionConfiguration::from_config(v, f.control.region()))
        .collect();
    let mut out = serde_json::json!({ "Versions": versions });
    if let Some(next) = next {
        out["NextMarker"] = serde_json::Value::from(next);
    }
    Ok(axum::Json(out).into_response())
}
