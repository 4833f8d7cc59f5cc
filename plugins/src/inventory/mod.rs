//! Asset inventory sections: OS, hardware, listening ports, accounts, services.
//!
//! Each section is one `pub fn NAME(root: &HostRoot) -> Result<T, CollectError>`, so a section
//! that fails (an unreadable file, a hung `systemctl`) is reported on its own and never spoils
//! the others. The functions read the host through [`HostRoot`], so tests point them at fixture
//! trees under `plugins/tests/fixtures/inventory/`. The few that must run a program
//! (`systemctl`, and `ip` as a fallback for IPv4 addresses) do so only when the root is `/`,
//! without a shell and under a hard timeout.

pub mod accounts;
pub mod hardware;
pub mod os;
pub mod ports;
pub mod services;

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub use accounts::{groups, users};
pub use hardware::{disks, filesystems, machine, nics};
pub use os::os_info;
pub use ports::listening;
pub use services::services;

use crate::{CollectError, HostRoot};

/// Whether `root` is the real host (so running host programs tells about it).
pub(crate) fn is_host_root(root: &HostRoot) -> bool {
    root.path("/") == Path::new("/")
}

/// The first line of a file, trimmed; `None` when missing, unreadable or empty.
pub(crate) fn first_line(root: &HostRoot, path: &str) -> Option<String> {
    let text = root.read_optional(path)?;
    let line = text.lines().next()?.trim();
    (!line.is_empty()).then(|| line.to_owned())
}

/// Runs `program args...` (no shell, `LC_ALL=C`, stdin closed) and returns its standard output.
/// A run that takes longer than `timeout` is killed and reported as an error; so is a non-zero
/// exit.
pub(crate) fn run_command(
    program: &str,
    args: &[&str],
    timeout: Duration,
) -> Result<String, CollectError> {
    let describe = || format!("{program} {}", args.join(" "));
    let mut child = Command::new(program)
        .args(args)
        .env("LC_ALL", "C")
        .env("SYSTEMD_COLORS", "0")
        .env("SYSTEMD_PAGER", "")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|error| CollectError::Other(format!("running {}: {error}", describe())))?;
    // Read on a thread, so a child filling the pipe cannot deadlock against our wait.
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let reader = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = stdout.read_to_end(&mut bytes);
        bytes
    });
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() < timeout => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                // The reader ends when the pipe closes; a grandchild holding it open would keep
                // the thread alive, so it is not joined here.
                return Err(CollectError::Other(format!(
                    "{} did not finish within {timeout:?}; killed",
                    describe()
                )));
            }
            Err(error) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(CollectError::Other(format!(
                    "waiting for {}: {error}",
                    describe()
                )));
            }
        }
    };
    let bytes = reader.join().unwrap_or_default();
    if !status.success() {
        return Err(CollectError::Other(format!(
            "{} exited with {status}",
            describe()
        )));
    }
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

#[cfg(test)]
pub(crate) mod testutil {
    /// A throw-away directory for fixtures.
    pub struct Dir(tempfile::TempDir);

    impl Dir {
        pub fn new() -> Dir {
            Dir(tempfile::tempdir().unwrap())
        }
        pub fn path(&self) -> &std::path::Path {
            self.0.path()
        }
        pub fn root(&self) -> crate::HostRoot {
            crate::HostRoot::new(self.0.path())
        }
        pub fn write(&self, relative: &str, contents: &str) {
            let path = self.0.path().join(relative);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, contents).unwrap();
        }
        pub fn mkdir(&self, relative: &str) {
            std::fs::create_dir_all(self.0.path().join(relative)).unwrap();
        }
    }

    /// The checked-in fixture tree `plugins/tests/fixtures/inventory/NAME`.
    pub fn fixture(name: &str) -> crate::HostRoot {
        crate::HostRoot::new(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/inventory")
                .join(name),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_command_returns_output_and_kills_on_timeout() {
        let out = run_command("echo", &["hello"], Duration::from_secs(5)).unwrap();
        assert_eq!(out, "hello\n");
        let started = Instant::now();
        let error = run_command("sleep", &["30"], Duration::from_millis(200)).unwrap_err();
        assert!(error.to_string().contains("killed"), "{error}");
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(run_command("false", &[], Duration::from_secs(5)).is_err());
        assert!(run_command("/nonexistent/program", &[], Duration::from_secs(5)).is_err());
    }

    #[test]
    fn host_root_detection() {
        assert!(is_host_root(&HostRoot::default()));
        assert!(!is_host_root(&HostRoot::new("/tmp")));
    }
}
