//! `bagui-sim`: simulate a fleet of agents against a running control plane, on loopback.
//!
//!     bagui-cp init --data-dir DIR --advertise 127.0.0.1:7443
//!     bagui-cp run --data-dir DIR &
//!     bagui-sim --data-dir DIR --agents 17965 --interval 15s --duration 120s --output json
//!
//! By default one agent per township and village of the data directory's division tree
//! (17,965 for Guangxi). Identities are issued in bulk by the control plane on first use and
//! cached in DIR/sim/. Bounded: the run stops after `--duration` (plus the ramp-up).

/// mimalloc, as in `bagui-cp`: with glibc's malloc the simulator spent an eighth of its CPU in
/// the allocator's bookkeeping at province scale (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use bagui_protocol::units;
use bagui_tests::sim::{self, Fleet, FleetConfig, Summary, Target};
use clap::{Parser, ValueEnum};

#[derive(Clone, Copy, ValueEnum)]
enum Output {
    Table,
    Json,
}

#[derive(Parser)]
#[command(
    name = "bagui-sim",
    about = "Simulate Bagui agents against a control plane on loopback"
)]
struct Args {
    /// The running control plane's data directory.
    #[arg(long, env = "BAGUI_DATA_DIR")]
    data_dir: PathBuf,
    /// Agents to simulate (default: one per township and village).
    #[arg(long)]
    agents: Option<usize>,
    /// Metrics report interval per agent.
    #[arg(long, default_value = "15s", value_parser = units::parse_duration)]
    interval: Duration,
    /// How long to run once every agent has started.
    #[arg(long, default_value = "120s", value_parser = units::parse_duration)]
    duration: Duration,
    /// Spread first connections over this long (default: 2 ms per agent, the control plane's
    /// default admission rate, at most 120 s).
    #[arg(long, value_parser = units::parse_duration)]
    ramp: Option<Duration>,
    /// UDP sockets the connections share.
    #[arg(long, default_value_t = 8)]
    sockets: usize,
    /// Metric samples per report.
    #[arg(long, default_value_t = 20)]
    samples: usize,
    /// Packages in each agent's first full asset snapshot (0: no asset reports).
    #[arg(long, default_value_t = 500)]
    packages: usize,
    #[arg(long, value_enum, default_value = "table")]
    output: Output,
}

fn ms(value: f64) -> String {
    if value.is_nan() {
        "-".into()
    } else {
        format!("{value:.1} ms")
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let target = Target::open(&args.data_dir)?;
    let count = match args.agents {
        Some(count) => count,
        None => {
            let levels = target.data_dir.divisions()?.level_counts();
            levels[3] + levels[4]
        }
    };
    anyhow::ensure!(
        (1..=200_000).contains(&count),
        "--agents must be 1..=200000"
    );
    eprintln!(
        "bagui-sim: provisioning {count} identities (cached in {}/sim)",
        args.data_dir.display()
    );
    let identities = sim::provision(&target.data_dir, &target.client, count).await?;
    let ramp = args.ramp.unwrap_or_else(|| sim::default_ramp(count));
    let fleet = Fleet::start(
        identities,
        target.ca.clone(),
        FleetConfig {
            server: target.server,
            interval: args.interval,
            sockets: args.sockets,
            ramp,
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(30),
            samples_per_report: args.samples,
            packages_per_snapshot: args.packages,
        },
    )?;
    // Ramp up, then measure for `duration`; progress goes to stderr every 5 s.
    let mut all_connected_at = None;
    let ramp_deadline = ramp + Duration::from_secs(120);
    let mut next_progress = Duration::from_secs(5);
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let connected = fleet
            .stats
            .connected
            .load(std::sync::atomic::Ordering::Relaxed);
        if fleet.elapsed() >= next_progress {
            next_progress += Duration::from_secs(5);
            eprintln!(
                "bagui-sim: {:>5.0}s ramping: connected {connected} of {count}, sessions opened {}, lag {} ms",
                fleet.elapsed().as_secs_f64(),
                fleet
                    .stats
                    .sessions_opened
                    .load(std::sync::atomic::Ordering::Relaxed),
                fleet.stats.take_recent_lag().as_millis(),
            );
        }
        if all_connected_at.is_none() && connected >= count {
            all_connected_at = Some(fleet.elapsed());
        }
        if all_connected_at.is_some() || fleet.elapsed() > ramp_deadline {
            break;
        }
    }
    let _ = fleet.take_latencies();
    let measured_from = fleet.elapsed();
    let acked_before = fleet
        .stats
        .reports_acked
        .load(std::sync::atomic::Ordering::Relaxed);
    let mut latencies = Vec::new();
    while fleet.elapsed() < measured_from + args.duration {
        tokio::time::sleep(Duration::from_secs(5).min(args.duration)).await;
        let mut recent = fleet.take_latencies();
        recent.sort_by(|a, b| a.total_cmp(b));
        latencies.extend_from_slice(&recent);
        let stats = &fleet.stats;
        eprintln!(
            "bagui-sim: {:>5.0}s connected {} sent {} acked {} (p99 {:.0} ms) errors {} lag {} ms",
            fleet.elapsed().as_secs_f64(),
            stats.connected.load(std::sync::atomic::Ordering::Relaxed),
            stats
                .reports_sent
                .load(std::sync::atomic::Ordering::Relaxed),
            stats
                .reports_acked
                .load(std::sync::atomic::Ordering::Relaxed),
            sim::percentile(&recent, 0.99),
            stats.errors.load(std::sync::atomic::Ordering::Relaxed),
            stats.take_recent_lag().as_millis(),
        );
    }
    let measured = fleet.elapsed() - measured_from;
    let stats = fleet.stats.clone();
    let acked_in_window = stats
        .reports_acked
        .load(std::sync::atomic::Ordering::Relaxed)
        - acked_before;
    let connected = stats.connected.load(std::sync::atomic::Ordering::Relaxed);
    fleet.stop(Duration::from_secs(2)).await;
    latencies.sort_by(|a, b| a.total_cmp(b));
    let load =
        |counter: &std::sync::atomic::AtomicU64| counter.load(std::sync::atomic::Ordering::Relaxed);
    let summary = Summary {
        agents: count,
        agents_connected: connected,
        agents_ever_connected: stats
            .ever_connected
            .load(std::sync::atomic::Ordering::Relaxed),
        time_to_all_connected_ms: all_connected_at.map(|at| at.as_millis() as u64),
        reports_sent: load(&stats.reports_sent),
        reports_acked: load(&stats.reports_acked),
        samples_sent: load(&stats.samples_sent),
        reports_per_second: acked_in_window as f64 / measured.as_secs_f64(),
        ack_p50_ms: sim::percentile(&latencies, 0.5),
        ack_p99_ms: sim::percentile(&latencies, 0.99),
        ack_max_ms: sim::percentile(&latencies, 1.0),
        sessions_opened: load(&stats.sessions_opened),
        come_back_hints: load(&stats.come_back_hints),
        errors: load(&stats.errors),
        sim_lag_max_ms: load(&stats.lag_max_us) as f64 / 1000.0,
        duration_s: measured.as_secs_f64(),
        interval_s: args.interval.as_secs_f64(),
    };
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&summary)?),
        Output::Table => {
            println!(
                "agents            {} ({} connected at the end, {} ever)",
                summary.agents, summary.agents_connected, summary.agents_ever_connected
            );
            println!(
                "all connected in  {}",
                summary
                    .time_to_all_connected_ms
                    .map_or("never".into(), |ms| format!("{:.1} s", ms as f64 / 1000.0))
            );
            println!(
                "reports           {} sent, {} acknowledged ({:.0}/s over {:.0} s)",
                summary.reports_sent,
                summary.reports_acked,
                summary.reports_per_second,
                summary.duration_s
            );
            println!("samples           {}", summary.samples_sent);
            println!(
                "ack latency       p50 {}  p99 {}  max {}",
                ms(summary.ack_p50_ms),
                ms(summary.ack_p99_ms),
                ms(summary.ack_max_ms)
            );
            println!(
                "sessions          {} opened, {} come-back hints",
                summary.sessions_opened, summary.come_back_hints
            );
            println!("errors            {}", summary.errors);
            println!("simulator lag     {:.0} ms worst", summary.sim_lag_max_ms);
        }
    }
    Ok(())
}
