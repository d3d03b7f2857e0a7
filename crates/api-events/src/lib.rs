//! Schedules through the part of EventBridge's API that `aws events` uses for them (JSON 1.1
//! protocol, `X-Amz-Target: AWSEvents.<Operation>`): PutRule with a ScheduleExpression,
//! PutTargets (functions), DescribeRule, ListRules, ListTargetsByRule, Enable/DisableRule,
//! RemoveTargets, DeleteRule.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use nimbus_events::schedule::Schedule;
use nimbus_events::scheduler::Scheduler;
use nimbus_types::queue::{RuleTarget, ScheduleRule};
use serde_json::{Value, json};

use crate::Frontend;

struct EventsError {
    code: &'static str,
    message: String,
}

fn error(code: &'static str, message: impl Into<String>) -> EventsError {
    EventsError {
        code,
        message: message.into(),
    }
}

impl IntoResponse for EventsError {
    fn into_response(self) -> Response {
        let body = json!({ "__type": self.code, "message": self.message });
        let mut response = (StatusCode::BAD_REQUEST, axum::Json(body)).into_response();
        response.headers_mut().insert(
            "content-type",
            HeaderValue::from_static("application/x-amz-json-1.1"),
        );
        response
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

fn rule(scheduler: &Scheduler, name: &str) -> Result<ScheduleRule> {
    scheduler.get(name).ok_or_else(|| {
        error(
            "ResourceNotFoundException",
            format!("Rule {name} does not exist on EventBus default."),
        )
    })
}

fn describe(scheduler: &Scheduler, r: &ScheduleRule) -> Value {
    json!({
        "Name": r.name,
        "Arn": scheduler.rule_arn(&r.name),
        "ScheduleExpression": r.schedule_expression,
        "State": if r.enabled { "ENABLED" } else { "DISABLED" },
        "Description": r.description,
        "EventBusName": "default",
    })
}

fn save(scheduler: &Scheduler, rule: ScheduleRule) -> Result<()> {
    scheduler.save(rule).map_err(|e| {
        error(
            "InternalException",
            format!("could not store the rule: {e}"),
        )
    })
}

fn dispatch(f: &Frontend, scheduler: &Scheduler, operation: &str, input: &Value) -> Result<Value> {
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
            let previous = scheduler.get(&name);
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
            };
            save(scheduler, rule)?;
            Ok(json!({ "RuleArn": scheduler.rule_arn(&name) }))
        }
        "DescribeRule" => {
            let r = rule(scheduler, &string(input, "Name")?)?;
            Ok(describe(scheduler, &r))
        }
        "ListRules" => {
            let prefix = input
                .get("NamePrefix")
                .and_then(Value::as_str)
                .unwrap_or("");
            let rules: Vec<Value> = scheduler
                .all()
                .iter()
                .filter(|r| r.name.starts_with(prefix))
                .map(|r| describe(scheduler, r))
                .collect();
            Ok(json!({ "Rules": rules }))
        }
        "EnableRule" | "DisableRule" => {
            let mut r = rule(scheduler, &string(input, "Name")?)?;
            let enable = operation == "EnableRule";
            if enable && !r.enabled {
                r.enabled_ms = now;
            }
            r.enabled = enable;
            save(scheduler, r)?;
            Ok(json!({}))
        }
        "PutTargets" => {
            let mut r = rule(scheduler, &string(input, "Rule")?)?;
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
                let function = nimbus_events::destination_function(&arn);
                let problem = if id.is_empty() || id.len() > 64 {
                    Some("The target Id must be 1 to 64 characters".to_owned())
                } else if function
                    .as_ref()
                    .is_none_or(|name| f.control.function(name).is_none())
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
            let r = rule(scheduler, &string(input, "Rule")?)?;
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
            let mut r = rule(scheduler, &string(input, "Rule")?)?;
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
            let r = rule(scheduler, &string(input, "Name")?)?;
            if !r.targets.is_empty() {
                return Err(error(
                    "ValidationException",
                    "Rule can't be deleted since it has targets.",
                ));
            }
            scheduler.delete(&r.name).map_err(|e| {
                error(
                    "InternalException",
                    format!("could not delete the rule: {e}"),
                )
            })?;
            Ok(json!({}))
        }
        other => Err(error(
            "UnknownOperationException",
            format!("unknown operation {other}"),
        )),
    }
}

/// `POST /` with `X-Amz-Target: AWSEvents.<Operation>`.
pub(crate) fn handle(
    f: &Frontend,
    scheduler: &Scheduler,
    operation: &str,
    body: &[u8],
) -> Response {
    let input: Value = if body.is_empty() {
        json!({})
    } else {
        match serde_json::from_slice(body) {
            Ok(v @ Value::Object(_)) => v,
            _ => {
                return error(
                    "SerializationException",
                    "The request body is not a JSON object.",
                )
                .into_response();
            }
        }
    };
    match dispatch(f, scheduler, operation, &input) {
        Ok(output) => {
            let mut response = axum::Json(output).into_response();
            response.headers_mut().insert(
                "content-type",
                HeaderValue::from_static("application/x-amz-json-1.1"),
            );
            response
        }
        Err(e) => e.into_response(),
    }
}
