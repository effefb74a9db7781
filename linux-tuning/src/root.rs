//! The filesystem the doctor reads: the machine's own (`/`), or a fixture tree that stands for
//! another machine (a Raspberry Pi, a tuned host) in tests.
//!
//! It owns every read of host state, so that each check reads the same way on a live machine
//! and on a fixture, and tells a missing file from one that needs root. It never writes (the
//! doctor only reads) and never guesses: a file it could not read is
//! [`Read::Denied`] or [`Read::Missing`], and the check says so.

use std::collections::BTreeMap;
use std::io::{self, Read as _};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// What reading one file gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Read {
    Text(String),
    /// Not there (no such file, or this kernel does not have it).
    Missing,
    /// There, but only root may read it.
    Denied,
}

impl Read {
    pub fn text(self) -> Option<String> {
        match self {
            Read::Text(t) => Some(t),
            _ => None,
        }
    }
}

/// A root directory to read host state from.
pub struct Root {
    base: PathBuf,
    /// Reading as a user without root: what only root may read is denied (on a fixture,
    /// by the rules in [`Root::root_only`]; on the live machine, by the kernel).
    user: bool,
    /// Every file read, with what it held (for `doctor --capture`).
    reads: Option<Mutex<BTreeMap<String, String>>>,
}

impl Root {
    /// This machine, as the calling process may see it.
    pub fn system() -> Root {
        // SAFETY: geteuid has no preconditions.
        let user = unsafe { libc::geteuid() } != 0;
        Root {
            base: PathBuf::from("/"),
            user,
            reads: None,
        }
    }

    /// A fixture tree standing for a machine, read as root.
    pub fn at(dir: impl Into<PathBuf>) -> Root {
        Root {
            base: dir.into(),
            user: false,
            reads: None,
        }
    }

    /// The same tree read as a user without root.
    pub fn as_user(mut self) -> Root {
        self.user = true;
        self
    }

    /// Keep what every read returned (see [`Root::captured`]).
    pub fn recording(mut self) -> Root {
        self.reads = Some(Mutex::new(BTreeMap::new()));
        self
    }

    /// Whether this is the live machine (not a fixture).
    pub fn is_live(&self) -> bool {
        self.base == Path::new("/")
    }

    /// Whether reads are as root.
    pub fn is_root(&self) -> bool {
        !self.user
    }

    fn path(&self, path: &str) -> PathBuf {
        self.base.join(path.trim_start_matches('/'))
    }

    /// Paths only root may read, as the kernel has them (applied to fixtures read as a
    /// user; on the live machine the kernel itself refuses).
    fn root_only(&self, path: &str) -> bool {
        let fd_of_another = path
            .strip_prefix("/proc/")
            .and_then(|rest| rest.split_once('/'))
            .is_some_and(|(pid, rest)| pid != "self" && rest.starts_with("fd"));
        path.starts_with("/sys/kernel/debug")
            || path.starts_with("/sys/kernel/tracing")
            || path == "/dev/cpu_dma_latency"
            || fd_of_another
            || (path == "/dev/kmsg" && self.dmesg_restricted())
    }

    fn dmesg_restricted(&self) -> bool {
        let restrict = std::fs::read_to_string(self.path("/proc/sys/kernel/dmesg_restrict"));
        restrict.map(|r| r.trim() == "1").unwrap_or(true)
    }

    /// One file's text (the kernel log is read as [`Root::kernel_log`] does).
    pub fn read(&self, path: &str) -> Read {
        if self.user && !self.is_live() && self.root_only(path) {
            return Read::Denied;
        }
        let read = match std::fs::read(self.path(path)) {
            Ok(bytes) => Read::Text(String::from_utf8_lossy(&bytes).into_owned()),
            Err(e) => classify(&e),
        };
        self.record(path, &read);
        read
    }

    /// One file's text, trimmed; `None` when it could not be read.
    pub fn text(&self, path: &str) -> Option<String> {
        self.read(path).text().map(|t| t.trim().to_string())
    }

    fn record(&self, path: &str, read: &Read) {
        if let (Some(reads), Read::Text(t)) = (&self.reads, read) {
            if let Ok(mut reads) = reads.lock() {
                reads.insert(path.to_string(), t.clone());
            }
        }
    }

    /// The names in a directory, sorted; empty when it cannot be listed.
    pub fn list(&self, dir: &str) -> Vec<String> {
        if self.user && !self.is_live() && self.root_only(dir) {
            return Vec::new();
        }
        let Ok(entries) = std::fs::read_dir(self.path(dir)) else {
            return Vec::new();
        };
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        names.sort();
        names
    }

    /// Where a symbolic link points (on a fixture: a file holding the target).
    pub fn link(&self, path: &str) -> Read {
        if self.user && !self.is_live() && self.root_only(path) {
            return Read::Denied;
        }
        let p = self.path(path);
        let read = match std::fs::read_link(&p) {
            Ok(target) => Read::Text(target.to_string_lossy().into_owned()),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => match std::fs::read_to_string(&p) {
                Ok(t) => Read::Text(t.trim().to_string()),
                Err(e) => classify(&e),
            },
            Err(e) => classify(&e),
        };
        // (`/proc/self` is a directory in a fixture.)
        if path != "/proc/self" {
            self.record(path, &read);
        }
        read
    }

    /// The kernel's log since boot, one message per line (without the record prefix):
    /// `/dev/kmsg` (a fixture holds the records as a file).
    pub fn kernel_log(&self) -> Read {
        if self.user && !self.is_live() && self.root_only("/dev/kmsg") {
            return Read::Denied;
        }
        let read = match read_kmsg(&self.path("/dev/kmsg")) {
            Ok(text) => Read::Text(text),
            Err(e) => classify(&e),
        };
        self.record("/dev/kmsg", &read);
        read
    }

    /// Every file read so far and what it held (with [`Root::recording`]).
    pub fn captured(&self) -> BTreeMap<String, String> {
        match &self.reads {
            Some(reads) => reads.lock().map(|r| r.clone()).unwrap_or_default(),
            None => BTreeMap::new(),
        }
    }
}

fn classify(e: &io::Error) -> Read {
    match e.kind() {
        io::ErrorKind::PermissionDenied => Read::Denied,
        _ if e.raw_os_error() == Some(libc::EPERM) => Read::Denied,
        _ => Read::Missing,
    }
}

/// `/dev/kmsg` gives one record per read and `EAGAIN` at the end when opened non-blocking;
/// a regular file gives its text and then end of file. Records are `prio,seq,ts,flags;text`.
fn read_kmsg(path: &Path) -> io::Result<String> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let mut raw = Vec::new();
    let mut buf = vec![0u8; 8192];
    // Bounded: a kernel log is at most a few MiB.
    for _ in 0..1_000_000 {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            // A record overwritten while reading: go on with the next.
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
            Err(e) => return Err(e),
        }
        if !raw.ends_with(b"\n") {
            raw.push(b'\n');
        }
    }
    let text = String::from_utf8_lossy(&raw);
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        // Continuation lines (` KEY=value`) carry no message.
        if line.starts_with(' ') {
            continue;
        }
        let message = line.split_once(';').map_or(line, |(_, m)| m);
        out.push_str(message);
        out.push('\n');
    }
    Ok(out)
}
