//! Report bodies sealed to the control plane (ShangMi, 国密): what [`crate::Report::body`]
//! holds when [`crate::Report::cipher`] is [`SM4_CCM_SM2`].
//!
//! The agent seals every record before it reaches its outbox on disk, so that a stolen disk
//! reveals nothing and the agent itself cannot read back what it buffered; only the control
//! plane, which holds the SM2 private key, can open it.
//!
//! # Scheme
//!
//! * A **data key**: 16 random bytes, an SM4 key (GB/T 32907). The agent makes a new one at
//!   every start and rotates it (every hour or 10,000 records); it lives only in memory.
//! * The data key is **wrapped** with SM2 public-key encryption (GB/T 32918.4, C1C3C2, SM3 as
//!   the hash) to the control plane's SM2 key received at join: 65 + 32 + 16 = 113 bytes.
//! * Each record is encrypted with **SM4-CCM** (as in RFC 8998: 12-byte nonce, 16-byte tag)
//!   under the data key. The nonce is a counter per data key (a fresh random key per epoch, so
//!   a nonce never repeats under one key). The associated data binds the record's place in the
//!   outbox, which stays outside the seal: `"bagui-sealed/1" lane u8 seq u64 created_ms u64
//!   kind` (integers little-endian). A body moved to another record, or a changed kind, does
//!   not open.
//!
//! ```text
//! body = wrapped_key_len u16 LE | wrapped_key | nonce[12] | ciphertext | tag[16]
//! ```
//!
//! The wrapped key travels in every body (143 bytes of overhead in all), so each record opens
//! on its own; the control plane caches unwrapped keys by [`Envelope::key_id`] (SM3 of the
//! wrapped key) so it does one SM2 decryption per data key, not per record.
//!
//! # What it does and does not protect
//!
//! A stolen disk, or an agent restarted from it, never yields a plaintext: the data keys of
//! earlier epochs are gone with the process that made them. Within the current epoch (at most
//! an hour), a compromised *running* agent process still has the data key in memory and could
//! decrypt the records it sealed under it. Key bytes and SM4 round keys are zeroized when
//! dropped (`zeroize`); moves and stack copies the compiler makes can still leave traces in
//! memory, which is why the guarantee is about the disk, not about a live process.

use ccm::aead::{AeadInOut, KeyInit};
use sm2::pke::{DecryptingKey, EncryptingKey, Mode};
use sm3::Digest;
use sm4::cipher::zeroize::Zeroize;

use crate::Lane;

/// The cipher name of sealed bodies (in [`crate::Report::cipher`] and in the outbox).
pub const SM4_CCM_SM2: &str = "sm4-ccm/sm2";

/// An SM4 key.
pub const KEY_LEN: usize = 16;
/// The SM4-CCM nonce (RFC 8998).
pub const NONCE_LEN: usize = 12;
/// The SM4-CCM tag (RFC 8998).
pub const TAG_LEN: usize = 16;
/// An SM2-wrapped SM4 key: C1 (uncompressed point) + C3 (SM3) + C2 (the key).
pub const WRAPPED_KEY_LEN: usize = 65 + 32 + KEY_LEN;
/// Bytes a sealed body has on top of its plaintext.
pub const OVERHEAD: usize = 2 + WRAPPED_KEY_LEN + NONCE_LEN + TAG_LEN;
/// The largest body SM4-CCM with a 12-byte nonce can seal (a 3-byte length field); far
/// beyond any frame the control plane accepts.
pub const MAX_PLAINTEXT: usize = (1 << 24) - 1;
/// Domain separation of the associated data.
const AAD_LABEL: &[u8] = b"bagui-sealed/1";

/// SM4-CCM as RFC 8998 profiles it (16-byte tag, 12-byte nonce): the record cipher.
pub type Sm4Ccm = ccm::Ccm<sm4::Sm4, ccm::consts::U16, ccm::consts::U12>;

/// Why a body could not be sealed or opened. Never a panic: a bad body is an error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("the recipient's SM2 public key is invalid")]
    BadRecipient,
    #[error("the system random number generator failed")]
    Random,
    #[error("the SM2 key wrap failed: {0}")]
    Wrap(String),
    #[error("a body of {0} bytes is too large to seal")]
    TooLarge(usize),
    #[error("unknown cipher {0:?}")]
    UnknownCipher(String),
    #[error("malformed sealed body: {0}")]
    Malformed(&'static str),
    #[error("the data key does not unwrap with this SM2 key")]
    Unwrap,
    #[error("the body does not authenticate (wrong key, or damaged or moved)")]
    Authentication,
}

/// Where a record sits in the outbox (and in its [`crate::Report`]): authenticated, not
/// encrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordContext<'a> {
    pub lane: Lane,
    pub seq: u64,
    pub created_ms: u64,
    pub kind: &'a str,
}

impl RecordContext<'_> {
    fn aad(&self) -> Vec<u8> {
        let mut aad = Vec::with_capacity(AAD_LABEL.len() + 17 + self.kind.len());
        aad.extend_from_slice(AAD_LABEL);
        aad.push(self.lane as u8);
        aad.extend_from_slice(&self.seq.to_le_bytes());
        aad.extend_from_slice(&self.created_ms.to_le_bytes());
        aad.extend_from_slice(self.kind.as_bytes());
        aad
    }
}

/// The recipient of sealed bodies: the control plane's SM2 public key.
#[derive(Debug, Clone)]
pub struct Recipient(EncryptingKey);

impl Recipient {
    /// From a SEC1-encoded SM2 public key (as in `JoinAccepted.control_plane_sm2_public_key`).
    pub fn from_sec1(bytes: &[u8]) -> Result<Recipient, SealError> {
        let key = sm2::PublicKey::from_sec1_bytes(bytes).map_err(|_| SealError::BadRecipient)?;
        Ok(Recipient::new(key))
    }

    pub fn new(key: sm2::PublicKey) -> Recipient {
        Recipient(EncryptingKey::new_with_mode(key, Mode::C1C3C2))
    }

    /// Wraps arbitrary bytes with SM2 (GB/T 32918.4, C1C3C2).
    pub fn wrap(&self, secret: &[u8]) -> Result<Vec<u8>, SealError> {
        self.0
            .encrypt(&mut sm2::elliptic_curve::common::getrandom::SysRng, secret)
            .map_err(|error| SealError::Wrap(error.to_string()))
    }
}

/// An SM4 key, overwritten (best effort) when dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretKey([u8; KEY_LEN]);

impl SecretKey {
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> SecretKey {
        SecretKey(bytes)
    }

    /// The raw key bytes (for tests that prove they are nowhere on disk).
    pub fn expose(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    fn cipher(&self) -> Sm4Ccm {
        Sm4Ccm::new(&self.0.into())
    }
}

impl Drop for SecretKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

/// One data key of the sealing side: the SM4 key, its SM2-wrapped form and a nonce counter.
#[derive(Debug)]
pub struct DataKey {
    key: SecretKey,
    wrapped: Vec<u8>,
    sealed: u64,
}

impl DataKey {
    /// A fresh random data key, wrapped to `recipient`.
    pub fn generate(recipient: &Recipient) -> Result<DataKey, SealError> {
        let mut bytes = [0u8; KEY_LEN];
        sm2::elliptic_curve::common::getrandom::fill(&mut bytes).map_err(|_| SealError::Random)?;
        let key = SecretKey(bytes);
        bytes.zeroize();
        let wrapped = recipient.wrap(key.expose())?;
        if wrapped.len() > usize::from(u16::MAX) {
            return Err(SealError::Wrap("wrapped key too long".into()));
        }
        Ok(DataKey {
            key,
            wrapped,
            sealed: 0,
        })
    }

    /// Bodies sealed under this key so far.
    pub fn sealed(&self) -> u64 {
        self.sealed
    }

    /// The raw key (tests only need it, to show it never reaches the disk).
    pub fn secret(&self) -> &SecretKey {
        &self.key
    }

    /// The size of `plaintext_len` bytes once sealed.
    pub fn sealed_len(&self, plaintext_len: usize) -> usize {
        2 + self.wrapped.len() + NONCE_LEN + plaintext_len + TAG_LEN
    }

    /// Seals one record's body. Fails only for bodies beyond [`MAX_PLAINTEXT`].
    pub fn seal(
        &mut self,
        context: &RecordContext<'_>,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, SealError> {
        if plaintext.len() > MAX_PLAINTEXT {
            return Err(SealError::TooLarge(plaintext.len()));
        }
        self.sealed += 1;
        let mut nonce = [0u8; NONCE_LEN];
        nonce[..8].copy_from_slice(&self.sealed.to_le_bytes());
        let mut out = Vec::with_capacity(self.sealed_len(plaintext.len()));
        out.extend_from_slice(&(self.wrapped.len() as u16).to_le_bytes());
        out.extend_from_slice(&self.wrapped);
        out.extend_from_slice(&nonce);
        let start = out.len();
        out.extend_from_slice(plaintext);
        let tag = self
            .key
            .cipher()
            .encrypt_inout_detached(&nonce.into(), &context.aad(), (&mut out[start..]).into())
            .map_err(|_| SealError::TooLarge(plaintext.len()))?;
        out.extend_from_slice(&tag);
        Ok(out)
    }
}

/// A sealed body, split into its parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Envelope<'a> {
    pub wrapped_key: &'a [u8],
    pub nonce: [u8; NONCE_LEN],
    /// Ciphertext followed by the tag.
    pub sealed: &'a [u8],
}

impl<'a> Envelope<'a> {
    /// Splits a body sealed with `cipher`.
    pub fn parse(cipher: &str, body: &'a [u8]) -> Result<Envelope<'a>, SealError> {
        if cipher != SM4_CCM_SM2 {
            return Err(SealError::UnknownCipher(cipher.to_owned()));
        }
        let (len, rest) = body
            .split_first_chunk::<2>()
            .ok_or(SealError::Malformed("shorter than its header"))?;
        let len = usize::from(u16::from_le_bytes(*len));
        if rest.len() < len + NONCE_LEN + TAG_LEN {
            return Err(SealError::Malformed("shorter than its key, nonce and tag"));
        }
        let (wrapped_key, rest) = rest.split_at(len);
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        Ok(Envelope {
            wrapped_key,
            nonce: nonce.try_into().expect("split at NONCE_LEN"),
            sealed,
        })
    }

    /// SM3 of the wrapped key: names the data key (for caching unwrapped keys).
    pub fn key_id(&self) -> [u8; 32] {
        sm3::Sm3::digest(self.wrapped_key).into()
    }

    /// Unwraps the data key with the control plane's SM2 key (the expensive step: ~1 SM2
    /// decryption; cache the result by [`Envelope::key_id`]).
    pub fn unwrap_key(&self, opener: &Opener) -> Result<SecretKey, SealError> {
        opener.unwrap_data_key(self.wrapped_key)
    }

    /// Decrypts and authenticates with an unwrapped data key.
    pub fn open_with(
        &self,
        key: &SecretKey,
        context: &RecordContext<'_>,
    ) -> Result<Vec<u8>, SealError> {
        let (ciphertext, tag) = self.sealed.split_at(self.sealed.len() - TAG_LEN);
        let tag: [u8; TAG_LEN] = tag.try_into().expect("split at TAG_LEN");
        let mut plaintext = ciphertext.to_vec();
        key.cipher()
            .decrypt_inout_detached(
                &self.nonce.into(),
                &context.aad(),
                plaintext.as_mut_slice().into(),
                &tag.into(),
            )
            .map_err(|_| SealError::Authentication)?;
        Ok(plaintext)
    }
}

/// The opening side: the control plane's SM2 private key.
#[derive(Clone)]
pub struct Opener(DecryptingKey);

impl std::fmt::Debug for Opener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Opener(..)")
    }
}

impl Opener {
    pub fn new(secret: &sm2::SecretKey) -> Opener {
        Opener(DecryptingKey::new_with_mode(
            secret.to_nonzero_scalar(),
            Mode::C1C3C2,
        ))
    }

    /// The matching recipient (the public key).
    pub fn recipient(&self) -> Recipient {
        Recipient(self.0.encrypting_key().clone())
    }

    /// Unwraps a data key wrapped by the agent (an envelope's `wrapped_key`); the
    /// intermediate plaintext is wiped.
    pub fn unwrap_data_key(&self, wrapped: &[u8]) -> Result<SecretKey, SealError> {
        let mut key = self.0.decrypt(wrapped).map_err(|_| SealError::Unwrap)?;
        let result = <[u8; KEY_LEN]>::try_from(key.as_slice())
            .map(SecretKey)
            .map_err(|_| SealError::Unwrap);
        key.zeroize();
        result
    }

    /// Unwraps arbitrary bytes wrapped by [`Recipient::wrap`].
    pub fn unwrap_bytes(&self, wrapped: &[u8]) -> Result<Vec<u8>, SealError> {
        self.0.decrypt(wrapped).map_err(|_| SealError::Unwrap)
    }

    /// Opens one body without caching (tests, tools): one SM2 decryption per call.
    pub fn open(
        &self,
        cipher: &str,
        body: &[u8],
        context: &RecordContext<'_>,
    ) -> Result<Vec<u8>, SealError> {
        let envelope = Envelope::parse(cipher, body)?;
        let key = envelope.unwrap_key(self)?;
        envelope.open_with(&key, context)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sm2::elliptic_curve::Generate;

    fn keys() -> (Opener, Recipient) {
        let secret = sm2::SecretKey::try_generate().unwrap();
        let opener = Opener::new(&secret);
        let recipient = Recipient::new(secret.public_key());
        (opener, recipient)
    }

    const CONTEXT: RecordContext<'static> = RecordContext {
        lane: Lane::Metrics,
        seq: 7,
        created_ms: 1_795_000_000_000,
        kind: "metrics",
    };

    #[test]
    fn a_sealed_body_opens_with_the_control_plane_key_only() {
        let (opener, recipient) = keys();
        let mut key = DataKey::generate(&recipient).unwrap();
        let body = key.seal(&CONTEXT, b"the report").unwrap();
        assert_eq!(body.len(), b"the report".len() + OVERHEAD);
        assert_eq!(key.sealed_len(10), body.len());
        assert!(!body.windows(10).any(|window| window == b"the report"));
        assert_eq!(
            opener.open(SM4_CCM_SM2, &body, &CONTEXT).unwrap(),
            b"the report"
        );
        let empty = key.seal(&CONTEXT, b"").unwrap();
        assert_eq!(opener.open(SM4_CCM_SM2, &empty, &CONTEXT).unwrap(), b"");

        let (stranger, _) = keys();
        assert_eq!(
            stranger.open(SM4_CCM_SM2, &body, &CONTEXT),
            Err(SealError::Unwrap)
        );
    }

    #[test]
    fn every_flipped_byte_and_every_moved_body_fails_cleanly() {
        let (opener, recipient) = keys();
        let mut key = DataKey::generate(&recipient).unwrap();
        let body = key.seal(&CONTEXT, b"0123456789abcdef0123").unwrap();
        let envelope = Envelope::parse(SM4_CCM_SM2, &body).unwrap();
        let data_key = envelope.unwrap_key(&opener).unwrap();
        assert_eq!(&data_key, key.secret());
        for at in 0..body.len() {
            let mut bad = body.clone();
            bad[at] ^= 0x01;
            assert!(
                opener.open(SM4_CCM_SM2, &bad, &CONTEXT).is_err(),
                "flipped byte {at}"
            );
        }
        for context in [
            RecordContext { seq: 8, ..CONTEXT },
            RecordContext {
                lane: Lane::Security,
                ..CONTEXT
            },
            RecordContext {
                created_ms: 1,
                ..CONTEXT
            },
            RecordContext {
                kind: "host_facts",
                ..CONTEXT
            },
        ] {
            assert_eq!(
                envelope.open_with(&data_key, &context),
                Err(SealError::Authentication)
            );
        }
        for cut in 0..body.len() {
            assert!(opener.open(SM4_CCM_SM2, &body[..cut], &CONTEXT).is_err());
        }
        assert!(matches!(
            opener.open("aes-gcm", &body, &CONTEXT),
            Err(SealError::UnknownCipher(_))
        ));
    }

    #[test]
    fn nonces_never_repeat_under_one_key_and_keys_differ() {
        let (_, recipient) = keys();
        let mut key = DataKey::generate(&recipient).unwrap();
        let first = Envelope::parse(SM4_CCM_SM2, &key.seal(&CONTEXT, b"x").unwrap())
            .unwrap()
            .nonce;
        let second_body = key.seal(&CONTEXT, b"x").unwrap();
        let second = Envelope::parse(SM4_CCM_SM2, &second_body).unwrap();
        assert_ne!(first, second.nonce);
        assert_eq!(key.sealed(), 2);
        let other = DataKey::generate(&recipient).unwrap();
        assert_ne!(other.secret(), key.secret());
        assert_eq!(other.wrapped.len(), WRAPPED_KEY_LEN);
    }
}
