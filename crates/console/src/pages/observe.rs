//! Watching functions: monitoring charts, log search and live tail, asynchronous events with
//! their dead letters and replay.

use axum::body::Body;
use axum::extract::{Path, Query};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use maud::html;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Shared, checked_form, status_of};
use crate::call::{query, segment};
use crate::html::{Nav, Notice, Series, chart, csrf, empty, page, pre, pretty_json, text, time_ms};
use crate::{Console, Ctx, html_response, secure};

/// The ranges the monitoring page offers: (name, seconds, seconds per point).
const RANGES: &[(&str, i64, i64)] = &[
    ("1h", 3600, 60),
    ("6h", 6 * 3600, 300),
    ("24h", 86_400, 900),
    ("7d", 7 * 86_400, 3600),
];

#[derive(Deserialize)]
pub struct RangeQuery {
    range: Option<String>,
}

pub async fn monitoring(
    axum::extract::State(c): Shared,
    ctx: Ctx,
    Path(name): Path<String>,
    Query(q): Query<RangeQuery>,
) -> Response {
    let (range, seconds, period) = RANGES
        .iter()
        .copied()
        .find(|(r, _, _)| Some(*r) == q.range.as_deref())
        .unwrap_or(RANGES[0]);
    let since = nimbus_types::time::now_ms() - seconds * 1000;
    let n = segment(&name);
    let metrics = c
        .rest(
            &ctx.caller,
            Method::GET,
            &format!("/nimbus/v1/functions/{n}/metrics?since_ms={since}&period_s={period}"),
            None,
        )
        .await;
    let title = format!("{name}: monitoring");
    let m = match metrics {
        Ok(m) => m,
        Err(f) => {
            let notice = Notice::Error(f.describe());
            return html_response(
                Some(&ctx),
                status_of(&f),
                page(&ctx, &title, Nav::Functions, Some(&notice), empty()),
            );
        }
    };
    let points = m["points"].as_array().cloned().unwrap_or_default();
    let times: Vec<i64> = points
        .iter()
        .map(|p| p["time_ms"].as_i64().unwrap_or(0))
        .collect();
    let series =
        |key: &str| -> Vec<Option<f64>> { points.iter().map(|p| p[key].as_f64()).collect() };
    let total = |key: &str| -> u64 { points.iter().filter_map(|p| p[key].as_u64()).sum() };
    let body = html! {
        nav.sub aria-label="This function" {
            a href=(format!("/console/functions/{n}")) { "Function" }
            a href=(format!("/console/functions/{n}/logs")) { "Logs" }
            a href=(format!("/console/functions/{n}/events")) { "Asynchronous events" }
        }
        form.filter method="get" {
            label for="range" { "Range" }
            select #range name="range" {
                @for (r, _, _) in RANGES {
                    option value=(r) selected[*r == range] { (r) }
                }
            }
            button type="submit" { "Show" }
        }
        dl.totals {
            div { dt { "Invocations" } dd #total-invocations { (total("invocations")) } }
            div { dt { "Errors" } dd #total-errors { (total("errors")) } }
            div { dt { "Cold starts" } dd #total-cold { (total("cold_starts")) } }
            div { dt { "Throttles (since the node started)" } dd { (text(&m["throttles_since_start"])) } }
        }
        @if m["truncated"] == json!(true) {
            p.hint { "This range holds more invocations than one chart reads; the latest are left out. Choose a shorter range." }
        }
        (chart("Invocations and errors", "per period", &times, &[
            Series { label: "Invocations", class: "s-inv", values: series("invocations"), bars: true },
            Series { label: "Errors", class: "s-err", values: series("errors"), bars: true },
        ]))
        (chart("Duration", "ms", &times, &[
            Series { label: "p50", class: "s-p50", values: series("p50_ms"), bars: false },
            Series { label: "p99", class: "s-p99", values: series("p99_ms"), bars: false },
        ]))
        (chart("Cold starts", "per period", &times, &[
            Series { label: "Cold starts", class: "s-cold", values: series("cold_starts"), bars: true },
        ]))
        (chart("Init duration", "ms", &times, &[
            Series { label: "p50", class: "s-p50", values: series("init_p50_ms"), bars: false },
            Series { label: "max", class: "s-p99", values: series("init_max_ms"), bars: false },
        ]))
    };
    html_response(
        Some(&ctx),
        StatusCode::OK,
        page(&ctx, &title, Nav::Functions, None, body),
    )
}

#[derive(Deserialize, Default)]
pub struct LogQuery {
    function: Option<String>,
    /// `YYYY-MM-DDTHH:MM` (UTC), as a `datetime-local` input sends it.
    from: Option<String>,
    to: Option<String>,
    request_id: Option<String>,
    text: Option<String>,
}

pub async fn function_logs(
    axum::extract::State(c): Shared,
    ctx: Ctx,
    Path(name): Path<String>,
    Query(mut q): Query<LogQuery>,
) -> Response {
    q.function = Some(name);
    log_page(&c, &ctx, q).await
}

pub async fn logs(
    axum::extract::State(c): Shared,
    ctx: Ctx,
    Query(q): Query<LogQuery>,
) -> Response {
    log_page(&c, &ctx, q).await
}

/// The most log entries one search reads, and the most matches it shows.
const MAX_SCANNED: usize = 100_000;
const MAX_MATCHES: usize = 200;

/// `YYYY-MM-DDTHH:MM[:SS]` in UTC, as Unix milliseconds.
fn parse_local(s: &str) -> Option<i64> {
    let format = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]");
    let with_seconds =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
    let t = time::PrimitiveDateTime::parse(s, &format)
        .or_else(|_| time::PrimitiveDateTime::parse(s, &with_seconds))
        .ok()?;
    Some((t.assume_utc().unix_timestamp_nanos() / 1_000_000) as i64)
}

fn format_local(ms: i64) -> String {
    let t = crate::html::time_ms(ms);
    // `2026-12-07 14:58:23 UTC` → `2026-12-07T14:58`
    format!(
        "{}T{}",
        t.get(0..10).unwrap_or_default(),
        t.get(11..16).unwrap_or_default()
    )
}

async fn log_page(c: &Console, ctx: &Ctx, q: LogQuery) -> Response {
    let now = nimbus_types::time::now_ms();
    let mut problems = Vec::new();
    let mut time_of = |field: &Option<String>, default: i64, label: &str| match field
        .as_deref()
        .filter(|s| !s.is_empty())
    {
        None => default,
        Some(s) => parse_local(s).unwrap_or_else(|| {
            problems.push(format!(
                "{label} is not a time (YYYY-MM-DDTHH:MM, UTC): {s}"
            ));
            default
        }),
    };
    let from = time_of(&q.from, now - 3_600_000, "From");
    // A time to the minute means to the end of that minute.
    let to = match q.to.as_deref().filter(|t| !t.is_empty()) {
        Some(t) if t.len() == 16 => time_of(&q.to, now, "To") + 59_999,
        _ => time_of(&q.to, now, "To"),
    };
    let request_id = q.request_id.clone().unwrap_or_default().trim().to_owned();
    let needle = q.text.clone().unwrap_or_default();
    let needle_lower = needle.to_lowercase();
    let functions = c
        .rest(
            &ctx.caller,
            Method::GET,
            "/2015-03-31/functions/?MaxItems=10000",
            None,
        )
        .await;
    let names: Vec<String> = functions
        .as_ref()
        .ok()
        .and_then(|v| v["Functions"].as_array())
        .into_iter()
        .flatten()
        .filter_map(|f| f["FunctionName"].as_str().map(str::to_owned))
        .collect();
    let function = q.function.clone().filter(|f| !f.is_empty());
    let mut matches: std::collections::VecDeque<Value> = Default::default();
    let mut matched = 0usize;
    let mut scanned = 0usize;
    let mut failure = None;
    let mut next_seq = (now.max(0) as u64) * 1000;
    if let Some(f) = &function
        && problems.is_empty()
    {
        let n = segment(f);
        // Sequence numbers are append times in microseconds: from just before `from`.
        let mut after = ((from.max(0) as u64) * 1000).saturating_sub(1);
        'pages: loop {
            let page = c
                .rest(
                    &ctx.caller,
                    Method::GET,
                    &format!("/nimbus/v1/functions/{n}/logs?after={after}&limit=10000"),
                    None,
                )
                .await;
            let mut page = match page {
                Ok(p) => p,
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            };
            let Some(entries) = page.get_mut("entries").map(Value::take) else {
                break;
            };
            let entries = match entries {
                Value::Array(a) => a,
                _ => Vec::new(),
            };
            let full = entries.len() >= 10_000;
            for e in entries {
                scanned += 1;
                let t = e["time_ms"].as_i64().unwrap_or(0);
                if t > to {
                    break 'pages;
                }
                after = e["seq"].as_u64().unwrap_or(after);
                next_seq = after;
                let id_ok = request_id.is_empty() || e["request_id"] == request_id.as_str();
                let text_ok = needle_lower.is_empty()
                    || e["text"]
                        .as_str()
                        .is_some_and(|s| s.to_lowercase().contains(&needle_lower));
                if id_ok && text_ok {
                    matched += 1;
                    matches.push_back(e);
                    if matches.len() > MAX_MATCHES {
                        matches.pop_front();
                    }
                }
            }
            if !full || scanned >= MAX_SCANNED {
                break;
            }
        }
    }
    let title = match &function {
        Some(f) => format!("{f}: logs"),
        None => "Logs".to_owned(),
    };
    let notice = failure
        .as_ref()
        .map(|f| Notice::Error(f.describe()))
        .or_else(|| (!problems.is_empty()).then(|| Notice::Error(problems.join("; "))));
    let body = html! {
        form.search method="get" action="/console/logs" role="search" {
            label for="function" { "Function" }
            select #function name="function" required {
                option value="" { "Choose a function" }
                @for n in &names {
                    option value=(n) selected[function.as_deref() == Some(n.as_str())] { (n) }
                }
            }
            label for="from" { "From (UTC)" }
            input #from type="datetime-local" name="from" value=(format_local(from));
            label for="to" { "To (UTC)" }
            input #to type="datetime-local" name="to" value=(format_local(to));
            label for="request_id" { "Request id" }
            input #request_id type="text" name="request_id" value=(request_id) spellcheck="false";
            label for="text" { "Text" }
            input #text type="search" name="text" value=(needle);
            button type="submit" { "Search" }
        }
        @if let Some(f) = &function {
            @let n = segment(f);
            @if failure.is_none() && problems.is_empty() {
                p.count { (matched) " matching entries"
                    @if matched > MAX_MATCHES { " (the latest " (MAX_MATCHES) " shown)" }
                    " among " (scanned) " read"
                    @if scanned >= MAX_SCANNED { " (a search reads at most " (MAX_SCANNED) "; narrow the time range)" } }
                @if matches.is_empty() { p { "No log entries match." } }
                ol.log #matches {
                    @for e in &matches {
                        li {
                            p.meta { (time_ms(e["time_ms"].as_i64().unwrap_or(0))) " · " (text(&e["request_id"])) }
                            (pre(e["text"].as_str().unwrap_or_default()))
                        }
                    }
                }
                section aria-labelledby="tail-h" {
                    h2 #tail-h { "Live tail" }
                    p.hint.js-only { "New entries appear below as the function logs them." }
                    noscript { p.hint { "Live tail needs JavaScript; reload the page to see new entries." } }
                    button #tail-toggle.js-only type="button" aria-controls="tail" { "Start live tail" }
                    ol.log #tail data-src=(format!("/console/functions/{n}/logs/tail")) data-after=(next_seq) aria-live="polite" {}
                }
            }
        }
    };
    let status = match (&failure, problems.is_empty()) {
        (Some(f), _) => status_of(f),
        (None, false) => StatusCode::BAD_REQUEST,
        _ => StatusCode::OK,
    };
    html_response(
        Some(ctx),
        status,
        page(ctx, &title, Nav::Logs, notice.as_ref(), body),
    )
}

#[derive(Deserialize)]
pub struct TailQuery {
    after: Option<u64>,
}

/// New log entries as JSON, for the live tail.
pub async fn tail(
    axum::extract::State(c): Shared,
    headers: HeaderMap,
    uri: Uri,
    Path(name): Path<String>,
    Query(q): Query<TailQuery>,
) -> Response {
    let ctx = match c.signed_in(&headers, uri.path()) {
        Ok(ctx) => ctx,
        Err(_) => return json_answer(StatusCode::UNAUTHORIZED, json!({"error": "Sign in again."})),
    };
    let after = q
        .after
        .unwrap_or(((nimbus_types::time::now_ms() - 60_000).max(0) as u64) * 1000);
    let n = segment(&name);
    match c
        .rest(
            &ctx.caller,
            Method::GET,
            &format!(
                "/nimbus/v1/functions/{n}/logs?{}",
                query(&[("after", &after.to_string()), ("limit", "500")])
            ),
            None,
        )
        .await
    {
        Ok(v) => {
            let entries: Vec<Value> = v["entries"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|e| {
                    json!({
                        "time": time_ms(e["time_ms"].as_i64().unwrap_or(0)),
                        "request_id": e["request_id"],
                        "text": e["text"],
                    })
                })
                .collect();
            json_answer(
                StatusCode::OK,
                json!({ "entries": entries, "next": v["next"] }),
            )
        }
        Err(f) => json_answer(status_of(&f), json!({ "error": f.describe() })),
    }
}

fn json_answer(status: StatusCode, v: Value) -> Response {
    let mut r = (status, v.to_string()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    secure(r)
}

pub async fn events(
    axum::extract::State(c): Shared,
    ctx: Ctx,
    Path(name): Path<String>,
) -> Response {
    events_page(&c, &ctx, &name, None, StatusCode::OK).await
}

async fn events_page(
    c: &Console,
    ctx: &Ctx,
    name: &str,
    notice: Option<Notice>,
    status: StatusCode,
) -> Response {
    let n = segment(name);
    let title = format!("{name}: asynchronous events");
    let (events, config) = tokio::join!(
        c.rest(
            &ctx.caller,
            Method::GET,
            format!("/nimbus/v1/functions/{n}/events"),
            None
        ),
        c.rest(
            &ctx.caller,
            Method::GET,
            format!("/2019-09-25/functions/{n}/event-invoke-config"),
            None
        ),
    );
    let v = match events {
        Ok(v) => v,
        Err(f) => {
            let notice = notice.unwrap_or(Notice::Error(f.describe()));
            return html_response(
                Some(ctx),
                status_of(&f),
                page(ctx, &title, Nav::Functions, Some(&notice), empty()),
            );
        }
    };
    let letters = v["dead_letters"].as_array().cloned().unwrap_or_default();
    let body = html! {
        nav.sub aria-label="This function" {
            a href=(format!("/console/functions/{n}")) { "Function" }
            a href=(format!("/console/functions/{n}/monitoring")) { "Monitoring" }
            a href=(format!("/console/functions/{n}/logs")) { "Logs" }
        }
        dl.totals {
            div { dt { "Queued" } dd #queued { (text(&v["queued"])) } }
            div { dt { "In flight" } dd { (text(&v["in_flight"])) } }
            div { dt { "Dead-lettered" } dd #dead-lettered { (text(&v["dead_lettered"])) } }
        }
        @match &config {
            Ok(cfg) => p.hint { "Retries: " (text(&cfg["MaximumRetryAttempts"])) " · maximum event age: " (text(&cfg["MaximumEventAgeInSeconds"])) " s"
                @if let Some(d) = cfg["DestinationConfig"]["OnFailure"]["Destination"].as_str() { " · on failure: " (d) } },
            Err(_) => p.hint { "Retries: 2 · maximum event age: 21600 s (the defaults)" },
        }
        h2 { "Failed events" }
        @if letters.is_empty() { p { "No failed events." } }
        @for d in &letters {
            @let id = d["id"].as_str().unwrap_or_default();
            article.letter {
                h3 { "Event " (id) }
                table.kv { tbody {
                    tr { th scope="row" { "Request id" } td { (text(&d["request_id"])) } }
                    tr { th scope="row" { "Attempts" } td { (text(&d["attempts"])) } }
                    tr { th scope="row" { "Why it stopped" } td { (text(&d["condition"])) } }
                    tr { th scope="row" { "Last error" } td { (text(&d["error"])) } }
                    tr { th scope="row" { "Queued at" } td { (d["enqueued_ms"].as_i64().map(time_ms).unwrap_or_else(|| "—".into())) } }
                } }
                details { summary { "Payload" } (pre(&pretty_json(d["payload"].as_str().unwrap_or_default()))) }
                form method="post" action=(format!("/console/functions/{n}/events/{}/replay", segment(id))) {
                    (csrf(ctx))
                    button.replay type="submit" { "Replay" }
                }
            }
        }
    };
    html_response(
        Some(ctx),
        status,
        page(ctx, &title, Nav::Functions, notice.as_ref(), body),
    )
}

pub async fn replay(
    axum::extract::State(c): Shared,
    ctx: Ctx,
    headers: HeaderMap,
    Path((name, id)): Path<(String, String)>,
    body: Body,
) -> Response {
    if let Err(r) = checked_form(&ctx, &headers, body, crate::MAX_SMALL_FORM_BYTES).await {
        return r;
    }
    let result = c
        .rest(
            &ctx.caller,
            Method::POST,
            &format!(
                "/nimbus/v1/functions/{}/events/{}/replay",
                segment(&name),
                segment(&id)
            ),
            None,
        )
        .await;
    let (notice, status) = match result {
        Ok(_) => (
            Notice::Ok(format!("Event {id} was sent back to {name}.")),
            StatusCode::OK,
        ),
        Err(f) => (
            Notice::Error(format!("Not replayed: {}", f.describe())),
            status_of(&f),
        ),
    };
    events_page(&c, &ctx, &name, Some(notice), status).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_from_the_form_are_utc() {
        assert_eq!(parse_local("1970-01-01T00:01"), Some(60_000));
        assert_eq!(parse_local("1970-01-01T00:01:30"), Some(90_000));
        assert_eq!(parse_local("yesterday"), None);
        assert_eq!(format_local(60_000), "1970-01-01T00:01");
    }
}
