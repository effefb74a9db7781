//! `tickloop doctor` as a user and `ExecStartPre=` run it: on fixture trees of other machines
//! (linux-tuning/fixtures), on this machine, capturing this machine as a fixture, comparing
//! snapshots, and refusing bad input with one clear line.

mod common;
use common::*;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/linux-tuning/fixtures");

fn fixture(name: &str) -> String {
    format!("{FIXTURES}/{name}")
}

const IDS: [&str; 21] = [
    "preemption",
    "isolation",
    "nohz_full",
    "rcu_nocbs",
    "irqs",
    "tasks",
    "workqueues",
    "governor",
    "cstates",
    "smt",
    "thp",
    "ksm",
    "numa_balancing",
    "swap",
    "rt_throttling",
    "rt_group",
    "memlock",
    "rtprio",
    "hugepages",
    "clocksource",
    "timer_slack",
];

#[test]
fn the_exit_status_is_the_worst_verdict_for_execstartpre() {
    let colo = tickloop(&["doctor", "--root", &fixture("x86-colo"), "--core", "3"]);
    let out = stdout(&colo);
    assert_eq!(colo.status.code(), Some(2), "{out}");
    assert!(out.contains("fail    irqs"), "{out}");
    assert!(out.contains("fix: move them off"), "{out}");
    let pi5 = tickloop(&["doctor", "--root", &fixture("pi5"), "--core", "3"]);
    assert_eq!(pi5.status.code(), Some(1), "{}", stdout(&pi5));
    assert!(stdout(&pi5).contains("profile pi5"));
    // Isolated and tickless: a core of the tuned host with nothing else wrong is ok.
    let json = tickloop(&[
        "doctor",
        "--root",
        &fixture("x86-colo"),
        "--core",
        "5",
        "--json",
    ]);
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(json.status.code(), Some(0), "{report}");
    assert_eq!(report["core"], 5);
    let findings = report["findings"].as_array().unwrap();
    assert!(findings.iter().all(|f| f["verdict"] == "ok"), "{report}");
}

#[test]
fn on_this_machine_every_knob_has_a_verdict_and_a_capture_reads_back_alike() {
    let dir = tempdir();
    let capture = dir.join("fixture");
    let live = tickloop(&[
        "doctor",
        "--core",
        "0",
        "--json",
        "--capture",
        capture.to_str().unwrap(),
    ]);
    assert!(matches!(live.status.code(), Some(0..=2)), "{live:?}");
    let live: serde_json::Value = serde_json::from_slice(&live.stdout).unwrap();
    let ids: Vec<&str> = live["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, IDS, "{live}");
    // The capture keeps the kernel's threads only: no process of a user goes in a fixture.
    for entry in std::fs::read_dir(capture.join("proc")).unwrap() {
        let path = entry.unwrap().path();
        let stat = path.join("stat");
        if let Ok(stat) = std::fs::read_to_string(&stat) {
            let flags: u64 = stat
                .rsplit_once(')')
                .unwrap()
                .1
                .split_whitespace()
                .nth(6)
                .unwrap()
                .parse()
                .unwrap();
            assert!(flags & 0x0020_0000 != 0, "{}: {stat}", path.display());
        }
    }
    // Read back, the capture gives this machine's verdicts (but for the tasks left out).
    let back = tickloop(&[
        "doctor",
        "--root",
        capture.to_str().unwrap(),
        "--core",
        "0",
        "--json",
    ]);
    let back: serde_json::Value = serde_json::from_slice(&back.stdout).unwrap();
    for (a, b) in live["findings"]
        .as_array()
        .unwrap()
        .iter()
        .zip(back["findings"].as_array().unwrap())
    {
        if a["id"] != "tasks" && a["id"] != "cstates" {
            assert_eq!(a["verdict"], b["verdict"], "{a} / {b}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_snapshot_diff_says_what_moved() {
    let dir = tempdir();
    let snap = |name: &str| {
        let o = tickloop(&["doctor", "--root", &fixture(name), "--core", "3", "--json"]);
        let path = dir.join(format!("{name}.json"));
        std::fs::write(&path, &o.stdout).unwrap();
        path.to_str().unwrap().to_string()
    };
    let (pi4, pi5) = (snap("pi4"), snap("pi5"));
    let same = tickloop(&["doctor", "diff", &pi4, &pi4]);
    assert_eq!(same.status.code(), Some(0));
    assert!(stdout(&same).starts_with("no change"), "{}", stdout(&same));
    let moved = tickloop(&["doctor", "diff", &pi4, &pi5]);
    let out = stdout(&moved);
    assert_eq!(moved.status.code(), Some(1), "{out}");
    assert!(
        out.contains("kernel: 6.6.51+rpt-rpi-v8 -> 6.6.51+rpt-rpi-2712"),
        "{out}"
    );
    assert!(
        out.contains("isolation: ok isolated cores: 3 -> warn isolated cores: none"),
        "{out}"
    );
    assert!(out.contains("hugepages: ok size 2048 kB"), "{out}");
    // Not a snapshot: named.
    let err = clear_failure(&tickloop(&["doctor", "diff", &pi4, FIXTURES]));
    assert!(err.contains("cannot read"), "{err}");
    let junk = dir.join("junk.json");
    std::fs::write(&junk, "{}").unwrap();
    let err = clear_failure(&tickloop(&["doctor", "diff", &pi4, junk.to_str().unwrap()]));
    assert!(err.contains("is not a doctor snapshot"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_cores_roots_and_configs_are_one_line_errors() {
    let err = clear_failure(&tickloop(&[
        "doctor",
        "--root",
        "/nonexistent-root",
        "--core",
        "1",
    ]));
    assert!(err.contains("not a directory"), "{err}");
    let err = clear_failure(&tickloop(&[
        "doctor",
        "--root",
        &fixture("pi4"),
        "--core",
        "9",
    ]));
    assert!(
        err.contains("core 9 is not online here (online: 0-3)"),
        "{err}"
    );
    let dir = tempdir();
    let config = dir.join("bot.toml");
    std::fs::write(&config, "[engine]\naccount = \"doctor\"\n").unwrap();
    let err = clear_failure(&tickloop(&["doctor", "--config", config.to_str().unwrap()]));
    assert!(err.contains("sets no loop.host.core"), "{err}");
    std::fs::write(
        &config,
        "[engine]\naccount = \"doctor\"\n[loop.host]\ncore = 1\n",
    )
    .unwrap();
    let pi4 = tickloop(&[
        "doctor",
        "--config",
        config.to_str().unwrap(),
        "--root",
        &fixture("pi4"),
    ]);
    assert!(
        stdout(&pi4).starts_with("tickloop doctor: core 1 of 4 on Raspberry Pi 4"),
        "{}",
        stdout(&pi4)
    );
    let bad = tickloop(&["doctor", "--profile", "mainframe"]);
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        !bad.status.success() && err.contains("use auto, x86-colo, vm, pi4 or pi5"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempdir() -> std::path::PathBuf {
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("tickloop-doctor-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn a_pinned_engine_logs_the_doctors_verdict_and_records_it_in_its_status_file() {
    let ring = Name::new();
    create_ring(&ring, 1 << 12);
    let dir = tempdir();
    let status = dir.join("status.json");
    let o = tickloop(&[
        "run",
        "--ring",
        &ring.0,
        "--core",
        "0",
        "--status",
        status.to_str().unwrap(),
        "--duration",
        "0.3",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("host doctor, core 0 ("), "{err}");
    assert!(err.contains("`tickloop doctor --core 0` says why"), "{err}");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&status).unwrap()).unwrap();
    let d = &doc["host_doctor"];
    assert_eq!(d["core"], 0, "{doc}");
    assert!(
        ["ok", "warn", "fail"].contains(&d["verdict"].as_str().unwrap()),
        "{d}"
    );
    let digest = d["digest"].as_str().unwrap();
    assert!(digest.starts_with("0x") && digest.len() == 18, "{d}");
    // Unpinned, or with doctor = "off" in a config, it does not run.
    let o = tickloop(&["run", "--ring", &ring.0, "--duration", "0.1"]);
    assert!(!String::from_utf8_lossy(&o.stderr).contains("host doctor"));
    let _ = std::fs::remove_dir_all(&dir);
}
