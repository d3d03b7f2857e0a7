//! A bucket's CORS rules, as S3 keeps and applies them: the first rule whose origin, method
//! and requested headers all match answers a browser's preflight and decorates the actual
//! response.

use serde::{Deserialize, Serialize};

use crate::Error;

/// One CORS rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CorsRule {
    pub id: Option<String>,
    /// Origins, each with at most one `*`.
    pub allowed_origins: Vec<String>,
    /// GET, PUT, POST, DELETE or HEAD.
    pub allowed_methods: Vec<String>,
    /// Request headers a preflight may name, each with at most one `*`; compared without case.
    pub allowed_headers: Vec<String>,
    /// Response headers the browser may show the page.
    pub expose_headers: Vec<String>,
    pub max_age_seconds: Option<i32>,
}

/// S3's limit on rules per bucket.
pub const MAX_CORS_RULES: usize = 100;
const METHODS: [&str; 5] = ["GET", "PUT", "POST", "DELETE", "HEAD"];

/// Checks rules as PutBucketCors does.
pub fn check_cors(rules: &[CorsRule]) -> Result<(), Error> {
    if rules.is_empty() || rules.len() > MAX_CORS_RULES {
        return Err(Error::MalformedXml(format!(
            "a CORS configuration holds 1 to {MAX_CORS_RULES} rules"
        )));
    }
    for rule in rules {
        if rule.allowed_origins.is_empty() || rule.allowed_methods.is_empty() {
            return Err(Error::MalformedXml(
                "each CORS rule names at least one AllowedOrigin and one AllowedMethod".into(),
            ));
        }
        for m in &rule.allowed_methods {
            if !METHODS.contains(&m.as_str()) {
                return Err(Error::InvalidRequest(format!(
                    "Found unsupported HTTP method in CORS config. Unsupported method is {m}"
                )));
            }
        }
        for o in &rule.allowed_origins {
            if o.matches('*').count() > 1 {
                return Err(Error::InvalidRequest(format!(
                    "AllowedOrigin \"{o}\" can not have more than one wildcard."
                )));
            }
        }
        for h in &rule.allowed_headers {
            if h.matches('*').count() > 1 {
                return Err(Error::InvalidRequest(format!(
                    "AllowedHeader \"{h}\" can not have more than one wildcard."
                )));
            }
        }
    }
    Ok(())
}

/// `value` against a pattern with at most one `*`.
fn wildcard(pattern: &str, value: &str, fold: bool) -> bool {
    let (p, v) = if fold {
        (pattern.to_ascii_lowercase(), value.to_ascii_lowercase())
    } else {
        (pattern.to_owned(), value.to_owned())
    };
    match p.split_once('*') {
        None => p == v,
        Some((head, tail)) => {
            v.len() >= head.len() + tail.len() && v.starts_with(head) && v.ends_with(tail)
        }
    }
}

/// The first rule that allows `origin` to make a `method` request with `headers` (the names a
/// preflight's `Access-Control-Request-Headers` lists).
pub fn cors_match<'a>(
    rules: &'a [CorsRule],
    origin: &str,
    method: &str,
    headers: &[&str],
) -> Option<&'a CorsRule> {
    rules.iter().find(|r| {
        r.allowed_origins.iter().any(|o| wildcard(o, origin, false))
            && r.allowed_methods.iter().any(|m| m == method)
            && headers.iter().all(|h| {
                r.allowed_headers
                    .iter()
                    .any(|a| wildcard(a, h.trim(), true))
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(origins: &[&str], methods: &[&str], headers: &[&str]) -> CorsRule {
        CorsRule {
            id: None,
            allowed_origins: origins.iter().map(|s| (*s).to_owned()).collect(),
            allowed_methods: methods.iter().map(|s| (*s).to_owned()).collect(),
            allowed_headers: headers.iter().map(|s| (*s).to_owned()).collect(),
            expose_headers: vec!["ETag".into()],
            max_age_seconds: Some(300),
        }
    }

    #[test]
    fn the_first_matching_rule_answers() {
        let rules = [
            rule(
                &["https://app.example.com"],
                &["PUT", "POST"],
                &["content-type", "x-amz-*"],
            ),
            rule(&["https://*.example.com"], &["GET"], &[]),
        ];
        assert!(
            cors_match(
                &rules,
                "https://app.example.com",
                "PUT",
                &["Content-Type", "x-amz-date"]
            )
            .is_some()
        );
        assert!(cors_match(&rules, "https://app.example.com", "PUT", &["authorization"]).is_none());
        assert!(cors_match(&rules, "https://cdn.example.com", "GET", &[]).is_some());
        assert!(cors_match(&rules, "https://cdn.example.com", "PUT", &[]).is_none());
        assert!(cors_match(&rules, "https://evil.com", "GET", &[]).is_none());
        assert!(
            cors_match(
                &[rule(&["*"], &["GET"], &["*"])],
                "http://x",
                "GET",
                &["anything"]
            )
            .is_some()
        );
    }

    #[test]
    fn bad_rules_are_refused() {
        assert!(check_cors(&[rule(&["*"], &["GET"], &[])]).is_ok());
        assert!(check_cors(&[]).is_err());
        assert!(check_cors(&[rule(&["*"], &["PATCH"], &[])]).is_err());
        assert!(check_cors(&[rule(&["https://*.*.com"], &["GET"], &[])]).is_err());
        assert!(check_cors(&[rule(&[], &["GET"], &[])]).is_err());
    }
}
