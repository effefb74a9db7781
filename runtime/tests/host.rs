//! Host setup against the real kernel: pinning, SCHED_FIFO, mlockall, prefaulting and
//! /dev/cpu_dma_latency, with the refusals produced for real (limits lowered, capabilities
//! dropped, a cgroup without RT runtime) and their messages checked.
//!
//! Whatever changes process-wide state (mlockall, limits, capabilities, uid, cgroup) runs in a
//! forked child; what changes only the calling thread (affinity, scheduling policy) runs in a
//! spawned thread that then exits. A test that needs root, or a device this machine lacks,
//! prints why it skips. These tests also run under qemu-aarch64 in CI (see scripts/aarch64.sh).

use std::io::Read;
use std::os::fd::FromRawFd;
use std::sync::{Mutex, RwLock};
use tickloop_ring::sys;
use tickloop_runtime::host::{self, DoctorMode, HostConfig, HostError};

const CAP_IPC_LOCK: u32 = 14;
const CAP_SYS_NICE: u32 = 23;

/// Serializes the tests that hold /dev/cpu_dma_latency, so one can check the value is restored.
static DMA_LATENCY: Mutex<()> = Mutex::new(());

/// A fork write-protects every private writable page of this process (copy-on-write), so the
/// next write to it faults again: the tests that count page faults hold this exclusively, and
/// every fork holds it shared.
static FORK: RwLock<()> = RwLock::new(());

/// A check that ran (with notes on what it saw) or skipped (with the reason).
enum Outcome {
    Pass(String),
    Skip(String),
}
type Check = Result<Outcome, String>;

fn pass() -> Check {
    Ok(Outcome::Pass(String::new()))
}

fn ensure(cond: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if cond {
        Ok(())
    } else {
        Err(what())
    }
}

/// Report a check's outcome: panic on failure, print the reason of a skip or the notes of a pass.
fn finish(test: &str, result: Check) {
    match result {
        Ok(Outcome::Pass(notes)) if notes.is_empty() => {}
        Ok(Outcome::Pass(notes)) => eprintln!("{test}: {notes}"),
        Ok(Outcome::Skip(why)) => eprintln!("{test}: SKIPPED: {why}"),
        Err(failure) => panic!("{test}: {failure}"),
    }
}

/// Run `f` in a forked child; its outcome comes back through a pipe. The child never returns
/// into the test harness (it leaves with _exit).
fn in_child(f: impl FnOnce() -> Check) -> Check {
    let _no_fault_counting = FORK.read().unwrap_or_else(|e| e.into_inner());
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid out-array of two fds.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0, "pipe failed");
    // SAFETY: the child only runs `f` (memory, files, system calls) and leaves with _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        // SAFETY: the child's copy of the read end, unused there.
        unsafe { libc::close(fds[0]) };
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        let message = match result {
            Ok(Ok(Outcome::Pass(notes))) => format!("P{notes}"),
            Ok(Ok(Outcome::Skip(why))) => format!("S{why}"),
            Ok(Err(failure)) => format!("F{failure}"),
            Err(panic) => format!(
                "Fpanicked: {}",
                panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default()
            ),
        };
        let mut rest = message.as_bytes();
        while !rest.is_empty() {
            // SAFETY: writes from a live buffer to the pipe's write end.
            let n = unsafe { libc::write(fds[1], rest.as_ptr().cast(), rest.len()) };
            if n <= 0 {
                break;
            }
            rest = &rest[n as usize..];
        }
        // SAFETY: leave without running the harness's destructors.
        unsafe { libc::_exit(0) };
    }
    // SAFETY: the parent's copy of the write end, closed so that the read sees EOF.
    unsafe { libc::close(fds[1]) };
    // SAFETY: the read end is ours alone from here on.
    let mut pipe = unsafe { std::fs::File::from_raw_fd(fds[0]) };
    let mut message = String::new();
    let _ = pipe.read_to_string(&mut message);
    let mut status = 0;
    // SAFETY: waits for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        return Err(format!(
            "child died (wait status {status:#x}) after saying {message:?}"
        ));
    }
    match message.split_at_checked(1) {
        Some(("P", notes)) => Ok(Outcome::Pass(notes.to_string())),
        Some(("S", why)) => Ok(Outcome::Skip(why.to_string())),
        Some(("F", failure)) => Err(failure.to_string()),
        _ => Err(format!("child said {message:?}")),
    }
}

/// Run `f` on a fresh thread, whose affinity and scheduling policy die with it.
fn in_thread(f: impl FnOnce() -> Check + Send + 'static) -> Check {
    std::thread::spawn(f)
        .join()
        .unwrap_or_else(|_| Err("the thread panicked".into()))
}

fn is_root() -> bool {
    sys::euid() == 0
}

fn parse_cpu_list(text: &str) -> Vec<usize> {
    let mut cpus = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => cpus.extend(a.parse::<usize>().unwrap()..=b.parse().unwrap()),
            None => cpus.push(part.parse().unwrap()),
        }
    }
    cpus
}

/// The calling thread's affinity, read with libc directly (not through the module).
fn thread_affinity() -> Vec<usize> {
    // SAFETY: zeroed cpu_set_t is an empty set; valid out-pointer of the size given.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        assert_eq!(
            libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set),
            0
        );
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect()
    }
}

fn set_thread_affinity(cpus: &[usize]) {
    // SAFETY: as above.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &c in cpus {
            libc::CPU_SET(c, &mut set);
        }
        assert_eq!(
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set),
            0
        );
    }
}

fn status_field(path: &str, field: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()?
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            (name == field).then(|| value.trim().to_string())
        })
}

fn set_rlimit(resource: libc::__rlimit_resource_t, soft: u64, hard: u64) -> bool {
    let rl = libc::rlimit {
        rlim_cur: soft as libc::rlim_t,
        rlim_max: hard as libc::rlim_t,
    };
    // SAFETY: `rl` is a valid rlimit.
    unsafe { libc::setrlimit(resource, &rl) == 0 }
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Drop capabilities from the calling thread's effective, permitted and inheritable sets
/// (capset with the v3 header), and check /proc agrees.
fn drop_capabilities(caps: &[u32]) -> Result<(), String> {
    let mut header = CapHeader {
        version: 0x2008_0522,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: v3 header and two data structs, as the kernel expects.
    if unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) } != 0 {
        return Err(format!("capget: {}", std::io::Error::last_os_error()));
    }
    for &cap in caps {
        let (word, bit) = ((cap / 32) as usize, 1u32 << (cap % 32));
        data[word].effective &= !bit;
        data[word].permitted &= !bit;
        data[word].inheritable &= !bit;
    }
    // SAFETY: as above.
    if unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) } != 0 {
        return Err(format!("capset: {}", std::io::Error::last_os_error()));
    }
    let eff = status_field("/proc/thread-self/status", "CapEff")
        .and_then(|h| u64::from_str_radix(&h, 16).ok())
        .ok_or("no CapEff in /proc/thread-self/status")?;
    for &cap in caps {
        if eff >> cap & 1 == 1 {
            return Err(format!("capability {cap} is still effective after capset"));
        }
    }
    Ok(())
}

/// An anonymous private mapping, unmapped on drop.
struct Mapping {
    ptr: *mut u8,
    len: usize,
}

impl Mapping {
    fn anonymous(len: usize, prot: libc::c_int) -> Mapping {
        Mapping::new(len, prot, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1)
    }

    fn new(len: usize, prot: libc::c_int, flags: libc::c_int, fd: libc::c_int) -> Mapping {
        // SAFETY: a fresh mapping of our own.
        let ptr = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, fd, 0) };
        assert_ne!(ptr, libc::MAP_FAILED, "mmap of {len} bytes failed");
        Mapping {
            ptr: ptr.cast(),
            len,
        }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: our own mapping.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

fn page_size() -> usize {
    // SAFETY: no preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
}

/// How many pages of the range mincore reports resident.
fn resident_pages(ptr: *const u8, len: usize) -> usize {
    let pages = len.div_ceil(page_size());
    let mut vec = vec![0u8; pages];
    // SAFETY: `ptr` is page-aligned and mapped for `len`; `vec` holds one byte per page.
    let rc = unsafe { libc::mincore(ptr as *mut libc::c_void, len, vec.as_mut_ptr()) };
    assert_eq!(rc, 0, "mincore: {}", std::io::Error::last_os_error());
    vec.iter().filter(|&&v| v & 1 == 1).count()
}

/// Minor plus major page faults of the calling thread so far.
fn thread_faults() -> i64 {
    // SAFETY: zeroed rusage is a valid out-buffer.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid out-pointer.
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) };
    usage.ru_minflt + usage.ru_majflt
}

/// Page faults taken while reading (or writing back) one byte of every page of the range.
fn faults_touching(ptr: *mut u8, len: usize, write: bool) -> i64 {
    let page = page_size();
    let before = thread_faults();
    let mut offset = 0;
    while offset < len {
        // SAFETY: inside the caller's live mapping.
        unsafe {
            let p = ptr.add(offset);
            let v = std::ptr::read_volatile(p);
            if write {
                std::ptr::write_volatile(p, v);
            }
        }
        offset += page;
    }
    thread_faults() - before
}

// ---------------------------------------------------------------------------------------------
// Pinning

#[test]
fn pin_to_a_missing_core_names_the_existing_cores() {
    let online = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap();
    let online = online.trim();
    for core in [4096, usize::MAX] {
        let err = host::pin(core).unwrap_err();
        assert!(matches!(err, HostError::CoreMissing { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!("core {core} does not exist: this machine has cores {online} (set host.core to one of them)")
        );
    }
}

#[test]
fn pin_to_a_core_outside_the_affinity_says_not_allowed() {
    finish(
        "pin_to_a_core_outside_the_affinity_says_not_allowed",
        in_thread(|| {
            let allowed = host::allowed_cpus();
            if allowed.len() < 2 {
                return Ok(Outcome::Skip(format!(
                    "needs two allowed cores, this process has {allowed:?}"
                )));
            }
            let (a, b) = (allowed[0], allowed[1]);
            set_thread_affinity(&[a]);
            ensure(host::allowed_cpus() == [a], || {
                format!(
                    "allowed_cpus() is {:?} after restricting to {a}",
                    host::allowed_cpus()
                )
            })?;
            let err = host::pin(b).unwrap_err();
            ensure(matches!(err, HostError::CoreNotAllowed { .. }), || {
                format!("{err:?}")
            })?;
            let expect = format!("core {b} is not in this process's allowed CPUs {a} (cpuset/taskset/systemd CPUAffinity): allow it or pick one of {a}");
            ensure(err.to_string() == expect, || format!("message {err}"))?;
            ensure(thread_affinity() == [a], || "the mask changed".into())?;
            pass()
        }),
    );
}

#[test]
fn pin_takes_effect_and_the_mask_is_exactly_the_core() {
    finish(
        "pin_takes_effect_and_the_mask_is_exactly_the_core",
        in_thread(|| {
            let core = host::allowed_cpus()[0];
            host::pin(core).map_err(|e| e.to_string())?;
            ensure(thread_affinity() == [core], || {
                format!("mask {:?} after pinning to {core}", thread_affinity())
            })?;
            // SAFETY: no arguments.
            let running = unsafe { libc::sched_getcpu() };
            ensure(running == core as i32, || format!("running on {running}"))?;
            // Pinning again to the same core is fine.
            host::pin(core).map_err(|e| e.to_string())?;
            Ok(Outcome::Pass(format!("pinned to core {core}")))
        }),
    );
}

#[test]
fn allowed_cpus_are_the_threads_affinity() {
    finish(
        "allowed_cpus_are_the_threads_affinity",
        in_thread(|| {
            let listed = status_field("/proc/thread-self/status", "Cpus_allowed_list")
                .ok_or("no Cpus_allowed_list")?;
            ensure(host::allowed_cpus() == parse_cpu_list(&listed), || {
                format!("{:?} vs {listed}", host::allowed_cpus())
            })?;
            ensure(host::allowed_cpus() == thread_affinity(), || {
                "mismatch".into()
            })?;
            pass()
        }),
    );
}

// ---------------------------------------------------------------------------------------------
// SCHED_FIFO

fn policy_of_calling_thread() -> (i32, i32) {
    // SAFETY: plain system calls on the calling thread; valid out-pointer.
    unsafe {
        let policy = libc::syscall(libc::SYS_sched_getscheduler, 0) as i32;
        let mut param: libc::sched_param = std::mem::zeroed();
        libc::syscall(libc::SYS_sched_getparam, 0, &mut param as *mut _);
        (policy, param.sched_priority)
    }
}

#[test]
fn sched_fifo_takes_effect_as_root() {
    if !is_root() {
        eprintln!("sched_fifo_takes_effect_as_root: SKIPPED: needs root (CAP_SYS_NICE)");
        return;
    }
    finish(
        "sched_fifo_takes_effect_as_root",
        in_thread(|| {
            match host::set_sched_fifo(10) {
                Ok(()) => {}
                Err(e @ HostError::FifoRtGroup { .. }) => {
                    return Ok(Outcome::Skip(format!("this environment refuses: {e}")))
                }
                Err(e) => return Err(e.to_string()),
            }
            let (policy, priority) = policy_of_calling_thread();
            ensure(
                policy == libc::SCHED_FIFO | libc::SCHED_RESET_ON_FORK && priority == 10,
                || format!("policy {policy:#x} priority {priority}"),
            )?;
            // SCHED_RESET_ON_FORK: a process forked from the loop starts as SCHED_OTHER.
            let child = in_child(|| {
                let (policy, priority) = policy_of_calling_thread();
                ensure(policy == libc::SCHED_OTHER && priority == 0, || {
                    format!("forked child has policy {policy:#x} priority {priority}")
                })?;
                pass()
            })?;
            if let Outcome::Skip(why) = child {
                return Err(why);
            }
            pass()
        }),
    );
}

#[test]
fn sched_fifo_refusal_names_cap_sys_nice_and_rlimit_rtprio() {
    // Unprivileged, the refusal is the real one; as root, CAP_SYS_NICE is dropped first.
    finish(
        "sched_fifo_refusal_names_cap_sys_nice_and_rlimit_rtprio",
        in_child(|| {
            // Raising the hard limit needs CAP_SYS_RESOURCE; where it works, check the
            // "raise the soft limit" advice and that the limit alone then suffices.
            let hard_allows = set_rlimit(libc::RLIMIT_RTPRIO, 0, 20);
            if !hard_allows {
                ensure(set_rlimit(libc::RLIMIT_RTPRIO, 0, 0), || {
                    "setrlimit(RLIMIT_RTPRIO, 0)".into()
                })?;
            }
            if let Err(why) = drop_capabilities(&[CAP_SYS_NICE]) {
                return Ok(Outcome::Skip(format!(
                    "cannot drop CAP_SYS_NICE here: {why}"
                )));
            }
            let err = host::set_sched_fifo(10).unwrap_err();
            ensure(matches!(err, HostError::FifoNotPermitted { .. }), || {
                format!("{err:?}: {err}")
            })?;
            let msg = err.to_string();
            let hard = if hard_allows { 20 } else { 0 };
            for part in [
                "SCHED_FIFO priority 10 refused (EPERM)".to_string(),
                "lacks CAP_SYS_NICE".to_string(),
                format!("RLIMIT_RTPRIO is 0 (hard {hard}), below 10"),
                "LimitRTPRIO=10".to_string(),
                "rtprio 10".to_string(),
                "AmbientCapabilities=CAP_SYS_NICE".to_string(),
            ] {
                ensure(msg.contains(&part), || format!("{part:?} not in: {msg}"))?;
            }
            ensure(msg.contains("ulimit -r 10") == hard_allows, || {
                format!("ulimit advice with hard {hard}: {msg}")
            })?;
            let mut notes = format!("refused as expected: {msg}");
            if hard_allows {
                ensure(set_rlimit(libc::RLIMIT_RTPRIO, 10, 20), || {
                    "setrlimit".into()
                })?;
                match host::set_sched_fifo(10) {
                    Ok(()) => {
                        notes.push_str("; with RLIMIT_RTPRIO 10 and no CAP_SYS_NICE it works")
                    }
                    Err(HostError::FifoRtGroup { .. }) => {}
                    Err(e) => return Err(format!("with RLIMIT_RTPRIO 10: {e}")),
                }
            } else {
                notes.push_str(
                    "; (cannot raise RLIMIT_RTPRIO's hard limit here: no CAP_SYS_RESOURCE, so the soft-limit advice was not checked)",
                );
            }
            Ok(Outcome::Pass(notes))
        }),
    );
}

/// A cgroup v1 cpu hierarchy with RT group scheduling (cpu.rt_runtime_us present).
fn cgroup_v1_cpu_root() -> Option<String> {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mounts.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let right: Vec<&str> = right.split_whitespace().collect();
        let left: Vec<&str> = left.split_whitespace().collect();
        let is_cpu = right.first() == Some(&"cgroup")
            && right.get(2)?.split(',').any(|o| o == "cpu")
            && left.get(3) == Some(&"/");
        let dir = left.get(4)?.to_string();
        (is_cpu && std::path::Path::new(&format!("{dir}/cpu.rt_runtime_us")).exists())
            .then_some(dir)
    })
}

#[test]
fn sched_fifo_refusal_in_a_cgroup_without_rt_runtime_names_it() {
    let test = "sched_fifo_refusal_in_a_cgroup_without_rt_runtime_names_it";
    if !is_root() {
        eprintln!("{test}: SKIPPED: needs root (to create a cpu cgroup)");
        return;
    }
    let Some(root) = cgroup_v1_cpu_root() else {
        eprintln!("{test}: SKIPPED: no cgroup v1 cpu hierarchy with RT group scheduling (cpu.rt_runtime_us) is mounted");
        return;
    };
    let name = format!("tickloop-host-test-{}", std::process::id());
    let group = format!("{root}/{name}");
    if let Err(e) = std::fs::create_dir(&group) {
        eprintln!("{test}: SKIPPED: cannot create {group}: {e}");
        return;
    }
    let runtime = std::fs::read_to_string(format!("{group}/cpu.rt_runtime_us")).unwrap_or_default();
    let result = if runtime.trim() != "0" {
        Ok(Outcome::Skip(format!(
            "a new cpu cgroup gets cpu.rt_runtime_us {runtime:?}, not 0"
        )))
    } else {
        in_child(|| {
            std::fs::write(
                format!("{group}/cgroup.procs"),
                std::process::id().to_string(),
            )
            .map_err(|e| format!("joining {group}: {e}"))?;
            let err = host::set_sched_fifo(10).unwrap_err();
            ensure(matches!(err, HostError::FifoRtGroup { .. }), || {
                format!("{err:?}: {err}")
            })?;
            let msg = err.to_string();
            for part in [
                "SCHED_FIFO priority 10 refused (EPERM): RT group scheduling".to_string(),
                format!("cgroup v1 cpu group /{name}"),
                format!("cpu.rt_runtime_us ({group}/cpu.rt_runtime_us) is 0"),
                format!("echo 950000 > {group}/cpu.rt_runtime_us"),
                format!("{root}/cgroup.procs"),
            ] {
                ensure(msg.contains(&part), || format!("{part:?} not in: {msg}"))?;
            }
            Ok(Outcome::Pass(format!("refused as expected: {msg}")))
        })
    };
    // The child has been reaped; the group is empty (retry while the kernel finishes exiting).
    for _ in 0..100 {
        if std::fs::remove_dir(&group).is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    finish(test, result);
}

#[test]
fn sched_fifo_priority_out_of_range_is_a_config_error() {
    for priority in [0u8, 100, 255] {
        let err = host::set_sched_fifo(priority).unwrap_err();
        assert!(matches!(err, HostError::FifoPriority { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!("host.sched_fifo = {priority} is out of range: SCHED_FIFO priorities are 1 to 99 (set host.sched_fifo to one of them, or leave it out for SCHED_OTHER)")
        );
    }
    // apply checks the configuration before it changes anything: no pinning error, no mlock.
    finish(
        "sched_fifo_priority_out_of_range_is_a_config_error",
        in_child(|| {
            let config = HostConfig {
                core: Some(4096),
                sched_fifo: Some(0),
                mlock: true,
                cpu_dma_latency: false,
                doctor: DoctorMode::Off,
            };
            let err = host::apply(&config, false).unwrap_err();
            ensure(
                matches!(err, HostError::FifoPriority { priority: 0 }),
                || format!("{err:?}"),
            )?;
            let locked = status_field("/proc/self/status", "VmLck").unwrap_or_default();
            ensure(locked == "0 kB", || format!("VmLck {locked}"))?;
            pass()
        }),
    );
}

// ---------------------------------------------------------------------------------------------
// mlockall

#[test]
fn mlockall_as_root_locks_current_and_future_memory() {
    if !is_root() {
        eprintln!(
            "mlockall_as_root_locks_current_and_future_memory: SKIPPED: needs root (CAP_IPC_LOCK)"
        );
        return;
    }
    finish(
        "mlockall_as_root_locks_current_and_future_memory",
        in_child(|| {
            host::lock_memory().map_err(|e| e.to_string())?;
            let locked = status_field("/proc/self/status", "VmLck").unwrap_or_default();
            ensure(locked != "0 kB", || format!("VmLck {locked}"))?;
            // MCL_FUTURE: a new mapping is populated at mmap time, before any touch.
            let len = 4 << 20;
            let map = Mapping::anonymous(len, libc::PROT_READ | libc::PROT_WRITE);
            let resident = resident_pages(map.ptr, len);
            ensure(resident == len / page_size(), || {
                format!("{resident} of {} pages resident", len / page_size())
            })?;
            Ok(Outcome::Pass(format!("VmLck {locked}")))
        }),
    );
}

#[test]
fn mlockall_refusal_names_rlimit_memlock() {
    finish(
        "mlockall_refusal_names_rlimit_memlock",
        in_child(|| {
            ensure(set_rlimit(libc::RLIMIT_MEMLOCK, 64 << 10, 64 << 10), || {
                "setrlimit(RLIMIT_MEMLOCK, 64 KiB)".into()
            })?;
            if let Err(why) = drop_capabilities(&[CAP_IPC_LOCK]) {
                return Ok(Outcome::Skip(format!(
                    "cannot drop CAP_IPC_LOCK here: {why}"
                )));
            }
            let err = host::lock_memory().unwrap_err();
            ensure(matches!(err, HostError::MemlockLimit { .. }), || {
                format!("{err:?}: {err}")
            })?;
            let msg = err.to_string();
            for part in [
                "mlockall(MCL_CURRENT|MCL_FUTURE) refused",
                "RLIMIT_MEMLOCK is 0.0625 MiB (64 KiB), hard 0.0625 MiB (64 KiB), and it lacks CAP_IPC_LOCK",
                "LimitMEMLOCK=infinity",
                "ulimit -l unlimited",
                "memlock unlimited",
                "/etc/security/limits.conf",
            ] {
                ensure(msg.contains(part), || format!("{part:?} not in: {msg}"))?;
            }
            Ok(Outcome::Pass(format!("refused as expected: {msg}")))
        }),
    );
}

// ---------------------------------------------------------------------------------------------
// Prefaulting

/// After prefaulting: every page is resident and touching them all takes (almost) no fault.
fn check_prefaulted(ptr: *mut u8, len: usize, write: bool) -> Result<(), String> {
    let pages = len / page_size();
    let resident = resident_pages(ptr, len);
    ensure(resident == pages, || {
        format!("{resident} of {pages} pages resident")
    })?;
    let faults = faults_touching(ptr, len, write);
    // A few faults may come from the thread itself (its stack), none from the range.
    ensure(faults <= 4, || {
        format!("{faults} page faults touching {pages} prefaulted pages")
    })
}

#[test]
fn prefault_fills_a_64_mib_anonymous_mapping_for_writing() {
    let _no_fork = FORK.write().unwrap_or_else(|e| e.into_inner());
    let len = 64 << 20;
    let map = Mapping::anonymous(len, libc::PROT_READ | libc::PROT_WRITE);
    assert_eq!(
        resident_pages(map.ptr, len),
        0,
        "a fresh mapping is not resident"
    );
    // SAFETY: our own live, writable mapping.
    unsafe { host::prefault(map.ptr, len, true) }.unwrap();
    check_prefaulted(map.ptr, len, true).unwrap();
    // Control: an untouched mapping does fault, so the counter sees faults at all.
    let control = Mapping::anonymous(4 << 20, libc::PROT_READ | libc::PROT_WRITE);
    assert!(faults_touching(control.ptr, control.len, true) > 0);
}

#[test]
fn prefault_slices() {
    let _no_fork = FORK.write().unwrap_or_else(|e| e.into_inner());
    let mut buf = vec![0u8; 16 << 20];
    host::prefault_slice_mut(&mut buf).unwrap();
    host::prefault_slice(&buf).unwrap();
    host::prefault_slice(&[]).unwrap();
    // The Vec's start is not page-aligned: check whole pages inside it.
    let page = page_size();
    let start = (buf.as_ptr() as usize).next_multiple_of(page);
    let len = (buf.as_ptr() as usize + buf.len() - start) / page * page;
    check_prefaulted(start as *mut u8, len, true).unwrap();
    assert!(buf.iter().all(|&b| b == 0));
}

struct TempFile(std::path::PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A file of `len` patterned bytes, evicted from the page cache where the file system allows.
fn patterned_file(name: &str, len: usize) -> (TempFile, std::fs::File) {
    use std::os::fd::AsRawFd;
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("host-{name}-{}.bin", std::process::id()));
    let data: Vec<u8> = (0..len).map(|i| (i / 4096 % 251) as u8 + 1).collect();
    std::fs::write(&path, &data).unwrap();
    let file = std::fs::File::open(&path).unwrap();
    file.sync_all().unwrap();
    // SAFETY: a valid fd; advice only.
    unsafe {
        libc::posix_fadvise(
            file.as_raw_fd(),
            0,
            len as libc::off_t,
            libc::POSIX_FADV_DONTNEED,
        )
    };
    (TempFile(path), file)
}

fn check_pattern(ptr: *const u8, len: usize) -> Result<(), String> {
    // SAFETY: inside a live mapping of `len` bytes.
    let data = unsafe { std::slice::from_raw_parts(ptr, len) };
    let bad = (0..len)
        .step_by(4093)
        .find(|&i| data[i] != (i / 4096 % 251) as u8 + 1);
    ensure(bad.is_none(), || {
        format!("content changed at offset {bad:?}")
    })
}

#[test]
fn prefault_fills_a_read_only_file_mapping() {
    let _no_fork = FORK.write().unwrap_or_else(|e| e.into_inner());
    use std::os::fd::AsRawFd;
    let len = 16 << 20;
    let (_path, file) = patterned_file("prefault", len);
    let map = Mapping::new(len, libc::PROT_READ, libc::MAP_SHARED, file.as_raw_fd());
    let before = resident_pages(map.ptr, len);
    // SAFETY: our own live, readable mapping.
    unsafe { host::prefault(map.ptr, len, false) }.unwrap();
    check_prefaulted(map.ptr, len, false).unwrap();
    check_pattern(map.ptr, len).unwrap();
    eprintln!(
        "prefault_fills_a_read_only_file_mapping: {before} of {} pages cached before",
        len / page_size()
    );
}

#[test]
fn touching_pages_prefaults_too() {
    let _no_fork = FORK.write().unwrap_or_else(|e| e.into_inner());
    use std::os::fd::AsRawFd;
    // Anonymous, writable, with data already in some pages that must survive.
    let len = 16 << 20;
    let map = Mapping::anonymous(len, libc::PROT_READ | libc::PROT_WRITE);
    for i in (0..len).step_by(3 * page_size()) {
        // SAFETY: inside our own writable mapping.
        unsafe { *map.ptr.add(i) = 0xA5 };
    }
    // SAFETY: our own live, writable mapping; an unaligned start and a ragged end.
    unsafe { host::touch_pages(map.ptr.add(100), len - 200, true) };
    check_prefaulted(map.ptr, len, true).unwrap();
    for i in (0..len).step_by(page_size()) {
        // SAFETY: as above.
        let v = unsafe { *map.ptr.add(i) };
        let expect = if i % (3 * page_size()) == 0 { 0xA5 } else { 0 };
        assert_eq!(v, expect, "byte {i} changed");
    }
    // A read-only file mapping.
    let (_path, file) = patterned_file("touch", len);
    let map = Mapping::new(len, libc::PROT_READ, libc::MAP_SHARED, file.as_raw_fd());
    // SAFETY: our own live, readable mapping.
    unsafe { host::touch_pages(map.ptr, len, false) };
    check_prefaulted(map.ptr, len, false).unwrap();
    check_pattern(map.ptr, len).unwrap();
    // Nothing to touch.
    // SAFETY: an empty range.
    unsafe { host::touch_pages(map.ptr, 0, true) };
}

#[test]
fn prefault_of_an_inaccessible_range_is_an_error() {
    let test = "prefault_of_an_inaccessible_range_is_an_error";
    if !host::madvise_populate_supported() {
        // The fallback would touch the pages: a SIGSEGV, not an error.
        eprintln!("{test}: SKIPPED: MADV_POPULATE_* does nothing here (kernel < 5.14 or an emulator such as qemu-user), so prefault touches pages instead");
        return;
    }
    let len = 2 * page_size();
    let none = Mapping::anonymous(len, libc::PROT_NONE);
    // SAFETY: the range is mapped (PROT_NONE): madvise reports it, nothing touches it.
    let err = unsafe { host::prefault(none.ptr, len, false) }.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, HostError::Prefault { .. }), "{err:?}");
    assert!(
        msg.starts_with(&format!(
            "prefaulting {len} bytes at {:#x} (for reading) failed: ",
            none.ptr as usize
        )),
        "{msg}"
    );
    let read_only = Mapping::anonymous(len, libc::PROT_READ);
    // SAFETY: as above; the kernel refuses to populate a read-only mapping for writing.
    let err = unsafe { host::prefault(read_only.ptr, len, true) }.unwrap_err();
    eprintln!("{test}: PROT_NONE: {msg}; PROT_READ for writing: {err}");
}

// ---------------------------------------------------------------------------------------------
// /dev/cpu_dma_latency

const CPU_DMA_LATENCY: &str = "/dev/cpu_dma_latency";

/// The effective limit as another reader sees it: the device reads back a native 4-byte i32.
fn read_dma_latency() -> i32 {
    let mut value = [0u8; 4];
    std::fs::File::open(CPU_DMA_LATENCY)
        .unwrap()
        .read_exact(&mut value)
        .unwrap();
    i32::from_ne_bytes(value)
}

#[test]
fn cpu_dma_latency_is_held_at_0_while_the_guard_lives() {
    let test = "cpu_dma_latency_is_held_at_0_while_the_guard_lives";
    if !std::path::Path::new(CPU_DMA_LATENCY).exists() {
        eprintln!("{test}: SKIPPED: {CPU_DMA_LATENCY} does not exist on this machine");
        return;
    }
    if !is_root() {
        eprintln!("{test}: SKIPPED: needs root ({CPU_DMA_LATENCY} is mode 0600)");
        return;
    }
    let _serial = DMA_LATENCY.lock().unwrap_or_else(|e| e.into_inner());
    let before = read_dma_latency();
    let guard = host::hold_cpu_dma_latency().unwrap();
    assert_eq!(guard.effective_us().unwrap(), 0);
    assert_eq!(read_dma_latency(), 0);
    drop(guard);
    assert_eq!(
        read_dma_latency(),
        before,
        "closing restores the previous limit"
    );
    eprintln!("{test}: reads back a 4-byte i32: {before} µs before, 0 while held, {before} after");
}

#[test]
fn cpu_dma_latency_refusal_names_the_path_and_the_cause() {
    let test = "cpu_dma_latency_refusal_names_the_path_and_the_cause";
    if !std::path::Path::new(CPU_DMA_LATENCY).exists() {
        eprintln!("{test}: SKIPPED: {CPU_DMA_LATENCY} does not exist on this machine");
        return;
    }
    if !is_root() {
        // Unprivileged, the refusal is the real one.
        let err = host::hold_cpu_dma_latency().unwrap_err();
        assert!(err.to_string().contains("root-only"), "{err}");
        return;
    }
    finish(
        test,
        in_child(|| {
            // SAFETY: plain system calls; the child becomes nobody for good.
            let dropped = unsafe { libc::setgid(65534) == 0 && libc::setuid(65534) == 0 };
            if !dropped {
                return Ok(Outcome::Skip("cannot setuid to 65534 here".into()));
            }
            let err = host::hold_cpu_dma_latency().unwrap_err();
            ensure(
                matches!(err, HostError::DmaLatency { op: "open", .. }),
                || format!("{err:?}"),
            )?;
            let msg = err.to_string();
            for part in [
                "/dev/cpu_dma_latency: open failed: Permission denied",
                "root-only (mode 0600)",
                "KERNEL==\"cpu_dma_latency\"",
            ] {
                ensure(msg.contains(part), || format!("{part:?} not in: {msg}"))?;
            }
            Ok(Outcome::Pass(format!("refused as expected: {msg}")))
        }),
    );
}

// ---------------------------------------------------------------------------------------------
// apply

#[test]
fn apply_reports_what_took_effect() {
    let root = is_root();
    let dma = root && std::path::Path::new(CPU_DMA_LATENCY).exists();
    let _serial = DMA_LATENCY.lock().unwrap_or_else(|e| e.into_inner());
    finish(
        "apply_reports_what_took_effect",
        in_child(move || {
            let core = host::allowed_cpus()[0];
            let config = HostConfig {
                core: Some(core),
                sched_fifo: root.then_some(10),
                mlock: root,
                cpu_dma_latency: dma,
                doctor: DoctorMode::Off,
            };
            let setup = match host::apply(&config, true) {
                Ok(setup) => setup,
                Err(e @ HostError::FifoRtGroup { .. }) => {
                    return Ok(Outcome::Skip(format!("this environment refuses: {e}")))
                }
                Err(e) => return Err(e.to_string()),
            };
            let report = &setup.report;
            ensure(
                report.core == Some(core)
                    && report.sched_fifo == config.sched_fifo
                    && report.mlocked == root
                    && report.cpu_dma_latency_held == dma,
                || format!("{report:?} for {config:?}"),
            )?;
            ensure(thread_affinity() == [core], || "not pinned".into())?;
            if dma {
                let held = setup.dma_latency().map(|g| g.effective_us().ok());
                ensure(held == Some(Some(0)), || format!("dma latency {held:?}"))?;
            }
            let json = serde_json::to_string(report).map_err(|e| e.to_string())?;
            ensure(json.contains(&format!("\"mlocked\":{root}")), || {
                json.clone()
            })?;
            if !root {
                ensure(report.warnings.is_empty(), || {
                    format!("{:?}", report.warnings)
                })?;
                return Ok(Outcome::Pass("not root: checked pinning only".to_string()));
            }
            // SCHED_FIFO with busy-spin warns, naming RT throttling and the fixes.
            ensure(report.warnings.len() == 1, || {
                format!("{:?}", report.warnings)
            })?;
            let warning = &report.warnings[0];
            for part in [
                format!("SCHED_FIFO 10 with busy-spin on core {core}"),
                "kernel.sched_rt_runtime_us".to_string(),
                format!("isolcpus={core} nohz_full={core}"),
                "park mode".to_string(),
            ] {
                ensure(warning.contains(&part), || {
                    format!("{part:?} not in: {warning}")
                })?;
            }
            // Without busy-spin, no warning.
            let quiet = host::apply(&config, false).map_err(|e| e.to_string())?;
            ensure(quiet.report.warnings.is_empty(), || {
                format!("{:?}", quiet.report.warnings)
            })?;
            Ok(Outcome::Pass(format!("report {json}")))
        }),
    );
}

#[test]
fn host_config_reads_from_json() {
    let config: HostConfig =
        serde_json::from_str(r#"{"core": 1, "sched_fifo": 50, "mlock": true}"#).unwrap();
    assert_eq!(
        config,
        HostConfig {
            core: Some(1),
            sched_fifo: Some(50),
            mlock: true,
            cpu_dma_latency: false,
            doctor: DoctorMode::Report,
        }
    );
    let strict: HostConfig = serde_json::from_str(r#"{"doctor": "strict"}"#).unwrap();
    assert_eq!(strict.doctor, DoctorMode::Strict);
    assert_eq!(
        serde_json::from_str::<HostConfig>("{}").unwrap(),
        HostConfig::default()
    );
    let typo = serde_json::from_str::<HostConfig>(r#"{"cores": 1}"#).unwrap_err();
    assert!(typo.to_string().contains("unknown field `cores`"), "{typo}");
}
