//! The AWS-managed policies that can be attached to a role here, by ARN. Templates and deploy
//! tools attach these by name; their documents are the permissions AWS publishes for them,
//! cut to the services nimbus serves.

/// `(name, document)` of every managed policy this node knows.
const POLICIES: &[(&str, &str)] = &[
    (
        "service-role/AWSLambdaBasicExecutionRole",
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["logs:CreateLogGroup","logs:CreateLogStream","logs:PutLogEvents"],"Resource":"*"}]}"#,
    ),
    (
        "service-role/AWSLambdaSQSQueueExecutionRole",
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["sqs:ReceiveMessage","sqs:DeleteMessage","sqs:GetQueueAttributes","logs:CreateLogGroup","logs:CreateLogStream","logs:PutLogEvents"],"Resource":"*"}]}"#,
    ),
    (
        "service-role/AWSLambdaRole",
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["lambda:InvokeFunction"],"Resource":["*"]}]}"#,
    ),
    (
        "AdministratorAccess",
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#,
    ),
    (
        "AWSLambda_FullAccess",
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["lambda:*","logs:*","events:*","sqs:*","iam:GetRole","iam:ListRoles","iam:PassRole"],"Resource":"*"}]}"#,
    ),
    (
        "AmazonSQSFullAccess",
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["sqs:*"],"Resource":"*"}]}"#,
    ),
    (
        "AmazonEventBridgeFullAccess",
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["events:*"],"Resource":"*"}]}"#,
    ),
    (
        "AmazonS3FullAccess",
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["s3:*"],"Resource":"*"}]}"#,
    ),
    (
        "AmazonDynamoDBFullAccess",
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["dynamodb:*"],"Resource":"*"}]}"#,
    ),
    (
        "service-role/AWSLambdaDynamoDBExecutionRole",
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["dynamodb:DescribeStream","dynamodb:GetRecords","dynamodb:GetShardIterator","dynamodb:ListStreams","logs:CreateLogGroup","logs:CreateLogStream","logs:PutLogEvents"],"Resource":"*"}]}"#,
    ),
    (
        "AmazonDynamoDBReadOnlyAccess",
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["dynamodb:BatchGetItem","dynamodb:Describe*","dynamodb:List*","dynamodb:GetItem","dynamodb:Query","dynamodb:Scan"],"Resource":"*"}]}"#,
    ),
    (
        "AmazonS3ReadOnlyAccess",
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["s3:Get*","s3:List*"],"Resource":"*"}]}"#,
    ),
    (
        "AmazonSQSReadOnlyAccess",
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["sqs:GetQueueAttributes","sqs:GetQueueUrl","sqs:ListDeadLetterSourceQueues","sqs:ListQueues","sqs:ListQueueTags"],"Resource":"*"}]}"#,
    ),
    (
        "AmazonCognitoPowerUser",
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["cognito-idp:*"],"Resource":"*"}]}"#,
    ),
    (
        "AWSXrayWriteOnlyAccess",
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["xray:PutTraceSegments","xray:PutTelemetryRecords"],"Resource":"*"}]}"#,
    ),
];

const PREFIX: &str = "arn:aws:iam::aws:policy/";

/// The ARN of the managed policy called `name` (`AWSLambdaBasicExecutionRole`, with or
/// without its `service-role/` path), as SAM resolves the names templates give.
pub fn arn_of(name: &str) -> Option<String> {
    POLICIES
        .iter()
        .find(|(n, _)| *n == name || n.rsplit('/').next() == Some(name))
        .map(|(n, _)| format!("{PREFIX}{n}"))
}

/// The document of the managed policy with this ARN, if it is one this node knows.
pub fn document(arn: &str) -> Option<&'static str> {
    let name = arn.strip_prefix(PREFIX)?;
    POLICIES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, doc)| *doc)
}

/// The policy's name: the last part of its ARN.
pub fn name(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap_or(arn)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Kind, Policy};

    #[test]
    fn every_managed_policy_parses() {
        for (name, doc) in POLICIES {
            Policy::parse(doc, Kind::Identity).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(document(&format!("{PREFIX}{name}")), Some(*doc));
        }
        assert!(document("arn:aws:iam::aws:policy/NoSuchPolicy").is_none());
        assert!(document("arn:aws:iam::123456789012:policy/AdministratorAccess").is_none());
        assert_eq!(
            name("arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"),
            "AWSLambdaBasicExecutionRole"
        );
    }
}
