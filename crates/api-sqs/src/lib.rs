//! SQS's JSON protocol (`POST /` with `X-Amz-Target: AmazonSQS.<Operation>`, as the `aws sqs`
//! CLI and the SDKs speak it) over [`nimbus_queue::sqs`]: parse, validate the request's shape,
//! call the domain, encode. Every error leaves in SQS's format, with the query-protocol code the
//! SDKs match on in `x-amzn-query-error`.

#![forbid(unsafe_code)]

use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use nimbus_aws_wire::target::JsonVersion;
use nimbus_aws_wire::{ErrorEnvelope, envelope};
use nimbus_queue::sqs::{Error, MessageAttributes, SqsQueues, attributes_md5};
use nimbus_types::name::scoped;
use nimbus_types::queue::QueueConfig;
use serde_json::{Map, Value, json};

/// The largest request SQS accepts: ten messages of 256 KiB in one batch, with room for the
/// JSON around them.
pub const MAX_REQUEST_BYTES: u64 = 10 * 262_144 + 64 * 1024;

/// An error in SQS's JSON protocol.
#[derive(Debug)]
pub struct SqsError {
    status: StatusCode,
    /// The code of SQS's query protocol, which the SDKs still match on.
    query_code: &'static str,
    /// The error shape of the JSON protocol.
    shape: &'static str,
    message: String,
}

type SqsResult<T> = Result<T, SqsError>;

fn err(query_code: &'static str, shape: &'static str, message: impl Into<String>) -> SqsError {
    SqsError {
        status: StatusCode::BAD_REQUEST,
        query_code,
        shape,
        message: message.into(),
    }
}

fn invalid(message: impl Into<String>) -> SqsError {
    err(
        "InvalidParameterValue",
        "InvalidParameterValueException",
        message,
    )
}

fn missing(name: &str) -> SqsError {
    err(
        "MissingParameter",
        "MissingParameter",
        format!("The request must contain the parameter {name}."),
    )
}

impl From<Error> for SqsError {
    fn from(e: Error) -> Self {
        let message = e.to_string();
        match e {
            Error::NoSuchQueue => err(
                "AWS.SimpleQueueService.NonExistentQueue",
                "QueueDoesNotExist",
                message,
            ),
            Error::NameExists(_) => err("QueueAlreadyExists", "QueueNameExists", message),
            Error::InvalidName
            | Error::FifoUnsupported
            | Error::InvalidParameter(_)
            | Error::MessageTooLong(_) => invalid(message),
            Error::InvalidAttributeValue(_) => {
                err("InvalidAttributeValue", "InvalidAttributeValue", message)
            }
            Error::UnknownAttribute(_) => {
                err("InvalidAttributeName", "InvalidAttributeName", message)
            }
            Error::EmptyBody => missing("MessageBody"),
            Error::InvalidReceipt(_) => {
                err("ReceiptHandleIsInvalid", "ReceiptHandleIsInvalid", message)
            }
            Error::MessageNotInflight => err(
                "AWS.SimpleQueueService.MessageNotInflight",
                "MessageNotInflight",
                message,
            ),
            Error::Registry(_) | Error::Queue(_) | Error::Poisoned => {
                tracing::error!(error = %nimbus_types::error_chain(&e), "queue failure");
                SqsError {
                    status: StatusCode::INTERNAL_SERVER_ERROR,
                    query_code: "InternalError",
                    shape: "InternalError",
                    message: "We encountered an internal error. Please try again.".into(),
                }
            }
        }
    }
}

impl IntoResponse for SqsError {
    fn into_response(self) -> Response {
        let sender = if self.status.is_server_error() {
            "Receiver"
        } else {
            "Sender"
        };
        envelope::json(
            JsonVersion::V1_0,
            self.status,
            &format!("com.amazonaws.sqs#{}", self.shape),
            &self.message,
            &[(
                HeaderName::from_static("x-amzn-query-error"),
                format!("{};{sender}", self.query_code),
            )],
        )
    }
}

impl ErrorEnvelope for SqsError {
    fn too_large(limit: u64, _operation: &str) -> Self {
        SqsError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            query_code: "RequestTooLarge",
            shape: "RequestTooLarge",
            message: format!("The request must be smaller than {limit} bytes."),
        }
    }

    fn malformed(message: String) -> Self {
        err("MalformedInput", "InvalidParameterValueException", message)
    }

    fn unknown_operation(operation: &str) -> Self {
        err(
            "InvalidAction",
            "UnsupportedOperation",
            format!("The action {operation} is not valid for this endpoint."),
        )
    }

    fn unauthenticated(error: &nimbus_aws_wire::sigv4::AuthError) -> Self {
        let (status, code) = nimbus_aws_wire::query_auth_code(error);
        SqsError {
            status,
            query_code: code,
            shape: code,
            message: error.to_string(),
        }
    }

    fn access_denied(message: String) -> Self {
        SqsError {
            status: StatusCode::FORBIDDEN,
            query_code: "AccessDenied",
            shape: "AccessDenied",
            message,
        }
    }
}

fn field<'a>(input: &'a Value, name: &str) -> Option<&'a Value> {
    input.get(name).filter(|v| !v.is_null())
}

fn string_field(input: &Value, name: &str) -> SqsResult<String> {
    field(input, name)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| missing(name))
}

fn int_field(
    input: &Value,
    name: &str,
    range: std::ops::RangeInclusive<i64>,
) -> SqsResult<Option<i64>> {
    match field(input, name) {
        None => Ok(None),
        Some(v) => {
            let n = v
                .as_i64()
                .ok_or_else(|| invalid(format!("Value for parameter {name} is invalid.")))?;
            if range.contains(&n) {
                Ok(Some(n))
            } else {
                Err(invalid(format!(
                    "Value {n} for parameter {name} is invalid. Reason: must be between {} and {}.",
                    range.start(),
                    range.end()
                )))
            }
        }
    }
}

fn string_list(input: &Value, name: &str) -> Vec<String> {
    field(input, name)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Queue attributes as the domain takes them: name and text value.
fn attribute_pairs(input: &Value) -> Vec<(String, String)> {
    field(input, "Attributes")
        .and_then(Value::as_object)
        .map(|attrs| {
            attrs
                .iter()
                .map(|(name, value)| {
                    let text = match value {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    (name.clone(), text)
                })
                .collect()
        })
        .unwrap_or_default()
}

fn message_attributes(input: Option<&Value>) -> SqsResult<MessageAttributes> {
    match input {
        None | Some(Value::Null) => Ok(MessageAttributes::new()),
        Some(v) => serde_json::from_value(v.clone())
            .map_err(|_| invalid("MessageAttributes must map names to DataType and a value.")),
    }
}

fn url(host: &str, account: &str, name: &str) -> String {
    format!("http://{host}/{account}/{name}")
}

/// The account and name of the queue a `QueueUrl` names (`…/ACCOUNT/NAME`); a URL without an
/// account names a queue of the caller's.
fn url_parts<'a>(url: &'a str, caller: &'a str) -> (&'a str, &'a str) {
    let mut segments = url.trim_end_matches('/').rsplit('/');
    let name = segments.next().unwrap_or_default();
    let account = segments
        .next()
        .filter(|a| nimbus_types::name::valid_account(a))
        .unwrap_or(caller);
    (account, name)
}

/// The queue named by a `QueueUrl`, in the caller's account (a URL of another account's queue
/// was refused when the request was authorized).
fn queue_of(queues: &SqsQueues, account: &str, input: &Value) -> SqsResult<QueueConfig> {
    let url = string_field(input, "QueueUrl")?;
    let (owner, name) = url_parts(&url, account);
    if owner != account {
        return Err(Error::NoSuchQueue.into());
    }
    Ok(queues.queue(&scoped(account, name))?)
}

/// A queue ARN of the caller's account, as StartMessageMoveTask takes them.
fn own_arn(account: &str, arn: &str) -> SqsResult<()> {
    match nimbus_types::arn::QueueArn::parse(arn) {
        Ok(a) if a.account != account => Err(Error::NoSuchQueue.into()),
        _ => Ok(()),
    }
}

/// The entries of a batch request by Id: 1 to 10, each with a distinct Id.
fn batch_entries(input: &Value) -> SqsResult<Vec<(String, Value)>> {
    let entries = field(input, "Entries")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if entries.is_empty() {
        return Err(err(
            "AWS.SimpleQueueService.EmptyBatchRequest",
            "EmptyBatchRequest",
            "There should be at least one SendMessageBatchRequestEntry in the request.",
        ));
    }
    if entries.len() > 10 {
        return Err(err(
            "AWS.SimpleQueueService.TooManyEntriesInBatchRequest",
            "TooManyEntriesInBatchRequest",
            format!(
                "Maximum number of entries per request are 10. You have sent {}.",
                entries.len()
            ),
        ));
    }
    let mut ids: Vec<&str> = entries
        .iter()
        .filter_map(|e| e.get("Id").and_then(Value::as_str))
        .collect();
    let n = ids.len();
    ids.sort_unstable();
    ids.dedup();
    if ids.len() != n || n != entries.len() {
        return Err(err(
            "AWS.SimpleQueueService.BatchEntryIdsNotDistinct",
            "BatchEntryIdsNotDistinct",
            "Two or more batch entries in the request have the same Id, or an Id is missing.",
        ));
    }
    Ok(entries
        .into_iter()
        .map(|e| {
            let id = e["Id"].as_str().unwrap_or_default().to_owned();
            (id, e)
        })
        .collect())
}

fn batch_failure(id: &str, e: SqsError) -> Value {
    json!({ "Id": id, "SenderFault": !e.status.is_server_error(), "Code": e.query_code, "Message": e.message })
}

async fn send(queues: &SqsQueues, config: &QueueConfig, input: &Value) -> SqsResult<Value> {
    let body = string_field(input, "MessageBody")?;
    let delay = int_field(input, "DelaySeconds", 0..=900)?.map(|d| d as u32);
    let attributes = message_attributes(field(input, "MessageAttributes"))?;
    let sent = queues.send(config, body, delay, attributes).await?;
    let mut out = json!({ "MessageId": sent.id, "MD5OfMessageBody": sent.md5_of_body });
    if let Some(a) = sent.md5_of_attributes {
        out["MD5OfMessageAttributes"] = json!(a);
    }
    Ok(out)
}

async fn receive(queues: &SqsQueues, config: &QueueConfig, input: &Value) -> SqsResult<Value> {
    let max = int_field(input, "MaxNumberOfMessages", 1..=10)?.unwrap_or(1) as usize;
    let visibility = int_field(input, "VisibilityTimeout", 0..=43_200)?
        .map_or(config.visibility_timeout_s, |v| v as u32);
    let wait = int_field(input, "WaitTimeSeconds", 0..=20)?
        .map_or(config.receive_wait_s as u64, |v| v as u64);
    let mut wanted = string_list(input, "AttributeNames");
    wanted.extend(string_list(input, "MessageSystemAttributeNames"));
    let want = |name: &str| wanted.iter().any(|w| w == "All" || w == name);
    let names = string_list(input, "MessageAttributeNames");
    let chosen = |k: &str| {
        names.iter().any(|n| {
            n == "All"
                || n == ".*"
                || n == k
                || n.strip_suffix(".*")
                    .is_some_and(|p| k.strip_prefix(p).is_some_and(|r| r.starts_with('.')))
        })
    };
    let received = queues
        .receive(config, max, visibility, Duration::from_secs(wait))
        .await?;
    let mut messages = Vec::with_capacity(received.len());
    for r in received {
        let d = &r.delivery;
        let mut message = json!({
            "MessageId": d.id,
            "ReceiptHandle": r.receipt_handle,
            "MD5OfBody": nimbus_queue::sqs::md5_hex(&d.body),
            "Body": String::from_utf8_lossy(&d.body),
        });
        let attributes: MessageAttributes = r
            .meta
            .attributes
            .iter()
            .filter(|(k, _)| chosen(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if !attributes.is_empty() {
            message["MD5OfMessageAttributes"] = json!(attributes_md5(&attributes));
            message["MessageAttributes"] = json!(attributes);
        }
        let mut system = Map::new();
        if want("ApproximateReceiveCount") {
            system.insert(
                "ApproximateReceiveCount".into(),
                json!(d.receive_count.to_string()),
            );
        }
        if want("SentTimestamp") {
            system.insert("SentTimestamp".into(), json!(d.sent_ms.to_string()));
        }
        if want("SenderId") {
            system.insert("SenderId".into(), json!(config.account));
        }
        if !system.is_empty() {
            message["Attributes"] = Value::Object(system);
        }
        messages.push(message);
    }
    Ok(if messages.is_empty() {
        json!({})
    } else {
        json!({ "Messages": messages })
    })
}

/// Runs one operation on its parsed input.
async fn dispatch(
    queues: &SqsQueues,
    account: &str,
    operation: &str,
    input: Value,
    host: &str,
) -> SqsResult<Value> {
    match operation {
        "CreateQueue" => {
            let name = string_field(&input, "QueueName")?;
            queues.create_queue(account, &name, &attribute_pairs(&input))?;
            Ok(json!({ "QueueUrl": url(host, account, &name) }))
        }
        "GetQueueUrl" => {
            let name = string_field(&input, "QueueName")?;
            queues.queue(&scoped(account, &name))?;
            Ok(json!({ "QueueUrl": url(host, account, &name) }))
        }
        "ListQueues" => {
            let prefix = field(&input, "QueueNamePrefix")
                .and_then(Value::as_str)
                .unwrap_or("");
            let max = int_field(&input, "MaxResults", 1..=1000)?.unwrap_or(1000) as usize;
            let names = queues.list(account, prefix, max)?;
            Ok(
                json!({ "QueueUrls": names.iter().map(|n| url(host, account, n)).collect::<Vec<_>>() }),
            )
        }
        "GetQueueAttributes" => {
            let config = queue_of(queues, account, &input)?;
            let wanted = string_list(&input, "AttributeNames");
            let all = wanted.is_empty() || wanted.iter().any(|w| w == "All");
            let attributes: Map<String, Value> = queues
                .attributes(&config)?
                .into_iter()
                .filter(|(k, _)| all || wanted.iter().any(|w| w == k))
                .map(|(k, v)| (k.to_owned(), Value::String(v)))
                .collect();
            Ok(json!({ "Attributes": attributes }))
        }
        "SetQueueAttributes" => {
            let config = queue_of(queues, account, &input)?;
            queues.set_attributes(&config.key(), &attribute_pairs(&input))?;
            Ok(json!({}))
        }
        "DeleteQueue" => {
            let config = queue_of(queues, account, &input)?;
            queues.delete_queue(&config.key())?;
            Ok(json!({}))
        }
        "PurgeQueue" => {
            let config = queue_of(queues, account, &input)?;
            queues.purge(&config.key())?;
            Ok(json!({}))
        }
        "SendMessage" => {
            let config = queue_of(queues, account, &input)?;
            send(queues, &config, &input).await
        }
        "SendMessageBatch" => {
            let config = queue_of(queues, account, &input)?;
            let (mut ok, mut failed) = (Vec::new(), Vec::new());
            for (id, entry) in batch_entries(&input)? {
                match send(queues, &config, &entry).await {
                    Ok(mut done) => {
                        done["Id"] = json!(id);
                        ok.push(done);
                    }
                    Err(e) => failed.push(batch_failure(&id, e)),
                }
            }
            Ok(json!({ "Successful": ok, "Failed": failed }))
        }
        "ReceiveMessage" => {
            let config = queue_of(queues, account, &input)?;
            receive(queues, &config, &input).await
        }
        "DeleteMessage" => {
            let config = queue_of(queues, account, &input)?;
            queues.delete(&config, &string_field(&input, "ReceiptHandle")?)?;
            Ok(json!({}))
        }
        "DeleteMessageBatch" => {
            let config = queue_of(queues, account, &input)?;
            let (mut ok, mut failed) = (Vec::new(), Vec::new());
            for (id, entry) in batch_entries(&input)? {
                let deleted = string_field(&entry, "ReceiptHandle")
                    .and_then(|h| Ok(queues.delete(&config, &h)?));
                match deleted {
                    Ok(()) => ok.push(json!({ "Id": id })),
                    Err(e) => failed.push(batch_failure(&id, e)),
                }
            }
            Ok(json!({ "Successful": ok, "Failed": failed }))
        }
        "ChangeMessageVisibility" => {
            let config = queue_of(queues, account, &input)?;
            let handle = string_field(&input, "ReceiptHandle")?;
            let visibility = int_field(&input, "VisibilityTimeout", 0..=43_200)?
                .ok_or_else(|| missing("VisibilityTimeout"))?;
            queues.change_visibility(&config, &handle, visibility as u32)?;
            Ok(json!({}))
        }
        "StartMessageMoveTask" => {
            let source = string_field(&input, "SourceArn")?;
            let destination = field(&input, "DestinationArn").and_then(Value::as_str);
            own_arn(account, &source)?;
            if let Some(d) = destination {
                own_arn(account, d)?;
            }
            let (handle, _moved) = queues.move_messages(&source, destination).await?;
            Ok(json!({ "TaskHandle": handle }))
        }
        other => Err(SqsError::unknown_operation(other)),
    }
}

/// Serves one SQS request whose `X-Amz-Target` named `operation`.
pub async fn handle(
    queues: &SqsQueues,
    caller: &nimbus_identity::Caller,
    operation: &str,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    let input = match nimbus_aws_wire::target::read_input::<SqsError>(
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
    let host = nimbus_aws_wire::host(headers).unwrap_or("127.0.0.1");
    // Authorized as `sqs:OPERATION` on the queue it names (by URL, name or source ARN), if any.
    let account = caller.account.as_str();
    let queue = field(&input, "QueueUrl")
        .and_then(Value::as_str)
        .map(|u| url_parts(u, account))
        .or_else(|| {
            field(&input, "QueueName")
                .and_then(Value::as_str)
                .map(|n| (account, n))
        });
    let resource = match (queue, field(&input, "SourceArn").and_then(Value::as_str)) {
        (Some((owner, name)), _) => queues.arn(&scoped(owner, name)).to_string(),
        (None, Some(source)) => source.to_owned(),
        (None, None) => "*".to_owned(),
    };
    if let Err(denied) = caller.authorize(&format!("sqs:{operation}"), &resource) {
        return SqsError::access_denied(denied.message).into_response();
    }
    match dispatch(queues, account, operation, input, host).await {
        Ok(output) => nimbus_aws_wire::target::ok(JsonVersion::V1_0, &output),
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_errors_get_the_codes_the_sdks_match_on() {
        let e = SqsError::from(Error::NoSuchQueue);
        assert_eq!(e.query_code, "AWS.SimpleQueueService.NonExistentQueue");
        assert_eq!(e.shape, "QueueDoesNotExist");
        let e = SqsError::from(Error::InvalidReceipt("x".into()));
        assert_eq!(e.shape, "ReceiptHandleIsInvalid");
        let e = SqsError::from(Error::Poisoned);
        assert_eq!(e.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!e.message.contains("poison"));
    }

    #[test]
    fn batches_hold_one_to_ten_distinct_ids() {
        assert_eq!(
            batch_entries(&json!({})).unwrap_err().shape,
            "EmptyBatchRequest"
        );
        let many: Vec<Value> = (0..11).map(|i| json!({ "Id": i.to_string() })).collect();
        assert_eq!(
            batch_entries(&json!({ "Entries": many }))
                .unwrap_err()
                .shape,
            "TooManyEntriesInBatchRequest"
        );
        let twice = json!({ "Entries": [{ "Id": "a" }, { "Id": "a" }] });
        assert_eq!(
            batch_entries(&twice).unwrap_err().shape,
            "BatchEntryIdsNotDistinct"
        );
        let fine = json!({ "Entries": [{ "Id": "a" }, { "Id": "b" }] });
        assert_eq!(batch_entries(&fine).unwrap().len(), 2);
    }
}
