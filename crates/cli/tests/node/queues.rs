//! The queue service (SQS's JSON protocol), asynchronous invocation with retries and
//! destinations, and event source mappings, against an in-process node.

use std::time::{Duration, Instant};

use crate::support::{TestNode, eventually};
use serde_json::{Value, json};

fn create_queue(node: &TestNode, name: &str, attributes: Value) -> (String, String) {
    let created = node.sqs(
        "CreateQueue",
        json!({"QueueName": name, "Attributes": attributes}),
    );
    created.expect_status(200);
    let url = created.json()["QueueUrl"].as_str().unwrap().to_owned();
    let attrs = node.sqs(
        "GetQueueAttributes",
        json!({"QueueUrl": url, "AttributeNames": ["QueueArn"]}),
    );
    let arn = attrs.json()["Attributes"]["QueueArn"]
        .as_str()
        .unwrap()
        .to_owned();
    (url, arn)
}

fn receive(node: &TestNode, url: &str, wait_s: u32, visibility_s: u32) -> Vec<Value> {
    let reply = node.sqs(
        "ReceiveMessage",
        json!({"QueueUrl": url, "MaxNumberOfMessages": 10, "WaitTimeSeconds": wait_s,
               "VisibilityTimeout": visibility_s}),
    );
    reply.expect_status(200);
    reply.json()["Messages"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn a_long_poll_is_answered_by_the_send_that_fills_it() {
    let node = TestNode::start();
    let (url, _) = create_queue(&node, "waits", json!({}));
    std::thread::scope(|s| {
        let poll = s.spawn(|| {
            let started = Instant::now();
            (receive(&node, &url, 20, 30), started.elapsed())
        });
        std::thread::sleep(Duration::from_millis(300));
        let sent = node.sqs(
            "SendMessage",
            json!({"QueueUrl": url, "MessageBody": "ping"}),
        );
        assert_eq!(sent.status, 200);
        let (messages, waited) = poll.join().unwrap();
        assert_eq!(messages.len(), 1);
        assert_eq!(messages[0]["Body"], "ping");
        // Answered by the send, not by the end of the 20-second wait.
        assert!(waited < Duration::from_secs(15), "waited {waited:?}");
    });
}

#[test]
fn visibility_timeouts_redrive_and_message_moves() {
    let node = TestNode::start();
    let (dlq, dlq_arn) = create_queue(&node, "dead", json!({}));
    let redrive = json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 1}).to_string();
    let (src, src_arn) = create_queue(&node, "work", json!({"RedrivePolicy": redrive}));
    node.sqs(
        "SendMessage",
        json!({"QueueUrl": src, "MessageBody": "job"}),
    );

    let first = receive(&node, &src, 0, 1);
    assert_eq!(first.len(), 1);
    assert!(
        receive(&node, &src, 0, 1).is_empty(),
        "leased messages are invisible"
    );
    // After the visibility timeout the message is received a second time, which exceeds
    // maxReceiveCount: it moves to the dead-letter queue instead.
    let dead = eventually(Duration::from_secs(10), || {
        let _ = receive(&node, &src, 1, 1);
        // Looked at with a visibility timeout of 0: it stays visible for the move below.
        let dead = receive(&node, &dlq, 0, 0);
        (!dead.is_empty()).then_some(dead)
    });
    assert_eq!(dead[0]["Body"], "job");

    // A message move task takes it back to the source queue, where it is received again.
    let moved = node.sqs(
        "StartMessageMoveTask",
        json!({"SourceArn": dlq_arn, "DestinationArn": src_arn}),
    );
    moved.expect_status(200);
    let back = eventually(Duration::from_secs(10), || {
        let m = receive(&node, &src, 1, 30);
        (!m.is_empty()).then_some(m)
    });
    assert_eq!(back[0]["Body"], "job");
    let handle = back[0]["ReceiptHandle"].as_str().unwrap();
    let deleted = node.sqs(
        "DeleteMessage",
        json!({"QueueUrl": src, "ReceiptHandle": handle}),
    );
    assert_eq!(deleted.status, 200);
    for queue in [&src, &dlq] {
        let counts = node.sqs(
            "GetQueueAttributes",
            json!({"QueueUrl": queue, "AttributeNames": ["All"]}),
        );
        let attrs = &counts.json()["Attributes"];
        assert_eq!(attrs["ApproximateNumberOfMessages"], "0");
        assert_eq!(attrs["ApproximateNumberOfMessagesNotVisible"], "0");
    }

    // Bad input gets SQS's own error format.
    let missing = node.sqs("SendMessage", json!({"QueueUrl": src}));
    assert_eq!(
        (missing.status, missing.error_code().as_str()),
        (400, "MissingParameter")
    );
    let nope = node.sqs(
        "SendMessage",
        json!({"QueueUrl": "http://x/000000000000/nope", "MessageBody": "x"}),
    );
    assert_eq!(nope.error_code(), "QueueDoesNotExist");
    let unknown = node.target("AmazonSQS", "1.0", "FlyToTheMoon", json!({}));
    assert_eq!(unknown.status, 400);
}

#[test]
fn failed_asynchronous_events_go_to_their_on_failure_destination() {
    let node = TestNode::start_with(|c| c.async_invoke.retry_base_ms = 50);
    let (dest, dest_arn) = create_queue(&node, "failures", json!({}));
    node.deploy("fails", "fail", json!({}));
    let config = node.lambda(
        "PUT",
        "/2019-09-25/functions/fails/event-invoke-config",
        json!({"MaximumRetryAttempts": 1,
               "DestinationConfig": {"OnFailure": {"Destination": dest_arn}}}),
    );
    config.expect_status(200);
    let accepted = node.call(
        "POST",
        "/2015-03-31/functions/fails/invocations",
        &[("x-amz-invocation-type", "Event")],
        br#"{"n":1}"#,
    );
    assert_eq!(accepted.status, 202);
    let messages = eventually(Duration::from_secs(20), || {
        let m = receive(&node, &dest, 1, 30);
        (!m.is_empty()).then_some(m)
    });
    let record: Value = serde_json::from_str(messages[0]["Body"].as_str().unwrap()).unwrap();
    assert_eq!(record["requestContext"]["condition"], "RetriesExhausted");
    assert_eq!(record["requestContext"]["approximateInvokeCount"], 2);
    assert_eq!(record["requestPayload"], json!({"n": 1}));
}

#[test]
fn an_event_source_mapping_feeds_queue_messages_to_a_function() {
    let node = TestNode::start();
    node.deploy("recorder", "record", json!({}));
    let (src, src_arn) = create_queue(&node, "feed", json!({"VisibilityTimeout": "30"}));
    let mapping = node.lambda(
        "POST",
        "/2015-03-31/event-source-mappings",
        json!({"EventSourceArn": src_arn, "FunctionName": "recorder", "BatchSize": 10}),
    );
    mapping.expect_status(202);
    node.sqs(
        "SendMessageBatch",
        json!({"QueueUrl": src, "Entries": [
            {"Id": "1", "MessageBody": "first"}, {"Id": "2", "MessageBody": "second"}]}),
    );
    // The function saw both records, and the mapping deleted them from the queue.
    eventually(Duration::from_secs(20), || {
        let logs = node.call("GET", "/nimbus/v1/functions/recorder/logs", &[], b"");
        let text = String::from_utf8_lossy(&logs.body).into_owned();
        (text.contains("first") && text.contains("second")).then_some(())
    });
    eventually(Duration::from_secs(10), || {
        let a = node.sqs(
            "GetQueueAttributes",
            json!({"QueueUrl": src, "AttributeNames": ["All"]}),
        );
        let attrs = &a.json()["Attributes"];
        (attrs["ApproximateNumberOfMessages"] == "0"
            && attrs["ApproximateNumberOfMessagesNotVisible"] == "0")
            .then_some(())
    });
}

/// An SQS queue holding visible messages that nobody reads once made the asynchronous pollers
/// spin on their one thread without ever running an event; and with every poller slot busy,
/// visible events must wait for a slot without spinning either.
#[test]
fn events_run_while_another_queue_holds_unread_messages() {
    let node = TestNode::start_with(|c| c.async_invoke.concurrency = 2);
    node.deploy("echo", "echo", json!({}));
    let (url, _) = create_queue(&node, "unread", json!({}));
    node.sqs(
        "SendMessage",
        json!({"QueueUrl": url, "MessageBody": "left alone"}),
    );
    for n in 0..100 {
        let reply = node.call(
            "POST",
            "/2015-03-31/functions/echo/invocations",
            &[("x-amz-invocation-type", "Event")],
            format!("{{\"n\":{n}}}").as_bytes(),
        );
        assert_eq!(reply.status, 202);
    }
    eventually(Duration::from_secs(30), || {
        let report = node
            .call("GET", "/nimbus/v1/functions/echo/events", &[], b"")
            .json();
        (report["queued"] == 0 && report["in_flight"] == 0).then_some(())
    });
    let usage = eventually(Duration::from_secs(10), || {
        let u = node.call("GET", "/nimbus/v1/usage", &[], b"").json();
        let n = u["functions"][0]["invocations"].as_u64().unwrap_or(0);
        (n == 100).then_some(n)
    });
    assert_eq!(usage, 100);
}
