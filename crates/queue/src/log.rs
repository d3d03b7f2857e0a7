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
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, mpsc};

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::{Error, QueueName, Result};

const MAGIC: &[u8; 8] = b"NIMQLOG1";
const INSERT: u8 = 1;
const UPDATE: u8 = 2;
const DELETE: u8 = 3;
/// Compaction is considered once the log is this large, and done when live messages are less
/// than a sixteenth of it.
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
    pub queue: QueueName,
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
    body: Option<Body>,
}

/// Where a message's body lies: a file of the log (the current one, or an older one that
/// compaction has not moved it out of yet) and the range in it. Each message holds its own
/// handle, so compaction can move bodies one queue at a time while readers go on.
#[derive(Debug, Clone)]
struct Body {
    file: Arc<File>,
    offset: u64,
    len: u32,
}

impl Body {
    fn read(&self) -> Result<Vec<u8>> {
        let mut body = vec![0u8; self.len as usize];
        self.file
            .read_exact_at(&mut body, self.offset)
            .map_err(|source| Error::Io {
                path: PathBuf::from("queue log"),
                source,
            })?;
        Ok(body)
    }
}

#[derive(Default)]
struct QueueState {
    /// A B-tree rather than a hash map: growing it never moves every entry at once, which
    /// showed as multi-millisecond stalls with hundreds of thousands of queued messages.
    messages: BTreeMap<u64, Meta>,
    /// (visible_at_ms, seq) of every message, ordered by when it can be leased.
    order: BTreeSet<(i64, u64)>,
}

impl QueueState {
    fn next_visible_ms(&self) -> Option<i64> {
        self.order.first().map(|(t, _)| *t)
    }
}

/// One queue: its index under its own lock, and the consumers waiting for it.
#[derive(Default)]
struct Slot {
    state: Mutex<QueueState>,
    /// Woken when a message of this queue may have become visible.
    ready: Notify,
}

impl Slot {
    fn lock(&self) -> Result<MutexGuard<'_, QueueState>> {
        self.state.lock().map_err(|_| Error::Poisoned)
    }
}

type Slots = HashMap<QueueName, Arc<Slot>>;

enum Op {
    Insert {
        queue: QueueName,
        seq: u64,
        meta: Meta,
        body: Vec<u8>,
    },
    Update {
        queue: QueueName,
        seq: u64,
        meta: Vec<u8>,
    },
    Delete {
        queue: QueueName,
        seq: u64,
    },
    /// Answered once everything before it is on disk.
    Sync(tokio::sync::oneshot::Sender<Result<(), String>>),
    /// Makes the batch durable; answers nobody.
    Flush,
}

struct Shared {
    slots: RwLock<Slots>,
    /// Woken whenever any queue may have a message that became visible.
    any_ready: Notify,
    /// Where the log ends and how far past that it is already zero-filled.
    space: Mutex<Space>,
    /// The file the committer appends to (compaction replaces it).
    current: RwLock<Arc<File>>,
    /// How many times the log has been compacted since it was opened.
    compactions: AtomicU64,
}

impl Shared {
    fn slot(&self, queue: &QueueName) -> Result<Option<Arc<Slot>>> {
        Ok(self
            .slots
            .read()
            .map_err(|_| Error::Poisoned)?
            .get(queue)
            .cloned())
    }

    fn slot_or_new(&self, queue: &QueueName) -> Result<Arc<Slot>> {
        if let Some(slot) = self.slot(queue)? {
            return Ok(slot);
        }
        Ok(self
            .slots
            .write()
            .map_err(|_| Error::Poisoned)?
            .entry(queue.clone())
            .or_default()
            .clone())
    }

    fn all(&self) -> Result<Vec<(QueueName, Arc<Slot>)>> {
        Ok(self
            .slots
            .read()
            .map_err(|_| Error::Poisoned)?
            .iter()
            .map(|(n, s)| (n.clone(), s.clone()))
            .collect())
    }

    fn wake(&self, slot: &Slot) {
        slot.ready.notify_waiters();
        self.any_ready.notify_waiters();
    }
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
const PREALLOCATE_CHUNK: usize = 128 << 10;

fn preallocate(shared: std::sync::Weak<Shared>, stop: mpsc::Receiver<()>) {
    let zeros = vec![0u8; PREALLOCATE_CHUNK];
    loop {
        let Some(shared) = shared.upgrade() else {
            return;
        };
        loop {
            let Ok(file) = shared.current.read().map(|f| f.clone()) else {
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
        match stop.recv_timeout(std::time::Duration::from_millis(20)) {
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            _ => return,
        }
    }
}

pub struct DurableQueue {
    shared: Arc<Shared>,
    next_seq: AtomicU64,
    next_receipt: AtomicU64,
    committer: Mutex<Option<mpsc::Sender<Op>>>,
    /// Ops sent to the committer thread and not yet taken into a batch by it.
    queued: Arc<AtomicUsize>,
    /// Changes to messages already on disk (leases, releases, acknowledgements). Nobody waits
    /// for them, so they wake nobody: the next commit takes them along, or the committer
    /// thread writes them within [`DEFERRED_WRITE_MS`]. A crash may lose the last few, which
    /// at-least-once delivery allows: an acknowledged message may come back once.
    deferred: Arc<Mutex<Vec<Op>>>,
    /// The end of the log. The committer thread holds it while it commits a batch; an
    /// enqueue that finds nothing queued and nobody committing commits its own messages on
    /// its own thread instead, saving the two thread hand-offs a lone durable write would
    /// otherwise wait on (the way a database backend writes its own commit record).
    writer: Arc<Mutex<Committer>>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    stop_preallocating: Mutex<Option<mpsc::Sender<()>>>,
}

impl Drop for DurableQueue {
    /// Lets the committer finish what it was given, stops the threads and releases the file.
    fn drop(&mut self) {
        if let Ok(mut tx) = self.committer.lock() {
            tx.take();
        }
        if let Ok(mut tx) = self.stop_preallocating.lock() {
            tx.take();
        }
        if let Ok(mut threads) = self.threads.lock() {
            for thread in threads.drain(..) {
                let _ = thread.join();
            }
        }
    }
}

fn now_ms() -> i64 {
    nimbus_types::time::now_ms()
}

/// Waits for `notified`, or until the next message becomes visible at `next_visible_ms`, or
/// until `deadline`, whichever comes first; returns at once if a message is visible now.
async fn wait_for(
    notified: tokio::sync::futures::Notified<'_>,
    next_visible_ms: Option<i64>,
    deadline: tokio::time::Instant,
) {
    let until = match next_visible_ms {
        Some(t) if t <= now_ms() => return,
        Some(t) => deadline.min(
            tokio::time::Instant::now()
                + std::time::Duration::from_millis((t - now_ms()).max(1) as u64),
        ),
        None => deadline,
    };
    tokio::select! {
        _ = notified => {}
        _ = tokio::time::sleep_until(until) => {}
    }
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

/// Replays the log into per-queue indexes; returns the offset after the last intact record.
fn replay(
    file: &Arc<File>,
    slots: &mut HashMap<QueueName, QueueState>,
    max_seq: &mut u64,
) -> std::io::Result<u64> {
    let mut reader = BufReader::with_capacity(1 << 20, file.as_ref());
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
        let Some(name) = QueueName::decode(p.queue) else {
            tracing::warn!(
                queue = p.queue,
                "skipping a record of an unknown kind of queue"
            );
            offset += 8 + len as u64;
            continue;
        };
        let q = slots.entry(name).or_default();
        match p.kind {
            INSERT | UPDATE => {
                let Ok(mut meta) = serde_json::from_slice::<Meta>(p.meta) else {
                    break;
                };
                if p.kind == INSERT {
                    meta.body = Some(Body {
                        file: file.clone(),
                        offset: offset + 8 + p.body_at as u64,
                        len: p.body_len as u32,
                    });
                    if let Some(old) = q.messages.get(&p.seq) {
                        // A message rewritten by compaction: the newer copy replaces it.
                        q.order.remove(&(old.visible_at_ms, p.seq));
                    }
                } else if let Some(old) = q.messages.get(&p.seq) {
                    meta.body = old.body.clone();
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
        let file = Arc::new(
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)
                .map_err(io(path))?,
        );
        let mut states = HashMap::new();
        let mut max_seq = 0;
        let mut end = replay(&file, &mut states, &mut max_seq).map_err(io(path))?;
        if end == 0 {
            file.set_len(0).map_err(io(path))?;
            file.write_all_at(MAGIC, 0).map_err(io(path))?;
            end = MAGIC.len() as u64;
        }
        // Cut off a record torn by a crash, and zero-fill the space ahead now, while nobody
        // waits on a commit (tens of milliseconds); the preallocating thread then only keeps
        // up with the end.
        file.set_len(end).map_err(io(path))?;
        let zeros = vec![0u8; PREALLOCATE_CHUNK];
        let mut allocated = end;
        while allocated < end + PREALLOCATE_AHEAD {
            file.write_all_at(&zeros, allocated).map_err(io(path))?;
            allocated += PREALLOCATE_CHUNK as u64;
        }
        file.sync_all().map_err(io(path))?;
        let slots = states
            .into_iter()
            .map(|(name, state)| {
                let slot = Slot {
                    state: Mutex::new(state),
                    ready: Notify::new(),
                };
                (name, Arc::new(slot))
            })
            .collect();
        let shared = Arc::new(Shared {
            slots: RwLock::new(slots),
            any_ready: Notify::new(),
            space: Mutex::new(Space {
                tail: end,
                allocated,
            }),
            current: RwLock::new(file.clone()),
            compactions: AtomicU64::new(0),
        });
        let weak = Arc::downgrade(&shared);
        let (stop_tx, stop_rx) = mpsc::channel();
        let preallocator = std::thread::Builder::new()
            .name("nimbus-queue-prealloc".into())
            .spawn(move || preallocate(weak, stop_rx))
            .map_err(io(path))?;
        let (tx, rx) = mpsc::channel();
        let writer = Arc::new(Mutex::new(Committer {
            path: path.to_owned(),
            file,
            len: end,
            shared: shared.clone(),
            next_compaction_check: end.max(compact_min),
            compaction_step: (compact_min / 8).max(1),
        }));
        let queued = Arc::new(AtomicUsize::new(0));
        let deferred = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (writer, queued, deferred) = (writer.clone(), queued.clone(), deferred.clone());
            std::thread::Builder::new()
                .name("nimbus-queue-commit".into())
                .spawn(move || Committer::run(&writer, &queued, &deferred, rx))
                .map_err(io(path))?
        };
        Ok(Self {
            shared,
            next_seq: AtomicU64::new(max_seq + 1),
            next_receipt: AtomicU64::new(1),
            committer: Mutex::new(Some(tx)),
            queued,
            deferred,
            writer,
            threads: Mutex::new(vec![thread, preallocator]),
            stop_preallocating: Mutex::new(Some(stop_tx)),
        })
    }

    fn send(&self, op: Op) -> Result<()> {
        let tx = self.committer.lock().map_err(|_| Error::Poisoned)?;
        let tx = tx.as_ref().ok_or(Error::Stopped)?;
        self.queued.fetch_add(1, Ordering::AcqRel);
        tx.send(op).map_err(|_| {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            Error::Stopped
        })
    }

    /// Queues a change to a message already on disk, to be written with the next commit.
    fn defer(&self, op: Op) -> Result<()> {
        let len = {
            let mut deferred = self.deferred.lock().map_err(|_| Error::Poisoned)?;
            deferred.push(op);
            deferred.len()
        };
        if len == DEFERRED_WAKE_AT {
            // Many waiting: have them written now rather than at the next tick.
            self.send(Op::Flush)?;
        }
        Ok(())
    }

    /// Commits `batch` on the caller's thread if nothing waits for the committer thread and
    /// it is not committing; gives the batch back otherwise. Only new messages go this way:
    /// they cannot be ordered against anything already queued, since nothing refers to them
    /// before they are on disk.
    fn commit_inline(&self, mut batch: Vec<Op>) -> std::result::Result<Result<()>, Vec<Op>> {
        if self.queued.load(Ordering::Acquire) != 0 {
            return Err(batch);
        }
        let mut writer = match self.writer.try_lock() {
            Ok(w) => w,
            Err(std::sync::TryLockError::WouldBlock) => return Err(batch),
            Err(std::sync::TryLockError::Poisoned(_)) => return Ok(Err(Error::Poisoned)),
        };
        match self.deferred.lock() {
            Ok(mut deferred) => batch.append(&mut deferred),
            Err(_) => return Ok(Err(Error::Poisoned)),
        }
        batch.push(Op::Flush);
        let result = writer
            .commit(&mut batch)
            .map_err(|e| Error::Commit(format!("{e:#}")));
        let compaction_due = writer.len >= writer.next_compaction_check;
        drop(writer);
        if compaction_due {
            // Compaction belongs to the committer thread; an empty batch wakes it for that.
            let _ = self.send(Op::Flush);
        }
        Ok(result)
    }

    /// Adds messages; resolves with their ids once they are on disk. Nobody sees them before.
    pub async fn enqueue(
        &self,
        queue: &QueueName,
        messages: Vec<NewMessage>,
    ) -> Result<Vec<String>> {
        let now = now_ms();
        let mut ids = Vec::with_capacity(messages.len());
        let mut ops = Vec::with_capacity(messages.len() + 1);
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
                body: None,
            };
            ids.push(meta.id.clone());
            ops.push(Op::Insert {
                queue: queue.clone(),
                seq,
                meta,
                body: message.body,
            });
        }
        let ops = match self.commit_inline(ops) {
            Ok(result) => return result.map(|()| ids),
            Err(ops) => ops,
        };
        for op in ops {
            self.send(op)?;
        }
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        self.send(Op::Sync(done_tx))?;
        match done_rx.await {
            Ok(Ok(())) => Ok(ids),
            Ok(Err(e)) => Err(Error::Commit(e)),
            Err(_) => Err(Error::Stopped),
        }
    }

    fn delivery(queue: &QueueName, seq: u64, meta: Meta) -> Result<Delivery> {
        let body = match &meta.body {
            Some(b) => b.read()?,
            None => Vec::new(),
        };
        Ok(Delivery {
            queue: queue.clone(),
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
    pub fn lease(
        &self,
        queue: &QueueName,
        max: usize,
        visibility_ms: u64,
    ) -> Result<Vec<Delivery>> {
        let Some(slot) = self.shared.slot(queue)? else {
            return Ok(Vec::new());
        };
        let now = now_ms();
        let mut leased = Vec::new();
        {
            let mut q = slot.lock()?;
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
                let visible_again = meta.visible_at_ms;
                leased.push((seq, meta.clone()));
                q.order.insert((visible_again, seq));
            }
        }
        let mut out = Vec::with_capacity(leased.len());
        for (seq, meta) in leased {
            // Receive counts reach the disk with the next durable commit.
            self.defer(Op::Update {
                queue: queue.clone(),
                seq,
                meta: encode(&meta),
            })?;
            out.push(Self::delivery(queue, seq, meta)?);
        }
        Ok(out)
    }

    /// Waits until `queue` may have a visible message, or until `deadline`: woken by a commit
    /// or a release that makes one visible, or by the clock when a delayed or leased message's
    /// time comes.
    pub async fn wait_visible(&self, queue: &QueueName, deadline: tokio::time::Instant) {
        let Ok(slot) = self.shared.slot_or_new(queue) else {
            tokio::time::sleep_until(deadline).await;
            return;
        };
        // Registered before looking, so that a wake-up between the look and the wait is kept.
        let notified = slot.ready.notified();
        let next = slot.lock().ok().and_then(|q| q.next_visible_ms());
        wait_for(notified, next, deadline).await;
    }

    /// Waits until any queue that `wanted` selects may have a visible message, or until
    /// `deadline`. Returns at once if one has a visible message now.
    pub async fn wait_any_visible(
        &self,
        wanted: fn(&QueueName) -> bool,
        deadline: tokio::time::Instant,
    ) {
        let notified = self.shared.any_ready.notified();
        let next = self.next_visible_ms_of(wanted);
        wait_for(notified, next, deadline).await;
    }

    /// Deletes a leased message; false if the lease is no longer the current one.
    pub fn ack(&self, delivery: &Delivery) -> Result<bool> {
        let Some(slot) = self.shared.slot(&delivery.queue)? else {
            return Ok(false);
        };
        let removed = {
            let mut q = slot.lock()?;
            match q.messages.get(&delivery.seq) {
                Some(meta) if meta.receipt == delivery.receipt => {
                    let visible_at = meta.visible_at_ms;
                    q.order.remove(&(visible_at, delivery.seq));
                    q.messages.remove(&delivery.seq);
                    true
                }
                _ => false,
            }
        };
        if removed {
            self.defer(Op::Delete {
                queue: delivery.queue.clone(),
                seq: delivery.seq,
            })?;
        }
        Ok(removed)
    }

    /// Makes a leased message visible again after `delay_ms`, with new metadata.
    pub fn release(
        &self,
        delivery: &Delivery,
        delay_ms: u64,
        meta: serde_json::Value,
    ) -> Result<bool> {
        let Some(slot) = self.shared.slot(&delivery.queue)? else {
            return Ok(false);
        };
        let updated = {
            let mut q = slot.lock()?;
            let state = &mut *q;
            match state.messages.get_mut(&delivery.seq) {
                Some(m) if m.receipt == delivery.receipt => {
                    state.order.remove(&(m.visible_at_ms, delivery.seq));
                    m.visible_at_ms = now_ms() + delay_ms as i64;
                    m.meta = meta;
                    m.receipt = 0;
                    m.leased = false;
                    state.order.insert((m.visible_at_ms, delivery.seq));
                    Some(encode(m))
                }
                _ => None,
            }
        };
        let Some(meta) = updated else {
            return Ok(false);
        };
        self.defer(Op::Update {
            queue: delivery.queue.clone(),
            seq: delivery.seq,
            meta,
        })?;
        if delay_ms == 0 {
            self.shared.wake(&slot);
        }
        Ok(true)
    }

    pub fn counts(&self, queue: &QueueName) -> Result<QueueCounts> {
        let now = now_ms();
        let mut counts = QueueCounts::default();
        if let Some(slot) = self.shared.slot(queue)? {
            for meta in slot.lock()?.messages.values() {
                if meta.visible_at_ms <= now {
                    counts.visible += 1;
                } else if meta.leased {
                    counts.in_flight += 1;
                } else {
                    counts.delayed += 1;
                }
            }
        }
        Ok(counts)
    }

    /// Queues holding at least one message that can be leased now.
    pub fn ready_queues(&self) -> Result<Vec<QueueName>> {
        let now = now_ms();
        let mut ready = Vec::new();
        for (name, slot) in self.shared.all()? {
            if slot.lock()?.next_visible_ms().is_some_and(|t| t <= now) {
                ready.push(name);
            }
        }
        Ok(ready)
    }

    /// The earliest time a message of a queue that `wanted` selects becomes visible.
    fn next_visible_ms_of(&self, wanted: fn(&QueueName) -> bool) -> Option<i64> {
        self.shared
            .all()
            .ok()?
            .iter()
            .filter(|(name, _)| wanted(name))
            .filter_map(|(_, slot)| slot.lock().ok()?.next_visible_ms())
            .min()
    }

    /// Every message of a queue (for inspecting dead-letter queues), oldest first.
    pub fn peek_all(&self, queue: &QueueName, limit: usize) -> Result<Vec<Delivery>> {
        let Some(slot) = self.shared.slot(queue)? else {
            return Ok(Vec::new());
        };
        let entries: Vec<(u64, Meta)> = slot
            .lock()?
            .messages
            .iter()
            .take(limit)
            .map(|(s, m)| (*s, m.clone()))
            .collect();
        entries
            .into_iter()
            .map(|(seq, meta)| Self::delivery(queue, seq, meta))
            .collect()
    }

    /// Removes every message of a queue; returns how many.
    pub fn purge(&self, queue: &QueueName) -> Result<usize> {
        let Some(slot) = self.shared.slot(queue)? else {
            return Ok(0);
        };
        let removed: Vec<u64> = {
            let mut q = slot.lock()?;
            q.order.clear();
            std::mem::take(&mut q.messages).into_keys().collect()
        };
        for seq in &removed {
            self.defer(Op::Delete {
                queue: queue.clone(),
                seq: *seq,
            })?;
        }
        Ok(removed.len())
    }

    /// Forgets a queue that no longer exists, with its messages.
    pub fn remove_queue(&self, queue: &QueueName) -> Result<usize> {
        let removed = self.purge(queue)?;
        self.shared
            .slots
            .write()
            .map_err(|_| Error::Poisoned)?
            .remove(queue);
        Ok(removed)
    }

    /// Acknowledges by (seq, receipt), as a receipt handle names a lease.
    pub fn ack_receipt(&self, queue: &QueueName, seq: u64, receipt: u64) -> Result<bool> {
        self.ack(&Delivery {
            queue: queue.clone(),
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
        queue: &QueueName,
        seq: u64,
        receipt: u64,
        visibility_ms: u64,
    ) -> Result<bool> {
        let Some(slot) = self.shared.slot(queue)? else {
            return Ok(false);
        };
        let updated = {
            let mut q = slot.lock()?;
            let state = &mut *q;
            match state.messages.get_mut(&seq) {
                Some(m) if m.receipt == receipt && receipt != 0 => {
                    state.order.remove(&(m.visible_at_ms, seq));
                    m.visible_at_ms = now_ms() + visibility_ms as i64;
                    state.order.insert((m.visible_at_ms, seq));
                    Some(encode(m))
                }
                _ => None,
            }
        };
        let Some(meta) = updated else {
            return Ok(false);
        };
        self.defer(Op::Update {
            queue: queue.clone(),
            seq,
            meta,
        })?;
        if visibility_ms == 0 {
            self.shared.wake(&slot);
        }
        Ok(true)
    }

    /// Removes one message by id, whatever its state (used to replay from a dead-letter queue).
    pub fn remove_by_id(&self, queue: &QueueName, id: &str) -> Result<bool> {
        let Some(slot) = self.shared.slot(queue)? else {
            return Ok(false);
        };
        let removed = {
            let mut q = slot.lock()?;
            let seq = q.messages.iter().find(|(_, m)| m.id == id).map(|(s, _)| *s);
            match seq.and_then(|seq| q.messages.remove(&seq).map(|m| (seq, m))) {
                Some((seq, meta)) => {
                    q.order.remove(&(meta.visible_at_ms, seq));
                    Some(seq)
                }
                None => None,
            }
        };
        let Some(seq) = removed else {
            return Ok(false);
        };
        self.defer(Op::Delete {
            queue: queue.clone(),
            seq,
        })?;
        Ok(true)
    }

    /// Waits until everything sent to the committer is on disk.
    pub async fn sync(&self) -> Result<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.send(Op::Sync(tx))?;
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Error::Commit(e)),
            Err(_) => Err(Error::Stopped),
        }
    }
}

/// Ids for messages and events: a random 64-bit prefix chosen once per process and a counter,
/// formatted as a UUID. Unique without a system call per id.
pub fn new_id() -> String {
    static PREFIX: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = *PREFIX.get_or_init(|| {
        let mut bytes = [0u8; 8];
        if getrandom::fill(&mut bytes).is_err() {
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

/// How long deferred changes wait at most before the committer thread writes them, while
/// the queue is busy; after a tick with nothing to write, it looks again only after
/// `DEFERRED_WRITE_IDLE_MS`, so that an idle node does not wake a hundred times a second.
const DEFERRED_WRITE_MS: u64 = 10;
const DEFERRED_WRITE_IDLE_MS: u64 = 100;

/// How many deferred changes wake the committer thread at once.
const DEFERRED_WAKE_AT: usize = 4096;

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
    fn run(
        writer: &Mutex<Committer>,
        queued: &AtomicUsize,
        deferred: &Mutex<Vec<Op>>,
        rx: mpsc::Receiver<Op>,
    ) {
        let busy = std::time::Duration::from_millis(DEFERRED_WRITE_MS);
        let idle = std::time::Duration::from_millis(DEFERRED_WRITE_IDLE_MS);
        let mut tick = busy;
        let mut batch = Vec::new();
        loop {
            match rx.recv_timeout(tick) {
                Ok(first) => batch.push(first),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(op) => batch.push(op),
                    Err(_) => break,
                }
            }
            queued.fetch_sub(batch.len(), Ordering::AcqRel);
            let Ok(mut this) = writer.lock() else {
                // An inline commit panicked: nothing can be written any more.
                tracing::error!("the queue's writer is poisoned; the committer stops");
                return;
            };
            // Taken under the writer's lock, so that an inline commit cannot write changes
            // queued after these ahead of them.
            match deferred.lock() {
                Ok(mut d) => batch.append(&mut d),
                Err(_) => {
                    tracing::error!(
                        "the queue's deferred changes are poisoned; the committer stops"
                    );
                    return;
                }
            }
            if batch.is_empty() {
                tick = idle;
                continue;
            }
            tick = busy;
            let result = this.commit(&mut batch).map_err(|e| format!("{e:#}"));
            if let Err(e) = &result {
                tracing::error!(error = %e, "queue commit failed");
            }
            for op in batch.drain(..) {
                if let Op::Sync(done) = op {
                    let _ = done.send(result.clone());
                }
            }
            if this.len >= this.next_compaction_check {
                if let Err(e) = this.maybe_compact() {
                    tracing::error!(error = %e, "queue compaction failed");
                }
                this.next_compaction_check = this.len + this.compaction_step;
            }
        }
        if let Ok(mut this) = writer.lock() {
            let mut rest = deferred
                .lock()
                .map(|mut d| std::mem::take(&mut *d))
                .unwrap_or_default();
            rest.push(Op::Flush);
            if let Err(e) = this.commit(&mut rest) {
                tracing::error!(error = %e, "queue commit at shutdown failed");
            }
        }
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
                    let (bytes, body_at) =
                        record(INSERT, &queue.encode(), *seq, &encode(meta), Some(body));
                    meta.body = Some(Body {
                        file: self.file.clone(),
                        offset: self.len + buffer.len() as u64 + body_at as u64,
                        len: body.len() as u32,
                    });
                    buffer.extend_from_slice(&bytes);
                    inserted.push((queue.clone(), *seq, meta.clone()));
                }
                Op::Update { queue, seq, meta } => {
                    buffer.extend_from_slice(&record(UPDATE, &queue.encode(), *seq, meta, None).0);
                }
                Op::Delete { queue, seq } => {
                    buffer.extend_from_slice(&record(DELETE, &queue.encode(), *seq, &[], None).0);
                }
                Op::Sync(_) | Op::Flush => durable = true,
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
        let mut woken: Vec<Arc<Slot>> = Vec::new();
        for (queue, seq, meta) in inserted {
            let slot = self
                .shared
                .slot_or_new(&queue)
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            {
                let mut q = slot
                    .lock()
                    .map_err(|e| std::io::Error::other(e.to_string()))?;
                q.order.insert((meta.visible_at_ms, seq));
                q.messages.insert(seq, meta);
            }
            // A delayed message wakes its waiters too: they re-arm their timers for it.
            if !woken.iter().any(|s| Arc::ptr_eq(s, &slot)) {
                woken.push(slot);
            }
        }
        for slot in &woken {
            slot.ready.notify_waiters();
        }
        if !woken.is_empty() {
            self.shared.any_ready.notify_waiters();
        }
        Ok(())
    }

    /// Rewrites the live messages into a fresh log when most of the file is dead. Queues stay
    /// usable meanwhile: each is locked only to copy its index and, at the end, to point its
    /// messages at the new file; bodies are copied without any queue's lock. New commits wait
    /// (this runs on the committer), and what consumers change meanwhile (leases, acks) is
    /// queued for the committer and lands in the new file after the copy.
    fn maybe_compact(&mut self) -> std::io::Result<()> {
        let poisoned = |_| std::io::Error::other("a queue lock was poisoned");
        let slots = self
            .shared
            .all()
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let mut snapshot: Vec<(QueueName, Vec<(u64, Meta)>)> = Vec::with_capacity(slots.len());
        let mut live: u64 = 0;
        for (name, slot) in &slots {
            let q = slot.state.lock().map_err(poisoned)?;
            live += q
                .messages
                .values()
                .map(|m| m.body.as_ref().map_or(0, |b| b.len as u64) + 256)
                .sum::<u64>();
            snapshot.push((
                name.clone(),
                q.messages.iter().map(|(s, m)| (*s, m.clone())).collect(),
            ));
        }
        if live * 16 > self.len {
            return Ok(());
        }
        let tmp = self.path.with_extension("compact");
        let mut out = std::io::BufWriter::new(File::create(&tmp)?);
        out.write_all(MAGIC)?;
        let mut len = MAGIC.len() as u64;
        let mut moved: Vec<(usize, u64, u64, u32)> = Vec::new();
        for (i, (queue, messages)) in snapshot.iter().enumerate() {
            let stored = queue.encode();
            for (seq, meta) in messages {
                let body = match &meta.body {
                    Some(b) => b.read().map_err(|e| std::io::Error::other(e.to_string()))?,
                    None => Vec::new(),
                };
                let (bytes, body_at) = record(INSERT, &stored, *seq, &encode(meta), Some(&body));
                moved.push((i, *seq, len + body_at as u64, body.len() as u32));
                out.write_all(&bytes)?;
                len += bytes.len() as u64;
            }
        }
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, &self.path)?;
        self.shared.compactions.fetch_add(1, Ordering::Relaxed);
        if let Some(dir) = self.path.parent() {
            File::open(dir)?.sync_all()?;
        }
        let reopened = Arc::new(OpenOptions::new().read(true).write(true).open(&self.path)?);
        for (i, seq, offset, body_len) in moved {
            let slot = &slots[i].1;
            let mut q = slot.state.lock().map_err(poisoned)?;
            // A message acknowledged during the copy is gone; its delete follows in the log.
            if let Some(meta) = q.messages.get_mut(&seq) {
                meta.body = Some(Body {
                    file: reopened.clone(),
                    offset,
                    len: body_len,
                });
            }
        }
        {
            let mut space = self
                .shared
                .space
                .lock()
                .map_err(|_| std::io::Error::other("queue space lock poisoned"))?;
            *self
                .shared
                .current
                .write()
                .map_err(|_| std::io::Error::other("queue file lock poisoned"))? = reopened.clone();
            space.tail = len;
            space.allocated = len;
        }
        tracing::info!(before = self.len, after = len, "compacted the event queue");
        self.file = reopened;
        self.len = len;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q() -> QueueName {
        QueueName::Sqs("q".into())
    }

    fn message(body: &str) -> NewMessage {
        NewMessage {
            body: body.as_bytes().to_vec(),
            delay_ms: 0,
            meta: serde_json::json!({"attempt": 0}),
        }
    }

    /// What the log on disk says about `queue`, read by a fresh replay.
    fn on_disk(path: &Path, queue: &QueueName) -> Option<QueueState> {
        let file = Arc::new(File::open(path).unwrap());
        let mut states = HashMap::new();
        let mut max_seq = 0;
        replay(&file, &mut states, &mut max_seq).unwrap();
        states.remove(queue)
    }

    /// Acknowledgements wake nobody, but they reach the file on the committer's next tick, or
    /// with the next commit, without anyone asking.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn deferred_changes_reach_the_disk_without_a_sync() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("queue.log");
        let queue = DurableQueue::open(&path).unwrap();
        queue
            .enqueue(&q(), vec![message("a"), message("b")])
            .await
            .unwrap();
        let leased = queue.lease(&q(), 1, 60_000).unwrap();
        assert!(queue.ack(&leased[0]).unwrap());
        // By the committer's tick.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while on_disk(&path, &q()).map_or(0, |s| s.messages.len()) != 1 {
            assert!(
                std::time::Instant::now() < deadline,
                "the ack never reached the file"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        // With the next commit: the other message's lease goes along with a new message.
        let leased = queue.lease(&q(), 1, 60_000).unwrap();
        assert_eq!(leased[0].body, b"b");
        queue.enqueue(&q(), vec![message("c")]).await.unwrap();
        let state = on_disk(&path, &q()).unwrap();
        assert_eq!(state.messages.len(), 2);
        assert!(
            state.messages[&leased[0].seq].leased,
            "the lease was not written"
        );
    }

    /// Producers that commit on their own threads and producers that wait for the committer
    /// never lose or duplicate a message between them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_enqueues_all_land_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("queue.log");
        let queue = Arc::new(DurableQueue::open(&path).unwrap());
        let mut tasks = Vec::new();
        for t in 0..8 {
            let queue = queue.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..200 {
                    queue
                        .enqueue(&q(), vec![message(&format!("{t}-{i}"))])
                        .await
                        .unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(queue.counts(&q()).unwrap().visible, 1600);
        drop(queue);
        let queue = DurableQueue::open(&path).unwrap();
        let all = queue.peek_all(&q(), 10_000).unwrap();
        let mut bodies: Vec<Vec<u8>> = all.into_iter().map(|d| d.body).collect();
        bodies.sort();
        bodies.dedup();
        assert_eq!(bodies.len(), 1600);
    }

    #[tokio::test]
    async fn lease_ack_release_and_recovery() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("queue.log");
        let queue = DurableQueue::open(&path).unwrap();
        let ids = queue
            .enqueue(&q(), vec![message("a"), message("b"), message("c")])
            .await
            .unwrap();
        assert_eq!(ids.len(), 3);
        assert_eq!(queue.counts(&q()).unwrap().visible, 3);
        let leased = queue.lease(&q(), 2, 60_000).unwrap();
        assert_eq!(
            leased.iter().map(|d| d.body.as_slice()).collect::<Vec<_>>(),
            [b"a", b"b"]
        );
        assert_eq!(
            queue.counts(&q()).unwrap(),
            QueueCounts {
                visible: 1,
                in_flight: 2,
                delayed: 0
            }
        );
        assert!(queue.ack(&leased[0]).unwrap());
        assert!(!queue.ack(&leased[0]).unwrap(), "a second ack is a no-op");
        assert!(
            queue
                .release(&leased[1], 0, serde_json::json!({"attempt": 1}))
                .unwrap()
        );
        let again = queue.lease(&q(), 10, 60_000).unwrap();
        assert_eq!(again.len(), 2);
        let b = again.iter().find(|d| d.body == b"b").unwrap();
        assert_eq!(b.receive_count, 2);
        assert_eq!(b.meta["attempt"], 1);
        queue.sync().await.unwrap();
        drop(queue);

        // After a restart nothing acknowledged comes back and nothing else is lost; the
        // leased messages wait out their visibility timeout.
        let queue = DurableQueue::open(&path).unwrap();
        assert_eq!(
            queue.counts(&q()).unwrap(),
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
        queue.enqueue(&q(), vec![message("kept")]).await.unwrap();
        drop(queue);
        // A crash in the middle of appending a record leaves a partial one at the end.
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(&[200, 0, 0, 0, 1, 2, 3, 4, 5]).unwrap();
        drop(file);
        let queue = DurableQueue::open(&path).unwrap();
        let got = queue.lease(&q(), 10, 1000).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].body, b"kept");
        queue.enqueue(&q(), vec![message("after")]).await.unwrap();
        drop(queue);
        let queue = DurableQueue::open(&path).unwrap();
        assert_eq!(
            queue.counts(&q()).unwrap().in_flight + queue.counts(&q()).unwrap().visible,
            2
        );
    }

    #[tokio::test]
    async fn compaction_keeps_live_messages_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.log");
        let queue = DurableQueue::open_with(&path, 64 << 10).unwrap();
        let big = "x".repeat(4096);
        for _ in 0..40 {
            queue.enqueue(&q(), vec![message(&big)]).await.unwrap();
            for d in queue.lease(&q(), 10, 1000).unwrap() {
                assert!(queue.ack(&d).unwrap());
            }
        }
        queue
            .enqueue(&q(), vec![message("survivor")])
            .await
            .unwrap();
        queue.sync().await.unwrap();
        let got = queue.peek_all(&q(), 10).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].body, b"survivor");
        drop(queue);
        let queue = DurableQueue::open(&path).unwrap();
        assert_eq!(queue.lease(&q(), 10, 1000).unwrap()[0].body, b"survivor");
    }

    #[tokio::test]
    async fn delayed_messages_wait() {
        let dir = tempfile::tempdir().unwrap();
        let queue = DurableQueue::open(&dir.path().join("q.log")).unwrap();
        let mut m = message("later");
        m.delay_ms = 60_000;
        queue.enqueue(&q(), vec![m]).await.unwrap();
        assert!(queue.lease(&q(), 1, 1000).unwrap().is_empty());
        assert_eq!(queue.counts(&q()).unwrap().delayed, 1);
        assert!(queue.ready_queues().unwrap().is_empty());
    }
}

#[cfg(test)]
mod per_queue {
    use super::*;
    use std::time::Duration;

    fn message(body: &str) -> NewMessage {
        NewMessage {
            body: body.as_bytes().to_vec(),
            delay_ms: 0,
            meta: serde_json::Value::Null,
        }
    }

    /// A consumer waiting on an empty queue is woken by the commit that makes a message visible,
    /// not by a polling interval.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_waiting_consumer_is_woken_by_the_commit() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Arc::new(DurableQueue::open(&dir.path().join("q.log")).unwrap());
        let name = QueueName::Sqs("wake".into());
        let waiter = {
            let (queue, name) = (queue.clone(), name.clone());
            tokio::spawn(async move {
                let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
                queue.wait_visible(&name, deadline).await;
                queue.lease(&name, 1, 1000).unwrap()
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        queue.enqueue(&name, vec![message("hello")]).await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .expect("the waiter was not woken")
            .unwrap();
        assert_eq!(got[0].body, b"hello");
    }

    /// Compaction copies bodies without holding any queue's lock: while it runs, another queue
    /// can still be leased from and acknowledged, and nothing live is lost.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn another_queue_serves_while_one_is_compacted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.log");
        let queue = Arc::new(DurableQueue::open_with(&path, 256 << 10).unwrap());
        let busy = QueueName::Async("busy".into());
        let other = QueueName::Sqs("other".into());
        queue
            .enqueue(&other, (0..50).map(|i| message(&format!("o{i}"))).collect())
            .await
            .unwrap();
        let big = "x".repeat(8192);
        // Churn on one queue makes the log mostly dead records, so compaction runs, several
        // times; the other queue is used all along.
        let churn = {
            let (queue, busy) = (queue.clone(), busy.clone());
            tokio::spawn(async move {
                for _ in 0..200 {
                    queue.enqueue(&busy, vec![message(&big)]).await.unwrap();
                    for d in queue.lease(&busy, 10, 60_000).unwrap() {
                        assert!(queue.ack(&d).unwrap());
                    }
                }
            })
        };
        let mut served = 0;
        while !churn.is_finished() || served < 50 {
            for d in queue.lease(&other, 5, 60_000).unwrap() {
                assert!(d.body.starts_with(b"o"), "a body read from the wrong place");
                assert!(queue.release(&d, 0, serde_json::Value::Null).unwrap());
                served += 1;
            }
            // A consumer's pace, not a flood of updates for the committer.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        churn.await.unwrap();
        queue.sync().await.unwrap();
        // (The file's inode number is no witness: a compacted file may get a freed one back.)
        assert!(
            queue.shared.compactions.load(Ordering::Relaxed) > 0,
            "never compacted"
        );
        let left = queue.peek_all(&other, 100).unwrap();
        assert_eq!(left.len(), 50);
        drop(queue);
        let queue = DurableQueue::open(&path).unwrap();
        let counts = queue.counts(&other).unwrap();
        assert_eq!(counts.visible + counts.in_flight, 50);
        assert_eq!(queue.counts(&busy).unwrap(), QueueCounts::default());
    }
}
