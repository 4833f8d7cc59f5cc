//! The control plane's data directory: what `init` creates and every other command reads.
//!
//! ```text
//! DIR/ca.crt            CA certificate (PEM); agents pin its SM3 digest
//! DIR/ca.key            CA private key (0600): PKCS#8 PEM, or after `init --protect-ca-key`
//!                       a JSON [`SealedKey`] (SM4-CCM under PBKDF2-HMAC-SM3 of a passphrase)
//! DIR/server.crt        server certificate chain (leaf, CA) for QUIC and HTTPS
//! DIR/server.key        server private key (0600)
//! DIR/sm2.key           the control plane's SM2 key, hex scalar (0600); also signs the audit
//!                       log's checkpoints
//! DIR/audit-signing.pub the public half of sm2.key as SubjectPublicKeyInfo PEM (`PUBLIC
//!                       KEY`, id-ecPublicKey with the SM2 curve OID 1.2.156.10197.1.301),
//!                       for auditors verifying checkpoints (`audit verify --pubkey`)
//! DIR/admin.token       admin API credential (0600)
//! DIR/reset.key         QUIC stateless-reset and connection-id keys (0600), so agents notice a
//!                       restart at once
//! DIR/deployment.json   advertised address, certificate names, server certificate expiry
//! DIR/divisions.csv     the division tree (Guangxi's shipped tree by default)
//! DIR/store/            the embedded store
//! DIR/run/api.json      while `run` runs: where its HTTP API listens
//! ```

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bagui_protocol::{CryptoProfile, digest};
use serde::{Deserialize, Serialize};

use crate::clock::Clock;
use crate::divisions::{Divisions, GUANGXI_CSV};
use crate::pki::{self, CertificateAuthority, SealedKey};
use crate::store::Store;

/// Server certificates live a year and are re-issued by `run` when 30 days remain.
pub const SERVER_CERT_LIFETIME: Duration = Duration::from_secs(365 * 86_400);
const SERVER_CERT_RENEW_BEFORE: Duration = Duration::from_secs(30 * 86_400);

/// `DIR/deployment.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Deployment {
    /// `HOST:PORT` agents connect to.
    pub advertise: String,
    /// Names (DNS or IP) in the server certificate.
    pub names: Vec<String>,
    pub server_cert_not_after_ms: u64,
    pub created_ms: u64,
    /// Chosen at `init`, never changed; absent in deployments made before profiles existed
    /// (which are `standard`).
    #[serde(default)]
    pub crypto_profile: CryptoProfile,
}

/// `DIR/run/api.json`, written by `run`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiInfo {
    /// `http://127.0.0.1:8080` or `https://…`.
    pub url: String,
    pub pid: u32,
    pub quic: String,
}

/// The data directory.
#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

/// The environment variable holding the CA key's passphrase.
pub const CA_PASSPHRASE_ENV: &str = "BAGUI_CA_PASSPHRASE";

static CA_PASSPHRASE_FILE: OnceLock<PathBuf> = OnceLock::new();
static CA_PASSPHRASE_CACHE: Mutex<Option<String>> = Mutex::new(None);

/// Where the CA key's passphrase comes from in this process (`--ca-passphrase-file`); set once,
/// by the CLI, before any [`DataDir`] is used.
pub fn set_ca_passphrase_file(path: PathBuf) {
    let _ = CA_PASSPHRASE_FILE.set(path);
}

/// The passphrase protecting the CA key, from (in order) `--ca-passphrase-file FILE` (its first
/// line), `BAGUI_CA_PASSPHRASE`, or a line read from standard input when it is a terminal.
/// The terminal prompt echoes what is typed: turning echo off needs `termios` calls this
/// crate cannot make without `unsafe`, so prefer the file or the variable on shared screens.
/// `confirm` asks twice (for `init`). Read once per process.
pub fn ca_passphrase(confirm: bool) -> Result<String> {
    let mut cache = CA_PASSPHRASE_CACHE
        .lock()
        .unwrap_or_else(|poison| poison.into_inner());
    if let Some(passphrase) = cache.as_ref() {
        return Ok(passphrase.clone());
    }
    let passphrase = if let Some(path) = CA_PASSPHRASE_FILE.get() {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the CA passphrase from {}", path.display()))?;
        text.lines().next().unwrap_or_default().to_owned()
    } else if let Ok(value) = std::env::var(CA_PASSPHRASE_ENV) {
        value
    } else if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        let read_line = |prompt: &str| -> Result<String> {
            eprint!("{prompt} (input is echoed): ");
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .context("reading the CA passphrase")?;
            Ok(line.trim_end_matches(['\r', '\n']).to_owned())
        };
        let first = read_line("CA key passphrase")?;
        if confirm && read_line("again")? != first {
            bail!("the passphrases differ");
        }
        first
    } else {
        bail!(
            "the CA key is passphrase-protected: give --ca-passphrase-file FILE, set \
             {CA_PASSPHRASE_ENV}, or run on a terminal to be asked"
        );
    };
    if passphrase.is_empty() {
        bail!("the CA passphrase is empty");
    }
    *cache = Some(passphrase.clone());
    Ok(passphrase)
}

/// Options of [`DataDir::init_with`].
#[derive(Debug, Clone, Default)]
pub struct InitOptions {
    /// Encrypt `ca.key` under this passphrase.
    pub ca_passphrase: Option<String>,
    /// The deployment's crypto profile (`standard` by default).
    pub crypto_profile: CryptoProfile,
}

/// Splits `HOST:PORT` (IPv6 in brackets) into host and port.
pub fn split_host_port(address: &str) -> Result<(String, u16)> {
    let (host, port) = address
        .rsplit_once(':')
        .with_context(|| format!("{address:?} is not HOST:PORT"))?;
    let port: u16 = port
        .parse()
        .with_context(|| format!("{address:?}: port {port:?} is not a number"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        bail!("{address:?} has no host");
    }
    Ok((host.to_owned(), port))
}

/// Writes a file readable only by its owner, atomically (temp file, fsync, rename).
pub fn write_private(path: &Path, contents: &[u8]) -> Result<()> {
    write_with_mode(path, contents, 0o600)
}

/// Writes a file atomically with the given mode.
pub fn write_with_mode(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    bagui_agent::state::write_atomic(path, contents, mode)
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

impl DataDir {
    pub fn new(root: impl Into<PathBuf>) -> DataDir {
        DataDir { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn ca_cert_path(&self) -> PathBuf {
        self.root.join("ca.crt")
    }
    fn ca_key_path(&self) -> PathBuf {
        self.root.join("ca.key")
    }
    fn server_cert_path(&self) -> PathBuf {
        self.root.join("server.crt")
    }
    fn server_key_path(&self) -> PathBuf {
        self.root.join("server.key")
    }
    fn sm2_key_path(&self) -> PathBuf {
        self.root.join("sm2.key")
    }
    pub fn audit_signing_pub_path(&self) -> PathBuf {
        self.root.join("audit-signing.pub")
    }
    pub fn admin_token_path(&self) -> PathBuf {
        self.root.join("admin.token")
    }
    fn reset_key_path(&self) -> PathBuf {
        self.root.join("reset.key")
    }
    fn deployment_path(&self) -> PathBuf {
        self.root.join("deployment.json")
    }
    fn divisions_path(&self) -> PathBuf {
        self.root.join("divisions.csv")
    }
    pub fn store_path(&self) -> PathBuf {
        self.root.join("store")
    }
    pub fn api_info_path(&self) -> PathBuf {
        self.root.join("run").join("api.json")
    }

    pub fn is_initialized(&self) -> bool {
        self.ca_cert_path().exists()
    }

    /// Creates a new deployment in this directory.
    pub fn init(
        &self,
        advertise: &str,
        extra_names: &[String],
        clock: &dyn Clock,
    ) -> Result<Deployment> {
        self.init_with(advertise, extra_names, clock, &InitOptions::default())
    }

    /// [`DataDir::init`] with options (a passphrase-protected CA key).
    pub fn init_with(
        &self,
        advertise: &str,
        extra_names: &[String],
        clock: &dyn Clock,
        options: &InitOptions,
    ) -> Result<Deployment> {
        if self.is_initialized() {
            bail!(
                "{} already holds a deployment (found {}); refusing to overwrite it",
                self.root.display(),
                self.ca_cert_path().display()
            );
        }
        let (host, _) = split_host_port(advertise)?;
        std::fs::create_dir_all(&self.root)
            .with_context(|| format!("creating {}", self.root.display()))?;
        let now = clock.now_ms();
        let mut names = vec![host];
        for name in extra_names {
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
        let (ca, ca_key) =
            CertificateAuthority::generate_for(options.crypto_profile, "Bagui deployment CA", now)
                .context("creating the CA")?;
        match &options.ca_passphrase {
            Some(passphrase) => {
                if passphrase.is_empty() {
                    bail!("the CA passphrase is empty");
                }
                let sealed = SealedKey::seal(
                    ca_key.as_bytes(),
                    passphrase.as_bytes(),
                    pki::SEALED_KEY_ITERATIONS,
                )?;
                write_private(&self.ca_key_path(), sealed.as_bytes())?;
            }
            None => write_private(&self.ca_key_path(), ca_key.as_bytes())?,
        }
        write_with_mode(&self.ca_cert_path(), ca.cert_pem().as_bytes(), 0o644)?;
        let deployment = Deployment {
            advertise: advertise.to_owned(),
            names,
            server_cert_not_after_ms: 0,
            created_ms: now,
            crypto_profile: options.crypto_profile,
        };
        let deployment = self.issue_server_cert(&ca, deployment, now)?;

        let sm2_secret = <sm2::SecretKey as sm2::elliptic_curve::Generate>::try_generate()
            .map_err(|error| anyhow::anyhow!("generating the SM2 key: {error}"))?;
        write_private(
            &self.sm2_key_path(),
            format!("{}\n", digest::hex(&sm2_secret.to_bytes())).as_bytes(),
        )?;
        {
            use sm2::pkcs8::EncodePublicKey;
            let public_pem = sm2_secret
                .public_key()
                .to_public_key_pem(sm2::pkcs8::LineEnding::LF)
                .map_err(|error| anyhow::anyhow!("encoding the SM2 public key: {error}"))?;
            write_with_mode(&self.audit_signing_pub_path(), public_pem.as_bytes(), 0o644)?;
        }
        let admin_token: [u8; 32] = rand::random();
        write_private(
            &self.admin_token_path(),
            format!("{}\n", digest::hex(&admin_token)).as_bytes(),
        )?;
        let reset_key: [u8; 64] = rand::random();
        write_private(&self.reset_key_path(), &reset_key)?;
        write_with_mode(&self.divisions_path(), GUANGXI_CSV.as_bytes(), 0o644)?;
        let store = Store::create(&self.store_path()).context("creating the store")?;
        // The region on-duty team (自治区运维值班): unrouted work orders land there.
        crate::dispatch::Dispatcher::open(
            store,
            std::sync::Arc::new(crate::divisions::Divisions::guangxi()),
            crate::dispatch::DispatchConfig::default(),
            std::sync::Arc::new(crate::clock::SystemClock),
            false,
        )
        .context("creating the region on-duty team")?;
        Ok(deployment)
    }

    fn issue_server_cert(
        &self,
        ca: &CertificateAuthority,
        mut deployment: Deployment,
        now: u64,
    ) -> Result<Deployment> {
        let issued = ca
            .issue_server(&deployment.names, now, SERVER_CERT_LIFETIME)
            .context("issuing the server certificate")?;
        write_private(&self.server_key_path(), issued.key_pem.as_bytes())?;
        let chain = format!("{}{}", issued.cert_pem, ca.cert_pem());
        write_with_mode(&self.server_cert_path(), chain.as_bytes(), 0o644)?;
        deployment.server_cert_not_after_ms = now + SERVER_CERT_LIFETIME.as_millis() as u64;
        write_with_mode(
            &self.deployment_path(),
            serde_json::to_string_pretty(&deployment)?.as_bytes(),
            0o644,
        )?;
        Ok(deployment)
    }

    pub fn deployment(&self) -> Result<Deployment> {
        if !self.is_initialized() {
            bail!(
                "{} is not a Bagui data directory (run `bagui-cp init --data-dir {} --advertise HOST:PORT`)",
                self.root.display(),
                self.root.display()
            );
        }
        let text = read(&self.deployment_path())?;
        serde_json::from_str(&text)
            .with_context(|| format!("parsing {}", self.deployment_path().display()))
    }

    /// The deployment's crypto profile, checked against the CA certificate's key.
    pub fn crypto_profile(&self) -> Result<CryptoProfile> {
        let recorded = self.deployment()?.crypto_profile;
        let certificate = pki::certs_from_pem(&read(&self.ca_cert_path())?)?
            .into_iter()
            .next()
            .context("no certificate in ca.crt")?;
        let of_ca = if bagui_smtls::cert::is_sm2_certificate(&certificate) {
            CryptoProfile::Shangmi
        } else {
            CryptoProfile::Standard
        };
        if of_ca != recorded {
            bail!(
                "{} records the {recorded} crypto profile but {} is a {of_ca} CA",
                self.deployment_path().display(),
                self.ca_cert_path().display()
            );
        }
        Ok(recorded)
    }

    /// Whether `ca.key` is passphrase-protected.
    pub fn ca_key_protected(&self) -> Result<bool> {
        Ok(SealedKey::is_sealed(&read(&self.ca_key_path())?))
    }

    /// The CA, with its key. A protected key is decrypted with [`ca_passphrase`].
    pub fn ca(&self) -> Result<CertificateAuthority> {
        let mut key = read(&self.ca_key_path())?;
        if SealedKey::is_sealed(&key) {
            let passphrase = ca_passphrase(false)?;
            let opened = SealedKey::open(&key, passphrase.as_bytes())
                .with_context(|| format!("decrypting {}", self.ca_key_path().display()))?;
            key = String::from_utf8(opened).with_context(|| {
                format!("{} does not hold a PEM key", self.ca_key_path().display())
            })?;
        }
        CertificateAuthority::load(&read(&self.ca_cert_path())?, &key).context("loading the CA")
    }

    /// `sm3:<hex>` of the CA certificate (no key needed).
    pub fn ca_fingerprint(&self) -> Result<String> {
        let certificate = pki::certs_from_pem(&read(&self.ca_cert_path())?)?
            .into_iter()
            .next()
            .context("no certificate in ca.crt")?;
        Ok(digest::sm3_tagged(&certificate))
    }

    /// The server certificate chain and key, re-issued first if it expires within 30 days.
    pub fn server_identity(
        &self,
        ca: &CertificateAuthority,
        clock: &dyn Clock,
    ) -> Result<(
        Vec<rustls_pki_types::CertificateDer<'static>>,
        rustls_pki_types::PrivateKeyDer<'static>,
    )> {
        let deployment = self.deployment()?;
        let now = clock.now_ms();
        if deployment.server_cert_not_after_ms < now + SERVER_CERT_RENEW_BEFORE.as_millis() as u64 {
            tracing::info!("server certificate expires soon; issuing a new one");
            self.issue_server_cert(ca, deployment, now)?;
        }
        let chain = pki::certs_from_pem(&read(&self.server_cert_path())?)?;
        let key = pki::key_der_from_pem(&read(&self.server_key_path())?)?;
        Ok((chain, key))
    }

    pub fn divisions(&self) -> Result<Divisions> {
        let path = self.divisions_path();
        Divisions::from_csv(&read(&path)?)
            .with_context(|| format!("loading divisions from {}", path.display()))
    }

    /// The control plane's SM2 public key, SEC1 uncompressed.
    pub fn sm2_public_key(&self) -> Result<Vec<u8>> {
        Ok(self.sm2_secret_key()?.public_key().to_sec1_bytes().to_vec())
    }

    /// The control plane's SM2 private key: opens the report bodies agents seal to it.
    pub fn sm2_secret_key(&self) -> Result<sm2::SecretKey> {
        let text = read(&self.sm2_key_path())?;
        let bytes = bagui_protocol::digest::unhex(text.trim()).context("sm2.key is not hex")?;
        sm2::SecretKey::from_slice(&bytes).map_err(|_| anyhow::anyhow!("sm2.key is not an SM2 key"))
    }

    /// The key audit checkpoints verify with: `audit-signing.pub`, or (deployments made
    /// before it existed) the public half of `sm2.key`.
    pub fn audit_verifying_key(&self) -> Result<sm2::dsa::VerifyingKey> {
        let path = self.audit_signing_pub_path();
        if path.exists() {
            return crate::audit::parse_public_key(&read(&path)?)
                .with_context(|| format!("reading {}", path.display()));
        }
        sm2::dsa::VerifyingKey::new(
            crate::audit::SM2_DISTID,
            self.sm2_secret_key()?.public_key(),
        )
        .map_err(|error| anyhow::anyhow!("the SM2 key: {error}"))
    }

    pub fn admin_token(&self) -> Result<String> {
        Ok(read(&self.admin_token_path())?.trim().to_owned())
    }

    pub fn reset_key(&self) -> Result<Vec<u8>> {
        let path = self.reset_key_path();
        let key = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        if key.len() < 40 {
            bail!("{} is too short to be a reset key", path.display());
        }
        Ok(key)
    }

    pub fn write_api_info(&self, info: &ApiInfo) -> Result<()> {
        let path = self.api_info_path();
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        write_with_mode(&path, serde_json::to_string_pretty(info)?.as_bytes(), 0o644)
    }

    pub fn api_info(&self) -> Result<ApiInfo> {
        let path = self.api_info_path();
        let text = read(&path)?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }

    pub fn remove_api_info(&self) {
        let _ = std::fs::remove_file(self.api_info_path());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn init_creates_everything_with_private_keys_private() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::new(dir.path().join("cp"));
        let clock = ManualClock::new();
        let deployment = data
            .init("cp.gxzf.example:7443", &["10.0.0.5".into()], clock.as_ref())
            .unwrap();
        assert_eq!(deployment.names, ["cp.gxzf.example", "10.0.0.5"]);
        for private in [
            "ca.key",
            "server.key",
            "sm2.key",
            "admin.token",
            "reset.key",
        ] {
            let mode = std::fs::metadata(dir.path().join("cp").join(private))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{private}");
        }
        assert_eq!(data.divisions().unwrap().len(), 18_091);
        assert_eq!(data.sm2_public_key().unwrap().len(), 65);
        assert_eq!(
            data.audit_verifying_key().unwrap().to_sec1_bytes().to_vec(),
            data.sm2_public_key().unwrap()
        );
        assert!(!data.ca_key_protected().unwrap());
        assert_eq!(data.admin_token().unwrap().len(), 64);
        let ca = data.ca().unwrap();
        let (chain, _) = data.server_identity(&ca, clock.as_ref()).unwrap();
        assert_eq!(chain.len(), 2);
        assert_eq!(chain[1], *ca.cert_der());
        let error = data
            .init("cp:7443", &[], clock.as_ref())
            .unwrap_err()
            .to_string();
        assert!(error.contains("refusing to overwrite"), "{error}");
    }

    #[test]
    fn a_shangmi_deployment_is_sm2_throughout_and_records_its_profile() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::new(dir.path());
        let clock = ManualClock::new();
        let options = InitOptions {
            crypto_profile: CryptoProfile::Shangmi,
            ..InitOptions::default()
        };
        let deployment = data
            .init_with(
                "127.0.0.1:7443",
                &["cp.example".into()],
                clock.as_ref(),
                &options,
            )
            .unwrap();
        assert_eq!(deployment.crypto_profile, CryptoProfile::Shangmi);
        assert_eq!(data.crypto_profile().unwrap(), CryptoProfile::Shangmi);
        let text = std::fs::read_to_string(dir.path().join("deployment.json")).unwrap();
        assert!(text.contains("\"crypto_profile\": \"shangmi\""), "{text}");
        let ca = data.ca().unwrap();
        assert_eq!(ca.profile(), CryptoProfile::Shangmi);
        assert!(ca.fingerprint().starts_with("sm3:"));
        let (chain, key) = data.server_identity(&ca, clock.as_ref()).unwrap();
        assert!(bagui_smtls::cert::is_sm2_certificate(&chain[0]));
        assert_eq!(chain[1], *ca.cert_der());
        bagui_smtls::provider::server_config(&[ca.cert_der().clone()], chain, key).unwrap();
        // Deployments from before profiles existed read as standard.
        let old: Deployment = serde_json::from_str(
            r#"{"advertise":"a:1","names":["a"],"server_cert_not_after_ms":1,"created_ms":1}"#,
        )
        .unwrap();
        assert_eq!(old.crypto_profile, CryptoProfile::Standard);
    }

    #[test]
    fn a_protected_ca_key_is_no_pem_and_needs_its_passphrase() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::new(dir.path());
        let options = InitOptions {
            ca_passphrase: Some("s3cret 口令".into()),
            ..InitOptions::default()
        };
        data.init_with("127.0.0.1:7443", &[], ManualClock::new().as_ref(), &options)
            .unwrap();
        let text = std::fs::read_to_string(dir.path().join("ca.key")).unwrap();
        assert!(!text.contains("PRIVATE KEY"), "{text}");
        assert!(data.ca_key_protected().unwrap());
        let fingerprint = data.ca_fingerprint().unwrap();
        // This process has no passphrase source yet: a clear error, not a PEM parse failure.
        if std::env::var_os(CA_PASSPHRASE_ENV).is_none()
            && !std::io::IsTerminal::is_terminal(&std::io::stdin())
        {
            let error = format!("{:#}", data.ca().unwrap_err());
            assert!(error.contains("passphrase"), "{error}");
        }
        *CA_PASSPHRASE_CACHE.lock().unwrap() = Some("wrong".into());
        let error = format!("{:#}", data.ca().unwrap_err());
        assert!(error.contains("wrong passphrase"), "{error}");
        *CA_PASSPHRASE_CACHE.lock().unwrap() = Some("s3cret 口令".into());
        assert_eq!(data.ca().unwrap().fingerprint(), fingerprint);
        *CA_PASSPHRASE_CACHE.lock().unwrap() = None;
    }

    #[test]
    fn server_certificate_is_renewed_when_close_to_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::new(dir.path());
        let clock = ManualClock::new();
        data.init("127.0.0.1:7443", &[], clock.as_ref()).unwrap();
        let ca = data.ca().unwrap();
        let before = data.deployment().unwrap().server_cert_not_after_ms;
        clock.advance(Duration::from_secs(340 * 86_400));
        data.server_identity(&ca, clock.as_ref()).unwrap();
        assert!(data.deployment().unwrap().server_cert_not_after_ms > before);
    }

    #[test]
    fn addresses_split() {
        assert_eq!(
            split_host_port("cp.example:7443").unwrap(),
            ("cp.example".into(), 7443)
        );
        assert_eq!(split_host_port("[::1]:7443").unwrap(), ("::1".into(), 7443));
        assert!(split_host_port("cp.example").is_err());
        assert!(split_host_port(":7443").is_err());
        assert!(split_host_port("cp:http").is_err());
    }
}
