//! The on-disk encoding of the outbox log: segment headers, checksummed frames, and the three
//! kinds of entry. Pure functions over byte slices, so every corruption case can be tested
//! without files. See the parent module for the layout and the crash-safety argument.

use bagui_protocol::{Lane, LaneCounts};

use super::crc::Crc32;

/// The first bytes of every segment file (the last byte is the format version).
pub(super) const SEGMENT_MAGIC: [u8; 8] = *b"BGOUTLG\x01";
pub(super) const SEGMENT_HEADER_LEN: usize = SEGMENT_MAGIC.len();

/// The first bytes of every frame. Not ASCII and not zero, so text bodies and the zeros of a
/// torn write rarely look like it; it lets recovery find the next frame after a damaged one.
const FRAME_MAGIC: [u8; 4] = [0xBA, 0x61, 0x0B, 0xE5];
/// Magic, payload length, CRC-32 of the length and the payload.
pub(super) const FRAME_HEADER_LEN: usize = 12;
/// A payload length beyond this is damage, not data (bodies are at most a frame, ~1 MiB).
pub(super) const MAX_PAYLOAD: usize = 256 << 20;

const PUSH: u8 = 1;
const REMOVE: u8 = 2;
const META: u8 = 3;
/// A push whose body is sealed (see `bagui_protocol::sealed`): a push with a cipher name.
/// Plaintext pushes keep type 1, byte for byte as before.
const PUSH_SEALED: u8 = 4;
/// A push given a new sequence number after the control plane already held another report
/// under its first one: a sealed push that also names the number its seal is bound to.
const PUSH_RENUMBERED: u8 = 5;

/// Type, lane, seq, created_ms, kind length.
const PUSH_FIXED: usize = 1 + 1 + 8 + 8 + 2;
/// The bytes a pushed record takes on disk besides its kind and body.
pub(super) const PUSH_OVERHEAD: usize = FRAME_HEADER_LEN + PUSH_FIXED;
/// The longest cipher name a sealed push can carry.
pub(super) const MAX_CIPHER: usize = u8::MAX as usize;
/// The longest kind a push record can carry.
pub(super) const MAX_KIND: usize = u16::MAX as usize;
/// The largest body a push record can carry (renumbered, with its sealed-under seq).
pub(super) const MAX_BODY: usize = MAX_PAYLOAD - PUSH_FIXED - MAX_KIND - 8 - 1 - MAX_CIPHER;
const REMOVE_LEN: usize = 1 + 1 + 8;
const META_LEN: usize = 1 + 8 + 4 * 8;

/// What the outbox remembers besides its records: the sequence high-water mark and the
/// per-lane drop counters. Every segment starts with one (a checkpoint).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct Meta {
    /// The next sequence number to hand out; every number below it may have been used.
    pub next_seq: u64,
    pub dropped: LaneCounts,
}

/// One log entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Entry<'a> {
    Push {
        lane: Lane,
        seq: u64,
        created_ms: u64,
        kind: &'a str,
        /// `""`: the body is plaintext; else the name of its seal.
        cipher: &'a str,
        /// The seq the seal is bound to, when the record was renumbered; 0: `seq`.
        sealed_seq: u64,
        body: &'a [u8],
    },
    /// A tombstone: the record was acknowledged, evicted or discarded.
    Remove {
        lane: Lane,
        seq: u64,
    },
    Meta(Meta),
}

/// Why bytes are not a valid frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FrameError {
    /// The frame (or its header) runs past the end of the data.
    Truncated,
    BadMagic,
    BadLength(u32),
    BadChecksum,
    /// The checksum holds but the contents make no sense (a bug or a newer format).
    BadPayload(&'static str),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::Truncated => f.write_str("runs past the end of the file"),
            FrameError::BadMagic => f.write_str("no frame marker"),
            FrameError::BadLength(len) => write!(f, "impossible length {len}"),
            FrameError::BadChecksum => f.write_str("checksum mismatch"),
            FrameError::BadPayload(what) => write!(f, "malformed contents: {what}"),
        }
    }
}

/// Appends `entry` as one frame to `out`.
pub(super) fn encode(entry: &Entry<'_>, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&FRAME_MAGIC);
    out.extend_from_slice(&[0; 8]); // length and checksum, filled in below
    match entry {
        Entry::Push {
            lane,
            seq,
            created_ms,
            kind,
            cipher,
            sealed_seq,
            body,
        } => {
            out.push(if *sealed_seq != 0 {
                PUSH_RENUMBERED
            } else if cipher.is_empty() {
                PUSH
            } else {
                PUSH_SEALED
            });
            out.push(*lane as u8);
            out.extend_from_slice(&seq.to_le_bytes());
            out.extend_from_slice(&created_ms.to_le_bytes());
            // The caller refuses longer kinds; clamp rather than write a lying length.
            let kind = &kind.as_bytes()[..kind.len().min(MAX_KIND)];
            out.extend_from_slice(&(kind.len() as u16).to_le_bytes());
            out.extend_from_slice(kind);
            if *sealed_seq != 0 {
                out.extend_from_slice(&sealed_seq.to_le_bytes());
            }
            if *sealed_seq != 0 || !cipher.is_empty() {
                let cipher = &cipher.as_bytes()[..cipher.len().min(MAX_CIPHER)];
                out.push(cipher.len() as u8);
                out.extend_from_slice(cipher);
            }
            out.extend_from_slice(body);
        }
        Entry::Remove { lane, seq } => {
            out.push(REMOVE);
            out.push(*lane as u8);
            out.extend_from_slice(&seq.to_le_bytes());
        }
        Entry::Meta(meta) => {
            out.push(META);
            out.extend_from_slice(&meta.next_seq.to_le_bytes());
            for lane in Lane::ALL {
                out.extend_from_slice(&meta.dropped.get(lane).to_le_bytes());
            }
        }
    }
    let payload_len = (out.len() - start - FRAME_HEADER_LEN) as u32;
    let len_bytes = payload_len.to_le_bytes();
    let crc = Crc32::new()
        .update(&len_bytes)
        .update(&out[start + FRAME_HEADER_LEN..])
        .finish();
    out[start + 4..start + 8].copy_from_slice(&len_bytes);
    out[start + 8..start + 12].copy_from_slice(&crc.to_le_bytes());
}

/// The payload of the frame at `at`, checked; and the frame's whole length.
pub(super) fn read_frame(buf: &[u8], at: usize) -> Result<(&[u8], usize), FrameError> {
    let header = buf
        .get(at..at.saturating_add(FRAME_HEADER_LEN))
        .ok_or(FrameError::Truncated)?;
    if header[..4] != FRAME_MAGIC {
        return Err(FrameError::BadMagic);
    }
    let len_bytes: [u8; 4] = [header[4], header[5], header[6], header[7]];
    let stored_crc = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
    let len = u32::from_le_bytes(len_bytes);
    if len == 0 || len as usize > MAX_PAYLOAD {
        return Err(FrameError::BadLength(len));
    }
    let start = at + FRAME_HEADER_LEN;
    let payload = buf
        .get(start..start + len as usize)
        .ok_or(FrameError::Truncated)?;
    if Crc32::new().update(&len_bytes).update(payload).finish() != stored_crc {
        return Err(FrameError::BadChecksum);
    }
    Ok((payload, FRAME_HEADER_LEN + len as usize))
}

/// Decodes a checked payload.
pub(super) fn decode(payload: &[u8]) -> Result<Entry<'_>, FrameError> {
    let mut reader = Reader(payload);
    let entry = match reader.u8()? {
        kind @ (PUSH | PUSH_SEALED | PUSH_RENUMBERED) => {
            let lane = reader.lane()?;
            let seq = reader.u64()?;
            let created_ms = reader.u64()?;
            let kind_len = usize::from(reader.u16()?);
            let kind_name = std::str::from_utf8(reader.take(kind_len)?)
                .map_err(|_| FrameError::BadPayload("kind is not UTF-8"))?;
            let sealed_seq = if kind == PUSH_RENUMBERED {
                match reader.u64()? {
                    0 => return Err(FrameError::BadPayload("renumbered push without its seq")),
                    sealed_seq => sealed_seq,
                }
            } else {
                0
            };
            let cipher = if kind == PUSH {
                ""
            } else {
                let cipher_len = usize::from(reader.u8()?);
                let cipher = std::str::from_utf8(reader.take(cipher_len)?)
                    .map_err(|_| FrameError::BadPayload("cipher is not UTF-8"))?;
                if cipher.is_empty() && kind == PUSH_SEALED {
                    return Err(FrameError::BadPayload("sealed push without a cipher"));
                }
                cipher
            };
            Entry::Push {
                lane,
                seq,
                created_ms,
                kind: kind_name,
                cipher,
                sealed_seq,
                body: reader.rest(),
            }
        }
        REMOVE if payload.len() == REMOVE_LEN => Entry::Remove {
            lane: reader.lane()?,
            seq: reader.u64()?,
        },
        META if payload.len() == META_LEN => {
            let next_seq = reader.u64()?;
            let mut dropped = LaneCounts::default();
            for lane in Lane::ALL {
                *dropped.get_mut(lane) = reader.u64()?;
            }
            Entry::Meta(Meta { next_seq, dropped })
        }
        REMOVE | META => return Err(FrameError::BadPayload("wrong length")),
        _ => return Err(FrameError::BadPayload("unknown entry type")),
    };
    Ok(entry)
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> Result<&'a [u8], FrameError> {
        if self.0.len() < len {
            return Err(FrameError::BadPayload("too short"));
        }
        let (head, rest) = self.0.split_at(len);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], FrameError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, FrameError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, FrameError> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, FrameError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn lane(&mut self) -> Result<Lane, FrameError> {
        match self.u8()? {
            value @ 0..=3 => Ok(Lane::from(value)),
            _ => Err(FrameError::BadPayload("unknown lane")),
        }
    }

    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.0)
    }
}

/// Bytes that were skipped because they hold no valid frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Damage {
    pub offset: usize,
    pub len: usize,
    pub error: FrameError,
}

/// The outcome of scanning one segment.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Scan {
    /// Damaged stretches with valid frames after them (reported; their entries are lost).
    pub damaged: Vec<Damage>,
    /// Where the valid data ends. Below the data's length, the rest is a torn tail: no valid
    /// frame follows, as after a crash in the middle of an append.
    pub end: usize,
}

/// Walks the frames of a segment (`buf` is the whole file), calling `visit(offset, frame_len,
/// entry)` for each valid one in order. Never fails: damage is skipped and described.
pub(super) fn scan<'a>(buf: &'a [u8], mut visit: impl FnMut(usize, usize, Entry<'a>)) -> Scan {
    let mut scan = Scan::default();
    let mut at = SEGMENT_HEADER_LEN.min(buf.len());
    while at < buf.len() {
        let error = match read_frame(buf, at) {
            Ok((payload, len)) => {
                match decode(payload) {
                    Ok(entry) => visit(at, len, entry),
                    // The frame's bounds are sound, so only this entry is lost.
                    Err(error) => scan.damaged.push(Damage {
                        offset: at,
                        len,
                        error,
                    }),
                }
                at += len;
                continue;
            }
            Err(error) => error,
        };
        match next_frame(buf, at) {
            Some(next) => {
                scan.damaged.push(Damage {
                    offset: at,
                    len: next - at,
                    error,
                });
                at = next;
            }
            None => break,
        }
    }
    scan.end = at;
    scan
}

/// The first valid frame after a damaged one at `at`: where its length field points if that
/// lands on one (the usual case, a flipped bit inside a record), else the first frame marker
/// that starts a valid frame. `None` if nothing valid follows.
fn next_frame(buf: &[u8], at: usize) -> Option<usize> {
    let claimed = buf
        .get(at + 4..at + 8)
        .map(|len| u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize)
        .filter(|len| *len > 0 && *len <= MAX_PAYLOAD)
        .map(|len| at + FRAME_HEADER_LEN + len);
    if let Some(next) = claimed
        && read_frame(buf, next).is_ok()
    {
        return Some(next);
    }
    let mut from = at + 1;
    while let Some(found) = buf
        .get(from..)?
        .windows(FRAME_MAGIC.len())
        .position(|window| window == FRAME_MAGIC)
    {
        let candidate = from + found;
        if read_frame(buf, candidate).is_ok() {
            return Some(candidate);
        }
        from = candidate + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(seq: u64, body: &[u8]) -> Entry<'_> {
        Entry::Push {
            lane: Lane::Inventory,
            seq,
            created_ms: 7,
            kind: "kind",
            cipher: "",
            sealed_seq: 0,
            body,
        }
    }

    fn sealed_push<'a>(seq: u64, cipher: &'a str, body: &'a [u8]) -> Entry<'a> {
        Entry::Push {
            lane: Lane::Security,
            seq,
            created_ms: 9,
            kind: "finding",
            cipher,
            sealed_seq: 0,
            body,
        }
    }

    fn renumbered<'a>(seq: u64, sealed_seq: u64, body: &'a [u8]) -> Entry<'a> {
        Entry::Push {
            lane: Lane::Security,
            seq,
            created_ms: 9,
            kind: "finding",
            cipher: "sm4-ccm/sm2",
            sealed_seq,
            body,
        }
    }

    fn segment(entries: &[Entry<'_>]) -> Vec<u8> {
        let mut buf = SEGMENT_MAGIC.to_vec();
        for entry in entries {
            encode(entry, &mut buf);
        }
        buf
    }

    fn entries(buf: &[u8]) -> (Vec<Entry<'_>>, Scan) {
        let mut out = Vec::new();
        let scan = scan(buf, |_, _, entry| out.push(entry));
        (out, scan)
    }

    #[test]
    fn every_entry_round_trips() {
        let meta = Meta {
            next_seq: 42,
            dropped: LaneCounts {
                security: 1,
                state: 2,
                inventory: 3,
                metrics: u64::MAX,
            },
        };
        let all = [
            push(1, b"body"),
            push(u64::MAX, b""),
            sealed_push(2, "sm4-ccm/sm2", b"sealed bytes"),
            sealed_push(3, "x", b""),
            renumbered(40, 3, b"sealed under 3"),
            renumbered(41, u64::MAX, b""),
            Entry::Remove {
                lane: Lane::Security,
                seq: 9,
            },
            Entry::Meta(meta),
        ];
        let buf = segment(&all);
        let (decoded, scan) = entries(&buf);
        assert_eq!(decoded, all);
        assert_eq!(
            scan,
            Scan {
                damaged: vec![],
                end: buf.len()
            }
        );
    }

    #[test]
    fn a_renumbered_push_must_name_its_sealed_seq() {
        let mut buf = Vec::new();
        encode(&renumbered(40, 3, b"x"), &mut buf);
        let (payload, _) = read_frame(&buf, 0).unwrap();
        assert!(matches!(
            decode(payload),
            Ok(Entry::Push {
                seq: 40,
                sealed_seq: 3,
                ..
            })
        ));
        let mut zero = payload.to_vec();
        // type, lane, seq, created_ms, kind length, kind: then the sealed-under seq.
        let at = 1 + 1 + 8 + 8 + 2 + "finding".len();
        zero[at..at + 8].copy_from_slice(&0u64.to_le_bytes());
        assert_eq!(
            decode(&zero),
            Err(FrameError::BadPayload("renumbered push without its seq"))
        );
    }

    #[test]
    fn a_push_frame_is_its_kind_and_body_plus_the_overhead() {
        let mut buf = Vec::new();
        encode(&push(1, &[0; 100]), &mut buf);
        assert_eq!(buf.len(), PUSH_OVERHEAD + "kind".len() + 100);
        let mut sealed = Vec::new();
        encode(&sealed_push(1, "sm4-ccm/sm2", &[0; 100]), &mut sealed);
        assert_eq!(
            sealed.len(),
            PUSH_OVERHEAD + "finding".len() + 1 + "sm4-ccm/sm2".len() + 100
        );
    }

    #[test]
    fn plaintext_pushes_keep_the_old_encoding() {
        // Type 1, no cipher field: logs written before sealing read back unchanged, and
        // plaintext records written now read the same in an older agent.
        let mut buf = Vec::new();
        encode(&push(5, b"xy"), &mut buf);
        let payload = &buf[FRAME_HEADER_LEN..];
        assert_eq!(payload[0], PUSH);
        assert_eq!(&payload[PUSH_FIXED..], b"kindxy");
        let mut sealed = Vec::new();
        encode(&sealed_push(5, "c", b"xy"), &mut sealed);
        assert_eq!(sealed[FRAME_HEADER_LEN], PUSH_SEALED);
    }

    #[test]
    fn a_damaged_length_is_skipped_by_finding_the_next_marker() {
        let all = [push(1, b"a"), push(2, b"b"), push(3, b"c")];
        let mut buf = segment(&all);
        let second = SEGMENT_HEADER_LEN + PUSH_OVERHEAD + 5;
        buf[second + 5] ^= 0x40; // the length of the second frame
        let (decoded, scan) = entries(&buf);
        assert_eq!(decoded, [all[0], all[2]]);
        assert_eq!(scan.damaged.len(), 1);
        assert_eq!(scan.damaged[0].offset, second);
        assert_eq!(scan.end, buf.len());
    }

    #[test]
    fn zeros_at_the_end_are_a_torn_tail() {
        let all = [push(1, b"a")];
        let mut buf = segment(&all);
        let end = buf.len();
        buf.extend_from_slice(&[0; 100]);
        let (decoded, scan) = entries(&buf);
        assert_eq!(decoded, all);
        assert_eq!(
            scan,
            Scan {
                damaged: vec![],
                end
            }
        );
    }

    #[test]
    fn valid_checksums_with_nonsense_inside_are_skipped() {
        let mut buf = segment(&[push(1, b"a")]);
        let start = buf.len();
        encode(
            &Entry::Remove {
                lane: Lane::Metrics,
                seq: 1,
            },
            &mut buf,
        );
        // Rewrite the lane to 9 and fix the checksum: a frame that is sound but meaningless.
        buf[start + FRAME_HEADER_LEN + 1] = 9;
        let crc = Crc32::new()
            .update(&buf[start + 4..start + 8])
            .update(&buf[start + FRAME_HEADER_LEN..])
            .finish();
        buf[start + 8..start + 12].copy_from_slice(&crc.to_le_bytes());
        encode(&push(2, b"b"), &mut buf);
        let (decoded, scan) = entries(&buf);
        assert_eq!(decoded, [push(1, b"a"), push(2, b"b")]);
        assert_eq!(
            scan.damaged[0].error,
            FrameError::BadPayload("unknown lane")
        );
    }
}
