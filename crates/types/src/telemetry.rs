//! Records kept per invocation: its log and its usage.

use serde::{Deserialize, Serialize};

use crate::invocation::OutcomeKind;

/// The log of one invocation as stored; `seq` orders entries and doubles as a cursor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogEntry {
    pub seq: u64,
    pub time_ms: i64,
    pub function: String,
    pub request_id: String,
    pub text: String,
}

/// One invocation's metering record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageRecord {
    pub time_ms: i64,
    pub function: String,
    pub version: String,
    pub request_id: String,
    pub duration_us: u64,
    pub billed_ms: u64,
    pub memory_mb: u32,
    pub gb_seconds: f64,
    pub cold: bool,
    pub init_duration_us: Option<u64>,
    pub outcome: OutcomeKind,
    /// For asynchronous invocations, the attempt number (from 1); absent for synchronous ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub async_attempt: Option<u32>,
}

/// Prices used to turn usage into cost; defaults are Lambda's published x86 prices.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Pricing {
    /// Dollars per million requests.
    pub request_per_million: f64,
    /// Dollars per GB-second of compute.
    pub gb_second: f64,
}

impl Default for Pricing {
    fn default() -> Self {
        Self {
            request_per_million: 0.20,
            gb_second: 0.000_016_666_7,
        }
    }
}

/// Usage added up over some set of invocations.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UsageTotals {
    pub invocations: u64,
    pub cold_starts: u64,
    pub errors: u64,
    pub billed_ms: u64,
    pub gb_seconds: f64,
    pub request_cost: f64,
    pub compute_cost: f64,
    pub cost: f64,
}

impl UsageTotals {
    /// Counts one invocation in.
    pub fn add(&mut self, record: &UsageRecord) {
        self.invocations += 1;
        self.cold_starts += record.cold as u64;
        self.errors += (record.outcome != OutcomeKind::Success) as u64;
        self.billed_ms += record.billed_ms;
        self.gb_seconds += record.gb_seconds;
    }

    /// Adds another set of totals (of other invocations) to these.
    pub fn merge(&mut self, other: &UsageTotals) {
        self.invocations += other.invocations;
        self.cold_starts += other.cold_starts;
        self.errors += other.errors;
        self.billed_ms += other.billed_ms;
        self.gb_seconds += other.gb_seconds;
    }

    fn price(&mut self, pricing: &Pricing) {
        self.request_cost = self.invocations as f64 * pricing.request_per_million / 1e6;
        self.compute_cost = self.gb_seconds * pricing.gb_second;
        self.cost = self.request_cost + self.compute_cost;
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionUsage {
    pub function: String,
    #[serde(flatten)]
    pub totals: UsageTotals,
}

/// A cost report: per function, in name order, and in total.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageReport {
    pub since_ms: i64,
    pub functions: Vec<FunctionUsage>,
    pub total: UsageTotals,
    pub pricing: Pricing,
}

impl UsageReport {
    pub fn build(since_ms: i64, records: &[UsageRecord], pricing: Pricing) -> Self {
        let mut by_function: std::collections::BTreeMap<String, UsageTotals> = Default::default();
        for record in records {
            match by_function.get_mut(record.function.as_str()) {
                Some(t) => t.add(record),
                None => {
                    let mut t = UsageTotals::default();
                    t.add(record);
                    by_function.insert(record.function.clone(), t);
                }
            }
        }
        Self::from_totals(since_ms, by_function, pricing)
    }

    /// A report from totals already added up per function.
    pub fn from_totals(
        since_ms: i64,
        by_function: std::collections::BTreeMap<String, UsageTotals>,
        pricing: Pricing,
    ) -> Self {
        let mut total = UsageTotals::default();
        for totals in by_function.values() {
            total.merge(totals);
        }
        total.price(&pricing);
        let functions = by_function
            .into_iter()
            .map(|(function, mut totals)| {
                totals.price(&pricing);
                FunctionUsage { function, totals }
            })
            .collect();
        Self {
            since_ms,
            functions,
            total,
            pricing,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(function: &str, billed_ms: u64, memory_mb: u32, outcome: OutcomeKind) -> UsageRecord {
        UsageRecord {
            time_ms: 0,
            function: function.to_owned(),
            version: "$LATEST".to_owned(),
            request_id: String::new(),
            duration_us: billed_ms * 1000,
            billed_ms,
            memory_mb,
            gb_seconds: crate::invocation::gb_seconds(memory_mb, billed_ms),
            cold: false,
            init_duration_us: None,
            outcome,
            async_attempt: None,
        }
    }

    #[test]
    fn report_prices_each_function_and_the_total() {
        let records = [
            record("b", 1000, 1024, OutcomeKind::Success),
            record("a", 500, 2048, OutcomeKind::Error),
            record("b", 1000, 1024, OutcomeKind::Success),
        ];
        let report = UsageReport::build(0, &records, Pricing::default());
        assert_eq!(report.functions[0].function, "a");
        assert_eq!(report.functions[1].totals.invocations, 2);
        assert_eq!(report.functions[0].totals.errors, 1);
        assert!((report.total.gb_seconds - 3.0).abs() < 1e-9);
        let expected = 3.0 * 0.2 / 1e6 + 3.0 * 0.000_016_666_7;
        assert!((report.total.cost - expected).abs() < 1e-12);
    }
}
