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
use crate::{FunctionPath, QualifierQuery, Shared, read_body, resolve};

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

pub(crate) async fn invoke(
    State(f): State<Shared>,
    name: FunctionPath,
    Query(q): Query<QualifierQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let invocation_type = match header(&headers, "x-amz-invocation-type")? {
        None | Some("RequestResponse") => InvocationType::RequestResponse,
        Some("DryRun") => InvocationType::DryRun,
        Some("Event") => InvocationType::Event,
        Some(other) => {
            return Err(nimbus_types::InvalidParameter::constraint(
                "invocationType",
                Some(&other),
                "Member must satisfy enum value set: [Event, RequestResponse, DryRun]",
            )
            .into());
        }
    };
    let tail = match header(&headers, "x-amz-log-type")? {
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
    if let Some(context) = header(&headers, "x-amz-client-context")? {
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

    let function = resolve(&f, &name, q.qualifier.as_deref())?;
    let limit = match invocation_type {
        InvocationType::Event => MAX_ASYNC_PAYLOAD_BYTES,
        _ => MAX_SYNC_PAYLOAD_BYTES,
    };
    let payload = read_body(&headers, body, limit, "InvokeFunction").await?;
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
    if let InvocationType::DryRun = invocation_type {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }

    let request_id = uuid::Uuid::new_v4().to_string();
    if let InvocationType::Event = invocation_type {
        // 202 only once the event is on disk.
        // A published version travels as `name:N`.
        let target = if function.version == nimbus_types::name::LATEST {
            function.key()
        } else {
            function.qualified_name()
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
