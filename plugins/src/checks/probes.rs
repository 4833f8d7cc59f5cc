//! Built-in probes: `tcp`, `http`, `dns` and `tls_expiry`, synchronous and bounded by the
//! check's timeout, so common checks need no external plugin installed.
//!
//! Every stage (name resolution, connect, TLS handshake, each read and write) gets only what
//! is left of one deadline. Name resolution (`getaddrinfo`) cannot be interrupted, so it runs
//! on a helper thread that is abandoned if the deadline passes; the system resolver's own
//! timeouts end it later.
//!
//! Results use convention `probe`, with perfdata `time` (seconds, uom `s`) and, for
//! `tls_expiry`, `days_left`. A target that cannot be reached is CRITICAL (as `check_tcp`
//! does); a target that cannot even be parsed is UNKNOWN.
//!
//! **`tls_expiry` measures expiry, it does not authenticate.** It must read certificates that
//! do not verify — self-signed certificates of internal services are normal — so its TLS
//! client accepts any certificate chain (the handshake signature is still checked against the
//! presented certificate). `http` with an `https://` URL uses the same client: it reports
//! whether the service answers, not who it is. Neither sends anything secret.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use bagui_protocol::assets::{CheckResult, PerfDatum};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme};
use serde::Deserialize;

use super::nagios::UNKNOWN;

/// The `convention` of probe results.
pub const CONVENTION: &str = "probe";

const OK: u8 = 0;
const WARNING: u8 = 1;
const CRITICAL: u8 = 2;

/// Bytes of an HTTP response read while looking for the status line.
const MAX_STATUS_LINE: usize = 8 * 1024;

/// Which built-in probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProbeKind {
    /// `target = "host:port"`: connects, reports connect latency.
    Tcp,
    /// `target = "http://host[:port]/path"` or `https://...`: GET, checks the status code.
    Http,
    /// `target = "host.name"`: resolves, reports latency and the number of addresses.
    Dns,
    /// `target = "host[:port]"` (port 443 by default): days until the certificate expires.
    TlsExpiry,
}

impl ProbeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeKind::Tcp => "tcp",
            ProbeKind::Http => "http",
            ProbeKind::Dns => "dns",
            ProbeKind::TlsExpiry => "tls_expiry",
        }
    }
}

/// One configured probe.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeSpec {
    pub kind: ProbeKind,
    pub target: String,
    pub timeout: Duration,
    /// `http`: status codes counted as OK. Empty: 2xx and 3xx OK, 4xx WARNING, others
    /// CRITICAL (as `check_http`).
    pub expect_status: Vec<u16>,
    /// `tls_expiry`: WARNING below this many days left.
    pub warn_days: u32,
    /// `tls_expiry`: CRITICAL below this many days left (and when expired).
    pub crit_days: u32,
}

/// Default `tls_expiry` thresholds.
pub const DEFAULT_WARN_DAYS: u32 = 30;
pub const DEFAULT_CRIT_DAYS: u32 = 7;

/// Why a probe could not measure.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("bad target {target:?}: {reason}")]
    BadTarget { target: String, reason: String },
    #[error("timed out {0}")]
    TimedOut(&'static str),
    #[error("resolving {host}: {source}")]
    Resolve {
        host: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{host} has no addresses")]
    NoAddresses { host: String },
    #[error("connecting to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("{stage}: {source}")]
    Io {
        stage: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS: {0}")]
    Tls(String),
    #[error("HTTP: {0}")]
    Http(String),
    #[error("certificate: {0}")]
    Certificate(String),
}

impl ProbeError {
    /// A target that cannot be parsed is a config problem (UNKNOWN); anything else means the
    /// service is not answering as it should (CRITICAL).
    fn status(&self) -> u8 {
        match self {
            ProbeError::BadTarget { .. } => UNKNOWN,
            _ => CRITICAL,
        }
    }
}

/// What a successful probe measured.
struct Measured {
    status: u8,
    output: String,
    perfdata: Vec<PerfDatum>,
}

/// Runs the probe once. Never fails: problems are a CRITICAL or UNKNOWN result with `error`.
pub fn run(name: &str, spec: &ProbeSpec, now_ms: u64) -> CheckResult {
    let started = Instant::now();
    let deadline = Deadline(started + spec.timeout);
    let measured = match spec.kind {
        ProbeKind::Tcp => tcp(spec, deadline),
        ProbeKind::Http => http(spec, deadline),
        ProbeKind::Dns => dns(spec, deadline),
        ProbeKind::TlsExpiry => tls_expiry(spec, deadline, now_ms),
    };
    let mut result = CheckResult {
        name: name.to_owned(),
        convention: CONVENTION.into(),
        started_ms: now_ms,
        duration_ms: started.elapsed().as_millis().try_into().unwrap_or(u64::MAX),
        ..CheckResult::default()
    };
    match measured {
        Ok(measured) => {
            result.status = measured.status;
            result.output = measured.output;
            result.perfdata = measured.perfdata;
        }
        Err(error) => {
            result.status = error.status();
            result.output = format!(
                "{} {}: {error}",
                spec.kind.as_str().to_uppercase(),
                bagui_protocol::assets::status_text(result.status)
            );
            result.error = Some(error.to_string());
        }
    }
    result
}

/// Checks that `spec.target` has the shape its probe needs (for config validation).
pub fn validate_target(kind: ProbeKind, target: &str) -> Result<(), ProbeError> {
    match kind {
        ProbeKind::Tcp => host_port(target, None).map(drop),
        ProbeKind::TlsExpiry => host_port(target, Some(443)).map(drop),
        ProbeKind::Http => Url::parse(target).map(drop),
        ProbeKind::Dns => dns_name(target).map(drop),
    }
}

/// The instant a probe must be done by.
#[derive(Debug, Clone, Copy)]
struct Deadline(Instant);

impl Deadline {
    /// Time left for the next stage; `TimedOut(stage)` when none is.
    fn remaining(self, stage: &'static str) -> Result<Duration, ProbeError> {
        let left = self.0.saturating_duration_since(Instant::now());
        if left.is_zero() {
            Err(ProbeError::TimedOut(stage))
        } else {
            Ok(left)
        }
    }
}

fn tcp(spec: &ProbeSpec, deadline: Deadline) -> Result<Measured, ProbeError> {
    let started = Instant::now();
    let (host, port) = host_port(&spec.target, None)?;
    let stream = connect(&host, port, deadline)?;
    let elapsed = started.elapsed();
    let peer = stream
        .peer_addr()
        .map_or_else(|_| spec.target.clone(), |addr| addr.to_string());
    Ok(Measured {
        status: OK,
        output: format!(
            "TCP OK - {:.3} s response time on {peer}",
            elapsed.as_secs_f64()
        ),
        perfdata: vec![time_datum(elapsed)],
    })
}

fn dns(spec: &ProbeSpec, deadline: Deadline) -> Result<Measured, ProbeError> {
    let started = Instant::now();
    let host = dns_name(&spec.target)?;
    let addrs = resolve(host, 0, deadline)?;
    let elapsed = started.elapsed();
    let mut ips: Vec<IpAddr> = addrs.iter().map(SocketAddr::ip).collect();
    ips.sort();
    ips.dedup();
    let listed: Vec<String> = ips.iter().map(IpAddr::to_string).collect();
    Ok(Measured {
        status: OK,
        output: format!("DNS OK - {host} resolves to {}", listed.join(", ")),
        perfdata: vec![
            time_datum(elapsed),
            PerfDatum {
                label: "addresses".into(),
                value: Some(ips.len() as f64),
                min: Some(0.0),
                ..PerfDatum::default()
            },
        ],
    })
}

fn http(spec: &ProbeSpec, deadline: Deadline) -> Result<Measured, ProbeError> {
    let started = Instant::now();
    let url = Url::parse(&spec.target)?;
    let stream = connect(&url.host, url.port, deadline)?;
    let code = if url.tls {
        let mut tls = tls_connect(stream, &url.host, vec![b"http/1.1".to_vec()], deadline)?;
        get_status(&mut tls, &url, deadline, tls_socket)?
    } else {
        let mut plain = stream;
        get_status(&mut plain, &url, deadline, plain_socket)?
    };
    let elapsed = started.elapsed();
    let status = http_status(code, &spec.expect_status);
    Ok(Measured {
        status,
        output: format!(
            "HTTP {} - status {code} in {:.3} s from {}",
            bagui_protocol::assets::status_text(status),
            elapsed.as_secs_f64(),
            spec.target
        ),
        perfdata: vec![time_datum(elapsed)],
    })
}

/// The Nagios status for an HTTP status code.
fn http_status(code: u16, expected: &[u16]) -> u8 {
    match (expected.is_empty(), code) {
        (false, code) if expected.contains(&code) => OK,
        (false, _) => CRITICAL,
        (true, 200..=399) => OK,
        (true, 400..=499) => WARNING,
        (true, _) => CRITICAL,
    }
}

fn tls_expiry(spec: &ProbeSpec, deadline: Deadline, now_ms: u64) -> Result<Measured, ProbeError> {
    let started = Instant::now();
    let (host, port) = host_port(&spec.target, Some(443))?;
    let stream = connect(&host, port, deadline)?;
    let tls = tls_connect(stream, &host, Vec::new(), deadline)?;
    let elapsed = started.elapsed();
    let leaf = tls
        .conn
        .peer_certificates()
        .and_then(|chain| chain.first())
        .ok_or_else(|| ProbeError::Certificate("server sent no certificate".into()))?;
    let (subject, not_after_s) = certificate_expiry(leaf)?;
    let days_left = (not_after_s as f64 * 1000.0 - now_ms as f64) / 86_400_000.0;
    let status = expiry_status(days_left, spec.warn_days, spec.crit_days);
    let not_after = if not_after_s >= 0 {
        bagui_protocol::units::format_rfc3339(not_after_s as u64 * 1000)
    } else {
        format!("{not_after_s} s before 1970")
    };
    Ok(Measured {
        status,
        output: format!(
            "TLS {} - certificate {subject} of {host}:{port} expires {not_after} ({days_left:.1} days)",
            bagui_protocol::assets::status_text(status),
        ),
        perfdata: vec![
            time_datum(elapsed),
            PerfDatum {
                label: "days_left".into(),
                value: Some((days_left * 100.0).round() / 100.0),
                warn: Some(format!("{}:", spec.warn_days)),
                crit: Some(format!("{}:", spec.crit_days)),
                ..PerfDatum::default()
            },
        ],
    })
}

/// CRITICAL below `crit_days` (or expired), WARNING below `warn_days`.
fn expiry_status(days_left: f64, warn_days: u32, crit_days: u32) -> u8 {
    if days_left < f64::from(crit_days) || days_left <= 0.0 {
        CRITICAL
    } else if days_left < f64::from(warn_days) {
        WARNING
    } else {
        OK
    }
}

/// The subject and `notAfter` (seconds since the epoch) of a DER certificate.
fn certificate_expiry(der: &CertificateDer<'_>) -> Result<(String, i64), ProbeError> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let (_, cert) = X509Certificate::from_der(der.as_ref())
        .map_err(|error| ProbeError::Certificate(error.to_string()))?;
    Ok((
        cert.subject().to_string(),
        cert.validity().not_after.timestamp(),
    ))
}

fn time_datum(elapsed: Duration) -> PerfDatum {
    PerfDatum {
        label: "time".into(),
        value: Some((elapsed.as_secs_f64() * 1e6).round() / 1e6),
        uom: "s".into(),
        min: Some(0.0),
        ..PerfDatum::default()
    }
}

/// Resolves on a helper thread so the deadline holds even when the resolver hangs.
fn resolve(host: &str, port: u16, deadline: Deadline) -> Result<Vec<SocketAddr>, ProbeError> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let (sender, receiver) = mpsc::sync_channel(1);
    let query = (host.to_owned(), port);
    std::thread::spawn(move || {
        let _ = sender.send(
            query
                .to_socket_addrs()
                .map(|addrs| addrs.collect::<Vec<_>>()),
        );
    });
    match receiver.recv_timeout(deadline.remaining("resolving")?) {
        Ok(Ok(addrs)) if addrs.is_empty() => Err(ProbeError::NoAddresses {
            host: host.to_owned(),
        }),
        Ok(Ok(addrs)) => Ok(addrs),
        Ok(Err(source)) => Err(ProbeError::Resolve {
            host: host.to_owned(),
            source,
        }),
        Err(_) => Err(ProbeError::TimedOut("resolving")),
    }
}

/// Connects to the first address that answers, with read/write timeouts set to the deadline.
fn connect(host: &str, port: u16, deadline: Deadline) -> Result<TcpStream, ProbeError> {
    let mut last_error = None;
    for addr in resolve(host, port, deadline)? {
        let left = deadline.remaining("connecting")?;
        match TcpStream::connect_timeout(&addr, left) {
            Ok(stream) => {
                set_timeouts(&stream, deadline, "connecting")?;
                return Ok(stream);
            }
            Err(source) if source.kind() == std::io::ErrorKind::TimedOut => {
                last_error = Some(ProbeError::TimedOut("connecting"));
            }
            Err(source) => last_error = Some(ProbeError::Connect { addr, source }),
        }
    }
    Err(last_error.unwrap_or(ProbeError::NoAddresses {
        host: host.to_owned(),
    }))
}

fn set_timeouts(
    stream: &TcpStream,
    deadline: Deadline,
    stage: &'static str,
) -> Result<(), ProbeError> {
    let left = deadline.remaining(stage)?;
    stream
        .set_read_timeout(Some(left))
        .and_then(|()| stream.set_write_timeout(Some(left)))
        .map_err(|source| ProbeError::Io { stage, source })
}

/// A read or write error, with timeouts reported as such.
fn io_error(stage: &'static str, source: std::io::Error) -> ProbeError {
    match source.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
            ProbeError::TimedOut(stage)
        }
        _ => ProbeError::Io { stage, source },
    }
}

type TlsStream = rustls::StreamOwned<ClientConnection, TcpStream>;

/// Completes a TLS handshake with the any-certificate client (see the module doc).
fn tls_connect(
    mut stream: TcpStream,
    host: &str,
    alpn: Vec<Vec<u8>>,
    deadline: Deadline,
) -> Result<TlsStream, ProbeError> {
    let config = Arc::new(expiry_client_config(alpn)?);
    let server_name =
        ServerName::try_from(host.to_owned()).map_err(|error| ProbeError::BadTarget {
            target: host.to_owned(),
            reason: error.to_string(),
        })?;
    let mut conn = ClientConnection::new(config, server_name)
        .map_err(|error| ProbeError::Tls(error.to_string()))?;
    while conn.is_handshaking() {
        set_timeouts(&stream, deadline, "in TLS handshake")?;
        conn.complete_io(&mut stream).map_err(|error| {
            match error
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            {
                Some(tls) => ProbeError::Tls(tls.to_string()),
                None => io_error("in TLS handshake", error),
            }
        })?;
    }
    Ok(rustls::StreamOwned::new(conn, stream))
}

/// A client config with the ring provider (never rustls' process-wide default) and the
/// any-certificate verifier.
fn expiry_client_config(alpn: Vec<Vec<u8>>) -> Result<ClientConfig, ProbeError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(AnyCertificate {
        provider: provider.clone(),
    });
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| ProbeError::Tls(error.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = alpn;
    Ok(config)
}

/// Accepts any certificate chain: the probes measure expiry and availability, they do not
/// authenticate (module doc). Handshake signatures are still verified against the presented
/// certificate, so the peer at least holds its key.
#[derive(Debug)]
struct AnyCertificate {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn tls_socket(tls: &TlsStream) -> &TcpStream {
    &tls.sock
}

fn plain_socket(stream: &TcpStream) -> &TcpStream {
    stream
}

/// Sends a GET and reads up to the status line; returns the status code. `socket` gives the
/// TCP stream under `stream`, to keep its timeouts within the deadline between reads.
fn get_status<S: Read + Write>(
    stream: &mut S,
    url: &Url,
    deadline: Deadline,
    socket: fn(&S) -> &TcpStream,
) -> Result<u16, ProbeError> {
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: bagui-agent\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        url.path, url.host_header
    );
    set_timeouts(socket(stream), deadline, "sending request")?;
    stream
        .write_all(request.as_bytes())
        .and_then(|()| stream.flush())
        .map_err(|error| io_error("sending request", error))?;
    let mut head = Vec::new();
    let mut buffer = [0u8; 1024];
    while !head.windows(2).any(|pair| pair == b"\r\n") {
        if head.len() > MAX_STATUS_LINE {
            return Err(ProbeError::Http("no status line in the first 8 KiB".into()));
        }
        set_timeouts(socket(stream), deadline, "reading response")?;
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => head.extend_from_slice(&buffer[..read]),
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => return Err(io_error("reading response", error)),
        }
    }
    parse_status_line(&head)
}

/// The code of `HTTP/1.x NNN reason`.
fn parse_status_line(head: &[u8]) -> Result<u16, ProbeError> {
    let line_end = head
        .windows(2)
        .position(|pair| pair == b"\r\n")
        .unwrap_or(head.len());
    let line = String::from_utf8_lossy(&head[..line_end]);
    let mut parts = line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    let code = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") || code.len() != 3 {
        return Err(ProbeError::Http(format!("bad status line {line:?}")));
    }
    code.parse()
        .map_err(|_| ProbeError::Http(format!("bad status line {line:?}")))
}

/// An `http://` or `https://` URL, just what a GET needs. No user info, no fragments.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Url {
    tls: bool,
    host: String,
    port: u16,
    /// Path and query, at least `/`.
    path: String,
    /// `Host:` header value: the authority as written.
    host_header: String,
}

impl Url {
    fn parse(text: &str) -> Result<Url, ProbeError> {
        let bad = |reason: &str| ProbeError::BadTarget {
            target: text.to_owned(),
            reason: reason.to_owned(),
        };
        let (tls, rest) = if let Some(rest) = text.strip_prefix("http://") {
            (false, rest)
        } else if let Some(rest) = text.strip_prefix("https://") {
            (true, rest)
        } else {
            return Err(bad("must start with http:// or https://"));
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(split) => rest.split_at(split),
            None => (rest, "/"),
        };
        if authority.contains('@') {
            return Err(bad("user info is not supported"));
        }
        if path.contains('#') || path.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad(
                "path must not contain spaces, control characters or '#'",
            ));
        }
        let (host, port) = host_port(authority, Some(if tls { 443 } else { 80 }))
            .map_err(|_| bad("bad host or port"))?;
        let path = if path.starts_with('?') {
            format!("/{path}")
        } else {
            path.to_owned()
        };
        Ok(Url {
            tls,
            host,
            port,
            path,
            host_header: authority.to_owned(),
        })
    }
}

/// Splits `host:port`, `[v6]:port`, or (with a default port) `host`, `[v6]`, `v6`.
fn host_port(target: &str, default_port: Option<u16>) -> Result<(String, u16), ProbeError> {
    let bad = |reason: &str| ProbeError::BadTarget {
        target: target.to_owned(),
        reason: reason.to_owned(),
    };
    let (host, port) = if let Some(rest) = target.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(|| bad("missing ']'"))?;
        match after {
            "" => (host, None),
            _ => (
                host,
                Some(
                    after
                        .strip_prefix(':')
                        .ok_or_else(|| bad("junk after ']'"))?,
                ),
            ),
        }
    } else if target.matches(':').count() > 1 {
        (target, None)
    } else {
        match target.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (target, None),
        }
    };
    let port = match (port, default_port) {
        (Some(port), _) => port
            .parse::<u16>()
            .ok()
            .filter(|&port| port != 0)
            .ok_or_else(|| bad("port must be 1-65535"))?,
        (None, Some(default)) => default,
        (None, None) => return Err(bad("needs host:port")),
    };
    if host.is_empty()
        || host
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '/')
    {
        return Err(bad("bad host"));
    }
    if target.starts_with('[') && host.parse::<std::net::Ipv6Addr>().is_err() {
        return Err(bad("brackets are for IPv6 addresses"));
    }
    Ok((host.to_owned(), port))
}

/// A DNS name (or address) to resolve: no port, no spaces.
fn dns_name(target: &str) -> Result<&str, ProbeError> {
    let valid = !target.is_empty()
        && target.len() <= 253
        && target
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'));
    if valid {
        Ok(target)
    } else {
        Err(ProbeError::BadTarget {
            target: target.to_owned(),
            reason: "not a host name".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader};
    use std::net::TcpListener;

    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

    use super::*;
    use crate::checks::tests::http_responder;

    /// 2030-01-01T00:00:00Z, the test certificate's notAfter.
    const NOT_AFTER_S: u64 = 1_893_456_000;
    const DAY_MS: u64 = 86_400_000;

    fn spec(kind: ProbeKind, target: &str) -> ProbeSpec {
        ProbeSpec {
            kind,
            target: target.to_owned(),
            timeout: Duration::from_secs(5),
            expect_status: Vec::new(),
            warn_days: DEFAULT_WARN_DAYS,
            crit_days: DEFAULT_CRIT_DAYS,
        }
    }

    fn datum<'a>(result: &'a CheckResult, label: &str) -> &'a PerfDatum {
        result
            .perfdata
            .iter()
            .find(|datum| datum.label == label)
            .unwrap_or_else(|| panic!("no {label} in {result:#?}"))
    }

    /// A port nothing listens on (bound, then released).
    fn closed_port() -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    }

    #[test]
    fn tcp_open_and_closed() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let target = listener.local_addr().unwrap().to_string();
        let ok = run("t", &spec(ProbeKind::Tcp, &target), 9);
        assert_eq!(ok.status, OK, "{ok:#?}");
        assert_eq!((ok.convention.as_str(), ok.started_ms), (CONVENTION, 9));
        let time = datum(&ok, "time");
        assert_eq!(time.uom, "s");
        assert!(time.value.is_some_and(|v| (0.0..5.0).contains(&v)));
        let closed = run(
            "t",
            &spec(ProbeKind::Tcp, &format!("127.0.0.1:{}", closed_port())),
            9,
        );
        assert_eq!(closed.status, CRITICAL, "{closed:#?}");
        assert!(closed.error.as_deref().unwrap().contains("connecting"));
        let bad = run("t", &spec(ProbeKind::Tcp, "no-port"), 9);
        assert_eq!(bad.status, UNKNOWN);
    }

    #[test]
    fn http_status_codes() {
        let ok = run(
            "h",
            &spec(
                ProbeKind::Http,
                &format!(
                    "http://127.0.0.1:{}/health?x=1",
                    http_responder("200 OK", 1)
                ),
            ),
            0,
        );
        assert_eq!(ok.status, OK, "{ok:#?}");
        assert!(ok.output.contains("status 200"), "{}", ok.output);
        assert_eq!(datum(&ok, "time").uom, "s");
        let missing = run(
            "h",
            &spec(
                ProbeKind::Http,
                &format!("http://127.0.0.1:{}/", http_responder("404 Not Found", 1)),
            ),
            0,
        );
        assert_eq!(missing.status, WARNING, "{missing:#?}");
        let broken = run(
            "h",
            &spec(
                ProbeKind::Http,
                &format!("http://127.0.0.1:{}", http_responder("503 Busy", 1)),
            ),
            0,
        );
        assert_eq!(broken.status, CRITICAL, "{broken:#?}");
        let mut expect = spec(
            ProbeKind::Http,
            &format!("http://127.0.0.1:{}/", http_responder("404 Not Found", 2)),
        );
        expect.expect_status = vec![404];
        assert_eq!(run("h", &expect, 0).status, OK);
        expect.expect_status = vec![200];
        assert_eq!(run("h", &expect, 0).status, CRITICAL);
    }

    #[test]
    fn http_request_is_well_formed() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut head = Vec::new();
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if line == "\r\n" || line.is_empty() {
                    break;
                }
                head.push(line);
            }
            stream
                .write_all(b"HTTP/1.0 204 No Content\r\n\r\n")
                .unwrap();
            head
        });
        let result = run(
            "h",
            &spec(ProbeKind::Http, &format!("http://127.0.0.1:{port}/a/b?c=d")),
            0,
        );
        assert_eq!(result.status, OK, "{result:#?}");
        let head = server.join().unwrap();
        assert_eq!(head[0], "GET /a/b?c=d HTTP/1.1\r\n");
        assert!(
            head.contains(&format!("Host: 127.0.0.1:{port}\r\n")),
            "{head:?}"
        );
        assert!(head.contains(&"Connection: close\r\n".to_owned()));
    }

    #[test]
    fn http_silent_server_times_out_within_the_timeout() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let target = format!("http://{}/", listener.local_addr().unwrap());
        let mut silent = spec(ProbeKind::Http, &target);
        silent.timeout = Duration::from_millis(400);
        let started = Instant::now();
        let result = run("h", &silent, 0);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(result.status, CRITICAL);
        assert!(
            result.error.as_deref().unwrap().contains("timed out"),
            "{result:#?}"
        );
        drop(listener);
    }

    #[test]
    fn dns_resolves_localhost() {
        let result = run("d", &spec(ProbeKind::Dns, "localhost"), 0);
        assert_eq!(result.status, OK, "{result:#?}");
        assert!(datum(&result, "addresses").value.is_some_and(|n| n >= 1.0));
        assert_eq!(datum(&result, "time").uom, "s");
        assert_eq!(
            run("d", &spec(ProbeKind::Dns, "bad name"), 0).status,
            UNKNOWN
        );
    }

    /// A loopback TLS server with a self-signed certificate valid until [`NOT_AFTER_S`],
    /// serving `connections` handshakes (answering HTTP requests with 200).
    fn tls_server(connections: usize) -> u16 {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2030, 1, 1);
        let cert = params.self_signed(&key).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .unwrap();
        let config = Arc::new(config);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for stream in listener.incoming().take(connections) {
                let Ok(stream) = stream else { continue };
                let conn = rustls::ServerConnection::new(config.clone()).unwrap();
                let mut tls = rustls::StreamOwned::new(conn, stream);
                let mut request = [0u8; 1024];
                if let Ok(read) = tls.read(&mut request)
                    && request[..read].starts_with(b"GET ")
                {
                    let _ = tls.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
                    let _ = tls.flush();
                }
            }
        });
        port
    }

    #[test]
    fn tls_expiry_reads_a_self_signed_certificate() {
        let port = tls_server(4);
        let target = format!("127.0.0.1:{port}");
        let at = |days_before: u64| NOT_AFTER_S * 1000 - days_before * DAY_MS;
        let ok = run("c", &spec(ProbeKind::TlsExpiry, &target), at(100));
        assert_eq!(ok.status, OK, "{ok:#?}");
        assert!(ok.output.contains("2030-01-01T00:00:00Z"), "{}", ok.output);
        let days = datum(&ok, "days_left");
        assert_eq!(days.value, Some(100.0));
        assert_eq!(days.warn.as_deref(), Some("30:"));
        assert_eq!(days.crit.as_deref(), Some("7:"));
        assert_eq!(datum(&ok, "time").uom, "s");
        let warning = run("c", &spec(ProbeKind::TlsExpiry, &target), at(20));
        assert_eq!(warning.status, WARNING, "{warning:#?}");
        let critical = run("c", &spec(ProbeKind::TlsExpiry, &target), at(3));
        assert_eq!(critical.status, CRITICAL, "{critical:#?}");
        let expired = run(
            "c",
            &spec(ProbeKind::TlsExpiry, &target),
            NOT_AFTER_S * 1000 + DAY_MS,
        );
        assert_eq!(expired.status, CRITICAL);
        assert_eq!(datum(&expired, "days_left").value, Some(-1.0));
    }

    #[test]
    fn tls_expiry_on_a_plain_tcp_port_is_critical() {
        let port = http_responder("200 OK", 1);
        let result = run(
            "c",
            &spec(ProbeKind::TlsExpiry, &format!("127.0.0.1:{port}")),
            0,
        );
        assert_eq!(result.status, CRITICAL, "{result:#?}");
        assert!(result.error.is_some());
    }

    #[test]
    fn https_uses_the_same_client() {
        let port = tls_server(1);
        let result = run(
            "h",
            &spec(ProbeKind::Http, &format!("https://127.0.0.1:{port}/")),
            0,
        );
        assert_eq!(result.status, OK, "{result:#?}");
    }

    #[test]
    fn expiry_thresholds() {
        assert_eq!(expiry_status(31.0, 30, 7), OK);
        assert_eq!(expiry_status(29.9, 30, 7), WARNING);
        assert_eq!(expiry_status(6.9, 30, 7), CRITICAL);
        assert_eq!(expiry_status(-1.0, 0, 0), CRITICAL);
    }

    #[test]
    fn targets_and_urls() {
        assert_eq!(host_port("h:80", None).unwrap(), ("h".into(), 80));
        assert_eq!(host_port("[::1]:8443", None).unwrap(), ("::1".into(), 8443));
        assert_eq!(host_port("::1", Some(443)).unwrap(), ("::1".into(), 443));
        assert_eq!(host_port("[::1]", Some(443)).unwrap(), ("::1".into(), 443));
        assert_eq!(host_port("h", Some(443)).unwrap(), ("h".into(), 443));
        for bad in ["h", "h:0", "h:99999", ":80", "[h]:80", "[::1]x", "a b:1"] {
            assert!(host_port(bad, None).is_err(), "{bad}");
        }
        let url = Url::parse("https://[::1]/x").unwrap();
        assert_eq!(
            (url.tls, url.host.as_str(), url.port, url.path.as_str()),
            (true, "::1", 443, "/x")
        );
        assert_eq!(url.host_header, "[::1]");
        let url = Url::parse("http://h:8080?q").unwrap();
        assert_eq!((url.port, url.path.as_str()), (8080, "/?q"));
        for bad in [
            "h:80",
            "http://",
            "http://u@h/",
            "http://h/a b",
            "http://h/#x",
        ] {
            assert!(Url::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_status_line(b"HTTP/1.1 301 Moved\r\n").unwrap(), 301);
        assert!(parse_status_line(b"SSH-2.0-OpenSSH\r\n").is_err());
    }
}
