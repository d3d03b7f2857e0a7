//! Queues, tables, roles, rules, HTTP APIs, buckets and user pools through their own APIs.

use std::collections::BTreeSet;

use axum::http::Method;
use serde_json::{Map, Value, json};

use super::{Ctx, ProviderError, Result, boolean, made, pick, required, seg, tags, text, xml_text};
use crate::intrinsic::Made;

pub fn properties_of(kind: &str) -> &'static [&'static str] {
    match kind {
        "AWS::SQS::Queue" => &[
            "QueueName",
            "DelaySeconds",
            "MaximumMessageSize",
            "MessageRetentionPeriod",
            "ReceiveMessageWaitTimeSeconds",
            "VisibilityTimeout",
            "RedrivePolicy",
            "RedriveAllowPolicy",
            "FifoQueue",
            "ContentBasedDeduplication",
            "DeduplicationScope",
            "FifoThroughputLimit",
            "SqsManagedSseEnabled",
            "Tags",
        ],
        "AWS::DynamoDB::Table" => &[
            "TableName",
            "AttributeDefinitions",
            "KeySchema",
            "BillingMode",
            "ProvisionedThroughput",
            "GlobalSecondaryIndexes",
            "LocalSecondaryIndexes",
            "StreamSpecification",
            "TimeToLiveSpecification",
            "Tags",
            "SSESpecification",
            "PointInTimeRecoverySpecification",
            "DeletionProtectionEnabled",
            "TableClass",
        ],
        "AWS::IAM::Role" => &[
            "RoleName",
            "AssumeRolePolicyDocument",
            "Path",
            "Description",
            "Policies",
            "ManagedPolicyArns",
            "MaxSessionDuration",
            "Tags",
            "PermissionsBoundary",
        ],
        "AWS::Events::Rule" => &[
            "Name",
            "ScheduleExpression",
            "EventPattern",
            "State",
            "Description",
            "EventBusName",
            "Targets",
            "RoleArn",
        ],
        "AWS::ApiGatewayV2::Api" => &[
            "Name",
            "ProtocolType",
            "Description",
            "CorsConfiguration",
            "Tags",
            "DisableExecuteApiEndpoint",
            "RouteSelectionExpression",
            "Version",
        ],
        "AWS::ApiGatewayV2::Stage" => &[
            "ApiId",
            "StageName",
            "AutoDeploy",
            "StageVariables",
            "Description",
            "DefaultRouteSettings",
            "Tags",
        ],
        "AWS::ApiGatewayV2::Route" => &[
            "ApiId",
            "RouteKey",
            "Target",
            "AuthorizationType",
            "AuthorizerId",
            "AuthorizationScopes",
            "OperationName",
        ],
        "AWS::ApiGatewayV2::Integration" => &[
            "ApiId",
            "IntegrationType",
            "IntegrationUri",
            "IntegrationMethod",
            "PayloadFormatVersion",
            "TimeoutInMillis",
            "Description",
            "RequestParameters",
        ],
        "AWS::ApiGatewayV2::Authorizer" => &[
            "ApiId",
            "AuthorizerType",
            "Name",
            "IdentitySource",
            "JwtConfiguration",
            "AuthorizerUri",
            "AuthorizerPayloadFormatVersion",
            "EnableSimpleResponses",
            "AuthorizerResultTtlInSeconds",
        ],
        "AWS::S3::Bucket" => &[
            "BucketName",
            "NotificationConfiguration",
            "VersioningConfiguration",
            "CorsConfiguration",
            "Tags",
            "BucketEncryption",
            "PublicAccessBlockConfiguration",
            "OwnershipControls",
        ],
        "AWS::Cognito::UserPool" => &[
            "UserPoolName",
            "Policies",
            "AutoVerifiedAttributes",
            "UsernameAttributes",
            "AliasAttributes",
            "Schema",
            "LambdaConfig",
            "MfaConfiguration",
            "UserPoolTags",
            "AdminCreateUserConfig",
            "AccountRecoverySetting",
            "UsernameConfiguration",
            "DeletionProtection",
            "EmailConfiguration",
            "VerificationMessageTemplate",
        ],
        "AWS::Cognito::UserPoolClient" => &[
            "UserPoolId",
            "ClientName",
            "GenerateSecret",
            "ExplicitAuthFlows",
            "RefreshTokenValidity",
            "AccessTokenValidity",
            "IdTokenValidity",
            "TokenValidityUnits",
            "PreventUserExistenceErrors",
            "ReadAttributes",
            "WriteAttributes",
            "EnableTokenRevocation",
            "AllowedOAuthFlows",
            "AllowedOAuthScopes",
            "CallbackURLs",
            "LogoutURLs",
            "SupportedIdentityProviders",
            "AllowedOAuthFlowsUserPoolClient",
        ],
        _ => &[],
    }
}

pub fn attributes_of(kind: &str) -> &'static [&'static str] {
    match kind {
        "AWS::SQS::Queue" => &["Arn", "QueueName", "QueueUrl"],
        "AWS::DynamoDB::Table" => &["Arn", "StreamArn"],
        "AWS::IAM::Role" => &["Arn", "RoleId"],
        "AWS::Events::Rule" => &["Arn"],
        "AWS::ApiGatewayV2::Api" => &["ApiEndpoint", "ApiId"],
        "AWS::ApiGatewayV2::Route" => &["RouteId"],
        "AWS::ApiGatewayV2::Integration" => &["IntegrationId"],
        "AWS::ApiGatewayV2::Authorizer" => &["AuthorizerId"],
        "AWS::S3::Bucket" => &["Arn", "DomainName", "RegionalDomainName"],
        "AWS::Cognito::UserPool" => &["Arn", "ProviderName", "ProviderURL", "UserPoolId"],
        "AWS::Cognito::UserPoolClient" => &["ClientId", "ClientSecret", "Name"],
        _ => &[],
    }
}

pub async fn create(ctx: &Ctx<'_>, kind: &str, name: &str, props: &Value) -> Result<Made> {
    match kind {
        "AWS::SQS::Queue" => {
            let mut queue = text(props, "QueueName").unwrap_or_else(|| name.to_owned());
            if boolean(props, "FifoQueue")? == Some(true) && !queue.ends_with(".fifo") {
                queue.push_str(".fifo");
            }
            let body = json!({"QueueName": queue, "Attributes": queue_attributes(props)?, "tags": tags(props, "Tags")?});
            let q = ctx.target("AmazonSQS.CreateQueue", &body).await?;
            let url = text(&q, "QueueUrl").unwrap_or_default();
            let arn = format!("arn:aws:sqs:{}:{}:{queue}", ctx.region, ctx.account());
            Ok(made(
                url.clone(),
                &[
                    ("Arn", json!(arn)),
                    ("QueueName", json!(queue)),
                    ("QueueUrl", json!(url)),
                ],
            ))
        }
        "AWS::DynamoDB::Table" => {
            let table = text(props, "TableName").unwrap_or_else(|| name.to_owned());
            let mut body = pick(
                props,
                &[
                    "AttributeDefinitions",
                    "KeySchema",
                    "BillingMode",
                    "ProvisionedThroughput",
                    "GlobalSecondaryIndexes",
                    "LocalSecondaryIndexes",
                    "Tags",
                    "DeletionProtectionEnabled",
                ],
            );
            body.insert("TableName".into(), json!(table));
            if let Some(spec) = props.get("StreamSpecification") {
                body.insert("StreamSpecification".into(), json!({"StreamEnabled": true, "StreamViewType": spec.get("StreamViewType").cloned().unwrap_or(json!("NEW_AND_OLD_IMAGES"))}));
            }
            ctx.target("DynamoDB_20120810.CreateTable", &Value::Object(body))
                .await?;
            let created = table_made(ctx, &table).await?;
            if let Some(ttl) = props.get("TimeToLiveSpecification")
                && let Err(e) = time_to_live(ctx, &table, ttl).await
            {
                let _ = ctx
                    .target(
                        "DynamoDB_20120810.DeleteTable",
                        &json!({"TableName": table}),
                    )
                    .await;
                return Err(e);
            }
            Ok(created)
        }
        "AWS::IAM::Role" => {
            let role = text(props, "RoleName").unwrap_or_else(|| name.to_owned());
            let trust = props.get("AssumeRolePolicyDocument").ok_or_else(|| {
                ProviderError::new("Property AssumeRolePolicyDocument is required.")
            })?;
            let mut params = vec![
                ("RoleName", role.clone()),
                ("AssumeRolePolicyDocument", document(trust)),
            ];
            if let Some(p) = text(props, "Path") {
                params.push(("Path", p));
            }
            if let Some(d) = text(props, "Description") {
                params.push(("Description", d));
            }
            let policies = role_policies(props)?;
            let managed = managed_policies(props)?;
            let xml = ctx.query("CreateRole", &params).await?;
            let granted = async {
                for (policy, doc) in &policies {
                    let params = [
                        ("RoleName", role.clone()),
                        ("PolicyName", policy.clone()),
                        ("PolicyDocument", doc.clone()),
                    ];
                    ctx.query("PutRolePolicy", &params).await?;
                }
                for arn in &managed {
                    let params = [("RoleName", role.clone()), ("PolicyArn", arn.clone())];
                    ctx.query("AttachRolePolicy", &params).await?;
                }
                Ok::<(), ProviderError>(())
            }
            .await;
            if let Err(e) = granted {
                // Nothing half-made: the role goes with its policies.
                let names = policies.iter().map(|(n, _)| n.clone()).collect();
                let _ = delete_role(ctx, &role, names, managed).await;
                return Err(e);
            }
            Ok(made(
                role,
                &[
                    ("Arn", json!(xml_text(&xml, "Arn").unwrap_or_default())),
                    (
                        "RoleId",
                        json!(xml_text(&xml, "RoleId").unwrap_or_default()),
                    ),
                ],
            ))
        }
        "AWS::Events::Rule" => {
            let rule = text(props, "Name").unwrap_or_else(|| name.to_owned());
            let r = ctx
                .target("AWSEvents.PutRule", &Value::Object(rule_body(&rule, props)))
                .await?;
            let arn = text(&r, "RuleArn").unwrap_or_default();
            let targets = props.get("Targets").cloned().unwrap_or(json!([]));
            if targets.as_array().is_some_and(|t| !t.is_empty())
                && let Err(e) = ctx
                    .target(
                        "AWSEvents.PutTargets",
                        &json!({"Rule": rule, "Targets": targets}),
                    )
                    .await
            {
                let _ = ctx
                    .target("AWSEvents.DeleteRule", &json!({"Name": rule}))
                    .await;
                return Err(e);
            }
            Ok(made(rule, &[("Arn", json!(arn))]))
        }
        "AWS::ApiGatewayV2::Api" => {
            if props.get("Body").is_some() || props.get("BodyS3Location").is_some() {
                return Err(ProviderError::new(
                    "OpenAPI bodies are not supported; declare routes and integrations.",
                ));
            }
            let mut body = camel(&Value::Object(pick(
                props,
                &[
                    "Name",
                    "ProtocolType",
                    "Description",
                    "CorsConfiguration",
                    "DisableExecuteApiEndpoint",
                    "RouteSelectionExpression",
                    "Version",
                ],
            )));
            if let Some(t) = props.get("Tags") {
                body["tags"] = Value::Object(
                    tags(&json!({"T": t}), "T")?
                        .into_iter()
                        .map(|(k, v)| (k, json!(v)))
                        .collect(),
                );
            }
            let a = ctx.rest(Method::POST, "/v2/apis", Some(&body)).await?;
            let id = text(&a, "apiId").unwrap_or_default();
            Ok(made(
                id.clone(),
                &[
                    ("ApiId", json!(id)),
                    (
                        "ApiEndpoint",
                        json!(text(&a, "apiEndpoint").unwrap_or_default()),
                    ),
                ],
            ))
        }
        "AWS::ApiGatewayV2::Stage" => {
            let api = required(props, "ApiId")?;
            let body = camel(&Value::Object(pick(
                props,
                &[
                    "StageName",
                    "AutoDeploy",
                    "StageVariables",
                    "Description",
                    "DefaultRouteSettings",
                ],
            )));
            let s = ctx
                .rest(
                    Method::POST,
                    &format!("/v2/apis/{}/stages", seg(&api)),
                    Some(&body),
                )
                .await?;
            Ok(made(text(&s, "stageName").unwrap_or_default(), &[]))
        }
        "AWS::ApiGatewayV2::Route"
        | "AWS::ApiGatewayV2::Integration"
        | "AWS::ApiGatewayV2::Authorizer" => {
            let (collection, id_key, attr, keys) = api_child(kind);
            let api = required(props, "ApiId")?;
            let body = camel(&Value::Object(pick(props, keys)));
            let r = ctx
                .rest(
                    Method::POST,
                    &format!("/v2/apis/{}/{collection}", seg(&api)),
                    Some(&body),
                )
                .await?;
            let id = text(&r, id_key).unwrap_or_default();
            Ok(made(id.clone(), &[(attr, json!(id))]))
        }
        "AWS::S3::Bucket" => {
            let bucket = text(props, "BucketName").unwrap_or_else(|| name.to_owned());
            ctx.s3(Method::PUT, &format!("/{}", seg(&bucket)), Vec::new())
                .await?;
            if let Err(e) = bucket_settings(ctx, &bucket, props).await {
                let _ = ctx
                    .s3(Method::DELETE, &format!("/{}", seg(&bucket)), Vec::new())
                    .await;
                return Err(e);
            }
            Ok(made(
                bucket.clone(),
                &[
                    ("Arn", json!(format!("arn:aws:s3:::{bucket}"))),
                    ("DomainName", json!(format!("{bucket}.s3.amazonaws.com"))),
                    (
                        "RegionalDomainName",
                        json!(format!("{bucket}.s3.{}.amazonaws.com", ctx.region)),
                    ),
                ],
            ))
        }
        "AWS::Cognito::UserPool" => {
            let mut body = user_pool_body(props);
            body.insert(
                "PoolName".into(),
                json!(text(props, "UserPoolName").unwrap_or_else(|| name.to_owned())),
            );
            let p = ctx
                .target(
                    "AWSCognitoIdentityProviderService.CreateUserPool",
                    &Value::Object(body),
                )
                .await?;
            let pool = p.get("UserPool").cloned().unwrap_or_default();
            let id = text(&pool, "Id").unwrap_or_default();
            Ok(user_pool_made(ctx, &id, &pool))
        }
        "AWS::Cognito::UserPoolClient" => {
            let body = Value::Object(pick(props, properties_of(kind)));
            let c = ctx
                .target(
                    "AWSCognitoIdentityProviderService.CreateUserPoolClient",
                    &body,
                )
                .await?;
            let client = c.get("UserPoolClient").cloned().unwrap_or_default();
            let id = text(&client, "ClientId").unwrap_or_default();
            Ok(made(
                id.clone(),
                &[
                    ("ClientId", json!(id)),
                    (
                        "ClientSecret",
                        json!(text(&client, "ClientSecret").unwrap_or_default()),
                    ),
                    (
                        "Name",
                        json!(text(&client, "ClientName").unwrap_or_default()),
                    ),
                ],
            ))
        }
        other => Err(ProviderError::new(format!(
            "Resource type {other} is not supported by this node."
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
        "AWS::SQS::Queue" => {
            let mut attributes = queue_attributes(new)?;
            // Attributes left out now go back to their defaults.
            for (key, default) in [
                ("DelaySeconds", "0"),
                ("MaximumMessageSize", "262144"),
                ("MessageRetentionPeriod", "345600"),
                ("ReceiveMessageWaitTimeSeconds", "0"),
                ("VisibilityTimeout", "30"),
            ] {
                if old.get(key).is_some()
                    && new.get(key).is_none()
                    && let Value::Object(a) = &mut attributes
                {
                    a.insert(key.into(), json!(default));
                }
            }
            if old.get("RedrivePolicy").is_some()
                && new.get("RedrivePolicy").is_none()
                && let Value::Object(a) = &mut attributes
            {
                a.insert("RedrivePolicy".into(), json!(""));
            }
            ctx.target(
                "AmazonSQS.SetQueueAttributes",
                &json!({"QueueUrl": old_made.reference, "Attributes": attributes}),
            )
            .await?;
            Ok(old_made.clone())
        }
        "AWS::DynamoDB::Table" => {
            let table = old_made.reference.clone();
            let mut body = Map::new();
            for key in [
                "BillingMode",
                "ProvisionedThroughput",
                "AttributeDefinitions",
                "DeletionProtectionEnabled",
            ] {
                if old.get(key) != new.get(key)
                    && let Some(v) = new.get(key)
                {
                    body.insert(key.into(), v.clone());
                }
            }
            if old.get("StreamSpecification") != new.get("StreamSpecification") {
                body.insert("StreamSpecification".into(), match new.get("StreamSpecification") {
                    Some(spec) => json!({"StreamEnabled": true, "StreamViewType": spec.get("StreamViewType").cloned().unwrap_or(json!("NEW_AND_OLD_IMAGES"))}),
                    None => json!({"StreamEnabled": false}),
                });
            }
            let updates = index_updates(old, new);
            if !body.is_empty() || !updates.is_empty() {
                body.insert("TableName".into(), json!(table));
                if !updates.is_empty() {
                    body.insert("GlobalSecondaryIndexUpdates".into(), Value::Array(updates));
                    if !body.contains_key("AttributeDefinitions")
                        && let Some(a) = new.get("AttributeDefinitions")
                    {
                        body.insert("AttributeDefinitions".into(), a.clone());
                    }
                }
                ctx.target("DynamoDB_20120810.UpdateTable", &Value::Object(body))
                    .await?;
            }
            if old.get("TimeToLiveSpecification") != new.get("TimeToLiveSpecification") {
                let ttl = match (
                    new.get("TimeToLiveSpecification"),
                    old.get("TimeToLiveSpecification"),
                ) {
                    (Some(t), _) => t.clone(),
                    (None, Some(o)) => {
                        json!({"AttributeName": o.get("AttributeName").cloned().unwrap_or_default(), "Enabled": false})
                    }
                    (None, None) => Value::Null,
                };
                if !ttl.is_null() {
                    time_to_live(ctx, &table, &ttl).await?;
                }
            }
            table_made(ctx, &table).await
        }
        "AWS::IAM::Role" => {
            let role = old_made.reference.clone();
            if old.get("AssumeRolePolicyDocument") != new.get("AssumeRolePolicyDocument")
                && let Some(trust) = new.get("AssumeRolePolicyDocument")
            {
                ctx.query(
                    "UpdateAssumeRolePolicy",
                    &[
                        ("RoleName", role.clone()),
                        ("PolicyDocument", document(trust)),
                    ],
                )
                .await?;
            }
            let before: BTreeSet<String> =
                role_policies(old)?.into_iter().map(|(n, _)| n).collect();
            let after = role_policies(new)?;
            for (policy, doc) in &after {
                ctx.query(
                    "PutRolePolicy",
                    &[
                        ("RoleName", role.clone()),
                        ("PolicyName", policy.clone()),
                        ("PolicyDocument", doc.clone()),
                    ],
                )
                .await?;
            }
            for gone in before
                .iter()
                .filter(|n| !after.iter().any(|(a, _)| a == *n))
            {
                ctx.query(
                    "DeleteRolePolicy",
                    &[("RoleName", role.clone()), ("PolicyName", gone.clone())],
                )
                .await?;
            }
            let (was, now) = (managed_policies(old)?, managed_policies(new)?);
            for arn in now.iter().filter(|a| !was.contains(a)) {
                ctx.query(
                    "AttachRolePolicy",
                    &[("RoleName", role.clone()), ("PolicyArn", arn.clone())],
                )
                .await?;
            }
            for arn in was.iter().filter(|a| !now.contains(a)) {
                ctx.query(
                    "DetachRolePolicy",
                    &[("RoleName", role.clone()), ("PolicyArn", arn.clone())],
                )
                .await?;
            }
            Ok(old_made.clone())
        }
        "AWS::Events::Rule" => {
            let rule = old_made.reference.clone();
            ctx.target("AWSEvents.PutRule", &Value::Object(rule_body(&rule, new)))
                .await?;
            let ids = |p: &Value| -> Vec<String> {
                p.get("Targets")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|t| text(t, "Id"))
                    .collect()
            };
            let gone: Vec<String> = ids(old)
                .into_iter()
                .filter(|i| !ids(new).contains(i))
                .collect();
            if !gone.is_empty() {
                ctx.target(
                    "AWSEvents.RemoveTargets",
                    &json!({"Rule": rule, "Ids": gone}),
                )
                .await?;
            }
            if let Some(t) = new
                .get("Targets")
                .filter(|t| t.as_array().is_some_and(|a| !a.is_empty()))
            {
                ctx.target("AWSEvents.PutTargets", &json!({"Rule": rule, "Targets": t}))
                    .await?;
            }
            Ok(old_made.clone())
        }
        "AWS::ApiGatewayV2::Api" => {
            let body = camel(&Value::Object(pick(
                new,
                &[
                    "Name",
                    "Description",
                    "CorsConfiguration",
                    "DisableExecuteApiEndpoint",
                    "Version",
                ],
            )));
            ctx.rest(
                Method::PATCH,
                &format!("/v2/apis/{}", seg(&old_made.reference)),
                Some(&body),
            )
            .await?;
            Ok(old_made.clone())
        }
        "AWS::ApiGatewayV2::Stage" => {
            let api = required(new, "ApiId")?;
            let body = camel(&Value::Object(pick(
                new,
                &[
                    "AutoDeploy",
                    "StageVariables",
                    "Description",
                    "DefaultRouteSettings",
                ],
            )));
            ctx.rest(
                Method::PATCH,
                &format!("/v2/apis/{}/stages/{}", seg(&api), seg(&old_made.reference)),
                Some(&body),
            )
            .await?;
            Ok(old_made.clone())
        }
        "AWS::ApiGatewayV2::Route"
        | "AWS::ApiGatewayV2::Integration"
        | "AWS::ApiGatewayV2::Authorizer" => {
            let (collection, _, _, keys) = api_child(kind);
            let api = required(new, "ApiId")?;
            let mut body = camel(&Value::Object(pick(new, keys)));
            if kind == "AWS::ApiGatewayV2::Route"
                && new.get("AuthorizationType").is_none()
                && old.get("AuthorizationType").is_some()
            {
                body["authorizationType"] = json!("NONE");
            }
            ctx.rest(
                Method::PATCH,
                &format!(
                    "/v2/apis/{}/{collection}/{}",
                    seg(&api),
                    seg(&old_made.reference)
                ),
                Some(&body),
            )
            .await?;
            Ok(old_made.clone())
        }
        "AWS::S3::Bucket" => {
            bucket_settings(ctx, &old_made.reference, new).await?;
            if old.get("NotificationConfiguration").is_some()
                && new.get("NotificationConfiguration").is_none()
            {
                put_notifications(ctx, &old_made.reference, &json!({})).await?;
            }
            Ok(old_made.clone())
        }
        "AWS::Cognito::UserPool" => {
            let mut body = user_pool_body(new);
            body.remove("UsernameAttributes");
            body.remove("AliasAttributes");
            body.remove("Schema");
            body.remove("UsernameConfiguration");
            body.insert("UserPoolId".into(), json!(old_made.reference));
            ctx.target(
                "AWSCognitoIdentityProviderService.UpdateUserPool",
                &Value::Object(body),
            )
            .await?;
            Ok(old_made.clone())
        }
        "AWS::Cognito::UserPoolClient" => {
            let mut body = pick(new, properties_of(kind));
            body.remove("GenerateSecret");
            body.insert("ClientId".into(), json!(old_made.reference));
            ctx.target(
                "AWSCognitoIdentityProviderService.UpdateUserPoolClient",
                &Value::Object(body),
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
        "AWS::SQS::Queue" => {
            ctx.target(
                "AmazonSQS.DeleteQueue",
                &json!({"QueueUrl": made.reference}),
            )
            .await?;
        }
        "AWS::DynamoDB::Table" => {
            ctx.target(
                "DynamoDB_20120810.DeleteTable",
                &json!({"TableName": made.reference}),
            )
            .await?;
        }
        "AWS::IAM::Role" => {
            let listed = ctx
                .query("ListRolePolicies", &[("RoleName", made.reference.clone())])
                .await?;
            let attached = ctx
                .query(
                    "ListAttachedRolePolicies",
                    &[("RoleName", made.reference.clone())],
                )
                .await?;
            delete_role(
                ctx,
                &made.reference,
                xml_all(&listed, "member"),
                xml_all(&attached, "PolicyArn"),
            )
            .await?;
        }
        "AWS::Events::Rule" => {
            let ids: Vec<String> = props
                .get("Targets")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|t| text(t, "Id"))
                .collect();
            if !ids.is_empty() {
                ctx.target(
                    "AWSEvents.RemoveTargets",
                    &json!({"Rule": made.reference, "Ids": ids}),
                )
                .await?;
            }
            ctx.target("AWSEvents.DeleteRule", &json!({"Name": made.reference}))
                .await?;
        }
        "AWS::ApiGatewayV2::Api" => {
            ctx.rest(
                Method::DELETE,
                &format!("/v2/apis/{}", seg(&made.reference)),
                None,
            )
            .await?;
        }
        "AWS::ApiGatewayV2::Stage"
        | "AWS::ApiGatewayV2::Route"
        | "AWS::ApiGatewayV2::Integration"
        | "AWS::ApiGatewayV2::Authorizer" => {
            let collection = if kind == "AWS::ApiGatewayV2::Stage" {
                "stages"
            } else {
                api_child(kind).0
            };
            let api = required(props, "ApiId")?;
            ctx.rest(
                Method::DELETE,
                &format!(
                    "/v2/apis/{}/{collection}/{}",
                    seg(&api),
                    seg(&made.reference)
                ),
                None,
            )
            .await?;
        }
        "AWS::S3::Bucket" => {
            ctx.s3(
                Method::DELETE,
                &format!("/{}", seg(&made.reference)),
                Vec::new(),
            )
            .await?;
        }
        "AWS::Cognito::UserPool" => {
            ctx.target(
                "AWSCognitoIdentityProviderService.DeleteUserPool",
                &json!({"UserPoolId": made.reference}),
            )
            .await?;
        }
        "AWS::Cognito::UserPoolClient" => {
            let pool = required(props, "UserPoolId")?;
            ctx.target(
                "AWSCognitoIdentityProviderService.DeleteUserPoolClient",
                &json!({"UserPoolId": pool, "ClientId": made.reference}),
            )
            .await?;
        }
        _ => {}
    }
    Ok(())
}

fn api_child(
    kind: &str,
) -> (
    &'static str,
    &'static str,
    &'static str,
    &'static [&'static str],
) {
    match kind {
        "AWS::ApiGatewayV2::Route" => (
            "routes",
            "routeId",
            "RouteId",
            &[
                "RouteKey",
                "Target",
                "AuthorizationType",
                "AuthorizerId",
                "AuthorizationScopes",
                "OperationName",
            ],
        ),
        "AWS::ApiGatewayV2::Integration" => (
            "integrations",
            "integrationId",
            "IntegrationId",
            &[
                "IntegrationType",
                "IntegrationUri",
                "IntegrationMethod",
                "PayloadFormatVersion",
                "TimeoutInMillis",
                "Description",
                "RequestParameters",
            ],
        ),
        _ => (
            "authorizers",
            "authorizerId",
            "AuthorizerId",
            &[
                "AuthorizerType",
                "Name",
                "IdentitySource",
                "JwtConfiguration",
                "AuthorizerUri",
                "AuthorizerPayloadFormatVersion",
                "EnableSimpleResponses",
                "AuthorizerResultTtlInSeconds",
            ],
        ),
    }
}

/// API Gateway's REST-JSON names are the template's with a lower-case first letter; maps of
/// the user's own keys (variables, parameters, tags) keep theirs.
fn camel(v: &Value) -> Value {
    crate::recase(v, false, &["StageVariables", "RequestParameters", "Tags"])
}

fn document(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn queue_attributes(props: &Value) -> Result<Value> {
    let mut attributes = Map::new();
    for key in [
        "DelaySeconds",
        "MaximumMessageSize",
        "MessageRetentionPeriod",
        "ReceiveMessageWaitTimeSeconds",
        "VisibilityTimeout",
        "FifoQueue",
        "ContentBasedDeduplication",
        "DeduplicationScope",
        "FifoThroughputLimit",
        "SqsManagedSseEnabled",
    ] {
        if let Some(v) = props.get(key).and_then(crate::intrinsic::scalar_text) {
            attributes.insert(key.into(), json!(v));
        }
    }
    for key in ["RedrivePolicy", "RedriveAllowPolicy"] {
        if let Some(v) = props.get(key) {
            attributes.insert(key.into(), json!(document(v)));
        }
    }
    Ok(Value::Object(attributes))
}

async fn table_made(ctx: &Ctx<'_>, table: &str) -> Result<Made> {
    let d = ctx
        .target(
            "DynamoDB_20120810.DescribeTable",
            &json!({"TableName": table}),
        )
        .await?;
    let t = d.get("Table").cloned().unwrap_or_default();
    let mut attrs = vec![("Arn", json!(text(&t, "TableArn").unwrap_or_default()))];
    if let Some(s) = text(&t, "LatestStreamArn") {
        attrs.push(("StreamArn", json!(s)));
    }
    Ok(made(table, &attrs))
}

async fn time_to_live(ctx: &Ctx<'_>, table: &str, ttl: &Value) -> Result<()> {
    let enabled = boolean(ttl, "Enabled")?.unwrap_or(false);
    let name = required(ttl, "AttributeName")?;
    ctx.target(
        "DynamoDB_20120810.UpdateTimeToLive",
        &json!({"TableName": table, "TimeToLiveSpecification": {"AttributeName": name, "Enabled": enabled}}),
    )
    .await?;
    Ok(())
}

/// Global secondary indexes added and dropped between two table definitions.
fn index_updates(old: &Value, new: &Value) -> Vec<Value> {
    let by_name = |p: &Value| -> Vec<(String, Value)> {
        p.get("GlobalSecondaryIndexes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|i| Some((text(i, "IndexName")?, i.clone())))
            .collect()
    };
    let (before, after) = (by_name(old), by_name(new));
    let mut out = Vec::new();
    for (name, _) in &before {
        if !after.iter().any(|(n, _)| n == name) {
            out.push(json!({"Delete": {"IndexName": name}}));
        }
    }
    for (name, index) in &after {
        if !before.iter().any(|(n, _)| n == name) {
            out.push(json!({"Create": index}));
        }
    }
    out
}

/// A role's inline policies, by name.
fn role_policies(props: &Value) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for p in props
        .get("Policies")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = required(p, "PolicyName")?;
        let doc = p
            .get("PolicyDocument")
            .ok_or_else(|| ProviderError::new(format!("Policy {name} needs a PolicyDocument.")))?;
        out.push((name, document(doc)));
    }
    Ok(out)
}

/// The managed policies a role attaches, by ARN.
fn managed_policies(props: &Value) -> Result<Vec<String>> {
    props
        .get("ManagedPolicyArns")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|a| {
            a.as_str()
                .map(str::to_owned)
                .ok_or_else(|| ProviderError::new("ManagedPolicyArns must list ARNs."))
        })
        .collect()
}

/// The texts of every `<tag>` element.
fn xml_all(xml: &str, tag: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find(&open) {
        let after = &rest[start + open.len()..];
        let Some(end) = after.find(&close) else { break };
        out.push(after[..end].to_owned());
        rest = &after[end..];
    }
    out
}

async fn delete_role(
    ctx: &Ctx<'_>,
    role: &str,
    policies: Vec<String>,
    attached: Vec<String>,
) -> Result<()> {
    for arn in attached {
        if let Err(e) = ctx
            .query(
                "DetachRolePolicy",
                &[("RoleName", role.to_owned()), ("PolicyArn", arn)],
            )
            .await
            && !e.not_found
        {
            return Err(e);
        }
    }
    for p in policies {
        if let Err(e) = ctx
            .query(
                "DeleteRolePolicy",
                &[("RoleName", role.to_owned()), ("PolicyName", p)],
            )
            .await
            && !e.not_found
        {
            return Err(e);
        }
    }
    ctx.query("DeleteRole", &[("RoleName", role.to_owned())])
        .await?;
    Ok(())
}

fn rule_body(rule: &str, props: &Value) -> Map<String, Value> {
    let mut body = pick(
        props,
        &[
            "ScheduleExpression",
            "State",
            "Description",
            "EventBusName",
            "RoleArn",
        ],
    );
    body.insert("Name".into(), json!(rule));
    if let Some(p) = props.get("EventPattern") {
        body.insert("EventPattern".into(), json!(document(p)));
    }
    body
}

async fn bucket_settings(ctx: &Ctx<'_>, bucket: &str, props: &Value) -> Result<()> {
    if let Some(v) = props.get("VersioningConfiguration") {
        let status = required(v, "Status")?;
        let xml = format!(
            "<VersioningConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Status>{}</Status></VersioningConfiguration>",
            xml_escape(&status)
        );
        ctx.s3(
            Method::PUT,
            &format!("/{}?versioning", seg(bucket)),
            xml.into_bytes(),
        )
        .await?;
    }
    if let Some(n) = props.get("NotificationConfiguration") {
        put_notifications(ctx, bucket, n).await?;
    }
    Ok(())
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// `PutBucketNotificationConfiguration` from the template's `NotificationConfiguration`.
async fn put_notifications(ctx: &Ctx<'_>, bucket: &str, n: &Value) -> Result<()> {
    let mut xml = String::from(
        "<NotificationConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">",
    );
    for (list, element, target_key, target_element) in [
        (
            "LambdaConfigurations",
            "CloudFunctionConfiguration",
            "Function",
            "CloudFunction",
        ),
        (
            "QueueConfigurations",
            "QueueConfiguration",
            "Queue",
            "Queue",
        ),
    ] {
        for (i, c) in n
            .get(list)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let target = required(c, target_key)?;
            let event = required(c, "Event")?;
            xml.push_str(&format!("<{element}><Id>{list}{i}</Id><{target_element}>{}</{target_element}><Event>{}</Event>", xml_escape(&target), xml_escape(&event)));
            let rules = c
                .get("Filter")
                .and_then(|f| f.get("S3Key"))
                .and_then(|k| k.get("Rules"))
                .and_then(Value::as_array);
            if let Some(rules) = rules {
                xml.push_str("<Filter><S3Key>");
                for r in rules {
                    xml.push_str(&format!(
                        "<FilterRule><Name>{}</Name><Value>{}</Value></FilterRule>",
                        xml_escape(&required(r, "Name")?),
                        xml_escape(&required(r, "Value")?)
                    ));
                }
                xml.push_str("</S3Key></Filter>");
            }
            xml.push_str(&format!("</{element}>"));
        }
    }
    if n.get("TopicConfigurations").is_some() || n.get("EventBridgeConfiguration").is_some() {
        return Err(ProviderError::new(
            "NotificationConfiguration: topics and EventBridge are not supported (functions and queues are).",
        ));
    }
    xml.push_str("</NotificationConfiguration>");
    ctx.s3(
        Method::PUT,
        &format!("/{}?notification", seg(bucket)),
        xml.into_bytes(),
    )
    .await?;
    Ok(())
}

/// CreateUserPool's input: the template's properties, but for the name (`PoolName` there).
fn user_pool_body(props: &Value) -> Map<String, Value> {
    let mut body = pick(props, properties_of("AWS::Cognito::UserPool"));
    body.remove("UserPoolName");
    body
}

fn user_pool_made(ctx: &Ctx<'_>, id: &str, pool: &Value) -> Made {
    let arn = text(pool, "Arn").unwrap_or_else(|| {
        format!(
            "arn:aws:cognito-idp:{}:{}:userpool/{id}",
            ctx.region,
            ctx.account()
        )
    });
    made(
        id,
        &[
            ("Arn", json!(arn)),
            ("UserPoolId", json!(id)),
            (
                "ProviderName",
                json!(format!("cognito-idp.{}.amazonaws.com/{id}", ctx.region)),
            ),
            (
                "ProviderURL",
                json!(format!(
                    "https://cognito-idp.{}.amazonaws.com/{id}",
                    ctx.region
                )),
            ),
        ],
    )
}
