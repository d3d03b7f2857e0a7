//! Invocations whose response may come streamed: the function's bytes are handed on as it
//! writes them (InvokeWithResponseStream, `RESPONSE_STREAM` function URLs). A function that
//! does not stream answers whole, as with any invocation; the caller then sends that.

use std::sync::Arc;

use bytes::Bytes;
use nimbus_manager::WorkerManager;
use nimbus_types::{FunctionConfig, InvokeOutcome, InvokeRequest, ResponseStream, StreamPart};
use tokio::sync::{mpsc, oneshot};

type Outcome = Result<InvokeOutcome, nimbus_manager::Error>;

/// Pieces a streaming function may write ahead of the reader before its writes wait.
const DEPTH: usize = 16;

/// How an invocation began to answer.
pub(crate) enum Started {
    /// The function answered whole (or was refused before it ran).
    Whole(Outcome),
    /// The function streams: its content type, the pieces still to come, and the outcome
    /// once it has finished (whose `error` says whether it failed part-way).
    Streaming {
        content_type: Option<String>,
        parts: Parts,
        done: oneshot::Receiver<Outcome>,
    },
}

/// The pieces of a response, in order.
pub(crate) struct Parts {
    first: Option<Bytes>,
    rest: Option<mpsc::Receiver<StreamPart>>,
}

impl Parts {
    /// One piece, or none.
    pub(crate) fn whole(payload: Option<Bytes>) -> Self {
        Self {
            first: payload,
            rest: None,
        }
    }

    pub(crate) async fn next(&mut self) -> Option<Bytes> {
        if let Some(first) = self.first.take() {
            return Some(first);
        }
        loop {
            match self.rest.as_mut()?.recv().await? {
                StreamPart::Chunk(bytes) if !bytes.is_empty() => return Some(bytes),
                StreamPart::Chunk(_) | StreamPart::Head { .. } => {}
            }
        }
    }
}

fn lost<T>(_: T) -> Outcome {
    Err(nimbus_manager::Error::Internal(
        "the invocation was lost".into(),
    ))
}

/// Starts an invocation that may stream and waits until it either begins streaming or ends.
/// The invocation runs on by itself: a caller that goes away stops reading, not the function.
pub(crate) async fn start(
    manager: Arc<WorkerManager>,
    function: Arc<FunctionConfig>,
    mut request: InvokeRequest,
) -> Started {
    let (stream, mut rx) = ResponseStream::channel(DEPTH);
    request.stream = Some(stream);
    let (tx, mut done) = oneshot::channel();
    tokio::spawn(async move {
        let _ = tx.send(manager.invoke(&function, request).await);
    });
    let streaming = |part: StreamPart, rx, done| {
        let (content_type, first) = match part {
            StreamPart::Head { content_type } => (content_type, None),
            StreamPart::Chunk(bytes) => (None, Some(bytes)),
        };
        Started::Streaming {
            content_type,
            parts: Parts {
                first,
                rest: Some(rx),
            },
            done,
        }
    };
    tokio::select! {
        biased;
        part = rx.recv() => match part {
            Some(part) => streaming(part, rx, done),
            // Everything that could stream has let go: the answer is whole.
            None => Started::Whole(done.await.unwrap_or_else(lost)),
        },
        outcome = &mut done => {
            let outcome = outcome.unwrap_or_else(lost);
            match rx.try_recv() {
                // It streamed and finished before this task looked.
                Ok(part) => {
                    let (tx, done) = oneshot::channel();
                    let _ = tx.send(outcome);
                    streaming(part, rx, done)
                }
                Err(_) => Started::Whole(outcome),
            }
        }
    }
}
