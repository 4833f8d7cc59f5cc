//! Arbitrary bytes as what users and files hand the access rules: stored password hashes (PHC
//! strings, possibly with hostile costs), TOTP codes and base32 secrets, duty rosters (JSON),
//! division codes and health-threshold rules (TOML). An answer or an error, never a panic.
#![no_main]

use bagui_ops::access::{self, Secret, TotpGuard, TotpParams, TotpSecret};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        let _ = access::base32_decode(&String::from_utf8_lossy(data));
        return;
    };
    // A stored hash from a damaged or edited store (hostile costs are refused before work).
    let _ = access::verify_password(text, &Secret::new("correct horse battery staple"));
    // Base32 both ways.
    if let Ok(bytes) = access::base32_decode(text) {
        let again = access::base32_encode(&bytes);
        assert_eq!(access::base32_decode(&again).unwrap(), bytes);
    }
    // A TOTP code typed by a user against a fixed secret.
    let secret = TotpSecret::from_base32(&Secret::new("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ")).unwrap();
    let mut guard = TotpGuard::new();
    let _ = guard.verify(&secret, &TotpParams::BAGUI, text, 1_764_150_000_000);
    // A duty roster from a file.
    if let Ok(roster) = serde_json::from_str::<access::Roster>(text)
        && roster.validate().is_ok()
    {
        for at in [0, 1_764_150_000_000, u64::MAX / 2] {
            let _ = access::on_duty(&roster, at);
        }
    }
    // Division codes, padded or not.
    if let Ok(code) = access::canonical_division(text) {
        assert!(code.bytes().all(|b| b.is_ascii_digit()), "{code:?}");
    }
    // Threshold rules as the configuration file gives them.
    if let Ok(rule) = toml::from_str::<bagui_control_plane::thresholds::ThresholdRule>(text)
        && bagui_control_plane::thresholds::validate(std::slice::from_ref(&rule)).is_ok()
    {
        let mut watch = bagui_control_plane::thresholds::ThresholdWatch::new(vec![rule]);
        let _ = watch.observe("a", 0, &[]);
    }
});
