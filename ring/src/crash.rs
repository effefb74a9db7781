//! SIGBUS from a mapped ring: say what happened before the process dies.
//!
//! A ring file truncated (or a hugetlbfs pool exhausted) under a process that maps it raises
//! SIGBUS on the next access; the kernel's default is to die without a word. This module owns
//! a SIGBUS handler ([`install`]), a fixed table of the ring mappings this process holds
//! (start, length, file descriptor and path; [`register_mapping`] is called by
//! `ring::segment` when it maps a ring, and the guard it returns removes the entry before the
//! mapping goes), and the status file to mark on a crash ([`set_status_file`], called by
//! `status::StatusWriter`). On SIGBUS the handler writes one line to stderr naming the ring
//! the faulting address lies in (or saying that it lies in none), rewrites the status file
//! with `"state":"crashed"` and a `crash` object (tmp file, write, fdatasync, rename, as the
//! status writer does), restores the default action and re-raises, so the process still
//! dies by SIGBUS (exit status, core dump).
//!
//! In the handler it must never allocate, take a lock, format with `std::fmt` or call
//! anything that is not async-signal-safe: it reads only the static table (atomics) and a
//! preallocated status slot published through an atomic pointer, formats numbers by hand into
//! buffers on its stack, and calls only open, read, write, fstat, fdatasync, close, rename,
//! clock_gettime, sigaction and raise. Outside the handler the table costs a few atomic stores
//! per mapping and nothing per candle.

use std::ffi::CString;
use std::io;
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicI32, AtomicPtr, AtomicU8, AtomicUsize, Ordering};

/// Ring mappings the table holds; beyond, a fault in an unlisted mapping is reported as
/// outside every ring (the line and the status are still written).
pub const MAX_MAPPINGS: usize = 64;
/// Bytes of a ring's path kept in the table (longer ones are cut at a char boundary).
pub const PATH_BYTES: usize = 256;
/// The largest status document the handler rewrites (the status writer's own bound).
pub const STATUS_BYTES: usize = 64 << 10;

const FREE: u8 = 0;
const BUSY: u8 = 1;
const LIVE: u8 = 2;

struct Entry {
    state: AtomicU8,
    start: AtomicUsize,
    len: AtomicUsize,
    fd: AtomicI32,
    path_len: AtomicUsize,
    path: [AtomicU8; PATH_BYTES],
}

impl Entry {
    const fn new() -> Entry {
        Entry {
            state: AtomicU8::new(FREE),
            start: AtomicUsize::new(0),
            len: AtomicUsize::new(0),
            fd: AtomicI32::new(-1),
            path_len: AtomicUsize::new(0),
            path: [const { AtomicU8::new(0) }; PATH_BYTES],
        }
    }
}

static MAPPINGS: [Entry; MAX_MAPPINGS] = [const { Entry::new() }; MAX_MAPPINGS];
/// Who dies ("the engine", "this reader"): a `&'static str` as pointer and length.
static ROLE: AtomicPtr<u8> = AtomicPtr::new(std::ptr::null_mut());
static ROLE_LEN: AtomicUsize = AtomicUsize::new(0);
static STATUS: AtomicPtr<StatusSlot> = AtomicPtr::new(std::ptr::null_mut());
/// Set by the first thread into the handler; any other waits for it to finish.
static HANDLING: AtomicU8 = AtomicU8::new(0);

/// Keeps a mapping listed in the table; dropping it (before unmapping) removes the entry.
#[derive(Debug)]
pub struct MappingGuard(Option<usize>);

impl MappingGuard {
    /// A guard that lists nothing.
    pub fn none() -> MappingGuard {
        MappingGuard(None)
    }
}

/// List `len` bytes from `start`, mapped from `fd` (the ring file `path`), for the handler.
/// A full table lists nothing (the guard is empty).
pub fn register_mapping(start: *const u8, len: usize, fd: RawFd, path: &Path) -> MappingGuard {
    let text = path.to_string_lossy();
    let mut cut = text.len().min(PATH_BYTES);
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    for (index, entry) in MAPPINGS.iter().enumerate() {
        if entry
            .state
            .compare_exchange(FREE, BUSY, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            continue;
        }
        entry.start.store(start as usize, Ordering::Relaxed);
        entry.len.store(len, Ordering::Relaxed);
        entry.fd.store(fd, Ordering::Relaxed);
        for (slot, byte) in entry.path.iter().zip(&text.as_bytes()[..cut]) {
            slot.store(*byte, Ordering::Relaxed);
        }
        entry.path_len.store(cut, Ordering::Relaxed);
        entry.state.store(LIVE, Ordering::Release);
        return MappingGuard(Some(index));
    }
    MappingGuard(None)
}

impl Drop for MappingGuard {
    fn drop(&mut self) {
        if let Some(index) = self.0 {
            let entry = &MAPPINGS[index];
            entry.state.store(BUSY, Ordering::Release);
            entry.start.store(0, Ordering::Relaxed);
            entry.len.store(0, Ordering::Relaxed);
            entry.fd.store(-1, Ordering::Relaxed);
            entry.state.store(FREE, Ordering::Release);
        }
    }
}

/// What the handler needs to mark a status file `crashed`, allocated before it is published.
struct StatusSlot {
    dst: CString,
    tmp: CString,
    /// `"pid":N,` for this process: a document without it near its start was written by
    /// another (an earlier run) and is not this engine's last status.
    pid_field: Vec<u8>,
    /// A whole status document (state `crashed`) for when the file holds none yet.
    fallback: Vec<u8>,
    /// Where the handler reads the last document written.
    buf: *mut u8,
}

/// On SIGBUS, rewrite the status file `path` as its last document with `"state":"crashed"`
/// and a `crash` object; `fallback` (a whole document, as the status writer renders it:
/// `"format"` then `"state"` first, `"pid"` next) is used when the file holds no whole
/// document of process `pid` yet. The last call wins. What it allocates is never freed (a
/// handler on another thread may be reading it).
pub fn set_status_file(path: &Path, pid: u32, fallback: Vec<u8>) {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".crash.tmp");
    let (Ok(dst), Ok(tmp)) = (
        CString::new(path.as_os_str().as_bytes()),
        CString::new(tmp.as_bytes()),
    ) else {
        return;
    };
    let buf = Box::leak(vec![0u8; STATUS_BYTES].into_boxed_slice()).as_mut_ptr();
    let slot = Box::new(StatusSlot {
        dst,
        tmp,
        pid_field: format!("\"pid\":{pid},").into_bytes(),
        fallback,
        buf,
    });
    STATUS.store(Box::into_raw(slot), Ordering::Release);
}

/// Install the SIGBUS handler for this process; `role` names it in the message ("the
/// engine"). Call it before mapping rings.
pub fn install(role: &'static str) -> io::Result<()> {
    ROLE_LEN.store(role.len(), Ordering::Relaxed);
    ROLE.store(role.as_ptr() as *mut u8, Ordering::Release);
    // SAFETY: a zeroed sigaction is valid; the handler has the SA_SIGINFO signature.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_sigbus as *const () as usize;
        action.sa_flags = libc::SA_SIGINFO;
        libc::sigemptyset(&mut action.sa_mask);
        if libc::sigaction(libc::SIGBUS, &action, std::ptr::null_mut()) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// A fixed buffer filled without allocating; what does not fit is dropped.
struct Buf<const N: usize> {
    bytes: [u8; N],
    len: usize,
}

impl<const N: usize> Buf<N> {
    fn new() -> Self {
        Buf {
            bytes: [0; N],
            len: 0,
        }
    }
    fn put(&mut self, s: &[u8]) -> &mut Self {
        let n = s.len().min(N - self.len);
        self.bytes[self.len..self.len + n].copy_from_slice(&s[..n]);
        self.len += n;
        self
    }
    fn dec(&mut self, mut v: u64) -> &mut Self {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        self.put(&digits[i..])
    }
    fn hex(&mut self, v: u64) -> &mut Self {
        let mut digits = [0u8; 16];
        let mut i = digits.len();
        let mut v = v;
        loop {
            i -= 1;
            digits[i] = b"0123456789abcdef"[(v & 15) as usize];
            v >>= 4;
            if v == 0 {
                break;
            }
        }
        self.put(b"0x").put(&digits[i..])
    }
    /// `s` as the inside of a JSON string (`s` is UTF-8: only ASCII needs escaping).
    fn json_str(&mut self, s: &[u8]) -> &mut Self {
        for &b in s {
            match b {
                b'"' => self.put(b"\\\""),
                b'\\' => self.put(b"\\\\"),
                0..=0x1f => self
                    .put(b"\\u00")
                    .put(&[b"0123456789abcdef"[(b >> 4) as usize]])
                    .put(&[b"0123456789abcdef"[(b & 15) as usize]]),
                _ => self.put(&[b]),
            };
        }
        self
    }
    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// The ring mapping `addr` lies in: its path (copied out of the table), the offset in the
/// mapping, and the ring file's size now (fstat), if it can be had.
struct Hit {
    path: [u8; PATH_BYTES],
    path_len: usize,
    offset: usize,
    file_size: Option<u64>,
}

fn find(addr: usize) -> Option<Hit> {
    for entry in &MAPPINGS {
        if entry.state.load(Ordering::Acquire) != LIVE {
            continue;
        }
        let start = entry.start.load(Ordering::Relaxed);
        let len = entry.len.load(Ordering::Relaxed);
        if addr < start || addr - start >= len {
            continue;
        }
        let mut hit = Hit {
            path: [0; PATH_BYTES],
            path_len: entry.path_len.load(Ordering::Relaxed).min(PATH_BYTES),
            offset: addr - start,
            file_size: None,
        };
        for (out, byte) in hit.path.iter_mut().zip(&entry.path) {
            *out = byte.load(Ordering::Relaxed);
        }
        let fd = entry.fd.load(Ordering::Relaxed);
        // SAFETY: fstat into a zeroed struct on our stack (async-signal-safe).
        unsafe {
            let mut st: libc::stat = std::mem::zeroed();
            if fd >= 0 && libc::fstat(fd, &mut st) == 0 {
                hit.file_size = Some(st.st_size as u64);
            }
        }
        return Some(hit);
    }
    None
}

fn role() -> &'static [u8] {
    let ptr = ROLE.load(Ordering::Acquire);
    if ptr.is_null() {
        return b"this process";
    }
    // SAFETY: set from a &'static str by `install`.
    unsafe { std::slice::from_raw_parts(ptr, ROLE_LEN.load(Ordering::Relaxed)) }
}

extern "C" fn on_sigbus(_sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    if HANDLING.swap(1, Ordering::AcqRel) != 0 {
        // Another thread is reporting; returning re-runs our faulting access, which dies by
        // SIGBUS once that thread has restored the default action.
        return;
    }
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler.
    let (code, addr, sender) = unsafe {
        let info = &*info;
        (info.si_code, info.si_addr() as usize, info.si_pid())
    };
    let hit = if code > 0 { find(addr) } else { None };
    let now = realtime_ns();

    let mut line = Buf::<1024>::new();
    line.put(b"tickloop: fatal: SIGBUS ");
    let mut cause = Buf::<256>::new();
    match &hit {
        _ if code <= 0 => {
            line.put(b"sent by pid ")
                .dec(sender as u64)
                .put(b" (a signal, not a fault in a ring)");
            cause.put(b"signal sent by pid ").dec(sender as u64);
        }
        Some(hit) => {
            let path = &hit.path[..hit.path_len];
            line.put(b"in ring ")
                .put(path)
                .put(b" at offset ")
                .dec(hit.offset as u64)
                .put(b" (address ")
                .hex(addr as u64)
                .put(b"): the ring file ");
            cause.put(b"the ring file ");
            match hit.file_size {
                Some(size) if size <= hit.offset as u64 => {
                    line.put(b"was truncated to ").dec(size).put(b" bytes");
                    cause.put(b"was truncated to ").dec(size).put(b" bytes");
                }
                _ => {
                    line.put(b"was truncated or its memory is gone");
                    cause.put(b"was truncated or its memory is gone");
                }
            }
            line.put(b" under ")
                .put(role())
                .put(b" (only `tickloop ring rm` removes a ring safely): recreate the ring, restart its feed, then restart ")
                .put(role());
            cause.put(b" under ").put(role());
        }
        None => {
            line.put(b"at address ")
                .hex(addr as u64)
                .put(b", outside every ring this process maps (a memory-mapped file was truncated, or a memory error): see the kernel log");
            cause.put(b"fault outside every ring mapping");
        }
    }
    line.put(b"\n");
    write_all(2, line.as_bytes());

    let mut crash = Buf::<1024>::new();
    crash
        .put(b",\"crash\":{\"signal\":\"SIGBUS\",\"unix_ns\":")
        .dec(now)
        .put(b",\"address\":\"")
        .hex(addr as u64)
        .put(b"\",\"ring\":");
    match &hit {
        Some(hit) => {
            crash
                .put(b"\"")
                .json_str(&hit.path[..hit.path_len])
                .put(b"\",\"offset\":")
                .dec(hit.offset as u64);
        }
        None => {
            crash.put(b"null,\"offset\":null");
        }
    }
    crash
        .put(b",\"cause\":\"")
        .json_str(cause.as_bytes())
        .put(b"\"}");
    mark_status(crash.as_bytes());

    // SAFETY: restoring the default action and re-raising are async-signal-safe; the raised
    // signal is blocked until this handler returns, then kills the process.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = libc::SIG_DFL;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGBUS, &action, std::ptr::null_mut());
        libc::raise(libc::SIGBUS);
    }
}

fn realtime_ns() -> u64 {
    // SAFETY: clock_gettime into a zeroed timespec (async-signal-safe).
    unsafe {
        let mut ts: libc::timespec = std::mem::zeroed();
        libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts);
        ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
    }
}

fn write_all(fd: RawFd, mut bytes: &[u8]) -> bool {
    while !bytes.is_empty() {
        // SAFETY: write(2) from a live slice.
        let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        if n < 0 {
            if io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return false;
        }
        bytes = &bytes[n as usize..];
    }
    true
}

/// Where in a status document its state's value lies: (first byte, closing quote). The
/// status writer puts `"state":"..."` right after `"format"`, with no spaces.
pub fn state_value(doc: &[u8]) -> Option<(usize, usize)> {
    const KEY: &[u8] = b"\"state\":\"";
    if doc.first() != Some(&b'{') || !doc.ends_with(b"}\n") {
        return None;
    }
    let head = &doc[..doc.len().min(64)];
    let at = head.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let end = at + doc[at..].iter().position(|&b| b == b'"')?;
    Some((at, end))
}

/// The three pieces of the crashed document: `doc` up to its state's value, `crashed"` and
/// the `crash` object, then the rest of `doc`.
fn mark_status(crash: &[u8]) {
    let slot = STATUS.load(Ordering::Acquire);
    if slot.is_null() {
        return;
    }
    // SAFETY: published whole by `set_status_file` and never freed.
    let slot = unsafe { &*slot };
    // SAFETY: the slot's buffer is STATUS_BYTES long and only this handler (one thread at a
    // time: HANDLING) touches it.
    let buf = unsafe { std::slice::from_raw_parts_mut(slot.buf, STATUS_BYTES) };
    let mut len = 0;
    // SAFETY: plain system calls on NUL-terminated paths and our buffer.
    unsafe {
        let fd = libc::open(slot.dst.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
        if fd >= 0 {
            while len < buf.len() {
                let n = libc::read(fd, buf[len..].as_mut_ptr().cast(), buf.len() - len);
                if n > 0 {
                    len += n as usize;
                } else if n == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                    break;
                }
            }
            libc::close(fd);
        }
    }
    let last = &buf[..len];
    let ours = last[..len.min(256)]
        .windows(slot.pid_field.len())
        .any(|w| w == slot.pid_field.as_slice());
    let (doc, (at, end)) = match state_value(last) {
        Some(range) if len < buf.len() && ours => (last, range),
        _ => match state_value(&slot.fallback) {
            Some(range) => (&slot.fallback[..], range),
            None => return,
        },
    };
    // SAFETY: as in the status writer: tmp, write, fdatasync, rename.
    unsafe {
        let fd = libc::open(
            slot.tmp.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC | libc::O_NOFOLLOW,
            0o644,
        );
        if fd < 0 {
            return;
        }
        let whole = write_all(fd, &doc[..at])
            && write_all(fd, b"crashed\"")
            && write_all(fd, crash)
            && write_all(fd, &doc[end + 1..]);
        let synced = libc::fdatasync(fd) == 0;
        libc::close(fd);
        if whole && synced {
            libc::rename(slot.tmp.as_ptr(), slot.dst.as_ptr());
        } else {
            libc::unlink(slot.tmp.as_ptr());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_json_strings_are_formatted_by_hand() {
        let mut b = Buf::<64>::new();
        b.dec(0)
            .put(b" ")
            .dec(u64::MAX)
            .put(b" ")
            .hex(0x7f00_dead_beef);
        assert_eq!(
            std::str::from_utf8(b.as_bytes()).unwrap(),
            format!("0 {} 0x7f00deadbeef", u64::MAX)
        );
        let mut j = Buf::<64>::new();
        j.json_str("a\"b\\c\nd é".as_bytes());
        let quoted = format!("\"{}\"", std::str::from_utf8(j.as_bytes()).unwrap());
        assert_eq!(
            serde_json::from_str::<String>(&quoted).unwrap(),
            "a\"b\\c\nd é"
        );
        let mut small = Buf::<4>::new();
        small.put(b"abcdef");
        assert_eq!(small.as_bytes(), b"abcd");
    }

    #[test]
    fn the_state_is_found_only_in_a_whole_status_document() {
        let doc = b"{\"format\":1,\"state\":\"running\",\"pid\":7}\n";
        let (at, end) = state_value(doc).unwrap();
        assert_eq!(&doc[at..end], b"running");
        assert_eq!(
            state_value(b"{\"format\":1,\"state\":\"running\",\"pid\":7}"),
            None
        );
        assert_eq!(state_value(b"{\"format\":1}\n"), None);
        assert_eq!(state_value(b""), None);
    }

    #[test]
    fn a_registered_mapping_is_found_until_its_guard_drops() {
        let region = [0u8; 4096];
        let start = region.as_ptr();
        let guard = register_mapping(start, region.len(), -1, Path::new("/dev/shm/some-ring"));
        let hit = find(start as usize + 100).expect("inside the mapping");
        assert_eq!(&hit.path[..hit.path_len], b"/dev/shm/some-ring");
        assert_eq!(hit.offset, 100);
        assert!(find(start as usize + 4096).is_none_or(|h| h.offset != 4096));
        drop(guard);
        assert!(find(start as usize + 100).is_none_or(|h| h.offset != 100));
    }
}
