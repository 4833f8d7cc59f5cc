//! The Bagui agent: joins a control plane, collects, buffers durably and reports over QUIC
//! with mutual TLS. `main.rs` is a thin CLI over this library; tests and `bagui-cp demo` run
//! agents in-process through [`Agent`].
#![forbid(unsafe_code)]

pub mod assets;
pub mod config;
pub mod identity;
pub mod join;
pub mod link;
pub mod outbox;
pub mod probes;
pub mod scheduler;
pub mod security;
pub mod selfmetrics;
pub mod state;
pub mod status;
pub mod tls;
pub mod wire;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use bagui_plugins::host::{BasicMetricsCollector, HostFactsCollector};
use bagui_plugins::{Collector, HostRoot};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::config::AgentConfig;
use crate::link::{Link, LinkExit};
use crate::outbox::Outbox;
use crate::state::{StateDir, write_atomic};
use crate::status::{Status, StatusBoard};

/// What an agent needs to run.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    pub state_dir: StateDir,
    pub config: AgentConfig,
    /// Where collectors read the host (`/` except in tests).
    pub host_root: HostRoot,
}

/// A running agent.
pub struct Agent {
    outbox: Arc<Outbox>,
    status: StatusBoard,
    shutdown: watch::Sender<bool>,
    link: Option<JoinHandle<LinkExit>>,
    tasks: Vec<JoinHandle<()>>,
    state_dir: StateDir,
    self_metrics: Option<std::net::SocketAddr>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("status", &self.status.get())
            .finish_non_exhaustive()
    }
}

/// Seals the outbox's records to the control plane's SM2 key from the join (see
/// [`outbox`]'s "Sealed at rest"). Without a usable key (a state written by a control plane
/// that sent none) records stay in clear, as before, and a warning says so.
fn seal_to_control_plane(outbox: Outbox, state: &state::AgentState) -> Outbox {
    let key = bagui_protocol::digest::unhex(&state.control_plane_sm2_public_key)
        .filter(|key| !key.is_empty())
        .map(|key| bagui_protocol::sealed::Recipient::from_sec1(&key));
    match key {
        Some(Ok(recipient)) => outbox.with_encryption(recipient),
        Some(Err(error)) => {
            tracing::error!(%error, "the control plane's SM2 key in the agent state is unusable; outbox records are stored unencrypted");
            outbox
        }
        None => {
            tracing::warn!(
                "no control plane SM2 key in the agent state; outbox records are stored unencrypted"
            );
            outbox
        }
    }
}

/// Applies `[identity] key_passphrase_file` (unless the state directory already has a
/// passphrase, from the environment), encrypts keys still in plaintext, and checks that the
/// keys open: a missing or wrong passphrase fails the start with a clear error instead of
/// surfacing at the first connection as "join again".
fn protect_keys(state_dir: StateDir, config: &AgentConfig) -> Result<StateDir> {
    let state_dir = match &config.identity.key_passphrase_file {
        Some(path) if !state_dir.has_key_passphrase() => {
            state_dir.with_key_passphrase_file(path)?
        }
        _ => state_dir,
    };
    let migrated = state_dir.encrypt_plaintext_keys()?;
    if migrated > 0 {
        tracing::info!(files = migrated, "encrypted the identity keys at rest");
    }
    if state_dir.has_key_passphrase() {
        // A wrong passphrase is an error now (plaintext keys keep their old behaviour: an
        // unreadable identity asks for a re-join from the link).
        state_dir.tls_identity()?;
        state_dir.sm2_key()?;
    }
    Ok(state_dir)
}

impl Agent {
    /// Starts the link, the collectors and the status file.
    pub async fn start(mut options: AgentOptions) -> Result<Agent> {
        let state = options.state_dir.agent_state()?;
        options.state_dir = protect_keys(options.state_dir, &options.config)?;
        // The frame limit known from the join; a record that could never fit one frame is
        // refused at the door instead of blocking the queue later.
        let max_body = (state.params.max_frame_len as usize)
            .saturating_sub(4096)
            .max(4096);
        let outbox = Outbox::open_waiting(
            &options.state_dir.outbox_path(),
            options.config.outbox.max_size,
            Duration::from_secs(3),
        )
        .with_context(|| {
            format!(
                "opening the outbox in {}",
                options.state_dir.root().display()
            )
        })?
        .with_max_body(max_body);
        let outbox = Arc::new(seal_to_control_plane(outbox, &state));
        let status = StatusBoard::default();
        status.update(|s| {
            s.agent_id = state.agent_id.clone();
            s.agent_version = join::AGENT_VERSION.into();
            s.server = state.server.clone();
            s.division = state.division.clone();
            s.division_path = state.division_path.clone();
            s.role = state.role.to_string();
            s.pid = std::process::id();
        });
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (snapshot_tx, snapshot_rx) = mpsc::channel(4);
        let collectors = &options.config.collectors;
        let mut scheduled = vec![scheduler::Scheduled {
            collector: Arc::new(HostFactsCollector::new(options.host_root.clone())),
            interval: collectors.host_facts_interval,
            run_at_start: true,
        }];
        if collectors.metrics_enabled {
            scheduled.push(scheduler::Scheduled {
                collector: Arc::new(BasicMetricsCollector::new(options.host_root.clone())),
                interval: collectors.metrics_interval,
                run_at_start: false,
            });
        }
        if collectors.assets_enabled {
            scheduled.push(scheduler::Scheduled {
                collector: Arc::new(assets::AssetsCollector::new(
                    options.host_root.clone(),
                    options.state_dir.assets_baseline_path(),
                    collectors.assets_interval,
                )),
                interval: collectors.assets_interval,
                run_at_start: true,
            });
        }
        for check in bagui_plugins::checks::collectors(&options.config.checks)
            .context("in the [[checks]] of the agent config")?
        {
            let interval = check.interval();
            scheduled.push(scheduler::Scheduled {
                collector: Arc::from(check),
                interval,
                run_at_start: false,
            });
        }
        let mut posture_runner = None;
        if options.config.posture.enabled {
            let policy = match &options.config.posture.policy {
                Some(path) => {
                    let text = std::fs::read_to_string(path).with_context(|| {
                        format!("reading the posture policy {}", path.display())
                    })?;
                    bagui_plugins::posture::load_policy(&text)
                        .with_context(|| format!("in the posture policy {}", path.display()))?
                }
                None => bagui_plugins::posture::builtin_policy(),
            };
            let runner = Arc::new(security::PostureRunner::new(
                bagui_plugins::posture::PostureCollector::new(
                    options.host_root.clone(),
                    policy,
                    options.config.posture.interval,
                ),
                options.config.posture.interval,
                options
                    .state_dir
                    .sm2_key()?
                    .map(|key| (state.agent_id.clone(), key)),
            ));
            scheduled.push(scheduler::Scheduled {
                interval: runner.interval(),
                collector: runner.clone(),
                run_at_start: true,
            });
            posture_runner = Some(runner);
        }
        if options.config.fim.enabled {
            let mut fim_config =
                bagui_plugins::fim::FimConfig::with_extra_paths(options.config.fim.paths.clone());
            fim_config.rescan_interval = options.config.fim.rescan_interval;
            let fim = Arc::new(security::FimRunner::new(
                bagui_plugins::fim::FimCollector::new(
                    options.host_root.clone(),
                    fim_config,
                    options.state_dir.root().join("fim.baseline"),
                ),
                posture_runner,
            ));
            scheduled.push(scheduler::Scheduled {
                interval: fim.interval(),
                collector: fim,
                run_at_start: true,
            });
        }
        let pushed = Arc::new(probes::PushedProbes::load(
            options.state_dir.root().join("probes.json"),
        ));
        scheduled.push(scheduler::Scheduled {
            interval: pushed.interval(),
            collector: pushed.clone(),
            run_at_start: false,
        });
        let mut tasks = scheduler::spawn(
            scheduled,
            outbox.clone(),
            status.clone(),
            snapshot_rx,
            shutdown_rx.clone(),
        );
        let mut self_metrics_address = None;
        if let Some(address) = options.config.self_metrics.listen {
            let (bound, task) =
                selfmetrics::spawn(address, status.clone(), outbox.clone(), shutdown_rx.clone())
                    .await?;
            tracing::info!(address = %bound, "self metrics on http://{bound}/metrics");
            self_metrics_address = Some(bound);
            tasks.push(task);
        }
        tasks.push(spawn_status_writer(
            options.state_dir.clone(),
            outbox.clone(),
            status.clone(),
            options.config.status.interval,
            shutdown_rx.clone(),
        ));
        let link = Link {
            probes: pushed,
            state_dir: options.state_dir.clone(),
            config: options.config.link.clone(),
            outbox: outbox.clone(),
            status: status.clone(),
            snapshots: snapshot_tx,
            shutdown: shutdown_rx,
            force_renewal: false,
        };
        let link = tokio::spawn(link.run());
        Ok(Agent {
            outbox,
            status,
            shutdown,
            link: Some(link),
            tasks,
            state_dir: options.state_dir,
            self_metrics: self_metrics_address,
        })
    }

    /// Where the self-metrics endpoint listens, when enabled.
    pub fn self_metrics_address(&self) -> Option<std::net::SocketAddr> {
        self.self_metrics
    }

    /// The outbox (tests and the simulator push reports straight into it).
    pub fn outbox(&self) -> &Arc<Outbox> {
        &self.outbox
    }

    pub fn status(&self) -> Status {
        self.status.get()
    }

    /// Waits until the link stops by itself (revocation) — or forever while it runs.
    pub async fn wait(&mut self) -> LinkExit {
        match self.link.as_mut() {
            Some(link) => {
                let exit = link.await.unwrap_or(LinkExit::Shutdown);
                self.link = None;
                exit
            }
            None => std::future::pending().await,
        }
    }

    /// Stops everything and flushes the outbox.
    pub async fn shutdown(mut self) -> Result<()> {
        let _ = self.shutdown.send(true);
        if let Some(link) = self.link.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), link).await;
        }
        for task in self.tasks.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
        }
        self.outbox.flush().await?;
        // The last word on the outbox, read from it now: collectors may have appended after
        // the status writer's last tick, and a stale `next_seq` would deny reports it holds.
        let stats = self.outbox.stats();
        let mut status = self.status.get();
        status.next_seq = self.outbox.next_seq();
        status.outbox_records = stats.records;
        status.outbox_bytes = stats.bytes;
        status.outbox_dropped = stats.dropped;
        status.link = status::LinkState::Down;
        status.connected_since = None;
        write_status(&self.state_dir, &status)?;
        Ok(())
    }
}

fn write_status(state_dir: &StateDir, status: &Status) -> Result<()> {
    write_atomic(
        &state_dir.status_path(),
        serde_json::to_string_pretty(status)?.as_bytes(),
        0o644,
    )
}

/// Keeps `status.json` current and turns outbox drops into reports (never silent).
fn spawn_status_writer(
    state_dir: StateDir,
    outbox: Arc<Outbox>,
    status: StatusBoard,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The file is rewritten when something in it changed, and at least every 5 s so that
        // `bagui-agent status` (which calls a file older than 10 s stale) sees a live agent:
        // an idle terminal then costs one small write every few seconds, not one a second.
        let mut written: Option<(Status, std::time::Instant)> = None;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = status.link_changed() => {}
                _ = crate::stopped(&mut shutdown) => return,
            }
            match outbox.push_drop_notice(join::now_ms()) {
                Ok(Some(_)) => {
                    tracing::warn!(dropped = ?outbox.stats().dropped, "outbox full: records dropped")
                }
                Ok(None) => {}
                Err(error) => tracing::error!(%error, "recording outbox drops"),
            }
            let stats = outbox.stats();
            let next_seq = outbox.next_seq();
            status.update(|s| {
                s.outbox_records = stats.records;
                s.outbox_bytes = stats.bytes;
                s.outbox_dropped = stats.dropped;
                s.next_seq = next_seq;
                s.updated_ms = join::now_ms();
            });
            let current = status.get();
            let unchanged = written.as_ref().is_some_and(|(last, at)| {
                at.elapsed() < Duration::from_secs(5)
                    && Status {
                        updated_ms: current.updated_ms,
                        ..last.clone()
                    } == current
            });
            if unchanged {
                continue;
            }
            match write_status(&state_dir, &current) {
                Ok(()) => written = Some((current, std::time::Instant::now())),
                Err(error) => tracing::warn!(error = %format!("{error:#}"), "writing status.json"),
            }
        }
    })
}

/// Resolves once `shutdown` turns true (or its sender is gone).
pub async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}
