//! `bagui-cp`'s command line. Verbs that read or change state work on the store directly when
//! no `run` holds it, and through the API (found via `DIR/run/api.json`, authenticated with
//! `DIR/admin.token`) when one does, or against any control plane with `--api URL --token T`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use bagui_protocol::Role;
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Serialize;

use crate::admin::{
    Admin, AgentView, ChangesQuery, CommandRequest, CommandSent, CreateToken, FindQuery,
    FindingsQuery, ProbeSetView, ReportView, SetUplink, TokenCreated, TokenView,
};
use crate::audit::{self, Audit};
use crate::client::ApiClient;
use crate::clock::{Clock, SystemClock};
use crate::config::ControlPlaneConfig;
use crate::datadir::DataDir;
use crate::enroll::{EnrollConfig, Enroller};
use crate::inventory::{
    AssetView, ChangeView, DivisionPostureRow, FailingRow, FindRow, FindingView, HealthView,
    PostureView,
};
use crate::probes::ProbeRequest;
use crate::server::ControlPlane;
use crate::store::{AuditEntry, Store, StoreError};

#[derive(Parser)]
#[command(
    name = "bagui-cp",
    version,
    about = "Bagui control plane: enrollment, ingest, four-online operations"
)]
pub struct Cli {
    /// Data directory (CA, keys, store).
    #[arg(
        long,
        global = true,
        env = "BAGUI_DATA_DIR",
        default_value = "/var/lib/bagui"
    )]
    pub data_dir: PathBuf,
    /// Talk to this control plane's API instead of the local data directory.
    #[arg(long, global = true, env = "BAGUI_API")]
    pub api: Option<String>,
    /// API token for --api (default: DATA_DIR/admin.token).
    #[arg(long, global = true, env = "BAGUI_API_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// CA certificate for an HTTPS --api (default: DATA_DIR/ca.crt).
    #[arg(long, global = true)]
    pub ca_file: Option<PathBuf>,
    /// Log level: error, warn, info, debug or trace.
    #[arg(long, global = true, env = "BAGUI_LOG")]
    pub log_level: Option<String>,
    /// File whose first line is the CA key's passphrase (`init --protect-ca-key`, and every
    /// command that loads a protected CA). Else BAGUI_CA_PASSPHRASE, else asked on the terminal.
    #[arg(long, global = true, env = "BAGUI_CA_PASSPHRASE_FILE")]
    pub ca_passphrase_file: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Output {
    Table,
    Json,
    Csv,
}

#[derive(Subcommand)]
pub enum Command {
    /// Create a deployment: CA, server certificate, keys, admin token, division tree, store.
    Init {
        /// Address agents will connect to, HOST:PORT.
        #[arg(long)]
        advertise: String,
        /// Extra names (DNS or IP) for the server certificate.
        #[arg(long)]
        san: Vec<String>,
        /// Encrypt the CA private key at rest (SM4-CCM under PBKDF2-HMAC-SM3 of a passphrase
        /// from --ca-passphrase-file, BAGUI_CA_PASSPHRASE or the terminal).
        #[arg(long)]
        protect_ca_key: bool,
        /// Crypto profile of the deployment: `standard` (TLS 1.3 AES/ChaCha, ECDSA P-256) or
        /// `shangmi` (RFC 8998: TLS_SM4_GCM_SM3, curveSM2, SM2 certificates). Fixed for the
        /// deployment's life; agents of the other profile cannot connect.
        #[arg(long, default_value = "standard")]
        crypto_profile: bagui_protocol::CryptoProfile,
    },
    /// Serve QUIC (agents) and HTTP (API) until SIGTERM or SIGINT.
    Run(RunArgs),
    /// Join tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Enrolled agents.
    #[command(subcommand)]
    Agent(AgentCommand),
    /// The asset ledger (资产在线): what each machine is and runs, and every change.
    #[command(subcommand)]
    Asset(AssetCommand),
    /// Latest health samples and check results of an agent.
    #[command(subcommand)]
    Health(HealthCommand),
    /// Probes pushed to agents (tcp, http, dns, tls_expiry within the division's ranges).
    #[command(subcommand)]
    Probe(ProbeCommand),
    /// Security posture: 等保2.0 baseline results, scores, findings (FIM, risky services).
    #[command(subcommand)]
    Posture(PostureCommand),
    /// The SM3-chained, SM2-checkpointed audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Work orders (工单): list, show, and act on them.
    #[command(subcommand)]
    Wo(crate::cli_ops::WoCommand),
    /// Teams that own work orders, with their channels and who is on duty.
    #[command(subcommand)]
    Team(crate::cli_ops::TeamCommand),
    /// Tokens for external alert intake (Alertmanager, 12345 hotline …).
    #[command(subcommand)]
    IntakeToken(crate::cli_ops::IntakeTokenCommand),
    /// The notification outbox: pending and failed messages.
    #[command(subcommand)]
    Notify(crate::cli_ops::NotifyCommand),
    /// Open incidents as the incident engine holds them.
    #[command(subcommand)]
    Incident(crate::cli_ops::IncidentCommand),
    /// Users of the API and console: roles, scope, password, TOTP, tokens.
    #[command(subcommand)]
    User(crate::cli_ops::UserCommand),
    /// Work-order KPIs (管理在线) of a division's subtree for a month.
    Kpi(crate::cli_service::KpiArgs),
    /// An agent's availability for a month, from its sessions, less maintenance.
    Availability(crate::cli_service::AvailabilityArgs),
    /// Maintenance windows: silence an agent or a division subtree for a while.
    #[command(subcommand)]
    Maintenance(crate::cli_service::MaintenanceCommand),
    /// The service catalog (服务在线) and its monthly figures.
    #[command(subcommand)]
    Service(crate::cli_service::ServiceCommand),
    /// Throw-away control plane plus one local agent, for a first look.
    Demo {
        /// API port on 127.0.0.1 (0: any free port).
        #[arg(long, default_value_t = 8080)]
        http_port: u16,
        /// Keep the data directory afterwards.
        #[arg(long)]
        keep: bool,
    },
}

#[derive(Args)]
pub struct RunArgs {
    /// UDP address for QUIC (default from the config file, else 0.0.0.0:7443).
    #[arg(long)]
    pub quic_listen: Option<SocketAddr>,
    /// TCP address for the API (default 127.0.0.1:8080; HTTPS when not loopback).
    #[arg(long)]
    pub http_listen: Option<SocketAddr>,
    /// Configuration file (default: DATA_DIR/control-plane.toml when present).
    #[arg(long)]
    pub config: Option<PathBuf>,
}

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Create a join token and print the `bagui-agent join` command.
    Create {
        /// Division code the token is bound to (agents may join it or any division below).
        #[arg(long)]
        division: String,
        #[arg(long, default_value = "24h")]
        ttl: String,
        /// How many agents may join with it.
        #[arg(long, default_value_t = 1)]
        uses: u32,
        #[arg(long, value_enum, default_value = "server")]
        role: RoleArg,
        #[arg(long, default_value = "")]
        description: String,
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
    /// List tokens (never their secrets).
    List {
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Revoke a token.
    Revoke { id: String },
}

#[derive(Subcommand)]
pub enum AssetCommand {
    /// The current asset record of an agent (JSON by default: os, hardware, packages,
    /// listening, users, groups, services).
    Show {
        agent: String,
        #[arg(long, value_enum, default_value = "json")]
        output: Output,
    },
    /// The change history: packages installed and removed, ports opened, users added, ...
    Changes {
        /// RFC 3339 time or a duration back from now (`24h`, `7d`).
        #[arg(long)]
        since: Option<String>,
        /// Only agents in this division's subtree.
        #[arg(long)]
        division: Option<String>,
        /// Only this agent.
        #[arg(long)]
        agent: Option<String>,
        /// Only this section (os, machine, disk, filesystem, nic, package, listening, user,
        /// group, service).
        #[arg(long)]
        section: Option<String>,
        #[arg(long, default_value_t = 1000)]
        limit: usize,
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Agents matching every criterion given.
    Find {
        /// Installed package name (e.g. openssh-server).
        #[arg(long)]
        package: Option<String>,
        /// Only versions older than this, in the package manager's own order (dpkg or rpm).
        #[arg(long)]
        version_below: Option<String>,
        /// Only versions at least this.
        #[arg(long)]
        version_at_least: Option<String>,
        /// A listening TCP or UDP port.
        #[arg(long)]
        port: Option<u16>,
        /// OS id, family or name contains this (kylin, uos, openeuler, debian, rhel, ...).
        #[arg(long)]
        os: Option<String>,
        #[arg(long)]
        division: Option<String>,
        #[arg(long)]
        online: Option<bool>,
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
}

#[derive(Subcommand)]
pub enum PostureCommand {
    /// The latest baseline run of an agent, with evidence.
    Show {
        agent: String,
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Failing checks across the fleet, worst first.
    Failing {
        #[arg(long)]
        division: Option<String>,
        /// At least this severity: low, medium, high, critical.
        #[arg(long)]
        severity: Option<String>,
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Security findings: newly failing high/critical checks, risky services, changed files.
    Findings {
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        division: Option<String>,
        #[arg(long)]
        agent: Option<String>,
        #[arg(long)]
        severity: Option<String>,
        #[arg(long, default_value_t = 1000)]
        limit: usize,
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Posture score per child division (mean of host scores).
    Divisions {
        #[arg(long)]
        division: Option<String>,
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
}

#[derive(Subcommand)]
pub enum ProbeCommand {
    /// The probes pushed to an agent.
    List { agent: String },
    /// Push (or replace, by name) a probe; audited, sent at once or at the agent's next session.
    Push {
        agent: String,
        #[arg(long)]
        name: String,
        /// tcp, http, dns or tls_expiry.
        #[arg(long)]
        kind: String,
        /// `IP:PORT` (tcp, tls_expiry), `http(s)://IP[:PORT]/PATH` (http), a host name (dns).
        #[arg(long)]
        target: String,
        #[arg(long, default_value = "60s")]
        interval: String,
        #[arg(long, default_value = "5s")]
        timeout: String,
    },
    /// Remove a pushed probe.
    Remove { agent: String, name: String },
}

#[derive(Subcommand)]
pub enum HealthCommand {
    /// Latest metrics and check results of an agent.
    Show {
        agent: String,
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum RoleArg {
    Server,
    Gateway,
    Terminal,
}

impl From<RoleArg> for Role {
    fn from(role: RoleArg) -> Role {
        match role {
            RoleArg::Server => Role::Server,
            RoleArg::Gateway => Role::Gateway,
            RoleArg::Terminal => Role::Terminal,
        }
    }
}

#[derive(Subcommand)]
pub enum AgentCommand {
    /// List agents.
    List {
        /// Only agents in this division's subtree.
        #[arg(long)]
        division: Option<String>,
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Show one agent.
    Show { id: String },
    /// Revoke an agent: disconnect it now and refuse it afterwards.
    Revoke { id: String },
    /// Set an agent's uplink gateway (or `--clear` to use the computed one).
    SetUplink {
        agent: String,
        gateway: Option<String>,
        #[arg(long, conflicts_with = "gateway")]
        clear: bool,
    },
    /// Stored reports of an agent (metadata, not bodies).
    Reports {
        id: String,
        #[arg(long, default_value_t = 0)]
        after: u64,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Send an allow-listed command to a connected agent (audited).
    Command {
        id: String,
        /// send_full_snapshot, reconnect, renew_certificate or set_heartbeat_interval.
        kind: String,
        #[arg(long)]
        after: Option<String>,
        #[arg(long)]
        interval: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Check the hash chain from the first entry to the last and every signed checkpoint;
    /// names the first bad entry and fails if any. Reads the store, so stop `run` first.
    Verify {
        /// Checkpoint public key (PEM SubjectPublicKeyInfo or hex SEC1) held by the auditor;
        /// default DATA_DIR/audit-signing.pub.
        #[arg(long)]
        pubkey: Option<PathBuf>,
    },
    /// Print entries.
    List {
        #[arg(long, default_value_t = 0)]
        after: u64,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
}

/// Starts logging to stderr.
pub fn init_logging(level: &str) {
    let level: tracing::Level = level.parse().unwrap_or(tracing::Level::INFO);
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}

/// How verbs reach the state.
pub(crate) enum Access {
    Local { admin: Box<Admin>, store: Store },
    Remote(ApiClient),
}

impl Access {
    /// Reads a view: from the store when local, with `GET path` through the API when remote.
    pub(crate) async fn read<T: serde::de::DeserializeOwned>(
        &self,
        local: impl FnOnce(&Admin) -> Result<T, crate::admin::AdminError>,
        path: impl FnOnce() -> String,
    ) -> Result<T> {
        match self {
            Access::Local { admin, .. } => Ok(local(admin)?),
            Access::Remote(client) => client.get(&path()).await,
        }
    }
}

fn local_admin(data_dir: &DataDir, store: Store) -> Result<Admin> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let divisions = Arc::new(data_dir.divisions()?);
    let audit = Audit::new(store.clone(), clock.clone())?;
    let enroller = Arc::new(Enroller::new(
        store.clone(),
        Arc::new(data_dir.ca()?),
        divisions.clone(),
        clock.clone(),
        audit.clone(),
        EnrollConfig::default(),
        data_dir.sm2_public_key()?,
    ));
    let config = match data_dir.root().join("control-plane.toml") {
        path if path.exists() => ControlPlaneConfig::load(&path)?,
        _ => ControlPlaneConfig::default(),
    };
    let dispatcher = crate::dispatch::Dispatcher::open(
        store.clone(),
        divisions.clone(),
        config.dispatch_config()?,
        clock.clone(),
        false,
    )?;
    Ok(Admin::new(
        store,
        divisions,
        enroller,
        audit,
        clock,
        None,
        data_dir.deployment()?.advertise,
    )
    .with_local_dispatcher(dispatcher))
}

fn remote(cli: &Cli, data_dir: &DataDir, url: &str) -> Result<ApiClient> {
    let token = match &cli.token {
        Some(token) => token.clone(),
        None => data_dir
            .admin_token()
            .context("no --token given and no readable admin token in the data directory")?,
    };
    let ca = if url.starts_with("https://") {
        let path = cli
            .ca_file
            .clone()
            .unwrap_or_else(|| data_dir.ca_cert_path());
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading CA certificate {}", path.display()))?;
        crate::pki::certs_from_pem(&text)?.into_iter().next()
    } else {
        None
    };
    ApiClient::new(url, &token, ca.as_ref())
}

fn access(cli: &Cli) -> Result<Access> {
    let data_dir = DataDir::new(&cli.data_dir);
    if let Some(url) = &cli.api {
        return Ok(Access::Remote(remote(cli, &data_dir, url)?));
    }
    data_dir.deployment()?;
    match Store::open(&data_dir.store_path()) {
        Ok(store) => Ok(Access::Local {
            admin: Box::new(local_admin(&data_dir, store.clone())?),
            store,
        }),
        Err(StoreError::Locked { .. }) => {
            let info = data_dir.api_info().context(
                "the store is held by a running control plane, but its API address is unknown",
            )?;
            Ok(Access::Remote(remote(cli, &data_dir, &info.url)?))
        }
        Err(error) => Err(error.into()),
    }
}

pub(crate) fn query_escape(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// Runs the CLI.
pub async fn run(cli: Cli) -> Result<()> {
    if let Some(path) = &cli.ca_passphrase_file {
        crate::datadir::set_ca_passphrase_file(path.clone());
    }
    match &cli.command {
        Command::Init {
            advertise,
            san,
            protect_ca_key,
            crypto_profile,
        } => {
            init_logging(cli.log_level.as_deref().unwrap_or("warn"));
            let data_dir = DataDir::new(&cli.data_dir);
            if data_dir.is_initialized() {
                // Refused by init below; don't ask for a passphrase first.
                data_dir.init(advertise, san, &SystemClock)?;
            }
            let options = crate::datadir::InitOptions {
                ca_passphrase: if *protect_ca_key {
                    Some(crate::datadir::ca_passphrase(true)?)
                } else {
                    None
                },
                crypto_profile: *crypto_profile,
            };
            let deployment = data_dir.init_with(advertise, san, &SystemClock, &options)?;
            println!("initialised {}", data_dir.root().display());
            println!("  crypto        {}", deployment.crypto_profile);
            println!("  advertise     {}", deployment.advertise);
            println!("  names         {}", deployment.names.join(", "));
            println!(
                "  CA            {} ({})",
                data_dir.ca_cert_path().display(),
                data_dir.ca_fingerprint()?
            );
            if *protect_ca_key {
                println!(
                    "  CA key        encrypted (SM4-CCM, PBKDF2-HMAC-SM3); `run` needs the passphrase"
                );
            }
            println!("  admin token   {}", data_dir.admin_token_path().display());
            println!(
                "  audit key     {} (SM2, signs audit checkpoints)",
                data_dir.audit_signing_pub_path().display()
            );
            println!(
                "                {}",
                bagui_protocol::digest::hex(&data_dir.sm2_public_key()?)
            );
            println!(
                "next: bagui-cp run --data-dir {}",
                data_dir.root().display()
            );
            Ok(())
        }
        Command::Run(args) => run_server(&cli, args).await,
        Command::Demo { http_port, keep } => crate::demo::run(*http_port, *keep).await,
        Command::Token(command) => {
            init_logging(cli.log_level.as_deref().unwrap_or("warn"));
            token_command(access(&cli)?, command).await
        }
        Command::Agent(command) => {
            init_logging(cli.log_level.as_deref().unwrap_or("warn"));
            agent_command(access(&cli)?, command).await
        }
        Command::Asset(command) => {
            init_logging(cli.log_level.as_deref().unwrap_or("warn"));
            asset_command(access(&cli)?, command).await
        }
        Command::Health(command) => {
            init_logging(cli.log_level.as_deref().unwrap_or("warn"));
            health_command(access(&cli)?, command).await
        }
        Command::Posture(command) => {
            init_logging(cli.log_level.as_deref().unwrap_or("warn"));
            posture_command(access(&cli)?, command).await
        }
        Command::Probe(command) => {
            init_logging(cli.log_level.as_deref().unwrap_or("warn"));
            probe_command(access(&cli)?, command).await
        }
        Command::Audit(command) => {
            init_logging(cli.log_level.as_deref().unwrap_or("warn"));
            audit_command(&cli, command).await
        }
        Command::Wo(command) => {
            init_logging(cli.log_level.as_deref().unwrap_or("warn"));
            crate::cli_ops::wo_command(access(&cli)?, command).await
        }
        Command::Team(command) => {
            init_logging(cli.log_level.as_deref().unwrap_or("warn"));
            crate::cli_ops::team_command(access(&cli)?, command).await
        }
        Command::IntakeToken(command) => {
            init_logging(cli.log_level.as_deref().unwrap_or("warn"));
            crate::cli_ops::intake_token_command(access(&cli)?, command).await
        }
        Command::Notify(command) => {
            init_logging(cli.log_level.as_deref().unwrap_or("warn"));
            crate::cli_ops::notify_command(access(&cli)?, command).await
        }
        Command::Incident(command) => {
            init_logging(cli.log_level.as_deref().unwrap_or("warn"));
            crate::cli_ops::incident_command(access(&cli)?, command).await
        }
        Command::User(command) => {
            init_logging(cli.log_level.as_deref().unwrap_or("warn"));
            crate::cli_ops::user_command(access(&cli)?, command).await
        }
        Command::Availability(args) => {
            init_logging(cli.log_level.as_deref().unwrap_or("warn"));
            crate::cli_service::availability_command(access(&cli)?, args).await
        }
        Command::Kpi(args) => {
            init_logging(cli.log_level.as_deref().unwrap_or("warn"));
            crate::cli_service::kpi_command(access(&cli)?, args).await
        }
        Command::Maintenance(command) => {
            init_logging(cli.log_level.as_deref().unwrap_or("warn"));
            crate::cli_service::maintenance_command(access(&cli)?, command).await
        }
        Command::Service(command) => {
            init_logging(cli.log_level.as_deref().unwrap_or("warn"));
            crate::cli_service::service_command(access(&cli)?, command).await
        }
    }
}

async fn run_server(cli: &Cli, args: &RunArgs) -> Result<()> {
    let data_dir = DataDir::new(&cli.data_dir);
    let default_config = data_dir.root().join("control-plane.toml");
    let mut config = match &args.config {
        Some(path) => ControlPlaneConfig::load(path)?,
        None if default_config.exists() => ControlPlaneConfig::load(&default_config)?,
        None => ControlPlaneConfig::default(),
    };
    init_logging(cli.log_level.as_deref().unwrap_or(&config.log.level));
    if let Some(address) = args.quic_listen {
        config.server.quic_listen = address;
    }
    if let Some(address) = args.http_listen {
        config.server.http_listen = address;
    }
    let control_plane = ControlPlane::start(data_dir, config, Arc::new(SystemClock)).await?;
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    tracing::info!("stopping");
    control_plane.shutdown().await
}

async fn token_command(access: Access, command: &TokenCommand) -> Result<()> {
    match command {
        TokenCommand::Create {
            division,
            ttl,
            uses,
            role,
            description,
            output,
        } => {
            let request = CreateToken {
                division: division.clone(),
                ttl: ttl.clone(),
                uses: *uses,
                role: Role::from(*role).to_string(),
                description: description.clone(),
            };
            let created: TokenCreated = match &access {
                Access::Local { admin, .. } => admin.create_token("admin", &request)?,
                Access::Remote(client) => client.post("/api/v1/tokens", &request).await?,
            };
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&created)?),
                _ => {
                    println!(
                        "token {} for {} {} (role {}, {} use(s), expires {})",
                        created.view.id,
                        created.view.division,
                        created.view.division_path,
                        created.view.role,
                        created.view.max_uses,
                        created.view.expires
                    );
                    println!("run this on the machine to enroll:");
                    println!();
                    println!("{}", created.join_command);
                    println!();
                }
            }
            Ok(())
        }
        TokenCommand::List { output } => {
            let tokens: Vec<TokenView> = match &access {
                Access::Local { admin, .. } => admin.tokens()?,
                Access::Remote(client) => client.get("/api/v1/tokens").await?,
            };
            print_rows(
                *output,
                &tokens,
                &[
                    "id",
                    "state",
                    "role",
                    "uses",
                    "expires",
                    "division",
                    "division_path",
                ],
                |token| {
                    vec![
                        token.id.clone(),
                        token.state.clone(),
                        token.role.to_string(),
                        format!("{}/{}", token.uses, token.max_uses),
                        token.expires.clone(),
                        token.division.clone(),
                        token.division_path.clone(),
                    ]
                },
            )
        }
        TokenCommand::Revoke { id } => {
            let token: TokenView = match &access {
                Access::Local { admin, .. } => admin.revoke_token("admin", id)?,
                Access::Remote(client) => {
                    client
                        .delete(&format!("/api/v1/tokens/{}", query_escape(id)))
                        .await?
                }
            };
            println!("token {} is {}", token.id, token.state);
            Ok(())
        }
    }
}

async fn agent_command(access: Access, command: &AgentCommand) -> Result<()> {
    match command {
        AgentCommand::List { division, output } => {
            let agents: Vec<AgentView> = match &access {
                Access::Local { admin, .. } => admin.agents(division.as_deref())?,
                Access::Remote(client) => {
                    let path = match division {
                        Some(code) => format!("/api/v1/agents?division={}", query_escape(code)),
                        None => "/api/v1/agents".into(),
                    };
                    client.get(&path).await?
                }
            };
            print_rows(
                *output,
                &agents,
                &[
                    "id",
                    "hostname",
                    "role",
                    "online",
                    "last_seen",
                    "last_acked_seq",
                    "flags",
                    "tls_suite",
                    "kx_group",
                    "division",
                    "division_path",
                ],
                |agent| {
                    let mut flags = Vec::new();
                    if agent.revoked {
                        flags.push("revoked");
                    }
                    if agent.possible_clone {
                        flags.push("possible_clone");
                    }
                    vec![
                        agent.id.clone(),
                        agent.hostname.clone(),
                        agent.role.to_string(),
                        agent.online.to_string(),
                        agent.last_seen.clone().unwrap_or_else(|| "-".into()),
                        agent.last_acked_seq.to_string(),
                        if flags.is_empty() {
                            "-".into()
                        } else {
                            flags.join(",")
                        },
                        agent.tls_suite.clone().unwrap_or_else(|| "-".into()),
                        agent.kx_group.clone().unwrap_or_else(|| "-".into()),
                        agent.division.clone(),
                        agent.division_path.clone(),
                    ]
                },
            )
        }
        AgentCommand::Show { id } => {
            let agent: AgentView = access
                .read(
                    |admin| admin.agent(id),
                    || format!("/api/v1/agents/{}", query_escape(id)),
                )
                .await?;
            println!("{}", serde_json::to_string_pretty(&agent)?);
            Ok(())
        }
        AgentCommand::Revoke { id } => {
            let agent: AgentView = match &access {
                Access::Local { admin, .. } => admin.revoke_agent("admin", id)?,
                Access::Remote(client) => {
                    client
                        .post(
                            &format!("/api/v1/agents/{}/revoke", query_escape(id)),
                            &serde_json::json!({}),
                        )
                        .await?
                }
            };
            println!("agent {} revoked", agent.id);
            Ok(())
        }
        AgentCommand::SetUplink {
            agent,
            gateway,
            clear,
        } => {
            if gateway.is_none() && !clear {
                bail!("give a GATEWAY agent id, or --clear to use the computed uplink");
            }
            let body = SetUplink {
                gateway: gateway.clone(),
            };
            let view: AgentView = match &access {
                Access::Local { admin, .. } => {
                    admin.set_uplink("admin", agent, gateway.as_deref())?
                }
                Access::Remote(client) => {
                    client
                        .put(
                            &format!("/api/v1/agents/{}/uplink", query_escape(agent)),
                            &body,
                        )
                        .await?
                }
            };
            println!(
                "agent {} uplink: {}{}",
                view.id,
                view.uplink.as_deref().unwrap_or("control plane"),
                if view.uplink_overridden {
                    " (set by admin)"
                } else {
                    " (computed)"
                }
            );
            Ok(())
        }
        AgentCommand::Reports { id, after, limit } => {
            let reports: Vec<ReportView> = access
                .read(
                    |admin| admin.reports(id, *after, *limit),
                    || {
                        format!(
                            "/api/v1/agents/{}/reports?after={after}&limit={limit}",
                            query_escape(id)
                        )
                    },
                )
                .await?;
            println!("{}", serde_json::to_string_pretty(&reports)?);
            Ok(())
        }
        AgentCommand::Command {
            id,
            kind,
            after,
            interval,
        } => {
            let request = CommandRequest {
                kind: kind.clone(),
                after: after.clone(),
                interval: interval.clone(),
            };
            let sent: CommandSent = match &access {
                Access::Local { .. } => {
                    bail!("commands need a running control plane (`bagui-cp run`)")
                }
                Access::Remote(client) => {
                    client
                        .post(
                            &format!("/api/v1/agents/{}/commands", query_escape(id)),
                            &request,
                        )
                        .await?
                }
            };
            println!(
                "command {} ({}) sent to {}",
                sent.command_id, sent.kind, sent.agent_id
            );
            Ok(())
        }
    }
}

/// `?a=1&b=2` from the given pairs, leaving out the unset ones.
fn query_string(pairs: &[(&str, Option<String>)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter_map(|(name, value)| {
            value
                .as_ref()
                .map(|value| format!("{name}={}", query_escape(value)))
        })
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

async fn asset_command(access: Access, command: &AssetCommand) -> Result<()> {
    match command {
        AssetCommand::Show { agent, output } => {
            let view: AssetView = access
                .read(
                    |admin| admin.asset(agent),
                    || format!("/api/v1/agents/{}/assets", query_escape(agent)),
                )
                .await?;
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&view)?),
                Output::Table | Output::Csv => {
                    let mut rows = vec![
                        ("agent", view.agent_id.clone()),
                        ("hostname", view.hostname.clone()),
                        ("division", view.division_path.clone()),
                        ("os", view.os.pretty_name.clone()),
                        ("kernel", view.os.kernel.clone()),
                        ("arch", view.os.arch.clone()),
                        (
                            "cpu",
                            format!(
                                "{} ({} threads)",
                                view.hardware.machine.cpu_model, view.hardware.machine.cpu_threads
                            ),
                        ),
                        (
                            "memory",
                            format!("{} MiB", view.hardware.machine.memory_bytes >> 20),
                        ),
                        (
                            "disks",
                            view.hardware
                                .disks
                                .iter()
                                .map(|d| format!("{} {} GiB", d.name, d.size_bytes >> 30))
                                .collect::<Vec<_>>()
                                .join(", "),
                        ),
                        (
                            "nics",
                            view.hardware
                                .nics
                                .iter()
                                .map(|n| format!("{} {} {}", n.name, n.mac, n.addresses.join(" ")))
                                .collect::<Vec<_>>()
                                .join("; "),
                        ),
                        ("packages", view.packages.len().to_string()),
                        (
                            "listening",
                            view.listening
                                .iter()
                                .map(|l| {
                                    format!("{}/{}:{}({})", l.proto, l.address, l.port, l.process)
                                })
                                .collect::<Vec<_>>()
                                .join(" "),
                        ),
                        ("users", view.users.len().to_string()),
                        ("services", view.services.len().to_string()),
                        ("taken", view.taken.clone()),
                    ];
                    if view.stale {
                        rows.push(("stale", "true (full snapshot requested)".into()));
                    }
                    print_rows(*output, &rows, &["field", "value"], |(field, value)| {
                        vec![field.to_string(), value.clone()]
                    })?;
                }
            }
            Ok(())
        }
        AssetCommand::Changes {
            since,
            division,
            agent,
            section,
            limit,
            output,
        } => {
            let query = ChangesQuery {
                since: since.clone(),
                division: division.clone(),
                agent: agent.clone(),
                section: section.clone(),
                limit: Some(*limit),
            };
            let changes: Vec<ChangeView> = access
                .read(
                    |admin| admin.asset_changes(&query),
                    || {
                        format!(
                            "/api/v1/assets/changes{}",
                            query_string(&[
                                ("since", since.clone()),
                                ("division", division.clone()),
                                ("agent", agent.clone()),
                                ("section", section.clone()),
                                ("limit", Some(limit.to_string())),
                            ])
                        )
                    },
                )
                .await?;
            print_rows(
                *output,
                &changes,
                &[
                    "time", "agent", "hostname", "section", "op", "key", "change",
                ],
                |change| {
                    vec![
                        change.time.clone(),
                        change.agent_id.clone(),
                        change.hostname.clone(),
                        change.section.clone(),
                        change.op.clone(),
                        change.key.clone(),
                        change.summary(),
                    ]
                },
            )
        }
        AssetCommand::Find {
            package,
            version_below,
            version_at_least,
            port,
            os,
            division,
            online,
            output,
        } => {
            let query = FindQuery {
                package: package.clone(),
                version_below: version_below.clone(),
                version_at_least: version_at_least.clone(),
                port: *port,
                os: os.clone(),
                division: division.clone(),
                online: *online,
            };
            let rows: Vec<FindRow> = access
                .read(
                    |admin| admin.asset_find(&query),
                    || {
                        format!(
                            "/api/v1/assets/find{}",
                            query_string(&[
                                ("package", package.clone()),
                                ("version_below", version_below.clone()),
                                ("version_at_least", version_at_least.clone()),
                                ("port", port.map(|port| port.to_string())),
                                ("os", os.clone()),
                                ("division", division.clone()),
                                ("online", online.map(|online| online.to_string())),
                            ])
                        )
                    },
                )
                .await?;
            print_rows(
                *output,
                &rows,
                &[
                    "agent",
                    "hostname",
                    "online",
                    "os",
                    "package",
                    "version",
                    "listening",
                    "division",
                ],
                |row| {
                    vec![
                        row.agent_id.clone(),
                        row.hostname.clone(),
                        row.online.to_string(),
                        row.os.clone(),
                        row.package
                            .as_ref()
                            .map(|p| p.name.clone())
                            .unwrap_or_default(),
                        row.package
                            .as_ref()
                            .map(|p| p.version.clone())
                            .unwrap_or_default(),
                        row.listening
                            .iter()
                            .map(|l| format!("{}/{}:{}", l.proto, l.address, l.port))
                            .collect::<Vec<_>>()
                            .join(" "),
                        row.division_path.clone(),
                    ]
                },
            )
        }
    }
}

async fn posture_command(access: Access, command: &PostureCommand) -> Result<()> {
    match command {
        PostureCommand::Show { agent, output } => {
            let view: PostureView = access
                .read(
                    |admin| admin.posture(agent),
                    || format!("/api/v1/agents/{}/posture", query_escape(agent)),
                )
                .await?;
            if let Output::Json = output {
                println!("{}", serde_json::to_string_pretty(&view)?);
                return Ok(());
            }
            println!(
                "{} {} score {} ({}, taken {})",
                view.agent_id, view.hostname, view.score, view.policy, view.taken
            );
            print_rows(
                *output,
                &view.results,
                &["id", "severity", "result", "title", "evidence"],
                |result| {
                    vec![
                        result.id.clone(),
                        result.severity.clone(),
                        serde_json::to_value(result.result)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_owned))
                            .unwrap_or_default(),
                        result.title.clone(),
                        result.evidence.first().cloned().unwrap_or_default(),
                    ]
                },
            )
        }
        PostureCommand::Failing {
            division,
            severity,
            output,
        } => {
            let rows: Vec<FailingRow> = match &access {
                Access::Local { admin, .. } => {
                    admin.posture_failing(division.as_deref(), severity.as_deref())?
                }
                Access::Remote(client) => {
                    client
                        .get(&format!(
                            "/api/v1/posture/failing{}",
                            query_string(&[
                                ("division", division.clone()),
                                ("severity", severity.clone())
                            ])
                        ))
                        .await?
                }
            };
            print_rows(
                *output,
                &rows,
                &[
                    "severity", "id", "agent", "hostname", "title", "evidence", "division",
                ],
                |row| {
                    vec![
                        row.severity.clone(),
                        row.id.clone(),
                        row.agent_id.clone(),
                        row.hostname.clone(),
                        row.title.clone(),
                        row.evidence.first().cloned().unwrap_or_default(),
                        row.division_path.clone(),
                    ]
                },
            )
        }
        PostureCommand::Findings {
            since,
            division,
            agent,
            severity,
            limit,
            output,
        } => {
            let query = FindingsQuery {
                since: since.clone(),
                division: division.clone(),
                agent: agent.clone(),
                severity: severity.clone(),
                limit: Some(*limit),
            };
            let rows: Vec<FindingView> = access
                .read(
                    |admin| admin.findings(&query),
                    || {
                        format!(
                            "/api/v1/posture/findings{}",
                            query_string(&[
                                ("since", since.clone()),
                                ("division", division.clone()),
                                ("agent", agent.clone()),
                                ("severity", severity.clone()),
                                ("limit", Some(limit.to_string())),
                            ])
                        )
                    },
                )
                .await?;
            print_rows(
                *output,
                &rows,
                &[
                    "time", "severity", "kind", "agent", "hostname", "title", "evidence",
                ],
                |row| {
                    vec![
                        row.time.clone(),
                        row.severity.clone(),
                        row.kind.clone(),
                        row.agent_id.clone(),
                        row.hostname.clone(),
                        row.title.clone(),
                        row.evidence.join("; "),
                    ]
                },
            )
        }
        PostureCommand::Divisions { division, output } => {
            let rows: Vec<DivisionPostureRow> = access
                .read(
                    |admin| admin.posture_divisions(division.as_deref()),
                    || {
                        format!(
                            "/api/v1/posture/divisions{}",
                            query_string(&[("division", division.clone())])
                        )
                    },
                )
                .await?;
            print_rows(
                *output,
                &rows,
                &["division", "name", "hosts", "score", "min", "failing_high"],
                |row| {
                    vec![
                        row.division.clone(),
                        row.name.clone(),
                        row.hosts.to_string(),
                        row.score
                            .map(|s| format!("{s:.1}"))
                            .unwrap_or_else(|| "-".into()),
                        row.min_score
                            .map(|s| s.to_string())
                            .unwrap_or_else(|| "-".into()),
                        row.failing_high.to_string(),
                    ]
                },
            )
        }
    }
}

async fn probe_command(access: Access, command: &ProbeCommand) -> Result<()> {
    let view: ProbeSetView = match (command, &access) {
        (ProbeCommand::List { agent }, Access::Local { admin, .. }) => admin.probes(agent)?,
        (ProbeCommand::List { agent }, Access::Remote(client)) => {
            client
                .get(&format!("/api/v1/agents/{}/probes", query_escape(agent)))
                .await?
        }
        (_, Access::Local { .. }) => {
            bail!(
                "pushing probes needs a running control plane (`bagui-cp run`), whose config holds the allowed ranges"
            )
        }
        (
            ProbeCommand::Push {
                agent,
                name,
                kind,
                target,
                interval,
                timeout,
            },
            Access::Remote(client),
        ) => {
            let request = ProbeRequest {
                name: name.clone(),
                kind: kind.clone(),
                target: target.clone(),
                interval: Some(interval.clone()),
                timeout: Some(timeout.clone()),
            };
            client
                .post(
                    &format!("/api/v1/agents/{}/probes", query_escape(agent)),
                    &request,
                )
                .await?
        }
        (ProbeCommand::Remove { agent, name }, Access::Remote(client)) => {
            client
                .delete(&format!(
                    "/api/v1/agents/{}/probes/{}",
                    query_escape(agent),
                    query_escape(name)
                ))
                .await?
        }
    };
    print_rows(
        Output::Table,
        &view.probes,
        &["name", "kind", "target", "interval", "timeout"],
        |probe| {
            vec![
                probe.name.clone(),
                probe.kind.clone(),
                probe.target.clone(),
                format!("{}s", probe.interval_ms as f64 / 1000.0),
                format!("{}s", probe.timeout_ms as f64 / 1000.0),
            ]
        },
    )?;
    println!(
        "{}",
        if view.delivered {
            "delivered to the agent"
        } else {
            "waiting for the agent to confirm (sent at its next session if offline)"
        }
    );
    Ok(())
}

async fn health_command(access: Access, command: &HealthCommand) -> Result<()> {
    match command {
        HealthCommand::Show { agent, output } => {
            let view: HealthView = access
                .read(
                    |admin| admin.health(agent),
                    || format!("/api/v1/agents/{}/health", query_escape(agent)),
                )
                .await?;
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&view)?),
                _ => {
                    print_rows(
                        *output,
                        &view.checks,
                        &["check", "state", "output", "since", "perfdata"],
                        |check| {
                            vec![
                                check.name.clone(),
                                check.state.clone(),
                                check.result.output.clone(),
                                check.since.clone(),
                                check
                                    .result
                                    .perfdata
                                    .iter()
                                    .map(|p| {
                                        format!(
                                            "{}={}{}",
                                            p.label,
                                            p.value
                                                .map(|v| v.to_string())
                                                .unwrap_or_else(|| "U".into()),
                                            p.uom
                                        )
                                    })
                                    .collect::<Vec<_>>()
                                    .join(" "),
                            ]
                        },
                    )?;
                    println!(
                        "{} samples taken {}",
                        view.samples.len(),
                        view.taken.as_deref().unwrap_or("never")
                    );
                }
            }
            Ok(())
        }
    }
}

/// The store, opened directly (the audit verbs need neither the CA nor an API).
fn local_store(cli: &Cli) -> Result<Option<Store>> {
    if cli.api.is_some() {
        return Ok(None);
    }
    let data_dir = DataDir::new(&cli.data_dir);
    data_dir.deployment()?;
    match Store::open(&data_dir.store_path()) {
        Ok(store) => Ok(Some(store)),
        Err(StoreError::Locked { .. }) => Ok(None),
        Err(error) => Err(error.into()),
    }
}

async fn audit_command(cli: &Cli, command: &AuditCommand) -> Result<()> {
    match command {
        AuditCommand::Verify { pubkey } => {
            let Some(store) = local_store(cli)? else {
                bail!("stop the control plane (or copy its store) to verify the audit log offline")
            };
            let data_dir = DataDir::new(&cli.data_dir);
            let key = match pubkey {
                Some(path) => {
                    let text = std::fs::read_to_string(path)
                        .with_context(|| format!("reading {}", path.display()))?;
                    audit::parse_public_key(&text)
                        .with_context(|| format!("reading {}", path.display()))?
                }
                None => data_dir.audit_verifying_key()?,
            };
            let summary =
                audit::verify_signed(&store, &key).context("the audit log does not verify")?;
            println!(
                "audit log intact: {} entries, {} signed checkpoints (the last covers entry {}), {} entries after it",
                summary.entries,
                summary.checkpoints,
                summary.last_checkpoint_covers,
                summary.unsigned_tail
            );
            println!(
                "checkpoint key {}",
                bagui_protocol::digest::hex(&key.to_sec1_bytes())
            );
            Ok(())
        }
        AuditCommand::List { after, limit } => {
            let entries: Vec<AuditEntry> = match local_store(cli)? {
                Some(store) => store.audit_entries(*after, (*limit).min(10_000))?,
                None => match access(cli)? {
                    Access::Local { store, .. } => {
                        store.audit_entries(*after, (*limit).min(10_000))?
                    }
                    Access::Remote(client) => {
                        client
                            .get(&format!("/api/v1/audit?after={after}&limit={limit}"))
                            .await?
                    }
                },
            };
            print_rows(
                Output::Table,
                &entries,
                &["seq", "time", "actor", "action", "target", "detail"],
                |entry| {
                    vec![
                        entry.seq.to_string(),
                        crate::clock::format_rfc3339(entry.time_ms),
                        entry.actor.clone(),
                        entry.action.clone(),
                        entry.target.clone(),
                        entry.detail.clone(),
                    ]
                },
            )
        }
    }
}

fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

/// Prints rows as an aligned table, JSON (the full objects) or CSV.
pub(crate) fn print_rows<T: Serialize>(
    output: Output,
    rows: &[T],
    header: &[&str],
    cells: impl Fn(&T) -> Vec<String>,
) -> Result<()> {
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(rows)?),
        Output::Csv => {
            println!("{}", header.join(","));
            for row in rows {
                println!(
                    "{}",
                    cells(row)
                        .iter()
                        .map(|cell| csv_field(cell))
                        .collect::<Vec<_>>()
                        .join(",")
                );
            }
        }
        Output::Table => {
            let table: Vec<Vec<String>> = rows.iter().map(&cells).collect();
            let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
            for row in &table {
                for (index, cell) in row.iter().enumerate() {
                    widths[index] = widths[index].max(cell.chars().count());
                }
            }
            let line = |cells: Vec<String>| {
                let last = cells.len() - 1;
                cells
                    .into_iter()
                    .enumerate()
                    .map(|(index, cell)| {
                        if index == last {
                            cell
                        } else {
                            format!("{cell:<width$}", width = widths[index])
                        }
                    })
                    .collect::<Vec<_>>()
                    .join("  ")
            };
            println!(
                "{}",
                line(header.iter().map(|h| h.to_uppercase()).collect())
            );
            for row in table {
                println!("{}", line(row));
            }
        }
    }
    Ok(())
}
