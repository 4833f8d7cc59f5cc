//! Crypto profiles: which TLS suite, key-exchange group and certificate keys a deployment
//! uses. Chosen once per deployment (`bagui-cp init --crypto-profile`), carried in the join
//! command, and recorded by both sides; the two profiles do not interoperate.

use serde::{Deserialize, Serialize};

/// A deployment's crypto profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CryptoProfile {
    /// TLS 1.3 with AES/ChaCha suites and ECDSA P-256 certificates (ring).
    #[default]
    Standard,
    /// RFC 8998: TLS_SM4_GCM_SM3, curveSM2, sm2sig_sm3 over SM2 certificates (`bagui-smtls`).
    Shangmi,
}

impl CryptoProfile {
    /// Both profiles, standard first.
    pub const ALL: [CryptoProfile; 2] = [CryptoProfile::Standard, CryptoProfile::Shangmi];

    pub fn as_str(self) -> &'static str {
        match self {
            CryptoProfile::Standard => "standard",
            CryptoProfile::Shangmi => "shangmi",
        }
    }

    /// The one cipher suite a Bagui agent of this profile offers (so the one any of its
    /// successful handshakes negotiated).
    pub fn tls_suite(self) -> &'static str {
        match self {
            CryptoProfile::Standard => "TLS13_AES_128_GCM_SHA256",
            CryptoProfile::Shangmi => "TLS_SM4_GCM_SM3",
        }
    }

    /// The one key-exchange group a Bagui agent of this profile offers.
    pub fn kx_group(self) -> &'static str {
        match self {
            CryptoProfile::Standard => "X25519",
            CryptoProfile::Shangmi => "curveSM2",
        }
    }

    /// The other profile.
    pub fn other(self) -> CryptoProfile {
        match self {
            CryptoProfile::Standard => CryptoProfile::Shangmi,
            CryptoProfile::Shangmi => CryptoProfile::Standard,
        }
    }
}

impl std::fmt::Display for CryptoProfile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for CryptoProfile {
    type Err = String;

    fn from_str(text: &str) -> Result<CryptoProfile, String> {
        CryptoProfile::ALL
            .into_iter()
            .find(|profile| profile.as_str() == text)
            .ok_or_else(|| {
                format!("unknown crypto profile {text:?} (expected \"standard\" or \"shangmi\")")
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for profile in CryptoProfile::ALL {
            assert_eq!(profile.as_str().parse::<CryptoProfile>(), Ok(profile));
            assert_eq!(
                serde_json::to_string(&profile).unwrap(),
                format!("\"{profile}\"")
            );
            assert_ne!(profile.other(), profile);
        }
        assert!("sm".parse::<CryptoProfile>().is_err());
        assert_eq!(CryptoProfile::default(), CryptoProfile::Standard);
    }
}
