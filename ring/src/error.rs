//! Everything that can go wrong when creating or attaching to a ring, each as one line that says
//! what failed, where, and what to do. Nothing here panics or exits; callers decide.

use std::io;
use std::path::PathBuf;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum RingError {
    #[error("ring name {name:?} is invalid: {why}; use a plain name such as `eurusd` (a file under /dev/shm) or a path containing '/'")]
    BadName { name: String, why: &'static str },

    #[error("ring {} not found: create it with `tickloop ring create --ring {}`, or start its feed", path.display(), path.display())]
    NotFound { path: PathBuf },

    #[error("ring {} already exists: attach to it, or remove it first with `tickloop ring rm --ring {}`", path.display(), path.display())]
    Exists { path: PathBuf },

    #[error("cannot open ring {}: permission denied; it belongs to another user or its mode forbids you: run as its owner, or remove it and create your own", path.display())]
    PermissionDenied { path: PathBuf },

    #[error("ring {} belongs to uid {owner}, not to you (uid {me}): run as that user, or remove it (`tickloop ring rm --force --ring {}`) and create your own", path.display(), path.display())]
    OtherUser { path: PathBuf, owner: u32, me: u32 },

    #[error("{} is not a tickloop ring ({why}): check the path; if it is a damaged ring, remove it and create it again", path.display())]
    NotARing { path: PathBuf, why: String },

    #[error("ring {} is truncated ({why}): the file is damaged; remove it with `tickloop ring rm --ring {}` and create it again", path.display(), path.display())]
    Truncated { path: PathBuf, why: String },

    #[error("ring {} has layout {major}.{minor} but this tickloop reads layout {}.x: recreate the ring with this tickloop, or use the version that made it", path.display(), super::layout::LAYOUT_MAJOR)]
    Version {
        path: PathBuf,
        major: u16,
        minor: u16,
    },

    #[error("ring {} is not initialised: its creator died while creating it; remove it with `tickloop ring rm --ring {}` and create it again", path.display(), path.display())]
    NotInitialised { path: PathBuf },

    #[error("ring {} already has a writer (pid {pid}): stop it first (`kill {pid}`), or write to another ring", path.display())]
    WriterBusy { path: PathBuf, pid: u32 },

    #[error("not enough space to create ring {}: it needs {needed} but {dir} has {available} free; free some space, use fewer --slots, or enlarge the filesystem (`mount -o remount,size=... {dir}`)", path.display())]
    NoSpace {
        path: PathBuf,
        dir: String,
        needed: Bytes,
        available: Bytes,
    },

    #[error("invalid ring geometry: {0}")]
    Geometry(String),

    #[error("the symbol table of ring {} is full ({capacity} symbols): create the ring with more --symbols", path.display())]
    SymbolsFull { path: PathBuf, capacity: u32 },

    #[error("symbol name {name:?} is invalid: it must be 1 to 31 bytes of UTF-8 without NUL")]
    BadSymbol { name: String },

    #[error("{op} {}: {cause}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        // Not named `source`: the message carries it, and an error chain would print it twice.
        cause: io::Error,
    },

    #[error("cannot create ring {}: permission denied in {dir}: choose a directory you can write to, or run as a user who can", path.display())]
    DirectoryDenied { path: PathBuf, dir: String },
}

impl RingError {
    pub(crate) fn io(op: &'static str, path: &std::path::Path, cause: io::Error) -> RingError {
        RingError::Io {
            op,
            path: path.to_owned(),
            cause,
        }
    }
}

/// A byte count that prints itself for people (`64.0 MiB`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bytes(pub u64);

impl std::fmt::Display for Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
        let mut value = self.0 as f64;
        let mut unit = 0;
        while value >= 1024.0 && unit + 1 < UNITS.len() {
            value /= 1024.0;
            unit += 1;
        }
        if unit == 0 {
            write!(f, "{} B", self.0)
        } else {
            write!(f, "{value:.1} {}", UNITS[unit])
        }
    }
}
