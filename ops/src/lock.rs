//! The single-instance lock: at most one running process per (component, account), so that two
//! copies of one bot can never trade on one account at the same time.
//!
//! It owns one lock file per (component, account), `DIR/<component>@<account>.lock`, and the
//! exclusive `flock` on it that an [`InstanceLock`] holds for the life of the process. The kernel
//! drops a `flock` when the last descriptor of its open file description closes, so a holder that
//! dies, however it dies (SIGKILL, OOM, panic), releases the lock at once and the next start
//! succeeds without any stale-lock cleanup. While it holds the lock the file names the holder
//! (pid, host, start time, version, `/proc` start ticks) for the message a second start prints
//! and for [`list`] (`tickloop locks`).
//!
//! What it must never do:
//! - **delete a lock file**, on release or anywhere else. A second process may already have
//!   opened the old inode and be waiting to lock it; once the path is unlinked a third process
//!   creates a new inode, locks that one too, and two instances run. Files stay; release only
//!   blanks the holder and unlocks. (For the same reason the lock directory must not be one that
//!   systemd removes while units run: `RuntimeDirectory=tickloop` shared by several units
//!   removes it when any of them stops, unless `RuntimeDirectoryPreserve=yes`.)
//! - follow a symbolic link at the lock path, write into a file that is not a regular file of
//!   ours with exactly one link, or truncate anything: the file is opened with `O_NOFOLLOW`
//!   relative to the directory it checked, and overwritten in place.
//! - leave a reader an empty file: the holder record is written with one `pwrite` at offset 0,
//!   padded with spaces to [`RECORD_LEN`] bytes, so the file never shrinks to nothing while
//!   someone reads it without the lock.
//! - trust a record it read without the lock. Reads and writes of a regular file are not atomic
//!   against each other, so a reader racing the holder's write can see a mix of two records;
//!   each record carries `check`, an FNV-1a-64 of the holder's JSON, and a mixed read fails it.
//! - take or keep a lock it was only asked to look at: [`list`] probes with a shared lock that
//!   it drops at once (see [`list`]), and [`acquire`](InstanceLock::acquire) retries for a
//!   moment when such a probe is what made it fail.
//!
//! A lock on a file that someone removed or replaced after it was opened excludes no one, so
//! [`acquire`](InstanceLock::acquire) checks, once locked, that the file it locked is still the
//! one at the path, and opens again if not. While it holds the lock it also holds a shared
//! `flock` on the directory, which systemd-tmpfiles' age-based cleanup honours (it skips a
//! locked directory), so a long-lived holder's file under `/tmp/tickloop-UID` is not aged out.
//!
//! The lock is exclusive among processes that use the same directory: a bot must get its lock
//! directory from its configuration (or [`default_dir`]) the same way on every start. The
//! directory must be on a local filesystem (`flock` on NFS is emulated and per host).
//! A child forked without `exec` inherits the locked file description and keeps the lock held
//! while it lives (the file is `O_CLOEXEC`, so an `exec`ed child does not); dropping an
//! [`InstanceLock`] in such a child closes only its copy and leaves the parent's lock alone.

use serde::{Deserialize, Serialize};
use std::ffi::CString;
use std::fs::{DirBuilder, File};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tickloop_ring::sys;

/// The size every holder record is padded to with spaces (a longer one is written whole).
pub const RECORD_LEN: usize = 512;

/// How long a start that finds the lock taken waits for the holder's record to become readable
/// (a holder that locked a microsecond ago has not written it yet) or for a [`list`] probe to end.
const HOLDER_WAIT: Duration = Duration::from_millis(500);

pub use crate::limits::MAX_NAME;

/// The process that holds, or held, a lock: what its lock file records.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Holder {
    /// Its process id.
    pub pid: u32,
    /// The host it runs on (`gethostname`).
    pub host: String,
    /// When it took the lock (CLOCK_REALTIME, ns since the Unix epoch): the start of the instance.
    pub started_unix_ns: i64,
    /// The tickloop version it runs.
    pub version: String,
    /// The component it runs, e.g. `engine`.
    pub component: String,
    /// The account it trades, e.g. `binance-main`.
    pub account: String,
    /// Its start time in clock ticks since boot (`/proc/PID/stat` field 22; 0 if unreadable):
    /// with `pid`, it tells the holder from an unrelated process that reused the pid.
    pub start_ticks: u64,
}

impl Holder {
    /// This process, as the holder of `component@account`.
    fn current(component: &str, account: &str) -> Holder {
        let pid = std::process::id();
        Holder {
            pid,
            host: hostname(),
            started_unix_ns: sys::realtime_ns(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            component: component.to_owned(),
            account: account.to_owned(),
            start_ticks: sys::process_start_ticks(pid).unwrap_or(0),
        }
    }

    /// Is this holder still running? A holder on another host is assumed to be (this host cannot
    /// tell). A pid that now belongs to another process (another start time) is not.
    pub fn alive(&self) -> bool {
        if self.host != hostname() {
            return true;
        }
        if self.start_ticks == 0 {
            return Path::new(&format!("/proc/{}", self.pid)).exists();
        }
        sys::process_alive(self.pid, self.start_ticks)
    }
}

/// The lock file's content: the holder's fields and a checksum over them.
#[derive(Serialize, Deserialize)]
struct Record {
    #[serde(flatten)]
    holder: Holder,
    /// `fnv1a64:` and 16 hex digits: FNV-1a-64 of `serde_json::to_vec(&holder)`.
    check: String,
}

/// How a lock was acquired.
#[derive(Debug, Clone, PartialEq)]
pub enum Acquired {
    /// The lock file was new, or its last holder released it cleanly.
    Fresh,
    /// The lock file still named a holder that is no longer running: it died holding the lock
    /// (the kernel released its `flock`). The caller logs [`Acquired::note`].
    PreviousHolderGone(Holder),
}

impl Acquired {
    /// The line to log for [`Acquired::PreviousHolderGone`], e.g. `previous holder pid 1234
    /// (started 2026-11-23T15:04:05Z on host box1, tickloop 0.1.0) of engine@binance-main is
    /// gone: it ended without releasing the lock, and the kernel released it`; `None` if fresh.
    pub fn note(&self) -> Option<String> {
        match self {
            Acquired::Fresh => None,
            Acquired::PreviousHolderGone(h) => Some(format!(
                "previous holder pid {} (started {} on host {}, tickloop {}) of {}@{} is gone: it ended without releasing the lock, and the kernel released it",
                h.pid,
                format_utc(h.started_unix_ns),
                h.host,
                h.version,
                h.component,
                h.account
            )),
        }
    }
}

/// A lock file in a lock directory, as [`list`] found it.
#[derive(Debug, Clone, Serialize)]
pub struct LockInfo {
    /// The lock file.
    pub path: PathBuf,
    /// The component and account its name says it locks.
    pub component: String,
    pub account: String,
    /// Whether a process holds it right now.
    pub held: bool,
    /// The holder its record names, if the record is readable: for a held lock, the live holder
    /// (`None` while it is starting up); for a free one, a holder that died holding it (`None`
    /// after a clean release, which blanks the record).
    pub holder: Option<Holder>,
}

/// Why a lock could not be taken or listed. Each message is one line: what, where, what to do.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// A component or account name outside `[A-Za-z0-9._-]{1,64}`.
    #[error("invalid {what} name {name:?}: {why}; use 1 to 64 of the characters A-Z a-z 0-9 . _ - (e.g. \"engine\", \"binance-main\")")]
    BadName {
        what: &'static str,
        name: String,
        why: String,
    },
    /// Another process holds the lock. `holder` is `None` if its record was not readable within
    /// half a second (it is starting up).
    #[error("{}", held_message(.name, .path, .holder.as_deref(), .how_to_stop))]
    Held {
        /// `component@account`.
        name: String,
        path: PathBuf,
        /// Boxed to keep `LockError` small.
        holder: Option<Box<Holder>>,
        /// The clause of the message that says how to stop the holder.
        how_to_stop: String,
    },
    /// A symbolic link sits at the lock path.
    #[error("lock file {} is a symbolic link; refusing to follow it: remove the link (`rm {}`) and start again", .path.display(), .path.display())]
    Symlink { path: PathBuf },
    /// Something other than a regular file sits at the lock path.
    #[error("lock file {} is a {kind}, not a regular file: remove it or choose another lock directory", .path.display())]
    NotRegular { path: PathBuf, kind: &'static str },
    /// The lock file belongs to another user.
    #[error("lock file {} belongs to uid {owner}, not to you (uid {me}): is this component and account run by that user? run as uid {owner}, or stop that user's instance and remove the file", .path.display())]
    OtherUser { path: PathBuf, owner: u32, me: u32 },
    /// The lock file has more than one hard link (someone linked it to another file).
    #[error("lock file {} has {links} hard links, so writing it would change another file: remove it (`rm {}`) and start again", .path.display(), .path.display())]
    HardLinked { path: PathBuf, links: u64 },
    /// The lock directory or the lock file cannot be created or opened by this user (`path`: what
    /// was refused; `dir`: the directory it is in).
    #[error("cannot create or open {}: permission denied in {}: run as the user who owns {}, or choose a lock directory you can write to", .path.display(), .dir.display(), .dir.display())]
    PermissionDenied { path: PathBuf, dir: PathBuf },
    /// The lock file was removed or replaced between opening and locking it, again and again
    /// for half a second.
    #[error("lock file {} keeps being removed or replaced while it is being locked: something deletes lock files in {} (a cleanup job, systemd's RuntimeDirectory= of another unit); stop it, lock files must stay", .path.display(), .path.parent().unwrap_or(Path::new("/")).display())]
    Replaced { path: PathBuf },
    /// The lock directory path names something other than a directory.
    #[error("lock directory {} is not a directory: remove it or choose another lock directory", .dir.display())]
    DirNotADirectory { dir: PathBuf },
    /// The lock directory belongs to neither this user nor root.
    #[error("lock directory {} belongs to uid {owner}, not to you (uid {me}) or root, so its owner could replace your locks: choose a directory you own", .dir.display())]
    DirOtherUser { dir: PathBuf, owner: u32, me: u32 },
    /// The lock directory is writable by everyone without the sticky bit.
    #[error("lock directory {} is writable by everyone (mode {mode:04o}) without the sticky bit, so anyone could delete or replace a lock: `chmod 0700 {}`, or choose another lock directory", .dir.display(), .dir.display())]
    DirUnsafe { dir: PathBuf, mode: u32 },
    /// The epoch file holds something that is not an epoch.
    #[error("epoch file {}: {content:?} is not a number: it counts this account's engine starts (the order ids of each run start at it); if it was damaged, write into it a number above every epoch an open order of this account was placed with (or remove it when the account has no open order)", .path.display())]
    EpochCorrupt { path: PathBuf, content: String },
    /// The epoch file has counted every start it can.
    #[error("epoch file {}: epoch {epoch} is the last one (order ids would repeat); use a new account name in [engine] account, or, with no order of this account open, remove the file", .path.display())]
    EpochExhausted { path: PathBuf, epoch: u32 },
    /// Any other failing system call.
    #[error("{op} {}: {cause}", .path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        // Not named `source`: the message carries it, and an error chain would print it twice.
        cause: io::Error,
    },
}

impl LockError {
    fn io(op: &'static str, path: &Path, cause: io::Error) -> LockError {
        LockError::Io {
            op,
            path: path.to_owned(),
            cause,
        }
    }
}

fn held_message(name: &str, path: &Path, holder: Option<&Holder>, how_to_stop: &str) -> String {
    match holder {
        Some(h) => format!(
            "{name} is already running: pid {} on host {}, started {}, tickloop {} (lock {}); {how_to_stop} before starting another",
            h.pid,
            h.host,
            format_utc(h.started_unix_ns),
            h.version,
            path.display()
        ),
        None => format!(
            "{name} is already running: held by a holder that is starting up and has not recorded itself yet (lock {}); {how_to_stop} before starting another",
            path.display()
        ),
    }
}

/// The "stop it with ..." clause: `systemctl` when the holder runs as a systemd service on this
/// host, `kill` otherwise, `fuser` when the holder is unknown.
fn how_to_stop(path: &Path, holder: Option<&Holder>) -> String {
    let Some(h) = holder else {
        return format!("find it with \"fuser -v {}\" and stop it", path.display());
    };
    if h.host != hostname() {
        return format!("stop it on host {} with \"kill {}\"", h.host, h.pid);
    }
    match systemd_unit(h.pid) {
        Some((unit, user)) => format!(
            "stop it with \"systemctl {}stop {unit}\" (its systemd unit; \"kill {}\" alone may be undone by a restart)",
            if user { "--user " } else { "" },
            h.pid
        ),
        None => format!("stop it with \"kill {}\"", h.pid),
    }
}

/// The systemd service a process runs in (from its cgroup, v2 or v1's name=systemd hierarchy)
/// and whether it is a user service. Only a `.service` leaf counts: a session scope does not.
fn systemd_unit(pid: u32) -> Option<(String, bool)> {
    unit_of_cgroups(&std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?)
}

/// [`systemd_unit`] from the text of `/proc/PID/cgroup`.
fn unit_of_cgroups(cgroups: &str) -> Option<(String, bool)> {
    let path = cgroups
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .or_else(|| {
            cgroups
                .lines()
                .find_map(|l| l.split_once(":name=systemd:").map(|(_, p)| p))
        })?;
    let mut parts = path.split('/').filter(|p| !p.is_empty());
    let leaf = parts.next_back()?;
    if !leaf.ends_with(".service") || leaf.starts_with("user@") {
        return None;
    }
    let user = parts.any(|p| p.starts_with("user@"));
    Some((leaf.to_owned(), user))
}

/// The lock held by this process for one (component, account). Dropping it releases the lock.
#[derive(Debug)]
pub struct InstanceLock {
    /// The lock file, open read-write, with our exclusive `flock` on its open file description.
    file: File,
    /// The lock directory, open, with a shared `flock` on it (best effort): systemd-tmpfiles
    /// skips a locked directory in its age-based cleanup, which would otherwise remove an old
    /// lock file under `/tmp/tickloop-UID` from under a long-running holder.
    _dir: File,
    path: PathBuf,
    holder: Holder,
    /// How many bytes of the file our record occupies (what release blanks).
    record_len: usize,
}

impl InstanceLock {
    /// Take the lock of `component@account` in `dir`, without waiting.
    ///
    /// `dir` is the lock directory (e.g. `/run/tickloop`, see [`default_dir`]); it is created,
    /// mode 0700, if missing, and refused if it belongs to another user (root excepted), is not a
    /// directory, or is writable by everyone without the sticky bit. `component` (e.g. `engine`)
    /// and `account` (e.g. `binance-main`) must match `[A-Za-z0-9._-]{1,64}`. The lock file is
    /// `dir/<component>@<account>.lock`, opened with
    /// `O_RDWR|O_CREAT|O_NOFOLLOW|O_CLOEXEC|O_NONBLOCK|O_NOCTTY`, mode 0600 (`O_NONBLOCK` and
    /// `O_NOCTTY` change nothing for a regular file and keep anything else from blocking or
    /// becoming a terminal before it is refused). A symbolic link, a non-regular file, another
    /// user's file or a file with other hard links is refused.
    ///
    /// Returns [`LockError::Held`] naming the holder if another process holds the lock. A lock
    /// that is free is taken at once, however its last holder ended; if the file still names a
    /// holder (it died holding the lock), the result is [`Acquired::PreviousHolderGone`].
    pub fn acquire(
        dir: &Path,
        component: &str,
        account: &str,
    ) -> Result<(InstanceLock, Acquired), LockError> {
        validate_name("component", component)?;
        validate_name("account", account)?;
        let dir_file = prepare_dir(dir)?;
        let file_name = format!("{component}@{account}.lock");
        let path = dir.join(&file_name);
        // Everything about us is gathered before locking, so the window in which the lock is
        // held but the file does not name us yet is one pwrite.
        let me = Holder::current(component, account);
        let deadline = Instant::now() + HOLDER_WAIT;
        let file = loop {
            let file = open_lock_file(&dir_file, dir, &file_name, &path)?;
            let locked =
                try_flock(&file, libc::LOCK_EX).map_err(|e| LockError::io("locking", &path, e))?;
            // A lock on a file that is no longer at the path (someone removed or replaced it
            // since we opened it) excludes no one: open the one that is there now. Dropping
            // `file` drops the lock if we got it.
            if !still_at_path(&dir_file, &file_name, &file) {
                if Instant::now() >= deadline {
                    return Err(LockError::Replaced { path });
                }
                continue;
            }
            if locked {
                break file;
            }
            // Taken. By a live holder whose record we can read: that is the answer. Otherwise
            // the holder is starting up (its record is blank, or still names the dead holder
            // before it), or a `list` probe holds a shared lock for a few microseconds: retry.
            if let Some(h) = read_record(&file).filter(Holder::alive) {
                return Err(held(component, account, path, Some(h)));
            }
            if Instant::now() >= deadline {
                return Err(held(component, account, path, None));
            }
            std::thread::sleep(Duration::from_millis(1));
        };

        // Ours. Whatever the file still names ended without a clean release.
        let previous = read_record(&file)
            .filter(|h| !(h.pid == me.pid && h.start_ticks == me.start_ticks && h.host == me.host));
        let record_len = write_record(&file, &path, &me)?;
        // Best effort: keeps tmpfiles' age-based cleanup out of the directory (see `_dir`).
        let _ = try_flock(&dir_file, libc::LOCK_SH);
        let acquired = match previous {
            Some(h) => Acquired::PreviousHolderGone(h),
            None => Acquired::Fresh,
        };
        Ok((
            InstanceLock {
                file,
                _dir: dir_file,
                path,
                holder: me,
                record_len,
            },
            acquired,
        ))
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What the lock file says about us.
    pub fn holder(&self) -> &Holder {
        &self.holder
    }

    /// Release the lock: blank the record (so the next holder starts [`Acquired::Fresh`]), unlock
    /// and close. The file stays: deleting a lock file races with a process that has opened it
    /// and is about to lock it (see the module documentation). Dropping does the same.
    pub fn release(self) {
        drop(self)
    }
}

impl Drop for InstanceLock {
    fn drop(&mut self) {
        // In a child forked without exec, the file description (and so the lock) is shared with
        // the parent that took it: blanking or unlocking here would release the parent's lock.
        // Closing our descriptor (below, as the File drops) leaves it alone.
        if std::process::id() != self.holder.pid {
            return;
        }
        let mut blank = vec![b' '; self.record_len.max(1)];
        *blank.last_mut().expect("not empty") = b'\n';
        let _ = self.file.write_all_at(&blank, 0);
        // SAFETY: valid fd owned by `self.file`.
        unsafe { libc::flock(self.file.as_raw_fd(), libc::LOCK_UN) };
    }
}

/// The engine epoch of this start: one more than the last start's, kept in
/// `dir/<account>.epoch` (mode 0600, beside the lock files; created when missing). The epoch
/// makes order ids unique across restarts: each run's ids start at `epoch << 31`. It is the
/// account's, not one engine's: engines of other components trading the same account on this
/// host take epochs of their own from the same file, so their client ids never meet. It never goes below the minutes since 2025-01-01 UTC, so a lock directory
/// wiped at boot (`/run` is a tmpfs) does not start the count over (unless this account was
/// started more often than once a minute, on average, since then). The file is read and
/// written under its own `flock`, so two starts never take the same epoch; it is written in
/// place, fixed-width, and synced before the epoch is used. Epochs above `max` are refused.
pub fn next_epoch(dir: &Path, account: &str, max: u32) -> Result<u32, LockError> {
    validate_name("account", account)?;
    let dir_file = prepare_dir(dir)?;
    let name = format!("{account}.epoch");
    let path = dir.join(&name);
    let file = open_lock_file(&dir_file, dir, &name, &path)?;
    // SAFETY: valid fd owned by `file`; a blocking exclusive lock held for a read and a write.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(LockError::io("locking", &path, io::Error::last_os_error()));
    }
    let mut buf = [0u8; 64];
    let n = file
        .read_at(&mut buf, 0)
        .map_err(|e| LockError::io("reading", &path, e))?;
    let text = String::from_utf8_lossy(&buf[..n]);
    let last: u32 = match text.trim() {
        "" => 0,
        t => t.parse().map_err(|_| LockError::EpochCorrupt {
            path: path.clone(),
            content: t.chars().take(40).collect(),
        })?,
    };
    let floor = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs().saturating_sub(EPOCH_FLOOR_FROM) / 60)
        .unwrap_or(0)
        .min(max as u64 / 2) as u32;
    let epoch = last.saturating_add(1).max(floor);
    if epoch > max {
        return Err(LockError::EpochExhausted { path, epoch: last });
    }
    let record = format!("{epoch:>10}\n");
    file.write_all_at(record.as_bytes(), 0)
        .and_then(|_| file.sync_all())
        .map_err(|e| LockError::io("writing", &path, e))?;
    Ok(epoch)
}

/// 2025-01-01T00:00:00Z: epochs never go below the minutes since.
const EPOCH_FLOOR_FROM: u64 = 1_735_689_600;

/// The lock directory to use when none is configured: `/run/tickloop` for root or when it exists
/// and this user may write there, else `$XDG_RUNTIME_DIR/tickloop` (an absolute
/// `XDG_RUNTIME_DIR` only), else `/tmp/tickloop-<uid>`. Two processes exclude each other only if
/// they use the same directory, so a service should configure one explicitly.
pub fn default_dir() -> PathBuf {
    let run = Path::new("/run/tickloop");
    let euid = sys::euid();
    if euid == 0 || (run.is_dir() && access_rwx(run)) {
        return run.to_owned();
    }
    if let Some(xdg) = std::env::var_os("XDG_RUNTIME_DIR") {
        let xdg = PathBuf::from(xdg);
        if xdg.is_absolute() {
            return xdg.join("tickloop");
        }
    }
    PathBuf::from(format!("/tmp/tickloop-{euid}"))
}

fn access_rwx(dir: &Path) -> bool {
    let Ok(c) = CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: valid NUL-terminated path.
    unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) == 0 }
}

/// Every lock in `dir`: each `<component>@<account>.lock` regular file (anything else there is
/// skipped, symbolic links included, never followed), whether it is held right now, and the
/// holder its record names; sorted by component, then account. A missing `dir` has no locks.
///
/// Held or not is probed on a separate open file description with `flock(LOCK_SH|LOCK_NB)`:
/// against a holder's exclusive lock it fails with EWOULDBLOCK (held); on a free lock it succeeds
/// and is dropped at once with `LOCK_UN` (free). `flock` locks are not visible to `fcntl`'s
/// `F_GETLK`/`F_OFD_GETLK` on Linux, so probing is the way to ask; `/proc/locks` would also
/// tell, but hides holders outside this pid namespace. The probe holds a shared lock for a few
/// microseconds, which can make a concurrent [`InstanceLock::acquire`] see the lock taken: that
/// one retries for up to half a second before calling it held, so a probe never makes a start
/// fail. Works on locks held by this process too (separate open file descriptions conflict).
pub fn list(dir: &Path) -> Result<Vec<LockInfo>, LockError> {
    let dir_file = match open_dir(dir) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(LockError::io("opening lock directory", dir, e)),
    };
    let entries = std::fs::read_dir(dir).map_err(|e| LockError::io("listing", dir, e))?;
    let mut locks = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| LockError::io("listing", dir, e))?;
        let file_name = entry.file_name();
        let Some(name) = file_name.to_str() else {
            continue;
        };
        let Some((component, account)) = name
            .strip_suffix(".lock")
            .and_then(|stem| stem.split_once('@'))
        else {
            continue;
        };
        if validate_name("component", component).is_err()
            || validate_name("account", account).is_err()
        {
            continue;
        }
        let path = dir.join(name);
        let file = match openat(
            &dir_file,
            name,
            libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY,
            0,
        ) {
            Ok(f) => f,
            // Removed meanwhile, or a symbolic link: not a lock.
            Err(e)
                if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ELOOP) =>
            {
                continue
            }
            Err(e) => return Err(LockError::io("opening lock file", &path, e)),
        };
        let meta = file
            .metadata()
            .map_err(|e| LockError::io("inspecting lock file", &path, e))?;
        if !meta.file_type().is_file() {
            continue;
        }
        let held = probe_held(&file).map_err(|e| LockError::io("probing lock", &path, e))?;
        let holder = if held {
            // A holder that has just locked may not have written its record yet.
            let deadline = Instant::now() + Duration::from_millis(50);
            loop {
                match read_record(&file).filter(Holder::alive) {
                    Some(h) => break Some(h),
                    None if Instant::now() >= deadline => break None,
                    None => std::thread::sleep(Duration::from_millis(1)),
                }
            }
        } else {
            read_record(&file)
        };
        locks.push(LockInfo {
            path,
            component: component.to_owned(),
            account: account.to_owned(),
            held,
            holder,
        });
    }
    locks.sort_by(|a, b| (&a.component, &a.account).cmp(&(&b.component, &b.account)));
    Ok(locks)
}

/// `2026-11-23T15:04:05Z`: UTC, whole seconds (rounded down), proleptic Gregorian calendar.
pub fn format_utc(unix_ns: i64) -> String {
    let secs = unix_ns.div_euclid(1_000_000_000);
    let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        sod / 3600,
        sod / 60 % 60,
        sod % 60
    )
}

/// Year, month, day of the day `days` after 1970-01-01 (Howard Hinnant's `civil_from_days`:
/// 400-year eras of 146,097 days, years starting in March so the leap day comes last).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468; // days since 0000-03-01
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // day of era, 0..=146_096
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // year of era, 0..=399
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of year from March 1, 0..=365
    let mp = (5 * doy + 2) / 153; // month from March, 0..=11
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Check a component's or an account's name: 1 to [`MAX_NAME`] bytes of ASCII letters, digits,
/// `.`, `_` or `-` (it becomes part of a file name).
pub fn validate_name(what: &'static str, name: &str) -> Result<(), LockError> {
    let why = if name.is_empty() {
        Some("it is empty".to_owned())
    } else if name.len() > MAX_NAME {
        Some(format!("it is {} bytes long, over {MAX_NAME}", name.len()))
    } else {
        name.chars()
            .find(|&c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
            .map(|c| format!("it contains {c:?}"))
    };
    match why {
        None => Ok(()),
        Some(why) => Err(LockError::BadName {
            what,
            name: name.to_owned(),
            why,
        }),
    }
}

fn held(component: &str, account: &str, path: PathBuf, holder: Option<Holder>) -> LockError {
    LockError::Held {
        name: format!("{component}@{account}"),
        how_to_stop: how_to_stop(&path, holder.as_ref()),
        path,
        holder: holder.map(Box::new),
    }
}

fn open_dir(dir: &Path) -> io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(dir)
}

/// Create `dir` (0700) if missing, check it, and return it open.
fn prepare_dir(dir: &Path) -> Result<File, LockError> {
    let me = sys::euid();
    // Create what is missing, top-down, each directory 0700 exactly, whatever the umask (which
    // could otherwise leave a parent we create too narrow to create the next one in).
    let mut missing = Vec::new();
    for ancestor in dir.ancestors().filter(|a| !a.as_os_str().is_empty()) {
        match std::fs::symlink_metadata(ancestor) {
            Ok(_) => break,
            Err(e) if e.kind() == io::ErrorKind::NotFound => missing.push(ancestor),
            Err(e) => return Err(LockError::io("inspecting lock directory", ancestor, e)),
        }
    }
    for new in missing.into_iter().rev() {
        match DirBuilder::new().mode(0o700).create(new) {
            // Fails harmlessly if another user made it meanwhile: the owner check refuses that.
            Ok(()) => {
                let _ = std::fs::set_permissions(new, std::fs::Permissions::from_mode(0o700));
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                return Err(LockError::PermissionDenied {
                    path: dir.to_owned(),
                    dir: new.parent().unwrap_or(new).to_owned(),
                })
            }
            Err(e) => return Err(LockError::io("creating lock directory", new, e)),
        }
    }
    let dir_file = open_dir(dir).map_err(|e| match e.raw_os_error() {
        Some(libc::ENOTDIR) => LockError::DirNotADirectory {
            dir: dir.to_owned(),
        },
        Some(libc::EACCES) => LockError::PermissionDenied {
            path: dir.to_owned(),
            dir: dir.parent().unwrap_or(dir).to_owned(),
        },
        _ => LockError::io("opening lock directory", dir, e),
    })?;
    let meta = dir_file
        .metadata()
        .map_err(|e| LockError::io("inspecting lock directory", dir, e))?;
    if !meta.is_dir() {
        return Err(LockError::DirNotADirectory {
            dir: dir.to_owned(),
        });
    }
    if meta.uid() != me && meta.uid() != 0 {
        return Err(LockError::DirOtherUser {
            dir: dir.to_owned(),
            owner: meta.uid(),
            me,
        });
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o002 != 0 && mode & libc::S_ISVTX == 0 {
        return Err(LockError::DirUnsafe {
            dir: dir.to_owned(),
            mode,
        });
    }
    Ok(dir_file)
}

/// Open (creating) the lock file `name` in the checked directory, and check what was opened.
fn open_lock_file(dir_file: &File, dir: &Path, name: &str, path: &Path) -> Result<File, LockError> {
    let me = sys::euid();
    // Look first (without following), so nothing but a regular file is ever opened; the checks
    // after opening close the race with a replacement in between.
    match fstatat_nofollow(dir_file, name) {
        Ok(st) => {
            let kind = file_kind(st.st_mode);
            if kind == "symbolic link" {
                return Err(LockError::Symlink {
                    path: path.to_owned(),
                });
            }
            if kind != "regular file" {
                return Err(LockError::NotRegular {
                    path: path.to_owned(),
                    kind,
                });
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(LockError::io("inspecting lock file", path, e)),
    }
    let flags = libc::O_RDWR
        | libc::O_CREAT
        | libc::O_NOFOLLOW
        | libc::O_CLOEXEC
        | libc::O_NONBLOCK
        | libc::O_NOCTTY;
    let file = openat(dir_file, name, flags, 0o600).map_err(|e| {
        let now = fstatat_nofollow(dir_file, name).ok();
        match (e.raw_os_error(), now) {
            (Some(libc::ELOOP), _) => LockError::Symlink {
                path: path.to_owned(),
            },
            (Some(libc::EISDIR), _) => LockError::NotRegular {
                path: path.to_owned(),
                kind: "directory",
            },
            (Some(libc::EACCES | libc::EPERM), Some(st)) if st.st_uid != me => {
                LockError::OtherUser {
                    path: path.to_owned(),
                    owner: st.st_uid,
                    me,
                }
            }
            (Some(libc::EACCES | libc::EPERM), _) => LockError::PermissionDenied {
                path: path.to_owned(),
                dir: dir.to_owned(),
            },
            _ => LockError::io("opening lock file", path, e),
        }
    })?;
    let meta = file
        .metadata()
        .map_err(|e| LockError::io("inspecting lock file", path, e))?;
    let kind = file_kind(meta.mode());
    if kind != "regular file" {
        return Err(LockError::NotRegular {
            path: path.to_owned(),
            kind,
        });
    }
    if meta.uid() != me {
        return Err(LockError::OtherUser {
            path: path.to_owned(),
            owner: meta.uid(),
            me,
        });
    }
    // (0 links: removed since we opened it; `acquire` sees that and opens again.)
    if meta.nlink() > 1 {
        return Err(LockError::HardLinked {
            path: path.to_owned(),
            links: meta.nlink(),
        });
    }
    if meta.mode() & 0o7777 != 0o600 {
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(|e| LockError::io("setting mode 0600 on lock file", path, e))?;
    }
    Ok(file)
}

/// Is `file` still the file named `name` in the directory (not removed or replaced)?
fn still_at_path(dir_file: &File, name: &str, file: &File) -> bool {
    match (fstatat_nofollow(dir_file, name), file.metadata()) {
        (Ok(st), Ok(meta)) => st.st_dev == meta.dev() && st.st_ino == meta.ino(),
        _ => false,
    }
}

fn file_kind(mode: u32) -> &'static str {
    match mode & libc::S_IFMT {
        libc::S_IFREG => "regular file",
        libc::S_IFLNK => "symbolic link",
        libc::S_IFDIR => "directory",
        libc::S_IFIFO => "named pipe (FIFO)",
        libc::S_IFSOCK => "socket",
        libc::S_IFCHR => "character device",
        libc::S_IFBLK => "block device",
        _ => "file of unknown type",
    }
}

fn openat(dir: &File, name: &str, flags: libc::c_int, mode: libc::mode_t) -> io::Result<File> {
    let c = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: valid directory fd and NUL-terminated name; the returned fd is ours alone.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            c.as_ptr(),
            flags | libc::O_CLOEXEC,
            libc::c_uint::from(mode),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is owned by nothing else.
    Ok(unsafe { File::from_raw_fd(fd) })
}

fn fstatat_nofollow(dir: &File, name: &str) -> io::Result<libc::stat> {
    let c = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: valid directory fd, NUL-terminated name, `st` is a valid out-pointer.
    let rc = unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            c.as_ptr(),
            st.as_mut_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fstatat succeeded, so it filled `st`.
    Ok(unsafe { st.assume_init() })
}

/// `flock(op | LOCK_NB)`: `Ok(false)` if someone else holds a conflicting lock.
fn try_flock(file: &File, op: libc::c_int) -> io::Result<bool> {
    loop {
        // SAFETY: valid fd owned by `file`.
        if unsafe { libc::flock(file.as_raw_fd(), op | libc::LOCK_NB) } == 0 {
            return Ok(true);
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EWOULDBLOCK) => return Ok(false),
            Some(libc::EINTR) => continue,
            _ => return Err(err),
        }
    }
}

/// Is an exclusive lock held on this file? Takes a shared lock and drops it at once if free.
fn probe_held(file: &File) -> io::Result<bool> {
    if try_flock(file, libc::LOCK_SH)? {
        // SAFETY: valid fd owned by `file`.
        unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_UN) };
        return Ok(false);
    }
    Ok(true)
}

fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn check_of(holder: &Holder) -> String {
    let json = serde_json::to_vec(holder).expect("a Holder always serializes");
    format!("fnv1a64:{:016x}", fnv1a64(&json))
}

/// The holder the file names, if its record is whole: `None` for a blank (released or new)
/// file, a damaged one, or a read that raced a write.
fn read_record(file: &File) -> Option<Holder> {
    let mut buf = [0u8; 4096];
    let mut filled = 0;
    while filled < buf.len() {
        match file.read_at(&mut buf[filled..], filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    let text = buf[..filled].trim_ascii();
    if text.is_empty() {
        return None;
    }
    let record: Record = serde_json::from_slice(text).ok()?;
    (record.check == check_of(&record.holder)).then_some(record.holder)
}

/// Write our record over the old one in one pwrite, padded to [`RECORD_LEN`], then drop any
/// longer old tail and fdatasync. Returns the record's length.
fn write_record(file: &File, path: &Path, holder: &Holder) -> Result<usize, LockError> {
    let record = Record {
        check: check_of(holder),
        holder: holder.clone(),
    };
    let mut buf = serde_json::to_vec(&record).expect("a Record always serializes");
    buf.push(b'\n');
    if buf.len() < RECORD_LEN {
        buf.resize(RECORD_LEN - 1, b' ');
        buf.push(b'\n');
    }
    file.write_all_at(&buf, 0)
        .map_err(|e| LockError::io("writing the holder into lock file", path, e))?;
    let len = file
        .metadata()
        .map_err(|e| LockError::io("inspecting lock file", path, e))?
        .len();
    if len > buf.len() as u64 {
        file.set_len(buf.len() as u64)
            .map_err(|e| LockError::io("trimming lock file", path, e))?;
    }
    file.sync_data()
        .map_err(|e| LockError::io("syncing lock file", path, e))?;
    Ok(buf.len())
}

/// This host's name (`gethostname`), or `unknown`.
fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: `buf` is writable for its whole length.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown".to_owned();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_start_takes_a_new_epoch_never_below_the_clock_floor() {
        let dir = std::env::temp_dir().join(format!("tickloop-epoch-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let max = (1 << 22) - 1;
        let first = next_epoch(&dir, "acct", max).unwrap();
        // Minutes since 2025: far above 1 on any machine with a sane clock.
        assert!(first > 500_000, "{first}");
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let dir = dir.clone();
                std::thread::spawn(move || next_epoch(&dir, "acct", max).unwrap())
            })
            .collect();
        let mut got: Vec<u32> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        got.sort();
        assert_eq!(got, (first + 1..=first + 8).collect::<Vec<_>>());
        let path = dir.join("acct.epoch");
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // Far ahead of the clock (restarts faster than once a minute): one more.
        std::fs::write(&path, "   3000000\n").unwrap();
        assert_eq!(next_epoch(&dir, "acct", max).unwrap(), 3_000_001);
        std::fs::write(&path, "garbage").unwrap();
        let e = next_epoch(&dir, "acct", max).unwrap_err().to_string();
        assert!(e.contains("acct.epoch") && e.contains("\"garbage\""), "{e}");
        std::fs::write(&path, format!("{max}")).unwrap();
        let e = next_epoch(&dir, "acct", max).unwrap_err().to_string();
        assert!(e.contains("is the last one"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_systemd_unit_comes_from_the_leaf_cgroup() {
        let unit = |text: &str| unit_of_cgroups(text);
        assert_eq!(
            unit("0::/system.slice/tickloop-engine.service\n"),
            Some(("tickloop-engine.service".to_owned(), false))
        );
        assert_eq!(
            unit("0::/user.slice/user-1000.slice/user@1000.service/app.slice/bot@main.service\n"),
            Some(("bot@main.service".to_owned(), true))
        );
        // cgroup v1: the name=systemd hierarchy.
        assert_eq!(
            unit("12:cpu,cpuacct:/\n1:name=systemd:/system.slice/bot.service\n"),
            Some(("bot.service".to_owned(), false))
        );
        // A terminal in a session or a user manager's own scope: no unit to stop.
        assert_eq!(
            unit("0::/user.slice/user-1000.slice/session-3.scope\n"),
            None
        );
        assert_eq!(
            unit("0::/user.slice/user-1000.slice/user@1000.service/app.slice/app-term.scope\n"),
            None
        );
        assert_eq!(
            unit("0::/user.slice/user-1000.slice/user@1000.service\n"),
            None
        );
        assert_eq!(unit("0::/\n"), None);
    }
}
