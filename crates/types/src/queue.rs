//! Configuration of the queues nimbus serves through the SQS API.

use serde::{Deserialize, Serialize};

/// Where a queue's messages go after too many receives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedrivePolicy {
    pub dead_letter_target_arn: String,
    pub max_receive_count: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueConfig {
    pub name: String,
    /// The account the queue belongs to.
    #[serde(default = "default_account")]
    pub account: String,
    pub created_ms: i64,
    pub visibility_timeout_s: u32,
    pub message_retention_s: u32,
    pub delay_s: u32,
    pub receive_wait_s: u32,
    pub maximum_message_size: u32,
    pub redrive: Option<RedrivePolicy>,
}

impl QueueConfig {
    pub fn new(account: &str, name: &str, now_ms: i64) -> Self {
        Self {
            name: name.to_owned(),
            account: account.to_owned(),
            created_ms: now_ms,
            visibility_timeout_s: 30,
            message_retention_s: 345_600,
            delay_s: 0,
            receive_wait_s: 0,
            maximum_message_size: 262_144,
            redrive: None,
        }
    }

    /// The key the queue is held under ([`crate::name::scoped`]).
    pub fn key(&self) -> String {
        crate::name::scoped(&self.account, &self.name)
    }
}

/// SQS's queue-name rule: 1–80 of `[A-Za-z0-9_-]` (FIFO queues are not served).
pub fn valid_queue_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 80
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A mapping that feeds a queue's messages to a function.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventSourceMapping {
    pub uuid: String,
    /// The account the mapping belongs to, with its queue and function.
    #[serde(default = "default_account")]
    pub account: String,
    /// The function's key ([`crate::name::scoped`]).
    pub function: String,
    pub event_source_arn: String,
    pub batch_size: u32,
    pub max_batching_window_s: u32,
    pub enabled: bool,
    pub report_batch_item_failures: bool,
    pub last_modified_ms: i64,
    /// A stream source's settings and progress; `None` for a queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<StreamSource>,
}

/// How a mapping reads a stream (a DynamoDB table's), and how far it got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamSource {
    /// `TRIM_HORIZON` or `LATEST`, as given.
    pub starting_position: String,
    /// Retries of a failed batch before it is skipped; -1: until its records expire.
    pub maximum_retry_attempts: i64,
    /// Records older than this many seconds are skipped; -1: never.
    pub maximum_record_age_s: i64,
    /// On a failure, retry each half of the batch on its own.
    pub bisect_batch_on_function_error: bool,
    /// Where a skipped batch is described (a queue's ARN).
    pub on_failure: Option<String>,
    /// The sequence number of the last record handled.
    pub checkpoint: u64,
}

/// A scheduled rule (EventBridge's PutRule with a ScheduleExpression) and its targets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleRule {
    pub name: String,
    /// The account the rule belongs to.
    #[serde(default = "default_account")]
    pub account: String,
    pub schedule_expression: String,
    pub description: String,
    pub enabled: bool,
    pub created_ms: i64,
    /// When the rule was last enabled: fires before this are never due.
    pub enabled_ms: i64,
    /// The due time of the last fire, persisted before its events are sent.
    pub last_fire_ms: Option<i64>,
    pub targets: Vec<RuleTarget>,
}

impl ScheduleRule {
    /// The key the rule is held under ([`crate::name::scoped`]).
    pub fn key(&self) -> String {
        crate::name::scoped(&self.account, &self.name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleTarget {
    pub id: String,
    pub arn: String,
    pub input: Option<String>,
}

fn default_account() -> String {
    crate::name::DEFAULT_ACCOUNT.to_owned()
}
