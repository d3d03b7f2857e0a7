//! Lambda's START/END/REPORT framing of an invocation's log.

use std::fmt::Write;

pub(crate) struct Report<'a> {
    pub request_id: &'a str,
    pub version: &'a str,
    pub duration_us: u64,
    pub billed_ms: u64,
    pub memory_mb: u32,
    pub max_memory_used_mb: u32,
    pub init_duration_us: Option<u64>,
    /// The sandbox started from a snapshot: its init is reported as a restore.
    pub restored: bool,
}

fn ms(us: u64) -> String {
    format!("{}.{:02}", us / 1000, (us % 1000) / 10)
}

/// Builds the whole log of one invocation around the function's own output.
pub(crate) fn frame(
    report: &Report<'_>,
    function_output: &[u8],
    extra_line: Option<&str>,
) -> String {
    let output = String::from_utf8_lossy(function_output);
    let mut log = String::with_capacity(output.len() + 256);
    let _ = writeln!(
        log,
        "START RequestId: {} Version: {}",
        report.request_id, report.version
    );
    log.push_str(&output);
    if !output.is_empty() && !output.ends_with('\n') {
        log.push('\n');
    }
    if let Some(line) = extra_line {
        log.push_str(line);
        log.push('\n');
    }
    let _ = writeln!(log, "END RequestId: {}", report.request_id);
    let _ = write!(
        log,
        "REPORT RequestId: {}\tDuration: {} ms\tBilled Duration: {} ms\tMemory Size: {} MB\tMax Memory Used: {} MB",
        report.request_id,
        ms(report.duration_us),
        report.billed_ms,
        report.memory_mb,
        report.max_memory_used_mb
    );
    match report.init_duration_us {
        Some(restore) if report.restored => {
            let _ = write!(
                log,
                "\tRestore Duration: {} ms\tBilled Restore Duration: {} ms",
                ms(restore),
                nimbus_types::invocation::billed_ms(restore)
            );
        }
        Some(init) => {
            let _ = write!(log, "\tInit Duration: {} ms", ms(init));
        }
        None => {}
    }
    log.push_str("\t\n");
    log
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_like_lambda() {
        let report = Report {
            request_id: "abc",
            version: "$LATEST",
            duration_us: 1234,
            billed_ms: 2,
            memory_mb: 128,
            max_memory_used_mb: 2,
            init_duration_us: Some(5007),
            restored: false,
        };
        let log = frame(&report, b"hello", None);
        assert_eq!(
            log,
            "START RequestId: abc Version: $LATEST\nhello\nEND RequestId: abc\nREPORT RequestId: abc\t\
             Duration: 1.23 ms\tBilled Duration: 2 ms\tMemory Size: 128 MB\tMax Memory Used: 2 MB\t\
             Init Duration: 5.00 ms\t\n"
        );
    }
}
