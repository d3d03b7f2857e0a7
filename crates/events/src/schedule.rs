//! EventBridge schedule expressions: `rate(N unit)` and the six-field
//! `cron(minutes hours day-of-month month day-of-week year)`, always in UTC. Pure: given an
//! expression and a time, the next time it fires.

use time::{Date, Duration, OffsetDateTime, Time, Weekday};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schedule {
    /// Every `period` from the rule's anchor (its creation).
    Rate {
        period_ms: i64,
    },
    Cron(Box<Cron>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    minutes: Vec<bool>,
    hours: Vec<bool>,
    months: Vec<bool>,
    years: Vec<bool>,
    dom: DayOfMonth,
    dow: DayOfWeek,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum DayOfMonth {
    Any,
    Days(Vec<bool>),
    Last,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum DayOfWeek {
    Any,
    /// Indexed 1..=7, Sunday = 1.
    Days(Vec<bool>),
    /// The k-th given weekday of the month (`n#k`).
    Nth(u8, u8),
    /// The last given weekday of the month (`nL`).
    Last(u8),
}

fn invalid(expr: &str, why: &str) -> String {
    format!("Parameter ScheduleExpression is not valid: {expr} ({why})")
}

const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const DAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

fn value(token: &str, names: &[&str], first: u32) -> Option<u32> {
    if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(token)) {
        return Some(i as u32 + first);
    }
    token.parse().ok()
}

/// Parses a list of `*`, `a`, `a-b`, `a/s`, `a-b/s`, `*/s` into a table over `min..=max`.
fn field(text: &str, min: u32, max: u32, names: &[&str], first: u32) -> Option<Vec<bool>> {
    let mut table = vec![false; max as usize + 1];
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (r, s.parse::<u32>().ok().filter(|s| *s > 0)?),
            None => (part, 1),
        };
        let (lo, hi) = if range == "*" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            (value(a, names, first)?, value(b, names, first)?)
        } else {
            let v = value(range, names, first)?;
            (v, if part.contains('/') { max } else { v })
        };
        if lo < min || hi > max || lo > hi {
            return None;
        }
        let mut v = lo;
        while v <= hi {
            table[v as usize] = true;
            v += step;
        }
    }
    Some(table)
}

impl Schedule {
    pub fn parse(expr: &str) -> Result<Self, String> {
        let expr = expr.trim();
        if let Some(inner) = expr.strip_prefix("rate(").and_then(|r| r.strip_suffix(')')) {
            let mut parts = inner.split_whitespace();
            let (Some(n), Some(unit), None) = (parts.next(), parts.next(), parts.next()) else {
                return Err(invalid(expr, "expected rate(value unit)"));
            };
            let n: i64 = n
                .parse()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| invalid(expr, "the value must be a positive integer"))?;
            let unit_ms = match (unit, n == 1) {
                ("minute", true) | ("minutes", false) => 60_000,
                ("hour", true) | ("hours", false) => 3_600_000,
                ("day", true) | ("days", false) => 86_400_000,
                _ => {
                    return Err(invalid(
                        expr,
                        "the unit must be minute(s), hour(s) or day(s), singular for 1",
                    ));
                }
            };
            return Ok(Schedule::Rate {
                period_ms: n * unit_ms,
            });
        }
        let Some(inner) = expr.strip_prefix("cron(").and_then(|r| r.strip_suffix(')')) else {
            return Err(invalid(expr, "expected rate(...) or cron(...)"));
        };
        let f: Vec<&str> = inner.split_whitespace().collect();
        if f.len() != 6 {
            return Err(invalid(
                expr,
                "cron needs six fields: minutes hours day-of-month month day-of-week year",
            ));
        }
        let bad = |what: &str| invalid(expr, &format!("invalid {what} field"));
        let minutes = field(f[0], 0, 59, &[], 0).ok_or_else(|| bad("minutes"))?;
        let hours = field(f[1], 0, 23, &[], 0).ok_or_else(|| bad("hours"))?;
        let months = field(f[3], 1, 12, &MONTHS, 1).ok_or_else(|| bad("month"))?;
        let years = field(f[5], 1970, 2199, &[], 0).ok_or_else(|| bad("year"))?;
        let dom = match f[2] {
            "?" => DayOfMonth::Any,
            "L" => DayOfMonth::Last,
            t if t.contains('W') => {
                return Err(invalid(expr, "W (nearest weekday) is not supported"));
            }
            t => DayOfMonth::Days(field(t, 1, 31, &[], 0).ok_or_else(|| bad("day-of-month"))?),
        };
        let dow = match f[4] {
            "?" => DayOfWeek::Any,
            t if t.contains('#') => {
                let (d, k) = t.split_once('#').ok_or_else(|| bad("day-of-week"))?;
                let d = value(d, &DAYS, 1)
                    .filter(|d| (1..=7).contains(d))
                    .ok_or_else(|| bad("day-of-week"))?;
                let k = k
                    .parse::<u8>()
                    .ok()
                    .filter(|k| (1..=5).contains(k))
                    .ok_or_else(|| bad("day-of-week"))?;
                DayOfWeek::Nth(d as u8, k)
            }
            t if t.len() > 1 && t.ends_with('L') => {
                let d = value(&t[..t.len() - 1], &DAYS, 1)
                    .filter(|d| (1..=7).contains(d))
                    .ok_or_else(|| bad("day-of-week"))?;
                DayOfWeek::Last(d as u8)
            }
            t => DayOfWeek::Days(field(t, 1, 7, &DAYS, 1).ok_or_else(|| bad("day-of-week"))?),
        };
        let dom_any = dom == DayOfMonth::Any;
        let dow_any = dow == DayOfWeek::Any;
        if dom_any == dow_any {
            return Err(invalid(
                expr,
                "exactly one of day-of-month and day-of-week must be ?",
            ));
        }
        Ok(Schedule::Cron(Box::new(Cron {
            minutes,
            hours,
            months,
            years,
            dom,
            dow,
        })))
    }

    /// The first fire time strictly after `after_ms`; `anchor_ms` is where a rate counts from.
    pub fn next_after(&self, after_ms: i64, anchor_ms: i64) -> Option<i64> {
        match self {
            Schedule::Rate { period_ms } => {
                let k = ((after_ms - anchor_ms) / period_ms + 1).max(1);
                Some(anchor_ms + k * period_ms)
            }
            Schedule::Cron(cron) => cron.next_after(after_ms),
        }
    }
}

fn sunday_one(weekday: Weekday) -> u8 {
    weekday.number_days_from_sunday() + 1
}

impl Cron {
    fn day_matches(&self, date: Date) -> bool {
        if !self
            .years
            .get(date.year() as usize)
            .copied()
            .unwrap_or(false)
            || !self.months[date.month() as usize]
        {
            return false;
        }
        let last_day = date.month().length(date.year());
        let dom_ok = match &self.dom {
            DayOfMonth::Any => true,
            DayOfMonth::Days(days) => days[date.day() as usize],
            DayOfMonth::Last => date.day() == last_day,
        };
        let weekday = sunday_one(date.weekday());
        let dow_ok = match &self.dow {
            DayOfWeek::Any => true,
            DayOfWeek::Days(days) => days[weekday as usize],
            DayOfWeek::Nth(d, k) => weekday == *d && (date.day() - 1) / 7 + 1 == *k,
            DayOfWeek::Last(d) => weekday == *d && date.day() + 7 > last_day,
        };
        dom_ok && dow_ok
    }

    fn next_after(&self, after_ms: i64) -> Option<i64> {
        let after = OffsetDateTime::from_unix_timestamp(after_ms.div_euclid(1000)).ok()?;
        // The next whole minute after `after`.
        let start =
            after.replace_second(0).ok()?.replace_nanosecond(0).ok()? + Duration::minutes(1);
        let mut date = start.date();
        for day in 0..(366 * 5) {
            if self.day_matches(date) {
                let from = if day == 0 {
                    (start.hour(), start.minute())
                } else {
                    (0, 0)
                };
                for hour in from.0..24 {
                    if !self.hours[hour as usize] {
                        continue;
                    }
                    let first_minute = if hour == from.0 { from.1 } else { 0 };
                    for minute in first_minute..60 {
                        if self.minutes[minute as usize] {
                            let time = Time::from_hms(hour, minute, 0).ok()?;
                            return Some(date.with_time(time).assume_utc().unix_timestamp() * 1000);
                        }
                    }
                }
            }
            date = date.next_day()?;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> i64 {
        let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]");
        time::PrimitiveDateTime::parse(s, &format)
            .unwrap()
            .assume_utc()
            .unix_timestamp()
            * 1000
    }

    #[test]
    fn rates() {
        let five = Schedule::parse("rate(5 minutes)").unwrap();
        assert_eq!(
            five.next_after(at("2026-01-01 00:04"), at("2026-01-01 00:00")),
            Some(at("2026-01-01 00:05"))
        );
        assert_eq!(
            five.next_after(at("2026-01-01 00:05"), at("2026-01-01 00:00")),
            Some(at("2026-01-01 00:10"))
        );
        assert!(Schedule::parse("rate(1 minute)").is_ok());
        for bad in [
            "rate(1 minutes)",
            "rate(2 minute)",
            "rate(0 hours)",
            "rate(5 weeks)",
            "rate(x hours)",
            "rate()",
        ] {
            assert!(Schedule::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn crons() {
        let every_15 = Schedule::parse("cron(0/15 * * * ? *)").unwrap();
        assert_eq!(
            every_15.next_after(at("2026-03-10 10:07"), 0),
            Some(at("2026-03-10 10:15"))
        );
        let weekdays_noon = Schedule::parse("cron(0 12 ? * MON-FRI *)").unwrap();
        // 2026-11-27 is a Friday; the next weekday noon after Friday 13:00 is Monday.
        assert_eq!(
            weekdays_noon.next_after(at("2026-11-27 13:00"), 0),
            Some(at("2026-11-30 12:00"))
        );
        let last_day = Schedule::parse("cron(30 23 L * ? *)").unwrap();
        assert_eq!(
            last_day.next_after(at("2026-02-01 00:00"), 0),
            Some(at("2026-02-28 23:30"))
        );
        let second_tuesday = Schedule::parse("cron(0 9 ? * 3#2 *)").unwrap();
        assert_eq!(
            second_tuesday.next_after(at("2026-12-01 00:00"), 0),
            Some(at("2026-12-08 09:00"))
        );
        let yearly = Schedule::parse("cron(0 0 1 JAN ? 2027)").unwrap();
        assert_eq!(
            yearly.next_after(at("2026-06-01 00:00"), 0),
            Some(at("2027-01-01 00:00"))
        );
        assert_eq!(yearly.next_after(at("2027-06-01 00:00"), 0), None);
        for bad in [
            "cron(* * * * * *)",
            "cron(0 12 * * ? )",
            "cron(60 * * * ? *)",
            "cron(0 24 * * ? *)",
            "cron(0 0 ? * ? *)",
            "cron(0 0 15W * ? *)",
            "cron(0 0 * * 8 *)",
            "at(2026-01-01T00:00:00)",
        ] {
            assert!(Schedule::parse(bad).is_err(), "{bad}");
        }
    }
}
