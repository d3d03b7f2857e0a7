//! Usage totals per function and minute (for the last two days) and per function and hour
//! (forever): what metering reports from, so that dropping raw usage records by retention never
//! changes a total.
//!
//! The totals are added up in memory as records are appended and committed to a small redb file
//! with each sync, together with a watermark: the sequence number of the last record they
//! include. Records above the watermark are still in the raw segments (retention never drops
//! those), and are added again at start, so a total counts every record exactly once whatever
//! the moment a crash came.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Mutex;

use nimbus_types::UsageRecord;
use nimbus_types::telemetry::UsageTotals;
use redb::{Database, ReadableTable, TableDefinition};

use crate::{Error, Result};

/// Keyed by (minute since the epoch, function).
const MINUTES: TableDefinition<(i64, &str), &[u8]> = TableDefinition::new("usage_minutes");
/// Keyed by (hour since the epoch, function).
const HOURS: TableDefinition<(i64, &str), &[u8]> = TableDefinition::new("usage_hours");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const WATERMARK: &str = "watermark";

const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 3_600_000;
/// Per-minute totals are kept this long; reports reaching further back use hours.
const MINUTES_KEPT_MS: i64 = 48 * HOUR_MS;

fn encode(t: &UsageTotals) -> [u8; 40] {
    let mut out = [0u8; 40];
    out[0..8].copy_from_slice(&t.invocations.to_le_bytes());
    out[8..16].copy_from_slice(&t.cold_starts.to_le_bytes());
    out[16..24].copy_from_slice(&t.errors.to_le_bytes());
    out[24..32].copy_from_slice(&t.billed_ms.to_le_bytes());
    out[32..40].copy_from_slice(&t.gb_seconds.to_le_bytes());
    out
}

fn decode(b: &[u8]) -> Result<UsageTotals> {
    let field = |i: usize| -> Result<[u8; 8]> {
        b.get(i * 8..i * 8 + 8)
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| Error::Telemetry("a usage total is corrupt".into()))
    };
    Ok(UsageTotals {
        invocations: u64::from_le_bytes(field(0)?),
        cold_starts: u64::from_le_bytes(field(1)?),
        errors: u64::from_le_bytes(field(2)?),
        billed_ms: u64::from_le_bytes(field(3)?),
        gb_seconds: f64::from_le_bytes(field(4)?),
        ..Default::default()
    })
}

#[derive(Default)]
struct Pending {
    /// (minute, function) → totals not yet committed.
    buckets: HashMap<(i64, String), UsageTotals>,
    /// The highest sequence number taken in, committed or not.
    watermark: u64,
}

pub struct UsageRollup {
    db: Database,
    pending: Mutex<Pending>,
}

fn poisoned() -> Error {
    Error::Telemetry("the usage totals' lock was poisoned by a panic".into())
}

impl UsageRollup {
    pub fn open(path: &Path) -> Result<Self> {
        let db = redb::Builder::new().set_cache_size(2 << 20).create(path)?;
        let txn = db.begin_write()?;
        let watermark = {
            txn.open_table(MINUTES)?;
            txn.open_table(HOURS)?;
            let meta = txn.open_table(META)?;
            meta.get(WATERMARK)?.map_or(0, |v| v.value())
        };
        txn.commit()?;
        Ok(Self {
            db,
            pending: Mutex::new(Pending {
                buckets: HashMap::new(),
                watermark,
            }),
        })
    }

    /// The sequence number of the last record taken in.
    pub fn watermark(&self) -> u64 {
        self.pending.lock().map_or(0, |p| p.watermark)
    }

    /// Counts a record in (if it is above the watermark: records are taken in at most once).
    pub fn add(&self, seq: u64, record: &UsageRecord) -> Result<()> {
        let mut pending = self.pending.lock().map_err(|_| poisoned())?;
        if seq <= pending.watermark {
            return Ok(());
        }
        pending.watermark = seq;
        let minute = record.time_ms.div_euclid(MINUTE_MS);
        match pending.buckets.get_mut(&(minute, record.function.clone())) {
            Some(t) => t.add(record),
            None => {
                let mut t = UsageTotals::default();
                t.add(record);
                pending.buckets.insert((minute, record.function.clone()), t);
            }
        }
        Ok(())
    }

    /// Commits what was added since the last commit, durably, with the watermark.
    pub fn commit(&self) -> Result<()> {
        // Held across the commit so that a report never counts a bucket both as pending and as
        // committed; reports are rare and a commit of a second's buckets is short.
        let mut pending = self.pending.lock().map_err(|_| poisoned())?;
        let stored = self
            .db
            .begin_read()?
            .open_table(META)?
            .get(WATERMARK)?
            .map_or(0, |v| v.value());
        if pending.buckets.is_empty() && pending.watermark == stored {
            return Ok(());
        }
        let txn = self.db.begin_write()?;
        {
            let mut minutes = txn.open_table(MINUTES)?;
            let mut hours = txn.open_table(HOURS)?;
            for ((minute, function), totals) in &pending.buckets {
                let hour = (minute * MINUTE_MS).div_euclid(HOUR_MS);
                for (table, key) in [(&mut minutes, *minute), (&mut hours, hour)] {
                    let mut sum = match table.get((key, function.as_str()))? {
                        Some(v) => decode(v.value())?,
                        None => UsageTotals::default(),
                    };
                    sum.merge(totals);
                    table.insert((key, function.as_str()), encode(&sum).as_slice())?;
                }
            }
            txn.open_table(META)?.insert(WATERMARK, pending.watermark)?;
        }
        txn.commit()?;
        pending.buckets.clear();
        Ok(())
    }

    /// Totals per function of the invocations from `since_ms` on. Within the last two days the
    /// cut is exact to the minute; further back, whole hours are counted from the hour `since_ms`
    /// falls in.
    pub fn totals(&self, since_ms: i64, now_ms: i64) -> Result<BTreeMap<String, UsageTotals>> {
        let by_minute = since_ms >= now_ms - MINUTES_KEPT_MS + HOUR_MS;
        let (table, unit) = match by_minute {
            true => (MINUTES, MINUTE_MS),
            false => (HOURS, HOUR_MS),
        };
        let from = since_ms.div_euclid(unit);
        let mut out: BTreeMap<String, UsageTotals> = BTreeMap::new();
        let pending = self.pending.lock().map_err(|_| poisoned())?;
        let txn = self.db.begin_read()?;
        let table = txn.open_table(table)?;
        for entry in table.range((from, "")..)? {
            let (k, v) = entry?;
            out.entry(k.value().1.to_owned())
                .or_default()
                .merge(&decode(v.value())?);
        }
        for ((minute, function), totals) in &pending.buckets {
            if (minute * MINUTE_MS).div_euclid(unit) >= from {
                out.entry(function.clone()).or_default().merge(totals);
            }
        }
        Ok(out)
    }

    /// Forgets per-minute totals older than two days (the hours keep them).
    pub fn prune(&self, now_ms: i64) -> Result<()> {
        let cut = (now_ms - MINUTES_KEPT_MS).div_euclid(MINUTE_MS);
        let txn = self.db.begin_write()?;
        txn.open_table(MINUTES)?
            .retain_in(..(cut, ""), |_, _| false)?;
        txn.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nimbus_types::OutcomeKind;

    fn record(function: &str, time_ms: i64) -> UsageRecord {
        UsageRecord {
            time_ms,
            function: function.to_owned(),
            version: "$LATEST".to_owned(),
            request_id: "r".to_owned(),
            duration_us: 1000,
            billed_ms: 1,
            memory_mb: 128,
            gb_seconds: 0.125 / 1000.0,
            cold: time_ms % 2 == 0,
            init_duration_us: None,
            outcome: OutcomeKind::Success,
            async_attempt: None,
        }
    }

    #[test]
    fn totals_count_each_record_once_across_commits_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("usage.redb");
        let now = 100 * HOUR_MS;
        let rollup = UsageRollup::open(&path).unwrap();
        for seq in 1..=10 {
            rollup
                .add(seq, &record("f", now - 10 * MINUTE_MS + seq as i64))
                .unwrap();
        }
        rollup.commit().unwrap();
        for seq in 11..=15 {
            rollup.add(seq, &record("g", now - MINUTE_MS)).unwrap();
        }
        // A record taken in twice (replayed after a restart) counts once.
        rollup.add(3, &record("f", now)).unwrap();
        let totals = rollup.totals(0, now).unwrap();
        assert_eq!(totals["f"].invocations, 10);
        assert_eq!(totals["g"].invocations, 5);
        assert_eq!(totals["f"].cold_starts, 5);
        // Not committed: gone after a reopen, and the watermark says so.
        drop(rollup);
        let rollup = UsageRollup::open(&path).unwrap();
        assert_eq!(rollup.watermark(), 10);
        assert!(!rollup.totals(0, now).unwrap().contains_key("g"));
        // Minute cut within two days; hours beyond.
        assert_eq!(
            rollup
                .totals(now - 5 * MINUTE_MS, now)
                .unwrap()
                .get("f")
                .map(|t| t.invocations),
            None
        );
        assert_eq!(
            rollup.totals(now - 10 * MINUTE_MS, now).unwrap()["f"].invocations,
            10
        );
        rollup.prune(now + 72 * HOUR_MS).unwrap();
        let later = now + 72 * HOUR_MS;
        assert_eq!(
            rollup.totals(now - 10 * MINUTE_MS, later).unwrap()["f"].invocations,
            10
        );
        assert_eq!(rollup.totals(0, later).unwrap()["f"].invocations, 10);
    }
}
