//! The security collectors, wired together: file integrity monitoring (SM3, inotify) and the
//! baseline (等保2.0 checks). A protected file that changes runs the baseline at once, so a
//! township terminal whose `sshd_config` just started permitting root login is a failed check
//! at the control plane within seconds, not at the next hourly run.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bagui_plugins::fim::FimCollector;
use bagui_plugins::posture::PostureCollector;
use bagui_plugins::{CollectError, Collector, Output};
use bagui_protocol::assets::{POSTURE_REPORT, PostureReport};
use bagui_protocol::messages::payload;
use bagui_protocol::proof;

/// How often the baseline runner looks whether a run is due (or was asked for).
const POSTURE_TICK: Duration = Duration::from_secs(1);

/// Runs the baseline every `interval`, and at the next tick after [`PostureRunner::run_soon`].
pub struct PostureRunner {
    inner: PostureCollector,
    /// Signs each report with the agent's SM2 identity key (agent id, key).
    signer: Option<(String, sm2::SecretKey)>,
    interval: Duration,
    last_run: Mutex<Option<Instant>>,
    asked: AtomicBool,
    /// The last tick ran the baseline (so `committed` concerns it).
    ran: AtomicBool,
}

impl std::fmt::Debug for PostureRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostureRunner")
            .field("interval", &self.interval)
            .finish_non_exhaustive()
    }
}

impl PostureRunner {
    pub fn new(
        inner: PostureCollector,
        interval: Duration,
        signer: Option<(String, sm2::SecretKey)>,
    ) -> PostureRunner {
        PostureRunner {
            inner,
            signer,
            interval,
            last_run: Mutex::new(None),
            asked: AtomicBool::new(false),
            ran: AtomicBool::new(false),
        }
    }

    /// Run the baseline at the next tick (a protected file changed).
    pub fn run_soon(&self) {
        self.asked.store(true, Ordering::SeqCst);
    }

    fn due(&self) -> bool {
        let mut last = self
            .last_run
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let asked = self.asked.swap(false, Ordering::SeqCst);
        let due = asked || last.is_none_or(|at| at.elapsed() >= self.interval);
        if due {
            *last = Some(Instant::now());
        }
        due
    }
}

impl Collector for PostureRunner {
    fn name(&self) -> &'static str {
        "posture"
    }

    fn interval(&self) -> Duration {
        POSTURE_TICK
    }

    fn deadline(&self) -> Duration {
        self.inner.deadline()
    }

    fn is_due(&self) -> bool {
        self.asked.load(Ordering::SeqCst)
            || self
                .last_run
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .is_none_or(|at| at.elapsed() >= self.interval)
    }

    fn collect(&self, now_ms: u64) -> Result<Vec<Output>, CollectError> {
        if !self.due() {
            self.ran.store(false, Ordering::SeqCst);
            return Ok(Vec::new());
        }
        self.ran.store(true, Ordering::SeqCst);
        let mut outputs = self.inner.collect(now_ms)?;
        if let Some((agent_id, key)) = &self.signer {
            for output in &mut outputs {
                if output.kind == POSTURE_REPORT {
                    output.body = sign_report(agent_id, key, &output.body)?;
                }
            }
        }
        Ok(outputs)
    }

    fn committed(&self) {
        if self.ran.load(Ordering::SeqCst) {
            self.inner.committed();
        }
    }

    fn request_full(&self) {
        self.inner.request_full();
        self.run_soon();
    }
}

/// Re-encodes a posture report with the agent's SM2 signature over its transcript.
fn sign_report(agent_id: &str, key: &sm2::SecretKey, body: &[u8]) -> Result<Vec<u8>, CollectError> {
    use sm2::dsa::signature::Signer;
    let mut report: PostureReport = payload::decode(body)
        .map_err(|error| CollectError::Other(format!("posture report: {error}")))?;
    let signing_key = sm2::dsa::SigningKey::new(proof::SM2_DISTID, key)
        .map_err(|error| CollectError::Other(format!("SM2 key: {error}")))?;
    let signature: sm2::dsa::Signature =
        signing_key.sign(&proof::posture_transcript(agent_id, &report));
    report.signature = serde_bytes::ByteBuf::from(signature.to_bytes().to_vec());
    Ok(payload::encode(&report))
}

/// File integrity monitoring that also asks the baseline to run when files change.
pub struct FimRunner {
    inner: FimCollector,
    posture: Option<Arc<PostureRunner>>,
}

impl std::fmt::Debug for FimRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FimRunner").finish_non_exhaustive()
    }
}

impl FimRunner {
    pub fn new(inner: FimCollector, posture: Option<Arc<PostureRunner>>) -> FimRunner {
        FimRunner { inner, posture }
    }
}

impl Collector for FimRunner {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn interval(&self) -> Duration {
        self.inner.interval()
    }

    fn deadline(&self) -> Duration {
        self.inner.deadline()
    }

    fn is_due(&self) -> bool {
        self.inner.is_due()
    }

    fn collect(&self, now_ms: u64) -> Result<Vec<Output>, CollectError> {
        let outputs = self.inner.collect(now_ms)?;
        if !outputs.is_empty()
            && let Some(posture) = &self.posture
        {
            posture.run_soon();
        }
        Ok(outputs)
    }

    fn committed(&self) {
        self.inner.committed();
    }

    fn request_full(&self) {
        self.inner.request_full();
    }
}
