//! The rustls 0.23 [`CryptoProvider`] for Bagui's `shangmi` profile, and the client/server
//! configurations built on it.
//!
//! # The profile
//!
//! TLS 1.3 only (RFC 8446, RFC 8998), and exactly one choice at every point:
//!
//! | what | choice | code point |
//! |---|---|---|
//! | cipher suite | TLS_SM4_GCM_SM3: AEAD_SM4_GCM records, SM3 transcript hash, HKDF-SM3 key schedule | 0x00C6 |
//! | key exchange | curveSM2: ECDHE on the SM2 curve, 65-byte uncompressed SEC1 shares, shared secret = x coordinate (32 bytes) | group 41 |
//! | signatures | sm2sig_sm3: SM2 with SM3, DER `SEQUENCE { r, s }` | 0x0708 |
//! | certificates | X.509 v3, SM2 keys (id-ecPublicKey, curve 1.2.156.10197.1.301), signed SM2-with-SM3 (1.2.156.10197.1.501, no parameters) | — |
//! | signer IDs | certificates: `1234567812345678`; CertificateVerify: `TLSv1.3+GM+Cipher+Suite` (RFC 8998 §3.2.1) | — |
//!
//! No other suite, group or scheme is offered or accepted, so a peer without the profile fails
//! the handshake (a standard client gets `handshake_failure`: no common suite or group).
//! Certificate chains are verified by webpki with the SM2 algorithm in
//! [`verify::SUPPORTED_SIG_ALGS`]`.all` (certificate ID); CertificateVerify with the one in its
//! `mapping` (TLS 1.3 ID).
//!
//! # QUIC (no standard defines this; Bagui's choice)
//!
//! RFC 9001 protects QUIC packets with "the AEAD and hash of the negotiated TLS 1.3 suite" and
//! defines header protection only for the AES and ChaCha20 suites. For TLS_SM4_GCM_SM3 Bagui
//! does what RFC 9001 does for TLS_AES_128_GCM_SHA256, with SM4 in AES's place and SM3 in
//! SHA-256's:
//!
//! - packet key, IV and header-protection key: HKDF-Expand-Label with HKDF-SM3 and the labels
//!   `"quic key"` (16 bytes), `"quic iv"` (12 bytes), `"quic hp"` (16 bytes); key update with
//!   `"quic ku"` (rustls does the derivation with the suite's HKDF);
//! - packet protection: AEAD_SM4_GCM, nonce = IV xor the left-padded packet number, AAD = the
//!   header (RFC 9001 §5.3), 16-byte tag;
//! - header protection: sample 16 bytes as RFC 9001 §5.4.2 says, mask =
//!   SM4-ECB(hp_key, sample)[0..5], applied as §5.4.1 (4 low bits of a long-header first byte,
//!   5 of a short one, then the packet-number bytes);
//! - limits: AEAD_AES_128_GCM's (RFC 9001 §6.6), confidentiality 2^23 packets, integrity 2^52
//!   forgery attempts: SM4 has AES's 128-bit block, and GCM's bounds depend only on that;
//! - Initial packets: AES-128-GCM with the RFC 9001 salt, as QUIC v1 requires of every
//!   endpoint, whatever suite TLS negotiates. The QUIC configs therefore take the Initial suite
//!   separately ([`quic_initial_suite`]); no ShangMi secret protects Initial packets.
//!
//! A peer implementing this needs all of the above. Known answers: [`crate::header`] (RFC 9001
//! A.2's hp key and sample through SM4), and this module's QUIC tests, which redo RFC 9001 A.1's
//! Initial-secret derivation with SM3 in OpenSSL and check the suite's packet key, IV and
//! header mask against it.

mod aead;
mod hash;
mod kx;
mod quic;
mod signer;
pub mod verify;

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::crypto::tls13::HkdfUsingHmac;
use rustls::crypto::{CipherSuiteCommon, CryptoProvider};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    CipherSuite, ClientConfig, Error, RootCertStore, ServerConfig, SupportedCipherSuite,
    Tls13CipherSuite,
};

pub use kx::KEY_SHARE_LEN;
pub use signer::{Sm2KeyProvider, Sm2SigningKey};
pub use verify::SM2SIG_SM3_SCHEME;

use crate::suite::TLS_SM4_GCM_SM3;

/// TLS_SM4_GCM_SM3 as rustls names it.
pub const TLS_SM4_GCM_SM3_SUITE_ID: CipherSuite = CipherSuite::Unknown(TLS_SM4_GCM_SM3);

/// curveSM2 as rustls names it.
pub const CURVE_SM2_GROUP: rustls::NamedGroup = kx::NAMED_GROUP;

static HKDF_SM3: HkdfUsingHmac<'static> = HkdfUsingHmac(&hash::HMAC_SM3);

/// The TLS 1.3 suite TLS_SM4_GCM_SM3, with QUIC support.
pub static TLS13_SM4_GCM_SM3: Tls13CipherSuite = Tls13CipherSuite {
    common: CipherSuiteCommon {
        suite: TLS_SM4_GCM_SM3_SUITE_ID,
        hash_provider: &hash::SM3,
        confidentiality_limit: aead::TLS_CONFIDENTIALITY_LIMIT,
    },
    hkdf_provider: &HKDF_SM3,
    aead_alg: &aead::SM4_GCM,
    quic: Some(&quic::SM4_QUIC),
};

/// The curveSM2 key-exchange group.
pub static CURVE_SM2: &dyn rustls::crypto::SupportedKxGroup = &kx::CURVE_SM2_KX;

/// The shangmi [`CryptoProvider`]: TLS_SM4_GCM_SM3, curveSM2, sm2sig_sm3, SM2 keys. Randomness
/// comes from ring's system random source.
pub fn shangmi_provider() -> CryptoProvider {
    CryptoProvider {
        cipher_suites: vec![SupportedCipherSuite::Tls13(&TLS13_SM4_GCM_SM3)],
        kx_groups: vec![CURVE_SM2],
        signature_verification_algorithms: verify::SUPPORTED_SIG_ALGS,
        secure_random: rustls::crypto::ring::default_provider().secure_random,
        key_provider: &signer::SM2_KEY_PROVIDER,
    }
}

/// The suite QUIC Initial packets use under this profile: ring's TLS13_AES_128_GCM_SHA256
/// (RFC 9001 §5.2). Pass it to quinn's `QuicClientConfig::with_initial` /
/// `QuicServerConfig::with_initial`, since the shangmi provider itself has no AES suite.
pub fn quic_initial_suite() -> rustls::quic::Suite {
    rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256
        .tls13()
        .and_then(Tls13CipherSuite::quic_suite)
        .expect("ring's TLS13_AES_128_GCM_SHA256 is a TLS 1.3 suite with QUIC support")
}

fn root_store(roots: &[CertificateDer<'static>]) -> Result<Arc<RootCertStore>, Error> {
    let mut store = RootCertStore::empty();
    for root in roots {
        store.add(root.clone())?;
    }
    Ok(Arc::new(store))
}

/// A client configuration on the shangmi profile with client authentication (mutual TLS):
/// trusts server certificates chaining to `roots`, presents `cert_chain` (leaf first) with
/// `key` (SM2, PKCS#8 or SEC1). ALPN and other options are left to the caller.
pub fn client_config(
    roots: &[CertificateDer<'static>],
    cert_chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<ClientConfig, Error> {
    let provider = Arc::new(shangmi_provider());
    let verifier =
        WebPkiServerVerifier::builder_with_provider(root_store(roots)?, provider.clone())
            .build()
            .map_err(|error| Error::General(format!("server certificate verifier: {error}")))?;
    ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_webpki_verifier(verifier)
        .with_client_auth_cert(cert_chain, key)
}

/// A server configuration on the shangmi profile that requires client certificates chaining
/// to `client_roots`, and presents `cert_chain` (leaf first) with `key` (SM2).
pub fn server_config(
    client_roots: &[CertificateDer<'static>],
    cert_chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<ServerConfig, Error> {
    let provider = Arc::new(shangmi_provider());
    let verifier =
        WebPkiClientVerifier::builder_with_provider(root_store(client_roots)?, provider.clone())
            .build()
            .map_err(|error| Error::General(format!("client certificate verifier: {error}")))?;
    ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(cert_chain, key)
}
