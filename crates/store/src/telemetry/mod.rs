//! Invocation logs and usage records: written in batches off the request path, kept in
//! append-only segment files with bounded retention, and metered from totals that retention
//! never touches.
//!
//! Invocations hand their records to [`TelemetryWriter::record`], which never blocks; one thread
//! drains the channel and appends whatever has accumulated to the segments in one write per
//! stream, so a busy node pays one `write` per batch and one `fdatasync` a second.

mod files;
mod rollup;
mod segments;

pub use files::FileTelemetry;

use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nimbus_types::UsageRecord;
use serde::Deserialize;

use crate::{NewLogEntry, TelemetryStore};

/// How long raw logs and usage records are kept, by age and by the space they take. Whole
/// segments are dropped, so the space used stays below each budget plus one segment (at most
/// 8 MiB). Usage totals are kept whatever the retention.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Retention {
    pub log_max_age_s: u64,
    pub log_max_mb: u64,
    pub usage_max_age_s: u64,
    pub usage_max_mb: u64,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            log_max_age_s: 7 * 24 * 3600,
            log_max_mb: 128,
            usage_max_age_s: 90 * 24 * 3600,
            usage_max_mb: 64,
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

/// Records handed over by invocations and not yet written, and who waits for what.
#[derive(Default)]
struct Pending {
    logs: Vec<NewLogEntry>,
    usage: Vec<UsageRecord>,
    /// Answered once everything recorded before them is durable.
    waiters: Vec<mpsc::SyncSender<()>>,
    stop: bool,
}

struct Shared {
    pending: Mutex<Pending>,
    wake: Condvar,
}

/// The writer wakes this often while records arrive, and backs off to [`IDLE_TICK`] while none
/// do. Invocations never wake it themselves: waking a sleeping thread costs the invoking thread
/// a system call and, on a virtual machine with an idle second CPU, an inter-processor interrupt
/// on the request path (measured: p50 at c=1 rose from 150 to 250 µs when every record woke it).
const BUSY_TICK: Duration = Duration::from_millis(10);
const IDLE_TICK: Duration = Duration::from_millis(100);
/// So many waiting records wake the writer at once, which bounds the memory they take.
const WAKE_AT: usize = 4096;

/// Records are written without waiting for the disk; a sync this often bounds what a crash can
/// lose. Asynchronous events, which must not be acknowledged before their records are durable,
/// ask for a sync through [`TelemetryWriter::flush`].
const SYNC_EVERY: Duration = Duration::from_secs(1);

pub struct TelemetryWriter {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl TelemetryWriter {
    pub fn start(store: Arc<dyn TelemetryStore>, retention: Retention) -> Self {
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending::default()),
            wake: Condvar::new(),
        });
        let writer = shared.clone();
        let thread = std::thread::Builder::new()
            .name("nimbus-telemetry".into())
            .spawn(move || write_loop(store, retention, &writer))
            .ok();
        if thread.is_none() {
            tracing::error!("could not start the telemetry thread; logs and usage are not kept");
        }
        Self {
            shared,
            thread: Mutex::new(thread),
        }
    }

    /// Queues one invocation's log and usage record. Never blocks on the writer.
    pub fn record(&self, log: NewLogEntry, usage: UsageRecord) {
        let Ok(mut pending) = self.shared.pending.lock() else {
            tracing::error!("telemetry lock poisoned; an invocation's log and usage are lost");
            return;
        };
        pending.logs.push(log);
        pending.usage.push(usage);
        let full = pending.usage.len() == WAKE_AT;
        drop(pending);
        if full {
            self.shared.wake.notify_one();
        }
    }

    /// Waits until everything recorded so far is durable.
    pub fn flush(&self) {
        let (done_tx, done_rx) = mpsc::sync_channel(1);
        match self.shared.pending.lock() {
            Ok(mut pending) if !pending.stop => pending.waiters.push(done_tx),
            _ => return,
        }
        self.shared.wake.notify_one();
        let _ = done_rx.recv_timeout(Duration::from_secs(30));
    }

    /// Writes what is queued, makes it durable and stops the thread.
    pub fn shutdown(&self) {
        if let Ok(mut pending) = self.shared.pending.lock() {
            pending.stop = true;
        }
        self.shared.wake.notify_one();
        if let Some(handle) = self.thread.lock().ok().and_then(|mut t| t.take()) {
            let _ = handle.join();
        }
    }
}

fn write_loop(store: Arc<dyn TelemetryStore>, retention: Retention, shared: &Shared) {
    let mut last_sync = Instant::now();
    let mut tick = BUSY_TICK;
    let mut unsynced = false;
    loop {
        let taken = {
            let Ok(guard) = shared.pending.lock() else {
                tracing::error!("telemetry lock poisoned; the telemetry writer stops");
                return;
            };
            let Ok((mut guard, _)) = shared.wake.wait_timeout_while(guard, tick, |p| {
                p.waiters.is_empty() && !p.stop && p.usage.len() < WAKE_AT
            }) else {
                tracing::error!("telemetry lock poisoned; the telemetry writer stops");
                return;
            };
            std::mem::take(&mut *guard)
        };
        tick = match taken.usage.is_empty() {
            true => (tick * 2).min(IDLE_TICK),
            false => BUSY_TICK,
        };
        if let Err(err) = store.append(&taken.logs, &taken.usage) {
            tracing::error!(error = %err, dropped = taken.usage.len(), "could not store invocation telemetry");
        }
        unsynced |= !taken.usage.is_empty();
        if !taken.waiters.is_empty()
            || taken.stop
            || (unsynced && last_sync.elapsed() >= SYNC_EVERY)
        {
            last_sync = Instant::now();
            unsynced = false;
            if let Err(err) = store.sync() {
                tracing::error!(error = %err, "could not sync telemetry");
            }
            // Right after each sync, so that the space used never runs more than a second of
            // writes past the retention budget.
            if let Err(err) = store.prune(&retention, nimbus_types::time::now_ms()) {
                tracing::error!(error = %err, "could not prune telemetry");
            }
        }
        for done in taken.waiters {
            let _ = done.send(());
        }
        if taken.stop {
            return;
        }
    }
}
