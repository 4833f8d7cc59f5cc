//! Arbitrary bytes as a JSON-lines check program's stdout (the first line is the check's
//! name, the rest its output): results that keep the documented shape, survive the report
//! payload's encoding, and never a panic. (`nagios_output` covers the Nagios convention.)
#![no_main]

use bagui_plugins::checks::{jsonl, nagios};
use bagui_protocol::assets::CheckResult;
use bagui_protocol::messages::payload;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (check, stdout) = text.split_once('\n').unwrap_or(("check", &text));
    let results = jsonl::parse(check, stdout);
    assert!(!results.is_empty());
    assert!(results.len() <= jsonl::MAX_RESULTS + 1);
    for result in &results {
        assert_eq!(result.convention, jsonl::CONVENTION);
        assert!(result.status <= 3, "{result:?}");
        if result.name != check {
            let suffix = result
                .name
                .strip_prefix(check)
                .and_then(|rest| rest.strip_prefix('/'))
                .unwrap_or_else(|| panic!("result {:?} of check {check:?}", result.name));
            assert!(!suffix.is_empty() && suffix.len() <= 64, "{suffix:?}");
            assert!(
                suffix
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-')),
                "{suffix:?}"
            );
        }
        assert!(!result.output.contains('\n'), "{:?}", result.output);
        for datum in &result.perfdata {
            assert!(!datum.label.is_empty());
            for number in [datum.value, datum.min, datum.max].into_iter().flatten() {
                assert!(number.is_finite(), "{datum:?}");
            }
            for range in [&datum.warn, &datum.crit].into_iter().flatten() {
                assert!(nagios::is_valid_range(range), "{range:?}");
            }
        }
        // The result travels to the control plane as a payload: it must come back the same.
        let bytes = payload::encode(result);
        let again: CheckResult = payload::decode(&bytes).expect("re-decode a check result");
        assert_eq!(&again, result);
    }
    let unknown = jsonl::unknown(check, stdout.to_owned());
    assert_eq!(unknown.status, 3);
});
