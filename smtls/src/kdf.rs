//! HMAC-SM3 and HKDF-SM3: the TLS 1.3 key schedule of TLS_SM4_GCM_SM3 (RFC 8998 §3.1, RFC 8446
//! §7.1 with SM3 as the hash), and QUIC's packet-key derivation on top of it (RFC 9001 §5.1).
//!
//! Both are the generic RustCrypto `hmac`/`hkdf` constructions over the `sm3` hash; SM3 has no
//! secret-indexed table look-ups, so neither needs a special implementation.

use hmac::Mac;
use sm3::Sm3;

pub use hkdf::InvalidLength;

/// HMAC with SM3 (32-byte output, 64-byte block).
pub type HmacSm3 = hmac::Hmac<Sm3>;
/// HKDF (RFC 5869) with HMAC-SM3.
pub type HkdfSm3 = hkdf::Hkdf<Sm3>;

/// Output length of SM3, HMAC-SM3 and an HKDF-SM3 pseudorandom key.
pub const SM3_OUTPUT_LEN: usize = 32;

/// Computes HMAC-SM3 of `message` under `key` in one call.
pub fn hmac_sm3(key: &[u8], message: &[u8]) -> [u8; SM3_OUTPUT_LEN] {
    let mut mac =
        <HmacSm3 as hmac::KeyInit>::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(message);
    mac.finalize().into_bytes().into()
}

/// HKDF-Expand-Label (RFC 8446 §7.1) with SM3: derives `output.len()` bytes from `secret`.
///
/// `label` is given without the `"tls13 "` prefix, as RFC 8446 and RFC 9001 write it
/// (`b"key"`, `b"iv"`, `b"quic hp"`).
pub fn hkdf_expand_label(
    secret: &HkdfSm3,
    label: &[u8],
    context: &[u8],
    output: &mut [u8],
) -> Result<(), InvalidLength> {
    const PREFIX: &[u8] = b"tls13 ";
    let length = u16::try_from(output.len()).map_err(|_| InvalidLength)?;
    let label_len = u8::try_from(PREFIX.len() + label.len()).map_err(|_| InvalidLength)?;
    let context_len = u8::try_from(context.len()).map_err(|_| InvalidLength)?;
    secret.expand_multi_info(
        &[
            &length.to_be_bytes(),
            &[label_len],
            PREFIX,
            label,
            &[context_len],
            context,
        ],
        output,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::hex;
    use sm3::Digest;

    // Expected values below were computed independently with OpenSSL 3.0.19:
    //   echo -n abc | openssl dgst -sm3
    //   echo -n "what do ya want for nothing?" | openssl dgst -sm3 -hmac Jefe
    //   openssl kdf -keylen 42 -kdfopt digest:SM3 -kdfopt hexkey:0b…0b (22 bytes)
    //       -kdfopt hexsalt:000102030405060708090a0b0c -kdfopt hexinfo:f0f1f2f3f4f5f6f7f8f9 HKDF
    //   (the same with -keylen 32 -kdfopt mode:EXTRACT_ONLY and no info for the PRK)

    #[test]
    fn sm3_of_abc_matches_gbt_32905() {
        assert_eq!(
            Sm3::digest(b"abc").as_slice(),
            hex("66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0")
        );
    }

    #[test]
    fn hmac_sm3_matches_openssl() {
        assert_eq!(
            hmac_sm3(b"Jefe", b"what do ya want for nothing?").as_slice(),
            hex("2e87f1d16862e6d964b50a5200bf2b10b764faa9680a296a2405f24bec39f882")
        );
    }

    #[test]
    fn hkdf_sm3_with_rfc5869_case_1_inputs_matches_openssl() {
        let ikm = [0x0b; 22];
        let salt = hex("000102030405060708090a0b0c");
        let info = hex("f0f1f2f3f4f5f6f7f8f9");

        let (prk, hkdf) = HkdfSm3::extract(Some(&salt), &ikm);
        assert_eq!(
            prk.as_slice(),
            hex("e0d6f7b0bd056327b7659f1f39ad850561fbcf4fb10fb58e88eafa55cf7cd01e")
        );

        let mut okm = [0u8; 42];
        hkdf.expand(&info, &mut okm).unwrap();
        assert_eq!(
            okm.as_slice(),
            hex(
                "c69fe91b7aaee2dd5718d72dcaee0cce93f1b8e41f792da51261b6a517e68b36ed2c595572b01dfa359b"
            )
        );
    }

    #[test]
    fn hkdf_expand_label_is_hkdf_expand_over_the_rfc8446_label_structure() {
        let secret = HkdfSm3::from_prk(&[0x42; 32]).unwrap();
        let mut derived = [0u8; 16];
        hkdf_expand_label(&secret, b"quic hp", &[], &mut derived).unwrap();

        // struct { uint16 length = 16; opaque label<7..255> = "tls13 quic hp"; opaque context<0..255> = ""; }
        let info = [&[0x00, 0x10, 13][..], b"tls13 quic hp", &[0]].concat();
        let mut expected = [0u8; 16];
        secret.expand(&info, &mut expected).unwrap();
        assert_eq!(derived, expected);
    }

    #[test]
    fn hkdf_expand_label_matches_openssl_tls13_kdf() {
        // openssl kdf -keylen 16 -kdfopt mode:EXPAND_ONLY -kdfopt digest:SM3
        //   -kdfopt hexkey:42…42 (32 bytes) -kdfopt hexprefix:746c73313320
        //   -kdfopt label:"quic hp" TLS13-KDF   (and "quic iv" with -keylen 12)
        // The same command with SHA2-256 reproduces RFC 9001 A.1's client "quic key".
        let secret = HkdfSm3::from_prk(&[0x42; 32]).unwrap();
        let mut hp = [0u8; 16];
        hkdf_expand_label(&secret, b"quic hp", &[], &mut hp).unwrap();
        assert_eq!(hp.as_slice(), hex("8dabfe0cd76f165e49ea063308121f02"));
        let mut iv = [0u8; 12];
        hkdf_expand_label(&secret, b"quic iv", &[], &mut iv).unwrap();
        assert_eq!(iv.as_slice(), hex("3b8476ed92aea6118da10b2d"));
    }

    #[test]
    fn hkdf_expand_label_rejects_an_oversized_label() {
        let secret = HkdfSm3::from_prk(&[0x42; 32]).unwrap();
        assert!(hkdf_expand_label(&secret, &[b'a'; 250], &[], &mut [0u8; 16]).is_err());
    }
}
