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

use std::sync::{Arc, Condvar, Mutex};
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
    /// Answered once everything recorded before them is durable, each by its deadline: one
    /// due now makes the writer sync at once, later ones share the syncs that come anyway.
    waiters: Vec<(Instant, tokio::sync::oneshot::Sender<()>)>,
    /// Whether a waiter wants its sync now.
    urgent: bool,
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

    /// Resolves once everything recorded so far is durable, at the latest about `within`
    /// from now: the writer syncs then unless a sync comes sooner. `Duration::ZERO` wakes it
    /// to sync at once. Resolves with an error only if the writer has stopped.
    pub fn durable_within(&self, within: Duration) -> tokio::sync::oneshot::Receiver<()> {
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let urgent = within.is_zero();
        match self.shared.pending.lock() {
            Ok(mut pending) if !pending.stop => {
                pending.waiters.push((Instant::now() + within, done_tx));
                pending.urgent |= urgent;
            }
            // Dropping the sender resolves the receiver at once.
            _ => return done_rx,
        }
        if urgent {
            self.shared.wake.notify_one();
        }
        done_rx
    }

    /// Waits until everything recorded so far is durable.
    pub fn flush(&self) {
        let _ = self.durable_within(Duration::ZERO).blocking_recv();
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
    // Waiters whose deadline has not come; they are answered by whichever sync comes first.
    let mut waiting: Vec<(Instant, tokio::sync::oneshot::Sender<()>)> = Vec::new();
    loop {
        // Sleep no longer than the earliest waiter may wait.
        let sleep = waiting
            .iter()
            .map(|(deadline, _)| deadline.saturating_duration_since(Instant::now()))
            .min()
            .map_or(tick, |d| d.min(tick));
        let mut taken = {
            let Ok(guard) = shared.pending.lock() else {
                tracing::error!("telemetry lock poisoned; the telemetry writer stops");
                return;
            };
            let Ok((mut guard, _)) = shared.wake.wait_timeout_while(guard, sleep, |p| {
                !p.urgent && !p.stop && p.usage.len() < WAKE_AT
            }) else {
                tracing::error!("telemetry lock poisoned; the telemetry writer stops");
                return;
            };
            let taken = std::mem::take(&mut *guard);
            // Once stopped, later waiters are refused rather than left waiting.
            guard.stop = taken.stop;
            taken
        };
        waiting.append(&mut taken.waiters);
        tick = match taken.usage.is_empty() {
            true => (tick * 2).min(IDLE_TICK),
            false => BUSY_TICK,
        };
        if !taken.usage.is_empty()
            && let Err(err) = store.append(&taken.logs, &taken.usage)
        {
            tracing::error!(error = %err, dropped = taken.usage.len(), "could not store invocation telemetry");
        }
        unsynced |= !taken.usage.is_empty();
        let now = Instant::now();
        let due = waiting.iter().any(|(deadline, _)| *deadline <= now);
        if due || taken.stop || (unsynced && last_sync.elapsed() >= SYNC_EVERY) {
            last_sync = now;
            unsynced = false;
            if let Err(err) = store.sync() {
                tracing::error!(error = %err, "could not sync telemetry");
            }
            // Right after each sync, so that the space used never runs more than a second of
            // writes past the retention budget.
            if let Err(err) = store.prune(&retention, nimbus_types::time::now_ms()) {
                tracing::error!(error = %err, "could not prune telemetry");
            }
            for (_, done) in waiting.drain(..) {
                let _ = done.send(());
            }
        }
        if taken.stop {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::FileTelemetry;

    fn record(function: &str) -> (NewLogEntry, UsageRecord) {
        let now = nimbus_types::time::now_ms();
        let usage = UsageRecord {
            time_ms: now,
            function: function.into(),
            version: "$LATEST".into(),
            request_id: "r".into(),
            duration_us: 1000,
            billed_ms: 1,
            memory_mb: 128,
            gb_seconds: 0.125 / 1000.0,
            cold: false,
            init_duration_us: None,
            outcome: nimbus_types::OutcomeKind::Success,
            async_attempt: None,
        };
        let log = NewLogEntry {
            time_ms: now,
            function: function.into(),
            request_id: "r".into(),
            text: "hello".into(),
        };
        (log, usage)
    }

    /// A waiter with a deadline is answered by a sync by then, without waking the writer; one
    /// without is answered at once. Either way the records are stored.
    #[test]
    fn waiters_are_answered_by_their_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn TelemetryStore> =
            Arc::new(FileTelemetry::open(dir.path(), &Retention::default()).unwrap());
        let writer = TelemetryWriter::start(store.clone(), Retention::default());
        let (log, usage) = record("f");
        writer.record(log, usage);
        let lazy = writer.durable_within(Duration::from_millis(50));
        lazy.blocking_recv().expect("answered, not dropped");
        assert_eq!(store.usage_records("f", 0, 10).unwrap().len(), 1);
        let (log, usage) = record("f");
        writer.record(log, usage);
        writer.flush();
        assert_eq!(store.usage_records("f", 0, 10).unwrap().len(), 2);
        writer.shutdown();
        // After the writer stopped, a waiter resolves at once instead of hanging.
        assert!(
            writer
                .durable_within(Duration::from_secs(60))
                .blocking_recv()
                .is_err()
        );
    }
}
