//! Bucket notifications on their way out: the targets a configuration may name (a function or
//! a queue of the bucket's own account that exists), and the dispatcher that takes what the
//! object store left in its outbox and hands each record to its target through the same durable
//! paths as everything else, an asynchronous invocation or a queue message, removing it from
//! the outbox only once the target has it on disk.

use std::sync::Arc;
use std::time::Duration;

use nimbus_control::ControlPlane;
use nimbus_objects::{Objects, Target};
use nimbus_queue::sqs::SqsQueues;
use nimbus_types::arn::{FunctionArn, QueueArn};

use crate::{AsyncInvoker, DeliveryError};

/// Checks notification targets against the function registry and the queues.
pub struct NotificationTargets {
    pub control: Arc<ControlPlane>,
    pub queues: Arc<SqsQueues>,
}

impl nimbus_objects::Targets for NotificationTargets {
    fn check(&self, owner: &str, target: &Target) -> Result<(), String> {
        match target {
            Target::Function(arn) => {
                let f = FunctionArn::parse(arn).map_err(|e| e.to_string())?;
                if f.account != owner {
                    return Err("the function belongs to another account".into());
                }
                self.control
                    .invocation_target(&f.target())
                    .map(|_| ())
                    .ok_or_else(|| "the function does not exist".into())
            }
            Target::Queue(arn) => {
                let q = QueueArn::parse(arn).map_err(|e| e.to_string())?;
                if q.account != owner {
                    return Err("the queue belongs to another account".into());
                }
                self.queues
                    .queue_by_arn(arn)
                    .map(|_| ())
                    .map_err(|_| "the queue does not exist".into())
            }
        }
    }
}

/// Records handed over per round.
const BATCH: usize = 256;

/// Hands the outbox's records to their targets until `shutdown` resolves.
pub async fn dispatch(
    objects: Arc<Objects>,
    invoker: Arc<AsyncInvoker>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let pending = match objects.outbox(BATCH) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "could not read the notification outbox");
                Vec::new()
            }
        };
        let mut delivered = Vec::with_capacity(pending.len());
        let mut stalled = false;
        for (number, notification) in &pending {
            match invoker
                .deliver(
                    notification.target.arn(),
                    notification.body.clone().into_bytes(),
                )
                .await
            {
                Ok(()) => delivered.push(*number),
                Err(DeliveryError::Unsupported(e)) => {
                    // Nothing will ever take it: dropped, as S3 drops events for a target
                    // that went away.
                    tracing::warn!(target = notification.target.arn(), error = %e, "dropped a bucket notification");
                    delivered.push(*number);
                }
                Err(DeliveryError::Storage(e)) => {
                    tracing::error!(target = notification.target.arn(), error = %e, "could not deliver a bucket notification; trying again");
                    stalled = true;
                    break;
                }
            }
        }
        let more = pending.len() == BATCH;
        if !delivered.is_empty()
            && let Err(e) = objects.delivered(delivered).await
        {
            tracing::error!(error = %e, "could not clear delivered notifications");
            stalled = true;
        }
        if more && !stalled {
            continue;
        }
        let wait = if stalled {
            Duration::from_secs(1)
        } else {
            Duration::from_secs(30)
        };
        tokio::select! {
            _ = objects.outbox_filled(), if !stalled => {}
            _ = tokio::time::sleep(wait) => {}
            _ = &mut shutdown => return,
        }
    }
}
