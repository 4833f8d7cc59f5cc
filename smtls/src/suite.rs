//! Code points and identifiers of the RFC 8998 profile, as they appear on the wire.

/// Cipher suite TLS_SM4_GCM_SM3 (RFC 8998 §2.1).
pub const TLS_SM4_GCM_SM3: u16 = 0x00c6;

/// Named group curveSM2 for key exchange (RFC 8998 §2.2).
pub const CURVE_SM2: u16 = 41;

/// Signature scheme sm2sig_sm3 (RFC 8998 §2.3).
pub const SM2SIG_SM3: u16 = 0x0708;

/// SM2 signer ID for certificate signatures: the GB/T 35276 default (RFC 8998 §3.2.1).
///
/// OpenSSL 3.0 does not apply it by default to X.509: it signs and verifies SM2 certificate
/// signatures with an empty ID unless told otherwise. `openssl verify` needs
/// `-vfyopt distid:1234567812345678` to check certificates signed under this ID, and
/// `openssl x509 -req` / `openssl req -x509` need `-sigopt distid:1234567812345678` to sign
/// certificates this profile accepts (checked with OpenSSL 3.0.19: its default-signed
/// certificate verifies under ID "" and not under this one).
pub const CERT_SIGNER_ID: &str = "1234567812345678";

/// SM2 signer ID for the TLS 1.3 CertificateVerify signature (RFC 8998 §3.2.1).
pub const TLS13_SIGNER_ID: &str = "TLSv1.3+GM+Cipher+Suite";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_points_match_rfc8998() {
        assert_eq!(TLS_SM4_GCM_SM3.to_be_bytes(), [0x00, 0xc6]);
        assert_eq!(CURVE_SM2, 0x0029);
        assert_eq!(SM2SIG_SM3.to_be_bytes(), [0x07, 0x08]);
    }

    #[test]
    fn signer_ids_match_rfc8998() {
        assert_eq!(CERT_SIGNER_ID.as_bytes(), b"1234567812345678");
        assert_eq!(TLS13_SIGNER_ID.as_bytes(), b"TLSv1.3+GM+Cipher+Suite");
        assert_eq!(TLS13_SIGNER_ID.len(), 23);
    }
}
