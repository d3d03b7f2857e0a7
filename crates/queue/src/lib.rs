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

pub use log::{Delivery, DurableQueue, NewMessage, QueueCounts, new_id};

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
