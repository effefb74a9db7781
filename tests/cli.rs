//! Whole-program tests of the `tickloop` command line: real processes, real /dev/shm rings,
//! real signals. Each failure a user can cause must exit non-zero with one clear line.

use std::time::{Duration, Instant};

mod common;
use common::*;

#[test]
fn ring_create_info_rm() {
    let name = Name::new();
    let o = tickloop(&[
        "ring",
        "create",
        "--ring",
        &name.0,
        "--slots",
        "4096",
        "--symbols",
        "16",
    ]);
    assert!(o.status.success(), "{o:?}");
    assert!(stdout(&o).contains("4096 slots"));
    let again = tickloop(&["ring", "create", "--ring", &name.0]);
    assert!(clear_failure(&again).contains("already exists"));

    let o = tickloop(&["ring", "info", "--ring", &name.0, "--json"]);
    let info: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(info["slots"], 4096);
    assert_eq!(info["symbol_capacity"], 16);
    assert_eq!(info["layout"], "1.1");
    assert_eq!(info["mode"], "600");
    assert_eq!(info["write_seq"], 0);
    assert_eq!(info["writer"]["epoch"], 0);
    let text = stdout(&tickloop(&[
        "ring",
        "info",
        "--ring",
        &name.path().display().to_string(),
    ]));
    assert!(
        text.contains("write_seq 0") && text.contains("writer    none yet"),
        "{text}"
    );

    assert!(tickloop(&["ring", "rm", "--ring", &name.0])
        .status
        .success());
    assert!(!name.path().exists());
    assert!(clear_failure(&tickloop(&["ring", "info", "--ring", &name.0])).contains("not found"));
}

#[test]
fn feed_and_verifying_tail_in_two_processes_lose_nothing() {
    let name = Name::new();
    assert!(
        tickloop(&["ring", "create", "--ring", &name.0, "--slots", "1048576"])
            .status
            .success()
    );
    let tail = spawn(&[
        "ring",
        "tail",
        "--ring",
        &name.0,
        "--count",
        "2000000",
        "--verify",
        "--idle-exit",
        "30",
    ]);
    wait_for_reader(&name);
    let feed = tickloop(&[
        "feed",
        "synthetic",
        "--ring",
        &name.0,
        "--count",
        "2000000",
        "--rate",
        "2000000",
        "--symbols",
        "16",
        "--seed",
        "7",
    ]);
    assert!(feed.status.success(), "{feed:?}");
    let o = tail.wait_with_output().unwrap();
    assert!(o.status.success(), "{o:?}");
    let s = summary(&o);
    assert_eq!(
        s,
        serde_json::json!({"received": 2000000, "lost": 0, "duplicates": 0, "torn": 0, "overruns": 0})
    );
    let info: serde_json::Value =
        serde_json::from_slice(&tickloop(&["ring", "info", "--ring", &name.0, "--json"]).stdout)
            .unwrap();
    assert_eq!(info["write_seq"], 2000000);
    assert_eq!(info["symbols"], 16);
    assert_eq!(info["writer"]["alive"], false);
}

#[test]
fn a_second_writer_is_refused_with_the_holder_named() {
    let name = Name::new();
    let mut first = spawn(&["feed", "synthetic", "--ring", &name.0, "--rate", "1000"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !name.path().exists()
        || !stdout(&tickloop(&["ring", "info", "--ring", &name.0])).contains("running")
    {
        assert!(Instant::now() < deadline, "first writer never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let second = tickloop(&["feed", "synthetic", "--ring", &name.0, "--count", "10"]);
    let err = clear_failure(&second);
    assert!(
        err.contains(&format!("pid {}", first.id())) && err.contains("kill"),
        "{err}"
    );
    let rm = tickloop(&["ring", "rm", "--ring", &name.0]);
    assert!(clear_failure(&rm).contains("already has a writer"));
    // SIGTERM stops the feed gracefully.
    // SAFETY: our own child.
    unsafe { libc::kill(first.id() as i32, libc::SIGTERM) };
    let status = first.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(tickloop(&["ring", "rm", "--ring", &name.0])
        .status
        .success());
}

#[test]
fn bad_rings_and_bad_arguments_are_one_line_errors() {
    let junk = Name::new();
    std::fs::write(junk.path(), vec![7u8; 10_000]).unwrap();
    for cmd in [
        &["ring", "info", "--ring"][..],
        &["ring", "tail", "--ring"][..],
        &["feed", "synthetic", "--count", "1", "--ring"][..],
    ] {
        let mut args = cmd.to_vec();
        args.push(&junk.0);
        assert!(
            clear_failure(&tickloop(&args)).contains("is not a tickloop ring"),
            "{args:?}"
        );
    }
    let rm = tickloop(&["ring", "rm", "--ring", &junk.0]);
    assert!(clear_failure(&rm).contains("is not a tickloop ring"));
    assert!(junk.path().exists(), "rm refuses a file that is not a ring");

    let old = Name::new();
    assert!(
        tickloop(&["ring", "create", "--ring", &old.0, "--slots", "64"])
            .status
            .success()
    );
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(old.path())
            .unwrap();
        f.write_at(&9u16.to_le_bytes(), 8).unwrap();
    }
    assert!(clear_failure(&tickloop(&["ring", "tail", "--ring", &old.0])).contains("layout 9.1"));
    let short = Name::new();
    assert!(
        tickloop(&["ring", "create", "--ring", &short.0, "--slots", "1024"])
            .status
            .success()
    );
    std::fs::OpenOptions::new()
        .write(true)
        .open(short.path())
        .unwrap()
        .set_len(9000)
        .unwrap();
    assert!(clear_failure(&tickloop(&["ring", "info", "--ring", &short.0])).contains("truncated"));
    assert!(
        tickloop(&["ring", "rm", "--ring", &short.0])
            .status
            .success(),
        "a damaged ring can be removed"
    );

    let bad = Name::new();
    assert!(clear_failure(&tickloop(&[
        "ring", "create", "--ring", &bad.0, "--slots", "1000"
    ]))
    .contains("power of two"));
    assert!(
        clear_failure(&tickloop(&["ring", "create", "--ring", ".hidden"])).contains("reserved")
    );
    assert!(clear_failure(&tickloop(&[
        "ring",
        "create",
        "--ring",
        "/nonexistent-dir/x"
    ]))
    .contains("/nonexistent-dir/x"));
    // Usage errors come from the argument parser: non-zero, no panic.
    let o = tickloop(&["ring", "create", "--ring", &bad.0, "--mode", "999"]);
    assert!(!o.status.success() && !String::from_utf8_lossy(&o.stderr).contains("panicked"));
}

#[test]
fn creating_on_a_full_dev_shm_fails_at_creation() {
    let Some(fs) = SmallTmpfs::mount("creating_on_a_full_dev_shm_fails_at_creation", "2m") else {
        return;
    };
    let ring = fs.0.join("big").display().to_string();
    let o = tickloop(&["ring", "create", "--ring", &ring, "--slots", "1048576"]);
    let feed = tickloop(&[
        "feed",
        "synthetic",
        "--ring",
        &ring,
        "--count",
        "1",
        "--slots",
        "1048576",
    ]);
    let left = std::fs::read_dir(&fs.0).unwrap().count();
    drop(fs);
    let err = clear_failure(&o);
    assert!(
        err.contains("not enough space") && err.contains("64.0 MiB"),
        "{err}"
    );
    assert!(clear_failure(&feed).contains("not enough space"));
    assert_eq!(left, 0, "nothing left behind");
}

#[test]
fn tail_stops_on_sigint_and_still_reports() {
    let name = Name::new();
    assert!(tickloop(&["ring", "create", "--ring", &name.0])
        .status
        .success());
    let tail = spawn(&["ring", "tail", "--ring", &name.0, "--verify"]);
    wait_for_reader(&name);
    assert!(tickloop(&[
        "feed",
        "synthetic",
        "--ring",
        &name.0,
        "--count",
        "1000",
        "--rate",
        "100000"
    ])
    .status
    .success());
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: our own child.
    unsafe { libc::kill(tail.id() as i32, libc::SIGINT) };
    let o = tail.wait_with_output().unwrap();
    assert!(o.status.success(), "{o:?}");
    assert_eq!(summary(&o)["received"], 1000);
}

#[test]
fn ring_demo_runs_with_no_arguments_and_cleans_up() {
    let before = demo_rings();
    let o = tickloop(&["ring", "demo"]);
    let out = stdout(&o);
    assert!(
        o.status.success(),
        "{out} {}",
        String::from_utf8_lossy(&o.stderr)
    );
    // "reader:  5,000,000 received, 0 lost, 0 duplicates, 0 torn, ...": every candle is
    // accounted for (a hypervisor stall of over 30 ms could lap the reader: counted, not lost).
    let line = out.lines().find(|l| l.starts_with("reader:")).expect(&out);
    let numbers: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit() && c != ',')
        .filter_map(|w| w.replace(',', "").parse().ok())
        .collect();
    assert_eq!(numbers[0] + numbers[1], 5_000_000, "{line}");
    assert!(line.contains("0 duplicates, 0 torn"), "{line}");
    assert!(out.contains("latency: publish -> read  p50"), "{out}");
    assert!(out.contains("result:  OK"), "{out}");
    assert_eq!(demo_rings(), before, "the demo ring was removed");
}

fn demo_rings() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir("/dev/shm")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("tickloop-demo-"))
        .collect();
    v.sort();
    v
}

#[test]
fn bench_ring_quick_reports_every_row_as_json() {
    let o = tickloop(&["bench", "ring", "--quick", "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let rows = report["rows"].as_array().unwrap();
    let names: Vec<&str> = rows.iter().map(|r| r["name"].as_str().unwrap()).collect();
    for wanted in [
        "cache-line round trip",
        "tickloop ring one-way",
        "tickloop ring throughput",
        "python ring",
    ] {
        assert!(
            names.iter().any(|n| n.starts_with(wanted)),
            "{wanted} missing from {names:?}"
        );
    }
    for row in &rows[..4] {
        let p50 = row["p50_ns"].as_f64().unwrap();
        assert!(p50 > 0.0 && p50 <= row["max_ns"].as_f64().unwrap(), "{row}");
    }
    // Every peer has a row: numbers, or a note saying why it could not run.
    for peer in [
        "peer: iceoryx2",
        "peer: crossbeam ArrayQueue",
        "peer: rtrb",
        "peer: std mpsc",
        "peer: tokio mpsc",
        "peer: Unix pipe",
        "peer: UDP on loopback",
    ] {
        let row = rows
            .iter()
            .find(|r| r["name"].as_str().unwrap().starts_with(peer))
            .unwrap_or_else(|| panic!("{peer} missing from {names:?}"));
        if row["samples"].as_u64().unwrap() > 0 {
            let q = |k: &str| row[k].as_f64().unwrap_or_else(|| panic!("{k} in {row}"));
            assert!(q("p50_ns") > 0.0 && q("p50_ns") <= q("p99_ns"), "{row}");
            assert!(q("p99_ns") <= q("max_ns"), "{row}");
            assert!(row["note"].as_str().unwrap().contains("lost"), "{row}");
        } else {
            assert!(row["p50_ns"].is_null(), "{row}");
            let note = row["note"].as_str().unwrap();
            assert!(note.starts_with("not measured: "), "{row}");
        }
    }
    let checks = report["checks"].as_array().unwrap();
    for target in ["cache-line one-way limit", "ahead of every peer"] {
        let check = checks
            .iter()
            .find(|c| c["target"].as_str().unwrap().contains(target))
            .unwrap_or_else(|| panic!("no check {target:?} in {checks:?}"));
        assert!(
            check["pass"].is_boolean() || check["pass"].is_null(),
            "{check}"
        );
        assert!(!check["measured"].as_str().unwrap().is_empty(), "{check}");
    }
    assert!(report["machine"]["cpu"].is_string());
    assert!(report["checks"].as_array().unwrap().len() >= 3);
}

#[test]
fn tail_reports_a_ring_removed_under_it() {
    for wait in ["park", "spin"] {
        let name = Name::new();
        assert!(tickloop(&["ring", "create", "--ring", &name.0])
            .status
            .success());
        let tail = spawn(&[
            "ring", "tail", "--ring", &name.0, "--verify", "--wait", wait,
        ]);
        wait_for_reader(&name);
        assert!(tickloop(&["ring", "rm", "--ring", &name.0])
            .status
            .success());
        let started = Instant::now();
        let o = tail.wait_with_output().unwrap();
        assert_eq!(o.status.code(), Some(4), "{wait}: {o:?}");
        assert!(started.elapsed() < Duration::from_secs(20));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("was removed while being read"), "{err}");
        assert_eq!(summary(&o)["received"], 0);
    }
}

#[test]
fn a_feed_with_more_symbols_than_the_ring_holds_is_refused_before_taking_over() {
    let name = Name::new();
    assert!(
        tickloop(&["ring", "create", "--ring", &name.0, "--symbols", "16"])
            .status
            .success()
    );
    let o = tickloop(&[
        "feed",
        "synthetic",
        "--ring",
        &name.0,
        "--symbols",
        "20",
        "--count",
        "1",
    ]);
    assert!(clear_failure(&o).contains("does not fit the symbol table"));
    let info: serde_json::Value =
        serde_json::from_slice(&tickloop(&["ring", "info", "--ring", &name.0, "--json"]).stdout)
            .unwrap();
    assert_eq!(info["writer"]["epoch"], 0, "no take-over happened");
    assert_eq!(info["symbols"], 0, "no symbol was registered");
}

#[test]
fn tickloop_demo_runs_two_engines_to_a_clean_summary() {
    let dir = TempDir::new("demo");
    let files = format!("{}/run", dir.0.display());
    let child = std::process::Command::new(TICKLOOP)
        .args(["demo", "--dir", &files])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let o = child.wait_with_output().unwrap();
    let out = stdout(&o);
    assert!(o.status.success(), "{out}\n{}", clear_failure(&o));
    assert!(out.contains("5000 read, 0 lost"), "{out}");
    assert!(out.contains("100000 read, 0 lost"), "{out}");
    // The EURUSD engine's sma_cross is the backtest's: the same 262 trades (its PnL is the
    // backtest's final cash less 10000).
    assert!(
        out.contains("262 trades closed, realized PnL +40.87"),
        "{out}"
    );
    assert_eq!(out.matches("every decision reproduced").count(), 2, "{out}");
    // The synthetic engine's orders went through the paper adapter, a child process that is
    // gone (and reaped) once the demo has finished.
    let adapter = out
        .split("orders through the paper adapter (pid ")
        .nth(1)
        .unwrap_or_else(|| panic!("no adapter line: {out}"));
    let adapter_pid: i32 = adapter[..adapter.find(',').unwrap()].parse().unwrap();
    assert!(adapter.contains(" 0 failed"), "{out}");
    // SAFETY: kill with signal 0 only asks whether the pid exists.
    assert!(
        unsafe { libc::kill(adapter_pid, 0) } != 0,
        "adapter {adapter_pid} outlived the demo"
    );
    assert!(out.contains("result:  OK, 0 candles lost"), "{out}");
    let prefix = format!("tickloop-demo-{pid}-");
    assert!(
        !demo_rings().iter().any(|r| r.starts_with(&prefix)),
        "the demo's rings were removed"
    );
    for f in ["eurusd.status.json", "synthetic.journal", "eurusd.toml"] {
        assert!(
            std::path::Path::new(&files).join(f).exists(),
            "{f} kept for inspection"
        );
    }
}
