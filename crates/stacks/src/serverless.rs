//! serverless.yml (the Serverless Framework's v3 format, `provider.name: aws`) compiled into a
//! SAM template, as the framework compiles it into CloudFormation: variables resolved
//! (`${self:…}`, `${opt:stage}`, `${sls:stage}`, `${env:…}`, fallbacks), one function per
//! entry named `{service}-{stage}-{function}` with the logical id `{Name}LambdaFunction`, the
//! events as SAM events, the service's role from `provider.iam.role.statements`, and
//! `resources` merged in.

use serde_json::{Map, Value, json};

use crate::StackError;

#[derive(Debug)]
pub struct Compiled {
    pub service: String,
    pub template: Value,
}

fn err(message: impl Into<String>) -> StackError {
    StackError::validation(message)
}

/// The framework's logical-id form of a name: `my-func_x` → `MyDashfuncUnderscorex`.
pub fn normalize(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        match c {
            '-' => out.push_str("Dash"),
            '_' => out.push_str("Underscore"),
            c if c.is_ascii_alphanumeric() => {
                if i == 0 {
                    out.push(c.to_ascii_uppercase())
                } else {
                    out.push(c)
                }
            }
            _ => {}
        }
    }
    out
}

const MAX_DEPTH: usize = 20;

struct Resolver<'a> {
    root: &'a Value,
    stage: &'a str,
    env: &'a dyn Fn(&str) -> Option<String>,
}

impl Resolver<'_> {
    fn value(&self, v: &Value, at: &str, depth: usize) -> Result<Value, StackError> {
        if depth > MAX_DEPTH {
            return Err(err(format!(
                "Variables nest too deeply (a cycle?) at {at}."
            )));
        }
        match v {
            Value::String(s) => self.string(s, at, depth),
            Value::Array(a) => a
                .iter()
                .enumerate()
                .map(|(i, x)| self.value(x, &format!("{at}.{i}"), depth))
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Array),
            Value::Object(m) => m
                .iter()
                .map(|(k, x)| Ok((k.clone(), self.value(x, &format!("{at}.{k}"), depth)?)))
                .collect::<Result<Map<_, _>, StackError>>()
                .map(Value::Object),
            other => Ok(other.clone()),
        }
    }

    fn string(&self, s: &str, at: &str, depth: usize) -> Result<Value, StackError> {
        // `${AWS::Region}` and `${Resource.Attr}` are Fn::Sub's, left for CloudFormation.
        let mut from = 0;
        let start = loop {
            let Some(found) = s[from..].find("${").map(|i| i + from) else {
                return Ok(Value::String(s.to_owned()));
            };
            let end = matching_brace(s, found)
                .ok_or_else(|| err(format!("An unclosed ${{ in {at}: {s}")))?;
            if is_framework_variable(&s[found + 2..end]) {
                break found;
            }
            from = end + 1;
        };
        let end =
            matching_brace(s, start).ok_or_else(|| err(format!("An unclosed ${{ in {at}: {s}")))?;
        let inner = &s[start + 2..end];
        let resolved = self.variable(inner, at, depth)?;
        if start == 0 && end == s.len() - 1 {
            return self.value(&resolved, at, depth + 1);
        }
        let text = match &resolved {
            Value::String(t) => t.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            _ => {
                return Err(err(format!(
                    "${{{inner}}} in {at} is not text and cannot be part of a string."
                )));
            }
        };
        let joined = format!("{}{}{}", &s[..start], text, &s[end + 1..]);
        self.string(&joined, at, depth + 1)
    }

    /// One `${…}`: alternatives separated by commas, the first that resolves wins.
    fn variable(&self, inner: &str, at: &str, depth: usize) -> Result<Value, StackError> {
        for alternative in split_alternatives(inner) {
            let alt = alternative.trim();
            if let Some(v) = self.one(alt, at, depth)? {
                return Ok(v);
            }
        }
        Err(err(format!(
            "The variable ${{{inner}}} in {at} has no value."
        )))
    }

    fn one(&self, alt: &str, at: &str, depth: usize) -> Result<Option<Value>, StackError> {
        if let Some(q) = alt
            .strip_prefix('\'')
            .and_then(|r| r.strip_suffix('\''))
            .or_else(|| alt.strip_prefix('"').and_then(|r| r.strip_suffix('"')))
        {
            return Ok(Some(Value::String(q.to_owned())));
        }
        if let Ok(n) = alt.parse::<i64>() {
            return Ok(Some(Value::from(n)));
        }
        if alt == "true" || alt == "false" {
            return Ok(Some(Value::Bool(alt == "true")));
        }
        let inner = if alt.contains("${") {
            match self.string(alt, at, depth + 1)? {
                Value::String(s) => s,
                other => return Ok(Some(other)),
            }
        } else {
            alt.to_owned()
        };
        let (source, path) = inner.split_once(':').ok_or_else(|| {
            err(format!(
                "${{{inner}}} in {at} names no source (self:, opt:, sls:, env:)."
            ))
        })?;
        match source {
            "self" => {
                let mut node = self.root;
                for part in path.split('.').filter(|p| !p.is_empty()) {
                    node = match node.get(part) {
                        Some(n) => n,
                        None => return Ok(None),
                    };
                }
                Ok(Some(self.value(node, at, depth + 1)?))
            }
            "opt" => Ok(match path {
                "stage" => Some(Value::String(self.stage.to_owned())),
                _ => None,
            }),
            "sls" => Ok(match path {
                "stage" => Some(Value::String(self.stage.to_owned())),
                "instanceId" => Some(Value::String("nimbus".to_owned())),
                _ => None,
            }),
            "env" => Ok((self.env)(path).map(Value::String)),
            "aws" => Ok(match path {
                "region" => Some(json!({"Ref": "AWS::Region"})),
                "accountId" => Some(json!({"Ref": "AWS::AccountId"})),
                _ => None,
            }),
            other => Err(err(format!(
                "The variable source {other}: in {at} is not supported (self, opt, sls, env and aws are)."
            ))),
        }
    }
}

/// Whether `${inner}` is the framework's (`source:path`, with fallbacks) rather than
/// CloudFormation's (`AWS::Region`, `Resource`, `Resource.Attr`).
fn is_framework_variable(inner: &str) -> bool {
    let first = split_alternatives(inner)
        .first()
        .map(|a| a.trim())
        .unwrap_or_default();
    match first.split_once(':') {
        Some((source, rest)) => {
            !source.is_empty()
                && !rest.starts_with(':')
                && source.chars().all(|c| c.is_ascii_alphanumeric())
        }
        None => first.starts_with("${"),
    }
}

fn matching_brace(s: &str, start: usize) -> Option<usize> {
    let bytes = s.as_bytes();
    let mut depth = 0;
    let mut i = start;
    while i < bytes.len() {
        if bytes[i] == b'$' && bytes.get(i + 1) == Some(&b'{') {
            depth += 1;
            i += 2;
            continue;
        }
        if bytes[i] == b'}' {
            depth -= 1;
            if depth == 0 {
                return Some(i);
            }
        }
        i += 1;
    }
    None
}

fn split_alternatives(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut quote, mut start) = (0i32, None::<u8>, 0);
    let bytes = s.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        match (quote, *b) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, b'\'' | b'"') => quote = Some(*b),
            (None, b'{') => depth += 1,
            (None, b'}') => depth -= 1,
            (None, b',') if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

/// Compiles a parsed serverless.yml for `stage`.
pub fn compile(
    raw: &Value,
    stage: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Compiled, StackError> {
    let resolver = Resolver {
        root: raw,
        stage,
        env,
    };
    let doc = resolver.value(raw, "serverless.yml", 0)?;
    let service = match doc.get("service") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Object(o)) => o
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        _ => String::new(),
    };
    if service.is_empty()
        || !service
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-')
        || !service
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic())
    {
        return Err(err(format!(
            "service {service:?} must start with a letter and hold only letters, digits and hyphens."
        )));
    }
    let provider = doc.get("provider").cloned().unwrap_or_default();
    if provider.get("name").and_then(Value::as_str) != Some("aws") {
        return Err(err("provider.name must be aws."));
    }
    const PROVIDER_KEYS: &[&str] = &[
        "name",
        "runtime",
        "memorySize",
        "timeout",
        "environment",
        "stage",
        "region",
        "iam",
        "httpApi",
        "tags",
        "architecture",
        "deploymentMethod",
        "versionFunctions",
        "logRetentionInDays",
        "stackTags",
        "apiGateway",
        "deploymentBucket",
        "profile",
        "tracing",
        "logs",
        "iamRoleStatements",
    ];
    if let Some(k) = provider
        .as_object()
        .and_then(|m| m.keys().find(|k| !PROVIDER_KEYS.contains(&k.as_str())))
    {
        return Err(err(format!("provider.{k} is not supported.")));
    }
    for key in doc.as_object().into_iter().flatten().map(|(k, _)| k) {
        if ![
            "service",
            "provider",
            "functions",
            "resources",
            "package",
            "plugins",
            "custom",
            "frameworkVersion",
            "configValidationMode",
            "useDotenv",
            "variablesResolutionMode",
            "params",
        ]
        .contains(&key.as_str())
        {
            return Err(err(format!("The top-level key {key} is not supported.")));
        }
    }
    if let Some(plugins) = doc.get("plugins").and_then(Value::as_array)
        && let Some(p) = plugins
            .iter()
            .filter_map(Value::as_str)
            .find(|p| !["serverless-offline", "serverless-python-requirements"].contains(p))
    {
        return Err(err(format!(
            "The plugin {p} is not supported (its work would not be done)."
        )));
    }
    let mut resources = Map::new();
    let mut globals = Map::new();
    for (from, to) in [
        ("runtime", "Runtime"),
        ("memorySize", "MemorySize"),
        ("timeout", "Timeout"),
    ] {
        if let Some(v) = provider.get(from) {
            globals.insert(to.into(), v.clone());
        }
    }
    if let Some(Value::Object(vars)) = provider.get("environment") {
        globals.insert("Environment".into(), json!({"Variables": stringify(vars)}));
    }
    if let Some(a) = provider.get("architecture").and_then(Value::as_str) {
        globals.insert("Architectures".into(), json!([a]));
    }
    let statements = provider
        .pointer("/iam/role/statements")
        .or_else(|| provider.get("iamRoleStatements"))
        .cloned();
    let mut role = json!({
        "Type": "AWS::IAM::Role",
        "Properties": {
            "AssumeRolePolicyDocument": {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Principal": {"Service": ["lambda.amazonaws.com"]}, "Action": ["sts:AssumeRole"]}],
            },
            "ManagedPolicyArns": ["arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"],
        },
    });
    if let Some(Value::Array(st)) = &statements {
        role["Properties"]["Policies"] = json!([{
            "PolicyName": format!("{service}-{stage}-lambda"),
            "PolicyDocument": {"Version": "2012-10-17", "Statement": st},
        }]);
    }
    let package_patterns = doc
        .pointer("/package/patterns")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let functions = doc
        .get("functions")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    if functions.is_empty() && doc.get("resources").is_none() {
        return Err(err(
            "serverless.yml declares no functions and no resources.",
        ));
    }
    let mut uses_http_api = false;
    let mut uses_rest_api = false;
    let mut needs_sqs_policy = false;
    let mut needs_stream_policy = false;
    for (key, f) in &functions {
        let at = format!("functions.{key}");
        const FUNCTION_KEYS: &[&str] = &[
            "handler",
            "runtime",
            "memorySize",
            "timeout",
            "environment",
            "events",
            "name",
            "description",
            "url",
            "package",
            "reservedConcurrency",
            "provisionedConcurrency",
            "architecture",
            "layers",
            "tags",
            "snapStart",
        ];
        if let Some(k) = f
            .as_object()
            .and_then(|m| m.keys().find(|k| !FUNCTION_KEYS.contains(&k.as_str())))
        {
            return Err(err(format!("{at}.{k} is not supported.")));
        }
        let handler = f
            .get("handler")
            .and_then(Value::as_str)
            .ok_or_else(|| err(format!("{at}.handler is required.")))?;
        let id = format!("{}LambdaFunction", normalize(key));
        let mut props = Map::new();
        props.insert("CodeUri".into(), json!("."));
        props.insert("Handler".into(), json!(handler));
        props.insert(
            "FunctionName".into(),
            f.get("name")
                .cloned()
                .unwrap_or_else(|| json!(format!("{service}-{stage}-{key}"))),
        );
        props.insert(
            "Role".into(),
            json!({"Fn::GetAtt": ["IamRoleLambdaExecution", "Arn"]}),
        );
        for (from, to) in [
            ("runtime", "Runtime"),
            ("memorySize", "MemorySize"),
            ("timeout", "Timeout"),
            ("description", "Description"),
            ("reservedConcurrency", "ReservedConcurrentExecutions"),
            ("layers", "Layers"),
            ("tags", "Tags"),
        ] {
            if let Some(v) = f.get(from) {
                props.insert(to.into(), v.clone());
            }
        }
        if f.get("snapStart") == Some(&Value::Bool(true)) {
            props.insert("SnapStart".into(), json!({"ApplyOn": "PublishedVersions"}));
        }
        if let Some(a) = f.get("architecture").and_then(Value::as_str) {
            props.insert("Architectures".into(), json!([a]));
        }
        if let Some(Value::Object(vars)) = f.get("environment") {
            props.insert("Environment".into(), json!({"Variables": stringify(vars)}));
        }
        let mut patterns = package_patterns.clone();
        if let Some(Value::Array(p)) = f.pointer("/package/patterns") {
            patterns.extend(p.iter().cloned());
        }
        if !patterns.is_empty() {
            props.insert("x-nimbus-patterns".into(), Value::Array(patterns));
        }
        if let Some(pc) = f.get("provisionedConcurrency") {
            props.insert("AutoPublishAlias".into(), json!("provisioned"));
            props.insert(
                "ProvisionedConcurrencyConfig".into(),
                json!({"ProvisionedConcurrentExecutions": pc}),
            );
        }
        match f.get("url") {
            None | Some(Value::Bool(false)) => {}
            Some(Value::Bool(true)) => {
                props.insert("FunctionUrlConfig".into(), json!({"AuthType": "NONE"}));
            }
            Some(Value::Object(u)) => {
                let auth = match u.get("authorizer").and_then(Value::as_str) {
                    Some("aws_iam") => "AWS_IAM",
                    None => "NONE",
                    Some(other) => {
                        return Err(err(format!(
                            "{at}.url.authorizer {other} is not supported (aws_iam is)."
                        )));
                    }
                };
                let mut cfg = json!({"AuthType": auth});
                match u.get("cors") {
                    Some(Value::Bool(true)) => {
                        cfg["Cors"] = json!({"AllowOrigins": ["*"], "AllowHeaders": ["*"], "AllowMethods": ["*"]})
                    }
                    Some(Value::Object(c)) => cfg["Cors"] = pascal(&Value::Object(c.clone())),
                    _ => {}
                }
                if u.get("invokeMode").and_then(Value::as_str) == Some("RESPONSE_STREAM") {
                    cfg["InvokeMode"] = json!("RESPONSE_STREAM");
                }
                props.insert("FunctionUrlConfig".into(), cfg);
            }
            Some(_) => return Err(err(format!("{at}.url must be true or a map."))),
        }
        let mut events = Map::new();
        for (i, e) in f
            .get("events")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let Some((kind, spec)) = e.as_object().and_then(|m| m.iter().next()) else {
                return Err(err(format!("{at}.events.{i} must name one event type.")));
            };
            let at = format!("{at}.events.{i}.{kind}");
            let name = format!("{}{}{}", normalize(kind), "Event", i);
            let event = match kind.as_str() {
                "httpApi" => {
                    uses_http_api = true;
                    let (method, path) = match spec {
                        Value::String(s) if s == "*" => (None, None),
                        Value::String(s) => {
                            let (m, p) = s.split_once(' ').ok_or_else(|| {
                                err(format!("{at} must be \"METHOD /path\" or *."))
                            })?;
                            (Some(m.to_owned()), Some(p.to_owned()))
                        }
                        Value::Object(o) => (
                            o.get("method").and_then(Value::as_str).map(str::to_owned),
                            o.get("path").and_then(Value::as_str).map(str::to_owned),
                        ),
                        _ => return Err(err(format!("{at} must be a route or a map."))),
                    };
                    let mut p = json!({"ApiId": {"Ref": "HttpApi"}});
                    if let (Some(m), Some(path)) = (&method, &path) {
                        p["Method"] = json!(if m == "*" { "ANY" } else { m.as_str() });
                        p["Path"] = json!(path);
                    }
                    if let Some(a) = spec.get("authorizer") {
                        let name = a
                            .get("name")
                            .or(Some(a))
                            .and_then(Value::as_str)
                            .ok_or_else(|| err(format!("{at}.authorizer needs a name.")))?;
                        p["Auth"] = json!({"Authorizer": name});
                    }
                    json!({"Type": "HttpApi", "Properties": p})
                }
                "http" => {
                    uses_rest_api = true;
                    let (method, path) = match spec {
                        Value::String(s) => {
                            let (m, p) = s
                                .split_once(' ')
                                .ok_or_else(|| err(format!("{at} must be \"METHOD path\".")))?;
                            (m.to_owned(), p.to_owned())
                        }
                        Value::Object(o) => (
                            o.get("method")
                                .and_then(Value::as_str)
                                .unwrap_or("get")
                                .to_owned(),
                            o.get("path")
                                .and_then(Value::as_str)
                                .unwrap_or("/")
                                .to_owned(),
                        ),
                        _ => return Err(err(format!("{at} must be a route or a map."))),
                    };
                    let path = if path.starts_with('/') {
                        path
                    } else {
                        format!("/{path}")
                    };
                    json!({"Type": "Api", "Properties": {"RestApiId": {"Ref": "ApiGatewayRestApi"}, "Method": if method == "*" { "ANY".to_owned() } else { method }, "Path": path}})
                }
                "schedule" => {
                    let (rate, enabled, input) = match spec {
                        Value::String(s) => (json!(s), true, None),
                        Value::Object(o) => (
                            match o.get("rate") {
                                Some(Value::Array(a)) if a.len() == 1 => a[0].clone(),
                                Some(Value::Array(_)) => {
                                    return Err(err(format!(
                                        "{at}.rate: one schedule per event is supported."
                                    )));
                                }
                                Some(r) => r.clone(),
                                None => return Err(err(format!("{at}.rate is required."))),
                            },
                            o.get("enabled") != Some(&Value::Bool(false)),
                            o.get("input").cloned(),
                        ),
                        _ => return Err(err(format!("{at} must be a rate or a map."))),
                    };
                    let mut p = json!({"Schedule": rate, "Enabled": enabled});
                    if let Some(input) = input {
                        p["Input"] = json!(match input {
                            Value::String(s) => s,
                            other => other.to_string(),
                        });
                    }
                    json!({"Type": "Schedule", "Properties": p})
                }
                "sqs" => {
                    needs_sqs_policy = true;
                    let (arn, extra) = match spec {
                        Value::Object(o) if o.contains_key("arn") => (o["arn"].clone(), o.clone()),
                        other => (other.clone(), Map::new()),
                    };
                    let mut p = json!({"Queue": arn});
                    if let Some(b) = extra.get("batchSize") {
                        p["BatchSize"] = b.clone();
                    }
                    if let Some(w) = extra.get("maximumBatchingWindow") {
                        p["MaximumBatchingWindowInSeconds"] = w.clone();
                    }
                    if extra.get("functionResponseType").and_then(Value::as_str)
                        == Some("ReportBatchItemFailures")
                    {
                        p["FunctionResponseTypes"] = json!(["ReportBatchItemFailures"]);
                    }
                    if extra.get("enabled") == Some(&Value::Bool(false)) {
                        p["Enabled"] = json!(false);
                    }
                    json!({"Type": "SQS", "Properties": p})
                }
                "stream" => {
                    needs_stream_policy = true;
                    let (arn, extra) = match spec {
                        Value::Object(o) if o.contains_key("arn") => (o["arn"].clone(), o.clone()),
                        other => (other.clone(), Map::new()),
                    };
                    if extra
                        .get("type")
                        .and_then(Value::as_str)
                        .is_some_and(|t| t != "dynamodb")
                    {
                        return Err(err(format!(
                            "{at}.type: only dynamodb streams are supported."
                        )));
                    }
                    let mut p = json!({"Stream": arn, "StartingPosition": extra.get("startingPosition").cloned().unwrap_or(json!("TRIM_HORIZON"))});
                    for (from, to) in [
                        ("batchSize", "BatchSize"),
                        ("maximumRetryAttempts", "MaximumRetryAttempts"),
                        ("bisectBatchOnFunctionError", "BisectBatchOnFunctionError"),
                        ("maximumBatchingWindow", "MaximumBatchingWindowInSeconds"),
                    ] {
                        if let Some(v) = extra.get(from) {
                            p[to] = v.clone();
                        }
                    }
                    if extra.get("functionResponseType").and_then(Value::as_str)
                        == Some("ReportBatchItemFailures")
                    {
                        p["FunctionResponseTypes"] = json!(["ReportBatchItemFailures"]);
                    }
                    json!({"Type": "DynamoDB", "Properties": p})
                }
                "s3" => {
                    let (bucket, extra) = match spec {
                        Value::String(s) => (s.clone(), Map::new()),
                        Value::Object(o) => (
                            o.get("bucket")
                                .and_then(Value::as_str)
                                .ok_or_else(|| err(format!("{at}.bucket is required.")))?
                                .to_owned(),
                            o.clone(),
                        ),
                        _ => return Err(err(format!("{at} must be a bucket name or a map."))),
                    };
                    if extra.get("existing") == Some(&Value::Bool(true)) {
                        return Err(err(format!(
                            "{at}.existing: events of buckets made outside the service are not supported."
                        )));
                    }
                    let bucket_id = format!("S3Bucket{}", normalize(&bucket));
                    resources.entry(bucket_id.clone()).or_insert_with(
                        || json!({"Type": "AWS::S3::Bucket", "Properties": {"BucketName": bucket}}),
                    );
                    let mut p = json!({"Bucket": {"Ref": bucket_id}, "Events": extra.get("event").cloned().unwrap_or(json!("s3:ObjectCreated:*"))});
                    let rules: Vec<Value> = extra
                        .get("rules")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .filter_map(|r| {
                            r.as_object()?
                                .iter()
                                .next()
                                .map(|(k, v)| json!({"Name": k, "Value": v}))
                        })
                        .collect();
                    if !rules.is_empty() {
                        p["Filter"] = json!({"S3Key": {"Rules": rules}});
                    }
                    json!({"Type": "S3", "Properties": p})
                }
                other => {
                    return Err(err(format!(
                        "{at}: the event type {other} is not supported (httpApi, http, schedule, sqs, s3 and stream are)."
                    )));
                }
            };
            events.insert(name, event);
        }
        if !events.is_empty() {
            props.insert("Events".into(), Value::Object(events));
        }
        resources.insert(
            id,
            json!({"Type": "AWS::Serverless::Function", "Properties": props}),
        );
    }
    if needs_sqs_policy {
        push_managed(
            &mut role,
            "arn:aws:iam::aws:policy/service-role/AWSLambdaSQSQueueExecutionRole",
        );
    }
    if needs_stream_policy {
        push_managed(
            &mut role,
            "arn:aws:iam::aws:policy/service-role/AWSLambdaDynamoDBExecutionRole",
        );
    }
    if !functions.is_empty() {
        resources.insert("IamRoleLambdaExecution".into(), role);
    }
    if uses_http_api {
        let http = provider.get("httpApi").cloned().unwrap_or_default();
        let mut p = json!({"Name": format!("{stage}-{service}")});
        match http.get("cors") {
            Some(Value::Bool(true)) => p["CorsConfiguration"] = json!(true),
            Some(Value::Object(c)) => p["CorsConfiguration"] = pascal(&Value::Object(c.clone())),
            _ => {}
        }
        if let Some(Value::Object(authorizers)) = http.get("authorizers") {
            let mut auth = Map::new();
            for (name, a) in authorizers {
                if a.get("type")
                    .and_then(Value::as_str)
                    .is_some_and(|t| t != "jwt")
                {
                    return Err(err(format!(
                        "provider.httpApi.authorizers.{name}: only jwt authorizers are supported."
                    )));
                }
                auth.insert(name.clone(), json!({
                    "IdentitySource": a.get("identitySource").cloned().unwrap_or(json!("$request.header.Authorization")),
                    "JwtConfiguration": {"issuer": a.get("issuerUrl").cloned().unwrap_or_default(), "audience": a.get("audience").cloned().unwrap_or(json!([]))},
                }));
            }
            p["Auth"] = json!({"Authorizers": auth});
        }
        resources.insert(
            "HttpApi".into(),
            json!({"Type": "AWS::Serverless::HttpApi", "Properties": p}),
        );
    }
    if uses_rest_api {
        resources.insert("ApiGatewayRestApi".into(), json!({"Type": "AWS::Serverless::Api", "Properties": {"Name": format!("{stage}-{service}"), "StageName": stage}}));
    }
    let mut outputs = Map::new();
    if let Some(extra) = doc.get("resources") {
        for (k, v) in extra
            .get("Resources")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            if resources.contains_key(k) {
                // The framework merges a resource of the same id into its own.
                if let (Some(Value::Object(mine)), Some(Value::Object(theirs))) = (
                    resources.get_mut(k).and_then(|r| r.get_mut("Properties")),
                    v.get("Properties"),
                ) {
                    for (pk, pv) in theirs {
                        mine.insert(pk.clone(), pv.clone());
                    }
                }
                continue;
            }
            resources.insert(k.clone(), v.clone());
        }
        for (k, v) in extra
            .get("Outputs")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            outputs.insert(k.clone(), v.clone());
        }
        if let Some(k) = extra.as_object().and_then(|m| {
            m.keys().find(|k| {
                ![
                    "Resources",
                    "Outputs",
                    "Conditions",
                    "Mappings",
                    "Parameters",
                    "Description",
                ]
                .contains(&k.as_str())
            })
        }) {
            return Err(err(format!("resources.{k} is not supported.")));
        }
    }
    let mut template = json!({
        "AWSTemplateFormatVersion": "2010-09-09",
        "Transform": crate::template::SAM_TRANSFORM,
        "Description": format!("The {service} service, stage {stage}"),
        "Resources": resources,
    });
    if !globals.is_empty() {
        template["Globals"] = json!({"Function": globals});
    }
    if !outputs.is_empty() {
        template["Outputs"] = Value::Object(outputs);
    }
    for section in ["Conditions", "Mappings", "Parameters"] {
        if let Some(v) = doc.get("resources").and_then(|r| r.get(section)) {
            template[section] = v.clone();
        }
    }
    Ok(Compiled { service, template })
}

fn push_managed(role: &mut Value, arn: &str) {
    if let Some(Value::Array(list)) = role.pointer_mut("/Properties/ManagedPolicyArns") {
        list.push(json!(arn));
    }
}

/// Environment values as text (the framework passes numbers and booleans as strings).
fn stringify(vars: &Map<String, Value>) -> Value {
    Value::Object(
        vars.iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    match v {
                        Value::Number(n) => json!(n.to_string()),
                        Value::Bool(b) => json!(b.to_string()),
                        other => other.clone(),
                    },
                )
            })
            .collect(),
    )
}

/// The framework's camelCase keys as CloudFormation's PascalCase.
fn pascal(v: &Value) -> Value {
    crate::recase(v, true, &[])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile_text(text: &str, stage: &str) -> Result<Compiled, StackError> {
        let raw = crate::yaml::parse(text)?;
        compile(&raw, stage, &|n| {
            (n == "GREETING").then(|| "hello".to_owned())
        })
    }

    #[test]
    fn cloudformation_substitutions_are_left_alone() {
        let c = compile_text(
            "service: a\nprovider: {name: aws, runtime: python3.11}\nfunctions:\n  f:\n    handler: x.y\n    environment:\n      QUEUE: !Sub '${AWS::Region}-${Jobs.Arn}-${sls:stage}'\nresources:\n  Resources:\n    Jobs:\n      Type: AWS::SQS::Queue\n",
            "dev",
        )
        .unwrap();
        let f = &c.template["Resources"]["FLambdaFunction"]["Properties"];
        assert_eq!(
            f["Environment"]["Variables"]["QUEUE"],
            json!({"Fn::Sub": "${AWS::Region}-${Jobs.Arn}-dev"})
        );
        assert_eq!(
            c.template["Resources"]["Jobs"]["Type"],
            json!("AWS::SQS::Queue")
        );
    }

    #[test]
    fn variables_resolve_with_fallbacks() {
        let c = compile_text(
            "service: shop\nprovider:\n  name: aws\n  runtime: python3.11\n  stage: ${opt:stage, 'dev'}\n  environment:\n    STAGE: ${sls:stage}\n    TABLE: ${self:service}-${sls:stage}-orders\n    GREETING: ${env:GREETING}\n    MISSING: ${env:NOPE, 'fallback'}\n    SIZE: ${self:custom.size}\ncustom:\n  size: 3\nfunctions:\n  hello:\n    handler: app.handler\n    events:\n      - httpApi: GET /hello\n      - schedule: rate(1 minute)\n",
            "prod",
        )
        .unwrap();
        let t = &c.template;
        assert_eq!(c.service, "shop");
        assert_eq!(
            t["Globals"]["Function"]["Environment"]["Variables"],
            json!({"STAGE": "prod", "TABLE": "shop-prod-orders", "GREETING": "hello", "MISSING": "fallback", "SIZE": "3"})
        );
        let f = &t["Resources"]["HelloLambdaFunction"]["Properties"];
        assert_eq!(f["FunctionName"], json!("shop-prod-hello"));
        assert_eq!(
            f["Events"]["HttpApiEvent0"]["Properties"]["Path"],
            json!("/hello")
        );
        assert_eq!(
            f["Events"]["ScheduleEvent1"]["Properties"]["Schedule"],
            json!("rate(1 minute)")
        );
        assert!(t["Resources"].get("HttpApi").is_some());
    }

    #[test]
    fn unsupported_parts_are_named() {
        let e = compile_text("service: a\nprovider: {name: aws}\nfunctions:\n  f:\n    handler: x.y\n    events:\n      - sns: topic\n", "dev").unwrap_err();
        assert!(
            e.message.contains("functions.f.events.0.sns") && e.message.contains("sns"),
            "{}",
            e.message
        );
        let e = compile_text("service: a\nprovider: {name: google}\n", "dev").unwrap_err();
        assert!(e.message.contains("provider.name"));
        let e = compile_text(
            "service: a\nprovider: {name: aws}\nfunctions:\n  f:\n    handler: ${ssm:/x}\n",
            "dev",
        )
        .unwrap_err();
        assert!(e.message.contains("ssm"), "{}", e.message);
        let e = compile_text("service: a\nprovider: {name: aws}\nfunctions:\n  f:\n    handler: ${self:custom.none}\n", "dev").unwrap_err();
        assert!(e.message.contains("no value"), "{}", e.message);
        assert_eq!(normalize("my-func_x"), "MyDashfuncUnderscorex");
    }
}
