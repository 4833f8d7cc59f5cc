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

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
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

/// The state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    pub fn new(root: impl Into<PathBuf>) -> StateDir {
        StateDir { root: root.into() }
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
        let text = read(&self.identity_path())?;
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
        write_atomic(
            &self.identity_path(),
            format!("{key_pem}{certificate_pem}").as_bytes(),
            0o600,
        )
    }

    /// The SM2 identity key, if one exists.
    pub fn sm2_key(&self) -> Result<Option<sm2::SecretKey>> {
        let path = self.sm2_path();
        if !path.exists() {
            return Ok(None);
        }
        let text = read(&path)?;
        let bytes = bagui_protocol::digest::unhex(text.trim())
            .with_context(|| format!("{} is not hex", path.display()))?;
        let key = sm2::SecretKey::from_slice(&bytes)
            .map_err(|_| anyhow::anyhow!("{} does not hold an SM2 key", path.display()))?;
        Ok(Some(key))
    }

    pub fn save_sm2_key(&self, key: &sm2::SecretKey) -> Result<()> {
        write_atomic(
            &self.sm2_path(),
            format!("{}\n", digest::hex(&key.to_bytes())).as_bytes(),
            0o600,
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
}
