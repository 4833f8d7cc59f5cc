//! `bagui-agent`: join a control plane, run, show status.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use bagui_agent::config::AgentConfig;
use bagui_agent::join::{self, JoinOptions};
use bagui_agent::link::LinkExit;
use bagui_agent::state::StateDir;
use bagui_agent::status::{LinkState, Status};
use bagui_agent::{Agent, AgentOptions};
use bagui_plugins::HostRoot;
use bagui_plugins::posture;
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "bagui-agent",
    version,
    about = "Bagui agent: reports assets, health and posture to the control plane over QUIC"
)]
struct Cli {
    /// Where the agent keeps its identity, outbox and status.
    #[arg(
        long,
        global = true,
        env = "BAGUI_STATE_DIR",
        default_value = "/var/lib/bagui-agent"
    )]
    state_dir: PathBuf,
    /// File whose first line is the passphrase the identity keys are encrypted under
    /// (overrides `[identity] key_passphrase_file` of the config).
    #[arg(long, global = true, env = "BAGUI_AGENT_KEY_PASSPHRASE_FILE")]
    key_passphrase_file: Option<PathBuf>,
    /// Log level: error, warn, info, debug or trace.
    #[arg(long, global = true, env = "BAGUI_LOG")]
    log_level: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum Output {
    Table,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Enroll with a control plane (prints the agent id on success).
    Join {
        /// Control plane address, HOST:PORT.
        #[arg(long)]
        server: String,
        /// Join token `id.secret` (visible in `ps`; prefer --token-file or BAGUI_JOIN_TOKEN).
        #[arg(
            long,
            env = "BAGUI_JOIN_TOKEN",
            hide_env_values = true,
            conflicts_with = "token_file"
        )]
        token: Option<String>,
        /// File holding the join token.
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// SM3 digest of the control plane's CA certificate, `sm3:<hex>` (printed by `token create`).
        #[arg(long)]
        ca_hash: String,
        /// Distinguishes several agents on one host (containers, tests).
        #[arg(long, default_value = "")]
        instance_id: String,
        /// Join a division below the token's own (for example a village under a township token).
        #[arg(long)]
        division: Option<String>,
        /// Agent configuration file: its `[identity]` section says whether the keys are
        /// written encrypted (give the same file to `run`).
        #[arg(long)]
        config: Option<PathBuf>,
        /// The deployment's crypto profile, `standard` or `shangmi` (the join command
        /// `bagui-cp token create` prints says which).
        #[arg(long, default_value = "standard")]
        crypto_profile: bagui_protocol::CryptoProfile,
    },
    /// Run: connect, report, renew, reconnect (until SIGTERM or SIGINT).
    Run {
        /// Agent configuration file (see deploy/agent.toml).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Show the running agent's link and outbox.
    Status {
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Run the security baseline (MLPS 2.0 level 3) once, locally, without a control plane.
    /// Exits 2 when a high or critical check fails, 0 otherwise.
    Check {
        /// Root of the system to check (a mounted image or a container's root).
        #[arg(long, default_value = "/")]
        root: PathBuf,
        /// Policy file (TOML) instead of the built-in baseline.
        #[arg(long)]
        policy: Option<PathBuf>,
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
}

fn init_logging(level: &str) {
    let level: tracing::Level = level.parse().unwrap_or(tracing::Level::INFO);
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: starting the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode> {
    let state_dir = StateDir::new(&cli.state_dir);
    // Only `join` and `run` touch the keys: `status` and `check` need no passphrase.
    let with_passphrase = |state_dir: StateDir| match &cli.key_passphrase_file {
        Some(path) => state_dir.with_key_passphrase_file(path),
        None => Ok(state_dir),
    };
    match cli.command {
        Command::Join {
            server,
            token,
            token_file,
            ca_hash,
            instance_id,
            division,
            config,
            crypto_profile,
        } => {
            init_logging(cli.log_level.as_deref().unwrap_or("warn"));
            let mut state_dir = with_passphrase(state_dir)?;
            if let Some(path) = config {
                let config = AgentConfig::load(&path)?;
                if let Some(file) = &config.identity.key_passphrase_file
                    && !state_dir.has_key_passphrase()
                {
                    state_dir = state_dir.with_key_passphrase_file(file)?;
                }
            }
            let token = match (token, token_file) {
                (Some(token), _) => token,
                (None, Some(path)) => std::fs::read_to_string(&path)
                    .with_context(|| format!("reading join token from {}", path.display()))?
                    .trim()
                    .to_owned(),
                (None, None) => {
                    bail!("a join token is needed: --token-file FILE, BAGUI_JOIN_TOKEN or --token")
                }
            };
            let state = join::join(&JoinOptions {
                server,
                token,
                ca_hash,
                state_dir: state_dir.clone(),
                instance_id,
                division,
                host_root: HostRoot::default(),
                crypto_profile,
            })
            .await?;
            println!(
                "joined as {} in {} ({}), role {}",
                state.agent_id, state.division_path, state.division, state.role
            );
            if state.possible_clone {
                println!(
                    "note: this machine-id was already enrolled; the control plane flagged this agent as a possible clone"
                );
            }
            println!(
                "state in {}; start with: bagui-agent run --state-dir {}",
                state_dir.root().display(),
                state_dir.root().display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Run { config } => {
            let config = match config {
                Some(path) => AgentConfig::load(&path)?,
                None => AgentConfig::default(),
            };
            init_logging(cli.log_level.as_deref().unwrap_or(&config.log.level));
            let mut agent = Agent::start(AgentOptions {
                state_dir: with_passphrase(state_dir)?,
                config,
                host_root: HostRoot::default(),
            })
            .await?;
            let mut terminate =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .context("installing the SIGTERM handler")?;
            let exit = tokio::select! {
                exit = agent.wait() => Some(exit),
                _ = tokio::signal::ctrl_c() => None,
                _ = terminate.recv() => None,
            };
            agent.shutdown().await?;
            match exit {
                Some(LinkExit::Revoked(reason)) => {
                    eprintln!("error: the control plane refuses this agent: {reason}");
                    Ok(ExitCode::from(3))
                }
                Some(LinkExit::RejoinRequired(reason)) => {
                    eprintln!("error: this agent must join again: {reason}");
                    Ok(ExitCode::from(3))
                }
                Some(LinkExit::Shutdown) | None => Ok(ExitCode::SUCCESS),
            }
        }
        Command::Status { output } => {
            let path = state_dir.status_path();
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {} (has the agent run?)", path.display()))?;
            let mut status: Status = serde_json::from_str(&text)
                .with_context(|| format!("parsing {}", path.display()))?;
            let fresh = join::now_ms().saturating_sub(status.updated_ms) < 10_000
                && std::path::Path::new(&format!("/proc/{}", status.pid)).exists();
            if !fresh && status.link != LinkState::Revoked {
                status.link = LinkState::Down;
                status
                    .last_error
                    .get_or_insert_with(|| "the agent is not running".into());
            }
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&status)?),
                Output::Table => print_status(&status),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Check {
            root,
            policy,
            output,
        } => run_check(&root, policy.as_deref(), output),
    }
}

/// `bagui-agent check`: evaluates the baseline and prints every result.
fn run_check(
    root: &std::path::Path,
    policy: Option<&std::path::Path>,
    output: Output,
) -> Result<ExitCode> {
    let policy = match policy {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            posture::load_policy(&text).with_context(|| format!("loading {}", path.display()))?
        }
        None => posture::builtin_policy(),
    };
    let report = posture::evaluate(&policy, &HostRoot::new(root), join::now_ms());
    match output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "policy": report.policy,
                "score": report.score,
                "results": report.results,
            }))?
        ),
        Output::Table => print_check(&report),
    }
    Ok(if posture::has_serious_failure(&report) {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

fn print_check(report: &bagui_protocol::assets::PostureReport) {
    println!(
        "{:<11} {:<8} {:<14} {:<60} EVIDENCE",
        "ID", "SEVERITY", "RESULT", "TITLE"
    );
    for result in &report.results {
        let verdict = serde_json::to_value(result.result)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        println!(
            "{:<11} {:<8} {:<14} {:<60} {}",
            result.id,
            result.severity,
            verdict,
            result.title,
            result.evidence.first().map_or("-", String::as_str)
        );
    }
    println!("score {} ({})", report.score, report.policy);
}

fn print_status(status: &Status) {
    let link = serde_json::to_value(status.link)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let rows = [
        ("agent", status.agent_id.clone()),
        (
            "division",
            format!("{} {}", status.division, status.division_path),
        ),
        ("role", status.role.clone()),
        ("server", status.server.clone()),
        ("link", link),
        (
            "rtt",
            status
                .rtt_ms
                .map(|rtt| format!("{rtt:.1} ms"))
                .unwrap_or_else(|| "-".into()),
        ),
        (
            "outbox",
            format!(
                "{} records, {} bytes, {} dropped",
                status.outbox_records,
                status.outbox_bytes,
                status.outbox_dropped.total()
            ),
        ),
        ("last acked seq", status.last_acked_seq.to_string()),
        ("tls", format!("{} / {}", status.tls_suite, status.kx_group)),
        ("certificate expires", status.certificate_expires.clone()),
        (
            "last error",
            status.last_error.clone().unwrap_or_else(|| "-".into()),
        ),
    ];
    for (name, value) in rows {
        println!("{name:<20} {value}");
    }
}
