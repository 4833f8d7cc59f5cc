//! rustls and QUIC configurations of the agent.
//!
//! The agent offers exactly one cipher suite and one key-exchange group per crypto profile,
//! so the status it reports (`tls_suite`, `kx_group`) is what was negotiated whenever a
//! handshake succeeded (quinn 0.11 does not expose the negotiated suite itself):
//!
//! - `standard`: ring, TLS13_AES_128_GCM_SHA256 over X25519, ECDSA P-256 certificates;
//! - `shangmi`: `bagui_smtls`, TLS_SM4_GCM_SM3 over curveSM2, SM2 certificates (RFC 8998),
//!   QUIC Initial packets on AES-128-GCM as RFC 9001 requires.
//!
//! The join uses the profile it was told (`--crypto-profile`); every later connection uses
//! the profile of the CA pinned at join. rustls always gets its provider explicitly: with ring
//! and aws-lc-rs both compiled in it would panic choosing one.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bagui_protocol::{ALPN_JOIN, ALPN_SESSION, CryptoProfile, digest};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

/// The cipher suite the agent offers under `standard`.
pub const TLS_SUITE: &str = "TLS13_AES_128_GCM_SHA256";
/// The key-exchange group the agent offers under `standard`.
pub const KX_GROUP: &str = "X25519";

/// The agent's `standard` crypto provider: ring, one suite, one group.
pub fn provider() -> Arc<CryptoProvider> {
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites = vec![rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256];
    provider.kx_groups = vec![rustls::crypto::ring::kx_group::X25519];
    Arc::new(provider)
}

/// The agent's provider for `profile` (one suite, one group either way).
pub fn provider_for(profile: CryptoProfile) -> Arc<CryptoProvider> {
    match profile {
        CryptoProfile::Standard => provider(),
        CryptoProfile::Shangmi => Arc::new(bagui_smtls::provider::shangmi_provider()),
    }
}

/// The profile of a deployment whose CA certificate is `ca` (an SM2 CA is `shangmi`).
pub fn profile_of(ca: &CertificateDer<'_>) -> CryptoProfile {
    if bagui_smtls::cert::is_sm2_certificate(ca) {
        CryptoProfile::Shangmi
    } else {
        CryptoProfile::Standard
    }
}

/// QUIC transport settings of the agent's connections.
pub fn client_transport(idle_timeout: Duration, keep_alive: Duration) -> quinn::TransportConfig {
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_concurrent_bidi_streams(0u32.into())
        .max_concurrent_uni_streams(0u32.into())
        .stream_receive_window((256u32 * 1024).into())
        .receive_window((512u32 * 1024).into())
        .datagram_receive_buffer_size(None)
        .keep_alive_interval(Some(keep_alive))
        .max_idle_timeout(Some(idle_timeout.try_into().unwrap_or_else(|_| {
            quinn::IdleTimeout::from(quinn::VarInt::from_u32(30_000))
        })));
    transport
}

fn quic_client(
    profile: CryptoProfile,
    config: rustls::ClientConfig,
    transport: quinn::TransportConfig,
) -> anyhow::Result<quinn::ClientConfig> {
    let quic = match profile {
        CryptoProfile::Standard => quinn::crypto::rustls::QuicClientConfig::try_from(config)?,
        // The shangmi provider has no AES suite for Initial packets: ring's (RFC 9001 §5.2).
        CryptoProfile::Shangmi => quinn::crypto::rustls::QuicClientConfig::with_initial(
            Arc::new(config),
            bagui_smtls::provider::quic_initial_suite(),
        )?,
    };
    let mut client = quinn::ClientConfig::new(Arc::new(quic));
    client.transport_config(Arc::new(transport));
    Ok(client)
}

/// Whether a handshake ended in a TLS handshake_failure alert (sent by either side): what
/// rustls answers when the peer offered no cipher suite or key-exchange group in common,
/// which between Bagui peers means the two were set up for different crypto profiles.
pub fn is_handshake_failure(error: &quinn::ConnectionError) -> bool {
    const HANDSHAKE_FAILURE: u8 = 40;
    let code = quinn::TransportErrorCode::crypto(HANDSHAKE_FAILURE);
    match error {
        quinn::ConnectionError::ConnectionClosed(close) => close.error_code == code,
        quinn::ConnectionError::TransportError(transport) => transport.code == code,
        _ => false,
    }
}

/// Verifies the control plane's certificate against a CA known only by its SM3 digest: the
/// chain must contain a certificate with that digest, and the leaf must be valid under it
/// for the server name. No trust on first use.
#[derive(Debug)]
pub struct PinnedCaVerifier {
    pinned: String,
    provider: Arc<CryptoProvider>,
    /// SM3 of the CA the server presented (the chain's last certificate), for error messages.
    pub observed: Arc<Mutex<Option<String>>>,
}

impl PinnedCaVerifier {
    pub fn new(pinned: String, provider: Arc<CryptoProvider>) -> PinnedCaVerifier {
        PinnedCaVerifier {
            pinned,
            provider,
            observed: Arc::new(Mutex::new(None)),
        }
    }
}

impl ServerCertVerifier for PinnedCaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(last) = intermediates.last()
            && let Ok(mut observed) = self.observed.lock()
        {
            *observed = Some(digest::sm3_tagged(last));
        }
        let ca = intermediates
            .iter()
            .find(|certificate| digest::sm3_tagged(certificate) == self.pinned)
            .ok_or(rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer,
            ))?;
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let verifier =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|error| rustls::Error::General(error.to_string()))?;
        verifier.verify_server_cert(end_entity, &[], server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            certificate,
            signature,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            certificate,
            signature,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn tls13_builder(
    provider: Arc<CryptoProvider>,
) -> anyhow::Result<rustls::ConfigBuilder<rustls::ClientConfig, rustls::WantsVerifier>> {
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?)
}

/// Enrollment with a CA pinned by digest (`join`), on `profile`.
pub fn join_config(
    profile: CryptoProfile,
    verifier: Arc<PinnedCaVerifier>,
    transport: quinn::TransportConfig,
) -> anyhow::Result<quinn::ClientConfig> {
    let mut config = tls13_builder(provider_for(profile))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_JOIN.to_vec()];
    quic_client(profile, config, transport)
}

/// Renewal after expiry: the join ALPN, trusting the stored CA (on the CA's profile).
pub fn renew_config(
    ca: &CertificateDer<'static>,
    transport: quinn::TransportConfig,
) -> anyhow::Result<quinn::ClientConfig> {
    let profile = profile_of(ca);
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone())?;
    let mut config = tls13_builder(provider_for(profile))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_JOIN.to_vec()];
    quic_client(profile, config, transport)
}

/// The mutually authenticated session (`bagui/1`).
pub fn session_config(
    ca: &CertificateDer<'static>,
    certificate: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
    transport: quinn::TransportConfig,
) -> anyhow::Result<quinn::ClientConfig> {
    let profile = profile_of(ca);
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone())?;
    let mut config = tls13_builder(provider_for(profile))?
        .with_root_certificates(roots)
        .with_client_auth_cert(vec![certificate], key)?;
    config.alpn_protocols = vec![ALPN_SESSION.to_vec()];
    quic_client(profile, config, transport)
}
