//! IAM through its Query protocol, and what its policies allow: users and their keys, roles
//! and their trust, inline and managed policies, and the checks every other API makes with
//! them.

use crate::support::{LAMBDA_TRUST, TestNode};
use serde_json::json;

const ACCOUNT: &str = "000000000000";

fn policy(statements: serde_json::Value) -> String {
    json!({"Version": "2012-10-17", "Statement": statements}).to_string()
}

/// Creates a user with one inline policy and a key; returns (key id, secret).
fn user_with(node: &TestNode, name: &str, document: &str) -> (String, String) {
    node.iam("CreateUser", &[("UserName", name)])
        .expect_status(200);
    node.iam(
        "PutUserPolicy",
        &[
            ("UserName", name),
            ("PolicyName", "p"),
            ("PolicyDocument", document),
        ],
    )
    .expect_status(200);
    let key = node.iam("CreateAccessKey", &[("UserName", name)]);
    key.expect_status(200);
    (
        key.xml("AccessKeyId").unwrap(),
        key.xml("SecretAccessKey").unwrap(),
    )
}

#[test]
fn users_roles_and_policies_round_trip_with_iams_errors() {
    let node = TestNode::start();
    let created = node.iam("CreateUser", &[("UserName", "deploy"), ("Path", "/ci/")]);
    created.expect_status(200);
    assert_eq!(
        created.xml("Arn").unwrap(),
        format!("arn:aws:iam::{ACCOUNT}:user/ci/deploy")
    );
    assert!(created.xml("UserId").unwrap().starts_with("AIDA"));
    let again = node.iam("CreateUser", &[("UserName", "DEPLOY")]);
    again.expect_status(409);
    assert_eq!(again.xml("Code").unwrap(), "EntityAlreadyExists");
    let bad = node.iam("CreateUser", &[("UserName", "no spaces")]);
    bad.expect_status(400);
    assert_eq!(bad.xml("Code").unwrap(), "ValidationError");
    let missing = node.iam("GetUser", &[("UserName", "ghost")]);
    missing.expect_status(404);
    assert_eq!(missing.xml("Code").unwrap(), "NoSuchEntity");
    let listed = node.iam("ListUsers", &[]);
    assert!(String::from_utf8_lossy(&listed.body).contains("<UserName>deploy</UserName>"));

    // Policies: not JSON, an unknown Effect or Version, over the user quota.
    for (document, code) in [
        ("not json".to_owned(), "MalformedPolicyDocument"),
        (
            policy(json!([{"Effect": "Perhaps", "Action": "*", "Resource": "*"}])),
            "MalformedPolicyDocument",
        ),
        (
            json!({"Version": "2099-01-01", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}).to_string(),
            "MalformedPolicyDocument",
        ),
        (
            policy(json!([{"Effect": "Allow", "Action": "*", "Resource": format!("arn:aws:s3:::{}", "x".repeat(3000))}])),
            "LimitExceeded",
        ),
    ] {
        let r = node.iam(
            "PutUserPolicy",
            &[("UserName", "deploy"), ("PolicyName", "p"), ("PolicyDocument", &document)],
        );
        assert_eq!(r.xml("Code").as_deref(), Some(code), "{document:.80}");
    }
    let document = policy(json!([{"Effect": "Allow", "Action": "lambda:*", "Resource": "*"}]));
    node.iam(
        "PutUserPolicy",
        &[
            ("UserName", "deploy"),
            ("PolicyName", "p"),
            ("PolicyDocument", &document),
        ],
    )
    .expect_status(200);
    let got = node.iam(
        "GetUserPolicy",
        &[("UserName", "deploy"), ("PolicyName", "p")],
    );
    // URL-encoded, as IAM returns documents.
    assert_eq!(
        got.xml("PolicyDocument").unwrap(),
        document
            .replace('{', "%7B")
            .replace('}', "%7D")
            .replace('"', "%22")
            .replace(':', "%3A")
            .replace(',', "%2C")
            .replace('[', "%5B")
            .replace(']', "%5D")
            .replace('*', "%2A")
    );
    let conflict = node.iam("DeleteUser", &[("UserName", "deploy")]);
    conflict.expect_status(409);
    assert_eq!(conflict.xml("Code").unwrap(), "DeleteConflict");
    node.iam(
        "DeleteUserPolicy",
        &[("UserName", "deploy"), ("PolicyName", "p")],
    )
    .expect_status(200);
    node.iam("DeleteUser", &[("UserName", "deploy")])
        .expect_status(200);

    // Roles: a trust policy with a Resource is refused; managed policies attach by ARN.
    let bad_trust =
        policy(json!([{"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": "*"}]));
    let r = node.iam(
        "CreateRole",
        &[
            ("RoleName", "exec"),
            ("AssumeRolePolicyDocument", &bad_trust),
        ],
    );
    assert_eq!(r.xml("Code").unwrap(), "MalformedPolicyDocument");
    let role = node.iam(
        "CreateRole",
        &[
            ("RoleName", "exec"),
            ("Path", "/service-role/"),
            ("AssumeRolePolicyDocument", LAMBDA_TRUST),
        ],
    );
    role.expect_status(200);
    assert_eq!(
        role.xml("Arn").unwrap(),
        format!("arn:aws:iam::{ACCOUNT}:role/service-role/exec")
    );
    let basic = "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole";
    node.iam(
        "AttachRolePolicy",
        &[("RoleName", "exec"), ("PolicyArn", basic)],
    )
    .expect_status(200);
    let unknown = node.iam(
        "AttachRolePolicy",
        &[
            ("RoleName", "exec"),
            ("PolicyArn", "arn:aws:iam::aws:policy/NoSuchThing"),
        ],
    );
    assert_eq!(unknown.xml("Code").unwrap(), "NoSuchEntity");
    let attached = node.iam("ListAttachedRolePolicies", &[("RoleName", "exec")]);
    assert_eq!(
        attached.xml("PolicyName").unwrap(),
        "AWSLambdaBasicExecutionRole"
    );
    assert_eq!(
        node.iam("DeleteRole", &[("RoleName", "exec")])
            .xml("Code")
            .unwrap(),
        "DeleteConflict"
    );
    node.iam(
        "DetachRolePolicy",
        &[("RoleName", "exec"), ("PolicyArn", basic)],
    )
    .expect_status(200);
    node.iam("DeleteRole", &[("RoleName", "exec")])
        .expect_status(200);
    assert_eq!(
        node.iam("GetRole", &[("RoleName", "exec")])
            .xml("Code")
            .unwrap(),
        "NoSuchEntity"
    );
    // An unknown action, in IAM's format.
    let unknown = node.iam("CreateGroup", &[("GroupName", "g")]);
    unknown.expect_status(400);
    assert_eq!(unknown.xml("Code").unwrap(), "InvalidAction");
}

#[test]
fn a_user_allowed_one_invoke_can_do_that_and_nothing_else() {
    let node = TestNode::start();
    node.deploy("orders", "echo", json!({}));
    node.deploy("billing", "echo", json!({}));
    let orders = format!("arn:aws:lambda:us-east-1:{ACCOUNT}:function:orders");
    let (id, secret) = user_with(
        &node,
        "caller",
        &policy(
            json!([{"Effect": "Allow", "Action": "lambda:InvokeFunction", "Resource": orders}]),
        ),
    );
    let key = Some((id.as_str(), secret.as_str()));
    let invoke = |name: &str| {
        node.call_as(
            key,
            "POST",
            &format!("/2015-03-31/functions/{name}/invocations"),
            &[],
            b"{\"n\":1}",
        )
    };
    invoke("orders").expect_status(200);
    let denied = invoke("billing");
    denied.expect_status(403);
    assert_eq!(denied.error_code(), "AccessDeniedException");
    assert_eq!(
        denied.json()["Message"],
        format!(
            "User: arn:aws:iam::{ACCOUNT}:user/caller is not authorized to perform: \
             lambda:InvokeFunction on resource: arn:aws:lambda:us-east-1:{ACCOUNT}:function:billing \
             because no identity-based policy allows the lambda:InvokeFunction action"
        )
    );
    for (method, path) in [
        ("GET", "/2015-03-31/functions/orders"),
        ("GET", "/2015-03-31/functions"),
        ("DELETE", "/2015-03-31/functions/orders"),
        ("GET", "/nimbus/v1/usage"),
    ] {
        let r = node.call_as(key, method, path, &[], b"");
        assert_eq!(r.status, 403, "{method} {path}");
        assert_eq!(r.error_code(), "AccessDeniedException", "{method} {path}");
    }
    // Other protocols deny in their own format.
    let target = "AmazonSQS.CreateQueue";
    let sqs = node.call_as(
        key,
        "POST",
        "/",
        &[
            ("x-amz-target", target),
            ("content-type", "application/x-amz-json-1.0"),
        ],
        br#"{"QueueName":"q"}"#,
    );
    sqs.expect_status(403);
    assert_eq!(
        sqs.header("x-amzn-query-error"),
        Some("AccessDenied;Sender")
    );
    let iam = node.iam_as(key, "CreateUser", &[("UserName", "mallory")]);
    iam.expect_status(403);
    assert_eq!(iam.xml("Code").unwrap(), "AccessDenied");
    // The function is still there, untouched.
    node.lambda("GET", "/2015-03-31/functions/orders", json!(null))
        .expect_status(200);

    // An explicit Deny wins over an Allow.
    node.iam(
        "PutUserPolicy",
        &[
            ("UserName", "caller"),
            ("PolicyName", "deny"),
            (
                "PolicyDocument",
                &policy(json!([{"Effect": "Deny", "Action": "lambda:Invoke*", "Resource": "*"}])),
            ),
        ],
    )
    .expect_status(200);
    let r = invoke("orders");
    r.expect_status(403);
    assert!(
        r.json()["Message"]
            .as_str()
            .unwrap()
            .contains("explicit deny")
    );

    // A deleted key is unknown at once.
    node.iam(
        "DeleteAccessKey",
        &[("UserName", "caller"), ("AccessKeyId", &id)],
    )
    .expect_status(200);
    let r = invoke("orders");
    r.expect_status(403);
    assert_eq!(r.error_code(), "UnrecognizedClientException");
}

#[test]
fn functions_need_a_role_lambda_may_assume_and_may_pass() {
    let node = TestNode::start();
    let create = |role: &str| {
        node.lambda(
            "POST",
            "/2015-03-31/functions",
            json!({
                "FunctionName": "f", "Runtime": "wasm32-wasip1", "Handler": "function.wasm",
                "Role": role, "Code": {"ZipFile": crate::support::wasm_zip_base64("echo")},
            }),
        )
    };
    let ec2_trust = LAMBDA_TRUST.replace("lambda.amazonaws.com", "ec2.amazonaws.com");
    node.iam(
        "CreateRole",
        &[
            ("RoleName", "ec2"),
            ("AssumeRolePolicyDocument", &ec2_trust),
        ],
    )
    .expect_status(200);
    for role in [
        format!("arn:aws:iam::{ACCOUNT}:role/missing"),
        format!("arn:aws:iam::{ACCOUNT}:role/ec2"),
        "arn:aws:iam::123456789012:role/test".to_owned(),
        "not-an-arn".to_owned(),
    ] {
        let r = create(&role);
        r.expect_status(400);
        assert_eq!(r.error_code(), "InvalidParameterValueException", "{role}");
        assert_eq!(
            r.json()["Message"],
            "The role defined for the function cannot be assumed by Lambda."
        );
    }
    assert_eq!(
        node.lambda("GET", "/2015-03-31/functions/f", json!(null))
            .status,
        404
    );
    let role = format!("arn:aws:iam::{ACCOUNT}:role/test");
    create(&role).expect_status(201);
    let update = node.lambda(
        "PUT",
        "/2015-03-31/functions/f/configuration",
        json!({"Role": format!("arn:aws:iam::{ACCOUNT}:role/ec2")}),
    );
    update.expect_status(400);

    // A user allowed to manage functions but not to pass the role is refused.
    let (id, secret) = user_with(
        &node,
        "dev",
        &policy(json!([{"Effect": "Allow", "Action": "lambda:*", "Resource": "*"}])),
    );
    let body = json!({
        "FunctionName": "g", "Runtime": "wasm32-wasip1", "Handler": "function.wasm",
        "Role": role, "Code": {"ZipFile": crate::support::wasm_zip_base64("echo")},
    })
    .to_string();
    let r = node.call_as(
        Some((&id, &secret)),
        "POST",
        "/2015-03-31/functions",
        &[("content-type", "application/json")],
        body.as_bytes(),
    );
    r.expect_status(403);
    assert!(
        r.json()["Message"]
            .as_str()
            .unwrap()
            .contains("iam:PassRole")
    );
}
