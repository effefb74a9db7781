//! Adapter processes and their pipes, the only place the adapter host makes system calls on
//! them: finding the program, spawning it with three pipes, non-blocking reads and writes,
//! pidfds, signals, reaping.
//!
//! It owns the parent's ends of the pipes and the pidfd of each child ([`Process`]), closed
//! when it is dropped. Every pipe end is close-on-exec, and so is every descriptor the engine
//! inherited (marked before each spawn), so an adapter gets its three pipes and nothing else;
//! the parent's ends are non-blocking: no call here ever waits, except [`reap_blocking`],
//! which only runs after SIGKILL at shutdown. Children are spawned with `posix_spawn` (no copy
//! of the engine's page tables, so a restart costs the loop little), in a process group of
//! their own (a Ctrl-C in the engine's terminal reaches the engine, which then stops its
//! adapters in order), with an empty signal mask and default signal dispositions. It keeps no
//! state between calls and never decides anything: the session decides, this performs.

use super::config::AdapterConfig;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use tickloop_app::venue::ExitStatus;

/// One running adapter process.
pub(crate) struct Process {
    pub pid: i32,
    /// Closed to tell the adapter to stop (end-of-file on its stdin).
    pub stdin: Option<OwnedFd>,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
    /// Readable once the process ended (absent on kernels before 5.3).
    pub pidfd: Option<OwnedFd>,
}

/// The outcome of one read or write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Io {
    Done(usize),
    WouldBlock,
    /// Read: end-of-file.
    Eof,
    /// Write: the reader is gone (EPIPE).
    Broken,
    Failed(i32),
}

/// Find `command[0]` as `posix_spawn` would run it, before anything starts; the error says
/// what is wrong and what to do.
pub(crate) fn resolve_program(config: &AdapterConfig) -> Result<PathBuf, String> {
    let program = &config.command[0];
    let field = format!("the first element of adapter {}'s command", config.name);
    if program.contains('/') {
        let mut path = PathBuf::from(program);
        if path.is_relative() {
            let base = match &config.cwd {
                Some(cwd) if cwd.is_absolute() => cwd.clone(),
                Some(cwd) => std::env::current_dir().unwrap_or_default().join(cwd),
                None => std::env::current_dir().unwrap_or_default(),
            };
            path = base.join(path);
        }
        return check_executable(&path, &field).map(|()| path);
    }
    let search = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    let mut not_executable = None;
    for dir in std::env::split_paths(&search) {
        let dir = if dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            dir
        };
        let candidate = dir.join(program);
        if candidate.is_file() {
            if is_executable(&candidate) {
                return Ok(candidate);
            }
            not_executable.get_or_insert(candidate);
        }
    }
    match not_executable {
        Some(found) => Err(format!(
            "program {program:?} was found at {} but is not executable: chmod +x it, or name an interpreter first in {field} (e.g. [\"python3\", \"{}\"])",
            found.display(),
            found.display()
        )),
        None => Err(format!(
            "program {program:?} was not found on PATH ({}): install it, or give its full path in {field}",
            search.to_string_lossy()
        )),
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: a NUL-terminated path.
    unsafe { libc::access(c.as_ptr(), libc::X_OK) == 0 }
}

fn check_executable(path: &Path, field: &str) -> Result<(), String> {
    let p = path.display();
    match std::fs::metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(format!(
            "program {p} does not exist: install the adapter there, or fix the path in {field}"
        )),
        Err(e) => Err(format!(
            "program {p} cannot be examined ({e}): fix its permissions or the path in {field}"
        )),
        Ok(m) if m.is_dir() => Err(format!(
            "program {p} is a directory: name the adapter's program file in {field}"
        )),
        Ok(m) if !is_executable(path) => Err(format!(
            "program {p} is not executable (mode {:o}): chmod +x it, or name an interpreter first in {field} (e.g. [\"python3\", \"{p}\"])",
            m.permissions().mode() & 0o7777
        )),
        Ok(_) => Ok(()),
    }
}

/// The cores an adapter runs on: `cpus` if given; else, when the calling thread (the loop)
/// is pinned to one core, every other core; else `None` (inherit).
pub(crate) fn adapter_cpus(cpus: &[usize]) -> Option<libc::cpu_set_t> {
    let size = std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY (the whole body): cpu_set_t is plain data (all-zero is the empty set) and the
    // CPU_* macros only touch the set given, at indices below CPU_SETSIZE.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if !cpus.is_empty() {
            for &c in cpus {
                if c < libc::CPU_SETSIZE as usize {
                    libc::CPU_SET(c, &mut set);
                }
            }
            return Some(set);
        }
        let mut mine: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, size, &mut mine) != 0 || libc::CPU_COUNT(&mine) != 1 {
            return None;
        }
        let cores = super::config::configured_cores().min(libc::CPU_SETSIZE as usize);
        for c in 0..cores {
            if !libc::CPU_ISSET(c, &mine) {
                libc::CPU_SET(c, &mut set);
            }
        }
        (libc::CPU_COUNT(&set) > 0).then_some(set)
    }
}

/// Start `program` (resolved) with the adapter's arguments, environment and working
/// directory, and three pipes.
///
/// Through `posix_spawn` itself rather than `std::process::Command`: the loop's thread blocks
/// SIGTERM, SIGINT and SIGHUP (it reads them from a signalfd), a child inherits the mask of
/// the thread that spawns it, and std's `posix_spawn` path does not clear it, so an adapter
/// would never see the SIGTERM of a graceful stop. Here the child gets an empty mask and
/// default dispositions, in a process group of its own, without std's fallback to `fork`
/// (which would copy the engine's page tables on the loop's thread).
pub(crate) fn spawn(
    program: &Path,
    config: &AdapterConfig,
    cpus: Option<&libc::cpu_set_t>,
    want_pidfd: bool,
) -> io::Result<Process> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let cstr = |b: &[u8]| {
        CString::new(b).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte"))
    };
    let path = cstr(program.as_os_str().as_bytes())?;
    let argv: Vec<CString> = config
        .command
        .iter()
        .map(|a| cstr(a.as_bytes()))
        .collect::<io::Result<_>>()?;
    let mut env: std::collections::BTreeMap<std::ffi::OsString, std::ffi::OsString> =
        std::env::vars_os().collect();
    for (k, v) in &config.env {
        env.insert(k.into(), v.into());
    }
    env.insert("TICKLOOP_ADAPTER".into(), config.name.clone().into());
    let envp: Vec<CString> = env
        .iter()
        .map(|(k, v)| {
            let mut kv = k.as_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            cstr(&kv)
        })
        .collect::<io::Result<_>>()?;
    let cwd = match &config.cwd {
        Some(d) => Some(cstr(d.as_os_str().as_bytes())?),
        None => None,
    };
    let mut argv_ptrs: Vec<*mut libc::c_char> = argv.iter().map(|a| a.as_ptr() as *mut _).collect();
    argv_ptrs.push(std::ptr::null_mut());
    let mut envp_ptrs: Vec<*mut libc::c_char> = envp.iter().map(|a| a.as_ptr() as *mut _).collect();
    envp_ptrs.push(std::ptr::null_mut());

    // Descriptors the engine inherited without close-on-exec (from a shell, a supervisor, a
    // build tool) would leak into every adapter: mark them all first. The engine's own are
    // close-on-exec already.
    cloexec_from(3);
    let (in_r, in_w) = pipe()?;
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let mut pid: libc::pid_t = 0;
    // SAFETY: the attribute and file-action objects are initialised before use and destroyed
    // after; every pointer handed to posix_spawn (path, argv, envp, cwd) is NUL-terminated and
    // outlives the call; the fds are ours and open.
    let rc = unsafe {
        let mut actions: libc::posix_spawn_file_actions_t = std::mem::zeroed();
        let mut attr: libc::posix_spawnattr_t = std::mem::zeroed();
        libc::posix_spawn_file_actions_init(&mut actions);
        libc::posix_spawnattr_init(&mut attr);
        // dup2 onto 0, 1, 2 clears close-on-exec there; every other fd of ours stays shut.
        libc::posix_spawn_file_actions_adddup2(&mut actions, in_r.as_raw_fd(), 0);
        libc::posix_spawn_file_actions_adddup2(&mut actions, out_w.as_raw_fd(), 1);
        libc::posix_spawn_file_actions_adddup2(&mut actions, err_w.as_raw_fd(), 2);
        if let Some(cwd) = &cwd {
            libc::posix_spawn_file_actions_addchdir_np(&mut actions, cwd.as_ptr());
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::posix_spawnattr_setsigmask(&mut attr, &empty);
        let mut defaults: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut defaults);
        for sig in [
            libc::SIGPIPE,
            libc::SIGTERM,
            libc::SIGINT,
            libc::SIGHUP,
            libc::SIGQUIT,
            libc::SIGCHLD,
            libc::SIGUSR1,
            libc::SIGUSR2,
            libc::SIGALRM,
        ] {
            libc::sigaddset(&mut defaults, sig);
        }
        libc::posix_spawnattr_setsigdefault(&mut attr, &defaults);
        libc::posix_spawnattr_setpgroup(&mut attr, 0);
        let mut flags = libc::POSIX_SPAWN_SETPGROUP
            | libc::POSIX_SPAWN_SETSIGMASK
            | libc::POSIX_SPAWN_SETSIGDEF;
        // An adapter never runs real-time, even if the loop's thread does without
        // SCHED_RESET_ON_FORK (a flooding adapter at the loop's priority would starve its core).
        let policy = libc::sched_getscheduler(0) & !libc::SCHED_RESET_ON_FORK;
        if policy == libc::SCHED_FIFO || policy == libc::SCHED_RR {
            let param: libc::sched_param = std::mem::zeroed();
            libc::posix_spawnattr_setschedpolicy(&mut attr, libc::SCHED_OTHER);
            libc::posix_spawnattr_setschedparam(&mut attr, &param);
            flags |= libc::POSIX_SPAWN_SETSCHEDULER;
        }
        libc::posix_spawnattr_setflags(&mut attr, flags as libc::c_short);
        let rc = libc::posix_spawn(
            &mut pid,
            path.as_ptr(),
            &actions,
            &attr,
            argv_ptrs.as_ptr(),
            envp_ptrs.as_ptr(),
        );
        libc::posix_spawn_file_actions_destroy(&mut actions);
        libc::posix_spawnattr_destroy(&mut attr);
        rc
    };
    // The child's ends are the child's now; ours close here.
    drop((in_r, out_w, err_w));
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    for fd in [&in_w, &out_r, &err_r] {
        set_nonblocking(fd.as_raw_fd())?;
    }
    if let Some(set) = cpus {
        // SAFETY: sched_setaffinity on our own child with a set of the size given. A refusal
        // (a cpuset without those cores) leaves it where it is.
        let rc =
            unsafe { libc::sched_setaffinity(pid, std::mem::size_of::<libc::cpu_set_t>(), set) };
        if rc != 0 {
            tracing::warn!(
                adapter = %config.name,
                pid,
                "cannot move the adapter to its cores: {}",
                io::Error::last_os_error()
            );
        }
    }
    let pidfd = if want_pidfd {
        pidfd_open(pid).ok()
    } else {
        None
    };
    Ok(Process {
        pid,
        stdin: Some(in_w),
        stdout: Some(out_r),
        stderr: Some(err_r),
        pidfd,
    })
}

/// Mark every descriptor from `first` up close-on-exec: one `close_range` (Linux 5.11+), else
/// a walk of /proc/self/fd.
fn cloexec_from(first: u32) {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets a flag on our own descriptors.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if rc == 0 {
        return;
    }
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    for entry in dir.flatten() {
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if fd >= first as i32 {
            // SAFETY: fcntl on a descriptor number; one that closed meanwhile fails harmlessly.
            unsafe {
                let flags = libc::fcntl(fd, libc::F_GETFD);
                if flags >= 0 && flags & libc::FD_CLOEXEC == 0 {
                    libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
                }
            }
        }
    }
}

/// A close-on-exec pipe (read end, write end), both above fd 2 (so the child's dup2 onto
/// 0, 1, 2 never meets one of them already there).
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both were just created and are owned by nothing else.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    Ok((above_stdio(r)?, above_stdio(w)?))
}

fn above_stdio(fd: OwnedFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    // SAFETY: duplicating a descriptor we own to one at or above 3, close-on-exec.
    let dup = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
    if dup < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(dup) })
}

/// A pidfd for `pid` (our unreaped child, so the pid cannot have been reused).
pub(crate) fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: plain system call with integer arguments; the fd is owned below.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor (pidfds are close-on-exec).
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Whether this kernel gives pidfds (probed on our own process).
pub(crate) fn pidfd_supported() -> bool {
    pidfd_open(std::process::id() as i32).is_ok()
}

fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

pub(crate) fn read(fd: RawFd, buf: &mut [u8]) -> Io {
    if buf.is_empty() {
        return Io::Done(0);
    }
    loop {
        // SAFETY: reading into a buffer of the length given.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n > 0 {
            return Io::Done(n as usize);
        }
        if n == 0 {
            return Io::Eof;
        }
        match io::Error::last_os_error().raw_os_error().unwrap_or(0) {
            libc::EINTR => continue,
            libc::EAGAIN => return Io::WouldBlock,
            errno => return Io::Failed(errno),
        }
    }
}

pub(crate) fn write(fd: RawFd, buf: &[u8]) -> Io {
    loop {
        // SAFETY: writing from a buffer of the length given. SIGPIPE is ignored (see the
        // host), so a gone reader is EPIPE, not a signal.
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if n >= 0 {
            return Io::Done(n as usize);
        }
        match io::Error::last_os_error().raw_os_error().unwrap_or(0) {
            libc::EINTR => continue,
            libc::EAGAIN => return Io::WouldBlock,
            libc::EPIPE => return Io::Broken,
            errno => return Io::Failed(errno),
        }
    }
}

/// Reap `pid` if it ended; `None` while it runs.
pub(crate) fn try_reap(pid: i32) -> Option<ExitStatus> {
    let mut status = 0;
    loop {
        // SAFETY: our own child; WNOHANG never blocks.
        let rc = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if rc == pid {
            return Some(decode_status(status));
        }
        if rc == 0 {
            return None;
        }
        match io::Error::last_os_error().raw_os_error() {
            Some(libc::EINTR) => continue,
            // Reaped by someone else (SIGCHLD set to SIG_IGN): gone, status unknown.
            _ => return Some(ExitStatus::Unknown),
        }
    }
}

/// Reap `pid`, trying every millisecond for about `limit` (after a SIGKILL this is immediate
/// unless the process is stuck in the kernel). It counts its sleeps rather than reading a
/// clock: a bound of real time, never a deadline of the loop's.
pub(crate) fn reap_blocking(pid: i32, limit: std::time::Duration) -> Option<ExitStatus> {
    let tries = limit.as_millis().max(1);
    for _ in 0..tries {
        if let Some(status) = try_reap(pid) {
            return Some(status);
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    try_reap(pid)
}

fn decode_status(status: i32) -> ExitStatus {
    if libc::WIFEXITED(status) {
        ExitStatus::Code(libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        ExitStatus::Signal(libc::WTERMSIG(status))
    } else {
        ExitStatus::Unknown
    }
}

pub(crate) fn signal(pid: i32, signal: i32) {
    // SAFETY: our own unreaped child (the pid cannot have been reused).
    unsafe { libc::kill(pid, signal) };
}

/// An eventfd: the host's own doorbell, rung when it has events for the app that no fd
/// readiness would announce (refusals, timeouts found on the housekeeping tick).
pub(crate) fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: plain system call; the fd is owned below.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub(crate) fn ring(eventfd: &OwnedFd) {
    let one: u64 = 1;
    // SAFETY: an 8-byte write to an eventfd; EAGAIN (counter full) still leaves it readable.
    unsafe { libc::write(eventfd.as_raw_fd(), (&one as *const u64).cast(), 8) };
}

pub(crate) fn drain(eventfd: &OwnedFd) {
    let mut value: u64 = 0;
    // SAFETY: an 8-byte read from an eventfd.
    unsafe { libc::read(eventfd.as_raw_fd(), (&mut value as *mut u64).cast(), 8) };
}

/// A signalfd for SIGCHLD, with SIGCHLD blocked on the calling thread (the loop's).
pub(crate) fn sigchld_fd() -> io::Result<OwnedFd> {
    // SAFETY: sigset manipulation on a local set; the fd is owned below.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        let fd = libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

/// Read every pending SIGCHLD from the signalfd (the host then sweeps with `try_reap`).
pub(crate) fn drain_sigchld(fd: &OwnedFd) {
    let mut info = [0u8; 128];
    // Bounded: each read removes one pending signal, and there is at most one SIGCHLD
    // pending at a time (standard signals do not queue).
    for _ in 0..64 {
        // SAFETY: reading one signalfd_siginfo (128 bytes) into a buffer of that size.
        let n = unsafe { libc::read(fd.as_raw_fd(), info.as_mut_ptr().cast(), info.len()) };
        if n <= 0 {
            break;
        }
    }
}

/// Make a write to a pipe whose reader is gone fail with EPIPE instead of killing the
/// engine. Rust programs ignore SIGPIPE already; this covers an embedding that does not.
pub(crate) fn ignore_sigpipe() {
    // SAFETY: querying and setting a signal disposition; no handler code runs.
    unsafe {
        let old = libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        if old != libc::SIG_DFL && old != libc::SIG_IGN && old != libc::SIG_ERR {
            // Someone installed a handler: leave theirs.
            libc::signal(libc::SIGPIPE, old);
        }
    }
}
