//! What else may run on the engine's core: device IRQs, kernel threads and other tasks,
//! unbound workqueues, and the idle states the core sleeps in between (with who holds
//! `/dev/cpu_dma_latency`).
//!
//! It owns the scans of `/proc/irq`, `/proc/<pid>/task` and `/proc/<pid>/fd`, each bounded.
//! It never changes an affinity and never reads a task's memory.

use crate::checks::Ctx;
use crate::cpulist;
use crate::report::{count, Finding, Verdict};
use crate::root::Read;
use crate::sched::status_field;

/// At most this many processes are scanned (a host with more is named as such).
const MAX_TASKS: usize = 65_536;
/// Names listed in a finding's state.
const NAMED: usize = 6;

fn named(names: &[String]) -> String {
    let mut shown: Vec<&str> = names.iter().take(NAMED).map(String::as_str).collect();
    if names.len() > NAMED {
        shown.push("...");
    }
    shown.join(", ")
}

/// Device IRQs whose effective affinity includes the core.
pub fn irqs(cx: &Ctx) -> Finding {
    let interrupts = cx.root.text("/proc/interrupts").unwrap_or_default();
    let mut hits = Vec::new();
    for irq in cx.root.list("/proc/irq") {
        if !irq.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        let list = ["effective_affinity_list", "smp_affinity_list"]
            .iter()
            .find_map(|f| cx.root.text(&format!("/proc/irq/{irq}/{f}")));
        let Some(cpus) = list.and_then(|l| cpulist::parse(&l)) else {
            continue;
        };
        if cpus.contains(&cx.core) {
            hits.push(
                format!("{irq} {}", irq_name(&interrupts, &irq))
                    .trim()
                    .to_string(),
            );
        }
    }
    if hits.is_empty() {
        return Finding::new("irqs", Verdict::Ok, "no device IRQ on the core");
    }
    Finding::new(
        "irqs",
        cx.missing(),
        format!(
            "{} may fire on core {}: {}",
            count(hits.len(), "device IRQ"),
            cx.core,
            named(&hits)
        ),
    )
    .because("each interrupt stops the engine for its handler, and its softirq after")
    .fix(format!(
        "move them off (`echo <other cores> > /proc/irq/<N>/smp_affinity_list` for each) and keep irqbalance off the core (IRQBALANCE_BANNED_CPULIST={} in /etc/default/irqbalance)",
        cx.core
    ))
}

/// The device name `/proc/interrupts` gives IRQ `irq` (its last column).
fn irq_name(interrupts: &str, irq: &str) -> String {
    interrupts
        .lines()
        .find(|l| l.trim_start().split(':').next() == Some(irq))
        .and_then(|l| l.split_whitespace().last())
        .unwrap_or_default()
        .to_string()
}

/// A task that may run on the core.
struct Allowed {
    name: String,
    kernel: bool,
    /// Bound to the core alone (a per-CPU kernel thread: ksoftirqd/N, migration/N).
    bound: bool,
}

/// Kernel threads and other tasks whose affinity allows the core.
pub fn tasks(cx: &Ctx) -> Finding {
    let me = cx.root.link("/proc/self").text().unwrap_or_default();
    let mut allowed = Vec::new();
    let pids: Vec<String> = cx
        .root
        .list("/proc")
        .into_iter()
        .filter(|p| p.chars().all(|c| c.is_ascii_digit()) && *p != me)
        .collect();
    for pid in pids.iter().take(MAX_TASKS) {
        allowed.extend(task_on_core(cx, pid));
    }
    let (bound, loose): (Vec<&Allowed>, Vec<&Allowed>) = allowed.iter().partition(|a| a.bound);
    let mut names: Vec<String> = loose.iter().map(|a| a.name.clone()).collect();
    names.sort();
    names.dedup();
    let kernel = loose.iter().filter(|a| a.kernel).count();
    let state = format!(
        "{} may run on core {} ({}){}; {}",
        count(loose.len(), "task"),
        cx.core,
        count(kernel, "kernel thread"),
        if names.is_empty() {
            String::new()
        } else {
            format!(": {}", named(&names))
        },
        count(bound.len(), "per-CPU kernel thread")
    );
    if loose.is_empty() {
        return Finding::new("tasks", Verdict::Ok, state);
    }
    Finding::new("tasks", cx.missing(), state)
        .because("the scheduler may run any of them on the core, between the engine's events")
        .fix(format!(
            "isolate the core (isolcpus={0}), or give every other service the other cores (CPUAffinity= in /etc/systemd/system.conf.d/, then reboot)",
            cx.core
        ))
}

/// The threads of process `pid` allowed on the core.
fn task_on_core(cx: &Ctx, pid: &str) -> Vec<Allowed> {
    let stat = cx
        .root
        .text(&format!("/proc/{pid}/stat"))
        .unwrap_or_default();
    // The flags are the 9th field, after the name in parentheses.
    let flags = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(6))
        .and_then(|f| f.parse::<u64>().ok())
        .unwrap_or(0);
    let kernel = flags & 0x0020_0000 != 0;
    let mut out = Vec::new();
    let mut tids = cx.root.list(&format!("/proc/{pid}/task"));
    if tids.is_empty() {
        tids.push(pid.to_string());
    }
    for tid in tids.iter().take(1024) {
        let path = if tids.len() == 1 && tid == pid {
            format!("/proc/{pid}/status")
        } else {
            format!("/proc/{pid}/task/{tid}/status")
        };
        let Some(status) = cx
            .root
            .text(&path)
            .or_else(|| cx.root.text(&format!("/proc/{pid}/status")))
        else {
            continue;
        };
        let cpus = status_field(&status, "Cpus_allowed_list")
            .and_then(|l| cpulist::parse(&l))
            .unwrap_or_default();
        if cpus.contains(&cx.core) {
            out.push(Allowed {
                name: status_field(&status, "Name").unwrap_or_default(),
                kernel,
                bound: kernel && cpus.len() == 1,
            });
        }
    }
    out
}

/// The cpumask unbound workqueues run on.
pub fn workqueues(cx: &Ctx) -> Finding {
    let path = "/sys/devices/virtual/workqueue/cpumask";
    let Some(mask) = cx.root.text(path) else {
        return Finding::new("workqueues", Verdict::Unknown, "not exposed")
            .because(format!("{path} is not there"));
    };
    let cpus = cpulist::parse_mask(&mask).unwrap_or_default();
    let state = format!(
        "unbound workqueues on {} (mask {mask})",
        cpulist::format(&cpus)
    );
    if !cpus.contains(&cx.core) {
        return Finding::new("workqueues", Verdict::Ok, state);
    }
    let others: Vec<usize> = cpus.iter().copied().filter(|&c| c != cx.core).collect();
    let count = crate::machine::online(cx.root).len().max(cx.core + 1);
    Finding::new("workqueues", Verdict::Warn, state)
        .because("the kernel's deferred work (writeback, crypto, ...) may run on the core")
        .fix(format!(
            "echo {} > {path}",
            cpulist::format_mask(&others, count)
        ))
}

/// The core's idle states and who holds `/dev/cpu_dma_latency`.
pub fn cstates(cx: &Ctx) -> Finding {
    let dir = cx.cpu("cpuidle");
    let mut deep = Vec::new();
    for state in cx.root.list(&dir).iter().filter(|s| s.starts_with("state")) {
        let read = |f: &str| cx.root.text(&format!("{dir}/{state}/{f}"));
        let latency: u64 = read("latency").and_then(|l| l.parse().ok()).unwrap_or(0);
        let disabled = read("disable").as_deref() == Some("1");
        if latency > 10 && !disabled {
            deep.push(format!(
                "{} ({latency} us)",
                read("name").unwrap_or_default()
            ));
        }
    }
    let holders = dma_latency_holders(cx);
    let held = match &holders {
        Ok(h) if !h.is_empty() => format!("; /dev/cpu_dma_latency held by {}", named(h)),
        Ok(_) => "; /dev/cpu_dma_latency not held".to_string(),
        Err(()) => "; who holds /dev/cpu_dma_latency: unknown (needs root)".to_string(),
    };
    if deep.is_empty() {
        return Finding::new(
            "cstates",
            Verdict::Ok,
            format!("no deep idle state enabled{held}"),
        );
    }
    if matches!(&holders, Ok(h) if !h.is_empty()) {
        return Finding::new(
            "cstates",
            Verdict::Ok,
            format!("deep states {} kept off{held}", named(&deep)),
        );
    }
    Finding::new("cstates", Verdict::Warn, format!("deep idle states enabled: {}{held}", named(&deep)))
        .because("waking from a deep state takes its exit latency, on every event after an idle spell")
        .fix(format!("set loop.host.cpu_dma_latency = true (the engine holds it at 0 while it runs), or disable them (`echo 1 > {dir}/stateN/disable`)"))
}

/// The processes holding `/dev/cpu_dma_latency` open; `Err` when their fds needs root.
fn dma_latency_holders(cx: &Ctx) -> Result<Vec<String>, ()> {
    let mut holders = Vec::new();
    let mut denied = false;
    let procs = cx.root.list("/proc");
    for pid in procs
        .iter()
        .filter(|p| p.chars().all(|c| c.is_ascii_digit()))
        .take(MAX_TASKS)
    {
        let fds = cx.root.list(&format!("/proc/{pid}/fd"));
        if fds.is_empty() && matches!(cx.root.link(&format!("/proc/{pid}/fd/0")), Read::Denied) {
            denied = true;
            continue;
        }
        let holds = fds.iter().take(65_536).any(|fd| {
            cx.root
                .link(&format!("/proc/{pid}/fd/{fd}"))
                .text()
                .as_deref()
                == Some("/dev/cpu_dma_latency")
        });
        if holds {
            let comm = cx
                .root
                .text(&format!("/proc/{pid}/comm"))
                .unwrap_or_default();
            holders.push(format!("{comm} ({pid})"));
        }
    }
    if denied && holders.is_empty() {
        return Err(());
    }
    Ok(holders)
}
