//! Operations logic of the control plane, without IO: what 问题处置在线, 管理在线 and 服务在线
//! decide, as plain data in and plain data out, so that every rule is tested with an injected
//! clock and the control plane only stores, schedules and sends what these modules return.
//!
//! Time is milliseconds since the Unix epoch (UTC) everywhere ([`model::Millis`]); working time
//! and the calendar are China Standard Time (UTC+8, no daylight saving).
//!
//! - [`incidents`]: the incident engine — de-duplication, holds, topology-aware suppression,
//!   mass outages, flap damping — fed with events and ticks, returning actions.

pub mod calendar;
pub mod kpi;
pub mod incidents;
pub mod intake;
pub mod model;
pub mod workorder;
pub mod notify;
