//! Helpers shared by the whole-program tests: the binary, ring names that clean up after
//! themselves, and checks of how a command failed.
#![allow(dead_code)]

pub mod prom;

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub const TICKLOOP: &str = env!("CARGO_BIN_EXE_tickloop");
pub static NEXT: AtomicU64 = AtomicU64::new(0);

/// A ring name that is removed when the test ends.
pub struct Name(pub String);

impl Name {
    pub fn new() -> Name {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        Name(format!("tickloop-cli-{}-{n}", std::process::id()))
    }
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/dev/shm").join(&self.0)
    }
}

impl Drop for Name {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.path());
    }
}

pub fn tickloop(args: &[&str]) -> Output {
    Command::new(TICKLOOP)
        .args(args)
        .output()
        .expect("run tickloop")
}

pub fn spawn(args: &[&str]) -> Child {
    Command::new(TICKLOOP)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tickloop")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The command failed the way a user deserves: non-zero, one line on stderr, no panic.
pub fn clear_failure(o: &Output) -> String {
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!o.status.success(), "expected failure, got success: {err}");
    assert!(!err.contains("panicked"), "panic: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(err.starts_with("tickloop: error: "), "{err}");
    err
}

pub fn summary(o: &Output) -> serde_json::Value {
    let out = stdout(o);
    let line = out.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| {
        panic!(
            "no JSON summary ({e}): {out:?} / {}",
            String::from_utf8_lossy(&o.stderr)
        )
    })
}

/// Wait until a reader has registered on the ring (so it sees the writer's first candle).
pub fn wait_for_reader(name: &Name) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let o = tickloop(&["ring", "info", "--ring", &name.0, "--json"]);
        if o.status.success() {
            let info: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
            if !info["readers"].as_array().unwrap().is_empty() {
                return;
            }
        }
        assert!(Instant::now() < deadline, "reader never registered");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn create_ring(name: &Name, slots: u64) {
    let o = tickloop(&[
        "ring",
        "create",
        "--ring",
        &name.0,
        "--slots",
        &slots.to_string(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// `tickloop feed synthetic` into `name`: `count` candles, `rate` per second (0 = unpaced).
pub fn synthetic_feed(name: &Name, count: u64, rate: u64, symbols: u32) -> Command {
    let mut command = Command::new(TICKLOOP);
    command
        .args(["feed", "synthetic", "--ring", &name.0])
        .args([
            "--count".to_string(),
            count.to_string(),
            "--rate".to_string(),
            rate.to_string(),
            "--symbols".to_string(),
            symbols.to_string(),
        ]);
    command
}

/// Wait until every registered reader of the ring has read up to the writer (as published in
/// the ring's registry, which readers refresh at least every 100 ms).
pub fn wait_caught_up(name: &Name) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let o = tickloop(&["ring", "info", "--ring", &name.0, "--json"]);
        let info: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let readers = info["readers"].as_array().unwrap();
        if !readers.is_empty() && readers.iter().all(|r| r["lag"] == 0) {
            return;
        }
        assert!(Instant::now() < deadline, "readers never caught up: {info}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A small tmpfs mounted for one test (root only), unmounted and removed on drop.
pub struct SmallTmpfs(pub PathBuf);

impl SmallTmpfs {
    /// None (after saying why) when this process cannot mount one.
    pub fn mount(test: &str, size: &str) -> Option<SmallTmpfs> {
        // SAFETY: no arguments.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIP {test}: mounting a small tmpfs needs root");
            return None;
        }
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("tickloop-tmpfs-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mounted = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size}"),
                "tickloop-test",
            ])
            .arg(&dir)
            .status();
        if !matches!(mounted, Ok(s) if s.success()) {
            let _ = std::fs::remove_dir(&dir);
            eprintln!("SKIP {test}: mount -t tmpfs failed here");
            return None;
        }
        Some(SmallTmpfs(dir))
    }
}

impl Drop for SmallTmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// The drivers `tickloop` can use here: io_uring is left out, loudly, where the kernel, seccomp
/// or qemu refuse it.
pub fn drivers() -> Vec<&'static str> {
    let o = tickloop(&[
        "run",
        "--driver",
        "io_uring",
        "--duration",
        "0.01",
        "--json",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    if err.contains("io_uring is not usable") {
        eprintln!("SKIPPING the io_uring driver: {}", err.trim());
        vec!["epoll", "simulated"]
    } else {
        vec!["epoll", "io_uring", "simulated"]
    }
}

/// A private directory for one test, removed when the test ends.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let d = std::env::temp_dir().join(format!("tickloop-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }

    /// The path of `name` inside it.
    pub fn file(&self, name: &str) -> String {
        self.0.join(name).to_string_lossy().into_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Wait (up to 20 s) for `path` to exist.
pub fn wait_for_file(path: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::path::Path::new(path).exists() {
        assert!(Instant::now() < deadline, "{path} never appeared");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The status file as JSON (null while it does not exist or is being replaced).
pub fn status_doc(path: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap_or_default()).unwrap_or_default()
}

/// Every telemetry event in the JSONL files under `dir`, file by file in name order.
pub fn telemetry_events(dir: &str) -> Vec<serde_json::Value> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains(".jsonl"))
        .collect();
    files.sort();
    files
        .iter()
        .flat_map(|p| {
            std::fs::read_to_string(p)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
                .collect::<Vec<_>>()
        })
        .collect()
}
