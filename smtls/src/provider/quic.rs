//! QUIC packet and header protection for TLS_SM4_GCM_SM3 (see the profile in [`super`]).

use rustls::crypto::cipher::{AeadKey, Iv};
use rustls::{Error, quic};

use super::aead::PacketKey;
use crate::gcm::KEY_LEN;
use crate::header::{self, MASK_LEN, SAMPLE_LEN};

/// SM4-GCM packet keys and SM4 header protection for QUIC.
#[derive(Debug)]
pub(crate) struct Sm4QuicAlgorithm;

pub(crate) static SM4_QUIC: Sm4QuicAlgorithm = Sm4QuicAlgorithm;

impl quic::Algorithm for Sm4QuicAlgorithm {
    fn packet_key(&self, key: AeadKey, iv: Iv) -> Box<dyn quic::PacketKey> {
        Box::new(PacketKey::new(key, iv))
    }

    fn header_protection_key(&self, key: AeadKey) -> Box<dyn quic::HeaderProtectionKey> {
        Box::new(HeaderProtectionKey::new(&key))
    }

    fn aead_key_len(&self) -> usize {
        KEY_LEN
    }
}

/// An SM4 header-protection key: mask = SM4-ECB(hp_key, sample)[..5].
pub(crate) struct HeaderProtectionKey(Result<header::HeaderProtectionKey, Error>);

impl HeaderProtectionKey {
    pub(crate) fn new(key: &AeadKey) -> HeaderProtectionKey {
        let key = <&[u8; KEY_LEN]>::try_from(key.as_ref())
            .map(header::HeaderProtectionKey::new)
            .map_err(|_| {
                Error::General(format!("SM4 header protection needs a {KEY_LEN}-byte key"))
            });
        HeaderProtectionKey(key)
    }

    fn mask(&self, sample: &[u8]) -> Result<[u8; MASK_LEN], Error> {
        let key = self.0.as_ref().map_err(Clone::clone)?;
        let sample = <&[u8; SAMPLE_LEN]>::try_from(sample).map_err(|_| {
            Error::General(format!(
                "header protection sample must be {SAMPLE_LEN} bytes"
            ))
        })?;
        Ok(key.mask(sample))
    }

    /// RFC 9001 §5.4.1: masks the low 4 (long header) or 5 (short header) bits of the first
    /// byte and as many packet-number bytes as the (unmasked) first byte says. Leaves `first`
    /// and `packet_number` untouched on error.
    fn xor_in_place(
        &self,
        sample: &[u8],
        first: &mut u8,
        packet_number: &mut [u8],
        masked: bool,
    ) -> Result<(), Error> {
        let [first_mask, pn_mask @ ..] = self.mask(sample)?;
        if packet_number.len() > pn_mask.len() {
            return Err(Error::General("packet number longer than 4 bytes".into()));
        }
        const LONG_HEADER_FORM: u8 = 0x80;
        let bits = if *first & LONG_HEADER_FORM == LONG_HEADER_FORM {
            0x0f
        } else {
            0x1f
        };
        let first_plain = if masked {
            *first ^ (first_mask & bits)
        } else {
            *first
        };
        let pn_len = usize::from(first_plain & 0x03) + 1;
        *first ^= first_mask & bits;
        for (byte, mask) in packet_number.iter_mut().zip(pn_mask).take(pn_len) {
            *byte ^= mask;
        }
        Ok(())
    }
}

impl quic::HeaderProtectionKey for HeaderProtectionKey {
    fn encrypt_in_place(
        &self,
        sample: &[u8],
        first: &mut u8,
        packet_number: &mut [u8],
    ) -> Result<(), Error> {
        self.xor_in_place(sample, first, packet_number, false)
    }

    fn decrypt_in_place(
        &self,
        sample: &[u8],
        first: &mut u8,
        packet_number: &mut [u8],
    ) -> Result<(), Error> {
        self.xor_in_place(sample, first, packet_number, true)
    }

    fn sample_len(&self) -> usize {
        SAMPLE_LEN
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gcm::Sm4Gcm;
    use crate::gcm::aead::{AeadInOut, KeyInit};
    use crate::provider::TLS13_SM4_GCM_SM3;
    use crate::test_util::hex;
    use rustls::Side;
    use rustls::quic::{Algorithm, Keys, Version};

    /// RFC 9001 Appendix A's client destination connection ID.
    const CID: [u8; 8] = [0x83, 0x94, 0xc8, 0xf0, 0x3e, 0x51, 0x57, 0x08];

    // The RFC 9001 A.1 derivation (v1 salt, the connection ID above, "client in") redone with
    // SM3 in OpenSSL 3.0.19, independently of this crate:
    //   openssl kdf -keylen 32 -kdfopt digest:SM3 -kdfopt mode:EXTRACT_ONLY
    //     -kdfopt hexkey:8394c8f03e515708 -kdfopt hexsalt:38762cf7…7f0a HKDF
    //   openssl kdf -keylen N -kdfopt mode:EXPAND_ONLY -kdfopt digest:SM3 -kdfopt hexkey:…
    //     -kdfopt hexprefix:746c73313320 -kdfopt label:"client in"|"quic key"|"quic iv"|"quic hp"
    //     TLS13-KDF
    //   echo d1b1c98dd7689fb8ec11d242b123dc9b | xxd -r -p
    //     | openssl enc -sm4-ecb -K 78c57aad9fe78414c6e9006aa597a4a8 -nopad
    const CLIENT_KEY: &str = "a25f63af5183d8d1c4dd79d1182c7a07";
    const CLIENT_IV: &str = "d038c1a854387795eda13af7";
    /// RFC 9001 A.2's sample; SM4-ECB of it under the client hp key starts 57 45 16 6b 9d.
    const SAMPLE: &str = "d1b1c98dd7689fb8ec11d242b123dc9b";

    fn client_and_server() -> (Keys, Keys) {
        let suite = TLS13_SM4_GCM_SM3.quic_suite().unwrap();
        (
            suite.keys(&CID, Side::Client, Version::V1),
            suite.keys(&CID, Side::Server, Version::V1),
        )
    }

    #[test]
    fn header_protection_mask_known_answer_through_quic_algorithm() {
        let (client, server) = client_and_server();
        let sample = hex(SAMPLE);
        assert_eq!(client.local.header.sample_len(), 16);

        // Long header, 4-byte packet number 2 (RFC 9001 A.2's first byte and number).
        let (mut first, mut pn) = (0xc3u8, [0x00, 0x00, 0x00, 0x02]);
        client
            .local
            .header
            .encrypt_in_place(&sample, &mut first, &mut pn)
            .unwrap();
        assert_eq!(first, 0xc3 ^ (0x57 & 0x0f));
        assert_eq!(pn, [0x45, 0x16, 0x6b, 0x02 ^ 0x9d]);
        server
            .remote
            .header
            .decrypt_in_place(&sample, &mut first, &mut pn)
            .unwrap();
        assert_eq!((first, pn), (0xc3, [0x00, 0x00, 0x00, 0x02]));

        // Short header, 2-byte packet number: 5 bits of the first byte, 2 bytes masked.
        let (mut first, mut pn) = (0x41u8, [0x12, 0x34, 0x56, 0x78]);
        client
            .local
            .header
            .encrypt_in_place(&sample, &mut first, &mut pn)
            .unwrap();
        assert_eq!(first, 0x41 ^ (0x57 & 0x1f));
        assert_eq!(pn, [0x12 ^ 0x45, 0x34 ^ 0x16, 0x56, 0x78]);
    }

    #[test]
    fn header_protection_rejects_bad_samples_and_packet_numbers() {
        let (client, _) = client_and_server();
        let (mut first, mut pn) = (0xc3u8, [0u8; 4]);
        let header = &client.local.header;
        assert!(
            header
                .encrypt_in_place(&[0; 15], &mut first, &mut pn)
                .is_err()
        );
        assert!(
            header
                .encrypt_in_place(&[0; 17], &mut first, &mut pn)
                .is_err()
        );
        assert!(
            header
                .encrypt_in_place(&[0; 16], &mut first, &mut [0; 5])
                .is_err()
        );
        assert_eq!((first, pn), (0xc3, [0; 4]));
    }

    #[test]
    fn packet_key_matches_sm4_gcm_under_the_openssl_derived_key_and_iv() {
        let (client, _) = client_and_server();
        let header = b"header bytes";
        let mut payload = b"QUIC payload protected with SM4-GCM".to_vec();
        let plaintext = payload.clone();
        let tag = client
            .local
            .packet
            .encrypt_in_place(2, header, &mut payload)
            .unwrap();

        let mut nonce: [u8; 12] = hex(CLIENT_IV).try_into().unwrap();
        nonce[11] ^= 2;
        let mut expected = plaintext;
        let expected_tag = Sm4Gcm::new_from_slice(&hex(CLIENT_KEY))
            .unwrap()
            .encrypt_inout_detached(&nonce.into(), header, expected.as_mut_slice().into())
            .unwrap();
        assert_eq!(payload, expected);
        assert_eq!(tag.as_ref(), expected_tag.as_slice());
    }

    #[test]
    fn packet_key_round_trips_and_fails_on_any_flipped_bit() {
        let (client, server) = client_and_server();
        let (sender, receiver) = (&client.local.packet, &server.remote.packet);
        assert_eq!(sender.tag_len(), 16);
        assert_eq!(sender.confidentiality_limit(), 1 << 23);
        assert_eq!(sender.integrity_limit(), 1 << 52);

        let header = [0xc3, 0x00, 0x00, 0x00, 0x01, 0x08, 0x07];
        let message = b"stream frame bytes".to_vec();
        let mut sealed = message.clone();
        let tag = sender.encrypt_in_place(7, &header, &mut sealed).unwrap();
        sealed.extend_from_slice(tag.as_ref());

        let opened = receiver
            .decrypt_in_place(7, &header, &mut sealed.clone())
            .unwrap()
            .to_vec();
        assert_eq!(opened, message);

        for bit in 0..sealed.len() * 8 {
            let mut flipped = sealed.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(
                receiver.decrypt_in_place(7, &header, &mut flipped),
                Err(Error::DecryptError),
                "bit {bit}"
            );
        }
        let mut flipped_header = header;
        flipped_header[4] ^= 0x01;
        assert!(
            receiver
                .decrypt_in_place(7, &flipped_header, &mut sealed.clone())
                .is_err()
        );
        assert!(
            receiver
                .decrypt_in_place(8, &header, &mut sealed.clone())
                .is_err()
        );
        assert!(
            receiver
                .decrypt_in_place(7, &header, &mut [0u8; 15])
                .is_err()
        );
    }

    #[test]
    fn wrong_length_keys_fail_instead_of_panicking() {
        // AeadKey's only public constructor makes a 32-byte key.
        let packet = SM4_QUIC.packet_key(AeadKey::from([7; 32]), Iv::from([0; 12]));
        assert!(packet.encrypt_in_place(0, b"h", &mut [0; 4]).is_err());
        assert!(packet.decrypt_in_place(0, b"h", &mut [0; 20]).is_err());
        let header = SM4_QUIC.header_protection_key(AeadKey::from([7; 32]));
        assert!(
            header
                .encrypt_in_place(&[0; 16], &mut 0, &mut [0; 4])
                .is_err()
        );
    }
}
