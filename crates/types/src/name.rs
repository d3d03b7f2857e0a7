//! Function names, ARNs and qualifiers as Lambda accepts them.

use crate::InvalidParameter;

pub const LATEST: &str = "$LATEST";
pub const DEFAULT_REGION: &str = "us-east-1";
pub const DEFAULT_ACCOUNT: &str = "000000000000";

/// Which version of a function a request addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Qualifier {
    Latest,
    /// A version number or alias name; none exist yet, so these resolve to nothing.
    Other(String),
}

impl Qualifier {
    pub fn parse(s: &str) -> Result<Self, InvalidParameter> {
        if s == LATEST {
            return Ok(Self::Latest);
        }
        let valid = !s.is_empty()
            && s.len() <= 128
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if valid {
            Ok(Self::Other(s.to_owned()))
        } else {
            Err(InvalidParameter::new(format!("invalid qualifier: {s:?}")))
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::Latest => LATEST,
            Self::Other(s) => s,
        }
    }
}

/// A function named by a request: plain name, partial ARN or full ARN, with an optional qualifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionRef {
    pub name: String,
    pub qualifier: Option<Qualifier>,
    /// The account a partial or full ARN names.
    pub account: Option<String>,
}

/// Checks a bare function name against Lambda's pattern: 1–64 of `[a-zA-Z0-9-_]`.
pub fn validate_function_name(name: &str) -> Result<(), InvalidParameter> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(InvalidParameter::constraint(
            "functionName",
            Some(&name),
            "Member must satisfy regular expression pattern: [a-zA-Z0-9-_]+ and have length \
             between 1 and 64",
        ))
    }
}

impl FunctionRef {
    /// Parses what Lambda accepts as `FunctionName`: `name`, `name:qualifier`,
    /// `123456789012:function:name[:qualifier]` or
    /// `arn:aws:lambda:region:123456789012:function:name[:qualifier]`.
    pub fn parse(input: &str) -> Result<Self, InvalidParameter> {
        if input.len() > 170 {
            return Err(InvalidParameter::new("function name or ARN is too long"));
        }
        let parts: Vec<&str> = input.split(':').collect();
        let (name, qualifier, account) = match parts.as_slice() {
            [name] => (*name, None, None),
            [name, q] => (*name, Some(*q), None),
            [account, "function", name] if is_account(account) => (*name, None, Some(*account)),
            [account, "function", name, q] if is_account(account) => {
                (*name, Some(*q), Some(*account))
            }
            [
                "arn",
                partition,
                "lambda",
                region,
                account,
                "function",
                name,
            ] if valid_arn_prefix(partition, region, account) => (*name, None, Some(*account)),
            [
                "arn",
                partition,
                "lambda",
                region,
                account,
                "function",
                name,
                q,
            ] if valid_arn_prefix(partition, region, account) => (*name, Some(*q), Some(*account)),
            _ => {
                return Err(InvalidParameter::new(format!(
                    "invalid function name or ARN: {input:?}"
                )));
            }
        };
        validate_function_name(name)?;
        let qualifier = qualifier.map(Qualifier::parse).transpose()?;
        Ok(Self {
            name: name.to_owned(),
            qualifier,
            account: account.map(str::to_owned),
        })
    }
}

fn is_account(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit())
}

fn valid_arn_prefix(partition: &str, region: &str, account: &str) -> bool {
    partition.starts_with("aws")
        && !region.is_empty()
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && is_account(account)
}

/// The ARN nimbus reports for a function of an account.
pub fn function_arn(region: &str, account: &str, name: &str) -> String {
    format!("arn:aws:lambda:{region}:{account}:function:{name}")
}

/// The key a resource of an account is held under inside the node: its name for the default
/// account (so that a node's data from before accounts keeps its keys), `ACCOUNT/name` for any
/// other. Resource names never contain `/`, so the two forms cannot collide; the functions,
/// queues, rules, logs and usage of each account are kept apart by it.
pub fn scoped(account: &str, name: &str) -> String {
    if account == DEFAULT_ACCOUNT {
        name.to_owned()
    } else {
        format!("{account}/{name}")
    }
}

/// The account and the name of a key made by [`scoped`].
pub fn unscoped(key: &str) -> (&str, &str) {
    match key.split_once('/') {
        Some((account, name)) if is_account(account) => (account, name),
        _ => (DEFAULT_ACCOUNT, key),
    }
}

/// Whether `s` is a 12-digit account id.
pub fn valid_account(s: &str) -> bool {
    is_account(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scoped_keys_round_trip_and_keep_default_names() {
        assert_eq!(scoped(DEFAULT_ACCOUNT, "f"), "f");
        assert_eq!(scoped("123456789012", "f"), "123456789012/f");
        assert_eq!(unscoped("123456789012/f"), ("123456789012", "f"));
        assert_eq!(unscoped("f"), (DEFAULT_ACCOUNT, "f"));
        assert_eq!(unscoped("bad/f"), (DEFAULT_ACCOUNT, "bad/f"));
    }

    #[test]
    fn parses_every_form_lambda_accepts() {
        let plain = FunctionRef::parse("hello").unwrap();
        assert_eq!(plain.name, "hello");
        assert_eq!(plain.qualifier, None);
        let q = FunctionRef::parse("hello:$LATEST").unwrap();
        assert_eq!(q.qualifier, Some(Qualifier::Latest));
        let partial = FunctionRef::parse("123456789012:function:hello:prod").unwrap();
        assert_eq!(partial.name, "hello");
        assert_eq!(partial.qualifier, Some(Qualifier::Other("prod".into())));
        let arn =
            FunctionRef::parse("arn:aws:lambda:us-east-1:123456789012:function:hello").unwrap();
        assert_eq!(arn.name, "hello");
    }

    #[test]
    fn rejects_names_outside_the_pattern() {
        for bad in [
            "",
            "bad name",
            "a/b",
            "x".repeat(65).as_str(),
            "arn:aws:s3:::bucket",
            "a:b:c",
        ] {
            assert!(FunctionRef::parse(bad).is_err(), "{bad:?} must be rejected");
        }
        assert!(validate_function_name("ok-name_1").is_ok());
    }
}
