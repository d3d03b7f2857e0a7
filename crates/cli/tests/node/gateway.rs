//! The gateway: each protocol answers failures in its own format, wherever they happen
//! (before the operation, as with an oversized body, or in it), and requests are told apart by
//! Host, X-Amz-Target and path.

use crate::support::TestNode;
use serde_json::json;

/// Sends a request that declares `length` bytes of body but carries only its first bytes, as
/// a client streaming a large body does, and reads the answer the node gives before reading
/// the rest: (status, lower-cased headers, body).
fn declare_large_body(
    node: &TestNode,
    path: &str,
    headers: &[(&str, &str)],
    length: usize,
) -> (u16, Vec<(String, String)>, String) {
    use std::io::{Read, Write};
    let address = node.endpoint.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    // Signed in form only: the size is refused before the signature is checked.
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nhost: {address}\r\ncontent-length: {length}\r\n\
         connection: close\r\nauthorization: AWS4-HMAC-SHA256 \
         Credential=K/20260101/us-east-1/x/aws4_request, SignedHeaders=host;x-amz-date, \
         Signature=00\r\n"
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n{");
    stream.write_all(head.as_bytes()).unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    let text = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.to_owned()))
        .collect();
    (status, headers, body.to_owned())
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[test]
fn an_oversized_request_gets_its_own_protocols_error() {
    let node = TestNode::start();

    // SQS: JSON 1.0, `__type` with SQS's namespace, the query code in a header.
    let (status, headers, body) = declare_large_body(
        &node,
        "/",
        &[("x-amz-target", "AmazonSQS.SendMessage")],
        3 << 20,
    );
    assert_eq!(status, 413, "{body}");
    assert_eq!(
        header(&headers, "content-type"),
        Some("application/x-amz-json-1.0")
    );
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["__type"], json!("com.amazonaws.sqs#RequestTooLarge"));
    assert!(
        header(&headers, "x-amzn-query-error")
            .unwrap()
            .starts_with("RequestTooLarge;")
    );
    assert!(header(&headers, "x-amzn-errortype").is_none());

    // EventBridge: JSON 1.1.
    let (status, headers, body) = declare_large_body(
        &node,
        "/",
        &[("x-amz-target", "AWSEvents.PutRule")],
        3 << 20,
    );
    assert_eq!(status, 413, "{body}");
    assert_eq!(
        header(&headers, "content-type"),
        Some("application/x-amz-json-1.1")
    );
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["__type"], json!("ValidationException"));

    // Lambda: rest-json, the code in X-Amzn-ErrorType.
    let (status, headers, _) = declare_large_body(&node, "/2015-03-31/functions", &[], 100 << 20);
    assert_eq!(status, 413);
    assert_eq!(
        header(&headers, "x-amzn-errortype"),
        Some("RequestTooLargeException")
    );

    // (A body that grows past the limit without declaring it: `nimbus_aws_wire::body` tests.)
    node.stop();
}

#[test]
fn malformed_and_unknown_requests_get_each_protocols_error() {
    let node = TestNode::start();
    let sqs = node.call(
        "POST",
        "/",
        &[("x-amz-target", "AmazonSQS.ListQueues")],
        b"[1, 2]",
    );
    sqs.expect_status(400);
    assert_eq!(sqs.error_code(), "InvalidParameterValueException");

    let unknown = node.sqs("FlyToTheMoon", json!({}));
    unknown.expect_status(400);
    assert_eq!(unknown.error_code(), "UnsupportedOperation");

    let events = node.target("AWSEvents", "1.1", "DescribeRule", json!({"Name": "nope"}));
    events.expect_status(400);
    assert_eq!(events.error_code(), "ResourceNotFoundException");

    let nobody = node.target("AWSNoSuchService", "1.1", "DoIt", json!({}));
    nobody.expect_status(400);
    assert_eq!(nobody.error_code(), "UnknownOperationException");

    let path = node.lambda("GET", "/2099-01-01/nothing", serde_json::Value::Null);
    path.expect_status(404);
    assert_eq!(path.error_code(), "UnknownOperationException");
    node.stop();
}

#[test]
fn the_host_names_a_service_before_the_path_does() {
    let node = TestNode::start();
    // Under its own name, a path-style object request is not mistaken for one of Lambda's.
    let s3 = node.call(
        "GET",
        "/2015-03-31/functions",
        &[("host", "s3.localhost")],
        b"",
    );
    assert_eq!(s3.status, 501, "{}", String::from_utf8_lossy(&s3.body));
    assert_eq!(s3.header("content-type"), Some("application/xml"));
    let text = String::from_utf8(s3.body.clone()).unwrap();
    assert!(text.contains("<Code>NotImplemented</Code>"), "{text}");

    // Names that are not a service's, and service names this node serves on every path, go
    // to the path's API.
    for host in ["127.0.0.1", "localhost", "lambda.localhost"] {
        let listed = node.call("GET", "/2015-03-31/functions", &[("host", host)], b"");
        listed.expect_status(200);
        assert!(listed.json()["Functions"].is_array());
    }
    let queues = node.call(
        "POST",
        "/",
        &[
            ("host", "sqs.localhost:1234"),
            ("x-amz-target", "AmazonSQS.ListQueues"),
        ],
        b"{}",
    );
    queues.expect_status(200);
    node.stop();
}

#[test]
fn queue_urls_use_the_host_the_client_named() {
    let node = TestNode::start();
    let created = node.call(
        "POST",
        "/",
        &[
            ("host", "sqs.localhost:4566"),
            ("x-amz-target", "AmazonSQS.CreateQueue"),
        ],
        br#"{"QueueName": "hosted"}"#,
    );
    created.expect_status(200);
    assert_eq!(
        created.json()["QueueUrl"],
        json!("http://sqs.localhost:4566/000000000000/hosted")
    );
    node.stop();
}

#[test]
fn requests_must_be_signed_by_a_known_key() {
    use crate::support::{TEST_KEY_ID, TEST_SECRET};
    let node = TestNode::start();
    let list =
        |key: Option<(&str, &str)>| node.call_as(key, "GET", "/2015-03-31/functions", &[], b"");
    list(Some((TEST_KEY_ID, TEST_SECRET))).expect_status(200);

    let unsigned = list(None);
    unsigned.expect_status(403);
    assert_eq!(unsigned.error_code(), "MissingAuthenticationTokenException");
    let unknown = list(Some(("NKIAUNKNOWNKEY000001", TEST_SECRET)));
    unknown.expect_status(403);
    assert_eq!(unknown.error_code(), "UnrecognizedClientException");
    let wrong = list(Some((TEST_KEY_ID, "not-the-secret-0123456789")));
    wrong.expect_status(403);
    assert_eq!(wrong.error_code(), "InvalidSignatureException");

    // SQS answers in its own format and codes.
    let sqs = |key: Option<(&str, &str)>| {
        node.call_as(
            key,
            "POST",
            "/",
            &[("x-amz-target", "AmazonSQS.ListQueues")],
            b"{}",
        )
    };
    sqs(Some((TEST_KEY_ID, TEST_SECRET))).expect_status(200);
    let unsigned = sqs(None);
    unsigned.expect_status(403);
    assert_eq!(unsigned.error_code(), "MissingAuthenticationToken");
    assert!(
        unsigned
            .header("x-amzn-query-error")
            .unwrap()
            .starts_with("MissingAuthenticationToken;")
    );
    let unknown = sqs(Some(("NKIAUNKNOWNKEY000001", TEST_SECRET)));
    assert_eq!(unknown.error_code(), "InvalidClientTokenId");
    let wrong = sqs(Some((TEST_KEY_ID, "not-the-secret-0123456789")));
    assert_eq!(wrong.error_code(), "SignatureDoesNotMatch");

    // Nothing changed by refused requests; the health check needs no key.
    let created = node.call_as(
        None,
        "POST",
        "/",
        &[("x-amz-target", "AmazonSQS.CreateQueue")],
        br#"{"QueueName": "nope"}"#,
    );
    created.expect_status(403);
    let queues = sqs(Some((TEST_KEY_ID, TEST_SECRET))).json();
    assert_eq!(queues["QueueUrls"], json!([]));
    node.call_as(None, "GET", "/nimbus/v1/health", &[], b"")
        .expect_status(200);
    node.stop();
}

#[test]
fn without_authentication_anyone_is_the_administrator() {
    let node = TestNode::start_with(|c| c.auth.mode = nimbus::config::AuthMode::None);
    node.call_as(None, "GET", "/2015-03-31/functions", &[], b"")
        .expect_status(200);
    node.stop();
}

#[test]
fn a_request_without_a_valid_signature_is_refused_before_its_body_is_read() {
    let node = TestNode::start();
    // A megabyte announced, one byte sent: the answer comes without waiting for the rest.
    let (status, headers, _) = declare_large_body(&node, "/2015-03-31/functions", &[], 1 << 20);
    assert_eq!(status, 400);
    assert_eq!(
        header(&headers, "x-amzn-errortype"),
        Some("IncompleteSignatureException")
    );
    node.stop();
}
