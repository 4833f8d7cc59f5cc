//! The working calendar and the SLA policy: when a work order's acknowledge and handling clocks
//! run out.
//!
//! An outage at 02:00 cannot wait for office hours, so P1 and P2 run on the wall clock (24×7);
//! a P3 warning is handled in working time, and "3 days" then means three working days. This
//! module decides what working time is and turns a start instant plus an SLA duration into a
//! due instant, so that the work-order machine only asks [`SlaClock::due`] and the control
//! plane only stores the answer as a deadline row.
//!
//! # Rules
//!
//! - **Time zone**: the calendar is China Standard Time (UTC+8, no daylight saving); a
//!   [`Millis`] instant belongs to the CST date it falls on.
//! - **Working days**: Monday to Friday, except the days off of the Chinese public holidays
//!   (法定节假日), plus the weekend days that the State Council makes working days (调休上班).
//!   Both are data, not code: `ops/data/holidays-cn.txt`, embedded in the binary, holds 2025 and
//!   2026 from the State Council General Office notices (sources in the file). An operator file
//!   in the same format ([`parse_holidays`]) adds to it and overrides it day by day: the
//!   autonomous region's own 壮族三月三 days, or a year published after the release.
//! - **Unknown years**: a year with no holiday data is treated as plain Monday–Friday rather
//!   than refused, because a deadline must always be computable (a work order raised on
//!   1 January of a year nobody has typed in yet still needs one). The calendar says so instead
//!   of hiding it: [`WorkingCalendar::covers`] is false for such a year, and the control plane
//!   is expected to warn (at start-up and each December for the coming year).
//! - **Working hours**: a list of intervals of the day, by default 08:00–12:00 and 14:30–17:30
//!   (7 h), configurable ([`WorkingHours`]). A working day's length is their sum.
//! - **Counting**: [`WorkingCalendar::add_working_time`] returns the *first* instant at which
//!   the duration of working time has elapsed: a start outside working hours starts counting at
//!   the next working interval, and a duration that exactly fills an interval ends at the
//!   interval's end (12:00), not at the start of the next one (14:30). A zero duration is due at
//!   once. [`WorkingCalendar::working_time_between`] is the inverse and does not depend on the
//!   order of its arguments.
//! - **Bounded work**: both functions count whole weeks arithmetically and only visit the
//!   listed holiday days, so a duration of centuries costs as much as one of an hour. Instants
//!   beyond the range of [`Millis`] saturate at `Millis::MAX`.
//! - **SLA clocks** ([`SlaPolicy`]): per severity an acknowledge and a handling duration and a
//!   clock, `wall` (24×7) or `working` (this calendar). Durations are written for people
//!   (`"15m"`, `"4h"`, `"3d"`, `"1d4h"`); on the working clock a day is one working day's length
//!   (7 h by default), on the wall clock 24 h. Defaults (issue 6): P1 15 min / 4 h and P2
//!   30 min / 24 h on the wall clock, P3 4 h / 3 days in working time. `Info` opens no work
//!   order and has no SLA: its deadlines are `Millis::MAX` (never due).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::model::{CST_OFFSET, DAY, DeadlineKind, HOUR, MINUTE, Millis, Severity, SlaClock};

/// The State Council holiday data shipped with the binary (see the file's comments).
pub const EMBEDDED_HOLIDAYS: &str = include_str!("../data/holidays-cn.txt");

/// More days than [`Millis`] can reach (`u64::MAX` ms is about 2.1 × 10¹¹ days): day counts are
/// capped here, so day arithmetic stays far inside `i64` and the result saturates.
const MAX_DAYS: u64 = 1 << 40;

// ---------------------------------------------------------------------------------------------
// Civil dates
// ---------------------------------------------------------------------------------------------

/// A day of the week.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Weekday {
    Monday,
    Tuesday,
    Wednesday,
    Thursday,
    Friday,
    Saturday,
    Sunday,
}

impl Weekday {
    /// Saturday or Sunday.
    pub fn is_weekend(self) -> bool {
        matches!(self, Weekday::Saturday | Weekday::Sunday)
    }

    fn from_day_number(day: i64) -> Weekday {
        // Day 0, 1970-01-01, was a Thursday.
        match (day + 3).rem_euclid(7) {
            0 => Weekday::Monday,
            1 => Weekday::Tuesday,
            2 => Weekday::Wednesday,
            3 => Weekday::Thursday,
            4 => Weekday::Friday,
            5 => Weekday::Saturday,
            _ => Weekday::Sunday,
        }
    }
}

/// A date of the proleptic Gregorian calendar (in this module always a CST date).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date {
    year: i32,
    month: u8,
    day: u8,
}

/// Why a year, month and day do not make a date.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DateError {
    #[error("`{0}` is not a date of the form YYYY-MM-DD")]
    Format(String),
    #[error("month {0} is not between 1 and 12")]
    Month(u8),
    #[error("day {day} does not exist in {year:04}-{month:02}")]
    Day { year: i32, month: u8, day: u8 },
}

impl Date {
    /// The date `year-month-day`, if it exists.
    pub fn new(year: i32, month: u8, day: u8) -> Result<Date, DateError> {
        if !(1..=12).contains(&month) {
            return Err(DateError::Month(month));
        }
        if day == 0 || day > days_in_month(year, month) {
            return Err(DateError::Day { year, month, day });
        }
        Ok(Date { year, month, day })
    }

    pub fn year(self) -> i32 {
        self.year
    }

    pub fn month(self) -> u8 {
        self.month
    }

    pub fn day(self) -> u8 {
        self.day
    }

    /// The CST date on which the instant `at` falls.
    pub fn from_millis(at: Millis) -> Date {
        Date::from_day_number(cst_day_and_offset(at).0)
    }

    /// The instant `hour:minute` CST of this date, if it is a time of day and an instant
    /// [`Millis`] can hold (not before 1970-01-01 08:00 CST).
    pub fn at(self, hour: u8, minute: u8) -> Option<Millis> {
        if hour >= 24 || minute >= 60 {
            return None;
        }
        let offset = u64::from(hour) * HOUR + u64::from(minute) * MINUTE;
        let local = i128::from(self.day_number()) * i128::from(DAY) + i128::from(offset);
        Millis::try_from(local - i128::from(CST_OFFSET)).ok()
    }

    pub fn weekday(self) -> Weekday {
        Weekday::from_day_number(self.day_number())
    }

    /// Days since 1970-01-01.
    fn day_number(self) -> i64 {
        days_from_civil(
            i64::from(self.year),
            i64::from(self.month),
            i64::from(self.day),
        )
    }

    /// The inverse of [`Date::day_number`]; `day` stays far inside the range where the year
    /// fits an `i32` (see [`MAX_DAYS`]).
    fn from_day_number(day: i64) -> Date {
        let (year, month, day_of_month) = civil_from_days(day);
        Date {
            year: i32::try_from(year).unwrap_or(i32::MAX),
            month: u8::try_from(month).unwrap_or(1),
            day: u8::try_from(day_of_month).unwrap_or(1),
        }
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`);
/// the one copy of this arithmetic in the crate.
pub(crate) fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = year - i64::from(month <= 2);
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The inverse of [`days_from_civil`] (Hinnant's `civil_from_days`): (year, month 1..=12,
/// day 1..=31).
pub(crate) fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day_of_month = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    (
        year_of_era + era * 400 + i64::from(month <= 2),
        month,
        day_of_month,
    )
}

fn is_leap_year(year: i32) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i32, month: u8) -> u8 {
    match month {
        2 if is_leap_year(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

impl FromStr for Date {
    type Err = DateError;

    /// Exactly `YYYY-MM-DD`, four-digit year.
    fn from_str(text: &str) -> Result<Date, DateError> {
        let format = || DateError::Format(text.to_owned());
        let bytes = text.as_bytes();
        let digits_at = |range: std::ops::Range<usize>| bytes[range].iter().all(u8::is_ascii_digit);
        if bytes.len() != 10
            || bytes[4] != b'-'
            || bytes[7] != b'-'
            || !digits_at(0..4)
            || !digits_at(5..7)
            || !digits_at(8..10)
        {
            return Err(format());
        }
        let year = text[0..4].parse().map_err(|_| format())?;
        let month = text[5..7].parse().map_err(|_| format())?;
        let day = text[8..10].parse().map_err(|_| format())?;
        Date::new(year, month, day)
    }
}

/// The CST day number of an instant and its offset into that day.
fn cst_day_and_offset(at: Millis) -> (i64, Millis) {
    let local = u128::from(at) + u128::from(CST_OFFSET);
    let day = local / u128::from(DAY);
    let offset = local % u128::from(DAY);
    // `day` ≤ (2^64 + 8 h) / 1 day < 2^38 and `offset` < 1 day: both conversions are exact.
    (
        i64::try_from(day).unwrap_or(i64::MAX),
        Millis::try_from(offset).unwrap_or(0),
    )
}

/// The instant at `offset` into CST day `day`, saturated to the range of [`Millis`].
fn instant(day: i64, offset: Millis) -> Millis {
    let local = i128::from(day) * i128::from(DAY) + i128::from(offset) - i128::from(CST_OFFSET);
    if local <= 0 {
        0
    } else {
        Millis::try_from(local).unwrap_or(Millis::MAX)
    }
}

/// Monday–Friday days in the day-number range `[from, to)` (0 when `to <= from`).
fn weekdays_between(from: i64, to: i64) -> u64 {
    // Weekdays from the Monday before day 0 (day -3, 1969-12-29) up to `day`.
    fn since_monday(day: i64) -> i64 {
        let days = day + 3;
        5 * days.div_euclid(7) + days.rem_euclid(7).min(5)
    }
    u64::try_from(since_monday(to) - since_monday(from)).unwrap_or(0)
}

/// The `n`-th (from 1) Monday–Friday day on or after day `from`, for `1 ≤ n ≤ MAX_DAYS`.
fn nth_weekday_from(from: i64, n: u64) -> i64 {
    let weekday = (from + 3).rem_euclid(7);
    // Move to the first weekday on or after `from`.
    let first = if weekday >= 5 {
        from + 7 - weekday
    } else {
        from
    };
    let position = (first + 3).rem_euclid(7); // 0 = Monday … 4 = Friday
    let index = position + i64::try_from(n.clamp(1, MAX_DAYS) - 1).unwrap_or(0);
    first - position + index / 5 * 7 + index % 5
}

// ---------------------------------------------------------------------------------------------
// Working hours
// ---------------------------------------------------------------------------------------------

/// One working interval of the day, `HH:MM-HH:MM` (end after start; `24:00` allowed as end).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TimeRange {
    /// Minutes after midnight.
    start: u32,
    end: u32,
}

/// Why a working-hours setting is not valid.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum WorkingHoursError {
    #[error("`{0}` is not a time range of the form HH:MM-HH:MM")]
    Format(String),
    #[error("`{0}` does not end after it starts")]
    Empty(String),
    #[error("no working interval is given")]
    NoIntervals,
    #[error("working intervals {0} and {1} overlap")]
    Overlap(TimeRange, TimeRange),
}

impl TimeRange {
    /// The interval from `start` to `end`, each given as (hour, minute).
    pub fn new(start: (u8, u8), end: (u8, u8)) -> Result<TimeRange, WorkingHoursError> {
        let minutes = |(hour, minute): (u8, u8)| {
            let total = u32::from(hour) * 60 + u32::from(minute);
            (minute < 60 && total <= 24 * 60).then_some(total)
        };
        let text = || format!("{:02}:{:02}-{:02}:{:02}", start.0, start.1, end.0, end.1);
        match (minutes(start), minutes(end)) {
            (Some(start), Some(end)) if start < end => Ok(TimeRange { start, end }),
            (Some(_), Some(_)) => Err(WorkingHoursError::Empty(text())),
            _ => Err(WorkingHoursError::Format(text())),
        }
    }

    fn start_millis(self) -> Millis {
        u64::from(self.start) * MINUTE
    }

    fn end_millis(self) -> Millis {
        u64::from(self.end) * MINUTE
    }

    fn length(self) -> Millis {
        self.end_millis() - self.start_millis()
    }
}

impl fmt::Display for TimeRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:02}:{:02}-{:02}:{:02}",
            self.start / 60,
            self.start % 60,
            self.end / 60,
            self.end % 60
        )
    }
}

impl FromStr for TimeRange {
    type Err = WorkingHoursError;

    fn from_str(text: &str) -> Result<TimeRange, WorkingHoursError> {
        let format = || WorkingHoursError::Format(text.to_owned());
        let clock = |part: &str| -> Option<(u8, u8)> {
            let (hour, minute) = part.trim().split_once(':')?;
            let two_digits = |s: &str| s.len() == 2 && s.bytes().all(|b| b.is_ascii_digit());
            if !two_digits(hour) || !two_digits(minute) {
                return None;
            }
            Some((hour.parse().ok()?, minute.parse().ok()?))
        };
        let (start, end) = text.split_once('-').ok_or_else(format)?;
        let start = clock(start).ok_or_else(format)?;
        let end = clock(end).ok_or_else(format)?;
        TimeRange::new(start, end).map_err(|error| match error {
            WorkingHoursError::Empty(_) => WorkingHoursError::Empty(text.to_owned()),
            _ => format(),
        })
    }
}

impl TryFrom<String> for TimeRange {
    type Error = WorkingHoursError;

    fn try_from(text: String) -> Result<TimeRange, WorkingHoursError> {
        text.parse()
    }
}

impl From<TimeRange> for String {
    fn from(range: TimeRange) -> String {
        range.to_string()
    }
}

/// The working intervals of a working day: at least one, in order, not overlapping (touching
/// is fine). Serialised as a list of `"HH:MM-HH:MM"` strings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Vec<TimeRange>", into = "Vec<TimeRange>")]
pub struct WorkingHours {
    ranges: Vec<TimeRange>,
}

impl WorkingHours {
    /// Sorts the intervals and checks that there is one and that none overlap.
    pub fn new(mut ranges: Vec<TimeRange>) -> Result<WorkingHours, WorkingHoursError> {
        ranges.sort();
        if ranges.is_empty() {
            return Err(WorkingHoursError::NoIntervals);
        }
        for pair in ranges.windows(2) {
            if pair[1].start < pair[0].end {
                return Err(WorkingHoursError::Overlap(pair[0], pair[1]));
            }
        }
        Ok(WorkingHours { ranges })
    }

    pub fn ranges(&self) -> &[TimeRange] {
        &self.ranges
    }

    /// The length of a working day.
    pub fn day_length(&self) -> Millis {
        self.ranges.iter().map(|range| range.length()).sum()
    }

    /// Working time of a working day before `offset` into it.
    fn worked_before(&self, offset: Millis) -> Millis {
        self.ranges
            .iter()
            .map(|range| {
                offset.clamp(range.start_millis(), range.end_millis()) - range.start_millis()
            })
            .sum()
    }

    /// The first offset into a working day at which `amount` (1 ..= day length) of working time
    /// has elapsed since midnight.
    fn offset_after(&self, mut amount: Millis) -> Millis {
        for range in &self.ranges {
            if amount <= range.length() {
                return range.start_millis() + amount;
            }
            amount -= range.length();
        }
        // Only reached for an amount above the day length, which callers never pass.
        self.ranges.last().map_or(DAY, |range| range.end_millis())
    }
}

impl Default for WorkingHours {
    /// 08:00–12:00 and 14:30–17:30, the usual hours of government offices in Guangxi.
    fn default() -> WorkingHours {
        WorkingHours {
            ranges: vec![
                TimeRange {
                    start: 8 * 60,
                    end: 12 * 60,
                },
                TimeRange {
                    start: 14 * 60 + 30,
                    end: 17 * 60 + 30,
                },
            ],
        }
    }
}

impl TryFrom<Vec<TimeRange>> for WorkingHours {
    type Error = WorkingHoursError;

    fn try_from(ranges: Vec<TimeRange>) -> Result<WorkingHours, WorkingHoursError> {
        WorkingHours::new(ranges)
    }
}

impl From<WorkingHours> for Vec<TimeRange> {
    fn from(hours: WorkingHours) -> Vec<TimeRange> {
        hours.ranges
    }
}

// ---------------------------------------------------------------------------------------------
// Holiday data
// ---------------------------------------------------------------------------------------------

/// What a listed day is, whatever its weekday.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DayKind {
    /// A day off (法定节假日 or its bridging days).
    Off,
    /// A working day (调休上班, normally a Saturday or Sunday).
    Work,
}

/// One listed day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayEntry {
    pub kind: DayKind,
    /// The holiday's name as written in the data (may be empty).
    pub name: String,
}

/// Listed days and covered years, parsed from holiday data ([`parse_holidays`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HolidayTable {
    years: BTreeSet<i32>,
    /// By day number.
    days: BTreeMap<i64, DayEntry>,
}

/// Longest range one line may list: longer than any holiday, short enough to catch a typo in a
/// year (`2026-10-01..2027-10-07`).
pub const MAX_RANGE_DAYS: i64 = 31;

/// A line of holiday data that could not be read; `line` counts from 1.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("holiday data line {line}: {problem}")]
pub struct HolidayParseError {
    pub line: usize,
    pub problem: HolidayLineProblem,
}

/// What is wrong with a line of holiday data.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HolidayLineProblem {
    #[error(transparent)]
    Date(#[from] DateError),
    #[error("the range ends ({end}) before it starts ({start})")]
    ReversedRange { start: Date, end: Date },
    #[error("the range lists {0} days, more than {max}", max = MAX_RANGE_DAYS)]
    RangeTooLong(i64),
    #[error("`off` or `work` is missing after the date")]
    MissingKind,
    #[error("`{0}` is neither `off` nor `work`")]
    UnknownKind(String),
    #[error("{date} is already listed on line {first_line}")]
    Duplicate { date: Date, first_line: usize },
    #[error("`{0}` is not a year between 1970 and 9999")]
    Year(String),
    #[error("unexpected `{0}` after the year")]
    TrailingText(String),
}

/// Reads holiday data: `year YYYY` lines declare covered years, `DATE off|work [name]` and
/// `DATE..DATE off|work [name]` lines list days; `#` starts a comment; blank lines are
/// ignored. A day listed twice in one file is an error (it is a typo more often than not);
/// across files, [`HolidayTable::merge`] lets the later file win.
pub fn parse_holidays(text: &str) -> Result<HolidayTable, HolidayParseError> {
    let mut table = HolidayTable::default();
    let mut first_seen: BTreeMap<i64, usize> = BTreeMap::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let error = |problem| HolidayParseError { line, problem };
        let content = raw.split_once('#').map_or(raw, |(before, _)| before);
        let mut words = content.split_whitespace();
        let Some(first) = words.next() else {
            continue;
        };
        if first == "year" {
            let year_text = words.next().unwrap_or("");
            let year = year_text
                .parse::<i32>()
                .ok()
                .filter(|year| (1970..=9999).contains(year) && year_text.len() == 4)
                .ok_or_else(|| error(HolidayLineProblem::Year(year_text.to_owned())))?;
            if let Some(extra) = words.next() {
                return Err(error(HolidayLineProblem::TrailingText(extra.to_owned())));
            }
            table.years.insert(year);
            continue;
        }
        let (start, end) = match first.split_once("..") {
            Some((start, end)) => (start, end),
            None => (first, first),
        };
        let start: Date = start
            .parse()
            .map_err(|e| error(HolidayLineProblem::Date(e)))?;
        let end: Date = end
            .parse()
            .map_err(|e| error(HolidayLineProblem::Date(e)))?;
        if end < start {
            return Err(error(HolidayLineProblem::ReversedRange { start, end }));
        }
        let (first_day, last_day) = (start.day_number(), end.day_number());
        let count = last_day - first_day + 1;
        if count > MAX_RANGE_DAYS {
            return Err(error(HolidayLineProblem::RangeTooLong(count)));
        }
        let kind = match words.next() {
            None => return Err(error(HolidayLineProblem::MissingKind)),
            Some("off") => DayKind::Off,
            Some("work") => DayKind::Work,
            Some(other) => return Err(error(HolidayLineProblem::UnknownKind(other.to_owned()))),
        };
        let name = words.collect::<Vec<_>>().join(" ");
        for day in first_day..=last_day {
            if let Some(&first_line) = first_seen.get(&day) {
                let date = Date::from_day_number(day);
                return Err(error(HolidayLineProblem::Duplicate { date, first_line }));
            }
            first_seen.insert(day, line);
            table.days.insert(
                day,
                DayEntry {
                    kind,
                    name: name.clone(),
                },
            );
        }
    }
    Ok(table)
}

impl HolidayTable {
    /// The embedded State Council data ([`EMBEDDED_HOLIDAYS`]). A test proves it parses; were it
    /// ever broken, this returns an empty table, which covers no year, so the control plane's
    /// coverage warning reports it instead of a panic.
    pub fn china() -> HolidayTable {
        parse_holidays(EMBEDDED_HOLIDAYS).unwrap_or_default()
    }

    /// Adds `other`'s years and days; a day listed in both takes `other`'s entry.
    pub fn merge(&mut self, other: HolidayTable) {
        self.years.extend(other.years);
        self.days.extend(other.days);
    }

    /// Whether the data declares `year` complete (a `year` line).
    pub fn covers(&self, year: i32) -> bool {
        self.years.contains(&year)
    }

    /// The entry for `date`, if listed.
    pub fn entry(&self, date: Date) -> Option<&DayEntry> {
        self.days.get(&date.day_number())
    }

    /// Listed days in date order.
    pub fn entries(&self) -> impl Iterator<Item = (Date, &DayEntry)> {
        self.days
            .iter()
            .map(|(&day, entry)| (Date::from_day_number(day), entry))
    }

    /// Covered years in order.
    pub fn years(&self) -> impl Iterator<Item = i32> + '_ {
        self.years.iter().copied()
    }
}

// ---------------------------------------------------------------------------------------------
// The working calendar
// ---------------------------------------------------------------------------------------------

/// Settings of the working calendar (TOML: `working_hours = ["08:00-12:00", "14:30-17:30"]`).
/// The operator's extra holiday file is read by the control plane and passed as text to
/// [`CalendarConfig::build`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CalendarConfig {
    pub working_hours: WorkingHours,
}

impl CalendarConfig {
    /// The embedded holidays, then `operator_holidays` (holiday data text) over them.
    pub fn build(
        &self,
        operator_holidays: Option<&str>,
    ) -> Result<WorkingCalendar, HolidayParseError> {
        let mut holidays = HolidayTable::china();
        if let Some(text) = operator_holidays {
            holidays.merge(parse_holidays(text)?);
        }
        Ok(WorkingCalendar::new(self.working_hours.clone(), holidays))
    }
}

/// Working days and hours in CST; see the module documentation for the rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkingCalendar {
    hours: WorkingHours,
    holidays: HolidayTable,
}

impl Default for WorkingCalendar {
    /// [`WorkingCalendar::china`].
    fn default() -> WorkingCalendar {
        WorkingCalendar::china()
    }
}

impl WorkingCalendar {
    pub fn new(hours: WorkingHours, holidays: HolidayTable) -> WorkingCalendar {
        WorkingCalendar { hours, holidays }
    }

    /// Default working hours with the embedded State Council holidays.
    pub fn china() -> WorkingCalendar {
        WorkingCalendar::new(WorkingHours::default(), HolidayTable::china())
    }

    pub fn hours(&self) -> &WorkingHours {
        &self.hours
    }

    pub fn holidays(&self) -> &HolidayTable {
        &self.holidays
    }

    /// Whether holiday data exists for `year`; if not, the year is computed as plain
    /// Monday–Friday and the caller should warn.
    pub fn covers(&self, year: i32) -> bool {
        self.holidays.covers(year)
    }

    /// The length of one working day (7 h with the default hours).
    pub fn working_day_length(&self) -> Millis {
        self.hours.day_length()
    }

    pub fn is_working_day(&self, date: Date) -> bool {
        self.is_working(date.day_number())
    }

    fn is_working(&self, day: i64) -> bool {
        match self.holidays.days.get(&day) {
            Some(entry) => entry.kind == DayKind::Work,
            None => !Weekday::from_day_number(day).is_weekend(),
        }
    }

    /// Working days in the day-number range `[from, to)`: plain weekdays counted
    /// arithmetically, corrected by the listed days inside the range.
    fn working_days_between(&self, from: i64, to: i64) -> u64 {
        if to <= from {
            return 0;
        }
        let mut count = i128::from(weekdays_between(from, to));
        for (&day, entry) in self.holidays.days.range(from..to) {
            let weekend = Weekday::from_day_number(day).is_weekend();
            match entry.kind {
                DayKind::Off if !weekend => count -= 1,
                DayKind::Work if weekend => count += 1,
                _ => {}
            }
        }
        u64::try_from(count).unwrap_or(0)
    }

    /// The `n`-th (from 1) working day on or after day `from`.
    fn nth_working_day_from(&self, mut from: i64, n: u64) -> i64 {
        let mut remaining = n.clamp(1, MAX_DAYS);
        // Between two listed days every weekday works; only the listed days need a look.
        for (&day, entry) in self.holidays.days.range(from..) {
            let plain = weekdays_between(from, day);
            if plain >= remaining {
                return nth_weekday_from(from, remaining);
            }
            remaining -= plain;
            if entry.kind == DayKind::Work {
                if remaining == 1 {
                    return day;
                }
                remaining -= 1;
            }
            from = day + 1;
        }
        nth_weekday_from(from, remaining)
    }

    /// Working time of day `day` before `offset` into it.
    fn worked_before(&self, day: i64, offset: Millis) -> Millis {
        if self.is_working(day) {
            self.hours.worked_before(offset)
        } else {
            0
        }
    }

    /// The working time between two instants, in either order.
    pub fn working_time_between(&self, from: Millis, to: Millis) -> Millis {
        let (from, to) = if from <= to { (from, to) } else { (to, from) };
        let (from_day, from_offset) = cst_day_and_offset(from);
        let (to_day, to_offset) = cst_day_and_offset(to);
        let day_length = u128::from(self.working_day_length());
        // Working time from the start of `from_day` to `to`, minus that before `from`.
        let whole_days = u128::from(self.working_days_between(from_day, to_day));
        let total = whole_days * day_length + u128::from(self.worked_before(to_day, to_offset))
            - u128::from(self.worked_before(from_day, from_offset));
        // Never more than `to - from`, so it fits.
        Millis::try_from(total).unwrap_or(Millis::MAX)
    }

    /// The first instant at which `duration` of working time has elapsed after `from`
    /// (`from` itself for a zero duration; `Millis::MAX` if beyond the range of [`Millis`]).
    pub fn add_working_time(&self, from: Millis, duration: Millis) -> Millis {
        if duration == 0 {
            return from;
        }
        let (day, offset) = cst_day_and_offset(from);
        let day_length = self.working_day_length();
        let mut needed = duration;
        if self.is_working(day) {
            let left_today = day_length - self.hours.worked_before(offset);
            if needed <= left_today {
                let target = self.hours.worked_before(offset) + needed;
                return instant(day, self.hours.offset_after(target));
            }
            needed -= left_today;
        }
        // `needed` > 0: some whole working days, then a part (1 ..= a day) of the last one.
        let whole_days = (needed - 1) / day_length;
        let last_part = needed - whole_days * day_length;
        let last_day = self.nth_working_day_from(day + 1, whole_days.saturating_add(1));
        instant(last_day, self.hours.offset_after(last_part))
    }
}

// ---------------------------------------------------------------------------------------------
// Human durations
// ---------------------------------------------------------------------------------------------

/// A duration written for people: numbers with units `d`, `h`, `m`, `s`, `ms`, largest first,
/// without spaces, e.g. `"15m"`, `"4h"`, `"3d"`, `"1d4h30m"`. Days are kept apart from the rest
/// because what a day is depends on the clock: 24 h on the wall clock, one working day on the
/// working clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct HumanDuration {
    days: u64,
    /// The hours, minutes and seconds, in milliseconds.
    rest: Millis,
}

/// Why a duration text is not a [`HumanDuration`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DurationError {
    #[error("the duration is empty")]
    Empty,
    #[error("`{0}`: a number has no unit (use d, h, m, s or ms)")]
    MissingUnit(String),
    #[error("`{text}`: `{unit}` is not a unit (use d, h, m, s or ms)")]
    UnknownUnit { text: String, unit: String },
    #[error("`{0}`: a unit has no number before it")]
    MissingNumber(String),
    #[error("`{text}`: unit `{unit}` is repeated or out of order (largest first: d, h, m, s, ms)")]
    UnitOrder { text: String, unit: String },
    #[error("`{0}` is too long a duration")]
    Overflow(String),
    #[error("`{0}` is zero; a deadline of zero would be missed at once")]
    Zero(String),
}

impl HumanDuration {
    /// Whole days plus `rest` milliseconds (which may exceed a day).
    pub fn new(days: u64, rest: Millis) -> HumanDuration {
        HumanDuration { days, rest }
    }

    pub fn from_millis(millis: Millis) -> HumanDuration {
        HumanDuration::new(0, millis)
    }

    pub fn days(self) -> u64 {
        self.days
    }

    pub fn rest(self) -> Millis {
        self.rest
    }

    /// The length on the wall clock: a day is 24 h (saturating).
    pub fn wall(self) -> Millis {
        self.days.saturating_mul(DAY).saturating_add(self.rest)
    }

    /// The length on a working clock whose working day lasts `day_length` (saturating).
    pub fn working(self, day_length: Millis) -> Millis {
        self.days
            .saturating_mul(day_length)
            .saturating_add(self.rest)
    }
}

impl FromStr for HumanDuration {
    type Err = DurationError;

    fn from_str(text: &str) -> Result<HumanDuration, DurationError> {
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(DurationError::Empty);
        }
        let owned = || trimmed.to_owned();
        let overflow = || DurationError::Overflow(trimmed.to_owned());
        // Units largest first; each may appear once, in this order.
        const UNITS: [(&str, Millis); 5] =
            [("d", 0), ("h", HOUR), ("m", MINUTE), ("s", 1000), ("ms", 1)];
        let mut smallest_allowed = 0;
        let mut duration = HumanDuration::new(0, 0);
        let mut rest = trimmed;
        while !rest.is_empty() {
            let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
            let (number, after) = rest.split_at(digits);
            let unit_length = after.len()
                - after
                    .trim_start_matches(|c: char| !c.is_ascii_digit())
                    .len();
            let (unit, after) = after.split_at(unit_length);
            rest = after;
            if number.is_empty() {
                return Err(DurationError::MissingNumber(owned()));
            }
            if unit.is_empty() {
                return Err(DurationError::MissingUnit(owned()));
            }
            let value: u64 = number.parse().map_err(|_| overflow())?;
            let Some(index) = UNITS.iter().position(|&(name, _)| name == unit) else {
                return Err(DurationError::UnknownUnit {
                    text: owned(),
                    unit: unit.to_owned(),
                });
            };
            if index < smallest_allowed {
                return Err(DurationError::UnitOrder {
                    text: owned(),
                    unit: unit.to_owned(),
                });
            }
            smallest_allowed = index + 1;
            if index == 0 {
                duration.days = value;
            } else {
                let millis = value.checked_mul(UNITS[index].1).ok_or_else(overflow)?;
                duration.rest = duration.rest.checked_add(millis).ok_or_else(overflow)?;
            }
        }
        if duration.days == 0 && duration.rest == 0 {
            return Err(DurationError::Zero(owned()));
        }
        Ok(duration)
    }
}

impl fmt::Display for HumanDuration {
    /// The canonical form, largest unit first (`1d4h30m`, `1s500ms`), which parses back to the
    /// same value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut written = false;
        if self.days > 0 {
            write!(f, "{}d", self.days)?;
            written = true;
        }
        let mut rest = self.rest;
        for (unit, scale) in [("h", HOUR), ("m", MINUTE), ("s", 1000)] {
            if rest >= scale {
                write!(f, "{}{unit}", rest / scale)?;
                rest %= scale;
                written = true;
            }
        }
        if rest > 0 || !written {
            write!(f, "{rest}ms")?;
        }
        Ok(())
    }
}

impl TryFrom<String> for HumanDuration {
    type Error = DurationError;

    fn try_from(text: String) -> Result<HumanDuration, DurationError> {
        text.parse()
    }
}

impl From<HumanDuration> for String {
    fn from(duration: HumanDuration) -> String {
        duration.to_string()
    }
}

// ---------------------------------------------------------------------------------------------
// SLA policy
// ---------------------------------------------------------------------------------------------

/// Which clock an SLA runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClockKind {
    /// 24×7.
    Wall,
    /// The working calendar.
    Working,
}

/// The SLA of one severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlaTerms {
    /// Acknowledge within.
    pub ack: HumanDuration,
    /// Resolve within (counted from dispatch, like the acknowledge clock).
    pub handle: HumanDuration,
    pub clock: ClockKind,
}

impl SlaTerms {
    pub fn duration(&self, kind: DeadlineKind) -> HumanDuration {
        match kind {
            DeadlineKind::Ack => self.ack,
            DeadlineKind::Handle => self.handle,
        }
    }
}

/// The SLA settings, one table per dispatching severity; a missing table keeps its default.
///
/// ```toml
/// [p3]
/// ack = "4h"
/// handle = "3d"
/// clock = "working"
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SlaPolicyConfig {
    pub p1: SlaTerms,
    pub p2: SlaTerms,
    pub p3: SlaTerms,
}

impl Default for SlaPolicyConfig {
    /// Issue 6: P1 15 min / 4 h and P2 30 min / 24 h on the wall clock, P3 4 h / 3 days in
    /// working time.
    fn default() -> SlaPolicyConfig {
        SlaPolicyConfig {
            p1: SlaTerms {
                ack: HumanDuration::from_millis(15 * MINUTE),
                handle: HumanDuration::from_millis(4 * HOUR),
                clock: ClockKind::Wall,
            },
            p2: SlaTerms {
                ack: HumanDuration::from_millis(30 * MINUTE),
                handle: HumanDuration::from_millis(24 * HOUR),
                clock: ClockKind::Wall,
            },
            p3: SlaTerms {
                ack: HumanDuration::from_millis(4 * HOUR),
                handle: HumanDuration::new(3, 0),
                clock: ClockKind::Working,
            },
        }
    }
}

impl SlaPolicyConfig {
    /// The terms of `severity`; `None` for `Info`, which has no SLA.
    pub fn terms(&self, severity: Severity) -> Option<&SlaTerms> {
        match severity {
            Severity::P1 => Some(&self.p1),
            Severity::P2 => Some(&self.p2),
            Severity::P3 => Some(&self.p3),
            Severity::Info => None,
        }
    }
}

/// SLA terms with the calendar their working clocks use; the [`SlaClock`] of the work-order
/// machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlaPolicy {
    config: SlaPolicyConfig,
    calendar: WorkingCalendar,
}

impl Default for SlaPolicy {
    /// Default terms on [`WorkingCalendar::china`].
    fn default() -> SlaPolicy {
        SlaPolicy::new(SlaPolicyConfig::default(), WorkingCalendar::china())
    }
}

impl SlaPolicy {
    pub fn new(config: SlaPolicyConfig, calendar: WorkingCalendar) -> SlaPolicy {
        SlaPolicy { config, calendar }
    }

    pub fn config(&self) -> &SlaPolicyConfig {
        &self.config
    }

    pub fn calendar(&self) -> &WorkingCalendar {
        &self.calendar
    }

    /// The time a clock of `severity` counts between two instants (wall time or working time,
    /// in either order); `None` for `Info`. KPIs use it to tell how much of an SLA was used.
    pub fn elapsed(&self, severity: Severity, from: Millis, to: Millis) -> Option<Millis> {
        let terms = self.config.terms(severity)?;
        Some(match terms.clock {
            ClockKind::Wall => from.abs_diff(to),
            ClockKind::Working => self.calendar.working_time_between(from, to),
        })
    }

    /// The budget of a clock as the time its clock counts; `None` for `Info`.
    pub fn budget(&self, severity: Severity, kind: DeadlineKind) -> Option<Millis> {
        let terms = self.config.terms(severity)?;
        let duration = terms.duration(kind);
        Some(match terms.clock {
            ClockKind::Wall => duration.wall(),
            ClockKind::Working => duration.working(self.calendar.working_day_length()),
        })
    }
}

impl SlaClock for SlaPolicy {
    /// `Millis::MAX` (never) for `Info`, which opens no work order and has no SLA.
    fn due(&self, severity: Severity, kind: DeadlineKind, from: Millis) -> Millis {
        let Some(terms) = self.config.terms(severity) else {
            return Millis::MAX;
        };
        let duration = terms.duration(kind);
        match terms.clock {
            ClockKind::Wall => from.saturating_add(duration.wall()),
            ClockKind::Working => self
                .calendar
                .add_working_time(from, duration.working(self.calendar.working_day_length())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(text: &str) -> Date {
        text.parse().unwrap()
    }

    /// The instant `YYYY-MM-DD HH:MM` CST.
    fn cst(text: &str) -> Millis {
        let (day, time) = text.split_once(' ').unwrap();
        let (hour, minute) = time.split_once(':').unwrap();
        date(day)
            .at(hour.parse().unwrap(), minute.parse().unwrap())
            .unwrap()
    }

    fn china() -> WorkingCalendar {
        WorkingCalendar::china()
    }

    #[test]
    fn civil_dates_match_known_epoch_seconds() {
        // Values from `TZ=Asia/Shanghai date -d '…' +%s`.
        assert_eq!(cst("1970-01-01 08:00"), 0);
        assert_eq!(cst("2026-09-25 16:00"), 1_790_323_200_000);
        assert_eq!(cst("2024-12-31 16:00"), 1_735_632_000_000);
        assert_eq!(date("1970-01-01").at(7, 59), None);
        assert_eq!(Date::from_millis(1_790_323_200_000), date("2026-09-25"));
        // Midnight CST (16:00 UTC the day before) starts the CST date.
        assert_eq!(
            Date::from_millis(cst("2026-09-25 00:00")),
            date("2026-09-25")
        );
        assert_eq!(
            Date::from_millis(cst("2026-09-25 00:00") - 1),
            date("2026-09-24")
        );
        assert_eq!(date("2026-09-25").weekday(), Weekday::Friday);
        assert_eq!(date("2000-02-29").weekday(), Weekday::Tuesday);
        // Round trip over every day of four centuries (covers leap rules).
        let start = date("1970-01-01").day_number();
        for day in start..start + 146_097 {
            assert_eq!(Date::from_day_number(day).day_number(), day);
        }
        assert_eq!(Date::from_day_number(start + 146_097), date("2370-01-01"));
        // The far end of Millis still maps to a date without panicking.
        assert!(Date::from_millis(Millis::MAX).year() > 500_000_000);
    }

    #[test]
    fn dates_are_validated() {
        assert_eq!(
            "2025-02-29".parse::<Date>(),
            Err(DateError::Day {
                year: 2025,
                month: 2,
                day: 29
            })
        );
        assert!("2024-02-29".parse::<Date>().is_ok());
        assert_eq!("2025-13-01".parse::<Date>(), Err(DateError::Month(13)));
        for bad in [
            "2025-1-01",
            "25-01-01",
            "2025/01/01",
            "2025-01-01x",
            "",
            "２０２５-01-01",
        ] {
            assert_eq!(
                bad.parse::<Date>(),
                Err(DateError::Format(bad.to_owned())),
                "{bad}"
            );
        }
    }

    #[test]
    fn embedded_data_parses_and_matches_the_notices() {
        let table = parse_holidays(EMBEDDED_HOLIDAYS).unwrap();
        assert_eq!(table.years().collect::<Vec<_>>(), vec![2025, 2026]);
        // Every make-up workday is a weekend day, as in the notices.
        let work: Vec<String> = table
            .entries()
            .filter(|(_, entry)| entry.kind == DayKind::Work)
            .map(|(date, _)| {
                assert!(date.weekday().is_weekend(), "{date}");
                date.to_string()
            })
            .collect();
        assert_eq!(
            work,
            [
                "2025-01-26",
                "2025-02-08",
                "2025-04-27",
                "2025-09-28",
                "2025-10-11",
                "2026-01-04",
                "2026-02-14",
                "2026-02-28",
                "2026-05-09",
                "2026-09-20",
                "2026-10-10",
            ]
        );
        // Days off per year: 2025 = 1 + 8 + 3 + 5 + 3 + 8, 2026 = 3 + 9 + 3 + 5 + 3 + 3 + 7.
        let off_in = |year| {
            table
                .entries()
                .filter(|(date, entry)| date.year() == year && entry.kind == DayKind::Off)
                .count()
        };
        assert_eq!(off_in(2025), 28);
        assert_eq!(off_in(2026), 33);
        assert_eq!(HolidayTable::china(), table);
        assert_eq!(
            table
                .entry(date("2026-09-25"))
                .map(|entry| entry.name.as_str()),
            Some("中秋节")
        );
    }

    #[test]
    fn working_days_follow_the_data() {
        let calendar = china();
        // 中秋节 2026 falls on a Friday.
        assert!(!calendar.is_working_day(date("2026-09-25")));
        assert!(calendar.is_working_day(date("2026-09-24")));
        // Make-up Sunday and Saturday.
        assert!(calendar.is_working_day(date("2026-09-20")));
        assert!(calendar.is_working_day(date("2026-10-10")));
        // A plain Saturday.
        assert!(!calendar.is_working_day(date("2026-10-17")));
        assert!(calendar.covers(2025) && calendar.covers(2026));
        // 2027 is not in the data: plain Monday–Friday, and the calendar says so.
        assert!(!calendar.covers(2027));
        assert!(calendar.is_working_day(date("2027-01-01"))); // a Friday
        assert!(!calendar.is_working_day(date("2027-01-02")));
    }

    #[test]
    fn p3_raised_on_the_mid_autumn_holiday_waits_for_monday() {
        let sla = SlaPolicy::default();
        let raised = cst("2026-09-25 16:00"); // Friday, 中秋节
        // Fri 25, Sat 26, Sun 27 off; Monday 08:00 + 4 h.
        assert_eq!(
            sla.due(Severity::P3, DeadlineKind::Ack, raised),
            cst("2026-09-28 12:00")
        );
        assert_eq!(
            sla.due(Severity::P3, DeadlineKind::Ack, raised),
            1_790_568_000_000
        );
        // 3 days = 21 h: Mon, Tue, Wed whole, ending at Wednesday's last minute.
        assert_eq!(
            sla.due(Severity::P3, DeadlineKind::Handle, raised),
            cst("2026-09-30 17:30")
        );
        // P1 and P2 ignore the holiday.
        assert_eq!(
            sla.due(Severity::P1, DeadlineKind::Ack, raised),
            cst("2026-09-25 16:15")
        );
        assert_eq!(
            sla.due(Severity::P1, DeadlineKind::Handle, raised),
            cst("2026-09-25 20:00")
        );
        assert_eq!(
            sla.due(Severity::P2, DeadlineKind::Ack, raised),
            cst("2026-09-25 16:30")
        );
        assert_eq!(
            sla.due(Severity::P2, DeadlineKind::Handle, raised),
            cst("2026-09-26 16:00")
        );
        assert_eq!(
            sla.due(Severity::Info, DeadlineKind::Ack, raised),
            Millis::MAX
        );
        assert_eq!(
            sla.due(Severity::Info, DeadlineKind::Handle, raised),
            Millis::MAX
        );
    }

    #[test]
    fn p3_handling_crosses_national_day_to_the_make_up_saturday() {
        let sla = SlaPolicy::default();
        // Wed 30 Sep 09:00: 3 + 3 = 6 h that day; Oct 1–7 off; Thu 8 and Fri 9 give 14 h
        // (20 h); the last hour on make-up Saturday 10 Oct, 08:00–09:00.
        assert_eq!(
            sla.due(Severity::P3, DeadlineKind::Handle, cst("2026-09-30 09:00")),
            cst("2026-10-10 09:00")
        );
        // Tue 29 Sep 16:00: 1.5 h, Wed 7 h, Thu 8 Oct 7 h, then 5.5 h on Fri 9 Oct:
        // 08:00–12:00 and 14:30–16:00.
        assert_eq!(
            sla.due(Severity::P3, DeadlineKind::Handle, cst("2026-09-29 16:00")),
            cst("2026-10-09 16:00")
        );
    }

    #[test]
    fn a_raise_during_lunch_starts_at_the_afternoon_interval() {
        let calendar = china();
        // Mon 23 Nov 2026 12:30: 14:30–17:30 is 3 h, the fourth hour Tuesday 08:00–09:00.
        assert_eq!(
            calendar.add_working_time(cst("2026-11-23 12:30"), 4 * HOUR),
            cst("2026-11-24 09:00")
        );
        assert_eq!(
            calendar.add_working_time(cst("2026-11-23 12:30"), 30 * MINUTE),
            cst("2026-11-23 15:00")
        );
        // Before the day starts and after it ends.
        assert_eq!(
            calendar.add_working_time(cst("2026-11-23 06:00"), HOUR),
            cst("2026-11-23 09:00")
        );
        assert_eq!(
            calendar.add_working_time(cst("2026-11-23 20:00"), HOUR),
            cst("2026-11-24 09:00")
        );
    }

    #[test]
    fn interval_edges_are_exact() {
        let calendar = china();
        // Filling the morning ends at 12:00, not at 14:30.
        assert_eq!(
            calendar.add_working_time(cst("2026-11-23 08:00"), 4 * HOUR),
            cst("2026-11-23 12:00")
        );
        // One more millisecond lands just after 14:30.
        assert_eq!(
            calendar.add_working_time(cst("2026-11-23 08:00"), 4 * HOUR + 1),
            cst("2026-11-23 14:30") + 1
        );
        // A whole working day from the start of one ends at 17:30 the same day.
        assert_eq!(
            calendar.add_working_time(cst("2026-11-23 08:00"), 7 * HOUR),
            cst("2026-11-23 17:30")
        );
        // Starting exactly at 12:00 or 17:30 counts from the next interval.
        assert_eq!(
            calendar.add_working_time(cst("2026-11-23 12:00"), MINUTE),
            cst("2026-11-23 14:31")
        );
        assert_eq!(
            calendar.add_working_time(cst("2026-11-23 17:30"), MINUTE),
            cst("2026-11-24 08:01")
        );
        // Zero is due at once, even outside working hours.
        assert_eq!(
            calendar.add_working_time(cst("2026-11-23 13:00"), 0),
            cst("2026-11-23 13:00")
        );
        assert_eq!(
            calendar.working_time_between(cst("2026-11-23 11:59"), cst("2026-11-23 14:31")),
            2 * MINUTE
        );
    }

    #[test]
    fn a_raise_on_a_make_up_saturday_counts_that_day() {
        let calendar = china();
        // Sat 14 Feb 2026 (调休): 10:00–12:00 and 14:30–16:30.
        assert_eq!(
            calendar.add_working_time(cst("2026-02-14 10:00"), 4 * HOUR),
            cst("2026-02-14 16:30")
        );
        // 17:00 the same Saturday: half an hour, then Spring Festival Sun 15 – Mon 23 off,
        // Tuesday 24 08:00 + 3.5 h.
        assert_eq!(
            calendar.add_working_time(cst("2026-02-14 17:00"), 4 * HOUR),
            cst("2026-02-24 11:30")
        );
        assert_eq!(
            calendar.working_time_between(cst("2026-02-14 17:00"), cst("2026-02-24 11:30")),
            4 * HOUR
        );
    }

    #[test]
    fn year_boundaries() {
        let calendar = china();
        // 2024 is not covered (plain weekdays), 2025-01-01 is 元旦: Tue 31 Dec 16:00 + 4 h =
        // 1.5 h, then Thursday 2 Jan 08:00 + 2.5 h.
        assert!(!calendar.covers(2024));
        assert_eq!(
            calendar.add_working_time(cst("2024-12-31 16:00"), 4 * HOUR),
            cst("2025-01-02 10:30")
        );
        assert_eq!(cst("2025-01-02 10:30"), 1_735_785_000_000);
        // Wed 31 Dec 2025 16:00: 1.5 h; 1–3 Jan 2026 off; make-up Sunday 4 Jan 08:00 + 2.5 h.
        assert_eq!(
            calendar.add_working_time(cst("2025-12-31 16:00"), 4 * HOUR),
            cst("2026-01-04 10:30")
        );
        // From 2026 into uncovered 2027: Thu 31 Dec 2026 16:00 + 4 h → Fri 1 Jan 2027 10:30
        // (no data: an ordinary Friday).
        assert_eq!(
            calendar.add_working_time(cst("2026-12-31 16:00"), 4 * HOUR),
            cst("2027-01-01 10:30")
        );
    }

    #[test]
    fn working_time_between_is_symmetric_and_inverts_add() {
        let calendar = china();
        let pairs = [
            ("2026-09-25 16:00", "2026-09-28 12:00", 4 * HOUR),
            ("2026-09-30 09:00", "2026-10-10 09:00", 21 * HOUR),
            // Whole week Mon 08:00 → next Mon 08:00 = 5 days × 7 h.
            ("2026-11-16 08:00", "2026-11-23 08:00", 35 * HOUR),
            // Spring Festival week of 2026: Feb 16–20 all off, Sat 14 works.
            ("2026-02-13 00:00", "2026-02-21 00:00", 14 * HOUR),
            // Within a holiday, and within one interval.
            ("2026-10-02 09:00", "2026-10-05 15:00", 0),
            ("2026-11-23 09:00", "2026-11-23 09:45", 45 * MINUTE),
        ];
        for (from, to, expected) in pairs {
            let (from, to) = (cst(from), cst(to));
            assert_eq!(calendar.working_time_between(from, to), expected);
            assert_eq!(calendar.working_time_between(to, from), expected);
        }
        assert_eq!(
            calendar.working_time_between(cst("2026-11-23 09:00"), cst("2026-11-23 09:00")),
            0
        );

        // Over a grid of starts (every 97 minutes for six weeks around National Day) and
        // durations, add and between agree, and the due instant is the first such instant.
        let mut start = cst("2026-09-15 00:00");
        while start < cst("2026-10-27 00:00") {
            for duration in [
                1,
                MINUTE,
                3 * HOUR,
                4 * HOUR,
                7 * HOUR,
                21 * HOUR,
                100 * HOUR,
            ] {
                let due = calendar.add_working_time(start, duration);
                assert_eq!(
                    calendar.working_time_between(start, due),
                    duration,
                    "{start}"
                );
                assert_eq!(
                    calendar.working_time_between(start, due - 1),
                    duration - 1,
                    "{start}"
                );
            }
            start += 97 * MINUTE;
        }
    }

    #[test]
    fn long_durations_are_bounded_and_exact() {
        let calendar = china();
        let start = cst("2025-01-01 00:00");
        // Two covered years, day by day from the data.
        let mut working_days = 0;
        for day in date("2025-01-01").day_number()..date("2027-01-01").day_number() {
            if calendar.is_working(day) {
                working_days += 1;
            }
        }
        assert_eq!(
            calendar.working_time_between(start, cst("2027-01-01 00:00")),
            working_days * 7 * HOUR
        );
        // 2025: 261 weekdays − 18 weekday holidays (1 + 6 + 1 + 3 + 1 + 6) + 5 make-up days.
        assert_eq!(
            calendar.working_time_between(start, cst("2026-01-01 00:00")),
            248 * 7 * HOUR
        );
        // 2026: 261 weekdays − 19 weekday holidays (2 + 6 + 1 + 3 + 1 + 1 + 5) + 6 make-up days.
        assert_eq!(
            calendar.working_time_between(cst("2026-01-01 00:00"), cst("2027-01-01 00:00")),
            248 * 7 * HOUR
        );
        // A thousand years of working time: computed, consistent, fast.
        let long = 1000 * 250 * 7 * HOUR;
        let due = calendar.add_working_time(start, long);
        assert_eq!(calendar.working_time_between(start, due), long);
        // Beyond Millis: saturates.
        assert_eq!(calendar.add_working_time(start, Millis::MAX), Millis::MAX);
        assert_eq!(
            calendar.add_working_time(Millis::MAX - 1, HOUR),
            Millis::MAX
        );
        assert!(calendar.working_time_between(0, Millis::MAX) < Millis::MAX / 3);
    }

    #[test]
    fn holiday_parser_reports_lines() {
        let error = |text: &str| parse_holidays(text).unwrap_err();
        assert_eq!(
            error("year 2027\n\n2027-02-30 off 春节"),
            HolidayParseError {
                line: 3,
                problem: HolidayLineProblem::Date(DateError::Day {
                    year: 2027,
                    month: 2,
                    day: 30
                })
            }
        );
        assert_eq!(
            error("# c\n2027-01-01 holiday").problem,
            HolidayLineProblem::UnknownKind("holiday".into())
        );
        assert_eq!(error("2027-01-01").problem, HolidayLineProblem::MissingKind);
        assert_eq!(error("2027-01-01   # off").line, 1);
        assert_eq!(
            error("2027-10-07..2027-10-01 off").problem,
            HolidayLineProblem::ReversedRange {
                start: date("2027-10-07"),
                end: date("2027-10-01")
            }
        );
        assert_eq!(
            error("2026-10-01..2027-10-07 off").problem,
            HolidayLineProblem::RangeTooLong(372)
        );
        assert_eq!(
            error("2027-10-01..2027-10-07 off\n2027-10-07 work"),
            HolidayParseError {
                line: 2,
                problem: HolidayLineProblem::Duplicate {
                    date: date("2027-10-07"),
                    first_line: 1
                }
            }
        );
        assert_eq!(
            error("year 27").problem,
            HolidayLineProblem::Year("27".into())
        );
        assert_eq!(
            error("year").problem,
            HolidayLineProblem::Year(String::new())
        );
        assert_eq!(
            error("year 2027 2028").problem,
            HolidayLineProblem::TrailingText("2028".into())
        );
        assert_eq!(
            error("x\n2027/01/01 off").to_string(),
            "holiday data line 1: `x` is not a date of the form YYYY-MM-DD"
        );
    }

    #[test]
    fn operator_data_extends_and_overrides() {
        let operator = "\
# 广西 壮族三月三 (example dates) and a 2027 that somebody typed in
2026-04-20..2026-04-21 off 壮族三月三
year 2027
2027-01-01 off 元旦
# correcting the embedded data: 2026-10-08 declared a working day
2026-10-08 work
";
        let calendar = CalendarConfig::default().build(Some(operator)).unwrap();
        assert!(calendar.covers(2027));
        assert!(!calendar.is_working_day(date("2026-04-20")));
        assert!(!calendar.is_working_day(date("2027-01-01")));
        assert!(calendar.is_working_day(date("2026-10-08")));
        // The embedded data is still there.
        assert!(!calendar.is_working_day(date("2026-10-07")));
        assert_eq!(
            CalendarConfig::default()
                .build(Some("2027-01-01 of"))
                .unwrap_err()
                .line,
            1
        );
    }

    #[test]
    fn working_hours_are_configurable_and_checked() {
        let config: CalendarConfig =
            toml::from_str(r#"working_hours = ["09:00-12:00", "13:00-18:00"]"#).unwrap();
        let calendar = config.build(None).unwrap();
        assert_eq!(calendar.working_day_length(), 8 * HOUR);
        assert_eq!(
            calendar.add_working_time(cst("2026-11-23 11:00"), 2 * HOUR),
            cst("2026-11-23 14:00")
        );
        let hours_error = |text: &str| {
            toml::from_str::<CalendarConfig>(text)
                .unwrap_err()
                .to_string()
        };
        assert!(hours_error(r#"working_hours = []"#).contains("no working interval"));
        assert!(
            hours_error(r#"working_hours = ["08:00-12:00", "11:00-13:00"]"#)
                .contains("08:00-12:00 and 11:00-13:00 overlap")
        );
        assert!(hours_error(r#"working_hours = ["8:00-12:00"]"#).contains("HH:MM-HH:MM"));
        assert!(hours_error(r#"working_hours = ["12:00-08:00"]"#).contains("does not end"));
        assert!(hours_error(r#"working_hours = ["08:00-24:01"]"#).contains("HH:MM-HH:MM"));
        // Touching intervals and a day ending at midnight are fine.
        let touching = WorkingHours::new(vec![
            "20:00-24:00".parse().unwrap(),
            "00:00-08:00".parse().unwrap(),
        ])
        .unwrap();
        assert_eq!(touching.day_length(), 12 * HOUR);
        assert_eq!(touching.ranges()[0].to_string(), "00:00-08:00");
        // Default round trip.
        let text = toml::to_string(&CalendarConfig::default()).unwrap();
        assert_eq!(
            text.trim(),
            r#"working_hours = ["08:00-12:00", "14:30-17:30"]"#
        );
    }

    #[test]
    fn durations_parse_and_print() {
        let parse = |text: &str| text.parse::<HumanDuration>();
        assert_eq!(parse("15m"), Ok(HumanDuration::new(0, 15 * MINUTE)));
        assert_eq!(parse("4h"), Ok(HumanDuration::new(0, 4 * HOUR)));
        assert_eq!(parse("3d"), Ok(HumanDuration::new(3, 0)));
        assert_eq!(
            parse(" 1d4h30m15s "),
            Ok(HumanDuration::new(1, 4 * HOUR + 30 * MINUTE + 15_000))
        );
        assert_eq!(parse("90m").unwrap().to_string(), "1h30m");
        assert_eq!(parse("1d4h").unwrap().to_string(), "1d4h");
        assert_eq!(HumanDuration::from_millis(1500).to_string(), "1s500ms");
        assert_eq!(parse("3d").unwrap().wall(), 72 * HOUR);
        assert_eq!(parse("3d").unwrap().working(7 * HOUR), 21 * HOUR);
        assert_eq!(parse(""), Err(DurationError::Empty));
        assert_eq!(parse("15"), Err(DurationError::MissingUnit("15".into())));
        assert_eq!(
            parse("4h30"),
            Err(DurationError::MissingUnit("4h30".into()))
        );
        assert_eq!(parse("1s500ms"), Ok(HumanDuration::from_millis(1500)));
        assert_eq!(
            parse("2w"),
            Err(DurationError::UnknownUnit {
                text: "2w".into(),
                unit: "w".into()
            })
        );
        assert_eq!(
            parse("4 h"),
            Err(DurationError::UnknownUnit {
                text: "4 h".into(),
                unit: " h".into()
            })
        );
        assert_eq!(parse("h"), Err(DurationError::MissingNumber("h".into())));
        assert_eq!(
            parse("30m4h"),
            Err(DurationError::UnitOrder {
                text: "30m4h".into(),
                unit: "h".into()
            })
        );
        assert_eq!(
            parse("1h1h"),
            Err(DurationError::UnitOrder {
                text: "1h1h".into(),
                unit: "h".into()
            })
        );
        assert_eq!(
            parse("99999999999999999999h"),
            Err(DurationError::Overflow("99999999999999999999h".into()))
        );
        assert_eq!(
            parse("9999999999999999h"),
            Err(DurationError::Overflow("9999999999999999h".into()))
        );
        assert_eq!(parse("0m"), Err(DurationError::Zero("0m".into())));
        // Huge day counts saturate instead of overflowing.
        assert_eq!(parse("99999999999999d").unwrap().wall(), Millis::MAX);
    }

    #[test]
    fn sla_policy_from_toml() {
        let config: SlaPolicyConfig = toml::from_str(
            r#"
            [p2]
            ack = "20m"
            handle = "2d"
            clock = "working"
            "#,
        )
        .unwrap();
        assert_eq!(config.p1, SlaPolicyConfig::default().p1);
        assert_eq!(config.p2.handle, HumanDuration::new(2, 0));
        let sla = SlaPolicy::new(config, china());
        // P2 now in working time: 2 d = 14 h from Thu 24 Sep 2026 16:00: 1.5 h, then the
        // holiday Fri–Sun, Mon 28 7 h (8.5 h), Tue 29 5.5 h → 16:00.
        assert_eq!(
            sla.due(Severity::P2, DeadlineKind::Handle, cst("2026-09-24 16:00")),
            cst("2026-09-29 16:00")
        );
        assert_eq!(
            sla.budget(Severity::P2, DeadlineKind::Handle),
            Some(14 * HOUR)
        );
        assert_eq!(
            sla.budget(Severity::P1, DeadlineKind::Ack),
            Some(15 * MINUTE)
        );
        assert_eq!(sla.budget(Severity::Info, DeadlineKind::Ack), None);
        assert_eq!(
            sla.elapsed(
                Severity::P2,
                cst("2026-09-29 16:00"),
                cst("2026-09-24 16:00")
            ),
            Some(14 * HOUR)
        );
        assert_eq!(
            sla.elapsed(
                Severity::P1,
                cst("2026-09-24 16:00"),
                cst("2026-09-29 16:00")
            ),
            Some(5 * DAY)
        );

        let error = |text: &str| {
            toml::from_str::<SlaPolicyConfig>(text)
                .unwrap_err()
                .to_string()
        };
        assert!(
            error("[p1]\nack = \"15\"\nhandle = \"4h\"\nclock = \"wall\"")
                .contains("a number has no unit")
        );
        assert!(
            error("[p1]\nack = \"15m\"\nhandle = \"4h\"\nclock = \"office\"")
                .contains("unknown variant `office`")
        );
        assert!(error("[p1]\nack = \"15m\"\nclock = \"wall\"").contains("missing field `handle`"));
        assert!(error("[info]\nack = \"1h\"").contains("unknown field `info`"));

        // The defaults serialise to human durations and read back unchanged.
        let text = toml::to_string(&SlaPolicyConfig::default()).unwrap();
        assert!(text.contains("handle = \"3d\""), "{text}");
        assert!(text.contains("ack = \"15m\""), "{text}");
        assert_eq!(
            toml::from_str::<SlaPolicyConfig>(&text).unwrap(),
            SlaPolicyConfig::default()
        );
    }

    #[test]
    fn wall_clock_p1_at_two_in_the_morning() {
        let sla = SlaPolicy::default();
        // An outage at 02:00 on a holiday does not wait for office hours.
        let raised = cst("2026-10-03 02:00");
        assert_eq!(
            sla.due(Severity::P1, DeadlineKind::Ack, raised),
            cst("2026-10-03 02:15")
        );
        assert_eq!(
            sla.due(Severity::P1, DeadlineKind::Ack, Millis::MAX - 1),
            Millis::MAX
        );
        // P3 at that time waits until Thu 8 Oct 12:00.
        assert_eq!(
            sla.due(Severity::P3, DeadlineKind::Ack, raised),
            cst("2026-10-08 12:00")
        );
    }
}
