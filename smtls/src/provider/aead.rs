//! SM4-GCM record protection for TLS 1.3 (RFC 8446 §5.2–5.3) and packet protection for QUIC
//! (RFC 9001 §5.3), over [`crate::gcm::Sm4Gcm`].

use rustls::crypto::cipher::{
    AeadKey, InboundOpaqueMessage, InboundPlainMessage, Iv, MessageDecrypter, MessageEncrypter,
    Nonce, OutboundOpaqueMessage, OutboundPlainMessage, PrefixedPayload, Tls13AeadAlgorithm,
    UnsupportedOperationError, make_tls13_aad,
};
use rustls::{ConnectionTrafficSecrets, ContentType, Error, ProtocolVersion, quic};

use crate::gcm::aead::{AeadInOut, KeyInit};
use crate::gcm::{KEY_LEN, Sm4Gcm, TAG_LEN};

/// Confidentiality limit per key for TLS records, as rustls sets it for AES-GCM (RFC 8446 §5.5):
/// SM4 has AES's 128-bit block, so the same GCM bounds apply.
pub(crate) const TLS_CONFIDENTIALITY_LIMIT: u64 = 1 << 24;
/// QUIC confidentiality limit, AEAD_AES_128_GCM's (RFC 9001 §6.6).
pub(crate) const QUIC_CONFIDENTIALITY_LIMIT: u64 = 1 << 23;
/// QUIC integrity limit, AEAD_AES_128_GCM's (RFC 9001 §6.6).
pub(crate) const QUIC_INTEGRITY_LIMIT: u64 = 1 << 52;

/// A keyed SM4-GCM instance, or the reason there is none. rustls derives keys with the length
/// [`Tls13AeadAlgorithm::key_len`] asks for, so the error case is unreachable through rustls;
/// it exists so that a wrong-length key fails every operation instead of panicking.
pub(crate) fn keyed(key: &AeadKey) -> Result<Sm4Gcm, Error> {
    Sm4Gcm::new_from_slice(key.as_ref())
        .map_err(|_| Error::General(format!("SM4-GCM needs a {KEY_LEN}-byte key")))
}

/// Seals `body` in place under `nonce` and `aad`, returning the tag.
pub(crate) fn seal(
    cipher: &Result<Sm4Gcm, Error>,
    nonce: Nonce,
    aad: &[u8],
    body: &mut [u8],
) -> Result<[u8; TAG_LEN], Error> {
    let cipher = cipher.as_ref().map_err(Clone::clone)?;
    let tag = cipher
        .encrypt_inout_detached(&nonce.0.into(), aad, body.into())
        .map_err(|_| Error::EncryptError)?;
    Ok(tag.into())
}

/// Opens `sealed` (ciphertext followed by the tag) in place, returning the plaintext length.
/// Any failure, including a message shorter than a tag, is [`Error::DecryptError`].
pub(crate) fn open(
    cipher: &Result<Sm4Gcm, Error>,
    nonce: Nonce,
    aad: &[u8],
    sealed: &mut [u8],
) -> Result<usize, Error> {
    let cipher = cipher.as_ref().map_err(Clone::clone)?;
    let plain_len = sealed
        .len()
        .checked_sub(TAG_LEN)
        .ok_or(Error::DecryptError)?;
    let (body, tag) = sealed.split_at_mut(plain_len);
    let tag: [u8; TAG_LEN] = (&*tag).try_into().map_err(|_| Error::DecryptError)?;
    cipher
        .decrypt_inout_detached(&nonce.0.into(), aad, body.into(), &tag.into())
        .map_err(|_| Error::DecryptError)?;
    Ok(plain_len)
}

/// AEAD_SM4_GCM for TLS 1.3 records.
#[derive(Debug)]
pub(crate) struct Sm4GcmAead;

pub(crate) static SM4_GCM: Sm4GcmAead = Sm4GcmAead;

impl Tls13AeadAlgorithm for Sm4GcmAead {
    fn encrypter(&self, key: AeadKey, iv: Iv) -> Box<dyn MessageEncrypter> {
        Box::new(RecordEncrypter {
            cipher: keyed(&key),
            iv,
        })
    }

    fn decrypter(&self, key: AeadKey, iv: Iv) -> Box<dyn MessageDecrypter> {
        Box::new(RecordDecrypter {
            cipher: keyed(&key),
            iv,
        })
    }

    fn key_len(&self) -> usize {
        KEY_LEN
    }

    /// rustls' [`ConnectionTrafficSecrets`] (used for kernel TLS) has no SM4 variant.
    fn extract_keys(
        &self,
        _key: AeadKey,
        _iv: Iv,
    ) -> Result<ConnectionTrafficSecrets, UnsupportedOperationError> {
        Err(UnsupportedOperationError)
    }
}

struct RecordEncrypter {
    cipher: Result<Sm4Gcm, Error>,
    iv: Iv,
}

impl MessageEncrypter for RecordEncrypter {
    fn encrypt(
        &mut self,
        msg: OutboundPlainMessage<'_>,
        seq: u64,
    ) -> Result<OutboundOpaqueMessage, Error> {
        let total_len = self.encrypted_payload_len(msg.payload.len());
        let mut payload = PrefixedPayload::with_capacity(total_len);
        payload.extend_from_chunks(&msg.payload);
        payload.extend_from_slice(&msg.typ.to_array());
        let aad = make_tls13_aad(total_len);
        let tag = seal(
            &self.cipher,
            Nonce::new(&self.iv, seq),
            &aad,
            payload.as_mut(),
        )?;
        payload.extend_from_slice(&tag);
        // All TLS 1.3 protected records carry legacy version TLS 1.2 (RFC 8446 §5.1).
        Ok(OutboundOpaqueMessage::new(
            ContentType::ApplicationData,
            ProtocolVersion::TLSv1_2,
            payload,
        ))
    }

    fn encrypted_payload_len(&self, payload_len: usize) -> usize {
        payload_len + 1 + TAG_LEN
    }
}

struct RecordDecrypter {
    cipher: Result<Sm4Gcm, Error>,
    iv: Iv,
}

impl MessageDecrypter for RecordDecrypter {
    fn decrypt<'a>(
        &mut self,
        mut msg: InboundOpaqueMessage<'a>,
        seq: u64,
    ) -> Result<InboundPlainMessage<'a>, Error> {
        let payload = &mut msg.payload;
        let aad = make_tls13_aad(payload.len());
        let plain_len = open(&self.cipher, Nonce::new(&self.iv, seq), &aad, payload)?;
        payload.truncate(plain_len);
        msg.into_tls13_unpadded_message()
    }
}

/// An SM4-GCM QUIC packet key (RFC 9001 §5.3: nonce = IV xor packet number, AAD = header).
pub(crate) struct PacketKey {
    cipher: Result<Sm4Gcm, Error>,
    iv: Iv,
}

impl PacketKey {
    pub(crate) fn new(key: AeadKey, iv: Iv) -> PacketKey {
        PacketKey {
            cipher: keyed(&key),
            iv,
        }
    }
}

impl quic::PacketKey for PacketKey {
    fn encrypt_in_place(
        &self,
        packet_number: u64,
        header: &[u8],
        payload: &mut [u8],
    ) -> Result<quic::Tag, Error> {
        let nonce = Nonce::new(&self.iv, packet_number);
        let tag = seal(&self.cipher, nonce, header, payload)?;
        Ok(quic::Tag::from(&tag[..]))
    }

    fn decrypt_in_place<'a>(
        &self,
        packet_number: u64,
        header: &[u8],
        payload: &'a mut [u8],
    ) -> Result<&'a [u8], Error> {
        let nonce = Nonce::new(&self.iv, packet_number);
        let plain_len = open(&self.cipher, nonce, header, payload)?;
        Ok(&payload[..plain_len])
    }

    fn tag_len(&self) -> usize {
        TAG_LEN
    }

    fn confidentiality_limit(&self) -> u64 {
        QUIC_CONFIDENTIALITY_LIMIT
    }

    fn integrity_limit(&self) -> u64 {
        QUIC_INTEGRITY_LIMIT
    }
}
