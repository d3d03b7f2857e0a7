//! Aliases: named pointers to a published version of a function, optionally splitting
//! invocations between that version and one other by weight (Lambda's weighted aliases, the
//! mechanism of canary and linear deployments).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::InvalidParameter;
use crate::name::LATEST;

/// One alias of a function, kept on the function's `$LATEST` record under its name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alias {
    /// The version it points to: a published version's number, or `$LATEST`.
    pub function_version: String,
    #[serde(default)]
    pub description: String,
    /// At most one other published version and the share of invocations (0.0–1.0) it gets.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub additional_weights: BTreeMap<String, f64>,
    /// Changes on every update of the alias.
    pub revision_id: String,
}

impl Alias {
    /// The version one invocation runs: the additional version with its weight's probability,
    /// else the primary. `draw` is uniform in `[0, 1)`.
    pub fn pick(&self, draw: f64) -> &str {
        let mut acc = 0.0;
        for (version, weight) in &self.additional_weights {
            acc += weight;
            if draw < acc {
                return version;
            }
        }
        &self.function_version
    }
}

/// Checks an alias name against Lambda's pattern: 1–128 of `[a-zA-Z0-9-_]`, not all digits
/// (which would read as a version number) and not `$LATEST`.
pub fn validate_alias_name(name: &str) -> Result<(), InvalidParameter> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && !name.bytes().all(|b| b.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(InvalidParameter::constraint(
            "name",
            Some(&name),
            "Member must satisfy regular expression pattern: (?!^[0-9]+$)([a-zA-Z0-9-_]+)",
        ))
    }
}

/// Checks a version an alias names: `$LATEST` or a version number.
pub fn validate_alias_version(version: &str) -> Result<(), InvalidParameter> {
    let ok = version == LATEST
        || (!version.is_empty()
            && version.len() <= 10
            && version.bytes().all(|b| b.is_ascii_digit())
            && !version.starts_with('0'));
    if ok {
        Ok(())
    } else {
        Err(InvalidParameter::constraint(
            "functionVersion",
            Some(&version),
            "Member must satisfy regular expression pattern: (\\$LATEST|[0-9]+)",
        ))
    }
}

/// Checks an alias's routing configuration against its primary version: at most one other
/// version, a published one different from the primary (itself published), with a weight in
/// `[0, 1]`.
pub fn validate_routing(
    primary: &str,
    weights: &BTreeMap<String, f64>,
) -> Result<(), InvalidParameter> {
    if weights.is_empty() {
        return Ok(());
    }
    if weights.len() > 1 {
        return Err(InvalidParameter::constraint(
            "routingConfig.additionalVersionWeights",
            None,
            "Member must have length less than or equal to 1",
        ));
    }
    for (version, weight) in weights {
        validate_alias_version(version)?;
        if !(0.0..=1.0).contains(weight) || !weight.is_finite() {
            return Err(InvalidParameter::constraint(
                "routingConfig.additionalVersionWeights",
                Some(weight),
                "Map value must satisfy constraint: [Member must have value less than or equal \
                 to 1.0, Member must have value greater than or equal to 0.0]",
            ));
        }
        if version == LATEST || primary == LATEST {
            return Err(InvalidParameter::new(
                "$LATEST is not supported for an alias pointing to more than 1 version",
            ));
        }
        if version == primary {
            return Err(InvalidParameter::new(format!(
                "Invalid function version {version}. Function version {version} is already \
                 included in routing configuration."
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alias(primary: &str, extra: &[(&str, f64)]) -> Alias {
        Alias {
            function_version: primary.into(),
            description: String::new(),
            additional_weights: extra.iter().map(|(v, w)| ((*v).into(), *w)).collect(),
            revision_id: "r".into(),
        }
    }

    #[test]
    fn names_and_versions_follow_lambdas_patterns() {
        for good in ["live", "prod-1", "v_2", "a1"] {
            assert!(validate_alias_name(good).is_ok(), "{good}");
        }
        for bad in ["", "123", "$LATEST", "a:b", "a/b", &"x".repeat(129)] {
            assert!(validate_alias_name(bad).is_err(), "{bad}");
        }
        for good in ["$LATEST", "1", "42"] {
            assert!(validate_alias_version(good).is_ok(), "{good}");
        }
        for bad in ["", "0", "01", "latest", "1.5", "12345678901"] {
            assert!(validate_alias_version(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn routing_allows_one_other_published_version_with_a_weight_in_range() {
        let w = |v: &[(&str, f64)]| v.iter().map(|(a, b)| ((*a).into(), *b)).collect();
        assert!(validate_routing("1", &w(&[("2", 0.1)])).is_ok());
        assert!(validate_routing("$LATEST", &w(&[])).is_ok());
        for (primary, bad) in [
            ("1", w(&[("2", 0.1), ("3", 0.1)])),
            ("1", w(&[("2", 1.5)])),
            ("1", w(&[("2", -0.1)])),
            ("1", w(&[("2", f64::NAN)])),
            ("1", w(&[("1", 0.5)])),
            ("1", w(&[("$LATEST", 0.5)])),
            ("$LATEST", w(&[("2", 0.5)])),
        ] {
            assert!(
                validate_routing(primary, &bad).is_err(),
                "{primary} {bad:?}"
            );
        }
    }

    #[test]
    fn pick_splits_by_weight() {
        let a = alias("1", &[("2", 0.25)]);
        assert_eq!(a.pick(0.0), "2");
        assert_eq!(a.pick(0.2499), "2");
        assert_eq!(a.pick(0.25), "1");
        assert_eq!(a.pick(0.99), "1");
        assert_eq!(alias("3", &[]).pick(0.0), "3");
        assert_eq!(alias("1", &[("2", 0.0)]).pick(0.0), "1");
    }
}
