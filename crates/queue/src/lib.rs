//! The durable queue: asynchronous invocations, their dead letters and the messages of queues
//! served through the SQS API wait here until a consumer has handled them.
//!
//! One append-only log holds every queue's records, group-committed with one `fdatasync` per
//! batch; each queue has its own in-memory index and lock, so leasing, acknowledging or counting
//! one queue never waits on another, and consumers are woken when messages become visible
//! instead of polling. See [`log`] for the format and its invariants.
//!
//! It knows nothing of functions, SQS or HTTP: what a message means is its consumer's business.

#![forbid(unsafe_code)]

mod log;
pub mod sqs;

pub use log::{Delivery, DurableQueue, NewMessage, QueueCounts, new_id};

use tokio::time::Instant;

/// What consumers need of a queue backend. [`DurableQueue`] (an append-only log in the data
/// directory) implements it; a backend on a shared database can implement it for nodes that
/// share their queues. Every method is per queue except the `wait_any_visible` and
/// `ready_queues` pair the asynchronous invoker uses to find work.
#[async_trait::async_trait]
pub trait MessageQueue: Send + Sync {
    /// Stores `messages` durably (they are on disk when this returns) and returns their ids.
    async fn enqueue(&self, queue: &QueueName, messages: Vec<NewMessage>) -> Result<Vec<String>>;
    /// Leases up to `max` visible messages, invisible to others for `visibility_ms`.
    fn lease(&self, queue: &QueueName, max: usize, visibility_ms: u64) -> Result<Vec<Delivery>>;
    /// Waits until `queue` may have a visible message, or until `deadline`.
    async fn wait_visible(&self, queue: &QueueName, deadline: Instant);
    /// Waits until any queue `wanted` selects may have a visible message, or until `deadline`.
    async fn wait_any_visible(&self, wanted: for<'q> fn(&'q QueueName) -> bool, deadline: Instant);
    /// Deletes a leased message; false if the lease is no longer the current one.
    fn ack(&self, delivery: &Delivery) -> Result<bool>;
    /// Deletes the message a receipt names; false if the receipt is stale.
    fn ack_receipt(&self, queue: &QueueName, seq: u64, receipt: u64) -> Result<bool>;
    /// Returns a leased message to its queue after `delay_ms`, with new metadata.
    fn release(&self, delivery: &Delivery, delay_ms: u64, meta: serde_json::Value) -> Result<bool>;
    /// Makes a leased message visible again after `visibility_ms`; false if the receipt is stale.
    fn change_visibility(
        &self,
        queue: &QueueName,
        seq: u64,
        receipt: u64,
        visibility_ms: u64,
    ) -> Result<bool>;
    fn counts(&self, queue: &QueueName) -> Result<QueueCounts>;
    /// Queues with a message visible now.
    fn ready_queues(&self) -> Result<Vec<QueueName>>;
    /// Up to `limit` messages of a queue without leasing them.
    fn peek_all(&self, queue: &QueueName, limit: usize) -> Result<Vec<Delivery>>;
    fn remove_by_id(&self, queue: &QueueName, id: &str) -> Result<bool>;
    /// Deletes every message of a queue; returns how many.
    fn purge(&self, queue: &QueueName) -> Result<usize>;
    /// Deletes a queue with its messages; returns how many messages went with it.
    fn remove_queue(&self, queue: &QueueName) -> Result<usize>;
    /// Waits until everything already accepted is on disk.
    async fn sync(&self) -> Result<()>;
}

#[async_trait::async_trait]
impl MessageQueue for DurableQueue {
    async fn enqueue(&self, queue: &QueueName, messages: Vec<NewMessage>) -> Result<Vec<String>> {
        DurableQueue::enqueue(self, queue, messages).await
    }
    fn lease(&self, queue: &QueueName, max: usize, visibility_ms: u64) -> Result<Vec<Delivery>> {
        DurableQueue::lease(self, queue, max, visibility_ms)
    }
    async fn wait_visible(&self, queue: &QueueName, deadline: Instant) {
        DurableQueue::wait_visible(self, queue, deadline).await
    }
    async fn wait_any_visible(&self, wanted: for<'q> fn(&'q QueueName) -> bool, deadline: Instant) {
        DurableQueue::wait_any_visible(self, wanted, deadline).await
    }
    fn ack(&self, delivery: &Delivery) -> Result<bool> {
        DurableQueue::ack(self, delivery)
    }
    fn ack_receipt(&self, queue: &QueueName, seq: u64, receipt: u64) -> Result<bool> {
        DurableQueue::ack_receipt(self, queue, seq, receipt)
    }
    fn release(&self, delivery: &Delivery, delay_ms: u64, meta: serde_json::Value) -> Result<bool> {
        DurableQueue::release(self, delivery, delay_ms, meta)
    }
    fn change_visibility(
        &self,
        queue: &QueueName,
        seq: u64,
        receipt: u64,
        visibility_ms: u64,
    ) -> Result<bool> {
        DurableQueue::change_visibility(self, queue, seq, receipt, visibility_ms)
    }
    fn counts(&self, queue: &QueueName) -> Result<QueueCounts> {
        DurableQueue::counts(self, queue)
    }
    fn ready_queues(&self) -> Result<Vec<QueueName>> {
        DurableQueue::ready_queues(self)
    }
    fn peek_all(&self, queue: &QueueName, limit: usize) -> Result<Vec<Delivery>> {
        DurableQueue::peek_all(self, queue, limit)
    }
    fn remove_by_id(&self, queue: &QueueName, id: &str) -> Result<bool> {
        DurableQueue::remove_by_id(self, queue, id)
    }
    fn purge(&self, queue: &QueueName) -> Result<usize> {
        DurableQueue::purge(self, queue)
    }
    fn remove_queue(&self, queue: &QueueName) -> Result<usize> {
        DurableQueue::remove_queue(self, queue)
    }
    async fn sync(&self) -> Result<()> {
        DurableQueue::sync(self).await
    }
}

/// Which queue a message is in. Stored in the log as `kind:name`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum QueueName {
    /// A function's asynchronous events, waiting to run.
    Async(String),
    /// A function's asynchronous events that failed for good without an OnFailure destination.
    DeadLetter(String),
    /// A queue served through the SQS API.
    Sqs(String),
}

impl QueueName {
    /// The name as the log stores it.
    pub fn encode(&self) -> String {
        match self {
            Self::Async(f) => format!("async:{f}"),
            Self::DeadLetter(f) => format!("dlq:{f}"),
            Self::Sqs(q) => format!("sqs:{q}"),
        }
    }

    /// The name from the log's form; None for a kind this version does not know.
    pub fn decode(stored: &str) -> Option<Self> {
        let (kind, name) = stored.split_once(':')?;
        let name = name.to_owned();
        match kind {
            "async" => Some(Self::Async(name)),
            "dlq" => Some(Self::DeadLetter(name)),
            "sqs" => Some(Self::Sqs(name)),
            _ => None,
        }
    }
}

impl std::fmt::Display for QueueName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.encode())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("i/o error on {path}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A commit failed; the messages it carried were not stored.
    #[error("the queue could not commit: {0}")]
    Commit(String),
    #[error("the queue's committer has stopped")]
    Stopped,
    /// A panic while a queue's lock was held: its state can no longer be trusted.
    #[error("a queue lock was poisoned by a panic")]
    Poisoned,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::QueueName;

    #[test]
    fn names_round_trip_through_their_stored_form() {
        for name in [
            QueueName::Async("f".into()),
            QueueName::DeadLetter("f-1".into()),
            QueueName::Sqs("orders:x".into()),
        ] {
            assert_eq!(QueueName::decode(&name.encode()), Some(name));
        }
        assert_eq!(QueueName::decode("other:x"), None);
        assert_eq!(QueueName::decode("nocolon"), None);
    }
}
