//! IAM policy documents: parsed and checked when they are stored, evaluated on every request
//! of a principal that is not an account's root.
//!
//! Evaluation follows IAM's rules for identity-based policies: a request is allowed when some
//! statement allows it and none denies it; an explicit `Deny` wins over any `Allow`; anything
//! not allowed is denied. `Action`/`NotAction` and `Resource`/`NotResource` take `*` (any run
//! of characters) and `?` (one character); actions compare without regard to case, resources
//! exactly. Conditions are not evaluated: an `Allow` with a `Condition` never applies and a
//! `Deny` with one always does, so a condition can only ever take permissions away.

use serde_json::Value;

/// Why a policy document was refused: IAM's `MalformedPolicyDocument`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Malformed(pub String);

/// What a policy is for, which decides the fields a statement must and must not have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Attached to a user or role: says what it may do. Needs `Resource`, has no `Principal`.
    Identity,
    /// A role's trust policy: says who may assume it. Needs `Principal`, has no `Resource`.
    Trust,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    Allow,
    Deny,
}

/// A list of patterns that either names what matches (`Action`) or what does not
/// (`NotAction`).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Patterns {
    Any(Vec<String>),
    None(Vec<String>),
}

impl Patterns {
    fn matches(&self, value: &str, fold_case: bool) -> bool {
        let hit = |list: &[String]| list.iter().any(|p| wildcard(p, value, fold_case));
        match self {
            Self::Any(list) => hit(list),
            Self::None(list) => !hit(list),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Statement {
    effect: Effect,
    actions: Patterns,
    resources: Option<Patterns>,
    /// Service principals named by a trust policy (`lambda.amazonaws.com`), and `*`.
    services: Vec<String>,
    /// AWS principals (account ids and ARNs) named by a trust policy.
    aws: Vec<String>,
    conditional: bool,
}

/// A parsed policy document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    statements: Vec<Statement>,
}

/// The outcome of evaluating a request against a set of policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// No statement allows it.
    ImplicitDeny,
    /// A statement denies it.
    ExplicitDeny,
}

/// The longest document accepted at all, before any quota on a principal's policies.
pub const MAX_DOCUMENT_BYTES: usize = 131_072;

/// A policy's size as IAM counts it against quotas: without whitespace.
pub fn quota_size(document: &str) -> usize {
    document.chars().filter(|c| !c.is_whitespace()).count()
}

fn one_or_many<'a>(value: &'a Value, field: &str) -> Result<Vec<&'a str>, Malformed> {
    let bad = || Malformed(format!("{field} must be a string or a list of strings"));
    match value {
        Value::String(s) => Ok(vec![s.as_str()]),
        Value::Array(items) if !items.is_empty() => {
            items.iter().map(|i| i.as_str().ok_or_else(bad)).collect()
        }
        _ => Err(bad()),
    }
}

fn pair(
    statement: &serde_json::Map<String, Value>,
    yes: &str,
    no: &str,
) -> Result<Option<(bool, Vec<String>)>, Malformed> {
    match (statement.get(yes), statement.get(no)) {
        (Some(_), Some(_)) => Err(Malformed(format!(
            "Statement has both {yes} and {no}; it may have one."
        ))),
        (Some(v), None) => Ok(Some((true, owned(one_or_many(v, yes)?)))),
        (None, Some(v)) => Ok(Some((false, owned(one_or_many(v, no)?)))),
        (None, None) => Ok(None),
    }
}

fn owned(list: Vec<&str>) -> Vec<String> {
    list.into_iter().map(str::to_owned).collect()
}

fn check_action(action: &str) -> Result<(), Malformed> {
    if action == "*" {
        return Ok(());
    }
    match action.split_once(':') {
        Some((vendor, name))
            if !vendor.is_empty()
                && !name.is_empty()
                && vendor
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"*?-_".contains(&b)) =>
        {
            Ok(())
        }
        _ => Err(Malformed(format!(
            "Action {action:?} must be '*' or a service prefix and an action, such as \
             lambda:InvokeFunction."
        ))),
    }
}

fn check_resource(resource: &str) -> Result<(), Malformed> {
    if resource == "*" || resource.starts_with("arn:") {
        Ok(())
    } else {
        Err(Malformed(format!(
            "Resource {resource} must be in ARN format or \"*\"."
        )))
    }
}

impl Policy {
    /// Parses and checks a document of the given kind.
    pub fn parse(document: &str, kind: Kind) -> Result<Self, Malformed> {
        if document.len() > MAX_DOCUMENT_BYTES {
            return Err(Malformed(format!(
                "The policy document is longer than {MAX_DOCUMENT_BYTES} bytes."
            )));
        }
        let value: Value = serde_json::from_str(document)
            .map_err(|_| Malformed("The policy document is not valid JSON.".into()))?;
        let Value::Object(top) = value else {
            return Err(Malformed(
                "The policy document must be a JSON object.".into(),
            ));
        };
        for key in top.keys() {
            if !matches!(key.as_str(), "Version" | "Id" | "Statement") {
                return Err(Malformed(format!("Policy has an unknown field {key}.")));
            }
        }
        match top.get("Version").and_then(Value::as_str) {
            Some("2012-10-17" | "2008-10-17") => {}
            Some(other) => {
                return Err(Malformed(format!(
                    "The policy's Version {other:?} is not one IAM knows: 2012-10-17 or 2008-10-17."
                )));
            }
            None => {
                return Err(Malformed(
                    "The policy must name its Version, 2012-10-17.".into(),
                ));
            }
        }
        let statements = match top.get("Statement") {
            Some(Value::Array(list)) if !list.is_empty() => list.iter().collect::<Vec<_>>(),
            Some(one @ Value::Object(_)) => vec![one],
            _ => {
                return Err(Malformed(
                    "The policy must have a Statement: an object or a non-empty list.".into(),
                ));
            }
        };
        let statements = statements
            .into_iter()
            .map(|s| statement(s, kind))
            .collect::<Result<_, _>>()?;
        Ok(Self { statements })
    }

    /// This policy's verdict on one action on one resource, not combined with any other.
    pub fn decide(&self, action: &str, resource: &str) -> Decision {
        let mut decision = Decision::ImplicitDeny;
        for s in &self.statements {
            let applies = s.actions.matches(action, true)
                && s.resources
                    .as_ref()
                    .is_none_or(|r| r.matches(resource, false));
            if !applies {
                continue;
            }
            match s.effect {
                Effect::Deny => return Decision::ExplicitDeny,
                Effect::Allow if !s.conditional => decision = Decision::Allow,
                Effect::Allow => {}
            }
        }
        decision
    }

    /// Whether a trust policy lets `service` (`lambda.amazonaws.com`) perform `action`
    /// (`sts:AssumeRole`), with no statement denying it.
    pub fn trusts_service(&self, service: &str, action: &str) -> bool {
        let mut allowed = false;
        for s in &self.statements {
            let names = s.services.iter().any(|p| p == service || p == "*")
                || s.aws.iter().any(|p| p == "*");
            if !names || !s.actions.matches(action, true) {
                continue;
            }
            match s.effect {
                Effect::Deny => return false,
                Effect::Allow if !s.conditional => allowed = true,
                Effect::Allow => {}
            }
        }
        allowed
    }
}

fn statement(value: &Value, kind: Kind) -> Result<Statement, Malformed> {
    let Value::Object(s) = value else {
        return Err(Malformed("Each statement must be a JSON object.".into()));
    };
    for key in s.keys() {
        if !matches!(
            key.as_str(),
            "Sid"
                | "Effect"
                | "Action"
                | "NotAction"
                | "Resource"
                | "NotResource"
                | "Principal"
                | "NotPrincipal"
                | "Condition"
        ) {
            return Err(Malformed(format!("Statement has an unknown field {key}.")));
        }
    }
    let effect = match s.get("Effect").and_then(Value::as_str) {
        Some("Allow") => Effect::Allow,
        Some("Deny") => Effect::Deny,
        Some(other) => {
            return Err(Malformed(format!(
                "Effect {other:?} is neither Allow nor Deny."
            )));
        }
        None => return Err(Malformed("Statement has no Effect.".into())),
    };
    let actions = match pair(s, "Action", "NotAction")? {
        Some((positive, list)) => {
            for a in &list {
                check_action(a)?;
            }
            if positive {
                Patterns::Any(list)
            } else {
                Patterns::None(list)
            }
        }
        None => return Err(Malformed("Statement has no Action or NotAction.".into())),
    };
    let resources = pair(s, "Resource", "NotResource")?;
    let (mut services, mut aws) = (Vec::new(), Vec::new());
    match kind {
        Kind::Identity => {
            if s.contains_key("Principal") || s.contains_key("NotPrincipal") {
                return Err(Malformed(
                    "Policy document should not specify a principal.".into(),
                ));
            }
            if resources.is_none() {
                return Err(Malformed(
                    "Statement has no Resource or NotResource.".into(),
                ));
            }
        }
        Kind::Trust => {
            if resources.is_some() {
                return Err(Malformed("Has prohibited field Resource.".into()));
            }
            if s.contains_key("NotPrincipal") {
                return Err(Malformed(
                    "NotPrincipal is not supported in a trust policy here.".into(),
                ));
            }
            match s.get("Principal") {
                Some(Value::String(star)) if star == "*" => aws.push("*".to_owned()),
                Some(Value::Object(map)) if !map.is_empty() => {
                    for (kind, names) in map {
                        let names = owned(one_or_many(names, "Principal")?);
                        match kind.as_str() {
                            "Service" => services.extend(names),
                            "AWS" => aws.extend(names),
                            "Federated" | "CanonicalUser" => {}
                            other => {
                                return Err(Malformed(format!(
                                    "Principal has an unknown kind {other}."
                                )));
                            }
                        }
                    }
                }
                _ => {
                    return Err(Malformed(
                        "A trust policy's statement must name its Principal.".into(),
                    ));
                }
            }
        }
    }
    let resources = match resources {
        Some((positive, list)) => {
            for r in &list {
                check_resource(r)?;
            }
            Some(if positive {
                Patterns::Any(list)
            } else {
                Patterns::None(list)
            })
        }
        None => None,
    };
    let conditional = match s.get("Condition") {
        None => false,
        Some(Value::Object(_)) => true,
        Some(_) => return Err(Malformed("Condition must be a JSON object.".into())),
    };
    Ok(Statement {
        effect,
        actions,
        resources,
        services,
        aws,
        conditional,
    })
}

/// Combines the verdicts of several policies: any explicit deny wins, then any allow.
pub fn decide_all<'a>(
    policies: impl IntoIterator<Item = &'a Policy>,
    action: &str,
    resource: &str,
) -> Decision {
    let mut decision = Decision::ImplicitDeny;
    for p in policies {
        match p.decide(action, resource) {
            Decision::ExplicitDeny => return Decision::ExplicitDeny,
            Decision::Allow => decision = Decision::Allow,
            Decision::ImplicitDeny => {}
        }
    }
    decision
}

/// Matches `value` against a pattern with `*` (any run, also empty) and `?` (one character).
pub fn wildcard(pattern: &str, value: &str, fold_case: bool) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let v: Vec<char> = value.chars().collect();
    let same = |a: char, b: char| {
        if fold_case {
            a.eq_ignore_ascii_case(&b)
        } else {
            a == b
        }
    };
    // The classic linear-backtracking match: remember the last `*` and retry from one
    // character further each time the rest fails.
    let (mut pi, mut vi) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while vi < v.len() {
        if pi < p.len() && (p[pi] == '?' || (p[pi] != '*' && same(p[pi], v[vi]))) {
            pi += 1;
            vi += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, vi));
            pi += 1;
        } else if let Some((sp, sv)) = star {
            pi = sp + 1;
            vi = sv + 1;
            star = Some((sp, sv + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(doc: &str) -> Policy {
        Policy::parse(doc, Kind::Identity).unwrap()
    }

    const FN: &str = "arn:aws:lambda:us-east-1:000000000000:function:orders";

    #[test]
    fn wildcards() {
        assert!(wildcard("*", "", false));
        assert!(wildcard("lambda:*", "lambda:InvokeFunction", false));
        assert!(wildcard("lambda:get*", "lambda:GetFunction", true));
        assert!(!wildcard("lambda:get*", "lambda:GetFunction", false));
        assert!(wildcard("a?c", "abc", false));
        assert!(!wildcard("a?c", "ac", false));
        assert!(wildcard("*:function:or*rs", FN, false));
        assert!(wildcard("a*b*c", "aXbYbZc", false));
        assert!(!wildcard("a*b*c", "aXbYbZ", false));
        assert!(wildcard("**", "x", false));
    }

    #[test]
    fn allow_deny_and_default() {
        let p = identity(&format!(
            r#"{{"Version":"2012-10-17","Statement":[
                {{"Effect":"Allow","Action":"lambda:InvokeFunction","Resource":"{FN}"}}]}}"#
        ));
        assert_eq!(p.decide("lambda:InvokeFunction", FN), Decision::Allow);
        assert_eq!(p.decide("lambda:invokefunction", FN), Decision::Allow);
        assert_eq!(
            p.decide("lambda:InvokeFunction", &format!("{FN}x")),
            Decision::ImplicitDeny
        );
        assert_eq!(p.decide("lambda:GetFunction", FN), Decision::ImplicitDeny);

        let deny = identity(
            r#"{"Version":"2012-10-17","Statement":{"Effect":"Deny","Action":"lambda:*","Resource":"*"}}"#,
        );
        assert_eq!(
            decide_all([&p, &deny], "lambda:InvokeFunction", FN),
            Decision::ExplicitDeny
        );
        assert_eq!(
            decide_all([&deny, &p], "lambda:InvokeFunction", FN),
            Decision::ExplicitDeny
        );
    }

    #[test]
    fn not_action_and_not_resource() {
        let p = identity(
            r#"{"Version":"2012-10-17","Statement":[
                {"Effect":"Allow","NotAction":"iam:*","NotResource":"arn:aws:sqs:*:*:secret-*"}]}"#,
        );
        assert_eq!(p.decide("lambda:GetFunction", FN), Decision::Allow);
        assert_eq!(p.decide("iam:CreateUser", "*"), Decision::ImplicitDeny);
        assert_eq!(
            p.decide(
                "sqs:SendMessage",
                "arn:aws:sqs:us-east-1:000000000000:secret-q"
            ),
            Decision::ImplicitDeny
        );
    }

    #[test]
    fn conditions_only_take_away() {
        let p = identity(
            r#"{"Version":"2012-10-17","Statement":[
                {"Effect":"Allow","Action":"*","Resource":"*","Condition":{"Bool":{"aws:SecureTransport":"true"}}},
                {"Effect":"Deny","Action":"sqs:*","Resource":"*","Condition":{"Bool":{"aws:SecureTransport":"false"}}},
                {"Effect":"Allow","Action":"lambda:*","Resource":"*"}]}"#,
        );
        assert_eq!(p.decide("lambda:GetFunction", FN), Decision::Allow);
        assert_eq!(p.decide("sqs:SendMessage", "*"), Decision::ExplicitDeny);
        assert_eq!(p.decide("events:PutRule", "*"), Decision::ImplicitDeny);
    }

    #[test]
    fn malformed_documents() {
        for (doc, why) in [
            ("not json", "JSON"),
            ("[]", "object"),
            (r#"{"Statement":[]}"#, "Version"),
            (r#"{"Version":"2020-01-01","Statement":[]}"#, "Version"),
            (r#"{"Version":"2012-10-17"}"#, "Statement"),
            (r#"{"Version":"2012-10-17","Statement":[]}"#, "Statement"),
            (
                r#"{"Version":"2012-10-17","Statement":[{"Effect":"Maybe","Action":"*","Resource":"*"}]}"#,
                "Allow nor Deny",
            ),
            (
                r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Resource":"*"}]}"#,
                "no Action",
            ),
            (
                r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*"}]}"#,
                "no Resource",
            ),
            (
                r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"invoke","Resource":"*"}]}"#,
                "service prefix",
            ),
            (
                r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"orders"}]}"#,
                "ARN",
            ),
            (
                r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*","Principal":"*"}]}"#,
                "principal",
            ),
            (
                r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","NotAction":"x:y","Resource":"*"}]}"#,
                "both",
            ),
            (
                r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":[],"Resource":"*"}]}"#,
                "list of strings",
            ),
            (
                r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*","Colour":1}]}"#,
                "unknown field",
            ),
        ] {
            let err = Policy::parse(doc, Kind::Identity).expect_err(doc);
            assert!(err.0.contains(why), "{doc}: {err}");
        }
        let huge = format!(
            r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Action":"*","Resource":"{}"}}]}}"#,
            "x".repeat(MAX_DOCUMENT_BYTES)
        );
        assert!(Policy::parse(&huge, Kind::Identity).is_err());
    }

    #[test]
    fn trust_policies() {
        let lambda = Policy::parse(
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow",
                "Principal":{"Service":["lambda.amazonaws.com","edgelambda.amazonaws.com"]},
                "Action":"sts:AssumeRole"}]}"#,
            Kind::Trust,
        )
        .unwrap();
        assert!(lambda.trusts_service("lambda.amazonaws.com", "sts:AssumeRole"));
        assert!(!lambda.trusts_service("ec2.amazonaws.com", "sts:AssumeRole"));
        let ec2 = Policy::parse(
            r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}}"#,
            Kind::Trust,
        )
        .unwrap();
        assert!(!ec2.trusts_service("lambda.amazonaws.com", "sts:AssumeRole"));
        assert!(
            Policy::parse(
                r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"sts:AssumeRole","Resource":"*"}}"#,
                Kind::Trust
            )
            .is_err()
        );
    }
}
