//! The durable queue: asynchronous invocations and queue messages wait here until a poller has
//! handled them. `enqueue` returns only once the messages are on disk; one committer thread
//! group-commits whatever arrived meanwhile, so many concurrent producers share each fsync.
//!
//! Message bodies live only in the file; each queue's index (visibility time, receive count) is
//! kept in memory and rebuilt from the file at start. A message leased and not acknowledged
//! becomes visible again when its visibility timeout ends: delivery is at least once.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};

use redb::{Database, Durability, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// (queue, sequence) → message metadata (JSON).
const META: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("queue_meta");
/// (queue, sequence) → message body.
const BODY: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("queue_body");

/// A message to add to a queue.
#[derive(Debug, Clone, Default)]
pub struct NewMessage {
    pub body: Vec<u8>,
    /// Invisible for this long after it is enqueued.
    pub delay_ms: u64,
    /// Opaque to the queue: what its consumer needs to know (attempts, the request id, …).
    pub meta: serde_json::Value,
}

/// A message handed to a consumer under a lease.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub queue: String,
    pub seq: u64,
    pub id: String,
    pub body: Vec<u8>,
    pub meta: serde_json::Value,
    pub sent_ms: i64,
    /// Including this delivery.
    pub receive_count: u32,
    /// Names this lease; acknowledging with an older one does nothing.
    pub receipt: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueCounts {
    pub visible: u64,
    pub in_flight: u64,
    pub delayed: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Meta {
    id: String,
    sent_ms: i64,
    visible_at_ms: i64,
    receive_count: u32,
    /// Set by the first lease; visible_at_ms before this means "delayed", after it "in flight".
    #[serde(default)]
    leased: bool,
    #[serde(default)]
    meta: serde_json::Value,
    #[serde(skip)]
    receipt: u64,
}

#[derive(Default)]
struct QueueState {
    messages: HashMap<u64, Meta>,
    /// (visible_at_ms, seq) of every message, ordered by when it can be leased.
    order: BTreeSet<(i64, u64)>,
}

enum Op {
    Insert {
        queue: String,
        seq: u64,
        meta: Vec<u8>,
        body: Vec<u8>,
    },
    Update {
        queue: String,
        seq: u64,
        meta: Vec<u8>,
    },
    Delete {
        queue: String,
        seq: u64,
    },
    /// Answered once everything before it is on disk.
    Sync(tokio::sync::oneshot::Sender<Result<(), String>>),
}

pub struct DurableQueue {
    db: Arc<Database>,
    state: Mutex<HashMap<String, QueueState>>,
    next_seq: AtomicU64,
    next_receipt: AtomicU64,
    committer: Mutex<Option<mpsc::Sender<Op>>>,
    committer_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Drop for DurableQueue {
    /// Lets the committer finish what it was given and release the file.
    fn drop(&mut self) {
        if let Ok(mut tx) = self.committer.lock() {
            tx.take();
        }
        if let Some(thread) = self.committer_thread.lock().ok().and_then(|mut t| t.take()) {
            let _ = thread.join();
        }
    }
}

fn now_ms() -> i64 {
    nimbus_types::time::now_ms()
}

fn encode(meta: &Meta) -> Vec<u8> {
    serde_json::to_vec(meta).unwrap_or_default()
}

impl DurableQueue {
    pub fn open(path: &Path) -> Result<Self> {
        let db = Arc::new(redb::Builder::new().set_cache_size(16 << 20).create(path)?);
        let mut state: HashMap<String, QueueState> = HashMap::new();
        let mut max_seq = 0;
        {
            let txn = db.begin_write()?;
            txn.open_table(META)?;
            txn.open_table(BODY)?;
            txn.commit()?;
            let read = db.begin_read()?;
            let table = read.open_table(META)?;
            for entry in table.iter()? {
                let (key, value) = entry?;
                let (queue, seq) = key.value();
                let meta: Meta = serde_json::from_slice(value.value()).map_err(Error::Corrupt)?;
                max_seq = max_seq.max(seq);
                let q = state.entry(queue.to_owned()).or_default();
                q.order.insert((meta.visible_at_ms, seq));
                q.messages.insert(seq, meta);
            }
        }
        let (tx, rx) = mpsc::channel();
        let committer_db = db.clone();
        let thread = std::thread::Builder::new()
            .name("nimbus-queue-commit".into())
            .spawn(move || commit_loop(&committer_db, rx))
            .map_err(|source| Error::Io {
                path: path.to_owned(),
                source,
            })?;
        Ok(Self {
            db,
            state: Mutex::new(state),
            next_seq: AtomicU64::new(max_seq + 1),
            next_receipt: AtomicU64::new(1),
            committer: Mutex::new(Some(tx)),
            committer_thread: Mutex::new(Some(thread)),
        })
    }

    fn send(&self, op: Op) {
        if let Ok(tx) = self.committer.lock()
            && let Some(tx) = tx.as_ref()
        {
            let _ = tx.send(op);
        }
    }

    /// Adds messages; the returned future resolves with their ids once they are on disk.
    /// Nobody sees them before that.
    pub async fn enqueue(&self, queue: &str, messages: Vec<NewMessage>) -> Result<Vec<String>> {
        let now = now_ms();
        let mut added = Vec::with_capacity(messages.len());
        for message in messages {
            let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
            let meta = Meta {
                id: uuid_v4(),
                sent_ms: now,
                visible_at_ms: now + message.delay_ms as i64,
                receive_count: 0,
                leased: false,
                meta: message.meta,
                receipt: 0,
            };
            self.send(Op::Insert {
                queue: queue.to_owned(),
                seq,
                meta: encode(&meta),
                body: message.body,
            });
            added.push((seq, meta));
        }
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        self.send(Op::Sync(done_tx));
        match done_rx.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(Error::Queue(e)),
            Err(_) => return Err(Error::Queue("the queue committer stopped".into())),
        }
        let ids = added.iter().map(|(_, m)| m.id.clone()).collect();
        if let Ok(mut state) = self.state.lock() {
            let q = state.entry(queue.to_owned()).or_default();
            for (seq, meta) in added {
                q.order.insert((meta.visible_at_ms, seq));
                q.messages.insert(seq, meta);
            }
        }
        Ok(ids)
    }

    /// Leases up to `max` visible messages for `visibility_ms`.
    pub fn lease(&self, queue: &str, max: usize, visibility_ms: u64) -> Result<Vec<Delivery>> {
        let now = now_ms();
        let mut leased = Vec::new();
        {
            let Ok(mut state) = self.state.lock() else {
                return Ok(Vec::new());
            };
            let Some(q) = state.get_mut(queue) else {
                return Ok(Vec::new());
            };
            while leased.len() < max {
                let Some(&(visible_at, seq)) = q.order.first() else {
                    break;
                };
                if visible_at > now {
                    break;
                }
                q.order.remove(&(visible_at, seq));
                let Some(meta) = q.messages.get_mut(&seq) else {
                    continue;
                };
                meta.visible_at_ms = now + visibility_ms as i64;
                meta.receive_count += 1;
                meta.leased = true;
                meta.receipt = self.next_receipt.fetch_add(1, Ordering::Relaxed);
                q.order.insert((meta.visible_at_ms, seq));
                leased.push((seq, meta.clone()));
            }
        }
        if leased.is_empty() {
            return Ok(Vec::new());
        }
        let read = self.db.begin_read()?;
        let bodies = read.open_table(BODY)?;
        let mut out = Vec::with_capacity(leased.len());
        for (seq, meta) in leased {
            // Receive counts survive a crash with the next durable commit.
            self.send(Op::Update {
                queue: queue.to_owned(),
                seq,
                meta: encode(&meta),
            });
            let body = bodies
                .get((queue, seq))?
                .map(|b| b.value().to_vec())
                .unwrap_or_default();
            out.push(Delivery {
                queue: queue.to_owned(),
                seq,
                id: meta.id,
                body,
                meta: meta.meta,
                sent_ms: meta.sent_ms,
                receive_count: meta.receive_count,
                receipt: meta.receipt,
            });
        }
        Ok(out)
    }

    /// Deletes a leased message; false if the lease is no longer the current one.
    pub fn ack(&self, delivery: &Delivery) -> bool {
        let removed = self.state.lock().ok().is_some_and(|mut state| {
            let Some(q) = state.get_mut(&delivery.queue) else {
                return false;
            };
            match q.messages.get(&delivery.seq) {
                Some(meta) if meta.receipt == delivery.receipt => {
                    let key = (meta.visible_at_ms, delivery.seq);
                    q.order.remove(&key);
                    q.messages.remove(&delivery.seq);
                    true
                }
                _ => false,
            }
        });
        if removed {
            self.send(Op::Delete {
                queue: delivery.queue.clone(),
                seq: delivery.seq,
            });
        }
        removed
    }

    /// Makes a leased message visible again after `delay_ms`, with new metadata.
    pub fn release(&self, delivery: &Delivery, delay_ms: u64, meta: serde_json::Value) -> bool {
        let updated = self.state.lock().ok().and_then(|mut state| {
            let q = state.get_mut(&delivery.queue)?;
            let m = q.messages.get_mut(&delivery.seq)?;
            if m.receipt != delivery.receipt {
                return None;
            }
            q.order.remove(&(m.visible_at_ms, delivery.seq));
            m.visible_at_ms = now_ms() + delay_ms as i64;
            m.meta = meta;
            m.receipt = 0;
            m.leased = false;
            q.order.insert((m.visible_at_ms, delivery.seq));
            Some(encode(m))
        });
        match updated {
            Some(meta) => {
                self.send(Op::Update {
                    queue: delivery.queue.clone(),
                    seq: delivery.seq,
                    meta,
                });
                true
            }
            None => false,
        }
    }

    pub fn counts(&self, queue: &str) -> QueueCounts {
        let now = now_ms();
        let mut counts = QueueCounts::default();
        if let Ok(state) = self.state.lock()
            && let Some(q) = state.get(queue)
        {
            for meta in q.messages.values() {
                if meta.visible_at_ms <= now {
                    counts.visible += 1;
                } else if meta.leased {
                    counts.in_flight += 1;
                } else {
                    counts.delayed += 1;
                }
            }
        }
        counts
    }

    /// Queues holding at least one message that can be leased now.
    pub fn ready_queues(&self) -> Vec<String> {
        let now = now_ms();
        self.state
            .lock()
            .map(|state| {
                state
                    .iter()
                    .filter(|(_, q)| q.order.first().is_some_and(|(t, _)| *t <= now))
                    .map(|(name, _)| name.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The earliest time any message becomes visible, for pollers that want to sleep until then.
    pub fn next_visible_ms(&self) -> Option<i64> {
        self.state
            .lock()
            .ok()?
            .values()
            .filter_map(|q| q.order.first().map(|(t, _)| *t))
            .min()
    }

    /// Every message of a queue (for inspecting dead-letter queues), oldest first.
    pub fn peek_all(&self, queue: &str, limit: usize) -> Result<Vec<Delivery>> {
        let entries: Vec<(u64, Meta)> = match self.state.lock() {
            Ok(state) => match state.get(queue) {
                Some(q) => {
                    let mut v: Vec<_> = q.messages.iter().map(|(s, m)| (*s, m.clone())).collect();
                    v.sort_by_key(|(s, _)| *s);
                    v.truncate(limit);
                    v
                }
                None => Vec::new(),
            },
            Err(_) => Vec::new(),
        };
        let read = self.db.begin_read()?;
        let bodies = read.open_table(BODY)?;
        let mut out = Vec::new();
        for (seq, meta) in entries {
            let body = bodies
                .get((queue, seq))?
                .map(|b| b.value().to_vec())
                .unwrap_or_default();
            out.push(Delivery {
                queue: queue.to_owned(),
                seq,
                id: meta.id,
                body,
                meta: meta.meta,
                sent_ms: meta.sent_ms,
                receive_count: meta.receive_count,
                receipt: meta.receipt,
            });
        }
        Ok(out)
    }

    /// Removes one message by id, whatever its state (used to replay from a dead-letter queue).
    pub fn remove_by_id(&self, queue: &str, id: &str) -> bool {
        let removed = self.state.lock().ok().and_then(|mut state| {
            let q = state.get_mut(queue)?;
            let seq = q
                .messages
                .iter()
                .find(|(_, m)| m.id == id)
                .map(|(s, _)| *s)?;
            let meta = q.messages.remove(&seq)?;
            q.order.remove(&(meta.visible_at_ms, seq));
            Some(seq)
        });
        match removed {
            Some(seq) => {
                self.send(Op::Delete {
                    queue: queue.to_owned(),
                    seq,
                });
                true
            }
            None => false,
        }
    }

    /// Waits until everything sent to the committer is on disk.
    pub async fn sync(&self) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.send(Op::Sync(tx));
        let _ = rx.await;
    }
}

fn uuid_v4() -> String {
    let mut bytes = [0u8; 16];
    let _ = getrandom_fill(&mut bytes);
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let h = crate::code::hex(&bytes);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

fn getrandom_fill(buf: &mut [u8]) -> std::io::Result<()> {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")?.read_exact(buf)
}

const MAX_BATCH: usize = 8192;

fn commit_loop(db: &Database, rx: mpsc::Receiver<Op>) {
    let mut batch = Vec::new();
    while let Ok(first) = rx.recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let durable = batch.iter().any(|op| matches!(op, Op::Sync(_)));
        let result = apply(db, &batch, durable).map_err(|e| format!("{e:#}"));
        if let Err(e) = &result {
            tracing::error!(error = %e, "queue commit failed");
        }
        for op in batch.drain(..) {
            if let Op::Sync(done) = op {
                let _ = done.send(result.clone());
            }
        }
    }
}

fn apply(db: &Database, batch: &[Op], durable: bool) -> Result<()> {
    let mut txn = db.begin_write()?;
    txn.set_durability(if durable {
        Durability::Immediate
    } else {
        Durability::Eventual
    });
    {
        let mut metas = txn.open_table(META)?;
        let mut bodies = txn.open_table(BODY)?;
        for op in batch {
            match op {
                Op::Insert {
                    queue,
                    seq,
                    meta,
                    body,
                } => {
                    metas.insert((queue.as_str(), *seq), meta.as_slice())?;
                    bodies.insert((queue.as_str(), *seq), body.as_slice())?;
                }
                Op::Update { queue, seq, meta } => {
                    // A message acknowledged in the meantime stays deleted.
                    if metas.get((queue.as_str(), *seq))?.is_some() {
                        metas.insert((queue.as_str(), *seq), meta.as_slice())?;
                    }
                }
                Op::Delete { queue, seq } => {
                    metas.remove((queue.as_str(), *seq))?;
                    bodies.remove((queue.as_str(), *seq))?;
                }
                Op::Sync(_) => {}
            }
        }
    }
    txn.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(body: &str) -> NewMessage {
        NewMessage {
            body: body.as_bytes().to_vec(),
            delay_ms: 0,
            meta: serde_json::json!({"attempt": 0}),
        }
    }

    #[tokio::test]
    async fn lease_ack_release_and_recovery() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("queue.redb");
        let queue = DurableQueue::open(&path).unwrap();
        let ids = queue
            .enqueue("q", vec![message("a"), message("b"), message("c")])
            .await
            .unwrap();
        assert_eq!(ids.len(), 3);
        assert_eq!(queue.counts("q").visible, 3);
        let leased = queue.lease("q", 2, 60_000).unwrap();
        assert_eq!(
            leased.iter().map(|d| d.body.as_slice()).collect::<Vec<_>>(),
            [b"a", b"b"]
        );
        assert_eq!(
            queue.counts("q"),
            QueueCounts {
                visible: 1,
                in_flight: 2,
                delayed: 0
            }
        );
        assert!(queue.ack(&leased[0]));
        assert!(!queue.ack(&leased[0]), "a second ack is a no-op");
        assert!(queue.release(&leased[1], 0, serde_json::json!({"attempt": 1})));
        let again = queue.lease("q", 10, 60_000).unwrap();
        assert_eq!(again.len(), 2);
        let b = again.iter().find(|d| d.body == b"b").unwrap();
        assert_eq!(b.receive_count, 2);
        assert_eq!(b.meta["attempt"], 1);
        queue.sync().await;
        drop(queue);

        // After a restart nothing acknowledged comes back and nothing else is lost; the
        // leased messages wait out their visibility timeout.
        let queue = DurableQueue::open(&path).unwrap();
        assert_eq!(
            queue.counts("q"),
            QueueCounts {
                visible: 0,
                in_flight: 2,
                delayed: 0
            }
        );
    }

    #[tokio::test]
    async fn delayed_messages_wait() {
        let dir = tempfile::tempdir().unwrap();
        let queue = DurableQueue::open(&dir.path().join("q.redb")).unwrap();
        let mut m = message("later");
        m.delay_ms = 60_000;
        queue.enqueue("q", vec![m]).await.unwrap();
        assert!(queue.lease("q", 1, 1000).unwrap().is_empty());
        assert_eq!(queue.counts("q").delayed, 1);
        assert!(queue.ready_queues().is_empty());
    }
}
