//! Key material the agent makes for itself: TLS keys with their certificate requests, and the
//! SM2 identity key with which it proves who it is on a re-join or a late renewal.

use anyhow::{Context, Result};
use bagui_protocol::proof::{self, ProofPurpose};
use sm2::dsa::signature::Signer;

/// A fresh TLS key (ECDSA P-256) and a PKCS#10 request for it.
pub struct CertificateRequest {
    pub key_pem: String,
    pub csr_der: Vec<u8>,
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
    fn certificate_requests_parse() {
        let request = certificate_request("xinzhu-01").unwrap();
        assert!(request.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        assert!(request.csr_der.len() > 100);
    }
}
