//! Hostile input: random and mutated bytes fed to the decoders must yield frames or typed
//! errors, never a panic, an unbounded allocation or a hang. (`fuzz/` runs the same decoder
//! under libFuzzer for longer; this is the always-on part.)

use bagui_protocol::*;

/// Small deterministic PRNG so failures reproduce from the printed seed.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Drives every decoder over `bytes` the way a receiving stream would.
fn decode_everything(bytes: &[u8], chunk: usize) -> usize {
    let mut decoder = FrameDecoder::new(64 * 1024);
    let mut frames = 0;
    for piece in bytes.chunks(chunk.max(1)) {
        decoder.extend(piece);
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => {
                    frames += 1;
                    let _ = AgentMessage::decode(&frame);
                    let _ = ServerMessage::decode(&frame);
                    let _ = JoinClientMessage::decode(&frame);
                    let _ = JoinServerMessage::decode(&frame);
                    if let Ok(Decoded::Known(ServerMessage::Ack(ack))) =
                        ServerMessage::decode(&frame)
                    {
                        let _ = ack.seqs(4096);
                    }
                }
                Ok(None) => break,
                Err(error) => {
                    let _ = error.error_code();
                    return frames;
                }
            }
        }
    }
    let _ = decoder.finish();
    frames
}

fn valid_stream() -> Vec<u8> {
    let mut out = bytes::BytesMut::new();
    let messages: Vec<AgentMessage> = vec![
        Hello {
            protocol_version: 1,
            agent_id: "ag-1".into(),
            next_seq: 9,
            ..Default::default()
        }
        .into(),
        Report {
            seq: 9,
            lane: Lane::State,
            kind: "metrics".into(),
            created_ms: 1,
            body: serde_bytes::ByteBuf::from(vec![0x80]),
            cipher: String::new(),
            sealed_seq: 0,
        }
        .into(),
        Heartbeat::default().into(),
    ];
    for message in messages {
        message.encode(DEFAULT_MAX_FRAME_LEN, &mut out).unwrap();
    }
    let mut server = bytes::BytesMut::new();
    ServerMessage::from(Ack::from_seqs(vec![1, 2, 3]))
        .encode(DEFAULT_MAX_FRAME_LEN, &mut server)
        .unwrap();
    out.extend_from_slice(&server);
    out.to_vec()
}

#[test]
fn valid_stream_decodes_at_every_chunking() {
    let stream = valid_stream();
    for chunk in 1..stream.len() {
        assert_eq!(decode_everything(&stream, chunk), 4, "chunk size {chunk}");
    }
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    for _ in 0..20_000 {
        let len = rng.below(256);
        let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        decode_everything(&bytes, 1 + rng.below(64));
    }
}

#[test]
fn mutated_valid_streams_never_panic() {
    let stream = valid_stream();
    let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
    for _ in 0..20_000 {
        let mut bytes = stream.clone();
        for _ in 0..1 + rng.below(4) {
            match rng.below(4) {
                0 => {
                    let at = rng.below(bytes.len());
                    bytes[at] ^= 1 << rng.below(8);
                }
                1 => {
                    let at = rng.below(bytes.len());
                    bytes[at] = rng.next() as u8;
                }
                2 => {
                    let at = rng.below(bytes.len());
                    bytes.truncate(at);
                    if bytes.is_empty() {
                        bytes.push(0);
                    }
                }
                _ => {
                    let at = rng.below(bytes.len());
                    bytes.insert(at, rng.next() as u8);
                }
            }
        }
        decode_everything(&bytes, 1 + rng.below(32));
    }
}

#[test]
fn huge_declared_collections_do_not_allocate_hugely() {
    // A report whose body claims a 4-GiB byte string and an ack claiming 2^32 ranges.
    for body in [
        &b"\x81\xa4body\xc6\xff\xff\xff\xff"[..],
        &b"\x81\xa6ranges\xdd\xff\xff\xff\xff\x82"[..],
    ] {
        let frame = Frame {
            kind: "report".into(),
            body: bytes::Bytes::copy_from_slice(body),
        };
        assert!(AgentMessage::decode(&frame).is_err());
        let frame = Frame {
            kind: "ack".into(),
            body: bytes::Bytes::copy_from_slice(body),
        };
        assert!(ServerMessage::decode(&frame).is_err());
    }
}
