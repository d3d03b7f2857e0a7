//! Accounts: the operator creates them, each with its own administrator key, and each sees
//! and touches only its own functions, versions, queues, rules, mappings, logs and usage, even
//! where names are the same.

use crate::support::{LAMBDA_TRUST, TEST_KEY_ID, TEST_SECRET, TestNode};
use serde_json::{Value, json};

const OPERATOR: (&str, &str) = (TEST_KEY_ID, TEST_SECRET);

/// An account made through nimbus's API: (id, key id, secret).
fn create_account(node: &TestNode, name: &str) -> (String, String, String) {
    let r = node.lambda("POST", "/nimbus/v1/accounts", json!({ "name": name }));
    r.expect_status(201);
    let v = r.json();
    let id = v["account"]["id"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 12);
    assert!(id.bytes().all(|b| b.is_ascii_digit()));
    assert_ne!(id, "000000000000");
    (
        id,
        v["access_key_id"].as_str().unwrap().to_owned(),
        v["secret_access_key"].as_str().unwrap().to_owned(),
    )
}

/// The execution role `test` in the account of `key`.
fn create_role(node: &TestNode, key: (&str, &str)) {
    node.iam_as(
        Some(key),
        "CreateRole",
        &[
            ("RoleName", "test"),
            ("AssumeRolePolicyDocument", LAMBDA_TRUST),
        ],
    )
    .expect_status(200);
}

fn create_function(node: &TestNode, key: (&str, &str), account: &str, name: &str) -> Value {
    let r = node.lambda_as(
        key,
        "POST",
        "/2015-03-31/functions",
        json!({
            "FunctionName": name, "Runtime": "wasm32-wasip1", "Handler": "function.wasm",
            "Role": format!("arn:aws:iam::{account}:role/test"),
            "Code": {"ZipFile": crate::support::wasm_zip_base64("echo")},
        }),
    );
    r.expect_status(201);
    r.json()
}

fn function_names(reply: &crate::support::Reply) -> Vec<String> {
    reply.json()["Functions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["FunctionArn"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn accounts_are_created_by_the_operator_and_see_only_their_own() {
    let node = TestNode::start();
    let (b, b_id, b_secret) = create_account(&node, "team-b");
    let tb = (b_id.as_str(), b_secret.as_str());

    // Names are unique; bad names are refused; only the operator creates or lists accounts.
    node.lambda("POST", "/nimbus/v1/accounts", json!({"name": "team-b"}))
        .expect_status(409);
    node.lambda("POST", "/nimbus/v1/accounts", json!({"name": "no spaces"}))
        .expect_status(400);
    node.lambda("POST", "/nimbus/v1/accounts", json!({"nom": "x"}))
        .expect_status(400);
    node.lambda_as(tb, "POST", "/nimbus/v1/accounts", json!({"name": "c"}))
        .expect_status(403);
    node.lambda_as(tb, "GET", "/nimbus/v1/accounts", Value::Null)
        .expect_status(403);
    node.lambda_as(tb, "GET", "/metrics", Value::Null)
        .expect_status(403);
    let listed = node.lambda("GET", "/nimbus/v1/accounts", Value::Null);
    listed.expect_status(200);
    let ids: Vec<String> = listed.json()["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .map(|s| if s == b { "B" } else { s }.to_owned())
        .collect();
    assert_eq!(ids, vec!["000000000000", "B"]);

    // The new key is its account's root: STS names it, IAM works in it.
    let who = node.iam_as(Some(tb), "GetCallerIdentity", &[]);
    who.expect_status(200);
    assert_eq!(who.xml("Account").unwrap(), b);
    create_role(&node, tb);

    // Both accounts have a function called `orders`; each sees its own.
    create_function(&node, OPERATOR, "000000000000", "orders");
    let mine = create_function(&node, tb, &b, "orders");
    assert_eq!(
        mine["FunctionArn"],
        format!("arn:aws:lambda:us-east-1:{b}:function:orders")
    );
    assert_eq!(
        function_names(&node.lambda_as(tb, "GET", "/2015-03-31/functions", Value::Null)),
        vec![format!("arn:aws:lambda:us-east-1:{b}:function:orders")]
    );
    assert_eq!(
        function_names(&node.lambda("GET", "/2015-03-31/functions", Value::Null)),
        vec!["arn:aws:lambda:us-east-1:000000000000:function:orders".to_owned()]
    );
    // B's role cannot be handed to a function of the default account, nor the other way.
    let r = node.lambda(
        "PUT",
        "/2015-03-31/functions/orders/configuration",
        json!({"Role": format!("arn:aws:iam::{b}:role/test")}),
    );
    r.expect_status(400);
    assert_eq!(
        r.json()["Message"],
        "The role defined for the function cannot be assumed by Lambda."
    );

    // B reaching the default account's function by ARN is refused for every operation, and
    // changes nothing.
    let theirs = "arn:aws:lambda:us-east-1:000000000000:function:orders";
    let path = |p: &str| format!("/2015-03-31/functions/{}{p}", theirs.replace(':', "%3A"));
    for (method, p, body) in [
        ("GET", "", Value::Null),
        ("GET", "/configuration", Value::Null),
        ("POST", "/invocations", json!({"x": 1})),
        ("PUT", "/configuration", json!({"Description": "mine now"})),
        ("DELETE", "", Value::Null),
    ] {
        let r = node.lambda_as(tb, method, &path(p), body);
        assert_eq!(
            r.status,
            403,
            "{method} {p}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(r.error_code(), "AccessDeniedException");
        assert!(
            r.json()["Message"]
                .as_str()
                .unwrap()
                .contains("no resource-based policy allows"),
            "{}",
            String::from_utf8_lossy(&r.body)
        );
    }
    // Its own `orders` answers B; the default account's is unchanged.
    let request_id = |r: &crate::support::Reply| {
        r.expect_status(200);
        r.header("x-amzn-RequestId").unwrap().to_owned()
    };
    let b_first = request_id(&node.lambda_as(
        tb,
        "POST",
        "/2015-03-31/functions/orders/invocations",
        json!({"from": "b"}),
    ));
    let operator_call = request_id(&node.invoke("orders", br#"{"from":"operator"}"#));
    let config = node.lambda(
        "GET",
        "/2015-03-31/functions/orders/configuration",
        Value::Null,
    );
    config.expect_status(200);
    assert_eq!(config.json()["Description"], "");
    // B deleting its `orders` leaves the default account's.
    node.lambda_as(tb, "DELETE", "/2015-03-31/functions/orders", Value::Null)
        .expect_status(204);
    node.lambda_as(tb, "GET", "/2015-03-31/functions/orders", Value::Null)
        .expect_status(404);
    node.lambda("GET", "/2015-03-31/functions/orders", Value::Null)
        .expect_status(200);
    create_function(&node, tb, &b, "orders");
    let b_second = request_id(&node.lambda_as(
        tb,
        "POST",
        "/2015-03-31/functions/orders/invocations",
        json!({"again": true}),
    ));

    // Logs and usage are per account.
    let usage = |key: (&str, &str), query: &str| {
        let r = node.lambda_as(key, "GET", &format!("/nimbus/v1/usage{query}"), Value::Null);
        r.expect_status(200);
        r.json()
    };
    let ours = crate::support::eventually(std::time::Duration::from_secs(10), || {
        let u = usage(OPERATOR, "");
        (u["total"]["invocations"] == 1).then_some(u)
    });
    assert_eq!(ours["account"], "000000000000");
    assert_eq!(ours["functions"][0]["function"], "orders");
    let theirs_usage = crate::support::eventually(std::time::Duration::from_secs(10), || {
        let u = usage(tb, "");
        (u["total"]["invocations"] == 2).then_some(u)
    });
    assert_eq!(theirs_usage["account"], b);
    assert_eq!(
        usage(OPERATOR, &format!("?account={b}"))["total"]["invocations"],
        2
    );
    node.lambda_as(
        tb,
        "GET",
        "/nimbus/v1/usage?account=000000000000",
        Value::Null,
    )
    .expect_status(403);
    node.lambda("GET", "/nimbus/v1/usage?account=999999999999", Value::Null)
        .expect_status(404);
    let logs = node.lambda_as(tb, "GET", "/nimbus/v1/functions/orders/logs", Value::Null);
    logs.expect_status(200);
    let text = logs.json()["entries"].to_string();
    assert!(
        text.contains(&b_first) && text.contains(&b_second),
        "{text}"
    );
    assert!(!text.contains(&operator_call), "{text}");
    let logs = node.lambda("GET", "/nimbus/v1/functions/orders/logs", Value::Null);
    let text = logs.json()["entries"].to_string();
    assert!(
        text.contains(&operator_call) && !text.contains(&b_first),
        "{text}"
    );

    // Queues: same name, separate queues; another account's URL or ARN is refused.
    let sqs_b = |op: &str, input: Value| node.target_as(tb, "AmazonSQS", "1.0", op, input);
    let url_a = node.sqs("CreateQueue", json!({"QueueName": "jobs"})).json()["QueueUrl"]
        .as_str()
        .unwrap()
        .to_owned();
    let url_b = sqs_b("CreateQueue", json!({"QueueName": "jobs"})).json()["QueueUrl"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(url_a.ends_with("/000000000000/jobs"), "{url_a}");
    assert!(url_b.ends_with(&format!("/{b}/jobs")), "{url_b}");
    sqs_b(
        "SendMessage",
        json!({"QueueUrl": url_b, "MessageBody": "for b"}),
    )
    .expect_status(200);
    let got = node.sqs(
        "ReceiveMessage",
        json!({"QueueUrl": url_a, "WaitTimeSeconds": 0}),
    );
    assert!(got.json()["Messages"].as_array().is_none_or(Vec::is_empty));
    let denied = sqs_b(
        "SendMessage",
        json!({"QueueUrl": url_a, "MessageBody": "sneaky"}),
    );
    assert_eq!(
        denied.status,
        403,
        "{}",
        String::from_utf8_lossy(&denied.body)
    );
    // Moving messages out of another account's queue is refused as well.
    let moved = sqs_b(
        "StartMessageMoveTask",
        json!({"SourceArn": "arn:aws:sqs:us-east-1:000000000000:jobs",
               "DestinationArn": format!("arn:aws:sqs:us-east-1:{b}:jobs")}),
    );
    assert_eq!(
        moved.status,
        403,
        "{}",
        String::from_utf8_lossy(&moved.body)
    );
    let listed = sqs_b("ListQueues", json!({})).json();
    assert_eq!(listed["QueueUrls"], json!([url_b]));
    let attributes = sqs_b(
        "GetQueueAttributes",
        json!({"QueueUrl": url_b, "AttributeNames": ["QueueArn", "ApproximateNumberOfMessages"]}),
    )
    .json();
    assert_eq!(
        attributes["Attributes"]["QueueArn"],
        format!("arn:aws:sqs:us-east-1:{b}:jobs")
    );
    assert_eq!(attributes["Attributes"]["ApproximateNumberOfMessages"], "1");

    // Mappings: not from another account's queue; lists hold only the account's own.
    let mapping = |key: (&str, &str), queue_account: &str| {
        node.lambda_as(
            key,
            "POST",
            "/2015-03-31/event-source-mappings",
            json!({
                "EventSourceArn": format!("arn:aws:sqs:us-east-1:{queue_account}:jobs"),
                "FunctionName": "orders", "Enabled": false,
            }),
        )
    };
    let r = mapping(tb, "000000000000");
    assert!(
        r.status == 400 || r.status == 403,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    let ours = mapping(OPERATOR, "000000000000");
    ours.expect_status(202);
    let uuid = ours.json()["UUID"].as_str().unwrap().to_owned();
    let theirs_list = node.lambda_as(tb, "GET", "/2015-03-31/event-source-mappings", Value::Null);
    assert_eq!(theirs_list.json()["EventSourceMappings"], json!([]));
    node.lambda_as(
        tb,
        "GET",
        &format!("/2015-03-31/event-source-mappings/{uuid}"),
        Value::Null,
    )
    .expect_status(404);
    node.lambda_as(
        tb,
        "DELETE",
        &format!("/2015-03-31/event-source-mappings/{uuid}"),
        Value::Null,
    )
    .expect_status(404);
    let mine = mapping(tb, &b);
    mine.expect_status(202);
    assert_eq!(
        mine.json()["FunctionArn"],
        format!("arn:aws:lambda:us-east-1:{b}:function:orders")
    );

    // Rules: same name, separate rules; a target in another account is refused.
    let events_b = |op: &str, input: Value| node.target_as(tb, "AWSEvents", "1.1", op, input);
    let events_a = |op: &str, input: Value| node.target("AWSEvents", "1.1", op, input);
    let rule = json!({"Name": "nightly", "ScheduleExpression": "rate(1 day)"});
    let arn_a = events_a("PutRule", rule.clone()).json()["RuleArn"].clone();
    let arn_b = events_b("PutRule", rule).json()["RuleArn"].clone();
    assert_eq!(arn_a, "arn:aws:events:us-east-1:000000000000:rule/nightly");
    assert_eq!(arn_b, format!("arn:aws:events:us-east-1:{b}:rule/nightly"));
    let put = events_b(
        "PutTargets",
        json!({"Rule": "nightly", "Targets": [
            {"Id": "1", "Arn": "arn:aws:lambda:us-east-1:000000000000:function:orders"}
        ]}),
    );
    assert_eq!(put.json()["FailedEntryCount"], 1);
    events_b("DeleteRule", json!({"Name": "nightly"})).expect_status(200);
    events_a("DescribeRule", json!({"Name": "nightly"})).expect_status(200);
    assert_eq!(events_b("ListRules", json!({})).json()["Rules"], json!([]));
}

#[test]
fn accounts_and_their_resources_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let keep = data.clone();
    let node = TestNode::start_with(move |c| c.data_dir = keep);
    let (b, b_id, b_secret) = create_account(&node, "team-b");
    let tb = (b_id.as_str(), b_secret.as_str());
    create_role(&node, tb);
    create_function(&node, tb, &b, "orders");
    node.stop();

    let keep = data.clone();
    let node = TestNode::start_with(move |c| c.data_dir = keep);
    assert_eq!(
        function_names(&node.lambda_as(tb, "GET", "/2015-03-31/functions", Value::Null)),
        vec![format!("arn:aws:lambda:us-east-1:{b}:function:orders")]
    );
    assert!(function_names(&node.lambda("GET", "/2015-03-31/functions", Value::Null)).is_empty());
    node.lambda_as(
        tb,
        "POST",
        "/2015-03-31/functions/orders/invocations",
        json!({}),
    )
    .expect_status(200);
    let listed = node
        .lambda("GET", "/nimbus/v1/accounts", Value::Null)
        .json();
    assert_eq!(listed["accounts"][1]["id"], b);
    assert_eq!(listed["accounts"][1]["name"], "team-b");
}
