//! The manager's metrics in Prometheus's text exposition format: counters and histograms of
//! invocations per function, and gauges of sandboxes, workers and concurrency read from the
//! manager's state when rendered. Also the sandbox table of `nimbus status`.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::sync::{MutexGuard, PoisonError};

use nimbus_types::{InvokeOutcome, OutcomeKind};

use crate::concurrency::ThrottleReason;
use crate::{WorkerManager, WorkerSummary};

/// Upper bounds of the duration buckets, in seconds.
const BUCKETS_S: [f64; 15] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0, 900.0,
];

#[derive(Debug, Clone, Default)]
pub struct Histogram {
    counts: [u64; BUCKETS_S.len()],
    count: u64,
    sum_s: f64,
}

impl Histogram {
    pub fn observe_us(&mut self, us: u64) {
        let s = us as f64 / 1e6;
        for (bound, count) in BUCKETS_S.iter().zip(self.counts.iter_mut()) {
            if s <= *bound {
                *count += 1;
            }
        }
        self.count += 1;
        self.sum_s += s;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        for (bound, count) in BUCKETS_S.iter().zip(self.counts.iter()) {
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {count}");
        }
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", self.sum_s);
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", self.count);
    }
}

#[derive(Debug, Clone, Default)]
pub struct FunctionMetrics {
    pub invocations: u64,
    pub errors: u64,
    pub cold_starts: u64,
    pub throttles: BTreeMap<&'static str, u64>,
    pub duration: Histogram,
    pub init_duration: Histogram,
}

impl FunctionMetrics {
    pub fn record(&mut self, outcome: &InvokeOutcome) {
        self.invocations += 1;
        if outcome.kind != OutcomeKind::Success || outcome.error.is_some() {
            self.errors += 1;
        }
        self.duration.observe_us(outcome.duration_us);
        if let Some(init) = outcome.init_duration_us {
            self.cold_starts += 1;
            self.init_duration.observe_us(init);
        }
    }

    pub fn throttled(&mut self, reason: ThrottleReason) {
        *self.throttles.entry(reason.as_str()).or_default() += 1;
    }
}

/// Writes the `# HELP` and `# TYPE` lines of one metric family.
pub fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Renders the per-function families, functions in name order.
pub fn render_functions(out: &mut String, functions: &BTreeMap<String, FunctionMetrics>) {
    let counter =
        |out: &mut String, name: &str, help: &str, get: &dyn Fn(&FunctionMetrics) -> u64| {
            family(out, name, "counter", help);
            for (f, m) in functions {
                let _ = writeln!(out, "{name}{{function=\"{f}\"}} {}", get(m));
            }
        };
    counter(
        out,
        "nimbus_invocations_total",
        "Invocations that ran, by function.",
        &|m| m.invocations,
    );
    counter(
        out,
        "nimbus_errors_total",
        "Invocations that ended in an error, timeout or out-of-memory kill.",
        &|m| m.errors,
    );
    counter(
        out,
        "nimbus_cold_starts_total",
        "Invocations that waited for a new sandbox.",
        &|m| m.cold_starts,
    );
    family(
        out,
        "nimbus_throttles_total",
        "counter",
        "Invocations refused by a concurrency limit or for lack of capacity, by reason.",
    );
    for (f, m) in functions {
        for (reason, n) in &m.throttles {
            let _ = writeln!(
                out,
                "nimbus_throttles_total{{function=\"{f}\",reason=\"{reason}\"}} {n}"
            );
        }
    }
    family(
        out,
        "nimbus_duration_seconds",
        "histogram",
        "Time the function ran, per invocation.",
    );
    for (f, m) in functions {
        m.duration
            .render(out, "nimbus_duration_seconds", &format!("function=\"{f}\""));
    }
    family(
        out,
        "nimbus_init_duration_seconds",
        "histogram",
        "Time a new sandbox took to initialise, per cold start.",
    );
    for (f, m) in functions {
        m.init_duration.render(
            out,
            "nimbus_init_duration_seconds",
            &format!("function=\"{f}\""),
        );
    }
}

impl WorkerManager {
    // Counters only ever go up by whole invocations, so a panic elsewhere while the lock was
    // held loses at most that invocation's figures: carry on with them rather than lose them all.
    pub(crate) fn function_metrics(&self) -> MutexGuard<'_, BTreeMap<String, FunctionMetrics>> {
        self.metrics.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How many of a function's invocations were throttled since the node started.
    pub fn throttles(&self, function_key: &str) -> u64 {
        self.function_metrics()
            .get(function_key)
            .map_or(0, |m| m.throttles.values().sum())
    }

    /// Everything in Prometheus's text format.
    pub fn render_metrics(&self) -> String {
        let mut out = String::new();
        render_functions(&mut out, &self.function_metrics());
        family(
            &mut out,
            "nimbus_concurrent_executions",
            "gauge",
            "Invocations running now, by function.",
        );
        let mut running = self.concurrency.in_flight();
        running.sort();
        for (f, n) in running {
            let _ = writeln!(out, "nimbus_concurrent_executions{{function=\"{f}\"}} {n}");
        }
        family(
            &mut out,
            "nimbus_sandboxes",
            "gauge",
            "Sandboxes by function version, worker and state (idle, busy, provisioned_idle, provisioned_busy).",
        );
        let workers = self.live_workers();
        let names: HashMap<u64, &str> = workers.iter().map(|w| (w.id, w.name.as_str())).collect();
        {
            let pools = self.pools();
            let mut keys: Vec<&String> = pools.keys().collect();
            keys.sort();
            for key in keys {
                let pool = &pools[key];
                let (function, version) = key.rsplit_once(':').unwrap_or((key, ""));
                let mut ids: Vec<u64> = pool.per_worker().keys().copied().collect();
                ids.sort();
                // Busy provisioned sandboxes are not counted per worker: they are shown on the
                // first workers, in id order, that have busy sandboxes.
                let mut busy_provisioned_left = pool.provisioned_busy();
                for id in ids {
                    let Some(worker) = names.get(&id) else {
                        continue;
                    };
                    let total = pool.per_worker()[&id];
                    let idle = pool.idle_on(id);
                    let pidle = pool.provisioned_idle_on(id);
                    let busy_all = total.saturating_sub(idle + pidle);
                    let pbusy = busy_provisioned_left.min(busy_all);
                    busy_provisioned_left -= pbusy;
                    for (state, n) in [
                        ("idle", idle),
                        ("busy", busy_all - pbusy),
                        ("provisioned_idle", pidle),
                        ("provisioned_busy", pbusy),
                    ] {
                        let _ = writeln!(
                            out,
                            "nimbus_sandboxes{{function=\"{function}\",version=\"{version}\",worker=\"{worker}\",state=\"{state}\"}} {n}"
                        );
                    }
                }
            }
            family(
                &mut out,
                "nimbus_provisioned_concurrency",
                "gauge",
                "Provisioned concurrency requested and allocated, by function version.",
            );
            let mut keys: Vec<&String> = pools
                .iter()
                .filter(|(_, p)| p.provisioned().is_some())
                .map(|(k, _)| k)
                .collect();
            keys.sort();
            for key in keys {
                let pool = &pools[key];
                let (function, version) = key.rsplit_once(':').unwrap_or((key, ""));
                if let Some(p) = pool.provisioned() {
                    let _ = writeln!(
                        out,
                        "nimbus_provisioned_concurrency{{function=\"{function}\",version=\"{version}\",kind=\"requested\"}} {}",
                        p.requested
                    );
                    let _ = writeln!(
                        out,
                        "nimbus_provisioned_concurrency{{function=\"{function}\",version=\"{version}\",kind=\"allocated\"}} {}",
                        pool.allocated()
                    );
                }
            }
        }
        let summaries = self.workers();
        for (name, help, get) in [
            (
                "nimbus_worker_capacity_mb",
                "Memory a worker offers for sandboxes.",
                (|w: &WorkerSummary| w.capacity_mb) as fn(&WorkerSummary) -> u64,
            ),
            (
                "nimbus_worker_used_mb",
                "Memory reserved by a worker's sandboxes.",
                |w| w.reserved_mb,
            ),
            (
                "nimbus_worker_free_mb",
                "Memory a worker has left for new sandboxes (its snapshot templates take room).",
                |w| {
                    w.capacity_mb
                        .saturating_sub(w.reserved_mb)
                        .saturating_sub(w.snapshots.memory_bytes.div_ceil(1 << 20))
                },
            ),
            (
                "nimbus_worker_sandboxes",
                "Sandboxes a worker hosts.",
                |w| w.sandboxes as u64,
            ),
            (
                "nimbus_worker_snapshot_templates",
                "Snapshot templates of SnapStart versions a worker runs.",
                |w| w.snapshots.templates as u64,
            ),
            (
                "nimbus_worker_snapshot_memory_bytes",
                "Memory a worker's snapshot templates hold (shared by their environments).",
                |w| w.snapshots.memory_bytes,
            ),
            (
                "nimbus_worker_snapshot_disk_bytes",
                "Disk a worker's pre-initialised WebAssembly modules take.",
                |w| w.snapshots.disk_bytes,
            ),
        ] {
            family(&mut out, name, "gauge", help);
            for w in &summaries {
                let _ = writeln!(out, "{name}{{worker=\"{}\"}} {}", w.name, get(w));
            }
        }
        family(
            &mut out,
            "nimbus_worker_invocations_total",
            "counter",
            "Invocations run on a worker.",
        );
        for w in &summaries {
            let _ = writeln!(
                out,
                "nimbus_worker_invocations_total{{worker=\"{}\"}} {}",
                w.name, w.invocations
            );
        }
        let account = self.account();
        family(
            &mut out,
            "nimbus_account_concurrency_limit",
            "gauge",
            "The account's concurrency limit.",
        );
        let _ = writeln!(out, "nimbus_account_concurrency_limit {}", account.limit);
        family(
            &mut out,
            "nimbus_unreserved_concurrency",
            "gauge",
            "Concurrency left to functions without a reservation.",
        );
        let _ = writeln!(out, "nimbus_unreserved_concurrency {}", account.unreserved);
        out
    }

    /// Sandboxes per function version, for `nimbus status`: (key, worker name, idle, total).
    pub fn sandbox_table(&self) -> Vec<(String, String, u32, u32)> {
        let names: HashMap<u64, String> = self
            .live_workers()
            .iter()
            .map(|w| (w.id, w.name.clone()))
            .collect();
        let mut rows = Vec::new();
        for (key, pool) in self.pools().iter() {
            for (id, total) in pool.per_worker() {
                if *total == 0 {
                    continue;
                }
                let idle = pool.idle_on(*id) + pool.provisioned_idle_on(*id);
                if let Some(name) = names.get(id) {
                    rows.push((key.clone(), name.clone(), idle, *total));
                }
            }
        }
        rows.sort();
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let mut h = Histogram::default();
        h.observe_us(300);
        h.observe_us(2_000);
        h.observe_us(5_000_000_000);
        let mut out = String::new();
        h.render(&mut out, "d", "function=\"f\"");
        assert!(out.contains("d_bucket{function=\"f\",le=\"0.0005\"} 1\n"));
        assert!(out.contains("d_bucket{function=\"f\",le=\"0.0025\"} 2\n"));
        assert!(out.contains("d_bucket{function=\"f\",le=\"900\"} 2\n"));
        assert!(out.contains("d_bucket{function=\"f\",le=\"+Inf\"} 3\n"));
        assert!(out.contains("d_count{function=\"f\"} 3\n"));
    }
}
