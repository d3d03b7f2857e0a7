//! Lambda's resource types through Lambda's own API.

use std::io::Write as _;

use axum::http::Method;
use base64::Engine as _;
use serde_json::{Map, Value, json};

use super::{Ctx, ProviderError, Result, made, number, pick, required, seg, tags, text};
use crate::intrinsic::Made;

pub const FUNCTION_PROPERTIES: &[&str] = &[
    "Code",
    "FunctionName",
    "Handler",
    "Runtime",
    "Role",
    "MemorySize",
    "Timeout",
    "Environment",
    "Description",
    "Layers",
    "Tags",
    "Architectures",
    "EphemeralStorage",
    "SnapStart",
    "ReservedConcurrentExecutions",
    "PackageType",
    "TracingConfig",
    "LoggingConfig",
];

pub const ESM_PROPERTIES: &[&str] = &[
    "EventSourceArn",
    "FunctionName",
    "BatchSize",
    "Enabled",
    "MaximumBatchingWindowInSeconds",
    "FunctionResponseTypes",
    "ScalingConfig",
    "StartingPosition",
    "StartingPositionTimestamp",
    "BisectBatchOnFunctionError",
    "MaximumRetryAttempts",
    "MaximumRecordAgeInSeconds",
    "DestinationConfig",
    "ParallelizationFactor",
    "FilterCriteria",
];

const FUNCTIONS: &str = "/2015-03-31/functions";

pub async fn create(ctx: &Ctx<'_>, kind: &str, name: &str, props: &Value) -> Result<Made> {
    match kind {
        "AWS::Lambda::Function" => create_function(ctx, name, props).await,
        "AWS::Lambda::Version" => {
            let function = required(props, "FunctionName")?;
            let body = Value::Object(pick(props, &["Description", "CodeSha256"]));
            let v = ctx
                .rest(
                    Method::POST,
                    &format!("{FUNCTIONS}/{}/versions", seg(&function)),
                    Some(&body),
                )
                .await?;
            let arn = text(&v, "FunctionArn").unwrap_or_default();
            let version = text(&v, "Version").unwrap_or_default();
            provisioned(ctx, &function, &version, props).await?;
            Ok(made(
                arn.clone(),
                &[("Version", json!(version)), ("FunctionArn", json!(arn))],
            ))
        }
        "AWS::Lambda::Alias" => {
            super::shift::preference(props)?;
            let function = required(props, "FunctionName")?;
            let mut body = alias_body(props)?;
            body.insert("Name".into(), json!(required(props, "Name")?));
            let a = ctx
                .rest(
                    Method::POST,
                    &format!("{FUNCTIONS}/{}/aliases", seg(&function)),
                    Some(&Value::Object(body)),
                )
                .await?;
            let arn = text(&a, "AliasArn").unwrap_or_default();
            provisioned(ctx, &function, &required(props, "Name")?, props).await?;
            Ok(made(arn.clone(), &[("AliasArn", json!(arn))]))
        }
        "AWS::Lambda::Permission" => {
            let function = required(props, "FunctionName")?;
            let mut body = pick(props, super::properties_of("AWS::Lambda::Permission"));
            body.remove("FunctionName");
            body.insert("StatementId".into(), json!(name));
            ctx.rest(
                Method::POST,
                &format!("{FUNCTIONS}/{}/policy", seg(&function)),
                Some(&Value::Object(body)),
            )
            .await?;
            Ok(made(name, &[]))
        }
        "AWS::Lambda::Url" => {
            let function = required(props, "TargetFunctionArn")?;
            let body = Value::Object(pick(props, &["AuthType", "Cors", "InvokeMode"]));
            let u = ctx
                .rest(Method::POST, &url_path(&function, props), Some(&body))
                .await?;
            let arn = text(&u, "FunctionArn").unwrap_or_default();
            Ok(url_made(&u, arn))
        }
        "AWS::Lambda::LayerVersion" => {
            let layer = text(props, "LayerName").unwrap_or_else(|| name.to_owned());
            let content = props
                .get("Content")
                .ok_or_else(|| ProviderError::new("Property Content is required."))?;
            let zip = s3_package(ctx, content, "Content").await?;
            let mut body = pick(
                props,
                &[
                    "Description",
                    "CompatibleRuntimes",
                    "CompatibleArchitectures",
                    "LicenseInfo",
                ],
            );
            body.insert(
                "Content".into(),
                json!({"ZipFile": base64::engine::general_purpose::STANDARD.encode(zip)}),
            );
            let l = ctx
                .rest(
                    Method::POST,
                    &format!("/2018-10-31/layers/{}/versions", seg(&layer)),
                    Some(&Value::Object(body)),
                )
                .await?;
            let arn = text(&l, "LayerVersionArn").unwrap_or_default();
            Ok(made(arn.clone(), &[("LayerVersionArn", json!(arn))]))
        }
        "AWS::Lambda::EventSourceMapping" => {
            let body = Value::Object(pick(props, ESM_PROPERTIES));
            let m = ctx
                .rest(
                    Method::POST,
                    "/2015-03-31/event-source-mappings",
                    Some(&body),
                )
                .await?;
            let uuid = text(&m, "UUID").unwrap_or_default();
            let arn = text(&m, "EventSourceMappingArn").unwrap_or_else(|| {
                format!(
                    "arn:aws:lambda:{}:{}:event-source-mapping:{uuid}",
                    ctx.region,
                    ctx.account()
                )
            });
            Ok(made(
                uuid.clone(),
                &[("Id", json!(uuid)), ("EventSourceMappingArn", json!(arn))],
            ))
        }
        other => Err(ProviderError::new(format!(
            "{other} is not a Lambda type this node makes."
        ))),
    }
}

pub async fn update(
    ctx: &Ctx<'_>,
    kind: &str,
    old_made: &Made,
    old: &Value,
    new: &Value,
) -> Result<Made> {
    match kind {
        "AWS::Lambda::Function" => {
            let name = old_made.reference.clone();
            let path = format!("{FUNCTIONS}/{}", seg(&name));
            if old.get("Code") != new.get("Code") {
                let zip = code_zip(ctx, new).await?;
                let body =
                    json!({"ZipFile": base64::engine::general_purpose::STANDARD.encode(zip)});
                ctx.rest(Method::PUT, &format!("{path}/code"), Some(&body))
                    .await?;
            }
            let config_keys = [
                "Handler",
                "Runtime",
                "Role",
                "MemorySize",
                "Timeout",
                "Environment",
                "Description",
                "Layers",
                "EphemeralStorage",
                "SnapStart",
            ];
            if config_keys.iter().any(|k| old.get(*k) != new.get(*k)) {
                let mut body = pick(new, &config_keys);
                for k in ["Environment", "Description", "Layers"] {
                    // A property left out now is reset, as CloudFormation does.
                    if !body.contains_key(k) && old.get(k).is_some() {
                        body.insert(
                            k.into(),
                            match k {
                                "Environment" => json!({"Variables": {}}),
                                "Layers" => json!([]),
                                _ => json!(""),
                            },
                        );
                    }
                }
                ctx.rest(
                    Method::PUT,
                    &format!("{path}/configuration"),
                    Some(&Value::Object(body)),
                )
                .await?;
            }
            if old.get("ReservedConcurrentExecutions") != new.get("ReservedConcurrentExecutions") {
                reserved(ctx, &name, new).await?;
            }
            if old.get("Tags") != new.get("Tags") {
                let arn = old_made
                    .attributes
                    .get("Arn")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                let old_tags = tags(old, "Tags")?;
                let removed: Vec<String> = old_tags
                    .keys()
                    .filter(|k| !tags(new, "Tags").is_ok_and(|t| t.contains_key(*k)))
                    .cloned()
                    .collect();
                if !removed.is_empty() {
                    let query: Vec<String> = removed
                        .iter()
                        .map(|k| format!("tagKeys={}", seg(k)))
                        .collect();
                    ctx.rest(
                        Method::DELETE,
                        &format!("/2017-03-31/tags/{}?{}", seg(&arn), query.join("&")),
                        None,
                    )
                    .await?;
                }
                let new_tags = tags(new, "Tags")?;
                if !new_tags.is_empty() {
                    ctx.rest(
                        Method::POST,
                        &format!("/2017-03-31/tags/{}", seg(&arn)),
                        Some(&json!({"Tags": new_tags})),
                    )
                    .await?;
                }
            }
            Ok(old_made.clone())
        }
        "AWS::Lambda::Alias" => {
            let function = required(new, "FunctionName")?;
            let alias = required(new, "Name")?;
            let to = required(new, "FunctionVersion")?;
            if let Some(steps) = super::shift::preference(new)?
                && old.get("FunctionVersion") != new.get("FunctionVersion")
            {
                let path = format!("{FUNCTIONS}/{}/aliases/{}", seg(&function), seg(&alias));
                let live = ctx.rest(Method::GET, &path, None).await?;
                let from = text(&live, "FunctionVersion").unwrap_or_default();
                // A rollback finds the alias back on its old version already.
                if from != to {
                    super::shift::shift(ctx, &function, &alias, &from, &to, &steps).await?;
                }
            }
            let body = Value::Object(alias_body(new)?);
            ctx.rest(
                Method::PUT,
                &format!("{FUNCTIONS}/{}/aliases/{}", seg(&function), seg(&alias)),
                Some(&body),
            )
            .await?;
            if old.get("ProvisionedConcurrencyConfig") != new.get("ProvisionedConcurrencyConfig") {
                provisioned(ctx, &function, &alias, new).await?;
            }
            Ok(old_made.clone())
        }
        "AWS::Lambda::Url" => {
            let function = required(new, "TargetFunctionArn")?;
            let mut body = pick(new, &["AuthType", "Cors", "InvokeMode"]);
            if !body.contains_key("Cors") {
                body.insert("Cors".into(), json!({}));
            }
            let u = ctx
                .rest(
                    Method::PUT,
                    &url_path(&function, new),
                    Some(&Value::Object(body)),
                )
                .await?;
            let arn = text(&u, "FunctionArn").unwrap_or_else(|| old_made.reference.clone());
            Ok(url_made(&u, arn))
        }
        "AWS::Lambda::EventSourceMapping" => {
            let mut body = pick(
                new,
                &[
                    "FunctionName",
                    "BatchSize",
                    "Enabled",
                    "MaximumBatchingWindowInSeconds",
                    "FunctionResponseTypes",
                    "ScalingConfig",
                    "BisectBatchOnFunctionError",
                    "MaximumRetryAttempts",
                    "MaximumRecordAgeInSeconds",
                    "DestinationConfig",
                    "ParallelizationFactor",
                    "FilterCriteria",
                ],
            );
            if !body.contains_key("Enabled") {
                body.insert("Enabled".into(), json!(true));
            }
            ctx.rest(
                Method::PUT,
                &format!(
                    "/2015-03-31/event-source-mappings/{}",
                    seg(&old_made.reference)
                ),
                Some(&Value::Object(body)),
            )
            .await?;
            Ok(old_made.clone())
        }
        other => Err(ProviderError::new(format!(
            "{other} cannot be changed in place."
        ))),
    }
}

pub async fn delete(ctx: &Ctx<'_>, kind: &str, made: &Made, props: &Value) -> Result<()> {
    match kind {
        "AWS::Lambda::Function" => {
            ctx.rest(
                Method::DELETE,
                &format!("{FUNCTIONS}/{}", seg(&made.reference)),
                None,
            )
            .await?;
        }
        "AWS::Lambda::Version" => {
            let function = required(props, "FunctionName")?;
            let version = made
                .attributes
                .get("Version")
                .and_then(Value::as_str)
                .unwrap_or_default();
            ctx.rest(
                Method::DELETE,
                &format!("{FUNCTIONS}/{}?Qualifier={}", seg(&function), seg(version)),
                None,
            )
            .await?;
        }
        "AWS::Lambda::Alias" => {
            let function = required(props, "FunctionName")?;
            let alias = required(props, "Name")?;
            ctx.rest(
                Method::DELETE,
                &format!("{FUNCTIONS}/{}/aliases/{}", seg(&function), seg(&alias)),
                None,
            )
            .await?;
        }
        "AWS::Lambda::Permission" => {
            let function = required(props, "FunctionName")?;
            ctx.rest(
                Method::DELETE,
                &format!(
                    "{FUNCTIONS}/{}/policy/{}",
                    seg(&function),
                    seg(&made.reference)
                ),
                None,
            )
            .await?;
        }
        "AWS::Lambda::Url" => {
            let function = required(props, "TargetFunctionArn")?;
            ctx.rest(Method::DELETE, &url_path(&function, props), None)
                .await?;
        }
        "AWS::Lambda::LayerVersion" => {
            let (_, layer, version) = nimbus_types::layer::parse_layer_version_arn(&made.reference)
                .map_err(|e| ProviderError::new(e.to_string()))?;
            ctx.rest(
                Method::DELETE,
                &format!("/2018-10-31/layers/{}/versions/{version}", seg(&layer)),
                None,
            )
            .await?;
        }
        "AWS::Lambda::EventSourceMapping" => {
            ctx.rest(
                Method::DELETE,
                &format!("/2015-03-31/event-source-mappings/{}", seg(&made.reference)),
                None,
            )
            .await?;
        }
        _ => {}
    }
    Ok(())
}

/// A URL's `Ref` (its function's ARN) and attributes, from the API's answer `u`.
fn url_made(u: &Value, arn: String) -> Made {
    made(
        arn.clone(),
        &[
            (
                "FunctionUrl",
                json!(text(u, "FunctionUrl").unwrap_or_default()),
            ),
            ("FunctionArn", json!(arn)),
        ],
    )
}

fn url_path(function: &str, props: &Value) -> String {
    match text(props, "Qualifier") {
        Some(q) => format!(
            "/2021-10-31/functions/{}/url?Qualifier={}",
            seg(function),
            seg(&q)
        ),
        None => format!("/2021-10-31/functions/{}/url", seg(function)),
    }
}

fn alias_body(props: &Value) -> Result<Map<String, Value>> {
    let mut body = pick(props, &["FunctionVersion", "Description"]);
    if let Some(weights) = props
        .get("RoutingConfig")
        .and_then(|r| r.get("AdditionalVersionWeights"))
    {
        let mut map = Map::new();
        for w in weights.as_array().into_iter().flatten() {
            let version = required(w, "FunctionVersion")?;
            let weight = w
                .get("FunctionWeight")
                .and_then(|v| v.as_f64().or_else(|| v.as_str()?.parse().ok()))
                .ok_or_else(|| {
                    ProviderError::new("RoutingConfig: FunctionWeight must be a number.")
                })?;
            map.insert(version, json!(weight));
        }
        body.insert(
            "RoutingConfig".into(),
            json!({"AdditionalVersionWeights": map}),
        );
    } else {
        body.insert(
            "RoutingConfig".into(),
            json!({"AdditionalVersionWeights": {}}),
        );
    }
    Ok(body)
}

async fn provisioned(ctx: &Ctx<'_>, function: &str, qualifier: &str, props: &Value) -> Result<()> {
    let path = format!(
        "/2019-09-30/functions/{}/provisioned-concurrency?Qualifier={}",
        seg(function),
        seg(qualifier)
    );
    match props.get("ProvisionedConcurrencyConfig") {
        Some(pc) => {
            let n = number(pc, "ProvisionedConcurrentExecutions")?.ok_or_else(|| {
                ProviderError::new(
                    "ProvisionedConcurrencyConfig needs ProvisionedConcurrentExecutions.",
                )
            })?;
            ctx.rest(
                Method::PUT,
                &path,
                Some(&json!({"ProvisionedConcurrentExecutions": n})),
            )
            .await?;
        }
        None => {
            if let Err(e) = ctx.rest(Method::DELETE, &path, None).await
                && !e.not_found
            {
                return Err(e);
            }
        }
    }
    Ok(())
}

async fn reserved(ctx: &Ctx<'_>, function: &str, props: &Value) -> Result<()> {
    let path = format!("/2017-10-31/functions/{}/concurrency", seg(function));
    match number(props, "ReservedConcurrentExecutions")? {
        Some(n) => {
            ctx.rest(
                Method::PUT,
                &path,
                Some(&json!({"ReservedConcurrentExecutions": n})),
            )
            .await?;
        }
        None => {
            ctx.rest(Method::DELETE, &path, None).await?;
        }
    }
    Ok(())
}

async fn create_function(ctx: &Ctx<'_>, name: &str, props: &Value) -> Result<Made> {
    let function = text(props, "FunctionName").unwrap_or_else(|| name.to_owned());
    let zip = code_zip(ctx, props).await?;
    let mut body = pick(
        props,
        &[
            "Handler",
            "Runtime",
            "Role",
            "MemorySize",
            "Timeout",
            "Environment",
            "Description",
            "Layers",
            "Architectures",
            "EphemeralStorage",
            "SnapStart",
            "PackageType",
        ],
    );
    body.insert("FunctionName".into(), json!(function));
    body.insert(
        "Code".into(),
        json!({"ZipFile": base64::engine::general_purpose::STANDARD.encode(zip)}),
    );
    let t = tags(props, "Tags")?;
    if !t.is_empty() {
        body.insert("Tags".into(), json!(t));
    }
    let f = ctx
        .rest(Method::POST, FUNCTIONS, Some(&Value::Object(body)))
        .await?;
    let arn = text(&f, "FunctionArn").unwrap_or_default();
    let created = made(function.clone(), &[("Arn", json!(arn))]);
    if props.get("ReservedConcurrentExecutions").is_some()
        && let Err(e) = reserved(ctx, &function, props).await
    {
        // Nothing half-made: the function goes with the failure.
        let _ = delete(ctx, "AWS::Lambda::Function", &created, props).await;
        return Err(e);
    }
    Ok(created)
}

/// The function's package: fetched from the node's S3 (`S3Bucket`/`S3Key`), or made from
/// `ZipFile`'s source text as CloudFormation does (`index.py`, `index.js`).
async fn code_zip(ctx: &Ctx<'_>, props: &Value) -> Result<Vec<u8>> {
    let code = props
        .get("Code")
        .ok_or_else(|| ProviderError::new("Property Code is required."))?;
    if let Some(source) = text(code, "ZipFile") {
        let runtime = text(props, "Runtime").unwrap_or_default();
        let file = if runtime.starts_with("python") {
            "index.py"
        } else if runtime.starts_with("nodejs") {
            "index.js"
        } else {
            return Err(ProviderError::new(format!(
                "Code.ZipFile (inline source) is for Python and Node.js functions, not runtime {runtime}."
            )));
        };
        let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .unix_permissions(0o644);
        zip.start_file(file, options)
            .map_err(|e| ProviderError::new(e.to_string()))?;
        zip.write_all(source.as_bytes())
            .map_err(|e| ProviderError::new(e.to_string()))?;
        let cursor = zip
            .finish()
            .map_err(|e| ProviderError::new(e.to_string()))?;
        return Ok(cursor.into_inner());
    }
    if code.get("ImageUri").is_some() {
        return Err(ProviderError::new(
            "Code.ImageUri: container images are not supported by this node.",
        ));
    }
    s3_package(ctx, code, "Code").await
}

/// A package in the node's S3 (`S3Bucket`, `S3Key`, `S3ObjectVersion` of `location`), read
/// as the stack's caller.
async fn s3_package(ctx: &Ctx<'_>, location: &Value, what: &str) -> Result<Vec<u8>> {
    let (Some(bucket), Some(key)) = (text(location, "S3Bucket"), text(location, "S3Key")) else {
        return Err(ProviderError::new(format!(
            "{what} needs S3Bucket and S3Key{}.",
            if what == "Code" { " (or ZipFile)" } else { "" }
        )));
    };
    let mut path = format!(
        "/{}/{}",
        seg(&bucket),
        key.split('/').map(seg).collect::<Vec<_>>().join("/")
    );
    if let Some(v) = text(location, "S3ObjectVersion") {
        path.push_str(&format!("?versionId={}", seg(&v)));
    }
    let reply = ctx.s3(Method::GET, &path, Vec::new()).await.map_err(|e| {
        ProviderError::new(format!(
            "{what} at s3://{bucket}/{key} could not be read: {}",
            e.message
        ))
    })?;
    Ok(reply.body)
}
