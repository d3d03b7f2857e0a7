//! The embedded store: one redb file under the node's data directory.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use nimbus_types::{FunctionConfig, LogEntry, UsageRecord};
use redb::{Database, Durability, ReadableTable, ReadableTableMetadata, TableDefinition};

use crate::telemetry::Retention;
use crate::{Error, FunctionStore, NewLogEntry, Result, TelemetryStore};

const FUNCTIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("functions");
/// Keyed by (function, sequence); the sequence is microseconds since the epoch, made unique.
const LOGS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("logs");
/// Keyed by sequence, in the same clock as logs.
const USAGE: TableDefinition<u64, &[u8]> = TableDefinition::new("usage");
/// Rule name → scheduled rule.
const RULES: TableDefinition<&str, &[u8]> = TableDefinition::new("rules");
/// Event source mapping UUID → mapping.
const MAPPINGS: TableDefinition<&str, &[u8]> = TableDefinition::new("event_source_mappings");
/// Queue name → queue configuration.
const QUEUES: TableDefinition<&str, &[u8]> = TableDefinition::new("queues");
/// Published versions, keyed `name:NNNNNNNNNN` (zero-padded so they sort by number).
const VERSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("versions");

fn version_key(name: &str, version: &str) -> String {
    match version.parse::<u64>() {
        Ok(n) => format!("{name}:{n:010}"),
        Err(_) => format!("{name}:{version}"),
    }
}

const CACHE_BYTES: usize = 16 << 20;

pub struct EmbeddedStore {
    db: Database,
    /// The last sequence number handed out; sequences are strictly increasing across restarts
    /// as long as the clock does not go back by more than the time since the last write.
    last_seq: AtomicU64,
}

impl EmbeddedStore {
    pub fn open(path: &Path) -> Result<Self> {
        // redb's default page cache is 1 GiB; telemetry is written once and rarely read, so a
        // small cache keeps the node's footprint small without slowing the hot path.
        let db = redb::Builder::new()
            .set_cache_size(CACHE_BYTES)
            .create(path)?;
        let txn = db.begin_write()?;
        let mut last_seq = 0;
        {
            txn.open_table(FUNCTIONS)?;
            txn.open_table(QUEUES)?;
            txn.open_table(VERSIONS)?;
            txn.open_table(MAPPINGS)?;
            txn.open_table(RULES)?;
            let logs = txn.open_table(LOGS)?;
            let usage = txn.open_table(USAGE)?;
            if let Some((k, _)) = usage.last()? {
                last_seq = last_seq.max(k.value());
            }
            for entry in logs.iter()? {
                let (k, _) = entry?;
                last_seq = last_seq.max(k.value().1);
            }
        }
        txn.commit()?;
        Ok(Self {
            db,
            last_seq: AtomicU64::new(last_seq),
        })
    }

    fn next_seq(&self, time_ms: i64) -> u64 {
        let wanted = (time_ms.max(0) as u64).saturating_mul(1000);
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
}

fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    // Our own plain structs always serialise.
    serde_json::to_vec(value).unwrap_or_default()
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(Error::Corrupt)
}

/// Records kept as JSON under a string key: queues, rules and event source mappings.
type NamedTable = TableDefinition<'static, &'static str, &'static [u8]>;

impl EmbeddedStore {
    fn put_named<T: serde::Serialize>(
        &self,
        table: NamedTable,
        key: &str,
        value: &T,
    ) -> Result<()> {
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(table)?;
            table.insert(key, encode(value).as_slice())?;
        }
        txn.commit()?;
        Ok(())
    }

    fn all_named<T: serde::de::DeserializeOwned>(&self, table: NamedTable) -> Result<Vec<T>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(table)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (_, v) = entry?;
            out.push(decode(v.value())?);
        }
        Ok(out)
    }

    fn remove_named(&self, table: NamedTable, key: &str) -> Result<bool> {
        let txn = self.db.begin_write()?;
        let existed = {
            let mut table = txn.open_table(table)?;
            table.remove(key)?.is_some()
        };
        txn.commit()?;
        Ok(existed)
    }
}

impl crate::RuleStore for EmbeddedStore {
    fn put_rule(&self, rule: &nimbus_types::queue::ScheduleRule) -> Result<()> {
        self.put_named(RULES, &rule.name, rule)
    }

    fn rules(&self) -> Result<Vec<nimbus_types::queue::ScheduleRule>> {
        self.all_named(RULES)
    }

    fn delete_rule(&self, name: &str) -> Result<bool> {
        self.remove_named(RULES, name)
    }
}

impl crate::MappingStore for EmbeddedStore {
    fn put_mapping(&self, mapping: &nimbus_types::queue::EventSourceMapping) -> Result<()> {
        self.put_named(MAPPINGS, &mapping.uuid, mapping)
    }

    fn mappings(&self) -> Result<Vec<nimbus_types::queue::EventSourceMapping>> {
        self.all_named(MAPPINGS)
    }

    fn delete_mapping(&self, uuid: &str) -> Result<bool> {
        self.remove_named(MAPPINGS, uuid)
    }
}

impl crate::QueueRegistry for EmbeddedStore {
    fn put_queue(&self, queue: &nimbus_types::queue::QueueConfig) -> Result<()> {
        self.put_named(QUEUES, &queue.name, queue)
    }

    fn queues(&self) -> Result<Vec<nimbus_types::queue::QueueConfig>> {
        self.all_named(QUEUES)
    }

    fn delete_queue(&self, name: &str) -> Result<bool> {
        self.remove_named(QUEUES, name)
    }
}

impl FunctionStore for EmbeddedStore {
    fn create_function(&self, function: &FunctionConfig) -> Result<()> {
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(FUNCTIONS)?;
            if table.get(function.name.as_str())?.is_some() {
                return Err(Error::Conflict(function.name.clone()));
            }
            table.insert(function.name.as_str(), encode(function).as_slice())?;
        }
        txn.commit()?;
        Ok(())
    }

    fn put_function(&self, function: &FunctionConfig) -> Result<()> {
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(FUNCTIONS)?;
            table.insert(function.name.as_str(), encode(function).as_slice())?;
        }
        txn.commit()?;
        Ok(())
    }

    fn get_function(&self, name: &str) -> Result<Option<FunctionConfig>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(FUNCTIONS)?;
        table.get(name)?.map(|v| decode(v.value())).transpose()
    }

    fn list_functions(&self, after: Option<&str>, limit: usize) -> Result<Vec<FunctionConfig>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(FUNCTIONS)?;
        let mut out = Vec::new();
        let iter = match after {
            Some(after) => table.range::<&str>(after..)?,
            None => table.range::<&str>(..)?,
        };
        for entry in iter {
            let (k, v) = entry?;
            if Some(k.value()) == after {
                continue;
            }
            out.push(decode(v.value())?);
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    fn delete_function(&self, name: &str) -> Result<Option<FunctionConfig>> {
        let txn = self.db.begin_write()?;
        let removed = {
            let mut table = txn.open_table(FUNCTIONS)?;
            let removed = table.remove(name)?;
            removed.map(|v| decode(v.value())).transpose()?
        };
        txn.commit()?;
        Ok(removed)
    }

    fn put_version(&self, version: &FunctionConfig) -> Result<()> {
        self.put_named(
            VERSIONS,
            &version_key(&version.name, &version.version),
            version,
        )
    }

    fn all_versions(&self) -> Result<Vec<FunctionConfig>> {
        self.all_named(VERSIONS)
    }

    fn delete_version(&self, name: &str, version: &str) -> Result<bool> {
        self.remove_named(VERSIONS, &version_key(name, version))
    }
}

impl TelemetryStore for EmbeddedStore {
    fn append(&self, logs: &[NewLogEntry], usage: &[UsageRecord]) -> Result<()> {
        if logs.is_empty() && usage.is_empty() {
            return Ok(());
        }
        let mut txn = self.db.begin_write()?;
        // Telemetry is written in batches by one thread; a commit that reaches the page cache
        // is enough, the next durable commit (or the clean shutdown) makes it persistent.
        txn.set_durability(Durability::Eventual);
        {
            let mut table = txn.open_table(LOGS)?;
            for entry in logs {
                let seq = self.next_seq(entry.time_ms);
                let stored = LogEntry {
                    seq,
                    time_ms: entry.time_ms,
                    function: entry.function.clone(),
                    request_id: entry.request_id.clone(),
                    text: entry.text.clone(),
                };
                table.insert((entry.function.as_str(), seq), encode(&stored).as_slice())?;
            }
            let mut table = txn.open_table(USAGE)?;
            for record in usage {
                let seq = self.next_seq(record.time_ms);
                table.insert(seq, encode(record).as_slice())?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    fn logs(&self, function: &str, after: u64, limit: usize) -> Result<Vec<LogEntry>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(LOGS)?;
        let start = after.saturating_add(1);
        let mut out = Vec::new();
        for entry in table.range((function, start)..=(function, u64::MAX))? {
            let (_, v) = entry?;
            out.push(decode(v.value())?);
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    fn usage(&self, since_ms: i64) -> Result<Vec<UsageRecord>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(USAGE)?;
        let start = (since_ms.max(0) as u64).saturating_mul(1000);
        let mut out = Vec::new();
        for entry in table.range(start..)? {
            let (_, v) = entry?;
            out.push(decode(v.value())?);
        }
        Ok(out)
    }

    fn prune(&self, retention: &Retention, now_ms: i64) -> Result<()> {
        let log_cutoff = seq_at(now_ms - retention.log_max_age_ms());
        let usage_cutoff = seq_at(now_ms - retention.usage_max_age_ms());
        let txn = self.db.begin_write()?;
        {
            let mut logs = txn.open_table(LOGS)?;
            // Each function's cut point, found by seeking to the function and walking back from
            // its newest entry over what is kept: the entries about to be pruned are never read.
            // The table can't be changed while it is read, so the cuts are collected first.
            let mut cuts: Vec<(String, u64)> = Vec::new();
            let mut next_name = logs.first()?.map(|(k, _)| k.value().0.to_owned());
            while let Some(name) = next_name.take() {
                let all = (name.as_str(), 0u64)..=(name.as_str(), u64::MAX);
                let first = logs.range(all.clone())?.next().transpose()?;
                let keep_from = match retention.logs_per_function {
                    0 => u64::MAX,
                    n => logs
                        .range(all)?
                        .rev()
                        .nth(n - 1)
                        .transpose()?
                        .map_or(0, |(k, _)| k.value().1),
                };
                let cut = keep_from.max(log_cutoff);
                if first.is_some_and(|(k, _)| k.value().1 < cut) {
                    cuts.push((name.clone(), cut));
                }
                for entry in logs.range((name.as_str(), u64::MAX)..)? {
                    let (k, _) = entry?;
                    if k.value().0 != name {
                        next_name = Some(k.value().0.to_owned());
                        break;
                    }
                }
            }
            for (name, cut) in &cuts {
                logs.retain_in((name.as_str(), 0)..(name.as_str(), *cut), |_, _| false)?;
            }
            let mut usage = txn.open_table(USAGE)?;
            usage.retain_in(..usage_cutoff, |_, _| false)?;
            let excess = usage.len()?.saturating_sub(retention.usage_records as u64);
            for _ in 0..excess {
                usage.pop_first()?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    fn sync(&self) -> Result<()> {
        // An empty transaction committed with immediate durability persists the eventual ones
        // before it.
        let txn = self.db.begin_write()?;
        txn.commit()?;
        Ok(())
    }
}

fn seq_at(ms: i64) -> u64 {
    (ms.max(0) as u64).saturating_mul(1000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nimbus_types::{CodeRef, OutcomeKind, Runtime};

    fn function(name: &str) -> FunctionConfig {
        FunctionConfig {
            name: name.to_owned(),
            runtime: Runtime::Wasm32Wasip1,
            handler: "f.wasm".to_owned(),
            role: String::new(),
            description: String::new(),
            memory_mb: 128,
            timeout_s: 3,
            environment: Default::default(),
            ephemeral_storage_mb: 512,
            code: CodeRef {
                sha256: "00".repeat(32),
                size: 1,
            },
            revision_id: "r".to_owned(),
            last_modified_ms: 0,
            version: "$LATEST".to_owned(),
            event_invoke: None,
            last_published: 0,
            reserved_concurrency: None,
            provisioned: Default::default(),
        }
    }

    #[test]
    fn functions_create_list_delete() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&dir.path().join("db")).unwrap();
        for name in ["c", "a", "b"] {
            store.create_function(&function(name)).unwrap();
        }
        assert!(matches!(
            store.create_function(&function("a")),
            Err(Error::Conflict(_))
        ));
        let page: Vec<_> = store
            .list_functions(None, 2)
            .unwrap()
            .into_iter()
            .map(|f| f.name)
            .collect();
        assert_eq!(page, ["a", "b"]);
        let rest: Vec<_> = store
            .list_functions(Some("b"), 2)
            .unwrap()
            .into_iter()
            .map(|f| f.name)
            .collect();
        assert_eq!(rest, ["c"]);
        assert!(store.delete_function("b").unwrap().is_some());
        assert!(store.delete_function("b").unwrap().is_none());
        assert!(store.get_function("b").unwrap().is_none());
    }

    fn usage(function: &str, time_ms: i64) -> UsageRecord {
        UsageRecord {
            time_ms,
            function: function.to_owned(),
            version: "$LATEST".to_owned(),
            request_id: "id".to_owned(),
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

    #[test]
    fn telemetry_is_ordered_and_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let store = EmbeddedStore::open(&path).unwrap();
        let logs: Vec<_> = (0..10)
            .map(|i| NewLogEntry {
                time_ms: 1_000 + i,
                function: "f".to_owned(),
                request_id: format!("r{i}"),
                text: format!("line {i}"),
            })
            .collect();
        let records: Vec<_> = (0..10).map(|i| usage("f", 1_000 + i)).collect();
        store.append(&logs, &records).unwrap();
        let others: Vec<_> = ["e", "g", "g", "g", "g"]
            .iter()
            .enumerate()
            .map(|(i, name)| NewLogEntry {
                time_ms: 1_100 + i as i64,
                function: (*name).to_owned(),
                request_id: format!("o{i}"),
                text: format!("{name} {i}"),
            })
            .collect();
        store.append(&others, &[]).unwrap();
        let got = store.logs("f", 0, 100).unwrap();
        assert_eq!(got.len(), 10);
        assert!(got.windows(2).all(|w| w[0].seq < w[1].seq));
        let after = store.logs("f", got[4].seq, 100).unwrap();
        assert_eq!(after[0].text, "line 5");
        assert!(store.logs("h", 0, 100).unwrap().is_empty());

        let retention = Retention {
            log_max_age_s: 3600,
            logs_per_function: 3,
            usage_max_age_s: 3600,
            usage_records: 4,
        };
        store.prune(&retention, 2_000).unwrap();
        let kept = store.logs("f", 0, 100).unwrap();
        assert_eq!(
            kept.iter().map(|e| e.text.as_str()).collect::<Vec<_>>(),
            ["line 7", "line 8", "line 9"]
        );
        // Every function keeps its own newest entries.
        let texts = |f: &str| {
            store
                .logs(f, 0, 100)
                .unwrap()
                .into_iter()
                .map(|e| e.text)
                .collect::<Vec<_>>()
        };
        assert_eq!(texts("e"), ["e 0"]);
        assert_eq!(texts("g"), ["g 2", "g 3", "g 4"]);
        assert_eq!(store.usage(0).unwrap().len(), 4);
        drop(store);
        // Sequences keep increasing after a reopen.
        let store = EmbeddedStore::open(&path).unwrap();
        store
            .append(
                &[NewLogEntry {
                    time_ms: 0,
                    function: "f".into(),
                    request_id: "x".into(),
                    text: "late".into(),
                }],
                &[],
            )
            .unwrap();
        let last = store.logs("f", 0, 100).unwrap();
        assert_eq!(last.last().unwrap().text, "late");
    }
}
