//! QUIC application error codes: the reason a peer closed a connection or stream.
//!
//! These travel as QUIC `APPLICATION_CLOSE` / `RESET_STREAM` codes, so the other side learns
//! *why* without another frame. Codes are stable: a new reason gets a new number, an old
//! number never changes meaning. An unknown code from a newer peer reads as [`ErrorCode::Unknown`].

/// Why a connection or stream was closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// Orderly close (agent stopping, session finished).
    NoError,
    /// A frame or message could not be decoded, or arrived out of place.
    Protocol,
    /// A frame's length prefix exceeded the receiver's maximum.
    FrameTooLarge,
    /// The session ALPN was used without an acceptable client certificate.
    Unauthenticated,
    /// The agent, or the certificate it presented, has been revoked.
    Revoked,
    /// The control plane is admitting agents slowly; a `come_back_later` frame said when.
    Busy,
    /// The control plane is shutting down.
    ShuttingDown,
    /// The peer speaks a protocol revision this build cannot serve.
    UnsupportedVersion,
    /// A newer session of the same agent replaced this one.
    Replaced,
    /// No heartbeat arrived within the allowed interval.
    HeartbeatTimeout,
    /// Something failed inside the peer (for example its store); try again later.
    Internal,
    /// Enrollment was refused; the `join_rejected` frame said why.
    JoinRefused,
    /// A code this build does not know (sent by a newer peer).
    Unknown(u32),
}

impl ErrorCode {
    /// The numeric code carried on the wire.
    pub fn code(self) -> u32 {
        match self {
            ErrorCode::NoError => 0,
            ErrorCode::Protocol => 1,
            ErrorCode::FrameTooLarge => 2,
            ErrorCode::Unauthenticated => 3,
            ErrorCode::Revoked => 4,
            ErrorCode::Busy => 5,
            ErrorCode::ShuttingDown => 6,
            ErrorCode::UnsupportedVersion => 7,
            ErrorCode::Replaced => 8,
            ErrorCode::HeartbeatTimeout => 9,
            ErrorCode::Internal => 10,
            ErrorCode::JoinRefused => 11,
            ErrorCode::Unknown(code) => code,
        }
    }

    /// Reads a numeric code; codes this build does not know become [`ErrorCode::Unknown`].
    pub fn from_code(code: u64) -> ErrorCode {
        match code {
            0 => ErrorCode::NoError,
            1 => ErrorCode::Protocol,
            2 => ErrorCode::FrameTooLarge,
            3 => ErrorCode::Unauthenticated,
            4 => ErrorCode::Revoked,
            5 => ErrorCode::Busy,
            6 => ErrorCode::ShuttingDown,
            7 => ErrorCode::UnsupportedVersion,
            8 => ErrorCode::Replaced,
            9 => ErrorCode::HeartbeatTimeout,
            10 => ErrorCode::Internal,
            11 => ErrorCode::JoinRefused,
            other => ErrorCode::Unknown(u32::try_from(other).unwrap_or(u32::MAX)),
        }
    }

    /// A short, stable name for logs and metrics labels.
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::NoError => "no_error",
            ErrorCode::Protocol => "protocol",
            ErrorCode::FrameTooLarge => "frame_too_large",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::Revoked => "revoked",
            ErrorCode::Busy => "busy",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::UnsupportedVersion => "unsupported_version",
            ErrorCode::Replaced => "replaced",
            ErrorCode::HeartbeatTimeout => "heartbeat_timeout",
            ErrorCode::Internal => "internal",
            ErrorCode::JoinRefused => "join_refused",
            ErrorCode::Unknown(_) => "unknown",
        }
    }

    /// Whether an agent should stop reconnecting after seeing this code (it needs an operator).
    pub fn is_permanent(self) -> bool {
        matches!(self, ErrorCode::Revoked | ErrorCode::Unauthenticated)
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.name(), self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_are_distinct() {
        let all = [
            ErrorCode::NoError,
            ErrorCode::Protocol,
            ErrorCode::FrameTooLarge,
            ErrorCode::Unauthenticated,
            ErrorCode::Revoked,
            ErrorCode::Busy,
            ErrorCode::ShuttingDown,
            ErrorCode::UnsupportedVersion,
            ErrorCode::Replaced,
            ErrorCode::HeartbeatTimeout,
            ErrorCode::Internal,
            ErrorCode::JoinRefused,
        ];
        let mut seen = std::collections::HashSet::new();
        for code in all {
            assert!(seen.insert(code.code()), "duplicate code {code}");
            assert_eq!(ErrorCode::from_code(u64::from(code.code())), code);
        }
        assert_eq!(ErrorCode::from_code(4242), ErrorCode::Unknown(4242));
        assert_eq!(ErrorCode::from_code(u64::MAX), ErrorCode::Unknown(u32::MAX));
    }
}
