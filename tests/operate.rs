//! Operating the engine as a service: config files, the status file and `tickloop status`,
//! systemd notifications, with real processes, files, sockets and signals.

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::*;

/// A config for one test: its own lock directory beside the file, so tests never share a lock,
/// and its metrics page there too, so an engine a test kills leaves no page behind.
fn write_config(path: &str, ring: &str, status: &str, extra: &str) {
    let dir = Path::new(path).parent().unwrap();
    let metrics = match extra.contains("[metrics]") {
        true => String::new(),
        false => format!(
            "[metrics]\npage = \"{}\"\n",
            dir.join("metrics.page").display()
        ),
    };
    std::fs::write(
        path,
        format!(
            "[engine]\naccount = \"test\"\nlock_dir = \"{}\"\n\n[[rings]]\nname = \"{ring}\"\n\n[status]\npath = \"{status}\"\ninterval_ms = 100\n{metrics}{extra}",
            dir.join("locks").display()
        ),
    )
    .unwrap();
}

fn status_code(file: &str, extra: &[&str]) -> (Option<i32>, String) {
    let mut args = vec!["status", "--file", file];
    args.extend_from_slice(extra);
    let o = tickloop(&args);
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr),
    )
}

#[test]
fn bad_configs_are_one_clear_error_each_before_anything_starts() {
    let dir = TempDir::new("badcfg");
    let file = dir.file("bad.toml");
    for (text, want) in [
        (
            "[engine]\naccount = \"a\"\nbogus = 1\n",
            "line 3: unknown field `bogus`",
        ),
        (
            "[engine]\naccount = \"a\"\n[loop]\nbatch = \"x\"\n",
            "line 4: invalid type",
        ),
        (
            "[engine]\naccount = \"a\"\n[loop]\ntimer_capacity = 0\n",
            "line 4: loop.timer_capacity = 0",
        ),
        ("[engine]\naccount = \"a b\"\n", "engine.account"),
        ("[engine]\n", "missing field `account`"),
        (
            "[engine]\naccount = \"a\"\n[loop.host]\ncore = 4096\n",
            "core = 4096",
        ),
        (
            "[engine]\naccount = \"a\"\n[status]\npath = \"/nonexistent-tickloop/s.json\"\n",
            "directory /nonexistent-tickloop does not exist",
        ),
        (
            "[engine]\naccount = \"a\"\n[status]\npath = \"/proc/s.json\"\n",
            "/proc/s.json",
        ),
        ("[engine]\naccount = \"a\"\n[sma]\nfast = 40\n", "fast"),
    ] {
        std::fs::write(&file, text).unwrap();
        for command in [
            vec!["config", "check", &file],
            vec!["run", "--config", &file],
        ] {
            let err = clear_failure(&tickloop(&command));
            assert!(
                err.contains(want) && err.contains(&file),
                "{command:?} {text:?}: {err}"
            );
            assert!(!err.contains("loop running"));
        }
    }
    let err = clear_failure(&tickloop(&["run", "--config", &dir.file("missing.toml")]));
    assert!(err.contains("cannot read it"), "{err}");
    // The shipped example is valid.
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/tickloop.toml");
    let o = tickloop(&["config", "check", example]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout(&o).contains("account = \"paper\""));
    for strategy in ["sma_cross", "drop_trigger", "limit_bracket"] {
        let example = format!(
            "{}/examples/strategies/{strategy}.toml",
            env!("CARGO_MANIFEST_DIR")
        );
        let o = tickloop(&["config", "check", &example]);
        assert!(o.status.success(), "{example}: {}", clear_failure(&o));
        assert!(stdout(&o).contains(&format!("name = \"{strategy}\"")));
    }
    // A strategy's parameters are checked like everything else.
    let bad = dir.file("bad-strategy.toml");
    std::fs::write(
        &bad,
        "[engine]\naccount = \"x\"\n[strategy]\nname = \"sma_cross\"\n[strategy.params]\nn1 = 30\n",
    )
    .unwrap();
    let err = clear_failure(&tickloop(&["config", "check", &bad]));
    assert!(
        err.contains("line 5") && err.contains("n1 = 30 and n2 = 20"),
        "{err}"
    );
    std::fs::write(
        &bad,
        "[engine]\naccount = \"x\"\n[strategy]\nname = \"nope\"\n",
    )
    .unwrap();
    let err = clear_failure(&tickloop(&["config", "check", &bad]));
    assert!(
        err.contains("line 4") && err.contains("is not a strategy"),
        "{err}"
    );
}

#[test]
fn the_status_file_is_never_partial_and_status_exit_codes_follow_the_engine() {
    let ring = Name::new();
    create_ring(&ring, 1 << 12);
    let dir = TempDir::new("status");
    let (cfg, status) = (dir.file("engine.toml"), dir.file("engine.status.json"));
    write_config(&cfg, &ring.0, &status, "");
    assert_eq!(
        status_code(&status, &[]).0,
        Some(2),
        "missing before the start"
    );
    let mut run = Command::new(TICKLOOP)
        .args(["run", "--config", &cfg])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_file(&status);
    // A reader hammering the file sees whole documents only.
    let reader = {
        let status = status.clone();
        std::thread::spawn(move || {
            let (mut reads, until) = (0, Instant::now() + Duration::from_millis(700));
            while Instant::now() < until {
                let text = std::fs::read_to_string(&status).unwrap();
                let doc: serde_json::Value = serde_json::from_str(&text)
                    .unwrap_or_else(|e| panic!("partial status ({e}): {text:?}"));
                assert_eq!(doc["format"], 1);
                reads += 1;
            }
            reads
        })
    };
    feed(&ring, 10_000, 50_000);
    let reads = reader.join().unwrap();
    assert!(reads > 100, "only {reads} reads");
    // The loop has read every candle; the status file shows it from its next write (it is
    // rewritten on a tick, which a loaded host may delay).
    let deadline = Instant::now() + Duration::from_secs(10);
    let (code, text) = loop {
        let (code, text) = status_code(&status, &[]);
        if text.contains("10000 received") || Instant::now() > deadline {
            break (code, text);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("engine@test") && text.contains("10000 received"),
        "{text}"
    );
    // A hung loop (stopped with SIGSTOP) goes stale.
    // SAFETY: our own child.
    unsafe { libc::kill(run.id() as i32, libc::SIGSTOP) };
    std::thread::sleep(Duration::from_millis(700));
    let (code, text) = status_code(&status, &["--max-age", "500ms"]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("stale"), "{text}");
    unsafe {
        libc::kill(run.id() as i32, libc::SIGCONT);
        libc::kill(run.id() as i32, libc::SIGTERM);
    }
    assert!(run.wait().unwrap().success());
    let (code, text) = status_code(&status, &[]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("stopped"), "{text}");
    std::fs::write(&status, "{not json").unwrap();
    assert_eq!(status_code(&status, &[]).0, Some(2));
}

fn feed(ring: &Name, count: u64, rate: u64) {
    let o = synthetic_feed(ring, count, rate, 8).output().unwrap();
    assert!(o.status.success());
    wait_caught_up(ring);
}

#[test]
fn systemd_hears_ready_then_watchdog_then_stopping() {
    let ring = Name::new();
    create_ring(&ring, 1 << 12);
    let dir = TempDir::new("notify");
    let (cfg, status) = (dir.file("engine.toml"), dir.file("s.json"));
    write_config(&cfg, &ring.0, &status, "");
    let socket_path = dir.file("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let run = Command::new(TICKLOOP)
        .args(["run", "--config", &cfg])
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "200000")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 256];
    let mut next = |socket: &UnixDatagram| {
        let n = socket.recv(&mut buf).expect("a notification within 10 s");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let first = next(&socket);
    assert!(first.contains("READY=1"), "{first:?}");
    // WATCHDOG=1 every half of WatchdogSec (100 ms), from the loop's tick.
    let started = Instant::now();
    let mut pets = 0;
    while pets < 5 {
        let m = next(&socket);
        if m.contains("WATCHDOG=1") {
            pets += 1;
        }
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(3),
        "5 pets in {took:?}"
    );
    // SAFETY: our own child.
    unsafe { libc::kill(run.id() as i32, libc::SIGTERM) };
    let mut stopping = false;
    for _ in 0..20 {
        let m = next(&socket);
        if m.contains("STOPPING=1") {
            stopping = true;
            break;
        }
    }
    assert!(stopping);
    assert!(run.wait_with_output().unwrap().status.success());
}

#[test]
fn telemetry_on_a_full_disk_is_dropped_and_counted_while_the_loop_keeps_time() {
    let Some(fs) = SmallTmpfs::mount("telemetry_on_a_full_disk", "64k") else {
        return;
    };
    let ring = Name::new();
    create_ring(&ring, 1 << 12);
    let dir = TempDir::new("telemetry");
    let (cfg, status) = (dir.file("engine.toml"), dir.file("s.json"));
    // A 100 µs timer with a 1 ns budget: every firing is a TimerOverrun telemetry event.
    let extra = format!(
        "[telemetry]\ndir = \"{}\"\nbuffer_bytes = 16384\nrotate_bytes = 16384\nkeep_files = 8\n[sma]\ntick_ns = 100000\ntick_budget_ns = 1\n",
        fs.0.display()
    );
    write_config(&cfg, &ring.0, &status, &extra);
    let run = Command::new(TICKLOOP)
        .args(["run", "--config", &cfg, "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_file(&status);
    std::thread::sleep(Duration::from_millis(1500));
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&status).unwrap()).unwrap();
    assert_eq!(doc["telemetry"]["degraded"], true, "{doc}");
    assert!(doc["telemetry"]["dropped"].as_u64().unwrap() > 0, "{doc}");
    let (code, text) = status_code(&status, &[]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("telemetry degraded"), "{text}");
    // SAFETY: our own child.
    unsafe { libc::kill(run.id() as i32, libc::SIGTERM) };
    let o = run.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let timer = &report["periodic"][0];
    assert!(timer["firings"].as_u64().unwrap() > 5_000, "{report}");
    // The loop kept its timing: the median firing is not late by more than a sleep's wake-up.
    assert!(
        timer["lateness"]["p50_ns"].as_u64().unwrap() < 200_000,
        "{report}"
    );
    assert!(
        report["telemetry"].as_str().unwrap().contains("degraded"),
        "{report}"
    );
    // What did land is whole lines.
    for entry in std::fs::read_dir(&fs.0).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for line in text.lines() {
            serde_json::from_str::<serde_json::Value>(line).unwrap();
        }
    }
}

fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[test]
fn a_thousand_config_replacements_never_apply_a_partial_or_invalid_file() {
    use std::io::Write;
    let ring = Name::new();
    create_ring(&ring, 1 << 12);
    let dir = TempDir::new("reload");
    let (cfg, status) = (dir.file("engine.toml"), dir.file("s.json"));
    let locks = dir.file("locks");
    let body = |fast: u32| {
        format!(
            "[engine]\naccount = \"reload\"\nlock_dir = \"{locks}\"\n\n[[rings]]\nname = \"{}\"\n\n[status]\npath = \"{status}\"\ninterval_ms = 100\n\n[config]\npoll_ms = 100\n\n[sma]\nfast = {fast}\nslow = 30\n",
            ring.0
        )
    };
    std::fs::write(&cfg, body(10)).unwrap();
    let mut run = Command::new(TICKLOOP)
        .args(["run", "--config", &cfg])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_file(&status);
    let mut valid = std::collections::HashSet::new();
    let mut last_valid = body(10).into_bytes();
    valid.insert(fnv1a64(&last_valid));
    let tmp = dir.file("engine.toml.new");
    for i in 0..1000u32 {
        let fast = 1 + i % 29;
        let (text, ok) = match i % 5 {
            0 => (
                body(fast).replace("slow = 30", "slow = 30\nbogus = 1"),
                false,
            ),
            1 => (body(fast).replace("fast = ", "fast = \"x"), false),
            2 => (body(40), false), // fast >= slow
            _ => (body(fast), true),
        };
        if i % 2 == 0 {
            // Atomic replacement by rename.
            std::fs::write(&tmp, &text).unwrap();
            std::fs::rename(&tmp, &cfg).unwrap();
        } else {
            // In place, in two pieces with a pause between them. The first piece alone is a
            // valid config (the app's section comes in the second): applying it would be
            // applying a partial file.
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(&cfg)
                .unwrap();
            let cut = text.find("[sma]").unwrap_or(text.len() / 2);
            f.write_all(&text.as_bytes()[..cut]).unwrap();
            std::thread::sleep(Duration::from_millis(2));
            f.write_all(&text.as_bytes()[cut..]).unwrap();
        }
        if ok {
            valid.insert(fnv1a64(text.as_bytes()));
            last_valid = text.into_bytes();
        }
    }
    // The last file written was valid (i = 999: 999 % 5 == 4).
    std::thread::sleep(Duration::from_millis(600));
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&status).unwrap()).unwrap();
    assert_eq!(doc["state"], "running", "{doc}");
    assert_eq!(
        doc["config_digest"],
        format!("{:016x}", fnv1a64(&last_valid)),
        "the final applied config is the last valid file: {doc}"
    );
    assert!(doc["config_generation"].as_u64().unwrap() >= 1, "{doc}");
    // SAFETY: our own child.
    unsafe { libc::kill(run.id() as i32, libc::SIGHUP) };
    unsafe { libc::kill(run.id() as i32, libc::SIGTERM) };
    let mut err = String::new();
    std::io::Read::read_to_string(run.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(run.wait().unwrap().success(), "{err}");
    // Every generation applied was one whole valid file.
    for line in err.lines().filter(|l| l.contains(" applied (digest ")) {
        let digest = line.split("digest ").nth(1).unwrap()[..16].to_string();
        let d = u64::from_str_radix(&digest, 16).unwrap();
        assert!(
            valid.contains(&d),
            "applied a file that was never whole and valid: {line}"
        );
    }
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn of_twenty_engines_started_at_once_on_one_account_exactly_one_runs() {
    let ring = Name::new();
    create_ring(&ring, 1 << 12);
    let dir = TempDir::new("locks");
    let locks = dir.file("locks");
    let start = |extra: &[&str]| {
        Command::new(TICKLOOP)
            .args([
                "run",
                "--ring",
                &ring.0,
                "--account",
                "acct-1",
                "--lock-dir",
                &locks,
            ])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut children: Vec<_> = (0..20).map(|_| start(&[])).collect();
    // The losers exit at once; the winner keeps running.
    std::thread::sleep(Duration::from_millis(1500));
    let mut running = Vec::new();
    let mut refused = 0;
    for mut child in children.drain(..) {
        match child.try_wait().unwrap() {
            None => running.push(child),
            Some(status) => {
                let mut err = String::new();
                std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
                assert!(!status.success());
                assert!(
                    err.contains("engine@acct-1 is already running: pid"),
                    "{err}"
                );
                refused += 1;
            }
        }
    }
    assert_eq!((running.len(), refused), (1, 19));
    let holder = running.pop().unwrap();
    let o = tickloop(&["locks", "--dir", &locks]);
    assert!(
        stdout(&o).contains(&format!("engine@acct-1: held by pid {}", holder.id())),
        "{}",
        stdout(&o)
    );
    let err = clear_failure(&tickloop(&[
        "run",
        "--ring",
        &ring.0,
        "--account",
        "acct-1",
        "--lock-dir",
        &locks,
    ]));
    assert!(
        err.contains(&format!("pid {}", holder.id())) && err.contains("kill"),
        "{err}"
    );
    // SIGKILL the holder: the kernel drops its lock, and the next start takes it at once.
    let mut holder = holder;
    holder.kill().unwrap();
    holder.wait().unwrap();
    let died = Instant::now();
    let mut next = start(&["--json", "--duration", "0.2"]);
    let o = loop {
        if next.try_wait().unwrap().is_some() {
            break next.wait_with_output().unwrap();
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("is gone"),
        "the previous holder's death is noted: {err}"
    );
    // It ran its 0.2 s: it got the lock well within 100 ms of the death (plus start-up).
    assert!(
        died.elapsed() < Duration::from_secs(2),
        "{:?}",
        died.elapsed()
    );
}

/// An engine's files in `dir`: config, status, journal, and a telemetry directory (created).
fn engine_files(dir: &TempDir) -> (String, String, String, String) {
    let telemetry = dir.file("telemetry");
    std::fs::create_dir(&telemetry).unwrap();
    (
        dir.file("engine.toml"),
        dir.file("s.json"),
        dir.file("run.tlj"),
        telemetry,
    )
}

/// The telemetry events of `kind` in the JSONL files under `dir`.
fn telemetry_of(dir: &str, kind: &str) -> Vec<serde_json::Value> {
    telemetry_events(dir)
        .into_iter()
        .filter(|v| v["kind"] == kind)
        .collect()
}

#[test]
fn a_valid_change_applies_app_parameters_and_log_level_while_running_and_replays() {
    let ring = Name::new();
    create_ring(&ring, 1 << 12);
    let dir = TempDir::new("hotapply");
    let (cfg, status, journal, telemetry) = engine_files(&dir);
    let locks = dir.file("locks");
    let body = |fast: u32, tick_ms: u64, level: &str, batch: u32| {
        format!(
            "[engine]\naccount = \"hot\"\nlock_dir = \"{locks}\"\n\n[[rings]]\nname = \"{}\"\n\n\
             [loop]\nbatch = {batch}\n\n[status]\npath = \"{status}\"\ninterval_ms = 100\n\n\
             [journal]\npath = \"{journal}\"\n\n[telemetry]\ndir = \"{telemetry}\"\n\n\
             [config]\npoll_ms = 100\n\n[log]\nlevel = \"{level}\"\n\n\
             [sma]\nfast = {fast}\nslow = 30\ntick_ns = {}\n",
            ring.0,
            tick_ms * 1_000_000
        )
    };
    let replace = |text: String| {
        let tmp = dir.file("engine.toml.new");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &cfg).unwrap();
    };
    let generation = || -> u64 {
        let doc = status_doc(&status);
        doc["config_generation"].as_u64().unwrap_or(0)
    };
    let wait_generation = |want: u64| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while generation() < want {
            assert!(Instant::now() < deadline, "generation {want} never applied");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    std::fs::write(&cfg, body(10, 1, "info", 64)).unwrap();
    let mut run = Command::new(TICKLOOP)
        .args(["run", "--config", &cfg])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_file(&status);
    let base = generation();
    let mut feed = synthetic_feed(&ring, 20_000, 50_000, 4).spawn().unwrap();
    // 1: new app parameters (windows and tick period) and a loop change that needs a restart.
    replace(body(5, 2, "info", 128));
    wait_generation(base + 1);
    // 2: the log level goes to warn: from the next change on, info lines are not printed.
    replace(body(6, 2, "warn", 128));
    wait_generation(base + 2);
    // 3: applied, but its info line is not printed.
    replace(body(7, 2, "warn", 128));
    wait_generation(base + 3);
    // An invalid file: rejected with its line, the last good config stays.
    replace(body(7, 2, "warn", 128).replace("slow = 30", "slow = 3"));
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(generation(), base + 3);
    // 4: back to info (its own line follows the old level), 5 is printed again.
    replace(body(8, 2, "info", 128));
    wait_generation(base + 4);
    replace(body(9, 2, "info", 128));
    wait_generation(base + 5);
    assert!(feed.wait().unwrap().success());
    // SAFETY: our own child.
    unsafe { libc::kill(run.id() as i32, libc::SIGTERM) };
    let mut err = String::new();
    std::io::Read::read_to_string(run.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(run.wait().unwrap().success(), "{err}");

    let applied_line = |g: u64| err.contains(&format!("generation {g} applied"));
    assert!(applied_line(base + 1) && applied_line(base + 2), "{err}");
    assert!(
        !applied_line(base + 3) && !applied_line(base + 4),
        "info lines printed at level warn: {err}"
    );
    assert!(applied_line(base + 5), "level info again: {err}");
    assert!(
        err.contains("these take effect at the next restart: loop"),
        "{err}"
    );
    assert!(
        err.contains("config rejected") && err.contains("slow = 3"),
        "{err}"
    );

    // Typed telemetry for every change, the rejection with the line it names.
    let applied = telemetry_of(&telemetry, "config_applied");
    let gens: Vec<u64> = applied
        .iter()
        .map(|v| v["generation"].as_u64().unwrap())
        .collect();
    assert_eq!(
        gens,
        (base + 1..=base + 5).collect::<Vec<_>>(),
        "{applied:?}"
    );
    assert_eq!(applied[0]["restart_needed"], 1, "{applied:?}");
    let rejected = telemetry_of(&telemetry, "config_rejected");
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    assert_eq!(rejected[0]["generation_kept"], base + 3);
    let text = std::fs::read_to_string(&cfg).unwrap();
    assert!(
        rejected[0]["line"].as_u64().unwrap() > 0,
        "{rejected:?} {text}"
    );

    // The app took its new parameters inside the run, and replay makes the same decisions:
    // the 2 ms summary tick was armed after the first change.
    let out = dir.file("replayed.jsonl");
    let o = tickloop(&["replay", "--journal", &journal, "--verify", "--out", &out]);
    assert!(o.status.success(), "{}", clear_failure(&o));
    let actions = std::fs::read_to_string(&out).unwrap();
    assert!(
        actions.contains("\"period\":2000000"),
        "the new tick period was never armed: {}",
        &actions[..actions.len().min(2000)]
    );
}

#[test]
fn a_second_stop_signal_ends_a_stuck_shutdown_at_once() {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    // The engine's stdout is a pipe this test has filled and never reads: its final report
    // cannot be written, so its shutdown is stuck. The first SIGINT must leave it stuck
    // (a clean stop is never cut short on its own); the second signal must end it at once.
    let mut fds = [0; 2];
    // SAFETY: pipe2 into a local array.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: fresh fds we own.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // Fill it to capacity with blocking writes (O_NONBLOCK would be shared with the child).
    // SAFETY: fcntl on our own fd.
    let capacity = unsafe { libc::fcntl(write.as_raw_fd(), libc::F_GETPIPE_SZ) };
    assert!(capacity > 0);
    let fill = vec![b'x'; capacity as usize];
    // SAFETY: a write from a live buffer that fits the empty pipe exactly.
    let n = unsafe { libc::write(write.as_raw_fd(), fill.as_ptr().cast(), fill.len()) };
    assert_eq!(n, capacity as isize);
    let mut run = Command::new(TICKLOOP)
        .args(["run", "--duration", "60"])
        .stdout(Stdio::from(write))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = run.stderr.take().unwrap();
    // Wait for the loop to run (its start line), then ask it to stop.
    let mut seen = Vec::new();
    let mut byte = [0u8; 1];
    while !String::from_utf8_lossy(&seen).contains("loop running") {
        assert_eq!(
            std::io::Read::read(&mut stderr, &mut byte).unwrap(),
            1,
            "{seen:?}"
        );
        seen.push(byte[0]);
    }
    let pid = run.id() as i32;
    // SAFETY: our own child.
    unsafe { libc::kill(pid, libc::SIGINT) };
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        run.try_wait().unwrap().is_none(),
        "the engine should still be stuck writing its report"
    );
    let sent = Instant::now();
    // SAFETY: our own child.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let status = loop {
        if let Some(status) = run.try_wait().unwrap() {
            break status;
        }
        assert!(
            sent.elapsed() < Duration::from_secs(5),
            "a second stop signal did not end the process"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGTERM), "{status:?}");
    assert!(
        sent.elapsed() < Duration::from_secs(1),
        "{:?}",
        sent.elapsed()
    );
    drop(read);
}

#[test]
fn a_strategy_run_trades_shows_its_book_logs_open_positions_and_replays() {
    let ring = Name::new();
    create_ring(&ring, 1 << 13);
    let dir = TempDir::new("strategy-run");
    let (cfg, status, journal, telemetry) = engine_files(&dir);
    write_config(
        &cfg,
        &ring.0,
        &status,
        &format!(
            "[journal]\npath = \"{journal}\"\n[telemetry]\ndir = \"{telemetry}\"\n\
             [strategy]\nname = \"sma_cross\"\n[strategy.params]\nn1 = 3\nn2 = 7\n\
             [orders]\ncash = 10000\n[risk]\nmax_order_notional = 1000000\n"
        ),
    );
    let checked = tickloop(&["config", "check", &cfg]);
    assert!(checked.status.success(), "{}", clear_failure(&checked));
    let run = Command::new(TICKLOOP)
        .args(["run", "--config", &cfg])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_file(&status);
    let data = concat!(env!("CARGO_MANIFEST_DIR"), "/data/EURUSD.csv");
    let fed = tickloop(&["feed", "replay", "--data", data, "--ring", &ring.0]);
    assert!(fed.status.success(), "{}", clear_failure(&fed));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let doc = status_doc(&status);
        if doc["candles"] == 5000 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the engine never read all 5000: {doc}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300)); // one more status write
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&status).unwrap()).unwrap();
    let trading = &doc["trading"];
    assert_eq!(trading["strategy"], "sma_cross", "{doc}");
    assert!(trading["fills"].as_u64().unwrap() > 100, "{trading}");
    assert!(trading["trades"].as_u64().unwrap() > 50, "{trading}");
    assert_eq!(
        trading["positions"].as_array().unwrap().len(),
        1,
        "{trading}"
    );
    // SAFETY: our own child.
    unsafe { libc::kill(run.id() as i32, libc::SIGTERM) };
    let out = run.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("open position left as it is"), "{err}");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(report.contains("app             sma_cross"), "{report}");
    // Typed telemetry for every kind of order event.
    for kind in ["order_submitted", "order_accepted", "fill"] {
        assert!(!telemetry_of(&telemetry, kind).is_empty(), "no {kind}");
    }
    // The recorded run replays to identical decisions.
    let r = tickloop(&["replay", "--journal", &journal, "--verify"]);
    assert!(r.status.success(), "{}", clear_failure(&r));
}

/// Wait until `done()` holds, failing with `what` after 20 s.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Events of `kind` in the telemetry files so far (while the engine writes them: whole lines
/// only, by their text).
fn telemetry_count_now(dir: &str, kind: &str) -> usize {
    let needle = format!("\"kind\":\"{kind}\"");
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.unwrap().path()).ok())
        .map(|text| text.lines().filter(|l| l.contains(&needle)).count())
        .sum()
}

/// Rewrite `path` in place with `text` (the same size as before) and put its mtime back, as
/// `cp -p`, `rsync -t` and deploy tools that pin mtimes do: the stat fingerprint (device,
/// inode, size, mtime) is the one before the edit.
fn edit_keeping_size_and_mtime(path: &str, text: &str) {
    use std::os::unix::fs::MetadataExt;
    let before = std::fs::metadata(path).unwrap();
    assert_eq!(before.len(), text.len() as u64, "the edit keeps the size");
    std::fs::write(path, text).unwrap();
    let file = std::fs::File::options().write(true).open(path).unwrap();
    file.set_modified(before.modified().unwrap()).unwrap();
    drop(file);
    let after = std::fs::metadata(path).unwrap();
    assert_eq!(
        (
            after.dev(),
            after.ino(),
            after.size(),
            after.mtime(),
            after.mtime_nsec()
        ),
        (
            before.dev(),
            before.ino(),
            before.size(),
            before.mtime(),
            before.mtime_nsec()
        ),
        "the stat fingerprint is unchanged"
    );
}

#[test]
fn a_same_size_edit_with_its_mtime_restored_is_applied_on_sighup_and_by_the_content_check() {
    let ring = Name::new();
    create_ring(&ring, 1 << 12);
    let dir = TempDir::new("pinned-mtime");
    let (cfg, status, _journal, telemetry) = engine_files(&dir);
    let telemetry_section = format!("[telemetry]\ndir = \"{telemetry}\"\n");
    // Polled every second, content compared every tenth poll (the default): the first
    // content check is ten seconds away.
    let body = |fast: u32| format!("{telemetry_section}[sma]\nfast = {fast}\nslow = 30\n");
    write_config(&cfg, &ring.0, &status, &body(10));
    let text = std::fs::read_to_string(&cfg).unwrap();
    let mut run = Command::new(TICKLOOP)
        .args(["run", "--config", &cfg])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_file(&status);
    let generation = || status_doc(&status)["config_generation"].as_u64();
    wait_until("no status yet", || generation().is_some());
    assert_eq!(generation(), Some(0));

    // fast 10 -> 12 in place, size and mtime kept: a poll's stat does not see it...
    let first = text.replace(&body(10), &body(12));
    edit_keeping_size_and_mtime(&cfg, &first);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(generation(), Some(0), "applied before any content check");
    // ...SIGHUP compares the content, and applies it.
    // SAFETY: our own child.
    unsafe { libc::kill(run.id() as i32, libc::SIGHUP) };
    wait_until("SIGHUP never applied the same-size edit", || {
        generation() == Some(1)
    });
    assert_eq!(
        status_doc(&status)["config_digest"],
        format!("{:016x}", fnv1a64(first.as_bytes()))
    );

    // Polls every 100 ms, content compared every second poll: the next such edit is applied
    // without a signal.
    let fast_polls =
        format!("{telemetry_section}[config]\npoll_ms = 100\ncontent_check_every = 2\n");
    let second = first.replace(&telemetry_section, &fast_polls);
    let tmp = dir.file("engine.toml.new");
    std::fs::write(&tmp, &second).unwrap();
    std::fs::rename(&tmp, &cfg).unwrap();
    // SAFETY: our own child.
    unsafe { libc::kill(run.id() as i32, libc::SIGHUP) };
    wait_until("the new poll settings were never applied", || {
        generation() == Some(2)
    });
    let third = second.replace(
        &body(12).replace(&telemetry_section, ""),
        &body(13).replace(&telemetry_section, ""),
    );
    assert_ne!(third, second);
    edit_keeping_size_and_mtime(&cfg, &third);
    wait_until("the periodic content check never applied the edit", || {
        generation() == Some(3)
    });
    assert_eq!(
        status_doc(&status)["config_digest"],
        format!("{:016x}", fnv1a64(third.as_bytes()))
    );

    // SAFETY: our own child.
    unsafe { libc::kill(run.id() as i32, libc::SIGTERM) };
    let mut err = String::new();
    std::io::Read::read_to_string(run.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(run.wait().unwrap().success(), "{err}");
    assert!(
        err.contains("the content changed under the same size and mtime"),
        "{err}"
    );
    let applied = telemetry_of(&telemetry, "config_applied");
    assert_eq!(applied.len(), 3, "{applied:?}");
    assert!(telemetry_of(&telemetry, "config_rejected").is_empty());
}

#[test]
fn config_rejections_count_the_same_in_telemetry_status_and_metrics() {
    use std::io::BufRead;
    let ring = Name::new();
    let page = Name::new();
    create_ring(&ring, 1 << 12);
    let dir = TempDir::new("reject-counts");
    let (cfg, status, _journal, telemetry) = engine_files(&dir);
    let extra = format!(
        "[telemetry]\ndir = \"{telemetry}\"\n[metrics]\npage = \"{}\"\n[config]\npoll_ms = 100\n",
        page.0
    );
    write_config(&cfg, &ring.0, &status, &extra);
    let good = std::fs::read_to_string(&cfg).unwrap();
    let mut run = Command::new(TICKLOOP)
        .args(["run", "--config", &cfg])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = run.stderr.take().unwrap();
    let log = std::thread::spawn(move || {
        let mut all = String::new();
        for line in std::io::BufReader::new(stderr).lines() {
            all += &line.unwrap();
            all.push('\n');
        }
        all
    });
    wait_for_file(&status);
    wait_for_file(&page.path().to_string_lossy());
    let exporter = prom::Exporter::start(&page.0);
    let replace = |text: &str| {
        let tmp = dir.file("engine.toml.new");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &cfg).unwrap();
    };
    let rejected_now = || telemetry_count_now(&telemetry, "config_rejected");
    let mut expected = 0;
    let mut step = |what: &str, act: &dyn Fn()| {
        act();
        expected += 1;
        wait_until(&format!("{what}: no config_rejected event"), || {
            rejected_now() >= expected
        });
        assert_eq!(rejected_now(), expected, "{what}: one event");
    };
    step("unknown key", &|| replace(&format!("{good}bogus = 1\n")));
    step("missing", &|| std::fs::remove_file(&cfg).unwrap());
    step("invalid after missing", &|| {
        replace(&good.replace("poll_ms = 100", "poll_ms = 1"))
    });
    step("missing again", &|| std::fs::remove_file(&cfg).unwrap());
    // SAFETY: our own child.
    step("still missing on SIGHUP", &|| unsafe {
        libc::kill(run.id() as i32, libc::SIGHUP);
    });
    step("bad UTF-8", &|| {
        let tmp = dir.file("engine.toml.new");
        std::fs::write(&tmp, b"[engine]\naccount = \"\xff\"\n").unwrap();
        std::fs::rename(&tmp, &cfg).unwrap();
    });
    // Over the 1 MiB bound: refused unread, here and by `config check`.
    let huge = format!("{good}#{}\n", "x".repeat(1 << 20));
    step("over 1 MiB", &|| replace(&huge));
    let big = dir.file("big.toml");
    std::fs::write(&big, &huge).unwrap();
    let checked = tickloop(&["config", "check", &big]);
    assert!(
        clear_failure(&checked).contains("over the 1048576-byte limit"),
        "{}",
        String::from_utf8_lossy(&checked.stderr)
    );
    replace(&good);

    let metric = || {
        exporter
            .value("tickloop_config_rejected_total")
            .map(|v| v as u64)
    };
    wait_until("metrics never showed every rejection", || {
        metric() == Some(expected as u64)
    });
    wait_until("the status file never showed every rejection", || {
        status_doc(&status)["config_rejected"] == expected
    });
    // SAFETY: our own child.
    unsafe { libc::kill(run.id() as i32, libc::SIGTERM) };
    assert!(run.wait().unwrap().success());
    let err = log.join().unwrap();
    let events = telemetry_of(&telemetry, "config_rejected");
    let doc = status_doc(&status);
    assert_eq!(doc["state"], "stopped", "{doc}");
    assert_eq!(events.len(), expected, "{events:?}");
    assert_eq!(doc["config_rejected"], expected as u64, "{doc}");
    assert_eq!(doc["config_generation"], 0, "nothing new applied: {doc}");
    // Reasons that say what happened, without the path eating the event's text.
    let reasons: Vec<&str> = events
        .iter()
        .map(|e| e["reason"].as_str().unwrap())
        .collect();
    assert!(reasons[0].contains("bogus"), "{reasons:?}");
    assert!(reasons[1].contains("missing"), "{reasons:?}");
    assert!(reasons[2].contains("poll_ms"), "{reasons:?}");
    assert!(reasons[5].contains("UTF-8"), "{reasons:?}");
    assert!(reasons[6].contains("1048576-byte limit"), "{reasons:?}");
    assert!(events[0]["line"].as_u64().unwrap() > 0, "{events:?}");
    assert!(err.contains("the config file is missing"), "{err}");
}

/// Spawn an engine that dumps no core when it dies of a signal.
fn engine_without_core(cfg: &str) -> std::process::Child {
    use std::os::unix::process::CommandExt;
    let mut command = Command::new(TICKLOOP);
    command
        .args(["run", "--config", cfg])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: setrlimit is async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            let none = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::setrlimit(libc::RLIMIT_CORE, &none);
            Ok(())
        });
    }
    command.spawn().unwrap()
}

#[test]
fn a_ring_truncated_under_the_engine_is_one_line_naming_it_and_a_crashed_status() {
    let ring = Name::new();
    create_ring(&ring, 1 << 12);
    let dir = TempDir::new("sigbus");
    let (cfg, status) = (dir.file("engine.toml"), dir.file("s.json"));
    write_config(&cfg, &ring.0, &status, "");
    let run = engine_without_core(&cfg);
    wait_for_file(&status);
    feed(&ring, 1_000, 100_000);
    wait_until("the engine never read the candles", || {
        status_doc(&status)["candles"] == 1_000
    });
    let fatal = truncate_under(run, &ring, "the engine");
    let path = ring.path().display().to_string();
    assert!(fatal.contains("restart its feed"), "{fatal}");

    let doc = status_doc(&status);
    assert_eq!(doc["state"], "crashed", "{doc}");
    assert_eq!(doc["crash"]["signal"], "SIGBUS", "{doc}");
    assert_eq!(doc["crash"]["ring"], path.as_str(), "{doc}");
    assert!(
        doc["crash"]["cause"]
            .as_str()
            .unwrap()
            .contains("truncated to 0 bytes"),
        "{doc}"
    );
    // The rest is the last status written while running.
    assert_eq!(doc["candles"], 1_000, "{doc}");
    let (code, said) = status_code(&status, &[]);
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains("crashed") && said.contains(&path), "{said}");
}

#[test]
fn a_ring_truncated_under_its_feed_is_one_line_naming_it() {
    let ring = Name::new();
    create_ring(&ring, 1 << 12);
    let writer = synthetic_feed(&ring, 100_000_000, 100_000, 4)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("the feed never published", || {
        tickloop_ring::info::inspect(&ring.path(), 0)
            .map(|i| i.write_seq > 1_000)
            .unwrap_or(false)
    });
    truncate_under(writer, &ring, "the feed");
}

/// Truncate `ring` to nothing under `process` (`role` in its message): it must die by SIGBUS
/// with one fatal line naming the ring, its size now and what it ran as. Returns the line.
fn truncate_under(process: std::process::Child, ring: &Name, role: &str) -> String {
    use std::os::unix::process::ExitStatusExt;
    std::fs::File::options()
        .write(true)
        .open(ring.path())
        .unwrap()
        .set_len(0)
        .unwrap();
    let out = process.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.signal(), Some(libc::SIGBUS), "{err}");
    let fatal: Vec<&str> = err.lines().filter(|l| l.contains("fatal")).collect();
    assert_eq!(fatal.len(), 1, "one line: {err}");
    let path = ring.path().display().to_string();
    assert!(
        fatal[0].starts_with(&format!(
            "tickloop: fatal: SIGBUS in ring {path} at offset "
        )),
        "{err}"
    );
    assert!(
        fatal[0].contains(&format!("was truncated to 0 bytes under {role}")),
        "{err}"
    );
    fatal[0].to_string()
}

#[test]
fn an_engine_that_finds_the_reader_registry_full_warns_as_ring_tail_does() {
    use tickloop_ring::layout::MAX_READERS;
    use tickloop_ring::{Reader, ReaderOptions, Start};
    let ring = Name::new();
    create_ring(&ring, 1 << 12);
    // This process holds every registry entry.
    let readers: Vec<Reader> = (0..MAX_READERS)
        .map(|_| {
            Reader::attach(
                &ring.path(),
                ReaderOptions {
                    start: Start::Next,
                    register: true,
                },
            )
            .unwrap()
        })
        .collect();
    assert!(readers.iter().all(Reader::registered));
    let path = ring.path().display().to_string();
    let warning = format!(
        "ring {path}: no control-page entry for this reader (all {MAX_READERS} reader entries are held by live readers)"
    );

    let tail = tickloop(&["ring", "tail", "--ring", &ring.0, "--idle-exit", "0.2"]);
    assert!(
        String::from_utf8_lossy(&tail.stderr).contains(&warning),
        "{}",
        String::from_utf8_lossy(&tail.stderr)
    );

    let dir = TempDir::new("registry-full");
    let status = dir.file("s.json");
    let run = Command::new(TICKLOOP)
        .args([
            "run",
            "--ring",
            &ring.0,
            "--status",
            &status,
            "--duration",
            "3",
        ])
        .args(["--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_file(&status);
    // (Not `feed`: it waits for every registered reader, and this process's never read.)
    assert!(synthetic_feed(&ring, 2_000, 20_000, 4)
        .status()
        .unwrap()
        .success());
    let out = run.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains(&warning), "{err}");
    assert!(
        err.contains("polls every 0.1 ms instead of parking"),
        "{err}"
    );
    // It still reads every candle, and its status says it holds no entry.
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["stats"]["candles"], 2_000, "{report}");
    let doc = status_doc(&status);
    assert_eq!(doc["rings"][0]["registered"], false, "{doc}");
    drop(readers);
}
