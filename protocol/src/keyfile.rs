//! Private keys encrypted at rest under an operator's passphrase: the control plane's CA key
//! (`init --protect-ca-key`) and the agent's identity keys (`[identity] key_passphrase_file`).
//!
//! A sealed key file is JSON:
//!
//! ```json
//! {"format": "bagui-encrypted-key/1", "kdf": "pbkdf2-hmac-sm3", "iterations": 200000,
//!  "salt": "<16 bytes hex>", "cipher": "sm4-ccm", "nonce": "<12 bytes hex>",
//!  "ciphertext": "<hex: SM4-CCM of the plaintext, then the 16-byte tag>"}
//! ```
//!
//! The SM4 key is PBKDF2-HMAC-SM3(passphrase, salt, iterations) truncated to 16 bytes; the
//! CCM cipher is [`Sm4Ccm`] (RFC 8998: 12-byte nonce, 16-byte tag) and its associated data is
//! the header ([`SealedKey`]'s `format kdf iterations salt cipher nonce`), so lowering
//! `iterations` or swapping the salt is detected like a wrong passphrase. Nonces are random
//! (96 bits): a key file is written a handful of times in its life.
//!
//! [`KeyPassphrase`] keeps the derived key of the last salt it saw so that a process that
//! reads and rewrites its key files (the agent at every connection and renewal) pays for
//! PBKDF2 once, not at every file; files it writes then share that salt, each with a fresh
//! nonce.

use std::sync::{Arc, Mutex};

use ccm::aead::{AeadInOut, KeyInit};
use sm4::cipher::zeroize::Zeroize;

use crate::digest;
use crate::sealed::{KEY_LEN, NONCE_LEN, SecretKey, Sm4Ccm, TAG_LEN};

/// The format tag of a passphrase-protected key file.
pub const FORMAT: &str = "bagui-encrypted-key/1";
/// The key derivation function.
pub const KDF: &str = "pbkdf2-hmac-sm3";
/// The cipher.
pub const CIPHER: &str = "sm4-ccm";
/// PBKDF2 iterations for new sealed keys.
pub const DEFAULT_ITERATIONS: u32 = 200_000;
/// Files asking for fewer iterations are refused (a weakened file is not even tried).
pub const MIN_ITERATIONS: u32 = 100_000;
/// Bytes of salt in new files.
pub const SALT_LEN: usize = 16;

/// A sealed key could not be written or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyFileError {
    #[error("wrong passphrase for the encrypted key (or the key file was altered)")]
    WrongPassphrase,
    #[error("encrypted key file: {0}")]
    Malformed(String),
    #[error("the key passphrase is empty")]
    EmptyPassphrase,
    #[error("no randomness available for the key file's salt or nonce")]
    Random,
    #[error("encrypting the key failed")]
    Encrypt,
}

/// A sealed key file's contents (see the module documentation).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SealedKey {
    pub format: String,
    pub kdf: String,
    pub iterations: u32,
    pub salt: String,
    pub cipher: String,
    pub nonce: String,
    pub ciphertext: String,
}

fn random<const N: usize>() -> Result<[u8; N], KeyFileError> {
    let mut bytes = [0u8; N];
    sm2::elliptic_curve::common::getrandom::fill(&mut bytes).map_err(|_| KeyFileError::Random)?;
    Ok(bytes)
}

impl SealedKey {
    /// The CCM associated data: every header field.
    fn aad(&self) -> Vec<u8> {
        format!(
            "{} {} {} {} {} {}",
            self.format, self.kdf, self.iterations, self.salt, self.cipher, self.nonce
        )
        .into_bytes()
    }

    /// Whether `text` is a sealed key (rather than a PEM or hex one).
    pub fn is_sealed(text: &str) -> bool {
        text.trim_start().starts_with('{') && text.contains(FORMAT)
    }

    /// Parses and checks the header of a sealed key file (not the passphrase).
    pub fn parse(text: &str) -> Result<SealedKey, KeyFileError> {
        let sealed: SealedKey = serde_json::from_str(text)
            .map_err(|error| KeyFileError::Malformed(error.to_string()))?;
        if sealed.format != FORMAT || sealed.kdf != KDF || sealed.cipher != CIPHER {
            return Err(KeyFileError::Malformed(format!(
                "unsupported format {} / {} / {}",
                sealed.format, sealed.kdf, sealed.cipher
            )));
        }
        if sealed.iterations < MIN_ITERATIONS {
            return Err(KeyFileError::Malformed(format!(
                "{} PBKDF2 iterations is below the minimum {MIN_ITERATIONS}",
                sealed.iterations
            )));
        }
        Ok(sealed)
    }

    fn salt_bytes(&self) -> Result<Vec<u8>, KeyFileError> {
        digest::unhex(&self.salt)
            .filter(|salt| !salt.is_empty())
            .ok_or_else(|| KeyFileError::Malformed("bad salt".into()))
    }

    /// Encrypts `plaintext` under `passphrase` with a fresh salt and nonce; the file's text.
    pub fn seal(
        plaintext: &[u8],
        passphrase: &[u8],
        iterations: u32,
    ) -> Result<String, KeyFileError> {
        DerivedKey::generate(passphrase, iterations)?.seal(plaintext)
    }

    /// Decrypts a sealed key file; a wrong passphrase (or an altered file) is
    /// [`KeyFileError::WrongPassphrase`].
    pub fn open(text: &str, passphrase: &[u8]) -> Result<Vec<u8>, KeyFileError> {
        let sealed = SealedKey::parse(text)?;
        DerivedKey::derive(passphrase, &sealed.salt_bytes()?, sealed.iterations)?.open(&sealed)
    }
}

/// The SM4 key PBKDF2 derived from a passphrase, with the salt and iterations it used.
pub struct DerivedKey {
    salt: Vec<u8>,
    iterations: u32,
    key: SecretKey,
}

impl std::fmt::Debug for DerivedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DerivedKey")
            .field("salt", &digest::hex(&self.salt))
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

impl DerivedKey {
    /// PBKDF2-HMAC-SM3(passphrase, salt, iterations), 16 bytes.
    pub fn derive(
        passphrase: &[u8],
        salt: &[u8],
        iterations: u32,
    ) -> Result<DerivedKey, KeyFileError> {
        if passphrase.is_empty() {
            return Err(KeyFileError::EmptyPassphrase);
        }
        let mut bytes = [0u8; KEY_LEN];
        pbkdf2::pbkdf2_hmac::<sm3::Sm3>(passphrase, salt, iterations, &mut bytes);
        let key = SecretKey::from_bytes(bytes);
        bytes.zeroize();
        Ok(DerivedKey {
            salt: salt.to_vec(),
            iterations,
            key,
        })
    }

    /// A key under a fresh random salt.
    pub fn generate(passphrase: &[u8], iterations: u32) -> Result<DerivedKey, KeyFileError> {
        DerivedKey::derive(passphrase, &random::<SALT_LEN>()?, iterations)
    }

    /// Whether this key was derived for `sealed`'s salt and iterations.
    fn fits(&self, sealed: &SealedKey) -> bool {
        sealed.iterations == self.iterations
            && sealed.salt_bytes().is_ok_and(|salt| salt == self.salt)
    }

    /// Encrypts `plaintext` with a fresh nonce; the file's text.
    pub fn seal(&self, plaintext: &[u8]) -> Result<String, KeyFileError> {
        let nonce = random::<NONCE_LEN>()?;
        let mut sealed = SealedKey {
            format: FORMAT.into(),
            kdf: KDF.into(),
            iterations: self.iterations,
            salt: digest::hex(&self.salt),
            cipher: CIPHER.into(),
            nonce: digest::hex(&nonce),
            ciphertext: String::new(),
        };
        let mut buffer = plaintext.to_vec();
        let tag = Sm4Ccm::new(&(*self.key.expose()).into())
            .encrypt_inout_detached(&nonce.into(), &sealed.aad(), buffer.as_mut_slice().into())
            .map_err(|_| KeyFileError::Encrypt)?;
        buffer.extend_from_slice(&tag);
        sealed.ciphertext = digest::hex(&buffer);
        serde_json::to_string_pretty(&sealed)
            .map(|text| text + "\n")
            .map_err(|error| KeyFileError::Malformed(error.to_string()))
    }

    /// Decrypts `sealed` (whose salt and iterations must be this key's).
    pub fn open(&self, sealed: &SealedKey) -> Result<Vec<u8>, KeyFileError> {
        if !self.fits(sealed) {
            return Err(KeyFileError::WrongPassphrase);
        }
        let bad = || KeyFileError::Malformed("bad nonce or ciphertext".into());
        let nonce: [u8; NONCE_LEN] = digest::unhex(&sealed.nonce)
            .and_then(|nonce| nonce.try_into().ok())
            .ok_or_else(bad)?;
        let mut buffer = digest::unhex(&sealed.ciphertext).ok_or_else(bad)?;
        if buffer.len() < TAG_LEN {
            return Err(bad());
        }
        let tag: [u8; TAG_LEN] = buffer
            .split_off(buffer.len() - TAG_LEN)
            .try_into()
            .map_err(|_| bad())?;
        match Sm4Ccm::new(&(*self.key.expose()).into()).decrypt_inout_detached(
            &nonce.into(),
            &sealed.aad(),
            buffer.as_mut_slice().into(),
            &tag.into(),
        ) {
            Ok(()) => Ok(buffer),
            Err(_) => {
                buffer.zeroize();
                Err(KeyFileError::WrongPassphrase)
            }
        }
    }
}

/// A passphrase protecting key files, with the last derived key cached (see the module
/// documentation). Cheap to share: clones share the cache.
#[derive(Clone)]
pub struct KeyPassphrase {
    passphrase: Arc<Passphrase>,
    iterations: u32,
    derived: Arc<Mutex<Option<Arc<DerivedKey>>>>,
}

/// The passphrase bytes, overwritten (best effort) when dropped.
struct Passphrase(Vec<u8>);

impl Drop for Passphrase {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl std::fmt::Debug for KeyPassphrase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyPassphrase(..)")
    }
}

impl KeyPassphrase {
    /// Refuses an empty passphrase.
    pub fn new(passphrase: impl Into<Vec<u8>>) -> Result<KeyPassphrase, KeyFileError> {
        let passphrase = Passphrase(passphrase.into());
        if passphrase.0.is_empty() {
            return Err(KeyFileError::EmptyPassphrase);
        }
        Ok(KeyPassphrase {
            passphrase: Arc::new(passphrase),
            iterations: DEFAULT_ITERATIONS,
            derived: Arc::default(),
        })
    }

    /// PBKDF2 iterations for files this writes (at least [`MIN_ITERATIONS`]).
    pub fn with_iterations(mut self, iterations: u32) -> KeyPassphrase {
        self.iterations = iterations.max(MIN_ITERATIONS);
        self
    }

    fn cached(&self) -> Option<Arc<DerivedKey>> {
        self.derived
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .clone()
    }

    fn remember(&self, key: DerivedKey) -> Arc<DerivedKey> {
        let key = Arc::new(key);
        *self
            .derived
            .lock()
            .unwrap_or_else(|poison| poison.into_inner()) = Some(key.clone());
        key
    }

    /// Encrypts `plaintext`; the file's text.
    pub fn seal(&self, plaintext: &[u8]) -> Result<String, KeyFileError> {
        let key = match self.cached() {
            Some(key) if key.iterations == self.iterations => key,
            _ => self.remember(DerivedKey::generate(&self.passphrase.0, self.iterations)?),
        };
        key.seal(plaintext)
    }

    /// Decrypts a sealed key file's text.
    pub fn open(&self, text: &str) -> Result<Vec<u8>, KeyFileError> {
        let sealed = SealedKey::parse(text)?;
        let key = match self.cached() {
            Some(key) if key.fits(&sealed) => key,
            _ => {
                let key = DerivedKey::derive(
                    &self.passphrase.0,
                    &sealed.salt_bytes()?,
                    sealed.iterations,
                )?;
                // Only a key that opened something is worth keeping.
                let opened = key.open(&sealed)?;
                self.remember(key);
                return Ok(opened);
            }
        };
        key.open(&sealed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_PEM: &str = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg\n-----END PRIVATE KEY-----\n";

    #[test]
    fn sealed_keys_open_only_with_their_passphrase() {
        let passphrase = "正确 passphrase".as_bytes();
        let sealed = SealedKey::seal(KEY_PEM.as_bytes(), passphrase, MIN_ITERATIONS).unwrap();
        assert!(SealedKey::is_sealed(&sealed));
        assert!(!SealedKey::is_sealed(KEY_PEM));
        assert!(!sealed.contains("PRIVATE KEY"), "{sealed}");
        assert_eq!(
            SealedKey::open(&sealed, passphrase).unwrap(),
            KEY_PEM.as_bytes()
        );
        assert_eq!(
            SealedKey::open(&sealed, b"wrong"),
            Err(KeyFileError::WrongPassphrase)
        );
        assert_eq!(
            SealedKey::open(&sealed, b""),
            Err(KeyFileError::EmptyPassphrase)
        );
        // Weakening the KDF in the file is refused or detected.
        let weakened = sealed.replace("\"iterations\": 100000", "\"iterations\": 100001");
        assert_ne!(weakened, sealed);
        assert_eq!(
            SealedKey::open(&weakened, passphrase),
            Err(KeyFileError::WrongPassphrase)
        );
        let weak = sealed.replace("\"iterations\": 100000", "\"iterations\": 1000");
        assert!(matches!(
            SealedKey::open(&weak, passphrase),
            Err(KeyFileError::Malformed(_))
        ));
        // Every header field is authenticated.
        let parsed = SealedKey::parse(&sealed).unwrap();
        let other_nonce = sealed.replace(&parsed.nonce, &"00".repeat(NONCE_LEN));
        assert_eq!(
            SealedKey::open(&other_nonce, passphrase),
            Err(KeyFileError::WrongPassphrase)
        );
        let flipped = {
            let mut ciphertext = parsed.ciphertext.clone().into_bytes();
            ciphertext[0] = if ciphertext[0] == b'0' { b'1' } else { b'0' };
            sealed.replace(
                &parsed.ciphertext,
                std::str::from_utf8(&ciphertext).unwrap(),
            )
        };
        assert_eq!(
            SealedKey::open(&flipped, passphrase),
            Err(KeyFileError::WrongPassphrase)
        );
        assert!(SealedKey::open("{\"format\": \"bagui-encrypted-key/1\"}", passphrase).is_err());
    }

    #[test]
    fn a_key_passphrase_derives_once_and_opens_other_salts() {
        let passphrase = KeyPassphrase::new("pass").unwrap().with_iterations(1);
        assert_eq!(passphrase.iterations, MIN_ITERATIONS);
        let first = passphrase.seal(b"one").unwrap();
        let second = passphrase.seal(b"two").unwrap();
        let (first_header, second_header) = (
            SealedKey::parse(&first).unwrap(),
            SealedKey::parse(&second).unwrap(),
        );
        assert_eq!(
            first_header.salt, second_header.salt,
            "the derived key is reused"
        );
        assert_ne!(first_header.nonce, second_header.nonce);
        assert_eq!(passphrase.open(&second).unwrap(), b"two");
        // A file sealed elsewhere (another salt) opens too, and wrong passphrases fail.
        let elsewhere = SealedKey::seal(b"three", b"pass", MIN_ITERATIONS).unwrap();
        assert_eq!(passphrase.open(&elsewhere).unwrap(), b"three");
        assert_eq!(passphrase.open(&first).unwrap(), b"one");
        let wrong = KeyPassphrase::new("other").unwrap();
        assert_eq!(wrong.open(&first), Err(KeyFileError::WrongPassphrase));
        assert!(KeyPassphrase::new("").is_err());
        assert_eq!(format!("{passphrase:?}"), "KeyPassphrase(..)");
    }
}
