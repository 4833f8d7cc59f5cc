//! Key material the agent makes for itself: TLS keys with their certificate requests, and the
//! SM2 identity key with which it proves who it is on a re-join or a late renewal.
//!
//! Under the `shangmi` profile the TLS key is SM2 too. rcgen cannot make SM2 requests, so
//! instead of a PKCS#10 request the agent sends the public key and the key's signature over
//! the connection's exporter value ([`CertificateRequest::sm2_key_request`]): possession is
//! proved as a CSR's self-signature proves it, and the proof is bound to that connection.

use anyhow::{Context, Result};
use bagui_protocol::proof::{self, ProofPurpose};
use bagui_protocol::{CryptoProfile, Sm2KeyRequest};
use serde_bytes::ByteBuf;
use sm2::dsa::signature::Signer;

/// A fresh TLS key and what asks for its certificate: a PKCS#10 request for an ECDSA P-256
/// key (`standard`), or an SM2 key that signs its own request per connection (`shangmi`).
pub struct CertificateRequest {
    pub key_pem: String,
    /// Empty under `shangmi`.
    pub csr_der: Vec<u8>,
    sm2_key: Option<sm2::SecretKey>,
}

impl CertificateRequest {
    /// Under `shangmi`, the SM2 public key with its signature over `exporter` (the
    /// connection the request travels on); `None` under `standard`.
    pub fn sm2_key_request(&self, exporter: &[u8]) -> Result<Option<Sm2KeyRequest>> {
        let Some(key) = &self.sm2_key else {
            return Ok(None);
        };
        let public_key = sm2_public_key(key);
        let signing_key = sm2::dsa::SigningKey::new(proof::SM2_DISTID, key)
            .map_err(|error| anyhow::anyhow!("loading the SM2 TLS key: {error}"))?;
        let signature: sm2::dsa::Signature =
            signing_key.sign(&proof::tls_key_transcript(&public_key, exporter));
        Ok(Some(Sm2KeyRequest {
            public_key: ByteBuf::from(public_key),
            signature: ByteBuf::from(signature.to_bytes().to_vec()),
        }))
    }
}

/// A fresh TLS key of `profile`, with what asks for its certificate.
pub fn certificate_request_for(
    profile: CryptoProfile,
    common_name: &str,
) -> Result<CertificateRequest> {
    match profile {
        CryptoProfile::Standard => certificate_request(common_name),
        CryptoProfile::Shangmi => {
            use sm2::pkcs8::EncodePrivateKey;
            let key = generate_sm2_key().context("generating the SM2 TLS key")?;
            let key_pem = key
                .to_pkcs8_pem(sm2::pkcs8::LineEnding::LF)
                .map_err(|error| anyhow::anyhow!("encoding the SM2 TLS key: {error}"))?
                .to_string();
            Ok(CertificateRequest {
                key_pem,
                csr_der: Vec::new(),
                sm2_key: Some(key),
            })
        }
    }
}

impl std::fmt::Debug for CertificateRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateRequest").finish_non_exhaustive()
    }
}

/// Generates a TLS key and a certificate request naming `common_name`.
pub fn certificate_request(common_name: &str) -> Result<CertificateRequest> {
    let key = rcgen::KeyPair::generate().context("generating the TLS key")?;
    let mut params = rcgen::CertificateParams::default();
    let mut name = rcgen::DistinguishedName::new();
    name.push(rcgen::DnType::CommonName, common_name);
    params.distinguished_name = name;
    let csr = params
        .serialize_request(&key)
        .context("making the certificate request")?;
    Ok(CertificateRequest {
        key_pem: key.serialize_pem(),
        csr_der: csr.der().to_vec(),
        sm2_key: None,
    })
}

/// A new SM2 identity key from the operating system's random source (an error, never a
/// weaker fallback, if that source fails).
pub fn generate_sm2_key() -> Result<sm2::SecretKey> {
    <sm2::SecretKey as sm2::elliptic_curve::Generate>::try_generate()
        .map_err(|error| anyhow::anyhow!("generating the SM2 key: {error}"))
}

/// SEC1 uncompressed public key of an SM2 secret key.
pub fn sm2_public_key(key: &sm2::SecretKey) -> Vec<u8> {
    key.public_key().to_sec1_bytes().to_vec()
}

/// Signs a proof of possession bound to one connection's exporter value.
pub fn sign_proof(
    key: &sm2::SecretKey,
    purpose: ProofPurpose,
    agent_id: &str,
    exporter: &[u8],
) -> Result<Vec<u8>> {
    let signing_key = sm2::dsa::SigningKey::new(proof::SM2_DISTID, key)
        .map_err(|error| anyhow::anyhow!("loading the SM2 key: {error}"))?;
    let signature: sm2::dsa::Signature =
        signing_key.sign(&proof::transcript(purpose, agent_id, exporter));
    Ok(signature.to_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sm2::dsa::signature::Verifier;

    #[test]
    fn proofs_verify_only_for_their_transcript() {
        let key = generate_sm2_key().unwrap();
        let signature = sign_proof(&key, ProofPurpose::Rejoin, "ag-1", &[7; 32]).unwrap();
        let verifying =
            sm2::dsa::VerifyingKey::from_sec1_bytes(proof::SM2_DISTID, &sm2_public_key(&key))
                .unwrap();
        let signature = sm2::dsa::Signature::from_slice(&signature).unwrap();
        let message = proof::transcript(ProofPurpose::Rejoin, "ag-1", &[7; 32]);
        assert!(verifying.verify(&message, &signature).is_ok());
        let other_connection = proof::transcript(ProofPurpose::Rejoin, "ag-1", &[8; 32]);
        assert!(verifying.verify(&other_connection, &signature).is_err());
    }

    #[test]
    fn shangmi_requests_sign_their_key_for_one_connection() {
        let request = certificate_request_for(CryptoProfile::Shangmi, "ag-1").unwrap();
        assert!(request.csr_der.is_empty());
        assert!(request.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        let sent = request.sm2_key_request(&[7; 32]).unwrap().unwrap();
        let verifying =
            sm2::dsa::VerifyingKey::from_sec1_bytes(proof::SM2_DISTID, &sent.public_key).unwrap();
        let signature = sm2::dsa::Signature::from_slice(&sent.signature).unwrap();
        let message = proof::tls_key_transcript(&sent.public_key, &[7; 32]);
        assert!(verifying.verify(&message, &signature).is_ok());
        let other = proof::tls_key_transcript(&sent.public_key, &[8; 32]);
        assert!(verifying.verify(&other, &signature).is_err());
        // The PEM key is what rustls and the shangmi provider load.
        use rustls_pki_types::pem::PemObject;
        let der =
            rustls_pki_types::PrivateKeyDer::from_pem_slice(request.key_pem.as_bytes()).unwrap();
        bagui_smtls::provider::Sm2SigningKey::from_der(&der).unwrap();
        let standard = certificate_request_for(CryptoProfile::Standard, "x").unwrap();
        assert!(standard.sm2_key_request(&[7; 32]).unwrap().is_none());
    }

    #[test]
    fn certificate_requests_parse() {
        let request = certificate_request("xinzhu-01").unwrap();
        assert!(request.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        assert!(request.csr_der.len() > 100);
    }
}
