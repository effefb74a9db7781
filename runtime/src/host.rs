//! Host setup: pins the loop's thread to its core, raises it to SCHED_FIFO, locks the process's
//! memory, prefaults mappings and buffers, and holds `/dev/cpu_dma_latency` at 0.
//!
//! It owns the calling thread's CPU affinity and scheduling policy, the process's memory lock and
//! the one `/dev/cpu_dma_latency` file descriptor ([`HostSetup`] keeps it open while the loop
//! runs). It runs once, at startup, on the loop's thread, before the first event: it is never
//! called from inside the loop afterwards (every call here is a slow system call or a walk over
//! memory). It never silently ignores a refusal: each one becomes a [`HostError`] that names what
//! was refused, where, the real cause and the fix; the only soft outcomes are the warnings in
//! [`HostReport`], for settings that took effect but hurt together (SCHED_FIFO with busy-spin).
//! It never widens what the operator set: [`pin`] only narrows the affinity the process started
//! with, and nothing here raises a resource limit.

use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::OnceLock;
use tickloop_linux_tuning::cpulist;

/// The `[host]` section of the configuration. Every field is off by default (the doctor's
/// report, which runs only with a `core`, aside).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HostConfig {
    /// Pin the loop's thread to this core (a number as in `/sys/devices/system/cpu/online`).
    pub core: Option<usize>,
    /// Run the loop's thread under SCHED_FIFO at this priority, 1..=99.
    pub sched_fifo: Option<u8>,
    /// Lock all current and future memory of the process: `mlockall(MCL_CURRENT|MCL_FUTURE)`.
    pub mlock: bool,
    /// Hold `/dev/cpu_dma_latency` at 0 µs (no deep C-states on any core) while the loop runs.
    pub cpu_dma_latency: bool,
    /// With a `core`: the host doctor's verdict for it at start (`tickloop doctor`): `report`
    /// logs its one line, `strict` also refuses to start on a failure, `off` skips it.
    pub doctor: DoctorMode,
}

/// What the engine does with the host doctor's verdict at start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DoctorMode {
    #[default]
    Report,
    Strict,
    Off,
}

/// Why host setup failed. Each message is one line: what, where, the cause, and what to do.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The core is not one of this machine's online cores and is not an offline one either.
    #[error("core {core} does not exist: this machine has cores {} (set host.core to one of them)", cpus(.online))]
    CoreMissing { core: usize, online: Vec<usize> },
    /// The core exists but is offline.
    #[error("core {core} is offline: the online cores are {} (bring it online with `echo 1 > /sys/devices/system/cpu/cpu{core}/online` or set host.core to an online core)", cpus(.online))]
    CoreOffline { core: usize, online: Vec<usize> },
    /// The core exists but the process may not run there.
    #[error("core {core} is not in this process's allowed CPUs {} (cpuset/taskset/systemd CPUAffinity): allow it or pick one of {}", cpus(.allowed), cpus(.allowed))]
    CoreNotAllowed { core: usize, allowed: Vec<usize> },
    /// sched_setaffinity or sched_getaffinity failed for another reason.
    #[error("pinning the loop's thread to core {core} failed: {call}: {source}")]
    Pin {
        core: usize,
        call: &'static str,
        source: io::Error,
    },
    /// sched_setaffinity succeeded but the thread's mask or CPU is not what was asked.
    #[error("pinning to core {core} did not take effect: afterwards the thread's CPU mask is {} and it runs on core {running}, not exactly core {core}: something else (a cpuset change, an affinity-managing daemon such as irqbalance or tuned) is moving it", cpus(.mask))]
    PinNotApplied {
        core: usize,
        mask: Vec<usize>,
        running: i64,
    },
    /// A configured SCHED_FIFO priority outside 1..=99.
    #[error("host.sched_fifo = {priority} is out of range: SCHED_FIFO priorities are 1 to 99 (set host.sched_fifo to one of them, or leave it out for SCHED_OTHER)")]
    FifoPriority { priority: u8 },
    /// EPERM because the thread lacks CAP_SYS_NICE and RLIMIT_RTPRIO is below the priority.
    #[error("SCHED_FIFO priority {priority} refused (EPERM): this thread {} and its RLIMIT_RTPRIO is {rtprio_soft} (hard {rtprio_hard}), below {priority}: {}", cap_phrase(.cap_in_user_namespace, "CAP_SYS_NICE"), rtprio_fix(.priority, .rtprio_hard))]
    FifoNotPermitted {
        priority: u8,
        rtprio_soft: u64,
        rtprio_hard: u64,
        /// The thread holds CAP_SYS_NICE, but only in a user namespace (a container).
        cap_in_user_namespace: bool,
    },
    /// EPERM because real-time group scheduling gives this thread's cgroup no RT runtime.
    #[error("SCHED_FIFO priority {priority} refused (EPERM): {cause}")]
    FifoRtGroup { priority: u8, cause: String },
    /// sched_setscheduler failed and none of the known causes applies.
    #[error("SCHED_FIFO priority {priority} refused: sched_setscheduler: {source}{hint}")]
    Fifo {
        priority: u8,
        source: io::Error,
        hint: String,
    },
    /// sched_setscheduler succeeded but the thread's policy or priority is not what was asked.
    #[error("SCHED_FIFO priority {priority} did not take effect: afterwards the thread's policy is {} at priority {got}: something else (a tuning daemon, a cgroup policy) changed it back", policy_name(.policy))]
    FifoNotApplied { priority: u8, policy: i32, got: i32 },
    /// mlockall refused because of RLIMIT_MEMLOCK (and no CAP_IPC_LOCK).
    #[error("mlockall(MCL_CURRENT|MCL_FUTURE) refused ({source}): this process maps {} (VmSize) but RLIMIT_MEMLOCK is {}, hard {}, and it {}: set LimitMEMLOCK=infinity in the systemd unit, or run `ulimit -l unlimited` before starting, or add `<user> - memlock unlimited` to /etc/security/limits.conf, or grant CAP_IPC_LOCK (AmbientCapabilities=CAP_IPC_LOCK)", mib_opt(.vm_size), mib(.memlock_soft), mib(.memlock_hard), cap_phrase(.cap_in_user_namespace, "CAP_IPC_LOCK"))]
    MemlockLimit {
        source: io::Error,
        memlock_soft: u64,
        memlock_hard: u64,
        vm_size: Option<u64>,
        cap_in_user_namespace: bool,
    },
    /// mlockall failed although the limit and capabilities allow it.
    #[error("mlockall(MCL_CURRENT|MCL_FUTURE) failed ({source}) although RLIMIT_MEMLOCK ({}) or CAP_IPC_LOCK allows it: this process maps {} (VmSize) and the machine could not lock that much RAM: free memory, or shrink the ring and the preallocated buffers", mib(.memlock_soft), mib_opt(.vm_size))]
    Memlock {
        source: io::Error,
        memlock_soft: u64,
        vm_size: Option<u64>,
    },
    /// Prefaulting a range failed.
    #[error("prefaulting {len} bytes at {addr:#x} ({}) failed: {source}: {}", if *.writable { "for writing" } else { "for reading" }, prefault_hint(.source))]
    Prefault {
        addr: usize,
        len: usize,
        writable: bool,
        source: io::Error,
    },
    /// Opening, writing or reading back /dev/cpu_dma_latency failed.
    #[error("{CPU_DMA_LATENCY}: {op} failed: {source}: {}", dma_hint(.source))]
    DmaLatency { op: &'static str, source: io::Error },
    /// /dev/cpu_dma_latency accepted 0 but reads back another effective value.
    #[error("{CPU_DMA_LATENCY} accepted 0 but reads back {value} µs: the kernel is not honouring the request; set host.cpu_dma_latency = false or check the kernel's PM QoS support")]
    DmaLatencyNotHeld { value: i32 },
}

/// What took effect (for status output and the benchmark's machine description).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct HostReport {
    /// The core the loop's thread is pinned to.
    pub core: Option<usize>,
    /// The loop thread's SCHED_FIFO priority.
    pub sched_fifo: Option<u8>,
    /// All current and future memory of the process is locked.
    pub mlocked: bool,
    /// `/dev/cpu_dma_latency` is held at 0.
    pub cpu_dma_latency_held: bool,
    /// Settings that took effect but hurt together, one line each.
    pub warnings: Vec<String>,
}

/// Holds what must stay held (the cpu_dma_latency fd) for as long as the loop runs. Dropping it
/// releases the latency request; the pinning, scheduling policy and memory lock stay.
#[derive(Debug)]
pub struct HostSetup {
    /// What took effect.
    pub report: HostReport,
    dma_latency: Option<DmaLatencyGuard>,
}

impl HostSetup {
    /// The held `/dev/cpu_dma_latency` request, if the configuration asked for one.
    pub fn dma_latency(&self) -> Option<&DmaLatencyGuard> {
        self.dma_latency.as_ref()
    }
}

/// Apply everything in `config` to the calling thread and process, in this order: pin (verified
/// with sched_getaffinity to be exactly `{core}`), SCHED_FIFO, mlockall, cpu_dma_latency.
///
/// Call it once, on the loop's thread, before the loop starts, and keep the returned
/// [`HostSetup`] for as long as the loop runs. The configuration is checked before anything
/// changes; a later refusal returns at once and leaves the earlier steps applied (the caller
/// exits). `busy_spin` says the loop will busy-spin: with SCHED_FIFO that adds a warning to
/// `report.warnings`, because a spinning FIFO thread starves the kernel threads of its core.
///
/// Mappings made after this (the ring, preallocated buffers) are populated by mlockall's
/// MCL_FUTURE only for reading where they are shared; their owners call [`prefault`] on them.
pub fn apply(config: &HostConfig, busy_spin: bool) -> Result<HostSetup, HostError> {
    if let Some(priority) = config.sched_fifo {
        check_priority(priority)?;
    }
    let mut report = HostReport::default();
    if let Some(core) = config.core {
        pin(core)?;
        report.core = Some(core);
    }
    if let Some(priority) = config.sched_fifo {
        set_sched_fifo(priority)?;
        report.sched_fifo = Some(priority);
        if busy_spin {
            report
                .warnings
                .push(busy_spin_fifo_warning(priority, config.core));
        }
    }
    if config.mlock {
        lock_memory()?;
        report.mlocked = true;
    }
    let dma_latency = if config.cpu_dma_latency {
        Some(hold_cpu_dma_latency()?)
    } else {
        None
    };
    report.cpu_dma_latency_held = dma_latency.is_some();
    Ok(HostSetup {
        report,
        dma_latency,
    })
}

// ---------------------------------------------------------------------------------------------
// Pinning

/// Pin the calling thread to `core` and verify it: afterwards its affinity mask is exactly
/// `{core}` and it runs there.
///
/// A core that is not online is [`HostError::CoreMissing`] (or [`HostError::CoreOffline`]); one
/// outside the thread's current affinity ([`allowed_cpus`]: cpuset, `taskset`, systemd
/// `CPUAffinity=`, a pinned parent) is [`HostError::CoreNotAllowed`]: pinning only narrows what
/// the operator allowed, it never escapes it.
pub fn pin(core: usize) -> Result<(), HostError> {
    check_core_exists(core)?;
    let allowed = thread_affinity().map_err(|source| HostError::Pin {
        core,
        call: "sched_getaffinity",
        source,
    })?;
    if !allowed.contains(&core) {
        return Err(HostError::CoreNotAllowed { core, allowed });
    }
    if let Err(source) = set_thread_affinity(core) {
        // EINVAL: the cgroup's cpuset excludes the core (it changed since we read the mask).
        if source.raw_os_error() == Some(libc::EINVAL) {
            return Err(HostError::CoreNotAllowed { core, allowed });
        }
        return Err(HostError::Pin {
            core,
            call: "sched_setaffinity",
            source,
        });
    }
    let mask = thread_affinity().map_err(|source| HostError::Pin {
        core,
        call: "sched_getaffinity",
        source,
    })?;
    // SAFETY: no arguments; returns the CPU the calling thread runs on, or -1.
    let running = i64::from(unsafe { libc::sched_getcpu() });
    if mask != [core] || running != core as i64 {
        return Err(HostError::PinNotApplied {
            core,
            mask,
            running,
        });
    }
    Ok(())
}

/// Allowed cpus of this process (sched_getaffinity of the calling thread), for messages.
/// Empty if the kernel refuses to say.
pub fn allowed_cpus() -> Vec<usize> {
    thread_affinity().unwrap_or_default()
}

fn configured_cpus() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_CONF) };
    usize::try_from(n).unwrap_or(1).max(1)
}

fn check_core_exists(core: usize) -> Result<(), HostError> {
    match read_cpu_list("/sys/devices/system/cpu/online") {
        Some(online) if online.contains(&core) => Ok(()),
        Some(online) => {
            let present = read_cpu_list("/sys/devices/system/cpu/present").unwrap_or_default();
            if present.contains(&core) {
                Err(HostError::CoreOffline { core, online })
            } else {
                Err(HostError::CoreMissing { core, online })
            }
        }
        None if core < configured_cpus() => Ok(()),
        None => Err(HostError::CoreMissing {
            core,
            online: (0..configured_cpus()).collect(),
        }),
    }
}

const WORD_BITS: usize = libc::c_ulong::BITS as usize;

/// The calling thread's affinity mask, sized for any number of CPUs.
pub fn thread_affinity() -> io::Result<Vec<usize>> {
    let mut words = 1024 / WORD_BITS;
    loop {
        let mut mask: Vec<libc::c_ulong> = vec![0; words];
        // SAFETY: `mask` is writable for the length given; pid 0 is the calling thread.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_sched_getaffinity,
                0,
                words * std::mem::size_of::<libc::c_ulong>(),
                mask.as_mut_ptr(),
            )
        };
        if rc >= 0 {
            let mut cpus = Vec::new();
            for (i, word) in mask.iter().enumerate() {
                for bit in 0..WORD_BITS {
                    if word >> bit & 1 == 1 {
                        cpus.push(i * WORD_BITS + bit);
                    }
                }
            }
            return Ok(cpus);
        }
        let err = io::Error::last_os_error();
        // EINVAL: the mask is smaller than the kernel's CPU count; try a larger one.
        if err.raw_os_error() == Some(libc::EINVAL) && words < (1 << 16) {
            words *= 2;
            continue;
        }
        return Err(err);
    }
}

/// Set the calling thread's affinity to exactly `{core}` (the caller checked that it exists).
fn set_thread_affinity(core: usize) -> io::Result<()> {
    let mut mask: Vec<libc::c_ulong> = vec![0; core / WORD_BITS + 1];
    mask[core / WORD_BITS] = 1 << (core % WORD_BITS);
    // SAFETY: `mask` is readable for the length given; pid 0 is the calling thread.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_sched_setaffinity,
            0,
            mask.len() * std::mem::size_of::<libc::c_ulong>(),
            mask.as_ptr(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn read_cpu_list(path: &str) -> Option<Vec<usize>> {
    cpulist::parse(&std::fs::read_to_string(path).ok()?)
}

/// Format CPUs as the kernel does: `0-3,5,7-8`; `none` when empty.
fn cpus(list: &[usize]) -> String {
    cpulist::format(list)
}

// ---------------------------------------------------------------------------------------------
// SCHED_FIFO

/// Run the calling thread under SCHED_FIFO at `priority` (1..=99), with SCHED_RESET_ON_FORK so
/// that processes it forks (feeds, helpers) start as ordinary SCHED_OTHER tasks. Verified with
/// sched_getscheduler/sched_getparam afterwards.
///
/// On EPERM it finds the real cause: no CAP_SYS_NICE with RLIMIT_RTPRIO below the priority
/// ([`HostError::FifoNotPermitted`]), or real-time group scheduling giving the thread's cgroup
/// no RT runtime ([`HostError::FifoRtGroup`]); otherwise [`HostError::Fifo`] with the errno.
pub fn set_sched_fifo(priority: u8) -> Result<(), HostError> {
    check_priority(priority)?;
    // SAFETY: zeroed sched_param is valid (some libcs have extra fields).
    let mut param: libc::sched_param = unsafe { std::mem::zeroed() };
    param.sched_priority = i32::from(priority);
    // The raw system call: pid 0 is the calling thread (musl's wrapper refuses, by design).
    // SAFETY: `param` is a valid sched_param for the duration of the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_sched_setscheduler,
            0,
            libc::SCHED_FIFO | libc::SCHED_RESET_ON_FORK,
            &param as *const libc::sched_param,
        )
    };
    if rc != 0 {
        let source = io::Error::last_os_error();
        return Err(match source.raw_os_error() {
            Some(libc::EPERM) => diagnose_fifo_eperm(priority, source),
            Some(libc::EINVAL) => HostError::Fifo {
                priority,
                source,
                hint: format!(
                    " (the kernel rejects SCHED_FIFO at {priority}; its range is {}..={})",
                    // SAFETY: plain queries.
                    unsafe { libc::sched_get_priority_min(libc::SCHED_FIFO) },
                    unsafe { libc::sched_get_priority_max(libc::SCHED_FIFO) }
                ),
            },
            _ => HostError::Fifo {
                priority,
                source,
                hint: String::new(),
            },
        });
    }
    // SAFETY: plain system calls on the calling thread; `got` is a valid out-pointer.
    let policy = unsafe { libc::syscall(libc::SYS_sched_getscheduler, 0) } as i32;
    let mut got: libc::sched_param = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe {
        libc::syscall(
            libc::SYS_sched_getparam,
            0,
            &mut got as *mut libc::sched_param,
        )
    };
    if policy & !libc::SCHED_RESET_ON_FORK != libc::SCHED_FIFO
        || got.sched_priority != i32::from(priority)
    {
        return Err(HostError::FifoNotApplied {
            priority,
            policy,
            got: got.sched_priority,
        });
    }
    Ok(())
}

fn check_priority(priority: u8) -> Result<(), HostError> {
    if (1..=99).contains(&priority) {
        Ok(())
    } else {
        Err(HostError::FifoPriority { priority })
    }
}

const CAP_IPC_LOCK: u32 = 14;
const CAP_SYS_NICE: u32 = 23;

/// The kernel's order: without CAP_SYS_NICE, RLIMIT_RTPRIO must allow the priority; then, with
/// RT group scheduling, the thread's cpu cgroup must have RT runtime.
fn diagnose_fifo_eperm(priority: u8, source: io::Error) -> HostError {
    let (rtprio_soft, rtprio_hard) = rlimit(libc::RLIMIT_RTPRIO);
    let cap = has_capability(CAP_SYS_NICE);
    let in_userns = in_user_namespace();
    if (!cap || in_userns) && rtprio_soft < u64::from(priority) {
        return HostError::FifoNotPermitted {
            priority,
            rtprio_soft,
            rtprio_hard,
            cap_in_user_namespace: cap && in_userns,
        };
    }
    if let Some(cause) = rt_group_cause() {
        return HostError::FifoRtGroup { priority, cause };
    }
    // SAFETY: plain system call on the calling thread.
    let policy = unsafe { libc::syscall(libc::SYS_sched_getscheduler, 0) } as i32;
    if (!cap || in_userns) && policy & !libc::SCHED_RESET_ON_FORK == libc::SCHED_IDLE {
        return HostError::Fifo {
            priority,
            source,
            hint: ": the thread runs under SCHED_IDLE, which without CAP_SYS_NICE it may leave only as far as RLIMIT_NICE allows: start it under SCHED_OTHER (not `chrt -i` or CPUSchedulingPolicy=idle), or grant CAP_SYS_NICE".into(),
        };
    }
    HostError::Fifo {
        priority,
        source,
        hint: format!(
            ": CAP_SYS_NICE ({}), RLIMIT_RTPRIO ({rtprio_soft}) and RT group scheduling all allow it, so a seccomp filter or an LSM policy (SELinux, AppArmor) is the likely cause: check the audit log",
            if cap { "held" } else { "not held" }
        ),
    }
}

/// Why RT group scheduling refuses this thread, with the fix; `None` if it does not (the
/// doctor's reading of the same, `tickloop_linux_tuning::sched`).
fn rt_group_cause() -> Option<String> {
    let root = tickloop_linux_tuning::Root::system();
    let who = if std::path::Path::new("/proc/thread-self/cgroup").exists() {
        "thread-self"
    } else {
        "self"
    };
    tickloop_linux_tuning::sched::rt_group_cause(&root, who)
}

fn busy_spin_fifo_warning(priority: u8, core: Option<usize>) -> String {
    let runtime =
        read_trim("/proc/sys/kernel/sched_rt_runtime_us").and_then(|s| s.parse::<i64>().ok());
    let period =
        read_trim("/proc/sys/kernel/sched_rt_period_us").and_then(|s| s.parse::<i64>().ok());
    let throttling = match (runtime, period) {
        (Some(-1), _) => "RT throttling is off (kernel.sched_rt_runtime_us = -1), so nothing takes the core back and its kernel threads starve outright (RCU stalls, stuck workqueues)".to_string(),
        (Some(r), Some(p)) if r >= 0 && p > 0 && r < p => format!(
            "RT throttling (kernel.sched_rt_runtime_us = {r} of {p} µs, {}%) stops it for {} ms in every {} ms while other tasks are runnable there (on kernels >= 6.12 the fair server does the same), a far larger stall than the spin saves",
            r * 100 / p,
            (p - r) / 1000,
            p / 1000
        ),
        _ => "RT throttling (kernel.sched_rt_runtime_us) stops it for tens of milliseconds each second while other tasks are runnable there".to_string(),
    };
    let (place, isolate) = match core {
        Some(c) => {
            let isolated = read_cpu_list("/sys/devices/system/cpu/isolated").unwrap_or_default();
            let nohz = read_cpu_list("/sys/devices/system/cpu/nohz_full").unwrap_or_default();
            let state = match (isolated.contains(&c), nohz.contains(&c)) {
                (true, true) => "isolated and nohz_full",
                (true, false) => "isolated but not nohz_full",
                (false, true) => "nohz_full but not isolated",
                (false, false) => "neither isolated nor nohz_full",
            };
            (
                format!("core {c} ({state})"),
                format!("isolcpus={c} nohz_full={c} rcu_nocbs={c}"),
            )
        }
        None => (
            "an unpinned thread".to_string(),
            "host.core plus isolcpus=N nohz_full=N rcu_nocbs=N".to_string(),
        ),
    };
    format!(
        "SCHED_FIFO {priority} with busy-spin on {place}: the spinning thread never sleeps, so the kernel threads of its core (ksoftirqd, per-CPU kworkers, RCU callbacks) starve; {throttling}: isolate the core ({isolate}) or use park mode instead of busy-spin"
    )
}

// ---------------------------------------------------------------------------------------------
// Memory

/// Lock all current and future memory of the process: `mlockall(MCL_CURRENT|MCL_FUTURE)`.
/// Process-wide. A refusal names RLIMIT_MEMLOCK's soft and hard values and the fix.
pub fn lock_memory() -> Result<(), HostError> {
    // SAFETY: plain system call with flags.
    if unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE) } == 0 {
        return Ok(());
    }
    let source = io::Error::last_os_error();
    let (memlock_soft, memlock_hard) = rlimit(libc::RLIMIT_MEMLOCK);
    let cap = has_capability(CAP_IPC_LOCK);
    let in_userns = in_user_namespace();
    let vm_size = status_kib("VmSize").map(|k| k * 1024);
    let limited = (!cap || in_userns) && memlock_soft != u64::MAX;
    if limited
        && matches!(
            source.raw_os_error(),
            Some(libc::ENOMEM) | Some(libc::EPERM)
        )
    {
        return Err(HostError::MemlockLimit {
            source,
            memlock_soft,
            memlock_hard,
            vm_size,
            cap_in_user_namespace: cap && in_userns,
        });
    }
    Err(HostError::Memlock {
        source,
        memlock_soft,
        vm_size,
    })
}

/// Fault in every page of `len` bytes at `ptr` now, so the loop never page-faults on them later:
/// `MADV_POPULATE_WRITE` (writable) or `MADV_POPULATE_READ` (kernel >= 5.14), else
/// [`touch_pages`]. Prefault for writing whatever the loop will write: a page populated for
/// reading can still fault on its first write (the zero page, copy-on-write, dirty tracking).
/// A `fork()` afterwards write-protects every private writable page again (copy-on-write), so
/// the next write to each faults: start child processes with posix_spawn/vfork (as
/// `std::process::Command` does), or mark such buffers `MADV_DONTFORK`.
///
/// # Safety
///
/// `ptr..ptr + len` must lie in mappings that stay mapped during the call, readable, and
/// writable when `writable` (the kernel checks this when it populates; the fallback touches).
pub unsafe fn prefault(ptr: *const u8, len: usize, writable: bool) -> Result<(), HostError> {
    if len == 0 {
        return Ok(());
    }
    let error = |source: io::Error| HostError::Prefault {
        addr: ptr as usize,
        len,
        writable,
        source,
    };
    let page = page_size();
    let start = ptr as usize & !(page - 1);
    let Some(end) = (ptr as usize)
        .checked_add(len)
        .and_then(|e| e.checked_add(page - 1))
        .map(|e| e & !(page - 1))
    else {
        return Err(error(io::Error::from_raw_os_error(libc::EINVAL)));
    };
    if !madvise_populate_supported() {
        // SAFETY: the caller's contract.
        unsafe { touch_pages(ptr, len, writable) };
        return Ok(());
    }
    let advice = if writable {
        libc::MADV_POPULATE_WRITE
    } else {
        libc::MADV_POPULATE_READ
    };
    loop {
        // SAFETY: madvise only populates page tables of existing mappings; it checks the range.
        let rc = unsafe { libc::madvise(start as *mut libc::c_void, end - start, advice) };
        if rc == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINTR) {
            return Err(error(err));
        }
    }
}

/// [`prefault`] for reading a buffer the loop only reads.
pub fn prefault_slice(buf: &[u8]) -> Result<(), HostError> {
    // SAFETY: a slice is mapped and readable for its whole length while it is borrowed.
    unsafe { prefault(buf.as_ptr(), buf.len(), false) }
}

/// [`prefault`] for writing a buffer the loop writes.
pub fn prefault_slice_mut(buf: &mut [u8]) -> Result<(), HostError> {
    // SAFETY: a mutable slice is mapped, readable and writable while it is borrowed.
    unsafe { prefault(buf.as_mut_ptr(), buf.len(), true) }
}

/// The fallback of [`prefault`], public so that it can be tested on kernels that populate:
/// touch one byte per page, a volatile read for reading, or for writing an atomic
/// compare-and-swap of the byte with itself (a write that changes nothing, even while another
/// process writes the same shared memory).
///
/// # Safety
///
/// As [`prefault`]; here a violation is a SIGSEGV or SIGBUS rather than an error.
pub unsafe fn touch_pages(ptr: *const u8, len: usize, writable: bool) {
    let first = ptr as usize;
    let Some(last) = len.checked_sub(1).and_then(|n| first.checked_add(n)) else {
        return;
    };
    let page = page_size();
    let mask = !(page - 1);
    let mut page_start = first & mask;
    loop {
        // The first byte of the buffer that lies in this page.
        let p = page_start.max(first) as *mut u8;
        if writable {
            // SAFETY: the caller's contract: mapped and writable; u8 needs no alignment.
            let byte = unsafe { AtomicU8::from_ptr(p) };
            let mut v = byte.load(Ordering::Relaxed);
            while let Err(now) =
                byte.compare_exchange_weak(v, v, Ordering::Relaxed, Ordering::Relaxed)
            {
                v = now;
            }
        } else {
            // SAFETY: the caller's contract: mapped and readable.
            std::hint::black_box(unsafe { std::ptr::read_volatile(p) });
        }
        if page_start == last & mask {
            break;
        }
        page_start += page;
    }
}

/// Does this kernel populate with `MADV_POPULATE_WRITE` (5.14+)? Probed once on an anonymous
/// page, because an emulator (qemu-user) or a sandbox may accept the advice and do nothing.
pub fn madvise_populate_supported() -> bool {
    static SUPPORTED: OnceLock<bool> = OnceLock::new();
    *SUPPORTED.get_or_init(|| {
        let page = page_size();
        // SAFETY: a fresh private anonymous page, unmapped before returning.
        unsafe {
            let p = libc::mmap(
                std::ptr::null_mut(),
                page,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            if p == libc::MAP_FAILED {
                return false;
            }
            let mut resident = 0u8;
            let ok = libc::madvise(p, page, libc::MADV_POPULATE_WRITE) == 0
                && libc::mincore(p, page, &mut resident) == 0
                && resident & 1 == 1;
            libc::munmap(p, page);
            ok
        }
    })
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(n)
        .ok()
        .filter(|p| p.is_power_of_two())
        .unwrap_or(4096)
}

// ---------------------------------------------------------------------------------------------
// /dev/cpu_dma_latency

const CPU_DMA_LATENCY: &str = "/dev/cpu_dma_latency";

/// An open `/dev/cpu_dma_latency` holding 0 µs; dropping it closes the fd, which restores the
/// previous limit.
#[derive(Debug)]
pub struct DmaLatencyGuard {
    file: File,
}

impl DmaLatencyGuard {
    /// The system-wide effective limit in µs (the least of every open request): 0 while held.
    pub fn effective_us(&self) -> io::Result<i32> {
        let mut value = [0u8; 4];
        self.file.read_exact_at(&mut value, 0)?;
        Ok(i32::from_ne_bytes(value))
    }
}

/// Hold `/dev/cpu_dma_latency` at 0: open it read-write, write 0 as a 4-byte integer, check that
/// the effective limit reads back as 0, and keep the fd open in the returned guard.
pub fn hold_cpu_dma_latency() -> Result<DmaLatencyGuard, HostError> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(CPU_DMA_LATENCY)
        .map_err(|source| HostError::DmaLatency { op: "open", source })?;
    match file.write(&0i32.to_ne_bytes()) {
        Ok(4) => {}
        Ok(n) => {
            return Err(HostError::DmaLatency {
                op: "write",
                source: io::Error::new(io::ErrorKind::WriteZero, format!("wrote {n} of 4 bytes")),
            })
        }
        Err(source) => {
            return Err(HostError::DmaLatency {
                op: "write",
                source,
            })
        }
    }
    let guard = DmaLatencyGuard { file };
    let value = guard
        .effective_us()
        .map_err(|source| HostError::DmaLatency {
            op: "read back",
            source,
        })?;
    if value != 0 {
        return Err(HostError::DmaLatencyNotHeld { value });
    }
    Ok(guard)
}

// ---------------------------------------------------------------------------------------------
// Helpers

fn read_string(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

fn read_trim(path: &str) -> Option<String> {
    Some(read_string(path)?.trim().to_string())
}

/// A resource limit as (soft, hard), with `u64::MAX` for unlimited.
#[allow(clippy::useless_conversion)]
fn rlimit(resource: RlimitResource) -> (u64, u64) {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `rl` is a valid out-pointer.
    if unsafe { libc::getrlimit(resource, &mut rl) } != 0 {
        return (0, 0);
    }
    let conv = |v: libc::rlim_t| {
        if v == libc::RLIM_INFINITY {
            u64::MAX
        } else {
            u64::from(v)
        }
    };
    (conv(rl.rlim_cur), conv(rl.rlim_max))
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
type RlimitResource = libc::__rlimit_resource_t;
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
type RlimitResource = libc::c_int;

/// A field of the calling thread's /proc status.
fn thread_status(field: &str) -> Option<String> {
    let status =
        read_string("/proc/thread-self/status").or_else(|| read_string("/proc/self/status"))?;
    status.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        (name == field).then(|| value.trim().to_string())
    })
}

fn status_kib(field: &str) -> Option<u64> {
    thread_status(field)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Does the calling thread hold capability `bit` in its effective set?
fn has_capability(bit: u32) -> bool {
    thread_status("CapEff")
        .and_then(|hex| u64::from_str_radix(&hex, 16).ok())
        .is_some_and(|caps| caps >> bit & 1 == 1)
}

/// Does the process run in a user namespace other than the initial one (a container)? Its
/// capabilities then do not count for SCHED_FIFO or mlock.
fn in_user_namespace() -> bool {
    read_string("/proc/self/uid_map").is_some_and(|map| {
        let fields: Vec<&str> = map.split_whitespace().collect();
        fields != ["0", "0", "4294967295"]
    })
}

fn cap_phrase(in_user_namespace: &bool, cap: &str) -> String {
    if *in_user_namespace {
        format!("lacks {cap} (it holds it only inside a user namespace, a container's, which the kernel does not count)")
    } else {
        format!("lacks {cap}")
    }
}

fn rtprio_fix(priority: &u8, hard: &u64) -> String {
    let raise = if *hard >= u64::from(*priority) {
        format!("the hard limit allows it, so raise the soft one before starting (`ulimit -r {priority}`), or ")
    } else {
        String::new()
    };
    format!("{raise}set LimitRTPRIO={priority} (or more) in the systemd unit, or add `<user> - rtprio {priority}` to /etc/security/limits.conf, or grant CAP_SYS_NICE (AmbientCapabilities=CAP_SYS_NICE)")
}

const MIB: u64 = 1 << 20;

fn mib(bytes: &u64) -> String {
    match *bytes {
        u64::MAX => "unlimited".to_string(),
        b if b % MIB == 0 => format!("{} MiB", b / MIB),
        b if b >= MIB => format!("{:.2} MiB", b as f64 / MIB as f64),
        b if b % 1024 == 0 => format!("{:.4} MiB ({} KiB)", b as f64 / MIB as f64, b / 1024),
        b => format!("{:.4} MiB ({b} bytes)", b as f64 / MIB as f64),
    }
}

fn policy_name(policy: &i32) -> String {
    let name = match policy & !libc::SCHED_RESET_ON_FORK {
        libc::SCHED_OTHER => "SCHED_OTHER",
        libc::SCHED_FIFO => "SCHED_FIFO",
        libc::SCHED_RR => "SCHED_RR",
        libc::SCHED_BATCH => "SCHED_BATCH",
        libc::SCHED_IDLE => "SCHED_IDLE",
        libc::SCHED_DEADLINE => "SCHED_DEADLINE",
        _ => return format!("policy {policy:#x}"),
    };
    if policy & libc::SCHED_RESET_ON_FORK != 0 {
        format!("{name}|SCHED_RESET_ON_FORK")
    } else {
        name.to_string()
    }
}

fn mib_opt(bytes: &Option<u64>) -> String {
    bytes
        .as_ref()
        .map_or_else(|| "an unknown size".to_string(), mib)
}

fn prefault_hint(err: &io::Error) -> &'static str {
    match err.raw_os_error() {
        Some(libc::ENOMEM) => "part of the range is not mapped, or the machine ran out of memory",
        Some(libc::EFAULT) => "touching it would raise SIGBUS or SIGSEGV (a file mapping past the end of its file, or a hugetlbfs pool that ran out)",
        Some(libc::EINVAL) => "the mapping does not allow it (PROT_NONE, or read-only and prefaulted for writing) or is a device mapping (VM_IO/VM_PFNMAP) that cannot be prefaulted",
        Some(libc::EHWPOISON) => "a page in the range is hardware-poisoned",
        _ => "check that the range is a live mapping of the process",
    }
}

fn dma_hint(err: &io::Error) -> &'static str {
    match err.kind() {
        io::ErrorKind::NotFound => "the kernel has no CPU latency QoS device here (or a container does not expose it): set host.cpu_dma_latency = false, or pass the device in (docker --device /dev/cpu_dma_latency)",
        io::ErrorKind::PermissionDenied => "it is root-only (mode 0600): run as root, or add a udev rule such as KERNEL==\"cpu_dma_latency\", GROUP=\"tickloop\", MODE=\"0660\" and run in that group",
        _ => "set host.cpu_dma_latency = false to run without it",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mebibytes() {
        assert_eq!(mib(&u64::MAX), "unlimited");
        assert_eq!(mib(&(8 * MIB)), "8 MiB");
        assert_eq!(mib(&65536), "0.0625 MiB (64 KiB)");
        assert_eq!(mib(&(MIB + MIB / 2)), "1.50 MiB");
        assert_eq!(mib(&100), "0.0001 MiB (100 bytes)");
        assert_eq!(
            policy_name(&(libc::SCHED_FIFO | libc::SCHED_RESET_ON_FORK)),
            "SCHED_FIFO|SCHED_RESET_ON_FORK"
        );
    }

    #[test]
    fn rtprio_advice_follows_the_hard_limit() {
        assert!(rtprio_fix(&10, &20).starts_with("the hard limit allows it, so raise the soft one before starting (`ulimit -r 10`), or set LimitRTPRIO=10"));
        assert!(rtprio_fix(&10, &0).starts_with("set LimitRTPRIO=10"));
        let err = HostError::FifoNotPermitted {
            priority: 10,
            rtprio_soft: 0,
            rtprio_hard: 20,
            cap_in_user_namespace: true,
        };
        assert!(err.to_string().contains("this thread lacks CAP_SYS_NICE (it holds it only inside a user namespace, a container's, which the kernel does not count) and its RLIMIT_RTPRIO is 0 (hard 20), below 10: the hard limit allows it"), "{err}");
    }
}
