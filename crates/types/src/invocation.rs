//! What the Worker Manager asks of a worker, and what comes back.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// One synchronous invocation of a function.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InvokeRequest {
    pub request_id: String,
    /// The event, already checked to be JSON and within the payload limit.
    pub payload: Bytes,
    /// The caller's client context (`X-Amz-Client-Context`), decoded JSON text.
    #[serde(default)]
    pub client_context: Option<String>,
    /// Set for an asynchronous invocation: which attempt this is, from 1.
    #[serde(default)]
    pub async_attempt: Option<u32>,
    /// Set when a front door hands a function that serves HTTP itself (`wasi-http`) the
    /// request as it came, instead of an event; `payload` is then empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<crate::http::HttpCall>,
    /// Set when the caller takes the response as the function writes it (a response-streaming
    /// invocation or URL). A function that streams sends its bytes here instead of into the
    /// outcome's payload. In-process only: a worker reached over the network answers whole.
    #[serde(skip)]
    pub stream: Option<ResponseStream>,
    /// The qualifier (version or alias) the caller named, which the function's context shows
    /// in its invoked ARN; `None` for the unqualified name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qualifier: Option<String>,
}

/// Where a streaming function's response goes as it is written: first a [`StreamPart::Head`],
/// then its chunks. The receiver ends when the invocation does; the outcome then says whether
/// the function failed part-way.
#[derive(Debug, Clone)]
pub struct ResponseStream(pub tokio::sync::mpsc::Sender<StreamPart>);

/// One piece of a streamed response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamPart {
    /// The function began a streamed response, of this content type.
    Head {
        content_type: Option<String>,
    },
    Chunk(Bytes),
}

impl ResponseStream {
    /// A stream and its receiving end; `depth` chunks may wait unread before the function's
    /// writes wait for the reader.
    pub fn channel(depth: usize) -> (Self, tokio::sync::mpsc::Receiver<StreamPart>) {
        let (tx, rx) = tokio::sync::mpsc::channel(depth);
        (Self(tx), rx)
    }
}

/// Why a sandbox is created: for an invocation waiting on it, or ahead of time for provisioned
/// concurrency (Lambda's `AWS_LAMBDA_INITIALIZATION_TYPE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InitType {
    OnDemand,
    ProvisionedConcurrency,
}

impl InitType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OnDemand => "on-demand",
            Self::ProvisionedConcurrency => "provisioned-concurrency",
        }
    }
}

/// Lambda's error object as a function error reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionError {
    #[serde(rename = "errorType")]
    pub error_type: String,
    #[serde(rename = "errorMessage")]
    pub error_message: String,
}

impl FunctionError {
    pub fn new(error_type: impl Into<String>, error_message: impl Into<String>) -> Self {
        Self {
            error_type: error_type.into(),
            error_message: error_message.into(),
        }
    }

    pub fn to_json(&self) -> Bytes {
        // Serialising two strings cannot fail.
        Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }
}

/// How an invocation ended, for the usage record and the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeKind {
    Success,
    Error,
    Timeout,
    OutOfMemory,
}

/// The result of one invocation, with everything measured about it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InvokeOutcome {
    pub request_id: String,
    pub kind: OutcomeKind,
    /// Set when the function failed; `payload` then holds its JSON.
    pub error: Option<FunctionError>,
    /// The response body: the function's result, or the error JSON.
    pub payload: Bytes,
    /// The invocation's log: START, the function's own output, END and REPORT.
    pub log: String,
    pub duration_us: u64,
    pub billed_ms: u64,
    /// Set on a cold start: how long the sandbox took to initialise.
    pub init_duration_us: Option<u64>,
    pub memory_mb: u32,
    pub max_memory_used_mb: u32,
    /// Whether the sandbox can serve another invocation; a crashed, timed-out or killed
    /// process sandbox cannot.
    #[serde(default = "yes")]
    pub reusable: bool,
    /// The function's HTTP answer, when the request came as [`InvokeRequest::http`] and the
    /// function answered; `payload` is then empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<crate::http::HttpReply>,
}

fn yes() -> bool {
    true
}

/// Lambda bills in 1 ms steps, rounding up, with a minimum of 1 ms.
pub fn billed_ms(duration_us: u64) -> u64 {
    duration_us.div_ceil(1000).max(1)
}

/// GB-seconds for one invocation, the unit Lambda's compute price is quoted in.
pub fn gb_seconds(memory_mb: u32, billed_ms: u64) -> f64 {
    (memory_mb as f64 / 1024.0) * (billed_ms as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn billing_rounds_up_to_whole_milliseconds() {
        assert_eq!(billed_ms(0), 1);
        assert_eq!(billed_ms(1), 1);
        assert_eq!(billed_ms(1000), 1);
        assert_eq!(billed_ms(1001), 2);
        assert!((gb_seconds(1024, 1000) - 1.0).abs() < 1e-12);
        assert!((gb_seconds(128, 1) - 0.000_125).abs() < 1e-15);
    }
}
