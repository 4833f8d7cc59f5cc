//! Arbitrary bytes as report payloads (what the control plane decodes from agents' report
//! bodies) and as unit strings from configuration: a value or an error, never a panic.
#![no_main]

use bagui_protocol::messages::payload;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = payload::decode::<payload::HostFacts>(data);
    let _ = payload::decode::<payload::Metrics>(data);
    let _ = payload::decode::<payload::OutboxDrops>(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = bagui_protocol::units::parse_duration(text);
        let _ = bagui_protocol::units::parse_size(text);
        let _ = bagui_protocol::digest::parse_sm3_tagged(text);
        let _ = bagui_protocol::digest::unhex(text);
    }
});
