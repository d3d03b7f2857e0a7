//! Gradual deployments of an alias (SAM's `DeploymentPreference`): the new version gets a
//! share of the alias's traffic in steps (`Canary10Percent5Minutes`,
//! `Linear10PercentEvery1Minute`, …), while its invocations are watched; too many failures
//! send the alias back to the old version and fail the step, which rolls the stack back.

use std::time::Duration;

use axum::http::Method;
use serde_json::{Value, json};

use super::{Ctx, ProviderError, Result, seg};

/// `(percent, minutes)`: the share the new version gets and how long it keeps it, step by
/// step; the alias then moves over entirely.
pub fn steps(kind: &str) -> Result<Vec<(u32, f64)>> {
    let bad = || {
        ProviderError::new(format!(
            "DeploymentPreference type {kind} is not one of AllAtOnce, CanaryNPercentMMinutes, \
             LinearNPercentEveryMMinute(s)."
        ))
    };
    if kind == "AllAtOnce" {
        return Ok(Vec::new());
    }
    // `{percent}{separator}{minutes}Minute(s)`: the share (1–99) and the minutes (from 1).
    let parse = |rest: &str, separator: &str| -> Option<(u32, u32)> {
        let number = |s: &str| s.parse::<u32>().ok().filter(|n| *n > 0);
        let (percent, minutes) = rest.split_once(separator)?;
        let minutes = minutes
            .strip_suffix("Minutes")
            .or_else(|| minutes.strip_suffix("Minute"))?;
        Some((number(percent).filter(|p| *p < 100)?, number(minutes)?))
    };
    if let Some(rest) = kind.strip_prefix("Canary") {
        let (p, m) = parse(rest, "Percent").ok_or_else(bad)?;
        return Ok(vec![(p, f64::from(m))]);
    }
    if let Some(rest) = kind.strip_prefix("Linear") {
        let (p, m) = parse(rest, "PercentEvery").ok_or_else(bad)?;
        return Ok((1..)
            .map(|i| i * p)
            .take_while(|share| *share < 100)
            .map(|share| (share, f64::from(m)))
            .collect());
    }
    Err(bad())
}

/// The preference's steps, or `None` when the alias moves at once (no preference, disabled,
/// or AllAtOnce). Refuses what this node cannot do.
pub fn preference(props: &Value) -> Result<Option<Vec<(u32, f64)>>> {
    let Some(dp) = props.get("DeploymentPreference") else {
        return Ok(None);
    };
    if matches!(dp.get("Enabled"), Some(Value::Bool(false)))
        || dp.get("Enabled").and_then(Value::as_str) == Some("false")
    {
        return Ok(None);
    }
    if dp.get("Hooks").is_some() {
        return Err(ProviderError::new(
            "DeploymentPreference Hooks (PreTraffic, PostTraffic) are not supported by this node.",
        ));
    }
    let kind = dp
        .get("Type")
        .and_then(Value::as_str)
        .ok_or_else(|| ProviderError::new("DeploymentPreference needs a Type."))?;
    let steps = steps(kind)?;
    Ok((!steps.is_empty()).then_some(steps))
}

/// Moves `alias` of `function` from `from` to `to` step by step, watching `to`'s invocations.
pub async fn shift(
    ctx: &Ctx<'_>,
    function: &str,
    alias: &str,
    from: &str,
    to: &str,
    steps: &[(u32, f64)],
) -> Result<()> {
    let path = format!(
        "/2015-03-31/functions/{}/aliases/{}",
        seg(function),
        seg(alias)
    );
    let started = nimbus_types::time::now_ms();
    for (percent, minutes) in steps {
        let weight = f64::from(*percent) / 100.0;
        ctx.rest(Method::PUT, &path, Some(&json!({"FunctionVersion": from, "RoutingConfig": {"AdditionalVersionWeights": {to: weight}}})))
            .await?;
        tracing::info!(function, alias, version = to, percent, "traffic shift step");
        let hold = Duration::from_secs_f64((minutes * 60.0 / ctx.shifts.speed.max(1e-3)).max(0.0));
        let until = tokio::time::Instant::now() + hold;
        loop {
            if let Err(e) = healthy(ctx, function, to, started).await {
                // Everything back on the old version before the stack rolls back.
                ctx.rest(Method::PUT, &path, Some(&json!({"FunctionVersion": from, "RoutingConfig": {"AdditionalVersionWeights": {}}})))
                    .await?;
                return Err(e);
            }
            let now = tokio::time::Instant::now();
            if now >= until {
                break;
            }
            tokio::time::sleep((until - now).min(Duration::from_millis(500))).await;
        }
    }
    ctx.rest(
        Method::PUT,
        &path,
        Some(&json!({"FunctionVersion": to, "RoutingConfig": {"AdditionalVersionWeights": {}}})),
    )
    .await?;
    Ok(())
}

/// Fails when more of `version`'s invocations since `since_ms` failed than the node allows.
async fn healthy(ctx: &Ctx<'_>, function: &str, version: &str, since_ms: i64) -> Result<()> {
    let Some(telemetry) = ctx.shifts.telemetry.clone() else {
        return Ok(());
    };
    let name = nimbus_types::name::FunctionRef::parse(function)
        .map_or_else(|_| function.to_owned(), |r| r.name);
    let key = nimbus_types::name::scoped(ctx.account(), &name);
    let records =
        tokio::task::spawn_blocking(move || telemetry.usage_records(&key, since_ms, 100_000))
            .await
            .map_err(|e| ProviderError::new(e.to_string()))?
            .map_err(|e| ProviderError::new(e.to_string()))?;
    let ran: Vec<_> = records.iter().filter(|r| r.version == version).collect();
    let failed = ran
        .iter()
        .filter(|r| r.outcome != nimbus_types::invocation::OutcomeKind::Success)
        .count();
    if !ran.is_empty() && failed as f64 / ran.len() as f64 > ctx.shifts.max_error_rate {
        return Err(ProviderError::new(format!(
            "The traffic shift to version {version} was rolled back: {failed} of its {} invocations failed, more than the {:.0}% allowed.",
            ran.len(),
            ctx.shifts.max_error_rate * 100.0
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preference_types() {
        assert_eq!(steps("AllAtOnce").unwrap(), vec![]);
        assert_eq!(steps("Canary10Percent5Minutes").unwrap(), vec![(10, 5.0)]);
        assert_eq!(steps("Linear10PercentEvery1Minute").unwrap().len(), 9);
        assert_eq!(
            steps("Linear25PercentEvery2Minutes").unwrap(),
            vec![(25, 2.0), (50, 2.0), (75, 2.0)]
        );
        assert!(steps("Canary100Percent5Minutes").is_err());
        assert!(steps("Sometimes").is_err());
        assert!(preference(&json!({"DeploymentPreference": {"Type": "Canary10Percent5Minutes", "Hooks": {"PreTraffic": "x"}}})).is_err());
        assert_eq!(
            preference(&json!({"DeploymentPreference": {"Type": "AllAtOnce"}})).unwrap(),
            None
        );
        assert_eq!(preference(&json!({"DeploymentPreference": {"Type": "Canary10Percent5Minutes", "Enabled": false}})).unwrap(), None);
    }
}
