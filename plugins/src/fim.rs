//! File integrity monitoring: SM3 digests of the files an intruder edits to stay (accounts,
//! sudo, sshd, PAM, cron, the dynamic loader), reported as changes against a persisted baseline.
//!
//! # Model
//!
//! * **Entries.** Every watched path (a file, or a directory walked down to
//!   [`FimConfig::max_depth`]) becomes a [`FimEntry`]: SM3 of the content (streamed), size, full
//!   `st_mode` (type bits included, so a file replaced by a link shows), `uid:gid` and mtime.
//!   Symlinks are recorded, never followed: their "digest" is the SM3 of the link target. Files
//!   bigger than [`FimConfig::max_file_size`] are not hashed: they are compared by size and
//!   mtime only. A file that cannot be read keeps its metadata and carries a note instead of a
//!   digest; nothing on the host can make a scan panic.
//! * **Baseline.** What the control plane has been told, persisted (msgpack) at the path given
//!   to [`FimCollector::new`]. The first scan of a path the baseline has never seen is silent:
//!   a fresh agent (or a newly configured path) builds its baseline without a flood of
//!   `created` events. After a restart the first scan diffs against the persisted baseline, so
//!   a change made while the agent was down is reported once. The baseline moves forward only
//!   in [`Collector::committed`]; until then every run re-reports the same differences.
//! * **Real time.** An inotify instance (non-blocking) watches every walked directory and the
//!   parent directory of each configured path (so a `/etc/passwd` replaced by rename, or a
//!   `/etc/sudoers.d` created later, is seen). Each run drains it with one non-blocking read
//!   and re-examines only the touched paths; an idle run costs that one `read` returning
//!   `EAGAIN`. A queue overflow, or a read error, schedules a full scan. Without inotify
//!   (init failed: no support, `max_user_instances` reached) the collector falls back to full
//!   scans every `rescan_interval.min(60 s)` and says so once on stderr (and in
//!   [`FimCollector::status`]).
//! * **Full scans** run at start, every [`FimConfig::rescan_interval`] (12 h) to catch what
//!   inotify cannot (e.g. a watch limit hit, a file changed through another mount), after an
//!   overflow, and on [`Collector::request_full`] (there is no FIM snapshot payload: "full"
//!   means "look at everything again").

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::OsStr;
use std::io::{Read, Write};
use std::mem::MaybeUninit;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bagui_protocol::Lane;
use bagui_protocol::assets::{FIM_EVENTS, FimEvent, FimEvents};
use bagui_protocol::digest::hex;
use bagui_protocol::messages::payload;
use rustix::fd::OwnedFd;
use rustix::fs::inotify;
use rustix::io::Errno;
use serde::{Deserialize, Serialize};
use sm3::{Digest, Sm3};

use crate::{CollectError, Collector, HostRoot, Output};

/// The paths watched by default: accounts, privilege, remote login, authentication,
/// scheduled jobs, name resolution and the dynamic loader — where persistence is planted.
pub const DEFAULT_PATHS: &[&str] = &[
    "/etc/passwd",
    "/etc/shadow",
    "/etc/group",
    "/etc/gshadow",
    "/etc/sudoers",
    "/etc/sudoers.d/",
    "/etc/ssh/",
    "/etc/pam.d/",
    "/etc/security/",
    "/etc/crontab",
    "/etc/cron.d/",
    "/etc/cron.hourly/",
    "/etc/cron.daily/",
    "/etc/cron.weekly/",
    "/etc/cron.monthly/",
    "/var/spool/cron/",
    "/etc/hosts",
    "/etc/ld.so.preload",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d/",
    "/etc/profile",
    "/etc/profile.d/",
    "/etc/rc.local",
    "/root/.ssh/",
];

/// Events per `FIM_EVENTS` payload. One run normally fits in one payload; a mass change
/// (a package upgrade rewriting `/etc/pam.d`) is split so no payload nears the 1 MiB frame
/// limit (an event encodes to roughly 300 bytes).
pub const MAX_EVENTS_PER_PAYLOAD: usize = 1000;

/// Touched paths remembered between two runs; beyond this a full scan is cheaper.
const MAX_TOUCHED: usize = 4096;
/// inotify events handled per run, so an event storm cannot keep one run going forever;
/// the rest stay queued for the next run.
const MAX_EVENTS_PER_DRAIN: usize = 65_536;
/// Read buffer for hashing and for inotify.
const BUFFER_LEN: usize = 64 * 1024;
/// Without inotify, full scans are at least this frequent.
const FALLBACK_RESCAN: Duration = Duration::from_secs(60);

/// What to watch and how hard to look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FimConfig {
    /// Absolute host paths (under the collector's [`HostRoot`]). A directory is walked down to
    /// `max_depth`; a trailing `/` is optional. Defaults to [`DEFAULT_PATHS`]; configuration
    /// adds to it with [`FimConfig::with_extra_paths`].
    pub paths: Vec<String>,
    /// Full re-scan period (default 12 h): the safety net under inotify.
    pub rescan_interval: Duration,
    /// Entries (files, links, directories) tracked at most (default 50,000); the rest are
    /// skipped and noted, so a misconfigured path cannot eat the terminal's memory.
    pub max_files: usize,
    /// Files bigger than this (default 64 MiB) are not hashed, only compared by size and mtime:
    /// hashing them would cost seconds of a weak CPU per scan, and nothing in the default list
    /// is that big.
    pub max_file_size: u64,
    /// Directory levels walked below a configured directory (default 6).
    pub max_depth: usize,
}

impl Default for FimConfig {
    fn default() -> FimConfig {
        FimConfig {
            paths: DEFAULT_PATHS.iter().map(|path| path.to_string()).collect(),
            rescan_interval: Duration::from_secs(12 * 3600),
            max_files: 50_000,
            max_file_size: 64 * 1024 * 1024,
            max_depth: 6,
        }
    }
}

impl FimConfig {
    /// The defaults plus `extra` (duplicates dropped).
    pub fn with_extra_paths(extra: impl IntoIterator<Item = String>) -> FimConfig {
        let mut config = FimConfig::default();
        for path in extra {
            if !config.paths.contains(&path) {
                config.paths.push(path);
            }
        }
        config
    }
}

/// What was seen of one path.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct FimEntry {
    /// SM3 hex of the content (of the target string for a symlink); empty when not hashed
    /// (a directory, a special file, too big, unreadable).
    #[serde(rename = "h")]
    pub sm3: String,
    #[serde(rename = "s")]
    pub size: u64,
    /// Full `st_mode`, file type bits included.
    #[serde(rename = "m")]
    pub mode: u32,
    #[serde(rename = "u")]
    pub uid: u32,
    #[serde(rename = "g")]
    pub gid: u32,
    /// Modification time, ms since the Unix epoch.
    #[serde(rename = "t")]
    pub mtime_ms: i64,
    /// Symlink target.
    #[serde(rename = "l")]
    pub link: String,
    /// Why something is missing: `not hashed: …`, `unreadable: …`.
    #[serde(rename = "e")]
    pub note: String,
}

impl FimEntry {
    const TYPE_MASK: u32 = 0o170_000;
    const DIRECTORY: u32 = 0o040_000;
    const REGULAR: u32 = 0o100_000;

    /// `uid:gid`, the form used on the wire.
    pub fn owner(&self) -> String {
        format!("{}:{}", self.uid, self.gid)
    }

    fn is_dir(&self) -> bool {
        self.mode & Self::TYPE_MASK == Self::DIRECTORY
    }

    /// Whether the content differs. Digests decide when both sides have one; otherwise (too
    /// big, unreadable) size and mtime stand in. A directory's content is its children, which
    /// have entries of their own.
    fn content_differs(&self, other: &FimEntry) -> bool {
        if self.mode & Self::TYPE_MASK != other.mode & Self::TYPE_MASK {
            return true;
        }
        if self.is_dir() {
            return false;
        }
        if !self.sm3.is_empty() && !other.sm3.is_empty() {
            return self.sm3 != other.sm3;
        }
        self.size != other.size || self.mtime_ms != other.mtime_ms || self.link != other.link
    }

    fn metadata_differs(&self, other: &FimEntry) -> bool {
        self.mode != other.mode || self.uid != other.uid || self.gid != other.gid
    }
}

/// Why the collector could not do something it needed outside a scan (scan problems are
/// notes on entries, never errors).
#[derive(Debug, thiserror::Error)]
pub enum FimError {
    #[error("reading the FIM baseline {path}: {source}")]
    ReadBaseline {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("decoding the FIM baseline {path}: {source}")]
    DecodeBaseline {
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("writing the FIM baseline {path}: {source}")]
    WriteBaseline {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("inotify: {0}")]
    Inotify(#[source] Errno),
}

/// The persisted baseline: what the control plane knows.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
struct Baseline {
    /// Normalised configured paths this baseline covers: a path missing here is new and its
    /// first scan is silent.
    roots: Vec<String>,
    entries: BTreeMap<String, FimEntry>,
}

/// Loads the baseline; a missing file is an empty baseline (first start).
fn load_baseline(path: &Path) -> Result<Baseline, FimError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Baseline::default());
        }
        Err(source) => {
            return Err(FimError::ReadBaseline {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    payload::decode(&bytes).map_err(|error| FimError::DecodeBaseline {
        path: path.to_path_buf(),
        source: Box::new(error),
    })
}

/// Writes the baseline atomically (temporary file, fsync, rename), mode 0600: it lists what
/// is on the host and how it is protected.
fn save_baseline(path: &Path, baseline: &Baseline) -> Result<(), FimError> {
    let wrap = |source| FimError::WriteBaseline {
        path: path.to_path_buf(),
        source,
    };
    let temporary = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)
        .map_err(wrap)?;
    file.write_all(&payload::encode(baseline))
        .and_then(|()| file.sync_all())
        .map_err(wrap)?;
    std::fs::rename(&temporary, path).map_err(wrap)?;
    if let Some(parent) = path.parent()
        && let Ok(directory) = std::fs::File::open(parent)
    {
        let _ = directory.sync_all();
    }
    Ok(())
}

/// A configured path, normalised (`/etc/ssh/` → `/etc/ssh`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct WatchRoot {
    key: String,
    full: PathBuf,
}

fn normalise(path: &str) -> Option<String> {
    let trimmed = path.trim().trim_end_matches('/');
    if trimmed.is_empty() {
        // `/` itself: a whole-filesystem watch is not file integrity monitoring.
        return None;
    }
    Some(if trimmed.starts_with('/') {
        trimmed.to_string()
    } else {
        format!("/{trimmed}")
    })
}

/// Depth of `key` below `root` (0 = the root itself), if it is inside it.
fn depth_below(root: &str, key: &str) -> Option<usize> {
    if key == root {
        return Some(0);
    }
    let rest = key.strip_prefix(root)?.strip_prefix('/')?;
    Some(rest.split('/').count())
}

/// `parent/name` as a host key.
fn child_key(parent: &str, name: &str) -> String {
    if parent.ends_with('/') {
        format!("{parent}{name}")
    } else {
        format!("{parent}/{name}")
    }
}

/// Seconds + nanoseconds → ms.
fn mtime_ms(metadata: &std::fs::Metadata) -> i64 {
    metadata
        .mtime()
        .saturating_mul(1000)
        .saturating_add(metadata.mtime_nsec() / 1_000_000)
}

/// Streams `file` through SM3.
fn sm3_of(mut file: impl Read, buffer: &mut [u8]) -> std::io::Result<(String, u64)> {
    let mut hasher = Sm3::new();
    let mut total = 0u64;
    loop {
        match file.read(buffer) {
            Ok(0) => break,
            Ok(read) => {
                hasher.update(&buffer[..read]);
                total += read as u64;
            }
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok((hex(&hasher.finalize()), total))
}

/// Opens a regular file for hashing without following a link or blocking on a FIFO swapped
/// in since the `lstat`, and checks it is still the file that was `lstat`ed.
fn open_regular(full: &Path, seen: &std::fs::Metadata) -> std::io::Result<std::fs::File> {
    let flags = rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(i32::try_from(flags.bits()).unwrap_or(0))
        .open(full)?;
    let opened = file.metadata()?;
    if opened.dev() != seen.dev() || opened.ino() != seen.ino() || !opened.is_file() {
        return Err(std::io::Error::other("replaced while being read"));
    }
    Ok(file)
}

/// Reads one path (never following a final symlink). `Err` only when `lstat` failed.
fn read_entry(full: &Path, max_file_size: u64, buffer: &mut [u8]) -> std::io::Result<FimEntry> {
    let metadata = std::fs::symlink_metadata(full)?;
    let mut entry = FimEntry {
        size: metadata.size(),
        mode: metadata.mode(),
        uid: metadata.uid(),
        gid: metadata.gid(),
        mtime_ms: mtime_ms(&metadata),
        ..FimEntry::default()
    };
    if metadata.file_type().is_symlink() {
        match std::fs::read_link(full) {
            Ok(target) => {
                let target = target.as_os_str().as_bytes();
                entry.sm3 = hex(&Sm3::digest(target));
                entry.link = String::from_utf8_lossy(target).into_owned();
            }
            Err(error) => entry.note = format!("unreadable: {error}"),
        }
    } else if entry.mode & FimEntry::TYPE_MASK == FimEntry::REGULAR {
        if entry.size > max_file_size {
            entry.note = format!("not hashed: larger than {max_file_size} bytes");
        } else {
            match open_regular(full, &metadata).and_then(|file| sm3_of(file, buffer)) {
                Ok((digest, _)) => entry.sm3 = digest,
                Err(error) => entry.note = format!("unreadable: {error}"),
            }
        }
    }
    Ok(entry)
}

/// Walks paths into a map of entries, registering directories with inotify on the way.
struct Scanner<'a> {
    config: &'a FimConfig,
    /// The last view of what is being scanned: an entry whose `lstat` fails for a reason
    /// other than "gone" keeps its previous state (with a note) rather than vanish.
    previous: &'a BTreeMap<String, FimEntry>,
    out: BTreeMap<String, FimEntry>,
    /// Entries that may still be added.
    budget: usize,
    watcher: Option<&'a mut Watcher>,
    buffer: Vec<u8>,
    /// Something was skipped because of `max_files`.
    truncated: bool,
    files: usize,
    bytes: u64,
}

impl<'a> Scanner<'a> {
    fn new(
        config: &'a FimConfig,
        previous: &'a BTreeMap<String, FimEntry>,
        budget: usize,
        watcher: Option<&'a mut Watcher>,
    ) -> Scanner<'a> {
        Scanner {
            config,
            previous,
            out: BTreeMap::new(),
            budget,
            watcher,
            buffer: vec![0; BUFFER_LEN],
            truncated: false,
            files: 0,
            bytes: 0,
        }
    }

    /// Watches the directory holding a configured path, so the path being created, deleted or
    /// replaced by rename is seen. Its unrelated children are filtered out by scope.
    fn watch_parent(&mut self, root: &WatchRoot) {
        if let (Some(watcher), Some(parent_full)) =
            (self.watcher.as_deref_mut(), root.full.parent())
        {
            let parent_key = match root.key.rfind('/') {
                Some(0) | None => "/".to_string(),
                Some(index) => root.key[..index].to_string(),
            };
            watcher.watch(&parent_key, parent_full);
        }
    }

    fn insert(&mut self, key: String, entry: FimEntry) -> bool {
        if !self.out.contains_key(&key) {
            if self.budget == 0 {
                self.truncated = true;
                return false;
            }
            self.budget -= 1;
        }
        if entry.mode & FimEntry::TYPE_MASK == FimEntry::REGULAR {
            self.files += 1;
            if !entry.sm3.is_empty() {
                self.bytes += entry.size;
            }
        }
        self.out.insert(key, entry);
        true
    }

    /// Records `key` and, for a directory above the depth limit, its children.
    fn visit(&mut self, key: String, full: PathBuf, depth: usize) {
        let entry = match read_entry(&full, self.config.max_file_size, &mut self.buffer) {
            Ok(entry) => entry,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return,
            Err(error) if error.raw_os_error() == Some(Errno::NOTDIR.raw_os_error()) => return,
            Err(error) => {
                let mut entry = self.previous.get(&key).cloned().unwrap_or_default();
                entry.note = format!("unreadable: {error}");
                self.insert(key, entry);
                return;
            }
        };
        let walk = entry.is_dir() && depth < self.config.max_depth;
        if !self.insert(key.clone(), entry) || !walk {
            return;
        }
        if let Some(watcher) = self.watcher.as_deref_mut() {
            watcher.watch(&key, &full);
        }
        match std::fs::read_dir(&full) {
            Ok(children) => {
                let mut names: Vec<_> = children
                    .filter_map(|child| child.ok())
                    .map(|c| c.file_name())
                    .collect();
                names.sort();
                for name in names {
                    let child = child_key(&key, &name.to_string_lossy());
                    self.visit(child, full.join(&name), depth + 1);
                }
            }
            Err(error) => {
                if let Some(entry) = self.out.get_mut(&key) {
                    entry.note = format!("unlistable: {error}");
                }
            }
        }
    }
}

/// The inotify instance and which directory each watch descriptor stands for.
struct Watcher {
    fd: OwnedFd,
    /// wd → (host key, full path).
    dirs: HashMap<i32, (String, PathBuf)>,
    by_key: HashMap<String, i32>,
    buffer: Vec<MaybeUninit<u8>>,
    /// The first `add_watch` failure (e.g. `max_user_watches` reached), for the status.
    watch_error: Option<String>,
}

/// What one drain of the inotify queue found.
#[derive(Debug, Default)]
struct Drained {
    /// Host key → full path of every path an event named.
    touched: BTreeMap<String, PathBuf>,
    /// The kernel dropped events (or reading failed): only a full scan is safe.
    overflow: bool,
}

impl Watcher {
    fn new() -> Result<Watcher, FimError> {
        let fd = inotify::init(inotify::CreateFlags::CLOEXEC | inotify::CreateFlags::NONBLOCK)
            .map_err(FimError::Inotify)?;
        Ok(Watcher {
            fd,
            dirs: HashMap::new(),
            by_key: HashMap::new(),
            buffer: vec![MaybeUninit::uninit(); BUFFER_LEN],
            watch_error: None,
        })
    }

    fn flags() -> inotify::WatchFlags {
        use inotify::WatchFlags as W;
        W::MODIFY
            | W::CLOSE_WRITE
            | W::ATTRIB
            | W::CREATE
            | W::DELETE
            | W::DELETE_SELF
            | W::MOVED_FROM
            | W::MOVED_TO
            | W::MOVE_SELF
            | W::DONT_FOLLOW
            | W::ONLYDIR
            | W::EXCL_UNLINK
    }

    /// Watches a directory (idempotent). A failure is remembered, not fatal: the periodic
    /// scan still covers the directory.
    fn watch(&mut self, key: &str, full: &Path) {
        if self.by_key.contains_key(key) {
            return;
        }
        match inotify::add_watch(&self.fd, full, Self::flags()) {
            Ok(wd) => {
                if let Some((old_key, _)) =
                    self.dirs.insert(wd, (key.to_string(), full.to_path_buf()))
                {
                    self.by_key.remove(&old_key);
                }
                self.by_key.insert(key.to_string(), wd);
            }
            Err(Errno::NOENT | Errno::NOTDIR) => {}
            Err(error) => {
                if self.watch_error.is_none() {
                    eprintln!(
                        "fim: cannot watch {}: {error}; relying on periodic scans for it",
                        full.display()
                    );
                    self.watch_error = Some(format!("{}: {error}", full.display()));
                }
            }
        }
    }

    fn forget(&mut self, wd: i32) {
        if let Some((key, _)) = self.dirs.remove(&wd) {
            self.by_key.remove(&key);
        }
    }

    /// Reads everything queued, without blocking.
    fn drain(&mut self, in_scope: impl Fn(&str) -> bool) -> Drained {
        let mut drained = Drained::default();
        let mut forgotten = Vec::new();
        let mut handled = 0;
        let mut reader = inotify::Reader::new(&self.fd, &mut self.buffer);
        while handled < MAX_EVENTS_PER_DRAIN {
            let event = match reader.next() {
                Ok(event) => event,
                Err(Errno::AGAIN) => break,
                Err(Errno::INTR) => continue,
                Err(error) => {
                    eprintln!("fim: reading inotify: {error}; scheduling a full scan");
                    drained.overflow = true;
                    break;
                }
            };
            handled += 1;
            let flags = event.events();
            if flags.contains(inotify::ReadFlags::QUEUE_OVERFLOW) {
                drained.overflow = true;
                continue;
            }
            let Some((dir_key, dir_full)) = self.dirs.get(&event.wd()) else {
                continue;
            };
            if flags.contains(inotify::ReadFlags::IGNORED) {
                // The directory is gone: its watch no longer names `dir_key`.
                forgotten.push((event.wd(), false));
            } else if flags.contains(inotify::ReadFlags::MOVE_SELF) {
                // The directory is now elsewhere: likewise.
                forgotten.push((event.wd(), true));
            }
            let (key, full) = match event.file_name() {
                Some(name) if !name.to_bytes().is_empty() => {
                    let name = OsStr::from_bytes(name.to_bytes());
                    (
                        child_key(dir_key, &name.to_string_lossy()),
                        dir_full.join(name),
                    )
                }
                _ => (dir_key.clone(), dir_full.clone()),
            };
            if in_scope(&key) {
                drained.touched.insert(key, full);
            }
        }
        for (wd, moved) in forgotten {
            if moved {
                // Still watching the directory at its new place: stop. (After `IGNORED` the
                // kernel has already dropped the watch.)
                let _ = inotify::remove_watch(&self.fd, wd);
            }
            self.forget(wd);
        }
        drained
    }
}

/// Differences found by the last `collect`, applied to the baseline by `committed`.
#[derive(Debug, Default)]
struct Pending {
    changes: Vec<(String, Option<FimEntry>)>,
    roots: Vec<String>,
}

/// Mutable state, behind one mutex: runs never overlap, so it is never contended.
struct State {
    baseline: Baseline,
    /// The latest view of the host.
    current: BTreeMap<String, FimEntry>,
    /// Keys where `current` may differ from the baseline.
    dirty: BTreeSet<String>,
    pending: Option<Pending>,
    watcher: Option<Watcher>,
    last_full: Option<Instant>,
    needs_full: bool,
    /// Touched paths not yet examined (kept across a run that did a full scan instead).
    touched: BTreeMap<String, PathBuf>,
}

/// Whether inotify is in use, and how big the watch is; for logs and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FimStatus {
    pub realtime: bool,
    /// Why not real time, or which watch failed.
    pub note: Option<String>,
    pub watched_dirs: usize,
    pub entries: usize,
    pub baseline_entries: usize,
}

/// The FIM collector: see the module documentation.
pub struct FimCollector {
    config: FimConfig,
    host: HostRoot,
    roots: Vec<WatchRoot>,
    /// `roots` keys, as stored in the baseline.
    root_keys: Vec<String>,
    baseline_path: PathBuf,
    state: Mutex<State>,
    full_requested: AtomicBool,
    /// Why inotify is not used, if it is not.
    inotify_error: Option<String>,
}

impl std::fmt::Debug for FimCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FimCollector")
            .field("roots", &self.roots)
            .field("baseline_path", &self.baseline_path)
            .finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl FimCollector {
    /// `baseline_path` (in the agent's state directory) holds what the control plane has been
    /// told. A missing one means a first start: the first scan is silent. An unreadable one is
    /// reported on stderr and treated the same way (better a silent rebuild than a flood).
    pub fn new(host: HostRoot, config: FimConfig, baseline_path: PathBuf) -> FimCollector {
        let baseline = load_baseline(&baseline_path).unwrap_or_else(|error| {
            eprintln!("fim: {error}; rebuilding the baseline silently");
            Baseline::default()
        });
        let mut keys: Vec<String> = config.paths.iter().filter_map(|p| normalise(p)).collect();
        keys.sort();
        keys.dedup();
        let roots = keys
            .iter()
            .map(|key| WatchRoot {
                full: host.path(key),
                key: key.clone(),
            })
            .collect();
        let (watcher, inotify_error) = match Watcher::new() {
            Ok(watcher) => (Some(watcher), None),
            Err(error) => {
                let fallback = config.rescan_interval.min(FALLBACK_RESCAN);
                eprintln!(
                    "fim: {error}; no real-time events, full scans every {fallback:?} instead"
                );
                (None, Some(error.to_string()))
            }
        };
        FimCollector {
            config,
            host,
            roots,
            root_keys: keys,
            baseline_path,
            state: Mutex::new(State {
                baseline,
                current: BTreeMap::new(),
                dirty: BTreeSet::new(),
                pending: None,
                watcher,
                last_full: None,
                needs_full: true,
                touched: BTreeMap::new(),
            }),
            full_requested: AtomicBool::new(false),
            inotify_error,
        }
    }

    /// The host root this collector reads.
    pub fn host(&self) -> &HostRoot {
        &self.host
    }

    pub fn status(&self) -> FimStatus {
        let state = lock(&self.state);
        FimStatus {
            realtime: state.watcher.is_some(),
            note: self
                .inotify_error
                .clone()
                .or_else(|| state.watcher.as_ref().and_then(|w| w.watch_error.clone())),
            watched_dirs: state.watcher.as_ref().map_or(0, |w| w.dirs.len()),
            entries: state.current.len(),
            baseline_entries: state.baseline.entries.len(),
        }
    }

    /// Full scans this often: the configured interval, or at most a minute without inotify.
    fn rescan_every(&self, realtime: bool) -> Duration {
        if realtime {
            self.config.rescan_interval
        } else {
            self.config.rescan_interval.min(FALLBACK_RESCAN)
        }
    }

    /// Depth of `key` below the configured path containing it, if one does (within depth).
    fn scope_depth(&self, key: &str) -> Option<usize> {
        self.roots
            .iter()
            .filter_map(|root| depth_below(&root.key, key))
            .filter(|depth| *depth <= self.config.max_depth)
            .min()
    }

    /// Whether a difference at `key` is reported: only under a configured path the baseline
    /// already covers (a new path's first scan builds its baseline silently).
    fn reported(&self, baseline_roots: &[String], key: &str) -> bool {
        self.roots
            .iter()
            .any(|root| depth_below(&root.key, key).is_some() && baseline_roots.contains(&root.key))
    }

    /// Rebuilds `current` from scratch.
    fn full_scan(&self, state: &mut State) {
        let State {
            current,
            watcher,
            dirty,
            baseline,
            ..
        } = state;
        let mut scanner = Scanner::new(
            &self.config,
            current,
            self.config.max_files,
            watcher.as_mut(),
        );
        for root in &self.roots {
            scanner.watch_parent(root);
            scanner.visit(root.key.clone(), root.full.clone(), 0);
        }
        if scanner.truncated {
            eprintln!(
                "fim: more than {} entries under the watched paths; the rest are not monitored",
                self.config.max_files
            );
        }
        let fresh = scanner.out;
        dirty.extend(baseline.entries.keys().cloned());
        dirty.extend(current.keys().cloned());
        dirty.extend(fresh.keys().cloned());
        *current = fresh;
        state.last_full = Some(Instant::now());
        state.needs_full = false;
        state.touched.clear();
    }

    /// Re-examines the paths inotify named (and everything below a named directory).
    fn rescan_touched(&self, state: &mut State) {
        let touched = std::mem::take(&mut state.touched);
        for (key, full) in touched {
            let Some(depth) = self.scope_depth(&key) else {
                continue;
            };
            let prefix = child_key(&key, "");
            let mut old = BTreeMap::new();
            if let Some(entry) = state.current.remove(&key) {
                old.insert(key.clone(), entry);
            }
            let below: Vec<String> = state
                .current
                .range(prefix.clone()..)
                .take_while(|(k, _)| k.starts_with(&prefix))
                .map(|(k, _)| k.clone())
                .collect();
            for k in below {
                if let Some(entry) = state.current.remove(&k) {
                    old.insert(k, entry);
                }
            }
            let budget = self.config.max_files.saturating_sub(state.current.len());
            let mut scanner = Scanner::new(&self.config, &old, budget, state.watcher.as_mut());
            scanner.visit(key, full, depth);
            let fresh = scanner.out;
            state.dirty.extend(old.into_keys());
            state.dirty.extend(fresh.keys().cloned());
            state.current.extend(fresh);
        }
    }

    /// Turns the dirty keys into events and the pending baseline update.
    fn diff(&self, state: &mut State, now_ms: u64) -> Vec<FimEvent> {
        let mut events = Vec::new();
        let mut pending = Pending {
            changes: Vec::new(),
            roots: self.root_keys.clone(),
        };
        let dirty = std::mem::take(&mut state.dirty);
        for key in dirty {
            let old = state.baseline.entries.get(&key);
            let new = state.current.get(&key);
            if old == new {
                continue;
            }
            if self.reported(&state.baseline.roots, &key)
                && let Some(event) = event(&key, old, new, now_ms)
            {
                events.push(event);
            }
            pending.changes.push((key.clone(), new.cloned()));
            state.dirty.insert(key);
        }
        state.pending = Some(pending);
        events
    }
}

/// The event for one path, if the difference is one worth reporting (not, say, an mtime
/// touched without a content change).
fn event(
    path: &str,
    old: Option<&FimEntry>,
    new: Option<&FimEntry>,
    now_ms: u64,
) -> Option<FimEvent> {
    let change = match (old, new) {
        (None, None) => return None,
        (None, Some(_)) => "created",
        (Some(_), None) => "deleted",
        (Some(old), Some(new)) if old.content_differs(new) => "modified",
        (Some(old), Some(new)) if old.metadata_differs(new) => "metadata",
        (Some(_), Some(_)) => return None,
    };
    let blank = FimEntry::default();
    let (before, after) = (old.unwrap_or(&blank), new.unwrap_or(&blank));
    Some(FimEvent {
        path: path.to_string(),
        change: change.to_string(),
        old_sm3: before.sm3.clone(),
        new_sm3: after.sm3.clone(),
        old_size: before.size,
        new_size: after.size,
        old_mode: before.mode,
        new_mode: after.mode,
        old_owner: old.map(FimEntry::owner).unwrap_or_default(),
        new_owner: new.map(FimEntry::owner).unwrap_or_default(),
        time_ms: now_ms,
    })
}

fn outputs(events: Vec<FimEvent>) -> Vec<Output> {
    events
        .chunks(MAX_EVENTS_PER_PAYLOAD)
        .map(|chunk| Output {
            lane: Lane::Security,
            kind: FIM_EVENTS,
            body: payload::encode(&FimEvents {
                events: chunk.to_vec(),
            }),
        })
        .collect()
}

impl Collector for FimCollector {
    fn name(&self) -> &'static str {
        "fim"
    }

    /// One second with inotify: an idle run is one non-blocking `read`, and a change leaves
    /// within a second. Without inotify, only full scans are left to do.
    fn interval(&self) -> Duration {
        if self.inotify_error.is_none() {
            Duration::from_secs(1)
        } else {
            self.rescan_every(false)
        }
    }

    /// A full scan hashes everything: tens of MiB on a slow terminal disk. Longer than the
    /// interval on purpose: the scheduler waits for a run before the next tick.
    fn deadline(&self) -> Duration {
        Duration::from_secs(120)
    }

    /// With inotify, an idle tick is a zero-timeout `poll` of the inotify descriptor on the
    /// scheduler's thread: no thread hand-off, no `read`, while nothing changed.
    fn is_due(&self) -> bool {
        use rustix::event::{PollFd, PollFlags, Timespec, poll};
        let Ok(state) = self.state.try_lock() else {
            return true;
        };
        let Some(watcher) = state.watcher.as_ref() else {
            return true;
        };
        if state.needs_full
            || !state.touched.is_empty()
            || !state.dirty.is_empty()
            || state.baseline.roots != self.root_keys
            || self.full_requested.load(Ordering::SeqCst)
            || state
                .last_full
                .is_none_or(|last| last.elapsed() >= self.rescan_every(true))
        {
            return true;
        }
        let mut fds = [PollFd::new(&watcher.fd, PollFlags::IN)];
        let zero = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        match poll(&mut fds, Some(&zero)) {
            Ok(ready) => ready > 0,
            // Let the run find out what is wrong.
            Err(_) => true,
        }
    }

    fn collect(&self, now_ms: u64) -> Result<Vec<Output>, CollectError> {
        let mut guard = lock(&self.state);
        let state = &mut *guard;
        if let Some(watcher) = state.watcher.as_mut() {
            let drained = watcher.drain(|key| self.scope_depth(key).is_some());
            state.needs_full |= drained.overflow;
            state.touched.extend(drained.touched);
            if state.touched.len() > MAX_TOUCHED {
                state.needs_full = true;
            }
        }
        let realtime = state.watcher.is_some();
        let due = state
            .last_full
            .is_none_or(|last| last.elapsed() >= self.rescan_every(realtime));
        if due || state.needs_full || self.full_requested.swap(false, Ordering::SeqCst) {
            self.full_scan(state);
        } else if !state.touched.is_empty() {
            self.rescan_touched(state);
        }
        if state.dirty.is_empty() && state.baseline.roots == self.root_keys {
            state.pending = None;
            return Ok(Vec::new());
        }
        let events = self.diff(state, now_ms);
        Ok(outputs(events))
    }

    fn committed(&self) {
        let mut guard = lock(&self.state);
        let state = &mut *guard;
        let Some(pending) = state.pending.take() else {
            return;
        };
        let changed = !pending.changes.is_empty();
        for (key, entry) in pending.changes {
            match entry {
                Some(entry) => {
                    state.baseline.entries.insert(key.clone(), entry);
                }
                None => {
                    state.baseline.entries.remove(&key);
                }
            }
            if state.baseline.entries.get(&key) == state.current.get(&key) {
                state.dirty.remove(&key);
            }
        }
        let roots_changed = state.baseline.roots != pending.roots;
        state.baseline.roots = pending.roots;
        if !changed && !roots_changed {
            return;
        }
        if let Err(error) = save_baseline(&self.baseline_path, &state.baseline) {
            // The control plane has the events; without the file a restart re-reports the
            // differences since the last saved baseline, which is noisy but loses nothing.
            eprintln!("fim: {error}");
        }
    }

    fn request_full(&self) {
        self.full_requested.store(true, Ordering::SeqCst);
    }
}

/// Times a full initial scan (no inotify, no baseline) of `paths` under `root`, for the
/// benchmark binary: (regular files, bytes hashed, wall time).
pub fn scan_timing(root: &HostRoot, paths: &[String]) -> (usize, u64, Duration) {
    let config = FimConfig {
        paths: paths.to_vec(),
        ..FimConfig::default()
    };
    let previous = BTreeMap::new();
    let started = Instant::now();
    let mut scanner = Scanner::new(&config, &previous, config.max_files, None);
    for path in paths.iter().filter_map(|p| normalise(p)) {
        let full = root.path(&path);
        scanner.visit(path, full, 0);
    }
    (scanner.files, scanner.bytes, started.elapsed())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const SM3_ABC: &str = "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0";

    /// A host tree with `/etc/passwd` and `/etc/cron.d/job`, and a baseline path beside it.
    fn fixture() -> (tempfile::TempDir, HostRoot, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let host = dir.path().join("host");
        std::fs::create_dir_all(host.join("etc/cron.d")).unwrap();
        std::fs::write(host.join("etc/passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
        std::fs::write(host.join("etc/cron.d/job"), "* * * * * root true\n").unwrap();
        let baseline = dir.path().join("fim.baseline");
        (dir, HostRoot::new(host), baseline)
    }

    fn config() -> FimConfig {
        FimConfig {
            paths: vec!["/etc/passwd".into(), "/etc/cron.d/".into()],
            rescan_interval: Duration::from_secs(3600),
            ..FimConfig::default()
        }
    }

    fn events(outputs: &[Output]) -> Vec<FimEvent> {
        outputs
            .iter()
            .flat_map(|output| {
                assert_eq!((output.lane, output.kind), (Lane::Security, FIM_EVENTS));
                payload::decode::<FimEvents>(&output.body).unwrap().events
            })
            .collect()
    }

    /// One scheduler round: collect, and commit as the outbox would.
    fn run(collector: &FimCollector) -> Vec<FimEvent> {
        let outputs = collector.collect(1_000).unwrap();
        collector.committed();
        events(&outputs)
    }

    /// Runs rounds until one reports something (inotify needs no waiting, but be tolerant).
    fn run_until_events(collector: &FimCollector, within: Duration) -> Vec<FimEvent> {
        let started = Instant::now();
        loop {
            let found = run(collector);
            if !found.is_empty() || started.elapsed() > within {
                return found;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn started(host: &HostRoot, baseline: &Path, config: FimConfig) -> FimCollector {
        let collector = FimCollector::new(host.clone(), config, baseline.to_path_buf());
        assert!(
            run(&collector).is_empty(),
            "the first scan builds the baseline silently"
        );
        collector
    }

    #[test]
    fn modified_content_reports_old_and_new_sm3() {
        let (_dir, host, baseline) = fixture();
        let collector = started(&host, &baseline, config());
        assert!(run(&collector).is_empty());
        std::fs::write(host.path("/etc/passwd"), "abc").unwrap();
        let found = run_until_events(&collector, Duration::from_secs(2));
        assert_eq!(found.len(), 1, "{found:?}");
        let event = &found[0];
        assert_eq!(
            (event.path.as_str(), event.change.as_str()),
            ("/etc/passwd", "modified")
        );
        assert_eq!(event.new_sm3, SM3_ABC);
        assert_eq!(
            event.old_sm3,
            hex(&Sm3::digest(b"root:x:0:0::/root:/bin/sh\n"))
        );
        assert_eq!((event.old_size, event.new_size), (26, 3));
        assert_eq!(event.time_ms, 1_000);
        assert!(run(&collector).is_empty(), "reported once");
    }

    #[test]
    fn metadata_deleted_and_created_are_told_apart() {
        let (_dir, host, baseline) = fixture();
        let collector = started(&host, &baseline, config());
        let passwd = host.path("/etc/passwd");
        std::fs::set_permissions(&passwd, std::fs::Permissions::from_mode(0o666)).unwrap();
        let found = run_until_events(&collector, Duration::from_secs(2));
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].change, "metadata");
        assert_eq!(found[0].old_sm3, found[0].new_sm3);
        assert_eq!(
            (found[0].old_mode & 0o777, found[0].new_mode & 0o777),
            (0o644, 0o666)
        );
        assert_eq!(found[0].new_mode & 0o170_000, 0o100_000, "type bits kept");

        std::fs::remove_file(host.path("/etc/cron.d/job")).unwrap();
        let found = run_until_events(&collector, Duration::from_secs(2));
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(
            (found[0].path.as_str(), found[0].change.as_str()),
            ("/etc/cron.d/job", "deleted")
        );
        assert!(found[0].new_sm3.is_empty() && !found[0].old_sm3.is_empty());
        assert!(found[0].new_owner.is_empty());

        std::fs::write(host.path("/etc/cron.d/backdoor"), "abc").unwrap();
        let found = run_until_events(&collector, Duration::from_secs(2));
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(
            (found[0].path.as_str(), found[0].change.as_str()),
            ("/etc/cron.d/backdoor", "created")
        );
        assert_eq!(found[0].new_sm3, SM3_ABC);
        assert_eq!(found[0].old_owner, "");
        assert!(found[0].new_owner.contains(':'));
    }

    #[test]
    fn a_change_while_the_agent_was_down_is_reported_once() {
        let (_dir, host, baseline) = fixture();
        drop(started(&host, &baseline, config()));
        assert!(baseline.exists(), "the baseline is persisted");
        std::fs::write(host.path("/etc/passwd"), "abc").unwrap();
        std::fs::write(host.path("/etc/cron.d/new"), "x").unwrap();

        let restarted = FimCollector::new(host.clone(), config(), baseline.clone());
        let found = run(&restarted);
        let changes: Vec<_> = found
            .iter()
            .map(|e| (e.path.as_str(), e.change.as_str()))
            .collect();
        assert_eq!(
            changes,
            [("/etc/cron.d/new", "created"), ("/etc/passwd", "modified")]
        );
        assert!(run(&restarted).is_empty());

        let again = FimCollector::new(host, config(), baseline);
        assert!(
            run(&again).is_empty(),
            "not re-reported after another restart"
        );
    }

    #[test]
    fn without_commit_the_same_change_is_reported_again() {
        let (_dir, host, baseline) = fixture();
        let collector = started(&host, &baseline, config());
        std::fs::write(host.path("/etc/passwd"), "abc").unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let first = events(&collector.collect(1).unwrap());
        assert_eq!(first.len(), 1);
        // The outbox refused: no `committed`.
        let second = events(&collector.collect(2).unwrap());
        assert_eq!(second.len(), 1);
        assert_eq!(second[0].new_sm3, first[0].new_sm3);
        collector.committed();
        assert!(run(&collector).is_empty());
    }

    #[test]
    fn an_idle_tick_is_not_due_and_a_change_makes_it_due() {
        let (_dir, host, baseline) = fixture();
        let collector = started(&host, &baseline, config());
        assert!(run(&collector).is_empty());
        assert!(!collector.is_due(), "nothing changed: no run needed");
        std::fs::write(host.path("/etc/passwd"), "abc").unwrap();
        let started = Instant::now();
        while !collector.is_due() {
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "the change never made it due"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(run(&collector).len(), 1);
        assert!(!collector.is_due(), "reported and committed: idle again");
    }

    #[test]
    fn inotify_delivers_without_waiting_for_the_rescan() {
        let (_dir, host, baseline) = fixture();
        let collector = started(&host, &baseline, config());
        let status = collector.status();
        assert!(status.realtime, "{status:?}");
        assert!(status.watched_dirs >= 2, "{status:?}");
        assert_eq!(collector.interval(), Duration::from_secs(1));
        std::thread::sleep(Duration::from_millis(100));
        let changed = Instant::now();
        std::fs::write(host.path("/etc/cron.d/job"), "abc").unwrap();
        let found = run_until_events(&collector, Duration::from_secs(2));
        assert!(changed.elapsed() < Duration::from_secs(2));
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].new_sm3, SM3_ABC);
    }

    #[test]
    fn a_replaced_file_and_a_recreated_directory_are_still_watched() {
        let (_dir, host, baseline) = fixture();
        let collector = started(&host, &baseline, config());
        // vipw-style: write a new file and rename it over the old one.
        let staged = host.path("/etc/passwd.new");
        std::fs::write(&staged, "abc").unwrap();
        std::fs::rename(&staged, host.path("/etc/passwd")).unwrap();
        let found = run_until_events(&collector, Duration::from_secs(2));
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(
            (found[0].path.as_str(), found[0].change.as_str()),
            ("/etc/passwd", "modified")
        );

        std::fs::remove_dir_all(host.path("/etc/cron.d")).unwrap();
        let found = run_until_events(&collector, Duration::from_secs(2));
        let mut gone: Vec<_> = found
            .iter()
            .map(|e| (e.path.as_str(), e.change.as_str()))
            .collect();
        gone.sort();
        assert_eq!(
            gone,
            [("/etc/cron.d", "deleted"), ("/etc/cron.d/job", "deleted")]
        );

        std::fs::create_dir(host.path("/etc/cron.d")).unwrap();
        let found = run_until_events(&collector, Duration::from_secs(2));
        assert_eq!(found.len(), 1, "{found:?}");
        std::fs::write(host.path("/etc/cron.d/later"), "abc").unwrap();
        let found = run_until_events(&collector, Duration::from_secs(2));
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(
            (found[0].path.as_str(), found[0].change.as_str()),
            ("/etc/cron.d/later", "created")
        );
    }

    #[test]
    fn symlinks_are_recorded_not_followed() {
        let (_dir, host, baseline) = fixture();
        std::os::unix::fs::symlink("/etc/passwd", host.path("/etc/cron.d/link")).unwrap();
        let collector = started(&host, &baseline, config());
        {
            let state = lock(&collector.state);
            let link = &state.current["/etc/cron.d/link"];
            assert_eq!(link.link, "/etc/passwd");
            assert_eq!(link.mode & 0o170_000, 0o120_000);
            assert_eq!(link.sm3, hex(&Sm3::digest(b"/etc/passwd")));
        }
        std::fs::remove_file(host.path("/etc/cron.d/link")).unwrap();
        std::os::unix::fs::symlink("/etc/shadow", host.path("/etc/cron.d/link")).unwrap();
        let found = run_until_events(&collector, Duration::from_secs(2));
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].change, "modified");
    }

    #[test]
    fn max_files_bounds_the_watch() {
        let (_dir, host, baseline) = fixture();
        for index in 0..30 {
            std::fs::write(host.path(&format!("/etc/cron.d/f{index:02}")), "x").unwrap();
        }
        let config = FimConfig {
            max_files: 10,
            ..config()
        };
        let collector = started(&host, &baseline, config);
        assert_eq!(collector.status().entries, 10);
        std::fs::write(host.path("/etc/cron.d/more"), "x").unwrap();
        std::thread::sleep(Duration::from_millis(50));
        run(&collector);
        assert_eq!(collector.status().entries, 10);
        assert!(collector.status().baseline_entries <= 10);
    }

    #[test]
    fn big_files_are_compared_by_size_and_mtime() {
        let (_dir, host, baseline) = fixture();
        let config = FimConfig {
            max_file_size: 4,
            ..config()
        };
        let collector = started(&host, &baseline, config);
        {
            let state = lock(&collector.state);
            let passwd = &state.current["/etc/passwd"];
            assert!(passwd.sm3.is_empty());
            assert!(passwd.note.starts_with("not hashed"), "{}", passwd.note);
        }
        std::fs::write(host.path("/etc/passwd"), "bigger than four bytes, again").unwrap();
        let found = run_until_events(&collector, Duration::from_secs(2));
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].change, "modified");
    }

    #[test]
    fn unreadable_files_are_recorded_with_a_note() {
        let (_dir, host, baseline) = fixture();
        let secret = host.path("/etc/cron.d/secret");
        std::fs::write(&secret, "abc").unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o000)).unwrap();
        let collector = started(&host, &baseline, config());
        let readable_anyway = std::fs::read(&secret).is_ok(); // root with CAP_DAC_OVERRIDE
        {
            let state = lock(&collector.state);
            let entry = &state.current["/etc/cron.d/secret"];
            assert_eq!(entry.mode & 0o777, 0);
            if !readable_anyway {
                assert!(entry.note.starts_with("unreadable"), "{entry:?}");
            }
        }
        // A file even root cannot read: a write-only sysctl.
        if std::path::Path::new("/proc/sys/vm/drop_caches").exists() {
            let (files, bytes, _) =
                scan_timing(&HostRoot::new("/proc/sys/vm"), &["/drop_caches".into()]);
            assert_eq!((files, bytes), (1, 0));
            let mut buffer = vec![0; 16];
            let entry =
                read_entry(Path::new("/proc/sys/vm/drop_caches"), 1 << 20, &mut buffer).unwrap();
            assert!(entry.sm3.is_empty());
            assert!(entry.note.starts_with("unreadable"), "{entry:?}");
        }
    }

    #[test]
    fn a_newly_configured_path_is_baselined_silently() {
        let (_dir, host, baseline) = fixture();
        std::fs::create_dir_all(host.path("/etc/ssh")).unwrap();
        std::fs::write(host.path("/etc/ssh/sshd_config"), "PermitRootLogin no\n").unwrap();
        drop(started(&host, &baseline, config()));
        let mut wider = config();
        wider.paths.push("/etc/ssh/".into());
        let collector = FimCollector::new(host.clone(), wider, baseline);
        assert!(run(&collector).is_empty());
        std::fs::write(host.path("/etc/ssh/sshd_config"), "PermitRootLogin yes\n").unwrap();
        let found = run_until_events(&collector, Duration::from_secs(2));
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].path, "/etc/ssh/sshd_config");
    }

    #[test]
    fn a_corrupt_baseline_is_rebuilt_silently() {
        let (_dir, host, baseline) = fixture();
        std::fs::write(&baseline, b"\xc1 not msgpack").unwrap();
        let collector = started(&host, &baseline, config());
        assert!(collector.status().baseline_entries >= 3);
    }

    #[test]
    fn paths_are_normalised_and_scoped() {
        assert_eq!(normalise("/etc/ssh/").as_deref(), Some("/etc/ssh"));
        assert_eq!(normalise("etc/hosts").as_deref(), Some("/etc/hosts"));
        assert_eq!(normalise("/"), None);
        assert_eq!(depth_below("/etc/ssh", "/etc/ssh"), Some(0));
        assert_eq!(depth_below("/etc/ssh", "/etc/ssh/a/b"), Some(2));
        assert_eq!(depth_below("/etc/ssh", "/etc/sshd"), None);
        assert_eq!(child_key("/", "etc"), "/etc");
    }

    #[test]
    fn default_list_covers_the_brief() {
        let config =
            FimConfig::with_extra_paths(["/opt/app/conf/".to_string(), "/etc/hosts".to_string()]);
        for path in [
            "/etc/shadow",
            "/etc/sudoers.d/",
            "/etc/ssh/",
            "/etc/ld.so.preload",
            "/opt/app/conf/",
        ] {
            assert!(config.paths.iter().any(|p| p == path), "{path}");
        }
        assert_eq!(
            config.paths.iter().filter(|p| *p == "/etc/hosts").count(),
            1
        );
        assert_eq!(config.max_files, 50_000);
    }
}
