//! Arbitrary bytes as a check program's stdout, read per the Nagios and the JSON-lines
//! conventions: results with notes and errors, never a panic. Plugins are third-party
//! programs; whatever they print must not take the agent down.
#![no_main]

use bagui_plugins::checks::{jsonl, nagios};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The runner reads stdout lossily, so every byte string reaches the parsers.
    let text = String::from_utf8_lossy(data);
    let parsed = nagios::parse_output(&text);
    assert!(!parsed.output.contains('\n'));
    assert!(parsed.notes.len() <= nagios::MAX_NOTES + 1);
    for datum in &parsed.perfdata {
        assert!(!datum.label.is_empty());
        assert!(datum.value.is_none_or(f64::is_finite));
        for range in [&datum.warn, &datum.crit].into_iter().flatten() {
            assert!(nagios::is_valid_range(range), "{range:?}");
        }
    }
    let _ = nagios::is_valid_range(&text);
    let results = jsonl::parse("fuzz", &text);
    assert!(!results.is_empty());
    assert!(results.len() <= jsonl::MAX_RESULTS + 1);
    for result in &results {
        assert!(result.status <= 3);
        assert!(result.name == "fuzz" || result.name.starts_with("fuzz/"));
    }
});
