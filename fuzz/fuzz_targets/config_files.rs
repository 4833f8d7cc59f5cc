//! Arbitrary bytes as the agent's and the control plane's configuration files: a clear error
//! or a configuration, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = bagui_agent::config::AgentConfig::parse(text);
    let _ = bagui_control_plane::config::ControlPlaneConfig::parse(text);
});
