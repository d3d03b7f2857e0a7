//! The account's queues (depths, messages peeked without being received), usage and cost, and
//! the fleet that runs its functions.

use axum::extract::{Path, Query};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use maud::html;
use serde::Deserialize;
use serde_json::Value;

use super::{Shared, failed};
use crate::call::{query, segment};
use crate::html::{Nav, page, pre, pretty_json, text, time_ms};
use crate::{Ctx, html_response};

pub async fn queues(axum::extract::State(c): Shared, ctx: Ctx) -> Response {
    let v = match c
        .rest(&ctx.caller, Method::GET, "/nimbus/v1/queues", None)
        .await
    {
        Ok(v) => v,
        Err(f) => return failed(&ctx, "Queues", Nav::Queues, &f),
    };
    let queues = v["queues"].as_array().cloned().unwrap_or_default();
    let body = html! {
        p.hint { "SQS queues of this account. A function's asynchronous events and their dead letters are on the function's own page." }
        @if queues.is_empty() { p { "No queues." } }
        @else {
            table #queues {
                thead { tr { th scope="col" { "Queue" } th scope="col" { "Visible" } th scope="col" { "In flight" } th scope="col" { "Delayed" } th scope="col" { "Dead-letter queue" } } }
                tbody { @for q in &queues {
                    @let name = q["queue"].as_str().unwrap_or_default();
                    tr {
                        td { a href=(format!("/console/queues/{}", segment(name))) { (name) } }
                        td.num { (text(&q["visible"])) } td.num { (text(&q["in_flight"])) } td.num { (text(&q["delayed"])) }
                        td { @match q["dead_letter_queue"].as_str() {
                            Some(d) => a href=(format!("/console/queues/{}", segment(d))) { (d) },
                            None => "—",
                        } }
                    }
                } }
            }
        }
    };
    html_response(
        Some(&ctx),
        StatusCode::OK,
        page(&ctx, "Queues", Nav::Queues, None, body),
    )
}

pub async fn queue(
    axum::extract::State(c): Shared,
    ctx: Ctx,
    Path(name): Path<String>,
) -> Response {
    let title = format!("Queue {name}");
    let v = match c
        .rest(
            &ctx.caller,
            Method::GET,
            &format!("/nimbus/v1/queues/{}/messages?limit=50", segment(&name)),
            None,
        )
        .await
    {
        Ok(v) => v,
        Err(f) => return failed(&ctx, &title, Nav::Queues, &f),
    };
    let messages = v["messages"].as_array().cloned().unwrap_or_default();
    let body = html! {
        p.hint { "The oldest messages, read without being received: their receive counts and visibility do not change." }
        @if messages.is_empty() { p { "The queue is empty." } }
        @for m in &messages {
            article.message {
                p.meta { "Message " (text(&m["id"])) " · sent " (time_ms(m["sent_ms"].as_i64().unwrap_or(0))) " · received " (text(&m["receive_count"])) " times" }
                (pre(&pretty_json(m["body"].as_str().unwrap_or_default())))
            }
        }
    };
    html_response(
        Some(&ctx),
        StatusCode::OK,
        page(&ctx, &title, Nav::Queues, None, body),
    )
}

#[derive(Deserialize)]
pub struct UsageQuery {
    range: Option<String>,
    account: Option<String>,
}

const USAGE_RANGES: &[(&str, &str, i64)] = &[
    ("1h", "the last hour", 3600),
    ("24h", "the last 24 hours", 86_400),
    ("30d", "the last 30 days", 30 * 86_400),
    ("all", "all time", 0),
];

pub async fn usage(
    axum::extract::State(c): Shared,
    ctx: Ctx,
    Query(q): Query<UsageQuery>,
) -> Response {
    let (range, label, seconds) = USAGE_RANGES
        .iter()
        .copied()
        .find(|(r, _, _)| Some(*r) == q.range.as_deref())
        .unwrap_or(USAGE_RANGES[1]);
    let since = if seconds == 0 {
        0
    } else {
        nimbus_types::time::now_ms() - seconds * 1000
    };
    let mut pairs = vec![("since_ms", since.to_string())];
    if let Some(a) = q.account.as_deref().filter(|a| !a.is_empty()) {
        pairs.push(("account", a.to_owned()));
    }
    let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (report, accounts) = tokio::join!(
        c.rest(
            &ctx.caller,
            Method::GET,
            format!("/nimbus/v1/usage?{}", query(&pairs)),
            None
        ),
        c.rest(&ctx.caller, Method::GET, "/nimbus/v1/accounts", None),
    );
    let report = match report {
        Ok(v) => v,
        Err(f) => return failed(&ctx, "Usage and cost", Nav::Usage, &f),
    };
    let accounts: Vec<Value> = accounts
        .ok()
        .and_then(|a| a["accounts"].as_array().cloned())
        .unwrap_or_default();
    let dollars = |v: &Value| format!("${:.6}", v.as_f64().unwrap_or(0.0));
    let functions = report["functions"].as_array().cloned().unwrap_or_default();
    let total = &report["total"];
    let body = html! {
        form.filter method="get" {
            label for="range" { "Range" }
            select #range name="range" {
                @for (r, l, _) in USAGE_RANGES { option value=(r) selected[*r == range] { (l) } }
            }
            @if !accounts.is_empty() {
                label for="account" { "Account" }
                select #account name="account" {
                    @for a in &accounts {
                        @let id = a["id"].as_str().unwrap_or_default();
                        option value=(id) selected[report["account"] == id] { (text(&a["name"])) " (" (id) ")" }
                    }
                }
            }
            button type="submit" { "Show" }
        }
        p { "Account " (text(&report["account"])) ", " (label) ": "
            strong #total-cost { (dollars(&total["cost"])) }
            " for " (text(&total["invocations"])) " invocations and " (format!("{:.3}", total["gb_seconds"].as_f64().unwrap_or(0.0))) " GB-seconds, at $"
            (text(&report["pricing"]["request_per_million"])) " per million requests and $" (text(&report["pricing"]["gb_second"])) " per GB-second." }
        table #usage {
            thead { tr {
                th scope="col" { "Function" } th scope="col" { "Invocations" } th scope="col" { "Cold starts" } th scope="col" { "Errors" }
                th scope="col" { "Billed ms" } th scope="col" { "GB-seconds" } th scope="col" { "Requests" } th scope="col" { "Compute" } th scope="col" { "Cost" }
            } }
            tbody { @for f in &functions { tr {
                td { (text(&f["function"])) }
                td.num { (text(&f["invocations"])) } td.num { (text(&f["cold_starts"])) } td.num { (text(&f["errors"])) }
                td.num { (text(&f["billed_ms"])) } td.num { (format!("{:.3}", f["gb_seconds"].as_f64().unwrap_or(0.0))) }
                td.num { (dollars(&f["request_cost"])) } td.num { (dollars(&f["compute_cost"])) } td.num { (dollars(&f["cost"])) }
            } } }
        }
    };
    html_response(
        Some(&ctx),
        StatusCode::OK,
        page(&ctx, "Usage and cost", Nav::Usage, None, body),
    )
}

pub async fn fleet(axum::extract::State(c): Shared, ctx: Ctx) -> Response {
    let v = match c
        .rest(&ctx.caller, Method::GET, "/nimbus/v1/cluster", None)
        .await
    {
        Ok(v) => v,
        Err(f) => return failed(&ctx, "Fleet", Nav::Fleet, &f),
    };
    // The fleet is the node operator's to see (nimbus's API refuses other accounts).
    let workers = v["workers"].as_array().cloned().unwrap_or_default();
    let sandboxes = v["sandboxes"].as_array().cloned().unwrap_or_default();
    let body = html! {
        p { "Account concurrency: limit " (text(&v["concurrency"]["limit"])) ", unreserved " (text(&v["concurrency"]["unreserved"])) "." }
        h2 { "Workers" }
        table #workers {
            thead { tr {
                th scope="col" { "Worker" } th scope="col" { "Where" } th scope="col" { "Capacity (MB)" } th scope="col" { "Used (MB)" }
                th scope="col" { "Free (MB)" } th scope="col" { "Sandboxes" } th scope="col" { "Invocations" } th scope="col" { "Last heartbeat" }
            } }
            tbody { @for w in &workers { tr {
                td { (text(&w["name"])) }
                td { @if w["remote"] == true { (text(&w["address"])) } @else { "in the node" } }
                td.num { (text(&w["capacity_mb"])) } td.num { (text(&w["used_mb"])) } td.num { (text(&w["free_mb"])) }
                td.num { (text(&w["sandboxes"])) } td.num { (text(&w["invocations"])) }
                td { @match w["last_heartbeat_ms"].as_u64() { Some(ms) => (format!("{:.1} s ago", ms as f64 / 1000.0)), None => "—" } }
            } } }
        }
        h2 { "Sandboxes" }
        @if sandboxes.is_empty() { p { "No sandboxes are running." } }
        @else {
            table #sandboxes {
                thead { tr { th scope="col" { "Function" } th scope="col" { "Worker" } th scope="col" { "Idle" } th scope="col" { "Busy" } th scope="col" { "Total" } } }
                tbody { @for s in &sandboxes {
                    @let idle = s["idle"].as_u64().unwrap_or(0);
                    @let total = s["total"].as_u64().unwrap_or(0);
                    tr {
                        td { (text(&s["function"])) } td { (text(&s["worker"])) }
                        td.num { (idle) } td.num { (total.saturating_sub(idle)) } td.num { (total) }
                    }
                } }
            }
        }
    };
    html_response(
        Some(&ctx),
        StatusCode::OK,
        page(&ctx, "Fleet", Nav::Fleet, None, body),
    )
}
