//! Function URLs: their configuration API (`/2021-10-31/functions/{name}/url`, `…/urls`), the
//! function's resource-based policy (`/2015-03-31/functions/{name}/policy`), and serving a
//! URL's requests as Lambda does: the request becomes a payload-format-2.0 event, the
//! function's result becomes the HTTP response.

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use nimbus_control::UrlTarget;
use nimbus_identity::Caller;
use nimbus_types::limits::MAX_SYNC_PAYLOAD_BYTES;
use nimbus_types::url::{
    CorsInput, FunctionUrl, InvokeMode, Permission, UrlAuthType, UrlCors, new_url_id,
};
use nimbus_types::{FunctionConfig, InvokeRequest};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::http_event;
use crate::{FunctionPath, QualifierQuery, Shared, read_body};

/// Where function URLs live: `http://{url-id}.lambda-url.{region}.{base}[:port]/`, and the
/// path-based form `http://{node}/lambda-url/{url-id}/…` for clients that cannot resolve such
/// names.
#[derive(Debug, Clone)]
pub struct UrlDomain {
    /// The domain under which URL hosts are named (`localhost` by default).
    pub base: String,
    pub region: String,
    /// The port in the URLs handed out (the node's), if not the scheme's default.
    pub port: Option<u16>,
}

/// The path prefix of the path-based form.
pub const URL_PATH_PREFIX: &str = "/lambda-url/";

impl UrlDomain {
    /// The URL of a function URL id.
    pub fn url(&self, url_id: &str) -> String {
        self.endpoint(url_id, "lambda-url") + "/"
    }

    /// `http://{id}.{label}.{region}.{base}[:port]`.
    fn endpoint(&self, id: &str, label: &str) -> String {
        let port = self.port.map(|p| format!(":{p}")).unwrap_or_default();
        format!("http://{id}.{label}.{}.{}{port}", self.region, self.base)
    }

    /// The URL id a `Host` header names, if it is a function URL's host.
    pub fn url_id_of_host<'a>(&self, host: &'a str) -> Option<&'a str> {
        self.id_of_host(host, "lambda-url")
            .filter(|id| is_id(id, 32))
    }

    /// The URL id and the rest of the path of a path-based URL request.
    pub fn url_id_of_path(path: &str) -> Option<(&str, &str)> {
        id_of_path(path, URL_PATH_PREFIX).filter(|(id, _)| is_id(id, 32))
    }

    /// The endpoint of an HTTP API: `http://{api-id}.execute-api.{region}.{base}[:port]`.
    pub fn api_endpoint(&self, api_id: &str) -> String {
        self.endpoint(api_id, "execute-api")
    }

    /// The API id a `Host` header names, if it is an HTTP API's host.
    pub fn api_id_of_host<'a>(&self, host: &'a str) -> Option<&'a str> {
        self.id_of_host(host, "execute-api")
            .filter(|id| is_id(id, 10))
    }

    /// The API id and the rest of the path of a path-based HTTP API request.
    pub fn api_id_of_path(path: &str) -> Option<(&str, &str)> {
        id_of_path(path, API_PATH_PREFIX).filter(|(id, _)| is_id(id, 10))
    }

    /// `ID` of a host `ID.{label}.{region}.{base}[:port]`.
    fn id_of_host<'a>(&self, host: &'a str, label: &str) -> Option<&'a str> {
        let name = match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => host,
        };
        let name = name.strip_suffix('.').unwrap_or(name);
        let (id, rest) = name.split_once('.')?;
        let rest = rest.strip_prefix(label)?.strip_prefix('.')?;
        let (region, base) = rest.split_once('.')?;
        (region.eq_ignore_ascii_case(&self.region) && base.eq_ignore_ascii_case(&self.base))
            .then_some(id)
    }
}

/// The path prefix of an HTTP API's path-based form.
pub const API_PATH_PREFIX: &str = "/execute-api/";

/// `(ID, /rest)` of a path `{prefix}ID/rest`.
fn id_of_path<'a>(path: &'a str, prefix: &str) -> Option<(&'a str, &'a str)> {
    let rest = path.strip_prefix(prefix)?;
    Some(match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    })
}

/// Whether `id` is `len` lower-case letters and digits, as URL ids (32) and API ids (10) are.
fn is_id(id: &str, len: usize) -> bool {
    id.len() == len
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

// ---------------------------------------------------------------------------------------------
// The configuration API.

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct UrlConfigInput {
    auth_type: Option<String>,
    cors: Option<CorsInput>,
    invoke_mode: Option<String>,
}

/// The qualifier a URL is kept under: `$LATEST` for none. Lambda gives URLs to `$LATEST` and
/// aliases only: a version number, or an alias that does not exist, names nothing.
fn url_qualifier(f: &Shared, key: &str, qualifier: Option<&str>) -> Result<String, ApiError> {
    match qualifier {
        None | Some("$LATEST") => Ok(nimbus_types::name::LATEST.to_owned()),
        Some(q) if f.control.alias(key, q).is_ok() => Ok(q.to_owned()),
        Some(q) => Err(ApiError::function_not_found(&format!(
            "{}:{q}",
            f.control.arn(key)
        ))),
    }
}

fn url_output(f: &Shared, function: &FunctionConfig, qualifier: &str, url: &FunctionUrl) -> Value {
    let arn = function.arn(f.control.region());
    let mut out = json!({
        "FunctionUrl": f.urls.url(&url.url_id),
        "FunctionArn": if qualifier == nimbus_types::name::LATEST { arn } else { format!("{arn}:{qualifier}") },
        "AuthType": url.auth_type.as_str(),
        "CreationTime": nimbus_types::time::iso8601_micros(url.created_ms),
        "LastModifiedTime": nimbus_types::time::iso8601_micros(url.last_modified_ms),
        "InvokeMode": url.invoke_mode.as_str(),
    });
    if let Some(cors) = &url.cors {
        out["Cors"] = cors.to_json(true);
    }
    out
}

fn parse_input(body: &[u8]) -> Result<UrlConfigInput, ApiError> {
    crate::parse_json(if body.is_empty() { b"{}" } else { body })
}

fn validated_cors(input: Option<CorsInput>) -> Result<Option<UrlCors>, ApiError> {
    Ok(input.map(CorsInput::into_cors).transpose()?)
}

/// A URL configuration request's target and its parsed, validated settings.
struct UrlChange {
    key: String,
    qualifier: String,
    auth_type: Option<UrlAuthType>,
    invoke_mode: Option<InvokeMode>,
    cors: Option<UrlCors>,
}

async fn url_change(
    f: &Shared,
    name: FunctionPath,
    query: QualifierQuery,
    headers: &HeaderMap,
    body: Body,
    operation: &str,
) -> Result<UrlChange, ApiError> {
    let (key, _) = name.key()?;
    let qualifier = url_qualifier(f, &key, query.qualifier.as_deref())?;
    let input = parse_input(&read_body(headers, body, 1 << 20, operation).await?)?;
    Ok(UrlChange {
        key,
        qualifier,
        auth_type: input
            .auth_type
            .as_deref()
            .map(UrlAuthType::parse)
            .transpose()?,
        invoke_mode: input
            .invoke_mode
            .as_deref()
            .map(InvokeMode::parse)
            .transpose()?,
        cors: validated_cors(input.cors)?,
    })
}

pub(crate) async fn create_url(
    State(f): State<Shared>,
    name: FunctionPath,
    Query(q): Query<QualifierQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let change = url_change(&f, name, q, &headers, body, "CreateFunctionUrlConfig").await?;
    let auth_type = change
        .auth_type
        .map_or_else(|| UrlAuthType::parse(""), Ok)?;
    let now = nimbus_types::time::now_ms();
    let url = FunctionUrl {
        url_id: new_url_id(),
        auth_type,
        cors: change.cors,
        invoke_mode: change.invoke_mode.unwrap_or_default(),
        created_ms: now,
        last_modified_ms: now,
    };
    let exists = format!(
        "Failed to create function url config for [functionArn = {}]. Error message:  \
         FunctionUrlConfig exists for this Lambda function",
        f.control.arn(&change.key)
    );
    let qualifier = change.qualifier;
    let (function, url) = f
        .control
        .modify(&change.key, {
            let qualifier = qualifier.clone();
            move |function| {
                if function.urls.contains_key(&qualifier) {
                    return Err(nimbus_control::Error::Conflict(exists));
                }
                function.urls.insert(qualifier, url.clone());
                Ok(url)
            }
        })
        .await?;
    let mut out = url_output(&f, &function, &qualifier, &url);
    if let Some(o) = out.as_object_mut() {
        o.remove("LastModifiedTime");
    }
    Ok((StatusCode::CREATED, axum::Json(out)).into_response())
}

fn url_not_found(f: &Shared, key: &str) -> ApiError {
    ApiError::not_found(format!(
        "The resource you requested does not exist. (Service: Lambda, Status Code: 404, \
         Request ID: none) for function {}",
        f.control.arn(key)
    ))
}

pub(crate) async fn get_url(
    State(f): State<Shared>,
    name: FunctionPath,
    Query(q): Query<QualifierQuery>,
) -> Result<Response, ApiError> {
    let (key, _) = name.key()?;
    let qualifier = url_qualifier(&f, &key, q.qualifier.as_deref())?;
    let function = f.control.resolve(&key, None)?;
    let url = function
        .urls
        .get(&qualifier)
        .ok_or_else(|| url_not_found(&f, &key))?;
    Ok(axum::Json(url_output(&f, &function, &qualifier, url)).into_response())
}

pub(crate) async fn update_url(
    State(f): State<Shared>,
    name: FunctionPath,
    Query(q): Query<QualifierQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let change = url_change(&f, name, q, &headers, body, "UpdateFunctionUrlConfig").await?;
    let missing = url_not_found(&f, &change.key);
    let qualifier = change.qualifier;
    let (function, url) = f
        .control
        .modify(&change.key, {
            let qualifier = qualifier.clone();
            move |function| {
                let Some(url) = function.urls.get_mut(&qualifier) else {
                    return Err(nimbus_control::Error::NotFound(missing.message));
                };
                if let Some(a) = change.auth_type {
                    url.auth_type = a;
                }
                if let Some(m) = change.invoke_mode {
                    url.invoke_mode = m;
                }
                if let Some(c) = change.cors {
                    url.cors = Some(c);
                }
                url.last_modified_ms = nimbus_types::time::now_ms();
                Ok(url.clone())
            }
        })
        .await?;
    Ok(axum::Json(url_output(&f, &function, &qualifier, &url)).into_response())
}

pub(crate) async fn delete_url(
    State(f): State<Shared>,
    name: FunctionPath,
    Query(q): Query<QualifierQuery>,
) -> Result<Response, ApiError> {
    let (key, _) = name.key()?;
    let qualifier = url_qualifier(&f, &key, q.qualifier.as_deref())?;
    let missing = url_not_found(&f, &key);
    f.control
        .modify(&key, move |function| {
            function
                .urls
                .remove(&qualifier)
                .map(|_| ())
                .ok_or(nimbus_control::Error::NotFound(missing.message))
        })
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct ListQuery {
    #[serde(rename = "Marker")]
    marker: Option<String>,
    #[serde(rename = "MaxItems")]
    max_items: Option<String>,
}

pub(crate) async fn list_urls(
    State(f): State<Shared>,
    name: FunctionPath,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let (key, _) = name.key()?;
    let function = f.control.resolve(&key, None)?;
    let max = match q.max_items.as_deref() {
        None => 50,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=50).contains(&n) => n,
            _ => {
                return Err(nimbus_types::InvalidParameter::constraint(
                    "maxItems",
                    Some(&v),
                    "Member must have value less than or equal to 50 and greater than or \
                     equal to 1",
                )
                .into());
            }
        },
    };
    // The marker is the qualifier of the last URL of the previous page.
    let urls: Vec<(&String, &FunctionUrl)> = function
        .urls
        .iter()
        .filter(|(qualifier, _)| q.marker.as_ref().is_none_or(|m| *qualifier > m))
        .collect();
    let page: Vec<Value> = urls
        .iter()
        .take(max)
        .map(|(qualifier, url)| url_output(&f, &function, qualifier, url))
        .collect();
    let mut out = json!({ "FunctionUrlConfigs": page });
    if urls.len() > max {
        out["NextMarker"] = urls[max - 1].0.clone().into();
    }
    Ok(axum::Json(out).into_response())
}

// ---------------------------------------------------------------------------------------------
// The resource-based policy.

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct PermissionInput {
    statement_id: Option<String>,
    action: Option<String>,
    principal: Option<String>,
    source_arn: Option<String>,
    source_account: Option<String>,
    function_url_auth_type: Option<String>,
    event_source_token: Option<String>,
    principal_org_i_d: Option<String>,
    revision_id: Option<String>,
}

/// Actions a statement may grant on a function.
const POLICY_ACTIONS: &[&str] = &[
    "lambda:*",
    "lambda:InvokeFunction",
    "lambda:InvokeFunctionUrl",
    "lambda:GetFunction",
    "lambda:GetFunctionConfiguration",
];

fn validate_principal(principal: &str) -> bool {
    principal == "*"
        || (principal.len() == 12 && principal.bytes().all(|b| b.is_ascii_digit()))
        || principal.starts_with("arn:aws:iam::")
        || principal.starts_with("arn:aws:sts::")
        || (principal.ends_with(".amazonaws.com") && !principal.contains(['/', ' ', '*']))
}

pub(crate) async fn add_permission(
    State(f): State<Shared>,
    name: FunctionPath,
    Query(q): Query<QualifierQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let (key, _) = name.key()?;
    let input: PermissionInput =
        crate::parse_json(&read_body(&headers, body, 1 << 20, "AddPermission").await?)?;
    let sid = input.statement_id.unwrap_or_default();
    if sid.is_empty()
        || sid.len() > 100
        || !sid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(nimbus_types::InvalidParameter::constraint(
            "statementId",
            Some(&sid),
            "Member must satisfy regular expression pattern: ([a-zA-Z0-9-_]+)",
        )
        .into());
    }
    let action = input.action.unwrap_or_default();
    if !POLICY_ACTIONS.contains(&action.as_str()) {
        return Err(ApiError::invalid_parameter(format!(
            "The action {action:?} is not one a function's resource-based policy can grant"
        )));
    }
    let principal = input.principal.unwrap_or_default();
    if !validate_principal(&principal) {
        return Err(ApiError::invalid_parameter(format!(
            "The provided principal was invalid. Please check the principal and try again: \
             {principal}"
        )));
    }
    if input.event_source_token.is_some() || input.principal_org_i_d.is_some() {
        return Err(ApiError::invalid_parameter(
            "EventSourceToken and PrincipalOrgID are not supported by this node",
        ));
    }
    let function_url_auth_type = input
        .function_url_auth_type
        .as_deref()
        .map(UrlAuthType::parse)
        .transpose()?;
    if function_url_auth_type.is_some() && action != "lambda:InvokeFunctionUrl" {
        return Err(ApiError::invalid_parameter(
            "FunctionUrlAuthType is only valid with the lambda:InvokeFunctionUrl action",
        ));
    }
    if let Some(account) = &input.source_account
        && !(account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(nimbus_types::InvalidParameter::constraint(
            "sourceAccount",
            Some(account),
            "Member must satisfy regular expression pattern: \\d{12}",
        )
        .into());
    }
    let function = f.control.resolve(&key, None)?;
    if let Some(revision) = &input.revision_id
        && *revision != function.revision_id
    {
        return Err(nimbus_control::Error::RevisionMismatch.into());
    }
    let qualifier = match q.qualifier.as_deref() {
        None => None,
        Some(q) => {
            // A statement about a version that does not exist is refused, as Lambda does.
            f.control
                .resolve(&key, Some(&nimbus_types::Qualifier::parse(q)?))?;
            Some(q.to_owned())
        }
    };
    let permission = Permission {
        sid,
        action,
        principal,
        qualifier,
        source_arn: input.source_arn,
        source_account: input.source_account,
        function_url_auth_type,
    };
    let statement = permission.to_json(&function.arn(f.control.region()));
    f.control.add_permission(&key, permission).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({ "Statement": statement.to_string() })),
    )
        .into_response())
}

pub(crate) async fn get_policy(
    State(f): State<Shared>,
    name: FunctionPath,
    Query(q): Query<QualifierQuery>,
) -> Result<Response, ApiError> {
    let (key, _) = name.key()?;
    let function = f.control.resolve(&key, None)?;
    let arn = function.arn(f.control.region());
    let statements: Vec<Value> = function
        .permissions
        .iter()
        .filter(|p| p.qualifier == q.qualifier)
        .map(|p| p.to_json(&arn))
        .collect();
    if statements.is_empty() {
        return Err(ApiError::not_found(
            "The resource you requested does not exist.",
        ));
    }
    let policy = json!({ "Version": "2012-10-17", "Id": "default", "Statement": statements });
    Ok(axum::Json(json!({
        "Policy": policy.to_string(),
        "RevisionId": function.revision_id,
    }))
    .into_response())
}

pub(crate) async fn remove_permission(
    State(f): State<Shared>,
    name: FunctionPath,
    Path(params): Path<std::collections::HashMap<String, String>>,
    Query(q): Query<QualifierQuery>,
) -> Result<Response, ApiError> {
    let (key, _) = name.key()?;
    let sid = params.get("sid").map(String::as_str).unwrap_or_default();
    f.control
        .remove_permission(&key, sid, q.qualifier.as_deref())
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ---------------------------------------------------------------------------------------------
// Serving a URL.

/// Who calls a URL, as far as its authorization is concerned.
pub enum UrlCaller<'a> {
    /// No signature (a `NONE` URL).
    Anonymous,
    /// A SigV4-authenticated caller (an `AWS_IAM` URL).
    Signed(&'a Caller),
}

/// A response in the shape function URLs give their own errors: `{"Message": …}`.
fn url_error(status: StatusCode, message: &str) -> Response {
    let mut response = (status, axum::Json(json!({ "Message": message }))).into_response();
    response.headers_mut().insert(
        "x-amzn-ErrorType",
        HeaderValue::from_static("AccessDeniedException"),
    );
    if status != StatusCode::FORBIDDEN {
        response.headers_mut().remove("x-amzn-ErrorType");
    }
    response
}

/// A refusal of a URL request that is not allowed: 403 `{"Message":"Forbidden"}`.
pub fn forbidden() -> Response {
    url_error(StatusCode::FORBIDDEN, "Forbidden")
}

/// Whether `caller` may invoke the function through its URL: the resource-based policy must
/// allow anonymous callers for a `NONE` URL; for `AWS_IAM`, the caller's identity policies or
/// the resource-based policy must allow `lambda:InvokeFunctionUrl` (both, for a caller of
/// another account).
pub fn url_allowed(f: &Shared, target: &UrlTarget, caller: &UrlCaller<'_>) -> bool {
    const ACTION: &str = "lambda:InvokeFunctionUrl";
    let function = &target.function;
    let qualifier =
        (target.qualifier != nimbus_types::name::LATEST).then_some(target.qualifier.as_str());
    let auth = Some(target.url.auth_type);
    match (target.url.auth_type, caller) {
        (UrlAuthType::None, _) => function
            .permissions
            .iter()
            .any(|p| p.allows(ACTION, None, qualifier, auth)),
        (UrlAuthType::AwsIam, UrlCaller::Anonymous) => false,
        (UrlAuthType::AwsIam, UrlCaller::Signed(caller)) => {
            let arn = function.arn(f.control.region());
            let resource = match qualifier {
                Some(q) => format!("{arn}:{q}"),
                None => arn,
            };
            let principal_arn = caller.arn();
            let by_resource = function.permissions.iter().any(|p| {
                p.allows(
                    ACTION,
                    Some((&caller.account, &principal_arn)),
                    qualifier,
                    auth,
                )
            });
            caller.authorize_with_resource_policy(ACTION, &resource, by_resource)
        }
    }
}

/// What a URL request carries besides its headers and body.
pub struct UrlRequest<'a> {
    pub parts: &'a Parts,
    /// The path the function sees (the path-based form's prefix removed).
    pub path: &'a str,
    pub source_ip: String,
    pub body: Bytes,
}

fn insert(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(name, v);
    }
}

/// Answers a CORS preflight from the URL's configuration, without the function.
pub fn preflight(cors: &UrlCors, origin: &str) -> Response {
    let mut response = StatusCode::OK.into_response();
    let h = response.headers_mut();
    if let Some(allowed) = cors.allowed_origin(origin) {
        insert(h, "access-control-allow-origin", allowed);
        if !cors.allow_methods.is_empty() {
            insert(
                h,
                "access-control-allow-methods",
                &cors.allow_methods.join(","),
            );
        }
        if !cors.allow_headers.is_empty() {
            insert(
                h,
                "access-control-allow-headers",
                &cors.allow_headers.join(","),
            );
        }
        if let Some(age) = cors.max_age {
            insert(h, "access-control-max-age", &age.to_string());
        }
        if cors.allow_credentials {
            insert(h, "access-control-allow-credentials", "true");
        }
        if allowed != "*" {
            insert(h, "vary", "Origin");
        }
    }
    response
}

/// Adds the URL's CORS headers to a response for a request from `origin`, replacing any the
/// function set.
pub fn add_cors(cors: &UrlCors, origin: &str, response: &mut Response) {
    let h = response.headers_mut();
    for name in [
        "access-control-allow-origin",
        "access-control-allow-credentials",
        "access-control-expose-headers",
    ] {
        h.remove(name);
    }
    if let Some(allowed) = cors.allowed_origin(origin) {
        insert(h, "access-control-allow-origin", allowed);
        if cors.allow_credentials {
            insert(h, "access-control-allow-credentials", "true");
        }
        if !cors.expose_headers.is_empty() {
            insert(
                h,
                "access-control-expose-headers",
                &cors.expose_headers.join(","),
            );
        }
        if allowed != "*" {
            h.append("vary", HeaderValue::from_static("Origin"));
        }
    }
}

/// The answer to a CORS preflight, from the URL's configuration, if the request is one. It
/// comes before any authentication: browsers send preflights without credentials.
pub fn preflight_answer(target: &UrlTarget, parts: &Parts) -> Option<Response> {
    let cors = target.url.cors.as_ref()?;
    let origin = parts
        .headers
        .get(axum::http::header::ORIGIN)?
        .to_str()
        .ok()?;
    (parts.method == Method::OPTIONS
        && parts
            .headers
            .contains_key(axum::http::header::ACCESS_CONTROL_REQUEST_METHOD))
    .then(|| preflight(cors, origin))
}

/// Serves one request to a function URL whose caller the gateway has authenticated (or not,
/// for a `NONE` URL) and authorized ([`url_allowed`]), after [`preflight_answer`].
pub async fn serve(
    f: &Shared,
    target: &UrlTarget,
    caller: UrlCaller<'_>,
    request: UrlRequest<'_>,
) -> Response {
    let origin = request
        .parts
        .headers
        .get(axum::http::header::ORIGIN)
        .and_then(|o| o.to_str().ok())
        .map(str::to_owned);
    let request_id = uuid::Uuid::new_v4().to_string();
    let view = http_event::View {
        parts: request.parts,
        path: request.path,
        source_ip: &request.source_ip,
        body: &request.body,
        request_id: &request_id,
    };
    let authorizer = match &caller {
        UrlCaller::Anonymous => None,
        UrlCaller::Signed(caller) => Some(std::sync::Arc::new(http_event::iam_authorizer(caller))),
    };
    let context = http_event::Context {
        account: match caller {
            UrlCaller::Anonymous => "anonymous",
            UrlCaller::Signed(_) => &target.function.account,
        },
        api_id: &target.url.url_id,
        route_key: "$default",
        stage: "$default",
        authorizer,
        path_parameters: &[],
        stage_variables: None,
    };
    // A URL of an alias runs what the alias points to now.
    let function = if target.qualifier == nimbus_types::name::LATEST {
        target.function.clone()
    } else {
        let qualifier = nimbus_types::Qualifier::Other(target.qualifier.clone());
        match f
            .control
            .resolve_invocation(&target.function.key(), Some(&qualifier))
        {
            Ok(function) => function,
            Err(e) => {
                tracing::warn!(function = %target.function.name, error = %e, "function URL: the alias names no version");
                return url_error(StatusCode::BAD_GATEWAY, "Internal Server Error");
            }
        }
    };
    let serves_http = function.runtime.serves_http();
    let (payload, http) = if serves_http {
        (Bytes::new(), Some(http_event::call(&view)))
    } else {
        match serde_json::to_vec(&http_event::v2(&view, &context)) {
            Ok(p) if p.len() > MAX_SYNC_PAYLOAD_BYTES => return too_large(),
            Ok(p) => (Bytes::from(p), None),
            Err(e) => return ApiError::internal(e).into_response(),
        }
    };
    let streaming =
        target.url.invoke_mode == nimbus_types::url::InvokeMode::ResponseStream && http.is_none();
    let request = InvokeRequest {
        request_id: request_id.clone(),
        payload,
        client_context: None,
        async_attempt: None,
        http,
        stream: None,
        qualifier: (target.qualifier != nimbus_types::name::LATEST)
            .then(|| target.qualifier.clone()),
    };
    let outcome = if streaming {
        match crate::stream::start(f.manager.clone(), function.clone(), request).await {
            crate::stream::Started::Whole(outcome) => outcome,
            crate::stream::Started::Streaming {
                content_type,
                parts,
                done,
            } => {
                let mut response = streamed_response(content_type, parts, done).await;
                insert(response.headers_mut(), "x-amzn-requestid", &request_id);
                if let (Some(cors), Some(origin)) = (&target.url.cors, &origin) {
                    add_cors(cors, origin, &mut response);
                }
                return response;
            }
        }
    } else {
        f.manager.invoke(&function, request).await
    };
    let mut response = match outcome {
        Err(nimbus_manager::Error::Throttled(_)) => {
            url_error(StatusCode::TOO_MANY_REQUESTS, "Rate Exceeded.")
        }
        Err(e) => {
            tracing::warn!(function = %target.function.name, error = %e, "function URL invocation failed");
            url_error(StatusCode::BAD_GATEWAY, "Internal Server Error")
        }
        Ok(outcome) if outcome.error.is_some() => {
            url_error(StatusCode::BAD_GATEWAY, "Internal Server Error")
        }
        Ok(outcome) => {
            let answered = match outcome.http {
                Some(reply) => http_event::answer(reply),
                None => http_event::interpret_v2(&outcome.payload),
            };
            answered.unwrap_or_else(|| {
                tracing::info!(function = %target.function.name, "function URL: the function's result is not a valid response");
                url_error(StatusCode::BAD_GATEWAY, "Internal Server Error")
            })
        }
    };
    insert(response.headers_mut(), "x-amzn-requestid", &request_id);
    if let (Some(cors), Some(origin)) = (&target.url.cors, &origin) {
        add_cors(cors, origin, &mut response);
    }
    response
}

/// The content type with which a streaming function starts an HTTP response with a prelude.
const HTTP_INTEGRATION: &str = "application/vnd.awslambda.http-integration-response";

/// The most a prelude (status, headers, cookies) may take before its delimiter.
const MAX_PRELUDE_BYTES: usize = 64 * 1024;

/// A `RESPONSE_STREAM` URL's answer from a function that streams: the prelude's status and
/// headers (or 200 and the stream's content type), then the body as the function writes it,
/// chunked. A function that fails part-way cuts the response off, as Lambda does: the status
/// has already gone.
async fn streamed_response(
    content_type: Option<String>,
    mut parts: crate::stream::Parts,
    done: tokio::sync::oneshot::Receiver<
        Result<nimbus_types::InvokeOutcome, nimbus_manager::Error>,
    >,
) -> Response {
    let mut leftover = None;
    let mut response = if content_type.as_deref() == Some(HTTP_INTEGRATION) {
        let mut prelude = Vec::new();
        loop {
            let Some(chunk) = parts.next().await else {
                break;
            };
            // Only the new bytes (and the 7 before them) can complete the delimiter.
            let from = prelude.len().saturating_sub(7);
            prelude.extend_from_slice(&chunk);
            if let Some(at) = prelude[from..]
                .windows(8)
                .position(|w| w == [0u8; 8])
                .map(|i| from + i)
            {
                leftover = Some(Bytes::from(prelude.split_off(at + 8)));
                prelude.truncate(at);
                break;
            }
            if prelude.len() > MAX_PRELUDE_BYTES {
                return url_error(StatusCode::BAD_GATEWAY, "Internal Server Error");
            }
        }
        match http_event::stream_head(&prelude) {
            Some(head) => head,
            None => return url_error(StatusCode::BAD_GATEWAY, "Internal Server Error"),
        }
    } else {
        let mut head = StatusCode::OK.into_response();
        let kind = content_type.unwrap_or_else(|| "application/octet-stream".to_owned());
        insert(head.headers_mut(), "content-type", &kind);
        head
    };
    let body = futures_util::stream::unfold(
        (leftover, parts, Some(done)),
        |(mut leftover, mut parts, done)| async move {
            if let Some(first) = leftover.take().filter(|b| !b.is_empty()) {
                return Some((Ok(first), (None, parts, done)));
            }
            if let Some(chunk) = parts.next().await {
                return Some((Ok(chunk), (None, parts, done)));
            }
            let failed = match done?.await {
                Ok(Ok(outcome)) => outcome.error.is_some(),
                _ => true,
            };
            failed.then(|| {
                let cut = std::io::Error::other("the function failed while streaming");
                (Err(cut), (None, parts, None))
            })
        },
    );
    *response.body_mut() = Body::from_stream(body);
    response
}

/// The answer to a URL request whose body or event is over Lambda's synchronous limit.
pub fn too_large() -> Response {
    url_error(
        StatusCode::PAYLOAD_TOO_LARGE,
        &format!(
            "Request must be smaller than {MAX_SYNC_PAYLOAD_BYTES} bytes for the InvokeFunction \
             operation"
        ),
    )
}

/// Reads a URL request's body under Lambda's synchronous payload limit.
pub async fn read_url_body(headers: &HeaderMap, body: Body) -> Result<Bytes, Response> {
    read_body(headers, body, MAX_SYNC_PAYLOAD_BYTES, "InvokeFunctionUrl")
        .await
        .map_err(|_| too_large())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domain() -> UrlDomain {
        UrlDomain {
            base: "localhost".into(),
            region: "us-east-1".into(),
            port: Some(9000),
        }
    }

    #[test]
    fn url_hosts_and_paths_are_recognised() {
        let id = "abcdefghijklmnopqrstuvwxyz012345";
        let d = domain();
        assert_eq!(
            d.url(id),
            format!("http://{id}.lambda-url.us-east-1.localhost:9000/")
        );
        assert_eq!(
            d.url_id_of_host(&format!("{id}.lambda-url.us-east-1.localhost:9000")),
            Some(id)
        );
        assert_eq!(
            d.url_id_of_host(&format!("{id}.lambda-url.us-east-1.localhost")),
            Some(id)
        );
        for other in [
            format!("{id}.lambda-url.eu-west-1.localhost"),
            format!("{id}.lambda-url.us-east-1.example.com"),
            "short.lambda-url.us-east-1.localhost".to_owned(),
            "127.0.0.1:9000".to_owned(),
            "s3.localhost".to_owned(),
        ] {
            assert_eq!(d.url_id_of_host(&other), None, "{other}");
        }
        assert_eq!(
            UrlDomain::url_id_of_path(&format!("/lambda-url/{id}/a/b")),
            Some((id, "/a/b"))
        );
        assert_eq!(
            UrlDomain::url_id_of_path(&format!("/lambda-url/{id}")),
            Some((id, "/"))
        );
        assert_eq!(UrlDomain::url_id_of_path("/lambda-url/x/a"), None);
    }
}
