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

#[cfg(test)]
mod delivery_tests {
    use std::sync::{Arc, Mutex};

    use bagui_ops::model::Severity;
    use bagui_ops::notify::{ChannelConfig, MessageFormat, NotificationKind, OnDutyPerson};
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    use super::*;
    use crate::dispatch::OutboxEntry;

    fn notification() -> Notification {
        Notification {
            kind: NotificationKind::Dispatched,
            work_order_id: "WO-000007".into(),
            severity: Severity::P1,
            title: "新竹街道政务外网上联中断".into(),
            division_path: "广西壮族自治区/南宁市/青秀区/新竹街道".into(),
            team: "新竹街道网络组".into(),
            on_duty: vec![OnDutyPerson {
                phone: Some("13800001111".into()),
                ..OnDutyPerson::named("张三")
            }],
            sla_due: None,
            console_url: None,
            detail: None,
            digest: None,
        }
    }

    fn entry(channel: ChannelConfig) -> OutboxEntry {
        OutboxEntry {
            id: 1,
            team: "xz".into(),
            channel_index: 0,
            channel,
            notification: notification(),
            attempts: 0,
            next_attempt_ms: 0,
            created_ms: 0,
            last_error: None,
            failed: false,
        }
    }

    /// One HTTP request as a loopback receiver saw it: request line and body.
    type Seen = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

    /// A robot stand-in answering every request with `reply` (status 200).
    async fn receiver(reply: &'static str) -> (String, Seen) {
        let seen: Seen = Arc::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let log = log.clone();
                tokio::spawn(async move {
                    let (read, mut write) = stream.into_split();
                    let mut read = BufReader::new(read);
                    let mut request_line = String::new();
                    read.read_line(&mut request_line).await.unwrap();
                    let mut length = 0usize;
                    loop {
                        let mut line = String::new();
                        read.read_line(&mut line).await.unwrap();
                        if line.trim().is_empty() {
                            break;
                        }
                        if let Some(value) =
                            line.to_ascii_lowercase().strip_prefix("content-length:")
                        {
                            length = value.trim().parse().unwrap();
                        }
                    }
                    let mut body = vec![0; length];
                    tokio::io::AsyncReadExt::read_exact(&mut read, &mut body)
                        .await
                        .unwrap();
                    log.lock()
                        .unwrap()
                        .push((request_line.trim().to_owned(), body));
                    let response = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{reply}",
                        reply.len()
                    );
                    write.write_all(response.as_bytes()).await.unwrap();
                });
            }
        });
        (format!("http://{address}"), seen)
    }

    fn tls() -> Arc<rustls::ClientConfig> {
        Arc::new(web_client_config())
    }

    #[tokio::test]
    async fn dingtalk_is_signed_at_send_time_and_a_refusal_is_permanent() {
        let (base, seen) = receiver(r#"{"errcode":0,"errmsg":"ok"}"#).await;
        let secret = "SEC0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcd";
        let channel = ChannelConfig::Dingtalk {
            url: format!("{base}/robot/send?access_token=abc"),
            secret: Some(secret.into()),
            format: MessageFormat::Text,
        };
        let now = 1_764_150_000_000;
        attempt(&entry(channel.clone()), &notification(), now, &tls())
            .await
            .unwrap();
        let (line, body) = seen.lock().unwrap()[0].clone();
        let target = line.split(' ').nth(1).unwrap().to_owned();
        assert!(target.starts_with("/robot/send?access_token=abc&timestamp=1764150000000&sign="));
        let sign = target.rsplit("sign=").next().unwrap();
        let expected = bagui_ops::notify::dingtalk_sign(secret, now);
        let encoded: String = expected
            .bytes()
            .map(|b| match b {
                b'+' => "%2B".to_owned(),
                b'/' => "%2F".to_owned(),
                b'=' => "%3D".to_owned(),
                other => (other as char).to_string(),
            })
            .collect();
        assert_eq!(sign, encoded);
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["msgtype"], "text");
        assert_eq!(json["at"]["atMobiles"], serde_json::json!(["13800001111"]));

        // The robot says the signature is wrong: permanent, with its message.
        let (base, _) = receiver(r#"{"errcode":310000,"errmsg":"sign not match"}"#).await;
        let refused = ChannelConfig::Dingtalk {
            url: format!("{base}/robot/send?access_token=abc"),
            secret: Some(secret.into()),
            format: MessageFormat::Text,
        };
        let failure = attempt(&entry(refused), &notification(), now, &tls())
            .await
            .unwrap_err();
        assert!(!failure.kind.is_retryable(), "{failure:?}");
        assert!(failure.message.contains("310000"), "{}", failure.message);
        // Nobody listening: a network failure, retried.
        let closed = ChannelConfig::Wecom {
            url: "http://127.0.0.1:9/cgi-bin/webhook/send?key=k".into(),
            format: MessageFormat::Text,
        };
        let failure = attempt(&entry(closed), &notification(), now, &tls())
            .await
            .unwrap_err();
        assert!(failure.kind.is_retryable(), "{failure:?}");
    }

    #[tokio::test]
    async fn feishu_carries_its_signature_in_the_body() {
        let (base, seen) = receiver(r#"{"code":0,"msg":"success"}"#).await;
        let channel = ChannelConfig::Feishu {
            url: format!("{base}/open-apis/bot/v2/hook/xyz"),
            secret: Some("feishu-secret".into()),
        };
        let now = 1_764_150_000_000;
        attempt(&entry(channel), &notification(), now, &tls())
            .await
            .unwrap();
        let (line, body) = seen.lock().unwrap()[0].clone();
        assert!(
            line.starts_with("POST /open-apis/bot/v2/hook/xyz "),
            "{line}"
        );
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["timestamp"], "1764150000");
        assert_eq!(
            json["sign"],
            bagui_ops::notify::feishu_sign("feishu-secret", 1_764_150_000)
        );
    }

    /// A minimal SMTP sink: records the commands and the DATA it receives.
    async fn smtp_sink() -> (u16, Arc<Mutex<Vec<String>>>) {
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let log = seen.clone();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let (read, mut write) = stream.into_split();
            let mut read = BufReader::new(read);
            write.write_all(b"220 sink ESMTP\r\n").await.unwrap();
            let mut in_data = false;
            loop {
                let mut line = String::new();
                if read.read_line(&mut line).await.unwrap() == 0 {
                    break;
                }
                log.lock().unwrap().push(line.clone());
                let reply: &[u8] = if in_data {
                    if line == ".\r\n" {
                        in_data = false;
                        b"250 queued\r\n"
                    } else {
                        continue;
                    }
                } else if line.starts_with("EHLO") {
                    b"250-sink\r\n250 8BITMIME\r\n"
                } else if line.starts_with("DATA") {
                    in_data = true;
                    b"354 go ahead\r\n"
                } else if line.starts_with("QUIT") {
                    write.write_all(b"221 bye\r\n").await.unwrap();
                    break;
                } else {
                    b"250 ok\r\n"
                };
                write.write_all(reply).await.unwrap();
            }
        });
        (port, seen)
    }

    #[tokio::test]
    async fn email_goes_to_an_smtp_relay_with_envelope_and_message() {
        let (port, seen) = smtp_sink().await;
        let channel = ChannelConfig::Email {
            smtp_host: "127.0.0.1".into(),
            smtp_port: port,
            from: "ops@example.gov.cn".into(),
            from_name: Some("八桂运维".into()),
            to: vec!["noc@example.gov.cn".into(), "lead@example.gov.cn".into()],
        };
        attempt(&entry(channel), &notification(), 1_764_150_000_000, &tls())
            .await
            .unwrap();
        // The session ends with QUIT after the message was accepted.
        for _ in 0..100 {
            if seen
                .lock()
                .unwrap()
                .iter()
                .any(|line| line.starts_with("QUIT"))
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let lines = seen.lock().unwrap().clone();
        assert_eq!(lines[0], "EHLO bagui-cp\r\n");
        assert_eq!(lines[1], "MAIL FROM:<ops@example.gov.cn>\r\n");
        assert_eq!(lines[2], "RCPT TO:<noc@example.gov.cn>\r\n");
        assert_eq!(lines[3], "RCPT TO:<lead@example.gov.cn>\r\n");
        assert_eq!(lines[4], "DATA\r\n");
        let data: String = lines[5..].concat();
        assert!(data.contains("Subject: =?UTF-8?B?"), "{data}");
        assert!(data.contains("To: noc@example.gov.cn"), "{data}");
        assert!(data.ends_with(".\r\nQUIT\r\n"), "{data}");
    }

    #[tokio::test]
    async fn an_smtp_refusal_is_classified_not_lost() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            stream
                .write_all(b"554 5.7.1 relay access denied\r\n")
                .await
                .unwrap();
        });
        let channel = ChannelConfig::Email {
            smtp_host: "127.0.0.1".into(),
            smtp_port: port,
            from: "ops@example.gov.cn".into(),
            from_name: None,
            to: vec!["noc@example.gov.cn".into()],
        };
        let failure = attempt(&entry(channel), &notification(), 1, &tls())
            .await
            .unwrap_err();
        assert!(!failure.kind.is_retryable(), "{failure:?}");
        assert!(
            failure.message.contains("relay access denied"),
            "{}",
            failure.message
        );
    }
}
