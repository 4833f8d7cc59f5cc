//! `bagui-bench`: the foundation's benchmarks, on loopback, against the release binaries.
//!
//!     cargo build --release --workspace
//!     target/release/bagui-bench [--agents 100] [--seconds 15] [--write BENCHMARKS.md]
//!
//! Measures: binary sizes; time from `bagui-agent run` to its first acknowledged report;
//! agent RSS and CPU with an idle connection; time for an agent to reconnect after the control
//! plane is killed (SIGKILL) and restarted; and sustained ingest (reports/s acknowledged after
//! durable commit, ack latency, control-plane RSS and CPU) with many mTLS sessions.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bagui_agent::state::StateDir;
use bagui_control_plane::admin::CreateToken;
use bagui_control_plane::clock::SystemClock;
use bagui_control_plane::datadir::DataDir;
use bagui_protocol::{AgentMessage, Decoded, FrameDecoder, Hello, Lane, Report, ServerMessage};
use bytes::BytesMut;
use tokio::sync::Semaphore;

struct Args {
    /// Sections to run: `foundation`, `scale`.
    sections: Vec<String>,
    /// Measured seconds per fleet run in the scale section.
    scale_seconds: u64,
    /// Fleet sizes tried for the ceiling, ascending.
    ceiling: Vec<usize>,
    agents: usize,
    seconds: u64,
    /// Total reports/s of the paced run.
    rate: u64,
    write: Option<PathBuf>,
}

fn args() -> Result<Args> {
    let mut parsed = Args {
        sections: vec!["foundation".into(), "scale".into()],
        scale_seconds: 120,
        ceiling: vec![17_965, 35_000, 50_000, 70_000],
        agents: 100,
        seconds: 15,
        rate: 5000,
        write: None,
    };
    let mut iter = std::env::args().skip(1);
    while let Some(flag) = iter.next() {
        let value = iter
            .next()
            .with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--agents" => parsed.agents = value.parse()?,
            "--seconds" => parsed.seconds = value.parse::<u64>()?.clamp(1, 600),
            "--rate" => parsed.rate = value.parse::<u64>()?.max(1),
            "--sections" => parsed.sections = value.split(',').map(str::to_owned).collect(),
            "--scale-seconds" => parsed.scale_seconds = value.parse::<u64>()?.clamp(10, 3600),
            "--ceiling" => {
                parsed.ceiling = value
                    .split(',')
                    .map(|n| n.trim().parse::<usize>())
                    .collect::<Result<_, _>>()?
            }
            "--write" => parsed.write = Some(value.into()),
            other => {
                bail!("unknown flag {other} (--agents N, --seconds S, --rate R, --write FILE)")
            }
        }
    }
    anyhow::ensure!(
        (1..=5000).contains(&parsed.agents),
        "--agents must be 1..=5000"
    );
    Ok(parsed)
}

fn release_binary(name: &str) -> Result<PathBuf> {
    let path = std::env::current_exe()?
        .parent()
        .context("executable directory")?
        .join(name);
    anyhow::ensure!(
        path.exists(),
        "{} is missing; run `cargo build --release --workspace` first",
        path.display()
    );
    Ok(path)
}

fn proc_status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|text| {
            text.lines().find_map(|line| {
                line.strip_prefix(key)?
                    .strip_prefix(':')?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })
        })
        .unwrap_or(0)
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let ticks = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|text| {
            let fields: Vec<&str> = text.rsplit_once(')')?.1.split_whitespace().collect();
            Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0);
    ticks as f64 / 100.0
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn summary(mut values: Vec<f64>) -> (f64, f64, f64) {
    values.sort_by(|a, b| a.total_cmp(b));
    (
        percentile(&values, 0.0),
        percentile(&values, 0.5),
        percentile(&values, 1.0),
    )
}

struct ControlPlaneProcess {
    child: Child,
}

impl ControlPlaneProcess {
    async fn start(
        binary: &Path,
        data_dir: &DataDir,
        config: &Path,
    ) -> Result<(ControlPlaneProcess, Instant)> {
        let _ = std::fs::remove_file(data_dir.api_info_path());
        let child = Command::new(binary)
            .arg("--data-dir")
            .arg(data_dir.root())
            .args(["run", "--log-level", "warn", "--config"])
            .arg(config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let started = Instant::now();
        while !data_dir.api_info_path().exists() {
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(30),
                "bagui-cp did not become ready"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Ok((ControlPlaneProcess { child }, Instant::now()))
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ControlPlaneProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

fn status_of(state: &StateDir) -> Option<serde_json::Value> {
    serde_json::from_str(&std::fs::read_to_string(state.status_path()).ok()?).ok()
}

async fn wait_status(
    state: &StateDir,
    timeout: Duration,
    condition: impl Fn(&serde_json::Value) -> bool,
) -> Result<Duration> {
    let started = Instant::now();
    loop {
        if status_of(state).is_some_and(|status| condition(&status)) {
            return Ok(started.elapsed());
        }
        anyhow::ensure!(
            started.elapsed() < timeout,
            "agent status condition not met within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn spawn_agent(binary: &Path, state: &StateDir, config: &Path) -> Result<Child> {
    Ok(Command::new(binary)
        .args(["--state-dir"])
        .arg(state.root())
        .args(["--log-level", "warn", "run", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?)
}

struct Load {
    acked: u64,
    elapsed: Duration,
    latencies_ms: Vec<f64>,
    errors: u64,
}

async fn session_load(
    endpoint: quinn::Endpoint,
    server: std::net::SocketAddr,
    state: StateDir,
    agent_id: String,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
    pace: Option<Duration>,
) -> Result<Vec<f64>> {
    let connection = bagui_tests::quic::connect_as(&endpoint, server, &state).await?;
    let (mut send, mut recv) = connection.open_bi().await?;
    let mut buffer = BytesMut::new();
    AgentMessage::from(Hello {
        protocol_version: 1,
        agent_id: agent_id.clone(),
        next_seq: 1,
        ..Default::default()
    })
    .encode(1 << 20, &mut buffer)?;
    send.write_all(&buffer).await?;
    let mut decoder = FrameDecoder::new(1 << 20);
    let window = Arc::new(Semaphore::new(0));
    let sent_at: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();
    let latencies: Arc<Mutex<Vec<f64>>> = Arc::default();
    // Reader: welcome, then acks.
    let reader = {
        let window = window.clone();
        let sent_at = sent_at.clone();
        let latencies = latencies.clone();
        let acked = acked.clone();
        tokio::spawn(async move {
            while let Ok(Some(frame)) = bagui_agent::wire::read_frame(&mut recv, &mut decoder).await
            {
                match ServerMessage::decode(&frame) {
                    Ok(Decoded::Known(ServerMessage::Welcome(welcome))) => {
                        window.add_permits(welcome.max_in_flight as usize)
                    }
                    Ok(Decoded::Known(ServerMessage::Ack(ack))) => {
                        let seqs = ack.seqs(1 << 16).unwrap_or_default();
                        let now = Instant::now();
                        let mut sent = sent_at.lock().unwrap();
                        let mut latencies = latencies.lock().unwrap();
                        for seq in &seqs {
                            if let Some(at) = sent.remove(seq) {
                                latencies.push(now.duration_since(at).as_secs_f64() * 1000.0);
                            }
                        }
                        acked.fetch_add(seqs.len() as u64, Ordering::Relaxed);
                        window.add_permits(seqs.len());
                    }
                    _ => {}
                }
            }
        })
    };
    let body = serde_bytes::ByteBuf::from(vec![0x5a; 300]);
    let mut seq = 0u64;
    // Paced sessions start at a random offset so the fleet does not tick in lockstep.
    let mut ticker = pace.map(|every| {
        let offset = every.mul_f64(rand::random::<f64>());
        tokio::time::interval_at(tokio::time::Instant::now() + offset, every)
    });
    while !stop.load(Ordering::Relaxed) {
        if let Some(ticker) = ticker.as_mut() {
            ticker.tick().await;
        }
        let Ok(permit) = tokio::time::timeout(Duration::from_millis(200), window.acquire()).await
        else {
            continue;
        };
        permit?.forget();
        let mut batch = if pace.is_some() {
            1
        } else {
            1 + window.available_permits().min(63)
        };
        buffer.clear();
        let now = Instant::now();
        {
            let mut sent = sent_at.lock().unwrap();
            while batch > 0 {
                seq += 1;
                sent.insert(seq, now);
                AgentMessage::from(Report {
                    seq,
                    lane: Lane::Metrics,
                    kind: "metrics".into(),
                    created_ms: bagui_agent::join::now_ms(),
                    body: body.clone(),
                })
                .encode(1 << 20, &mut buffer)?;
                batch -= 1;
                if batch > 0 {
                    match window.try_acquire() {
                        Ok(permit) => permit.forget(),
                        Err(_) => break,
                    }
                }
            }
        }
        send.write_all(&buffer).await?;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    connection.close(0u32.into(), b"bench done");
    reader.abort();
    let latencies = latencies.lock().unwrap().clone();
    Ok(latencies)
}

async fn ingest_load(
    server: std::net::SocketAddr,
    identities: Vec<(StateDir, String)>,
    seconds: u64,
    pace: Option<Duration>,
) -> Result<Load> {
    let endpoints: Vec<quinn::Endpoint> = (0..4).map(|_| bagui_tests::quic::endpoint()).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for (index, (state, id)) in identities.into_iter().enumerate() {
        tasks.push(tokio::spawn(session_load(
            endpoints[index % endpoints.len()].clone(),
            server,
            state,
            id,
            stop.clone(),
            acked.clone(),
            pace,
        )));
    }
    // Warm up, then measure a steady window.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let start_acked = acked.load(Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let total = acked.load(Ordering::Relaxed) - start_acked;
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    let mut errors = 0;
    for task in tasks {
        match task.await? {
            Ok(mut values) => latencies.append(&mut values),
            Err(_) => errors += 1,
        }
    }
    Ok(Load {
        acked: total,
        elapsed,
        latencies_ms: latencies,
        errors,
    })
}

/// Writes `text` between this section's markers in `path` (appending the section if absent).
fn write_section(path: &Path, section: &str, text: &str) -> Result<()> {
    let begin = format!("<!-- bagui-bench:{section}:begin -->");
    let end = format!("<!-- bagui-bench:{section}:end -->");
    let existing = std::fs::read_to_string(path).unwrap_or_default();
    let updated = match (existing.find(&begin), existing.find(&end)) {
        (Some(start), Some(stop)) if stop > start => {
            format!("{}{begin}\n{text}{}", &existing[..start], &existing[stop..])
        }
        _ => format!("{existing}\n{begin}\n{text}{end}\n"),
    };
    std::fs::write(path, updated).with_context(|| format!("writing {}", path.display()))
}

fn machine_line(command: &str) -> String {
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
            })
        })
        .unwrap_or_default();
    let memory_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .next()?
                .split_whitespace()
                .nth(1)?
                .parse::<f64>()
                .ok()
        })
        .unwrap_or(0.0)
        / 1048576.0;
    format!(
        "Measured {} on {} cores ({cpu_model}), {memory_gib:.0} GiB, by `{command}`.\n\n",
        bagui_protocol::units::format_rfc3339(bagui_agent::join::now_ms()),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = args()?;
    for section in args.sections.clone() {
        let text = match section.as_str() {
            "foundation" => foundation(&args).await?,
            "scale" => scale(&args).await?,
            other => bail!("unknown section {other:?} (foundation, scale)"),
        };
        print!("{text}");
        if let Some(path) = &args.write {
            write_section(path, &section, &text)?;
            eprintln!("wrote the {section} section of {}", path.display());
        }
    }
    Ok(())
}

async fn foundation(args: &Args) -> Result<String> {
    let control_plane_binary = release_binary("bagui-cp")?;
    let agent_binary = release_binary("bagui-agent")?;
    let mut out = String::new();
    out.push_str(&machine_line(&format!(
        "target/release/bagui-bench --sections foundation --agents {} --seconds {} --rate {}",
        args.agents, args.seconds, args.rate
    )));

    // Binary sizes.
    out.push_str("### Release binaries (stripped, opt-level s, thin LTO, panic=abort)\n\n| binary | size |\n|---|---|\n");
    for binary in [&agent_binary, &control_plane_binary] {
        let size = std::fs::metadata(binary)?.len();
        out.push_str(&format!(
            "| {} | {:.2} MiB ({size} bytes) |\n",
            binary.file_name().unwrap_or_default().to_string_lossy(),
            size as f64 / 1048576.0
        ));
    }

    // Deployment and control plane.
    let temporary = tempfile::tempdir()?;
    let data_dir = DataDir::new(temporary.path().join("cp"));
    let quic_port = bagui_tests::free_udp_port();
    data_dir.init(&format!("127.0.0.1:{quic_port}"), &[], &SystemClock)?;
    let cp_config = temporary.path().join("cp.toml");
    std::fs::write(
        &cp_config,
        format!(
            "[server]\nquic_listen = \"127.0.0.1:{quic_port}\"\nhttp_listen = \"127.0.0.1:0\"\n[admission]\nrate_per_second = 2000\nburst = 2000\n"
        ),
    )?;
    let (mut control_plane, _) =
        ControlPlaneProcess::start(&control_plane_binary, &data_dir, &cp_config).await?;
    let info = data_dir.api_info()?;
    let client =
        bagui_control_plane::client::ApiClient::new(&info.url, &data_dir.admin_token()?, None)?;
    let ca_hash = data_dir.ca()?.fingerprint();
    let server = format!("127.0.0.1:{quic_port}");
    let token: bagui_control_plane::admin::TokenCreated = client
        .post(
            "/api/v1/tokens",
            &CreateToken {
                division: "450103001".into(),
                ttl: "1h".into(),
                uses: args.agents as u32 + 1,
                role: "terminal".into(),
                description: "bench".into(),
            },
        )
        .await?;

    // One real agent process.
    let agent_state = StateDir::new(temporary.path().join("agent"));
    bagui_tests::join_with(
        server.clone(),
        ca_hash.clone(),
        &agent_state,
        &token.token,
        "bench-agent",
        Some("450103001005".into()),
    )
    .await?;
    let agent_config = temporary.path().join("agent.toml");
    std::fs::write(
        &agent_config,
        "[status]\ninterval = \"5ms\"\n[link]\nbackoff_min = \"200ms\"\n",
    )?;
    let mut first_ack = Vec::new();
    for _ in 0..5 {
        let before = status_of(&agent_state)
            .and_then(|s| s["last_acked_seq"].as_u64())
            .unwrap_or(0);
        let started = Instant::now();
        let mut child = spawn_agent(&agent_binary, &agent_state, &agent_config)?;
        wait_status(&agent_state, Duration::from_secs(30), |s| {
            s["pid"].as_u64() == Some(u64::from(child.id()))
                && s["last_acked_seq"].as_u64().unwrap_or(0) > before
        })
        .await?;
        first_ack.push(started.elapsed().as_secs_f64() * 1000.0);
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let _ = child.wait();
    }
    let (low, median, high) = summary(first_ack);
    out.push_str(&format!(
        "\n### Agent: from `bagui-agent run` to the first acknowledged report\n\nProcess start, QUIC + mTLS handshake, hello/welcome, host-facts report, durable commit, ack (5 runs).\n\n| min | median | max |\n|---|---|---|\n| {low:.1} ms | {median:.1} ms | {high:.1} ms |\n"
    ));

    // Idle agent footprint.
    std::fs::write(&agent_config, "[link]\nbackoff_min = \"200ms\"\n")?;
    let mut agent = spawn_agent(&agent_binary, &agent_state, &agent_config)?;
    wait_status(&agent_state, Duration::from_secs(30), |s| {
        s["link"] == "connected"
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let cpu_before = cpu_seconds(agent.id());
    let idle = Duration::from_secs(30);
    tokio::time::sleep(idle).await;
    let cpu_idle = cpu_seconds(agent.id()) - cpu_before;
    let rss = proc_status_kib(agent.id(), "VmRSS");
    let hwm = proc_status_kib(agent.id(), "VmHWM");
    out.push_str(&format!(
        "\n### Agent with an idle connection (heartbeat 5 s, metrics every 15 s)\n\n| RSS | peak RSS | CPU over {}s idle |\n|---|---|---|\n| {:.1} MiB | {:.1} MiB | {:.2} s ({:.3} % of one core) |\n",
        idle.as_secs(),
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0,
        cpu_idle,
        cpu_idle / idle.as_secs_f64() * 100.0
    ));

    // Reconnect after a control-plane kill -9 and restart.
    let mut reconnects = Vec::new();
    for _ in 0..5 {
        control_plane.kill();
        wait_status(&agent_state, Duration::from_secs(60), |s| {
            s["link"] != "connected"
        })
        .await?;
        let (restarted, ready_at) =
            ControlPlaneProcess::start(&control_plane_binary, &data_dir, &cp_config).await?;
        control_plane = restarted;
        wait_status(&agent_state, Duration::from_secs(60), |s| {
            s["link"] == "connected"
        })
        .await?;
        reconnects.push(ready_at.elapsed().as_secs_f64() * 1000.0);
    }
    let (low, median, high) = summary(reconnects);
    out.push_str(&format!(
        "\n### Agent reconnect after the control plane is killed (SIGKILL) and restarted\n\nFrom the restarted control plane being ready to the agent's session being open again (5 runs). The agent learns of the restart from a QUIC stateless reset on its next packet (heartbeat 5 s, keep-alive 10 s), so the wait depends on where in that cycle the restart falls.\n\n| min | median | max |\n|---|---|---|\n| {low:.0} ms | {median:.0} ms | {high:.0} ms |\n"
    ));
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(agent.id().to_string())
        .status();
    let _ = agent.wait();

    // Ingest: many mTLS sessions streaming reports.
    let mut identities = Vec::new();
    for index in 0..args.agents {
        let state = StateDir::new(temporary.path().join(format!("load-{index}")));
        let joined = bagui_tests::join_with(
            server.clone(),
            ca_hash.clone(),
            &state,
            &token.token,
            &format!("load-{index}"),
            None,
        )
        .await?;
        identities.push((state, joined.agent_id));
    }
    out.push_str(&format!(
        "\n### Ingest: reports acknowledged after durable commit\n\n{} agents, each an mTLS QUIC session over loopback (4 client sockets, 300-byte report bodies), against `bagui-cp run` (release) on the same 2 cores; {} s measured after a 2 s warm-up. The load generator shares the CPU with the control plane. *Paced*: every agent sends at an even share of the given total rate (open loop, so latency is the ingest's own). *Saturated*: every agent keeps its whole window of 256 unacknowledged reports full (closed loop, so latency is queueing: window × agents ÷ throughput).\n\n| load | reports/s acked | ack p50 | ack p99 | ack max | control-plane CPU | control-plane RSS (peak) | sessions failed |\n|---|---|---|---|---|---|---|---|\n",
        args.agents, args.seconds
    ));
    let address: std::net::SocketAddr = format!("127.0.0.1:{quic_port}").parse()?;
    let per_agent = Duration::from_secs_f64(args.agents as f64 / args.rate as f64);
    for (label, pace) in [
        (format!("paced {} /s", args.rate), Some(per_agent)),
        ("saturated".to_owned(), None),
    ] {
        let cpu_before = cpu_seconds(control_plane.pid());
        let measured_at = Instant::now();
        let load = ingest_load(address, identities.clone(), args.seconds, pace).await?;
        let cp_cpu = (cpu_seconds(control_plane.pid()) - cpu_before)
            / measured_at.elapsed().as_secs_f64()
            * 100.0;
        let cp_rss = proc_status_kib(control_plane.pid(), "VmRSS");
        let cp_hwm = proc_status_kib(control_plane.pid(), "VmHWM");
        let mut latencies = load.latencies_ms;
        latencies.sort_by(|a, b| a.total_cmp(b));
        out.push_str(&format!(
            "| {label} | {:.0} | {:.1} ms | {:.1} ms | {:.1} ms | {:.0} % of one core | {:.1} MiB ({:.1} MiB) | {} |\n",
            load.acked as f64 / load.elapsed.as_secs_f64(),
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.99),
            percentile(&latencies, 1.0),
            cp_cpu,
            cp_rss as f64 / 1024.0,
            cp_hwm as f64 / 1024.0,
            load.errors
        ));
    }
    drop(control_plane);
    Ok(out)
}

/// UDP receive drops (from /proc/net/udp): (the socket on `port`, every other socket).
fn udp_drops(port: u16) -> (u64, u64) {
    let table = std::fs::read_to_string("/proc/net/udp").unwrap_or_default();
    let mut ours = 0;
    let mut others = 0;
    for line in table.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(local), Some(drops)) = (fields.get(1), fields.last()) else {
            continue;
        };
        let drops: u64 = drops.parse().unwrap_or(0);
        let local_port = local
            .rsplit(':')
            .next()
            .and_then(|hex| u16::from_str_radix(hex, 16).ok());
        if local_port == Some(port) {
            ours += drops;
        } else {
            others += drops;
        }
    }
    (ours, others)
}

/// One fleet's steady-state figures.
struct FleetFigures {
    agents: usize,
    all_connected_after: Option<Duration>,
    reports_per_second: f64,
    samples_per_second: f64,
    ack_ms: (f64, f64, f64),
    cp_cpu_percent: f64,
    cp_rss_kib: u64,
    errors: u64,
}

/// Starts a fleet, waits until every agent is connected (or `connect_limit` passes), then
/// measures `measure`. Returns the figures and the still-running fleet.
async fn run_fleet(
    cp_pid: u32,
    target: &bagui_tests::sim::Target,
    identities: Vec<bagui_tests::sim::SimIdentity>,
    measure: Duration,
) -> Result<(FleetFigures, bagui_tests::sim::Fleet)> {
    use std::sync::atomic::Ordering::Relaxed;
    let agents = identities.len();
    let ramp = Duration::from_millis(agents as u64).min(Duration::from_secs(60));
    let fleet = bagui_tests::sim::Fleet::start(
        identities,
        target.ca.clone(),
        bagui_tests::sim::FleetConfig {
            server: target.server,
            interval: Duration::from_secs(15),
            sockets: 8,
            ramp,
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(30),
            samples_per_report: 20,
        },
    )?;
    let connect_limit = ramp + Duration::from_secs(240);
    let mut all_connected_after = None;
    while fleet.elapsed() < connect_limit {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if fleet.stats.connected.load(Relaxed) >= agents {
            all_connected_after = Some(fleet.elapsed());
            break;
        }
    }
    // Settle, then measure a steady window.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let _ = fleet.take_latencies();
    let acked_before = fleet.stats.reports_acked.load(Relaxed);
    let samples_before = fleet.stats.samples_sent.load(Relaxed);
    let cpu_before = cpu_seconds(cp_pid);
    let started = Instant::now();
    tokio::time::sleep(measure).await;
    let elapsed = started.elapsed().as_secs_f64();
    let mut latencies = fleet.take_latencies();
    latencies.sort_by(|a, b| a.total_cmp(b));
    let figures = FleetFigures {
        agents,
        all_connected_after,
        reports_per_second: (fleet.stats.reports_acked.load(Relaxed) - acked_before) as f64
            / elapsed,
        samples_per_second: (fleet.stats.samples_sent.load(Relaxed) - samples_before) as f64
            / elapsed,
        ack_ms: (
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.99),
            percentile(&latencies, 1.0),
        ),
        cp_cpu_percent: (cpu_seconds(cp_pid) - cpu_before) / elapsed * 100.0,
        cp_rss_kib: proc_status_kib(cp_pid, "VmRSS"),
        errors: fleet.stats.errors.load(Relaxed),
    };
    Ok((figures, fleet))
}

fn fleet_row(figures: &FleetFigures, baseline_kib: u64) -> String {
    format!(
        "| {} | {} | {:.0} | {:.0} | {:.1} ms | {:.1} ms | {:.1} ms | {:.0} % | {:.0} MiB | {:.1} KiB | {} |\n",
        figures.agents,
        figures
            .all_connected_after
            .map_or("not all".into(), |after| format!(
                "{:.0} s",
                after.as_secs_f64()
            )),
        figures.reports_per_second,
        figures.samples_per_second,
        figures.ack_ms.0,
        figures.ack_ms.1,
        figures.ack_ms.2,
        figures.cp_cpu_percent,
        figures.cp_rss_kib as f64 / 1024.0,
        figures.cp_rss_kib.saturating_sub(baseline_kib) as f64 / figures.agents.max(1) as f64,
        figures.errors,
    )
}

const FLEET_HEADER: &str = "| agents | all connected after | reports/s | samples/s | ack p50 | ack p99 | ack max | control-plane CPU (of one core) | control-plane RSS | RSS per agent | errors |\n|---|---|---|---|---|---|---|---|---|---|---|\n";

async fn scale(args: &Args) -> Result<String> {
    let control_plane_binary = release_binary("bagui-cp")?;
    let mut out = machine_line(&format!(
        "target/release/bagui-bench --sections scale --scale-seconds {} --ceiling {}",
        args.scale_seconds,
        args.ceiling
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join(",")
    ));
    let temporary = tempfile::tempdir()?;
    let data_dir = DataDir::new(temporary.path().join("cp"));
    let quic_port = bagui_tests::free_udp_port();
    data_dir.init(&format!("127.0.0.1:{quic_port}"), &[], &SystemClock)?;
    // Production defaults (heartbeat 5 s, admission 500/s) on loopback addresses.
    let cp_config = temporary.path().join("cp.toml");
    std::fs::write(
        &cp_config,
        format!(
            "[server]\nquic_listen = \"127.0.0.1:{quic_port}\"\nhttp_listen = \"127.0.0.1:0\"\n"
        ),
    )?;
    let (mut control_plane, _) =
        ControlPlaneProcess::start(&control_plane_binary, &data_dir, &cp_config).await?;
    let target = bagui_tests::sim::Target::open(data_dir.root())?;
    let levels = data_dir.divisions()?.level_counts();
    let province = levels[3] + levels[4];
    eprintln!("bench: provisioning {province} identities");
    let identities =
        bagui_tests::sim::provision(&target.data_dir, &target.client, province).await?;
    let baseline_kib = proc_status_kib(control_plane.pid(), "VmRSS");

    // Province scale: one agent per township and village, metrics every 15 s.
    eprintln!("bench: province-scale fleet of {province}");
    let measure = Duration::from_secs(args.scale_seconds);
    let (figures, fleet) = run_fleet(control_plane.pid(), &target, identities, measure).await?;
    out.push_str(&format!(
        "### Province scale: {province} simulated agents (every township and village), metrics every 15 s\n\nEach agent is `bagui-sim`'s: its own identity and mTLS QUIC connection (8 client UDP sockets), a heartbeat every 5 s, a 20-sample metrics report every 15 s, an asset change (1 %) or security finding (0.1 %) now and then. The control plane runs with production defaults (`bagui-cp run`, release) and shares the 2 cores with the simulator. {} s measured after every agent connected; \"RSS per agent\" is (RSS − {:.0} MiB idle) ÷ agents. Goals: p99 ack < 200 ms, RSS < 1 GiB.\n\n{FLEET_HEADER}{}",
        args.scale_seconds,
        baseline_kib as f64 / 1024.0,
        fleet_row(&figures, baseline_kib)
    ));

    // Reconnect storm: SIGKILL under the full fleet, restart, wait for everyone.
    eprintln!("bench: reconnect storm");
    use std::sync::atomic::Ordering::Relaxed;
    control_plane.kill();
    let killed_at = Instant::now();
    while fleet.stats.connected.load(Relaxed) > 0 && killed_at.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let noticed = killed_at.elapsed();
    let (restarted, ready_at) =
        ControlPlaneProcess::start(&control_plane_binary, &data_dir, &cp_config).await?;
    control_plane = restarted;
    let mut peak_cpu = 0.0f64;
    let mut last_cpu = cpu_seconds(control_plane.pid());
    let mut last_at = Instant::now();
    let mut back_after = None;
    while ready_at.elapsed() < Duration::from_secs(300) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let cpu = cpu_seconds(control_plane.pid());
        peak_cpu = peak_cpu.max((cpu - last_cpu) / last_at.elapsed().as_secs_f64() * 100.0);
        last_cpu = cpu;
        last_at = Instant::now();
        if fleet.stats.connected.load(Relaxed) >= province {
            back_after = Some(ready_at.elapsed());
            break;
        }
    }
    let hints = fleet.stats.come_back_hints.load(Relaxed);
    // Let the outboxes drain, then stop and account for every report.
    tokio::time::sleep(Duration::from_secs(20)).await;
    let ledgers = fleet.stop(Duration::from_secs(3)).await;
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(control_plane.pid().to_string())
        .status();
    let _ = control_plane.child.wait();
    let store = bagui_control_plane::store::Store::open_waiting(
        &data_dir.store_path(),
        16 << 20,
        Duration::from_secs(10),
    )?;
    let (mut acked, mut lost, mut stored_total, mut unknown) = (0u64, 0u64, 0u64, 0u64);
    for ledger in &ledgers {
        let stored: std::collections::BTreeSet<u64> = store
            .reports(&ledger.agent_id, 0, usize::MAX)?
            .into_iter()
            .map(|(seq, _)| seq)
            .collect();
        stored_total += stored.len() as u64;
        acked += ledger.acked.len() as u64;
        lost += ledger
            .acked
            .iter()
            .filter(|seq| !stored.contains(seq))
            .count() as u64;
        unknown += stored
            .iter()
            .filter(|seq| **seq == 0 || **seq >= ledger.next_seq)
            .count() as u64;
    }
    drop(store);
    out.push_str(&format!(
        "\n### Reconnect storm: the control plane SIGKILLed under the full fleet and restarted\n\n| agents | noticed the kill | all back after restart | peak control-plane CPU | come-back hints | reports acknowledged | acknowledged but not stored | stored but never sent |\n|---|---|---|---|---|---|---|---|\n| {province} | {:.1} s | {} | {:.0} % of one core | {hints} | {acked} | {lost} | {unknown} |\n\nAccounting: each simulated agent keeps the exact set of sequence numbers the control plane acknowledged; after the run the store is opened offline and every acknowledged (agent, seq) must be in it ({stored_total} reports stored in all; the store's key makes storing one twice impossible). The restarted control plane paces re-admission at 500 sessions/s and tells each agent turned away when to come back.\n",
        noticed.as_secs_f64(),
        back_after.map_or("not within 300 s".into(), |after| format!("{:.0} s", after.as_secs_f64())),
        peak_cpu,
    ));

    // Ceiling: larger fleets until p99 ack reaches 200 ms (or not everyone gets in), with the
    // default heartbeat and with the 15 s heartbeat a province-scale deployment may choose.
    let rmem_max = std::fs::read_to_string("/proc/sys/net/core/rmem_max").unwrap_or_default();
    out.push_str(&format!(
        "\n### Ceiling: the largest fleet holding p99 ack < 200 ms\n\nSame setup, a fresh control plane per size, {} s measured per size (net.core.rmem_max = {}). The simulator runs on the same 2 cores: every simulated agent costs about as much CPU as the control plane spends on it, so past a point the box, not the control plane, is the limit — when a size fails, the table's notes say which side dropped packets (per-socket drops from /proc/net/udp).\n\n",
        args.scale_seconds / 2,
        rmem_max.trim()
    ));
    for (label, extra) in [
        ("heartbeat 5 s (default)", ""),
        (
            "heartbeat 15 s (`[session] heartbeat_interval = \"15s\"`)",
            "[session]\nheartbeat_interval = \"15s\"\n",
        ),
    ] {
        out.push_str(&format!("**{label}**\n\n{FLEET_HEADER}"));
        let mut ceiling = None;
        let mut note = String::new();
        for &agents in &args.ceiling {
            let data_dir = DataDir::new(
                temporary
                    .path()
                    .join(format!("cp-{agents}-{}", extra.len())),
            );
            let quic_port = bagui_tests::free_udp_port();
            data_dir.init(&format!("127.0.0.1:{quic_port}"), &[], &SystemClock)?;
            let cp_config = temporary
                .path()
                .join(format!("cp-{agents}-{}.toml", extra.len()));
            std::fs::write(
                &cp_config,
                format!(
                    "[server]\nquic_listen = \"127.0.0.1:{quic_port}\"\nhttp_listen = \"127.0.0.1:0\"\n{extra}"
                ),
            )?;
            let (control_plane, _) =
                ControlPlaneProcess::start(&control_plane_binary, &data_dir, &cp_config).await?;
            let target = bagui_tests::sim::Target::open(data_dir.root())?;
            eprintln!("bench: ceiling {label} {agents}: provisioning");
            let identities =
                bagui_tests::sim::provision(&target.data_dir, &target.client, agents).await?;
            let baseline_kib = proc_status_kib(control_plane.pid(), "VmRSS");
            let drops_before = udp_drops(quic_port);
            eprintln!("bench: ceiling {label} {agents}: running");
            let (figures, fleet) =
                run_fleet(control_plane.pid(), &target, identities, measure / 2).await?;
            let drops_after = udp_drops(quic_port);
            fleet.stop(Duration::from_secs(1)).await;
            drop(control_plane);
            out.push_str(&fleet_row(&figures, baseline_kib));
            let holds = figures.all_connected_after.is_some()
                && figures.ack_ms.1 < 200.0
                && figures.errors == 0;
            if !holds {
                note = format!(
                    "{agents} did not hold; UDP receive drops during the run: control plane {}, simulator {}.",
                    drops_after.0 - drops_before.0,
                    drops_after.1 - drops_before.1
                );
                break;
            }
            ceiling = Some(agents);
        }
        out.push_str(&format!(
            "\nCeiling: {}. {note}\n\n",
            ceiling.map_or("below the smallest size tried".into(), |n| format!(
                "at least {n} agents"
            ))
        ));
    }
    Ok(out)
}
