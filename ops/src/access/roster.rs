//! The duty roster (值班表): which people are on duty at an instant, so that a notification can
//! @-mention them by mobile number in WeCom and DingTalk group messages.
//!
//! A [`Roster`] is a list of [`Shift`]s. A shift has a start and an end time of day in China
//! Standard Time, the days it starts on (every day, or some weekdays) and its members. Rules:
//!
//! - Times are CST (UTC+8) whatever the server's clock zone: the instant is shifted by
//!   [`CST_OFFSET`] before its day and time of day are taken.
//! - A shift covers `[start, end)`: on duty from `start` on, off duty at `end`.
//! - An end at or before the start crosses midnight: `22:00`–`08:00` listed for Friday runs
//!   from Friday 22:00 to Saturday 08:00; the weekday is the one the shift *starts* on. An end
//!   equal to the start is a 24-hour shift.
//! - Somebody on two shifts at once (a hand-over overlap) is mentioned once.
//!
//! The control plane stores the roster per team as serde data and calls [`Roster::validate`]
//! when it is saved, so that a broken entry is refused with its place named rather than
//! silently mentioning nobody.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::calendar::{Date, Weekday};
use crate::model::{CST_OFFSET, DAY, MINUTE, Millis};
use crate::notify::OnDutyPerson;

/// A time of day, minute precision, written `HH:MM` (00:00 to 23:59).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TimeOfDay {
    minutes: u16,
}

impl TimeOfDay {
    pub fn new(hour: u8, minute: u8) -> Result<TimeOfDay, RosterError> {
        if hour > 23 || minute > 59 {
            return Err(RosterError::TimeOfDay(format!("{hour:02}:{minute:02}")));
        }
        Ok(TimeOfDay {
            minutes: u16::from(hour) * 60 + u16::from(minute),
        })
    }

    /// Milliseconds since midnight.
    fn millis(self) -> Millis {
        Millis::from(self.minutes) * MINUTE
    }
}

impl FromStr for TimeOfDay {
    type Err = RosterError;

    fn from_str(text: &str) -> Result<TimeOfDay, RosterError> {
        let error = || RosterError::TimeOfDay(text.to_owned());
        let bytes = text.as_bytes();
        if bytes.len() != 5
            || bytes[2] != b':'
            || ![0, 1, 3, 4].iter().all(|&i| bytes[i].is_ascii_digit())
        {
            return Err(error());
        }
        let hour = (bytes[0] - b'0') * 10 + (bytes[1] - b'0');
        let minute = (bytes[3] - b'0') * 10 + (bytes[4] - b'0');
        TimeOfDay::new(hour, minute).map_err(|_| error())
    }
}

impl fmt::Display for TimeOfDay {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "{:02}:{:02}",
            self.minutes / 60,
            self.minutes % 60
        )
    }
}

impl TryFrom<String> for TimeOfDay {
    type Error = RosterError;

    fn try_from(text: String) -> Result<TimeOfDay, RosterError> {
        text.parse()
    }
}

impl From<TimeOfDay> for String {
    fn from(time: TimeOfDay) -> String {
        time.to_string()
    }
}

/// The days a shift starts on: `"every_day"` or a list of weekdays (`["Saturday", "Sunday"]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawDays", into = "RawDays")]
pub enum ShiftDays {
    EveryDay,
    Weekdays(Vec<Weekday>),
}

impl ShiftDays {
    pub fn includes(&self, weekday: Weekday) -> bool {
        match self {
            ShiftDays::EveryDay => true,
            ShiftDays::Weekdays(days) => days.contains(&weekday),
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum RawDays {
    Word(String),
    List(Vec<Weekday>),
}

impl TryFrom<RawDays> for ShiftDays {
    type Error = RosterError;

    fn try_from(raw: RawDays) -> Result<ShiftDays, RosterError> {
        match raw {
            RawDays::Word(word) if word == "every_day" => Ok(ShiftDays::EveryDay),
            RawDays::Word(word) => Err(RosterError::Days(word)),
            RawDays::List(days) => Ok(ShiftDays::Weekdays(days)),
        }
    }
}

impl From<ShiftDays> for RawDays {
    fn from(days: ShiftDays) -> RawDays {
        match days {
            ShiftDays::EveryDay => RawDays::Word("every_day".to_owned()),
            ShiftDays::Weekdays(days) => RawDays::List(days),
        }
    }
}

/// Somebody on a shift.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub name: String,
    /// Mobile number for @-mentions (WeCom `mentioned_mobile_list`, DingTalk `atMobiles`).
    pub phone: String,
}

impl From<&Member> for OnDutyPerson {
    fn from(member: &Member) -> OnDutyPerson {
        OnDutyPerson {
            phone: Some(member.phone.clone()),
            ..OnDutyPerson::named(member.name.clone())
        }
    }
}

/// One recurring shift.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shift {
    /// What people call it (白班, 夜班, 周末班).
    pub name: String,
    pub days: ShiftDays,
    pub start: TimeOfDay,
    /// At or before `start`: the shift ends the next day (equal: 24 hours).
    pub end: TimeOfDay,
    pub members: Vec<Member>,
}

impl Shift {
    fn crosses_midnight(&self) -> bool {
        self.end <= self.start
    }

    /// Whether the shift covers the CST `weekday` at `time` ms after midnight, counting an
    /// instance that started the day before (`yesterday`).
    fn covers(&self, today: Weekday, yesterday: Weekday, time: Millis) -> bool {
        let start = self.start.millis();
        let end = self.end.millis();
        let started_today =
            self.days.includes(today) && time >= start && (self.crosses_midnight() || time < end);
        let from_yesterday = self.days.includes(yesterday) && self.crosses_midnight() && time < end;
        started_today || from_yesterday
    }
}

/// A team's duty roster.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Roster {
    pub shifts: Vec<Shift>,
}

/// Why a roster (or a piece of one) was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RosterError {
    #[error("`{0}` is not a time of day HH:MM between 00:00 and 23:59")]
    TimeOfDay(String),
    #[error("`{0}` is not a list of weekdays or \"every_day\"")]
    Days(String),
    #[error("shift {index} has no name")]
    EmptyShiftName { index: usize },
    #[error("shift {shift:?} lists no weekday")]
    NoWeekday { shift: String },
    #[error("shift {shift:?} has no members")]
    NoMembers { shift: String },
    #[error("shift {shift:?}: member {index} has no name")]
    EmptyMemberName { shift: String, index: usize },
    #[error(
        "shift {shift:?}: {member}'s phone {phone:?} is not a mobile number (digits, optionally \
         a leading +, 5 to 15 digits)"
    )]
    Phone {
        shift: String,
        member: String,
        phone: String,
    },
}

impl Roster {
    /// Checks every shift: a name, at least one weekday, at least one member, and members
    /// with a name and a phone number fit for an @-mention.
    pub fn validate(&self) -> Result<(), RosterError> {
        for (index, shift) in self.shifts.iter().enumerate() {
            if shift.name.trim().is_empty() {
                return Err(RosterError::EmptyShiftName { index });
            }
            if matches!(&shift.days, ShiftDays::Weekdays(days) if days.is_empty()) {
                return Err(RosterError::NoWeekday {
                    shift: shift.name.clone(),
                });
            }
            if shift.members.is_empty() {
                return Err(RosterError::NoMembers {
                    shift: shift.name.clone(),
                });
            }
            for (member_index, member) in shift.members.iter().enumerate() {
                if member.name.trim().is_empty() {
                    return Err(RosterError::EmptyMemberName {
                        shift: shift.name.clone(),
                        index: member_index,
                    });
                }
                if !is_phone(&member.phone) {
                    return Err(RosterError::Phone {
                        shift: shift.name.clone(),
                        member: member.name.clone(),
                        phone: member.phone.clone(),
                    });
                }
            }
        }
        Ok(())
    }
}

fn is_phone(phone: &str) -> bool {
    let digits = phone.strip_prefix('+').unwrap_or(phone);
    (5..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit())
}

/// The members on duty at `now`, in roster order, each once (same name and phone).
pub fn on_duty(roster: &Roster, now: Millis) -> Vec<&Member> {
    let today = Date::from_millis(now).weekday();
    let yesterday = Date::from_millis(now.saturating_sub(DAY)).weekday();
    let time = now.saturating_add(CST_OFFSET) % DAY;
    let mut members: Vec<&Member> = Vec::new();
    for shift in &roster.shifts {
        if shift.covers(today, yesterday, time) {
            for member in &shift.members {
                if !members.contains(&member) {
                    members.push(member);
                }
            }
        }
    }
    members
}

/// [`on_duty`] as the notification module's people to @-mention.
pub fn on_duty_persons(roster: &Roster, now: Millis) -> Vec<OnDutyPerson> {
    on_duty(roster, now)
        .into_iter()
        .map(OnDutyPerson::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::HOUR;

    /// 2026-11-26 00:00 CST, a Thursday (2026-11-25 16:00 UTC).
    const THURSDAY: Millis = 1_795_622_400_000;

    fn at(day_offset: u64, hour: u64, minute: u64) -> Millis {
        THURSDAY + day_offset * DAY + hour * HOUR + minute * MINUTE
    }

    fn member(name: &str, phone: &str) -> Member {
        Member {
            name: name.to_owned(),
            phone: phone.to_owned(),
        }
    }

    fn shift(name: &str, days: ShiftDays, start: &str, end: &str, members: &[Member]) -> Shift {
        Shift {
            name: name.to_owned(),
            days,
            start: start.parse().unwrap(),
            end: end.parse().unwrap(),
            members: members.to_vec(),
        }
    }

    fn names(members: Vec<&Member>) -> Vec<&str> {
        members.into_iter().map(|m| m.name.as_str()).collect()
    }

    fn day_and_night() -> Roster {
        Roster {
            shifts: vec![
                shift(
                    "白班",
                    ShiftDays::EveryDay,
                    "08:00",
                    "18:00",
                    &[member("李华", "13800000001")],
                ),
                shift(
                    "夜班",
                    ShiftDays::EveryDay,
                    "18:00",
                    "08:00",
                    &[member("韦强", "13800000002")],
                ),
            ],
        }
    }

    #[test]
    fn shift_boundaries_are_start_inclusive_end_exclusive() {
        let roster = day_and_night();
        assert_eq!(names(on_duty(&roster, at(0, 8, 0) - 1)), ["韦强"]);
        assert_eq!(names(on_duty(&roster, at(0, 8, 0))), ["李华"]);
        assert_eq!(names(on_duty(&roster, at(0, 18, 0) - 1)), ["李华"]);
        assert_eq!(names(on_duty(&roster, at(0, 18, 0))), ["韦强"]);
        assert_eq!(names(on_duty(&roster, at(0, 23, 59))), ["韦强"]);
        assert_eq!(names(on_duty(&roster, at(1, 0, 0))), ["韦强"]);
        assert_eq!(names(on_duty(&roster, at(0, 0, 0))), ["韦强"]);
    }

    #[test]
    fn times_are_china_standard_time_not_utc() {
        let roster = day_and_night();
        // 2026-11-26 00:30 UTC is 08:30 CST: the day shift, although the UTC clock says night.
        let now: Millis = 1_795_653_000_000;
        assert_eq!(now, at(0, 8, 30));
        assert_eq!(names(on_duty(&roster, now)), ["李华"]);
        // 10:00 UTC is 18:00 CST.
        assert_eq!(names(on_duty(&roster, at(0, 18, 0))), ["韦强"]);
        // Monday 07:00 CST is still Sunday in UTC; a Monday-only shift is on.
        let monday = Roster {
            shifts: vec![shift(
                "周一早班",
                ShiftDays::Weekdays(vec![Weekday::Monday]),
                "06:00",
                "09:00",
                &[member("黄敏", "13800000003")],
            )],
        };
        assert_eq!(names(on_duty(&monday, at(4, 7, 0))), ["黄敏"]);
        assert!(on_duty(&monday, at(3, 7, 0)).is_empty());
        assert!(on_duty(&monday, at(4, 9, 0)).is_empty());
    }

    #[test]
    fn a_shift_crossing_midnight_belongs_to_the_day_it_starts() {
        let roster = Roster {
            shifts: vec![shift(
                "周五夜班",
                ShiftDays::Weekdays(vec![Weekday::Friday]),
                "22:00",
                "06:00",
                &[member("陆军", "13800000004")],
            )],
        };
        // Thursday night → Friday morning: Thursday is not listed.
        assert!(on_duty(&roster, at(1, 5, 0)).is_empty());
        assert!(on_duty(&roster, at(1, 21, 59)).is_empty());
        // Friday 22:00 → Saturday 05:59:59.999.
        assert_eq!(names(on_duty(&roster, at(1, 22, 0))), ["陆军"]);
        assert_eq!(names(on_duty(&roster, at(2, 0, 0))), ["陆军"]);
        assert_eq!(names(on_duty(&roster, at(2, 6, 0) - 1)), ["陆军"]);
        assert!(on_duty(&roster, at(2, 6, 0)).is_empty());
        // Saturday 22:00 is not Friday.
        assert!(on_duty(&roster, at(2, 22, 0)).is_empty());
    }

    #[test]
    fn equal_start_and_end_is_a_whole_day_and_overlaps_mention_once() {
        let li = member("李华", "13800000001");
        let roster = Roster {
            shifts: vec![
                shift(
                    "周六全天",
                    ShiftDays::Weekdays(vec![Weekday::Saturday]),
                    "09:00",
                    "09:00",
                    std::slice::from_ref(&li),
                ),
                shift(
                    "白班",
                    ShiftDays::EveryDay,
                    "08:00",
                    "18:00",
                    &[li.clone(), member("韦强", "13800000002")],
                ),
            ],
        };
        // Saturday 09:00 to Sunday 08:59: before it only the day shift has them.
        assert_eq!(names(on_duty(&roster, at(2, 9, 0) - 1)), ["李华", "韦强"]);
        assert_eq!(names(on_duty(&roster, at(2, 7, 0))), Vec::<&str>::new());
        assert_eq!(names(on_duty(&roster, at(2, 9, 0))), ["李华", "韦强"]);
        assert_eq!(names(on_duty(&roster, at(2, 20, 0))), ["李华"]);
        assert_eq!(names(on_duty(&roster, at(3, 9, 0) - 1)), ["李华", "韦强"]);
        assert_eq!(names(on_duty(&roster, at(3, 18, 0))), Vec::<&str>::new());
        let persons = on_duty_persons(&roster, at(2, 20, 0));
        assert_eq!(persons.len(), 1);
        assert_eq!(persons[0].phone.as_deref(), Some("13800000001"));
        assert_eq!(persons[0].name, "李华");
    }

    #[test]
    fn times_of_day_parse_strictly() {
        assert_eq!("08:30".parse::<TimeOfDay>().unwrap().to_string(), "08:30");
        assert_eq!(
            "23:59".parse::<TimeOfDay>().unwrap(),
            TimeOfDay::new(23, 59).unwrap()
        );
        for bad in [
            "24:00", "8:30", "08:60", "0830", "08:3", "", "ab:cd", "08：30", "-1:00",
        ] {
            assert_eq!(
                bad.parse::<TimeOfDay>(),
                Err(RosterError::TimeOfDay(bad.to_owned())),
                "{bad:?}"
            );
        }
        assert_eq!(
            "24:00".parse::<TimeOfDay>().unwrap_err().to_string(),
            "`24:00` is not a time of day HH:MM between 00:00 and 23:59"
        );
    }

    #[test]
    fn a_roster_reads_from_toml_and_is_validated() {
        let text = r#"
            [[shifts]]
            name = "白班"
            days = "every_day"
            start = "08:00"
            end = "18:00"
            members = [{ name = "李华", phone = "13800000001" }]

            [[shifts]]
            name = "周末夜班"
            days = ["Saturday", "Sunday"]
            start = "18:00"
            end = "08:00"
            members = [{ name = "韦强", phone = "+8613800000002" }]
        "#;
        let roster: Roster = toml::from_str(text).unwrap();
        assert_eq!(roster.validate(), Ok(()));
        assert_eq!(roster.shifts[0].days, ShiftDays::EveryDay);
        assert_eq!(
            roster.shifts[1].days,
            ShiftDays::Weekdays(vec![Weekday::Saturday, Weekday::Sunday])
        );
        let json = serde_json::to_string(&roster).unwrap();
        assert!(json.contains("\"days\":\"every_day\""), "{json}");
        assert!(json.contains("\"start\":\"08:00\""), "{json}");
        assert_eq!(serde_json::from_str::<Roster>(&json).unwrap(), roster);
        // Sunday 07:00: the weekend night shift that started Saturday.
        assert_eq!(names(on_duty(&roster, at(3, 7, 0))), ["韦强"]);

        let bad_days = text.replace("\"every_day\"", "\"weekdays\"");
        let error = toml::from_str::<Roster>(&bad_days).unwrap_err();
        assert!(error.to_string().contains("every_day"), "{error}");
        let bad_time = text.replace("\"18:00\"", "\"6pm\"");
        let error = toml::from_str::<Roster>(&bad_time).unwrap_err();
        assert!(
            error.to_string().contains("`6pm` is not a time of day"),
            "{error}"
        );
    }

    #[test]
    fn validation_names_the_broken_entry() {
        let good = || {
            shift(
                "白班",
                ShiftDays::EveryDay,
                "08:00",
                "18:00",
                &[member("李华", "13800000001")],
            )
        };
        let check = |edit: &dyn Fn(&mut Shift)| {
            let mut shift = good();
            edit(&mut shift);
            Roster {
                shifts: vec![good(), shift],
            }
            .validate()
        };
        assert_eq!(check(&|_| {}), Ok(()));
        assert_eq!(
            check(&|s| s.name = " ".to_owned()),
            Err(RosterError::EmptyShiftName { index: 1 })
        );
        assert_eq!(
            check(&|s| s.days = ShiftDays::Weekdays(vec![])),
            Err(RosterError::NoWeekday {
                shift: "白班".to_owned()
            })
        );
        assert_eq!(
            check(&|s| s.members.clear()),
            Err(RosterError::NoMembers {
                shift: "白班".to_owned()
            })
        );
        assert_eq!(
            check(&|s| s.members[0].name = String::new()),
            Err(RosterError::EmptyMemberName {
                shift: "白班".to_owned(),
                index: 0
            })
        );
        for phone in [
            "",
            "138-0000-0001",
            "1380",
            "+",
            "1234567890123456",
            "１３８００００００００１",
        ] {
            let result = check(&|s| s.members[0].phone = phone.to_owned());
            assert!(
                matches!(result, Err(RosterError::Phone { .. })),
                "{phone:?}: {result:?}"
            );
        }
        let error = check(&|s| s.members[0].phone = "138-0000-0001".to_owned()).unwrap_err();
        assert_eq!(
            error.to_string(),
            "shift \"白班\": 李华's phone \"138-0000-0001\" is not a mobile number (digits, \
             optionally a leading +, 5 to 15 digits)"
        );
        assert_eq!(Roster::default().validate(), Ok(()));
        assert!(on_duty(&Roster::default(), THURSDAY).is_empty());
    }
}
