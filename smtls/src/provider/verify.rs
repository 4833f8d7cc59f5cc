//! sm2sig_sm3 signature verification for certificates (webpki) and CertificateVerify (rustls).
//!
//! An SM2 signature depends on the signer ID (it is hashed into `Z_A`), and RFC 8998 §3.2.1 uses
//! two: certificate signatures use the GB/T default [`CERT_SIGNER_ID`], CertificateVerify uses
//! [`TLS13_SIGNER_ID`]. rustls routes the two through different fields of
//! [`WebPkiSupportedAlgorithms`]: webpki verifies certificate chains with the algorithms in
//! `all` (matched by the certificate's AlgorithmIdentifiers), and rustls verifies TLS 1.3
//! CertificateVerify with the first algorithm `mapping` lists for the scheme. So `all` holds
//! only [`SM2_SM3_CERT`] and `mapping` maps sm2sig_sm3 only to [`SM2_SM3_TLS13`].

use rustls::SignatureScheme;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{AlgorithmIdentifier, InvalidSignature, SignatureVerificationAlgorithm};
use sm2::PublicKey;

use crate::sign::{self, Signature};
use crate::suite::{CERT_SIGNER_ID, SM2SIG_SM3, TLS13_SIGNER_ID};

/// The sm2sig_sm3 signature scheme as rustls names it.
pub const SM2SIG_SM3_SCHEME: SignatureScheme = SignatureScheme::Unknown(SM2SIG_SM3);

/// Contents of the AlgorithmIdentifier of an SM2 public key: id-ecPublicKey
/// (1.2.840.10045.2.1) with the named curve sm2 (1.2.156.10197.1.301).
pub const SM2_PUBLIC_KEY_ALG_ID: AlgorithmIdentifier = AlgorithmIdentifier::from_slice(&[
    0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, // id-ecPublicKey
    0x06, 0x08, 0x2a, 0x81, 0x1c, 0xcf, 0x55, 0x01, 0x82, 0x2d, // sm2 curve
]);

/// Contents of the AlgorithmIdentifier of an SM2-with-SM3 signature (1.2.156.10197.1.501,
/// parameters absent).
pub const SM2_WITH_SM3_ALG_ID: AlgorithmIdentifier =
    AlgorithmIdentifier::from_slice(&[0x06, 0x08, 0x2a, 0x81, 0x1c, 0xcf, 0x55, 0x01, 0x83, 0x75]);

/// SM2-with-SM3 signature verification under a fixed signer ID.
#[derive(Debug)]
pub struct Sm2Sm3Verification {
    signer_id: &'static str,
}

impl Sm2Sm3Verification {
    /// The signer ID this instance verifies under.
    pub fn signer_id(&self) -> &'static str {
        self.signer_id
    }
}

/// Verifies certificate signatures (signer ID [`CERT_SIGNER_ID`]).
pub static SM2_SM3_CERT: Sm2Sm3Verification = Sm2Sm3Verification {
    signer_id: CERT_SIGNER_ID,
};

/// Verifies TLS 1.3 CertificateVerify signatures (signer ID [`TLS13_SIGNER_ID`]).
pub static SM2_SM3_TLS13: Sm2Sm3Verification = Sm2Sm3Verification {
    signer_id: TLS13_SIGNER_ID,
};

impl SignatureVerificationAlgorithm for Sm2Sm3Verification {
    /// `public_key` is the SPKI's subjectPublicKey (an uncompressed or compressed SEC1 point),
    /// `signature` the DER `SEQUENCE { r, s }`.
    fn verify_signature(
        &self,
        public_key: &[u8],
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), InvalidSignature> {
        let public = PublicKey::from_sec1_bytes(public_key).map_err(|_| InvalidSignature)?;
        let signature = Signature::from_der(signature).map_err(|_| InvalidSignature)?;
        sign::verify(&public, self.signer_id, message, &signature).map_err(|_| InvalidSignature)
    }

    fn public_key_alg_id(&self) -> AlgorithmIdentifier {
        SM2_PUBLIC_KEY_ALG_ID
    }

    fn signature_alg_id(&self) -> AlgorithmIdentifier {
        SM2_WITH_SM3_ALG_ID
    }

    fn fips(&self) -> bool {
        false
    }
}

/// What the shangmi provider verifies: SM2-with-SM3 certificates, sm2sig_sm3 CertificateVerify.
pub static SUPPORTED_SIG_ALGS: WebPkiSupportedAlgorithms = WebPkiSupportedAlgorithms {
    all: &[&SM2_SM3_CERT],
    mapping: &[(SM2SIG_SM3_SCHEME, &[&SM2_SM3_TLS13])],
};

#[cfg(test)]
mod tests {
    use super::*;
    use sm2::SecretKey;
    use sm2::pkcs8::EncodePublicKey;
    use sm2::pkcs8::der::{Decode, Encode};
    use sm2::pkcs8::spki::{AssociatedAlgorithmIdentifier, SubjectPublicKeyInfoRef};

    /// The outer SEQUENCE header is stripped: pki-types holds AlgorithmIdentifier contents.
    fn contents(der: &[u8]) -> &[u8] {
        assert_eq!(der[0], 0x30);
        assert!(der[1] < 0x80);
        &der[2..]
    }

    #[test]
    fn algorithm_identifiers_match_what_the_sm2_crate_encodes() {
        let secret = SecretKey::from_slice(&[0x5a; 32]).unwrap();
        let spki_der = secret.public_key().to_public_key_der().unwrap();
        let spki = SubjectPublicKeyInfoRef::from_der(spki_der.as_bytes()).unwrap();
        let alg = spki.algorithm.to_der().unwrap();
        assert_eq!(contents(&alg), SM2_PUBLIC_KEY_ALG_ID.as_ref());

        let sig_alg = Signature::ALGORITHM_IDENTIFIER.to_der().unwrap();
        assert_eq!(contents(&sig_alg), SM2_WITH_SM3_ALG_ID.as_ref());
    }

    #[test]
    fn each_algorithm_verifies_only_under_its_own_signer_id() {
        let secret = SecretKey::from_slice(&[0x5a; 32]).unwrap();
        let public = secret.public_key().to_sec1_bytes();
        let message = b"to be signed";
        for (right, wrong) in [
            (&SM2_SM3_CERT, &SM2_SM3_TLS13),
            (&SM2_SM3_TLS13, &SM2_SM3_CERT),
        ] {
            let signature = sign::sign(&secret, right.signer_id(), message).unwrap();
            let der = signature.to_der();
            right
                .verify_signature(&public, message, der.as_bytes())
                .unwrap();
            assert!(
                wrong
                    .verify_signature(&public, message, der.as_bytes())
                    .is_err()
            );
        }
    }

    #[test]
    fn garbage_is_rejected_without_panicking() {
        let secret = SecretKey::from_slice(&[0x5a; 32]).unwrap();
        let public = secret.public_key().to_sec1_bytes();
        for signature in [&[][..], &[0x30], &[0x30, 0x00], &[0xff; 80]] {
            assert!(
                SM2_SM3_CERT
                    .verify_signature(&public, b"m", signature)
                    .is_err()
            );
        }
        let signature = sign::sign(&secret, CERT_SIGNER_ID, b"m").unwrap().to_der();
        for key in [&[][..], &[0x04], &[0x04; 65]] {
            assert!(
                SM2_SM3_CERT
                    .verify_signature(key, b"m", signature.as_bytes())
                    .is_err()
            );
        }
    }

    #[test]
    fn mapping_uses_the_tls13_id_and_all_uses_the_certificate_id() {
        assert_eq!(
            SUPPORTED_SIG_ALGS.supported_schemes(),
            vec![SM2SIG_SM3_SCHEME]
        );
        let mapped = SUPPORTED_SIG_ALGS.mapping[0].1;
        assert_eq!(mapped.len(), 1);
        assert_eq!(format!("{:?}", mapped[0]), format!("{SM2_SM3_TLS13:?}"));
        assert_eq!(SUPPORTED_SIG_ALGS.all.len(), 1);
        assert_eq!(
            format!("{:?}", SUPPORTED_SIG_ALGS.all[0]),
            format!("{SM2_SM3_CERT:?}")
        );
    }
}
