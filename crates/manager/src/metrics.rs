//! Counters and histograms of invocations, rendered in Prometheus's text exposition format.

use std::collections::BTreeMap;
use std::fmt::Write;

use nimbus_types::{InvokeOutcome, OutcomeKind};

use crate::concurrency::ThrottleReason;

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
