//! DynamoDB's JSON 1.0 protocol (`POST /` with `X-Amz-Target: DynamoDB_20120810.<Operation>`,
//! as the `aws dynamodb` CLI and the SDKs speak it) over [`nimbus_tables`]: parse and validate
//! the request, turn its expressions into the store's checks and changes, encode the answer.
//! Every error leaves in DynamoDB's shape (`__type` qualified with the service's namespace).

#![forbid(unsafe_code)]

mod items;
mod streams;
mod tables;
mod transact;

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use nimbus_aws_wire::ErrorEnvelope;
use nimbus_aws_wire::target::JsonVersion;
use nimbus_identity::Caller;
use nimbus_tables::TableStore;
use serde_json::{Map, Value, json};

/// The largest request: a batch of 25 items of 400 KB, with room for the JSON around them.
pub const MAX_REQUEST_BYTES: u64 = 16 * 1024 * 1024;

/// An error in DynamoDB's JSON protocol.
#[derive(Debug)]
pub struct DynamoError {
    status: StatusCode,
    /// The namespaced type (`com.amazonaws.dynamodb.v20120810#ResourceNotFoundException`).
    error_type: String,
    message: String,
    /// Further members (`Item` of a failed condition, `CancellationReasons`).
    extra: Map<String, Value>,
}

type Result<T, E = DynamoError> = std::result::Result<T, E>;

impl DynamoError {
    fn new(status: StatusCode, shape: &str, message: impl Into<String>) -> Self {
        let error_type = if shape == "ValidationException" {
            "com.amazon.coral.validate#ValidationException".to_owned()
        } else if shape.starts_with("com.") {
            shape.to_owned()
        } else {
            format!("com.amazonaws.dynamodb.v20120810#{shape}")
        };
        Self {
            status,
            error_type,
            message: message.into(),
            extra: Map::new(),
        }
    }
}

/// A ValidationException.
pub(crate) fn validation(message: impl Into<String>) -> DynamoError {
    DynamoError::new(StatusCode::BAD_REQUEST, "ValidationException", message)
}

impl From<nimbus_tables::Error> for DynamoError {
    fn from(e: nimbus_tables::Error) -> Self {
        use nimbus_tables::Error as E;
        let message = e.to_string();
        match e {
            E::Validation(m) => validation(m),
            E::ResourceNotFound(m) => {
                DynamoError::new(StatusCode::BAD_REQUEST, "ResourceNotFoundException", m)
            }
            E::ResourceInUse(m) => {
                DynamoError::new(StatusCode::BAD_REQUEST, "ResourceInUseException", m)
            }
            E::LimitExceeded(m) => {
                DynamoError::new(StatusCode::BAD_REQUEST, "LimitExceededException", m)
            }
            E::ConditionalCheckFailed(item) => {
                let mut err = DynamoError::new(
                    StatusCode::BAD_REQUEST,
                    "ConditionalCheckFailedException",
                    message,
                );
                if let Some(item) = item {
                    err.extra.insert(
                        "Item".into(),
                        Value::Object(nimbus_tables::value::item_json(&item)),
                    );
                }
                err
            }
            E::TransactionCanceled(reasons) => {
                let mut codes = Vec::with_capacity(reasons.len());
                let mut shown = Vec::with_capacity(reasons.len());
                for r in reasons {
                    let (code, reason) = match r {
                        None => ("None", json!({ "Code": "None" })),
                        Some(E::ConditionalCheckFailed(item)) => {
                            let mut reason = json!({
                                "Code": "ConditionalCheckFailed",
                                "Message": "The conditional request failed",
                            });
                            if let Some(item) = item {
                                reason["Item"] =
                                    Value::Object(nimbus_tables::value::item_json(&item));
                            }
                            ("ConditionalCheckFailed", reason)
                        }
                        Some(other) => (
                            "ValidationError",
                            json!({ "Code": "ValidationError", "Message": other.to_string() }),
                        ),
                    };
                    codes.push(code);
                    shown.push(reason);
                }
                let mut err = DynamoError::new(
                    StatusCode::BAD_REQUEST,
                    "TransactionCanceledException",
                    format!(
                        "Transaction cancelled, please refer cancellation reasons for specific reasons [{}]",
                        codes.join(", ")
                    ),
                );
                err.extra
                    .insert("CancellationReasons".into(), Value::Array(shown));
                err
            }
            E::IdempotentParameterMismatch => DynamoError::new(
                StatusCode::BAD_REQUEST,
                "IdempotentParameterMismatchException",
                message,
            ),
            E::Storage(m) => {
                tracing::error!(error = %m, "table store failure");
                DynamoError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "InternalServerError",
                    "Internal server error",
                )
            }
        }
    }
}

impl From<nimbus_tables::expr::ExprError> for DynamoError {
    fn from(e: nimbus_tables::expr::ExprError) -> Self {
        validation(e.0)
    }
}

impl From<nimbus_tables::value::Invalid> for DynamoError {
    fn from(e: nimbus_tables::value::Invalid) -> Self {
        validation(e.0)
    }
}

impl IntoResponse for DynamoError {
    fn into_response(self) -> Response {
        let mut body = Map::new();
        body.insert("__type".into(), Value::String(self.error_type));
        body.insert("message".into(), Value::String(self.message));
        body.extend(self.extra);
        (
            self.status,
            JsonVersion::V1_0.content_type(),
            Value::Object(body).to_string(),
        )
            .into_response()
    }
}

impl ErrorEnvelope for DynamoError {
    fn too_large(limit: u64, _operation: &str) -> Self {
        DynamoError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            format!("Request must be smaller than {limit} bytes for the operation"),
        )
    }

    fn malformed(message: String) -> Self {
        DynamoError::new(StatusCode::BAD_REQUEST, "SerializationException", message)
    }

    fn unknown_operation(operation: &str) -> Self {
        DynamoError::new(
            StatusCode::BAD_REQUEST,
            "UnknownOperationException",
            format!("The operation {operation} is not supported"),
        )
    }

    fn unauthenticated(error: &nimbus_aws_wire::sigv4::AuthError) -> Self {
        let (status, code) = nimbus_aws_wire::auth_code(error);
        DynamoError::new(status, code, error.to_string())
    }

    fn access_denied(message: String) -> Self {
        DynamoError::new(StatusCode::BAD_REQUEST, "AccessDeniedException", message)
    }
}

pub(crate) use nimbus_aws_wire::target::field;

/// A string member.
pub(crate) fn string<'a>(input: &'a Value, name: &str) -> Result<Option<&'a str>> {
    nimbus_aws_wire::target::string::<DynamoError>(input, name)
}

/// The `TableName` member, which every table and item operation requires.
pub(crate) fn table_name(input: &Value) -> Result<&str> {
    string(input, "TableName")?.ok_or_else(|| {
        validation(
            "1 validation error detected: Value null at 'tableName' failed to satisfy constraint: Member must not be null",
        )
    })
}

/// The actions a request needs, each on a table's ARN (or `*`): the operation's own, or for a
/// transaction each action's (`dynamodb:PutItem`, `dynamodb:ConditionCheckItem`, …).
fn required(
    store: &TableStore,
    caller: &Caller,
    operation: &str,
    input: &Value,
) -> Vec<(String, String)> {
    let arn = |name: &str| {
        format!(
            "arn:aws:dynamodb:{}:{}:table/{name}",
            store.region(),
            caller.account
        )
    };
    let own = format!("dynamodb:{operation}");
    if let Some(stream) = field(input, "StreamArn").and_then(Value::as_str) {
        return vec![(own, stream.to_owned())];
    }
    if let Some(name) = field(input, "TableName").and_then(Value::as_str) {
        return vec![(own, arn(name))];
    }
    if let Some(Value::Object(tables)) = field(input, "RequestItems") {
        return tables.keys().map(|n| (own.clone(), arn(n))).collect();
    }
    if let Some(Value::Array(actions)) = field(input, "TransactItems") {
        let mut out = Vec::new();
        for a in actions.iter().filter_map(Value::as_object) {
            for (kind, body) in a {
                let action = match kind.as_str() {
                    "Put" => "dynamodb:PutItem",
                    "Update" => "dynamodb:UpdateItem",
                    "Delete" => "dynamodb:DeleteItem",
                    "ConditionCheck" => "dynamodb:ConditionCheckItem",
                    "Get" => "dynamodb:GetItem",
                    _ => continue,
                };
                if let Some(name) = body.get("TableName").and_then(Value::as_str) {
                    out.push((action.to_owned(), arn(name)));
                }
            }
        }
        return out;
    }
    vec![(own, "*".to_owned())]
}

/// Which of the two protocols a request speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// `DynamoDB_20120810.*`
    Tables,
    /// `DynamoDBStreams_20120810.*`
    Streams,
}

/// Serves one DynamoDB or DynamoDB Streams request.
pub async fn handle(
    store: &TableStore,
    caller: &Caller,
    service: Service,
    operation: &str,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    let input = match nimbus_aws_wire::target::read_input::<DynamoError>(
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
    for (action, resource) in required(store, caller, operation, &input) {
        if let Err(denied) = caller.authorize(&action, &resource) {
            return DynamoError::access_denied(denied.message).into_response();
        }
    }
    let account = caller.account.as_str();
    let output = match service {
        Service::Tables => dispatch(store, account, operation, &input).await,
        Service::Streams => match operation {
            "ListStreams" => streams::list(store, account, &input),
            "DescribeStream" => streams::describe(store, account, &input),
            "GetShardIterator" => streams::shard_iterator(store, account, &input),
            "GetRecords" => streams::records(store, account, &input),
            other => Err(DynamoError::unknown_operation(other)),
        },
    };
    match output {
        Ok(output) => nimbus_aws_wire::target::ok(JsonVersion::V1_0, &output),
        Err(e) => e.into_response(),
    }
}

async fn dispatch(
    store: &TableStore,
    account: &str,
    operation: &str,
    input: &Value,
) -> Result<Value> {
    match operation {
        "CreateTable" => tables::create(store, account, input).await,
        "DescribeTable" => tables::describe(store, account, input),
        "ListTables" => tables::list(store, account, input),
        "DeleteTable" => tables::delete(store, account, input).await,
        "UpdateTable" => tables::update(store, account, input).await,
        "UpdateTimeToLive" => tables::update_ttl(store, account, input).await,
        "DescribeTimeToLive" => tables::describe_ttl(store, account, input),
        "PutItem" => items::write(store, account, input, items::WriteKind::Put).await,
        "GetItem" => items::get(store, account, input),
        "DeleteItem" => items::write(store, account, input, items::WriteKind::Delete).await,
        "UpdateItem" => items::write(store, account, input, items::WriteKind::Update).await,
        "Query" => items::query(store, account, input),
        "Scan" => items::scan(store, account, input),
        "BatchWriteItem" => items::batch_write(store, account, input).await,
        "BatchGetItem" => items::batch_get(store, account, input),
        "TransactWriteItems" => transact::write(store, account, input).await,
        "TransactGetItems" => transact::get(store, account, input),
        "DescribeEndpoints" => Ok(json!({
            "Endpoints": [{ "Address": "localhost", "CachePeriodInMinutes": 1440 }]
        })),
        other => Err(DynamoError::unknown_operation(other)),
    }
}
