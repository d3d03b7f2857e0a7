//! The queues served through the SQS API, as a domain service: their configuration, sending
//! with message attributes, receiving with visibility timeouts, retention and redrive to a
//! dead-letter queue, receipts, and message moves. It knows nothing of SQS's wire protocols:
//! `nimbus-api-sqs` parses requests into these calls and encodes the answers, and the event
//! source mapping pollers receive through the same calls.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use base64::Engine;
use md5::{Digest, Md5};
use nimbus_store::QueueRegistry;
use nimbus_types::arn::QueueArn;
use nimbus_types::queue::{QueueConfig, RedrivePolicy, valid_queue_name};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::{Delivery, MessageQueue, NewMessage, QueueName};

/// What can go wrong, by kind; the API crate chooses the wire code from the variant.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("The specified queue does not exist.")]
    NoSuchQueue,
    #[error(
        "A queue already exists with the same name and a different value for attribute(s) of {0}"
    )]
    NameExists(String),
    #[error("Can only include alphanumeric characters, hyphens, or underscores. 1 to 80 in length")]
    InvalidName,
    #[error("FIFO queues are not supported by this node.")]
    FifoUnsupported,
    #[error("{0}")]
    InvalidAttributeValue(String),
    #[error("Unknown Attribute {0}.")]
    UnknownAttribute(String),
    /// A parameter with a bad value (a message attribute, a delay, an ARN, …).
    #[error("{0}")]
    InvalidParameter(String),
    #[error("The request must contain the parameter MessageBody.")]
    EmptyBody,
    #[error("One or more parameters are invalid. Reason: Message must be shorter than {0} bytes.")]
    MessageTooLong(u32),
    #[error("The input receipt handle \"{0}\" is not a valid receipt handle.")]
    InvalidReceipt(String),
    #[error("Message does not exist or is not available for visibility timeout change.")]
    MessageNotInflight,
    #[error("the queue registry failed")]
    Registry(#[source] nimbus_store::Error),
    #[error("the queue failed")]
    Queue(#[from] crate::Error),
    #[error("a queue lock was poisoned by a panic")]
    Poisoned,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A message attribute as SQS carries it: a data type of `String`, `Number` or `Binary`
/// (optionally with a `.custom` suffix) and the matching value. Binary values stay base64, as
/// they travel in both of SQS's JSON shapes and in Lambda's SQS records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct MessageAttribute {
    pub data_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub string_value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binary_value: Option<String>,
}

impl MessageAttribute {
    /// Checks an attribute as SQS does.
    pub fn validate(&self, name: &str) -> Result<()> {
        let valid_name = !name.is_empty()
            && name.len() <= 256
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
            && !name.starts_with('.')
            && !name.ends_with('.')
            && !name.contains("..")
            && !name.to_ascii_lowercase().starts_with("aws.")
            && !name.to_ascii_lowercase().starts_with("amazon.");
        if !valid_name {
            return Err(Error::InvalidParameter(format!(
                "Message attribute name '{name}' is invalid."
            )));
        }
        let data_type = &self.data_type;
        if data_type.len() > 256 {
            return Err(Error::InvalidParameter(format!(
                "Message attribute '{name}' has a data type longer than 256 characters."
            )));
        }
        match data_type.split('.').next().unwrap_or_default() {
            base @ ("String" | "Number") => {
                let value = self.string_value.as_deref().filter(|v| !v.is_empty());
                let Some(value) = value else {
                    return Err(Error::InvalidParameter(format!(
                        "Message attribute '{name}' must contain a non-empty value of type '{data_type}'."
                    )));
                };
                if base == "Number" && value.parse::<f64>().is_err() {
                    return Err(Error::InvalidParameter(format!(
                        "Can't cast the value of message attribute '{name}' to a number."
                    )));
                }
            }
            "Binary" => {
                let decoded = self
                    .binary_value
                    .as_deref()
                    .map(|v| base64::engine::general_purpose::STANDARD.decode(v));
                match decoded {
                    Some(Ok(bytes)) if !bytes.is_empty() => {}
                    _ => {
                        return Err(Error::InvalidParameter(format!(
                            "Message attribute '{name}' must contain a non-empty value of type 'Binary'."
                        )));
                    }
                }
            }
            _ => {
                return Err(Error::InvalidParameter(format!(
                    "The type of message attribute '{name}' is invalid. You must use only the \
                     following supported type prefixes: Binary, Number, String."
                )));
            }
        }
        Ok(())
    }

    /// The attribute's size as SQS counts it against the message size limit.
    fn size(&self, name: &str) -> usize {
        name.len()
            + self.data_type.len()
            + self.string_value.as_ref().map_or(0, String::len)
            + self.binary_value.as_ref().map_or(0, |b| b.len() * 3 / 4)
    }
}

pub type MessageAttributes = BTreeMap<String, MessageAttribute>;

/// What a message of an SQS queue carries beside its body, stored as the queue log's metadata.
/// Written here and by the asynchronous invoker's queue destinations; read here and by the
/// event source mapping pollers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageMeta {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: MessageAttributes,
    /// The queue a message was redriven from, and how often it had been received there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receives: Option<u32>,
}

impl MessageMeta {
    pub fn of(delivery: &Delivery) -> Self {
        // Metadata this module did not write (none exists) reads as empty.
        serde_json::from_value(delivery.meta.clone()).unwrap_or_default()
    }

    pub fn to_value(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}

/// A message as it was sent.
#[derive(Debug, Clone)]
pub struct Sent {
    pub id: String,
    pub md5_of_body: String,
    pub md5_of_attributes: Option<String>,
}

/// A leased message with its receipt handle.
#[derive(Debug, Clone)]
pub struct Received {
    pub delivery: Delivery,
    pub meta: MessageMeta,
    pub receipt_handle: String,
}

/// A queue's depths, for nimbus's own API.
#[derive(Debug, Clone, Serialize)]
pub struct QueueDepth {
    pub queue: String,
    pub visible: u64,
    pub in_flight: u64,
    pub delayed: u64,
    pub dead_letter_queue: Option<String>,
}

/// The queue log's name for an SQS queue's messages.
pub fn storage_name(queue: &str) -> QueueName {
    QueueName::Sqs(queue.to_owned())
}

pub fn md5_hex(bytes: &[u8]) -> String {
    nimbus_types::hex::encode(&Md5::digest(bytes))
}

/// SQS's MD5 of message attributes: for each attribute in name order, the length-prefixed
/// name, data type, a transport byte (1 text, 2 binary) and the length-prefixed value.
pub fn attributes_md5(attributes: &MessageAttributes) -> String {
    fn put(bytes: &mut Vec<u8>, value: &[u8]) {
        bytes.extend_from_slice(&(value.len() as u32).to_be_bytes());
        bytes.extend_from_slice(value);
    }
    let mut bytes = Vec::new();
    for (name, a) in attributes {
        put(&mut bytes, name.as_bytes());
        put(&mut bytes, a.data_type.as_bytes());
        if let Some(binary) = &a.binary_value {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(binary)
                .unwrap_or_default();
            bytes.push(2);
            put(&mut bytes, &raw);
        } else {
            bytes.push(1);
            put(
                &mut bytes,
                a.string_value.as_deref().unwrap_or_default().as_bytes(),
            );
        }
    }
    md5_hex(&bytes)
}

/// The SQS queues of a node.
pub struct SqsQueues {
    region: String,
    registry: Arc<dyn QueueRegistry>,
    queue: Arc<dyn MessageQueue>,
    configs: RwLock<HashMap<String, QueueConfig>>,
}

impl SqsQueues {
    pub fn load(
        region: String,
        registry: Arc<dyn QueueRegistry>,
        queue: Arc<dyn MessageQueue>,
    ) -> nimbus_store::Result<Self> {
        let configs = registry
            .queues()?
            .into_iter()
            .map(|q| (q.key(), q))
            .collect();
        Ok(Self {
            region,
            registry,
            queue,
            configs: RwLock::new(configs),
        })
    }

    pub fn region(&self) -> &str {
        &self.region
    }

    /// The ARN of the queue held under `key` ([`nimbus_types::name::scoped`]).
    pub fn arn(&self, key: &str) -> QueueArn {
        QueueArn::new(&self.region, key)
    }

    /// A queue's configuration, by key: queues are addressed by their name scoped by their
    /// account, here and in every method below that takes a `name`.
    pub fn queue(&self, name: &str) -> Result<QueueConfig> {
        self.configs
            .read()
            .map_err(|_| Error::Poisoned)?
            .get(name)
            .cloned()
            .ok_or(Error::NoSuchQueue)
    }

    /// The queue an ARN names; a malformed ARN is a bad parameter, a well-formed one of no
    /// queue here is [`Error::NoSuchQueue`].
    pub fn queue_by_arn(&self, arn: &str) -> Result<QueueConfig> {
        let arn = QueueArn::parse(arn).map_err(|e| Error::InvalidParameter(e.to_string()))?;
        self.queue(&nimbus_types::name::scoped(&arn.account, &arn.name))
    }

    /// Names of an account's queues starting with `prefix`, in order, at most `max`.
    pub fn list(&self, account: &str, prefix: &str, max: usize) -> Result<Vec<String>> {
        let mut names: Vec<String> = self
            .configs
            .read()
            .map_err(|_| Error::Poisoned)?
            .values()
            .filter(|q| q.account == account && q.name.starts_with(prefix))
            .map(|q| q.name.clone())
            .collect();
        names.sort();
        names.truncate(max);
        Ok(names)
    }

    /// Creates a queue; creating one that exists with the same attributes succeeds, with
    /// others fails with [`Error::NameExists`].
    pub fn create_queue(
        &self,
        account: &str,
        name: &str,
        attributes: &[(String, String)],
    ) -> Result<QueueConfig> {
        if name.ends_with(".fifo") {
            return Err(Error::FifoUnsupported);
        }
        if !valid_queue_name(name) {
            return Err(Error::InvalidName);
        }
        let mut config = QueueConfig::new(account, name, nimbus_types::time::now_ms());
        self.apply_attributes(&mut config, attributes)?;
        match self.queue(&config.key()) {
            Ok(existing) => {
                let mut same = existing.clone();
                same.created_ms = config.created_ms;
                if same != config {
                    return Err(Error::NameExists(name.to_owned()));
                }
                Ok(existing)
            }
            Err(Error::NoSuchQueue) => {
                self.save(config.clone())?;
                Ok(config)
            }
            Err(e) => Err(e),
        }
    }

    pub fn set_attributes(&self, name: &str, attributes: &[(String, String)]) -> Result<()> {
        let mut config = self.queue(name)?;
        self.apply_attributes(&mut config, attributes)?;
        self.save(config)
    }

    pub fn delete_queue(&self, name: &str) -> Result<()> {
        let config = self.queue(name)?;
        self.queue.remove_queue(&storage_name(&config.key()))?;
        self.registry
            .delete_queue(&config.key())
            .map_err(Error::Registry)?;
        self.configs
            .write()
            .map_err(|_| Error::Poisoned)?
            .remove(&config.key());
        Ok(())
    }

    pub fn purge(&self, name: &str) -> Result<usize> {
        let config = self.queue(name)?;
        Ok(self.queue.purge(&storage_name(&config.key()))?)
    }

    fn save(&self, config: QueueConfig) -> Result<()> {
        self.registry.put_queue(&config).map_err(Error::Registry)?;
        self.configs
            .write()
            .map_err(|_| Error::Poisoned)?
            .insert(config.key(), config);
        Ok(())
    }

    fn apply_attributes(
        &self,
        config: &mut QueueConfig,
        attributes: &[(String, String)],
    ) -> Result<()> {
        fn number(value: &str, name: &str, range: std::ops::RangeInclusive<u32>) -> Result<u32> {
            value
                .parse::<u32>()
                .ok()
                .filter(|n| range.contains(n))
                .ok_or_else(|| {
                    Error::InvalidAttributeValue(format!("Invalid value for the parameter {name}."))
                })
        }
        for (name, text) in attributes {
            match name.as_str() {
                "VisibilityTimeout" => {
                    config.visibility_timeout_s = number(text, name, 0..=43_200)?
                }
                "MessageRetentionPeriod" => {
                    config.message_retention_s = number(text, name, 60..=1_209_600)?
                }
                "DelaySeconds" => config.delay_s = number(text, name, 0..=900)?,
                "ReceiveMessageWaitTimeSeconds" => {
                    config.receive_wait_s = number(text, name, 0..=20)?
                }
                "MaximumMessageSize" => {
                    config.maximum_message_size = number(text, name, 1024..=262_144)?
                }
                "RedrivePolicy" => config.redrive = self.redrive_policy(config, text)?,
                // Accepted and ignored: access policies and encryption at rest do not apply.
                "Policy"
                | "KmsMasterKeyId"
                | "KmsDataKeyReusePeriodSeconds"
                | "SqsManagedSseEnabled" => {}
                "FifoQueue" | "ContentBasedDeduplication" => {
                    return Err(Error::InvalidAttributeValue(
                        "FIFO queues are not supported by this node.".into(),
                    ));
                }
                other => return Err(Error::UnknownAttribute(other.to_owned())),
            }
        }
        Ok(())
    }

    fn redrive_policy(&self, queue: &QueueConfig, text: &str) -> Result<Option<RedrivePolicy>> {
        if text.is_empty() {
            return Ok(None);
        }
        let invalid = |reason: &str| {
            Error::InvalidAttributeValue(format!(
                "Value {text} for parameter RedrivePolicy is invalid. Reason: {reason}"
            ))
        };
        let policy: serde_json::Value =
            serde_json::from_str(text).map_err(|_| invalid("it is not JSON."))?;
        let target = policy
            .get("deadLetterTargetArn")
            .and_then(serde_json::Value::as_str)
            .ok_or_else(|| invalid("deadLetterTargetArn is missing."))?;
        let count = match policy.get("maxReceiveCount") {
            Some(serde_json::Value::String(s)) => s.parse::<u32>().ok(),
            Some(serde_json::Value::Number(n)) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
            _ => None,
        }
        .filter(|n| (1..=1000).contains(n))
        .ok_or_else(|| invalid("maxReceiveCount must be between 1 and 1000."))?;
        let dlq = self
            .queue_by_arn(target)
            .map_err(|_| invalid("Dead-letter target does not exist."))?;
        if dlq.account != queue.account {
            return Err(invalid("Dead-letter target belongs to another account."));
        }
        if dlq.name == queue.name {
            return Err(Error::InvalidAttributeValue(
                "A queue cannot be its own dead-letter queue.".into(),
            ));
        }
        Ok(Some(RedrivePolicy {
            dead_letter_target_arn: target.to_owned(),
            max_receive_count: count,
        }))
    }

    /// A queue's attributes as SQS names and formats them.
    pub fn attributes(&self, config: &QueueConfig) -> Result<Vec<(&'static str, String)>> {
        let counts = self.queue.counts(&storage_name(&config.key()))?;
        let mut out = vec![
            ("QueueArn", self.arn(&config.key()).to_string()),
            ("ApproximateNumberOfMessages", counts.visible.to_string()),
            (
                "ApproximateNumberOfMessagesNotVisible",
                counts.in_flight.to_string(),
            ),
            (
                "ApproximateNumberOfMessagesDelayed",
                counts.delayed.to_string(),
            ),
            ("CreatedTimestamp", (config.created_ms / 1000).to_string()),
            (
                "LastModifiedTimestamp",
                (config.created_ms / 1000).to_string(),
            ),
            ("VisibilityTimeout", config.visibility_timeout_s.to_string()),
            (
                "MaximumMessageSize",
                config.maximum_message_size.to_string(),
            ),
            (
                "MessageRetentionPeriod",
                config.message_retention_s.to_string(),
            ),
            ("DelaySeconds", config.delay_s.to_string()),
            (
                "ReceiveMessageWaitTimeSeconds",
                config.receive_wait_s.to_string(),
            ),
        ];
        if let Some(r) = &config.redrive {
            out.push((
                "RedrivePolicy",
                serde_json::json!({
                    "deadLetterTargetArn": r.dead_letter_target_arn,
                    "maxReceiveCount": r.max_receive_count,
                })
                .to_string(),
            ));
        }
        Ok(out)
    }

    /// Sends one message; `delay_s` overrides the queue's delay.
    pub async fn send(
        &self,
        config: &QueueConfig,
        body: String,
        delay_s: Option<u32>,
        attributes: MessageAttributes,
    ) -> Result<Sent> {
        if attributes.len() > 10 {
            return Err(Error::InvalidParameter(format!(
                "Number of message attributes [{}] exceeds the allowed maximum [10].",
                attributes.len()
            )));
        }
        for (name, attribute) in &attributes {
            attribute.validate(name)?;
        }
        if body.is_empty() {
            return Err(Error::EmptyBody);
        }
        let size = body.len()
            + attributes
                .iter()
                .map(|(name, a)| a.size(name))
                .sum::<usize>();
        if size > config.maximum_message_size as usize {
            return Err(Error::MessageTooLong(config.maximum_message_size));
        }
        if let Some(d) = delay_s
            && d > 900
        {
            return Err(Error::InvalidParameter(format!(
                "Value {d} for parameter DelaySeconds is invalid. Reason: must be between 0 and 900."
            )));
        }
        let md5_of_body = md5_hex(body.as_bytes());
        let md5_of_attributes = (!attributes.is_empty()).then(|| attributes_md5(&attributes));
        let delay_s = delay_s.unwrap_or(config.delay_s) as u64;
        let meta = MessageMeta {
            attributes,
            ..MessageMeta::default()
        };
        let ids = self
            .queue
            .enqueue(
                &storage_name(&config.key()),
                vec![NewMessage {
                    body: body.into_bytes(),
                    delay_ms: delay_s * 1000,
                    meta: meta.to_value(),
                }],
            )
            .await?;
        Ok(Sent {
            id: ids.into_iter().next().unwrap_or_default(),
            md5_of_body,
            md5_of_attributes,
        })
    }

    fn receipt_handle(queue: &str, seq: u64, receipt: u64) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(format!("{queue}\n{seq}\n{receipt}"))
    }

    /// The message and lease a receipt handle names, if it is one of this queue's.
    fn parse_receipt(config: &QueueConfig, handle: &str) -> Result<(u64, u64)> {
        let bad = || Error::InvalidReceipt(handle.chars().take(1024).collect());
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
        if queue != config.key() {
            return Err(bad());
        }
        Ok((
            seq.parse().map_err(|_| bad())?,
            receipt.parse().map_err(|_| bad())?,
        ))
    }

    /// Leases up to `max` messages, waiting up to `wait` for the first. Expired messages are
    /// dropped, and those received more often than the redrive policy allows move to the
    /// dead-letter queue instead of being returned.
    pub async fn receive(
        &self,
        config: &QueueConfig,
        max: usize,
        visibility_s: u32,
        wait: Duration,
    ) -> Result<Vec<Received>> {
        let deadline = Instant::now() + wait;
        let storage = storage_name(&config.key());
        loop {
            let leased = self
                .queue
                .lease(&storage, max, visibility_s as u64 * 1000)?;
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
                    self.redrive(config, redrive, &d).await?;
                    continue;
                }
                out.push(Received {
                    meta: MessageMeta::of(&d),
                    receipt_handle: Self::receipt_handle(&config.key(), d.seq, d.receipt),
                    delivery: d,
                });
            }
            if !out.is_empty() || Instant::now() >= deadline {
                return Ok(out);
            }
            // Woken by the commit that makes a message visible, or by the clock when a delayed
            // or leased one's time comes.
            self.queue.wait_visible(&storage, deadline).await;
        }
    }

    /// Moves a message received too often to the dead-letter queue. If that queue is gone, the
    /// message stays leased and comes back after its visibility timeout, as on SQS.
    async fn redrive(
        &self,
        config: &QueueConfig,
        redrive: &RedrivePolicy,
        d: &Delivery,
    ) -> Result<()> {
        let Ok(dlq) = self.queue_by_arn(&redrive.dead_letter_target_arn) else {
            return Ok(());
        };
        let mut meta = MessageMeta::of(d);
        meta.source = Some(config.key());
        meta.receives = Some(d.receive_count - 1);
        let message = NewMessage {
            body: d.body.clone(),
            delay_ms: 0,
            meta: meta.to_value(),
        };
        self.queue
            .enqueue(&storage_name(&dlq.key()), vec![message])
            .await?;
        self.queue.ack(d)?;
        Ok(())
    }

    /// Deletes a message by its receipt handle. A stale handle of this queue deletes nothing
    /// and succeeds, as on SQS.
    pub fn delete(&self, config: &QueueConfig, receipt_handle: &str) -> Result<()> {
        let (seq, receipt) = Self::parse_receipt(config, receipt_handle)?;
        self.queue
            .ack_receipt(&storage_name(&config.key()), seq, receipt)?;
        Ok(())
    }

    /// Deletes a message leased through [`SqsQueues::receive`].
    pub fn delete_delivery(&self, delivery: &Delivery) -> Result<bool> {
        Ok(self.queue.ack(delivery)?)
    }

    pub fn change_visibility(
        &self,
        config: &QueueConfig,
        receipt_handle: &str,
        visibility_s: u32,
    ) -> Result<()> {
        if visibility_s > 43_200 {
            return Err(Error::InvalidParameter(format!(
                "Value {visibility_s} for parameter VisibilityTimeout is invalid. Reason: must be between 0 and 43200."
            )));
        }
        let (seq, receipt) = Self::parse_receipt(config, receipt_handle)?;
        if self.queue.change_visibility(
            &storage_name(&config.key()),
            seq,
            receipt,
            visibility_s as u64 * 1000,
        )? {
            Ok(())
        } else {
            Err(Error::MessageNotInflight)
        }
    }

    /// Moves every message of a dead-letter queue to `destination_arn`, or, without one, to
    /// the only queue whose redrive policy names it. Returns the task's handle and how many
    /// messages moved.
    pub async fn move_messages(
        &self,
        source_arn: &str,
        destination_arn: Option<&str>,
    ) -> Result<(String, u64)> {
        let source = self.queue_by_arn(source_arn)?;
        let destination = match destination_arn {
            Some(arn) => self.queue_by_arn(arn)?,
            None => {
                let source_arn = self.arn(&source.key()).to_string();
                let sources: Vec<QueueConfig> = self
                    .configs
                    .read()
                    .map_err(|_| Error::Poisoned)?
                    .values()
                    .filter(|q| {
                        q.redrive
                            .as_ref()
                            .is_some_and(|r| r.dead_letter_target_arn == source_arn)
                    })
                    .cloned()
                    .collect();
                match sources.as_slice() {
                    [only] => only.clone(),
                    _ => {
                        return Err(Error::InvalidParameter(
                            "DestinationArn is required: the dead-letter queue is not the target \
                             of exactly one queue"
                                .into(),
                        ));
                    }
                }
            }
        };
        let from = storage_name(&source.key());
        let to = storage_name(&destination.key());
        let mut moved = 0u64;
        loop {
            let batch = self.queue.lease(&from, 100, 60_000)?;
            if batch.is_empty() {
                break;
            }
            let messages = batch
                .iter()
                .map(|d| {
                    // Attributes travel with the message; where it was redriven from does not.
                    let meta = MessageMeta {
                        attributes: MessageMeta::of(d).attributes,
                        ..MessageMeta::default()
                    };
                    NewMessage {
                        body: d.body.clone(),
                        delay_ms: 0,
                        meta: meta.to_value(),
                    }
                })
                .collect();
            self.queue.enqueue(&to, messages).await?;
            for d in &batch {
                self.queue.ack(d)?;
                moved += 1;
            }
        }
        let handle =
            base64::engine::general_purpose::STANDARD.encode(format!("{}:{moved}", source.key()));
        Ok((handle, moved))
    }

    /// Up to `limit` of a queue's messages, oldest first, without receiving them: nothing
    /// about them changes (receive counts, visibility). `None` if there is no such queue.
    pub fn peek(&self, account: &str, name: &str, limit: usize) -> Result<Option<Vec<Delivery>>> {
        let key = {
            let configs = self.configs.read().map_err(|_| Error::Poisoned)?;
            match configs
                .values()
                .find(|q| q.account == account && q.name == name)
            {
                Some(q) => q.key(),
                None => return Ok(None),
            }
        };
        Ok(Some(self.queue.peek_all(&storage_name(&key), limit)?))
    }

    /// Every queue of `account` with its depths, by name.
    pub fn depths(&self, account: &str) -> Result<Vec<QueueDepth>> {
        let mut configs: Vec<QueueConfig> = self
            .configs
            .read()
            .map_err(|_| Error::Poisoned)?
            .values()
            .filter(|q| q.account == account)
            .cloned()
            .collect();
        configs.sort_by(|a, b| a.name.cmp(&b.name));
        configs
            .iter()
            .map(|q| {
                let c = self.queue.counts(&storage_name(&q.key()))?;
                Ok(QueueDepth {
                    queue: q.name.clone(),
                    visible: c.visible,
                    in_flight: c.in_flight,
                    delayed: c.delayed,
                    dead_letter_queue: q
                        .redrive
                        .as_ref()
                        .and_then(|r| QueueArn::parse(&r.dead_letter_target_arn).ok())
                        .map(|arn| arn.name),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attribute(data_type: &str, string: Option<&str>, binary: Option<&str>) -> MessageAttribute {
        MessageAttribute {
            data_type: data_type.into(),
            string_value: string.map(str::to_owned),
            binary_value: binary.map(str::to_owned),
        }
    }

    #[test]
    fn attributes_are_checked_as_sqs_checks_them() {
        assert!(attribute("String", Some("x"), None).validate("a").is_ok());
        assert!(
            attribute("Number.int", Some("12.5"), None)
                .validate("n")
                .is_ok()
        );
        assert!(
            attribute("Binary", None, Some("AAE="))
                .validate("b")
                .is_ok()
        );
        for (name, a) in [
            ("", attribute("String", Some("x"), None)),
            ("AWS.x", attribute("String", Some("x"), None)),
            ("a..b", attribute("String", Some("x"), None)),
            ("a", attribute("String", Some(""), None)),
            ("a", attribute("Number", Some("ten"), None)),
            ("a", attribute("Binary", None, Some("not base64!"))),
            ("a", attribute("Float", Some("1"), None)),
        ] {
            assert!(a.validate(name).is_err(), "{name:?} {a:?} accepted");
        }
    }

    #[test]
    fn meta_keeps_the_stored_shape() {
        // Messages stored before the metadata was typed read back unchanged.
        let stored = serde_json::json!({
            "attributes": { "k": { "DataType": "String", "StringValue": "v" } }
        });
        let d = Delivery {
            queue: storage_name("q"),
            seq: 1,
            id: "id".into(),
            body: b"b".to_vec(),
            meta: stored.clone(),
            sent_ms: 0,
            receive_count: 1,
            receipt: 1,
        };
        let meta = MessageMeta::of(&d);
        assert_eq!(meta.attributes["k"].string_value.as_deref(), Some("v"));
        assert_eq!(meta.to_value(), stored);
        let empty = Delivery {
            meta: serde_json::json!({}),
            ..d
        };
        assert_eq!(MessageMeta::of(&empty), MessageMeta::default());
    }

    #[test]
    fn attribute_digest_is_sqs_digest() {
        // MD5 over: len "a", "a", len "String", "String", 1 (text), len "b", "b".
        let mut attributes = MessageAttributes::new();
        attributes.insert("a".into(), attribute("String", Some("b"), None));
        assert_eq!(
            attributes_md5(&attributes),
            "bef8bf215374a0a228d67533b1a488be"
        );
    }
}
