//! CronJob schedules, as Kubernetes reads them: five fields (minute, hour, day of month,
//! month, day of week) of numbers, `*`/`?`, ranges `a-b`, lists `a,b`, steps `*/n`, `a-b/n`
//! and `a/n`, month and weekday names (`JAN`, `mon`); the descriptors `@yearly`
//! (`@annually`), `@monthly`, `@weekly`, `@daily` (`@midnight`), `@hourly`; and
//! `@every <duration>` (`1h30m`, `45s`). When both day fields are restricted a day matches
//! either; when one is `*` it must match both (the cron library Kubernetes uses does the
//! same). Schedules are read in a time zone (`spec.timeZone`, UTC when unset), from the
//! system's time zone database.

use std::fmt;
use std::time::Duration;

use jiff::civil::{self, DateTime};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};

/// Why a schedule or time zone was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScheduleError(String);

impl fmt::Display for ScheduleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ScheduleError {}

fn error(message: impl Into<String>) -> ScheduleError {
    ScheduleError(message.into())
}

/// A parsed schedule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Schedule {
    /// Five cron fields.
    Fields(Fields),
    /// `@every`: at this interval (whole seconds, at least one).
    Every(Duration),
}

/// The five fields as bit sets (bit n set = value n allowed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fields {
    minutes: u64,
    hours: u64,
    days: u64,
    months: u64,
    weekdays: u64,
    /// The day-of-month field is `*` or `?` (so only the weekday restricts days).
    any_day: bool,
    /// The day-of-week field is `*` or `?`.
    any_weekday: bool,
}

const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const WEEKDAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// One field's bounds and names (the first name is worth `min`).
struct Bounds {
    what: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const MINUTE: Bounds = Bounds {
    what: "minute",
    min: 0,
    max: 59,
    names: &[],
};
const HOUR: Bounds = Bounds {
    what: "hour",
    min: 0,
    max: 23,
    names: &[],
};
const DAY: Bounds = Bounds {
    what: "day of month",
    min: 1,
    max: 31,
    names: &[],
};
const MONTH: Bounds = Bounds {
    what: "month",
    min: 1,
    max: 12,
    names: &MONTHS,
};
const WEEKDAY: Bounds = Bounds {
    what: "day of week",
    min: 0,
    max: 6,
    names: &WEEKDAYS,
};

impl Bounds {
    fn value(&self, text: &str) -> Result<u32, ScheduleError> {
        if let Some(i) = self.names.iter().position(|n| n.eq_ignore_ascii_case(text)) {
            return Ok(self.min + u32::try_from(i).unwrap_or(0));
        }
        let value: u32 = text
            .parse()
            .map_err(|_| error(format!("invalid {} {text:?}", self.what)))?;
        if value < self.min || value > self.max {
            return Err(error(format!(
                "{} {value} is out of range {}-{}",
                self.what, self.min, self.max
            )));
        }
        Ok(value)
    }

    /// The bit set of a field, and whether it is `*`/`?` (unrestricted).
    fn parse(&self, field: &str) -> Result<(u64, bool), ScheduleError> {
        let mut bits = 0u64;
        let mut star = false;
        for part in field.split(',') {
            let (range, step) = match part.split_once('/') {
                Some((range, step)) => {
                    let step: u32 = step
                        .parse()
                        .map_err(|_| error(format!("invalid step {step:?} in {part:?}")))?;
                    if step == 0 {
                        return Err(error(format!("step of {part:?} must be at least 1")));
                    }
                    (range, Some(step))
                }
                None => (part, None),
            };
            let (low, high) = if range == "*" || range == "?" {
                // `*/n` restricts; `*` (or `*/1`) does not.
                if step.is_none_or(|s| s == 1) {
                    star = true;
                }
                (self.min, self.max)
            } else if let Some((low, high)) = range.split_once('-') {
                (self.value(low)?, self.value(high)?)
            } else {
                let low = self.value(range)?;
                // `a/n` is `a-max/n`.
                (low, if step.is_some() { self.max } else { low })
            };
            if low > high {
                return Err(error(format!(
                    "{} range {range:?} starts after it ends",
                    self.what
                )));
            }
            let step = step.unwrap_or(1);
            let mut value = low;
            while value <= high {
                bits |= 1 << value;
                value += step;
            }
        }
        Ok((bits, star))
    }
}

/// Parses a Go duration as `@every` takes it (`1h30m`, `90s`, `1.5h`, `500ms`).
fn go_duration(text: &str) -> Result<Duration, ScheduleError> {
    let invalid = || error(format!("invalid duration {text:?}"));
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(invalid)?;
        let number: f64 = rest[..number_end].parse().map_err(|_| invalid())?;
        rest = &rest[number_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_end] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return Err(invalid()),
        };
        rest = &rest[unit_end..];
        total += number * seconds;
    }
    if !total.is_finite() || total > 1e12 {
        return Err(invalid());
    }
    Ok(Duration::from_secs_f64(total))
}

impl Schedule {
    /// Parses a CronJob's `spec.schedule`.
    pub fn parse(text: &str) -> Result<Schedule, ScheduleError> {
        let text = text.trim();
        if text.contains("TZ") {
            return Err(error(
                "cannot use TZ or CRON_TZ in schedule, use timeZone field instead",
            ));
        }
        let fields = match text {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            _ => text,
        };
        if let Some(interval) = fields.strip_prefix("@every ") {
            // Whole seconds, at least one, as the cron library rounds them.
            let seconds = go_duration(interval)?.as_secs().max(1);
            return Ok(Schedule::Every(Duration::from_secs(seconds)));
        }
        if fields.starts_with('@') {
            return Err(error(format!("unrecognized descriptor {fields:?}")));
        }
        let parts: Vec<&str> = fields.split_whitespace().collect();
        let [minute, hour, day, month, weekday] = parts[..] else {
            return Err(error(format!(
                "expected exactly 5 fields, found {}: {fields:?}",
                parts.len()
            )));
        };
        let (minutes, _) = MINUTE.parse(minute)?;
        let (hours, _) = HOUR.parse(hour)?;
        let (days, any_day) = DAY.parse(day)?;
        let (months, _) = MONTH.parse(month)?;
        let (weekdays, any_weekday) = WEEKDAY.parse(weekday)?;
        Ok(Schedule::Fields(Fields {
            minutes,
            hours,
            days,
            months,
            weekdays,
            any_day,
            any_weekday,
        }))
    }

    /// The first time after `after` the schedule fires, its fields read in `zone`; `None`
    /// when it never does (such as `0 0 30 2 *`) within five years.
    pub fn next_after(&self, after: Timestamp, zone: &TimeZone) -> Option<Timestamp> {
        match self {
            Schedule::Every(interval) => {
                let whole = Timestamp::from_second(after.as_second()).ok()?;
                let interval = i64::try_from(interval.as_secs()).ok()?;
                whole.checked_add(interval.seconds()).ok()
            }
            Schedule::Fields(fields) => fields.next_after(after, zone),
        }
    }
}

fn has(bits: u64, value: i8) -> bool {
    u32::try_from(value).is_ok_and(|v| v < 64 && bits & (1 << v) != 0)
}

impl Fields {
    fn day_matches(&self, t: DateTime) -> bool {
        let day = has(self.days, t.day());
        let weekday = has(self.weekdays, t.weekday().to_sunday_zero_offset());
        if self.any_day || self.any_weekday {
            day && weekday
        } else {
            day || weekday
        }
    }

    fn next_after(&self, after: Timestamp, zone: &TimeZone) -> Option<Timestamp> {
        let local = after.to_zoned(zone.clone()).datetime();
        // The next whole minute.
        let mut t = civil::date(local.year(), local.month(), local.day())
            .at(local.hour(), local.minute(), 0, 0)
            .checked_add(1.minute())
            .ok()?;
        let last_year = t.year().saturating_add(5);
        loop {
            if t.year() > last_year {
                return None;
            }
            if !has(self.months, t.month()) {
                t = t
                    .date()
                    .first_of_month()
                    .checked_add(1.month())
                    .ok()?
                    .at(0, 0, 0, 0);
                continue;
            }
            if !self.day_matches(t) {
                t = t.date().tomorrow().ok()?.at(0, 0, 0, 0);
                continue;
            }
            if !has(self.hours, t.hour()) {
                t = t.date().at(t.hour(), 0, 0, 0).checked_add(1.hour()).ok()?;
                continue;
            }
            if !has(self.minutes, t.minute()) {
                t = t.checked_add(1.minute()).ok()?;
                continue;
            }
            // A time skipped by a daylight saving change runs just after the change; a time
            // that happens twice runs the first time.
            let at = t.to_zoned(zone.clone()).ok()?.timestamp();
            if at > after {
                return Some(at);
            }
            t = t.checked_add(1.minute()).ok()?;
        }
    }
}

/// The time zone of `spec.timeZone` (UTC when unset).
pub fn time_zone(name: Option<&str>) -> Result<TimeZone, ScheduleError> {
    match name {
        None | Some("") => Ok(TimeZone::UTC),
        Some(name) if name.eq_ignore_ascii_case("local") => Err(error(
            "timeZone must be an explicit time zone as defined in https://www.iana.org/time-zones",
        )),
        Some("UTC" | "Etc/UTC") => Ok(TimeZone::UTC),
        Some(name) => TimeZone::get(name).map_err(|_| error(format!("unknown time zone {name}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    /// The next `n` firings after `from`, in UTC.
    fn next(schedule: &str, from: &str, n: usize) -> Vec<String> {
        next_in(schedule, from, n, &TimeZone::UTC)
    }

    fn next_in(schedule: &str, from: &str, n: usize, zone: &TimeZone) -> Vec<String> {
        let schedule = Schedule::parse(schedule).unwrap_or_else(|e| panic!("{schedule}: {e}"));
        let mut t = at(from);
        let mut out = Vec::new();
        for _ in 0..n {
            match schedule.next_after(t, zone) {
                Some(next) => {
                    out.push(next.to_string());
                    t = next;
                }
                None => break,
            }
        }
        out
    }

    #[test]
    fn every_minute_and_steps() {
        assert_eq!(
            next("* * * * *", "2024-05-01T10:00:30Z", 2),
            ["2024-05-01T10:01:00Z", "2024-05-01T10:02:00Z"]
        );
        assert_eq!(
            next("*/1 * * * *", "2024-05-01T10:00:00Z", 1),
            ["2024-05-01T10:01:00Z"],
            "strictly after"
        );
        assert_eq!(
            next("*/15 * * * *", "2024-05-01T10:50:00Z", 3),
            [
                "2024-05-01T11:00:00Z",
                "2024-05-01T11:15:00Z",
                "2024-05-01T11:30:00Z"
            ]
        );
        assert_eq!(
            next("5/20 * * * *", "2024-05-01T10:00:00Z", 3),
            [
                "2024-05-01T10:05:00Z",
                "2024-05-01T10:25:00Z",
                "2024-05-01T10:45:00Z"
            ]
        );
        assert_eq!(
            next("0 9-17/4 * * *", "2024-05-01T10:00:00Z", 3),
            [
                "2024-05-01T13:00:00Z",
                "2024-05-01T17:00:00Z",
                "2024-05-02T09:00:00Z"
            ]
        );
    }

    #[test]
    fn lists_ranges_and_names() {
        assert_eq!(
            next("0,30 8 * * MON-FRI", "2024-05-03T08:30:00Z", 3),
            [
                "2024-05-06T08:00:00Z",
                "2024-05-06T08:30:00Z",
                "2024-05-07T08:00:00Z"
            ],
            "Friday 3 May, then Monday"
        );
        assert_eq!(
            next("0 0 1 jan,Jul *", "2024-02-01T00:00:00Z", 2),
            ["2024-07-01T00:00:00Z", "2025-01-01T00:00:00Z"]
        );
        assert_eq!(
            next("0 12 * * sun", "2024-05-01T00:00:00Z", 1),
            ["2024-05-05T12:00:00Z"]
        );
    }

    #[test]
    fn both_day_fields_restricted_match_either() {
        // The 13th, or any Friday.
        assert_eq!(
            next("0 0 13 * 5", "2024-09-01T00:00:00Z", 3),
            [
                "2024-09-06T00:00:00Z",
                "2024-09-13T00:00:00Z",
                "2024-09-20T00:00:00Z"
            ]
        );
        // Only the day of month restricted: weekdays do not widen it.
        assert_eq!(
            next("0 0 13 * *", "2024-09-01T00:00:00Z", 1),
            ["2024-09-13T00:00:00Z"]
        );
        assert_eq!(
            next("0 0 29 2 *", "2024-03-01T00:00:00Z", 1),
            ["2028-02-29T00:00:00Z"]
        );
        assert!(next("0 0 30 2 *", "2024-03-01T00:00:00Z", 1).is_empty());
    }

    #[test]
    fn descriptors() {
        let from = "2024-05-15T10:20:00Z";
        assert_eq!(next("@hourly", from, 1), ["2024-05-15T11:00:00Z"]);
        assert_eq!(next("@daily", from, 1), ["2024-05-16T00:00:00Z"]);
        assert_eq!(next("@midnight", from, 1), ["2024-05-16T00:00:00Z"]);
        assert_eq!(next("@weekly", from, 1), ["2024-05-19T00:00:00Z"]);
        assert_eq!(next("@monthly", from, 1), ["2024-06-01T00:00:00Z"]);
        assert_eq!(next("@yearly", from, 1), ["2025-01-01T00:00:00Z"]);
        assert_eq!(next("@annually", from, 1), ["2025-01-01T00:00:00Z"]);
        assert_eq!(
            next("@every 1h30m", "2024-05-15T10:20:00.5Z", 2),
            ["2024-05-15T11:50:00Z", "2024-05-15T13:20:00Z"]
        );
        assert_eq!(
            Schedule::parse("@every 200ms"),
            Ok(Schedule::Every(Duration::from_secs(1)))
        );
    }

    #[test]
    fn time_zones() -> Result<(), ScheduleError> {
        let berlin = time_zone(Some("Europe/Berlin"))?;
        // 09:00 in Berlin is 07:00 UTC in summer.
        assert_eq!(
            next_in("0 9 * * *", "2024-07-01T00:00:00Z", 1, &berlin),
            ["2024-07-01T07:00:00Z"]
        );
        // 02:30 does not exist on 31 March 2024 in Berlin: it runs as the clock jumps past
        // it, at 03:30 (01:30 UTC).
        assert_eq!(
            next_in("30 2 * * *", "2024-03-30T12:00:00Z", 2, &berlin),
            ["2024-03-31T01:30:00Z", "2024-04-01T00:30:00Z"]
        );
        assert_eq!(time_zone(None)?, TimeZone::UTC);
        assert!(time_zone(Some("Mars/Olympus")).is_err());
        assert!(time_zone(Some("Local")).is_err());
        Ok(())
    }

    #[test]
    fn bad_schedules_are_named() {
        for (bad, says) in [
            ("* * * *", "expected exactly 5 fields"),
            ("60 * * * *", "minute 60 is out of range 0-59"),
            ("* 24 * * *", "hour 24"),
            ("* * 0 * *", "day of month 0"),
            ("* * * 13 *", "month 13"),
            ("* * * * 7", "day of week 7"),
            ("*/0 * * * *", "at least 1"),
            ("5-1 * * * *", "starts after it ends"),
            ("* * * FOO *", "invalid month \"FOO\""),
            ("@reboot", "unrecognized descriptor"),
            ("@every soon", "invalid duration"),
            ("TZ=UTC * * * * *", "use timeZone field"),
        ] {
            match Schedule::parse(bad) {
                Ok(s) => panic!("{bad} parsed: {s:?}"),
                Err(e) => assert!(e.to_string().contains(says), "{bad}: {e}"),
            }
        }
    }
}
