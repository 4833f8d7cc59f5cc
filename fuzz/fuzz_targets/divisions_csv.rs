//! Arbitrary bytes as a division tree file (`DATA_DIR/divisions.csv`, editable by operators):
//! a tree or a clear error, never a panic; a tree that loads answers path queries.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(tree) = bagui_control_plane::divisions::Divisions::from_csv(text) {
        let root = tree.root().code.clone();
        for line in text.lines().take(64) {
            if let Some(code) = line.split(',').next() {
                let _ = tree.path_names(code);
                let _ = tree.is_within(code, &root);
            }
        }
    }
});
