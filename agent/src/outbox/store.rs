//! The log on disk and the index over it: a durable map from `(lane, seq)` to a record, with
//! the sequence high-water mark and drop counters beside it. No policy lives here (limits,
//! eviction, notices are the outbox's); only how entries reach the disk and come back.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{ErrorKind, Read};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use bagui_protocol::{Lane, LaneCounts};
use serde_bytes::ByteBuf;

use super::format::{self, Entry, Meta, SEGMENT_HEADER_LEN, SEGMENT_MAGIC};
use super::{OutboxError, OutboxRecord};

/// A segment is closed once it reaches this size (a batch may run a little past it).
pub(super) const SEGMENT_TARGET: u64 = 4 << 20;
/// Dead bytes tolerated on top of the live ones before live records are copied forward, in
/// segments.
const COMPACT_SLACK_SEGMENTS: u64 = 2;
/// Records copied forward per write during compaction (bounds the memory it needs).
const RELOCATE_CHUNK: usize = 256 << 10;
/// The log's own directory inside the outbox directory (clear of an old sled outbox's files).
pub(super) const LOG_DIR: &str = "log";
const LOCK_FILE: &str = "lock";
const SEGMENT_SUFFIX: &str = ".seg";

/// Where a live record's frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Loc {
    segment: u32,
    offset: u32,
    /// The whole frame; also the record's accounted size (see `OutboxRecord::size`).
    len: u32,
}

#[derive(Debug)]
struct Segment {
    file: File,
    len: u64,
    live_records: u64,
    live_bytes: u64,
}

/// A record to push, borrowed from the caller.
#[derive(Debug, Clone, Copy)]
pub(super) struct NewRecord<'a> {
    pub lane: Lane,
    pub seq: u64,
    pub created_ms: u64,
    pub kind: &'a str,
    /// `""` for a plaintext body, else the name of its seal.
    pub cipher: &'a str,
    pub body: &'a [u8],
}

/// The durable map. Only the index lives in memory; bodies are read back when sent.
#[derive(Debug)]
pub(super) struct Store {
    dir: PathBuf,
    /// Held (and locked) for as long as the store is open.
    _lock: File,
    /// By id; the newest is the one appended to.
    segments: BTreeMap<u32, Segment>,
    index: [BTreeMap<u64, Loc>; 4],
    lane_bytes: [u64; 4],
    meta: Meta,
    /// Records lost to damage found after opening, not yet taken by the outbox.
    lost: LaneCounts,
    /// The newest segment has writes that are not yet synced.
    dirty: bool,
    /// [`SEGMENT_TARGET`], smaller in tests.
    segment_target: u64,
}

fn io_error(context: impl std::fmt::Display, source: std::io::Error) -> OutboxError {
    OutboxError::Io {
        context: context.to_string(),
        source,
    }
}

impl Store {
    /// Opens the log in `path` (creating it), locked against other processes, and recovers
    /// it: damaged entries are reported and skipped, a torn tail is cut off.
    pub(super) fn open(path: &Path, segment_target: u64) -> Result<Store, OutboxError> {
        let dir = path.join(LOG_DIR);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|error| io_error(format!("creating {}", dir.display()), error))?;
        let lock = lock(&dir, path)?;
        warn_about_sled(path);
        let mut store = Store {
            dir,
            _lock: lock,
            segments: BTreeMap::new(),
            index: Default::default(),
            lane_bytes: [0; 4],
            meta: Meta {
                next_seq: 1,
                dropped: LaneCounts::default(),
            },
            lost: LaneCounts::default(),
            dirty: false,
            segment_target,
        };
        store.recover()?;
        if store.segments.is_empty() {
            store.start_segment(1)?;
            sync_dir(path)?;
        } else {
            // The newest segment must itself hold the high-water mark before an older
            // segment that holds it can be deleted (its checkpoint may have been torn).
            store.append(&[Entry::Meta(store.meta)], true)?;
        }
        store.maintain();
        Ok(store)
    }

    pub(super) fn meta(&self) -> Meta {
        self.meta
    }

    pub(super) fn records(&self, lane: Lane) -> u64 {
        self.index[lane as usize].len() as u64
    }

    pub(super) fn bytes(&self, lane: Lane) -> u64 {
        self.lane_bytes[lane as usize]
    }

    /// The records of `lane`, oldest first, with their sizes.
    pub(super) fn oldest(&self, lane: Lane) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.index[lane as usize]
            .iter()
            .map(|(seq, loc)| (*seq, u64::from(loc.len)))
    }

    /// The sequence numbers of `lane` after `after`, oldest first.
    pub(super) fn seqs_after(
        &self,
        lane: Lane,
        after: Option<u64>,
    ) -> impl Iterator<Item = u64> + '_ {
        let start = after.map_or(0, |seq| seq.saturating_add(1));
        let range = match after {
            Some(u64::MAX) => None,
            _ => Some(self.index[lane as usize].range(start..)),
        };
        range.into_iter().flatten().map(|(seq, _)| *seq)
    }

    /// Records lost to damage since the last call (they are already counted as dropped).
    pub(super) fn take_lost(&mut self) -> LaneCounts {
        std::mem::take(&mut self.lost)
    }

    /// Reads a record back. `Ok(None)` if there is no such record; `Corrupt` if its bytes on
    /// disk are damaged (see [`Store::lose`]).
    pub(super) fn read(&self, lane: Lane, seq: u64) -> Result<Option<OutboxRecord>, OutboxError> {
        let Some(loc) = self.index[lane as usize].get(&seq).copied() else {
            return Ok(None);
        };
        let mut buf = Vec::new();
        self.read_frame(lane, seq, loc, &mut buf)?;
        let (payload, _) = format::read_frame(&buf, 0).map_err(|error| corrupt(loc, error))?;
        let Ok(Entry::Push {
            created_ms,
            kind,
            cipher,
            sealed_seq,
            body,
            ..
        }) = format::decode(payload)
        else {
            return Err(corrupt(loc, "not the pushed record"));
        };
        let kind = kind.to_owned();
        let cipher = cipher.to_owned();
        let body_start = buf.len() - body.len();
        buf.drain(..body_start);
        Ok(Some(OutboxRecord {
            kind,
            created_ms,
            body: ByteBuf::from(buf),
            cipher,
            sealed_seq,
        }))
    }

    /// Appends the frame at `loc` to `out` after checking that it is the push of `(lane,
    /// seq)`; on damage `out` is left as it was.
    fn read_frame(
        &self,
        lane: Lane,
        seq: u64,
        loc: Loc,
        out: &mut Vec<u8>,
    ) -> Result<(), OutboxError> {
        let segment = self
            .segments
            .get(&loc.segment)
            .ok_or_else(|| corrupt(loc, "its segment is gone"))?;
        let start = out.len();
        out.resize(start + loc.len as usize, 0);
        let checked = match segment
            .file
            .read_exact_at(&mut out[start..], u64::from(loc.offset))
        {
            Ok(()) => check_push(&out[start..], lane, seq).map_err(|error| corrupt(loc, error)),
            Err(error) if error.kind() == ErrorKind::UnexpectedEof => {
                Err(corrupt(loc, "the segment is shorter than it was"))
            }
            Err(error) => Err(io_error(
                format!("reading {}", self.segment_path(loc.segment).display()),
                error,
            )),
        };
        if checked.is_err() {
            out.truncate(start);
        }
        checked
    }

    /// Adds a record, durably (synced when this returns), together with the removal of
    /// `victims` and, if there are any, the drop counters that count them.
    pub(super) fn push(
        &mut self,
        record: NewRecord<'_>,
        victims: &[(Lane, u64)],
        dropped: LaneCounts,
    ) -> Result<(), OutboxError> {
        let next_seq = record.seq.saturating_add(1);
        let mut entries: Vec<Entry<'_>> = victims
            .iter()
            .map(|(lane, seq)| Entry::Remove {
                lane: *lane,
                seq: *seq,
            })
            .collect();
        if !victims.is_empty() {
            entries.push(Entry::Meta(Meta { next_seq, dropped }));
        }
        entries.push(Entry::Push {
            lane: record.lane,
            seq: record.seq,
            created_ms: record.created_ms,
            kind: record.kind,
            cipher: record.cipher,
            sealed_seq: 0,
            body: record.body,
        });
        let appended = self.append(&entries, true);
        // Even if the append failed, its bytes may have reached the disk: never reuse the seq.
        self.meta.next_seq = self.meta.next_seq.max(next_seq);
        for (entry, loc) in entries.iter().zip(appended?) {
            self.apply(entry, loc);
        }
        self.maintain();
        Ok(())
    }

    /// Gives the record `(lane, seq)` the number `new_seq`, keeping the seq its seal is bound
    /// to: its push under the new number, then the old one's removal, in one synced append.
    /// A crash in between leaves both copies (the control plane asks again for the old one),
    /// never neither. Returns whether the record was there.
    pub(super) fn renumber(
        &mut self,
        lane: Lane,
        seq: u64,
        new_seq: u64,
    ) -> Result<bool, OutboxError> {
        let Some(record) = self.read(lane, seq)? else {
            return Ok(false);
        };
        let sealed_seq = match (record.cipher.is_empty(), record.sealed_seq) {
            (true, _) => 0,
            (false, 0) => seq,
            (false, earlier) => earlier,
        };
        let entries = [
            Entry::Push {
                lane,
                seq: new_seq,
                created_ms: record.created_ms,
                kind: &record.kind,
                cipher: &record.cipher,
                sealed_seq,
                body: &record.body,
            },
            Entry::Remove { lane, seq },
        ];
        let appended = self.append(&entries, true);
        // Even if the append failed, its bytes may have reached the disk: never reuse the seq.
        self.meta.next_seq = self.meta.next_seq.max(new_seq.saturating_add(1));
        for (entry, loc) in entries.iter().zip(appended?) {
            self.apply(entry, loc);
        }
        self.maintain();
        Ok(true)
    }

    /// Deletes a record, without syncing (a removed record coming back after a crash is
    /// harmless: the control plane de-duplicates). Returns whether it was there.
    ///
    /// If the tombstone cannot be written (a full disk), the record still leaves the index
    /// and the failure is only logged: acknowledged records must keep leaving (and freeing
    /// space), and the worst case is that the record comes back after the next start.
    pub(super) fn remove(&mut self, lane: Lane, seq: u64) -> Result<bool, OutboxError> {
        let removed = match self.forget(lane, seq) {
            Ok(removed) => removed,
            Err(error) => {
                tracing::warn!(%error, ?lane, seq, "outbox log: could not record a removal; the record may come back after a restart");
                true
            }
        };
        self.maintain();
        Ok(removed)
    }

    /// [`Store::remove`] without reclaiming space (compaction calls it).
    fn forget(&mut self, lane: Lane, seq: u64) -> Result<bool, OutboxError> {
        let Some(old) = self.index[lane as usize].remove(&seq) else {
            return Ok(false);
        };
        self.release(lane, old);
        self.append(&[Entry::Remove { lane, seq }], false)
            .map(|_| true)
    }

    /// Removes a record whose bytes are damaged, counting it as dropped and lost.
    pub(super) fn lose(&mut self, lane: Lane, seq: u64) -> Result<(), OutboxError> {
        *self.meta.dropped.get_mut(lane) += 1;
        *self.lost.get_mut(lane) += 1;
        self.forget(lane, seq)?;
        self.set_meta(self.meta, false)
    }

    /// Records new counters or a new high-water mark; `durable` syncs it before returning.
    /// Memory is updated even if the write fails (a high-water mark may only go up).
    pub(super) fn set_meta(&mut self, meta: Meta, durable: bool) -> Result<(), OutboxError> {
        let appended = self.append(&[Entry::Meta(meta)], durable);
        self.apply_meta(meta);
        appended.map(drop)
    }

    /// Syncs everything written so far.
    pub(super) fn sync(&mut self) -> Result<(), OutboxError> {
        if !self.dirty {
            return Ok(());
        }
        if let Some((id, segment)) = self.segments.last_key_value() {
            segment.file.sync_data().map_err(|error| {
                io_error(
                    format!("syncing {}", self.segment_path(*id).display()),
                    error,
                )
            })?;
        }
        self.dirty = false;
        Ok(())
    }

    // --- Recovery -------------------------------------------------------------------------

    /// Replays every segment in order into the index.
    fn recover(&mut self) -> Result<(), OutboxError> {
        let mut buf = Vec::new();
        for id in self.segment_ids()? {
            self.recover_segment(id, &mut buf)?;
        }
        Ok(())
    }

    fn recover_segment(&mut self, id: u32, buf: &mut Vec<u8>) -> Result<(), OutboxError> {
        let path = self.segment_path(id);
        let context = |what: &str| format!("{what} {}", path.display());
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|error| io_error(context("opening"), error))?;
        let size = file
            .metadata()
            .map_err(|error| io_error(context("reading"), error))?
            .len();
        if size > u64::from(u32::MAX) {
            // Not something this log ever writes; set it aside rather than read 4 GiB.
            let aside = path.with_extension("damaged");
            tracing::error!(segment = %path.display(), bytes = size, aside = %aside.display(), "outbox log: segment impossibly large; set aside unread");
            return std::fs::rename(&path, &aside)
                .map_err(|error| io_error(context("setting aside"), error));
        }
        buf.clear();
        file.read_to_end(buf)
            .map_err(|error| io_error(context("reading"), error))?;
        if buf.len() <= SEGMENT_HEADER_LEN {
            // Cut short while being created: nothing in it was ever synced or relied upon.
            tracing::warn!(segment = %path.display(), "outbox log: removing an empty segment");
            drop(file);
            return std::fs::remove_file(&path)
                .map_err(|error| io_error(context("removing"), error));
        }
        if buf[..SEGMENT_HEADER_LEN] != SEGMENT_MAGIC {
            tracing::error!(segment = %path.display(), "outbox log: segment header damaged; reading its records anyway");
        }
        self.segments.insert(
            id,
            Segment {
                file,
                len: buf.len() as u64,
                live_records: 0,
                live_bytes: 0,
            },
        );
        let scan = format::scan(buf, |offset, len, entry| {
            let loc = Loc {
                segment: id,
                offset: offset as u32,
                len: len as u32,
            };
            self.apply(&entry, loc);
        });
        for damage in &scan.damaged {
            tracing::error!(
                segment = %path.display(),
                offset = damage.offset,
                bytes = damage.len,
                error = %damage.error,
                "outbox log: damaged entry skipped (a record in it is lost, or a removed one may come back)"
            );
        }
        if scan.end < buf.len() {
            tracing::warn!(
                segment = %path.display(),
                offset = scan.end,
                bytes = buf.len() - scan.end,
                "outbox log: cutting off a torn tail (an append interrupted by a crash)"
            );
            if let Some(segment) = self.segments.get_mut(&id) {
                segment
                    .file
                    .set_len(scan.end as u64)
                    .and_then(|()| segment.file.sync_all())
                    .map_err(|error| io_error(context("truncating"), error))?;
                segment.len = scan.end as u64;
            }
        }
        Ok(())
    }

    /// The ids of the segment files, oldest first.
    fn segment_ids(&self) -> Result<Vec<u32>, OutboxError> {
        let entries = std::fs::read_dir(&self.dir)
            .map_err(|error| io_error(format!("listing {}", self.dir.display()), error))?;
        let mut ids = Vec::new();
        for entry in entries {
            let entry = entry
                .map_err(|error| io_error(format!("listing {}", self.dir.display()), error))?;
            let name = entry.file_name();
            if let Some(id) = name
                .to_str()
                .and_then(|name| name.strip_suffix(SEGMENT_SUFFIX))
                .and_then(|stem| stem.parse::<u32>().ok())
            {
                ids.push(id);
            }
        }
        ids.sort_unstable();
        Ok(ids)
    }

    // --- Appending ------------------------------------------------------------------------

    /// Applies one entry to memory; `loc` is where it is (used by pushes only).
    fn apply(&mut self, entry: &Entry<'_>, loc: Loc) {
        match *entry {
            Entry::Push { lane, seq, .. } => {
                self.meta.next_seq = self.meta.next_seq.max(seq.saturating_add(1));
                self.place(lane, seq, loc);
            }
            Entry::Remove { lane, seq } => {
                if let Some(old) = self.index[lane as usize].remove(&seq) {
                    self.release(lane, old);
                }
            }
            Entry::Meta(meta) => self.apply_meta(meta),
        }
    }

    /// The high-water mark only ever goes up; the newest counters win.
    fn apply_meta(&mut self, meta: Meta) {
        self.meta.next_seq = self.meta.next_seq.max(meta.next_seq);
        self.meta.dropped = meta.dropped;
    }

    /// Points the index at a record's (newest) copy.
    fn place(&mut self, lane: Lane, seq: u64, loc: Loc) {
        if let Some(old) = self.index[lane as usize].insert(seq, loc) {
            self.release(lane, old);
        }
        self.lane_bytes[lane as usize] += u64::from(loc.len);
        if let Some(segment) = self.segments.get_mut(&loc.segment) {
            segment.live_records += 1;
            segment.live_bytes += u64::from(loc.len);
        }
    }

    /// Accounts for a record copy no longer in the index.
    fn release(&mut self, lane: Lane, loc: Loc) {
        let bytes = &mut self.lane_bytes[lane as usize];
        *bytes = bytes.saturating_sub(u64::from(loc.len));
        if let Some(segment) = self.segments.get_mut(&loc.segment) {
            segment.live_records = segment.live_records.saturating_sub(1);
            segment.live_bytes = segment.live_bytes.saturating_sub(u64::from(loc.len));
        }
    }

    /// Writes entries with one write (and one sync if `durable`); returns where each went.
    fn append(&mut self, entries: &[Entry<'_>], durable: bool) -> Result<Vec<Loc>, OutboxError> {
        let mut buf = Vec::new();
        let mut frames = Vec::with_capacity(entries.len());
        for entry in entries {
            let start = buf.len();
            format::encode(entry, &mut buf);
            frames.push((start, buf.len() - start));
        }
        self.append_frames(&buf, &frames, durable)
    }

    /// Writes encoded frames (`(start, len)` within `buf`) at the end of the newest segment.
    /// On failure the segment is cut back to where it was, as far as possible.
    fn append_frames(
        &mut self,
        buf: &[u8],
        frames: &[(usize, usize)],
        durable: bool,
    ) -> Result<Vec<Loc>, OutboxError> {
        self.rotate_if_full()?;
        let dir = self.dir.clone();
        let Some((&id, segment)) = self.segments.iter_mut().next_back() else {
            return Err(OutboxError::Corrupt {
                what: dir.display().to_string(),
                message: "no segment to append to".into(),
            });
        };
        let offset = segment.len;
        let path = || dir.join(segment_name(id));
        let written = segment.file.write_all_at(buf, offset).and_then(|()| {
            if durable {
                segment.file.sync_data()
            } else {
                Ok(())
            }
        });
        if let Err(error) = written {
            let _ = segment.file.set_len(offset);
            return Err(io_error(
                format!("appending to {}", path().display()),
                error,
            ));
        }
        segment.len += buf.len() as u64;
        self.dirty = !durable;
        Ok(frames
            .iter()
            .map(|(start, len)| Loc {
                segment: id,
                offset: (offset + *start as u64) as u32,
                len: *len as u32,
            })
            .collect())
    }

    /// Closes the newest segment once it is full and starts the next one.
    fn rotate_if_full(&mut self) -> Result<(), OutboxError> {
        let next = match self.segments.last_key_value() {
            None => 1,
            Some((_, segment)) if segment.len < self.segment_target => return Ok(()),
            Some((id, _)) => id.checked_add(1).ok_or_else(|| OutboxError::Corrupt {
                what: self.dir.display().to_string(),
                message: "segment numbers exhausted".into(),
            })?,
        };
        // Whatever the closed segment still holds unsynced reaches the disk first, so that
        // copies made by compaction are durable before their originals are deleted.
        self.sync()?;
        self.start_segment(next)
    }

    /// Creates segment `id` holding the header and a checkpoint, synced, its directory entry
    /// synced too: only then may anything rely on it.
    fn start_segment(&mut self, id: u32) -> Result<(), OutboxError> {
        let path = self.segment_path(id);
        let context = |what: &str| format!("{what} {}", path.display());
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .map_err(|error| io_error(context("creating"), error))?;
        let mut buf = SEGMENT_MAGIC.to_vec();
        format::encode(&Entry::Meta(self.meta), &mut buf);
        file.write_all_at(&buf, 0)
            .and_then(|()| file.sync_data())
            .map_err(|error| io_error(context("writing"), error))?;
        sync_dir(&self.dir)?;
        self.segments.insert(
            id,
            Segment {
                file,
                len: buf.len() as u64,
                live_records: 0,
                live_bytes: 0,
            },
        );
        self.dirty = false;
        Ok(())
    }

    // --- Reclaiming space -----------------------------------------------------------------

    /// Deletes dead segments and, when dead bytes outweigh live ones, compacts one segment.
    /// Failures are logged: the log stays correct, only larger.
    fn maintain(&mut self) {
        self.delete_dead_segments();
        if self.garbage_is_high() {
            if let Err(error) = self.relocate_oldest() {
                tracing::warn!(%error, "outbox log: compaction failed; will retry");
            }
            self.delete_dead_segments();
        }
    }

    /// Deletes the oldest segments while they hold no live record (never the newest).
    ///
    /// Only from the front: a segment's tombstones refer to records in it or in older
    /// segments, so deleting in order never brings a removed record back.
    fn delete_dead_segments(&mut self) {
        while self.segments.len() > 1 {
            let Some((&oldest, segment)) = self.segments.first_key_value() else {
                return;
            };
            if segment.live_records > 0 {
                return;
            }
            self.segments.remove(&oldest);
            let path = self.segment_path(oldest);
            if let Err(error) = std::fs::remove_file(&path) {
                tracing::warn!(segment = %path.display(), %error, "outbox log: could not delete a dead segment");
            }
        }
    }

    fn garbage_is_high(&self) -> bool {
        let total: u64 = self.segments.values().map(|segment| segment.len).sum();
        let live: u64 = self
            .segments
            .values()
            .map(|segment| segment.live_bytes)
            .sum();
        let slack = COMPACT_SLACK_SEGMENTS * self.segment_target;
        self.segments.len() > 1 && total.saturating_sub(live) > live.max(slack)
    }

    /// Copies the live records of the oldest segment to the end of the log (synced), so that
    /// it dies and can be deleted. A crash before the deletion leaves two identical copies;
    /// replay keeps the later one.
    fn relocate_oldest(&mut self) -> Result<(), OutboxError> {
        let Some(&oldest) = self.segments.keys().next() else {
            return Ok(());
        };
        let live: Vec<(Lane, u64, Loc)> = Lane::ALL
            .iter()
            .flat_map(|lane| {
                self.index[*lane as usize]
                    .iter()
                    .filter(|(_, loc)| loc.segment == oldest)
                    .map(|(seq, loc)| (*lane, *seq, *loc))
            })
            .collect();
        let mut moved = Vec::with_capacity(live.len());
        let mut waiting = Vec::new();
        let mut buf = Vec::new();
        let mut frames = Vec::new();
        for (lane, seq, loc) in live {
            let start = buf.len();
            match self.read_frame(lane, seq, loc, &mut buf) {
                Ok(()) => {
                    frames.push((start, loc.len as usize));
                    waiting.push((lane, seq));
                }
                Err(OutboxError::Corrupt { what, message }) => {
                    tracing::error!(%what, %message, "outbox log: damaged record dropped");
                    self.lose(lane, seq)?;
                }
                Err(error) => return Err(error),
            }
            if buf.len() >= RELOCATE_CHUNK {
                let locs = self.append_frames(&buf, &frames, false)?;
                moved.extend(waiting.drain(..).zip(locs));
                buf.clear();
                frames.clear();
            }
        }
        if !frames.is_empty() {
            let locs = self.append_frames(&buf, &frames, false)?;
            moved.extend(waiting.drain(..).zip(locs));
        }
        self.sync()?;
        for ((lane, seq), loc) in moved {
            self.place(lane, seq, loc);
        }
        Ok(())
    }

    /// The bytes of every segment, for tests of space reclamation.
    #[cfg(test)]
    pub(super) fn disk_bytes(&self) -> u64 {
        self.segments.values().map(|segment| segment.len).sum()
    }

    fn segment_path(&self, id: u32) -> PathBuf {
        self.dir.join(segment_name(id))
    }
}

fn segment_name(id: u32) -> String {
    format!("{id:010}{SEGMENT_SUFFIX}")
}

/// Checks that a frame is the push of `(lane, seq)`.
fn check_push(frame: &[u8], lane: Lane, seq: u64) -> Result<(), String> {
    let (payload, _) = format::read_frame(frame, 0).map_err(|error| error.to_string())?;
    match format::decode(payload).map_err(|error| error.to_string())? {
        Entry::Push {
            lane: found_lane,
            seq: found_seq,
            ..
        } if found_lane == lane && found_seq == seq => Ok(()),
        _ => Err("holds a different entry".into()),
    }
}

fn corrupt(loc: Loc, message: impl std::fmt::Display) -> OutboxError {
    OutboxError::Corrupt {
        what: format!(
            "record at offset {} of segment {}",
            loc.offset,
            segment_name(loc.segment)
        ),
        message: message.to_string(),
    }
}

/// Takes the exclusive lock on the log, or reports who has it.
fn lock(dir: &Path, outbox: &Path) -> Result<File, OutboxError> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(|error| io_error(format!("opening {}", path.display()), error))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(OutboxError::Locked {
            path: outbox.display().to_string(),
        }),
        Err(TryLockError::Error(error)) => {
            Err(io_error(format!("locking {}", path.display()), error))
        }
    }
}

/// Makes a directory's entries (files created or renamed in it) durable.
fn sync_dir(dir: &Path) -> Result<(), OutboxError> {
    File::open(dir)
        .and_then(|file| file.sync_all())
        .map_err(|error| io_error(format!("syncing {}", dir.display()), error))
}

/// An outbox written by an older agent (sled) is not read: the format changed before any
/// release. Say so, so that an operator knows where the space went.
fn warn_about_sled(outbox: &Path) {
    if outbox.join("conf").exists() || outbox.join("db").exists() {
        tracing::warn!(
            outbox = %outbox.display(),
            "found an outbox in the old (sled) format; its unsent records are not migrated. \
             Delete its files (conf, db, blobs/, snap.*) to reclaim the space"
        );
    }
}
