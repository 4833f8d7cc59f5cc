//! The web console (控制台): its files, embedded in the binary, and the three endpoints that
//! exist for it — a province-wide overview, one level of the network tree, and a live event
//! stream — so that the browser never has to load 18,000 agents to draw a page.
//!
//! Routes, merged into the API's router by `crate::api::router`:
//!
//! - `GET /` and `GET /console/{*file}`: the console itself (no authentication: it is static
//!   code; everything it shows comes from the API with the user's token), and the boundaries
//!   of the region's cities and of each city's counties for the map (`geo/*.geojson`).
//! - `GET /api/v1/overview?division=C`: agents online/offline by level and by child division,
//!   open work orders by severity and state, escalations, this month's KPIs (SLA compliance,
//!   escalations, MTTA/MTTR), the posture score distribution and the checks failing most.
//! - `GET /api/v1/network?division=C`: the children of `C` with online/total counts, their
//!   worst state and worst link (RTT and loss from the QUIC statistics of the heartbeats),
//!   positions on a fixed canvas, the agents attached at `C` itself, and the board of the
//!   subtree: the longest-offline units, the worst links, units joined and withdrawn this
//!   month, and the open alarms with their 市/县/乡 path and duration.
//! - `GET /api/v1/events`: Server-Sent Events (`text/event-stream`) of agents going online or
//!   offline and work orders changing state. The console reads it with `fetch` so that the
//!   token travels in the `Authorization` header like every other call (an `EventSource`
//!   cannot send headers, and a token in a URL ends up in logs).
//!
//! The `/api/v1` routes go through [`Operator`], so the role check and the division scope are
//! the API's, in one place: a user's request always carries `division` (their scope by
//! default), and a `division` outside it is refused.
//!
//! Every console response carries a `Content-Security-Policy` of `default-src 'self'` (no
//! inline script, no outside origin), `X-Content-Type-Options: nosniff` and no framing.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use bagui_ops::access::Permission;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc};

use crate::admin::{Admin, AdminError, Presence};
use crate::api::{ApiError, ApiState, Operator, run_admin as run};
use crate::dispatch::OrderFilter;

/// The boundaries of the region (its cities) and of each city (its counties), converted from
/// the MIT-licensed `echarts-china-*-js` packages by `tools/geo/convert.mjs`
/// (see `console/geo/README.md`).
macro_rules! geo {
    ($code:literal) => {
        (
            concat!("geo/", $code, ".geojson"),
            GEOJSON,
            include_bytes!(concat!("../console/geo/", $code, ".geojson")),
        )
    };
}

/// Every file of the console: path under `/console/`, content type, bytes.
const ASSETS: &[(&str, &str, &[u8])] = &[
    ("index.html", HTML, include_bytes!("../console/index.html")),
    ("style.css", CSS, include_bytes!("../console/style.css")),
    ("app.js", JS, include_bytes!("../console/app.js")),
    ("api.js", JS, include_bytes!("../console/api.js")),
    ("dom.js", JS, include_bytes!("../console/dom.js")),
    ("ui.js", JS, include_bytes!("../console/ui.js")),
    ("i18n.js", JS, include_bytes!("../console/i18n.js")),
    ("i18n/zh.js", JS, include_bytes!("../console/i18n/zh.js")),
    ("i18n/en.js", JS, include_bytes!("../console/i18n/en.js")),
    (
        "pages/overview.js",
        JS,
        include_bytes!("../console/pages/overview.js"),
    ),
    (
        "pages/network.js",
        JS,
        include_bytes!("../console/pages/network.js"),
    ),
    (
        "pages/orders.js",
        JS,
        include_bytes!("../console/pages/orders.js"),
    ),
    (
        "pages/assets.js",
        JS,
        include_bytes!("../console/pages/assets.js"),
    ),
    (
        "pages/security.js",
        JS,
        include_bytes!("../console/pages/security.js"),
    ),
    (
        "pages/services.js",
        JS,
        include_bytes!("../console/pages/services.js"),
    ),
    (
        "pages/settings.js",
        JS,
        include_bytes!("../console/pages/settings.js"),
    ),
    (
        "pages/map.js",
        JS,
        include_bytes!("../console/pages/map.js"),
    ),
    (
        "pages/board.js",
        JS,
        include_bytes!("../console/pages/board.js"),
    ),
    ("favicon.svg", SVG, include_bytes!("../console/favicon.svg")),
    geo!("45"),
    geo!("4501"),
    geo!("4502"),
    geo!("4503"),
    geo!("4504"),
    geo!("4505"),
    geo!("4506"),
    geo!("4507"),
    geo!("4508"),
    geo!("4509"),
    geo!("4510"),
    geo!("4511"),
    geo!("4512"),
    geo!("4513"),
    geo!("4514"),
];

const HTML: &str = "text/html; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const SVG: &str = "image/svg+xml";
const GEOJSON: &str = "application/geo+json";

/// No inline script or style, nothing from another origin, never framed.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; \
                   form-action 'self'; frame-ancestors 'none'";

/// How often the event hub compares the fleet and the open work orders with what it saw.
const EVENT_POLL: Duration = Duration::from_secs(1);
/// A comment line this often keeps proxies from closing an idle stream.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// How often an open stream checks whether the control plane is stopping.
const SHUTDOWN_CHECK: Duration = Duration::from_millis(250);

/// The routes of this module, for `Router::merge`.
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/", get(index))
        .route("/console/{*file}", get(asset))
        .route("/api/v1/overview", get(overview))
        .route("/api/v1/network", get(network))
        .route("/api/v1/events", get(events))
}

fn with_security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

fn serve_asset(name: &str) -> Response {
    let response = match ASSETS.iter().find(|(path, _, _)| *path == name) {
        Some((_, content_type, bytes)) => (
            [
                (header::CONTENT_TYPE, *content_type),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            *bytes,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "not found\n").into_response(),
    };
    with_security_headers(response)
}

async fn index() -> Response {
    serve_asset("index.html")
}

async fn asset(Path(file): Path<String>) -> Response {
    serve_asset(&file)
}

// ---------------------------------------------------------------------------------------------
// Aggregation
// ---------------------------------------------------------------------------------------------

/// The colour of a node: `ok` every agent online, `warn` at least half, `down` fewer, `empty`
/// no agent at all. A division takes the worst state found below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    Empty,
    Ok,
    Warn,
    Down,
}

impl NodeState {
    /// The state of a group of agents hanging on the same division.
    pub fn of_share(online: usize, total: usize) -> NodeState {
        if total == 0 {
            NodeState::Empty
        } else if online == total {
            NodeState::Ok
        } else if online * 2 >= total {
            NodeState::Warn
        } else {
            NodeState::Down
        }
    }
}

/// Online and total agents below a node, and its worst state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    pub online: usize,
    pub total: usize,
    pub state: NodeState,
}

impl Default for Tally {
    fn default() -> Self {
        Tally {
            online: 0,
            total: 0,
            state: NodeState::Empty,
        }
    }
}

impl Tally {
    fn add(&mut self, other: &Tally) {
        self.online += other.online;
        self.total += other.total;
        self.state = self.state.max(other.state);
    }
}

/// A division as the console names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DivisionRef {
    pub code: String,
    pub name: String,
    pub level: u8,
}

/// `GET /api/v1/overview`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Overview {
    /// The division summarised (the caller's scope unless asked otherwise).
    pub division: DivisionRef,
    /// The caller's scope.
    pub scope: DivisionRef,
    /// From the region down to `division`.
    pub path: Vec<DivisionRef>,
    pub agents: Tally,
    /// Agents by the level of the division they hang on (1 region … 5 village).
    pub by_level: Vec<LevelTally>,
    /// The children of `division` (the 14 cities for the region).
    pub children: Vec<ChildTally>,
    /// `null` when the caller may not view work orders.
    pub work_orders: Option<OrderSummary>,
    /// What the caller's roles grant (`view_assets`, `act_on_work_orders`, …), so that the
    /// console can leave out the actions the API would refuse. The API still decides.
    #[serde(default)]
    pub permissions: Vec<String>,
    /// This month's work-order KPIs of the subtree (SLA compliance, escalations …); `null`
    /// when the caller may not view work orders or nothing keeps them.
    pub kpi: Option<MonthKpi>,
    /// Baseline scores of the hosts below, and the checks failing on most of them.
    pub posture: PostureSummary,
    pub generated_at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MonthKpi {
    /// `YYYY-MM`, China time.
    pub month: String,
    #[serde(flatten)]
    pub summary: bagui_ops::kpi::KpiSummary,
}

/// Score buckets of the posture distribution: `[from, to]`, inclusive.
const SCORE_BUCKETS: [(u32, u32); 5] = [(0, 59), (60, 69), (70, 79), (80, 89), (90, 100)];
/// How many failing checks the overview lists.
const TOP_FAILING: usize = 5;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PostureSummary {
    /// Hosts that sent a baseline run.
    pub hosts: usize,
    /// Mean of their scores; `null` without hosts.
    pub mean: Option<f64>,
    pub buckets: Vec<ScoreBucket>,
    /// Checks failing on the most hosts, the most first.
    pub top_failing: Vec<FailingCheck>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScoreBucket {
    pub from: u32,
    pub to: u32,
    pub hosts: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FailingCheck {
    pub id: String,
    pub title: String,
    pub severity: String,
    pub hosts: usize,
}

fn posture_of(admin: &Admin, agents: &[Presence]) -> Result<PostureSummary, AdminError> {
    let records = admin.postures_of(agents.iter().map(|agent| agent.id.as_str()))?;
    let mut buckets: Vec<ScoreBucket> = SCORE_BUCKETS
        .iter()
        .map(|(from, to)| ScoreBucket {
            from: *from,
            to: *to,
            hosts: 0,
        })
        .collect();
    let mut failing: HashMap<String, FailingCheck> = HashMap::new();
    let mut sum = 0u64;
    for (_, record) in &records {
        let score = record.report.score.min(100);
        sum += u64::from(score);
        if let Some(bucket) = buckets
            .iter_mut()
            .find(|bucket| (bucket.from..=bucket.to).contains(&score))
        {
            bucket.hosts += 1;
        }
        let mut seen = HashSet::new();
        for result in &record.report.results {
            if result.result != bagui_protocol::assets::CheckVerdict::Fail
                || !seen.insert(result.id.as_str())
            {
                continue;
            }
            failing
                .entry(result.id.clone())
                .or_insert_with(|| FailingCheck {
                    id: result.id.clone(),
                    title: result.title.clone(),
                    severity: result.severity.clone(),
                    hosts: 0,
                })
                .hosts += 1;
        }
    }
    let mut top_failing: Vec<FailingCheck> = failing.into_values().collect();
    top_failing.sort_by(|a, b| {
        b.hosts
            .cmp(&a.hosts)
            .then_with(|| {
                crate::inventory::severity_rank(&b.severity)
                    .cmp(&crate::inventory::severity_rank(&a.severity))
            })
            .then_with(|| a.id.cmp(&b.id))
    });
    top_failing.truncate(TOP_FAILING);
    Ok(PostureSummary {
        hosts: records.len(),
        mean: (!records.is_empty()).then(|| sum as f64 / records.len() as f64),
        buckets,
        top_failing,
    })
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LevelTally {
    pub level: u8,
    pub online: usize,
    pub offline: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChildTally {
    #[serde(flatten)]
    pub division: DivisionRef,
    #[serde(flatten)]
    pub tally: Tally,
}

/// Open work orders of the division subtree.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct OrderSummary {
    pub open: usize,
    pub by_severity: BTreeMap<String, usize>,
    pub by_state: BTreeMap<String, usize>,
    /// Open orders with at least one escalation (督办).
    pub escalated: usize,
}

/// `GET /api/v1/network`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NetworkLevel {
    pub division: DivisionRef,
    /// The caller's scope: the breadcrumb above it is shown, not followed.
    pub scope: DivisionRef,
    pub path: Vec<DivisionRef>,
    pub summary: Tally,
    /// Child divisions with their tallies and positions on a `WIDTH`×`HEIGHT` canvas.
    pub children: Vec<NetworkNode>,
    /// Agents attached at `division` itself (for a village: all of its agents).
    pub agents: Vec<NetworkAgent>,
    pub width: u32,
    pub height: u32,
    /// The lists shown beside the network view, for the whole subtree of `division`.
    pub board: Board,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NetworkNode {
    #[serde(flatten)]
    pub division: DivisionRef,
    #[serde(flatten)]
    pub tally: Tally,
    /// The worst link below the node: its uplink is drawn in this colour.
    pub link: LinkQuality,
    pub x: u32,
    pub y: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NetworkAgent {
    pub id: String,
    pub hostname: String,
    pub role: String,
    pub online: bool,
    pub state: NodeState,
    pub last_seen: Option<String>,
    pub rtt_ms: Option<f64>,
    /// Share of the QUIC packets of its connection declared lost, in percent.
    pub loss_percent: Option<f64>,
    pub link_state: NodeState,
    pub x: u32,
    pub y: u32,
}

/// RTT above this (or loss above [`LOSS_WARN_PERCENT`]) makes a link `warn`.
pub const RTT_WARN_MS: f64 = 100.0;
/// RTT above this (or loss above [`LOSS_DOWN_PERCENT`]) makes a link `down`.
pub const RTT_DOWN_MS: f64 = 300.0;
pub const LOSS_WARN_PERCENT: f64 = 1.0;
pub const LOSS_DOWN_PERCENT: f64 = 5.0;

/// The quality of a link, or the worst of the links below a node: the highest RTT, the highest
/// loss and the worst state found. An agent offline has lost its link (`down`); one online
/// that has not measured anything yet is `empty`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LinkQuality {
    pub rtt_ms: Option<f64>,
    pub loss_percent: Option<f64>,
    pub state: NodeState,
}

impl Default for LinkQuality {
    fn default() -> Self {
        LinkQuality {
            rtt_ms: None,
            loss_percent: None,
            state: NodeState::Empty,
        }
    }
}

fn max_option(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

impl LinkQuality {
    /// One agent's link, from its last heartbeat's QUIC statistics.
    pub fn of_agent(agent: &Presence) -> LinkQuality {
        let loss_percent = (agent.sent_packets > 0)
            .then(|| agent.lost_packets as f64 * 100.0 / agent.sent_packets as f64);
        let rtt_ms = agent.rtt_ms;
        let state = if !agent.online {
            NodeState::Down
        } else if rtt_ms.is_none() && loss_percent.is_none() {
            NodeState::Empty
        } else {
            let rtt = rtt_ms.unwrap_or(0.0);
            let loss = loss_percent.unwrap_or(0.0);
            if rtt >= RTT_DOWN_MS || loss >= LOSS_DOWN_PERCENT {
                NodeState::Down
            } else if rtt >= RTT_WARN_MS || loss >= LOSS_WARN_PERCENT {
                NodeState::Warn
            } else {
                NodeState::Ok
            }
        };
        LinkQuality {
            rtt_ms,
            loss_percent,
            state,
        }
    }

    fn add(&mut self, other: &LinkQuality) {
        self.rtt_ms = max_option(self.rtt_ms, other.rtt_ms);
        self.loss_percent = max_option(self.loss_percent, other.loss_percent);
        self.state = self.state.max(other.state);
    }
}

/// How many rows each list of the [`Board`] holds at most.
const BOARD_ROWS: usize = 10;
/// How many open alarms the [`Board`] lists at most.
const BOARD_ALARMS: usize = 20;

/// The lists beside the network view (网络态势): each computed here so that the browser
/// never loads the fleet to rank it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Board {
    /// The current month in China time, `YYYY-MM`.
    pub month: String,
    /// Agents offline, the longest first.
    pub longest_offline: Vec<UnitRow>,
    /// Agents online with a measured link, the worst first (state, then loss, then RTT).
    pub worst_links: Vec<UnitRow>,
    /// Agents joined this month (the count, and the latest).
    pub joined: MonthUnits,
    /// Agents revoked this month (the count, and the latest).
    pub withdrawn: MonthUnits,
    /// Open incidents, the newest first, with how long each has lasted.
    pub alarms: Vec<AlarmRow>,
    /// Open incidents in the subtree (the list holds at most [`BOARD_ALARMS`]).
    pub alarms_open: usize,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MonthUnits {
    pub count: usize,
    pub units: Vec<UnitRow>,
}

/// An agent in a list: its unit (the division it hangs on) and the 市/县/乡 path to it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UnitRow {
    pub id: String,
    pub hostname: String,
    pub division: String,
    /// The names from the city down to the agent's division, `/`-separated.
    pub path: String,
    pub online: bool,
    /// Offline since, joined at or revoked at, depending on the list (RFC 3339).
    pub since: Option<String>,
    pub duration_ms: Option<u64>,
    pub link: LinkQuality,
}

/// An open incident.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AlarmRow {
    pub id: u64,
    pub title: String,
    pub severity: String,
    pub kind: String,
    pub division: String,
    /// The names from the city down to the incident's division, `/`-separated.
    pub path: String,
    /// The agent's hostname when the incident is about one.
    pub hostname: Option<String>,
    pub opened: String,
    pub duration_ms: u64,
    pub firing: bool,
}

const WIDTH: u32 = 1000;
const HEIGHT: u32 = 600;

/// Places `count` nodes on a grid filling the canvas, row by row in the order given, so that
/// the browser draws without running any layout of its own.
fn grid_positions(count: usize) -> Vec<(u32, u32)> {
    if count == 0 {
        return Vec::new();
    }
    // Columns so that cells are about as wide as tall on a 5:3 canvas.
    let columns = ((count as f64 * 5.0 / 3.0).sqrt().ceil() as usize).clamp(1, count);
    let rows = count.div_ceil(columns);
    let cell_width = WIDTH as usize / columns;
    let cell_height = HEIGHT as usize / rows;
    (0..count)
        .map(|index| {
            let (row, column) = (index / columns, index % columns);
            (
                (column * cell_width + cell_width / 2) as u32,
                (row * cell_height + cell_height / 2) as u32,
            )
        })
        .collect()
}

fn division_ref(admin: &Admin, code: &str) -> Result<DivisionRef, AdminError> {
    let division = admin
        .divisions()
        .get(code)
        .ok_or_else(|| AdminError::BadRequest(format!("unknown division {code}")))?;
    Ok(DivisionRef {
        code: division.code.clone(),
        name: division.name.clone(),
        level: division.level,
    })
}

fn path_of(admin: &Admin, code: &str) -> Vec<DivisionRef> {
    let mut path: Vec<DivisionRef> = admin
        .divisions()
        .ancestors(code)
        .map(|division| DivisionRef {
            code: division.code.clone(),
            name: division.name.clone(),
            level: division.level,
        })
        .collect();
    path.reverse();
    path
}

/// Tallies of the agents below `code`: per child of `code`, for the agents attached at
/// `code` itself, and in total. The state of a group of agents on one division comes from
/// its online share; every division above takes the worst of its groups.
struct Rollup {
    children: HashMap<String, Tally>,
    /// The worst link below each child.
    links: HashMap<String, LinkQuality>,
    own: Tally,
    total: Tally,
}

fn rollup(admin: &Admin, code: &str, agents: &[Presence]) -> Rollup {
    let mut groups: HashMap<&str, (usize, usize, LinkQuality)> = HashMap::new();
    for agent in agents {
        let entry = groups.entry(agent.division.as_str()).or_default();
        entry.1 += 1;
        if agent.online {
            entry.0 += 1;
        }
        entry.2.add(&LinkQuality::of_agent(agent));
    }
    let mut rollup = Rollup {
        children: HashMap::new(),
        links: HashMap::new(),
        own: Tally::default(),
        total: Tally::default(),
    };
    for (division, (online, total, link)) in groups {
        let tally = Tally {
            online,
            total,
            state: NodeState::of_share(online, total),
        };
        rollup.total.add(&tally);
        if division == code {
            rollup.own.add(&tally);
            continue;
        }
        let child = admin
            .divisions()
            .ancestors(division)
            .find(|node| node.parent.as_deref() == Some(code));
        if let Some(child) = child {
            rollup
                .children
                .entry(child.code.clone())
                .or_default()
                .add(&tally);
            rollup
                .links
                .entry(child.code.clone())
                .or_default()
                .add(&link);
        }
    }
    rollup
}

fn scope_division(division: Option<String>, admin: &Admin) -> String {
    division.unwrap_or_else(|| admin.divisions().root().code.clone())
}

fn overview_of(
    admin: &Admin,
    code: &str,
    scope: &str,
    with_orders: bool,
    permissions: Vec<String>,
) -> Result<Overview, AdminError> {
    let division = division_ref(admin, code)?;
    let agents = admin.presence(Some(code))?;
    let rollup = rollup(admin, code, &agents);
    let mut by_level: Vec<LevelTally> = (1..=5)
        .map(|level| LevelTally {
            level,
            online: 0,
            offline: 0,
        })
        .collect();
    for agent in &agents {
        let level = admin
            .divisions()
            .get(&agent.division)
            .map_or(5, |division| division.level);
        let entry = &mut by_level[usize::from(level.clamp(1, 5) - 1)];
        if agent.online {
            entry.online += 1;
        } else {
            entry.offline += 1;
        }
    }
    let children = admin
        .divisions()
        .children(code)
        .iter()
        .map(|child| {
            Ok(ChildTally {
                division: division_ref(admin, child)?,
                tally: rollup.children.get(child).copied().unwrap_or_default(),
            })
        })
        .collect::<Result<Vec<_>, AdminError>>()?;
    let work_orders = if with_orders {
        let rows = admin.work_orders(&OrderFilter {
            division: Some(code.to_owned()),
            ..OrderFilter::default()
        })?;
        let mut summary = OrderSummary {
            open: rows.len(),
            ..OrderSummary::default()
        };
        for row in &rows {
            let severity = serde_json::to_value(row.severity)
                .ok()
                .and_then(|value| value.as_str().map(str::to_owned))
                .unwrap_or_default();
            *summary.by_severity.entry(severity).or_default() += 1;
            *summary.by_state.entry(row.state.clone()).or_default() += 1;
            if row.escalation_level > 0 {
                summary.escalated += 1;
            }
        }
        Some(summary)
    } else {
        None
    };
    let kpi = if with_orders {
        let month = month_cst(now_ms());
        // No dispatcher (the CLI's local mode) keeps no transitions: no KPIs to show.
        admin.kpi(code, &month).ok().map(|view| MonthKpi {
            month,
            summary: view.total.kpi,
        })
    } else {
        None
    };
    let posture = posture_of(admin, &agents)?;
    Ok(Overview {
        scope: division_ref(admin, scope)?,
        path: path_of(admin, code),
        division,
        agents: rollup.total,
        by_level,
        children,
        work_orders,
        permissions,
        kpi,
        posture,
        generated_at: crate::clock::format_rfc3339(now_ms()),
    })
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}

fn network_of(admin: &Admin, code: &str, scope: &str) -> Result<NetworkLevel, AdminError> {
    let division = division_ref(admin, code)?;
    let agents = admin.presence(Some(code))?;
    let rollup = rollup(admin, code, &agents);
    let child_codes = admin.divisions().children(code);
    let positions = grid_positions(child_codes.len());
    let children = child_codes
        .iter()
        .zip(positions)
        .map(|(child, (x, y))| {
            Ok(NetworkNode {
                division: division_ref(admin, child)?,
                tally: rollup.children.get(child).copied().unwrap_or_default(),
                link: rollup.links.get(child).copied().unwrap_or_default(),
                x,
                y,
            })
        })
        .collect::<Result<Vec<_>, AdminError>>()?;
    let agents_below = agents;
    let mut own: Vec<&Presence> = agents_below
        .iter()
        .filter(|agent| agent.division == code)
        .collect();
    own.sort_by(|a, b| (&a.hostname, &a.id).cmp(&(&b.hostname, &b.id)));
    let positions = grid_positions(own.len());
    let agents = own
        .into_iter()
        .zip(positions)
        .map(|(agent, (x, y))| {
            let link = LinkQuality::of_agent(agent);
            NetworkAgent {
                id: agent.id.clone(),
                hostname: agent.hostname.clone(),
                role: serde_json::to_value(agent.role)
                    .ok()
                    .and_then(|value| value.as_str().map(str::to_owned))
                    .unwrap_or_default(),
                online: agent.online,
                state: if agent.online {
                    NodeState::Ok
                } else {
                    NodeState::Down
                },
                last_seen: (agent.last_seen_ms > 0)
                    .then(|| crate::clock::format_rfc3339(agent.last_seen_ms)),
                rtt_ms: agent.rtt_ms,
                loss_percent: link.loss_percent,
                link_state: link.state,
                x,
                y,
            }
        })
        .collect();
    let board = board_of(admin, code, &agents_below, now_ms());
    Ok(NetworkLevel {
        scope: division_ref(admin, scope)?,
        path: path_of(admin, code),
        division,
        summary: rollup.total,
        children,
        agents,
        width: WIDTH,
        height: HEIGHT,
        board,
    })
}

/// `YYYY-MM` of `at` in China time.
fn month_cst(at_ms: u64) -> String {
    let text = crate::clock::format_rfc3339(at_ms + bagui_ops::model::CST_OFFSET);
    text.get(..7).unwrap_or_default().to_owned()
}

/// The names from the city down to `code` (the region's name is the same on every row).
fn path_below_region(admin: &Admin, code: &str) -> String {
    let mut names: Vec<&str> = admin
        .divisions()
        .ancestors(code)
        .filter(|division| division.level >= 2)
        .map(|division| division.name.as_str())
        .collect();
    names.reverse();
    names.join("/")
}

fn board_of(admin: &Admin, code: &str, agents: &[Presence], now: u64) -> Board {
    let month = month_cst(now);
    let month_start = bagui_ops::services::parse_month_cst(&month)
        .map(|period| period.from())
        .unwrap_or(0);
    let unit = |agent: &Presence, since_ms: Option<u64>| UnitRow {
        id: agent.id.clone(),
        hostname: agent.hostname.clone(),
        division: agent.division.clone(),
        path: path_below_region(admin, &agent.division),
        online: agent.online,
        since: since_ms
            .filter(|at| *at > 0)
            .map(crate::clock::format_rfc3339),
        duration_ms: since_ms
            .filter(|at| *at > 0)
            .map(|at| now.saturating_sub(at)),
        link: LinkQuality::of_agent(agent),
    };
    // Never seen since joining: offline since it joined.
    let offline_since = |agent: &Presence| {
        if agent.last_seen_ms > 0 {
            agent.last_seen_ms
        } else {
            agent.joined_ms
        }
    };
    let mut offline: Vec<&Presence> = agents
        .iter()
        .filter(|agent| !agent.online && agent.revoked_ms.is_none())
        .collect();
    offline.sort_by(|a, b| (offline_since(a), &a.id).cmp(&(offline_since(b), &b.id)));
    let longest_offline = offline
        .into_iter()
        .take(BOARD_ROWS)
        .map(|agent| unit(agent, Some(offline_since(agent))))
        .collect();

    let mut measured: Vec<(&Presence, LinkQuality)> = agents
        .iter()
        .filter(|agent| agent.online)
        .map(|agent| (agent, LinkQuality::of_agent(agent)))
        .filter(|(_, link)| link.state != NodeState::Empty)
        .collect();
    measured.sort_by(|(a, a_link), (b, b_link)| {
        b_link
            .state
            .cmp(&a_link.state)
            .then_with(|| {
                b_link
                    .loss_percent
                    .unwrap_or(0.0)
                    .total_cmp(&a_link.loss_percent.unwrap_or(0.0))
            })
            .then_with(|| {
                b_link
                    .rtt_ms
                    .unwrap_or(0.0)
                    .total_cmp(&a_link.rtt_ms.unwrap_or(0.0))
            })
            .then_with(|| a.id.cmp(&b.id))
    });
    let worst_links = measured
        .into_iter()
        .take(BOARD_ROWS)
        .map(|(agent, _)| unit(agent, None))
        .collect();

    let month_units = |at: &dyn Fn(&Presence) -> Option<u64>| {
        let mut rows: Vec<(&Presence, u64)> = agents
            .iter()
            .filter_map(|agent| at(agent).map(|ms| (agent, ms)))
            .filter(|(_, ms)| *ms >= month_start)
            .collect();
        rows.sort_by(|(a, a_ms), (b, b_ms)| b_ms.cmp(a_ms).then_with(|| a.id.cmp(&b.id)));
        MonthUnits {
            count: rows.len(),
            units: rows
                .into_iter()
                .take(BOARD_ROWS)
                .map(|(agent, ms)| unit(agent, Some(ms)))
                .collect(),
        }
    };
    let joined = month_units(&|agent| Some(agent.joined_ms));
    let withdrawn = month_units(&|agent| agent.revoked_ms);

    let hostnames: HashMap<&str, &str> = agents
        .iter()
        .map(|agent| (agent.id.as_str(), agent.hostname.as_str()))
        .collect();
    // No incident engine (the CLI's local mode): no alarms to list.
    let mut incidents: Vec<_> = admin
        .incidents()
        .unwrap_or_default()
        .into_iter()
        .filter(|incident| {
            incident
                .division
                .as_deref()
                .is_some_and(|division| admin.divisions().is_within(division, code))
        })
        .collect();
    incidents.sort_by(|a, b| b.opened_at.cmp(&a.opened_at).then_with(|| b.id.cmp(&a.id)));
    let alarms_open = incidents.len();
    let name_of = |value: serde_json::Result<serde_json::Value>| {
        value
            .ok()
            .and_then(|value| value.as_str().map(str::to_owned))
            .unwrap_or_default()
    };
    let alarms = incidents
        .into_iter()
        .take(BOARD_ALARMS)
        .map(|incident| {
            let division = incident.division.clone().unwrap_or_default();
            AlarmRow {
                id: incident.id,
                severity: name_of(serde_json::to_value(incident.severity)),
                kind: name_of(serde_json::to_value(incident.kind)),
                path: path_below_region(admin, &division),
                hostname: match &incident.subject {
                    bagui_ops::incidents::Subject::Agent(id) => {
                        hostnames.get(id.as_str()).map(|name| (*name).to_owned())
                    }
                    bagui_ops::incidents::Subject::Division(_) => None,
                },
                opened: crate::clock::format_rfc3339(incident.opened_at),
                duration_ms: now.saturating_sub(incident.opened_at),
                firing: incident.firing,
                title: incident.title,
                division,
            }
        })
        .collect();
    Board {
        month,
        longest_offline,
        worst_links,
        joined,
        withdrawn,
        alarms,
        alarms_open,
    }
}

// ---------------------------------------------------------------------------------------------
// Handlers
// ---------------------------------------------------------------------------------------------

#[derive(Deserialize)]
struct DivisionQuery {
    division: Option<String>,
}

async fn overview(
    State(state): State<ApiState>,
    Operator(_, caller): Operator,
    Query(query): Query<DivisionQuery>,
) -> Result<Json<Overview>, ApiError> {
    let with_orders = caller.may(Permission::ViewWorkOrders);
    let permissions = Permission::ALL
        .into_iter()
        .filter(|permission| caller.may(*permission))
        .map(|permission| permission.name().to_owned())
        .collect();
    let scope = caller.scope().map(str::to_owned);
    run(state, move |admin| {
        let code = scope_division(query.division, admin);
        let scope = scope_division(scope, admin);
        overview_of(admin, &code, &scope, with_orders, permissions)
    })
    .await
}

async fn network(
    State(state): State<ApiState>,
    Operator(_, caller): Operator,
    Query(query): Query<DivisionQuery>,
) -> Result<Json<NetworkLevel>, ApiError> {
    let scope = caller.scope().map(str::to_owned);
    run(state, move |admin| {
        let code = scope_division(query.division, admin);
        let scope = scope_division(scope, admin);
        network_of(admin, &code, &scope)
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// Live events
// ---------------------------------------------------------------------------------------------

/// One change the console shows as it happens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    Agent {
        id: String,
        hostname: String,
        division: String,
        division_path: String,
        online: bool,
        at: String,
    },
    WorkOrder {
        id: String,
        /// `null` for an order seen for the first time.
        previous: Option<String>,
        state: String,
        severity: String,
        division: String,
        division_path: String,
        title: String,
        at: String,
    },
}

impl Event {
    fn division(&self) -> &str {
        match self {
            Event::Agent { division, .. } | Event::WorkOrder { division, .. } => division,
        }
    }
}

/// What the hub saw last time.
#[derive(Default)]
struct Seen {
    /// Agents with an open session.
    online: HashSet<String>,
    /// Where each agent is: id → (division, hostname). Places rarely change, so they are
    /// re-read from the store only when an unknown agent connects or they are
    /// [`PLACES_REFRESH`] old; the per-second comparison is of the in-memory session set.
    places: HashMap<String, (String, String)>,
    places_read: Option<Instant>,
    orders: HashMap<String, String>,
}

/// How long the hub trusts the places it read.
const PLACES_REFRESH: Duration = Duration::from_secs(60);

/// Compares the sessions and the open orders with `seen`, returns the changes and remembers
/// the new picture. The first call only fills `seen`.
fn changes(admin: &Admin, seen: &mut Option<Seen>) -> Result<Vec<Event>, AdminError> {
    let online = admin.online_ids();
    let mut previous = seen.take();
    let (mut places, mut places_read) = match previous.as_mut() {
        Some(previous) => (std::mem::take(&mut previous.places), previous.places_read),
        None => (HashMap::new(), None),
    };
    if places_read.is_none_or(|read| read.elapsed() > PLACES_REFRESH)
        || online.iter().any(|id| !places.contains_key(id))
    {
        places = admin
            .presence(None)?
            .into_iter()
            .map(|agent| (agent.id, (agent.division, agent.hostname)))
            .collect();
        places_read = Some(Instant::now());
    }
    let orders = admin.work_orders(&OrderFilter::default())?;
    let at = crate::clock::format_rfc3339(now_ms());
    let mut events = Vec::new();
    if let Some(previous) = previous.as_ref() {
        let came = online.difference(&previous.online).map(|id| (id, true));
        let went = previous.online.difference(&online).map(|id| (id, false));
        for (id, now_online) in came.chain(went) {
            let Some((division, hostname)) = places.get(id) else {
                continue;
            };
            events.push(Event::Agent {
                id: id.clone(),
                hostname: hostname.clone(),
                division: division.clone(),
                division_path: admin.divisions().path_names(division),
                online: now_online,
                at: at.clone(),
            });
        }
    }
    let mut next = Seen {
        online,
        places,
        places_read,
        orders: HashMap::new(),
    };
    let severity_name = |severity| {
        serde_json::to_value(severity)
            .ok()
            .and_then(|value| value.as_str().map(str::to_owned))
            .unwrap_or_default()
    };
    for row in &orders {
        next.orders.insert(row.id.clone(), row.state.clone());
        let before = previous
            .as_ref()
            .map(|previous| previous.orders.get(&row.id).cloned());
        if let Some(previous) = before
            && previous.as_deref() != Some(row.state.as_str())
        {
            events.push(Event::WorkOrder {
                id: row.id.clone(),
                previous,
                state: row.state.clone(),
                severity: severity_name(row.severity),
                division: row.division.clone(),
                division_path: row.division_path.clone(),
                title: row.title.clone(),
                at: at.clone(),
            });
        }
    }
    // Orders no longer open: closed, resolved automatically …; their final state is read once.
    if let Some(previous) = previous.as_ref() {
        for (id, state) in &previous.orders {
            if next.orders.contains_key(id) {
                continue;
            }
            let Ok(detail) = admin.work_order(id) else {
                continue;
            };
            events.push(Event::WorkOrder {
                id: id.clone(),
                previous: Some(state.clone()),
                state: detail.row.state.clone(),
                severity: severity_name(detail.row.severity),
                division: detail.row.division.clone(),
                division_path: detail.row.division_path.clone(),
                title: detail.row.title.clone(),
                at: at.clone(),
            });
        }
    }
    *seen = Some(next);
    Ok(events)
}

/// One poller per control plane, shared by every open stream, running only while someone
/// listens. Keyed by the `Admin` it reads, since tests run several control planes in one
/// process.
type Hubs = Mutex<Vec<(Weak<Admin>, broadcast::Sender<Arc<Event>>)>>;

static HUBS: Hubs = Mutex::new(Vec::new());

fn subscribe(admin: &Arc<Admin>) -> broadcast::Receiver<Arc<Event>> {
    let mut hubs = HUBS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    hubs.retain(|(owner, _)| owner.strong_count() > 0);
    if let Some((_, sender)) = hubs.iter().find(|(owner, _)| {
        owner
            .upgrade()
            .is_some_and(|owner| Arc::ptr_eq(&owner, admin))
    }) {
        return sender.subscribe();
    }
    let (sender, receiver) = broadcast::channel(1024);
    hubs.push((Arc::downgrade(admin), sender.clone()));
    let admin = admin.clone();
    tokio::spawn(async move {
        let mut seen: Option<Seen> = None;
        let mut tick = tokio::time::interval(EVENT_POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            {
                // Decided under the lock, so a subscriber never joins a hub that is ending.
                let mut hubs = HUBS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                let stopping = admin
                    .link_events
                    .as_ref()
                    .is_some_and(|events| events.is_muted());
                if sender.receiver_count() == 0 || stopping {
                    hubs.retain(|(_, other)| !other.same_channel(&sender));
                    return;
                }
            }
            let reader = admin.clone();
            let mut previous = seen.take();
            let outcome = tokio::task::spawn_blocking(move || {
                let result = changes(&reader, &mut previous);
                (result, previous)
            })
            .await;
            match outcome {
                Ok((Ok(events), now_seen)) => {
                    seen = now_seen;
                    for event in events {
                        let _ = sender.send(Arc::new(event));
                    }
                }
                Ok((Err(error), now_seen)) => {
                    seen = now_seen;
                    tracing::warn!(%error, "console events: reading the fleet");
                }
                Err(error) => tracing::warn!(%error, "console events: poller task"),
            }
        }
    });
    receiver
}

/// A response body fed by a channel: each message is one chunk of the stream.
struct ChannelBody(mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        self.0
            .poll_recv(context)
            .map(|chunk| chunk.map(|bytes| Ok(hyper::body::Frame::data(bytes))))
    }
}

async fn events(
    State(state): State<ApiState>,
    Operator(_, caller): Operator,
    Query(query): Query<DivisionQuery>,
) -> Result<Response, ApiError> {
    let scope = scope_division(query.division, &state.admin);
    let with_orders = caller.may(Permission::ViewWorkOrders);
    let mut receiver = subscribe(&state.admin);
    let (chunks, body) = mpsc::channel::<Bytes>(64);
    let admin = state.admin.clone();
    tokio::spawn(async move {
        // A first line at once, so the browser knows the stream is open.
        if chunks
            .send(Bytes::from_static(b": bagui events\nretry: 2000\n\n"))
            .await
            .is_err()
        {
            return;
        }
        let mut keep_alive = tokio::time::interval(KEEP_ALIVE);
        keep_alive.tick().await;
        let mut shutdown_check = tokio::time::interval(SHUTDOWN_CHECK);
        loop {
            let chunk = tokio::select! {
                received = receiver.recv() => match received {
                    Ok(event) => {
                        if !admin.divisions().is_within(event.division(), &scope)
                            || (matches!(*event, Event::WorkOrder { .. }) && !with_orders)
                        {
                            continue;
                        }
                        let (name, data) = match &*event {
                            Event::Agent { .. } => ("agent", serde_json::to_string(&*event)),
                            Event::WorkOrder { .. } => ("work_order", serde_json::to_string(&*event)),
                        };
                        let Ok(data) = data else { continue };
                        Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
                    }
                    // Too slow a reader: say so; the console reloads what it shows.
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        Bytes::from(format!("event: lagged\ndata: {missed}\n\n"))
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = keep_alive.tick() => Bytes::from_static(b": keep-alive\n\n"),
                // The control plane is stopping: end the stream (the console reconnects to
                // whichever control plane answers next) instead of holding the shutdown.
                _ = shutdown_check.tick() => {
                    if admin.link_events.as_ref().is_some_and(|events| events.is_muted()) {
                        return;
                    }
                    continue;
                }
                _ = chunks.closed() => return,
            };
            if chunks.send(chunk).await.is_err() {
                return;
            }
        }
    });
    let mut response = Response::new(Body::new(ChannelBody(body)));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_share_decides_the_colour_and_the_worst_wins() {
        assert_eq!(NodeState::of_share(0, 0), NodeState::Empty);
        assert_eq!(NodeState::of_share(3, 3), NodeState::Ok);
        assert_eq!(NodeState::of_share(2, 4), NodeState::Warn);
        assert_eq!(NodeState::of_share(1, 4), NodeState::Down);
        assert_eq!(NodeState::of_share(0, 1), NodeState::Down);
        let mut parent = Tally::default();
        for child in [
            Tally {
                online: 10,
                total: 10,
                state: NodeState::Ok,
            },
            Tally {
                online: 0,
                total: 1,
                state: NodeState::Down,
            },
        ] {
            parent.add(&child);
        }
        assert_eq!(
            parent,
            Tally {
                online: 10,
                total: 11,
                state: NodeState::Down
            }
        );
    }

    #[test]
    fn a_link_is_coloured_by_its_rtt_and_loss_and_a_node_by_its_worst_link() {
        let agent = |online, rtt_ms, sent_packets, lost_packets| Presence {
            id: "a".into(),
            hostname: "h".into(),
            division: "45".into(),
            role: bagui_protocol::messages::Role::Terminal,
            online,
            last_seen_ms: 0,
            rtt_ms,
            sent_packets,
            lost_packets,
            joined_ms: 0,
            revoked_ms: None,
        };
        let state = |presence: &Presence| LinkQuality::of_agent(presence).state;
        assert_eq!(state(&agent(true, None, 0, 0)), NodeState::Empty);
        assert_eq!(state(&agent(true, Some(20.0), 1000, 0)), NodeState::Ok);
        assert_eq!(state(&agent(true, Some(150.0), 1000, 0)), NodeState::Warn);
        assert_eq!(state(&agent(true, Some(20.0), 1000, 20)), NodeState::Warn);
        assert_eq!(state(&agent(true, Some(20.0), 1000, 80)), NodeState::Down);
        assert_eq!(state(&agent(true, Some(400.0), 0, 0)), NodeState::Down);
        assert_eq!(state(&agent(false, Some(20.0), 1000, 0)), NodeState::Down);
        let mut worst = LinkQuality::default();
        worst.add(&LinkQuality::of_agent(&agent(true, Some(150.0), 1000, 0)));
        worst.add(&LinkQuality::of_agent(&agent(true, Some(20.0), 1000, 20)));
        assert_eq!(worst.state, NodeState::Warn);
        assert_eq!(worst.rtt_ms, Some(150.0));
        assert_eq!(worst.loss_percent, Some(2.0));
        // 2026-11-30 16:00 UTC is already December in China.
        assert_eq!(month_cst(1_796_054_400_000), "2026-12");
        assert_eq!(month_cst(1_796_054_399_999), "2026-11");
    }

    #[test]
    fn grid_positions_stay_on_the_canvas_and_apart() {
        for count in [1, 2, 14, 111, 300] {
            let positions = grid_positions(count);
            assert_eq!(positions.len(), count);
            let distinct: std::collections::BTreeSet<_> = positions.iter().collect();
            assert_eq!(distinct.len(), count, "{count}");
            assert!(
                positions
                    .iter()
                    .all(|(x, y)| *x > 0 && *x < WIDTH && *y > 0 && *y < HEIGHT)
            );
        }
    }

    #[test]
    fn every_asset_is_served_with_its_type_and_the_security_headers() {
        for (path, content_type, bytes) in ASSETS {
            assert!(!bytes.is_empty(), "{path} is empty");
            let response = serve_asset(path);
            assert_eq!(response.status(), StatusCode::OK);
            assert_eq!(response.headers()[header::CONTENT_TYPE], *content_type);
            assert_eq!(response.headers()[header::CONTENT_SECURITY_POLICY], CSP);
            assert_eq!(
                response.headers()[header::X_CONTENT_TYPE_OPTIONS],
                "nosniff"
            );
        }
        assert_eq!(serve_asset("../Cargo.toml").status(), StatusCode::NOT_FOUND);
    }

    /// Every area of the shipped map is a division of the tree, under the right parent and
    /// with its current name: the region's file holds the 14 cities, each city's file all of
    /// its counties.
    #[test]
    fn every_map_area_is_a_division_and_every_city_and_county_has_an_area() {
        let divisions = crate::divisions::Divisions::from_csv(crate::divisions::GUANGXI_CSV)
            .expect("the shipped tree parses");
        let root = divisions.root().code.clone();
        let maps: Vec<(&str, serde_json::Value)> = ASSETS
            .iter()
            .filter_map(|(path, content_type, bytes)| {
                let code = path.strip_prefix("geo/")?.strip_suffix(".geojson")?;
                assert_eq!(*content_type, GEOJSON);
                Some((code, serde_json::from_slice(bytes).expect("valid JSON")))
            })
            .collect();
        let mut expected: Vec<String> = vec![root.clone()];
        expected.extend(divisions.children(&root).iter().cloned());
        let mut shipped: Vec<String> = maps.iter().map(|(code, _)| (*code).to_owned()).collect();
        expected.sort();
        shipped.sort();
        assert_eq!(shipped, expected, "one map for the region and one per city");
        assert_eq!(divisions.children(&root).len(), 14);
        for (code, map) in &maps {
            assert_eq!(map["type"], "FeatureCollection", "{code}");
            let features = map["features"].as_array().expect("features");
            let mut areas = Vec::new();
            for feature in features {
                let properties = &feature["properties"];
                let area = properties["code"].as_str().expect("a code");
                let division = divisions
                    .get(area)
                    .unwrap_or_else(|| panic!("{code}: {area} is no division"));
                assert_eq!(division.parent.as_deref(), Some(*code), "{area}");
                assert_eq!(properties["name"], division.name.as_str(), "{area}");
                let center = properties["center"].as_array().expect("a label point");
                let (longitude, latitude) =
                    (center[0].as_f64().unwrap(), center[1].as_f64().unwrap());
                // Guangxi lies within 104–113°E, 20–27°N.
                assert!((104.0..113.0).contains(&longitude), "{area}: {longitude}");
                assert!((20.0..27.0).contains(&latitude), "{area}: {latitude}");
                let kind = feature["geometry"]["type"].as_str().unwrap();
                assert!(
                    kind == "Polygon" || kind == "MultiPolygon",
                    "{area}: {kind}"
                );
                areas.push(area.to_owned());
            }
            areas.sort();
            let mut children = divisions.children(code).to_vec();
            children.sort();
            assert_eq!(areas, children, "the areas of {code} are its children");
        }
    }

    fn keys(table: &str) -> std::collections::BTreeSet<String> {
        table
            .lines()
            .filter_map(|line| line.trim_start().strip_prefix('\''))
            .filter_map(|rest| rest.split_once("':"))
            .map(|(key, _)| key.to_owned())
            .collect()
    }

    /// Both languages have every string, and every literal key the pages use exists.
    #[test]
    fn the_two_languages_have_the_same_keys_and_every_key_used_exists() {
        let asset = |name: &str| {
            let (_, _, bytes) = ASSETS.iter().find(|(path, _, _)| *path == name).unwrap();
            std::str::from_utf8(bytes).unwrap()
        };
        let zh = keys(asset("i18n/zh.js"));
        let en = keys(asset("i18n/en.js"));
        assert!(zh.len() > 100, "{}", zh.len());
        assert_eq!(
            zh.symmetric_difference(&en).collect::<Vec<_>>(),
            Vec::<&String>::new()
        );
        for (path, _, bytes) in ASSETS.iter().filter(|(path, _, _)| path.ends_with(".js")) {
            let text = std::str::from_utf8(bytes).unwrap();
            for (at, _) in text.match_indices("t('") {
                // `t(` itself, not the end of `split(` or `get(`.
                let before = text[..at].chars().next_back();
                if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '.') {
                    continue;
                }
                let key = text[at + 3..].split('\'').next().unwrap();
                assert!(zh.contains(key), "{path} uses the missing key {key:?}");
            }
        }
    }

    /// Every file the console imports or links is embedded, and no file has an inline script
    /// or handler, or loads anything from another origin.
    #[test]
    fn the_console_is_self_contained() {
        let names: Vec<&str> = ASSETS.iter().map(|(path, _, _)| *path).collect();
        for (path, _, bytes) in ASSETS {
            let text = std::str::from_utf8(bytes).unwrap();
            for marker in ["http://", "https://", "//cdn", "fonts.googleapis"] {
                let hits: Vec<&str> = text
                    .lines()
                    .filter(|line| line.contains(marker) && !line.contains("www.w3.org/2000/svg"))
                    .collect();
                assert!(hits.is_empty(), "{path} refers to another origin: {hits:?}");
            }
            if path.ends_with(".html") {
                assert!(!text.contains("<script>"), "{path}: inline script");
                assert!(!text.contains(" onclick="), "{path}: inline handler");
                assert!(!text.contains("style=\""), "{path}: inline style");
            }
            // Relative module imports: `from './x.js'` / `from '../x.js'`.
            for import in text.split("from '").skip(1) {
                let target = import.split('\'').next().unwrap();
                let base = std::path::Path::new(path).parent().unwrap();
                let joined = base.join(target);
                let mut resolved: Vec<&str> = Vec::new();
                for part in joined.to_str().unwrap().split('/') {
                    match part {
                        "." | "" => {}
                        ".." => {
                            resolved.pop();
                        }
                        other => resolved.push(other),
                    }
                }
                let resolved = resolved.join("/");
                assert!(
                    names.contains(&resolved.as_str()),
                    "{path} imports {target} ({resolved}), which is not embedded"
                );
            }
        }
    }
}
