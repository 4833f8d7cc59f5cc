//! What `bagui-agent status` shows, kept current in `STATE_DIR/status.json` while the agent runs.

use std::sync::{Arc, Mutex};

use bagui_protocol::LaneCounts;
use serde::{Deserialize, Serialize};

/// State of the link to the control plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkState {
    Connected,
    Connecting,
    #[default]
    Down,
    /// The control plane revoked this agent or no longer knows it: it needs an operator.
    Revoked,
}

/// The status file.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Status {
    pub agent_id: String,
    pub agent_version: String,
    pub server: String,
    pub division: String,
    pub division_path: String,
    pub role: String,
    pub link: LinkState,
    pub rtt_ms: Option<f64>,
    pub outbox_records: u64,
    pub outbox_bytes: u64,
    pub outbox_dropped: LaneCounts,
    /// Highest sequence number the control plane has acknowledged.
    pub last_acked_seq: u64,
    pub next_seq: u64,
    pub reports_acked: u64,
    /// Reports sent again under a new number because the control plane held another report
    /// under theirs (this agent's state went back: restored from a backup or VM snapshot).
    pub reports_renumbered: u64,
    pub tls_suite: String,
    pub kx_group: String,
    pub certificate_expires: String,
    pub connected_since: Option<String>,
    pub last_error: Option<String>,
    pub collector_errors: u64,
    pub updated_ms: u64,
    pub pid: u32,
}

/// The live status, shared by the agent's tasks.
#[derive(Debug, Clone, Default)]
pub struct StatusBoard(Arc<Mutex<Status>>, Arc<tokio::sync::Notify>);

impl StatusBoard {
    pub fn update(&self, change: impl FnOnce(&mut Status)) {
        let mut status = self.0.lock().unwrap_or_else(|poison| poison.into_inner());
        let link = status.link;
        change(&mut status);
        if status.link != link {
            // Whoever shows the status (the status file) should not wait for its next tick.
            self.1.notify_one();
        }
    }

    pub fn get(&self) -> Status {
        self.0
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .clone()
    }

    /// Resolves when the link state changes.
    pub async fn link_changed(&self) {
        self.1.notified().await;
    }
}
