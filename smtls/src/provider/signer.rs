//! SM2 private keys for CertificateVerify (sm2sig_sm3 under [`TLS13_SIGNER_ID`]), and the
//! provider's [`KeyProvider`], which loads them.

use std::sync::Arc;

use rustls::crypto::KeyProvider;
use rustls::pki_types::{PrivateKeyDer, SubjectPublicKeyInfoDer};
use rustls::sign::{Signer, SigningKey};
use rustls::{Error, SignatureAlgorithm, SignatureScheme};
use sm2::SecretKey;
use sm2::pkcs8::{DecodePrivateKey, EncodePublicKey};

use super::verify::SM2SIG_SM3_SCHEME;
use crate::sign;
use crate::suite::TLS13_SIGNER_ID;

/// An SM2 private key that signs TLS 1.3 CertificateVerify messages with sm2sig_sm3.
#[derive(Debug)]
pub struct Sm2SigningKey {
    secret: Arc<SecretKey>,
    spki: Vec<u8>,
}

impl Sm2SigningKey {
    /// Wraps an SM2 secret key.
    pub fn new(secret: SecretKey) -> Result<Sm2SigningKey, Error> {
        let spki = secret
            .public_key()
            .to_public_key_der()
            .map_err(|error| Error::General(format!("cannot encode SM2 public key: {error}")))?;
        Ok(Sm2SigningKey {
            secret: Arc::new(secret),
            spki: spki.into_vec(),
        })
    }

    /// Loads an SM2 key from PKCS#8 DER (id-ecPublicKey with the sm2 named curve, as OpenSSL 3
    /// writes it) or from SEC1 `ECPrivateKey` DER naming the sm2 curve.
    pub fn from_der(key: &PrivateKeyDer<'_>) -> Result<Sm2SigningKey, Error> {
        let secret = match key {
            PrivateKeyDer::Pkcs8(der) => SecretKey::from_pkcs8_der(der.secret_pkcs8_der())
                .map_err(|error| {
                    Error::General(format!("not an SM2 PKCS#8 private key: {error}"))
                })?,
            PrivateKeyDer::Sec1(der) => SecretKey::from_sec1_der(der.secret_sec1_der())
                .map_err(|error| Error::General(format!("not an SM2 SEC1 private key: {error}")))?,
            _ => {
                return Err(Error::General(
                    "SM2 keys must be PKCS#8 or SEC1, not PKCS#1 (RSA)".into(),
                ));
            }
        };
        Sm2SigningKey::new(secret)
    }
}

impl SigningKey for Sm2SigningKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        offered.contains(&SM2SIG_SM3_SCHEME).then(|| {
            Box::new(Sm2Signer {
                secret: Arc::clone(&self.secret),
            }) as Box<dyn Signer>
        })
    }

    fn public_key(&self) -> Option<SubjectPublicKeyInfoDer<'_>> {
        Some(SubjectPublicKeyInfoDer::from(self.spki.as_slice()))
    }

    /// TLS has no SignatureAlgorithm (a TLS 1.2 field) for SM2; rustls consults it only to
    /// match TLS 1.2 suites, and this provider has none. SM2 is an elliptic-curve signature,
    /// so ECDSA is the nearest truthful answer.
    fn algorithm(&self) -> SignatureAlgorithm {
        SignatureAlgorithm::ECDSA
    }
}

#[derive(Debug)]
struct Sm2Signer {
    secret: Arc<SecretKey>,
}

impl Signer for Sm2Signer {
    /// Signs with signer ID [`TLS13_SIGNER_ID`] (RFC 8998 §3.2.1); DER `SEQUENCE { r, s }`.
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, Error> {
        let signature = sign::sign(&self.secret, TLS13_SIGNER_ID, message)
            .map_err(|error| Error::General(format!("SM2 CertificateVerify: {error}")))?;
        Ok(signature.to_der().as_bytes().to_vec())
    }

    fn scheme(&self) -> SignatureScheme {
        SM2SIG_SM3_SCHEME
    }
}

/// Loads SM2 private keys (see [`Sm2SigningKey::from_der`]).
#[derive(Debug)]
pub struct Sm2KeyProvider;

pub(crate) static SM2_KEY_PROVIDER: Sm2KeyProvider = Sm2KeyProvider;

impl KeyProvider for Sm2KeyProvider {
    fn load_private_key(
        &self,
        key_der: PrivateKeyDer<'static>,
    ) -> Result<Arc<dyn SigningKey>, Error> {
        Ok(Arc::new(Sm2SigningKey::from_der(&key_der)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::verify::{SM2_SM3_CERT, SM2_SM3_TLS13};
    use rustls::pki_types::{PrivatePkcs8KeyDer, SignatureVerificationAlgorithm};
    use sm2::pkcs8::EncodePrivateKey;

    fn secret() -> SecretKey {
        SecretKey::from_slice(&[0x5a; 32]).unwrap()
    }

    fn pkcs8(secret: &SecretKey) -> PrivateKeyDer<'static> {
        let der = secret.to_pkcs8_der().unwrap();
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(der.as_bytes().to_vec()))
    }

    #[test]
    fn loads_pkcs8_and_signs_certificate_verify_under_the_tls13_id() {
        let key = SM2_KEY_PROVIDER.load_private_key(pkcs8(&secret())).unwrap();
        assert!(
            key.choose_scheme(&[SignatureScheme::ECDSA_NISTP256_SHA256])
                .is_none()
        );
        let signer = key
            .choose_scheme(&[SignatureScheme::ED25519, SM2SIG_SM3_SCHEME])
            .unwrap();
        assert_eq!(signer.scheme(), SM2SIG_SM3_SCHEME);
        let signature = signer.sign(b"transcript").unwrap();
        let public = secret().public_key().to_sec1_bytes();
        SM2_SM3_TLS13
            .verify_signature(&public, b"transcript", &signature)
            .unwrap();
        assert!(
            SM2_SM3_CERT
                .verify_signature(&public, b"transcript", &signature)
                .is_err()
        );
    }

    #[test]
    fn public_key_is_the_spki() {
        let key = Sm2SigningKey::new(secret()).unwrap();
        let expected = secret().public_key().to_public_key_der().unwrap();
        assert_eq!(key.public_key().unwrap().as_ref(), expected.as_bytes());
    }

    #[test]
    fn rejects_non_sm2_keys() {
        let p256 = p256_pkcs8();
        assert!(SM2_KEY_PROVIDER.load_private_key(p256).is_err());
        let garbage = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(vec![0x30, 0x03, 0x02, 0x01]));
        assert!(SM2_KEY_PROVIDER.load_private_key(garbage).is_err());
    }

    /// An SM2 PKCS#8 key with its curve OID swapped for P-256's (same length): a well-formed
    /// EC key on a curve this provider must refuse.
    fn p256_pkcs8() -> PrivateKeyDer<'static> {
        let mut der = secret().to_pkcs8_der().unwrap().as_bytes().to_vec();
        let sm2_curve = [0x06, 0x08, 0x2a, 0x81, 0x1c, 0xcf, 0x55, 0x01, 0x82, 0x2d];
        let p256_curve = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
        let at = der
            .windows(sm2_curve.len())
            .position(|window| window == sm2_curve)
            .unwrap();
        der[at..at + 10].copy_from_slice(&p256_curve);
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(der))
    }
}
