//! Asynchronous invocation: pollers lease events from the durable queue, invoke the function
//! through the Worker Manager like a synchronous call, retry failures with backoff within the
//! function's event-invoke configuration, and send the final result to its destinations, or to
//! the function's dead-letter queue when a failure has no destination.
//!
//! An event is acknowledged only after its outcome is recorded durably: its usage record and
//! log are on disk, and any destination record is in the queue. Delivery is at least once.

#![forbid(unsafe_code)]

pub mod esm;
pub mod objects;
pub mod schedule;
pub mod scheduler;
mod streams;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use nimbus_manager::WorkerManager;
use nimbus_queue::sqs::MessageMeta;
use nimbus_queue::{Delivery, MessageQueue, NewMessage, QueueName};
use nimbus_types::arn::Destination;
use nimbus_types::function::EventInvokeConfig;
use nimbus_types::{FunctionConfig, InvokeOutcome, InvokeRequest};
use serde_json::{Value, json};
use tokio::sync::Notify;

/// Where a function's asynchronous events wait.
pub fn async_queue(function: &str) -> QueueName {
    QueueName::Async(function.to_owned())
}

/// Where a function's failed asynchronous events go when no OnFailure destination is set.
pub fn dead_letter_queue(function: &str) -> QueueName {
    QueueName::DeadLetter(function.to_owned())
}

pub use nimbus_control::FunctionDirectory;

/// Why a record could not be handed to its target.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DeliveryError {
    /// The target is no function or queue ARN: it will never take the record.
    #[error("unsupported target: {0}")]
    Unsupported(String),
    /// The queue could not store it now; a later try may.
    #[error("{0}")]
    Storage(String),
}

#[derive(Debug, Clone)]
pub struct AsyncConfig {
    /// Asynchronous invocations running at once.
    pub concurrency: usize,
    /// First retry delay; each further retry doubles it (Lambda waits about a minute, then two).
    pub retry_base: Duration,
    /// Delay before an event throttled by the concurrency limit is tried again; it is not
    /// counted as an attempt.
    pub throttle_delay: Duration,
}

impl Default for AsyncConfig {
    fn default() -> Self {
        Self {
            concurrency: 64,
            retry_base: Duration::from_secs(60),
            throttle_delay: Duration::from_secs(1),
        }
    }
}

/// What travels with an asynchronous event in the queue.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct EventMeta {
    pub function: String,
    pub request_id: String,
    /// Attempts made so far.
    pub attempts: u32,
    pub enqueued_ms: i64,
    /// Set once the event has failed for good: why, and the last error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Value>,
}

impl EventMeta {
    /// The metadata of an event in a function's queue or dead-letter queue; `None` for a
    /// message this module did not write.
    pub fn of(delivery: &Delivery) -> Option<Self> {
        serde_json::from_value(delivery.meta.clone()).ok()
    }
}

pub struct AsyncInvoker {
    config: AsyncConfig,
    queue: Arc<dyn MessageQueue>,
    manager: Arc<WorkerManager>,
    functions: Arc<dyn FunctionDirectory>,
    region: String,
    wake: Notify,
    in_flight: AtomicUsize,
    /// Events whose outcome waits for the next telemetry flush before they are acknowledged.
    acks: std::sync::Mutex<Vec<Delivery>>,
    acks_ready: Notify,
}

/// How long finished events wait to share one telemetry flush before they are acknowledged.
/// Their poller slots are free meanwhile; only the acknowledgement waits.
const ACK_BATCH_WINDOW: Duration = Duration::from_millis(10);

/// How long acknowledgements may wait for their telemetry to become durable: the writer
/// syncs by then, so a steady stream of events costs ten telemetry syncs a second, not one per
/// batch. Events stay leased meanwhile; their poller slots are already free.
const ACK_DURABLE_WITHIN: Duration = Duration::from_millis(100);

impl AsyncInvoker {
    pub fn new(
        config: AsyncConfig,
        queue: Arc<dyn MessageQueue>,
        manager: Arc<WorkerManager>,
        functions: Arc<dyn FunctionDirectory>,
        region: String,
    ) -> Arc<Self> {
        Arc::new(Self {
            config,
            queue,
            manager,
            functions,
            region,
            wake: Notify::new(),
            in_flight: AtomicUsize::new(0),
            acks: std::sync::Mutex::new(Vec::new()),
            acks_ready: Notify::new(),
        })
    }

    pub fn queue(&self) -> &Arc<dyn MessageQueue> {
        &self.queue
    }

    /// Acknowledges an event. If the queue fails, the event comes back after its visibility
    /// timeout and runs again: delivery is at least once.
    fn ack(&self, delivery: &Delivery) {
        if let Err(e) = self.queue.ack(delivery) {
            tracing::error!(queue = %delivery.queue, id = %delivery.id, error = %e, "could not acknowledge an event; it will run again");
        }
    }

    /// Hands an event back to wait `delay_ms` with new metadata.
    fn release(&self, delivery: &Delivery, delay_ms: u64, meta: Value) {
        if let Err(e) = self.queue.release(delivery, delay_ms, meta) {
            tracing::error!(queue = %delivery.queue, id = %delivery.id, error = %e, "could not hand an event back; it returns after its visibility timeout");
        }
    }

    /// Persists an asynchronous invocation; returns once it is on disk.
    pub async fn submit(
        &self,
        function: &str,
        request_id: &str,
        payload: Bytes,
    ) -> nimbus_queue::Result<()> {
        let meta = EventMeta {
            function: function.to_owned(),
            request_id: request_id.to_owned(),
            attempts: 0,
            enqueued_ms: nimbus_types::time::now_ms(),
            condition: None,
            error: None,
        };
        let message = NewMessage {
            body: payload.to_vec(),
            delay_ms: 0,
            meta: serde_json::to_value(meta).unwrap_or(Value::Null),
        };
        self.queue
            .enqueue(&async_queue(function), vec![message])
            .await?;
        self.wake.notify_one();
        Ok(())
    }

    /// Acknowledges an event once its usage record and log are on disk. Finished events share
    /// one flush per batch window; the poller moves on at once, the event stays leased until
    /// then.
    async fn durable_ack(&self, delivery: Delivery) {
        if let Ok(mut acks) = self.acks.lock() {
            acks.push(delivery);
        }
        self.acks_ready.notify_one();
    }

    /// Flushes the telemetry of the finished events and acknowledges them; returns how many.
    async fn ack_batch(&self) -> usize {
        let batch = self
            .acks
            .lock()
            .map(|mut a| std::mem::take(&mut *a))
            .unwrap_or_default();
        if batch.is_empty() {
            return 0;
        }
        self.manager
            .flush_telemetry_within(ACK_DURABLE_WITHIN)
            .await;
        for delivery in &batch {
            self.ack(delivery);
        }
        batch.len()
    }

    async fn run_acks(self: Arc<Self>) {
        loop {
            self.acks_ready.notified().await;
            // Let other finishing invocations join this batch.
            tokio::time::sleep(ACK_BATCH_WINDOW).await;
            self.ack_batch().await;
        }
    }

    /// Leases and runs events until `shutdown` resolves; in-flight events then finish.
    pub async fn run(self: Arc<Self>, shutdown: impl std::future::Future<Output = ()>) {
        let acker = tokio::spawn(self.clone().run_acks());
        tokio::pin!(shutdown);
        loop {
            let leased = self.dispatch();
            let full = self.in_flight.load(Ordering::Acquire) >= self.config.concurrency;
            // Woken when a running event finishes and frees a slot, or (with a slot free) by a
            // commit or release that makes an event visible, or by the clock when a delayed or
            // leased one's time comes; the deadline is only a backstop.
            let backstop = tokio::time::Instant::now() + Duration::from_secs(1);
            let visible = async {
                if full {
                    // Visible events wait for a slot: only a finished event helps.
                    tokio::time::sleep_until(backstop).await;
                    return;
                }
                if leased == 0 {
                    // Events this round could not take (their lease failed) would make the
                    // wait below return at once: never spin on them.
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                self.queue
                    .wait_any_visible(|q| matches!(q, QueueName::Async(_)), backstop)
                    .await;
            };
            tokio::select! {
                _ = &mut shutdown => break,
                _ = self.wake.notified() => {}
                _ = visible => {}
            }
        }
        while self.in_flight.load(Ordering::Acquire) > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        acker.abort();
        // What finished is acknowledged before the node stops, so a clean stop repeats nothing.
        self.ack_batch().await;
    }

    /// Leases visible events into free slots and starts them; returns how many.
    fn dispatch(self: &Arc<Self>) -> usize {
        let mut started = 0;
        let ready = match self.queue.ready_queues() {
            Ok(ready) => ready,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the event queue");
                return 0;
            }
        };
        for queue in ready {
            let QueueName::Async(function) = &queue else {
                continue;
            };
            let free = self
                .config
                .concurrency
                .saturating_sub(self.in_flight.load(Ordering::Acquire));
            if free == 0 {
                return started;
            }
            let visibility = self
                .functions
                .function(function)
                .map_or(900_000, |f| f.timeout_s as u64 * 1000 + 5_000);
            let Ok(deliveries) = self.queue.lease(&queue, free, visibility) else {
                continue;
            };
            for delivery in deliveries {
                started += 1;
                self.in_flight.fetch_add(1, Ordering::AcqRel);
                let invoker = self.clone();
                tokio::spawn(async move {
                    invoker.handle(delivery).await;
                    invoker.in_flight.fetch_sub(1, Ordering::AcqRel);
                    invoker.wake.notify_one();
                });
            }
        }
        started
    }

    async fn handle(&self, delivery: Delivery) {
        let Some(mut meta) = EventMeta::of(&delivery) else {
            tracing::error!(queue = %delivery.queue, id = %delivery.id, "dropping an event with unreadable metadata");
            self.ack(&delivery);
            return;
        };
        let Some(function) = self.functions.function(&meta.function) else {
            tracing::warn!(function = %meta.function, request_id = %meta.request_id, "function deleted; dropping its event");
            self.ack(&delivery);
            return;
        };
        let config = function.event_invoke.clone().unwrap_or_default();
        let age_ms = nimbus_types::time::now_ms() - meta.enqueued_ms;
        if age_ms > config.maximum_event_age_s as i64 * 1000 {
            meta.condition = Some("EventAgeExceeded".into());
            self.fail(&delivery, &function, &config, meta, None).await;
            return;
        }
        let request = InvokeRequest {
            request_id: meta.request_id.clone(),
            payload: Bytes::from(delivery.body.clone()),
            client_context: None,
            async_attempt: Some(meta.attempts + 1),
            http: None,
            stream: None,
            qualifier: meta.function.split_once(':').map(|(_, q)| q.to_owned()),
        };
        match self.manager.invoke(&function, request).await {
            Err(
                nimbus_manager::Error::Throttled(_)
                | nimbus_manager::Error::NoCapacity(_)
                | nimbus_manager::Error::WorkerLost(_),
            ) => {
                // Throttled events wait and try again; the throttle is not an attempt. Nor is
                // a run cut short by a lost worker: the event goes to another one.
                let value = serde_json::to_value(&meta).unwrap_or(Value::Null);
                self.release(
                    &delivery,
                    self.config.throttle_delay.as_millis() as u64,
                    value,
                );
            }
            Err(e) => {
                tracing::warn!(function = %function.name, error = %e, "asynchronous invocation could not run");
                meta.attempts += 1;
                self.retry_or_fail(&delivery, &function, &config, meta, None)
                    .await;
            }
            Ok(outcome) => {
                meta.attempts += 1;
                if outcome.error.is_none() {
                    if let Some(target) = &config.on_success {
                        let record = self.destination_record(
                            &function,
                            &meta,
                            &delivery,
                            "Success",
                            Some(&outcome),
                        );
                        self.send_to_destination(target, record).await;
                    }
                    // The outcome is on disk before the event is acknowledged.
                    self.durable_ack(delivery).await;
                } else {
                    self.retry_or_fail(&delivery, &function, &config, meta, Some(outcome))
                        .await;
                }
            }
        }
    }

    async fn retry_or_fail(
        &self,
        delivery: &Delivery,
        function: &FunctionConfig,
        config: &EventInvokeConfig,
        mut meta: EventMeta,
        outcome: Option<InvokeOutcome>,
    ) {
        if meta.attempts <= config.maximum_retry_attempts {
            let delay =
                self.config.retry_base.as_millis() as u64 * (1u64 << (meta.attempts - 1).min(10));
            meta.error = outcome
                .as_ref()
                .and_then(|o| serde_json::from_slice(&o.payload).ok());
            let value = serde_json::to_value(&meta).unwrap_or(Value::Null);
            self.release(delivery, delay, value);
        } else {
            meta.condition = Some("RetriesExhausted".into());
            self.fail(delivery, function, config, meta, outcome.as_ref())
                .await;
        }
    }

    /// Sends a finally failed event to its OnFailure destination or the dead-letter queue.
    async fn fail(
        &self,
        delivery: &Delivery,
        function: &FunctionConfig,
        config: &EventInvokeConfig,
        mut meta: EventMeta,
        outcome: Option<&InvokeOutcome>,
    ) {
        let condition = meta
            .condition
            .clone()
            .unwrap_or_else(|| "RetriesExhausted".into());
        tracing::info!(function = %function.name, request_id = %meta.request_id, %condition, attempts = meta.attempts, "asynchronous event failed");
        // The logs and usage of its attempts are durable before the failure shows anywhere:
        // whoever finds the dead letter or the destination record finds them too.
        self.manager.flush_telemetry().await;
        match &config.on_failure {
            Some(target) => {
                let record =
                    self.destination_record(function, &meta, delivery, &condition, outcome);
                self.send_to_destination(target, record).await;
            }
            None => {
                if let Some(o) = outcome {
                    meta.error = serde_json::from_slice(&o.payload).ok();
                }
                let message = NewMessage {
                    body: delivery.body.clone(),
                    delay_ms: 0,
                    meta: serde_json::to_value(&meta).unwrap_or(Value::Null),
                };
                if let Err(e) = self
                    .queue
                    .enqueue(&dead_letter_queue(&function.key()), vec![message])
                    .await
                {
                    // Keep the event rather than lose it: it will be retried after its lease.
                    tracing::error!(error = %e, "could not dead-letter an event");
                    return;
                }
            }
        }
        self.durable_ack(delivery.clone()).await;
    }

    /// Lambda's destination record.
    fn destination_record(
        &self,
        function: &FunctionConfig,
        meta: &EventMeta,
        delivery: &Delivery,
        condition: &str,
        outcome: Option<&InvokeOutcome>,
    ) -> Value {
        let parse = |bytes: &[u8]| {
            serde_json::from_slice::<Value>(bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
        };
        let mut response_context =
            json!({ "statusCode": 200, "executedVersion": function.version });
        if outcome.is_some_and(|o| o.error.is_some()) {
            response_context["functionError"] = json!("Unhandled");
        }
        let timestamp = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let mut record = json!({
            "version": "1.0",
            "timestamp": timestamp,
            "requestContext": {
                "requestId": meta.request_id,
                "functionArn": format!("{}:{}", function.arn(&self.region), function.version),
                "condition": condition,
                "approximateInvokeCount": meta.attempts,
            },
            "requestPayload": parse(&delivery.body),
        });
        if let Some(o) = outcome {
            record["responseContext"] = response_context;
            record["responsePayload"] = parse(&o.payload);
        }
        record
    }

    /// Delivers a destination record: a function target gets it as an asynchronous event, a
    /// queue target as a message.
    async fn send_to_destination(&self, target: &str, record: Value) {
        let body = serde_json::to_vec(&record).unwrap_or_default();
        if let Err(e) = self.deliver(target, body).await {
            tracing::error!(%target, error = %e, "could not deliver to a destination");
        }
    }

    /// Hands `body` to `target` (a function's or a queue's ARN) durably: as an asynchronous
    /// invocation of the function, or as a message in the queue. Returns once it is on disk.
    pub async fn deliver(&self, target: &str, body: Vec<u8>) -> Result<(), DeliveryError> {
        match Destination::parse(target) {
            Ok(Destination::Queue(queue)) => {
                let message = NewMessage {
                    body,
                    delay_ms: 0,
                    meta: MessageMeta::default().to_value(),
                };
                let queue = nimbus_queue::sqs::storage_name(&nimbus_types::name::scoped(
                    &queue.account,
                    &queue.name,
                ));
                self.queue
                    .enqueue(&queue, vec![message])
                    .await
                    .map(|_| ())
                    .map_err(|e| DeliveryError::Storage(e.to_string()))
            }
            Ok(Destination::Function(function)) => self
                .submit(
                    &function.target(),
                    &nimbus_queue::new_id(),
                    Bytes::from(body),
                )
                .await
                .map_err(|e| DeliveryError::Storage(e.to_string())),
            Err(e) => Err(DeliveryError::Unsupported(e.to_string())),
        }
    }

    /// Dead-lettered events of a function, oldest first.
    pub fn dead_letters(
        &self,
        function: &str,
        limit: usize,
    ) -> nimbus_queue::Result<Vec<Delivery>> {
        self.queue.peek_all(&dead_letter_queue(function), limit)
    }

    /// Moves a dead-lettered event back to the function's queue, with its attempts reset.
    pub async fn replay(&self, function: &str, id: &str) -> nimbus_queue::Result<bool> {
        let Some(event) = self
            .dead_letters(function, usize::MAX)?
            .into_iter()
            .find(|d| d.id == id)
        else {
            return Ok(false);
        };
        let meta: EventMeta = match serde_json::from_value(event.meta.clone()) {
            Ok(m) => m,
            Err(_) => return Ok(false),
        };
        self.submit(function, &meta.request_id, Bytes::from(event.body))
            .await?;
        self.queue.remove_by_id(&dead_letter_queue(function), id)
    }
}
