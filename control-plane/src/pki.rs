//! The deployment's certificate authority: made at `init`, issues the control plane's server
//! certificate and every agent's client certificate.
//!
//! Under the `standard` crypto profile keys are ECDSA P-256 (rcgen over ring, what every TLS
//! stack verifies fast) and agents send PKCS#10 requests. Under `shangmi` every key is SM2 and
//! every certificate SM2-with-SM3 (`bagui_smtls::cert`), and agents send their SM2 public key
//! with a signature binding it to the join connection ([`verify_sm2_key_request`]) instead of
//! a request rcgen could not make. Agents pin the CA by the SM3 digest of its certificate
//! either way; the profile of a loaded CA is read off its certificate's key.

use std::time::Duration;

use bagui_protocol::proof;
use bagui_protocol::{CryptoProfile, Sm2KeyRequest, digest};
use bagui_smtls::cert as smcert;
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
    #[error("{what}: {source}")]
    Sm2 {
        what: &'static str,
        #[source]
        source: smcert::CertError,
    },
    #[error("{0}")]
    WrongProfile(String),
}

fn sm2_error(what: &'static str) -> impl FnOnce(smcert::CertError) -> PkiError {
    move |source| PkiError::Sm2 { what, source }
}

fn system_time(ms: u64) -> std::time::SystemTime {
    std::time::UNIX_EPOCH + Duration::from_millis(ms)
}

/// The key an agent's client certificate certifies, as the agent proved it holds it.
#[derive(Debug, Clone, Copy)]
pub enum ClientKey<'a> {
    /// `standard`: a PKCS#10 request, whose self-signature proves possession.
    Csr(&'a [u8]),
    /// `shangmi`: an SM2 public key already checked by [`verify_sm2_key_request`].
    Sm2(&'a sm2::PublicKey),
}

/// Checks a `shangmi` agent's TLS key request: a valid SEC1 SM2 point, and the key's own
/// signature over [`proof::tls_key_transcript`] with this connection's exporter value. This
/// is what a CSR's self-signature is for `standard` agents, and additionally binds the key to
/// the connection, so a request replayed on another connection is refused.
pub fn verify_sm2_key_request(
    request: &Sm2KeyRequest,
    exporter: &[u8],
) -> Result<sm2::PublicKey, PkiError> {
    use sm2::dsa::signature::Verifier;
    let public = sm2::PublicKey::from_sec1_bytes(&request.public_key).map_err(|_| {
        PkiError::BadRequest(format!(
            "the SM2 TLS public key is not a valid SEC1 point ({} bytes)",
            request.public_key.len()
        ))
    })?;
    let key = sm2::dsa::VerifyingKey::new(proof::SM2_DISTID, public)
        .map_err(|error| PkiError::BadRequest(format!("the SM2 TLS public key: {error}")))?;
    let signature = sm2::dsa::Signature::from_slice(&request.signature).map_err(|_| {
        PkiError::BadRequest(format!(
            "the SM2 TLS key's signature is malformed ({} bytes, expected 64)",
            request.signature.len()
        ))
    })?;
    key.verify(
        &proof::tls_key_transcript(&request.public_key, exporter),
        &signature,
    )
    .map_err(|_| {
        PkiError::BadRequest(
            "the SM2 TLS key's signature does not verify: possession of the key is not proved"
                .into(),
        )
    })?;
    Ok(public)
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

/// Parses a PKCS#8 private key from PEM: a key rcgen knows (`standard`), or an SM2 key
/// (`shangmi`).
pub fn key_der_from_pem(pem: &str) -> Result<PrivateKeyDer<'static>, PkiError> {
    let key = match KeyPair::from_pem(pem) {
        Ok(key) => key,
        Err(error) => {
            return sm2_key_der_from_pem(pem).ok_or(PkiError::Rcgen {
                what: "parsing private key",
                source: error,
            });
        }
    };
    Ok(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        key.serialize_der(),
    )))
}

fn sm2_key_der_from_pem(pem: &str) -> Option<PrivateKeyDer<'static>> {
    use rustls_pki_types::pem::PemObject;
    let key = PrivatePkcs8KeyDer::from_pem_slice(pem.as_bytes()).ok()?;
    let key = PrivateKeyDer::Pkcs8(key);
    bagui_smtls::provider::Sm2SigningKey::from_der(&key).ok()?;
    Some(key)
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
    signer: Signer,
}

enum Signer {
    Standard(Box<Issuer<'static, KeyPair>>),
    Shangmi(Box<smcert::CertificateAuthority>),
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("profile", &self.profile())
            .field("fingerprint", &self.fingerprint())
            .finish_non_exhaustive()
    }
}

/// Lifetime of a deployment CA.
const CA_LIFETIME_MS: u64 = 20 * 365 * 86_400_000;

impl CertificateAuthority {
    /// Makes a new CA of `profile` valid for 20 years from `now_ms`; returns it and its key
    /// in PEM (PKCS#8).
    pub fn generate_for(
        profile: CryptoProfile,
        name: &str,
        now_ms: u64,
    ) -> Result<(CertificateAuthority, String), PkiError> {
        match profile {
            CryptoProfile::Standard => CertificateAuthority::generate(name, now_ms),
            CryptoProfile::Shangmi => {
                let ca =
                    smcert::CertificateAuthority::new(name, Duration::from_millis(CA_LIFETIME_MS))
                        .map_err(sm2_error("creating the SM2 CA"))?;
                let key = ca
                    .key_pkcs8_der()
                    .map_err(sm2_error("encoding the CA key"))?;
                let key_pem = bagui_agent::state::pem_encode("PRIVATE KEY", key.secret_pkcs8_der());
                let cert_pem = ca.cert_pem().map_err(sm2_error("encoding the CA"))?;
                Ok((
                    CertificateAuthority {
                        cert_der: ca.cert_der(),
                        cert_pem,
                        signer: Signer::Shangmi(Box::new(ca)),
                    },
                    key_pem,
                ))
            }
        }
    }

    /// The crypto profile this CA issues for.
    pub fn profile(&self) -> CryptoProfile {
        match self.signer {
            Signer::Standard(_) => CryptoProfile::Standard,
            Signer::Shangmi(_) => CryptoProfile::Shangmi,
        }
    }

    /// Makes a new `standard` CA valid for 20 years from `now_ms`; returns it and its key in PEM.
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
        params.not_after = datetime(now_ms + CA_LIFETIME_MS);
        params.serial_number = Some(random_serial());
        let cert = params
            .self_signed(&key)
            .map_err(rcgen_error("signing CA certificate"))?;
        let key_pem = key.serialize_pem();
        let ca = CertificateAuthority {
            cert_der: cert.der().clone(),
            cert_pem: cert.pem(),
            signer: Signer::Standard(Box::new(Issuer::new(params, key))),
        };
        Ok((ca, key_pem))
    }

    /// Loads a CA from its certificate and key (PEM). An SM2 certificate is a `shangmi` CA.
    pub fn load(cert_pem: &str, key_pem: &str) -> Result<CertificateAuthority, PkiError> {
        let cert_der = certs_from_pem(cert_pem)?
            .into_iter()
            .next()
            .ok_or_else(|| PkiError::Pem("no certificate in CA file".into()))?;
        if smcert::is_sm2_certificate(&cert_der) {
            use rustls_pki_types::pem::PemObject;
            let key = PrivatePkcs8KeyDer::from_pem_slice(key_pem.as_bytes())
                .map_err(|error| PkiError::Pem(format!("parsing the SM2 CA key: {error}")))?;
            let ca = smcert::CertificateAuthority::from_der(&cert_der, &key)
                .map_err(sm2_error("loading the SM2 CA"))?;
            return Ok(CertificateAuthority {
                cert_der,
                cert_pem: cert_pem.to_owned(),
                signer: Signer::Shangmi(Box::new(ca)),
            });
        }
        let key = KeyPair::from_pem(key_pem).map_err(rcgen_error("parsing CA key"))?;
        let issuer = Issuer::from_ca_cert_der(&cert_der, key)
            .map_err(rcgen_error("loading CA certificate"))?;
        Ok(CertificateAuthority {
            cert_der,
            cert_pem: cert_pem.to_owned(),
            signer: Signer::Standard(Box::new(issuer)),
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
        let issuer = match &self.signer {
            Signer::Standard(issuer) => issuer,
            Signer::Shangmi(ca) => {
                let ips: Vec<std::net::IpAddr> =
                    names.iter().filter_map(|name| name.parse().ok()).collect();
                let dns: Vec<&str> = names
                    .iter()
                    .filter(|name| name.parse::<std::net::IpAddr>().is_err())
                    .map(String::as_str)
                    .collect();
                let not_before = system_time(now_ms.saturating_sub(3_600_000));
                let not_after = system_time(now_ms + lifetime.as_millis() as u64);
                let issued = ca
                    .issue_server_between(
                        "bagui control plane",
                        &dns,
                        &ips,
                        (not_before, not_after),
                    )
                    .map_err(sm2_error("issuing the SM2 server certificate"))?;
                return Ok(Issued {
                    cert_pem: issued.cert_pem().map_err(sm2_error("encoding"))?,
                    key_pem: issued.key_pem().map_err(sm2_error("encoding"))?,
                    cert_der: issued.cert,
                });
            }
        };
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
            .signed_by(&key, issuer.as_ref())
            .map_err(rcgen_error("signing server certificate"))?;
        Ok(Issued {
            cert_der: cert.der().clone(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Issues an agent's client certificate for `key`, which must be of this CA's profile
    /// (a PKCS#10 request under `standard`, an SM2 key under `shangmi`).
    pub fn issue_client_key(
        &self,
        key: ClientKey<'_>,
        agent_id: &str,
        not_before_ms: u64,
        not_after_ms: u64,
    ) -> Result<CertificateDer<'static>, PkiError> {
        match (&self.signer, key) {
            (Signer::Standard(_), ClientKey::Csr(csr)) => {
                self.issue_client(csr, agent_id, not_before_ms, not_after_ms)
            }
            (Signer::Shangmi(ca), ClientKey::Sm2(public)) => ca
                .issue_client_for_between(
                    agent_id,
                    public,
                    (system_time(not_before_ms), system_time(not_after_ms)),
                )
                .map_err(sm2_error("issuing the SM2 client certificate")),
            (Signer::Standard(_), ClientKey::Sm2(_)) => Err(PkiError::WrongProfile(
                "this control plane uses the standard crypto profile; the agent sent an SM2 \
                 key (it was set up for shangmi)"
                    .into(),
            )),
            (Signer::Shangmi(_), ClientKey::Csr(_)) => Err(PkiError::WrongProfile(
                "this control plane uses the shangmi crypto profile; the agent sent a PKCS#10 \
                 request instead of an SM2 key (it was set up for standard)"
                    .into(),
            )),
        }
    }

    /// Issues an agent's client certificate from its PKCS#10 request (`standard`). The
    /// request's own names are ignored: the certificate names exactly the agent id the
    /// control plane assigned.
    pub fn issue_client(
        &self,
        csr_der: &[u8],
        agent_id: &str,
        not_before_ms: u64,
        not_after_ms: u64,
    ) -> Result<CertificateDer<'static>, PkiError> {
        let Signer::Standard(issuer) = &self.signer else {
            return self.issue_client_key(ClientKey::Csr(csr_der), agent_id, 0, 0);
        };
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
            .signed_by(&csr.public_key, issuer.as_ref())
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

    #[test]
    fn shangmi_cas_issue_sm2_certificates_only_for_proved_keys() {
        let (ca, key_pem) =
            CertificateAuthority::generate_for(CryptoProfile::Shangmi, "test CA", now()).unwrap();
        assert_eq!(ca.profile(), CryptoProfile::Shangmi);
        let loaded = CertificateAuthority::load(ca.cert_pem(), &key_pem).unwrap();
        assert_eq!(loaded.profile(), CryptoProfile::Shangmi);
        assert_eq!(loaded.fingerprint(), ca.fingerprint());
        assert!(CertificateAuthority::load(ca.cert_pem(), "garbage").is_err());

        let server = ca
            .issue_server(
                &["127.0.0.1".into(), "cp.example".into()],
                now(),
                Duration::from_secs(86_400),
            )
            .unwrap();
        assert!(smcert::is_sm2_certificate(&server.cert_der));
        key_der_from_pem(&server.key_pem).unwrap();

        let secret = smcert::generate_key().unwrap();
        let public_key = secret.public_key().to_sec1_bytes().to_vec();
        let sign = |message: &[u8]| {
            use sm2::dsa::signature::Signer;
            let key = sm2::dsa::SigningKey::new(proof::SM2_DISTID, &secret).unwrap();
            let signature: sm2::dsa::Signature = key.sign(message);
            signature.to_bytes().to_vec()
        };
        let request = Sm2KeyRequest {
            public_key: public_key.clone().into(),
            signature: sign(&proof::tls_key_transcript(&public_key, &[9; 32])).into(),
        };
        let public = verify_sm2_key_request(&request, &[9; 32]).unwrap();
        let cert = ca
            .issue_client_key(
                ClientKey::Sm2(&public),
                "ag-0123",
                now(),
                now() + 86_400_000,
            )
            .unwrap();
        assert!(smcert::is_sm2_certificate(&cert));

        // Replayed on another connection, signed by another key, malformed: refused, clearly.
        let refused = |request: &Sm2KeyRequest, exporter: &[u8]| match verify_sm2_key_request(
            request, exporter,
        ) {
            Err(PkiError::BadRequest(message)) => message,
            other => panic!("{other:?}"),
        };
        assert!(refused(&request, &[8; 32]).contains("does not verify"));
        let mut bad_point = request.clone();
        bad_point.public_key = vec![0x04; 65].into();
        assert!(refused(&bad_point, &[9; 32]).contains("not a valid SEC1 point"));
        bad_point.public_key = Vec::new().into();
        assert!(refused(&bad_point, &[9; 32]).contains("not a valid SEC1 point"));
        let mut short = request.clone();
        short.signature = vec![1; 10].into();
        assert!(refused(&short, &[9; 32]).contains("malformed"));

        // Each CA issues only for its own profile.
        let message = ca
            .issue_client_key(ClientKey::Csr(b"csr"), "ag-1", now(), now() + 1)
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("uses the shangmi crypto profile"),
            "{message}"
        );
        let (standard, _) = CertificateAuthority::generate("test CA", now()).unwrap();
        assert_eq!(standard.profile(), CryptoProfile::Standard);
        let message = standard
            .issue_client_key(ClientKey::Sm2(&public), "ag-1", now(), now() + 1)
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("uses the standard crypto profile"),
            "{message}"
        );
    }
}
