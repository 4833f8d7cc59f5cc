//! SM2 certificates for the shangmi profile: a self-signed CA, and server and client leaf
//! certificates it signs, all with SM2-with-SM3 signatures under the certificate signer ID
//! [`CERT_SIGNER_ID`] (RFC 8998 §3.2.1). OpenSSL 3.0 verifies them with
//! `openssl verify -vfyopt distid:1234567812345678 -CAfile ca.pem leaf.pem`; without the option
//! OpenSSL 3.0 checks SM2 certificate signatures under an empty ID and fails (see
//! [`CERT_SIGNER_ID`]).
//!
//! Certificates are built with RustCrypto's `x509-cert` builder over the `sm2` crate's signing
//! key; nothing here writes DER by hand. Every certificate is X.509 v3 with subject and
//! authority key identifiers (SHA-1 of the public key, RFC 5280 §4.2.1.2 method 1):
//!
//! - CA: basicConstraints `CA:TRUE, pathlen:0` (leaves only), keyUsage `keyCertSign, cRLSign`;
//! - server: keyUsage `digitalSignature`, extKeyUsage `serverAuth`, subjectAltName with the
//!   given DNS names and IP addresses;
//! - client: keyUsage `digitalSignature`, extKeyUsage `clientAuth`.
//!
//! Validity starts an hour before issuance, to tolerate clock skew between hosts.

use std::net::IpAddr;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sm2::dsa::DerSignature;
use sm2::dsa::SigningKey;
use sm2::dsa::signature::{self, Keypair, Signer};
use sm2::elliptic_curve::Generate;
use sm2::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey, LineEnding};
use sm2::{PublicKey, SecretKey};
use x509_cert::builder::profile::BuilderProfile;
use x509_cert::builder::{Builder, CertificateBuilder};
use x509_cert::der::AnyRef;
use x509_cert::der::asn1::{Ia5String, OctetString};
use x509_cert::der::oid::db::rfc5280::{ID_KP_CLIENT_AUTH, ID_KP_SERVER_AUTH};
use x509_cert::der::{Decode, Encode, EncodePem};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, KeyUsages,
    SubjectAltName, SubjectKeyIdentifier,
};
use x509_cert::ext::{Extension, ToExtension};
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::{
    AlgorithmIdentifier, SignatureAlgorithmIdentifier, SubjectPublicKeyInfoOwned,
    SubjectPublicKeyInfoRef,
};
use x509_cert::time::{Time, Validity};
use x509_cert::{Certificate, TbsCertificate};

use crate::suite::CERT_SIGNER_ID;

/// Why a certificate or key could not be made or loaded.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("no random bytes for an SM2 key or serial number")]
    Random,
    #[error("invalid certificate name {0:?}: {1}")]
    Name(String, String),
    #[error("invalid DNS name {0:?} for a subjectAltName")]
    DnsName(String),
    #[error("validity period out of range: {0}")]
    Validity(String),
    #[error("SM2 key: {0}")]
    Key(String),
    #[error("certificate encoding: {0}")]
    Encoding(String),
    #[error("building the certificate: {0}")]
    Build(String),
}

/// An issued certificate with the SM2 private key it certifies.
#[derive(Debug)]
pub struct IssuedCert {
    /// The certificate, DER.
    pub cert: CertificateDer<'static>,
    /// The private key, PKCS#8 DER (id-ecPublicKey, curve sm2), as OpenSSL 3 writes SM2 keys.
    pub key: PrivatePkcs8KeyDer<'static>,
}

impl IssuedCert {
    /// The certificate as PEM (`CERTIFICATE`).
    pub fn cert_pem(&self) -> Result<String, CertError> {
        cert_pem(&self.cert)
    }

    /// The private key as PEM (`PRIVATE KEY`). Secret: store it accordingly.
    pub fn key_pem(&self) -> Result<String, CertError> {
        let secret = SecretKey::from_pkcs8_der(self.key.secret_pkcs8_der())
            .map_err(|error| CertError::Key(error.to_string()))?;
        secret
            .to_pkcs8_pem(LineEnding::LF)
            .map(|pem| pem.to_string())
            .map_err(|error| CertError::Key(error.to_string()))
    }

    /// The private key as rustls takes it.
    pub fn private_key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.key.clone_key())
    }
}

/// Encodes a DER certificate as PEM.
pub fn cert_pem(cert: &CertificateDer<'_>) -> Result<String, CertError> {
    Certificate::from_der(cert)
        .and_then(|cert| cert.to_pem(LineEnding::LF))
        .map_err(|error| CertError::Encoding(error.to_string()))
}

/// Whether `cert` is a certificate for an SM2 public key (id-ecPublicKey on the SM2 curve,
/// 1.2.156.10197.1.301). False for anything that does not parse.
pub fn is_sm2_certificate(cert: &CertificateDer<'_>) -> bool {
    const SM2_CURVE: x509_cert::der::oid::ObjectIdentifier =
        x509_cert::der::oid::ObjectIdentifier::new_unwrap("1.2.156.10197.1.301");
    Certificate::from_der(cert).is_ok_and(|cert| {
        cert.tbs_certificate()
            .subject_public_key_info()
            .algorithm
            .parameters
            .as_ref()
            .and_then(|parameters| {
                parameters
                    .decode_as::<x509_cert::der::oid::ObjectIdentifier>()
                    .ok()
            })
            == Some(SM2_CURVE)
    })
}

/// Generates a fresh SM2 key pair from the operating system's random source.
pub fn generate_key() -> Result<SecretKey, CertError> {
    SecretKey::try_generate().map_err(|_| CertError::Random)
}

/// An SM2 certificate authority: its certificate and signing key.
#[derive(Debug)]
pub struct CertificateAuthority {
    cert: Certificate,
    cert_der: CertificateDer<'static>,
    secret: SecretKey,
}

impl CertificateAuthority {
    /// Creates a self-signed CA named `CN=<common_name>` with a fresh key, valid for
    /// `validity` from now.
    pub fn new(common_name: &str, validity: Duration) -> Result<CertificateAuthority, CertError> {
        let secret = generate_key()?;
        let subject = common_name_to_name(common_name)?;
        let profile = Profile {
            subject: subject.clone(),
            issuer: subject,
            kind: Kind::Ca,
        };
        let cert = sign(
            profile,
            &secret.public_key(),
            validity_from_now(validity)?,
            &secret,
        )?;
        CertificateAuthority::from_parts(cert, secret)
    }

    /// Loads a CA from its certificate and PKCS#8 key (both DER), checking that they match.
    pub fn from_der(
        cert: &CertificateDer<'_>,
        key: &PrivatePkcs8KeyDer<'_>,
    ) -> Result<CertificateAuthority, CertError> {
        let cert =
            Certificate::from_der(cert).map_err(|error| CertError::Encoding(error.to_string()))?;
        let secret = SecretKey::from_pkcs8_der(key.secret_pkcs8_der())
            .map_err(|error| CertError::Key(error.to_string()))?;
        let ours = spki_of(&secret.public_key())?;
        if cert.tbs_certificate().subject_public_key_info() != &ours {
            return Err(CertError::Key(
                "the key does not match the CA certificate".into(),
            ));
        }
        CertificateAuthority::from_parts(cert, secret)
    }

    fn from_parts(cert: Certificate, secret: SecretKey) -> Result<CertificateAuthority, CertError> {
        let der = cert
            .to_der()
            .map_err(|error| CertError::Encoding(error.to_string()))?;
        Ok(CertificateAuthority {
            cert,
            cert_der: CertificateDer::from(der),
            secret,
        })
    }

    /// The CA certificate, DER (the trust anchor to give both sides).
    pub fn cert_der(&self) -> CertificateDer<'static> {
        self.cert_der.clone()
    }

    /// The CA certificate as PEM.
    pub fn cert_pem(&self) -> Result<String, CertError> {
        cert_pem(&self.cert_der)
    }

    /// The CA's private key, PKCS#8 DER. Secret.
    pub fn key_pkcs8_der(&self) -> Result<PrivatePkcs8KeyDer<'static>, CertError> {
        pkcs8(&self.secret)
    }

    /// Issues a server certificate for a fresh key: `CN=<common_name>`, subjectAltName with
    /// `dns_names` and `ips` (at least one is required: TLS clients check names against it).
    pub fn issue_server(
        &self,
        common_name: &str,
        dns_names: &[&str],
        ips: &[IpAddr],
        validity: Duration,
    ) -> Result<IssuedCert, CertError> {
        self.issue_server_between(common_name, dns_names, ips, period_from_now(validity)?)
    }

    /// [`CertificateAuthority::issue_server`] valid exactly from `not_before` to `not_after`
    /// (for callers with their own clock).
    pub fn issue_server_between(
        &self,
        common_name: &str,
        dns_names: &[&str],
        ips: &[IpAddr],
        (not_before, not_after): (SystemTime, SystemTime),
    ) -> Result<IssuedCert, CertError> {
        let names = subject_alt_names(dns_names, ips)?;
        if names.is_empty() {
            return Err(CertError::DnsName(
                "a server certificate needs at least one DNS name or IP address".into(),
            ));
        }
        self.issue_fresh(
            common_name,
            Kind::Server(names),
            validity_between(not_before, not_after)?,
        )
    }

    /// Issues a client certificate for a fresh key: `CN=<common_name>`, clientAuth.
    pub fn issue_client(
        &self,
        common_name: &str,
        validity: Duration,
    ) -> Result<IssuedCert, CertError> {
        self.issue_fresh(common_name, Kind::Client, validity_from_now(validity)?)
    }

    /// Issues a client certificate for a public key generated elsewhere (an agent that keeps
    /// its private key to itself). Returns the certificate, DER.
    pub fn issue_client_for(
        &self,
        common_name: &str,
        public: &PublicKey,
        validity: Duration,
    ) -> Result<CertificateDer<'static>, CertError> {
        self.issue_client_for_between(common_name, public, period_from_now(validity)?)
    }

    /// [`CertificateAuthority::issue_client_for`] valid exactly from `not_before` to
    /// `not_after` (for callers with their own clock).
    pub fn issue_client_for_between(
        &self,
        common_name: &str,
        public: &PublicKey,
        (not_before, not_after): (SystemTime, SystemTime),
    ) -> Result<CertificateDer<'static>, CertError> {
        let validity = validity_between(not_before, not_after)?;
        let profile = Profile {
            subject: common_name_to_name(common_name)?,
            issuer: self.cert.tbs_certificate().subject().clone(),
            kind: Kind::Client,
        };
        let cert = sign(profile, public, validity, &self.secret)?;
        cert.to_der()
            .map(CertificateDer::from)
            .map_err(|error| CertError::Encoding(error.to_string()))
    }

    fn issue_fresh(
        &self,
        common_name: &str,
        kind: Kind,
        validity: Validity,
    ) -> Result<IssuedCert, CertError> {
        let secret = generate_key()?;
        let profile = Profile {
            subject: common_name_to_name(common_name)?,
            issuer: self.cert.tbs_certificate().subject().clone(),
            kind,
        };
        let cert = sign(profile, &secret.public_key(), validity, &self.secret)?;
        let der = cert
            .to_der()
            .map_err(|error| CertError::Encoding(error.to_string()))?;
        Ok(IssuedCert {
            cert: CertificateDer::from(der),
            key: pkcs8(&secret)?,
        })
    }
}

fn pkcs8(secret: &SecretKey) -> Result<PrivatePkcs8KeyDer<'static>, CertError> {
    let der = secret
        .to_pkcs8_der()
        .map_err(|error| CertError::Key(error.to_string()))?;
    Ok(PrivatePkcs8KeyDer::from(der.as_bytes().to_vec()))
}

fn spki_of(public: &PublicKey) -> Result<SubjectPublicKeyInfoOwned, CertError> {
    let der = public
        .to_public_key_der()
        .map_err(|error| CertError::Key(error.to_string()))?;
    SubjectPublicKeyInfoOwned::from_der(der.as_bytes())
        .map_err(|error| CertError::Key(error.to_string()))
}

/// Builds and signs the certificate for `subject_public` with `issuer_secret` under
/// [`CERT_SIGNER_ID`].
fn sign(
    profile: Profile,
    subject_public: &PublicKey,
    validity: Validity,
    issuer_secret: &SecretKey,
) -> Result<Certificate, CertError> {
    let signer = SigningKey::new(CERT_SIGNER_ID, issuer_secret)
        .map_err(|error| CertError::Key(error.to_string()))?;
    let builder = CertificateBuilder::new(
        profile,
        serial_number()?,
        validity,
        spki_of(subject_public)?,
    )
    .map_err(|error| CertError::Build(error.to_string()))?;
    builder
        .build::<_, DerSignature>(&CertSigner(signer))
        .map_err(|error| CertError::Build(error.to_string()))
}

/// The `sm2` signing key with DER signatures. X.509 (RFC 5280 §4.1.1.3 with GB/T 35276)
/// carries an SM2 signature as DER `SEQUENCE { r, s }`, but the `sm2` crate's plain
/// `Signature` goes into a bit string as the fixed 64-byte `r || s`, which OpenSSL rejects.
struct CertSigner(SigningKey);

impl Keypair for CertSigner {
    type VerifyingKey = sm2::dsa::VerifyingKey;

    fn verifying_key(&self) -> Self::VerifyingKey {
        self.0.verifying_key().clone()
    }
}

impl Signer<DerSignature> for CertSigner {
    fn try_sign(&self, message: &[u8]) -> Result<DerSignature, signature::Error> {
        let signature: sm2::dsa::Signature = self.0.try_sign(message)?;
        Ok(DerSignature::from(signature))
    }
}

impl SignatureAlgorithmIdentifier for CertSigner {
    type Params = AnyRef<'static>;

    const SIGNATURE_ALGORITHM_IDENTIFIER: AlgorithmIdentifier<Self::Params> =
        <SigningKey as SignatureAlgorithmIdentifier>::SIGNATURE_ALGORITHM_IDENTIFIER;
}

/// 16 random bytes, positive and without a leading zero byte (RFC 5280 §4.1.2.2).
fn serial_number() -> Result<SerialNumber, CertError> {
    let mut bytes = [0u8; 16];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut bytes)
        .map_err(|_| CertError::Random)?;
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    SerialNumber::new(&bytes).map_err(|error| CertError::Encoding(error.to_string()))
}

/// From an hour ago (clock skew between hosts) to `validity` from now.
fn period_from_now(validity: Duration) -> Result<(SystemTime, SystemTime), CertError> {
    const SKEW: Duration = Duration::from_secs(3600);
    let now = SystemTime::now();
    let invalid = |what: &str| CertError::Validity(what.to_owned());
    let not_before = now.checked_sub(SKEW).ok_or_else(|| invalid("clock"))?;
    let not_after = now
        .checked_add(validity)
        .ok_or_else(|| invalid("too long"))?;
    Ok((not_before, not_after))
}

fn validity_from_now(validity: Duration) -> Result<Validity, CertError> {
    let (not_before, not_after) = period_from_now(validity)?;
    validity_between(not_before, not_after)
}

fn validity_between(not_before: SystemTime, not_after: SystemTime) -> Result<Validity, CertError> {
    let invalid = |what: &str| CertError::Validity(what.to_owned());
    if not_after <= not_before {
        return Err(invalid("notAfter is not after notBefore"));
    }
    Ok(Validity::new(
        Time::try_from(not_before).map_err(|error| invalid(&error.to_string()))?,
        Time::try_from(not_after).map_err(|error| invalid(&error.to_string()))?,
    ))
}

/// `CN=<common_name>`, escaped as RFC 4514 requires so no input can add attributes.
fn common_name_to_name(common_name: &str) -> Result<Name, CertError> {
    if common_name.is_empty() {
        return Err(CertError::Name(common_name.into(), "empty".into()));
    }
    let mut escaped = String::with_capacity(common_name.len() + 3);
    let last = common_name.chars().count() - 1;
    for (index, character) in common_name.chars().enumerate() {
        let special = matches!(character, ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=')
            || (index == 0 && matches!(character, '#' | ' '))
            || (index == last && character == ' ');
        if special {
            escaped.push('\\');
        }
        escaped.push(character);
    }
    Name::from_str(&format!("CN={escaped}"))
        .map_err(|error| CertError::Name(common_name.into(), error.to_string()))
}

fn subject_alt_names(dns_names: &[&str], ips: &[IpAddr]) -> Result<Vec<GeneralName>, CertError> {
    let mut names = Vec::with_capacity(dns_names.len() + ips.len());
    for dns in dns_names {
        let valid = rustls::pki_types::DnsName::try_from(*dns).is_ok();
        let name = Ia5String::new(dns)
            .ok()
            .filter(|_| valid)
            .ok_or_else(|| CertError::DnsName((*dns).into()))?;
        names.push(GeneralName::DnsName(name));
    }
    for ip in ips {
        let octets = match ip {
            IpAddr::V4(v4) => v4.octets().to_vec(),
            IpAddr::V6(v6) => v6.octets().to_vec(),
        };
        let octets =
            OctetString::new(octets).map_err(|error| CertError::Encoding(error.to_string()))?;
        names.push(GeneralName::IpAddress(octets));
    }
    Ok(names)
}

enum Kind {
    Ca,
    Server(Vec<GeneralName>),
    Client,
}

struct Profile {
    subject: Name,
    issuer: Name,
    kind: Kind,
}

impl BuilderProfile for Profile {
    fn get_issuer(&self, _subject: &Name) -> Name {
        self.issuer.clone()
    }

    fn get_subject(&self) -> Name {
        self.subject.clone()
    }

    fn build_extensions(
        &self,
        spk: SubjectPublicKeyInfoRef<'_>,
        issuer_spk: SubjectPublicKeyInfoRef<'_>,
        tbs: &TbsCertificate,
    ) -> x509_cert::builder::Result<Vec<Extension>> {
        let subject = tbs.subject();
        let mut extensions: Vec<Extension> = Vec::new();
        let ski = SubjectKeyIdentifier::try_from(spk)?;
        let issuer_ski = SubjectKeyIdentifier::try_from(issuer_spk)?;
        let aki = AuthorityKeyIdentifier {
            key_identifier: Some(issuer_ski.0),
            ..Default::default()
        };
        extensions.push(aki.to_extension(subject, &extensions)?);
        extensions.push(ski.to_extension(subject, &extensions)?);
        let (ca, usage, extended) = match &self.kind {
            Kind::Ca => (true, KeyUsages::KeyCertSign | KeyUsages::CRLSign, None),
            Kind::Server(_) => (
                false,
                KeyUsages::DigitalSignature.into(),
                Some(ID_KP_SERVER_AUTH),
            ),
            Kind::Client => (
                false,
                KeyUsages::DigitalSignature.into(),
                Some(ID_KP_CLIENT_AUTH),
            ),
        };
        let constraints = BasicConstraints {
            ca,
            path_len_constraint: ca.then_some(0),
        };
        extensions.push(constraints.to_extension(subject, &extensions)?);
        extensions.push(KeyUsage(usage).to_extension(subject, &extensions)?);
        if let Some(purpose) = extended {
            extensions.push(ExtendedKeyUsage(vec![purpose]).to_extension(subject, &extensions)?);
        }
        if let Kind::Server(names) = &self.kind {
            extensions.push(SubjectAltName(names.clone()).to_extension(subject, &extensions)?);
        }
        Ok(extensions)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::process::Command;

    const DAY: Duration = Duration::from_secs(86_400);

    /// OpenSSL 3.0 verifies SM2 certificate signatures under the GB/T default ID only when told
    /// to: without this option `openssl verify` (3.0.19) uses an empty ID and reports
    /// "certificate signature failure"; certificates that `openssl x509 -req` signs without
    /// `-sigopt distid:1234567812345678` verify only without it.
    const DISTID: [&str; 2] = ["-vfyopt", "distid:1234567812345678"];

    fn write(dir: &Path, name: &str, text: &str) -> String {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    }

    /// Runs `openssl` and returns (success, stdout + stderr). Panics if openssl cannot be run:
    /// the test must not pass without it.
    fn openssl(args: &[&str]) -> (bool, String) {
        let output = Command::new("openssl")
            .args(args)
            .output()
            .unwrap_or_else(|error| {
                panic!("openssl is required for this test and could not be run: {error}")
            });
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        (output.status.success(), text)
    }

    #[test]
    fn openssl_verifies_server_and_client_certificates_against_the_ca() {
        let ca = CertificateAuthority::new("Bagui test CA", DAY).unwrap();
        let server = ca
            .issue_server(
                "control-plane",
                &["cp.bagui.test"],
                &["127.0.0.1".parse().unwrap()],
                DAY,
            )
            .unwrap();
        let client = ca.issue_client("agent-0001", DAY).unwrap();

        let dir = tempfile::tempdir().unwrap();
        let ca_pem = write(dir.path(), "ca.pem", &ca.cert_pem().unwrap());
        let server_pem = write(dir.path(), "server.pem", &server.cert_pem().unwrap());
        let client_pem = write(dir.path(), "client.pem", &client.cert_pem().unwrap());
        let (version_ok, version) = openssl(&["version"]);
        assert!(version_ok, "{version}");

        for (leaf, purpose) in [(&server_pem, "sslserver"), (&client_pem, "sslclient")] {
            let (ok, text) = openssl(&["verify", DISTID[0], DISTID[1], "-CAfile", &ca_pem, leaf]);
            assert!(ok && text.contains(": OK"), "{version}: {text}");
            let (ok, text) = openssl(&[
                "verify", DISTID[0], DISTID[1], "-purpose", purpose, "-CAfile", &ca_pem, leaf,
            ]);
            assert!(ok, "{purpose}: {text}");
        }

        // Another CA's certificate does not verify a leaf of this one.
        let other = CertificateAuthority::new("Other CA", DAY).unwrap();
        let other_pem = write(dir.path(), "other.pem", &other.cert_pem().unwrap());
        let (ok, text) = openssl(&[
            "verify",
            DISTID[0],
            DISTID[1],
            "-CAfile",
            &other_pem,
            &server_pem,
        ]);
        assert!(!ok, "{text}");

        // The leaf's key and SANs as openssl reads them.
        let (ok, text) = openssl(&["x509", "-in", &server_pem, "-noout", "-text"]);
        assert!(ok, "{text}");
        assert!(text.contains("Signature Algorithm: SM2-with-SM3"), "{text}");
        assert!(text.contains("ASN1 OID: SM2"), "{text}");
        assert!(
            text.contains("DNS:cp.bagui.test, IP Address:127.0.0.1"),
            "{text}"
        );
    }

    #[test]
    fn a_ca_reloads_from_der_and_refuses_a_foreign_key() {
        let ca = CertificateAuthority::new("Reload CA", DAY).unwrap();
        let key = ca.key_pkcs8_der().unwrap();
        let reloaded = CertificateAuthority::from_der(&ca.cert_der(), &key).unwrap();
        assert_eq!(reloaded.cert_der(), ca.cert_der());
        reloaded.issue_client("agent", DAY).unwrap();

        let other = CertificateAuthority::new("Other", DAY).unwrap();
        let other_key = other.key_pkcs8_der().unwrap();
        assert!(CertificateAuthority::from_der(&ca.cert_der(), &other_key).is_err());
        assert!(CertificateAuthority::from_der(&CertificateDer::from(vec![0x30]), &key).is_err());
    }

    #[test]
    fn names_are_escaped_and_bad_names_refused() {
        let name = common_name_to_name("a,b+c=d").unwrap();
        assert_eq!(name.iter().count(), 1, "one attribute, whatever the input");
        assert_eq!(name.common_name().unwrap().unwrap().value(), "a,b+c=d");
        assert!(common_name_to_name("").is_err());

        let ca = CertificateAuthority::new("CA", DAY).unwrap();
        assert!(ca.issue_server("s", &[], &[], DAY).is_err());
        assert!(ca.issue_server("s", &["not a dns name"], &[], DAY).is_err());
        assert!(ca.issue_server("s", &["bad..name"], &[], DAY).is_err());
        let issued = ca.issue_server("s", &["ok.example"], &[], DAY).unwrap();
        assert!(
            issued
                .key_pem()
                .unwrap()
                .starts_with("-----BEGIN PRIVATE KEY-----")
        );
        assert!(
            issued
                .cert_pem()
                .unwrap()
                .starts_with("-----BEGIN CERTIFICATE-----")
        );
    }

    #[test]
    fn keys_move_between_openssl_and_this_crate() {
        use crate::provider::shangmi_provider;
        use rustls::pki_types::SignatureVerificationAlgorithm;

        let dir = tempfile::tempdir().unwrap();
        // SM2 keys from OpenSSL load through the provider's KeyProvider and sign: as PKCS#8,
        // and as the SEC1 ECPrivateKey that `genpkey -outform DER` writes for EC keys.
        let sec1_path = dir.path().join("openssl-sec1.der");
        let pkcs8_path = dir.path().join("openssl-pkcs8.der");
        let (sec1_path, pkcs8_path) = (sec1_path.to_str().unwrap(), pkcs8_path.to_str().unwrap());
        let (ok, text) = openssl(&[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:SM2",
            "-outform",
            "DER",
            "-out",
            sec1_path,
        ]);
        assert!(ok, "{text}");
        let (ok, text) = openssl(&[
            "pkcs8", "-topk8", "-nocrypt", "-inform", "DER", "-in", sec1_path, "-outform", "DER",
            "-out", pkcs8_path,
        ]);
        assert!(ok, "{text}");
        let sec1 = std::fs::read(sec1_path).unwrap();
        let pkcs8 = std::fs::read(pkcs8_path).unwrap();
        let public = SecretKey::from_pkcs8_der(&pkcs8)
            .unwrap()
            .public_key()
            .to_sec1_bytes();
        for key in [
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pkcs8.clone())),
            PrivateKeyDer::Sec1(sec1.into()),
        ] {
            let key = shangmi_provider()
                .key_provider
                .load_private_key(key)
                .unwrap();
            let signer = key
                .choose_scheme(&[crate::provider::SM2SIG_SM3_SCHEME])
                .unwrap();
            let signature = signer.sign(b"transcript").unwrap();
            crate::provider::verify::SM2_SM3_TLS13
                .verify_signature(&public, b"transcript", &signature)
                .unwrap();
        }

        // A key from this crate reads back in OpenSSL as an SM2 key.
        let ca = CertificateAuthority::new("CA", DAY).unwrap();
        let issued = ca.issue_client("agent", DAY).unwrap();
        let key_pem = write(dir.path(), "key.pem", &issued.key_pem().unwrap());
        let (ok, text) = openssl(&["pkey", "-in", &key_pem, "-noout", "-text"]);
        assert!(ok && text.contains("ASN1 OID: SM2"), "{text}");
    }
}
