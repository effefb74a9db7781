//! The metrics page as a file, on the engine's side: crash-safe creation (temporary name,
//! fallocate, an exclusive `flock` held for life, rename into place), the seqlock that makes
//! every snapshot whole, and removal when the engine ends.
//!
//! It owns the file, its lock and its read-write mapping. It never reads a clock, never
//! allocates after [`PageWriter::create`], never blocks (one `flock` try; no waiting), and
//! never replaces a file that is not a metrics page or a page a live engine holds.

use super::layout::{self, header, Layout, Section, Shape};
use super::MetricsError;
use memmap2::{MmapOptions, MmapRaw};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{fence, AtomicU64, Ordering};

/// What the creator writes once: who publishes, since when, how often.
#[derive(Debug, Clone, Copy)]
pub struct Identity<'a> {
    /// `component@account`, as the instance lock names it.
    pub instance: &'a str,
    /// When the engine started, ns since the Unix epoch (the caller's wall clock).
    pub started_unix_ns: i64,
    /// How often the page is published (the loop's housekeeping interval).
    pub interval_ns: u64,
}

/// The one writer of a metrics page.
pub struct PageWriter {
    path: PathBuf,
    /// Holds the exclusive `flock` for as long as the page is ours.
    file: File,
    map: MmapRaw,
    layout: Layout,
    /// The instance name was cut to fit the header.
    instance_truncated: bool,
}

/// Temporary files of one process get distinct names.
static TEMP_SERIAL: AtomicU64 = AtomicU64::new(0);

impl PageWriter {
    /// Make the page at `path` for a loop of `shape`. The file is built and filled under a
    /// temporary name in the same directory, its space reserved (a full /dev/shm fails here,
    /// not with SIGBUS later), locked, and renamed into place. An existing page is replaced
    /// only if no live engine holds it (a crashed engine's page); anything else is refused.
    pub fn create(
        path: &Path,
        shape: Shape,
        id: &Identity<'_>,
    ) -> Result<PageWriter, MetricsError> {
        let (dir, name) = split_path(path)?;
        remove_stale_temporaries(&dir, &name);
        let layout = Layout::new(shape);
        let temp = TempFile(dir.join(format!(
            ".{name}.tmp-{}-{}",
            std::process::id(),
            TEMP_SERIAL.fetch_add(1, Ordering::Relaxed)
        )));
        let io_err = |what: &'static str| {
            move |source: io::Error| MetricsError::Page {
                path: path.to_owned(),
                what,
                source,
            }
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(&temp.0)
            .map_err(io_err("create"))?;
        if !tickloop_ring::sys::try_lock_exclusive(&file).map_err(io_err("lock"))? {
            return Err(io_err("lock")(io::Error::from_raw_os_error(
                libc::EWOULDBLOCK,
            )));
        }
        reserve(&file, layout.page_bytes, path, &dir)?;
        let map = MmapOptions::new()
            .len(layout.page_bytes as usize)
            .map_raw(&file)
            .map_err(io_err("map"))?;
        let mut writer = PageWriter {
            path: path.to_owned(),
            file,
            map,
            layout,
            instance_truncated: false,
        };
        writer.write_identity(id);
        install(&temp.0, path)?;
        std::mem::forget(temp);
        Ok(writer)
    }

    fn words(&self) -> &[AtomicU64] {
        // SAFETY: the mapping is page-aligned, `page_bytes` long (a multiple of 8) and lives as
        // long as `self`; AtomicU64 has the size and alignment of u64, and every access to
        // the shared bytes goes through these atomics.
        unsafe {
            std::slice::from_raw_parts(
                self.map.as_ptr() as *const AtomicU64,
                self.layout.page_bytes as usize / 8,
            )
        }
    }

    /// The words written once, before the page is visible under its name.
    fn write_identity(&mut self, id: &Identity<'_>) {
        let pid = std::process::id();
        let start_ticks = tickloop_ring::sys::process_start_ticks(pid).unwrap_or(0);
        let fixed = [
            (header::MAGIC, layout::MAGIC),
            (header::LAYOUT_MAJOR, layout::LAYOUT_MAJOR),
            (header::LAYOUT_MINOR, layout::LAYOUT_MINOR),
            (header::HEADER_BYTES, layout::HEADER_BYTES),
            (header::PAGE_BYTES, self.layout.page_bytes),
            (header::PID, pid as u64),
            (header::START_TICKS, start_ticks),
            (header::STARTED_UNIX_NS, id.started_unix_ns.max(0) as u64),
            (header::INTERVAL_NS, id.interval_ns),
        ];
        let mut name = [0u64; layout::INSTANCE_BYTES / 8];
        let cut = layout::cut_name(id.instance.as_bytes(), layout::INSTANCE_BYTES);
        let kept = layout::pack_name(cut, &mut name);
        self.instance_truncated = kept < id.instance.len();
        let words = self.words();
        for (word, value) in fixed {
            words[word].store(value, Ordering::Relaxed);
        }
        for section in Section::ALL {
            let (offset, record, capacity) = self.layout.sections[section as usize];
            let d = section.descriptor();
            words[d].store(offset, Ordering::Relaxed);
            words[d + 1].store(record, Ordering::Relaxed);
            words[d + 2].store(capacity, Ordering::Relaxed);
        }
        // The loop and trading sections always hold their one record.
        for section in [Section::Loop, Section::Trading] {
            words[section.descriptor() + 3].store(1, Ordering::Relaxed);
        }
        words[header::INSTANCE_LEN].store(kept as u64, Ordering::Relaxed);
        for (i, w) in name.iter().enumerate() {
            words[header::INSTANCE + i].store(*w, Ordering::Relaxed);
        }
    }

    /// Start a snapshot: `seq` goes odd (readers retry) until the [`Publish`] is dropped.
    pub fn begin(&mut self) -> Publish<'_> {
        let words = self.words();
        let seq = words[header::SEQ].load(Ordering::Relaxed);
        words[header::SEQ].store(seq | 1, Ordering::Relaxed);
        // Orders the odd `seq` before every store of the snapshot (the ring's slot seqlock).
        fence(Ordering::Release);
        Publish {
            words,
            seq: seq | 1,
        }
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The instance name did not fit the header and was cut.
    pub fn instance_truncated(&self) -> bool {
        self.instance_truncated
    }

    /// Is `path` still this page (not removed or replaced by hand)?
    fn still_ours(&self) -> bool {
        match (std::fs::metadata(&self.path), self.file.metadata()) {
            (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
            _ => false,
        }
    }
}

impl Drop for PageWriter {
    /// The engine is done: the page goes (a reader that has it mapped keeps its last snapshot,
    /// which says `stopped`). A crashed engine's page stays, with its pid, until replaced.
    fn drop(&mut self) {
        if self.still_ours() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// One snapshot being written; dropping it completes it (`seq` even again, release).
pub struct Publish<'a> {
    words: &'a [AtomicU64],
    seq: u64,
}

impl Publish<'_> {
    /// Store `value` at header or record word `word` (out of range: ignored).
    pub fn set(&self, word: usize, value: u64) {
        if let Some(w) = self.words.get(word) {
            w.store(value, Ordering::Relaxed);
        }
    }

    /// Store `values` from word `at` on.
    pub fn set_all(&self, at: usize, values: &[u64]) {
        for (i, v) in values.iter().enumerate() {
            self.set(at + i, *v);
        }
    }
}

impl Drop for Publish<'_> {
    fn drop(&mut self) {
        self.words[header::SEQ].store(self.seq.wrapping_add(1), Ordering::Release);
    }
}

/// The page's directory and file name; the directory must exist.
fn split_path(path: &Path) -> Result<(PathBuf, String), MetricsError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| MetricsError::BadPage {
            page: path.display().to_string(),
            why: "it names a directory, not a file",
        })?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    if !dir.is_dir() {
        return Err(MetricsError::NoDirectory {
            path: path.to_owned(),
            dir,
        });
    }
    Ok((dir, name))
}

/// Reserve the page's bytes now (posix_fallocate), so a full filesystem is an error at start.
fn reserve(file: &File, bytes: u64, path: &Path, dir: &Path) -> Result<(), MetricsError> {
    // SAFETY: valid fd; posix_fallocate returns the error number instead of setting errno.
    let rc = unsafe {
        libc::posix_fallocate(
            std::os::fd::AsRawFd::as_raw_fd(file),
            0,
            bytes as libc::off_t,
        )
    };
    match rc {
        0 => Ok(()),
        libc::ENOSPC | libc::EFBIG => Err(MetricsError::NoSpace {
            path: path.to_owned(),
            dir: dir.to_owned(),
            needed: bytes,
        }),
        rc => Err(MetricsError::Page {
            path: path.to_owned(),
            what: "reserve space for",
            source: io::Error::from_raw_os_error(rc),
        }),
    }
}

/// Put the finished temporary page at `path`: without replacing anything when nothing is
/// there; over an existing page only when no live engine holds its lock.
fn install(temp: &Path, path: &Path) -> Result<(), MetricsError> {
    let err = |what: &'static str| {
        move |source: io::Error| MetricsError::Page {
            path: path.to_owned(),
            what,
            source,
        }
    };
    for _ in 0..8 {
        match tickloop_ring::sys::rename_noreplace(temp, path) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(err("publish")(e)),
            Err(_) => {}
        }
        let old = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(err("open the existing")(e)),
        };
        let mut head = [0u8; 48];
        let is_page =
            old.read_exact_at(&mut head, 0).is_ok() && head[..8] == layout::MAGIC.to_le_bytes();
        if !is_page {
            return Err(MetricsError::NotAPageThere {
                path: path.to_owned(),
            });
        }
        if !tickloop_ring::sys::try_lock_exclusive(&old).map_err(err("lock the existing"))? {
            let pid = u64::from_le_bytes(head[40..48].try_into().unwrap_or_default());
            return Err(MetricsError::InUse {
                path: path.to_owned(),
                pid,
            });
        }
        // Locked: a dead engine's page. Replace it if it is still the file at `path`.
        if same_file(&old, path) {
            return std::fs::rename(temp, path).map_err(err("replace the stale"));
        }
    }
    Err(err("publish")(io::Error::other(
        "the file kept changing under it; is another engine starting with the same metrics.page?",
    )))
}

fn same_file(file: &File, path: &Path) -> bool {
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Deletes the temporary file unless it was installed.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Remove temporary pages left by engines that died while creating this page.
fn remove_stale_temporaries(dir: &Path, name: &str) {
    let prefix = format!(".{name}.tmp-");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    // Bounded: a directory with more entries than this is not searched further.
    for entry in entries.flatten().take(100_000) {
        let file_name = entry.file_name();
        let Some(rest) = file_name.to_str().and_then(|n| n.strip_prefix(&prefix)) else {
            continue;
        };
        let pid = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
        if pid.is_some_and(|pid| tickloop_ring::sys::process_start_ticks(pid).is_none()) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}
