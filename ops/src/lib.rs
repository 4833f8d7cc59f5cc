//! Operations logic of the control plane, without IO: what 问题处置在线, 管理在线 and 服务在线
//! decide, as plain data in and plain data out, so that every rule is tested with an injected
//! clock and the control plane only stores, schedules and sends what these modules return.
//!
//! Time is milliseconds since the Unix epoch (UTC) everywhere ([`model::Millis`]); working time
//! and the calendar are China Standard Time (UTC+8, no daylight saving).

pub mod model;
pub mod notify;
