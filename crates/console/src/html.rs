//! The page shell, shared pieces of markup, and charts drawn as SVG on the server. Every value
//! goes into the page through maud, which escapes it: nothing a user or a function named is
//! ever markup.

use maud::{DOCTYPE, Markup, PreEscaped, html};

use crate::Ctx;

/// The console's stylesheet and script, served under a path that changes with them.
pub const STYLE: &str = include_str!("assets/console.css");
pub const SCRIPT: &str = include_str!("assets/console.js");
pub const STYLE_PATH: &str = concat!("/console/assets/console.css?v=", env!("CARGO_PKG_VERSION"));
pub const SCRIPT_PATH: &str = concat!("/console/assets/console.js?v=", env!("CARGO_PKG_VERSION"));

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Theme {
    /// The browser's preference.
    Auto,
    Light,
    Dark,
}

impl Theme {
    pub fn of(cookie: Option<&str>) -> Self {
        match cookie {
            Some("light") => Self::Light,
            Some("dark") => Self::Dark,
            _ => Self::Auto,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Light => "light",
            Self::Dark => "dark",
        }
    }

    /// The theme a toggle moves to.
    pub fn next(self) -> Self {
        match self {
            Self::Auto => Self::Dark,
            Self::Dark => Self::Light,
            Self::Light => Self::Auto,
        }
    }
}

/// The sections in the navigation bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Functions,
    Logs,
    Queues,
    Usage,
    Fleet,
    Buckets,
    Tables,
    UserPools,
    Stacks,
    None,
}

const SECTIONS: &[(Nav, &str, &str)] = &[
    (Nav::Functions, "/console/functions", "Functions"),
    (Nav::Logs, "/console/logs", "Logs"),
    (Nav::Queues, "/console/queues", "Queues"),
    (Nav::Usage, "/console/usage", "Usage and cost"),
    (Nav::Fleet, "/console/fleet", "Fleet"),
    (Nav::Buckets, "/console/buckets", "Buckets"),
    (Nav::Tables, "/console/tables", "Tables"),
    (Nav::UserPools, "/console/userpools", "User pools"),
    (Nav::Stacks, "/console/stacks", "Stacks"),
];

/// A message at the top of a page.
pub enum Notice {
    Ok(String),
    Error(String),
}

/// A whole page for a signed-in caller.
pub fn page(ctx: &Ctx, title: &str, nav: Nav, notice: Option<&Notice>, body: Markup) -> String {
    let who = ctx.caller.arn();
    html! {
        (DOCTYPE)
        html lang="en" data-theme=(ctx.theme.as_str()) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · nimbus console" }
                // No icon: a browser would otherwise ask for /favicon.ico.
                link rel="icon" href="data:,";
                link rel="stylesheet" href=(STYLE_PATH);
                script src=(SCRIPT_PATH) defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/console/functions" { "nimbus" }
                    nav aria-label="Sections" {
                        ul {
                            @for (section, href, label) in SECTIONS {
                                li {
                                    @if *section == nav {
                                        a href=(href) aria-current="page" { (label) }
                                    } @else {
                                        a href=(href) { (label) }
                                    }
                                }
                            }
                        }
                    }
                    div.who {
                        span.caller title=(who) { (who) }
                        form method="post" action="/console/theme" {
                            input type="hidden" name="csrf" value=(ctx.csrf);
                            input type="hidden" name="back" value=(ctx.path);
                            button type="submit" title="Switch between the browser's theme, dark and light" {
                                "Theme: " (ctx.theme.as_str())
                            }
                        }
                        form method="post" action="/console/signout" {
                            input type="hidden" name="csrf" value=(ctx.csrf);
                            button #signout type="submit" { "Sign out" }
                        }
                    }
                }
                main #main tabindex="-1" {
                    h1 { (title) }
                    @if let Some(n) = notice {
                        (notice_box(n))
                    }
                    (body)
                }
            }
        }
    }
    .into_string()
}

/// A page for someone not signed in (the sign-in page, an expired form).
pub fn bare_page(theme: Theme, title: &str, body: Markup) -> String {
    html! {
        (DOCTYPE)
        html lang="en" data-theme=(theme.as_str()) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · nimbus console" }
                link rel="icon" href="data:,";
                link rel="stylesheet" href=(STYLE_PATH);
            }
            body {
                main #main.narrow {
                    p.brand { "nimbus" }
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
    .into_string()
}

pub fn notice_box(n: &Notice) -> Markup {
    match n {
        Notice::Ok(m) => html! { div.notice.ok role="status" { (m) } },
        Notice::Error(m) => html! { div.notice.error role="alert" { (m) } },
    }
}

/// A hidden field with the session's form token.
pub fn csrf(ctx: &Ctx) -> Markup {
    html! { input type="hidden" name="csrf" value=(ctx.csrf); }
}

/// Unix milliseconds as `2026-12-07 14:58:23 UTC`.
pub fn time_ms(ms: i64) -> String {
    let Ok(t) = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000) else {
        return ms.to_string();
    };
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// A number of bytes in the largest unit that keeps it at least 1.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// A JSON value's text, or `—` when absent.
pub fn text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => "—".into(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// One series of a chart.
pub struct Series<'a> {
    pub label: &'a str,
    /// A CSS class giving its color.
    pub class: &'a str,
    pub values: Vec<Option<f64>>,
    /// Bars (counts) or a line (durations).
    pub bars: bool,
}

const CHART_W: f64 = 720.0;
const CHART_H: f64 = 180.0;
const PAD_L: f64 = 56.0;
const PAD_B: f64 = 22.0;

/// A chart of series over the same periods, with a table of its numbers for screen readers
/// and anyone who wants them.
pub fn chart(title: &str, unit: &str, times_ms: &[i64], series: &[Series<'_>]) -> Markup {
    let n = times_ms.len().max(1);
    let max = series
        .iter()
        .flat_map(|s| s.values.iter().flatten())
        .fold(0.0f64, |a, &b| a.max(b));
    let top = nice_ceiling(max);
    let plot_w = CHART_W - PAD_L - 8.0;
    let plot_h = CHART_H - PAD_B - 8.0;
    let x = |i: usize| PAD_L + plot_w * (i as f64 + 0.5) / n as f64;
    let y = |v: f64| 8.0 + plot_h * (1.0 - if top > 0.0 { v / top } else { 0.0 });
    let bar_series = series.iter().filter(|s| s.bars).count().max(1) as f64;
    let slot = plot_w / n as f64;
    let bar_w = (slot * 0.8 / bar_series).max(0.5);
    let label_every = n.div_ceil(6).max(1);
    let id = format!(
        "chart-{}",
        title
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            })
            .collect::<String>()
    );
    html! {
        figure.chart aria-labelledby=(id) {
            figcaption #(id) { (title) @if !unit.is_empty() { " (" (unit) ")" } }
            svg viewBox=(format!("0 0 {CHART_W} {CHART_H}")) role="img" aria-label=(title) {
                @for tick in [0.0, 0.5, 1.0] {
                    line.grid x1=(PAD_L) x2=(CHART_W - 8.0) y1=(y(top * tick)) y2=(y(top * tick)) {}
                    text.axis x=(PAD_L - 6.0) y=(y(top * tick) + 4.0) text-anchor="end" {
                        (short_number(top * tick))
                    }
                }
                @for (i, t) in times_ms.iter().enumerate() {
                    @if i % label_every == 0 {
                        text.axis x=(x(i)) y=(CHART_H - 6.0) text-anchor="middle" {
                            (time_ms(*t).get(11..16).unwrap_or_default())
                        }
                    }
                }
                @for (k, s) in series.iter().filter(|s| s.bars).enumerate() {
                    @for (i, v) in s.values.iter().enumerate() {
                        @if let Some(v) = v.filter(|v| *v > 0.0) {
                            rect class=(s.class)
                                x=(format!("{:.1}", x(i) - slot * 0.4 + bar_w * k as f64))
                                y=(format!("{:.1}", y(v)))
                                width=(format!("{bar_w:.1}"))
                                height=(format!("{:.1}", (y(0.0) - y(v)).max(0.5))) {
                                title { (time_ms(times_ms.get(i).copied().unwrap_or_default())) ": " (s.label) " " (short_number(v)) }
                            }
                        }
                    }
                }
                @for s in series.iter().filter(|s| !s.bars) {
                    polyline class=(s.class) fill="none" points=(line_points(&s.values, &x, &y)) {}
                    // A point on its own draws no line: each value also gets a dot.
                    @for (i, v) in s.values.iter().enumerate() {
                        @if let Some(v) = v {
                            circle class=(s.class) cx=(format!("{:.1}", x(i))) cy=(format!("{:.1}", y(*v))) r="2.5" {
                                title { (time_ms(times_ms.get(i).copied().unwrap_or_default())) ": " (s.label) " " (short_number(*v)) }
                            }
                        }
                    }
                }
            }
            ul.legend {
                @for s in series {
                    li { span class=(format!("swatch {}", s.class)) {} (s.label) }
                }
            }
            details {
                summary { "The numbers" }
                table {
                    thead { tr { th scope="col" { "Period" } @for s in series { th scope="col" { (s.label) } } } }
                    tbody {
                        @for (i, t) in times_ms.iter().enumerate() {
                            @if series.iter().any(|s| s.values.get(i).copied().flatten().is_some_and(|v| v > 0.0)) {
                                tr {
                                    td { (time_ms(*t)) }
                                    @for s in series {
                                        td { @match s.values.get(i).copied().flatten() {
                                            Some(v) => (short_number(v)),
                                            None => "—",
                                        } }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn line_points(values: &[Option<f64>], x: &dyn Fn(usize) -> f64, y: &dyn Fn(f64) -> f64) -> String {
    values
        .iter()
        .enumerate()
        .filter_map(|(i, v)| v.map(|v| format!("{:.1},{:.1}", x(i), y(v))))
        .collect::<Vec<_>>()
        .join(" ")
}

/// 1, 2 or 5 times a power of ten, at least `v`.
fn nice_ceiling(v: f64) -> f64 {
    if v <= 0.0 {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * p)
        .find(|c| *c >= v)
        .unwrap_or(10.0 * p)
}

/// A number as short as it reads well.
pub fn short_number(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if v.fract() == 0.0 || v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// Markup for text that came from elsewhere, shown as-is in a `<pre>`.
pub fn pre(text: &str) -> Markup {
    html! { pre { (text) } }
}

/// A JSON value pretty-printed, or the text as it was if it is not JSON.
pub fn pretty_json(text: &str) -> String {
    serde_json::from_str::<serde_json::Value>(text)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| text.to_owned())
}

/// Nothing: for optional sections.
pub fn empty() -> Markup {
    PreEscaped(String::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceilings_and_numbers_read_well() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(3.0), 5.0);
        assert_eq!(nice_ceiling(12.0), 20.0);
        assert_eq!(nice_ceiling(100.0), 100.0);
        assert_eq!(short_number(12345.0), "12k");
        assert_eq!(short_number(2.5), "2.50");
        assert_eq!(short_number(7.0), "7");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(2048), "2.0 KiB");
        assert_eq!(time_ms(0), "1970-01-01 00:00:00 UTC");
    }

    #[test]
    fn charts_escape_their_labels() {
        let m = chart(
            "<b>x</b>",
            "ms",
            &[0, 60_000],
            &[Series {
                label: "<i>",
                class: "s1",
                values: vec![Some(1.0), None],
                bars: true,
            }],
        )
        .into_string();
        assert!(!m.contains("<b>x</b>"));
        assert!(m.contains("&lt;b&gt;x&lt;/b&gt;"));
        assert!(!m.contains("<i>"));
    }
}
