//! Schedules through EventBridge's JSON protocol against an in-process node.

use crate::support::TestNode;
use serde_json::json;

fn events(node: &TestNode, operation: &str, input: serde_json::Value) -> crate::support::Reply {
    node.target("AWSEvents", "1.1", operation, input)
}

#[test]
fn rules_are_put_described_targeted_and_deleted() {
    let node = TestNode::start();
    node.deploy("tick", "record", json!({}));
    let put = events(
        &node,
        "PutRule",
        json!({"Name": "every-hour", "ScheduleExpression": "rate(1 hour)"}),
    );
    put.expect_status(200);
    assert!(
        put.json()["RuleArn"]
            .as_str()
            .unwrap()
            .ends_with(":rule/every-hour")
    );
    let function_arn = "arn:aws:lambda:us-east-1:000000000000:function:tick";
    let targets = events(
        &node,
        "PutTargets",
        json!({"Rule": "every-hour", "Targets": [{"Id": "t1", "Arn": function_arn, "Input": "{\"k\":1}"}]}),
    );
    assert_eq!(targets.status, 200);
    assert_eq!(targets.json()["FailedEntryCount"], 0);
    let described = events(&node, "DescribeRule", json!({"Name": "every-hour"}));
    assert_eq!(described.json()["ScheduleExpression"], "rate(1 hour)");
    assert_eq!(described.json()["State"], "ENABLED");
    let listed = events(&node, "ListTargetsByRule", json!({"Rule": "every-hour"}));
    assert_eq!(listed.json()["Targets"][0]["Arn"], function_arn);

    for (input, code) in [
        (
            json!({"Name": "bad", "ScheduleExpression": "rate(0 minutes)"}),
            "ValidationException",
        ),
        (
            json!({"Name": "bad", "ScheduleExpression": "cron(nonsense)"}),
            "ValidationException",
        ),
        (
            json!({"ScheduleExpression": "rate(1 hour)"}),
            "ValidationException",
        ),
    ] {
        let reply = events(&node, "PutRule", input.clone());
        assert_eq!(
            (reply.status, reply.error_code().as_str()),
            (400, code),
            "{input}"
        );
    }
    let missing = events(&node, "DescribeRule", json!({"Name": "nope"}));
    assert_eq!(missing.error_code(), "ResourceNotFoundException");

    events(
        &node,
        "RemoveTargets",
        json!({"Rule": "every-hour", "Ids": ["t1"]}),
    );
    assert_eq!(
        events(&node, "DeleteRule", json!({"Name": "every-hour"})).status,
        200
    );
    assert_eq!(
        events(&node, "DescribeRule", json!({"Name": "every-hour"})).error_code(),
        "ResourceNotFoundException"
    );
}
