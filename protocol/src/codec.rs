//! Bytes ↔ frames: the length-prefixed framing every Bagui stream uses.
//!
//! ```text
//! +----------------+-------------+----------------+--------------------------+
//! | length: u32 BE | kind_len: u8| kind: ASCII    | body: MessagePack (named)|
//! +----------------+-------------+----------------+--------------------------+
//!                  \______________ length bytes ___________________________/
//! ```
//!
//! The kind travels outside the body so that a receiver can recognise a message it does not
//! know, skip it whole and answer "unsupported" — the basis of version-skew tolerance. The
//! length is checked against the receiver's maximum *before* any of the frame is buffered, so
//! a hostile length prefix costs nothing: memory is spent only on bytes that arrive.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Largest frame any Bagui peer will accept, whatever its configuration says.
pub const HARD_MAX_FRAME_LEN: usize = 16 * 1024 * 1024;
/// Default maximum frame length (length prefix excluded).
pub const DEFAULT_MAX_FRAME_LEN: usize = 1024 * 1024;
/// Longest message kind name.
pub const MAX_KIND_LEN: usize = 32;

const LENGTH_PREFIX: usize = 4;

/// One decoded frame: a message kind and its still-encoded body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: String,
    pub body: Bytes,
}

/// Why bytes could not be framed or unframed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {len} bytes exceeds the maximum of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("frame has an empty message kind")]
    EmptyKind,
    #[error("message kind of {len} bytes is longer than {MAX_KIND_LEN}")]
    KindTooLong { len: usize },
    #[error("message kind is not lowercase ASCII letters, digits, '_' or '.'")]
    BadKind,
    #[error("frame declares a {kind_len}-byte kind but is only {frame_len} bytes long")]
    KindOverrunsFrame { kind_len: usize, frame_len: usize },
    #[error("stream ended inside a frame ({buffered} bytes buffered)")]
    Truncated { buffered: usize },
}

impl FrameError {
    /// The QUIC application error code a receiver closes with after this error.
    pub fn error_code(&self) -> crate::ErrorCode {
        match self {
            FrameError::TooLarge { .. } => crate::ErrorCode::FrameTooLarge,
            _ => crate::ErrorCode::Protocol,
        }
    }
}

fn check_kind(kind: &str) -> Result<(), FrameError> {
    if kind.is_empty() {
        return Err(FrameError::EmptyKind);
    }
    if kind.len() > MAX_KIND_LEN {
        return Err(FrameError::KindTooLong { len: kind.len() });
    }
    let valid = kind
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.');
    if !valid {
        return Err(FrameError::BadKind);
    }
    Ok(())
}

/// Appends one frame to `out`. Fails if the kind is malformed or the frame would exceed `max_len`.
pub fn encode_frame(
    kind: &str,
    body: &[u8],
    max_len: usize,
    out: &mut BytesMut,
) -> Result<(), FrameError> {
    check_kind(kind)?;
    let len = 1 + kind.len() + body.len();
    let max = max_len.min(HARD_MAX_FRAME_LEN);
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    out.reserve(LENGTH_PREFIX + len);
    // `len` is at most HARD_MAX_FRAME_LEN, which fits in u32.
    out.put_u32(len as u32);
    out.put_u8(kind.len() as u8);
    out.put_slice(kind.as_bytes());
    out.put_slice(body);
    Ok(())
}

/// Incremental frame decoder: feed it bytes as they arrive, take frames out.
///
/// `Ok(None)` means "incomplete, feed more"; an `Err` means the stream is unusable and must be
/// closed with [`FrameError::error_code`].
#[derive(Debug)]
pub struct FrameDecoder {
    buffer: BytesMut,
    max_len: usize,
}

impl FrameDecoder {
    /// A decoder refusing frames longer than `max_len` (capped at [`HARD_MAX_FRAME_LEN`]).
    pub fn new(max_len: usize) -> FrameDecoder {
        FrameDecoder {
            buffer: BytesMut::new(),
            max_len: max_len.min(HARD_MAX_FRAME_LEN),
        }
    }

    /// Appends received bytes.
    pub fn extend(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// Bytes buffered and not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        if self.buffer.len() < LENGTH_PREFIX {
            return Ok(None);
        }
        let len = u32::from_be_bytes([
            self.buffer[0],
            self.buffer[1],
            self.buffer[2],
            self.buffer[3],
        ]) as usize;
        if len > self.max_len {
            return Err(FrameError::TooLarge {
                len,
                max: self.max_len,
            });
        }
        if len == 0 {
            return Err(FrameError::EmptyKind);
        }
        // The kind is checked as soon as it has arrived, so garbage is refused early.
        if self.buffer.len() > LENGTH_PREFIX {
            let kind_len = self.buffer[LENGTH_PREFIX] as usize;
            if kind_len == 0 {
                return Err(FrameError::EmptyKind);
            }
            if kind_len > MAX_KIND_LEN {
                return Err(FrameError::KindTooLong { len: kind_len });
            }
            if 1 + kind_len > len {
                return Err(FrameError::KindOverrunsFrame {
                    kind_len,
                    frame_len: len,
                });
            }
        }
        if self.buffer.len() < LENGTH_PREFIX + len {
            // No reservation for the declared length: the buffer grows only with bytes that
            // actually arrive, so a length prefix alone costs the receiver nothing.
            return Ok(None);
        }
        self.buffer.advance(LENGTH_PREFIX);
        let mut frame = self.buffer.split_to(len).freeze();
        if self.buffer.is_empty() {
            // Idle sessions vastly outnumber busy ones: give the buffer back between bursts
            // rather than keep a few KiB per connection forever.
            self.buffer = BytesMut::new();
        }
        let kind_len = frame.get_u8() as usize;
        let kind_bytes = frame.split_to(kind_len);
        let kind = std::str::from_utf8(&kind_bytes).map_err(|_| FrameError::BadKind)?;
        check_kind(kind)?;
        Ok(Some(Frame {
            kind: kind.to_owned(),
            body: frame,
        }))
    }

    /// Call when the stream has ended: fails if a partial frame is left over.
    pub fn finish(&self) -> Result<(), FrameError> {
        if self.buffer.is_empty() {
            Ok(())
        } else {
            Err(FrameError::Truncated {
                buffered: self.buffer.len(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame_bytes(kind: &str, body: &[u8]) -> BytesMut {
        let mut out = BytesMut::new();
        encode_frame(kind, body, DEFAULT_MAX_FRAME_LEN, &mut out).unwrap();
        out
    }

    #[test]
    fn round_trips_one_byte_at_a_time() {
        let mut wire = frame_bytes("report", b"\x81\xa1a\x01");
        wire.extend_from_slice(&frame_bytes("heartbeat", b""));
        let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME_LEN);
        let mut frames = Vec::new();
        for byte in wire.iter() {
            decoder.extend(&[*byte]);
            while let Some(frame) = decoder.next_frame().unwrap() {
                frames.push(frame);
            }
        }
        decoder.finish().unwrap();
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0].kind, "report");
        assert_eq!(&frames[0].body[..], b"\x81\xa1a\x01");
        assert_eq!(frames[1].kind, "heartbeat");
        assert!(frames[1].body.is_empty());
    }

    #[test]
    fn oversized_length_is_refused_before_buffering() {
        let mut decoder = FrameDecoder::new(1024);
        decoder.extend(&(2048u32).to_be_bytes());
        assert_eq!(
            decoder.next_frame(),
            Err(FrameError::TooLarge {
                len: 2048,
                max: 1024
            })
        );
        assert_eq!(
            decoder.next_frame().unwrap_err().error_code(),
            crate::ErrorCode::FrameTooLarge
        );
    }

    #[test]
    fn hard_limit_caps_configured_limit() {
        let decoder = FrameDecoder::new(usize::MAX);
        assert_eq!(decoder.max_len, HARD_MAX_FRAME_LEN);
        let mut out = BytesMut::new();
        let body = vec![0u8; 2048];
        assert!(matches!(
            encode_frame("x", &body, 1024, &mut out),
            Err(FrameError::TooLarge { .. })
        ));
        assert!(out.is_empty(), "a refused frame must not be half-written");
    }

    #[test]
    fn malformed_kinds_are_refused() {
        for (bytes, expected) in [
            (&b"\x00\x00\x00\x00"[..], FrameError::EmptyKind),
            (&b"\x00\x00\x00\x01\x00"[..], FrameError::EmptyKind),
            (
                &b"\x00\x00\x00\x30\x21"[..],
                FrameError::KindTooLong { len: 0x21 },
            ),
            (
                &b"\x00\x00\x00\x02\x05ab"[..],
                FrameError::KindOverrunsFrame {
                    kind_len: 5,
                    frame_len: 2,
                },
            ),
            (&b"\x00\x00\x00\x03\x02A!"[..], FrameError::BadKind),
            (&b"\x00\x00\x00\x03\x02\xff\xfe"[..], FrameError::BadKind),
        ] {
            let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME_LEN);
            decoder.extend(bytes);
            assert_eq!(decoder.next_frame(), Err(expected), "input {bytes:?}");
        }
        let mut out = BytesMut::new();
        assert_eq!(
            encode_frame("Bad Kind", b"", 100, &mut out),
            Err(FrameError::BadKind)
        );
    }

    #[test]
    fn truncated_stream_is_reported_on_finish() {
        let wire = frame_bytes("report", b"0123456789");
        let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME_LEN);
        decoder.extend(&wire[..wire.len() - 3]);
        assert_eq!(decoder.next_frame(), Ok(None));
        assert_eq!(
            decoder.finish(),
            Err(FrameError::Truncated {
                buffered: wire.len() - 3
            })
        );
    }
}
