//! The three error shapes of the AWS protocols nimbus speaks.

use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::target::JsonVersion;
use crate::xml::Writer;

/// rest-json as Lambda speaks it: the code in `X-Amzn-ErrorType`, a `{"Type","Message"}`
/// body, with any further fields (`Reason`, …) beside them.
pub fn rest_json(
    status: StatusCode,
    code: &'static str,
    message: &str,
    extra: &[(&str, Value)],
) -> Response {
    let mut body = json!({ "Type": "User", "Message": message });
    for (k, v) in extra {
        body[*k] = v.clone();
    }
    let mut response = (status, axum::Json(body)).into_response();
    response
        .headers_mut()
        .insert("x-amzn-errortype", HeaderValue::from_static(code));
    response
}

/// JSON 1.0/1.1 (SQS, EventBridge, DynamoDB, Cognito): `{"__type","message"}`, the type
/// qualified with the service's namespace if it has one (`com.amazonaws.sqs#QueueDoesNotExist`),
/// and any headers the protocol adds (SQS's `x-amzn-query-error`).
pub fn json(
    version: JsonVersion,
    status: StatusCode,
    error_type: &str,
    message: &str,
    headers: &[(HeaderName, String)],
) -> Response {
    let body = json!({ "__type": error_type, "message": message });
    let mut response = (status, version.content_type(), body.to_string()).into_response();
    for (name, value) in headers {
        if let Ok(v) = HeaderValue::from_str(value) {
            response.headers_mut().insert(name.clone(), v);
        }
    }
    response
}

/// rest-xml (S3): `<Error><Code/><Message/><Resource/><RequestId/></Error>`.
pub fn rest_xml(
    status: StatusCode,
    code: &str,
    message: &str,
    resource: Option<&str>,
    request_id: &str,
) -> Response {
    let mut w = Writer::new();
    w.open("Error");
    w.element("Code", code);
    w.element("Message", message);
    if let Some(r) = resource {
        w.element("Resource", r);
    }
    w.element("RequestId", request_id);
    w.close("Error");
    (status, [("content-type", "application/xml")], w.finish()).into_response()
}

/// The Query protocol (IAM, STS): `<ErrorResponse><Error><Type/><Code/><Message/></Error>
/// <RequestId/></ErrorResponse>`, `Type` being `Sender` for 4xx and `Receiver` for 5xx.
pub fn query_xml(
    status: StatusCode,
    xmlns: &str,
    code: &str,
    message: &str,
    request_id: &str,
) -> Response {
    let mut w = Writer::new();
    w.open_ns("ErrorResponse", xmlns);
    w.open("Error");
    w.element(
        "Type",
        if status.is_server_error() {
            "Receiver"
        } else {
            "Sender"
        },
    );
    w.element("Code", code);
    w.element("Message", message);
    w.close("Error");
    w.element("RequestId", request_id);
    w.close("ErrorResponse");
    (status, [("content-type", "text/xml")], w.finish()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body(r: Response) -> String {
        let b = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        String::from_utf8(b.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn each_shape_carries_its_code_where_its_clients_look() {
        let r = rest_json(
            StatusCode::TOO_MANY_REQUESTS,
            "TooManyRequestsException",
            "Rate Exceeded.",
            &[(
                "Reason",
                json!("ReservedFunctionConcurrentInvocationLimitExceeded"),
            )],
        );
        assert_eq!(r.headers()["x-amzn-errortype"], "TooManyRequestsException");
        let v: Value = serde_json::from_str(&body(r).await).unwrap();
        assert_eq!(v["Message"], "Rate Exceeded.");
        assert_eq!(
            v["Reason"],
            "ReservedFunctionConcurrentInvocationLimitExceeded"
        );

        let r = json(
            JsonVersion::V1_0,
            StatusCode::BAD_REQUEST,
            "com.amazonaws.sqs#QueueDoesNotExist",
            "The specified queue does not exist.",
            &[(
                HeaderName::from_static("x-amzn-query-error"),
                "AWS.SimpleQueueService.NonExistentQueue;Sender".into(),
            )],
        );
        assert_eq!(r.headers()["content-type"], "application/x-amz-json-1.0");
        assert_eq!(
            r.headers()["x-amzn-query-error"],
            "AWS.SimpleQueueService.NonExistentQueue;Sender"
        );
        let v: Value = serde_json::from_str(&body(r).await).unwrap();
        assert_eq!(v["__type"], "com.amazonaws.sqs#QueueDoesNotExist");

        let r = rest_xml(
            StatusCode::NOT_FOUND,
            "NoSuchKey",
            "The specified key does not exist.",
            Some("/b/<k>"),
            "req-1",
        );
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        let text = body(r).await;
        assert!(text.contains("<Code>NoSuchKey</Code>"), "{text}");
        assert!(text.contains("<Resource>/b/&lt;k&gt;</Resource>"), "{text}");
    }
}
