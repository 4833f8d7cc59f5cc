//! The agent's state directory: its identity and what the control plane told it at join.
//!
//! ```text
//! STATE_DIR/agent.json      agent id, control plane address, division, role, parameters
//! STATE_DIR/identity.pem    TLS private key + client certificate, written together (0600)
//! STATE_DIR/sm2.key         SM2 identity key, hex scalar (0600): proves re-joins and renewals
//! STATE_DIR/ca.crt          the deployment CA, pinned by its SM3 digest at join
//! STATE_DIR/outbox/         the durable outbox
//! STATE_DIR/status.json     live status, for `bagui-agent status`
//! ```
//!
//! Key and certificate share one file so that a crash during renewal can never leave a key
//! next to a certificate for another key.
//!
//! # Keys encrypted at rest
//!
//! With a key passphrase ([`StateDir::with_key_passphrase`], from `[identity]
//! key_passphrase_file` or `BAGUI_AGENT_KEY_PASSPHRASE_FILE`), `identity.pem` (key and
//! certificate together) and `sm2.key` are written as [`SealedKey`] JSON instead: SM4-CCM
//! under PBKDF2-HMAC-SM3 of the passphrase, the format of the control plane's protected CA key
//! (see [`bagui_protocol::keyfile`]), still 0600. A copy of the state directory without the
//! passphrase yields no usable key. Plaintext keys found while a passphrase is set are still
//! read, and [`StateDir::encrypt_plaintext_keys`] (called at every start) rewrites them
//! encrypted; an encrypted key without a passphrase is an error that says what to set.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use bagui_protocol::keyfile::{KeyPassphrase, SealedKey};
use bagui_protocol::{DeploymentParams, Role, digest};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};

/// `agent.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentState {
    pub agent_id: String,
    /// `HOST:PORT` of the control plane.
    pub server: String,
    pub division: String,
    pub division_path: String,
    pub role: Role,
    pub instance_id: String,
    pub params: DeploymentParams,
    pub certificate_issued_ms: u64,
    pub certificate_not_after_ms: u64,
    /// `sm3:` of the CA certificate.
    pub ca_fingerprint: String,
    /// Hex SEC1 SM2 public key of the control plane.
    pub control_plane_sm2_public_key: String,
    pub joined_ms: u64,
    #[serde(default)]
    pub possible_clone: bool,
    /// The deployment's crypto profile, from `join --crypto-profile` (`standard` in states
    /// written before profiles existed). Every session uses it.
    #[serde(default)]
    pub crypto_profile: bagui_protocol::CryptoProfile,
}

/// The agent's TLS identity.
#[derive(Debug)]
pub struct TlsIdentity {
    pub key: PrivateKeyDer<'static>,
    pub key_pem: String,
    pub certificate: CertificateDer<'static>,
}

/// Writes a file atomically (temp file, fsync, rename) with the given mode.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let temporary = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&temporary)
        .with_context(|| format!("creating {}", temporary.display()))?;
    // `mode` applies only when the file is created: a temp file left by a crash keeps its old
    // mode, so set it explicitly before any secret is written.
    use std::os::unix::fs::PermissionsExt;
    file.set_permissions(std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", temporary.display()))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", temporary.display()))?;
    std::fs::rename(&temporary, path)
        .with_context(|| format!("renaming {} into place", path.display()))?;
    if let Some(parent) = path.parent()
        && let Ok(directory) = std::fs::File::open(parent)
    {
        let _ = directory.sync_all();
    }
    Ok(())
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

/// What an encrypted key without a passphrase says.
pub const KEYS_ENCRYPTED: &str = "the identity keys are encrypted: set [identity] \
     key_passphrase_file in the agent config (or BAGUI_AGENT_KEY_PASSPHRASE_FILE)";

/// Reads a key passphrase file: its first line, without the line ending. Empty is an error.
pub fn read_key_passphrase_file(path: &Path) -> Result<KeyPassphrase> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the key passphrase from {}", path.display()))?;
    KeyPassphrase::new(text.lines().next().unwrap_or_default())
        .with_context(|| format!("in the key passphrase file {}", path.display()))
}

/// The state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
    /// Encrypts the private keys at rest when set.
    key_passphrase: Option<KeyPassphrase>,
}

impl StateDir {
    pub fn new(root: impl Into<PathBuf>) -> StateDir {
        StateDir {
            root: root.into(),
            key_passphrase: None,
        }
    }

    /// Writes the private keys encrypted under `passphrase` (and reads encrypted ones).
    pub fn with_key_passphrase(mut self, passphrase: KeyPassphrase) -> StateDir {
        self.key_passphrase = Some(passphrase);
        self
    }

    /// [`StateDir::with_key_passphrase`] with the first line of `path`.
    pub fn with_key_passphrase_file(self, path: &Path) -> Result<StateDir> {
        Ok(self.with_key_passphrase(read_key_passphrase_file(path)?))
    }

    /// Whether a key passphrase is set.
    pub fn has_key_passphrase(&self) -> bool {
        self.key_passphrase.is_some()
    }

    /// Reads a private key file, decrypting it if it is sealed.
    fn read_key_file(&self, path: &Path) -> Result<String> {
        let text = read(path)?;
        if !SealedKey::is_sealed(&text) {
            return Ok(text);
        }
        let Some(passphrase) = &self.key_passphrase else {
            bail!("{KEYS_ENCRYPTED} ({} is encrypted)", path.display());
        };
        let opened = passphrase
            .open(&text)
            .with_context(|| format!("decrypting {}", path.display()))?;
        String::from_utf8(opened)
            .with_context(|| format!("decrypting {}: not text", path.display()))
    }

    /// Writes a private key file (0600), encrypted when a passphrase is set.
    fn write_key_file(&self, path: &Path, contents: &str) -> Result<()> {
        match &self.key_passphrase {
            Some(passphrase) => {
                let sealed = passphrase
                    .seal(contents.as_bytes())
                    .with_context(|| format!("encrypting {}", path.display()))?;
                write_atomic(path, sealed.as_bytes(), 0o600)
            }
            None => write_atomic(path, contents.as_bytes(), 0o600),
        }
    }

    /// With a passphrase set, rewrites the private key files still in plaintext encrypted
    /// (the migration of a state directory from before the passphrase); returns how many.
    /// Without one, checks that no key file is encrypted (the clear error, at start rather
    /// than at the first connection).
    pub fn encrypt_plaintext_keys(&self) -> Result<usize> {
        let mut migrated = 0;
        for path in [self.identity_path(), self.sm2_path()] {
            if !path.exists() {
                continue;
            }
            let text = read(&path)?;
            match (SealedKey::is_sealed(&text), &self.key_passphrase) {
                (true, None) => bail!("{KEYS_ENCRYPTED} ({} is encrypted)", path.display()),
                (false, Some(_)) => {
                    self.write_key_file(&path, &text)?;
                    migrated += 1;
                }
                _ => {}
            }
        }
        Ok(migrated)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn agent_path(&self) -> PathBuf {
        self.root.join("agent.json")
    }
    fn identity_path(&self) -> PathBuf {
        self.root.join("identity.pem")
    }
    fn sm2_path(&self) -> PathBuf {
        self.root.join("sm2.key")
    }
    pub fn ca_path(&self) -> PathBuf {
        self.root.join("ca.crt")
    }
    pub fn outbox_path(&self) -> PathBuf {
        self.root.join("outbox")
    }
    /// The last asset snapshot sent to the control plane (the baseline changes are diffed to).
    pub fn assets_baseline_path(&self) -> PathBuf {
        self.root.join("assets.last")
    }

    pub fn status_path(&self) -> PathBuf {
        self.root.join("status.json")
    }

    /// Creates the directory (0700) if needed.
    pub fn create(&self) -> Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.root)
            .with_context(|| format!("creating state directory {}", self.root.display()))
    }

    pub fn is_joined(&self) -> bool {
        self.agent_path().exists()
    }

    pub fn agent_state(&self) -> Result<AgentState> {
        if !self.is_joined() {
            bail!(
                "{} holds no agent identity; run `bagui-agent join` first",
                self.root.display()
            );
        }
        let text = read(&self.agent_path())?;
        serde_json::from_str(&text)
            .with_context(|| format!("parsing {}", self.agent_path().display()))
    }

    pub fn save_agent_state(&self, state: &AgentState) -> Result<()> {
        write_atomic(
            &self.agent_path(),
            serde_json::to_string_pretty(state)?.as_bytes(),
            0o644,
        )
    }

    pub fn tls_identity(&self) -> Result<TlsIdentity> {
        let text = self.read_key_file(&self.identity_path())?;
        let key = PrivateKeyDer::from_pem_slice(text.as_bytes())
            .with_context(|| format!("no private key in {}", self.identity_path().display()))?;
        let certificate = CertificateDer::from_pem_slice(text.as_bytes())
            .with_context(|| format!("no certificate in {}", self.identity_path().display()))?;
        let key_pem = text
            .split_inclusive('\n')
            .skip_while(|line| !line.starts_with("-----BEGIN PRIVATE KEY"))
            .scan(false, |done, line| {
                if *done {
                    return None;
                }
                *done = line.starts_with("-----END PRIVATE KEY");
                Some(line)
            })
            .collect();
        Ok(TlsIdentity {
            key,
            key_pem,
            certificate,
        })
    }

    pub fn save_tls_identity(&self, key_pem: &str, certificate: &CertificateDer<'_>) -> Result<()> {
        let certificate_pem = pem_encode("CERTIFICATE", certificate);
        self.write_key_file(
            &self.identity_path(),
            &format!("{key_pem}{certificate_pem}"),
        )
    }

    /// The SM2 identity key, if one exists.
    pub fn sm2_key(&self) -> Result<Option<sm2::SecretKey>> {
        let path = self.sm2_path();
        if !path.exists() {
            return Ok(None);
        }
        let text = self.read_key_file(&path)?;
        let bytes = bagui_protocol::digest::unhex(text.trim())
            .with_context(|| format!("{} is not hex", path.display()))?;
        let key = sm2::SecretKey::from_slice(&bytes)
            .map_err(|_| anyhow::anyhow!("{} does not hold an SM2 key", path.display()))?;
        Ok(Some(key))
    }

    pub fn save_sm2_key(&self, key: &sm2::SecretKey) -> Result<()> {
        self.write_key_file(
            &self.sm2_path(),
            &format!("{}\n", digest::hex(&key.to_bytes())),
        )
    }

    pub fn ca_certificate(&self) -> Result<CertificateDer<'static>> {
        let text = read(&self.ca_path())?;
        CertificateDer::from_pem_slice(text.as_bytes())
            .with_context(|| format!("no certificate in {}", self.ca_path().display()))
    }

    pub fn save_ca_certificate(&self, certificate: &CertificateDer<'_>) -> Result<()> {
        write_atomic(
            &self.ca_path(),
            pem_encode("CERTIFICATE", certificate).as_bytes(),
            0o644,
        )
    }
}

/// PEM-encodes DER bytes.
pub fn pem_encode(label: &str, der: &[u8]) -> String {
    pem::encode_config(
        &pem::Pem::new(label, der),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_round_trips_through_rustls() {
        for length in [0usize, 1, 2, 3, 47, 48, 49, 300] {
            let der: Vec<u8> = (0..length).map(|i| (i * 7 + 3) as u8).collect();
            let pem = pem_encode("CERTIFICATE", &der);
            if length == 0 {
                continue;
            }
            let parsed = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
            assert_eq!(parsed.as_ref(), &der[..], "length {length}");
        }
    }

    #[test]
    fn identity_and_keys_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path().join("agent"));
        state.create().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let certificate = rcgen::CertificateParams::new(vec!["x".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        state
            .save_tls_identity(&key.serialize_pem(), certificate.der())
            .unwrap();
        let identity = state.tls_identity().unwrap();
        assert_eq!(identity.certificate, *certificate.der());
        assert_eq!(identity.key_pem, key.serialize_pem());

        assert!(state.sm2_key().unwrap().is_none());
        let sm2_key = <sm2::SecretKey as sm2::elliptic_curve::Generate>::try_generate().unwrap();
        state.save_sm2_key(&sm2_key).unwrap();
        assert_eq!(
            state.sm2_key().unwrap().unwrap().to_bytes(),
            sm2_key.to_bytes()
        );

        std::fs::write(dir.path().join("agent/sm2.key"), "not hex\n").unwrap();
        assert!(state.sm2_key().is_err());
        std::fs::write(dir.path().join("agent/identity.pem"), "-----BEGIN PRIV").unwrap();
        assert!(
            state.tls_identity().is_err(),
            "a truncated identity file is an error"
        );
    }

    fn passphrase(text: &str) -> KeyPassphrase {
        KeyPassphrase::new(text)
            .unwrap()
            .with_iterations(bagui_protocol::keyfile::MIN_ITERATIONS)
    }

    /// A self-signed TLS identity and a fresh SM2 key.
    fn keys() -> (rcgen::KeyPair, rcgen::Certificate, sm2::SecretKey) {
        let key = rcgen::KeyPair::generate().unwrap();
        let certificate = rcgen::CertificateParams::new(vec!["x".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let sm2_key = <sm2::SecretKey as sm2::elliptic_curve::Generate>::try_generate().unwrap();
        (key, certificate, sm2_key)
    }

    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    /// Neither key file holds a PEM key or the SM2 key's bytes (hex or raw).
    fn assert_no_plain_keys(state: &StateDir, key_pem: &str, sm2_key: &sm2::SecretKey) {
        let sm2_bytes = sm2_key.to_bytes();
        let sm2_hex = digest::hex(&sm2_bytes);
        let key_base64 = key_pem.lines().nth(1).unwrap();
        for path in [state.identity_path(), state.sm2_path()] {
            let bytes = std::fs::read(&path).unwrap();
            let text = String::from_utf8_lossy(&bytes);
            assert!(SealedKey::is_sealed(&text), "{}", path.display());
            assert!(!text.contains("PRIVATE KEY"), "{}", path.display());
            assert!(!text.contains("CERTIFICATE"), "{}", path.display());
            assert!(!text.contains(key_base64), "{}", path.display());
            assert!(
                !text.to_lowercase().contains(&sm2_hex),
                "{}",
                path.display()
            );
            assert!(
                !bytes.windows(sm2_bytes.len()).any(|w| w == &sm2_bytes[..]),
                "{}",
                path.display()
            );
            assert_eq!(mode(&path), 0o600, "{}", path.display());
        }
    }

    #[test]
    fn encrypted_keys_round_trip_and_need_their_passphrase() {
        let dir = tempfile::tempdir().unwrap();
        let plain = StateDir::new(dir.path().join("agent"));
        plain.create().unwrap();
        let state = plain
            .clone()
            .with_key_passphrase(passphrase("县乡 passphrase"));
        assert!(state.has_key_passphrase() && !plain.has_key_passphrase());
        let (key, certificate, sm2_key) = keys();
        state
            .save_tls_identity(&key.serialize_pem(), certificate.der())
            .unwrap();
        state.save_sm2_key(&sm2_key).unwrap();
        assert_no_plain_keys(&state, &key.serialize_pem(), &sm2_key);

        let identity = state.tls_identity().unwrap();
        assert_eq!(identity.certificate, *certificate.der());
        assert_eq!(identity.key_pem, key.serialize_pem());
        assert_eq!(
            state.sm2_key().unwrap().unwrap().to_bytes(),
            sm2_key.to_bytes()
        );
        // Another process with the passphrase (no cached key) reads them too.
        let again = plain
            .clone()
            .with_key_passphrase(passphrase("县乡 passphrase"));
        assert_eq!(again.tls_identity().unwrap().key_pem, key.serialize_pem());
        assert_eq!(again.encrypt_plaintext_keys().unwrap(), 0);

        // A wrong passphrase opens nothing.
        let wrong = plain.clone().with_key_passphrase(passphrase("wrong"));
        for error in [
            wrong.tls_identity().unwrap_err(),
            wrong.sm2_key().unwrap_err(),
        ] {
            assert!(
                format!("{error:#}").contains("wrong passphrase"),
                "{error:#}"
            );
        }
        // No passphrase: the clear error, from reads and from the start-time check.
        for error in [
            plain.tls_identity().unwrap_err(),
            plain.sm2_key().unwrap_err(),
            plain.encrypt_plaintext_keys().unwrap_err(),
        ] {
            let message = format!("{error:#}");
            assert!(
                message.contains(
                    "the identity keys are encrypted: set [identity] key_passphrase_file"
                ),
                "{message}"
            );
        }
    }

    #[test]
    fn plaintext_keys_are_encrypted_when_a_passphrase_appears() {
        let dir = tempfile::tempdir().unwrap();
        let plain = StateDir::new(dir.path().join("agent"));
        plain.create().unwrap();
        let (key, certificate, sm2_key) = keys();
        plain
            .save_tls_identity(&key.serialize_pem(), certificate.der())
            .unwrap();
        plain.save_sm2_key(&sm2_key).unwrap();
        assert!(
            std::fs::read_to_string(plain.identity_path())
                .unwrap()
                .contains("PRIVATE KEY")
        );
        assert_eq!(plain.encrypt_plaintext_keys().unwrap(), 0);

        let state = plain.clone().with_key_passphrase(passphrase("pass"));
        // Plaintext keys are still read before the migration.
        assert_eq!(state.tls_identity().unwrap().key_pem, key.serialize_pem());
        assert_eq!(state.encrypt_plaintext_keys().unwrap(), 2);
        assert_no_plain_keys(&state, &key.serialize_pem(), &sm2_key);
        assert_eq!(state.encrypt_plaintext_keys().unwrap(), 0);
        assert_eq!(state.tls_identity().unwrap().key_pem, key.serialize_pem());
        assert_eq!(
            state.sm2_key().unwrap().unwrap().to_bytes(),
            sm2_key.to_bytes()
        );
        assert!(plain.tls_identity().is_err());

        // Only the keys that exist are migrated (a state dir before its first join).
        let fresh = StateDir::new(dir.path().join("fresh")).with_key_passphrase(passphrase("pass"));
        fresh.create().unwrap();
        assert_eq!(fresh.encrypt_plaintext_keys().unwrap(), 0);
        assert!(fresh.sm2_key().unwrap().is_none());
    }

    #[test]
    fn passphrase_files_give_their_first_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent-key.pass");
        std::fs::write(&path, "secret line\nignored\n").unwrap();
        let state = StateDir::new(dir.path().join("agent"))
            .with_key_passphrase_file(&path)
            .unwrap();
        state.create().unwrap();
        state.save_sm2_key(&keys().2).unwrap();
        let by_hand = StateDir::new(dir.path().join("agent"))
            .with_key_passphrase(KeyPassphrase::new("secret line").unwrap());
        assert!(by_hand.sm2_key().unwrap().is_some());
        std::fs::write(&path, "\n").unwrap();
        assert!(
            StateDir::new(dir.path())
                .with_key_passphrase_file(&path)
                .is_err()
        );
        assert!(
            StateDir::new(dir.path())
                .with_key_passphrase_file(&dir.path().join("missing"))
                .is_err()
        );
    }
}
