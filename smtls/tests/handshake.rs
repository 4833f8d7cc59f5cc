//! In-memory rustls handshakes on the shangmi provider: mutual TLS with SM2 certificates, and
//! the ways it must fail (standard peers, a bad CertificateVerify, a foreign CA).

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use bagui_smtls::cert::{CertificateAuthority, IssuedCert};
use bagui_smtls::provider::{
    self, CURVE_SM2_GROUP, SM2SIG_SM3_SCHEME, TLS_SM4_GCM_SM3_SUITE_ID, shangmi_provider,
};
use bagui_smtls::sign;
use bagui_smtls::suite::{CERT_SIGNER_ID, TLS13_SIGNER_ID};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{
    CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, SubjectPublicKeyInfoDer,
};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::{CertifiedKey, Signer, SigningKey};
use rustls::{
    AlertDescription, CertificateError, ClientConfig, ClientConnection, Connection, Error,
    PeerIncompatible, RootCertStore, ServerConfig, ServerConnection, SignatureAlgorithm,
    SignatureScheme,
};
use sm2::SecretKey;
use sm2::pkcs8::DecodePrivateKey;

const DAY: Duration = Duration::from_secs(86_400);
const SERVER_NAME: &str = "cp.bagui.test";

struct Pki {
    ca: CertificateAuthority,
    server: IssuedCert,
    client: IssuedCert,
}

fn pki() -> Pki {
    let ca = CertificateAuthority::new("Bagui handshake test CA", DAY).unwrap();
    let server = ca
        .issue_server("control-plane", &[SERVER_NAME], &[], DAY)
        .unwrap();
    let client = ca.issue_client("agent-0001", DAY).unwrap();
    Pki { ca, server, client }
}

fn shangmi_client(pki: &Pki) -> ClientConfig {
    provider::client_config(
        &[pki.ca.cert_der()],
        vec![pki.client.cert.clone()],
        pki.client.private_key_der(),
    )
    .unwrap()
}

fn shangmi_server(pki: &Pki) -> ServerConfig {
    provider::server_config(
        &[pki.ca.cert_der()],
        vec![pki.server.cert.clone()],
        pki.server.private_key_der(),
    )
    .unwrap()
}

fn connect(client: ClientConfig, server: ServerConfig) -> (Connection, Connection) {
    let name = ServerName::try_from(SERVER_NAME).unwrap();
    let client = ClientConnection::new(Arc::new(client), name).unwrap();
    let server = ServerConnection::new(Arc::new(server)).unwrap();
    (client.into(), server.into())
}

/// Moves every pending TLS byte from `from` to `to` and lets `to` process them, recording
/// `to`'s first error (after which it is fed nothing more). Returns the bytes moved.
fn transfer(from: &mut Connection, to: &mut Connection, to_error: &mut Option<Error>) -> usize {
    let mut bytes = Vec::new();
    while from.wants_write() {
        from.write_tls(&mut bytes).unwrap();
    }
    if to_error.is_some() || bytes.is_empty() {
        return bytes.len();
    }
    let mut unread = &bytes[..];
    while !unread.is_empty() {
        to.read_tls(&mut unread).unwrap();
    }
    if let Err(error) = to.process_new_packets() {
        *to_error = Some(error);
    }
    bytes.len()
}

/// Pumps bytes both ways until neither side has anything to say; returns each side's error.
fn pump(client: &mut Connection, server: &mut Connection) -> (Option<Error>, Option<Error>) {
    let (mut client_error, mut server_error) = (None, None);
    for _ in 0..32 {
        let sent = transfer(client, server, &mut server_error);
        let received = transfer(server, client, &mut client_error);
        if sent == 0 && received == 0 {
            break;
        }
    }
    (client_error, server_error)
}

fn handshake_ok(client: &mut Connection, server: &mut Connection) {
    let errors = pump(client, server);
    assert_eq!(errors, (None, None));
    assert!(!client.is_handshaking() && !server.is_handshaking());
}

fn read_available(connection: &mut Connection) -> Vec<u8> {
    let mut data = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match connection.reader().read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => data.extend_from_slice(&chunk[..n]),
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(error) => panic!("read: {error}"),
        }
    }
    data
}

#[test]
fn mutual_tls_negotiates_the_shangmi_suite_and_group_and_carries_data() {
    let pki = pki();
    let (mut client, mut server) = connect(shangmi_client(&pki), shangmi_server(&pki));
    handshake_ok(&mut client, &mut server);

    for side in [&client, &server] {
        let suite = side.negotiated_cipher_suite().unwrap();
        assert_eq!(suite.suite(), TLS_SM4_GCM_SM3_SUITE_ID);
        assert_eq!(u16::from(suite.suite()), 0x00c6);
        let group = side.negotiated_key_exchange_group().unwrap();
        assert_eq!(group.name(), CURVE_SM2_GROUP);
        assert_eq!(u16::from(group.name()), 41);
        assert_eq!(
            side.protocol_version(),
            Some(rustls::ProtocolVersion::TLSv1_3)
        );
    }
    // Each side saw the other's SM2 certificate.
    assert_eq!(
        server.peer_certificates().unwrap(),
        std::slice::from_ref(&pki.client.cert)
    );
    assert_eq!(
        client.peer_certificates().unwrap(),
        std::slice::from_ref(&pki.server.cert)
    );

    // Application data both ways, more than one record's worth.
    let request: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let (mut client_error, mut server_error) = (None, None);
    let mut received = Vec::new();
    for chunk in request.chunks(16 * 1024) {
        client.writer().write_all(chunk).unwrap();
        while transfer(&mut client, &mut server, &mut server_error) > 0 {}
        received.extend(read_available(&mut server));
    }
    assert_eq!(received, request);
    server.writer().write_all(b"acknowledged").unwrap();
    while transfer(&mut server, &mut client, &mut client_error) > 0 {}
    assert_eq!(read_available(&mut client), b"acknowledged");
    assert_eq!((client_error, server_error), (None, None));
}

fn ring_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

#[test]
fn a_standard_client_and_a_shangmi_server_refuse_each_other() {
    let pki = pki();
    let mut roots = RootCertStore::empty();
    roots.add(pki.ca.cert_der()).unwrap();
    let ring_client = ClientConfig::builder_with_provider(ring_provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let (mut client, mut server) = connect(ring_client, shangmi_server(&pki));
    let (client_error, server_error) = pump(&mut client, &mut server);
    // rustls' server checks key-exchange groups before suites: curveSM2 is the first miss.
    assert_eq!(
        server_error,
        Some(Error::PeerIncompatible(
            PeerIncompatible::NoKxGroupsInCommon
        ))
    );
    assert_eq!(
        client_error,
        Some(Error::AlertReceived(AlertDescription::HandshakeFailure))
    );
}

#[test]
fn a_shangmi_client_and_a_standard_server_refuse_each_other() {
    let pki = pki();
    let standard = rcgen::generate_simple_self_signed(vec![SERVER_NAME.to_owned()]).unwrap();
    let ring_server = ServerConfig::builder_with_provider(ring_provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![standard.cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
                standard.signing_key.serialize_der(),
            )),
        )
        .unwrap();
    let (mut client, mut server) = connect(shangmi_client(&pki), ring_server);
    let (client_error, server_error) = pump(&mut client, &mut server);
    assert_eq!(
        server_error,
        Some(Error::PeerIncompatible(
            PeerIncompatible::NoKxGroupsInCommon
        ))
    );
    assert_eq!(
        client_error,
        Some(Error::AlertReceived(AlertDescription::HandshakeFailure))
    );
}

/// A server key that signs CertificateVerify under a chosen signer ID, optionally flipping a
/// bit of the signature: what a broken or malicious peer would send.
#[derive(Debug)]
struct MisbehavingKey {
    secret: Arc<SecretKey>,
    signer_id: &'static str,
    flip_bit: bool,
}

impl SigningKey for MisbehavingKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        offered.contains(&SM2SIG_SM3_SCHEME).then(|| {
            Box::new(MisbehavingSigner {
                secret: Arc::clone(&self.secret),
                signer_id: self.signer_id,
                flip_bit: self.flip_bit,
            }) as Box<dyn Signer>
        })
    }

    fn public_key(&self) -> Option<SubjectPublicKeyInfoDer<'_>> {
        None
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        SignatureAlgorithm::ECDSA
    }
}

#[derive(Debug)]
struct MisbehavingSigner {
    secret: Arc<SecretKey>,
    signer_id: &'static str,
    flip_bit: bool,
}

impl Signer for MisbehavingSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, Error> {
        let signature = sign::sign(&self.secret, self.signer_id, message).unwrap();
        let mut der = signature.to_der().as_bytes().to_vec();
        if self.flip_bit {
            // The last byte is inside s: the DER stays well-formed, the signature wrong.
            *der.last_mut().unwrap() ^= 0x01;
        }
        Ok(der)
    }

    fn scheme(&self) -> SignatureScheme {
        SM2SIG_SM3_SCHEME
    }
}

#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl ResolvesServerCert for Fixed {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }
}

fn server_with_key(pki: &Pki, key: Arc<dyn SigningKey>) -> ServerConfig {
    let provider = Arc::new(shangmi_provider());
    let mut roots = RootCertStore::empty();
    roots.add(pki.ca.cert_der()).unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let certified = CertifiedKey::new(vec![pki.server.cert.clone()], key);
    ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(Fixed(Arc::new(certified))))
}

fn server_secret(pki: &Pki) -> Arc<SecretKey> {
    Arc::new(SecretKey::from_pkcs8_der(pki.server.key.secret_pkcs8_der()).unwrap())
}

fn handshake_with_server_key(
    signer_id: &'static str,
    flip_bit: bool,
) -> (Option<Error>, Option<Error>) {
    let pki = pki();
    let key = MisbehavingKey {
        secret: server_secret(&pki),
        signer_id,
        flip_bit,
    };
    let (mut client, mut server) =
        connect(shangmi_client(&pki), server_with_key(&pki, Arc::new(key)));
    pump(&mut client, &mut server)
}

#[test]
fn the_test_server_key_is_accepted_when_it_behaves() {
    // Control for the two tests below: same key wrapper, correct ID, no tampering.
    assert_eq!(
        handshake_with_server_key(TLS13_SIGNER_ID, false),
        (None, None)
    );
}

#[test]
fn a_tampered_certificate_verify_is_rejected() {
    let (client_error, server_error) = handshake_with_server_key(TLS13_SIGNER_ID, true);
    assert_eq!(
        client_error,
        Some(Error::InvalidCertificate(CertificateError::BadSignature))
    );
    assert_eq!(
        server_error,
        Some(Error::AlertReceived(AlertDescription::DecryptError))
    );
}

#[test]
fn a_certificate_verify_under_the_certificate_signer_id_is_rejected() {
    // Fails if CertificateVerify were checked with the certificate ID (or the IDs swapped):
    // together with the successful handshakes above, whose certificates are signed under
    // CERT_SIGNER_ID and whose CertificateVerify under TLS13_SIGNER_ID, this pins each ID to
    // its use.
    let (client_error, _) = handshake_with_server_key(CERT_SIGNER_ID, false);
    assert_eq!(
        client_error,
        Some(Error::InvalidCertificate(CertificateError::BadSignature))
    );
}

#[test]
fn a_server_certificate_from_another_ca_is_rejected() {
    let pki = pki();
    let stranger = CertificateAuthority::new("Stranger CA", DAY).unwrap();
    let impostor = stranger
        .issue_server("control-plane", &[SERVER_NAME], &[], DAY)
        .unwrap();
    let server = provider::server_config(
        &[pki.ca.cert_der()],
        vec![impostor.cert.clone()],
        impostor.private_key_der(),
    )
    .unwrap();
    let (mut client, mut server) = connect(shangmi_client(&pki), server);
    let (client_error, server_error) = pump(&mut client, &mut server);
    assert_eq!(
        client_error,
        Some(Error::InvalidCertificate(CertificateError::UnknownIssuer))
    );
    assert_eq!(
        server_error,
        Some(Error::AlertReceived(AlertDescription::UnknownCA))
    );
}

#[test]
fn a_client_certificate_from_another_ca_is_rejected() {
    let pki = pki();
    let stranger = CertificateAuthority::new("Stranger CA", DAY).unwrap();
    let impostor = stranger.issue_client("agent-0001", DAY).unwrap();
    let client = provider::client_config(
        &[pki.ca.cert_der()],
        vec![impostor.cert.clone()],
        impostor.private_key_der(),
    )
    .unwrap();
    let (mut client, mut server) = connect(client, shangmi_server(&pki));
    let (client_error, server_error) = pump(&mut client, &mut server);
    assert_eq!(
        server_error,
        Some(Error::InvalidCertificate(CertificateError::UnknownIssuer))
    );
    assert_eq!(
        client_error,
        Some(Error::AlertReceived(AlertDescription::UnknownCA))
    );
}

#[test]
fn a_server_certificate_for_another_name_is_rejected() {
    let pki = pki();
    let other = pki
        .ca
        .issue_server("elsewhere", &["other.bagui.test"], &[], DAY)
        .unwrap();
    let server = provider::server_config(
        &[pki.ca.cert_der()],
        vec![other.cert.clone()],
        other.private_key_der(),
    )
    .unwrap();
    let (mut client, mut server) = connect(shangmi_client(&pki), server);
    let (client_error, _) = pump(&mut client, &mut server);
    assert!(
        matches!(
            client_error,
            Some(Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }
            ))
        ),
        "{client_error:?}"
    );
}

#[test]
fn webpki_verifier_from_the_provider_advertises_only_sm2sig_sm3() {
    let pki = pki();
    let mut roots = RootCertStore::empty();
    roots.add(pki.ca.cert_der()).unwrap();
    let verifier =
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::new(shangmi_provider()))
            .build()
            .unwrap();
    use rustls::client::danger::ServerCertVerifier;
    assert_eq!(verifier.supported_verify_schemes(), vec![SM2SIG_SM3_SCHEME]);
    let _: CertificateDer<'_> = pki.ca.cert_der();
}

#[test]
fn a_second_connection_resumes_under_the_shangmi_suite() {
    // Resumption compares the suites' hash algorithms (SM3's stand-in code point) and runs
    // the PSK key schedule on HKDF-SM3.
    let pki = pki();
    let client = Arc::new(shangmi_client(&pki));
    let server = Arc::new(shangmi_server(&pki));
    let name = ServerName::try_from(SERVER_NAME).unwrap();
    let mut kinds = Vec::new();
    for _ in 0..2 {
        let mut client_connection: Connection =
            ClientConnection::new(Arc::clone(&client), name.clone())
                .unwrap()
                .into();
        let mut server_connection: Connection =
            ServerConnection::new(Arc::clone(&server)).unwrap().into();
        handshake_ok(&mut client_connection, &mut server_connection);
        // Let the client take in the server's session tickets.
        let _ = pump(&mut client_connection, &mut server_connection);
        assert_eq!(
            client_connection.negotiated_cipher_suite().unwrap().suite(),
            TLS_SM4_GCM_SM3_SUITE_ID
        );
        kinds.push(client_connection.handshake_kind());
    }
    assert_eq!(
        kinds,
        [
            Some(rustls::HandshakeKind::Full),
            Some(rustls::HandshakeKind::Resumed)
        ]
    );
}

#[test]
fn the_provider_offers_exactly_the_profile() {
    let provider = shangmi_provider();
    let suites: Vec<_> = provider.cipher_suites.iter().map(|s| s.suite()).collect();
    assert_eq!(suites, [TLS_SM4_GCM_SM3_SUITE_ID]);
    let groups: Vec<_> = provider.kx_groups.iter().map(|g| g.name()).collect();
    assert_eq!(groups, [CURVE_SM2_GROUP]);
    assert_eq!(
        provider
            .signature_verification_algorithms
            .supported_schemes(),
        [SM2SIG_SM3_SCHEME]
    );
    assert!(!provider.fips());
}
