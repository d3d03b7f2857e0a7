//! Amazon Resource Names, parsed in one place.
//!
//! An ARN is `arn:PARTITION:SERVICE:REGION:ACCOUNT:RESOURCE`; what RESOURCE looks like depends
//! on the service. [`Arn`] splits the common part, and the typed forms ([`FunctionArn`],
//! [`QueueArn`], [`RuleArn`]) check the service and the resource's shape, so that the rest of
//! nimbus never takes an ARN apart by hand.

use std::fmt;

use crate::name::{Qualifier, validate_function_name};
use crate::queue::valid_queue_name;

/// The common part of any ARN. `resource` is everything after the account, colons included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arn<'a> {
    pub partition: &'a str,
    pub service: &'a str,
    pub region: &'a str,
    pub account: &'a str,
    pub resource: &'a str,
}

/// Why a string is not the ARN that was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArnError {
    #[error("{0:?} is not an ARN")]
    Malformed(String),
    #[error("{arn:?} is not an ARN of {expected}")]
    WrongService { arn: String, expected: &'static str },
    #[error("{0:?} does not name a valid resource")]
    BadResource(String),
}

impl<'a> Arn<'a> {
    /// Splits an ARN; the partition must be one of AWS's (`aws`, `aws-cn`, `aws-us-gov`, …),
    /// the region empty or lowercase letters, digits and dashes, the account empty or 12 digits.
    pub fn parse(input: &'a str) -> Result<Self, ArnError> {
        let malformed = || ArnError::Malformed(input.to_owned());
        if input.len() > 2048 {
            return Err(malformed());
        }
        let mut parts = input.splitn(6, ':');
        let (Some("arn"), Some(partition), Some(service), Some(region), Some(account), Some(res)) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(malformed());
        };
        let region_ok = region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        let account_ok = account.is_empty()
            || (account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit()));
        let service_ok = !service.is_empty()
            && service
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !partition.starts_with("aws")
            || !region_ok
            || !account_ok
            || !service_ok
            || res.is_empty()
        {
            return Err(malformed());
        }
        Ok(Self {
            partition,
            service,
            region,
            account,
            resource: res,
        })
    }

    fn expect(input: &'a str, service: &'static str) -> Result<Self, ArnError> {
        let arn = Self::parse(input)?;
        if arn.service != service {
            return Err(ArnError::WrongService {
                arn: input.to_owned(),
                expected: service,
            });
        }
        Ok(arn)
    }
}

/// `arn:aws:lambda:REGION:ACCOUNT:function:NAME[:QUALIFIER]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionArn {
    pub region: String,
    pub account: String,
    pub name: String,
    pub qualifier: Option<Qualifier>,
}

impl FunctionArn {
    /// The ARN of the resource held under `key` ([`crate::name::scoped`]).
    pub fn new(region: &str, key: &str) -> Self {
        let (account, name) = crate::name::unscoped(key);
        Self {
            region: region.to_owned(),
            account: account.to_owned(),
            name: name.to_owned(),
            qualifier: None,
        }
    }

    /// The target an event for this ARN is queued under: the function's key, with `:N` or
    /// `:alias` when the ARN is qualified (resolved when the event runs).
    pub fn target(&self) -> String {
        let key = crate::name::scoped(&self.account, &self.name);
        match &self.qualifier {
            Some(Qualifier::Other(q)) => format!("{key}:{q}"),
            _ => key,
        }
    }

    pub fn parse(input: &str) -> Result<Self, ArnError> {
        let arn = Arn::expect(input, "lambda")?;
        let bad = || ArnError::BadResource(input.to_owned());
        let rest = arn.resource.strip_prefix("function:").ok_or_else(bad)?;
        let (name, qualifier) = match rest.split_once(':') {
            Some((name, q)) => (name, Some(Qualifier::parse(q).map_err(|_| bad())?)),
            None => (rest, None),
        };
        validate_function_name(name).map_err(|_| bad())?;
        if arn.region.is_empty() || arn.account.is_empty() {
            return Err(bad());
        }
        Ok(Self {
            region: arn.region.to_owned(),
            account: arn.account.to_owned(),
            name: name.to_owned(),
            qualifier,
        })
    }
}

impl fmt::Display for FunctionArn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "arn:aws:lambda:{}:{}:function:{}",
            self.region, self.account, self.name
        )?;
        match &self.qualifier {
            Some(q) => write!(f, ":{}", q.as_str()),
            None => Ok(()),
        }
    }
}

/// `arn:aws:sqs:REGION:ACCOUNT:NAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueArn {
    pub region: String,
    pub account: String,
    pub name: String,
}

impl QueueArn {
    /// The ARN of the resource held under `key` ([`crate::name::scoped`]).
    pub fn new(region: &str, key: &str) -> Self {
        let (account, name) = crate::name::unscoped(key);
        Self {
            region: region.to_owned(),
            account: account.to_owned(),
            name: name.to_owned(),
        }
    }

    pub fn parse(input: &str) -> Result<Self, ArnError> {
        let arn = Arn::expect(input, "sqs")?;
        if !valid_queue_name(arn.resource) || arn.region.is_empty() || arn.account.is_empty() {
            return Err(ArnError::BadResource(input.to_owned()));
        }
        Ok(Self {
            region: arn.region.to_owned(),
            account: arn.account.to_owned(),
            name: arn.resource.to_owned(),
        })
    }
}

impl fmt::Display for QueueArn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "arn:aws:sqs:{}:{}:{}",
            self.region, self.account, self.name
        )
    }
}

/// `arn:aws:events:REGION:ACCOUNT:rule/NAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleArn {
    pub region: String,
    pub account: String,
    pub name: String,
}

impl RuleArn {
    /// The ARN of the resource held under `key` ([`crate::name::scoped`]).
    pub fn new(region: &str, key: &str) -> Self {
        let (account, name) = crate::name::unscoped(key);
        Self {
            region: region.to_owned(),
            account: account.to_owned(),
            name: name.to_owned(),
        }
    }

    pub fn parse(input: &str) -> Result<Self, ArnError> {
        let arn = Arn::expect(input, "events")?;
        let name = arn
            .resource
            .strip_prefix("rule/")
            .filter(|n| !n.is_empty() && !n.contains('/'))
            .ok_or_else(|| ArnError::BadResource(input.to_owned()))?;
        Ok(Self {
            region: arn.region.to_owned(),
            account: arn.account.to_owned(),
            name: name.to_owned(),
        })
    }
}

impl fmt::Display for RuleArn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "arn:aws:events:{}:{}:rule/{}",
            self.region, self.account, self.name
        )
    }
}

/// The destination of an asynchronous invocation's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    Function(FunctionArn),
    Queue(QueueArn),
}

impl Destination {
    pub fn parse(input: &str) -> Result<Self, ArnError> {
        let arn = Arn::parse(input)?;
        match arn.service {
            "lambda" => FunctionArn::parse(input).map(Self::Function),
            "sqs" => QueueArn::parse(input).map(Self::Queue),
            _ => Err(ArnError::WrongService {
                arn: input.to_owned(),
                expected: "lambda or sqs",
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_the_common_part() {
        let arn = Arn::parse("arn:aws:s3:::bucket/key:with:colons").unwrap();
        assert_eq!(arn.service, "s3");
        assert_eq!(arn.region, "");
        assert_eq!(arn.account, "");
        assert_eq!(arn.resource, "bucket/key:with:colons");
        for bad in [
            "",
            "arn",
            "arn:aws:s3",
            "arn:aws:sqs:us-east-1:1234:q",
            "arn:xyz:sqs:us-east-1:123456789012:q",
            "arn:aws:SQS:us-east-1:123456789012:q",
            "arn:aws:sqs:US-EAST-1:123456789012:q",
            "arn:aws:sqs:us-east-1:123456789012:",
            "urn:aws:sqs:us-east-1:123456789012:q",
        ] {
            assert!(Arn::parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn function_arns_round_trip() {
        let plain = FunctionArn::parse("arn:aws:lambda:eu-west-1:123456789012:function:f").unwrap();
        assert_eq!(plain.name, "f");
        assert_eq!(plain.qualifier, None);
        assert_eq!(
            plain.to_string(),
            "arn:aws:lambda:eu-west-1:123456789012:function:f"
        );
        let versioned =
            FunctionArn::parse("arn:aws:lambda:eu-west-1:123456789012:function:f:7").unwrap();
        assert_eq!(versioned.qualifier, Some(Qualifier::parse("7").unwrap()));
        assert_eq!(
            versioned.to_string(),
            "arn:aws:lambda:eu-west-1:123456789012:function:f:7"
        );
        for bad in [
            "arn:aws:lambda:eu-west-1:123456789012:layer:f",
            "arn:aws:lambda:eu-west-1:123456789012:function:",
            "arn:aws:lambda:eu-west-1:123456789012:function:a b",
            "arn:aws:lambda::123456789012:function:f",
            "arn:aws:sqs:eu-west-1:123456789012:function:f",
        ] {
            assert!(FunctionArn::parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn queue_and_rule_arns_round_trip() {
        let q = QueueArn::parse("arn:aws:sqs:us-east-1:123456789012:orders-dlq").unwrap();
        assert_eq!(q.name, "orders-dlq");
        assert_eq!(
            q.to_string(),
            "arn:aws:sqs:us-east-1:123456789012:orders-dlq"
        );
        assert!(QueueArn::parse("arn:aws:sqs:us-east-1:123456789012:a/b").is_err());
        assert!(QueueArn::parse("arn:aws:sqs:us-east-1:123456789012:x:y").is_err());
        let r = RuleArn::parse("arn:aws:events:us-east-1:123456789012:rule/nightly").unwrap();
        assert_eq!(r.name, "nightly");
        assert_eq!(
            r.to_string(),
            "arn:aws:events:us-east-1:123456789012:rule/nightly"
        );
        assert!(RuleArn::parse("arn:aws:events:us-east-1:123456789012:bus/x").is_err());
    }

    #[test]
    fn destinations_are_functions_or_queues() {
        assert!(matches!(
            Destination::parse("arn:aws:lambda:us-east-1:000000000000:function:sink"),
            Ok(Destination::Function(f)) if f.name == "sink"
        ));
        assert!(matches!(
            Destination::parse("arn:aws:sqs:us-east-1:000000000000:q"),
            Ok(Destination::Queue(q)) if q.name == "q"
        ));
        assert!(Destination::parse("arn:aws:sns:us-east-1:000000000000:t").is_err());
    }
}
