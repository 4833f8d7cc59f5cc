//! The agent's own metrics in Prometheus text format on an optional local port
//! (`[self_metrics] listen = "127.0.0.1:9469"`; off by default). Loopback only: the endpoint has
//! no authentication, so it is for a local scraper, never the network.
//!
//! A deliberately tiny HTTP/1.0 responder: one `GET` per connection, a bounded request, a
//! bounded time, no keep-alive. It costs nothing while nobody asks.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use bagui_protocol::Lane;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::outbox::Outbox;
use crate::status::{LinkState, StatusBoard};

/// The exposition of the agent's state right now.
pub fn render(status: &StatusBoard, outbox: &Outbox) -> String {
    let status = status.get();
    let stats = outbox.stats();
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, samples: &[(String, f64)]| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, value) in samples {
            if labels.is_empty() {
                let _ = writeln!(out, "{name} {value}");
            } else {
                let _ = writeln!(out, "{name}{{{labels}}} {value}");
            }
        }
    };
    let lanes = |value: &dyn Fn(Lane) -> f64| -> Vec<(String, f64)> {
        Lane::ALL
            .iter()
            .map(|lane| (format!("lane=\"{}\"", lane.as_str()), value(*lane)))
            .collect()
    };
    family(
        "bagui_agent_outbox_records",
        "gauge",
        "Reports waiting in the outbox",
        &[(String::new(), stats.records as f64)],
    );
    family(
        "bagui_agent_outbox_bytes",
        "gauge",
        "Bytes the outbox holds",
        &[(String::new(), stats.bytes as f64)],
    );
    family(
        "bagui_agent_outbox_dropped_total",
        "counter",
        "Reports the full outbox dropped, by lane",
        &lanes(&|lane| stats.dropped.get(lane) as f64),
    );
    family(
        "bagui_agent_reports_acked_total",
        "counter",
        "Reports the control plane acknowledged since the agent started",
        &[(String::new(), status.reports_acked as f64)],
    );
    family(
        "bagui_agent_reports_renumbered_total",
        "counter",
        "Reports sent again under a new number because the control plane held another report under theirs (state restored from a backup)",
        &[(String::new(), status.reports_renumbered as f64)],
    );
    family(
        "bagui_agent_link_up",
        "gauge",
        "1 while a session with the control plane is open",
        &[(
            String::new(),
            f64::from(u8::from(status.link == LinkState::Connected)),
        )],
    );
    if let Some(rtt) = status.rtt_ms {
        family(
            "bagui_agent_link_rtt_seconds",
            "gauge",
            "Smoothed RTT of the QUIC connection",
            &[(String::new(), rtt / 1000.0)],
        );
    }
    family(
        "bagui_agent_collector_errors_total",
        "counter",
        "Collector runs that failed or missed their deadline",
        &[(String::new(), status.collector_errors as f64)],
    );
    if let Some(rss) = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|line| line.strip_prefix("VmRSS:"))
                .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
        })
    {
        family(
            "bagui_agent_resident_memory_bytes",
            "gauge",
            "Resident memory of the agent process",
            &[(String::new(), (rss * 1024) as f64)],
        );
    }
    out
}

/// Serves [`render`] on `address` (which must be loopback) until shutdown.
pub async fn spawn(
    address: SocketAddr,
    status: StatusBoard,
    outbox: Arc<Outbox>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(SocketAddr, JoinHandle<()>)> {
    anyhow::ensure!(
        address.ip().is_loopback(),
        "self_metrics.listen must be a loopback address (the endpoint has no authentication)"
    );
    let listener = TcpListener::bind(address)
        .await
        .with_context(|| format!("binding the self-metrics port {address}"))?;
    let bound = listener.local_addr()?;
    let task = tokio::spawn(async move {
        loop {
            let (mut stream, _) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(_) => continue,
                },
                _ = crate::stopped(&mut shutdown) => return,
            };
            let body = render(&status, &outbox);
            tokio::spawn(async move {
                let mut request = [0u8; 2048];
                let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut request))
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .unwrap_or(0);
                let head = String::from_utf8_lossy(&request[..read]);
                let response = if head.starts_with("GET /metrics ") || head.starts_with("GET / ") {
                    format!(
                        "HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    )
                } else {
                    "HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_owned()
                };
                let _ = tokio::time::timeout(
                    Duration::from_secs(5),
                    stream.write_all(response.as_bytes()),
                )
                .await;
            });
        }
    });
    Ok((bound, task))
}
