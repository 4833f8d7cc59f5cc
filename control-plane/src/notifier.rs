//! Sends the notification outbox (`crate::dispatch` queues, this module delivers).
//!
//! Each entry is rendered at send time (`bagui_ops::notify::ChannelConfig::render`: the robots'
//! signatures carry a timestamp), offered to the per-channel rate limiter (what it holds goes
//! out later as one digest), sent over HTTP(S) or SMTP, and the reply classified. Delivered:
//! the entry is deleted. Retryable: the next attempt is scheduled by the retry policy.
//! Refused for good, or out of attempts: the entry is kept, marked failed with the reason,
//! and shown by `bagui-cp notify list` — never dropped in silence.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use bagui_ops::model::Millis;
use bagui_ops::notify::{
    FailureKind, HttpRequest, LimitConfig, Limiter, Notification, Request, RetryPolicy,
    SendFailure, classify_http_reply, classify_smtp_reply,
};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::watch;

use crate::dispatch::{Dispatcher, OUTBOX_PREFIX, OutboxEntry, outbox_key};
use crate::store::OpsBatch;

/// Longest wait for one delivery attempt.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(15);

/// Longest reply body read from a robot.
const REPLY_LIMIT: usize = 64 << 10;

/// Sends the outbox until `shutdown`.
pub async fn run(
    dispatcher: Dispatcher,
    retry: RetryPolicy,
    limit: LimitConfig,
    mut shutdown: watch::Receiver<bool>,
) {
    let signal = dispatcher.outbox_signal();
    let mut limiter = Limiter::new(limit);
    // Entries the limiter holds, by channel key: deleted once their digest is delivered.
    let mut held: HashMap<String, Vec<OutboxEntry>> = HashMap::new();
    let tls = Arc::new(web_client_config());
    loop {
        let wait = match deliver_due(&dispatcher, &retry, &mut limiter, &mut held, &tls).await {
            Ok(wait) => wait,
            Err(error) => {
                tracing::error!(%error, "notification outbox");
                Duration::from_secs(5)
            }
        };
        tokio::select! {
            _ = signal.notified() => {}
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}

/// One pass over the due entries; returns how long to sleep before the next pass.
async fn deliver_due(
    dispatcher: &Dispatcher,
    retry: &RetryPolicy,
    limiter: &mut Limiter,
    held: &mut HashMap<String, Vec<OutboxEntry>>,
    tls: &Arc<rustls::ClientConfig>,
) -> Result<Duration> {
    let store = dispatcher.store();
    let clock = dispatcher.clock();
    let entries = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || {
            store.ops_scan::<OutboxEntry>(OUTBOX_PREFIX, b"", 10_000)
        })
        .await??
    };
    let now = clock.now_ms();
    let held_ids: std::collections::HashSet<u64> =
        held.values().flatten().map(|entry| entry.id).collect();
    let mut next_due: Option<Millis> = None;
    for (_, entry) in entries {
        if entry.failed || held_ids.contains(&entry.id) {
            continue;
        }
        if entry.next_attempt_ms > now {
            next_due =
                Some(next_due.map_or(entry.next_attempt_ms, |t| t.min(entry.next_attempt_ms)));
            continue;
        }
        let channel = entry.channel_key();
        match limiter.offer(&channel, entry.notification.clone(), now) {
            bagui_ops::notify::Decision::Send(notification) => {
                let result = attempt(&entry, &notification, clock.now_ms(), tls).await;
                settle(dispatcher, vec![entry], result, retry).await?;
            }
            bagui_ops::notify::Decision::Queue => {
                held.entry(channel).or_default().push(entry);
            }
        }
    }
    for outgoing in limiter.drain(clock.now_ms()) {
        let entries = held.remove(&outgoing.channel).unwrap_or_default();
        let Some(first) = entries.first() else {
            continue;
        };
        let result = attempt(first, &outgoing.notification, clock.now_ms(), tls).await;
        settle(dispatcher, entries, result, retry).await?;
    }
    let now = clock.now_ms();
    let mut wait = Duration::from_secs(30);
    for at in next_due.into_iter().chain(limiter.next_drain_at(now)) {
        wait = wait.min(Duration::from_millis(at.saturating_sub(now).max(50)));
    }
    Ok(wait)
}

/// Records the outcome of one delivery (of one entry, or of a digest of several).
async fn settle(
    dispatcher: &Dispatcher,
    entries: Vec<OutboxEntry>,
    result: Result<(), SendFailure>,
    retry: &RetryPolicy,
) -> Result<()> {
    let store = dispatcher.store();
    let now = dispatcher.clock().now_ms();
    let mut batch = OpsBatch::new();
    for mut entry in entries {
        match &result {
            Ok(()) => {
                tracing::info!(
                    order = %entry.notification.work_order_id,
                    team = %entry.team,
                    channel = %entry.channel.kind(),
                    "notification delivered"
                );
                batch.delete(&outbox_key(entry.id));
            }
            Err(failure) => {
                entry.attempts += 1;
                entry.last_error = Some(failure.message.clone());
                match retry.next_attempt(entry.attempts, &failure.kind) {
                    Some(delay) => entry.next_attempt_ms = now.saturating_add(delay),
                    None => {
                        entry.failed = true;
                        tracing::warn!(
                            order = %entry.notification.work_order_id,
                            team = %entry.team,
                            error = %failure.message,
                            "notification failed for good"
                        );
                    }
                }
                batch.put(&outbox_key(entry.id), &entry)?;
            }
        }
    }
    tokio::task::spawn_blocking(move || store.ops_commit(batch)).await??;
    Ok(())
}

async fn attempt(
    entry: &OutboxEntry,
    notification: &Notification,
    now: Millis,
    tls: &Arc<rustls::ClientConfig>,
) -> Result<(), SendFailure> {
    let request = entry
        .channel
        .render(notification, now)
        .map_err(|error| SendFailure {
            kind: FailureKind::Rejected,
            message: error.to_string(),
        })?;
    let kind = entry.channel.kind();
    let outcome = tokio::time::timeout(ATTEMPT_TIMEOUT, async {
        match request {
            Request::Http(request) => match post(&request, tls).await {
                Ok((status, retry_after, body)) => {
                    classify_http_reply(kind, status, retry_after, &body)
                }
                Err(error) => Err(SendFailure {
                    kind: FailureKind::Network,
                    message: format!("{error:#}"),
                }),
            },
            Request::Email(message) => match smtp_send(&message).await {
                Ok(()) => Ok(()),
                Err(SmtpError::Reply(code, text)) => classify_smtp_reply(code, &text),
                Err(SmtpError::Io(error)) => Err(SendFailure {
                    kind: FailureKind::Network,
                    message: format!("{error:#}"),
                }),
            },
        }
    })
    .await;
    match outcome {
        Ok(result) => result,
        Err(_) => Err(SendFailure {
            kind: FailureKind::Timeout,
            message: format!("{kind} channel: no reply within {ATTEMPT_TIMEOUT:?}"),
        }),
    }
}

/// A client configuration trusting the system's CA bundle (robots are public HTTPS).
fn web_client_config() -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for path in [
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pki/tls/certs/ca-bundle.crt",
    ] {
        use rustls_pki_types::pem::PemObject;
        if let Ok(certs) = rustls_pki_types::CertificateDer::pem_file_iter(path) {
            for cert in certs.flatten() {
                let _ = roots.add(cert);
            }
            break;
        }
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("ring supports TLS 1.2 and 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth()
}

struct Target {
    https: bool,
    host: String,
    port: u16,
    path: String,
}

fn parse_url(url: &str) -> Result<Target> {
    let (https, rest) = if let Some(rest) = url.strip_prefix("https://") {
        (true, rest)
    } else if let Some(rest) = url.strip_prefix("http://") {
        (false, rest)
    } else {
        bail!("URL must start with http:// or https://");
    };
    let (authority, path) = match rest.find(['/', '?']) {
        Some(index) => (&rest[..index], rest[index..].to_owned()),
        None => (rest, "/".to_owned()),
    };
    let path = if path.starts_with('?') {
        format!("/{path}")
    } else {
        path
    };
    let (host, port) = if let Some(stripped) = authority.strip_prefix('[') {
        let (host, tail) = stripped
            .split_once(']')
            .ok_or_else(|| anyhow!("unclosed [ in {authority:?}"))?;
        let port = match tail.strip_prefix(':') {
            Some(port) => port.parse().context("port")?,
            None => default_port(https),
        };
        (host.to_owned(), port)
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host.to_owned(), port.parse().context("port")?),
            None => (authority.to_owned(), default_port(https)),
        }
    };
    if host.is_empty() {
        bail!("URL has no host");
    }
    Ok(Target {
        https,
        host,
        port,
        path,
    })
}

fn default_port(https: bool) -> u16 {
    if https { 443 } else { 80 }
}

/// Sends one rendered request; returns status, `Retry-After` (ms) and the body.
async fn post(
    request: &HttpRequest,
    tls: &Arc<rustls::ClientConfig>,
) -> Result<(u16, Option<Millis>, Vec<u8>)> {
    let target = parse_url(&request.url)?;
    let address = if target.host.contains(':') {
        format!("[{}]:{}", target.host, target.port)
    } else {
        format!("{}:{}", target.host, target.port)
    };
    let tcp = tokio::net::TcpStream::connect(&address)
        .await
        .with_context(|| format!("connecting to {address}"))?;
    let mut builder = hyper::Request::builder()
        .method(request.method.as_str())
        .uri(&target.path)
        .header(hyper::header::HOST, &address);
    for (name, value) in &request.headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    let http_request = builder.body(Full::new(Bytes::from(request.body.clone())))?;
    if target.https {
        let name = rustls_pki_types::ServerName::try_from(target.host.clone())
            .with_context(|| format!("{:?} is not a valid server name", target.host))?;
        let stream = tokio_rustls::TlsConnector::from(tls.clone())
            .connect(name, tcp)
            .await
            .with_context(|| format!("TLS handshake with {address}"))?;
        exchange(TokioIo::new(stream), http_request).await
    } else {
        exchange(TokioIo::new(tcp), http_request).await
    }
}

async fn exchange<Io>(
    io: Io,
    request: hyper::Request<Full<Bytes>>,
) -> Result<(u16, Option<Millis>, Vec<u8>)>
where
    Io: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await?;
    let driver = tokio::spawn(connection);
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(hyper::header::RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok())
        .map(|seconds| seconds.saturating_mul(1000));
    let body = http_body_util::Limited::new(response.into_body(), REPLY_LIMIT)
        .collect()
        .await
        .map_err(|error| anyhow!("reading the reply: {error}"))?
        .to_bytes()
        .to_vec();
    driver.abort();
    Ok((status, retry_after, body))
}

enum SmtpError {
    Reply(u16, String),
    Io(anyhow::Error),
}

impl From<std::io::Error> for SmtpError {
    fn from(error: std::io::Error) -> SmtpError {
        SmtpError::Io(error.into())
    }
}

/// Plain SMTP to a relay (RFC 5321: EHLO, MAIL, RCPT, DATA, QUIT). Gov mail relays inside the
/// extranet take unauthenticated mail from known hosts; STARTTLS and AUTH are not spoken.
async fn smtp_send(message: &bagui_ops::notify::EmailMessage) -> Result<(), SmtpError> {
    let address = if message.relay_host.contains(':') {
        format!("[{}]:{}", message.relay_host, message.relay_port)
    } else {
        format!("{}:{}", message.relay_host, message.relay_port)
    };
    let stream = tokio::net::TcpStream::connect(&address).await?;
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    expect(&mut read, 220).await?;
    command(&mut write, &mut read, "EHLO bagui-cp", 250).await?;
    command(
        &mut write,
        &mut read,
        &format!("MAIL FROM:<{}>", message.envelope_from),
        250,
    )
    .await?;
    for to in &message.envelope_to {
        command(&mut write, &mut read, &format!("RCPT TO:<{to}>"), 250).await?;
    }
    command(&mut write, &mut read, "DATA", 354).await?;
    let mut data = Vec::with_capacity(message.data.len() + 8);
    for line in message.data.split_inclusive(|byte| *byte == b'\n') {
        if line.first() == Some(&b'.') {
            data.push(b'.');
        }
        data.extend_from_slice(line);
    }
    if !data.ends_with(b"\r\n") {
        data.extend_from_slice(b"\r\n");
    }
    data.extend_from_slice(b".\r\n");
    write.write_all(&data).await?;
    expect(&mut read, 250).await?;
    let _ = write.write_all(b"QUIT\r\n").await;
    Ok(())
}

async fn command(
    write: &mut tokio::net::tcp::OwnedWriteHalf,
    read: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
    line: &str,
    want: u16,
) -> Result<(), SmtpError> {
    write.write_all(format!("{line}\r\n").as_bytes()).await?;
    expect(read, want).await
}

/// Reads one (possibly multi-line) reply and checks its code.
async fn expect(
    read: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
    want: u16,
) -> Result<(), SmtpError> {
    let mut text = String::new();
    loop {
        let mut line = String::new();
        if read.read_line(&mut line).await? == 0 {
            return Err(SmtpError::Io(anyhow!(
                "the SMTP relay closed the connection"
            )));
        }
        if line.len() < 3 || text.len() > 8192 {
            return Err(SmtpError::Io(anyhow!("malformed SMTP reply {line:?}")));
        }
        let code: u16 = line[..3]
            .parse()
            .map_err(|_| SmtpError::Io(anyhow!("malformed SMTP reply {line:?}")))?;
        text.push_str(line.get(4..).unwrap_or("").trim_end());
        if line.as_bytes().get(3) != Some(&b'-') {
            return if code == want {
                Ok(())
            } else {
                Err(SmtpError::Reply(code, text))
            };
        }
        text.push(' ');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_host_port_and_path() {
        let target = parse_url("http://127.0.0.1:8080/cgi-bin/webhook/send?key=abc").unwrap();
        assert!(!target.https);
        assert_eq!(
            (target.host.as_str(), target.port, target.path.as_str()),
            ("127.0.0.1", 8080, "/cgi-bin/webhook/send?key=abc")
        );
        let target = parse_url("https://qyapi.weixin.qq.com?key=1").unwrap();
        assert_eq!(
            (target.host.as_str(), target.port, target.path.as_str()),
            ("qyapi.weixin.qq.com", 443, "/?key=1")
        );
        let target = parse_url("http://[::1]:9/x").unwrap();
        assert_eq!((target.host.as_str(), target.port), ("::1", 9));
        assert!(parse_url("ftp://x/").is_err());
        assert!(parse_url("http:///x").is_err());
        assert!(parse_url("http://h:notaport/").is_err());
    }
}
