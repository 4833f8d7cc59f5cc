//! `bagui-bench`: the foundation's benchmarks, on loopback, against the release binaries.
//!
//!     cargo build --release --workspace
//!     target/release/bagui-bench [--agents 100] [--seconds 15] [--write BENCHMARKS.md]
//!
//! Measures: binary sizes; time from `bagui-agent run` to its first acknowledged report;
//! agent RSS and CPU with an idle connection; time for an agent to reconnect after the control
//! plane is killed (SIGKILL) and restarted; and sustained ingest (reports/s acknowledged after
//! durable commit, ack latency, control-plane RSS and CPU) with many mTLS sessions.
//!
//! `--sections footprint [--footprint-seconds 120]` (not run by default) measures
//! `bagui-agent` beside the agents it replaces (Debian's `prometheus-node-exporter` and
//! `zabbix-agent`), each alone in turn and polled as its server would: RSS, peak, PSS, the
//! first full inventory's CPU and the steady CPU after it.

/// mimalloc, as in `bagui-cp`: with glibc's malloc the simulator spent an eighth of its CPU in
/// the allocator's bookkeeping at province scale (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Sections to run: `foundation`, `scale` (the default), `footprint`.
    sections: Vec<String>,
    /// Seconds each agent is observed in the footprint section.
    footprint_seconds: u64,
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

const USAGE: &str = "\
usage: bagui-bench [--sections LIST] [--write FILE] [options]

  --sections LIST          comma-separated, run in order: foundation, scale (default:
                           foundation,scale), footprint, security, crypto, console
  --write FILE             replace each section's part of FILE (BENCHMARKS.md)
  --agents N               foundation: sessions of the sustained-ingest run (default 100)
  --seconds S              foundation: seconds of that run (default 15)
  --rate R                 foundation: total reports/s of the paced run (default 5000)
  --scale-seconds S        scale: measured seconds per fleet run (default 120)
  --ceiling LIST           scale: fleet sizes tried for the ceiling (default
                           17965,35000,50000,70000)
  --footprint-seconds S    footprint: seconds each agent is observed (default 120)

Needs the release binaries beside it: cargo build --release --workspace
";

fn args() -> Result<Args> {
    let mut parsed = Args {
        sections: vec!["foundation".into(), "scale".into()],
        scale_seconds: 120,
        footprint_seconds: 120,
        ceiling: vec![17_965, 35_000, 50_000, 70_000],
        agents: 100,
        seconds: 15,
        rate: 5000,
        write: None,
    };
    let mut iter = std::env::args().skip(1);
    while let Some(flag) = iter.next() {
        if flag == "--help" || flag == "-h" {
            print!("{USAGE}");
            std::process::exit(0);
        }
        let value = iter
            .next()
            .with_context(|| format!("{flag} needs a value\n\n{USAGE}"))?;
        match flag.as_str() {
            "--agents" => parsed.agents = value.parse()?,
            "--seconds" => parsed.seconds = value.parse::<u64>()?.clamp(1, 600),
            "--rate" => parsed.rate = value.parse::<u64>()?.max(1),
            "--sections" => parsed.sections = value.split(',').map(str::to_owned).collect(),
            "--scale-seconds" => parsed.scale_seconds = value.parse::<u64>()?.clamp(10, 3600),
            "--footprint-seconds" => {
                parsed.footprint_seconds = value.parse::<u64>()?.clamp(15, 3600)
            }
            "--ceiling" => {
                parsed.ceiling = value
                    .split(',')
                    .map(|n| n.trim().parse::<usize>())
                    .collect::<Result<_, _>>()?
            }
            "--write" => parsed.write = Some(value.into()),
            other => bail!("unknown flag {other}\n\n{USAGE}"),
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

/// The nice value of the thread of process `pid` named `name` (`/proc/PID/task/*/comm`).
fn thread_nice(pid: u32, name: &str) -> Option<i64> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
        .find(|task| {
            std::fs::read_to_string(task.path().join("comm")).is_ok_and(|comm| comm.trim() == name)
        })
        .and_then(|task| {
            let stat = std::fs::read_to_string(task.path().join("stat")).ok()?;
            // Fields after the command's closing parenthesis: state is field 3, nice field 19.
            stat.rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(16)?
                .parse()
                .ok()
        })
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
                    cipher: String::new(),
                    sealed_seq: 0,
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

/// Writes `text` between this section's markers in `path`. Without markers, the section goes
/// right after its heading line if it has one in the file, else at the end.
fn write_section(path: &Path, section: &str, text: &str) -> Result<()> {
    let begin = format!("<!-- bagui-bench:{section}:begin -->");
    let end = format!("<!-- bagui-bench:{section}:end -->");
    let existing = std::fs::read_to_string(path).unwrap_or_default();
    let heading = match section {
        "footprint" => Some(FOOTPRINT_HEADING),
        _ => None,
    };
    let after_heading = heading.and_then(|heading| {
        existing
            .match_indices(heading)
            .map(|(at, _)| at)
            .find(|&at| {
                (at == 0 || existing[..at].ends_with('\n'))
                    && existing[at + heading.len()..].starts_with('\n')
            })
            .map(|at| at + heading.len() + 1)
    });
    let updated = match (existing.find(&begin), existing.find(&end), after_heading) {
        (Some(start), Some(stop), _) if stop > start => {
            format!("{}{begin}\n{text}{}", &existing[..start], &existing[stop..])
        }
        (_, _, Some(at)) => format!(
            "{}\n{begin}\n{text}{end}\n{}",
            &existing[..at],
            &existing[at..]
        ),
        _ => format!("{existing}\n{begin}\n{text}{end}\n"),
    };
    std::fs::write(path, updated).with_context(|| format!("writing {}", path.display()))
}

/// On-CPU time of the calling thread, from `/proc/thread-self/schedstat` (ns).
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// The security baseline and file integrity monitoring: run time and CPU on this machine.
fn security_section() -> Result<String> {
    use bagui_plugins::HostRoot;
    use bagui_plugins::fim::{FimConfig, scan_timing};
    use bagui_plugins::posture::{builtin_policy, evaluate};
    let mut text = machine_line("target/release/bagui-bench --sections security");
    let policy = builtin_policy();
    let root = HostRoot::default();
    let mut wall = Vec::new();
    let mut cpu = Vec::new();
    let mut report = None;
    for _ in 0..21 {
        let cpu_before = thread_cpu_ns();
        let started = Instant::now();
        report = Some(evaluate(&policy, &root, bagui_agent::join::now_ms()));
        wall.push(started.elapsed().as_secs_f64() * 1000.0);
        cpu.push((thread_cpu_ns() - cpu_before) as f64 / 1e6);
    }
    let report = report.context("the baseline ran")?;
    text.push_str(&format!(
        "### Security baseline: the built-in policy ({} checks) on this machine\n\nOne full run of `evaluate` in one thread, median of 21 (the agent runs it hourly and when a protected file changes; `bagui-agent check` runs it once). Score here: {}.\n\n| checks | wall | CPU |\n|---|---|---|\n| {} | {:.1} ms | {:.1} ms |\n\n",
        report.results.len(),
        report.score,
        report.results.len(),
        median(wall),
        median(cpu),
    ));
    let mut rows = Vec::new();
    let default_paths = FimConfig::default().paths;
    let mut timings = Vec::new();
    let mut counts = (0, 0);
    for _ in 0..5 {
        let (files, bytes, took) = scan_timing(&root, &default_paths);
        counts = (files, bytes);
        timings.push(took.as_secs_f64() * 1000.0);
    }
    rows.push(format!(
        "| default watch list on this machine | {} | {:.1} KiB | {:.1} ms |",
        counts.0,
        counts.1 as f64 / 1024.0,
        median(timings)
    ));
    let dir = tempfile::tempdir()?;
    for bucket in 0..10 {
        let sub = dir.path().join(format!("data/{bucket}"));
        std::fs::create_dir_all(&sub)?;
        for index in 0..1000 {
            std::fs::write(
                sub.join(format!("f{index}")),
                format!("file {bucket}/{index}\n").repeat(8),
            )?;
        }
    }
    let fixture = HostRoot::new(dir.path());
    let mut timings = Vec::new();
    for _ in 0..5 {
        let (files, bytes, took) = scan_timing(&fixture, &["/data/".into()]);
        counts = (files, bytes);
        timings.push(took.as_secs_f64() * 1000.0);
    }
    rows.push(format!(
        "| 10,000 small files (10 directories) | {} | {:.1} KiB | {:.1} ms |",
        counts.0,
        counts.1 as f64 / 1024.0,
        median(timings)
    ));
    text.push_str("### File integrity monitoring: initial scan (SM3 of every file), median of 5, page cache warm\n\n| watch list | entries | hashed | time |\n|---|---|---|---|\n");
    for row in rows {
        text.push_str(&row);
        text.push('\n');
    }
    text.push('\n');
    Ok(text)
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
            "footprint" => footprint(&args).await?,
            "security" => security_section()?,
            "console" => console_section().await?,
            "crypto" => {
                let mut text = crypto_section()?;
                text.push_str(&quic_loopback_rows().await?);
                text
            }
            other => {
                bail!(
                    "unknown section {other:?} (foundation, scale, footprint, security, crypto, console)"
                )
            }
        };
        print!("{text}");
        if let Some(path) = &args.write {
            write_section(path, &section, &text)?;
            eprintln!("wrote the {section} section of {}", path.display());
        }
    }
    Ok(())
}

/// A fresh deployment under `root`: data dir `root/cp` initialised for a loopback QUIC port
/// and `root/cp.toml` listening there (HTTP on any loopback port), with `extra` appended.
fn deployment(root: &Path, extra: &str) -> Result<(DataDir, u16, PathBuf)> {
    let data_dir = DataDir::new(root.join("cp"));
    let quic_port = bagui_tests::free_udp_port();
    data_dir.init(&format!("127.0.0.1:{quic_port}"), &[], &SystemClock)?;
    let cp_config = root.join("cp.toml");
    std::fs::write(
        &cp_config,
        format!(
            "[server]\nquic_listen = \"127.0.0.1:{quic_port}\"\nhttp_listen = \"127.0.0.1:0\"\n{extra}"
        ),
    )?;
    Ok((data_dir, quic_port, cp_config))
}

/// The console's province-scale views against the release control plane: 20,000 enrolled
/// agents (bulk-issued, no sessions: the counting is the same), each view asked once to warm
/// the store's cache as a wall screen that stays open does, then timed 5 times.
async fn console_section() -> Result<String> {
    const AGENTS: usize = 20_000;
    const RUNS: usize = 5;
    let control_plane_binary = release_binary("bagui-cp")?;
    let temporary = tempfile::tempdir()?;
    let (data_dir, _, cp_config) = deployment(temporary.path(), "")?;
    let (control_plane, _) =
        ControlPlaneProcess::start(&control_plane_binary, &data_dir, &cp_config).await?;
    let target = bagui_tests::sim::Target::open(data_dir.root())?;
    eprintln!("bench: console: issuing {AGENTS} identities");
    bagui_tests::sim::provision(&target.data_dir, &target.client, AGENTS).await?;
    let info = data_dir.api_info()?;
    let client =
        bagui_control_plane::client::ApiClient::new(&info.url, &data_dir.admin_token()?, None)?;
    let mut rows = String::new();
    for (path, what) in [
        ("/api/v1/overview", "overview (一屏统览)"),
        (
            "/api/v1/network",
            "network: region → 14 cities, with the board",
        ),
        (
            "/api/v1/network?division=4501",
            "network: 南宁市 → its counties",
        ),
        (
            "/api/v1/network?division=450103001",
            "network: one township → its villages and agents",
        ),
    ] {
        let warm: serde_json::Value = client.get(path).await?;
        if path == "/api/v1/overview" && warm["agents"]["total"] != AGENTS {
            bail!(
                "the overview counts {} agents, not {AGENTS}",
                warm["agents"]["total"]
            );
        }
        let mut times = Vec::with_capacity(RUNS);
        let mut bytes = 0;
        for _ in 0..RUNS {
            let started = Instant::now();
            let answer: serde_json::Value = client.get(path).await?;
            times.push(started.elapsed().as_secs_f64() * 1000.0);
            bytes = answer.to_string().len();
        }
        times.sort_by(|a, b| a.total_cmp(b));
        rows.push_str(&format!(
            "| `{path}` | {what} | {:.0} ms | {:.0} ms | {:.0} KiB |\n",
            times[RUNS / 2],
            times[RUNS - 1],
            bytes as f64 / 1024.0
        ));
    }
    drop(control_plane);
    Ok(format!(
        "{}\n### Console views with {AGENTS} agents in the store (release control plane, as root)\n\nGoal: the overview under 1 s.\n\n| request | view | median of {RUNS} | max | JSON size |\n|---|---|---|---|---|\n{rows}",
        machine_line("target/release/bagui-bench --sections console")
    ))
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
    let (data_dir, quic_port, cp_config) = deployment(
        temporary.path(),
        "[admission]\nrate_per_second = 2000\nburst = 2000\n",
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
    /// From every agent connected until the asset ledger had projected the fleet's
    /// first-contact snapshots (`None`: not within [`SETTLE_LIMIT`]).
    settled_after: Option<Duration>,
    reports_per_second: f64,
    samples_per_second: f64,
    ack_ms: (f64, f64, f64),
    cp_cpu_percent: f64,
    cp_rss_kib: u64,
    errors: u64,
}

/// The value of an unlabelled metric in a Prometheus text exposition.
fn metric_value(exposition: &str, name: &str) -> Option<f64> {
    exposition.lines().find_map(|line| {
        line.strip_prefix(name)?
            .strip_prefix(' ')?
            .trim()
            .parse::<f64>()
            .ok()
    })
}

/// How long [`run_fleet`] waits for the ledger to catch up once every agent is connected.
const SETTLE_LIMIT: Duration = Duration::from_secs(180);

/// Waits until the control plane's projection lag (`bagui_projection_lag_seconds`) has been
/// under a second in two polls in a row; how long that took, or `None` after [`SETTLE_LIMIT`].
/// Polls every 5 s: a scrape counts the whole fleet (~0.2 s of CPU at 50,000 agents), and
/// polling must not slow what it waits for.
async fn wait_for_projection(target: &bagui_tests::sim::Target) -> Option<Duration> {
    let started = Instant::now();
    let mut calm = 0;
    while started.elapsed() < SETTLE_LIMIT {
        let lag = target
            .client
            .call_text("/metrics")
            .await
            .ok()
            .and_then(|text| metric_value(&text, "bagui_projection_lag_seconds"));
        calm = if lag.is_some_and(|lag| lag < 1.0) {
            calm + 1
        } else {
            0
        };
        if calm >= 2 {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    None
}

/// Starts a fleet, waits until every agent is connected (or `connect_limit` passes), then
/// measures `measure`. Returns the figures and the still-running fleet.
async fn run_fleet(
    cp_pid: u32,
    target: &bagui_tests::sim::Target,
    identities: Vec<bagui_tests::sim::SimIdentity>,
    measure: Duration,
    packages: usize,
) -> Result<(FleetFigures, bagui_tests::sim::Fleet)> {
    use std::sync::atomic::Ordering::Relaxed;
    let agents = identities.len();
    let ramp = bagui_tests::sim::default_ramp(agents);
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
            packages_per_snapshot: packages,
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
    // Settle (the ledger has projected the first-contact snapshots), then measure a steady
    // window: the ceiling is about sustained ingest, the ramp's transient is the storm's.
    let settled_after = match all_connected_after {
        Some(_) => wait_for_projection(target).await,
        None => None,
    };
    if all_connected_after.is_some() && settled_after.is_none() {
        eprintln!(
            "bench: the ledger had not caught up {} s after the fleet connected; measuring anyway",
            SETTLE_LIMIT.as_secs()
        );
    }
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
        settled_after,
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
        "| {} | {} | {} | {:.0} | {:.0} | {:.1} ms | {:.1} ms | {:.1} ms | {:.0} % | {:.0} MiB | {:.1} KiB | {} |\n",
        figures.agents,
        figures
            .all_connected_after
            .map_or("not all".into(), |after| format!(
                "{:.0} s",
                after.as_secs_f64()
            )),
        match (figures.all_connected_after, figures.settled_after) {
            (None, _) => "-".into(),
            (Some(_), None) => format!("not within {} s", SETTLE_LIMIT.as_secs()),
            (Some(_), Some(after)) => format!("+{:.0} s", after.as_secs_f64()),
        },
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

/// How far the asset ledger got with the fleet's first-contact snapshots: agents found by a
/// package query over the whole fleet, how long that query took, and the projector's lag.
async fn ledger_figures(target: &bagui_tests::sim::Target, agents: usize) -> String {
    let started = Instant::now();
    let found = target
        .client
        .get::<Vec<serde_json::Value>>("/api/v1/assets/find?package=package-0000")
        .await
        .map(|rows| rows.len());
    let query_ms = started.elapsed().as_secs_f64() * 1000.0;
    let metrics = target
        .client
        .call_text("/metrics")
        .await
        .unwrap_or_default();
    let metric = |name: &str| metric_value(&metrics, name).unwrap_or(f64::NAN);
    let sizes = |snapshot: &bagui_protocol::assets::AssetSnapshot| {
        let (plain, packed) = bagui_control_plane::store::packed_size(snapshot).unwrap_or((0, 0));
        format!(
            "{} packages: {:.1} KiB → {:.1} KiB",
            snapshot.packages.len(),
            plain as f64 / 1024.0,
            packed as f64 / 1024.0
        )
    };
    let simulated = bagui_tests::sim::asset_snapshot("ag-bench", 500, 0);
    let real = bagui_plugins::assets::AssetReader::new(bagui_plugins::HostRoot::new("/")).read(0);
    format!(
        "\nStored snapshot size (MessagePack, then LZ4 as the store packs it): simulated {}; this machine's real snapshot {}.\n\nAsset ledger at the end of the window: {} of {agents} agents' snapshots projected (found by `asset find --package package-0000` over the fleet, answered in {query_ms:.0} ms); {:.0} of {:.0} received reports projected, projection lag {:.1} s.\n",
        sizes(&simulated),
        sizes(&real),
        found.map_or_else(|error| format!("query failed ({error})"), |n| n.to_string()),
        metric("bagui_reports_projected_total"),
        metric("bagui_reports_received_total"),
        metric("bagui_projection_lag_seconds"),
    )
}

const FLEET_HEADER: &str = "| agents | all connected after | ledger caught up after | reports/s | samples/s | ack p50 | ack p99 | ack max | control-plane CPU (of one core) | control-plane RSS | RSS per agent | errors |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n";

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
    // Production defaults (heartbeat 5 s, admission 500/s) on loopback addresses.
    let (data_dir, _, cp_config) = deployment(temporary.path(), "")?;
    let (mut control_plane, _) =
        ControlPlaneProcess::start(&control_plane_binary, &data_dir, &cp_config).await?;
    let target = bagui_tests::sim::Target::open(data_dir.root())?;
    let levels = data_dir.divisions()?.level_counts();
    let province = levels[3] + levels[4];
    eprintln!("bench: provisioning {province} identities");
    let identities =
        bagui_tests::sim::provision(&target.data_dir, &target.client, province).await?;
    let baseline_kib = proc_status_kib(control_plane.pid(), "VmRSS");
    let commit_nice = thread_nice(control_plane.pid(), "bagui-commit")
        .map_or("unknown".into(), |nice| nice.to_string());

    // Province scale: one agent per township and village, metrics every 15 s.
    eprintln!("bench: province-scale fleet of {province}");
    let measure = Duration::from_secs(args.scale_seconds);
    let (figures, fleet) =
        run_fleet(control_plane.pid(), &target, identities, measure, 500).await?;
    let ledger = ledger_figures(&target, province).await;
    out.push_str(&format!(
        "### Province scale: {province} simulated agents (every township and village), metrics every 15 s\n\nEach agent is `bagui-sim`'s: its own identity and mTLS QUIC connection (8 client UDP sockets), a full asset snapshot of 500 packages as its first report (first contact, like a real agent's), a heartbeat every 5 s, a 20-sample metrics report every 15 s, an asset change (1 %: one package upgraded, chained by digest) or security finding (0.1 %) now and then. The control plane runs with production defaults (`bagui-cp run`, release) and shares the 2 cores with the simulator. First connections are spread at 2 ms per agent (the default admission rate, 500/s); {} s are measured once every agent is connected and the asset ledger has projected their first snapshots (projection lag under 1 s; the wait is the \"ledger caught up\" column); \"RSS per agent\" is (RSS − {:.0} MiB idle) ÷ agents; the commit thread ran at nice {commit_nice} (it asks for {}, see ARCHITECTURE.md). Goals: p99 ack < 200 ms, RSS < 1 GiB.\n\n{FLEET_HEADER}{}",
        args.scale_seconds,
        baseline_kib as f64 / 1024.0,
        bagui_control_plane::ingest::COMMIT_NICE,
        fleet_row(&figures, baseline_kib)
    ));
    out.push_str(&ledger);

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
        "\n### Reconnect storm: the control plane SIGKILLed under the full fleet and restarted\n\n| agents | noticed the kill | all back after restart | peak control-plane CPU | come-back hints | reports acknowledged | acknowledged but not stored | stored but never sent |\n|---|---|---|---|---|---|---|---|\n| {province} | {:.1} s | {} | {:.0} % of one core | {hints} | {acked} | {lost} | {unknown} |\n\nAccounting: each simulated agent keeps the exact set of sequence numbers the control plane acknowledged; after the run the store is opened offline and every acknowledged (agent, seq) must be in it ({stored_total} reports stored in all; the store's key makes storing one twice impossible). The restarted control plane paces re-admission at 500 sessions/s: it holds attempts until their slot, tells some when to come back, and drops the rest unanswered for the agents to retransmit.\n",
        noticed.as_secs_f64(),
        back_after.map_or("not within 300 s".into(), |after| format!("{:.0} s", after.as_secs_f64())),
        peak_cpu,
    ));

    // Ceiling: larger fleets until p99 ack reaches 200 ms (or not everyone gets in), with the
    // default heartbeat and with the 15 s heartbeat a province-scale deployment may choose.
    let rmem_max = std::fs::read_to_string("/proc/sys/net/core/rmem_max").unwrap_or_default();
    out.push_str(&format!(
        "\n### Ceiling: the largest fleet holding p99 ack < 200 ms\n\nSame setup (ramp at 2 ms per agent, at most 120 s; measured after the ledger caught up), a fresh control plane per size, {} s measured per size (net.core.rmem_max = {}). The simulator runs on the same 2 cores: every simulated agent costs about as much CPU as the control plane spends on it, so past a point the box, not the control plane, is the limit — when a size fails, the table's notes say which side dropped packets (per-socket drops from /proc/net/udp).\n\n",
        args.scale_seconds / 2,
        rmem_max.trim()
    ));
    for (label, extra, packages) in [
        (
            "heartbeat 5 s (default), first contact with a 500-package snapshot",
            "",
            500,
        ),
        (
            "heartbeat 5 s (default), metrics only (`bagui-sim --packages 0`)",
            "",
            0,
        ),
        (
            "heartbeat 15 s (`[session] heartbeat_interval = \"15s\"`), 500-package snapshot",
            "[session]\nheartbeat_interval = \"15s\"\n",
            500,
        ),
    ] {
        out.push_str(&format!("**{label}**\n\n{FLEET_HEADER}"));
        let mut ceiling = None;
        let mut note = String::new();
        for &agents in &args.ceiling {
            let root = temporary
                .path()
                .join(format!("size-{agents}-{}-{packages}", extra.len()));
            std::fs::create_dir_all(&root)?;
            let (data_dir, quic_port, cp_config) = deployment(&root, extra)?;
            let (control_plane, _) =
                ControlPlaneProcess::start(&control_plane_binary, &data_dir, &cp_config).await?;
            let target = bagui_tests::sim::Target::open(data_dir.root())?;
            eprintln!("bench: ceiling {label} {agents}: provisioning");
            let identities =
                bagui_tests::sim::provision(&target.data_dir, &target.client, agents).await?;
            let baseline_kib = proc_status_kib(control_plane.pid(), "VmRSS");
            let drops_before = udp_drops(quic_port);
            eprintln!("bench: ceiling {label} {agents}: running");
            let (figures, fleet) = run_fleet(
                control_plane.pid(),
                &target,
                identities,
                measure / 2,
                packages,
            )
            .await?;
            let drops_after = udp_drops(quic_port);
            fleet.stop(Duration::from_secs(1)).await;
            drop(control_plane);
            // A 50,000-agent run leaves ~3 GiB of store; kept to the end, the sizes add up to
            // tens of GiB.
            drop(target);
            std::fs::remove_dir_all(&root)?;
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

// ------------------------------------------------------------------------------ footprint ---

const NODE_EXPORTER: &str = "/usr/bin/prometheus-node-exporter";
const ZABBIX_AGENTD: &str = "/usr/sbin/zabbix_agentd";
/// The keys a Zabbix server would ask a township terminal for (as `peer-footprint.sh`).
const ZABBIX_KEYS: [&str; 5] = [
    "system.cpu.load",
    "vm.memory.size[available]",
    "vfs.fs.size[/,pfree]",
    "net.if.in[lo]",
    "proc.num[]",
];
/// Peers are polled every `POLL_EVERY` s from `FIRST_POLL` s on, as their servers would.
const POLL_EVERY: Duration = Duration::from_secs(15);
const FIRST_POLL: Duration = Duration::from_secs(5);
/// The early memory sample.
const EARLY: Duration = Duration::from_secs(10);
const FOOTPRINT_HEADING: &str = "### Agent footprint beside the agents it replaces";

/// The fields of `/proc/PID/stat` after the command name (index 0 is the state).
fn proc_stat_fields(pid: u32) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(
        text.rsplit_once(')')?
            .1
            .split_whitespace()
            .map(str::to_owned)
            .collect(),
    )
}

/// A process's start time (clock ticks since boot), to tell it from a later one with its PID.
fn proc_start(pid: u32) -> Option<u64> {
    proc_stat_fields(pid)?.get(19)?.parse().ok()
}

/// `root` and all its descendants (parents from `/proc/*/stat`).
fn process_tree(root: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            if let Some(ppid) = proc_stat_fields(pid)
                .and_then(|fields| fields.get(1).and_then(|ppid| ppid.parse::<u32>().ok()))
            {
                children.entry(ppid).or_default().push(pid);
            }
        }
    }
    let mut tree = Vec::new();
    let mut queue = std::collections::VecDeque::from([root]);
    while let Some(pid) = queue.pop_front() {
        if !Path::new(&format!("/proc/{pid}")).exists() || tree.contains(&pid) {
            continue;
        }
        tree.push(pid);
        queue.extend(children.remove(&pid).unwrap_or_default());
    }
    tree
}

/// Whether this exact process (PID and start time) still runs (zombies do not).
fn still_running(pid: u32, start: u64) -> bool {
    proc_stat_fields(pid).is_some_and(|fields| {
        fields.first().map(String::as_str) != Some("Z")
            && fields.get(19).and_then(|s| s.parse::<u64>().ok()) == Some(start)
    })
}

fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// A process the bench started. Stopping it (explicitly or on drop, so also on error) sends
/// TERM to it and its descendants, waits up to 5 s, then KILLs what is left — by PID, with a
/// start-time check against PID reuse.
struct Started {
    name: String,
    child: Child,
    stopped: bool,
}

impl Started {
    fn spawn(name: &str, command: &mut Command) -> Result<Started> {
        let child = command
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Started {
            name: name.to_owned(),
            child,
            stopped: false,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails if the process has exited.
    fn ensure_running(&mut self) -> Result<()> {
        match self.child.try_wait()? {
            None => Ok(()),
            Some(status) => bail!("{} exited early ({status})", self.name),
        }
    }

    fn stop(&mut self) {
        if std::mem::replace(&mut self.stopped, true) {
            return;
        }
        let tree: Vec<(u32, u64)> = process_tree(self.pid())
            .into_iter()
            .filter_map(|pid| Some((pid, proc_start(pid)?)))
            .collect();
        for (pid, _) in &tree {
            signal(*pid, "TERM");
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            let _ = self.child.try_wait();
            if !tree.iter().any(|(pid, start)| still_running(*pid, *start)) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        for (pid, start) in &tree {
            if still_running(*pid, *start) {
                eprintln!(
                    "bench: {} (pid {pid}) ignored TERM, sending KILL",
                    self.name
                );
                signal(*pid, "KILL");
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Time on CPU of a process tree: the first field of `/proc/PID/task/*/schedstat` (ns), summed
/// over threads and processes. Sampled every 250 ms on a thread of its own, and kept per thread,
/// so a thread that exits (tokio's blocking threads do after 10 s idle) still counts with its
/// last sample.
struct CpuWatch {
    root: u32,
    threads: Arc<Mutex<HashMap<u32, u64>>>,
    stop: Arc<AtomicBool>,
    sampler: Option<std::thread::JoinHandle<()>>,
}

fn sample_threads(root: u32, threads: &Mutex<HashMap<u32, u64>>) -> (usize, u64) {
    let mut seen = HashMap::new();
    let tree = process_tree(root);
    for pid in &tree {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let Some(tid) = task
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            if let Some(ns) = std::fs::read_to_string(task.path().join("schedstat"))
                .ok()
                .and_then(|text| text.split_whitespace().next()?.parse::<u64>().ok())
            {
                seen.insert(tid, ns);
            }
        }
    }
    let live = seen.len() as u64;
    let mut threads = threads.lock().unwrap();
    for (tid, ns) in seen {
        let entry = threads.entry(tid).or_default();
        *entry = (*entry).max(ns);
    }
    (tree.len(), live)
}

impl CpuWatch {
    fn start(root: u32) -> CpuWatch {
        let threads: Arc<Mutex<HashMap<u32, u64>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let sampler = {
            let threads = threads.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    sample_threads(root, &threads);
                    std::thread::sleep(Duration::from_millis(250));
                }
            })
        };
        CpuWatch {
            root,
            threads,
            stop,
            sampler: Some(sampler),
        }
    }

    /// CPU time so far (a fresh sample) and how many threads were ever seen.
    fn cpu_ns(&self) -> (u64, usize) {
        sample_threads(self.root, &self.threads);
        let threads = self.threads.lock().unwrap();
        (threads.values().sum(), threads.len())
    }
}

impl Drop for CpuWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(sampler) = self.sampler.take() {
            let _ = sampler.join();
        }
    }
}

/// The kernel's own utime + stime of the tree (ns, 10 ms ticks), dead threads included, plus
/// what the root reaped from its children: a cross-check of [`CpuWatch`].
fn kernel_cpu_ns(root: u32) -> u64 {
    let mut ticks = 0;
    for pid in process_tree(root) {
        let Some(fields) = proc_stat_fields(pid) else {
            continue;
        };
        let field =
            |index: usize| -> u64 { fields.get(index).and_then(|v| v.parse().ok()).unwrap_or(0) };
        ticks += field(11) + field(12);
        if pid == root {
            ticks += field(13) + field(14);
        }
    }
    ticks * 10_000_000
}

/// Memory of a process tree, KiB.
#[derive(Debug, Default, Clone, Copy)]
struct TreeMemory {
    processes: usize,
    threads: u64,
    rss: u64,
    hwm: u64,
    pss: u64,
}

fn tree_memory(root: u32) -> TreeMemory {
    let mut memory = TreeMemory::default();
    for pid in process_tree(root) {
        memory.processes += 1;
        memory.threads += proc_status_kib(pid, "Threads");
        memory.rss += proc_status_kib(pid, "VmRSS");
        memory.hwm += proc_status_kib(pid, "VmHWM");
        memory.pss += std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
            .ok()
            .and_then(|text| {
                text.lines().find_map(|line| {
                    line.strip_prefix("Pss:")?
                        .split_whitespace()
                        .next()?
                        .parse::<u64>()
                        .ok()
                })
            })
            .unwrap_or(0);
    }
    memory
}

/// Whether an ELF file still has a symbol table (`SHT_SYMTAB` section), i.e. is not stripped.
fn elf_has_symtab(bytes: &[u8]) -> bool {
    let u16_at = |at: usize| {
        bytes
            .get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |at: usize| {
        bytes
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |at: usize| {
        bytes
            .get(at..at + 8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_le_bytes)
    };
    // ELF64, little endian only (x86_64, aarch64).
    if bytes.get(..6) != Some(&[0x7f, b'E', b'L', b'F', 2, 1][..]) {
        return false;
    }
    let (Some(offset), Some(size), Some(count)) = (u64_at(0x28), u16_at(0x3a), u16_at(0x3c)) else {
        return false;
    };
    (0..usize::from(count)).any(|i| u32_at(offset as usize + i * usize::from(size) + 4) == Some(2))
}

/// "4.0 MiB" for a binary, stripping a copy first when it still has symbols.
fn binary_cell(binary: &Path, work: &Path) -> Result<String> {
    let bytes = std::fs::read(binary).with_context(|| format!("reading {}", binary.display()))?;
    if !elf_has_symtab(&bytes) {
        return Ok(format!("{:.1} MiB", bytes.len() as f64 / 1048576.0));
    }
    let copy = work.join(format!(
        "{}.stripped",
        binary.file_name().unwrap_or_default().to_string_lossy()
    ));
    let stripped = Command::new("strip")
        .arg("-o")
        .arg(&copy)
        .arg(binary)
        .status()
        .is_ok_and(|status| status.success());
    Ok(match std::fs::metadata(&copy) {
        Ok(meta) if stripped => format!(
            "{:.1} MiB (stripped copy; {:.1} MiB as installed)",
            meta.len() as f64 / 1048576.0,
            bytes.len() as f64 / 1048576.0
        ),
        _ => format!("{:.1} MiB (not stripped)", bytes.len() as f64 / 1048576.0),
    })
}

/// "node_exporter 1.5.0 (deb 1.5.0-1+b6)": the first x.y.z in `binary FLAG`'s output.
fn version_of(name: &str, binary: &Path, flag: &str, package: Option<&str>) -> String {
    let output = Command::new(binary)
        .arg(flag)
        .stdin(Stdio::null())
        .output()
        .map(|out| {
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })
        .unwrap_or_default();
    let version = output
        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .find(|token| token.split('.').filter(|p| !p.is_empty()).count() >= 3)
        .unwrap_or("?");
    let deb = package.and_then(|package| {
        let out = Command::new("dpkg-query")
            .args(["-W", "-f=${Version}", package])
            .stderr(Stdio::null())
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        (out.status.success() && !text.is_empty()).then_some(text)
    });
    match deb {
        Some(deb) => format!("{name} {version} (deb {deb})"),
        None => format!("{name} {version}"),
    }
}

/// The first free TCP port on 127.0.0.1 from `from` on (Zabbix accepts only 1024–32767, so
/// not an ephemeral one).
fn free_tcp_port(from: u16) -> Result<u16> {
    (from..=32767)
        .find(|&port| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok())
        .with_context(|| format!("no free TCP port on 127.0.0.1 in {from}..=32767"))
}

/// Whether something listens on TCP 127.0.0.1:`port` (from /proc/net/tcp, without connecting).
fn tcp_listening(port: u16) -> bool {
    let wanted = format!("0100007F:{port:04X}");
    std::fs::read_to_string("/proc/net/tcp")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .any(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.get(1) == Some(&wanted.as_str()) && fields.get(3) == Some(&"0A")
        })
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(5)..].join("\n")
}

/// `GET /metrics` as Prometheus would: (response bytes, samples).
fn scrape_node_exporter(port: u16) -> Result<(usize, usize)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: bagui-bench\r\nAccept: text/plain\r\n\r\n"
    )?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("no end of HTTP headers")?;
    let status = head.lines().next().unwrap_or_default();
    anyhow::ensure!(status.contains(" 200"), "/metrics: {status}");
    let samples = body
        .lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .count();
    Ok((body.len(), samples))
}

/// One Zabbix passive check: `ZBXD\x01`, the key's length (u64 LE), the key; the answer has
/// the same header.
fn zabbix_get(port: u16, key: &str) -> Result<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut request = b"ZBXD\x01".to_vec();
    request.extend_from_slice(&(key.len() as u64).to_le_bytes());
    request.extend_from_slice(key.as_bytes());
    stream.write_all(&request)?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    anyhow::ensure!(
        response.len() >= 13 && response.starts_with(b"ZBXD"),
        "{key}: not a Zabbix answer ({} bytes)",
        response.len()
    );
    // Header: "ZBXD", flags, then either 4+4 or (large packets, flag 0x04) 8+8 bytes.
    let body = if response[4] & 0x04 != 0 {
        response.get(21..).unwrap_or_default()
    } else {
        &response[13..]
    };
    let value = String::from_utf8_lossy(body).replace('\0', " ");
    anyhow::ensure!(
        !value.starts_with("ZBX_NOTSUPPORTED"),
        "{key}: {}",
        value.trim()
    );
    Ok(value.trim().to_owned())
}

/// One agent's line in the footprint table.
struct FootprintRow {
    agent: String,
    binary: String,
    early: TreeMemory,
    end: TreeMemory,
    /// Seconds after start and CPU ns at the first full inventory (peers: first poll answered).
    first: Option<(f64, u64)>,
    /// CPU seconds per 120 s of wall time after `first`.
    steady_per_120: Option<f64>,
    notes: String,
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

impl FootprintRow {
    fn markdown(&self) -> String {
        format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            self.agent,
            self.binary,
            mib(self.early.rss),
            mib(self.end.rss),
            mib(self.end.hwm),
            mib(self.end.pss),
            self.first
                .map_or("not within the run".into(), |(at, ns)| format!(
                    "{:.3} s (done {at:.1} s after start)",
                    ns as f64 / 1e9
                )),
            self.steady_per_120
                .map_or("—".into(), |seconds| format!("{seconds:.3} s")),
            self.notes
        )
    }
}

#[derive(Debug, Clone, Copy)]
enum Peer {
    NodeExporter,
    ZabbixAgentd,
}

fn steady_per_120(first: Option<(f64, u64)>, end_at: f64, end_ns: u64) -> Option<f64> {
    let (at, ns) = first?;
    (end_at > at + 1.0).then(|| end_ns.saturating_sub(ns) as f64 / 1e9 / (end_at - at) * 120.0)
}

/// A peer alone for `seconds`, polled every 15 s from 5 s on.
fn measure_peer(peer: Peer, seconds: u64, work: &Path) -> Result<FootprintRow> {
    let port = free_tcp_port(match peer {
        Peer::NodeExporter => 19100,
        Peer::ZabbixAgentd => 20050,
    })?;
    let (name, binary, package, version_flag) = match peer {
        Peer::NodeExporter => (
            "node_exporter",
            NODE_EXPORTER,
            "prometheus-node-exporter",
            "--version",
        ),
        Peer::ZabbixAgentd => ("zabbix_agentd", ZABBIX_AGENTD, "zabbix-agent", "-V"),
    };
    let binary = Path::new(binary);
    let agent = version_of(name, binary, version_flag, Some(package));
    let binary_size = binary_cell(binary, work)?;
    let out_path = work.join(format!("{name}.out"));
    let out = std::fs::File::create(&out_path)?;
    let mut command = Command::new(binary);
    match peer {
        Peer::NodeExporter => {
            command.arg(format!("--web.listen-address=127.0.0.1:{port}"));
        }
        Peer::ZabbixAgentd => {
            let config = work.join("zabbix_agentd.conf");
            std::fs::write(
                &config,
                format!(
                    "PidFile={pid}\nLogType=file\nLogFile={log}\nLogFileSize=0\nServer=127.0.0.1\nServerActive=127.0.0.1\nListenIP=127.0.0.1\nListenPort={port}\nHostname=bagui-bench-footprint\nAllowRoot=1\n",
                    pid = work.join("zabbix_agentd.pid").display(),
                    log = work.join("zabbix_agentd.log").display(),
                ),
            )?;
            command.arg("-f").arg("-c").arg(&config);
        }
    }
    command
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out);
    eprintln!("bench: footprint: {agent} on 127.0.0.1:{port} for {seconds} s");
    let mut process = Started::spawn(name, &mut command)?;
    let started_at = Instant::now();
    let watch = CpuWatch::start(process.pid());
    let log = || {
        format!(
            "{}\n{}",
            log_tail(&out_path),
            log_tail(&work.join("zabbix_agentd.log"))
        )
    };
    while !tcp_listening(port) {
        if let Err(error) = process.ensure_running() {
            bail!("{error:#}; output:\n{}", log());
        }
        anyhow::ensure!(
            started_at.elapsed() < Duration::from_secs(10),
            "{name} did not listen on 127.0.0.1:{port} within 10 s; output:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let total = Duration::from_secs(seconds);
    let mut polls: Vec<Duration> =
        std::iter::successors(Some(FIRST_POLL), |at| Some(*at + POLL_EVERY))
            .take_while(|at| *at < total)
            .collect();
    polls.reverse();
    let mut early = None;
    let mut first = None;
    let (mut done, mut failed, mut last_error) = (0, 0, String::new());
    let mut scrape = (0, 0);
    loop {
        let next = [
            polls.last().copied(),
            early.is_none().then_some(EARLY),
            Some(total),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(total);
        std::thread::sleep(next.saturating_sub(started_at.elapsed()));
        if let Err(error) = process.ensure_running() {
            bail!("{error:#}; output:\n{}", log());
        }
        if early.is_none() && next == EARLY {
            early = Some(tree_memory(process.pid()));
        } else if polls.last() == Some(&next) {
            polls.pop();
            let outcome = match peer {
                Peer::NodeExporter => scrape_node_exporter(port).map(|s| scrape = s),
                Peer::ZabbixAgentd => ZABBIX_KEYS
                    .iter()
                    .try_for_each(|key| zabbix_get(port, key).map(drop)),
            };
            done += 1;
            if let Err(error) = outcome {
                failed += 1;
                last_error = format!("{error:#}");
            }
            if first.is_none() {
                first = Some((started_at.elapsed().as_secs_f64(), watch.cpu_ns().0));
            }
        } else if next == total {
            break;
        }
    }
    let end = tree_memory(process.pid());
    let (end_ns, threads_seen) = watch.cpu_ns();
    let end_at = started_at.elapsed().as_secs_f64();
    let kernel_ns = kernel_cpu_ns(process.pid());
    drop(watch);
    process.stop();
    let mut notes = format!(
        "{} process{}, {} threads ({threads_seen} seen); ",
        end.processes,
        if end.processes == 1 { "" } else { "es" },
        end.threads
    );
    match peer {
        Peer::NodeExporter => notes.push_str(&format!(
            "{done} scrapes of /metrics ({:.0} KiB, {} samples)",
            scrape.0 as f64 / 1024.0,
            scrape.1
        )),
        Peer::ZabbixAgentd => notes.push_str(&format!(
            "{done} polls × {} passive checks",
            ZABBIX_KEYS.len()
        )),
    }
    if failed > 0 {
        notes.push_str(&format!(", **{failed} failed** (last: {last_error})"));
    }
    notes.push_str(&format!(
        "; CPU in {seconds} s: {:.3} s (kernel utime+stime {:.2} s)",
        end_ns as f64 / 1e9,
        kernel_ns as f64 / 1e9
    ));
    Ok(FootprintRow {
        agent,
        binary: binary_size,
        early: early.unwrap_or_default(),
        end,
        first,
        steady_per_120: steady_per_120(first, end_at, end_ns),
        notes,
    })
}

/// `bagui-agent run` (release, default configuration) joined to a local `bagui-cp run`, for
/// `seconds`; the agent's own CPU and memory.
async fn measure_bagui(seconds: u64, work: &Path) -> Result<FootprintRow> {
    let control_plane_binary = release_binary("bagui-cp")?;
    let agent_binary = release_binary("bagui-agent")?;
    let agent = version_of("bagui-agent", &agent_binary, "--version", None);
    let binary_size = binary_cell(&agent_binary, work)?;

    let (data_dir, quic_port, cp_config) = deployment(work, "")?;
    let mut control_plane = Started::spawn(
        "bagui-cp",
        Command::new(&control_plane_binary)
            .arg("--data-dir")
            .arg(data_dir.root())
            .args(["run", "--log-level", "warn", "--config"])
            .arg(&cp_config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )?;
    let started = Instant::now();
    while !data_dir.api_info_path().exists() {
        control_plane.ensure_running()?;
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(30),
            "bagui-cp did not become ready"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let info = data_dir.api_info()?;
    let client =
        bagui_control_plane::client::ApiClient::new(&info.url, &data_dir.admin_token()?, None)?;
    let token: bagui_control_plane::admin::TokenCreated = client
        .post(
            "/api/v1/tokens",
            &CreateToken {
                division: "450103001".into(),
                ttl: "1h".into(),
                uses: 1,
                role: "terminal".into(),
                description: "bench footprint".into(),
            },
        )
        .await?;
    let agent_state = StateDir::new(work.join("agent"));
    let joined = bagui_tests::join_with(
        format!("127.0.0.1:{quic_port}"),
        data_dir.ca()?.fingerprint(),
        &agent_state,
        &token.token,
        "footprint",
        Some("450103001005".into()),
    )
    .await?;

    let log_path = work.join("bagui-agent.log");
    eprintln!("bench: footprint: {agent} for {seconds} s");
    let mut process = Started::spawn(
        "bagui-agent",
        Command::new(&agent_binary)
            .arg("run")
            .arg("--state-dir")
            .arg(agent_state.root())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_path)?),
    )?;
    let started_at = Instant::now();
    let watch = CpuWatch::start(process.pid());
    let total = Duration::from_secs(seconds);
    let reports_path = format!("/api/v1/agents/{}/reports?limit=10000", joined.agent_id);
    let mut early = None;
    let mut first: Option<(f64, u64)> = None;
    let mut snapshot: Option<(u64, u64)> = None;
    while started_at.elapsed() < total {
        if let Err(error) = process.ensure_running() {
            bail!("{error:#}; log:\n{}", log_tail(&log_path));
        }
        if early.is_none() && started_at.elapsed() >= EARLY {
            early = Some(tree_memory(process.pid()));
        }
        if first.is_none() {
            let reports: Vec<serde_json::Value> = client.get(&reports_path).await?;
            // The first full inventory: the asset snapshot and the first baseline run, both
            // stored and acknowledged (the FIM baseline is built at the same start, silently).
            let baseline_done = reports.iter().any(|r| r["kind"] == "posture_report");
            if let Some(report) = reports
                .iter()
                .find(|r| r["kind"] == "asset_snapshot")
                .filter(|_| baseline_done)
            {
                first = Some((started_at.elapsed().as_secs_f64(), watch.cpu_ns().0));
                snapshot = Some((
                    report["seq"].as_u64().unwrap_or(0),
                    report["size"].as_u64().unwrap_or(0),
                ));
            }
        }
        let pause = if first.is_none() {
            Duration::from_millis(100)
        } else {
            Duration::from_millis(500)
        };
        let until_early = EARLY.saturating_sub(started_at.elapsed());
        let until_end = total.saturating_sub(started_at.elapsed());
        let mut wait = pause.min(until_end);
        if early.is_none() && !until_early.is_zero() {
            wait = wait.min(until_early);
        }
        tokio::time::sleep(wait).await;
    }
    let end = tree_memory(process.pid());
    let (end_ns, threads_seen) = watch.cpu_ns();
    let end_at = started_at.elapsed().as_secs_f64();
    let kernel_ns = kernel_cpu_ns(process.pid());
    let status = status_of(&agent_state).unwrap_or_default();
    drop(watch);
    process.stop();
    control_plane.stop();
    let mut notes = format!(
        "{} process{}, {} threads ({threads_seen} seen); ",
        end.processes,
        if end.processes == 1 { "" } else { "es" },
        end.threads
    );
    match snapshot {
        Some((seq, size)) => {
            let acked = status["last_acked_seq"].as_u64().unwrap_or(0);
            notes.push_str(&format!(
                "asset snapshot (seq {seq}, {:.0} KiB) stored{}",
                size as f64 / 1024.0,
                if acked >= seq {
                    " and acknowledged"
                } else {
                    ", **acknowledgement not seen in status.json**"
                }
            ));
        }
        None => notes.push_str("**no asset snapshot stored within the run**"),
    }
    notes.push_str(&format!(
        "; {} reports acknowledged, {} collector errors; CPU in {seconds} s: {:.3} s (kernel utime+stime {:.2} s)",
        status["reports_acked"].as_u64().unwrap_or(0),
        status["collector_errors"].as_u64().unwrap_or(0),
        end_ns as f64 / 1e9,
        kernel_ns as f64 / 1e9
    ));
    Ok(FootprintRow {
        agent,
        binary: binary_size,
        early: early.unwrap_or_default(),
        end,
        first,
        steady_per_120: steady_per_120(first, end_at, end_ns),
        notes,
    })
}

fn target_line(met: bool) -> &'static str {
    if met { "met" } else { "**not met**" }
}

async fn footprint(args: &Args) -> Result<String> {
    let seconds = args.footprint_seconds;
    // Every binary first, so a missing peer fails before minutes of measuring.
    release_binary("bagui-cp")?;
    release_binary("bagui-agent")?;
    for (binary, package) in [
        (NODE_EXPORTER, "prometheus-node-exporter"),
        (ZABBIX_AGENTD, "zabbix-agent"),
    ] {
        anyhow::ensure!(
            Path::new(binary).exists(),
            "{binary} is missing: the footprint section measures it beside bagui-agent; install the Debian package {package} (`apt-get install --no-install-recommends {package}`)"
        );
    }
    let temporary = tempfile::tempdir()?;
    let work = temporary.path().to_owned();
    let bagui = measure_bagui(seconds, &work).await?;
    let mut rows = vec![bagui];
    for peer in [Peer::NodeExporter, Peer::ZabbixAgentd] {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let work = work.clone();
        rows.push(tokio::task::spawn_blocking(move || measure_peer(peer, seconds, &work)).await??);
    }

    let mut out = machine_line(&format!(
        "target/release/bagui-bench --sections footprint --footprint-seconds {seconds}"
    ));
    out.push_str(&format!(
        "Each agent alone, one after another, for {seconds} s. Memory is summed over the agent's process tree from `/proc` (`VmRSS`; peak = `VmHWM`; `smaps_rollup` Pss), sampled at 10 s and at the end. CPU is time on CPU from `/proc/PID/task/*/schedstat` (ns), summed over threads and processes, sampled every 250 ms per thread so threads that exit still count. **bagui-agent**: `bagui-agent run` (release, default configuration: metrics every 15 s, asset changes every 5 min, security baseline hourly and on protected-file changes, host facts hourly) joined to a local `bagui-cp run`; the agent's own process only. **Peers**: Debian's packages on a free 127.0.0.1 port, polled every 15 s from 5 s on as their servers would (node_exporter: `GET /metrics`; zabbix_agentd: passive checks of {}). *First inventory CPU*: bagui-agent — from start until its first asset snapshot and its first security-baseline run are stored and acknowledged (the FIM baseline is built silently at the same start); peers — from start until their first poll is answered. *CPU per 120 s steady*: CPU from that moment to the end, scaled to 120 s of wall time.\n\n",
        ZABBIX_KEYS.map(|key| format!("`{key}`")).join(", ")
    ));
    out.push_str("| agent | binary (stripped) | RSS @10 s | RSS @end | peak RSS | PSS @end | first inventory CPU | CPU per 120 s steady | notes |\n|---|---|---|---|---|---|---|---|---|\n");
    for row in &rows {
        out.push_str(&row.markdown());
    }
    let ours = &rows[0];
    let node = &rows[1];
    let binary_mib = std::fs::metadata(release_binary("bagui-agent")?)?.len() as f64 / 1048576.0;
    out.push_str(&format!(
        "\nTargets (measured, not asserted):\n\n- agent RSS ≤ 10 MiB: RSS @end {}, peak {} — {} (peak: {})\n",
        mib(ours.end.rss),
        mib(ours.end.hwm),
        target_line(ours.end.rss <= 10 * 1024),
        target_line(ours.end.hwm <= 10 * 1024),
    ));
    out.push_str(&match (ours.steady_per_120, node.steady_per_120) {
        (Some(a), Some(b)) => format!(
            "- agent CPU per 120 s ≤ node_exporter's: {a:.3} s vs {b:.3} s — {}\n",
            target_line(a <= b)
        ),
        _ => "- agent CPU per 120 s ≤ node_exporter's: not measured (no first inventory or first poll within the run) — **not met**\n".into(),
    });
    out.push_str(&format!(
        "- agent binary ≤ 10 MiB: {binary_mib:.1} MiB — {}\n",
        target_line(binary_mib <= 10.0)
    ));
    Ok(out)
}

/// Runs `op` until `at_least` has passed (and at least 3 times); its rate per second.
fn crypto_rate(at_least: Duration, mut op: impl FnMut()) -> f64 {
    op(); // warm up
    let started = Instant::now();
    let mut count = 0u64;
    while count < 3 || started.elapsed() < at_least {
        op();
        count += 1;
    }
    count as f64 / started.elapsed().as_secs_f64()
}

/// ShangMi (国密) throughput on this machine: SM3, SM4-CCM (the outbox's record cipher), SM2
/// signatures (the agent's proofs) and SM2 encryption (data-key wrapping), the control plane's
/// opening of sealed reports, and what sealing costs the outbox's push rate.
fn crypto_section() -> Result<String> {
    use bagui_control_plane::ingest::Unsealer;
    use bagui_protocol::sealed::{
        self, DataKey, Envelope, Opener, Recipient, RecordContext, SM4_CCM_SM2,
    };
    use sm2::dsa::signature::{Signer, Verifier};
    use sm3::Digest;

    let second = Duration::from_secs(1);
    let mib = 1usize << 20;
    let mut text = String::from("## ShangMi crypto\n\n");
    text.push_str(&machine_line(
        "target/release/bagui-bench --sections crypto",
    ));
    text.push_str(&format!(
        "Load average (1 min) when the section started: {}; other work on the machine slows every row.\n\n",
        load_average()
    ));
    text.push_str("One thread, release build (`opt-level = \"s\"`, as shipped); RustCrypto `sm2`/`sm3`/`sm4`/`ccm`, pure Rust (no assembly, no AES-NI-like instructions for SM4).\n\n| operation | rate |\n|---|---|\n");
    let mut row = |name: &str, value: String| text.push_str(&format!("| {name} | {value} |\n"));

    let buffer = vec![0x5Au8; mib];
    let sm3 = crypto_rate(second, || {
        std::hint::black_box(sm3::Sm3::digest(std::hint::black_box(&buffer)));
    });
    row("SM3, 1 MiB buffers", format!("{sm3:.0} MiB/s"));

    let secret = <sm2::SecretKey as sm2::elliptic_curve::Generate>::try_generate()
        .map_err(|error| anyhow::anyhow!("generating an SM2 key: {error}"))?;
    let recipient = Recipient::new(secret.public_key());
    let opener = Opener::new(&secret);
    let mut data_key = DataKey::generate(&recipient)?;
    let context = RecordContext {
        lane: Lane::Metrics,
        seq: 1,
        created_ms: 1,
        kind: "metrics",
    };
    let seal = crypto_rate(second, || {
        std::hint::black_box(data_key.seal(&context, &buffer).unwrap());
    });
    row("SM4-CCM seal, 1 MiB bodies", format!("{seal:.0} MiB/s"));
    let sealed_mib = data_key.seal(&context, &buffer)?;
    let envelope = Envelope::parse(SM4_CCM_SM2, &sealed_mib)?;
    let key = envelope.unwrap_key(&opener)?;
    let open = crypto_rate(second, || {
        std::hint::black_box(envelope.open_with(&key, &context).unwrap());
    });
    row("SM4-CCM open, 1 MiB bodies", format!("{open:.0} MiB/s"));

    let signing = sm2::dsa::SigningKey::new(bagui_protocol::proof::SM2_DISTID, &secret)
        .map_err(|error| anyhow::anyhow!("loading the SM2 key: {error}"))?;
    let transcript = bagui_protocol::proof::transcript(
        bagui_protocol::proof::ProofPurpose::Rejoin,
        "ag-bench",
        &[7; 32],
    );
    let signature: sm2::dsa::Signature = signing.sign(&transcript);
    let sign = crypto_rate(second, || {
        let signature: sm2::dsa::Signature = signing.sign(std::hint::black_box(&transcript));
        std::hint::black_box(signature);
    });
    row(
        "SM2 sign (agent proof, ID `1234567812345678`)",
        format!("{sign:.0} /s"),
    );
    let verify = crypto_rate(second, || {
        signing
            .verifying_key()
            .verify(std::hint::black_box(&transcript), &signature)
            .unwrap();
    });
    row("SM2 verify", format!("{verify:.0} /s"));

    let data = [0x11u8; sealed::KEY_LEN];
    let wrapped = recipient.wrap(&data)?;
    let encrypt = crypto_rate(second, || {
        std::hint::black_box(recipient.wrap(&data).unwrap());
    });
    row(
        "SM2 encrypt (wrap a 16-byte SM4 data key, C1C3C2)",
        format!("{encrypt:.0} /s"),
    );
    let decrypt = crypto_rate(second, || {
        std::hint::black_box(opener.unwrap_bytes(&wrapped).unwrap());
    });
    row(
        "SM2 decrypt (unwrap a data key)",
        format!("{decrypt:.0} /s"),
    );

    let report = data_key.seal(&context, &[0x42; 1024])?;
    let cached = Unsealer::new(&secret);
    cached.open_now(SM4_CCM_SM2, &report, &context)?;
    let hit = crypto_rate(second, || {
        std::hint::black_box(cached.open_now(SM4_CCM_SM2, &report, &context).unwrap());
    });
    row(
        "control plane: open a 1 KiB report, data key cached",
        format!("{hit:.0} /s"),
    );
    let miss = crypto_rate(second, || {
        let fresh = Unsealer::new(&secret);
        std::hint::black_box(fresh.open_now(SM4_CCM_SM2, &report, &context).unwrap());
    });
    row(
        "control plane: open a 1 KiB report, first of its data key",
        format!("{miss:.0} /s"),
    );

    let small = crypto_rate(second, || {
        std::hint::black_box(data_key.seal(&context, &[0x42; 1024]).unwrap());
    });
    row(
        "agent: seal a 1 KiB record (no I/O)",
        format!("{small:.0} /s"),
    );

    // Pushes are fsync-bound and the disk is shared: alternate the two kinds, 1 s a round,
    // and take the median of 5 rounds each.
    let mut rounds: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let dirs = [tempfile::tempdir()?, tempfile::tempdir()?];
    let outboxes = [
        bagui_agent::outbox::Outbox::open(dirs[0].path(), 256 << 20)?,
        bagui_agent::outbox::Outbox::open(dirs[1].path(), 256 << 20)?
            .with_encryption(recipient.clone()),
    ];
    let body = vec![0x33u8; 1024];
    let mut created = 0;
    for _ in 0..5 {
        for (kind, outbox) in outboxes.iter().enumerate() {
            rounds[kind].push(crypto_rate(second, || {
                created += 1;
                outbox
                    .push(Lane::Metrics, "metrics", created, &body)
                    .unwrap();
            }));
        }
    }
    let [plain, sealed_rounds] = rounds;
    for (name, rates) in [
        ("plaintext", plain),
        ("sealed (sm4-ccm/sm2)", sealed_rounds),
    ] {
        row(
            &format!("outbox push, 1 KiB bodies, {name}: each push fdatasync'd, median of 5 × 1 s"),
            format!("{:.0} records/s", median(rates)),
        );
    }
    transport_sm4_rows(&mut row, &buffer);
    text.push('\n');
    text.push_str("The transport rows (`bagui-smtls`, the primitives of the link under the `shangmi` crypto profile) use the constant-time SM4 (computed S-box, bitsliced 16 blocks at a time; built at opt-level 3), the table rows the RustCrypto `sm4` crate that seals records at rest. A QUIC packet's SM4-GCM costs its tail blocks and tag mask one at a time, hence the gap between bulk and 1,200-byte packets.\n");
    Ok(text)
}

/// SM4 for the transport: the table-based `sm4` crate against the constant-time SM4 of
/// `bagui-smtls`, in bulk and one block per call, and SM4-GCM over the latter in bulk and per
/// 1,200-byte QUIC packet.
fn transport_sm4_rows(row: &mut impl FnMut(&str, String), buffer: &[u8]) {
    use bagui_smtls::gcm::Sm4Gcm;
    use bagui_smtls::gcm::aead::AeadInOut;
    use cipher::{Block, BlockCipherEncrypt, KeyInit};

    let second = Duration::from_secs(1);
    let key = [0x42u8; 16];
    let mib = buffer.len() as f64 / f64::from(1u32 << 20);
    let mut data = buffer.to_vec();
    let table = <sm4::Sm4 as KeyInit>::new(&key.into());
    let rate = crypto_rate(second, || {
        let (blocks, _) = Block::<sm4::Sm4>::slice_as_chunks_mut(&mut data);
        table.encrypt_blocks(blocks);
    });
    row(
        "SM4 block encryption, table (`sm4` crate), 1 MiB",
        format!("{:.0} MiB/s", rate * mib),
    );
    let constant = <bagui_smtls::sm4::Sm4 as KeyInit>::new(&key.into());
    let rate = crypto_rate(second, || {
        let (blocks, _) = Block::<bagui_smtls::sm4::Sm4>::slice_as_chunks_mut(&mut data);
        constant.encrypt_blocks(blocks);
    });
    row(
        "SM4 block encryption, constant time (`bagui-smtls`), 1 MiB",
        format!("{:.0} MiB/s", rate * mib),
    );
    let rate = crypto_rate(second, || {
        for chunk in data.chunks_exact_mut(16) {
            if let Ok(block) = <&mut Block<bagui_smtls::sm4::Sm4>>::try_from(chunk) {
                constant.encrypt_block(block);
            }
        }
    });
    row(
        "SM4 block encryption, constant time, one block per call",
        format!("{:.0} MiB/s", rate * mib),
    );
    let gcm = <Sm4Gcm as KeyInit>::new(&key.into());
    let rate = crypto_rate(second, || {
        let tag = gcm.encrypt_inout_detached(&[0u8; 12].into(), b"", data.as_mut_slice().into());
        std::hint::black_box(tag.ok());
    });
    row(
        "SM4-GCM seal (constant-time SM4), 1 MiB",
        format!("{:.0} MiB/s", rate * mib),
    );
    let rate = crypto_rate(second, || {
        for packet in data.chunks_mut(1200) {
            let tag = gcm.encrypt_inout_detached(&[0u8; 12].into(), b"", packet.into());
            std::hint::black_box(tag.ok());
        }
    });
    row(
        "SM4-GCM seal (constant-time SM4), 1,200-byte packets",
        format!("{:.0} MiB/s", rate * mib),
    );
}

/// One crypto profile's deployment for the loopback QUIC rows: a data directory made by
/// `init --crypto-profile` (CA, control-plane server certificate) and an agent client
/// certificate issued as the join issues it (a PKCS#10 request, or an SM2 public key).
struct LoopbackDeployment {
    _directory: tempfile::TempDir,
    ca: rustls::pki_types::CertificateDer<'static>,
    server_chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    server_key: rustls::pki_types::PrivateKeyDer<'static>,
    client_cert: rustls::pki_types::CertificateDer<'static>,
    client_key: rustls::pki_types::PrivateKeyDer<'static>,
}

fn loopback_deployment(profile: bagui_protocol::CryptoProfile) -> Result<LoopbackDeployment> {
    use bagui_control_plane::datadir::InitOptions;
    use bagui_control_plane::pki::{self, ClientKey};
    use bagui_protocol::CryptoProfile;

    let directory = tempfile::tempdir()?;
    let data_dir = DataDir::new(directory.path().join("cp"));
    data_dir.init_with(
        "127.0.0.1:4433",
        &[],
        &SystemClock,
        &InitOptions {
            ca_passphrase: None,
            crypto_profile: profile,
        },
    )?;
    let ca = data_dir.ca()?;
    let (server_chain, server_key) = data_dir.server_identity(&ca, &SystemClock)?;
    let now = bagui_agent::join::now_ms();
    let (not_before, not_after) = (now - 3_600_000, now + 86_400_000);
    let (client_cert, client_key) = match profile {
        CryptoProfile::Standard => {
            let key = rcgen::KeyPair::generate()?;
            let csr = rcgen::CertificateParams::default().serialize_request(&key)?;
            let cert =
                ca.issue_client_key(ClientKey::Csr(csr.der()), "ag-bench", not_before, not_after)?;
            (cert, pki::key_der_from_pem(&key.serialize_pem())?)
        }
        CryptoProfile::Shangmi => {
            use sm2::pkcs8::EncodePrivateKey;
            let secret = bagui_smtls::cert::generate_key()?;
            let cert = ca.issue_client_key(
                ClientKey::Sm2(&secret.public_key()),
                "ag-bench",
                not_before,
                not_after,
            )?;
            let der = secret
                .to_pkcs8_der()
                .map_err(|error| anyhow::anyhow!("encoding the SM2 key: {error}"))?;
            let key = rustls::pki_types::PrivatePkcs8KeyDer::from(der.as_bytes().to_vec());
            (cert, rustls::pki_types::PrivateKeyDer::Pkcs8(key))
        }
    };
    Ok(LoopbackDeployment {
        _directory: directory,
        ca: ca.cert_der().clone(),
        server_chain,
        server_key,
        client_cert,
        client_key,
    })
}

impl LoopbackDeployment {
    /// The control plane's QUIC endpoint, configured as `bagui-cp run` configures it.
    fn server(&self) -> Result<quinn::Endpoint> {
        let config = bagui_control_plane::tls::quic_server_config(
            self.server_chain.clone(),
            self.server_key.clone_key(),
            &self.ca,
            bagui_control_plane::tls::server_transport(Duration::from_secs(30)),
        )?;
        Ok(quinn::Endpoint::server(
            config,
            std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        )?)
    }

    /// An agent's session configuration, made afresh for every connection as the agent's
    /// link does (so every handshake is a full one: no resumption across connections).
    fn session(&self) -> Result<quinn::ClientConfig> {
        bagui_agent::tls::session_config(
            &self.ca,
            self.client_cert.clone(),
            self.client_key.clone_key(),
            bagui_agent::tls::client_transport(Duration::from_secs(30), Duration::from_secs(10)),
        )
    }
}

/// Sequential mutually authenticated QUIC handshakes over loopback, server and agent endpoints
/// in this process: each connects, completes the handshake on both ends (the server checks the
/// agent's certificate, then closes), and is closed. At most `limit` handshakes or `budget`
/// of time after 3 warm-up ones. Returns handshakes/s and each handshake's milliseconds.
async fn quic_handshakes(
    deployment: &LoopbackDeployment,
    limit: usize,
    budget: Duration,
) -> Result<(f64, Vec<f64>)> {
    let server = deployment.server()?;
    let address = server.local_addr()?;
    let authenticated = Arc::new(AtomicU64::new(0));
    let acceptor = tokio::spawn({
        let server = server.clone();
        let authenticated = authenticated.clone();
        async move {
            while let Some(incoming) = server.accept().await {
                if let Ok(connection) = incoming.await {
                    if connection.peer_identity().is_some() {
                        authenticated.fetch_add(1, Ordering::Relaxed);
                    }
                    connection.close(0u32.into(), b"bench");
                }
            }
        }
    });
    let client = bagui_agent::wire::client_endpoint(address)?;
    for _ in 0..3 {
        one_handshake(deployment, &client, address).await?;
    }
    let mut times = Vec::new();
    let started = Instant::now();
    while times.len() < limit && started.elapsed() < budget {
        times.push(one_handshake(deployment, &client, address).await?);
    }
    let rate = times.len() as f64 / started.elapsed().as_secs_f64();
    let expected = times.len() as u64 + 3;
    // The server counts after its side completes; give the last close a moment to land.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let seen = authenticated.load(Ordering::Relaxed);
    server.close(0u32.into(), b"done");
    client.close(0u32.into(), b"done");
    acceptor.abort();
    anyhow::ensure!(
        seen == expected,
        "the server saw {seen} authenticated agents for {expected} handshakes"
    );
    Ok((rate, times))
}

/// One agent connection: connect with a fresh session configuration, wait for the server to
/// close it once the handshake is complete on its side. Milliseconds from connect to close.
async fn one_handshake(
    deployment: &LoopbackDeployment,
    client: &quinn::Endpoint,
    address: std::net::SocketAddr,
) -> Result<f64> {
    let config = deployment.session()?;
    let started = Instant::now();
    let connection = client.connect_with(config, address, "127.0.0.1")?.await?;
    let reason = connection.closed().await;
    let elapsed = started.elapsed().as_secs_f64() * 1000.0;
    anyhow::ensure!(
        matches!(reason, quinn::ConnectionError::ApplicationClosed(_)),
        "handshake ended in {reason}"
    );
    Ok(elapsed)
}

/// One-way bulk transfer over one QUIC stream, agent to control plane, on loopback: `limit`
/// bytes or `budget` of time, whichever ends first, timed until the server acknowledges the
/// byte count it read. Returns bytes, seconds and this process's CPU seconds (both ends).
async fn quic_bulk(
    deployment: &LoopbackDeployment,
    limit: u64,
    budget: Duration,
) -> Result<(u64, f64, f64)> {
    let server = deployment.server()?;
    let address = server.local_addr()?;
    let receiver = tokio::spawn({
        let server = server.clone();
        async move {
            let incoming = server.accept().await.context("no connection")?;
            let connection = incoming.await?;
            let (mut send, mut recv) = connection.accept_bi().await?;
            let mut total = 0u64;
            while let Some(chunk) = recv.read_chunk(usize::MAX, true).await? {
                total += chunk.bytes.len() as u64;
            }
            send.write_all(&total.to_be_bytes()).await?;
            send.finish()?;
            connection.closed().await;
            anyhow::Ok(total)
        }
    });
    let client = bagui_agent::wire::client_endpoint(address)?;
    let connection = client
        .connect_with(deployment.session()?, address, "127.0.0.1")?
        .await?;
    let (mut send, mut recv) = connection.open_bi().await?;
    let chunk = bytes::Bytes::from(vec![0x5Au8; 64 * 1024]);
    let cpu_before = cpu_seconds(std::process::id());
    let started = Instant::now();
    let mut sent = 0u64;
    while sent < limit && started.elapsed() < budget {
        send.write_chunk(chunk.clone()).await?;
        sent += chunk.len() as u64;
    }
    send.finish()?;
    let mut count = [0u8; 8];
    recv.read_exact(&mut count).await?;
    let seconds = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds(std::process::id()) - cpu_before;
    connection.close(0u32.into(), b"done");
    let received = receiver.await??;
    client.close(0u32.into(), b"done");
    server.close(0u32.into(), b"done");
    anyhow::ensure!(
        received == sent && u64::from_be_bytes(count) == sent,
        "sent {sent} bytes, the server read {received}"
    );
    Ok((sent, seconds, cpu))
}

/// QUIC over loopback, both crypto profiles, with the control plane's and the agent's own
/// TLS and transport configurations: full mutual-TLS handshakes, and bulk over one stream.
async fn quic_loopback_rows() -> Result<String> {
    use bagui_protocol::CryptoProfile;
    const HANDSHAKES: usize = 2000;
    const HANDSHAKE_BUDGET: Duration = Duration::from_secs(10);
    const BULK: u64 = 512 << 20;
    const BULK_BUDGET: Duration = Duration::from_secs(15);

    let mut text = format!(
        "\n### QUIC over loopback, mutual TLS\n\nquinn 0.11 / rustls 0.23, a control-plane endpoint (`tls::quic_server_config`, `server_transport`) and an agent endpoint (`tls::session_config`, `client_transport`) in this one process on 127.0.0.1, so both ends' CPU is on these 2 cores; certificates from `init --crypto-profile` and the join's issuance (standard: ECDSA P-256, shangmi: SM2 with SM3). Handshakes: sequential, each with a fresh agent configuration as the agent's link makes one per connection (full handshake, no resumption), from connect until the server, having verified the agent's certificate, closes; at most {HANDSHAKES} or {} s after 3 warm-up. Bulk: one stream agent → control plane, {} MiB or {} s, timed until the server acknowledges the byte count; CPU is the process's (both ends).\n\n| profile (suite, group) | handshakes/s | median | p99 | handshakes | bulk, one stream | CPU per GiB |\n|---|---|---|---|---|---|---|\n",
        HANDSHAKE_BUDGET.as_secs(),
        BULK >> 20,
        BULK_BUDGET.as_secs()
    );
    for profile in CryptoProfile::ALL {
        let deployment = loopback_deployment(profile)?;
        let (rate, times) = quic_handshakes(&deployment, HANDSHAKES, HANDSHAKE_BUDGET)
            .await
            .with_context(|| format!("{profile} handshakes"))?;
        let count = times.len();
        let mut sorted = times;
        sorted.sort_by(f64::total_cmp);
        let (median_ms, p99_ms) = (percentile(&sorted, 0.5), percentile(&sorted, 0.99));
        let (bytes, seconds, cpu) = quic_bulk(&deployment, BULK, BULK_BUDGET)
            .await
            .with_context(|| format!("{profile} bulk"))?;
        let mib = bytes as f64 / f64::from(1u32 << 20);
        text.push_str(&format!(
            "| {profile} ({}, {}) | {rate:.0} /s | {median_ms:.2} ms | {p99_ms:.2} ms | {count} | {:.0} MiB/s ({mib:.0} MiB in {seconds:.1} s) | {:.1} CPU s |\n",
            profile.tls_suite(),
            profile.kx_group(),
            mib / seconds,
            cpu / (mib / 1024.0),
        ));
    }
    text.push_str(&format!(
        "\nLoad average (1 min) after these rows: {}.\n\n",
        load_average()
    ));
    Ok(text)
}

/// The 1-minute load average, from `/proc/loadavg`.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "unknown".into())
}
