//! Schedules through the part of EventBridge's API that `aws events` uses for them (JSON 1.1
//! protocol, `X-Amz-Target: AWSEvents.<Operation>`): PutRule with a ScheduleExpression,
//! PutTargets (functions), DescribeRule, ListRules, ListTargetsByRule, Enable/DisableRule,
//! RemoveTargets, DeleteRule. The rules and their firing live in `nimbus_events::scheduler`.

#![forbid(unsafe_code)]

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use nimbus_aws_wire::target::JsonVersion;
use nimbus_aws_wire::{ErrorEnvelope, envelope};
use nimbus_control::ControlPlane;
use nimbus_events::schedule::Schedule;
use nimbus_events::scheduler::Scheduler;
use nimbus_types::arn::FunctionArn;
use nimbus_types::name::scoped;
use nimbus_types::queue::{RuleTarget, ScheduleRule};
use serde_json::{Value, json};

/// EventBridge's requests are small documents; its PutEvents limit is 256 KiB.
pub const MAX_REQUEST_BYTES: u64 = 256 * 1024;

/// An error in EventBridge's JSON 1.1 format.
#[derive(Debug)]
pub struct EventsError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

fn error(code: &'static str, message: impl Into<String>) -> EventsError {
    EventsError {
        status: StatusCode::BAD_REQUEST,
        code,
        message: message.into(),
    }
}

/// A failure inside the node: logged in full, reported without internals.
fn internal(detail: impl std::fmt::Display) -> EventsError {
    tracing::error!(error = %detail, "internal error");
    EventsError {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        code: "InternalException",
        message: "The service encountered an internal error.".into(),
    }
}

impl IntoResponse for EventsError {
    fn into_response(self) -> Response {
        envelope::json(
            JsonVersion::V1_1,
            self.status,
            self.code,
            &self.message,
            &[],
        )
    }
}

impl ErrorEnvelope for EventsError {
    fn too_large(limit: u64, _operation: &str) -> Self {
        EventsError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            code: "ValidationException",
            message: format!("The request must be smaller than {limit} bytes."),
        }
    }

    fn malformed(message: String) -> Self {
        error("SerializationException", message)
    }

    fn unknown_operation(operation: &str) -> Self {
        error(
            "UnknownOperationException",
            format!("unknown operation {operation}"),
        )
    }

    fn unauthenticated(e: &nimbus_aws_wire::sigv4::AuthError) -> Self {
        let (status, code) = nimbus_aws_wire::auth_code(e);
        EventsError {
            status,
            code,
            message: e.to_string(),
        }
    }

    fn access_denied(message: String) -> Self {
        error("AccessDeniedException", message)
    }
}

type Result<T> = std::result::Result<T, EventsError>;

fn string(input: &Value, name: &str) -> Result<String> {
    input
        .get(name)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| {
            error(
                "ValidationException",
                nimbus_types::InvalidParameter::constraint(name, None, "Member must not be null")
                    .to_string(),
            )
        })
}

fn valid_rule_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// A rule of `account`, by name.
fn rule(scheduler: &Scheduler, account: &str, name: &str) -> Result<ScheduleRule> {
    scheduler.get(&scoped(account, name)).ok_or_else(|| {
        error(
            "ResourceNotFoundException",
            format!("Rule {name} does not exist on EventBus default."),
        )
    })
}

fn describe(scheduler: &Scheduler, r: &ScheduleRule) -> Value {
    json!({
        "Name": r.name,
        "Arn": scheduler.rule_arn(&r.key()),
        "ScheduleExpression": r.schedule_expression,
        "State": if r.enabled { "ENABLED" } else { "DISABLED" },
        "Description": r.description,
        "EventBusName": "default",
    })
}

fn save(scheduler: &Scheduler, rule: ScheduleRule) -> Result<()> {
    scheduler
        .save(rule)
        .map_err(|e| internal(format!("could not store the rule: {e}")))
}

fn dispatch(
    control: &ControlPlane,
    scheduler: &Scheduler,
    account: &str,
    operation: &str,
    input: &Value,
) -> Result<Value> {
    let now = nimbus_types::time::now_ms();
    match operation {
        "PutRule" => {
            let name = string(input, "Name")?;
            if !valid_rule_name(&name) {
                return Err(error(
                    "ValidationException",
                    format!(
                        "Rule name {name:?} must match [.\\-_A-Za-z0-9]+ and be at most 64 characters"
                    ),
                ));
            }
            if input.get("EventPattern").is_some_and(|p| !p.is_null()) {
                return Err(error(
                    "ValidationException",
                    "Event patterns are not supported; use a ScheduleExpression",
                ));
            }
            if input
                .get("EventBusName")
                .and_then(Value::as_str)
                .is_some_and(|b| b != "default")
            {
                return Err(error(
                    "ValidationException",
                    "Only the default event bus exists",
                ));
            }
            let expression = string(input, "ScheduleExpression")?;
            Schedule::parse(&expression).map_err(|e| error("ValidationException", e))?;
            let enabled = match input.get("State").and_then(Value::as_str) {
                None | Some("ENABLED") => true,
                Some("DISABLED") => false,
                Some(other) => {
                    return Err(error(
                        "ValidationException",
                        format!("State {other} must be ENABLED or DISABLED"),
                    ));
                }
            };
            let previous = scheduler.get(&scoped(account, &name));
            let rule = ScheduleRule {
                schedule_expression: expression,
                description: input
                    .get("Description")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
                enabled,
                created_ms: previous.as_ref().map_or(now, |p| p.created_ms),
                enabled_ms: match &previous {
                    Some(p) if p.enabled && enabled => p.enabled_ms,
                    _ => now,
                },
                last_fire_ms: previous.as_ref().and_then(|p| p.last_fire_ms),
                targets: previous.map(|p| p.targets).unwrap_or_default(),
                name: name.clone(),
                account: account.to_owned(),
            };
            save(scheduler, rule)?;
            Ok(json!({ "RuleArn": scheduler.rule_arn(&scoped(account, &name)) }))
        }
        "DescribeRule" => {
            let r = rule(scheduler, account, &string(input, "Name")?)?;
            Ok(describe(scheduler, &r))
        }
        "ListRules" => {
            let prefix = input
                .get("NamePrefix")
                .and_then(Value::as_str)
                .unwrap_or("");
            let rules: Vec<Value> = scheduler
                .of(account)
                .iter()
                .filter(|r| r.name.starts_with(prefix))
                .map(|r| describe(scheduler, r))
                .collect();
            Ok(json!({ "Rules": rules }))
        }
        "EnableRule" | "DisableRule" => {
            let mut r = rule(scheduler, account, &string(input, "Name")?)?;
            let enable = operation == "EnableRule";
            if enable && !r.enabled {
                r.enabled_ms = now;
            }
            r.enabled = enable;
            save(scheduler, r)?;
            Ok(json!({}))
        }
        "PutTargets" => {
            let mut r = rule(scheduler, account, &string(input, "Rule")?)?;
            let targets = input
                .get("Targets")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            if targets.is_empty() || targets.len() > 10 {
                return Err(error(
                    "ValidationException",
                    "Targets must hold between 1 and 10 entries",
                ));
            }
            let mut failed = Vec::new();
            for t in targets {
                let id = t
                    .get("Id")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                let arn = t
                    .get("Arn")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                let input_text = t.get("Input").and_then(Value::as_str).map(str::to_owned);
                // A function of the rule's account.
                let function = FunctionArn::parse(&arn)
                    .ok()
                    .filter(|f| f.account == account)
                    .map(|f| scoped(account, &f.name));
                let problem = if id.is_empty() || id.len() > 64 {
                    Some("The target Id must be 1 to 64 characters".to_owned())
                } else if function
                    .as_ref()
                    .is_none_or(|name| control.function(name).is_none())
                {
                    Some(format!("Target {arn} is not an existing function"))
                } else if input_text
                    .as_ref()
                    .is_some_and(|i| serde_json::from_str::<Value>(i).is_err())
                {
                    Some("Input must be valid JSON".to_owned())
                } else {
                    None
                };
                match problem {
                    Some(message) => failed.push(json!({ "TargetId": id, "ErrorCode": "ValidationException", "ErrorMessage": message })),
                    None => {
                        r.targets.retain(|existing| existing.id != id);
                        r.targets.push(RuleTarget { id, arn, input: input_text });
                    }
                }
            }
            save(scheduler, r)?;
            Ok(json!({ "FailedEntryCount": failed.len(), "FailedEntries": failed }))
        }
        "ListTargetsByRule" => {
            let r = rule(scheduler, account, &string(input, "Rule")?)?;
            let targets: Vec<Value> = r
                .targets
                .iter()
                .map(|t| {
                    let mut v = json!({ "Id": t.id, "Arn": t.arn });
                    if let Some(i) = &t.input {
                        v["Input"] = json!(i);
                    }
                    v
                })
                .collect();
            Ok(json!({ "Targets": targets }))
        }
        "RemoveTargets" => {
            let mut r = rule(scheduler, account, &string(input, "Rule")?)?;
            let ids: Vec<String> = input
                .get("Ids")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            r.targets.retain(|t| !ids.contains(&t.id));
            save(scheduler, r)?;
            Ok(json!({ "FailedEntryCount": 0, "FailedEntries": [] }))
        }
        "DeleteRule" => {
            let r = rule(scheduler, account, &string(input, "Name")?)?;
            if !r.targets.is_empty() {
                return Err(error(
                    "ValidationException",
                    "Rule can't be deleted since it has targets.",
                ));
            }
            scheduler
                .delete(&r.key())
                .map_err(|e| internal(format!("could not delete the rule: {e}")))?;
            Ok(json!({}))
        }
        other => Err(EventsError::unknown_operation(other)),
    }
}

/// Serves one EventBridge request whose `X-Amz-Target` named `operation`.
pub async fn handle(
    control: &ControlPlane,
    scheduler: &Scheduler,
    caller: &nimbus_identity::Caller,
    operation: &str,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    let input = match nimbus_aws_wire::target::read_input::<EventsError>(
        headers,
        body,
        MAX_REQUEST_BYTES,
        operation,
    )
    .await
    {
        Ok(input) => input,
        Err(e) => return e.into_response(),
    };
    // Authorized as `events:OPERATION` on the rule it names, if any.
    let rule = ["Name", "Rule"]
        .iter()
        .find_map(|k| input.get(*k).and_then(Value::as_str));
    let resource = rule.map_or_else(
        || "*".to_owned(),
        |r| {
            nimbus_types::arn::RuleArn::new(control.region(), &scoped(&caller.account, r))
                .to_string()
        },
    );
    if let Err(denied) = caller.authorize(&format!("events:{operation}"), &resource) {
        return EventsError::access_denied(denied.message).into_response();
    }
    match dispatch(control, scheduler, &caller.account, operation, &input) {
        Ok(output) => nimbus_aws_wire::target::ok(JsonVersion::V1_1, &output),
        Err(e) => e.into_response(),
    }
}
