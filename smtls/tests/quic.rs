//! quinn over the shangmi provider on loopback: Initial packets on AES-128-GCM (RFC 9001),
//! handshake and 1-RTT packets on SM4-GCM with SM4 header protection.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bagui_smtls::cert::CertificateAuthority;
use bagui_smtls::provider::{self, TLS13_SM4_GCM_SM3, quic_initial_suite, shangmi_provider};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::crypto::cipher::{AeadKey, Iv};
use rustls::pki_types::CertificateDer;
use rustls::{SupportedCipherSuite, Tls13CipherSuite, quic};

const DAY: Duration = Duration::from_secs(86_400);
const ALPN: &[u8] = b"bagui-test";
const LOOPBACK: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 0);

/// Counts the SM4 packet and header-protection keys the client makes, so the test can tell
/// that QUIC packets after Initial were protected by the shangmi suite.
#[derive(Debug)]
struct Counting;

static PACKET_KEYS: AtomicUsize = AtomicUsize::new(0);
static HEADER_KEYS: AtomicUsize = AtomicUsize::new(0);

fn sm4_quic() -> &'static dyn quic::Algorithm {
    TLS13_SM4_GCM_SM3.quic.unwrap()
}

impl quic::Algorithm for Counting {
    fn packet_key(&self, key: AeadKey, iv: Iv) -> Box<dyn quic::PacketKey> {
        PACKET_KEYS.fetch_add(1, Ordering::SeqCst);
        sm4_quic().packet_key(key, iv)
    }

    fn header_protection_key(&self, key: AeadKey) -> Box<dyn quic::HeaderProtectionKey> {
        HEADER_KEYS.fetch_add(1, Ordering::SeqCst);
        sm4_quic().header_protection_key(key)
    }

    fn aead_key_len(&self) -> usize {
        sm4_quic().aead_key_len()
    }
}

static COUNTING_SUITE: Tls13CipherSuite = Tls13CipherSuite {
    common: rustls::crypto::CipherSuiteCommon {
        suite: TLS13_SM4_GCM_SM3.common.suite,
        hash_provider: TLS13_SM4_GCM_SM3.common.hash_provider,
        confidentiality_limit: TLS13_SM4_GCM_SM3.common.confidentiality_limit,
    },
    hkdf_provider: TLS13_SM4_GCM_SM3.hkdf_provider,
    aead_alg: TLS13_SM4_GCM_SM3.aead_alg,
    quic: Some(&Counting),
};

fn client_config(roots: &[CertificateDer<'static>], pki: &Pki) -> rustls::ClientConfig {
    let mut provider = shangmi_provider();
    provider.cipher_suites = vec![SupportedCipherSuite::Tls13(&COUNTING_SUITE)];
    let provider = Arc::new(provider);
    let mut store = rustls::RootCertStore::empty();
    for root in roots {
        store.add(root.clone()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(store)
        .with_client_auth_cert(vec![pki.client_cert.clone()], pki.client_key())
        .unwrap();
    config.alpn_protocols = vec![ALPN.to_vec()];
    config
}

struct Pki {
    ca: CertificateAuthority,
    server: bagui_smtls::cert::IssuedCert,
    client_cert: CertificateDer<'static>,
    client_key: rustls::pki_types::PrivatePkcs8KeyDer<'static>,
}

impl Pki {
    fn client_key(&self) -> rustls::pki_types::PrivateKeyDer<'static> {
        rustls::pki_types::PrivateKeyDer::Pkcs8(self.client_key.clone_key())
    }
}

fn pki() -> Pki {
    let ca = CertificateAuthority::new("Bagui QUIC test CA", DAY).unwrap();
    let server = ca
        .issue_server(
            "control-plane",
            &["cp.bagui.test"],
            &[Ipv4Addr::LOCALHOST.into()],
            DAY,
        )
        .unwrap();
    let client = ca.issue_client("agent-0001", DAY).unwrap();
    Pki {
        ca,
        server,
        client_cert: client.cert,
        client_key: client.key,
    }
}

fn server_endpoint(pki: &Pki) -> quinn::Endpoint {
    let mut config = provider::server_config(
        &[pki.ca.cert_der()],
        vec![pki.server.cert.clone()],
        pki.server.private_key_der(),
    )
    .unwrap();
    config.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = QuicServerConfig::with_initial(Arc::new(config), quic_initial_suite()).unwrap();
    quinn::Endpoint::server(quinn::ServerConfig::with_crypto(Arc::new(crypto)), LOOPBACK).unwrap()
}

/// Accepts one connection and echoes one bidirectional stream back to its sender.
async fn echo_once(endpoint: quinn::Endpoint) -> Vec<u8> {
    let connection = endpoint.accept().await.unwrap().await.unwrap();
    let (mut send, mut recv) = connection.accept_bi().await.unwrap();
    let data = recv.read_to_end(4 << 20).await.unwrap();
    send.write_all(&data).await.unwrap();
    send.finish().unwrap();
    // The client's certificate, as the server saw it.
    let identity = connection.peer_identity().unwrap();
    let chain = identity.downcast::<Vec<CertificateDer<'static>>>().unwrap();
    connection.closed().await;
    chain[0].to_vec()
}

#[tokio::test]
async fn quinn_echoes_a_stream_over_sm4_gcm_on_loopback() {
    let pki = pki();
    let server = server_endpoint(&pki);
    let server_addr = server.local_addr().unwrap();
    let echo = tokio::spawn(echo_once(server.clone()));

    let crypto = QuicClientConfig::with_initial(
        Arc::new(client_config(&[pki.ca.cert_der()], &pki)),
        quic_initial_suite(),
    )
    .unwrap();
    let mut client = quinn::Endpoint::client(LOOPBACK).unwrap();
    client.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));

    let connection = client
        .connect(server_addr, "cp.bagui.test")
        .unwrap()
        .await
        .unwrap();
    let handshake = connection
        .handshake_data()
        .unwrap()
        .downcast::<quinn::crypto::rustls::HandshakeData>()
        .unwrap();
    assert_eq!(handshake.protocol.as_deref(), Some(ALPN));

    let payload: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    let (mut send, mut recv) = connection.open_bi().await.unwrap();
    send.write_all(&payload).await.unwrap();
    send.finish().unwrap();
    let echoed = recv.read_to_end(4 << 20).await.unwrap();
    assert_eq!(echoed.len(), payload.len());
    assert!(echoed == payload, "echoed bytes differ");

    connection.close(0u32.into(), b"done");
    let client_cert_seen_by_server = echo.await.unwrap();
    assert_eq!(client_cert_seen_by_server, pki.client_cert.to_vec());
    client.wait_idle().await;

    // Keys after Initial came from the SM4 suite (Initial keys come from the AES suite and
    // never reach it).
    // Header-protection keys: Handshake and 1-RTT, each way. Packet keys: those four plus
    // the next key phase's, which rustls derives ahead.
    assert_eq!(HEADER_KEYS.load(Ordering::SeqCst), 4);
    assert!(PACKET_KEYS.load(Ordering::SeqCst) >= 4);
}

#[test]
fn the_initial_suite_is_aes_128_gcm() {
    assert_eq!(
        quic_initial_suite().suite.common.suite,
        rustls::CipherSuite::TLS13_AES_128_GCM_SHA256
    );
}
