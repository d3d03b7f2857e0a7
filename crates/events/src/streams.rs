//! Event source mappings from DynamoDB streams: each mapping reads its stream in order from
//! its checkpoint, invokes the function with a batch of records (`{"Records": […]}` in
//! DynamoDB Streams' shape), and moves its checkpoint past what succeeded. A failed batch is
//! retried, halved each time with `BisectBatchOnFunctionError`, until `MaximumRetryAttempts`
//! (or the records' `MaximumRecordAgeInSeconds`) runs out; then it is described to the
//! on-failure destination and skipped. With `ReportBatchItemFailures`, the checkpoint moves to
//! just before the first record the function names as failed. Records of one item are in one
//! shard, so they reach the function in the order they were written.

use std::sync::Arc;
use std::time::{Duration, Instant};

use nimbus_tables::{StreamState, TableRecord};
use nimbus_types::queue::EventSourceMapping;
use serde_json::{Value, json};

use crate::esm::EventSources;

/// The most batches a stream mapping runs before it hands its turn back to the poll loop.
const MAX_BATCHES_IN_A_ROW: usize = 1000;

/// How long a stream mapping's read waits for a first record.
const FIRST_READ_WAIT: Duration = Duration::from_secs(1);

/// A stream mapping's failed attempts at its current batch.
#[derive(Debug, Clone)]
pub(crate) struct Retry {
    attempts: u32,
    /// The batch size to try next (halved by bisection).
    limit: usize,
    /// Not before then.
    next: Instant,
}

impl EventSources {
    /// The table and stream a stream ARN names, among `account`'s.
    pub(crate) fn stream_of(
        &self,
        account: &str,
        arn: &str,
    ) -> Option<(Arc<TableRecord>, StreamState)> {
        let prefix = format!("arn:aws:dynamodb:{}:{account}:table/", self.tables.region());
        let (table, label) = arn.strip_prefix(&prefix)?.split_once("/stream/")?;
        let record = self.tables.table(account, table).ok()?;
        let stream = record.streams.iter().find(|s| s.label == label)?.clone();
        Some((record, stream))
    }

    /// Runs a stream mapping's batches for as long as records keep coming, so that a record
    /// written right after a batch does not wait for the next poll; returns when the stream has
    /// been idle for a while, or a batch failed (its retry waits for its backoff).
    pub(crate) async fn run_stream_batch(&self, mapping: &EventSourceMapping) {
        for _ in 0..MAX_BATCHES_IN_A_ROW {
            let Ok(current) = self.get(&mapping.account, &mapping.uuid) else {
                return;
            };
            if !current.enabled || !self.stream_batch(&current).await {
                return;
            }
        }
    }

    /// Runs one batch of a stream mapping; whether it handled records and may go on.
    async fn stream_batch(&self, mapping: &EventSourceMapping) -> bool {
        let Some(source) = &mapping.stream else {
            return false;
        };
        let Some((_, stream)) = self.stream_of(&mapping.account, &mapping.event_source_arn) else {
            return false;
        };
        let Some(function) = self.control.invocation_target(&mapping.function) else {
            return false;
        };
        let retry = self
            .retries
            .lock()
            .ok()
            .and_then(|r| r.get(&mapping.uuid).cloned());
        if let Some(r) = &retry
            && Instant::now() < r.next
        {
            tokio::time::sleep(r.next - Instant::now()).await;
        }
        let limit = retry
            .as_ref()
            .map_or(mapping.batch_size as usize, |r| r.limit)
            .max(1);
        // Wait for a first record (woken by the commit that writes one), then for the
        // batching window to fill the batch.
        let woken = self.tables.streamed();
        tokio::pin!(woken);
        woken.as_mut().enable();
        let mut batch = match self
            .tables
            .stream_records(stream.id, source.checkpoint, limit)
        {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(mapping = %mapping.uuid, error = %e, "stream read failed");
                return false;
            }
        };
        if batch.is_empty() {
            tokio::select! {
                _ = woken => {}
                _ = tokio::time::sleep(FIRST_READ_WAIT) => return false,
            }
            batch = self
                .tables
                .stream_records(stream.id, source.checkpoint, limit)
                .unwrap_or_default();
            if batch.is_empty() {
                return false;
            }
        }
        let window = Duration::from_secs(u64::from(mapping.max_batching_window_s));
        if batch.len() < limit && !window.is_zero() {
            tokio::time::sleep(window).await;
            batch = self
                .tables
                .stream_records(stream.id, source.checkpoint, limit)
                .unwrap_or(batch);
        }
        // A mapping disabled or deleted meanwhile runs nothing more.
        let Ok(current) = self.get(&mapping.account, &mapping.uuid) else {
            return false;
        };
        if !current.enabled {
            return false;
        }
        let first = batch.first().map_or(0, |(s, _)| *s);
        let last = batch.last().map_or(0, |(s, _)| *s);
        // Records past their maximum age are skipped (and reported as a failure would be).
        let now_ms = nimbus_types::time::now_ms();
        if source.maximum_record_age_s >= 0 {
            let oldest = batch
                .first()
                .and_then(|(_, r)| r.get("createdMs").and_then(Value::as_i64))
                .unwrap_or(now_ms);
            if now_ms - oldest > source.maximum_record_age_s * 1000 {
                self.give_up(&current, &stream, &batch, 0, "RecordAgeExceeded")
                    .await;
                self.checkpoint(&current, last);
                return true;
            }
        }
        let region = self.tables.region().to_owned();
        let records: Vec<Value> = batch
            .iter()
            .map(|(_, r)| {
                let mut r = r.clone();
                if let Some(m) = r.as_object_mut() {
                    m.remove("createdMs");
                    // Lambda's records spell the identity's members in lower camel case.
                    if let Some(who) = m.get("userIdentity").cloned() {
                        m.insert(
                            "userIdentity".into(),
                            json!({ "type": who["Type"], "principalId": who["PrincipalId"] }),
                        );
                    }
                    m.insert("awsRegion".into(), json!(region));
                    m.insert("eventSourceARN".into(), json!(mapping.event_source_arn));
                }
                r
            })
            .collect();
        let outcome = self
            .invoke_records(&function, &mapping.function, records)
            .await;
        let (succeeded, failed_at) = match &outcome {
            Ok(o) if o.error.is_none() => {
                let failed = if mapping.report_batch_item_failures {
                    first_failure(&o.payload, first, last)
                } else {
                    None
                };
                (failed.is_none(), failed)
            }
            Ok(_) => (false, None),
            Err(e) => {
                tracing::warn!(mapping = %mapping.uuid, error = %e, "stream batch could not run");
                (false, None)
            }
        };
        if succeeded {
            self.checkpoint(&current, last);
            if let Ok(mut r) = self.retries.lock() {
                r.remove(&mapping.uuid);
            }
            return true;
        }
        // What came before the first failed record is done.
        if let Some(f) = failed_at
            && f > first
        {
            self.checkpoint(&current, f - 1);
        }
        let attempts = retry.as_ref().map_or(0, |r| r.attempts) + 1;
        if source.maximum_retry_attempts >= 0 && i64::from(attempts) > source.maximum_retry_attempts
        {
            let from = failed_at.unwrap_or(first);
            let rest: Vec<(u64, Value)> = batch.into_iter().filter(|(s, _)| *s >= from).collect();
            self.give_up(&current, &stream, &rest, attempts, "RetryAttemptsExhausted")
                .await;
            self.checkpoint(&current, last);
            if let Ok(mut r) = self.retries.lock() {
                r.remove(&mapping.uuid);
            }
            return true;
        }
        let size = batch.len();
        let limit = if source.bisect_batch_on_function_error && failed_at.is_none() {
            (size / 2).max(1)
        } else {
            limit
        };
        let backoff = Duration::from_millis((100u64 << attempts.min(6)).min(5_000));
        if let Ok(mut r) = self.retries.lock() {
            r.insert(
                mapping.uuid.clone(),
                Retry {
                    attempts,
                    limit,
                    next: Instant::now() + backoff,
                },
            );
        }
        false
    }

    /// Moves a mapping's checkpoint to `seq` and keeps it.
    fn checkpoint(&self, mapping: &EventSourceMapping, seq: u64) {
        let Ok(mut m) = self.get(&mapping.account, &mapping.uuid) else {
            return;
        };
        if let Some(s) = &mut m.stream
            && seq > s.checkpoint
        {
            s.checkpoint = seq;
            if let Err(e) = self.save(m) {
                tracing::error!(mapping = %mapping.uuid, error = %e, "could not keep a stream checkpoint");
            }
        }
    }

    /// Describes a skipped batch to the mapping's on-failure destination, if it has one.
    async fn give_up(
        &self,
        mapping: &EventSourceMapping,
        stream: &StreamState,
        batch: &[(u64, Value)],
        attempts: u32,
        condition: &str,
    ) {
        tracing::warn!(mapping = %mapping.uuid, records = batch.len(), condition, "a stream batch is skipped");
        let Some(target) = mapping.stream.as_ref().and_then(|s| s.on_failure.clone()) else {
            return;
        };
        let Ok(queue) = self.queues.queue_by_arn(&target) else {
            return;
        };
        let arrival = |r: Option<&(u64, Value)>| {
            r.and_then(|(_, r)| r.get("createdMs").and_then(Value::as_i64))
                .map_or_else(String::new, |ms| {
                    format!("{}Z", nimbus_types::time::iso8601_millis_local(ms))
                })
        };
        let record = json!({
            "requestContext": {
                "requestId": uuid::Uuid::new_v4().to_string(),
                "functionArn": self.control.arn(&mapping.function),
                "condition": condition,
                "approximateInvokeCount": attempts,
            },
            "responseContext": {
                "statusCode": 200,
                "executedVersion": "$LATEST",
                "functionError": "Unhandled",
            },
            "version": "1.0",
            "timestamp": format!("{}Z", nimbus_types::time::iso8601_millis_local(nimbus_types::time::now_ms())),
            "DDBStreamBatchInfo": {
                "shardId": format!("shardId-{:020}-{:08x}", stream.created_ms, stream.id),
                "startSequenceNumber": format!("{:021}", batch.first().map_or(0, |(s, _)| *s)),
                "endSequenceNumber": format!("{:021}", batch.last().map_or(0, |(s, _)| *s)),
                "approximateArrivalOfFirstRecord": arrival(batch.first()),
                "approximateArrivalOfLastRecord": arrival(batch.last()),
                "batchSize": batch.len(),
                "streamArn": mapping.event_source_arn,
            },
        });
        if let Err(e) = self
            .queues
            .send(&queue, record.to_string(), None, Default::default())
            .await
        {
            tracing::error!(mapping = %mapping.uuid, error = %nimbus_types::error_chain(&e), "could not send to the on-failure destination");
        }
    }
}

/// The first record a function's `{"batchItemFailures": […]}` names (by sequence number)
/// within the batch [`first`, `last`]; a name outside it fails the whole batch.
fn first_failure(payload: &[u8], first: u64, last: u64) -> Option<u64> {
    let v: Value = serde_json::from_slice(payload).ok()?;
    let failures = v.get("batchItemFailures")?.as_array()?;
    failures
        .iter()
        .map(|f| {
            f.get("itemIdentifier")
                .and_then(Value::as_str)
                .and_then(|s| s.parse::<u64>().ok())
                .filter(|s| (first..=last).contains(s))
                .unwrap_or(first)
        })
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_failed_record_bounds_what_is_done() {
        let p = br#"{"batchItemFailures":[{"itemIdentifier":"000000000000000000012"},{"itemIdentifier":"11"}]}"#;
        assert_eq!(first_failure(p, 10, 20), Some(11));
        assert_eq!(first_failure(br#"{"batchItemFailures":[]}"#, 10, 20), None);
        // An identifier that is not in the batch fails all of it.
        assert_eq!(
            first_failure(
                br#"{"batchItemFailures":[{"itemIdentifier":"99"}]}"#,
                10,
                20
            ),
            Some(10)
        );
        assert_eq!(first_failure(b"null", 10, 20), None);
    }
}
