//! The deployment's certificate authority: made at `init`, issues the control plane's server
//! certificate and every agent's client certificate.
//!
//! Keys are ECDSA P-256 (what every TLS stack verifies fast); the ShangMi profile with SM2
//! certificates is a separate issue. Agents pin the CA by the SM3 digest of its certificate.

use std::time::Duration;

use bagui_protocol::digest;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls_pki_types::{
    CertificateDer, CertificateSigningRequestDer, PrivateKeyDer, PrivatePkcs8KeyDer,
};

/// A certificate operation failed.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("certificate request is invalid: {0}")]
    BadRequest(String),
    #[error("{what}: {source}")]
    Rcgen {
        what: &'static str,
        #[source]
        source: rcgen::Error,
    },
    #[error("{0}")]
    Pem(String),
}

fn rcgen_error(what: &'static str) -> impl FnOnce(rcgen::Error) -> PkiError {
    move |source| PkiError::Rcgen { what, source }
}

fn datetime(ms: u64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f; // positive INTEGER
    SerialNumber::from_slice(&bytes)
}

/// A certificate and its private key.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert_der: CertificateDer<'static>,
    pub cert_pem: String,
    pub key_pem: String,
}

impl Issued {
    pub fn key_der(&self) -> Result<PrivateKeyDer<'static>, PkiError> {
        key_der_from_pem(&self.key_pem)
    }
}

/// Parses a PKCS#8 private key from PEM.
pub fn key_der_from_pem(pem: &str) -> Result<PrivateKeyDer<'static>, PkiError> {
    let key = KeyPair::from_pem(pem).map_err(rcgen_error("parsing private key"))?;
    Ok(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        key.serialize_der(),
    )))
}

/// Parses every certificate in a PEM bundle.
pub fn certs_from_pem(pem: &str) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    use rustls_pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| PkiError::Pem(format!("parsing certificates: {error}")))
}

/// The CA.
pub struct CertificateAuthority {
    cert_der: CertificateDer<'static>,
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("fingerprint", &self.fingerprint())
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// Makes a new CA valid for 20 years from `now_ms`; returns it and its key in PEM.
    pub fn generate(name: &str, now_ms: u64) -> Result<(CertificateAuthority, String), PkiError> {
        let key = KeyPair::generate().map_err(rcgen_error("generating CA key"))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        dn.push(DnType::OrganizationName, "Bagui");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = datetime(now_ms.saturating_sub(3_600_000));
        params.not_after = datetime(now_ms + 20 * 365 * 86_400_000);
        params.serial_number = Some(random_serial());
        let cert = params
            .self_signed(&key)
            .map_err(rcgen_error("signing CA certificate"))?;
        let key_pem = key.serialize_pem();
        let ca = CertificateAuthority {
            cert_der: cert.der().clone(),
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        };
        Ok((ca, key_pem))
    }

    /// Loads a CA from its certificate and key (PEM).
    pub fn load(cert_pem: &str, key_pem: &str) -> Result<CertificateAuthority, PkiError> {
        let key = KeyPair::from_pem(key_pem).map_err(rcgen_error("parsing CA key"))?;
        let cert_der = certs_from_pem(cert_pem)?
            .into_iter()
            .next()
            .ok_or_else(|| PkiError::Pem("no certificate in CA file".into()))?;
        let issuer = Issuer::from_ca_cert_der(&cert_der, key)
            .map_err(rcgen_error("loading CA certificate"))?;
        Ok(CertificateAuthority {
            cert_der,
            cert_pem: cert_pem.to_owned(),
            issuer,
        })
    }

    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// `sm3:<hex>` of the CA certificate: what agents pin at join (`--ca-hash`).
    pub fn fingerprint(&self) -> String {
        digest::sm3_tagged(&self.cert_der)
    }

    /// Issues the control plane's server certificate for `names` (DNS names or IP addresses).
    pub fn issue_server(
        &self,
        names: &[String],
        now_ms: u64,
        lifetime: Duration,
    ) -> Result<Issued, PkiError> {
        let key = KeyPair::generate().map_err(rcgen_error("generating server key"))?;
        let mut params = CertificateParams::new(names.to_vec())
            .map_err(rcgen_error("server certificate names"))?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "bagui control plane");
        params.distinguished_name = dn;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.not_before = datetime(now_ms.saturating_sub(3_600_000));
        params.not_after = datetime(now_ms + lifetime.as_millis() as u64);
        params.serial_number = Some(random_serial());
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(rcgen_error("signing server certificate"))?;
        Ok(Issued {
            cert_der: cert.der().clone(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Issues an agent's client certificate from its PKCS#10 request. The request's own names
    /// are ignored: the certificate names exactly the agent id the control plane assigned.
    pub fn issue_client(
        &self,
        csr_der: &[u8],
        agent_id: &str,
        not_before_ms: u64,
        not_after_ms: u64,
    ) -> Result<CertificateDer<'static>, PkiError> {
        let csr =
            CertificateSigningRequestParams::from_der(&CertificateSigningRequestDer::from(csr_der))
                .map_err(|error| PkiError::BadRequest(error.to_string()))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, agent_id);
        dn.push(DnType::OrganizationName, "Bagui agents");
        params.distinguished_name = dn;
        params.subject_alt_names = vec![SanType::URI(
            format!("urn:bagui:agent:{agent_id}")
                .try_into()
                .map_err(rcgen_error("agent URI"))?,
        )];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.not_before = datetime(not_before_ms);
        params.not_after = datetime(not_after_ms);
        params.serial_number = Some(random_serial());
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(&csr.public_key, &self.issuer)
            .map_err(rcgen_error("signing client certificate"))?;
        Ok(cert.der().clone())
    }
}

/// Passphrase-protected private keys (`DATA_DIR/ca.key` after `init --protect-ca-key`): the
/// format and code are shared with the agent's identity keys, in [`bagui_protocol::keyfile`].
pub use bagui_protocol::keyfile::SealedKey;
/// The format tag of a passphrase-protected private key file.
pub const SEALED_KEY_FORMAT: &str = bagui_protocol::keyfile::FORMAT;
/// PBKDF2 iterations for new sealed keys.
pub const SEALED_KEY_ITERATIONS: u32 = bagui_protocol::keyfile::DEFAULT_ITERATIONS;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_ca_keys_open_only_with_their_passphrase() {
        let (ca, key_pem) = CertificateAuthority::generate("test CA", now()).unwrap();
        let sealed =
            SealedKey::seal(key_pem.as_bytes(), "正确 passphrase".as_bytes(), 100_000).unwrap();
        assert!(SealedKey::is_sealed(&sealed));
        assert!(sealed.contains(SEALED_KEY_FORMAT));
        assert!(!SealedKey::is_sealed(&key_pem));
        assert!(!sealed.contains("PRIVATE KEY"), "{sealed}");
        let opened = SealedKey::open(&sealed, "正确 passphrase".as_bytes()).unwrap();
        assert_eq!(opened, key_pem.as_bytes());
        CertificateAuthority::load(ca.cert_pem(), &String::from_utf8(opened).unwrap()).unwrap();
        assert_eq!(
            SealedKey::open(&sealed, b"wrong"),
            Err(bagui_protocol::keyfile::KeyFileError::WrongPassphrase)
        );
    }

    fn now() -> u64 {
        1_795_698_571_000
    }

    #[test]
    fn ca_round_trips_through_pem_and_keeps_its_fingerprint() {
        let (ca, key_pem) = CertificateAuthority::generate("test CA", now()).unwrap();
        let loaded = CertificateAuthority::load(ca.cert_pem(), &key_pem).unwrap();
        assert_eq!(ca.fingerprint(), loaded.fingerprint());
        assert!(ca.fingerprint().starts_with("sm3:"));
        assert!(CertificateAuthority::load("garbage", &key_pem).is_err());
        assert!(CertificateAuthority::load(ca.cert_pem(), "garbage").is_err());
    }

    #[test]
    fn client_certificates_come_only_from_valid_requests() {
        let (ca, _) = CertificateAuthority::generate("test CA", now()).unwrap();
        let key = KeyPair::generate().unwrap();
        let csr = CertificateParams::default()
            .serialize_request(&key)
            .unwrap();
        let cert = ca
            .issue_client(csr.der(), "ag-0123", now(), now() + 86_400_000)
            .unwrap();
        assert!(!cert.is_empty());

        let mut tampered = csr.der().to_vec();
        let last = tampered.len() - 1;
        tampered[last] ^= 0xff;
        assert!(matches!(
            ca.issue_client(&tampered, "ag-0123", now(), now() + 1),
            Err(PkiError::BadRequest(_))
        ));
        assert!(matches!(
            ca.issue_client(b"not a csr", "ag-0123", now(), now() + 1),
            Err(PkiError::BadRequest(_))
        ));
    }
}
