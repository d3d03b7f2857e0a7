//! The queue service, speaking the SQS API's JSON protocol as the `aws sqs` CLI and boto3 do
//! (`POST /` with `X-Amz-Target: AmazonSQS.<Operation>`). Messages live in the durable queue,
//! so they are as durable as asynchronous invocations.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use md5::{Digest, Md5};
use nimbus_queue::{Delivery, DurableQueue, NewMessage, QueueName};
use nimbus_store::QueueRegistry;
use nimbus_types::queue::{QueueConfig, RedrivePolicy, queue_arn, valid_queue_name};
use serde_json::{Map, Value, json};

/// SQS's limit on a message body.
pub const MAX_MESSAGE_BYTES: usize = 262_144;

pub struct QueueService {
    region: String,
    registry: Arc<dyn QueueRegistry>,
    queue: Arc<DurableQueue>,
    configs: RwLock<HashMap<String, QueueConfig>>,
}

/// An error in the SQS JSON protocol's format.
pub struct SqsError {
    status: StatusCode,
    /// The code SQS's query protocol used; the SDKs match on it.
    query_code: &'static str,
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

fn no_queue() -> SqsError {
    err(
        "AWS.SimpleQueueService.NonExistentQueue",
        "QueueDoesNotExist",
        "The specified queue does not exist.",
    )
}

fn invalid(message: impl Into<String>) -> SqsError {
    err(
        "InvalidParameterValue",
        "InvalidParameterValueException",
        message,
    )
}

fn invalid_attribute(message: impl Into<String>) -> SqsError {
    err("InvalidAttributeValue", "InvalidAttributeValue", message)
}

impl From<nimbus_queue::Error> for SqsError {
    fn from(e: nimbus_queue::Error) -> Self {
        tracing::error!(error = %nimbus_types::error_chain(&e), "queue failure");
        err(
            "InternalError",
            "InternalError",
            "We encountered an internal error. Please try again.",
        )
    }
}

impl IntoResponse for SqsError {
    fn into_response(self) -> Response {
        let body = json!({ "__type": format!("com.amazonaws.sqs#{}", self.shape), "message": self.message });
        let mut response = (self.status, axum::Json(body)).into_response();
        let h = response.headers_mut();
        h.insert(
            "content-type",
            HeaderValue::from_static("application/x-amz-json-1.0"),
        );
        if let Ok(v) = HeaderValue::from_str(&format!("{};Sender", self.query_code)) {
            h.insert("x-amzn-query-error", v);
        }
        response
    }
}

pub fn md5_hex(bytes: &[u8]) -> String {
    nimbus_types::hex::encode(&Md5::digest(bytes))
}

fn storage_name(queue: &str) -> QueueName {
    nimbus_events::sqs_queue(queue)
}

fn field<'a>(input: &'a Value, name: &str) -> Option<&'a Value> {
    input.get(name).filter(|v| !v.is_null())
}

fn string_field(input: &Value, name: &str) -> SqsResult<String> {
    field(input, name)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| {
            err(
                "MissingParameter",
                "MissingParameter",
                format!("The request must contain the parameter {name}."),
            )
        })
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

fn attribute_number(
    value: &str,
    name: &str,
    range: std::ops::RangeInclusive<u32>,
) -> SqsResult<u32> {
    value
        .parse::<u32>()
        .ok()
        .filter(|n| range.contains(n))
        .ok_or_else(|| invalid_attribute(format!("Invalid value for the parameter {name}.")))
}

impl QueueService {
    pub fn load(
        region: String,
        registry: Arc<dyn QueueRegistry>,
        queue: Arc<DurableQueue>,
    ) -> nimbus_store::Result<Self> {
        let configs = registry
            .queues()?
            .into_iter()
            .map(|q| (q.name.clone(), q))
            .collect();
        Ok(Self {
            region,
            registry,
            queue,
            configs: RwLock::new(configs),
        })
    }

    /// Whether a queue with this name exists.
    pub fn exists(&self, name: &str) -> bool {
        self.config(name).is_ok()
    }

    fn config(&self, name: &str) -> SqsResult<QueueConfig> {
        self.configs
            .read()
            .ok()
            .and_then(|c| c.get(name).cloned())
            .ok_or_else(no_queue)
    }

    fn url(host: &str, name: &str) -> String {
        format!(
            "http://{host}/{}/{name}",
            nimbus_types::name::DEFAULT_ACCOUNT
        )
    }

    /// The queue named by a `QueueUrl` (its last path segment).
    fn queue_of(&self, input: &Value) -> SqsResult<QueueConfig> {
        let url = string_field(input, "QueueUrl")?;
        let name = url
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or_default();
        self.config(name)
    }

    fn queue_by_arn(&self, arn: &str) -> SqsResult<QueueConfig> {
        let name = arn
            .strip_prefix("arn:aws:sqs:")
            .and_then(|rest| rest.rsplit(':').next())
            .ok_or_else(|| invalid(format!("{arn} is not a queue ARN")))?;
        self.config(name)
    }

    fn apply_attributes(
        &self,
        config: &mut QueueConfig,
        attributes: &Map<String, Value>,
    ) -> SqsResult<()> {
        for (name, value) in attributes {
            let text = match value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            match name.as_str() {
                "VisibilityTimeout" => {
                    config.visibility_timeout_s = attribute_number(&text, name, 0..=43_200)?
                }
                "MessageRetentionPeriod" => {
                    config.message_retention_s = attribute_number(&text, name, 60..=1_209_600)?
                }
                "DelaySeconds" => config.delay_s = attribute_number(&text, name, 0..=900)?,
                "ReceiveMessageWaitTimeSeconds" => {
                    config.receive_wait_s = attribute_number(&text, name, 0..=20)?
                }
                "MaximumMessageSize" => {
                    config.maximum_message_size = attribute_number(&text, name, 1024..=262_144)?
                }
                "RedrivePolicy" => {
                    if text.is_empty() {
                        config.redrive = None;
                        continue;
                    }
                    let policy: Value = serde_json::from_str(&text)
                        .map_err(|_| invalid_attribute("Invalid value for the parameter RedrivePolicy. Reason: it is not JSON."))?;
                    let target = policy
                        .get("deadLetterTargetArn")
                        .and_then(Value::as_str)
                        .ok_or_else(|| invalid_attribute("Value for parameter RedrivePolicy is invalid. Reason: deadLetterTargetArn is missing."))?;
                    let count = match policy.get("maxReceiveCount") {
                        Some(Value::String(s)) => s.parse::<u32>().ok(),
                        Some(Value::Number(n)) => n.as_u64().map(|n| n as u32),
                        _ => None,
                    }
                    .filter(|n| (1..=1000).contains(n))
                    .ok_or_else(|| invalid_attribute("Value for parameter RedrivePolicy is invalid. Reason: maxReceiveCount must be between 1 and 1000."))?;
                    let dlq = self
                        .queue_by_arn(target)
                        .map_err(|_| invalid_attribute(format!("Value {target} for parameter RedrivePolicy is invalid. Reason: Dead-letter target does not exist.")))?;
                    if dlq.name == config.name {
                        return Err(invalid_attribute(
                            "A queue cannot be its own dead-letter queue.",
                        ));
                    }
                    config.redrive = Some(RedrivePolicy {
                        dead_letter_target_arn: target.to_owned(),
                        max_receive_count: count,
                    });
                }
                "Policy"
                | "KmsMasterKeyId"
                | "KmsDataKeyReusePeriodSeconds"
                | "SqsManagedSseEnabled" => {}
                "FifoQueue" | "ContentBasedDeduplication" => {
                    return Err(invalid_attribute(
                        "FIFO queues are not supported by this node.",
                    ));
                }
                other => {
                    return Err(err(
                        "InvalidAttributeName",
                        "InvalidAttributeName",
                        format!("Unknown Attribute {other}."),
                    ));
                }
            }
        }
        Ok(())
    }

    fn save(&self, config: QueueConfig) -> SqsResult<()> {
        self.registry.put_queue(&config).map_err(|e| {
            err(
                "InternalError",
                "InternalError",
                format!("could not store the queue: {e}"),
            )
        })?;
        if let Ok(mut configs) = self.configs.write() {
            configs.insert(config.name.clone(), config);
        }
        Ok(())
    }

    fn attributes(&self, config: &QueueConfig) -> SqsResult<Map<String, Value>> {
        let counts = self.queue.counts(&storage_name(&config.name))?;
        let mut a = Map::new();
        let mut put = |k: &str, v: String| {
            a.insert(k.to_owned(), Value::String(v));
        };
        put("QueueArn", queue_arn(&self.region, &config.name));
        put("ApproximateNumberOfMessages", counts.visible.to_string());
        put(
            "ApproximateNumberOfMessagesNotVisible",
            counts.in_flight.to_string(),
        );
        put(
            "ApproximateNumberOfMessagesDelayed",
            counts.delayed.to_string(),
        );
        put("CreatedTimestamp", (config.created_ms / 1000).to_string());
        put(
            "LastModifiedTimestamp",
            (config.created_ms / 1000).to_string(),
        );
        put("VisibilityTimeout", config.visibility_timeout_s.to_string());
        put(
            "MaximumMessageSize",
            config.maximum_message_size.to_string(),
        );
        put(
            "MessageRetentionPeriod",
            config.message_retention_s.to_string(),
        );
        put("DelaySeconds", config.delay_s.to_string());
        put(
            "ReceiveMessageWaitTimeSeconds",
            config.receive_wait_s.to_string(),
        );
        if let Some(r) = &config.redrive {
            put(
                "RedrivePolicy",
                json!({ "deadLetterTargetArn": r.dead_letter_target_arn, "maxReceiveCount": r.max_receive_count }).to_string(),
            );
        }
        Ok(a)
    }

    fn create_queue(&self, input: &Value, host: &str) -> SqsResult<Value> {
        let name = string_field(input, "QueueName")?;
        if name.ends_with(".fifo") {
            return Err(invalid("FIFO queues are not supported by this node."));
        }
        if !valid_queue_name(&name) {
            return Err(invalid(
                "Can only include alphanumeric characters, hyphens, or underscores. 1 to 80 in length",
            ));
        }
        let mut config = QueueConfig::new(&name, nimbus_types::time::now_ms());
        if let Some(attrs) = field(input, "Attributes").and_then(Value::as_object) {
            self.apply_attributes(&mut config, attrs)?;
        }
        if let Ok(existing) = self.config(&name) {
            let mut same = existing.clone();
            same.created_ms = config.created_ms;
            if same != config {
                return Err(err(
                    "QueueAlreadyExists",
                    "QueueNameExists",
                    format!(
                        "A queue already exists with the same name and a different value for attribute(s) of {name}"
                    ),
                ));
            }
        } else {
            self.save(config)?;
        }
        Ok(json!({ "QueueUrl": Self::url(host, &name) }))
    }

    async fn send(
        &self,
        config: &QueueConfig,
        body: String,
        delay: Option<i64>,
        attributes: Option<&Value>,
    ) -> SqsResult<(String, String, Option<String>)> {
        let attributes = message_attributes(attributes)?;
        if body.is_empty() {
            return Err(err(
                "MissingParameter",
                "MissingParameter",
                "The request must contain the parameter MessageBody.",
            ));
        }
        if body.len() > config.maximum_message_size as usize {
            return Err(invalid(format!(
                "One or more parameters are invalid. Reason: Message must be shorter than {} bytes.",
                config.maximum_message_size
            )));
        }
        let md5 = md5_hex(body.as_bytes());
        let delay_s = delay.map_or(config.delay_s as u64, |d| d as u64);
        let ids = self
            .queue
            .enqueue(
                &storage_name(&config.name),
                vec![NewMessage {
                    body: body.into_bytes(),
                    delay_ms: delay_s * 1000,
                    meta: json!({ "attributes": attributes }),
                }],
            )
            .await
            .map_err(|e| err("InternalError", "InternalError", e.to_string()))?;
        let attributes_md5 = (!attributes.is_empty()).then(|| attributes_md5(&attributes));
        Ok((
            ids.into_iter().next().unwrap_or_default(),
            md5,
            attributes_md5,
        ))
    }

    fn receipt_handle(queue: &str, seq: u64, receipt: u64) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(format!("{queue}\n{seq}\n{receipt}"))
    }

    fn parse_receipt(config: &QueueConfig, handle: &str) -> SqsResult<(u64, u64)> {
        let bad = || {
            err(
                "ReceiptHandleIsInvalid",
                "ReceiptHandleIsInvalid",
                format!("The input receipt handle \"{handle}\" is not a valid receipt handle."),
            )
        };
        let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(handle)
            .map_err(|_| bad())?;
        let text = String::from_utf8(decoded).map_err(|_| bad())?;
        let mut parts = text.split('\n');
        let (Some(queue), Some(seq), Some(receipt), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        if queue != config.name {
            return Err(bad());
        }
        Ok((
            seq.parse().map_err(|_| bad())?,
            receipt.parse().map_err(|_| bad())?,
        ))
    }

    /// Leases up to `max` messages, waiting up to `wait` for the first; drops expired ones and
    /// moves those received more than the redrive policy allows to the dead-letter queue.
    pub async fn receive_messages(
        &self,
        config: &QueueConfig,
        max: usize,
        visibility_s: u64,
        wait: Duration,
    ) -> SqsResult<Vec<Delivery>> {
        let deadline = Instant::now() + wait;
        let storage = storage_name(&config.name);
        loop {
            let leased = self.queue.lease(&storage, max, visibility_s * 1000)?;
            let mut out = Vec::new();
            for d in leased {
                let now = nimbus_types::time::now_ms();
                if now - d.sent_ms > config.message_retention_s as i64 * 1000 {
                    self.queue.ack(&d)?;
                    continue;
                }
                if let Some(redrive) = &config.redrive
                    && d.receive_count > redrive.max_receive_count
                {
                    // Received too often: the message moves to the dead-letter queue.
                    if let Ok(dlq) = self.queue_by_arn(&redrive.dead_letter_target_arn) {
                        let message = NewMessage {
                            body: d.body.clone(),
                            delay_ms: 0,
                            meta: json!({ "source": config.name, "receives": d.receive_count - 1 }),
                        };
                        if self
                            .queue
                            .enqueue(&storage_name(&dlq.name), vec![message])
                            .await
                            .is_ok()
                        {
                            self.queue.ack(&d)?;
                        }
                    }
                    continue;
                }
                out.push(d);
            }
            if !out.is_empty() || Instant::now() >= deadline {
                return Ok(out);
            }
            // Woken by the commit that makes a message visible, or by the clock when a delayed
            // or leased one's time comes.
            self.queue
                .wait_visible(&storage, tokio::time::Instant::from_std(deadline))
                .await;
        }
    }

    /// Deletes a message leased through [`QueueService::receive_messages`].
    pub fn delete_delivery(&self, delivery: &Delivery) -> SqsResult<bool> {
        Ok(self.queue.ack(delivery)?)
    }

    pub fn queue_config(&self, name: &str) -> Option<QueueConfig> {
        self.config(name).ok()
    }

    pub fn queue_name_of_arn(&self, arn: &str) -> Option<String> {
        self.queue_by_arn(arn).ok().map(|q| q.name)
    }

    /// Every queue with its depths, by name.
    pub fn depths(&self) -> Vec<Value> {
        let mut configs: Vec<QueueConfig> = self
            .configs
            .read()
            .map(|c| c.values().cloned().collect())
            .unwrap_or_default();
        configs.sort_by(|a, b| a.name.cmp(&b.name));
        configs
            .iter()
            .map(|q| {
                let c = self.queue.counts(&storage_name(&q.name)).unwrap_or_default();
                json!({
                    "queue": q.name,
                    "visible": c.visible,
                    "in_flight": c.in_flight,
                    "delayed": c.delayed,
                    "dead_letter_queue": q.redrive.as_ref().and_then(|r| r.dead_letter_target_arn.rsplit(':').next().map(str::to_owned)),
                })
            })
            .collect()
    }

    pub fn region(&self) -> &str {
        &self.region
    }

    async fn receive(&self, config: &QueueConfig, input: &Value) -> SqsResult<Value> {
        let max = int_field(input, "MaxNumberOfMessages", 1..=10)?.unwrap_or(1) as usize;
        let visibility = int_field(input, "VisibilityTimeout", 0..=43_200)?
            .map_or(config.visibility_timeout_s as u64, |v| v as u64);
        let wait = int_field(input, "WaitTimeSeconds", 0..=20)?
            .map_or(config.receive_wait_s as u64, |v| v as u64);
        let wanted: Vec<String> = ["AttributeNames", "MessageSystemAttributeNames"]
            .iter()
            .filter_map(|k| field(input, k).and_then(Value::as_array))
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect();
        let want = |name: &str| wanted.iter().any(|w| w == "All" || w == name);
        let received = self
            .receive_messages(config, max, visibility, Duration::from_secs(wait))
            .await?;
        let mut messages = Vec::new();
        for d in received {
            let body = String::from_utf8_lossy(&d.body).into_owned();
            let mut message = json!({
                "MessageId": d.id,
                "ReceiptHandle": Self::receipt_handle(&config.name, d.seq, d.receipt),
                "MD5OfBody": md5_hex(&d.body),
                "Body": body,
            });
            let names: Vec<String> = field(input, "MessageAttributeNames")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            if let Some(stored) = d.meta.get("attributes").and_then(Value::as_object) {
                let chosen: Map<String, Value> = stored
                    .iter()
                    .filter(|(k, _)| {
                        names.iter().any(|n| {
                            n == "All"
                                || n == ".*"
                                || n == *k
                                || n.strip_suffix(".*")
                                    .is_some_and(|p| k.starts_with(&format!("{p}.")))
                        })
                    })
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                if !chosen.is_empty() {
                    message["MD5OfMessageAttributes"] = json!(attributes_md5(&chosen));
                    message["MessageAttributes"] = Value::Object(chosen);
                }
            }
            let mut attributes = Map::new();
            if want("ApproximateReceiveCount") {
                attributes.insert(
                    "ApproximateReceiveCount".into(),
                    json!(d.receive_count.to_string()),
                );
            }
            if want("SentTimestamp") {
                attributes.insert("SentTimestamp".into(), json!(d.sent_ms.to_string()));
            }
            if want("SenderId") {
                attributes.insert(
                    "SenderId".into(),
                    json!(nimbus_types::name::DEFAULT_ACCOUNT),
                );
            }
            if !attributes.is_empty() {
                message["Attributes"] = Value::Object(attributes);
            }
            messages.push(message);
        }
        Ok(if messages.is_empty() {
            json!({})
        } else {
            json!({ "Messages": messages })
        })
    }

    pub async fn dispatch(&self, target: &str, input: Value, host: &str) -> SqsResult<Value> {
        match target {
            "CreateQueue" => self.create_queue(&input, host),
            "GetQueueUrl" => {
                let name = string_field(&input, "QueueName")?;
                self.config(&name)?;
                Ok(json!({ "QueueUrl": Self::url(host, &name) }))
            }
            "ListQueues" => {
                let prefix = field(&input, "QueueNamePrefix")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let max = int_field(&input, "MaxResults", 1..=1000)?.unwrap_or(1000) as usize;
                let mut names: Vec<String> = self
                    .configs
                    .read()
                    .map(|c| {
                        c.keys()
                            .filter(|n| n.starts_with(prefix))
                            .cloned()
                            .collect()
                    })
                    .unwrap_or_default();
                names.sort();
                names.truncate(max);
                Ok(
                    json!({ "QueueUrls": names.iter().map(|n| Self::url(host, n)).collect::<Vec<_>>() }),
                )
            }
            "GetQueueAttributes" => {
                let config = self.queue_of(&input)?;
                let all = self.attributes(&config)?;
                let wanted: Vec<String> = field(&input, "AttributeNames")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(|v| v.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default();
                let attributes: Map<String, Value> =
                    if wanted.is_empty() || wanted.iter().any(|w| w == "All") {
                        all
                    } else {
                        all.into_iter()
                            .filter(|(k, _)| wanted.contains(k))
                            .collect()
                    };
                Ok(json!({ "Attributes": attributes }))
            }
            "SetQueueAttributes" => {
                let mut config = self.queue_of(&input)?;
                let attrs = field(&input, "Attributes")
                    .and_then(Value::as_object)
                    .cloned()
                    .unwrap_or_default();
                self.apply_attributes(&mut config, &attrs)?;
                self.save(config)?;
                Ok(json!({}))
            }
            "DeleteQueue" => {
                let config = self.queue_of(&input)?;
                self.queue.remove_queue(&storage_name(&config.name))?;
                self.registry
                    .delete_queue(&config.name)
                    .map_err(|e| err("InternalError", "InternalError", e.to_string()))?;
                if let Ok(mut configs) = self.configs.write() {
                    configs.remove(&config.name);
                }
                Ok(json!({}))
            }
            "PurgeQueue" => {
                let config = self.queue_of(&input)?;
                self.queue.purge(&storage_name(&config.name))?;
                Ok(json!({}))
            }
            "SendMessage" => {
                let config = self.queue_of(&input)?;
                let body = string_field(&input, "MessageBody")?;
                let delay = int_field(&input, "DelaySeconds", 0..=900)?;
                let (id, md5, attributes_md5) = self
                    .send(&config, body, delay, field(&input, "MessageAttributes"))
                    .await?;
                let mut out = json!({ "MessageId": id, "MD5OfMessageBody": md5 });
                if let Some(a) = attributes_md5 {
                    out["MD5OfMessageAttributes"] = json!(a);
                }
                Ok(out)
            }
            "SendMessageBatch" => {
                let config = self.queue_of(&input)?;
                let entries = self.batch_entries(&input)?;
                let (mut ok, mut failed) = (Vec::new(), Vec::new());
                for entry in entries {
                    let id = entry
                        .get("Id")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned();
                    let body = entry
                        .get("MessageBody")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned();
                    let delay = int_field(&entry, "DelaySeconds", 0..=900);
                    match delay {
                        Ok(delay) => match self.send(&config, body, delay, entry.get("MessageAttributes")).await {
                            Ok((message_id, md5, attributes_md5)) => {
                                let mut done = json!({ "Id": id, "MessageId": message_id, "MD5OfMessageBody": md5 });
                                if let Some(a) = attributes_md5 {
                                    done["MD5OfMessageAttributes"] = json!(a);
                                }
                                ok.push(done)
                            }
                            Err(e) => failed.push(json!({ "Id": id, "SenderFault": true, "Code": e.query_code, "Message": e.message })),
                        },
                        Err(e) => failed.push(json!({ "Id": id, "SenderFault": true, "Code": e.query_code, "Message": e.message })),
                    }
                }
                Ok(json!({ "Successful": ok, "Failed": failed }))
            }
            "ReceiveMessage" => {
                let config = self.queue_of(&input)?;
                self.receive(&config, &input).await
            }
            "DeleteMessage" => {
                let config = self.queue_of(&input)?;
                let (seq, receipt) =
                    Self::parse_receipt(&config, &string_field(&input, "ReceiptHandle")?)?;
                // Deleting with a stale handle succeeds without effect, as on SQS.
                self.queue
                    .ack_receipt(&storage_name(&config.name), seq, receipt)?;
                Ok(json!({}))
            }
            "DeleteMessageBatch" => {
                let config = self.queue_of(&input)?;
                let (mut ok, mut failed) = (Vec::new(), Vec::new());
                for entry in self.batch_entries(&input)? {
                    let id = entry
                        .get("Id")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned();
                    match entry.get("ReceiptHandle").and_then(Value::as_str).map(|h| Self::parse_receipt(&config, h)) {
                        Some(Ok((seq, receipt))) => {
                            self.queue.ack_receipt(&storage_name(&config.name), seq, receipt)?;
                            ok.push(json!({ "Id": id }));
                        }
                        _ => failed.push(json!({ "Id": id, "SenderFault": true, "Code": "ReceiptHandleIsInvalid", "Message": "The receipt handle is not valid." })),
                    }
                }
                Ok(json!({ "Successful": ok, "Failed": failed }))
            }
            "ChangeMessageVisibility" => {
                let config = self.queue_of(&input)?;
                let (seq, receipt) =
                    Self::parse_receipt(&config, &string_field(&input, "ReceiptHandle")?)?;
                let visibility =
                    int_field(&input, "VisibilityTimeout", 0..=43_200)?.ok_or_else(|| {
                        err(
                            "MissingParameter",
                            "MissingParameter",
                            "The request must contain the parameter VisibilityTimeout.",
                        )
                    })?;
                if !self.queue.change_visibility(
                    &storage_name(&config.name),
                    seq,
                    receipt,
                    visibility as u64 * 1000,
                )? {
                    return Err(err(
                        "AWS.SimpleQueueService.MessageNotInflight",
                        "MessageNotInflight",
                        "Message does not exist or is not available for visibility timeout change.",
                    ));
                }
                Ok(json!({}))
            }
            "StartMessageMoveTask" => self.move_messages(&input).await,
            other => Err(SqsError {
                status: StatusCode::BAD_REQUEST,
                query_code: "InvalidAction",
                shape: "UnsupportedOperation",
                message: format!("The action {other} is not valid for this endpoint."),
            }),
        }
    }

    fn batch_entries(&self, input: &Value) -> SqsResult<Vec<Value>> {
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
        Ok(entries)
    }

    /// Moves every message of a dead-letter queue back to its source (redrive).
    async fn move_messages(&self, input: &Value) -> SqsResult<Value> {
        let source = self.queue_by_arn(&string_field(input, "SourceArn")?)?;
        let destination = match field(input, "DestinationArn").and_then(Value::as_str) {
            Some(arn) => self.queue_by_arn(arn)?,
            None => {
                let source_arn = queue_arn(&self.region, &source.name);
                let sources: Vec<QueueConfig> = self
                    .configs
                    .read()
                    .map(|c| {
                        c.values()
                            .filter(|q| {
                                q.redrive
                                    .as_ref()
                                    .is_some_and(|r| r.dead_letter_target_arn == source_arn)
                            })
                            .cloned()
                            .collect()
                    })
                    .unwrap_or_default();
                match sources.as_slice() {
                    [only] => only.clone(),
                    _ => {
                        return Err(invalid(
                            "DestinationArn is required: the dead-letter queue is not the target of exactly one queue",
                        ));
                    }
                }
            }
        };
        let from = storage_name(&source.name);
        let to = storage_name(&destination.name);
        let mut moved = 0u64;
        loop {
            let batch = self
                .queue
                .lease(&from, 100, 60_000)
                .map_err(|e| err("InternalError", "InternalError", e.to_string()))?;
            if batch.is_empty() {
                break;
            }
            let messages = batch
                .iter()
                .map(|d| NewMessage {
                    body: d.body.clone(),
                    delay_ms: 0,
                    meta: json!({}),
                })
                .collect();
            self.queue
                .enqueue(&to, messages)
                .await
                .map_err(|e| err("InternalError", "InternalError", e.to_string()))?;
            for d in &batch {
                self.queue.ack(d)?;
                moved += 1;
            }
        }
        Ok(
            json!({ "TaskHandle": base64::engine::general_purpose::STANDARD.encode(format!("{}:{moved}", source.name)) }),
        )
    }
}

/// Checks message attributes as SQS does: at most 10, each with a DataType of String, Number
/// or Binary (optionally `.custom`) and the matching StringValue or base64 BinaryValue.
fn message_attributes(input: Option<&Value>) -> SqsResult<Map<String, Value>> {
    let Some(input) = input else {
        return Ok(Map::new());
    };
    let map = input
        .as_object()
        .ok_or_else(|| invalid("MessageAttributes must be a map"))?;
    if map.len() > 10 {
        return Err(invalid(
            "Number of message attributes [{}] exceeds the allowed maximum [10].",
        ));
    }
    let mut out = Map::new();
    for (name, value) in map {
        let valid_name = !name.is_empty()
            && name.len() <= 256
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
            && !name.starts_with('.')
            && !name.to_ascii_lowercase().starts_with("aws.");
        if !valid_name {
            return Err(invalid(format!(
                "Message attribute name '{name}' is invalid."
            )));
        }
        let data_type = value
            .get("DataType")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let base = data_type.split('.').next().unwrap_or_default();
        let mut clean = Map::new();
        clean.insert("DataType".into(), json!(data_type));
        match base {
            "String" | "Number" => {
                let v = value
                    .get("StringValue")
                    .and_then(Value::as_str)
                    .ok_or_else(|| invalid(format!("Message attribute '{name}' must contain a non-empty value of type '{data_type}'.")))?;
                if base == "Number" && v.parse::<f64>().is_err() {
                    return Err(invalid(format!(
                        "Can't cast the value of message attribute '{name}' to a number."
                    )));
                }
                clean.insert("StringValue".into(), json!(v));
            }
            "Binary" => {
                let v = value
                    .get("BinaryValue")
                    .and_then(Value::as_str)
                    .ok_or_else(|| invalid(format!("Message attribute '{name}' must contain a non-empty value of type 'Binary'.")))?;
                base64::engine::general_purpose::STANDARD
                    .decode(v)
                    .map_err(|_| {
                        invalid(format!(
                            "Message attribute '{name}' has an invalid binary value."
                        ))
                    })?;
                clean.insert("BinaryValue".into(), json!(v));
            }
            _ => {
                return Err(invalid(format!(
                    "The type of message attribute '{name}' is invalid. You must use only the following supported type prefixes: Binary, Number, String."
                )));
            }
        }
        out.insert(name.clone(), Value::Object(clean));
    }
    Ok(out)
}

/// SQS's MD5 of message attributes: for each attribute in name order, the length-prefixed
/// name, data type, a transport byte (1 text, 2 binary) and the length-prefixed value.
fn attributes_md5(attributes: &Map<String, Value>) -> String {
    fn put(bytes: &mut Vec<u8>, value: &[u8]) {
        bytes.extend_from_slice(&(value.len() as u32).to_be_bytes());
        bytes.extend_from_slice(value);
    }
    let mut names: Vec<&String> = attributes.keys().collect();
    names.sort();
    let mut bytes = Vec::new();
    for name in names {
        let a = &attributes[name];
        put(&mut bytes, name.as_bytes());
        put(
            &mut bytes,
            a["DataType"].as_str().unwrap_or_default().as_bytes(),
        );
        if let Some(binary) = a.get("BinaryValue").and_then(Value::as_str) {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(binary)
                .unwrap_or_default();
            bytes.push(2);
            put(&mut bytes, &raw);
        } else {
            bytes.push(1);
            put(
                &mut bytes,
                a["StringValue"].as_str().unwrap_or_default().as_bytes(),
            );
        }
    }
    md5_hex(&bytes)
}

/// `POST /` with `X-Amz-Target: AmazonSQS.<Operation>`.
pub(crate) async fn handle(
    service: &QueueService,
    operation: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| h.bytes().all(|b| b.is_ascii_graphic()))
        .unwrap_or("127.0.0.1");
    let input: Value = if body.is_empty() {
        json!({})
    } else {
        match serde_json::from_slice(body) {
            Ok(v @ Value::Object(_)) => v,
            _ => {
                return err(
                    "MalformedInput",
                    "InvalidParameterValueException",
                    "The request body is not a JSON object.",
                )
                .into_response();
            }
        }
    };
    match service.dispatch(operation, input, host).await {
        Ok(output) => {
            let mut response = axum::Json(output).into_response();
            response.headers_mut().insert(
                "content-type",
                HeaderValue::from_static("application/x-amz-json-1.0"),
            );
            response
        }
        Err(e) => e.into_response(),
    }
}
