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
    agents: usize,
    seconds: u64,
    /// Total reports/s of the paced run.
    rate: u64,
    write: Option<PathBuf>,
}

fn args() -> Result<Args> {
    let mut parsed = Args {
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

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = args()?;
    let control_plane_binary = release_binary("bagui-cp")?;
    let agent_binary = release_binary("bagui-agent")?;
    let mut out = String::new();
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
    out.push_str(&format!(
        "Measured {} on {} cores ({cpu_model}), {memory_gib:.0} GiB, by `target/release/bagui-bench --agents {} --seconds {}`.\n\n",
        bagui_protocol::units::format_rfc3339(bagui_agent::join::now_ms()),
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        args.agents,
        args.seconds
    ));

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

    print!("{out}");
    if let Some(path) = args.write {
        let begin = "<!-- bagui-bench:begin -->";
        let end = "<!-- bagui-bench:end -->";
        let existing = std::fs::read_to_string(&path).unwrap_or_default();
        let updated = match (existing.find(begin), existing.find(end)) {
            (Some(start), Some(stop)) if stop > start => {
                format!("{}{begin}\n{out}{}", &existing[..start], &existing[stop..])
            }
            _ => format!("{existing}\n{begin}\n{out}{end}\n"),
        };
        std::fs::write(&path, updated).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
