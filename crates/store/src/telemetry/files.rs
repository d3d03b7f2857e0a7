//! The embedded [`TelemetryStore`]: invocation logs and usage records in segment files under
//! `DATA/telemetry`, usage totals in a small redb file beside them.
//!
//! ```text
//! DATA/telemetry/logs/<first seq>.seg  .idx    one frame per invocation log
//! DATA/telemetry/usage/<first seq>.seg .idx    one frame per usage record (JSON)
//! DATA/telemetry/usage.redb                    totals per function and minute / hour
//! ```

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use nimbus_types::telemetry::UsageTotals;
use nimbus_types::{LogEntry, UsageRecord};

use super::Retention;
use super::rollup::UsageRollup;
use super::segments::SegmentLog;
use crate::{Error, NewLogEntry, Result, TelemetryStore};

/// The most a segment holds before a new one begins; retention drops whole segments.
const SEGMENT_BYTES: u64 = 8 << 20;

pub struct FileTelemetry {
    logs: SegmentLog,
    usage: SegmentLog,
    rollup: UsageRollup,
    /// The last sequence number handed out. Sequences order records and serve as cursors; they
    /// are the commit time in microseconds, made strictly increasing (also across restarts, as
    /// long as the clock does not go back by more than the time since the last write).
    last_seq: AtomicU64,
    /// When the per-minute totals were last thinned out (milliseconds).
    last_rollup_prune_ms: AtomicI64,
}

/// Per-minute totals older than two days are deleted this often.
const ROLLUP_PRUNE_EVERY_MS: i64 = 60_000;

fn segment_bytes(budget_mb: u64) -> u64 {
    // Small budgets (tests, tiny nodes) still get several segments, so that dropping one does
    // not throw away most of what is kept.
    (budget_mb.saturating_mul(1 << 20) / 8).clamp(64 << 10, SEGMENT_BYTES)
}

impl FileTelemetry {
    pub fn open(dir: &Path, retention: &Retention) -> Result<Self> {
        let logs = SegmentLog::open(&dir.join("logs"), segment_bytes(retention.log_max_mb))?;
        let usage = SegmentLog::open(&dir.join("usage"), segment_bytes(retention.usage_max_mb))?;
        let rollup = UsageRollup::open(&dir.join("usage.redb"))?;
        // Records written after the totals' last commit are taken in again.
        let mut caught_up = 0;
        for frame in usage.read_all_after(rollup.watermark())? {
            if let Ok(record) = serde_json::from_slice::<UsageRecord>(&frame.payload) {
                rollup.add(frame.seq, &record)?;
                caught_up += 1;
            }
        }
        if caught_up > 0 {
            tracing::info!(
                records = caught_up,
                "usage totals caught up with the usage log"
            );
            rollup.commit()?;
        }
        let last_seq = logs
            .last_seq()
            .max(usage.last_seq())
            .max(rollup.watermark());
        Ok(Self {
            logs,
            usage,
            rollup,
            last_seq: AtomicU64::new(last_seq),
            last_rollup_prune_ms: AtomicI64::new(0),
        })
    }

    fn next_seq(&self, time_ms: i64) -> u64 {
        let wanted = (time_ms.max(0) as u64).saturating_mul(1000);
        // Only the telemetry writer appends, so a plain read-modify-write would do; the atomic
        // keeps it correct should that change.
        let mut current = self.last_seq.load(Ordering::Relaxed);
        loop {
            let next = wanted.max(current + 1);
            match self.last_seq.compare_exchange_weak(
                current,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return next,
                Err(seen) => current = seen,
            }
        }
    }

    /// Bytes the raw logs and usage records take on disk.
    pub fn bytes(&self) -> u64 {
        self.logs.bytes() + self.usage.bytes()
    }
}

impl TelemetryStore for FileTelemetry {
    fn append(&self, logs: &[NewLogEntry], usage: &[UsageRecord]) -> Result<()> {
        let mut heads = Vec::with_capacity(logs.len());
        for entry in logs {
            let id = &entry.request_id.as_bytes()[..entry.request_id.len().min(u16::MAX as usize)];
            let mut head = Vec::with_capacity(2 + id.len());
            head.extend_from_slice(&(id.len() as u16).to_le_bytes());
            head.extend_from_slice(id);
            heads.push((self.next_seq(entry.time_ms), head));
        }
        self.logs
            .append(logs.iter().zip(&heads).map(|(e, (seq, head))| {
                (
                    *seq,
                    e.time_ms,
                    e.function.as_str(),
                    [head.as_slice(), e.text.as_bytes()],
                )
            }))?;
        let mut encoded = Vec::with_capacity(usage.len());
        for record in usage {
            let seq = self.next_seq(record.time_ms);
            // Our own plain struct always serialises.
            encoded.push((seq, serde_json::to_vec(record).unwrap_or_default()));
        }
        self.usage
            .append(usage.iter().zip(&encoded).map(|(r, (seq, json))| {
                (
                    *seq,
                    r.time_ms,
                    r.function.as_str(),
                    [json.as_slice(), &[][..]],
                )
            }))?;
        for (record, (seq, _)) in usage.iter().zip(&encoded) {
            self.rollup.add(*seq, record)?;
        }
        Ok(())
    }

    fn logs(&self, function: &str, after: u64, limit: usize) -> Result<Vec<LogEntry>> {
        let frames = self.logs.read(function, after, i64::MIN, limit)?;
        frames
            .into_iter()
            .map(|f| {
                let corrupt = || Error::Telemetry(format!("log record {} is corrupt", f.seq));
                let len = f.payload.get(..2).ok_or_else(corrupt)?;
                let len = u16::from_le_bytes([len[0], len[1]]) as usize;
                let id = f.payload.get(2..2 + len).ok_or_else(corrupt)?;
                Ok(LogEntry {
                    seq: f.seq,
                    time_ms: f.time_ms,
                    request_id: String::from_utf8_lossy(id).into_owned(),
                    text: String::from_utf8_lossy(&f.payload[2 + len..]).into_owned(),
                    function: f.function,
                })
            })
            .collect()
    }

    fn usage_records(
        &self,
        function: &str,
        since_ms: i64,
        limit: usize,
    ) -> Result<Vec<UsageRecord>> {
        self.usage
            .read(function, 0, since_ms, limit)?
            .into_iter()
            .map(|f| serde_json::from_slice(&f.payload).map_err(Error::Corrupt))
            .collect()
    }

    fn usage_totals(&self, since_ms: i64) -> Result<BTreeMap<String, UsageTotals>> {
        self.rollup.totals(since_ms, nimbus_types::time::now_ms())
    }

    fn prune(&self, retention: &Retention, now_ms: i64) -> Result<()> {
        self.logs.drop_oldest(
            retention.log_max_mb.saturating_mul(1 << 20),
            now_ms.saturating_sub(retention.log_max_age_ms()),
            u64::MAX,
        )?;
        // Raw usage records go only once the totals that include them are committed.
        self.rollup.commit()?;
        self.usage.drop_oldest(
            retention.usage_max_mb.saturating_mul(1 << 20),
            now_ms.saturating_sub(retention.usage_max_age_ms()),
            self.rollup.watermark(),
        )?;
        let last = self.last_rollup_prune_ms.load(Ordering::Relaxed);
        if now_ms - last >= ROLLUP_PRUNE_EVERY_MS {
            self.last_rollup_prune_ms.store(now_ms, Ordering::Relaxed);
            self.rollup.prune(now_ms)?;
        }
        Ok(())
    }

    fn sync(&self) -> Result<()> {
        self.logs.sync()?;
        self.usage.sync()?;
        self.rollup.commit()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nimbus_types::OutcomeKind;

    fn usage(function: &str, time_ms: i64) -> UsageRecord {
        UsageRecord {
            time_ms,
            function: function.to_owned(),
            version: "$LATEST".to_owned(),
            request_id: format!("id-{time_ms}"),
            duration_us: 10,
            billed_ms: 1,
            memory_mb: 128,
            gb_seconds: 0.000125,
            cold: false,
            init_duration_us: None,
            outcome: OutcomeKind::Success,
            async_attempt: None,
        }
    }

    fn log(function: &str, time_ms: i64, text: &str) -> NewLogEntry {
        NewLogEntry {
            time_ms,
            function: function.to_owned(),
            request_id: format!("id-{time_ms}"),
            text: text.to_owned(),
        }
    }

    fn tiny() -> Retention {
        Retention {
            log_max_age_s: 3600,
            log_max_mb: 1,
            usage_max_age_s: 3600,
            usage_max_mb: 1,
        }
    }

    #[test]
    fn logs_are_ordered_per_function_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileTelemetry::open(dir.path(), &tiny()).unwrap();
        let logs: Vec<_> = (0..10)
            .map(|i| {
                log(
                    if i % 2 == 0 { "f" } else { "g" },
                    1_000 + i,
                    &format!("line {i}"),
                )
            })
            .collect();
        store.append(&logs, &[]).unwrap();
        let f = store.logs("f", 0, 100).unwrap();
        assert_eq!(
            f.iter().map(|e| e.text.as_str()).collect::<Vec<_>>(),
            ["line 0", "line 2", "line 4", "line 6", "line 8"]
        );
        assert_eq!(f[1].request_id, "id-1002");
        assert!(f.windows(2).all(|w| w[0].seq < w[1].seq));
        let after = store.logs("f", f[2].seq, 100).unwrap();
        assert_eq!(after[0].text, "line 6");
        store.sync().unwrap();
        drop(store);
        let store = FileTelemetry::open(dir.path(), &tiny()).unwrap();
        // Sequences keep increasing after a reopen, even for an entry with an older clock.
        store.append(&[log("f", 0, "late")], &[]).unwrap();
        let all = store.logs("f", 0, 100).unwrap();
        assert_eq!(all.len(), 6);
        assert_eq!(all.last().unwrap().text, "late");
    }

    /// Metering used to lose every invocation whose raw record retention had dropped: a soak
    /// of 2.3 million invocations reported 1.4 million. Totals must not depend on retention.
    #[test]
    fn usage_totals_stay_exact_when_retention_drops_raw_records() {
        let dir = tempfile::tempdir().unwrap();
        let retention = tiny();
        let store = FileTelemetry::open(dir.path(), &retention).unwrap();
        let now = nimbus_types::time::now_ms();
        let mut sent = 0u64;
        for batch in 0..40 {
            let records: Vec<_> = (0..500)
                .map(|i| usage(if i % 4 == 0 { "a" } else { "b" }, now - 1000 + batch))
                .collect();
            let logs: Vec<_> = records
                .iter()
                .map(|r| log(&r.function, r.time_ms, &"x".repeat(200)))
                .collect();
            store.append(&logs, &records).unwrap();
            sent += records.len() as u64;
            store.sync().unwrap();
            store.prune(&retention, now).unwrap();
        }
        // 20,000 usage records of ~250 bytes and as many 200-byte logs: well over the 1 MiB
        // budgets, so raw records were dropped.
        assert!(store.usage_records("a", 0, 100_000).unwrap().len() < 5_000);
        assert!(
            store.bytes() <= 2 * (1 << 20) + 2 * segment_bytes(1),
            "{} bytes kept",
            store.bytes()
        );
        let totals = store.usage_totals(0).unwrap();
        assert_eq!(totals["a"].invocations + totals["b"].invocations, sent);
        assert_eq!(totals["a"].invocations, sent / 4);
        // And after a restart, including records appended but never committed to the totals.
        store.append(&[], &[usage("a", now)]).unwrap();
        store.usage.sync().unwrap();
        drop(store);
        let store = FileTelemetry::open(dir.path(), &retention).unwrap();
        let totals = store.usage_totals(0).unwrap();
        assert_eq!(totals["a"].invocations + totals["b"].invocations, sent + 1);
    }

    #[test]
    fn usage_records_of_one_function_from_a_time_on() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileTelemetry::open(dir.path(), &tiny()).unwrap();
        let records: Vec<_> = (0..6)
            .map(|i| usage(if i < 3 { "a" } else { "b" }, 1_000 * i))
            .collect();
        store.append(&[], &records).unwrap();
        let a = store.usage_records("a", 1_000, 10).unwrap();
        assert_eq!(
            a.iter().map(|r| r.time_ms).collect::<Vec<_>>(),
            [1_000, 2_000]
        );
        assert_eq!(store.usage_records("b", 0, 2).unwrap().len(), 2);
    }
}
