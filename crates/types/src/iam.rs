//! IAM's entities as nimbus stores them: users and roles of an account, with their inline
//! policies (as the JSON documents they were given) and, for roles, the trust policy and the
//! managed policies attached.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// An IAM user: a principal with long-lived access keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub account: String,
    pub name: String,
    /// `AIDA…`, unique for the life of the node.
    pub user_id: String,
    pub path: String,
    pub created_ms: i64,
    /// Inline policies by name.
    #[serde(default)]
    pub policies: BTreeMap<String, String>,
}

impl User {
    pub fn arn(&self) -> String {
        format!(
            "arn:aws:iam::{}:user{}{}",
            self.account, self.path, self.name
        )
    }
}

/// An IAM role: a principal that is assumed, here by Lambda for a function's sandboxes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Role {
    pub account: String,
    pub name: String,
    /// `AROA…`, unique for the life of the node: a role deleted and made again under the same
    /// name is another role, and credentials of the first are not good for the second.
    pub role_id: String,
    pub path: String,
    #[serde(default)]
    pub description: String,
    /// The trust policy: who may assume the role.
    pub assume_role_policy: String,
    pub max_session_duration_s: u32,
    pub created_ms: i64,
    /// Inline policies by name.
    #[serde(default)]
    pub policies: BTreeMap<String, String>,
    /// ARNs of the managed policies attached.
    #[serde(default)]
    pub attached: Vec<String>,
}

impl Role {
    pub fn arn(&self) -> String {
        format!(
            "arn:aws:iam::{}:role{}{}",
            self.account, self.path, self.name
        )
    }
}

/// Whether `name` is a user or role name IAM accepts: 1 to 64 of letters, digits and `+=,.@_-`.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-".contains(&b))
}

/// Whether `name` is a policy name IAM accepts: 1 to 128 of the same letters as [`valid_name`].
pub fn valid_policy_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-".contains(&b))
}

/// Whether `path` is an IAM path: `/` alone, or `/` … `/` of printable ASCII, at most 512.
pub fn valid_path(path: &str) -> bool {
    (1..=512).contains(&path.len())
        && path.starts_with('/')
        && path.ends_with('/')
        && path.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

/// A role ARN taken apart: `arn:aws:iam::ACCOUNT:role/PATH/NAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleArn {
    pub account: String,
    pub path: String,
    pub name: String,
}

impl RoleArn {
    pub fn parse(arn: &str) -> Option<Self> {
        let rest = arn.strip_prefix("arn:aws:iam::")?;
        let (account, resource) = rest.split_once(':')?;
        if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let resource = resource.strip_prefix("role")?;
        let (path, name) = resource.rsplit_once('/')?;
        let path = format!("{path}/");
        (valid_path(&path) && valid_name(name)).then(|| Self {
            account: account.to_owned(),
            path,
            name: name.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_paths_and_role_arns() {
        assert!(valid_name("deploy-bot@example.com"));
        assert!(!valid_name(""));
        assert!(!valid_name("has space"));
        assert!(!valid_name(&"a".repeat(65)));
        assert!(valid_path("/"));
        assert!(valid_path("/service-role/"));
        assert!(!valid_path("service-role/"));
        assert!(!valid_path("/a b/"));
        let arn = RoleArn::parse("arn:aws:iam::123456789012:role/service-role/exec").unwrap();
        assert_eq!(arn.path, "/service-role/");
        assert_eq!(arn.name, "exec");
        assert_eq!(
            RoleArn::parse("arn:aws:iam::123456789012:role/exec")
                .unwrap()
                .path,
            "/"
        );
        assert!(RoleArn::parse("arn:aws:iam::12345:role/exec").is_none());
        assert!(RoleArn::parse("arn:aws:iam::123456789012:user/exec").is_none());
        assert!(RoleArn::parse("arn:aws:iam::123456789012:role/").is_none());
    }
}
