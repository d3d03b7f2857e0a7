//! The `AWS::Serverless-2016-10-31` transform: SAM's resource types expanded into the plain
//! CloudFormation resources they stand for, with the logical ids SAM gives them
//! (`{Function}Role`, `ServerlessRestApi`, `ServerlessHttpApi`, `{Function}{Event}Permission`,
//! …), so that templates and their outputs that name those ids work unchanged.
//!
//! REST APIs (`Api` events, `AWS::Serverless::Api`) are served by this node's HTTP APIs with
//! the 1.0 payload, which is the REST proxy event's shape, under a stage that prefixes paths as
//! a REST API's stage does.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::StackError;

const FUNCTION_PROPERTIES: &[&str] = &[
    "CodeUri",
    "InlineCode",
    "Handler",
    "Runtime",
    "MemorySize",
    "Timeout",
    "Environment",
    "Role",
    "Policies",
    "Events",
    "FunctionUrlConfig",
    "AutoPublishAlias",
    "ProvisionedConcurrencyConfig",
    "SnapStart",
    "Layers",
    "Description",
    "FunctionName",
    "Tags",
    "Architectures",
    "EphemeralStorage",
    "ReservedConcurrentExecutions",
    "PackageType",
    "Tracing",
    "DeploymentPreference",
    "AutoPublishCodeSha256",
    "AutoPublishAliasAllProperties",
    "VersionDescription",
    "LoggingConfig",
];

fn err(message: String) -> StackError {
    StackError::validation(message)
}

/// Expands a SAM template in place.
pub fn transform(raw: &mut Map<String, Value>) -> Result<(), StackError> {
    let globals = match raw.remove("Globals") {
        None => Map::new(),
        Some(Value::Object(g)) => g,
        Some(_) => return Err(err("Globals must be a map.".into())),
    };
    for key in globals.keys() {
        if !["Function", "Api", "HttpApi", "SimpleTable"].contains(&key.as_str()) {
            return Err(err(format!(
                "Globals section {key} is not supported (Function, Api, HttpApi and SimpleTable are)."
            )));
        }
    }
    raw.remove("Transform");
    let resources = match raw.get("Resources") {
        Some(Value::Object(r)) => r.clone(),
        _ => return Ok(()),
    };
    let mut out = Sam {
        resources: Map::new(),
        globals,
        implicit_rest: Vec::new(),
        implicit_http: Vec::new(),
        explicit: Vec::new(),
        declared: resources.clone(),
    };
    // Plain resources pass through; serverless ones are expanded.
    for (id, r) in &resources {
        let kind = r.get("Type").and_then(Value::as_str).unwrap_or_default();
        if !kind.starts_with("AWS::Serverless::") {
            out.resources.insert(id.clone(), r.clone());
        }
    }
    for (id, r) in &resources {
        let kind = r.get("Type").and_then(Value::as_str).unwrap_or_default();
        let props = r.get("Properties").cloned().unwrap_or_else(|| json!({}));
        let mut base = r.as_object().cloned().unwrap_or_default();
        base.remove("Properties");
        base.remove("Type");
        match kind {
            "AWS::Serverless::Function" => out.function(id, &props, &base)?,
            "AWS::Serverless::HttpApi" => out.http_api(id, &props, &base)?,
            "AWS::Serverless::Api" => out.rest_api(id, &props, &base)?,
            "AWS::Serverless::SimpleTable" => out.simple_table(id, &props, &base)?,
            "AWS::Serverless::LayerVersion" => out.layer_version(id, &props, &base)?,
            k if k.starts_with("AWS::Serverless::") => {
                return Err(err(format!(
                    "Resource {id}: type {k} is not supported by this node."
                )));
            }
            _ => {}
        }
    }
    out.routes()?;
    raw.insert("Resources".into(), Value::Object(out.resources));
    Ok(())
}

struct Sam {
    resources: Map<String, Value>,
    globals: Map<String, Value>,
    /// Routes on the implicit REST API and HTTP API.
    implicit_rest: Vec<Route>,
    implicit_http: Vec<Route>,
    /// Routes on APIs the template declares, with their function's `Condition` and the like:
    /// made once every API is, so that their authorizers exist.
    explicit: Vec<(String, Route, Map<String, Value>)>,
    declared: Map<String, Value>,
}

struct Route {
    function: String,
    event: String,
    route_key: String,
    target: Value,
    authorizer: Option<String>,
    payload: &'static str,
}

/// Globals under the resource's own properties: maps merge (the resource's keys win), the
/// resource's other values replace the global ones.
fn with_globals(global: Option<&Value>, local: &Value) -> Value {
    match (global, local) {
        (Some(Value::Object(g)), Value::Object(l)) => {
            let mut out = g.clone();
            for (k, v) in l {
                let merged = match (out.get(k), v) {
                    (Some(gv @ Value::Object(_)), Value::Object(_)) if !is_intrinsic(v) => {
                        with_globals(Some(gv), v)
                    }
                    _ => v.clone(),
                };
                out.insert(k.clone(), merged);
            }
            Value::Object(out)
        }
        _ => local.clone(),
    }
}

fn is_intrinsic(v: &Value) -> bool {
    v.as_object().is_some_and(|m| {
        m.len() == 1
            && m.keys()
                .all(|k| k == "Ref" || k.starts_with("Fn::") || k == "Condition")
    })
}

fn resource(kind: &str, properties: Value, base: &Map<String, Value>) -> Value {
    let mut r = Map::new();
    r.insert("Type".into(), kind.into());
    r.insert("Properties".into(), properties);
    for key in [
        "Condition",
        "DependsOn",
        "DeletionPolicy",
        "UpdateReplacePolicy",
    ] {
        if let Some(v) = base.get(key) {
            r.insert(key.into(), v.clone());
        }
    }
    Value::Object(r)
}

fn short_hash(v: &Value) -> String {
    let digest = Sha256::digest(v.to_string().as_bytes());
    digest.iter().take(5).map(|b| format!("{b:02x}")).collect()
}

/// The policy documents of SAM's policy templates, for the services this node has.
fn policy_template(name: &str, args: &Value, at: &str) -> Result<Value, StackError> {
    let arg = |key: &str| -> Result<Value, StackError> {
        args.get(key)
            .cloned()
            .ok_or_else(|| err(format!("Policy template {name} in {at} needs {key}.")))
    };
    let sub = |pattern: &str, key: &str| -> Result<Value, StackError> {
        Ok(json!({"Fn::Sub": [pattern, {"v": arg(key)?}]}))
    };
    let statement = |actions: &[&str], resources: Vec<Value>| json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": actions, "Resource": resources}]});
    let table = |actions: &[&str]| -> Result<Value, StackError> {
        Ok(statement(
            actions,
            vec![
                sub(
                    "arn:${AWS::Partition}:dynamodb:${AWS::Region}:${AWS::AccountId}:table/${v}",
                    "TableName",
                )?,
                sub(
                    "arn:${AWS::Partition}:dynamodb:${AWS::Region}:${AWS::AccountId}:table/${v}/index/*",
                    "TableName",
                )?,
            ],
        ))
    };
    let bucket = |actions: &[&str]| -> Result<Value, StackError> {
        Ok(statement(
            actions,
            vec![
                sub("arn:${AWS::Partition}:s3:::${v}", "BucketName")?,
                sub("arn:${AWS::Partition}:s3:::${v}/*", "BucketName")?,
            ],
        ))
    };
    let queue = |actions: &[&str]| -> Result<Value, StackError> {
        Ok(statement(
            actions,
            vec![sub(
                "arn:${AWS::Partition}:sqs:${AWS::Region}:${AWS::AccountId}:${v}",
                "QueueName",
            )?],
        ))
    };
    Ok(match name {
        "DynamoDBCrudPolicy" => table(&[
            "dynamodb:GetItem",
            "dynamodb:DeleteItem",
            "dynamodb:PutItem",
            "dynamodb:Scan",
            "dynamodb:Query",
            "dynamodb:UpdateItem",
            "dynamodb:BatchWriteItem",
            "dynamodb:BatchGetItem",
            "dynamodb:DescribeTable",
            "dynamodb:ConditionCheckItem",
        ])?,
        "DynamoDBReadPolicy" => table(&[
            "dynamodb:GetItem",
            "dynamodb:Scan",
            "dynamodb:Query",
            "dynamodb:BatchGetItem",
            "dynamodb:DescribeTable",
        ])?,
        "DynamoDBWritePolicy" => table(&[
            "dynamodb:PutItem",
            "dynamodb:UpdateItem",
            "dynamodb:BatchWriteItem",
        ])?,
        "S3ReadPolicy" => bucket(&[
            "s3:GetObject",
            "s3:ListBucket",
            "s3:GetBucketLocation",
            "s3:GetObjectVersion",
        ])?,
        "S3WritePolicy" => bucket(&[
            "s3:PutObject",
            "s3:PutObjectAcl",
            "s3:PutLifecycleConfiguration",
        ])?,
        "S3CrudPolicy" => bucket(&[
            "s3:GetObject",
            "s3:ListBucket",
            "s3:GetBucketLocation",
            "s3:GetObjectVersion",
            "s3:PutObject",
            "s3:PutObjectAcl",
            "s3:GetLifecycleConfiguration",
            "s3:PutLifecycleConfiguration",
            "s3:DeleteObject",
        ])?,
        "SQSSendMessagePolicy" => queue(&["sqs:SendMessage*"])?,
        "SQSPollerPolicy" => queue(&[
            "sqs:ChangeMessageVisibility",
            "sqs:ChangeMessageVisibilityBatch",
            "sqs:DeleteMessage",
            "sqs:DeleteMessageBatch",
            "sqs:GetQueueAttributes",
            "sqs:ReceiveMessage",
        ])?,
        "LambdaInvokePolicy" => statement(
            &["lambda:InvokeFunction"],
            vec![sub(
                "arn:${AWS::Partition}:lambda:${AWS::Region}:${AWS::AccountId}:function:${v}*",
                "FunctionName",
            )?],
        ),
        "EventBridgePutEventsPolicy" => statement(
            &["events:PutEvents"],
            vec![sub(
                "arn:${AWS::Partition}:events:${AWS::Region}:${AWS::AccountId}:event-bus/${v}",
                "EventBusName",
            )?],
        ),
        "AWSSecretsManagerGetSecretValuePolicy" | "SSMParameterReadPolicy" | "KMSDecryptPolicy" => {
            return Err(err(format!(
                "Policy template {name} in {at} is for a service this node does not have."
            )));
        }
        other => {
            return Err(err(format!(
                "Policy template {other} in {at} is not supported."
            )));
        }
    })
}

impl Sam {
    fn add(&mut self, id: String, r: Value) -> Result<(), StackError> {
        if self.resources.contains_key(&id)
            || (self.declared.contains_key(&id) && !self.is_serverless(&id))
        {
            return Err(err(format!(
                "Resource {id}, which SAM generates, is also declared in the template."
            )));
        }
        self.resources.insert(id, r);
        Ok(())
    }

    fn is_serverless(&self, id: &str) -> bool {
        self.declared
            .get(id)
            .and_then(|r| r.get("Type"))
            .and_then(Value::as_str)
            .is_some_and(|t| t.starts_with("AWS::Serverless::"))
    }

    fn declared_type(&self, v: &Value) -> Option<(String, String)> {
        let id = v.get("Ref").and_then(Value::as_str)?;
        let kind = self.declared.get(id)?.get("Type")?.as_str()?;
        Some((id.to_owned(), kind.to_owned()))
    }

    fn function(
        &mut self,
        id: &str,
        props: &Value,
        base: &Map<String, Value>,
    ) -> Result<(), StackError> {
        let props = with_globals(self.globals.get("Function"), props);
        let Value::Object(p) = &props else {
            return Err(err(format!("Resource {id}: Properties must be a map.")));
        };
        for key in p.keys() {
            if !FUNCTION_PROPERTIES.contains(&key.as_str()) {
                return Err(err(format!(
                    "Resource {id} (AWS::Serverless::Function): property {key} is not supported."
                )));
            }
        }
        if let Some(t) = p.get("PackageType").and_then(Value::as_str)
            && t != "Zip"
        {
            return Err(err(format!(
                "Resource {id}: PackageType {t} is not supported (Zip is)."
            )));
        }
        let code = match (p.get("CodeUri"), p.get("InlineCode")) {
            (Some(Value::String(uri)), None) => {
                match uri.strip_prefix("s3://").and_then(|r| r.split_once('/')) {
                    Some((bucket, key)) => json!({"S3Bucket": bucket, "S3Key": key}),
                    None => {
                        return Err(err(format!(
                            "Resource {id}: CodeUri {uri} is a local path; package the code first (nimbus deploy does it)."
                        )));
                    }
                }
            }
            (Some(Value::Object(loc)), None) => json!({
                "S3Bucket": loc.get("Bucket").cloned().unwrap_or(Value::Null),
                "S3Key": loc.get("Key").cloned().unwrap_or(Value::Null),
            }),
            (None, Some(inline)) => json!({"ZipFile": inline}),
            (Some(_), Some(_)) => {
                return Err(err(format!(
                    "Resource {id}: give CodeUri or InlineCode, not both."
                )));
            }
            _ => {
                return Err(err(format!(
                    "Resource {id}: CodeUri or InlineCode is required."
                )));
            }
        };
        let mut f = Map::new();
        f.insert("Code".into(), code);
        for key in [
            "Handler",
            "Runtime",
            "MemorySize",
            "Timeout",
            "Environment",
            "Description",
            "FunctionName",
            "Architectures",
            "EphemeralStorage",
            "ReservedConcurrentExecutions",
            "SnapStart",
            "Layers",
        ] {
            if let Some(v) = p.get(key) {
                f.insert(key.into(), v.clone());
            }
        }
        let mut tags = p
            .get("Tags")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        tags.insert("lambda:createdBy".into(), "SAM".into());
        f.insert("Tags".into(), Value::Object(tags));
        let events = p
            .get("Events")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        match p.get("Role") {
            Some(role) => {
                f.insert("Role".into(), role.clone());
            }
            None => {
                let role_id = format!("{id}Role");
                let role = self.role_for(id, p.get("Policies"), &events)?;
                self.add(role_id.clone(), resource("AWS::IAM::Role", role, base))?;
                f.insert("Role".into(), json!({"Fn::GetAtt": [role_id, "Arn"]}));
            }
        }
        let function_props = Value::Object(f);
        let hash = short_hash(&function_props);
        self.add(
            id.to_owned(),
            resource("AWS::Lambda::Function", function_props, base),
        )?;

        // What events and URLs point at: the alias when one is published, else the function.
        let (target, qualifier) = match p.get("AutoPublishAlias") {
            Some(alias) => {
                let alias_name = alias.as_str().ok_or_else(|| {
                    err(format!("Resource {id}: AutoPublishAlias must be a name."))
                })?;
                let version_id = format!("{id}Version{hash}");
                let mut version = json!({"FunctionName": {"Ref": id}});
                if let Some(d) = p.get("VersionDescription") {
                    version["Description"] = d.clone();
                }
                self.add(
                    version_id.clone(),
                    resource("AWS::Lambda::Version", version, base),
                )?;
                let alias_id = format!("{id}Alias{alias_name}");
                let mut a = json!({
                    "FunctionName": {"Ref": id},
                    "FunctionVersion": {"Fn::GetAtt": [version_id, "Version"]},
                    "Name": alias_name,
                });
                if let Some(pc) = p.get("ProvisionedConcurrencyConfig") {
                    a["ProvisionedConcurrencyConfig"] = pc.clone();
                }
                if let Some(dp) = p.get("DeploymentPreference") {
                    a["DeploymentPreference"] = dp.clone();
                }
                self.add(alias_id.clone(), resource("AWS::Lambda::Alias", a, base))?;
                (json!({"Ref": alias_id}), Some(alias_name.to_owned()))
            }
            None => {
                if p.contains_key("ProvisionedConcurrencyConfig")
                    || p.contains_key("DeploymentPreference")
                {
                    return Err(err(format!(
                        "Resource {id}: ProvisionedConcurrencyConfig and DeploymentPreference need AutoPublishAlias."
                    )));
                }
                (json!({"Fn::GetAtt": [id, "Arn"]}), None)
            }
        };
        if let Some(url) = p.get("FunctionUrlConfig") {
            let mut u = url.as_object().cloned().unwrap_or_default();
            u.insert("TargetFunctionArn".into(), json!({"Ref": id}));
            if let Some(q) = &qualifier {
                u.insert("Qualifier".into(), q.clone().into());
            }
            let auth = u
                .get("AuthType")
                .and_then(Value::as_str)
                .unwrap_or("AWS_IAM")
                .to_owned();
            let url_id = format!("{id}Url");
            self.add(url_id, resource("AWS::Lambda::Url", Value::Object(u), base))?;
            if auth == "NONE" {
                self.add(
                    format!("{id}UrlPublicPermissions"),
                    resource(
                        "AWS::Lambda::Permission",
                        json!({
                            "Action": "lambda:InvokeFunctionUrl",
                            "FunctionName": target.clone(),
                            "Principal": "*",
                            "FunctionUrlAuthType": "NONE",
                        }),
                        base,
                    ),
                )?;
            }
        }
        for (event, spec) in &events {
            self.event(id, event, spec, &target, base)?;
        }
        Ok(())
    }

    fn role_for(
        &self,
        id: &str,
        policies: Option<&Value>,
        events: &Map<String, Value>,
    ) -> Result<Value, StackError> {
        let mut managed = vec![json!(
            "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"
        )];
        let mut inline = Vec::new();
        let list = match policies {
            None => Vec::new(),
            Some(Value::Array(a)) => a.clone(),
            Some(other) => vec![other.clone()],
        };
        for (i, policy) in list.iter().enumerate() {
            let at = format!("{id}.Policies.{i}");
            match policy {
                Value::String(name) => managed.push(if name.starts_with("arn:") {
                    json!(name)
                } else {
                    json!(nimbus_identity::managed::arn_of(name).ok_or_else(|| {
                        err(format!(
                            "{at}: {name} is not a managed policy this node knows."
                        ))
                    })?)
                }),
                Value::Object(m) if m.contains_key("Statement") => inline.push(json!({
                    "PolicyName": format!("{id}RolePolicy{i}"),
                    "PolicyDocument": policy,
                })),
                Value::Object(m) if m.len() == 1 && !is_intrinsic(policy) => {
                    let (name, args) = m.iter().next().expect("one entry");
                    inline.push(json!({
                        "PolicyName": format!("{id}RolePolicy{i}"),
                        "PolicyDocument": policy_template(name, args, &at)?,
                    }));
                }
                other if is_intrinsic(other) => managed.push(other.clone()),
                _ => {
                    return Err(err(format!(
                        "{at}: a policy is a managed policy's name, a document or a policy template."
                    )));
                }
            }
        }
        for spec in events.values() {
            match spec.get("Type").and_then(Value::as_str) {
                Some("SQS") => managed.push(json!(
                    "arn:aws:iam::aws:policy/service-role/AWSLambdaSQSQueueExecutionRole"
                )),
                Some("DynamoDB") => managed.push(json!(
                    "arn:aws:iam::aws:policy/service-role/AWSLambdaDynamoDBExecutionRole"
                )),
                _ => {}
            }
        }
        let mut role = json!({
            "AssumeRolePolicyDocument": {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Principal": {"Service": ["lambda.amazonaws.com"]}, "Action": ["sts:AssumeRole"]}],
            },
            "ManagedPolicyArns": managed,
            "Tags": [{"Key": "lambda:createdBy", "Value": "SAM"}],
        });
        if !inline.is_empty() {
            role["Policies"] = Value::Array(inline);
        }
        Ok(role)
    }

    fn event(
        &mut self,
        function: &str,
        event: &str,
        spec: &Value,
        target: &Value,
        base: &Map<String, Value>,
    ) -> Result<(), StackError> {
        let kind = spec.get("Type").and_then(Value::as_str).unwrap_or_default();
        let p = spec.get("Properties").cloned().unwrap_or_else(|| json!({}));
        let at = format!("{function}.Events.{event}");
        let prop = |k: &str| p.get(k).cloned();
        let permission = |principal: &str, source: Value| {
            let mut perm = json!({"Action": "lambda:InvokeFunction", "FunctionName": target.clone(), "Principal": principal});
            if !source.is_null() {
                perm["SourceArn"] = source;
            }
            perm
        };
        match kind {
            "Api" | "HttpApi" => {
                let rest = kind == "Api";
                let method = prop("Method").and_then(|m| m.as_str().map(str::to_ascii_uppercase));
                let path = prop("Path").and_then(|m| m.as_str().map(str::to_owned));
                let route_key = match (method, path) {
                    (Some(m), Some(path)) => format!(
                        "{} {path}",
                        if m == "X-AMAZON-APIGATEWAY-ANY-METHOD" {
                            "ANY".into()
                        } else {
                            m
                        }
                    ),
                    (None, None) if !rest => "$default".to_owned(),
                    (None, Some(path)) if !rest => format!("ANY {path}"),
                    _ => return Err(err(format!("{at}: an {kind} event needs Path and Method."))),
                };
                let authorizer = match prop("Auth").and_then(|a| a.get("Authorizer").cloned()) {
                    None => None,
                    Some(Value::String(s)) if s == "NONE" => Some("NONE".to_owned()),
                    Some(Value::String(s)) => Some(s),
                    Some(_) => return Err(err(format!("{at}: Auth.Authorizer must be a name."))),
                };
                let route = Route {
                    function: function.to_owned(),
                    event: event.to_owned(),
                    route_key,
                    target: target.clone(),
                    authorizer,
                    payload: if rest {
                        "1.0"
                    } else {
                        prop("PayloadFormatVersion")
                            .and_then(|v| {
                                v.as_str().map(|s| if s == "1.0" { "1.0" } else { "2.0" })
                            })
                            .unwrap_or("2.0")
                    },
                };
                let api_ref = prop(if rest { "RestApiId" } else { "ApiId" });
                match api_ref {
                    None => {
                        if rest {
                            self.implicit_rest.push(route);
                        } else {
                            self.implicit_http.push(route);
                        }
                    }
                    Some(r) => {
                        let Some((api_id, api_kind)) = self.declared_type(&r) else {
                            return Err(err(format!(
                                "{at}: {} must Ref an API of this template.",
                                if rest { "RestApiId" } else { "ApiId" }
                            )));
                        };
                        let want = if rest {
                            "AWS::Serverless::Api"
                        } else {
                            "AWS::Serverless::HttpApi"
                        };
                        if api_kind != want {
                            return Err(err(format!(
                                "{at}: {api_id} is a {api_kind}, not a {want}."
                            )));
                        }
                        self.explicit.push((api_id, route, base.clone()));
                    }
                }
            }
            "Schedule" | "ScheduleV2" => {
                let rule_id = format!("{function}{event}");
                let enabled = match (prop("Enabled"), prop("State")) {
                    (Some(Value::Bool(false)), _) => false,
                    (_, Some(Value::String(s))) => s == "ENABLED",
                    _ => true,
                };
                let mut t = json!({"Arn": target.clone(), "Id": format!("{rule_id}LambdaTarget")});
                if let Some(input) = prop("Input") {
                    t["Input"] = input;
                }
                let mut rule = json!({
                    "ScheduleExpression": prop("Schedule").ok_or_else(|| err(format!("{at}: Schedule is required.")))?,
                    "State": if enabled { "ENABLED" } else { "DISABLED" },
                    "Targets": [t],
                });
                if let Some(name) = prop("Name") {
                    rule["Name"] = name;
                }
                if let Some(d) = prop("Description") {
                    rule["Description"] = d;
                }
                self.add(rule_id.clone(), resource("AWS::Events::Rule", rule, base))?;
                self.add(
                    format!("{rule_id}Permission"),
                    resource(
                        "AWS::Lambda::Permission",
                        permission(
                            "events.amazonaws.com",
                            json!({"Fn::GetAtt": [rule_id, "Arn"]}),
                        ),
                        base,
                    ),
                )?;
            }
            "SQS" | "DynamoDB" => {
                let source =
                    prop(if kind == "SQS" { "Queue" } else { "Stream" }).ok_or_else(|| {
                        err(format!(
                            "{at}: {} is required.",
                            if kind == "SQS" { "Queue" } else { "Stream" }
                        ))
                    })?;
                let mut esm = json!({"EventSourceArn": source, "FunctionName": target.clone()});
                // The event's settings are the mapping's own properties.
                for key in crate::providers::properties_of("AWS::Lambda::EventSourceMapping")
                    .iter()
                    .filter(|k| !["EventSourceArn", "FunctionName"].contains(*k))
                {
                    if let Some(v) = prop(key) {
                        esm[*key] = v;
                    }
                }
                if kind == "DynamoDB" && esm.get("StartingPosition").is_none() {
                    return Err(err(format!("{at}: StartingPosition is required.")));
                }
                self.add(
                    format!("{function}{event}"),
                    resource("AWS::Lambda::EventSourceMapping", esm, base),
                )?;
            }
            "S3" => {
                let bucket =
                    prop("Bucket").ok_or_else(|| err(format!("{at}: Bucket is required.")))?;
                let Some((bucket_id, bucket_kind)) = self.declared_type(&bucket) else {
                    return Err(err(format!(
                        "{at}: Bucket must Ref a bucket of this template."
                    )));
                };
                if bucket_kind != "AWS::S3::Bucket" {
                    return Err(err(format!("{at}: {bucket_id} is not an AWS::S3::Bucket.")));
                }
                let events = match prop("Events") {
                    Some(Value::String(e)) => vec![Value::String(e)],
                    Some(Value::Array(a)) => a,
                    _ => return Err(err(format!("{at}: Events is required."))),
                };
                let permission_id = format!("{function}{event}Permission");
                self.add(
                    permission_id.clone(),
                    resource(
                        "AWS::Lambda::Permission",
                        {
                            let mut perm = permission("s3.amazonaws.com", Value::Null);
                            perm["SourceAccount"] = json!({"Ref": "AWS::AccountId"});
                            perm
                        },
                        base,
                    ),
                )?;
                let b = self
                    .resources
                    .get_mut(&bucket_id)
                    .and_then(Value::as_object_mut)
                    .ok_or_else(|| err(format!("{at}: bucket {bucket_id} not found.")))?;
                let props = b.entry("Properties").or_insert_with(|| json!({}));
                let notif = props
                    .as_object_mut()
                    .ok_or_else(|| err(format!("{bucket_id}: Properties must be a map.")))?
                    .entry("NotificationConfiguration")
                    .or_insert_with(|| json!({}));
                let list = notif
                    .as_object_mut()
                    .ok_or_else(|| {
                        err(format!(
                            "{bucket_id}: NotificationConfiguration must be a map."
                        ))
                    })?
                    .entry("LambdaConfigurations")
                    .or_insert_with(|| json!([]));
                for e in events {
                    let mut c = json!({"Event": e, "Function": target.clone()});
                    if let Some(f) = prop("Filter") {
                        c["Filter"] = f;
                    }
                    if let Value::Array(l) = list {
                        l.push(c);
                    }
                }
                let deps = b.entry("DependsOn").or_insert_with(|| json!([]));
                if let Value::String(s) = deps {
                    *deps = json!([s.clone()]);
                }
                if let Value::Array(d) = deps {
                    d.push(Value::String(permission_id));
                }
            }
            other => {
                return Err(err(format!(
                    "{at}: event type {other} is not supported (Api, HttpApi, Schedule, SQS, S3 and DynamoDB are)."
                )));
            }
        }
        Ok(())
    }

    /// The integration, route and permission of one event on API `api_id`.
    fn route(
        &mut self,
        api_id: &str,
        route: &Route,
        base: &Map<String, Value>,
    ) -> Result<(), StackError> {
        let integration_id = format!("{}{}Integration", route.function, route.event);
        self.add(
            integration_id.clone(),
            resource(
                "AWS::ApiGatewayV2::Integration",
                json!({
                    "ApiId": {"Ref": api_id},
                    "IntegrationType": "AWS_PROXY",
                    "IntegrationUri": route.target.clone(),
                    "PayloadFormatVersion": route.payload,
                }),
                base,
            ),
        )?;
        let mut r = json!({
            "ApiId": {"Ref": api_id},
            "RouteKey": route.route_key,
            "Target": {"Fn::Sub": format!("integrations/${{{integration_id}}}")},
        });
        let authorizer = route.authorizer.clone().or_else(|| {
            self.resources
                .get(api_id)
                .and_then(|a| a.get("Metadata"))
                .and_then(|m| m.get("DefaultAuthorizer"))
                .and_then(Value::as_str)
                .map(str::to_owned)
        });
        if let Some(name) = authorizer.filter(|n| n != "NONE") {
            let authorizer_id = format!("{api_id}{name}Authorizer");
            if !self.resources.contains_key(&authorizer_id) {
                return Err(err(format!(
                    "{}.Events.{}: authorizer {name} is not defined in {api_id}'s Auth.Authorizers.",
                    route.function, route.event
                )));
            }
            r["AuthorizationType"] = "JWT".into();
            r["AuthorizerId"] = json!({"Ref": authorizer_id});
            if let Some(scopes) = self
                .resources
                .get(&authorizer_id)
                .and_then(|a| a.get("Metadata"))
                .and_then(|m| m.get("AuthorizationScopes"))
            {
                r["AuthorizationScopes"] = scopes.clone();
            }
        }
        self.add(
            format!("{}{}Route", route.function, route.event),
            resource("AWS::ApiGatewayV2::Route", r, base),
        )?;
        let suffix = if route.payload == "1.0" && api_id == "ServerlessRestApi" {
            "PermissionProd"
        } else {
            "Permission"
        };
        self.add(
            format!("{}{}{suffix}", route.function, route.event),
            resource(
                "AWS::Lambda::Permission",
                json!({
                    "Action": "lambda:InvokeFunction",
                    "FunctionName": route.target.clone(),
                    "Principal": "apigateway.amazonaws.com",
                    "SourceArn": {"Fn::Sub": format!("arn:${{AWS::Partition}}:execute-api:${{AWS::Region}}:${{AWS::AccountId}}:${{{api_id}}}/*")},
                }),
                base,
            ),
        )?;
        Ok(())
    }

    fn http_api(
        &mut self,
        id: &str,
        props: &Value,
        base: &Map<String, Value>,
    ) -> Result<(), StackError> {
        let props = with_globals(self.globals.get("HttpApi"), props);
        const KNOWN: &[&str] = &[
            "StageName",
            "Auth",
            "CorsConfiguration",
            "Description",
            "StageVariables",
            "FailOnWarnings",
            "Tags",
            "Name",
            "DisableExecuteApiEndpoint",
        ];
        if let Some(k) = props
            .as_object()
            .and_then(|m| m.keys().find(|k| !KNOWN.contains(&k.as_str())))
        {
            return Err(err(format!(
                "Resource {id} (AWS::Serverless::HttpApi): property {k} is not supported."
            )));
        }
        self.api(id, &props, "$default", base)
    }

    fn rest_api(
        &mut self,
        id: &str,
        props: &Value,
        base: &Map<String, Value>,
    ) -> Result<(), StackError> {
        let props = with_globals(self.globals.get("Api"), props);
        const KNOWN: &[&str] = &[
            "StageName",
            "Cors",
            "Description",
            "Variables",
            "Tags",
            "Name",
            "EndpointConfiguration",
            "TracingEnabled",
            "OpenApiVersion",
        ];
        if let Some(k) = props
            .as_object()
            .and_then(|m| m.keys().find(|k| !KNOWN.contains(&k.as_str())))
        {
            return Err(err(format!(
                "Resource {id} (AWS::Serverless::Api): property {k} is not supported."
            )));
        }
        let stage = props
            .get("StageName")
            .cloned()
            .ok_or_else(|| err(format!("Resource {id}: StageName is required.")))?;
        let mut p = props.clone();
        if let Some(v) = p.as_object_mut().and_then(|m| m.remove("Variables")) {
            p["StageVariables"] = v;
        }
        if let Some(c) = p.as_object_mut().and_then(|m| m.remove("Cors")) {
            p["CorsConfiguration"] = rest_cors(&c);
        }
        let stage_name = stage.as_str().unwrap_or("Prod").to_owned();
        p["StageName"] = stage;
        self.api(id, &p, &stage_name, base)
    }

    fn api(
        &mut self,
        id: &str,
        props: &Value,
        default_stage: &str,
        base: &Map<String, Value>,
    ) -> Result<(), StackError> {
        let mut api = json!({
            "Name": props.get("Name").cloned().unwrap_or_else(|| json!({"Ref": "AWS::StackName"})),
            "ProtocolType": "HTTP",
        });
        if let Some(d) = props.get("Description") {
            api["Description"] = d.clone();
        }
        match props.get("CorsConfiguration") {
            None | Some(Value::Bool(false)) => {}
            Some(Value::Bool(true)) => {
                api["CorsConfiguration"] =
                    json!({"AllowOrigins": ["*"], "AllowMethods": ["*"], "AllowHeaders": ["*"]});
            }
            Some(c) => api["CorsConfiguration"] = c.clone(),
        }
        if let Some(t) = props.get("Tags") {
            api["Tags"] = t.clone();
        }
        let mut meta = Map::new();
        if let Some(d) = props.get("Auth").and_then(|a| a.get("DefaultAuthorizer")) {
            meta.insert("DefaultAuthorizer".into(), d.clone());
        }
        let mut r = resource("AWS::ApiGatewayV2::Api", api, base);
        if !meta.is_empty() {
            r["Metadata"] = Value::Object(meta);
        }
        self.add(id.to_owned(), r)?;
        let stage_name = props
            .get("StageName")
            .cloned()
            .unwrap_or_else(|| json!(default_stage));
        let stage_id = if stage_name == json!("$default") {
            format!("{id}ApiGatewayDefaultStage")
        } else {
            format!(
                "{id}{}Stage",
                stage_name
                    .as_str()
                    .unwrap_or("Stage")
                    .replace(|c: char| !c.is_ascii_alphanumeric(), "")
            )
        };
        let mut stage = json!({"ApiId": {"Ref": id}, "StageName": stage_name, "AutoDeploy": true});
        if let Some(v) = props.get("StageVariables") {
            stage["StageVariables"] = v.clone();
        }
        self.add(stage_id, resource("AWS::ApiGatewayV2::Stage", stage, base))?;
        if let Some(Value::Object(authorizers)) =
            props.get("Auth").and_then(|a| a.get("Authorizers"))
        {
            for (name, a) in authorizers {
                let Some(jwt) = a.get("JwtConfiguration") else {
                    return Err(err(format!(
                        "Resource {id}: authorizer {name} is not a JWT authorizer; only JwtConfiguration is supported."
                    )));
                };
                let mut cfg = Map::new();
                if let Some(aud) = jwt.get("audience").or_else(|| jwt.get("Audience")) {
                    cfg.insert("Audience".into(), aud.clone());
                }
                if let Some(iss) = jwt.get("issuer").or_else(|| jwt.get("Issuer")) {
                    cfg.insert("Issuer".into(), iss.clone());
                }
                let mut r = resource(
                    "AWS::ApiGatewayV2::Authorizer",
                    json!({
                        "ApiId": {"Ref": id},
                        "AuthorizerType": "JWT",
                        "Name": name,
                        "IdentitySource": [a.get("IdentitySource").cloned().unwrap_or_else(|| json!("$request.header.Authorization"))],
                        "JwtConfiguration": cfg,
                    }),
                    base,
                );
                if let Some(scopes) = a.get("AuthorizationScopes") {
                    r["Metadata"] = json!({"AuthorizationScopes": scopes});
                }
                self.add(format!("{id}{name}Authorizer"), r)?;
            }
        }
        Ok(())
    }

    /// The routes of every API event: on the template's own APIs, and on the implicit APIs
    /// SAM makes for events that name none, `ServerlessRestApi` (stage `Prod`) and
    /// `ServerlessHttpApi` (stage `$default`).
    fn routes(&mut self) -> Result<(), StackError> {
        for (api_id, route, base) in std::mem::take(&mut self.explicit) {
            self.route(&api_id, &route, &base)?;
        }
        let base = Map::new();
        let rest = std::mem::take(&mut self.implicit_rest);
        let http = std::mem::take(&mut self.implicit_http);
        if !rest.is_empty() {
            self.api(
                "ServerlessRestApi",
                &json!({"StageName": "Prod"}),
                "Prod",
                &base,
            )?;
            for r in &rest {
                self.route("ServerlessRestApi", r, &base)?;
            }
        }
        if !http.is_empty() {
            let global = self
                .globals
                .get("HttpApi")
                .cloned()
                .unwrap_or_else(|| json!({}));
            self.api("ServerlessHttpApi", &global, "$default", &base)?;
            for r in &http {
                self.route("ServerlessHttpApi", r, &base)?;
            }
        }
        Ok(())
    }

    /// A layer version: its content from `ContentUri`, kept when replaced or removed unless
    /// `RetentionPolicy: Delete`, as SAM does.
    fn layer_version(
        &mut self,
        id: &str,
        props: &Value,
        base: &Map<String, Value>,
    ) -> Result<(), StackError> {
        const KNOWN: &[&str] = &[
            "ContentUri",
            "LayerName",
            "Description",
            "CompatibleRuntimes",
            "CompatibleArchitectures",
            "LicenseInfo",
            "RetentionPolicy",
        ];
        if let Some(k) = props
            .as_object()
            .and_then(|m| m.keys().find(|k| !KNOWN.contains(&k.as_str())))
        {
            return Err(err(format!(
                "Resource {id} (AWS::Serverless::LayerVersion): property {k} is not supported."
            )));
        }
        let content = match props.get("ContentUri") {
            Some(Value::String(uri)) => {
                match uri.strip_prefix("s3://").and_then(|r| r.split_once('/')) {
                    Some((bucket, key)) => json!({"S3Bucket": bucket, "S3Key": key}),
                    None => {
                        return Err(err(format!(
                            "Resource {id}: ContentUri {uri} is a local path; package it first (nimbus deploy does it)."
                        )));
                    }
                }
            }
            Some(Value::Object(loc)) => json!({
                "S3Bucket": loc.get("Bucket").cloned().unwrap_or(Value::Null),
                "S3Key": loc.get("Key").cloned().unwrap_or(Value::Null),
            }),
            _ => return Err(err(format!("Resource {id}: ContentUri is required."))),
        };
        let mut layer = Map::new();
        layer.insert("Content".into(), content);
        // SAM names a layer after its resource unless told otherwise.
        layer.insert(
            "LayerName".into(),
            props.get("LayerName").cloned().unwrap_or_else(|| json!(id)),
        );
        for key in [
            "Description",
            "CompatibleRuntimes",
            "CompatibleArchitectures",
            "LicenseInfo",
        ] {
            if let Some(v) = props.get(key) {
                layer.insert(key.into(), v.clone());
            }
        }
        let mut r = resource("AWS::Lambda::LayerVersion", Value::Object(layer), base);
        let retain = props.get("RetentionPolicy").and_then(Value::as_str) != Some("Delete");
        if retain && !base.contains_key("DeletionPolicy") {
            r["DeletionPolicy"] = json!("Retain");
        }
        self.add(id.to_owned(), r)
    }

    fn simple_table(
        &mut self,
        id: &str,
        props: &Value,
        base: &Map<String, Value>,
    ) -> Result<(), StackError> {
        let props = with_globals(self.globals.get("SimpleTable"), props);
        const KNOWN: &[&str] = &[
            "PrimaryKey",
            "ProvisionedThroughput",
            "TableName",
            "Tags",
            "SSESpecification",
            "PointInTimeRecoverySpecification",
        ];
        if let Some(k) = props
            .as_object()
            .and_then(|m| m.keys().find(|k| !KNOWN.contains(&k.as_str())))
        {
            return Err(err(format!(
                "Resource {id} (AWS::Serverless::SimpleTable): property {k} is not supported."
            )));
        }
        let key = props
            .get("PrimaryKey")
            .cloned()
            .unwrap_or_else(|| json!({"Name": "id", "Type": "String"}));
        let kind = match key.get("Type").and_then(Value::as_str).unwrap_or("String") {
            "String" => "S",
            "Number" => "N",
            "Binary" => "B",
            other => {
                return Err(err(format!(
                    "Resource {id}: PrimaryKey.Type {other} is not String, Number or Binary."
                )));
            }
        };
        let name = key.get("Name").cloned().unwrap_or_else(|| json!("id"));
        let mut t = json!({
            "AttributeDefinitions": [{"AttributeName": name, "AttributeType": kind}],
            "KeySchema": [{"AttributeName": name, "KeyType": "HASH"}],
        });
        match props.get("ProvisionedThroughput") {
            Some(p) => t["ProvisionedThroughput"] = p.clone(),
            None => t["BillingMode"] = "PAY_PER_REQUEST".into(),
        }
        if let Some(n) = props.get("TableName") {
            t["TableName"] = n.clone();
        }
        if let Some(Value::Object(tags)) = props.get("Tags") {
            t["Tags"] = Value::Array(
                tags.iter()
                    .map(|(k, v)| json!({"Key": k, "Value": v}))
                    .collect(),
            );
        }
        self.add(id.to_owned(), resource("AWS::DynamoDB::Table", t, base))
    }
}

fn rest_cors(c: &Value) -> Value {
    // REST CORS values are quoted strings ("'*'"); HTTP APIs take lists.
    let unquote = |v: &Value| v.as_str().map(|s| s.trim_matches('\'').to_owned());
    match c {
        Value::String(origin) => {
            json!({"AllowOrigins": [origin.trim_matches('\'')], "AllowMethods": ["*"], "AllowHeaders": ["*"]})
        }
        Value::Object(m) => {
            let mut out = BTreeMap::new();
            for (from, to) in [
                ("AllowOrigin", "AllowOrigins"),
                ("AllowMethods", "AllowMethods"),
                ("AllowHeaders", "AllowHeaders"),
            ] {
                if let Some(v) = m.get(from).and_then(unquote) {
                    out.insert(
                        to,
                        json!(
                            v.split(',')
                                .map(|s| s.trim().to_owned())
                                .collect::<Vec<_>>()
                        ),
                    );
                }
            }
            if let Some(age) = m.get("MaxAge").and_then(unquote) {
                out.insert("MaxAge", json!(age.parse::<u64>().unwrap_or(0)));
            }
            json!(out)
        }
        _ => json!({}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand(template: &str) -> Result<Map<String, Value>, StackError> {
        let Value::Object(mut raw) = crate::yaml::parse(template)? else {
            panic!()
        };
        transform(&mut raw)?;
        Ok(raw["Resources"].as_object().unwrap().clone())
    }

    #[test]
    fn hello_world_expands_as_sam_does() {
        let r = expand(
            "Transform: AWS::Serverless-2016-10-31\n\
             Globals:\n  Function:\n    Timeout: 3\n    Environment:\n      Variables: {A: '1'}\n\
             Resources:\n  HelloWorldFunction:\n    Type: AWS::Serverless::Function\n    Properties:\n\
             \x20     CodeUri: s3://bucket/key.zip\n      Handler: app.lambda_handler\n      Runtime: python3.11\n\
             \x20     Environment:\n        Variables: {B: '2'}\n\
             \x20     Events:\n        HelloWorld:\n          Type: Api\n          Properties: {Path: /hello, Method: get}\n",
        )
        .unwrap();
        let names: Vec<&str> = r.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            vec![
                "HelloWorldFunction",
                "HelloWorldFunctionHelloWorldIntegration",
                "HelloWorldFunctionHelloWorldPermissionProd",
                "HelloWorldFunctionHelloWorldRoute",
                "HelloWorldFunctionRole",
                "ServerlessRestApi",
                "ServerlessRestApiProdStage",
            ]
        );
        let f = &r["HelloWorldFunction"]["Properties"];
        assert_eq!(f["Timeout"], json!(3));
        assert_eq!(f["Environment"]["Variables"], json!({"A": "1", "B": "2"}));
        assert_eq!(f["Code"], json!({"S3Bucket": "bucket", "S3Key": "key.zip"}));
        assert_eq!(
            r["HelloWorldFunctionHelloWorldRoute"]["Properties"]["RouteKey"],
            json!("GET /hello")
        );
        assert_eq!(
            r["ServerlessRestApiProdStage"]["Properties"]["StageName"],
            json!("Prod")
        );
    }

    #[test]
    fn unsupported_things_are_named() {
        let e = expand("Transform: AWS::Serverless-2016-10-31\nResources:\n  F:\n    Type: AWS::Serverless::Function\n    Properties: {CodeUri: ./src, Handler: a.b, Runtime: python3.11}\n").unwrap_err();
        assert!(e.message.contains("local path"), "{}", e.message);
        let e = expand("Transform: AWS::Serverless-2016-10-31\nResources:\n  F:\n    Type: AWS::Serverless::Function\n    Properties: {InlineCode: x, Handler: a.b, Runtime: python3.11, Frobnicate: 1}\n").unwrap_err();
        assert!(
            e.message.contains("Frobnicate") && e.message.contains("F"),
            "{}",
            e.message
        );
        let e = expand("Transform: AWS::Serverless-2016-10-31\nResources:\n  F:\n    Type: AWS::Serverless::Function\n    Properties:\n      InlineCode: x\n      Handler: a.b\n      Runtime: python3.11\n      Events:\n        E: {Type: Kinesis, Properties: {}}\n").unwrap_err();
        assert!(
            e.message.contains("F.Events.E") && e.message.contains("Kinesis"),
            "{}",
            e.message
        );
        let e = expand("Transform: AWS::Serverless-2016-10-31\nResources:\n  S:\n    Type: AWS::Serverless::StateMachine\n").unwrap_err();
        assert!(e.message.contains("AWS::Serverless::StateMachine"));
    }

    #[test]
    fn alias_events_and_policies() {
        let r = expand(
            "Transform: AWS::Serverless-2016-10-31\nResources:\n  T:\n    Type: AWS::Serverless::SimpleTable\n  Q:\n    Type: AWS::SQS::Queue\n  F:\n    Type: AWS::Serverless::Function\n    Properties:\n      InlineCode: x\n      Handler: a.b\n      Runtime: python3.11\n      AutoPublishAlias: live\n      FunctionUrlConfig: {AuthType: NONE}\n      Policies:\n        - DynamoDBCrudPolicy: {TableName: !Ref T}\n      Events:\n        Tick: {Type: Schedule, Properties: {Schedule: rate(1 minute)}}\n        Jobs: {Type: SQS, Properties: {Queue: !GetAtt Q.Arn, BatchSize: 5}}\n        Web: {Type: HttpApi}\n",
        )
        .unwrap();
        assert!(r.contains_key("FAliaslive") && r.keys().any(|k| k.starts_with("FVersion")));
        assert_eq!(
            r["FTick"]["Properties"]["Targets"][0]["Arn"],
            json!({"Ref": "FAliaslive"})
        );
        assert_eq!(r["FJobs"]["Properties"]["BatchSize"], json!(5));
        assert_eq!(r["FUrl"]["Properties"]["Qualifier"], json!("live"));
        assert!(r.contains_key("FUrlPublicPermissions"));
        assert_eq!(r["FWebRoute"]["Properties"]["RouteKey"], json!("$default"));
        assert!(r.contains_key("ServerlessHttpApiApiGatewayDefaultStage"));
        let policy = &r["FRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"][0];
        assert!(
            policy["Action"]
                .as_array()
                .unwrap()
                .contains(&json!("dynamodb:PutItem"))
        );
        assert_eq!(r["T"]["Type"], json!("AWS::DynamoDB::Table"));
    }
}
