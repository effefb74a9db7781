//! Quick runs of `tickloop bench timers`, `bench loop` and `bench adapter` through the command line:
//! the JSON has every row, the numbers are sane (samples counted, p50 <= p99 <= p99.9 <= max),
//! nothing is lost, and a missing cyclictest gives an explained row, not a failure. They never
//! assert speed: that belongs to the committed reports.

use serde_json::Value;
use std::process::{Command, Output};

const TICKLOOP: &str = env!("CARGO_BIN_EXE_tickloop");

fn tickloop(args: &[&str], path: Option<&std::path::Path>) -> Output {
    let mut command = Command::new(TICKLOOP);
    command.args(args);
    if let Some(path) = path {
        command.env("PATH", path);
    }
    command.output().expect("run tickloop")
}

fn report(o: &Output) -> Value {
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON report ({e}): {} / {stderr}",
            String::from_utf8_lossy(&o.stdout)
        )
    })
}

fn row<'a>(report: &'a Value, prefix: &str) -> &'a Value {
    report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"].as_str().unwrap().starts_with(prefix))
        .unwrap_or_else(|| panic!("no row {prefix:?} in {report}"))
}

/// A measured row: samples counted, percentiles in order, per-round series present.
fn assert_measured(row: &Value) {
    assert!(row["samples"].as_u64().unwrap() > 0, "{row}");
    let q = |k: &str| row[k].as_f64().unwrap_or_else(|| panic!("{k} in {row}"));
    assert!(q("p50_ns") > 0.0, "{row}");
    assert!(q("p50_ns") <= q("p99_ns"), "{row}");
    assert!(q("p99_ns") <= q("p999_ns"), "{row}");
    assert!(q("p999_ns") <= q("max_ns"), "{row}");
    assert!(row["note"].is_string(), "{row}");
}

/// A row that could not be measured says why.
fn assert_explained(row: &Value) {
    assert_eq!(row["samples"], 0, "{row}");
    assert!(row["p99_ns"].is_null(), "{row}");
    assert!(
        row["note"].as_str().unwrap().starts_with("not measured: "),
        "{row}"
    );
}

fn assert_checks(report: &Value, at_least: usize) -> &Vec<Value> {
    let checks = report["checks"].as_array().unwrap();
    assert!(checks.len() >= at_least, "{report}");
    for c in checks {
        assert!(!c["target"].as_str().unwrap().is_empty(), "{c}");
        assert!(!c["measured"].as_str().unwrap().is_empty(), "{c}");
        assert!(c["pass"].is_boolean() || c["pass"].is_null(), "{c}");
    }
    checks
}

fn assert_machine(report: &Value) {
    let m = &report["machine"];
    for key in ["cpu", "kernel", "clocksource", "arch"] {
        assert!(m[key].is_string(), "{key} in {m}");
    }
    assert_eq!(m["quick"], true);
}

#[test]
fn bench_timers_quick_reports_every_row_as_json() {
    let r = report(&tickloop(&["bench", "timers", "--quick", "--json"], None));
    assert_machine(&r);
    assert!(r["machine"]["core"].is_u64());
    assert_eq!(r["machine"]["period_us"], 1000);
    assert_eq!(r["rows"].as_array().unwrap().len(), 6);
    // Busy, epoll and the peers (tokio's interval, a sleep loop) work everywhere; io_uring and
    // cyclictest may be missing, and then say why.
    for name in [
        "tickloop busy",
        "tickloop park, epoll",
        "tokio interval",
        "std::thread::sleep loop",
    ] {
        let row = row(&r, name);
        assert_measured(row);
        assert_eq!(row["rounds_p99_ns"].as_array().unwrap().len(), 3, "{row}");
    }
    for name in ["tickloop park, io_uring", "cyclictest"] {
        let row = row(&r, name);
        if row["samples"].as_u64().unwrap() > 0 {
            assert_measured(row);
        } else {
            assert_explained(row);
        }
    }
    let checks = assert_checks(&r, 3);
    assert!(checks[0]["pass"].is_boolean(), "{:?}", checks[0]);
}

#[test]
fn bench_timers_without_cyclictest_explains_the_row() {
    // An empty directory as PATH: cyclictest cannot be found (tickloop runs by its full path).
    let empty = std::env::temp_dir().join(format!("tickloop-bench-nopath-{}", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    let o = tickloop(&["bench", "timers", "--quick", "--json"], Some(&empty));
    let text = tickloop(&["bench", "timers", "--quick"], Some(&empty));
    let _ = std::fs::remove_dir(&empty);
    let r = report(&o);
    let cyclic = row(&r, "cyclictest");
    assert_explained(cyclic);
    assert!(
        cyclic["note"].as_str().unwrap().contains("rt-tests"),
        "{cyclic}"
    );
    assert!(r["machine"]["cyclictest"].is_null());
    assert_measured(row(&r, "tickloop park, epoll"));
    let checks = assert_checks(&r, 3);
    for c in checks
        .iter()
        .filter(|c| c["target"].as_str().unwrap().contains("cyclictest's p99"))
    {
        assert!(c["pass"].is_null(), "{c}");
        assert!(
            c["measured"].as_str().unwrap().starts_with("not measured"),
            "{c}"
        );
    }
    // The table says it too.
    let out = String::from_utf8_lossy(&text.stdout);
    assert!(text.status.success());
    assert!(out.contains("NOT MEASURED"), "{out}");
}

#[test]
fn bench_loop_quick_reports_every_row_as_json() {
    let r = report(&tickloop(&["bench", "loop", "--quick", "--json"], None));
    assert_machine(&r);
    assert_eq!(r["machine"]["writer_core"], 0);
    assert_eq!(r["machine"]["engine_core"], 1);
    assert_eq!(r["rows"].as_array().unwrap().len(), 4);
    for name in [
        "tickloop ring one-way",
        "loop, busy mode",
        "loop, park mode on epoll",
        "loop, park mode on io_uring",
    ] {
        let row = row(&r, name);
        if name.contains("io_uring") && row["samples"] == 0 {
            assert_explained(row);
            continue;
        }
        assert_measured(row);
        assert_eq!(row["lost"], 0, "{row}");
        assert_eq!(row["rounds_p50_ns"].as_array().unwrap().len(), 5, "{row}");
    }
    let checks = assert_checks(&r, 2);
    let ratio = checks
        .iter()
        .find(|c| c["target"].as_str().unwrap().contains("within 2x"))
        .unwrap();
    assert!(ratio["pass"].is_boolean(), "{ratio}");
    let lost = checks
        .iter()
        .find(|c| c["target"].as_str().unwrap().contains("lost"))
        .unwrap();
    assert_eq!(lost["pass"], true, "{lost}");
}

#[test]
fn bench_adapter_quick_reports_every_row_as_json() {
    let r = report(&tickloop(&["bench", "adapter", "--quick", "--json"], None));
    assert_machine(&r);
    assert_eq!(r["machine"]["adapter_core"], 0);
    assert_eq!(r["machine"]["engine_core"], 1);
    assert_eq!(r["rows"].as_array().unwrap().len(), 6);
    // The Python client users build today: measured, or (no python3) a row that says why.
    let python = row(&r, "python client");
    if python["samples"].as_u64().unwrap() > 0 {
        assert_measured(python);
        assert_eq!(python["lost"], 0, "{python}");
    } else {
        assert_explained(python);
    }
    for name in [
        "raw pipe round trip",
        "adapter host, loop in park mode (epoll): request -> Done",
        "adapter host, loop in busy mode",
        "raw pipe, 64 messages in flight",
        "adapter host, loop in park mode, 64 requests in flight",
    ] {
        let row = row(&r, name);
        assert_measured(row);
        assert_eq!(row["lost"], 0, "{row}");
        assert!(row["requests_per_sec"].as_f64().unwrap() > 0.0, "{row}");
        assert_eq!(row["rounds_p50_ns"].as_array().unwrap().len(), 3, "{row}");
    }
    let checks = assert_checks(&r, 2);
    let ratio = checks
        .iter()
        .find(|c| c["target"].as_str().unwrap().contains("within 2x"))
        .unwrap();
    assert!(ratio["pass"].is_boolean(), "{ratio}");
    let lost = checks
        .iter()
        .find(|c| c["target"].as_str().unwrap().contains("answered"))
        .unwrap();
    assert_eq!(lost["pass"], true, "{lost}");
}

#[test]
fn bench_arguments_are_checked_with_one_clear_line() {
    for args in [
        &["bench", "timers", "--core", "4096"][..],
        &["bench", "timers", "--period-us", "0"],
        &["bench", "timers", "--fifo", "100"],
        &["bench", "loop", "--cpus", "1,1"],
        &["bench", "loop", "--cpus", "0,4096"],
        &["bench", "adapter", "--cpus", "1,1"],
        &["bench", "adapter", "--cpus", "0"],
    ] {
        let o = tickloop(args, None);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?} succeeded");
        assert!(!err.contains("panicked"), "{err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("tickloop: error: "), "{args:?}: {err}");
    }
}

#[test]
fn bench_poll_quick_out_writes_the_table_json_hgrm_files_and_plots() {
    let dir = std::env::temp_dir().join(format!("tickloop-bench-out-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let o = tickloop(
        &["bench", "poll", "--quick", "--out", dir.to_str().unwrap()],
        None,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let file = |name: &str| dir.join(name);
    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(file("poll.json")).unwrap()).unwrap();
    assert!(json["machine"]["cpu"].is_string(), "{json}");
    assert!(json["machine"]["smt"].is_string(), "{json}");
    let md = std::fs::read_to_string(file("poll.md")).unwrap();
    assert!(md.contains("\nMachine:\n"), "{md}");
    for plot in ["poll.svg", "poll.png"] {
        assert!(
            std::fs::metadata(file(plot)).unwrap().len() > 1000,
            "{plot}"
        );
    }
    let png = std::fs::read(file("poll.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    // The smallest concurrency that meets the target has its own distribution file, in the
    // HdrHistogram text format, its total count the cycles finished.
    let best = json["smallest_concurrency"].as_u64().unwrap();
    let hgrm = std::fs::read_to_string(file(&format!("poll-{best}-in-flight.hgrm"))).unwrap();
    assert!(hgrm.starts_with("       Value     Percentile TotalCount 1/(1-Percentile)\n\n"));
    let total: u64 = hgrm
        .lines()
        .find_map(|l| l.split("Total count    =").nth(1))
        .and_then(|v| v.trim().trim_end_matches(']').trim().parse().ok())
        .unwrap_or_else(|| panic!("no total count in {hgrm}"));
    assert!(total > 0, "{hgrm}");
    assert!(hgrm.contains("#[Buckets = "), "{hgrm}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bench_out_into_an_unwritable_place_says_which_and_what_to_do() {
    let o = tickloop(
        &["bench", "poll", "--quick", "--out", "/proc/tickloop"],
        None,
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(stderr.contains("/proc/tickloop"), "{stderr}");
    assert!(
        stderr.contains("pass --out a directory you may write"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}
