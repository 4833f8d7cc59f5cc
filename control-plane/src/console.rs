//! The web console (控制台): its files, embedded in the binary, and the three endpoints that
//! exist for it — a province-wide overview, one level of the network tree, and a live event
//! stream — so that the browser never has to load 18,000 agents to draw a page.
//!
//! Routes, merged into the API's router by `crate::api::router`:
//!
//! - `GET /` and `GET /console/{*file}`: the console itself (no authentication: it is static
//!   code; everything it shows comes from the API with the user's token).
//! - `GET /api/v1/overview?division=C`: agents online/offline by level and by child division,
//!   open work orders by severity and state, escalations.
//! - `GET /api/v1/network?division=C`: the children of `C` with online/total counts and their
//!   worst state, positions on a fixed canvas, and the agents attached at `C` itself.
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
    ("favicon.svg", SVG, include_bytes!("../console/favicon.svg")),
];

const HTML: &str = "text/html; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const SVG: &str = "image/svg+xml";

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
    pub generated_at: String,
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
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NetworkNode {
    #[serde(flatten)]
    pub division: DivisionRef,
    #[serde(flatten)]
    pub tally: Tally,
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
    pub x: u32,
    pub y: u32,
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
    own: Tally,
    total: Tally,
}

fn rollup(admin: &Admin, code: &str, agents: &[Presence]) -> Rollup {
    let mut groups: HashMap<&str, (usize, usize)> = HashMap::new();
    for agent in agents {
        let entry = groups.entry(agent.division.as_str()).or_default();
        entry.1 += 1;
        if agent.online {
            entry.0 += 1;
        }
    }
    let mut rollup = Rollup {
        children: HashMap::new(),
        own: Tally::default(),
        total: Tally::default(),
    };
    for (division, (online, total)) in groups {
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
    Ok(Overview {
        scope: division_ref(admin, scope)?,
        path: path_of(admin, code),
        division,
        agents: rollup.total,
        by_level,
        children,
        work_orders,
        permissions,
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
                x,
                y,
            })
        })
        .collect::<Result<Vec<_>, AdminError>>()?;
    let mut own: Vec<&Presence> = agents
        .iter()
        .filter(|agent| agent.division == code)
        .collect();
    own.sort_by(|a, b| (&a.hostname, &a.id).cmp(&(&b.hostname, &b.id)));
    let positions = grid_positions(own.len());
    let agents = own
        .into_iter()
        .zip(positions)
        .map(|(agent, (x, y))| NetworkAgent {
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
            x,
            y,
        })
        .collect();
    Ok(NetworkLevel {
        scope: division_ref(admin, scope)?,
        path: path_of(admin, code),
        division,
        summary: rollup.total,
        children,
        agents,
        width: WIDTH,
        height: HEIGHT,
    })
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
