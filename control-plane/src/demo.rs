//! `bagui-cp demo`: a throw-away deployment on loopback — a control plane and one agent
//! joined to a village (新竹社区, Qingxiu district, Nanning) — in one process, stopped with Ctrl-C.

use std::sync::Arc;

use anyhow::{Context, Result};
use bagui_agent::config::AgentConfig;
use bagui_agent::join::JoinOptions;
use bagui_agent::state::StateDir;
use bagui_agent::{Agent, AgentOptions};
use bagui_plugins::HostRoot;

use crate::admin::CreateToken;
use crate::clock::SystemClock;
use crate::config::ControlPlaneConfig;
use crate::datadir::DataDir;
use crate::server::ControlPlane;

/// The village the demo agent joins.
pub const DEMO_DIVISION: &str = "450103001005";

pub async fn run(http_port: u16, keep: bool) -> Result<()> {
    crate::cli::init_logging("warn");
    let root = std::env::temp_dir().join(format!("bagui-demo-{}", std::process::id()));
    let data_dir = DataDir::new(root.join("control-plane"));
    let quic_port = std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|socket| socket.local_addr())
        .context("finding a free UDP port")?
        .port();
    let advertise = format!("127.0.0.1:{quic_port}");
    data_dir.init(&advertise, &["localhost".into()], &SystemClock)?;

    let mut config = ControlPlaneConfig::default();
    config.server.quic_listen = advertise.parse()?;
    config.server.http_listen = format!("127.0.0.1:{http_port}").parse()?;
    if std::net::TcpListener::bind(config.server.http_listen).is_err() {
        println!("port {http_port} is busy; the API will use a free port");
        config.server.http_listen = "127.0.0.1:0".parse()?;
    }
    let control_plane =
        ControlPlane::start(data_dir.clone(), config, Arc::new(SystemClock)).await?;

    let token = control_plane.admin.create_token(
        "admin",
        &CreateToken {
            division: DEMO_DIVISION.into(),
            ttl: "1h".into(),
            uses: 1,
            role: "terminal".into(),
            description: "bagui-cp demo".into(),
        },
    )?;
    let state_dir = StateDir::new(root.join("agent"));
    let joined = bagui_agent::join::join(&JoinOptions {
        server: advertise.clone(),
        token: token.token.clone(),
        ca_hash: control_plane.admin.ca_fingerprint(),
        state_dir: state_dir.clone(),
        instance_id: "demo".into(),
        division: None,
        host_root: HostRoot::default(),
        crypto_profile: control_plane.admin.crypto_profile(),
    })
    .await
    .context("joining the demo agent")?;
    let agent = Agent::start(AgentOptions {
        state_dir: state_dir.clone(),
        config: AgentConfig::default(),
        host_root: HostRoot::default(),
    })
    .await?;

    let token_path = data_dir.admin_token_path();
    println!();
    println!("Bagui demo is running (Ctrl-C to stop)");
    println!(
        "  control plane  QUIC udp://{}   API {}",
        control_plane.quic_addr, control_plane.api_url
    );
    println!(
        "  agent          {} in {}",
        joined.agent_id, joined.division_path
    );
    println!("  data           {}", root.display());
    println!();
    println!("Look around:");
    println!(
        "  bagui-cp --data-dir {} agent list",
        data_dir.root().display()
    );
    println!(
        "  bagui-agent --state-dir {} status",
        state_dir.root().display()
    );
    println!(
        "  curl -s -H \"Authorization: Bearer $(cat {})\" {}/api/v1/agents",
        token_path.display(),
        control_plane.api_url
    );
    println!();

    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    println!("stopping");
    agent.shutdown().await?;
    control_plane.shutdown().await?;
    if keep {
        println!("kept {}", root.display());
    } else {
        std::fs::remove_dir_all(&root).with_context(|| format!("removing {}", root.display()))?;
    }
    Ok(())
}
