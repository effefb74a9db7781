//! One clock: nothing outside the driver reads a clock. The loop's time comes from its driver
//! (`Driver::now`, `Driver::wall_now`, or a `Clock` copied out of it) and is handed to the
//! app, the fd sources and the services; that is what lets the simulated driver run the engine
//! and its adapters on virtual time. This test reads every Rust source of the workspace (tests
//! aside: they measure real time) and fails on a clock read in a file that is not on the short
//! list below, each entry with its reason; an entry that no longer reads a clock fails too, so
//! the list only shrinks.

use std::path::{Path, PathBuf};

/// Where a clock may be read, and why (a path, or a folder ending in `/`).
const ALLOWED: &[(&str, &str)] = &[
    (
        "runtime/src/driver/",
        "the loop's one clock: the drivers read CLOCK_MONOTONIC and CLOCK_REALTIME and hand \
         `now` to everything else; the simulated driver reads real time only to bound how long \
         it waits for input it is owed",
    ),
    (
        "ring/src/sys.rs",
        "the two clock_gettime wrappers the driver's clock is made of",
    ),
    (
        "ring/src/crash.rs",
        "the SIGBUS handler stamps the crash with clock_gettime, which is async-signal-safe; it \
         cannot ask the loop",
    ),
    (
        "ring/src/",
        "the shared segment's stamps (creation, the writer's start and heartbeat, a reader's \
         progress) are compared by other processes with their own CLOCK_REALTIME, so they are \
         real whatever the driver; none reaches an app. And a unique temporary file name",
    ),
    (
        "ops/src/lock.rs",
        "before any loop exists: the holder's start time in the lock file, which other \
         processes read, and the bounded wait for a starting holder to write it",
    ),
    (
        "feed/src/replay.rs",
        "a feed process has no loop: it paces candles in real time, stamps the ring's \
         heartbeat, and times its report",
    ),
    (
        "feed/src/synthetic.rs",
        "as feed/src/replay.rs, and it stamps each candle with its publish time",
    ),
    ("feed/src/ingest.rs", "as feed/src/replay.rs"),
    (
        "src/adapter_cmd.rs",
        "the test adapters are processes of their own on the other side of the pipes; \
         `echo --delay-ms` answers late in real time by design",
    ),
    (
        "src/poll_cmd.rs",
        "the ring writer's heartbeat (a real stamp other processes read, as in the feeds) and \
         the report's elapsed seconds",
    ),
    (
        "src/ring_cmd.rs",
        "`ring tail` has no loop: its idle exit and the candles' age on arrival",
    ),
    (
        "src/status_cmd.rs",
        "`tickloop status`: a status file's age, a one-shot command",
    ),
    (
        "src/demo_cmd.rs",
        "the demo's progress display and deadlines, outside any loop",
    ),
    (
        "src/ring_demo.rs",
        "the ring demo's progress display and rate, outside any loop",
    ),
    (
        "src/logging.rs",
        "human log lines carry the wall time they were written; logs are not inputs",
    ),
    (
        "src/metrics_cmd.rs",
        "a metrics page reader has no loop: a page's age against the engine's own clock",
    ),
    (
        "src/metrics_http.rs",
        "`metrics serve` is a process of its own, outside any loop: its connections' timeouts",
    ),
    (
        "src/top_cmd.rs",
        "`tickloop top` is a process of its own: its refresh interval",
    ),
    ("bench/", "benchmarks measure real time"),
];

/// What reading a clock looks like in this code base: the system call and the standard
/// library's clocks, and the runtime's own readers (their definitions are in the driver and
/// `sys.rs`). `Clock::Real` is the driver's real clock as a value: made anywhere else it would be
/// a way round the driver.
const CLOCK_READS: &[&str] = &[
    "clock_gettime",
    "CLOCK_MONOTONIC",
    "CLOCK_REALTIME",
    "Instant::now",
    ".elapsed()",
    "SystemTime",
    "UNIX_EPOCH",
    "monotonic_now(",
    "monotonic_ns(",
    "realtime_ns(",
    "unix_now_ns(",
    "Clock::Real",
];

/// Every `.rs` file under `dir`, but tests, build output and hidden folders.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if path.is_dir() {
            if !(name.starts_with('.') || name == "target" || name == "tests") {
                sources(&path, out);
            }
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

/// The clock reads of one line of code (comments cut off): the patterns it holds, and a bare
/// `wall_now(` (the driver's free function; `.wall_now()` on a driver or a clock is fine).
fn reads(line: &str) -> Vec<&'static str> {
    let code = line.split("//").next().unwrap_or("");
    let mut found: Vec<&'static str> = CLOCK_READS
        .iter()
        .copied()
        .filter(|p| code.contains(p))
        .collect();
    let bare_wall = code
        .match_indices("wall_now(")
        .any(|(at, _)| !code[..at].ends_with('.') && !code[..at].ends_with("fn "));
    if bare_wall {
        found.push("wall_now(");
    }
    found
}

fn allowed(relative: &str) -> Option<usize> {
    ALLOWED.iter().position(|(path, _)| {
        if path.ends_with('/') {
            relative.starts_with(path)
        } else {
            relative == *path
        }
    })
}

#[test]
fn nothing_outside_the_driver_reads_a_clock() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    sources(root, &mut files);
    files.sort();
    assert!(files.len() > 50, "only {} sources found", files.len());
    let mut used = vec![false; ALLOWED.len()];
    let mut offences = Vec::new();
    for file in &files {
        let relative = file
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let text = std::fs::read_to_string(file).unwrap();
        for (n, line) in text.lines().enumerate() {
            let found = reads(line);
            if found.is_empty() {
                continue;
            }
            match allowed(&relative) {
                Some(i) => used[i] = true,
                None => offences.push(format!(
                    "{relative}:{}: {} ({})",
                    n + 1,
                    line.trim(),
                    found.join(", ")
                )),
            }
        }
    }
    assert!(
        offences.is_empty(),
        "clock reads outside the driver (take `now` from the caller, the wall time from \
         `Driver::wall_now` or the `LoopView`'s clock; or add the file to ALLOWED with its \
         reason):\n{}",
        offences.join("\n")
    );
    let stale: Vec<&str> = ALLOWED
        .iter()
        .zip(&used)
        .filter(|(_, used)| !**used)
        .map(|((path, _), _)| *path)
        .collect();
    assert!(
        stale.is_empty(),
        "allowed to read a clock but no longer does: remove from ALLOWED: {stale:?}"
    );
    assert!(ALLOWED.iter().all(|(_, why)| why.len() > 20));
}

#[test]
fn the_patterns_find_what_they_are_meant_to() {
    assert_eq!(
        reads("let t = std::time::Instant::now();"),
        ["Instant::now"]
    );
    assert_eq!(reads("let d = started.elapsed();"), [".elapsed()"]);
    assert_eq!(
        reads("let now = sys::realtime_ns(); // stamp"),
        ["realtime_ns("]
    );
    assert_eq!(reads("let w = crate::driver::wall_now();"), ["wall_now("]);
    assert!(reads("let w = self.driver.wall_now();").is_empty());
    assert!(reads("// Instant::now() in a comment").is_empty());
    assert!(reads("pub(crate) fn wall_now() -> i64 {").is_empty());
}
