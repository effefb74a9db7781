//! Helpers shared by the runtime's integration tests: ring files that clean up after
//! themselves, and child processes made with fork.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use tickloop_ring::{self as ring, CreateOptions};

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

/// A directory under the system's temporary directory, removed with its content when the test
/// ends, however it ends.
pub struct TestDir(pub PathBuf);

impl TestDir {
    pub fn new(tag: &str) -> TestDir {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("tickloop-test-{}-{n}-{tag}", std::process::id()));
        std::fs::create_dir(&dir).unwrap();
        TestDir(dir)
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A pipe that carries lines from forked children to the test. Each `send` is one write of at
/// most PIPE_BUF bytes, so lines from many children never interleave.
pub struct Pipe {
    read: std::fs::File,
    write: std::fs::File,
    pending: std::cell::RefCell<Vec<u8>>,
}

impl Pipe {
    pub fn new() -> Pipe {
        let (read, write) = pipe();
        Pipe {
            read,
            write,
            pending: std::cell::RefCell::new(Vec::new()),
        }
    }

    /// Send one line (the newline is added).
    pub fn send(&self, line: &str) {
        use std::io::Write;
        let line = format!("{line}\n");
        assert!(
            line.len() <= libc::PIPE_BUF,
            "line too long for one pipe write"
        );
        (&self.write).write_all(line.as_bytes()).unwrap();
    }

    /// Receive `n` lines, waiting at most `timeout` for all of them; panics with the lines that
    /// did arrive if they do not.
    pub fn receive(&self, n: usize, timeout: std::time::Duration) -> Vec<String> {
        use std::io::Read;
        use std::os::fd::AsRawFd;
        let deadline = std::time::Instant::now() + timeout;
        let mut pending = self.pending.borrow_mut();
        let mut lines = Vec::new();
        loop {
            while lines.len() < n {
                let Some(end) = pending.iter().position(|&b| b == b'\n') else {
                    break;
                };
                let line: Vec<u8> = pending.drain(..=end).collect();
                lines.push(String::from_utf8_lossy(&line[..end]).into_owned());
            }
            if lines.len() == n {
                return lines;
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            assert!(
                !left.is_zero(),
                "timed out waiting for {n} lines; got {lines:?}"
            );
            let mut pfd = libc::pollfd {
                fd: self.read.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            unsafe { libc::poll(&mut pfd, 1, left.as_millis().min(60_000) as i32 + 1) };
            if pfd.revents == 0 {
                continue;
            }
            let mut buf = [0u8; 4096];
            match (&self.read).read(&mut buf) {
                Ok(0) => panic!("pipe closed; got {lines:?}"),
                Ok(k) => pending.extend_from_slice(&buf[..k]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => panic!("reading the pipe: {e}"),
            }
        }
    }
}

/// A gate that forked children wait at until the test opens it, all released at the same
/// instant: each waits for end-of-file on a pipe, which comes when every copy of its write end
/// is closed. Every child must `leave` (or `wait`) before the test can `open`.
pub struct Gate {
    read: std::fs::File,
    write: std::cell::RefCell<Option<std::fs::File>>,
}

impl Gate {
    pub fn new() -> Gate {
        let (read, write) = pipe();
        Gate {
            read,
            write: std::cell::RefCell::new(Some(write)),
        }
    }

    /// Close this process's copy of the write end.
    pub fn leave(&self) {
        self.write.borrow_mut().take();
    }

    /// In a child: leave, then block until the gate opens.
    pub fn wait(&self) {
        use std::io::Read;
        self.leave();
        let mut buf = [0u8; 1];
        loop {
            match (&self.read).read(&mut buf) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => panic!("waiting at the gate: {e}"),
            }
        }
    }

    /// In the test: open the gate (every child has left or waits).
    pub fn open(&self) {
        self.leave();
    }
}

/// A pipe's read and write ends (close-on-exec).
pub fn pipe() -> (std::fs::File, std::fs::File) {
    use std::os::fd::FromRawFd;
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both were just created and are owned by nothing else.
    unsafe {
        (
            std::fs::File::from_raw_fd(fds[0]),
            std::fs::File::from_raw_fd(fds[1]),
        )
    }
}

/// `waitpid` without blocking: `Some(status)` once the child has exited.
pub fn try_wait(pid: libc::pid_t) -> Option<i32> {
    let mut status = 0;
    // SAFETY: our own child.
    let rc = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
    (rc == pid).then_some(status)
}
