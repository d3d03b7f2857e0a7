//! Who made a request and what they may do, as the APIs see it.

use std::sync::Arc;

use crate::policy::{Decision, Policy, decide_all};

/// The principal behind a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// The account itself: its administrator keys. Allowed everything in the account.
    Root,
    User {
        name: String,
        path: String,
    },
    /// A role's session: a sandbox running a function with that role.
    Role {
        name: String,
        session: String,
    },
}

/// What a principal's policies allow.
#[derive(Debug, Clone)]
pub enum Grants {
    All,
    Policies(Arc<[Policy]>),
}

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub account: String,
    pub access_key_id: String,
    pub principal: Principal,
    pub grants: Grants,
}

/// A request made inside the node on a caller's behalf (a stack's resources are made so): the
/// gateway takes the caller from here instead of from a signature. Only code in the node can
/// put it on a request; nothing from the network becomes a request extension.
#[derive(Debug, Clone)]
pub struct InProcess(pub Caller);

/// A request its caller's policies do not allow: `AccessDeniedException`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Denied {
    pub message: String,
}

impl Caller {
    /// An account's root, as every request is when authentication is off.
    pub fn root(account: &str) -> Self {
        Self {
            account: account.to_owned(),
            access_key_id: String::new(),
            principal: Principal::Root,
            grants: Grants::All,
        }
    }

    /// The caller's ARN, as IAM's messages and `GetCallerIdentity` name it.
    pub fn arn(&self) -> String {
        match &self.principal {
            Principal::Root => format!("arn:aws:iam::{}:root", self.account),
            Principal::User { name, path } => {
                format!("arn:aws:iam::{}:user{path}{name}", self.account)
            }
            Principal::Role { name, session } => {
                format!(
                    "arn:aws:sts::{}:assumed-role/{name}/{session}",
                    self.account
                )
            }
        }
    }

    pub fn is_root(&self) -> bool {
        matches!(self.grants, Grants::All)
    }

    /// Whether the caller may perform `action` (`lambda:InvokeFunction`) on `resource` (an ARN,
    /// or `*` for actions on no one resource).
    ///
    /// A resource of another account is refused to everyone, the account's root included:
    /// nimbus has no resource-based policies that could grant it.
    pub fn authorize(&self, action: &str, resource: &str) -> Result<(), Denied> {
        if let Some(other) = resource_account(resource)
            && other != self.account
        {
            return Err(Denied {
                message: format!(
                    "User: {} is not authorized to perform: {action} on resource: {resource} \
                     because no resource-based policy allows the {action} action",
                    self.arn()
                ),
            });
        }
        let policies = match &self.grants {
            Grants::All => return Ok(()),
            Grants::Policies(p) => p,
        };
        let why = match decide_all(policies.iter(), action, resource) {
            Decision::Allow => return Ok(()),
            Decision::ExplicitDeny => {
                "with an explicit deny in an identity-based policy".to_owned()
            }
            Decision::ImplicitDeny => {
                format!("because no identity-based policy allows the {action} action")
            }
        };
        Err(Denied {
            message: format!(
                "User: {} is not authorized to perform: {action} on resource: {resource} {why}",
                self.arn()
            ),
        })
    }
}

impl Caller {
    /// [`Caller::authorize`] for a resource whose own policy allows this caller
    /// (`resource_allows`): within the account, either policy allowing is enough (an explicit
    /// deny in an identity policy still refuses); for another account's resource, its policy
    /// must allow the caller and the caller's own policies must allow the action.
    pub fn authorize_with_resource_policy(
        &self,
        action: &str,
        resource: &str,
        resource_allows: bool,
    ) -> bool {
        let same_account = resource_account(resource).is_none_or(|a| a == self.account);
        let identity = match &self.grants {
            Grants::All => Decision::Allow,
            Grants::Policies(p) => decide_all(p.iter(), action, resource),
        };
        match identity {
            Decision::Allow => same_account || resource_allows,
            Decision::ExplicitDeny => false,
            Decision::ImplicitDeny => same_account && resource_allows,
        }
    }
}

/// The account field of an ARN, when it has one.
fn resource_account(resource: &str) -> Option<&str> {
    let mut parts = resource.splitn(6, ':');
    if parts.next() != Some("arn") {
        return None;
    }
    let account = parts.nth(3)?;
    (!account.is_empty()).then_some(account)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Kind;

    #[test]
    fn denial_names_principal_action_and_resource() {
        let policy = Policy::parse(
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"lambda:InvokeFunction","Resource":"*"}]}"#,
            Kind::Identity,
        )
        .unwrap();
        let caller = Caller {
            account: "123456789012".into(),
            access_key_id: "NKIAEXAMPLE".into(),
            principal: Principal::User {
                name: "bob".into(),
                path: "/".into(),
            },
            grants: Grants::Policies(vec![policy].into()),
        };
        assert!(caller.authorize("lambda:InvokeFunction", "arn:x").is_ok());
        let denied = caller
            .authorize(
                "lambda:DeleteFunction",
                "arn:aws:lambda:us-east-1:123456789012:function:f",
            )
            .unwrap_err();
        assert_eq!(
            denied.message,
            "User: arn:aws:iam::123456789012:user/bob is not authorized to perform: \
             lambda:DeleteFunction on resource: arn:aws:lambda:us-east-1:123456789012:function:f \
             because no identity-based policy allows the lambda:DeleteFunction action"
        );
        assert!(
            Caller::root("123456789012")
                .authorize("iam:DeleteRole", "*")
                .is_ok()
        );
        let other = Caller::root("123456789012")
            .authorize(
                "lambda:GetFunction",
                "arn:aws:lambda:us-east-1:210987654321:function:f",
            )
            .unwrap_err();
        assert!(
            other
                .message
                .ends_with("because no resource-based policy allows the lambda:GetFunction action"),
            "{}",
            other.message
        );
    }
}
