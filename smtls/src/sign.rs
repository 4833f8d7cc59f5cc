//! SM2 signatures with SM3 and an explicit signer ID (GB/T 32918.2, RFC 8998 §3.2.1).
//!
//! An SM2 signature covers `SM3(Z_A || message)`, where `Z_A` hashes the signer ID together with
//! the curve and the public key, so the same key signs differently under different IDs. TLS 1.3
//! uses two: [`CERT_SIGNER_ID`](crate::suite::CERT_SIGNER_ID) for certificate signatures and
//! [`TLS13_SIGNER_ID`](crate::suite::TLS13_SIGNER_ID) for CertificateVerify. These helpers make the
//! ID a required argument so a caller cannot fall back to a default by omission.

use sm2::dsa::signature::{Signer, Verifier};
use sm2::dsa::{SigningKey, VerifyingKey};
use sm2::{PublicKey, SecretKey};

pub use sm2::dsa::Signature;

/// Why an SM2 signature could not be made or checked.
#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    /// The signer ID is longer than SM2 allows (its bit length must fit in 16 bits).
    #[error("SM2 signer ID is too long")]
    SignerId,
    /// Signing failed (a degenerate nonce or key; not expected with a valid key).
    #[error("SM2 signing failed")]
    Sign,
    /// The signature does not verify under this key, signer ID and message.
    #[error("SM2 signature does not verify")]
    Invalid,
}

/// Signs `message` with `secret` under `signer_id`. Signing is deterministic (nonce from the key
/// and message), so no random source is needed.
pub fn sign(
    secret: &SecretKey,
    signer_id: &str,
    message: &[u8],
) -> Result<Signature, SignatureError> {
    let key = SigningKey::new(signer_id, secret).map_err(|_| SignatureError::SignerId)?;
    key.try_sign(message).map_err(|_| SignatureError::Sign)
}

/// Checks that `signature` is `public`'s signature of `message` under `signer_id`.
pub fn verify(
    public: &PublicKey,
    signer_id: &str,
    message: &[u8],
    signature: &Signature,
) -> Result<(), SignatureError> {
    let key = VerifyingKey::new(signer_id, *public).map_err(|_| SignatureError::SignerId)?;
    key.verify(message, signature)
        .map_err(|_| SignatureError::Invalid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::suite::{CERT_SIGNER_ID, TLS13_SIGNER_ID};

    fn secret() -> SecretKey {
        SecretKey::from_slice(&[0x5a; 32]).unwrap()
    }

    #[test]
    fn round_trip_with_both_signer_ids() {
        let secret = secret();
        let public = secret.public_key();
        for id in [CERT_SIGNER_ID, TLS13_SIGNER_ID] {
            let signature = sign(&secret, id, b"certificate verify transcript").unwrap();
            verify(&public, id, b"certificate verify transcript", &signature).unwrap();
            let from_der = Signature::from_der(signature.to_der().as_bytes()).unwrap();
            verify(&public, id, b"certificate verify transcript", &from_der).unwrap();
        }
    }

    #[test]
    fn signature_under_one_id_fails_under_the_other() {
        let secret = secret();
        let public = secret.public_key();
        let message = b"tbsCertificate";

        let cert_signature = sign(&secret, CERT_SIGNER_ID, message).unwrap();
        assert!(matches!(
            verify(&public, TLS13_SIGNER_ID, message, &cert_signature),
            Err(SignatureError::Invalid)
        ));

        let tls_signature = sign(&secret, TLS13_SIGNER_ID, message).unwrap();
        assert!(matches!(
            verify(&public, CERT_SIGNER_ID, message, &tls_signature),
            Err(SignatureError::Invalid)
        ));
    }

    #[test]
    fn changed_message_or_key_fails() {
        let secret = secret();
        let signature = sign(&secret, TLS13_SIGNER_ID, b"message").unwrap();
        assert!(
            verify(
                &secret.public_key(),
                TLS13_SIGNER_ID,
                b"messagf",
                &signature
            )
            .is_err()
        );

        let other = SecretKey::from_slice(&[0x33; 32]).unwrap().public_key();
        assert!(verify(&other, TLS13_SIGNER_ID, b"message", &signature).is_err());
    }
}
