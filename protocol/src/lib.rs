//! The Bagui wire protocol, without I/O.
//!
//! This crate owns everything two Bagui peers must agree on: the ALPN names, the frame
//! layout, every message that crosses the link, the QUIC application error codes, and the
//! bytes an agent signs to prove it holds its identity key. It knows nothing about sockets,
//! clocks, QUIC or storage, so the same code is driven by the agent, the control plane, the
//! simulator, the fuzzer and the golden-sample tests.
//!
//! Layers, bottom up (each only uses the one below):
//! - [`codec`]: bytes ↔ [`Frame`] (length prefix, kind, body), with a hard size limit;
//! - [`messages`]: [`Frame`] ↔ typed messages, tolerant of version skew;
//! - [`ErrorCode`]: why a connection or stream was closed, as a QUIC application code.
#![forbid(unsafe_code)]

pub mod assets;
pub mod codec;
pub mod digest;
pub mod error;
pub mod keyfile;
pub mod messages;
pub mod profile;
pub mod proof;
pub mod sealed;
pub mod units;

pub use codec::{DEFAULT_MAX_FRAME_LEN, Frame, FrameDecoder, FrameError, HARD_MAX_FRAME_LEN};
pub use error::ErrorCode;
pub use messages::*;
pub use profile::CryptoProfile;

/// ALPN of an enrolled agent's session (mutual TLS).
pub const ALPN_SESSION: &[u8] = b"bagui/1";
/// ALPN of enrollment and of certificate renewal after expiry (server-authenticated only).
pub const ALPN_JOIN: &[u8] = b"bagui-join/1";
/// The protocol revision this build speaks. Peers one revision apart must interoperate.
pub const PROTOCOL_VERSION: u32 = 1;

/// Whether a peer speaking revision `version` may talk to this build: one revision apart
/// either way (revision 0 — a hello without a version — never). Further apart, the session is
/// refused with [`ErrorCode::UnsupportedVersion`] instead of misreading each other.
pub fn protocol_version_supported(version: u32) -> bool {
    version >= 1 && version.abs_diff(PROTOCOL_VERSION) <= 1
}

#[cfg(test)]
mod version_tests {
    use super::*;

    #[test]
    fn peers_one_revision_apart_interoperate_and_no_further() {
        assert!(protocol_version_supported(PROTOCOL_VERSION));
        assert!(protocol_version_supported(PROTOCOL_VERSION + 1));
        assert!(!protocol_version_supported(PROTOCOL_VERSION + 2));
        assert!(!protocol_version_supported(0));
        assert!(!protocol_version_supported(u32::MAX));
    }
}
