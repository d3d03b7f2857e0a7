//! Functions: the list, a function's page (configuration, versions, aliases, URL, triggers,
//! concurrency, recent log) and its test-invoke panel.

use axum::body::Body;
use axum::extract::{Path, Query};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use base64::Engine;
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Shared, checked_form, status_of};
use crate::call::{Failure, query, segment};
use crate::html::{Nav, Notice, csrf, empty, page, pre, pretty_json, text, time_ms};
use crate::{Console, Ctx, html_response};

/// The largest payload a synchronous invocation takes (Lambda's 6 MB).
const MAX_PAYLOAD_BYTES: usize = 6_291_456;

#[derive(Deserialize)]
pub struct ListQuery {
    q: Option<String>,
}

pub async fn list(
    axum::extract::State(c): Shared,
    ctx: Ctx,
    Query(q): Query<ListQuery>,
) -> Response {
    let since = nimbus_types::time::now_ms() - 3_600_000;
    let (functions, usage) = tokio::join!(
        c.rest(
            &ctx.caller,
            Method::GET,
            "/2015-03-31/functions/?MaxItems=10000",
            None
        ),
        c.rest(
            &ctx.caller,
            Method::GET,
            format!("/nimbus/v1/usage?since_ms={since}"),
            None
        ),
    );
    let functions = match functions {
        Ok(v) => v,
        Err(f) => {
            let notice = Notice::Error(f.describe());
            return html_response(
                Some(&ctx),
                status_of(&f),
                page(&ctx, "Functions", Nav::Functions, Some(&notice), empty()),
            );
        }
    };
    let filter = q.q.unwrap_or_default();
    let needle = filter.to_lowercase();
    let by_name: std::collections::HashMap<&str, &Value> = usage
        .as_ref()
        .ok()
        .and_then(|u| u["functions"].as_array())
        .into_iter()
        .flatten()
        .filter_map(|f| f["function"].as_str().map(|n| (n, f)))
        .collect();
    let counts = |name: &str| -> (String, String) {
        if usage.is_err() {
            return ("—".into(), "—".into());
        }
        match by_name.get(name) {
            Some(r) => (text(&r["invocations"]), text(&r["errors"])),
            None => ("0".into(), "0".into()),
        }
    };
    let all = functions["Functions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let shown: Vec<&Value> = all
        .iter()
        .filter(|f| {
            needle.is_empty()
                || f["FunctionName"]
                    .as_str()
                    .is_some_and(|n| n.to_lowercase().contains(&needle))
        })
        .collect();
    let body = html! {
        form.filter method="get" action="/console/functions" role="search" {
            label for="q" { "Filter by name" }
            input #q type="search" name="q" value=(filter);
            button type="submit" { "Filter" }
        }
        @if let Err(f) = &usage {
            p.hint { "Invocation counts are not shown: " (f.describe()) }
        }
        p.count { (shown.len()) " of " (all.len()) " functions" }
        table #functions {
            caption.visually-hidden { "Functions" }
            thead { tr {
                th scope="col" { "Name" } th scope="col" { "Runtime" } th scope="col" { "Memory (MB)" }
                th scope="col" { "Last modified" } th scope="col" { "Invocations (1 h)" } th scope="col" { "Errors (1 h)" }
            } }
            tbody {
                @for f in &shown {
                    @let name = f["FunctionName"].as_str().unwrap_or_default();
                    @let (invocations, errors) = counts(name);
                    tr {
                        td { a href=(format!("/console/functions/{}", segment(name))) { (name) } }
                        td { (text(&f["Runtime"])) }
                        td.num { (text(&f["MemorySize"])) }
                        td { (text(&f["LastModified"])) }
                        td.num { (invocations) }
                        td.num { (errors) }
                    }
                }
            }
        }
    };
    html_response(
        Some(&ctx),
        StatusCode::OK,
        page(&ctx, "Functions", Nav::Functions, None, body),
    )
}

pub async fn detail(
    axum::extract::State(c): Shared,
    ctx: Ctx,
    Path(name): Path<String>,
) -> Response {
    function_page(&c, &ctx, &name, None, None, "{}").await
}

/// What a test invocation gave.
struct Invoked {
    status: u16,
    function_error: Option<String>,
    version: Option<String>,
    payload: String,
    log: String,
}

pub async fn invoke(
    axum::extract::State(c): Shared,
    ctx: Ctx,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Body,
) -> Response {
    let form = match checked_form(&ctx, &headers, body, crate::MAX_INVOKE_FORM_BYTES).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let payload = form.get("payload").unwrap_or_default().to_owned();
    let qualifier = form.get("qualifier").unwrap_or_default().trim().to_owned();
    if payload.len() > MAX_PAYLOAD_BYTES {
        let message = format!(
            "The payload is {} bytes; a synchronous invocation takes at most {MAX_PAYLOAD_BYTES} bytes. Nothing was invoked.",
            payload.len()
        );
        return not_invoked(
            &c,
            &ctx,
            &name,
            "{}",
            message,
            StatusCode::PAYLOAD_TOO_LARGE,
        )
        .await;
    }
    if let Err(e) = serde_json::from_str::<Value>(&payload) {
        let message = format!("The payload is not JSON ({e}); nothing was invoked.");
        return not_invoked(&c, &ctx, &name, &payload, message, StatusCode::BAD_REQUEST).await;
    }
    let mut path = format!("/2015-03-31/functions/{}/invocations", segment(&name));
    if !qualifier.is_empty() {
        path.push('?');
        path.push_str(&query(&[("Qualifier", &qualifier)]));
    }
    let reply = c
        .send(
            &ctx.caller,
            Method::POST,
            &path,
            &[
                ("content-type", "application/json"),
                ("x-amz-log-type", "Tail"),
            ],
            payload.clone().into_bytes(),
        )
        .await;
    let reply = match reply {
        Ok(r) if r.ok() => r,
        Ok(r) => {
            let f = r.failure();
            let message = format!("Not invoked: {}", f.describe());
            return not_invoked(&c, &ctx, &name, &payload, message, status_of(&f)).await;
        }
        Err(f) => {
            return not_invoked(&c, &ctx, &name, &payload, f.describe(), status_of(&f)).await;
        }
    };
    let header = |n: &str| {
        reply
            .headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let log = header("x-amz-log-result")
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let invoked = Invoked {
        status: reply.status,
        function_error: header("x-amz-function-error"),
        version: header("x-amz-executed-version"),
        payload: String::from_utf8_lossy(&reply.body).into_owned(),
        log,
    };
    function_page(&c, &ctx, &name, None, Some(&invoked), &payload).await
}

/// The latest few log entries from `since_us` on, read a page at a time so that no more than
/// a page is held.
async fn recent_log(
    c: &Console,
    caller: &nimbus_identity::Caller,
    n: &str,
    since_us: i64,
) -> Result<Vec<Value>, Failure> {
    const PAGE: usize = 1000;
    const KEEP: usize = 5;
    let mut after = since_us.max(0) as u64;
    let mut latest: std::collections::VecDeque<Value> = Default::default();
    for _ in 0..20 {
        let mut page = c
            .rest(
                caller,
                Method::GET,
                format!("/nimbus/v1/functions/{n}/logs?after={after}&limit={PAGE}"),
                None,
            )
            .await?;
        let entries = match page.get_mut("entries").map(Value::take) {
            Some(Value::Array(a)) => a,
            _ => Vec::new(),
        };
        let full = entries.len() >= PAGE;
        for e in entries {
            after = e["seq"].as_u64().unwrap_or(after);
            latest.push_back(e);
            if latest.len() > KEEP {
                latest.pop_front();
            }
        }
        if !full {
            break;
        }
    }
    Ok(latest.into())
}

/// The function's page with why nothing was invoked, answered with `status`.
async fn not_invoked(
    c: &Console,
    ctx: &Ctx,
    name: &str,
    payload: &str,
    message: String,
    status: StatusCode,
) -> Response {
    let notice = Notice::Error(message);
    let mut r = function_page(c, ctx, name, Some(&notice), None, payload).await;
    if r.status() == StatusCode::OK {
        *r.status_mut() = status;
    }
    r
}

/// Everything a function's page shows. Sections whose API refuses the caller say so.
async fn function_page(
    c: &Console,
    ctx: &Ctx,
    name: &str,
    notice: Option<&Notice>,
    invoked: Option<&Invoked>,
    payload: &str,
) -> Response {
    let n = segment(name);
    let caller = &ctx.caller;
    let get = |path: String| c.rest(caller, Method::GET, path, None);
    let since_us = (nimbus_types::time::now_ms() - 15 * 60_000).max(0) * 1000;
    let (function, versions, aliases, url, mappings, provisioned, logs) = tokio::join!(
        get(format!("/2015-03-31/functions/{n}")),
        get(format!("/2015-03-31/functions/{n}/versions?MaxItems=10000")),
        get(format!("/2015-03-31/functions/{n}/aliases?MaxItems=10000")),
        get(format!("/2021-10-31/functions/{n}/url")),
        get(format!(
            "/2015-03-31/event-source-mappings/?{}",
            query(&[("FunctionName", name)])
        )),
        get(format!(
            "/2019-09-30/functions/{n}/provisioned-concurrency?List=ALL"
        )),
        recent_log(c, caller, &n, since_us),
    );
    let function = match function {
        Ok(f) => f,
        Err(f) => {
            let notice = Notice::Error(f.describe());
            return html_response(
                Some(ctx),
                status_of(&f),
                page(ctx, name, Nav::Functions, Some(&notice), empty()),
            );
        }
    };
    let config = &function["Configuration"];
    let arn = config["FunctionArn"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let (schedules, routes, notifications) = tokio::join!(
        schedules(c, ctx, &arn),
        routes(c, ctx, &arn),
        notifications(c, ctx, &arn)
    );
    let rows: [(&str, String); 12] = [
        ("ARN", arn.clone()),
        ("Runtime", text(&config["Runtime"])),
        ("Handler", text(&config["Handler"])),
        ("Memory (MB)", text(&config["MemorySize"])),
        ("Timeout (s)", text(&config["Timeout"])),
        (
            "Ephemeral storage (MB)",
            text(&config["EphemeralStorage"]["Size"]),
        ),
        ("Role", text(&config["Role"])),
        ("Code size (bytes)", text(&config["CodeSize"])),
        ("Code SHA-256", text(&config["CodeSha256"])),
        ("Last modified", text(&config["LastModified"])),
        ("State", text(&config["State"])),
        ("Description", text(&config["Description"])),
    ];
    let env = config["Environment"]["Variables"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let layers = config["Layers"].as_array().cloned().unwrap_or_default();
    let body = html! {
        nav.sub aria-label="This function" {
            a href=(format!("/console/functions/{n}/monitoring")) { "Monitoring" }
            a href=(format!("/console/functions/{n}/logs")) { "Logs" }
            a href=(format!("/console/functions/{n}/events")) { "Asynchronous events" }
        }
        section aria-labelledby="test-h" {
            h2 #test-h { "Test" }
            form.invoke method="post" action=(format!("/console/functions/{n}/invoke")) {
                (csrf(ctx))
                label for="payload" { "Event (JSON)" }
                textarea #payload name="payload" rows="8" spellcheck="false" aria-describedby="payload-status" { (payload) }
                p #payload-status.hint aria-live="polite" {}
                label for="qualifier" { "Version or alias (empty: $LATEST)" }
                input #qualifier type="text" name="qualifier" spellcheck="false";
                button #invoke type="submit" { "Invoke" }
            }
            @if let Some(r) = invoked {
                (invoked_panel(r))
            }
        }
        section aria-labelledby="config-h" {
            h2 #config-h { "Configuration" }
            table.kv {
                tbody {
                    @for (k, v) in &rows {
                        tr { th scope="row" { (k) } td { (v) } }
                    }
                    tr { th scope="row" { "Reserved concurrency" } td { (text(&function["Concurrency"]["ReservedConcurrentExecutions"])) } }
                    @if !layers.is_empty() {
                        tr { th scope="row" { "Layers" } td { @for l in &layers { div { (text(&l["Arn"])) } } } }
                    }
                }
            }
            @if !env.is_empty() {
                h3 { "Environment" }
                table.kv { tbody { @for (k, v) in &env { tr { th scope="row" { (k) } td { (text(v)) } } } } }
            }
        }
        section aria-labelledby="versions-h" {
            h2 #versions-h { "Versions" }
            (listing(&versions, "Versions", &["Version", "Description", "LastModified", "CodeSha256"]))
        }
        section aria-labelledby="aliases-h" {
            h2 #aliases-h { "Aliases" }
            (listing(&aliases, "Aliases", &["Name", "FunctionVersion", "Description"]))
            @if let Ok(a) = &aliases {
                @for alias in a["Aliases"].as_array().into_iter().flatten() {
                    @if let Some(weights) = alias["RoutingConfig"]["AdditionalVersionWeights"].as_object() {
                        p.hint { "Alias " (text(&alias["Name"])) " also sends "
                            @for (v, w) in weights { (format!("{:.0}%", w.as_f64().unwrap_or(0.0) * 100.0)) " to version " (v) } "." }
                    }
                }
            }
        }
        section aria-labelledby="url-h" {
            h2 #url-h { "Function URL" }
            @match &url {
                Ok(u) => p { code { (text(&u["FunctionUrl"])) } " (auth: " (text(&u["AuthType"])) ")" },
                Err(f) if f.status == 404 => p { "None." },
                Err(f) => p.hint { (f.describe()) },
            }
        }
        section aria-labelledby="triggers-h" {
            h2 #triggers-h { "Triggers" }
            h3 { "Event source mappings" }
            (listing(&mappings, "EventSourceMappings", &["UUID", "EventSourceArn", "State", "BatchSize"]))
            h3 { "Schedules and rules" }
            (list_or_failure(&schedules))
            h3 { "HTTP API routes" }
            (list_or_failure(&routes))
            h3 { "Bucket notifications" }
            (list_or_failure(&notifications))
        }
        section aria-labelledby="concurrency-h" {
            h2 #concurrency-h { "Concurrency" }
            p { "Reserved: " (text(&function["Concurrency"]["ReservedConcurrentExecutions"])) }
            (listing(&provisioned, "ProvisionedConcurrencyConfigs", &["FunctionArn", "RequestedProvisionedConcurrentExecutions", "AvailableProvisionedConcurrentExecutions", "Status"]))
        }
        section aria-labelledby="log-h" {
            h2 #log-h { "Recent log (last 15 minutes)" }
            @match &logs {
                Ok(entries) => {
                    @if entries.is_empty() { p { "Nothing logged in the last 15 minutes." } }
                    @for e in entries.iter().rev().take(5) {
                        div.logentry {
                            p.meta { (time_ms(e["time_ms"].as_i64().unwrap_or(0))) " · " (text(&e["request_id"])) }
                            (pre(e["text"].as_str().unwrap_or_default()))
                        }
                    }
                    p { a href=(format!("/console/functions/{n}/logs")) { "Search the log" } }
                }
                Err(f) => p.hint { (f.describe()) },
            }
        }
    };
    html_response(
        Some(ctx),
        StatusCode::OK,
        page(ctx, name, Nav::Functions, notice, body),
    )
}

fn invoked_panel(r: &Invoked) -> Markup {
    let report = r
        .log
        .lines()
        .find(|l| l.starts_with("REPORT"))
        .unwrap_or_default();
    html! {
        div #result.result role="region" aria-label="Result" {
            h3 { "Result" }
            p #result-status {
                @match &r.function_error {
                    Some(kind) => span.bad { "Function error (" (kind) ")" },
                    None => span.good { "Succeeded" },
                }
                " · status " (r.status)
                @if let Some(v) = &r.version { " · version " (v) }
            }
            h4 { "Response" }
            pre #result-payload { (pretty_json(&r.payload)) }
            @if !report.is_empty() {
                h4 { "Report" }
                pre #result-report { (report) }
            }
            h4 { "Log (last 4 KB)" }
            pre #result-log { (r.log) }
        }
    }
}

/// A table of a list operation's items, or why it could not be read.
fn listing(result: &Result<Value, Failure>, key: &str, columns: &[&str]) -> Markup {
    match result {
        Err(f) => html! { p.hint { (f.describe()) } },
        Ok(v) => {
            let items = v[key].as_array().cloned().unwrap_or_default();
            html! {
                @if items.is_empty() {
                    p { "None." }
                } @else {
                    table {
                        thead { tr { @for c in columns { th scope="col" { (c) } } } }
                        tbody { @for item in &items { tr { @for c in columns { td { (text(&item[*c])) } } } } }
                    }
                }
            }
        }
    }
}

fn list_or_failure(result: &Result<Vec<String>, Failure>) -> Markup {
    match result {
        Err(f) => html! { p.hint { (f.describe()) } },
        Ok(items) if items.is_empty() => html! { p { "None." } },
        Ok(items) => html! { ul { @for i in items { li { (i) } } } },
    }
}

/// The rules (schedules and event patterns) with the function among their targets.
async fn schedules(c: &Console, ctx: &Ctx, arn: &str) -> Result<Vec<String>, Failure> {
    let rules = c
        .target(&ctx.caller, "AWSEvents.ListRules", &json!({ "Limit": 100 }))
        .await?;
    let mut out = Vec::new();
    for rule in rules["Rules"].as_array().into_iter().flatten() {
        let name = rule["Name"].as_str().unwrap_or_default();
        let targets = c
            .target(
                &ctx.caller,
                "AWSEvents.ListTargetsByRule",
                &json!({ "Rule": name }),
            )
            .await?;
        let aims_here = targets["Targets"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|t| t["Arn"].as_str().is_some_and(|a| same_function(a, arn)));
        if aims_here {
            let what = rule["ScheduleExpression"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| text(&rule["EventPattern"]));
            out.push(format!("{name}: {what} ({})", text(&rule["State"])));
        }
    }
    Ok(out)
}

/// The routes of HTTP APIs whose integration is the function.
async fn routes(c: &Console, ctx: &Ctx, arn: &str) -> Result<Vec<String>, Failure> {
    let apis = c.rest(&ctx.caller, Method::GET, "/v2/apis", None).await?;
    let mut out = Vec::new();
    for api in apis["Items"].as_array().into_iter().flatten().take(50) {
        let id = api["ApiId"].as_str().unwrap_or_default();
        let integrations = c
            .rest(
                &ctx.caller,
                Method::GET,
                &format!("/v2/apis/{}/integrations", segment(id)),
                None,
            )
            .await?;
        let ours: Vec<String> = integrations["Items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|i| {
                i["IntegrationUri"]
                    .as_str()
                    .is_some_and(|u| same_function(u, arn))
            })
            .filter_map(|i| {
                i["IntegrationId"]
                    .as_str()
                    .map(|s| format!("integrations/{s}"))
            })
            .collect();
        if ours.is_empty() {
            continue;
        }
        let routes = c
            .rest(
                &ctx.caller,
                Method::GET,
                &format!("/v2/apis/{}/routes", segment(id)),
                None,
            )
            .await?;
        for r in routes["Items"].as_array().into_iter().flatten() {
            if r["Target"]
                .as_str()
                .is_some_and(|t| ours.iter().any(|o| o == t))
            {
                out.push(format!(
                    "{} · {} ({id})",
                    text(&r["RouteKey"]),
                    text(&api["Name"])
                ));
            }
        }
    }
    Ok(out)
}

/// The buckets whose notifications invoke the function.
async fn notifications(c: &Console, ctx: &Ctx, arn: &str) -> Result<Vec<String>, Failure> {
    let list = c.s3(&ctx.caller, Method::GET, "/", &[], Vec::new()).await?;
    let xml = String::from_utf8_lossy(&list.body).into_owned();
    let mut out = Vec::new();
    for bucket in crate::xml::blocks(&xml, "Bucket").into_iter().take(50) {
        let Some(name) = crate::xml::text(bucket, "Name") else {
            continue;
        };
        let Ok(config) = c
            .s3(
                &ctx.caller,
                Method::GET,
                &format!("/{}?notification", segment(&name)),
                &[],
                Vec::new(),
            )
            .await
        else {
            continue;
        };
        let config = String::from_utf8_lossy(&config.body).into_owned();
        for rule in crate::xml::blocks(&config, "CloudFunctionConfiguration") {
            if crate::xml::text(rule, "CloudFunction").is_some_and(|a| same_function(&a, arn)) {
                let events: Vec<String> = crate::xml::blocks(rule, "Event")
                    .iter()
                    .map(|e| crate::xml::unescape(e))
                    .collect();
                out.push(format!("{name}: {}", events.join(", ")));
            }
        }
    }
    Ok(out)
}

/// Whether a target ARN names the function (qualified or not).
fn same_function(target: &str, arn: &str) -> bool {
    target == arn
        || target
            .strip_prefix(arn)
            .is_some_and(|rest| rest.starts_with(':'))
        // An API Gateway integration URI wraps the ARN.
        || target.contains(&format!("/functions/{arn}/"))
}

#[cfg(test)]
mod tests {
    use super::same_function;

    #[test]
    fn targets_name_a_function_with_or_without_a_qualifier() {
        let arn = "arn:aws:lambda:us-east-1:000000000000:function:f";
        assert!(same_function(arn, arn));
        assert!(same_function(&format!("{arn}:live"), arn));
        assert!(!same_function(&format!("{arn}2"), arn));
        assert!(same_function(
            &format!(
                "arn:aws:apigateway:us-east-1:lambda:path/2015-03-31/functions/{arn}/invocations"
            ),
            arn
        ));
    }
}
