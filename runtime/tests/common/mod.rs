//! Helpers shared by the runtime's integration tests: ring files that clean up after
//! themselves, and child processes made with fork.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use tickloop_runtime::ring::{self, CreateOptions};

static NEXT: AtomicU64 = AtomicU64::new(0);

/// A ring file that is removed when the test ends, however it ends.
pub struct TestRing(pub PathBuf);

impl TestRing {
    pub fn new(slots: u64) -> TestRing {
        let ring = TestRing::unnamed();
        ring::create(
            &ring.0,
            CreateOptions {
                slots,
                ..CreateOptions::default()
            },
        )
        .unwrap();
        ring
    }

    pub fn unnamed() -> TestRing {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        TestRing(PathBuf::from(format!(
            "/dev/shm/tickloop-test-{}-{n}",
            std::process::id()
        )))
    }
}

impl Drop for TestRing {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Run `f` in a child process; the child never returns into the test harness.
pub fn fork(f: impl FnOnce()) -> libc::pid_t {
    // SAFETY: the child only runs `f` (memory, files, system calls) and leaves with _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).is_ok();
        // SAFETY: leave without running the harness's destructors.
        unsafe { libc::_exit(if ok { 0 } else { 101 }) };
    }
    pid
}

pub fn kill(pid: libc::pid_t, signal: libc::c_int) {
    // SAFETY: our own child.
    unsafe { libc::kill(pid, signal) };
}

pub fn wait(pid: libc::pid_t) -> i32 {
    let mut status = 0;
    // SAFETY: our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    status
}
