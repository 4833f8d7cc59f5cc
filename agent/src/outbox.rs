//! The durable outbox: every report is written here before it is sent and deleted only when
//! the control plane has acknowledged it.
//!
//! # Semantics
//!
//! Records are kept per lane, so a scan yields the highest-priority lane first and each lane
//! oldest (lowest sequence number) first. A record is on disk (synced) when [`Outbox::push`]
//! returns, and a sequence number, once handed out, is never handed out again, whatever
//! crashes happen: reusing one would make the control plane discard the new report as a
//! duplicate of the old.
//!
//! The outbox is bounded. Under pressure it drops the oldest record of the lowest-priority lane
//! that is not above the incoming record's lane; if only higher-priority records remain, the
//! incoming record itself is dropped. Every drop is counted per lane (persisted) and reported.
//! Lane, sequence and size stay outside the payload, so payloads can be encrypted at rest
//! without changing any of this.
//!
//! # Sealed at rest
//!
//! An outbox opened [`Outbox::with_encryption`] (the agent does so once it has joined and
//! holds the control plane's SM2 key) seals every body before it is written: SM4-CCM under a
//! data key wrapped with SM2 to the control plane (see [`bagui_protocol::sealed`]). The data
//! key lives only in this process's memory and is replaced at every start, every hour and
//! every 10,000 records, so nothing on disk — and no later agent process — can open a
//! buffered record; only the control plane can. Within the current key epoch the running
//! process could still decrypt its own recent records (it holds the key); there is no API
//! that does. A sealed record carries its cipher name (`"sm4-ccm/sm2"`); records written
//! before sealing, or by an outbox without a key, carry `""` and are sent as plaintext, so an
//! old outbox still drains. Lane, sequence, time, kind and size stay outside the seal (they
//! are authenticated by it), and the size the outbox accounts for is the sealed record's.
//!
//! # On disk
//!
//! A purpose-built append-only log (it replaced sled, whose page cache and threads cost the
//! agent ~21 MiB of its memory). Everything lives in `OUTBOX/log/`:
//!
//! ```text
//! lock                 held with an exclusive lock (flock) while an agent has the outbox open
//! 0000000001.seg       segments, appended to in order; the highest number is the open one
//! 0000000002.seg
//!
//! segment  = "BGOUTLG\x01" frame*                     (8-byte header; last byte = version)
//! frame    = magic[4] = BA 61 0B E5
//!            len u32 LE                                 (payload bytes, 1..=256 MiB)
//!            crc u32 LE                                 (CRC-32/IEEE of len bytes ++ payload)
//!            payload[len]
//! payload  = 1 lane u8  seq u64  created_ms u64  kind_len u16  kind  body   push
//!          | 4 lane u8  seq u64  created_ms u64  kind_len u16  kind
//!              cipher_len u8  cipher  sealed_body                           sealed push
//!          | 5 lane u8  seq u64  created_ms u64  kind_len u16  kind  sealed_seq u64
//!              cipher_len u8  cipher  sealed_body                      renumbered push
//!          | 2 lane u8  seq u64                                              remove (tombstone)
//!          | 3 next_seq u64  dropped u64 × 4 (security, state, inventory, metrics)   meta
//! ```
//!
//! All integers are little-endian. A segment is closed at 4 MiB and every segment starts with
//! a meta entry (a checkpoint of the high-water mark and the drop counters). Only an index
//! (`lane → seq → segment, offset, length`, ~30 bytes a record) is kept in memory; bodies are
//! read back from disk when sent, so a 64 MiB backlog does not cost 64 MiB of memory.
//!
//! Opening replays the segments in order: a push enters the index (a later copy of the same
//! record replaces an earlier one), a tombstone takes it out, the newest meta gives the drop
//! counters, and the high-water mark is the largest of every meta's `next_seq` and every
//! pushed `seq + 1`. An older sled outbox in `OUTBOX/` is not migrated (no release ever
//! shipped it); a warning says so.
//!
//! Space comes back two ways. A segment with no live record left is deleted — only from the
//! oldest end, because a tombstone refers to a record in its own or an older segment: deleting
//! in order can never resurrect a removed record. When dead bytes outweigh live ones (and a
//! slack of 8 MiB), the live records of the oldest segment are copied, frame for frame, to the
//! end of the log and synced; the segment is then dead and deleted. A crash in between leaves
//! two identical copies, and replay keeps the later one.
//!
//! # Why a crash loses nothing
//!
//! * A push is one write of `[tombstones of evicted records][meta with the drop counters][the
//!   record]`, then `fdatasync`, before `push` returns. The record carries its own sequence
//!   number, so the high-water mark is durable with the record that used it.
//! * [`Outbox::ensure_next_seq_above`] writes a meta entry and syncs it.
//! * A new segment is written (header and checkpoint), synced, and its directory synced before
//!   anything is appended to it; the newest segment is never deleted, and on every open a meta
//!   entry is appended to it. So the newest segment always holds the high-water mark (its
//!   checkpoint) or something higher (its pushes and metas): deleting older segments never
//!   lowers it.
//! * A crash in the middle of an append leaves a torn tail: a frame cut short or whose
//!   checksum fails, with no valid frame after it. Recovery cuts it off; it was never
//!   acknowledged to a caller (or it was an unsynced tombstone, whose record merely comes back
//!   and is de-duplicated by the control plane).
//! * Damage in the middle of a segment (bit rot) is reported and skipped: recovery resumes at
//!   the next valid frame (where the damaged frame's length points, else the next frame
//!   marker that starts a frame with a valid checksum). One bad record never stops the agent.
//!   A record found damaged later, when read for sending, is dropped and counted.
//! * Tombstones and drop counters are written without a sync of their own (the next push or
//!   [`Outbox::flush`] syncs them): losing one brings back a record the control plane already
//!   has, or a slightly low drop count.

use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bagui_protocol::messages::payload::OutboxDrops;
use bagui_protocol::sealed::{self, DataKey, Recipient, RecordContext, SealError};
use bagui_protocol::{Lane, LaneCounts, OutboxStats};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use tokio::sync::Notify;

mod crc;
mod format;
mod store;

use store::{NewRecord, Store};

/// Bytes counted per record on top of its kind and body: its framing on disk.
const RECORD_OVERHEAD: u64 = format::PUSH_OVERHEAD as u64;

/// An outbox operation failed.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("outbox: {context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("outbox at {path} is in use by another process (is the agent already running?)")]
    Locked { path: String },
    #[error("outbox {what} is corrupt: {message}")]
    Corrupt { what: String, message: String },
    /// A record could not be sealed (the system RNG failed): it is not written in clear.
    #[error("outbox: sealing a record: {0}")]
    Seal(#[from] SealError),
}

/// A stored record.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct OutboxRecord {
    pub kind: String,
    pub created_ms: u64,
    /// As stored: sealed to the control plane unless `cipher` is `""`.
    pub body: ByteBuf,
    /// `""`: `body` is plaintext; else how it is sealed (see [`bagui_protocol::sealed`]).
    pub cipher: String,
    /// The seq the seal is bound to, when the record was renumbered ([`Outbox::renumber`]);
    /// 0: its own.
    pub sealed_seq: u64,
}

impl OutboxRecord {
    #[cfg(test)]
    fn size(kind: &str, body: &[u8]) -> u64 {
        OutboxRecord::stored_size(kind, "", body.len())
    }

    /// The bytes a record takes on disk (what the limit counts): framing, kind, cipher name,
    /// and the body as stored.
    fn stored_size(kind: &str, cipher: &str, body_len: usize) -> u64 {
        let cipher = if cipher.is_empty() {
            0
        } else {
            1 + cipher.len() as u64
        };
        kind.len() as u64 + cipher + body_len as u64 + RECORD_OVERHEAD
    }
}

/// A data key is replaced after this many records...
const KEY_MAX_RECORDS: u64 = 10_000;
/// ... or this long, whichever comes first (and at every start: it is never stored).
const KEY_MAX_AGE: Duration = Duration::from_secs(3600);

/// Seals bodies to the control plane; holds the current data key, in memory only.
#[derive(Debug)]
struct Sealer {
    recipient: Recipient,
    current: Option<(DataKey, Instant)>,
}

impl Sealer {
    /// The data key to seal the next record with, replacing a worn or old one.
    fn key(&mut self) -> Result<&mut DataKey, SealError> {
        let fresh = |(key, made): &(DataKey, Instant)| {
            key.sealed() < KEY_MAX_RECORDS && made.elapsed() < KEY_MAX_AGE
        };
        if !self.current.as_ref().is_some_and(fresh) {
            // The old key is dropped (and overwritten) here: from now on, nothing can open
            // the records sealed under it but the control plane.
            self.current = None;
            self.current = Some((DataKey::generate(&self.recipient)?, Instant::now()));
        }
        Ok(&mut self.current.as_mut().expect("just set").0)
    }
}

/// A record read for sending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub lane: Lane,
    pub seq: u64,
    pub record: OutboxRecord,
}

/// What happened to a pushed record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pushed {
    /// Its sequence number, or `None` if it was itself dropped (outbox full of higher lanes).
    pub seq: Option<u64>,
    /// Older records dropped to make room.
    pub evicted: u64,
}

/// The store and what is only remembered in memory.
#[derive(Debug)]
struct State {
    store: Store,
    /// Dropped since the last drop notice.
    unreported: LaneCounts,
    /// The drop notice still in the outbox (its seq and the drops it reports), if any.
    pending_notice: Option<(u64, LaneCounts)>,
    /// Seals bodies before they are written; `None`: they are written in clear.
    sealer: Option<Sealer>,
}

impl State {
    /// Counts a dropped record, in the persisted counters and for the next notice.
    fn count_drop(&mut self, lane: Lane) -> Result<(), OutboxError> {
        let mut meta = self.store.meta();
        *meta.dropped.get_mut(lane) += 1;
        *self.unreported.get_mut(lane) += 1;
        self.store.set_meta(meta, false)
    }

    /// Takes drops the store made on its own (damaged records) into the next notice.
    fn absorb_lost(&mut self) {
        let lost = self.store.take_lost();
        for lane in Lane::ALL {
            *self.unreported.get_mut(lane) += lost.get(lane);
        }
    }

    fn total_bytes(&self) -> u64 {
        Lane::ALL.iter().map(|lane| self.store.bytes(*lane)).sum()
    }
}

/// Per-lane read positions of one session: the last sequence sent in each lane.
pub type Cursors = [Option<u64>; 4];

/// The outbox.
pub struct Outbox {
    state: Mutex<State>,
    limit_bytes: u64,
    /// Larger bodies are refused at push (they could never be sent in one frame).
    max_body_bytes: usize,
    notify: Notify,
}

/// Default largest body: the default frame limit less room for the report's other fields.
pub const DEFAULT_MAX_BODY: usize = bagui_protocol::DEFAULT_MAX_FRAME_LEN - 4096;

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Outbox {
    /// Opens (or creates) the outbox at `path`, holding at most `limit_bytes`.
    pub fn open(path: &Path, limit_bytes: u64) -> Result<Outbox, OutboxError> {
        Outbox::open_with_segments(path, limit_bytes, store::SEGMENT_TARGET)
    }

    fn open_with_segments(
        path: &Path,
        limit_bytes: u64,
        segment_bytes: u64,
    ) -> Result<Outbox, OutboxError> {
        let mut state = State {
            store: Store::open(path, segment_bytes)?,
            unreported: LaneCounts::default(),
            pending_notice: None,
            sealer: None,
        };
        state.absorb_lost();
        Ok(Outbox {
            state: Mutex::new(state),
            limit_bytes,
            max_body_bytes: DEFAULT_MAX_BODY,
            notify: Notify::new(),
        })
    }

    /// Like [`Outbox::open`], but waits up to `patience` for a previous holder's lock to go.
    /// The lock goes with the last handle to the previous [`Outbox`]; in an in-process restart
    /// (tests, the simulator) a task of the previous agent may still hold one for a moment.
    pub fn open_waiting(
        path: &Path,
        limit_bytes: u64,
        patience: std::time::Duration,
    ) -> Result<Outbox, OutboxError> {
        let deadline = std::time::Instant::now() + patience;
        loop {
            match Outbox::open(path, limit_bytes) {
                Err(OutboxError::Locked { .. }) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                result => return result,
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Sets the largest body accepted (the control plane's frame limit less some room). It
    /// applies to the body as sent: sealed, when sealing.
    pub fn with_max_body(mut self, bytes: usize) -> Outbox {
        self.max_body_bytes = bytes;
        self
    }

    /// Seals every body pushed from now on to `recipient` (the control plane's SM2 key).
    /// Records already stored stay as they are and are sent as they are.
    pub fn with_encryption(self, recipient: Recipient) -> Outbox {
        self.lock().sealer = Some(Sealer {
            recipient,
            current: None,
        });
        self
    }

    /// Whether pushed bodies are sealed.
    pub fn encrypts(&self) -> bool {
        self.lock().sealer.is_some()
    }

    /// Adds a record. It is on disk (synced) when this returns.
    pub fn push(
        &self,
        lane: Lane,
        kind: &str,
        created_ms: u64,
        body: &[u8],
    ) -> Result<Pushed, OutboxError> {
        let mut state = self.lock();
        let state = &mut *state;
        let (cipher, stored_len) = match &mut state.sealer {
            Some(sealer) => (sealed::SM4_CCM_SM2, sealer.key()?.sealed_len(body.len())),
            None => ("", body.len()),
        };
        let size = OutboxRecord::stored_size(kind, cipher, stored_len);
        let too_large = if cipher.is_empty() {
            false
        } else {
            body.len() > sealed::MAX_PLAINTEXT
        };
        if too_large
            || stored_len > self.max_body_bytes.min(format::MAX_BODY)
            || kind.len() > format::MAX_KIND
        {
            tracing::warn!(
                kind,
                bytes = stored_len,
                limit = self.max_body_bytes,
                "record too large for one frame; dropped"
            );
            state.count_drop(lane)?;
            return Ok(Pushed {
                seq: None,
                evicted: 0,
            });
        }
        let Some(victims) = self.plan_evictions(state, lane, size) else {
            // Only higher-priority records (or nothing big enough) stand in the way: the
            // incoming record is the one dropped.
            state.count_drop(lane)?;
            return Ok(Pushed {
                seq: None,
                evicted: 0,
            });
        };
        let seq = state.store.meta().next_seq;
        let mut dropped = state.store.meta().dropped;
        for (victim, _) in &victims {
            *dropped.get_mut(*victim) += 1;
        }
        let sealed_body = match &mut state.sealer {
            Some(sealer) => {
                let context = RecordContext {
                    lane,
                    seq,
                    created_ms,
                    kind,
                };
                Some(sealer.key()?.seal(&context, body)?)
            }
            None => None,
        };
        let record = NewRecord {
            lane,
            seq,
            created_ms,
            kind,
            cipher,
            body: sealed_body.as_deref().unwrap_or(body),
        };
        state.store.push(record, &victims, dropped)?;
        for (victim, _) in &victims {
            *state.unreported.get_mut(*victim) += 1;
        }
        self.notify.notify_one();
        Ok(Pushed {
            seq: Some(seq),
            evicted: victims.len() as u64,
        })
    }

    /// Gives a record the next sequence number, because the control plane holds a different
    /// report under its own (see [`bagui_protocol::Ack::renumber`]: this agent's numbering
    /// went back, its state restored from a backup). Its body is not touched — no process
    /// but the one that sealed it could — so the record keeps the seq its seal is bound to.
    /// Returns the new number, or `None` if the record is gone.
    pub fn renumber(&self, lane: Lane, seq: u64) -> Result<Option<u64>, OutboxError> {
        let mut state = self.lock();
        let new_seq = state.store.meta().next_seq;
        if !state.store.renumber(lane, seq, new_seq)? {
            return Ok(None);
        }
        self.notify.notify_one();
        Ok(Some(new_seq))
    }

    /// Drops a stored record that can never be delivered, counting it like any other drop.
    pub fn discard(&self, lane: Lane, seq: u64) -> Result<(), OutboxError> {
        let mut state = self.lock();
        state.store.remove(lane, seq)?;
        state.count_drop(lane)
    }

    /// The records to evict so that `size` more bytes of `lane` fit: lowest lane first, oldest
    /// first, never a lane above `lane`. `None` if they cannot be made to fit.
    fn plan_evictions(&self, state: &State, lane: Lane, size: u64) -> Option<Vec<(Lane, u64)>> {
        if size > self.limit_bytes {
            return None;
        }
        let mut excess = (state.total_bytes() + size).saturating_sub(self.limit_bytes);
        let mut victims = Vec::new();
        for victim in Lane::ALL.iter().rev().filter(|victim| **victim >= lane) {
            for (seq, old_size) in state.store.oldest(*victim) {
                if excess == 0 {
                    break;
                }
                excess = excess.saturating_sub(old_size);
                victims.push((*victim, seq));
            }
        }
        (excess == 0).then_some(victims)
    }

    /// Waits until a record is pushed (or a wake-up is pending).
    pub async fn pushed(&self) {
        self.notify.notified().await
    }

    /// Makes everything written so far durable. Pushes already are when they return; this
    /// syncs tombstones and drop counters (before sending, and at shutdown).
    pub async fn flush(&self) -> Result<(), OutboxError> {
        self.sync()
    }

    fn sync(&self) -> Result<(), OutboxError> {
        self.lock().store.sync()
    }

    /// Up to `max` records not yet sent in this session, highest lane first, oldest first;
    /// advances `cursors` past them. A record whose bytes on disk turn out to be damaged is
    /// dropped (logged and counted), not returned, so it cannot block the queue.
    pub fn next_batch(
        &self,
        cursors: &mut Cursors,
        max: usize,
    ) -> Result<Vec<Pending>, OutboxError> {
        let mut state = self.lock();
        let mut out = Vec::new();
        let mut damaged = Vec::new();
        for lane in Lane::ALL {
            let cursor = &mut cursors[lane as usize];
            for seq in state.store.seqs_after(lane, *cursor) {
                if out.len() >= max {
                    break;
                }
                *cursor = Some(seq);
                match state.store.read(lane, seq) {
                    Ok(Some(record)) => out.push(Pending { lane, seq, record }),
                    Ok(None) => {}
                    Err(OutboxError::Corrupt { what, message }) => {
                        tracing::error!(%what, %message, ?lane, seq, "outbox record damaged on disk; dropped");
                        damaged.push((lane, seq));
                    }
                    Err(error) => return Err(error),
                }
            }
        }
        for (lane, seq) in damaged {
            state.store.lose(lane, seq)?;
        }
        state.absorb_lost();
        Ok(out)
    }

    /// Deletes an acknowledged record (no-op if it was already dropped).
    pub fn remove(&self, lane: Lane, seq: u64) -> Result<(), OutboxError> {
        let mut state = self.lock();
        let removed = state.store.remove(lane, seq).map(drop);
        state.absorb_lost();
        removed
    }

    /// Never hand out a sequence number at or below `seq` (the control plane has stored it).
    pub fn ensure_next_seq_above(&self, seq: u64) -> Result<(), OutboxError> {
        let mut state = self.lock();
        if seq >= u64::MAX / 2 {
            tracing::error!(
                seq,
                "ignoring an absurd stored sequence number from the control plane"
            );
            return Ok(());
        }
        let mut meta = state.store.meta();
        if meta.next_seq <= seq {
            tracing::warn!(
                next_seq = meta.next_seq,
                stored = seq,
                "the control plane holds sequence numbers this outbox would reuse; skipping ahead"
            );
            meta.next_seq = seq + 1;
            state.store.set_meta(meta, true)?;
        }
        Ok(())
    }

    pub fn next_seq(&self) -> u64 {
        self.lock().store.meta().next_seq
    }

    pub fn limit_bytes(&self) -> u64 {
        self.limit_bytes
    }

    pub fn stats(&self) -> OutboxStats {
        let state = self.lock();
        OutboxStats {
            records: Lane::ALL
                .iter()
                .map(|lane| state.store.records(*lane))
                .sum(),
            bytes: state.total_bytes(),
            dropped: state.store.meta().dropped,
        }
    }

    /// Records drops since the last notice as one `outbox_drops` report in the state lane.
    /// At most one notice waits in the outbox at a time: a newer notice replaces an unsent
    /// one and carries its counts, so notices cannot crowd out real state changes during a
    /// long outage. Returns the notice's sequence number, or `None` if nothing was dropped.
    pub fn push_drop_notice(&self, created_ms: u64) -> Result<Option<u64>, OutboxError> {
        let notice = {
            let mut state = self.lock();
            if state.unreported.total() == 0 {
                return Ok(None);
            }
            let mut dropped = std::mem::take(&mut state.unreported);
            if let Some((seq, carried)) = state.pending_notice.take()
                && state.store.remove(Lane::State, seq)?
            {
                for lane in Lane::ALL {
                    *dropped.get_mut(lane) += carried.get(lane);
                }
            }
            OutboxDrops {
                dropped,
                dropped_total: state.store.meta().dropped,
                limit_bytes: self.limit_bytes,
            }
        };
        let body = bagui_protocol::messages::payload::encode(&notice);
        let pushed = self.push(
            Lane::State,
            bagui_protocol::messages::payload::OUTBOX_DROPS,
            created_ms,
            &body,
        )?;
        if let Some(seq) = pushed.seq {
            self.lock().pending_notice = Some((seq, notice.dropped));
        }
        Ok(pushed.seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bagui_protocol::sealed::Envelope;

    fn seqs(batch: &[Pending]) -> Vec<(Lane, u64)> {
        batch
            .iter()
            .map(|pending| (pending.lane, pending.seq))
            .collect()
    }

    #[test]
    fn sends_by_lane_priority_and_resumes_from_cursors() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(dir.path(), 1 << 20).unwrap();
        outbox.push(Lane::Metrics, "metrics", 1, b"m1").unwrap();
        outbox.push(Lane::Security, "finding", 2, b"s2").unwrap();
        outbox
            .push(Lane::Inventory, "host_facts", 3, b"i3")
            .unwrap();
        outbox.push(Lane::Metrics, "metrics", 4, b"m4").unwrap();
        let mut cursors = Cursors::default();
        let first = outbox.next_batch(&mut cursors, 3).unwrap();
        assert_eq!(
            seqs(&first),
            [
                (Lane::Security, 2),
                (Lane::Inventory, 3),
                (Lane::Metrics, 1)
            ]
        );
        outbox.push(Lane::Security, "finding", 5, b"s5").unwrap();
        let second = outbox.next_batch(&mut cursors, 10).unwrap();
        assert_eq!(seqs(&second), [(Lane::Security, 5), (Lane::Metrics, 4)]);
        assert!(outbox.next_batch(&mut cursors, 10).unwrap().is_empty());
        assert_eq!(outbox.stats().records, 5);
        outbox.remove(Lane::Security, 2).unwrap();
        outbox.remove(Lane::Security, 2).unwrap();
        assert_eq!(outbox.stats().records, 4);
    }

    #[test]
    fn sequence_numbers_survive_reopen_even_when_empty() {
        let dir = tempfile::tempdir().unwrap();
        {
            let outbox = Outbox::open(dir.path(), 1 << 20).unwrap();
            for index in 0..5 {
                outbox.push(Lane::Metrics, "metrics", index, b"x").unwrap();
            }
            for seq in 1..=5 {
                outbox.remove(Lane::Metrics, seq).unwrap();
            }
            assert_eq!(outbox.stats().records, 0);
            futures_flush(&outbox);
        }
        // The lock goes with the last handle (waiting is for in-process restarts).
        let outbox = Outbox::open_waiting(dir.path(), 1 << 20, Duration::from_secs(5)).unwrap();
        assert_eq!(outbox.next_seq(), 6);
        assert_eq!(
            outbox.push(Lane::Metrics, "metrics", 9, b"y").unwrap().seq,
            Some(6)
        );
        outbox.ensure_next_seq_above(100).unwrap();
        assert_eq!(
            outbox.push(Lane::Metrics, "metrics", 9, b"z").unwrap().seq,
            Some(101)
        );
    }

    fn futures_flush(outbox: &Outbox) {
        outbox.sync().unwrap();
    }

    #[test]
    fn pressure_drops_lowest_lane_oldest_first_and_counts_it() {
        let dir = tempfile::tempdir().unwrap();
        let record = OutboxRecord::size("k", &[0u8; 68]); // 100 bytes each
        let outbox = Outbox::open(dir.path(), record * 4).unwrap();
        for index in 0..4 {
            outbox.push(Lane::Metrics, "k", index, &[0u8; 68]).unwrap();
        }
        // A security finding evicts the oldest metric.
        let pushed = outbox.push(Lane::Security, "k", 9, &[0u8; 68]).unwrap();
        assert_eq!(
            pushed,
            Pushed {
                seq: Some(5),
                evicted: 1
            }
        );
        let mut cursors = Cursors::default();
        let remaining = seqs(&outbox.next_batch(&mut cursors, 10).unwrap());
        assert_eq!(
            remaining,
            [
                (Lane::Security, 5),
                (Lane::Metrics, 2),
                (Lane::Metrics, 3),
                (Lane::Metrics, 4)
            ]
        );
        // A metric pushed into a full outbox evicts the oldest metric, not the finding.
        outbox.push(Lane::Metrics, "k", 10, &[0u8; 68]).unwrap();
        let stats = outbox.stats();
        assert_eq!(stats.records, 4);
        assert_eq!(stats.bytes, record * 4);
        assert_eq!(stats.dropped.metrics, 2);
        // Filled with findings (each evicting a metric), a metric has nowhere to go: it is
        // the one dropped.
        for index in 0..3 {
            outbox
                .push(Lane::Security, "k", 20 + index, &[0u8; 68])
                .unwrap();
        }
        assert_eq!(outbox.stats().dropped.metrics, 5);
        let pushed = outbox.push(Lane::Metrics, "k", 30, &[0u8; 68]).unwrap();
        assert_eq!(pushed.seq, None);
        assert_eq!(outbox.stats().dropped.metrics, 6);
        let stats = outbox.stats();
        assert_eq!(stats.records, 4);
        assert_eq!(
            stats.dropped.security, 0,
            "findings are never evicted by metrics"
        );
        // A record larger than the whole outbox is refused and counted.
        assert_eq!(
            outbox
                .push(Lane::Security, "k", 1, &vec![0u8; 1000])
                .unwrap()
                .seq,
            None
        );
        assert_eq!(outbox.stats().dropped.security, 1);
    }

    #[test]
    fn records_too_large_for_a_frame_are_refused_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(dir.path(), 1 << 20)
            .unwrap()
            .with_max_body(100);
        assert_eq!(
            outbox
                .push(Lane::Security, "k", 1, &[0u8; 101])
                .unwrap()
                .seq,
            None
        );
        assert_eq!(
            outbox
                .push(Lane::Security, "k", 1, &[0u8; 100])
                .unwrap()
                .seq,
            Some(1)
        );
        outbox.discard(Lane::Security, 1).unwrap();
        let stats = outbox.stats();
        assert_eq!((stats.records, stats.dropped.security), (0, 2));
    }

    #[test]
    fn only_one_drop_notice_waits_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(dir.path(), 1 << 20)
            .unwrap()
            .with_max_body(400);
        outbox.push(Lane::Metrics, "k", 1, &[0u8; 401]).unwrap();
        let first = outbox.push_drop_notice(1).unwrap().unwrap();
        outbox.push(Lane::Metrics, "k", 1, &[0u8; 401]).unwrap();
        let second = outbox.push_drop_notice(2).unwrap().unwrap();
        assert_ne!(first, second);
        let mut cursors = Cursors::default();
        let waiting = outbox.next_batch(&mut cursors, 10).unwrap();
        assert_eq!(waiting.len(), 1, "the second notice replaced the first");
        let notice: OutboxDrops =
            bagui_protocol::messages::payload::decode(&waiting[0].record.body).unwrap();
        assert_eq!(notice.dropped.metrics, 2, "and carries its count");
        assert_eq!(notice.dropped_total.metrics, 2);
    }

    #[test]
    fn drop_counters_persist() {
        let dir = tempfile::tempdir().unwrap();
        {
            let outbox = Outbox::open(dir.path(), 100).unwrap();
            outbox.push(Lane::Metrics, "k", 1, &[0u8; 60]).unwrap();
            outbox.push(Lane::Metrics, "k", 2, &[0u8; 60]).unwrap();
            futures_flush(&outbox);
        }
        let outbox = Outbox::open_waiting(dir.path(), 100, Duration::from_secs(5)).unwrap();
        assert_eq!(outbox.stats().dropped.metrics, 1);
        assert_eq!(outbox.stats().records, 1);
    }

    // --- The log: crashes, damage, space -----------------------------------------------------

    fn all(outbox: &Outbox) -> Vec<Pending> {
        outbox
            .next_batch(&mut Cursors::default(), usize::MAX)
            .unwrap()
    }

    fn bodies(batch: &[Pending]) -> Vec<Vec<u8>> {
        batch
            .iter()
            .map(|pending| pending.record.body.to_vec())
            .collect()
    }

    fn segment_files(dir: &Path) -> Vec<std::path::PathBuf> {
        let mut files: Vec<_> = std::fs::read_dir(dir.join(store::LOG_DIR))
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "seg"))
            .collect();
        files.sort();
        files
    }

    /// The offset of every frame in a segment file, in order.
    fn frame_offsets(bytes: &[u8]) -> Vec<(usize, usize)> {
        let mut offsets = Vec::new();
        format::scan(bytes, |offset, len, _| offsets.push((offset, len)));
        offsets
    }

    fn five_records(dir: &Path) -> Vec<Vec<u8>> {
        let bodies: Vec<Vec<u8>> = (0..5u8)
            .map(|index| vec![index + 1; 10 + 7 * index as usize])
            .collect();
        let outbox = Outbox::open(dir, 1 << 20).unwrap();
        for (index, body) in bodies.iter().enumerate() {
            outbox
                .push(Lane::Inventory, "k", index as u64, body)
                .unwrap();
        }
        bodies
    }

    #[test]
    fn a_torn_tail_at_any_byte_loses_only_the_record_being_written() {
        let dir = tempfile::tempdir().unwrap();
        let written = five_records(dir.path());
        let [segment] = segment_files(dir.path()).try_into().unwrap();
        let full = std::fs::read(&segment).unwrap();
        let last = OutboxRecord::size("k", &written[4]) as usize;
        for cut in full.len() - last..full.len() {
            // Cut short, or the right length with the tail never written (zeros).
            for zeros in [false, true] {
                let mut bytes = full[..cut].to_vec();
                if zeros {
                    bytes.resize(full.len(), 0);
                }
                std::fs::write(&segment, &bytes).unwrap();
                let outbox = Outbox::open(dir.path(), 1 << 20).unwrap();
                let kept = all(&outbox);
                assert_eq!(bodies(&kept), written[..4], "cut at {cut}, zeros {zeros}");
                assert_eq!(outbox.next_seq(), 5, "cut at {cut}, zeros {zeros}");
            }
        }
        // After the repair the log takes new records and keeps them.
        {
            let outbox = Outbox::open(dir.path(), 1 << 20).unwrap();
            assert_eq!(
                outbox.push(Lane::Inventory, "k", 9, b"new").unwrap().seq,
                Some(5)
            );
        }
        let outbox = Outbox::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(all(&outbox).len(), 5);
        assert_eq!(outbox.next_seq(), 6);
    }

    #[test]
    fn a_damaged_record_in_the_middle_is_skipped_and_the_rest_kept() {
        let dir = tempfile::tempdir().unwrap();
        let written = five_records(dir.path());
        let [segment] = segment_files(dir.path()).try_into().unwrap();
        let full = std::fs::read(&segment).unwrap();
        // Frames: the checkpoint, then the five pushes.
        let (third, len) = frame_offsets(&full)[3];
        // The marker, the length, the checksum, the header of the payload, the body.
        for at in [0, 5, 9, 13, 20, len - 1] {
            let mut bytes = full.clone();
            bytes[third + at] ^= 0x10;
            std::fs::write(&segment, &bytes).unwrap();
            for _ in 0..2 {
                let outbox = Outbox::open(dir.path(), 1 << 20).unwrap();
                let kept = all(&outbox);
                let expected = [&written[..2], &written[3..]].concat();
                assert_eq!(
                    bodies(&kept),
                    expected,
                    "bit flipped at byte {at} of the frame"
                );
                assert_eq!(outbox.next_seq(), 6);
            }
        }
    }

    #[test]
    fn a_record_damaged_after_opening_is_dropped_when_read_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(dir.path(), 1 << 20).unwrap();
        for index in 0..5u8 {
            outbox.push(Lane::Metrics, "k", 0, &[index; 40]).unwrap();
        }
        let [segment] = segment_files(dir.path()).try_into().unwrap();
        let mut bytes = std::fs::read(&segment).unwrap();
        let (third, len) = frame_offsets(&bytes)[3];
        bytes[third + len - 1] ^= 1;
        std::fs::write(&segment, &bytes).unwrap();
        let kept = all(&outbox);
        assert_eq!(seqs(&kept), [1, 2, 4, 5].map(|seq| (Lane::Metrics, seq)));
        assert_eq!(outbox.stats().records, 4);
        assert_eq!(outbox.stats().dropped.metrics, 1);
        assert!(
            outbox.push_drop_notice(1).unwrap().is_some(),
            "and reported"
        );
    }

    #[test]
    fn sequence_numbers_survive_when_the_segments_that_used_them_are_gone() {
        let dir = tempfile::tempdir().unwrap();
        {
            let outbox = Outbox::open_with_segments(dir.path(), 1 << 20, 4096).unwrap();
            for index in 0..50 {
                outbox
                    .push(Lane::Metrics, "metrics", index, &[1; 500])
                    .unwrap();
            }
            assert!(segment_files(dir.path()).len() > 5);
            for seq in 1..=50 {
                outbox.remove(Lane::Metrics, seq).unwrap();
            }
            assert_eq!(
                segment_files(dir.path()).len(),
                1,
                "dead segments are deleted"
            );
        }
        let outbox = Outbox::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(outbox.next_seq(), 51);
        assert_eq!(
            outbox.push(Lane::Metrics, "metrics", 9, b"y").unwrap().seq,
            Some(51)
        );
    }

    #[test]
    fn compaction_keeps_exactly_the_live_records_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let segment = 4096;
        let mut live = Vec::new();
        {
            let outbox = Outbox::open_with_segments(dir.path(), 1 << 30, segment).unwrap();
            for index in 0..2000u64 {
                let lane = Lane::from((index % 4) as u8);
                let body = index.to_le_bytes().repeat(20);
                let seq = outbox.push(lane, "k", index, &body).unwrap().seq.unwrap();
                if index % 7 == 0 {
                    live.push((lane, seq, body));
                } else {
                    outbox.remove(lane, seq).unwrap();
                }
                let stats = outbox.stats();
                let disk = outbox.lock().store.disk_bytes();
                assert!(
                    disk <= 2 * stats.bytes + 4 * segment,
                    "{disk} bytes on disk for {} live",
                    stats.bytes
                );
            }
        }
        live.sort_by_key(|(lane, seq, _)| (*lane, *seq));
        let outbox = Outbox::open(dir.path(), 1 << 30).unwrap();
        let kept: Vec<_> = all(&outbox)
            .into_iter()
            .map(|pending| (pending.lane, pending.seq, pending.record.body.to_vec()))
            .collect();
        assert_eq!(kept, live);
        assert_eq!(outbox.next_seq(), 2001);
    }

    #[test]
    fn a_second_process_is_locked_out_until_the_first_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let first = Outbox::open(dir.path(), 1 << 20).unwrap();
        let error = Outbox::open(dir.path(), 1 << 20).unwrap_err();
        assert!(matches!(error, OutboxError::Locked { .. }), "{error}");
        assert!(error.to_string().contains("in use by another process"));
        drop(first);
        Outbox::open(dir.path(), 1 << 20).unwrap();
    }

    #[test]
    fn a_segment_cut_short_while_being_created_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let written = five_records(dir.path());
        let log = dir.path().join(store::LOG_DIR);
        std::fs::write(log.join("0000000007.seg"), &format::SEGMENT_MAGIC[..3]).unwrap();
        let outbox = Outbox::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(bodies(&all(&outbox)), written);
        assert_eq!(outbox.next_seq(), 6);
        assert!(!log.join("0000000007.seg").exists());
    }

    #[test]
    fn an_old_sled_outbox_is_left_alone_and_a_fresh_log_started() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("conf"), b"segment_size: 524288").unwrap();
        std::fs::write(dir.path().join("db"), [0u8; 64]).unwrap();
        let outbox = Outbox::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(outbox.stats().records, 0);
        assert_eq!(
            outbox.push(Lane::Metrics, "k", 1, b"x").unwrap().seq,
            Some(1)
        );
        assert!(dir.path().join("db").exists());
    }

    // --- Sealed at rest ----------------------------------------------------------------------

    fn control_plane_key() -> (sealed::Opener, Recipient) {
        let secret = <sm2::SecretKey as sm2::elliptic_curve::Generate>::try_generate().unwrap();
        (
            sealed::Opener::new(&secret),
            Recipient::new(secret.public_key()),
        )
    }

    fn files_contain(dir: &Path, needle: &[u8]) -> bool {
        segment_files(dir).iter().any(|file| {
            std::fs::read(file)
                .unwrap()
                .windows(needle.len())
                .any(|window| window == needle)
        })
    }

    fn open_pending(opener: &sealed::Opener, pending: &Pending) -> Vec<u8> {
        opener
            .open(
                &pending.record.cipher,
                &pending.record.body,
                &RecordContext {
                    lane: pending.lane,
                    seq: pending.seq,
                    created_ms: pending.record.created_ms,
                    kind: &pending.record.kind,
                },
            )
            .unwrap()
    }

    #[test]
    fn a_renumbered_record_keeps_its_seal_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let (opener, recipient) = control_plane_key();
        let open_all = |outbox: &Outbox| -> Vec<(u64, u64, Vec<u8>)> {
            let mut cursors = Cursors::default();
            outbox
                .next_batch(&mut cursors, 100)
                .unwrap()
                .iter()
                .map(|pending| {
                    let sealed_seq = match pending.record.sealed_seq {
                        0 => pending.seq,
                        earlier => earlier,
                    };
                    let body = opener
                        .open(
                            &pending.record.cipher,
                            &pending.record.body,
                            &RecordContext {
                                lane: pending.lane,
                                seq: sealed_seq,
                                created_ms: pending.record.created_ms,
                                kind: &pending.record.kind,
                            },
                        )
                        .unwrap();
                    (pending.seq, pending.record.sealed_seq, body)
                })
                .collect()
        };
        {
            let outbox = Outbox::open(dir.path(), 1 << 20)
                .unwrap()
                .with_encryption(recipient.clone());
            for body in [b"one", b"two"] {
                outbox.push(Lane::Security, "finding", 5, body).unwrap();
            }
            assert_eq!(outbox.renumber(Lane::Security, 1).unwrap(), Some(3));
            assert_eq!(outbox.renumber(Lane::Security, 1).unwrap(), None, "gone");
            assert_eq!(
                outbox.renumber(Lane::Metrics, 2).unwrap(),
                None,
                "other lane"
            );
            // Renumbered twice, it is still bound to the seq it was sealed under.
            assert_eq!(outbox.renumber(Lane::Security, 3).unwrap(), Some(4));
            assert_eq!(outbox.stats().records, 2);
        }
        let outbox = Outbox::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(outbox.next_seq(), 5);
        assert_eq!(
            open_all(&outbox),
            [(2, 0, b"two".to_vec()), (4, 1, b"one".to_vec())]
        );
        // A plaintext record needs no seal to follow it.
        let plain = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(plain.path(), 1 << 20).unwrap();
        outbox.push(Lane::Metrics, "metrics", 5, b"plain").unwrap();
        assert_eq!(outbox.renumber(Lane::Metrics, 1).unwrap(), Some(2));
        let mut cursors = Cursors::default();
        let pending = outbox.next_batch(&mut cursors, 10).unwrap();
        assert_eq!(
            (
                pending[0].seq,
                pending[0].record.sealed_seq,
                &pending[0].record.body[..]
            ),
            (2, 0, &b"plain"[..])
        );
    }

    #[test]
    fn sealed_records_reach_the_disk_only_as_ciphertext_and_open_at_the_control_plane() {
        let dir = tempfile::tempdir().unwrap();
        let (opener, recipient) = control_plane_key();
        let marker = b"MARKER-guangxi-township-report-0042";
        let outbox = Outbox::open(dir.path(), 1 << 20)
            .unwrap()
            .with_encryption(recipient);
        assert!(outbox.encrypts());
        outbox.push(Lane::Security, "finding", 77, marker).unwrap();
        outbox
            .push(Lane::Metrics, "metrics", 78, b"second")
            .unwrap();
        assert!(!files_contain(dir.path(), marker), "no plaintext on disk");
        let data_key = *outbox
            .lock()
            .sealer
            .as_ref()
            .unwrap()
            .current
            .as_ref()
            .unwrap()
            .0
            .secret()
            .expose();
        assert!(!files_contain(dir.path(), &data_key), "no data key on disk");

        let batch = all(&outbox);
        assert_eq!(seqs(&batch), [(Lane::Security, 1), (Lane::Metrics, 2)]);
        let record = &batch[0].record;
        assert_eq!(record.cipher, sealed::SM4_CCM_SM2);
        assert_eq!((record.kind.as_str(), record.created_ms), ("finding", 77));
        assert_eq!(record.body.len(), marker.len() + sealed::OVERHEAD);
        assert_eq!(open_pending(&opener, &batch[0]), marker);
        assert_eq!(open_pending(&opener, &batch[1]), b"second");
        // The limit counts the sealed record.
        assert_eq!(
            outbox.stats().bytes,
            OutboxRecord::stored_size("finding", sealed::SM4_CCM_SM2, record.body.len())
                + OutboxRecord::stored_size("metrics", sealed::SM4_CCM_SM2, 6 + sealed::OVERHEAD)
        );

        // A later process (a new outbox over the same disk) has a new data key: what it can
        // hold opens nothing written before, and there is no API that yields plaintext.
        drop(outbox);
        let reopened = Outbox::open(dir.path(), 1 << 20)
            .unwrap()
            .with_encryption(control_plane_key().1);
        reopened
            .push(Lane::Metrics, "metrics", 79, b"third")
            .unwrap();
        let batch = all(&reopened);
        assert_eq!(batch.len(), 3);
        assert_eq!(batch[0].record.body.len(), marker.len() + sealed::OVERHEAD);
        assert_eq!(open_pending(&opener, &batch[0]), marker);
        let new_key = reopened
            .lock()
            .sealer
            .as_ref()
            .unwrap()
            .current
            .as_ref()
            .unwrap()
            .0
            .secret()
            .clone();
        let old = Envelope::parse(sealed::SM4_CCM_SM2, &batch[0].record.body).unwrap();
        assert_ne!(new_key.expose(), &data_key);
        assert_eq!(
            old.open_with(
                &new_key,
                &RecordContext {
                    lane: Lane::Security,
                    seq: 1,
                    created_ms: 77,
                    kind: "finding"
                }
            ),
            Err(SealError::Authentication)
        );
    }

    #[test]
    fn plaintext_records_from_before_sealing_still_drain_as_they_are() {
        let dir = tempfile::tempdir().unwrap();
        let (opener, recipient) = control_plane_key();
        {
            let outbox = Outbox::open(dir.path(), 1 << 20).unwrap();
            assert!(!outbox.encrypts());
            outbox
                .push(Lane::State, "state", 1, b"written in clear")
                .unwrap();
        }
        let outbox = Outbox::open(dir.path(), 1 << 20)
            .unwrap()
            .with_encryption(recipient);
        outbox.push(Lane::State, "state", 2, b"sealed now").unwrap();
        let batch = all(&outbox);
        assert_eq!(batch[0].record.cipher, "");
        assert_eq!(batch[0].record.body.as_slice(), b"written in clear");
        assert_eq!(batch[1].record.cipher, sealed::SM4_CCM_SM2);
        assert_eq!(open_pending(&opener, &batch[1]), b"sealed now");
        assert_eq!(
            outbox.stats().bytes,
            OutboxRecord::size("state", b"written in clear")
                + OutboxRecord::stored_size("state", sealed::SM4_CCM_SM2, 10 + sealed::OVERHEAD)
        );
        // Acknowledged, both leave.
        outbox.remove(Lane::State, 1).unwrap();
        outbox.remove(Lane::State, 2).unwrap();
        assert_eq!(outbox.stats().records, 0);
    }

    #[test]
    fn pressure_counts_sealed_sizes_and_still_drops_the_lowest_lane() {
        let dir = tempfile::tempdir().unwrap();
        let (opener, recipient) = control_plane_key();
        let record = OutboxRecord::stored_size("k", sealed::SM4_CCM_SM2, 68 + sealed::OVERHEAD);
        let outbox = Outbox::open(dir.path(), record * 4)
            .unwrap()
            .with_encryption(recipient);
        for index in 0..4 {
            outbox.push(Lane::Metrics, "k", index, &[7u8; 68]).unwrap();
        }
        assert_eq!(outbox.stats().bytes, record * 4);
        let pushed = outbox.push(Lane::Security, "k", 9, &[9u8; 68]).unwrap();
        assert_eq!(
            pushed,
            Pushed {
                seq: Some(5),
                evicted: 1
            }
        );
        let batch = all(&outbox);
        assert_eq!(
            seqs(&batch),
            [
                (Lane::Security, 5),
                (Lane::Metrics, 2),
                (Lane::Metrics, 3),
                (Lane::Metrics, 4)
            ]
        );
        assert_eq!(open_pending(&opener, &batch[0]), [9u8; 68]);
        // The drop notice is sealed like any record.
        let notice = outbox.push_drop_notice(10).unwrap().unwrap();
        let batch = all(&outbox);
        let pending = batch.iter().find(|pending| pending.seq == notice).unwrap();
        assert_eq!(pending.record.cipher, sealed::SM4_CCM_SM2);
        let notice: OutboxDrops =
            bagui_protocol::messages::payload::decode(&open_pending(&opener, pending)).unwrap();
        assert_eq!(notice.dropped.metrics, 1);
    }

    #[test]
    fn a_sealed_body_must_fit_the_frame_limit() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(dir.path(), 1 << 20)
            .unwrap()
            .with_max_body(100 + sealed::OVERHEAD)
            .with_encryption(control_plane_key().1);
        assert_eq!(
            outbox.push(Lane::Metrics, "k", 1, &[0u8; 101]).unwrap().seq,
            None
        );
        assert_eq!(
            outbox.push(Lane::Metrics, "k", 1, &[0u8; 100]).unwrap().seq,
            Some(1)
        );
    }

    #[test]
    fn the_data_key_is_replaced_after_its_record_budget() {
        let mut sealer = Sealer {
            recipient: control_plane_key().1,
            current: None,
        };
        let context = RecordContext {
            lane: Lane::Metrics,
            seq: 1,
            created_ms: 1,
            kind: "k",
        };
        let first = sealer.key().unwrap().secret().clone();
        for _ in 0..KEY_MAX_RECORDS {
            let key = sealer.key().unwrap();
            assert_eq!(key.secret(), &first);
            key.seal(&context, b"").unwrap();
        }
        assert_ne!(sealer.key().unwrap().secret(), &first);
        assert_eq!(sealer.key().unwrap().sealed(), 0);
        // And after its time.
        let second = sealer.key().unwrap().secret().clone();
        sealer.current.as_mut().unwrap().1 = Instant::now() - KEY_MAX_AGE;
        assert_ne!(sealer.key().unwrap().secret(), &second);
    }

    /// A deterministic xorshift generator: the model test must replay identically.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, bound: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % bound
        }
    }

    /// What the outbox should hold, kept the obvious way.
    #[derive(Default)]
    struct Model {
        records: std::collections::BTreeMap<(Lane, u64), (u64, Vec<u8>)>,
        next_seq: u64,
        dropped: LaneCounts,
        limit: u64,
        max_body: usize,
    }

    impl Model {
        fn bytes(&self) -> u64 {
            self.records
                .values()
                .map(|(_, body)| OutboxRecord::size("k", body))
                .sum()
        }

        fn push(&mut self, lane: Lane, created_ms: u64, body: &[u8]) -> Pushed {
            let size = OutboxRecord::size("k", body);
            let mut excess = (self.bytes() + size).saturating_sub(self.limit);
            let mut victims = Vec::new();
            for victim in Lane::ALL.iter().rev().filter(|victim| **victim >= lane) {
                for ((_, seq), (_, old)) in self.records.range((*victim, 0)..=(*victim, u64::MAX)) {
                    if excess == 0 {
                        break;
                    }
                    excess = excess.saturating_sub(OutboxRecord::size("k", old));
                    victims.push((*victim, *seq));
                }
            }
            if body.len() > self.max_body || size > self.limit || excess > 0 {
                *self.dropped.get_mut(lane) += 1;
                return Pushed {
                    seq: None,
                    evicted: 0,
                };
            }
            for victim in &victims {
                self.records.remove(victim);
                *self.dropped.get_mut(victim.0) += 1;
            }
            let seq = self.next_seq;
            self.next_seq += 1;
            self.records
                .insert((lane, seq), (created_ms, body.to_vec()));
            Pushed {
                seq: Some(seq),
                evicted: victims.len() as u64,
            }
        }
    }

    #[test]
    fn random_operations_match_a_model_across_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let (limit, max_body, segment) = (16 << 10, 2000, 1024);
        let open = || {
            Outbox::open_with_segments(dir.path(), limit, segment)
                .unwrap()
                .with_max_body(max_body)
        };
        let mut model = Model {
            next_seq: 1,
            limit,
            max_body,
            ..Model::default()
        };
        let mut rng = Rng(0x5EED_BA61_0B0C_0001);
        let mut outbox = open();
        let mut most_on_disk = 0;
        for step in 0..3000u64 {
            match rng.below(100) {
                0..45 => {
                    let lane = Lane::from(rng.below(4) as u8);
                    let len = if rng.below(50) == 0 {
                        max_body + 1 + rng.below(100) as usize
                    } else {
                        rng.below(700) as usize
                    };
                    let body: Vec<u8> = (0..len).map(|_| rng.below(256) as u8).collect();
                    let expected = model.push(lane, step, &body);
                    assert_eq!(outbox.push(lane, "k", step, &body).unwrap(), expected);
                }
                45..75 if !model.records.is_empty() => {
                    let nth = rng.below(model.records.len() as u64) as usize;
                    let (lane, seq) = *model.records.keys().nth(nth).unwrap();
                    model.records.remove(&(lane, seq));
                    if rng.below(5) == 0 {
                        outbox.discard(lane, seq).unwrap();
                        *model.dropped.get_mut(lane) += 1;
                    } else {
                        outbox.remove(lane, seq).unwrap();
                    }
                }
                75..80 => {
                    // Removing what is not there changes nothing.
                    let lane = Lane::from(rng.below(4) as u8);
                    let seq = model.next_seq + rng.below(3);
                    outbox.remove(lane, seq).unwrap();
                }
                80..86 => {
                    drop(outbox);
                    outbox = open();
                }
                86..89 => {
                    let above = model.next_seq + rng.below(4);
                    outbox.ensure_next_seq_above(above).unwrap();
                    model.next_seq = model.next_seq.max(above + 1);
                }
                _ => {
                    let held: Vec<_> = all(&outbox)
                        .into_iter()
                        .map(|pending| {
                            let record = pending.record;
                            (
                                (pending.lane, pending.seq),
                                (record.created_ms, record.body.to_vec()),
                            )
                        })
                        .collect();
                    let expected: Vec<_> = model
                        .records
                        .iter()
                        .map(|(key, value)| (*key, value.clone()))
                        .collect();
                    assert_eq!(held, expected, "step {step}");
                }
            }
            let stats = outbox.stats();
            assert_eq!(stats.records, model.records.len() as u64, "step {step}");
            assert_eq!(stats.bytes, model.bytes(), "step {step}");
            assert_eq!(stats.dropped, model.dropped, "step {step}");
            assert_eq!(outbox.next_seq(), model.next_seq, "step {step}");
            let disk = outbox.lock().store.disk_bytes();
            most_on_disk = most_on_disk.max(disk);
            assert!(
                disk <= 2 * stats.bytes + 8 * segment + 2 * max_body as u64,
                "step {step}: {disk} bytes on disk for {} live",
                stats.bytes
            );
        }
        assert!(most_on_disk > 0);
    }
}
