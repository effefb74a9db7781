//! The doctor's checks of the kernel and the core: preemption, isolation, the tick, RCU,
//! the frequency governor, C-states, the SMT sibling, the clocksource.
//!
//! Each reads the machine's effective state through [`Root`] (what the kernel did, not what
//! was asked of it) and gives one [`Finding`]. A check never changes the host, never guesses
//! what it could not read (it says `unknown`), and never panics on a file it does not expect.

use crate::cpulist;
use crate::machine::{cmdline_cpus, config_has, log_lines, Profile};
use crate::report::{Finding, Verdict};
use crate::root::{Read, Root};

/// What every check is given.
pub struct Ctx<'a> {
    pub root: &'a Root,
    pub core: usize,
    pub profile: Profile,
    /// The kernel log, read once.
    pub log: Read,
}

impl Ctx<'_> {
    /// A knob the profile requires is missing: a failure where it is strict, else a warning.
    pub fn missing(&self) -> Verdict {
        if self.profile.strict() {
            Verdict::Fail
        } else {
            Verdict::Warn
        }
    }

    pub fn cpu(&self, file: &str) -> String {
        format!("/sys/devices/system/cpu/cpu{}/{file}", self.core)
    }

    fn cpus_file(&self, path: &str) -> Option<Vec<usize>> {
        self.root.text(path).and_then(|t| cpulist::parse(&t))
    }

    fn log_text(&self) -> Option<&str> {
        match &self.log {
            Read::Text(t) => Some(t),
            _ => None,
        }
    }

    fn boot(&self, param: &str) -> String {
        format!(
            "add {param} to the kernel command line ({})",
            self.profile.cmdline_file()
        )
    }
}

/// The preemption model: PREEMPT_RT, or how far the kernel preempts.
pub fn preemption(cx: &Ctx) -> Finding {
    let rt_fix = if cx.profile.is_pi() {
        "boot Raspberry Pi OS's PREEMPT_RT kernel (the one whose release ends in -v8-rt) for the tail latency"
    } else {
        "boot a PREEMPT_RT kernel (Debian: linux-image-rt-amd64) for the tail latency"
    };
    let (model, source) = preempt_model(cx);
    let state = format!("{model} ({source})");
    match model.as_str() {
        "PREEMPT_RT" => Finding::new("preemption", Verdict::Ok, model),
        "full" | "lazy" => Finding::new("preemption", Verdict::Warn, state)
            .because("a fully preemptible kernel still has non-preemptible sections: the tail (p99.99, max) is longer than under PREEMPT_RT")
            .fix(rt_fix),
        "dynamic" => Finding::new("preemption", Verdict::Warn, state)
            .because("PREEMPT_DYNAMIC kernel whose model in effect cannot be read (mount debugfs to read /sys/kernel/debug/sched/preempt): it may be voluntary")
            .boot_fix(format!("{}, or {rt_fix}", cx.boot("preempt=full"))),
        _ => Finding::new("preemption", Verdict::Warn, state)
            .because("the kernel runs long stretches without preempting: a task woken on the core waits for them")
            .boot_fix(format!("{} (a PREEMPT_DYNAMIC kernel), or {rt_fix}", cx.boot("preempt=full"))),
    }
}

/// The model in effect and where that was read.
fn preempt_model(cx: &Ctx) -> (String, &'static str) {
    let version = cx.root.text("/proc/version").unwrap_or_default();
    if cx.root.text("/sys/kernel/realtime").as_deref() == Some("1")
        || version.contains("PREEMPT_RT")
    {
        return ("PREEMPT_RT".into(), "the kernel");
    }
    // With PREEMPT_DYNAMIC the model in effect is the one in parentheses.
    if let Read::Text(t) = cx.root.read("/sys/kernel/debug/sched/preempt") {
        if let Some(w) = t.split_whitespace().find(|w| w.starts_with('(')) {
            return (
                w.trim_matches(|c| c == '(' || c == ')').to_string(),
                "debugfs",
            );
        }
    }
    let dynamic = version.contains("PREEMPT_DYNAMIC");
    if let Some(m) = crate::machine::cmdline_param(cx.root, "preempt").filter(|_| dynamic) {
        return (m, "preempt= on the command line");
    }
    let config = [
        ("CONFIG_PREEMPT_RT", "PREEMPT_RT"),
        ("CONFIG_PREEMPT_LAZY", "lazy"),
        ("CONFIG_PREEMPT", "full"),
        ("CONFIG_PREEMPT_VOLUNTARY", "voluntary"),
        ("CONFIG_PREEMPT_NONE", "none"),
    ]
    .into_iter()
    .find(|(option, _)| config_has(cx.root, option) == Some(true));
    match config {
        Some((_, m)) => (m.into(), "the kernel config"),
        None if dynamic => ("dynamic".into(), "/proc/version"),
        None if version.contains(" PREEMPT ") => ("full".into(), "/proc/version"),
        None => ("voluntary or none".into(), "/proc/version"),
    }
}

/// Whether the core is isolated from the scheduler's load balancing (`isolcpus`).
pub fn isolation(cx: &Ctx) -> Finding {
    let isolated = cx
        .cpus_file("/sys/devices/system/cpu/isolated")
        .unwrap_or_default();
    let asked = cmdline_cpus(cx.root, "isolcpus").unwrap_or_default();
    let state = format!("isolated cores: {}", cpulist::format(&isolated));
    if isolated.contains(&cx.core) {
        return Finding::new("isolation", Verdict::Ok, state);
    }
    if asked.contains(&cx.core) {
        return Finding::new("isolation", Verdict::Fail, format!("{state}; isolcpus asks for {}", cpulist::format(&asked)))
            .because("isolcpus= is on the command line but the kernel did not isolate the core (a typo, or a boot entry that is not the one in use)")
            .boot_fix("check /proc/cmdline against the boot entry, and that the core exists");
    }
    Finding::new("isolation", cx.missing(), state)
        .because(format!("core {} is not isolated: the scheduler may put any task on it", cx.core))
        .boot_fix(format!(
            "{} (or, without a reboot, keep every other service off it: CPUAffinity= of the other cores in /etc/systemd/system.conf.d/)",
            cx.boot(&format!("isolcpus={}", cx.core))
        ))
}

/// Whether the scheduler tick stops on the core while one task runs (`nohz_full`).
pub fn nohz_full(cx: &Ctx) -> Finding {
    let full = cx
        .cpus_file("/sys/devices/system/cpu/nohz_full")
        .unwrap_or_default();
    let asked = cmdline_cpus(cx.root, "nohz_full").unwrap_or_default();
    let state = format!("tickless cores: {}", cpulist::format(&full));
    if full.contains(&cx.core) {
        return Finding::new("nohz_full", Verdict::Ok, state);
    }
    if asked.contains(&cx.core) {
        let said = cx
            .log_text()
            .map(|log| log_lines(log, "nohz unsupported"))
            .unwrap_or_default();
        let built = config_has(cx.root, "CONFIG_NO_HZ_FULL");
        let why = match (said.first(), built) {
            (Some(line), _) => format!("the kernel refused it at boot: \"{line}\""),
            (None, Some(false)) => "the kernel is built without CONFIG_NO_HZ_FULL".to_string(),
            _ => "the kernel did not apply it".to_string(),
        };
        return Finding::new("nohz_full", Verdict::Fail, format!("{state}; nohz_full asks for {}", cpulist::format(&asked)))
            .because(format!("requested but not in effect: {why}"))
            .boot_fix("a kernel built with CONFIG_NO_HZ_FULL (the stock Raspberry Pi kernels are not): until then drop nohz_full=, the tick stays");
    }
    Finding::new("nohz_full", Verdict::Warn, state)
        .because(format!("the tick interrupts core {} every jiffy (CONFIG_HZ times a second) while the engine runs", cx.core))
        .boot_fix(cx.boot(&format!("nohz_full={}", cx.core)))
}

/// Whether RCU callbacks run elsewhere than the core (`rcu_nocbs`, implied by `nohz_full`).
pub fn rcu_nocbs(cx: &Ctx) -> Finding {
    let asked = cmdline_cpus(cx.root, "rcu_nocbs").unwrap_or_default();
    let full = cx
        .cpus_file("/sys/devices/system/cpu/nohz_full")
        .unwrap_or_default();
    if full.contains(&cx.core) {
        return Finding::new("rcu_nocbs", Verdict::Ok, "offloaded (nohz_full implies it)");
    }
    let Some(log) = cx.log_text() else {
        if asked.contains(&cx.core) {
            return Finding::needs_root(
                "rcu_nocbs",
                "the kernel log (whether rcu_nocbs= took effect)",
            );
        }
        return rcu_not_asked(cx);
    };
    if let Some(line) = log_lines(log, "Unknown kernel command line parameters")
        .into_iter()
        .find(|l| l.contains("rcu_nocbs"))
    {
        return Finding::new(
            "rcu_nocbs",
            Verdict::Fail,
            "asked for, unknown to this kernel",
        )
        .because(format!(
            "the kernel flagged it at boot: \"{line}\" (built without CONFIG_RCU_NOCB_CPU)"
        ))
        .boot_fix("a kernel built with CONFIG_RCU_NOCB_CPU; until then drop rcu_nocbs=");
    }
    let offloaded = log_lines(log, "Offload RCU callbacks from CPUs:")
        .iter()
        .filter_map(|l| l.rsplit(':').next())
        .filter_map(|l| cpulist::parse(l.trim().trim_end_matches('.')))
        .flatten()
        .collect::<Vec<_>>();
    if offloaded.contains(&cx.core) {
        return Finding::new(
            "rcu_nocbs",
            Verdict::Ok,
            format!("offloaded from {}", cpulist::format(&offloaded)),
        );
    }
    if asked.contains(&cx.core) {
        return Finding::new("rcu_nocbs", Verdict::Fail, "asked for, not in effect")
            .because("rcu_nocbs= is on the command line but the kernel log does not say it offloaded the core's callbacks")
            .boot_fix("check the kernel's CONFIG_RCU_NOCB_CPU and the command line");
    }
    rcu_not_asked(cx)
}

fn rcu_not_asked(cx: &Ctx) -> Finding {
    Finding::new("rcu_nocbs", Verdict::Warn, "not offloaded")
        .because(format!(
            "RCU callbacks run on core {} in softirq, between the engine's instructions",
            cx.core
        ))
        .boot_fix(cx.boot(&format!("rcu_nocbs={}", cx.core)))
}

/// The frequency governor and the core's clock.
pub fn governor(cx: &Ctx) -> Finding {
    let Some(governor) = cx.root.text(&cx.cpu("cpufreq/scaling_governor")) else {
        return match cx.profile {
            Profile::Vm => Finding::new("governor", Verdict::Ok, "not exposed (the hypervisor sets the clock)"),
            _ => Finding::new("governor", Verdict::Warn, "no cpufreq")
                .because("the kernel exposes no frequency scaling for the core: its clock cannot be read or pinned")
                .fix("load the platform's cpufreq driver (intel_pstate, acpi-cpufreq, cpufreq-dt)"),
        };
    };
    let khz = |f: &str| cx.root.text(&cx.cpu(f)).and_then(|t| t.parse::<u64>().ok());
    let (cur, max) = (
        khz("cpufreq/scaling_cur_freq"),
        khz("cpufreq/cpuinfo_max_freq"),
    );
    let clock = match (cur, max) {
        (Some(c), Some(m)) => format!(" at {} of {} MHz", c / 1000, m / 1000),
        _ => String::new(),
    };
    let state = format!("{governor}{clock}");
    if governor == "performance" {
        return Finding::new("governor", Verdict::Ok, state);
    }
    let pi = if cx.profile.is_pi() {
        " (on a Pi also force_turbo=1 in /boot/firmware/config.txt, with cooling)"
    } else {
        ""
    };
    Finding::new("governor", Verdict::Warn, state)
        .because("the core's clock follows its load: the engine's first events after a quiet spell run slow, and the clock's changes stall the core")
        .fix(format!("set the performance governor (`cpupower frequency-set -g performance`, or `echo performance > {}`){pi}", cx.cpu("cpufreq/scaling_governor")))
}

/// The SMT sibling that shares the core's pipeline and caches.
pub fn smt(cx: &Ctx) -> Finding {
    let siblings = cx
        .cpus_file(&cx.cpu("topology/thread_siblings_list"))
        .unwrap_or_else(|| vec![cx.core]);
    let others: Vec<usize> = siblings.into_iter().filter(|&c| c != cx.core).collect();
    if others.is_empty() {
        return Finding::new("smt", Verdict::Ok, "no sibling");
    }
    let online = crate::machine::online(cx.root);
    let live: Vec<usize> = others
        .iter()
        .copied()
        .filter(|c| online.contains(c))
        .collect();
    if live.is_empty() {
        return Finding::new(
            "smt",
            Verdict::Ok,
            format!("sibling {} offline", cpulist::format(&others)),
        );
    }
    let isolated = cx
        .cpus_file("/sys/devices/system/cpu/isolated")
        .unwrap_or_default();
    let state = format!("sibling {} online", cpulist::format(&live));
    if live.iter().all(|c| isolated.contains(c)) {
        return Finding::new("smt", Verdict::Warn, format!("{state}, isolated"))
            .because("an isolated sibling is quiet only while nothing is put on it")
            .fix(format!("keep core {} idle, or take it offline (`echo 0 > /sys/devices/system/cpu/cpu{}/online`)", cpulist::format(&live), live[0]));
    }
    Finding::new("smt", cx.missing(), state)
        .because("whatever runs on the sibling shares the core's execution units and caches")
        .fix(format!(
            "isolate the sibling too, or take it offline (`echo 0 > /sys/devices/system/cpu/cpu{}/online`), or disable SMT (`nosmt`)",
            live[0]
        ))
}

/// The clocksource behind the loop's clock reads.
pub fn clocksource(cx: &Ctx) -> Finding {
    let dir = "/sys/devices/system/clocksource/clocksource0";
    let Some(current) = cx.root.text(&format!("{dir}/current_clocksource")) else {
        return Finding::new("clocksource", Verdict::Unknown, "not exposed")
            .because("the kernel does not say which clocksource it uses");
    };
    match current.as_str() {
        "tsc" | "arch_sys_counter" => Finding::new("clocksource", Verdict::Ok, current),
        "kvm-clock" | "hyperv_clocksource_tsc_page" | "xen" if cx.profile == Profile::Vm => {
            Finding::new(
                "clocksource",
                Verdict::Ok,
                format!("{current} (read in user space)"),
            )
        }
        _ => {
            let available = cx
                .root
                .text(&format!("{dir}/available_clocksource"))
                .unwrap_or_default();
            Finding::new("clocksource", Verdict::Fail, format!("{current} (available: {available})"))
                .because("each clock read is a system call of a microsecond or more, not a few nanoseconds in user space")
                .boot_fix(if available.contains("tsc") {
                    "clocksource=tsc tsc=reliable on the kernel command line (after checking the TSC is invariant: constant_tsc nonstop_tsc in /proc/cpuinfo)".to_string()
                } else {
                    "a machine whose CPU counter the kernel trusts".to_string()
                })
        }
    }
}
