//! `bagui-agent check` against the posture fixture trees of bagui-plugins.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/tests/fixtures/posture")
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// A copy of a fixture tree with the modes git cannot store (`NAME.modes`) applied.
fn tree(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&fixtures().join(name), dir.path());
    let modes = std::fs::read_to_string(fixtures().join(format!("{name}.modes"))).unwrap();
    for line in modes
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let (mode, path) = line.split_once(' ').unwrap();
        let mode = u32::from_str_radix(mode, 8).unwrap();
        let full = dir.path().join(path.trim_start_matches('/'));
        std::fs::set_permissions(full, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    dir
}

fn check(root: &Path, extra: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_bagui-agent"))
        .arg("check")
        .arg("--root")
        .arg(root)
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn failing_root_exits_2_with_json_results() {
    let root = tree("debian-bad");
    let out = check(root.path(), &["--output", "json"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(json["score"].as_u64().unwrap() < 100);
    let results = json["results"].as_array().unwrap();
    assert!(results.len() >= 30);
    for result in results {
        for field in ["id", "title", "severity", "result", "remediation"] {
            assert!(result[field].is_string(), "{field} in {result}");
        }
        assert!(result["evidence"].is_array());
        assert!(
            ["pass", "fail", "not_applicable", "error"]
                .contains(&result["result"].as_str().unwrap())
        );
    }
    let root_login = results.iter().find(|r| r["id"] == "BG-SSH-001").unwrap();
    assert_eq!(root_login["result"], "fail");
    assert_eq!(root_login["severity"], "high");
    assert_eq!(
        root_login["evidence"][0],
        "/etc/ssh/sshd_config:2: PermitRootLogin yes (expected no)"
    );
}

#[test]
fn passing_root_exits_0_and_prints_a_table() {
    let root = tree("rpm-good");
    // The file-owner checks (high) want root-owned files, which only root can make: this test
    // fails loudly rather than skip when run as another user (./test.sh runs as root in CI).
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(
            &std::fs::metadata(root.path().join("etc/passwd")).unwrap(),
        ),
        0,
        "run as root: the passing fixture needs root-owned files"
    );
    let out = check(root.path(), &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.starts_with("ID"), "{stdout}");
    assert!(stdout.contains("BG-SSH-001"), "{stdout}");
    assert!(stdout.contains("not_applicable"), "{stdout}");
    assert!(
        stdout.lines().last().unwrap().starts_with("score "),
        "{stdout}"
    );
}

#[test]
fn custom_policy_file_and_bad_policy() {
    let root = tree("debian-bad");
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("p.toml");
    std::fs::write(
        &policy,
        "[policy]\nname = \"mini\"\nversion = \"1\"\n\n[[check]]\nid = \"T-1\"\ntitle = \"sshd runs\"\nseverity = \"low\"\nrationale = \"r\"\nremediation = \"r\"\nmlps = \"m\"\n[check.condition]\nkind = \"process_running\"\nnames = [\"sshd\"]\n",
    )
    .unwrap();
    let out = check(
        root.path(),
        &["--policy", policy.to_str().unwrap(), "--output", "json"],
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["score"], 100);
    assert_eq!(json["results"][0]["result"], "pass");

    std::fs::write(&policy, "[policy]\nname = 1\n").unwrap();
    let out = check(root.path(), &["--policy", policy.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("loading"));
}
