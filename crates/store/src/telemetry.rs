//! Batched, off-the-hot-path writing of invocation logs and usage records.
//!
//! Invocations hand their records to [`TelemetryWriter::record`], which never blocks; one thread
//! drains the channel and commits whatever has accumulated in a single transaction, so a busy node
//! pays one commit per batch, not one per invocation.

use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nimbus_types::UsageRecord;
use serde::Deserialize;

use crate::{NewLogEntry, TelemetryStore};

/// How long logs and usage records are kept.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Retention {
    pub log_max_age_s: u64,
    pub logs_per_function: usize,
    pub usage_max_age_s: u64,
    pub usage_records: usize,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            log_max_age_s: 7 * 24 * 3600,
            logs_per_function: 10_000,
            usage_max_age_s: 90 * 24 * 3600,
            usage_records: 1_000_000,
        }
    }
}

impl Retention {
    pub fn log_max_age_ms(&self) -> i64 {
        (self.log_max_age_s as i64).saturating_mul(1000)
    }
    pub fn usage_max_age_ms(&self) -> i64 {
        (self.usage_max_age_s as i64).saturating_mul(1000)
    }
}

enum Message {
    Invocation(NewLogEntry, UsageRecord),
    /// Answered once everything sent before it is committed.
    Flush(mpsc::SyncSender<()>),
    Stop,
}

const MAX_BATCH: usize = 4096;

const PRUNE_EVERY: Duration = Duration::from_secs(30);
/// Batches are committed without waiting for the disk; a durable commit this often bounds what
/// a crash can lose, and lets the store reuse the pages earlier commits freed (until one, it
/// keeps them, and its memory grows with the write volume).
const SYNC_EVERY: Duration = Duration::from_secs(1);

pub struct TelemetryWriter {
    tx: Mutex<Sender<Message>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl TelemetryWriter {
    pub fn start(store: Arc<dyn TelemetryStore>, retention: Retention) -> Self {
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("nimbus-telemetry".into())
            .spawn(move || write_loop(store, retention, rx))
            .ok();
        if thread.is_none() {
            tracing::error!("could not start the telemetry thread; logs and usage are not kept");
        }
        Self {
            tx: Mutex::new(tx),
            thread: Mutex::new(thread),
        }
    }

    /// Queues one invocation's log and usage record.
    pub fn record(&self, log: NewLogEntry, usage: UsageRecord) {
        if let Ok(tx) = self.tx.lock() {
            let _ = tx.send(Message::Invocation(log, usage));
        }
    }

    /// Waits until everything recorded so far is committed.
    pub fn flush(&self) {
        let (done_tx, done_rx) = mpsc::sync_channel(1);
        let sent = self
            .tx
            .lock()
            .map(|tx| tx.send(Message::Flush(done_tx)).is_ok())
            .unwrap_or(false);
        if sent {
            let _ = done_rx.recv_timeout(Duration::from_secs(30));
        }
    }

    /// Commits what is queued, makes it durable and stops the thread.
    pub fn shutdown(&self) {
        if let Ok(tx) = self.tx.lock() {
            let _ = tx.send(Message::Stop);
        }
        if let Some(handle) = self.thread.lock().ok().and_then(|mut t| t.take()) {
            let _ = handle.join();
        }
    }
}

fn write_loop(store: Arc<dyn TelemetryStore>, retention: Retention, rx: Receiver<Message>) {
    let mut logs = Vec::new();
    let mut usage = Vec::new();
    let mut waiters = Vec::new();
    let mut last_prune = Instant::now();
    let mut last_sync = Instant::now();
    let mut stop = false;
    while !stop {
        let first = match rx.recv_timeout(PRUNE_EVERY) {
            Ok(m) => Some(m),
            Err(mpsc::RecvTimeoutError::Timeout) => None,
            Err(mpsc::RecvTimeoutError::Disconnected) => Some(Message::Stop),
        };
        let mut next = first;
        while let Some(message) = next.take() {
            match message {
                Message::Invocation(log, record) => {
                    logs.push(log);
                    usage.push(record);
                }
                Message::Flush(done) => waiters.push(done),
                Message::Stop => stop = true,
            }
            if logs.len() >= MAX_BATCH || stop || !waiters.is_empty() {
                break;
            }
            next = rx.try_recv().ok();
        }
        if let Err(err) = store.append(&logs, &usage) {
            tracing::error!(error = %err, dropped = logs.len(), "could not store invocation telemetry");
        }
        logs.clear();
        usage.clear();
        if !waiters.is_empty() || stop || last_sync.elapsed() >= SYNC_EVERY {
            last_sync = Instant::now();
            if let Err(err) = store.sync() {
                tracing::error!(error = %err, "could not sync telemetry");
            }
        }
        for done in waiters.drain(..) {
            let _ = done.send(());
        }
        if last_prune.elapsed() >= PRUNE_EVERY {
            last_prune = Instant::now();
            if let Err(err) = store.prune(&retention, nimbus_types::time::now_ms()) {
                tracing::error!(error = %err, "could not prune telemetry");
            }
        }
    }
}
