//! The machine-wide knobs that reach the engine's core: memory management (THP, KSM, NUMA
//! balancing, swap, hugepages), RT throttling and RT group scheduling, the limits and
//! capabilities the engine needs, timer slack, and a Raspberry Pi's throttling.
//!
//! Each reads through [`crate::Root`] and gives one [`Finding`]; none changes the host.

use crate::checks::Ctx;
use crate::report::{Finding, Verdict};
use crate::sched::{self, CAP_IPC_LOCK, CAP_SYS_NICE};

/// The bracketed choice of a sysfs selector (`always [madvise] never` gives `madvise`).
fn selected(text: &str) -> Option<&str> {
    text.split_whitespace()
        .find(|w| w.starts_with('['))
        .map(|w| w.trim_matches(|c| c == '[' || c == ']'))
}

pub fn thp(cx: &Ctx) -> Finding {
    let Some(enabled) = cx.root.text("/sys/kernel/mm/transparent_hugepage/enabled") else {
        return Finding::new("thp", Verdict::Ok, "not built");
    };
    let mode = selected(&enabled).unwrap_or("?").to_string();
    if mode != "always" {
        return Finding::new("thp", Verdict::Ok, mode);
    }
    Finding::new("thp", Verdict::Warn, "always")
        .because("khugepaged and compaction stall faulting tasks and take locks the engine's page walks share")
        .fix("echo madvise > /sys/kernel/mm/transparent_hugepage/enabled")
}

pub fn ksm(cx: &Ctx) -> Finding {
    match cx.root.text("/sys/kernel/mm/ksm/run").as_deref() {
        Some("1") => Finding::new("ksm", Verdict::Warn, "running")
            .because("ksmd scans and merges pages, and a merged page's first write is a copy-on-write fault")
            .fix("echo 0 > /sys/kernel/mm/ksm/run"),
        Some(_) => Finding::new("ksm", Verdict::Ok, "off"),
        None => Finding::new("ksm", Verdict::Ok, "not built"),
    }
}

pub fn numa_balancing(cx: &Ctx) -> Finding {
    let nodes = cx
        .root
        .list("/sys/devices/system/node")
        .iter()
        .filter(|n| n.starts_with("node"))
        .count();
    match cx.root.text("/proc/sys/kernel/numa_balancing").as_deref() {
        Some(v) if v != "0" && nodes > 1 => Finding::new("numa_balancing", Verdict::Warn, format!("on, {nodes} nodes"))
            .because("automatic NUMA balancing unmaps pages to sample accesses: the engine takes faults on its own memory")
            .fix("sysctl kernel.numa_balancing=0 (persist it in /etc/sysctl.d/)"),
        Some(v) if v != "0" => Finding::new("numa_balancing", Verdict::Ok, "on, one node (no effect)"),
        Some(_) => Finding::new("numa_balancing", Verdict::Ok, "off"),
        None => Finding::new("numa_balancing", Verdict::Ok, "not built"),
    }
}

pub fn swap(cx: &Ctx) -> Finding {
    let swaps = cx.root.text("/proc/swaps").unwrap_or_default();
    let devices = swaps
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .count();
    let swappiness = cx.root.text("/proc/sys/vm/swappiness").unwrap_or_default();
    if devices == 0 {
        return Finding::new("swap", Verdict::Ok, "none");
    }
    let devices = crate::report::count(devices, "swap device");
    Finding::new(
        "swap",
        Verdict::Warn,
        format!("{devices}, swappiness {swappiness}"),
    )
    .because("memory the engine has not locked can be swapped out and faulted back in on its path")
    .fix("set loop.host.mlock = true (the engine locks all its memory), and vm.swappiness=1")
}

pub fn hugepages(cx: &Ctx) -> Finding {
    let meminfo = cx.root.text("/proc/meminfo").unwrap_or_default();
    let field = |name: &str| sched::status_field(&meminfo, name);
    let Some(size) = field("Hugepagesize") else {
        return Finding::new("hugepages", Verdict::Ok, "not built");
    };
    let total = field("HugePages_Total").unwrap_or_default();
    let free = field("HugePages_Free").unwrap_or_default();
    // The size is the kernel's, never assumed: 2 MiB on x86, 32 MiB on a 16K-page Pi 5.
    Finding::new(
        "hugepages",
        Verdict::Ok,
        format!("size {size}, {total} reserved, {free} free"),
    )
}

pub fn rt_throttling(cx: &Ctx) -> Finding {
    let runtime = cx
        .root
        .text("/proc/sys/kernel/sched_rt_runtime_us")
        .unwrap_or_default();
    let period = cx
        .root
        .text("/proc/sys/kernel/sched_rt_period_us")
        .unwrap_or_default();
    match runtime.parse::<i64>() {
        Ok(-1) => Finding::new("rt_throttling", Verdict::Ok, "off (sched_rt_runtime_us = -1)"),
        Ok(r) => Finding::new("rt_throttling", Verdict::Warn, format!("{r} of every {period} us"))
            .because("a SCHED_FIFO engine that busy-spins is stopped for the rest of each period, every period")
            .fix("with busy-spin and SCHED_FIFO on an isolated core only: sysctl kernel.sched_rt_runtime_us=-1 (else leave it, and do not combine the two)"),
        Err(_) => Finding::new("rt_throttling", Verdict::Unknown, "not exposed"),
    }
}

pub fn rt_group(cx: &Ctx) -> Finding {
    match sched::rt_group_cause(cx.root, "self") {
        None => Finding::new("rt_group", Verdict::Ok, "SCHED_FIFO allowed in this cgroup"),
        Some(cause) => Finding::new(
            "rt_group",
            cx.missing(),
            "SCHED_FIFO refused in this cgroup",
        )
        .because(cause)
        .fix("run the engine in a group that may run real-time tasks (see why)"),
    }
}

/// The engine's limits: run the doctor as the service runs (same user, same unit limits).
pub fn limits(cx: &Ctx) -> [Finding; 2] {
    let limits = cx.root.text("/proc/self/limits").unwrap_or_default();
    let status = cx.root.text("/proc/self/status").unwrap_or_default();
    let memlock = sched::soft_limit(&limits, "Max locked memory");
    let rtprio = sched::soft_limit(&limits, "Max realtime priority");
    let mlock = if memlock == Some(u64::MAX) {
        Finding::new("memlock", Verdict::Ok, "RLIMIT_MEMLOCK unlimited")
    } else if sched::has_capability(&status, CAP_IPC_LOCK) {
        Finding::new("memlock", Verdict::Ok, "CAP_IPC_LOCK")
    } else {
        let kib = memlock.map_or("?".to_string(), |b| format!("{} KiB", b / 1024));
        Finding::new("memlock", Verdict::Warn, format!("RLIMIT_MEMLOCK {kib}, no CAP_IPC_LOCK"))
            .because("loop.host.mlock = true cannot lock the engine's memory")
            .fix("LimitMEMLOCK=infinity in the systemd unit (the repo's tickloop@.service has it), or AmbientCapabilities=CAP_IPC_LOCK")
    };
    let prio = match rtprio {
        Some(u64::MAX) => "unlimited".to_string(),
        Some(p) => p.to_string(),
        None => "?".to_string(),
    };
    let fifo = if sched::has_capability(&status, CAP_SYS_NICE) {
        Finding::new(
            "rtprio",
            Verdict::Ok,
            format!("RLIMIT_RTPRIO {prio}, CAP_SYS_NICE"),
        )
    } else if rtprio.is_some_and(|p| p > 0) {
        Finding::new("rtprio", Verdict::Ok, format!("RLIMIT_RTPRIO {prio}"))
    } else {
        Finding::new("rtprio", Verdict::Warn, "RLIMIT_RTPRIO 0, no CAP_SYS_NICE")
            .because("loop.host.sched_fifo cannot raise the engine to SCHED_FIFO")
            .fix("LimitRTPRIO=99 in the systemd unit (the repo's tickloop@.service has it), or AmbientCapabilities=CAP_SYS_NICE")
    };
    [mlock, fifo]
}

pub fn timer_slack(cx: &Ctx) -> Finding {
    let slack = cx.root.text("/proc/self/timerslack_ns").unwrap_or_default();
    // The loop sets its own thread's slack to 1 ns; this is what the rest of the process has.
    Finding::new(
        "timer_slack",
        Verdict::Ok,
        format!("{slack} ns (the loop's thread sets 1 ns)"),
    )
}

/// A Raspberry Pi's under-voltage and throttling (the firmware's flags, else the SoC's
/// temperature).
pub fn pi_throttling(cx: &Ctx) -> Option<Finding> {
    if !cx.profile.is_pi() {
        return None;
    }
    let flags = cx
        .root
        .text("/sys/devices/platform/soc/soc:firmware/get_throttled")
        .or_else(|| {
            let out = cx
                .root
                .is_live()
                .then(|| crate::machine::run("vcgencmd", &["get_throttled"]))??;
            Some(out.trim().trim_start_matches("throttled=").to_string())
        })
        .and_then(|t| u64::from_str_radix(t.trim_start_matches("0x"), 16).ok());
    if let Some(bits) = flags {
        return Some(throttle_finding(bits));
    }
    let temp = cx.root.text("/sys/class/thermal/thermal_zone0/temp")?;
    let c = temp.parse::<f64>().ok()? / 1000.0;
    // Where the firmware starts lowering the clock.
    let limit = if cx.profile == crate::Profile::Pi5 {
        85.0
    } else {
        80.0
    };
    Some(if c >= limit - 5.0 {
        Finding::new(
            "pi_throttling",
            Verdict::Warn,
            format!("SoC at {c:.1} C (no firmware flags)"),
        )
        .because(format!("at {limit} C the firmware lowers the clock"))
        .fix("cool it: a heatsink and fan (the Pi 5's active cooler)")
    } else {
        Finding::new(
            "pi_throttling",
            Verdict::Ok,
            format!("SoC at {c:.1} C (no firmware flags)"),
        )
    })
}

fn throttle_finding(bits: u64) -> Finding {
    const NAMES: [(u64, &str); 4] = [
        (0, "under-voltage"),
        (1, "ARM frequency capped"),
        (2, "throttled"),
        (3, "soft temperature limit"),
    ];
    let now: Vec<&str> = NAMES
        .iter()
        .filter(|(b, _)| bits >> b & 1 == 1)
        .map(|(_, n)| *n)
        .collect();
    let since: Vec<&str> = NAMES
        .iter()
        .filter(|(b, _)| bits >> (b + 16) & 1 == 1)
        .map(|(_, n)| *n)
        .collect();
    let state = format!("get_throttled 0x{bits:x}");
    if now.is_empty() && since.is_empty() {
        return Finding::new("pi_throttling", Verdict::Ok, state);
    }
    let verdict = if now.is_empty() {
        Verdict::Warn
    } else {
        Verdict::Fail
    };
    Finding::new("pi_throttling", verdict, format!("{state}: now {}; since boot {}", or_none(&now), or_none(&since)))
        .because("the firmware slows the cores when the supply sags or the SoC is hot: every latency moves with it")
        .fix(if bits & 0x1_0001 != 0 {
            "use the official power supply (5.1 V 3 A for a Pi 4, 5 V 5 A for a Pi 5) and a short cable"
        } else {
            "cool it: a heatsink and fan (the Pi 5's active cooler)"
        })
}

fn or_none(names: &[&str]) -> String {
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}
