//! Append-only audit log, chained with SM3.
//!
//! Every operator action, every enrollment decision and every command sent to an agent is
//! appended here. Each entry carries the SM3 digest of the previous one, so removing or
//! editing an entry breaks the chain and [`verify`] finds the first broken link. (Periodic SM2
//! signatures over the chain head come with the posture issue.)

use std::sync::{Arc, Mutex};

use bagui_protocol::digest;

use crate::clock::Clock;
use crate::store::{AuditEntry, Store, StoreError};

const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Appends audit entries.
#[derive(Debug, Clone)]
pub struct Audit {
    store: Store,
    clock: Arc<dyn Clock>,
    /// (next seq, hash of the last entry); the lock also serialises appends.
    head: Arc<Mutex<(u64, String)>>,
}

/// The chain is broken.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit entry {seq}: {reason}")]
    Broken { seq: u64, reason: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn entry_hash(entry: &AuditEntry) -> String {
    let mut unhashed = entry.clone();
    unhashed.hash.clear();
    // Encoding a struct of strings and integers cannot fail.
    let bytes = rmp_serde::to_vec_named(&unhashed).unwrap_or_default();
    digest::hex(&digest::sm3(&bytes))
}

impl Audit {
    pub fn new(store: Store, clock: Arc<dyn Clock>) -> Result<Audit, StoreError> {
        let head = match store.last_audit()? {
            Some(last) => (last.seq + 1, last.hash),
            None => (1, GENESIS.to_owned()),
        };
        Ok(Audit {
            store,
            clock,
            head: Arc::new(Mutex::new(head)),
        })
    }

    /// Appends one entry. It becomes durable with the store's next flush, which every caller
    /// that changes state performs before answering.
    pub fn record(
        &self,
        actor: &str,
        action: &str,
        target: &str,
        detail: impl Into<String>,
    ) -> Result<AuditEntry, StoreError> {
        let mut head = self
            .head
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let mut entry = AuditEntry {
            seq: head.0,
            time_ms: self.clock.now_ms(),
            actor: actor.to_owned(),
            action: action.to_owned(),
            target: target.to_owned(),
            detail: detail.into(),
            prev_hash: head.1.clone(),
            hash: String::new(),
        };
        entry.hash = entry_hash(&entry);
        self.store.put_audit(&entry)?;
        *head = (entry.seq + 1, entry.hash.clone());
        Ok(entry)
    }
}

/// Walks the whole chain; returns the number of entries if it is intact.
pub fn verify(store: &Store) -> Result<u64, AuditError> {
    let mut expected_prev = GENESIS.to_owned();
    let mut expected_seq = 1;
    let mut after = 0;
    loop {
        let entries = store.audit_entries(after, 1024)?;
        if entries.is_empty() {
            return Ok(expected_seq - 1);
        }
        for entry in entries {
            if entry.seq != expected_seq {
                return Err(AuditError::Broken {
                    seq: entry.seq,
                    reason: format!("expected entry {expected_seq} (an entry is missing)"),
                });
            }
            if entry.prev_hash != expected_prev {
                return Err(AuditError::Broken {
                    seq: entry.seq,
                    reason: "does not chain to the previous entry".into(),
                });
            }
            if entry_hash(&entry) != entry.hash {
                return Err(AuditError::Broken {
                    seq: entry.seq,
                    reason: "content does not match its hash (edited)".into(),
                });
            }
            expected_prev = entry.hash.clone();
            expected_seq += 1;
            after = entry.seq;
        }
    }
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
}
