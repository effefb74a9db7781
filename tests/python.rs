//! The Python interop module (feed/python/tickloop_ring.py) against the Rust ring, in both
//! directions, as separate processes. Skips, saying why, where python3 is missing.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const TICKLOOP: &str = env!("CARGO_BIN_EXE_tickloop");
const MODULE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/feed/python/tickloop_ring.py");
const N: &str = "1000000";

fn python() -> bool {
    let ok = Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("SKIP: python3 is not installed (scripts/setup.sh installs it)");
    }
    ok
}

struct Ring(String);

impl Ring {
    fn new(tag: &str) -> Ring {
        Ring(format!("tickloop-py-{tag}-{}", std::process::id()))
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(PathBuf::from("/dev/shm").join(&self.0));
    }
}

fn summary(o: &Output) -> serde_json::Value {
    let out = String::from_utf8_lossy(&o.stdout);
    serde_json::from_str(out.lines().last().unwrap_or_default()).unwrap_or_else(|e| {
        panic!(
            "no JSON summary ({e}): {out} / {}",
            String::from_utf8_lossy(&o.stderr)
        )
    })
}

fn clean(n: u64) -> serde_json::Value {
    serde_json::json!({"received": n, "lost": 0, "duplicates": 0, "torn": 0, "overruns": 0})
}

fn wait_for_reader(ring: &Ring) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let o = Command::new(TICKLOOP)
            .args(["ring", "info", "--json", "--ring", &ring.0])
            .output()
            .unwrap();
        if o.status.success() {
            let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
            if !v["readers"].as_array().unwrap().is_empty() {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the Rust reader never registered"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn python_selftest_passes() {
    if !python() {
        return;
    }
    let o = Command::new("python3")
        .args([MODULE, "selftest"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn python_writes_a_million_candles_that_rust_verifies() {
    if !python() {
        return;
    }
    let ring = Ring::new("pw");
    let create = Command::new(TICKLOOP)
        .args(["ring", "create", "--slots", "1048576", "--ring", &ring.0])
        .output()
        .unwrap();
    assert!(create.status.success());
    let tail = Command::new(TICKLOOP)
        .args([
            "ring",
            "tail",
            "--verify",
            "--count",
            N,
            "--idle-exit",
            "60",
            "--ring",
            &ring.0,
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_reader(&ring);
    let write = Command::new("python3")
        .args([
            MODULE,
            "write",
            "--count",
            N,
            "--symbols",
            "16",
            "--ring",
            &ring.0,
        ])
        .output()
        .unwrap();
    assert!(
        write.status.success(),
        "{}",
        String::from_utf8_lossy(&write.stderr)
    );
    let o = tail.wait_with_output().unwrap();
    assert!(o.status.success());
    assert_eq!(summary(&o), clean(1_000_000));
}

#[test]
fn rust_writes_a_million_candles_that_python_verifies() {
    if !python() {
        return;
    }
    let ring = Ring::new("rw");
    let create = Command::new(TICKLOOP)
        .args(["ring", "create", "--slots", "1048576", "--ring", &ring.0])
        .output()
        .unwrap();
    assert!(create.status.success());
    let tail = Command::new("python3")
        .args([
            MODULE, "tail", "--verify", "--from", "oldest", "--count", N, "--ring", &ring.0,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The Python reader does not register, so it cannot be waited for; it starts from the
    // oldest candle instead, and the ring holds all of them.
    std::thread::sleep(Duration::from_millis(200));
    let feed = Command::new(TICKLOOP)
        .args([
            "feed",
            "synthetic",
            "--count",
            N,
            "--rate",
            "300000",
            "--ring",
            &ring.0,
        ])
        .output()
        .unwrap();
    assert!(feed.status.success());
    let o = tail.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(summary(&o), clean(1_000_000));
}
