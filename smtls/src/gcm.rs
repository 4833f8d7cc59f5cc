//! SM4-GCM (AEAD_SM4_GCM, RFC 8998 §3.1): 16-byte key, 12-byte nonce, 16-byte tag.
//!
//! GCM is the generic RustCrypto implementation from `aes-gcm`, instantiated over the
//! constant-time [`crate::sm4::Sm4`] instead of AES. Its GHASH (`ghash`/`polyval`) is
//! constant time in the portable backend and uses carry-less multiply instructions where the CPU
//! has them, so the whole AEAD keeps the constant-time property of the block cipher.

use aes_gcm::AesGcm;
use cipher::consts::U12;

use crate::sm4::Sm4;

pub use aes_gcm::aead;

/// SM4-GCM with RFC 8998's parameters. Use it through [`aead::KeyInit`] and [`aead::AeadInOut`].
pub type Sm4Gcm = AesGcm<Sm4, U12>;

/// Key length in bytes.
pub const KEY_LEN: usize = 16;
/// Nonce (IV) length in bytes.
pub const NONCE_LEN: usize = 12;
/// Authentication tag length in bytes.
pub const TAG_LEN: usize = 16;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::hex;
    use aead::{AeadInOut, KeyInit};

    struct Vector {
        key: Vec<u8>,
        nonce: Vec<u8>,
        aad: Vec<u8>,
        plaintext: Vec<u8>,
        ciphertext: Vec<u8>,
        tag: Vec<u8>,
    }

    /// RFC 8998 Appendix A.1 (also reproduced with OpenSSL 3's SM4-GCM when this was written).
    fn rfc8998_a1() -> Vector {
        Vector {
            key: hex("0123456789ABCDEFFEDCBA9876543210"),
            nonce: hex("00001234567800000000ABCD"),
            aad: hex("FEEDFACEDEADBEEFFEEDFACEDEADBEEFABADDAD2"),
            plaintext: hex(
                "AAAAAAAAAAAAAAAABBBBBBBBBBBBBBBBCCCCCCCCCCCCCCCCDDDDDDDDDDDDDDDD\
                 EEEEEEEEEEEEEEEEFFFFFFFFFFFFFFFFEEEEEEEEEEEEEEEEAAAAAAAAAAAAAAAA",
            ),
            ciphertext: hex(
                "17F399F08C67D5EE19D0DC9969C4BB7D5FD46FD3756489069157B282BB200735\
                 D82710CA5C22F0CCFA7CBF93D496AC15A56834CBCF98C397B4024A2691233B8D",
            ),
            tag: hex("83DE3541E4C2B58177E065A9BF7B62EC"),
        }
    }

    fn gcm(key: &[u8]) -> Sm4Gcm {
        Sm4Gcm::new_from_slice(key).unwrap()
    }

    #[test]
    fn rfc8998_a1_encrypts_to_the_published_ciphertext_and_tag() {
        let vector = rfc8998_a1();
        let mut buffer = vector.plaintext.clone();
        let tag = gcm(&vector.key)
            .encrypt_inout_detached(
                vector.nonce.as_slice().try_into().unwrap(),
                &vector.aad,
                buffer.as_mut_slice().into(),
            )
            .unwrap();
        assert_eq!(buffer, vector.ciphertext);
        assert_eq!(tag.as_slice(), vector.tag.as_slice());
    }

    #[test]
    fn rfc8998_a1_decrypts_to_the_published_plaintext() {
        let vector = rfc8998_a1();
        let mut buffer = vector.ciphertext.clone();
        gcm(&vector.key)
            .decrypt_inout_detached(
                vector.nonce.as_slice().try_into().unwrap(),
                &vector.aad,
                buffer.as_mut_slice().into(),
                vector.tag.as_slice().try_into().unwrap(),
            )
            .unwrap();
        assert_eq!(buffer, vector.plaintext);
    }

    #[test]
    fn any_flipped_bit_fails_authentication() {
        let vector = rfc8998_a1();
        let cipher = gcm(&vector.key);
        let open = |ciphertext: &[u8], aad: &[u8], tag: &[u8]| {
            let mut buffer = ciphertext.to_vec();
            cipher.decrypt_inout_detached(
                vector.nonce.as_slice().try_into().unwrap(),
                aad,
                buffer.as_mut_slice().into(),
                tag.try_into().unwrap(),
            )
        };
        assert!(open(&vector.ciphertext, &vector.aad, &vector.tag).is_ok());

        let mut ciphertext = vector.ciphertext.clone();
        ciphertext[17] ^= 0x04;
        assert!(open(&ciphertext, &vector.aad, &vector.tag).is_err());

        let mut aad = vector.aad.clone();
        aad[0] ^= 0x80;
        assert!(open(&vector.ciphertext, &aad, &vector.tag).is_err());

        let mut tag = vector.tag.clone();
        tag[15] ^= 0x01;
        assert!(open(&vector.ciphertext, &vector.aad, &tag).is_err());
    }

    #[test]
    fn long_messages_match_gcm_over_table_sm4() {
        use rand::rngs::StdRng;
        use rand::{Rng, SeedableRng};

        // Long messages go through the bitsliced 16-block path; GCM over the table `sm4` is the
        // oracle.
        type TableSm4Gcm = AesGcm<sm4::Sm4, U12>;
        let mut rng = StdRng::seed_from_u64(8998);
        for length in [0, 1, 15, 16, 255, 256, 257, 1200, 4099] {
            let key: [u8; 16] = rng.random();
            let nonce: [u8; 12] = rng.random();
            let aad: [u8; 13] = rng.random();
            let plaintext: Vec<u8> = (0..length).map(|_| rng.random()).collect();

            let mut ours = plaintext.clone();
            let our_tag = gcm(&key)
                .encrypt_inout_detached(&nonce.into(), &aad, ours.as_mut_slice().into())
                .unwrap();
            let mut oracle = plaintext.clone();
            let oracle_tag = TableSm4Gcm::new(&key.into())
                .encrypt_inout_detached(&nonce.into(), &aad, oracle.as_mut_slice().into())
                .unwrap();
            assert_eq!(ours, oracle, "length {length}");
            assert_eq!(our_tag, oracle_tag, "length {length}");

            gcm(&key)
                .decrypt_inout_detached(&nonce.into(), &aad, ours.as_mut_slice().into(), &our_tag)
                .unwrap();
            assert_eq!(ours, plaintext);
        }
    }

    #[test]
    fn lengths_match_rfc8998() {
        assert_eq!((KEY_LEN, NONCE_LEN, TAG_LEN), (16, 12, 16));
    }
}
