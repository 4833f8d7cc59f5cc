//! Remote retention of the audit log (MLPS 安全审计: "对审计记录进行保护，定期备份"): every
//! audit entry is sent to a syslog collector as an RFC 5424 message, over UDP (RFC 5426) or
//! TCP with octet-counting framing (RFC 6587 §3.4.1).
//!
//! ```text
//! <109>1 2026-11-26T13:09:31.123Z cp01 bagui-cp 4242 token.create [bagui@32473 seq="12"
//!   actor="admin" target="tok-3" hash="…" prev="…"] BOM admin token.create tok-3: detail
//! ```
//!
//! PRI 109 is facility 13 (log audit), severity 5 (notice). The SD-ID uses 32473, the private
//! enterprise number reserved for documentation (RFC 5612), until Bagui has its own.
//!
//! Delivery is driven by a durable cursor in the store (the last seq handed to the collector):
//! the exporter reads entries after it from the store in pages of [`PAGE`], so memory stays
//! bounded however long the collector is away, and a restart resumes where it stopped. A page
//! is only counted as sent once it was written without error to a connection the collector
//! had not closed; otherwise the exporter reconnects with exponential backoff and sends the
//! page again. Delivery is therefore at-least-once over TCP (a collector may see an entry twice
//! after an outage; `seq` identifies duplicates) and best-effort over UDP, which cannot tell
//! whether anyone listens.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::{Notify, watch};

use crate::store::{AuditEntry, Store};

/// Entries read from the store and sent per round.
pub const PAGE: usize = 256;
/// Longest message sent; longer details are cut (UDP datagrams and collectors have limits).
pub const MAX_MESSAGE: usize = 8 * 1024;
const APP_NAME: &str = "bagui-cp";
const SD_ID: &str = "bagui@32473";
/// Facility 13 (log audit) × 8 + severity 5 (notice).
const PRI: u8 = 13 * 8 + 5;

/// Where to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Udp(SocketAddr),
    Tcp(SocketAddr),
}

impl Target {
    /// `udp://HOST:PORT` or `tcp://HOST:PORT` (HOST resolved now).
    pub fn parse(url: &str) -> Result<Target> {
        let (scheme, rest) = url.split_once("://").with_context(|| {
            format!("syslog target {url:?} is not udp://HOST:PORT or tcp://HOST:PORT")
        })?;
        let address = std::net::ToSocketAddrs::to_socket_addrs(rest)
            .with_context(|| format!("syslog target {url:?}: cannot resolve {rest:?}"))?
            .next()
            .with_context(|| format!("syslog target {url:?}: {rest:?} has no address"))?;
        match scheme {
            "udp" => Ok(Target::Udp(address)),
            "tcp" => Ok(Target::Tcp(address)),
            other => bail!("syslog target {url:?}: scheme {other:?} is not udp or tcp"),
        }
    }
}

/// The exporter's settings.
#[derive(Debug, Clone)]
pub struct ExportConfig {
    pub target: Target,
    /// First retry delay after a failure; doubles up to `backoff_max`.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// How often the store is looked at when no append wakes the exporter.
    pub poll: Duration,
}

impl ExportConfig {
    pub fn new(target: Target) -> ExportConfig {
        ExportConfig {
            target,
            backoff_min: Duration::from_millis(500),
            backoff_max: Duration::from_secs(60),
            poll: Duration::from_secs(1),
        }
    }
}

/// This machine's name, for the HOSTNAME field (`-` when unknown).
fn hostname() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .unwrap_or_default();
    let name: String = name
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(255)
        .collect();
    if name.is_empty() { "-".into() } else { name }
}

/// `ms` as an RFC 3339 timestamp with milliseconds, UTC.
fn timestamp(ms: u64) -> String {
    let base = bagui_protocol::units::format_rfc3339(ms);
    // `…:SSZ` → `…:SS.mmmZ`
    format!("{}.{:03}Z", base.trim_end_matches('Z'), ms % 1000)
}

/// An RFC 5424 header field: printable US-ASCII, at most `max` characters, `-` when empty.
fn header_field(text: &str, max: usize) -> String {
    let field: String = text
        .chars()
        .map(|c| if c.is_ascii_graphic() { c } else { '_' })
        .take(max)
        .collect();
    if field.is_empty() { "-".into() } else { field }
}

/// Escapes an SD-PARAM value (`"`, `\` and `]`).
fn param_value(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Formats one entry as an RFC 5424 message (no framing).
pub fn format_entry(entry: &AuditEntry, hostname: &str, pid: u32) -> Vec<u8> {
    let mut message = format!(
        "<{PRI}>1 {} {} {APP_NAME} {pid} {} [{SD_ID} seq=\"{}\" actor=\"{}\" target=\"{}\" hash=\"{}\" prev=\"{}\"] \u{feff}{} {} {}",
        timestamp(entry.time_ms),
        header_field(hostname, 255),
        header_field(&entry.action, 32),
        entry.seq,
        param_value(&entry.actor),
        param_value(&entry.target),
        entry.hash,
        entry.prev_hash,
        entry.actor,
        entry.action,
        entry.target,
    );
    if !entry.detail.is_empty() {
        message.push_str(": ");
        message.push_str(&entry.detail);
    }
    if message.len() > MAX_MESSAGE {
        let mut cut = MAX_MESSAGE - 3;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
        message.push('…');
    }
    message.into_bytes()
}

enum Connection {
    Udp(UdpSocket),
    Tcp(TcpStream),
}

impl Connection {
    async fn open(target: Target) -> std::io::Result<Connection> {
        match target {
            Target::Udp(address) => {
                let local: SocketAddr = if address.is_ipv4() {
                    "0.0.0.0:0".parse().expect("valid address")
                } else {
                    "[::]:0".parse().expect("valid address")
                };
                let socket = UdpSocket::bind(local).await?;
                socket.connect(address).await?;
                Ok(Connection::Udp(socket))
            }
            Target::Tcp(address) => {
                let stream =
                    tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(address))
                        .await
                        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
                stream.set_nodelay(true)?;
                Ok(Connection::Tcp(stream))
            }
        }
    }

    /// False once the collector closed a TCP connection (collectors never send anything).
    fn alive(&self) -> bool {
        match self {
            Connection::Udp(_) => true,
            Connection::Tcp(stream) => {
                let mut byte = [0u8; 64];
                match stream.try_read(&mut byte) {
                    Ok(0) => false,
                    Ok(_) => true,
                    Err(error) => error.kind() == std::io::ErrorKind::WouldBlock,
                }
            }
        }
    }

    async fn send(&mut self, messages: &[Vec<u8>]) -> std::io::Result<()> {
        match self {
            Connection::Udp(socket) => {
                for message in messages {
                    socket.send(message).await?;
                }
                Ok(())
            }
            Connection::Tcp(stream) => {
                let mut framed = Vec::new();
                for message in messages {
                    framed.extend_from_slice(format!("{} ", message.len()).as_bytes());
                    framed.extend_from_slice(message);
                }
                stream.write_all(&framed).await?;
                stream.flush().await
            }
        }
    }
}

/// Sends the audit log to the collector until `stop`; wakes on `appended`.
pub async fn run_exporter(
    store: Store,
    config: ExportConfig,
    appended: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    let host = hostname();
    let pid = std::process::id();
    let mut connection: Option<Connection> = None;
    let mut backoff = config.backoff_min;
    loop {
        if *stop.borrow() {
            return;
        }
        let round = export_round(&store, &config, &host, pid, &mut connection).await;
        let wait = match round {
            Ok(true) => {
                backoff = config.backoff_min;
                continue;
            }
            Ok(false) => {
                backoff = config.backoff_min;
                config.poll
            }
            Err(error) => {
                connection = None;
                tracing::warn!(%error, retry_in = ?backoff, "syslog export failed");
                let wait = backoff;
                backoff = (backoff * 2).min(config.backoff_max);
                wait
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = appended.notified(), if wait == config.poll => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
    }
}

/// Sends one page after the cursor. `Ok(true)` when a full page went out (more may wait).
async fn export_round(
    store: &Store,
    config: &ExportConfig,
    host: &str,
    pid: u32,
    connection: &mut Option<Connection>,
) -> Result<bool> {
    let cursor = store.audit_export_cursor()?;
    let entries = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || store.audit_entries(cursor, PAGE)).await??
    };
    let Some(last) = entries.last().map(|entry| entry.seq) else {
        return Ok(false);
    };
    if connection.as_ref().is_some_and(|open| !open.alive()) {
        *connection = None;
    }
    if connection.is_none() {
        *connection = Some(
            Connection::open(config.target)
                .await
                .with_context(|| format!("connecting to {:?}", config.target))?,
        );
    }
    let open = connection.as_mut().expect("connected above");
    let messages: Vec<Vec<u8>> = entries
        .iter()
        .map(|entry| format_entry(entry, host, pid))
        .collect();
    open.send(&messages)
        .await
        .with_context(|| format!("sending to {:?}", config.target))?;
    if !open.alive() {
        bail!("the collector closed the connection");
    }
    {
        let store = store.clone();
        tokio::task::spawn_blocking(move || store.set_audit_export_cursor(last)).await??;
    }
    Ok(entries.len() == PAGE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_follow_rfc_5424() {
        let entry = AuditEntry {
            seq: 7,
            time_ms: 1_795_698_571_042,
            actor: "admin".into(),
            action: "token.create".into(),
            target: "tok\"]x".into(),
            detail: "南宁 4501".into(),
            prev_hash: "00".into(),
            hash: "ab".into(),
        };
        let text = String::from_utf8(format_entry(&entry, "cp01", 42)).unwrap();
        assert!(
            text.starts_with("<109>1 2026-11-26T13:09:31.042Z cp01 bagui-cp 42 token.create [bagui@32473 seq=\"7\" actor=\"admin\" target=\"tok\\\"\\]x\" hash=\"ab\" prev=\"00\"] \u{feff}admin token.create"),
            "{text}"
        );
        assert!(text.ends_with(": 南宁 4501"), "{text}");
        let long = AuditEntry {
            detail: "长".repeat(10_000),
            ..entry
        };
        assert!(format_entry(&long, "-", 1).len() <= MAX_MESSAGE);
    }

    #[test]
    fn targets_parse() {
        assert_eq!(
            Target::parse("udp://127.0.0.1:514").unwrap(),
            Target::Udp("127.0.0.1:514".parse().unwrap())
        );
        assert_eq!(
            Target::parse("tcp://127.0.0.1:6514").unwrap(),
            Target::Tcp("127.0.0.1:6514".parse().unwrap())
        );
        assert!(Target::parse("http://127.0.0.1:1").is_err());
        assert!(Target::parse("127.0.0.1:514").is_err());
    }
}
