//! Event source mappings from SQS queues and DynamoDB streams to functions: the registry of
//! mappings and the pollers that read each enabled mapping's source in batches, invoke the
//! function with the source's `{"Records": […]}` event, and move on past what succeeded.
//! Lambda's `/2015-03-31/event-source-mappings` API (in `nimbus-api-lambda`) edits the
//! registry.
//!
//! A failed queue batch is left alone: its messages come back after the queue's visibility
//! timeout, and after the queue's maxReceiveCount they go to its dead-letter queue. With
//! `ReportBatchItemFailures`, only the messages the function names as failed come back. A
//! stream is read in order from a checkpoint ([`crate::streams`]).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use nimbus_control::ControlPlane;
use nimbus_queue::sqs::{MessageMeta, Received, SqsQueues, md5_hex};
use nimbus_store::MappingStore;
use nimbus_types::InvalidParameter;
use nimbus_types::InvokeRequest;
use nimbus_types::queue::EventSourceMapping;
use serde_json::{Value, json};

/// What can go wrong when a mapping is created or changed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("The resource you requested does not exist. (Service: Lambda, UUID: {0})")]
    NotFound(String),
    #[error(transparent)]
    Invalid(#[from] InvalidParameter),
    #[error(transparent)]
    Control(#[from] nimbus_control::Error),
    #[error("the mapping store failed")]
    Store(#[from] nimbus_store::Error),
    #[error("the mapping registry's lock was poisoned by a panic")]
    Poisoned,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A change to a mapping; `None` leaves a setting as it is.
#[derive(Debug, Clone, Default)]
pub struct MappingChange {
    pub function_name: Option<String>,
    pub enabled: Option<bool>,
    pub batch_size: Option<i64>,
    pub maximum_batching_window_s: Option<i64>,
    pub function_response_types: Option<Vec<String>>,
    /// A stream's settings (`None`: unchanged).
    pub starting_position: Option<String>,
    pub maximum_retry_attempts: Option<i64>,
    pub maximum_record_age_s: Option<i64>,
    pub bisect_batch_on_function_error: Option<bool>,
    /// `DestinationConfig.OnFailure.Destination`; `Some(None)` removes it.
    pub on_failure: Option<Option<String>>,
}

/// How long a mapping's first receive of a batch waits for a message.
const FIRST_RECEIVE_WAIT: Duration = Duration::from_secs(1);

/// How often the poll loop looks for mappings without a batch in flight.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

pub struct EventSources {
    store: Arc<dyn MappingStore>,
    pub(crate) control: Arc<ControlPlane>,
    pub(crate) queues: Arc<SqsQueues>,
    pub(crate) tables: Arc<nimbus_tables::TableStore>,
    /// Stream mappings' failed attempts at their current batch, by UUID.
    pub(crate) retries: Mutex<HashMap<String, crate::streams::Retry>>,
    mappings: RwLock<HashMap<String, EventSourceMapping>>,
    /// Mappings with a batch in flight: one at a time per mapping.
    busy: Mutex<HashSet<String>>,
}

impl EventSources {
    pub fn load(
        store: Arc<dyn MappingStore>,
        control: Arc<ControlPlane>,
        queues: Arc<SqsQueues>,
        tables: Arc<nimbus_tables::TableStore>,
    ) -> nimbus_store::Result<Self> {
        let mappings = store
            .mappings()?
            .into_iter()
            .map(|m| (m.uuid.clone(), m))
            .collect();
        Ok(Self {
            store,
            control,
            queues,
            tables,
            retries: Mutex::new(HashMap::new()),
            mappings: RwLock::new(mappings),
            busy: Mutex::new(HashSet::new()),
        })
    }

    /// A mapping of `account`; another account's is not found.
    pub fn get(&self, account: &str, uuid: &str) -> Result<EventSourceMapping> {
        self.mappings
            .read()
            .map_err(|_| Error::Poisoned)?
            .get(uuid)
            .filter(|m| m.account == account)
            .cloned()
            .ok_or_else(|| Error::NotFound(uuid.to_owned()))
    }

    /// An account's mappings, by UUID, of one function (by key) and/or one queue if given.
    pub fn list(
        &self,
        account: &str,
        function: Option<&str>,
        event_source_arn: Option<&str>,
    ) -> Result<Vec<EventSourceMapping>> {
        let mut all: Vec<EventSourceMapping> = self
            .mappings
            .read()
            .map_err(|_| Error::Poisoned)?
            .values()
            .filter(|m| m.account == account)
            .filter(|m| {
                // A function's name matches its mappings to its versions and aliases too.
                function.is_none_or(|f| {
                    m.function == f || m.function.split_once(':').is_some_and(|(k, _)| k == f)
                })
            })
            .filter(|m| event_source_arn.is_none_or(|a| m.event_source_arn == a))
            .cloned()
            .collect();
        all.sort_by(|a, b| a.uuid.cmp(&b.uuid));
        Ok(all)
    }

    /// Creates a mapping from an existing queue to an existing function, both of `account`.
    pub fn create(
        &self,
        account: &str,
        event_source_arn: &str,
        change: MappingChange,
    ) -> Result<EventSourceMapping> {
        let stream = self.stream_of(account, event_source_arn);
        let queue_account = nimbus_types::arn::QueueArn::parse(event_source_arn)
            .map(|a| a.account)
            .ok();
        if stream.is_none()
            && (queue_account.as_deref() != Some(account)
                || self.queues.queue_by_arn(event_source_arn).is_err())
        {
            return Err(InvalidParameter::Value(format!(
                "Invalid EventSourceArn {event_source_arn}: only existing queues \
                 (arn:aws:sqs:…) and table streams (arn:aws:dynamodb:…/stream/…) are supported \
                 as event sources"
            ))
            .into());
        }
        if change.function_name.is_none() {
            return Err(InvalidParameter::Value("FunctionName is required".into()).into());
        }
        let mut mapping = EventSourceMapping {
            uuid: uuid::Uuid::new_v4().to_string(),
            account: account.to_owned(),
            function: String::new(),
            event_source_arn: event_source_arn.to_owned(),
            batch_size: 10,
            max_batching_window_s: 0,
            enabled: true,
            report_batch_item_failures: false,
            last_modified_ms: 0,
            stream: None,
        };
        if let Some((_, stream)) = stream {
            mapping.batch_size = 100;
            let start = change.starting_position.clone().ok_or_else(|| {
                InvalidParameter::Value(
                    "StartingPosition is required for a stream event source".into(),
                )
            })?;
            let checkpoint = match start.as_str() {
                "TRIM_HORIZON" => self
                    .tables
                    .stream_bounds(stream.id)
                    .ok()
                    .flatten()
                    .map_or(0, |(first, _)| first - 1),
                "LATEST" => self.tables.last_sequence().unwrap_or(0),
                other => {
                    return Err(InvalidParameter::constraint(
                        "startingPosition",
                        Some(&other),
                        "Member must satisfy enum value set: [TRIM_HORIZON, LATEST]",
                    )
                    .into());
                }
            };
            mapping.stream = Some(nimbus_types::queue::StreamSource {
                starting_position: start,
                maximum_retry_attempts: -1,
                maximum_record_age_s: -1,
                bisect_batch_on_function_error: false,
                on_failure: None,
                checkpoint,
            });
        }
        self.apply(&mut mapping, change)?;
        self.save(mapping.clone())?;
        Ok(mapping)
    }

    pub fn update(
        &self,
        account: &str,
        uuid: &str,
        change: MappingChange,
    ) -> Result<EventSourceMapping> {
        let mut mapping = self.get(account, uuid)?;
        self.apply(&mut mapping, change)?;
        self.save(mapping.clone())?;
        Ok(mapping)
    }

    pub fn delete(&self, account: &str, uuid: &str) -> Result<EventSourceMapping> {
        let mapping = self.get(account, uuid)?;
        self.store.delete_mapping(uuid)?;
        self.mappings
            .write()
            .map_err(|_| Error::Poisoned)?
            .remove(uuid);
        Ok(mapping)
    }

    /// Invokes a mapping's function once with `{"Records": records}`.
    pub(crate) async fn invoke_records(
        &self,
        function: &nimbus_types::FunctionConfig,
        target: &str,
        records: Vec<Value>,
    ) -> Result<nimbus_types::InvokeOutcome, nimbus_manager::Error> {
        let event =
            Bytes::from(serde_json::to_vec(&json!({ "Records": records })).unwrap_or_default());
        let request = InvokeRequest {
            request_id: uuid::Uuid::new_v4().to_string(),
            payload: event,
            client_context: None,
            async_attempt: None,
            http: None,
            stream: None,
            // A mapping to `name:alias` shows the alias in the function's invoked ARN.
            qualifier: target.split_once(':').map(|(_, q)| q.to_owned()),
        };
        self.control.manager().invoke(function, request).await
    }

    pub(crate) fn save(&self, mapping: EventSourceMapping) -> Result<()> {
        self.store.put_mapping(&mapping)?;
        self.mappings
            .write()
            .map_err(|_| Error::Poisoned)?
            .insert(mapping.uuid.clone(), mapping);
        Ok(())
    }

    fn apply(&self, mapping: &mut EventSourceMapping, change: MappingChange) -> Result<()> {
        if let Some(name) = change.function_name {
            let reference = nimbus_types::FunctionRef::parse(&name)?;
            let key = nimbus_types::name::scoped(&mapping.account, &reference.name);
            if reference
                .account
                .as_ref()
                .is_some_and(|a| *a != mapping.account)
            {
                return Err(nimbus_control::Error::FunctionNotFound(self.control.arn(&key)).into());
            }
            let function = self.control.resolve(&key, reference.qualifier.as_ref())?;
            // A version or alias stays named: each batch runs what it points to then.
            mapping.function = match reference.qualifier {
                Some(nimbus_types::Qualifier::Other(q)) => format!("{}:{q}", function.key()),
                _ => function.key(),
            };
        }
        if let Some(n) = change.batch_size {
            if !(1..=10_000).contains(&n) {
                return Err(InvalidParameter::range("batchSize", &n, 1, 10_000).into());
            }
            mapping.batch_size = n as u32;
        }
        if let Some(n) = change.maximum_batching_window_s {
            if !(0..=300).contains(&n) {
                return Err(
                    InvalidParameter::range("maximumBatchingWindowInSeconds", &n, 0, 300).into(),
                );
            }
            mapping.max_batching_window_s = n as u32;
        }
        if let Some(stream) = &mut mapping.stream {
            if let Some(n) = change.maximum_retry_attempts {
                if !(-1..=10_000).contains(&n) {
                    return Err(
                        InvalidParameter::range("maximumRetryAttempts", &n, -1, 10_000).into(),
                    );
                }
                stream.maximum_retry_attempts = n;
            }
            if let Some(n) = change.maximum_record_age_s {
                if n != -1 && !(60..=604_800).contains(&n) {
                    return Err(InvalidParameter::range(
                        "maximumRecordAgeInSeconds",
                        &n,
                        60,
                        604_800,
                    )
                    .into());
                }
                stream.maximum_record_age_s = n;
            }
            if let Some(b) = change.bisect_batch_on_function_error {
                stream.bisect_batch_on_function_error = b;
            }
            if let Some(target) = change.on_failure {
                if let Some(arn) = &target
                    && (self.queues.queue_by_arn(arn).is_err()
                        || nimbus_types::arn::QueueArn::parse(arn)
                            .map(|a| a.account)
                            .ok()
                            .as_deref()
                            != Some(mapping.account.as_str()))
                {
                    return Err(InvalidParameter::Value(format!(
                        "The provided destination config DestinationConfig(onSuccess=null, \
                         onFailure=OnFailure(destination={arn})) is invalid: only existing \
                         queues of the account are supported"
                    ))
                    .into());
                }
                stream.on_failure = target;
            }
        } else if change.starting_position.is_some()
            || change.maximum_retry_attempts.is_some()
            || change.bisect_batch_on_function_error.is_some()
        {
            return Err(InvalidParameter::Value(
                "StartingPosition, MaximumRetryAttempts and BisectBatchOnFunctionError apply to \
                 stream event sources only"
                    .into(),
            )
            .into());
        }
        if mapping.stream.is_none() && mapping.batch_size > 10 && mapping.max_batching_window_s == 0
        {
            return Err(InvalidParameter::Value(
                "Maximum batch window in seconds must be greater than 0 if maximum batch size is \
                 greater than 10"
                    .into(),
            )
            .into());
        }
        if let Some(enabled) = change.enabled {
            mapping.enabled = enabled;
        }
        if let Some(types) = change.function_response_types {
            if types.iter().any(|t| t != "ReportBatchItemFailures") {
                return Err(InvalidParameter::constraint(
                    "functionResponseTypes",
                    Some(&format!("{types:?}")),
                    "Member must satisfy enum value set: [ReportBatchItemFailures]",
                )
                .into());
            }
            mapping.report_batch_item_failures = !types.is_empty();
        }
        // As on Lambda: a batch must stay invisible for as long as the function may run.
        if let Some(function) = self.control.invocation_target(&mapping.function)
            && let Ok(queue) = self.queues.queue_by_arn(&mapping.event_source_arn)
            && queue.visibility_timeout_s < function.timeout_s
        {
            return Err(InvalidParameter::Value(format!(
                "Queue visibility timeout: {} seconds is less than Function timeout: {} seconds",
                queue.visibility_timeout_s, function.timeout_s
            ))
            .into());
        }
        mapping.last_modified_ms = nimbus_types::time::now_ms();
        Ok(())
    }

    /// Polls every enabled mapping until `shutdown` resolves, one batch in flight per mapping.
    pub async fn run(self: Arc<Self>, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            let enabled: Vec<EventSourceMapping> = match self.mappings.read() {
                Ok(m) => m.values().filter(|m| m.enabled).cloned().collect(),
                Err(_) => {
                    tracing::error!("the mapping registry is poisoned; event sources stop");
                    return;
                }
            };
            for mapping in enabled {
                let claimed = match self.busy.lock() {
                    Ok(mut busy) => busy.insert(mapping.uuid.clone()),
                    Err(_) => {
                        tracing::error!("the poller's lock is poisoned; event sources stop");
                        return;
                    }
                };
                if !claimed {
                    continue;
                }
                let sources = self.clone();
                tokio::spawn(async move {
                    sources.run_batch(&mapping).await;
                    // Poisoned only by a panic above; the poll loop stops on it in turn.
                    if let Ok(mut busy) = sources.busy.lock() {
                        busy.remove(&mapping.uuid);
                    }
                });
            }
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tokio::time::sleep(POLL_INTERVAL) => {}
            }
        }
    }

    /// Runs one batch of a mapping: receives up to its batch size within its batching window,
    /// invokes the function once, and deletes what succeeded.
    async fn run_batch(&self, mapping: &EventSourceMapping) {
        if mapping.stream.is_some() {
            return self.run_stream_batch(mapping).await;
        }
        let Ok(queue) = self.queues.queue_by_arn(&mapping.event_source_arn) else {
            return;
        };
        if self.control.invocation_target(&mapping.function).is_none() {
            return;
        }
        let visibility = queue.visibility_timeout_s;
        let window = Duration::from_secs(mapping.max_batching_window_s as u64);
        let mut batch: Vec<Received> = Vec::new();
        let mut started = std::time::Instant::now();
        while batch.len() < mapping.batch_size as usize {
            let want = (mapping.batch_size as usize - batch.len()).min(10);
            // The first receive is a long poll, woken as soon as a message becomes visible; the
            // mapping counts as busy meanwhile, so the poll loop does not start another batch.
            let wait = if batch.is_empty() {
                FIRST_RECEIVE_WAIT
            } else {
                window.saturating_sub(started.elapsed())
            };
            match self.queues.receive(&queue, want, visibility, wait).await {
                Ok(got) if got.is_empty() => break,
                Ok(got) => {
                    // The batching window starts with the first message.
                    if batch.is_empty() {
                        started = std::time::Instant::now();
                    }
                    batch.extend(got)
                }
                Err(e) => {
                    tracing::warn!(mapping = %mapping.uuid, error = %nimbus_types::error_chain(&e), "receive failed");
                    break;
                }
            }
            if started.elapsed() >= window {
                break;
            }
        }
        if batch.is_empty() {
            return;
        }
        // A mapping disabled or deleted during the long poll runs nothing more; what it leased
        // returns to the queue after the visibility timeout.
        if !self
            .get(&mapping.account, &mapping.uuid)
            .is_ok_and(|m| m.enabled)
        {
            return;
        }
        // What runs is decided now, after the long poll: an alias may have moved meanwhile.
        let Some(function) = self.control.invocation_target(&mapping.function) else {
            return;
        };
        let region = self.queues.region();
        let records: Vec<Value> = batch
            .iter()
            .map(|r| record(r, &mapping.event_source_arn, region))
            .collect();
        let outcome = match self
            .invoke_records(&function, &mapping.function, records)
            .await
        {
            Ok(outcome) => outcome,
            Err(e) => {
                tracing::warn!(mapping = %mapping.uuid, error = %e, "event source batch could not run");
                return;
            }
        };
        if outcome.error.is_some() {
            // The whole batch returns to the queue after its visibility timeout.
            return;
        }
        let failed = if mapping.report_batch_item_failures {
            failed_items(&outcome.payload)
        } else {
            HashSet::new()
        };
        for r in &batch {
            let d = &r.delivery;
            if !failed.contains(&d.id) && self.queues.delete_delivery(d).is_err() {
                // The message comes back after its visibility timeout and runs again.
                tracing::error!(mapping = %mapping.uuid, "could not delete a processed message");
            }
        }
    }
}

/// The `itemIdentifier`s of a function's `{"batchItemFailures": […]}` response.
fn failed_items(payload: &[u8]) -> HashSet<String> {
    serde_json::from_slice::<Value>(payload)
        .ok()
        .and_then(|v| v.get("batchItemFailures").cloned())
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|f| {
            f.get("itemIdentifier")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .collect()
}

/// SQS's message record in a Lambda event.
fn record(r: &Received, arn: &str, region: &str) -> Value {
    let d = &r.delivery;
    json!({
        "messageId": d.id,
        "receiptHandle": r.receipt_handle,
        "body": String::from_utf8_lossy(&d.body),
        "attributes": {
            "ApproximateReceiveCount": d.receive_count.to_string(),
            "SentTimestamp": d.sent_ms.to_string(),
            "SenderId": arn.split(':').nth(4).unwrap_or_default(),
            "ApproximateFirstReceiveTimestamp": nimbus_types::time::now_ms().to_string(),
        },
        "messageAttributes": lambda_attributes(&r.meta),
        "md5OfBody": md5_hex(&d.body),
        "eventSource": "aws:sqs",
        "eventSourceARN": arn,
        "awsRegion": region,
    })
}

/// Message attributes in the shape Lambda's SQS records carry them.
fn lambda_attributes(meta: &MessageMeta) -> Value {
    let out: serde_json::Map<String, Value> = meta
        .attributes
        .iter()
        .map(|(name, a)| {
            (
                name.clone(),
                json!({
                    "stringValue": a.string_value,
                    "binaryValue": a.binary_value,
                    "stringListValues": [],
                    "binaryListValues": [],
                    "dataType": a.data_type,
                }),
            )
        })
        .collect();
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_item_failures_are_read_from_the_response() {
        let payload =
            br#"{"batchItemFailures":[{"itemIdentifier":"a"},{"itemIdentifier":"b"},{"x":1}]}"#;
        let failed = failed_items(payload);
        assert_eq!(failed.len(), 2);
        assert!(failed.contains("a") && failed.contains("b"));
        assert!(failed_items(b"not json").is_empty());
        assert!(failed_items(br#"{"batchItemFailures":"all"}"#).is_empty());
    }
}
