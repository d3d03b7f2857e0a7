//! Lambda layers: versioned packages of code or data that functions list in `Layers` and find
//! under `/opt` in their sandboxes, one on top of another in the order given.

use serde::{Deserialize, Serialize};

use crate::InvalidParameter;
use crate::function::CodeRef;

/// The most layers a function may use.
pub const MAX_LAYERS: usize = 5;

/// One published (immutable) version of a layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerVersion {
    pub account: String,
    pub name: String,
    pub version: u64,
    pub description: String,
    pub compatible_runtimes: Vec<String>,
    pub compatible_architectures: Vec<String>,
    pub license_info: Option<String>,
    pub code: CodeRef,
    pub created_ms: i64,
    /// Who else may use this version (`lambda:GetLayerVersion`).
    #[serde(default)]
    pub policy: Vec<LayerStatement>,
    /// Changes with every change of the policy.
    #[serde(default)]
    pub revision_id: String,
    /// Deleted: kept as a record only so that its number is never given again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
}

/// A statement of a layer version's policy: an account (or `*`, everyone; optionally only an
/// organization's) may use the version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerStatement {
    pub sid: String,
    pub principal: String,
    pub organization_id: Option<String>,
}

impl LayerVersion {
    pub fn layer_arn(&self, region: &str) -> String {
        format!(
            "arn:aws:lambda:{region}:{}:layer:{}",
            self.account, self.name
        )
    }

    pub fn version_arn(&self, region: &str) -> String {
        format!("{}:{}", self.layer_arn(region), self.version)
    }

    /// Whether `account` may use this version. A statement limited to an organization
    /// matches no one: this node has no organizations.
    pub fn usable_by(&self, account: &str) -> bool {
        account == self.account
            || self.policy.iter().any(|s| {
                s.organization_id.is_none() && (s.principal == "*" || s.principal == account)
            })
    }
}

/// A layer as a function uses it: the version's ARN and its package.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionLayer {
    pub arn: String,
    pub code: CodeRef,
}

/// Checks a layer's name: 1 to 140 of letters, digits, `-` and `_`.
pub fn validate_layer_name(name: &str) -> Result<(), InvalidParameter> {
    let ok = !name.is_empty()
        && name.len() <= 140
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(InvalidParameter::constraint(
            "layerName",
            Some(&name),
            "Member must satisfy regular expression pattern: [a-zA-Z0-9-_]+ and have length between 1 and 140",
        ))
    }
}

/// A layer version's ARN taken apart: `(account, name, version)`.
pub fn parse_layer_version_arn(arn: &str) -> Result<(String, String, u64), InvalidParameter> {
    let bad = || {
        InvalidParameter::constraint(
            "layers",
            Some(&arn),
            "Member must satisfy regular expression pattern: arn:[a-zA-Z0-9-]+:lambda:[a-zA-Z0-9-]+:\\d{12}:layer:[a-zA-Z0-9-_]+:[0-9]+",
        )
    };
    let parts: Vec<&str> = arn.split(':').collect();
    match parts.as_slice() {
        ["arn", _, "lambda", _, account, "layer", name, version]
            if account.len() == 12 && account.chars().all(|c| c.is_ascii_digit()) =>
        {
            validate_layer_name(name).map_err(|_| bad())?;
            let version = version
                .parse::<u64>()
                .ok()
                .filter(|v| *v > 0)
                .ok_or_else(bad)?;
            Ok(((*account).to_owned(), (*name).to_owned(), version))
        }
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arns_and_names() {
        assert_eq!(
            parse_layer_version_arn("arn:aws:lambda:us-east-1:000000000000:layer:deps_1:3")
                .unwrap(),
            ("000000000000".to_owned(), "deps_1".to_owned(), 3)
        );
        for bad in [
            "arn:aws:lambda:us-east-1:000000000000:layer:deps",
            "arn:aws:lambda:us-east-1:000000000000:layer:deps:0",
            "arn:aws:lambda:us-east-1:12:layer:deps:1",
            "arn:aws:lambda:us-east-1:000000000000:function:deps:1",
            "arn:aws:lambda:us-east-1:000000000000:layer:bad name:1",
        ] {
            assert!(parse_layer_version_arn(bad).is_err(), "{bad}");
        }
        assert!(validate_layer_name("ok-name_2").is_ok());
        assert!(validate_layer_name("").is_err() && validate_layer_name(&"x".repeat(141)).is_err());
    }
}
