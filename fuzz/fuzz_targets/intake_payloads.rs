//! Arbitrary bytes as bodies posted to the external intake (the Alertmanager webhook v4 and
//! the generic JSON format) and as RFC 3339 times: alerts within the documented limits, or an
//! error with a message, never a panic — and the deduper never passes the same notification
//! twice.
#![no_main]

use bagui_ops::intake::{self, Deduper, DeduperConfig, ExternalAlert, Subject, Verdict};
use bagui_ops::model::HOUR;
use libfuzzer_sys::fuzz_target;

/// 2026-11-26T10:00:00+08:00, the receipt time given to the generic parser.
const RECEIVED: u64 = 1_795_658_400_000;

fuzz_target!(|data: &[u8]| {
    match intake::parse_alertmanager(data) {
        Ok(notification) => check(&notification.alerts),
        Err(error) => assert!(!error.to_string().is_empty()),
    }
    match intake::parse_generic(data, RECEIVED) {
        Ok(alerts) => check(&alerts),
        Err(error) => assert!(!error.to_string().is_empty()),
    }
    if let Ok(text) = std::str::from_utf8(data) {
        // 9999-12-31T23:59:59.999Z is the latest time four year digits can write.
        if let Ok(Some(millis)) = intake::parse_rfc3339(text) {
            assert!(millis <= 253_402_300_799_999, "{text:?}");
        }
    }
});

/// The invariants of accepted alerts, and the deduper's answers for them.
fn check(alerts: &[ExternalAlert]) {
    assert!(alerts.len() <= intake::MAX_ALERTS);
    let mut deduper = Deduper::new(DeduperConfig {
        capacity: 16,
        max_key_bytes: 64 * 1024,
        ttl: HOUR,
    });
    for alert in alerts {
        assert!(!alert.dedupe_key.is_empty());
        assert!(!alert.title.is_empty());
        assert!(!alert.fingerprint.is_empty());
        match &alert.subject {
            Subject::Division(code) => assert!(intake::is_division_code(code), "{code:?}"),
            Subject::Agent(agent) => {
                assert!(!agent.is_empty() && agent.len() <= intake::MAX_ID_BYTES)
            }
            Subject::Region => {}
        }
        let first = deduper.handle_alert(alert, RECEIVED);
        let again = deduper.handle_alert(alert, RECEIVED);
        // Whatever the first answer was, the same notification straight after is not new.
        assert_ne!(
            again,
            Verdict::New,
            "{first:?} then {again:?} for {alert:?}"
        );
    }
    assert!(deduper.len() <= 16);
}
