//! The bytes an agent signs to prove it holds its SM2 identity key.
//!
//! A proof is bound to the TLS connection it travels on through a keying-material exporter
//! (RFC 5705 / RFC 8446 §7.5), so a proof captured from one connection is worthless on any
//! other: the control plane computes the same exporter value on its side of the connection
//! and verifies the signature over the same transcript.

/// Label for the TLS exporter that binds a proof to its connection.
pub const EXPORTER_LABEL: &[u8] = b"EXPORTER-bagui-identity-proof";
/// Bytes taken from the exporter.
pub const EXPORTER_LEN: usize = 32;
/// SM2 distinguishing identifier used for every Bagui signature (the GB/T 32918 default).
pub const SM2_DISTID: &str = "1234567812345678";

/// The message an agent signs for a posture report, so stored evidence is attributable: domain,
/// agent id and the report encoded with its `signature` field empty.
pub fn posture_transcript(agent_id: &str, report: &crate::assets::PostureReport) -> Vec<u8> {
    let mut unsigned = report.clone();
    unsigned.signature.clear();
    let mut out = b"bagui posture report v1\0".to_vec();
    out.extend_from_slice(agent_id.as_bytes());
    out.push(0);
    out.extend_from_slice(&crate::messages::payload::encode(&unsigned));
    out
}

/// Why a proof is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProofPurpose {
    /// A re-join that keeps the agent's identity.
    Rejoin,
    /// Certificate renewal after expiry, within the grace period.
    Renew,
}

impl ProofPurpose {
    fn label(self) -> &'static [u8] {
        match self {
            ProofPurpose::Rejoin => b"rejoin",
            ProofPurpose::Renew => b"renew",
        }
    }
}

/// The message signed for a proof: domain, purpose, agent id and the connection's exporter value.
pub fn transcript(purpose: ProofPurpose, agent_id: &str, exporter: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + agent_id.len() + exporter.len());
    out.extend_from_slice(b"bagui identity proof v1\0");
    out.extend_from_slice(purpose.label());
    out.push(0);
    out.extend_from_slice(agent_id.as_bytes());
    out.push(0);
    out.extend_from_slice(exporter);
    out
}

/// The message a `shangmi` agent signs with a new SM2 TLS key to show it holds that key
/// ([`crate::Sm2KeyRequest`]): domain, the SEC1 public key and the connection's exporter value,
/// so the signature is worthless for any other key or connection.
pub fn tls_key_transcript(public_key: &[u8], exporter: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(32 + public_key.len() + exporter.len());
    out.extend_from_slice(b"bagui tls key proof v1\0");
    out.extend_from_slice(&(public_key.len() as u16).to_be_bytes());
    out.extend_from_slice(public_key);
    out.extend_from_slice(exporter);
    out
}

/// What stands in for the connection's exporter value in [`tls_key_transcript`] when an operator
/// has identities issued in bulk over the API (`POST /api/v1/agents/issue`: the load simulator,
/// terminals imaged before shipping): there is no agent connection to bind the proof to, so it
/// is bound to the deployment, by its CA's `sm3:` fingerprint. A proof made for one deployment
/// is worthless on another, and none reads as a join's (an exporter value is 32 bytes).
pub fn bulk_issue_binding(ca_fingerprint: &str) -> Vec<u8> {
    let mut out = b"bagui bulk issue v1\0".to_vec();
    out.extend_from_slice(ca_fingerprint.as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transcripts_differ_by_purpose_agent_and_connection() {
        let base = transcript(ProofPurpose::Rejoin, "ag-1", &[1; 32]);
        assert_ne!(base, transcript(ProofPurpose::Renew, "ag-1", &[1; 32]));
        assert_ne!(base, transcript(ProofPurpose::Rejoin, "ag-2", &[1; 32]));
        assert_ne!(base, transcript(ProofPurpose::Rejoin, "ag-1", &[2; 32]));
        // The separator keeps "ag-1" + "\0x" from colliding with "ag-1\0" + "x".
        assert_ne!(
            transcript(ProofPurpose::Rejoin, "a", b"b"),
            transcript(ProofPurpose::Rejoin, "ab", b"")
        );
    }

    #[test]
    fn tls_key_transcripts_differ_by_key_and_connection() {
        let base = tls_key_transcript(&[4; 65], &[1; 32]);
        assert_ne!(base, tls_key_transcript(&[5; 65], &[1; 32]));
        assert_ne!(base, tls_key_transcript(&[4; 65], &[2; 32]));
        assert_ne!(base, transcript(ProofPurpose::Rejoin, "", &[1; 32]));
        let bulk = bulk_issue_binding("sm3:00");
        assert_ne!(bulk, bulk_issue_binding("sm3:01"));
        assert_ne!(bulk.len(), EXPORTER_LEN);
    }
}
