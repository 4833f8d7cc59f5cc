//! rustls configurations of the control plane: QUIC (agents) and HTTPS (API off loopback).
//!
//! rustls is always built with the ring provider passed explicitly: with both ring and
//! aws-lc-rs compiled in, rustls panics at run time choosing a default provider.
//!
//! Under the `shangmi` crypto profile (an SM2 CA) every configuration here uses
//! `bagui_smtls`'s provider instead: TLS_SM4_GCM_SM3, curveSM2 and sm2sig_sm3 only, with QUIC
//! Initial packets on AES-128-GCM as RFC 9001 requires. The profile is read off the CA
//! certificate, so a configuration cannot be built for the wrong one.

use std::sync::Arc;
use std::time::Duration;

use bagui_protocol::{ALPN_JOIN, ALPN_SESSION, CryptoProfile};
use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// The crypto provider every Bagui TLS endpoint uses.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The crypto profile of a deployment whose CA certificate is `ca`.
pub fn profile_of(ca: &CertificateDer<'_>) -> CryptoProfile {
    if bagui_smtls::cert::is_sm2_certificate(ca) {
        CryptoProfile::Shangmi
    } else {
        CryptoProfile::Standard
    }
}

/// The provider of a profile: ring's default for `standard`, the shangmi one otherwise.
pub fn provider_for(profile: CryptoProfile) -> Arc<rustls::crypto::CryptoProvider> {
    match profile {
        CryptoProfile::Standard => provider(),
        CryptoProfile::Shangmi => Arc::new(bagui_smtls::provider::shangmi_provider()),
    }
}

/// A TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {message}")]
pub struct TlsError {
    pub what: &'static str,
    pub message: String,
}

fn tls_error(what: &'static str) -> impl FnOnce(&dyn std::fmt::Display) -> TlsError {
    move |error| TlsError {
        what,
        message: error.to_string(),
    }
}

/// QUIC transport limits for the server: one session stream per agent, small windows, so an
/// idle agent costs tens of KiB.
pub fn server_transport(idle_timeout: Duration) -> quinn::TransportConfig {
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_concurrent_bidi_streams(2u32.into())
        .max_concurrent_uni_streams(0u32.into())
        .stream_receive_window((256u32 * 1024).into())
        .receive_window((512u32 * 1024).into())
        .send_window(512 * 1024)
        .datagram_receive_buffer_size(None)
        // Segmentation offload makes every connection keep a transmit buffer of ten datagrams
        // (~13 KiB); agents send a few small packets a minute, so one datagram is plenty.
        .enable_segmentation_offload(false)
        // Reports are small: the 1,200-byte initial MTU carries them, and without discovery no
        // probe packets are sent and each connection's transmit buffer stays that small.
        .mtu_discovery_config(None)
        .max_idle_timeout(Some(idle_timeout.try_into().unwrap_or_else(|_| {
            quinn::IdleTimeout::from(quinn::VarInt::from_u32(60_000))
        })));
    transport
}

/// The QUIC server configuration: server certificate chain, client certificates optional at
/// the TLS layer (enrollment has none) and required by the session ALPN in `ingest`.
pub fn quic_server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    ca: &CertificateDer<'static>,
    transport: quinn::TransportConfig,
) -> Result<quinn::ServerConfig, TlsError> {
    let profile = profile_of(ca);
    let provider = provider_for(profile);
    let mut roots = RootCertStore::empty();
    roots
        .add(ca.clone())
        .map_err(|e| tls_error("adding CA to client roots")(&e))?;
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|e| tls_error("building client certificate verifier")(&e))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| tls_error("selecting TLS 1.3")(&e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| tls_error("loading server certificate")(&e))?;
    config.alpn_protocols = vec![ALPN_SESSION.to_vec(), ALPN_JOIN.to_vec()];
    let quic = match profile {
        CryptoProfile::Standard => quinn::crypto::rustls::QuicServerConfig::try_from(config)
            .map_err(|e| tls_error("building QUIC server crypto")(&e))?,
        // The provider has no AES suite for Initial packets: give quinn ring's (RFC 9001 §5.2).
        CryptoProfile::Shangmi => quinn::crypto::rustls::QuicServerConfig::with_initial(
            Arc::new(config),
            bagui_smtls::provider::quic_initial_suite(),
        )
        .map_err(|e| tls_error("building QUIC server crypto")(&e))?,
    };
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(quic));
    server.transport_config(Arc::new(transport));
    Ok(server)
}

/// The HTTPS configuration for the API when it listens off loopback.
pub fn https_server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<rustls::ServerConfig, TlsError> {
    let profile = chain
        .first()
        .map_or(CryptoProfile::Standard, |leaf| profile_of(leaf));
    let mut config = rustls::ServerConfig::builder_with_provider(provider_for(profile))
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error("selecting TLS versions")(&e))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| tls_error("loading server certificate")(&e))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// A client configuration trusting only the deployment's CA (for the CLI over HTTPS).
pub fn https_client_config(ca: &CertificateDer<'static>) -> Result<rustls::ClientConfig, TlsError> {
    let mut roots = RootCertStore::empty();
    roots
        .add(ca.clone())
        .map_err(|e| tls_error("adding CA")(&e))?;
    let mut config = rustls::ClientConfig::builder_with_provider(provider_for(profile_of(ca)))
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error("selecting TLS versions")(&e))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}
