//! Append-only audit log, chained with SM3 and checkpointed with SM2.
//!
//! Every operator action, every enrollment decision and every command sent to an agent is
//! appended here. Each entry carries the SM3 digest of the previous one, so removing or
//! editing an entry breaks the chain and [`verify`] finds the first broken link.
//!
//! ## Checkpoints
//!
//! The chain alone proves nothing against someone who rewrites the whole tail and recomputes
//! the hashes. So every [`AuditConfig::checkpoint_every`] entries, at least every
//! `checkpoint_interval` while entries are being added, and at clean shutdown, the control
//! plane appends a *checkpoint entry* signed with its SM2 key (`DATA_DIR/sm2.key`; the public
//! half is `DATA_DIR/audit-signing.pub`, made by `init`):
//!
//! ```text
//! actor  = "control-plane"
//! action = "audit.checkpoint"
//! target = "<seq of the entry it covers>"
//! detail = "sm2 seq=<seq> hash=<hex SM3 chain hash of that entry> sig=<hex r||s, 64 bytes>"
//! ```
//!
//! The signature is SM2 (GB/T 32918, distinguishing ID `1234567812345678`, SM3 digest) over
//! the bytes of [`checkpoint_message`]: `"bagui audit checkpoint v1\n<seq>\n<hash>"`. The
//! checkpoint entry is itself a link of the chain, so a later checkpoint covers the earlier.
//! [`verify_signed`] checks the chain and every checkpoint's signature and names the first
//! bad entry: undecodable or re-encoded bytes (`decode`), a gap or a moved entry
//! (`sequence`), a broken link or edited content (`chain hash`), a bad checkpoint
//! (`signature`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bagui_protocol::digest;
use sm2::dsa::signature::{Signer, Verifier};

use crate::clock::Clock;
use crate::store::{AuditEntry, Store, StoreError};

const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The action of checkpoint entries.
pub const CHECKPOINT_ACTION: &str = "audit.checkpoint";
/// The actor of checkpoint entries.
pub const CHECKPOINT_ACTOR: &str = "control-plane";
/// The SM2 distinguishing ID checkpoints are signed with (the standard default).
pub const SM2_DISTID: &str = bagui_protocol::proof::SM2_DISTID;

/// When checkpoints are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditConfig {
    /// A checkpoint after this many entries since the last one.
    pub checkpoint_every: u64,
    /// A checkpoint at least this often while entries are being added.
    pub checkpoint_interval: Duration,
}

impl Default for AuditConfig {
    fn default() -> AuditConfig {
        AuditConfig {
            checkpoint_every: 1000,
            checkpoint_interval: Duration::from_secs(300),
        }
    }
}

/// The bytes a checkpoint signs: the chain head it covers.
pub fn checkpoint_message(seq: u64, hash: &str) -> Vec<u8> {
    format!("bagui audit checkpoint v1\n{seq}\n{hash}").into_bytes()
}

struct Signer2 {
    key: sm2::dsa::SigningKey,
    every: u64,
}

impl std::fmt::Debug for Signer2 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("every", &self.every)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct Head {
    next_seq: u64,
    hash: String,
    /// Entries appended after the last checkpoint.
    since_checkpoint: u64,
}

/// Appends audit entries.
#[derive(Debug, Clone)]
pub struct Audit {
    store: Store,
    clock: Arc<dyn Clock>,
    /// The lock also serialises appends.
    head: Arc<Mutex<Head>>,
    signer: Option<Arc<Signer2>>,
    appended: Arc<tokio::sync::Notify>,
}

/// What is wrong with an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The stored bytes do not decode, or are not the encoding the control plane wrote.
    Decode,
    /// An entry is missing or sits under the wrong key.
    Sequence,
    /// The entry does not chain to its predecessor or its content does not match its hash.
    ChainHash,
    /// A checkpoint is malformed, covers the wrong head or its SM2 signature does not verify.
    Signature,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Failure::Decode => "decode",
            Failure::Sequence => "sequence",
            Failure::ChainHash => "chain hash",
            Failure::Signature => "signature",
        })
    }
}

/// The chain is broken.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit entry {seq}: {failure}: {reason}")]
    Broken {
        seq: u64,
        failure: Failure,
        reason: String,
    },
    #[error("audit signing key: {0}")]
    Key(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What [`verify_signed`] found in an intact log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifySummary {
    pub entries: u64,
    pub checkpoints: u64,
    /// The seq covered by the last checkpoint (0: none).
    pub last_checkpoint_covers: u64,
    /// Entries after the last checkpoint, protected by the chain only.
    pub unsigned_tail: u64,
}

fn entry_hash(entry: &AuditEntry) -> String {
    let mut unhashed = entry.clone();
    unhashed.hash.clear();
    // Encoding a struct of strings and integers cannot fail.
    let bytes = rmp_serde::to_vec_named(&unhashed).unwrap_or_default();
    digest::hex(&digest::sm3(&bytes))
}

/// Parses a checkpoint's detail: `(covered seq, covered hash, signature bytes)`.
fn parse_checkpoint(detail: &str) -> Option<(u64, String, Vec<u8>)> {
    let mut words = detail.split(' ');
    if words.next()? != "sm2" {
        return None;
    }
    let (mut seq, mut hash, mut sig) = (None, None, None);
    for word in words {
        let (name, value) = word.split_once('=')?;
        match name {
            "seq" => seq = value.parse().ok(),
            "hash" => hash = Some(value.to_owned()),
            "sig" => sig = digest::unhex(value),
            _ => return None,
        }
    }
    Some((seq?, hash?, sig?))
}

impl Audit {
    pub fn new(store: Store, clock: Arc<dyn Clock>) -> Result<Audit, StoreError> {
        let head = match store.last_audit()? {
            Some(last) => Head {
                next_seq: last.seq + 1,
                hash: last.hash,
                // Counted by `with_checkpoints`, which knows how far back to look.
                since_checkpoint: 0,
            },
            None => Head {
                next_seq: 1,
                hash: GENESIS.to_owned(),
                since_checkpoint: 0,
            },
        };
        Ok(Audit {
            store,
            clock,
            head: Arc::new(Mutex::new(head)),
            signer: None,
            appended: Arc::new(tokio::sync::Notify::new()),
        })
    }

    /// Signs checkpoints with `key`, one every `every` entries (and whenever
    /// [`Audit::checkpoint`] is called).
    pub fn with_checkpoints(
        mut self,
        key: &sm2::SecretKey,
        every: u64,
    ) -> Result<Audit, AuditError> {
        let key = sm2::dsa::SigningKey::new(SM2_DISTID, key)
            .map_err(|error| AuditError::Key(error.to_string()))?;
        let every = every.max(1);
        // Entries since the last checkpoint (written by an earlier run, or offline by the
        // CLI): looks back at most `every` entries; an unreadable tail counts as due.
        let since_checkpoint = match self.store.audit_tail(every as usize) {
            Ok(tail) => tail
                .iter()
                .take_while(|entry| entry.action != CHECKPOINT_ACTION)
                .count() as u64,
            Err(_) => every,
        };
        self.head
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .since_checkpoint = since_checkpoint;
        self.signer = Some(Arc::new(Signer2 { key, every }));
        Ok(self)
    }

    /// Woken after every append (for the syslog exporter).
    pub fn appended(&self) -> Arc<tokio::sync::Notify> {
        self.appended.clone()
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    fn append(
        &self,
        head: &mut Head,
        actor: &str,
        action: &str,
        target: &str,
        detail: String,
    ) -> Result<AuditEntry, StoreError> {
        let mut entry = AuditEntry {
            seq: head.next_seq,
            time_ms: self.clock.now_ms(),
            actor: actor.to_owned(),
            action: action.to_owned(),
            target: target.to_owned(),
            detail,
            prev_hash: head.hash.clone(),
            hash: String::new(),
        };
        entry.hash = entry_hash(&entry);
        self.store.put_audit(&entry)?;
        head.next_seq = entry.seq + 1;
        head.hash = entry.hash.clone();
        Ok(entry)
    }

    fn append_checkpoint(
        &self,
        head: &mut Head,
        signer: &Signer2,
    ) -> Result<AuditEntry, StoreError> {
        let covered = head.next_seq - 1;
        let signature: sm2::dsa::Signature =
            signer.key.sign(&checkpoint_message(covered, &head.hash));
        let detail = format!(
            "sm2 seq={covered} hash={} sig={}",
            head.hash,
            digest::hex(&signature.to_bytes())
        );
        let entry = self.append(
            head,
            CHECKPOINT_ACTOR,
            CHECKPOINT_ACTION,
            &covered.to_string(),
            detail,
        )?;
        head.since_checkpoint = 0;
        Ok(entry)
    }

    /// Appends one entry, and a checkpoint after it when one is due. It becomes durable with
    /// the store's next flush, which every caller that changes state performs before
    /// answering.
    pub fn record(
        &self,
        actor: &str,
        action: &str,
        target: &str,
        detail: impl Into<String>,
    ) -> Result<AuditEntry, StoreError> {
        let entry = {
            let mut head = self
                .head
                .lock()
                .unwrap_or_else(|poison| poison.into_inner());
            let entry = self.append(&mut head, actor, action, target, detail.into())?;
            head.since_checkpoint += 1;
            if let Some(signer) = &self.signer
                && head.since_checkpoint >= signer.every
            {
                self.append_checkpoint(&mut head, signer)?;
            }
            entry
        };
        self.appended.notify_one();
        Ok(entry)
    }

    /// Appends a signed checkpoint if entries were added since the last one (and a signing
    /// key is set). Returns the checkpoint entry.
    pub fn checkpoint(&self) -> Result<Option<AuditEntry>, StoreError> {
        let Some(signer) = &self.signer else {
            return Ok(None);
        };
        let entry = {
            let mut head = self
                .head
                .lock()
                .unwrap_or_else(|poison| poison.into_inner());
            if head.since_checkpoint == 0 {
                return Ok(None);
            }
            self.append_checkpoint(&mut head, signer)?
        };
        self.appended.notify_one();
        Ok(Some(entry))
    }

    /// Writes a checkpoint every `interval` while entries are being added, until `stop`.
    pub async fn run_checkpoints(
        self,
        interval: Duration,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut tick = tokio::time::interval(interval.max(Duration::from_millis(10)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.wait_for(|stop| *stop) => return,
            }
            let audit = self.clone();
            match tokio::task::spawn_blocking(move || audit.checkpoint()).await {
                Ok(Ok(Some(entry))) => {
                    let _ = self.store.flush();
                    tracing::debug!(seq = entry.seq, "audit checkpoint");
                }
                Ok(Ok(None)) => {}
                Ok(Err(error)) => tracing::error!(%error, "audit checkpoint failed"),
                Err(error) => tracing::error!(%error, "audit checkpoint task failed"),
            }
        }
    }
}

fn broken(seq: u64, failure: Failure, reason: impl Into<String>) -> AuditError {
    AuditError::Broken {
        seq,
        failure,
        reason: reason.into(),
    }
}

/// Walks the whole chain; returns the number of entries if it is intact. Checkpoint
/// signatures are not checked (see [`verify_signed`]).
pub fn verify(store: &Store) -> Result<u64, AuditError> {
    Ok(walk(store, None)?.entries)
}

/// Walks the whole chain and checks every checkpoint's signature with `key`.
pub fn verify_signed(
    store: &Store,
    key: &sm2::dsa::VerifyingKey,
) -> Result<VerifySummary, AuditError> {
    walk(store, Some(key))
}

fn walk(store: &Store, key: Option<&sm2::dsa::VerifyingKey>) -> Result<VerifySummary, AuditError> {
    let mut summary = VerifySummary::default();
    let mut expected_prev = GENESIS.to_owned();
    let mut expected_seq = 1;
    let mut after = 0;
    loop {
        let records = store.audit_raw(after, 1024)?;
        if records.is_empty() {
            return Ok(summary);
        }
        for (seq, bytes) in records {
            if seq != expected_seq {
                return Err(broken(
                    seq,
                    Failure::Sequence,
                    format!("expected entry {expected_seq} (an entry is missing)"),
                ));
            }
            let entry: AuditEntry = rmp_serde::from_slice(&bytes).map_err(|error| {
                broken(
                    seq,
                    Failure::Decode,
                    format!("stored bytes do not decode ({error})"),
                )
            })?;
            if rmp_serde::to_vec_named(&entry).ok().as_deref() != Some(bytes.as_slice()) {
                return Err(broken(
                    seq,
                    Failure::Decode,
                    "stored bytes are not the encoding of the entry they decode to (altered)",
                ));
            }
            if entry.seq != seq {
                return Err(broken(
                    seq,
                    Failure::Sequence,
                    format!("the entry stored here says it is entry {}", entry.seq),
                ));
            }
            if entry.prev_hash != expected_prev {
                return Err(broken(
                    seq,
                    Failure::ChainHash,
                    "does not chain to the previous entry",
                ));
            }
            if entry_hash(&entry) != entry.hash {
                return Err(broken(
                    seq,
                    Failure::ChainHash,
                    "content does not match its hash (edited)",
                ));
            }
            if entry.action == CHECKPOINT_ACTION {
                let (covered, hash, signature) = parse_checkpoint(&entry.detail)
                    .ok_or_else(|| broken(seq, Failure::Signature, "malformed checkpoint"))?;
                if covered + 1 != seq || hash != entry.prev_hash {
                    return Err(broken(
                        seq,
                        Failure::Signature,
                        "checkpoint does not cover the entry before it",
                    ));
                }
                if let Some(key) = key {
                    let valid = sm2::dsa::Signature::try_from(signature.as_slice()).is_ok_and(
                        |signature| {
                            key.verify(&checkpoint_message(covered, &hash), &signature)
                                .is_ok()
                        },
                    );
                    if !valid {
                        return Err(broken(
                            seq,
                            Failure::Signature,
                            "checkpoint signature does not verify with the audit signing key",
                        ));
                    }
                }
                summary.checkpoints += 1;
                summary.last_checkpoint_covers = covered;
                summary.unsigned_tail = 0;
            } else {
                summary.unsigned_tail += 1;
            }
            summary.entries += 1;
            expected_prev = entry.hash;
            expected_seq += 1;
            after = seq;
        }
    }
}

/// Parses an audit signing public key: PEM (SubjectPublicKeyInfo, `PUBLIC KEY`) or hex SEC1.
pub fn parse_public_key(text: &str) -> Result<sm2::dsa::VerifyingKey, AuditError> {
    let text = text.trim();
    let public = if text.starts_with("-----BEGIN") {
        use sm2::pkcs8::DecodePublicKey;
        sm2::PublicKey::from_public_key_pem(text)
            .map_err(|error| AuditError::Key(format!("not an SM2 public key in PEM: {error}")))?
    } else {
        let bytes =
            digest::unhex(text).ok_or_else(|| AuditError::Key("neither PEM nor hex".into()))?;
        sm2::PublicKey::from_sec1_bytes(&bytes)
            .map_err(|_| AuditError::Key("not an SM2 public key (SEC1)".into()))?
    };
    sm2::dsa::VerifyingKey::new(SM2_DISTID, public)
        .map_err(|error| AuditError::Key(error.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    #[test]
    fn chain_verifies_and_detects_edits_and_gaps() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(dir.path()).unwrap();
        let audit = Audit::new(store.clone(), ManualClock::new()).unwrap();
        for index in 0..5 {
            audit
                .record("admin", "token.create", &format!("tok{index}"), "")
                .unwrap();
        }
        assert_eq!(verify(&store).unwrap(), 5);

        // A reopened log continues the same chain.
        let reopened = Audit::new(store.clone(), ManualClock::new()).unwrap();
        reopened
            .record("admin", "agent.revoke", "ag-1", "")
            .unwrap();
        assert_eq!(verify(&store).unwrap(), 6);

        let mut edited = store.audit_entries(2, 1).unwrap().remove(0);
        edited.target = "tok-forged".into();
        store.put_audit(&edited).unwrap();
        let error = verify(&store).unwrap_err().to_string();
        assert!(
            error.contains("entry 3") && error.contains("edited"),
            "{error}"
        );
    }

    fn signed_log(every: u64, entries: usize) -> (tempfile::TempDir, Store, sm2::SecretKey) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(dir.path()).unwrap();
        let key = <sm2::SecretKey as sm2::elliptic_curve::Generate>::try_generate().unwrap();
        let audit = Audit::new(store.clone(), ManualClock::new())
            .unwrap()
            .with_checkpoints(&key, every)
            .unwrap();
        for index in 0..entries {
            audit
                .record("admin", "token.create", &format!("tok{index}"), "详情")
                .unwrap();
        }
        (dir, store, key)
    }

    fn verifying(key: &sm2::SecretKey) -> sm2::dsa::VerifyingKey {
        sm2::dsa::VerifyingKey::new(SM2_DISTID, key.public_key()).unwrap()
    }

    #[test]
    fn checkpoints_are_written_every_n_entries_and_on_demand() {
        let (_dir, store, key) = signed_log(3, 7);
        // 3 entries, checkpoint, 3 entries, checkpoint, 1 entry.
        let summary = verify_signed(&store, &verifying(&key)).unwrap();
        assert_eq!(summary.entries, 9);
        assert_eq!(summary.checkpoints, 2);
        assert_eq!(summary.last_checkpoint_covers, 7);
        assert_eq!(summary.unsigned_tail, 1);
        let checkpoint = store.audit_entries(3, 1).unwrap().remove(0);
        assert_eq!(checkpoint.action, CHECKPOINT_ACTION);
        assert_eq!(checkpoint.target, "3");

        let audit = Audit::new(store.clone(), ManualClock::new())
            .unwrap()
            .with_checkpoints(&key, 3)
            .unwrap();
        let made = audit.checkpoint().unwrap().unwrap();
        assert_eq!(made.seq, 10);
        assert!(
            audit.checkpoint().unwrap().is_none(),
            "nothing new to cover"
        );
        let summary = verify_signed(&store, &verifying(&key)).unwrap();
        assert_eq!((summary.checkpoints, summary.unsigned_tail), (3, 0));
        // A reopened log counts the entries after its last checkpoint.
        audit.record("admin", "x", "y", "").unwrap();
        audit.record("admin", "x", "y", "").unwrap();
        let reopened = Audit::new(store.clone(), ManualClock::new())
            .unwrap()
            .with_checkpoints(&key, 3)
            .unwrap();
        reopened.record("admin", "x", "y", "").unwrap();
        assert_eq!(
            store.last_audit().unwrap().unwrap().action,
            CHECKPOINT_ACTION
        );
    }

    #[test]
    fn a_checkpoint_by_another_key_fails() {
        let (_dir, store, _key) = signed_log(2, 4);
        let other = <sm2::SecretKey as sm2::elliptic_curve::Generate>::try_generate().unwrap();
        let error = verify_signed(&store, &verifying(&other)).unwrap_err();
        assert!(
            matches!(
                error,
                AuditError::Broken {
                    seq: 3,
                    failure: Failure::Signature,
                    ..
                }
            ),
            "{error}"
        );
    }

    #[test]
    fn every_single_byte_flip_is_reported_at_its_entry() {
        let (_dir, store, key) = signed_log(2, 5);
        let key = verifying(&key);
        let records = store.audit_raw(0, 100).unwrap();
        for (seq, original) in &records {
            for index in 0..original.len() {
                for mask in [0x01u8, 0x80] {
                    let mut flipped = original.clone();
                    flipped[index] ^= mask;
                    store.rewrite_audit_raw(*seq, &flipped).unwrap();
                    match verify_signed(&store, &key) {
                        Err(AuditError::Broken { seq: bad, .. }) => assert_eq!(
                            bad, *seq,
                            "flip of byte {index} (mask {mask:#x}) in entry {seq}"
                        ),
                        other => panic!(
                            "flip of byte {index} (mask {mask:#x}) in entry {seq}: {other:?}"
                        ),
                    }
                }
            }
            store.rewrite_audit_raw(*seq, original).unwrap();
        }
        verify_signed(&store, &key).unwrap();
    }

    #[test]
    fn public_keys_parse_from_pem_and_hex() {
        use sm2::pkcs8::EncodePublicKey;
        let key = <sm2::SecretKey as sm2::elliptic_curve::Generate>::try_generate().unwrap();
        let pem = key
            .public_key()
            .to_public_key_pem(sm2::pkcs8::LineEnding::LF)
            .unwrap();
        let hex = digest::hex(&key.public_key().to_sec1_bytes());
        assert_eq!(
            parse_public_key(&pem).unwrap().to_sec1_bytes(),
            parse_public_key(&hex).unwrap().to_sec1_bytes()
        );
        assert!(parse_public_key("zz").is_err());
    }
}
