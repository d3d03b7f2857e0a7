//! Lambda's Invoke API: `POST /2015-03-31/functions/{name}/invocations`.

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use bytes::Bytes;
use nimbus_types::InvokeRequest;
use nimbus_types::limits::{LOG_TAIL_BYTES, MAX_SYNC_PAYLOAD_BYTES};

use crate::error::ApiError;
use crate::{FunctionPath, QualifierQuery, Shared, read_body, resolve_invocation};

/// Lambda's limit on the `X-Amz-Client-Context` header, base64-encoded.
const MAX_CLIENT_CONTEXT_BYTES: usize = 3583;

enum InvocationType {
    RequestResponse,
    Event,
    DryRun,
}

/// Largest payload of an asynchronous invocation.
const MAX_ASYNC_PAYLOAD_BYTES: usize = 1024 * 1024;

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, ApiError> {
    headers
        .get(name)
        .map(|v| {
            v.to_str().map_err(|_| {
                ApiError::invalid_parameter(format!("header {name} is not valid text"))
            })
        })
        .transpose()
}

/// The last `LOG_TAIL_BYTES` of a log, cut at a character boundary.
fn log_tail(log: &str) -> &str {
    let mut start = log.len().saturating_sub(LOG_TAIL_BYTES);
    while !log.is_char_boundary(start) {
        start += 1;
    }
    &log[start..]
}

/// What an Invoke or InvokeWithResponseStream request asks for, checked.
struct Call {
    invocation_type: InvocationType,
    tail: bool,
    client_context: Option<String>,
    function: std::sync::Arc<nimbus_types::FunctionConfig>,
    /// The qualifier the caller named, if any.
    qualifier: Option<nimbus_types::Qualifier>,
    payload: Bytes,
}

/// Reads and checks an invocation request; `streaming` for InvokeWithResponseStream, which
/// has no `Event` type.
async fn parse_call(
    f: &Shared,
    name: &FunctionPath,
    qualifier: Option<&str>,
    headers: &HeaderMap,
    body: Body,
    streaming: bool,
) -> Result<Call, ApiError> {
    let invocation_type = match header(headers, "x-amz-invocation-type")? {
        None | Some("RequestResponse") => InvocationType::RequestResponse,
        Some("DryRun") => InvocationType::DryRun,
        Some("Event") if !streaming => InvocationType::Event,
        Some(other) => {
            let allowed = if streaming {
                "[RequestResponse, DryRun]"
            } else {
                "[Event, RequestResponse, DryRun]"
            };
            return Err(nimbus_types::InvalidParameter::constraint(
                "invocationType",
                Some(&other),
                format!("Member must satisfy enum value set: {allowed}"),
            )
            .into());
        }
    };
    let tail = match header(headers, "x-amz-log-type")? {
        None | Some("None") => false,
        Some("Tail") => true,
        Some(other) => {
            return Err(nimbus_types::InvalidParameter::constraint(
                "logType",
                Some(&other),
                "Member must satisfy enum value set: [None, Tail]",
            )
            .into());
        }
    };
    let mut client_context = None;
    if let Some(context) = header(headers, "x-amz-client-context")? {
        if context.len() > MAX_CLIENT_CONTEXT_BYTES {
            return Err(ApiError::too_large(format!(
                "Client context must be at most {MAX_CLIENT_CONTEXT_BYTES} bytes"
            )));
        }
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(context)
            .map_err(|_| ApiError::bad_content("Client context must be base64-encoded JSON"))?;
        serde_json::from_slice::<serde::de::IgnoredAny>(&decoded)
            .map_err(|_| ApiError::bad_content("Client context must be base64-encoded JSON"))?;
        client_context = String::from_utf8(decoded).ok();
    }

    let function = resolve_invocation(f, name, qualifier)?;
    let (_, qualifier) = crate::qualified(name, qualifier)?;
    let limit = match invocation_type {
        InvocationType::Event => MAX_ASYNC_PAYLOAD_BYTES,
        _ => MAX_SYNC_PAYLOAD_BYTES,
    };
    let payload = read_body(headers, body, limit, "InvokeFunction").await?;
    let payload = if payload.iter().all(u8::is_ascii_whitespace) {
        Bytes::from_static(b"{}")
    } else {
        if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&payload) {
            return Err(ApiError::bad_content(format!(
                "Could not parse request body into json: {e}"
            )));
        }
        payload
    };
    Ok(Call {
        invocation_type,
        tail,
        client_context,
        function,
        qualifier,
        payload,
    })
}

pub(crate) async fn invoke(
    State(f): State<Shared>,
    name: FunctionPath,
    Query(q): Query<QualifierQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let Call {
        invocation_type,
        tail,
        client_context,
        function,
        qualifier,
        payload,
    } = parse_call(&f, &name, q.qualifier.as_deref(), &headers, body, false).await?;
    if let InvocationType::DryRun = invocation_type {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }

    let request_id = uuid::Uuid::new_v4().to_string();
    if let InvocationType::Event = invocation_type {
        // 202 only once the event is on disk.
        // A published version travels as `name:N`, an alias as `name:alias` (followed when
        // the event runs).
        let target = match &qualifier {
            Some(nimbus_types::Qualifier::Other(q)) if q.parse::<u32>().is_err() => {
                format!("{}:{q}", function.key())
            }
            _ if function.version == nimbus_types::name::LATEST => function.key(),
            _ => function.qualified_name(),
        };
        f.events.submit(&target, &request_id, payload).await?;
        let mut response = StatusCode::ACCEPTED.into_response();
        if let Ok(v) = HeaderValue::from_str(&request_id) {
            response.headers_mut().insert("x-amzn-RequestId", v);
        }
        return Ok(response);
    }
    let outcome = f
        .manager
        .invoke(
            &function,
            InvokeRequest {
                request_id: request_id.clone(),
                payload,
                client_context,
                async_attempt: None,
                http: None,
                stream: None,
                qualifier: qualifier.map(|q| q.as_str().to_owned()),
            },
        )
        .await?;

    let mut response = Response::new(Body::from(outcome.payload));
    let h = response.headers_mut();
    h.insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        h.insert("x-amzn-RequestId", v);
    }
    if let Ok(v) = HeaderValue::from_str(&function.version) {
        h.insert("X-Amz-Executed-Version", v);
    }
    if outcome.error.is_some() {
        h.insert(
            "X-Amz-Function-Error",
            HeaderValue::from_static("Unhandled"),
        );
    }
    if tail {
        let encoded = base64::engine::general_purpose::STANDARD.encode(log_tail(&outcome.log));
        if let Ok(v) = HeaderValue::from_str(&encoded) {
            h.insert("X-Amz-Log-Result", v);
        }
    }
    Ok(response)
}

/// InvokeWithResponseStream: the function's response as AWS's event stream, a `PayloadChunk`
/// per piece as the function writes it (one with the whole payload for a function that does
/// not stream), then `InvokeComplete` with the error, if any, and the log's tail.
pub(crate) async fn invoke_streaming(
    State(f): State<Shared>,
    name: FunctionPath,
    Query(q): Query<QualifierQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let call = parse_call(&f, &name, q.qualifier.as_deref(), &headers, body, true).await?;
    if let InvocationType::DryRun = call.invocation_type {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let request_id = uuid::Uuid::new_v4().to_string();
    let request = InvokeRequest {
        request_id: request_id.clone(),
        payload: call.payload,
        client_context: call.client_context,
        async_attempt: None,
        http: None,
        stream: None,
        qualifier: call.qualifier.map(|q| q.as_str().to_owned()),
    };
    let started = crate::stream::start(f.manager.clone(), call.function.clone(), request).await;
    let (content_type, parts, done) = match started {
        // Refusals before the function ran (throttles, capacity) are the API's errors.
        crate::stream::Started::Whole(Err(e)) => return Err(e.into()),
        crate::stream::Started::Whole(Ok(outcome)) => {
            let (tx, done) = tokio::sync::oneshot::channel();
            // A failure is told in InvokeComplete alone.
            let whole = (!outcome.payload.is_empty() && outcome.error.is_none())
                .then(|| outcome.payload.clone());
            let _ = tx.send(Ok(outcome));
            (None, crate::stream::Parts::whole(whole), done)
        }
        crate::stream::Started::Streaming {
            content_type,
            parts,
            done,
        } => (content_type, parts, done),
    };
    let tail = call.tail;
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    tokio::spawn(async move {
        let mut parts = parts;
        while let Some(chunk) = parts.next().await {
            let event = nimbus_aws_wire::eventstream::event(
                "PayloadChunk",
                "application/octet-stream",
                &chunk,
            );
            if tx.send(event).await.is_err() {
                return;
            }
        }
        let mut complete = serde_json::Map::new();
        match done.await {
            Ok(Ok(outcome)) => {
                if let Some(error) = &outcome.error {
                    complete.insert("ErrorCode".into(), error.error_type.clone().into());
                    complete.insert(
                        "ErrorDetails".into(),
                        String::from_utf8_lossy(&outcome.payload)
                            .into_owned()
                            .into(),
                    );
                }
                if tail {
                    let encoded =
                        base64::engine::general_purpose::STANDARD.encode(log_tail(&outcome.log));
                    complete.insert("LogResult".into(), encoded.into());
                }
            }
            Ok(Err(e)) => {
                complete.insert("ErrorCode".into(), "ServiceException".into());
                complete.insert("ErrorDetails".into(), e.to_string().into());
            }
            Err(_) => {
                complete.insert("ErrorCode".into(), "ServiceException".into());
                complete.insert("ErrorDetails".into(), "the invocation was lost".into());
            }
        }
        let body = serde_json::to_vec(&complete).unwrap_or_default();
        let _ = tx
            .send(nimbus_aws_wire::eventstream::event(
                "InvokeComplete",
                "application/json",
                &body,
            ))
            .await;
    });
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, std::convert::Infallible>(b), rx))
    });
    let mut response = Response::new(Body::from_stream(body));
    let h = response.headers_mut();
    let content_type = content_type.unwrap_or_else(|| "application/octet-stream".to_owned());
    if let Ok(v) = HeaderValue::from_str(&content_type) {
        h.insert(axum::http::header::CONTENT_TYPE, v);
    }
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        h.insert("x-amzn-RequestId", v);
    }
    if let Ok(v) = HeaderValue::from_str(&call.function.version) {
        h.insert("X-Amz-Executed-Version", v);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    #[test]
    fn log_tail_keeps_the_end_on_a_char_boundary() {
        let log = format!(
            "{}é{}",
            "a".repeat(10),
            "b".repeat(super::LOG_TAIL_BYTES - 1)
        );
        let tail = super::log_tail(&log);
        assert!(tail.len() <= super::LOG_TAIL_BYTES);
        assert!(tail.ends_with('b'));
        assert_eq!(super::log_tail("short"), "short");
    }
}
