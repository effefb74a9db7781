//! The ring segment as a file: crash-safe creation (temporary name, fallocate, rename without
//! replacing), validation of everything in the header before anything is mapped, and the
//! mappings themselves (read-only for readers, who map only the control page writable).
//!
//! This module owns files and mappings; it knows nothing about positions or candles. Every
//! mapping is listed with [`crate::crash`] while it exists, so a SIGBUS from a ring truncated
//! under this process is reported with the ring's path.

use super::error::{Bytes, RingError};
use super::layout::*;
use super::protocol::Slot;
use crate::sys;
use memmap2::{MmapOptions, MmapRaw};
use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

const HUGETLBFS_MAGIC: i64 = 0x9584_58f6;

/// Turn a `--ring` argument into a path: a plain name lives under /dev/shm; anything with a '/'
/// is a path (for hugetlbfs or a private tmpfs).
pub fn ring_path(arg: &str) -> Result<PathBuf, RingError> {
    shm_path(arg).map_err(|why| RingError::BadName {
        name: arg.to_owned(),
        why,
    })
}

/// Turn the name of a file in shared memory (a ring, a metrics page) into a path: a plain
/// name lives under /dev/shm; anything with a '/' is a path. The error says what is wrong.
pub fn shm_path(arg: &str) -> Result<PathBuf, &'static str> {
    if arg.is_empty() {
        return Err("it is empty");
    }
    if arg.contains('\0') {
        return Err("it contains a NUL byte");
    }
    if arg.ends_with('/') {
        return Err("it ends with '/', so it names a directory, not a file");
    }
    if arg.len() > 4096 {
        return Err("it is longer than 4096 bytes");
    }
    if arg.contains('/') {
        return Ok(PathBuf::from(arg));
    }
    if arg.starts_with('.') {
        return Err("names starting with '.' are reserved for temporary files");
    }
    if arg.len() > 200 {
        return Err("it is longer than 200 bytes");
    }
    Ok(Path::new("/dev/shm").join(arg))
}

/// How a process maps a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// The one writer: everything writable, exclusive `flock` held for the segment's life.
    Write,
    /// A reader: everything read-only, plus the control page writable when the file allows it.
    Read,
    /// Inspection (`ring info`, `ring rm`): read-only, no control page.
    Inspect,
}

/// An open, validated, mapped ring segment.
pub struct Segment {
    /// The mappings as the SIGBUS handler knows them ([`crate::crash`]): listed once mapped,
    /// and unlisted first on drop (fields drop in order), before the file and maps go.
    _crash: [crate::crash::MappingGuard; 2],
    /// What validation accepted; bounds every slice into the mapping (the header is shared
    /// memory and is not trusted again after validation).
    geometry: Geometry,
    path: PathBuf,
    // Holds the writer's flock for as long as the segment is open.
    _file: File,
    map: MmapRaw,
    /// A reader's writable mapping holding the control page, and the page's offset in it.
    control: Option<(MmapRaw, usize)>,
    access: Access,
}

// SAFETY: the segment is only ever accessed through atomics (mutable fields) or immutable
// fields; the raw mappings are valid for the lifetime of `Segment`.
unsafe impl Send for Segment {}

impl Segment {
    /// Open and validate the segment at `path`. A writer also takes the exclusive lock.
    pub fn open(path: &Path, access: Access) -> Result<Segment, RingError> {
        let file = open_file(path, access)?;
        let writable_file = access == Access::Write || is_writable(&file);
        if access == Access::Write && !lock_exclusive(&file, path)? {
            let pid = read_header_bytes(&file, path)
                .map(|h| u32::from_le_bytes(h[136..140].try_into().unwrap()))
                .unwrap_or(0);
            return Err(RingError::WriterBusy {
                path: path.to_owned(),
                pid,
            });
        }
        let geometry = validate(&file, path)?;
        let mut options = MmapOptions::new();
        // Whole file-system blocks: on hugetlbfs munmap refuses a length that is not a whole
        // number of huge pages (EINVAL, which memmap2 ignores), and the mapping would leak.
        options.len(round_up(geometry.len, fs_block_size(&file)) as usize);
        if access != Access::Inspect {
            // Prefault every page now, not on the first candle.
            options.populate();
        }
        let map = if access == Access::Write {
            options.map_raw(&file)
        } else {
            options.map_raw_read_only(&file)
        }
        .map_err(|e| RingError::io("mapping", path, e))?;
        let control = if access == Access::Read && writable_file {
            // The control page's own mapping. On hugetlbfs mappings must start on a huge page,
            // so there it covers the first huge page (header included; the reader never writes
            // the header, it only reads it through the read-only mapping).
            let block = fs_block_size(&file);
            let (offset, len) = if block > PAGE {
                (0, block)
            } else {
                (CONTROL_OFFSET, PAGE)
            };
            Some((
                MmapOptions::new()
                    .offset(offset)
                    .len(len as usize)
                    .populate()
                    .map_raw(&file)
                    .map_err(|e| RingError::io("mapping the control page of", path, e))?,
                (CONTROL_OFFSET - offset) as usize,
            ))
        } else {
            None
        };
        let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
        let listed =
            |map: &MmapRaw| crate::crash::register_mapping(map.as_ptr(), map.len(), fd, path);
        let _crash = [
            listed(&map),
            match &control {
                Some((control, _)) => listed(control),
                None => crate::crash::MappingGuard::none(),
            },
        ];
        Ok(Segment {
            _crash,
            geometry,
            path: path.to_owned(),
            _file: file,
            map,
            control,
            access,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Has the ring's file been removed (no name links to it any more)?
    pub fn unlinked(&self) -> bool {
        self._file.metadata().is_ok_and(|m| m.nlink() == 0)
    }

    /// Does a live writer hold this ring's lock? (The kernel drops it when the writer dies.)
    pub fn writer_running(&self) -> bool {
        self.access == Access::Write || sys::lock_held(&self._file)
    }

    pub fn header(&self) -> &Header {
        // SAFETY: the mapping is at least one page, page-aligned, and validated as a header.
        unsafe { &*(self.map.as_ptr() as *const Header) }
    }

    /// The control page, writable for the writer and for readers whose file allows it.
    pub fn control(&self) -> Option<&Control> {
        let ptr = match (self.access, &self.control) {
            (Access::Write, _) => unsafe { self.map.as_ptr().add(CONTROL_OFFSET as usize) },
            // SAFETY: the mapping covers the control page at `offset`.
            (Access::Read, Some((control, offset))) => unsafe { control.as_ptr().add(*offset) },
            _ => return None,
        };
        // SAFETY: a page-aligned, page-long mapping laid out as `Control`.
        Some(unsafe { &*(ptr as *const Control) })
    }

    /// The control page for reading only (any access mode), for reports.
    pub fn control_view(&self) -> &Control {
        // SAFETY: the whole-file mapping covers the control page.
        unsafe { &*(self.map.as_ptr().add(CONTROL_OFFSET as usize) as *const Control) }
    }

    pub fn slots(&self) -> &[Slot] {
        let g = &self.geometry;
        // SAFETY: validated: slots_offset + slot_count * 64 <= mapping length, 64-byte aligned.
        unsafe {
            std::slice::from_raw_parts(
                self.map.as_ptr().add(g.slots_offset as usize) as *const Slot,
                g.slot_count as usize,
            )
        }
    }

    /// Pointer to symbol table entry `id` (not bounds-checked against the count).
    pub(crate) fn symbol_entry_ptr(&self, id: u32) -> *mut SymbolEntry {
        // SAFETY: callers keep id < symbol_capacity, which validation bounds by the mapping.
        unsafe {
            self.map
                .as_mut_ptr()
                .add((SYMBOLS_OFFSET + id as u64 * SYMBOL_ENTRY_SIZE) as usize)
                as *mut SymbolEntry
        }
    }

    /// The name of symbol `id`, if the writer has published it.
    pub fn symbol_name(&self, id: u32) -> Option<&str> {
        let h = self.header();
        let count = h
            .symbol_count
            .load(std::sync::atomic::Ordering::Acquire)
            .min(self.geometry.symbol_capacity);
        if id >= count {
            return None;
        }
        // SAFETY: entries below the published count are complete and never rewritten.
        let entry = unsafe { &*self.symbol_entry_ptr(id) };
        let len = (entry.len as usize).min(SYMBOL_NAME_MAX);
        std::str::from_utf8(&entry.name[..len]).ok()
    }

    /// The validated geometry (slot count, symbol capacity, offsets).
    pub fn geometry(&self) -> Geometry {
        self.geometry
    }

    /// Published symbol count.
    pub fn symbol_count(&self) -> u32 {
        let h = self.header();
        h.symbol_count
            .load(std::sync::atomic::Ordering::Acquire)
            .min(self.geometry.symbol_capacity)
    }
}

/// Take the writer lock, retrying briefly: `ring info` probes it with a shared lock for a few
/// microseconds, which must not make a writer's start fail.
fn lock_exclusive(file: &File, path: &Path) -> Result<bool, RingError> {
    for _ in 0..20 {
        if sys::try_lock_exclusive(file).map_err(|e| RingError::io("locking", path, e))? {
            return Ok(true);
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    Ok(false)
}

fn open_file(path: &Path, access: Access) -> Result<File, RingError> {
    let attempt = |write: bool| {
        OpenOptions::new()
            .read(true)
            .write(write)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)
    };
    let result = match access {
        Access::Write => attempt(true),
        // A reader wants the control page writable, but can live without it.
        Access::Read => attempt(true).or_else(|e| {
            if e.kind() == io::ErrorKind::PermissionDenied {
                attempt(false)
            } else {
                Err(e)
            }
        }),
        Access::Inspect => attempt(false),
    };
    result.map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => RingError::NotFound {
            path: path.to_owned(),
        },
        io::ErrorKind::PermissionDenied => RingError::PermissionDenied {
            path: path.to_owned(),
        },
        _ => RingError::io("opening ring", path, e),
    })
}

fn is_writable(file: &File) -> bool {
    // SAFETY: valid fd.
    let flags = unsafe { libc::fcntl(std::os::fd::AsRawFd::as_raw_fd(file), libc::F_GETFL) };
    flags >= 0 && (flags & libc::O_ACCMODE) == libc::O_RDWR
}

fn read_header_bytes(file: &File, path: &Path) -> Result<[u8; 256], RingError> {
    use std::os::unix::fs::FileExt;
    let mut buf = [0u8; 256];
    let mut filled = 0;
    while filled < buf.len() {
        match file.read_at(&mut buf[filled..], filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(RingError::io("reading the header of", path, e)),
        }
    }
    Ok(buf)
}

/// Check everything about the file before mapping it, so that a bad file is an error, never a
/// SIGBUS or a wild read. (A ring truncated while mapped still raises SIGBUS in its users: the
/// files are private to their owner, who must remove rings with `ring rm`, never truncate
/// them; [`crate::crash`] reports it.) Returns the geometry the header declares.
pub fn validate(file: &File, path: &Path) -> Result<Geometry, RingError> {
    let meta = file
        .metadata()
        .map_err(|e| RingError::io("inspecting ring", path, e))?;
    let not_a_ring = |why: String| RingError::NotARing {
        path: path.to_owned(),
        why,
    };
    if !meta.file_type().is_file() {
        return Err(not_a_ring("it is not a regular file".into()));
    }
    let me = sys::euid();
    if meta.uid() != me {
        return Err(RingError::OtherUser {
            path: path.to_owned(),
            owner: meta.uid(),
            me,
        });
    }
    let size = meta.len();
    if size < PAGE {
        // A file too short to hold a header: if it starts with the magic, it is a damaged ring.
        let head = read_header_bytes(file, path)?;
        if size >= 8 && u64::from_le_bytes(head[0..8].try_into().unwrap()) == MAGIC {
            return Err(RingError::Truncated {
                path: path.to_owned(),
                why: format!("{size} bytes, a ring header alone needs {PAGE}"),
            });
        }
        return Err(not_a_ring(format!("{size} bytes, no ring header")));
    }
    let h = read_header_bytes(file, path)?;
    let u16_at = |o: usize| u16::from_le_bytes(h[o..o + 2].try_into().unwrap());
    let u32_at = |o: usize| u32::from_le_bytes(h[o..o + 4].try_into().unwrap());
    let u64_at = |o: usize| u64::from_le_bytes(h[o..o + 8].try_into().unwrap());
    if u64_at(0) != MAGIC {
        return Err(not_a_ring("no ring magic at the start".into()));
    }
    let (major, minor) = (u16_at(8), u16_at(10));
    if major != LAYOUT_MAJOR {
        return Err(RingError::Version {
            path: path.to_owned(),
            major,
            minor,
        });
    }
    if u32_at(80) != INIT_DONE {
        return Err(RingError::NotInitialised {
            path: path.to_owned(),
        });
    }
    if u32_at(12) != SLOT_SIZE || u64_at(24) != PAYLOAD_FINGERPRINT {
        return Err(not_a_ring(format!(
            "its slots are {} bytes with payload fingerprint {:#x}, this tickloop uses {SLOT_SIZE} bytes and {PAYLOAD_FINGERPRINT:#x}",
            u32_at(12),
            u64_at(24)
        )));
    }
    let geometry = Geometry::new(u64_at(16), u32_at(32))
        .map_err(|why| not_a_ring(format!("its header is corrupt: {why}")))?;
    if u64_at(40) != CONTROL_OFFSET
        || u64_at(48) != SYMBOLS_OFFSET
        || u64_at(56) != geometry.slots_offset
    {
        return Err(not_a_ring("its header offsets are corrupt".into()));
    }
    let declared = u64_at(64);
    if declared < geometry.len {
        return Err(not_a_ring(format!(
            "its header declares {declared} bytes but its slots need {}",
            geometry.len
        )));
    }
    if size < declared {
        return Err(RingError::Truncated {
            path: path.to_owned(),
            why: format!("the header says {declared} bytes, the file has {size}"),
        });
    }
    Ok(geometry)
}

/// Options for creating a segment.
#[derive(Debug, Clone, Copy)]
pub struct CreateOptions {
    pub slots: u64,
    pub symbols: u32,
    /// File mode; 0o600 unless configured.
    pub mode: u32,
}

impl Default for CreateOptions {
    fn default() -> Self {
        CreateOptions {
            slots: 1 << 16,
            symbols: 1024,
            mode: 0o600,
        }
    }
}

/// Create a ring at `path` without ever exposing a half-made one: the file is built under a
/// temporary name, its space reserved with fallocate (a full filesystem fails here, not with a
/// SIGBUS later), initialised, and renamed into place only if nothing exists there.
pub fn create(path: &Path, options: CreateOptions) -> Result<(), RingError> {
    let geometry = Geometry::new(options.slots, options.symbols).map_err(RingError::Geometry)?;
    if options.mode & !0o777 != 0 {
        return Err(RingError::Geometry(format!(
            "--mode {:o} is not a file permission mode: use something like 600 or 640",
            options.mode
        )));
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let file_name = path
        .file_name()
        .ok_or_else(|| RingError::BadName {
            name: path.display().to_string(),
            why: "it names a directory, not a file",
        })?
        .to_string_lossy()
        .into_owned();
    if path.exists() {
        return Err(RingError::Exists {
            path: path.to_owned(),
        });
    }
    remove_stale_temporaries(&dir, &file_name);
    let pid = std::process::id();
    let temp = TempFile(dir.join(format!(".{file_name}.tmp-{pid}-{}", sys::monotonic_ns())));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(options.mode)
        .custom_flags(libc::O_CLOEXEC)
        .open(&temp.0)
        .map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => {
                RingError::io("creating ring (does the directory exist?)", path, e)
            }
            io::ErrorKind::PermissionDenied => RingError::DirectoryDenied {
                path: path.to_owned(),
                dir: dir.display().to_string(),
            },
            _ => RingError::io("creating ring", path, e),
        })?;
    // The umask may have narrowed the mode; the configured mode is what the user asked for.
    file.set_permissions(std::fs::Permissions::from_mode(options.mode))
        .map_err(|e| RingError::io("setting the mode of", path, e))?;
    let len = round_up(geometry.len, block_size_if_hugetlbfs(&dir));
    // SAFETY: valid fd; posix_fallocate returns the error number instead of setting errno.
    let rc = unsafe {
        libc::posix_fallocate(
            std::os::fd::AsRawFd::as_raw_fd(&file),
            0,
            len as libc::off_t,
        )
    };
    if rc == libc::ENOSPC || rc == libc::EFBIG {
        return Err(RingError::NoSpace {
            path: path.to_owned(),
            dir: dir.display().to_string(),
            needed: Bytes(len),
            available: Bytes(available_bytes(&dir)),
        });
    }
    if rc != 0 {
        return Err(RingError::io(
            "reserving space for ring",
            path,
            io::Error::from_raw_os_error(rc),
        ));
    }
    let map = MmapOptions::new()
        .len(round_up(len, fs_block_size(&file)) as usize)
        .map_raw(&file)
        .map_err(|e| RingError::io("mapping new ring", path, e))?;
    // SAFETY: fresh, zero-filled, private-to-us file of `len` bytes; nobody else can see it yet.
    unsafe {
        let h = &mut *(map.as_mut_ptr() as *mut Header);
        h.magic = MAGIC;
        h.layout_major = LAYOUT_MAJOR;
        h.layout_minor = LAYOUT_MINOR;
        h.slot_size = SLOT_SIZE;
        h.slot_count = geometry.slot_count;
        h.payload_fingerprint = PAYLOAD_FINGERPRINT;
        h.symbol_capacity = geometry.symbol_capacity;
        h.mode = options.mode;
        h.control_offset = CONTROL_OFFSET;
        h.symbols_offset = SYMBOLS_OFFSET;
        h.slots_offset = geometry.slots_offset;
        h.segment_size = len;
        h.created_ns = sys::realtime_ns() as u64;
        h.init
            .store(INIT_DONE, std::sync::atomic::Ordering::Release);
    }
    drop(map);
    rename_noreplace(&temp.0, path)?;
    std::mem::forget(temp);
    Ok(())
}

/// Deletes the temporary file unless creation succeeded.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Install the finished file at `path`, never replacing one a concurrent creator installed.
fn rename_noreplace(from: &Path, to: &Path) -> Result<(), RingError> {
    match crate::sys::rename_noreplace(from, to) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(RingError::Exists {
            path: to.to_owned(),
        }),
        Err(e) => Err(RingError::io("publishing ring", to, e)),
    }
}

/// Remove temporary files left by creators of this ring that died mid-creation.
fn remove_stale_temporaries(dir: &Path, file_name: &str) {
    let prefix = format!(".{file_name}.tmp-");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(&prefix)) else {
            continue;
        };
        let pid = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = pid {
            if sys::process_start_ticks(pid).is_none() {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

fn statfs(dir: &Path) -> Option<libc::statfs> {
    let c = CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: zeroed statfs is a valid out-buffer.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid C string and out-pointer.
    (unsafe { libc::statfs(c.as_ptr(), &mut st) } == 0).then_some(st)
}

/// The block size of the filesystem holding `file` if it is hugetlbfs, else one page.
fn fs_block_size(file: &File) -> u64 {
    // SAFETY: zeroed statfs is a valid out-buffer.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid fd and out-pointer.
    if unsafe { libc::fstatfs(std::os::fd::AsRawFd::as_raw_fd(file), &mut st) } != 0 {
        return PAGE;
    }
    hugetlbfs_block(&st)
}

/// As `fs_block_size`, for the directory a ring is created in.
fn block_size_if_hugetlbfs(dir: &Path) -> u64 {
    statfs(dir).map_or(PAGE, |st| hugetlbfs_block(&st))
}

// statfs field types differ between 64- and 32-bit targets.
#[allow(clippy::useless_conversion)]
fn hugetlbfs_block(st: &libc::statfs) -> u64 {
    if i64::from(st.f_type) == HUGETLBFS_MAGIC {
        (st.f_bsize as u64).max(PAGE)
    } else {
        PAGE
    }
}

#[allow(clippy::useless_conversion)]
fn available_bytes(dir: &Path) -> u64 {
    statfs(dir)
        .map(|st| u64::from(st.f_bavail) * st.f_bsize as u64)
        .unwrap_or(0)
}
