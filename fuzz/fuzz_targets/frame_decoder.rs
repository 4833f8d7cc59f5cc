//! Feeds arbitrary bytes to the frame decoder and every message set, in arbitrary chunks.
//! Any panic, hang or unbounded allocation is a bug: peer input must only ever produce
//! frames or typed errors.
#![no_main]

use bagui_protocol::*;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the chunk size, so split frames get exercised too.
    let Some((&chunk, rest)) = data.split_first() else {
        return;
    };
    let mut decoder = FrameDecoder::new(64 * 1024);
    for piece in rest.chunks(usize::from(chunk).max(1)) {
        decoder.extend(piece);
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => {
                    let _ = AgentMessage::decode(&frame);
                    let _ = JoinClientMessage::decode(&frame);
                    let _ = JoinServerMessage::decode(&frame);
                    if let Ok(Decoded::Known(ServerMessage::Ack(ack))) = ServerMessage::decode(&frame) {
                        let _ = ack.seqs(4096);
                    }
                }
                Ok(None) => break,
                Err(error) => {
                    let _ = error.error_code();
                    return;
                }
            }
        }
    }
    let _ = decoder.finish();
});
