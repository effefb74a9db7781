//! tickloop's host doctor: what on this machine can still reach the engine's core, read from
//! the machine's effective state, with a verdict, the reason and the fix for each knob.
//!
//! It owns the knowledge of Linux hosts the engine runs on (co-located x86, VMs, Raspberry
//! Pi 4 and 5): the checks (`tickloop doctor`), and the readings the runtime's startup shares
//! (RT group scheduling, limits). It reads through a [`Root`], the live machine or a fixture
//! tree, and only reads: nothing here changes the host.

pub mod checks;
pub mod cpulist;
pub mod load;
pub mod machine;
pub mod report;
pub mod root;
pub mod sched;
pub mod system;

pub use machine::Profile;
pub use report::{Finding, Report, Verdict};
pub use root::{Read, Root};

/// Examine the machine `root` stands for, for an engine on `core`, with the thresholds of
/// `profile` (detected from the machine when `None`).
pub fn doctor(root: &Root, core: usize, profile: Option<Profile>) -> Report {
    let profile = profile.unwrap_or_else(|| Profile::detect(root));
    let cx = checks::Ctx {
        root,
        core,
        profile,
        log: root.kernel_log(),
    };
    let mut findings = vec![
        checks::preemption(&cx),
        checks::isolation(&cx),
        checks::nohz_full(&cx),
        checks::rcu_nocbs(&cx),
        load::irqs(&cx),
        load::tasks(&cx),
        load::workqueues(&cx),
        checks::governor(&cx),
        load::cstates(&cx),
        checks::smt(&cx),
        system::thp(&cx),
        system::ksm(&cx),
        system::numa_balancing(&cx),
        system::swap(&cx),
        system::rt_throttling(&cx),
        system::rt_group(&cx),
    ];
    findings.extend(system::limits(&cx));
    findings.push(system::hugepages(&cx));
    findings.push(checks::clocksource(&cx));
    findings.push(system::timer_slack(&cx));
    findings.extend(system::pi_throttling(&cx));
    Report {
        format: report::FORMAT,
        core,
        root: root.is_root(),
        host: machine::host_info(root, profile),
        findings,
    }
}
