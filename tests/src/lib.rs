//! Test support for Bagui's end-to-end tests: a control plane on loopback with fast timers,
//! agents joined through the real enrollment path, an in-process UDP relay that can cut the
//! link, raw QUIC clients for hostile input, and helpers to run the real binaries.
//!
//! Everything binds `127.0.0.1:0`; nothing here sends a packet anywhere else.
#![forbid(unsafe_code)]

pub mod relay;
pub mod sim;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bagui_agent::config::AgentConfig;
use bagui_agent::join::JoinOptions;
use bagui_agent::state::{AgentState, StateDir};
use bagui_agent::{Agent, AgentOptions};
use bagui_control_plane::admin::{CreateToken, TokenCreated};
use bagui_control_plane::clock::{Clock, SystemClock};
use bagui_control_plane::config::ControlPlaneConfig;
use bagui_control_plane::datadir::DataDir;
use bagui_control_plane::server::ControlPlane;
use bagui_plugins::HostRoot;

/// The village most tests join (新竹社区居委会, Qingxiu district, Nanning).
pub const VILLAGE: &str = "450103001005";
pub const VILLAGE_PATH: &str = "广西壮族自治区/南宁市/青秀区/新竹街道/新竹社区居委会";

/// Writes `contents` to `root/relative`, creating its directories: a file of a fixture host.
pub fn write_fixture(root: &Path, relative: &str, contents: &str) {
    let path = root.join(relative);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, contents).unwrap();
}

/// One installed package's stanza of a dpkg `status` database.
pub fn dpkg_stanza(name: &str, version: &str) -> String {
    format!(
        "Package: {name}\nStatus: install ok installed\nPriority: optional\nArchitecture: amd64\nVersion: {version}\nDescription: {name}\n\n"
    )
}

/// A UDP port that was free a moment ago on 127.0.0.1.
pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|socket| socket.local_addr())
        .map(|address| address.port())
        .expect("binding a UDP socket on loopback")
}

/// Control-plane settings with timers short enough for tests.
pub fn fast_control_plane_config(quic_port: u16) -> ControlPlaneConfig {
    let mut config = ControlPlaneConfig::default();
    config.server.quic_listen = format!("127.0.0.1:{quic_port}")
        .parse()
        .expect("valid address");
    config.server.http_listen = "127.0.0.1:0".parse().expect("valid address");
    config.server.udp_buffer = 1 << 20;
    config.session.heartbeat_interval = Duration::from_millis(500);
    config.session.idle_timeout = Duration::from_secs(10);
    config
}

/// Agent settings with timers short enough for tests: a cut link is noticed in ~2 s and
/// retried every few hundred ms; collectors stay quiet after the first host-facts report so
/// that tests control exactly which reports exist.
pub fn fast_agent_config() -> AgentConfig {
    let mut config = AgentConfig::default();
    config.link.backoff_min = Duration::from_millis(100);
    config.link.backoff_max = Duration::from_millis(800);
    config.link.connect_timeout = Duration::from_secs(2);
    config.link.idle_timeout = Duration::from_secs(2);
    config.link.keep_alive = Duration::from_millis(300);
    // Off, not merely slow: a metrics run lands at a random offset within its interval, and
    // tests count exactly what sits in the outbox and what the control plane stored.
    config.collectors.metrics_enabled = false;
    config.collectors.assets_enabled = false;
    config.posture.enabled = false;
    config.fim.enabled = false;
    config.status.interval = Duration::from_millis(200);
    config
}

/// Polls `condition` every 20 ms until it holds or `timeout` passes.
pub async fn wait_until(
    timeout: Duration,
    what: &str,
    mut condition: impl FnMut() -> bool,
) -> Result<Duration> {
    let start = Instant::now();
    loop {
        if condition() {
            return Ok(start.elapsed());
        }
        if start.elapsed() > timeout {
            anyhow::bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The crypto profile the foundation's end-to-end tests run under: `standard`, or what
/// `BAGUI_TEST_CRYPTO_PROFILE` names (`shangmi`; test.sh runs them a second time so).
pub fn test_crypto_profile() -> bagui_protocol::CryptoProfile {
    match std::env::var("BAGUI_TEST_CRYPTO_PROFILE") {
        Ok(name) if !name.is_empty() => name
            .parse()
            .unwrap_or_else(|error| panic!("BAGUI_TEST_CRYPTO_PROFILE: {error}")),
        _ => bagui_protocol::CryptoProfile::Standard,
    }
}

/// A deployment in a temporary directory.
pub struct Deployment {
    pub dir: tempfile::TempDir,
    pub data_dir: DataDir,
    pub quic_port: u16,
    pub config: ControlPlaneConfig,
}

impl Deployment {
    /// `bagui-cp init` on a fresh directory, advertising a free loopback port, on the
    /// [`test_crypto_profile`].
    pub fn init() -> Result<Deployment> {
        Deployment::init_with_profile(test_crypto_profile())
    }

    /// [`Deployment::init`] on a given crypto profile (`init --crypto-profile`).
    pub fn init_with_profile(profile: bagui_protocol::CryptoProfile) -> Result<Deployment> {
        let dir = tempfile::tempdir()?;
        let data_dir = DataDir::new(dir.path().join("control-plane"));
        let quic_port = free_udp_port();
        data_dir.init_with(
            &format!("127.0.0.1:{quic_port}"),
            &[],
            &SystemClock,
            &bagui_control_plane::datadir::InitOptions {
                crypto_profile: profile,
                ..Default::default()
            },
        )?;
        Ok(Deployment {
            dir,
            data_dir,
            quic_port,
            config: fast_control_plane_config(quic_port),
        })
    }

    pub fn server(&self) -> String {
        format!("127.0.0.1:{}", self.quic_port)
    }

    /// Starts the control plane in this process.
    pub async fn start(&self) -> Result<ControlPlane> {
        self.start_with_clock(Arc::new(SystemClock)).await
    }

    pub async fn start_with_clock(&self, clock: Arc<dyn Clock>) -> Result<ControlPlane> {
        ControlPlane::start(self.data_dir.clone(), self.config.clone(), clock).await
    }

    /// A fresh agent state directory under the deployment's temporary directory.
    pub fn state_dir(&self, name: &str) -> StateDir {
        StateDir::new(self.dir.path().join("agents").join(name))
    }

    pub fn ca_hash(&self) -> String {
        self.data_dir.ca().expect("the CA loads").fingerprint()
    }

    /// The deployment's crypto profile.
    pub fn crypto_profile(&self) -> bagui_protocol::CryptoProfile {
        self.data_dir
            .crypto_profile()
            .expect("deployment.json reads")
    }
}

/// Creates a token through the running control plane's admin interface.
pub fn create_token(
    control_plane: &ControlPlane,
    division: &str,
    role: &str,
    uses: u32,
) -> Result<TokenCreated> {
    Ok(control_plane.admin.create_token(
        "admin",
        &CreateToken {
            division: division.into(),
            ttl: "1h".into(),
            uses,
            role: role.into(),
            description: "test".into(),
        },
    )?)
}

/// Joins through the real enrollment path.
pub async fn join(
    deployment: &Deployment,
    state_dir: &StateDir,
    token: &str,
    instance_id: &str,
) -> Result<AgentState> {
    join_with(
        deployment.server(),
        deployment.ca_hash(),
        state_dir,
        token,
        instance_id,
        None,
    )
    .await
}

pub async fn join_with(
    server: String,
    ca_hash: String,
    state_dir: &StateDir,
    token: &str,
    instance_id: &str,
    division: Option<String>,
) -> Result<AgentState> {
    bagui_agent::join::join(&JoinOptions {
        server,
        token: token.into(),
        ca_hash,
        state_dir: state_dir.clone(),
        instance_id: instance_id.into(),
        division,
        host_root: HostRoot::default(),
        crypto_profile: test_crypto_profile(),
    })
    .await
}

/// Starts an agent in this process.
pub async fn start_agent(state_dir: &StateDir, config: AgentConfig) -> Result<Agent> {
    Agent::start(AgentOptions {
        state_dir: state_dir.clone(),
        config,
        host_root: HostRoot::default(),
    })
    .await
}

/// Starts an agent in this process that reads the host from `host_root` (a fixture tree).
pub async fn start_agent_with_root(
    state_dir: &StateDir,
    config: AgentConfig,
    host_root: HostRoot,
) -> Result<Agent> {
    Agent::start(AgentOptions {
        state_dir: state_dir.clone(),
        config,
        host_root,
    })
    .await
}

/// Points an enrolled agent at another address (a relay) by editing its `agent.json`.
pub fn redirect(state_dir: &StateDir, server: &str) -> Result<()> {
    let mut state = state_dir.agent_state()?;
    state.server = server.into();
    state_dir.save_agent_state(&state)
}

/// Copies a directory tree (a backup of an agent's state, say).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("creating the copy");
    for entry in std::fs::read_dir(from).expect("reading the directory") {
        let path = entry.expect("a directory entry").path();
        let target = to.join(path.file_name().expect("a file name"));
        if path.is_dir() {
            copy_dir(&path, &target);
        } else {
            std::fs::copy(&path, &target).expect("copying a file");
        }
    }
}

/// Path of a workspace binary (`bagui-cp`, `bagui-agent`) next to the test executable's
/// directory. `cargo build --workspace` (what the test command runs first) puts it there.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current test executable");
    let directory = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executables live in target/<profile>/deps");
    let path = directory.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the workspace binaries first (`cargo build --workspace`)",
        path.display()
    );
    path
}

/// A `bagui-cp run` child process, killed (SIGKILL) when dropped.
pub struct ControlPlaneProcess {
    pub child: Child,
    pub log: PathBuf,
}

impl ControlPlaneProcess {
    /// Starts `bagui-cp run` on the deployment and waits until `/readyz` answers.
    pub async fn start(deployment: &Deployment, log_name: &str) -> Result<ControlPlaneProcess> {
        ControlPlaneProcess::start_with(deployment, log_name, "").await
    }

    /// Like [`ControlPlaneProcess::start`], with `extra` appended to the configuration file.
    pub async fn start_with(
        deployment: &Deployment,
        log_name: &str,
        extra: &str,
    ) -> Result<ControlPlaneProcess> {
        let log = deployment.dir.path().join(log_name);
        let config_path = deployment.dir.path().join("control-plane.toml");
        std::fs::write(
            &config_path,
            format!(
                "[server]\nquic_listen = \"127.0.0.1:{}\"\nhttp_listen = \"127.0.0.1:0\"\n\n[session]\nheartbeat_interval = \"500ms\"\n{extra}",
                deployment.quic_port
            ),
        )?;
        // A stale api.json from a killed run must not be mistaken for this one's.
        let _ = std::fs::remove_file(deployment.data_dir.api_info_path());
        let child = Command::new(binary("bagui-cp"))
            .arg("--data-dir")
            .arg(deployment.data_dir.root())
            .arg("run")
            .arg("--config")
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("starting bagui-cp")?;
        let process = ControlPlaneProcess { child, log };
        let info_path = deployment.data_dir.api_info_path();
        wait_until(
            Duration::from_secs(20),
            "bagui-cp to write api.json",
            || info_path.exists(),
        )
        .await
        .with_context(|| process.log_text())?;
        Ok(process)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL: no chance to flush or say goodbye.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A child process that is killed (and reaped) when dropped, so that a test failing halfway
/// leaves nothing running behind it.
pub struct KillOnDrop(pub Child);

impl std::ops::Deref for KillOnDrop {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for ControlPlaneProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// QUIC client pieces for tests that speak to the control plane directly.
pub mod quic {
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::time::Duration;

    use anyhow::Result;
    use bagui_agent::state::StateDir;
    use bagui_protocol::ErrorCode;

    fn transport() -> quinn::TransportConfig {
        bagui_agent::tls::client_transport(Duration::from_secs(5), Duration::from_millis(500))
    }

    /// A client endpoint on loopback.
    pub fn endpoint() -> quinn::Endpoint {
        quinn::Endpoint::client("127.0.0.1:0".parse().expect("valid address"))
            .expect("binding a client endpoint")
    }

    /// Connects with an enrolled agent's identity (ALPN `bagui/1`).
    pub async fn connect_as(
        endpoint: &quinn::Endpoint,
        server: SocketAddr,
        state_dir: &StateDir,
    ) -> Result<quinn::Connection> {
        let identity = state_dir.tls_identity()?;
        let config = bagui_agent::tls::session_config(
            &state_dir.ca_certificate()?,
            identity.certificate,
            identity.key,
            transport(),
        )?;
        Ok(endpoint.connect_with(config, server, "127.0.0.1")?.await?)
    }

    /// Connects on the session ALPN trusting `ca` but presenting no client certificate.
    pub async fn connect_without_certificate(
        endpoint: &quinn::Endpoint,
        server: SocketAddr,
        ca: &rustls::pki_types::CertificateDer<'static>,
        alpn: &[u8],
    ) -> Result<quinn::Connection> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.clone())?;
        let profile = bagui_agent::tls::profile_of(ca);
        let mut config =
            rustls::ClientConfig::builder_with_provider(bagui_agent::tls::provider_for(profile))
                .with_protocol_versions(&[&rustls::version::TLS13])?
                .with_root_certificates(roots)
                .with_no_client_auth();
        config.alpn_protocols = vec![alpn.to_vec()];
        let quic = match profile {
            bagui_protocol::CryptoProfile::Standard => {
                quinn::crypto::rustls::QuicClientConfig::try_from(config)?
            }
            bagui_protocol::CryptoProfile::Shangmi => {
                quinn::crypto::rustls::QuicClientConfig::with_initial(
                    Arc::new(config),
                    bagui_smtls::provider::quic_initial_suite(),
                )?
            }
        };
        let mut client = quinn::ClientConfig::new(Arc::new(quic));
        client.transport_config(Arc::new(transport()));
        Ok(endpoint.connect_with(client, server, "127.0.0.1")?.await?)
    }

    /// Waits for the connection to close and returns the application code it was closed with.
    pub async fn close_code(connection: &quinn::Connection) -> Option<ErrorCode> {
        let error = tokio::time::timeout(Duration::from_secs(10), connection.closed())
            .await
            .ok()?;
        match error {
            quinn::ConnectionError::ApplicationClosed(close) => {
                Some(ErrorCode::from_code(close.error_code.into_inner()))
            }
            _ => None,
        }
    }
}
