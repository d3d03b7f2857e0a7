//! Resource providers: each resource type made, changed and deleted through the node's own
//! APIs, called in-process as the stack's caller, so a stack can do only what its caller
//! could do by hand, and every property is validated where the API validates it.

mod lambda;
mod services;
mod shift;

use std::collections::BTreeMap;

use axum::body::Body;
use axum::http::{Method, Request};
use nimbus_identity::{Caller, InProcess};
use serde_json::{Map, Value};

use crate::intrinsic::Made;

pub use nimbus_aws_wire::dispatch::Dispatch;

/// How an alias with a `DeploymentPreference` moves to a new version: the invocations of the
/// new version are watched while it gets its share, and the alias goes back to the old
/// version when too many of them fail.
#[derive(Clone)]
pub struct Shifts {
    /// Where the new version's invocations are counted.
    pub telemetry: Option<std::sync::Arc<dyn nimbus_store::TelemetryStore>>,
    /// The share of the new version's invocations that may fail (0 to 1) before the shift
    /// is rolled back.
    pub max_error_rate: f64,
    /// How many times faster than the preference's minutes a shift runs (1: as written).
    pub speed: f64,
}

impl Default for Shifts {
    fn default() -> Self {
        Self {
            telemetry: None,
            max_error_rate: 0.1,
            speed: 1.0,
        }
    }
}

/// Why a provider failed, in the words of the API that refused.
#[derive(Debug, Clone)]
pub struct ProviderError {
    pub message: String,
    /// The resource is gone already (a delete of it succeeds).
    pub not_found: bool,
}

impl ProviderError {
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            not_found: false,
        }
    }
}

pub type Result<T, E = ProviderError> = std::result::Result<T, E>;

/// What a provider works with.
pub struct Ctx<'a> {
    pub dispatch: &'a dyn Dispatch,
    pub caller: &'a Caller,
    pub region: &'a str,
    /// The node's `host:port`.
    pub host: &'a str,
    /// How aliases shift traffic to a new version.
    pub shifts: &'a Shifts,
    /// The stack's name, for names made up for unnamed resources.
    pub stack_name: &'a str,
}

/// An answer from an API.
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Ctx<'_> {
    pub fn account(&self) -> &str {
        &self.caller.account
    }

    async fn send(
        &self,
        method: Method,
        uri: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<Reply> {
        let mut builder = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        let has_host = headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host"));
        if !has_host {
            builder = builder.header("host", self.host);
        }
        let mut request = builder
            .header("content-length", body.len().to_string())
            .body(Body::from(body))
            .map_err(|e| ProviderError::new(format!("bad request: {e}")))?;
        request
            .extensions_mut()
            .insert(InProcess(self.caller.clone()));
        let response = self.dispatch.call(request).await;
        let status = response.status().as_u16();
        let error_type = response
            .headers()
            .get("x-amzn-errortype")
            .and_then(|v| v.to_str().ok())
            .map(|s| s.split(':').next().unwrap_or(s).to_owned());
        let bytes = axum::body::to_bytes(response.into_body(), 64 << 20)
            .await
            .map_err(|e| ProviderError::new(format!("reading an answer: {e}")))?;
        if (200..300).contains(&status) {
            return Ok(Reply {
                status,
                body: bytes.to_vec(),
            });
        }
        Err(error_of(status, error_type, &bytes))
    }

    /// A REST-JSON call (Lambda, API Gateway).
    pub async fn rest(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Value> {
        let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        let reply = self
            .send(method, path, &[("content-type", "application/json")], bytes)
            .await?;
        Ok(parse_json(&reply.body))
    }

    /// A JSON-protocol call by `X-Amz-Target` (SQS, DynamoDB, EventBridge, Cognito).
    pub async fn target(&self, target: &str, body: &Value) -> Result<Value> {
        let [(_, content_type)] =
            nimbus_aws_wire::target::JsonVersion::of_target(target).content_type();
        let reply = self
            .send(
                Method::POST,
                "/",
                &[("x-amz-target", target), ("content-type", content_type)],
                body.to_string().into_bytes(),
            )
            .await?;
        Ok(parse_json(&reply.body))
    }

    /// A Query-protocol call (IAM); the answer's XML.
    pub async fn query(&self, action: &str, params: &[(&str, String)]) -> Result<String> {
        let body = {
            let mut form = form_urlencoded::Serializer::new(String::new());
            form.append_pair("Action", action);
            form.append_pair("Version", "2010-05-08");
            for (k, v) in params {
                form.append_pair(k, v);
            }
            form.finish()
        };
        let reply = self
            .send(
                Method::POST,
                "/",
                &[(
                    "content-type",
                    "application/x-www-form-urlencoded; charset=utf-8",
                )],
                body.into_bytes(),
            )
            .await?;
        Ok(String::from_utf8_lossy(&reply.body).into_owned())
    }

    /// An S3 call, path-style.
    pub async fn s3(&self, method: Method, path: &str, body: Vec<u8>) -> Result<Reply> {
        self.send(method, path, &[("host", "s3.localhost")], body)
            .await
    }

    /// A name for an unnamed resource, as CloudFormation makes them:
    /// `{stack}-{logical id}-{random}`, within `max` characters.
    pub fn made_name(&self, logical_id: &str, max: usize, lowercase: bool) -> String {
        made_name(self.stack_name, logical_id, max, lowercase)
    }
}

pub fn made_name(stack: &str, logical_id: &str, max: usize, lowercase: bool) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut raw = [0u8; 12];
    getrandom::fill(&mut raw).expect("the OS has randomness");
    let suffix: String = raw
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect();
    let room = max.saturating_sub(suffix.len() + 2);
    let stack_part: String = stack.chars().take(room / 2).collect();
    let id_part: String = logical_id.chars().take(room - stack_part.len()).collect();
    let name = format!("{stack_part}-{id_part}-{suffix}");
    if lowercase {
        name.to_ascii_lowercase()
    } else {
        name
    }
}

fn parse_json(body: &[u8]) -> Value {
    if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(body).unwrap_or(Value::Null)
    }
}

/// The error of a refused call: JSON (`__type`, `message`) or XML (`<Code>`, `<Message>`).
fn error_of(status: u16, header_type: Option<String>, body: &[u8]) -> ProviderError {
    let text = String::from_utf8_lossy(body);
    let (code, message) = if let Ok(v) = serde_json::from_slice::<Value>(body) {
        let code = header_type
            .or_else(|| {
                v.get("__type")
                    .and_then(Value::as_str)
                    .map(|t| t.rsplit('#').next().unwrap_or(t).to_owned())
            })
            .unwrap_or_default();
        let message = v
            .get("message")
            .or_else(|| v.get("Message"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        (code, message)
    } else {
        (
            xml_text(&text, "Code").unwrap_or_default(),
            xml_text(&text, "Message").unwrap_or_default(),
        )
    };
    let not_found = status == 404
        || code.contains("NotFound")
        || code == "NoSuchEntity"
        || code == "NoSuchBucket"
        || code.contains("NonExistent");
    let message = match (code.is_empty(), message.is_empty()) {
        (true, true) => format!("HTTP {status}"),
        (false, true) => code,
        (true, false) => message,
        (false, false) => format!("{code}: {message}"),
    };
    ProviderError { message, not_found }
}

/// The text of the first `<tag>` element (unescaped).
pub fn xml_text(xml: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&close)? + start;
    Some(
        xml[start..end]
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&amp;", "&"),
    )
}

/// The resource types this node can make.
pub const TYPES: &[&str] = &[
    "AWS::Lambda::Function",
    "AWS::Lambda::Version",
    "AWS::Lambda::Alias",
    "AWS::Lambda::Permission",
    "AWS::Lambda::Url",
    "AWS::Lambda::EventSourceMapping",
    "AWS::Lambda::LayerVersion",
    "AWS::SQS::Queue",
    "AWS::DynamoDB::Table",
    "AWS::IAM::Role",
    "AWS::Events::Rule",
    "AWS::ApiGatewayV2::Api",
    "AWS::ApiGatewayV2::Stage",
    "AWS::ApiGatewayV2::Route",
    "AWS::ApiGatewayV2::Integration",
    "AWS::ApiGatewayV2::Authorizer",
    "AWS::S3::Bucket",
    "AWS::Cognito::UserPool",
    "AWS::Cognito::UserPoolClient",
];

/// The properties a type takes; another is refused before anything is made.
pub fn properties_of(kind: &str) -> &'static [&'static str] {
    match kind {
        "AWS::Lambda::Function" => lambda::FUNCTION_PROPERTIES,
        "AWS::Lambda::Version" => &[
            "FunctionName",
            "Description",
            "CodeSha256",
            "ProvisionedConcurrencyConfig",
        ],
        "AWS::Lambda::Alias" => &[
            "FunctionName",
            "FunctionVersion",
            "Name",
            "Description",
            "RoutingConfig",
            "ProvisionedConcurrencyConfig",
            "DeploymentPreference",
        ],
        "AWS::Lambda::Permission" => &[
            "Action",
            "FunctionName",
            "Principal",
            "SourceArn",
            "SourceAccount",
            "FunctionUrlAuthType",
            "EventSourceToken",
            "PrincipalOrgID",
        ],
        "AWS::Lambda::Url" => &[
            "TargetFunctionArn",
            "Qualifier",
            "AuthType",
            "Cors",
            "InvokeMode",
        ],
        "AWS::Lambda::EventSourceMapping" => lambda::ESM_PROPERTIES,
        "AWS::Lambda::LayerVersion" => &[
            "LayerName",
            "Content",
            "Description",
            "CompatibleRuntimes",
            "CompatibleArchitectures",
            "LicenseInfo",
        ],
        other => services::properties_of(other),
    }
}

/// The attributes `Fn::GetAtt` may ask a type for.
pub fn attributes_of(kind: &str) -> &'static [&'static str] {
    match kind {
        "AWS::Lambda::Function" => &["Arn", "SnapStartResponse"],
        "AWS::Lambda::Version" => &["Version", "FunctionArn"],
        "AWS::Lambda::Alias" => &["AliasArn"],
        "AWS::Lambda::Url" => &["FunctionUrl", "FunctionArn"],
        "AWS::Lambda::EventSourceMapping" => &["Id", "EventSourceMappingArn"],
        "AWS::Lambda::LayerVersion" => &["LayerVersionArn"],
        "AWS::Lambda::Permission" => &[],
        other => services::attributes_of(other),
    }
}

/// Whether changing from `old` to `new` properties needs a new resource.
pub fn replaces(kind: &str, old: &Value, new: &Value) -> bool {
    let changed = |keys: &[&str]| keys.iter().any(|k| old.get(*k) != new.get(*k));
    match kind {
        "AWS::Lambda::Function" => changed(&["FunctionName", "PackageType"]),
        "AWS::Lambda::Version" | "AWS::Lambda::Permission" => old != new,
        "AWS::Lambda::Alias" => changed(&["FunctionName", "Name"]),
        "AWS::Lambda::Url" => changed(&["TargetFunctionArn", "Qualifier"]),
        "AWS::Lambda::EventSourceMapping" => changed(&[
            "EventSourceArn",
            "StartingPosition",
            "StartingPositionTimestamp",
        ]),
        "AWS::SQS::Queue" => changed(&["QueueName", "FifoQueue"]),
        "AWS::DynamoDB::Table" => changed(&["TableName", "KeySchema", "LocalSecondaryIndexes"]),
        "AWS::IAM::Role" => changed(&["RoleName", "Path"]),
        "AWS::Events::Rule" => changed(&["Name", "EventBusName"]),
        "AWS::ApiGatewayV2::Api" => changed(&["ProtocolType"]),
        "AWS::ApiGatewayV2::Stage" => changed(&["ApiId", "StageName"]),
        "AWS::ApiGatewayV2::Route"
        | "AWS::ApiGatewayV2::Integration"
        | "AWS::ApiGatewayV2::Authorizer" => changed(&["ApiId"]),
        "AWS::S3::Bucket" => changed(&["BucketName"]),
        "AWS::Cognito::UserPool" => changed(&[
            "UserPoolName",
            "UsernameAttributes",
            "AliasAttributes",
            "Schema",
        ]),
        "AWS::Cognito::UserPoolClient" => changed(&["UserPoolId", "GenerateSecret"]),
        _ => true,
    }
}

/// The property holding a type's own name, when a template may set it (a replacement of a
/// resource named by the template cannot make the new one beside the old).
pub fn name_property(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "AWS::Lambda::Function" => "FunctionName",
        "AWS::SQS::Queue" => "QueueName",
        "AWS::DynamoDB::Table" => "TableName",
        "AWS::IAM::Role" => "RoleName",
        "AWS::Events::Rule" => "Name",
        "AWS::S3::Bucket" => "BucketName",
        "AWS::Lambda::Alias" => "Name",
        _ => return None,
    })
}

/// Makes a resource. `name` is the name to give it when its properties name none.
pub async fn create(ctx: &Ctx<'_>, kind: &str, name: &str, props: &Value) -> Result<Made> {
    match kind {
        k if k.starts_with("AWS::Lambda::") => lambda::create(ctx, kind, name, props).await,
        _ => services::create(ctx, kind, name, props).await,
    }
}

/// Changes a resource in place.
pub async fn update(
    ctx: &Ctx<'_>,
    kind: &str,
    made: &Made,
    old: &Value,
    new: &Value,
) -> Result<Made> {
    match kind {
        k if k.starts_with("AWS::Lambda::") => lambda::update(ctx, kind, made, old, new).await,
        _ => services::update(ctx, kind, made, old, new).await,
    }
}

/// Deletes a resource; one already gone counts as deleted.
pub async fn delete(ctx: &Ctx<'_>, kind: &str, made: &Made, props: &Value) -> Result<()> {
    let result = match kind {
        k if k.starts_with("AWS::Lambda::") => lambda::delete(ctx, kind, made, props).await,
        _ => services::delete(ctx, kind, made, props).await,
    };
    match result {
        Err(e) if e.not_found => Ok(()),
        other => other,
    }
}

/// A string property.
pub(crate) fn text(props: &Value, key: &str) -> Option<String> {
    match props.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

pub(crate) fn required(props: &Value, key: &str) -> Result<String> {
    text(props, key).ok_or_else(|| {
        ProviderError::new(format!("Property {key} is required and must be a string."))
    })
}

/// A number property (templates often write numbers as strings).
pub(crate) fn number(props: &Value, key: &str) -> Result<Option<i64>> {
    match props.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .map(Some)
            .ok_or_else(|| ProviderError::new(format!("Property {key} must be an integer."))),
        Some(Value::String(s)) => s.trim().parse().map(Some).map_err(|_| {
            ProviderError::new(format!("Property {key} must be an integer, not {s}."))
        }),
        Some(_) => Err(ProviderError::new(format!(
            "Property {key} must be an integer."
        ))),
    }
}

pub(crate) fn boolean(props: &Value, key: &str) -> Result<Option<bool>> {
    match props.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(Some(true)),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(Some(false)),
        Some(_) => Err(ProviderError::new(format!(
            "Property {key} must be true or false."
        ))),
    }
}

/// Tags given as CloudFormation's list (`[{Key, Value}]`) or as a map.
pub(crate) fn tags(props: &Value, key: &str) -> Result<BTreeMap<String, String>> {
    match props.get(key) {
        None | Some(Value::Null) => Ok(BTreeMap::new()),
        Some(Value::Object(m)) => Ok(m
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), crate::intrinsic::scalar_text(v)?)))
            .collect()),
        Some(Value::Array(a)) => a
            .iter()
            .map(|t| Some((text(t, "Key")?, text(t, "Value")?)))
            .collect::<Option<BTreeMap<_, _>>>()
            .ok_or_else(|| {
                ProviderError::new(format!("Property {key} must list {{Key, Value}} pairs."))
            }),
        Some(_) => Err(ProviderError::new(format!(
            "Property {key} must be a list of tags."
        ))),
    }
}

/// A copy of `props` with only `keys`, for calls whose input shares the template's names.
pub(crate) fn pick(props: &Value, keys: &[&str]) -> Map<String, Value> {
    keys.iter()
        .filter_map(|k| {
            props
                .get(*k)
                .filter(|v| !v.is_null())
                .map(|v| ((*k).to_owned(), v.clone()))
        })
        .collect()
}

/// Encodes one path segment.
pub(crate) fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b':' => {
                out.push(b as char)
            }
            other => out.push_str(&format!("%{other:02X}")),
        }
    }
    out
}

pub(crate) fn made(reference: impl Into<String>, attributes: &[(&str, Value)]) -> Made {
    Made {
        reference: reference.into(),
        attributes: attributes
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect(),
    }
}
