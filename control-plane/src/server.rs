//! `bagui-cp run`: opens the data directory and serves QUIC and HTTP until told to stop.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use bagui_protocol::digest;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::admin::Admin;
use crate::api::{self, ApiState, TlsListener};
use crate::audit::Audit;
use crate::clock::Clock;
use crate::config::{ControlPlaneConfig, HttpTls};
use crate::datadir::{ApiInfo, DataDir, split_host_port};
use crate::enroll::Enroller;
use crate::ingest::{
    self, Admission, Committer, IngestContext, LoadMonitor, Sessions, TokenBucket,
};
use crate::metrics::Metrics;
use crate::store::Store;
use crate::tls;

/// A running control plane (in this process).
pub struct ControlPlane {
    pub quic_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub api_url: String,
    pub admin: Arc<Admin>,
    pub sessions: Sessions,
    pub metrics: Metrics,
    pub store: Store,
    pub audit: Audit,
    data_dir: DataDir,
    shutdown: watch::Sender<bool>,
    ingest_task: JoinHandle<()>,
    http_task: JoinHandle<()>,
    housekeeping_task: JoinHandle<()>,
    load_task: JoinHandle<()>,
    audit_tasks: Vec<JoinHandle<()>>,
    commit_thread: std::thread::JoinHandle<()>,
    pub dispatcher: crate::dispatch::Dispatcher,
    link_events: crate::dispatch::LinkEvents,
    dispatch_thread: std::thread::JoinHandle<()>,
    notifier_task: JoinHandle<()>,
    /// Ends after the commit thread (which holds its waker), leaving the rest of its queue.
    projector_thread: std::thread::JoinHandle<()>,
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane")
            .field("quic_addr", &self.quic_addr)
            .field("api_url", &self.api_url)
            .finish_non_exhaustive()
    }
}

impl ControlPlane {
    /// Opens `data_dir` and starts serving.
    pub async fn start(
        data_dir: DataDir,
        config: ControlPlaneConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<ControlPlane> {
        let deployment = data_dir.deployment()?;
        let store = Store::open_waiting(
            &data_dir.store_path(),
            config.store.cache,
            Duration::from_secs(3),
        )?;
        let divisions = Arc::new(data_dir.divisions()?);
        let crypto_profile = data_dir.crypto_profile()?;
        let ca = Arc::new(data_dir.ca()?);
        let (chain, key) = data_dir.server_identity(&ca, clock.as_ref())?;
        let audit_config = config.audit_config();
        let audit = Audit::new(store.clone(), clock.clone())?
            .with_checkpoints(&data_dir.sm2_secret_key()?, audit_config.checkpoint_every)?;
        let metrics = Metrics::new();
        let enroller = Arc::new(Enroller::new(
            store.clone(),
            ca.clone(),
            divisions.clone(),
            clock.clone(),
            audit.clone(),
            config.enroll_config(),
            data_dir.sm2_public_key()?,
        ));
        crate::thresholds::validate(&config.thresholds.0)?;
        let dispatcher = crate::dispatch::Dispatcher::open(
            store.clone(),
            divisions.clone(),
            config.dispatch_config()?,
            clock.clone(),
            true,
        )?;
        let (event_tx, event_rx) = std::sync::mpsc::channel();
        let link_events =
            crate::dispatch::LinkEvents::with_thresholds(event_tx, config.links.clone());
        let dispatch_thread = dispatcher.clone().spawn(event_rx);
        let ingest_config = config.ingest_config();
        let sessions = Sessions::new(ingest_config.missed_heartbeats);
        let (resync_tx, mut resync_rx) =
            tokio::sync::mpsc::unbounded_channel::<crate::ingest::Followup>();
        let (projector, projector_thread) = crate::inventory::spawn_projector(
            store.clone(),
            metrics.clone(),
            resync_tx.clone(),
            Some(link_events.clone()),
            config.thresholds.0.clone(),
        );
        let (committer, commit_thread) = Committer::spawn(
            store.clone(),
            metrics.clone(),
            ingest_config.max_commit_batch,
            ingest_config.commit_window,
            projector,
        );

        // QUIC.
        let server_config = tls::quic_server_config(
            chain.clone(),
            key.clone_key(),
            ca.cert_der(),
            tls::server_transport(config.session.idle_timeout),
        )?;
        let reset_key = data_dir.reset_key()?;
        let mut endpoint_config = quinn::EndpointConfig::new(Arc::new(ring::hmac::Key::new(
            ring::hmac::HMAC_SHA256,
            &reset_key[..32],
        )));
        // Connection ids must validate across restarts too, or the restarted endpoint drops
        // the agents' packets as foreign instead of answering them with a stateless reset.
        let cid_key =
            u64::from_le_bytes(reset_key[32..40].try_into().expect("reset key is 64 bytes"));
        endpoint_config.cid_generator(move || {
            Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
        });
        let socket = bagui_agent::wire::udp_socket(
            config.server.quic_listen,
            config.server.udp_buffer as usize,
        )?;
        let endpoint = quinn::Endpoint::new(
            endpoint_config,
            Some(server_config),
            socket,
            // The receive loop on a thread of its own, so a busy runtime cannot starve it.
            crate::receive_thread::ReceiveThread::start(crate::receive_thread::THREAD_NAME)
                .and_then(|thread| thread.endpoint_runtime())
                .context("starting the QUIC receive thread")?,
        )
        .context("starting the QUIC endpoint")?;
        let quic_addr = endpoint.local_addr()?;

        let (shutdown, shutdown_rx) = watch::channel(false);
        let load = Arc::new(LoadMonitor::default());
        let load_task = load.spawn(metrics.clone(), shutdown_rx.clone());
        let notifier_task = tokio::spawn(crate::notifier::run(
            dispatcher.clone(),
            config.notify.retry.clone(),
            config.notify.limit.clone(),
            shutdown_rx.clone(),
        ));
        // Signed audit checkpoints on a timer, and the remote syslog copy.
        let mut audit_tasks = vec![tokio::spawn(
            audit
                .clone()
                .run_checkpoints(audit_config.checkpoint_interval, shutdown_rx.clone()),
        )];
        if let Some(url) = &config.audit.syslog {
            let export = config.syslog_config(url)?;
            tracing::info!(target = ?export.target, "exporting the audit log to syslog");
            audit_tasks.push(tokio::spawn(crate::syslog::run_exporter(
                store.clone(),
                export,
                audit.appended(),
                shutdown_rx.clone(),
            )));
        }
        let context = IngestContext {
            enroller: enroller.clone(),
            store: store.clone(),
            audit: audit.clone(),
            clock: clock.clone(),
            sessions: sessions.clone(),
            committer,
            load: load.clone(),
            join_limiter: Arc::new(TokenBucket::new(
                config.enroll.join_rate_per_second,
                config.enroll.join_burst,
            )),
            admission: Arc::new(Admission::new(
                ingest_config.admission_rate,
                ingest_config.admission_burst,
            )),
            metrics: metrics.clone(),
            config: ingest_config,
            followups: resync_tx.clone(),
            unsealer: Arc::new(crate::ingest::Unsealer::new(&data_dir.sm2_secret_key()?)),
            link_events: Some(link_events.clone()),
        };
        let ingest_task = tokio::spawn(ingest::serve(endpoint, context, shutdown_rx.clone()));

        // HTTP.
        let admin = Arc::new(
            Admin::new(
                store.clone(),
                divisions.clone(),
                enroller,
                audit.clone(),
                clock.clone(),
                Some(sessions.clone()),
                deployment.advertise.clone(),
            )
            .with_probe_policy(config.probe_policy()?)
            .with_dispatcher(dispatcher.clone(), link_events.clone()),
        );
        {
            // Asset records that went stale: ask their agents for a full snapshot, audited
            // like any operator command.
            let admin = admin.clone();
            tokio::spawn(async move {
                while let Some(followup) = resync_rx.recv().await {
                    let admin = admin.clone();
                    let result = tokio::task::spawn_blocking(move || match followup {
                        crate::ingest::Followup::FullSnapshot(agent_id) => {
                            let request = crate::admin::CommandRequest {
                                kind: "send_full_snapshot".into(),
                                after: None,
                                interval: None,
                            };
                            admin
                                .send_command("control-plane", &agent_id, &request)
                                .map(drop)
                        }
                        crate::ingest::Followup::PendingProbes(agent_id) => {
                            admin.send_probes(&agent_id)
                        }
                    })
                    .await;
                    if let Ok(Err(error)) = result {
                        tracing::info!(%error, "follow-up command not sent");
                    }
                }
            });
        }
        let ready = Arc::new(AtomicBool::new(false));
        let state = ApiState {
            admin: admin.clone(),
            metrics: metrics.clone(),
            admin_token_digest: digest::sm3_tagged(data_dir.admin_token()?.as_bytes()),
            ready: ready.clone(),
            intake_dedupe: Arc::default(),
        };
        let router = api::router(state);
        let listener = tokio::net::TcpListener::bind(config.server.http_listen)
            .await
            .with_context(|| format!("binding the API to tcp://{}", config.server.http_listen))?;
        let http_addr = listener.local_addr()?;
        let mut http_shutdown = shutdown_rx.clone();
        let stop = async move {
            let _ = http_shutdown.wait_for(|stop| *stop).await;
        };
        let plain_http = http_addr.ip().is_loopback() && config.server.http_tls == HttpTls::Auto;
        let (api_url, http_task) = if plain_http {
            let task = tokio::spawn(async move {
                if let Err(error) = axum::serve(listener, router)
                    .with_graceful_shutdown(stop)
                    .await
                {
                    tracing::error!(%error, "API server failed");
                }
            });
            (format!("http://{http_addr}"), task)
        } else {
            let tls_listener = TlsListener::new(listener, tls::https_server_config(chain, key)?)?;
            let task = tokio::spawn(async move {
                if let Err(error) = axum::serve(tls_listener, router)
                    .with_graceful_shutdown(stop)
                    .await
                {
                    tracing::error!(%error, "API server failed");
                }
            });
            let host = if http_addr.ip().is_unspecified() {
                split_host_port(&deployment.advertise)?.0
            } else {
                http_addr.ip().to_string()
            };
            let host = if host.contains(':') {
                format!("[{host}]")
            } else {
                host
            };
            (format!("https://{host}:{}", http_addr.port()), task)
        };

        // Persist live sessions' last-seen times now and then, so a crash loses little.
        let housekeeping_task = {
            let sessions = sessions.clone();
            let store = store.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(60));
                tick.tick().await;
                loop {
                    tick.tick().await;
                    let live = sessions.snapshot();
                    let store = store.clone();
                    let _ = tokio::task::spawn_blocking(move || {
                        for (agent_id, session) in live {
                            let _ = store.update_agent(&agent_id, |agent| {
                                agent.last_seen_ms = agent.last_seen_ms.max(session.last_seen_ms);
                            });
                        }
                    })
                    .await;
                }
            })
        };

        data_dir.write_api_info(&ApiInfo {
            url: api_url.clone(),
            pid: std::process::id(),
            quic: quic_addr.to_string(),
        })?;
        ready.store(true, Ordering::SeqCst);
        tracing::info!(quic = %quic_addr, api = %api_url, advertise = %deployment.advertise, crypto_profile = %crypto_profile, "control plane ready");
        Ok(ControlPlane {
            quic_addr,
            http_addr,
            api_url,
            admin,
            sessions,
            metrics,
            store,
            audit,
            data_dir,
            shutdown,
            ingest_task,
            http_task,
            housekeeping_task,
            load_task,
            audit_tasks,
            commit_thread,
            dispatcher,
            link_events,
            dispatch_thread,
            notifier_task,
            projector_thread,
        })
    }

    /// Stops cleanly: agents are told when to come back, queued reports are committed, the
    /// store is flushed and `api.json` removed.
    pub async fn shutdown(self) -> Result<()> {
        // Sessions the control plane closes itself are not agents lost.
        self.link_events.mute();
        self.dispatcher.stop();
        let _ = self.shutdown.send(true);
        self.housekeeping_task.abort();
        self.load_task.abort();
        let _ = self.ingest_task.await;
        let _ = tokio::time::timeout(Duration::from_secs(5), self.http_task).await;
        // The commit thread ends once every session task has dropped its queue handle.
        let thread = self.commit_thread;
        let joined = tokio::time::timeout(
            Duration::from_secs(10),
            tokio::task::spawn_blocking(move || thread.join()),
        )
        .await;
        if joined.is_err() {
            tracing::warn!("commit thread did not stop within 10 s");
        }
        let thread = self.projector_thread;
        let joined = tokio::time::timeout(
            Duration::from_secs(10),
            tokio::task::spawn_blocking(move || thread.join()),
        )
        .await;
        if joined.is_err() {
            tracing::warn!("projector thread did not stop within 10 s");
        }
        let thread = self.dispatch_thread;
        let _ = tokio::time::timeout(
            Duration::from_secs(10),
            tokio::task::spawn_blocking(move || thread.join()),
        )
        .await;
        let _ = tokio::time::timeout(Duration::from_secs(5), self.notifier_task).await;
        for task in self.audit_tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
        // The last entries get a signed checkpoint before the store closes.
        if let Err(error) = self.audit.checkpoint() {
            tracing::error!(%error, "final audit checkpoint failed");
        }
        self.store.flush()?;
        self.data_dir.remove_api_info();
        tracing::info!("control plane stopped");
        Ok(())
    }
}
