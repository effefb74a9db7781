//! The doctor on fixture trees of machines this one is not (linux-tuning/fixtures, written by
//! make_fixtures.py; `vm` captured from a development VM with `tickloop doctor --capture`):
//! each gives the verdicts a person who knows the machine would.

use tickloop_linux_tuning::{doctor, Profile, Report, Root, Verdict};

fn fixture(name: &str) -> Root {
    Root::at(format!("{}/fixtures/{name}", env!("CARGO_MANIFEST_DIR")))
}

/// Each finding's verdict, by id.
fn verdicts(report: &Report) -> Vec<(&str, Verdict)> {
    report
        .findings
        .iter()
        .map(|f| (f.id.as_str(), f.verdict))
        .collect()
}

fn verdict(report: &Report, id: &str) -> Verdict {
    report
        .finding(id)
        .unwrap_or_else(|| panic!("no finding {id}: {}", report.render()))
        .verdict
}

#[test]
fn a_pi4_on_its_stock_kernel_isolates_the_core_but_refuses_the_tick_and_rcu_offload() {
    let root = fixture("pi4");
    assert_eq!(Profile::detect(&root), Profile::Pi4);
    let r = doctor(&root, 3, None);
    let text = r.render();
    assert_eq!(r.host.profile, "pi4");
    assert_eq!(r.host.arch, "aarch64");
    assert_eq!(verdict(&r, "isolation"), Verdict::Ok, "{text}");
    // nohz_full= is on the command line; the kernel said why it did not apply it.
    let nohz = r.finding("nohz_full").unwrap();
    assert_eq!(nohz.verdict, Verdict::Fail, "{text}");
    assert!(nohz.reason.contains("nohz unsupported"), "{text}");
    assert!(nohz.reboot);
    let rcu = r.finding("rcu_nocbs").unwrap();
    assert_eq!(rcu.verdict, Verdict::Fail, "{text}");
    assert!(
        rcu.reason
            .contains("Unknown kernel command line parameters"),
        "{text}"
    );
    // Not PREEMPT_RT: the Pi's RT kernel is the fix for the tail.
    let preempt = r.finding("preemption").unwrap();
    assert_eq!(preempt.verdict, Verdict::Warn);
    assert!(preempt.fix.contains("-v8-rt"), "{text}");
    // The kernel's unbound threads may still run on the isolated core (only nohz_full moves
    // them); the per-CPU ones are counted apart.
    let tasks = r.finding("tasks").unwrap();
    assert_eq!(tasks.verdict, Verdict::Warn);
    assert!(
        tasks.state.starts_with("2 tasks") && tasks.state.contains("3 per-CPU"),
        "{text}"
    );
    assert!(!tasks.state.contains("sshd"), "{text}");
    assert_eq!(verdict(&r, "irqs"), Verdict::Ok, "{text}");
    assert_eq!(verdict(&r, "governor"), Verdict::Warn, "{text}");
    assert_eq!(verdict(&r, "memlock"), Verdict::Warn, "{text}");
    // Under-voltage and throttling since boot, from the firmware's flags.
    let throttle = r.finding("pi_throttling").unwrap();
    assert_eq!(throttle.verdict, Verdict::Warn, "{text}");
    assert!(throttle.state.contains("under-voltage"), "{text}");
    assert!(throttle.fix.contains("power supply"), "{text}");
    assert_eq!(r.exit_code(), 2);
}

#[test]
fn a_pi5_reads_its_16k_page_kernels_hugepage_size_and_its_temperature() {
    let root = fixture("pi5");
    assert_eq!(Profile::detect(&root), Profile::Pi5);
    let r = doctor(&root, 3, None);
    let text = r.render();
    // Never assumed: 32 MiB PMD pages on the 16K-page kernel.
    assert!(
        r.finding("hugepages").unwrap().state.contains("32768 kB"),
        "{text}"
    );
    assert_eq!(verdict(&r, "isolation"), Verdict::Warn, "{text}");
    assert_eq!(verdict(&r, "nohz_full"), Verdict::Warn, "{text}");
    let tasks = r.finding("tasks").unwrap();
    assert!(
        tasks.state.contains("sshd") && tasks.state.contains("systemd"),
        "{text}"
    );
    let throttle = r.finding("pi_throttling").unwrap();
    assert_eq!(throttle.verdict, Verdict::Ok, "{text}");
    assert!(throttle.state.contains("61.4 C"), "{text}");
    assert_eq!(r.exit_code(), 1, "warnings only: {text}");
}

#[test]
fn a_tuned_x86_host_passes_but_for_the_one_nic_queue_left_on_the_core() {
    let root = fixture("x86-colo");
    assert_eq!(Profile::detect(&root), Profile::X86Colo);
    let r = doctor(&root, 3, None);
    let text = r.render();
    let bad: Vec<_> = verdicts(&r)
        .into_iter()
        .filter(|(_, v)| *v != Verdict::Ok)
        .collect();
    assert_eq!(bad, [("irqs", Verdict::Fail)], "{text}");
    assert!(r
        .finding("irqs")
        .unwrap()
        .state
        .contains("i40e-eth2-TxRx-3"));
    assert_eq!(r.exit_code(), 2);
    // A core that is not isolated on the same host: a failure on this profile.
    let r = doctor(&root, 1, None);
    assert_eq!(verdict(&r, "isolation"), Verdict::Fail, "{}", r.render());
    assert_eq!(verdict(&r, "tasks"), Verdict::Fail, "{}", r.render());
    // The same machine judged as a VM: what is missing is a warning there.
    let r = doctor(&root, 1, Some(Profile::Vm));
    assert_eq!(verdict(&r, "isolation"), Verdict::Warn, "{}", r.render());
}

#[test]
fn the_vm_fixture_is_a_vm_whose_core_is_shared_with_everything() {
    let root = fixture("vm");
    assert_eq!(Profile::detect(&root), Profile::Vm);
    let r = doctor(&root, 1, None);
    let text = r.render();
    for id in ["isolation", "irqs", "tasks", "workqueues", "nohz_full"] {
        assert_eq!(verdict(&r, id), Verdict::Warn, "{id}: {text}");
    }
    // No cpufreq in a guest: the hypervisor's, not a fault of the guest.
    assert_eq!(verdict(&r, "governor"), Verdict::Ok, "{text}");
    assert_eq!(r.worst(), Verdict::Warn);
}

#[test]
fn without_root_what_only_root_may_read_is_unknown_and_the_rest_stands() {
    let as_root = doctor(&fixture("pi4"), 3, None);
    let r = doctor(&fixture("pi4").as_user(), 3, None);
    let text = r.render();
    assert!(!r.root);
    assert!(text.contains("not root"), "{text}");
    // Whether rcu_nocbs= took effect is only in the kernel log (dmesg_restrict = 1).
    let rcu = r.finding("rcu_nocbs").unwrap();
    assert_eq!(
        (rcu.verdict, rcu.state.as_str()),
        (Verdict::Unknown, "unknown (needs root)"),
        "{text}"
    );
    assert!(r
        .finding("cstates")
        .unwrap()
        .state
        .contains("unknown (needs root)"));
    // nohz_full still fails: the kernel config says why without the log.
    let nohz = r.finding("nohz_full").unwrap();
    assert_eq!(nohz.verdict, Verdict::Fail, "{text}");
    assert!(nohz.reason.contains("CONFIG_NO_HZ_FULL"), "{text}");
    // Every other finding is as root has it.
    for f in &r.findings {
        if !["rcu_nocbs", "cstates", "nohz_full"].contains(&f.id.as_str()) {
            assert_eq!(Some(f), as_root.finding(&f.id), "{text}");
        }
    }
}

#[test]
fn the_report_is_a_json_snapshot_that_reads_back() {
    let r = doctor(&fixture("x86-colo"), 3, None);
    let json = serde_json::to_string(&r).unwrap();
    let back: Report = serde_json::from_str(&json).unwrap();
    assert_eq!(back, r);
    assert_eq!(back.format, 1);
}
