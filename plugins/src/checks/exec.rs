//! Runs an external check program safely: no shell, a fixed environment, its own process
//! group, a timeout and an output cap.
//!
//! - **No shell.** The command is an argv array; nothing is word-split, globbed or expanded,
//!   so a config value can never become shell syntax.
//! - **Program path.** Either absolute, or a bare name (`check_load`) looked up in the fixed
//!   [`SAFE_PATH`] — never the agent's own `PATH`, which a service manager or an attacker
//!   controlling the environment could point elsewhere. Relative paths (`./x`, `bin/x`) are
//!   refused: they would depend on the agent's working directory.
//! - **Environment.** Cleared, then only `PATH=`[`SAFE_PATH`], `LANG=C` and `LC_ALL=C`: the
//!   agent's secrets stay out of plugins, and `C` keeps numbers in perfdata as `0.5`, not
//!   `0,5`. stdin is `/dev/null`.
//! - **Process group.** The program leads a new process group, so on timeout one
//!   `kill(-pgid, SIGKILL)` also ends whatever it spawned (a `sh -c` wrapper's `sleep`), and
//!   the leader is then reaped: no zombies, no orphans left running.
//! - **Output cap.** stdout and stderr are read concurrently on two threads (reading one
//!   after the other could deadlock on a full pipe); each keeps the first
//!   [`DEFAULT_OUTPUT_CAP`] bytes, drains and discards the rest, and says it truncated.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::time::{Duration, Instant};

/// Where bare program names are looked up, in order; also the `PATH` given to the program.
pub const SAFE_PATH: &str =
    "/usr/lib/nagios/plugins:/usr/lib/monitoring-plugins:/usr/local/bin:/usr/bin:/bin";

/// Bytes of stdout (and, separately, of stderr) kept from one run.
pub const DEFAULT_OUTPUT_CAP: usize = 16 * 1024;

/// How long to wait for the output pipes to close after the program ended or was killed. A
/// descendant that escaped the process group (`setsid`) can hold them open forever; its
/// reader threads are then abandoned rather than holding up the check.
const PIPE_GRACE: Duration = Duration::from_millis(500);

/// Why a program could not be started.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("empty command")]
    EmptyCommand,
    #[error("program {0:?} is a relative path; use an absolute path or a bare name")]
    RelativePath(String),
    #[error("program {name:?} not found in {SAFE_PATH}")]
    NotFound { name: String },
    #[error("program {path} is not an executable file")]
    NotExecutable { path: PathBuf },
    #[error("starting {path}: {source}")]
    Spawn {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("waiting for {path}: {source}")]
    Wait {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// One output stream as captured.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Captured {
    /// At most the cap's worth of bytes, from the start of the stream.
    pub bytes: Vec<u8>,
    /// More was written than kept.
    pub truncated: bool,
    /// Still open when given up on: a background process the program left behind kept it.
    pub left_open: bool,
}

impl Captured {
    /// The captured bytes as text, invalid UTF-8 replaced.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The program exited (or died of a signal it did not get from us).
    Exited(ExitStatus),
    /// The timeout passed; the process group was killed and the leader reaped.
    TimedOut,
}

/// Result of one run.
#[derive(Debug, Clone)]
pub struct ExecOutput {
    /// The program's pid, which is also its process group id.
    pub pid: u32,
    pub ending: Ending,
    pub stdout: Captured,
    pub stderr: Captured,
    pub duration: Duration,
}

/// Which program to run and how long it may take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecSpec {
    /// Program and arguments, no shell.
    pub argv: Vec<String>,
    pub timeout: Duration,
    /// Bytes kept per stream.
    pub output_cap: usize,
}

/// Checks the shape of a program name without touching the filesystem (for config
/// validation): absolute, or a bare name.
pub fn check_program_name(program: &str) -> Result<(), ExecError> {
    if program.is_empty() {
        Err(ExecError::EmptyCommand)
    } else if program.starts_with('/') || !program.contains('/') {
        Ok(())
    } else {
        Err(ExecError::RelativePath(program.to_owned()))
    }
}

/// The program's full path: absolute as given, a bare name looked up in [`SAFE_PATH`].
pub fn resolve_program(program: &str) -> Result<PathBuf, ExecError> {
    check_program_name(program)?;
    if program.starts_with('/') {
        let path = PathBuf::from(program);
        return if is_executable_file(&path) {
            Ok(path)
        } else if path.exists() {
            Err(ExecError::NotExecutable { path })
        } else {
            Err(ExecError::NotFound {
                name: program.to_owned(),
            })
        };
    }
    SAFE_PATH
        .split(':')
        .map(|dir| Path::new(dir).join(program))
        .find(|path| is_executable_file(path))
        .ok_or_else(|| ExecError::NotFound {
            name: program.to_owned(),
        })
}

fn is_executable_file(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

/// Runs the program to completion or timeout. `Err` only when it could not be started.
pub fn run(spec: &ExecSpec) -> Result<ExecOutput, ExecError> {
    let program = spec.argv.first().ok_or(ExecError::EmptyCommand)?;
    let path = resolve_program(program)?;
    let started = Instant::now();
    let deadline = started + spec.timeout;
    let mut child = command(&path, &spec.argv[1..])
        .spawn()
        .map_err(|source| ExecError::Spawn {
            path: path.clone(),
            source,
        })?;
    let stdout = spawn_reader(child.stdout.take(), spec.output_cap);
    let stderr = spawn_reader(child.stderr.take(), spec.output_cap);
    let ending = match wait_until(&mut child, deadline) {
        Ok(Some(status)) => Ending::Exited(status),
        Ok(None) => {
            kill_group(&child);
            reap(&mut child, &path)?;
            Ending::TimedOut
        }
        Err(source) => {
            kill_group(&child);
            let _ = child.wait();
            return Err(ExecError::Wait { path, source });
        }
    };
    // Descendants may still hold the pipes after the leader exited: give them until the
    // deadline, then kill the group so the readers see end of file.
    let pipes_deadline = match ending {
        Ending::Exited(_) => deadline.max(Instant::now() + PIPE_GRACE),
        Ending::TimedOut => Instant::now() + PIPE_GRACE,
    };
    let mut stdout_done = stdout.wait(pipes_deadline);
    let mut stderr_done = stderr.wait(pipes_deadline);
    if !(stdout_done && stderr_done) {
        // Something still holds a pipe: most likely a descendant in the group, which this
        // kill ends. (After the leader was reaped its id could in principle be reused once the
        // group is empty, but pids are allocated cyclically: that needs pid_max new processes
        // within one check's timeout.)
        kill_group(&child);
        let grace = Instant::now() + PIPE_GRACE;
        stdout_done = stdout_done || stdout.wait(grace);
        stderr_done = stderr_done || stderr.wait(grace);
    }
    Ok(ExecOutput {
        pid: child.id(),
        ending,
        stdout: stdout.take(stdout_done),
        stderr: stderr.take(stderr_done),
        duration: started.elapsed(),
    })
}

/// The command with everything but the program's own arguments fixed.
fn command(path: &Path, args: &[String]) -> Command {
    let mut command = Command::new(path);
    command
        .args(args)
        .env_clear()
        .env("PATH", SAFE_PATH)
        .env("LANG", "C")
        .env("LC_ALL", "C")
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    command
}

/// Polls until the child exits or `deadline` passes (`Ok(None)`). Polling rather than a
/// waiter thread keeps the child unreaped until we decide, so its pid (= the group id) cannot
/// be reused by an unrelated process before we kill the group.
fn wait_until(child: &mut Child, deadline: Instant) -> std::io::Result<Option<ExitStatus>> {
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        std::thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(25));
    }
}

/// SIGKILL to the child's whole process group. Errors (the group is already gone) are fine.
fn kill_group(child: &Child) {
    let pid = rustix::process::Pid::from_child(child);
    let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
}

fn reap(child: &mut Child, path: &Path) -> Result<(), ExecError> {
    child.wait().map(drop).map_err(|source| ExecError::Wait {
        path: path.to_owned(),
        source,
    })
}

/// A pipe being read on its own thread into a shared buffer, so that what was read is kept
/// even when the reader has to be abandoned.
struct Reader {
    captured: Arc<Mutex<Captured>>,
    done: mpsc::Receiver<()>,
}

impl Reader {
    /// Whether the pipe reached end of file by `deadline`.
    fn wait(&self, deadline: Instant) -> bool {
        match self
            .done
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => true,
            Err(mpsc::RecvTimeoutError::Timeout) => false,
        }
    }

    /// What was read; `left_open` when the pipe had not reached end of file (`done` false).
    fn take(&self, done: bool) -> Captured {
        let mut captured =
            std::mem::take(&mut *self.captured.lock().unwrap_or_else(PoisonError::into_inner));
        captured.left_open = !done;
        captured
    }
}

/// Reads a pipe to its end on a thread, keeping the first `cap` bytes.
fn spawn_reader<R: Read + Send + 'static>(pipe: Option<R>, cap: usize) -> Reader {
    let captured = Arc::new(Mutex::new(Captured::default()));
    let (sender, done) = mpsc::sync_channel(1);
    if let Some(pipe) = pipe {
        let shared = Arc::clone(&captured);
        std::thread::spawn(move || {
            read_capped_into(pipe, cap, &shared);
            let _ = sender.send(());
        });
    }
    // Without a pipe the sender is dropped here, which `wait` reads as done.
    Reader { captured, done }
}

/// Keeps the first `cap` bytes and drains the rest, so the writer never blocks on a full pipe.
pub fn read_capped(pipe: impl Read, cap: usize) -> Captured {
    let captured = Mutex::new(Captured::default());
    read_capped_into(pipe, cap, &captured);
    captured
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner)
}

fn read_capped_into(mut pipe: impl Read, cap: usize, captured: &Mutex<Captured>) {
    let mut buffer = [0u8; 8192];
    loop {
        match pipe.read(&mut buffer) {
            Ok(0) => return,
            Ok(read) => {
                let mut captured = captured.lock().unwrap_or_else(PoisonError::into_inner);
                let room = cap.saturating_sub(captured.bytes.len());
                let keep = read.min(room);
                captured.bytes.extend_from_slice(&buffer[..keep]);
                captured.truncated |= keep < read;
            }
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Writes an executable `#!/bin/sh` fixture script. Fixtures may use a shell; the runner
    /// never does.
    pub(crate) fn script(dir: &Path, name: &str, body: &str) -> String {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path.to_str().unwrap().to_owned()
    }

    fn spec(argv: &[&str], timeout: Duration) -> ExecSpec {
        ExecSpec {
            argv: argv.iter().map(|arg| (*arg).to_owned()).collect(),
            timeout,
            output_cap: DEFAULT_OUTPUT_CAP,
        }
    }

    /// Whether a process is gone (or a zombie left for init, which is not ours to reap).
    fn is_gone(pid: u32) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(stat) => stat
                .rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        }
    }

    #[test]
    fn program_names_absolute_or_bare_only() {
        assert!(check_program_name("/bin/true").is_ok());
        assert!(check_program_name("check_load").is_ok());
        assert!(matches!(
            check_program_name("./check_load"),
            Err(ExecError::RelativePath(_))
        ));
        assert!(matches!(
            check_program_name("bin/x"),
            Err(ExecError::RelativePath(_))
        ));
        assert!(matches!(
            check_program_name(""),
            Err(ExecError::EmptyCommand)
        ));
        assert_eq!(
            resolve_program("true").unwrap(),
            PathBuf::from("/usr/bin/true")
        );
        assert!(matches!(
            resolve_program("no-such-program-bagui"),
            Err(ExecError::NotFound { .. })
        ));
        assert!(matches!(
            resolve_program("/etc/passwd"),
            Err(ExecError::NotExecutable { .. })
        ));
    }

    #[test]
    fn environment_is_fixed_and_no_shell_expansion_happens() {
        let output = run(&spec(&["/usr/bin/env"], Duration::from_secs(5))).unwrap();
        let mut env: Vec<String> = output.stdout.text().lines().map(str::to_owned).collect();
        env.sort();
        assert_eq!(
            env,
            [
                "LANG=C".to_owned(),
                "LC_ALL=C".to_owned(),
                format!("PATH={SAFE_PATH}")
            ]
        );
        let output = run(&spec(
            &["/bin/echo", "$HOME", "*", "`id`", "a;b"],
            Duration::from_secs(5),
        ))
        .unwrap();
        assert_eq!(output.stdout.text(), "$HOME * `id` a;b\n");
        assert!(matches!(output.ending, Ending::Exited(status) if status.success()));
    }

    #[test]
    fn timeout_kills_the_whole_group_and_reaps_the_leader() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("grandchild.pid");
        let sleeper = script(
            dir.path(),
            "sleeper",
            "sleep 60 &\necho $! > \"$1\"\necho started\nsleep 60",
        );
        let started = Instant::now();
        let output = run(&spec(
            &[&sleeper, pid_file.to_str().unwrap()],
            Duration::from_millis(500),
        ))
        .unwrap();
        let elapsed = started.elapsed();
        assert_eq!(output.ending, Ending::TimedOut);
        assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
        assert_eq!(output.stdout.text(), "started\n");
        let grandchild: u32 = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // SIGKILL delivery is asynchronous: allow a moment for the grandchild to die.
        let wait_until = Instant::now() + Duration::from_secs(2);
        while !is_gone(grandchild) && Instant::now() < wait_until {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(is_gone(grandchild), "grandchild {grandchild} still running");
        // The leader was reaped by us: no /proc entry at all, not even a zombie.
        assert!(
            std::fs::metadata(format!("/proc/{}", output.pid)).is_err(),
            "leader {} not reaped",
            output.pid
        );
    }

    #[test]
    fn output_is_capped_and_both_streams_drained() {
        let dir = tempfile::tempdir().unwrap();
        // Megabytes on both streams: reading them one after the other would deadlock.
        let noisy = script(
            dir.path(),
            "noisy",
            "head -c 3000000 /dev/zero >&2\nhead -c 5000000 /dev/zero\necho done >&2",
        );
        let output = run(&spec(&[&noisy], Duration::from_secs(20))).unwrap();
        assert!(matches!(output.ending, Ending::Exited(status) if status.success()));
        assert_eq!(output.stdout.bytes.len(), DEFAULT_OUTPUT_CAP);
        assert!(output.stdout.truncated);
        assert_eq!(output.stderr.bytes.len(), DEFAULT_OUTPUT_CAP);
        assert!(output.stderr.truncated);
        let small = run(&spec(&["/bin/echo", "hi"], Duration::from_secs(5))).unwrap();
        assert!(!small.stdout.truncated);
    }

    #[test]
    fn output_held_open_by_an_escaped_descendant_is_kept_and_bounded_in_time() {
        let dir = tempfile::tempdir().unwrap();
        // `setsid` leaves the process group, so the group kill cannot reach it; it keeps
        // stdout open after the plugin itself exited.
        let escape = script(
            dir.path(),
            "escape",
            "echo 'OK - done'\nsetsid sleep 5 &\nexit 0",
        );
        let started = Instant::now();
        let output = run(&spec(&[&escape], Duration::from_millis(800))).unwrap();
        let elapsed = started.elapsed();
        assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
        assert!(matches!(output.ending, Ending::Exited(status) if status.success()));
        assert_eq!(output.stdout.text(), "OK - done\n");
        assert!(output.stdout.left_open);
        assert!(!output.stdout.truncated);
    }

    #[test]
    fn read_capped_keeps_the_start() {
        let data: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
        let captured = read_capped(&data[..], 1000);
        assert_eq!(captured.bytes, data[..1000]);
        assert!(captured.truncated);
        let captured = read_capped(&data[..10], 1000);
        assert_eq!(captured.bytes, data[..10]);
        assert!(!captured.truncated);
    }
}
