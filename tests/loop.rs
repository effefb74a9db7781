//! The loop as a user runs it: `tickloop run` against a real feed process through a real ring,
//! stopped by real signals; journals replayed on every driver; startup errors.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::*;

/// Wait for `child` and return its exit status and the CPU time it used.
fn wait_with_cpu(child: &mut Child) -> (i32, Duration) {
    let mut status = 0;
    // SAFETY: plain rusage struct filled by the kernel.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: our own child.
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as i32);
    let cpu = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    (status, cpu(usage.ru_utime) + cpu(usage.ru_stime))
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: our own child.
    unsafe { libc::kill(child.id() as i32, sig) };
}

fn feed(name: &Name, count: u64, rate: u64) {
    let o = synthetic_feed(name, count, rate, 16).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

fn run_json(child: Child) -> serde_json::Value {
    let o = child.wait_with_output().unwrap();
    assert!(
        o.status.success(),
        "run failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(&o)))
}

trait AffinityExt {
    fn pre_exec_affinity_core0(&mut self) -> &mut Self;
}

impl AffinityExt for Command {
    /// Start the child allowed only on core 0, as `taskset -c 0` would.
    fn pre_exec_affinity_core0(&mut self) -> &mut Self {
        use std::os::unix::process::CommandExt;
        // SAFETY: sched_setaffinity is async-signal-safe; the set is built on the stack.
        unsafe {
            self.pre_exec(|| {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                libc::CPU_SET(0, &mut set);
                if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            })
        }
    }
}

#[test]
fn a_recorded_run_replays_byte_identically_on_every_driver() {
    let ring = Name::new();
    // Room for every candle: the writer cannot lap a reader a loaded host deschedules (that
    // loss is counted, and is other tests' subject; here every candle must be journalled).
    create_ring(&ring, 1 << 18);
    let dir = TempDir::new("replay");
    let journal = dir.file("run.journal");
    let run = spawn(&[
        "run",
        "--ring",
        &ring.0,
        "--journal",
        &journal,
        "--driver",
        "epoll",
        "--json",
        "--tick-us",
        "500",
    ]);
    wait_for_reader(&ring);
    feed(&ring, 200_000, 400_000);
    wait_caught_up(&ring);
    signal(&run, libc::SIGTERM);
    let report = run_json(run);
    assert_eq!(report["stopped_by"], "Signal(15)");
    assert_eq!(report["stats"]["candles"], 200_000, "{report}");
    assert!(
        report["outputs"]["crosses"].as_u64().unwrap() > 100,
        "{report}"
    );

    let mut outputs = Vec::new();
    for driver in drivers() {
        let out = dir.file(&format!("out-{driver}.jsonl"));
        let o = tickloop(&[
            "replay",
            "--journal",
            &journal,
            "--verify",
            "--driver",
            driver,
            "--out",
            &out,
            "--json",
        ]);
        assert!(
            o.status.success(),
            "{driver}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(r["clean_end"], true, "{r}");
        assert_eq!(r["replayed_on"], driver);
        assert!(r["divergence"].is_null());
        outputs.push(std::fs::read(&out).unwrap());
    }
    assert!(outputs[0].len() > 1000);
    assert!(
        outputs.iter().all(|o| *o == outputs[0]),
        "replays differ between drivers"
    );

    // A journal cut off (a killed run) replays up to its last whole input, and says so: the
    // cut lands inside a record, or exactly between two.
    let bytes = std::fs::read(&journal).unwrap();
    let frames = frame_starts(&bytes);
    let input = frames
        .iter()
        .copied()
        .find(|&at| at >= bytes.len() * 2 / 3 && bytes[at + 4] == 0) // 0: Record::Input
        .expect("an input two thirds in");
    for (name, end) in [("inside", input + 6), ("between", input)] {
        let cut = dir.file(&format!("cut-{name}.journal"));
        std::fs::write(&cut, &bytes[..end]).unwrap();
        let o = tickloop(&["replay", "--journal", &cut, "--verify", "--json"]);
        assert_eq!(
            o.status.code(),
            Some(3),
            "{name}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(r["clean_end"], false);
        assert!(r["divergence"].is_null(), "{name}: {r}");
        assert!(
            r["truncated"].as_str().unwrap().contains("cut off")
                || r["truncated"].as_str().unwrap().contains("no end marker"),
            "{name}: {r}"
        );
        assert!(String::from_utf8_lossy(&o.stderr).contains("incomplete"));
    }
}

/// Offsets of the frames of a journal file (after its 10-byte magic and version).
fn frame_starts(bytes: &[u8]) -> Vec<usize> {
    let mut at = 10;
    let mut starts = Vec::new();
    while at + 4 <= bytes.len() {
        starts.push(at);
        at += 4 + u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
    }
    starts
}

#[test]
fn sigterm_and_sigint_stop_the_loop_within_100_ms_with_exit_0() {
    let ring = Name::new();
    create_ring(&ring, 1 << 12);
    for (mode, sig) in [
        ("park", libc::SIGTERM),
        ("busy", libc::SIGTERM),
        ("park", libc::SIGINT),
    ] {
        let mut run = Command::new(TICKLOOP)
            .args(["run", "--ring", &ring.0, "--mode", mode, "--json"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_for_reader(&ring);
        std::thread::sleep(Duration::from_millis(200));
        let sent = Instant::now();
        signal(&run, sig);
        let (status, _) = wait_with_cpu(&mut run);
        let took = sent.elapsed();
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "{mode}: status {status:#x}"
        );
        assert!(
            took < Duration::from_millis(100),
            "{mode}: took {took:?} to stop"
        );
    }
}

#[test]
fn a_parked_loop_sleeps_between_candles_yet_misses_none() {
    let ring = Name::new();
    create_ring(&ring, 1 << 12);
    let mut run = Command::new(TICKLOOP)
        .args([
            "run",
            "--ring",
            &ring.0,
            "--mode",
            "park",
            "--json",
            "--tick-us",
            "10000",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_reader(&ring);
    let started = Instant::now();
    feed(&ring, 3_000, 2_000);
    wait_caught_up(&ring);
    signal(&run, libc::SIGTERM);
    let mut out = run.stdout.take().unwrap();
    let (status, cpu) = wait_with_cpu(&mut run);
    let wall = started.elapsed();
    assert_eq!(status, 0);
    let mut text = String::new();
    std::io::Read::read_to_string(&mut out, &mut text).unwrap();
    let report: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(report["stats"]["candles"], 3_000, "{report}");
    assert!(
        report["stats"]["parks"].as_u64().unwrap() > 1_000,
        "{report}"
    );
    // Sleeping, not spinning: far less CPU than wall time (a spinning loop uses all of it).
    assert!(cpu < wall / 3, "used {cpu:?} CPU in {wall:?}");
}

#[test]
fn a_flood_of_candles_does_not_starve_a_1ms_timer() {
    let ring = Name::new();
    create_ring(&ring, 1 << 20);
    let run = spawn(&[
        "run", "--ring", &ring.0, "--mode", "busy", "--batch", "256", "--json", "--core", "1",
    ]);
    wait_for_reader(&ring);
    let o = synthetic_feed(&ring, 10_000_000, 0, 64)
        .args(["--cpu", "0"])
        .output()
        .unwrap();
    assert!(o.status.success());
    wait_caught_up(&ring);
    signal(&run, libc::SIGTERM);
    let report = run_json(run);
    let stats = &report["stats"];
    let read = stats["candles"].as_u64().unwrap() + stats["candles_lost"].as_u64().unwrap();
    assert_eq!(read, 10_000_000, "{report}");
    assert!(
        stats["backlog_iterations"].as_u64().unwrap() > 0,
        "the flood must outrun one batch: {report}"
    );
    let timer = &report["periodic"][0];
    let p50 = timer["lateness"]["p50_ns"].as_u64().unwrap();
    // One batch of 256 candles takes microseconds. The median is robust to the stalls a busy
    // 2-core VM adds (the tail is the benchmark's business: `tickloop bench loop`).
    assert!(
        p50 < 100_000,
        "timer median lateness {p50} ns under a flood: {report}"
    );
    assert!(timer["firings"].as_u64().unwrap() > 50, "{report}");
}

#[test]
fn bad_settings_are_refused_before_the_loop_starts() {
    let ring = Name::new();
    create_ring(&ring, 1 << 12);
    for (args, want) in [
        (vec!["--core", "4096"], "core 4096 does not exist"),
        (vec!["--timer-capacity", "0"], "timer_capacity = 0"),
        (vec!["--batch", "0"], "batch = 0"),
        (
            vec!["--journal", "/nonexistent-tickloop/run.journal"],
            "/nonexistent-tickloop does not exist",
        ),
        (vec!["--journal", "/proc/run.journal"], "cannot create it"),
        (vec!["--sched-fifo", "0"], "sched_fifo"),
        (vec!["--fast", "30", "--slow", "10"], "fast < slow"),
        (vec!["--duration=-1"], "--duration"),
        (vec!["--driver", "kqueue"], "unknown driver"),
    ] {
        let mut all = vec!["run", "--ring", &ring.0];
        all.extend(args.iter().copied());
        let o = tickloop(&all);
        let err = if o.status.code() == Some(2)
            && String::from_utf8_lossy(&o.stderr).starts_with("error:")
        {
            String::from_utf8_lossy(&o.stderr).into_owned() // clap's own usage error
        } else {
            clear_failure(&o)
        };
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(!err.contains("loop running"), "{args:?}: started anyway");
    }
    // A core that exists but is outside this process's CPU set (taskset, cpuset, systemd).
    if std::thread::available_parallelism().map_or(0, |n| n.get()) >= 2 {
        let o = Command::new(TICKLOOP)
            .args(["run", "--ring", &ring.0, "--core", "1"])
            .pre_exec_affinity_core0()
            .output()
            .unwrap();
        let err = clear_failure(&o);
        assert!(
            err.contains("core 1 is not in this process's allowed CPUs 0"),
            "{err}"
        );
    }
    let o = tickloop(&["run", "--ring", "no-such-ring-tickloop"]);
    assert!(clear_failure(&o).contains("no-such-ring-tickloop"));
    let dir = TempDir::new("badjournal");
    let junk = dir.file("junk");
    std::fs::write(&junk, b"not a journal").unwrap();
    assert!(clear_failure(&tickloop(&["replay", "--journal", &junk]))
        .contains("not a tickloop journal"));
    assert!(
        clear_failure(&tickloop(&["replay", "--journal", &dir.file("missing")]))
            .contains("cannot read it")
    );
}

#[test]
fn a_full_disk_stops_the_journal_not_the_loop() {
    let Some(fs) = SmallTmpfs::mount("a_full_disk_stops_the_journal_not_the_loop", "512k") else {
        return;
    };
    let ring = Name::new();
    create_ring(&ring, 1 << 17); // room for every candle, as above
    let journal = fs.0.join("run.journal").display().to_string();
    let run = spawn(&["run", "--ring", &ring.0, "--journal", &journal, "--json"]);
    wait_for_reader(&ring);
    feed(&ring, 100_000, 500_000);
    wait_caught_up(&ring);
    signal(&run, libc::SIGTERM);
    let o = run.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("the journal stopped recording") && err.contains("disk is full"),
        "{err}"
    );
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    // The loop kept going: every candle reached the app, and it stopped on the signal.
    assert_eq!(report["stats"]["candles"], 100_000, "{report}");
    assert_eq!(report["stopped_by"], "Signal(15)");
    assert!(report["stats"]["journal_dropped"].as_u64().unwrap() > 0);
    // What was recorded before the disk filled still replays, and is said to be incomplete:
    // the journal ends on a whole input, not inside a record.
    let o = tickloop(&["replay", "--journal", &journal, "--verify", "--json"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(err.contains("no end marker"), "{err}");
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(r["inputs"].as_u64().unwrap() > 1000, "{r}");
}
