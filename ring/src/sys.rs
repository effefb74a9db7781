//! The handful of Linux system calls the runtime makes that no chosen crate wraps: clocks,
//! futex wait/wake on shared memory, membarrier, flock, process identity, and pinning.
//!
//! Every function here is a thin, documented wrapper; none keeps state or allocates.
//!
//! The two clocks here are the only clock readings of the runtime: the driver builds the
//! loop's clock from them (`driver::monotonic_now`, `driver::wall_now`), and in the engine
//! nothing else calls them but the ring's cross-process stamps; programs without a loop
//! (feeds, one-shot commands) call them directly (`tests/one_clock.rs` keeps that list).

use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::AtomicU32;
use std::time::Duration;

/// CLOCK_REALTIME in nanoseconds since the Unix epoch (vDSO, no system call).
#[inline]
pub fn realtime_ns() -> i64 {
    clock_ns(libc::CLOCK_REALTIME)
}

/// CLOCK_MONOTONIC in nanoseconds (vDSO, no system call). Comparable across processes.
#[inline]
pub fn monotonic_ns() -> i64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

// timespec fields are i64 here but i32 on 32-bit targets (a 32-bit Raspberry Pi OS).
#[allow(clippy::useless_conversion)]
#[inline]
fn clock_ns(clock: libc::clockid_t) -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer; these clocks always exist on Linux.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    i64::from(ts.tv_sec) * 1_000_000_000 + i64::from(ts.tv_nsec)
}

/// Sleep on a shared-memory futex word while it still holds `expected`, at most `timeout`.
/// Returns on a wake, a changed value, a signal or the timeout; the caller re-checks.
pub fn futex_wait(word: &AtomicU32, expected: u32, timeout: Duration) {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `word` is a live, aligned u32; FUTEX_WAIT (not _PRIVATE) works across processes
    // on a MAP_SHARED mapping. Errors (EAGAIN, EINTR, ETIMEDOUT) all mean "re-check".
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            &ts as *const libc::timespec,
        );
    }
}

/// Wake every waiter on a shared-memory futex word.
pub fn futex_wake_all(word: &AtomicU32) {
    // SAFETY: as in `futex_wait`; waking has no memory effects besides the wake itself.
    unsafe {
        libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, i32::MAX);
    }
}

const MEMBARRIER_CMD_GLOBAL_EXPEDITED: libc::c_int = 1 << 1;
const MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED: libc::c_int = 1 << 2;

/// Register this process as a target of global expedited membarriers (writer side).
/// False when the kernel (older than 4.16) or a seccomp filter refuses.
pub fn membarrier_register_global() -> bool {
    // SAFETY: plain system call with integer arguments.
    unsafe {
        libc::syscall(
            libc::SYS_membarrier,
            MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED,
            0,
            0,
        ) == 0
    }
}

/// Make every running thread of every registered process execute a full memory barrier
/// (reader side, only on the slow path before sleeping).
pub fn membarrier_global() -> bool {
    // SAFETY: plain system call with integer arguments.
    unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_GLOBAL_EXPEDITED, 0, 0) == 0 }
}

/// Take an exclusive `flock` without waiting. `Ok(false)` means someone else holds it.
pub fn try_lock_exclusive(file: &impl AsRawFd) -> io::Result<bool> {
    // SAFETY: valid fd owned by `file`.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(true);
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(err)
    }
}

/// Is an exclusive `flock` held on this file by someone else? Probes with a shared lock that is
/// released at once (a writer starting at that instant retries; see `Writer::open`).
pub fn lock_held(file: &impl AsRawFd) -> bool {
    // SAFETY: valid fd owned by `file`.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) };
    if rc == 0 {
        // SAFETY: as above.
        unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_UN) };
        return false;
    }
    io::Error::last_os_error().raw_os_error() == Some(libc::EWOULDBLOCK)
}

/// The start time of process `pid` in clock ticks since boot (`/proc/PID/stat` field 22).
/// With the pid it names a process uniquely even after pid reuse. `None` if it does not exist.
pub fn process_start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and ')'; fields after the last ')' are plain.
    let rest = &stat[stat.rfind(')')? + 1..];
    // `rest` starts with field 3 (state); field 22 is the 20th after it.
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Is the process `pid` that started at `start_ticks` still running (and not a zombie)?
pub fn process_alive(pid: u32, start_ticks: u64) -> bool {
    if pid == 0 {
        return false;
    }
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let Some(close) = stat.rfind(')') else {
        return false;
    };
    let mut fields = stat[close + 1..].split_whitespace();
    let state = fields.next().unwrap_or("");
    let started = fields.nth(18).and_then(|s| s.parse::<u64>().ok());
    state != "Z" && state != "X" && started == Some(start_ticks)
}

/// Pin the calling thread to `core` and check that it now runs there. Works from any current
/// affinity (a pinned parent's child can move to another allowed core).
pub fn pin_to_core(core: usize) -> Result<(), String> {
    if !core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
        // SAFETY: sysconf has no preconditions.
        let configured = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_CONF) };
        return Err(format!(
            "cannot pin to core {core}: this machine has cores 0..{} and the process's cpuset or cgroup may exclude some; pick an allowed core (see `taskset -pc $$` or `nproc`)",
            configured.max(1) - 1
        ));
    }
    // SAFETY: no arguments; returns the CPU this thread runs on.
    let now_on = unsafe { libc::sched_getcpu() };
    if now_on != core as i32 {
        return Err(format!(
            "pinned to core {core} but running on core {now_on}: the affinity did not take effect"
        ));
    }
    Ok(())
}

/// Effective user id.
pub fn euid() -> u32 {
    // SAFETY: no arguments, cannot fail.
    unsafe { libc::geteuid() }
}

/// rename(2) that never replaces an existing file (renameat2 RENAME_NOREPLACE; link, which
/// never replaces, then unlink where the filesystem lacks it). An existing target is
/// `io::ErrorKind::AlreadyExists`.
pub fn rename_noreplace(from: &std::path::Path, to: &std::path::Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &std::path::Path| {
        std::ffi::CString::new(p.as_os_str().as_bytes()).map_err(io::Error::other)
    };
    let (cf, ct) = (c(from)?, c(to)?);
    // SAFETY: valid C strings.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            cf.as_ptr(),
            libc::AT_FDCWD,
            ct.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EEXIST) => Err(io::Error::from(io::ErrorKind::AlreadyExists)),
        Some(libc::EINVAL) | Some(libc::ENOSYS) => {
            std::fs::hard_link(from, to)?;
            let _ = std::fs::remove_file(from);
            Ok(())
        }
        _ => Err(e),
    }
}
