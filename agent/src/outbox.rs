//! The durable outbox: every report is written here before it is sent and deleted only when
//! the control plane has acknowledged it.
//!
//! Records are keyed `[lane][seq]`, so a scan in key order yields the highest-priority lane
//! first and each lane oldest first. The next sequence number lives in the same tree and is
//! written in the same atomic batch as the record that used it: after any crash, a sequence
//! number the control plane may have stored is never handed out again (reusing one would make
//! the control plane discard the new report as a duplicate).
//!
//! The outbox is bounded. Under pressure it drops the oldest record of the lowest-priority lane
//! that is not above the incoming record's lane; if only higher-priority records remain, the
//! incoming record itself is dropped. Every drop is counted per lane (persisted) and reported.
//! Lane, sequence and size stay outside the payload, so payloads can be encrypted at rest
//! without changing any of this. Only this module knows sled.

use std::path::Path;
use std::sync::Mutex;

use bagui_protocol::messages::payload::OutboxDrops;
use bagui_protocol::{Lane, LaneCounts, OutboxStats};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use tokio::sync::Notify;

const NEXT_SEQ_KEY: &[u8] = b"\xffnext_seq";
const DROPPED_KEY: &[u8] = b"\xffdropped";
/// Bytes counted per record on top of its kind and body (key, framing, sled overhead).
const RECORD_OVERHEAD: u64 = 32;

/// An outbox operation failed.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("outbox: {0}")]
    Sled(#[from] sled::Error),
    #[error("outbox at {path} is in use by another process (is the agent already running?)")]
    Locked { path: String },
    #[error("outbox record {key:?} is corrupt: {message}")]
    Corrupt { key: Vec<u8>, message: String },
}

/// A stored record.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct OutboxRecord {
    pub kind: String,
    pub created_ms: u64,
    pub body: ByteBuf,
}

impl OutboxRecord {
    fn size(kind: &str, body: &[u8]) -> u64 {
        kind.len() as u64 + body.len() as u64 + RECORD_OVERHEAD
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

#[derive(Debug, Default)]
struct Counters {
    next_seq: u64,
    records: [u64; 4],
    bytes: [u64; 4],
    dropped: LaneCounts,
    /// Dropped since the last drop notice.
    unreported: LaneCounts,
    /// The drop notice still in the outbox (its seq and the drops it reports), if any.
    pending_notice: Option<(u64, LaneCounts)>,
}

/// Per-lane read positions of one session: the last sequence sent in each lane.
pub type Cursors = [Option<u64>; 4];

fn key(lane: Lane, seq: u64) -> [u8; 9] {
    let mut key = [0u8; 9];
    key[0] = lane as u8;
    key[1..].copy_from_slice(&seq.to_be_bytes());
    key
}

fn parse_key(key: &[u8]) -> Option<(Lane, u64)> {
    if key.len() != 9 || key[0] > 3 {
        return None;
    }
    Some((
        Lane::from(key[0]),
        u64::from_be_bytes(key[1..].try_into().ok()?),
    ))
}

/// The outbox.
pub struct Outbox {
    db: sled::Db,
    tree: sled::Tree,
    limit_bytes: u64,
    /// Larger bodies are refused at push (they could never be sent in one frame).
    max_body_bytes: usize,
    counters: Mutex<Counters>,
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
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(4 << 20)
            .flush_every_ms(Some(500))
            .open()
            .map_err(|error| match &error {
                sled::Error::Io(io) if io.to_string().contains("could not acquire lock") => {
                    OutboxError::Locked {
                        path: path.display().to_string(),
                    }
                }
                _ => OutboxError::Sled(error),
            })?;
        let tree = db.open_tree("records")?;
        let mut counters = Counters::default();
        let mut max_seq = 0;
        for item in tree.range(..[0xffu8].as_slice()) {
            let (key, value) = item?;
            let (lane, seq) = parse_key(&key).ok_or_else(|| OutboxError::Corrupt {
                key: key.to_vec(),
                message: "malformed key".into(),
            })?;
            let record: OutboxRecord =
                rmp_serde::from_slice(&value).map_err(|error| OutboxError::Corrupt {
                    key: key.to_vec(),
                    message: error.to_string(),
                })?;
            counters.records[lane as usize] += 1;
            counters.bytes[lane as usize] += OutboxRecord::size(&record.kind, &record.body);
            max_seq = max_seq.max(seq);
        }
        let stored_next = tree
            .get(NEXT_SEQ_KEY)?
            .and_then(|bytes| <[u8; 8]>::try_from(&bytes[..]).ok())
            .map(u64::from_be_bytes)
            .unwrap_or(1);
        counters.next_seq = stored_next.max(max_seq + 1).max(1);
        if let Some(bytes) = tree.get(DROPPED_KEY)? {
            counters.dropped = rmp_serde::from_slice(&bytes).unwrap_or_default();
        }
        Ok(Outbox {
            db,
            tree,
            limit_bytes,
            max_body_bytes: DEFAULT_MAX_BODY,
            counters: Mutex::new(counters),
            notify: Notify::new(),
        })
    }

    /// Like [`Outbox::open`], but waits up to `patience` for a previous holder's lock to go
    /// (sled releases it a moment after the last handle is dropped, e.g. an in-process restart).
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

    fn lock(&self) -> std::sync::MutexGuard<'_, Counters> {
        self.counters
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Sets the largest body accepted (the control plane's frame limit less some room).
    pub fn with_max_body(mut self, bytes: usize) -> Outbox {
        self.max_body_bytes = bytes;
        self
    }

    /// Adds a record. It is in the outbox (not yet flushed to disk) when this returns.
    pub fn push(
        &self,
        lane: Lane,
        kind: &str,
        created_ms: u64,
        body: &[u8],
    ) -> Result<Pushed, OutboxError> {
        let size = OutboxRecord::size(kind, body);
        let mut counters = self.lock();
        if body.len() > self.max_body_bytes {
            tracing::warn!(
                kind,
                bytes = body.len(),
                limit = self.max_body_bytes,
                "record too large for one frame; dropped"
            );
            self.count_drop(&mut counters, lane)?;
            return Ok(Pushed {
                seq: None,
                evicted: 0,
            });
        }
        match self.plan_evictions(&counters, lane, size)? {
            Some(victims) => {
                let seq = counters.next_seq;
                let record = OutboxRecord {
                    kind: kind.to_owned(),
                    created_ms,
                    body: ByteBuf::from(body.to_vec()),
                };
                let encoded =
                    rmp_serde::to_vec_named(&record).map_err(|error| OutboxError::Corrupt {
                        key: key(lane, seq).to_vec(),
                        message: error.to_string(),
                    })?;
                let mut dropped = counters.dropped;
                for (victim, _, _) in &victims {
                    *dropped.get_mut(*victim) += 1;
                }
                let mut batch = sled::Batch::default();
                for (_, victim_key, _) in &victims {
                    batch.remove(victim_key.as_slice());
                }
                batch.insert(key(lane, seq).to_vec(), encoded);
                batch.insert(NEXT_SEQ_KEY, (seq + 1).to_be_bytes().to_vec());
                if !victims.is_empty() {
                    batch.insert(
                        DROPPED_KEY,
                        rmp_serde::to_vec_named(&dropped).unwrap_or_default(),
                    );
                }
                self.tree.apply_batch(batch)?;
                for (victim, _, victim_size) in &victims {
                    let index = *victim as usize;
                    counters.records[index] -= 1;
                    counters.bytes[index] = counters.bytes[index].saturating_sub(*victim_size);
                    *counters.unreported.get_mut(*victim) += 1;
                }
                counters.dropped = dropped;
                counters.next_seq = seq + 1;
                counters.records[lane as usize] += 1;
                counters.bytes[lane as usize] += size;
                drop(counters);
                self.notify.notify_one();
                Ok(Pushed {
                    seq: Some(seq),
                    evicted: victims.len() as u64,
                })
            }
            None => {
                // Only higher-priority records (or nothing big enough) stand in the way: the
                // incoming record is the one dropped.
                self.count_drop(&mut counters, lane)?;
                Ok(Pushed {
                    seq: None,
                    evicted: 0,
                })
            }
        }
    }

    fn count_drop(&self, counters: &mut Counters, lane: Lane) -> Result<(), OutboxError> {
        *counters.dropped.get_mut(lane) += 1;
        *counters.unreported.get_mut(lane) += 1;
        let dropped = rmp_serde::to_vec_named(&counters.dropped).unwrap_or_default();
        self.tree.insert(DROPPED_KEY, dropped)?;
        Ok(())
    }

    /// Drops a stored record that can never be delivered, counting it like any other drop.
    pub fn discard(&self, lane: Lane, seq: u64) -> Result<(), OutboxError> {
        self.remove(lane, seq)?;
        let mut counters = self.lock();
        self.count_drop(&mut counters, lane)
    }

    /// The records to evict so that `size` more bytes of `lane` fit: lowest lane first, oldest
    /// first, never a lane above `lane`. `None` if they cannot be made to fit.
    #[allow(clippy::type_complexity)]
    fn plan_evictions(
        &self,
        counters: &Counters,
        lane: Lane,
        size: u64,
    ) -> Result<Option<Vec<(Lane, Vec<u8>, u64)>>, OutboxError> {
        if size > self.limit_bytes {
            return Ok(None);
        }
        let mut excess =
            (counters.bytes.iter().sum::<u64>() + size).saturating_sub(self.limit_bytes);
        let mut victims = Vec::new();
        for victim in Lane::ALL
            .iter()
            .rev()
            .copied()
            .filter(|victim| *victim >= lane)
        {
            if excess == 0 {
                break;
            }
            for item in self.tree.range(key(victim, 0)..=key(victim, u64::MAX)) {
                if excess == 0 {
                    break;
                }
                let (victim_key, value) = item?;
                let old: OutboxRecord = rmp_serde::from_slice(&value).unwrap_or_default();
                let old_size = OutboxRecord::size(&old.kind, &old.body);
                excess = excess.saturating_sub(old_size);
                victims.push((victim, victim_key.to_vec(), old_size));
            }
        }
        Ok((excess == 0).then_some(victims))
    }

    /// Waits until a record is pushed (or a wake-up is pending).
    pub async fn pushed(&self) {
        self.notify.notified().await
    }

    /// Makes every record pushed so far durable.
    pub async fn flush(&self) -> Result<(), OutboxError> {
        self.db.flush_async().await?;
        Ok(())
    }

    /// Up to `max` records not yet sent in this session, highest lane first, oldest first;
    /// advances `cursors` past them.
    pub fn next_batch(
        &self,
        cursors: &mut Cursors,
        max: usize,
    ) -> Result<Vec<Pending>, OutboxError> {
        let mut out = Vec::new();
        for lane in Lane::ALL {
            if out.len() >= max {
                break;
            }
            let start = key(
                lane,
                cursors[lane as usize].map_or(0, |seq| seq.saturating_add(1)),
            );
            let end = key(lane, u64::MAX);
            for item in self.tree.range(start..=end) {
                if out.len() >= max {
                    break;
                }
                let (raw_key, value) = item?;
                let Some((_, seq)) = parse_key(&raw_key) else {
                    continue;
                };
                let record: OutboxRecord =
                    rmp_serde::from_slice(&value).map_err(|error| OutboxError::Corrupt {
                        key: raw_key.to_vec(),
                        message: error.to_string(),
                    })?;
                cursors[lane as usize] = Some(seq);
                out.push(Pending { lane, seq, record });
            }
        }
        Ok(out)
    }

    /// Deletes an acknowledged record (no-op if it was already dropped).
    pub fn remove(&self, lane: Lane, seq: u64) -> Result<(), OutboxError> {
        let mut counters = self.lock();
        if let Some(old) = self.tree.remove(key(lane, seq))? {
            let record: OutboxRecord = rmp_serde::from_slice(&old).unwrap_or_default();
            let index = lane as usize;
            counters.records[index] = counters.records[index].saturating_sub(1);
            counters.bytes[index] = counters.bytes[index]
                .saturating_sub(OutboxRecord::size(&record.kind, &record.body));
        }
        Ok(())
    }

    /// Never hand out a sequence number at or below `seq` (the control plane has stored it).
    pub fn ensure_next_seq_above(&self, seq: u64) -> Result<(), OutboxError> {
        let mut counters = self.lock();
        if seq >= u64::MAX / 2 {
            tracing::error!(
                seq,
                "ignoring an absurd stored sequence number from the control plane"
            );
            return Ok(());
        }
        if counters.next_seq <= seq {
            tracing::warn!(
                next_seq = counters.next_seq,
                stored = seq,
                "the control plane holds sequence numbers this outbox would reuse; skipping ahead"
            );
            counters.next_seq = seq + 1;
            self.tree
                .insert(NEXT_SEQ_KEY, (seq + 1).to_be_bytes().to_vec())?;
        }
        Ok(())
    }

    pub fn next_seq(&self) -> u64 {
        self.lock().next_seq
    }

    pub fn limit_bytes(&self) -> u64 {
        self.limit_bytes
    }

    pub fn stats(&self) -> OutboxStats {
        let counters = self.lock();
        OutboxStats {
            records: counters.records.iter().sum(),
            bytes: counters.bytes.iter().sum(),
            dropped: counters.dropped,
        }
    }

    /// Records drops since the last notice as one `outbox_drops` report in the state lane.
    /// At most one notice waits in the outbox at a time: a newer notice replaces an unsent
    /// one and carries its counts, so notices cannot crowd out real state changes during a
    /// long outage. Returns the notice's sequence number, or `None` if nothing was dropped.
    pub fn push_drop_notice(&self, created_ms: u64) -> Result<Option<u64>, OutboxError> {
        let notice = {
            let mut counters = self.lock();
            if counters.unreported.total() == 0 {
                return Ok(None);
            }
            let mut dropped = std::mem::take(&mut counters.unreported);
            if let Some((seq, carried)) = counters.pending_notice.take()
                && let Some(old) = self.tree.remove(key(Lane::State, seq))?
            {
                let record: OutboxRecord = rmp_serde::from_slice(&old).unwrap_or_default();
                let index = Lane::State as usize;
                counters.records[index] = counters.records[index].saturating_sub(1);
                counters.bytes[index] = counters.bytes[index]
                    .saturating_sub(OutboxRecord::size(&record.kind, &record.body));
                for lane in Lane::ALL {
                    *dropped.get_mut(lane) += carried.get(lane);
                }
            }
            OutboxDrops {
                dropped,
                dropped_total: counters.dropped,
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
    use std::time::Duration;

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
        // sled lets go of its lock a moment after the last handle is dropped.
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
        outbox.db.flush().unwrap();
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
}
