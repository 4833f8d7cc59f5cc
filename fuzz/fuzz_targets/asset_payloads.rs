//! Arbitrary bytes as the inventory and check payloads agents report (what the control plane
//! decodes and applies): an asset snapshot, a set of changes to apply to the stored snapshot,
//! a check result. A value or an error, never a panic — and a diff applied to its base must
//! give back the new snapshot.
#![no_main]

use std::collections::HashSet;

use bagui_protocol::assets::{self, AssetChanges, AssetSnapshot, CheckResult, Section};
use bagui_protocol::messages::payload;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // A payload is one MessagePack value; trailing bytes are ignored by the decoder, so an
    // input can carry a second value in its second half (the seeds are laid out that way).
    let (first, second) = data.split_at(data.len() / 2);
    let whole = snapshot(data);
    let first_half = snapshot(first);
    let second_half = snapshot(second);

    if let Ok(result) = payload::decode::<CheckResult>(data) {
        // Compared encoded: a NaN in perfdata is not equal to itself.
        let bytes = payload::encode(&result);
        let again: CheckResult = payload::decode(&bytes).expect("re-decode a check result");
        assert_eq!(payload::encode(&again), bytes);
        let _ = result.status_text();
    }

    if let Ok(changes) = payload::decode::<AssetChanges>(data) {
        let bases = [
            Some(AssetSnapshot::default()),
            first_half.clone(),
            second_half.clone(),
        ];
        for mut base in bases.into_iter().flatten() {
            let before = base.clone();
            match base.apply(&changes.changes) {
                Ok(()) => {
                    let _ = base.compute_digest();
                }
                // On error the snapshot is left as it was.
                Err(_) => assert_eq!(base, before),
            }
        }
    }

    let snapshots: Vec<&AssetSnapshot> = [&whole, &first_half, &second_half]
        .into_iter()
        .flatten()
        .collect();
    for old in &snapshots {
        for new in &snapshots {
            round_trip_diff(old, new);
        }
    }
});

/// Decodes a snapshot and checks that it encodes back to the same value.
fn snapshot(bytes: &[u8]) -> Option<AssetSnapshot> {
    let snapshot: AssetSnapshot = payload::decode(bytes).ok()?;
    let encoded = payload::encode(&snapshot);
    let again: AssetSnapshot = payload::decode(&encoded).expect("re-decode a snapshot");
    assert_eq!(again, snapshot);
    let digest = snapshot.compute_digest();
    let mut sealed = snapshot.clone();
    sealed.seal();
    assert_eq!(sealed.digest, digest, "sealing changes the digest");
    assert_eq!(
        sealed.compute_digest(),
        digest,
        "normalizing changes the digest"
    );
    Some(snapshot)
}

/// `diff(old, new)` applied to `old` must succeed, and give `new` back (up to order and the
/// fields the digest leaves out) when every key is unique and no section of `new` failed —
/// the cases where the change stream is meant to be lossless.
fn round_trip_diff(old: &AssetSnapshot, new: &AssetSnapshot) {
    let changes = assets::diff(old, new);
    let mut applied = old.clone();
    applied
        .apply(&changes)
        .unwrap_or_else(|error| panic!("a diff does not apply to its base: {error}"));
    if new.errors.is_empty() && unique_keys(old) && unique_keys(new) {
        assert_eq!(
            applied.compute_digest(),
            new.compute_digest(),
            "diff + apply does not reproduce the new snapshot"
        );
        assert!(assets::diff(&applied, new).is_empty());
    }
    let mut carried = new.clone();
    assets::carry_failed_sections(old, &mut carried);
    for section in assets::SECTIONS {
        let _ = carried.section_failed(section);
    }
}

fn unique_keys(snapshot: &AssetSnapshot) -> bool {
    fn unique<T: Section>(items: &[T]) -> bool {
        let mut seen = HashSet::new();
        items.iter().all(|item| seen.insert(item.key()))
    }
    unique(&snapshot.disks)
        && unique(&snapshot.filesystems)
        && unique(&snapshot.nics)
        && unique(&snapshot.packages)
        && unique(&snapshot.listening)
        && unique(&snapshot.users)
        && unique(&snapshot.groups)
        && unique(&snapshot.services)
}
