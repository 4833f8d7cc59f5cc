//! Operations logic of the control plane, without IO: what 问题处置在线, 管理在线 and 服务在线
//! decide, as plain data in and plain data out, so that every rule is tested with an injected
//! clock and the control plane only stores, schedules and sends what these modules return.
//!
//! Time is milliseconds since the Unix epoch (UTC) everywhere ([`model::Millis`]); working time
//! and the calendar are China Standard Time (UTC+8, no daylight saving).
//!
//! - [`model`]: the shared vocabulary (severity, category, work-order states, SLA clocks).
//! - [`intake`]: external alerts — Alertmanager webhook v4 and a generic JSON format — parsed,
//!   validated, mapped to one shape and de-duplicated.
//! - [`incidents`]: the incident engine — de-duplication, holds, topology-aware suppression,
//!   mass outages, flap damping — fed with events and ticks, returning actions.
//! - [`workorder`]: the work-order state machine, its transition log and its SLA deadline rows
//!   (fired idempotently, escalation as an attribute).
//! - [`calendar`]: the working calendar (CST working hours, public holidays and make-up
//!   workdays as data) and the SLA policy built on it.
//! - [`notify`]: the exact requests of each notification channel (webhook, WeCom, DingTalk,
//!   Feishu, e-mail), per-channel rate limits with digests, reply classification and retries.
//! - [`access`]: roles and permissions (with MLPS 三员分立), division scope, password hashing
//!   and policy, login lockout, TOTP, API tokens and the duty roster.
//! - [`kpi`]: MTTA, MTTR, handling time, SLA compliance, escalations and reopen rate from the
//!   transition log, per team, per division (rolled up) and per period.
//! - [`maintenance`]: maintenance windows and silences on an agent or a division subtree —
//!   validation, the window in force, expiry, and covered time with overlaps merged.
//! - [`services`]: the service catalog of 服务在线 and its figures per period — availability,
//!   failures with MTBF and MTTR, the service-provision rate — from probe results and agent
//!   heartbeats, maintenance left out; current status; per-agent availability.

pub mod access;
pub mod calendar;
pub mod incidents;
pub mod intake;
pub mod kpi;
pub mod maintenance;
pub mod model;
pub mod notify;
pub mod services;
mod spans;
pub mod workorder;
