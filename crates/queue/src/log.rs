//! The durable queue: asynchronous invocations and queue messages wait here until a poller has
//! handled them. `enqueue` returns only once the messages are on disk; one committer thread
//! group-commits whatever arrived meanwhile, so many concurrent producers share each fsync.
//!
//! The queue is a log: every insert, update and delete is appended to one file as a
//! checksummed record, and the in-memory index (which messages exist, when each becomes
//! visible, where its body lies in the file) is rebuilt from the log at start. A torn record at
//! the end, from a crash mid-write, is cut off. When most of the file is dead records, the
//! committer rewrites the live messages into a fresh file.
//!
//! A message leased and not acknowledged becomes visible again when its visibility timeout
//! ends: delivery is at least once.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, mpsc};

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

const MAGIC: &[u8; 8] = b"NIMQLOG1";
const INSERT: u8 = 1;
const UPDATE: u8 = 2;
const DELETE: u8 = 3;
/// Compaction is considered once the log is this large, and done when live messages are less
/// than a sixteenth of it: it stops the committer while it copies them, so it should be rare
/// and short.
const COMPACT_MIN_BYTES: u64 = 256 << 20;

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
    /// Set by a lease; visible_at_ms in the future means "in flight" if set, "delayed" if not.
    #[serde(default)]
    leased: bool,
    #[serde(default)]
    meta: serde_json::Value,
    #[serde(skip)]
    receipt: u64,
    #[serde(skip)]
    body_offset: u64,
    #[serde(skip)]
    body_len: u32,
}

#[derive(Default)]
struct QueueState {
    /// A B-tree rather than a hash map: growing it never moves every entry at once, which
    /// showed as multi-millisecond stalls with hundreds of thousands of queued messages.
    messages: BTreeMap<u64, Meta>,
    /// (visible_at_ms, seq) of every message, ordered by when it can be leased.
    order: BTreeSet<(i64, u64)>,
}

type State = HashMap<String, QueueState>;

enum Op {
    Insert {
        queue: String,
        seq: u64,
        meta: Meta,
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

struct Shared {
    state: Mutex<State>,
    /// The current log file, for reading bodies; replaced by compaction.
    file: RwLock<Arc<File>>,
    /// Where the log ends and how far past that it is already zero-filled.
    space: Mutex<Space>,
}

/// Appending to a file changes its size, and on ext4 every fdatasync after that also commits
/// the journal. Writing into space that already holds zeros changes only data, as a database
/// does with its pre-created WAL segments; a background thread keeps some ahead of the end.
struct Space {
    tail: u64,
    allocated: u64,
}

/// How far ahead of the end of the log zeros are written.
const PREALLOCATE_AHEAD: u64 = 32 << 20;
const PREALLOCATE_CHUNK: usize = 1 << 20;

fn preallocate(shared: std::sync::Weak<Shared>) {
    let zeros = vec![0u8; PREALLOCATE_CHUNK];
    while let Some(shared) = shared.upgrade() {
        loop {
            let Ok(file) = shared.file.read().map(|f| f.clone()) else {
                return;
            };
            {
                let Ok(mut space) = shared.space.lock() else {
                    return;
                };
                if space.allocated >= space.tail + PREALLOCATE_AHEAD {
                    break;
                }
                let at = space.allocated.max(space.tail);
                if file.write_all_at(&zeros, at).is_err() {
                    break;
                }
                space.allocated = at + PREALLOCATE_CHUNK as u64;
            }
            // Flush each chunk on its own: one large flush would hold up the committer's next
            // fdatasync of the same file for as long as it takes.
            let _ = file.sync_data();
        }
        drop(shared);
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

pub struct DurableQueue {
    shared: Arc<Shared>,
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

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_owned(),
        source,
    }
}

/// Encodes one log record: length, CRC32 of the payload, payload.
fn record(kind: u8, queue: &str, seq: u64, meta: &[u8], body: Option<&[u8]>) -> (Vec<u8>, usize) {
    let mut payload =
        Vec::with_capacity(32 + queue.len() + meta.len() + body.map_or(0, <[u8]>::len));
    payload.push(kind);
    payload.extend_from_slice(&(queue.len() as u16).to_le_bytes());
    payload.extend_from_slice(queue.as_bytes());
    payload.extend_from_slice(&seq.to_le_bytes());
    payload.extend_from_slice(&(meta.len() as u32).to_le_bytes());
    payload.extend_from_slice(meta);
    let mut body_at = 0;
    if let Some(body) = body {
        payload.extend_from_slice(&(body.len() as u32).to_le_bytes());
        body_at = payload.len();
        payload.extend_from_slice(body);
    }
    let mut out = Vec::with_capacity(8 + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    // Where the body starts, relative to the record's first byte.
    (out, 8 + body_at)
}

struct Parsed<'a> {
    kind: u8,
    queue: &'a str,
    seq: u64,
    meta: &'a [u8],
    body_at: usize,
    body_len: usize,
}

fn parse(payload: &[u8]) -> Option<Parsed<'_>> {
    let kind = *payload.first()?;
    let qlen = u16::from_le_bytes(payload.get(1..3)?.try_into().ok()?) as usize;
    let queue = std::str::from_utf8(payload.get(3..3 + qlen)?).ok()?;
    let mut at = 3 + qlen;
    let seq = u64::from_le_bytes(payload.get(at..at + 8)?.try_into().ok()?);
    at += 8;
    let mlen = u32::from_le_bytes(payload.get(at..at + 4)?.try_into().ok()?) as usize;
    at += 4;
    let meta = payload.get(at..at + mlen)?;
    at += mlen;
    let (mut body_at, mut body_len) = (0, 0);
    if kind == INSERT {
        body_len = u32::from_le_bytes(payload.get(at..at + 4)?.try_into().ok()?) as usize;
        at += 4;
        payload.get(at..at + body_len)?;
        body_at = at;
    }
    Some(Parsed {
        kind,
        queue,
        seq,
        meta,
        body_at,
        body_len,
    })
}

/// Replays the log into `state`; returns the offset after the last intact record.
fn replay(file: &File, state: &mut State, max_seq: &mut u64) -> std::io::Result<u64> {
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut magic = [0u8; 8];
    if reader.read_exact(&mut magic).is_err() || &magic != MAGIC {
        return Ok(0);
    }
    let mut offset = MAGIC.len() as u64;
    let mut head = [0u8; 8];
    let mut payload = Vec::new();
    loop {
        if reader.read_exact(&mut head).is_err() {
            break;
        }
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        // Zero-filled space past the last record.
        if len == 0 {
            break;
        }
        payload.resize(len, 0);
        if reader.read_exact(&mut payload).is_err() || crc32fast::hash(&payload) != crc {
            break;
        }
        let Some(p) = parse(&payload) else { break };
        *max_seq = (*max_seq).max(p.seq);
        let q = state.entry(p.queue.to_owned()).or_default();
        match p.kind {
            INSERT | UPDATE => {
                let Ok(mut meta) = serde_json::from_slice::<Meta>(p.meta) else {
                    break;
                };
                if p.kind == INSERT {
                    meta.body_offset = offset + 8 + p.body_at as u64;
                    meta.body_len = p.body_len as u32;
                } else if let Some(old) = q.messages.get(&p.seq) {
                    meta.body_offset = old.body_offset;
                    meta.body_len = old.body_len;
                    q.order.remove(&(old.visible_at_ms, p.seq));
                } else {
                    offset += 8 + len as u64;
                    continue;
                }
                q.order.insert((meta.visible_at_ms, p.seq));
                q.messages.insert(p.seq, meta);
            }
            DELETE => {
                if let Some(old) = q.messages.remove(&p.seq) {
                    q.order.remove(&(old.visible_at_ms, p.seq));
                }
            }
            _ => break,
        }
        offset += 8 + len as u64;
    }
    Ok(offset)
}

fn encode(meta: &Meta) -> Vec<u8> {
    serde_json::to_vec(meta).unwrap_or_default()
}

impl DurableQueue {
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_with(path, COMPACT_MIN_BYTES)
    }

    fn open_with(path: &Path, compact_min: u64) -> Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io(path))?;
        let mut state = State::new();
        let mut max_seq = 0;
        let mut end = replay(&file, &mut state, &mut max_seq).map_err(io(path))?;
        if end == 0 {
            file.set_len(0).map_err(io(path))?;
            file.write_all_at(MAGIC, 0).map_err(io(path))?;
            end = MAGIC.len() as u64;
        }
        // Cut off a record torn by a crash.
        file.set_len(end).map_err(io(path))?;
        file.sync_all().map_err(io(path))?;
        let file = Arc::new(file);
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            file: RwLock::new(file.clone()),
            space: Mutex::new(Space {
                tail: end,
                allocated: end,
            }),
        });
        let weak = Arc::downgrade(&shared);
        std::thread::Builder::new()
            .name("nimbus-queue-prealloc".into())
            .spawn(move || preallocate(weak))
            .map_err(io(path))?;
        let (tx, rx) = mpsc::channel();
        let committer = Committer {
            path: path.to_owned(),
            file,
            len: end,
            shared: shared.clone(),
            next_compaction_check: end.max(compact_min),
            compaction_step: (compact_min / 8).max(1),
        };
        let thread = std::thread::Builder::new()
            .name("nimbus-queue-commit".into())
            .spawn(move || committer.run(rx))
            .map_err(io(path))?;
        Ok(Self {
            shared,
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

    /// Adds messages; resolves with their ids once they are on disk. Nobody sees them before.
    pub async fn enqueue(&self, queue: &str, messages: Vec<NewMessage>) -> Result<Vec<String>> {
        let now = now_ms();
        let mut ids = Vec::with_capacity(messages.len());
        for message in messages {
            let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
            let meta = Meta {
                id: new_id(),
                sent_ms: now,
                visible_at_ms: now + message.delay_ms as i64,
                receive_count: 0,
                leased: false,
                meta: message.meta,
                receipt: 0,
                body_offset: 0,
                body_len: 0,
            };
            ids.push(meta.id.clone());
            self.send(Op::Insert {
                queue: queue.to_owned(),
                seq,
                meta,
                body: message.body,
            });
        }
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        self.send(Op::Sync(done_tx));
        match done_rx.await {
            Ok(Ok(())) => Ok(ids),
            Ok(Err(e)) => Err(Error::Queue(e)),
            Err(_) => Err(Error::Queue("the queue committer stopped".into())),
        }
    }

    /// The log file that matches the offsets in the index; take it under the state lock, since
    /// compaction moves bodies and swaps the file while holding that lock.
    fn current_file(&self) -> Option<Arc<File>> {
        self.shared.file.read().ok().map(|f| f.clone())
    }

    fn read_body(file: &File, meta: &Meta) -> Result<Vec<u8>> {
        let mut body = vec![0u8; meta.body_len as usize];
        file.read_exact_at(&mut body, meta.body_offset)
            .map_err(|e| Error::Queue(format!("reading a message body: {e}")))?;
        Ok(body)
    }

    fn delivery(file: &File, queue: &str, seq: u64, meta: Meta) -> Result<Delivery> {
        let body = Self::read_body(file, &meta)?;
        Ok(Delivery {
            queue: queue.to_owned(),
            seq,
            id: meta.id,
            body,
            meta: meta.meta,
            sent_ms: meta.sent_ms,
            receive_count: meta.receive_count,
            receipt: meta.receipt,
        })
    }

    /// Leases up to `max` visible messages for `visibility_ms`.
    pub fn lease(&self, queue: &str, max: usize, visibility_ms: u64) -> Result<Vec<Delivery>> {
        let now = now_ms();
        let mut leased = Vec::new();
        let file;
        {
            let Ok(mut state) = self.shared.state.lock() else {
                return Ok(Vec::new());
            };
            file = self.current_file();
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
        let mut out = Vec::with_capacity(leased.len());
        for (seq, meta) in leased {
            // Receive counts reach the disk with the next durable commit.
            self.send(Op::Update {
                queue: queue.to_owned(),
                seq,
                meta: encode(&meta),
            });
            let Some(file) = file.as_deref() else {
                return Err(Error::Queue("queue file lock poisoned".into()));
            };
            out.push(Self::delivery(file, queue, seq, meta)?);
        }
        Ok(out)
    }

    /// Deletes a leased message; false if the lease is no longer the current one.
    pub fn ack(&self, delivery: &Delivery) -> bool {
        let removed = self.shared.state.lock().ok().is_some_and(|mut state| {
            let Some(q) = state.get_mut(&delivery.queue) else {
                return false;
            };
            match q.messages.get(&delivery.seq) {
                Some(meta) if meta.receipt == delivery.receipt => {
                    q.order.remove(&(meta.visible_at_ms, delivery.seq));
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
        let updated = self.shared.state.lock().ok().and_then(|mut state| {
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
        if let Ok(state) = self.shared.state.lock()
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
        self.shared
            .state
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
        self.shared
            .state
            .lock()
            .ok()?
            .values()
            .filter_map(|q| q.order.first().map(|(t, _)| *t))
            .min()
    }

    /// Every message of a queue (for inspecting dead-letter queues), oldest first.
    pub fn peek_all(&self, queue: &str, limit: usize) -> Result<Vec<Delivery>> {
        let mut file = None;
        let entries: Vec<(u64, Meta)> = match self.shared.state.lock() {
            Ok(state) => match state.get(queue) {
                Some(q) => {
                    file = self.current_file();
                    let mut v: Vec<_> = q.messages.iter().map(|(s, m)| (*s, m.clone())).collect();
                    v.sort_by_key(|(s, _)| *s);
                    v.truncate(limit);
                    v
                }
                None => Vec::new(),
            },
            Err(_) => Vec::new(),
        };
        let Some(file) = file else {
            return Ok(Vec::new());
        };
        entries
            .into_iter()
            .map(|(seq, meta)| Self::delivery(&file, queue, seq, meta))
            .collect()
    }

    /// Removes every message of a queue; returns how many.
    pub fn purge(&self, queue: &str) -> usize {
        let removed: Vec<u64> = self
            .shared
            .state
            .lock()
            .ok()
            .and_then(|mut state| state.remove(queue))
            .map(|q| q.messages.into_keys().collect())
            .unwrap_or_default();
        for seq in &removed {
            self.send(Op::Delete {
                queue: queue.to_owned(),
                seq: *seq,
            });
        }
        removed.len()
    }

    /// Acknowledges by (seq, receipt), as a receipt handle names a lease.
    pub fn ack_receipt(&self, queue: &str, seq: u64, receipt: u64) -> bool {
        self.ack(&Delivery {
            queue: queue.to_owned(),
            seq,
            id: String::new(),
            body: Vec::new(),
            meta: serde_json::Value::Null,
            sent_ms: 0,
            receive_count: 0,
            receipt,
        })
    }

    /// Changes the visibility of a leased message; false if the lease is gone.
    pub fn change_visibility(
        &self,
        queue: &str,
        seq: u64,
        receipt: u64,
        visibility_ms: u64,
    ) -> bool {
        let updated = self.shared.state.lock().ok().and_then(|mut state| {
            let q = state.get_mut(queue)?;
            let m = q.messages.get_mut(&seq)?;
            if m.receipt != receipt || receipt == 0 {
                return None;
            }
            q.order.remove(&(m.visible_at_ms, seq));
            m.visible_at_ms = now_ms() + visibility_ms as i64;
            q.order.insert((m.visible_at_ms, seq));
            Some(encode(m))
        });
        match updated {
            Some(meta) => {
                self.send(Op::Update {
                    queue: queue.to_owned(),
                    seq,
                    meta,
                });
                true
            }
            None => false,
        }
    }

    /// Removes one message by id, whatever its state (used to replay from a dead-letter queue).
    pub fn remove_by_id(&self, queue: &str, id: &str) -> bool {
        let removed = self.shared.state.lock().ok().and_then(|mut state| {
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

/// Ids for messages and events: a random 64-bit prefix chosen once per process and a counter,
/// formatted as a UUID. Unique without a system call per id.
pub fn new_id() -> String {
    static PREFIX: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = *PREFIX.get_or_init(|| {
        let mut bytes = [0u8; 8];
        let random = File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
        if random.is_err() {
            bytes = (now_ms() as u64 ^ ((std::process::id() as u64) << 40)).to_le_bytes();
        }
        u64::from_le_bytes(bytes)
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let h = format!("{prefix:016x}{n:016x}");
    format!(
        "{}-{}-4{}-a{}-{}",
        &h[..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

const MAX_BATCH: usize = 8192;

/// Owns the end of the log: appends batches, syncs when a producer waits, compacts.
struct Committer {
    path: PathBuf,
    file: Arc<File>,
    len: u64,
    shared: Arc<Shared>,
    next_compaction_check: u64,
    compaction_step: u64,
}

impl Committer {
    fn run(mut self, rx: mpsc::Receiver<Op>) {
        let mut batch = Vec::new();
        while let Ok(first) = rx.recv() {
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(op) => batch.push(op),
                    Err(_) => break,
                }
            }
            let result = self.commit(&mut batch).map_err(|e| format!("{e:#}"));
            if let Err(e) = &result {
                tracing::error!(error = %e, "queue commit failed");
            }
            for op in batch.drain(..) {
                if let Op::Sync(done) = op {
                    let _ = done.send(result.clone());
                }
            }
            if self.len >= self.next_compaction_check {
                if let Err(e) = self.maybe_compact() {
                    tracing::error!(error = %e, "queue compaction failed");
                }
                self.next_compaction_check = self.len + self.compaction_step;
            }
        }
        let _ = self.file.sync_data();
    }

    fn commit(&mut self, batch: &mut [Op]) -> std::io::Result<()> {
        let mut buffer = Vec::new();
        let mut inserted = Vec::new();
        let mut durable = false;
        for op in batch.iter_mut() {
            match op {
                Op::Insert {
                    queue,
                    seq,
                    meta,
                    body,
                } => {
                    let (bytes, body_at) = record(INSERT, queue, *seq, &encode(meta), Some(body));
                    meta.body_offset = self.len + buffer.len() as u64 + body_at as u64;
                    meta.body_len = body.len() as u32;
                    buffer.extend_from_slice(&bytes);
                    inserted.push((queue.clone(), *seq, meta.clone()));
                }
                Op::Update { queue, seq, meta } => {
                    buffer.extend_from_slice(&record(UPDATE, queue, *seq, meta, None).0);
                }
                Op::Delete { queue, seq } => {
                    buffer.extend_from_slice(&record(DELETE, queue, *seq, &[], None).0);
                }
                Op::Sync(_) => durable = true,
            }
        }
        if !buffer.is_empty() {
            // Under the space lock, so that zero-filling never overwrites what this writes.
            let mut space = self
                .shared
                .space
                .lock()
                .map_err(|_| std::io::Error::other("queue space lock poisoned"))?;
            self.file.write_all_at(&buffer, self.len)?;
            self.len += buffer.len() as u64;
            space.tail = self.len;
            space.allocated = space.allocated.max(self.len);
        }
        if durable {
            self.file.sync_data()?;
        }
        // Only now, on disk, do new messages become visible to consumers.
        if !inserted.is_empty()
            && let Ok(mut state) = self.shared.state.lock()
        {
            for (queue, seq, meta) in inserted {
                let q = state.entry(queue).or_default();
                q.order.insert((meta.visible_at_ms, seq));
                q.messages.insert(seq, meta);
            }
        }
        Ok(())
    }

    /// Rewrites the live messages into a fresh log when most of the file is dead.
    fn maybe_compact(&mut self) -> std::io::Result<()> {
        let Ok(mut state) = self.shared.state.lock() else {
            return Ok(());
        };
        let live: u64 = state
            .values()
            .flat_map(|q| q.messages.values())
            .map(|m| m.body_len as u64 + 256)
            .sum();
        if live * 16 > self.len {
            return Ok(());
        }
        let tmp = self.path.with_extension("compact");
        let mut out = std::io::BufWriter::new(File::create(&tmp)?);
        out.write_all(MAGIC)?;
        let mut len = MAGIC.len() as u64;
        let mut moved = Vec::new();
        for (queue, q) in state.iter() {
            for (seq, meta) in &q.messages {
                let mut body = vec![0u8; meta.body_len as usize];
                self.file.read_exact_at(&mut body, meta.body_offset)?;
                let (bytes, body_at) = record(INSERT, queue, *seq, &encode(meta), Some(&body));
                moved.push((queue.clone(), *seq, len + body_at as u64));
                out.write_all(&bytes)?;
                len += bytes.len() as u64;
            }
        }
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        std::fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            File::open(dir)?.sync_all()?;
        }
        for (queue, seq, offset) in moved {
            if let Some(meta) = state.get_mut(&queue).and_then(|q| q.messages.get_mut(&seq)) {
                meta.body_offset = offset;
            }
        }
        let reopened = Arc::new(OpenOptions::new().read(true).write(true).open(&self.path)?);
        let mut space = self
            .shared
            .space
            .lock()
            .map_err(|_| std::io::Error::other("queue space lock poisoned"))?;
        if let Ok(mut shared_file) = self.shared.file.write() {
            *shared_file = reopened.clone();
        }
        space.tail = len;
        space.allocated = len;
        drop(space);
        tracing::info!(before = self.len, after = len, "compacted the event queue");
        self.file = reopened;
        self.len = len;
        Ok(())
    }
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
        let path = dir.path().join("queue.log");
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
    async fn a_torn_tail_is_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.log");
        let queue = DurableQueue::open(&path).unwrap();
        queue.enqueue("q", vec![message("kept")]).await.unwrap();
        drop(queue);
        // A crash in the middle of appending a record leaves a partial one at the end.
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(&[200, 0, 0, 0, 1, 2, 3, 4, 5]).unwrap();
        drop(file);
        let queue = DurableQueue::open(&path).unwrap();
        let got = queue.lease("q", 10, 1000).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].body, b"kept");
        queue.enqueue("q", vec![message("after")]).await.unwrap();
        drop(queue);
        let queue = DurableQueue::open(&path).unwrap();
        assert_eq!(queue.counts("q").in_flight + queue.counts("q").visible, 2);
    }

    #[tokio::test]
    async fn compaction_keeps_live_messages_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.log");
        let queue = DurableQueue::open_with(&path, 64 << 10).unwrap();
        let big = "x".repeat(4096);
        for _ in 0..40 {
            queue.enqueue("q", vec![message(&big)]).await.unwrap();
            for d in queue.lease("q", 10, 1000).unwrap() {
                assert!(queue.ack(&d));
            }
        }
        queue.enqueue("q", vec![message("survivor")]).await.unwrap();
        queue.sync().await;
        let got = queue.peek_all("q", 10).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].body, b"survivor");
        drop(queue);
        let queue = DurableQueue::open(&path).unwrap();
        assert_eq!(queue.lease("q", 10, 1000).unwrap()[0].body, b"survivor");
    }

    #[tokio::test]
    async fn delayed_messages_wait() {
        let dir = tempfile::tempdir().unwrap();
        let queue = DurableQueue::open(&dir.path().join("q.log")).unwrap();
        let mut m = message("later");
        m.delay_ms = 60_000;
        queue.enqueue("q", vec![m]).await.unwrap();
        assert!(queue.lease("q", 1, 1000).unwrap().is_empty());
        assert_eq!(queue.counts("q").delayed, 1);
        assert!(queue.ready_queues().is_empty());
    }
}
