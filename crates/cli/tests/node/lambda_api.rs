//! Lambda's control plane and Invoke API, driven over HTTP against an in-process node.

use crate::support::TestNode;
use serde_json::{Value, json};

#[test]
fn functions_are_created_read_updated_invoked_and_deleted() {
    let node = TestNode::start();
    node.deploy(
        "echo",
        "echo",
        json!({"MemorySize": 256, "Description": "first"}),
    );

    let got = node.lambda("GET", "/2015-03-31/functions/echo", Value::Null);
    assert_eq!(got.status, 200);
    let config = &got.json()["Configuration"];
    assert_eq!(config["MemorySize"], 256);
    assert_eq!(config["Runtime"], "wasm32-wasip1");
    assert!(
        config["FunctionArn"]
            .as_str()
            .unwrap()
            .ends_with(":function:echo")
    );

    let reply = node.invoke("echo", br#"{"hello":"world"}"#);
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json(), json!({"hello": "world"}));

    let updated = node.lambda(
        "PUT",
        "/2015-03-31/functions/echo/configuration",
        json!({"Timeout": 10, "Environment": {"Variables": {"GREETING": "hi"}}}),
    );
    updated.expect_status(200);
    assert_eq!(updated.json()["Timeout"], 10);
    assert_ne!(updated.json()["RevisionId"], config["RevisionId"]);

    let published = node.lambda("POST", "/2015-03-31/functions/echo/versions", json!({}));
    assert_eq!(published.status, 201);
    assert_eq!(published.json()["Version"], "1");
    let v1 = node.call(
        "POST",
        "/2015-03-31/functions/echo:1/invocations",
        &[],
        b"[1]",
    );
    assert_eq!(v1.status, 200);
    assert_eq!(v1.body, b"[1]");

    let listed = node.lambda("GET", "/2015-03-31/functions?MaxItems=10", Value::Null);
    let names: Vec<Value> = listed.json()["Functions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["FunctionName"].clone())
        .collect();
    assert_eq!(names, [json!("echo")]);

    assert_eq!(
        node.lambda("DELETE", "/2015-03-31/functions/echo", Value::Null)
            .status,
        204
    );
    let gone = node.lambda("GET", "/2015-03-31/functions/echo", Value::Null);
    assert_eq!(gone.status, 404);
    assert_eq!(gone.error_code(), "ResourceNotFoundException");
}

/// The error code of a Lambda error is chosen by the kind of mistake, not by its wording:
/// model constraints are ValidationException, other bad values InvalidParameterValueException.
#[test]
fn bad_input_gets_lambdas_error_codes_and_changes_nothing() {
    let node = TestNode::start();
    node.deploy("kept", "echo", json!({}));
    let base = json!({
        "FunctionName": "f", "Runtime": "wasm32-wasip1", "Handler": "function.wasm",
        "Role": "arn:aws:iam::000000000000:role/test", "Code": {"ZipFile": crate::support::wasm_zip_base64("echo")},
    });
    let with = |k: &str, v: Value| {
        let mut b = base.clone();
        b[k] = v;
        b
    };
    for (body, status, code) in [
        (
            with("FunctionName", json!("bad name!")),
            400,
            "ValidationException",
        ),
        (with("MemorySize", json!(64)), 400, "ValidationException"),
        (with("Timeout", json!(901)), 400, "ValidationException"),
        (
            with("Runtime", json!("cobol85")),
            400,
            "InvalidParameterValueException",
        ),
        (
            with("Code", json!({"ZipFile": "not base64!"})),
            400,
            "InvalidParameterValueException",
        ),
        (
            with(
                "Code",
                json!({"ZipFile": "UEsFBgAAAAAAAAAAAAAAAAAAAAAAAA=="}),
            ),
            400,
            "InvalidParameterValueException",
        ),
        (
            with("FunctionName", json!("kept")),
            409,
            "ResourceConflictException",
        ),
    ] {
        let reply = node.lambda("POST", "/2015-03-31/functions", body.clone());
        assert_eq!(
            (reply.status, reply.error_code().as_str()),
            (status, code),
            "{body}: {}",
            String::from_utf8_lossy(&reply.body)
        );
    }
    let garbage = node.call("POST", "/2015-03-31/functions", &[], b"{not json");
    assert_eq!(garbage.status, 400);
    let bad_type = node.call(
        "POST",
        "/2015-03-31/functions/kept/invocations",
        &[("x-amz-invocation-type", "Sometimes")],
        b"{}",
    );
    assert_eq!(bad_type.error_code(), "ValidationException");
    let listed = node
        .lambda("GET", "/2015-03-31/functions", Value::Null)
        .json();
    assert_eq!(listed["Functions"].as_array().unwrap().len(), 1);
    // A stale revision is refused with Lambda's precondition error.
    let stale = node.lambda(
        "PUT",
        "/2015-03-31/functions/kept/configuration",
        json!({"Timeout": 5, "RevisionId": "not-the-current-one"}),
    );
    assert_eq!(
        (stale.status, stale.error_code().as_str()),
        (412, "PreconditionFailedException")
    );
}

#[test]
fn function_errors_are_reported_with_lambdas_headers() {
    let node = TestNode::start();
    node.deploy("fail", "fail", json!({}));
    let reply = node.call(
        "POST",
        "/2015-03-31/functions/fail/invocations",
        &[("x-amz-log-type", "Tail")],
        b"{}",
    );
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("x-amz-function-error"), Some("Unhandled"));
    let log = reply.header("x-amz-log-result").expect("a log tail");
    use base64::Engine;
    let log = base64::engine::general_purpose::STANDARD
        .decode(log)
        .unwrap();
    assert!(String::from_utf8_lossy(&log).contains("something went wrong"));
}

#[test]
fn tags_follow_lambdas_rules_and_bad_ones_change_nothing() {
    let node = TestNode::start();
    node.deploy("tagged", "echo", json!({"Tags": {"team": "a"}}));
    let arn = node
        .lambda("GET", "/2015-03-31/functions/tagged", Value::Null)
        .json()["Configuration"]["FunctionArn"]
        .as_str()
        .unwrap()
        .replace(':', "%3A");
    let path = format!("/2017-03-31/tags/{arn}");
    let many: serde_json::Map<String, Value> =
        (0..51).map(|i| (format!("k{i}"), json!("v"))).collect();
    for tags in [
        json!({"aws:owner": "me"}),
        json!({"k".repeat(129): "v"}),
        json!({"k": "v".repeat(257)}),
        json!({"nimbus:egress": "sometimes"}),
        Value::Object(many),
    ] {
        let r = node.lambda("POST", &path, json!({ "Tags": tags }));
        assert_eq!(
            r.status,
            400,
            "{tags}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(r.error_code(), "InvalidParameterValueException");
    }
    node.lambda("POST", &path, json!({"Tags": "not a map"}))
        .expect_status(400);
    let listed = node.lambda("GET", &path, Value::Null);
    listed.expect_status(200);
    assert_eq!(listed.json()["Tags"], json!({"team": "a"}));
    // Adding, replacing and removing.
    node.lambda("POST", &path, json!({"Tags": {"team": "b", "env": "dev"}}))
        .expect_status(204);
    node.lambda("DELETE", &format!("{path}?tagKeys=env"), Value::Null)
        .expect_status(204);
    assert_eq!(
        node.lambda("GET", &path, Value::Null).json()["Tags"],
        json!({"team": "b"})
    );
    let missing = "arn%3Aaws%3Alambda%3Aus-east-1%3A000000000000%3Afunction%3Aghost";
    let r = node.lambda("GET", &format!("/2017-03-31/tags/{missing}"), Value::Null);
    r.expect_status(404);
    assert_eq!(r.error_code(), "ResourceNotFoundException");
    // At creation too.
    let r = node.lambda(
        "POST",
        "/2015-03-31/functions",
        json!({
            "FunctionName": "nope", "Runtime": "wasm32-wasip1", "Handler": "function.wasm",
            "Role": "arn:aws:iam::000000000000:role/test", "Tags": {"aws:x": "y"},
            "Code": {"ZipFile": crate::support::wasm_zip_base64("echo")},
        }),
    );
    r.expect_status(400);
    node.lambda("GET", "/2015-03-31/functions/nope", Value::Null)
        .expect_status(404);
}
