//! A pool's Lambda triggers, run synchronously with Cognito's event shapes: the event goes to
//! the function named in the pool's `LambdaConfig`, and the function returns it with its
//! `response` filled in. A trigger that fails, times out (5 s, as on AWS) or returns something
//! that is not the event refuses the operation with `UserLambdaValidationException`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use nimbus_control::ControlPlane;
use nimbus_types::InvokeRequest;
use nimbus_userpools::model::Pool;
use serde_json::{Map, Value, json};

use crate::{CognitoError, Result};

/// How long a trigger may run.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Runs triggers through the node's functions.
pub struct Triggers {
    /// `None` where no functions run (a pool with triggers then refuses what needs them).
    pub control: Option<Arc<ControlPlane>>,
}

fn failed(trigger: &str, why: impl std::fmt::Display) -> CognitoError {
    CognitoError::new(
        "UserLambdaValidationException",
        format!("{trigger} failed with error {why}."),
    )
}

/// The event every trigger gets, before its own `request`.
pub(crate) fn event(
    pool: &Pool,
    client_id: Option<&str>,
    username: &str,
    source: &str,
    request: Value,
    response: Value,
) -> Value {
    json!({
        "version": "1",
        "region": pool.id.split('_').next().unwrap_or_default(),
        "userPoolId": pool.id,
        "userName": username,
        "callerContext": {
            "awsSdkVersion": "aws-sdk-unknown-unknown",
            "clientId": client_id.unwrap_or("CLIENT_ID_NOT_APPLICABLE"),
        },
        "triggerSource": source,
        "request": request,
        "response": response,
    })
}

/// A user's attributes as a trigger sees them (with `cognito:user_status`).
pub(crate) fn attributes(
    user: &BTreeMap<String, String>,
    status: Option<&str>,
) -> Map<String, Value> {
    let mut out: Map<String, Value> = user
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    if let Some(s) = status {
        out.insert("cognito:user_status".into(), Value::String(s.to_owned()));
    }
    out
}

impl Triggers {
    /// Runs the pool's `trigger` with `event`, if it has one; returns the event the function
    /// gave back (`None`: no such trigger).
    pub(crate) async fn run(
        &self,
        pool: &Pool,
        trigger: &str,
        event: Value,
    ) -> Result<Option<Value>> {
        let Some(arn) = pool.settings.lambda_config.get(trigger) else {
            return Ok(None);
        };
        let reference =
            nimbus_types::FunctionRef::parse(arn).map_err(|e| failed(trigger, e.to_string()))?;
        if reference
            .account
            .as_deref()
            .is_some_and(|a| a != pool.account)
        {
            return Err(failed(trigger, "the function is in another account"));
        }
        let Some(control) = &self.control else {
            return Err(failed(trigger, "functions do not run here"));
        };
        let key = nimbus_types::name::scoped(&pool.account, &reference.name);
        let function = control
            .resolve_invocation(&key, reference.qualifier.as_ref())
            .map_err(|_| failed(trigger, format!("the function {arn} does not exist")))?;
        let payload = serde_json::to_vec(&event).map_err(|e| failed(trigger, e))?;
        let request = InvokeRequest {
            request_id: uuid::Uuid::new_v4().to_string(),
            payload: payload.into(),
            client_context: None,
            async_attempt: None,
            http: None,
            stream: None,
            qualifier: reference.qualifier.as_ref().map(|q| q.as_str().to_owned()),
        };
        let outcome =
            match tokio::time::timeout(TIMEOUT, control.manager().invoke(&function, request)).await
            {
                Err(_) => return Err(failed(trigger, "Task timed out")),
                Ok(Err(e)) => return Err(failed(trigger, e)),
                Ok(Ok(o)) => o,
            };
        if outcome.error.is_some() {
            let message = serde_json::from_slice::<Value>(&outcome.payload)
                .ok()
                .and_then(|v| {
                    v.get("errorMessage")
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                })
                .unwrap_or_else(|| "an unhandled error".to_owned());
            return Err(failed(trigger, message));
        }
        match serde_json::from_slice::<Value>(&outcome.payload) {
            Ok(v @ Value::Object(_)) => Ok(Some(v)),
            _ => Err(failed(trigger, "Unrecognizable lambda output")),
        }
    }
}

impl Triggers {
    /// Runs PreSignUp for a user about to be made (`source`: `PreSignUp_SignUp` or
    /// `PreSignUp_AdminCreateUser`) with the request's validation data and client metadata;
    /// returns the event the function gave back.
    pub(crate) async fn pre_sign_up(
        &self,
        pool: &Pool,
        client_id: Option<&str>,
        user: &nimbus_userpools::model::User,
        source: &str,
        input: &Value,
    ) -> Result<Option<Value>> {
        let event = event(
            pool,
            client_id,
            &user.username,
            source,
            json!({
                "userAttributes": attributes(&user.attributes, None),
                "validationData": crate::string_map(input, "ValidationData")?,
                "clientMetadata": crate::string_map(input, "ClientMetadata")?,
            }),
            json!({ "autoConfirmUser": false, "autoVerifyEmail": false, "autoVerifyPhone": false }),
        );
        self.run(pool, "PreSignUp", event).await
    }

    /// Runs a trigger that is only told what happened (PostConfirmation, PostAuthentication):
    /// the user's attributes and `extra` in its request; its answer is not read.
    pub(crate) async fn tell(
        &self,
        pool: &Pool,
        client_id: Option<&str>,
        user: &nimbus_userpools::model::User,
        trigger: &str,
        source: &str,
        extra: Value,
    ) -> Result<()> {
        let mut request = Map::new();
        request.insert(
            "userAttributes".into(),
            Value::Object(attributes(&user.attributes, Some(user.status.as_str()))),
        );
        if let Value::Object(extra) = extra {
            request.extend(extra);
        }
        let event = event(
            pool,
            client_id,
            &user.username,
            source,
            Value::Object(request),
            json!({}),
        );
        self.run(pool, trigger, event).await.map(|_| ())
    }
}

/// A boolean member of a trigger's `response`.
pub(crate) fn response_flag(returned: &Value, name: &str) -> bool {
    returned
        .get("response")
        .and_then(|r| r.get(name))
        .and_then(Value::as_bool)
        .unwrap_or(false)
}
